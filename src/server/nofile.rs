//! The open-file limit. Every connection, upload file, cached blob, SQLite file and thread
//! pool's file counts against RLIMIT_NOFILE. The soft limit a process inherits is often far
//! lower than a registry with many clients needs (1024 by default, 256 after some shells'
//! `ulimit -n`), while the hard limit is what the administrator actually allows; so the soft
//! limit is raised to the hard one at start, and the open-blob cache is sized from the result.

use std::fmt;

/// The limit before and after [`raise_to_hard`].
pub struct NoFile {
    pub before: u64,
    /// The soft limit in force now.
    pub now: u64,
    pub hard: u64,
    /// Why the raise failed, if it did (the limit then stays at `before`).
    failed: Option<std::io::Error>,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit. Never fails the start: a limit that cannot
/// be read or raised is reported and worked with.
// `rlim_t` is narrower on some 32-bit platforms.
#[allow(clippy::unnecessary_cast)]
pub fn raise_to_hard() -> NoFile {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        // The classic default, as a guess to size from.
        return NoFile {
            before: 1024,
            now: 1024,
            hard: 1024,
            failed: Some(std::io::Error::last_os_error()),
        };
    }
    let (before, hard) = (lim.rlim_cur as u64, lim.rlim_max as u64);
    let mut result = NoFile {
        before,
        now: before,
        hard,
        failed: None,
    };
    if before < hard {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            result.now = hard;
        } else {
            result.failed = Some(std::io::Error::last_os_error());
        }
    }
    result
}

#[allow(clippy::unnecessary_cast)]
fn show(n: u64) -> String {
    if n == libc::RLIM_INFINITY as u64 {
        "unlimited".into()
    } else {
        n.to_string()
    }
}

impl fmt::Display for NoFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (before, hard) = (show(self.before), show(self.hard));
        match &self.failed {
            Some(e) => write!(
                f,
                "open-file limit stays {before} (hard limit {hard}): cannot raise it: {e}"
            ),
            None if self.now > self.before => {
                write!(
                    f,
                    "open-file limit raised from {before} to the hard limit {hard}"
                )
            }
            None => write!(
                f,
                "open-file limit {before} (already the hard limit {hard})"
            ),
        }
    }
}
