//! The scanning sections: `scan.policies` (which pulls a finding blocks), `scan.allowlist`
//! (findings that do not count), `scan.webhooks` (who hears of new findings). Records land
//! here as plain strings and numbers; [`crate::scan::policy`] turns them into the policy.

use super::auth::{at, repository_field, REPOSITORY_DOC};
use super::section::{field, Section, Str, Type};
use super::Config;
use std::time::Duration;

/// One `scan.policies` record, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRule {
    pub repository: String,
    /// `critical`, `high`, `medium`, `low`; None: nothing is blocked for its findings.
    pub block_severity: Option<String>,
    /// `allow` or `block`: what a pull of an image without a completed scan gets.
    pub unscanned: String,
    /// `scan.policies[0] (line 3)`, for messages.
    pub at: String,
}

/// One `scan.allowlist` record, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowRule {
    /// A vulnerability id (`CVE-2023-1234`, `GHSA-...`); matches the finding's id or CVE.
    pub id: String,
    pub repository: String,
    /// Unix seconds after which the record no longer applies; None: never.
    pub expires: Option<i64>,
    pub at: String,
}

/// One `scan.webhooks` record, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRule {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub retries: u64,
    pub at: String,
}

const SEVERITY: Str = Str::OneOf(&["critical", "high", "medium", "low"]);

/// `2027-01-31` (the end of that day, UTC) or an RFC 3339 instant, as unix seconds. Pure.
pub fn parse_expiry(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts.as_second());
    }
    let date: jiff::civil::Date = text.parse().ok()?;
    let end = date
        .at(23, 59, 59, 0)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()?;
    Some(end.timestamp().as_second())
}

const EXPIRY: Str = Str::Like {
    what: "a date (2027-01-31, the end of that day UTC) or an RFC 3339 time",
    test: |s| parse_expiry(s).is_some(),
};

const VULN_ID: Str = Str::Like {
    what: "a vulnerability id (letters, digits, - : . _)",
    test: |s| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-:._".contains(&b))
    },
};

const HTTP_URL: Str = Str::Like {
    what: "an http:// or https:// URL with a host",
    test: |s| {
        url::Url::parse(s)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
    },
};

pub const POLICIES: Section<Config> = Section::list(
    "scan.policies",
    "Pulls refused for what a scan found, per repository pattern (the most specific pattern that matches a repository governs it): a manifest GET or HEAD of an image with a finding at or above block_severity (allowlisted findings aside) is answered 412 Precondition Failed with DENIED, naming the policy and the worst finding; an index is judged by its platforms' images. Pushes, and pulls by anyone of what is not an image, are never refused.",
    &[
        repository_field(REPOSITORY_DOC).example("\"prod/**\""),
        field(
            "block_severity",
            Type::Str(SEVERITY),
            "Refuse pulls of images with a finding of this severity or worse: critical, high, medium or low.",
        )
        .example("high"),
        field(
            "unscanned",
            Type::Str(Str::OneOf(&["allow", "block"])),
            "What a pull of an image whose scan is not completed (pending, running, failed, never scanned) gets.",
        )
        .default("allow")
        .example("block"),
    ],
    |c: &mut Config, records| {
        c.scan_policies = records
            .iter()
            .map(|r| PolicyRule {
                repository: r.get("repository"),
                block_severity: r.opt("block_severity"),
                unscanned: r.get("unscanned"),
                at: at(r),
            })
            .collect()
    },
);

pub const ALLOWLIST: Section<Config> = Section::list(
    "scan.allowlist",
    "Vulnerabilities that do not count against scan.policies (they are still reported, marked allowlisted), everywhere or in the repositories a pattern matches, until an optional expiry.",
    &[
        field(
            "id",
            Type::Str(VULN_ID),
            "The vulnerability: its id or CVE (CVE-2023-4863, GHSA-xxxx-xxxx-xxxx).",
        )
        .required()
        .example("CVE-2023-4863"),
        field("repository", Type::Str(super::auth::PATTERN), REPOSITORY_DOC)
            .default("\"**\"")
            .example("\"prod/*\""),
        field(
            "expires",
            Type::Str(EXPIRY),
            "The entry stops applying after this (a date is the end of that day, UTC).",
        )
        .example("2027-01-31"),
    ],
    |c: &mut Config, records| {
        c.scan_allowlist = records
            .iter()
            .map(|r| AllowRule {
                id: r.get("id"),
                repository: r.get("repository"),
                expires: r
                    .opt::<String>("expires")
                    .as_deref()
                    .and_then(parse_expiry),
                at: at(r),
            })
            .collect()
    },
);

pub const WEBHOOKS: Section<Config> = Section::list(
    "scan.webhooks",
    "Endpoints POSTed a JSON document when a scan finds vulnerabilities an image did not have before (its repository, digest, tags and the new findings); each delivery is written in the transaction that stores the scan and retried with backoff until delivered or out of retries, across restarts.",
    &[
        field(
            "url",
            Type::Str(HTTP_URL),
            "Where to POST (http:// or https://, verified against the system's CAs).",
        )
        .required()
        .example("\"https://hooks.example.com/ringyard\""),
        field(
            "headers",
            Type::Map(Str::Any),
            "Headers sent with each delivery (an Authorization header, say); never logged.",
        )
        .example("{Authorization: \"Bearer abc\"}"),
        field(
            "timeout",
            Type::Duration { zero_ok: false },
            "How long one attempt may take.",
        )
        .default("10s")
        .example("5s"),
        field(
            "retries",
            Type::Count { min: 0, max: 100 },
            "Attempts after the first failure, 2s apart and doubling (at most 10 min apart).",
        )
        .default("8")
        .example("3"),
    ],
    |c: &mut Config, records| {
        c.scan_webhooks = records
            .iter()
            .map(|r| WebhookRule {
                url: r.get("url"),
                headers: r.opt("headers").unwrap_or_default(),
                timeout: r.get("timeout"),
                retries: r.get("retries"),
                at: at(r),
            })
            .collect()
    },
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_dates_and_times() {
        assert_eq!(parse_expiry("1970-01-01"), Some(86_399));
        assert_eq!(parse_expiry("1970-01-02T00:00:00Z"), Some(86_400));
        assert_eq!(parse_expiry("tomorrow"), None);
        assert_eq!(parse_expiry("2027-02-30"), None);
    }
}
