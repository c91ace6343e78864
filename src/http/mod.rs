//! Our own HTTP/1.1 server side on httparse: request heads, streamed request bodies (length and
//! chunked) with backpressure and 100-continue, responses with real HEAD lengths and Range.
//! monoio-http buffers whole request bodies and answers HEAD with length 0, which a registry
//! moving 10 GB layers cannot use.
//!
//! Connections run over a [`transport::Transport`]: plain TCP (file bodies by `sendfile` when
//! in the page cache, by O_DIRECT reads ([`direct`]) when not), TLS ([`tls`], rustls, with the
//! configuration of [`tls_config`]), and an in-memory one in tests, so that the real request
//! loop and handlers are tested without a socket. A connection is generic over its transport, not
//! boxed, so the seam costs the hot path nothing.
//!
//! This layer stands below the others: it imports nothing of `store`, `server` or `api`.
//! Response bodies that are file ranges are its own [`response::FileBody`] (the API layer
//! implements it for committed blobs), and the shutdown that ends an idle wait is the
//! neutral [`crate::signal::LocalSignal`].

pub(crate) mod body;
pub mod chunked;
pub(crate) mod conn;
pub mod direct;
#[cfg(test)]
pub(crate) mod memory;
pub(crate) mod min_rate;
pub(crate) mod query;
pub mod range;
pub mod request;
pub mod response;
pub mod response_head;
pub(crate) mod tls;
pub(crate) mod tls_config;
pub(crate) mod transport;
