//! Upload expiry: a resumable upload session left idle longer than `storage.upload_expiry` is
//! discarded, its files and its metadata row. Idle means idle on every node: the rows decide
//! (see `Uploads::take_expired`), and any node sweeps a row whose own node is gone. Its log line names the repository, never the
//! session id: the id is the secret in the upload URL, and logs travel further than URLs.

use super::Job;
use crate::api::Registry;
use crate::config::value::format_duration;
use crate::meta::now_millis;
use std::sync::Arc;
use std::time::Duration;

pub struct UploadExpiry {
    reg: Arc<Registry>,
    period: Duration,
}

impl UploadExpiry {
    /// Checks every quarter of `expiry` (between 0.5 s and a minute): a session outlives its
    /// expiry by at most that much.
    pub fn new(reg: Arc<Registry>, expiry: Duration) -> UploadExpiry {
        UploadExpiry {
            reg,
            period: (expiry / 4).clamp(Duration::from_millis(500), Duration::from_secs(60)),
        }
    }
}

/// A span of unix milliseconds for a log line, to the second.
fn span(ms: i64) -> String {
    format_duration(Duration::from_secs(ms.max(0) as u64 / 1000))
}

impl Job for UploadExpiry {
    fn name(&self) -> &'static str {
        "upload_expiry"
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn run(&self) -> Result<String, String> {
        let uploads = &self.reg.uploads;
        let rows = crate::blocking::block_on(self.reg.meta.uploads())
            .map_err(|e| format!("reading upload sessions: {e}"))?;
        let now = now_millis();
        let expired = uploads.take_expired(&rows, now);
        let mut discarded = 0u64;
        let mut failed = Vec::new();
        for session in &expired {
            // This thread may block: the file's length is what is removed (the offset, unless
            // a write failed part way).
            let bytes =
                std::fs::metadata(session.data_path()).map_or(session.offset(), |m| m.len());
            let idle = span(now - uploads.last_used(session));
            let age = span(now - session.started);
            match uploads.discard_blocking(&self.reg.meta, session) {
                Ok(()) => {
                    discarded += bytes;
                    crate::log::info(format_args!(
                        "upload session in {} expired: idle {idle}, started {age} ago; \
                         {bytes} bytes discarded",
                        session.repo
                    ));
                }
                Err(e) => failed.push(format!(
                    "an expired upload session in {} (idle {idle}): {e}",
                    session.repo
                )),
            }
        }
        match failed.first() {
            None => Ok(format!(
                "{} session(s) expired, {discarded} bytes discarded",
                expired.len()
            )),
            Some(first) => Err(format!(
                "{} of {} expired upload session(s) not discarded; {first}",
                failed.len(),
                expired.len()
            )),
        }
    }
}
