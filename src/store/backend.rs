//! Where committed blobs live: the seam under [`super::blobs::BlobStore`]. About the size of
//! distribution's storage driver: stat, read a range, put a committed blob from a staged file
//! or a stream, delete, and an enumeration for orphan sweeps. This machine's sharded tree ([`super::fs::FsBackend`]) is
//! the first implementation; S3 and an upstream registry (a pull-through cache) come next.
//! Registry logic (which repository may serve a blob, manifests, tags) stays above it, in
//! `meta` and `api`: a backend knows digests and bytes only.
//!
//! The methods are async and return boxed futures so that the trait stays object-safe (the
//! server picks a backend at start) and a backend may wait on anything (a pool thread, a
//! socket to S3). They run on the caller's event loop and need not be `Send`.

use super::error::Result;
use crate::oci::digest::Digest;
use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::pin::Pin;

pub type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + 'a>>;

/// A blob as [`BlobBackend::list`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub digest: Digest,
    pub size: u64,
    /// Unix milliseconds when its bytes were last written (placed, for a pointer); `i64::MAX`
    /// when the backend cannot say, so that an orphan sweep never takes it for an old one.
    pub modified: i64,
}

pub trait BlobBackend: Send + Sync {
    /// The blob's size; [`super::Error::NotFound`] when the backend does not hold it.
    fn stat<'a>(&'a self, digest: &'a Digest) -> Fut<'a, u64>;

    /// Bytes `range` of the blob, delivered piece by piece (a piece is at most a few MiB, so a
    /// large read holds little memory).
    fn read<'a>(&'a self, digest: &'a Digest, range: Range<u64>) -> Fut<'a, Box<dyn Chunks + 'a>>;

    /// The whole blob: its size and its bytes, in as few round trips as the backend can (a
    /// cache fill needs both; asked apart, S3 would look the blob up twice).
    fn open<'a>(&'a self, digest: &'a Digest) -> Fut<'a, (u64, Box<dyn Chunks + 'a>)> {
        Box::pin(async move {
            let size = self.stat(digest).await?;
            Ok((size, self.read(digest, 0..size).await?))
        })
    }

    /// Stores the content of `src` (complete, fsynced, already verified against `digest`)
    /// under `digest`, durably before it resolves. `src` is left in place. Storing a digest
    /// the backend already holds succeeds without rewriting it (content is immutable).
    fn put_file<'a>(&'a self, src: &'a Path, digest: &'a Digest) -> Fut<'a, ()>;

    /// Stores the `size` bytes `src` delivers under `digest`, durably before it resolves, and
    /// verified before the blob becomes visible: a source that ends short or runs long fails
    /// with [`Error::SizeMismatch`](super::Error::SizeMismatch), one whose bytes digest to
    /// something else with [`Error::DigestMismatch`](super::Error::DigestMismatch), and either,
    /// like the source's own error, leaves nothing behind. Storing a digest the backend already
    /// holds succeeds without reading `src` to its end. A [`Chunks`] is the source, so that one
    /// backend's read can be another's put.
    fn put_stream<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        src: &'a mut dyn Chunks,
    ) -> Fut<'a, ()>;

    /// Removes the blob; `true` if it was there.
    fn delete<'a>(&'a self, digest: &'a Digest) -> Fut<'a, bool>;

    /// Blobs in digest order strictly after `after`, at most `limit`, with their sizes and
    /// times: garbage collection's orphan sweep pages through the whole backend with this.
    fn list<'a>(&'a self, after: Option<&'a Digest>, limit: usize) -> Fut<'a, Vec<Listed>>;

    /// What the backend keeps beside blobs that nothing needs any more, written before
    /// `cutoff` (unix ms) by no session in `live` (upload ids): deleted when `delete`; how
    /// many and their bytes. The default has none (the filesystem's upload sessions are
    /// swept by their own expiry).
    fn strays<'a>(
        &'a self,
        live: &'a std::collections::HashSet<String>,
        cutoff: i64,
        delete: bool,
    ) -> Fut<'a, (u64, u64)> {
        let _ = (live, cutoff, delete);
        Box::pin(async { Ok((0, 0)) })
    }

    /// Where upload sessions keep their bytes when this backend is remote and shared by
    /// several nodes (S3); None (the default): sessions stay on the local disk, as with the
    /// filesystem backend.
    fn upload_staging(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn UploadStaging>> {
        None
    }

    /// A URL where a client may GET the blob itself for `valid` (a presigned S3 URL), so that
    /// its bytes need not pass through this node; None (the default) when the backend has no
    /// such thing or does not hold the blob.
    fn presigned_get<'a>(
        &'a self,
        _digest: &'a Digest,
        _valid: std::time::Duration,
    ) -> Fut<'a, Option<String>> {
        Box::pin(async { Ok(None) })
    }
}

/// Upload sessions whose bytes live in a remote backend, so that any node continues any
/// session (`store::uploads` keeps the state that names these objects in the session's
/// metadata row). A session `id` has a multipart upload of its own (parts numbered from 1, in
/// order, each but the last at least 5 MiB), and a small object holding the bytes after the
/// last part (its tail), rewritten at the end of every request. Sources are ranges of a local
/// file read piece by piece, so memory stays bounded whatever the size.
pub trait UploadStaging: Send + Sync {
    /// Starts the session's multipart upload; its upload id.
    fn begin<'a>(&'a self, id: &'a str) -> Fut<'a, String>;

    /// Uploads bytes `range` of `src` as part `number`; the part's ETag.
    fn put_part<'a>(
        &'a self,
        id: &'a str,
        upload: &'a str,
        number: u16,
        src: &'a Path,
        range: Range<u64>,
    ) -> Fut<'a, String>;

    /// Stores bytes `range` of `src` as the session's tail, replacing the one before; its ETag.
    fn put_tail<'a>(&'a self, id: &'a str, src: &'a Path, range: Range<u64>) -> Fut<'a, String>;

    /// Writes the session's tail into `dst` from `at` on, once it is the one with `etag` and
    /// `len` bytes ([`Error::Corrupt`](super::Error::Corrupt) otherwise: another node replaced
    /// it).
    fn get_tail<'a>(
        &'a self,
        id: &'a str,
        etag: &'a str,
        len: u64,
        dst: &'a Path,
        at: u64,
    ) -> Fut<'a, ()>;

    /// Completes the multipart upload from `parts` (ETags in part order) and, when given,
    /// `last` (a range of a local file uploaded as the last part first) into the session's
    /// object of `size` bytes. A completion retried after one that went through finds the
    /// object and succeeds.
    fn assemble<'a>(
        &'a self,
        id: &'a str,
        upload: &'a str,
        parts: &'a [String],
        last: Option<(&'a Path, Range<u64>)>,
        size: u64,
    ) -> Fut<'a, ()>;

    /// The assembled object's bytes, piece by piece (to hash them when the running hash was
    /// lost).
    fn read_assembled<'a>(&'a self, id: &'a str, size: u64) -> Fut<'a, Box<dyn Chunks + 'a>>;

    /// Makes the assembled object the blob `digest` (unless the backend holds it already, when
    /// the assembled object goes). Safe to repeat. The session's [`discard`](Self::discard)
    /// follows every completion (once, not twice).
    fn publish<'a>(&'a self, id: &'a str, digest: &'a Digest, size: u64) -> Fut<'a, ()>;

    /// Stores a whole local file (complete, verified against `digest`) as the blob: a session
    /// that never filled a part.
    fn publish_file<'a>(&'a self, src: &'a Path, digest: &'a Digest) -> Fut<'a, ()>;

    /// Deletes the assembled object of a session whose digest was refused: it never became
    /// a blob.
    fn unassemble<'a>(&'a self, id: &'a str) -> Fut<'a, ()>;

    /// Removes what the session holds: aborts its multipart upload (when it has one) and
    /// deletes its tail. What is already gone is no error. An assembled object stays: once
    /// published it is a blob's bytes, and a session discarded after a crash cannot tell.
    fn discard<'a>(&'a self, id: &'a str, upload: Option<&'a str>) -> Fut<'a, ()>;

    /// [`discard`](Self::discard) for a thread that may block and runs no event loop (a
    /// background job's).
    fn discard_blocking(&self, id: &str, upload: Option<&str>) -> Result<()>;
}

/// The pieces of one read, in order; also the source of a [`BlobBackend::put_stream`].
pub trait Chunks {
    /// The next piece, or `None` after the last.
    fn next(&mut self) -> Fut<'_, Option<Vec<u8>>>;
}

/// Bytes in memory as one piece (none when empty).
pub struct Whole(pub Option<Vec<u8>>);

impl Whole {
    pub fn new(bytes: Vec<u8>) -> Whole {
        Whole(Some(bytes).filter(|b| !b.is_empty()))
    }
}

impl Chunks for Whole {
    fn next(&mut self) -> Fut<'_, Option<Vec<u8>>> {
        let piece = self.0.take();
        Box::pin(async move { Ok(piece) })
    }
}

/// Every backend answers these the same way: the suite each implementation's tests run
/// (as distribution's storage-driver suite runs on every driver). `staging` is a directory on
/// the machine where the test can write source files.
#[cfg(test)]
pub(crate) async fn suite(backend: &dyn BlobBackend, staging: &Path) {
    use super::error::Error;

    async fn read_all(b: &dyn BlobBackend, d: &Digest, range: Range<u64>) -> Vec<u8> {
        let mut chunks = b.read(d, range).await.expect("read");
        let mut out = Vec::new();
        while let Some(piece) = chunks.next().await.expect("next piece") {
            assert!(!piece.is_empty(), "empty pieces are not sent");
            out.extend_from_slice(&piece);
        }
        out
    }

    let contents: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"small".to_vec(),
        (0..5 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect(),
    ];
    let mut digests = Vec::new();
    for (i, content) in contents.iter().enumerate() {
        let d = Digest::sha256_of(content);
        assert!(matches!(backend.stat(&d).await, Err(Error::NotFound)));
        let src = staging.join(format!("suite-src-{i}"));
        std::fs::write(&src, content).unwrap();
        backend.put_file(&src, &d).await.expect("put");
        assert!(src.exists(), "the source is left in place");
        // Again: a digest names one content, so this is a no-op that succeeds.
        backend.put_file(&src, &d).await.expect("put again");
        std::fs::remove_file(&src).unwrap();
        assert_eq!(backend.stat(&d).await.unwrap(), content.len() as u64);
        assert!(read_all(backend, &d, 0..content.len() as u64).await == *content);
        let (size, mut whole) = backend.open(&d).await.expect("open");
        let mut got = Vec::new();
        while let Some(piece) = whole.next().await.expect("next piece") {
            got.extend_from_slice(&piece);
        }
        assert_eq!(size, content.len() as u64);
        assert!(got == *content, "open gives the whole blob");
        drop(whole);
        digests.push(d);
    }
    let big = &contents[2];
    let d = &digests[2];
    let mid = 1024 * 1024 + 3..3 * 1024 * 1024 + 11;
    let got = read_all(backend, d, mid.clone()).await;
    assert!(got == big[mid.start as usize..mid.end as usize]);
    assert!(read_all(backend, d, 10..10).await.is_empty());
    assert!(backend
        .read(&Digest::sha256_of(b"absent"), 0..1)
        .await
        .is_err());
    assert!(matches!(
        backend.open(&Digest::sha256_of(b"absent")).await,
        Err(Error::NotFound)
    ));

    // From a stream: pieces of awkward sizes, then the ways a stream can be wrong.
    struct Pieces(Vec<Vec<u8>>);
    impl Chunks for Pieces {
        fn next(&mut self) -> Fut<'_, Option<Vec<u8>>> {
            let piece = (!self.0.is_empty()).then(|| self.0.remove(0));
            Box::pin(async move { Ok(piece) })
        }
    }
    let pieces =
        |bytes: &[u8]| Pieces(bytes.chunks(1024 * 1024 + 17).map(<[u8]>::to_vec).collect());
    let streamed: Vec<u8> = (0..3 * 1024 * 1024 + 5).map(|i| (i % 241) as u8).collect();
    let sd = Digest::sha256_of(&streamed);
    let len = streamed.len() as u64;
    let staged_names = || std::fs::read_dir(staging).unwrap().count();
    let before = staged_names();
    let short = backend
        .put_stream(&sd, len, &mut pieces(&streamed[..streamed.len() - 1]))
        .await;
    assert!(
        matches!(short, Err(Error::SizeMismatch { expected, actual }) if expected == len && actual == len - 1),
        "{short:?}"
    );
    let long = backend
        .put_stream(&sd, len - 1, &mut pieces(&streamed))
        .await;
    assert!(matches!(long, Err(Error::SizeMismatch { .. })), "{long:?}");
    let mut wrong = streamed.clone();
    wrong[12345] ^= 1;
    let bad = backend.put_stream(&sd, len, &mut pieces(&wrong)).await;
    assert!(matches!(bad, Err(Error::DigestMismatch { .. })), "{bad:?}");
    assert!(
        matches!(backend.stat(&sd).await, Err(Error::NotFound)),
        "a refused stream leaves no blob"
    );
    assert_eq!(staged_names(), before, "nor anything staged");
    backend
        .put_stream(&sd, len, &mut pieces(&streamed))
        .await
        .expect("put a stream");
    assert_eq!(backend.stat(&sd).await.unwrap(), len);
    assert!(read_all(backend, &sd, 0..len).await == streamed);
    // Already present: content is immutable, so even a wrong stream changes nothing.
    backend
        .put_stream(&sd, len, &mut pieces(&wrong))
        .await
        .expect("put again");
    assert!(read_all(backend, &sd, 0..len).await == streamed);
    // Empty content, and one backend's read as another put's source.
    let empty = Digest::sha256_of(b"");
    backend
        .put_stream(&empty, 0, &mut Whole::new(Vec::new()))
        .await
        .expect("put empty");
    let mut source = backend.read(&sd, 0..len).await.unwrap();
    backend.put_stream(&sd, len, &mut *source).await.unwrap();
    assert!(backend.delete(&sd).await.unwrap());

    let mut sorted = digests.clone();
    sorted.sort();
    let listed: Vec<Digest> = backend
        .list(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.digest)
        .collect();
    assert_eq!(listed, sorted);
    let page = backend.list(Some(&sorted[0]), 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].digest, sorted[1]);
    let now = crate::meta::now_millis();
    assert!(
        page[0].modified > now - 600_000 && page[0].modified <= now + 600_000,
        "a blob written just now is listed with its time: {} vs {now}",
        page[0].modified
    );
    let sizes: Vec<u64> = backend
        .list(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.size)
        .collect();
    let total: u64 = contents.iter().map(|c| c.len() as u64).sum();
    assert_eq!(sizes.iter().sum::<u64>(), total);
    assert!(backend.list(Some(&sorted[2]), 5).await.unwrap().is_empty());

    assert!(backend.delete(&digests[1]).await.unwrap());
    assert!(!backend.delete(&digests[1]).await.unwrap());
    assert!(matches!(
        backend.stat(&digests[1]).await,
        Err(Error::NotFound)
    ));
    assert_eq!(backend.list(None, 100).await.unwrap().len(), 2);
}
