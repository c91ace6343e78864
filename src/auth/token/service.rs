//! The token machinery as the running registry holds it: our signing key (when the built-in
//! service is on), the [`Verifier`] of presented tokens (ours and an external issuer's), the
//! realm and service a challenge names, and one [`VerifiedCache`] per event loop.
//!
//! Built once at start-up ([`TokenService::start`], which does the blocking file IO of the
//! key and the external issuer's files), then only read. The cache is a `thread_local`, so the
//! Bearer path takes no lock; it is tagged with the service it belongs to, because a cache is
//! only valid for the verifier that filled it.

use super::cache::VerifiedCache;
use super::challenge::{bearer, ChallengeError};
use super::error::{KeyError, TokenError};
use super::jwt::{issue, Claims, IssuedToken, TrustedIssuer, Verifier};
use super::keys::{load_or_create, SigningKey};
use super::refresh::{issue_refresh, verify_refresh, Binding, RefreshClaims, RefreshFor};
use super::scope::Scope;
use super::settings::{ExternalIssuerSettings, TokenSettings};
use crate::config::Config;
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Verified tokens one event loop remembers. docker reuses a token for a whole pull, so a few
/// thousand cover every client a loop serves at once.
const CACHE_CAPACITY: usize = 4096;

thread_local! {
    /// The id of the [`TokenService`] this loop's cache was filled for, and the cache.
    static VERIFIED: RefCell<(u64, VerifiedCache)> =
        RefCell::new((0, VerifiedCache::new(CACHE_CAPACITY)));
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What `auth.token.*` configured, ready to serve.
pub struct TokenService {
    pub settings: TokenSettings,
    /// Our key: None when only an external issuer is trusted (`auth.token.enabled: false`).
    key: Option<SigningKey>,
    own: Option<TrustedIssuer>,
    verifier: Verifier,
    /// Tags the per-loop caches (see [`VERIFIED`]).
    id: u64,
}

impl TokenSettings {
    /// `auth.token.*` of `cfg`; None when neither the built-in service nor an external issuer
    /// is configured.
    pub fn from_config(cfg: &Config) -> Option<TokenSettings> {
        if !cfg.token_enabled && cfg.token_external.is_empty() {
            return None;
        }
        let external = cfg
            .token_external
            .iter()
            .map(|ext| ExternalIssuerSettings {
                realm: ext.realm.clone().unwrap_or_default(),
                service: ext
                    .service
                    .clone()
                    .unwrap_or_else(|| cfg.token_service.clone()),
                issuer: ext.issuer.clone(),
                jwks_path: ext.jwks.clone(),
                root_bundle_path: ext.rootcertbundle.clone(),
                at: ext.at.clone(),
            })
            .collect();
        Some(TokenSettings {
            realm: cfg.token_realm.clone(),
            service: cfg.token_service.clone(),
            issuer: cfg.token_issuer.clone(),
            expiry: cfg.token_expiry,
            refresh_expiry: cfg.token_refresh_expiry,
            key_path: cfg.token_key.clone(),
            external,
        })
    }
}

impl TokenService {
    /// Loads (or on first start creates, under `data_dir`) our key when `enabled`, and the
    /// external issuers' keys. Blocking file IO: at start-up only.
    pub fn start(
        settings: TokenSettings,
        enabled: bool,
        data_dir: &Path,
    ) -> Result<TokenService, KeyError> {
        settings.check(enabled)?;
        let key = match enabled {
            true => Some(load_or_create(settings.key_path.as_deref(), data_dir)?),
            false => None,
        };
        let verifier = settings.verifier(key.as_ref())?;
        let own = key
            .as_ref()
            .map(|k| TrustedIssuer::own(&settings.issuer, &settings.service, k));
        Ok(TokenService {
            settings,
            key,
            own,
            verifier,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Whether `/token` is served here (our key is loaded).
    pub fn serves_tokens(&self) -> bool {
        self.key.is_some()
    }

    /// Sets the realm from the address the registry listens on when none was configured.
    pub fn default_realm(&mut self, host_port: &str, tls: bool) {
        if self.settings.realm.is_empty() {
            let scheme = if tls { "https" } else { "http" };
            self.settings.realm = format!("{scheme}://{host_port}/token");
        }
    }

    /// Our service name: the audience of our tokens and the only `service` `/token` serves.
    pub fn service(&self) -> &str {
        &self.settings.service
    }

    /// The `WWW-Authenticate` value of a 401: `scope` is what the request needs.
    pub fn challenge(&self, scope: Option<&str>, error: Option<ChallengeError>) -> String {
        let (realm, service) = self.settings.challenge_target();
        bearer(realm, service, scope, error)
    }

    /// The claims of a presented access token, from this loop's cache when it was verified
    /// here before.
    pub fn verify(&self, token: &str, now: i64) -> Result<Rc<Claims>, TokenError> {
        VERIFIED.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.0 != self.id {
                *cell = (self.id, VerifiedCache::new(CACHE_CAPACITY));
            }
            cell.1.verify(&self.verifier, token, now)
        })
    }

    fn key(&self) -> Result<&SigningKey, KeyError> {
        self.key
            .as_ref()
            .ok_or_else(|| KeyError::invalid("the built-in token service is off"))
    }

    /// An access token for `subject` granting `access`.
    pub fn issue(
        &self,
        subject: &str,
        access: Vec<Scope>,
        now: i64,
    ) -> Result<IssuedToken, KeyError> {
        let s = &self.settings;
        issue(
            self.key()?,
            &s.issuer,
            subject,
            &s.service,
            access,
            now,
            s.expiry,
        )
    }

    /// A refresh token for `subject`, valid while its credential stays what `binding` names
    /// (and not past its `not_after`).
    pub fn issue_refresh(
        &self,
        subject: &str,
        client_id: &str,
        binding: &Binding,
        now: i64,
    ) -> Result<String, KeyError> {
        let s = &self.settings;
        let what = RefreshFor {
            subject,
            service: &s.service,
            client_id,
            binding,
        };
        issue_refresh(self.key()?, &s.issuer, what, now, s.refresh_expiry)
    }

    /// A presented refresh token's claims (ours, for our service, in date); the caller checks
    /// the subject's credential version.
    pub fn verify_refresh(&self, token: &str, now: i64) -> Result<RefreshClaims, TokenError> {
        let own = self.own.as_ref().ok_or(TokenError::WrongIssuer)?;
        verify_refresh(own, &self.settings.service, token, now)
    }

    /// Our public key as a JWKS document.
    pub fn jwks(&self) -> Option<Vec<u8>> {
        self.key.as_ref().map(|k| k.key_set().to_jwks())
    }
}

/// Seconds since the epoch, as the token code takes time.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(dir: &Path) -> TokenService {
        let settings = TokenSettings {
            service: "registry".into(),
            ..TokenSettings::default()
        };
        TokenService::start(settings, true, dir).unwrap()
    }

    #[test]
    fn issues_what_it_verifies_and_caches_per_service() {
        let dir = tempfile::tempdir().unwrap();
        let mut svc = service(dir.path());
        svc.default_realm("127.0.0.1:5000", false);
        assert_eq!(
            svc.challenge(Some("repository:a:pull"), None),
            r#"Bearer realm="http://127.0.0.1:5000/token",service="registry",scope="repository:a:pull""#
        );
        let t = now();
        let token = svc.issue("alice", vec![], t).unwrap().token;
        assert_eq!(svc.verify(&token, t).unwrap().registered.sub, "alice");
        // The key was written into the data directory and is read back by a second start;
        // its cache is not the first one's.
        let again = service(dir.path());
        assert_ne!(again.id, svc.id);
        assert!(again.verify(&token, t).is_ok());
        let other = tempfile::tempdir().unwrap();
        let foreign = service(other.path());
        assert_eq!(
            foreign.verify(&token, t).unwrap_err(),
            TokenError::UnknownKey
        );
        let binding = Binding {
            kind: super::super::refresh::SubjectKind::User,
            cred: "v1".into(),
            not_after: None,
        };
        let refresh = svc.issue_refresh("alice", "docker", &binding, t).unwrap();
        assert_eq!(svc.verify_refresh(&refresh, t).unwrap().cred, "v1");
        assert!(svc.verify(&refresh, t).is_err(), "not an access token");
    }
}
