//! Our own HTTP/1.1 server side on httparse: request heads, streamed request bodies (length and
//! chunked) with backpressure and 100-continue, responses with real HEAD lengths and Range.
//! monoio-http buffers whole request bodies and answers HEAD with length 0, which a registry
//! moving 10 GB layers cannot use.

pub mod body;
pub mod chunked;
pub mod conn;
pub mod min_rate;
pub mod query;
pub mod range;
pub mod request;
pub mod response;
