//! A blob being fetched from the remote backend into the cache tier, readable while it grows.
//!
//! One fetch per digest runs at a time, as a task of its own on the worker that first missed
//! (so a client that goes away does not abandon it for the others). It writes the remote's
//! bytes into a staged file, hashing them on the way, and publishes how far it got; every
//! request that missed on the blob, on any worker, sends from that file as the bytes land, so a
//! cold pull runs at the remote's speed instead of waiting for the whole fill.
//!
//! The digest is known only at the end. So the last byte of the blob is held back until it
//! matched: a fetch that turns out corrupt, short, or cut off fails its readers before their
//! bodies are whole, and their connections close (a client reads a short body as an error,
//! never a wrong blob as right). After the match the file is synced, moved into the tree and
//! indexed; only then is the fetch forgotten, so that later requests find the cached blob.

use super::backend::BlobBackend;
use super::error::{Error, Result};
use super::fs::commit_blocking;
use super::lru::{Entry, Lru};
use crate::blocking::Pool;
use crate::oci::digest::{Digest, Hasher};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

/// Fetches in progress, by digest, shared by every worker.
pub(super) type Fills = Mutex<HashMap<Digest, Arc<Fill>>>;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One fetch's progress, watched by the requests waiting on it.
pub(super) struct Fill {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The blob's size and the staged file, once the remote told the one and the other exists.
    file: Option<(u64, Arc<fs::File>)>,
    /// Bytes in the staged file.
    written: u64,
    /// Every byte is there and the digest matched: the whole file may be sent.
    verified: bool,
    end: Option<End>,
    wakers: Vec<Waker>,
}

enum End {
    /// In the tree and indexed.
    Committed(Arc<Entry>),
    /// The remote does not hold the blob.
    Absent,
    Failed(Error),
}

impl Fill {
    fn new() -> Fill {
        Fill {
            state: Mutex::default(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let wakers = {
            let mut state = lock(&self.state);
            change(&mut state);
            std::mem::take(&mut state.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Waits until `ready` finds what it looks for in the state.
    async fn until<T>(&self, mut ready: impl FnMut(&State) -> Option<T>) -> T {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            match ready(&state) {
                Some(t) => Poll::Ready(t),
                None => {
                    if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                        state.wakers.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Once the fetch has begun writing: a reader of its file; `None` when the remote does
    /// not hold the blob.
    pub async fn started(self: &Arc<Self>) -> Result<Option<Growing>> {
        self.until(|s| match (&s.file, &s.end) {
            (Some((size, file)), _) => Some(Ok(Some(Growing {
                fill: self.clone(),
                size: *size,
                file: file.clone(),
            }))),
            (None, Some(End::Absent)) => Some(Ok(None)),
            (None, Some(End::Failed(e))) => Some(Err(e.shared())),
            (None, _) => None,
        })
        .await
    }

    /// Once the fetch is over: the blob's entry in the tier, `None` when the remote does not
    /// hold it.
    pub async fn finished(&self) -> Result<Option<Arc<Entry>>> {
        self.until(|s| match &s.end {
            Some(End::Committed(e)) => Some(Ok(Some(e.clone()))),
            Some(End::Absent) => Some(Ok(None)),
            Some(End::Failed(e)) => Some(Err(e.shared())),
            None => None,
        })
        .await
    }
}

/// A blob's file as its fetch writes it, for one response. Holds the fetch's state, and
/// through it the blob's entry once indexed, so the file stays while it is sent.
pub struct Growing {
    fill: Arc<Fill>,
    size: u64,
    file: Arc<fs::File>,
}

impl Growing {
    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn file(&self) -> &fs::File {
        &self.file
    }

    /// Resolves once bytes at `at` may be sent, with the end of what may be sent now: all the
    /// written bytes except the blob's last, which waits for the digest (module docs). An
    /// error when the fetch failed before its bytes were verified.
    pub async fn readable(&self, at: u64) -> Result<u64> {
        let size = self.size;
        self.fill
            .until(|s| {
                if s.verified {
                    return Some(Ok(size));
                }
                if let Some(End::Failed(e)) = &s.end {
                    return Some(Err(e.shared()));
                }
                let end = s.written.min(size.saturating_sub(1));
                (end > at).then_some(Ok(end))
            })
            .await
    }
}

/// What a fetch needs: where from, where to, and who to tell.
pub(super) struct Job {
    pub digest: Digest,
    pub backend: Arc<dyn BlobBackend>,
    pub lru: Arc<Lru>,
    pub pool: Pool,
    pub fills: Arc<Fills>,
    /// The staged file's path (a name the restart's cleanup knows) and the blob's in the tree.
    pub staged: PathBuf,
    pub dest: PathBuf,
}

/// The fetch of `job.digest`, registered in `job.fills` (or the one already running), its
/// task started on this worker.
pub(super) fn start(job: Job) -> Arc<Fill> {
    let fill = {
        let mut fills = lock(&job.fills);
        if let Some(f) = fills.get(&job.digest) {
            return f.clone();
        }
        let f = Arc::new(Fill::new());
        fills.insert(job.digest.clone(), f.clone());
        f
    };
    monoio::spawn(run(job, fill.clone()));
    fill
}

async fn run(job: Job, fill: Arc<Fill>) {
    /// Ends the fetch however its task ends, dropped with the runtime included: forgotten
    /// first, so that a request told of a failure and trying again starts a new fetch.
    struct Ending<'a> {
        job: &'a Job,
        fill: &'a Fill,
        end: Option<End>,
    }
    impl Drop for Ending<'_> {
        fn drop(&mut self) {
            lock(&self.job.fills).remove(&self.job.digest);
            let end = self.end.take().unwrap_or_else(|| {
                End::Failed(Error::Unavailable {
                    retry: true,
                    cause: "the fetch from the remote backend was stopped".into(),
                })
            });
            self.fill.update(|s| s.end = Some(end));
        }
    }
    let mut ending = Ending {
        job: &job,
        fill: &fill,
        end: None,
    };
    let end = match fetch(&job, &fill).await {
        Ok(entry) => End::Committed(entry),
        Err(Error::NotFound) => End::Absent,
        Err(e) => {
            crate::log::warn(format_args!(
                "fetching {} from the remote backend failed: {e}",
                job.digest
            ));
            let staged = job.staged.clone();
            let _ = job.pool.run(move || fs::remove_file(staged)).await;
            End::Failed(e)
        }
    };
    ending.end = Some(end);
}

/// Copies the blob from the remote into the staged file, publishing progress, checks its size
/// and digest, then commits it to the tree and indexes it.
async fn fetch(job: &Job, fill: &Fill) -> Result<Arc<Entry>> {
    let digest = &job.digest;
    let (size, mut chunks) = job.backend.open(digest).await?;
    let staged = job.staged.clone();
    let file = job
        .pool
        // Readable too: the responses send from this descriptor.
        .run(move || {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(staged)
        })
        .await?
        .map_err(|e| Error::io("filling the cache", e))?;
    let file = Arc::new(file);
    fill.update(|s| s.file = Some((size, file.clone())));
    let corrupt = |what: String| Error::Corrupt(format!("the backend's {digest} {what}"));
    let mut hasher = Hasher::new(digest.algorithm());
    let mut at = 0u64;
    let mut piece = chunks.next().await?;
    // The next piece comes from the remote while this one is hashed and written.
    while let Some(p) = piece {
        let len = p.len() as u64;
        job.lru.fetched(len);
        if at + len > size {
            return Err(corrupt(format!("reads back longer than {size} bytes")));
        }
        let write = async {
            let hasher = write_piece(&job.pool, file.clone(), hasher, p, at).await?;
            // Published as soon as written, not when the next piece came.
            fill.update(|s| s.written = at + len);
            Ok::<_, Error>(hasher)
        };
        let (written, next) = monoio::join!(write, chunks.next());
        hasher = written?;
        at += len;
        piece = next?;
    }
    if at != size {
        return Err(corrupt(format!("reads back as {at} of {size} bytes")));
    }
    let actual = hasher.finish();
    if actual != *digest {
        return Err(corrupt(format!("reads back as {actual}")));
    }
    fill.update(|s| s.verified = true);
    let (staged, dest, lru, d) = (
        job.staged.clone(),
        job.dest.clone(),
        job.lru.clone(),
        digest.clone(),
    );
    job.pool
        .run(move || {
            file.sync_all()?;
            commit_blocking(&staged, &dest)?;
            Ok(lru.admit(&d, size))
        })
        .await?
        .map_err(|e| Error::io("filling the cache", e))
}

/// Hashes and writes one piece at `at`, on the pool; the hasher comes back for the next.
async fn write_piece(
    pool: &Pool,
    file: Arc<fs::File>,
    mut hasher: Hasher,
    piece: Vec<u8>,
    at: u64,
) -> Result<Hasher> {
    pool.run(move || {
        hasher.update(&piece);
        file.write_all_at(&piece, at).map(|()| hasher)
    })
    .await?
    .map_err(|e| Error::io("filling the cache", e))
}
