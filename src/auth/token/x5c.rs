//! Tokens that carry their signing certificate (`x5c`): the chain must lead to a root of the
//! configured bundle (checked by webpki at the token's verification time), and the leaf's key
//! then verifies the token like any other [`PublicKey`].
//!
//! The leaf's extended key usage is not constrained, as distribution accepts any (its
//! `ExtKeyUsageAny`): token-signing certificates follow no common EKU convention.

use super::der::public_key_from_spki;
use super::error::{KeyError, TokenError};
use super::keys::PublicKey;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use std::time::Duration;
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};

/// Certificates in one `x5c`, leaf included: more is not a chain anyone issues.
const MAX_CHAIN: usize = 5;

/// The root certificates trusted for `x5c` chains.
#[derive(Debug, Clone)]
pub struct RootStore {
    anchors: Vec<TrustAnchor<'static>>,
}

impl RootStore {
    /// Reads a PEM bundle; other PEM sections are skipped, no certificate at all is an error.
    pub fn from_pem(pem: &[u8]) -> Result<RootStore, KeyError> {
        let mut anchors = Vec::new();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| KeyError::invalid(format!("bad PEM: {e}")))?;
            let anchor = webpki::anchor_from_trusted_cert(&cert)
                .map_err(|e| KeyError::invalid(format!("unusable root certificate: {e}")))?;
            anchors.push(anchor.to_owned());
        }
        if anchors.is_empty() {
            return Err(KeyError::invalid("no certificate in the root bundle"));
        }
        Ok(RootStore { anchors })
    }

    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

struct AnyUsage;

impl ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// The leaf key of a verified `x5c` chain, valid at `now` (seconds since the epoch).
pub(crate) fn leaf_key(
    roots: &RootStore,
    x5c: &[String],
    now: i64,
) -> Result<PublicKey, TokenError> {
    let untrusted = |why: &str| TokenError::UntrustedChain(why.to_string());
    if x5c.is_empty() || x5c.len() > MAX_CHAIN {
        return Err(untrusted("chain length"));
    }
    let ders = x5c
        .iter()
        .map(|c| STANDARD.decode(c).map(CertificateDer::from))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TokenError::Malformed("x5c encoding"))?;
    let leaf = EndEntityCert::try_from(&ders[0]).map_err(|e| untrusted(&e.to_string()))?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(now.max(0) as u64));
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &roots.anchors,
        &ders[1..],
        time,
        AnyUsage,
        None,
        None,
    )
    .map_err(|e| untrusted(&e.to_string()))?;
    public_key_from_spki(leaf.subject_public_key_info().as_ref())
        .ok_or_else(|| untrusted("leaf key is neither P-256 nor RSA 2048-8192"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::jwt::tests::{
        claims_json, forge, rsa_key, rsa_pkcs8, rsa_sign, signer, NOW,
    };
    use crate::auth::token::jwt::{TrustedIssuer, Verifier};
    use crate::auth::token::keys::{Alg, KeySet, SigningKey};
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    fn params(name: &str, ca: bool) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        p
    }

    /// A CA: its issuer (params and key) and its certificate's DER.
    fn ca(name: &str) -> (Issuer<'static, KeyPair>, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let p = params(name, true);
        let cert = p.self_signed(&key).unwrap();
        (Issuer::new(p, key), cert.der().clone())
    }

    fn b64(der: &CertificateDer<'_>) -> String {
        STANDARD.encode(der.as_ref())
    }

    fn pem(der: &CertificateDer<'_>) -> String {
        let body = STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    fn verifier(root: &CertificateDer<'_>) -> Verifier {
        let roots = RootStore::from_pem(pem(root).as_bytes()).unwrap();
        let issuer = TrustedIssuer {
            issuer: "corp-auth".into(),
            audience: "registry".into(),
            keys: KeySet::new(),
            roots: Some(roots),
            algs: vec![Alg::Es256, Alg::Rs256],
        };
        Verifier::new(vec![issuer])
    }

    fn token(chain: &[&CertificateDer<'_>], key: &SigningKey) -> String {
        let x5c: Vec<String> = chain.iter().map(|c| b64(c)).collect();
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": x5c});
        forge(
            &header,
            &claims_json("corp-auth", "registry", NOW),
            signer(key),
        )
    }

    /// A leaf key pair both as rcgen's and as a signer of ours.
    fn leaf_key() -> (KeyPair, SigningKey) {
        let key = KeyPair::generate().unwrap();
        let ours = SigningKey::from_pem(key.serialize_pem().as_bytes()).unwrap();
        (key, ours)
    }

    #[test]
    fn chains_to_the_bundle_are_trusted_and_others_are_not() {
        let (root, root_der) = ca("root");
        let (leaf_rc, leaf) = leaf_key();
        let leaf_der = params("signer", false)
            .signed_by(&leaf_rc, &root)
            .unwrap()
            .der()
            .clone();
        let v = verifier(&root_der);
        assert_eq!(
            v.verify(&token(&[&leaf_der], &leaf), NOW)
                .unwrap()
                .registered
                .sub,
            "bob"
        );

        // Signed by another key than the certificate's.
        let (_, impostor) = leaf_key();
        assert_eq!(
            v.verify(&token(&[&leaf_der], &impostor), NOW).unwrap_err(),
            TokenError::BadSignature
        );

        // A certificate from another CA.
        let (stranger, _) = ca("root");
        let (other_rc, other) = leaf_key();
        let other_der = params("signer", false)
            .signed_by(&other_rc, &stranger)
            .unwrap()
            .der()
            .clone();
        assert!(matches!(
            v.verify(&token(&[&other_der], &other), NOW),
            Err(TokenError::UntrustedChain(_))
        ));

        // A self-signed leaf, the root itself used as a leaf, garbage, too long a chain.
        let selfsigned = params("signer", false)
            .self_signed(&leaf_rc)
            .unwrap()
            .der()
            .clone();
        assert!(matches!(
            v.verify(&token(&[&selfsigned], &leaf), NOW),
            Err(TokenError::UntrustedChain(_))
        ));
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(matches!(
            v.verify(&token(&[&garbage], &leaf), NOW),
            Err(TokenError::UntrustedChain(_))
        ));
        let long = vec![&leaf_der; MAX_CHAIN + 1];
        assert!(matches!(
            v.verify(&token(&long, &leaf), NOW),
            Err(TokenError::UntrustedChain(_))
        ));
        let header = serde_json::json!({"alg": "ES256", "x5c": ["not base64!"]});
        let t = forge(
            &header,
            &claims_json("corp-auth", "registry", NOW),
            signer(&leaf),
        );
        assert_eq!(
            v.verify(&t, NOW).unwrap_err(),
            TokenError::Malformed("x5c encoding")
        );
    }

    #[test]
    fn intermediates_come_from_the_token_and_validity_is_checked() {
        let (root, root_der) = ca("root");
        let inter_key = KeyPair::generate().unwrap();
        let inter_params = params("intermediate", true);
        let inter_der = inter_params
            .signed_by(&inter_key, &root)
            .unwrap()
            .der()
            .clone();
        let inter = Issuer::new(inter_params, inter_key);
        let (leaf_rc, leaf) = leaf_key();
        let leaf_der = params("signer", false)
            .signed_by(&leaf_rc, &inter)
            .unwrap()
            .der()
            .clone();
        let v = verifier(&root_der);
        assert!(v
            .verify(&token(&[&leaf_der, &inter_der], &leaf), NOW)
            .is_ok());
        assert!(matches!(
            v.verify(&token(&[&leaf_der], &leaf), NOW),
            Err(TokenError::UntrustedChain(_))
        ));

        let mut expired = params("signer", false);
        expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2025, 1, 1);
        let expired_der = expired.signed_by(&leaf_rc, &root).unwrap().der().clone();
        assert!(matches!(
            v.verify(&token(&[&expired_der], &leaf), NOW),
            Err(TokenError::UntrustedChain(_))
        ));
    }

    #[test]
    fn an_rsa_leaf_verifies_rs256() {
        let (root, root_der) = ca("root");
        let rsa = rsa_key();
        let pkcs8 = rsa_pkcs8();
        let rc =
            KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.clone().into(), &rcgen::PKCS_RSA_SHA256)
                .unwrap();
        let signer = ring::signature::RsaKeyPair::from_pkcs8(&pkcs8).unwrap();
        let leaf_der = params("signer", false)
            .signed_by(&rc, &root)
            .unwrap()
            .der()
            .clone();
        let header = serde_json::json!({"alg": "RS256", "x5c": [b64(&leaf_der)]});
        let claims = claims_json("corp-auth", "registry", NOW);
        let v = verifier(&root_der);
        assert!(v
            .verify(&forge(&header, &claims, |m| rsa_sign(&signer, m)), NOW)
            .is_ok());
        assert_eq!(
            v.verify(&forge(&header, &claims, |m| rsa_sign(&rsa, m)), NOW)
                .unwrap_err(),
            TokenError::BadSignature
        );
        let es = serde_json::json!({"alg": "ES256", "x5c": [b64(&leaf_der)]});
        assert_eq!(
            v.verify(&forge(&es, &claims, |m| rsa_sign(&signer, m)), NOW)
                .unwrap_err(),
            TokenError::UnsupportedAlg("ES256".into())
        );
    }

    #[test]
    fn bundles_without_certificates_are_refused() {
        assert!(RootStore::from_pem(b"").is_err());
        assert!(RootStore::from_pem(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_err());
    }
}
