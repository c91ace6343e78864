//! OSV records, matching packages against them, and severities.
//!
//! - [`record`]: the serde model of an OSV record.
//! - [`matching`]: whether a record affects a package, by the schema's evaluation rules.
//! - [`cvss`]: CVSS v3 (and v2) base scores from vector strings.
//! - [`severity`]: one five-step scale for scores and the databases' words.
//! - [`finding`]: what a scan reports, and the index that makes it a lookup.
//! - [`import`]: records read one file at a time from a directory or an osv.dev zip.

pub mod cvss;
pub mod finding;
pub mod import;
pub mod matching;
pub mod record;
pub mod severity;

pub use finding::{findings, Finding, Index};
pub use matching::{affects, record_affects, Match};
pub use record::{Affected, Record};
pub use severity::{assess, Severity};
