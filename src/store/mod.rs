//! Storage of bytes: committed blobs (a local hot tier over a [`backend::BlobBackend`]) and
//! upload sessions. Metadata (which repository may see which blob, tags, manifests) is in
//! `meta`, not here. Errors are this layer's own ([`Error`]); `api` maps them.
//!
//! `store` sits above `meta`, never beside it: an upload session's state (offset, hash state)
//! is a metadata row written through the engine's one commit path, and completing an upload
//! links its blob in the same layer that owns the session, so sessions can be continued from
//! the row by any process. `meta` imports nothing of `store`; the blob tier and its backends
//! (`blobs`, `backend`, `fs`) use no metadata at all.

pub(crate) mod appender;
pub mod backend;
pub mod blobs;
pub(crate) mod error;
pub mod fill;
pub mod fs;
pub(crate) mod lru;
pub(crate) mod open_cache;
pub(crate) mod s3;
pub(crate) mod upload_writer;
pub(crate) mod uploads;

pub use error::Error;
