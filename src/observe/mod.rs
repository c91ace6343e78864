//! Operations: what a registry tells the people and systems running it. Metrics ([`metrics`]),
//! liveness and readiness ([`health`]), request ids and the access log (lines themselves are
//! formatted by [`crate::log`]).
//!
//! [`Ops`] is the shared part (one per server, in the [`crate::api::Registry`]); each worker
//! makes its own [`WorkerObs`] from it, through which its connections record every exchange.

pub(crate) mod connections;
pub(crate) mod health;
pub(crate) mod metrics;

pub use metrics::RouteClass;

use crate::http::request::Method;
use connections::Connections;
use metrics::WorkerMetrics;
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Sent back on every response; reused from the request when the client sent a usable one.
pub const REQUEST_ID_HEADER: &str = "X-Request-Id";

/// Longest client-provided request id reused.
pub const MAX_REQUEST_ID: usize = 128;

pub struct Ops {
    pub metrics_enabled: bool,
    pub access_log: bool,
    /// Client connections open on each worker (the connection limit counts their sum).
    pub connections: Arc<Connections>,
    pub readiness: health::Readiness,
    /// Every worker's counters, summed at scrape time; a worker that stopped stays, so that
    /// counters never go down.
    workers: Mutex<Vec<Arc<WorkerMetrics>>>,
    /// Random per process, so that ids from different processes and restarts differ.
    id_prefix: u64,
    started: SystemTime,
}

impl Ops {
    pub fn new(
        metrics_enabled: bool,
        access_log: bool,
        connections: Arc<Connections>,
        readiness: health::Readiness,
    ) -> Ops {
        let mut raw = [0u8; 8];
        if getrandom::getrandom(&mut raw).is_err() {
            // No entropy source: the clock still makes restarts differ.
            raw = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                .to_le_bytes();
        }
        Ops {
            metrics_enabled,
            access_log,
            connections,
            readiness,
            workers: Mutex::new(Vec::new()),
            id_prefix: u64::from_le_bytes(raw) & 0xffff_ffff_ffff,
            started: SystemTime::now(),
        }
    }

    /// A worker's own recorder, registered for scrapes.
    pub fn worker(&self, index: usize) -> WorkerObs {
        let metrics = Arc::new(WorkerMetrics::default());
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(metrics.clone());
        WorkerObs::new(metrics, self.access_log, self.id_prefix, index as u64)
    }

    /// The Prometheus exposition, with the gauges the caller read.
    pub fn render_metrics(&self, mut gauges: metrics::Gauges) -> String {
        let workers = self
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        gauges.log_lines_dropped = crate::log::dropped_lines();
        gauges.start_time = self
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics::render(&workers, &gauges)
    }
}

/// A request id, without allocating: `<process prefix>-<worker>-<counter>` in hex, or what the
/// client sent.
#[derive(Clone, Copy)]
pub struct RequestId {
    len: usize,
    bytes: [u8; MAX_REQUEST_ID],
}

impl RequestId {
    const EMPTY: RequestId = RequestId {
        len: 0,
        bytes: [0; MAX_REQUEST_ID],
    };

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }

    fn push(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Lowercase hex, at least `width` digits (at most 16).
    fn push_hex(&mut self, n: u64, width: u32) {
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(width.clamp(1, 16));
        for i in (0..digits).rev() {
            self.bytes[self.len] = b"0123456789abcdef"[((n >> (i * 4)) & 0xf) as usize];
            self.len += 1;
        }
    }
}

/// A client's id is reused when it is 1 to 128 visible ASCII characters (it goes into a
/// response header and the log as it is).
pub fn usable_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

/// One request as it ended, for the metrics and the access log.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    pub method: Method,
    pub route: RouteClass,
    /// Only a valid repository name (it comes from the URL).
    pub repository: Option<&'a str>,
    /// Who the request was from, once authenticated; None for anonymous.
    pub user: Option<&'a str>,
    pub status: u16,
    /// Request body bytes read.
    pub received: u64,
    /// Response body bytes written (none for HEAD, none if writing failed).
    pub sent: u64,
    /// From the request head read to the response written.
    pub elapsed: Duration,
    pub request_id: &'a str,
    pub remote: Option<SocketAddr>,
}

/// One worker's recorder. Not `Sync` by design: only its own event loop uses it.
pub struct WorkerObs {
    metrics: Arc<WorkerMetrics>,
    access_log: bool,
    /// `<process prefix>-<worker>-`, formatted once.
    id_head: RequestId,
    next_id: Cell<u64>,
}

impl WorkerObs {
    fn new(metrics: Arc<WorkerMetrics>, access_log: bool, prefix: u64, worker: u64) -> Self {
        let mut id_head = RequestId::EMPTY;
        id_head.push_hex(prefix, 12);
        id_head.push(b"-");
        id_head.push_hex(worker, 1);
        id_head.push(b"-");
        WorkerObs {
            metrics,
            access_log,
            id_head,
            next_id: Cell::new(0),
        }
    }

    /// The id of a new request: the client's `X-Request-Id` if usable, else a fresh one.
    pub fn request_id(&self, client: Option<&str>) -> RequestId {
        match client {
            Some(c) if usable_request_id(c) => {
                let mut id = RequestId::EMPTY;
                id.push(c.as_bytes());
                id
            }
            _ => {
                let n = self.next_id.get();
                self.next_id.set(n.wrapping_add(1));
                let mut id = self.id_head;
                id.push_hex(n, 1);
                id
            }
        }
    }

    /// Counts the exchange and writes its access line (when the access log is on).
    pub fn record(&self, x: &Exchange<'_>) {
        self.metrics
            .record(x.method, x.route, x.status, x.received, x.sent, x.elapsed);
        if self.access_log {
            crate::log::access(x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(prefix: u64, worker: u64) -> WorkerObs {
        WorkerObs::new(Arc::new(WorkerMetrics::default()), false, prefix, worker)
    }

    #[test]
    fn request_ids() {
        let w = obs(0xabc, 10);
        assert_eq!(w.request_id(None).as_str(), "000000000abc-a-0");
        assert_eq!(w.request_id(Some("")).as_str(), "000000000abc-a-1");
        assert_eq!(w.request_id(Some("has space")).as_str(), "000000000abc-a-2");
        assert_eq!(w.request_id(Some("ünicode")).as_str(), "000000000abc-a-3");
        assert_eq!(w.request_id(Some("client-42")).as_str(), "client-42");
        let long = "x".repeat(MAX_REQUEST_ID);
        assert_eq!(w.request_id(Some(&long)).as_str(), long);
        let longer = "x".repeat(MAX_REQUEST_ID + 1);
        assert_eq!(w.request_id(Some(&longer)).as_str(), "000000000abc-a-4");
        let big = obs(0xffff_ffff_ffff, u64::MAX);
        big.next_id.set(u64::MAX);
        assert_eq!(
            big.request_id(None).as_str(),
            "ffffffffffff-ffffffffffffffff-ffffffffffffffff"
        );
        assert_eq!(
            big.request_id(None).as_str(),
            "ffffffffffff-ffffffffffffffff-0"
        );
    }
}
