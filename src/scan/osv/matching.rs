//! Whether a record affects an installed package, by the OSV schema's evaluation rules
//! (its `IsVulnerable` pseudo-code), in the package's ecosystem's version order.
//!
//! Ecosystems: a record for `Debian:12` matches a package of `Debian:12`; a record without a
//! release (`Debian`, `Alpine`) matches every release of its ecosystem; a package without a
//! release (`Red Hat`, whose records name a CPE stream the image does not state) matches
//! records of every release. Ubuntu's `:LTS` tag is not part of the release
//! (`Ubuntu:22.04` matches `Ubuntu:22.04:LTS`), but `Ubuntu:Pro:...` and
//! `Ubuntu:Pro:FIPS...` are streams of their own that only a package of that stream
//! matches: their fixes are not in the public archive.
//!
//! Ranges: `ECOSYSTEM` ranges use the ecosystem's order, `SEMVER` ranges Semantic
//! Versioning (with a `v` prefix, as Go writes versions, ignored on both sides), `GIT`
//! ranges are not evaluated (that needs the repository's history; such records list the
//! affected versions in `versions`, which is matched as exact strings). A range with an
//! event the order cannot read, or an installed version the order cannot read, is not
//! evaluated rather than guessed at.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::record::{Affected, Event, RangeKind, Record};
use crate::scan::version::Order;
use crate::scan::Package;

/// A package found affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The lowest `fixed` version above the installed one in the ranges that matched (in
    /// any range when only the `versions` list matched); None when no fix is known.
    pub fixed: Option<String>,
}

/// The part of an ecosystem before its first `:` (`Debian` of `Debian:12`): what an index
/// groups records by, since releases are matched with [`ecosystem_matches`].
pub fn ecosystem_base(ecosystem: &str) -> &str {
    ecosystem.split(':').next().unwrap_or(ecosystem)
}

/// Whether a record's ecosystem covers a package's (see the module's rules).
pub fn ecosystem_matches(record: &str, package: &str) -> bool {
    if record == package {
        return true;
    }
    let (record_base, record_release) = split_release(record);
    let (package_base, package_release) = split_release(package);
    if record_base != package_base {
        return false;
    }
    match (record_release, package_release) {
        (None, _) | (_, None) => true,
        (Some(r), Some(p)) if record_base == "Ubuntu" => {
            r.strip_suffix(":LTS").unwrap_or(r) == p.strip_suffix(":LTS").unwrap_or(p)
        }
        // Red Hat files records per stream (`enterprise_linux:9::appstream`, `::baseos`);
        // the rpm database does not say which stream a package came from, so a package of
        // `enterprise_linux:9` matches every stream of that release.
        (Some(r), Some(p)) if record_base == "Red Hat" => {
            r == p || r.strip_prefix(p).is_some_and(|rest| rest.starts_with(':'))
        }
        (Some(r), Some(p)) => r == p,
    }
}

fn split_release(ecosystem: &str) -> (&str, Option<&str>) {
    match ecosystem.split_once(':') {
        Some((base, release)) if !release.is_empty() => (base, Some(release)),
        Some((base, _)) => (base, None),
        None => (ecosystem, None),
    }
}

/// A package name as its ecosystem compares names: PEP 503 for PyPI (lowercase, runs of
/// `-`, `_`, `.` as one `-`), exact elsewhere.
pub fn normalize_name<'a>(ecosystem: &str, name: &'a str) -> Cow<'a, str> {
    if ecosystem_base(ecosystem) != "PyPI" {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    let mut in_separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator {
                out.push('-');
            }
            in_separator = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_separator = false;
        }
    }
    Cow::Owned(out)
}

/// Whether `affected` covers `package`: same ecosystem (release rules above) and name, and
/// the installed version listed in `versions` or inside one of the ranges.
pub fn affects(affected: &Affected, package: &Package) -> Option<Match> {
    let eco = &affected.package.ecosystem;
    if !ecosystem_matches(eco, &package.ecosystem)
        || normalize_name(eco, &affected.package.name)
            != normalize_name(&package.ecosystem, &package.name)
    {
        return None;
    }
    let installed = package.version.as_str();
    let listed = affected.versions.iter().any(|v| v == installed);
    let mut in_range = false;
    let mut fixed_in_range: Option<(Order, &str)> = None;
    let mut fixed_anywhere: Option<(Order, &str)> = None;
    for range in &affected.ranges {
        let Some(order) = range_order(&range.kind, eco) else {
            continue;
        };
        let Some(verdict) = evaluate(order, installed, &range.events) else {
            continue;
        };
        if verdict.vulnerable {
            in_range = true;
            lowest(&mut fixed_in_range, order, verdict.fixed);
        }
        lowest(&mut fixed_anywhere, order, verdict.fixed);
    }
    let fixed = match (in_range, listed) {
        (true, _) => fixed_in_range,
        (false, true) => fixed_anywhere,
        (false, false) => return None,
    };
    Some(Match {
        fixed: fixed.map(|(_, v)| v.to_owned()),
    })
}

/// Whether a record affects `package` through any of its `affected` entries; the first
/// entry that matched (whose severity applies) and the lowest fix among all that did.
/// Withdrawn records match nothing.
pub fn record_affects<'r>(record: &'r Record, package: &Package) -> Option<(&'r Affected, Match)> {
    if record.withdrawn.is_some() {
        return None;
    }
    let mut found: Option<(&Affected, Match)> = None;
    for affected in &record.affected {
        let Some(m) = affects(affected, package) else {
            continue;
        };
        match &mut found {
            None => found = Some((affected, m)),
            Some((_, first)) => {
                let order = Order::of_ecosystem(&package.ecosystem);
                first.fixed = match (first.fixed.take(), m.fixed) {
                    (Some(a), Some(b)) => {
                        let b_lower = order.and_then(|o| o.compare(&b, &a)) == Some(Ordering::Less);
                        Some(if b_lower { b } else { a })
                    }
                    (a, b) => a.or(b),
                };
            }
        }
    }
    found
}

/// The order a range's events follow; None for ranges a scan does not evaluate.
fn range_order(kind: &RangeKind, ecosystem: &str) -> Option<Order> {
    match kind {
        RangeKind::Ecosystem => Order::of_ecosystem(ecosystem),
        RangeKind::Semver => Some(Order::Semver),
        RangeKind::Git | RangeKind::Other(_) => None,
    }
}

/// Keeps the lower of `slot` and `candidate` in `order`.
fn lowest<'a>(slot: &mut Option<(Order, &'a str)>, order: Order, candidate: Option<&'a str>) {
    let Some(candidate) = candidate else { return };
    match slot {
        Some((_, current)) if order.compare(candidate, current) != Some(Ordering::Less) => {}
        _ => *slot = Some((order, candidate)),
    }
}

struct Verdict<'a> {
    vulnerable: bool,
    /// The lowest `fixed` above the installed version, whether or not it is vulnerable.
    fixed: Option<&'a str>,
}

/// The schema's `IncludedInRanges` for one range: events sorted in the order (`introduced:
/// "0"` first), then walked: `introduced` at or below the version makes it vulnerable,
/// `fixed` at or below it or `last_affected` below it makes it not; and only versions
/// below some `limit` (`*` is infinity) count when limits are given. None when the
/// installed version or an event is not a version of the order.
fn evaluate<'a>(order: Order, installed: &str, events: &'a [Event]) -> Option<Verdict<'a>> {
    let semver = order == Order::Semver;
    let read = |v: &'a str| {
        if semver {
            v.strip_prefix('v').unwrap_or(v)
        } else {
            v
        }
    };
    let installed = if semver {
        installed.strip_prefix('v').unwrap_or(installed)
    } else {
        installed
    };
    order.compare(installed, installed)?;
    let is_zero = |e: &Event| matches!(e, Event::Introduced(v) if v == "0");
    let is_infinite = |e: &Event| matches!(e, Event::Limit(v) if v.contains('*'));
    for e in events {
        if !is_zero(e) && !is_infinite(e) {
            order.compare(read(e.version()), read(e.version()))?;
        }
    }
    // Where an event sits relative to the installed version.
    let against = |e: &'a Event| -> Ordering {
        if is_zero(e) {
            Ordering::Less
        } else if is_infinite(e) {
            Ordering::Greater
        } else {
            order
                .compare(read(e.version()), installed)
                .unwrap_or(Ordering::Equal)
        }
    };

    let mut limited = false;
    let mut below_a_limit = false;
    for e in events.iter().filter(|e| matches!(e, Event::Limit(_))) {
        limited = true;
        below_a_limit |= against(e) == Ordering::Greater;
    }
    let fixed = events
        .iter()
        .filter(|e| matches!(e, Event::Fixed(_)) && against(e) == Ordering::Greater)
        .map(|e| read(e.version()))
        .min_by(|a, b| order.compare(a, b).unwrap_or(Ordering::Equal))
        .and_then(|lowest| {
            // Hand back the record's own spelling.
            events.iter().find_map(|e| match e {
                Event::Fixed(v) if read(v) == lowest => Some(v.as_str()),
                _ => None,
            })
        });
    if limited && !below_a_limit {
        return Some(Verdict {
            vulnerable: false,
            fixed,
        });
    }

    // The walk over the sorted events ends in the state the last event that applies set,
    // so that event is found directly: the highest that applies, the later one in the
    // record among equals (a stable sort's order). No sort: an order that is not quite
    // transitive (rpmvercmp's odd corners) cannot make one panic.
    let applies = |e: &'a Event| match e {
        Event::Introduced(_) | Event::Fixed(_) => against(e) != Ordering::Greater,
        Event::LastAffected(_) => against(e) == Ordering::Less,
        Event::Limit(_) => false,
    };
    let mut last: Option<&Event> = None;
    for e in events.iter().filter(|e| applies(e)) {
        let later = match last {
            None => true,
            Some(l) => match (is_zero(l), is_zero(e)) {
                (_, true) => is_zero(l),
                (true, false) => true,
                (false, false) => {
                    order.compare(read(e.version()), read(l.version())) != Some(Ordering::Less)
                }
            },
        };
        if later {
            last = Some(e);
        }
    }
    let vulnerable = matches!(last, Some(Event::Introduced(_)));
    Some(Verdict { vulnerable, fixed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::osv::record::Record;

    fn package(ecosystem: &str, name: &str, version: &str) -> Package {
        Package {
            ecosystem: ecosystem.into(),
            name: name.into(),
            version: version.into(),
            binary: None,
            path: "var/lib/dpkg/status".into(),
        }
    }

    /// One record whose single `affected` entry has the given ranges / versions JSON.
    fn record(ecosystem: &str, name: &str, body: &str) -> Record {
        let json = format!(
            r#"{{"id": "TEST-1", "modified": "2024-01-01T00:00:00Z",
                "affected": [{{"package": {{"ecosystem": "{ecosystem}", "name": "{name}"}}, {body}}}]}}"#
        );
        Record::parse(json.as_bytes()).unwrap()
    }

    fn check(ecosystem: &str, body: &str, cases: &[(&str, Option<Option<&str>>)]) {
        let r = record(ecosystem, "pkg", body);
        for (version, want) in cases {
            let got = affects(&r.affected[0], &package(ecosystem, "pkg", version));
            let want = want.map(|f| Match {
                fixed: f.map(str::to_owned),
            });
            assert_eq!(got, want, "{ecosystem} {version} against {body}");
        }
    }

    const NOT: Option<Option<&str>> = None;
    const NO_FIX: Option<Option<&str>> = Some(None);

    #[test]
    fn red_hat_streams_and_ubuntu_lts() {
        let pkg = "Red Hat:enterprise_linux:9";
        assert!(ecosystem_matches(
            "Red Hat:enterprise_linux:9::appstream",
            pkg
        ));
        assert!(ecosystem_matches("Red Hat:enterprise_linux:9::baseos", pkg));
        assert!(ecosystem_matches("Red Hat", pkg));
        assert!(!ecosystem_matches(
            "Red Hat:enterprise_linux:8::baseos",
            pkg
        ));
        assert!(!ecosystem_matches(
            "Red Hat:enterprise_linux:90::baseos",
            pkg
        ));
        assert!(ecosystem_matches("Ubuntu:22.04:LTS", "Ubuntu:22.04:LTS"));
        assert!(ecosystem_matches("Ubuntu:22.04:LTS", "Ubuntu:22.04"));
        assert!(!ecosystem_matches("Ubuntu:20.04:LTS", "Ubuntu:22.04:LTS"));
    }

    #[test]
    fn introduced_zero_and_fixed_exclusive() {
        check(
            "Debian:12",
            r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u1"}]}]"#,
            &[
                ("3.0.9-1", Some(Some("3.0.11-1~deb12u1"))),
                ("0.1", Some(Some("3.0.11-1~deb12u1"))),
                // `~` sorts before the end: the deb12u1 backport is below 3.0.11-1.
                ("3.0.11-1~deb12u0", Some(Some("3.0.11-1~deb12u1"))),
                ("3.0.11-1~deb12u1", NOT),
                ("3.0.11-1", NOT),
                ("3.0.11-1~deb12u2", NOT),
            ],
        );
    }

    #[test]
    fn epochs_count_before_everything() {
        check(
            "Debian:12",
            r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:1.0-1"}]}]"#,
            &[
                // 2.0 has epoch 0: below 1:1.0.
                ("2.0-1", Some(Some("1:1.0-1"))),
                ("99.9", Some(Some("1:1.0-1"))),
                ("1:0.9-1", Some(Some("1:1.0-1"))),
                ("1:1.0-1", NOT),
                ("2:0.1", NOT),
            ],
        );
    }

    #[test]
    fn tilde_pre_releases_sort_before_the_release() {
        check(
            "Debian:12",
            r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.0~rc1"}, {"fixed": "1.0"}]}]"#,
            &[
                ("1.0~beta1", NOT),
                ("1.0~rc1", Some(Some("1.0"))),
                ("1.0~rc2", Some(Some("1.0"))),
                ("1.0", NOT),
                ("1.0+deb1", NOT),
            ],
        );
    }

    #[test]
    fn last_affected_is_inclusive() {
        check(
            "Debian:12",
            r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "2.0"}, {"last_affected": "2.5-3"}]}]"#,
            &[
                ("1.9", NOT),
                ("2.0", NO_FIX),
                ("2.5-3", NO_FIX),
                ("2.5-3+b1", NOT),
                ("2.5-4", NOT),
            ],
        );
    }

    #[test]
    fn unfixed_range_affects_everything_from_introduced() {
        check(
            "Debian:12",
            r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]"#,
            &[("0", NO_FIX), ("1:9.9-9", NO_FIX)],
        );
    }

    #[test]
    fn several_intervals_in_one_range_and_several_ranges() {
        // Events deliberately out of order: the walk sorts them.
        let body = r#""ranges": [
            {"type": "ECOSYSTEM", "events": [{"fixed": "1.2"}, {"introduced": "3.0"}, {"introduced": "1.0"}, {"fixed": "3.2"}]},
            {"type": "ECOSYSTEM", "events": [{"introduced": "5.0"}, {"fixed": "5.1"}]},
            {"type": "GIT", "repo": "https://example.org/x.git", "events": [{"introduced": "0"}, {"fixed": "abcdef"}]}
        ]"#;
        check(
            "Debian:12",
            body,
            &[
                ("0.9", NOT),
                ("1.0", Some(Some("1.2"))),
                ("1.1", Some(Some("1.2"))),
                ("1.2", NOT),
                ("2.0", NOT),
                ("3.0", Some(Some("3.2"))),
                ("3.1", Some(Some("3.2"))),
                ("3.2", NOT),
                ("5.0", Some(Some("5.1"))),
                ("5.1", NOT),
            ],
        );
    }

    #[test]
    fn equal_versions_keep_the_record_order() {
        // Degenerate, but the walk over a stable sort decides it: the later event wins.
        check(
            "Debian:12",
            r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"fixed": "1.0"}]}]"#,
            &[("1.0", NOT), ("1.1", NOT)],
        );
        check(
            "Debian:12",
            r#""ranges": [{"type": "ECOSYSTEM", "events": [{"fixed": "1.0"}, {"introduced": "1.0"}]}]"#,
            &[("0.9", NOT), ("1.0", NO_FIX), ("1.1", NO_FIX)],
        );
        // `1.0` and `1.0-0` are equal to dpkg (an absent revision is `0`).
        check(
            "Debian:12",
            r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0-0"}]}]"#,
            &[("1.0", NOT), ("0.9", Some(Some("1.0-0")))],
        );
    }

    #[test]
    fn versions_list_matches_exact_strings() {
        let body = r#""versions": ["2.36-9+deb12u1", "2.36-9+deb12u3"],
            "ranges": [{"type": "GIT", "repo": "https://x", "events": [{"introduced": "0"}]},
                       {"type": "ECOSYSTEM", "events": [{"introduced": "2.40"}, {"fixed": "2.40-2"}]}]"#;
        check(
            "Debian:12",
            body,
            &[
                // Listed; the lowest fix above it from any range.
                ("2.36-9+deb12u1", Some(Some("2.40-2"))),
                ("2.36-9+deb12u3", Some(Some("2.40-2"))),
                // Not listed, and a different spelling of a listed version does not count.
                ("2.36-9+deb12u2", NOT),
                ("0:2.36-9+deb12u1", NOT),
                ("2.40-1", Some(Some("2.40-2"))),
            ],
        );
        // An ecosystem with no order at all still matches by the list.
        check(
            "Hackage",
            r#""versions": ["1.0"]"#,
            &[("1.0", NO_FIX), ("1.1", NOT)],
        );
    }

    #[test]
    fn rpm_ranges() {
        check(
            "Red Hat:enterprise_linux:9::baseos",
            r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:3.0.7-27.el9"}]}]"#,
            &[
                ("1:3.0.7-24.el9", Some(Some("1:3.0.7-27.el9"))),
                ("1:3.0.7-27.el9", NOT),
                ("1:3.0.7-28.el9", NOT),
                // No epoch is epoch 0: below 1:.
                ("3.0.8-1.el9", Some(Some("1:3.0.7-27.el9"))),
            ],
        );
    }

    #[test]
    fn limits_bound_the_range() {
        let body = r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"limit": "2.0"}]}]"#;
        check(
            "Debian:12",
            body,
            &[("0.5", NOT), ("1.0", NO_FIX), ("1.9", NO_FIX), ("2.0", NOT)],
        );
        let body = r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"limit": "*"}]}]"#;
        check("Debian:12", body, &[("9.0", NO_FIX)]);
    }

    #[test]
    fn unreadable_versions_do_not_match_by_range() {
        // dpkg refuses whitespace and a non-numeric epoch.
        let body = r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "x:1"}]}]"#;
        check("Debian:12", body, &[("1.0", NOT)]);
        let body = r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0"}]}],
                      "versions": ["not a version"]"#;
        check(
            "Debian:12",
            body,
            &[("1.0", Some(Some("2.0"))), ("not a version", NO_FIX)],
        );
        // An ecosystem the scan has no order for.
        let body = r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]"#;
        check("Hackage", body, &[("1.0", NOT)]);
    }

    #[test]
    fn ecosystems_and_releases() {
        for (record, package, want) in [
            ("Debian:12", "Debian:12", true),
            ("Debian:11", "Debian:12", false),
            ("Debian", "Debian:12", true),
            ("Alpine", "Alpine:v3.19", true),
            ("Alpine:v3.18", "Alpine:v3.19", false),
            ("Debian:12", "Ubuntu:22.04", false),
            ("Ubuntu:22.04:LTS", "Ubuntu:22.04", true),
            ("Ubuntu:22.04:LTS", "Ubuntu:22.04:LTS", true),
            ("Ubuntu:22.04", "Ubuntu:22.04:LTS", true),
            ("Ubuntu:20.04:LTS", "Ubuntu:22.04", false),
            ("Ubuntu:Pro:22.04:LTS", "Ubuntu:22.04", false),
            (
                "Ubuntu:Pro:FIPS-updates:20.04:LTS",
                "Ubuntu:20.04:LTS",
                false,
            ),
            ("Ubuntu:Pro:22.04:LTS", "Ubuntu:Pro:22.04:LTS", true),
            ("Red Hat:enterprise_linux:9::baseos", "Red Hat", true),
            ("Rocky Linux:9", "Rocky Linux:8", false),
            ("PyPI", "PyPI", true),
            ("npm", "PyPI", false),
            ("Debian:12", "Debian", true),
            ("Debian:", "Debian:12", true),
            ("Debianx", "Debian:12", false),
        ] {
            assert_eq!(
                ecosystem_matches(record, package),
                want,
                "{record} vs {package}"
            );
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            normalize_name("PyPI", "Django_REST.framework"),
            "django-rest-framework"
        );
        assert_eq!(normalize_name("PyPI", "a-_.b__C"), "a-b-c");
        assert_eq!(normalize_name("npm", "@Scope/Pkg"), "@Scope/Pkg");
        let r = record(
            "PyPI",
            "Pillow",
            r#""versions": ["9.0.0"], "ranges": [{"type": "GIT", "events": [{"introduced": "0"}]}]"#,
        );
        assert!(affects(&r.affected[0], &package("PyPI", "pillow", "9.0.0")).is_some());
        let r = record("npm", "Lodash", r#""versions": ["1.0.0"]"#);
        assert!(affects(&r.affected[0], &package("npm", "lodash", "1.0.0")).is_none());
        let r = record("Debian:12", "openssl", r#""versions": ["1.0"]"#);
        assert!(affects(&r.affected[0], &package("Debian:12", "openssl3", "1.0")).is_none());
        assert!(affects(&r.affected[0], &package("Debian:11", "openssl", "1.0")).is_none());
    }

    #[test]
    fn withdrawn_records_and_several_entries() {
        let json = r#"{"id": "DSA-1", "modified": "2024-01-01T00:00:00Z",
          "affected": [
            {"package": {"ecosystem": "Debian:11", "name": "glibc"},
             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.31-13+deb11u7"}]}]},
            {"package": {"ecosystem": "Debian", "name": "glibc"},
             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.31-13+deb11u9"}]}]},
            {"package": {"ecosystem": "Debian", "name": "glibc"},
             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.31-13+deb11u5"}]}]}
          ]}"#;
        let mut r = Record::parse(json.as_bytes()).unwrap();
        let p = package("Debian:11", "glibc", "2.31-13+deb11u2");
        let (first, m) = record_affects(&r, &p).unwrap();
        assert_eq!(first.package.ecosystem, "Debian:11");
        assert_eq!(m.fixed.as_deref(), Some("2.31-13+deb11u5"));
        // The neighbouring release's fix is not borrowed.
        let p12 = package("Debian:12", "glibc", "2.31-13+deb11u2");
        let (first, m) = record_affects(&r, &p12).unwrap();
        assert_eq!(first.package.ecosystem, "Debian");
        assert_eq!(m.fixed.as_deref(), Some("2.31-13+deb11u5"));
        r.withdrawn = Some(1);
        assert_eq!(record_affects(&r, &p), None);
    }

    #[test]
    fn semver_ranges() {
        let body = r#""ranges": [{"type": "SEMVER", "events": [{"introduced": "1.0.0"}, {"fixed": "1.2.3"}]}]"#;
        check(
            "crates.io",
            body,
            &[
                ("0.9.9", NOT),
                ("1.0.0", Some(Some("1.2.3"))),
                ("1.2.3-rc.1", Some(Some("1.2.3"))),
                ("1.2.3", NOT),
                ("1.10.0", NOT),
            ],
        );
        // Go writes versions with a `v`; SEMVER events have none.
        let body = r#""ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "0.17.0"}]}]"#;
        check(
            "Go",
            body,
            &[
                ("v0.16.0", Some(Some("0.17.0"))),
                ("v0.0.0-20210101000000-abcdefabcdef", Some(Some("0.17.0"))),
                ("v0.17.0", NOT),
            ],
        );
    }

    #[test]
    fn pypi_ranges() {
        let body = r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "2.0"}, {"fixed": "2.10.0"}]}]"#;
        check(
            "PyPI",
            body,
            &[
                ("1.9", NOT),
                ("2.0.0", Some(Some("2.10.0"))),
                ("2.9.2", Some(Some("2.10.0"))),
                ("2.10.0rc1", Some(Some("2.10.0"))),
                ("2.10", NOT),
            ],
        );
    }

    #[test]
    fn alpine_ranges() {
        let body = r#""ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.36.1-r5"}]}]"#;
        check(
            "Alpine:v3.18",
            body,
            &[
                ("1.36.1-r0", Some(Some("1.36.1-r5"))),
                ("1.36.1-r5", NOT),
                ("1.36.1-r15", NOT),
            ],
        );
    }
}
