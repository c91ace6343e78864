//! Liveness and readiness.
//!
//! `/healthz` answers 200 while the event loops serve: it does no IO at all. `/readyz` answers
//! 200 only when the registry can do its work right now:
//!
//! - the data directory is writable: a probe file is created, written, fsynced and removed
//!   under the data root;
//! - there is space left: the free space available to unprivileged writers (`statvfs`) is at
//!   least 1% of the filesystem, bounded to between 64 MiB and 1 GiB (so a small volume must
//!   keep 64 MiB, and a large one need not keep more than 1 GiB free); and some inodes;
//! - the metadata store answers: a round trip through the metadata engine thread, queued
//!   behind the writes already waiting (a stuck engine times out).
//!
//! In read-only mode nothing is written, so only the metadata round trip and that the data
//! directory can be examined count.
//!
//! A request that finds the storage full (a write refused with ENOSPC, EDQUOT or SQLite's
//! `SQLITE_FULL`) marks the registry not ready at once, [`Readiness::storage_full`], replacing
//! the cached result: the next probe already answers 503 with that reason, and readiness
//! returns when a fresh check, once the mark has aged like any result, sees enough space.
//!
//! The filesystem work runs on a dedicated one-thread pool (never on an event loop, and never
//! behind long jobs of the main pool), bounded by a timeout. A result is reused for
//! [`Timeouts::cache_for`] and at most one check runs at a time, so probes cannot hammer the
//! disk however often they come.

use crate::blocking::Pool;
use crate::http::response::Response;
use crate::meta::Meta;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Free space below which the registry is not ready: 1% of the filesystem, at least 64 MiB,
/// at most 1 GiB.
pub fn min_free_bytes(filesystem_bytes: u64) -> u64 {
    (filesystem_bytes / 100).clamp(64 << 20, 1 << 30)
}

/// Name of the probe file, directly under the data root.
pub const PROBE_FILE: &str = ".readyz-probe";

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long a result is reused.
    pub cache_for: Duration,
    /// Longest wait for the filesystem checks.
    pub storage: Duration,
    /// Longest wait for the metadata round trip.
    pub metadata: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            cache_for: Duration::from_secs(1),
            storage: Duration::from_secs(2),
            metadata: Duration::from_secs(2),
        }
    }
}

type Status = Result<(), String>;

#[derive(Default)]
struct Cache {
    last: Option<(Instant, Status)>,
    checking: bool,
}

pub struct Readiness {
    root: PathBuf,
    /// False in read-only mode: nothing is written, so writability is not required.
    writes: bool,
    meta: Meta,
    pool: Pool,
    timeouts: Timeouts,
    cache: Mutex<Cache>,
    /// Set while a filesystem check runs on the pool, even past its timeout: a hung disk gets
    /// one stuck check, not one more per probe.
    storage_busy: Arc<AtomicBool>,
}

/// Clears `checking` however the check ends (its future may be dropped at shutdown).
struct Checking<'a>(&'a Mutex<Cache>);

impl Drop for Checking<'_> {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .checking = false;
    }
}

impl Readiness {
    pub fn new(root: PathBuf, writes: bool, meta: Meta, timeouts: Timeouts) -> io::Result<Self> {
        Ok(Readiness {
            root,
            writes,
            meta,
            pool: Pool::new(1, "ringyard-health")?,
            timeouts,
            cache: Mutex::new(Cache::default()),
            storage_busy: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Ready, or the reason why not: the cached result if fresh (or if another check is
    /// running), else a new check.
    pub async fn status(&self) -> Status {
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            match &cache.last {
                Some((at, status)) if cache.checking || at.elapsed() < self.timeouts.cache_for => {
                    return status.clone();
                }
                None if cache.checking => return Err("the first readiness check is running".into()),
                _ => cache.checking = true,
            }
        }
        let checking = Checking(&self.cache);
        let began = Instant::now();
        let status = self.check().await;
        let previous = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            match &cache.last {
                // A request found the storage full while this check ran: that is newer.
                Some((at, marked)) if *at > began => return marked.clone(),
                _ => cache.last.replace((Instant::now(), status.clone())),
            }
        };
        drop(checking);
        match (&status, previous.map(|(_, s)| s)) {
            (Err(reason), None | Some(Ok(()))) => crate::log::warn(format_args!(
                "not ready: {reason} (data directory {})",
                self.root.display()
            )),
            (Ok(()), Some(Err(_))) => crate::log::info(format_args!("ready again")),
            (Err(reason), Some(Err(before)))
                if *reason != before
                    && !(is_storage_reason(reason) && is_storage_reason(&before)) =>
            {
                crate::log::warn(format_args!("still not ready: {reason}"))
            }
            _ => {}
        }
        status
    }

    /// A request was refused because the storage is full (`reason` is its message): not ready
    /// from now on, without waiting for the cached result to age. Logged when readiness turns
    /// to a storage problem, not for every refused request.
    pub fn storage_full(&self, reason: &str) {
        let previous = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache
                .last
                .replace((Instant::now(), Err(reason.to_string())))
        };
        let known = matches!(&previous, Some((_, Err(r))) if is_storage_reason(r));
        if !known {
            crate::log::warn(format_args!(
                "not ready: {reason} (data directory {})",
                self.root.display()
            ));
        }
    }

    async fn check(&self) -> Status {
        self.storage().await?;
        match monoio::time::timeout(self.timeouts.metadata, self.meta.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the metadata store does not answer".into()),
            Err(_) => Err(format!(
                "the metadata store did not answer within {} ms",
                self.timeouts.metadata.as_millis()
            )),
        }
    }

    async fn storage(&self) -> Status {
        if self.storage_busy.swap(true, Ordering::AcqRel) {
            return Err("the previous storage check has not finished (is the disk hung?)".into());
        }
        let (root, writes, busy) = (self.root.clone(), self.writes, self.storage_busy.clone());
        let job = self.pool.run(move || {
            let status = storage_check(&root, writes);
            busy.store(false, Ordering::Release);
            status
        });
        match monoio::time::timeout(self.timeouts.storage, job).await {
            Ok(Ok(status)) => status,
            Ok(Err(_)) => {
                self.storage_busy.store(false, Ordering::Release);
                Err("the storage check could not run".into())
            }
            Err(_) => Err(format!(
                "the storage check did not finish within {} ms",
                self.timeouts.storage.as_millis()
            )),
        }
    }
}

/// Whether a not-ready reason is about space: a storage-full mark or a check below the
/// free-space threshold (the texts below and [`crate::api::error::Error::storage_full`]'s).
fn is_storage_reason(reason: &str) -> bool {
    reason.starts_with("storage is full") || reason.starts_with("disk almost full")
}

/// The filesystem part of readiness; blocking. Reasons name no paths (they reach clients).
pub fn storage_check(root: &Path, writes: bool) -> Status {
    let fs = statvfs(root).map_err(|e| format!("cannot examine the data directory: {e}"))?;
    if !writes {
        return Ok(());
    }
    if fs.read_only {
        return Err("the data directory is on a read-only filesystem".into());
    }
    let need = min_free_bytes(fs.total_bytes);
    if fs.free_bytes < need {
        return Err(format!(
            "disk almost full: {} MiB free of {} MiB, {} MiB needed",
            fs.free_bytes >> 20,
            fs.total_bytes >> 20,
            need >> 20
        ));
    }
    if fs.total_inodes > 0 && fs.free_inodes == 0 {
        return Err("no free inodes on the data directory's filesystem".into());
    }
    write_probe(&root.join(PROBE_FILE))
        .map_err(|e| format!("the data directory is not writable: {e}"))
}

fn write_probe(path: &Path) -> io::Result<()> {
    let written = fs::File::create(path).and_then(|mut f| {
        f.write_all(b"ringyard readiness probe\n")?;
        f.sync_all()
    });
    let removed = fs::remove_file(path);
    written?;
    removed
}

struct FsStats {
    total_bytes: u64,
    free_bytes: u64,
    total_inodes: u64,
    free_inodes: u64,
    read_only: bool,
}

// The field types of `statvfs` differ between platforms (32-bit ones have narrower ones).
#[allow(clippy::unnecessary_cast)]
fn statvfs(path: &Path) -> io::Result<FsStats> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid C string and `st` is writable memory of the right type.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize as u64;
    Ok(FsStats {
        total_bytes: (st.f_blocks as u64).saturating_mul(frsize),
        free_bytes: (st.f_bavail as u64).saturating_mul(frsize),
        total_inodes: st.f_files as u64,
        free_inodes: st.f_favail as u64,
        read_only: st.f_flag & libc::ST_RDONLY != 0,
    })
}

/// `{"status":...}` first, whatever the JSON library's key order.
fn body(status: u16, text: String) -> Response {
    Response::new(status)
        .with_body("application/json", text.into_bytes())
        .header("Cache-Control", "no-store")
}

/// `/healthz`: the process serves.
pub fn healthz() -> Response {
    body(200, r#"{"status":"ok"}"#.to_string())
}

/// `/readyz` for a readiness result.
pub fn readyz(status: Status) -> Response {
    match status {
        Ok(()) => healthz(),
        Err(reason) => {
            let reason = serde_json::Value::String(reason);
            body(
                503,
                format!(r#"{{"status":"unavailable","reason":{reason}}}"#),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::indexed::{Database, Indexed, OpResult};
    use crate::meta::{Index, Result, WriteOp, WriteOutcome};

    #[test]
    fn free_space_threshold() {
        assert_eq!(min_free_bytes(0), 64 << 20);
        assert_eq!(min_free_bytes(1 << 30), 64 << 20);
        assert_eq!(min_free_bytes(50 << 30), (50 << 30) / 100);
        assert_eq!(min_free_bytes(10 << 40), 1 << 30);
    }

    #[test]
    fn storage_check_on_a_healthy_directory() {
        let dir = tempfile::tempdir().unwrap();
        // Unless this machine's temp filesystem is itself almost full.
        let fs = statvfs(dir.path()).unwrap();
        if fs.free_bytes < min_free_bytes(fs.total_bytes) {
            eprintln!("skipped: the temp filesystem is almost full");
            return;
        }
        storage_check(dir.path(), true).unwrap();
        assert!(!dir.path().join(PROBE_FILE).exists());
        storage_check(dir.path(), false).unwrap();
        let err = storage_check(&dir.path().join("missing"), true).unwrap_err();
        assert!(err.contains("cannot examine"), "{err}");
    }

    /// An engine whose writes block until released: a stuck metadata store.
    struct Stuck(crossbeam_channel::Receiver<()>);

    impl Database for Stuck {
        fn load(&mut self) -> Result<Index> {
            Ok(Index::default())
        }
        fn apply_batch(&mut self, ops: &[WriteOp], _: i64) -> Result<Vec<OpResult>> {
            let _ = self.0.recv();
            Ok(ops.iter().map(|_| Ok(WriteOutcome::default())).collect())
        }
        fn blob_references(&mut self) -> Result<Vec<crate::meta::graph::RefRow>> {
            Ok(Vec::new())
        }
    }

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    #[test]
    fn a_stuck_or_stopped_metadata_engine_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let (release, stuck) = crossbeam_channel::unbounded();
        let meta = Meta::new(std::sync::Arc::new(
            Indexed::start(Box::new(Stuck(stuck))).unwrap(),
        ));
        let timeouts = Timeouts {
            cache_for: Duration::from_millis(100),
            storage: Duration::from_secs(5),
            metadata: Duration::from_millis(200),
        };
        // Read-only, so that the answer does not depend on the temp filesystem's free space.
        let ready =
            Readiness::new(dir.path().to_path_buf(), false, meta.clone(), timeouts).unwrap();
        runtime().block_on(async {
            assert_eq!(ready.status().await, Ok(()));
            // A write that never commits: the ping behind it gets no answer.
            let writer = {
                let meta = meta.clone();
                std::thread::spawn(move || {
                    crate::blocking::block_on(meta.link_blob(
                        "r",
                        &crate::oci::digest::Digest::sha256_of(b"x"),
                        1,
                    ))
                })
            };
            // Cached for a moment.
            assert_eq!(ready.status().await, Ok(()));
            monoio::time::sleep(Duration::from_millis(150)).await;
            let err = ready.status().await.unwrap_err();
            assert!(err.contains("did not answer within 200 ms"), "{err}");
            release.send(()).unwrap();
            writer.join().unwrap().unwrap();
            monoio::time::sleep(Duration::from_millis(150)).await;
            // The ping left from the timed-out check may still be answered first; either way
            // the engine answers again.
            let mut status = ready.status().await;
            for _ in 0..20 {
                if status.is_ok() {
                    break;
                }
                monoio::time::sleep(Duration::from_millis(120)).await;
                status = ready.status().await;
            }
            assert_eq!(status, Ok(()));
            meta.close();
            monoio::time::sleep(Duration::from_millis(150)).await;
            let err = ready.status().await.unwrap_err();
            assert!(err.contains("does not answer"), "{err}");
        });
    }

    #[test]
    fn storage_full_is_not_ready_at_once_until_a_fresh_check() {
        let dir = tempfile::tempdir().unwrap();
        let (_release, stuck) = crossbeam_channel::unbounded();
        // Nothing is written here: the engine only answers pings.
        let meta = Meta::new(std::sync::Arc::new(
            Indexed::start(Box::new(Stuck(stuck))).unwrap(),
        ));
        let timeouts = Timeouts {
            cache_for: Duration::from_millis(100),
            ..Timeouts::default()
        };
        // Read-only, so that fresh checks do not depend on the temp filesystem's free space.
        let ready = Readiness::new(dir.path().to_path_buf(), false, meta, timeouts).unwrap();
        runtime().block_on(async {
            assert_eq!(ready.status().await, Ok(()));
            ready.storage_full("storage is full: writing upload data: no space left on device");
            let err = ready.status().await.unwrap_err();
            assert!(
                err.starts_with("storage is full: writing upload data"),
                "{err}"
            );
            monoio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(ready.status().await, Ok(()));
        });
    }

    #[test]
    fn responses() {
        let r = readyz(Err("disk \"almost\" full".into()));
        assert_eq!(r.status, 503);
        match &r.body {
            crate::http::response::Body::Bytes(b) => assert_eq!(
                std::str::from_utf8(b).unwrap(),
                r#"{"status":"unavailable","reason":"disk \"almost\" full"}"#
            ),
            _ => panic!("no body"),
        }
        let r = healthz();
        assert_eq!(r.status, 200);
        assert!(r
            .headers
            .iter()
            .any(|(n, v)| *n == "Cache-Control" && v == "no-store"));
    }
}
