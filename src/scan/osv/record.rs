//! An OSV record (<https://ossf.github.io/osv-schema/>), as much of it as matching and
//! reporting need. Unknown fields are ignored so that records of a newer schema version still
//! read; `ecosystem_specific` and `database_specific` keep only the severity words scanners
//! use, because some databases (Go's) put long symbol lists there that a scan never reads.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One vulnerability record.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Record {
    /// `GHSA-...`, `DSA-...`, `CVE-...`, `RHSA-...`.
    pub id: String,
    /// Unix seconds; what an import compares to keep the newest copy of a record.
    #[serde(deserialize_with = "timestamp", serialize_with = "write_timestamp")]
    pub modified: i64,
    #[serde(
        default,
        deserialize_with = "optional_timestamp",
        serialize_with = "write_optional_timestamp"
    )]
    pub published: Option<i64>,
    /// Set when the record was retracted: it then matches nothing.
    #[serde(
        default,
        deserialize_with = "optional_timestamp",
        serialize_with = "write_optional_timestamp"
    )]
    pub withdrawn: Option<i64>,
    #[serde(default, deserialize_with = "strings")]
    pub aliases: Vec<String>,
    /// The records this one was derived from: Red Hat, Debian and Ubuntu name the CVE here
    /// rather than in `aliases`.
    #[serde(default, deserialize_with = "strings")]
    pub upstream: Vec<String>,
    #[serde(default, deserialize_with = "text")]
    pub summary: String,
    #[serde(default, deserialize_with = "text")]
    pub details: String,
    #[serde(default, deserialize_with = "nullable")]
    pub severity: Vec<SeverityScore>,
    #[serde(default, deserialize_with = "nullable")]
    pub affected: Vec<Affected>,
    #[serde(default, deserialize_with = "nullable")]
    pub database_specific: Specific,
}

/// A quantitative severity: a CVSS vector, or a distribution's own word (`Ubuntu`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SeverityScore {
    /// `CVSS_V2`, `CVSS_V3`, `CVSS_V4`, `Ubuntu`, or a type this code does not know.
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

/// The versions of one package that a record affects.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Affected {
    pub package: AffectedPackage,
    /// Set only when the packages of one record differ in severity (then the record's own
    /// `severity` is empty).
    #[serde(default, deserialize_with = "nullable")]
    pub severity: Vec<SeverityScore>,
    #[serde(default, deserialize_with = "nullable")]
    pub ranges: Vec<Range>,
    /// Affected versions listed one by one, compared as exact strings.
    #[serde(default, deserialize_with = "strings")]
    pub versions: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ecosystem_specific: Specific,
    #[serde(default, deserialize_with = "nullable")]
    pub database_specific: Specific,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct AffectedPackage {
    /// `Debian:12`, `Alpine:v3.19`, `PyPI`, `Red Hat:enterprise_linux:9::baseos`.
    pub ecosystem: String,
    pub name: String,
    #[serde(default, deserialize_with = "optional_text")]
    pub purl: Option<String>,
}

/// A range of versions given as a timeline of events.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Range {
    #[serde(rename = "type")]
    pub kind: RangeKind,
    #[serde(default, deserialize_with = "nullable")]
    pub events: Vec<Event>,
}

/// How a range's event versions are ordered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum RangeKind {
    /// Semantic Versioning 2.0.0, without a leading `v`.
    Semver,
    /// The ecosystem's own order.
    Ecosystem,
    /// Commit hashes: needs the repository's history, so a scan does not evaluate it.
    Git,
    /// A type added after this code was written: not evaluated.
    Other(String),
}

impl From<RangeKind> for String {
    fn from(kind: RangeKind) -> String {
        match kind {
            RangeKind::Semver => "SEMVER".into(),
            RangeKind::Ecosystem => "ECOSYSTEM".into(),
            RangeKind::Git => "GIT".into(),
            RangeKind::Other(k) => k,
        }
    }
}

impl From<String> for RangeKind {
    fn from(kind: String) -> RangeKind {
        match kind.as_str() {
            "SEMVER" => RangeKind::Semver,
            "ECOSYSTEM" => RangeKind::Ecosystem,
            "GIT" => RangeKind::Git,
            _ => RangeKind::Other(kind),
        }
    }
}

/// One status change on a range's timeline; the schema allows exactly one key per event
/// object, which serde's external tagging enforces.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub enum Event {
    /// From this version on (inclusive); `"0"` is before every version.
    #[serde(rename = "introduced")]
    Introduced(String),
    /// Not affected from this version on.
    #[serde(rename = "fixed")]
    Fixed(String),
    /// Affected up to and including this version.
    #[serde(rename = "last_affected")]
    LastAffected(String),
    /// Only versions below some limit are considered (`*` is infinity).
    #[serde(rename = "limit")]
    Limit(String),
}

impl Event {
    pub fn version(&self) -> &str {
        match self {
            Event::Introduced(v) | Event::Fixed(v) | Event::LastAffected(v) | Event::Limit(v) => v,
        }
    }
}

/// The severity words databases put in `ecosystem_specific` / `database_specific`: GitHub's
/// `"severity": "HIGH"`, Debian's `"urgency": "low"`. Values that are not strings are
/// dropped rather than failing the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Specific {
    #[serde(
        default,
        deserialize_with = "optional_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub severity: Option<String>,
    #[serde(
        default,
        deserialize_with = "optional_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub urgency: Option<String>,
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an OSV record: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

impl Record {
    /// Reads one record from its JSON text.
    pub fn parse(json: &[u8]) -> Result<Record, ParseError> {
        serde_json::from_slice(json).map_err(|e| ParseError(e.to_string()))
    }

    /// The CVE this record is about: its own id when it is one, else the first CVE among
    /// its aliases, then among the records it derives from.
    pub fn cve(&self) -> Option<&str> {
        std::iter::once(&self.id)
            .chain(&self.aliases)
            .chain(&self.upstream)
            .map(String::as_str)
            .find(|id| id.starts_with("CVE-"))
    }
}

/// RFC 3339 to Unix seconds. Some databases leave out the offset; those times are UTC.
fn parse_time(text: &str) -> Option<i64> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Some(t.as_second());
    }
    let civil = text.parse::<jiff::civil::DateTime>().ok()?;
    Some(
        civil
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp()
            .as_second(),
    )
}

fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let text = String::deserialize(d)?;
    parse_time(&text)
        .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time")))
}

/// Unix seconds back to RFC 3339, so that a stored record reads as an imported one.
fn write_timestamp<S: Serializer>(t: &i64, s: S) -> Result<S::Ok, S::Error> {
    match jiff::Timestamp::from_second(*t) {
        Ok(ts) => s.serialize_str(&ts.to_string()),
        Err(e) => Err(serde::ser::Error::custom(e)),
    }
}

fn write_optional_timestamp<S: Serializer>(t: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => write_timestamp(t, s),
        None => s.serialize_none(),
    }
}

fn optional_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(text) => parse_time(&text)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time"))),
    }
}

/// `null` reads as the default (empty list, no words), as some exporters write it.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    nullable(d)
}

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    nullable(d)
}

/// A string, or None for anything else (a number, an object): these fields are hints.
fn optional_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like GHSA-r9p9-mrjm-926w as the schema document shows it, plus an unknown
    /// field at every level.
    const GHSA: &str = r#"{
      "schema_version": "1.2.0",
      "id": "GHSA-r9p9-mrjm-926w",
      "modified": "2021-03-08T16:02:43Z",
      "published": "2021-03-08T16:06:50.123456Z",
      "aliases": ["CVE-2020-28498"],
      "summary": "Use of a Broken or Risky Cryptographic Algorithm",
      "details": "The npm package `elliptic` before version 6.5.4 ...",
      "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:C/C:H/I:N/A:N"}],
      "affected": [{
        "package": {"ecosystem": "npm", "name": "elliptic", "purl": "pkg:npm/elliptic", "x": 1},
        "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "6.5.4"}],
                    "database_specific": {"y": 2}}],
        "versions": ["6.5.3"],
        "ecosystem_specific": {"imports": [{"path": "x", "symbols": ["A", "B"]}]},
        "database_specific": {"source": "https://example.org"}
      }],
      "references": [{"type": "WEB", "url": "https://example.org"}],
      "database_specific": {"cwe_ids": ["CWE-327"], "severity": "MODERATE", "github_reviewed": true}
    }"#;

    #[test]
    fn a_stored_record_reads_back_the_same() {
        let r = Record::parse(GHSA.as_bytes()).unwrap();
        let stored = serde_json::to_string(&r).unwrap();
        assert_eq!(Record::parse(stored.as_bytes()).unwrap(), r);
        assert!(
            stored.len() < GHSA.len(),
            "what matching does not need is dropped"
        );
    }

    #[test]
    fn reads_a_ghsa_record_ignoring_unknown_fields() {
        let r = Record::parse(GHSA.as_bytes()).unwrap();
        assert_eq!(r.id, "GHSA-r9p9-mrjm-926w");
        assert_eq!(r.modified, 1615219363);
        assert_eq!(r.published, Some(1615219610));
        assert_eq!(r.withdrawn, None);
        assert_eq!(r.aliases, ["CVE-2020-28498"]);
        assert_eq!(r.cve(), Some("CVE-2020-28498"));
        assert_eq!(r.severity[0].kind, "CVSS_V3");
        assert_eq!(r.database_specific.severity.as_deref(), Some("MODERATE"));
        let a = &r.affected[0];
        assert_eq!(a.package.ecosystem, "npm");
        assert_eq!(a.package.name, "elliptic");
        assert_eq!(a.package.purl.as_deref(), Some("pkg:npm/elliptic"));
        assert_eq!(a.ranges[0].kind, RangeKind::Ecosystem);
        assert_eq!(
            a.ranges[0].events,
            [Event::Introduced("0".into()), Event::Fixed("6.5.4".into())]
        );
        assert_eq!(a.versions, ["6.5.3"]);
        assert_eq!(a.ecosystem_specific, Specific::default());
    }

    #[test]
    fn reads_debian_urgency_and_red_hat_upstream() {
        let debian = r#"{"id": "DEBIAN-CVE-2024-58382", "modified": "2026-09-12T11:00:05.986201214Z",
          "upstream": ["CVE-2024-58382"],
          "affected": [{"package": {"name": "php-league-commonmark", "ecosystem": "Debian:12"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
            "versions": ["2.3.9-1"], "ecosystem_specific": {"urgency": "not yet assigned"}}]}"#;
        let r = Record::parse(debian.as_bytes()).unwrap();
        assert_eq!(r.modified, 1789210805);
        assert_eq!(r.cve(), Some("CVE-2024-58382"));
        assert_eq!(
            r.affected[0].ecosystem_specific.urgency.as_deref(),
            Some("not yet assigned")
        );
        let rhsa = r#"{"id": "RHSA-2025:9978", "modified": "2026-03-18T11:30:33+02:00",
          "upstream": ["CVE-2025-32462"], "affected": []}"#;
        let r = Record::parse(rhsa.as_bytes()).unwrap();
        assert_eq!(r.modified, 1773826233);
        assert_eq!(r.cve(), Some("CVE-2025-32462"));
    }

    #[test]
    fn tolerates_nulls_missing_offsets_and_odd_hint_values() {
        let r = Record::parse(
            br#"{"id": "X-1", "modified": "2024-01-01T00:00:00", "aliases": null,
                 "severity": null, "affected": [{"package": {"ecosystem": "Go", "name": "m"},
                 "ranges": null, "versions": null, "ecosystem_specific": {"severity": 3},
                 "database_specific": null}], "database_specific": {"severity": ["HIGH"]}}"#,
        )
        .unwrap();
        assert_eq!(r.modified, 1704067200);
        assert!(r.aliases.is_empty() && r.severity.is_empty());
        assert_eq!(r.affected[0].ecosystem_specific.severity, None);
        assert_eq!(r.database_specific.severity, None);
        assert_eq!(r.cve(), None);
    }

    #[test]
    fn range_kinds_and_withdrawn() {
        let r = Record::parse(
            br#"{"id": "CVE-2020-1", "modified": "2024-01-01T00:00:00Z",
                 "withdrawn": "2024-02-01T00:00:00Z", "aliases": ["CVE-2020-2"],
                 "affected": [{"package": {"ecosystem": "OSS-Fuzz", "name": "icu"},
                   "ranges": [{"type": "GIT", "repo": "https://x", "events": [{"introduced": "abc"}, {"limit": "*"}]},
                              {"type": "SEMVER", "events": [{"last_affected": "1.0.0"}]},
                              {"type": "FUTURE", "events": []}]}]}"#,
        )
        .unwrap();
        assert_eq!(r.withdrawn, Some(1706745600));
        assert_eq!(r.cve(), Some("CVE-2020-1"));
        let kinds: Vec<_> = r.affected[0]
            .ranges
            .iter()
            .map(|r| r.kind.clone())
            .collect();
        assert_eq!(
            kinds,
            [
                RangeKind::Git,
                RangeKind::Semver,
                RangeKind::Other("FUTURE".into())
            ]
        );
        assert_eq!(r.affected[0].ranges[0].events[1], Event::Limit("*".into()));
        assert_eq!(r.affected[0].ranges[1].events[0].version(), "1.0.0");
    }

    #[test]
    fn refuses_what_is_not_a_record() {
        for bad in [
            &b"not json"[..],
            br#"{"modified": "2024-01-01T00:00:00Z"}"#,
            br#"{"id": "X", "modified": "yesterday"}"#,
            br#"{"id": "X"}"#,
            br#"{"id": "X", "modified": "2024-01-01T00:00:00Z", "affected": [{"package": {"ecosystem": "npm", "name": "a"},
                 "ranges": [{"type": "SEMVER", "events": [{"introduced": "0", "fixed": "1"}]}]}]}"#,
            br#"[]"#,
        ] {
            let err = Record::parse(bad).unwrap_err();
            assert!(err.to_string().starts_with("not an OSV record: "), "{err}");
        }
    }
}
