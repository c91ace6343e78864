//! Request heads: bytes in, an owned [`Request`] out, or the reason the head cannot be served.
//! Pure: the connection loop feeds it whatever bytes it has and reads more on `Partial`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Patch,
    Delete,
    Other,
}

impl Method {
    fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Other => "OTHER",
        }
    }
}

/// How the request body is framed (RFC 9112 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Length(u64),
    Chunked,
}

/// A parsed request head. Its text (path, query, header names lowercased, header values) is
/// kept in one buffer with offsets into it: two allocations per request, not two per header,
/// on a path that runs a quarter of a million times a second.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub body: BodyKind,
    pub keep_alive: bool,
    pub expect_continue: bool,
    text: String,
    path_end: usize,
    query_end: usize,
    /// (name start, name end = value start, value end) in `text`.
    headers: Vec<(u32, u32, u32)>,
}

impl Request {
    /// The path of the target, without the query.
    pub fn path(&self) -> &str {
        &self.text[..self.path_end]
    }

    /// The query of the target, without the `?`; empty when there is none.
    pub fn query(&self) -> &str {
        &self.text[self.path_end..self.query_end]
    }

    /// Every header as sent: names lowercased, values trimmed (lossy UTF-8).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|&(a, b, c)| {
            (
                &self.text[a as usize..b as usize],
                &self.text[b as usize..c as usize],
            )
        })
    }

    /// The first header of that (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// True when the request carries body bytes (or may: chunked).
    pub fn has_body(&self) -> bool {
        self.body != BodyKind::Length(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// The head is larger than the limit: 431.
    TooLarge,
    /// Not HTTP we accept: 400, with a reason for the error detail.
    Malformed(&'static str),
}

/// Most headers a request may carry; more is answered like an oversized head.
pub const MAX_HEADERS: usize = 128;

/// Parses one request head from the start of `buf`. `Ok(None)` means more bytes are needed;
/// `Ok(Some((req, n)))` means the head took `n` bytes.
pub fn parse_head(buf: &[u8], max_head: usize) -> Result<Option<(Request, usize)>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut storage);
    let n = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= max_head {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            }
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    if n > max_head {
        return Err(HeadError::TooLarge);
    }
    let method = Method::parse(parsed.method.unwrap_or(""));
    let target = origin_form(parsed.path.unwrap_or(""));
    if !target.starts_with('/') {
        return Err(HeadError::Malformed(
            "request target must be an absolute path",
        ));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let version = parsed.version.unwrap_or(1);
    let text_len = path.len()
        + query.len()
        + parsed
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>();
    let mut text = String::with_capacity(text_len);
    text.push_str(path);
    let path_end = text.len();
    text.push_str(query);
    let query_end = text.len();
    let mut headers = Vec::with_capacity(parsed.headers.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut connection_close = version == 0;
    let mut expect_continue = false;
    for h in parsed.headers.iter() {
        let name_start = text.len();
        text.extend(h.name.chars().map(|c| c.to_ascii_lowercase()));
        let value_start = text.len();
        match std::str::from_utf8(h.value) {
            Ok(v) => text.push_str(v.trim()),
            Err(_) => text.push_str(String::from_utf8_lossy(h.value).trim()),
        }
        let value_end = text.len();
        let name = &text[name_start..value_start];
        let value = &text[value_start..value_end];
        match name {
            "content-length" => {
                let v = parse_content_length(value)?;
                if content_length.is_some_and(|old| old != v) {
                    return Err(HeadError::Malformed("conflicting Content-Length headers"));
                }
                content_length = Some(v);
            }
            "transfer-encoding" => {
                let codings: Vec<String> = value
                    .split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty())
                    .collect();
                if codings.last().map(String::as_str) != Some("chunked")
                    || codings.iter().filter(|c| *c == "chunked").count() != 1
                {
                    return Err(HeadError::Malformed("unsupported Transfer-Encoding"));
                }
                if codings.len() > 1 {
                    // gzip or other codings of an upload body would change the bytes we hash.
                    return Err(HeadError::Malformed(
                        "only chunked Transfer-Encoding is supported",
                    ));
                }
                chunked = true;
            }
            "connection"
                if value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("close")) =>
            {
                connection_close = true;
            }
            "expect" if value.eq_ignore_ascii_case("100-continue") => {
                expect_continue = version >= 1;
            }
            _ => {}
        }
        // A head is at most a few MiB (the configured limit), so offsets fit in u32.
        headers.push((name_start as u32, value_start as u32, value_end as u32));
    }
    if chunked && content_length.is_some() {
        // RFC 9112 6.3: a request with both is a smuggling vector; refuse it.
        return Err(HeadError::Malformed(
            "both Transfer-Encoding and Content-Length present",
        ));
    }
    if chunked && version == 0 {
        return Err(HeadError::Malformed("chunked body in HTTP/1.0"));
    }
    let body = if chunked {
        BodyKind::Chunked
    } else {
        BodyKind::Length(content_length.unwrap_or(0))
    };
    Ok(Some((
        Request {
            method,
            version,
            body,
            keep_alive: !connection_close,
            expect_continue: expect_continue && body != BodyKind::Length(0),
            text,
            path_end,
            query_end,
            headers,
        },
        n,
    )))
}

/// RFC 9112 3.2.2: a server must accept the absolute form (`http://host/path`); only the
/// path and query matter to us.
fn origin_form(target: &str) -> &str {
    for scheme in ["http://", "https://"] {
        if target.len() > scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &target[scheme.len()..];
            return match rest.find(['/', '?']) {
                Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
                _ => "/",
            };
        }
    }
    target
}

fn parse_content_length(v: &str) -> Result<u64, HeadError> {
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeadError::Malformed("invalid Content-Length"));
    }
    v.parse()
        .map_err(|_| HeadError::Malformed("invalid Content-Length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<(Request, usize)>, HeadError> {
        parse_head(s.as_bytes(), 64 * 1024)
    }

    #[test]
    fn simple_get() {
        let head = "GET /v2/a/b/tags/list?n=2 HTTP/1.1\r\nHost: x\r\n\r\n";
        let (r, n) = parse(&format!("{head}rest")).unwrap().unwrap();
        assert_eq!(n, head.len());
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path(), "/v2/a/b/tags/list");
        assert_eq!(r.query(), "n=2");
        assert!(r.keep_alive);
        assert_eq!(r.body, BodyKind::Length(0));
        assert_eq!(r.header("host"), Some("x"));
    }

    #[test]
    fn absolute_form_targets() {
        let (r, _) = parse("GET http://h:5000/v2/x/tags/list?n=1 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.path(), "/v2/x/tags/list");
        assert_eq!(r.query(), "n=1");
        let (r, _) = parse("GET HTTP://h HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(r.path(), "/");
    }

    #[test]
    fn partial_and_too_large() {
        assert!(parse("GET / HTTP/1.1\r\nHost:").unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(70_000));
        assert_eq!(parse(&big).unwrap_err(), HeadError::TooLarge);
        let complete_big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70_000));
        assert_eq!(parse(&complete_big).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..200).map(|i| format!("X{i}: y\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(&req).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn body_framing() {
        let (r, _) = parse("PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.body, BodyKind::Length(10));
        let (r, _) = parse("PATCH /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.body, BodyKind::Chunked);
        for bad in [
            "PUT /x HTTP/1.1\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "PUT /x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "PUT /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "PUT /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "PUT /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "GARBAGE\r\n\r\n",
            "GET x HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(parse(bad), Err(HeadError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn connection_semantics() {
        let (r, _) = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive);
        let (r, _) = parse("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.keep_alive);
        let (r, _) = parse("PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.expect_continue);
        let (r, _) = parse("PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.expect_continue, "no body, nothing to continue");
    }
}
