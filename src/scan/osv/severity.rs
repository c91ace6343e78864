//! One severity scale for every database: CVSS scores and the words distributions and GitHub
//! use (`MODERATE`, Red Hat's `Important`, Debian's `unimportant`, Ubuntu's `negligible`)
//! land on the same five steps, so findings sort and filter the same way whatever their
//! source.

use std::fmt;
use std::str::FromStr;

use super::cvss;
use super::record::{Affected, Record, SeverityScore};

/// Ordered from least to most severe.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// No score and no word, a word that says "not yet assessed", or a CVSS score of 0.0
    /// (CVSS's "None": the vector claims no impact, which is not a rating a scan can act on).
    #[default]
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// CVSS v3's qualitative rating: 0.1-3.9 Low, 4.0-6.9 Medium, 7.0-8.9 High, 9.0-10.0
    /// Critical; 0.0 (and anything that is not a score) is Unknown. v2 scores use the same
    /// bands, as NVD's v2 ratings do except that v2 has no Critical.
    pub fn from_score(score: f32) -> Severity {
        if score.is_nan() || score <= 0.0 {
            Severity::Unknown
        } else if score < 4.0 {
            Severity::Low
        } else if score < 7.0 {
            Severity::Medium
        } else if score < 9.0 {
            Severity::High
        } else {
            Severity::Critical
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A severity word no database is known to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownWord(pub String);

impl fmt::Display for UnknownWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a severity (expected critical, high, medium, low or unknown)",
            self.0
        )
    }
}

impl std::error::Error for UnknownWord {}

impl FromStr for Severity {
    type Err = UnknownWord;

    /// Case-insensitive. Debian's tracker marks urgencies it took from NVD with trailing
    /// `*`s (`low**`); those are read as the word.
    fn from_str(word: &str) -> Result<Severity, UnknownWord> {
        let w = word
            .trim()
            .trim_end_matches('*')
            .trim()
            .to_ascii_lowercase();
        Ok(match w.as_str() {
            "critical" => Severity::Critical,
            // Red Hat's word for High.
            "high" | "important" => Severity::High,
            // GitHub's and Red Hat's word for Medium.
            "medium" | "moderate" => Severity::Medium,
            // Ubuntu's and Debian's words below Low.
            "low" | "negligible" | "unimportant" => Severity::Low,
            "unknown" | "none" | "not yet assigned" | "untriaged" | "unassigned" => {
                Severity::Unknown
            }
            _ => return Err(UnknownWord(word.to_owned())),
        })
    }
}

/// How severe `record` is for the package `affected` describes, and the CVSS score when a
/// score decided it: the CVSS v3 vector's base score first (the package's own, then the
/// record's), then the databases' words (the package's `ecosystem_specific` and
/// `database_specific` severity or urgency, an `Ubuntu` priority, the record's
/// `database_specific` severity, a Red Hat summary's leading `Important:`), then a CVSS
/// v2 vector. CVSS v4 vectors are not scored (see [`cvss`]); such records are rated by
/// their words.
pub fn assess(record: &Record, affected: &Affected) -> (Severity, Option<f32>) {
    let scores = || affected.severity.iter().chain(&record.severity);
    let v3 = scores()
        .filter(|s| s.kind == "CVSS_V3")
        .find_map(|s| cvss::v3_base_score(&s.score));
    if let Some(score) = v3 {
        let severity = Severity::from_score(score);
        if severity != Severity::Unknown {
            return (severity, Some(score));
        }
    }
    if let Some(severity) = words(record, affected) {
        return (severity, None);
    }
    let v2 = scores()
        .filter(|s| s.kind == "CVSS_V2")
        .find_map(|s| cvss::v2_base_score(&s.score));
    if let Some(score) = v2 {
        let severity = Severity::from_score(score);
        if severity != Severity::Unknown {
            return (severity, Some(score));
        }
    }
    (Severity::Unknown, v3.or(v2))
}

/// The first word that names a severity (not "not yet assigned").
fn words(record: &Record, affected: &Affected) -> Option<Severity> {
    let ubuntu = |scores: &[SeverityScore]| -> Option<String> {
        scores
            .iter()
            .find(|s| s.kind.eq_ignore_ascii_case("Ubuntu"))
            .map(|s| s.score.clone())
    };
    let candidates = [
        affected.ecosystem_specific.severity.clone(),
        affected.ecosystem_specific.urgency.clone(),
        affected.database_specific.severity.clone(),
        affected.database_specific.urgency.clone(),
        ubuntu(&affected.severity),
        ubuntu(&record.severity),
        record.database_specific.severity.clone(),
        record.database_specific.urgency.clone(),
        red_hat_summary_word(&record.summary),
    ];
    candidates
        .into_iter()
        .flatten()
        .filter_map(|w| w.parse::<Severity>().ok())
        .find(|s| *s != Severity::Unknown)
}

/// Red Hat, AlmaLinux and Rocky advisories carry their rating only as the summary's first
/// word: `Important: openssl security update`.
fn red_hat_summary_word(summary: &str) -> Option<String> {
    let (word, _) = summary.split_once(':')?;
    match word.trim() {
        "Critical" | "Important" | "Moderate" | "Low" => Some(word.trim().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_and_serialized_lowercase() {
        assert!(Severity::Unknown < Severity::Low);
        assert!(Severity::Low < Severity::Medium);
        assert!(Severity::Medium < Severity::High);
        assert!(Severity::High < Severity::Critical);
        assert_eq!(
            serde_json::to_string(&Severity::Critical).unwrap(),
            "\"critical\""
        );
        assert_eq!(
            serde_json::from_str::<Severity>("\"medium\"").unwrap(),
            Severity::Medium
        );
        assert_eq!(Severity::High.to_string(), "high");
    }

    #[test]
    fn words() {
        for (word, want) in [
            ("CRITICAL", Severity::Critical),
            ("High", Severity::High),
            ("important", Severity::High),
            ("Important", Severity::High),
            ("MODERATE", Severity::Medium),
            ("medium", Severity::Medium),
            ("low", Severity::Low),
            ("negligible", Severity::Low),
            ("unimportant", Severity::Low),
            ("low**", Severity::Low),
            (" medium* ", Severity::Medium),
            ("not yet assigned", Severity::Unknown),
            ("UNKNOWN", Severity::Unknown),
        ] {
            assert_eq!(word.parse::<Severity>(), Ok(want), "{word}");
        }
        let err = "severe".parse::<Severity>().unwrap_err();
        assert_eq!(err, UnknownWord("severe".into()));
        assert!(err.to_string().contains("\"severe\" is not a severity"));
    }

    #[test]
    fn score_bands() {
        for (score, want) in [
            (0.0, Severity::Unknown),
            (f32::NAN, Severity::Unknown),
            (0.1, Severity::Low),
            (3.9, Severity::Low),
            (4.0, Severity::Medium),
            (6.9, Severity::Medium),
            (7.0, Severity::High),
            (8.9, Severity::High),
            (9.0, Severity::Critical),
            (10.0, Severity::Critical),
        ] {
            assert_eq!(Severity::from_score(score), want, "{score}");
        }
    }

    fn record(json: &str) -> Record {
        Record::parse(json.as_bytes()).unwrap()
    }

    fn assess_first(json: &str) -> (Severity, Option<f32>) {
        let r = record(json);
        assess(&r, &r.affected[0])
    }

    const PKG: &str = r#"{"ecosystem": "Debian:12", "name": "openssl"}"#;

    #[test]
    fn the_v3_score_comes_first() {
        let json = format!(
            r#"{{"id": "GHSA-1", "modified": "2024-01-01T00:00:00Z",
              "severity": [{{"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:P/I:N/A:N"}},
                           {{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"}}],
              "affected": [{{"package": {PKG}}}],
              "database_specific": {{"severity": "CRITICAL"}}}}"#
        );
        assert_eq!(assess_first(&json), (Severity::High, Some(7.5)));
    }

    #[test]
    fn the_package_score_comes_before_the_record_score() {
        let json = format!(
            r#"{{"id": "X-1", "modified": "2024-01-01T00:00:00Z",
              "severity": [{{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N"}}],
              "affected": [{{"package": {PKG},
                "severity": [{{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"}}]}}]}}"#
        );
        assert_eq!(assess_first(&json), (Severity::Critical, Some(10.0)));
    }

    #[test]
    fn words_when_there_is_no_v3_score() {
        let cases = [
            // GitHub: the record's database_specific; a v4 vector is not scored.
            (
                r#""severity": [{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}],
                   "affected": [{"package": PKG}], "database_specific": {"severity": "MODERATE"}"#,
                Severity::Medium,
            ),
            // Debian: the package's urgency; "not yet assigned" is passed over.
            (
                r#""affected": [{"package": PKG, "ecosystem_specific": {"urgency": "unimportant"}}]"#,
                Severity::Low,
            ),
            (
                r#""affected": [{"package": PKG, "ecosystem_specific": {"urgency": "not yet assigned"}}],
                   "database_specific": {"severity": "HIGH"}"#,
                Severity::High,
            ),
            // Ubuntu: the priority as a severity type.
            (
                r#""severity": [{"type": "Ubuntu", "score": "negligible"}], "affected": [{"package": PKG}]"#,
                Severity::Low,
            ),
            // Red Hat: the summary's first word.
            (
                r#""summary": "Important: openssl security update", "affected": [{"package": PKG}]"#,
                Severity::High,
            ),
            // The package's word comes before the record's.
            (
                r#""affected": [{"package": PKG, "ecosystem_specific": {"severity": "CRITICAL"}}],
                   "database_specific": {"severity": "LOW"}"#,
                Severity::Critical,
            ),
        ];
        for (body, want) in cases {
            let json = format!(
                r#"{{"id": "X-1", "modified": "2024-01-01T00:00:00Z", {}}}"#,
                body.replace("PKG", PKG)
            );
            assert_eq!(assess_first(&json), (want, None), "{body}");
        }
    }

    #[test]
    fn v2_last_then_unknown() {
        let json = format!(
            r#"{{"id": "X-1", "modified": "2024-01-01T00:00:00Z",
              "severity": [{{"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:P/I:N/A:N"}}],
              "affected": [{{"package": {PKG}, "ecosystem_specific": {{"urgency": "not yet assigned"}}}}]}}"#
        );
        assert_eq!(assess_first(&json), (Severity::Medium, Some(5.0)));
        let json = format!(
            r#"{{"id": "X-1", "modified": "2024-01-01T00:00:00Z", "summary": "Note: nothing",
              "severity": [{{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N"}}],
              "affected": [{{"package": {PKG}}}]}}"#
        );
        assert_eq!(assess_first(&json), (Severity::Unknown, Some(0.0)));
        let json = format!(
            r#"{{"id": "X-1", "modified": "2024-01-01T00:00:00Z",
              "severity": [{{"type": "CVSS_V3", "score": "garbage"}}], "affected": [{{"package": {PKG}}}]}}"#
        );
        assert_eq!(assess_first(&json), (Severity::Unknown, None));
    }
}
