//! Real services for tests: a throwaway PostgreSQL ([`postgres`]), S3 servers ([`s3`]: s3s-fs
//! and moto) and Redis ([`redis`]), each on a free 127.0.0.1 port in a temp dir of its own and
//! stopped by its own PID (never by name: other helpers and tests run the same binaries) when
//! dropped. Always compiled, not `cfg(test)`, because the integration tests (tests/it, a crate
//! of their own) start the same services as the library's unit tests; nothing in the
//! registry uses it. A missing binary is an error saying how to install it (`.ci/run` does).

pub mod postgres;
pub mod redis;
pub mod s3;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A directory under the system's temp dir, removed with everything in it when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// `<tmp>/<prefix>-<pid>-<ms>-<n>`, made empty.
    pub fn new(prefix: &str) -> Result<TempDir, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}-{}",
            std::process::id(),
            crate::meta::now_millis(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A port nobody listens on right now (a server may still lose a race for it).
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// The program named by `$var`, else `name` on the PATH, in `extra` directories or in
/// ~/.cargo/bin; else an error saying how to install it.
pub fn find_program(
    var: &str,
    name: &str,
    extra: &[&str],
    install: &str,
) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("${var} names {}, which is not a file", p.display()))
        };
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(extra.iter().map(PathBuf::from));
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{name} is not installed (nor named by ${var}): install it with `{install}` \
                 (.ci/run does)"
            )
        })
}

/// Waits until something accepts connections on `127.0.0.1:port`, or `exited` says the server
/// is gone, or 30 s pass.
pub fn wait_for_port(
    port: u16,
    what: &str,
    mut exited: impl FnMut() -> Option<String>,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = exited() {
            return Err(format!("{what} exited at start: {status}"));
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not listen on {port} within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `~/.cache/ringyard-ci` (or under `XDG_CACHE_HOME`): where `.ci/run` installs the reference
/// implementations the scanner's pure parts are checked against (a Python venv with
/// `packaging` and `cvss`, npm's `semver`).
pub fn reference_cache() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .map(|c| c.join("ringyard-ci"))
}

/// A Python that can import `module`: the CI's venv first, else `python3` on PATH.
pub fn python_with(module: &str) -> Option<std::ffi::OsString> {
    let venv = reference_cache().map(|c| c.join("scan-venv/bin/python"));
    let candidates = venv
        .filter(|p| p.is_file())
        .map(std::ffi::OsString::from)
        .into_iter()
        .chain([std::ffi::OsString::from("python3")]);
    for python in candidates {
        let works = std::process::Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if works {
            return Some(python);
        }
    }
    None
}
