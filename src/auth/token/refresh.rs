//! Refresh tokens: what `docker login` stores as its identity token (GET `/token` with
//! `offline_token=true`, or POST with `access_type=offline`) and trades back with
//! `grant_type=refresh_token` for access tokens.
//!
//! A refresh token is a JWT signed with our key, with header `typ` [`REFRESH_TYP`] so that it
//! is never taken for an access token (nor the reverse), naming the subject, the service (its
//! audience, as the spec requires), the client, the kind of subject ([`SubjectKind`], claim
//! `kind`) and a credential version (claim `cred`). Being signed, it needs no table and works
//! on every node holding the key; its limits are the expiry and the checks the token service
//! makes when one is used: the subject must still exist and its credential version must be
//! unchanged, so a changed password, a removed user, or a robot token revoked, expired or
//! created again under the same name ends every refresh token issued before.
//!
//! - **The kind is signed in.** An htpasswd user and a robot token may have the same name;
//!   `kind` says which one a refresh token stands for, so that neither can ever be taken for
//!   the other. A token without the claim (issued before robots had refresh tokens) is a
//!   user's; an unknown kind does not verify.
//! - **It never outlives its credential**: `exp` is the earlier of the configured lifetime
//!   and the credential's own expiry ([`Binding::not_after`], a robot token's).
//! - **The refresh grant rotates without revoking.** `grant_type=refresh_token` answers with
//!   a new refresh token (fresh expiry, same subject, kind, credential version and client), and
//!   the presented one stays valid until its own expiry: docker keeps the identity token of
//!   `docker login` in its config and never stores a rotated one, so revoking the old one would
//!   log docker out after its first refresh. Clients that do store the new one keep a session
//!   alive past the first token's expiry, for as long as the credential holds. Nothing is lost
//!   by not revoking: the old token can do nothing the new one cannot, and both end together
//!   when the credential changes.

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

/// Whose credentials a refresh token stands for (claim `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    /// An htpasswd user; also a token without the claim.
    #[default]
    User,
    /// A robot token, by its name.
    Robot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaims {
    #[serde(flatten)]
    pub registered: Registered,
    /// The `client_id` it was issued to (docker sends `docker`); for the audit trail.
    pub client_id: String,
    #[serde(default)]
    pub kind: SubjectKind,
    /// The caller's credential version at issue time; compared when the token is used.
    pub cred: String,
}

/// What a refresh token is bound to: the subject's kind and credential version, and the
/// latest its validity may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub kind: SubjectKind,
    pub cred: String,
    /// Unix seconds: the credential's own expiry (a robot token's); None: it has none.
    pub not_after: Option<i64>,
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
    pub binding: &'a Binding,
}

/// Issues a refresh token.
pub fn issue_refresh(
    key: &SigningKey,
    issuer: &str,
    what: RefreshFor<'_>,
    now: i64,
    lifetime: Duration,
) -> Result<String, KeyError> {
    let mut registered = Registered::new(issuer, what.subject, what.service, now, lifetime);
    if let Some(limit) = what.binding.not_after {
        registered.exp = registered.exp.min(limit);
    }
    let claims = RefreshClaims {
        registered,
        client_id: what.client_id.to_string(),
        kind: what.binding.kind,
        cred: what.binding.cred.clone(),
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

    fn user() -> Binding {
        Binding {
            kind: SubjectKind::User,
            cred: "v1".into(),
            not_after: None,
        }
    }

    fn what(binding: &Binding) -> RefreshFor<'_> {
        RefreshFor {
            subject: "alice",
            service: "registry",
            client_id: "docker",
            binding,
        }
    }

    #[test]
    fn round_trip_and_limits() {
        let (key, _) = SigningKey::generate().unwrap();
        let own = TrustedIssuer::own("ringyard", "registry", &key);
        let life = Duration::from_secs(3600);
        let t = issue_refresh(&key, "ringyard", what(&user()), NOW, life).unwrap();
        let claims = verify_refresh(&own, "registry", &t, NOW + 10).unwrap();
        assert_eq!(claims.registered.sub, "alice");
        assert_eq!(claims.client_id, "docker");
        assert_eq!(claims.kind, SubjectKind::User);
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
        let foreign = issue_refresh(&other, "ringyard", what(&user()), NOW, life).unwrap();
        assert_eq!(
            verify_refresh(&own, "registry", &foreign, NOW).unwrap_err(),
            TokenError::UnknownKey
        );
    }

    #[test]
    fn refresh_and_access_tokens_do_not_stand_in_for_each_other() {
        let (key, _) = SigningKey::generate().unwrap();
        let own = TrustedIssuer::own("ringyard", "registry", &key);
        let refresh =
            issue_refresh(&key, "ringyard", what(&user()), NOW, DEFAULT_REFRESH_EXPIRY).unwrap();
        let verifier = Verifier::new(vec![own.clone()]);
        assert_eq!(
            verifier.verify(&refresh, NOW).unwrap_err(),
            TokenError::WrongType
        );
        let access = ours(&key, "registry");
        // An access token lacks the refresh claims, and its typ is wrong anyway.
        assert!(verify_refresh(&own, "registry", &access, NOW).is_err());
    }

    #[test]
    fn a_robots_token_says_so_and_ends_with_the_robot() {
        let (key, _) = SigningKey::generate().unwrap();
        let own = TrustedIssuer::own("ringyard", "registry", &key);
        let life = Duration::from_secs(3600);
        let robot = Binding {
            kind: SubjectKind::Robot,
            cred: "r1".into(),
            not_after: Some(NOW + 600),
        };
        let t = issue_refresh(&key, "ringyard", what(&robot), NOW, life).unwrap();
        let claims = verify_refresh(&own, "registry", &t, NOW).unwrap();
        assert_eq!(claims.kind, SubjectKind::Robot);
        assert_eq!(
            claims.registered.exp,
            NOW + 600,
            "capped at the robot's expiry"
        );
        let later = Binding {
            not_after: Some(NOW + 7200),
            ..robot.clone()
        };
        let t = issue_refresh(&key, "ringyard", what(&later), NOW, life).unwrap();
        let claims = verify_refresh(&own, "registry", &t, NOW).unwrap();
        assert_eq!(
            claims.registered.exp,
            NOW + 3600,
            "the lifetime when earlier"
        );
        // The claim is written as a word.
        let payload = t.split('.').nth(1).unwrap();
        let payload = jws::b64url_decode(payload).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(json["kind"], "robot");
    }

    #[test]
    fn the_kind_claim_defaults_to_user_and_refuses_the_unknown() {
        let (key, _) = SigningKey::generate().unwrap();
        let own = TrustedIssuer::own("ringyard", "registry", &key);
        let claims = |kind: Option<&str>| {
            let mut c = serde_json::json!({
                "iss": "ringyard", "sub": "alice", "aud": "registry",
                "exp": NOW + 60, "nbf": NOW, "iat": NOW, "jti": "x",
                "client_id": "docker", "cred": "v1",
            });
            if let Some(k) = kind {
                c["kind"] = k.into();
            }
            let t = jws::sign(&key, REFRESH_TYP, &c).unwrap();
            verify_refresh(&own, "registry", &t, NOW)
        };
        assert_eq!(claims(None).unwrap().kind, SubjectKind::User);
        assert_eq!(claims(Some("robot")).unwrap().kind, SubjectKind::Robot);
        assert!(claims(Some("admin")).is_err());
    }
}
