//! The one table of settings: key path, type, doc line, flag, and the [`Config`] field it sets.
//! The file reader, the environment lookup, the command line, `ringyard config defaults` and the
//! reference table in the README all come from [`SETTINGS`]; defaults come from
//! [`Config::default`], so nothing is written down twice.

use super::section::{self, Section, SECTIONS};
use super::value::{
    check_listen, format_duration, format_size, parse_bool, parse_count, parse_duration, parse_size,
};
use super::{default_workers, Config, LogFormat, LogLevel};
use std::path::PathBuf;
use std::time::Duration;

/// What a setting holds, with the bounds that make it possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `HOST:PORT`; `optional`: empty means none.
    Address {
        optional: bool,
    },
    Path,
    /// A file's path; empty means none.
    File,
    /// Exactly one of these words.
    Word(&'static [&'static str]),
    /// 0 (one per core) up to 1024.
    Workers,
    Count {
        min: u64,
        max: u64,
    },
    /// Bytes, written as sizes.
    Size {
        min: u64,
        max: u64,
    },
    Duration {
        zero_ok: bool,
    },
    Bool,
    Level,
    Format,
    /// Free text (a name); `optional`: empty is allowed.
    Text {
        optional: bool,
    },
    /// A URL with one of these schemes and a host; empty means none. Shown and quoted in
    /// errors without its password.
    Url(&'static [&'static str]),
    /// Text never shown (`***`); empty means none.
    Secret,
    /// A directory's path; empty means none.
    OptionalDir,
    /// A daily UTC time window, `HH:MM-HH:MM` ([`super::value::Window`]); empty means none.
    Window,
}

/// A parsed value, before it is stored in its [`Config`] field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Optional(Option<String>),
    Path(PathBuf),
    OptionalPath(Option<PathBuf>),
    Count(usize),
    Duration(Duration),
    Bool(bool),
    Level(LogLevel),
    Format(LogFormat),
}

/// How a setting is given on the command line.
#[derive(Debug, Clone, Copy)]
pub enum Flag {
    /// `--NAME VALUE`
    Value(&'static str),
    /// `--NAME` alone sets the value (`--read-only` is `true`, `--no-delete` is `false`).
    Switch {
        name: &'static str,
        sets: &'static str,
        help: &'static str,
    },
}

impl Flag {
    pub fn name(&self) -> &'static str {
        match self {
            Flag::Value(n) | Flag::Switch { name: n, .. } => n,
        }
    }
}

#[derive(Debug)]
pub struct Setting {
    /// Path in the file, `.` between parts: `http.timeouts.head`.
    pub key: &'static str,
    pub kind: Kind,
    pub doc: &'static str,
    pub flag: Option<Flag>,
    get: fn(&Config) -> Value,
    set: fn(&mut Config, Value),
}

/// Converts a [`Config`] field from and to a [`Value`]; a mismatch is a bug in [`SETTINGS`]
/// (every entry is exercised by the tests below).
trait Field: Sized {
    fn to_value(&self) -> Value;
    fn from_value(v: Value) -> Self;
}

macro_rules! field {
    ($t:ty, $variant:ident) => {
        impl Field for $t {
            fn to_value(&self) -> Value {
                Value::$variant(self.clone())
            }
            fn from_value(v: Value) -> Self {
                match v {
                    Value::$variant(x) => x,
                    other => unreachable!("{other:?} for a {}", stringify!($t)),
                }
            }
        }
    };
}
field!(String, Text);
field!(Option<String>, Optional);
field!(PathBuf, Path);
field!(Option<PathBuf>, OptionalPath);
field!(usize, Count);
field!(Duration, Duration);
field!(bool, Bool);
field!(LogLevel, Level);
field!(LogFormat, Format);

impl Field for super::Secret {
    fn to_value(&self) -> Value {
        Value::Text(self.expose().to_string())
    }
    fn from_value(v: Value) -> Self {
        super::Secret::new(String::from_value(v))
    }
}

macro_rules! setting {
    ($key:literal, $field:ident, $kind:expr, $flag:expr, $doc:literal) => {
        Setting {
            key: $key,
            kind: $kind,
            doc: $doc,
            flag: $flag,
            get: |c| Field::to_value(&c.$field),
            set: |c, v| c.$field = Field::from_value(v),
        }
    };
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const TIMEOUT: Kind = Kind::Duration { zero_ok: false };
use Flag::{Switch, Value as Takes};

/// Every setting, in the order of the file.
pub static SETTINGS: &[Setting] = &[
    setting!("http.listen", listen, Kind::Address { optional: false }, Some(Takes("listen")),
        "Address to serve on, HOST:PORT; a host name listens on every address it resolves to (localhost: 127.0.0.1 and ::1); port 0 picks a free port."),
    setting!("http.workers", workers, Kind::Workers, Some(Takes("workers")),
        "Event loops (threads), each with its own listener; 0: one per core."),
    setting!("http.max_connections", max_connections, Kind::Count { min: 1, max: 10_000_000 }, Some(Takes("max-connections")),
        "Open client connections beyond this are answered 503 and closed."),
    setting!("http.max_header_size", max_header_bytes, Kind::Size { min: KIB, max: MIB }, Some(Takes("max-header-size")),
        "Largest request head (request line and headers); a larger one gets 431."),
    setting!("http.min_body_rate", min_body_rate, Kind::Size { min: 0, max: GIB }, Some(Takes("min-body-rate")),
        "Bytes per second a request body must bring over each http.timeouts.body window, else it ends as a stalled one (0: no minimum); 1KiB, near Apache mod_reqtimeout's 500 bytes/s, is far below any real link yet cuts off a trickle."),
    setting!("http.timeouts.head", head_timeout, TIMEOUT, Some(Takes("head-timeout")),
        "Once the first byte of a request head arrived, the rest must arrive within this."),
    setting!("http.timeouts.idle", idle_timeout, TIMEOUT, Some(Takes("idle-timeout")),
        "A keep-alive connection without a request for this long is closed."),
    setting!("http.timeouts.body", body_timeout, TIMEOUT, Some(Takes("body-timeout")),
        "A request body or a response must make progress at least this often."),
    setting!("http.timeouts.shutdown_grace", shutdown_grace, Kind::Duration { zero_ok: true }, Some(Takes("shutdown-grace")),
        "After SIGTERM or SIGINT, requests in flight get this long to finish."),
    setting!("http.tls.certificate", tls_certificate, Kind::File, Some(Takes("tls-cert")),
        "PEM certificate chain (the server's first) to serve HTTPS on http.listen with TLS 1.2 and 1.3; reloaded when the file changes; empty: plain HTTP."),
    setting!("http.tls.key", tls_key, Kind::File, Some(Takes("tls-key")),
        "PEM private key of http.tls.certificate (PKCS#8, PKCS#1 or SEC1); reloaded with it."),
    setting!("http.tls.client_ca", tls_client_ca, Kind::File, Some(Takes("tls-client-ca")),
        "PEM CA certificates for mutual TLS: every client must present a certificate one of them signed; empty: no client certificates."),
    setting!("storage.root", root, Kind::Path, Some(Takes("root")),
        "Data directory: blobs, upload sessions and the metadata database (a relative path is from the working directory)."),
    setting!("storage.delete", delete_enabled, Kind::Bool, Some(Switch { name: "no-delete", sets: "false", help: "Refuse every DELETE with 405 UNSUPPORTED (storage.delete: false)." }),
        "Allow deleting manifests, tags and blobs; false answers every DELETE with 405 UNSUPPORTED."),
    setting!("storage.read_only", read_only, Kind::Bool, Some(Switch { name: "read-only", sets: "true", help: "Answer every write with 405 UNSUPPORTED; reads continue (storage.read_only: true)." }),
        "Answer every write with 405 UNSUPPORTED; reads continue."),
    setting!("storage.upload_expiry", upload_expiry, TIMEOUT, Some(Takes("upload-expiry")),
        "An upload session idle this long is removed with its data."),
    setting!("storage.max_manifest_size", max_manifest_bytes, Kind::Size { min: KIB, max: GIB }, Some(Takes("max-manifest-bytes")),
        "Largest manifest accepted; a larger one gets 413."),
    setting!("storage.backend", storage_backend, Kind::Word(&["filesystem", "s3"]), Some(Takes("storage-backend")),
        "Where blobs live: filesystem (in storage.root) or s3 (in storage.s3.bucket, with storage.cache.disk_path as the local cache of hot blobs)."),
    setting!("storage.s3.bucket", s3_bucket, Kind::Text { optional: true }, Some(Takes("s3-bucket")),
        "The bucket of storage.backend s3 (required then)."),
    setting!("storage.s3.region", s3_region, Kind::Text { optional: false }, None,
        "The bucket's region, signed into every request."),
    setting!("storage.s3.endpoint", s3_endpoint, Kind::Url(&["http", "https"]), Some(Takes("s3-endpoint")),
        "http(s)://HOST:PORT of an S3-compatible service; empty: AWS (https://s3.REGION.amazonaws.com)."),
    setting!("storage.s3.prefix", s3_prefix, Kind::Text { optional: true }, None,
        "Put before every key (registry/ stores blobs at registry/blobs/sha256/...); empty: none."),
    setting!("storage.s3.path_style", s3_path_style, Kind::Bool, None,
        "Address the bucket as ENDPOINT/BUCKET/KEY (most S3-compatible services) rather than BUCKET.ENDPOINT/KEY."),
    setting!("storage.s3.access_key", s3_access_key, Kind::Text { optional: true }, None,
        "Access key id; empty: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), else the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile AWS_PROFILE or default)."),
    setting!("storage.s3.secret_key", s3_secret_key, Kind::Secret, None,
        "Secret key of storage.s3.access_key; never logged nor shown."),
    setting!("storage.s3.public_endpoint", s3_public_endpoint, Kind::Url(&["http", "https"]), None,
        "http(s)://HOST:PORT where clients reach S3, when it differs from storage.s3.endpoint: presigned URLs of storage.redirect are signed for it; empty: storage.s3.endpoint."),
    setting!("storage.s3.ca_file", s3_ca_file, Kind::File, None,
        "PEM CA certificates trusted for an https endpoint besides the system's (a private S3 service's own CA); empty: the system's only."),
    setting!("storage.redirect", redirect, Kind::Bool, None,
        "With storage.backend s3, answer blob GETs with 307 to a presigned S3 URL (valid 20 minutes) so that the bytes go from S3 to the client; HEAD and manifests are still answered here."),
    setting!("storage.cache.type", cache_type, Kind::Word(&["none", "redis"]), None,
        "Shared cache of manifest metadata and blob descriptors: none or redis (at storage.cache.redis_url)."),
    setting!("storage.cache.redis_url", redis_url, Kind::Url(&["redis"]), None,
        "redis://[:PASSWORD@]HOST:PORT[/DB] of storage.cache.type redis; the password is never logged nor shown."),
    setting!("storage.cache.disk_path", cache_disk_path, Kind::OptionalDir, None,
        "With storage.backend s3, the directory of the local cache of hot blobs (and of upload sessions); empty: cache in storage.root."),
    setting!("storage.cache.disk_size_gb", cache_disk_size_gb, Kind::Count { min: 1, max: 1_000_000 }, None,
        "Bound of the local cache of hot blobs, in GB (10^9 bytes); the least recently used are evicted beyond it."),
    setting!("database.url", database_url, Kind::Url(&["postgres", "postgresql"]), None,
        "postgres://USER[:PASSWORD]@HOST[:PORT]/DB for metadata shared by several nodes (schema migrated at start, or by ringyard db migrate); empty: SQLite in storage.root. The password is never logged nor shown."),
    setting!("database.connections", database_connections, Kind::Count { min: 1, max: 1000 }, None,
        "Connections (engine threads) each node keeps to database.url; nodes times this must stay below the server's max_connections (100 by default)."),
    setting!("log.level", log_level, Kind::Level, Some(Takes("log-level")),
        "error, warn, info or debug; each includes the ones before it."),
    setting!("log.format", log_format, Kind::Format, Some(Takes("log-format")),
        "text (one line per event) or json (one object per line)."),
    setting!("log.access", access_log, Kind::Bool, Some(Switch { name: "no-access-log", sets: "false", help: "No line per request (log.access: false)." }),
        "One line per request (method, route, repository, status, bytes, duration, id, peer, user)."),
    setting!("metrics.enabled", metrics_enabled, Kind::Bool, Some(Switch { name: "no-metrics", sets: "false", help: "No GET /metrics (metrics.enabled: false)." }),
        "Serve GET /metrics in the Prometheus text format."),
    setting!("metrics.listen", metrics_listen, Kind::Address { optional: true }, Some(Takes("metrics-listen")),
        "Also serve /metrics and the probes on this HOST:PORT; empty: only on http.listen."),
    setting!("auth.htpasswd.path", htpasswd, Kind::File, Some(Takes("htpasswd")),
        "An Apache htpasswd file of bcrypt entries (htpasswd -B, ringyard htpasswd add); set, every request needs credentials unless auth.access lets anonymous in; empty (and no auth.token.external): no authentication. Reloaded when it changes."),
    setting!("auth.fail_delay", auth_fail_delay, Kind::Duration { zero_ok: true }, Some(Takes("auth-fail-delay")),
        "A request with wrong credentials is answered 401 only after this long (as zot's failDelay), which slows password guessing."),
    setting!("auth.metrics", auth_metrics, Kind::Word(&["authenticated", "open"]), Some(Takes("auth-metrics")),
        "With authentication on, who may read /metrics: authenticated (any user with valid credentials) or open (anyone, as the probes)."),
    setting!("auth.token.enabled", token_enabled, Kind::Bool, Some(Switch { name: "token", sets: "true", help: "Serve the Docker token service at /token and challenge with Bearer (auth.token.enabled: true)." }),
        "Serve the built-in Docker token service (GET and POST /token, GET /token/jwks) and answer 401s with a Bearer challenge; needs auth.htpasswd.path."),
    setting!("auth.token.realm", token_realm, Kind::Text { optional: true }, Some(Takes("token-realm")),
        "The URL of /token as clients reach it, named in every Bearer challenge; empty: http(s)://HOST:PORT/token from http.listen (set it when clients reach the registry by another name)."),
    setting!("auth.token.service", token_service, Kind::Text { optional: false }, Some(Takes("token-service")),
        "The service name of the token service: what clients ask tokens for, and the audience our tokens carry and must carry."),
    setting!("auth.token.issuer", token_issuer, Kind::Text { optional: false }, Some(Takes("token-issuer")),
        "The iss claim of the tokens the built-in service issues."),
    setting!("auth.token.expiry", token_expiry, TIMEOUT, Some(Takes("token-expiry")),
        "How long an access token lives."),
    setting!("auth.token.refresh_expiry", token_refresh_expiry, TIMEOUT, Some(Takes("token-refresh-expiry")),
        "How long a refresh token (what docker login stores as its identity token) lives; a changed password ends it sooner."),
    setting!("auth.token.key", token_key, Kind::File, Some(Takes("token-key")),
        "PEM PKCS#8 P-256 private key that signs our tokens; empty: token-signing-key.pem in storage.root, generated on first start."),
    setting!("gc.interval", gc_interval, Kind::Duration { zero_ok: true }, Some(Takes("gc-interval")),
        "Collect garbage online this often (from the end of one pass to the start of the next), on one node of a fleet at a time; 0: only when asked (ringyard gc)."),
    setting!("gc.window", gc_window, Kind::Window, Some(Takes("gc-window")),
        "Scheduled passes run only inside this daily UTC window, HH:MM-HH:MM (22:00-04:00 wraps past midnight), at most once per gc.interval; empty: any time. ringyard gc runs when asked."),
    setting!("gc.grace", gc_grace, Kind::Duration { zero_ok: true }, Some(Takes("gc-grace")),
        "A blob (or, with gc.delete_untagged, a manifest) stored, linked, mounted, referenced or asked for (HEAD) within this long is kept; the period runs from the last such activity."),
    setting!("gc.delete_untagged", gc_delete_untagged, Kind::Bool, Some(Switch { name: "gc-delete-untagged", sets: "true", help: "Collection also removes manifests that no tag, index or living subject keeps (gc.delete_untagged: true)." }),
        "Also remove manifests that no tag, no index and no living subject keeps (never an index's children, never a referrer whose subject lives), then their blobs."),
    setting!("scan.on_push", scan_on_push, Kind::Bool, Some(Switch { name: "no-scan-on-push", sets: "false", help: "Do not scan pushed manifests; scans run only when asked (scan.on_push: false)." }),
        "Scan every pushed manifest for vulnerable packages, after the push is answered (the push records an event the scan job picks up; a restart loses none)."),
    setting!("scan.poll", scan_poll, TIMEOUT, Some(Takes("scan-poll")),
        "How often the scan job looks for pushes, requests and a newly imported vulnerability database."),
    setting!("scan.max_expanded", scan_max_expanded, Kind::Size { min: MIB, max: 1024 * GIB }, Some(Takes("scan-max-expanded")),
        "A scan reads at most this many uncompressed bytes of an image's layers; an image that expands beyond (a decompression bomb) fails its scan with that reason."),
    setting!("scan.pace_while_pushing", scan_pace_while_pushing, Kind::Size { min: 0, max: 1024 * GIB }, Some(Takes("scan-pace-while-pushing")),
        "While uploads are in progress on the node, a scan reads layers at most this many bytes a second, leaving the disk and the cores to the pushes (it catches up when they end); 0: no limit."),
];

pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The section paths (`http`, `http.timeouts`, ...) in the order they first appear.
pub fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for s in SETTINGS {
        for (i, _) in s.key.match_indices('.') {
            let section = &s.key[..i];
            if !out.contains(&section) {
                out.push(section);
            }
        }
    }
    out
}

/// The last part of the key: `head` for `http.timeouts.head`.
pub fn leaf(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

impl Kind {
    /// The flag's value name, and what a value should be (for "expected ..., found a list").
    fn shape(&self) -> (&'static str, &'static str) {
        match *self {
            Kind::Address { .. } => ("HOST:PORT", "a HOST:PORT address"),
            Kind::Path => ("DIR", "a directory path"),
            Kind::File => ("FILE", "a file path"),
            Kind::Word(_) => ("WORD", "one of the words listed in the doc line"),
            Kind::Workers | Kind::Count { .. } => ("N", "a whole number"),
            Kind::Size { .. } => ("SIZE", "a size (1024, 512KiB, 4MiB)"),
            Kind::Duration { .. } => ("DURATION", "a duration (30s, 5m, 1h)"),
            Kind::Bool => ("BOOL", "true or false"),
            Kind::Level => ("LEVEL", "a log level (error, warn, info, debug)"),
            Kind::Format => ("FORMAT", "a log format (text, json)"),
            Kind::Text { .. } | Kind::Secret => ("TEXT", "a string"),
            Kind::Url(_) => ("URL", "a URL"),
            Kind::OptionalDir => ("DIR", "a directory path"),
            Kind::Window => ("HH:MM-HH:MM", "a time window (01:00-05:00)"),
        }
    }

    pub fn value_name(&self) -> &'static str {
        self.shape().0
    }

    pub fn expected(&self) -> &'static str {
        self.shape().1
    }

    /// Whether a YAML string (a quoted scalar) is the wrong type here: numbers and booleans must
    /// be written plain, as in `workers: 4` and `delete: false`.
    pub fn wants_plain(&self) -> bool {
        matches!(self, Kind::Workers | Kind::Count { .. } | Kind::Bool)
    }

    /// Whether an empty value (or none, in the file) means "not set".
    pub fn optional(&self) -> bool {
        matches!(
            self,
            Kind::Address { optional: true }
                | Kind::File
                | Kind::Text { optional: true }
                | Kind::Url(_)
                | Kind::Secret
                | Kind::OptionalDir
                | Kind::Window
        )
    }

    /// Parses and checks `text`; the error names the value and the rule, not the key.
    pub fn parse(&self, text: &str) -> Result<Value, String> {
        match *self {
            Kind::Address { optional } => {
                if optional && text.trim().is_empty() {
                    return Ok(Value::Optional(None));
                }
                check_listen(text)?;
                Ok(if optional {
                    Value::Optional(Some(text.to_string()))
                } else {
                    Value::Text(text.to_string())
                })
            }
            Kind::Path if text.trim().is_empty() => Err("the path is empty".into()),
            Kind::Path => Ok(Value::Path(PathBuf::from(text))),
            Kind::File | Kind::OptionalDir if text.trim().is_empty() => {
                Ok(Value::OptionalPath(None))
            }
            Kind::File | Kind::OptionalDir => Ok(Value::OptionalPath(Some(PathBuf::from(text)))),
            Kind::Word(words) => match words.iter().find(|w| text.trim() == **w) {
                Some(w) => Ok(Value::Text(w.to_string())),
                None => Err(format!("{text:?} is not one of {}", words.join(", "))),
            },
            Kind::Workers => match parse_count(text)? {
                0 => Ok(Value::Count(default_workers())),
                n if n > 1024 => Err(format!("{text:?} is more than the maximum of 1024")),
                n => Ok(Value::Count(n as usize)),
            },
            Kind::Count { min, max } => {
                let n = parse_count(text)?;
                if n < min {
                    Err(format!("{text:?} is less than the minimum of {min}"))
                } else if n > max {
                    Err(format!("{text:?} is more than the maximum of {max}"))
                } else {
                    Ok(Value::Count(n as usize))
                }
            }
            Kind::Size { min, max } => {
                let n = parse_size(text)?;
                if n < min {
                    Err(format!(
                        "{text:?} is less than the minimum of {}",
                        format_size(min)
                    ))
                } else if n > max {
                    Err(format!(
                        "{text:?} is more than the maximum of {}",
                        format_size(max)
                    ))
                } else {
                    Ok(Value::Count(n as usize))
                }
            }
            Kind::Duration { zero_ok } => {
                let d = parse_duration(text)?;
                if d.is_zero() && !zero_ok {
                    Err(format!("{text:?} is zero; this must be longer"))
                } else {
                    Ok(Value::Duration(d))
                }
            }
            Kind::Bool => parse_bool(text).map(Value::Bool),
            Kind::Level => match text.trim().to_ascii_lowercase().as_str() {
                "error" => Ok(Value::Level(LogLevel::Error)),
                "warn" | "warning" => Ok(Value::Level(LogLevel::Warn)),
                "info" => Ok(Value::Level(LogLevel::Info)),
                "debug" => Ok(Value::Level(LogLevel::Debug)),
                _ => Err(format!(
                    "{text:?} is not a log level (use error, warn, info, debug)"
                )),
            },
            Kind::Format => match text.trim().to_ascii_lowercase().as_str() {
                "text" => Ok(Value::Format(LogFormat::Text)),
                "json" => Ok(Value::Format(LogFormat::Json)),
                _ => Err(format!("{text:?} is not a log format (use text, json)")),
            },
            Kind::Text { optional: false } if text.trim().is_empty() => {
                Err("the value is empty".into())
            }
            Kind::Text { .. } | Kind::Secret => Ok(Value::Text(text.trim().to_string())),
            Kind::Url(schemes) => check_url(text.trim(), schemes).map(Value::Text),
            Kind::Window if text.trim().is_empty() => Ok(Value::Text(String::new())),
            Kind::Window => super::value::Window::parse(text.trim())
                .map(|_| Value::Text(text.trim().to_string())),
        }
    }
}

impl Setting {
    /// `RINGYARD_` and the key path in capitals, `_` between parts.
    pub fn env(&self) -> String {
        format!("{}{}", super::env::PREFIX, super::env::upper(self.key))
    }

    pub fn value_name(&self) -> &'static str {
        self.kind.value_name()
    }

    pub fn expected(&self) -> &'static str {
        self.kind.expected()
    }

    pub fn wants_plain(&self) -> bool {
        self.kind.wants_plain()
    }

    /// Parses and checks `text`; the error names the value and the rule, not the key.
    pub fn parse(&self, text: &str) -> Result<Value, String> {
        self.kind.parse(text)
    }

    pub fn apply(&self, cfg: &mut Config, v: Value) {
        (self.set)(cfg, v)
    }

    /// The value in `cfg`, written as in the file (`1h`, `4MiB`, `""`); the number of workers
    /// is 0 when it is one per core.
    pub fn show(&self, cfg: &Config) -> String {
        match ((self.get)(cfg), self.kind) {
            (Value::Text(s), Kind::Secret | Kind::Url(_)) => yaml_scalar(&super::secret::shown(&s)),
            (Value::Count(n), Kind::Workers) if n == default_workers() => "0".into(),
            (Value::Count(n), Kind::Size { .. }) => format_size(n as u64),
            (Value::Count(n), _) => n.to_string(),
            (Value::Text(s), _) => yaml_scalar(&s),
            (Value::Optional(s), _) => yaml_scalar(s.as_deref().unwrap_or("")),
            (Value::Path(p), _) => yaml_scalar(&p.to_string_lossy()),
            (Value::OptionalPath(p), _) => yaml_scalar(
                &p.as_deref()
                    .map(|p| p.to_string_lossy())
                    .unwrap_or_default(),
            ),
            (Value::Duration(d), _) => format_duration(d),
            (Value::Bool(b), _) => b.to_string(),
            (Value::Level(l), _) => format!("{l:?}").to_ascii_lowercase(),
            (Value::Format(f), _) => format!("{f:?}").to_ascii_lowercase(),
        }
    }
}

/// `text` if it is empty or a URL of one of `schemes` with a host; the error quotes it
/// without its password. Pure.
fn check_url(text: &str, schemes: &[&str]) -> Result<String, String> {
    if text.is_empty() {
        return Ok(String::new());
    }
    let shown = super::secret::redact_url(text);
    let want = schemes
        .iter()
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(" or ");
    match url::Url::parse(text) {
        Ok(u) if !schemes.contains(&u.scheme()) => Err(format!("{shown:?} is not a {want} URL")),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Err(format!("{shown:?} names no host")),
        Ok(_) => Ok(text.to_string()),
        Err(e) => Err(format!("{shown:?} is not a URL ({e}); expected {want}...")),
    }
}

/// `s` as a YAML scalar: plain when that reads back as the same string, else double-quoted.
fn yaml_scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/:-".contains(&b))
        && !s.starts_with(['-', ':'])
        && !s.ends_with(':')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~"
        )
        && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if plain {
        s.to_string()
    } else {
        format!("{s:?}")
    }
}

/// `ringyard config defaults`: every setting with its default and doc line, and every section
/// of records with none, as a file that `ringyard config check` accepts and that loads to
/// exactly [`Config::default`].
pub fn defaults_file() -> String {
    defaults_file_with(SECTIONS)
}

/// A setting or a section of records, for the order of the defaults file.
enum Entry<'a, C: 'static> {
    Setting(&'static Setting),
    Section(&'a Section<C>),
}

/// The settings in table order, each of `sections` after the last setting that shares most of
/// its groups, so that no group (`storage:`) is opened twice.
fn entries<C>(sections: &[Section<C>]) -> Vec<(&'static str, Entry<'_, C>)> {
    let groups = |key: &'static str| key.split('.').rev().skip(1).collect::<Vec<_>>();
    let mut out: Vec<(&'static str, Entry<C>)> = SETTINGS
        .iter()
        .map(|s| (s.key, Entry::Setting(s)))
        .collect();
    for sec in sections {
        let mine: Vec<&str> = groups(sec.key).into_iter().rev().collect();
        let shared = |key: &'static str| {
            let theirs: Vec<&str> = groups(key).into_iter().rev().collect();
            mine.iter().zip(&theirs).take_while(|(a, b)| a == b).count()
        };
        let best = out.iter().map(|(k, _)| shared(k)).max().unwrap_or(0);
        let at = match out.iter().rposition(|(k, _)| best > 0 && shared(k) == best) {
            Some(i) => i + 1,
            None => out.len(),
        };
        out.insert(at, (sec.key, Entry::Section(sec)));
    }
    out
}

/// [`defaults_file`] with `sections` (the tests declare their own).
pub fn defaults_file_with<C>(sections: &[Section<C>]) -> String {
    let d = Config::default();
    let mut out = String::from(
        "# ringyard configuration: every setting with its default (`ringyard config defaults`).\n\
         # Precedence: command-line flag, then environment variable, then this file, then the default.\n\
         # Each key has an environment variable: RINGYARD_ and the key path in capitals with `_`\n\
         # between the parts; it is shown in brackets after the doc line, with the flag.\n\
         # Durations: 500ms, 30s, 5m, 1h30m, 2d (a plain number is seconds).\n\
         # Sizes: 1024 (a plain number is bytes), 512KiB, 4MiB, 1GiB, or decimal 10KB, 10MB, 10GB.\n",
    );
    let mut open: Vec<&str> = Vec::new();
    for (key, entry) in entries(sections) {
        let parts: Vec<&str> = key.split('.').collect();
        let (groups, name) = parts.split_at(parts.len() - 1);
        let common = open.iter().zip(groups).take_while(|(a, b)| a == b).count();
        if common == 0 {
            out.push('\n');
        }
        open.truncate(common);
        for (depth, group) in groups.iter().enumerate().skip(common) {
            out.push_str(&format!("{}{group}:\n", "  ".repeat(depth)));
            open.push(group);
        }
        let s = match entry {
            Entry::Setting(s) => s,
            Entry::Section(sec) => {
                out.push_str(&sec.defaults(groups.len()));
                continue;
            }
        };
        let indent = "  ".repeat(groups.len());
        let flag = s
            .flag
            .map(|f| format!(", --{}", f.name()))
            .unwrap_or_default();
        let words = s.doc.split(' ').map(str::to_string);
        let refs = format!("[{}{flag}]", s.env());
        for line in wrap(words.chain([refs]), 96 - indent.len()) {
            out.push_str(&format!("{indent}# {line}\n"));
        }
        out.push_str(&format!("{indent}{}: {}\n", name[0], s.show(&d)));
    }
    out
}

/// `words` in lines of at most `width` characters (unless a word is longer).
pub(super) fn wrap(words: impl Iterator<Item = String>, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in words {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word);
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
        }
    }
    lines
}

/// The reference table of the README's Configuration section.
pub fn markdown_reference() -> String {
    let d = Config::default();
    let mut out =
        String::from("| key | default | environment | flag | meaning |\n|---|---|---|---|---|\n");
    for s in SETTINGS {
        let flag = match s.flag {
            Some(Flag::Value(n)) => format!("`--{n} {}`", s.value_name()),
            Some(Flag::Switch { name, .. }) => format!("`--{name}`"),
            None => String::new(),
        };
        let default = match s.show(&d).as_str() {
            "\"\"" => "empty".to_string(),
            v => format!("`{v}`"),
        };
        out.push_str(&format!(
            "| `{}` | {default} | `{}` | {flag} | {} |\n",
            s.key,
            s.env(),
            s.doc.replace('|', "\\|")
        ));
    }
    out.push_str(&section::markdown(SECTIONS));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_envs_and_flags_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for s in SETTINGS {
            assert!(seen.insert(s.key), "{} twice", s.key);
            assert!(
                seen.insert(Box::leak(s.env().into_boxed_str())),
                "{}",
                s.env()
            );
            if let Some(f) = s.flag {
                assert!(seen.insert(f.name()), "--{} twice", f.name());
            }
            assert!(s
                .key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'));
            assert!(s.doc.ends_with('.'), "{}: one sentence", s.key);
            assert!(!s.doc.contains('\n'));
        }
        assert_eq!(
            find("http.timeouts.head").unwrap().env(),
            "RINGYARD_HTTP_TIMEOUTS_HEAD"
        );
        assert_eq!(
            find("storage.read_only").unwrap().env(),
            "RINGYARD_STORAGE_READ_ONLY"
        );
        assert_eq!(
            sections(),
            [
                "http",
                "http.timeouts",
                "http.tls",
                "storage",
                "storage.s3",
                "storage.cache",
                "database",
                "log",
                "metrics",
                "auth",
                "auth.htpasswd",
                "auth.token",
                "gc",
                "scan"
            ]
        );
        // a section is never also a setting
        for sec in sections() {
            assert!(find(sec).is_none(), "{sec}");
        }
    }

    /// Every entry reads back what it shows, through its own field: the table's getters,
    /// setters and kinds agree.
    #[test]
    fn every_setting_round_trips_through_its_field() {
        let d = Config::default();
        for s in SETTINGS {
            let mut c = Config::default();
            let shown = s.show(&d);
            let text = shown.trim_matches('"');
            let v = s.parse(text).unwrap_or_else(|e| panic!("{}: {e}", s.key));
            s.apply(&mut c, v);
            assert_eq!(s.show(&c), shown, "{}", s.key);
            if let Some(Flag::Switch { sets, .. }) = s.flag {
                let v = s.parse(sets).unwrap();
                s.apply(&mut c, v);
                assert_ne!(
                    s.show(&c),
                    shown,
                    "--{} changes the default",
                    s.flag.unwrap().name()
                );
            }
        }
    }

    #[test]
    fn bounds() {
        let bad = |key: &str, v: &str| find(key).unwrap().parse(v).unwrap_err();
        let good = |key: &str, v: &str| find(key).unwrap().parse(v).unwrap();
        assert!(bad("http.timeouts.head", "0").contains("zero"));
        assert!(bad("http.timeouts.idle", "0s").contains("zero"));
        assert_eq!(
            good("http.timeouts.shutdown_grace", "0"),
            Value::Duration(Duration::ZERO)
        );
        assert!(bad("http.max_header_size", "512").contains("minimum of 1KiB"));
        assert!(bad("http.max_header_size", "2MiB").contains("maximum of 1MiB"));
        assert_eq!(good("http.max_header_size", "1MiB"), Value::Count(1 << 20));
        assert!(bad("storage.max_manifest_size", "1000").contains("minimum of 1KiB"));
        assert!(bad("http.workers", "1025").contains("maximum of 1024"));
        assert_eq!(good("http.workers", "0"), Value::Count(default_workers()));
        assert_eq!(good("http.workers", "1024"), Value::Count(1024));
        assert!(bad("http.max_connections", "0").contains("minimum of 1"));
        assert!(bad("log.level", "verbose").contains("not a log level"));
        assert_eq!(good("log.level", "WARN"), Value::Level(LogLevel::Warn));
        assert!(bad("log.format", "xml").contains("use text, json"));
        assert!(bad("http.listen", "").contains("not HOST:PORT"));
        assert_eq!(good("metrics.listen", ""), Value::Optional(None));
        assert_eq!(
            good("metrics.listen", "127.0.0.1:9090"),
            Value::Optional(Some("127.0.0.1:9090".into()))
        );
        assert!(bad("storage.root", " ").contains("empty"));
        assert_eq!(good("http.tls.key", ""), Value::OptionalPath(None));
        assert_eq!(
            good("http.tls.certificate", "/etc/ringyard/cert.pem"),
            Value::OptionalPath(Some(PathBuf::from("/etc/ringyard/cert.pem")))
        );
    }

    /// The README's reference table is this table's; when a setting changes, paste the new
    /// one printed here.
    #[test]
    fn readme_has_the_current_reference() {
        let readme = include_str!("../../README.md");
        let table = markdown_reference();
        assert!(
            readme.contains(&table),
            "README.md, ## Configuration, must contain this table:\n{table}"
        );
    }

    #[test]
    fn yaml_scalars_quote_only_when_needed() {
        assert_eq!(yaml_scalar("localhost:5000"), "localhost:5000");
        assert_eq!(yaml_scalar("./ringyard-data"), "./ringyard-data");
        assert_eq!(yaml_scalar(""), "\"\"");
        assert_eq!(yaml_scalar("[::]:5000"), "\"[::]:5000\"");
        assert_eq!(yaml_scalar("true"), "\"true\"");
        assert_eq!(yaml_scalar("my data"), "\"my data\"");
        assert_eq!(yaml_scalar("# x"), "\"# x\"");
        assert_eq!(yaml_scalar("123"), "\"123\"");
    }
}
