//! Shared harness for the integration tests, split by job: [`process`] starts and stops the
//! real binary, [`client`] is our own HTTP/1.1 client and its assertions, [`oci`] builds
//! manifests and pushes, [`bytes`] generates large deterministic data, [`raw`] speaks HTTP over
//! a bare socket, [`pki`] makes certificates with openssl, [`dockerd`] runs a docker engine
//! of the tests' own, [`proxy`] is a round-robin load balancer in front of several nodes.
//! Everything is re-exported here, so a test module says `use crate::common::*;` and uses the
//! subset it needs.
#![allow(dead_code, unused_imports)]

pub mod bytes;
pub mod client;
pub mod dockerd;
pub mod oci;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod raw;

pub use bytes::*;
pub use client::*;
pub use dockerd::*;
pub use oci::*;
pub use pki::*;
pub use process::*;
pub use raw::*;
