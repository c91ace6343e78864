//! Semantic Versioning 2.0.0, the order of npm and crates.io advisories (and, through
//! [`super::go`], of Go's): `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`. The three numbers
//! compare as numbers; a pre-release sorts before its release; pre-release identifiers compare
//! one by one, numeric ones as numbers and before alphanumeric ones (compared in ASCII order),
//! and the longer list wins a tie; build metadata is checked but never ordered.
//!
//! What is a version follows npm's `semver.compare(a, b)` in its default strict mode, which
//! takes all that crates.io's `semver` crate does short of numbers past 2^53 - 1: surrounding
//! whitespace (ECMAScript's) is trimmed and one leading `v` allowed; numbers have no leading
//! zeros; MAJOR, MINOR and PATCH are at most 2^53 - 1; a version is at most 256 UTF-16 units
//! long. npm's loose mode (`=1.2.3`, `1.2.3beta`) is not a version here.
//! One deliberate difference: npm compares numeric pre-release identifiers past 2^53 - 1 as
//! rounded floats, this compares them exactly, as the specification asks. Pure; tested against
//! npm's `semver` package.

use std::cmp::Ordering;

/// A decimal number of any length, compared by value without converting it: advisories hold
/// dates and build stamps longer than any integer type, and a number that overflows must not
/// turn into a wrong answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Number<'a>(&'a str);

impl<'a> Number<'a> {
    pub const ZERO: Number<'static> = Number("0");

    /// The number `digits` spell, leading zeros allowed (`007` is 7); None unless `digits`
    /// is one or more ASCII digits.
    pub fn new(digits: &'a str) -> Option<Number<'a>> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let significant = digits.trim_start_matches('0');
        Some(if significant.is_empty() {
            Number::ZERO
        } else {
            Number(significant)
        })
    }

    /// Like [`Number::new`], but refusing leading zeros, as SemVer does for its numbers.
    pub fn canonical(digits: &'a str) -> Option<Number<'a>> {
        if digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        Number::new(digits)
    }

    /// The digits without leading zeros (`0` for zero).
    pub fn digits(self) -> &'a str {
        self.0
    }

    fn at_most(self, limit: u64) -> bool {
        self.0.parse::<u64>().is_ok_and(|n| n <= limit)
    }
}

impl Ord for Number<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Without leading zeros, the longer number is the larger one.
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(other.0))
    }
}

impl PartialOrd for Number<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One dot-separated pre-release identifier. The variants' order is the specification's:
/// numeric identifiers before alphanumeric ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Identifier<'a> {
    Numeric(Number<'a>),
    /// Compared in ASCII order (`Z` before `a`).
    Alphanumeric(&'a str),
}

impl<'a> Identifier<'a> {
    /// One identifier of `[0-9A-Za-z-]`; None when empty, another character, or digits with a
    /// leading zero.
    pub fn parse(text: &'a str) -> Option<Identifier<'a>> {
        if !is_identifier(text) {
            return None;
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            Number::canonical(text).map(Identifier::Numeric)
        } else {
            Some(Identifier::Alphanumeric(text))
        }
    }
}

/// A version, its build metadata checked and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version<'a> {
    pub major: Number<'a>,
    pub minor: Number<'a>,
    pub patch: Number<'a>,
    /// Empty for a release.
    pub pre: Vec<Identifier<'a>>,
}

/// npm's limits (`MAX_LENGTH`, `Number.MAX_SAFE_INTEGER`).
const NPM_MAX_LENGTH: usize = 256;
const NPM_MAX_NUMBER: u64 = (1 << 53) - 1;

impl<'a> Version<'a> {
    /// A version as npm's strict `semver.parse` reads it (see the module's documentation).
    pub fn parse(text: &'a str) -> Option<Version<'a>> {
        if text.encode_utf16().count() > NPM_MAX_LENGTH {
            return None;
        }
        let text = text.trim_matches(ecmascript_space);
        let version = Version::parse_bare(text.strip_prefix('v').unwrap_or(text))?;
        [version.major, version.minor, version.patch]
            .iter()
            .all(|n| n.at_most(NPM_MAX_NUMBER))
            .then_some(version)
    }

    /// Exactly the specification's grammar: no prefix, no whitespace, numbers of any size.
    pub fn parse_bare(text: &'a str) -> Option<Version<'a>> {
        let (text, build) = match text.split_once('+') {
            Some((text, build)) => (text, Some(build)),
            None => (text, None),
        };
        if build.is_some_and(|b| !b.split('.').all(is_identifier)) {
            return None;
        }
        let (core, pre) = match text.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (text, None),
        };
        let mut numbers = core.split('.');
        let (Some(major), Some(minor), Some(patch), None) = (
            numbers.next(),
            numbers.next(),
            numbers.next(),
            numbers.next(),
        ) else {
            return None;
        };
        Some(Version {
            major: Number::canonical(major)?,
            minor: Number::canonical(minor)?,
            patch: Number::canonical(patch)?,
            pre: match pre {
                Some(pre) => pre
                    .split('.')
                    .map(Identifier::parse)
                    .collect::<Option<_>>()?,
                None => Vec::new(),
            },
        })
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.major
            .cmp(&other.major)
            .then_with(|| self.minor.cmp(&other.minor))
            .then_with(|| self.patch.cmp(&other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                // Identifier by identifier; a list that is a prefix of the other is less.
                (false, false) => self.pre.cmp(&other.pre),
            })
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `a` against `b` in SemVer's order; None when either is not a version npm accepts.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(Version::parse(a)?.cmp(&Version::parse(b)?))
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// What ECMAScript's `String.prototype.trim` removes (npm trims with it).
fn ecmascript_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::version::reference;

    /// Versions chosen for the rules' edges: pre-release identifiers numeric against
    /// alphanumeric, numbers past one digit, longer identifier lists, hyphens inside
    /// identifiers, build metadata (ignored), npm's `v` and whitespace, the largest numbers
    /// npm takes.
    const CORPUS: &[&str] = &[
        "0.0.0",
        "0.0.1",
        "0.1.0",
        "1.0.0",
        "v1.0.0",
        " 1.0.0\t",
        "\u{feff}1.0.0\u{a0}",
        "1.0.0+build",
        "1.0.0+build.2.b8f12d7",
        "1.0.0+001",
        "1.0.0-0",
        "1.0.0-0.0",
        "1.0.0-1",
        "1.0.0-2",
        "1.0.0-10",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-alpha.-",
        "1.0.0-alpha-1",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0-rc.1+build.1",
        "1.0.0-RC.1",
        "1.0.0-rc1",
        "1.0.0-rc.1.0",
        "1.0.0-0a",
        "1.0.0-a0",
        "1.0.0--",
        "1.0.0-x.7.z.92",
        "1.0.0-x-y-z.--",
        "1.0.1",
        "1.1.0",
        "1.2.3",
        "1.2.3-4",
        "1.2.3-pre.4",
        "1.9.0",
        "1.10.0",
        "1.11.0",
        "2.0.0",
        "10.0.0",
        "10.20.30",
        "99999999999.0.0",
        "9007199254740991.0.0",
        "1.0.0-999999999999999",
    ];

    /// Strings npm refuses, and so does this order.
    const REFUSED: &[&str] = &[
        "",
        "1",
        "1.2",
        "1.2.3.4",
        "01.2.3",
        "1.02.3",
        "1.2.03",
        "1.2.3-01",
        "1.2.3-",
        "1.2.3-a..b",
        "1.2.3+",
        "1.2.3+a..b",
        "1.2.3-a_b",
        "=1.2.3",
        "vv1.2.3",
        "V1.2.3",
        "v 1.2.3",
        "1.2.3beta",
        "1.2.3 -beta",
        "1.2.3-beta+",
        "a.b.c",
        "-1.2.3",
        "9007199254740992.0.0",
        "1.2.3-é",
    ];

    /// npm's longest version (256 units), and `extra` characters more.
    fn longest(extra: usize) -> String {
        format!("1.0.0-{}", "a".repeat(250 + extra))
    }

    #[test]
    fn the_rules_edges() {
        use Ordering::*;
        let cases = [
            ("1.0.0-alpha", "1.0.0", Less),
            ("1.0.0-alpha", "1.0.0-alpha.1", Less),
            ("1.0.0-alpha.1", "1.0.0-alpha.beta", Less),
            ("1.0.0-beta.2", "1.0.0-beta.11", Less),
            ("1.0.0-rc.1", "1.0.0-RC.1", Greater),
            ("1.0.0-999", "1.0.0-a", Less),
            ("1.9.0", "1.10.0", Less),
            ("1.0.0+a", "1.0.0+b", Equal),
            ("v1.0.0", "1.0.0", Equal),
            (
                "1.0.0-12345678901234567890",
                "1.0.0-12345678901234567891",
                Less,
            ),
        ];
        reference::assert_both_ways(compare, &cases);
        for bad in REFUSED {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Version::parse(&longest(1)), None);
        assert!(Version::parse(&longest(0)).is_some());
        assert!(Version::parse_bare("99999999999999999999.0.0").is_some());
        assert_eq!(Version::parse_bare("v1.0.0"), None);
        let v = Version::parse("1.2.3-rc.04x.5+b").unwrap();
        assert_eq!(
            v.pre,
            [
                Identifier::Alphanumeric("rc"),
                Identifier::Alphanumeric("04x"),
                Identifier::Numeric(Number::new("5").unwrap())
            ]
        );
        assert_eq!(Number::new("007"), Number::new("7"));
        assert_eq!(Number::new("000").map(Number::digits), Some("0"));
        assert_eq!(Number::canonical("07"), None);
        assert_eq!(Number::new(""), None);
    }

    /// Where `npm install --prefix` put the `semver` package (CI: `.ci/run` installs it).
    fn npm_semver() -> Option<std::path::PathBuf> {
        let modules = crate::testing::reference_cache()?.join("npm/node_modules");
        modules
            .join("semver/package.json")
            .is_file()
            .then_some(modules)
    }

    /// Every pair of the corpus and the refused strings against npm's `semver.compare` itself,
    /// in one node process: `x` where npm throws (an invalid version).
    #[test]
    fn agrees_with_npm_semver_on_every_pair() {
        let Some(modules) = npm_semver() else {
            reference::skipped(
                "npm's semver is not installed (npm install --prefix ~/.cache/ringyard-ci/npm \
                 semver)",
            );
            return;
        };
        let (longest, too_long) = (longest(0), longest(1));
        let all: Vec<&str> = CORPUS
            .iter()
            .chain(REFUSED)
            .copied()
            .chain([longest.as_str(), too_long.as_str()])
            .collect();
        let script = r#"
            const semver = require("semver");
            const vs = JSON.parse(require("fs").readFileSync(0, "utf8"));
            const out = [];
            for (const a of vs) for (const b of vs) {
                try { out.push(String(semver.compare(a, b))); } catch (e) { out.push("x"); }
            }
            console.log(out.join(" "));
        "#;
        let out = match reference::run_with_versions(
            std::process::Command::new("node")
                .args(["-e", script])
                .env("NODE_PATH", &modules),
            &all,
        ) {
            Ok(out) => out,
            Err(e) => {
                reference::skipped(&format!("node cannot run ({e})"));
                return;
            }
        };
        assert!(out.status.success(), "node failed");
        reference::assert_agree("npm", &all, reference::answers(&out.stdout), compare);
        // The corpus is all versions, so most pairs are real comparisons.
        assert!(CORPUS.iter().all(|v| Version::parse(v).is_some()));
    }
}
