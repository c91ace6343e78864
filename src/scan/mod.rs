//! Vulnerability scanning (issue 15): what an image holds, matched offline against imported
//! OSV records. Pure parts first: each ecosystem's version order ([`version`]).

pub mod version;
