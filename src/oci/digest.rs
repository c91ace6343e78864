//! Content digests (`algorithm:hex`); the streaming hasher that produces them is `hasher`.
//! Only sha256 and sha512 are accepted: they are the algorithms the image spec registers, and a
//! digest is also a path component in the blob tree, so its grammar is checked before any use.

use super::error::{Error, Result};
pub use super::hasher::Hasher;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated digest. The canonical text form (`sha256:<lowercase hex>`) is kept so that
/// displaying, hashing and comparing never re-format it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    text: Box<str>,
    algorithm: Algorithm,
}

/// A digest as a header value, without copying its text.
impl From<Digest> for std::borrow::Cow<'static, str> {
    fn from(d: Digest) -> Self {
        std::borrow::Cow::Owned(d.text.into_string())
    }
}

impl Digest {
    /// Parses `algorithm:hex`. Uppercase hex is rejected, as the image spec requires lowercase.
    pub fn parse(s: &str) -> Result<Digest> {
        let invalid = || Error::DigestInvalid {
            message: "invalid digest",
            text: s.chars().take(200).collect(),
        };
        let (alg, hex) = s.split_once(':').ok_or_else(invalid)?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => {
                return Err(Error::DigestInvalid {
                    message: "unsupported digest algorithm",
                    text: alg.chars().take(64).collect(),
                })
            }
        };
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid());
        }
        Ok(Digest {
            text: s.into(),
            algorithm,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.as_str().len() + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// sha256 of a whole buffer (manifests, which are small and already in memory).
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.finish()
    }

    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    /// The digest of a finished hash.
    pub(crate) fn from_raw(algorithm: Algorithm, raw: &[u8]) -> Digest {
        let mut text = String::with_capacity(8 + raw.len() * 2);
        text.push_str(algorithm.as_str());
        text.push(':');
        for &b in raw {
            text.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
            text.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
        }
        Digest {
            text: text.into(),
            algorithm,
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_match_known_values() {
        assert_eq!(Digest::sha256_of(b"").as_str(), EMPTY);
        let d = Digest::of(Algorithm::Sha512, b"");
        assert!(d.as_str().starts_with("sha512:cf83e1357eefb8bd"));
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
    }

    #[test]
    fn parse_accepts_canonical_and_rejects_the_rest() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            "md5:e3b0c44298fc1c149afbf4c8996fb924",
            &EMPTY.to_uppercase(),
            &format!("{EMPTY}0"),
            "sha256:../../../../etc/passwd",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
        ] {
            let e = Digest::parse(bad).unwrap_err();
            assert!(matches!(e, Error::DigestInvalid { .. }), "{bad}");
        }
    }
}
