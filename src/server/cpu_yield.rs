//! Giving the CPU back once per batch of answered requests.
//!
//! A busy event loop never sleeps: by the time it has answered one batch of requests, the next
//! batch has arrived. When it shares a core with its clients (a CI runner pushing to a
//! registry on the same machine, a benchmark on a 2-core box), neither side blocks, so the
//! kernel switches between them only on its timer tick, every 4 ms or so, and a request whose
//! client or server thread is waiting for the core waits that long. Yielding after each batch
//! lets the clients on the same core read their answers and send the next requests at once.
//! Measured with `loadtest get` (64 connections, manifest by tag, 2 cores shared with the load
//! generator): p99 fell from about 8 ms to 0.4 ms and requests/s rose by about 10%. Where the
//! loop has the core to itself, `sched_yield` returns at once.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

thread_local! {
    static PENDING: Cell<bool> = const { Cell::new(false) };
    static WAITER: RefCell<Option<Waker>> = const { RefCell::new(None) };
}

/// Called after each response: asks for one yield once the tasks ready now have run.
pub fn request_done() {
    PENDING.with(|p| p.set(true));
    if let Some(w) = WAITER.with(|w| w.borrow_mut().take()) {
        w.wake();
    }
}

/// The worker's yield task. It sleeps while no request was answered, so an idle loop still
/// parks; it is woken at most once per batch, however many requests the batch held.
pub async fn run() {
    loop {
        poll_fn(|cx| {
            if PENDING.with(|p| p.replace(false)) {
                Poll::Ready(())
            } else {
                WAITER.with(|w| *w.borrow_mut() = Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        // SAFETY: sched_yield takes no arguments and touches no memory of ours.
        unsafe { libc::sched_yield() };
    }
}
