//! `auth.token.external`: the other token servers whose tokens this registry trusts, a list so
//! that a team moving from one token server to another, or running one per region, is served
//! by all of them at once. Records land here as plain strings and paths; the token layer
//! ([`crate::auth::token::settings`]) reads the files at start and checks what a file reader
//! cannot (a record with neither keys nor roots, an issuer named like our own), naming the
//! record and its line as the access rules do.

use super::auth::at;
use super::section::{field, Record, Section, Str, Type};
use super::Config;
use std::path::PathBuf;

/// One `auth.token.external` record, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalIssuer {
    pub issuer: String,
    pub jwks: Option<PathBuf>,
    pub rootcertbundle: Option<PathBuf>,
    /// None: `auth.token.service`.
    pub service: Option<String>,
    pub realm: Option<String>,
    /// `auth.token.external[1] (line 14)`, for the token layer's messages.
    pub at: String,
}

/// A file's path; it is read at start, where a missing file is reported with its name.
const FILE: Str = Str::Like {
    what: "a file path",
    test: |_| true,
};

const URL: Str = Str::Like {
    what: "an http:// or https:// URL",
    test: |s| s.starts_with("https://") || s.starts_with("http://"),
};

pub const EXTERNAL: Section<Config> = Section::list(
    "auth.token.external",
    "Other token servers whose tokens are trusted, with or without the built-in service (auth.token.enabled): a token is checked with the keys of the record its iss names and must carry that record's service as audience; every Bearer challenge names the realm and service of the first record that has a realm, else the built-in service's (so with auth.token.enabled false one record needs a realm).",
    &[
        field("issuer", Type::Str(Str::Any), "The iss its tokens carry; no two records may name the same.")
            .required()
            .unique()
            .example("corp-auth"),
        field(
            "jwks",
            Type::Str(FILE),
            "A JWKS file of its public keys (EC P-256 or RSA); a record needs it, rootcertbundle or both.",
        )
        .example("/etc/ringyard/corp-auth.jwks.json"),
        field(
            "rootcertbundle",
            Type::Str(FILE),
            "PEM root certificates for its tokens that carry their certificate chain in the x5c header.",
        )
        .example("/etc/ringyard/corp-auth-roots.pem"),
        field(
            "service",
            Type::Str(Str::Any),
            "The audience its tokens carry for this registry; absent: auth.token.service.",
        )
        .example("registry.example"),
        field(
            "realm",
            Type::Str(URL),
            "Its token endpoint, where challenges send clients when this is the first record with a realm.",
        )
        .example("https://auth.example/token"),
    ],
    |c: &mut Config, records| {
        c.token_external = records.iter().map(read).collect();
    },
);

fn read(r: &Record) -> ExternalIssuer {
    ExternalIssuer {
        issuer: r.get("issuer"),
        jwks: r.opt::<String>("jwks").map(PathBuf::from),
        rootcertbundle: r.opt::<String>("rootcertbundle").map(PathBuf::from),
        service: r.opt("service"),
        realm: r.opt("realm"),
        at: at(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::parse;
    use crate::config::source::resolve;

    /// The product's reading of `text`: the config, or every problem as printed.
    fn load(text: &str) -> Result<Config, Vec<String>> {
        let (assignments, filled, errors) = parse("ringyard.yaml", text);
        let mut cfg = resolve(assignments)
            .map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
        if !errors.is_empty() {
            return Err(errors.iter().map(|e| e.to_string()).collect());
        }
        for f in &filled {
            f.apply(&mut cfg);
        }
        Ok(cfg)
    }

    #[test]
    fn records_in_file_order_with_their_lines() {
        let cfg = load(
            "auth:
  token:
    service: registry.example
    external:
      - issuer: corp-auth
        jwks: /etc/ringyard/corp.jwks.json
        realm: https://auth.example/token
      - issuer: eu-auth
        rootcertbundle: roots.pem
        service: harbor-eu
",
        )
        .unwrap();
        assert_eq!(
            cfg.token_external,
            [
                ExternalIssuer {
                    issuer: "corp-auth".into(),
                    jwks: Some("/etc/ringyard/corp.jwks.json".into()),
                    rootcertbundle: None,
                    service: None,
                    realm: Some("https://auth.example/token".into()),
                    at: "auth.token.external[0] (line 5)".into(),
                },
                ExternalIssuer {
                    issuer: "eu-auth".into(),
                    jwks: None,
                    rootcertbundle: Some("roots.pem".into()),
                    service: Some("harbor-eu".into()),
                    realm: None,
                    at: "auth.token.external[1] (line 8)".into(),
                },
            ]
        );
        assert_eq!(
            load("auth:\n  token:\n    external: []\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn bad_records_are_refused_with_path_and_line() {
        let mut errors = load(
            "auth:
  token:
    external:
      - issuer: corp-auth
        jwks: a.json
      - issuer: corp-auth
        rootcertbundle: b.pem
        realm: auth.example/token
      - jwks: c.json
        roots: d.pem
",
        )
        .unwrap_err();
        errors.sort_by_key(|e| e.split(':').nth(1).and_then(|l| l.parse::<u32>().ok()));
        assert_eq!(
            errors,
            [
                "ringyard.yaml:6: auth.token.external[1].issuer: \"corp-auth\" again (first in auth.token.external[0] on line 4)",
                "ringyard.yaml:8: auth.token.external[1].realm: \"auth.example/token\" is not an http:// or https:// URL",
                "ringyard.yaml:9: auth.token.external[2]: missing issuer (a string)",
                "ringyard.yaml:10: auth.token.external[2].roots: unknown field (known here: issuer, jwks, rootcertbundle, service, realm)",
            ]
        );
        // The single issuer of before the list: the shape says what is expected.
        let errors = load("auth:\n  token:\n    external:\n      issuer: corp-auth\n").unwrap_err();
        assert!(
            errors[0].starts_with("ringyard.yaml:3: auth.token.external: expected a list of records (issuer, jwks, rootcertbundle, service, realm), found a mapping"),
            "{errors:?}"
        );
    }
}
