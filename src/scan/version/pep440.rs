//! PyPI's version order (PEP 440, as the `packaging` library that pip uses reads it):
//! `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`. The epoch first; then the release, its
//! trailing zeros ignored (`1.0 == 1.0.0`); then a developmental release of the final release
//! before its pre-releases (`1.0.dev0 < 1.0a1`), pre-releases `a < b < rc` before the release,
//! post-releases after it, and each `.devN` before the version it develops; then a local
//! version after the same public version, its parts compared text before number.
//!
//! The text is normalized as `packaging` does: case ignored, surrounding whitespace and a
//! leading `v` allowed, `-`, `_` or `.` (or nothing) between the parts, the spellings `alpha`,
//! `beta`, `c`, `pre`, `preview` (`a`, `b`, `rc`) and `r`, `rev` (`post`), `1.0-1` meaning
//! `1.0.post1`, and a missing number meaning 0. What it refuses (legacy versions such as
//! `2004d` or `1.0-SNAPSHOT`) is not a version here either. Pure; tested against `packaging`.

use std::cmp::Ordering;

use super::semver::Number;

/// A pre-release's kind, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pre {
    Alpha,
    Beta,
    Rc,
}

/// One part of a local version. Text sorts before numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Local<'a> {
    Text(Caseless<'a>),
    Number(Number<'a>),
}

/// Text compared ignoring ASCII case (`packaging` lowercases local versions).
#[derive(Debug, Clone, Copy, Hash)]
pub struct Caseless<'a>(pub &'a str);

impl Ord for Caseless<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        fn lower(s: &str) -> impl Iterator<Item = u8> + '_ {
            s.bytes().map(|b| b.to_ascii_lowercase())
        }
        lower(self.0).cmp(lower(other.0))
    }
}

impl PartialOrd for Caseless<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Caseless<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(other.0)
    }
}

impl Eq for Caseless<'_> {}

/// A version's parts, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version<'a> {
    pub epoch: Number<'a>,
    /// Never empty; as written (`1.0` keeps its `0`, which only ordering ignores).
    pub release: Vec<Number<'a>>,
    pub pre: Option<(Pre, Number<'a>)>,
    pub post: Option<Number<'a>>,
    pub dev: Option<Number<'a>>,
    pub local: Option<Vec<Local<'a>>>,
}

impl<'a> Version<'a> {
    /// Reads `text` as `packaging.version.Version` does; None where it raises
    /// `InvalidVersion`.
    pub fn parse(text: &'a str) -> Option<Version<'a>> {
        let text = text.trim_matches(python_space);
        let text = text
            .strip_prefix('v')
            .or_else(|| text.strip_prefix('V'))
            .unwrap_or(text);
        // `packaging`'s pattern uses possessive quantifiers: each part, once it matched, is
        // kept, so reading the parts greedily in order decides exactly as it does.
        let mut p = Cursor { text, at: 0 };
        let epoch = p
            .attempt(|p| {
                let n = p.number()?;
                p.eat(b'!').then_some(n)
            })
            .unwrap_or(Number::ZERO);
        let mut release = vec![p.number()?];
        while let Some(n) = p.attempt(|p| {
            p.eat(b'.').then_some(())?;
            p.number()
        }) {
            release.push(n);
        }
        let pre = p.attempt(|p| {
            p.separator();
            let kind = p.label(&[
                ("alpha", Pre::Alpha),
                ("a", Pre::Alpha),
                ("beta", Pre::Beta),
                ("b", Pre::Beta),
                ("preview", Pre::Rc),
                ("pre", Pre::Rc),
                ("c", Pre::Rc),
                ("rc", Pre::Rc),
            ])?;
            Some((kind, p.implicit_number()))
        });
        let post = p
            .attempt(|p| {
                p.eat(b'-').then_some(())?;
                p.number()
            })
            .or_else(|| {
                p.attempt(|p| {
                    p.separator();
                    p.label(&[("post", ()), ("rev", ()), ("r", ())])?;
                    Some(p.implicit_number())
                })
            });
        let dev = p.attempt(|p| {
            p.separator();
            p.label(&[("dev", ())])?;
            Some(p.implicit_number())
        });
        let local = p.attempt(|p| {
            p.eat(b'+').then_some(())?;
            let mut parts = vec![p.local_part()?];
            while let Some(part) = p.attempt(|p| {
                p.separator().then_some(())?;
                p.local_part()
            }) {
                parts.push(part);
            }
            Some(parts)
        });
        (p.at == text.len()).then_some(Version {
            epoch,
            release,
            pre,
            post,
            dev,
            local,
        })
    }

    /// The release without its trailing zeros.
    fn significant_release(&self) -> &[Number<'a>] {
        let end = self
            .release
            .iter()
            .rposition(|n| *n != Number::ZERO)
            .map_or(0, |i| i + 1);
        self.release.get(..end).unwrap_or_default()
    }

    /// Where the version sorts among its release's pre-releases (`packaging`'s `_cmpkey`).
    fn pre_key(&self) -> PreKey<'a> {
        match (self.pre, self.post, self.dev) {
            (None, None, Some(_)) => PreKey::DevelopmentOfRelease,
            (None, ..) => PreKey::Release,
            (Some((kind, n)), ..) => PreKey::Pre(kind, n),
        }
    }
}

/// The variants' order is the order of what they stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PreKey<'a> {
    DevelopmentOfRelease,
    Pre(Pre, Number<'a>),
    Release,
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        // A developmental release sorts before the same version without one.
        let dev = |v: &Self| match v.dev {
            Some(n) => (false, n),
            None => (true, Number::ZERO),
        };
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| self.significant_release().cmp(other.significant_release()))
            .then_with(|| self.pre_key().cmp(&other.pre_key()))
            .then_with(|| self.post.cmp(&other.post))
            .then_with(|| dev(self).cmp(&dev(other)))
            .then_with(|| self.local.cmp(&other.local))
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `a` against `b` in PEP 440's order; None when either is not a version `packaging` accepts.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(Version::parse(a)?.cmp(&Version::parse(b)?))
}

/// What Python's `\s` matches in a text pattern (`str.isspace`).
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    /// Runs `part`; where it fails, nothing is consumed.
    fn attempt<T>(&mut self, part: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let start = self.at;
        let found = part(self);
        if found.is_none() {
            self.at = start;
        }
        found
    }

    fn rest(&self) -> &'a [u8] {
        self.text.as_bytes().get(self.at..).unwrap_or_default()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.rest().first() == Some(&byte);
        if found {
            self.at += 1;
        }
        found
    }

    /// An optional `-`, `_` or `.`; whether there was one.
    fn separator(&mut self) -> bool {
        self.eat(b'-') || self.eat(b'_') || self.eat(b'.')
    }

    fn run(&mut self, accept: impl Fn(u8) -> bool) -> Option<&'a str> {
        let len = self.rest().iter().take_while(|b| accept(**b)).count();
        let found = self
            .text
            .get(self.at..self.at + len)
            .filter(|s| !s.is_empty());
        self.at += found.map_or(0, str::len);
        found
    }

    fn number(&mut self) -> Option<Number<'a>> {
        self.run(|b| b.is_ascii_digit()).and_then(Number::new)
    }

    /// An optional separator then an optional number, 0 when there is none (`1.0a` is
    /// `1.0a0`, `1.0.post` is `1.0.post0`).
    fn implicit_number(&mut self) -> Number<'a> {
        self.separator();
        self.number().unwrap_or(Number::ZERO)
    }

    /// The first of `labels` the text goes on with, ignoring case (the pattern's alternation).
    fn label<T: Copy>(&mut self, labels: &[(&str, T)]) -> Option<T> {
        let rest = self.rest();
        let (label, value) = labels.iter().find(|(label, _)| {
            rest.get(..label.len())
                .is_some_and(|r| r.eq_ignore_ascii_case(label.as_bytes()))
        })?;
        self.at += label.len();
        Some(*value)
    }

    fn local_part(&mut self) -> Option<Local<'a>> {
        let part = self.run(|b| b.is_ascii_alphanumeric())?;
        Some(if part.bytes().all(|b| b.is_ascii_digit()) {
            Local::Number(Number::new(part)?)
        } else {
            Local::Text(Caseless(part))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::version::reference;

    /// Versions chosen for the rules' edges: epochs, release lengths and trailing zeros,
    /// every pre-release spelling, implicit numbers, post-releases (`-1`, `r`, `rev`),
    /// developmental releases of each kind, local versions (text against numbers, case),
    /// separators, case, `v`, whitespace, leading zeros, long numbers.
    const CORPUS: &[&str] = &[
        "0",
        "0.0",
        "1",
        "1.0",
        "1.0.0",
        "01.00",
        "v1.0",
        "V1.0",
        " 1.0\n",
        "1.0.1",
        "1.1",
        "1.9",
        "1.10",
        "1.0.0.0.1",
        "1!0.1",
        "0!1.0",
        "1.0.dev0",
        "1.0.dev",
        "1.0-dev2",
        "1.0_DEV_3",
        "1.0a",
        "1.0a0",
        "1.0a1",
        "1.0.alpha.1",
        "1.0-ALPHA-2",
        "1.0a1.dev1",
        "1.0a1.post1",
        "1.0a1.post1.dev1",
        "1.0a.",
        "1.0b1",
        "1.0beta2",
        "1.0b2-1",
        "1.0c1",
        "1.0rc1",
        "1.0pre1",
        "1.0preview2",
        "1.0RC3",
        "1.0a-1",
        "1.0.0-beta.1",
        "1.0.post",
        "1.0.post0",
        "1.0-1",
        "1.0r1",
        "1.0rev2",
        "1.0.post2.dev5",
        "1.0.POST3",
        "1.0post-4",
        "1.0.post1.dev0",
        "1.0+local",
        "1.0+LOCAL",
        "1.0+abc.5",
        "1.0+abc.05",
        "1.0+abc-10",
        "1.0+5",
        "1.0+5.abc",
        "1.0+abc_5.xyz",
        "1.0.dev1+local",
        "2.0",
        "2.0.0.dev1",
        "20191231",
        "1.0.100000000000000000000000",
        "1.0a..post1",
    ];

    /// Strings `packaging` refuses (legacy versions among them), and so does this order.
    const REFUSED: &[&str] = &[
        "",
        " ",
        "v",
        "1.",
        ".1",
        "1..2",
        "1.0-",
        "1.0+",
        "1.0+abc.",
        "1.0+abc..1",
        "1.0 1",
        "1.0-SNAPSHOT",
        "2004d",
        "1.0a1a1",
        "1.0.post1.post2",
        "1.0dev1a1",
        "1.0-r-1-1",
        "!1.0",
        "1!",
        "1.0+é",
        "１.0",
        "vv1.0",
        "1.0\u{0}",
    ];

    #[test]
    fn the_rules_edges() {
        use Ordering::*;
        let cases = [
            ("1.0", "1.0.0", Equal),
            ("1.0.dev0", "1.0a0", Less),
            ("1.0a1", "1.0alpha1", Equal),
            ("1.0c1", "1.0rc1", Equal),
            ("1.0rc1", "1.0", Less),
            ("1.0", "1.0.post0", Less),
            ("1.0-1", "1.0.post1", Equal),
            ("1.0.post1.dev1", "1.0.post1", Less),
            ("1.0a1.post1", "1.0b1", Less),
            ("1.0a-1", "1.0a1", Equal),
            ("1.0", "1.0+local", Less),
            ("1.0+abc", "1.0+5", Less),
            ("1.0+abc.05", "1.0+ABC.5", Equal),
            ("1.0+abc", "1.0+abc.0", Less),
            ("1!0.1", "2.0", Greater),
            ("1.9", "1.10", Less),
            ("v1.0", "1.0", Equal),
        ];
        reference::assert_both_ways(compare, &cases);
        for bad in REFUSED {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        let v = Version::parse("1!2.0rc3.post4.dev5+Ab.6").unwrap();
        let n = |s| Number::new(s).unwrap();
        assert_eq!(
            v,
            Version {
                epoch: n("1"),
                release: vec![n("2"), n("0")],
                pre: Some((Pre::Rc, n("3"))),
                post: Some(n("4")),
                dev: Some(n("5")),
                local: Some(vec![Local::Text(Caseless("ab")), Local::Number(n("6"))]),
            }
        );
    }

    /// A Python with `packaging`: the CI's venv (`.ci/run` makes it), else `python3` if it
    /// can import `packaging`.
    fn python() -> Option<std::ffi::OsString> {
        crate::testing::python_with("packaging.version")
    }

    /// Every pair of the corpus and the refused strings against `packaging.version.Version`
    /// itself, in one Python process: `x` where it raises `InvalidVersion`.
    #[test]
    fn agrees_with_packaging_on_every_pair() {
        let Some(python) = python() else {
            reference::skipped(
                "no Python with `packaging` (python3 -m venv ~/.cache/ringyard-ci/scan-venv && \
                 ~/.cache/ringyard-ci/scan-venv/bin/pip install packaging)",
            );
            return;
        };
        let all: Vec<&str> = CORPUS.iter().chain(REFUSED).copied().collect();
        let script = r#"
import json, sys
from packaging.version import Version, InvalidVersion
def parse(s):
    try:
        return Version(s)
    except InvalidVersion:
        return None
vs = [parse(s) for s in json.load(sys.stdin)]
out = []
for a in vs:
    for b in vs:
        out.append("x" if a is None or b is None else str((a > b) - (a < b)))
print(" ".join(out))
"#;
        let out = reference::run_with_versions(
            std::process::Command::new(&python).args(["-c", script]),
            &all,
        )
        .unwrap();
        assert!(out.status.success(), "python failed");
        reference::assert_agree("packaging", &all, reference::answers(&out.stdout), compare);
        assert!(CORPUS.iter().all(|v| Version::parse(v).is_some()));
    }
}
