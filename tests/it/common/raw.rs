//! Raw HTTP over a socket: request bytes, chunked encoding and response heads, for bodies too
//! large to hold and for exchanges whose IO errors are an expected outcome.

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
