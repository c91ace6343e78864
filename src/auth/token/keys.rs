//! Keys: our ES256 signing key (generated into the data directory on first start, or loaded
//! from a configured PKCS#8 PEM), public keys of any trusted issuer, their `kid`s, and JWKS.
//!
//! A `kid` is the RFC 7638 thumbprint (base64url SHA-256 of the canonical JWK): stable for a
//! key whatever file it came from, and what distribution v3 and JWKS consumers expect. A
//! public key is either P-256 (`ES256`) or RSA of 2048 to 8192 bits (`RS256`, accepted from
//! external issuers only because ring verifies it at no cost to us); the algorithm is a
//! property of the key, so a token's `alg` can only confirm it, never choose it.

use super::error::KeyError;
use super::jws::{b64url, b64url_decode};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaPublicKeyComponents};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// The file name of a generated key in the data directory.
pub const DEFAULT_KEY_FILE: &str = "token-signing-key.pem";

/// A JWS algorithm this module verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Es256,
    Rs256,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
        }
    }

    /// Exact names only: `es256`, `none`, `HS256` and the rest are not algorithms here.
    pub fn from_name(name: &str) -> Option<Alg> {
        match name {
            "ES256" => Some(Alg::Es256),
            "RS256" => Some(Alg::Rs256),
            _ => None,
        }
    }
}

/// A public key that verifies tokens.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// The uncompressed SEC1 point (`04 || x || y`, 65 bytes).
    EcP256 { point: Vec<u8> },
    /// Big-endian modulus and exponent without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} key {}", self.alg().name(), self.thumbprint())
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[start..]
}

impl PublicKey {
    pub(crate) fn ec_p256(point: &[u8]) -> Option<PublicKey> {
        (point.len() == 65 && point[0] == 4).then(|| PublicKey::EcP256 {
            point: point.to_vec(),
        })
    }

    /// RSA keys under 2048 bits are refused here, as ring refuses them when verifying.
    pub(crate) fn rsa(n: &[u8], e: &[u8]) -> Option<PublicKey> {
        let (n, e) = (strip_zeros(n), strip_zeros(e));
        let bits = n.len() * 8;
        ((2048..=8192).contains(&bits) && !e.is_empty() && e.len() <= 4).then(|| PublicKey::Rsa {
            n: n.to_vec(),
            e: e.to_vec(),
        })
    }

    pub fn alg(&self) -> Alg {
        match self {
            PublicKey::EcP256 { .. } => Alg::Es256,
            PublicKey::Rsa { .. } => Alg::Rs256,
        }
    }

    /// Verifies a JWS signature (`ES256`: the 64-byte `r || s`; `RS256`: PKCS#1 v1.5).
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            PublicKey::EcP256 { point } => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            PublicKey::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
        }
    }

    /// The RFC 7638 thumbprint: the members that define the key, in lexical order, without
    /// spaces, hashed with SHA-256.
    pub fn thumbprint(&self) -> String {
        let canonical = match self {
            PublicKey::EcP256 { point } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64url(&point[1..33]),
                b64url(&point[33..])
            ),
            PublicKey::Rsa { n, e } => {
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64url(e), b64url(n))
            }
        };
        b64url(&Sha256::digest(canonical.as_bytes()))
    }

    /// The key as a JWKS entry.
    pub fn to_jwk(&self, kid: &str) -> Value {
        match self {
            PublicKey::EcP256 { point } => json!({
                "kty": "EC", "crv": "P-256",
                "x": b64url(&point[1..33]), "y": b64url(&point[33..]),
                "kid": kid, "alg": "ES256", "use": "sig",
            }),
            PublicKey::Rsa { n, e } => json!({
                "kty": "RSA", "n": b64url(n), "e": b64url(e),
                "kid": kid, "alg": "RS256", "use": "sig",
            }),
        }
    }
}

/// The members of a JWK that matter here; the rest are ignored.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

impl Jwk {
    /// `Ok(None)` for a key of another kind (an encryption key, Ed25519, P-384, a symmetric
    /// `oct` key): skipped, since a JWKS from an identity provider mixes kinds.
    fn public_key(&self) -> Result<Option<PublicKey>, KeyError> {
        if self.usage.as_deref().is_some_and(|u| u != "sig") {
            return Ok(None);
        }
        let member = |v: &Option<String>, name: &str| {
            let v = v
                .as_deref()
                .ok_or_else(|| KeyError::invalid(format!("JWK without {name}")))?;
            b64url_decode(v).map_err(|_| KeyError::invalid(format!("JWK {name} is not base64url")))
        };
        let (key, alg) = match (self.kty.as_str(), self.crv.as_deref()) {
            ("EC", Some("P-256")) => {
                let (x, y) = (member(&self.x, "x")?, member(&self.y, "y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(KeyError::invalid("JWK P-256 coordinates are not 32 bytes"));
                }
                let point = [&[4u8][..], &x, &y].concat();
                (PublicKey::ec_p256(&point), Alg::Es256)
            }
            ("RSA", _) => {
                let (n, e) = (member(&self.n, "n")?, member(&self.e, "e")?);
                let key = PublicKey::rsa(&n, &e)
                    .ok_or_else(|| KeyError::invalid("JWK RSA key outside 2048 to 8192 bits"))?;
                (Some(key), Alg::Rs256)
            }
            _ => return Ok(None),
        };
        Ok(key.filter(|_| self.alg.as_deref().is_none_or(|a| a == alg.name())))
    }
}

/// Public keys by `kid`: the keys one issuer signs with.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<(String, PublicKey)>,
}

impl KeySet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key under `kid` (its thumbprint when `None`); a later key with the same `kid`
    /// replaces the earlier one.
    pub fn insert(&mut self, kid: Option<String>, key: PublicKey) {
        let kid = kid.unwrap_or_else(|| key.thumbprint());
        self.keys.retain(|(k, _)| *k != kid);
        self.keys.push((kid, key));
    }

    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|(k, _)| k == kid).map(|(_, key)| key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Reads a JWKS document (`{"keys": [...]}`). Keys of unsupported kinds are skipped; a
    /// malformed key of a supported kind, or no usable key at all, is an error.
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, KeyError> {
        #[derive(Deserialize)]
        struct Jwks {
            keys: Vec<Jwk>,
        }
        let jwks: Jwks = serde_json::from_slice(json)
            .map_err(|e| KeyError::invalid(format!("not a JWKS document: {e}")))?;
        let mut set = KeySet::new();
        for jwk in &jwks.keys {
            if let Some(key) = jwk.public_key()? {
                set.insert(jwk.kid.clone(), key);
            }
        }
        if set.is_empty() {
            return Err(KeyError::invalid(
                "the JWKS has no EC P-256 or RSA signature key",
            ));
        }
        Ok(set)
    }

    /// The JWKS document served to other services.
    pub fn to_jwks(&self) -> Vec<u8> {
        let keys: Vec<Value> = self.keys.iter().map(|(kid, k)| k.to_jwk(kid)).collect();
        serde_json::to_vec(&json!({ "keys": keys })).unwrap_or_default()
    }
}

/// Our ES256 signing key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    public: PublicKey,
    kid: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.kid)
    }
}

impl SigningKey {
    /// A new key and its PKCS#8 PEM, to be stored.
    pub fn generate() -> Result<(SigningKey, String), KeyError> {
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new())
            .map_err(|_| KeyError::Crypto)?;
        let key = Self::from_pkcs8(pkcs8.as_ref())?;
        Ok((key, pem_encode("PRIVATE KEY", pkcs8.as_ref())))
    }

    /// Loads a PKCS#8 PEM (`BEGIN PRIVATE KEY`) holding a P-256 key.
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, KeyError> {
        match PrivatePkcs8KeyDer::from_pem_slice(pem) {
            Ok(der) => Self::from_pkcs8(der.secret_pkcs8_der()),
            Err(_) if contains(pem, b"BEGIN EC PRIVATE KEY") => Err(KeyError::invalid(
                "a SEC1 key (BEGIN EC PRIVATE KEY): convert it to PKCS#8 with \
                 `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`",
            )),
            Err(_) => Err(KeyError::invalid(
                "no PKCS#8 private key (BEGIN PRIVATE KEY) in the file",
            )),
        }
    }

    fn from_pkcs8(der: &[u8]) -> Result<SigningKey, KeyError> {
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pair = EcdsaKeyPair::from_pkcs8(alg, der, &SystemRandom::new())
            .map_err(|e| KeyError::invalid(format!("not an EC P-256 PKCS#8 key: {e}")))?;
        let public = PublicKey::ec_p256(pair.public_key().as_ref()).ok_or(KeyError::Crypto)?;
        let kid = public.thumbprint();
        Ok(SigningKey { pair, public, kid })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The set of our public keys, to verify our own tokens and serve as the JWKS.
    pub fn key_set(&self) -> KeySet {
        let mut set = KeySet::new();
        set.insert(Some(self.kid.clone()), self.public.clone());
        set
    }

    /// An `ES256` JWS signature (`r || s`).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| KeyError::Crypto)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The signing key at start-up: the configured file if there is one, else
/// `<data_dir>/token-signing-key.pem`, generated and stored on first start (PKCS#8 PEM, mode
/// 0600, written to a temporary file, synced and renamed, so a crash never leaves half a
/// key). Blocking file IO: call it before the event loops start.
///
/// Nodes that share one registry need one key: configure the same file on each, or tokens
/// issued by one node are refused by the others.
pub fn load_or_create(configured: Option<&Path>, data_dir: &Path) -> Result<SigningKey, KeyError> {
    if let Some(path) = configured {
        return load(path);
    }
    let path = data_dir.join(DEFAULT_KEY_FILE);
    match std::fs::read(&path) {
        Ok(pem) => SigningKey::from_pem(&pem).map_err(|e| in_file(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (key, pem) = SigningKey::generate()?;
            write_private(&path, pem.as_bytes()).map_err(|e| KeyError::io(&path, e))?;
            Ok(key)
        }
        Err(e) => Err(KeyError::io(&path, e)),
    }
}

fn load(path: &Path) -> Result<SigningKey, KeyError> {
    let pem = std::fs::read(path).map_err(|e| KeyError::io(path, e))?;
    SigningKey::from_pem(&pem).map_err(|e| in_file(path, e))
}

fn in_file(path: &Path, e: KeyError) -> KeyError {
    KeyError::invalid(format!("{}: {e}", path.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp: PathBuf = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        crate::store::fs::fsync_dir(dir)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generated_key_round_trips_through_pem_with_a_stable_kid() {
        let (key, pem) = SigningKey::generate().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = SigningKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert_eq!(again.public_key(), key.public_key());
        let sig = key.sign(b"message").unwrap();
        assert_eq!(sig.len(), 64);
        assert!(again.public_key().verify(b"message", &sig));
        assert!(!again.public_key().verify(b"messagf", &sig));
        let (other, _) = SigningKey::generate().unwrap();
        assert_ne!(other.kid(), key.kid());
        assert!(!other.public_key().verify(b"message", &sig));
    }

    #[test]
    fn thumbprint_matches_rfc_7638() {
        // RFC 7638 §3.1: the RSA key and its thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let key =
            PublicKey::rsa(&b64url_decode(n).unwrap(), &b64url_decode("AQAB").unwrap()).unwrap();
        assert_eq!(
            key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn jwks_round_trips_and_skips_other_kinds() {
        let (a, _) = SigningKey::generate().unwrap();
        let json = a.key_set().to_jwks();
        let doc: Value = serde_json::from_slice(&json).unwrap();
        let jwk = &doc["keys"][0];
        assert_eq!(jwk["kid"], a.kid());
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["crv"], "P-256");
        let set = KeySet::from_jwks(&json).unwrap();
        assert_eq!(set.get(a.kid()), Some(a.public_key()));

        let mut mixed = doc.clone();
        let keys = mixed["keys"].as_array_mut().unwrap();
        keys.push(json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}));
        keys.push(json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "ed"}));
        keys.push(json!({"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"], "use": "enc", "kid": "enc"}));
        keys.push(json!({"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"], "alg": "ES384", "kid": "384"}));
        keys.push(json!({"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"]}));
        let set = KeySet::from_jwks(&serde_json::to_vec(&mixed).unwrap()).unwrap();
        assert_eq!(
            set.len(),
            1,
            "the key without kid is filed under its thumbprint, the same kid"
        );
        for skipped in ["hmac", "ed", "enc", "384"] {
            assert!(set.get(skipped).is_none(), "{skipped}");
        }
    }

    #[test]
    fn bad_jwks_and_keys_are_refused() {
        assert!(KeySet::from_jwks(b"{").is_err());
        assert!(KeySet::from_jwks(br#"{"keys":[]}"#).is_err());
        assert!(KeySet::from_jwks(br#"{"keys":[{"kty":"oct","k":"AA"}]}"#).is_err());
        assert!(
            KeySet::from_jwks(br#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#)
                .is_err()
        );
        assert!(KeySet::from_jwks(br#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#).is_err());
        assert!(SigningKey::from_pem(b"hello").is_err());
        let sec1 = b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        let err = SigningKey::from_pem(sec1).unwrap_err().to_string();
        assert!(err.contains("openssl pkcs8"), "{err}");
    }

    #[test]
    fn first_start_writes_a_private_key_that_later_starts_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let key = load_or_create(None, &data).unwrap();
        let path = data.join(DEFAULT_KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(&data).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left");
        assert_eq!(load_or_create(None, &data).unwrap().kid(), key.kid());

        // A configured file wins over the data directory.
        let (other, pem) = SigningKey::generate().unwrap();
        let configured = dir.path().join("configured.pem");
        std::fs::write(&configured, pem).unwrap();
        assert_eq!(
            load_or_create(Some(&configured), &data).unwrap().kid(),
            other.kid()
        );
        let missing = load_or_create(Some(&dir.path().join("nope.pem")), &data).unwrap_err();
        assert!(matches!(missing, KeyError::Io { .. }));
        std::fs::write(&path, "garbage").unwrap();
        let broken = load_or_create(None, &data).unwrap_err().to_string();
        assert!(broken.contains(DEFAULT_KEY_FILE), "{broken}");
    }

    #[test]
    fn loads_a_key_written_by_openssl() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let status = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&path)
            .status()
            .expect("openssl is needed for this test");
        assert!(status.success());
        let key = load_or_create(Some(&path), dir.path()).unwrap();
        assert_eq!(key.kid().len(), 43);
    }
}
