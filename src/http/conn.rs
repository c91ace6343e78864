//! One client connection: a read buffer over its [`Transport`], request heads with deadlines,
//! and whole-buffer writes with a progress timeout. Reads and writes use monoio's owned
//! buffers, so a cancelled read (timeout, shutdown) loses its buffer: the connection is
//! closed then.

use super::request::{parse_head, HeadError, Request};
use super::transport::{write_timed_out, Transport};
use crate::buf::FillBuf;
use crate::signal::LocalSignal;
use monoio::buf::{IoBuf, SliceMut};
use std::io;
use std::time::{Duration, Instant};

/// Read buffer size: large enough that a typical manifest PUT or a chunk of a blob arrives in
/// one read, small enough that thousands of idle connections stay cheap.
const READ_BUF: usize = 64 * 1024;

/// A response head buffer larger than this is not kept for the next response, so that idle
/// keep-alive connections stay small.
const WRITE_BUF_KEPT: usize = 8 * 1024;

pub struct Conn<T> {
    transport: T,
    buf: Vec<u8>,
    pos: usize,
    /// Response heads (and small bodies) are serialized here, reused from one response to the
    /// next.
    write_buf: Vec<u8>,
    /// Set when a cancelled operation took the buffer or the peer misbehaved.
    broken: bool,
}

pub enum HeadOutcome {
    Request(Request),
    /// The peer closed, idled out, or the server is shutting down: close quietly.
    Closed,
    /// Some bytes of a head arrived but not the rest in time.
    TimedOut,
    Invalid(HeadError),
}

impl<T: Transport> Conn<T> {
    pub fn new(transport: T) -> Conn<T> {
        Conn {
            transport,
            buf: Vec::with_capacity(READ_BUF),
            pos: 0,
            write_buf: Vec::new(),
            broken: false,
        }
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// An error once a cancelled operation or a failure left the connection unusable.
    fn usable(&self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection broken",
            ));
        }
        Ok(())
    }

    /// Bytes already read from the socket and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.pos = 0;
            self.buf.clear();
        }
    }

    /// Reads more bytes into the buffer, waiting at most `timeout`. Ok(0) is end of stream.
    pub async fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        self.usable()?;
        self.make_room();
        let buf = std::mem::take(&mut self.buf);
        let (len, cap) = (buf.len(), buf.capacity());
        let slice = SliceMut::new(buf, len, cap);
        match monoio::time::timeout(timeout, self.transport.read(slice)).await {
            Ok((res, slice)) => {
                self.buf = slice.into_inner();
                res
            }
            Err(_) => {
                self.broken = true;
                Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out"))
            }
        }
    }

    /// Reads straight from the socket into `out` after its initialized part, at most `max`
    /// bytes: large bodies skip the connection buffer and its copy.
    pub async fn read_direct<B: FillBuf>(
        &mut self,
        out: B,
        max: usize,
        timeout: Duration,
    ) -> (io::Result<usize>, B) {
        if let Err(e) = self.usable() {
            return (Err(e), out);
        }
        let len = out.filled();
        let end = len + out.room().min(max);
        let slice = SliceMut::new(out, len, end);
        match monoio::time::timeout(timeout, self.transport.read(slice)).await {
            Ok((res, slice)) => (res, slice.into_inner()),
            Err(_) => {
                self.broken = true;
                (
                    Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
                    // The read was cancelled with its buffer; the connection is done for.
                    B::empty(),
                )
            }
        }
    }

    fn make_room(&mut self) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(READ_BUF);
        }
    }

    /// Waits for and parses the next request head. The idle wait ends on `shutdown`; once the
    /// first byte is in, the whole head must arrive within `head_timeout` (slow-loris guard).
    pub async fn read_head(
        &mut self,
        max_head: usize,
        idle: Duration,
        head_timeout: Duration,
        shutdown: &LocalSignal,
    ) -> HeadOutcome {
        let mut deadline: Option<Instant> = None;
        loop {
            if !self.buffered().is_empty() {
                match parse_head(self.buffered(), max_head) {
                    Ok(Some((req, n))) => {
                        self.consume(n);
                        return HeadOutcome::Request(req);
                    }
                    Ok(None) => {}
                    Err(e) => return HeadOutcome::Invalid(e),
                }
                deadline.get_or_insert_with(|| Instant::now() + head_timeout);
            }
            let read = match deadline {
                None => {
                    if shutdown.fired() {
                        return HeadOutcome::Closed;
                    }
                    monoio::select! {
                        r = self.fill(idle) => r,
                        _ = shutdown.wait() => {
                            self.broken = true;
                            return HeadOutcome::Closed;
                        }
                    }
                }
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return HeadOutcome::TimedOut;
                    }
                    match self.fill(left).await {
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            return HeadOutcome::TimedOut
                        }
                        other => other,
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => return HeadOutcome::Closed,
                Ok(_) => {}
            }
        }
    }

    /// An empty buffer for the next response head: the one the last response used, if kept.
    pub fn take_write_buf(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.write_buf);
        buf.clear();
        buf
    }

    /// Keeps a written head buffer for the next response, unless it grew large.
    pub fn return_write_buf(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= WRITE_BUF_KEPT {
            self.write_buf = buf;
        }
    }

    /// Writes the whole buffer; each write must make progress within `timeout`, so a client
    /// that stops reading a large download cannot hold the connection forever.
    pub async fn write_all<B: IoBuf>(&mut self, buf: B, timeout: Duration) -> io::Result<B> {
        self.usable()?;
        match monoio::time::timeout(timeout, self.transport.write_all(buf)).await {
            Ok((Ok(()), buf)) => Ok(buf),
            Ok((Err(e), _)) => {
                self.broken = true;
                Err(e)
            }
            Err(_) => {
                self.broken = true;
                Err(write_timed_out())
            }
        }
    }

    /// Sends `[start, end)` of `file` the transport's way (`sendfile` on plain TCP). Each
    /// wait for the peer must end within `timeout`, as for [`Conn::write_all`].
    pub async fn send_file(
        &mut self,
        file: &std::fs::File,
        range: std::ops::Range<u64>,
        timeout: Duration,
    ) -> io::Result<()> {
        self.usable()?;
        let result = self.transport.send_file(file, range, timeout).await;
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// Closes after a final response without resetting it away: half-close our side, then
    /// read and discard what the client still sends for a moment. Closing a socket with
    /// unread input sends RST, which can destroy a response the client has not read yet
    /// (an error answered before a large body arrived).
    pub async fn linger_close(mut self) {
        if self.broken {
            return;
        }
        let _ = self.transport.shutdown().await;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut discarded = 0usize;
        while discarded < 8 * 1024 * 1024 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.pos = 0;
            self.buf.clear();
            match self.fill(left).await {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            }
        }
    }
}
