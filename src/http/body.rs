//! Streaming request bodies with backpressure: the handler pulls bytes into its own buffer
//! when it is ready for them, so a 10 GB upload holds a chunk, never the blob. Handles
//! Content-Length and chunked framing and sends `100 Continue` only when the handler first
//! asks for bytes, so a request refused before its body never makes the client send it.

use super::conn::Conn;
use super::request::{BodyKind, Request};
use crate::buf::FillBuf;
use std::io;
use std::time::Duration;

/// Longest chunk-size line (with extensions) and trailer section we accept.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
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
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Io(e) => write!(f, "reading request body: {e}"),
            BodyError::Malformed(m) => write!(f, "malformed request body: {m}"),
            BodyError::TooLarge => write!(f, "request body too large"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailers until an empty line.
    Trailers,
    Done,
}

pub struct Body<'c> {
    conn: &'c mut Conn,
    kind: BodyKind,
    remaining: u64,
    chunked: Chunked,
    continue_pending: bool,
    timeout: Duration,
    received: u64,
}

impl<'c> Body<'c> {
    pub fn new(conn: &'c mut Conn, req: &Request, timeout: Duration) -> Body<'c> {
        let remaining = match req.body {
            BodyKind::Length(n) => n,
            BodyKind::Chunked => 0,
        };
        Body {
            conn,
            kind: req.body,
            remaining,
            chunked: Chunked::Size,
            continue_pending: req.expect_continue,
            timeout,
            received: 0,
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
            BodyKind::Chunked => self.chunked == Chunked::Done,
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
            return (Err(e), out);
        }
        let result = match self.kind {
            BodyKind::Length(_) => {
                let want = self.remaining.min(max as u64);
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
        if let Ok(n) = result {
            self.received += n as u64;
        }
        (result, out)
    }

    /// Data bytes, at most `want`: first from the connection buffer, then straight from the
    /// socket into `out`.
    async fn read_data<B: FillBuf>(
        &mut self,
        mut out: B,
        want: u64,
    ) -> (Result<usize, BodyError>, B) {
        let room = out.room() as u64;
        let limit = room.min(want) as usize;
        let buffered = self.conn.buffered();
        if !buffered.is_empty() {
            let n = buffered.len().min(limit);
            out.extend_from_slice(&buffered[..n]);
            self.conn.consume(n);
            return (Ok(n), out);
        }
        let (r, out) = self.conn.read_direct(out, limit, self.timeout).await;
        match r {
            Ok(0) => (
                Err(BodyError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed before the body was complete",
                ))),
                out,
            ),
            Ok(n) => (Ok(n), out),
            Err(e) => (Err(BodyError::Io(e)), out),
        }
    }

    async fn read_chunked<B: FillBuf>(
        &mut self,
        out: B,
        max: usize,
    ) -> (Result<usize, BodyError>, B) {
        loop {
            match self.chunked {
                Chunked::Done => return (Ok(0), out),
                Chunked::Data(left) => {
                    let (r, out) = self.read_data(out, left.min(max as u64)).await;
                    if let Ok(n) = r {
                        let left = left - n as u64;
                        self.chunked = if left == 0 {
                            Chunked::DataEnd
                        } else {
                            Chunked::Data(left)
                        };
                    }
                    return (r, out);
                }
                Chunked::Size => {
                    let line = match self.line(MAX_CHUNK_LINE).await {
                        Ok(l) => l,
                        Err(e) => return (Err(e), out),
                    };
                    match parse_chunk_size(&line) {
                        Some(0) => self.chunked = Chunked::Trailers,
                        Some(n) => self.chunked = Chunked::Data(n),
                        None => return (Err(BodyError::Malformed("invalid chunk size")), out),
                    }
                }
                Chunked::DataEnd => match self.line(2).await {
                    Ok(l) if l.is_empty() => self.chunked = Chunked::Size,
                    Ok(_) => {
                        return (
                            Err(BodyError::Malformed("chunk data longer than its size")),
                            out,
                        )
                    }
                    Err(e) => return (Err(e), out),
                },
                Chunked::Trailers => {
                    let mut total = 0usize;
                    loop {
                        match self.line(MAX_TRAILERS).await {
                            Ok(l) if l.is_empty() => break,
                            Ok(l) => {
                                total += l.len() + 2;
                                if total > MAX_TRAILERS {
                                    return (Err(BodyError::Malformed("trailers too large")), out);
                                }
                            }
                            Err(e) => return (Err(e), out),
                        }
                    }
                    self.chunked = Chunked::Done;
                }
            }
        }
    }

    /// One CRLF-terminated line from the connection buffer (without the CRLF).
    async fn line(&mut self, max: usize) -> Result<Vec<u8>, BodyError> {
        loop {
            let buffered = self.conn.buffered();
            if let Some(i) = buffered.windows(2).position(|w| w == b"\r\n") {
                let line = buffered[..i].to_vec();
                self.conn.consume(i + 2);
                return Ok(line);
            }
            if buffered.len() > max + 2 {
                return Err(BodyError::Malformed("line too long in chunked body"));
            }
            match self.conn.fill(self.timeout).await {
                Ok(0) => {
                    return Err(BodyError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "client closed inside a chunked body",
                    )))
                }
                Ok(_) => {}
                Err(e) => return Err(BodyError::Io(e)),
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
        if self.is_done() {
            return !self.conn.is_broken();
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

/// `1a;ext=1` -> 26. None for anything that is not hex digits followed by optional extensions.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or(&[])
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        let d = (b as char).to_digit(16)? as u64;
        n = n * 16 + d;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::parse_chunk_size;

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"0"), Some(0));
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"FF;name=value"), Some(255));
        assert_eq!(parse_chunk_size(b""), None);
        assert_eq!(parse_chunk_size(b"g"), None);
        assert_eq!(parse_chunk_size(b"-1"), None);
        assert_eq!(parse_chunk_size(b"ffffffffffffffffff"), None);
    }
}
