//! OSV records, matching packages against them, and severities.
