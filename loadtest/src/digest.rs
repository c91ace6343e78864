//! sha256 digests as OCI writes them (`sha256:<64 lowercase hex>`). Pure.

use sha2::{Digest as _, Sha256};

pub fn format_sha256(hash: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(7 + hash.len() * 2);
    s.push_str("sha256:");
    for b in hash {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

pub fn sha256_of(bytes: &[u8]) -> String {
    format_sha256(&Sha256::digest(bytes))
}

pub fn finish(hasher: Sha256) -> String {
    format_sha256(&hasher.finalize())
}

/// Checks the grammar of a sha256 digest (`--expect-digest`, `Docker-Content-Digest`).
pub fn is_sha256(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(
            sha256_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_sha256(&sha256_of(b"abc")));
        assert!(!is_sha256("sha256:ABC"));
        assert!(!is_sha256("sha512:e3b0"));
    }
}
