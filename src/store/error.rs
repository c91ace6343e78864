//! What can go wrong storing bytes, in the store's own terms. Nothing here knows HTTP: `api`
//! maps each case to an OCI code and status once.

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum Error {
    /// No blob under that digest (in this backend).
    NotFound,
    /// No room left: the disk, a quota, or a bucket limit. May clear when space is freed.
    /// `what` was being done (no path: it reaches the client), `cause` says which limit.
    Full { what: String, cause: &'static str },
    /// The backend cannot serve now. With `retry`, the same request may succeed later (too
    /// many open files, a remote that timed out); without, not until an operator acts (a
    /// read-only filesystem).
    Unavailable { retry: bool, cause: String },
    /// Stored bytes that are not what their name says (a size or digest that does not match).
    Corrupt(String),
    /// Any other failure; the text is for the operator's log.
    Io(String),
    /// No upload session with that id in that repository (or an id not of our shape); the
    /// id as given, truncated.
    UnknownUpload(String),
    /// Another request is writing to the same upload session right now.
    Busy,
    /// Received bytes whose digest is not the one the client named; nothing was stored.
    DigestMismatch { expected: String, actual: String },
    /// A stream to store ended before, or ran past, the size it was announced with; nothing
    /// was stored.
    SizeMismatch { expected: u64, actual: u64 },
    /// The metadata rows that go with the bytes (upload sessions, blob links) failed.
    Metadata(crate::meta::Error),
}

impl From<crate::meta::Error> for Error {
    fn from(e: crate::meta::Error) -> Error {
        Error::Metadata(e)
    }
}

impl From<crate::blocking::Stopped> for Error {
    fn from(e: crate::blocking::Stopped) -> Error {
        Error::Unavailable {
            retry: false,
            cause: e.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Reads an I/O error in these terms; `what` says what was being done, for the log.
    pub fn io(what: &str, e: io::Error) -> Error {
        let text = format!("{what}: {e}");
        if e.kind() == io::ErrorKind::NotFound {
            return Error::NotFound;
        }
        match e.raw_os_error() {
            Some(libc::ENOSPC) => Error::Full {
                what: what.to_string(),
                cause: "no space left on device",
            },
            Some(libc::EDQUOT) => Error::Full {
                what: what.to_string(),
                cause: "disk quota exceeded",
            },
            Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM) => Error::Unavailable {
                retry: true,
                cause: text,
            },
            Some(libc::EROFS | libc::EACCES | libc::EPERM) => Error::Unavailable {
                retry: false,
                cause: text,
            },
            _ => Error::Io(text),
        }
    }
}

impl Error {
    /// A copy for the other requests that waited on the same work (one fetch serving many):
    /// the kind is kept, so that each answers as the first did (503 for a remote that is
    /// down, not a bare 500); metadata failures travel as their text.
    pub fn shared(&self) -> Error {
        match self {
            Error::NotFound => Error::NotFound,
            Error::Full { what, cause } => Error::Full {
                what: what.clone(),
                cause,
            },
            Error::Unavailable { retry, cause } => Error::Unavailable {
                retry: *retry,
                cause: cause.clone(),
            },
            Error::Corrupt(m) => Error::Corrupt(m.clone()),
            Error::UnknownUpload(id) => Error::UnknownUpload(id.clone()),
            Error::Busy => Error::Busy,
            Error::DigestMismatch { expected, actual } => Error::DigestMismatch {
                expected: expected.clone(),
                actual: actual.clone(),
            },
            Error::SizeMismatch { expected, actual } => Error::SizeMismatch {
                expected: *expected,
                actual: *actual,
            },
            Error::Io(_) | Error::Metadata(_) => Error::Io(self.to_string()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => f.write_str("blob not found"),
            Error::Full { what, cause } => write!(f, "storage is full: {what}: {cause}"),
            Error::Unavailable { cause, .. } => write!(f, "storage unavailable: {cause}"),
            Error::Corrupt(m) => write!(f, "stored blob is corrupt: {m}"),
            Error::Io(m) => write!(f, "storage: {m}"),
            Error::UnknownUpload(_) => f.write_str("upload session unknown"),
            Error::Busy => f.write_str("another request is writing to this upload session"),
            Error::DigestMismatch { expected, actual } => {
                write!(f, "the bytes received digest to {actual}, not {expected}")
            }
            Error::SizeMismatch { expected, actual } => {
                write!(f, "received {actual} bytes where {expected} were announced")
            }
            Error::Metadata(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_read_as_what_an_operator_can_act_on() {
        let os = |code| io::Error::from_raw_os_error(code);
        assert!(matches!(
            Error::io("w", os(libc::ENOSPC)),
            Error::Full { .. }
        ));
        assert!(matches!(
            Error::io("w", os(libc::EDQUOT)),
            Error::Full { .. }
        ));
        assert!(matches!(
            Error::io("o", os(libc::EMFILE)),
            Error::Unavailable { retry: true, .. }
        ));
        assert!(matches!(
            Error::io("w", os(libc::EROFS)),
            Error::Unavailable { retry: false, .. }
        ));
        assert!(matches!(Error::io("o", os(libc::ENOENT)), Error::NotFound));
        assert!(matches!(Error::io("r", os(libc::EIO)), Error::Io(_)));
    }
}
