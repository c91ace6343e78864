//! Storage quotas (`quotas`): how many bytes a repository may hold. Pure rules over names and
//! sizes; the API asks [`Quotas::judge`] before it stores anything a push adds (a session's
//! start, a chunk of declared length, a completion, a mount, a manifest), with the usage the
//! metadata reports ([`crate::meta::Engine::repo_usage`]).
//!
//! The check reads the usage and then writes, outside one transaction: two pushes into one
//! repository at the same instant may each pass and together overshoot by what they add.
//! Exact accounting would need every link to sum the repository in its transaction; the
//! bound it gives is what a registry's quota is for (Harbor's is checked the same way).

use crate::auth::rules::{governing, Pattern};
use crate::config::lifecycle::QuotaRule;
use crate::lifecycle::gc::human_bytes;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

/// One `quotas` record, checked.
#[derive(Debug)]
pub struct Quota {
    repository: Pattern,
    pub bytes: u64,
    at: String,
}

impl fmt::Display for Quota {
    /// `quotas[0] (line 2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.at)
    }
}

/// A push refused: what the repository holds, its limit, what the push would add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub repo: String,
    pub used: u64,
    pub limit: u64,
    pub adding: u64,
    pub rule: String,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "storage quota exceeded: {} holds {} of its {} ({}), and this push adds {}",
            self.repo,
            human_bytes(self.used),
            human_bytes(self.limit),
            self.rule,
            human_bytes(self.adding)
        )
    }
}

/// The quota rules, in file order, and the usage last seen per repository (for `/metrics`).
#[derive(Debug, Default)]
pub struct Quotas {
    rules: Vec<Quota>,
    seen: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl Quotas {
    /// Every bad pattern at once, each naming its record.
    pub fn new(rules: &[QuotaRule]) -> Result<Quotas, Vec<String>> {
        let mut errors = Vec::new();
        let mut out = Vec::new();
        for r in rules {
            match Pattern::parse(&r.repository) {
                Ok(repository) => out.push(Quota {
                    repository,
                    bytes: r.bytes,
                    at: r.at.clone(),
                }),
                Err(e) => errors.push(format!("{}: {e}", r.at)),
            }
        }
        match errors.is_empty() {
            true => Ok(Quotas {
                rules: out,
                seen: Mutex::default(),
            }),
            false => Err(errors),
        }
    }

    /// The quota governing `repo`: the most specific match, the first of equals.
    pub fn limit(&self, repo: &str) -> Option<&Quota> {
        governing(&self.rules, |q| &q.repository, repo)
    }

    /// Whether `repo`, holding `used` bytes under `quota`, may take `adding` more. Records
    /// the usage for `/metrics`.
    pub fn judge(&self, repo: &str, quota: &Quota, used: u64, adding: u64) -> Result<(), Exceeded> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(repo.to_string(), (used, quota.bytes));
        if used.saturating_add(adding) <= quota.bytes {
            return Ok(());
        }
        Err(Exceeded {
            repo: repo.to_string(),
            used,
            limit: quota.bytes,
            adding,
            rule: quota.to_string(),
        })
    }

    /// Each repository with a quota whose usage was looked at since the start: (name, used,
    /// limit), by name.
    pub fn seen(&self) -> Vec<(String, u64, u64)> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, (used, limit))| (name.clone(), *used, *limit))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repository: &str, bytes: u64, line: usize) -> QuotaRule {
        QuotaRule {
            repository: repository.into(),
            bytes,
            at: format!("quotas[{}] (line {line})", line - 2),
        }
    }

    #[test]
    fn the_most_specific_quota_governs_and_bounds_what_a_push_adds() {
        let q = Quotas::new(&[
            rule("**", 1000, 2),
            rule("team/*", 100, 3),
            rule("team/big", 10_000, 4),
        ])
        .unwrap();
        let team = q.limit("team/app").unwrap();
        assert_eq!(team.bytes, 100);
        assert_eq!(q.limit("team/big").unwrap().bytes, 10_000);
        assert_eq!(q.limit("other/x/y").unwrap().bytes, 1000);
        assert!(
            q.judge("team/app", team, 60, 40).is_ok(),
            "exactly the limit fits"
        );
        let e = q.judge("team/app", team, 60, 41).unwrap_err();
        assert_eq!(
            e.to_string(),
            "storage quota exceeded: team/app holds 60 B of its 100 B (quotas[1] (line 3)), and \
             this push adds 41 B"
        );
        assert_eq!(q.seen(), vec![("team/app".to_string(), 60, 100)]);
        assert!(Quotas::default().limit("team/app").is_none());
    }

    #[test]
    fn bad_patterns_name_their_record() {
        let errors = Quotas::new(&[rule("a//b", 1, 2)]).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("quotas[0] (line 2): "), "{errors:?}");
    }
}
