//! `n`/`last` pagination, shared by the tags list and the catalog.
//!
//! Distribution-spec v1.1 ("Listing Tags"): the response MAY hold fewer than `n` results only
//! when fewer remain or a `Link` header is sent; otherwise it MUST hold `n`. "When `n` is zero,
//! this endpoint MUST return an empty list, and MUST NOT include a `Link` header." `last` is the
//! value of the last entry already seen, never an index, and results start strictly after it in
//! lexical order. With `last`, `n` is optional.
//!
//! So when the server cap truncates a page, the caller must send a `Link` header; the `more`
//! flag returned by [`paginate`] says exactly when.

use crate::api::error::{Error, ErrorCode, Result};
use crate::http::query::{percent_encode_component, percent_encode_except, query_get};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageQuery {
    pub n: Option<usize>,
    pub last: Option<String>,
}

impl PageQuery {
    /// Entries one page may hold: `n`, capped by the server's `max_n`.
    pub fn limit(&self, max_n: usize) -> usize {
        self.n.map_or(max_n, |n| n.min(max_n))
    }
}

/// Reads `n` and `last` from a raw query string.
///
/// An empty `n` (`?n=`) counts as absent, like an empty `last`: that is how the reference
/// registry (Go's `q.Get("n") != ""`) treats it, and clients that build URLs from templates send
/// it. Anything else that is not a plain decimal fitting `usize` (signs, spaces, fractions,
/// overflow) is `PAGINATION_NUMBER_INVALID`, so a client learns its request was not honoured
/// rather than silently getting a differently sized page.
pub fn parse_page_query(query: &str) -> Result<PageQuery> {
    let n = match query_get(query, "n") {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => Some(parse_n(&s).ok_or_else(|| {
            Error::new(ErrorCode::PaginationNumberInvalid)
                .with_message("n must be a non-negative integer")
                .with_detail(s.chars().take(64).collect::<String>())
        })?),
    };
    let last = query_get(query, "last").filter(|s| !s.is_empty());
    Ok(PageQuery { n, last })
}

/// Plain `1*DIGIT`; `usize::from_str` alone would also take a leading `+`.
fn parse_n(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The RFC 8288 `Link` header value for the next page. `path` is the server-built request path
/// (e.g. `/v2/<name>/tags/list`); characters that could break out of the `<...>` target are
/// still escaped, so even an unexpected path cannot inject header syntax.
pub fn next_link(path: &str, n: usize, last: &str) -> String {
    format!(
        "<{}?n={n}&last={}>; rel=\"next\"",
        escape_path(path),
        percent_encode_component(last)
    )
}

/// Keeps RFC 3986 path characters, escapes everything else (controls, space, `<>"`, `?#`,
/// non-ASCII).
fn escape_path(path: &str) -> String {
    percent_encode_except(path, |b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'/'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'%'
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: Option<usize>, last: Option<&str>) -> PageQuery {
        PageQuery {
            n,
            last: last.map(str::to_string),
        }
    }

    #[test]
    fn parses_n_and_last() {
        assert_eq!(parse_page_query("").unwrap(), PageQuery::default());
        assert_eq!(parse_page_query("n=10").unwrap(), q(Some(10), None));
        assert_eq!(parse_page_query("n=0").unwrap(), q(Some(0), None));
        assert_eq!(parse_page_query("n=007").unwrap(), q(Some(7), None));
        assert_eq!(
            parse_page_query("n=2&last=v1.0").unwrap(),
            q(Some(2), Some("v1.0"))
        );
        assert_eq!(
            parse_page_query("last=library%2Fubuntu").unwrap(),
            q(None, Some("library/ubuntu"))
        );
        assert_eq!(parse_page_query("last=").unwrap(), q(None, None));
        assert_eq!(parse_page_query("n=").unwrap(), q(None, None));
        assert_eq!(parse_page_query("n").unwrap(), q(None, None));
        assert_eq!(parse_page_query("n=3&n=x").unwrap(), q(Some(3), None));
        assert_eq!(parse_page_query("other=1&n=%35").unwrap(), q(Some(5), None));
        assert_eq!(
            parse_page_query(&format!("n={}", usize::MAX)).unwrap(),
            q(Some(usize::MAX), None)
        );
    }

    #[test]
    fn rejects_bad_n() {
        for bad in [
            "n=-1",
            "n=+1",
            "n=1.0",
            "n=1e3",
            "n=%201",
            "n=1%20",
            "n=abc",
            "n=0x10",
            "n=١",
            "n=99999999999999999999999999",
            "n=18446744073709551616",
            "n=%00",
            "n=x&n=1",
        ] {
            let e = parse_page_query(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::PaginationNumberInvalid, "{bad}");
            assert_eq!(e.status, 400);
            assert!(e.detail.is_some());
        }
        let e = parse_page_query(&format!("n={}", "9".repeat(100_000))).unwrap_err();
        assert_eq!(e.detail.unwrap().as_str().unwrap().len(), 64);
    }

    #[test]
    fn link_header_format() {
        assert_eq!(
            next_link("/v2/library/ubuntu/tags/list", 10, "v1.0"),
            "</v2/library/ubuntu/tags/list?n=10&last=v1.0>; rel=\"next\""
        );
        assert_eq!(
            next_link("/v2/_catalog", 2, "library/ubuntu"),
            "</v2/_catalog?n=2&last=library/ubuntu>; rel=\"next\""
        );
    }

    #[test]
    fn link_header_cannot_be_broken_out_of() {
        let link = next_link(
            "/v2/a>b\r\n/tags/list",
            1,
            "x>; rel=\"evil\"\r\nSet-Cookie: a&n=9",
        );
        assert!(!link.contains('\r') && !link.contains('\n'));
        assert_eq!(link.matches('>').count(), 1);
        assert_eq!(link.matches('"').count(), 2);
        assert!(link.ends_with(">; rel=\"next\""));
        // The encoded `last` decodes back to the original through the query parser.
        let target = &link[1..link.find('>').unwrap()];
        let query = target.split_once('?').unwrap().1;
        assert_eq!(query_get(query, "n").as_deref(), Some("1"));
        assert_eq!(
            query_get(query, "last").as_deref(),
            Some("x>; rel=\"evil\"\r\nSet-Cookie: a&n=9")
        );
    }

    #[test]
    fn link_round_trips_through_parse_page_query() {
        for last in ["v1", "library/ubuntu", "ünï", "a+b", "a b", "%41"] {
            let link = next_link("/v2/x/tags/list", 5, last);
            let target = &link[1..link.find('>').unwrap()];
            let query = target.split_once('?').unwrap().1;
            assert_eq!(parse_page_query(query).unwrap(), q(Some(5), Some(last)));
        }
    }
}
