//! Docker token authentication, the machinery without the HTTP: scopes and grants, the ES256
//! signing key and its JWKS, access and refresh JWTs, trust in external issuers (each by a
//! JWKS or an `x5c` chain to a root bundle, for its own audience), the `/token` request and
//! response bodies, and the `WWW-Authenticate: Bearer` challenge.
//!
//! Everything here is a function of bytes and values (the current time is an argument), so it
//! is tested without a server; the only IO is [`keys::load_or_create`] and the file loaders
//! of [`settings`], which run once at start-up, off the event loops ([`service`] holds what
//! they loaded for the running registry). [`cache`] keeps verified
//! tokens per worker, since a signature check costs far more than serving a cached manifest.
//!
//! Design choices, and why:
//!
//! - **One crypto stack: `ring`** (with `rustls-webpki` for `x5c` chains), the stack rustls
//!   uses here for TLS, rather than RustCrypto's `p256`/`ecdsa` next to it. JWS is small
//!   enough to encode ourselves ([`jws`]) with `base64`, which keeps the algorithm check in
//!   our hands: only `ES256` and `RS256` exist, each bound to its key type, so `none`, `HS256`
//!   with a public key as secret and any other confusion are refused before a key is looked at.
//! - **`kid` is the RFC 7638 JWK thumbprint** of the public key: docker never looks at it, but
//!   other services reading our JWKS do, and distribution v3 names keys the same way
//!   (libtrust's fingerprints belong to a library that is retired).
//! - **Refresh tokens are signed JWTs** ([`refresh`]) with their own `typ`, naming the subject,
//!   its kind (a user or a robot token, so neither stands in for the other of the same name),
//!   the service and the client, and a caller-supplied credential version: stateless, so they
//!   work on every node that holds the key, and a changed password, a removed user or a
//!   revoked, expired or replaced robot token ends them because the token service checks the
//!   subject when one is used. The refresh grant hands out a new one and leaves the old valid
//!   until its expiry (docker never stores a rotated one).

pub mod cache;
pub mod challenge;
pub mod error;
pub mod jws;
pub mod jwt;
pub mod keys;
pub mod refresh;
pub mod request;
pub mod scope;
pub mod service;
pub mod settings;
pub mod x5c;

mod der;
mod time;

pub use error::{KeyError, RequestError, TokenError};
