//! Storage of bytes: the content-addressed blob tree and upload sessions. Metadata (which
//! repository may see which blob, tags, manifests) is in `meta`, not here.

pub mod appender;
pub mod blobs;
pub mod upload_writer;
pub mod uploads;
