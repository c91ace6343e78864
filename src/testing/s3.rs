//! Real S3 servers: s3s-fs (a directory behind SigV4 checks) and moto (in memory), each
//! started on a free 127.0.0.1 port in a temp dir with a bucket made first, and stopped by its
//! PID when dropped. Two servers, so that the backend is not tuned to one server's quirks.

use super::{find_program, free_port, wait_for_port, TempDir};
use crate::store::s3::{S3Backend, S3Config};
use std::process::{Child, Command, Stdio};
use url::Url;

pub const BUCKET: &str = "ringyard-test";
pub const ACCESS_KEY: &str = "ringyard";
pub const SECRET_KEY: &str = "ringyard-secret";

/// Runs `f` on a monoio loop like the server's (io_uring where available, timers on).
pub fn run<F: std::future::Future>(f: F) -> F::Output {
    crate::store::s3::check::on_own_loop(f).expect("a monoio runtime")
}

pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Where s3s-fs keeps its buckets (one directory each).
    dir: TempDir,
}

impl S3Server {
    /// s3s-fs over a temp dir; its bucket [`BUCKET`] is a directory made before it starts.
    pub fn s3s_fs() -> S3Server {
        Self::try_s3s_fs().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_s3s_fs() -> Result<S3Server, String> {
        let bin = find_program(
            "RINGYARD_S3S_FS",
            "s3s-fs",
            &[],
            "cargo install s3s-fs@0.14.1 --features binary --locked",
        )?;
        let dir = TempDir::new("ringyard-s3s")?;
        std::fs::create_dir(dir.path().join(BUCKET)).map_err(|e| e.to_string())?;
        let port = free_port()?;
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting s3s-fs: {e}"))?;
        S3Server::started(child, port, dir)
    }

    /// moto's server (in memory, any credentials); the bucket is made over S3 once it is up.
    pub fn moto() -> S3Server {
        let bin = find_program(
            "RINGYARD_MOTO_SERVER",
            "moto_server",
            &[],
            "pip install 'moto[server]'",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let dir = TempDir::new("ringyard-moto").unwrap_or_else(|e| panic!("{e}"));
        let port = free_port().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let server = S3Server::started(child, port, dir).unwrap_or_else(|e| panic!("{e}"));
        let backend = S3Backend::new(&server.config("")).unwrap();
        run(backend.create_bucket()).expect("creating the test bucket");
        server
    }

    fn started(mut child: Child, port: u16, dir: TempDir) -> Result<S3Server, String> {
        let up = wait_for_port(port, "the S3 server", || {
            child.try_wait().ok().flatten().map(|s| s.to_string())
        });
        if let Err(e) = up {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            dir,
        })
    }

    /// An s3s-fs bucket's directory (its objects are files there).
    pub fn bucket_dir(&self) -> std::path::PathBuf {
        self.dir.path().join(BUCKET)
    }

    pub(crate) fn config(&self, prefix: &str) -> S3Config {
        S3Config {
            bucket: BUCKET.into(),
            region: "us-east-1".into(),
            endpoint: self.endpoint.clone(),
            path_style: true,
            prefix: prefix.into(),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            session_token: None,
            timeouts: crate::store::s3::Timeouts::default(),
            retry: crate::store::s3::Retry::default(),
            ca_file: None,
            public_endpoint: None,
        }
    }

    /// The bytes of the blob `digest` in the bucket under `prefix` (wherever its key points),
    /// None when the bucket does not hold it: read from S3 itself, not through a node.
    pub fn blob(&self, prefix: &str, digest: &str) -> Option<Vec<u8>> {
        use crate::store::backend::BlobBackend;
        let digest = crate::oci::digest::Digest::parse(digest).expect("a digest");
        let backend = S3Backend::new(&self.config(prefix)).unwrap();
        run(async {
            let mut read = match backend.open(&digest).await {
                Ok((_, read)) => read,
                Err(crate::store::Error::NotFound) => return None,
                Err(e) => panic!("GET {digest}: {e}"),
            };
            let mut got = Vec::new();
            while let Some(piece) = read.next().await.expect("GET piece") {
                got.extend_from_slice(&piece);
            }
            Some(got)
        })
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
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // By PID: other tests and helpers run the same binaries.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
