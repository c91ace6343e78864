//! A docker engine of the tests' own, started the safe way (TOOLS.md): its data and exec roots,
//! pidfile, socket and `daemon.json` in a temp dir, and no bridge, iptables, forwarding or
//! masquerading, so the host's network is left as it was. One engine serves every docker test
//! of the process (starting one takes seconds; the tests keep apart by registry port, image
//! name and a client config directory each), started by the first test that needs it and
//! stopped by PID when the test binary exits (`atexit`). If the test binary is killed instead,
//! the engine gets SIGTERM through `PR_SET_PDEATHSIG` (it is spawned from a thread that lives
//! as long as the engine), and an engine left by a run that died anyway is stopped by PID and
//! its directory removed by the next run.
//!
//! Each test talks to the engine through a [`DockerCli`]: `DOCKER_HOST` is the engine's socket
//! and `DOCKER_CONFIG` a temp dir of the test's own, so `docker login` never writes into
//! `~/.docker` and tests do not see each other's credentials.

use super::*;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long the engine may take to answer `docker info` after it is spawned.
const DOCKERD_START: Duration = Duration::from_secs(60);
/// How long one docker, skopeo or podman command may run before it is killed.
pub const TOOL_RUN_LIMIT: Duration = Duration::from_secs(300);

const DIR_PREFIX: &str = "ringyard-dockerd-";

/// The running engine.
pub struct Dockerd {
    dir: PathBuf,
    pid: u32,
    exited: Arc<AtomicBool>,
}

static DOCKERD: OnceLock<Dockerd> = OnceLock::new();

/// The process's engine, started on first use; a missing `dockerd` or `docker` fails the test.
pub fn dockerd() -> &'static Dockerd {
    DOCKERD.get_or_init(Dockerd::start)
}

extern "C" fn stop_dockerd_at_exit() {
    if let Some(d) = DOCKERD.get() {
        d.stop();
    }
}

impl Dockerd {
    fn start() -> Dockerd {
        require_tool("dockerd");
        require_tool("docker");
        let base = std::env::temp_dir();
        reap_stale(&base);
        let dir = base.join(format!("{DIR_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the dockerd dir");
        // Our own (empty) daemon.json, so /etc/docker/daemon.json cannot change the settings.
        std::fs::write(dir.join("daemon.json"), "{}\n").unwrap();
        let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
        let args = vec![
            "--config-file".to_string(),
            p("daemon.json"),
            "--data-root".to_string(),
            p("data"),
            "--exec-root".to_string(),
            p("exec"),
            "--pidfile".to_string(),
            p("pid"),
            "-H".to_string(),
            format!("unix://{}", p("docker.sock")),
            "--bridge=none".to_string(),
            "--iptables=false".to_string(),
            "--ip-forward=false".to_string(),
            "--ip-masq=false".to_string(),
            // vfs: no overlay mounts to leave behind if the engine dies.
            "--storage-driver=vfs".to_string(),
        ];
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let exited = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Result<u32, String>>();
        {
            let exited = Arc::clone(&exited);
            std::thread::Builder::new()
                .name("dockerd-keeper".into())
                .spawn(move || {
                    use std::os::unix::process::CommandExt;
                    let mut cmd = Command::new("dockerd");
                    cmd.args(&args)
                        .stdin(Stdio::null())
                        .stdout(log.try_clone().unwrap())
                        .stderr(log);
                    // SAFETY: runs in the forked child before exec and calls only prctl,
                    // which is async-signal-safe. The signal comes when this thread ends,
                    // which is when the engine has exited or the test process is gone.
                    unsafe {
                        cmd.pre_exec(|| {
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                            Ok(())
                        });
                    }
                    match cmd.spawn() {
                        Ok(mut child) => {
                            let _ = tx.send(Ok(child.id()));
                            let _ = child.wait();
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("spawn dockerd: {e}")));
                        }
                    }
                    exited.store(true, Ordering::SeqCst);
                })
                .expect("spawn the dockerd keeper thread");
        }
        let pid = match rx.recv().expect("the dockerd keeper reports") {
            Ok(pid) => pid,
            Err(e) => panic!("{e}"),
        };
        let d = Dockerd { dir, pid, exited };
        // SAFETY: registers a plain function; it runs once, at exit.
        unsafe {
            libc::atexit(stop_dockerd_at_exit);
        }
        let deadline = Instant::now() + DOCKERD_START;
        loop {
            let ok = Command::new("docker")
                .args(["-H", &d.host(), "info"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return d;
            }
            if d.exited.load(Ordering::SeqCst) || Instant::now() > deadline {
                let log = d.log();
                d.stop();
                panic!(
                    "dockerd did not answer `docker info` within {DOCKERD_START:?}; its log:\n{}",
                    tail(&log, 6000)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The engine's socket as `DOCKER_HOST` / `-H` take it.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// What the engine logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// SIGTERM by PID, up to 30 s for the engine to unmount and exit (then SIGKILL), and the
    /// directory removed if nothing is mounted under it any more.
    fn stop(&self) {
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        if !wait_flag(&self.exited, Duration::from_secs(30)) {
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
            }
            wait_flag(&self.exited, Duration::from_secs(5));
        }
        remove_unless_mounted(&self.dir);
    }
}

fn wait_flag(flag: &AtomicBool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !flag.load(Ordering::SeqCst) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn remove_unless_mounted(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let d = dir.to_str().unwrap();
    if !mounts.lines().any(|l| l.contains(d)) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Engines and directories left by test processes that are gone: the engine (named by its
/// pidfile, and only if its command line names that directory) is stopped by PID.
fn reap_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(owner) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        if Path::new("/proc").join(owner).exists() {
            continue;
        }
        let dir = e.path();
        if let Some(pid) = std::fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(dir.to_str().unwrap()) {
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
                let deadline = Instant::now() + Duration::from_secs(30);
                while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        remove_unless_mounted(&dir);
    }
}

// ---------------------------------------------------------------------------------------------
// running client tools

/// What a client command did.
pub struct ToolRun {
    pub line: String,
    /// `None`: killed after [`TOOL_RUN_LIMIT`].
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolRun {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// stdout and stderr together, for messages and for searching.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    pub fn describe(&self) -> String {
        let st = match self.status {
            Some(s) => s.to_string(),
            None => format!("killed after {TOOL_RUN_LIMIT:?}"),
        };
        format!(
            "`{}` ({st})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.line, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` (stdin closed) to its end or to [`TOOL_RUN_LIMIT`], its output collected in
/// files under `scratch` (pipes would need a reader thread each).
pub fn run_tool(cmd: Command, scratch: &Path) -> ToolRun {
    run_tool_fed(cmd, scratch, None)
}

/// Like [`run_tool`], with `input` (if any) on the command's stdin, as `docker login
/// --password-stdin` reads a password; it goes through a file under `scratch`, removed after.
pub fn run_tool_fed(mut cmd: Command, scratch: &Path, input: Option<&[u8]>) -> ToolRun {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let out_p = scratch.join(format!("tool-{n}.out"));
    let err_p = scratch.join(format!("tool-{n}.err"));
    let in_p = scratch.join(format!("tool-{n}.in"));
    let line = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let stdin = match input {
        Some(bytes) => {
            std::fs::write(&in_p, bytes).unwrap();
            Stdio::from(std::fs::File::open(&in_p).unwrap())
        }
        None => Stdio::null(),
    };
    cmd.stdin(stdin)
        .stdout(std::fs::File::create(&out_p).unwrap())
        .stderr(std::fs::File::create(&err_p).unwrap());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{line}`: {e}"));
    let status = wait_bounded(&mut child, TOOL_RUN_LIMIT).or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        None
    });
    let _ = std::fs::remove_file(&in_p);
    let read = |p: &Path| {
        let s = String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        let _ = std::fs::remove_file(p);
        s
    };
    ToolRun {
        line,
        status,
        stdout: read(&out_p),
        stderr: read(&err_p),
    }
}

// ---------------------------------------------------------------------------------------------
// the docker CLI of one test

/// The `docker` CLI against the process's engine, with a client config directory of its own.
pub struct DockerCli {
    config: tempfile::TempDir,
}

impl DockerCli {
    pub fn new() -> DockerCli {
        dockerd();
        DockerCli {
            config: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The directory `DOCKER_CONFIG` names (`config.json` lands there).
    pub fn config_dir(&self) -> &Path {
        self.config.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.args(args)
            .env("DOCKER_HOST", dockerd().host())
            .env("DOCKER_CONFIG", self.config.path())
            // The engine's own builder (BuildKit's buildx is not packaged in Debian).
            .env("DOCKER_BUILDKIT", "0");
        c
    }

    pub fn run(&self, args: &[&str]) -> ToolRun {
        run_tool(self.command(args), self.config.path())
    }

    /// `docker ARGS` with `input` on its stdin (`login --password-stdin`).
    pub fn run_fed(&self, args: &[&str], input: &str) -> ToolRun {
        run_tool_fed(
            self.command(args),
            self.config.path(),
            Some(input.as_bytes()),
        )
    }

    /// Runs `docker ARGS`; fails the test (with the output and the engine's log) unless it
    /// succeeds. Returns stdout and stderr together.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert!(
            r.success(),
            "{}\n--- dockerd log (tail) ---\n{}",
            r.describe(),
            tail(&dockerd().log(), 3000)
        );
        r.output()
    }

    /// Runs `docker ARGS`; fails the test if it succeeds. Returns stdout and stderr together.
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert!(
            r.status.is_some() && !r.success(),
            "expected a failure: {}",
            r.describe()
        );
        r.output()
    }

    /// `config.json` as the CLI left it (`{}` if it wrote none).
    pub fn config_json(&self) -> serde_json::Value {
        match std::fs::read(self.config.path().join("config.json")) {
            Ok(b) => serde_json::from_slice(&b).expect("config.json is JSON"),
            Err(_) => serde_json::json!({}),
        }
    }
}

/// `/etc/docker/certs.d/HOST:PORT/ca.crt` (the engine's fixed place for a registry's CA),
/// removed with the guard.
pub struct DockerCertsD {
    dir: PathBuf,
}

impl DockerCertsD {
    pub fn install(host_port: &str, ca_crt: &Path) -> DockerCertsD {
        let dir = Path::new("/etc/docker/certs.d").join(host_port);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create {} (tests run as root): {e}", dir.display()));
        std::fs::copy(ca_crt, dir.join("ca.crt")).unwrap();
        DockerCertsD { dir }
    }
}

impl Drop for DockerCertsD {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
