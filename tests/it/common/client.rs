//! A small HTTP/1.1 client of our own (no HTTP library between the tests and the wire, so the
//! tests see exactly what the server sends) and the assertions on its responses.

#![allow(dead_code)]

use super::*;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringyard::http::chunked;
use sha2::{Digest as _, Sha256, Sha512};

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// One keep-alive HTTP/1.1 connection with its own response parser. Reconnects when the server
/// closed the connection (detected before a request is sent, or, for idempotent requests, when
/// the connection turns out closed before any byte of the response).
pub struct Client {
    addr: SocketAddr,
    host: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// The last response announced a close: the next request opens a new connection.
    closing: bool,
    /// How many TCP connections this client opened so far.
    pub connections: usize,
    timeout: Duration,
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn is_conn_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected
    )
}

enum ReadError {
    /// The connection ended before the first byte of a response.
    ClosedBeforeResponse,
    Other(String),
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let mut c = Client {
            addr,
            host: addr.to_string(),
            stream: None,
            buf: Vec::new(),
            closing: false,
            connections: 0,
            timeout: IO_TIMEOUT,
        };
        c.reconnect();
        c
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops the current connection (if any) and opens a new one.
    pub fn reconnect(&mut self) {
        self.stream = None;
        self.buf.clear();
        self.closing = false;
        let s = TcpStream::connect(self.addr)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr));
        s.set_read_timeout(Some(self.timeout)).unwrap();
        s.set_write_timeout(Some(self.timeout)).unwrap();
        s.set_nodelay(true).unwrap();
        self.stream = Some(s);
        self.connections += 1;
    }

    /// Changes the read/write timeout of this connection (and of later reconnections).
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
        if let Some(s) = &self.stream {
            s.set_read_timeout(Some(t)).unwrap();
            s.set_write_timeout(Some(t)).unwrap();
        }
    }

    /// The raw stream, for tests that need socket-level control.
    pub fn stream(&mut self) -> &mut TcpStream {
        if self.stream.is_none() {
            self.reconnect();
        }
        self.stream.as_mut().unwrap()
    }

    /// Before reusing a connection: if the server closed it (or sent something unsolicited,
    /// e.g. a 408 before closing an idle connection), open a new one. Unsolicited bytes that are
    /// not followed by a close are a server bug (e.g. a body after a HEAD response): panic.
    fn ensure_fresh(&mut self) {
        if self.stream.is_none() || self.closing {
            self.reconnect();
            return;
        }
        let mut extra = std::mem::take(&mut self.buf);
        let mut closed = false;
        {
            let s = self.stream.as_mut().unwrap();
            s.set_nonblocking(true).unwrap();
            let mut tmp = [0u8; 8192];
            loop {
                match s.read(&mut tmp) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => extra.extend_from_slice(&tmp[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            s.set_nonblocking(false).unwrap();
        }
        if closed {
            self.reconnect();
            return;
        }
        if !extra.is_empty() {
            if extra.starts_with(b"HTTP/1.1 408") || extra.starts_with(b"HTTP/1.0 408") {
                self.reconnect();
                return;
            }
            panic!(
                "{} unexpected bytes on the connection before the next request (a body after \
                 HEAD/204/304, or a Content-Length that undercounts the body?): {:?}",
                extra.len(),
                String::from_utf8_lossy(&extra[..extra.len().min(400)])
            );
        }
    }

    /// `POST /token` with an OAuth2 form (`grant_type=...&...`), as docker's refresh does.
    pub fn post_token(&mut self, form: &str) -> Response {
        self.request(
            "POST",
            "/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form.as_bytes(),
        )
    }

    /// Sends one request and reads its final response (interim 1xx responses are skipped).
    /// Sets `Host`, and `Content-Length` when the body is non-empty or the method is
    /// PUT/POST/PATCH, unless `headers` carry `Content-Length` or `Transfer-Encoding` (then the
    /// body is sent as given, e.g. already chunk-encoded).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let idempotent = matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS");
        let head = method == "HEAD";
        let req = request_bytes(&self.host, method, path, headers, body);
        for attempt in 0..2 {
            self.ensure_fresh();
            let write_result = self.stream.as_mut().unwrap().write_all(&req);
            if let Err(e) = &write_result {
                if !is_conn_error(e) {
                    panic!("{method} {path}: write failed: {e}");
                }
                // The server may have answered early (e.g. 413) and closed: read what it sent.
            }
            match self.read_final(head) {
                Ok(resp) => return resp,
                Err(ReadError::ClosedBeforeResponse) if attempt == 0 && idempotent => {
                    self.reconnect();
                    continue;
                }
                Err(ReadError::ClosedBeforeResponse) => panic!(
                    "{method} {path}: the server closed the connection without a response{}",
                    match write_result {
                        Err(e) => format!(" (writing the request failed: {e})"),
                        Ok(()) => String::new(),
                    }
                ),
                Err(ReadError::Other(msg)) => panic!("{method} {path}: {msg}"),
            }
        }
        unreachable!()
    }

    fn read_final(&mut self, head: bool) -> Result<Response, ReadError> {
        loop {
            let r = self.read_one(head)?;
            if (100..200).contains(&r.status) && r.status != 101 {
                continue;
            }
            return Ok(r);
        }
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }
    pub fn head(&mut self, path: &str) -> Response {
        self.request("HEAD", path, &[], b"")
    }
    pub fn delete(&mut self, path: &str) -> Response {
        self.request("DELETE", path, &[], b"")
    }
    pub fn put(&mut self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.request("PUT", path, headers, body)
    }
    pub fn post(&mut self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.request("POST", path, headers, body)
    }
    pub fn patch(&mut self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.request("PATCH", path, headers, body)
    }

    /// Writes bytes as they are (reconnecting first if the server closed the connection).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        if self.stream.is_none() || self.closing {
            self.reconnect();
        }
        self.stream
            .as_mut()
            .unwrap()
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send_raw: {e}"));
    }

    /// Like [`Client::send_raw`] but reports a write failure instead of panicking.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.stream.is_none() || self.closing {
            self.reconnect();
        }
        self.stream.as_mut().unwrap().write_all(bytes)
    }

    /// Reads exactly one response, 1xx included; panics if none can be read.
    pub fn read_response(&mut self, head_request: bool) -> Response {
        match self.read_one(head_request) {
            Ok(r) => r,
            Err(ReadError::ClosedBeforeResponse) => {
                panic!("the server closed the connection without a response")
            }
            Err(ReadError::Other(m)) => panic!("{m}"),
        }
    }

    /// Reads one response; `Err` describes why there is none (closed, timeout, malformed).
    pub fn try_read_response(&mut self, head_request: bool) -> Result<Response, String> {
        match self.read_one(head_request) {
            Ok(r) => Ok(r),
            Err(ReadError::ClosedBeforeResponse) => {
                Err("connection closed before a response".to_string())
            }
            Err(ReadError::Other(m)) => Err(m),
        }
    }

    /// Half-closes the connection (no more request bytes).
    pub fn shutdown_write(&mut self) {
        if let Some(s) = &self.stream {
            let _ = s.shutdown(Shutdown::Write);
        }
    }

    /// Waits up to `within` for the server to close the connection. `Ok(elapsed)` on EOF or
    /// reset; `Err` if bytes arrived or the time ran out. Any bytes already buffered count as
    /// bytes received.
    pub fn wait_closed(&mut self, within: Duration) -> Result<Duration, String> {
        if !self.buf.is_empty() {
            return Err(format!(
                "unexpected bytes: {:?}",
                String::from_utf8_lossy(&self.buf)
            ));
        }
        let start = Instant::now();
        let s = match self.stream.as_mut() {
            Some(s) => s,
            None => return Ok(Duration::ZERO),
        };
        s.set_read_timeout(Some(within)).unwrap();
        let mut tmp = [0u8; 4096];
        let result = match s.read(&mut tmp) {
            Ok(0) => Ok(start.elapsed()),
            Ok(n) => Err(format!(
                "expected the connection to be closed, got {n} bytes: {:?}",
                String::from_utf8_lossy(&tmp[..n])
            )),
            Err(e) if is_conn_error(&e) => Ok(start.elapsed()),
            Err(e) => Err(format!(
                "the connection was not closed within {within:?}: {e}"
            )),
        };
        if let Some(s) = self.stream.as_mut() {
            let _ = s.set_read_timeout(Some(self.timeout));
        }
        if result.is_ok() {
            self.stream = None;
        }
        result
    }

    /// Reads more bytes into the buffer; Ok(0) on EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let s = match self.stream.as_mut() {
            Some(s) => s,
            None => return Ok(0),
        };
        let mut tmp = vec![0u8; 64 * 1024];
        // A read with a socket timeout fails with EINTR when the process is stopped and resumed
        // (signal(7)), even without handlers: that is no answer from the server, so read again.
        let n = loop {
            match s.read(&mut tmp) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn read_exact_buf(&mut self, n: usize, what: &str) -> Result<Vec<u8>, ReadError> {
        while self.buf.len() < n {
            match self.fill() {
                Ok(0) => {
                    return Err(ReadError::Other(format!(
                        "connection closed in {what}: got {} of {n} bytes",
                        self.buf.len()
                    )))
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(ReadError::Other(format!(
                        "reading {what}: {e} (got {} of {n} bytes)",
                        self.buf.len()
                    )))
                }
            }
        }
        let rest = self.buf.split_off(n);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// A chunked body, decoded as the server decodes request bodies; what follows it stays in
    /// the buffer for the next response.
    fn read_chunked(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut dec = chunked::Decoder::new();
        let mut body = Vec::new();
        loop {
            let step = dec
                .feed(&self.buf)
                .map_err(|m| ReadError::Other(format!("bad chunked body: {m}")))?;
            if let chunked::Event::Data(r) = &step.event {
                body.extend_from_slice(&self.buf[r.clone()]);
            }
            self.buf.drain(..step.consumed);
            match step.event {
                chunked::Event::End => return Ok(body),
                chunked::Event::Data(_) if !self.buf.is_empty() => continue,
                _ => {}
            }
            match self.fill() {
                Ok(0) => {
                    return Err(ReadError::Other(format!(
                        "connection closed in a chunked body after {} bytes",
                        body.len()
                    )))
                }
                Ok(_) => {}
                Err(e) => return Err(ReadError::Other(format!("reading a chunked body: {e}"))),
            }
        }
    }

    fn read_one(&mut self, head: bool) -> Result<Response, ReadError> {
        // Head: up to and including the blank line.
        let head_end = loop {
            if let Some(pos) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            if self.buf.len() > 1 << 20 {
                return Err(ReadError::Other("response head over 1 MiB".into()));
            }
            match self.fill() {
                Ok(0) => {
                    if self.buf.is_empty() {
                        self.stream = None;
                        return Err(ReadError::ClosedBeforeResponse);
                    }
                    return Err(ReadError::Other(format!(
                        "connection closed inside a response head: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    )));
                }
                Ok(_) => {}
                Err(e) if is_conn_error(&e) && self.buf.is_empty() => {
                    self.stream = None;
                    return Err(ReadError::ClosedBeforeResponse);
                }
                Err(e) => {
                    return Err(ReadError::Other(format!(
                        "reading a response head: {e} (have {:?})",
                        String::from_utf8_lossy(&self.buf)
                    )))
                }
            }
        };
        let head_bytes = self.read_exact_buf(head_end, "head")?;
        let text = String::from_utf8(head_bytes[..head_end - 4].to_vec()).map_err(|_| {
            ReadError::Other(format!(
                "response head is not UTF-8: {:?}",
                String::from_utf8_lossy(&head_bytes)
            ))
        })?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err(ReadError::Other(format!(
                "bad status line: {status_line:?}"
            )));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|s| (100..600).contains(s))
            .ok_or_else(|| ReadError::Other(format!("bad status line: {status_line:?}")))?;
        let mut headers = Vec::new();
        for line in lines {
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| ReadError::Other(format!("bad header line: {line:?}")))?;
            if k.is_empty() || k.contains(' ') {
                return Err(ReadError::Other(format!("bad header line: {line:?}")));
            }
            headers.push((k.to_string(), v.trim().to_string()));
        }
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let conn_tokens: Vec<String> = resp
            .header_all("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        let mut close = conn_tokens.iter().any(|t| t == "close")
            || (version == "HTTP/1.0" && !conn_tokens.iter().any(|t| t == "keep-alive"));

        let no_body = head || (100..200).contains(&status) || status == 204 || status == 304;
        if !no_body {
            let chunked = resp
                .header("transfer-encoding")
                .map(|v| v.to_ascii_lowercase().contains("chunked"))
                .unwrap_or(false);
            if chunked {
                resp.body = self.read_chunked()?;
            } else if let Some(cl) = resp.header("content-length") {
                let n: usize = cl
                    .parse()
                    .map_err(|_| ReadError::Other(format!("bad Content-Length {cl:?}")))?;
                resp.body = self.read_exact_buf(n, "body")?;
            } else {
                // Delimited by close.
                loop {
                    match self.fill() {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if is_conn_error(&e) => break,
                        Err(e) => {
                            return Err(ReadError::Other(format!(
                                "reading a close-delimited body: {e}"
                            )))
                        }
                    }
                }
                resp.body = std::mem::take(&mut self.buf);
                close = true;
            }
        }
        if close && !(100..200).contains(&status) {
            // The server will close (or has closed): the next request needs a new connection.
            // Keep the stream if the caller wants to observe the close itself.
            self.buf.clear();
            self.closing = true;
        }
        Ok(resp)
    }
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// All headers of that name (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        parse_json(&self.body, &format!("response {} body", self.status))
    }

    /// `errors[0].code` of the spec's error body; panics with the body if it is not that shape.
    pub fn error_code(&self) -> String {
        check_error_body(self);
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// The first header of that name (case-insensitive) in a parsed header list.
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `bytes` as JSON; panics with them if they are not JSON.
#[track_caller]
pub fn json(bytes: &[u8]) -> serde_json::Value {
    parse_json(bytes, "bytes")
}

#[track_caller]
fn parse_json(bytes: &[u8], what: &str) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{what}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// The last `n` bytes of `s` (fewer, to start on a character boundary).
pub fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// How long until the server ends a connection that stays as `c` left it; panics if that is
/// not within `within`.
pub fn time_to_close(c: &mut Client, within: Duration) -> Duration {
    let start = Instant::now();
    c.set_timeout(within);
    match c.try_read_response(false) {
        Ok(r) => {
            // A timeout may be answered (408) before the close.
            assert!(
                r.status == 408 || r.status == 400,
                "got {} {:?}",
                r.status,
                r.text()
            );
            check_error_body(&r);
            c.wait_closed(within).expect("closed after the answer");
        }
        Err(e) => assert!(e.contains("closed"), "expected a close, got: {e}"),
    }
    start.elapsed()
}

/// Panics unless `r` has the OCI error shape: `Content-Type: application/json` and a body
/// `{"errors":[{"code","message","detail"}, ...]}` with a non-empty list whose codes are
/// uppercase letters and underscores.
pub fn check_error_body(r: &Response) {
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.to_ascii_lowercase().starts_with("application/json"),
        "error response {} must have Content-Type application/json, got {:?}; body {:?}",
        r.status,
        ct,
        r.text()
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "error response {} body is not JSON ({e}): {:?}",
            r.status,
            r.text()
        )
    });
    let errors = v
        .get("errors")
        .and_then(|e| e.as_array())
        .unwrap_or_else(|| panic!("error body without an `errors` array: {v}"));
    assert!(
        !errors.is_empty(),
        "error body with an empty `errors` list: {v}"
    );
    for e in errors {
        let obj = e
            .as_object()
            .unwrap_or_else(|| panic!("error entry is not an object: {v}"));
        let code = obj
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or_else(|| panic!("error entry without a string `code`: {v}"));
        assert!(
            !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
            "error code must be uppercase letters and underscores: {code:?}"
        );
        assert!(
            obj.get("message").map(|m| m.is_string()).unwrap_or(false),
            "error entry without a string `message`: {v}"
        );
        assert!(
            obj.contains_key("detail"),
            "error entry without `detail`: {v}"
        );
    }
}

/// Asserts an error response: exact status, the spec's error shape (see [`check_error_body`]),
/// and `errors[0].code` one of `codes`.
#[track_caller]
pub fn assert_error(r: &Response, status: u16, codes: &[&str]) {
    assert_eq!(
        r.status,
        status,
        "expected status {status} with code {codes:?}, got {} {:?}; headers {:?}",
        r.status,
        r.text(),
        r.headers
    );
    let code = r.error_code();
    assert!(
        codes.contains(&code.as_str()),
        "expected error code {codes:?} (status {status}), got {code}: {}",
        r.text()
    );
}

/// Asserts the status of a HEAD error response (which carries no body).
#[track_caller]
pub fn assert_head_status(r: &Response, status: u16) {
    assert_eq!(r.status, status, "HEAD: headers {:?}", r.headers);
    assert!(r.body.is_empty());
}

/// Asserts a status, printing the body and headers on failure.
#[track_caller]
pub fn assert_status(r: &Response, status: u16) {
    assert_eq!(
        r.status,
        status,
        "unexpected status; body {:?}; headers {:?}",
        r.text(),
        r.headers
    );
}

/// The header's value, panicking with the response if it is missing.
#[track_caller]
pub fn must_header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.header(name).unwrap_or_else(|| {
        panic!(
            "response {} lacks header {name}; headers {:?}; body {:?}",
            r.status,
            r.headers,
            r.text()
        )
    })
}
