//! The process harness: starts the real `ringyard` binary on a free port, reads its log,
//! stops it (gracefully, or with SIGKILL), and checks the tools the real-client tests need.

#![allow(dead_code)]

use super::*;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256, Sha512};

pub const START_TIMEOUT: Duration = Duration::from_secs(30);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// A running `ringyard` process. Dropping it kills the process (SIGKILL) if it still runs.
pub struct Server {
    pub addr: SocketAddr,
    /// The data directory (empty for [`Server::start_args`], which passes arguments verbatim).
    pub root: PathBuf,
    child: Option<Child>,
    _tempdir: Option<tempfile::TempDir>,
    stderr: Arc<Mutex<String>>,
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringyard")
}

/// The socket addresses a "listening on ..." log line names (`None` for any other line).
pub fn parse_listening(line: &str) -> Option<Vec<SocketAddr>> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let addrs: Vec<SocketAddr> = rest
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|t| t.trim_matches(|c: char| c == '(' || c == ')' || c == ';' || c == '"'))
        .filter_map(|t| t.parse().ok())
        .collect();
    if addrs.is_empty() {
        None
    } else {
        Some(addrs)
    }
}

impl Server {
    /// A server on a fresh temporary root: `serve --listen 127.0.0.1:0 --root ROOT --workers 2`.
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("create temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("create root");
        let mut s = Server::start_with(&root, &[]);
        s._tempdir = Some(dir);
        s
    }

    /// Like [`Server::start`] (a fresh temporary root, deleted with the Server) with `extra_args`
    /// appended.
    pub fn start_in_temp(extra_args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("create temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("create root");
        let mut s = Server::start_with(&root, extra_args);
        s._tempdir = Some(dir);
        s
    }

    /// A server on `root` (not deleted by this Server), `extra_args` appended after
    /// `serve --listen 127.0.0.1:0 --root ROOT --workers 2`.
    pub fn start_with(root: &Path, extra_args: &[&str]) -> Server {
        let root_s = root.to_str().expect("utf-8 root path");
        let mut args: Vec<&str> = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--root",
            root_s,
            "--workers",
            "2",
        ];
        args.extend_from_slice(extra_args);
        match Server::try_start(&args) {
            Ok(mut s) => {
                s.root = root.to_path_buf();
                s
            }
            Err((status, stderr)) => panic!(
                "ringyard {:?} exited ({status}) before listening; stderr:\n{stderr}",
                args
            ),
        }
    }

    /// Like [`Server::start_in_temp`], with the process's open-file limit (soft and hard) set
    /// to `nofile` before it runs, as `ulimit -n` would leave it.
    pub fn start_in_temp_with_nofile(extra_args: &[&str], nofile: u64) -> Server {
        let dir = tempfile::tempdir().expect("create temp dir");
        let root = dir.path().join("root");
        let root_s = root.to_str().expect("utf-8 root path");
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--root", root_s];
        args.extend_from_slice(&["--workers", "2"]);
        args.extend_from_slice(extra_args);
        match Server::try_start_limited(&args, Some(nofile)) {
            Ok(mut s) => {
                s.root = root;
                s._tempdir = Some(dir);
                s
            }
            Err((status, stderr)) => panic!(
                "ringyard {args:?} (open-file limit {nofile}) exited ({status}) before \
                 listening; stderr:\n{stderr}"
            ),
        }
    }

    /// Starts the binary with exactly `args`; panics if it does not come up.
    pub fn start_args(args: &[&str]) -> Server {
        match Server::try_start(args) {
            Ok(s) => s,
            Err((status, stderr)) => panic!(
                "ringyard {:?} exited ({status}) before listening; stderr:\n{stderr}",
                args
            ),
        }
    }

    /// Starts the binary with exactly `args`. `Ok` once it logs its listening line; `Err` with the
    /// exit status and stderr if it exits first. Panics if neither happens within 30 s.
    pub fn try_start(args: &[&str]) -> Result<Server, (ExitStatus, String)> {
        Server::try_start_limited(args, None)
    }

    /// [`Server::try_start`], with RLIMIT_NOFILE (soft and hard) set to `nofile` in the child
    /// before it execs, when given.
    pub fn try_start_limited(
        args: &[&str],
        nofile: Option<u64>,
    ) -> Result<Server, (ExitStatus, String)> {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: runs in the forked child before exec, and calls only setrlimit, which is
            // async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin()));
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<Option<SocketAddr>>();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stderr_pipe);
                let mut sent = false;
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&line).into_owned();
                            log.lock().unwrap().push_str(&text);
                            if !sent {
                                if let Some(addrs) = parse_listening(&text) {
                                    sent = true;
                                    let _ = tx.send(Some(addrs[0]));
                                }
                            }
                        }
                    }
                }
                if !sent {
                    let _ = tx.send(None);
                }
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Some(addr)) => {
                    if addr.port() == 0 {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!(
                            "ringyard reported port 0 in its listening line; stderr:\n{}",
                            log.lock().unwrap()
                        );
                    }
                    return Ok(Server {
                        addr,
                        root: PathBuf::new(),
                        child: Some(child),
                        _tempdir: None,
                        stderr: log,
                    });
                }
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed without a listening line: the process is exiting.
                    let status =
                        wait_bounded(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
                            let _ = child.kill();
                            child.wait().expect("wait")
                        });
                    std::thread::sleep(Duration::from_millis(20));
                    let text = log.lock().unwrap().clone();
                    return Err((status, text));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // Give the reader thread a moment to collect the last lines.
                        std::thread::sleep(Duration::from_millis(100));
                        let text = log.lock().unwrap().clone();
                        return Err((status, text));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!(
                            "ringyard {:?} did not log `listening on ` within {:?}; stderr:\n{}",
                            args,
                            START_TIMEOUT,
                            log.lock().unwrap()
                        );
                    }
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running child").id()
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then wait up to 30 s (then SIGKILL and panic).
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running child");
        signal(child.id(), libc::SIGTERM);
        match wait_bounded(&mut child, STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                signal(child.id(), libc::SIGKILL);
                let _ = child.wait();
                panic!(
                    "ringyard did not exit within {:?} of SIGTERM; stderr:\n{}",
                    STOP_TIMEOUT,
                    self.stderr()
                );
            }
        }
    }

    /// SIGKILL and wait.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("running child");
        signal(child.id(), libc::SIGKILL);
        let _ = child.wait();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                signal(child.id(), libc::SIGKILL);
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
            eprintln!(
                "--- ringyard stderr (tail) ---\n{}--- end ---",
                tail(&log, 8000)
            );
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Runs `cmd` to its exit, reading stdout and stderr as it goes: (status, stdout, stderr).
/// Killed, and the test failed, if it still runs after `limit`.
pub fn run_to_exit(mut cmd: Command, limit: Duration) -> (ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let status = wait_bounded(&mut child, limit).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not exit within {limit:?}")
    });
    (status, out.join().unwrap(), err.join().unwrap())
}

/// Waits up to `limit` for `child` to exit; `None` if it still runs then.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("wait: {e}"),
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Panics with an instruction if `name` is not an executable on PATH.
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths).any(|dir| {
                let p = dir.join(name);
                match std::fs::metadata(&p) {
                    Ok(m) => {
                        use std::os::unix::fs::PermissionsExt;
                        m.is_file() && m.permissions().mode() & 0o111 != 0
                    }
                    Err(_) => false,
                }
            })
        })
        .unwrap_or(false);
    if !found {
        panic!(
            "required tool `{name}` is not installed: run .ci/run (or apt-get install the \
             package that provides it)"
        );
    }
}

/// A final check that the server still answers: `GET /v2/` on a new connection is 200.
#[track_caller]
pub fn assert_alive(server: &Server) {
    let mut c = server.client();
    let r = c.get("/v2/");
    assert_eq!(
        r.status,
        200,
        "the server no longer answers GET /v2/: {:?}",
        r.text()
    );
}

/// Runs a command (mount, umount, chattr) to its end: whether it succeeded, and what it
/// printed on stdout and stderr.
/// `skopeo ARGS` with its home (credentials, policy lookups) in `home`: whether it succeeded,
/// its stdout (what `inspect --raw` prints), and stdout and stderr together for messages.
pub fn skopeo_in(home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("skopeo")
        .args(args)
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .output()
        .expect("run skopeo");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let both = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout, both)
}

pub fn run_command(cmd: &str, args: &[&str]) -> (bool, String) {
    match Command::new(cmd).args(args).output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, format!("{cmd}: {e}")),
    }
}

/// Writes `yaml` as `ringyard.yaml` in `dir`; its path, for `--config`.
pub fn config_file(dir: &Path, yaml: &str) -> std::path::PathBuf {
    let path = dir.join("ringyard.yaml");
    std::fs::write(&path, yaml).expect("write the configuration file");
    path
}
