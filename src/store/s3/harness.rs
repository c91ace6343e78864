//! Real S3 servers for the unit tests: s3s-fs (a directory behind SigV4 checks) and moto (in
//! memory), each started on a free 127.0.0.1 port in a temp dir with a bucket made first, and
//! stopped by its PID when dropped. Two servers, so that the backend is not tuned to one
//! server's quirks. A missing binary fails the test with how to install it (`.ci/run` does).

use super::{S3Backend, S3Config};
use rusty_s3::S3Action;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use url::Url;

const BUCKET: &str = "ringyard-test";
const ACCESS_KEY: &str = "ringyard";
const SECRET_KEY: &str = "ringyard-secret";

/// Runs `f` on a monoio loop like the server's (io_uring where available, timers on).
pub fn run<F: std::future::Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("a monoio runtime")
        .block_on(async {
            let out = f.await;
            super::conn::close_idle();
            out
        })
}

pub struct S3Server {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

/// The binary named by `$var`, or `name` on the PATH or in ~/.cargo/bin; panics with how to
/// install it.
fn find(var: &str, name: &str, install: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "${var} names {p:?}, which is not a file");
        return p;
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed (nor named by ${var}): these tests need a real S3 server; install it with `{install}` (.ci/run does)")
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl S3Server {
    /// s3s-fs over a temp dir; its bucket is a directory made before it starts.
    pub fn s3s_fs() -> S3Server {
        let bin = find(
            "RINGYARD_S3S_FS",
            "s3s-fs",
            "cargo install s3s-fs@0.14.1 --features binary --locked",
        );
        let dir = tempfile::Builder::new()
            .prefix("ringyard-s3s-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting s3s-fs");
        S3Server::started(child, port, dir)
    }

    /// moto's server (in memory, any credentials); the bucket is made over S3 once it is up.
    pub fn moto() -> S3Server {
        let bin = find(
            "RINGYARD_MOTO_SERVER",
            "moto_server",
            "pip install 'moto[server]'",
        );
        let dir = tempfile::Builder::new()
            .prefix("ringyard-moto-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let server = S3Server::started(child, port, dir);
        server.create_bucket();
        server
    }

    fn started(mut child: Child, port: u16, dir: tempfile::TempDir) -> S3Server {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the S3 server exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the S3 server did not listen on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    pub fn config(&self, prefix: &str) -> S3Config {
        S3Config {
            bucket: BUCKET.into(),
            region: "us-east-1".into(),
            endpoint: self.endpoint.clone(),
            path_style: true,
            prefix: prefix.into(),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            timeouts: super::Timeouts::default(),
            retry: super::Retry::default(),
            ca_file: None,
        }
    }

    fn create_bucket(&self) {
        let backend = S3Backend::new(&self.config("")).unwrap();
        let url = backend
            .bucket
            .create_bucket(&backend.credentials)
            .sign(super::SIGNED_FOR);
        run(backend.call_for_body("create bucket", "PUT", &url, Some(b"")))
            .expect("creating the test bucket");
    }

    /// moto's ListMultipartUploads answer for the bucket, unsigned (moto does not check
    /// signatures, and rusty-s3 has no such action).
    pub async fn multipart_uploads(&self) -> String {
        let url = Url::parse(&format!("{}/{BUCKET}?uploads", self.endpoint)).unwrap();
        let backend = S3Backend::new(&self.config("")).unwrap();
        let (_, body) = backend
            .call_for_body("list multipart uploads", "GET", &url, None)
            .await
            .expect("listing multipart uploads");
        String::from_utf8_lossy(&body).into_owned()
    }

    /// The backend suite against this server, objects under `prefix`.
    pub fn run_suite(&self, prefix: &str) {
        let backend = S3Backend::new(&self.config(prefix)).unwrap();
        let staging = tempfile::Builder::new()
            .prefix("ringyard-s3-staging-")
            .tempdir()
            .unwrap();
        run(crate::store::backend::suite(&backend, staging.path()));
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // By PID: other tests and helpers run the same binaries.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
