//! Last-pull times, coalesced per thread: a pull is a map update on the worker that served it
//! (no lock, no allocation for a manifest pulled before), and the worker writes what gathered
//! as one [`super::WriteOp::RecordPulls`] every few seconds. A crash loses at most those
//! seconds of pull times, which only retention policies read, at day granularity.

use super::Pull;
use crate::oci::digest::Digest;
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    static NOTED: RefCell<HashMap<String, HashMap<Digest, i64>>> = RefCell::new(HashMap::new());
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
}
