//! Request heads formatted into a reusable buffer, and the header values uploads need. Pure.

use std::io::Write;

pub const USER_AGENT: &str = concat!("ringyard-loadtest/", env!("CARGO_PKG_VERSION"));

/// Appends `METHOD target HTTP/1.1` with Host, User-Agent, the given headers and (when
/// `content_length` is Some) Content-Length, then the blank line. Connections are kept
/// alive by HTTP/1.1's default, so no Connection header is sent.
pub fn format_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    content_length: Option<u64>,
) {
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
    );
    for (k, v) in headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if let Some(n) = content_length {
        let _ = write!(out, "Content-Length: {n}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `Content-Range` of an upload chunk: `start-end`, both inclusive, as the distribution spec
/// writes it (no `bytes ` unit). `len` must be at least 1.
pub fn content_range(start: u64, len: u64) -> String {
    debug_assert!(len > 0);
    format!("{}-{}", start, start + len - 1)
}

/// Adds `digest=<digest>` to an upload location, which may already carry a query
/// (distribution's `?_state=...`).
pub fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={}", digest.replace(':', "%3A"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_format() {
        let mut out = b"junk".to_vec();
        out.clear();
        format_head(
            &mut out,
            "PUT",
            "/v2/a/manifests/t",
            "127.0.0.1:5000",
            &[("Content-Type", "application/json")],
            Some(12),
        );
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            format!(
                "PUT /v2/a/manifests/t HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nUser-Agent: {USER_AGENT}\r\n\
                 Content-Type: application/json\r\nContent-Length: 12\r\n\r\n"
            )
        );
        let mut out = Vec::new();
        format_head(&mut out, "GET", "/v2/", "h", &[], None);
        assert!(!String::from_utf8(out).unwrap().contains("Content-Length"));
    }

    #[test]
    fn ranges() {
        assert_eq!(content_range(0, 1), "0-0");
        assert_eq!(content_range(0, 67108864), "0-67108863");
        assert_eq!(content_range(67108864, 67108864), "67108864-134217727");
    }

    #[test]
    fn digest_query() {
        assert_eq!(
            with_digest("/v2/a/blobs/uploads/x", "sha256:ab"),
            "/v2/a/blobs/uploads/x?digest=sha256%3Aab"
        );
        assert_eq!(
            with_digest("/v2/a/blobs/uploads/x?_state=abc", "sha256:ab"),
            "/v2/a/blobs/uploads/x?_state=abc&digest=sha256%3Aab"
        );
    }
}
