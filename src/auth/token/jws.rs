//! Compact JWS (RFC 7515): `base64url(header).base64url(payload).base64url(signature)`.
//!
//! Written here rather than taken from a JWT crate because it is small and because the part
//! that matters, deciding which key and algorithm verify a token, must be ours to keep
//! strict: a token longer than [`MAX_TOKEN_LEN`] is refused before anything is decoded,
//! base64url must be canonical and unpadded, the header may not carry `crit`, and `alg` must
//! name an algorithm of [`Alg`] (no `none`, no HMAC).

use super::error::{KeyError, TokenError};
use super::keys::{Alg, SigningKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The largest token accepted. Ours are well under 1 KiB with a handful of scopes; an
/// external token with an `x5c` chain of two RSA-4096 certificates fits too.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict: no padding, no non-alphabet bytes, no stray trailing bits.
pub(crate) fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text)
}

/// The protected header: what we write and what we read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Base64 (standard, padded) DER certificates, leaf first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
    /// Extensions the verifier must understand: we understand none, so its presence refuses
    /// the token (RFC 7515 §4.1.11).
    #[serde(default, skip_serializing)]
    crit: Option<serde_json::Value>,
}

/// Signs `payload` with our key: header `{alg: ES256, typ, kid}`.
pub(crate) fn sign(
    key: &SigningKey,
    typ: &str,
    payload: &impl Serialize,
) -> Result<String, KeyError> {
    let header = Header {
        alg: Alg::Es256.name().to_string(),
        typ: Some(typ.to_string()),
        kid: Some(key.kid().to_string()),
        x5c: None,
        crit: None,
    };
    let mut token = b64url(&to_json(&header)?);
    token.push('.');
    token.push_str(&b64url(&to_json(payload)?));
    let sig = key.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&b64url(&sig));
    Ok(token)
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>, KeyError> {
    serde_json::to_vec(value).map_err(|e| KeyError::invalid(e.to_string()))
}

/// A token split and decoded, its signature not yet checked.
#[derive(Debug)]
pub struct Unverified<'a> {
    pub header: Header,
    pub alg: Alg,
    /// `header.payload` as sent: the bytes the signature covers.
    pub signing_input: &'a str,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS, refusing anything outside the rules above.
pub fn parse(token: &str) -> Result<Unverified<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge { len: token.len() });
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three parts"));
    };
    let header_json = b64url_decode(h).map_err(|_| TokenError::Malformed("header encoding"))?;
    let header: Header =
        serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed("header"))?;
    let alg = Alg::from_name(&header.alg)
        .ok_or_else(|| TokenError::UnsupportedAlg(super::error::truncated(&header.alg)))?;
    if header.crit.is_some() {
        return Err(TokenError::Malformed("crit header"));
    }
    let payload = b64url_decode(p).map_err(|_| TokenError::Malformed("payload encoding"))?;
    let signature = b64url_decode(s).map_err(|_| TokenError::Malformed("signature encoding"))?;
    Ok(Unverified {
        header,
        alg,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forged(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.{}",
            b64url(header.as_bytes()),
            b64url(payload.as_bytes()),
            b64url(b"sig")
        )
    }

    #[test]
    fn signs_and_parses_back() {
        let (key, _) = SigningKey::generate().unwrap();
        let token = sign(&key, "JWT", &serde_json::json!({"sub": "alice"})).unwrap();
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.alg, Alg::Es256);
        assert_eq!(parsed.header.kid.as_deref(), Some(key.kid()));
        assert_eq!(parsed.header.typ.as_deref(), Some("JWT"));
        assert_eq!(parsed.payload, br#"{"sub":"alice"}"#);
        assert!(key
            .public_key()
            .verify(parsed.signing_input.as_bytes(), &parsed.signature));
    }

    #[test]
    fn refuses_other_algorithms_and_shapes() {
        for alg in [
            "none", "None", "HS256", "es256", "ES384", "PS256", "EdDSA", "",
        ] {
            let t = forged(&format!(r#"{{"alg":"{alg}"}}"#), "{}");
            assert_eq!(
                parse(&t).unwrap_err(),
                TokenError::UnsupportedAlg(alg.to_string())
            );
        }
        let t = forged(r#"{"alg":"ES256","crit":["exp"]}"#, "{}");
        assert_eq!(parse(&t).unwrap_err(), TokenError::Malformed("crit header"));
        let t = forged(r#"{"typ":"JWT"}"#, "{}");
        assert_eq!(parse(&t).unwrap_err(), TokenError::Malformed("header"));
        let t = forged(r#"{"alg":"ES256","alg":"none"}"#, "{}");
        assert_eq!(parse(&t).unwrap_err(), TokenError::Malformed("header"));
        for bad in ["", "a", "a.b", "a.b.c.d", "...", "e30.e30.e30."] {
            assert!(
                matches!(parse(bad), Err(TokenError::Malformed(_))),
                "{bad:?}"
            );
        }
        let ok = forged(r#"{"alg":"ES256"}"#, "{}");
        assert!(parse(&ok).is_ok());
        // Padding, the standard alphabet and non-canonical trailing bits are all refused.
        let (h, rest) = ok.split_once('.').unwrap();
        assert!(parse(&format!("{h}=.{rest}")).is_err());
        assert!(
            parse(&format!("{h}.e3+.c2ln")).is_err(),
            "standard alphabet"
        );
        assert!(
            parse(&format!("{h}.e30.c2lnZx")).is_err(),
            "stray trailing bits"
        );
        assert!(parse(&format!("{h}.e30.c2lnZw")).is_ok());
    }

    #[test]
    fn huge_tokens_are_refused_before_decoding() {
        let big = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            parse(&big).unwrap_err(),
            TokenError::TooLarge {
                len: MAX_TOKEN_LEN + 1
            }
        );
    }
}
