//! Authentication and access control: identities, rules and challenges (issue 12).
pub mod token;
