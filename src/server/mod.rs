//! Process lifecycle: lock the data directory, open the stores, bind the listeners, start one
//! event loop per worker, and on SIGTERM or SIGINT stop accepting, let requests in flight
//! finish (bounded), and exit cleanly.

pub mod balance;
pub mod connection;
pub mod cpu_yield;
pub mod listen;
pub mod signal;
pub mod worker;

use crate::api::{Limits, Registry};
use crate::blocking::{block_on, Pool};
use crate::config::Config;
use crate::meta::Meta;
use crate::observe::connections::Connections;
use crate::observe::health::{Readiness, Timeouts};
use crate::observe::Ops;
use crate::store::blobs::BlobStore;
use crate::store::uploads::Uploads;
use connection::ConnSettings;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Holds `<root>/LOCK` with flock for the life of the process: two registries on one data
/// directory would corrupt each other's view of it.
pub struct RootLock {
    _file: File,
}

pub fn lock_root(root: &Path) -> Result<RootLock, String> {
    let path = root.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(format!(
            "another ringyard is already using the data directory {} (its lock {} is held)",
            root.display(),
            path.display()
        ));
    }
    Ok(RootLock { _file: file })
}

pub fn run(cfg: Config) -> Result<(), String> {
    fs::create_dir_all(&cfg.root)
        .map_err(|e| format!("cannot create data directory {}: {e}", cfg.root.display()))?;
    let root = cfg
        .root
        .canonicalize()
        .map_err(|e| format!("data directory {}: {e}", cfg.root.display()))?;
    let _lock = lock_root(&root)?;
    // Installed before anything is announced, so a SIGTERM right after the listening line
    // is always a graceful stop.
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    // Bind before opening the stores: a port conflict is the most common start failure and
    // should be reported without touching the data.
    let bound = listen::bind(&cfg.listen, cfg.workers, "--listen")?;
    let ops_bound = match &cfg.metrics_listen {
        Some(addr) => Some(listen::bind(addr, cfg.workers, "--metrics-listen")?),
        None => None,
    };

    let pool = Pool::new(4, "ringyard-fs").map_err(|e| format!("cannot start threads: {e}"))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hashing =
        Pool::new(cores, "ringyard-hash").map_err(|e| format!("cannot start threads: {e}"))?;
    let meta = Meta::open_sqlite(&root.join("meta.db"))?;
    let blobs = BlobStore::open(&root, pool.clone())
        .map_err(|e| format!("cannot prepare {}: {e}", root.display()))?;
    let uploads = Uploads::new(blobs.staging_dir().to_path_buf(), cfg.upload_expiry);
    for id in uploads.restore(meta.uploads()) {
        block_on(meta.delete_upload(&id)).map_err(|e| format!("cleaning upload {id}: {e}"))?;
    }
    let connections = Arc::new(Connections::new(bound.per_worker.len()));
    let readiness = Readiness::new(
        root.clone(),
        !cfg.read_only,
        meta.clone(),
        Timeouts::default(),
    )
    .map_err(|e| format!("cannot start threads: {e}"))?;
    let registry = Arc::new(Registry {
        ops: Ops::new(
            cfg.metrics_enabled,
            cfg.access_log,
            connections.clone(),
            readiness,
        ),
        meta: meta.clone(),
        blobs,
        uploads,
        pool,
        hashing,
        limits: Limits {
            max_manifest_bytes: cfg.max_manifest_bytes,
            delete_enabled: cfg.delete_enabled,
            read_only: cfg.read_only,
            body_timeout: cfg.body_timeout,
            ..Limits::default()
        },
    });
    let settings = ConnSettings {
        max_head: cfg.max_header_bytes,
        idle_timeout: cfg.idle_timeout,
        head_timeout: cfg.head_timeout,
        body_timeout: cfg.body_timeout,
        min_body_rate: cfg.min_body_rate as u64,
    };

    let (ready_tx, ready_rx) = mpsc::channel();
    let mut stops = Vec::new();
    let mut handles = Vec::new();
    let sweep_every =
        (cfg.upload_expiry / 4).clamp(Duration::from_millis(500), Duration::from_secs(60));
    let (ops_addrs, mut ops_per_worker) = match ops_bound {
        Some(b) => (b.addrs, b.per_worker),
        None => (Vec::new(), Vec::new()),
    };
    ops_per_worker.resize_with(bound.per_worker.len(), Vec::new);
    let (balancer, inboxes) = balance::Balancer::new(connections);
    let per_worker = bound
        .per_worker
        .into_iter()
        .zip(ops_per_worker)
        .zip(inboxes);
    for (index, ((listeners, ops_listeners), inbox)) in per_worker.enumerate() {
        let (stop_tx, stop_rx) = futures_channel::oneshot::channel();
        stops.push(stop_tx);
        let setup = worker::WorkerSetup {
            index,
            listeners,
            ops_listeners,
            registry: registry.clone(),
            settings,
            shutdown: stop_rx,
            grace: cfg.shutdown_grace,
            sweep_uploads: (index == 0).then_some(sweep_every),
            max_connections: cfg.max_connections.max(1),
            balancer: balancer.clone(),
            inbox,
        };
        handles.push(
            worker::spawn(setup, ready_tx.clone())
                .map_err(|e| format!("cannot start a worker: {e}"))?,
        );
    }
    drop(ready_tx);
    let mut driver = "";
    for _ in 0..handles.len() {
        match ready_rx.recv() {
            Ok(Ok(d)) => driver = d,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a worker failed to start".into()),
        }
    }
    if driver == "epoll" {
        crate::log::info(format_args!(
            "io_uring is unavailable here; using the epoll driver"
        ));
    }
    if !ops_addrs.is_empty() {
        // Its own line, before the one that names the registry's addresses (which scripts and
        // tests read for the first address).
        let addrs: Vec<String> = ops_addrs.iter().map(|a| a.to_string()).collect();
        crate::log::info(format_args!(
            "metrics and probes also on {}",
            addrs.join(", ")
        ));
    }
    let addrs: Vec<String> = bound.addrs.iter().map(|a| a.to_string()).collect();
    crate::log::info(format_args!(
        "listening on {}; data in {}; {} workers ({driver})",
        addrs.join(", "),
        root.display(),
        handles.len()
    ));

    let _ = signals.forever().next();
    crate::log::info(format_args!(
        "shutting down: no new connections; finishing requests in flight"
    ));
    for s in stops {
        let _ = s.send(());
    }
    for h in handles {
        let _ = h.join();
    }
    drop(registry);
    meta.close();
    crate::log::flush();
    crate::log::info(format_args!("stopped"));
    Ok(())
}
