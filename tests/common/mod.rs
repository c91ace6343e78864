//! Shared harness for the integration tests: starts the real `ringyard` binary on a free port and
//! talks to it over plain TCP with a small HTTP/1.1 client of our own (no HTTP library between the
//! tests and the wire, so the tests see exactly what the server sends: status line, headers,
//! chunked or length-delimited bodies, 1xx interim responses, connection closes).
//!
//! Every test file includes this module with `mod common;`; each uses a subset of it.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringyard::http::chunked;
use sha2::{Digest as _, Sha256, Sha512};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// A running `ringyard` process. Dropping it kills the process (SIGKILL) if it still runs.
pub struct Server {
    pub addr: SocketAddr,
    /// The data directory (empty for [`Server::start_args`], which passes arguments verbatim).
    pub root: PathBuf,
    child: Option<Child>,
    _tempdir: Option<tempfile::TempDir>,
    stderr: Arc<Mutex<String>>,
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringyard")
}

/// The socket addresses a "listening on ..." log line names (`None` for any other line).
pub fn parse_listening(line: &str) -> Option<Vec<SocketAddr>> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let addrs: Vec<SocketAddr> = rest
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|t| t.trim_matches(|c: char| c == '(' || c == ')' || c == ';' || c == '"'))
        .filter_map(|t| t.parse().ok())
        .collect();
    if addrs.is_empty() {
        None
    } else {
        Some(addrs)
    }
}

impl Server {
    /// A server on a fresh temporary root: `serve --listen 127.0.0.1:0 --root ROOT --workers 2`.
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("create temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("create root");
        let mut s = Server::start_with(&root, &[]);
        s._tempdir = Some(dir);
        s
    }

    /// Like [`Server::start`] (a fresh temporary root, deleted with the Server) with `extra_args`
    /// appended.
    pub fn start_in_temp(extra_args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("create temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("create root");
        let mut s = Server::start_with(&root, extra_args);
        s._tempdir = Some(dir);
        s
    }

    /// A server on `root` (not deleted by this Server), `extra_args` appended after
    /// `serve --listen 127.0.0.1:0 --root ROOT --workers 2`.
    pub fn start_with(root: &Path, extra_args: &[&str]) -> Server {
        let root_s = root.to_str().expect("utf-8 root path");
        let mut args: Vec<&str> = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--root",
            root_s,
            "--workers",
            "2",
        ];
        args.extend_from_slice(extra_args);
        match Server::try_start(&args) {
            Ok(mut s) => {
                s.root = root.to_path_buf();
                s
            }
            Err((status, stderr)) => panic!(
                "ringyard {:?} exited ({status}) before listening; stderr:\n{stderr}",
                args
            ),
        }
    }

    /// Starts the binary with exactly `args`; panics if it does not come up.
    pub fn start_args(args: &[&str]) -> Server {
        match Server::try_start(args) {
            Ok(s) => s,
            Err((status, stderr)) => panic!(
                "ringyard {:?} exited ({status}) before listening; stderr:\n{stderr}",
                args
            ),
        }
    }

    /// Starts the binary with exactly `args`. `Ok` once it logs its listening line; `Err` with the
    /// exit status and stderr if it exits first. Panics if neither happens within 30 s.
    pub fn try_start(args: &[&str]) -> Result<Server, (ExitStatus, String)> {
        let mut child = Command::new(bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin()));
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<Option<SocketAddr>>();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stderr_pipe);
                let mut sent = false;
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&line).into_owned();
                            log.lock().unwrap().push_str(&text);
                            if !sent {
                                if let Some(addrs) = parse_listening(&text) {
                                    sent = true;
                                    let _ = tx.send(Some(addrs[0]));
                                }
                            }
                        }
                    }
                }
                if !sent {
                    let _ = tx.send(None);
                }
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Some(addr)) => {
                    if addr.port() == 0 {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!(
                            "ringyard reported port 0 in its listening line; stderr:\n{}",
                            log.lock().unwrap()
                        );
                    }
                    return Ok(Server {
                        addr,
                        root: PathBuf::new(),
                        child: Some(child),
                        _tempdir: None,
                        stderr: log,
                    });
                }
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed without a listening line: the process is exiting.
                    let status =
                        wait_bounded(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
                            let _ = child.kill();
                            child.wait().expect("wait")
                        });
                    std::thread::sleep(Duration::from_millis(20));
                    let text = log.lock().unwrap().clone();
                    return Err((status, text));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // Give the reader thread a moment to collect the last lines.
                        std::thread::sleep(Duration::from_millis(100));
                        let text = log.lock().unwrap().clone();
                        return Err((status, text));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!(
                            "ringyard {:?} did not log `listening on ` within {:?}; stderr:\n{}",
                            args,
                            START_TIMEOUT,
                            log.lock().unwrap()
                        );
                    }
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running child").id()
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then wait up to 30 s (then SIGKILL and panic).
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running child");
        signal(child.id(), libc::SIGTERM);
        match wait_bounded(&mut child, STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                signal(child.id(), libc::SIGKILL);
                let _ = child.wait();
                panic!(
                    "ringyard did not exit within {:?} of SIGTERM; stderr:\n{}",
                    STOP_TIMEOUT,
                    self.stderr()
                );
            }
        }
    }

    /// SIGKILL and wait.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("running child");
        signal(child.id(), libc::SIGKILL);
        let _ = child.wait();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                signal(child.id(), libc::SIGKILL);
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
            eprintln!(
                "--- ringyard stderr (tail) ---\n{}--- end ---",
                tail(&log, 8000)
            );
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Waits up to `limit` for `child` to exit; `None` if it still runs then.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("wait: {e}"),
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
        let n = s.read(&mut tmp)?;
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
fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
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

// ---------------------------------------------------------------------------------------------
// OCI helpers
// ---------------------------------------------------------------------------------------------

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// `sha256:<hex>`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// `sha512:<hex>`.
pub fn sha512_digest(bytes: &[u8]) -> String {
    format!("sha512:{}", hex(&Sha512::digest(bytes)))
}

/// `sha256:<hex>` of what `h` hashed.
pub fn finish_digest(h: Sha256) -> String {
    format!("sha256:{}", hex(&h.finalize()))
}

/// The path part (and query) of a `Location` header, which may be absolute or relative.
pub fn location_path(location: &str) -> String {
    if let Some(rest) = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("https://"))
    {
        match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        }
    } else {
        location.to_string()
    }
}

/// Appends a query parameter to a path that may already have a query.
pub fn with_query(path: &str, param: &str) -> String {
    if path.contains('?') {
        format!("{path}&{param}")
    } else {
        format!("{path}?{param}")
    }
}

/// Monolithic upload: `POST /v2/<repo>/blobs/uploads/?digest=<digest>` with the bytes; asserts
/// 201; returns the digest.
#[track_caller]
pub fn push_blob(c: &mut Client, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let r = c.post(
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    );
    assert_eq!(
        r.status,
        201,
        "monolithic push of {} bytes to {repo}: {:?} {:?}",
        bytes.len(),
        r.text(),
        r.headers
    );
    digest
}

/// Starts an upload session; asserts 202 and returns the Location path.
#[track_caller]
pub fn start_upload(c: &mut Client, repo: &str) -> String {
    let r = c.post(&format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_eq!(
        r.status,
        202,
        "POST uploads: {:?} {:?}",
        r.text(),
        r.headers
    );
    location_path(must_header(&r, "location"))
}

/// An OCI image manifest for a config and layers given as (digest, size).
pub fn image_manifest(config: &(String, usize), layers: &[(String, usize)]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, s)| serde_json::json!({"mediaType": OCI_LAYER, "digest": d, "size": s}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0, "size": config.1},
        "layers": layers,
    }))
    .unwrap()
}

/// A small image config that differs with its layers.
pub fn image_config(layer_digests: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    }))
    .unwrap()
}

/// Pushes a config and `layers` as blobs, then an OCI image manifest by `tag`; asserts 201.
/// Returns the manifest digest and bytes.
#[track_caller]
pub fn push_image(c: &mut Client, repo: &str, tag: &str, layers: &[&[u8]]) -> (String, Vec<u8>) {
    let mut descs = Vec::new();
    for l in layers {
        let d = push_blob(c, repo, l);
        descs.push((d, l.len()));
    }
    let digests: Vec<String> = descs.iter().map(|(d, _)| d.clone()).collect();
    let config = image_config(&digests);
    let cd = push_blob(c, repo, &config);
    let manifest = image_manifest(&(cd, config.len()), &descs);
    let r = c.put(
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", OCI_MANIFEST)],
        &manifest,
    );
    assert_eq!(
        r.status,
        201,
        "PUT manifest {repo}:{tag}: {:?} {:?}",
        r.text(),
        r.headers
    );
    (sha256_digest(&manifest), manifest)
}

/// Panics with an instruction if `name` is not an executable on PATH.
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths).any(|dir| {
                let p = dir.join(name);
                match std::fs::metadata(&p) {
                    Ok(m) => {
                        use std::os::unix::fs::PermissionsExt;
                        m.is_file() && m.permissions().mode() & 0o111 != 0
                    }
                    Err(_) => false,
                }
            })
        })
        .unwrap_or(false);
    if !found {
        panic!(
            "required tool `{name}` is not installed: run .ci/run (or apt-get install the \
             package that provides it)"
        );
    }
}

/// Encodes `body` with chunked transfer coding, split into chunks of the given sizes (cycled).
pub fn chunked_encode(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < body.len() {
        let n = sizes[k % sizes.len()].max(1).min(body.len() - i);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&body[i..i + n]);
        out.extend_from_slice(b"\r\n");
        i += n;
        k += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A final check that the server still answers: `GET /v2/` on a new connection is 200.
#[track_caller]
pub fn assert_alive(server: &Server) {
    let mut c = server.client();
    let r = c.get("/v2/");
    assert_eq!(
        r.status,
        200,
        "the server no longer answers GET /v2/: {:?}",
        r.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Generated data
// ---------------------------------------------------------------------------------------------

/// The generators' piece size: bodies too large to hold are generated, hashed and sent in pieces
/// of this many bytes.
pub const GEN_PIECE: usize = 1 << 20;

/// Word `i` (bytes `8 * i ..`) of the generator for `seed`: splitmix64's output for the state
/// `seed + (i + 1) * golden`, so that every word can be computed on its own.
fn generated_word(seed: u64, i: u64) -> [u8; 8] {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).to_le_bytes()
}

/// Fills `buf` with the deterministic bytes of the generator for `seed` from byte `offset` of its
/// stream on. Each byte depends only on (seed, its offset), so any range of a body too large to
/// hold can be regenerated on its own (e.g. to compare a Range response); any offset and length.
pub fn fill_generated(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut word = offset / 8;
    let skip = (offset % 8) as usize;
    let mut rest = buf;
    if skip != 0 {
        let n = (8 - skip).min(rest.len());
        let (head, after) = rest.split_at_mut(n);
        head.copy_from_slice(&generated_word(seed, word)[skip..skip + n]);
        rest = after;
        word += 1;
    }
    let last_word = word + (rest.len() / 8) as u64;
    let mut words = rest.chunks_exact_mut(8);
    for (w, i) in (&mut words).zip(word..) {
        w.copy_from_slice(&generated_word(seed, i));
    }
    let last = words.into_remainder();
    let n = last.len();
    last.copy_from_slice(&generated_word(seed, last_word)[..n]);
}

/// `len` bytes of the generator for `seed` (see [`fill_generated`]) from its start.
pub fn generated(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill_generated(seed, 0, &mut out);
    out
}

/// Deterministic pseudo-random bytes, distinct per seed: [`generated`] with the arguments the
/// other way round.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    generated(seed, len)
}

/// Writes `len` generator bytes for `seed` from byte `offset` on to `w`, in pieces of
/// [`GEN_PIECE`] bytes, hashing them into `h` as they go (the bytes are never held whole);
/// panics naming the byte at which a write failed.
pub fn send_generated(w: &mut impl Write, seed: u64, offset: u64, len: u64, h: &mut Sha256) {
    let mut buf = vec![0u8; GEN_PIECE];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(GEN_PIECE as u64) as usize;
        fill_generated(seed, offset + off, &mut buf[..n]);
        h.update(&buf[..n]);
        if let Err(e) = w.write_all(&buf[..n]) {
            panic!("sending the body failed at byte {off} of {len}: {e}");
        }
        off += n as u64;
    }
}

/// `sha256:<hex>` of the first `len` generator bytes for `seed`, computed piecewise without
/// holding them.
pub fn generated_digest(seed: u64, len: u64) -> String {
    let mut h = Sha256::new();
    send_generated(&mut io::sink(), seed, 0, len, &mut h);
    finish_digest(h)
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP: for bodies too large to hold, and for exchanges whose IO errors are an expected
// outcome (a server killed mid-request) rather than a reason to panic
// ---------------------------------------------------------------------------------------------

/// A request's bytes: the head, then `body`. Adds `Host` unless `headers` carry one, and
/// `Content-Length` when the body is non-empty or the method is PUT/POST/PATCH unless `headers`
/// carry `Content-Length` or `Transfer-Encoding` (then the body goes as given, e.g. already
/// chunk-encoded, or left out to be streamed after the head).
pub fn request_bytes(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        req.push_str(&format!("Host: {host}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has("content-length")
        && !has("transfer-encoding")
        && (!body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH"))
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A new connection for raw exchanges: connected within 5 s, `io_timeout` on reads and writes,
/// Nagle off.
pub fn connect_raw(addr: SocketAddr, io_timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(io_timeout))?;
    s.set_write_timeout(Some(io_timeout))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Whether `addr` refuses connections (nothing listens there).
pub fn port_refuses(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
    )
}

/// A response head read off a raw connection.
#[derive(Debug)]
pub struct RawHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Body bytes that arrived together with the head.
    pub rest: Vec<u8>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads a response head (through its blank line). A read error, an EOF before the blank line or
/// a bad status line is an `Err`, never a panic.
pub fn read_raw_head(s: &mut impl Read) -> io::Result<RawHead> {
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 16 * 1024];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed before a response head: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(RawHead {
        status,
        headers,
        rest: buf[end..].to_vec(),
    })
}

impl RawHead {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }

    /// Reads the rest of the body (for small bodies: it is held whole): none after HEAD or for
    /// 1xx/204/304, `Content-Length` bytes, or else up to EOF (then decoded if chunked). An IO
    /// error, an EOF inside a `Content-Length` body or bad chunking is an `Err`.
    pub fn read_body(&self, s: &mut impl Read, head_request: bool) -> io::Result<Vec<u8>> {
        let status = self.status;
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(Vec::new());
        }
        let mut body = self.rest.clone();
        if let Some(len) = self.content_length() {
            let len = len as usize;
            let mut tmp = vec![0u8; 64 * 1024];
            while body.len() < len {
                let n = s.read(&mut tmp)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("EOF in a response body after {} of {len} bytes", body.len()),
                    ));
                }
                body.extend_from_slice(&tmp[..n]);
            }
            body.truncate(len);
            return Ok(body);
        }
        s.read_to_end(&mut body)?;
        let chunked = self
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            dechunk(&body)
        } else {
            Ok(body)
        }
    }

    /// The head with `body` as a [`Response`].
    pub fn into_response(self, body: Vec<u8>) -> Response {
        Response {
            status: self.status,
            headers: self.headers,
            body,
        }
    }
}

/// Decodes a whole chunked body (trailers dropped).
fn dechunk(b: &[u8]) -> io::Result<Vec<u8>> {
    let mut dec = chunked::Decoder::new();
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let step = dec
            .feed(&b[at..])
            .map_err(|m| invalid(format!("bad chunked body: {m}")))?;
        if let chunked::Event::Data(r) = &step.event {
            out.extend_from_slice(&b[at + r.start..at + r.end]);
        }
        at += step.consumed;
        match step.event {
            chunked::Event::End => return Ok(out),
            chunked::Event::NeedMore => return Err(invalid("chunked body cut short".into())),
            chunked::Event::Data(_) => {}
        }
    }
}
