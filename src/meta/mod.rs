//! Registry metadata: repositories, blob links, manifests, tags, upload sessions.
//!
//! Event loops must never block, yet a write may only be acknowledged once it is durable. So the
//! database belongs to one engine thread, fed over a crossbeam channel; each request carries a
//! oneshot that the caller awaits. The engine drains whatever is queued and commits it in one
//! transaction (group commit): under load, one fsync pays for many pushes.
//!
//! Reads never touch the database. Everything is held in an [`Index`] behind an `RwLock`, loaded
//! whole at open and updated by the engine thread right after each commit, before any caller is
//! answered: once a write resolves, every read on every thread sees it. The lock is held only for
//! a map lookup and never across an `.await`.
//!
//! The engine is a trait so that PostgreSQL can replace SQLite for scale-out without touching
//! the callers or the index.

pub mod index;
pub mod sqlite;

pub use index::Index;

use crate::error::{Error, Result};
use crate::oci::digest::Digest;
use futures_channel::oneshot;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

/// Upper bound on one group commit: large enough to absorb a burst, small enough that one
/// transaction's latency stays bounded and a failing batch is cheap to retry op by op.
const MAX_BATCH: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    /// Unix milliseconds. Set by the engine on the first put (the caller's value is ignored), so
    /// that one clock orders everything garbage collection compares.
    pub created: i64,
}

/// What a manifest references; stored so that validation, referrers and the garbage
/// collector's mark phase can follow the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefKind {
    Config,
    Layer,
    Manifest,
    Subject,
}

impl RefKind {
    /// The text stored in `manifest_references.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Config => "config",
            RefKind::Layer => "layer",
            RefKind::Manifest => "manifest",
            RefKind::Subject => "subject",
        }
    }

    pub fn parse(s: &str) -> Option<RefKind> {
        Some(match s {
            "config" => RefKind::Config,
            "layer" => RefKind::Layer,
            "manifest" => RefKind::Manifest,
            "subject" => RefKind::Subject,
            _ => return None,
        })
    }
}

/// An upload session as the metadata sees it: enough for expiry and for any node to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: String,
    pub repository: String,
    /// Unix milliseconds.
    pub started: i64,
    /// Unix milliseconds after which the session may be swept.
    pub expires: i64,
    /// Bytes acknowledged to the client; durable in the data file when the record is written.
    pub offset: u64,
    /// The running hash of those bytes (`Hasher::save`), so a restart resumes it instead of
    /// reading the file back. None when it was lost (a failed request) or not yet known (rows
    /// from schema v1).
    pub hash_state: Option<Vec<u8>>,
}

/// Every change the metadata accepts. One enum, so that the SQL side and the index side are two
/// interpretations of the same value and can be tested against each other.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Grants `repo` access to a blob, recording the blob (first size and time kept).
    LinkBlob {
        repo: String,
        digest: Digest,
        size: u64,
    },
    UnlinkBlob {
        repo: String,
        digest: Digest,
    },
    /// Upserts the manifest, replaces its references, optionally points `tag` at it, and links
    /// the manifest's own digest as a blob of `repo` (GET blobs/<manifest digest> works, as in
    /// distribution).
    PutManifest {
        repo: String,
        record: ManifestRecord,
        refs: Vec<(Digest, RefKind)>,
        tag: Option<String>,
    },
    /// Removes the manifest, its references and every tag on it; blobs stay linked until garbage
    /// collection decides.
    DeleteManifest {
        repo: String,
        digest: Digest,
    },
    DeleteTag {
        repo: String,
        tag: String,
    },
    /// Inserts or replaces the session with this id.
    PutUpload(UploadRecord),
    DeleteUpload {
        id: String,
    },
}

/// `existed`: whether the op's target was there before it ran. For deletes, whether anything
/// was deleted (a 404 vs 202 decision); for `LinkBlob`, `PutManifest` and `PutUpload`, whether
/// the link, manifest or upload was already present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOutcome {
    pub existed: bool,
}

/// A metadata store the engine thread drives. SQLite now; PostgreSQL later.
pub trait Engine: Send + 'static {
    /// Reads everything into a fresh index. Runs once, at open, before serving. Its error is
    /// shown to the operator (never to a client), so its message should name what failed.
    fn load(&mut self) -> Result<Index>;

    /// Applies `ops` in order, all or nothing, durably: when this returns `Ok` the batch must
    /// survive a crash; on `Err` none of it may remain. `now` (unix milliseconds) is the time to
    /// stamp on anything created, the same value [`Index::apply`] is given.
    fn apply_batch(&mut self, ops: &[WriteOp], now: i64) -> Result<()>;

    /// A cheap round trip to the store (readiness probes): `Ok` if it answers queries now.
    fn ping(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Unix time in milliseconds, the unit of every stored timestamp.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Counters of the engine thread, for metrics and to see group commit at work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteStats {
    /// Transactions that committed (a batch, or one op of a batch retried alone).
    pub commits: u64,
    /// Ops that committed.
    pub ops: u64,
    /// Batches whose transaction failed and were retried op by op.
    pub failed_batches: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    ops: AtomicU64,
    failed_batches: AtomicU64,
}

struct Request {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome>>,
}

// Every message but the last is a `Write`, so boxing it to shrink the rare `Stop` would only add
// an allocation per write.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Write(Request),
    /// Answered by the engine thread after the writes queued before it.
    Ping(oneshot::Sender<Result<()>>),
    Stop,
}

/// The handle every worker holds. Cloning is an `Arc` bump.
#[derive(Clone)]
pub struct Meta {
    inner: Arc<Inner>,
}

struct Inner {
    index: Arc<RwLock<Index>>,
    tx: crossbeam_channel::Sender<Msg>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl Inner {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            // The engine may already be gone (it only exits on Stop or disconnect); either way
            // there is nothing left to wait for but the join.
            let _ = self.tx.send(Msg::Stop);
            if handle.join().is_err() {
                crate::log::error(format_args!("metadata engine thread panicked"));
            }
        }
    }
}

impl Drop for Inner {
    /// The last handle going away must not cut off queued writes: they drain and commit first.
    fn drop(&mut self) {
        self.close();
    }
}

/// Reads tolerate poisoning: the index is only written by the engine thread, which reloads it
/// from the database if an update ever panics, so a poisoned lock still guards a usable value.
fn read_lock(index: &RwLock<Index>) -> RwLockReadGuard<'_, Index> {
    index.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_lock(index: &RwLock<Index>) -> RwLockWriteGuard<'_, Index> {
    index.write().unwrap_or_else(PoisonError::into_inner)
}

impl Meta {
    /// Opens (creating) the SQLite database at `path`, loads the index, starts the engine thread.
    pub fn open_sqlite(path: &Path) -> Result<Meta, String> {
        let engine = sqlite::SqliteEngine::open(path)?;
        Meta::with_engine(Box::new(engine))
    }

    /// Loads the index on the calling thread (startup may block), then hands the engine to its
    /// own thread.
    pub fn with_engine(mut engine: Box<dyn Engine>) -> Result<Meta, String> {
        let index = engine
            .load()
            .map_err(|e| format!("loading metadata: {}", e.message))?;
        crate::log::info(format_args!(
            "metadata loaded: {} repositories, {} blobs, {} manifests",
            index.repository_count(),
            index.blob_count(),
            index.manifest_count()
        ));
        let index = Arc::new(RwLock::new(index));
        let counters = Arc::new(Counters::default());
        // Unbounded: a bounded channel would block an event loop when full. The queue depth is
        // exposed instead (`queue_len`) so overload shows up in metrics.
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = {
            let index = Arc::clone(&index);
            let counters = Arc::clone(&counters);
            std::thread::Builder::new()
                .name("ringyard-meta".into())
                .spawn(move || run(engine, rx, &index, &counters))
                .map_err(|e| format!("starting the metadata engine thread: {e}"))?
        };
        Ok(Meta {
            inner: Arc::new(Inner {
                index,
                tx,
                closed: AtomicBool::new(false),
                thread: Mutex::new(Some(thread)),
                counters,
            }),
        })
    }

    /// Stops the engine thread after draining queued writes (called at shutdown); idempotent.
    /// Blocks until the last batch committed, so call it from a thread that may block. Writes
    /// issued afterwards fail.
    pub fn close(&self) {
        self.inner.close();
    }

    fn read<T>(&self, f: impl FnOnce(&Index) -> T) -> T {
        f(&read_lock(&self.inner.index))
    }

    // --- reads: from memory only ---

    pub fn repo_exists(&self, repo: &str) -> bool {
        self.read(|ix| ix.repo_exists(repo))
    }

    /// Size of the blob, only if it is linked to `repo`.
    pub fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Option<u64> {
        self.read(|ix| ix.blob_in_repo(repo, digest))
    }

    /// Size of the blob if any repository ever recorded it (mounts, dedup of uploads).
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        self.read(|ix| ix.blob_size(digest))
    }

    pub fn resolve_tag(&self, repo: &str, tag: &str) -> Option<Digest> {
        self.read(|ix| ix.resolve_tag(repo, tag))
    }

    pub fn manifest(&self, repo: &str, digest: &Digest) -> Option<Arc<ManifestRecord>> {
        self.read(|ix| ix.manifest(repo, digest))
    }

    /// Tags of `repo` in lexical order, strictly after `last`, at most `limit`; bool = more
    /// remain. None if the repo is unknown.
    pub fn tags_after(
        &self,
        repo: &str,
        last: Option<&str>,
        limit: usize,
    ) -> Option<(Vec<String>, bool)> {
        self.read(|ix| ix.tags_after(repo, last, limit))
    }

    /// Repository names in lexical order, strictly after `last`, at most `limit`; bool = more
    /// remain.
    pub fn repositories_after(&self, last: Option<&str>, limit: usize) -> (Vec<String>, bool) {
        self.read(|ix| ix.repositories_after(last, limit))
    }

    /// Manifests in `repo` whose subject is `subject`, ordered by digest.
    pub fn referrers(&self, repo: &str, subject: &Digest) -> Vec<Arc<ManifestRecord>> {
        self.read(|ix| ix.referrers(repo, subject))
    }

    /// Manifests in `repo` that list `child` as a reference of kind [`RefKind::Manifest`] (the
    /// indexes that still need it), ordered by digest.
    pub fn manifest_parents(&self, repo: &str, child: &Digest) -> Vec<Digest> {
        self.read(|ix| ix.manifest_parents(repo, child))
    }

    /// Tags of `repo` pointing at `digest`, in lexical order (scans the repository's tags).
    pub fn tags_of(&self, repo: &str, digest: &Digest) -> Vec<String> {
        self.read(|ix| ix.tags_of(repo, digest))
    }

    /// All upload sessions, ordered by id.
    pub fn uploads(&self) -> Vec<UploadRecord> {
        self.read(|ix| ix.uploads())
    }

    pub fn upload(&self, id: &str) -> Option<UploadRecord> {
        self.read(|ix| ix.upload(id))
    }

    /// Queue depth of the write channel (a metric).
    pub fn queue_len(&self) -> usize {
        self.inner.tx.len()
    }

    /// Blobs recorded (manifests included) and their total size, in O(1).
    pub fn blob_totals(&self) -> (usize, u64) {
        self.read(|ix| (ix.blob_count(), ix.blob_bytes()))
    }

    /// A round trip through the engine thread and its store, behind whatever writes are
    /// queued: resolves once the engine answered. A stuck engine never resolves, so callers
    /// bound the wait; a stopped one fails at once.
    pub async fn ping(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::internal("metadata ping", "engine is closed"));
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Ping(reply))
            .map_err(|_| Error::internal("metadata ping", "engine thread is gone"))?;
        answer
            .await
            .map_err(|_| Error::internal("metadata ping", "engine dropped the request"))?
    }

    pub fn write_stats(&self) -> WriteStats {
        let c = &self.inner.counters;
        WriteStats {
            commits: c.commits.load(Ordering::Relaxed),
            ops: c.ops.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
        }
    }

    // --- writes: resolve after the SQL commit and the index update ---

    /// Queues `op` and resolves once it is committed and visible to reads.
    ///
    /// Dropping the future does not cancel the write: once queued it commits regardless, the
    /// answer just goes nowhere.
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::internal("metadata write", "engine is closed"));
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Write(Request { op, reply }))
            .map_err(|_| Error::internal("metadata write", "engine thread is gone"))?;
        answer
            .await
            .map_err(|_| Error::internal("metadata write", "engine dropped the request"))?
    }

    pub async fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<()> {
        self.write(WriteOp::LinkBlob {
            repo: repo.to_string(),
            digest: digest.clone(),
            size,
        })
        .await
        .map(|_| ())
    }

    /// `true` if the link existed.
    pub async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        self.write(WriteOp::UnlinkBlob {
            repo: repo.to_string(),
            digest: digest.clone(),
        })
        .await
        .map(|o| o.existed)
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        record: ManifestRecord,
        refs: Vec<(Digest, RefKind)>,
        tag: Option<String>,
    ) -> Result<()> {
        self.write(WriteOp::PutManifest {
            repo: repo.to_string(),
            record,
            refs,
            tag,
        })
        .await
        .map(|_| ())
    }

    /// `true` if the manifest existed.
    pub async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool> {
        self.write(WriteOp::DeleteManifest {
            repo: repo.to_string(),
            digest: digest.clone(),
        })
        .await
        .map(|o| o.existed)
    }

    /// `true` if the tag existed.
    pub async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool> {
        self.write(WriteOp::DeleteTag {
            repo: repo.to_string(),
            tag: tag.to_string(),
        })
        .await
        .map(|o| o.existed)
    }

    pub async fn put_upload(&self, record: UploadRecord) -> Result<()> {
        self.write(WriteOp::PutUpload(record)).await.map(|_| ())
    }

    /// `true` if the upload existed.
    pub async fn delete_upload(&self, id: &str) -> Result<bool> {
        self.write(WriteOp::DeleteUpload { id: id.to_string() })
            .await
            .map(|o| o.existed)
    }

    #[cfg(test)]
    fn snapshot(&self) -> Index {
        self.read(Index::clone)
    }
}

/// The engine thread: take one message (blocking), then whatever else is already queued, and
/// commit it as one batch. After `Stop`, keep draining without blocking and exit once empty; a
/// disconnected channel (every handle dropped) ends it the same way.
fn run(
    mut engine: Box<dyn Engine>,
    rx: crossbeam_channel::Receiver<Msg>,
    index: &RwLock<Index>,
    counters: &Counters,
) {
    let mut stopping = false;
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    let mut pings = Vec::new();
    loop {
        let first = if stopping {
            rx.try_recv().ok()
        } else {
            rx.recv().ok()
        };
        let Some(mut msg) = first else { break };
        loop {
            match msg {
                Msg::Write(request) => batch.push(request),
                Msg::Ping(reply) => pings.push(reply),
                Msg::Stop => stopping = true,
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(next) => msg = next,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(engine.as_mut(), index, counters, &mut batch);
        }
        if !pings.is_empty() {
            let answer = guarded("metadata ping", || engine.ping());
            for reply in pings.drain(..) {
                let _ = reply.send(answer.clone());
            }
        }
    }
}

/// Runs engine code so that a panic in it becomes an error for the requests at hand instead of
/// the end of the engine thread (and of every later write).
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let cause = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into());
        Err(Error::internal(what, format_args!("panicked: {cause}")))
    })
}

/// One group commit: SQL first, then the index, then the replies, so that no caller is answered
/// before its write is durable and visible.
///
/// If the batch's transaction fails, each op is retried alone in its own transaction, in queue
/// order: one bad op (say, a size SQL cannot store) then fails only its own caller instead of
/// every write that happened to share its batch. A systemic failure (disk full) just fails each
/// op in turn.
fn commit_batch(
    engine: &mut dyn Engine,
    index: &RwLock<Index>,
    counters: &Counters,
    batch: &mut Vec<Request>,
) {
    let now = now_millis();
    let (ops, replies): (Vec<WriteOp>, Vec<_>) = batch.drain(..).map(|r| (r.op, r.reply)).unzip();

    let results: Vec<Result<()>> =
        match guarded("metadata commit", || engine.apply_batch(&ops, now)) {
            Ok(()) => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                ops.iter().map(|_| Ok(())).collect()
            }
            Err(e) if ops.len() == 1 => vec![Err(e)],
            Err(_) => {
                counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                ops.iter()
                    .map(|op| {
                        let r = guarded("metadata commit", || {
                            engine.apply_batch(std::slice::from_ref(op), now)
                        });
                        if r.is_ok() {
                            counters.commits.fetch_add(1, Ordering::Relaxed);
                        }
                        r
                    })
                    .collect()
            }
        };
    let committed = results.iter().filter(|r| r.is_ok()).count();
    counters.ops.fetch_add(committed as u64, Ordering::Relaxed);

    let outcomes = catch_unwind(AssertUnwindSafe(|| {
        let mut ix = write_lock(index);
        ops.iter()
            .zip(&results)
            .map(|(op, r)| r.as_ref().ok().map(|()| ix.apply(op, now)))
            .collect::<Vec<_>>()
    }));
    let outcomes = match outcomes {
        Ok(outcomes) => outcomes,
        Err(_) => {
            // The index may be half-updated: rebuild it from what the database committed, so
            // reads stay consistent with it. The committed ops' callers get an error since
            // their outcome is unknown; every op is idempotent, so a retry is safe.
            resync(engine, index);
            vec![None; ops.len()]
        }
    };

    for ((reply, result), outcome) in replies.into_iter().zip(results).zip(outcomes) {
        let answer = match (result, outcome) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(outcome)) => Ok(outcome),
            (Ok(()), None) => Err(Error::internal(
                "metadata index",
                "update panicked after commit",
            )),
        };
        // The caller may have given up (its future dropped): nothing to do about it.
        let _ = reply.send(answer);
    }
}

fn resync(engine: &mut dyn Engine, index: &RwLock<Index>) {
    match guarded("metadata reload", || engine.load()) {
        Ok(fresh) => {
            *write_lock(index) = fresh;
            index.clear_poison();
        }
        Err(e) => crate::log::error(format_args!(
            "metadata index reload failed, reads may be stale: {}",
            e.message
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::index::tests::{dg, record};
    use super::*;
    use std::future::Future;
    use std::pin::{pin, Pin};
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Duration;

    /// A minimal executor: the tests must compile in the main crate too, which has no async
    /// runtime among its dev-dependencies that works off an event loop.
    pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }

    /// Polls `f` once so its request is queued, without waiting for the answer. Only used where
    /// the engine is held at its gate (or the answer is not needed), since a ready answer would
    /// be lost here.
    fn start<F: Future + Unpin>(f: &mut F) {
        let mut cx = Context::from_waker(Waker::noop());
        let _ = Pin::new(f).poll(&mut cx);
    }

    pub(crate) struct TempDir(pub std::path::PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "ringyard-meta-{name}-{}-{}-{}",
                std::process::id(),
                now_millis(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// An engine without storage, for driving the thread: it records batch sizes, can hold the
    /// first batch until released, and fails or panics on chosen repositories.
    struct FakeEngine {
        batches: Arc<Mutex<Vec<usize>>>,
        gate: Option<(
            crossbeam_channel::Sender<()>,
            crossbeam_channel::Receiver<()>,
        )>,
        loads: Arc<AtomicUsize>,
    }

    impl Engine for FakeEngine {
        fn load(&mut self) -> Result<Index> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            Ok(Index::default())
        }

        fn apply_batch(&mut self, ops: &[WriteOp], _now: i64) -> Result<()> {
            if let Some((entered, release)) = self.gate.take() {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            self.batches.lock().unwrap().push(ops.len());
            for op in ops {
                if let WriteOp::LinkBlob { repo, .. } = op {
                    match repo.as_str() {
                        "fail" => return Err(Error::internal("fake", "refused")),
                        "panic" => panic!("fake engine panic"),
                        _ => {}
                    }
                }
            }
            Ok(())
        }
    }

    fn fake(gated: bool) -> (Meta, Arc<Mutex<Vec<usize>>>, Option<GateHandles>) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (gate, handles) = if gated {
            let (entered_tx, entered_rx) = crossbeam_channel::bounded(1);
            let (release_tx, release_rx) = crossbeam_channel::bounded(1);
            (
                Some((entered_tx, release_rx)),
                Some(GateHandles {
                    entered: entered_rx,
                    release: release_tx,
                }),
            )
        } else {
            (None, None)
        };
        let engine = FakeEngine {
            batches: Arc::clone(&batches),
            gate,
            loads: Arc::new(AtomicUsize::new(0)),
        };
        (
            Meta::with_engine(Box::new(engine)).unwrap(),
            batches,
            handles,
        )
    }

    struct GateHandles {
        entered: crossbeam_channel::Receiver<()>,
        release: crossbeam_channel::Sender<()>,
    }

    fn link(repo: &str, label: &str) -> WriteOp {
        WriteOp::LinkBlob {
            repo: repo.into(),
            digest: dg(label),
            size: 3,
        }
    }

    #[test]
    fn queued_writes_share_one_commit_capped_at_max_batch() {
        let (meta, batches, gate) = fake(true);
        let gate = gate.unwrap();
        let mut first = Box::pin(meta.write(link("r", "first")));
        start(&mut first);
        gate.entered.recv().unwrap();
        // The engine is busy with the first batch: everything now queues up.
        // The last two write the same link: outcomes within one batch follow queue order.
        let n = MAX_BATCH + 44;
        let label = |i: usize| {
            if i >= n - 2 {
                "dup".to_string()
            } else {
                format!("b{i}")
            }
        };
        let mut pending: Vec<_> = (0..n)
            .map(|i| Box::pin(meta.write(link("r", &label(i)))))
            .collect();
        for f in &mut pending {
            start(f);
        }
        assert_eq!(meta.queue_len(), n);
        gate.release.send(()).unwrap();
        assert!(!block_on(first).unwrap().existed);
        let existed: Vec<bool> = pending
            .into_iter()
            .map(|f| block_on(f).unwrap().existed)
            .collect();
        assert!(existed[..n - 1].iter().all(|e| !e));
        assert!(existed[n - 1]);
        assert_eq!(*batches.lock().unwrap(), vec![1, MAX_BATCH, 44]);
        assert_eq!(
            meta.write_stats(),
            WriteStats {
                commits: 3,
                ops: n as u64 + 1,
                failed_batches: 0
            }
        );
        assert_eq!(meta.queue_len(), 0);
    }

    #[test]
    fn a_failing_batch_is_retried_op_by_op() {
        let (meta, batches, gate) = fake(true);
        let gate = gate.unwrap();
        let mut first = Box::pin(meta.write(link("r", "first")));
        start(&mut first);
        gate.entered.recv().unwrap();
        let mut good1 = Box::pin(meta.write(link("r", "g1")));
        let mut bad = Box::pin(meta.write(link("fail", "x")));
        let mut good2 = Box::pin(meta.write(link("r", "g2")));
        for f in [&mut good1, &mut bad, &mut good2] {
            start(f);
        }
        gate.release.send(()).unwrap();
        block_on(first).unwrap();
        block_on(good1).unwrap();
        let e = block_on(bad).unwrap_err();
        assert_eq!(e.code, crate::error::ErrorCode::Unknown);
        block_on(good2).unwrap();
        assert_eq!(*batches.lock().unwrap(), vec![1, 3, 1, 1, 1]);
        assert_eq!(meta.blob_in_repo("r", &dg("g1")), Some(3));
        assert_eq!(meta.blob_in_repo("r", &dg("g2")), Some(3));
        assert!(
            !meta.repo_exists("fail"),
            "failed op must not reach the index"
        );
        let stats = meta.write_stats();
        assert_eq!((stats.failed_batches, stats.ops), (1, 3));
    }

    #[test]
    fn engine_survives_a_panic_and_a_dropped_caller() {
        let (meta, _, _) = fake(false);
        let e = block_on(meta.write(link("panic", "x"))).unwrap_err();
        assert_eq!(e.code, crate::error::ErrorCode::Unknown);
        // A caller that gives up after queueing: the write still commits.
        let mut gone = Box::pin(meta.write(link("r", "gone")));
        start(&mut gone);
        drop(gone);
        block_on(meta.write(link("r", "after"))).unwrap();
        assert!(meta.blob_in_repo("r", &dg("gone")).is_some());
        assert!(meta.blob_in_repo("r", &dg("after")).is_some());
    }

    /// A ping waits behind the writes queued before it (a stuck engine never answers it) and
    /// fails at once on a stopped engine.
    #[test]
    fn ping_is_a_round_trip_behind_queued_writes() {
        let (meta, _, gate) = fake(true);
        let writer = {
            let meta = meta.clone();
            std::thread::spawn(move || block_on(meta.write(link("r", "first"))))
        };
        let gate = gate.unwrap();
        gate.entered.recv().unwrap();
        let answered = Arc::new(AtomicBool::new(false));
        let pinger = {
            let (meta, answered) = (meta.clone(), answered.clone());
            std::thread::spawn(move || {
                let r = block_on(meta.ping());
                answered.store(true, Ordering::SeqCst);
                r
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!answered.load(Ordering::SeqCst), "answered while stuck");
        gate.release.send(()).unwrap();
        pinger.join().unwrap().unwrap();
        writer.join().unwrap().unwrap();
        block_on(meta.ping()).unwrap();
        meta.close();
        assert!(block_on(meta.ping()).is_err());
    }

    #[test]
    fn sqlite_ping_and_blob_totals() {
        let dir = TempDir::new("ping");
        let meta = Meta::open_sqlite(&dir.0.join("meta.db")).unwrap();
        block_on(meta.ping()).unwrap();
        block_on(meta.link_blob("r", &dg("a"), 10)).unwrap();
        block_on(meta.link_blob("s", &dg("a"), 10)).unwrap();
        block_on(meta.link_blob("r", &dg("b"), 5)).unwrap();
        assert_eq!(meta.blob_totals(), (2, 15));
        meta.close();
        let reopened = Meta::open_sqlite(&dir.0.join("meta.db")).unwrap();
        assert_eq!(reopened.blob_totals(), (2, 15));
        reopened.close();
    }

    #[test]
    fn close_drains_then_refuses() {
        let (meta, batches, gate) = fake(true);
        let gate = gate.unwrap();
        let mut first = Box::pin(meta.write(link("r", "first")));
        start(&mut first);
        gate.entered.recv().unwrap();
        let mut queued = Box::pin(meta.write(link("r", "queued")));
        start(&mut queued);
        let closer = {
            let meta = meta.clone();
            std::thread::spawn(move || meta.close())
        };
        // close() waits for the engine, which waits for the gate.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!closer.is_finished());
        gate.release.send(()).unwrap();
        closer.join().unwrap();
        block_on(first).unwrap();
        block_on(queued).unwrap();
        assert_eq!(batches.lock().unwrap().iter().sum::<usize>(), 2);
        assert!(block_on(meta.write(link("r", "late"))).is_err());
        meta.close(); // idempotent
        assert!(meta.blob_in_repo("r", &dg("queued")).is_some());
    }

    fn manifest_with(label: &str, subject: Option<&str>) -> ManifestRecord {
        let mut r = record(label, subject);
        let mut ann = serde_json::Map::new();
        ann.insert("org.example.k".into(), serde_json::json!("v"));
        ann.insert("n".into(), serde_json::json!(1));
        r.annotations = Some(ann);
        r
    }

    /// Writes touching every op and every read path.
    fn populate(meta: &Meta) {
        block_on(async {
            meta.link_blob("lib/app", &dg("cfg"), 10).await.unwrap();
            meta.link_blob("lib/app", &dg("l1"), 1000).await.unwrap();
            meta.link_blob("lib/app", &dg("l2"), 2000).await.unwrap();
            meta.link_blob("other", &dg("l1"), 1000).await.unwrap();
            meta.link_blob("gone", &dg("tmp"), 5).await.unwrap();
            assert!(meta.unlink_blob("gone", &dg("tmp")).await.unwrap());
            assert!(!meta.unlink_blob("gone", &dg("tmp")).await.unwrap());
            let refs = vec![
                (dg("cfg"), RefKind::Config),
                (dg("l1"), RefKind::Layer),
                (dg("l2"), RefKind::Layer),
            ];
            for (label, tag) in [("m1", "v1"), ("m2", "v2"), ("m3", "v3")] {
                meta.put_manifest(
                    "lib/app",
                    manifest_with(label, None),
                    refs.clone(),
                    Some(tag.into()),
                )
                .await
                .unwrap();
            }
            meta.put_manifest(
                "lib/app",
                record("m1", None),
                refs.clone(),
                Some("latest".into()),
            )
            .await
            .unwrap();
            meta.put_manifest(
                "lib/app",
                record("idx", None),
                vec![(dg("m1"), RefKind::Manifest), (dg("m2"), RefKind::Manifest)],
                Some("multi".into()),
            )
            .await
            .unwrap();
            for label in ["sigA", "sigB", "sigC"] {
                meta.put_manifest(
                    "lib/app",
                    manifest_with(label, Some("m1")),
                    vec![(dg("m1"), RefKind::Subject), (dg("cfg"), RefKind::Config)],
                    None,
                )
                .await
                .unwrap();
            }
            assert!(meta.delete_manifest("lib/app", &dg("m3")).await.unwrap());
            assert!(!meta.delete_manifest("lib/app", &dg("m3")).await.unwrap());
            assert!(meta.delete_tag("lib/app", "v2").await.unwrap());
            assert!(!meta.delete_tag("lib/app", "v2").await.unwrap());
            assert!(meta.delete_manifest("lib/app", &dg("sigB")).await.unwrap());
            for (id, exp) in [("u1", 100), ("u2", 200), ("u3", 300)] {
                meta.put_upload(UploadRecord {
                    id: id.into(),
                    repository: "uploads/only".into(),
                    started: 1,
                    expires: exp,
                    offset: exp as u64 * 3,
                    hash_state: Some(vec![1, 2, exp as u8]),
                })
                .await
                .unwrap();
            }
            assert!(meta.delete_upload("u2").await.unwrap());
            assert!(!meta.delete_upload("u2").await.unwrap());
        });
    }

    /// Every read, on a fixed set of questions, as one comparable value.
    fn observe(meta: &Meta) -> Vec<String> {
        let repos = ["lib/app", "other", "gone", "uploads/only", "nope"];
        let labels = [
            "cfg", "l1", "l2", "tmp", "m1", "m2", "m3", "idx", "sigA", "sigB", "sigC", "x",
        ];
        let mut out = vec![
            format!("{:?}", meta.repositories_after(None, 100)),
            format!("{:?}", meta.repositories_after(Some("lib"), 2)),
            format!("{:?}", meta.uploads()),
            format!("{:?}", meta.upload("u1")),
            format!("{:?}", meta.upload("u2")),
        ];
        for repo in repos {
            out.push(format!("{repo} exists {}", meta.repo_exists(repo)));
            out.push(format!(
                "{repo} tags {:?}",
                meta.tags_after(repo, None, 100)
            ));
            out.push(format!(
                "{repo} tags {:?}",
                meta.tags_after(repo, Some("m"), 1)
            ));
            for tag in ["v1", "v2", "v3", "latest", "multi"] {
                out.push(format!("{repo}:{tag} {:?}", meta.resolve_tag(repo, tag)));
            }
            for l in labels {
                let d = dg(l);
                out.push(format!("{repo}@{l} blob {:?}", meta.blob_in_repo(repo, &d)));
                out.push(format!("{repo}@{l} man {:?}", meta.manifest(repo, &d)));
                out.push(format!("{repo}@{l} refs {:?}", meta.referrers(repo, &d)));
                out.push(format!(
                    "{repo}@{l} par {:?}",
                    meta.manifest_parents(repo, &d)
                ));
                out.push(format!("{repo}@{l} tags {:?}", meta.tags_of(repo, &d)));
            }
        }
        for l in labels {
            out.push(format!("{l} size {:?}", meta.blob_size(&dg(l))));
        }
        out
    }

    #[test]
    fn sqlite_round_trip_gives_the_same_answers() {
        let dir = TempDir::new("roundtrip");
        let path = dir.0.join("meta.db");
        let meta = Meta::open_sqlite(&path).unwrap();
        populate(&meta);
        let before = observe(&meta);
        let snapshot = meta.snapshot();

        // Spot checks of the semantics, so that "same answers" is not "same wrong answers".
        let m1 = meta.manifest("lib/app", &dg("m1")).unwrap();
        assert_eq!(m1.annotations, None, "re-put replaces annotations");
        assert_eq!(meta.resolve_tag("lib/app", "latest"), Some(dg("m1")));
        assert_eq!(meta.resolve_tag("lib/app", "v3"), None);
        let sigs: Vec<_> = meta
            .referrers("lib/app", &dg("m1"))
            .iter()
            .map(|m| m.digest.clone())
            .collect();
        let mut want = vec![dg("sigA"), dg("sigC")];
        want.sort();
        assert_eq!(sigs, want);
        assert!(meta.referrers("lib/app", &dg("m1"))[0]
            .annotations
            .is_some());
        assert_eq!(meta.manifest_parents("lib/app", &dg("m2")), vec![dg("idx")]);
        assert_eq!(
            meta.blob_in_repo("lib/app", &dg("m1")),
            Some(record("m1", None).size)
        );
        assert_eq!(meta.blob_in_repo("other", &dg("l2")), None);
        assert_eq!(meta.blob_size(&dg("tmp")), Some(5));
        assert!(
            !meta.repo_exists("uploads/only"),
            "an upload session alone creates no repository"
        );
        assert_eq!(
            meta.tags_after("lib/app", None, 100).unwrap().0,
            vec!["latest", "multi", "v1"]
        );

        drop(meta);
        let reopened = Meta::open_sqlite(&path).unwrap();
        assert_eq!(observe(&reopened), before);
        assert_eq!(reopened.snapshot(), snapshot);
        // Writes after reopening continue from the stored state.
        block_on(reopened.put_manifest("lib/app", record("m1", None), vec![], None)).unwrap();
        assert_eq!(
            reopened.manifest("lib/app", &dg("m1")).unwrap().created,
            m1.created,
            "a re-put after restart keeps the first created"
        );
        reopened.close();
        let again = Meta::open_sqlite(&path).unwrap();
        assert!(again
            .manifest_parents("lib/app", &dg("m2"))
            .contains(&dg("idx")));
        assert!(again.manifest("lib/app", &dg("m1")).is_some());
        again.close();
    }

    #[test]
    fn sqlite_group_commit_with_concurrent_writers() {
        let dir = TempDir::new("concurrent");
        let path = dir.0.join("meta.db");
        let meta = Meta::open_sqlite(&path).unwrap();
        let threads = 8;
        let per_thread = 40;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let meta = meta.clone();
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        let repo = format!("repo{t}");
                        let label = format!("{t}-{i}");
                        block_on(meta.link_blob(&repo, &dg(&label), i)).unwrap();
                        block_on(meta.put_manifest(
                            &repo,
                            record(&label, None),
                            vec![(dg(&label), RefKind::Layer)],
                            Some(format!("t{i:03}")),
                        ))
                        .unwrap();
                        // Read-your-write from the memory index, immediately.
                        assert_eq!(
                            meta.resolve_tag(&repo, &format!("t{i:03}")),
                            Some(dg(&label))
                        );
                        assert_eq!(meta.blob_in_repo(&repo, &dg(&label)), Some(i));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let total = threads * per_thread * 2;
        let stats = meta.write_stats();
        eprintln!("group commit: {stats:?}");
        assert_eq!(stats.ops, total);
        assert!(stats.commits <= total);
        let snapshot = meta.snapshot();
        assert_eq!(snapshot.manifest_count(), (threads * per_thread) as usize);
        meta.close();
        let reopened = Meta::open_sqlite(&path).unwrap();
        assert_eq!(reopened.snapshot(), snapshot);
        let (tags, more) = reopened.tags_after("repo3", Some("t010"), 5).unwrap();
        assert_eq!(tags, vec!["t011", "t012", "t013", "t014", "t015"]);
        assert!(more);
        let (repos, more) = reopened.repositories_after(None, 100);
        assert_eq!(repos.len(), threads as usize);
        assert!(!more);
    }

    #[test]
    fn resync_replaces_a_poisoned_index_from_the_engine() {
        struct Stored(Index);
        impl Engine for Stored {
            fn load(&mut self) -> Result<Index> {
                Ok(self.0.clone())
            }
            fn apply_batch(&mut self, _: &[WriteOp], _: i64) -> Result<()> {
                Ok(())
            }
        }
        let mut stored = Index::default();
        stored.apply(&link("r", "kept"), 1);
        let index = Arc::new(RwLock::new(Index::default()));
        let poisoner = Arc::clone(&index);
        let _ = std::thread::spawn(move || {
            let mut ix = poisoner.write().unwrap();
            ix.apply(&link("r", "half-applied"), 1);
            panic!("poison the lock");
        })
        .join();
        assert!(index.is_poisoned());
        resync(&mut Stored(stored.clone()), &index);
        assert!(!index.is_poisoned());
        assert_eq!(*read_lock(&index), stored);
    }

    #[test]
    fn open_reports_a_useful_error() {
        let dir = TempDir::new("badpath");
        let err = match Meta::open_sqlite(&dir.0.join("missing/dir/meta.db")) {
            Err(e) => e,
            Ok(_) => panic!("opened a database in a missing directory"),
        };
        assert!(err.contains("meta.db"), "{err}");
    }

    #[test]
    fn ref_kind_text_round_trips() {
        for k in [
            RefKind::Config,
            RefKind::Layer,
            RefKind::Manifest,
            RefKind::Subject,
        ] {
            assert_eq!(RefKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(RefKind::parse("Layer"), None);
    }
}
