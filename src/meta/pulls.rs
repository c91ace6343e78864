//! Last-pull times (and blob uses, garbage collection's activity times), coalesced per thread: a pull is a map update on the worker that served it
//! (no lock, no allocation for a manifest pulled before), and the worker writes what gathered
//! as one [`super::WriteOp::RecordPulls`] every few seconds. A crash loses at most those
//! seconds of pull times, which only retention policies read, at day granularity.

use super::Pull;
use crate::oci::digest::Digest;
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    static NOTED: RefCell<HashMap<String, HashMap<Digest, i64>>> = RefCell::new(HashMap::new());
    /// Blobs asked for (HEAD), for garbage collection's grace period: by digest alone.
    static BLOBS: RefCell<HashMap<Digest, i64>> = RefCell::new(HashMap::new());
}

pub(super) fn note_blob(digest: &Digest, at: i64) {
    BLOBS.with(|noted| {
        let mut noted = noted.borrow_mut();
        match noted.get_mut(digest) {
            Some(last) => *last = (*last).max(at),
            None => {
                noted.insert(digest.clone(), at);
            }
        }
    });
}

pub(super) fn take_blobs() -> Vec<(Digest, i64)> {
    BLOBS.with(|noted| noted.borrow_mut().drain().collect())
}

pub(super) fn note(repo: &str, digest: &Digest, at: i64) {
    NOTED.with(|noted| {
        let mut noted = noted.borrow_mut();
        let by_digest = match noted.get_mut(repo) {
            Some(m) => m,
            None => noted.entry(repo.to_string()).or_default(),
        };
        match by_digest.get_mut(digest) {
            Some(last) => *last = (*last).max(at),
            None => {
                by_digest.insert(digest.clone(), at);
            }
        }
    });
}

pub(super) fn take() -> Vec<Pull> {
    NOTED.with(|noted| {
        noted
            .borrow_mut()
            .drain()
            .flat_map(|(repo, by_digest)| {
                by_digest.into_iter().map(move |(digest, at)| Pull {
                    repo: repo.clone(),
                    digest,
                    at,
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_coalesce_to_the_latest_per_manifest() {
        let d = Digest::sha256_of(b"m");
        note("r", &d, 5);
        note("r", &d, 9);
        note("r", &d, 7);
        note("s", &d, 1);
        let mut got = take();
        got.sort_by(|a, b| a.repo.cmp(&b.repo));
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].repo.as_str(), got[0].at), ("r", 9));
        assert_eq!((got[1].repo.as_str(), got[1].at), ("s", 1));
        assert!(take().is_empty());
    }

    #[test]
    fn blob_uses_coalesce_to_the_latest() {
        let d = Digest::sha256_of(b"b");
        note_blob(&d, 5);
        note_blob(&d, 3);
        assert_eq!(take_blobs(), vec![(d, 5)]);
        assert!(take_blobs().is_empty());
    }
}
