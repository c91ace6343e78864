//! `loadtest get`: the static-bytes workload, wrk-like. C keep-alive connections issue
//! requests back to back, for a duration or a number of requests; bodies are streamed and
//! counted, and hashed and compared when a digest is expected.

use super::registry::check_status;
use super::Outcome;
use crate::cli::{GetArgs, Method};
use crate::digest::is_sha256;
use crate::error::{Error, Kind};
use crate::http::conn::Body;
use crate::http::{Conn, Sink};
use crate::run::Run;
use crate::runtime::{run_on_threads, share};
use crate::stats::{mb_per_s, per_second, round3, Latencies};
use crate::url::{split_any_url, Target};
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Shared {
    run: Arc<Run>,
    paths: Vec<String>,
    headers: Vec<(String, String)>,
    method: &'static str,
    expect: Option<String>,
    stop_at: Option<Instant>,
    timeout: Duration,
    new_connection: bool,
}

struct ThreadResult {
    lat: Latencies,
    requests: u64,
    bytes: u64,
    connects: u64,
}

pub fn run(args: GetArgs) -> Result<Outcome, String> {
    let mut authority = None;
    let mut paths = Vec::new();
    let mut https = 0;
    for u in &args.urls {
        let (tls, a, p) = split_any_url(u)?;
        https += usize::from(tls);
        if authority.as_ref().is_some_and(|x| x != &a) {
            return Err("all --url values must name the same HOST:PORT".into());
        }
        authority = Some(a);
        paths.push(p);
    }
    let authority = authority.ok_or("at least one --url is needed")?;
    let mut target = Target::resolve(&authority)?;
    if https > 0 {
        if https < args.urls.len() {
            return Err("--url values must all be http:// or all https://".into());
        }
        let ca = args.ca.as_deref().ok_or("https:// URLs need --ca FILE")?;
        target.tls = Some(crate::http::tls::TlsTarget::new(&authority, ca)?);
    }
    if let Some(d) = &args.expect_digest {
        if !is_sha256(d) {
            return Err(format!("--expect-digest {d:?} is not a sha256 digest"));
        }
    }
    let threads = args
        .common
        .threads
        .unwrap_or_else(crate::runtime::default_threads);
    let connections = args.connections.max(1);
    let timeout = Duration::from_secs(args.common.timeout);
    // With only --duration, jobs are unlimited; with --requests they are counted.
    let run = Arc::new(Run::new(
        args.requests.unwrap_or(u64::MAX),
        timeout,
        args.common.max_seconds,
    ));
    let mut headers = args.headers.clone();
    if let Some(value) = crate::auth::authorization(&args.auth, timeout)? {
        headers.push(("Authorization".into(), value));
    }
    let method = match args.method {
        Method::Get => "GET",
        Method::Head => "HEAD",
    };
    let shared = Arc::new(Shared {
        run: run.clone(),
        paths,
        headers,
        method,
        expect: args.expect_digest.clone(),
        stop_at: args
            .duration
            .map(|d| run.started + Duration::from_secs_f64(d.max(0.0))),
        timeout,
        new_connection: args.new_connection,
    });
    let results = run_on_threads(threads, move |t| {
        let (sh, target) = (shared.clone(), target.clone());
        let first = t; // connection k of this thread has global index t + k * threads
        async move { thread_main(sh, target, share(connections, threads, t), first, threads).await }
    })?;
    let elapsed = run.started.elapsed().as_secs_f64();
    if args.duration.is_none() {
        run.settle_unclaimed();
    }
    let mut lat = Latencies::new();
    let (mut requests, mut bytes, mut connects) = (0u64, 0u64, 0u64);
    for r in results {
        lat.merge(&r.lat);
        requests += r.requests;
        bytes += r.bytes;
        connects += r.connects;
    }
    let s = lat.summary();
    let errors = run.total_errors();
    let json = json!({
        "workload": "get",
        "urls": args.urls,
        "method": method,
        "connections": connections,
        "threads": threads,
        "expect_digest": args.expect_digest,
        "elapsed_s": round3(elapsed),
        "requests": requests,
        "requests_per_s": round3(per_second(s.count as f64, elapsed)),
        "bytes": bytes,
        "mb_per_s": round3(mb_per_s(bytes, elapsed)),
        "connects": connects,
        "errors": errors,
        "error_kinds": run.error_kinds(),
        "latency": s.to_json(),
    });
    let text = format!(
        "get {} x{} ({method}), {connections} connections on {threads} threads\n  \
         elapsed {elapsed:.3} s, {requests} requests, {:.0} req/s, {:.1} MB/s, {connects} connects\n  \
         latency   {}\n{}",
        args.urls.first().map(String::as_str).unwrap_or(""),
        args.urls.len(),
        per_second(s.count as f64, elapsed),
        mb_per_s(bytes, elapsed),
        s.line(),
        run.errors_line(errors)
    );
    Ok(Outcome { json, text, errors })
}

async fn thread_main(
    sh: Arc<Shared>,
    target: Target,
    conns: usize,
    first: usize,
    stride: usize,
) -> ThreadResult {
    let lat = Rc::new(RefCell::new(Latencies::new()));
    let requests = Rc::new(Cell::new(0u64));
    let bytes = Rc::new(Cell::new(0u64));
    let connects = Rc::new(Cell::new(0u64));
    let mut handles = Vec::new();
    for k in 0..conns {
        let index = first + k * stride;
        let (sh, lat, requests, bytes, connects) = (
            sh.clone(),
            lat.clone(),
            requests.clone(),
            bytes.clone(),
            connects.clone(),
        );
        let mut conn = Conn::new(target.clone());
        handles.push(monoio::spawn(async move {
            let headers: Vec<(&str, &str)> = sh
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut n = index;
            loop {
                if sh.stop_at.is_some_and(|t| Instant::now() >= t) {
                    break;
                }
                if sh.run.claim().is_none() {
                    break;
                }
                let path = &sh.paths[n % sh.paths.len()];
                n += 1;
                let mut sink = if sh.expect.is_some() {
                    Sink::hash()
                } else {
                    Sink::count()
                };
                let t0 = Instant::now();
                let r = conn
                    .request(sh.method, path, &headers, Body::None, &mut sink, sh.timeout)
                    .await;
                if sh.new_connection {
                    conn.close();
                }
                let took = t0.elapsed();
                requests.set(requests.get() + 1);
                bytes.set(bytes.get() + sink.bytes);
                let checked = r.and_then(|head| {
                    check_status(&head, &mut sink, &format!("{} {path}", sh.method))?;
                    if let (Some(want), "GET") = (&sh.expect, sh.method) {
                        let got = sink.digest().unwrap_or_default();
                        if &got != want {
                            return Err(Error::new(
                                Kind::Digest,
                                format!("GET {path}: body hashes to {got}"),
                            ));
                        }
                    }
                    Ok(())
                });
                match checked {
                    Ok(()) => lat.borrow_mut().record(took),
                    Err(e) => {
                        lat.borrow_mut().error();
                        sh.run.error("get", &e);
                    }
                }
            }
            connects.set(connects.get() + conn.connects);
        }));
    }
    for h in handles {
        h.await;
    }
    let l = lat.borrow().clone();
    ThreadResult {
        lat: l,
        requests: requests.get(),
        bytes: bytes.get(),
        connects: connects.get(),
    }
}
