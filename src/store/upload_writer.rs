//! The upload pipeline: request bytes to the session's data file, hashed on the way, and at
//! completion into the blob tree. The API handlers keep HTTP (routes, Content-Range, headers,
//! error responses) and hand the body in as a [`ByteSource`].
//!
//! Bytes go to the file through io_uring (O_DIRECT where the filesystem allows) as they
//! arrive, so completing a 10 GB upload costs an fsync and a rename, not a second read. The end
//! of each request on a resumable session makes its offset durable and records it with the
//! hash state, so that after a restart the session also goes on without reading its bytes back.
//!
//! A staged session (the blobs are remote, see `store::uploads`) writes the same way to its
//! spool, and whenever a full part has been written it goes up from the spool to the remote
//! backend, a few parts in flight while the request goes on streaming; what went up is punched
//! out of the spool, so a session holds a few parts of disk whatever its size, and memory
//! holds a piece of each part in flight. The end of the request puts the bytes after the last
//! part up as the tail object and only then advances the row, which names exactly the parts
//! and the tail the backend acknowledged: durable before acknowledged, on any node. A request
//! that fails leaves the row as it was (the session stands where it was last acknowledged)
//! and the spool to be refilled from the tail. Completion puts the tail up as the last part,
//! assembles the upload and has the backend make it the blob.

use super::error::{Error, Result};
use crate::blocking::Pool;
use crate::buf::AlignedBuf;
use crate::meta::{Conflict, Meta, UploadAt, UploadRecord};
use crate::oci::digest::{Digest, Hasher};
use crate::store::appender::{Appender, PendingWrite};
use crate::store::backend::UploadStaging;
use crate::store::blobs::BlobStore;
use crate::store::uploads::{hash_file, Lease, Session, Staged, Uploads};
use monoio::task::JoinHandle;
use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

/// Where upload bytes come from (a request body): the store knows nothing of HTTP, and passes
/// the source's own errors through untouched ([`AppendError::Source`]).
pub trait ByteSource {
    type Error;

    /// Appends up to `max` bytes to `buf` and gives it back with how many were added.
    fn read_into(
        &mut self,
        buf: AlignedBuf,
        max: usize,
    ) -> impl Future<Output = (Result<usize, Self::Error>, AlignedBuf)>;

    /// Every byte has been read.
    fn is_done(&self) -> bool;
}

/// Why an append stopped: the source failed (the client's body), or the store did.
#[derive(Debug)]
pub enum AppendError<E> {
    Source(E),
    Store(Error),
}

impl<E> From<Error> for AppendError<E> {
    fn from(e: Error) -> Self {
        AppendError::Store(e)
    }
}

impl<E> From<crate::meta::Error> for AppendError<E> {
    fn from(e: crate::meta::Error) -> Self {
        AppendError::Store(e.into())
    }
}

/// The stores an upload goes through; cheap to make for each request.
pub struct UploadWriter<'a> {
    pub uploads: &'a Uploads,
    pub blobs: &'a BlobStore,
    pub meta: &'a Meta,
    /// Blocking file work: hashing a whole file when the running hash was lost, the commit.
    pub pool: &'a Pool,
    /// Hashes large buffers off the event loop.
    pub hashing: &'a Pool,
}

/// Buffers at least this large are hashed on the hashing pool rather than on the event loop.
const OFFLOAD_HASH_MIN: usize = 256 * 1024;

/// Parts of a staged request uploaded at once, each on a connection of its own: S3 takes a
/// part on while the next goes up, where one at a time left the link idle during each
/// answer. Each costs a piece of memory (parts are read from the spool a piece at a time)
/// and a part of spool disk until acknowledged.
const PARTS_IN_FLIGHT: usize = 2;

/// A hash of one buffer on the hashing pool; it resolves with the hasher and the buffer.
type Hashing = std::pin::Pin<Box<dyn Future<Output = Result<(Hasher, AlignedBuf)>>>>;

impl UploadWriter<'_> {
    /// Appends everything `src` has to the session, then (for a resumable session) makes it
    /// durable and records the new offset and hash state: once this returns Ok, the offset
    /// the client is told survives a crash and matches the recorded hash.
    ///
    /// A write that fails may have left part of its buffer in the file: the file is cut back
    /// to the bytes counted. A write refused for lack of space undoes the whole request: the
    /// session goes back to the offset and hash state this request found, so the client's 507
    /// means the request had no effect and the upload stands where it was last acknowledged.
    pub async fn append<S: ByteSource>(
        &self,
        lease: &mut Lease,
        src: &mut S,
    ) -> Result<(), AppendError<S::Error>> {
        if src.is_done() {
            return Ok(());
        }
        if let Some(staging) = self.staging_of(lease) {
            return self.append_staged(staging, lease, src).await;
        }
        let mut out = self.open_data(lease).await?;
        let found = (lease.offset, lease.hasher.as_ref().map(Hasher::save));
        let mut result = self.stream(lease, &mut out, src, None).await;
        if result.is_ok() && lease.session.persisted() {
            result = out
                .sync_data()
                .await
                .map_err(|e| Error::io("fdatasync of upload data", e).into());
        }
        let written_to = out.end();
        out.close().await;
        if let Err(e) = &result {
            if matches!(e, AppendError::Store(Error::Full { .. })) {
                lease.offset = found.0;
                lease.hasher = found.1.as_deref().and_then(Hasher::restore);
            }
            if written_to > lease.offset {
                self.cut_back(lease).await;
            }
            if lease.offset != found.0 && lease.session.persisted() {
                // The bytes counted stay (the client learns the offset from Range): the row
                // says so, without a hash state, so that a node finding the session through
                // it takes the file as it is. Best effort: the request fails anyway.
                let _ = self.advance(lease).await;
            }
        }
        result?;
        if lease.session.persisted() {
            self.advance(lease).await?;
        }
        Ok(())
    }

    async fn open_data(&self, lease: &Lease) -> Result<Appender> {
        Appender::open(&lease.session.data_path(), lease.offset)
            .await
            .map_err(|e| match e.kind() {
                // Finished meanwhile (by a request on another node).
                std::io::ErrorKind::NotFound => Error::UnknownUpload(lease.session.id.clone()),
                _ => Error::io("opening upload data", e),
            })
    }

    /// The remote staging of a resumable session on a deployment that has one.
    fn staging_of(&self, lease: &Lease) -> Option<Arc<dyn UploadStaging>> {
        self.uploads
            .staging()
            .filter(|_| lease.session.persisted())
            .cloned()
    }

    /// [`append`](Self::append) for a staged session (see the module doc).
    async fn append_staged<S: ByteSource>(
        &self,
        staging: Arc<dyn UploadStaging>,
        lease: &mut Lease,
        src: &mut S,
    ) -> Result<(), AppendError<S::Error>> {
        if !lease.spool_ready {
            return Err(Error::Busy.into());
        }
        let found = lease.hasher.as_ref().map(Hasher::save);
        let mut pump = Pump {
            staging,
            acked: self.uploads.record(lease),
            staged: lease.staged.clone().unwrap_or_default(),
            inflight: VecDeque::new(),
        };
        let mut out = self.open_data(lease).await?;
        let mut result = self.stream(lease, &mut out, src, Some(&mut pump)).await;
        out.close().await;
        if result.is_ok() {
            result = self.seal(lease, &mut pump).await.map_err(Into::into);
        }
        for (task, _) in pump.inflight.drain(..) {
            let _ = task.await;
        }
        if result.is_err() {
            // Back to what the row says; the spool may have lost acknowledged bytes to holes.
            lease.offset = pump.acked.offset;
            lease.hasher = found.as_deref().and_then(Hasher::restore);
            lease.staged = Staged::parse(pump.acked.remote.as_deref());
            lease.spool_ready = false;
        }
        result
    }

    /// The end of a staged request: the remaining full parts, then the tail, go up; then the
    /// row names them.
    async fn seal(&self, lease: &mut Lease, pump: &mut Pump) -> Result<()> {
        self.pump(pump, lease, true).await?;
        let end = pump.staged.parts_end();
        pump.staged.tail = if lease.offset > end {
            self.unmoved(lease).await?;
            let spool = lease.session.data_path();
            let etag = pump
                .staging
                .put_tail(&lease.session.id, &spool, end..lease.offset)
                .await?;
            Some(etag)
        } else {
            None
        };
        lease.staged = Some(pump.staged.clone());
        self.advance(lease).await
    }

    /// Starts uploading the next part once the spool holds it whole, up to
    /// [`PARTS_IN_FLIGHT`] at a time (the oldest awaited first when that many are: the request
    /// streams on while S3 takes parts on as many connections); with `all`, until no full part
    /// is left and none is in flight. A part acknowledged is punched out of the spool, parts
    /// acknowledged in order.
    async fn pump(&self, p: &mut Pump, lease: &mut Lease, all: bool) -> Result<()> {
        loop {
            let pending: u64 = p.inflight.iter().map(|(_, len)| *len).sum();
            let start = p.staged.parts_end() + pending;
            let number = p.staged.parts.len() + 1 + p.inflight.len();
            let len = self.uploads.part_len(number);
            let ready = lease.offset >= start + len;
            if !(ready || all && !p.inflight.is_empty()) {
                return Ok(());
            }
            if !ready || p.inflight.len() >= PARTS_IN_FLIGHT {
                let (task, len) = p.inflight.pop_front().expect("a part in flight");
                let etag = task.await?;
                let at = p.staged.parts_end();
                p.staged.parts.push((etag, len));
                self.punch(lease, at, len).await;
                continue;
            }
            let number = u16::try_from(number)
                .ok()
                .filter(|n| *n <= 10_000)
                .ok_or_else(|| Error::Io("an upload of more than 10,000 parts".into()))?;
            // Recording a new multipart upload checks the row itself.
            let upload = match &p.staged.upload {
                Some(u) => {
                    self.unmoved(lease).await?;
                    u.clone()
                }
                None => self.begin(p, lease).await?,
            };
            let (staging, id) = (p.staging.clone(), lease.session.id.clone());
            let spool = lease.session.data_path();
            let task = monoio::spawn(async move {
                staging
                    .put_part(&id, &upload, number, &spool, start..start + len)
                    .await
            });
            p.inflight.push_back((task, len));
        }
    }

    /// Starts the session's multipart upload and records its id in the row before any part
    /// goes up (the row as the request found it otherwise), so that an abort always finds it.
    ///
    /// When another request recorded first, the new upload is left alone: it has no parts, and
    /// discarding it would also delete the tail the other request's row names (a bucket's
    /// lifecycle rule for incomplete multipart uploads removes it).
    async fn begin(&self, p: &mut Pump, lease: &mut Lease) -> Result<String> {
        let upload = p.staging.begin(&lease.session.id).await?;
        let mut acked = Staged::parse(p.acked.remote.as_deref()).unwrap_or_default();
        acked.upload = Some(upload.clone());
        p.acked.remote = Some(acked.to_text());
        if let Err(e) = self.record(p.acked.clone(), lease).await {
            if moved(&e).is_none() {
                let _ = p.staging.discard(&lease.session.id, Some(&upload)).await;
            }
            return Err(e);
        }
        p.staged.upload = Some(upload.clone());
        Ok(upload)
    }

    /// Frees the spool's blocks of bytes that went up (best effort: a filesystem without hole
    /// punching keeps them until the session ends).
    async fn punch(&self, lease: &Lease, at: u64, len: u64) {
        let spool = lease.session.data_path();
        let _ = self.pool.run(move || punch_hole(&spool, at, len)).await;
    }

    /// Records the lease's offset and hash state in the session's row. A row gone meanwhile
    /// (the session was completed, cancelled or expired, here or on another node) refuses it:
    /// the session is unknown from then on and this process's writer is dropped. So does a row
    /// that another request advanced since this one found it ([`moved`]): this request is
    /// not acknowledged, and the writer is found again through the row next time.
    async fn advance(&self, lease: &mut Lease) -> Result<()> {
        self.record(self.uploads.record(lease), lease).await
    }

    /// Writes `row` as the session's (see [`advance`](Self::advance)), from where the lease
    /// found it.
    async fn record(&self, row: UploadRecord, lease: &mut Lease) -> Result<()> {
        let to = UploadAt::of(&row);
        match self.meta.advance_upload(row, lease.recorded.clone()).await {
            Ok(()) => {
                lease.recorded = to;
                Ok(())
            }
            Err(e) => Err(self.refused(lease, e)),
        }
    }

    /// Fails unless the session's row still stands where the lease found it: checked before
    /// anything goes up to the objects a session shares between requests (its parts, its
    /// tail), so that a request that lost a race to another does not overwrite what that one
    /// had acknowledged. (Two requests that pass it at the same moment still write the same
    /// objects; the row's advance then takes one of them, and the other's bytes are the same
    /// bytes when it is a client's retry. When they are not, the session is found broken
    /// where the bucket is checked against the row, and discarded: [`Uploads::broken`].)
    async fn unmoved(&self, lease: &Lease) -> Result<()> {
        let row = self.meta.upload(&lease.session.id).await?;
        lease
            .recorded
            .judge(row.as_ref(), &lease.session.repo)
            .map_err(|c| self.refused(lease, crate::meta::Error::Conflict(c)))
    }

    /// The store's error for a refused advance; a session gone or moved on elsewhere drops
    /// this process's writer.
    fn refused(&self, lease: &Lease, e: crate::meta::Error) -> Error {
        match e {
            crate::meta::Error::Conflict(Conflict::UploadGone) => {
                self.uploads.evict(&lease.session);
                Error::UnknownUpload(lease.session.id.clone())
            }
            e @ crate::meta::Error::Conflict(Conflict::UploadMoved { .. }) => {
                self.uploads.evict(&lease.session);
                e.into()
            }
            e => e.into(),
        }
    }

    /// Streams `src` to the end of the data file in three overlapping stages: the event loop
    /// reads buffer N+1 while buffer N is hashed on the hashing pool and buffer N-1 is
    /// written. Hashing a full buffer costs about as much as receiving it, so keeping it off
    /// the event loop lets one upload use a second core (and keeps a 1 MiB hash from stalling
    /// the loop's other connections); small buffers, a chunk's unaligned head or a small blob,
    /// are hashed in place, where the handoff would cost more.
    ///
    /// The session's hasher is taken out for the duration and put back only when every byte it
    /// saw was written: if this ends early (an error, or the request dropped at shutdown), the
    /// completion hashes the file instead, so the digest always covers exactly what is on disk.
    async fn stream<S: ByteSource>(
        &self,
        lease: &mut Lease,
        out: &mut Appender,
        src: &mut S,
        mut parts: Option<&mut Pump>,
    ) -> Result<(), AppendError<S::Error>> {
        let mut hasher = lease.hasher.take();
        let mut hashing: Option<Hashing> = None;
        let mut writing: Option<PendingWrite> = None;
        let result = loop {
            let mut buf = AlignedBuf::take();
            let want = out.next_len();
            let mut read = Ok(());
            while buf.len() < want && !src.is_done() {
                let room = want - buf.len();
                let (r, b) = src.read_into(buf, room).await;
                buf = b;
                if let Err(e) = r {
                    read = Err(AppendError::Source(e));
                    break;
                }
            }
            // The buffer before this one: its hash is done once the hasher is back; then it
            // follows the one before it to the file.
            let hashed = match hashing.take() {
                Some(job) => match job.await {
                    Ok((h, done)) => {
                        hasher = Some(h);
                        Some(done)
                    }
                    Err(e) => {
                        buf.give();
                        break Err(e.into());
                    }
                },
                None => None,
            };
            if let Err(e) = write_after(lease, out, &mut writing, hashed).await {
                buf.give();
                break Err(e.into());
            }
            if let Some(p) = parts.as_deref_mut() {
                if let Err(e) = self.pump(p, lease, false).await {
                    buf.give();
                    break Err(e.into());
                }
            }
            if let Err(e) = read {
                // What was read of this buffer is not written: the hash would not match the file.
                hasher = None;
                buf.give();
                break Err(e);
            }
            if buf.is_empty() {
                buf.give();
                break Ok(());
            }
            match hasher.take() {
                Some(h) if buf.len() >= OFFLOAD_HASH_MIN => {
                    hashing = Some(hash_on_pool(self.hashing, h, buf))
                }
                mut h => {
                    if let Some(h) = h.as_mut() {
                        h.update(buf.as_slice());
                    }
                    hasher = h;
                    if let Err(e) = write_after(lease, out, &mut writing, Some(buf)).await {
                        break Err(e.into());
                    }
                }
            }
        };
        // Every exit above has taken back the buffer being hashed; only a write may be in
        // flight, and it is counted whatever the result.
        debug_assert!(hashing.is_none());
        let result = match (result, writing.take()) {
            (Ok(()), Some(w)) => settle(lease, w).await.map_err(AppendError::Store),
            (r, Some(w)) => {
                let _ = settle(lease, w).await;
                r
            }
            (r, None) => r,
        };
        if result.is_ok() {
            lease.hasher = hasher;
        }
        result
    }

    /// Truncates the session's data file to its offset after a failed append. If even that
    /// fails, the session cannot be trusted and is discarded (the client starts over).
    async fn cut_back(&self, lease: &Lease) {
        let (path, len) = (lease.session.data_path(), lease.offset);
        let cut = self
            .pool
            .run(move || {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(len)
            })
            .await;
        if !matches!(cut, Ok(Ok(()))) {
            crate::log::warn(format_args!(
                "an upload session in {}: its data file could not be cut back to {len} bytes; \
                 discarding it",
                lease.session.repo
            ));
            let _ = self
                .uploads
                .discard(self.pool, self.meta, &lease.session)
                .await;
        }
    }

    /// Verifies the digest against the bytes received, then makes the blob durable and
    /// visible: fsync the data, rename it into the tree, fsync the directory, commit the
    /// metadata. On a mismatch or a failed fsync nothing is stored and the session is removed;
    /// when a later step fails (a full disk) the session keeps its bytes and the completion
    /// can be retried. Returns the size.
    pub async fn complete(&self, lease: &mut Lease, expected: &Digest) -> Result<u64> {
        if let Some(staging) = self.staging_of(lease) {
            return self.complete_staged(staging, lease, expected).await;
        }
        let session: Arc<Session> = lease.session.clone();
        let path = session.data_path();
        let file = monoio::fs::File::open(&path)
            .await
            .map_err(|e| Error::io("opening upload data", e))?;
        let synced = file.sync_all().await;
        let _ = file.close().await;
        if let Err(e) = synced {
            // After a failed fsync the kernel may have dropped the pages it could not write,
            // and a second fsync would not say so: the data cannot be trusted any more.
            let _ = self.uploads.discard(self.pool, self.meta, &session).await;
            return Err(Error::io("fsync of upload data", e));
        }
        let actual = match lease.hasher.take() {
            Some(h) if h.algorithm() == expected.algorithm() => h.finish(),
            _ => {
                let (p, algorithm) = (path.clone(), expected.algorithm());
                self.pool
                    .run(move || hash_file(&p, algorithm))
                    .await?
                    .map_err(|e| Error::io("hashing upload data", e))?
            }
        };
        if &actual != expected {
            self.uploads.discard(self.pool, self.meta, &session).await?;
            return Err(Error::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        let size = lease.offset;
        self.meta.claim_blob(expected).await?;
        self.blobs.commit(path, expected).await?;
        self.meta.link_blob(&session.repo, expected, size).await?;
        self.uploads.discard(self.pool, self.meta, &session).await?;
        Ok(size)
    }
}

impl UploadWriter<'_> {
    /// [`complete`](Self::complete) for a staged session: verified by the running hash (or,
    /// when it was lost or the digest is not sha256, by hashing the assembled object as it is
    /// read back), then made the blob by the backend; the local tier is filled by the first
    /// pull. A refused digest leaves nothing at the blob's key and removes the session; a
    /// failure of the backend leaves the session for a retry (an assembly that went through
    /// is found again).
    async fn complete_staged(
        &self,
        staging: Arc<dyn UploadStaging>,
        lease: &mut Lease,
        expected: &Digest,
    ) -> Result<u64> {
        let staged = lease.staged.clone().unwrap_or_default();
        let (id, size, end) = (lease.session.id.clone(), lease.offset, staged.parts_end());
        let spool = lease.session.data_path();
        // A copy: the lease keeps its state should the backend fail below.
        let known = lease
            .hasher
            .as_ref()
            .filter(|h| h.algorithm() == expected.algorithm())
            .and_then(|h| Hasher::restore(&h.save()))
            .map(Hasher::finish);
        if let Some(actual) = &known {
            self.refuse_unless(lease, expected, actual).await?;
        }
        // Before anything reaches the blob's key (see `lifecycle::gc`).
        self.meta.claim_blob(expected).await?;
        if staged.parts.is_empty() {
            if known.is_none() {
                let (p, algorithm) = (spool.clone(), expected.algorithm());
                let actual = self
                    .pool
                    .run(move || hash_file(&p, algorithm))
                    .await?
                    .map_err(|e| Error::io("hashing upload data", e))?;
                self.refuse_unless(lease, expected, &actual).await?;
            }
            staging.publish_file(&spool, expected).await?;
        } else {
            let upload = staged
                .upload
                .as_deref()
                .ok_or_else(|| Error::Corrupt("a staged upload without its id".into()))?;
            let etags: Vec<String> = staged.parts.iter().map(|(e, _)| e.clone()).collect();
            let last = (size > end).then_some((spool.as_path(), end..size));
            match staging.assemble(&id, upload, &etags, last, size).await {
                Err(e @ Error::Corrupt(_)) => {
                    return Err(self.uploads.broken(self.pool, self.meta, lease, e).await)
                }
                done => done?,
            }
            if known.is_none() {
                let mut h = Hasher::new(expected.algorithm());
                let mut chunks = staging.read_assembled(&id, size).await?;
                while let Some(piece) = chunks.next().await? {
                    h.update(&piece);
                }
                drop(chunks);
                if let Some(st) = lease.staged.as_mut() {
                    st.upload = None;
                }
                let actual = h.finish();
                if actual != *expected {
                    staging.unassemble(&id).await?;
                }
                self.refuse_unless(lease, expected, &actual).await?;
            }
            staging.publish(&id, expected, size).await?;
            // Completed: there is no multipart upload left to abort.
            if let Some(st) = lease.staged.as_mut() {
                st.upload = None;
            }
        }
        self.meta
            .link_blob(&lease.session.repo, expected, size)
            .await?;
        self.uploads
            .discard_leased(self.pool, self.meta, lease)
            .await?;
        Ok(size)
    }

    /// A digest that is not the one expected ends the session (nothing reaches the blob's
    /// key).
    async fn refuse_unless(&self, lease: &Lease, expected: &Digest, actual: &Digest) -> Result<()> {
        if actual == expected {
            return Ok(());
        }
        self.uploads
            .discard_leased(self.pool, self.meta, lease)
            .await?;
        Err(Error::DigestMismatch {
            expected: expected.to_string(),
            actual: actual.to_string(),
        })
    }
}

/// The parts of one staged request (see [`UploadWriter::pump`]).
struct Pump {
    staging: Arc<dyn UploadStaging>,
    /// The row as the request found it (and as it stays if the request fails).
    acked: UploadRecord,
    /// The parts so far, this request's included.
    staged: Staged,
    /// The parts going up, oldest first: their uploads and their lengths.
    inflight: VecDeque<(JoinHandle<Result<String>>, u64)>,
}

/// Where the session stands when `e` says another request advanced it first.
pub fn moved(e: &Error) -> Option<u64> {
    match e {
        Error::Metadata(crate::meta::Error::Conflict(Conflict::UploadMoved { offset })) => {
            Some(*offset)
        }
        _ => None,
    }
}

/// Deallocates bytes `at..at + len` of the file, its length unchanged.
fn punch_hole(path: &Path, at: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    let (at, len) = (
        i64::try_from(at).unwrap_or(i64::MAX),
        i64::try_from(len).unwrap_or(i64::MAX),
    );
    // SAFETY: fallocate on a descriptor this function owns; no memory is passed.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            at,
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn hash_on_pool(pool: &Pool, mut hasher: Hasher, buf: AlignedBuf) -> Hashing {
    let pool = pool.clone();
    Box::pin(async move {
        pool.run(move || {
            hasher.update(buf.as_slice());
            (hasher, buf)
        })
        .await
        .map_err(Error::from)
    })
}

/// Waits for the write in flight (counting it), then starts writing `next` after it: one write
/// at a time keeps them in file order. On an error `next` is given back unwritten.
async fn write_after(
    lease: &mut Lease,
    out: &mut Appender,
    writing: &mut Option<PendingWrite>,
    next: Option<AlignedBuf>,
) -> Result<()> {
    if let Some(w) = writing.take() {
        if let Err(e) = settle(lease, w).await {
            if let Some(buf) = next {
                buf.give();
            }
            return Err(e);
        }
    }
    *writing = next.map(|buf| out.write(buf));
    Ok(())
}

/// Waits for a write and counts its bytes in the session's offset.
async fn settle(lease: &mut Lease, write: PendingWrite) -> Result<()> {
    let (r, buf) = write.await;
    buf.give();
    let n = r.map_err(|e| Error::io("writing upload data", e))?;
    lease.offset += n;
    Ok(())
}

/// Bytes from memory, handed out in whatever pieces the writer asks for (tests' bodies).
#[cfg(test)]
pub(crate) struct Bytes<'a>(pub &'a [u8]);

#[cfg(test)]
impl UploadWriter<'_> {
    /// Appends `rest` and completes with `digest`, as a final PATCH and PUT do (tests).
    pub(crate) async fn finish_with(
        &self,
        lease: &mut Lease,
        rest: &[u8],
        digest: &Digest,
    ) -> Result<u64> {
        self.append(lease, &mut Bytes(rest))
            .await
            .map_err(|e| match e {
                AppendError::Source(e) | AppendError::Store(e) => e,
            })?;
        self.complete(lease, digest).await
    }
}

#[cfg(test)]
impl ByteSource for Bytes<'_> {
    type Error = Error;

    async fn read_into(&mut self, mut buf: AlignedBuf, max: usize) -> (Result<usize>, AlignedBuf) {
        use crate::buf::FillBuf;
        let n = max.min(buf.room()).min(self.0.len());
        buf.extend_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        (Ok(n), buf)
    }

    fn is_done(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::UploadRecord;
    use std::path::Path;
    use std::time::Duration;

    struct Stores {
        _root: tempfile::TempDir,
        meta: Meta,
        blobs: BlobStore,
        pool: Pool,
    }

    impl Stores {
        fn new() -> Stores {
            let root = tempfile::tempdir().unwrap();
            let pool = Pool::new(2, "test-fs").unwrap();
            Stores {
                meta: Meta::open_sqlite(&root.path().join("meta.db")).unwrap(),
                blobs: BlobStore::open(root.path(), pool.clone()).unwrap(),
                pool,
                _root: root,
            }
        }

        /// A session table as a (re)started server builds it: from the metadata rows.
        fn restart(&self) -> Uploads {
            let uploads = Uploads::new(
                self.blobs.staging_dir().to_path_buf(),
                Duration::from_secs(60),
            );
            let records = crate::blocking::block_on(self.meta.uploads()).unwrap();
            assert_eq!(uploads.restore(records), Vec::<String>::new());
            uploads
        }

        fn writer<'a>(&'a self, uploads: &'a Uploads) -> UploadWriter<'a> {
            UploadWriter {
                uploads,
                blobs: &self.blobs,
                meta: &self.meta,
                pool: &self.pool,
                hashing: &self.pool,
            }
        }
    }

    /// The user the tests' sessions belong to.
    const ALICE: Option<&str> = Some("alice");

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 + i / 4099) as u8).collect()
    }

    fn run<F: Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Starts a resumable session and appends `first` to it, as a PATCH does; returns its id.
    async fn start_with(s: &Stores, uploads: &Uploads, first: &[u8]) -> String {
        let session = uploads
            .start(&s.pool, &s.meta, "r", ALICE, true)
            .await
            .unwrap();
        let mut lease = uploads.lease(session.clone()).unwrap();
        s.writer(uploads)
            .append(&mut lease, &mut Bytes(first))
            .await
            .unwrap();
        assert_eq!(lease.offset, first.len() as u64);
        session.id.clone()
    }

    /// Appends `rest` and completes with `digest`, as the final PATCH and PUT do.
    async fn finish(
        s: &Stores,
        uploads: &Uploads,
        id: &str,
        rest: &[u8],
        digest: &Digest,
    ) -> Result<u64> {
        let mut lease = uploads
            .lease_current(&s.pool, &s.meta, "r", ALICE, id)
            .await?;
        s.writer(uploads)
            .finish_with(&mut lease, rest, digest)
            .await
    }

    /// Where the session stands as a status request finds it.
    async fn offset_of(s: &Stores, uploads: &Uploads, id: &str) -> u64 {
        uploads
            .current(&s.pool, &s.meta, "r", ALICE, id)
            .await
            .unwrap()
            .offset()
    }

    /// A session table of another process (another node, or this one after its writer was
    /// evicted): nothing cached, every session found through the engine.
    fn elsewhere(s: &Stores) -> Uploads {
        Uploads::new(s.blobs.staging_dir().to_path_buf(), Duration::from_secs(60))
    }

    /// Whether the engine holds the session's row.
    fn has_row(s: &Stores, id: &str) -> bool {
        crate::blocking::block_on(s.meta.upload(id))
            .unwrap()
            .is_some()
    }

    fn data_path(s: &Stores, id: &str) -> std::path::PathBuf {
        s.blobs.staging_dir().join(id).join("data")
    }

    fn overwrite_head(path: &Path) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(b"not what was sent", 0).unwrap();
    }

    /// After a restart the session goes on with the recorded hash: the file's first bytes are
    /// overwritten behind its back and the completion still yields the digest of the bytes
    /// sent, which it could not if it read the file back.
    #[test]
    fn a_restored_session_resumes_its_hash_without_reading_back() {
        let data = pattern(3 * 1024 * 1024 + 4321);
        let first = 1024 * 1024 + 123;
        let s = Stores::new();
        run(async {
            let id = start_with(&s, &s.restart(), &data[..first]).await;
            let record = crate::blocking::block_on(s.meta.upload(&id))
                .unwrap()
                .unwrap();
            assert_eq!(record.offset, first as u64);
            let uploads = s.restart();
            assert_eq!(offset_of(&s, &uploads, &id).await, first as u64);
            overwrite_head(&data_path(&s, &id));
            let digest = Digest::sha256_of(&data);
            let size = finish(&s, &uploads, &id, &data[first..], &digest)
                .await
                .unwrap();
            assert_eq!(size, data.len() as u64);
            assert!(!has_row(&s, &id), "a completed session has no row");
        });
    }

    /// Bytes past the recorded offset (a PATCH never acknowledged) are cut off at restore.
    #[test]
    fn restore_truncates_unacknowledged_bytes() {
        let data = pattern(2 * 1024 * 1024 + 77);
        let first = 700_000;
        let s = Stores::new();
        run(async {
            let id = start_with(&s, &s.restart(), &data[..first]).await;
            let path = data_path(&s, &id);
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            std::io::Write::write_all(&mut f, &[0xee; 50_000]).unwrap();
            drop(f);
            let uploads = s.restart();
            assert_eq!(offset_of(&s, &uploads, &id).await, first as u64);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), first as u64);
            let digest = Digest::sha256_of(&data);
            finish(&s, &uploads, &id, &data[first..], &digest)
                .await
                .unwrap();
            assert!(std::fs::read(s.blobs.path_of(&digest)).unwrap() == data);
        });
    }

    /// A state that cannot be used (corrupt, or from a v1 row: none) leaves today's way: the
    /// file as it is, hashed at completion.
    #[test]
    fn an_unusable_state_falls_back_to_hashing_the_file() {
        let data = pattern(1024 * 1024 + 5);
        let first = 300_001;
        for state in [Some(vec![1, 1, 0xff, 3]), Some(vec![7; 90]), None] {
            let s = Stores::new();
            run(async {
                let id = start_with(&s, &s.restart(), &data[..first]).await;
                let record = crate::blocking::block_on(s.meta.upload(&id))
                    .unwrap()
                    .unwrap();
                s.meta
                    .put_upload(UploadRecord {
                        offset: 0,
                        hash_state: state.clone(),
                        ..record
                    })
                    .await
                    .unwrap();
                let uploads = s.restart();
                assert_eq!(
                    offset_of(&s, &uploads, &id).await,
                    first as u64,
                    "{state:?}: the file's length, not the recorded offset"
                );
                let digest = Digest::sha256_of(&data);
                finish(&s, &uploads, &id, &data[first..], &digest)
                    .await
                    .unwrap();
                assert!(std::fs::read(s.blobs.path_of(&digest)).unwrap() == data);
            });
        }
    }

    /// A session whose writer is not in this process's table (another node started it) is
    /// continued from the engine's row: the offset and hash state recorded there. Its first
    /// bytes are overwritten behind its back and the completion still yields the digest of the
    /// bytes sent, which it could not if it read them back.
    #[test]
    fn a_session_not_in_the_table_continues_from_its_row() {
        let data = pattern(2 * 1024 * 1024 + 999);
        let first = 1024 * 1024 + 7;
        let s = Stores::new();
        run(async {
            let here = s.restart();
            let id = start_with(&s, &here, &data[..first]).await;
            let there = elsewhere(&s);
            assert_eq!(there.active_sessions(), 0);
            overwrite_head(&data_path(&s, &id));
            assert_eq!(offset_of(&s, &there, &id).await, first as u64);
            assert_eq!(
                there.active_sessions(),
                1,
                "its writer is cached once found"
            );
            assert!(
                there
                    .find(&s.pool, &s.meta, "other", ALICE, &id)
                    .await
                    .is_err(),
                "not visible from another repository"
            );
            // Nor to another identity, cached here or found through the row: the answer an
            // unknown id gets.
            for uploads in [&there, &elsewhere(&s)] {
                for caller in [Some("bob"), None] {
                    assert!(matches!(
                        uploads.find(&s.pool, &s.meta, "r", caller, &id).await,
                        Err(Error::UnknownUpload(_))
                    ));
                }
            }
            let digest = Digest::sha256_of(&data);
            let size = finish(&s, &there, &id, &data[first..], &digest)
                .await
                .unwrap();
            assert_eq!(size, data.len() as u64);
            assert!(std::fs::read(s.blobs.path_of(&digest)).unwrap()[first..] == data[first..]);
            // The node that started it still caches a writer: it is not continued, and the
            // finished session is not brought back.
            assert!(matches!(
                here.lease_current(&s.pool, &s.meta, "r", ALICE, &id).await,
                Err(Error::UnknownUpload(_))
            ));
            assert_eq!(here.active_sessions(), 0, "the stale writer is dropped");
            assert!(!has_row(&s, &id), "a completed session has no row");
        });
    }

    /// A cached writer that another node went on from is stale: the request finds the session
    /// again through its row and continues where the other node stopped. And one that passed
    /// that check just before the session was finished elsewhere cannot record its request:
    /// the row stays gone.
    #[test]
    fn a_stale_writer_is_caught_up_or_refused() {
        let data = pattern(3 * 1024 * 1024 + 11);
        let (a, b) = (700_001, 2 * 1024 * 1024 + 3);
        let s = Stores::new();
        run(async {
            let here = s.restart();
            let id = start_with(&s, &here, &data[..a]).await;
            let there = elsewhere(&s);
            let mut lease = there
                .lease_current(&s.pool, &s.meta, "r", ALICE, &id)
                .await
                .unwrap();
            s.writer(&there)
                .append(&mut lease, &mut Bytes(&data[a..b]))
                .await
                .unwrap();
            drop(lease);
            assert_eq!(
                here.find(&s.pool, &s.meta, "r", ALICE, &id)
                    .await
                    .unwrap()
                    .offset(),
                a as u64
            );
            assert_eq!(offset_of(&s, &here, &id).await, b as u64, "caught up");
            let digest = Digest::sha256_of(&data);
            finish(&s, &here, &id, &data[b..], &digest).await.unwrap();
            assert!(std::fs::read(s.blobs.path_of(&digest)).unwrap() == data);

            let id = start_with(&s, &here, &data[..a]).await;
            let mut stale = here
                .lease_current(&s.pool, &s.meta, "r", ALICE, &id)
                .await
                .unwrap();
            let other = there
                .lease_current(&s.pool, &s.meta, "r", ALICE, &id)
                .await
                .unwrap();
            there
                .discard(&s.pool, &s.meta, &other.session)
                .await
                .unwrap();
            drop(other);
            // As if the stale writer had opened the file just before it was removed.
            std::fs::create_dir_all(data_path(&s, &id).parent().unwrap()).unwrap();
            std::fs::write(data_path(&s, &id), &data[..a]).unwrap();
            let refused = s
                .writer(&here)
                .append(&mut stale, &mut Bytes(&data[a..b]))
                .await;
            assert!(matches!(
                refused,
                Err(AppendError::Store(Error::UnknownUpload(_)))
            ));
            assert!(!has_row(&s, &id));
            assert_eq!(here.active_sessions(), 0);
        });
    }

    /// Expiry goes by the rows: a writer idle here whose row another node advanced within the
    /// expiry is only dropped from the cache; a row past its expiry that no node here caches
    /// is swept, files and row.
    #[test]
    fn expiry_goes_by_the_rows() {
        let s = Stores::new();
        run(async {
            let here = s.restart();
            let id = start_with(&s, &here, b"some bytes").await;
            let row = crate::blocking::block_on(s.meta.upload(&id))
                .unwrap()
                .unwrap();
            let later = row.expires + 3_600_000;
            let advanced = UploadRecord {
                expires: later + 1,
                ..row.clone()
            };
            assert!(here.take_expired(&[advanced], later).is_empty());
            assert_eq!(here.active_sessions(), 0, "evicted, not discarded");
            assert!(data_path(&s, &id).exists());

            let rows = crate::blocking::block_on(s.meta.uploads()).unwrap();
            let there = elsewhere(&s);
            assert!(there.take_expired(&rows, row.expires - 1).is_empty());
            let swept = there.take_expired(&rows, row.expires);
            assert_eq!(swept.len(), 1);
            assert_eq!(swept[0].id, id);
            there.discard_blocking(&s.meta, &swept[0]).unwrap();
            assert!(!data_path(&s, &id).exists());
            assert!(!has_row(&s, &id));
        });
    }
}
