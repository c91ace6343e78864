//! What can go wrong in the metadata, in the metadata's own terms. Nothing here knows HTTP:
//! `api` maps each case to an OCI code and status once.

use super::RefKind;
use crate::oci::digest::Digest;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A check that runs inside the write's transaction refused it; nothing was changed.
    Conflict(Conflict),
    /// A value the store cannot hold (a size beyond its integer range).
    Invalid(String),
    /// The store cannot answer now. With `retry`, the same request may succeed later (a lost
    /// connection, a busy database); without, it will not until an operator acts.
    Unavailable { retry: bool, cause: String },
    /// No room left to write (disk or quota full); the text is for the operator's log.
    Full(String),
    /// Stored data that does not read back as what it must be.
    Corrupt(String),
    /// Any other failure of the store or its I/O; the text is for the operator's log.
    Io(String),
}

/// Why a write's in-transaction check refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// A manifest names content this repository does not hold.
    Missing { digest: Digest, kind: RefKind },
    /// A manifest's descriptor gives another size than the content stored under its digest.
    SizeMismatch {
        digest: Digest,
        declared: u64,
        stored: u64,
    },
    /// An upload session's row is gone (completed, cancelled or expired), or belongs to
    /// another repository: a writer that still had it open may not continue it.
    UploadGone,
    /// An upload session's row no longer stands where the writer found it: another request
    /// (on another node) advanced it first. `offset` is where it stands now.
    UploadMoved { offset: u64 },
    /// A robot token of this name exists and is not revoked.
    RobotTokenExists { name: String },
    /// The put would move an immutable tag; it stays at `digest`.
    TagImmutable { tag: String, digest: Digest },
    /// Garbage collection is removing this blob's bytes (its row is marked, its links are
    /// gone): storing or linking it now could leave a row whose bytes the collector deletes.
    /// The writer waits for the collector to finish with it, then stores it again.
    BlobSweeping { digest: Digest },
    /// Garbage collection's check found the manifest or blob still kept (tagged, listed,
    /// referenced, or active since the cutoff): a push got there first. Nothing changed.
    Live,
}

impl Error {
    pub fn unavailable(cause: impl Into<String>) -> Error {
        Error::Unavailable {
            retry: true,
            cause: cause.into(),
        }
    }

    /// Errors worth one line in the operator's log (not the client's mistakes).
    pub fn is_internal(&self) -> bool {
        !matches!(self, Error::Conflict(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Conflict(Conflict::Missing { digest, kind }) => {
                write!(f, "{} {digest} is not in the repository", kind.as_str())
            }
            Error::Conflict(Conflict::SizeMismatch {
                digest,
                declared,
                stored,
            }) => write!(
                f,
                "{digest} is {stored} bytes, the descriptor says {declared}"
            ),
            Error::Conflict(Conflict::UploadGone) => f.write_str("the upload session is gone"),
            Error::Conflict(Conflict::UploadMoved { offset }) => write!(
                f,
                "another request advanced the upload session first (to {offset} bytes)"
            ),
            Error::Conflict(Conflict::RobotTokenExists { name }) => write!(
                f,
                "a robot token named {name:?} exists; revoke it first to replace it"
            ),
            Error::Conflict(Conflict::TagImmutable { tag, digest }) => {
                write!(f, "tag {tag} is immutable: it stays at {digest}")
            }
            Error::Conflict(Conflict::BlobSweeping { digest }) => {
                write!(f, "garbage collection is removing {digest}")
            }
            Error::Conflict(Conflict::Live) => f.write_str("still referenced, or active lately"),
            Error::Invalid(m) => write!(f, "invalid metadata value: {m}"),
            Error::Unavailable { retry, cause } => {
                let when = if *retry { "for now" } else { "until fixed" };
                write!(f, "metadata unavailable {when}: {cause}")
            }
            Error::Full(m) => write!(f, "metadata storage is full: {m}"),
            Error::Corrupt(m) => write!(f, "metadata corrupt: {m}"),
            Error::Io(m) => write!(f, "metadata store: {m}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
