//! Just enough DER to read a certificate's SubjectPublicKeyInfo (an EC P-256 point or an RSA
//! modulus and exponent), so that an `x5c` leaf becomes the same [`PublicKey`] as a JWKS entry
//! and one verification path serves both. webpki has already parsed and checked the
//! certificate; this only picks the key out of the SPKI it hands back.

use super::keys::PublicKey;

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;

/// 1.2.840.10045.2.1
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// 1.2.840.10045.3.1.7
const PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// 1.2.840.113549.1.1.1
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// Reads one TLV of the expected tag; returns its contents and what follows.
fn take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 3 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The public key of a DER SubjectPublicKeyInfo, if it is P-256 or RSA.
pub(crate) fn public_key_from_spki(spki: &[u8]) -> Option<PublicKey> {
    let (body, _) = take(spki, SEQUENCE)?;
    let (algorithm, rest) = take(body, SEQUENCE)?;
    let (bits, _) = take(rest, BIT_STRING)?;
    // The first byte of a BIT STRING counts unused bits: always 0 for a key.
    let key = bits.strip_prefix(&[0])?;
    let (oid, params) = take(algorithm, OID)?;
    if oid == EC_PUBLIC_KEY {
        let (curve, _) = take(params, OID)?;
        if curve != PRIME256V1 {
            return None;
        }
        PublicKey::ec_p256(key)
    } else if oid == RSA_ENCRYPTION {
        let (seq, _) = take(key, SEQUENCE)?;
        let (n, rest) = take(seq, INTEGER)?;
        let (e, _) = take(rest, INTEGER)?;
        PublicKey::rsa(n, e)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths_and_refuses_truncation() {
        assert_eq!(
            take(&[0x02, 0x01, 0x05, 0xff], INTEGER),
            Some((&[5u8][..], &[0xffu8][..]))
        );
        let mut long = vec![0x04, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(7u8, 256));
        assert_eq!(
            take(&long, 0x04).map(|(c, r)| (c.len(), r.len())),
            Some((256, 0))
        );
        assert_eq!(take(&long[..100], 0x04), None);
        assert_eq!(take(&[0x02, 0x80], INTEGER), None);
        assert_eq!(take(&[0x03, 0x01, 0x00], INTEGER), None);
        assert_eq!(take(&[], INTEGER), None);
        assert_eq!(public_key_from_spki(&[0x30, 0x03, 0x02, 0x01, 0x00]), None);
    }
}
