//! Committed blobs as HTTP file bodies. Here because the API layer is the one that knows both
//! sides: `http` defines what a file body is, `store` what a blob file is, and neither
//! imports the other.

use crate::http::response::FileBody;
use crate::store::blobs::BlobFile;
use std::fs::File;
use std::io;

impl FileBody for BlobFile {
    fn file(&self) -> &File {
        BlobFile::file(self)
    }

    fn bytes(&self) -> io::Result<&[u8]> {
        BlobFile::bytes(self)
    }
}
