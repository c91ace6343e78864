//! Refresh tokens: what `docker login` stores as its identity token (GET `/token` with
//! `offline_token=true`, or POST with `access_type=offline`) and trades back with
//! `grant_type=refresh_token` for access tokens.
//!
//! A refresh token is a JWT signed with our key, with header `typ` [`REFRESH_TYP`] so that it
//! is never taken for an access token (nor the reverse), naming the subject, the service (its
//! audience, as the spec requires), the client and a credential version. Being signed, it
//! needs no table and works on every node holding the key; its limits are the expiry and the
//! checks the token service makes when one is used: the subject must still exist and its
//! credential version (for instance a hash of the user's htpasswd line, or of a robot token's
//! record) must be unchanged, so a changed password or a removed user ends every refresh token
//! issued before.

use super::error::{KeyError, TokenError};
use super::jws;
use super::jwt::{verify_for, HasRegistered, Kind, Registered, TrustedIssuer};
use super::keys::SigningKey;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The header `typ` of a refresh token.
pub const REFRESH_TYP: &str = "ringyard-refresh+jwt";

/// How long a refresh token lives unless configured: a `docker login` lasts this long.
pub const DEFAULT_REFRESH_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaims {
    #[serde(flatten)]
    pub registered: Registered,
    /// The `client_id` it was issued to (docker sends `docker`); for the audit trail.
    pub client_id: String,
    /// The caller's credential version at issue time; compared when the token is used.
    pub cred: String,
}

impl HasRegistered for RefreshClaims {
    fn registered(&self) -> &Registered {
        &self.registered
    }
}

/// What a refresh token is issued for.
#[derive(Debug, Clone, Copy)]
pub struct RefreshFor<'a> {
    pub subject: &'a str,
    pub service: &'a str,
    pub client_id: &'a str,
    pub credential_version: &'a str,
}

/// Issues a refresh token.
pub fn issue_refresh(
    key: &SigningKey,
    issuer: &str,
    what: RefreshFor<'_>,
    now: i64,
    lifetime: Duration,
) -> Result<String, KeyError> {
    let claims = RefreshClaims {
        registered: Registered::new(issuer, what.subject, what.service, now, lifetime),
        client_id: what.client_id.to_string(),
        cred: what.credential_version.to_string(),
    };
    jws::sign(key, REFRESH_TYP, &claims)
}

/// Verifies a refresh token presented for `service`: ours (`own`), of the refresh type, for
/// that service, in date. The caller then checks the subject and `cred`.
pub fn verify_refresh(
    own: &TrustedIssuer,
    service: &str,
    token: &str,
    now: i64,
) -> Result<RefreshClaims, TokenError> {
    verify_for(token, Kind::Refresh, own, service, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::jwt::tests::ours;
    use crate::auth::token::jwt::Verifier;

    const NOW: i64 = 1_796_608_265;

    fn what() -> RefreshFor<'static> {
        RefreshFor {
            subject: "alice",
            service: "registry",
            client_id: "docker",
            credential_version: "v1",
        }
    }

    #[test]
    fn round_trip_and_limits() {
        let (key, _) = SigningKey::generate().unwrap();
        let own = TrustedIssuer::own("ringyard", "registry", &key);
        let life = Duration::from_secs(3600);
        let t = issue_refresh(&key, "ringyard", what(), NOW, life).unwrap();
        let claims = verify_refresh(&own, "registry", &t, NOW + 10).unwrap();
        assert_eq!(claims.registered.sub, "alice");
        assert_eq!(claims.client_id, "docker");
        assert_eq!(claims.cred, "v1");
        assert_eq!(claims.registered.exp, NOW + 3600);
        assert_eq!(
            verify_refresh(&own, "other", &t, NOW).unwrap_err(),
            TokenError::WrongAudience
        );
        assert_eq!(
            verify_refresh(&own, "registry", &t, NOW + 3600 + 61).unwrap_err(),
            TokenError::Expired
        );
        let (other, _) = SigningKey::generate().unwrap();
        let foreign = issue_refresh(&other, "ringyard", what(), NOW, life).unwrap();
        assert_eq!(
            verify_refresh(&own, "registry", &foreign, NOW).unwrap_err(),
            TokenError::UnknownKey
        );
    }

    #[test]
    fn refresh_and_access_tokens_do_not_stand_in_for_each_other() {
        let (key, _) = SigningKey::generate().unwrap();
        let own = TrustedIssuer::own("ringyard", "registry", &key);
        let refresh = issue_refresh(&key, "ringyard", what(), NOW, DEFAULT_REFRESH_EXPIRY).unwrap();
        let verifier = Verifier::new(vec![own.clone()]);
        assert_eq!(
            verifier.verify(&refresh, NOW).unwrap_err(),
            TokenError::WrongType
        );
        let access = ours(&key, "registry");
        // An access token lacks the refresh claims, and its typ is wrong anyway.
        assert!(verify_refresh(&own, "registry", &access, NOW).is_err());
    }
}
