//! Repository names, tags and the `<reference>` path segment.
//!
//! Names and tags end up as path components in the store and as keys in the metadata database,
//! so they are checked against the spec grammar before anything else touches them. The matchers
//! are written by hand: the grammars are tiny, and a hand-written matcher is linear, cannot be
//! made to backtrack, and needs no regex dependency.

use super::error::{Error, Result};
use crate::oci::digest::Digest;
use std::fmt;

/// The spec (v1.1) says many clients cap `host/name` at 255 characters; a name alone that is
/// longer could never be pulled through them.
pub const MAX_NAME_LEN: usize = 255;

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub const MAX_TAG_LEN: usize = 128;

/// Error details echo the input so clients see what was rejected, but a hostile client must not
/// be able to make the error body arbitrarily large.
const DETAIL_MAX_CHARS: usize = 256;

fn truncated(s: &str) -> String {
    s.chars().take(DETAIL_MAX_CHARS).collect()
}

/// Checks `name` against the distribution-spec v1.1 grammar
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
///
/// Because every component must start and end with `[a-z0-9]`, names such as `..`, `a/../b`,
/// `/a`, `a//b` or `a/` are rejected here, which is what keeps names safe as store paths.
pub fn validate_name(name: &str) -> Result<()> {
    if !name.is_empty() && name.len() <= MAX_NAME_LEN && name.split('/').all(is_valid_component) {
        return Ok(());
    }
    let message = if name.len() > MAX_NAME_LEN {
        format!("repository name longer than {MAX_NAME_LEN} characters")
    } else {
        "invalid repository name".to_string()
    };
    Err(Error::NameInvalid {
        message,
        name: truncated(name),
    })
}

fn is_name_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
///
/// Scanned as alternating runs: an alphanumeric run, then a separator run that must be exactly
/// `.`, `_`, `__` or one or more `-`, then another alphanumeric run, and so on. A separator run
/// at either end, or any other separator run, fails.
fn is_valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let mut i = 0;
    loop {
        // An alphanumeric run is required at the start and after every separator.
        let run_start = i;
        while i < bytes.len() && is_name_alnum(bytes[i]) {
            i += 1;
        }
        if i == run_start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let sep_start = i;
        while i < bytes.len() && matches!(bytes[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        if i == sep_start {
            // Neither alphanumeric nor separator: uppercase, '/', unicode, control bytes...
            return false;
        }
        let sep = &bytes[sep_start..i];
        let ok = matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|&b| b == b'-');
        if !ok {
            return false;
        }
    }
}

/// Checks `tag` against `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
///
/// A tag cannot start with `.` or `-`, so `.`, `..` and option-like strings are never tags, and
/// it cannot contain `:` or `/`, so it is never confused with a digest or a path.
pub fn validate_tag(tag: &str) -> Result<()> {
    let bytes = tag.as_bytes();
    let valid = match bytes.split_first() {
        Some((&first, rest)) => {
            (first.is_ascii_alphanumeric() || first == b'_')
                && rest.len() < MAX_TAG_LEN
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        None => false,
    };
    if valid {
        return Ok(());
    }
    let message = if bytes.len() > MAX_TAG_LEN {
        format!("tag longer than {MAX_TAG_LEN} characters")
    } else {
        "invalid tag".to_string()
    };
    Err(Error::TagInvalid {
        message,
        tag: truncated(tag),
    })
}

/// The `<reference>` of `/v2/<name>/manifests/<reference>`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// A `:` cannot occur in a tag, so its presence is what makes the reference a digest; an
    /// invalid digest is then a digest error rather than a tag error, which is the more useful
    /// message for a client that clearly meant a digest.
    pub fn parse(s: &str) -> Result<Reference> {
        if s.contains(':') {
            Digest::parse(s).map(Reference::Digest)
        } else {
            validate_tag(s)?;
            Ok(Reference::Tag(s.to_string()))
        }
    }

    pub fn as_tag(&self) -> Option<&str> {
        match self {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        }
    }

    pub fn as_digest(&self) -> Option<&Digest> {
        match self {
            Reference::Tag(_) => None,
            Reference::Digest(d) => Some(d),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => fmt::Display::fmt(d, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn accepts_valid_names() {
        for name in [
            "a",
            "0",
            "library/ubuntu",
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a--b",
            "a---------b",
            "a.b_c__d-e--f",
            "foo/bar/baz/qux",
            "9/8/7",
            "abc123/def.456",
            "a-b.c/d_e",
            "conformance-0a1b2c3d/tests",
        ] {
            assert!(validate_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_invalid_names() {
        for name in [
            "",
            "/",
            "A",
            "Library/ubuntu",
            "a/",
            "/a",
            "a//b",
            ".",
            "..",
            "../a",
            "a/../b",
            "a/./b",
            "a/..",
            "a..b",
            "a___b",
            "a._b",
            "a_.b",
            "a-.b",
            "a.-b",
            "a-_b",
            "_a",
            "a_",
            "-a",
            "a-",
            ".a",
            "a.",
            "a b",
            " a",
            "a\n",
            "a\0b",
            "a:b",
            "a@b",
            "a\\b",
            "a%2fb",
            "café",
            "ａ",
            "a/b/",
            "a/-b",
        ] {
            let e = validate_name(name).unwrap_err();
            assert!(matches!(e, Error::NameInvalid { .. }), "{name:?}");
            assert!(
                matches!(&e, Error::NameInvalid { name: n, .. } if n == name),
                "{name:?}"
            );
        }
    }

    #[test]
    fn name_length_limit_is_255() {
        let ok = "a".repeat(255);
        assert!(validate_name(&ok).is_ok());
        let too_long = "a".repeat(256);
        let e = validate_name(&too_long).unwrap_err();
        assert!(matches!(e, Error::NameInvalid { .. }));
        // Slashes count towards the length.
        let with_slashes = format!("{}/{}", "a".repeat(127), "b".repeat(127));
        assert_eq!(with_slashes.len(), 255);
        assert!(validate_name(&with_slashes).is_ok());
        assert!(validate_name(&format!("{with_slashes}c")).is_err());
    }

    #[test]
    fn name_error_detail_is_truncated() {
        let huge = "Z".repeat(1_000_000);
        let e = validate_name(&huge).unwrap_err();
        let Error::NameInvalid { name, .. } = e else {
            panic!("{e}")
        };
        assert_eq!(name.chars().count(), 256);
        // Truncation counts characters, so multi-byte input is never cut mid-character.
        let wide = "é".repeat(1000);
        let e = validate_name(&wide).unwrap_err();
        assert!(matches!(e, Error::NameInvalid { name, .. } if name == "é".repeat(256)));
    }

    #[test]
    fn pathological_names_are_fast() {
        // A backtracking regex would blow up on alternating separators; this matcher is linear.
        let s = "a-".repeat(100) + "!";
        assert!(validate_name(&s).is_err());
        let s = "a".repeat(10_000_000);
        assert!(validate_name(&s).is_err());
    }

    #[test]
    fn accepts_valid_tags() {
        for tag in [
            "latest",
            "v1.0.0",
            "_",
            "_x",
            "A",
            "9",
            "a-b_c.d",
            "1.2.3-rc.1_build-4",
        ] {
            assert!(validate_tag(tag).is_ok(), "{tag}");
        }
        assert!(validate_tag(&"a".repeat(128)).is_ok());
        assert!(validate_tag(&format!("_{}", ".".repeat(127))).is_ok());
    }

    #[test]
    fn rejects_invalid_tags() {
        for tag in [
            "", ".", "..", "-", "-latest", ".hidden", "a/b", "../etc", "a:b", "a b", "a\n", "a\0",
            "tâg", "a@b", "a+b", "a%20",
        ] {
            let e = validate_tag(tag).unwrap_err();
            assert!(matches!(e, Error::TagInvalid { .. }), "{tag:?}");
            assert!(
                matches!(&e, Error::TagInvalid { tag: t, .. } if t == tag),
                "{tag:?}"
            );
        }
        let e = validate_tag(&"a".repeat(129)).unwrap_err();
        assert!(matches!(e, Error::TagInvalid { .. }));
        let e = validate_tag(&"a".repeat(100_000)).unwrap_err();
        assert!(matches!(e, Error::TagInvalid { tag, .. } if tag.len() == 256));
    }

    #[test]
    fn reference_parses_tags_and_digests() {
        assert_eq!(
            Reference::parse("latest").unwrap(),
            Reference::Tag("latest".into())
        );
        let r = Reference::parse(EMPTY).unwrap();
        assert_eq!(r, Reference::Digest(Digest::parse(EMPTY).unwrap()));
        assert_eq!(r.as_digest().map(|d| d.as_str()), Some(EMPTY));
        assert_eq!(r.as_tag(), None);
        assert_eq!(Reference::parse("v1").unwrap().as_tag(), Some("v1"));
    }

    #[test]
    fn reference_errors_pick_the_right_code() {
        for bad in [
            "sha256:abc",
            "md5:x",
            ":",
            "latest:",
            "a:b",
            "sha256:../../etc",
        ] {
            let e = Reference::parse(bad).unwrap_err();
            assert!(matches!(e, Error::DigestInvalid { .. }), "{bad}");
        }
        for bad in ["", "../x", "-x", "x/y"] {
            let e = Reference::parse(bad).unwrap_err();
            assert!(matches!(e, Error::TagInvalid { .. }), "{bad}");
        }
    }

    #[test]
    fn reference_display_round_trips() {
        for s in ["latest", "_v1.2-3", EMPTY] {
            let r = Reference::parse(s).unwrap();
            assert_eq!(r.to_string(), s);
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
        }
    }
}
