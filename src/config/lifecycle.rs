//! The lifecycle policies' sections: `tags.immutable`, the tags that may be pushed once and
//! never moved; `retention`, which tags garbage collection expires; `quotas`, how much a
//! repository may store. Records land here as plain strings; [`crate::lifecycle`] checks the patterns'
//! syntax and reports a bad one with the record's path and line.

use super::auth::{at, repository_field, REPOSITORY_DOC};
use super::section::{field, Section, Str, Type};
use super::Config;
use std::time::Duration;

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
        repository_field(REPOSITORY_DOC).example("\"prod/**\""),
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

/// One `retention` record, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionRule {
    pub repository: String,
    pub keep_tags: Vec<String>,
    pub keep_last: Option<usize>,
    pub pushed_within: Option<Duration>,
    pub pulled_within: Option<Duration>,
    pub delete_untagged: bool,
    pub dry_run: bool,
    /// `retention[0] (line 3)`, for messages.
    pub at: String,
}

pub const RETENTION: Section<Config> = Section::list(
    "retention",
    "Which tags garbage collection removes, per repository pattern (the most specific pattern that matches a repository governs it, as in auth.access): a tag is kept when it matches keep_tags, is among the keep_last most recently pushed, was pushed within pushed_within, or its manifest was pulled within pulled_within (pull times are recorded every few seconds); every other tag is removed at the next pass (ringyard gc, gc.interval). A record without any keep_* criterion removes no tag. Immutable tags (tags.immutable) are always kept.",
    &[
        repository_field(REPOSITORY_DOC).example("\"ci/**\""),
        field(
            "keep_tags",
            Type::List(TAG_PATTERN),
            "Tags, or patterns where * stands for any characters, that are always kept.",
        )
        .example("[\"v*\", latest]"),
        field(
            "keep_last",
            Type::Count { min: 0, max: 1_000_000 },
            "Keep this many most recently pushed tags.",
        )
        .example("10"),
        field(
            "pushed_within",
            Type::Duration { zero_ok: false },
            "Keep tags pushed within this long.",
        )
        .example("30d"),
        field(
            "pulled_within",
            Type::Duration { zero_ok: false },
            "Keep tags whose manifest was pulled within this long.",
        )
        .example("14d"),
        field(
            "delete_untagged",
            Type::Bool,
            "Also remove the repository's manifests that no tag, index or living subject keeps (as gc.delete_untagged, for these repositories only).",
        )
        .example("true"),
        field(
            "dry_run",
            Type::Bool,
            "Only report what the record would remove (in ringyard gc's output and the log), never remove it.",
        )
        .example("true"),
    ],
    |c: &mut Config, records| {
        c.retention = records
            .iter()
            .map(|r| RetentionRule {
                repository: r.get("repository"),
                keep_tags: r.opt("keep_tags").unwrap_or_default(),
                keep_last: r.opt("keep_last"),
                pushed_within: r.opt("pushed_within"),
                pulled_within: r.opt("pulled_within"),
                delete_untagged: r.opt("delete_untagged").unwrap_or(false),
                dry_run: r.opt("dry_run").unwrap_or(false),
                at: at(r),
            })
            .collect()
    },
);

/// One `quotas` record, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaRule {
    pub repository: String,
    pub bytes: u64,
    /// `quotas[0] (line 3)`, for messages.
    pub at: String,
}

pub const QUOTAS: Section<Config> = Section::list(
    "quotas",
    "How many bytes each repository may hold (the sum of the distinct blobs and manifests linked to it; a blob shared with another repository counts in both), per repository pattern: the most specific pattern that matches a repository governs it. A push that would go beyond is refused with 403 DENIED naming the quota and the usage, before its bytes are stored (at the upload's start, a chunk, its completion, a mount or a manifest put); usage is on GET /v2/_quota/NAME and in /metrics. Pushes racing each other may overshoot by what they have in flight.",
    &[
        repository_field(
            "A repository name, or a pattern where * stands for any characters but / and ** for any characters; each repository it matches has the quota to itself.",
        )
        .example("\"team/**\""),
        field(
            "bytes",
            Type::Size { min: 0, max: u64::MAX / 2 },
            "The most the repository may hold.",
        )
        .required()
        .example("10GiB"),
    ],
    |c: &mut Config, records| {
        c.quotas = records
            .iter()
            .map(|r| QuotaRule {
                repository: r.get("repository"),
                bytes: r.get("bytes"),
                at: at(r),
            })
            .collect()
    },
);
