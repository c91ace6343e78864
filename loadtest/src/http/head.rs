//! Response heads: parsed with httparse into the few facts a client needs (status, headers,
//! how the body is delimited, whether the connection may be reused). Pure.

use crate::error::{Error, Result};

/// Most headers a response head may carry; registries send about ten.
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body: HEAD requests, 1xx, 204 and 304.
    None,
    Length(u64),
    Chunked,
    /// Neither length nor chunked: the body ends when the server closes.
    UntilClose,
}

#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    /// Header names lower-cased, values as sent (trimmed).
    pub headers: Vec<(String, String)>,
    pub body: BodyKind,
    /// False when the server said `Connection: close`, spoke HTTP/1.0 without keep-alive,
    /// or delimits the body by closing.
    pub keep_alive: bool,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Parses one response head at the start of `buf`. Ok(None): incomplete, read more.
/// Ok(Some((head, n))): `n` bytes were the head. `head_request`: the request was HEAD, so
/// there is no body whatever Content-Length says. 1xx interim responses are returned like
/// others; the caller skips them.
pub fn parse_response_head(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<(ResponseHead, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::protocol(format!("invalid response head: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    let http11 = resp.version == Some(1);
    let mut out = Vec::with_capacity(resp.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| Error::protocol(format!("header {} is not UTF-8", h.name)))?
            .trim()
            .to_string();
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| Error::protocol(format!("invalid Content-Length {value:?}")))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Error::protocol("conflicting Content-Length headers"));
                }
                length = Some(n);
            }
            "transfer-encoding" => {
                // Only the last coding decides the framing; chunked must be last.
                let last = value.rsplit(',').next().unwrap_or("").trim();
                chunked = last.eq_ignore_ascii_case("chunked");
                if !chunked {
                    return Err(Error::protocol(format!(
                        "unsupported Transfer-Encoding {value:?}"
                    )));
                }
            }
            "connection" => {
                for token in value.split(',') {
                    let t = token.trim();
                    conn_close |= t.eq_ignore_ascii_case("close");
                    conn_keep_alive |= t.eq_ignore_ascii_case("keep-alive");
                }
            }
            _ => {}
        }
        out.push((name, value));
    }
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let body = if no_body {
        BodyKind::None
    } else if chunked {
        BodyKind::Chunked
    } else if let Some(n) = length {
        BodyKind::Length(n)
    } else {
        BodyKind::UntilClose
    };
    let keep_alive = !conn_close && (http11 || conn_keep_alive) && body != BodyKind::UntilClose;
    Ok(Some((
        ResponseHead {
            status,
            headers: out,
            body,
            keep_alive,
        },
        n,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, head: bool) -> (ResponseHead, usize) {
        parse_response_head(s.as_bytes(), head).unwrap().unwrap()
    }

    #[test]
    fn content_length_and_headers() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nDocker-Content-Digest: sha256:ab\r\n\r\nhello";
        let (h, n) = parse(raw, false);
        assert_eq!(h.status, 200);
        assert_eq!(n, raw.len() - 5);
        assert_eq!(h.body, BodyKind::Length(12));
        assert_eq!(h.header("docker-content-digest"), Some("sha256:ab"));
        assert_eq!(h.header("Docker-Content-Digest"), Some("sha256:ab"));
        assert!(h.keep_alive);
        assert!(h.is_success());
    }

    #[test]
    fn partial_head() {
        assert!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Len", false)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn head_request_has_no_body() {
        let (h, _) = parse("HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n", true);
        assert_eq!(h.body, BodyKind::None);
        assert!(h.keep_alive);
    }

    #[test]
    fn no_body_statuses() {
        for s in ["204 No Content", "304 Not Modified", "100 Continue"] {
            let (h, _) = parse(&format!("HTTP/1.1 {s}\r\nContent-Length: 5\r\n\r\n"), false);
            assert_eq!(h.body, BodyKind::None, "{s}");
        }
    }

    #[test]
    fn chunked_wins_over_length() {
        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            false,
        );
        assert_eq!(h.body, BodyKind::Chunked);
        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!(h.body, BodyKind::Chunked);
        assert!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false)
                .is_err()
        );
    }

    #[test]
    fn close_and_http10() {
        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!h.keep_alive);
        let (h, _) = parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert!(!h.keep_alive);
        let (h, _) = parse(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(h.keep_alive);
        let (h, _) = parse("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(h.body, BodyKind::UntilClose);
        assert!(!h.keep_alive);
    }

    #[test]
    fn bad_lengths() {
        assert!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err()
        );
        assert!(parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false
        )
        .is_err());
        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
            false,
        );
        assert_eq!(h.body, BodyKind::Length(2));
        assert!(parse_response_head(b"garbage\r\n\r\n", false).is_err());
    }
}
