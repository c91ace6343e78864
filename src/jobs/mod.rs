//! Background jobs: periodic maintenance (upload expiry today; garbage collection, retention,
//! scans and webhook delivery later), each on a thread of its own, never on an event loop, so
//! a job may block on the filesystem or the metadata engine without delaying any client.
//!
//! A [`Job`] does one pass when asked. The runner ([`Jobs`]) asks every period, or at once on
//! [`Jobs::trigger`]; a failing or panicking pass is logged, counted, and the schedule goes on.
//! Each job's counters live in a [`Board`] that the registry holds, so `/metrics` reads them
//! without reaching the runner (whose jobs themselves hold the registry).

pub(crate) mod gc;
pub(crate) mod scan;
pub(crate) mod upload_expiry;

use crate::observe::metrics::JobFigures;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One kind of background work.
pub trait Job: Send + 'static {
    /// Names the job in metrics (`job` label), logs and triggers: short, lowercase, stable.
    fn name(&self) -> &'static str;
    /// Time from the end of one scheduled pass to the start of the next.
    fn period(&self) -> Duration;
    /// One pass, blocking as long as it needs: a one-line summary, or why it failed.
    fn run(&self) -> Result<String, String>;
}

/// What [`Jobs::trigger`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A pass starts now (or as soon as the job's thread wakes).
    Started,
    /// A pass is running already; it is not doubled.
    AlreadyRunning,
    /// No job of that name.
    Unknown,
}

/// Every job's counters, for `/metrics`.
#[derive(Default)]
pub struct Board {
    slots: Mutex<Vec<Arc<Slot>>>,
}

impl Board {
    pub fn figures(&self) -> Vec<JobFigures> {
        lock(&self.slots).iter().map(|s| s.figures()).collect()
    }
}

/// One job's schedule control and counters, shared by its thread, the runner and the board.
struct Slot {
    name: &'static str,
    control: Mutex<Control>,
    wake: Condvar,
    runs: AtomicU64,
    failures: AtomicU64,
    /// Unix milliseconds of the end of the last successful pass; 0 before the first.
    last_success_ms: AtomicU64,
    duration_nanos: AtomicU64,
}

#[derive(Default)]
struct Control {
    stopping: bool,
    triggered: bool,
    running: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slot {
    fn figures(&self) -> JobFigures {
        JobFigures {
            name: self.name,
            runs: self.runs.load(Relaxed),
            failures: self.failures.load(Relaxed),
            last_success: self.last_success_ms.load(Relaxed) as f64 / 1000.0,
            duration_seconds: self.duration_nanos.load(Relaxed) as f64 / 1e9,
        }
    }

    /// Sleeps until the next pass is due, triggered, or the runner stops (`false`).
    fn wait_turn(&self, due: Instant) -> bool {
        let mut c = lock(&self.control);
        loop {
            if c.stopping {
                return false;
            }
            if c.triggered {
                c.triggered = false;
                break;
            }
            let now = Instant::now();
            if now >= due {
                break;
            }
            c = self
                .wake
                .wait_timeout(c, due - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        c.running = true;
        true
    }

    fn record(&self, elapsed: Duration, ok: bool) {
        self.runs.fetch_add(1, Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.duration_nanos.fetch_add(nanos, Relaxed);
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.last_success_ms.store(now, Relaxed);
        } else {
            self.failures.fetch_add(1, Relaxed);
        }
        lock(&self.control).running = false;
    }
}

/// The running jobs: one thread each.
pub struct Jobs {
    threads: Vec<(Arc<Slot>, JoinHandle<()>)>,
}

impl Jobs {
    /// Starts a thread per job, its first pass one period from now; their counters go on
    /// `board`.
    pub fn start(board: &Board, jobs: Vec<Box<dyn Job>>) -> std::io::Result<Jobs> {
        let mut running = Jobs {
            threads: Vec::new(),
        };
        for job in jobs {
            let slot = Arc::new(Slot {
                name: job.name(),
                control: Mutex::new(Control::default()),
                wake: Condvar::new(),
                runs: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                last_success_ms: AtomicU64::new(0),
                duration_nanos: AtomicU64::new(0),
            });
            let s = slot.clone();
            // On failure `running` is dropped, which stops the threads started so far.
            let handle = thread::Builder::new()
                .name(format!("ringyard-job-{}", job.name()))
                .spawn(move || schedule(job.as_ref(), &s))?;
            lock(&board.slots).push(slot.clone());
            running.threads.push((slot, handle));
        }
        Ok(running)
    }

    /// Runs the job `name` now, unless a pass of it is running already.
    pub fn trigger(&self, name: &str) -> Trigger {
        let Some((slot, _)) = self.threads.iter().find(|(s, _)| s.name == name) else {
            return Trigger::Unknown;
        };
        let mut c = lock(&slot.control);
        if c.running {
            return Trigger::AlreadyRunning;
        }
        c.triggered = true;
        slot.wake.notify_one();
        Trigger::Started
    }

    /// Stops every schedule at once (a sleeping one wakes to stop) and waits up to `within`
    /// for passes in progress; a pass still running then is left to finish on its own.
    pub fn stop(mut self, within: Duration) {
        self.signal_stop();
        let deadline = Instant::now() + within;
        for (slot, handle) in std::mem::take(&mut self.threads) {
            while !handle.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                crate::log::warn(format_args!(
                    "job {}: a pass still running after {within:?}; not waiting for it",
                    slot.name
                ));
            }
        }
    }

    fn signal_stop(&self) {
        for (slot, _) in &self.threads {
            lock(&slot.control).stopping = true;
            slot.wake.notify_one();
        }
    }
}

impl Drop for Jobs {
    /// Dropped without [`Jobs::stop`] (a failed start): the threads end after their pass.
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// A job's thread: a pass every period (or when triggered) until stopped.
fn schedule(job: &dyn Job, slot: &Slot) {
    let period = job.period();
    let mut due = Instant::now() + period;
    while slot.wait_turn(due) {
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| job.run())).unwrap_or_else(|panic| {
            let cause = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            Err(format!("panicked: {cause}"))
        });
        let elapsed = started.elapsed();
        match &outcome {
            Ok(summary) => {
                crate::log::debug(format_args!("job {}: {summary} ({elapsed:?})", slot.name))
            }
            Err(e) => crate::log::warn(format_args!("job {} failed: {e}", slot.name)),
        }
        slot.record(elapsed, outcome.is_ok());
        due = Instant::now() + period;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Reports each pass on a channel; fails the passes whose number is in `fail`, panics on
    /// those in `panic`, and takes `busy` per pass.
    struct Probe {
        period: Duration,
        busy: Duration,
        fail: Vec<u32>,
        panic: Vec<u32>,
        pass: AtomicU64,
        done: Mutex<mpsc::Sender<Instant>>,
    }

    impl Job for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn period(&self) -> Duration {
            self.period
        }
        fn run(&self) -> Result<String, String> {
            let n = self.pass.fetch_add(1, Relaxed) as u32;
            thread::sleep(self.busy);
            let _ = lock(&self.done).send(Instant::now());
            if self.panic.contains(&n) {
                panic!("pass {n} panics");
            }
            if self.fail.contains(&n) {
                return Err(format!("pass {n} fails"));
            }
            Ok(format!("pass {n}"))
        }
    }

    fn probe(period: Duration) -> (Probe, mpsc::Receiver<Instant>) {
        let (tx, rx) = mpsc::channel();
        let p = Probe {
            period,
            busy: Duration::ZERO,
            fail: Vec::new(),
            panic: Vec::new(),
            pass: AtomicU64::new(0),
            done: Mutex::new(tx),
        };
        (p, rx)
    }

    const PATIENCE: Duration = Duration::from_secs(10);

    /// Until the (only) job's thread has started a pass.
    fn wait_running(jobs: &Jobs) {
        let deadline = Instant::now() + PATIENCE;
        while !lock(&jobs.threads[0].0.control).running {
            assert!(Instant::now() < deadline, "the pass never started");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn runs_every_period_and_counts() {
        let board = Board::default();
        let (p, rx) = probe(Duration::from_millis(50));
        let t0 = Instant::now();
        let jobs = Jobs::start(&board, vec![Box::new(p)]).unwrap();
        for _ in 0..3 {
            rx.recv_timeout(PATIENCE).expect("a pass every period");
        }
        assert!(t0.elapsed() >= Duration::from_millis(150), "three periods");
        jobs.stop(PATIENCE);
        let f = &board.figures()[0];
        assert_eq!(f.name, "probe");
        assert!(f.runs >= 3, "{}", f.runs);
        assert_eq!(f.failures, 0);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(f.last_success > now.as_secs_f64() - 60.0);
        assert!(f.duration_seconds >= 0.0);
    }

    #[test]
    fn trigger_runs_at_once_and_is_not_doubled() {
        let board = Board::default();
        let (mut p, rx) = probe(Duration::from_secs(3600));
        p.busy = Duration::from_secs(1);
        let jobs = Jobs::start(&board, vec![Box::new(p)]).unwrap();
        assert_eq!(jobs.trigger("nothing"), Trigger::Unknown);
        assert_eq!(jobs.trigger("probe"), Trigger::Started);
        wait_running(&jobs);
        assert_eq!(jobs.trigger("probe"), Trigger::AlreadyRunning);
        rx.recv_timeout(PATIENCE).expect("the triggered pass");
        assert!(
            rx.recv_timeout(Duration::from_millis(500)).is_err(),
            "a trigger during a pass must not cause a second one"
        );
        assert_eq!(board.figures()[0].runs, 1);
        jobs.stop(PATIENCE);
    }

    #[test]
    fn stop_while_sleeping_returns_promptly() {
        let board = Board::default();
        let (p, _rx) = probe(Duration::from_secs(3600));
        let jobs = Jobs::start(&board, vec![Box::new(p)]).unwrap();
        thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        jobs.stop(PATIENCE);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert_eq!(board.figures()[0].runs, 0);
    }

    #[test]
    fn stop_waits_for_a_running_pass() {
        let board = Board::default();
        let (mut p, rx) = probe(Duration::from_secs(3600));
        p.busy = Duration::from_millis(200);
        let jobs = Jobs::start(&board, vec![Box::new(p)]).unwrap();
        assert_eq!(jobs.trigger("probe"), Trigger::Started);
        wait_running(&jobs);
        jobs.stop(PATIENCE);
        assert!(rx.try_recv().is_ok(), "stop returned before the pass ended");
        assert_eq!(board.figures()[0].runs, 1);
    }

    #[test]
    fn failing_and_panicking_passes_are_counted_and_the_schedule_goes_on() {
        let board = Board::default();
        let (mut p, rx) = probe(Duration::from_millis(30));
        p.fail = vec![0, 2];
        p.panic = vec![1];
        let jobs = Jobs::start(&board, vec![Box::new(p)]).unwrap();
        for _ in 0..4 {
            rx.recv_timeout(PATIENCE)
                .expect("passes go on after failures");
        }
        // The fourth pass has reported; wait for its outcome to be recorded.
        let deadline = Instant::now() + PATIENCE;
        while board.figures()[0].runs < 4 {
            assert!(Instant::now() < deadline);
            thread::sleep(Duration::from_millis(1));
        }
        jobs.stop(PATIENCE);
        let f = &board.figures()[0];
        assert_eq!(f.failures, 3, "two errors and a panic");
        assert!(f.runs >= 4);
        assert!(f.last_success > 0.0, "the fourth pass succeeded");
    }
}
