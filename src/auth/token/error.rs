//! The errors of this module, in its own terms. The API maps every [`TokenError`] to 401 with
//! `error="invalid_token"`, every [`RequestError`] to 400, and a [`KeyError`] at start-up to a
//! refusal to start.

use std::fmt;
use std::path::PathBuf;

/// Why a presented token is refused. The variants are for logs and tests; the client is only
/// told `invalid_token`, so that nothing here helps an attacker probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Longer than [`crate::auth::token::jws::MAX_TOKEN_LEN`]: refused before any decoding.
    TooLarge {
        len: usize,
    },
    /// Not three base64url parts, or not JSON of the expected shape.
    Malformed(&'static str),
    /// An `alg` other than `ES256`/`RS256`, or one that does not fit the key's type.
    UnsupportedAlg(String),
    /// No `kid`, or a `kid` that the token's issuer does not have.
    UnknownKey,
    /// The `x5c` chain does not lead to a trusted root (or the issuer has no roots).
    UntrustedChain(String),
    BadSignature,
    /// A refresh token used as an access token or the reverse.
    WrongType,
    WrongIssuer,
    WrongAudience,
    Expired,
    NotYetValid,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::TooLarge { len } => write!(f, "token of {len} bytes is too large"),
            TokenError::Malformed(what) => write!(f, "malformed token: {what}"),
            TokenError::UnsupportedAlg(alg) => write!(f, "unsupported token algorithm {alg:?}"),
            TokenError::UnknownKey => f.write_str("token signed by an unknown key"),
            TokenError::UntrustedChain(why) => write!(f, "untrusted certificate chain: {why}"),
            TokenError::BadSignature => f.write_str("bad token signature"),
            TokenError::WrongType => f.write_str("wrong token type"),
            TokenError::WrongIssuer => f.write_str("token from an untrusted issuer"),
            TokenError::WrongAudience => f.write_str("token for another audience"),
            TokenError::Expired => f.write_str("token expired"),
            TokenError::NotYetValid => f.write_str("token not valid yet"),
        }
    }
}

impl std::error::Error for TokenError {}

/// A `/token` request that cannot be served as asked (answered 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// A `scope` that does not follow the grammar; `scope` is the offending text, truncated.
    InvalidScope {
        scope: String,
        reason: &'static str,
    },
    /// More `scope` entries than [`crate::auth::token::scope::MAX_SCOPES`].
    TooManyScopes,
    MissingField(&'static str),
    /// A field with a value this service does not take (`grant_type`, `offline_token`,
    /// `access_type`).
    UnsupportedValue {
        field: &'static str,
        value: String,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::InvalidScope { scope, reason } => {
                write!(f, "invalid scope {scope:?}: {reason}")
            }
            RequestError::TooManyScopes => f.write_str("too many scopes"),
            RequestError::MissingField(field) => write!(f, "missing {field}"),
            RequestError::UnsupportedValue { field, value } => {
                write!(f, "unsupported {field} {value:?}")
            }
        }
    }
}

impl std::error::Error for RequestError {}

/// Key material that cannot be loaded, generated or stored.
#[derive(Debug)]
pub enum KeyError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The bytes are not a key (or bundle, or JWKS) of a supported kind; says what was wrong.
    Invalid { what: String },
    /// The platform's random source or signer failed (never expected).
    Crypto,
}

impl KeyError {
    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        KeyError::Invalid { what: what.into() }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        KeyError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            KeyError::Invalid { what } => f.write_str(what),
            KeyError::Crypto => f.write_str("the cryptographic library failed"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Error texts echo client input; this keeps them bounded.
pub(crate) fn truncated(s: &str) -> String {
    s.chars().take(128).collect()
}
