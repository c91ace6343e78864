//! A worker-local one-shot signal: fired once (shutdown), awaited by any number of tasks on
//! the same event loop. Single-threaded by design, so no atomics and no locks.
//!
//! A leaf of its own, not part of `server`: the server fires it, and `http`'s connections wait
//! on it between requests, so it belongs to neither layer.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Clone, Default)]
pub struct LocalSignal {
    inner: Rc<Inner>,
}

#[derive(Default)]
struct Inner {
    fired: Cell<bool>,
    /// Keyed so that a wait that ends without the signal (the common case: a request
    /// arrived) removes its waker instead of leaving it behind.
    waiters: RefCell<slab::Slab<Waker>>,
}

impl LocalSignal {
    pub fn new() -> LocalSignal {
        LocalSignal::default()
    }

    pub fn fire(&self) {
        self.inner.fired.set(true);
        let waiters: Vec<Waker> = self.inner.waiters.borrow_mut().drain().collect();
        for w in waiters {
            w.wake();
        }
    }

    pub fn fired(&self) -> bool {
        self.inner.fired.get()
    }

    pub fn wait(&self) -> Wait {
        Wait {
            inner: self.inner.clone(),
            key: None,
        }
    }
}

pub struct Wait {
    inner: Rc<Inner>,
    key: Option<usize>,
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.inner.waiters.borrow_mut().try_remove(key);
        }
    }
}

impl Future for Wait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.fired.get() {
            return Poll::Ready(());
        }
        let inner = self.inner.clone();
        let mut waiters = inner.waiters.borrow_mut();
        match self.key.and_then(|k| waiters.get_mut(k)) {
            Some(w) => {
                if !w.will_wake(cx.waker()) {
                    *w = cx.waker().clone();
                }
            }
            None => self.key = Some(waiters.insert(cx.waker().clone())),
        }
        Poll::Pending
    }
}
