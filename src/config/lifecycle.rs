//! The lifecycle policies' sections: `tags.immutable`, the tags that may be pushed once and
//! never moved. Records land here as plain strings; [`crate::lifecycle`] checks the patterns'
//! syntax and reports a bad one with the record's path and line.

use super::auth::{at, PATTERN};
use super::section::{field, Section, Str, Type};
use super::Config;

/// One `tags.immutable` record, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct ImmutableRule {
    pub repository: String,
    pub tags: Vec<String>,
    /// `tags.immutable[0] (line 3)`, for messages.
    pub at: String,
}

/// What a tag pattern may hold: a tag's characters and `*`.
const TAG_PATTERN: Str = Str::Like {
    what: "a tag or pattern (letters, digits, ._- and *)",
    test: |s| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-*".contains(&b))
    },
};

pub const IMMUTABLE: Section<Config> = Section::list(
    "tags.immutable",
    "Tags that are pushed once and never moved: a manifest PUT that would point such a tag at another digest is refused (409 DENIED, naming the rule), as are deleting the tag and deleting a manifest that carries it; pushing the same manifest again succeeds. A tag is immutable when any record matches its repository and the tag.",
    &[
        field(
            "repository",
            Type::Str(PATTERN),
            "A repository name, or a pattern where * stands for any characters but / and ** for any characters.",
        )
        .required()
        .example("\"prod/**\""),
        field(
            "tags",
            Type::List(TAG_PATTERN),
            "Tags, or patterns where * stands for any characters.",
        )
        .required()
        .example("[\"v*\", release]"),
    ],
    |c: &mut Config, records| {
        c.immutable_tags = records
            .iter()
            .map(|r| ImmutableRule {
                repository: r.get("repository"),
                tags: r.get("tags"),
                at: at(r),
            })
            .collect()
    },
);
