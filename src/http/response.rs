//! Responses: a status, headers and a body that is either bytes or a range of a file (sent
//! by the transport's file send, `sendfile` on TCP, or from its mapping when small). HEAD
//! answers carry the real Content-Length and no body.
//!
//! A file body is a [`FileBody`], this module's own trait: HTTP knows nothing of the store
//! that serves committed blobs (the API layer, which knows both, implements it for them).

use super::conn::Conn;
use super::transport::Transport;
use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

/// File bodies up to this size leave in the same write as the head, from the file's
/// mapping; larger ones follow it by the transport's file send.
const INLINE_BODY: u64 = 16 * 1024;
/// In-memory bodies up to this size leave in the same write as the head.
const INLINE_BYTES: usize = 64 * 1024;

/// An open, immutable file a response can send a range of.
pub trait FileBody {
    fn file(&self) -> &std::fs::File;
    /// The whole content in memory (a mapping), asked only for small ranges: they leave in
    /// the same write as the head.
    fn bytes(&self) -> io::Result<&[u8]>;
}

/// A file another task is still writing (a blob being fetched into a cache), sent as its bytes
/// arrive. The writer may fail after the head went out: the response is then cut short (the
/// connection closes), which a client reads as a broken body, never as a whole one.
pub trait GrowingBody {
    fn file(&self) -> &std::fs::File;
    /// Resolves once bytes at `at` may be sent, with the end of what may be sent now; an
    /// error when the writer failed.
    fn readable(&self, at: u64) -> Pin<Box<dyn Future<Output = io::Result<u64>> + '_>>;
}

pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// `[start, end)` of a file; the `Rc` is the caller's own (no allocation to wrap it).
    File(Rc<dyn FileBody>, u64, u64),
    /// The first `len` bytes of a file being written.
    Growing(Rc<dyn GrowingBody>, u64),
    /// HEAD of something whose bytes we do not need to touch.
    LengthOnly(u64),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File(_, start, end) => end - start,
            Body::Growing(_, len) => *len,
            Body::LengthOnly(n) => *n,
        }
    }

    /// The bytes that go on the wire after the head: a HEAD answer's length sends none.
    pub fn wire_len(&self) -> u64 {
        match self {
            Body::LengthOnly(_) => 0,
            body => body.len(),
        }
    }
}

pub struct Response {
    pub status: u16,
    /// Values borrowed where they are constants (media types, the API version) so that a
    /// response does not allocate for them.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            // Room for what the common answers carry, so the list is allocated once.
            headers: Vec::with_capacity(8),
            body: Body::Empty,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_body(mut self, content_type: &'static str, body: Vec<u8>) -> Response {
        self.headers
            .push(("Content-Type", Cow::Borrowed(content_type)));
        self.body = Body::Bytes(body);
        self
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let body = serde_json::to_vec(value).unwrap_or_default();
        Response::new(status).with_body("application/json", body)
    }

    /// Drops the body of a GET-shaped response for HEAD, keeping its length.
    pub fn into_head(mut self) -> Response {
        let len = self.body.len();
        self.body = Body::LengthOnly(len);
        self
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Status",
    }
}

/// Serializes the status line and headers. Content-Length is always sent except where HTTP
/// forbids it (1xx, 204), so clients never have to guess where a response ends.
pub fn head_bytes(resp: &Response, keep_alive: bool) -> Vec<u8> {
    let mut out = Vec::new();
    write_head(&mut out, resp, keep_alive, 0);
    out
}

/// Appends the head to `out`, first making room for it and `room` more bytes (a body sent in
/// the same write), so that nothing reallocates on the way.
fn write_head(out: &mut Vec<u8>, resp: &Response, keep_alive: bool, room: usize) {
    out.reserve(256 + resp.headers.len() * 64 + room);
    out.extend_from_slice(b"HTTP/1.1 ");
    crate::log::push_u64(out, resp.status.into());
    out.push(b' ');
    out.extend_from_slice(reason(resp.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &resp.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        // Header values come from our own code, but never let a CR or LF split the head.
        let v = value.as_bytes();
        if v.iter().any(|b| *b == b'\r' || *b == b'\n') {
            out.extend(v.iter().filter(|b| **b != b'\r' && **b != b'\n'));
        } else {
            out.extend_from_slice(v);
        }
        out.extend_from_slice(b"\r\n");
    }
    if resp.status != 204 && resp.status >= 200 {
        out.extend_from_slice(b"Content-Length: ");
        crate::log::push_u64(out, resp.body.len());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the response. Small bodies go out in the same write as the head, from the
/// connection's reusable head buffer (no allocation per response once it has grown).
pub async fn write_response<T: Transport>(
    conn: &mut Conn<T>,
    resp: Response,
    keep_alive: bool,
    timeout: Duration,
) -> io::Result<()> {
    let inline = match &resp.body {
        Body::Bytes(b) if b.len() <= INLINE_BYTES => b.len(),
        Body::File(_, start, end) if end - start <= INLINE_BODY => (end - start) as usize,
        _ => 0,
    };
    let mut head = conn.take_write_buf();
    write_head(&mut head, &resp, keep_alive, inline);
    match resp.body {
        Body::Empty | Body::LengthOnly(_) => {}
        Body::Bytes(bytes) => {
            if bytes.len() <= INLINE_BYTES {
                head.extend_from_slice(&bytes);
            } else {
                let head = conn.write_all(head, timeout).await?;
                conn.return_write_buf(head);
                conn.write_all(bytes, timeout).await?;
                return Ok(());
            }
        }
        Body::File(file, start, end) => {
            if end - start <= INLINE_BODY {
                head.extend_from_slice(&file.bytes()?[start as usize..end as usize]);
            } else {
                let head = conn.write_all(head, timeout).await?;
                conn.return_write_buf(head);
                conn.send_file(file.file(), start..end, timeout).await?;
                return Ok(());
            }
        }
        Body::Growing(body, len) => {
            let head = conn.write_all(head, timeout).await?;
            conn.return_write_buf(head);
            let mut at = 0;
            while at < len {
                let end = body.readable(at).await?.min(len);
                if end <= at {
                    return Err(io::Error::other("a growing body made no progress"));
                }
                conn.send_file(body.file(), at..end, timeout).await?;
                at = end;
            }
            return Ok(());
        }
    }
    let head = conn.write_all(head, timeout).await?;
    conn.return_write_buf(head);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_has_length_and_close() {
        let r = Response::new(404).with_body("application/json", b"{}".to_vec());
        let h = String::from_utf8(head_bytes(&r, false)).unwrap();
        assert!(h.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(h.contains("Content-Length: 2\r\n"));
        assert!(h.contains("Connection: close\r\n"));
        assert!(h.ends_with("\r\n\r\n"));
    }

    #[test]
    fn head_response_keeps_length_and_204_has_none() {
        let r = Response::new(200)
            .with_body("application/octet-stream", vec![0; 10])
            .into_head();
        let h = String::from_utf8(head_bytes(&r, true)).unwrap();
        assert!(h.contains("Content-Length: 10\r\n"));
        let r = Response::new(204).header("X-Evil", "a\r\nb");
        let h = String::from_utf8(head_bytes(&r, true)).unwrap();
        assert!(!h.contains("Content-Length"));
        assert!(h.contains("X-Evil: ab\r\n"));
    }
}
