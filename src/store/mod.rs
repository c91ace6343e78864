//! Storage of bytes: committed blobs (a local hot tier over a [`backend::BlobBackend`]) and
//! upload sessions. Metadata (which repository may see which blob, tags, manifests) is in
//! `meta`, not here. Errors are this layer's own ([`Error`]); `api` maps them.

pub mod appender;
pub mod backend;
pub mod blobs;
pub mod error;
pub mod fs;
pub mod open_cache;
pub mod upload_writer;
pub mod uploads;

pub use error::Error;
