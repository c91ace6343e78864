//! `loadtest push`: N blob uploads of SIZE bytes by C clients in one of three client styles,
//! then one manifest per blob (a shared small config plus that blob as the only layer), PUT
//! by tag. Blob bytes come from the generator: unique per (seed, blob index).
//!
//! Monolithic uploads need the digest before sending; it is computed for all blobs in a
//! pre-pass before the clock starts (reported as `prepass_s`), so upload timings and the
//! total rate exclude it. Streamed and chunked uploads hash while sending, as docker does.

use super::registry::{put_manifest, upload, Content, Counters, UploadStyle};
use super::Outcome;
use crate::cli::{PushArgs, PushMode};
use crate::digest;
use crate::gen::Generator;
use crate::http::Conn;
use crate::oci;
use crate::run::Run;
use crate::runtime::{run_on_threads, share};
use crate::stats::{mb_per_s, per_second, round3, Latencies};
use crate::url::{split_url, Target};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Per-upload rates are recorded in kB/s (10^3 bytes per second) in a histogram.
const RATE_SCALE: f64 = 1e3;

struct Shared {
    run: Arc<Run>,
    gen: Generator,
    repo: String,
    size: u64,
    style: UploadStyle,
    /// Pre-computed digests (monolithic only), by blob index.
    digests: Vec<String>,
    timeout: Duration,
}

#[derive(Default)]
struct UploadAcc {
    lat: Latencies,
    rates: Latencies,
    done: Vec<(u64, String)>,
}

struct UploadResult {
    lat: Latencies,
    rates: Latencies,
    done: Vec<(u64, String)>,
    bytes: u64,
    requests: u64,
    connects: u64,
}

pub fn run(args: PushArgs) -> Result<Outcome, String> {
    let (authority, _) = split_url(&args.registry)?;
    let target = Target::resolve(&authority)?;
    crate::cli::parse_image(&format!("{}:x", args.repo))?;
    let threads = args
        .common
        .threads
        .unwrap_or_else(crate::runtime::default_threads);
    let clients = args.clients.max(1);
    let timeout = Duration::from_secs(args.common.timeout);
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let style = match (args.chunked, args.mode) {
        (Some(n), _) => UploadStyle::Chunked(n.max(1)),
        (None, PushMode::Monolithic) => UploadStyle::Monolithic,
        (None, PushMode::Stream) => UploadStyle::Stream,
    };
    let (mode_name, chunk_bytes) = match style {
        UploadStyle::Monolithic => ("monolithic", None),
        UploadStyle::Stream => ("stream", None),
        UploadStyle::Chunked(n) => ("chunked", Some(n)),
    };
    let gen = Generator::new(seed);

    // The digest pre-pass of monolithic uploads, on all cores, before any clock runs.
    let pre = Instant::now();
    let digests = if style == UploadStyle::Monolithic {
        prepass(&gen, args.size, args.count, threads)
    } else {
        Vec::new()
    };
    let prepass_s = pre.elapsed().as_secs_f64();

    let run = Arc::new(Run::new(args.count, timeout, args.common.max_seconds));
    let shared = Arc::new(Shared {
        run: run.clone(),
        gen,
        repo: args.repo.clone(),
        size: args.size,
        style,
        digests,
        timeout,
    });
    let sh = shared.clone();
    let tgt = target.clone();
    let results = run_on_threads(threads, move |t| {
        let (sh, tgt) = (sh.clone(), tgt.clone());
        async move { upload_thread(sh, tgt, share(clients, threads, t)).await }
    })?;
    let elapsed = run.started.elapsed().as_secs_f64();
    run.settle_unclaimed();

    let mut lat = Latencies::new();
    let mut rates = Latencies::new();
    let mut done = Vec::new();
    let (mut bytes, mut requests, mut connects) = (0u64, 0u64, 0u64);
    for r in results {
        lat.merge(&r.lat);
        rates.merge(&r.rates);
        done.extend(r.done);
        bytes += r.bytes;
        requests += r.requests;
        connects += r.connects;
    }
    done.sort();
    let uploaded_bytes = done.len() as u64 * args.size;

    // Manifests: one shared config blob, then one manifest per uploaded blob.
    let (manifests, manifests_elapsed, config_digest, m_connects) =
        manifest_phase(&shared, &target, &done, seed, clients, threads)?;
    connects += m_connects;
    let errors = run.total_errors();

    let upload = lat.summary();
    let mstats = manifests.summary();
    let rate = |q: f64| round3(rates.quantile(q) as f64 * RATE_SCALE / 1e6);
    let json = json!({
        "workload": "push",
        "registry": args.registry,
        "repo": args.repo,
        "mode": mode_name,
        "chunk_bytes": chunk_bytes,
        "size_bytes": args.size,
        "count": args.count,
        "clients": clients,
        "threads": threads,
        "seed": seed,
        "prepass_s": (style == UploadStyle::Monolithic).then(|| round3(prepass_s)),
        "elapsed_s": round3(elapsed),
        "uploads_done": done.len(),
        "bytes": uploaded_bytes,
        "mb_per_s": round3(mb_per_s(uploaded_bytes, elapsed)),
        "requests": requests,
        "upload": upload.to_json(),
        "upload_mb_per_s": {"p50": rate(0.5), "p90": rate(0.9), "p99": rate(0.99), "min": rate(0.0)},
        "manifests": mstats.to_json(),
        "manifests_elapsed_s": round3(manifests_elapsed),
        "config_digest": config_digest,
        "connects": connects,
        "errors": errors,
        "error_kinds": run.error_kinds(),
    });
    let size_text = human_size(args.size);
    let mut text = format!(
        "push {} x {size_text} to {}/{} ({mode_name}{}), {clients} clients on {threads} threads, seed {seed}\n",
        args.count,
        args.registry,
        args.repo,
        chunk_bytes.map(|c| format!(" {}", human_size(c))).unwrap_or_default()
    );
    if style == UploadStyle::Monolithic {
        text += &format!(
            "  digest pre-pass {prepass_s:.3} s (before the clock: excluded from all timings below)\n"
        );
    }
    text += &format!(
        "  uploads   {}\n  elapsed {elapsed:.3} s, {} bytes sent in requests, total {:.1} MB/s (blob bytes / wall time), per upload p50 {:.1} MB/s\n",
        upload.line(),
        bytes,
        mb_per_s(uploaded_bytes, elapsed),
        rate(0.5)
    );
    text += &format!(
        "  manifests {} ({:.0}/s)\n",
        mstats.line(),
        per_second(mstats.count as f64, manifests_elapsed)
    );
    text += &run.errors_line(errors);
    Ok(Outcome { json, text, errors })
}

pub fn human_size(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (u, name) in UNITS {
        if n >= u && n.is_multiple_of(u) {
            return format!("{}{name}", n / u);
        }
    }
    format!("{n}B")
}

/// sha256 of every blob, computed by `threads` OS threads.
pub fn prepass(gen: &Generator, size: u64, count: u64, threads: usize) -> Vec<String> {
    let threads = threads.max(1) as u64;
    let mut out = vec![String::new(); count as usize];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut buf = vec![0u8; 1 << 20];
                    (0..count)
                        .filter(|i| i % threads == t)
                        .map(|i| (i, blob_digest(gen, i, size, &mut buf)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, d) in h.join().expect("pre-pass thread") {
                out[i as usize] = d;
            }
        }
    });
    out
}

/// sha256 of generated blob `blob`, streamed through `buf`.
pub fn blob_digest(gen: &Generator, blob: u64, size: u64, buf: &mut [u8]) -> String {
    let mut h = Sha256::new();
    let _ = gen.stream(blob, size, buf, |piece| {
        h.update(piece);
        Ok::<(), std::convert::Infallible>(())
    });
    digest::finish(h)
}

async fn upload_thread(sh: Arc<Shared>, target: Target, clients: usize) -> UploadResult {
    let acc = Rc::new(RefCell::new(UploadAcc::default()));
    let counters = Rc::new(Counters::default());
    let connects = Rc::new(std::cell::Cell::new(0u64));
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (sh, acc, counters, connects) =
            (sh.clone(), acc.clone(), counters.clone(), connects.clone());
        let mut conn = Conn::new(target.clone());
        handles.push(monoio::spawn(async move {
            while let Some(i) = sh.run.claim() {
                let known = sh.digests.get(i as usize).map(String::as_str);
                let t0 = Instant::now();
                let content = Content::Generated {
                    gen: &sh.gen,
                    blob: i,
                };
                let r = upload(
                    &mut conn, &sh.repo, content, sh.size, sh.style, known, sh.timeout, &counters,
                )
                .await;
                let took = t0.elapsed();
                let mut a = acc.borrow_mut();
                match r {
                    Ok(d) => {
                        a.lat.record(took);
                        let rate = sh.size as f64 / took.as_secs_f64().max(1e-9) / RATE_SCALE;
                        a.rates.record_value(rate.round() as u64);
                        a.done.push((i, d));
                    }
                    Err(e) => {
                        a.lat.error();
                        drop(a);
                        sh.run.error(&format!("upload of blob {i}"), &e);
                    }
                }
            }
            connects.set(connects.get() + conn.connects);
        }));
    }
    for h in handles {
        h.await;
    }
    let acc = Rc::try_unwrap(acc)
        .ok()
        .expect("clients finished")
        .into_inner();
    UploadResult {
        lat: acc.lat,
        rates: acc.rates,
        done: acc.done,
        bytes: counters.bytes_out.get(),
        requests: counters.requests.get(),
        connects: connects.get(),
    }
}

/// The shared config blob (one upload, untimed), then `done.len()` manifest PUTs by C
/// clients. Returns their latencies, the phase's wall time, the config digest and connects.
fn manifest_phase(
    sh: &Arc<Shared>,
    target: &Target,
    done: &[(u64, String)],
    seed: u64,
    clients: usize,
    threads: usize,
) -> Result<(Latencies, f64, String, u64), String> {
    let config = Arc::new(oci::image_config(&[]));
    let config_digest = digest::sha256_of(&config);
    let (sh2, tgt, cfg) = (sh.clone(), target.clone(), config.clone());
    let results = run_on_threads(1, move |_| {
        let (sh, tgt, cfg) = (sh2.clone(), tgt.clone(), cfg.clone());
        async move {
            let mut conn = Conn::new(tgt);
            let r = upload(
                &mut conn,
                &sh.repo,
                Content::Bytes(&cfg),
                cfg.len() as u64,
                UploadStyle::Monolithic,
                Some(&digest::sha256_of(&cfg)),
                sh.timeout,
                &Counters::default(),
            )
            .await;
            if let Err(e) = &r {
                sh.run.error("config blob upload", e);
            }
            conn.connects
        }
    })?;
    let mut connects: u64 = results.iter().sum();

    sh.run.restart_jobs(done.len() as u64);
    let jobs: Arc<Vec<(u64, String)>> = Arc::new(done.to_vec());
    let cfg_desc = Arc::new((config_digest.clone(), config.len() as u64));
    let (sh2, tgt) = (sh.clone(), target.clone());
    let t0 = Instant::now();
    let results = run_on_threads(threads, move |t| {
        let (sh, tgt, jobs, cfg_desc) = (sh2.clone(), tgt.clone(), jobs.clone(), cfg_desc.clone());
        manifest_thread(sh, tgt, jobs, cfg_desc, seed, share(clients, threads, t))
    })?;
    let elapsed = t0.elapsed().as_secs_f64();
    sh.run.settle_unclaimed();
    let mut lat = Latencies::new();
    for (l, c) in results {
        lat.merge(&l);
        connects += c;
    }
    Ok((lat, elapsed, config_digest, connects))
}

async fn manifest_thread(
    sh: Arc<Shared>,
    target: Target,
    jobs: Arc<Vec<(u64, String)>>,
    cfg: Arc<(String, u64)>,
    seed: u64,
    clients: usize,
) -> (Latencies, u64) {
    let lat = Rc::new(RefCell::new(Latencies::new()));
    let conns = Rc::new(std::cell::Cell::new(0u64));
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (sh, jobs, cfg, lat, conns) = (
            sh.clone(),
            jobs.clone(),
            cfg.clone(),
            lat.clone(),
            conns.clone(),
        );
        let mut conn = Conn::new(target.clone());
        handles.push(monoio::spawn(async move {
            let counters = Counters::default();
            while let Some(j) = sh.run.claim() {
                let (i, d) = &jobs[j as usize];
                let m = oci::image_manifest(false, (&cfg.0, cfg.1), &[(d.clone(), sh.size)]);
                let tag = format!("lt-{seed:x}-{i}");
                let t = Instant::now();
                let r = put_manifest(
                    &mut conn,
                    &sh.repo,
                    &tag,
                    oci::OCI_MANIFEST,
                    &m,
                    sh.timeout,
                    &counters,
                )
                .await;
                match r {
                    Ok(_) => lat.borrow_mut().record(t.elapsed()),
                    Err(e) => {
                        lat.borrow_mut().error();
                        sh.run.error(&format!("manifest {tag}"), &e);
                    }
                }
            }
            conns.set(conns.get() + conn.connects);
        }));
    }
    for h in handles {
        h.await;
    }
    let l = lat.borrow().clone();
    (l, conns.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_humans() {
        assert_eq!(human_size(1 << 30), "1GiB");
        assert_eq!(human_size(768 * 1024), "768KiB");
        assert_eq!(human_size(1000), "1000B");
    }

    #[test]
    fn prepass_matches_streamed_hash() {
        let g = Generator::with_base_len(3, 1 << 16);
        let d = prepass(&g, 300_000, 3, 2);
        let mut buf = vec![0u8; 4096];
        for (i, dig) in d.iter().enumerate() {
            assert_eq!(dig, &blob_digest(&g, i as u64, 300_000, &mut buf));
        }
        let mut whole = vec![0u8; 300_000];
        g.fill(1, 0, &mut whole);
        assert_eq!(d[1], digest::sha256_of(&whole));
    }
}
