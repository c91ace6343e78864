//! Environment variables: `RINGYARD_` and the key path in capitals, `_` between parts
//! (`RINGYARD_HTTP_TIMEOUTS_HEAD`). Names come from the settings table, never from splitting a
//! variable on `_` (keys contain `_` themselves). A `RINGYARD_*` variable that looks like a
//! setting but is none is an error naming it, so a typo cannot silently leave a default in
//! place; other `RINGYARD_*` variables are not settings and are left alone. Sections of records
//! have no variables: one that names a section is refused with the reason.

use super::section::{Section, SECTIONS};
use super::settings::{self, Setting, SETTINGS};
use super::source::{Assignment, ConfigError, Origin};
use super::value::{closest, distance};

pub const PREFIX: &str = "RINGYARD_";

/// `RINGYARD_*` variables that are not settings: the configuration file when `--config` is
/// not given; `epoll` to force the epoll event loop; where `cargo bench --bench blob_store`
/// writes.
pub const OTHER_VARIABLES: &[&str] = &["RINGYARD_CONFIG", "RINGYARD_DRIVER", "RINGYARD_BENCH_DIR"];

/// `http.timeouts` as in a variable name: `HTTP_TIMEOUTS`.
pub(super) fn upper(path: &str) -> String {
    path.replace('.', "_").to_ascii_uppercase()
}

/// The settings whose last part `rest` (the name after `RINGYARD_`) ends with: `LISTEN` and
/// `HTTP_LISTN_LISTEN` both end like `http.listen` and `metrics.listen`.
fn same_leaf(rest: &str) -> impl Iterator<Item = &'static Setting> + '_ {
    SETTINGS.iter().filter(move |s| {
        let leaf = upper(settings::leaf(s.key));
        rest == leaf || rest.ends_with(&format!("_{leaf}"))
    })
}

/// The setting whose variable name is closest to `name`, if that is close.
fn closest_name(name: &str) -> Option<&'static Setting> {
    let names: Vec<String> = SETTINGS.iter().map(|s| s.env()).collect();
    let best = closest(name, names.iter().map(String::as_str))?;
    SETTINGS.iter().find(|s| s.env() == best)
}

/// Whether `name` (a `RINGYARD_*` variable that is no setting) was probably meant as one: it
/// starts like a section or is one (`RINGYARD_HTTP_...`, `RINGYARD_LOG`), ends like a key
/// (`..._LISTEN`, `..._ROOT`), or is a letter or so away from a setting's name or last part
/// (`RINGYARD_READONLY`).
fn looks_like_a_setting(name: &str) -> bool {
    let rest = &name[PREFIX.len()..];
    let section = settings::sections().iter().any(|s| {
        let s = upper(s);
        rest == s || rest.starts_with(&format!("{s}_"))
    });
    let near_leaf = SETTINGS
        .iter()
        .any(|s| distance(rest, settings::leaf(s.key)) <= 1);
    section || near_leaf || same_leaf(rest).next().is_some() || closest_name(name).is_some()
}

/// The variable(s) `name` was probably meant to be: those with the same last part, else the
/// closest name, else the one whose last part is closest.
fn did_you_mean_env(name: &str) -> Option<String> {
    let rest = &name[PREFIX.len()..];
    let same: Vec<String> = same_leaf(rest).map(Setting::env).collect();
    if !same.is_empty() {
        return Some(same.join(" or "));
    }
    if let Some(s) = closest_name(name) {
        return Some(s.env());
    }
    let leaves: Vec<String> = SETTINGS
        .iter()
        .map(|s| upper(settings::leaf(s.key)))
        .collect();
    let best = closest(rest, leaves.iter().map(String::as_str))?;
    let i = leaves.iter().position(|l| l == best)?;
    Some(SETTINGS[i].env())
}

/// The settings among `vars` (all of the environment may be passed), in table order, and an
/// error for each variable that looks like a setting but is none.
pub fn parse(
    vars: impl IntoIterator<Item = (String, String)>,
) -> (Vec<Assignment>, Vec<ConfigError>) {
    parse_with(vars, SECTIONS)
}

/// [`parse`], refusing the variables of `sections` (the tests declare their own).
pub fn parse_with<C>(
    vars: impl IntoIterator<Item = (String, String)>,
    sections: &[Section<C>],
) -> (Vec<Assignment>, Vec<ConfigError>) {
    let mut found: Vec<(usize, Assignment)> = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in vars {
        if !name.starts_with(PREFIX) || OTHER_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        if let Some(i) = SETTINGS.iter().position(|s| s.env() == name) {
            let origin = Origin::Env(name);
            found.push((
                i,
                Assignment {
                    setting: &SETTINGS[i],
                    text,
                    origin,
                },
            ));
        } else if let Some(s) = sections
            .iter()
            .find(|s| name == s.env() || name.starts_with(&format!("{}_", s.env())))
        {
            let message = format!(
                "{} is {} and can only be set in the configuration file",
                s.key,
                s.what()
            );
            errors.push(ConfigError::new(Origin::Env(name), None, message));
        } else if looks_like_a_setting(&name) {
            let hint = did_you_mean_env(&name)
                .map(|h| format!(" (did you mean {h}?)"))
                .unwrap_or_default();
            errors.push(ConfigError::new(
                Origin::Env(name),
                None,
                format!("no such setting{hint}"),
            ));
        }
    }
    found.sort_by_key(|(i, _)| *i);
    (found.into_iter().map(|(_, a)| a).collect(), errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::resolve;
    use std::time::Duration;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn every_setting_has_its_variable() {
        let (assignments, errors) = parse(vars(&[
            ("RINGYARD_HTTP_LISTEN", "0.0.0.0:80"),
            ("RINGYARD_HTTP_TIMEOUTS_HEAD", "5s"),
            ("RINGYARD_HTTP_TIMEOUTS_SHUTDOWN_GRACE", "1m"),
            ("RINGYARD_STORAGE_READ_ONLY", "true"),
            ("RINGYARD_STORAGE_MAX_MANIFEST_SIZE", "8KiB"),
            ("RINGYARD_LOG_FORMAT", "json"),
            ("RINGYARD_METRICS_LISTEN", "127.0.0.1:9090"),
            ("PATH", "/usr/bin"),
            ("RINGYARD_DRIVER", "epoll"),
            ("RINGYARD_BENCH_DIR", "/tmp"),
            ("RINGYARD_SOMETHING", "else"),
        ]));
        assert_eq!(errors, [], "other RINGYARD_* variables are not settings");
        let cfg = resolve(assignments).unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:80");
        assert_eq!(cfg.head_timeout, Duration::from_secs(5));
        assert_eq!(cfg.shutdown_grace, Duration::from_secs(60));
        assert!(cfg.read_only);
        assert_eq!(cfg.max_manifest_bytes, 8192);
        assert_eq!(cfg.log_format, crate::config::LogFormat::Json);
        assert_eq!(cfg.metrics_listen.as_deref(), Some("127.0.0.1:9090"));
    }

    #[test]
    fn typos_are_errors_that_suggest_the_name() {
        let errs = parse(vars(&[
            ("RINGYARD_HTTP_LISTN", "x"),
            ("RINGYARD_STORGE_ROOT", "/x"),
            ("RINGYARD_LISTEN", "x"),
            ("RINGYARD_READONLY", "1"),
            ("RINGYARD_HTTP_TIMEOUT_HEAD", "1s"),
        ]))
        .1;
        let texts: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            texts,
            [
                "RINGYARD_HTTP_LISTN: no such setting (did you mean RINGYARD_HTTP_LISTEN?)",
                "RINGYARD_STORGE_ROOT: no such setting (did you mean RINGYARD_STORAGE_ROOT?)",
                "RINGYARD_LISTEN: no such setting (did you mean RINGYARD_HTTP_LISTEN or RINGYARD_METRICS_LISTEN?)",
                "RINGYARD_READONLY: no such setting (did you mean RINGYARD_STORAGE_READ_ONLY?)",
                "RINGYARD_HTTP_TIMEOUT_HEAD: no such setting (did you mean RINGYARD_HTTP_TIMEOUTS_HEAD?)",
            ]
        );
    }

    #[test]
    fn only_names_that_look_like_settings_are_errors() {
        for name in [
            "RINGYARD_LOG",
            "RINGYARD_METRICS_PORT",
            "RINGYARD_WORKER",
            "RINGYARD_ROOT",
        ] {
            assert!(looks_like_a_setting(name), "{name}");
        }
        for name in ["RINGYARD_FOO", "RINGYARD_TEST_TMPDIR", "RINGYARD_VERSION"] {
            assert!(!looks_like_a_setting(name), "{name}");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let errs = resolve(parse(vars(&[("RINGYARD_STORAGE_DELETE", "perhaps")])).0).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            r#"RINGYARD_STORAGE_DELETE: "perhaps" is not true or false"#
        );
    }
}
