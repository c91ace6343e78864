//! Deterministic, unique blob bytes, fast enough that the client is never the bottleneck.
//!
//! A 64 MiB random base buffer is drawn once from the seed (splitmix64). Blob `b` is the base
//! read cyclically from a start page chosen by `(seed, b)`, with the first 16 bytes of every
//! 4 KiB page replaced by `(tag(seed, b), page index)` in little endian. So each page of each
//! blob is unique (no registry can deduplicate, by blob or by chunk), the same `(seed, b)`
//! gives the same bytes on every run and machine, and producing bytes is a memcpy plus one
//! 16-byte store per page. Pure.

use std::sync::Arc;

pub const PAGE: usize = 4096;
const HEADER: usize = 16;
pub const BASE_LEN: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct Generator {
    base: Arc<Vec<u8>>,
    seed: u64,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    mix(*state)
}

/// The splitmix64 finalizer: a bijection on u64.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator::with_base_len(seed, BASE_LEN)
    }

    /// `base_len` must be a power of two and a multiple of the page size (tests use small ones).
    pub fn with_base_len(seed: u64, base_len: usize) -> Generator {
        assert!(base_len.is_power_of_two() && base_len >= PAGE);
        let mut base = vec![0u8; base_len];
        let mut state = seed;
        for word in base.chunks_exact_mut(8) {
            word.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
        }
        Generator {
            base: Arc::new(base),
            seed,
        }
    }

    /// The per-blob tag written into each page header: distinct for distinct blobs of a seed.
    fn tag(&self, blob: u64) -> u64 {
        mix(self.seed ^ 0x5851_F42D_4C95_7F2D) ^ blob
    }

    fn start(&self, blob: u64) -> usize {
        let pages = self.base.len() / PAGE;
        (mix(self.tag(blob)) as usize % pages) * PAGE
    }

    /// Generates the whole of blob `blob` (`size` bytes) through `buf`, handing each filled
    /// piece to `each` in order; stops at the first error.
    pub fn stream<E>(
        &self,
        blob: u64,
        size: u64,
        buf: &mut [u8],
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut off = 0;
        while off < size {
            let n = (size - off).min(buf.len() as u64) as usize;
            self.fill(blob, off, &mut buf[..n]);
            each(&buf[..n])?;
            off += n as u64;
        }
        Ok(())
    }

    /// Writes bytes `offset..offset + out.len()` of blob `blob` into `out`.
    pub fn fill(&self, blob: u64, offset: u64, out: &mut [u8]) {
        let mask = self.base.len() - 1;
        let start = self.start(blob);
        // Copy from the cyclic base.
        let mut done = 0;
        while done < out.len() {
            let at = (start + ((offset as usize).wrapping_add(done) & mask)) & mask;
            let n = (out.len() - done).min(self.base.len() - at);
            out[done..done + n].copy_from_slice(&self.base[at..at + n]);
            done += n;
        }
        // Stamp the page headers that fall (even partly) inside the range.
        let tag = self.tag(blob).to_le_bytes();
        let end = offset + out.len() as u64;
        let mut page = offset / PAGE as u64;
        loop {
            let p0 = page * PAGE as u64;
            if p0 >= end {
                break;
            }
            let mut header = [0u8; HEADER];
            header[..8].copy_from_slice(&tag);
            header[8..].copy_from_slice(&page.to_le_bytes());
            let h0 = p0.max(offset);
            let h1 = (p0 + HEADER as u64).min(end);
            if h0 < h1 {
                let src = &header[(h0 - p0) as usize..(h1 - p0) as usize];
                let dst = (h0 - offset) as usize;
                out[dst..dst + src.len()].copy_from_slice(src);
            }
            page += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(g: &Generator, b: u64, len: usize, piece: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let mut off = 0;
        while off < len {
            let n = piece.min(len - off);
            g.fill(b, off as u64, &mut out[off..off + n]);
            off += n;
        }
        out
    }

    #[test]
    fn same_bytes_whatever_the_chunking() {
        let g = Generator::with_base_len(7, 64 * 1024);
        let whole = blob(&g, 3, 200_000, 200_000);
        for piece in [1, 7, 15, 16, 17, 4095, 4096, 4097, 65536, 70000] {
            assert_eq!(blob(&g, 3, 200_000, piece), whole, "piece {piece}");
        }
    }

    #[test]
    fn deterministic_and_unique() {
        let g = Generator::with_base_len(7, 64 * 1024);
        let g2 = Generator::with_base_len(7, 64 * 1024);
        assert_eq!(blob(&g, 1, 10_000, 10_000), blob(&g2, 1, 10_000, 10_000));
        assert_ne!(blob(&g, 1, 10_000, 10_000), blob(&g, 2, 10_000, 10_000));
        let other = Generator::with_base_len(8, 64 * 1024);
        assert_ne!(blob(&g, 1, 10_000, 10_000), blob(&other, 1, 10_000, 10_000));
        // Pages never repeat, even where the base wraps around.
        let b = blob(&g, 5, 64 * 1024 * 3, 65536);
        let mut pages: Vec<&[u8]> = b.chunks(PAGE).collect();
        let n = pages.len();
        pages.sort();
        pages.dedup();
        assert_eq!(pages.len(), n);
    }

    #[test]
    fn header_layout() {
        let g = Generator::with_base_len(1, 64 * 1024);
        let b = blob(&g, 9, 2 * PAGE, 100);
        assert_eq!(&b[PAGE + 8..PAGE + 16], &1u64.to_le_bytes());
        assert_eq!(&b[8..16], &0u64.to_le_bytes());
        assert_eq!(&b[..8], &b[PAGE..PAGE + 8]);
    }
}
