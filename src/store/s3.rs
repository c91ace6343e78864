//! Committed blobs in an S3 bucket (issue 13): the second [`super::backend::BlobBackend`],
//! in the making. Requests are signed by rusty-s3 (sans-IO SigV4, presigned URLs) and sent by
//! [`conn`], our HTTP/1.1 on the caller's monoio loop: no tokio, no thread hop per request,
//! pooled keep-alive connections per loop.

// Used by the backend of the next commit.
#[allow(dead_code)]
mod conn;
