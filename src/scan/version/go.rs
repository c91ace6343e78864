//! Go's version order: Semantic Versioning as `golang.org/x/mod/semver` reads it, over the
//! versions a scan meets in Go's ecosystem. Module versions carry a `v` (`v1.2.3`) and OSV's
//! Go records drop it (`1.2.3`), so both are read; the shorthands `v1` and `v1.2` mean
//! `v1.0.0` and `v1.2.0` as Go has them; `+incompatible` is build metadata and so does not
//! order; a pseudo-version (`v0.0.0-20191109021931-daa7c04131f5`) is the pre-release it is
//! written as. The toolchain's own versions, the `stdlib` module's in binaries' build
//! information (`go1.21rc2`, `go1.20`, `go1.19.8 X:boringcrypto`), are mapped to the semver
//! OSV's `stdlib` events use (`1.21.0-rc.2`, `1.20.0`, `1.19.8`) the way govulncheck maps
//! them. Pure; the order itself is [`super::semver`]'s.

use std::cmp::Ordering;

use super::semver::{Identifier, Number, Version};

/// Reads a module version (with or without its `v`) or a Go toolchain version (`go1.21rc2`);
/// None for anything else.
pub fn parse(text: &str) -> Option<Version<'_>> {
    if let Some(tag) = text.strip_prefix("go") {
        return toolchain(tag);
    }
    let text = text.strip_prefix('v').unwrap_or(text);
    if !text.contains(['-', '+']) {
        let mut numbers = text.split('.');
        let shorthand = |major, minor| {
            Some(Version {
                major: Number::canonical(major)?,
                minor: Number::canonical(minor)?,
                patch: Number::ZERO,
                pre: Vec::new(),
            })
        };
        match (numbers.next(), numbers.next(), numbers.next()) {
            (Some(major), None, None) => return shorthand(major, "0"),
            (Some(major), Some(minor), None) => return shorthand(major, minor),
            _ => {}
        }
    }
    Version::parse_bare(text)
}

/// A toolchain version after its `go`, as govulncheck's `GoTagToSemver` maps it:
/// `MAJOR.MINOR[.PATCH][{beta|rc|-pre}N]`, then whatever follows a space (`X:` experiments)
/// ignored. `go1` is 1.0.0; `go1.0` was never a release and is refused, as there.
fn toolchain(tag: &str) -> Option<Version<'_>> {
    let tag = tag.split(char::is_whitespace).next().unwrap_or(tag);
    if tag == "1" {
        return Some(Version {
            major: Number::canonical("1")?,
            minor: Number::ZERO,
            patch: Number::ZERO,
            pre: Vec::new(),
        });
    }
    if tag == "1.0" {
        return None;
    }
    let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (major, rest) = tag.split_at(digits(tag));
    let rest = rest.strip_prefix('.')?;
    let (minor, rest) = rest.split_at(digits(rest));
    let (patch, rest) = match rest.strip_prefix('.') {
        Some(rest) => rest.split_at(digits(rest)),
        None => ("0", rest),
    };
    let pre = if rest.is_empty() {
        Vec::new()
    } else {
        let (kind, number) = ["beta", "rc", "-pre"]
            .iter()
            .find_map(|kind| Some((kind.trim_start_matches('-'), rest.strip_prefix(kind)?)))?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        vec![
            Identifier::Alphanumeric(kind),
            Identifier::Numeric(Number::canonical(number)?),
        ]
    };
    Some(Version {
        major: Number::canonical(major)?,
        minor: Number::canonical(minor)?,
        patch: Number::canonical(patch)?,
        pre,
    })
}

/// `a` against `b` in Go's order; None when either is not a version Go's tools accept.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(parse(a)?.cmp(&parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::version::reference;

    /// `golang.org/x/mod/semver`'s own test table (semver/semver_test.go, golang/mod commit
    /// 8b446299501e373f4d7a7d8869d5646e9bfb2e96): in increasing order, `""` marking what Go
    /// refuses, equal canonical forms comparing equal. Its `TestCompare` checks every pair.
    const X_MOD_SEMVER: &[(&str, &str)] = &[
        ("bad", ""),
        ("v1-alpha.beta.gamma", ""),
        ("v1-pre", ""),
        ("v1+meta", ""),
        ("v1-pre+meta", ""),
        ("v1.2-pre", ""),
        ("v1.2+meta", ""),
        ("v1.2-pre+meta", ""),
        ("v1.0.0-alpha", "v1.0.0-alpha"),
        ("v1.0.0-alpha.1", "v1.0.0-alpha.1"),
        ("v1.0.0-alpha.beta", "v1.0.0-alpha.beta"),
        ("v1.0.0-beta", "v1.0.0-beta"),
        ("v1.0.0-beta.2", "v1.0.0-beta.2"),
        ("v1.0.0-beta.11", "v1.0.0-beta.11"),
        ("v1.0.0-rc.1", "v1.0.0-rc.1"),
        ("v1", "v1.0.0"),
        ("v1.0", "v1.0.0"),
        ("v1.0.0", "v1.0.0"),
        ("v1.2", "v1.2.0"),
        ("v1.2.0", "v1.2.0"),
        ("v1.2.3-456", "v1.2.3-456"),
        ("v1.2.3-456.789", "v1.2.3-456.789"),
        ("v1.2.3-456-789", "v1.2.3-456-789"),
        ("v1.2.3-456a", "v1.2.3-456a"),
        ("v1.2.3-pre", "v1.2.3-pre"),
        ("v1.2.3-pre+meta", "v1.2.3-pre"),
        ("v1.2.3-pre.1", "v1.2.3-pre.1"),
        ("v1.2.3-zzz", "v1.2.3-zzz"),
        ("v1.2.3", "v1.2.3"),
        ("v1.2.3+meta", "v1.2.3"),
        ("v1.2.3+meta-pre", "v1.2.3"),
        ("v1.2.3+meta-pre.sha.256a", "v1.2.3"),
    ];

    #[test]
    fn agrees_with_x_mod_semver_tests() {
        let mut checked = 0;
        for (i, (a, canonical_a)) in X_MOD_SEMVER.iter().enumerate() {
            assert_eq!(parse(a).is_some(), !canonical_a.is_empty(), "{a}");
            // And the same without the `v`, as OSV writes Go versions.
            assert_eq!(
                parse(&a[1..]).is_some(),
                !canonical_a.is_empty(),
                "{a} without v"
            );
            for (j, (b, canonical_b)) in X_MOD_SEMVER.iter().enumerate() {
                if canonical_a.is_empty() || canonical_b.is_empty() {
                    assert_eq!(compare(a, b), None, "{a} vs {b}");
                    continue;
                }
                let want = if canonical_a == canonical_b {
                    Ordering::Equal
                } else {
                    i.cmp(&j)
                };
                assert_eq!(compare(a, b), Some(want), "{a} vs {b}");
                assert_eq!(compare(&a[1..], b), Some(want), "{a} without v vs {b}");
                checked += 1;
            }
        }
        assert_eq!(checked, 24 * 24);
        use Ordering::*;
        for (a, b, want) in [
            ("v1", "v1", Equal),
            ("v2", "v1", Greater),
            ("v1", "v2", Less),
            ("v1.19", "v1.2", Greater),
        ] {
            assert_eq!(compare(a, b), Some(want), "{a} vs {b}");
        }
    }

    #[test]
    fn module_versions() {
        use Ordering::*;
        let cases = [
            // Pseudo-versions: before the release they precede, ordered by their time.
            ("v0.0.0-20191109021931-daa7c04131f5", "v0.0.1", Less),
            (
                "v0.0.0-20191109021931-daa7c04131f5",
                "0.0.0-20200101000000-000000000000",
                Less,
            ),
            ("v1.2.4-0.20191109021931-daa7c04131f5", "v1.2.3", Greater),
            ("v1.2.4-0.20191109021931-daa7c04131f5", "v1.2.4", Less),
            ("v1.2.4-0.20191109021931-daa7c04131f5", "v1.2.4-pre", Less),
            (
                "v1.2.4-pre.0.20191109021931-daa7c04131f5",
                "v1.2.4-pre",
                Greater,
            ),
            (
                "v1.2.4-pre.0.20191109021931-daa7c04131f5",
                "v1.2.4-pre.1",
                Less,
            ),
            // `+incompatible` does not order.
            ("v2.0.0+incompatible", "2.0.0", Equal),
            ("v2.0.1+incompatible", "v2.0.0", Greater),
            ("v2.0.0+incompatible", "v10.0.0+incompatible", Less),
            // OSV's events without the `v`.
            ("1.20.5", "v1.20.5", Equal),
            ("0", "v0.0.0", Equal),
        ];
        reference::assert_both_ways(compare, &cases);
        for bad in [
            "",
            "v",
            "vv1.0.0",
            "V1.0.0",
            "v01.0.0",
            "v1.02",
            "v1.0.0-01",
            "v1.0.0-",
            "v1.0.0+",
            "v1.0.0.0",
            "1.0.",
            " v1.0.0",
            "latest",
            "v1.0.0-a_b",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn toolchain_versions() {
        use Ordering::*;
        let cases = [
            ("go1.20", "1.20.0", Equal),
            ("go1.20", "1.20.1", Less),
            ("go1.19.8", "1.19.8", Equal),
            ("go1.19.8", "1.20.5", Less),
            ("go1.21rc2", "1.21.0-rc.2", Equal),
            ("go1.21rc2", "1.21.0", Less),
            ("go1.21rc2", "go1.21rc10", Less),
            ("go1.21rc2", "1.21.0-0", Greater),
            ("go1.21beta1", "go1.21rc1", Less),
            ("go1.9beta1", "1.9.0-beta.1", Equal),
            ("go1.9-pre2", "1.9.0-pre.2", Equal),
            ("go1", "1.0.0", Equal),
            ("go1.22.0 X:boringcrypto", "go1.22.0", Equal),
            ("go1.22.1", "v1.22.1", Equal),
        ];
        reference::assert_both_ways(compare, &cases);
        for bad in [
            "go",
            "go1.0",
            "go1.",
            "go.1",
            "go1.2.",
            "go1.21rc",
            "go1.21rc02",
            "go1.21alpha1",
            "go1.21.0-rc.1",
            "go1.020",
            "devel go1.23-abc",
            "go1.21rc1x",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    /// Where Go itself is installed, its `go/version` package (Go's own order of toolchain
    /// versions) agrees on every pair of toolchain versions; skipped where it is not. (Not
    /// `go1.9` against `go1.9rc1`: `go/version` reads `go1.9` as a language version, before
    /// its release candidates, where build information means the release `go1.9`.)
    #[test]
    fn agrees_with_go_version_where_installed() {
        let versions = [
            "go1",
            "go1.9beta1",
            "go1.9rc1",
            "go1.9.7",
            "go1.20",
            "go1.20.5",
            "go1.21rc2",
            "go1.21rc10",
            "go1.21.0",
            "go1.21.1",
            "go1.22.0",
        ];
        let dir = tempfile::tempdir().unwrap();
        let list = versions.map(|v| format!("{v:?}")).join(", ");
        let program = format!(
            "package main\n\nimport (\n\t\"fmt\"\n\t\"go/version\"\n)\n\nfunc main() {{\n\tvs := \
             []string{{{list}}}\n\tfor _, a := range vs {{\n\t\tfor _, b := range vs {{\n\t\t\t\
             fmt.Println(version.Compare(a, b))\n\t\t}}\n\t}}\n}}\n"
        );
        std::fs::write(dir.path().join("main.go"), program).unwrap();
        let out = match std::process::Command::new("go")
            .args(["run", "main.go"])
            .current_dir(dir.path())
            // Never fetch another toolchain: compare with the one installed.
            .env("GOTOOLCHAIN", "local")
            .output()
        {
            Ok(out) if out.status.success() => out,
            _ => {
                eprintln!(
                    "go (1.22 or later) is not installed here: toolchain versions are checked \
                     against expected orders only"
                );
                return;
            }
        };
        let theirs = reference::answers(&out.stdout);
        reference::assert_agree("go", &versions, theirs, compare);
    }
}
