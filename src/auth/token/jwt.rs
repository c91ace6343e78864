//! Access tokens: issuing ours, verifying ours and those of the external issuers we trust.
//!
//! Verification goes: size and shape ([`jws::parse`]: the `alg` is ES256 or RS256 or the
//! token is refused), the issuer named by `iss` (only keys of that issuer are tried), its key
//! by `x5c` chain or `kid`, the key's own algorithm equal to `alg`, the signature, and only
//! then the claims of a now-authentic token: type, the audience of *that* issuer, `exp` and
//! `nbf` with [`LEEWAY_SECS`] either way, as distribution does.
//!
//! The audience belongs to the issuer, not to the verifier: each token server trusted here
//! names this registry its own way (`registry.example` for one, `harbor-eu` for another), and
//! a token an issuer made for someone else's audience must not pass because another issuer
//! happens to use that name for us.

use super::error::{KeyError, TokenError};
use super::jws;
use super::keys::{Alg, KeySet, PublicKey, SigningKey};
use super::scope::Scope;
use super::x5c::{self, RootStore};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: i64 = 60;

/// How long an access token lives unless configured.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// The `typ` of our access tokens.
pub const ACCESS_TYP: &str = "JWT";

/// `aud`: one string or an array of them (RFC 7519 §4.1.3); written as a string, as
/// distribution's clients and registries expect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Audience(pub Vec<String>);

impl Audience {
    pub fn contains(&self, audience: &str) -> bool {
        self.0.iter().any(|a| a == audience)
    }
}

impl Serialize for Audience {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(Audience(match OneOrMany::deserialize(d)? {
            OneOrMany::One(a) => vec![a],
            OneOrMany::Many(a) => a,
        }))
    }
}

/// The registered claims every token of ours has; an external token must have `iss`, `aud`
/// and `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    #[serde(default)]
    pub nbf: i64,
    #[serde(default)]
    pub iat: i64,
    #[serde(default)]
    pub jti: String,
}

impl Registered {
    /// `exp` and `nbf` against `now`, with [`LEEWAY_SECS`] either way.
    pub fn check_time(&self, now: i64) -> Result<(), TokenError> {
        if now > self.exp.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
        if now < self.nbf.saturating_sub(LEEWAY_SECS) {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }

    pub(crate) fn new(iss: &str, sub: &str, aud: &str, now: i64, lifetime: Duration) -> Self {
        Registered {
            iss: iss.to_string(),
            sub: sub.to_string(),
            aud: Audience(vec![aud.to_string()]),
            exp: now.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)),
            nbf: now,
            iat: now,
            jti: random_id(),
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(flatten)]
    pub registered: Registered,
    #[serde(default)]
    pub access: Vec<Scope>,
}

/// Claims types that [`verify_as`] can check.
pub(crate) trait HasRegistered: DeserializeOwned {
    fn registered(&self) -> &Registered;
}

impl HasRegistered for Claims {
    fn registered(&self) -> &Registered {
        &self.registered
    }
}

/// 16 random bytes, base64url: a `jti`.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // The OS random source does not fail on Linux once booted; a zero id would still be a
    // valid (if not unique) `jti`, which nothing here relies on.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    jws::b64url(&bytes)
}

/// A token just issued, with what the response body needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: i64,
}

/// Issues an access token for `subject` at `audience` (the service) granting `access`.
pub fn issue(
    key: &SigningKey,
    issuer: &str,
    subject: &str,
    audience: &str,
    access: Vec<Scope>,
    now: i64,
    lifetime: Duration,
) -> Result<IssuedToken, KeyError> {
    let claims = Claims {
        registered: Registered::new(issuer, subject, audience, now, lifetime),
        access,
    };
    Ok(IssuedToken {
        token: jws::sign(key, ACCESS_TYP, &claims)?,
        expires_in: lifetime.as_secs(),
        issued_at: now,
    })
}

/// An issuer whose tokens are trusted, for which audience, and how its keys are found.
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// The `aud` its tokens must carry: the name it gives this registry.
    pub audience: String,
    /// Keys by `kid`.
    pub keys: KeySet,
    /// Roots for tokens carrying `x5c`; `None`: such tokens are refused.
    pub roots: Option<RootStore>,
    /// Algorithms accepted from this issuer (ours: `ES256` only).
    pub algs: Vec<Alg>,
}

impl TrustedIssuer {
    /// Ourselves: our key, ES256 only, our service as audience.
    pub fn own(issuer: &str, audience: &str, key: &SigningKey) -> Self {
        TrustedIssuer {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            keys: key.key_set(),
            roots: None,
            algs: vec![Alg::Es256],
        }
    }

    fn key_for(&self, header: &jws::Header, now: i64) -> Result<PublicKey, TokenError> {
        if let Some(chain) = &header.x5c {
            let roots = self
                .roots
                .as_ref()
                .ok_or_else(|| TokenError::UntrustedChain("no root bundle configured".into()))?;
            return x5c::leaf_key(roots, chain, now);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        self.keys.get(kid).cloned().ok_or(TokenError::UnknownKey)
    }
}

/// What a token's header `typ` may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Absent, `JWT` or `at+jwt` (any case, RFC 7515 §4.1.9).
    Access,
    /// Exactly [`super::refresh::REFRESH_TYP`].
    Refresh,
}

impl Kind {
    fn accepts(self, typ: Option<&str>) -> bool {
        match self {
            Kind::Access => typ.is_none_or(|t| {
                t.eq_ignore_ascii_case(ACCESS_TYP) || t.eq_ignore_ascii_case("at+jwt")
            }),
            Kind::Refresh => typ == Some(super::refresh::REFRESH_TYP),
        }
    }
}

/// Verifies a token of `kind` from one of `issuers` (the one its `iss` names), for that
/// issuer's audience, at `now`.
pub(crate) fn verify_as<C: HasRegistered>(
    token: &str,
    kind: Kind,
    issuers: &[TrustedIssuer],
    now: i64,
) -> Result<C, TokenError> {
    let (parsed, claims) = parse_claims::<C>(token)?;
    let issuer = issuers
        .iter()
        .find(|i| i.issuer == claims.registered().iss)
        .ok_or(TokenError::WrongIssuer)?;
    check(
        &parsed,
        claims.registered(),
        kind,
        issuer,
        &issuer.audience,
        now,
    )?;
    Ok(claims)
}

/// Verifies a token of `kind` from `issuer` alone, for `audience` rather than the issuer's
/// own (a refresh token names the service it was asked for).
pub(crate) fn verify_for<C: HasRegistered>(
    token: &str,
    kind: Kind,
    issuer: &TrustedIssuer,
    audience: &str,
    now: i64,
) -> Result<C, TokenError> {
    let (parsed, claims) = parse_claims::<C>(token)?;
    if claims.registered().iss != issuer.issuer {
        return Err(TokenError::WrongIssuer);
    }
    check(&parsed, claims.registered(), kind, issuer, audience, now)?;
    Ok(claims)
}

/// The token's parts and its claims, not yet trusted.
fn parse_claims<C: HasRegistered>(token: &str) -> Result<(jws::Unverified<'_>, C), TokenError> {
    let parsed = jws::parse(token)?;
    let claims: C =
        serde_json::from_slice(&parsed.payload).map_err(|_| TokenError::Malformed("claims"))?;
    Ok((parsed, claims))
}

/// The signature by `issuer`'s key, then the claims of the now-authentic token.
fn check(
    parsed: &jws::Unverified<'_>,
    registered: &Registered,
    kind: Kind,
    issuer: &TrustedIssuer,
    audience: &str,
    now: i64,
) -> Result<(), TokenError> {
    if !issuer.algs.contains(&parsed.alg) {
        return Err(TokenError::UnsupportedAlg(parsed.alg.name().to_string()));
    }
    let key = issuer.key_for(&parsed.header, now)?;
    if key.alg() != parsed.alg {
        return Err(TokenError::UnsupportedAlg(parsed.alg.name().to_string()));
    }
    if !key.verify(parsed.signing_input.as_bytes(), &parsed.signature) {
        return Err(TokenError::BadSignature);
    }
    if !kind.accepts(parsed.header.typ.as_deref()) {
        return Err(TokenError::WrongType);
    }
    if !registered.aud.contains(audience) {
        return Err(TokenError::WrongAudience);
    }
    registered.check_time(now)
}

/// Verifies access tokens from the trusted issuers (ourselves and the external ones), each
/// for its own audience.
#[derive(Debug, Clone)]
pub struct Verifier {
    issuers: Vec<TrustedIssuer>,
}

impl Verifier {
    /// `issuers` have distinct `iss` names (the configuration refuses twice the same): a token
    /// is only ever tried against the first of a name.
    pub fn new(issuers: Vec<TrustedIssuer>) -> Self {
        Verifier { issuers }
    }

    /// The verified claims (subject and access list), or why the token is refused.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        verify_as(token, Kind::Access, &self.issuers, now)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::auth::token::jws::b64url;
    use crate::auth::token::scope::{authorize, parse_scopes, Need};
    use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

    pub(crate) const NOW: i64 = 1_796_608_265;

    fn scopes(s: &str) -> Vec<Scope> {
        parse_scopes([s]).unwrap()
    }

    fn setup() -> (SigningKey, Verifier) {
        let (key, _) = SigningKey::generate().unwrap();
        let verifier = Verifier::new(vec![TrustedIssuer::own("ringyard", "registry", &key)]);
        (key, verifier)
    }

    fn token(key: &SigningKey, access: &str, now: i64, life: u64) -> String {
        issue(
            key,
            "ringyard",
            "alice",
            "registry",
            scopes(access),
            now,
            Duration::from_secs(life),
        )
        .unwrap()
        .token
    }

    /// An access token of ours for `audience`, granting nothing.
    pub(crate) fn ours(key: &SigningKey, audience: &str) -> String {
        issue(
            key,
            "ringyard",
            "alice",
            audience,
            vec![],
            NOW,
            DEFAULT_EXPIRY,
        )
        .unwrap()
        .token
    }

    /// Signs with one of our keys, for [`forge`].
    pub(crate) fn signer(key: &SigningKey) -> impl Fn(&[u8]) -> Vec<u8> + Copy + '_ {
        move |m| key.sign(m).unwrap()
    }

    /// A token with any header and claims, signed by `sign`.
    pub(crate) fn forge(
        header: &serde_json::Value,
        claims: &serde_json::Value,
        sign: impl Fn(&[u8]) -> Vec<u8>,
    ) -> String {
        let input = format!(
            "{}.{}",
            b64url(&serde_json::to_vec(header).unwrap()),
            b64url(&serde_json::to_vec(claims).unwrap())
        );
        let sig = sign(input.as_bytes());
        format!("{input}.{}", b64url(&sig))
    }

    /// An ES256 token of `key` under its own kid, claiming `iss` for `aud`: another issuer's.
    pub(crate) fn signed_by(key: &SigningKey, iss: &str, aud: &str) -> String {
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": key.kid()});
        forge(&header, &claims_json(iss, aud, NOW), signer(key))
    }

    pub(crate) fn claims_json(iss: &str, aud: &str, now: i64) -> serde_json::Value {
        serde_json::json!({
            "iss": iss, "sub": "bob", "aud": aud, "exp": now + 300, "nbf": now, "iat": now,
            "jti": "x", "access": [{"type": "repository", "name": "a", "actions": ["pull"]}]
        })
    }

    #[test]
    fn round_trip_gives_the_claims_and_the_access() {
        let (key, verifier) = setup();
        let issued = issue(
            &key,
            "ringyard",
            "alice",
            "registry",
            scopes("repository:a:pull,push"),
            NOW,
            DEFAULT_EXPIRY,
        )
        .unwrap();
        assert_eq!(issued.expires_in, 300);
        let claims = verifier.verify(&issued.token, NOW).unwrap();
        let r = &claims.registered;
        assert_eq!((r.iss.as_str(), r.sub.as_str()), ("ringyard", "alice"));
        assert_eq!(r.aud, Audience(vec!["registry".into()]));
        assert_eq!((r.exp, r.nbf, r.iat), (NOW + 300, NOW, NOW));
        assert_eq!(r.jti.len(), 22);
        assert_eq!(claims.access, scopes("repository:a:pull,push"));
        assert_eq!(
            authorize(&[Need::repository("a", "push")], &claims.access),
            Ok(())
        );
        assert!(authorize(&[Need::repository("b", "pull")], &claims.access).is_err());

        // The claims are the documented JWT shape, `aud` a plain string.
        let payload = jws::parse(&issued.token).unwrap().payload;
        let raw: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(raw["aud"], "registry");
        assert_eq!(
            raw["access"][0]["actions"],
            serde_json::json!(["pull", "push"])
        );
        let other = verifier.verify(&ours(&key, "registry"), NOW).unwrap();
        assert_ne!(other.registered.jti, r.jti);
        assert!(other.access.is_empty());
    }

    #[test]
    fn expiry_and_not_before_have_sixty_seconds_of_leeway() {
        let (key, verifier) = setup();
        let t = token(&key, "repository:a:pull", NOW, 300);
        assert!(verifier.verify(&t, NOW + 300 + 60).is_ok());
        assert_eq!(
            verifier.verify(&t, NOW + 300 + 61).unwrap_err(),
            TokenError::Expired
        );
        assert!(verifier.verify(&t, NOW - 60).is_ok());
        assert_eq!(
            verifier.verify(&t, NOW - 61).unwrap_err(),
            TokenError::NotYetValid
        );
        let future = token(&key, "repository:a:pull", NOW + 3600, 300);
        assert_eq!(
            verifier.verify(&future, NOW).unwrap_err(),
            TokenError::NotYetValid
        );
    }

    #[test]
    fn tampering_and_foreign_keys_are_refused() {
        let (key, verifier) = setup();
        let t = token(&key, "repository:a:pull", NOW, 300);
        let parts: Vec<&str> = t.split('.').collect();
        // The payload swapped for one granting push: the signature no longer matches.
        let mut claims: serde_json::Value =
            serde_json::from_slice(&jws::b64url_decode(parts[1]).unwrap()).unwrap();
        claims["access"][0]["actions"] = serde_json::json!(["pull", "push"]);
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64url(&serde_json::to_vec(&claims).unwrap()),
            parts[2]
        );
        assert_eq!(
            verifier.verify(&tampered, NOW).unwrap_err(),
            TokenError::BadSignature
        );
        // A signature bit flipped.
        let mut sig = jws::b64url_decode(parts[2]).unwrap();
        sig[10] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], b64url(&sig));
        assert_eq!(
            verifier.verify(&flipped, NOW).unwrap_err(),
            TokenError::BadSignature
        );
        // Another key claiming our kid.
        let (other, _) = SigningKey::generate().unwrap();
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": key.kid()});
        let forged = forge(
            &header,
            &claims_json("ringyard", "registry", NOW),
            signer(&other),
        );
        assert_eq!(
            verifier.verify(&forged, NOW).unwrap_err(),
            TokenError::BadSignature
        );
        // Another key under its own kid.
        let t = ours(&other, "registry");
        assert_eq!(
            verifier.verify(&t, NOW).unwrap_err(),
            TokenError::UnknownKey
        );
        // No kid at all.
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT"});
        let t = forge(
            &header,
            &claims_json("ringyard", "registry", NOW),
            signer(&key),
        );
        assert_eq!(
            verifier.verify(&t, NOW).unwrap_err(),
            TokenError::UnknownKey
        );
    }

    #[test]
    fn none_and_hmac_with_the_public_key_are_refused() {
        let (key, verifier) = setup();
        let claims = claims_json("ringyard", "registry", NOW);
        let none = forge(
            &serde_json::json!({"alg": "none", "kid": key.kid()}),
            &claims,
            |_| vec![],
        );
        assert_eq!(
            verifier.verify(&none, NOW).unwrap_err(),
            TokenError::UnsupportedAlg("none".into())
        );
        let unsigned = format!("{}.", none.trim_end_matches('.'));
        assert!(verifier.verify(&unsigned, NOW).is_err());
        // The classic confusion: HS256 keyed with the public key (in any encoding we publish).
        let PublicKey::EcP256 { point } = key.public_key().clone() else {
            unreachable!()
        };
        let jwks = key.key_set().to_jwks();
        for secret in [point, jwks] {
            let hmac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
            let hs = forge(
                &serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": key.kid()}),
                &claims,
                |m| ring::hmac::sign(&hmac_key, m).as_ref().to_vec(),
            );
            assert_eq!(
                verifier.verify(&hs, NOW).unwrap_err(),
                TokenError::UnsupportedAlg("HS256".into())
            );
        }
        // RS256 is an algorithm we know, but not one our own issuer uses.
        let rs = forge(
            &serde_json::json!({"alg": "RS256", "kid": key.kid()}),
            &claims,
            signer(&key),
        );
        assert_eq!(
            verifier.verify(&rs, NOW).unwrap_err(),
            TokenError::UnsupportedAlg("RS256".into())
        );
    }

    #[test]
    fn wrong_issuer_audience_and_type_are_refused() {
        let (key, verifier) = setup();
        let sign = signer(&key);
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": key.kid()});
        let t = forge(&header, &claims_json("someone-else", "registry", NOW), sign);
        assert_eq!(
            verifier.verify(&t, NOW).unwrap_err(),
            TokenError::WrongIssuer
        );
        let t = forge(
            &header,
            &claims_json("ringyard", "other-registry", NOW),
            sign,
        );
        assert_eq!(
            verifier.verify(&t, NOW).unwrap_err(),
            TokenError::WrongAudience
        );
        let mut many = claims_json("ringyard", "x", NOW);
        many["aud"] = serde_json::json!(["other", "registry"]);
        assert!(verifier.verify(&forge(&header, &many, sign), NOW).is_ok());
        let refresh_typ = serde_json::json!({"alg": "ES256", "typ": crate::auth::token::refresh::REFRESH_TYP, "kid": key.kid()});
        let t = forge(
            &refresh_typ,
            &claims_json("ringyard", "registry", NOW),
            sign,
        );
        assert_eq!(verifier.verify(&t, NOW).unwrap_err(), TokenError::WrongType);
        let no_typ = serde_json::json!({"alg": "ES256", "kid": key.kid()});
        assert!(verifier
            .verify(
                &forge(&no_typ, &claims_json("ringyard", "registry", NOW), sign),
                NOW
            )
            .is_ok());
    }

    #[test]
    fn each_issuer_is_trusted_for_its_own_audience_with_its_own_keys() {
        let (a_key, _) = SigningKey::generate().unwrap();
        let (b_key, _) = SigningKey::generate().unwrap();
        let external = |issuer: &str, audience: &str, key: &SigningKey| TrustedIssuer {
            issuer: issuer.into(),
            audience: audience.into(),
            keys: key.key_set(),
            roots: None,
            algs: vec![Alg::Es256, Alg::Rs256],
        };
        let verifier = Verifier::new(vec![
            external("issuer-a", "aud-a", &a_key),
            external("issuer-b", "aud-b", &b_key),
        ]);
        let t = signed_by;
        let verify = |token: String| verifier.verify(&token, NOW).map(|c| c.registered.iss);
        // Both accepted, each with its own key for its own audience.
        assert_eq!(verify(t(&a_key, "issuer-a", "aud-a")).unwrap(), "issuer-a");
        assert_eq!(verify(t(&b_key, "issuer-b", "aud-b")).unwrap(), "issuer-b");
        // A's token carrying B's audience (which B would accept): refused.
        assert_eq!(
            verify(t(&a_key, "issuer-a", "aud-b")).unwrap_err(),
            TokenError::WrongAudience
        );
        // A's key claiming to be B: only B's keys are tried, under A's kid or B's.
        assert_eq!(
            verify(t(&a_key, "issuer-b", "aud-b")).unwrap_err(),
            TokenError::UnknownKey
        );
        let as_b = forge(
            &serde_json::json!({"alg": "ES256", "kid": b_key.kid()}),
            &claims_json("issuer-b", "aud-b", NOW),
            signer(&a_key),
        );
        assert_eq!(
            verifier.verify(&as_b, NOW).unwrap_err(),
            TokenError::BadSignature
        );
        // An issuer nobody configured, even with a known key and audience.
        assert_eq!(
            verify(t(&a_key, "issuer-c", "aud-a")).unwrap_err(),
            TokenError::WrongIssuer
        );
        // Several audiences: accepted when the issuer's own is among them.
        let mut many = claims_json("issuer-b", "aud-a", NOW);
        many["aud"] = serde_json::json!(["aud-a", "aud-b"]);
        let header = serde_json::json!({"alg": "ES256", "kid": b_key.kid()});
        assert!(verifier
            .verify(&forge(&header, &many, signer(&b_key)), NOW)
            .is_ok());
    }

    #[test]
    fn malformed_claims_are_refused() {
        let (key, verifier) = setup();
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": key.kid()});
        let sign = signer(&key);
        for claims in [
            serde_json::json!({"iss": "ringyard", "aud": "registry"}),
            serde_json::json!({"iss": "ringyard", "aud": "registry", "exp": "soon"}),
            serde_json::json!({"iss": "ringyard", "aud": 5, "exp": NOW}),
            serde_json::json!({"iss": "ringyard", "aud": "registry", "exp": NOW, "access": [{"type": "repository"}]}),
            serde_json::json!([1, 2]),
        ] {
            let t = forge(&header, &claims, sign);
            assert_eq!(
                verifier.verify(&t, NOW).unwrap_err(),
                TokenError::Malformed("claims"),
                "{claims}"
            );
        }
        let t = token(&key, "repository:a:pull", NOW, 300);
        let (hp, _) = t.rsplit_once('.').unwrap();
        assert!(matches!(
            verifier.verify(&format!("{hp}.!!"), NOW),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verifier.verify(&format!("x{t}"), NOW),
            Err(TokenError::Malformed(_))
        ));
        let huge = format!("{t}{}", "A".repeat(jws::MAX_TOKEN_LEN));
        assert!(matches!(
            verifier.verify(&huge, NOW),
            Err(TokenError::TooLarge { .. })
        ));
    }

    /// An RSA-2048 PKCS#8 DER key from openssl (ring cannot generate RSA keys).
    pub(crate) fn rsa_pkcs8() -> Vec<u8> {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl is needed for this test");
        assert!(out.status.success());
        // The PEM is PKCS#8; openssl's DER output would be PKCS#1.
        use rustls_pki_types::pem::PemObject as _;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(&out.stdout).unwrap();
        der.secret_pkcs8_der().to_vec()
    }

    pub(crate) fn rsa_key() -> RsaKeyPair {
        RsaKeyPair::from_pkcs8(&rsa_pkcs8()).unwrap()
    }

    pub(crate) fn rsa_sign(key: &RsaKeyPair, m: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; key.public().modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            m,
            &mut sig,
        )
        .unwrap();
        sig
    }

    #[test]
    fn external_issuer_by_jwks_with_es256_and_rs256() {
        let (ours, _) = SigningKey::generate().unwrap();
        let (theirs, _) = SigningKey::generate().unwrap();
        let rsa = rsa_key();
        let rsa_public = {
            use ring::signature::KeyPair as _;
            let components =
                ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
            PublicKey::rsa(&components.n, &components.e).unwrap()
        };
        let mut jwks =
            serde_json::from_slice::<serde_json::Value>(&theirs.key_set().to_jwks()).unwrap();
        jwks["keys"]
            .as_array_mut()
            .unwrap()
            .push(rsa_public.to_jwk("rsa-1"));
        let keys = KeySet::from_jwks(&serde_json::to_vec(&jwks).unwrap()).unwrap();
        let external = TrustedIssuer {
            issuer: "corp-auth".into(),
            audience: "registry".into(),
            keys,
            roots: None,
            algs: vec![Alg::Es256, Alg::Rs256],
        };
        let verifier = Verifier::new(vec![
            TrustedIssuer::own("ringyard", "registry", &ours),
            external,
        ]);
        let claims = claims_json("corp-auth", "registry", NOW);

        let es = forge(
            &serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": theirs.kid()}),
            &claims,
            signer(&theirs),
        );
        assert_eq!(verifier.verify(&es, NOW).unwrap().registered.sub, "bob");
        let rs = forge(
            &serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}),
            &claims,
            |m| rsa_sign(&rsa, m),
        );
        assert_eq!(
            verifier.verify(&rs, NOW).unwrap().access,
            scopes("repository:a:pull")
        );
        // Their kid, but claiming to be us: only our keys are tried for our issuer.
        let mut as_us = claims.clone();
        as_us["iss"] = "ringyard".into();
        let t = forge(
            &serde_json::json!({"alg": "ES256", "kid": theirs.kid()}),
            &as_us,
            signer(&theirs),
        );
        assert_eq!(
            verifier.verify(&t, NOW).unwrap_err(),
            TokenError::UnknownKey
        );
        // alg and key type must agree: ES256 named on the RSA key, RS256 on the EC key.
        let t = forge(
            &serde_json::json!({"alg": "ES256", "kid": "rsa-1"}),
            &claims,
            |m| rsa_sign(&rsa, m),
        );
        assert_eq!(
            verifier.verify(&t, NOW).unwrap_err(),
            TokenError::UnsupportedAlg("ES256".into())
        );
        let t = forge(
            &serde_json::json!({"alg": "RS256", "kid": theirs.kid()}),
            &claims,
            |m| rsa_sign(&rsa, m),
        );
        assert_eq!(
            verifier.verify(&t, NOW).unwrap_err(),
            TokenError::UnsupportedAlg("RS256".into())
        );
        // The RSA signature over other bytes.
        let t = forge(
            &serde_json::json!({"alg": "RS256", "kid": "rsa-1"}),
            &claims,
            |_| rsa_sign(&rsa, b"other"),
        );
        assert_eq!(
            verifier.verify(&t, NOW).unwrap_err(),
            TokenError::BadSignature
        );
        // x5c without a root bundle.
        let t = forge(
            &serde_json::json!({"alg": "ES256", "x5c": ["AAAA"]}),
            &claims,
            signer(&theirs),
        );
        assert!(matches!(
            verifier.verify(&t, NOW),
            Err(TokenError::UntrustedChain(_))
        ));
    }
}
