//! When a failed S3 request is sent again, and after how long. Pure.
//!
//! Only a request that is safe to repeat is (the backend says which: GET, HEAD, DELETE, a PUT
//! of an object or part whose bytes are in memory or read again from a file's range, a
//! completion that recognises its own earlier success), and only for failures that may pass: S3 unreachable, a connection that
//! broke, S3 busy or failing inside (500, 502, 503, 504; `SlowDown`, `InternalError`,
//! `RequestTimeout`). Waits grow exponentially with full jitter (AWS's advice: many nodes
//! retrying after the same outage do not come back in step), and the number of tries is
//! bounded, so that a down S3 is answered with 503 in about a second, not waited out.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Tries of one request in all, the first included (1: never retried).
    pub max_tries: u32,
    /// The longest wait before the second try; doubled for each further one.
    pub base: Duration,
    /// No wait is longer than this.
    pub cap: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            max_tries: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        }
    }
}

impl Retry {
    /// The wait before try `tries + 1`, after `tries` (>= 1) failed: uniform in
    /// `[0, min(cap, base * 2^(tries-1))]`, drawn from `random`.
    pub fn backoff(&self, tries: u32, random: u64) -> Duration {
        let exp = tries.saturating_sub(1).min(20);
        let ceiling = self.base.saturating_mul(1 << exp).min(self.cap);
        let nanos = ceiling.as_nanos() as u64;
        Duration::from_nanos(random % (nanos + 1))
    }
}

/// Whether an S3 error answer may pass by itself (S3's own list of retryable errors).
pub fn retryable_status(status: u16, code: &str) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
        || matches!(code, "SlowDown" | "InternalError" | "RequestTimeout")
}

/// A random number for the jitter (not for secrets).
pub fn random() -> u64 {
    let mut b = [0u8; 8];
    // The OS's source cannot fail on Linux once the pool is seeded; a zero only means no wait.
    let _ = getrandom::getrandom(&mut b);
    u64::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_and_are_jittered_below_it() {
        let r = Retry {
            max_tries: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(350),
        };
        let ms = Duration::from_millis;
        assert_eq!(r.backoff(1, 100_000_000), ms(100));
        assert_eq!(
            r.backoff(1, 100_000_001),
            Duration::ZERO,
            "drawn in [0, ceiling]"
        );
        assert_eq!(r.backoff(2, 200_000_000), ms(200));
        assert_eq!(r.backoff(3, 350_000_000), ms(350), "the cap");
        assert_eq!(r.backoff(30, 350_000_000), ms(350), "no overflow");
        assert_eq!(r.backoff(2, 0), Duration::ZERO);
        let draws: Vec<Duration> = (0..64).map(|_| r.backoff(4, random())).collect();
        assert!(draws.iter().all(|d| *d <= ms(350)));
        assert!(
            draws.iter().any(|d| *d != draws[0]),
            "jitter spreads the waits"
        );
    }

    #[test]
    fn which_s3_answers_may_pass() {
        assert!(retryable_status(503, "SlowDown"));
        assert!(retryable_status(500, "InternalError"));
        assert!(retryable_status(502, ""));
        assert!(retryable_status(400, "RequestTimeout"));
        assert!(!retryable_status(404, "NoSuchKey"));
        assert!(!retryable_status(403, "SignatureDoesNotMatch"));
        assert!(!retryable_status(400, "InvalidPart"));
    }
}
