//! Settings of a running registry. [`Config`] is what the server runs with. It comes from
//! four sources, each overriding the ones after it: command-line flags ([`cli`]), `RINGYARD_*`
//! environment variables ([`env`]), a YAML file ([`file`]), and [`Config::default`]. One table
//! ([`settings::SETTINGS`]) says for every setting its key path, type, doc line, variable and
//! flag, and drives all of them, `ringyard config defaults` and the README's reference table.
//! Lists and maps of typed records (access rules, endpoints) are declared the same way, once,
//! in [`section::SECTIONS`]; they are set only in the file.
//! Values are parsed by the pure functions of [`value`]; a bad one stops the start with a
//! [`ConfigError`] naming the file and line, the variable or the flag ([`source`]). Reading
//! files and the environment happens only in [`load`], and for the S3 credentials (the AWS
//! variables and credentials file, at start) in [`aws::from_system`].

pub(crate) mod auth;
pub mod aws;
pub mod cli;
pub(crate) mod env;
pub(crate) mod file;
pub(crate) mod lifecycle;
pub(crate) mod load;
pub(crate) mod scan;
pub mod secret;
pub mod section;
pub mod settings;
pub(crate) mod source;
pub(crate) mod token;
pub mod value;

pub use load::{check, load, Loaded, EXIT_CONFIG, EXIT_START};
pub use secret::{redact_url, Secret};
pub use source::{ConfigError, Origin};

use std::path::PathBuf;
use std::time::Duration;

/// Log verbosity: each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    // http
    /// `HOST:PORT`; a host name listens on every address it resolves to.
    pub listen: String,
    /// Event loops (threads); 0 in the sources means one per core, resolved here.
    pub workers: usize,
    /// Open client connections beyond this are answered 503 and closed at once.
    pub max_connections: usize,
    /// Largest request head (request line and headers); larger gets 431.
    pub max_header_bytes: usize,
    /// Once the first byte of a request head arrived, the rest must within this.
    pub head_timeout: Duration,
    /// A kept-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A request body or a response must make progress at least this often.
    pub body_timeout: Duration,
    /// Bytes per second a request body must bring over each `body_timeout`; 0: any rate.
    pub min_body_rate: usize,
    /// After SIGTERM or SIGINT, requests in flight get this long to finish.
    pub shutdown_grace: Duration,
    /// PEM certificate chain served on `listen` (TLS); None: plain HTTP. Set with `tls_key`.
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key of `tls_certificate`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: with one, every client must present a certificate they signed.
    pub tls_client_ca: Option<PathBuf>,

    // storage
    pub root: PathBuf,
    pub delete_enabled: bool,
    /// Every write answers 405 UNSUPPORTED; reads continue.
    pub read_only: bool,
    /// An upload session idle this long is removed with its data.
    pub upload_expiry: Duration,
    /// Larger manifests get 413.
    pub max_manifest_bytes: usize,
    /// `filesystem` (blobs in `root`) or `s3` (blobs in a bucket, `root` a cache).
    pub storage_backend: String,
    pub s3_bucket: String,
    pub s3_region: String,
    /// `http(s)://host:port`; empty: AWS (`https://s3.REGION.amazonaws.com`).
    pub s3_endpoint: String,
    pub s3_prefix: String,
    pub s3_path_style: bool,
    /// Empty: from the AWS variables or the shared credentials file ([`aws`]).
    pub s3_access_key: String,
    pub s3_secret_key: Secret,
    /// PEM CA certificates trusted for an `https` endpoint besides the system's.
    pub s3_ca_file: Option<PathBuf>,
    /// Where clients reach S3, for presigned URLs; empty: `s3_endpoint`.
    pub s3_public_endpoint: String,
    /// Blob GETs redirected to presigned URLs (S3 only).
    pub redirect: bool,
    /// `none` or `redis`.
    pub cache_type: String,
    pub redis_url: Secret,
    /// The local tier of a remote backend; None: `<root>/cache`.
    pub cache_disk_path: Option<PathBuf>,
    /// The local tier's bound, in GB (10^9 bytes).
    pub cache_disk_size_gb: usize,

    // database
    /// `postgres://...`; empty: the embedded SQLite in `root`.
    pub database_url: Secret,
    /// Connections (engine threads) to `database_url`.
    pub database_connections: usize,

    // log
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    /// One line per request (method, route, repository, status, bytes, duration, id, peer, user).
    pub access_log: bool,

    // metrics
    /// `GET /metrics` in Prometheus text format.
    pub metrics_enabled: bool,
    /// Serve `/metrics` (and the probes) on this address too; None: only on `listen`.
    pub metrics_listen: Option<String>,

    // auth
    /// `auth.htpasswd.path`: None is no authentication at all.
    pub htpasswd: Option<PathBuf>,
    /// A request with wrong credentials waits this long for its 401.
    pub auth_fail_delay: Duration,
    /// `authenticated` or `open`: who may read `/metrics` with authentication on.
    pub auth_metrics: String,
    /// `auth.access`, in file order.
    pub access: Vec<auth::AccessRule>,
    /// `auth.groups`, in file order.
    pub groups: Vec<auth::Group>,
    /// `tags.immutable`, in file order.
    pub immutable_tags: Vec<lifecycle::ImmutableRule>,
    pub retention: Vec<lifecycle::RetentionRule>,
    pub quotas: Vec<lifecycle::QuotaRule>,
    // gc
    /// Zero: no scheduled collection.
    pub gc_interval: Duration,
    /// `HH:MM-HH:MM` UTC, checked at load ([`value::Window`]); empty: any time.
    pub gc_window: String,
    pub gc_grace: Duration,
    pub gc_delete_untagged: bool,
    // scan
    pub scan_on_push: bool,
    pub scan_poll: Duration,
    pub scan_max_expanded: usize,
    pub scan_pace_while_pushing: usize,
    /// `scan.policies`, `scan.allowlist`, `scan.webhooks`, in file order.
    pub scan_policies: Vec<scan::PolicyRule>,
    pub scan_allowlist: Vec<scan::AllowRule>,
    pub scan_webhooks: Vec<scan::WebhookRule>,
    /// `auth.token.*`: the built-in token service and the external issuers (see
    /// `auth::token::settings`).
    pub token_enabled: bool,
    /// Empty: derived from the listen address at start.
    pub token_realm: String,
    pub token_service: String,
    pub token_issuer: String,
    pub token_expiry: Duration,
    pub token_refresh_expiry: Duration,
    /// None: generated into the data directory.
    pub token_key: Option<PathBuf>,
    /// `auth.token.external`, in file order; empty: no external issuer.
    pub token_external: Vec<token::ExternalIssuer>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "localhost:5000".into(),
            workers: default_workers(),
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
            head_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            body_timeout: Duration::from_secs(60),
            min_body_rate: 1024,
            shutdown_grace: Duration::from_secs(30),
            tls_certificate: None,
            tls_key: None,
            tls_client_ca: None,
            root: PathBuf::from("./ringyard-data"),
            delete_enabled: true,
            read_only: false,
            upload_expiry: Duration::from_secs(3600),
            max_manifest_bytes: 4 * 1024 * 1024,
            storage_backend: "filesystem".into(),
            s3_bucket: String::new(),
            s3_region: "us-east-1".into(),
            s3_endpoint: String::new(),
            s3_prefix: String::new(),
            s3_path_style: false,
            s3_access_key: String::new(),
            s3_secret_key: Secret::default(),
            cache_type: "none".into(),
            redis_url: Secret::default(),
            cache_disk_path: None,
            cache_disk_size_gb: 50,
            database_url: Secret::default(),
            database_connections: 8,
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            access_log: true,
            metrics_enabled: true,
            metrics_listen: None,
            htpasswd: None,
            auth_fail_delay: Duration::from_secs(1),
            auth_metrics: "authenticated".into(),
            access: Vec::new(),
            groups: Vec::new(),
            immutable_tags: Vec::new(),
            retention: Vec::new(),
            quotas: Vec::new(),
            gc_interval: Duration::ZERO,
            gc_window: String::new(),
            gc_grace: Duration::from_secs(3600),
            gc_delete_untagged: false,
            scan_on_push: true,
            scan_poll: Duration::from_secs(2),
            scan_max_expanded: 16 << 30,
            scan_pace_while_pushing: 16 << 20,
            scan_policies: Vec::new(),
            scan_allowlist: Vec::new(),
            scan_webhooks: Vec::new(),
            token_enabled: false,
            token_realm: String::new(),
            token_service: "ringyard".into(),
            token_issuer: "ringyard".into(),
            token_expiry: Duration::from_secs(5 * 60),
            token_refresh_expiry: Duration::from_secs(30 * 24 * 3600),
            token_key: None,
            s3_ca_file: None,
            s3_public_endpoint: String::new(),
            redirect: false,
            token_external: Vec::new(),
        }
    }
}

impl Config {
    /// Whether blobs live in S3 (`storage.backend: s3`).
    pub fn s3(&self) -> bool {
        self.storage_backend == "s3"
    }

    /// The PostgreSQL URL, when metadata lives there rather than in the embedded SQLite.
    pub fn database(&self) -> Option<&str> {
        Some(self.database_url.expose()).filter(|u| !u.is_empty())
    }

    /// The local tier of a remote backend: `storage.cache.disk_path`, else `<root>/cache`.
    pub fn cache_dir(&self, root: &std::path::Path) -> PathBuf {
        self.cache_disk_path
            .clone()
            .unwrap_or_else(|| root.join("cache"))
    }

    /// `storage.cache.disk_size_gb` in bytes.
    pub fn cache_max_bytes(&self) -> u64 {
        self.cache_disk_size_gb as u64 * 1_000_000_000
    }
}

/// One event loop per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
