//! The process: `--help`, refusing to start on a port or a root already in use, graceful
//! SIGTERM/SIGINT (exit 0, port closed, an in-flight download completes while new connections
//! are refused), clear errors for invalid flags, and the no-argument default (localhost:5000,
//! ./ringyard-data).

use crate::common::*;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ringyard");

// ---------------------------------------------------------------------------------------------
// a process we spawn ourselves (the signal tests need its exit status after our own signal)

struct Proc {
    child: Child,
    output: Arc<Mutex<String>>,
    addrs: Vec<SocketAddr>,
}

fn spawn(
    args: &[&str],
    cwd: Option<&Path>,
) -> (Child, Arc<Mutex<String>>, mpsc::Receiver<Vec<SocketAddr>>) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().expect("spawning ringyard");
    let output = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
        let output = output.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                output.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(a) = parse_listening(&line) {
                    let _ = tx.send(a);
                }
            }
        });
    }
    (child, output, rx)
}

impl Proc {
    fn start(args: &[&str], cwd: Option<&Path>) -> Proc {
        let (mut child, output, rx) = spawn(args, cwd);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(addrs) = rx.recv_timeout(Duration::from_millis(50)) {
                return Proc {
                    child,
                    output,
                    addrs,
                };
            }
            if let Some(st) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "ringyard {args:?} exited ({st}) before listening:\n{}",
                    output.lock().unwrap()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ringyard {args:?} logged no `listening on` within 30 s:\n{}",
                    output.lock().unwrap()
                );
            }
        }
    }
    fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }
    fn log(&self) -> String {
        self.output.lock().unwrap().clone()
    }
    fn signal(&self, sig: libc::c_int) {
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.child.id());
    }
    /// Waits for the exit after a signal; kills and fails after `timeout`.
    fn wait(&mut self, timeout: Duration, what: &str) -> ExitStatus {
        match wait_bounded(&mut self.child, timeout) {
            Some(st) => st,
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{what}: ringyard did not exit within {timeout:?}; killed\n{}",
                    self.log()
                );
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs ringyard to completion (it must exit by itself within 20 s); returns (status, stdout+stderr).
fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let (mut child, output, _rx) = spawn(args, None);
    match wait_bounded(&mut child, Duration::from_secs(20)) {
        Some(st) => {
            std::thread::sleep(Duration::from_millis(100));
            let out = output.lock().unwrap().clone();
            (st, out)
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ringyard {args:?} did not exit within 20 s (did it start serving?):\n{}",
                output.lock().unwrap()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// raw HTTP

/// The status of `GET path` on a new connection.
fn get_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = connect_raw(addr, Duration::from_secs(10))?;
    s.write_all(&get_request(addr, path, true))?;
    Ok(read_raw_head(&mut s)?.status)
}

/// `GET path` (with `Connection: close` when `close`).
fn get_request(addr: SocketAddr, path: &str, close: bool) -> Vec<u8> {
    let close: &[(&str, &str)] = if close {
        &[("Connection", "close")]
    } else {
        &[]
    };
    request_bytes(&addr.to_string(), "GET", path, close, b"")
}

/// Pushes `size` generator bytes as docker does: POST a session, one PATCH streaming the bytes
/// (hashed on the way, so no second pass over them), PUT `?digest=`.
fn push_generated(addr: SocketAddr, repo: &str, seed: u64, size: u64) -> String {
    let host = addr.to_string();
    let mut s = connect_raw(addr, Duration::from_secs(300)).unwrap();
    let exchange = |s: &mut std::net::TcpStream, method: &str, path: &str, len: u64| {
        let head = request_bytes(
            &host,
            method,
            path,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", &len.to_string()),
            ],
            b"",
        );
        s.write_all(&head).unwrap();
    };
    let location = |h: &RawHead| location_path(h.header("location").expect("Location"));
    exchange(&mut s, "POST", &format!("/v2/{repo}/blobs/uploads/"), 0);
    let h = read_raw_head(&mut s).unwrap();
    assert_eq!(h.status, 202, "starting an upload");
    let loc = location(&h);
    exchange(&mut s, "PATCH", &loc, size);
    let mut hasher = Sha256::new();
    send_generated(&mut s, seed, 0, size, &mut hasher);
    let h = read_raw_head(&mut s).unwrap();
    assert_eq!(h.status, 202, "streaming {size} bytes");
    let digest = finish_digest(hasher);
    exchange(
        &mut s,
        "PUT",
        &with_query(&location(&h), &format!("digest={digest}")),
        0,
    );
    let h = read_raw_head(&mut s).unwrap();
    assert_eq!(h.status, 201, "completing a {size}-byte upload");
    digest
}

fn serve_args<'a>(root: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--root",
        root,
        "--workers",
        "2",
    ];
    v.extend_from_slice(extra);
    v
}

// ---------------------------------------------------------------------------------------------
// tests

/// `ringyard --help` names the serve command and its main flags; `ringyard serve --help` lists
/// every flag.
#[test]
fn help_explains_commands_and_flags() {
    let (st, out) = run_to_exit(&["--help"]);
    assert!(st.success(), "ringyard --help: {st}\n{out}");
    for word in ["serve", "--listen", "--root", "--workers"] {
        assert!(
            out.contains(word),
            "`ringyard --help` does not mention {word}:\n{out}"
        );
    }
    let (st, out) = run_to_exit(&["serve", "--help"]);
    assert!(st.success(), "ringyard serve --help: {st}\n{out}");
    for word in [
        "--listen",
        "--root",
        "--workers",
        "--upload-expiry",
        "--max-manifest-bytes",
        "--no-delete",
        "--request-timeout",
        "--shutdown-grace",
    ] {
        assert!(
            out.contains(word),
            "`ringyard serve --help` does not mention {word}:\n{out}"
        );
    }
}

/// A second ringyard on the same port refuses to start (SO_REUSEPORT must not let it share the
/// port silently), naming the port; so does one on a port another process holds. The first keeps
/// serving every new connection.
#[test]
fn second_instance_on_the_same_port_refuses() {
    let first = Server::start();
    let port = first.addr.port().to_string();
    let other_root = tempfile::tempdir().unwrap();
    let other = other_root.path().to_str().unwrap();
    let host = first.host();
    match Server::try_start(&[
        "serve",
        "--listen",
        &host,
        "--root",
        other,
        "--workers",
        "2",
    ]) {
        Ok(second) => {
            let _ = second.stop();
            panic!("a second ringyard started on {host}, which the first one holds");
        }
        Err((status, stderr)) => {
            assert!(!status.success(), "refusal must exit non-zero");
            assert!(
                stderr.contains(&port),
                "the refusal must name the address or port in use ({host}); stderr:\n{stderr}"
            );
            assert!(
                !stderr.contains("panicked"),
                "no panic for a port in use:\n{stderr}"
            );
        }
    }
    for i in 0..30 {
        assert_eq!(
            get_status(first.addr, "/v2/").unwrap(),
            200,
            "connection {i} to the first instance"
        );
    }

    // a port held by some other process
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().to_string();
    match Server::try_start(&[
        "serve",
        "--listen",
        &taken,
        "--root",
        other,
        "--workers",
        "2",
    ]) {
        Ok(s) => {
            let _ = s.stop();
            panic!("ringyard started on {taken}, which another process holds");
        }
        Err((status, stderr)) => {
            assert!(!status.success());
            let p = squatter.local_addr().unwrap().port().to_string();
            assert!(
                stderr.contains(&p),
                "the refusal must name the port {p}; stderr:\n{stderr}"
            );
        }
    }
    assert!(first.stop().success());
}

/// A second ringyard on another port but the same root refuses (the root's LOCK), saying so; the
/// first keeps serving its data.
#[test]
fn second_instance_on_the_same_root_refuses() {
    let root = tempfile::tempdir().unwrap();
    let first = Server::start_with(root.path(), &[]);
    let mut c = first.client();
    let (digest, manifest) = push_image(&mut c, "lock/test", "1", &[b"layer bytes"]);
    let root_s = root.path().to_str().unwrap();
    match Server::try_start(&serve_args(root_s, &[])) {
        Ok(second) => {
            let _ = second.stop();
            panic!("a second ringyard started on root {root_s}, which the first one holds");
        }
        Err((status, stderr)) => {
            assert!(!status.success(), "refusal must exit non-zero");
            let lower = stderr.to_lowercase();
            assert!(
                lower.contains("lock") || stderr.contains(root_s),
                "the refusal must mention the lock or the root {root_s}; stderr:\n{stderr}"
            );
            assert!(
                !stderr.contains("panicked"),
                "no panic for a locked root:\n{stderr}"
            );
        }
    }
    let r = c.get(&format!("/v2/lock/test/manifests/{digest}"));
    assert!(
        r.status == 200 && r.body == manifest,
        "the first instance still serves its data"
    );
    drop(c);
    assert!(first.stop().success());
}

/// SIGTERM and SIGINT each stop the server gracefully: exit status 0, promptly even with an idle
/// keep-alive connection open, and the port refuses connections afterwards.
#[test]
fn sigterm_and_sigint_exit_zero_and_close_the_port() {
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let root = tempfile::tempdir().unwrap();
        let mut p = Proc::start(
            &serve_args(root.path().to_str().unwrap(), &["--shutdown-grace", "20"]),
            None,
        );
        let addr = p.addr();
        assert_eq!(get_status(addr, "/v2/").unwrap(), 200);
        // an idle keep-alive connection that has completed one request
        let mut idle = connect_raw(addr, Duration::from_secs(20)).unwrap();
        idle.write_all(&get_request(addr, "/v2/", false)).unwrap();
        let status = read_raw_head(&mut idle).unwrap().status;
        assert_eq!(status, 200);

        let t = Instant::now();
        p.signal(sig);
        let st = p.wait(Duration::from_secs(15), name);
        assert_eq!(
            st.code(),
            Some(0),
            "{name} must exit 0, got {st}\n{}",
            p.log()
        );
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{name}: an idle keep-alive connection must not hold up the exit ({:?})",
            t.elapsed()
        );
        assert!(
            port_refuses(addr),
            "{name}: {addr} must refuse connections after exit"
        );
        // the idle connection was closed, not left hanging
        let mut b = [0u8; 1];
        assert!(
            matches!(idle.read(&mut b), Ok(0) | Err(_)),
            "{name}: idle connection still open"
        );
    }
}

/// A slow 200 MiB download that started before SIGTERM completes, byte-identical, while new
/// connections are refused; then the process exits 0.
#[test]
fn inflight_download_completes_after_sigterm() {
    download_through_sigterm(200 * 1024 * 1024, 0xD0_0D, Some(40 << 20));
}

/// The same with a 10 GiB blob downloaded as fast as the client can hash it: new connections
/// are refused at once, the download completes within the grace period, the process exits 0.
#[test]
fn ten_gib_download_completes_after_sigterm() {
    download_through_sigterm(10 << 30, 0x10_6B, None);
}

/// Pushes a blob of `size`, starts downloading it, sends SIGTERM after the first 64 MiB
/// arrived, and checks that new connections are refused within 3 s while the download goes
/// on to the last byte (at `rate` bytes/s when given, so that it outlives the signal by
/// seconds), that it is intact, and that the process then exits 0 with its port closed.
fn download_through_sigterm(size: u64, seed: u64, rate: Option<u64>) {
    let root = tempfile::tempdir().unwrap();
    require_free_space(root.path(), size + (1 << 30));
    let mut p = Proc::start(
        &serve_args(root.path().to_str().unwrap(), &["--shutdown-grace", "300"]),
        None,
    );
    let addr = p.addr();
    let digest = push_generated(addr, "sigterm/download", seed, size);

    let mut s = connect_raw(addr, Duration::from_secs(60)).unwrap();
    let path = format!("/v2/sigterm/download/blobs/{digest}");
    s.write_all(&get_request(addr, &path, true)).unwrap();
    let head = read_raw_head(&mut s).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.content_length(), Some(size));
    let mut h = Sha256::new();
    h.update(&head.rest);
    let mut got = head.rest.len() as u64;
    let mut buf = vec![0u8; 256 * 1024];
    while got < 64 * 1024 * 1024 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        h.update(&buf[..n]);
        got += n as u64;
    }

    p.signal(libc::SIGTERM);
    let t = Instant::now();
    let mut refused_after = None;
    let mut n_reads = 0u64;
    while got < size {
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("download broken after {got} bytes: {e}\n{}", p.log()));
        assert!(
            n > 0,
            "download cut off after {got} of {size} bytes, {:?} after SIGTERM\n{}",
            t.elapsed(),
            p.log()
        );
        h.update(&buf[..n]);
        got += n as u64;
        n_reads += 1;
        if refused_after.is_none() && n_reads.is_multiple_of(8) {
            if port_refuses(addr) {
                refused_after = Some(t.elapsed());
            } else {
                assert!(
                    t.elapsed() < Duration::from_secs(3),
                    "new connections still accepted {:?} after SIGTERM",
                    t.elapsed()
                );
            }
        }
        if let Some(rate) = rate {
            std::thread::sleep(Duration::from_micros(n as u64 * 1_000_000 / rate));
        }
    }
    let took = t.elapsed();
    assert_eq!(finish_digest(h), digest, "the in-flight download is intact");
    assert!(
        refused_after.is_some(),
        "new connections were never refused during the drain"
    );
    if rate.is_some() {
        assert!(
            took > Duration::from_secs(2),
            "the download should have outlived the signal ({took:?})"
        );
    }
    let st = p.wait(Duration::from_secs(30), "exit after the drain");
    assert_eq!(
        st.code(),
        Some(0),
        "exit status after the drain: {st}\n{}",
        p.log()
    );
    assert!(port_refuses(addr));
}

/// Fails, naming the need, where the disk cannot hold the test's blob.
fn require_free_space(dir: &Path, bytes: u64) {
    let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a statvfs we own.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    assert!(
        free >= bytes,
        "this test needs {} GiB free under {} (the blob it streams); {} GiB are free",
        bytes >> 30,
        dir.display(),
        free >> 30
    );
}

/// Invalid flag values and unknown flags or commands: a non-zero exit, no serving, no panic, and
/// a message that names the offending flag or value.
#[test]
fn invalid_flags_give_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let file = root.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let f = file.to_str().unwrap();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (serve_args(r, &["--workers", "abc"]), vec!["workers", "abc"]),
        (serve_args(r, &["--workers", "-3"]), vec!["workers", "-3"]),
        (
            vec!["serve", "--listen", "not-an-address", "--root", r],
            vec!["listen", "not-an-address"],
        ),
        (
            vec!["serve", "--listen", "127.0.0.1:99999", "--root", r],
            vec!["listen", "99999"],
        ),
        (
            serve_args(r, &["--upload-expiry", "soon"]),
            vec!["upload-expiry", "soon"],
        ),
        (
            serve_args(r, &["--max-manifest-bytes", "lots"]),
            vec!["max-manifest-bytes", "lots"],
        ),
        (
            serve_args(r, &["--request-timeout", "x1"]),
            vec!["request-timeout", "x1"],
        ),
        (
            serve_args(r, &["--shutdown-grace", "-5"]),
            vec!["shutdown-grace", "-5"],
        ),
        (serve_args(r, &["--bogus-flag"]), vec!["bogus-flag"]),
        (
            vec!["serve", "--listen", "127.0.0.1:0", "--root", f],
            vec![f, "root"],
        ),
        (vec!["frobnicate"], vec!["frobnicate"]),
    ];
    for (args, any_of) in cases {
        let (st, out) = run_to_exit(&args);
        assert!(
            !st.success() && st.code().is_some(),
            "ringyard {args:?} must fail with an exit code, got {st}\n{out}"
        );
        assert!(
            !out.contains("panicked"),
            "ringyard {args:?} panicked:\n{out}"
        );
        assert!(
            any_of.iter().any(|w| out.contains(w)),
            "ringyard {args:?}: the error should name one of {any_of:?}:\n{out}"
        );
    }
}

/// `ringyard` with no arguments serves on localhost:5000 (127.0.0.1, and ::1 where the machine
/// has IPv6) with its data in ./ringyard-data, and says so in one log line.
#[test]
fn no_arguments_serves_localhost_5000_with_ringyard_data() {
    if TcpListener::bind("127.0.0.1:5000").is_err() {
        panic!("port 5000 is in use by another process; this test needs it free");
    }
    let ipv6 = TcpListener::bind("[::1]:0").is_ok();
    let cwd = tempfile::tempdir().unwrap();
    let mut p = Proc::start(&[], Some(cwd.path()));
    let log = p.log();
    let line = log
        .lines()
        .find(|l| l.contains("listening on"))
        .unwrap()
        .to_string();
    assert!(
        p.addrs.iter().all(|a| a.port() == 5000),
        "default port: {line}"
    );
    assert!(
        p.addrs.iter().all(|a| a.ip().is_loopback()),
        "default addresses are loopback: {line}"
    );
    assert!(
        line.contains("ringyard-data"),
        "the log line names the data directory: {line}"
    );
    assert_eq!(
        get_status("127.0.0.1:5000".parse().unwrap(), "/v2/").unwrap(),
        200
    );
    if ipv6 {
        assert!(
            p.addrs.iter().any(|a| a.is_ipv6()),
            "IPv6 is available, so ::1 too: {line}"
        );
        assert_eq!(
            get_status("[::1]:5000".parse().unwrap(), "/v2/").unwrap(),
            200
        );
    }
    let data = cwd.path().join("ringyard-data");
    assert!(data.is_dir(), "./ringyard-data was not created");
    assert!(data.join("LOCK").exists(), "./ringyard-data/LOCK");
    p.signal(libc::SIGTERM);
    let st = p.wait(Duration::from_secs(15), "SIGTERM");
    assert_eq!(st.code(), Some(0));
    assert!(port_refuses("127.0.0.1:5000".parse().unwrap()));
}
