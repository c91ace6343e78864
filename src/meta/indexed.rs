//! An engine whose reads are answered from an in-memory [`Index`] and whose writes go through
//! one writer thread to a [`Database`] (SQLite).
//!
//! Event loops must never block, yet a write may only be acknowledged once it is durable. So
//! the database belongs to one thread, fed over a crossbeam channel; each write carries a
//! oneshot that the caller awaits. The thread drains whatever is queued and commits it in one
//! transaction (group commit): under load, one fsync pays for many pushes. Each op runs in a
//! savepoint of that transaction, so one op refused by its checks ([`Conflict`]) leaves the
//! others of its batch to commit.
//!
//! After the commit the thread applies the committed ops to the index, then answers the
//! callers: once a write resolves, every read on every thread sees it. Being the only writer
//! keeps the index exact. The read lock is held only for a map lookup, never across `.await`.

use super::graph::{Graph, RefRow};
use super::{
    Answer, BlobInfo, Conflict, Engine, EngineStats, Error, Index, ManifestRecord, PushEvent,
    Result, RobotToken, TagInfo, UploadRecord, WriteOp, WriteOutcome,
};
use crate::oci::digest::Digest;
use futures_channel::oneshot;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

/// Upper bound on one group commit: large enough to absorb a burst, small enough that one
/// transaction's latency stays bounded and a failing batch is cheap to retry op by op.
pub const MAX_BATCH: usize = 256;

/// What one op of a committed batch came to.
pub type OpResult = std::result::Result<WriteOutcome, Conflict>;

/// A durable store the writer thread drives (SQLite; a test double in the tests).
pub trait Database: Send + 'static {
    /// Reads everything into a fresh index. Runs once, at open, before serving. Its error is
    /// shown to the operator (never to a client), so its message should name what failed.
    fn load(&mut self) -> Result<Index>;

    /// Applies `ops` in order in one transaction, durably: when this returns `Ok` the batch
    /// survives a crash. Each op answers with its outcome, computed inside the transaction, or
    /// with the [`Conflict`] that refused it (a refused op changes nothing; the rest commit).
    /// On `Err` nothing of the batch remains. `now` (unix milliseconds) is the time to stamp
    /// on anything created, the same value [`Index::apply`] is given.
    fn apply_batch(&mut self, ops: &[WriteOp], now: i64) -> Result<Vec<OpResult>>;

    /// A cheap round trip to the store: `Ok` if it answers queries now.
    fn ping(&mut self) -> Result<()> {
        Ok(())
    }

    /// Every config and layer reference: the part of garbage collection's graph that the
    /// index does not keep in memory.
    fn blob_references(&mut self) -> Result<Vec<RefRow>>;

    /// Every robot token, if another process changed the database since the last call (or
    /// the load); None when nothing changed or no other process writes this store.
    fn robot_tokens_changed(&mut self) -> Result<Option<Vec<RobotToken>>> {
        Ok(None)
    }
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
    /// Answered by the writer thread after the writes queued before it.
    Ping(oneshot::Sender<Result<()>>),
    /// Answered after the robot tokens another process committed are in the index.
    RefreshRobotTokens(oneshot::Sender<Result<()>>),
    /// Garbage collection's graph, read between two batches: the index and the database
    /// agree there.
    Graph(oneshot::Sender<Result<Graph>>),
    Stop,
}

pub struct Indexed {
    index: Arc<RwLock<Index>>,
    tx: crossbeam_channel::Sender<Msg>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

/// Reads tolerate poisoning: the index is only written by the writer thread, which reloads it
/// from the database if an update ever panics, so a poisoned lock still guards a usable value.
fn read_lock(index: &RwLock<Index>) -> RwLockReadGuard<'_, Index> {
    index.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_lock(index: &RwLock<Index>) -> RwLockWriteGuard<'_, Index> {
    index.write().unwrap_or_else(PoisonError::into_inner)
}

impl Indexed {
    /// Loads the index on the calling thread (startup may block), then hands the database to
    /// its own thread.
    pub fn start(mut db: Box<dyn Database>) -> std::result::Result<Indexed, String> {
        let index = db.load().map_err(|e| format!("loading metadata: {e}"))?;
        crate::log::info(format_args!(
            "metadata loaded: {} repositories, {} blobs, {} manifests",
            index.repository_count(),
            index.blob_count(),
            index.manifest_count()
        ));
        let index = Arc::new(RwLock::new(index));
        let counters = Arc::new(Counters::default());
        // Unbounded: a bounded channel would block an event loop when full. The queue depth is
        // exposed instead (`stats`) so overload shows up in metrics.
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = {
            let index = Arc::clone(&index);
            let counters = Arc::clone(&counters);
            std::thread::Builder::new()
                .name("ringyard-meta".into())
                .spawn(move || run(db, rx, &index, &counters))
                .map_err(|e| format!("starting the metadata writer thread: {e}"))?
        };
        Ok(Indexed {
            index,
            tx,
            closed: AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
            counters,
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Index) -> T) -> Answer<T> {
        Answer::ready(f(&read_lock(&self.index)))
    }

    fn send(&self, msg: Msg) -> std::result::Result<(), Error> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Unavailable {
                retry: false,
                cause: "the metadata engine is closed".into(),
            });
        }
        self.tx
            .send(msg)
            .map_err(|_| Error::unavailable("the metadata writer thread is gone"))
    }

    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Index {
        read_lock(&self.index).clone()
    }
}

impl Drop for Indexed {
    /// The last handle going away must not cut off queued writes: they drain and commit first.
    fn drop(&mut self) {
        self.close();
    }
}

impl Engine for Indexed {
    super::index::reads_from_index!();

    /// Queued now; dropping the answer does not cancel the write, which commits regardless.
    fn write(&self, op: WriteOp) -> Answer<WriteOutcome> {
        let (reply, answer) = Answer::channel();
        match self.send(Msg::Write(Request { op, reply })) {
            Ok(()) => answer,
            Err(e) => Answer::failed(e),
        }
    }

    fn ping(&self) -> Answer<()> {
        let (reply, answer) = Answer::channel();
        match self.send(Msg::Ping(reply)) {
            Ok(()) => answer,
            Err(e) => Answer::failed(e),
        }
    }

    fn refresh_robot_tokens(&self) -> Answer<()> {
        let (reply, answer) = Answer::channel();
        match self.send(Msg::RefreshRobotTokens(reply)) {
            Ok(()) => answer,
            Err(e) => Answer::failed(e),
        }
    }

    /// Read on the writer thread between two batches (writes wait for it; reads do not).
    fn gc_graph(&self) -> Answer<Graph> {
        let (reply, answer) = Answer::channel();
        match self.send(Msg::Graph(reply)) {
            Ok(()) => answer,
            Err(e) => Answer::failed(e),
        }
    }

    fn stats(&self) -> EngineStats {
        let c = &self.counters;
        let ix = read_lock(&self.index);
        EngineStats {
            commits: c.commits.load(Ordering::Relaxed),
            ops: c.ops.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
            queue_depth: self.tx.len() as u64,
            blobs: ix.blob_count() as u64,
            blob_bytes: ix.blob_bytes(),
            cache: None,
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            // The thread may already be gone (it only exits on Stop or disconnect); either way
            // there is nothing left to wait for but the join.
            let _ = self.tx.send(Msg::Stop);
            if handle.join().is_err() {
                crate::log::error(format_args!("metadata writer thread panicked"));
            }
        }
    }
}

/// The writer thread: take one message (blocking), then whatever else is already queued, and
/// commit it as one batch. After `Stop`, keep draining without blocking and exit once empty; a
/// disconnected channel (every handle dropped) ends it the same way.
fn run(
    mut db: Box<dyn Database>,
    rx: crossbeam_channel::Receiver<Msg>,
    index: &RwLock<Index>,
    counters: &Counters,
) {
    let mut stopping = false;
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    let mut pings = Vec::new();
    let mut refreshes = Vec::new();
    let mut graphs = Vec::new();
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
                Msg::RefreshRobotTokens(reply) => refreshes.push(reply),
                Msg::Graph(reply) => graphs.push(reply),
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
            commit_batch(db.as_mut(), index, counters, &mut batch);
        }
        if !pings.is_empty() {
            let answer = guarded(|| db.ping());
            for reply in pings.drain(..) {
                let _ = reply.send(answer.clone());
            }
        }
        if !refreshes.is_empty() {
            // One check answers every refresh that queued up meanwhile.
            let answer = guarded(|| db.robot_tokens_changed()).map(|changed| {
                if let Some(tokens) = changed {
                    write_lock(index).replace_robot_tokens(tokens);
                }
            });
            for reply in refreshes.drain(..) {
                let _ = reply.send(answer.clone());
            }
        }
        for reply in graphs.drain(..) {
            let answer = guarded(|| db.blob_references()).map(|refs| {
                let mut g = read_lock(index).graph_without_refs();
                g.refs.extend(refs);
                g
            });
            let _ = reply.send(answer);
        }
    }
}

/// Runs database code so that a panic in it becomes an error for the requests at hand instead
/// of the end of the writer thread (and of every later write).
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let cause = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into());
        Err(Error::Io(format!("metadata store panicked: {cause}")))
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
    db: &mut dyn Database,
    index: &RwLock<Index>,
    counters: &Counters,
    batch: &mut Vec<Request>,
) {
    let now = super::now_millis();
    let (ops, replies): (Vec<WriteOp>, Vec<_>) = batch.drain(..).map(|r| (r.op, r.reply)).unzip();

    let results: Vec<Result<OpResult>> = match guarded(|| db.apply_batch(&ops, now)) {
        Ok(outcomes) if outcomes.len() == ops.len() => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            outcomes.into_iter().map(Ok).collect()
        }
        Ok(_) => ops
            .iter()
            .map(|_| {
                Err(Error::Io(
                    "the store answered for another number of ops".into(),
                ))
            })
            .collect(),
        Err(e) if ops.len() == 1 => vec![Err(e)],
        Err(_) => {
            counters.failed_batches.fetch_add(1, Ordering::Relaxed);
            ops.iter()
                .map(|op| {
                    let r = guarded(|| db.apply_batch(std::slice::from_ref(op), now));
                    if r.is_ok() {
                        counters.commits.fetch_add(1, Ordering::Relaxed);
                    }
                    r.and_then(|mut v| {
                        v.pop()
                            .ok_or_else(|| Error::Io("the store answered no outcome".into()))
                    })
                })
                .collect()
        }
    };
    let committed = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    counters.ops.fetch_add(committed as u64, Ordering::Relaxed);

    let applied = catch_unwind(AssertUnwindSafe(|| {
        let mut ix = write_lock(index);
        for (op, r) in ops.iter().zip(&results) {
            if let Ok(Ok(_)) = r {
                ix.apply(op, now);
            }
        }
    }));
    if applied.is_err() {
        // The index may be half-updated: rebuild it from what the database committed, so
        // reads stay consistent with it. The committed ops' callers get an error since their
        // outcome is unknown; every op is idempotent, so a retry is safe.
        resync(db, index);
    }

    for (reply, result) in replies.into_iter().zip(results) {
        let answer = match result {
            Err(e) => Err(e),
            Ok(Err(conflict)) => Err(Error::Conflict(conflict)),
            Ok(Ok(_)) if applied.is_err() => Err(Error::Io(
                "the metadata index update panicked after the commit".into(),
            )),
            Ok(Ok(outcome)) => Ok(outcome),
        };
        // The caller may have given up (its future dropped): nothing to do about it.
        let _ = reply.send(answer);
    }
}

fn resync(db: &mut dyn Database, index: &RwLock<Index>) {
    match guarded(|| db.load()) {
        Ok(fresh) => {
            *write_lock(index) = fresh;
            index.clear_poison();
        }
        Err(e) => crate::log::error(format_args!(
            "metadata index reload failed, reads may be stale: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::index::tests::{dg, record};
    use super::super::suite::{block_on, now, start, TempDir};
    use super::super::{Meta, RefKind};
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A database without storage, for driving the thread: it records batch sizes, can hold
    /// the first batch until released, and fails or panics on chosen repositories. Outcomes
    /// come from an index of its own, as a real database's come from its tables.
    struct FakeDb {
        batches: Arc<Mutex<Vec<usize>>>,
        gate: Option<(
            crossbeam_channel::Sender<()>,
            crossbeam_channel::Receiver<()>,
        )>,
        loads: Arc<AtomicUsize>,
        shadow: Index,
    }

    impl Database for FakeDb {
        fn blob_references(&mut self) -> Result<Vec<RefRow>> {
            Ok(Vec::new())
        }

        fn load(&mut self) -> Result<Index> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            Ok(self.shadow.clone())
        }

        fn apply_batch(&mut self, ops: &[WriteOp], now: i64) -> Result<Vec<OpResult>> {
            if let Some((entered, release)) = self.gate.take() {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            self.batches.lock().unwrap().push(ops.len());
            for op in ops {
                if let WriteOp::LinkBlob { repo, .. } = op {
                    match repo.as_str() {
                        "fail" => return Err(Error::Io("refused".into())),
                        "panic" => panic!("fake database panic"),
                        _ => {}
                    }
                }
            }
            Ok(ops
                .iter()
                .map(|op| Ok(self.shadow.apply(op, now)))
                .collect())
        }
    }

    struct GateHandles {
        entered: crossbeam_channel::Receiver<()>,
        release: crossbeam_channel::Sender<()>,
    }

    fn fake(gated: bool) -> (Arc<Indexed>, Arc<Mutex<Vec<usize>>>, Option<GateHandles>) {
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
        let db = FakeDb {
            batches: Arc::clone(&batches),
            gate,
            loads: Arc::new(AtomicUsize::new(0)),
            shadow: Index::default(),
        };
        (
            Arc::new(Indexed::start(Box::new(db)).unwrap()),
            batches,
            handles,
        )
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
        let mut first = meta.write(link("r", "first"));
        start(&mut first);
        gate.entered.recv().unwrap();
        // The writer is busy with the first batch: everything now queues up.
        // The last two write the same link: outcomes within one batch follow queue order.
        let n = MAX_BATCH + 44;
        let label = |i: usize| {
            if i >= n - 2 {
                "dup".to_string()
            } else {
                format!("b{i}")
            }
        };
        let pending: Vec<_> = (0..n).map(|i| meta.write(link("r", &label(i)))).collect();
        assert_eq!(meta.stats().queue_depth, n as u64);
        gate.release.send(()).unwrap();
        assert!(!block_on(first).unwrap().existed);
        let existed: Vec<bool> = pending
            .into_iter()
            .map(|f| block_on(f).unwrap().existed)
            .collect();
        assert!(existed[..n - 1].iter().all(|e| !e));
        assert!(existed[n - 1]);
        assert_eq!(*batches.lock().unwrap(), vec![1, MAX_BATCH, 44]);
        let stats = meta.stats();
        assert_eq!(
            (stats.commits, stats.ops, stats.failed_batches),
            (3, n as u64 + 1, 0)
        );
        assert_eq!(stats.queue_depth, 0);
    }

    #[test]
    fn a_failing_batch_is_retried_op_by_op() {
        let (meta, batches, gate) = fake(true);
        let gate = gate.unwrap();
        let mut first = meta.write(link("r", "first"));
        start(&mut first);
        gate.entered.recv().unwrap();
        let good1 = meta.write(link("r", "g1"));
        let bad = meta.write(link("fail", "x"));
        let good2 = meta.write(link("r", "g2"));
        gate.release.send(()).unwrap();
        block_on(first).unwrap();
        block_on(good1).unwrap();
        assert!(matches!(block_on(bad).unwrap_err(), Error::Io(_)));
        block_on(good2).unwrap();
        assert_eq!(*batches.lock().unwrap(), vec![1, 3, 1, 1, 1]);
        assert_eq!(now(meta.blob_in_repo("r", &dg("g1"))), Some(3));
        assert_eq!(now(meta.blob_in_repo("r", &dg("g2"))), Some(3));
        assert!(
            !now(meta.repo_exists("fail")),
            "failed op must not reach the index"
        );
        let stats = meta.stats();
        assert_eq!((stats.failed_batches, stats.ops), (1, 3));
    }

    #[test]
    fn writer_survives_a_panic_and_a_dropped_caller() {
        let (meta, _, _) = fake(false);
        assert!(matches!(
            block_on(meta.write(link("panic", "x"))).unwrap_err(),
            Error::Io(_)
        ));
        // A caller that gives up at once: the write still commits.
        drop(meta.write(link("r", "gone")));
        block_on(meta.write(link("r", "after"))).unwrap();
        assert!(now(meta.blob_in_repo("r", &dg("gone"))).is_some());
        assert!(now(meta.blob_in_repo("r", &dg("after"))).is_some());
    }

    /// A ping waits behind the writes queued before it (a stuck store never answers it) and
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
    fn close_drains_then_refuses() {
        let (meta, batches, gate) = fake(true);
        let gate = gate.unwrap();
        let mut first = meta.write(link("r", "first"));
        start(&mut first);
        gate.entered.recv().unwrap();
        let queued = meta.write(link("r", "queued"));
        let closer = {
            let meta = meta.clone();
            std::thread::spawn(move || meta.close())
        };
        // close() waits for the writer, which waits for the gate.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!closer.is_finished());
        gate.release.send(()).unwrap();
        closer.join().unwrap();
        block_on(first).unwrap();
        block_on(queued).unwrap();
        assert_eq!(batches.lock().unwrap().iter().sum::<usize>(), 2);
        assert!(block_on(meta.write(link("r", "late"))).is_err());
        meta.close(); // idempotent
        assert!(now(meta.blob_in_repo("r", &dg("queued"))).is_some());
    }

    #[test]
    fn resync_replaces_a_poisoned_index_from_the_database() {
        struct Stored(Index);
        impl Database for Stored {
            fn load(&mut self) -> Result<Index> {
                Ok(self.0.clone())
            }
            fn apply_batch(&mut self, ops: &[WriteOp], _: i64) -> Result<Vec<OpResult>> {
                Ok(ops.iter().map(|_| Ok(WriteOutcome::default())).collect())
            }
            fn blob_references(&mut self) -> Result<Vec<RefRow>> {
                Ok(Vec::new())
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
    fn sqlite_ping_and_blob_totals() {
        let dir = TempDir::new("ping");
        let meta = Meta::open_sqlite(&dir.0.join("meta.db")).unwrap();
        block_on(meta.ping()).unwrap();
        block_on(meta.link_blob("r", &dg("a"), 10)).unwrap();
        block_on(meta.link_blob("s", &dg("a"), 10)).unwrap();
        block_on(meta.link_blob("r", &dg("b"), 5)).unwrap();
        let totals = |m: &Meta| (m.stats().blobs, m.stats().blob_bytes);
        assert_eq!(totals(&meta), (2, 15));
        meta.close();
        let reopened = Meta::open_sqlite(&dir.0.join("meta.db")).unwrap();
        assert_eq!(totals(&reopened), (2, 15));
        reopened.close();
    }

    #[test]
    fn sqlite_group_commit_with_concurrent_writers() {
        let dir = TempDir::new("concurrent");
        let path = dir.0.join("meta.db");
        let db = super::super::sqlite::SqliteEngine::open(&path).unwrap();
        let engine = Arc::new(Indexed::start(Box::new(db)).unwrap());
        let meta = Meta::new(engine.clone());
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
                            vec![],
                        ))
                        .unwrap();
                        // Read-your-write from the memory index, immediately.
                        assert_eq!(
                            block_on(meta.resolve_tag(&repo, &format!("t{i:03}"))).unwrap(),
                            Some(dg(&label))
                        );
                        assert_eq!(now(meta.blob_in_repo(&repo, &dg(&label))), Some(i));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let total = threads * per_thread * 2;
        let stats = meta.stats();
        eprintln!("group commit: {stats:?}");
        assert_eq!(stats.ops, total);
        assert!(stats.commits <= total);
        let snapshot = engine.snapshot();
        assert_eq!(snapshot.manifest_count(), (threads * per_thread) as usize);
        drop(meta);
        engine.close();
        let db = super::super::sqlite::SqliteEngine::open(&path).unwrap();
        let reopened = Indexed::start(Box::new(db)).unwrap();
        assert_eq!(reopened.snapshot(), snapshot);
        let (tags, more) = now(reopened.tags_after("repo3", Some("t010"), 5)).unwrap();
        assert_eq!(tags, vec!["t011", "t012", "t013", "t014", "t015"]);
        assert!(more);
        let (repos, more) = now(reopened.repositories_after(None, 100));
        assert_eq!(repos.len(), threads as usize);
        assert!(!more);
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
}
