//! Where a value came from, the error that names that place, and the resolution of values from
//! every source into one [`Config`]: later assignments win, so the caller passes the file's,
//! then the environment's, then the flags'.

use super::settings::Setting;
use super::Config;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A configuration file; the line of the key, when there is one.
    File { path: String, line: Option<usize> },
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag, by its long name without the dashes.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                path,
                line: Some(l),
            } => write!(f, "{path}:{l}"),
            Origin::File { path, line: None } => write!(f, "{path}"),
            Origin::Env(name) => write!(f, "{name}"),
            Origin::Flag(name) => write!(f, "--{name}"),
        }
    }
}

/// One setting given a value (still text) somewhere.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub setting: &'static Setting,
    pub text: String,
    pub origin: Origin,
}

/// A configuration that cannot be used: `WHERE: [KEY: ]WHAT`, where WHERE is `FILE:LINE`, an
/// environment variable or a flag. The key is written for files only; a variable or a flag
/// already names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: Origin,
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn new(origin: Origin, key: Option<&str>, message: impl Into<String>) -> ConfigError {
        let key = match origin {
            Origin::File { .. } => key.map(str::to_string),
            _ => None,
        };
        ConfigError {
            origin,
            key,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Applies `assignments` in order over the defaults. Every value is checked, also those a later
/// source overrides, so a file that `config check` accepts is valid on its own; all problems
/// are reported, each once.
pub fn resolve(
    assignments: impl IntoIterator<Item = Assignment>,
) -> Result<Config, Vec<ConfigError>> {
    let mut cfg = Config::default();
    let mut errors: Vec<ConfigError> = Vec::new();
    // Where each setting got its value last: the place named when settings disagree.
    let mut origins: Vec<(&'static str, Origin)> = Vec::new();
    for a in assignments {
        match a.setting.parse(&a.text) {
            Ok(v) => {
                a.setting.apply(&mut cfg, v);
                origins.retain(|(k, _)| *k != a.setting.key);
                origins.push((a.setting.key, a.origin));
            }
            Err(e) => push_once(
                &mut errors,
                ConfigError::new(a.origin, Some(a.setting.key), e),
            ),
        }
    }
    let origin = |key: &str| origins.iter().find(|(k, _)| *k == key).map(|(_, o)| o);
    if let (Some(m), Some(origin)) = (&cfg.metrics_listen, origin("metrics.listen")) {
        // port 0 picks a free port for each, so two of them never clash
        if *m == cfg.listen && !m.ends_with(":0") {
            errors.push(ConfigError::new(
                origin.clone(),
                Some("metrics.listen"),
                format!(
                    "{m:?} is http.listen too; leave it empty to serve /metrics there, or pick another address"
                ),
            ));
        }
    }
    for (key, message) in tls_disagreements(&cfg) {
        if let Some(origin) = origin(key) {
            errors.push(ConfigError::new(origin.clone(), Some(key), message));
        }
    }
    for (keys, message) in scale_out_disagreements(&cfg) {
        // Blamed on the first of the keys that was set somewhere.
        if let Some((key, origin)) = keys.iter().find_map(|k| Some((*k, origin(k)?))) {
            errors.push(ConfigError::new(origin.clone(), Some(key), message));
        }
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

/// TLS settings that make no sense together: the key to blame and why. A certificate needs its
/// key and the other way round; client certificates need TLS.
fn tls_disagreements(cfg: &Config) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    match (&cfg.tls_certificate, &cfg.tls_key) {
        (Some(_), None) => out.push((
            "http.tls.certificate",
            "a certificate needs its private key: set http.tls.key (--tls-key) too",
        )),
        (None, Some(_)) => out.push((
            "http.tls.key",
            "a private key needs its certificate: set http.tls.certificate (--tls-cert) too",
        )),
        _ => {}
    }
    if cfg.tls_client_ca.is_some() && cfg.tls_certificate.is_none() {
        out.push((
            "http.tls.client_ca",
            "client certificates need TLS: set http.tls.certificate and http.tls.key too",
        ));
    }
    out
}

/// Settings of the S3 and PostgreSQL deployment that make no sense together: the keys to blame
/// (the first one set is named) and why.
fn scale_out_disagreements(cfg: &Config) -> Vec<(&'static [&'static str], String)> {
    let mut out: Vec<(&'static [&'static str], String)> = Vec::new();
    if cfg.s3() && cfg.s3_bucket.is_empty() {
        out.push((
            &["storage.backend", "storage.s3.bucket"],
            "storage.backend s3 needs a bucket: set storage.s3.bucket (--s3-bucket)".into(),
        ));
    }
    if cfg.cache_type == "redis" && cfg.redis_url.is_empty() {
        out.push((
            &["storage.cache.type"],
            "storage.cache.type redis needs storage.cache.redis_url (redis://HOST:PORT)".into(),
        ));
    }
    if cfg.redirect && !cfg.s3() {
        out.push((
            &["storage.redirect"],
            "storage.redirect sends clients to presigned S3 URLs: it needs storage.backend s3"
                .into(),
        ));
    }
    if cfg.cache_type == "redis" && cfg.database().is_none() {
        out.push((
            &["storage.cache.type"],
            "storage.cache.type redis caches the reads of the PostgreSQL engine; the embedded SQLite answers from memory already: set database.url, or storage.cache.type none".into(),
        ));
    }
    if cfg.read_only && (cfg.s3() || cfg.database().is_some()) {
        out.push((
            &["storage.read_only", "storage.backend", "database.url"],
            "storage.read_only serves a data directory on a read-only filesystem; with storage.backend s3 or database.url, nodes share the bucket and the database (no read-only mode there yet): use auth.access rules that grant only pull instead"
                .into(),
        ));
    }
    if cfg.token_enabled && cfg.database().is_some() && cfg.token_key.is_none() {
        out.push((
            &["auth.token.enabled", "database.url"],
            "with database.url every node must sign tokens with the same key, so the key cannot be generated per data directory: set auth.token.key (--token-key) to a PEM file that every node has (openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out token-key.pem)"
                .into(),
        ));
    }
    out
}

/// Adds `e` unless the same error is already there (a flag that sets two settings).
fn push_once(errors: &mut Vec<ConfigError>, e: ConfigError) {
    if !errors.contains(&e) {
        errors.push(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings;
    use std::time::Duration;

    fn at(origin: Origin, key: &str, text: &str) -> Assignment {
        Assignment {
            setting: settings::find(key).unwrap(),
            text: text.into(),
            origin,
        }
    }

    fn file(line: usize) -> Origin {
        Origin::File {
            path: "ringyard.yaml".into(),
            line: Some(line),
        }
    }

    #[test]
    fn later_assignments_win() {
        let cfg = resolve([
            at(file(2), "http.listen", "127.0.0.1:1"),
            at(
                Origin::Env("RINGYARD_HTTP_LISTEN".into()),
                "http.listen",
                "127.0.0.1:2",
            ),
            at(Origin::Flag("listen".into()), "http.listen", "127.0.0.1:3"),
            at(file(5), "http.timeouts.head", "5s"),
        ])
        .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:3");
        assert_eq!(cfg.head_timeout, Duration::from_secs(5));
    }

    #[test]
    fn errors_name_the_place_and_for_files_the_key() {
        let errs = resolve([
            at(file(7), "http.timeouts.head", "5x"),
            at(
                Origin::Env("RINGYARD_HTTP_TIMEOUTS_BODY".into()),
                "http.timeouts.body",
                "soon",
            ),
            at(
                Origin::Flag("request-timeout".into()),
                "http.timeouts.head",
                "x1",
            ),
            at(
                Origin::Flag("request-timeout".into()),
                "http.timeouts.body",
                "x1",
            ),
        ])
        .unwrap_err();
        let texts: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            texts,
            [
                r#"ringyard.yaml:7: http.timeouts.head: "5x" is not a duration (use 30s, 5m, 1h)"#,
                r#"RINGYARD_HTTP_TIMEOUTS_BODY: "soon" is not a duration (use 30s, 5m, 1h)"#,
                r#"--request-timeout: "x1" is not a duration (use 30s, 5m, 1h)"#,
            ]
        );
    }

    #[test]
    fn tls_settings_come_in_pairs() {
        let flag = |n: &str| Origin::Flag(n.into());
        let errs = resolve([at(flag("tls-cert"), "http.tls.certificate", "/c.pem")]).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "--tls-cert: a certificate needs its private key: set http.tls.key (--tls-key) too"
        );
        let errs = resolve([at(file(4), "http.tls.key", "/k.pem")]).unwrap_err();
        assert!(errs[0]
            .to_string()
            .starts_with("ringyard.yaml:4: http.tls.key: a private key needs its certificate"));
        let errs =
            resolve([at(flag("tls-client-ca"), "http.tls.client_ca", "/ca.pem")]).unwrap_err();
        assert!(errs[0].to_string().contains("client certificates need TLS"));
        let cfg = resolve([
            at(file(1), "http.tls.certificate", "/c.pem"),
            at(flag("tls-key"), "http.tls.key", "/k.pem"),
            at(file(3), "http.tls.client_ca", "/ca.pem"),
        ])
        .unwrap();
        assert_eq!(cfg.tls_key.as_deref(), Some(std::path::Path::new("/k.pem")));
        // A later source may turn TLS off again with empty values.
        assert!(resolve([
            at(file(1), "http.tls.certificate", "/c.pem"),
            at(file(2), "http.tls.key", "/k.pem"),
            at(flag("tls-cert"), "http.tls.certificate", ""),
            at(flag("tls-key"), "http.tls.key", ""),
        ])
        .is_ok());
    }

    #[test]
    fn scale_out_settings_that_do_not_fit_are_refused() {
        let flag = |n: &str| Origin::Flag(n.into());
        let errs = resolve([at(file(3), "storage.backend", "s3")]).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "ringyard.yaml:3: storage.backend: storage.backend s3 needs a bucket: set storage.s3.bucket (--s3-bucket)"
        );
        assert!(resolve([
            at(file(3), "storage.backend", "s3"),
            at(file(5), "storage.s3.bucket", "b"),
        ])
        .is_ok());
        let errs = resolve([
            at(flag("read-only"), "storage.read_only", "true"),
            at(file(9), "database.url", "postgres://u:pw@h/db"),
        ])
        .unwrap_err();
        assert!(
            errs[0]
                .to_string()
                .starts_with("--read-only: storage.read_only"),
            "{errs:?}"
        );
        assert!(!errs[0].to_string().contains("pw"));
        let errs = resolve([
            at(flag("token"), "auth.token.enabled", "true"),
            at(file(9), "database.url", "postgres://h/db"),
        ])
        .unwrap_err();
        assert!(
            errs[0].to_string().contains("set auth.token.key"),
            "{errs:?}"
        );
        assert!(resolve([
            at(flag("token"), "auth.token.enabled", "true"),
            at(file(8), "auth.token.key", "/k.pem"),
            at(file(9), "database.url", "postgres://h/db"),
        ])
        .is_ok());
        let errs = resolve([at(file(2), "storage.cache.type", "redis")]).unwrap_err();
        assert!(errs[0].to_string().contains("redis_url"), "{errs:?}");
        let errs = resolve([
            at(file(2), "storage.cache.type", "redis"),
            at(file(3), "storage.cache.redis_url", "redis://127.0.0.1:6379"),
        ])
        .unwrap_err();
        assert!(errs[0].to_string().contains("database.url"), "{errs:?}");
        let errs = resolve([at(file(2), "storage.redirect", "true")]).unwrap_err();
        assert!(
            errs[0].to_string().contains("storage.backend s3"),
            "{errs:?}"
        );
    }

    #[test]
    fn bad_urls_are_refused_without_their_password() {
        let errs = resolve([at(file(4), "database.url", "mysql://u:hunter2@h/db")]).unwrap_err();
        let text = errs[0].to_string();
        assert!(
            text.contains("is not a postgres:// or postgresql:// URL"),
            "{text}"
        );
        assert!(
            !text.contains("hunter2") && text.contains("u:***@h"),
            "{text}"
        );
        let errs = resolve([at(
            Origin::Env("RINGYARD_DATABASE_URL".into()),
            "database.url",
            "postgres://u:hunter2@[bad/db",
        )])
        .unwrap_err();
        assert!(!errs[0].to_string().contains("hunter2"), "{errs:?}");
        let errs = resolve([at(file(1), "storage.s3.endpoint", "127.0.0.1:9000")]).unwrap_err();
        assert!(
            errs[0].to_string().contains("http:// or https://"),
            "{errs:?}"
        );
        let cfg = resolve([at(file(1), "storage.s3.endpoint", "http://127.0.0.1:9000")]).unwrap();
        assert_eq!(cfg.s3_endpoint, "http://127.0.0.1:9000");
    }

    #[test]
    fn metrics_on_the_main_address_is_refused() {
        let errs = resolve([
            at(file(1), "http.listen", "127.0.0.1:5000"),
            at(file(9), "metrics.listen", "127.0.0.1:5000"),
        ])
        .unwrap_err();
        assert!(resolve([
            at(file(1), "http.listen", "127.0.0.1:0"),
            at(file(9), "metrics.listen", "127.0.0.1:0"),
        ])
        .is_ok());
        assert!(
            errs[0]
                .to_string()
                .starts_with("ringyard.yaml:9: metrics.listen: "),
            "{}",
            errs[0]
        );
    }
}
