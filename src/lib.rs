//! ringyard: an OCI Distribution registry on per-core io_uring event loops.

pub mod error;
pub mod log;
pub mod oci;
