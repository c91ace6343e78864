//! Alpine's version order (apk-tools' `version.c`, shared by Wolfi and Chainguard):
//! `digits{.digits}...{letter}{_suffix{digits}}...{~hash}{-r digits}`. Two versions are read
//! token by token while their tokens are of the same kind: numbers as numbers, except that
//! after the first a number with a leading zero compares as text (`1.02 < 1.1`, Gentoo's
//! rule); letters, suffixes by their rank (`_alpha < _beta < _pre < _rc <` none `< _cvs <
//! _svn < _git < _hg < _p`), commit hashes as text. Where the kinds part, a pre-release
//! suffix loses, then the version whose next token comes earlier in that list wins
//! (`1.0.1 > 1.0a > 1.0_p1 > 1.0-r1 > 1.0`).
//!
//! apk also orders strings that are not versions (by whatever tokens it can read); a range
//! event that apk-tools itself would call invalid is not trusted here: None. Numbers are
//! compared exactly where apk-tools' 64-bit reading would wrap. Pure; tested against
//! apk-tools' own test vectors (there is no `apk` on the machines that build this).

use std::cmp::Ordering;

use super::semver::Number;

/// A token's kind, in the order `version.c` ranks them where two versions' kinds part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    FirstNumber,
    Number,
    Letter,
    Suffix,
    SuffixNumber,
    CommitHash,
    Revision,
    End,
}

/// The known suffixes in their order; those before `_cvs` mark pre-releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Suffix {
    Alpha,
    Beta,
    Pre,
    Rc,
    Cvs,
    Svn,
    Git,
    Hg,
    P,
}

impl Suffix {
    fn parse(text: &str) -> Option<Suffix> {
        Some(match text {
            "alpha" => Suffix::Alpha,
            "beta" => Suffix::Beta,
            "pre" => Suffix::Pre,
            "rc" => Suffix::Rc,
            "cvs" => Suffix::Cvs,
            "svn" => Suffix::Svn,
            "git" => Suffix::Git,
            "hg" => Suffix::Hg,
            "p" => Suffix::P,
            _ => return None,
        })
    }

    fn is_pre_release(self) -> bool {
        self <= Suffix::Rc
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token<'a> {
    kind: Kind,
    /// The token's own text: digits, the letter, the suffix's name or the hash.
    text: &'a str,
    suffix: Option<Suffix>,
}

impl<'a> Token<'a> {
    const END: Token<'static> = Token {
        kind: Kind::End,
        text: "",
        suffix: None,
    };

    /// The token `kind` over `text[from..to]`; None when that is empty.
    fn new(
        text: &'a str,
        kind: Kind,
        from: usize,
        to: usize,
        suffix: Option<Suffix>,
    ) -> Option<Token<'a>> {
        let text = text.get(from..to).filter(|t| !t.is_empty())?;
        Some(Token { kind, text, suffix })
    }
}

/// A version read into its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version<'a> {
    tokens: Vec<Token<'a>>,
}

impl<'a> Version<'a> {
    /// Reads `text`; None where apk-tools' `apk_version_validate` says invalid (an unknown
    /// suffix, a letter after a suffix, uppercase, a `-` not followed by `r` and digits, ...).
    pub fn parse(text: &'a str) -> Option<Version<'a>> {
        let bytes = text.as_bytes();
        // Where the run of bytes `accept` takes, starting at `from`, ends.
        let span = |from: usize, accept: fn(&u8) -> bool| {
            let rest = bytes.get(from..).unwrap_or_default();
            from + rest.iter().take_while(|b| accept(b)).count()
        };
        let digits = span(0, u8::is_ascii_digit);
        let mut tokens = vec![Token::new(text, Kind::FirstNumber, 0, digits, None)?];
        let mut at = digits;
        while let Some(&c) = bytes.get(at) {
            let previous = tokens.last().map_or(Kind::End, |t| t.kind);
            // Each kind may only follow those ranked before it (a few only some of them).
            let (kind, from, to, suffix) = match c {
                b'a'..=b'z' if previous <= Kind::Number => (Kind::Letter, at, at + 1, None),
                b'.' | b'0'..=b'9' => {
                    let from = at + usize::from(c == b'.');
                    let kind = match previous {
                        Kind::FirstNumber | Kind::Number => Kind::Number,
                        Kind::Suffix if c != b'.' => Kind::SuffixNumber,
                        _ => return None,
                    };
                    (kind, from, span(from, u8::is_ascii_digit), None)
                }
                b'_' if previous <= Kind::SuffixNumber => {
                    let to = span(at + 1, u8::is_ascii_lowercase);
                    let suffix = Suffix::parse(text.get(at + 1..to)?)?;
                    (Kind::Suffix, at + 1, to, Some(suffix))
                }
                b'~' if previous < Kind::CommitHash => {
                    let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
                    (Kind::CommitHash, at + 1, span(at + 1, hex), None)
                }
                b'-' if previous < Kind::Revision && bytes.get(at + 1) == Some(&b'r') => {
                    let to = span(at + 2, u8::is_ascii_digit);
                    (Kind::Revision, at + 2, to, None)
                }
                _ => return None,
            };
            tokens.push(Token::new(text, kind, from, to, suffix)?);
            at = to;
        }
        Some(Version { tokens })
    }
}

/// Two tokens of the same kind (`version.c`'s `token_cmp`).
fn compare_tokens(a: &Token, b: &Token) -> Ordering {
    match a.kind {
        Kind::Number if a.text.starts_with('0') || b.text.starts_with('0') => a.text.cmp(b.text),
        Kind::FirstNumber | Kind::Number | Kind::SuffixNumber | Kind::Revision => {
            Number::new(a.text).cmp(&Number::new(b.text))
        }
        Kind::Suffix => a.suffix.cmp(&b.suffix),
        Kind::Letter | Kind::CommitHash | Kind::End => a.text.cmp(b.text),
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        let (mut a, mut b) = (self.tokens.iter(), other.tokens.iter());
        let (ta, tb) = loop {
            let ta = a.next().unwrap_or(&Token::END);
            let tb = b.next().unwrap_or(&Token::END);
            if ta.kind != tb.kind || ta.kind == Kind::End {
                break (ta, tb);
            }
            match compare_tokens(ta, tb) {
                Ordering::Equal => {}
                unequal => return unequal,
            }
        };
        let pre_release = |t: &Token| t.suffix.is_some_and(Suffix::is_pre_release);
        if ta.kind == tb.kind {
            Ordering::Equal
        } else if pre_release(ta) {
            Ordering::Less
        } else if pre_release(tb) {
            Ordering::Greater
        } else {
            // The version going on with a token that ranks earlier is the newer.
            tb.kind.cmp(&ta.kind)
        }
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `a` against `b` in apk's order; None when either is not a valid apk version.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(Version::parse(a)?.cmp(&Version::parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::version::reference;

    /// Lines of apk-tools' own `test/version.data` (alpinelinux/apk-tools, the copy at commit
    /// fd8f39f1d54c3b56d16a494898e5a753e2c71715, which `make check` feeds to `apk vertest`),
    /// copied as they are: the first three, every line with a leading zero, a letter, a
    /// suffix or a date, and a run of plain ones. `a < b` means apk compares `a` before `b`.
    const APK_TOOLS_VECTORS: &str = "\
2.34 > 0.1.0_alpha
23_foo > 4_beta
1.0 < 1.0bc\t\t# invalid. do string sort
0.1.0_alpha = 0.1.0_alpha
0.1.0_alpha < 0.1.3_alpha
0.1.3_alpha > 0.1.0_alpha
0.1.0_alpha2 > 0.1.0_alpha
0.1.0_alpha < 2.2.39-r1
2.2.39-r1 > 1.0.4-r3
1.0.4-r3 < 1.0.4-r4
1.0.4-r4 < 1.6
1.1 > 1.1_alpha1
1.1_alpha1 < 1.2.1
1.2.1 > 1.2
1.2 < 1.3_alpha
1.3_alpha < 1.3_alpha2
1.3_alpha2 < 1.3_alpha3
1.3_alpha8 > 0.6.0
0.7.0 < 0.8_beta1
0.8_beta1 < 0.8_beta2
0.8_beta4 < 4.8-r1
3.10.18-r1 > 2.3.0b-r1
2.3.0b-r1 < 2.3.0b-r2
2.3.0b-r4 > 0.12.1
0.12.3 > 0.12
0.12 < 0.13_beta1
0.13_beta5 > 0.9.12
1.2.11 < 1.2.12.1
1.2.12.1 < 1.2.13
0.2.0-r1 = 0.2.0-r1
0.2.0-r1 < 3.1_p16
3.1_p16 < 3.1_p17
3.1_p17 > 1.06-r6
1.06-r6 < 006
006 > 1.0.0
1.2.2-r1 > 1.2.2
9.3.4-r2 > 9.3.4
2.16.1-r3 = 2.16.1-r3
1.0.6-r3 > 0.11
1.2.1-r1 < 1.2.2.1
2.59 < 20050718-r1
20050718-r1 < 20050718-r2
20050718-r2 > 3.9.8-r5
3.9.8-r5 > 2.01.01_alpha10
2.01.01_alpha10 > 0.94
0.94 < 1.0
1.0 > 0.99.3.20040818
0.99.3.20040818 > 0.7
0.13 < 0.90.1-r1
0.90.1-r1 > 0.10.2
1.39 > 1.00_beta2
1.00_beta2 > 0.9.2
7.15.1-r1 > 1.02
1.02 < 1.03-r1
1.12.12-r2 < 2.8.0.6-r1
0.5.2.7 < 4.2.52_p2-r1
4.2.52_p2-r1 < 4.2.52_p4-r2
4.2.52_p4-r2 > 1.02.07
1.02.07 < 1.02.10-r1
1.0.5 < 8
9 > 2.18.3-r10
2.18.3-r10 > 1.05-r18
1.05-r18 < 1.05-r19
2.38 < 20050405
1.0.0 < 10-r1
10-r1 > 4
2.4.2 < 20060720
20060720 > 3.0.20060720
3.0.20060720 < 20060720
1.4.4-r1 < 2.1.9.200602141850
2.1.9.200602141850 > 1.6
2.5.1-r8 < 2.5.1a-r1
2.5.1a-r1 > 1.19.2-r1
1.3.5-r10 > 1.3.5-r8
20040401 > 2.0.0_rc3-r1
2.0.0_rc3-r1 > 1.5
0.99.163 < 2.6.15.20060110
2.6.15.20060110 < 2.6.16.20060323
1.3.5-r4 < 3.0.0-r2
3.0.0-r2 < 021109-r3
021109-r3 < 20060512
0.9.16-r1 < 3.9_pre20060124
3.9_pre20060124 > 0.01
0.01 < 0.06
1.1.7 < 6b-r7
6b-r7 > 1.12-r7
0.10.0-r1 > 0.10.0
0.10.0 < 0.10.1_rc1
0.10.1_rc1 > 0.9.11
0.9.11 < 394
2.0.2 > 1.1a
1.1a < 1.3a
1.3a > 1.0.2
1.0-r1 > 0.15.1b
0.15.1b < 1.0.1
1.06-r2 > 0.15.1b-r2
0.15.1b-r2 > 0.15.1b
1.1.2.1-r1 > 0.0.31
0.0.31 < 0.0.50
0.0.50 > 0.0.16
22.7-r1 < 22.7.3-r1
22.7.3-r1 > 22.7
22.7 > 2.1_pre20
2.1_pre20 < 2.1_pre26
2.10.1 > 02.08.01b
02.08.01b < 4.77
5.1 > 2.02.06
2.02.06 < 2.02.10
2.8.6-r2 > 2.02-r1
8.1.2.20040524-r1 < 8.1.2.20050715-r1
8.1.2.20050715-r1 < 20030215
3.81 > 1.6d
1.6d > 1.2.07.8
1.2.07.8 < 1.2.12.04
1.2.12.04 < 1.2.12.05
1.07-r1 < 1.07.5
1.07.5 > 1.07
20061003 > 0.1_pre20060810
0.1_pre20060810 < 0.1_pre20060817
3.3.17 > 0.59s-r11
0.59s-r11 < 0.65
4.01 < 4.20
4.20 > 0.20070118
0.20070118 < 0.20070207_rc1
0.20070207_rc1 < 1.0
2.3.30-r2 < 3.7_p1
4.3_p2-r1 < 4.3_p2-r5
4.3_p2-r5 < 4.4_p1-r6
4.5_p1-r1 > 4.5_p1
4.5_p1 > 0.9.8c-r1
0.9.8c-r1 < 0.9.8d
2.2.3-r2 < 013
013 < 014-r1
1.7 < 1.7b
1.7b < 1.8.4-r3
1.8.5 < 1.8.5_p2
2.9.11_pre20051101-r3 > 2.9.11_pre20051101
2.9.11_pre20051101 < 2.9.11_pre20061021-r1
1.6.8_p12-r1 > 1.6.8_p9-r2
4.09-r1 > 1.3.1
2.25b-r5 < 2.25b-r6
1.0.5 < 1.4_p12-r2
0.9.28-r2 < 0.9.28.1
0.9.28.1 < 087-r1
087-r1 < 103
104-r11 > 104-r9
5.52-r1 > 1.2.5_rc2
20040406-r1 > 2.12r-r4
2.12r-r4 < 2.12r-r5
7.0.17 < 7.0.174
1.1.1-r3 > 0.3.4_pre20061029
1.3-r0 < 1.3.1-r0
1.3_pre1-r1 < 1.3.2
1.0_p10-r0 > 1.0_p9-r0
0.1.0_alpha_pre2 < 0.1.0_alpha
1.0.0_pre20191002222144-r0 < 1.0.0_pre20210530193627-r0
6.0_pre1 < 6.0
6.1_pre1 < 6.1
6.0_p1 > 6.0
6.1_p1 > 6.1
";

    /// The vectors' lines whose versions apk-tools itself calls invalid (it still orders
    /// them by what it can read; this order refuses them).
    const INVALID_LINES: &[&str] = &["23_foo > 4_beta", "1.0 < 1.0bc"];

    #[test]
    fn agrees_with_apk_tools_test_vectors() {
        let mut checked = 0;
        let mut invalid = Vec::new();
        for line in APK_TOOLS_VECTORS.lines() {
            let line = line.split('#').next().unwrap_or_default().trim();
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [a, op, b] = fields[..] else {
                panic!("not `a op b`: {line:?}");
            };
            let want = match op {
                "<" => Ordering::Less,
                "=" => Ordering::Equal,
                ">" => Ordering::Greater,
                _ => panic!("unknown operator in {line:?}"),
            };
            match compare(a, b) {
                None => invalid.push(line),
                Some(ours) => {
                    assert_eq!(ours, want, "{line}");
                    assert_eq!(compare(b, a), Some(want.reverse()), "{line}, reversed");
                    checked += 1;
                }
            }
        }
        assert_eq!(invalid, INVALID_LINES);
        assert!(checked >= 150, "only {checked} lines checked");
    }

    #[test]
    fn the_rules_edges() {
        use Ordering::*;
        let cases = [
            // The kinds' ranking where two versions part.
            ("1.0.1", "1.0a", Greater),
            ("1.0a", "1.0_p1", Greater),
            ("1.0_p1", "1.0~abc", Greater),
            ("1.0~abc", "1.0-r1", Greater),
            ("1.0-r1", "1.0", Greater),
            ("1.0-r0", "1.0", Greater),
            ("1.0_rc1", "1.0", Less),
            ("1.0_rc", "1.0_rc1", Less),
            ("1.0_alpha", "1.0_beta", Less),
            ("1.0_beta", "1.0_pre", Less),
            ("1.0_pre", "1.0_rc", Less),
            ("1.0_cvs", "1.0_svn", Less),
            ("1.0_svn", "1.0_git", Less),
            ("1.0_git", "1.0_hg", Less),
            ("1.0_hg", "1.0_p", Less),
            ("1.0_git20240101", "1.0_git20240102", Less),
            ("1.0_p1_p2", "1.0_p1", Greater),
            // Leading zeros: a number after the first compares as text.
            ("1.02", "1.1", Less),
            ("1.0", "1.00", Less),
            ("1.010", "1.01", Greater),
            ("010", "10", Equal),
            ("1.0_p01", "1.0_p1", Equal),
            ("1.0-r01", "1.0-r1", Equal),
            // Commit hashes as text.
            ("1.0~abc", "1.0~abd", Less),
            ("1.0~abc", "1.0~abc0", Less),
            ("1.0~abc-r1", "1.0~abc-r2", Less),
            // Numbers past 64 bits.
            (
                "1.0_p18446744073709551616",
                "1.0_p18446744073709551615",
                Greater,
            ),
        ];
        reference::assert_both_ways(compare, &cases);
        for bad in [
            "",
            "a",
            "r1",
            ".1",
            "1.",
            "1..2",
            "1.0bc",
            "1.0b1",
            "1.0A",
            "1.0_",
            "1.0_foo",
            "1.0_1",
            "1.0_rc1a",
            "1.0_p1.1",
            "1.0-1",
            "1.0-r",
            "1.0-r1-r2",
            "1.0-r1a",
            "1.0-r1_p1",
            "1.0~",
            "1.0~ABC",
            "1.0~xyz",
            "1.0~abc~def",
            "1.0~abc_p1",
            "1.0 ",
            "-r1",
            "1.0é",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        assert!(Version::parse("1.2.3a_rc4_p5~0123456789abcdef-r6").is_some());
    }
}
