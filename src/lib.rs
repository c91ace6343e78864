//! ringyard: an OCI Distribution registry on per-core io_uring event loops.
//! See ARCHITECTURE.md in the shared design notes for the shape; each module says why it is
//! the way it is.

pub mod api;
pub mod blocking;
pub mod buf;
pub mod config;
pub mod error;
pub mod http;
pub mod jobs;
pub mod log;
pub mod meta;
pub mod observe;
pub mod oci;
pub mod server;
pub mod signal;
pub mod store;
