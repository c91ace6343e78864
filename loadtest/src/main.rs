//! loadtest: a load generator for OCI registries that behaves like real clients (containerd's
//! pull, docker's and chunked pushes, wrk-like static GETs) and is light enough not to be the
//! bottleneck: one monoio event loop per thread, hand-written keep-alive HTTP/1.1, bodies
//! streamed through reusable buffers, latencies in HDR histograms. `loadtest --help` and
//! `loadtest <command> --help` document the flags and the JSON fields.

mod auth;
mod cli;
mod digest;
mod error;
mod gen;
mod http;
mod oci;
mod run;
mod runtime;
mod stats;
mod tarstream;
mod url;
mod work;

use clap::Parser;
use cli::{Cli, Command, Common, GenArgs};
use std::time::{Duration, Instant};

fn main() {
    let cli = Cli::parse();
    let (common, json) = match &cli.cmd {
        Command::Pull(a) => (Some(a.common.clone()), a.common.json),
        Command::Push(a) => (Some(a.common.clone()), a.common.json),
        Command::Seed(a) => (Some(a.common.clone()), a.common.json),
        Command::Delete(a) => (Some(a.common.clone()), a.common.json),
        Command::Get(a) => (Some(a.common.clone()), a.common.json),
        Command::Gen(_) => (None, false),
    };
    if let Some(c) = &common {
        watchdog(c);
    }
    let outcome = match cli.cmd {
        Command::Pull(a) => work::pull::run(a),
        Command::Push(a) => work::push::run(a),
        Command::Seed(a) => work::seed::run(a),
        Command::Delete(a) => work::delete::run(a),
        Command::Get(a) => work::get::run(a),
        Command::Gen(a) => {
            gen_speed(a);
            return;
        }
    };
    match outcome {
        Ok(o) => {
            if json {
                println!("{}", o.json);
            } else {
                println!("{}", o.text);
            }
            let allow = common.is_some_and(|c| c.allow_errors);
            if o.errors > 0 && !allow {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("loadtest: {e}");
            std::process::exit(2);
        }
    }
}

/// Ends the process if the run overruns --max-seconds by more than one request timeout (plus
/// a margin): no new work starts after --max-seconds, so only a stuck request gets here.
fn watchdog(c: &Common) {
    let limit = Duration::from_secs(c.max_seconds + c.timeout + 30);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!(
            "loadtest: the run overran --max-seconds by more than --timeout + 30 s; stopping"
        );
        std::process::exit(3);
    });
}

/// Generator throughput, without and with sha256 (the hidden `gen` command).
fn gen_speed(a: GenArgs) {
    let g = gen::Generator::new(1);
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut sink = 0u8;
    let _ = g.stream(0, a.size, &mut buf, |piece| {
        sink ^= piece[piece.len() / 2];
        Ok::<(), std::convert::Infallible>(())
    });
    let s = t.elapsed().as_secs_f64();
    println!(
        "generate {} bytes: {:.3} s, {:.2} GB/s (check {sink})",
        a.size,
        s,
        a.size as f64 / s / 1e9
    );
    if a.hash {
        let t = Instant::now();
        let d = work::push::blob_digest(&g, 0, a.size, &mut buf);
        let s = t.elapsed().as_secs_f64();
        println!(
            "generate + sha256: {:.3} s, {:.2} GB/s ({d})",
            s,
            a.size as f64 / s / 1e9
        );
    }
}
