//! HTTP/1.1 to an S3 endpoint on the caller's monoio event loop: one request at a time per
//! connection, keep-alive connections parked per thread (a monoio socket belongs to its
//! loop), every socket operation under a deadline so that a silent S3 never hangs a request.
//! Requests are presigned URLs (rusty-s3 signs, this module moves bytes), so nothing here
//! knows SigV4 or S3; errors are [`Failure`]s the backend reads in the store's terms.
//!
//! The caller names the address to connect to: resolving a host name is a blocking call, done
//! once at start by the backend, never here on a loop. Plain HTTP only so far.

use crate::http::chunked::{Decoder, Event};
use monoio::buf::SliceMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;
use url::Url;

/// Most headers an S3 response head carries (s3s-fs and moto send about ten).
const MAX_HEADERS: usize = 64;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Connections parked per thread and endpoint.
const MAX_IDLE: usize = 16;
/// Bytes read from the socket at a time while the head is not complete.
const HEAD_READ: usize = 16 * 1024;

/// Why a request got no answer: the backend maps these to `Unavailable` (retry) or `Io`.
#[derive(Debug)]
pub enum Failure {
    /// Connect, read or write failed or timed out: S3 is down or unreachable.
    Down(String),
    /// The server answered something that is not HTTP/1.1 as we read it.
    Protocol(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Down(m) => write!(f, "S3 unreachable: {m}"),
            Failure::Protocol(m) => write!(f, "S3 answered badly: {m}"),
        }
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

thread_local! {
    /// Keep-alive connections of this thread's loop, by the address they reach.
    static IDLE: RefCell<Vec<(String, TcpStream)>> = const { RefCell::new(Vec::new()) };
}

/// How a response body is delimited.
#[derive(Debug, Clone)]
enum Framing {
    Length(u64),
    Chunked(Decoder),
    UntilClose,
}

#[derive(Debug)]
pub struct Head {
    pub status: u16,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request in flight on one connection: the head is sent with [`Exchange::start`], a body
/// written with [`Exchange::write`], the answer read with [`Exchange::response`] and then
/// [`Exchange::next_piece`]; the connection is parked for reuse only once the body was read
/// to its end, so a dropped exchange closes its socket and never leaves bytes for the next.
pub struct Exchange {
    key: String,
    stream: Option<TcpStream>,
    timeout: Duration,
    /// Bytes read past the head, not yet handed out.
    buffered: Vec<u8>,
    framing: Framing,
    /// Body bytes not yet handed out (for `Length`).
    left: u64,
    keep_alive: bool,
    head_only: bool,
}

impl Exchange {
    /// Sends the request head: `method` on `url` (presigned: its query carries the
    /// signature), the given extra headers, and a Content-Length when `body` is `Some`.
    pub async fn start(
        addr: SocketAddr,
        method: &str,
        url: &Url,
        headers: &[(&str, String)],
        body: Option<u64>,
        timeout: Duration,
    ) -> Result<Exchange> {
        let host = url
            .host_str()
            .ok_or_else(|| Failure::Protocol("endpoint without host".into()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let key = addr.to_string();
        let mut head = format!("{method} {}", url.path());
        if let Some(q) = url.query() {
            head.push('?');
            head.push_str(q);
        }
        head.push_str(" HTTP/1.1\r\nhost: ");
        head.push_str(&format!("{host}:{port}"));
        head.push_str("\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(n) = body {
            head.push_str(&format!("content-length: {n}\r\n"));
        }
        head.push_str("\r\n");
        let head = head.into_bytes();
        // A parked connection may have been closed by the server meanwhile: the head is
        // written again on a fresh one if writing it on the parked one fails.
        let parked = IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let i = idle.iter().rposition(|(k, _)| *k == key)?;
            Some(idle.swap_remove(i).1)
        });
        let mut ex = Exchange {
            key,
            stream: None,
            timeout,
            buffered: Vec::new(),
            framing: Framing::Length(0),
            left: 0,
            keep_alive: true,
            head_only: method == "HEAD",
        };
        if let Some(stream) = parked {
            ex.stream = Some(stream);
            if ex.write(&head).await.is_ok() {
                return Ok(ex);
            }
        }
        let stream = match monoio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Failure::Down(format!("connecting to {}: {e}", ex.key))),
            Err(_) => return Err(Failure::Down(format!("connecting to {} timed out", ex.key))),
        };
        let _ = stream.set_nodelay(true);
        ex.stream = Some(stream);
        ex.write(&head).await?;
        Ok(ex)
    }

    /// Writes request bytes (the head, or a piece of the body).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let stream = self.stream.as_mut().ok_or_else(closed)?;
        // monoio takes the buffer by value; a copy of at most a body piece.
        let buf = bytes.to_vec();
        match monoio::time::timeout(self.timeout, stream.write_all(buf)).await {
            Ok((Ok(_), _)) => Ok(()),
            Ok((Err(e), _)) => {
                self.stream = None;
                Err(Failure::Down(format!("writing to {}: {e}", self.key)))
            }
            Err(_) => {
                self.stream = None;
                Err(Failure::Down(format!("writing to {} timed out", self.key)))
            }
        }
    }

    /// Appends what the socket has (at most `max` bytes) to `buf`; 0 at end of stream.
    async fn read_into(&mut self, buf: Vec<u8>, max: usize) -> Result<(usize, Vec<u8>)> {
        let stream = self.stream.as_mut().ok_or_else(closed)?;
        let mut buf = buf;
        let len = buf.len();
        buf.reserve(max);
        let cap = len + max;
        match monoio::time::timeout(self.timeout, stream.read(SliceMut::new(buf, len, cap))).await {
            Ok((Ok(n), slice)) => Ok((n, slice.into_inner())),
            Ok((Err(e), _)) => {
                self.stream = None;
                Err(Failure::Down(format!("reading from {}: {e}", self.key)))
            }
            Err(_) => {
                self.stream = None;
                Err(Failure::Down(format!(
                    "reading from {} timed out",
                    self.key
                )))
            }
        }
    }

    /// Reads the response head (after the whole request body was written).
    pub async fn response(&mut self) -> Result<Head> {
        let mut buf = std::mem::take(&mut self.buffered);
        loop {
            if let Some((head, used, framing, keep_alive)) = parse_head(&buf, self.head_only)? {
                buf.drain(..used);
                self.left = match framing {
                    Framing::Length(n) => n,
                    Framing::Chunked(_) | Framing::UntilClose => u64::MAX,
                };
                self.keep_alive = keep_alive && !matches!(framing, Framing::UntilClose);
                self.framing = framing;
                self.buffered = buf;
                return Ok(head);
            }
            if buf.len() > MAX_HEAD {
                return Err(Failure::Protocol("response head too large".into()));
            }
            let (n, b) = self.read_into(buf, HEAD_READ).await?;
            buf = b;
            if n == 0 {
                self.stream = None;
                return Err(Failure::Down(format!(
                    "{} closed the connection before answering",
                    self.key
                )));
            }
        }
    }

    /// The next piece of the response body, at most `max` bytes, `None` after the last.
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
            let (n, p) = self.read_into(piece, room).await?;
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
                let (n, buf) = self.read_into(buf, HEAD_READ).await?;
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
                if idle.iter().filter(|(k, _)| *k == key).count() < MAX_IDLE {
                    idle.push((key, stream));
                }
            });
        }
    }
}

/// Closes this thread's parked connections: a loop's sockets must not outlive it, and tests
/// start a loop per case on the same thread (as a background job does for its S3 work).
pub fn close_idle() {
    IDLE.with(|idle| idle.borrow_mut().clear());
}

fn closed() -> Failure {
    Failure::Down("connection already closed".into())
}

/// The head at the start of `buf`, with its length, the body's framing and whether the
/// connection may be reused; `None` while incomplete. Pure.
fn parse_head(buf: &[u8], head_only: bool) -> Result<Option<(Head, usize, Framing, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let used = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Failure::Protocol(format!("response head: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    let mut keep_alive = resp.version == Some(1);
    let mut framing = Framing::UntilClose;
    let mut chunked = false;
    let mut out = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        match name.as_str() {
            "content-length" => {
                let n = value
                    .parse()
                    .map_err(|_| Failure::Protocol(format!("content-length {value:?}")))?;
                framing = Framing::Length(n);
            }
            "transfer-encoding" if value.eq_ignore_ascii_case("chunked") => {
                chunked = true;
            }
            "transfer-encoding" if !value.eq_ignore_ascii_case("identity") => {
                return Err(Failure::Protocol(format!("transfer-encoding {value}")));
            }
            "connection" if value.eq_ignore_ascii_case("close") => keep_alive = false,
            _ => {}
        }
        out.push((name, value));
    }
    if chunked {
        // Chunked wins over a Content-Length (RFC 9112 section 6.3).
        framing = Framing::Chunked(Decoder::new());
    }
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        framing = Framing::Length(0);
    }
    let head = Head {
        status,
        headers: out,
    };
    Ok(Some((head, used, framing, keep_alive)))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    async fn get(addr: SocketAddr) -> Result<(Head, Vec<Vec<u8>>)> {
        let url = Url::parse(&format!("http://{addr}/b/k?x=1")).unwrap();
        let mut ex = Exchange::start(addr, "GET", &url, &[], None, Duration::from_secs(5)).await?;
        let head = ex.response().await?;
        let mut pieces = Vec::new();
        while let Some(p) = ex.next_piece(4).await? {
            pieces.push(p);
        }
        close_idle();
        Ok((head, pieces))
    }

    #[test]
    fn bodies_come_in_bounded_pieces_and_a_cut_body_is_an_error() {
        let run = |answer| super::super::harness::run(get(answer_once(answer)));
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
        let cut = run(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123");
        assert!(matches!(cut, Err(Failure::Down(_))), "{cut:?}");
        let cut = run(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
        assert!(matches!(cut, Err(Failure::Down(_))), "{cut:?}");
        let silent = run(b"");
        assert!(matches!(silent, Err(Failure::Down(_))), "{silent:?}");
    }

    #[test]
    fn heads_say_how_the_body_ends() {
        let (h, used, f, ka) = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\nhello",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.status, used, ka), (200, 49, true));
        assert!(matches!(f, Framing::Length(5)));
        assert_eq!(h.header("etag"), Some("\"x\""));
        let (_, _, f, _) = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert!(matches!(f, Framing::Length(0)), "a HEAD answer has no body");
        let (_, _, f, ka) = parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(matches!(f, Framing::UntilClose) && !ka);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-", false)
            .unwrap()
            .is_none());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        let (_, _, f, _) = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(f, Framing::Chunked(_)));
    }
}
