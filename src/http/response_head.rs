//! Response heads, for the clients (the S3 backend's connection, the load generator): bytes in,
//! the few facts a client needs out (status, headers, how the body ends, whether the
//! connection may carry another request). Pure.
//!
//! As strict as RFC 9112 lets a client be, because a misread frame hands the next response's
//! bytes to this one (or a short body to a caller as whole): Content-Length is digits only
//! and every copy must agree; the only transfer coding taken is a lone `chunked` (anything
//! else would hand coded bytes over as the body); Transfer-Encoding next to Content-Length, the
//! mark of response splitting, is refused rather than guessed at; a header value that is not
//! UTF-8 is refused rather than altered. HTTP/1.0 keeps the connection only with
//! `Connection: keep-alive`; 1xx interim heads come back like others, for the caller to skip.

/// Most headers a response head may carry (S3 and registries send about ten).
pub const MAX_HEADERS: usize = 64;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body: the answer to a HEAD request, 1xx, 204 and 304.
    None,
    Length(u64),
    Chunked,
    /// Neither length nor chunked: the body ends when the server closes.
    UntilClose,
}

#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    /// Names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: BodyKind,
    /// The Content-Length header, checked (digits, every copy agreeing), also where no body
    /// follows: a HEAD answer's is the size of what a GET would send.
    pub content_length: Option<u64>,
    /// False when the server said `Connection: close`, spoke HTTP/1.0 without keep-alive, or
    /// delimits the body by closing.
    pub keep_alive: bool,
}

impl ResponseHead {
    /// The first header of that name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A 1xx head that another head follows (100 Continue, 103 Early Hints).
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Why a response head cannot be read; the text is for a log or an error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHead(pub String);

impl std::fmt::Display for InvalidHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid response head: {}", self.0)
    }
}

impl std::error::Error for InvalidHead {}

fn invalid<T>(what: impl Into<String>) -> Result<T, InvalidHead> {
    Err(InvalidHead(what.into()))
}

/// Parses one response head at the start of `buf`: `Ok(None)` while incomplete (read more),
/// `Ok(Some((head, n)))` when the head took `n` bytes. `head_request`: the request was HEAD,
/// so there is no body whatever Content-Length says.
pub fn parse_response_head(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<(ResponseHead, usize)>, InvalidHead> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return invalid(e.to_string()),
    };
    let status = resp.code.unwrap_or(0);
    let http11 = resp.version == Some(1);
    let mut headers = Vec::with_capacity(resp.headers.len());
    let mut length: Option<u64> = None;
    let mut codings = 0usize;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive_token = false;
    for h in resp.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            return invalid(format!("header {} is not UTF-8", h.name));
        };
        let value = value.trim();
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => {
                // A list (`5, 5`) is the same as repeated lines: every member must agree.
                for member in value.split(',') {
                    let n = content_length(member.trim())?;
                    if length.is_some_and(|l| l != n) {
                        return invalid("conflicting Content-Length values");
                    }
                    length = Some(n);
                }
            }
            "transfer-encoding" => {
                for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    codings += 1;
                    chunked = coding.eq_ignore_ascii_case("chunked");
                }
                if codings != 1 || !chunked {
                    return invalid(format!(
                        "Transfer-Encoding {value:?}: only a lone chunked is taken"
                    ));
                }
            }
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    close |= token.eq_ignore_ascii_case("close");
                    keep_alive_token |= token.eq_ignore_ascii_case("keep-alive");
                }
            }
            _ => {}
        }
        headers.push((name, value.to_string()));
    }
    if chunked && length.is_some() {
        return invalid("both Transfer-Encoding and Content-Length");
    }
    if chunked && !http11 {
        return invalid("chunked body in HTTP/1.0");
    }
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let body = match (no_body, chunked, length) {
        (true, _, _) => BodyKind::None,
        (false, true, _) => BodyKind::Chunked,
        (false, false, Some(n)) => BodyKind::Length(n),
        (false, false, None) => BodyKind::UntilClose,
    };
    let keep_alive = !close && (http11 || keep_alive_token) && body != BodyKind::UntilClose;
    let head = ResponseHead {
        status,
        headers,
        body,
        content_length: length,
        keep_alive,
    };
    Ok(Some((head, n)))
}

/// `1*DIGIT` (Rust's own parse would take a `+`), within u64.
fn content_length(v: &str) -> Result<u64, InvalidHead> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return invalid(format!("Content-Length {v:?}"));
    }
    v.parse()
        .or_else(|_| invalid(format!("Content-Length {v:?} too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, head: bool) -> (ResponseHead, usize) {
        parse_response_head(s.as_bytes(), head).unwrap().unwrap()
    }

    fn refused(s: &str) -> String {
        parse_response_head(s.as_bytes(), false).unwrap_err().0
    }

    #[test]
    fn length_headers_and_the_head_size() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nETag:  \"x\" \r\n\r\nhello";
        let (h, n) = parse(raw, false);
        assert_eq!((h.status, n), (200, raw.len() - 5));
        assert_eq!(h.body, BodyKind::Length(12));
        assert_eq!(h.header("etag"), Some("\"x\""));
        assert_eq!(h.header("ETag"), Some("\"x\""));
        assert_eq!(h.headers[0].0, "content-length");
        assert!(h.keep_alive && h.is_success() && !h.is_interim());
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        for cut in ["", "HTTP/1.1 200 OK\r\nContent-Len", "HTTP/1.1 200 OK\r\n"] {
            assert!(parse_response_head(cut.as_bytes(), false)
                .unwrap()
                .is_none());
        }
    }

    #[test]
    fn heads_without_bodies() {
        let (h, _) = parse("HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n", true);
        assert_eq!(h.body, BodyKind::None);
        assert!(h.keep_alive, "a HEAD answer leaves the connection usable");
        for s in ["204 No Content", "304 Not Modified", "100 Continue"] {
            let (h, _) = parse(&format!("HTTP/1.1 {s}\r\nContent-Length: 5\r\n\r\n"), false);
            assert_eq!(h.body, BodyKind::None, "{s}");
        }
        let (h, _) = parse("HTTP/1.1 100 Continue\r\n\r\n", false);
        assert!(h.is_interim());
    }

    #[test]
    fn content_length_is_digits_and_agrees_with_itself() {
        for bad in ["x", "+5", "-1", "5 5", "", "99999999999999999999999"] {
            let e = refused(&format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n"));
            assert!(e.contains("Content-Length"), "{bad}: {e}");
        }
        assert!(
            refused("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .contains("conflicting")
        );
        assert!(refused("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n").contains("conflicting"));
        for same in [
            "Content-Length: 2\r\nContent-Length: 2",
            "Content-Length: 2, 2",
        ] {
            let (h, _) = parse(&format!("HTTP/1.1 200 OK\r\n{same}\r\n\r\n"), false);
            assert_eq!(h.body, BodyKind::Length(2), "{same}");
        }
    }

    #[test]
    fn only_a_lone_chunked_coding_and_never_with_a_length() {
        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n",
            false,
        );
        assert_eq!(h.body, BodyKind::Chunked);
        assert!(h.keep_alive);
        for bad in [
            "Transfer-Encoding: gzip",
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked, chunked",
            "Transfer-Encoding: identity",
            "Transfer-Encoding: chunked\r\nContent-Length: 3",
        ] {
            refused(&format!("HTTP/1.1 200 OK\r\n{bad}\r\n\r\n"));
        }
        refused("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    }

    #[test]
    fn when_the_connection_may_be_reused() {
        let reused = |s: &str| parse(s, false).0.keep_alive;
        assert!(!reused(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!reused("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(reused(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
        ));
        let (h, _) = parse("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(h.body, BodyKind::UntilClose);
        assert!(
            !h.keep_alive,
            "a body delimited by the close ends the connection"
        );
    }

    #[test]
    fn what_is_not_a_head_is_refused() {
        refused("garbage\r\n\r\n");
        refused("HTTP/1.1 2000 OK\r\n\r\n");
        let mut many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("x-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        refused(&many);
        let mut bytes = b"HTTP/1.1 200 OK\r\nx-meta: ".to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        bytes.extend_from_slice(b"\r\n\r\n");
        let e = parse_response_head(&bytes, false).unwrap_err();
        assert!(e.0.contains("UTF-8"), "{e}");
    }
}
