//! `loadtest pull`: clients pulling an image the way containerd does. Each client keeps three
//! connections alive across its pulls (a transport pool). One pull: HEAD the manifest by tag
//! (containerd's Accept list) for its digest, GET the manifest by digest (through an index to
//! the linux/amd64 entry if need be), GET the config, GET the layers three at a time.
//!
//! A run is bounded by a number of pulls, or by time (`--duration`), or by another process
//! (`--stop-file`: no new pull once the file exists), whichever comes first.

use super::registry::{fetch, Counters};
use super::Outcome;
use crate::cli::PullArgs;
use crate::error::{Error, Kind, Result};
use crate::http::Conn;
use crate::oci::{parse_document, pick_platform, Descriptor, Document, CONTAINERD_ACCEPT};
use crate::run::Run;
use crate::runtime::{run_on_threads, share};
use crate::stats::{mb_per_s, per_second, round3, Latencies};
use crate::url::{split_url, Target};
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Manifest,
    Config,
    Layers,
}

#[derive(Default)]
struct Acc {
    pull: Latencies,
    manifest: Latencies,
    config: Latencies,
    layers: Latencies,
    /// Bytes of the last successful pull (manifests + config + layers) and its layer count.
    image_bytes: u64,
    layer_count: u64,
}

/// What one thread hands back.
struct ThreadResult {
    acc: Acc,
    requests: u64,
    bytes: u64,
    connects: u64,
}

struct Ctx {
    name: String,
    reference: String,
    by_digest: bool,
    verify: bool,
    timeout: Duration,
    run: Arc<Run>,
    stop_at: Option<Instant>,
    stop_file: Option<std::path::PathBuf>,
}

impl Ctx {
    /// The next pull's index, or None when the run is over (count, time or stop file).
    fn next_pull(&self) -> Option<u64> {
        if self.stop_at.is_some_and(|t| Instant::now() >= t)
            || self.stop_file.as_ref().is_some_and(|f| f.exists())
        {
            return None;
        }
        self.run.claim()
    }
}

pub fn run(args: PullArgs) -> std::result::Result<Outcome, String> {
    let (authority, _) = split_url(&args.registry)?;
    let target = Target::resolve(&authority)?;
    let threads = args
        .common
        .threads
        .unwrap_or_else(crate::runtime::default_threads);
    let clients = args.clients.max(1);
    let open_ended = args.duration.is_some() || args.stop_file.is_some();
    let pulls = args.pulls.or((!open_ended).then_some(100));
    let run = Arc::new(Run::new(
        pulls.unwrap_or(u64::MAX),
        Duration::from_secs(args.common.timeout),
        args.common.max_seconds,
    ));
    let ctx = Arc::new(Ctx {
        name: args.image.name.clone(),
        reference: args.image.reference.clone(),
        by_digest: args.image.is_digest(),
        verify: !args.no_verify,
        timeout: Duration::from_secs(args.common.timeout),
        run: run.clone(),
        stop_at: args
            .duration
            .map(|d| run.started + Duration::from_secs_f64(d.max(0.0))),
        stop_file: args.stop_file.clone(),
    });

    let results = run_on_threads(threads, move |t| {
        let ctx = ctx.clone();
        let target = target.clone();
        async move { thread_main(ctx, target, share(clients, threads, t)).await }
    })?;
    let elapsed = run.started.elapsed().as_secs_f64();
    if !open_ended {
        run.settle_unclaimed();
    }

    let mut acc = Acc::default();
    let (mut requests, mut bytes, mut connects) = (0, 0, 0);
    for r in &results {
        acc.pull.merge(&r.acc.pull);
        acc.manifest.merge(&r.acc.manifest);
        acc.config.merge(&r.acc.config);
        acc.layers.merge(&r.acc.layers);
        acc.image_bytes = acc.image_bytes.max(r.acc.image_bytes);
        acc.layer_count = acc.layer_count.max(r.acc.layer_count);
        requests += r.requests;
        bytes += r.bytes;
        connects += r.connects;
    }
    let pull = acc.pull.summary();
    let phases = [
        ("manifest", acc.manifest.summary()),
        ("config", acc.config.summary()),
        ("layers", acc.layers.summary()),
    ];
    let errors = run.total_errors();
    let sep = if args.image.is_digest() { "@" } else { ":" };
    let image = format!("{}{sep}{}", args.image.name, args.image.reference);
    let json = json!({
        "workload": "pull",
        "registry": args.registry,
        "image": image,
        "clients": clients,
        "threads": threads,
        "pulls_requested": pulls,
        "duration_s": args.duration,
        "stop_file": args.stop_file.as_ref().map(|p| p.display().to_string()),
        "verify": !args.no_verify,
        "elapsed_s": round3(elapsed),
        "pulls_done": pull.count,
        "requests": requests,
        "requests_per_s": round3(per_second(requests as f64, elapsed)),
        "bytes": bytes,
        "mb_per_s": round3(mb_per_s(bytes, elapsed)),
        "image_bytes": acc.image_bytes,
        "layers": acc.layer_count,
        "connects": connects,
        "errors": errors,
        "error_kinds": run.error_kinds(),
        "pull": pull.to_json(),
        "phases": {
            "manifest": phases[0].1.to_json(),
            "config": phases[1].1.to_json(),
            "layers": phases[2].1.to_json(),
        },
    });
    let mut bounds = Vec::new();
    if let Some(n) = pulls {
        bounds.push(format!("{n} pulls"));
    }
    if let Some(d) = args.duration {
        bounds.push(format!("{d} s"));
    }
    if let Some(f) = &args.stop_file {
        bounds.push(format!("until {} exists", f.display()));
    }
    let mut text = format!(
        "pull {}:{} from {}: {} clients on {} threads, {}, verify {}\n",
        args.image.name,
        args.image.reference,
        args.registry,
        clients,
        threads,
        bounds.join(" or "),
        !args.no_verify
    );
    text += &format!(
        "  elapsed {:.3} s, {} requests ({:.0} req/s), {:.1} MB/s, image {} bytes in {} layers, {} connects\n",
        elapsed,
        requests,
        per_second(requests as f64, elapsed),
        mb_per_s(bytes, elapsed),
        acc.image_bytes,
        acc.layer_count,
        connects
    );
    text += &format!("  pull      {}\n", pull.line());
    for (name, s) in &phases {
        text += &format!("  {name:<9} {}\n", s.line());
    }
    text += &run.errors_line(errors);
    Ok(Outcome { json, text, errors })
}

async fn thread_main(ctx: Arc<Ctx>, target: Target, clients: usize) -> ThreadResult {
    let acc = Rc::new(RefCell::new(Acc::default()));
    let counters = Rc::new(Counters::default());
    let connects = Rc::new(Cell::new(0u64));
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (ctx, acc, counters, connects) =
            (ctx.clone(), acc.clone(), counters.clone(), connects.clone());
        let target = target.clone();
        handles.push(monoio::spawn(async move {
            let mut conns = [
                Conn::new(target.clone()),
                Conn::new(target.clone()),
                Conn::new(target),
            ];
            while ctx.next_pull().is_some() {
                match one_pull(&ctx, &mut conns, &counters, &acc).await {
                    Ok(()) => {}
                    Err((phase, e)) => {
                        let mut a = acc.borrow_mut();
                        a.pull.error();
                        match phase {
                            Phase::Manifest => a.manifest.error(),
                            Phase::Config => a.config.error(),
                            Phase::Layers => a.layers.error(),
                        }
                        drop(a);
                        ctx.run.error("pull", &e);
                    }
                }
            }
            connects.set(connects.get() + conns.iter().map(|c| c.connects).sum::<u64>());
        }));
    }
    for h in handles {
        h.await;
    }
    let acc = Rc::try_unwrap(acc)
        .ok()
        .expect("all clients finished")
        .into_inner();
    ThreadResult {
        acc,
        requests: counters.requests.get(),
        bytes: counters.bytes_in.get(),
        connects: connects.get(),
    }
}

async fn one_pull(
    ctx: &Ctx,
    conns: &mut [Conn; 3],
    counters: &Counters,
    acc: &RefCell<Acc>,
) -> std::result::Result<(), (Phase, Error)> {
    let t0 = Instant::now();
    let in_phase = |p: Phase| move |e: Error| (p, e);
    let (config, layers, manifest_bytes) = manifest_phase(ctx, &mut conns[0], counters)
        .await
        .map_err(in_phase(Phase::Manifest))?;
    let t1 = Instant::now();

    let path = format!("/v2/{}/blobs/{}", ctx.name, config.digest);
    let cfg = fetch(
        &mut conns[0],
        "GET",
        &path,
        None,
        Some(&config.digest),
        Some(config.size),
        ctx.verify,
        false,
        ctx.timeout,
        counters,
    )
    .await
    .map_err(in_phase(Phase::Config))?;
    let t2 = Instant::now();

    let next = Cell::new(0usize);
    let failed = Cell::new(false);
    let [a, b, c] = conns;
    let (ra, rb, rc) = monoio::join!(
        layer_worker(ctx, a, &layers, &next, &failed, counters),
        layer_worker(ctx, b, &layers, &next, &failed, counters),
        layer_worker(ctx, c, &layers, &next, &failed, counters),
    );
    let layer_bytes = ra
        .and_then(|x| rb.map(|y| x + y))
        .and_then(|x| rc.map(|y| x + y));
    let layer_bytes = layer_bytes.map_err(in_phase(Phase::Layers))?;
    let t3 = Instant::now();

    let mut a = acc.borrow_mut();
    a.manifest.record(t1 - t0);
    a.config.record(t2 - t1);
    a.layers.record(t3 - t2);
    a.pull.record(t3 - t0);
    a.image_bytes = manifest_bytes + cfg.bytes + layer_bytes;
    a.layer_count = layers.len() as u64;
    Ok(())
}

/// HEAD by tag, GET by digest, and through an index to the platform manifest. Returns the
/// config and layer descriptors, and the manifest bytes received.
async fn manifest_phase(
    ctx: &Ctx,
    conn: &mut Conn,
    counters: &Counters,
) -> Result<(Descriptor, Vec<Descriptor>, u64)> {
    let digest = if ctx.by_digest {
        ctx.reference.clone()
    } else {
        let path = format!("/v2/{}/manifests/{}", ctx.name, ctx.reference);
        let head = fetch(
            conn,
            "HEAD",
            &path,
            Some(CONTAINERD_ACCEPT),
            None,
            None,
            false,
            false,
            ctx.timeout,
            counters,
        )
        .await?;
        head.head
            .header("docker-content-digest")
            .ok_or_else(|| Error::protocol(format!("HEAD {path}: no Docker-Content-Digest")))?
            .to_string()
    };
    let mut received = 0;
    let mut digest = digest;
    let mut size = None;
    for depth in 0..2 {
        let path = format!("/v2/{}/manifests/{}", ctx.name, digest);
        let got = fetch(
            conn,
            "GET",
            &path,
            Some(CONTAINERD_ACCEPT),
            Some(&digest),
            size,
            ctx.verify,
            true,
            ctx.timeout,
            counters,
        )
        .await?;
        received += got.bytes;
        let doc = parse_document(&got.body, got.head.header("content-type"))
            .map_err(|e| Error::protocol(format!("GET {path}: {e}")))?;
        match doc {
            Document::Manifest { config, layers } => return Ok((config, layers, received)),
            Document::Index { manifests } if depth == 0 => {
                let pick = pick_platform(&manifests)
                    .ok_or_else(|| Error::protocol(format!("GET {path}: empty index")))?;
                digest = pick.digest.clone();
                size = Some(pick.size);
            }
            Document::Index { .. } => {
                return Err(Error::protocol(format!(
                    "GET {path}: an index inside an index"
                )))
            }
        }
    }
    Err(Error::new(Kind::Protocol, "unreachable manifest depth"))
}

/// Takes layers off the shared queue until none are left (or another worker failed).
async fn layer_worker(
    ctx: &Ctx,
    conn: &mut Conn,
    layers: &[Descriptor],
    next: &Cell<usize>,
    failed: &Cell<bool>,
    counters: &Counters,
) -> Result<u64> {
    let mut bytes = 0;
    loop {
        let i = next.get();
        if i >= layers.len() || failed.get() {
            return Ok(bytes);
        }
        next.set(i + 1);
        let l = &layers[i];
        let path = format!("/v2/{}/blobs/{}", ctx.name, l.digest);
        match fetch(
            conn,
            "GET",
            &path,
            None,
            Some(&l.digest),
            Some(l.size),
            ctx.verify,
            false,
            ctx.timeout,
            counters,
        )
        .await
        {
            Ok(f) => bytes += f.bytes,
            Err(e) => {
                failed.set(true);
                return Err(e);
            }
        }
    }
}
