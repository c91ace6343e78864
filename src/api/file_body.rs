//! Committed blobs, and blobs being fetched into the cache, as HTTP file bodies. Here because the API layer is the one that knows both
//! sides: `http` defines what a file body is, `store` what a blob file is, and neither
//! imports the other.

use crate::http::response::{FileBody, GrowingBody};
use crate::store::blobs::BlobFile;
use crate::store::fill::Growing;
use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;

impl FileBody for BlobFile {
    fn file(&self) -> &File {
        BlobFile::file(self)
    }

    fn bytes(&self) -> io::Result<&[u8]> {
        BlobFile::bytes(self)
    }
}

impl GrowingBody for Growing {
    fn file(&self) -> &File {
        Growing::file(self)
    }

    fn readable(&self, at: u64) -> Pin<Box<dyn Future<Output = io::Result<u64>> + '_>> {
        Box::pin(async move {
            Growing::readable(self, at)
                .await
                .map_err(|e| io::Error::other(e.to_string()))
        })
    }
}
