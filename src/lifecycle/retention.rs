//! Retention policies (`retention`): which tags a garbage collection pass expires. Pure: the
//! rules, read once at start, judge the tags as a pass read them; the pass removes each
//! expired tag by a write that checks it still names what was judged
//! ([`crate::meta::WriteOp::ExpireTag`]), so a push in between keeps its tag.
//!
//! A repository is governed by the most specific rule whose pattern matches it (ties: the
//! first in the file), as `auth.access` is. Immutable tags are never expired: immutability
//! is a promise that the tag keeps naming its manifest, and Harbor's retention honours its
//! immutability rules the same way.

use super::ImmutableTags;
use crate::auth::rules::{governing, Pattern};
use crate::config::lifecycle::RetentionRule;
use crate::oci::digest::Digest;
use std::collections::HashMap;
use std::fmt;

/// One `retention` record, checked.
#[derive(Debug)]
pub struct Rule {
    repository: Pattern,
    keep_tags: Vec<Pattern>,
    keep_last: Option<usize>,
    pushed_within: Option<i64>,
    pulled_within: Option<i64>,
    pub delete_untagged: bool,
    pub dry_run: bool,
    at: String,
}

impl fmt::Display for Rule {
    /// How a report names the rule: `retention[0] (line 2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.at)
    }
}

impl Rule {
    /// Whether the rule says anything about tags (a rule with no keep criterion keeps all).
    fn judges_tags(&self) -> bool {
        !self.keep_tags.is_empty()
            || self.keep_last.is_some()
            || self.pushed_within.is_some()
            || self.pulled_within.is_some()
    }
}

/// The retention rules, in file order.
#[derive(Debug, Default)]
pub struct Retention(Vec<Rule>);

/// A tag as a pass reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagState {
    pub repo: String,
    pub name: String,
    pub digest: Digest,
    /// Unix ms of its last push.
    pub updated: i64,
    /// Unix ms of its manifest's last recorded pull.
    pub last_pulled: Option<i64>,
}

/// A tag a rule expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub tag: TagState,
    /// The rule, as [`Rule`] displays it.
    pub rule: String,
    /// The rule only reports.
    pub dry_run: bool,
}

impl Retention {
    /// Every bad pattern at once, each naming its record.
    pub fn new(rules: &[RetentionRule]) -> Result<Retention, Vec<String>> {
        let mut errors = Vec::new();
        let mut out = Vec::new();
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        for r in rules {
            let mut bad = |e: String| errors.push(format!("{}: {e}", r.at));
            let repository = Pattern::parse(&r.repository).map_err(&mut bad).ok();
            let keep_tags: Vec<Pattern> = r
                .keep_tags
                .iter()
                .filter_map(|t| Pattern::parse(t).map_err(&mut bad).ok())
                .collect();
            if let Some(repository) = repository.filter(|_| keep_tags.len() == r.keep_tags.len()) {
                out.push(Rule {
                    repository,
                    keep_tags,
                    keep_last: r.keep_last,
                    pushed_within: r.pushed_within.map(ms),
                    pulled_within: r.pulled_within.map(ms),
                    delete_untagged: r.delete_untagged,
                    dry_run: r.dry_run,
                    at: r.at.clone(),
                });
            }
        }
        match errors.is_empty() {
            true => Ok(Retention(out)),
            false => Err(errors),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The rule governing `repo`: the most specific match, the first of equals.
    pub fn rule(&self, repo: &str) -> Option<&Rule> {
        governing(&self.0, |r| &r.repository, repo)
    }

    /// Whether untagged manifests of `repo` are garbage under its rule (beside
    /// `gc.delete_untagged`, which makes them garbage everywhere). A dry-run rule removes
    /// nothing.
    pub fn deletes_untagged(&self, repo: &str) -> bool {
        self.rule(repo)
            .is_some_and(|r| r.delete_untagged && !r.dry_run)
    }

    /// The tags that their repository's rule expires as of `now`, in repository and tag
    /// order.
    pub fn expired(&self, immutable: &ImmutableTags, tags: &[TagState], now: i64) -> Vec<Expired> {
        let mut by_repo: HashMap<&str, Vec<&TagState>> = HashMap::new();
        for t in tags {
            by_repo.entry(t.repo.as_str()).or_default().push(t);
        }
        let mut out = Vec::new();
        for (repo, mut tags) in by_repo {
            let Some(rule) = self.rule(repo).filter(|r| r.judges_tags()) else {
                continue;
            };
            // Most recently pushed first; equal times by name, so the answer is stable.
            tags.sort_by(|a, b| b.updated.cmp(&a.updated).then(a.name.cmp(&b.name)));
            for (rank, t) in tags.into_iter().enumerate() {
                let kept = rule.keep_tags.iter().any(|p| p.matches(&t.name))
                    || rule.keep_last.is_some_and(|n| rank < n)
                    || rule.pushed_within.is_some_and(|w| now - t.updated < w)
                    || rule
                        .pulled_within
                        .is_some_and(|w| t.last_pulled.is_some_and(|p| now - p < w))
                    || immutable.rule(&t.repo, &t.name).is_some();
                if !kept {
                    out.push(Expired {
                        tag: t.clone(),
                        rule: rule.to_string(),
                        dry_run: rule.dry_run,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.tag.repo, &a.tag.name).cmp(&(&b.tag.repo, &b.tag.name)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lifecycle::ImmutableRule;
    use std::time::Duration;

    const DAY: i64 = 86_400_000;

    fn rule(repository: &str) -> RetentionRule {
        RetentionRule {
            repository: repository.into(),
            keep_tags: Vec::new(),
            keep_last: None,
            pushed_within: None,
            pulled_within: None,
            delete_untagged: false,
            dry_run: false,
            at: "retention[0] (line 2)".into(),
        }
    }

    fn tag(
        repo: &str,
        name: &str,
        updated_days_ago: i64,
        pulled_days_ago: Option<i64>,
    ) -> TagState {
        let now = 100 * DAY;
        TagState {
            repo: repo.into(),
            name: name.into(),
            digest: Digest::sha256_of(name.as_bytes()),
            updated: now - updated_days_ago * DAY,
            last_pulled: pulled_days_ago.map(|d| now - d * DAY),
        }
    }

    fn names(e: &[Expired]) -> Vec<String> {
        e.iter()
            .map(|e| format!("{}:{}", e.tag.repo, e.tag.name))
            .collect()
    }

    #[test]
    fn each_criterion_keeps_and_the_rest_expire() {
        let r = Retention::new(&[RetentionRule {
            keep_tags: vec!["v*".into(), "latest".into()],
            keep_last: Some(2),
            pushed_within: Some(Duration::from_secs(7 * 86_400)),
            pulled_within: Some(Duration::from_secs(3 * 86_400)),
            ..rule("ci/**")
        }])
        .unwrap();
        let tags = [
            tag("ci/app", "v1", 90, None),        // keep_tags
            tag("ci/app", "latest", 80, None),    // keep_tags
            tag("ci/app", "newest", 1, None),     // keep_last (and pushed_within)
            tag("ci/app", "second", 2, None),     // keep_last
            tag("ci/app", "week", 6, None),       // pushed_within
            tag("ci/app", "pulled", 50, Some(1)), // pulled_within
            tag("ci/app", "old", 50, Some(10)),
            tag("ci/app", "never", 60, None),
            tag("other", "old", 99, None), // no rule
        ];
        let expired = r.expired(&ImmutableTags::default(), &tags, 100 * DAY);
        assert_eq!(names(&expired), ["ci/app:never", "ci/app:old"]);
        assert_eq!(expired[0].rule, "retention[0] (line 2)");
        assert!(!expired[0].dry_run);
    }

    #[test]
    fn immutable_tags_and_rules_without_criteria_keep_everything() {
        let r = Retention::new(&[
            RetentionRule {
                keep_last: Some(0),
                ..rule("prod/**")
            },
            RetentionRule {
                delete_untagged: true,
                ..rule("keepall")
            },
        ])
        .unwrap();
        let immutable = ImmutableTags::new(&[ImmutableRule {
            repository: "prod/**".into(),
            tags: vec!["release-*".into()],
            at: "tags.immutable[0] (line 9)".into(),
        }])
        .unwrap();
        let tags = [
            tag("prod/web", "release-1", 99, None),
            tag("prod/web", "scratch", 99, None),
            tag("keepall", "x", 99, None),
        ];
        assert_eq!(
            names(&r.expired(&immutable, &tags, 100 * DAY)),
            ["prod/web:scratch"]
        );
        assert!(r.deletes_untagged("keepall") && !r.deletes_untagged("prod/web"));
    }

    #[test]
    fn the_most_specific_rule_governs_and_dry_runs_are_marked() {
        let r = Retention::new(&[
            RetentionRule {
                keep_last: Some(1),
                ..rule("**")
            },
            RetentionRule {
                keep_last: Some(3),
                dry_run: true,
                delete_untagged: true,
                ..rule("team/*")
            },
        ])
        .unwrap();
        let tags: Vec<TagState> = (0..4)
            .flat_map(|i| {
                [
                    tag("team/a", &format!("t{i}"), i, None),
                    tag("solo", &format!("t{i}"), i, None),
                ]
            })
            .collect();
        let expired = r.expired(&ImmutableTags::default(), &tags, 100 * DAY);
        assert_eq!(
            names(&expired),
            ["solo:t1", "solo:t2", "solo:t3", "team/a:t3"]
        );
        assert!(expired
            .iter()
            .all(|e| e.dry_run == (e.tag.repo == "team/a")));
        assert!(
            !r.deletes_untagged("team/a"),
            "a dry-run rule removes nothing"
        );
    }

    #[test]
    fn bad_patterns_name_their_record() {
        let errors = Retention::new(&[RetentionRule {
            keep_tags: vec!["".into()],
            ..rule("a//b")
        }])
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors
            .iter()
            .all(|e| e.starts_with("retention[0] (line 2): ")));
    }
}
