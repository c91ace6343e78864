//! A small pool of threads for work that would block an event loop: directory operations,
//! renames, fsync of directories, unlinks, hashing a whole file again after a restart.
//! Event loops hand a closure over a crossbeam channel and await a oneshot for the answer, so
//! no worker thread ever waits on the filesystem's metadata paths.

use futures_channel::oneshot;
use std::thread;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The pool's threads are gone (the process is stopping): the job did not run, or its answer
/// was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the blocking pool stopped")
    }
}

impl std::error::Error for Stopped {}

#[derive(Clone)]
pub struct Pool {
    tx: crossbeam_channel::Sender<Job>,
}

impl Pool {
    pub fn new(threads: usize, name: &str) -> std::io::Result<Pool> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    // Ends when every sender (every Pool clone) is dropped.
                    for job in rx {
                        job();
                    }
                })?;
        }
        Ok(Pool { tx })
    }

    /// Runs `f` on the pool and resolves with its result; [`Stopped`] if the pool is gone.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Stopped>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(f());
        });
        self.tx.send(job).map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}

/// Drives a future to completion on the current (non-event-loop) thread: startup and shutdown
/// code on the main thread uses it to await metadata writes.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_runs_jobs_and_block_on_waits() {
        let pool = Pool::new(2, "t").unwrap();
        let v = block_on(pool.run(|| 40 + 2)).unwrap();
        assert_eq!(v, 42);
    }
}
