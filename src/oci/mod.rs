//! OCI grammar and models: digests, names and references, media types, manifests.
//! Pure code: no IO, so every rule here is unit tested. Errors are this layer's own
//! ([`Error`]); `api` maps them to OCI codes.

pub mod digest;
pub(crate) mod error;
pub(crate) mod hasher;
pub mod manifest;
pub mod media;
pub mod name;

pub use error::Error;
