//! The scan job (`scan.poll`) and webhook delivery: each pass on its own thread, never an
//! event loop. Scans: push events become requests, an import's new data re-evaluates stored
//! results, pending scans run ([`crate::scan::service::Scanning::pass`]). Every node of a
//! fleet runs both; a scan row is taken by one node at a time (a conditional update), and
//! an outbox row is delivered by whichever node finds it due.

use super::Job;
use crate::api::Registry;
use crate::scan::service::Scanning;
use std::sync::Arc;
use std::time::Duration;

pub struct Scans {
    reg: Arc<Registry>,
    scanning: Arc<Scanning>,
    period: Duration,
}

impl Scans {
    pub fn new(reg: Arc<Registry>, scanning: Arc<Scanning>, period: Duration) -> Scans {
        Scans {
            reg,
            scanning,
            period,
        }
    }
}

impl Job for Scans {
    fn name(&self) -> &'static str {
        "scan"
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn run(&self) -> Result<String, String> {
        let uploads = &self.reg.uploads;
        self.scanning.pass(&self.reg.meta, &self.reg.blobs, &|| {
            uploads.active_sessions() > 0
        })
    }
}

pub struct Webhooks {
    scanning: Arc<Scanning>,
}

impl Webhooks {
    pub fn new(scanning: Arc<Scanning>) -> Webhooks {
        Webhooks { scanning }
    }
}

impl Job for Webhooks {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn run(&self) -> Result<String, String> {
        self.scanning.deliver()
    }
}
