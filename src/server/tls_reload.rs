//! Certificate renewal without a restart: a thread of its own looks at the TLS files every few
//! seconds (device, inode, size, modification and change times: a rename over the file, a
//! rewrite in place and a symlink swap all show), and when any of them changed it loads the set
//! again and puts it in the shared [`TlsConfig`] for the next handshakes. A set that does not
//! load (a key for another certificate, half-written files while a renewal tool writes them
//! one at a time) keeps the old configuration with a warning, and is tried again when the
//! files change again.

use crate::http::tls_config::{self, TlsConfig, TlsFiles};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

/// How often the files are looked at.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// What is compared between two looks at a file; `None` when it cannot be read (a renewal
/// between its remove and its create).
type Stamp = Option<(u64, u64, u64, i64, i64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    // Through symlinks: a swapped link target (Kubernetes secrets, certbot's live/) is a change.
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

fn stamps(files: &TlsFiles) -> Vec<Stamp> {
    files.paths().map(stamp).collect()
}

/// The watching thread; it stops when this is dropped.
pub struct Reloader {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Reloader {
    /// Watches `files` (as they were when `config` was loaded from them).
    pub fn start(files: TlsFiles, config: Arc<TlsConfig>) -> std::io::Result<Reloader> {
        let (stop, stopped) = mpsc::channel::<()>();
        let mut seen = stamps(&files);
        let handle = thread::Builder::new()
            .name("ringyard-tls".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(POLL_EVERY) {
                    let now = stamps(&files);
                    if now == seen {
                        continue;
                    }
                    // Taken before the read: a change during it is seen at the next look.
                    seen = now;
                    reload(&files, &config);
                }
            })?;
        Ok(Reloader {
            stop: Some(stop),
            handle: Some(handle),
        })
    }
}

fn reload(files: &TlsFiles, config: &TlsConfig) {
    match tls_config::load(files) {
        Ok(c) => {
            config.replace(c);
            crate::log::info(format_args!(
                "TLS certificate {} and key {} reloaded; new connections use them",
                files.certificate.display(),
                files.key.display()
            ));
        }
        Err(e) => crate::log::warn(format_args!(
            "TLS files changed but cannot be used: {e}; new connections keep the certificate \
             loaded before"
        )),
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
