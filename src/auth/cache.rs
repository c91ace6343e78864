//! Successful password checks, remembered for a while so that a push (hundreds of requests,
//! each with the same Basic header) costs one bcrypt rather than one per request
//! (distribution#3017: a push took over an hour at cost 12).
//!
//! An entry is found by a fingerprint: SHA-256 over a per-process random key, the htpasswd
//! generation, the user and the password. So a changed password misses (another fingerprint),
//! a reload misses (another generation), and the table holds no password nor anything that
//! could be checked against a guess without the key, which never leaves the process. Entries
//! live [`TTL`] at most; the table holds at most [`CAPACITY`] of them (when full, the expired
//! go, and if none had, all: the next requests pay one bcrypt each).

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub const TTL: Duration = Duration::from_secs(300);
pub const CAPACITY: usize = 10_000;

pub type Fingerprint = [u8; 32];

pub struct Cache {
    key: [u8; 32],
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<Fingerprint, (Arc<str>, Instant)>>,
}

impl Cache {
    pub fn new(ttl: Duration, capacity: usize) -> Cache {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).expect("the system's random source");
        Cache {
            key,
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn fingerprint(&self, generation: u64, user: &str, password: &str) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(generation.to_le_bytes());
        // the length keeps ("ab", "c") and ("a", "bc") apart
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// The user a fingerprint was verified for, while it is fresh.
    pub fn get(&self, fp: &Fingerprint, now: Instant) -> Option<Arc<str>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(fp) {
            Some((user, at)) if now.duration_since(*at) < self.ttl => Some(user.clone()),
            _ => None,
        }
    }

    pub fn put(&self, fp: Fingerprint, user: Arc<str>, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&fp) {
            entries.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(fp, (user, now));
    }

    /// Forgets everything (after a reload: the old generation's entries can never match).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_separate_users_passwords_generations_and_processes() {
        let c = Cache::new(TTL, 10);
        let fp = c.fingerprint(1, "alice", "pw");
        assert_eq!(fp, c.fingerprint(1, "alice", "pw"));
        assert_ne!(fp, c.fingerprint(2, "alice", "pw"));
        assert_ne!(fp, c.fingerprint(1, "alice", "pw2"));
        assert_ne!(fp, c.fingerprint(1, "alicep", "w"));
        assert_ne!(fp, Cache::new(TTL, 10).fingerprint(1, "alice", "pw"));
    }

    #[test]
    fn entries_expire_and_the_table_stays_bounded() {
        let c = Cache::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        let fp = |n: u8| [n; 32];
        c.put(fp(1), "a".into(), t0);
        assert_eq!(
            c.get(&fp(1), t0 + Duration::from_secs(9)).as_deref(),
            Some("a")
        );
        assert_eq!(c.get(&fp(1), t0 + Duration::from_secs(10)), None);
        assert_eq!(c.get(&fp(2), t0), None);
        c.put(fp(2), "b".into(), t0 + Duration::from_secs(5));
        c.put(fp(3), "c".into(), t0 + Duration::from_secs(5));
        // full: the expired one goes
        c.put(fp(4), "d".into(), t0 + Duration::from_secs(11));
        assert_eq!(c.len(), 3);
        assert_eq!(
            c.get(&fp(2), t0 + Duration::from_secs(11)).as_deref(),
            Some("b")
        );
        // full of fresh ones: all go
        c.put(fp(5), "e".into(), t0 + Duration::from_secs(12));
        assert_eq!(c.len(), 1);
        c.clear();
        assert!(c.is_empty());
    }
}
