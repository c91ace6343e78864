//! The settings the token machinery needs, as a plain struct until the configuration layer
//! carries them. Intended configuration keys (file / flag):
//!
//! ```yaml
//! auth:
//!   token:
//!     realm: https://registry.example/token   # the challenge's realm: where docker asks
//!     service: registry.example              # the audience (`aud`) of our tokens
//!     issuer: ringyard                       # the `iss` of our tokens
//!     expiry: 5m                             # access token lifetime
//!     refresh_expiry: 30d                    # refresh token (docker's identity token)
//!     key: /etc/ringyard/token-key.pem       # PKCS#8 P-256; default <root>/token-signing-key.pem
//!     external:                              # trust another issuer instead
//!       realm: https://auth.example/token
//!       service: registry.example
//!       issuer: corp-auth
//!       jwks: /etc/ringyard/corp-auth.jwks.json     # one of jwks / rootcertbundle, or both
//!       rootcertbundle: /etc/ringyard/corp-auth-roots.pem
//! ```

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
    /// Our audience: the `service` docker asks tokens for, and the `aud` we accept.
    pub service: String,
    /// The `iss` of our tokens.
    pub issuer: String,
    /// Access token lifetime (default 5 minutes).
    pub expiry: Duration,
    /// Refresh token lifetime (default 30 days).
    pub refresh_expiry: Duration,
    /// `None`: generated into the data directory on first start.
    pub key_path: Option<PathBuf>,
    pub external: Option<ExternalIssuerSettings>,
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
            external: None,
        }
    }
}

/// `auth.token.external`: an issuer whose tokens are trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIssuerSettings {
    /// Its token endpoint, which our challenges name instead of ours.
    pub realm: String,
    /// The audience its tokens carry for this registry.
    pub service: String,
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// Its keys (EC P-256 and RSA signature keys are used, others skipped).
    pub jwks_path: Option<PathBuf>,
    /// Roots for tokens that carry their certificate chain in `x5c`.
    pub root_bundle_path: Option<PathBuf>,
}

impl ExternalIssuerSettings {
    /// Reads the JWKS and root bundle (blocking file IO: at start-up). At least one of them
    /// must be configured and hold a usable key or certificate.
    pub fn load(&self) -> Result<TrustedIssuer, KeyError> {
        let read = |path: &PathBuf| std::fs::read(path).map_err(|e| KeyError::io(path, e));
        let in_file =
            |path: &PathBuf, e: KeyError| KeyError::invalid(format!("{}: {e}", path.display()));
        let keys = match &self.jwks_path {
            Some(path) => KeySet::from_jwks(&read(path)?).map_err(|e| in_file(path, e))?,
            None => KeySet::new(),
        };
        let roots = match &self.root_bundle_path {
            Some(path) => Some(RootStore::from_pem(&read(path)?).map_err(|e| in_file(path, e))?),
            None => None,
        };
        if keys.is_empty() && roots.is_none() {
            return Err(KeyError::invalid(
                "auth.token.external needs a jwks file or a rootcertbundle",
            ));
        }
        Ok(TrustedIssuer {
            issuer: self.issuer.clone(),
            keys,
            roots,
            algs: vec![Alg::Es256, Alg::Rs256],
        })
    }
}

impl TokenSettings {
    /// The realm and service a challenge names: the external issuer's when there is one.
    pub fn challenge_target(&self) -> (&str, &str) {
        match &self.external {
            Some(ext) => (&ext.realm, &ext.service),
            None => (&self.realm, &self.service),
        }
    }

    /// The verifier of presented tokens: our own (when `own` is given, i.e. the built-in
    /// service is on) and the external issuer's, for the audience the challenge names.
    pub fn verifier(&self, own: Option<&SigningKey>) -> Result<Verifier, KeyError> {
        let mut issuers = Vec::new();
        if let Some(key) = own {
            issuers.push(TrustedIssuer::own(&self.issuer, key));
        }
        if let Some(ext) = &self.external {
            issuers.push(ext.load()?);
        }
        Ok(Verifier::new(self.challenge_target().1, issuers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::jwt::tests::{claims_json, forge, ours as own_token, signer, NOW};

    #[test]
    fn external_issuer_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let (theirs, _) = SigningKey::generate().unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, theirs.key_set().to_jwks()).unwrap();
        let (ours, _) = SigningKey::generate().unwrap();
        let settings = TokenSettings {
            external: Some(ExternalIssuerSettings {
                realm: "https://auth.example/token".into(),
                service: "registry.example".into(),
                issuer: "corp-auth".into(),
                jwks_path: Some(jwks.clone()),
                root_bundle_path: None,
            }),
            ..TokenSettings::default()
        };
        assert_eq!(
            settings.challenge_target(),
            ("https://auth.example/token", "registry.example")
        );
        let verifier = settings.verifier(Some(&ours)).unwrap();
        let header = serde_json::json!({"alg": "ES256", "kid": theirs.kid()});
        let t = forge(
            &header,
            &claims_json("corp-auth", "registry.example", NOW),
            signer(&theirs),
        );
        assert!(verifier.verify(&t, NOW).is_ok());
        // Ours for the external audience is accepted too: same audience, our own issuer.
        assert!(verifier
            .verify(&own_token(&ours, "registry.example"), NOW)
            .is_ok());

        let mut broken = settings.clone();
        let ext = broken.external.as_mut().unwrap();
        ext.jwks_path = None;
        assert!(broken.verifier(None).is_err(), "neither jwks nor roots");
        std::fs::write(&jwks, "{}").unwrap();
        let err = settings.verifier(None).unwrap_err().to_string();
        assert!(err.contains("jwks.json"), "{err}");
    }
}
