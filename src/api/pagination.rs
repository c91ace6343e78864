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

/// Cuts one page out of an ascending, de-duplicated list.
///
/// Entries `<= last` (byte-wise, which is Go's `sort.Strings` order the spec refers to) are
/// skipped; at most `min(n, max_n)` follow, `n` absent meaning "up to the cap". The flag is true
/// when entries remain after the page, i.e. when the caller must send a `Link` header.
///
/// An effective limit of 0 (`n=0`, or a misconfigured `max_n` of 0) yields an empty page with
/// no `Link`, as the spec requires for `n=0`; a `Link` there would only point at another empty
/// page.
pub fn paginate<'a>(
    sorted: impl IntoIterator<Item = &'a str>,
    q: &PageQuery,
    max_n: usize,
) -> (Vec<String>, bool) {
    let limit = q.limit(max_n);
    if limit == 0 {
        return (Vec::new(), false);
    }
    let last = q.last.as_deref();
    let mut rest = sorted
        .into_iter()
        .filter(|entry| last.is_none_or(|last| *entry > last));
    let page: Vec<String> = rest.by_ref().take(limit).map(str::to_string).collect();
    let more = page.len() == limit && rest.next().is_some();
    (page, more)
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

    const TAGS: [&str; 5] = ["a", "b", "c", "d", "e"];

    fn page(n: Option<usize>, last: Option<&str>, max: usize) -> (Vec<String>, bool) {
        paginate(TAGS, &q(n, last), max)
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
    fn whole_list_when_unbounded() {
        let (got, more) = page(None, None, 100);
        assert_eq!(got, TAGS);
        assert!(!more);
    }

    #[test]
    fn n_limits_and_reports_more() {
        assert_eq!(
            page(Some(2), None, 100),
            (vec!["a".into(), "b".into()], true)
        );
        assert!(!page(Some(5), None, 100).1);
        assert_eq!(page(Some(5), None, 100).0.len(), 5);
        assert!(!page(Some(6), None, 100).1);
        assert_eq!(page(Some(usize::MAX), None, 100).0.len(), 5);
    }

    #[test]
    fn cap_applies_to_n_and_to_no_n() {
        assert_eq!(page(Some(4), None, 2), (vec!["a".into(), "b".into()], true));
        assert_eq!(page(None, None, 2), (vec!["a".into(), "b".into()], true));
        assert!(!page(None, None, 5).1);
        assert_eq!(page(Some(usize::MAX), None, usize::MAX).0.len(), 5);
    }

    #[test]
    fn last_is_exclusive() {
        assert_eq!(
            page(Some(2), Some("b"), 100),
            (vec!["c".into(), "d".into()], true)
        );
        assert_eq!(
            page(Some(2), Some("c"), 100),
            (vec!["d".into(), "e".into()], false)
        );
        assert_eq!(page(None, Some("e"), 100), (vec![], false));
        assert_eq!(page(None, Some("zzz"), 100), (vec![], false));
        // A `last` that is not in the list still positions lexically.
        assert_eq!(page(Some(1), Some("bb"), 100), (vec!["c".into()], true));
        assert_eq!(page(None, Some(""), 100).0.len(), 5);
        assert_eq!(page(None, Some("\u{10FFFF}"), 100).0.len(), 0);
    }

    #[test]
    fn n_zero_is_empty_without_more() {
        assert_eq!(page(Some(0), None, 100), (vec![], false));
        assert_eq!(page(Some(0), Some("a"), 100), (vec![], false));
        assert_eq!(page(None, None, 0), (vec![], false));
        assert_eq!(page(Some(3), None, 0), (vec![], false));
    }

    #[test]
    fn empty_input() {
        assert_eq!(paginate([], &q(None, None), 10), (vec![], false));
        assert_eq!(paginate([], &q(Some(1), Some("x")), 10), (vec![], false));
    }

    #[test]
    fn ordering_is_bytewise() {
        // Go's sort.Strings order: uppercase before lowercase, bytes not code points locale.
        let tags = ["A", "B", "a", "b", "é"];
        let (got, more) = paginate(tags, &q(Some(2), Some("B")), 100);
        assert_eq!(got, vec!["a", "b"]);
        assert!(more);
        let (got, _) = paginate(tags, &q(None, Some("b")), 100);
        assert_eq!(got, vec!["é"]);
    }

    #[test]
    fn walking_pages_visits_everything_once() {
        let names: Vec<String> = (0..1000).map(|i| format!("repo{i:04}/x")).collect();
        for (n, max) in [
            (Some(1), 100),
            (Some(7), 100),
            (None, 33),
            (Some(1000), 1000),
            (Some(999), 10),
        ] {
            let mut query = q(n, None);
            let mut seen = Vec::new();
            loop {
                let (page, more) = paginate(names.iter().map(String::as_str), &query, max);
                assert!(page.len() <= max);
                seen.extend(page.iter().cloned());
                if !more {
                    break;
                }
                query.last = page.last().cloned();
            }
            assert_eq!(seen, names, "n={n:?} max={max}");
        }
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
