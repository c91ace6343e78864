//! `BlobStore`: a local hot tier over a [`BlobBackend`]. Every blob is served from the tier
//! (this machine's tree, [`FsBackend`]): by `sendfile` from the page cache, or from a mapping
//! when small. With the filesystem backend the tier *is* the backend. With a remote backend
//! (S3, an upstream registry), the tier is a size-bounded cache of hot blobs ([`Lru`]): a miss
//! is fetched once into staging, verified, committed to the tier and then served; however many
//! requests miss on the same blob at once, one fetch runs and the others wait for it. Pushes
//! land in the tier too. The least recently used blobs are evicted when an admission takes the
//! tier past its bound, never from under a response that is sending them.
//!
//! A miss on a big blob is sent while its fetch writes it ([`super::fill`]), the blob's last
//! byte held back until the digest matched; small blobs, ranges and manifests wait for the
//! fetch to be complete and are then ordinary file responses.
//!
//! Open blobs are cached per worker ([`super::open_cache`]), so a hot blob costs no `open` per
//! request.

use super::backend::{BlobBackend, Listed, Whole};
use super::error::{Error, Result};
use super::fill::{self, Fill, Fills, Growing, Job};
use super::fs::FsBackend;
use super::lru::{Entry, Lru, FILL_PREFIX};
use super::open_cache;
use crate::blocking::Pool;
use crate::observe::metrics::CacheFigures;
use crate::oci::digest::Digest;
use memmap2::Mmap;
use std::cell::OnceCell;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

/// Misses on blobs up to this size wait for their fetch to complete: it takes about as long
/// as a round trip, and the answer is then an ordinary (inlined, mapped) file response.
pub const STREAM_FROM: u64 = 1024 * 1024;

/// A blob for a whole-body response.
pub enum Served {
    File(Rc<BlobFile>),
    /// A miss whose fetch is under way: its bytes are sent as they arrive.
    Growing(Rc<Growing>),
}

/// A committed blob, open for serving. Large bodies go to the socket by `sendfile` straight
/// from the page cache (no copy through this process, no pages mapped into it, so a 10 GB
/// download leaves the RSS flat); small ones (manifests, configs) are read through a mapping,
/// made on first use, so that they leave in the same write as the response head.
pub struct BlobFile {
    file: fs::File,
    len: u64,
    map: OnceCell<Mmap>,
    /// On a cache tier: the blob's entry, which keeps an evicted file on disk while this is
    /// held (by a response, or a worker's cache of open files).
    entry: Option<Arc<Entry>>,
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

    /// Whether the cache tier evicted this blob (its file is only held open now).
    pub(super) fn evicted(&self) -> bool {
        self.entry.as_ref().is_some_and(|e| e.evicted())
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

/// The remote backend under a cache tier, and the cache's index.
#[derive(Clone)]
struct Remote {
    backend: Arc<dyn BlobBackend>,
    lru: Arc<Lru>,
}

#[derive(Clone)]
pub struct BlobStore {
    tier: Arc<FsBackend>,
    /// None: the tier is the backend.
    remote: Option<Remote>,
    fills: Arc<Fills>,
    pool: Pool,
}

impl BlobStore {
    /// The directories of the tree under `root`: the blob tree and the staging area.
    pub fn top_dirs(root: &Path) -> [PathBuf; 2] {
        FsBackend::top_dirs(root)
    }

    /// The filesystem deployment over `root`, whose [`top_dirs`](Self::top_dirs) the caller
    /// has made (or, in read-only mode, left as they are): the tree is tier and backend at
    /// once. Touches nothing on disk.
    pub fn at(root: &Path, pool: Pool) -> BlobStore {
        BlobStore {
            tier: Arc::new(FsBackend::at(root, pool.clone())),
            remote: None,
            fills: Arc::default(),
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

    /// The tree under `root` as a cache of at most `max_bytes` of hot blobs over `remote`,
    /// which holds every blob durably. Re-indexes the tree (blocking: called at start), see
    /// [`Lru::open`].
    pub fn with_remote(
        root: &Path,
        pool: Pool,
        remote: Arc<dyn BlobBackend>,
        max_bytes: u64,
    ) -> io::Result<BlobStore> {
        let store = BlobStore::open(root, pool)?;
        let [blobs_dir, staging_dir] = Self::top_dirs(root);
        let lru = Lru::open(&blobs_dir, &staging_dir, max_bytes)?;
        Ok(BlobStore {
            remote: Some(Remote {
                backend: remote,
                lru: Arc::new(lru),
            }),
            ..store
        })
    }

    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        self.tier.path_of(digest)
    }

    /// Where resumable upload sessions keep their bytes: the remote backend's staging, when it
    /// has one (see `store::uploads`).
    pub fn upload_staging(&self) -> Option<Arc<dyn super::backend::UploadStaging>> {
        self.remote.as_ref()?.backend.clone().upload_staging()
    }

    /// Where upload sessions keep their data (`<root>/uploads`).
    pub fn staging_dir(&self) -> &Path {
        self.tier.staging_dir()
    }

    /// A URL where the client may fetch the blob from the remote backend itself, valid for
    /// `valid`; None when the backend has none (the filesystem deployment).
    pub async fn presigned_get(
        &self,
        digest: &Digest,
        valid: std::time::Duration,
    ) -> Result<Option<String>> {
        match &self.remote {
            Some(remote) => remote.backend.presigned_get(digest, valid).await,
            None => Ok(None),
        }
    }

    /// The cache tier's figures for `/metrics`; `None` on the filesystem deployment.
    pub fn cache_figures(&self) -> Option<CacheFigures> {
        self.remote.as_ref().map(|r| r.lru.figures())
    }

    /// The blob, open for serving from the tier; `Ok(None)` when no backend holds it. A miss
    /// waits for its fetch to be complete (for what needs the whole file: ranges, manifests).
    pub async fn get(&self, digest: &Digest) -> Result<Option<Rc<BlobFile>>> {
        let Some(remote) = &self.remote else {
            return open_local(&self.tier, digest);
        };
        if let Some(b) = self.cached(remote, digest)? {
            return Ok(Some(b));
        }
        match self.fill(remote, digest).finished().await? {
            Some(e) => self.open_entry(e),
            None => Ok(None),
        }
    }

    /// The blob for a whole-body response: as [`get`](Self::get), except that a miss on a
    /// blob larger than [`STREAM_FROM`] is sent while its fetch writes it ([`super::fill`]).
    pub async fn get_streaming(&self, digest: &Digest) -> Result<Option<Served>> {
        let Some(remote) = &self.remote else {
            return Ok(open_local(&self.tier, digest)?.map(Served::File));
        };
        if let Some(b) = self.cached(remote, digest)? {
            return Ok(Some(Served::File(b)));
        }
        let fill = self.fill(remote, digest);
        match fill.started().await? {
            None => Ok(None),
            Some(g) if g.len() > STREAM_FROM => Ok(Some(Served::Growing(Rc::new(g)))),
            Some(_) => match fill.finished().await? {
                Some(e) => Ok(self.open_entry(e)?.map(Served::File)),
                None => Ok(None),
            },
        }
    }

    /// The blob from the tier when it holds it (a hit), else counts the miss.
    fn cached(&self, remote: &Remote, digest: &Digest) -> Result<Option<Rc<BlobFile>>> {
        if let Some(b) = open_cache::get(digest) {
            if let Some(e) = &b.entry {
                remote.lru.hit(e);
            }
            return Ok(Some(b));
        }
        if let Some(e) = remote.lru.lookup(digest) {
            if let Some(b) = self.open_entry(e.clone())? {
                remote.lru.hit(&e);
                return Ok(Some(b));
            }
            remote.lru.forget(&e);
        }
        remote.lru.miss(digest);
        Ok(None)
    }

    /// The fetch of `digest` into the tier: the one running, or a new one.
    fn fill(&self, remote: &Remote, digest: &Digest) -> Arc<Fill> {
        fill::start(Job {
            digest: digest.clone(),
            backend: remote.backend.clone(),
            lru: remote.lru.clone(),
            pool: self.pool.clone(),
            fills: self.fills.clone(),
            staged: self
                .staging_dir()
                .join(format!("{}{}", FILL_PREFIX, super::uploads::new_id())),
            dest: self.path_of(digest),
        })
    }

    /// Opens a cached entry's file (wherever eviction may have moved it) and keeps it in this
    /// worker's cache unless evicted; `None` when the file is gone.
    fn open_entry(&self, entry: Arc<Entry>) -> Result<Option<Rc<BlobFile>>> {
        let file = match entry.open(&self.tier.path_of(entry.digest())) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("opening blob", e)),
        };
        let evicted = entry.evicted();
        let blob = Rc::new(BlobFile {
            file,
            len: entry.size(),
            map: OnceCell::new(),
            entry: Some(entry),
        });
        if !evicted {
            if let Some(e) = &blob.entry {
                open_cache::insert(e.digest(), &blob);
            }
        }
        Ok(Some(blob))
    }

    /// Makes a fully written and fsynced staged file the blob `digest`: moved into the tier,
    /// and stored in the remote backend (when there is one) before this resolves, since the
    /// remote is what must survive; the tier keeps it as a recently used blob.
    pub async fn commit(&self, staged: PathBuf, digest: &Digest) -> Result<()> {
        self.tier.adopt(staged, digest).await?;
        if let Some(remote) = &self.remote {
            let path = self.tier.path_of(digest);
            remote.backend.put_file(&path, digest).await?;
            self.admit(remote, digest, None).await?;
        }
        Ok(())
    }

    /// Writes small content (a manifest) durably under its digest, verified against it: one
    /// trip to the pool, since the tier stores a one-piece stream in one.
    pub async fn put_bytes(&self, digest: &Digest, bytes: Vec<u8>) -> Result<()> {
        let size = bytes.len() as u64;
        self.tier
            .put_stream(digest, size, &mut Whole::new(bytes))
            .await?;
        if let Some(remote) = &self.remote {
            remote
                .backend
                .put_file(&self.path_of(digest), digest)
                .await?;
            self.admit(remote, digest, Some(size)).await?;
        }
        Ok(())
    }

    /// Removes the blob's bytes, once the metadata no longer records it (garbage collection):
    /// the cache tier's copy first, then the backend's. `true` if the backend had it.
    pub async fn remove(&self, digest: &Digest) -> Result<bool> {
        let Some(remote) = &self.remote else {
            return self.tier.delete(digest).await;
        };
        remote.lru.discard(digest);
        self.tier.delete(digest).await?;
        remote.backend.delete(digest).await
    }

    /// Where every blob is kept for good: the remote backend, when there is one, else the
    /// tree.
    fn durable(&self) -> &dyn BlobBackend {
        match &self.remote {
            Some(remote) => remote.backend.as_ref(),
            None => self.tier.as_ref(),
        }
    }

    /// A page of the blobs the durable backend holds, in digest order after `after`:
    /// garbage collection's orphan sweep.
    pub async fn list(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<Listed>> {
        self.durable().list(after, limit).await
    }

    /// The durable backend's [`BlobBackend::strays`].
    pub async fn strays(
        &self,
        live: &std::collections::HashSet<String>,
        cutoff: i64,
        delete: bool,
    ) -> Result<(u64, u64)> {
        self.durable().strays(live, cutoff, delete).await
    }

    /// Indexes a blob now in the tree (its size read from the file when not given), evicting
    /// others past the bound, on the pool (eviction renames).
    async fn admit(
        &self,
        remote: &Remote,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<Arc<Entry>> {
        let (lru, d, path) = (remote.lru.clone(), digest.clone(), self.path_of(digest));
        self.pool
            .run(move || {
                let size = match size {
                    Some(s) => s,
                    None => fs::metadata(path)?.len(),
                };
                Ok(lru.admit(&d, size))
            })
            .await
            .map_err(|_| Error::Io("admitting a blob: the blocking pool stopped".into()))?
            .map_err(|e| Error::io("admitting a blob", e))
    }
}

/// The tier's file for `digest`, from this worker's cache or opened now; `Ok(None)` when the
/// tier does not hold it.
fn open_local(tier: &FsBackend, digest: &Digest) -> Result<Option<Rc<BlobFile>>> {
    if let Some(b) = open_cache::get(digest) {
        return Ok(Some(b));
    }
    let file = match open_cache::open_file(&tier.path_of(digest)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("opening blob", e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("examining blob", e))?
        .len();
    let blob = Rc::new(BlobFile {
        file,
        len,
        map: OnceCell::new(),
        entry: None,
    });
    open_cache::insert(digest, &blob);
    Ok(Some(blob))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    #[test]
    fn commit_then_get_empty_and_nonempty() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), Pool::new(1, "t").unwrap()).unwrap();
        runtime().block_on(async {
            for content in [&b""[..], b"some bytes"] {
                let d = Digest::sha256_of(content);
                let staged = store.staging_dir().join("x");
                fs::write(&staged, content).unwrap();
                store.commit(staged.clone(), &d).await.unwrap();
                assert!(!staged.exists());
                let b = store.get(&d).await.unwrap().unwrap();
                assert_eq!(b.len(), content.len() as u64);
                assert_eq!(b.bytes().unwrap(), content);
                // Committing the same content again keeps one copy and removes the staged file.
                fs::write(&staged, content).unwrap();
                store.commit(staged.clone(), &d).await.unwrap();
                assert!(!staged.exists());
            }
            let absent = Digest::sha256_of(b"absent");
            assert!(store.get(&absent).await.unwrap().is_none());
        });
    }

    /// A tier over a remote (another tree standing in for S3): what only the remote holds is
    /// fetched into the tier once, however many ask at once, and then served locally; a
    /// commit lands in both.
    #[test]
    fn a_miss_on_the_remote_is_fetched_once_into_the_tier() {
        let f = fixture(1 << 30);
        let (store, remote) = (&f.store, &f.remote);
        let content: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
        let d = Digest::sha256_of(&content);
        let src = f.remote_dir.path().join("src");
        fs::write(&src, &content).unwrap();
        runtime().block_on(async {
            remote.put_file(&src, &d).await.unwrap();
            assert!(!store.path_of(&d).exists());
            let gets = (0..100).map(|_| store.get(&d));
            let got = futures_join_all(gets).await;
            for b in got {
                let b = b.unwrap().unwrap();
                assert_eq!(b.len(), content.len() as u64);
            }
            assert!(fs::read(store.path_of(&d)).unwrap() == content);
            assert_eq!(
                remote.reads.load(Ordering::SeqCst),
                1,
                "one fetch for a hundred misses"
            );
            let figures = store.cache_figures().unwrap();
            assert_eq!(figures.misses, 100);
            assert_eq!(figures.remote_bytes, content.len() as u64);
            assert_eq!(figures.bytes, content.len() as u64);
            store.get(&d).await.unwrap().unwrap();
            assert_eq!(
                remote.reads.load(Ordering::SeqCst),
                1,
                "a hit reads nothing remote"
            );
            assert!(store.fills.lock().unwrap().is_empty());
            let staged_left = fs::read_dir(store.staging_dir()).unwrap().count();
            assert_eq!(staged_left, 0, "no fetch leftovers");

            // A remote blob whose bytes do not match its name is refused, not served.
            let bad = Digest::sha256_of(b"claimed");
            fs::write(&src, b"other bytes").unwrap();
            let bad_path = remote.inner.path_of(&bad);
            fs::create_dir_all(bad_path.parent().unwrap()).unwrap();
            fs::copy(&src, &bad_path).unwrap();
            assert!(matches!(store.get(&bad).await, Err(Error::Corrupt(_))));
            assert!(!store.path_of(&bad).exists());

            // Commits go to both.
            let fresh = b"pushed through the tier";
            let fd = Digest::sha256_of(fresh);
            let staged = store.staging_dir().join("push");
            fs::write(&staged, fresh).unwrap();
            store.commit(staged, &fd).await.unwrap();
            assert_eq!(remote.stat(&fd).await.unwrap(), fresh.len() as u64);
            assert!(store.path_of(&fd).exists());
            store
                .put_bytes(&Digest::sha256_of(b"{}"), b"{}".to_vec())
                .await
                .unwrap();
            assert_eq!(remote.stat(&Digest::sha256_of(b"{}")).await.unwrap(), 2);
        });
    }

    /// A tier over a counting remote tree, bounded to `bound` bytes, and the remote's root.
    struct Fixture {
        store: BlobStore,
        remote: Arc<Counting>,
        tier_dir: tempfile::TempDir,
        remote_dir: tempfile::TempDir,
    }

    fn fixture(bound: u64) -> Fixture {
        let tier_dir = tempfile::tempdir().unwrap();
        let remote_dir = tempfile::tempdir().unwrap();
        let pool = Pool::new(2, "t").unwrap();
        let remote = Arc::new(Counting {
            inner: FsBackend::open(remote_dir.path(), pool.clone()).unwrap(),
            reads: Default::default(),
            gate: Arc::new(AtomicUsize::new(usize::MAX)),
        });
        let store = BlobStore::with_remote(tier_dir.path(), pool, remote.clone(), bound).unwrap();
        Fixture {
            store,
            remote,
            tier_dir,
            remote_dir,
        }
    }

    impl Fixture {
        /// Stores `len` bytes (distinct per `seed`) in the remote only.
        async fn remote_blob(&self, seed: u8, len: usize) -> (Digest, Vec<u8>) {
            let content: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
            let d = Digest::sha256_of(&content);
            let src = self.remote_dir.path().join(format!("src-{seed}"));
            fs::write(&src, &content).unwrap();
            self.remote.put_file(&src, &d).await.unwrap();
            (d, content)
        }

        fn reads(&self) -> usize {
            self.remote.reads.load(Ordering::SeqCst)
        }

        fn cached(&self, d: &Digest) -> bool {
            self.store.path_of(d).exists()
        }

        /// Whether every evicted file was unlinked (the reaper thread does it, counting as it
        /// goes).
        fn settled(&self) -> bool {
            self.staged().is_empty() && self.store.cache_figures().unwrap().evicted_held_bytes == 0
        }

        /// Names in the staging area (evicted files waiting for their last reader).
        fn staged(&self) -> Vec<String> {
            fs::read_dir(self.store.staging_dir())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        }
    }

    /// Waits (up to 10 s) for the reaper thread to unlink what was released.
    fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// The least recently used blob goes first, the bound holds after every admission, and a
    /// hit refreshes a blob's place.
    #[test]
    fn the_least_recently_used_blob_is_evicted_and_the_bound_holds() {
        let f = fixture(3000);
        runtime().block_on(async {
            let mut blobs = Vec::new();
            for seed in 1..=5 {
                blobs.push(f.remote_blob(seed, 1000).await);
            }
            let [a, b, c, d, e] = [0, 1, 2, 3, 4].map(|i| blobs[i].0.clone());
            for x in [&a, &b, &c] {
                f.store.get(x).await.unwrap().unwrap();
            }
            assert_eq!(f.store.cache_figures().unwrap().bytes, 3000);
            // a used again: b is now the least recently used.
            f.store.get(&a).await.unwrap().unwrap();
            f.store.get(&d).await.unwrap().unwrap();
            assert!(!f.cached(&b), "b was the least recently used");
            assert!(f.cached(&a) && f.cached(&c) && f.cached(&d));
            // c used: a goes next (a was used before c).
            f.store.get(&c).await.unwrap().unwrap();
            f.store.get(&e).await.unwrap().unwrap();
            assert!(!f.cached(&a), "a was the least recently used");
            assert!(f.cached(&c) && f.cached(&d) && f.cached(&e));
            let figures = f.store.cache_figures().unwrap();
            assert_eq!(figures.bytes, 3000);
            assert!(figures.bytes <= figures.bound);
            assert_eq!(figures.blobs, 3);
            assert_eq!(figures.evictions, 2);
            assert_eq!(figures.misses, 5);
            assert_eq!(figures.hits, 2);
            assert_eq!(figures.remote_bytes, 5000);
            // This thread's cache of open files let go of the evicted files once told, and
            // their disk space came back.
            open_cache::heed_pressure();
            eventually("evicted files unlinked", || f.settled());
            // An evicted blob is a miss again, fetched once more.
            let before = f.reads();
            let got = f.store.get(&b).await.unwrap().unwrap();
            assert!(got.bytes().unwrap() == blobs[1].1);
            assert_eq!(f.reads(), before + 1);
        });
    }

    /// A blob being sent when it is evicted leaves the tree at once but stays on disk, its
    /// bytes intact, until the response lets go of it.
    #[test]
    fn a_blob_being_served_is_not_unlinked_until_released() {
        let f = fixture(2000);
        runtime().block_on(async {
            let (a, content) = f.remote_blob(1, 1000).await;
            let (b, _) = f.remote_blob(2, 1000).await;
            let (c, _) = f.remote_blob(3, 1000).await;
            let sending = f.store.get(&a).await.unwrap().unwrap();
            f.store.get(&b).await.unwrap().unwrap();
            f.store.get(&c).await.unwrap().unwrap();
            assert!(!f.cached(&a), "a left the tree");
            open_cache::heed_pressure();
            let staged = f.staged();
            assert_eq!(staged.len(), 1, "{staged:?}");
            assert!(staged[0].starts_with("evicted-"));
            let figures = f.store.cache_figures().unwrap();
            assert_eq!((figures.bytes, figures.evicted_held_bytes), (2000, 1000));
            // Long after: still there, while the response holds it.
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert_eq!(f.staged().len(), 1);
            let mut read = Vec::new();
            use std::io::{Read, Seek};
            let mut file = sending.file();
            file.seek(io::SeekFrom::Start(0)).unwrap();
            file.read_to_end(&mut read).unwrap();
            assert!(read == content);
            drop(sending);
            eventually("the released file unlinked", || f.settled());
        });
    }

    /// A blob larger than the whole cache is served from its fill and does not stay; every
    /// request for it is a fetch.
    #[test]
    fn a_blob_larger_than_the_bound_is_served_without_staying() {
        let f = fixture(1000);
        runtime().block_on(async {
            let (small, _) = f.remote_blob(1, 500).await;
            f.store.get(&small).await.unwrap().unwrap();
            let (big, content) = f.remote_blob(2, 3000).await;
            let got = futures_join_all((0..10).map(|_| f.store.get(&big))).await;
            assert_eq!(f.reads(), 2, "one fetch for the ten concurrent requests");
            for b in &got {
                let b = b.as_ref().unwrap().as_ref().unwrap();
                assert!(b.bytes().unwrap() == content);
            }
            assert!(!f.cached(&big));
            assert!(f.cached(&small), "nothing was evicted for it");
            let figures = f.store.cache_figures().unwrap();
            assert_eq!((figures.bytes, figures.evictions), (500, 0));
            assert_eq!(figures.evicted_held_bytes, 3000);
            drop(got);
            eventually("the oversize fill unlinked", || f.settled());
            f.store.get(&big).await.unwrap().unwrap();
            assert_eq!(f.reads(), 3, "not kept: fetched again");
        });
    }

    /// Sends what a growing blob lets out, from `at`, until it is whole or fails; the bytes
    /// and how it ended.
    async fn drain(g: &Growing) -> (Vec<u8>, Result<()>) {
        use std::os::unix::fs::FileExt;
        let mut out = Vec::new();
        loop {
            let at = out.len() as u64;
            if at == g.len() {
                return (out, Ok(()));
            }
            match g.readable(at).await {
                Ok(end) => {
                    let mut buf = vec![0; (end - at) as usize];
                    g.file().read_exact_at(&mut buf, at).unwrap();
                    out.extend_from_slice(&buf);
                }
                Err(e) => return (out, Err(e)),
            }
        }
    }

    fn growing(served: Option<Served>) -> Rc<Growing> {
        match served {
            Some(Served::Growing(g)) => g,
            Some(Served::File(_)) => panic!("served from a complete file"),
            None => panic!("not found"),
        }
    }

    /// A miss on a big blob is readable while its one fetch runs, by every request that
    /// missed, up to what the fetch wrote; the last byte waits for the digest.
    #[test]
    fn a_miss_is_sent_while_its_fetch_writes_it() {
        let f = fixture(1 << 30);
        runtime().block_on(async {
            let (d, content) = f.remote_blob(3, 3 * 1024 * 1024 + 5).await;
            f.remote.gate.store(1, Ordering::SeqCst);
            let first = growing(f.store.get_streaming(&d).await.unwrap());
            let end = first.readable(0).await.unwrap();
            assert!(
                end > 0 && end < content.len() as u64,
                "one piece out: {end}"
            );
            let others = futures_join_all((0..5).map(|_| f.store.get_streaming(&d))).await;
            let others: Vec<_> = others.into_iter().map(|s| growing(s.unwrap())).collect();
            assert_eq!(f.reads(), 1, "one fetch for every request that missed");
            assert!(!f.cached(&d), "not in the tree before it is whole");
            f.remote.gate.store(usize::MAX, Ordering::SeqCst);
            let all = std::iter::once(&first).chain(&others).map(|g| drain(g));
            for (bytes, end) in futures_join_all(all).await {
                end.unwrap();
                assert!(bytes == content);
            }
            // Waits for the fetch to be over (a hit may come just before its task forgets it),
            // then finds it forgotten and the blob cached.
            f.store.get(&d).await.unwrap().unwrap();
            for _ in 0..1000 {
                if f.store.fills.lock().unwrap().is_empty() {
                    break;
                }
                monoio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            assert!(f.cached(&d) && f.store.fills.lock().unwrap().is_empty());
            assert!(matches!(
                f.store.get_streaming(&d).await.unwrap(),
                Some(Served::File(_))
            ));
            assert_eq!(f.reads(), 1);
            // Small blobs and ranges wait for the whole file.
            let (small, _) = f.remote_blob(4, 1000).await;
            assert!(matches!(
                f.store.get_streaming(&small).await.unwrap(),
                Some(Served::File(_))
            ));
        });
    }

    /// A remote blob whose bytes do not match its name fails every reader before its body is
    /// whole: the last byte is never let out, and nothing lands in the tree.
    #[test]
    fn a_corrupt_fetch_is_cut_before_its_last_byte() {
        let f = fixture(1 << 30);
        runtime().block_on(async {
            let len = 2 * 1024 * 1024 + 7;
            let claimed = Digest::sha256_of(b"claimed");
            let path = f.remote.inner.path_of(&claimed);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, vec![9u8; len]).unwrap();
            let readers = futures_join_all((0..3).map(|_| f.store.get_streaming(&claimed))).await;
            for r in readers {
                let (bytes, end) = drain(&growing(r.unwrap())).await;
                assert!(matches!(end, Err(Error::Corrupt(_))), "{end:?}");
                assert!(bytes.len() < len, "the last byte stayed back");
            }
            assert!(!f.cached(&claimed));
            // Removed and forgotten before the readers were told.
            assert!(f.staged().is_empty() && f.store.fills.lock().unwrap().is_empty());
            assert!(matches!(
                f.store.get(&claimed).await,
                Err(Error::Corrupt(_))
            ));
            assert_eq!(f.reads(), 2, "a failed fetch is not kept: tried again");
        });
    }

    /// Pushes on a remote deployment land in the tier and count toward its bound.
    #[test]
    fn committed_pushes_count_toward_the_bound() {
        let f = fixture(2500);
        runtime().block_on(async {
            let (a, _) = f.remote_blob(1, 1000).await;
            f.store.get(&a).await.unwrap().unwrap();
            for seed in [7u8, 8] {
                let content = vec![seed; 1000];
                let d = Digest::sha256_of(&content);
                let staged = f.store.staging_dir().join(format!("push-{seed}"));
                fs::write(&staged, &content).unwrap();
                f.store.commit(staged, &d).await.unwrap();
                assert!(f.cached(&d));
                assert_eq!(f.remote.stat(&d).await.unwrap(), 1000);
            }
            assert!(!f.cached(&a), "the pushes pushed the fetched blob out");
            let figures = f.store.cache_figures().unwrap();
            assert_eq!((figures.bytes, figures.blobs), (2000, 2));
            assert_eq!(figures.misses, 1);
            // A manifest too.
            f.store
                .put_bytes(&Digest::sha256_of(b"{}"), b"{}".to_vec())
                .await
                .unwrap();
            assert_eq!(f.store.cache_figures().unwrap().bytes, 2002);
        });
    }

    /// A restart re-indexes the tree (recency from file times), discards the partial fill and
    /// the evicted file a crash left in staging (not upload sessions), and trims to a lowered
    /// bound, oldest first.
    #[test]
    fn a_restart_reindexes_and_discards_partial_fills() {
        let f = fixture(1 << 20);
        let pool = Pool::new(1, "t").unwrap();
        let digests = runtime().block_on(async {
            let mut digests = Vec::new();
            for seed in 1..=3 {
                let (d, _) = f.remote_blob(seed, 1000).await;
                f.store.get(&d).await.unwrap().unwrap();
                digests.push(d);
            }
            digests
        });
        // Used long ago, in the order b, a, c (oldest first).
        let day = std::time::Duration::from_secs(86_400);
        let now = std::time::SystemTime::now();
        for (d, age) in digests.iter().zip([2, 3, 1]) {
            let t = now - day * age;
            let times = fs::FileTimes::new().set_accessed(t).set_modified(t);
            fs::File::options()
                .write(true)
                .open(f.store.path_of(d))
                .unwrap()
                .set_times(times)
                .unwrap();
        }
        let staging = f.store.staging_dir().to_path_buf();
        fs::write(staging.join("put-0123"), b"half a fill").unwrap();
        fs::write(staging.join("evicted-abcd-7"), b"an old eviction").unwrap();
        fs::create_dir(staging.join("session")).unwrap();
        fs::write(staging.join("session").join("data"), b"an upload").unwrap();
        let remote: Arc<dyn BlobBackend> = f.remote.clone();
        let store =
            BlobStore::with_remote(f.tier_dir.path(), pool.clone(), remote, 1 << 20).unwrap();
        let figures = store.cache_figures().unwrap();
        assert_eq!((figures.bytes, figures.blobs), (3000, 3));
        let mut staged = f.staged();
        staged.sort();
        assert_eq!(staged, ["session"], "leftovers gone, the upload kept");
        // Served as hits, without the remote.
        let reads = f.reads();
        runtime().block_on(async {
            for d in &digests {
                store.get(d).await.unwrap().unwrap();
            }
        });
        assert_eq!(f.reads(), reads);
        assert_eq!(store.cache_figures().unwrap().hits, 3);
        drop(store);
        // A lowered bound keeps the most recently used (c, then a).
        let remote: Arc<dyn BlobBackend> = f.remote.clone();
        let store = BlobStore::with_remote(f.tier_dir.path(), pool, remote, 2000).unwrap();
        let figures = store.cache_figures().unwrap();
        assert_eq!((figures.bytes, figures.evictions), (2000, 1));
        assert!(!f.cached(&digests[1]), "a was the oldest");
        assert!(f.cached(&digests[0]) && f.cached(&digests[2]));
        eventually("the trimmed blob unlinked", || f.staged() == ["session"]);
    }

    /// The cache over a real S3 server (s3s-fs): pushes land in both, an evicted blob comes
    /// back from S3, and a hundred concurrent misses read it from S3 once.
    #[test]
    fn the_cache_over_s3s_fs() {
        use crate::store::s3::S3Backend;
        use crate::testing::s3 as harness;
        let server = harness::S3Server::s3s_fs();
        let s3: Arc<dyn BlobBackend> =
            Arc::new(S3Backend::new(&server.config("registry/")).unwrap());
        let tier_dir = tempfile::tempdir().unwrap();
        let pool = Pool::new(2, "t").unwrap();
        let len = 2 * 1024 * 1024 + 5;
        let store = BlobStore::with_remote(tier_dir.path(), pool, s3.clone(), len + 1).unwrap();
        let blobs: Vec<Vec<u8>> = (1..=2u8)
            .map(|seed| (0..len).map(|i| (i as u8).wrapping_mul(seed) ^ 7).collect())
            .collect();
        let digests: Vec<Digest> = blobs.iter().map(|b| Digest::sha256_of(b)).collect();
        harness::run(async {
            for (content, d) in blobs.iter().zip(&digests) {
                let staged = store.staging_dir().join("push");
                fs::write(&staged, content).unwrap();
                store.commit(staged, d).await.unwrap();
                assert_eq!(s3.stat(d).await.unwrap(), len);
            }
            // The bound holds one: the first push was evicted by the second.
            assert!(!store.path_of(&digests[0]).exists());
            assert!(store.path_of(&digests[1]).exists());
            open_cache::heed_pressure();
            let got = futures_join_all((0..100).map(|_| store.get(&digests[0]))).await;
            for b in &got {
                let b = b.as_ref().unwrap().as_ref().unwrap();
                assert_eq!(b.len(), len);
            }
            assert!(got[0].as_ref().unwrap().as_ref().unwrap().bytes().unwrap() == blobs[0]);
            let figures = store.cache_figures().unwrap();
            assert_eq!(figures.misses, 100);
            assert_eq!(
                figures.remote_bytes, len,
                "one read from S3 for a hundred misses"
            );
            assert_eq!(figures.evictions, 2);
            assert!(!store.path_of(&digests[1]).exists());
            store.get(&digests[0]).await.unwrap().unwrap();
            assert_eq!(store.cache_figures().unwrap().hits, 1);
            // Absent from S3: not found, not an error.
            assert!(store
                .get(&Digest::sha256_of(b"absent"))
                .await
                .unwrap()
                .is_none());
        });
    }

    /// What a miss on a big blob costs over s3s-fs: the time to the first bytes a response may
    /// send (streamed while the fetch writes them) next to the time to the first piece of a
    /// plain S3 read and to the whole fetch. Prints the figures; run by hand: `cargo test
    /// --release --lib time_to_first_byte -- --ignored --nocapture` (RINGYARD_TTFB_MIB sets the
    /// size, 256 by default).
    #[test]
    #[ignore]
    fn time_to_first_byte_of_a_miss_over_s3s_fs() {
        use crate::store::s3::S3Backend;
        use crate::testing::s3 as harness;
        use std::time::Instant;
        let mib: usize = std::env::var("RINGYARD_TTFB_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256);
        let server = harness::S3Server::s3s_fs();
        let s3: Arc<dyn BlobBackend> = Arc::new(S3Backend::new(&server.config("")).unwrap());
        let tier_dir = tempfile::tempdir().unwrap();
        let store = BlobStore::with_remote(
            tier_dir.path(),
            Pool::new(2, "t").unwrap(),
            s3.clone(),
            1 << 40,
        )
        .unwrap();
        let content: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8).collect();
        let d = Digest::sha256_of(&content);
        let src = tier_dir.path().join("src");
        fs::write(&src, &content).unwrap();
        harness::run(async {
            s3.put_file(&src, &d).await.unwrap();
            let t = Instant::now();
            let mut read = s3.read(&d, 0..content.len() as u64).await.unwrap();
            read.next().await.unwrap().unwrap();
            let first_piece = t.elapsed();
            drop(read);
            let t = Instant::now();
            let Some(Served::Growing(g)) = store.get_streaming(&d).await.unwrap() else {
                panic!("a miss on a big blob is streamed");
            };
            g.readable(0).await.unwrap();
            let first_bytes = t.elapsed();
            g.readable(g.len() - 1).await.unwrap();
            let whole = t.elapsed();
            store.get(&d).await.unwrap().unwrap();
            let t = Instant::now();
            store.get(&d).await.unwrap().unwrap();
            let hit = t.elapsed();
            println!(
                "{mib} MiB over s3s-fs: first S3 piece {first_piece:?}, miss: first bytes \
                 {first_bytes:?}, whole {whole:?}; hit {hit:?}"
            );
        });
    }

    /// A backend that counts the reads reaching it, and gives out only as many pieces of a
    /// read as its gate says.
    struct Counting {
        inner: FsBackend,
        reads: AtomicUsize,
        gate: Arc<AtomicUsize>,
    }

    struct Gated<'a> {
        inner: Box<dyn super::super::backend::Chunks + 'a>,
        gate: Arc<AtomicUsize>,
        given: usize,
    }

    impl super::super::backend::Chunks for Gated<'_> {
        fn next(&mut self) -> super::super::backend::Fut<'_, Option<Vec<u8>>> {
            Box::pin(async move {
                while self.gate.load(Ordering::SeqCst) <= self.given {
                    monoio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                self.given += 1;
                self.inner.next().await
            })
        }
    }

    use std::sync::atomic::{AtomicUsize, Ordering};

    impl BlobBackend for Counting {
        fn stat<'a>(&'a self, d: &'a Digest) -> super::super::backend::Fut<'a, u64> {
            self.inner.stat(d)
        }
        fn read<'a>(
            &'a self,
            d: &'a Digest,
            range: std::ops::Range<u64>,
        ) -> super::super::backend::Fut<'a, Box<dyn super::super::backend::Chunks + 'a>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let inner = self.inner.read(d, range).await?;
                let gate = self.gate.clone();
                Ok(Box::new(Gated {
                    inner,
                    gate,
                    given: 0,
                })
                    as Box<dyn super::super::backend::Chunks + 'a>)
            })
        }
        fn put_file<'a>(
            &'a self,
            src: &'a Path,
            d: &'a Digest,
        ) -> super::super::backend::Fut<'a, ()> {
            self.inner.put_file(src, d)
        }
        fn put_stream<'a>(
            &'a self,
            d: &'a Digest,
            size: u64,
            src: &'a mut dyn super::super::backend::Chunks,
        ) -> super::super::backend::Fut<'a, ()> {
            self.inner.put_stream(d, size, src)
        }
        fn delete<'a>(&'a self, d: &'a Digest) -> super::super::backend::Fut<'a, bool> {
            self.inner.delete(d)
        }
        fn list<'a>(
            &'a self,
            after: Option<&'a Digest>,
            limit: usize,
        ) -> super::super::backend::Fut<'a, Vec<super::super::backend::Listed>> {
            self.inner.list(after, limit)
        }
    }

    /// Polls every future to completion on this thread, concurrently.
    async fn futures_join_all<F: std::future::Future>(
        futs: impl Iterator<Item = F>,
    ) -> Vec<F::Output> {
        let handles: Vec<_> = futs.map(|f| Box::pin(f)).collect();
        let mut out: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
        let mut handles: Vec<Option<_>> = handles.into_iter().map(Some).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (slot, h) in out.iter_mut().zip(handles.iter_mut()) {
                if let Some(f) = h {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => {
                            *slot = Some(v);
                            *h = None;
                        }
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        out.into_iter().map(|v| v.unwrap()).collect()
    }
}
