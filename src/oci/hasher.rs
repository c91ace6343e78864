//! Streaming sha256/sha512 whose running state can be saved and restored, so that an upload
//! session resumed after a restart goes on hashing where it stopped instead of reading back
//! everything it already has.
//!
//! sha2 0.10 keeps its state private; its block functions (`compress256`/`compress512`) are
//! public and pick SHA-NI / AVX2 at run time, so this is only the buffering and padding around
//! them, the same that sha2's own wrapper does. The state is the chaining words, the partial
//! block and the length: saved as bytes with a version and the algorithm, and refused when
//! anything in it does not add up.

use super::digest::{Algorithm, Digest};
use sha2::digest::generic_array::{ArrayLength, GenericArray};

const SHA256_INIT: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
const SHA512_INIT: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

/// Version of the saved form; bump it whenever the layout changes.
const STATE_VERSION: u8 = 1;

enum Words {
    Sha256([u32; 8]),
    Sha512([u64; 8]),
}

/// Incremental hashing of a blob as its bytes stream in.
pub struct Hasher {
    words: Words,
    /// The bytes of a block not yet complete: `pending` of them.
    block: [u8; 128],
    pending: usize,
    /// Bytes hashed so far, partial block included.
    len: u64,
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        Hasher {
            words: match algorithm {
                Algorithm::Sha256 => Words::Sha256(SHA256_INIT),
                Algorithm::Sha512 => Words::Sha512(SHA512_INIT),
            },
            block: [0; 128],
            pending: 0,
            len: 0,
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.words {
            Words::Sha256(_) => Algorithm::Sha256,
            Words::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// How many bytes this hasher has seen.
    pub fn bytes_hashed(&self) -> u64 {
        self.len
    }

    fn block_len(&self) -> usize {
        match self.words {
            Words::Sha256(_) => 64,
            Words::Sha512(_) => 128,
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        let bl = self.block_len();
        if self.pending > 0 {
            let take = (bl - self.pending).min(bytes.len());
            self.block[self.pending..self.pending + take].copy_from_slice(&bytes[..take]);
            self.pending += take;
            bytes = &bytes[take..];
            if self.pending < bl {
                return;
            }
            let block = self.block;
            compress(&mut self.words, &block[..bl]);
            self.pending = 0;
        }
        let whole = bytes.len() / bl * bl;
        compress(&mut self.words, &bytes[..whole]);
        let rest = &bytes[whole..];
        self.block[..rest.len()].copy_from_slice(rest);
        self.pending = rest.len();
    }

    pub fn finish(mut self) -> Digest {
        let bl = self.block_len();
        // Padding: 0x80, zeros, then the length in bits, big-endian, ending a block.
        let len_field = bl / 8;
        let bits = u128::from(self.len) * 8;
        let mut tail = [0u8; 256];
        tail[..self.pending].copy_from_slice(&self.block[..self.pending]);
        tail[self.pending] = 0x80;
        let total = if self.pending + 1 + len_field <= bl {
            bl
        } else {
            2 * bl
        };
        tail[total - len_field..total].copy_from_slice(&bits.to_be_bytes()[16 - len_field..]);
        compress(&mut self.words, &tail[..total]);
        let raw: Vec<u8> = match self.words {
            Words::Sha256(w) => w.iter().flat_map(|x| x.to_be_bytes()).collect(),
            Words::Sha512(w) => w.iter().flat_map(|x| x.to_be_bytes()).collect(),
        };
        Digest::from_raw(self.algorithm(), &raw)
    }

    /// The running state as bytes: version, algorithm, words, length, partial block.
    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + 64 + 8 + 1 + self.pending);
        out.push(STATE_VERSION);
        match &self.words {
            Words::Sha256(w) => {
                out.push(1);
                w.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_be_bytes()));
            }
            Words::Sha512(w) => {
                out.push(2);
                w.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_be_bytes()));
            }
        }
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&self.block[..self.pending]);
        out
    }

    /// The hasher `save` described, or None when the bytes are not a state this version wrote
    /// (unknown version or algorithm, wrong size, a partial block that disagrees with the
    /// length).
    pub fn restore(saved: &[u8]) -> Option<Hasher> {
        let (&version, rest) = saved.split_first()?;
        let (&alg, rest) = rest.split_first()?;
        if version != STATE_VERSION {
            return None;
        }
        let (words, rest) = match alg {
            1 => {
                let (raw, rest) = rest.split_at_checked(32)?;
                let mut w = [0u32; 8];
                for (x, b) in w.iter_mut().zip(raw.chunks_exact(4)) {
                    *x = u32::from_be_bytes(b.try_into().ok()?);
                }
                (Words::Sha256(w), rest)
            }
            2 => {
                let (raw, rest) = rest.split_at_checked(64)?;
                let mut w = [0u64; 8];
                for (x, b) in w.iter_mut().zip(raw.chunks_exact(8)) {
                    *x = u64::from_be_bytes(b.try_into().ok()?);
                }
                (Words::Sha512(w), rest)
            }
            _ => return None,
        };
        let (len, partial) = rest.split_at_checked(8)?;
        let len = u64::from_be_bytes(len.try_into().ok()?);
        let mut h = Hasher {
            words,
            block: [0; 128],
            pending: partial.len(),
            len,
        };
        if (len % h.block_len() as u64) as usize != partial.len() {
            return None;
        }
        h.block[..partial.len()].copy_from_slice(partial);
        Some(h)
    }
}

/// Runs whole blocks of `bytes` (a multiple of the block length) through the compression
/// function, all in one call so the SHA-NI loop stays hot.
fn compress(words: &mut Words, bytes: &[u8]) {
    match words {
        Words::Sha256(w) => sha2::compress256(w, as_blocks(bytes)),
        Words::Sha512(w) => sha2::compress512(w, as_blocks(bytes)),
    }
}

fn as_blocks<N: ArrayLength<u8>>(bytes: &[u8]) -> &[GenericArray<u8, N>] {
    debug_assert_eq!(bytes.len() % N::USIZE, 0);
    let n = bytes.len() / N::USIZE;
    // SAFETY: `GenericArray<u8, N>` is a `repr(transparent)` array of `N` bytes (alignment 1),
    // and the `n` blocks lie inside `bytes`; block-buffer, under sha2's own hashers, casts the
    // same way.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), n) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn reference(algorithm: Algorithm, bytes: &[u8]) -> Vec<u8> {
        match algorithm {
            Algorithm::Sha256 => sha2::Sha256::digest(bytes).to_vec(),
            Algorithm::Sha512 => sha2::Sha512::digest(bytes).to_vec(),
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Every length around the padding edges, fed in awkward pieces and through a save and
    /// restore in the middle, gives sha2's own digest.
    #[test]
    fn matches_sha2_across_pieces_and_restores() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            for len in (0..300).chain([1000, 4096 + 3, 100_000]) {
                let data = pattern(len);
                let want = Digest::from_raw(algorithm, &reference(algorithm, &data));
                let mut h = Hasher::new(algorithm);
                let mut rest = &data[..];
                let mut piece = 1;
                while !rest.is_empty() {
                    let n = piece.min(rest.len());
                    h.update(&rest[..n]);
                    rest = &rest[n..];
                    piece = piece * 3 + 1;
                    h = Hasher::restore(&h.save()).expect("own state restores");
                }
                assert_eq!(h.bytes_hashed(), len as u64);
                assert_eq!(h.finish(), want, "{algorithm:?} {len}");
            }
        }
    }

    #[test]
    fn refuses_states_it_did_not_write() {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"hello");
        let good = h.save();
        assert!(Hasher::restore(&good).is_some());
        let mut bad_version = good.clone();
        bad_version[0] = 9;
        let mut bad_alg = good.clone();
        bad_alg[1] = 3;
        let mut extra = good.clone();
        extra.push(0);
        for bad in [
            &b""[..],
            &[STATE_VERSION][..],
            &bad_version,
            &bad_alg,
            &good[..good.len() - 1],
            &extra,
            &good[..10],
        ] {
            assert!(Hasher::restore(bad).is_none(), "{bad:?}");
        }
    }

    /// Not a check, a measurement to run by hand: `cargo test --release --lib hasher_speed --
    /// --ignored --nocapture`. sha2's own streaming hasher against this one over 1 GiB fed in
    /// upload-sized buffers.
    #[test]
    #[ignore]
    fn hasher_speed() {
        let buf = pattern(1024 * 1024);
        let time = |f: &mut dyn FnMut()| {
            let t = std::time::Instant::now();
            f();
            1024.0 / t.elapsed().as_secs_f64()
        };
        for round in 0..2 {
            let mut sha2_own = sha2::Sha256::new();
            let a = time(&mut || (0..1024).for_each(|_| sha2_own.update(&buf)));
            let mut ours = Hasher::new(Algorithm::Sha256);
            let b = time(&mut || (0..1024).for_each(|_| ours.update(&buf)));
            assert_eq!(ours.finish().hex().len(), 64);
            println!("round {round}: sha2::Sha256 {a:.0} MiB/s, Hasher {b:.0} MiB/s");
        }
    }
}
