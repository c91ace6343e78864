//! The future every engine method returns. An engine that answers from memory (SQLite's index,
//! the in-memory engine) gives a value that is ready at once: no allocation, no task switch, so
//! a pull's tag lookup stays a map lookup. An engine that must ask another thread (the SQLite
//! writer, a PostgreSQL client on a side runtime) gives the receiving end of a oneshot. One
//! concrete type for both keeps the [`super::Engine`] trait object-safe without boxing futures.

use super::Error;
use futures_channel::oneshot;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub struct Answer<T>(State<T>);

enum State<T> {
    Ready(Option<Result<T, Error>>),
    Waiting(oneshot::Receiver<Result<T, Error>>),
}

// The value is only ever moved out, never pinned in place.
impl<T> Unpin for Answer<T> {}

impl<T> Answer<T> {
    pub fn ready(value: T) -> Answer<T> {
        Answer(State::Ready(Some(Ok(value))))
    }

    pub fn failed(e: Error) -> Answer<T> {
        Answer(State::Ready(Some(Err(e))))
    }

    /// A result another thread will send; a sender dropped without answering is an engine
    /// that went away, which the caller sees as unavailable.
    pub fn waiting(rx: oneshot::Receiver<Result<T, Error>>) -> Answer<T> {
        Answer(State::Waiting(rx))
    }

    /// A sender and the answer it completes.
    pub fn channel() -> (oneshot::Sender<Result<T, Error>>, Answer<T>) {
        let (tx, rx) = oneshot::channel();
        (tx, Answer::waiting(rx))
    }
}

impl<T> Future for Answer<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            State::Ready(v) => Poll::Ready(v.take().expect("Answer polled after completion")),
            State::Waiting(rx) => Pin::new(rx).poll(cx).map(|r| {
                r.unwrap_or_else(|_| Err(Error::unavailable("the metadata engine stopped")))
            }),
        }
    }
}
