//! Verified tokens remembered per worker. docker reuses one token for every request of a
//! pull, and verifying ES256 costs about 95 µs here (measured: 2000 verifications of a
//! one-scope token, release build), several times a cached manifest GET; a hit costs a hash
//! lookup and the `exp`/`nbf` check, which is the only part of a verification that changes
//! with time.
//!
//! A cache belongs to one [`Verifier`]: signature, issuer and that issuer's audience were
//! checked against its issuers, so a reload that builds a new verifier must start a new cache.
//! The key is the whole token text, so a hit is the very token that was verified, whichever of
//! the trusted issuers signed it. It is not `Sync`
//! on purpose: one per event loop, no lock on the request path. Failures are not remembered,
//! so a refused token is refused afresh each time.

use super::error::TokenError;
use super::jwt::{Claims, Verifier};
use std::collections::HashMap;
use std::rc::Rc;

/// Verified tokens, by their text, up to a bound.
#[derive(Debug)]
pub struct VerifiedCache {
    entries: HashMap<Box<str>, Rc<Claims>>,
    capacity: usize,
}

impl VerifiedCache {
    pub fn new(capacity: usize) -> Self {
        VerifiedCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The claims of `token` at `now`: remembered if it was verified before and is still in
    /// date, verified by `verifier` otherwise.
    pub fn verify(
        &mut self,
        verifier: &Verifier,
        token: &str,
        now: i64,
    ) -> Result<Rc<Claims>, TokenError> {
        if let Some(claims) = self.entries.get(token) {
            return match claims.registered.check_time(now) {
                Ok(()) => Ok(Rc::clone(claims)),
                Err(e) => {
                    self.entries.remove(token);
                    Err(e)
                }
            };
        }
        let claims = Rc::new(verifier.verify(token, now)?);
        if self.entries.len() >= self.capacity {
            self.entries
                .retain(|_, c| c.registered.check_time(now).is_ok());
            if self.entries.len() >= self.capacity {
                // Full of live tokens: start over rather than track an order of use; the
                // tokens in use come back on their next request.
                self.entries.clear();
            }
        }
        self.entries.insert(token.into(), Rc::clone(&claims));
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::jwt::tests::{ours, NOW};
    use crate::auth::token::jwt::{TrustedIssuer, LEEWAY_SECS};
    use crate::auth::token::keys::SigningKey;

    #[test]
    fn remembers_good_tokens_until_they_expire_and_stays_bounded() {
        let (key, _) = SigningKey::generate().unwrap();
        let verifier = Verifier::new(vec![TrustedIssuer::own("ringyard", "registry", &key)]);
        let mut cache = VerifiedCache::new(2);
        let a = ours(&key, "registry");
        let first = cache.verify(&verifier, &a, NOW).unwrap();
        let again = cache.verify(&verifier, &a, NOW + 1).unwrap();
        assert!(
            Rc::ptr_eq(&first, &again),
            "the second answer is the remembered one"
        );

        // Expired on a hit: refused and forgotten.
        let late = NOW + 300 + LEEWAY_SECS + 1;
        assert_eq!(
            cache.verify(&verifier, &a, late).unwrap_err(),
            TokenError::Expired
        );
        assert!(cache.is_empty());

        // Refusals are not remembered; a verifier without our key refuses what was good.
        let wrong_aud = ours(&key, "elsewhere");
        assert_eq!(
            cache.verify(&verifier, &wrong_aud, NOW).unwrap_err(),
            TokenError::WrongAudience
        );
        assert!(cache.is_empty());

        for _ in 0..5 {
            cache
                .verify(&verifier, &ours(&key, "registry"), NOW)
                .unwrap();
            assert!(cache.len() <= 2);
        }
    }

    #[test]
    fn tokens_of_several_issuers_each_for_its_audience() {
        use crate::auth::token::jwt::tests::signed_by;
        let (key, _) = SigningKey::generate().unwrap();
        let (theirs, _) = SigningKey::generate().unwrap();
        let verifier = Verifier::new(vec![
            TrustedIssuer::own("ringyard", "registry", &key),
            TrustedIssuer::own("corp-auth", "registry.example", &theirs),
        ]);
        let mut cache = VerifiedCache::new(8);
        let corp = |aud: &str| signed_by(&theirs, "corp-auth", aud);
        let a = ours(&key, "registry");
        let b = corp("registry.example");
        assert_eq!(
            cache.verify(&verifier, &a, NOW).unwrap().registered.iss,
            "ringyard"
        );
        assert_eq!(
            cache.verify(&verifier, &b, NOW).unwrap().registered.iss,
            "corp-auth"
        );
        assert_eq!(cache.len(), 2);
        // Each issuer's token for the other's audience: refused, and not remembered.
        for t in [corp("registry"), ours(&key, "registry.example")] {
            assert_eq!(
                cache.verify(&verifier, &t, NOW).unwrap_err(),
                TokenError::WrongAudience
            );
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.verify(&verifier, &b, NOW + 1).is_ok());
    }
}
