//! Streaming request bodies with backpressure: the handler pulls bytes into its own buffer
//! when it is ready for them, so a 10 GB upload holds a chunk, never the blob. Handles
//! Content-Length and chunked framing and sends `100 Continue` only when the handler first
//! asks for bytes, so a request refused before its body never makes the client send it.

use super::chunked::{Decoder, Event};
use super::conn::Conn;
use super::min_rate::MinRate;
use super::request::{BodyKind, Request};
use super::transport::Transport;
use crate::buf::FillBuf;
use std::io;
use std::time::{Duration, Instant};

/// A body left unread smaller than this is read and discarded to keep the connection;
/// anything larger closes the connection instead.
const DRAIN_LIMIT: u64 = 256 * 1024;

#[derive(Debug)]
pub enum BodyError {
    /// The peer went away or stalled past the progress timeout.
    Io(io::Error),
    /// Broken chunked framing.
    Malformed(&'static str),
    /// More bytes than the caller allows (manifests).
    TooLarge,
    /// Slower than `http.min_body_rate` over a window of the body timeout.
    TooSlow,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Io(e) => write!(f, "reading request body: {e}"),
            BodyError::Malformed(m) => write!(f, "malformed request body: {m}"),
            BodyError::TooLarge => write!(f, "request body too large"),
            BodyError::TooSlow => write!(f, "request body slower than the minimum rate"),
        }
    }
}

/// What a request body must keep up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Each read must bring bytes within this.
    pub timeout: Duration,
    /// Bytes per second over each `timeout` window; 0: no minimum.
    pub min_rate: u64,
}

pub struct Body<'c, T> {
    conn: &'c mut Conn<T>,
    kind: BodyKind,
    remaining: u64,
    chunked: Decoder,
    continue_pending: bool,
    timeout: Duration,
    rate: MinRate,
    received: u64,
    /// A read failed: what is left of the body is unknown, so it is never drained.
    failed: bool,
}

impl<'c, T: Transport> Body<'c, T> {
    pub fn new(conn: &'c mut Conn<T>, req: &Request, limits: BodyLimits) -> Body<'c, T> {
        let remaining = match req.body {
            BodyKind::Length(n) => n,
            BodyKind::Chunked => 0,
        };
        Body {
            conn,
            kind: req.body,
            remaining,
            chunked: Decoder::new(),
            continue_pending: req.expect_continue,
            timeout: limits.timeout,
            rate: MinRate::new(limits.min_rate, limits.timeout),
            received: 0,
            failed: false,
        }
    }

    /// The declared length, when the body is framed by Content-Length.
    pub fn declared_length(&self) -> Option<u64> {
        match self.kind {
            BodyKind::Length(n) => Some(n),
            BodyKind::Chunked => None,
        }
    }

    /// Bytes handed to the caller so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn is_done(&self) -> bool {
        match self.kind {
            BodyKind::Length(_) => self.remaining == 0,
            BodyKind::Chunked => self.chunked.is_done(),
        }
    }

    async fn send_continue(&mut self) -> Result<(), BodyError> {
        if self.continue_pending {
            self.continue_pending = false;
            self.conn
                .write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..], self.timeout)
                .await
                .map_err(BodyError::Io)?;
        }
        Ok(())
    }

    /// Appends up to `out`'s spare capacity of body bytes to `out`. Returns the number added;
    /// 0 means the body is complete (or `out` has no room, which callers avoid).
    pub async fn read_into<B: FillBuf>(&mut self, out: B) -> (Result<usize, BodyError>, B) {
        self.read_at_most(out, usize::MAX).await
    }

    /// As [`Body::read_into`], adding at most `max` bytes.
    pub async fn read_at_most<B: FillBuf>(
        &mut self,
        mut out: B,
        max: usize,
    ) -> (Result<usize, BodyError>, B) {
        if self.is_done() || out.room() == 0 || max == 0 {
            return (Ok(0), out);
        }
        if let Err(e) = self.send_continue().await {
            self.failed = true;
            return (Err(e), out);
        }
        self.rate.begin(Instant::now());
        let max = max.min(out.room());
        let result = match self.kind {
            BodyKind::Length(_) => {
                let want = self.remaining.min(max as u64) as usize;
                let (r, o) = self.read_data(out, want).await;
                out = o;
                r.inspect(|&n| self.remaining -= n as u64)
            }
            BodyKind::Chunked => {
                let (r, o) = self.read_chunked(out, max).await;
                out = o;
                r
            }
        };
        match result {
            Ok(n) => self.received += n as u64,
            Err(_) => self.failed = true,
        }
        (result, out)
    }

    /// Counts bytes taken from the connection (framing included) against the minimum rate.
    fn arrived(&mut self, n: usize) -> Result<(), BodyError> {
        if self.rate.record(n, Instant::now()) {
            Ok(())
        } else {
            Err(BodyError::TooSlow)
        }
    }

    /// Data bytes, at most `want` (more than 0, and no more than `out` has room for): first
    /// from the connection buffer, then straight from the socket into `out`.
    async fn read_data<B: FillBuf>(
        &mut self,
        mut out: B,
        want: usize,
    ) -> (Result<usize, BodyError>, B) {
        let buffered = self.conn.buffered();
        if !buffered.is_empty() {
            let n = buffered.len().min(want);
            out.extend_from_slice(&buffered[..n]);
            self.conn.consume(n);
            return (self.arrived(n).map(|()| n), out);
        }
        let (r, out) = self.conn.read_direct(out, want, self.timeout).await;
        let r = match r {
            Ok(0) => Err(BodyError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed before the body was complete",
            ))),
            Ok(n) => self.arrived(n).map(|()| n),
            Err(e) => Err(BodyError::Io(e)),
        };
        (r, out)
    }

    /// Chunk data, at most `max` bytes (more than 0, within `out`'s room), after whatever
    /// framing comes first. Data the connection has not buffered yet is read straight into
    /// `out`, as for a Content-Length body.
    async fn read_chunked<B: FillBuf>(
        &mut self,
        mut out: B,
        max: usize,
    ) -> (Result<usize, BodyError>, B) {
        loop {
            if self.chunked.is_done() {
                return (Ok(0), out);
            }
            let buffered = self.conn.buffered();
            if buffered.is_empty() {
                if let Some(left) = self.chunked.data_left() {
                    let want = left.min(max as u64) as usize;
                    let (r, o) = self.read_data(out, want).await;
                    if let Ok(n) = r {
                        self.chunked.data_read(n as u64);
                    }
                    return (r, o);
                }
            } else {
                let step = match self.chunked.feed_at_most(buffered, max) {
                    Ok(s) => s,
                    Err(m) => return (Err(BodyError::Malformed(m.0)), out),
                };
                if let Event::Data(r) = &step.event {
                    out.extend_from_slice(&buffered[r.clone()]);
                }
                self.conn.consume(step.consumed);
                if let Err(e) = self.arrived(step.consumed) {
                    return (Err(e), out);
                }
                match step.event {
                    Event::Data(r) => return (Ok(r.len()), out),
                    Event::End => return (Ok(0), out),
                    Event::NeedMore => {}
                }
            }
            // Framing is read into the connection buffer, and decoded from there.
            match self.conn.fill(self.timeout).await {
                Ok(0) => {
                    return (
                        Err(BodyError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "client closed inside a chunked body",
                        ))),
                        out,
                    )
                }
                Ok(_) => {}
                Err(e) => return (Err(BodyError::Io(e)), out),
            }
        }
    }

    /// Reads the whole body into memory, refusing more than `limit` bytes (manifests).
    pub async fn read_to_vec(&mut self, limit: usize) -> Result<Vec<u8>, BodyError> {
        if self.declared_length().is_some_and(|n| n > limit as u64) {
            return Err(BodyError::TooLarge);
        }
        let first = self.declared_length().map_or(16 * 1024, |n| n as usize);
        let mut out = Vec::with_capacity(first.min(limit) + 1);
        while !self.is_done() {
            if out.len() == out.capacity() {
                out.reserve(out.len().clamp(16 * 1024, 1024 * 1024));
            }
            let (r, o) = self.read_into(out).await;
            out = o;
            r?;
            if out.len() > limit {
                return Err(BodyError::TooLarge);
            }
        }
        Ok(out)
    }

    /// After the handler answered: reads and discards a small unread rest of the body so the
    /// connection can carry the next request. False means the connection must close (the rest
    /// is large, or unknown, or the client was never told to send it).
    pub async fn finish(mut self) -> bool {
        if self.failed || self.conn.is_broken() {
            // A read failed (a stall, a close, broken framing, too slow): what is left is
            // unknown, and waiting for it would hold the connection for another timeout.
            return false;
        }
        if self.is_done() {
            return true;
        }
        if self.continue_pending {
            // We never sent 100 Continue: the client may or may not send the body; closing is
            // the only unambiguous way on.
            return false;
        }
        if self.kind == BodyKind::Chunked || self.remaining > DRAIN_LIMIT {
            return false;
        }
        let mut scratch = Vec::with_capacity(16 * 1024);
        while !self.is_done() {
            scratch.clear();
            let (r, s) = self.read_into(scratch).await;
            scratch = s;
            if !matches!(r, Ok(n) if n > 0) {
                return false;
            }
        }
        !self.conn.is_broken()
    }
}
