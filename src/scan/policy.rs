//! Pull-blocking policies (`scan.policies`) and the allowlist (`scan.allowlist`): pure
//! rules over a repository name and a scan's findings. The manifest GET asks [`Policy::judge`]
//! with what the scan store holds for the digest (cached per digest by the caller).
//!
//! A refusal is 412 Precondition Failed with the OCI error `DENIED` (Harbor answers pulls its
//! vulnerability policy blocks with 412 too; docker, podman and skopeo print the error's
//! message, so the message names the policy and the worst finding).

use super::osv::finding::Finding;
use super::osv::severity::Severity;
use crate::auth::rules::{governing, Pattern};
use crate::config::scan::{AllowRule, PolicyRule};

#[derive(Debug)]
struct Rule {
    repository: Pattern,
    block: Option<Severity>,
    unscanned_blocks: bool,
    at: String,
}

#[derive(Debug)]
struct Allow {
    id: String,
    repository: Pattern,
    /// Unix seconds; None: never expires.
    expires: Option<i64>,
}

/// The policies and the allowlist, checked.
#[derive(Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    allow: Vec<Allow>,
}

/// What a scan of the image being pulled says, as far as the policy cares.
#[derive(Debug, Clone, Copy)]
pub enum Scanned<'a> {
    /// No completed scan: `pending`, `running`, `failed`, or `not scanned`.
    Not(&'a str),
    Completed(&'a [Finding]),
}

/// The policy's answer for a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused, with the message the client shows.
    Block(String),
}

fn severity_word(word: &str) -> Option<Severity> {
    Some(match word {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" => Severity::Medium,
        "low" => Severity::Low,
        _ => return None,
    })
}

impl Policy {
    /// Every bad pattern at once, each naming its record.
    pub fn new(rules: &[PolicyRule], allow: &[AllowRule]) -> Result<Policy, Vec<String>> {
        let mut errors = Vec::new();
        let mut policy = Policy::default();
        for r in rules {
            match Pattern::parse(&r.repository) {
                Ok(repository) => policy.rules.push(Rule {
                    repository,
                    block: r.block_severity.as_deref().and_then(severity_word),
                    unscanned_blocks: r.unscanned == "block",
                    at: r.at.clone(),
                }),
                Err(e) => errors.push(format!("{}: {e}", r.at)),
            }
        }
        for a in allow {
            match Pattern::parse(&a.repository) {
                Ok(repository) => policy.allow.push(Allow {
                    id: a.id.clone(),
                    repository,
                    expires: a.expires,
                }),
                Err(e) => errors.push(format!("{}: {e}", a.at)),
            }
        }
        match errors.is_empty() {
            true => Ok(policy),
            false => Err(errors),
        }
    }

    /// Whether any pull could be refused (else the GET path asks nothing).
    pub fn blocks_anything(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.block.is_some() || r.unscanned_blocks)
    }

    /// Whether `repo` is governed by a rule that may refuse it.
    pub fn governs(&self, repo: &str) -> bool {
        self.rule(repo)
            .is_some_and(|r| r.block.is_some() || r.unscanned_blocks)
    }

    fn rule(&self, repo: &str) -> Option<&Rule> {
        governing(&self.rules, |r| &r.repository, repo)
    }

    /// Whether `finding` does not count in `repo` at `now` (unix seconds).
    pub fn allowlisted(&self, repo: &str, finding: &Finding, now: i64) -> bool {
        self.allow.iter().any(|a| {
            (a.id == finding.id || finding.cve.as_deref() == Some(a.id.as_str()))
                && a.repository.matches(repo)
                && a.expires.is_none_or(|e| now <= e)
        })
    }

    /// The verdict on pulling an image of `repo` whose scan stands as `scanned`, at `now`
    /// (unix seconds).
    pub fn judge(&self, repo: &str, scanned: Scanned<'_>, now: i64) -> Verdict {
        let Some(rule) = self.rule(repo) else {
            return Verdict::Allow;
        };
        match scanned {
            Scanned::Not(state) if rule.unscanned_blocks => Verdict::Block(format!(
                "image is not scanned yet ({state}); the vulnerability policy {} refuses pulls \
                 of unscanned images",
                rule.at
            )),
            Scanned::Not(_) => Verdict::Allow,
            Scanned::Completed(findings) => {
                let Some(threshold) = rule.block else {
                    return Verdict::Allow;
                };
                let counted: Vec<&Finding> = findings
                    .iter()
                    .filter(|f| f.severity >= threshold && !self.allowlisted(repo, f, now))
                    .collect();
                let Some(worst) = counted
                    .iter()
                    .max_by(|a, b| a.severity.cmp(&b.severity).then(b.id.cmp(&a.id)))
                else {
                    return Verdict::Allow;
                };
                let id = worst.cve.as_deref().unwrap_or(&worst.id);
                let fixed = worst
                    .fixed
                    .as_deref()
                    .map_or(String::new(), |v| format!(", fixed in {v}"));
                Verdict::Block(format!(
                    "image has {} finding(s) at or above {threshold}, refused by the \
                     vulnerability policy {}; worst: {id} ({}) in {} {}{fixed}",
                    counted.len(),
                    rule.at,
                    worst.severity,
                    worst.package,
                    worst.installed,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repo: &str, block: Option<&str>, unscanned: &str) -> PolicyRule {
        PolicyRule {
            repository: repo.into(),
            block_severity: block.map(str::to_string),
            unscanned: unscanned.into(),
            at: format!("scan.policies[{repo}]"),
        }
    }

    fn finding(id: &str, cve: Option<&str>, severity: Severity) -> Finding {
        Finding {
            id: id.into(),
            cve: cve.map(str::to_string),
            severity,
            cvss: None,
            package: "openssl".into(),
            binary: None,
            installed: "3.0.1-1".into(),
            fixed: Some("3.0.2-1".into()),
            summary: String::new(),
            ecosystem: "Debian:12".into(),
            path: "var/lib/dpkg/status".into(),
        }
    }

    #[test]
    fn thresholds_unscanned_and_specific_patterns() {
        let p = Policy::new(
            &[
                rule("prod/**", Some("high"), "block"),
                rule("prod/lax", None, "allow"),
            ],
            &[],
        )
        .unwrap();
        let medium = [finding("DSA-1", Some("CVE-1"), Severity::Medium)];
        let high = [
            finding("DSA-2", Some("CVE-2"), Severity::High),
            finding("DSA-3", None, Severity::Critical),
        ];
        assert_eq!(
            p.judge("prod/app", Scanned::Completed(&medium), 0),
            Verdict::Allow
        );
        let Verdict::Block(msg) = p.judge("prod/app", Scanned::Completed(&high), 0) else {
            panic!("a critical finding is blocked");
        };
        assert_eq!(
            msg,
            "image has 2 finding(s) at or above high, refused by the vulnerability policy \
             scan.policies[prod/**]; worst: DSA-3 (critical) in openssl 3.0.1-1, fixed in 3.0.2-1"
        );
        assert!(matches!(
            p.judge("prod/app", Scanned::Not("pending"), 0),
            Verdict::Block(m) if m.starts_with("image is not scanned yet (pending)")
        ));
        // The more specific rule governs: nothing blocked there.
        assert_eq!(
            p.judge("prod/lax", Scanned::Completed(&high), 0),
            Verdict::Allow
        );
        assert_eq!(
            p.judge("prod/lax", Scanned::Not("failed"), 0),
            Verdict::Allow
        );
        assert_eq!(
            p.judge("dev/app", Scanned::Completed(&high), 0),
            Verdict::Allow
        );
        assert!(p.governs("prod/app") && !p.governs("prod/lax") && !p.governs("dev/x"));
        assert!(p.blocks_anything());
        assert!(!Policy::default().blocks_anything());
    }

    #[test]
    fn allowlist_by_id_or_cve_pattern_and_expiry() {
        let allow = |id: &str, repo: &str, expires: Option<i64>| AllowRule {
            id: id.into(),
            repository: repo.into(),
            expires,
            at: "scan.allowlist[0]".into(),
        };
        let p = Policy::new(
            &[rule("**", Some("high"), "allow")],
            &[
                allow("CVE-2", "**", None),
                allow("DSA-3", "prod/*", Some(1_000)),
            ],
        )
        .unwrap();
        let high = [
            finding("DSA-2", Some("CVE-2"), Severity::High),
            finding("DSA-3", None, Severity::Critical),
        ];
        assert_eq!(
            p.judge("prod/app", Scanned::Completed(&high), 1_000),
            Verdict::Allow,
            "both allowlisted, the second until its expiry"
        );
        assert!(matches!(
            p.judge("prod/app", Scanned::Completed(&high), 1_001),
            Verdict::Block(m) if m.contains("1 finding(s)") && m.contains("DSA-3")
        ));
        assert!(matches!(
            p.judge("dev/app", Scanned::Completed(&high), 0),
            Verdict::Block(m) if m.contains("worst: DSA-3")
        ));
        let bad = Policy::new(&[rule("a//b", None, "allow")], &[]);
        assert!(bad.is_err());
    }
}
