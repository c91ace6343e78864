//! What a scan reports: each record that affects a package found in the image, once per
//! package, with its severity and the version that fixes it. Records are looked up through
//! an [`Index`] by `(ecosystem, name)`, so a scan costs a lookup per package, not a pass
//! over every record.

use std::collections::HashMap;

use super::matching::{ecosystem_base, normalize_name, record_affects};
use super::record::Record;
use super::severity::{assess, Severity};
use crate::scan::Package;

/// Summaries longer than this (in characters) are cut, so a report stays a table.
pub const SUMMARY_CHARS: usize = 300;

/// One vulnerability in one installed package.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    /// The record's id (`DSA-5514-1`, `GHSA-...`, `CVE-2023-4911`).
    pub id: String,
    /// The CVE it is about: the id itself when it is one, else the first CVE among its
    /// aliases and upstream records.
    pub cve: Option<String>,
    pub severity: Severity,
    /// The CVSS base score the severity came from, when a score decided it.
    pub cvss: Option<f32>,
    /// The package's name as the advisory names it (a Debian source package).
    pub package: String,
    /// The installed binary package built from it, when its name differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    pub installed: String,
    /// The lowest version that fixes it; None when no fix is known.
    pub fixed: Option<String>,
    /// The record's summary, else the first line of its details, cut to
    /// [`SUMMARY_CHARS`].
    pub summary: String,
    /// The package's ecosystem (`Debian:12`).
    pub ecosystem: String,
    /// Where the package was found in the image.
    pub path: String,
}

/// Records grouped by (ecosystem without release, normalized name). Withdrawn records are
/// left out: they match nothing.
pub struct Index<'r> {
    records: &'r [Record],
    by_key: HashMap<String, Vec<usize>>,
}

impl<'r> Index<'r> {
    pub fn new(records: &'r [Record]) -> Index<'r> {
        let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, record) in records.iter().enumerate() {
            if record.withdrawn.is_some() {
                continue;
            }
            for affected in &record.affected {
                let p = &affected.package;
                let list = by_key.entry(key(&p.ecosystem, &p.name)).or_default();
                // A record names one package once per release: keep it once.
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        Index { records, by_key }
    }

    /// The records that name the package's ecosystem and name; whether they affect its
    /// version is [`record_affects`]'s question.
    pub fn candidates<'a>(&'a self, package: &Package) -> impl Iterator<Item = &'r Record> + 'a {
        let records = self.records;
        self.by_key
            .get(&key(&package.ecosystem, &package.name))
            .into_iter()
            .flatten()
            .filter_map(move |&i| records.get(i))
    }

    /// Every record that affects each package, most severe first, then by id.
    pub fn findings(&self, packages: &[Package]) -> Vec<Finding> {
        let mut out = Vec::new();
        for package in packages {
            for record in self.candidates(package) {
                let Some((affected, m)) = record_affects(record, package) else {
                    continue;
                };
                let (severity, cvss) = assess(record, affected);
                out.push(Finding {
                    id: record.id.clone(),
                    cve: record.cve().map(str::to_owned),
                    severity,
                    cvss,
                    package: package.name.clone(),
                    binary: package.binary.clone(),
                    installed: package.version.clone(),
                    fixed: m.fixed,
                    summary: summary(record),
                    ecosystem: package.ecosystem.clone(),
                    path: package.path.clone(),
                });
            }
        }
        out.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.id.cmp(&b.id))
                .then_with(|| a.package.cmp(&b.package))
                .then_with(|| a.binary.cmp(&b.binary))
                .then_with(|| a.path.cmp(&b.path))
                .then_with(|| a.installed.cmp(&b.installed))
        });
        out
    }
}

/// Every record that affects each package; see [`Index::findings`].
pub fn findings(records: &[Record], packages: &[Package]) -> Vec<Finding> {
    Index::new(records).findings(packages)
}

fn key(ecosystem: &str, name: &str) -> String {
    format!(
        "{}\n{}",
        ecosystem_base(ecosystem),
        normalize_name(ecosystem, name)
    )
}

fn summary(record: &Record) -> String {
    let text = match record.summary.trim() {
        "" => record
            .details
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or(""),
        s => s,
    };
    if text.chars().count() <= SUMMARY_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(SUMMARY_CHARS - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(ecosystem: &str, name: &str, version: &str, binary: Option<&str>) -> Package {
        Package {
            ecosystem: ecosystem.into(),
            name: name.into(),
            version: version.into(),
            binary: binary.map(str::to_owned),
            path: "var/lib/dpkg/status".into(),
        }
    }

    fn records() -> Vec<Record> {
        [
            // A Debian advisory naming its CVE as an alias, with the fix for two releases.
            r#"{"id": "DSA-5514-1", "modified": "2023-10-03T00:00:00Z",
                "aliases": ["DEBIAN-CVE-2023-4911", "CVE-2023-4911"],
                "summary": "glibc - security update",
                "affected": [
                  {"package": {"ecosystem": "Debian:11", "name": "glibc"},
                   "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.31-13+deb11u7"}]}]},
                  {"package": {"ecosystem": "Debian:12", "name": "glibc"},
                   "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.36-9+deb12u3"}]}],
                   "ecosystem_specific": {"urgency": "high"}}]}"#,
            // A CVE record rated by its vector; no fix.
            r#"{"id": "CVE-2024-0001", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2024-9999"],
                "details": "\n\n  First line of the details.  \nSecond line.",
                "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
                "affected": [{"package": {"ecosystem": "Debian:12", "name": "glibc"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]}"#,
            // Withdrawn: never reported.
            r#"{"id": "DSA-0001-1", "modified": "2024-01-01T00:00:00Z", "withdrawn": "2024-02-01T00:00:00Z",
                "aliases": ["CVE-2024-0002"],
                "affected": [{"package": {"ecosystem": "Debian:12", "name": "glibc"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]}"#,
            // Another package, lower severity, no CVE.
            r#"{"id": "DLA-0002-1", "modified": "2024-01-01T00:00:00Z", "summary": "zlib - update",
                "affected": [{"package": {"ecosystem": "Debian", "name": "zlib"},
                  "versions": ["1:1.2.13.dfsg-1"], "ecosystem_specific": {"urgency": "low"}}]}"#,
            // A PyPI record, found through the normalized name.
            r#"{"id": "PYSEC-2021-1", "modified": "2024-01-01T00:00:00Z", "aliases": ["GHSA-xxxx"],
                "summary": "XXE in pikepdf",
                "affected": [{"package": {"ecosystem": "PyPI", "name": "PikePDF"}, "versions": ["2.9.2"]}],
                "database_specific": {"severity": "MODERATE"}}"#,
        ]
        .iter()
        .map(|j| Record::parse(j.as_bytes()).unwrap())
        .collect()
    }

    #[test]
    fn findings_sorted_by_severity_then_id() {
        let records = records();
        let packages = [
            package("Debian:12", "glibc", "2.36-9+deb12u1", Some("libc6")),
            package("Debian:12", "glibc", "2.36-9+deb12u1", Some("libc-bin")),
            package("Debian:12", "zlib", "1:1.2.13.dfsg-1", Some("zlib1g")),
            package("Debian:12", "openssl", "3.0.11-1~deb12u2", None),
            package("PyPI", "pikepdf", "2.9.2", None),
            package("PyPI", "pikepdf", "2.10.0", None),
        ];
        let got = findings(&records, &packages);
        let rows: Vec<_> = got
            .iter()
            .map(|f| {
                (
                    f.id.as_str(),
                    f.cve.as_deref(),
                    f.severity,
                    f.cvss,
                    f.binary.as_deref(),
                    f.fixed.as_deref(),
                    f.summary.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "CVE-2024-0001",
                    Some("CVE-2024-0001"),
                    Severity::Critical,
                    Some(9.8),
                    Some("libc-bin"),
                    None,
                    "First line of the details."
                ),
                (
                    "CVE-2024-0001",
                    Some("CVE-2024-0001"),
                    Severity::Critical,
                    Some(9.8),
                    Some("libc6"),
                    None,
                    "First line of the details."
                ),
                (
                    "DSA-5514-1",
                    Some("CVE-2023-4911"),
                    Severity::High,
                    None,
                    Some("libc-bin"),
                    Some("2.36-9+deb12u3"),
                    "glibc - security update"
                ),
                (
                    "DSA-5514-1",
                    Some("CVE-2023-4911"),
                    Severity::High,
                    None,
                    Some("libc6"),
                    Some("2.36-9+deb12u3"),
                    "glibc - security update"
                ),
                (
                    "PYSEC-2021-1",
                    None,
                    Severity::Medium,
                    None,
                    None,
                    None,
                    "XXE in pikepdf"
                ),
                (
                    "DLA-0002-1",
                    None,
                    Severity::Low,
                    None,
                    Some("zlib1g"),
                    None,
                    "zlib - update"
                ),
            ]
        );
        let f = &got[2];
        assert_eq!(
            (
                f.package.as_str(),
                f.installed.as_str(),
                f.ecosystem.as_str(),
                f.path.as_str()
            ),
            (
                "glibc",
                "2.36-9+deb12u1",
                "Debian:12",
                "var/lib/dpkg/status"
            )
        );
    }

    #[test]
    fn index_groups_by_base_ecosystem_and_name() {
        let records = records();
        let index = Index::new(&records);
        let ids =
            |p: &Package| -> Vec<&str> { index.candidates(p).map(|r| r.id.as_str()).collect() };
        // The withdrawn record is not indexed; DSA-5514-1 once despite two entries.
        assert_eq!(
            ids(&package("Debian:12", "glibc", "1", None)),
            ["DSA-5514-1", "CVE-2024-0001"]
        );
        assert_eq!(
            ids(&package("Debian:10", "glibc", "1", None)),
            ["DSA-5514-1", "CVE-2024-0001"]
        );
        assert_eq!(
            ids(&package("Debian:12", "zlib", "1", None)),
            ["DLA-0002-1"]
        );
        assert_eq!(
            ids(&package("PyPI", "Pike_PDF", "1", None)),
            Vec::<&str>::new()
        );
        assert_eq!(
            ids(&package("PyPI", "PIKEPDF", "1", None)),
            ["PYSEC-2021-1"]
        );
        assert_eq!(
            ids(&package("Ubuntu:22.04", "glibc", "1", None)),
            Vec::<&str>::new()
        );
        // Another release of the base is a candidate but not a match.
        assert!(findings(&records, &[package("Debian:10", "glibc", "2.28-10", None)]).is_empty());
    }

    #[test]
    fn serializes_for_reports() {
        let records = records();
        let got = findings(
            &records,
            &[package("Debian:12", "zlib", "1:1.2.13.dfsg-1", None)],
        );
        assert_eq!(
            serde_json::to_value(&got[0]).unwrap(),
            serde_json::json!({
                "id": "DLA-0002-1", "cve": null, "severity": "low", "cvss": null,
                "package": "zlib", "installed": "1:1.2.13.dfsg-1", "fixed": null,
                "summary": "zlib - update", "ecosystem": "Debian:12",
                "path": "var/lib/dpkg/status"
            })
        );
    }

    #[test]
    fn long_summaries_are_cut() {
        let long = "é".repeat(400);
        let r = Record::parse(
            format!(r#"{{"id": "X", "modified": "2024-01-01T00:00:00Z", "summary": "{long}"}}"#)
                .as_bytes(),
        )
        .unwrap();
        let s = summary(&r);
        assert_eq!(s.chars().count(), SUMMARY_CHARS);
        assert!(s.ends_with("é…"));
        let r = Record::parse(br#"{"id": "X", "modified": "2024-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(summary(&r), "");
    }
}
