//! OCI grammar and models: digests, names and references, media types, manifests.
//! Pure code: no IO, so every rule here is unit tested.

pub mod digest;
pub mod hasher;
pub mod manifest;
pub mod media;
pub mod name;
