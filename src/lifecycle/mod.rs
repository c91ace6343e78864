//! Lifecycle policies: what may change in a repository once pushed. Today tag immutability
//! (`tags.immutable`); retention and quotas come here next. Pure rules over names, read from
//! the configuration once at start; the metadata write enforces them inside its transaction
//! ([`crate::meta::WriteOp::PutManifest`]'s `fixed_tag`) and the API words the refusal.

pub mod gc;
pub mod quota;
pub mod retention;

use crate::auth::rules::Pattern;
use crate::config::lifecycle::ImmutableRule;
use std::fmt;

/// One `tags.immutable` record, checked.
#[derive(Debug)]
pub struct Immutable {
    repository: Pattern,
    tags: Vec<Pattern>,
    text: String,
}

impl fmt::Display for Immutable {
    /// How a refusal names the rule: `tags.immutable[0] (line 3): repository prod/**, tags v*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The immutable-tag rules, in file order.
#[derive(Debug, Default)]
pub struct ImmutableTags(Vec<Immutable>);

impl ImmutableTags {
    /// Every bad pattern at once, each naming its record.
    pub fn new(rules: &[ImmutableRule]) -> Result<ImmutableTags, Vec<String>> {
        let mut errors = Vec::new();
        let mut out = Vec::new();
        for rule in rules {
            let mut bad = |e: String| errors.push(format!("{}: {e}", rule.at));
            let repository = Pattern::parse(&rule.repository).map_err(&mut bad).ok();
            let tags: Vec<Pattern> = rule
                .tags
                .iter()
                .filter_map(|t| Pattern::parse(t).map_err(&mut bad).ok())
                .collect();
            if rule.tags.is_empty() {
                bad("names no tags".into());
            }
            if let Some(repository) = repository.filter(|_| tags.len() == rule.tags.len()) {
                out.push(Immutable {
                    text: format!(
                        "{}: repository {}, tags {}",
                        rule.at,
                        rule.repository,
                        rule.tags.join(", ")
                    ),
                    repository,
                    tags,
                });
            }
        }
        if errors.is_empty() {
            Ok(ImmutableTags(out))
        } else {
            Err(errors)
        }
    }

    /// No rules at all: nothing to look up.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first rule that makes `tag` of `repo` immutable.
    pub fn rule(&self, repo: &str, tag: &str) -> Option<&Immutable> {
        self.0
            .iter()
            .find(|r| r.repository.matches(repo) && r.tags.iter().any(|t| t.matches(tag)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repository: &str, tags: &[&str]) -> ImmutableRule {
        ImmutableRule {
            repository: repository.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            at: "tags.immutable[0] (line 3)".into(),
        }
    }

    #[test]
    fn a_tag_is_immutable_where_a_rule_matches_repository_and_tag() {
        let rules =
            ImmutableTags::new(&[rule("prod/**", &["v*", "stable"]), rule("app", &["*"])]).unwrap();
        assert!(rules.rule("prod/web", "v1.2").is_some());
        assert!(rules.rule("prod/team/web", "stable").is_some());
        assert!(rules.rule("prod/web", "latest").is_none());
        assert!(rules.rule("staging/web", "v1").is_none());
        assert!(rules.rule("app", "anything").is_some());
        assert!(rules.rule("app/sub", "v1").is_none(), "* stops at /");
        assert_eq!(
            rules.rule("prod/web", "v1").unwrap().to_string(),
            "tags.immutable[0] (line 3): repository prod/**, tags v*, stable"
        );
        assert!(ImmutableTags::default().rule("prod/web", "v1").is_none());
    }

    #[test]
    fn bad_patterns_are_refused_naming_the_record() {
        let errors =
            ImmutableTags::new(&[rule("prod//x", &["v***"]), rule("ok", &[])]).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors
            .iter()
            .all(|e| e.starts_with("tags.immutable[0] (line 3): ")));
    }
}
