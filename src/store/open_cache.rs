//! The per-worker cache of open blob files, so a hot blob costs no `open` per request.
//!
//! Cached files count against the open-file limit like connections do, so the cache is sized
//! from that limit ([`size`]) and gives way under pressure: a worker that runs out of
//! descriptors empties its own cache at once and bumps a process-wide epoch, and every other
//! worker empties its cache when it next sees the epoch changed (before using the cache, and on
//! its periodic tick), so a request or a new connection gets a descriptor back instead of an
//! error.
//!
//! On a tier that is a cache over a remote backend ([`super::lru`]), an evicted blob's file
//! stays on disk until its last holder closes it, and these caches are holders: each worker
//! drops the evicted files it holds when it sees the eviction epoch changed, at the same
//! points where it heeds descriptor pressure (so within a tick when idle), and a request does
//! not get a file from the cache once it is marked evicted (one that raced the eviction is
//! served from its open descriptor, and the file unlinked after).

use super::blobs::BlobFile;
use crate::oci::digest::Digest;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Blobs kept open per worker at most, however high the open-file limit. Past the bound the
/// cache is emptied: opening is cheap to redo, and a bound keeps address space in check too.
const MAX_ENTRIES: usize = 4096;

/// The per-worker bound in force ([`size`] sets it at start).
static ENTRIES: AtomicUsize = AtomicUsize::new(MAX_ENTRIES);

/// Bumped whenever some worker ran out of file descriptors; a worker whose cache is from an
/// older epoch empties it.
static PRESSURE_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Bumped after each eviction pass of the tier's cache, once the evicted entries are marked.
static EVICTION_EPOCH: AtomicU64 = AtomicU64::new(0);

struct OpenCache {
    files: HashMap<Digest, Rc<BlobFile>>,
    /// The [`PRESSURE_EPOCH`] these files were opened under.
    epoch: u64,
    /// The [`EVICTION_EPOCH`] last heeded.
    evictions: u64,
}

thread_local! {
    static OPEN: RefCell<OpenCache> = RefCell::new(OpenCache {
        files: HashMap::new(),
        epoch: 0,
        evictions: 0,
    });
}

/// Sizes the per-worker cache from the open-file limit `nofile` shared by `workers` workers,
/// and returns the size. All caches together take at most a quarter of the limit: the rest is
/// for connections, upload files, blobs being sent (a response keeps its file open whether
/// cached or not), SQLite and the thread pools.
pub fn size(nofile: u64, workers: usize) -> usize {
    let entries = share(nofile, workers);
    ENTRIES.store(entries, Ordering::Relaxed);
    entries
}

fn share(nofile: u64, workers: usize) -> usize {
    let share = nofile / 4 / workers.max(1) as u64;
    usize::try_from(share).map_or(MAX_ENTRIES, |n| n.min(MAX_ENTRIES))
}

/// Whether `e` says the process (EMFILE) or the system (ENFILE) has no descriptor to spare.
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Closes this worker's cached blob files now and has every other worker close theirs: called
/// when opening a file or accepting a connection failed for want of descriptors.
pub fn release() {
    let epoch = PRESSURE_EPOCH.fetch_add(1, Ordering::AcqRel) + 1;
    OPEN.with(|c| {
        let mut c = c.borrow_mut();
        c.files.clear();
        c.epoch = epoch;
    });
}

/// Empties this worker's cache if another worker ran out of descriptors since it was filled,
/// and drops the files the tier's cache evicted since last time. Runs before every use of the
/// cache and on each worker's periodic tick (an idle worker would otherwise keep its files).
pub fn heed_pressure() {
    let epoch = PRESSURE_EPOCH.load(Ordering::Acquire);
    let evictions = EVICTION_EPOCH.load(Ordering::Acquire);
    OPEN.with(|c| {
        let mut c = c.borrow_mut();
        if c.epoch != epoch {
            c.files.clear();
            c.epoch = epoch;
        }
        if c.evictions != evictions {
            c.files.retain(|_, b| !b.evicted());
            c.evictions = evictions;
        }
    });
}

/// Tells every worker that some cached files may have been evicted (see the module docs).
pub(super) fn note_eviction() {
    EVICTION_EPOCH.fetch_add(1, Ordering::AcqRel);
}

pub(super) fn get(digest: &Digest) -> Option<Rc<BlobFile>> {
    heed_pressure();
    OPEN.with(|c| {
        c.borrow()
            .files
            .get(digest)
            .filter(|b| !b.evicted())
            .cloned()
    })
}

pub(super) fn insert(digest: &Digest, blob: &Rc<BlobFile>) {
    let bound = ENTRIES.load(Ordering::Relaxed);
    OPEN.with(|c| {
        let files = &mut c.borrow_mut().files;
        if files.len() >= bound {
            files.clear();
        }
        if bound > 0 {
            files.insert(digest.clone(), blob.clone());
        }
    });
}

/// Opens a blob file; out of descriptors, releases the cached ones (see the module docs) and
/// tries once more.
pub(super) fn open_file(path: &Path) -> io::Result<fs::File> {
    match fs::File::open(path) {
        Err(e) if out_of_descriptors(&e) => {
            crate::log::warn(format_args!(
                "opening a blob: {e}; closing cached blob files"
            ));
            release();
            fs::File::open(path)
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_takes_a_quarter_of_the_limit_up_to_its_bound() {
        assert_eq!(share(256, 2), 32);
        assert_eq!(share(1024, 3), 85);
        assert_eq!(share(1 << 20, 2), MAX_ENTRIES);
        assert_eq!(share(u64::MAX, 1), MAX_ENTRIES);
        assert_eq!(share(8, 4), 0);
    }
}
