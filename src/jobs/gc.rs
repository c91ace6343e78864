//! Scheduled garbage collection (`gc.interval`): one pass of [`crate::lifecycle::gc`] per
//! period, on this job's thread. On a fleet every node schedules it and the metadata's lock
//! lets one collect at a time; the others' passes find the lock taken and end at once.

use super::Job;
use crate::api::Registry;
use crate::config::value::Window;
use crate::lifecycle::gc::{self, Options};
use crate::meta::now_millis;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

pub struct Collection {
    reg: Arc<Registry>,
    interval: Duration,
    window: Option<Window>,
    opts: Options,
    /// Unix ms of the end of the last pass that ran (with a window: the job wakes every
    /// minute and collects when inside it and an interval has passed since).
    last: AtomicI64,
}

impl Collection {
    pub fn new(
        reg: Arc<Registry>,
        interval: Duration,
        window: Option<Window>,
        opts: Options,
    ) -> Self {
        Collection {
            reg,
            interval,
            window,
            opts,
            last: AtomicI64::new(0),
        }
    }

    /// Why a wake-up does not collect, if it does not.
    fn not_due(&self, now: i64) -> Option<String> {
        let w = self.window?;
        if !w.contains(now) {
            return Some("outside gc.window".into());
        }
        let since = now - self.last.load(Relaxed);
        (since < self.interval.as_millis() as i64).then(|| "collected within gc.interval".into())
    }
}

impl Job for Collection {
    fn name(&self) -> &'static str {
        "gc"
    }

    fn period(&self) -> Duration {
        match self.window {
            Some(_) => self.interval.min(Duration::from_secs(60)),
            None => self.interval,
        }
    }

    fn run(&self) -> Result<String, String> {
        if let Some(why) = self.not_due(now_millis()) {
            return Ok(why);
        }
        let report = gc::collect(
            &self.reg.meta,
            &self.reg.blobs,
            self.opts,
            self.reg.gc_rules(),
            &|_| {},
        )?;
        self.reg.gc.add(&report);
        self.last.store(now_millis(), Relaxed);
        if report.blobs + report.orphans + report.manifests > 0 {
            crate::log::info(format_args!(
                "garbage collection: {} in {:?}",
                report.summary(),
                report.elapsed
            ));
        }
        Ok(report.summary())
    }
}
