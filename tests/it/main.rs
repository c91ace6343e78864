//! The integration tests, one binary (as ripgrep's are): every module drives the real
//! `ringyard` binary over real sockets, and the harness they share is [`common`]. One binary
//! means a change compiles and links the tests once, not once per file.

mod common;

mod api_base;
mod api_blobs;
mod api_listing;
mod api_manifests;
mod api_names;
mod api_range;
mod api_referrers;
mod auth;
mod auth_token;
mod cli;
mod clients;
mod clients_auth;
mod cold_pull;
mod compare_smoke;
mod config;
mod conformance;
mod disk_full;
mod driver_epoll;
mod durability;
mod gc;
mod http_limits;
mod http_protocol;
mod immutable_tags;
mod large;
mod ops_limits;
mod ops_observe;
mod ops_read_only_mount;
mod retention_quotas;
mod robot_tokens;
mod scale_fleet;
mod scale_out;
mod scanning;
mod tls;
mod upload_owner;
