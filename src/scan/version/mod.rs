//! Version orders of the ecosystems whose advisories a scan matches. OSV ranges are
//! `introduced` / `fixed` / `last_affected` events in the ecosystem's own order, so each
//! ecosystem compares versions by its package manager's rules, tested against that package
//! manager's own implementation where one is installed.

use std::cmp::Ordering;

pub mod apk;
pub mod dpkg;
pub mod go;
pub mod pep440;
#[cfg(test)]
mod reference;
pub mod rpm;
pub mod semver;

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
            Order::Apk => apk::compare(a, b),
            Order::Pep440 => pep440::compare(a, b),
            Order::Semver => semver::compare(a, b),
            Order::Go => go::compare(a, b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One pair per ecosystem whose answer no other order gives (or that another refuses).
    #[test]
    fn each_ecosystem_reaches_its_order() {
        use Ordering::*;
        for (ecosystem, a, b, want) in [
            ("Debian:12", "1.0~rc1", "1.0", Some(Less)),
            ("Ubuntu:22.04:LTS", "1:0.9", "2.0", Some(Greater)),
            ("Alpine:v3.19", "1.0_rc1-r0", "1.0-r0", Some(Less)),
            ("Wolfi", "1.02", "1.1", Some(Less)),
            ("Red Hat", "1.0^git1", "1.0", Some(Greater)),
            ("Rocky Linux:9", "1.0~rc1", "1.0", Some(Less)),
            ("PyPI", "1.0", "1.0.0", Some(Equal)),
            ("PyPI", "1.0.dev0", "1.0a0", Some(Less)),
            ("npm", "1.0.0-rc.1", "1.0.0", Some(Less)),
            ("crates.io", "1.0.0+build", "1.0.0", Some(Equal)),
            ("npm", "1.0", "1.0.0", None),
            ("Go", "go1.21rc2", "1.21.0", Some(Less)),
            ("Go", "v2.0.0+incompatible", "2.0.0", Some(Equal)),
        ] {
            let order = Order::of_ecosystem(ecosystem).unwrap();
            assert_eq!(order.compare(a, b), want, "{ecosystem}: {a} vs {b}");
        }
        assert_eq!(Order::of_ecosystem("Maven"), None);
    }
}
