//! The access rules' sections: `auth.access`, a list of policies per repository pattern, and
//! `auth.groups`, named sets of users. Their records land here as plain strings; the auth layer
//! ([`crate::auth::rules`]) checks what a file reader cannot (a pattern's syntax, a group that
//! is named but not declared) and reports it with the record's path and line.
//!
//! Several records may name the same repository pattern: their policies add up. That is how
//! one pattern holds several policies (zot's `policies` list) while every record stays a flat
//! set of fields.

use super::section::{field, Field, Record, Section, Str, Type};
use super::Config;

/// One `auth.access` record, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRule {
    pub repository: String,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub actions: Vec<String>,
    pub anonymous: Vec<String>,
    pub default: Vec<String>,
    /// `auth.access[2] (line 14)`, for the auth layer's messages.
    pub at: String,
}

/// One `auth.groups` record, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub users: Vec<String>,
    /// Members may do everything everywhere, whatever the rules say.
    pub admin: bool,
    pub at: String,
}

const ACTIONS: Type = Type::List(Str::OneOf(&["pull", "push", "delete"]));

/// What a repository pattern may hold; the auth layer checks the rest of its syntax.
pub(super) const PATTERN: Str = Str::Like {
    what: "a repository name or pattern (lowercase letters, digits, ._-/ and * or **)",
    test: |s| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/*".contains(&b))
    },
};

const GROUP_NAME: Str = Str::Like {
    what: "a group name (letters, digits, ._-)",
    test: |s| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    },
};

/// `auth.access[2] (line 14)`: how a record is named in the messages of the layer that
/// checks it.
pub(super) fn at(r: &Record) -> String {
    format!("{} (line {})", r.path, r.line)
}

/// The doc line of a record's `repository` pattern.
pub(super) const REPOSITORY_DOC: &str =
    "A repository name, or a pattern where * stands for any characters but / and ** for any characters.";

/// The required `repository` pattern of the records that govern repositories by pattern
/// (access rules, immutable tags, retention, quotas).
pub(super) const fn repository_field(doc: &'static str) -> Field {
    field("repository", Type::Str(PATTERN), doc).required()
}

pub const ACCESS: Section<Config> = Section::list(
    "auth.access",
    "Who may do what in which repositories, with auth.htpasswd.path set; a repository is governed by the most specific pattern that matches it (an exact name before team/*, team/* before team/**, any before **), and records with the same pattern add up; without any record every user with valid credentials may do everything and anonymous requests nothing.",
    &[
        repository_field(REPOSITORY_DOC).example("\"team/*\""),
        field("users", Type::List(Str::Any), "Users given the actions.")
            .default("[]")
            .example("[alice, bob]"),
        field(
            "groups",
            Type::List(GROUP_NAME),
            "Groups (auth.groups) whose members are given the actions.",
        )
        .default("[]")
        .example("[developers]"),
        field("actions", ACTIONS, "What those users and groups may do.")
            .default("[]")
            .example("[pull, push]"),
        field(
            "default",
            ACTIONS,
            "What every user with valid credentials may do here.",
        )
        .default("[]")
        .example("[pull]"),
        field(
            "anonymous",
            ACTIONS,
            "What a request without credentials may do here (users may too).",
        )
        .default("[]"),
    ],
    |c: &mut Config, records| {
        c.access = records
            .iter()
            .map(|r| AccessRule {
                repository: r.get("repository"),
                users: r.get("users"),
                groups: r.get("groups"),
                actions: r.get("actions"),
                anonymous: r.get("anonymous"),
                default: r.get("default"),
                at: at(r),
            })
            .collect()
    },
);

pub const GROUPS: Section<Config> = Section::map(
    "auth.groups",
    "Named sets of users for auth.access; members of a group with admin: true may do everything in every repository.",
    &[
        field("users", Type::List(Str::Any), "The group's members.")
            .required()
            .example("[alice, bob]"),
        field(
            "admin",
            Type::Bool,
            "Members may pull, push and delete everywhere, whatever auth.access says.",
        )
        .default("false"),
    ],
    |c: &mut Config, records| {
        c.groups = records
            .iter()
            .map(|r| Group {
                name: r.name().to_string(),
                users: r.get("users"),
                admin: r.get("admin"),
                at: at(r),
            })
            .collect()
    },
)
.names(GROUP_NAME, "developers");
