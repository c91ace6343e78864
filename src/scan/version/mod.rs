//! Version orders of the ecosystems whose advisories a scan matches. OSV ranges are
//! `introduced` / `fixed` / `last_affected` events in the ecosystem's own order, so each
//! ecosystem compares versions by its package manager's rules, tested against that package
//! manager's own implementation where one is installed.

pub mod dpkg;
pub mod rpm;
