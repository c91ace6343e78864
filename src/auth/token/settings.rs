//! The settings the token machinery needs, as plain structs ([`TokenSettings::from_config`]
//! fills them from `auth.token.*`):
//!
//! ```yaml
//! auth:
//!   token:
//!     enabled: true                          # the built-in token service
//!     realm: https://registry.example/token   # the challenge's realm: where docker asks
//!     service: registry.example              # the audience (`aud`) of our tokens
//!     issuer: ringyard                       # the `iss` of our tokens
//!     expiry: 5m                             # access token lifetime
//!     refresh_expiry: 30d                    # refresh token (docker's identity token)
//!     key: /etc/ringyard/token-key.pem       # PKCS#8 P-256; default <root>/token-signing-key.pem
//!     external:                              # other issuers whose tokens are trusted too
//!       - issuer: corp-auth
//!         realm: https://auth.example/token
//!         service: registry.example          # the audience its tokens carry; default: ours
//!         jwks: /etc/ringyard/corp-auth.jwks.json     # jwks, rootcertbundle, or both
//!       - issuer: eu-auth
//!         rootcertbundle: /etc/ringyard/eu-auth-roots.pem
//! ```
//!
//! Every issuer is trusted for its own audience: a token is verified with the keys of the
//! issuer its `iss` names and must carry that issuer's `service`; ours carry our `service`.
//!
//! A challenge names one realm, so one issuer is where clients are sent: the first external
//! record that has a realm, else the built-in service (which must then be on). Clients holding
//! a token of another trusted issuer present it anyway; those asking for one go there.

use super::error::KeyError;
use super::jwt::{TrustedIssuer, Verifier, DEFAULT_EXPIRY};
use super::keys::{Alg, KeySet, SigningKey};
use super::refresh::DEFAULT_REFRESH_EXPIRY;
use super::x5c::RootStore;
use std::path::PathBuf;
use std::time::Duration;

/// `auth.token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// The URL of our `/token` as clients reach it (empty: the wiring derives it from the
    /// listen address and scheme).
    pub realm: String,
    /// Our audience: the `service` docker asks tokens for, and the `aud` we accept on ours.
    pub service: String,
    /// The `iss` of our tokens.
    pub issuer: String,
    /// Access token lifetime (default 5 minutes).
    pub expiry: Duration,
    /// Refresh token lifetime (default 30 days).
    pub refresh_expiry: Duration,
    /// `None`: generated into the data directory on first start.
    pub key_path: Option<PathBuf>,
    /// `auth.token.external`, in file order (the order decides the challenge's realm).
    pub external: Vec<ExternalIssuerSettings>,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            realm: String::new(),
            service: "ringyard".to_string(),
            issuer: "ringyard".to_string(),
            expiry: DEFAULT_EXPIRY,
            refresh_expiry: DEFAULT_REFRESH_EXPIRY,
            key_path: None,
            external: Vec::new(),
        }
    }
}

/// One `auth.token.external` record: an issuer whose tokens are trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIssuerSettings {
    /// Its token endpoint; empty: none (challenges never name it).
    pub realm: String,
    /// The audience its tokens carry for this registry.
    pub service: String,
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// Its keys (EC P-256 and RSA signature keys are used, others skipped).
    pub jwks_path: Option<PathBuf>,
    /// Roots for tokens that carry their certificate chain in `x5c`.
    pub root_bundle_path: Option<PathBuf>,
    /// The record and its line (`auth.token.external[1] (line 14)`), for messages.
    pub at: String,
}

impl ExternalIssuerSettings {
    /// Reads the JWKS and root bundle (blocking file IO: at start-up). At least one of them
    /// must be configured, and each configured one must hold a usable key or certificate.
    /// Errors name the record, and the file when it is the file's fault.
    pub fn load(&self) -> Result<TrustedIssuer, KeyError> {
        let here = |e: KeyError| KeyError::invalid(format!("{}: {e}", self.at));
        let read = |path: &PathBuf| std::fs::read(path).map_err(|e| here(KeyError::io(path, e)));
        let in_file = |path: &PathBuf, e: KeyError| {
            here(KeyError::invalid(format!("{}: {e}", path.display())))
        };
        if self.jwks_path.is_none() && self.root_bundle_path.is_none() {
            return Err(here(KeyError::invalid(
                "needs jwks (a JWKS file of its keys), rootcertbundle (PEM roots of its x5c \
                 chains) or both",
            )));
        }
        let keys = match &self.jwks_path {
            Some(path) => KeySet::from_jwks(&read(path)?).map_err(|e| in_file(path, e))?,
            None => KeySet::new(),
        };
        let roots = match &self.root_bundle_path {
            Some(path) => Some(RootStore::from_pem(&read(path)?).map_err(|e| in_file(path, e))?),
            None => None,
        };
        Ok(TrustedIssuer {
            issuer: self.issuer.clone(),
            audience: self.service.clone(),
            keys,
            roots,
            algs: vec![Alg::Es256, Alg::Rs256],
        })
    }
}

impl TokenSettings {
    /// The realm and service a challenge names: the first external issuer with a realm, else
    /// ours.
    pub fn challenge_target(&self) -> (&str, &str) {
        match self.external.iter().find(|e| !e.realm.is_empty()) {
            Some(ext) => (&ext.realm, &ext.service),
            None => (&self.realm, &self.service),
        }
    }

    /// What cannot be served, before any file is read: with the built-in service off
    /// (`enabled` false) a challenge must name an external realm; an external issuer named
    /// like ours would never be tried (a token is verified by the issuer its `iss` names).
    pub fn check(&self, enabled: bool) -> Result<(), KeyError> {
        if !enabled && self.external.iter().all(|e| e.realm.is_empty()) {
            return Err(KeyError::invalid(
                "no auth.token.external record has a realm: without the built-in token \
                 service (auth.token.enabled) the challenge must name an external issuer's realm",
            ));
        }
        match self
            .external
            .iter()
            .find(|e| enabled && e.issuer == self.issuer)
        {
            Some(ext) => Err(KeyError::invalid(format!(
                "{}: issuer {:?} is also auth.token.issuer, the built-in service's: give one \
                 of them another name",
                ext.at, ext.issuer
            ))),
            None => Ok(()),
        }
    }

    /// The verifier of presented tokens: our own (when `own` is given, i.e. the built-in
    /// service is on) for our service, and each external issuer's for its own.
    pub fn verifier(&self, own: Option<&SigningKey>) -> Result<Verifier, KeyError> {
        let mut issuers: Vec<TrustedIssuer> = own
            .map(|key| TrustedIssuer::own(&self.issuer, &self.service, key))
            .into_iter()
            .collect();
        for ext in &self.external {
            issuers.push(ext.load()?);
        }
        Ok(Verifier::new(issuers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::error::TokenError;
    use crate::auth::token::jwt::tests::{ours as own_token, signed_by as theirs, NOW};

    fn external(
        issuer: &str,
        service: &str,
        realm: &str,
        jwks: Option<PathBuf>,
    ) -> ExternalIssuerSettings {
        ExternalIssuerSettings {
            realm: realm.into(),
            service: service.into(),
            issuer: issuer.into(),
            jwks_path: jwks,
            root_bundle_path: None,
            at: format!("auth.token.external[{issuer}] (line 7)"),
        }
    }

    fn jwks_of(dir: &std::path::Path, name: &str, key: &SigningKey) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, key.key_set().to_jwks()).unwrap();
        path
    }

    #[test]
    fn every_external_issuer_from_its_files_for_its_own_audience() {
        let dir = tempfile::tempdir().unwrap();
        let (corp, _) = SigningKey::generate().unwrap();
        let (eu, _) = SigningKey::generate().unwrap();
        let (ours, _) = SigningKey::generate().unwrap();
        let settings = TokenSettings {
            external: vec![
                external(
                    "corp-auth",
                    "registry.example",
                    "",
                    Some(jwks_of(dir.path(), "corp.json", &corp)),
                ),
                external(
                    "eu-auth",
                    "harbor-eu",
                    "https://eu.example/token",
                    Some(jwks_of(dir.path(), "eu.json", &eu)),
                ),
            ],
            ..TokenSettings::default()
        };
        // The first record with a realm, with its service.
        assert_eq!(
            settings.challenge_target(),
            ("https://eu.example/token", "harbor-eu")
        );
        let verifier = settings.verifier(Some(&ours)).unwrap();
        let ok = |t: &str| verifier.verify(t, NOW).map(|c| c.registered.iss);
        assert_eq!(
            ok(&theirs(&corp, "corp-auth", "registry.example")).unwrap(),
            "corp-auth"
        );
        assert_eq!(ok(&theirs(&eu, "eu-auth", "harbor-eu")).unwrap(), "eu-auth");
        assert_eq!(ok(&own_token(&ours, "ringyard")).unwrap(), "ringyard");
        // Each for its own audience only: not another issuer's, not ours.
        for t in [
            theirs(&corp, "corp-auth", "harbor-eu"),
            theirs(&eu, "eu-auth", "registry.example"),
            theirs(&eu, "eu-auth", "ringyard"),
            own_token(&ours, "harbor-eu"),
        ] {
            assert_eq!(ok(&t).unwrap_err(), TokenError::WrongAudience);
        }
        // One issuer's key does not speak for another.
        assert_eq!(
            ok(&theirs(&corp, "eu-auth", "harbor-eu")).unwrap_err(),
            TokenError::UnknownKey
        );
        assert_eq!(
            ok(&theirs(&eu, "unknown", "harbor-eu")).unwrap_err(),
            TokenError::WrongIssuer
        );

        // Without our key, ours are refused; without a realm anywhere, the challenge is ours.
        let verifier = settings.verifier(None).unwrap();
        assert_eq!(
            verifier
                .verify(&own_token(&ours, "ringyard"), NOW)
                .unwrap_err(),
            TokenError::WrongIssuer
        );
        let mut quiet = settings.clone();
        quiet.external[1].realm.clear();
        quiet.realm = "https://registry.example/token".into();
        assert_eq!(
            quiet.challenge_target(),
            ("https://registry.example/token", "ringyard")
        );
    }

    #[test]
    fn what_cannot_be_served_is_refused_naming_the_record_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (corp, _) = SigningKey::generate().unwrap();
        let jwks = jwks_of(dir.path(), "corp.json", &corp);
        let mut settings = TokenSettings {
            external: vec![external("corp-auth", "ringyard", "", Some(jwks.clone()))],
            ..TokenSettings::default()
        };
        let err = settings.check(false).unwrap_err().to_string();
        assert!(
            err.contains("no auth.token.external record has a realm"),
            "{err}"
        );
        settings.check(true).unwrap();
        settings.external[0].realm = "https://auth.example/token".into();
        settings.check(false).unwrap();
        // Named like our own issuer: refused when ours is on.
        settings.external[0].issuer = "ringyard".into();
        let err = settings.check(true).unwrap_err().to_string();
        assert!(
            err.contains("auth.token.external[corp-auth] (line 7)") && err.contains("\"ringyard\""),
            "{err}"
        );
        settings.check(false).unwrap();

        let load_err = |ext: ExternalIssuerSettings| ext.load().unwrap_err().to_string();
        let err = load_err(external("a", "s", "", None));
        assert!(
            err.starts_with("auth.token.external[a] (line 7): needs jwks"),
            "{err}"
        );
        let missing = dir.path().join("missing.json");
        let err = load_err(external("b", "s", "", Some(missing.clone())));
        assert!(
            err.starts_with("auth.token.external[b] (line 7): ")
                && err.contains(&missing.display().to_string()),
            "{err}"
        );
        std::fs::write(&jwks, "{}").unwrap();
        let err = load_err(external("c", "s", "", Some(jwks.clone())));
        assert!(err.contains("corp.json"), "{err}");
        std::fs::write(&jwks, r#"{"keys": [{"kty": "oct", "k": "AAAA"}]}"#).unwrap();
        let err = load_err(external("d", "s", "", Some(jwks.clone())));
        assert!(err.contains("corp.json: the JWKS has no EC P-256"), "{err}");
    }
}
