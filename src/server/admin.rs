//! The administration socket, `<root>/admin.sock`: how `ringyard gc` asks a running registry
//! to collect garbage and follows its progress. A running registry holds its data directory
//! (the LOCK, the SQLite database and its in-memory index), so a command on the same data must
//! go through it rather than open the files itself.
//!
//! A Unix socket in the data directory, created owner-only (0600): whoever may open it may
//! already read and write every blob in that directory, so it needs no credentials of its
//! own, and nothing of it is reachable over the network. Served by a thread of its own, off
//! the event loops; a request's collection runs on its connection's thread.
//!
//! The exchange is one JSON object per line ([`request`] and [`Line`]): the command sends
//! `{"gc":{"dry_run":true,"verbose":false}}`; the registry answers with `{"progress":{...}}` lines while it
//! works and ends with `{"report":{...}}` or `{"error":"..."}`.

use crate::api::Registry;
use crate::lifecycle::gc::{self, Options, Progress, Report};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The socket's name in the data directory.
pub const SOCKET: &str = "admin.sock";

/// The listening socket and its thread; [`Admin::stop`] (or dropping it) closes both and
/// removes the socket file.
pub struct Admin {
    path: PathBuf,
    /// The listening socket itself (a second descriptor of it), shut down to wake the
    /// accept: connecting to `path` cannot when the file was removed or replaced (a data
    /// directory cleaned under a running registry), and a stop must not hang on that.
    listening: UnixListener,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Listens on `<root>/admin.sock` (a stale file from a killed registry is replaced: this
/// process holds the data directory's lock, so no other registry serves it).
pub fn start(root: &Path, reg: Arc<Registry>, defaults: Options) -> io::Result<Admin> {
    let path = root.join(SOCKET);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let listening = listener.try_clone()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = stopping.clone();
    let thread = std::thread::Builder::new()
        .name("ringyard-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let reg = reg.clone();
                let _ = std::thread::Builder::new()
                    .name("ringyard-admin-conn".into())
                    .spawn(move || serve(conn, &reg, defaults));
            }
        })?;
    Ok(Admin {
        path,
        listening,
        stopping,
        thread: Some(thread),
    })
}

impl Admin {
    pub fn stop(mut self) {
        self.close();
    }

    fn close(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept (Linux fails it with EINVAL once its socket is shut down).
        use std::os::fd::AsRawFd;
        // SAFETY: shutdown(2) on a descriptor this struct owns; it touches no memory.
        unsafe { libc::shutdown(self.listening.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = thread.join();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.close();
    }
}

/// The command's request: a collection, dry or not, listing what goes or not (grace and
/// what to remove are the registry's configuration).
pub fn request(dry_run: bool, verbose: bool) -> String {
    serde_json::json!({ "gc": { "dry_run": dry_run, "verbose": verbose } }).to_string()
}

/// One line of the registry's answer, as the command reads it.
#[derive(Debug, PartialEq)]
pub enum Line {
    Progress(Progress),
    Report(Report),
    Error(String),
}

fn progress_line(p: Progress) -> String {
    serde_json::json!({ "progress": { "phase": p.phase, "done": p.done, "total": p.total } })
        .to_string()
}

fn report_line(r: &Report) -> String {
    serde_json::json!({ "report": {
        "dry_run": r.dry_run,
        "skipped": r.skipped,
        "tags": r.tags,
        "manifests": r.manifests,
        "blobs": r.blobs,
        "bytes": r.bytes,
        "orphans": r.orphans,
        "orphan_bytes": r.orphan_bytes,
        "raced": r.raced,
        "items": r.items,
        "elapsed_ms": r.elapsed.as_millis() as u64,
    }})
    .to_string()
}

/// Reads one answer line. Pure.
pub fn parse_line(line: &str) -> Option<Line> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if let Some(e) = v.get("error") {
        return Some(Line::Error(e.as_str()?.to_string()));
    }
    if let Some(p) = v.get("progress") {
        let phase = match p.get("phase")?.as_str()? {
            "manifests" => "manifests",
            "blobs" => "blobs",
            _ => "working",
        };
        return Some(Line::Progress(Progress {
            phase,
            done: p.get("done")?.as_u64()?,
            total: p.get("total")?.as_u64()?,
        }));
    }
    let r = v.get("report")?;
    let n = |k: &str| r.get(k).and_then(|x| x.as_u64());
    Some(Line::Report(Report {
        dry_run: r.get("dry_run")?.as_bool()?,
        skipped: r.get("skipped")?.as_bool()?,
        tags: n("tags")?,
        manifests: n("manifests")?,
        blobs: n("blobs")?,
        bytes: n("bytes")?,
        orphans: n("orphans")?,
        orphan_bytes: n("orphan_bytes")?,
        raced: n("raced")?,
        items: r
            .get("items")?
            .as_array()?
            .iter()
            .filter_map(|i| Some(i.as_str()?.to_string()))
            .collect(),
        elapsed: Duration::from_millis(n("elapsed_ms")?),
    }))
}

/// One connection: one request, its answer.
fn serve(conn: UnixStream, reg: &Registry, defaults: Options) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    if BufReader::new(&conn).read_line(&mut line).is_err() {
        return;
    }
    let asked = serde_json::from_str::<serde_json::Value>(&line).ok();
    let gc = asked.as_ref().and_then(|v| v.get("gc"));
    let dry_run = gc.and_then(|g| g.get("dry_run")?.as_bool());
    // Absent (an older command): not listed.
    let verbose = gc
        .and_then(|g| g.get("verbose")?.as_bool())
        .unwrap_or(false);
    let Some(dry_run) = dry_run else {
        let e =
            serde_json::json!({ "error": "unknown request; expected {\"gc\":{\"dry_run\":BOOL}}" });
        let _ = writeln!(&conn, "{e}");
        return;
    };
    if reg.limits.read_only && !dry_run {
        let e = serde_json::json!({ "error": "the registry is read-only: nothing may be deleted" });
        let _ = writeln!(&conn, "{e}");
        return;
    }
    // At most a few progress lines a second: a terminal's bar needs no more.
    let last = std::cell::Cell::new(Instant::now() - Duration::from_secs(1));
    let progress = |p: Progress| {
        if last.get().elapsed() >= Duration::from_millis(100) {
            last.set(Instant::now());
            let _ = writeln!(&conn, "{}", progress_line(p));
        }
    };
    let opts = Options {
        dry_run,
        verbose,
        ..defaults
    };
    let answer = match gc::collect(&reg.meta, &reg.blobs, opts, reg.gc_rules(), &progress) {
        Ok(report) => {
            reg.gc.add(&report);
            crate::log::info(format_args!(
                "garbage collection asked by `ringyard gc`: {} in {:?}",
                report.summary(),
                report.elapsed
            ));
            report_line(&report)
        }
        Err(e) => {
            crate::log::warn(format_args!("garbage collection failed: {e}"));
            serde_json::json!({ "error": e }).to_string()
        }
    };
    let _ = writeln!(&conn, "{answer}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_back() {
        let p = Progress {
            phase: "blobs",
            done: 3,
            total: 9,
        };
        assert_eq!(parse_line(&progress_line(p)), Some(Line::Progress(p)));
        let r = Report {
            dry_run: true,
            tags: 4,
            manifests: 2,
            blobs: 15,
            bytes: 2_300_000_000,
            orphans: 1,
            orphan_bytes: 5,
            raced: 1,
            items: vec!["blob sha256:00 (5 B)".into()],
            elapsed: Duration::from_millis(42),
            ..Report::default()
        };
        assert_eq!(parse_line(&report_line(&r)), Some(Line::Report(r)));
        assert_eq!(
            parse_line(r#"{"error":"nope"}"#),
            Some(Line::Error("nope".into()))
        );
        assert_eq!(parse_line("not json"), None);
        let asked = request(true, false);
        assert!(asked.contains("\"dry_run\":true") && asked.contains("\"verbose\":false"));
    }
}
