//! Process lifecycle: lock the data directory, open the stores, bind the listeners, start one
//! event loop per worker and the background jobs, and on SIGTERM or SIGINT stop accepting, let
//! requests in flight finish (bounded), and exit cleanly.

pub mod admin;
pub(crate) mod balance;
pub(crate) mod connection;
pub(crate) mod cpu_yield;
pub(crate) mod created;
pub(crate) mod listen;
pub(crate) mod nofile;
#[cfg(test)]
mod tests;
pub(crate) mod tls_reload;
pub(crate) mod worker;

use crate::api::{Limits, Registry};
use crate::blocking::{block_on, Pool};
use crate::config::Config;
use crate::http::tls_config::{self, TlsConfig, TlsFiles};
use crate::jobs::upload_expiry::UploadExpiry;
use crate::jobs::{Board, Jobs};
use crate::meta::Meta;
use crate::observe::connections::Connections;
use crate::observe::health::{Readiness, Timeouts};
use crate::observe::Ops;
use crate::store::blobs::BlobStore;
use crate::store::open_cache;
use crate::store::s3::{S3Backend, S3Config};
use crate::store::uploads::Uploads;
use connection::ConnSettings;
use created::Created;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{mpsc, Arc};

/// Holds `<root>/LOCK` with flock for the life of the process: two registries on one data
/// directory would corrupt each other's view of it.
pub struct RootLock {
    _file: File,
}

/// Takes the data directory's lock and gives it to `created` (which also learns whether this
/// start made the file). Read-write: an exclusive lock, creating the file if needed.
/// Read-only: a shared lock on the existing file, opened read-only, so read-only servers may
/// share a directory but not with a server that writes (their index, loaded at start, would go
/// stale under it); without a LOCK file (nothing may be created) no lock is taken.
pub fn lock_root(root: &Path, read_only: bool, created: &mut Created) -> Result<(), String> {
    let path = root.join("LOCK");
    let cannot = |e: std::io::Error| {
        format!(
            "cannot open lock file {}: {e}{}",
            path.display(),
            read_only_hint(&e)
        )
    };
    let file = if read_only {
        match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(cannot(e)),
        }
    } else {
        match File::options().write(true).create_new(true).open(&path) {
            Ok(f) => {
                created.file(path.clone());
                f
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                File::options().write(true).open(&path).map_err(cannot)?
            }
            Err(e) => return Err(cannot(e)),
        }
    };
    let how = if read_only {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    };
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) };
    if rc != 0 {
        let holder = if read_only {
            "a ringyard that writes"
        } else {
            "another ringyard"
        };
        return Err(format!(
            "{holder} is already using the data directory {} (its lock {} is held)",
            root.display(),
            path.display()
        ));
    }
    // A failed start removes the LOCK it made (while still holding it); one that opened the
    // file just before that removal holds a lock nobody else can see, and must not go on.
    let same = |a: &fs::Metadata, b: &fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    let held = file.metadata().map_err(cannot)?;
    match fs::metadata(&path) {
        Ok(now) if same(&held, &now) => {}
        _ => {
            return Err(format!(
                "the lock file {} was replaced while this start took it; start again",
                path.display()
            ))
        }
    }
    created.hold(RootLock { _file: file });
    Ok(())
}

/// What to do about a write refused by a read-only filesystem.
fn read_only_hint(e: &std::io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::EROFS) {
        "; to serve a data directory on a read-only filesystem, start with --read-only"
    } else {
        ""
    }
}

/// The TLS files the configuration names, if it turns TLS on (the settings come in pairs,
/// checked with the configuration).
fn tls_files(cfg: &Config) -> Option<TlsFiles> {
    Some(TlsFiles {
        certificate: cfg.tls_certificate.clone()?,
        key: cfg.tls_key.clone()?,
        client_ca: cfg.tls_client_ca.clone(),
    })
}

/// `HOST:PORT` of the default token realm: the configured host (a name stays a name, an IPv6
/// address keeps its brackets) with the port actually bound.
fn realm_host(listen: &str, port: u16) -> String {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    format!("{host}:{port}")
}

/// The scan store beside the metadata (`<root>/scan.db`, or the metadata's PostgreSQL) and
/// what the configuration says scanning does. In read-only mode a missing scan database is
/// no scanning (nothing may be created there).
fn open_scanning(
    cfg: &Config,
    root: &Path,
) -> Result<Option<Arc<crate::scan::service::Scanning>>, String> {
    use crate::scan::{service::Scanning, vulndb};
    if cfg.read_only && cfg.database().is_none() && !vulndb::store_path(root).exists() {
        return Ok(None);
    }
    let store = vulndb::open_store(cfg.database(), root).map_err(|e| {
        format!(
            "opening the scan database: {}",
            crate::config::redact_url(&e)
        )
    })?;
    let scanning =
        Arc::new(Scanning::new(store, cfg.database().is_some(), cfg).map_err(|e| e.join("; "))?);
    if !cfg.read_only {
        scanning.start_heartbeat();
    }
    Ok(Some(scanning))
}

/// The metadata engine the configuration names: PostgreSQL at `database.url`, else SQLite in
/// `root` (read-only mode opens it without writing). Blocks: start-up only.
fn open_meta(cfg: &Config, root: &Path, created: &mut Created) -> Result<Meta, String> {
    if let Some(url) = cfg.database() {
        let redis = (cfg.cache_type == "redis").then(|| cfg.redis_url.expose());
        let meta = open_postgres(url, cfg.database_connections, redis)?;
        crate::log::info(format_args!(
            "metadata in PostgreSQL at {}, {} connections{}",
            crate::config::redact_url(url),
            cfg.database_connections,
            match redis {
                Some(r) => format!(
                    ", reads cached in Redis at {}",
                    crate::config::redact_url(r)
                ),
                None => String::new(),
            }
        ));
        return Ok(meta);
    }
    let meta_path = root.join("meta.db");
    if cfg.read_only {
        return Meta::open_sqlite_read_only(&meta_path);
    }
    if !meta_path.exists() {
        for suffix in ["", "-wal", "-shm"] {
            created.file(root.join(format!("meta.db{suffix}")));
        }
    }
    Meta::open_sqlite(&meta_path)
}

/// [`Meta::open_postgres`], its error naming the database without its password (for the
/// server and the `token` command alike). Blocks.
pub fn open_postgres(url: &str, connections: usize, redis: Option<&str>) -> Result<Meta, String> {
    use crate::config::redact_url;
    let opened = match redis {
        Some(r) => Meta::open_postgres_with_redis(url, connections, r),
        None => Meta::open_postgres(url, connections),
    };
    opened.map_err(|e| {
        let cache = redis
            .map(|r| format!(", storage.cache.redis_url {}", redact_url(r)))
            .unwrap_or_default();
        format!(
            "{} (database.url {}{cache})",
            redact_url(&e),
            redact_url(url)
        )
    })
}

/// The S3 backend of `storage.s3.*`, with its credentials found ([`crate::config::aws`]) and
/// the bucket reached once, so that a wrong endpoint, key or bucket stops the start here with
/// one line rather than failing the first push. Blocks: start-up only.
fn open_s3(cfg: &Config) -> Result<S3Backend, String> {
    let credentials = crate::config::aws::from_system(cfg)?;
    let endpoint = match cfg.s3_endpoint.as_str() {
        "" => format!("https://s3.{}.amazonaws.com", cfg.s3_region),
        e => e.to_string(),
    };
    let s3 = S3Config {
        bucket: cfg.s3_bucket.clone(),
        region: cfg.s3_region.clone(),
        endpoint: endpoint.clone(),
        path_style: cfg.s3_path_style,
        prefix: cfg.s3_prefix.clone(),
        access_key: credentials.access_key.clone(),
        secret_key: credentials.secret_key.expose().to_string(),
        session_token: credentials
            .session_token
            .as_ref()
            .map(|t| t.expose().to_string()),
        timeouts: Default::default(),
        retry: Default::default(),
        ca_file: cfg.s3_ca_file.clone(),
        public_endpoint: (!cfg.s3_public_endpoint.is_empty())
            .then(|| cfg.s3_public_endpoint.clone()),
    };
    let backend = S3Backend::new(&s3)?;
    backend.check_now()?;
    crate::log::info(format_args!(
        "blobs in S3 bucket {} at {endpoint} under {:?} (credentials from {})",
        cfg.s3_bucket, cfg.s3_prefix, credentials.source
    ));
    Ok(backend)
}

/// What `ringyard gc` collects over, opened as `serve` would open it: the metadata engine and
/// the blob store, and (held while they are used) the data directory's lock. With SQLite the
/// data directory must be free (a running registry holds it); with PostgreSQL and S3 nodes
/// may run (the metadata's lock makes one collector at a time), and the local cache is a
/// private directory that the command removes.
pub struct Collectable {
    pub meta: Meta,
    pub blobs: BlobStore,
    _lock: Created,
    _cache: Option<crate::testing::TempDir>,
}

pub fn open_collectable(cfg: &Config) -> Result<Collectable, String> {
    let mut created = Created::default();
    created
        .dir_all(&cfg.root)
        .map_err(|e| format!("cannot create data directory {}: {e}", cfg.root.display()))?;
    let root = cfg
        .root
        .canonicalize()
        .map_err(|e| format!("data directory {}: {e}", cfg.root.display()))?;
    let pool = Pool::new(4, "ringyard-fs").map_err(|e| format!("cannot start threads: {e}"))?;
    if cfg.s3() && cfg.database().is_some() {
        let backend = open_s3(cfg)?;
        let meta = open_meta(cfg, &root, &mut created)?;
        let cache = crate::testing::TempDir::new("ringyard-gc-cache")
            .map_err(|e| format!("cannot create a cache directory: {e}"))?;
        let blobs = BlobStore::with_remote(cache.path(), pool, Arc::new(backend), 0)
            .map_err(|e| format!("cannot open a cache: {e}"))?;
        return Ok(Collectable {
            meta,
            blobs,
            _lock: created,
            _cache: Some(cache),
        });
    }
    lock_root(&root, false, &mut created).map_err(|e| {
        format!(
            "{e}: a running registry collects on its own schedule (gc.interval); stop it to \
             run `ringyard gc` on its data directory"
        )
    })?;
    let s3 = if cfg.s3() { Some(open_s3(cfg)?) } else { None };
    let meta = open_meta(cfg, &root, &mut created)?;
    let blobs = match s3 {
        Some(backend) => {
            let tier = cfg.cache_dir(&root);
            BlobStore::with_remote(&tier, pool, Arc::new(backend), cfg.cache_max_bytes())
                .map_err(|e| format!("cannot open the cache {}: {e}", tier.display()))?
        }
        None => {
            BlobStore::open(&root, pool).map_err(|e| format!("cannot open the blob store: {e}"))?
        }
    };
    Ok(Collectable {
        meta,
        blobs,
        _lock: created,
        _cache: None,
    })
}

pub fn run(cfg: Config) -> Result<(), String> {
    // First: a broken htpasswd file or rule stops the start, naming its line, before anything
    // is created on disk.
    let mut auth = crate::auth::Auth::start(&cfg)?;
    let nofile = nofile::raise_to_hard();
    // First: a certificate that cannot be served is a configuration mistake, reported before
    // anything is created or bound.
    let tls = tls_files(&cfg)
        .map(|files| tls_config::load(&files).map(|c| (files, Arc::new(TlsConfig::new(c)))))
        .transpose()?;
    // Undoes what this start creates on disk if it fails (and holds the lock meanwhile).
    let mut created = Created::default();
    if !cfg.read_only {
        created.dir_all(&cfg.root).map_err(|e| {
            let (root, hint) = (cfg.root.display(), read_only_hint(&e));
            format!("cannot create data directory {root}: {e}{hint}")
        })?;
    }
    let root = cfg.root.canonicalize().map_err(|e| {
        let hint = if cfg.read_only {
            " (--read-only serves a data directory that a read-write run has written)"
        } else {
            ""
        };
        format!("data directory {}: {e}{hint}", cfg.root.display())
    })?;
    lock_root(&root, cfg.read_only, &mut created)?;
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
    // The token service's key lives in the data directory, and its default realm names the
    // port just bound (port 0 resolved).
    if let Some(auth) = auth.as_mut() {
        let port = bound.addrs.first().map_or(0, |a| a.port());
        auth.start_tokens(&cfg, &root, &realm_host(&cfg.listen, port), tls.is_some())?;
    }

    let pool = Pool::new(4, "ringyard-fs").map_err(|e| format!("cannot start threads: {e}"))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hashing =
        Pool::new(cores, "ringyard-hash").map_err(|e| format!("cannot start threads: {e}"))?;
    let cache = open_cache::size(nofile.now, bound.per_worker.len());
    crate::log::info(format_args!(
        "{nofile}; up to {cache} open blob files cached per worker"
    ));
    // S3 first: its check is quick and its failures the likelier ones on a first try.
    let s3 = if cfg.s3() { Some(open_s3(&cfg)?) } else { None };
    let meta = open_meta(&cfg, &root, &mut created)?;
    if let Some(auth) = auth.as_mut() {
        auth.use_robot_tokens(meta.clone());
    }
    // With S3 the local tree is the cache of hot blobs (and holds upload sessions).
    let tier = if cfg.s3() {
        cfg.cache_dir(&root)
    } else {
        root.clone()
    };
    if !cfg.read_only {
        for dir in BlobStore::top_dirs(&tier) {
            created
                .dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    let blobs = if let Some(backend) = s3 {
        crate::log::info(format_args!(
            "local cache of hot blobs in {}, up to {} GB",
            tier.display(),
            cfg.cache_disk_size_gb
        ));
        BlobStore::with_remote(
            &tier,
            pool.clone(),
            Arc::new(backend),
            cfg.cache_max_bytes(),
        )
        .map_err(|e| format!("cannot open the cache {}: {e}", tier.display()))?
    } else {
        BlobStore::at(&root, pool.clone())
    };
    let uploads = Uploads::new(blobs.staging_dir().to_path_buf(), cfg.upload_expiry)
        .with_staging(blobs.upload_staging());
    let records = block_on(meta.uploads()).map_err(|e| format!("reading upload sessions: {e}"))?;
    let dead_rows = uploads.restore(records);
    // Crash leftovers stay in read-only mode: nothing may be deleted there.
    if !cfg.read_only {
        uploads.remove_strays();
        for id in dead_rows {
            // Not the id in the message: it is the secret of the upload's URL.
            block_on(meta.delete_upload(&id))
                .map_err(|e| format!("cleaning an upload session without data: {e}"))?;
        }
    }
    let connections = Arc::new(Connections::new(bound.per_worker.len()));
    let readiness = Readiness::new(
        root.clone(),
        !cfg.read_only,
        meta.clone(),
        Timeouts::default(),
    )
    .map_err(|e| format!("cannot start threads: {e}"))?;
    let immutable =
        crate::lifecycle::ImmutableTags::new(&cfg.immutable_tags).map_err(|e| e.join("; "))?;
    let retention =
        crate::lifecycle::retention::Retention::new(&cfg.retention).map_err(|e| e.join("; "))?;
    let quotas = crate::lifecycle::quota::Quotas::new(&cfg.quotas).map_err(|e| e.join("; "))?;
    let scanning = open_scanning(&cfg, &root)?;
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
            redirect: cfg.redirect,
            read_only: cfg.read_only,
            body_timeout: cfg.body_timeout,
            ..Limits::default()
        },
        jobs: Board::default(),
        auth,
        immutable,
        gc: Default::default(),
        retention,
        quotas,
        scanning: scanning.clone(),
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
            max_connections: cfg.max_connections.max(1),
            balancer: balancer.clone(),
            inbox,
            tls: tls.as_ref().map(|(_, c)| c.clone()),
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
    // Off the event loops: a job may block on the filesystem or the metadata engine.
    // Expiring sessions deletes them: never in read-only mode.
    let mut background: Vec<Box<dyn crate::jobs::Job>> = Vec::new();
    if !cfg.read_only {
        background.push(Box::new(UploadExpiry::new(
            registry.clone(),
            cfg.upload_expiry,
        )));
    }
    let gc_opts = crate::lifecycle::gc::Options {
        grace: cfg.gc_grace,
        delete_untagged: cfg.gc_delete_untagged,
        dry_run: false,
        verbose: false,
    };
    if !cfg.read_only && !cfg.gc_interval.is_zero() {
        // Checked when the configuration was read.
        let window = crate::config::value::Window::parse(&cfg.gc_window).ok();
        background.push(Box::new(crate::jobs::gc::Collection::new(
            registry.clone(),
            cfg.gc_interval,
            window,
            gc_opts,
        )));
    }
    if let (Some(scanning), false) = (&scanning, cfg.read_only) {
        background.push(Box::new(crate::jobs::scan::Scans::new(
            registry.clone(),
            scanning.clone(),
            cfg.scan_poll,
        )));
        if !scanning.webhooks.is_empty() {
            background.push(Box::new(crate::jobs::scan::Webhooks::new(scanning.clone())));
        }
    }
    let jobs = Jobs::start(&registry.jobs, background)
        .map_err(|e| format!("cannot start threads: {e}"))?;
    if !cfg.read_only {
        // A collection killed halfway left blobs marked; writers claiming them would wait
        // for the next pass. Off the start's path: it reads and deletes.
        let reg = registry.clone();
        let _ = std::thread::Builder::new()
            .name("ringyard-gc-finish".into())
            .spawn(
                move || match crate::lifecycle::gc::finish_unfinished(&reg.meta, &reg.blobs) {
                    Ok(r) if r.blobs > 0 => crate::log::info(format_args!(
                        "garbage collection interrupted earlier: finished removing {} blobs ({})",
                        r.blobs,
                        crate::lifecycle::gc::human_bytes(r.bytes)
                    )),
                    Ok(_) => {}
                    Err(e) => crate::log::warn(format_args!(
                        "finishing an interrupted garbage collection: {e}"
                    )),
                },
            );
    }
    // `ringyard gc` on this data directory asks here (never in read-only mode: it deletes).
    // Without it (a path too long for a Unix socket) the registry serves all the same, and
    // the command says it cannot reach it.
    let admin = match cfg.read_only {
        true => None,
        false => match admin::start(&root, registry.clone(), gc_opts) {
            Ok(a) => Some(a),
            Err(e) => {
                let path = root.join(admin::SOCKET);
                crate::log::warn(format_args!(
                    "no administration socket at {}: {e}; `ringyard gc` cannot reach \
                         this registry",
                    path.display()
                ));
                None
            }
        },
    };
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
    let _reloader = match &tls {
        Some((files, config)) => Some(
            tls_reload::Reloader::start(files.clone(), config.clone())
                .map_err(|e| format!("cannot start threads: {e}"))?,
        ),
        None => None,
    };
    let _lock = created.keep();
    let addrs: Vec<String> = bound.addrs.iter().map(|a| a.to_string()).collect();
    let scheme = match &tls {
        Some((files, _)) => {
            let clients = match &files.client_ca {
                Some(ca) => format!(", client certificates from {}", ca.display()),
                None => String::new(),
            };
            format!(
                " with TLS (certificate {}{clients})",
                files.certificate.display()
            )
        }
        None => String::new(),
    };
    crate::log::info(format_args!(
        "listening on {}{scheme}; data in {}; {} workers ({driver})",
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
    // While the workers finish their requests; before the metadata store closes.
    if let Some(admin) = admin {
        admin.stop();
    }
    jobs.stop(cfg.shutdown_grace);
    for h in handles {
        let _ = h.join();
    }
    drop(registry);
    meta.close();
    crate::log::flush();
    crate::log::info(format_args!("stopped"));
    Ok(())
}
