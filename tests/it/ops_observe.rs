//! Operations: liveness and readiness probes, Prometheus metrics (on the registry's listener
//! and on `--metrics-listen`), request ids and the access log, against the real binary.
//!
//! The readiness failures are real ones: an immutable data directory (`chattr +i`, since these
//! tests run as root, where `chmod` stops no write; `chmod a-w` otherwise), a filesystem
//! filled up (a small tmpfs mounted for the test), and a metadata engine stuck behind a
//! database lock that this test holds.

use crate::common::*;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

// --- helpers --------------------------------------------------------------------------------

/// The samples of a Prometheus text exposition: full series text (name and labels, exactly as
/// written) to value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample line without a value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("sample value does not parse: {line:?}"));
        assert!(
            out.insert(series.to_string(), value).is_none(),
            "series twice: {series}"
        );
    }
    out
}

fn scrape(c: &mut Client) -> (String, HashMap<String, f64>) {
    let r = c.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    let samples = parse_metrics(&text);
    (text, samples)
}

fn requests(m: &HashMap<String, f64>, method: &str, route: &str, code: &str) -> f64 {
    let key = format!(
        "ringyard_http_requests_total{{method=\"{method}\",route=\"{route}\",code=\"{code}\"}}"
    );
    m.get(&key).copied().unwrap_or(0.0)
}

fn value(m: &HashMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no series {series} in the exposition"))
}

/// GET or HEAD `path` until the status is `want` (readiness results are cached for ~1 s);
/// the last response.
fn wait_for_status(
    c: &mut Client,
    method: &str,
    path: &str,
    want: u16,
    within: Duration,
) -> Response {
    let deadline = Instant::now() + within;
    loop {
        let r = c.request(method, path, &[], b"");
        if r.status == want || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_ready(c: &mut Client) {
    let r = wait_for_status(c, "GET", "/readyz", 200, Duration::from_secs(5));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({ "status": "ok" }));
}

/// Waits for the 503 and returns its reason; checks the HEAD answer too.
#[track_caller]
fn assert_unready(c: &mut Client, reason_has: &str) -> String {
    let r = wait_for_status(c, "GET", "/readyz", 503, Duration::from_secs(10));
    assert_eq!(r.status, 503, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "unavailable", "{body}");
    let reason = body["reason"].as_str().expect("a reason").to_string();
    assert!(
        reason.contains(reason_has),
        "reason {reason:?} lacks {reason_has:?}"
    );
    let h = c.head("/readyz");
    assert_eq!(h.status, 503);
    assert!(h.body.is_empty());
    // Liveness is unaffected.
    assert_eq!(c.get("/healthz").status, 200);
    reason
}

/// The stderr lines of `server` that satisfy `pred`, waiting up to 5 s for at least `n` (the
/// workers hand their lines to the logger thread every ~100 ms).
fn log_lines(server: &Server, n: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = server
            .stderr()
            .lines()
            .filter(|l| pred(l))
            .map(str::to_string)
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_root() -> bool {
    // SAFETY: no arguments, no memory.
    unsafe { libc::geteuid() == 0 }
}

// --- probes ---------------------------------------------------------------------------------

#[test]
fn probes_answer_get_and_head() {
    let s = Server::start();
    let mut c = s.client();
    for path in ["/healthz", "/readyz"] {
        let r = c.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.json(), serde_json::json!({ "status": "ok" }), "{path}");
        let h = c.head(path);
        assert_eq!(h.status, 200, "HEAD {path}");
        assert!(h.body.is_empty());
        assert_eq!(h.header("content-length"), Some("15"), "HEAD {path}");
        let p = c.post(path, &[], b"");
        assert_eq!(p.status, 405, "POST {path}");
    }
    // The probe file does not stay behind.
    assert!(!s.root.join(".readyz-probe").exists());
    assert_eq!(c.get("/healthz/").status, 404);
}

/// Restores a directory's attributes and mode however the test ends.
struct Unfreeze(PathBuf);

impl Drop for Unfreeze {
    fn drop(&mut self) {
        let p = self.0.to_str().unwrap();
        let _ = run_command("chattr", &["-i", p]);
        let _ = run_command("chmod", &["u+w", p]);
    }
}

#[test]
fn readyz_is_503_while_the_data_directory_is_not_writable() {
    let s = Server::start();
    let mut c = s.client();
    assert_ready(&mut c);
    let root = s.root.to_str().unwrap().to_string();
    let _restore = Unfreeze(s.root.clone());
    // As root, permission bits stop nothing; the immutable attribute does (no entry may be
    // created in the directory, by anyone).
    let (ok, out) = if is_root() {
        run_command("chattr", &["+i", &root])
    } else {
        run_command("chmod", &["a-w", &root])
    };
    if !ok {
        eprintln!("skipped: cannot make {root} unwritable here: {out}");
        return;
    }
    // Proof that the directory is unwritable for this (root) process too.
    assert!(std::fs::File::create(s.root.join("x")).is_err());
    let reason = assert_unready(&mut c, "not writable");
    assert!(
        !reason.contains(&root),
        "the reason must not reveal the data path: {reason}"
    );
    // Reads still work meanwhile; the operator is told.
    assert_eq!(c.get("/v2/").status, 200);
    let warned = log_lines(&s, 1, |l| l.contains("warn not ready"));
    assert!(!warned.is_empty(), "{}", s.stderr());
    let (ok, out) = if is_root() {
        run_command("chattr", &["-i", &root])
    } else {
        run_command("chmod", &["u+w", &root])
    };
    assert!(ok, "{out}");
    assert_ready(&mut c);
    assert!(!log_lines(&s, 1, |l| l.contains("info ready again")).is_empty());
}

/// A tmpfs mounted for one test, unmounted however the test ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = run_command("umount", &["-l", self.0.to_str().unwrap()]);
    }
}

#[test]
fn readyz_is_503_while_the_disk_is_almost_full() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let (ok, out) = run_command(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=100m",
            "tmpfs",
            mnt.to_str().unwrap(),
        ],
    );
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {out}");
        return;
    }
    let _mount = Mount(mnt.clone());
    let root = mnt.join("root");
    std::fs::create_dir(&root).unwrap();
    let s = Server::start_with(&root, &[]);
    let mut c = s.client();
    // 100 MiB: the threshold is 64 MiB (1% of this filesystem is less).
    assert_ready(&mut c);
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..50 {
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    let reason = assert_unready(&mut c, "disk almost full");
    assert!(reason.contains("64 MiB needed"), "{reason}");
    std::fs::remove_file(&filler).unwrap();
    assert_ready(&mut c);
    assert_eq!(s.stop().code(), Some(0));
}

#[test]
fn readyz_is_503_while_the_metadata_engine_is_stuck() {
    let s = Server::start();
    let mut c = s.client();
    assert_ready(&mut c);
    // Let the cached result expire, so that the next probe checks again.
    std::thread::sleep(Duration::from_millis(1100));
    // Another process holding the database's write lock: the engine's next transaction waits
    // for it (up to its 5 s busy timeout), and the ping queued behind it with it.
    let db = rusqlite::Connection::open(s.root.join("meta.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let addr = s.addr;
    let pusher = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.request(
            "POST",
            &format!(
                "/v2/stuck/app/blobs/uploads/?digest={}",
                sha256_digest(b"stuck")
            ),
            &[("Content-Type", "application/octet-stream")],
            b"stuck",
        )
        .status
    });
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let r = c.get("/readyz");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap()
            .contains("metadata store did not answer within 2000 ms"),
        "{}",
        r.text()
    );
    assert!(started.elapsed() >= Duration::from_millis(1900));
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);
    assert_eq!(
        pusher.join().unwrap(),
        201,
        "the write proceeds once the lock is gone"
    );
    assert_ready(&mut c);
}

// --- metrics --------------------------------------------------------------------------------

/// Every family /metrics exposes.
const FAMILIES: [&str; 19] = [
    "ringyard_http_requests_total",
    "ringyard_http_request_duration_seconds",
    "ringyard_http_received_bytes_total",
    "ringyard_http_sent_bytes_total",
    "ringyard_connections_open",
    "ringyard_worker_connections",
    "ringyard_connections_moved_total",
    "ringyard_uploads_in_progress",
    "ringyard_stored_blobs",
    "ringyard_stored_blob_bytes",
    "ringyard_metadata_queue_depth",
    "ringyard_metadata_commits_total",
    "ringyard_metadata_write_ops_total",
    "ringyard_log_lines_dropped_total",
    "ringyard_job_runs_total",
    "ringyard_job_failures_total",
    "ringyard_job_last_success_timestamp_seconds",
    "ringyard_job_duration_seconds",
    "ringyard_build_info",
];

const ROUTES: [&str; 10] = [
    "base",
    "manifest",
    "blob",
    "upload",
    "tags",
    "catalog",
    "referrers",
    "probe",
    "metrics",
    "other",
];

/// Bucket counts never decrease with `le`, and `+Inf` equals `_count`, for every route.
fn check_histograms(m: &HashMap<String, f64>) {
    let h = "ringyard_http_request_duration_seconds";
    for route in ROUTES {
        let mut buckets: Vec<(f64, f64)> = m
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(&format!("{h}_bucket{{route=\"{route}\",le=\""))?;
                let le = rest.strip_suffix("\"}")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                Some((le, *v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        assert_eq!(buckets.len(), 19, "{route}: 18 buckets and +Inf");
        assert_eq!(buckets[0].0, 0.0001);
        assert_eq!(buckets[17].0, 60.0);
        for w in buckets.windows(2) {
            assert!(w[0].1 <= w[1].1, "{route}: buckets must be cumulative");
        }
        let count = value(m, &format!("{h}_count{{route=\"{route}\"}}"));
        assert_eq!(buckets[18].1, count, "{route}: +Inf bucket == count");
        let sum = value(m, &format!("{h}_sum{{route=\"{route}\"}}"));
        assert!(sum >= 0.0 && (count > 0.0 || sum == 0.0), "{route}");
    }
}

#[test]
fn metrics_count_exactly_the_requests_made() {
    let s = Server::start();
    // One connection for everything: each request is recorded before the next is read, so
    // the second scrape sees every earlier request.
    let mut c = s.client();
    let (text, m0) = scrape(&mut c);
    for family in FAMILIES {
        assert!(
            text.contains(&format!("# TYPE {family} "))
                && text.contains(&format!("# HELP {family} ")),
            "{family} missing:\n{text}"
        );
    }
    check_histograms(&m0);
    assert!(value(&m0, "ringyard_connections_open") >= 1.0);
    assert_eq!(value(&m0, "ringyard_stored_blobs"), 0.0);
    assert_eq!(value(&m0, "ringyard_uploads_in_progress"), 0.0);

    let layer = pseudo_random(300_000, 11);
    let (manifest_digest, manifest) = push_image(&mut c, "obs/app", "v1", &[&layer]);
    let config = image_config(&[sha256_digest(&layer)]);
    let r = c.get("/v2/obs/app/manifests/v1");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(manifest_digest.as_str())
    );
    let layer_path = format!("/v2/obs/app/blobs/{}", sha256_digest(&layer));
    let r = c.get(&layer_path);
    assert_eq!((r.status, r.body.len()), (200, layer.len()));
    assert_eq!(c.head(&layer_path).status, 200);
    let missing = c.get("/v2/obs/app/manifests/nope");
    assert_eq!(missing.status, 404);
    // An upload session open during the scrape.
    let session = start_upload(&mut c, "obs/app");

    let (_, m1) = scrape(&mut c);
    let delta = |method: &str, route: &str, code: &str| {
        requests(&m1, method, route, code) - requests(&m0, method, route, code)
    };
    assert_eq!(delta("POST", "upload", "201"), 2.0, "layer and config");
    assert_eq!(delta("POST", "upload", "202"), 1.0, "the session");
    assert_eq!(delta("PUT", "manifest", "201"), 1.0);
    assert_eq!(delta("GET", "manifest", "200"), 1.0);
    assert_eq!(delta("GET", "manifest", "404"), 1.0);
    assert_eq!(delta("GET", "blob", "200"), 1.0);
    assert_eq!(delta("HEAD", "blob", "200"), 1.0);
    assert_eq!(delta("GET", "metrics", "200"), 1.0, "the first scrape");
    let total = |m: &HashMap<String, f64>| {
        m.iter()
            .filter(|(k, _)| k.starts_with("ringyard_http_requests_total{"))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    assert_eq!(total(&m1) - total(&m0), 9.0, "nothing else was counted");

    let bytes = |m: &HashMap<String, f64>, dir: &str, route: &str| {
        value(
            m,
            &format!("ringyard_http_{dir}_bytes_total{{route=\"{route}\"}}"),
        )
    };
    let d = |dir: &str, route: &str| bytes(&m1, dir, route) - bytes(&m0, dir, route);
    assert_eq!(d("received", "upload"), (layer.len() + config.len()) as f64);
    assert_eq!(d("received", "manifest"), manifest.len() as f64);
    assert_eq!(d("sent", "blob"), layer.len() as f64, "HEAD sends no body");
    assert_eq!(
        d("sent", "manifest"),
        (manifest.len() + missing.body.len()) as f64
    );
    assert_eq!(d("received", "blob"), 0.0);

    check_histograms(&m1);
    let count = |m: &HashMap<String, f64>, route: &str| {
        value(
            m,
            &format!("ringyard_http_request_duration_seconds_count{{route=\"{route}\"}}"),
        )
    };
    assert_eq!(count(&m1, "manifest") - count(&m0, "manifest"), 3.0);
    assert_eq!(count(&m1, "blob") - count(&m0, "blob"), 2.0);
    assert_eq!(count(&m1, "upload") - count(&m0, "upload"), 3.0);

    assert_eq!(
        value(&m1, "ringyard_stored_blobs"),
        3.0,
        "layer, config, manifest"
    );
    assert_eq!(
        value(&m1, "ringyard_stored_blob_bytes"),
        (layer.len() + config.len() + manifest.len()) as f64
    );
    assert_eq!(value(&m1, "ringyard_uploads_in_progress"), 1.0);
    assert!(value(&m1, "ringyard_connections_open") >= 1.0);
    assert!(value(&m1, "ringyard_metadata_write_ops_total") >= 4.0);
    assert_eq!(value(&m1, "ringyard_metadata_queue_depth"), 0.0);

    assert_eq!(c.delete(&session).status, 204);
    let (_, m2) = scrape(&mut c);
    assert_eq!(value(&m2, "ringyard_uploads_in_progress"), 0.0);
    assert_eq!(
        requests(&m2, "DELETE", "upload", "204") - requests(&m1, "DELETE", "upload", "204"),
        1.0
    );
}

// --- background jobs ------------------------------------------------------------------------

/// Upload expiry is a background job: an abandoned session goes (404 BLOB_UPLOAD_UNKNOWN), the
/// job's series count its passes, and its log line names the repository, the idle time and the
/// bytes discarded, never the session id (the secret in the upload URL).
#[test]
fn upload_expiry_is_a_job_with_metrics_and_a_log_line_without_the_session_id() {
    let s = Server::start_in_temp(&["--upload-expiry", "1"]);
    let mut c = s.client();
    let loc = start_upload(&mut c, "jobs/abandoned");
    let data = pseudo_random(12_345, 7);
    let r = c.patch(&loc, &[("Content-Type", "application/octet-stream")], &data);
    assert_eq!(r.status, 202, "{}", r.text());
    let loc = location_path(must_header(&r, "location"));
    let id = loc.split('?').next().unwrap().rsplit('/').next().unwrap();
    assert_eq!(id.len(), 32, "a session id at the end of {loc}");

    let start = Instant::now();
    loop {
        let r = c.get(&loc);
        if r.status == 404 {
            assert_error(&r, 404, &["BLOB_UPLOAD_UNKNOWN"]);
            break;
        }
        assert_eq!(r.status, 204, "{}", r.text());
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the session did not expire within 15 s of --upload-expiry 1"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let lines = log_lines(&s, 1, |l| {
        l.contains("upload session in jobs/abandoned expired")
    });
    assert_eq!(lines.len(), 1, "one expiry line:\n{}", s.stderr());
    assert!(
        lines[0].contains("idle ") && lines[0].contains("12345 bytes discarded"),
        "{}",
        lines[0]
    );
    assert!(
        !s.stderr().contains(id),
        "the session id is in the log:\n{}",
        s.stderr()
    );

    let (_, m) = scrape(&mut c);
    let series = |family: &str| value(&m, &format!("{family}{{job=\"upload_expiry\"}}"));
    let runs = series("ringyard_job_runs_total");
    assert!(runs > 0.0, "runs {runs}");
    assert_eq!(series("ringyard_job_failures_total"), 0.0);
    let last = series("ringyard_job_last_success_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        last > now - 60.0 && last < now + 1.0,
        "last success {last}, now {now}"
    );
    assert_eq!(series("ringyard_job_duration_seconds_count"), runs);
    assert!(series("ringyard_job_duration_seconds_sum") >= 0.0);
    assert!(s.stop().success());
}

#[test]
fn metrics_can_be_turned_off() {
    let s = Server::start_in_temp(&["--no-metrics"]);
    let mut c = s.client();
    assert_eq!(c.get("/metrics").status, 404);
    assert_eq!(c.head("/metrics").status, 404);
    assert_eq!(c.get("/healthz").status, 200);
    assert_eq!(c.get("/readyz").status, 200);
}

/// Pins the calling thread to the first CPU it may run on, so that every connection it opens
/// has its SYN processed there.
fn pin_to_one_cpu() {
    // SAFETY: plain syscalls on a cpu_set_t we own; pid 0 means the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set),
            0
        );
        let first = (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .expect("some CPU is allowed");
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(first, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0
        );
    }
}

/// The kernel places a connection on the worker of the CPU that processed its SYN, so
/// connections all opened from one CPU land on one worker; the workers then even out their
/// shares by handing connections over, and a handed-over connection serves like any other.
#[test]
fn connections_opened_from_one_cpu_are_shared_by_the_workers() {
    // Two workers (the tests' default).
    let s = Server::start_in_temp(&[]);
    // After the start: a child process inherits the spawning thread's affinity.
    let pinned = std::thread::spawn(move || {
        pin_to_one_cpu();
        let mut clients: Vec<Client> = (0..16).map(|_| s.client()).collect();
        for c in &mut clients {
            assert_status(&c.get("/v2/"), 200);
        }
        let (_, m) = scrape(&mut clients[0]);
        let w0 = value(&m, "ringyard_worker_connections{worker=\"0\"}");
        let w1 = value(&m, "ringyard_worker_connections{worker=\"1\"}");
        assert_eq!(w0 + w1, 16.0, "every open connection is counted once");
        assert_eq!(value(&m, "ringyard_connections_open"), 16.0);
        // The balancer's slack for 16 connections is 1 + 16/8.
        assert!((w0 - w1).abs() <= 3.0, "workers hold {w0} and {w1}");
        // Handed-over connections carry on like the rest, with bodies both ways.
        let layer = pseudo_random(200_000, 5);
        for (i, c) in clients.iter_mut().enumerate() {
            let repo = format!("spread/c{i}");
            push_image(c, &repo, "v1", &[&layer]);
            let r = c.get(&format!("/v2/{repo}/blobs/{}", sha256_digest(&layer)));
            assert_status(&r, 200);
            assert!(r.body == layer, "connection {i}: blob differs");
        }
        drop(clients);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut probe = s.client();
        loop {
            let (_, m) = scrape(&mut probe);
            let w0 = value(&m, "ringyard_worker_connections{worker=\"0\"}");
            let w1 = value(&m, "ringyard_worker_connections{worker=\"1\"}");
            if w0 + w1 == 1.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "closed connections still counted: {w0} and {w1}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    });
    let s = pinned.join().expect("the pinned client thread");
    assert_eq!(s.stop().code(), Some(0));
}

/// The address of the "metrics and probes also on ..." line.
fn metrics_addr(server: &Server) -> SocketAddr {
    let line = log_lines(server, 1, |l| l.contains("metrics and probes also on "));
    let line = line
        .first()
        .unwrap_or_else(|| panic!("no metrics line:\n{}", server.stderr()));
    let rest = &line[line.find("also on ").unwrap() + "also on ".len()..];
    rest.split([',', ' ', '"'])
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

#[test]
fn metrics_listen_serves_only_metrics_and_probes() {
    let s = Server::start_in_temp(&["--metrics-listen", "127.0.0.1:0"]);
    let ops = metrics_addr(&s);
    assert_ne!(ops.port(), s.addr.port());
    let mut c = Client::connect(ops);
    let (text, m) = scrape(&mut c);
    for family in FAMILIES {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
    }
    check_histograms(&m);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(c.get(path).status, 200, "{path}");
        assert_eq!(c.head(path).status, 200, "HEAD {path}");
    }
    for path in ["/v2/", "/v2/_catalog", "/", "/metrics/x"] {
        let r = c.get(path);
        assert_eq!(r.status, 404, "{path} on the metrics listener");
        assert!(r.header("x-request-id").is_some());
    }
    // The registry's listener still has all of it.
    let mut main = s.client();
    assert_eq!(main.get("/v2/").status, 200);
    assert_eq!(main.get("/metrics").status, 200);
    // Requests on the metrics listener are counted too, under their route classes.
    let (_, m2) = scrape(&mut c);
    assert_eq!(requests(&m2, "GET", "other", "404"), 4.0);
    assert!(requests(&m2, "GET", "probe", "200") >= 2.0);
    assert_eq!(s.stop().code(), Some(0));
}

#[test]
fn a_metrics_address_in_use_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--root",
        root,
        "--metrics-listen",
        addr.as_str(),
    ];
    match Server::try_start(&args) {
        Ok(_) => panic!("started although {addr} is taken"),
        Err((status, log)) => {
            assert_eq!(status.code(), Some(1), "{log}");
            assert!(
                log.contains("already in use") && log.contains("--metrics-listen"),
                "{log}"
            );
        }
    }
}

// --- request ids ----------------------------------------------------------------------------

#[test]
fn every_response_has_a_request_id() {
    let s = Server::start();
    let mut seen = HashSet::new();
    let mut c1 = s.client();
    let mut c2 = s.client();
    for i in 0..40 {
        let c = if i % 2 == 0 { &mut c1 } else { &mut c2 };
        let r = match i % 4 {
            0 => c.get("/v2/"),
            1 => c.head("/v2/x/manifests/missing"),
            2 => c.get("/nope"),
            _ => c.get("/healthz"),
        };
        let id = r
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no X-Request-Id on {:?}", r.headers))
            .to_string();
        assert!(
            id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()),
            "{id}"
        );
        assert!(seen.insert(id.clone()), "id {id} repeated");
    }
    // A client's own id comes back as it was sent.
    let r = c1.request("GET", "/v2/", &[("X-Request-Id", "trace-4f2a:abc/1")], b"");
    assert_eq!(r.header("x-request-id"), Some("trace-4f2a:abc/1"));
    let long = "a".repeat(128);
    let r = c1.request("GET", "/v2/", &[("X-Request-Id", &long)], b"");
    assert_eq!(r.header("x-request-id"), Some(long.as_str()));
    // Unusable ones are replaced.
    for bad in ["a".repeat(129), "two words".to_string()] {
        let r = c1.request("GET", "/v2/", &[("X-Request-Id", &bad)], b"");
        let id = r.header("x-request-id").unwrap();
        assert_ne!(id, bad);
        assert!(seen.insert(id.to_string()));
    }
    // Even an answer to a request that could not be parsed.
    let mut raw = connect_raw(s.addr, Duration::from_secs(10)).unwrap();
    raw.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("\r\nx-request-id: "),
        "{answer}"
    );
}

// --- access log -----------------------------------------------------------------------------

/// A 201 (a blob pushed) and a 404, with a client id on the 404; returns the response ids.
fn traffic(c: &mut Client) -> (String, String) {
    let blob = b"access log test blob";
    let r = c.post(
        &format!("/v2/logs/app/blobs/uploads/?digest={}", sha256_digest(blob)),
        &[("Content-Type", "application/octet-stream")],
        blob,
    );
    assert_eq!(r.status, 201);
    let created = r.header("x-request-id").unwrap().to_string();
    let r = c.request(
        "GET",
        "/v2/logs/app/manifests/missing",
        &[("X-Request-Id", "mine-404")],
        b"",
    );
    assert_eq!(r.status, 404);
    (created, "mine-404".to_string())
}

#[test]
fn access_log_in_text() {
    let s = Server::start();
    let mut c = s.client();
    let (created, missing) = traffic(&mut c);
    let lines = log_lines(&s, 2, |l| l.contains(" info access "));
    let find = |id: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!(" request_id={id} ")))
            .unwrap_or_else(|| panic!("no access line for {id}:\n{}", s.stderr()))
            .clone()
    };
    let line = find(&created);
    let port = c.stream().local_addr().unwrap().port();
    let fields: HashMap<&str, &str> = line
        .split(' ')
        .skip(3)
        .map(|kv| {
            kv.split_once('=')
                .unwrap_or_else(|| panic!("{kv} in {line}"))
        })
        .collect();
    assert_eq!(fields["method"], "POST", "{line}");
    assert_eq!(fields["route"], "upload");
    assert_eq!(fields["repository"], "logs/app");
    assert_eq!(fields["status"], "201");
    assert_eq!(fields["received"], "20");
    assert_eq!(fields["sent"], "0");
    assert!(fields["duration_ms"].parse::<f64>().unwrap() > 0.0);
    assert_eq!(fields["remote"], format!("127.0.0.1:{port}"));
    // The timestamp leads: RFC 3339, UTC.
    let ts = line.split(' ').next().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{ts}"
    );
    let line = find(&missing);
    assert!(
        line.contains(" method=GET route=manifest repository=logs/app status=404 received=0 sent="),
        "{line}"
    );
    // The other lines share the format.
    let listening = log_lines(&s, 1, |l| l.contains("listening on"));
    assert!(
        listening[0].split(' ').nth(1) == Some("info"),
        "{}",
        listening[0]
    );
}

#[test]
fn access_log_in_json() {
    let s = Server::start_in_temp(&["--log-format", "json"]);
    let mut c = s.client();
    let (created, missing) = traffic(&mut c);
    assert_eq!(c.get("/no/such/thing").status, 404);
    let access = log_lines(&s, 3, |l| l.contains("\"msg\":\"access\""));
    assert!(access.len() >= 3, "{}", s.stderr());
    // Every line is one JSON object with a time, a level and a message.
    let mut by_id = HashMap::new();
    for line in s.stderr().lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
        assert!(v["level"].is_string() && v["msg"].is_string(), "{line}");
        if v["msg"] == "access" {
            by_id.insert(v["request_id"].as_str().unwrap().to_string(), v);
        }
    }
    let port = c.stream().local_addr().unwrap().port();
    let v = &by_id[&created];
    let want = serde_json::json!({
        "level": "info", "method": "POST", "route": "upload", "repository": "logs/app",
        "status": 201, "received": 20, "sent": 0, "remote": format!("127.0.0.1:{port}")
    });
    for (key, value) in want.as_object().unwrap() {
        assert_eq!(&v[key], value, "{key} in {v}");
    }
    assert!(v["duration_ms"].as_f64().unwrap() > 0.0);
    let v = &by_id[&missing];
    assert_eq!(
        (v["method"].as_str(), v["status"].as_u64()),
        (Some("GET"), Some(404))
    );
    assert_eq!(v["route"], "manifest");
    assert!(v["sent"].as_u64().unwrap() > 0);
    let unknown = by_id
        .values()
        .find(|v| v["route"] == "other")
        .expect("the unknown path is logged");
    assert_eq!(unknown["status"], 404);
    assert!(unknown["repository"].is_null());
}

#[test]
fn access_log_can_be_turned_off() {
    let s = Server::start_in_temp(&["--no-access-log"]);
    let mut c = s.client();
    traffic(&mut c);
    std::thread::sleep(Duration::from_millis(400));
    let log = s.stderr();
    assert!(!log.contains(" access "), "{log}");
    assert!(log.contains("listening on"));
}

#[test]
fn shutdown_flushes_the_access_log() {
    let s = Server::start();
    let mut c = s.client();
    for _ in 0..20 {
        assert_eq!(c.get("/v2/").status, 200);
    }
    drop(c);
    // SIGTERM right away: the lines still buffered in the workers must come out before exit.
    let pid = s.pid();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !s.stderr().contains("info stopped") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = s.stderr();
    let lines = stderr
        .lines()
        .filter(|l| l.contains(" info access "))
        .count();
    assert_eq!(lines, 20, "{stderr}");
    let stopped = stderr.find("info stopped").expect("stopped line");
    let last_access = stderr.rfind(" info access ").unwrap();
    assert!(
        last_access < stopped,
        "access lines come before the final line"
    );
}

/// Workers buffer their access lines and hand them over every ~100 ms; the logger merges them,
/// so a log read top to bottom is in time order even when both workers answered at once.
#[test]
fn log_lines_come_out_in_time_order_across_workers() {
    let s = Server::start();
    let per_thread = 150;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let mut c = s.client();
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    assert_eq!(c.get("/v2/").status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let lines = log_lines(&s, 8 * per_thread, |l| l.contains(" info access "));
    assert_eq!(lines.len(), 8 * per_thread, "{}", s.stderr());
    let stderr = s.stderr();
    // Every line starts with its RFC 3339 timestamp, whose text order is time order.
    let stamps: Vec<&str> = stderr.lines().map(|l| &l[..24]).collect();
    for pair in stamps.windows(2) {
        assert!(
            pair[0] <= pair[1],
            "{} after {}:\n{stderr}",
            pair[1],
            pair[0]
        );
    }
    let workers: std::collections::HashSet<&str> = lines
        .iter()
        .filter_map(|l| l.split("request_id=").nth(1)?.split('-').nth(1))
        .collect();
    assert_eq!(workers.len(), 2, "both workers answered: {workers:?}");
}

/// An internal failure answers 500 UNKNOWN with nothing of its cause, and the cause is logged
/// once, as an error naming the request id the client got: here a blob whose file went missing
/// under the registry.
#[test]
fn an_internal_error_is_logged_once_with_its_request_id() {
    let s = Server::start();
    let mut c = s.client();
    let blob = b"a blob whose file goes missing";
    let digest = push_blob(&mut c, "lost/file", blob);
    let hex = &digest["sha256:".len()..];
    std::fs::remove_file(s.root.join("blobs/sha256").join(&hex[..2]).join(hex)).unwrap();
    let r = c.get(&format!("/v2/lost/file/blobs/{digest}"));
    assert_error(&r, 500, &["UNKNOWN"]);
    assert!(
        !r.text().contains(hex),
        "the cause is not sent: {:?}",
        r.text()
    );
    let id = must_header(&r, "x-request-id").to_string();
    let lines = log_lines(&s, 1, |l| l.contains(" error ") && l.contains(&id));
    assert_eq!(lines.len(), 1, "{}", s.stderr());
    assert!(lines[0].contains("blob file missing"), "{}", lines[0]);
    std::thread::sleep(Duration::from_millis(500));
    let errors = s.stderr().lines().filter(|l| l.contains(" error ")).count();
    assert_eq!(errors, 1, "logged once:\n{}", s.stderr());
}
