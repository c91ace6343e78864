//! The one mapping of every layer's errors to what a client sees: an OCI error code, its HTTP
//! status, a message and an optional JSON detail, in the spec's body. `oci`, `store`, `meta`
//! and the blocking pool say what went wrong in their own terms; the `From` impls at the end of
//! this module are the only place those become codes and statuses.
//!
//! Internal failures (IO, SQL) become [`ErrorCode::Unknown`] with a generic message. Their
//! cause travels with the error ([`Error::cause`]) and is logged once, where the response is
//! made, with the request id ([`super::handle`]); it is never sent. The one internal failure a
//! client and an operator can act on, a full disk or quota, is answered as
//! [`Error::storage_full`].

use crate::http::response::Response;
use std::fmt;

/// OCI Distribution Spec v1.1 error codes, plus the few that distribution also uses
/// (`UNKNOWN`, `PAGINATION_NUMBER_INVALID`, `RANGE_INVALID`, `TAG_INVALID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// The registry cannot take the request now (too many connections); distribution's code.
    Unavailable,
    TagInvalid,
    PaginationNumberInvalid,
    RangeInvalid,
    /// Something failed inside the registry; details go to the log only.
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The status the spec pairs with the code; [`Error::with_status`] overrides it where the
    /// spec asks for another (413 for an oversized manifest, 416 for an out-of-order chunk).
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => 404,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid
            | ErrorCode::TagInvalid
            | ErrorCode::PaginationNumberInvalid => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Denied => 403,
            ErrorCode::Unsupported => 405,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::RangeInvalid => 416,
            ErrorCode::Unknown => 500,
        }
    }

    pub fn default_message(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "blob unknown to registry",
            ErrorCode::BlobUploadInvalid => "blob upload invalid",
            ErrorCode::BlobUploadUnknown => "blob upload unknown to registry",
            ErrorCode::DigestInvalid => "provided digest did not match uploaded content",
            ErrorCode::ManifestBlobUnknown => {
                "manifest references a manifest or blob unknown to registry"
            }
            ErrorCode::ManifestInvalid => "manifest invalid",
            ErrorCode::ManifestUnknown => "manifest unknown to registry",
            ErrorCode::NameInvalid => "invalid repository name",
            ErrorCode::NameUnknown => "repository name not known to registry",
            ErrorCode::SizeInvalid => "provided length did not match content length",
            ErrorCode::Unauthorized => "authentication required",
            ErrorCode::Denied => "requested access to the resource is denied",
            ErrorCode::Unsupported => "the operation is unsupported",
            ErrorCode::TooManyRequests => "too many requests",
            ErrorCode::Unavailable => "service unavailable",
            ErrorCode::TagInvalid => "invalid tag",
            ErrorCode::PaginationNumberInvalid => "invalid number of results requested",
            ErrorCode::RangeInvalid => "invalid content range",
            ErrorCode::Unknown => "internal error",
        }
    }
}

/// `507 Insufficient Storage` (RFC 4918): docker, podman and skopeo show only the status
/// line of a 5xx answer, and this one's reason phrase says what is wrong.
const STORAGE_FULL_STATUS: u16 = 507;

/// A client-visible failure: code, status, message and an optional JSON detail.
#[derive(Debug, Clone)]
pub struct Error {
    pub code: ErrorCode,
    pub status: u16,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// What went wrong inside, for the operator's log line (never sent).
    pub cause: Option<String>,
    /// The `WWW-Authenticate` challenge of a 401.
    pub challenge: Option<std::borrow::Cow<'static, str>>,
    /// A storage or metadata backend that may be back by itself soon (S3 down or busy): the
    /// answer says when to try again.
    pub transient: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode) -> Self {
        Error {
            code,
            status: code.status(),
            message: code.default_message().to_string(),
            detail: None,
            cause: None,
            challenge: None,
            transient: false,
        }
    }

    /// 401 `UNAUTHORIZED` with its challenge, which makes docker send its stored credentials.
    pub fn unauthorized(
        challenge: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Error {
            challenge: Some(challenge.into()),
            ..Error::new(ErrorCode::Unauthorized).with_message(message)
        }
    }

    /// A request the registry cannot make sense of (malformed HTTP, framing): 400 with
    /// `UNSUPPORTED`, the spec's code for a request it will not carry out, since clients that
    /// read error codes know only the spec's list.
    pub fn malformed(what: impl Into<serde_json::Value>) -> Self {
        Error::new(ErrorCode::Unsupported)
            .with_status(400)
            .with_message("malformed request")
            .with_detail(what)
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    pub fn with_detail(mut self, detail: impl Into<serde_json::Value>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// An internal failure: the client sees only `UNKNOWN`; the cause goes to the log with the
    /// request id when the response is made (once, and only if the request really fails).
    pub fn internal(context: &str, cause: impl fmt::Display) -> Self {
        Error {
            cause: Some(format!("{context}: {cause}")),
            ..Error::new(ErrorCode::Unknown)
        }
    }

    /// A write refused because the storage is full: `507 Insufficient Storage` with
    /// `UNAVAILABLE` (distribution's code for a request the registry cannot take now; the spec
    /// has none for storage) and a message naming what failed, so that the client shows
    /// something an operator can act on; [`Error::retry_after`] says when to try again. Not
    /// logged here: the API marks the registry not ready, which logs it once per episode
    /// rather than once per refused request.
    pub fn storage_full(context: &str, cause: &str) -> Self {
        Error::new(ErrorCode::Unavailable)
            .with_status(STORAGE_FULL_STATUS)
            .with_message(format!("storage is full: {context}: {cause}"))
    }

    pub fn is_storage_full(&self) -> bool {
        self.status == STORAGE_FULL_STATUS
    }

    /// `Retry-After` seconds for an answer that may succeed later without the client changing
    /// anything: space can be freed (garbage collection, an operator) at any time; a backend
    /// that is down or busy may be back in a moment.
    pub fn retry_after(&self) -> Option<&'static str> {
        if self.is_storage_full() {
            Some("60")
        } else if self.transient {
            Some("1")
        } else {
            None
        }
    }

    /// The response for this error: the spec's body, and `Retry-After` where waiting helps.
    pub fn response(&self) -> Response {
        let resp = Response::new(self.status).with_body("application/json", self.body());
        let resp = match &self.challenge {
            Some(c) => resp.header("WWW-Authenticate", c.clone()),
            None => resp,
        };
        match self.retry_after() {
            Some(seconds) => resp.header("Retry-After", seconds),
            None => resp,
        }
    }

    /// The spec's error body: `{"errors":[{"code","message","detail"}]}`.
    pub fn body(&self) -> Vec<u8> {
        let detail = self.detail.clone().unwrap_or(serde_json::Value::Null);
        serde_json::to_vec(&serde_json::json!({
            "errors": [{ "code": self.code.as_str(), "message": self.message, "detail": detail }]
        }))
        .expect("error body serializes")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.as_str(),
            self.status,
            self.message
        )
    }
}

impl std::error::Error for Error {}

/// The grammar's failures: each names what was wrong with the client's input.
impl From<crate::oci::Error> for Error {
    fn from(e: crate::oci::Error) -> Error {
        use crate::oci::Error as Oci;
        match e {
            Oci::NameInvalid { message, name } => Error::new(ErrorCode::NameInvalid)
                .with_message(message)
                .with_detail(name),
            Oci::TagInvalid { message, tag } => Error::new(ErrorCode::TagInvalid)
                .with_message(message)
                .with_detail(tag),
            Oci::DigestInvalid { message, text } => Error::new(ErrorCode::DigestInvalid)
                .with_message(message)
                .with_detail(text),
            Oci::ManifestInvalid(what) => Error::new(ErrorCode::ManifestInvalid)
                .with_message(format!("manifest invalid: {what}"))
                .with_detail(what),
        }
    }
}

/// A push refused by a quota: 403 DENIED (what docker and podman print as "denied: ..."),
/// the figures in the detail.
pub fn quota_exceeded(e: crate::lifecycle::quota::Exceeded) -> Error {
    Error::new(ErrorCode::Denied)
        .with_message(e.to_string())
        .with_detail(serde_json::json!({
            "repository": e.repo,
            "used_bytes": e.used,
            "limit_bytes": e.limit,
            "adding_bytes": e.adding,
            "quota": e.rule,
        }))
}

/// The metadata's failures as the client sees them: a refused manifest names what it lacks;
/// the store's own troubles are answered without their internals.
impl From<crate::meta::Error> for Error {
    fn from(e: crate::meta::Error) -> Error {
        use crate::meta::{Conflict, Error as Meta};
        match e {
            Meta::Conflict(Conflict::Missing { digest, kind }) => {
                let e = Error::new(ErrorCode::ManifestBlobUnknown).with_detail(digest.as_str());
                if kind == crate::meta::RefKind::Manifest {
                    e.with_message("the index lists a manifest unknown to this repository")
                } else {
                    e
                }
            }
            Meta::Conflict(Conflict::SizeMismatch {
                digest,
                declared,
                stored,
            }) => Error::new(ErrorCode::ManifestInvalid)
                .with_message("a descriptor's size differs from the stored content")
                .with_detail(serde_json::json!({
                    "digest": digest.as_str(),
                    "descriptor_size": declared,
                    "stored_size": stored,
                })),
            // Another request on the upload session went first (a PATCH says where, with the
            // session's location; this is the answer wherever else it is found).
            Meta::Conflict(Conflict::UploadMoved { offset }) => {
                Error::new(ErrorCode::BlobUploadInvalid)
                    .with_status(416)
                    .with_message("another request on this upload session went first")
                    .with_detail(serde_json::json!({ "expected_start": offset }))
            }
            // Rare: a client stores a blob that garbage collection is removing this instant
            // (unreferenced for longer than the grace period). Nothing was acknowledged; a
            // retry after the collector moved on stores it afresh.
            Meta::Conflict(Conflict::BlobSweeping { digest }) => Error::new(ErrorCode::Unavailable)
                .with_message("garbage collection is removing this blob right now; retry")
                .with_detail(digest.as_str()),
            Meta::Full(_) => Error::storage_full("writing metadata", "database or disk is full"),
            Meta::Unavailable { cause, .. } => Error {
                cause: Some(cause),
                ..Error::new(ErrorCode::Unavailable)
                    .with_message("the metadata store is unavailable; retry later")
            },
            other => Error::internal("metadata", other),
        }
    }
}

/// The store's failures as the client sees them: a full disk and an unavailable backend say
/// so (an operator and a client can act on them); the rest is answered without internals.
impl From<crate::store::Error> for Error {
    fn from(e: crate::store::Error) -> Error {
        use crate::store::Error as Store;
        match e {
            // Logged once per episode where readiness is marked (see `handle`).
            Store::Full { what, cause } => Error::storage_full(&what, cause),
            Store::Unavailable { retry, cause } => Error {
                cause: Some(cause),
                transient: retry,
                ..Error::new(ErrorCode::Unavailable)
                    .with_message("storage is unavailable; retry later")
            },
            Store::UnknownUpload(id) => Error::new(ErrorCode::BlobUploadUnknown).with_detail(id),
            Store::Busy => Error::new(ErrorCode::BlobUploadInvalid)
                .with_message("another request is writing to this upload session")
                .with_status(409),
            Store::DigestMismatch { expected, actual } => Error::new(ErrorCode::DigestInvalid)
                .with_detail(serde_json::json!({ "expected": expected, "received": actual })),
            Store::Metadata(e) => e.into(),
            other => Error::internal("storage", other),
        }
    }
}

impl From<crate::store::upload_writer::AppendError<Error>> for Error {
    fn from(e: crate::store::upload_writer::AppendError<Error>) -> Error {
        use crate::store::upload_writer::AppendError;
        match e {
            AppendError::Source(e) => e,
            AppendError::Store(e) => e.into(),
        }
    }
}

impl From<crate::blocking::Stopped> for Error {
    fn from(e: crate::blocking::Stopped) -> Error {
        Error::internal("blocking work", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    /// An upload session that another request advanced first answers as an out-of-order
    /// chunk wherever the store finds it, never as an internal error.
    #[test]
    fn a_moved_upload_session_is_416_with_where_it_stands() {
        let moved = crate::meta::Error::Conflict(crate::meta::Conflict::UploadMoved { offset: 7 });
        for e in [
            Error::from(moved.clone()),
            Error::from(crate::store::Error::Metadata(moved)),
        ] {
            assert_eq!(e.status, 416);
            let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
            assert_eq!(v["errors"][0]["code"], "BLOB_UPLOAD_INVALID");
            assert_eq!(v["errors"][0]["detail"]["expected_start"], 7);
        }
    }

    #[test]
    fn body_is_the_spec_shape() {
        let e = Error::new(ErrorCode::BlobUnknown).with_detail("sha256:abc");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["detail"], "sha256:abc");
        assert_eq!(e.status, 404);
    }

    #[test]
    fn full_disk_and_quota_are_storage_full() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let cause = io::Error::from_raw_os_error(errno);
            let e = Error::from(crate::store::Error::io("writing upload data", cause));
            assert!(e.is_storage_full());
            assert_eq!((e.status, e.code.as_str()), (507, "UNAVAILABLE"));
            assert!(
                e.message
                    .starts_with("storage is full: writing upload data: "),
                "{}",
                e.message
            );
            assert_eq!(e.retry_after(), Some("60"));
        }
        let cause = io::Error::from_raw_os_error(libc::EIO);
        let e = Error::from(crate::store::Error::io("writing upload data", cause));
        assert_eq!((e.status, e.retry_after()), (500, None));
    }

    #[test]
    fn a_backend_down_for_now_is_503_with_retry_after() {
        let down = |retry| {
            Error::from(crate::store::Error::Unavailable {
                retry,
                cause: "S3 GET: connection refused".into(),
            })
        };
        let e = down(true);
        assert_eq!((e.status, e.code.as_str()), (503, "UNAVAILABLE"));
        assert_eq!(e.retry_after(), Some("1"));
        let r = e.response();
        assert_eq!(r.status, 503);
        assert!(r
            .headers
            .iter()
            .any(|(n, v)| *n == "Retry-After" && v == "1"));
        // Refused credentials: an operator must act, waiting does not help.
        assert_eq!(down(false).retry_after(), None);
    }

    #[test]
    fn status_override_keeps_code() {
        let e = Error::new(ErrorCode::ManifestInvalid).with_status(413);
        assert_eq!(e.status, 413);
        assert_eq!(e.code.as_str(), "MANIFEST_INVALID");
    }
}
