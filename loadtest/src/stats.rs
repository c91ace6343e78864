//! Latency histograms (hdrhistogram, microsecond resolution, 3 significant digits) and the
//! report math: summaries, rates. Pure.

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::time::Duration;

/// Latencies in microseconds, 1 µs to 1 hour; longer values are clamped to the top.
#[derive(Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
    /// Failed operations of this kind (their latencies are not recorded).
    pub errors: u64,
}

const MAX_MICROS: u64 = 3_600_000_000;

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    pub fn new() -> Latencies {
        Latencies {
            hist: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"),
            errors: 0,
        }
    }

    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_MICROS);
        self.hist.saturating_record(us);
    }

    /// Records a plain value (e.g. MB/s of one upload, scaled by the caller).
    pub fn record_value(&mut self, v: u64) {
        self.hist.saturating_record(v.clamp(1, MAX_MICROS));
    }

    pub fn error(&mut self) {
        self.errors += 1;
    }

    pub fn merge(&mut self, other: &Latencies) {
        self.hist.add(&other.hist).expect("same bounds");
        self.errors += other.errors;
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Value at quantile `q` (0..=1) in the recorded unit, 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(q)
        }
    }

    pub fn summary(&self) -> Summary {
        let ms = |us: u64| us as f64 / 1000.0;
        let empty = self.hist.is_empty();
        Summary {
            count: self.count(),
            errors: self.errors,
            p50_ms: ms(self.quantile(0.50)),
            p90_ms: ms(self.quantile(0.90)),
            p99_ms: ms(self.quantile(0.99)),
            max_ms: if empty { 0.0 } else { ms(self.hist.max()) },
            mean_ms: if empty {
                0.0
            } else {
                self.hist.mean() / 1000.0
            },
        }
    }
}

/// Count of successes and errors, and latency quantiles of the successes in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count,
            "errors": self.errors,
            "p50_ms": round3(self.p50_ms),
            "p90_ms": round3(self.p90_ms),
            "p99_ms": round3(self.p99_ms),
            "max_ms": round3(self.max_ms),
            "mean_ms": round3(self.mean_ms),
        })
    }

    /// One line for humans: `count 2000  errors 0  p50 1.23 ms  p90 ...`.
    pub fn line(&self) -> String {
        format!(
            "count {:<7} errors {:<4} p50 {} p90 {} p99 {} max {}",
            self.count,
            self.errors,
            fmt_ms(self.p50_ms),
            fmt_ms(self.p90_ms),
            fmt_ms(self.p99_ms),
            fmt_ms(self.max_ms),
        )
    }
}

pub fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.3} ms")
    }
}

/// Per second; 0 for an empty interval.
pub fn per_second(amount: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        amount / secs
    } else {
        0.0
    }
}

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    per_second(bytes as f64 / 1e6, secs)
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut l = Latencies::new();
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        l.error();
        let s = l.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.errors, 1);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{}", s.p50_ms);
        assert!((s.p90_ms - 90.0).abs() < 0.1, "{}", s.p90_ms);
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{}", s.p99_ms);
        assert!((s.max_ms - 100.0).abs() < 0.1, "{}", s.max_ms);
        assert!((s.mean_ms - 50.5).abs() < 0.1, "{}", s.mean_ms);
    }

    #[test]
    fn empty_and_merge() {
        let e = Latencies::new().summary();
        assert_eq!((e.count, e.p99_ms, e.max_ms, e.mean_ms), (0, 0.0, 0.0, 0.0));
        let mut a = Latencies::new();
        a.record(Duration::from_micros(10));
        let mut b = Latencies::new();
        b.record(Duration::from_secs(2));
        b.error();
        a.merge(&b);
        let s = a.summary();
        assert_eq!((s.count, s.errors), (2, 1));
        assert!((s.max_ms - 2000.0).abs() < 2.0);
        // Sub-microsecond and huge values are clamped, not lost.
        a.record(Duration::ZERO);
        a.record(Duration::from_secs(10_000));
        assert_eq!(a.count(), 4);
    }

    #[test]
    fn rates() {
        assert_eq!(mb_per_s(2_000_000, 2.0), 1.0);
        assert_eq!(mb_per_s(5, 0.0), 0.0);
        assert_eq!(per_second(100.0, 4.0), 25.0);
        assert_eq!(round3(1.23456), 1.235);
        assert_eq!(fmt_ms(1500.0), "1.50 s");
        assert_eq!(fmt_ms(1.5), "1.500 ms");
    }
}
