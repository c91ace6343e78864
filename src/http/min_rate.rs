//! The minimum transfer rate of a request body (`http.min_body_rate`). The body timeout alone
//! counts any byte as progress, so a client sending one byte a second would hold its connection
//! and upload session forever; here each window of the body timeout must bring at least
//! rate x window bytes. Pure: the caller says when bytes arrived.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct MinRate {
    /// Bytes per second; 0 checks nothing.
    per_sec: u64,
    window: Duration,
    /// When the current window began (the first read of the body), and its bytes so far.
    start: Option<Instant>,
    bytes: u64,
}

impl MinRate {
    pub fn new(per_sec: u64, window: Duration) -> MinRate {
        MinRate {
            per_sec,
            window,
            start: None,
            bytes: 0,
        }
    }

    /// Starts the first window, unless one is running: the clock starts when the body is
    /// first asked for, not while the handler was busy before it.
    pub fn begin(&mut self, now: Instant) {
        self.start.get_or_insert(now);
    }

    /// Counts `n` bytes received at `now`. False when a window ended with fewer bytes than
    /// the rate asks for over its length (a window is checked when the next read returns, so
    /// it can be longer than the body timeout; the rate then applies to its whole length).
    pub fn record(&mut self, n: usize, now: Instant) -> bool {
        let start = *self.start.get_or_insert(now);
        self.bytes += n as u64;
        let elapsed = now.saturating_duration_since(start);
        if self.per_sec == 0 || elapsed < self.window {
            return true;
        }
        let needed = u128::from(self.per_sec) * elapsed.as_millis() / 1000;
        if u128::from(self.bytes) < needed {
            return false;
        }
        self.start = Some(now);
        self.bytes = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_trickle_fails_at_the_end_of_its_window() {
        let t0 = Instant::now();
        let mut r = MinRate::new(1024, 2 * SEC);
        r.begin(t0);
        // 10 bytes a second: fine until the window is over.
        for i in 1..20 {
            assert!(r.record(1, t0 + i * SEC / 10), "at {i}00 ms");
        }
        assert!(!r.record(1, t0 + 2 * SEC));
    }

    #[test]
    fn an_adequate_rate_passes_window_after_window() {
        let t0 = Instant::now();
        let mut r = MinRate::new(1000, SEC);
        r.begin(t0);
        for i in 1..=50 {
            assert!(r.record(110, t0 + i * SEC / 10), "at {i}00 ms");
        }
        // A window checked late asks for the rate over its whole length.
        let mut r = MinRate::new(1000, SEC);
        r.begin(t0);
        assert!(r.record(1000, t0 + SEC / 2));
        assert!(!r.record(999, t0 + 2 * SEC));
    }

    #[test]
    fn zero_disables_it() {
        let t0 = Instant::now();
        let mut r = MinRate::new(0, SEC);
        r.begin(t0);
        assert!(r.record(0, t0 + 100 * SEC));
    }

    #[test]
    fn the_clock_starts_at_the_first_read() {
        let t0 = Instant::now();
        let mut r = MinRate::new(1000, SEC);
        r.begin(t0 + 10 * SEC);
        r.begin(t0 + 20 * SEC);
        assert!(r.record(1000, t0 + 11 * SEC));
    }
}
