//! One keep-alive HTTP/1.1 connection on a monoio event loop: connects lazily, reconnects when
//! the server closed it, writes request heads (and bodies) from a reusable buffer, and streams
//! response bodies through a reusable read buffer into a `Sink`. Every request runs against a
//! deadline; a timed-out or broken connection is dropped and the next request reconnects.

use super::head::{parse_response_head, BodyKind, ResponseHead};
use super::request::format_head;
use super::sink::Sink;
use super::tls::{Session, CIPHER_BUF};
use crate::error::{Error, Kind, Result};
use crate::url::Target;
use monoio::buf::SliceMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use ringyard::http::chunked::{Decoder, Event};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Read buffer of a connection that only sees small responses.
const SMALL_BUF: usize = 64 * 1024;
/// Read buffer once a large body was seen: fewer, larger reads, but small enough that the
/// buffers of 16 streams stay in the CPU caches. Measured on 16 GETs of a 1 GiB blob: 1 MiB
/// and 4 MiB buffers were 25-45% slower than 256 KiB, and 128 KiB about 8% faster.
const LARGE_BUF: usize = 128 * 1024;
/// Bytes per write of a streamed request body.
pub const WRITE_CHUNK: usize = 1024 * 1024;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// A connection idle longer than this is checked for a close by the server before reuse.
const STALE_CHECK_AFTER: Duration = Duration::from_millis(200);
/// Lowest transfer rate a request deadline allows for: every request gets `--timeout` plus
/// its body size at this rate, so a 1 GiB blob is not cut off by a timeout meant for manifests.
pub const MIN_RATE_BYTES_PER_S: u64 = 16 * 1024 * 1024;

/// Extra time a body of `bytes` is allowed on top of the base timeout.
pub fn allowance(bytes: u64) -> Duration {
    Duration::from_millis(bytes.saturating_mul(1000) / MIN_RATE_BYTES_PER_S)
}

/// A request body produced on the fly: `fill(buf, offset)` writes the body bytes
/// `offset..offset + buf.len()` into `buf` (and may hash them on the way).
pub trait BodySource {
    fn fill(&mut self, buf: &mut [u8], offset: u64);
}

pub enum Body<'a> {
    Empty,
    /// No body and no Content-Length header (GET, HEAD).
    None,
    Bytes(&'a [u8]),
    Stream(u64, &'a mut dyn BodySource),
}

impl Body<'_> {
    fn len(&self) -> Option<u64> {
        match self {
            Body::None => None,
            Body::Empty => Some(0),
            Body::Bytes(b) => Some(b.len() as u64),
            Body::Stream(n, _) => Some(*n),
        }
    }
}

pub struct Conn {
    target: Target,
    stream: Option<TcpStream>,
    /// The TLS state over `stream` for an https target.
    tls: Option<Box<Session>>,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    /// Responses completed on the current stream.
    served: u64,
    idle_since: Instant,
    /// TCP connects made (the first one included).
    pub connects: u64,
}

/// How a failed exchange ended, to decide whether a retry is safe.
struct Failure {
    err: Error,
    /// Nothing of a response arrived on a reused connection: the server most likely closed
    /// it while idle, and an idempotent request may be sent again on a new one.
    retryable: bool,
}

impl From<Error> for Failure {
    fn from(err: Error) -> Failure {
        Failure {
            err,
            retryable: false,
        }
    }
}

/// A TLS failure: the connection cannot go on.
fn tls_error(msg: String) -> Error {
    Error::new(Kind::Protocol, msg)
}

impl Conn {
    /// Drops the connection after a request (the handshake-per-request workload).
    pub fn close(&mut self) {
        self.drop_stream();
    }

    pub fn new(target: Target) -> Conn {
        Conn {
            target,
            stream: None,
            tls: None,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
            served: 0,
            idle_since: Instant::now(),
            connects: 0,
        }
    }

    pub fn authority(&self) -> &str {
        &self.target.authority
    }

    /// Sends one request and reads its response; the body goes into `sink`. A request that
    /// fails on a reused connection before any response byte (the server closed it while
    /// idle) is sent once more on a new connection if it is GET or HEAD, as HTTP clients do.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        mut body: Body<'_>,
        sink: &mut Sink,
        timeout: Duration,
    ) -> Result<ResponseHead> {
        let idempotent = method == "GET" || method == "HEAD";
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .exchange(method, target, headers, &mut body, sink, timeout)
                .await
            {
                Ok(head) => return Ok(head),
                Err(f) => {
                    self.drop_stream();
                    if f.retryable && idempotent && tries == 1 {
                        continue;
                    }
                    return Err(f.err.context(&format!("{method} {target}")));
                }
            }
        }
    }

    fn drop_stream(&mut self) {
        self.stream = None;
        self.tls = None;
        self.rbuf.clear();
        self.rpos = 0;
        self.served = 0;
    }

    async fn exchange(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &mut Body<'_>,
        sink: &mut Sink,
        timeout: Duration,
    ) -> std::result::Result<ResponseHead, Failure> {
        let start = Instant::now();
        let mut deadline = start + timeout + allowance(body.len().unwrap_or(0));
        self.ensure_connected(deadline).await?;
        let reused = self.served > 0;

        let mut wbuf = std::mem::take(&mut self.wbuf);
        wbuf.clear();
        format_head(
            &mut wbuf,
            method,
            target,
            &self.target.authority,
            headers,
            body.len(),
        );
        let sent = match body {
            Body::None | Body::Empty => self.write(wbuf, deadline).await,
            Body::Bytes(b) => {
                wbuf.extend_from_slice(b);
                self.write(wbuf, deadline).await
            }
            Body::Stream(len, source) => {
                self.write_stream(wbuf, *len, &mut **source, deadline).await
            }
        };
        match sent {
            Ok(buf) => self.wbuf = buf,
            Err(e) => {
                // The server may have answered early (an error) and closed: report its status.
                if e.kind != Kind::Io {
                    return Err(e.into());
                }
                if let Ok(head) = self
                    .read_head(method == "HEAD", Instant::now() + Duration::from_secs(2))
                    .await
                {
                    return Err(Error::new(
                        Kind::Status,
                        format!(
                            "HTTP {} while sending the request body ({})",
                            head.status, e.msg
                        ),
                    )
                    .into());
                }
                return Err(Failure {
                    retryable: reused && e.kind == Kind::Io,
                    err: e,
                });
            }
        }

        let head = match self.read_head(method == "HEAD", deadline).await {
            Ok(h) => h,
            Err(e) => {
                let nothing = self.rpos == 0 && self.rbuf.is_empty();
                return Err(Failure {
                    retryable: reused && nothing && e.kind == Kind::Io,
                    err: e,
                });
            }
        };
        if let BodyKind::Length(n) = head.body {
            deadline += allowance(n);
            if n > SMALL_BUF as u64 && self.rbuf.capacity() < LARGE_BUF {
                self.rbuf.reserve(LARGE_BUF - self.rbuf.len());
            }
        }
        self.read_body(&head, sink, deadline).await?;
        self.served += 1;
        self.idle_since = Instant::now();
        if !head.keep_alive {
            self.drop_stream();
        }
        Ok(head)
    }

    async fn ensure_connected(&mut self, deadline: Instant) -> Result<()> {
        if self.stream.is_some()
            && self.idle_since.elapsed() > STALE_CHECK_AFTER
            && self.closed_by_peer()
        {
            self.drop_stream();
        }
        if self.stream.is_some() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let stream =
            match monoio::time::timeout(left, TcpStream::connect_addr(self.target.addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(Error::new(
                        Kind::Connect,
                        format!("connect to {}: {e}", self.target.addr),
                    ))
                }
                Err(_) => {
                    return Err(Error::new(
                        Kind::Connect,
                        format!("connect to {} timed out", self.target.addr),
                    ))
                }
            };
        let _ = stream.set_nodelay(true);
        self.connects += 1;
        self.stream = Some(stream);
        if let Some(t) = &self.target.tls {
            let session = t.connect().map_err(|e| Error::new(Kind::Connect, e))?;
            self.tls = Some(Box::new(session));
            if let Err(e) = self.handshake(deadline).await {
                self.drop_stream();
                return Err(e);
            }
        }
        self.rbuf.clear();
        self.rpos = 0;
        self.served = 0;
        if self.rbuf.capacity() < SMALL_BUF {
            self.rbuf.reserve(SMALL_BUF);
        }
        Ok(())
    }

    /// Non-blocking peek: end of stream, an error or unsolicited bytes (a 408 before a close)
    /// all mean the connection cannot carry another request.
    fn closed_by_peer(&self) -> bool {
        let Some(s) = &self.stream else { return true };
        let mut b = [0u8; 1];
        // SAFETY: recv into a one-byte stack buffer on a descriptor owned by `s`.
        let n = unsafe {
            libc::recv(
                s.as_raw_fd(),
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return e.kind() != std::io::ErrorKind::WouldBlock;
        }
        true
    }

    /// Drives the TLS handshake to its end (the server's certificate checked by rustls).
    async fn handshake(&mut self, deadline: Instant) -> Result<()> {
        loop {
            self.tls_flush(deadline).await?;
            let Some(tls) = self.tls.as_mut() else {
                return Err(Error::new(Kind::Io, "not connected"));
            };
            if !tls.conn.is_handshaking() {
                return Ok(());
            }
            if !tls.feed().map_err(tls_error)? && self.read_cipher(deadline).await? == 0 {
                return Err(Error::new(
                    Kind::Connect,
                    "TLS: the server closed the connection during the handshake",
                ));
            }
        }
    }

    /// Sends whatever ciphertext rustls has queued.
    async fn tls_flush(&mut self, deadline: Instant) -> Result<()> {
        let (Some(stream), Some(tls)) = (self.stream.as_mut(), self.tls.as_mut()) else {
            return Err(Error::new(Kind::Io, "not connected"));
        };
        while tls.conn.wants_write() {
            let mut out = std::mem::take(&mut tls.out);
            out.clear();
            tls.conn.write_tls(&mut out).map_err(Error::io)?;
            let left = deadline.saturating_duration_since(Instant::now());
            match monoio::time::timeout(left, stream.write_all(out)).await {
                Ok((Ok(_), out)) => tls.out = out,
                Ok((Err(e), _)) => return Err(Error::io(e)),
                Err(_) => return Err(Error::new(Kind::Timeout, "timed out while sending")),
            }
        }
        Ok(())
    }

    /// Reads ciphertext from the socket into the TLS session's buffer. Ok(0) is end of stream.
    async fn read_cipher(&mut self, deadline: Instant) -> Result<usize> {
        let (Some(stream), Some(tls)) = (self.stream.as_mut(), self.tls.as_mut()) else {
            return Err(Error::new(Kind::Io, "not connected"));
        };
        let mut buf = std::mem::take(&mut tls.cipher);
        buf.clear();
        tls.pos = 0;
        if buf.capacity() < CIPHER_BUF {
            buf.reserve(CIPHER_BUF);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, stream.read(buf)).await {
            Ok((r, buf)) => {
                tls.cipher = buf;
                r.map_err(Error::io)
            }
            Err(_) => Err(Error::new(
                Kind::Timeout,
                "request timed out waiting for the response",
            )),
        }
    }

    /// Reads plaintext into `rbuf` after its bytes: what rustls has decrypted, else more
    /// ciphertext fed to it. Ok(0) is end of stream.
    async fn fill_tls(&mut self, deadline: Instant) -> Result<usize> {
        loop {
            let Some(tls) = self.tls.as_mut() else {
                return Err(Error::new(Kind::Io, "not connected"));
            };
            let ready = tls
                .conn
                .process_new_packets()
                .map_err(|e| tls_error(format!("TLS: {e}")))?
                .plaintext_bytes_to_read();
            if ready > 0 {
                // Zeroed only as far as rustls will write.
                let at = self.rbuf.len();
                let n = ready.min(self.rbuf.capacity() - at);
                self.rbuf.resize(at + n, 0);
                let got = std::io::Read::read(&mut tls.conn.reader(), &mut self.rbuf[at..]);
                let got = got.map_err(Error::io)?;
                self.rbuf.truncate(at + got);
                return Ok(got);
            }
            if tls.feed().map_err(tls_error)? {
                continue;
            }
            if self.read_cipher(deadline).await? == 0 {
                return Ok(0);
            }
        }
    }

    async fn write(&mut self, buf: Vec<u8>, deadline: Instant) -> Result<Vec<u8>> {
        if let Some(tls) = self.tls.as_mut() {
            std::io::Write::write_all(&mut tls.conn.writer(), &buf).map_err(Error::io)?;
            self.tls_flush(deadline).await?;
            return Ok(buf);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(Error::new(Kind::Io, "not connected"));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, stream.write_all(buf)).await {
            Ok((Ok(_), buf)) => Ok(buf),
            Ok((Err(e), _)) => Err(Error::io(e)),
            Err(_) => Err(Error::new(Kind::Timeout, "request timed out while sending")),
        }
    }

    /// Writes the head and then `len` body bytes from `source`, `WRITE_CHUNK` at a time; the
    /// first chunk travels with the head.
    async fn write_stream(
        &mut self,
        mut buf: Vec<u8>,
        len: u64,
        source: &mut dyn BodySource,
        deadline: Instant,
    ) -> Result<Vec<u8>> {
        let mut offset = 0u64;
        let mut first = true;
        while first || offset < len {
            if !first {
                buf.clear();
            }
            first = false;
            let n = (len - offset).min(WRITE_CHUNK as u64) as usize;
            let at = buf.len();
            buf.resize(at + n, 0);
            source.fill(&mut buf[at..], offset);
            offset += n as u64;
            buf = self.write(buf, deadline).await?;
        }
        Ok(buf)
    }

    /// Reads more bytes after the buffered ones. Ok(0) is end of stream.
    async fn fill(&mut self, deadline: Instant) -> Result<usize> {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        } else if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(SMALL_BUF);
            }
        }
        if self.tls.is_some() {
            return self.fill_tls(deadline).await;
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(Error::new(Kind::Io, "not connected"));
        };
        let buf = std::mem::take(&mut self.rbuf);
        let (len, cap) = (buf.len(), buf.capacity());
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, stream.read(SliceMut::new(buf, len, cap))).await {
            Ok((r, slice)) => {
                self.rbuf = slice.into_inner();
                r.map_err(Error::io)
            }
            Err(_) => {
                // The cancelled read kept the buffer; the connection is dropped by the caller.
                self.rpos = 0;
                Err(Error::new(
                    Kind::Timeout,
                    "request timed out waiting for the response",
                ))
            }
        }
    }

    async fn read_head(&mut self, head_request: bool, deadline: Instant) -> Result<ResponseHead> {
        loop {
            match parse_response_head(&self.rbuf[self.rpos..], head_request)? {
                Some((head, n)) => {
                    self.rpos += n;
                    if (100..200).contains(&head.status) && head.status != 101 {
                        continue; // interim response (100 Continue): the real one follows
                    }
                    return Ok(head);
                }
                None => {
                    if self.rbuf.len() - self.rpos > MAX_HEAD {
                        return Err(Error::protocol("response head too large"));
                    }
                    if self.fill(deadline).await? == 0 {
                        return Err(Error::new(
                            Kind::Io,
                            "connection closed before a complete response head",
                        ));
                    }
                }
            }
        }
    }

    async fn read_body(
        &mut self,
        head: &ResponseHead,
        sink: &mut Sink,
        deadline: Instant,
    ) -> Result<()> {
        match head.body {
            BodyKind::None => Ok(()),
            BodyKind::Length(n) => {
                let mut left = n;
                while left > 0 {
                    if self.rpos == self.rbuf.len() && self.fill(deadline).await? == 0 {
                        return Err(Error::new(
                            Kind::Size,
                            format!(
                                "short body: {} of {n} bytes before the connection closed",
                                n - left
                            ),
                        ));
                    }
                    let avail = &self.rbuf[self.rpos..];
                    let take = avail.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    sink.feed(&avail[..take])?;
                    self.rpos += take;
                    left -= take as u64;
                }
                Ok(())
            }
            BodyKind::Chunked => {
                let mut dec = Decoder::new();
                loop {
                    let avail = &self.rbuf[self.rpos..];
                    let step = dec
                        .feed(avail)
                        .map_err(|m| Error::protocol(format!("chunked body: {m}")))?;
                    if let Event::Data(r) = &step.event {
                        sink.feed(&avail[r.clone()])?;
                    }
                    self.rpos += step.consumed;
                    if step.event == Event::End {
                        return Ok(());
                    }
                    if self.rpos == self.rbuf.len() && self.fill(deadline).await? == 0 {
                        return Err(Error::new(Kind::Size, "chunked body cut short by a close"));
                    }
                }
            }
            BodyKind::UntilClose => {
                loop {
                    if self.rpos < self.rbuf.len() {
                        sink.feed(&self.rbuf[self.rpos..])?;
                        self.rpos = self.rbuf.len();
                    }
                    if self.fill(deadline).await? == 0 {
                        break;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A server answering each request on a connection with `responses[i]` (cycling), then
    /// closing the connection if `close_after_each`.
    fn server(responses: Vec<&'static [u8]>, close_after_each: bool) -> Target {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut i = 0;
            for c in l.incoming().take(8) {
                let mut c = c.unwrap();
                let mut buf = Vec::new();
                loop {
                    let mut b = [0u8; 4096];
                    let n = match c.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&b[..n]);
                    while let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..p + 4);
                        let _ = c.write_all(responses[i % responses.len()]);
                        i += 1;
                        if close_after_each {
                            break;
                        }
                    }
                    if close_after_each {
                        break;
                    }
                }
            }
        });
        Target {
            authority: addr.to_string(),
            addr,
            tls: None,
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn keep_alive_lengths_and_chunks() {
        let t = server(
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
            ],
            false,
        );
        block_on(async move {
            let mut c = Conn::new(t);
            let to = Duration::from_secs(5);
            let mut s = Sink::collect(100, true);
            let h = c
                .request("GET", "/a", &[], Body::None, &mut s, to)
                .await
                .unwrap();
            assert_eq!((h.status, s.take_body()), (200, b"hello".to_vec()));
            let mut s = Sink::collect(100, false);
            c.request("GET", "/b", &[], Body::None, &mut s, to)
                .await
                .unwrap();
            assert_eq!(s.take_body(), b"abc");
            let mut s = Sink::count();
            let h = c
                .request("PUT", "/c", &[], Body::Bytes(b"xyz"), &mut s, to)
                .await
                .unwrap();
            assert_eq!((h.status, s.bytes), (404, 2));
            assert_eq!(c.connects, 1);
        });
    }

    #[test]
    fn reconnects_after_a_server_close() {
        let t = server(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
            true,
        );
        block_on(async move {
            let mut c = Conn::new(t);
            let to = Duration::from_secs(5);
            for _ in 0..3 {
                let mut s = Sink::count();
                c.request("GET", "/", &[], Body::None, &mut s, to)
                    .await
                    .unwrap();
            }
            // Idle long enough for the peek check before reuse.
            monoio::time::sleep(Duration::from_millis(300)).await;
            let mut s = Sink::count();
            c.request("HEAD", "/", &[], Body::None, &mut s, to)
                .await
                .unwrap();
            assert_eq!(c.connects, 4);
        });
    }

    #[test]
    fn short_body_is_a_size_error() {
        let t = server(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
            true,
        );
        block_on(async move {
            let mut c = Conn::new(t);
            let mut s = Sink::count();
            let e = c
                .request("GET", "/", &[], Body::None, &mut s, Duration::from_secs(5))
                .await
                .unwrap_err();
            assert_eq!(e.kind, Kind::Size);
        });
    }

    #[test]
    fn allowance_scales_with_size() {
        assert_eq!(allowance(0), Duration::ZERO);
        assert_eq!(allowance(1 << 30), Duration::from_secs(64));
    }
}
