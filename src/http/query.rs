//! Query strings: decoding what clients send (`n`, `last`, `digest`, `mount`, `from`,
//! `artifactType`) and encoding what the registry puts into `Link` and `Location` headers.
//!
//! This is RFC 3986 percent-encoding, not HTML form encoding: `+` is a literal plus. Nothing the
//! registry reads needs a space, while `+` does appear in values (media types such as
//! `application/vnd.oci.image.manifest.v1+json` in `artifactType`), so turning it into a space
//! would corrupt them.

/// Splits a query (the part after `?`; one leading `?` is tolerated) into decoded pairs, in
/// order. A segment without `=` is a key with an empty value; empty segments (`a=1&&b=2`) are
/// skipped. Malformed escapes are kept literally and invalid UTF-8 is replaced, so this never
/// fails: deciding what a bad value means is the caller's job.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    raw_pairs(query)
        .map(|(key, value)| (percent_decode(key), percent_decode(value)))
        .collect()
}

/// The first value for `key`. With duplicates the first wins, as with Go's `url.Values.Get`,
/// which is what the reference registry and most clients use.
pub fn query_get(query: &str, key: &str) -> Option<String> {
    raw_pairs(query).find_map(|(k, v)| (percent_decode(k) == key).then(|| percent_decode(v)))
}

fn raw_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    let query = query.strip_prefix('?').unwrap_or(query);
    query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| segment.split_once('=').unwrap_or((segment, "")))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XY` escapes; a `%` not followed by two hex digits stays as it is.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    if !bytes.contains(&b'%') {
        return s.to_string();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes everything but the RFC 3986 unreserved set and `/`.
///
/// `/` is kept because repository names contain it (the catalog's `last` is a name) and it is
/// legal unencoded in a query (RFC 3986 §3.4); everything that could end a parameter (`&`, `=`,
/// `#`), start a new header (CR, LF) or close a `Link` target (`>`) is encoded.
pub fn percent_encode_component(s: &str) -> String {
    percent_encode_except(s, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/')
    })
}

/// Percent-encodes every byte for which `keep` is false.
pub fn percent_encode_except(s: &str, keep: impl Fn(u8) -> bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        query_pairs(q)
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn splits_and_decodes() {
        assert_eq!(pairs("n=10&last=foo"), vec![p("n", "10"), p("last", "foo")]);
        assert_eq!(pairs("last=a%2Fb"), vec![p("last", "a/b")]);
        assert_eq!(pairs("a%3Db=c%26d"), vec![p("a=b", "c&d")]);
        assert_eq!(pairs("x=1=2"), vec![p("x", "1=2")]);
        assert_eq!(pairs("flag"), vec![p("flag", "")]);
        assert_eq!(pairs("flag="), vec![p("flag", "")]);
        assert_eq!(pairs("=v"), vec![p("", "v")]);
        assert_eq!(pairs("?n=1"), vec![p("n", "1")]);
    }

    #[test]
    fn empty_input_and_segments() {
        assert!(pairs("").is_empty());
        assert!(pairs("?").is_empty());
        assert!(pairs("&&&").is_empty());
        assert_eq!(pairs("a=1&&b=2&"), vec![p("a", "1"), p("b", "2")]);
    }

    #[test]
    fn plus_is_literal() {
        assert_eq!(
            pairs("artifactType=application/vnd.oci.image.manifest.v1+json"),
            vec![p(
                "artifactType",
                "application/vnd.oci.image.manifest.v1+json"
            )]
        );
        assert_eq!(pairs("a=%2B+"), vec![p("a", "++")]);
        assert_eq!(pairs("a=%20"), vec![p("a", " ")]);
    }

    #[test]
    fn malformed_escapes_are_kept() {
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%%"), "%%");
        assert_eq!(percent_decode("%2"), "%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%g1%41"), "%g1A");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%%41"), "%A");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
        assert_eq!(percent_decode("%E2%82%AC"), "€");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(percent_decode("%ff"), "\u{FFFD}");
        assert_eq!(percent_decode("a%c3"), "a\u{FFFD}");
        assert_eq!(percent_decode("%c3%a9"), "é");
        assert_eq!(percent_decode("%00"), "\0");
    }

    #[test]
    fn hostile_values_decode_without_interpretation() {
        assert_eq!(
            query_get("last=..%2F..%2Fetc%2Fpasswd", "last").as_deref(),
            Some("../../etc/passwd")
        );
        assert_eq!(
            query_get("x=%0d%0aSet-Cookie:%20a", "x").as_deref(),
            Some("\r\nSet-Cookie: a")
        );
        assert_eq!(query_get("ü=ö", "ü").as_deref(), Some("ö"));
        let long = "a".repeat(1_000_000);
        assert_eq!(
            query_get(&format!("k={long}"), "k").map(|v| v.len()),
            Some(1_000_000)
        );
    }

    #[test]
    fn get_returns_first_match() {
        assert_eq!(query_get("n=1&n=2", "n").as_deref(), Some("1"));
        assert_eq!(query_get("a=1&n=2", "n").as_deref(), Some("2"));
        assert_eq!(query_get("a=1", "n"), None);
        assert_eq!(query_get("", "n"), None);
        assert_eq!(query_get("n", "n").as_deref(), Some(""));
        assert_eq!(query_get("%6E=5", "n").as_deref(), Some("5"));
        assert_eq!(query_get("N=5", "n"), None);
        assert_eq!(query_get("nn=5", "n"), None);
    }

    #[test]
    fn encode_keeps_unreserved_and_slash() {
        assert_eq!(percent_encode_component("AZaz09-._~/"), "AZaz09-._~/");
        assert_eq!(percent_encode_component("library/ubuntu"), "library/ubuntu");
        assert_eq!(percent_encode_component(""), "");
    }

    #[test]
    fn encode_escapes_the_rest() {
        assert_eq!(percent_encode_component("a b"), "a%20b");
        assert_eq!(percent_encode_component("a+b"), "a%2Bb");
        assert_eq!(percent_encode_component("&=#?%"), "%26%3D%23%3F%25");
        assert_eq!(percent_encode_component("<>\""), "%3C%3E%22");
        assert_eq!(percent_encode_component("\r\n\0"), "%0D%0A%00");
        assert_eq!(percent_encode_component("é€"), "%C3%A9%E2%82%AC");
        assert_eq!(percent_encode_component(":"), "%3A");
    }

    #[test]
    fn encode_then_decode_round_trips() {
        for s in [
            "",
            "simple",
            "a/b/c",
            "a b+c&d=e#f?g%h",
            "ünïcödé \u{1F600}",
            "\0\r\n\t",
            "%41",
            "sha256:abc",
        ] {
            let encoded = percent_encode_component(s);
            assert_eq!(percent_decode(&encoded), s);
            assert_eq!(query_get(&format!("k={encoded}"), "k").as_deref(), Some(s));
        }
    }
}
