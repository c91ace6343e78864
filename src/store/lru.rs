//! The local tier as a size-bounded cache of hot blobs over a remote backend: which blobs the
//! tree holds, how big they are, how recently each was used, and eviction of the least
//! recently used when an admission takes the tree past its bound.
//!
//! The hit path is what every pull of a hot blob pays, so it takes no lock and makes no
//! syscall: an entry's recency is the cache's clock, read with one relaxed load and stored into
//! the entry only when it changed. The clock advances on each admission, and eviction only runs
//! on admission, so "least recently used" is exact between admissions (entries used since the
//! same admission tie). Hits are counted in striped counters, so that workers do not write to
//! one cache line. The index is sharded by digest; a shard's lock is taken only by a request
//! that finds no open file in its worker's cache, by admission and by eviction.
//!
//! An evicted blob may still be sent by a response (a 10 GB layer takes a while) and held open
//! by workers' caches of open files. So eviction renames the file out of the tree at once (a new
//! fill of the same digest finds its name free) into the staging area, and the rename is all:
//! the file is unlinked only when the last holder of its [`Entry`] lets go (each
//! [`super::blobs::BlobFile`] holds one), by a reaper thread of its own. Workers drop evicted
//! files from their caches when they next see the eviction epoch changed (see
//! [`super::open_cache`]), at once or within a tick, so an idle worker does not hold their space.
//!
//! A blob larger than the whole bound is admitted already evicted: filled, served from its
//! staging name and unlinked when its last response ends.
//!
//! At start the tree is re-indexed ([`Lru::open`]): sizes from the files, and the recency order
//! from each file's last access or modification time, whichever is later (under `relatime`
//! access times move at most daily, so blobs used within the same day tie; a hit never touches
//! the file). Staging leftovers of fills and evictions (`put-*`, `evicted-*` files) are removed.

use super::fs::shard_path;
use super::open_cache;
use crate::observe::metrics::CacheFigures;
use crate::oci::digest::{Algorithm, Digest};
use std::cell::Cell;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::SystemTime;

const SHARDS: usize = 16;
const STRIPES: usize = 8;

/// Names in the staging area that a restart removes: fills in progress (the tree's own
/// staged puts) and evicted files awaiting their last reader.
pub(super) const FILL_PREFIX: &str = "put-";
const EVICTED_PREFIX: &str = "evicted-";

/// One blob of the tier. Shared by the index, every open file of it and every fill waiter; the
/// file of an evicted entry is unlinked when the last of those drops it.
pub(crate) struct Entry {
    digest: Digest,
    size: u64,
    /// The cache's clock at the entry's last use.
    last_use: AtomicU64,
    evicted: AtomicBool,
    /// Where eviction moved the file; set before the rename, so that whoever finds the tree's
    /// name gone finds the file here.
    trash: OnceLock<PathBuf>,
    reaper: Arc<Reaper>,
}

impl Entry {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn evicted(&self) -> bool {
        self.evicted.load(Relaxed)
    }

    /// Opens the entry's file where it is: in the tree at `tree`, or where eviction moved it.
    /// `NotFound` when it is in neither (removed from under us).
    pub fn open(&self, tree: &Path) -> io::Result<fs::File> {
        if !self.evicted() {
            match open_cache::open_file(tree) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                r => return r,
            }
        }
        match self.trash.get() {
            Some(moved) => open_cache::open_file(moved),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(moved) = self.trash.take() {
            self.reaper.unlink(moved, self.size);
        }
    }
}

/// Unlinks evicted files on a thread of its own (an entry's last holder may be an event loop);
/// ends when the last entry and the cache are gone.
struct Reaper {
    tx: crossbeam_channel::Sender<(PathBuf, u64)>,
    /// Bytes of evicted files not yet unlinked.
    held: Arc<AtomicU64>,
}

impl Reaper {
    fn start() -> io::Result<Arc<Reaper>> {
        let (tx, rx) = crossbeam_channel::unbounded::<(PathBuf, u64)>();
        let held = Arc::new(AtomicU64::new(0));
        let counted = held.clone();
        std::thread::Builder::new()
            .name("cache-reaper".into())
            .spawn(move || {
                for (path, size) in rx {
                    if let Err(e) = fs::remove_file(&path) {
                        if e.kind() != io::ErrorKind::NotFound {
                            crate::log::warn(format_args!(
                                "removing evicted blob {}: {e}",
                                path.display()
                            ));
                        }
                    }
                    counted.fetch_sub(size, Relaxed);
                }
            })?;
        Ok(Arc::new(Reaper { tx, held }))
    }

    fn unlink(&self, path: PathBuf, size: u64) {
        if self.tx.send((path, size)).is_err() {
            // Not while an entry holds this reaper; kept for safety.
            self.held.fetch_sub(size, Relaxed);
        }
    }
}

/// A counter written by many threads, each mostly on its own cache line.
#[derive(Default)]
struct Striped([Padded; STRIPES]);

#[derive(Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

impl Striped {
    fn add(&self, n: u64) {
        let i = STRIPE.with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_STRIPE.fetch_add(1, Relaxed) % STRIPES);
            }
            s.get()
        });
        self.0[i].0.fetch_add(n, Relaxed);
    }

    fn sum(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Relaxed)).sum()
    }
}

pub(crate) struct Lru {
    bound: u64,
    blobs_dir: PathBuf,
    staging_dir: PathBuf,
    shards: [Mutex<HashMap<Digest, Arc<Entry>>>; SHARDS],
    /// Bytes of the indexed (not evicted) entries.
    bytes: AtomicU64,
    clock: AtomicU64,
    hits: Striped,
    misses: AtomicU64,
    remote_bytes: AtomicU64,
    evictions: AtomicU64,
    /// One eviction pass at a time.
    evicting: Mutex<()>,
    /// Makes evicted files' staging names unique.
    moved: AtomicU64,
    reaper: Arc<Reaper>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lru {
    /// The cache over the tree whose top directories are `blobs_dir` and `staging_dir`
    /// (both existing), bounded to `bound` bytes: re-indexed from the tree, staging leftovers
    /// removed, and trimmed to the bound (which may have been lowered since the last run).
    /// Blocking: called at start.
    pub fn open(blobs_dir: &Path, staging_dir: &Path, bound: u64) -> io::Result<Lru> {
        discard_leftovers(staging_dir)?;
        let mut found = index_tree(blobs_dir)?;
        found.sort_by_key(|f| f.2);
        let lru = Lru {
            bound,
            blobs_dir: blobs_dir.to_path_buf(),
            staging_dir: staging_dir.to_path_buf(),
            shards: std::array::from_fn(|_| Mutex::default()),
            bytes: AtomicU64::new(0),
            clock: AtomicU64::new(found.len() as u64 + 1),
            hits: Striped::default(),
            misses: AtomicU64::new(0),
            remote_bytes: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            evicting: Mutex::new(()),
            moved: AtomicU64::new(0),
            reaper: Reaper::start()?,
        };
        for (i, (digest, size, _)) in found.into_iter().enumerate() {
            let entry = lru.entry(digest.clone(), size, i as u64 + 1);
            lock(lru.shard(&digest)).insert(digest, entry);
            lru.bytes.fetch_add(size, Relaxed);
        }
        lru.shrink();
        Ok(lru)
    }

    fn entry(&self, digest: Digest, size: u64, last_use: u64) -> Arc<Entry> {
        Arc::new(Entry {
            digest,
            size,
            last_use: AtomicU64::new(last_use),
            evicted: AtomicBool::new(false),
            trash: OnceLock::new(),
            reaper: self.reaper.clone(),
        })
    }

    fn shard(&self, digest: &Digest) -> &Mutex<HashMap<Digest, Arc<Entry>>> {
        // Hex digits of a digest are uniformly distributed.
        let b = digest.hex().as_bytes();
        let nibble = |c: u8| (c as char).to_digit(16).unwrap_or(0) as usize;
        &self.shards[(nibble(b[0]) * 16 + nibble(b[1])) % SHARDS]
    }

    pub fn lookup(&self, digest: &Digest) -> Option<Arc<Entry>> {
        lock(self.shard(digest)).get(digest).cloned()
    }

    /// A request served `entry` from the tier: no lock, no syscall (module docs).
    pub fn hit(&self, entry: &Entry) {
        let now = self.clock.load(Relaxed);
        if entry.last_use.load(Relaxed) != now {
            entry.last_use.store(now, Relaxed);
        }
        self.hits.add(1);
        crate::log::debug(format_args!(
            "Cache HIT {} (served from disk)",
            entry.digest
        ));
    }

    pub fn miss(&self, digest: &Digest) {
        self.misses.fetch_add(1, Relaxed);
        crate::log::debug(format_args!(
            "Cache MISS {digest} (fetching from the remote backend)"
        ));
    }

    /// Counts `n` bytes read from the remote backend.
    pub fn fetched(&self, n: u64) {
        self.remote_bytes.fetch_add(n, Relaxed);
    }

    /// Takes a blob of `size` bytes, now in the tree, into the index (or finds it there), then
    /// evicts the least recently used others while the tree is over its bound. A blob larger
    /// than the bound is returned evicted at once: it stays only as long as it is held.
    /// Blocking (renames): run on the pool.
    pub fn admit(&self, digest: &Digest, size: u64) -> Arc<Entry> {
        if size > self.bound {
            let entry = self.entry(digest.clone(), size, 0);
            self.move_out(&entry);
            return entry;
        }
        let entry = {
            let mut shard = lock(self.shard(digest));
            if let Some(e) = shard.get(digest) {
                e.last_use.store(self.clock.load(Relaxed), Relaxed);
                return e.clone();
            }
            let now = self.clock.fetch_add(1, Relaxed) + 1;
            let e = self.entry(digest.clone(), size, now);
            shard.insert(digest.clone(), e.clone());
            self.bytes.fetch_add(size, Relaxed);
            e
        };
        self.shrink();
        entry
    }

    /// Drops `entry` from the index: its file is gone from the tree (removed by hand, or a
    /// fill raced the eviction of the same digest).
    pub fn forget(&self, entry: &Arc<Entry>) {
        if self.unindex(entry) {
            crate::log::warn(format_args!(
                "cached blob {} was missing from the tree; fetching it again",
                entry.digest
            ));
        }
    }

    /// Drops the digest's entry, if any (garbage collection removes the blob, and then its
    /// file): later reads miss and ask the backend, which no longer has it.
    pub fn discard(&self, digest: &Digest) -> bool {
        match self.lookup(digest) {
            Some(e) => self.unindex(&e),
            None => false,
        }
    }

    fn unindex(&self, entry: &Arc<Entry>) -> bool {
        let mut shard = lock(self.shard(&entry.digest));
        match shard.get(&entry.digest) {
            Some(e) if Arc::ptr_eq(e, entry) => {
                shard.remove(&entry.digest);
                self.bytes.fetch_sub(entry.size, Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Evicts least recently used entries until the index fits the bound. Blocking.
    fn shrink(&self) {
        if self.bytes.load(Relaxed) <= self.bound {
            return;
        }
        let _one = lock(&self.evicting);
        let mut all: Vec<(u64, Arc<Entry>)> = Vec::new();
        for shard in &self.shards {
            all.extend(
                lock(shard)
                    .values()
                    .map(|e| (e.last_use.load(Relaxed), e.clone())),
            );
        }
        // Usually a few of the oldest go: a heap (built in linear time) yields them without
        // sorting the whole index on every admission past the bound.
        let mut oldest: std::collections::BinaryHeap<_> = all
            .iter()
            .enumerate()
            .map(|(i, (t, _))| std::cmp::Reverse((*t, i)))
            .collect();
        let mut evicted = 0;
        while let Some(std::cmp::Reverse((_, i))) = oldest.pop() {
            if self.bytes.load(Relaxed) <= self.bound {
                break;
            }
            let entry = &all[i].1;
            if self.unindex(entry) {
                self.move_out(entry);
                evicted += 1;
            }
        }
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Relaxed);
            open_cache::note_eviction();
        }
    }

    /// Moves an entry's file out of the tree into staging, to be unlinked with the entry.
    fn move_out(&self, entry: &Entry) {
        let n = self.moved.fetch_add(1, Relaxed);
        let moved = self
            .staging_dir
            .join(format!("{EVICTED_PREFIX}{}-{n}", entry.digest.hex()));
        let tree = shard_path(&self.blobs_dir, &entry.digest);
        let _ = entry.trash.set(moved.clone());
        self.reaper.held.fetch_add(entry.size, Relaxed);
        if let Err(e) = fs::rename(&tree, &moved) {
            if e.kind() != io::ErrorKind::NotFound {
                crate::log::warn(format_args!("evicting {}: {e}", entry.digest));
                // Still in the tree: the reaper's unlink of the staging name finds nothing,
                // so remove the tree's name instead.
                let _ = fs::remove_file(&tree);
            }
        }
        entry.evicted.store(true, Relaxed);
    }

    pub fn figures(&self) -> CacheFigures {
        CacheFigures {
            hits: self.hits.sum(),
            misses: self.misses.load(Relaxed),
            remote_bytes: self.remote_bytes.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            evicted_held_bytes: self.reaper.held.load(Relaxed),
            bound: self.bound,
            blobs: self.shards.iter().map(|s| lock(s).len() as u64).sum(),
        }
    }
}

/// Removes what fills and evictions left in `staging` when the process stopped. Upload
/// sessions (directories) are not touched.
fn discard_leftovers(staging: &Path) -> io::Result<()> {
    for entry in fs::read_dir(staging)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if (name.starts_with(FILL_PREFIX) || name.starts_with(EVICTED_PREFIX))
            && entry.file_type()?.is_file()
        {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Every blob of the tree with its size and last use (access or modification time).
fn index_tree(blobs_dir: &Path) -> io::Result<Vec<(Digest, u64, SystemTime)>> {
    let mut out = Vec::new();
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        let alg_dir = blobs_dir.join(algorithm.as_str());
        for shard in read_dir_if_any(&alg_dir)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(shard.path())? {
                let file = file?;
                let name = file.file_name();
                let Ok(digest) = Digest::parse(&format!(
                    "{}:{}",
                    algorithm.as_str(),
                    name.to_string_lossy()
                )) else {
                    continue;
                };
                let meta = file.metadata()?;
                if !meta.is_file() {
                    continue;
                }
                let used = meta.modified()?.max(meta.accessed()?);
                out.push((digest, meta.len(), used));
            }
        }
    }
    Ok(out)
}

fn read_dir_if_any(dir: &Path) -> io::Result<Vec<io::Result<fs::DirEntry>>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries.collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}
