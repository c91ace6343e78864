//! Response heads: the registry crate's parser (`ringyard::http::response_head`), the one the
//! S3 backend's client uses too, with its errors read as this tool's protocol errors.

use crate::error::{Error, Result};
pub use ringyard::http::response_head::{BodyKind, ResponseHead};

/// Parses one response head at the start of `buf`; see
/// [`ringyard::http::response_head::parse_response_head`].
pub fn parse_response_head(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<(ResponseHead, usize)>> {
    ringyard::http::response_head::parse_response_head(buf, head_request)
        .map_err(|e| Error::protocol(e.to_string()))
}
