//! Vulnerability scanning (issue 15): what an image holds, matched offline against imported
//! OSV records.
//!
//! - [`version`]: each ecosystem's version order (pure).
//! - [`layer`]: layers read in order as tar streams into one view of the image's files,
//!   whiteouts applied, hostile archives refused.
//! - [`detect`]: packages found in that view (OS package databases, application metadata,
//!   binaries' embedded build information).
//! - [`osv`]: OSV records, matching a package against them, severities.

pub mod detect;
pub mod layer;
pub mod osv;
pub mod policy;
pub mod scanner;
pub mod service;
pub mod store;
pub mod version;
pub mod vulndb;
pub mod webhook;

/// A package found in an image, named the way OSV names it, so that matching is a lookup by
/// `(ecosystem, name)`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Package {
    /// The OSV ecosystem: `Debian:12`, `Alpine:v3.19`, `Red Hat`, `Rocky Linux:9`, `PyPI`,
    /// `npm`, `Go`, `crates.io`. OS packages carry the release from `etc/os-release`.
    pub ecosystem: String,
    /// The name advisories use: the source package for Debian and Ubuntu (their advisories
    /// are keyed by `Source:`), the binary package name elsewhere; normalized as the
    /// ecosystem requires (PEP 503 for PyPI).
    pub name: String,
    /// The installed version, as the ecosystem's order reads it (Debian's
    /// `[epoch:]upstream-revision`, RPM's `[epoch:]version-release`, Go's `v1.2.3`).
    pub version: String,
    /// What the image calls it when that differs from `name` (a Debian binary package built
    /// from the source `name`); shown to the user beside the finding.
    pub binary: Option<String>,
    /// Where it was found, without a leading `/` (`var/lib/dpkg/status`,
    /// `usr/local/bin/app`).
    pub path: String,
}
