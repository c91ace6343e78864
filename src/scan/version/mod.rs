//! Version orders of the ecosystems whose advisories a scan matches. OSV ranges are
//! `introduced` / `fixed` / `last_affected` events in the ecosystem's own order, so each
//! ecosystem compares versions by its package manager's rules, tested against that package
//! manager's own implementation where one is installed.

use std::cmp::Ordering;

pub mod dpkg;
pub mod rpm;

/// The version order an ecosystem's packages follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    /// Debian and Ubuntu (`dpkg --compare-versions`).
    Dpkg,
    /// Alpine, Wolfi, Chainguard (apk-tools).
    Apk,
    /// Red Hat, Rocky, AlmaLinux, SUSE, openSUSE, Mageia (`rpmvercmp` over epoch, version,
    /// release).
    Rpm,
    /// PyPI (PEP 440).
    Pep440,
    /// npm and crates.io (Semantic Versioning 2.0.0).
    Semver,
    /// Go modules (semver with a leading `v`, pseudo-versions ordered as semver pre-releases).
    Go,
}

impl Order {
    /// The order of an OSV ecosystem name (`Debian:12`, `Alpine:v3.19`, `PyPI`, ...): the part
    /// before the first `:` decides. None for ecosystems a scan does not match.
    pub fn of_ecosystem(ecosystem: &str) -> Option<Order> {
        let base = ecosystem.split(':').next().unwrap_or(ecosystem);
        Some(match base {
            "Debian" | "Ubuntu" => Order::Dpkg,
            "Alpine" | "Wolfi" | "Chainguard" => Order::Apk,
            "Red Hat" | "Rocky Linux" | "AlmaLinux" | "SUSE" | "openSUSE" | "Mageia"
            | "openEuler" => Order::Rpm,
            "PyPI" => Order::Pep440,
            "npm" | "crates.io" => Order::Semver,
            "Go" => Order::Go,
            _ => return None,
        })
    }

    /// Compares two versions in this order; None when either is not a version of it (a
    /// range event that cannot be compared is not a match).
    pub fn compare(self, a: &str, b: &str) -> Option<Ordering> {
        match self {
            Order::Dpkg => dpkg::compare(a, b),
            Order::Rpm => rpm::compare(a, b),
            Order::Apk | Order::Pep440 | Order::Semver | Order::Go => None,
        }
    }
}
