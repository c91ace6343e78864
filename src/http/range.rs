//! Byte ranges: the `Range` request header on blob GETs (resumable pulls) and the
//! `Content-Range` header on chunked-upload PATCHes.
//!
//! For `Range`, RFC 9110 §14.2 lets a server ignore a header it does not understand and send the
//! whole representation, so every malformed or unsupported form maps to [`ByteRange::Full`];
//! only a well-formed range that misses the blob is [`ByteRange::Unsatisfiable`] (416). That is
//! the safe direction: a confused client gets the full blob rather than an error it may not
//! handle. Multiple ranges are not served (no multipart responses), which the RFC allows.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    Full,
    /// `end` is inclusive and always `< len`, so `end - start + 1` never overflows.
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// `1*DIGIT` as a u64. `u64::from_str` alone would also accept a leading `+`, which the
/// grammar does not.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Interprets a `Range` header for a representation of `len` bytes.
///
/// Forms: `bytes=a-b`, `bytes=a-`, `bytes=-n`. An end past the blob is clamped (RFC 9110
/// §14.1.2); a start at or past the end, a zero-length suffix, or any range of an empty blob
/// cannot be satisfied. Numbers too large for u64 make the header ignored (Full), as does
/// `a > b`, which the RFC calls invalid.
pub fn parse_range(header: Option<&str>, len: u64) -> ByteRange {
    let Some(header) = header else {
        return ByteRange::Full;
    };
    let Some((unit, set)) = header.trim().split_once('=') else {
        return ByteRange::Full;
    };
    // Range units are case-insensitive (RFC 9110 §14.1).
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = set.trim_matches([' ', '\t']).split_once('-') else {
        return ByteRange::Full;
    };
    match (first.is_empty(), last.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => {
            let Some(suffix) = parse_digits(last) else {
                return ByteRange::Full;
            };
            if suffix == 0 || len == 0 {
                return ByteRange::Unsatisfiable;
            }
            ByteRange::Partial {
                start: len.saturating_sub(suffix),
                end: len - 1,
            }
        }
        // bytes=a-: from a to the end.
        (false, true) => {
            let Some(start) = parse_digits(first) else {
                return ByteRange::Full;
            };
            if start >= len {
                return ByteRange::Unsatisfiable;
            }
            ByteRange::Partial {
                start,
                end: len - 1,
            }
        }
        (false, false) => {
            let (Some(start), Some(end)) = (parse_digits(first), parse_digits(last)) else {
                return ByteRange::Full;
            };
            if start > end {
                return ByteRange::Full;
            }
            if start >= len {
                return ByteRange::Unsatisfiable;
            }
            ByteRange::Partial {
                start,
                end: end.min(len - 1),
            }
        }
        (true, true) => ByteRange::Full,
    }
}

/// The `Content-Range` value of a 206 response.
pub fn content_range(start: u64, end: u64, len: u64) -> String {
    format!("bytes {start}-{end}/{len}")
}

/// The `Content-Range` value of a 416 response (RFC 9110 §14.4: `bytes */len`).
pub fn unsatisfied_range(len: u64) -> String {
    format!("bytes */{len}")
}

/// Parses the `Content-Range` of an upload PATCH into inclusive `(start, end)`.
///
/// The spec's form is `<start>-<end>` (`^[0-9]+-[0-9]+$`), but some clients send the RFC 9110
/// form `bytes <start>-<end>[/<len>|/*]`, so both are taken. When a complete length is given,
/// the range must fit inside it. Anything else is `None`, and the caller answers 416 / 400.
pub fn parse_upload_range(header: &str) -> Option<(u64, u64)> {
    let header = header.trim();
    let range = match split_unit(header) {
        Some(rest) => {
            let rest = rest.trim_start();
            match rest.split_once('/') {
                Some((range, complete)) => {
                    let (start, end) = parse_pair(range)?;
                    if complete != "*" && end >= parse_digits(complete)? {
                        return None;
                    }
                    return Some((start, end));
                }
                None => rest,
            }
        }
        None => header,
    };
    parse_pair(range)
}

/// If `header` starts with the `bytes` unit followed by whitespace, the rest after it.
fn split_unit(header: &str) -> Option<&str> {
    let unit = header.get(..5)?;
    let rest = header.get(5..)?;
    if unit.eq_ignore_ascii_case("bytes") && rest.starts_with([' ', '\t']) {
        Some(rest)
    } else {
        None
    }
}

fn parse_pair(s: &str) -> Option<(u64, u64)> {
    let (start, end) = s.split_once('-')?;
    let (start, end) = (parse_digits(start)?, parse_digits(end)?);
    (start <= end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ByteRange::{Full, Partial, Unsatisfiable};

    fn r(h: &str, len: u64) -> ByteRange {
        parse_range(Some(h), len)
    }

    #[test]
    fn no_header_is_full() {
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(parse_range(None, 0), Full);
    }

    #[test]
    fn closed_ranges() {
        assert_eq!(r("bytes=0-4", 10), Partial { start: 0, end: 4 });
        assert_eq!(r("bytes=3-3", 10), Partial { start: 3, end: 3 });
        assert_eq!(r("bytes=0-9", 10), Partial { start: 0, end: 9 });
        // End beyond the blob is clamped.
        assert_eq!(r("bytes=5-100", 10), Partial { start: 5, end: 9 });
        assert_eq!(
            r("bytes=0-18446744073709551615", 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(r("bytes=9-9", 10), Partial { start: 9, end: 9 });
        // Start at or past the end.
        assert_eq!(r("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(r("bytes=10-10", 10), Unsatisfiable);
        // start > end is invalid: ignored.
        assert_eq!(r("bytes=5-4", 10), Full);
        assert_eq!(r("bytes=50-40", 10), Full);
    }

    #[test]
    fn open_and_suffix_ranges() {
        assert_eq!(r("bytes=4-", 10), Partial { start: 4, end: 9 });
        assert_eq!(r("bytes=0-", 10), Partial { start: 0, end: 9 });
        assert_eq!(r("bytes=9-", 10), Partial { start: 9, end: 9 });
        assert_eq!(r("bytes=10-", 10), Unsatisfiable);
        assert_eq!(r("bytes=-3", 10), Partial { start: 7, end: 9 });
        assert_eq!(r("bytes=-10", 10), Partial { start: 0, end: 9 });
        assert_eq!(r("bytes=-1000", 10), Partial { start: 0, end: 9 });
        assert_eq!(
            r("bytes=-18446744073709551615", 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(r("bytes=-0", 10), Unsatisfiable);
        assert_eq!(r("bytes=-000", 10), Unsatisfiable);
    }

    #[test]
    fn empty_blob() {
        for h in ["bytes=0-0", "bytes=0-", "bytes=-1", "bytes=-0", "bytes=5-9"] {
            assert_eq!(r(h, 0), Unsatisfiable, "{h}");
        }
        assert_eq!(r("bytes=1-0", 0), Full);
        assert_eq!(r("garbage", 0), Full);
    }

    #[test]
    fn huge_lengths() {
        let max = u64::MAX;
        assert_eq!(
            r("bytes=0-", max),
            Partial {
                start: 0,
                end: max - 1
            }
        );
        assert_eq!(
            r("bytes=-1", max),
            Partial {
                start: max - 1,
                end: max - 1
            }
        );
        assert_eq!(
            r("bytes=18446744073709551614-18446744073709551615", max),
            Partial {
                start: max - 1,
                end: max - 1
            }
        );
        assert_eq!(r("bytes=18446744073709551615-", max), Unsatisfiable);
    }

    #[test]
    fn overflow_is_ignored() {
        assert_eq!(r("bytes=18446744073709551616-", 10), Full);
        assert_eq!(r("bytes=0-18446744073709551616", 10), Full);
        assert_eq!(r("bytes=-18446744073709551616", 10), Full);
        assert_eq!(r(&format!("bytes=0-{}", "9".repeat(10_000)), 10), Full);
    }

    #[test]
    fn unit_and_whitespace_tolerance() {
        assert_eq!(r("BYTES=0-1", 10), Partial { start: 0, end: 1 });
        assert_eq!(r("Bytes=0-1", 10), Partial { start: 0, end: 1 });
        assert_eq!(r("  bytes=0-1  ", 10), Partial { start: 0, end: 1 });
        assert_eq!(r("bytes= 0-1", 10), Partial { start: 0, end: 1 });
        assert_eq!(r("bytes = 0-1", 10), Partial { start: 0, end: 1 });
    }

    #[test]
    fn malformed_and_unsupported_are_full() {
        for h in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=--1",
            "bytes=1--2",
            "bytes=a-b",
            "bytes=0x1-2",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=-+2",
            "bytes=1 - 2",
            "bytes=1-2-3",
            "bytes=0-1,3-4",
            "bytes=0-1,",
            "bytes=,0-1",
            "items=0-1",
            "bits=0-1",
            "bytes 0-1",
            "=0-1",
            "bytes=1.5-2",
            "bytes=١-٢",
            "bytes=0-1\0",
            "bytes=\u{1F600}",
            "bytes==0-1",
        ] {
            assert_eq!(r(h, 10), Full, "{h:?}");
        }
    }

    #[test]
    fn content_range_formats() {
        assert_eq!(content_range(0, 9, 10), "bytes 0-9/10");
        assert_eq!(
            content_range(u64::MAX - 1, u64::MAX - 1, u64::MAX),
            "bytes 18446744073709551614-18446744073709551614/18446744073709551615"
        );
        assert_eq!(unsatisfied_range(10), "bytes */10");
    }

    #[test]
    fn content_range_round_trips_through_upload_parser() {
        assert_eq!(parse_upload_range(&content_range(5, 9, 10)), Some((5, 9)));
    }

    #[test]
    fn upload_range_forms() {
        assert_eq!(parse_upload_range("0-99"), Some((0, 99)));
        assert_eq!(parse_upload_range("100-100"), Some((100, 100)));
        assert_eq!(parse_upload_range(" 0-99 "), Some((0, 99)));
        assert_eq!(parse_upload_range("bytes 0-99"), Some((0, 99)));
        assert_eq!(parse_upload_range("BYTES 0-99"), Some((0, 99)));
        assert_eq!(parse_upload_range("bytes  0-99"), Some((0, 99)));
        assert_eq!(parse_upload_range("bytes 0-99/100"), Some((0, 99)));
        assert_eq!(parse_upload_range("bytes 0-99/*"), Some((0, 99)));
        assert_eq!(parse_upload_range("bytes 0-99/1000"), Some((0, 99)));
        assert_eq!(
            parse_upload_range("0-18446744073709551615"),
            Some((0, u64::MAX))
        );
    }

    #[test]
    fn upload_range_rejects_malformed() {
        for h in [
            "",
            "-",
            "0-",
            "-99",
            "99-0",
            "5-4",
            "a-b",
            "+0-99",
            "0-+99",
            "0 - 99",
            "0-99-100",
            "0-99/100",
            "bytes=0-99",
            "bytes0-99",
            "bytes 0-99/",
            "bytes 0-99/abc",
            "bytes 0-99/99",
            "bytes 0-99/50",
            "bytes 0-99/+100",
            "bytes 0-99/*/*",
            "bytes */100",
            "bytes 0-99 /100",
            "items 0-99",
            "0-18446744073709551616",
            "18446744073709551616-18446744073709551617",
            "0-1\0",
            "ｂytes 0-1",
            "é",
            "bytes",
            "byte",
            "bytes ",
        ] {
            assert_eq!(parse_upload_range(h), None, "{h:?}");
        }
    }
}
