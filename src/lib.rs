//! ringyard: an OCI Distribution registry on per-core io_uring event loops.
//!
//! The layers, top to bottom; each imports only the ones below it:
//!
//! - [`server`]: one monoio runtime per core, one `SO_REUSEPORT` listener per worker, the
//!   connection balancer, the request loop of a connection, start-up and shutdown.
//! - [`http`]: our own HTTP/1.1 (request heads, streamed bodies with one pure chunked decoder
//!   and a minimum rate, responses with real HEAD lengths and Range). It knows no registry.
//! - [`api`]: route -> access needed ([`api::access`], the one place where authorization
//!   decides) -> handler, and [`api::error`], the one mapping of every layer's errors to OCI
//!   codes and statuses, where internal errors are logged once with the request id.
//! - [`auth`]: who a request is from (htpasswd users, Basic credentials; bearer tokens next)
//!   and what the access rules let them do where; pure rules, bcrypt on a pool of its own.
//!   It knows no HTTP: the API turns its answers into challenges and refusals.
//! - [`store`]: bytes. `BlobStore` is a local hot tier (the sharded tree, served by `sendfile`)
//!   over a [`store::backend::BlobBackend`] (the filesystem, or S3 by `storage.backend`),
//!   fetching a miss once; [`store::upload_writer`] is the upload pipeline, whose session offset and hash
//!   state are persisted so a session resumes without reading its bytes back.
//! - [`meta`]: one [`meta::Engine`] trait for every metadata read and write. Writes are
//!   [`meta::WriteOp`]s through one commit path whose outcomes and checks come from the
//!   transaction; the SQLite engine answers reads from an in-memory index, and one engine
//!   suite runs on every engine.
//! - [`oci`]: the grammar and models (digests and the serializable hasher, names, media types,
//!   manifests), pure.
//! - [`lifecycle`]: what may change once pushed (immutable tags today), pure rules read from
//!   the configuration; the metadata write enforces them and the API words the refusal.
//! - [`jobs`]: background work on threads of its own (upload expiry today), with per-job
//!   metrics; [`observe`], [`config`] and [`log`] serve every layer. [`testing`] starts real
//!   services (PostgreSQL, S3, Redis) for the tests; the registry never uses it.
//!
//! `oci`, `store` and `meta` have error enums of their own that know nothing of HTTP. The
//! shared design notes (ARCHITECTURE.md) give the direction; each module's doc says why it is
//! the way it is.

pub mod api;
pub mod auth;
pub mod blocking;
pub(crate) mod buf;
pub mod config;
pub mod http;
pub mod jobs;
pub mod lifecycle;
pub mod log;
pub mod meta;
pub(crate) mod observe;
pub mod oci;
pub mod scan;
pub mod server;
pub(crate) mod signal;
pub mod store;
#[doc(hidden)]
pub mod testing;
