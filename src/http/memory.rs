//! An in-memory transport, for tests that drive the real request loop without a socket: the
//! test holds the [`Peer`] end, sends request bytes and reads back what the server wrote. It
//! keeps the default file send (read the range, write it), the path TLS will take.

use super::transport::Transport;
use monoio::buf::{IoBuf, IoBufMut};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};

#[derive(Default)]
struct Pipe {
    to_server: Vec<u8>,
    /// The peer will send nothing more: reads end with `Ok(0)` once `to_server` is drained.
    peer_closed: bool,
    to_peer: Vec<u8>,
    /// The server half-closed (or dropped) its side.
    server_closed: bool,
    server_waker: Option<Waker>,
    peer_waker: Option<Waker>,
}

/// The server's end, handed to the request loop.
pub struct MemoryTransport {
    pipe: Rc<RefCell<Pipe>>,
}

/// The client's end.
pub struct Peer {
    pipe: Rc<RefCell<Pipe>>,
}

pub fn pair() -> (MemoryTransport, Peer) {
    let pipe = Rc::new(RefCell::new(Pipe::default()));
    (MemoryTransport { pipe: pipe.clone() }, Peer { pipe })
}

impl Transport for MemoryTransport {
    async fn read<B: IoBufMut>(&mut self, mut buf: B) -> (io::Result<usize>, B) {
        let n = poll_fn(|cx| {
            let mut pipe = self.pipe.borrow_mut();
            if pipe.to_server.is_empty() {
                if pipe.peer_closed {
                    return Poll::Ready(0);
                }
                pipe.server_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = pipe.to_server.len().min(buf.bytes_total());
            // SAFETY: `write_ptr` has room for `bytes_total` bytes, and `n` is at most that;
            // the two buffers are distinct allocations.
            unsafe {
                std::ptr::copy_nonoverlapping(pipe.to_server.as_ptr(), buf.write_ptr(), n);
                buf.set_init(n);
            }
            pipe.to_server.drain(..n);
            Poll::Ready(n)
        })
        .await;
        (Ok(n), buf)
    }

    async fn write_all<B: IoBuf>(&mut self, buf: B) -> (io::Result<()>, B) {
        let mut pipe = self.pipe.borrow_mut();
        if pipe.server_closed {
            return (Err(io::ErrorKind::BrokenPipe.into()), buf);
        }
        // SAFETY: `read_ptr` points at `bytes_init` initialized bytes.
        let bytes = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        pipe.to_peer.extend_from_slice(bytes);
        if let Some(w) = pipe.peer_waker.take() {
            w.wake();
        }
        drop(pipe);
        (Ok(()), buf)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.close();
        Ok(())
    }
}

impl MemoryTransport {
    fn close(&self) {
        let mut pipe = self.pipe.borrow_mut();
        pipe.server_closed = true;
        if let Some(w) = pipe.peer_waker.take() {
            w.wake();
        }
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        self.close();
    }
}

impl Peer {
    pub fn send(&self, bytes: &[u8]) {
        let mut pipe = self.pipe.borrow_mut();
        pipe.to_server.extend_from_slice(bytes);
        if let Some(w) = pipe.server_waker.take() {
            w.wake();
        }
    }

    /// No more request bytes: the server reads the end of the stream after what was sent.
    pub fn close(&self) {
        let mut pipe = self.pipe.borrow_mut();
        pipe.peer_closed = true;
        if let Some(w) = pipe.server_waker.take() {
            w.wake();
        }
    }

    /// Waits until `take` finds what it wants at the start of the bytes the server wrote
    /// (returning it and how many bytes it used), or the server closed with none found.
    pub async fn receive<R>(&self, mut take: impl FnMut(&[u8]) -> Option<(R, usize)>) -> Option<R> {
        poll_fn(|cx| {
            let mut pipe = self.pipe.borrow_mut();
            if let Some((found, used)) = take(&pipe.to_peer) {
                pipe.to_peer.drain(..used);
                return Poll::Ready(Some(found));
            }
            if pipe.server_closed {
                return Poll::Ready(None);
            }
            pipe.peer_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
