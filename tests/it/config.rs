//! Configuration against the real binary: a YAML file whose values take effect, environment
//! variables over the file and flags over both, one clear message per kind of mistake (naming
//! the file and line with the key, the variable or the flag; exit status 2), and the
//! `config check` and `config defaults` commands.

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ringyard");

/// Every key of the documented layout, written out here rather than taken from the library, so
/// that a key dropped from the table is noticed.
const KEYS: &[&str] = &[
    "http.listen",
    "http.workers",
    "http.max_connections",
    "http.max_header_size",
    "http.timeouts.head",
    "http.timeouts.idle",
    "http.timeouts.body",
    "http.timeouts.shutdown_grace",
    "storage.root",
    "storage.delete",
    "storage.read_only",
    "storage.upload_expiry",
    "storage.max_manifest_size",
    "log.level",
    "log.format",
    "log.access",
    "metrics.enabled",
    "metrics.listen",
];

// ---------------------------------------------------------------------------------------------
// helpers

/// A temporary directory with a data root and room for configuration files.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().expect("temp dir"))
    }
    fn root(&self) -> String {
        self.0.path().join("root").to_str().unwrap().to_string()
    }
    /// Writes `name` with `text`; returns its path.
    fn file(&self, name: &str, text: impl AsRef<[u8]>) -> String {
        let p = self.0.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }
}

/// A port nobody listens on at the moment.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary with `args` and `env`, without any `RINGYARD_*` variable of the test's own
/// environment.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RINGYARD_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// Runs the binary to its exit (within 20 s, or it is killed and the test fails): (status,
/// stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    run_to_exit(command(args, env), Duration::from_secs(20))
}

/// A server started with environment variables (the common harness passes none); killed when
/// dropped.
struct EnvServer {
    child: Child,
    addr: SocketAddr,
}

impl EnvServer {
    fn start(args: &[&str], env: &[(&str, &str)]) -> EnvServer {
        let mut child = command(args, env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringyard");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                seen.push_str(&line);
                seen.push('\n');
                if let Some(addrs) = parse_listening(&line) {
                    let _ = tx.send(Ok(addrs[0]));
                }
            }
            let _ = tx.send(Err(seen));
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => EnvServer { child, addr },
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ringyard {args:?} with {env:?} did not start: {other:?}")
            }
        }
    }
}

impl Drop for EnvServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of an upload start (405 when the registry is read-only).
fn upload_status(addr: SocketAddr) -> u16 {
    let mut c = Client::connect(addr);
    c.post("/v2/cfg/test/blobs/uploads/", &[], b"").status
}

/// PUTs a manifest of `size` bytes (a valid one, padded with spaces).
fn put_manifest_of(addr: SocketAddr, size: usize) -> Response {
    let mut c = Client::connect(addr);
    let layer = push_blob(&mut c, "cfg/limit", b"layer");
    let config = push_blob(&mut c, "cfg/limit", b"{}");
    let mut body = image_manifest(&(config, 2), &[(layer, 5)]);
    assert!(body.len() < size);
    body.resize(size, b' ');
    c.put(
        "/v2/cfg/limit/manifests/v1",
        &[("Content-Type", OCI_MANIFEST)],
        &body,
    )
}

#[track_caller]
fn assert_config_error(st: ExitStatus, stderr: &str, wants: &[&str], what: &str) {
    assert_eq!(
        st.code(),
        Some(2),
        "{what}: a configuration error exits 2, got {st}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: panic\n{stderr}");
    assert!(
        !stderr.contains("listening on"),
        "{what}: must not start\n{stderr}"
    );
    for w in wants {
        assert!(
            stderr.contains(w),
            "{what}: the message should contain {w:?}:\n{stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// values take effect, with their precedence

/// The file's listen address, root and read_only take effect: the server listens on the file's
/// port, serves what an earlier run pushed into the file's root, and answers an upload with 405.
#[test]
fn file_settings_take_effect() {
    let dir = Dir::new();
    // Read-only mode serves an existing data directory: an earlier run writes one.
    let writer = Server::start_with(Path::new(&dir.root()), &[]);
    let blob = push_blob(&mut writer.client(), "cfg/test", b"pushed before");
    assert!(writer.stop().success());
    let port = free_port();
    let cfg = dir.file(
        "ringyard.yaml",
        format!(
            "http:\n  listen: 127.0.0.1:{port}\n  workers: 2\nstorage:\n  root: {}\n  read_only: true\n",
            dir.root()
        ),
    );
    let s = Server::start_args(&["--config", &cfg]);
    assert_eq!(s.addr.port(), port, "the port of the file");
    let mut c = s.client();
    assert_eq!(c.get("/v2/").status, 200);
    let r = c.get(&format!("/v2/cfg/test/blobs/{blob}"));
    assert!(
        r.status == 200 && r.body == b"pushed before",
        "the root of the file"
    );
    let r = c.post("/v2/cfg/test/blobs/uploads/", &[], b"");
    assert_error(&r, 405, &["UNSUPPORTED"]);
    assert!(
        s.stderr().contains("ringyard.yaml"),
        "the log names the configuration file:\n{}",
        s.stderr()
    );
    assert!(s.stop().success());
}

/// `storage.max_manifest_size` from the file (with `serve` spelled out): a manifest over it
/// gets 413, one under it 201.
#[test]
fn file_max_manifest_size_gives_413() {
    let dir = Dir::new();
    let cfg = dir.file(
        "small.yaml",
        "storage:\n  max_manifest_size: 2KiB   # 2048 bytes\n",
    );
    let s = Server::start_args(&[
        "serve",
        "--config",
        &cfg,
        "--listen",
        "127.0.0.1:0",
        "--root",
        &dir.root(),
    ]);
    let r = put_manifest_of(s.addr, 2049);
    assert_eq!(r.status, 413, "2049 bytes over 2KiB: {:?}", r.text());
    let r = put_manifest_of(s.addr, 2048);
    assert_eq!(r.status, 201, "2048 bytes: {:?}", r.text());
    assert!(s.stop().success());
}

/// Flags take durations and sizes as the file does; plain numbers keep their old meaning.
#[test]
fn flags_take_units() {
    let dir = Dir::new();
    let s = Server::start_args(&[
        "--listen",
        "127.0.0.1:0",
        "--root",
        &dir.root(),
        "--workers",
        "1",
        "--max-manifest-bytes",
        "1KiB",
        "--upload-expiry",
        "1h30m",
        "--request-timeout",
        "90s",
        "--shutdown-grace",
        "0",
    ]);
    let r = put_manifest_of(s.addr, 1025);
    assert_eq!(r.status, 413, "{:?}", r.text());
    assert!(s.stop().success());
}

/// The environment overrides the file, and a flag overrides the environment.
#[test]
fn env_overrides_file_and_flag_overrides_env() {
    let dir = Dir::new();
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let cfg = dir.file(
        "ringyard.yaml",
        format!(
            "http:\n  listen: 127.0.0.1:{file_port}\n  workers: 1\nstorage:\n  root: {}\n  read_only: false\n",
            dir.root()
        ),
    );
    let env_listen = format!("127.0.0.1:{env_port}");
    let env = [
        ("RINGYARD_HTTP_LISTEN", env_listen.as_str()),
        ("RINGYARD_STORAGE_READ_ONLY", "true"),
    ];

    let file_only = EnvServer::start(&["--config", &cfg], &[]);
    assert_eq!(file_only.addr.port(), file_port);
    assert_eq!(
        upload_status(file_only.addr),
        202,
        "read_only: false in the file"
    );
    drop(file_only);

    let with_env = EnvServer::start(&["--config", &cfg], &env);
    assert_eq!(
        with_env.addr.port(),
        env_port,
        "RINGYARD_HTTP_LISTEN over the file"
    );
    assert_eq!(
        upload_status(with_env.addr),
        405,
        "RINGYARD_STORAGE_READ_ONLY=true over the file's false"
    );
    drop(with_env);

    let flag_listen = format!("127.0.0.1:{flag_port}");
    let with_flag = EnvServer::start(&["serve", "--config", &cfg, "--listen", &flag_listen], &env);
    assert_eq!(
        with_flag.addr.port(),
        flag_port,
        "--listen over the environment"
    );
    assert_eq!(
        upload_status(with_flag.addr),
        405,
        "the environment still applies"
    );
    drop(with_flag);

    // RINGYARD_CONFIG names the file when --config does not
    let by_env = EnvServer::start(&[], &[("RINGYARD_CONFIG", cfg.as_str())]);
    assert_eq!(by_env.addr.port(), file_port, "RINGYARD_CONFIG");
}

/// A valid configuration that cannot start (its port is taken) exits 1, not 2.
#[test]
fn start_failure_is_status_1_configuration_error_is_2() {
    let dir = Dir::new();
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let cfg = dir.file(
        "taken.yaml",
        format!(
            "http:\n  listen: {taken}\nstorage:\n  root: {}\n",
            dir.root()
        ),
    );
    let (st, _, stderr) = run(&["--config", &cfg], &[]);
    assert_eq!(st.code(), Some(1), "port in use: {st}\n{stderr}");
    assert!(stderr.contains(&taken.port().to_string()), "{stderr}");

    let bad = dir.file("bad.yaml", "http:\n  workers: lots\n");
    let (st, _, stderr) = run(&["--config", &bad], &[]);
    assert_config_error(st, &stderr, &["bad.yaml:2: http.workers"], "bad workers");
}

// ---------------------------------------------------------------------------------------------
// bad files, variables and flags

/// Each kind of mistake in a file gets its own message with the file, line and key, both from
/// `config check` and when serving.
#[test]
fn bad_files_name_key_and_line() {
    let dir = Dir::new();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown top-level key",
            "http:\n  listen: 127.0.0.1:0\nstorge:\n  root: /tmp/x\n",
            &["ringyard.yaml:3: storge: unknown section", "storage"],
        ),
        (
            "unknown nested key",
            "http:\n  listen: 127.0.0.1:0\n  timeouts:\n    head: 5s\n    haed: 5s\n",
            &["ringyard.yaml:5: http.timeouts.haed: unknown key", "http.timeouts.head"],
        ),
        (
            "string for a bool",
            "storage:\n  read_only: \"yes\"\n",
            &[
                "ringyard.yaml:2: storage.read_only: expected true or false, found the string \"yes\"",
            ],
        ),
        (
            "word for a bool",
            "storage:\n  delete: sometimes\n",
            &["ringyard.yaml:2: storage.delete: \"sometimes\" is not true or false"],
        ),
        (
            "mapping for a scalar",
            "http:\n  timeouts:\n    head:\n      seconds: 5\n",
            &["ringyard.yaml:3: http.timeouts.head: expected a duration", "found a mapping"],
        ),
        (
            "list for a scalar",
            "http:\n  listen: [a, b]\n",
            &["ringyard.yaml:2: http.listen: expected a HOST:PORT address, found a list"],
        ),
        (
            "scalar for a section",
            "log: debug\n",
            &["ringyard.yaml:1: log: expected a mapping of settings (level, format, access)"],
        ),
        (
            "bad duration",
            "http:\n  listen: localhost:5000\n\n  timeouts:\n    idle: 1m\n\n    head: 5x\n",
            &[r#"ringyard.yaml:7: http.timeouts.head: "5x" is not a duration (use 30s, 5m, 1h)"#],
        ),
        (
            "bad size",
            "storage:\n  max_manifest_size: 4XB\n",
            &[r#"ringyard.yaml:2: storage.max_manifest_size: "4XB" is not a size"#],
        ),
        (
            "zero timeout",
            "http:\n  timeouts:\n    body: 0s\n",
            &[r#"ringyard.yaml:3: http.timeouts.body: "0s" is zero"#],
        ),
        (
            "header size too small",
            "http:\n  max_header_size: 512\n",
            &[r#"ringyard.yaml:2: http.max_header_size: "512" is less than the minimum of 1KiB"#],
        ),
        (
            "header size too large",
            "http:\n  max_header_size: 2MiB\n",
            &[r#"ringyard.yaml:2: http.max_header_size: "2MiB" is more than the maximum of 1MiB"#],
        ),
        (
            "manifest size too small",
            "storage:\n  max_manifest_size: 100\n",
            &["ringyard.yaml:2: storage.max_manifest_size: \"100\" is less than the minimum of 1KiB"],
        ),
        (
            "too many workers",
            "http:\n  workers: 5000\n",
            &[r#"ringyard.yaml:2: http.workers: "5000" is more than the maximum of 1024"#],
        ),
        (
            "unparsable listen address",
            "http:\n  listen: localhost\n",
            &[r#"ringyard.yaml:2: http.listen: "localhost" is not HOST:PORT"#],
        ),
        (
            "no such log level",
            "log:\n  level: verbose\n",
            &[r#"ringyard.yaml:2: log.level: "verbose" is not a log level (use error, warn, info, debug)"#],
        ),
        (
            "not YAML",
            "http:\n  listen: [127.0.0.1:0\nstorage: {\n",
            &["ringyard.yaml:", "not valid YAML"],
        ),
        (
            "YAML but not a configuration",
            "Hello, this is a plain text note.\n",
            &["ringyard.yaml:1: not a ringyard configuration"],
        ),
        (
            "duplicate key",
            "http:\n  workers: 1\n  workers: 2\n",
            &[r#"ringyard.yaml:3: "workers" again (first on line 2)"#],
        ),
    ];
    for (what, text, wants) in cases {
        let sub = Dir::new();
        let path = sub.file("ringyard.yaml", text);
        let (st, out, stderr) = run(&["config", "check", &path], &[]);
        assert_config_error(st, &stderr, wants, &format!("config check, {what}"));
        assert!(!out.contains("ok"), "{what}: {out}");
        let (st, _, stderr) = run(&["serve", "--config", &path, "--root", &dir.root()], &[]);
        assert_config_error(st, &stderr, wants, &format!("serve, {what}"));
    }

    // every problem of a file at once, in line order
    let path = dir.file(
        "several.yaml",
        "http:\n  workers: many\n  bogus: 1\nlog:\n  format: xml\n",
    );
    let (st, _, stderr) = run(&["config", "check", &path], &[]);
    assert_config_error(
        st,
        &stderr,
        &["several.yaml:2:", "several.yaml:3:", "several.yaml:5:"],
        "three at once",
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");

    // not text at all
    let path = dir.file("binary.yaml", [0xff, 0xfe, 0x00, 0x9c, 0x80, 0x01]);
    let (st, _, stderr) = run(&["config", "check", &path], &[]);
    assert_config_error(st, &stderr, &["binary.yaml", "not UTF-8"], "binary file");

    // a missing file
    let missing = dir.0.path().join("nope.yaml");
    let missing = missing.to_str().unwrap();
    for args in [vec!["config", "check", missing], vec!["--config", missing]] {
        let (st, _, stderr) = run(&args, &[]);
        assert_config_error(
            st,
            &stderr,
            &[&format!(
                "{missing}: cannot read the configuration: no such file"
            )],
            "missing file",
        );
    }
}

/// A bad value in the environment names the variable; so does a variable that looks like a
/// setting but is none. Other RINGYARD_* variables are left alone.
#[test]
fn bad_env_names_the_variable() {
    let dir = Dir::new();
    let root = dir.root();
    let args = ["--listen", "127.0.0.1:0", "--root", &root];
    let (st, _, stderr) = run(&args, &[("RINGYARD_HTTP_TIMEOUTS_HEAD", "5x")]);
    assert_config_error(
        st,
        &stderr,
        &[r#"RINGYARD_HTTP_TIMEOUTS_HEAD: "5x" is not a duration (use 30s, 5m, 1h)"#],
        "bad env value",
    );
    let (st, _, stderr) = run(&args, &[("RINGYARD_STORAGE_READ_ONLY", "maybe")]);
    assert_config_error(
        st,
        &stderr,
        &[r#"RINGYARD_STORAGE_READ_ONLY: "maybe" is not true or false"#],
        "bad env bool",
    );
    let (st, _, stderr) = run(&args, &[("RINGYARD_STORAGE_ROOTDIR", "/tmp/x")]);
    assert_config_error(
        st,
        &stderr,
        &["RINGYARD_STORAGE_ROOTDIR: no such setting (did you mean RINGYARD_STORAGE_ROOT?)"],
        "typo in a variable name",
    );
    let (st, _, stderr) = run(&args, &[("RINGYARD_HTTP_LISTEN", "")]);
    assert_config_error(st, &stderr, &["RINGYARD_HTTP_LISTEN: \"\""], "empty listen");

    let good = dir.file("good.yaml", "http:\n  workers: 2\n");
    let (st, out, stderr) = run(
        &["config", "check", &good],
        &[("RINGYARD_DRIVER", "epoll"), ("RINGYARD_BENCH_DIR", "/tmp")],
    );
    assert!(st.success(), "{stderr}");
    assert_eq!(out.trim(), format!("{good}: ok"));
}

/// A bad flag value names the flag and exits 2; so does a conflict between a shortcut and the
/// flag it stands for.
#[test]
fn bad_flags_name_the_flag() {
    let dir = Dir::new();
    let root = dir.root();
    for (flag, value, want) in [
        (
            "--head-timeout",
            "5x",
            r#"--head-timeout: "5x" is not a duration"#,
        ),
        (
            "--max-header-size",
            "2MiB",
            r#"--max-header-size: "2MiB" is more than the maximum of 1MiB"#,
        ),
        (
            "--log-level",
            "loud",
            r#"--log-level: "loud" is not a log level"#,
        ),
        (
            "--log-format",
            "xml",
            r#"--log-format: "xml" is not a log format"#,
        ),
        (
            "--max-connections",
            "0",
            r#"--max-connections: "0" is less than the minimum of 1"#,
        ),
        (
            "--metrics-listen",
            "nowhere",
            r#"--metrics-listen: "nowhere" is not HOST:PORT"#,
        ),
        (
            "--workers",
            "2000",
            r#"--workers: "2000" is more than the maximum of 1024"#,
        ),
    ] {
        let (st, _, stderr) = run(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--root",
                &root,
                flag,
                value,
            ],
            &[],
        );
        assert_config_error(st, &stderr, &[want], flag);
    }
    let (st, _, stderr) = run(
        &[
            "--root",
            &root,
            "--request-timeout",
            "5s",
            "--head-timeout",
            "6s",
        ],
        &[],
    );
    assert_eq!(st.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--request-timeout") && stderr.contains("--head-timeout"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// config check, config defaults

#[test]
fn config_check_accepts_a_good_file() {
    let dir = Dir::new();
    let path = dir.file(
        "prod.yaml",
        "# a production-like file\nhttp:\n  listen: \"[::]:5000\"\n  workers: 0\n  timeouts:\n    head: 10s\n    idle: 1h30m\n    body: 500ms\n    shutdown_grace: 0\nstorage:\n  root: /var/lib/ringyard\n  delete: false\n  upload_expiry: 2d\n  max_manifest_size: 10MB\nlog:\n  level: warn\n  format: json\n  access: false\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:9090\n",
    );
    let (st, out, stderr) = run(&["config", "check", &path], &[]);
    assert!(st.success(), "{st}\n{stderr}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    assert_eq!(out.trim(), format!("{path}: ok"));

    // with variables, the line says which
    let (st, out, _) = run(
        &["config", "check", &path],
        &[("RINGYARD_LOG_LEVEL", "debug")],
    );
    assert!(st.success());
    assert!(
        out.contains("ok") && out.contains("RINGYARD_LOG_LEVEL"),
        "{out}"
    );

    // an empty file is the defaults
    let empty = dir.file("empty.yaml", "");
    let (st, out, _) = run(&["config", "check", &empty], &[]);
    assert!(st.success(), "{out}");
}

/// `config defaults` prints every key and variable, passes `config check`, and serves.
#[test]
fn config_defaults_is_complete_and_valid() {
    let (st, defaults, stderr) = run(&["config", "defaults"], &[]);
    assert!(st.success(), "{stderr}");
    for key in KEYS {
        let leaf = key.rsplit('.').next().unwrap();
        assert!(
            defaults
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{leaf}:"))),
            "{key} missing:\n{defaults}"
        );
        let env = format!("RINGYARD_{}", key.replace('.', "_").to_uppercase());
        assert!(defaults.contains(&env), "{env} missing:\n{defaults}");
    }
    for section in ["http:", "  timeouts:", "storage:", "log:", "metrics:"] {
        assert!(defaults.lines().any(|l| l == section), "{section}");
    }
    for value in [
        "listen: localhost:5000",
        "workers: 0",
        "max_header_size: 64KiB",
        "max_manifest_size: 4MiB",
        "upload_expiry: 1h",
        "level: info",
    ] {
        assert!(defaults.contains(value), "{value}:\n{defaults}");
    }

    let dir = Dir::new();
    let path = dir.file("defaults.yaml", &defaults);
    let (st, out, stderr) = run(&["config", "check", &path], &[]);
    assert!(st.success(), "config check of the defaults: {stderr}");
    assert_eq!(out.trim(), format!("{path}: ok"));

    let s = Server::start_args(&[
        "--config",
        &path,
        "--listen",
        "127.0.0.1:0",
        "--root",
        &dir.root(),
    ]);
    assert_eq!(s.client().get("/v2/").status, 200);
    assert!(s.stop().success());
}

/// `ringyard --help` still lists the serve flags, with the new ones and `config`.
#[test]
fn help_lists_new_flags_and_commands() {
    let (st, out, _) = run(&["--help"], &[]);
    assert!(st.success());
    for word in [
        "config",
        "--config",
        "--read-only",
        "--log-level",
        "--log-format",
        "--max-connections",
        "--metrics-listen",
        "--head-timeout",
        "--body-timeout",
        "--request-timeout",
        "--quiet",
        "RINGYARD_HTTP_LISTEN",
    ] {
        assert!(out.contains(word), "--help lacks {word}:\n{out}");
    }
    let (st, out, _) = run(&["config", "--help"], &[]);
    assert!(st.success());
    assert!(out.contains("check") && out.contains("defaults"), "{out}");
}
