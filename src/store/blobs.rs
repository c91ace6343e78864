//! The content-addressed blob tree: `<root>/blobs/<algorithm>/<first two hex>/<hex>`.
//! A file appears there only by an atomic rename of a fully written, fsynced file, followed by
//! an fsync of its directory, so a crash never leaves a partial blob under its digest's name.
//! Files are never modified after that, which is what makes serving them by `sendfile` or from
//! mmap safe. Open blobs are cached per worker; the S3 tier of the scale-out issue plugs in
//! behind the same `open`/`commit` pair, with this tree as its local cache.
//!
//! Cached files count against the open-file limit like connections do, so the cache is sized
//! from that limit ([`size_open_cache`]) and gives way under pressure: a worker that runs out
//! of descriptors empties its own cache at once and bumps a process-wide epoch, and every other
//! worker empties its cache when it next sees the epoch changed (before using the cache, and on
//! its periodic tick), so a request or a new connection gets a descriptor back instead of an
//! error.

use crate::blocking::Pool;
use crate::error::{Error, Result};
use crate::oci::digest::Digest;
use memmap2::Mmap;
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Blobs kept open per worker at most, however high the open-file limit. Past the bound the
/// cache is emptied: opening is cheap to redo, and a bound keeps address space in check too.
const MAX_OPEN_CACHE_ENTRIES: usize = 4096;

/// The per-worker bound in force ([`size_open_cache`] sets it at start).
static OPEN_CACHE_ENTRIES: AtomicUsize = AtomicUsize::new(MAX_OPEN_CACHE_ENTRIES);

/// Bumped whenever some worker ran out of file descriptors; a worker whose cache is from an
/// older epoch empties it.
static PRESSURE_EPOCH: AtomicU64 = AtomicU64::new(0);

struct OpenCache {
    files: HashMap<Digest, Rc<BlobFile>>,
    /// The [`PRESSURE_EPOCH`] these files were opened under.
    epoch: u64,
}

thread_local! {
    static OPEN: RefCell<OpenCache> = RefCell::new(OpenCache {
        files: HashMap::new(),
        epoch: 0,
    });
}

/// Sizes the per-worker open-blob cache from the open-file limit `nofile` shared by `workers`
/// workers, and returns the size. All caches together take at most a quarter of the limit: the
/// rest is for connections, upload files, blobs being sent (a response keeps its file open
/// whether cached or not), SQLite and the thread pools.
pub fn size_open_cache(nofile: u64, workers: usize) -> usize {
    let entries = cache_share(nofile, workers);
    OPEN_CACHE_ENTRIES.store(entries, Ordering::Relaxed);
    entries
}

fn cache_share(nofile: u64, workers: usize) -> usize {
    let share = nofile / 4 / workers.max(1) as u64;
    usize::try_from(share).map_or(MAX_OPEN_CACHE_ENTRIES, |n| n.min(MAX_OPEN_CACHE_ENTRIES))
}

/// Whether `e` says the process (EMFILE) or the system (ENFILE) has no descriptor to spare.
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Closes this worker's cached blob files now and has every other worker close theirs: called
/// when opening a file or accepting a connection failed for want of descriptors.
pub fn release_open_files() {
    let epoch = PRESSURE_EPOCH.fetch_add(1, Ordering::AcqRel) + 1;
    OPEN.with(|c| {
        let mut c = c.borrow_mut();
        c.files.clear();
        c.epoch = epoch;
    });
}

/// Empties this worker's cache if another worker ran out of descriptors since it was filled.
/// Runs before every use of the cache and on each worker's periodic tick (an idle worker
/// would otherwise keep its files).
pub fn heed_pressure() {
    let epoch = PRESSURE_EPOCH.load(Ordering::Acquire);
    OPEN.with(|c| {
        let mut c = c.borrow_mut();
        if c.epoch != epoch {
            c.files.clear();
            c.epoch = epoch;
        }
    });
}

/// Opens a blob file; out of descriptors, releases the cached ones (see the module docs) and
/// tries once more.
fn open_file(path: &Path) -> io::Result<fs::File> {
    match fs::File::open(path) {
        Err(e) if out_of_descriptors(&e) => {
            crate::log::warn(format_args!(
                "opening a blob: {e}; closing cached blob files"
            ));
            release_open_files();
            fs::File::open(path)
        }
        r => r,
    }
}

/// A committed blob, open for serving. Large bodies go to the socket by `sendfile` straight
/// from the page cache (no copy through this process, no pages mapped into it, so a 10 GB
/// download leaves the RSS flat); small ones (manifests, configs) are read through a mapping,
/// made on first use, so that they leave in the same write as the response head.
pub struct BlobFile {
    file: fs::File,
    len: u64,
    map: OnceCell<Mmap>,
}

impl BlobFile {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn file(&self) -> &fs::File {
        &self.file
    }

    /// The whole content, mapped. Meant for small blobs: every page read stays counted in the
    /// process's RSS while the blob is cached.
    pub fn bytes(&self) -> io::Result<&[u8]> {
        if self.len == 0 {
            return Ok(&[]);
        }
        if let Some(m) = self.map.get() {
            return Ok(m);
        }
        // SAFETY: committed blob files are immutable and never truncated (module docs).
        let m = unsafe { Mmap::map(&self.file)? };
        Ok(self.map.get_or_init(|| m))
    }
}

#[derive(Clone)]
pub struct BlobStore {
    blobs_dir: PathBuf,
    staging_dir: PathBuf,
    pool: Pool,
}

impl BlobStore {
    /// The tree's top directories: the blob tree and the upload staging area.
    pub fn top_dirs(root: &Path) -> [PathBuf; 2] {
        [root.join("blobs"), root.join("uploads")]
    }

    /// The store over `root`, whose [`top_dirs`](Self::top_dirs) the caller has made (or, in
    /// read-only mode, left as they are); touches nothing on disk.
    pub fn at(root: &Path, pool: Pool) -> BlobStore {
        let [blobs_dir, staging_dir] = Self::top_dirs(root);
        BlobStore {
            blobs_dir,
            staging_dir,
            pool,
        }
    }

    /// Creates the top directories, then [`at`](Self::at).
    pub fn open(root: &Path, pool: Pool) -> io::Result<BlobStore> {
        for dir in Self::top_dirs(root) {
            fs::create_dir_all(dir)?;
        }
        Ok(Self::at(root, pool))
    }

    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        shard_path(&self.blobs_dir, digest)
    }

    /// Where upload sessions keep their data (`<root>/uploads`).
    pub fn staging_dir(&self) -> &Path {
        &self.staging_dir
    }

    /// The blob, open. `Ok(None)` when the file is absent.
    pub fn get(&self, digest: &Digest) -> io::Result<Option<Rc<BlobFile>>> {
        heed_pressure();
        if let Some(b) = OPEN.with(|c| c.borrow().files.get(digest).cloned()) {
            return Ok(Some(b));
        }
        let file = match open_file(&self.path_of(digest)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let blob = Rc::new(BlobFile {
            file,
            len,
            map: OnceCell::new(),
        });
        let bound = OPEN_CACHE_ENTRIES.load(Ordering::Relaxed);
        OPEN.with(|c| {
            let files = &mut c.borrow_mut().files;
            if files.len() >= bound {
                files.clear();
            }
            if bound > 0 {
                files.insert(digest.clone(), blob.clone());
            }
        });
        Ok(Some(blob))
    }

    /// Moves a fully written and fsynced file into the tree under `digest`. When the blob is
    /// already there (same content by definition), the staged file is simply removed.
    pub async fn commit(&self, staged: PathBuf, digest: &Digest) -> Result<()> {
        let dest = self.path_of(digest);
        self.pool
            .run(move || commit_blocking(&staged, &dest))
            .await?
            .map_err(|e| Error::internal("committing blob", e))
    }

    /// Writes small content (a manifest) durably under its digest.
    pub async fn put_bytes(&self, digest: &Digest, bytes: Vec<u8>) -> Result<()> {
        let dest = self.path_of(digest);
        let staged = self
            .staging_dir
            .join(format!("manifest-{}", crate::store::uploads::new_id()));
        self.pool
            .run(move || -> io::Result<()> {
                if dest.exists() {
                    return Ok(());
                }
                let mut f = fs::File::create(&staged)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                drop(f);
                commit_blocking(&staged, &dest)
            })
            .await?
            .map_err(|e| Error::internal("writing manifest", e))
    }
}

pub fn shard_path(blobs_dir: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    blobs_dir
        .join(digest.algorithm().as_str())
        .join(&hex[..2])
        .join(hex)
}

/// rename + fsync of the directory (and of the parents we had to create), in that order, so
/// the name is durable before the caller acknowledges anything.
fn commit_blocking(staged: &Path, dest: &Path) -> io::Result<()> {
    if dest.exists() {
        fs::remove_file(staged)?;
        return Ok(());
    }
    let shard = dest
        .parent()
        .ok_or_else(|| io::Error::other("blob path has no parent"))?;
    if !shard.exists() {
        fs::create_dir_all(shard)?;
        if let Some(alg_dir) = shard.parent() {
            fsync_dir(alg_dir)?;
            if let Some(blobs) = alg_dir.parent() {
                fsync_dir(blobs)?;
            }
        }
    }
    fs::rename(staged, dest)?;
    fsync_dir(shard)?;
    if let Some(staging) = staged.parent() {
        // The source directory lost an entry; not needed for durability of the blob, but keeps
        // a restart from seeing a stale staged name.
        let _ = fsync_dir(staging);
    }
    Ok(())
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_layout() {
        let d = Digest::sha256_of(b"hello");
        let p = shard_path(Path::new("/r/blobs"), &d);
        assert_eq!(
            p,
            Path::new("/r/blobs/sha256/2c/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
    }

    #[test]
    fn the_cache_takes_a_quarter_of_the_limit_up_to_its_bound() {
        assert_eq!(cache_share(256, 2), 32);
        assert_eq!(cache_share(1024, 3), 85);
        assert_eq!(cache_share(1 << 20, 2), MAX_OPEN_CACHE_ENTRIES);
        assert_eq!(cache_share(u64::MAX, 1), MAX_OPEN_CACHE_ENTRIES);
        assert_eq!(cache_share(8, 4), 0);
    }

    #[test]
    fn commit_then_map_empty_and_nonempty() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), Pool::new(1, "t").unwrap()).unwrap();
        for content in [&b""[..], b"some bytes"] {
            let d = Digest::sha256_of(content);
            let staged = store.staging_dir().join("x");
            fs::write(&staged, content).unwrap();
            commit_blocking(&staged, &store.path_of(&d)).unwrap();
            assert!(!staged.exists());
            let b = store.get(&d).unwrap().unwrap();
            assert_eq!(b.len(), content.len() as u64);
            assert_eq!(b.bytes().unwrap(), content);
            // Committing the same content again keeps one copy and removes the staged file.
            fs::write(&staged, content).unwrap();
            commit_blocking(&staged, &store.path_of(&d)).unwrap();
            assert!(!staged.exists());
        }
        assert!(store.get(&Digest::sha256_of(b"absent")).unwrap().is_none());
    }
}
