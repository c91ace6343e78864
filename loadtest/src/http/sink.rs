//! Where a response body goes: counted always, hashed when asked, kept in memory only for
//! small documents (manifests), with a limit.

use crate::digest;
use crate::error::{Error, Kind, Result};
use sha2::{Digest as _, Sha256};

pub struct Sink {
    pub bytes: u64,
    hasher: Option<Sha256>,
    body: Option<Vec<u8>>,
    limit: usize,
}

impl Sink {
    /// Counts bytes only.
    pub fn count() -> Sink {
        Sink {
            bytes: 0,
            hasher: None,
            body: None,
            limit: 0,
        }
    }

    /// Counts and hashes (sha256).
    pub fn hash() -> Sink {
        Sink {
            hasher: Some(Sha256::new()),
            ..Sink::count()
        }
    }

    /// Counts, hashes if `hash`, and keeps up to `limit` bytes (more is an error).
    pub fn collect(limit: usize, hash: bool) -> Sink {
        Sink {
            hasher: hash.then(Sha256::new),
            body: Some(Vec::new()),
            limit,
            ..Sink::count()
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        self.bytes += data.len() as u64;
        if let Some(h) = &mut self.hasher {
            h.update(data);
        }
        if let Some(b) = &mut self.body {
            if b.len() + data.len() > self.limit {
                return Err(Error::new(
                    Kind::Size,
                    format!("document larger than {} bytes", self.limit),
                ));
            }
            b.extend_from_slice(data);
        }
        Ok(())
    }

    /// `sha256:<hex>` of what was fed, if hashing.
    pub fn digest(&mut self) -> Option<String> {
        self.hasher.take().map(digest::finish)
    }

    pub fn take_body(&mut self) -> Vec<u8> {
        self.body.take().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_counts_and_limits() {
        let mut s = Sink::collect(5, true);
        s.feed(b"ab").unwrap();
        s.feed(b"c").unwrap();
        assert_eq!(s.bytes, 3);
        assert_eq!(s.digest().unwrap(), digest::sha256_of(b"abc"));
        assert_eq!(s.take_body(), b"abc");
        let mut s = Sink::collect(2, false);
        assert_eq!(s.feed(b"abc").unwrap_err().kind, Kind::Size);
        let mut s = Sink::count();
        s.feed(b"xyz").unwrap();
        assert!(s.digest().is_none());
    }
}
