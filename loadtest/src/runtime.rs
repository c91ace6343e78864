//! Threads, each running its own monoio event loop (io_uring when the kernel allows, epoll
//! otherwise), like the server's workers; the work of a run is spread over them.

use std::future::Future;
use std::sync::Arc;
use std::thread;

type Rt = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

fn build_runtime() -> Result<Rt, String> {
    if std::env::var("LOADTEST_DRIVER").map_or(true, |v| v != "epoll") {
        // COOP_TASKRUN: completions are not delivered by interrupting the thread.
        for coop in [true, false] {
            let mut b = io_uring::IoUring::builder();
            if coop {
                b.setup_coop_taskrun();
            }
            let built = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(1024)
                .uring_builder(b)
                .enable_timer()
                .build();
            if let Ok(rt) = built {
                return Ok(rt.into());
            }
        }
    }
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .map(Into::into)
        .map_err(|e| format!("cannot start an event loop: {e}"))
}

pub fn default_threads() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `task(thread_index)` on `threads` event-loop threads and returns their results in
/// thread order. A thread that cannot start its event loop is an error.
pub fn run_on_threads<T, F, Fut>(threads: usize, task: F) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + 'static,
{
    let task = Arc::new(task);
    let mut handles = Vec::new();
    for i in 0..threads.max(1) {
        let task = task.clone();
        let h = thread::Builder::new()
            .name(format!("loadtest-{i}"))
            .spawn(move || -> Result<T, String> {
                let mut rt = build_runtime()?;
                Ok(rt.block_on(task(i)))
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        handles.push(h);
    }
    handles
        .into_iter()
        .map(|h| h.join().map_err(|_| "a load thread panicked".to_string())?)
        .collect()
}

/// How many of `total` items fall to thread `t` of `threads` when item i goes to thread
/// i % threads.
pub fn share(total: usize, threads: usize, t: usize) -> usize {
    total / threads + usize::from(t < total % threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for total in 0..20 {
            for threads in 1..5 {
                let sum: usize = (0..threads).map(|t| share(total, threads, t)).sum();
                assert_eq!(sum, total);
            }
        }
        assert_eq!(share(5, 2, 0), 3);
        assert_eq!(share(5, 2, 1), 2);
    }

    #[test]
    fn runs_on_event_loops() {
        let out = run_on_threads(2, |i| async move {
            monoio::time::sleep(std::time::Duration::from_millis(1)).await;
            i * 10
        })
        .unwrap();
        assert_eq!(out, vec![0, 10]);
    }
}
