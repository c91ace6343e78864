//! `BlobStore`: a local hot tier over a [`BlobBackend`]. Every blob is served from the tier
//! (this machine's tree, [`FsBackend`]): by `sendfile` from the page cache, or from a mapping
//! when small. With the filesystem backend the tier *is* the backend. With a remote backend
//! (S3, an upstream registry), a miss is fetched once into staging, verified, committed to
//! the tier and then served; however many requests miss on the same blob at once, one fetch
//! runs and the others wait for it. Evicting from the tier is a component of its own (the
//! scale-out issue's cache), not this type's job.
//!
//! Open blobs are cached per worker ([`super::open_cache`]), so a hot blob costs no `open` per
//! request.

use super::backend::{BlobBackend, Whole};
use super::error::{Error, Result};
use super::fs::FsBackend;
use super::open_cache;
use crate::blocking::Pool;
use crate::oci::digest::Digest;
use futures_channel::oneshot;
use memmap2::Mmap;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};

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

/// Fetches in progress from the remote backend, by digest: whoever finds one running waits
/// for its answer instead of starting another.
type Fills = Mutex<HashMap<Digest, Vec<oneshot::Sender<Result<(), String>>>>>;

#[derive(Clone)]
pub struct BlobStore {
    tier: Arc<FsBackend>,
    /// None: the tier is the backend.
    remote: Option<Arc<dyn BlobBackend>>,
    fills: Arc<Fills>,
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
            tier: Arc::new(FsBackend::at(root, pool)),
            remote: None,
            fills: Arc::default(),
        }
    }

    /// Creates the top directories, then [`at`](Self::at).
    pub fn open(root: &Path, pool: Pool) -> io::Result<BlobStore> {
        for dir in Self::top_dirs(root) {
            fs::create_dir_all(dir)?;
        }
        Ok(Self::at(root, pool))
    }

    /// The tree under `root` as a hot tier over `remote`, which holds every blob durably.
    pub fn with_remote(
        root: &Path,
        pool: Pool,
        remote: Arc<dyn BlobBackend>,
    ) -> io::Result<BlobStore> {
        Ok(BlobStore {
            remote: Some(remote),
            ..BlobStore::open(root, pool)?
        })
    }

    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        self.tier.path_of(digest)
    }

    /// Where resumable upload sessions keep their bytes: the remote backend's staging, when it
    /// has one (see `store::uploads`).
    pub fn upload_staging(&self) -> Option<Arc<dyn super::backend::UploadStaging>> {
        self.remote.clone()?.upload_staging()
    }

    /// Where upload sessions keep their data (`<root>/uploads`).
    pub fn staging_dir(&self) -> &Path {
        self.tier.staging_dir()
    }

    /// The blob, open for serving from the tier; `Ok(None)` when no backend holds it.
    pub async fn get(&self, digest: &Digest) -> Result<Option<Rc<BlobFile>>> {
        if let Some(b) = open_local(&self.tier, digest)? {
            return Ok(Some(b));
        }
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        match remote.stat(digest).await {
            Ok(_) => {}
            Err(Error::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        }
        self.fill(remote.as_ref(), digest).await?;
        open_local(&self.tier, digest)
    }

    /// Makes a fully written and fsynced staged file the blob `digest`: moved into the tier,
    /// and stored in the remote backend (when there is one) before this resolves, since the
    /// remote is what must survive.
    pub async fn commit(&self, staged: PathBuf, digest: &Digest) -> Result<()> {
        self.tier.adopt(staged, digest).await?;
        if let Some(remote) = &self.remote {
            remote.put_file(&self.tier.path_of(digest), digest).await?;
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
            remote.put_file(&self.path_of(digest), digest).await?;
        }
        Ok(())
    }

    /// One fetch per digest at a time: the first caller fetches, later ones wait for it. A
    /// fetch abandoned midway (its request went away) answers its waiters with an error
    /// rather than leaving them waiting.
    async fn fill(&self, remote: &dyn BlobBackend, digest: &Digest) -> Result<()> {
        let waiting = {
            let mut fills = self.fills.lock().unwrap_or_else(PoisonError::into_inner);
            match fills.get_mut(digest) {
                Some(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Some(rx)
                }
                None => {
                    fills.insert(digest.clone(), Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = waiting {
            return match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Error::Io(e)),
                Err(_) => Err(Error::Io(
                    "the fetch this request waited for stopped".into(),
                )),
            };
        }
        struct Done<'a> {
            fills: &'a Fills,
            digest: &'a Digest,
            answer: Result<(), String>,
        }
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let waiters = self
                    .fills
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(self.digest)
                    .unwrap_or_default();
                for w in waiters {
                    let _ = w.send(self.answer.clone());
                }
            }
        }
        let mut done = Done {
            fills: &self.fills,
            digest,
            answer: Err("the fetch was abandoned".into()),
        };
        let result = self.fetch(remote, digest).await;
        done.answer = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
        result
    }

    /// Copies the blob from the remote into the tier, checking its size and digest before it
    /// becomes visible there.
    async fn fetch(&self, remote: &dyn BlobBackend, digest: &Digest) -> Result<()> {
        let size = remote.stat(digest).await?;
        let mut chunks = remote.read(digest, 0..size).await?;
        match self.tier.put_stream(digest, size, &mut *chunks).await {
            Err(Error::DigestMismatch { actual, .. }) => Err(Error::Corrupt(format!(
                "the backend's {digest} reads back as {actual}"
            ))),
            Err(Error::SizeMismatch { actual, .. }) => Err(Error::Corrupt(format!(
                "the backend's {digest} reads back as {actual} of {size} bytes"
            ))),
            r => r,
        }
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
        let tier_dir = tempfile::tempdir().unwrap();
        let remote_dir = tempfile::tempdir().unwrap();
        let pool = Pool::new(2, "t").unwrap();
        let remote = Arc::new(Counting {
            inner: FsBackend::open(remote_dir.path(), pool.clone()).unwrap(),
            reads: Default::default(),
        });
        let store = BlobStore::with_remote(tier_dir.path(), pool, remote.clone()).unwrap();
        let content: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
        let d = Digest::sha256_of(&content);
        let src = remote_dir.path().join("src");
        fs::write(&src, &content).unwrap();
        runtime().block_on(async {
            remote.put_file(&src, &d).await.unwrap();
            assert!(!store.path_of(&d).exists());
            let gets = (0..8).map(|_| store.get(&d));
            let got = futures_join_all(gets).await;
            for b in got {
                let b = b.unwrap().unwrap();
                assert_eq!(b.len(), content.len() as u64);
            }
            assert!(fs::read(store.path_of(&d)).unwrap() == content);
            assert_eq!(
                remote.reads.load(Ordering::SeqCst),
                1,
                "one fetch for eight misses"
            );
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

    /// A backend that counts the reads reaching it.
    struct Counting {
        inner: FsBackend,
        reads: std::sync::atomic::AtomicUsize,
    }

    use std::sync::atomic::Ordering;

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
            self.inner.read(d, range)
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
        ) -> super::super::backend::Fut<'a, Vec<(Digest, u64)>> {
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
