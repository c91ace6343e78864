//! S3 credentials, found as the AWS tools find them, in this order: `storage.s3.access_key`
//! and `secret_key` (file, `RINGYARD_*` variables), then the standard variables
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (with `AWS_SESSION_TOKEN`), then the shared
//! credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`), profile
//! `AWS_PROFILE` or `default`. The chain and the INI reader are pure; the caller passes the
//! variables and the file's text in ([`from_system`] is that edge).

use super::{Config, Secret};
use std::path::PathBuf;

/// Credentials for signing S3 requests, and where they came from (for the start-up line;
/// never the secret).
#[derive(Debug, Clone, PartialEq)]
pub struct AwsCredentials {
    pub access_key: String,
    pub secret_key: Secret,
    pub session_token: Option<Secret>,
    pub source: String,
}

/// The chain over the real environment and file system. Blocks (reads a file): call it at
/// start.
pub fn from_system(cfg: &Config) -> Result<AwsCredentials, String> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let path = var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
    let file = path.and_then(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)));
    resolve(
        cfg,
        &var,
        file.as_ref()
            .map(|(p, t)| (p.display().to_string(), t.as_str())),
    )
}

/// The chain: explicit keys, then variables, then the file (`(path, text)`). Pure.
pub fn resolve(
    cfg: &Config,
    var: &dyn Fn(&str) -> Option<String>,
    file: Option<(String, &str)>,
) -> Result<AwsCredentials, String> {
    match (cfg.s3_access_key.is_empty(), cfg.s3_secret_key.is_empty()) {
        (false, false) => {
            return Ok(AwsCredentials {
                access_key: cfg.s3_access_key.clone(),
                secret_key: cfg.s3_secret_key.clone(),
                session_token: None,
                source: "storage.s3.access_key".into(),
            })
        }
        (false, true) => {
            return Err("storage.s3.access_key is set but storage.s3.secret_key is not".into())
        }
        (true, false) => {
            return Err("storage.s3.secret_key is set but storage.s3.access_key is not".into())
        }
        (true, true) => {}
    }
    if let (Some(key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        return Ok(AwsCredentials {
            access_key: key,
            secret_key: Secret::new(secret),
            session_token: var("AWS_SESSION_TOKEN").map(Secret::new),
            source: "AWS_ACCESS_KEY_ID".into(),
        });
    }
    let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
    if let Some((path, text)) = file {
        let section = ini_section(text, &profile);
        let get = |k: &str| {
            section
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(key), Some(secret)) => {
                return Ok(AwsCredentials {
                    access_key: key,
                    secret_key: Secret::new(secret),
                    session_token: get("aws_session_token").map(Secret::new),
                    source: format!("{path} [{profile}]"),
                })
            }
            _ if !section.is_empty() => {
                return Err(format!(
                    "profile [{profile}] of {path} has no aws_access_key_id and \
                     aws_secret_access_key"
                ))
            }
            _ => {}
        }
    }
    Err(format!(
        "no S3 credentials: set storage.s3.access_key and storage.s3.secret_key (or \
         RINGYARD_STORAGE_S3_ACCESS_KEY and RINGYARD_STORAGE_S3_SECRET_KEY), or \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or profile [{profile}] in the shared \
         credentials file (AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials; AWS_PROFILE \
         picks the profile)"
    ))
}

/// The `key = value` pairs of `[name]` in INI text (the AWS credentials file's format):
/// `#` and `;` start comment lines, keys and values are trimmed, a repeated key's last value
/// wins and a repeated section adds to the first. Pure.
pub fn ini_section(text: &str, name: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = header.trim() == name;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            out.retain(|(n, _)| *n != k);
            out.push((k, v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comment
[default]
aws_access_key_id = AKIDEFAULT
aws_secret_access_key=defaultsecret

; another comment
[ci]
aws_access_key_id = AKICI
aws_secret_access_key = ci/secret=with=equals
aws_session_token = tok
[empty]
region = eu-west-1
";

    #[test]
    fn ini_sections_are_read() {
        assert_eq!(
            ini_section(FILE, "default"),
            [
                ("aws_access_key_id".into(), "AKIDEFAULT".into()),
                ("aws_secret_access_key".into(), "defaultsecret".into())
            ]
        );
        let ci = ini_section(FILE, "ci");
        assert_eq!(ci[1].1, "ci/secret=with=equals");
        assert_eq!(ci[2], ("aws_session_token".into(), "tok".into()));
        assert!(ini_section(FILE, "nope").is_empty());
        assert_eq!(
            ini_section("[a]\nk=1\nk=2\n", "a"),
            [("k".into(), "2".into())]
        );
    }

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |n| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn explicit_keys_then_variables_then_the_file() {
        let mut cfg = Config::default();
        let env = vars(&[
            ("AWS_ACCESS_KEY_ID", "AKIENV"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_SESSION_TOKEN", "envtok"),
        ]);
        let file = || Some(("creds".to_string(), FILE));
        let got = resolve(&cfg, &env, file()).unwrap();
        assert_eq!(got.access_key, "AKIENV");
        assert_eq!(got.session_token, Some(Secret::new("envtok")));
        cfg.s3_access_key = "AKIEXPLICIT".into();
        cfg.s3_secret_key = Secret::new("x");
        let got = resolve(&cfg, &env, file()).unwrap();
        assert_eq!(
            (got.access_key.as_str(), got.session_token),
            ("AKIEXPLICIT", None)
        );
        let cfg = Config::default();
        let got = resolve(&cfg, &vars(&[]), file()).unwrap();
        assert_eq!(got.access_key, "AKIDEFAULT");
        assert_eq!(got.source, "creds [default]");
        let got = resolve(&cfg, &vars(&[("AWS_PROFILE", "ci")]), file()).unwrap();
        assert_eq!(got.secret_key.expose(), "ci/secret=with=equals");
        assert_eq!(got.session_token.unwrap().expose(), "tok");
    }

    #[test]
    fn no_credentials_names_all_three_ways() {
        let cfg = Config::default();
        let e = resolve(&cfg, &vars(&[]), None).unwrap_err();
        for way in [
            "storage.s3.access_key",
            "AWS_ACCESS_KEY_ID",
            "credentials file",
        ] {
            assert!(e.contains(way), "{e}");
        }
        let e = resolve(
            &cfg,
            &vars(&[("AWS_PROFILE", "empty")]),
            Some(("f".into(), FILE)),
        );
        assert!(e.unwrap_err().contains("profile [empty] of f"));
        let half = Config {
            s3_access_key: "AKI".into(),
            ..Config::default()
        };
        assert!(resolve(&half, &vars(&[]), None)
            .unwrap_err()
            .contains("secret_key is not"));
        // only one of the two variables: not taken, the chain goes on
        let one = vars(&[("AWS_ACCESS_KEY_ID", "AKIENV")]);
        assert!(resolve(&cfg, &one, None).is_err());
    }
}
