//! Request metrics, counted per worker and summed when scraped, and the Prometheus text
//! exposition format (0.0.4) of everything `/metrics` reports.
//!
//! Each worker owns one [`WorkerMetrics`]: fixed arrays of atomics indexed by method, route
//! class, status slot and latency bucket, written only by that worker's thread. Recording a
//! request is a handful of array lookups and relaxed stores: no allocation, no lock, no
//! formatting, no cache line shared with another core. A scrape reads every worker's arrays
//! and adds them up.

use crate::http::request::Method;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// What kind of endpoint a request was for: the `route` label of every request series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Base,
    Manifest,
    Blob,
    Upload,
    Tags,
    Catalog,
    Referrers,
    /// `/healthz`, `/readyz`.
    Probe,
    Metrics,
    /// Unknown paths, and connections refused or closed before a request was understood.
    Other,
}

impl RouteClass {
    pub const ALL: [RouteClass; 10] = [
        RouteClass::Base,
        RouteClass::Manifest,
        RouteClass::Blob,
        RouteClass::Upload,
        RouteClass::Tags,
        RouteClass::Catalog,
        RouteClass::Referrers,
        RouteClass::Probe,
        RouteClass::Metrics,
        RouteClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Base => "base",
            RouteClass::Manifest => "manifest",
            RouteClass::Blob => "blob",
            RouteClass::Upload => "upload",
            RouteClass::Tags => "tags",
            RouteClass::Catalog => "catalog",
            RouteClass::Referrers => "referrers",
            RouteClass::Probe => "probe",
            RouteClass::Metrics => "metrics",
            RouteClass::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const ROUTES: usize = RouteClass::ALL.len();

const METHODS: [Method; 7] = [
    Method::Get,
    Method::Head,
    Method::Put,
    Method::Post,
    Method::Patch,
    Method::Delete,
    Method::Other,
];

fn method_index(m: Method) -> usize {
    match m {
        Method::Get => 0,
        Method::Head => 1,
        Method::Put => 2,
        Method::Post => 3,
        Method::Patch => 4,
        Method::Delete => 5,
        Method::Other => 6,
    }
}

/// Status codes with a series of their own: every code the registry sends and the common
/// ones it might; any other is counted under `code="other"`.
const STATUSES: [u16; 31] = [
    100, 200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 411,
    412, 413, 415, 416, 422, 429, 431, 500, 501, 502, 503, 504,
];
const STATUS_SLOTS: usize = STATUSES.len() + 1;
const OTHER_STATUS: usize = STATUSES.len();

/// Status code to slot, one array lookup.
static STATUS_SLOT: [u8; 600] = {
    let mut table = [OTHER_STATUS as u8; 600];
    let mut i = 0;
    while i < STATUSES.len() {
        table[STATUSES[i] as usize] = i as u8;
        i += 1;
    }
    table
};

fn status_slot(code: u16) -> usize {
    STATUS_SLOT
        .get(usize::from(code))
        .map_or(OTHER_STATUS, |&s| usize::from(s))
}

/// Upper bounds of the latency histogram's buckets, in seconds: 100 µs to 60 s.
pub const BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
const BUCKET_NANOS: [u64; 18] = {
    let mut out = [0u64; 18];
    let mut i = 0;
    while i < BUCKETS.len() {
        out[i] = (BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    out
};
/// One slot per bucket plus the overflow (`+Inf` only).
const SLOTS: usize = BUCKETS.len() + 1;

fn bucket_slot(nanos: u64) -> usize {
    BUCKET_NANOS
        .iter()
        .position(|&le| nanos <= le)
        .unwrap_or(BUCKETS.len())
}

/// Adds to a counter that only its owning worker thread writes: a plain load and store (no
/// locked read-modify-write), while a scraper on another thread still reads whole values.
#[inline]
fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

const fn zeros<const N: usize>() -> [AtomicU64; N] {
    [const { AtomicU64::new(0) }; N]
}

/// One worker's counters. Aligned so that no other allocation shares its cache lines.
#[repr(align(64))]
pub struct WorkerMetrics {
    requests: [[[AtomicU64; STATUS_SLOTS]; ROUTES]; METHODS.len()],
    /// Per route: requests per latency bucket (not cumulative; summed at scrape).
    latency: [[AtomicU64; SLOTS]; ROUTES],
    latency_nanos: [AtomicU64; ROUTES],
    received: [AtomicU64; ROUTES],
    sent: [AtomicU64; ROUTES],
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            requests: [const { [const { zeros() }; ROUTES] }; METHODS.len()],
            latency: [const { zeros() }; ROUTES],
            latency_nanos: zeros(),
            received: zeros(),
            sent: zeros(),
        }
    }
}

impl WorkerMetrics {
    /// Counts one answered request. Call only from the worker thread that owns `self`.
    #[inline]
    pub fn record(
        &self,
        method: Method,
        route: RouteClass,
        status: u16,
        received: u64,
        sent: u64,
        elapsed: Duration,
    ) {
        let r = route.index();
        add(
            &self.requests[method_index(method)][r][status_slot(status)],
            1,
        );
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        add(&self.latency[r][bucket_slot(nanos)], 1);
        add(&self.latency_nanos[r], nanos);
        if received > 0 {
            add(&self.received[r], received);
        }
        if sent > 0 {
            add(&self.sent[r], sent);
        }
    }
}

/// Every worker's counters added up.
struct Totals {
    requests: [[[u64; STATUS_SLOTS]; ROUTES]; METHODS.len()],
    latency: [[u64; SLOTS]; ROUTES],
    latency_nanos: [u64; ROUTES],
    received: [u64; ROUTES],
    sent: [u64; ROUTES],
}

fn sum_into<const N: usize>(into: &mut [u64; N], from: &[AtomicU64; N]) {
    for (t, c) in into.iter_mut().zip(from) {
        *t = t.wrapping_add(c.load(Relaxed));
    }
}

impl Totals {
    fn of(workers: &[Arc<WorkerMetrics>]) -> Box<Totals> {
        let mut t = Box::new(Totals {
            requests: [[[0; STATUS_SLOTS]; ROUTES]; METHODS.len()],
            latency: [[0; SLOTS]; ROUTES],
            latency_nanos: [0; ROUTES],
            received: [0; ROUTES],
            sent: [0; ROUTES],
        });
        for w in workers {
            for (tm, wm) in t.requests.iter_mut().zip(&w.requests) {
                for (tr, wr) in tm.iter_mut().zip(wm) {
                    sum_into(tr, wr);
                }
            }
            for (tr, wr) in t.latency.iter_mut().zip(&w.latency) {
                sum_into(tr, wr);
            }
            sum_into(&mut t.latency_nanos, &w.latency_nanos);
            sum_into(&mut t.received, &w.received);
            sum_into(&mut t.sent, &w.sent);
        }
        t
    }
}

/// Process-wide figures read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub connections_open: u64,
    /// Each worker's client connections.
    pub worker_connections: Vec<u64>,
    pub connections_moved: u64,
    pub uploads_in_progress: u64,
    pub stored_blobs: u64,
    pub stored_blob_bytes: u64,
    pub metadata_queue_depth: u64,
    pub metadata_commits: u64,
    pub metadata_write_ops: u64,
    pub log_lines_dropped: u64,
    /// Unix seconds.
    pub start_time: f64,
    pub jobs: Vec<JobFigures>,
    /// What garbage collection removed since the start: manifests, blobs, bytes.
    pub gc_manifests: u64,
    pub gc_blobs: u64,
    pub gc_bytes: u64,
    pub gc_passes: u64,
    /// Repositories with a quota whose usage was looked at: (name, used, limit).
    pub quotas: Vec<(String, u64, u64)>,
    /// Unix seconds of the end of the last pass that deleted; 0: none yet.
    pub gc_last_pass: u64,
    /// Seconds those passes took.
    pub gc_seconds: f64,
    /// The local cache of hot blobs over a remote backend; None on the filesystem deployment.
    pub blob_cache: Option<CacheFigures>,
    /// The Redis cache of the PostgreSQL engine's reads; None without one.
    pub metadata_cache: Option<MetadataCacheFigures>,
    /// Vulnerability scanning's counters; None without scanning.
    pub scans: Option<ScanFigures>,
}

/// What scanning did since the start (see `scan::service::Figures`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScanFigures {
    pub completed: u64,
    pub failed: u64,
    pub rescans: u64,
    pub pulls_blocked: u64,
    pub webhooks_delivered: u64,
    pub webhooks_failed: u64,
    pub seconds: f64,
}

/// The Redis cache's counters (see `meta::redis_cache`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetadataCacheFigures {
    pub hits: u64,
    pub misses: u64,
    /// Redis operations that failed or were skipped while it was down (each read then served
    /// by PostgreSQL alone).
    pub errors: u64,
    pub outages: u64,
}

/// The local blob cache's counters and gauges (see `store::lru`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheFigures {
    pub hits: u64,
    pub misses: u64,
    /// Bytes read from the remote backend by fills.
    pub remote_bytes: u64,
    pub evictions: u64,
    /// Bytes of the blobs the cache holds.
    pub bytes: u64,
    /// Bytes of evicted blobs still on disk because a response or an open-file cache holds
    /// them.
    pub evicted_held_bytes: u64,
    pub bound: u64,
    pub blobs: u64,
}

/// One background job's counters (see [`crate::jobs`]).
#[derive(Debug, Clone, Default)]
pub struct JobFigures {
    pub name: &'static str,
    /// Passes ended, failed ones included.
    pub runs: u64,
    pub failures: u64,
    /// Unix seconds at the end of the last successful pass; 0 before the first.
    pub last_success: f64,
    /// Time spent in all those passes.
    pub duration_seconds: f64,
}

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The whole exposition: request series from `workers`, then the gauges.
pub fn render(workers: &[Arc<WorkerMetrics>], g: &Gauges) -> String {
    let t = Totals::of(workers);
    let mut out = String::with_capacity(16 * 1024);

    family(
        &mut out,
        "ringyard_http_requests_total",
        "counter",
        "Requests answered, by method, route class and status code.",
    );
    for (m, per_method) in METHODS.iter().zip(&t.requests) {
        for (route, per_route) in RouteClass::ALL.iter().zip(per_method) {
            for (slot, &n) in per_route.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let code = STATUSES.get(slot).map(|c| c.to_string());
                let _ = writeln!(
                    out,
                    "ringyard_http_requests_total{{method=\"{}\",route=\"{}\",code=\"{}\"}} {n}",
                    m.as_str(),
                    route.as_str(),
                    code.as_deref().unwrap_or("other")
                );
            }
        }
    }

    let name = "ringyard_http_request_duration_seconds";
    family(
        &mut out,
        name,
        "histogram",
        "Time from a request's head read to its response written, by route class.",
    );
    for (i, route) in RouteClass::ALL.iter().enumerate() {
        let route = route.as_str();
        let mut cumulative = 0u64;
        for (slot, le) in BUCKETS.iter().enumerate() {
            cumulative += t.latency[i][slot];
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += t.latency[i][BUCKETS.len()];
        let _ = writeln!(
            out,
            "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {cumulative}"
        );
        let sum = t.latency_nanos[i] as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {cumulative}");
    }

    for (name, help, values) in [
        (
            "ringyard_http_received_bytes_total",
            "Request body bytes read, by route class.",
            &t.received,
        ),
        (
            "ringyard_http_sent_bytes_total",
            "Response body bytes written, by route class.",
            &t.sent,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for (route, n) in RouteClass::ALL.iter().zip(values) {
            let _ = writeln!(out, "{name}{{route=\"{}\"}} {n}", route.as_str());
        }
    }

    let name = "ringyard_worker_connections";
    family(
        &mut out,
        name,
        "gauge",
        "Client connections served by each worker (one event loop per core).",
    );
    for (w, n) in g.worker_connections.iter().enumerate() {
        let _ = writeln!(out, "{name}{{worker=\"{w}\"}} {n}");
    }

    let gauges: [(&str, &str, &str, u64); 14] = [
        (
            "ringyard_connections_open",
            "gauge",
            "Client connections open on the registry listeners.",
            g.connections_open,
        ),
        (
            "ringyard_connections_moved_total",
            "counter",
            "Connections passed from the worker that accepted them to a less loaded one.",
            g.connections_moved,
        ),
        (
            "ringyard_uploads_in_progress",
            "gauge",
            "Resumable upload sessions started and not yet finished, cancelled or expired.",
            g.uploads_in_progress,
        ),
        (
            "ringyard_stored_blobs",
            "gauge",
            "Blobs (manifests included) recorded in the metadata.",
            g.stored_blobs,
        ),
        (
            "ringyard_stored_blob_bytes",
            "gauge",
            "Total size of the blobs recorded in the metadata.",
            g.stored_blob_bytes,
        ),
        (
            "ringyard_metadata_queue_depth",
            "gauge",
            "Operations waiting for the metadata engine thread.",
            g.metadata_queue_depth,
        ),
        (
            "ringyard_metadata_commits_total",
            "counter",
            "Metadata transactions committed (one per group commit).",
            g.metadata_commits,
        ),
        (
            "ringyard_metadata_write_ops_total",
            "counter",
            "Metadata write operations committed.",
            g.metadata_write_ops,
        ),
        (
            "ringyard_log_lines_dropped_total",
            "counter",
            "Log lines dropped because the logger thread fell behind.",
            g.log_lines_dropped,
        ),
        (
            "ringyard_gc_runs_total",
            "counter",
            "Garbage collection passes that deleted, scheduled (gc.interval) or asked for (ringyard gc --delete).",
            g.gc_passes,
        ),
        (
            "ringyard_gc_last_run_timestamp_seconds",
            "gauge",
            "End of the last garbage collection pass that deleted, in unix seconds (0: none yet).",
            g.gc_last_pass,
        ),
        (
            "ringyard_gc_manifests_deleted_total",
            "counter",
            "Untagged manifests garbage collection removed (gc.delete_untagged).",
            g.gc_manifests,
        ),
        (
            "ringyard_gc_blobs_deleted_total",
            "counter",
            "Blobs garbage collection removed, orphans included.",
            g.gc_blobs,
        ),
        (
            "ringyard_gc_bytes_reclaimed_total",
            "counter",
            "Bytes of the blobs garbage collection removed.",
            g.gc_bytes,
        ),
    ];
    for (name, kind, help, value) in gauges {
        single(&mut out, name, kind, help, value);
    }
    render_jobs(&mut out, &g.jobs);
    single(
        &mut out,
        "ringyard_gc_duration_seconds_total",
        "counter",
        "Time garbage collection passes that deleted took, scheduled or asked for.",
        g.gc_seconds,
    );
    render_quotas(&mut out, &g.quotas);
    if let Some(sc) = &g.scans {
        render_scans(&mut out, sc);
    }
    if let Some(c) = &g.blob_cache {
        render_blob_cache(&mut out, c);
    }
    if let Some(c) = &g.metadata_cache {
        let series = [
            (
                "ringyard_redis_cache_hits_total",
                "Metadata lookups answered from Redis (checked against the row's version).",
                c.hits,
            ),
            (
                "ringyard_redis_cache_misses_total",
                "Metadata lookups Redis did not answer (absent or stale: read from PostgreSQL).",
                c.misses,
            ),
            (
                "ringyard_redis_cache_errors_total",
                "Redis operations that failed or were skipped while it was down; reads were served by PostgreSQL.",
                c.errors,
            ),
            (
                "ringyard_redis_cache_outages_total",
                "Times Redis went from answering to failing.",
                c.outages,
            ),
        ];
        for (name, help, value) in series {
            single(&mut out, name, "counter", help, value);
        }
    }
    single(
        &mut out,
        "ringyard_process_start_time_seconds",
        "gauge",
        "Start time of the process, in unix seconds.",
        g.start_time,
    );
    family(
        &mut out,
        "ringyard_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    let _ = writeln!(
        out,
        "ringyard_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    out
}

fn render_blob_cache(out: &mut String, c: &CacheFigures) {
    let series: [(&str, &str, &str, u64); 8] = [
        (
            "ringyard_blob_cache_hits_total",
            "counter",
            "Blob reads served from the local cache.",
            c.hits,
        ),
        (
            "ringyard_blob_cache_misses_total",
            "counter",
            "Blob reads the local cache did not hold (fetched from the remote backend).",
            c.misses,
        ),
        (
            "ringyard_blob_cache_remote_read_bytes_total",
            "counter",
            "Bytes read from the remote backend to fill the local cache.",
            c.remote_bytes,
        ),
        (
            "ringyard_blob_cache_evictions_total",
            "counter",
            "Blobs evicted from the local cache, least recently used first.",
            c.evictions,
        ),
        (
            "ringyard_blob_cache_bytes",
            "gauge",
            "Bytes of the blobs the local cache holds.",
            c.bytes,
        ),
        (
            "ringyard_blob_cache_evicted_held_bytes",
            "gauge",
            "Bytes of evicted blobs still on disk until the responses sending them end.",
            c.evicted_held_bytes,
        ),
        (
            "ringyard_blob_cache_max_bytes",
            "gauge",
            "The local cache's bound (storage.cache.disk_size_gb).",
            c.bound,
        ),
        (
            "ringyard_blob_cache_blobs",
            "gauge",
            "Blobs the local cache holds.",
            c.blobs,
        ),
    ];
    for (name, kind, help, value) in series {
        single(out, name, kind, help, value);
    }
}

/// Usage and limit of each repository with a quota, as last looked at (by a push into it or
/// `GET /v2/_quota/NAME`): reading every repository's usage for a scrape would cost the
/// metadata a query per repository on PostgreSQL.
fn render_scans(out: &mut String, s: &ScanFigures) {
    family(
        out,
        "ringyard_scans_total",
        "counter",
        "Image scans finished, by outcome (re-evaluations after an import are counted apart).",
    );
    let _ = writeln!(
        out,
        "ringyard_scans_total{{outcome=\"completed\"}} {}",
        s.completed
    );
    let _ = writeln!(
        out,
        "ringyard_scans_total{{outcome=\"failed\"}} {}",
        s.failed
    );
    single(
        out,
        "ringyard_scan_rescans_total",
        "counter",
        "Stored results matched again after an import, from their stored packages (no layer read).",
        s.rescans,
    );
    single(
        out,
        "ringyard_scan_duration_seconds_total",
        "counter",
        "Time spent scanning images (reading layers, finding packages, matching).",
        s.seconds,
    );
    single(
        out,
        "ringyard_pulls_blocked_total",
        "counter",
        "Manifest pulls refused by the vulnerability policy (scan.policies).",
        s.pulls_blocked,
    );
    family(
        out,
        "ringyard_webhook_deliveries_total",
        "counter",
        "Webhook delivery attempts (scan.webhooks), by outcome.",
    );
    let _ = writeln!(
        out,
        "ringyard_webhook_deliveries_total{{outcome=\"delivered\"}} {}",
        s.webhooks_delivered
    );
    let _ = writeln!(
        out,
        "ringyard_webhook_deliveries_total{{outcome=\"failed\"}} {}",
        s.webhooks_failed
    );
}

fn render_quotas(out: &mut String, quotas: &[(String, u64, u64)]) {
    type Value = fn(&(String, u64, u64)) -> u64;
    let families: [(&str, &str, Value); 2] = [
        (
            "ringyard_quota_used_bytes",
            "Bytes a repository with a quota holds, as last looked at.",
            |q| q.1,
        ),
        (
            "ringyard_quota_limit_bytes",
            "The quota of a repository (quotas).",
            |q| q.2,
        ),
    ];
    for (name, help, value) in families {
        family(out, name, "gauge", help);
        for q in quotas {
            let repo = q.0.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "{name}{{repository=\"{repo}\"}} {}", value(q));
        }
    }
}

/// The background jobs' series, one per job and family. Pass durations are a summary without
/// quantiles (`_sum` and `_count`): passes are few, and their lengths vary too much by job
/// for one set of histogram buckets.
fn render_jobs(out: &mut String, jobs: &[JobFigures]) {
    type Value = fn(&JobFigures) -> String;
    let families: [(&str, &str, &str, Value); 3] = [
        (
            "ringyard_job_runs_total",
            "counter",
            "Passes of each background job, failed ones included.",
            |j| j.runs.to_string(),
        ),
        (
            "ringyard_job_failures_total",
            "counter",
            "Passes of each background job that failed or panicked.",
            |j| j.failures.to_string(),
        ),
        (
            "ringyard_job_last_success_timestamp_seconds",
            "gauge",
            "End of each background job's last successful pass, in unix seconds (0: none yet).",
            |j| j.last_success.to_string(),
        ),
    ];
    for (name, kind, help, value) in families {
        family(out, name, kind, help);
        for j in jobs {
            let _ = writeln!(out, "{name}{{job=\"{}\"}} {}", j.name, value(j));
        }
    }
    let name = "ringyard_job_duration_seconds";
    family(
        out,
        name,
        "summary",
        "Time spent in each background job's passes.",
    );
    for j in jobs {
        let job = j.name;
        let _ = writeln!(out, "{name}_sum{{job=\"{job}\"}} {}", j.duration_seconds);
        let _ = writeln!(out, "{name}_count{{job=\"{job}\"}} {}", j.runs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the one sample line starting with `series ` in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn slots() {
        assert_eq!(status_slot(200), 1);
        assert_eq!(status_slot(504), STATUSES.len() - 1);
        assert_eq!(status_slot(299), OTHER_STATUS);
        assert_eq!(status_slot(9999), OTHER_STATUS);
        for (i, &c) in STATUSES.iter().enumerate() {
            assert_eq!(status_slot(c), i);
        }
        assert_eq!(bucket_slot(0), 0);
        assert_eq!(bucket_slot(100_000), 0);
        assert_eq!(bucket_slot(100_001), 1);
        assert_eq!(bucket_slot(60_000_000_000), BUCKETS.len() - 1);
        assert_eq!(bucket_slot(60_000_000_001), BUCKETS.len());
        for (m, &method) in METHODS.iter().enumerate() {
            assert_eq!(method_index(method), m);
        }
        for (i, r) in RouteClass::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn workers_are_summed_and_the_histogram_is_cumulative() {
        let a = Arc::new(WorkerMetrics::default());
        let b = Arc::new(WorkerMetrics::default());
        let ms = Duration::from_millis;
        a.record(Method::Get, RouteClass::Blob, 200, 0, 1000, ms(2));
        b.record(Method::Get, RouteClass::Blob, 200, 0, 24, ms(20));
        b.record(Method::Put, RouteClass::Manifest, 201, 500, 0, ms(100));
        b.record(
            Method::Other,
            RouteClass::Other,
            299,
            0,
            0,
            Duration::from_secs(61),
        );
        let g = Gauges {
            connections_open: 3,
            worker_connections: vec![1, 2],
            stored_blob_bytes: 1 << 40,
            jobs: vec![JobFigures {
                name: "upload_expiry",
                runs: 4,
                failures: 1,
                last_success: 1_700_000_000.5,
                duration_seconds: 0.25,
            }],
            blob_cache: Some(CacheFigures {
                hits: 7,
                misses: 2,
                remote_bytes: 4096,
                evictions: 1,
                bytes: 3000,
                evicted_held_bytes: 1000,
                bound: 5000,
                blobs: 3,
            }),
            ..Gauges::default()
        };
        let text = render(&[a, b], &g);
        assert!(
            !render(&[], &Gauges::default()).contains("ringyard_blob_cache"),
            "no cache series on the filesystem deployment"
        );
        let s = |series: &str| sample(&text, series);
        let req = |m: &str, r: &str, c: &str| {
            s(&format!(
                "ringyard_http_requests_total{{method=\"{m}\",route=\"{r}\",code=\"{c}\"}}"
            ))
        };
        assert_eq!(req("GET", "blob", "200"), Some(2.0));
        assert_eq!(req("PUT", "manifest", "201"), Some(1.0));
        assert_eq!(req("OTHER", "other", "other"), Some(1.0));
        assert_eq!(req("HEAD", "blob", "200"), None, "zero series are left out");
        let h = "ringyard_http_request_duration_seconds";
        let bucket =
            |route: &str, le: &str| s(&format!("{h}_bucket{{route=\"{route}\",le=\"{le}\"}}"));
        let expected = [
            (bucket("blob", "0.001"), 0.0),
            (bucket("blob", "0.0025"), 1.0),
            (bucket("blob", "0.025"), 2.0),
            (bucket("blob", "+Inf"), 2.0),
            (s(&format!("{h}_count{{route=\"blob\"}}")), 2.0),
            (s(&format!("{h}_sum{{route=\"blob\"}}")), 0.022),
            (bucket("other", "60"), 0.0),
            (bucket("other", "+Inf"), 1.0),
            (s("ringyard_http_sent_bytes_total{route=\"blob\"}"), 1024.0),
            (
                s("ringyard_http_received_bytes_total{route=\"manifest\"}"),
                500.0,
            ),
            (s("ringyard_connections_open"), 3.0),
            (s("ringyard_worker_connections{worker=\"1\"}"), 2.0),
            (s("ringyard_stored_blob_bytes"), (1u64 << 40) as f64),
            (s("ringyard_job_runs_total{job=\"upload_expiry\"}"), 4.0),
            (s("ringyard_job_failures_total{job=\"upload_expiry\"}"), 1.0),
            (
                s("ringyard_job_last_success_timestamp_seconds{job=\"upload_expiry\"}"),
                1_700_000_000.5,
            ),
            (
                s("ringyard_job_duration_seconds_sum{job=\"upload_expiry\"}"),
                0.25,
            ),
            (
                s("ringyard_job_duration_seconds_count{job=\"upload_expiry\"}"),
                4.0,
            ),
            (s("ringyard_blob_cache_hits_total"), 7.0),
            (s("ringyard_blob_cache_misses_total"), 2.0),
            (s("ringyard_blob_cache_remote_read_bytes_total"), 4096.0),
            (s("ringyard_blob_cache_evictions_total"), 1.0),
            (s("ringyard_blob_cache_bytes"), 3000.0),
            (s("ringyard_blob_cache_evicted_held_bytes"), 1000.0),
            (s("ringyard_blob_cache_max_bytes"), 5000.0),
            (s("ringyard_blob_cache_blobs"), 3.0),
        ];
        for (i, (got, want)) in expected.into_iter().enumerate() {
            assert_eq!(got, Some(want), "expectation {i}");
        }
        // Every family has its HELP and TYPE, and every sample line parses.
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            } else if !line.starts_with("# HELP ") {
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
    }
}
