//! A hand-written HTTP/1.1 client for keep-alive load: request heads formatted into a buffer,
//! response heads parsed with httparse, Content-Length and chunked bodies streamed through a
//! reusable buffer into a sink that counts, hashes or (for manifests) collects. Chunked bodies
//! are decoded by the server's own decoder, `ringyard::http::chunked`.

pub mod conn;
pub mod head;
pub mod request;
pub mod sink;
pub mod tls;

pub use conn::Conn;
pub use head::ResponseHead;
pub use sink::Sink;
