//! State shared by all threads of one run: the deadline, the job counter, and the error
//! tally (by kind, with the first few errors printed to stderr as they happen).

use crate::error::{Error, Kind};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Errors printed to stderr before the rest are only counted.
const PRINT_FIRST: u64 = 10;

pub struct Run {
    pub started: Instant,
    /// No new job starts after this.
    pub deadline: Instant,
    pub timeout: Duration,
    total_jobs: AtomicU64,
    next_job: AtomicU64,
    errors: [AtomicU64; Kind::ALL.len()],
    printed: AtomicU64,
}

impl Run {
    pub fn new(total_jobs: u64, timeout: Duration, max_seconds: u64) -> Run {
        let started = Instant::now();
        Run {
            started,
            deadline: started + Duration::from_secs(max_seconds),
            timeout,
            total_jobs: AtomicU64::new(total_jobs),
            next_job: AtomicU64::new(0),
            errors: Default::default(),
            printed: AtomicU64::new(0),
        }
    }

    /// The next job index, or None when all were taken or the deadline passed.
    pub fn claim(&self) -> Option<u64> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let i = self.next_job.fetch_add(1, Ordering::Relaxed);
        (i < self.total_jobs.load(Ordering::Relaxed)).then_some(i)
    }

    /// Starts a new series of `total` jobs (the next phase of a workload). Call it between
    /// phases, when no thread is claiming.
    pub fn restart_jobs(&self, total: u64) {
        self.total_jobs.store(total, Ordering::Relaxed);
        self.next_job.store(0, Ordering::Relaxed);
    }

    /// Jobs that never started (deadline reached); counted as `not_run` errors.
    pub fn settle_unclaimed(&self) -> u64 {
        let total = self.total_jobs.load(Ordering::Relaxed);
        let claimed = self.next_job.load(Ordering::Relaxed).min(total);
        let left = total - claimed;
        if left > 0 {
            self.errors[Kind::NotRun.index()].fetch_add(left, Ordering::Relaxed);
            eprintln!("loadtest: --max-seconds reached; {left} job(s) not run");
        }
        left
    }

    pub fn error(&self, what: &str, e: &Error) {
        self.errors[e.kind.index()].fetch_add(1, Ordering::Relaxed);
        let n = self.printed.fetch_add(1, Ordering::Relaxed);
        if n < PRINT_FIRST {
            eprintln!("loadtest: error: {what}: {e}");
        } else if n == PRINT_FIRST {
            eprintln!("loadtest: further errors are only counted");
        }
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.iter().map(|e| e.load(Ordering::Relaxed)).sum()
    }

    pub fn error_kinds(&self) -> Value {
        let mut m = Map::new();
        for k in Kind::ALL {
            m.insert(
                k.name().to_string(),
                self.errors[k.index()].load(Ordering::Relaxed).into(),
            );
        }
        Value::Object(m)
    }

    /// `  errors    N (kind n, ...)`: the last line of every human-readable report.
    pub fn errors_line(&self, errors: u64) -> String {
        if errors > 0 {
            format!("  errors    {errors} ({})", self.error_kinds_line())
        } else {
            format!("  errors    {errors}")
        }
    }

    pub fn error_kinds_line(&self) -> String {
        Kind::ALL
            .iter()
            .filter_map(|k| {
                let n = self.errors[k.index()].load(Ordering::Relaxed);
                (n > 0).then(|| format!("{} {n}", k.name()))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_and_tally() {
        let r = Run::new(3, Duration::from_secs(1), 60);
        assert_eq!(r.claim(), Some(0));
        assert_eq!(r.claim(), Some(1));
        assert_eq!(r.settle_unclaimed(), 1);
        assert_eq!(r.claim(), Some(2));
        assert_eq!(r.claim(), None);
        r.error("x", &Error::new(Kind::Status, "HTTP 500"));
        assert_eq!(r.total_errors(), 2);
        assert_eq!(r.error_kinds()["status"], 1);
        assert_eq!(r.error_kinds()["not_run"], 1);
        assert_eq!(r.error_kinds_line(), "status 1, not_run 1");
        r.restart_jobs(1);
        assert_eq!(r.claim(), Some(0));
        assert_eq!(r.claim(), None);
        let late = Run::new(3, Duration::from_secs(1), 0);
        assert_eq!(late.claim(), None);
    }
}
