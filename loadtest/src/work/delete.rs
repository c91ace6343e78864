//! `loadtest delete`: DELETE of manifests by digest, C at a time, from a list of
//! NAME[:TAG]@DIGEST lines (what `seed --images N --list FILE` writes). What a registry
//! answers with anything but 2xx is an error; a manifest already gone is one too.

use super::registry::{delete_manifest, Counters};
use super::Outcome;
use crate::cli::{parse_image, DeleteArgs};
use crate::http::Conn;
use crate::run::Run;
use crate::runtime::{run_on_threads, share};
use crate::stats::{per_second, round3, Latencies};
use crate::url::{split_url, Target};
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `NAME[:TAG]@DIGEST` -> (NAME, DIGEST). Pure.
pub fn parse_line(line: &str) -> Result<(String, String), String> {
    let (name, digest) = line
        .split_once('@')
        .ok_or_else(|| format!("{line:?} is not NAME[:TAG]@DIGEST"))?;
    let image = parse_image(name)?;
    let digest = digest.trim();
    if !crate::digest::is_sha256(digest) {
        return Err(format!("{line:?}: {digest:?} is not a sha256 digest"));
    }
    Ok((image.name, digest.to_string()))
}

struct Shared {
    run: Arc<Run>,
    jobs: Vec<(String, String)>,
}

pub fn run(args: DeleteArgs) -> Result<Outcome, String> {
    let (authority, _) = split_url(&args.registry)?;
    let target = Target::resolve(&authority)?;
    let text = std::fs::read_to_string(&args.list)
        .map_err(|e| format!("cannot read {}: {e}", args.list.display()))?;
    let jobs = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(parse_line)
        .collect::<Result<Vec<_>, _>>()?;
    let threads = args
        .common
        .threads
        .unwrap_or_else(crate::runtime::default_threads);
    let clients = args.clients.max(1);
    let timeout = Duration::from_secs(args.common.timeout);
    let run = Arc::new(Run::new(
        jobs.len() as u64,
        timeout,
        args.common.max_seconds,
    ));
    let total = jobs.len();
    let sh = Arc::new(Shared {
        run: run.clone(),
        jobs,
    });
    let results = run_on_threads(threads, move |t| {
        let (sh, target) = (sh.clone(), target.clone());
        async move { thread_main(sh, target, share(clients, threads, t)).await }
    })?;
    let elapsed = run.started.elapsed().as_secs_f64();
    run.settle_unclaimed();
    let mut lat = Latencies::new();
    for l in &results {
        lat.merge(l);
    }
    let s = lat.summary();
    let errors = run.total_errors();
    let json = json!({
        "workload": "delete",
        "registry": args.registry,
        "list": args.list.display().to_string(),
        "manifests": total,
        "deleted": s.count,
        "clients": clients,
        "threads": threads,
        "elapsed_s": round3(elapsed),
        "deletes_per_s": round3(per_second(s.count as f64, elapsed)),
        "latency": s.to_json(),
        "errors": errors,
        "error_kinds": run.error_kinds(),
    });
    let text = format!(
        "delete {} of {total} manifests from {} ({clients} clients on {threads} threads)\n  \
         elapsed {elapsed:.3} s, {:.0} deletes/s\n  latency   {}\n{}",
        s.count,
        args.registry,
        per_second(s.count as f64, elapsed),
        s.line(),
        run.errors_line(errors)
    );
    Ok(Outcome { json, text, errors })
}

async fn thread_main(sh: Arc<Shared>, target: Target, clients: usize) -> Latencies {
    let lat = Rc::new(RefCell::new(Latencies::new()));
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (sh, lat) = (sh.clone(), lat.clone());
        let mut conn = Conn::new(target.clone());
        handles.push(monoio::spawn(async move {
            let counters = Counters::default();
            while let Some(i) = sh.run.claim() {
                let (name, digest) = &sh.jobs[i as usize];
                let t = Instant::now();
                match delete_manifest(&mut conn, name, digest, sh.run.timeout, &counters).await {
                    Ok(()) => lat.borrow_mut().record(t.elapsed()),
                    Err(e) => {
                        lat.borrow_mut().error();
                        sh.run.error(&format!("delete {name}@{digest}"), &e);
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await;
    }
    let l = lat.borrow().clone();
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_lines() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            parse_line(&format!("bench/gc-3:v-17@{d}")).unwrap(),
            ("bench/gc-3".to_string(), d.clone())
        );
        assert_eq!(parse_line(&format!("a@{d}")).unwrap().0, "a");
        assert!(parse_line("a:b").is_err());
        assert!(parse_line("a@sha256:xyz").is_err());
        assert!(parse_line(&format!("A@{d}")).is_err());
    }
}
