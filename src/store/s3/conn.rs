//! HTTP/1.1 (plain or TLS) to an S3 endpoint on the caller's monoio event loop: one request
//! at a time per connection, keep-alive connections parked per thread (a monoio socket
//! belongs to its loop). Requests are presigned URLs (rusty-s3 signs, this module moves
//! bytes), so nothing here knows SigV4 or S3; response heads are read by the shared
//! [`crate::http::response_head`] parser; errors are [`Failure`]s that say what the server
//! may have seen, for the backend to decide on a retry and to read in the store's terms.
//!
//! Never a hang: connecting (with the TLS handshake) is bounded by [`Timeouts::connect`], the
//! wait for an answer's first byte by [`Timeouts::first_byte`] (plus what the caller allows
//! for a slow server-side step), every later read or write by [`Timeouts::idle`]: a
//! [`Failure::Silent`]. Never a
//! short body passed off as whole: a connection that ends before the announced length, or
//! inside a chunked body, is a [`Failure::Down`] from [`Exchange::next_piece`].
//!
//! The endpoint's host is looked up when a connection is opened ([`super::resolve`]), so a
//! changed address is followed; parked connections older than [`MAX_PARKED`] are not reused
//! (servers close idle ones), and one that the server closed while parked is a
//! [`Failure::Stale`], which the backend sends again at once on a fresh connection.

use super::resolve::Resolver;
use crate::http::chunked::{Decoder, Event};
use crate::http::response_head::{parse_response_head, BodyKind, ResponseHead};
use crate::http::tls::TlsTransport;
use crate::http::transport::Transport;
use monoio::buf::SliceMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Connections parked per thread and endpoint.
const MAX_IDLE: usize = 16;
/// A parked connection is not reused after this long: S3 closes idle connections after
/// about 20 seconds, and a request sent on a closed one costs a round trip.
const MAX_PARKED: Duration = Duration::from_secs(15);
/// Bytes read from the socket at a time while the head is not complete.
const HEAD_READ: usize = 16 * 1024;

/// How long each step of a request may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting, the TLS handshake included (for each address tried).
    pub connect: Duration,
    /// From the request's last byte to the answer's first.
    pub first_byte: Duration,
    /// Any later read or write that makes no progress.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(3),
            first_byte: Duration::from_secs(30),
            idle: Duration::from_secs(30),
        }
    }
}

/// Why a request got no (whole) answer.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made (refused, unreachable, timed out, a failed lookup or TLS
    /// handshake): the server saw nothing of the request.
    Connect(String),
    /// A reused connection ended before any byte of the answer: the server closed it while
    /// it was parked, before reading the request.
    Stale(String),
    /// The connection broke after the request was (partly) sent: the server may or may not
    /// have acted on it.
    Down(String),
    /// The server took longer than a timeout allows to read, answer or go on answering.
    Silent(String),
    /// The server answered something that is not HTTP/1.1 as we read it.
    Protocol(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(m) => write!(f, "S3 unreachable: {m}"),
            Failure::Stale(m) | Failure::Down(m) => write!(f, "S3 connection lost: {m}"),
            Failure::Silent(m) => write!(f, "S3 too slow: {m}"),
            Failure::Protocol(m) => write!(f, "S3 answered badly: {m}"),
        }
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

/// Where requests go and how: the address book, TLS for `https`, the timeouts.
pub struct Endpoint {
    /// `scheme://host:port`: what parked connections are filed under.
    key: String,
    /// The `Host` header's value.
    authority: String,
    resolver: Resolver,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    timeouts: Timeouts,
}

impl Endpoint {
    /// For the endpoint `url` (`http://` or `https://`; `tls` is required for the latter).
    pub fn new(
        url: &Url,
        tls: Option<Arc<ClientConfig>>,
        timeouts: Timeouts,
    ) -> std::result::Result<Endpoint, String> {
        let host = url
            .host_str()
            .ok_or_else(|| format!("S3 endpoint {url}: no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("S3 endpoint {url}: no port"))?;
        let tls = match (url.scheme(), tls) {
            ("http", _) => None,
            ("https", Some(config)) => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(bare.to_string())
                    .map_err(|e| format!("S3 endpoint {url}: {e}"))?;
                Some((config, name))
            }
            (other, _) => return Err(format!("S3 endpoint {url}: scheme {other} not supported")),
        };
        let resolver =
            Resolver::new(host, port).map_err(|e| format!("S3 endpoint {url}: resolver: {e}"))?;
        Ok(Endpoint {
            key: format!("{}://{host}:{port}", url.scheme()),
            authority: format!("{host}:{port}"),
            resolver,
            tls,
            timeouts,
        })
    }

    /// Looks the host up with `resolver` instead (tests of a changing address).
    #[cfg(test)]
    pub fn set_resolver(&mut self, resolver: Resolver) {
        self.resolver = resolver;
    }

    /// A new connection: every address of the endpoint's host in turn, each within the
    /// connect timeout; the cached addresses are forgotten when none answered.
    async fn connect(&self) -> Result<Stream> {
        let addrs = self
            .resolver
            .addrs()
            .await
            .map_err(|e| Failure::Connect(format!("{}: {e}", self.key)))?;
        let mut last = String::new();
        for addr in addrs.iter() {
            let attempt = async {
                let stream = TcpStream::connect(*addr).await?;
                let _ = stream.set_nodelay(true);
                match &self.tls {
                    None => Ok::<_, io::Error>(Stream::Plain(stream)),
                    Some((config, name)) => {
                        let t = crate::http::tls::connect(stream, config.clone(), name.clone());
                        Ok(Stream::Tls(Box::new(t.await?)))
                    }
                }
            };
            match monoio::time::timeout(self.timeouts.connect, attempt).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = format!("connecting to {} ({addr}): {e}", self.key),
                Err(_) => last = format!("connecting to {} ({addr}) timed out", self.key),
            }
        }
        self.resolver.forget();
        Err(Failure::Connect(last))
    }
}

/// A connection's byte stream.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsTransport<ClientConnection>>),
}

impl Stream {
    async fn read(&mut self, buf: SliceMut<Vec<u8>>) -> (io::Result<usize>, SliceMut<Vec<u8>>) {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(t) => t.read(buf).await,
        }
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            Stream::Plain(s) => {
                let (r, buf) = s.write_all(buf).await;
                (r.map(|_| ()), buf)
            }
            Stream::Tls(t) => t.write_all(buf).await,
        }
    }
}

/// A parked connection: the endpoint it reaches, and since when it waits.
struct Parked {
    key: String,
    stream: Stream,
    since: Instant,
}

thread_local! {
    /// Keep-alive connections of this thread's loop.
    static IDLE: RefCell<Vec<Parked>> = const { RefCell::new(Vec::new()) };
}

/// How a response body is delimited, as it is being read.
#[derive(Debug, Clone)]
enum Framing {
    Length,
    Chunked(Decoder),
    UntilClose,
}

/// One request in flight on one connection: the head is sent with [`Exchange::start`], a body
/// written with [`Exchange::write`], the answer read with [`Exchange::response`] and then
/// [`Exchange::next_piece`]; the connection is parked for reuse only once the body was read
/// to its end, so a dropped exchange closes its socket and never leaves bytes for the next.
pub struct Exchange {
    key: String,
    stream: Option<Stream>,
    timeouts: Timeouts,
    /// The connection was parked before: an end before any answer byte is [`Failure::Stale`].
    reused: bool,
    /// Bytes read past the head, not yet handed out.
    buffered: Vec<u8>,
    framing: Framing,
    /// Body bytes not yet handed out (`u64::MAX` while unknown).
    left: u64,
    keep_alive: bool,
    head_only: bool,
}

impl Exchange {
    /// Sends the request head: `method` on `url` (presigned: its query carries the
    /// signature), the given extra headers, and a Content-Length when `body` is `Some`.
    /// `fresh`: never on a parked connection (for a request that must not be sent twice,
    /// where a parked connection's silent close would leave it unknown whether it arrived).
    pub async fn start(
        endpoint: &Endpoint,
        method: &str,
        url: &Url,
        headers: &[(&str, String)],
        body: Option<u64>,
        fresh: bool,
    ) -> Result<Exchange> {
        let mut head = format!("{method} {}", url.path());
        if let Some(q) = url.query() {
            head.push('?');
            head.push_str(q);
        }
        head.push_str(" HTTP/1.1\r\nhost: ");
        head.push_str(&endpoint.authority);
        head.push_str("\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(n) = body {
            head.push_str(&format!("content-length: {n}\r\n"));
        }
        head.push_str("\r\n");
        let head = head.into_bytes();
        let parked = if fresh { None } else { unpark(&endpoint.key) };
        let mut ex = Exchange {
            key: endpoint.key.clone(),
            reused: parked.is_some(),
            stream: parked,
            timeouts: endpoint.timeouts,
            buffered: Vec::new(),
            framing: Framing::Length,
            left: 0,
            keep_alive: true,
            head_only: method == "HEAD",
        };
        if ex.reused {
            // A write fails only if the close was seen already; then a fresh one is as good.
            if ex.write(&head).await.is_ok() {
                return Ok(ex);
            }
            ex.reused = false;
        }
        ex.stream = Some(endpoint.connect().await?);
        ex.write(&head).await?;
        Ok(ex)
    }

    /// Writes request bytes (the head, or a piece of the body).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        // monoio takes the buffer by value; a copy of at most a body piece.
        self.write_owned(bytes.to_vec()).await.map(drop)
    }

    /// Writes a buffer the caller owns, and gives it back for the next piece (a body read
    /// from a file goes to the socket without a copy).
    pub async fn write_owned(&mut self, buf: Vec<u8>) -> Result<Vec<u8>> {
        let stream = self.stream.as_mut().ok_or_else(closed)?;
        let failure = match monoio::time::timeout(self.timeouts.idle, stream.write_all(buf)).await {
            Ok((Ok(()), buf)) => return Ok(buf),
            Ok((Err(e), _)) => Failure::Down(format!("writing to {}: {e}", self.key)),
            Err(_) => Failure::Silent(format!("writing to {} timed out", self.key)),
        };
        self.stream = None;
        Err(failure)
    }

    /// Appends what the socket has (at most `max` bytes) to `buf`, waiting at most `wait`;
    /// 0 at end of stream.
    async fn read_into(
        &mut self,
        buf: Vec<u8>,
        max: usize,
        wait: Duration,
    ) -> Result<(usize, Vec<u8>)> {
        let stream = self.stream.as_mut().ok_or_else(closed)?;
        let mut buf = buf;
        let len = buf.len();
        buf.reserve(max);
        let cap = len + max;
        let failure =
            match monoio::time::timeout(wait, stream.read(SliceMut::new(buf, len, cap))).await {
                Ok((Ok(n), slice)) => return Ok((n, slice.into_inner())),
                Ok((Err(e), _)) => Failure::Down(format!("reading from {}: {e}", self.key)),
                Err(_) => Failure::Silent(format!("nothing from {} within {wait:?}", self.key)),
            };
        self.stream = None;
        Err(failure)
    }

    /// Reads the response head (after the whole request body was written), skipping interim
    /// 1xx heads. The first byte may take `first_byte` plus `allowance` (for a slow
    /// server-side step such as assembling a large multipart upload).
    pub async fn response(&mut self, allowance: Duration) -> Result<ResponseHead> {
        let mut buf = std::mem::take(&mut self.buffered);
        let mut wait = self.timeouts.first_byte.saturating_add(allowance);
        let mut seen_any = false;
        loop {
            let parsed = parse_response_head(&buf, self.head_only)
                .map_err(|e| Failure::Protocol(e.to_string()))?;
            if let Some((head, used)) = parsed {
                buf.drain(..used);
                if head.is_interim() {
                    continue;
                }
                self.left = match head.body {
                    BodyKind::None => 0,
                    BodyKind::Length(n) => n,
                    BodyKind::Chunked | BodyKind::UntilClose => u64::MAX,
                };
                self.framing = match head.body {
                    BodyKind::None | BodyKind::Length(_) => Framing::Length,
                    BodyKind::Chunked => Framing::Chunked(Decoder::new()),
                    BodyKind::UntilClose => Framing::UntilClose,
                };
                self.keep_alive = head.keep_alive;
                self.buffered = buf;
                return Ok(head);
            }
            if buf.len() > MAX_HEAD {
                return Err(Failure::Protocol("response head too large".into()));
            }
            let read = self.read_into(buf, HEAD_READ, wait).await;
            let stale = self.reused && !seen_any;
            let (n, b) = match read {
                Err(Failure::Down(m)) if stale => return Err(Failure::Stale(m)),
                other => other?,
            };
            buf = b;
            if n == 0 {
                self.stream = None;
                let m = format!("{} closed the connection before answering", self.key);
                return Err(if stale {
                    Failure::Stale(m)
                } else {
                    Failure::Down(m)
                });
            }
            seen_any = true;
            wait = self.timeouts.idle;
        }
    }

    /// The next piece of the response body, at most `max` bytes, `None` after the last; a
    /// body that ends before its end is an error, never a shorter body.
    pub async fn next_piece(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        if matches!(self.framing, Framing::Chunked(_)) {
            return self.next_chunked_piece(max).await;
        }
        if self.left == 0 {
            self.park();
            return Ok(None);
        }
        let want = (self.left.min(max as u64)) as usize;
        let mut piece = if self.buffered.len() > want {
            let rest = self.buffered.split_off(want);
            std::mem::replace(&mut self.buffered, rest)
        } else {
            std::mem::take(&mut self.buffered)
        };
        while piece.len() < want {
            let room = want - piece.len();
            let (n, p) = self.read_into(piece, room, self.timeouts.idle).await?;
            piece = p;
            if n == 0 {
                if matches!(self.framing, Framing::UntilClose) {
                    self.left = piece.len() as u64;
                    break;
                }
                self.stream = None;
                return Err(Failure::Down(format!(
                    "{} closed the connection {} bytes before the body's end",
                    self.key,
                    self.left - piece.len() as u64
                )));
            }
        }
        self.left -= piece.len() as u64;
        if self.left == 0 {
            self.park();
        }
        Ok((!piece.is_empty()).then_some(piece))
    }

    /// [`Exchange::next_piece`] of a chunked body: decoded out of `buffered` (S3 sends
    /// chunked only for small XML answers, so the copy is of little).
    async fn next_chunked_piece(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        let mut piece = Vec::new();
        while self.left != 0 && piece.len() < max {
            let Framing::Chunked(decoder) = &mut self.framing else {
                unreachable!("called for chunked bodies only")
            };
            let step = decoder
                .feed_at_most(&self.buffered, max - piece.len())
                .map_err(|e| Failure::Protocol(format!("chunked body: {e}")))?;
            let need_more = step.event == Event::NeedMore;
            match step.event {
                Event::Data(r) => piece.extend_from_slice(&self.buffered[r]),
                Event::End => self.left = 0,
                Event::NeedMore => {}
            }
            self.buffered.drain(..step.consumed);
            if self.left != 0 && need_more {
                let buf = std::mem::take(&mut self.buffered);
                let (n, buf) = self.read_into(buf, HEAD_READ, self.timeouts.idle).await?;
                self.buffered = buf;
                if n == 0 {
                    self.stream = None;
                    return Err(Failure::Down(format!(
                        "{} closed the connection inside a chunked body",
                        self.key
                    )));
                }
            }
        }
        if self.left == 0 {
            self.park();
        }
        Ok((!piece.is_empty()).then_some(piece))
    }

    /// The whole body, refused when longer than `limit` (S3's XML answers are small).
    pub async fn body(&mut self, limit: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(piece) = self.next_piece(64 * 1024).await? {
            out.extend_from_slice(&piece);
            if out.len() > limit {
                self.stream = None;
                return Err(Failure::Protocol(format!(
                    "a response body over {limit} bytes"
                )));
            }
        }
        Ok(out)
    }

    /// Returns the connection to this thread's idle list once its response was read whole.
    fn park(&mut self) {
        if !self.keep_alive || !self.buffered.is_empty() {
            self.stream = None;
            return;
        }
        if let Some(stream) = self.stream.take() {
            let key = std::mem::take(&mut self.key);
            IDLE.with(|idle| {
                let mut idle = idle.borrow_mut();
                if idle.iter().filter(|p| p.key == key).count() < MAX_IDLE {
                    idle.push(Parked {
                        key,
                        stream,
                        since: Instant::now(),
                    });
                }
            });
        }
    }
}

/// The most recently parked connection to `key` that is young enough; older ones are closed.
fn unpark(key: &str) -> Option<Stream> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.retain(|p| p.since.elapsed() < MAX_PARKED);
        let i = idle.iter().rposition(|p| p.key == key)?;
        Some(idle.swap_remove(i).stream)
    })
}

/// Closes this thread's parked connections: a loop's sockets must not outlive it, and tests
/// start a loop per case on the same thread (so do the start-up check and a background job's
/// S3 work).
pub fn close_idle() {
    IDLE.with(|idle| idle.borrow_mut().clear());
}

fn closed() -> Failure {
    Failure::Down("connection already closed".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// Answers one request on a 127.0.0.1 socket with `answer`, then closes.
    fn answer_once(answer: &'static [u8]) -> SocketAddr {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            s.write_all(answer).unwrap();
        });
        addr
    }

    pub fn endpoint(addr: SocketAddr, timeouts: Timeouts) -> Endpoint {
        let url = Url::parse(&format!("http://{addr}")).unwrap();
        Endpoint::new(&url, None, timeouts).unwrap()
    }

    async fn get(addr: SocketAddr) -> Result<(ResponseHead, Vec<Vec<u8>>)> {
        let url = Url::parse(&format!("http://{addr}/b/k?x=1")).unwrap();
        let endpoint = endpoint(addr, Timeouts::default());
        let mut ex = Exchange::start(&endpoint, "GET", &url, &[], None, false).await?;
        let head = ex.response(Duration::ZERO).await?;
        let mut pieces = Vec::new();
        while let Some(p) = ex.next_piece(4).await? {
            pieces.push(p);
        }
        close_idle();
        Ok((head, pieces))
    }

    #[test]
    fn bodies_come_in_bounded_pieces_and_a_cut_body_is_an_error() {
        let run = |answer| crate::testing::s3::run(get(answer_once(answer)));
        let (head, pieces) =
            run(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789").unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(pieces, [&b"0123"[..], b"4567", b"89"]);
        let (_, pieces) = run(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n6\r\ndefghi\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(pieces.concat(), b"abcdefghi");
        assert!(pieces.iter().all(|p| p.len() <= 4));
        let (head, pieces) =
            run(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        assert_eq!((head.status, pieces.concat()), (200, b"ok".to_vec()));
        let cut = run(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123");
        assert!(matches!(cut, Err(Failure::Down(_))), "{cut:?}");
        let cut = run(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
        assert!(matches!(cut, Err(Failure::Down(_))), "{cut:?}");
        let silent = run(b"");
        assert!(matches!(silent, Err(Failure::Down(_))), "{silent:?}");
        let bad = run(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert!(matches!(bad, Err(Failure::Protocol(_))), "{bad:?}");
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts (the kernel does, from its backlog) and never answers.
        let timeouts = Timeouts {
            first_byte: Duration::from_millis(300),
            ..Timeouts::default()
        };
        let started = Instant::now();
        let got = crate::testing::s3::run(async {
            let url = Url::parse(&format!("http://{addr}/b/k")).unwrap();
            let endpoint = endpoint(addr, timeouts);
            let mut ex = Exchange::start(&endpoint, "GET", &url, &[], None, false).await?;
            ex.response(Duration::ZERO).await
        });
        assert!(matches!(got, Err(Failure::Silent(_))), "{got:?}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "{took:?}");
        drop(listener);
    }
}
