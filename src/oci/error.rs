//! What can be wrong with a name, a tag, a digest or a manifest, in the grammar's own terms.
//! Nothing here knows HTTP: `api` maps each case to an OCI code and status once.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A repository name outside the spec's grammar; `name` is the input, truncated.
    NameInvalid { message: String, name: String },
    /// A tag outside the spec's grammar; `tag` is the input, truncated.
    TagInvalid { message: String, tag: String },
    /// A digest that is not `algorithm:hex` of an algorithm we take; `text` is the input (or
    /// the algorithm), truncated.
    DigestInvalid { message: &'static str, text: String },
    /// A manifest that does not parse, or breaks a rule of the image spec; the text says which.
    ManifestInvalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NameInvalid { message, name } => write!(f, "{message}: {name:?}"),
            Error::TagInvalid { message, tag } => write!(f, "{message}: {tag:?}"),
            Error::DigestInvalid { message, text } => write!(f, "{message}: {text:?}"),
            Error::ManifestInvalid(what) => write!(f, "manifest invalid: {what}"),
        }
    }
}

impl std::error::Error for Error {}
