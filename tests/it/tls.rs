//! TLS against the real binary with real clients: certificates made by `openssl` at test time
//! (a CA and a server certificate for `localhost` and 127.0.0.1, EC and RSA keys), checked with
//! curl (`--cacert`, TLS 1.2 and 1.3 forced, ALPN) and skopeo (`--src-cert-dir` /
//! `--dest-cert-dir`, verification on): pushes and pulls of blobs and manifests, a large blob
//! whose digest is verified with the server's memory bounded, a certificate replaced while a
//! download runs, mutual TLS, the refusals at start, and plain HTTP sent to the TLS port.
//!
//! Needs: openssl, curl, skopeo (`.ci/run` installs them).

use crate::common::*;
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// Starts ringyard with TLS from `cert` and `key` (and `extra` flags).
fn start_tls(pki: &Pki, cert: &str, key: &str, extra: &[&str]) -> Server {
    let (cert, key) = (pki.s(cert), pki.s(key));
    let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
    args.extend_from_slice(extra);
    let s = Server::start_in_temp(&args);
    assert!(
        s.stderr().contains("with TLS (certificate"),
        "the listening line says TLS:\n{}",
        s.stderr()
    );
    s
}

// ---------------------------------------------------------------------------------------------
// curl

/// curl against a TLS server trusting `ca`.
struct Curl {
    base: String,
    ca: PathBuf,
}

impl Curl {
    fn new(server: &Server, pki: &Pki, ca: &str) -> Curl {
        Curl {
            base: format!("https://127.0.0.1:{}", server.addr.port()),
            ca: pki.path(&format!("{ca}.crt")),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "120", "--cacert"])
            .arg(&self.ca)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Runs curl with `args` (a `{base}` in them is the server's https URL).
    fn run(&self, args: &[&str]) -> Output {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{base}", &self.base))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.command(&args).output().expect("run curl")
    }

    /// Status and body of a request; panics if curl itself fails.
    #[track_caller]
    fn request(&self, args: &[&str]) -> (u16, Vec<u8>) {
        let mut all = vec!["-w", "\n%{http_code}"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "curl {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = out.stdout;
        let cut = text.iter().rposition(|&b| b == b'\n').unwrap();
        let status = std::str::from_utf8(&text[cut + 1..])
            .unwrap()
            .parse()
            .unwrap();
        (status, text[..cut].to_vec())
    }

    /// Pushes `bytes` to `repo` by a monolithic POST; returns the digest.
    #[track_caller]
    fn push_bytes(&self, repo: &str, bytes: &[u8], dir: &Path) -> String {
        let digest = sha256_digest(bytes);
        let file = dir.join(digest.replace(':', "-"));
        std::fs::write(&file, bytes).unwrap();
        self.push_file(repo, &file, &digest);
        digest
    }

    /// Pushes the file as the blob `digest`: a session opened by POST, then one PUT that
    /// curl streams from the file.
    #[track_caller]
    fn push_file(&self, repo: &str, file: &Path, digest: &str) {
        let out = self.run(&[
            "-X",
            "POST",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &self.url(&format!("/v2/{repo}/blobs/uploads/")),
        ]);
        let head = String::from_utf8_lossy(&out.stdout);
        assert!(head.starts_with("HTTP/1.1 202"), "POST upload: {head}");
        let location = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("location").then(|| value.trim())
            })
            .expect("a Location");
        let target = with_query(&location_path(location), &format!("digest={digest}"));
        let (status, body) = self.request(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "-T",
            file.to_str().unwrap(),
            &self.url(&target),
        ]);
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    }
}

/// Writes `len` generator bytes for `seed` to `path`; their digest.
fn generated_file(path: &Path, seed: u64, len: u64) -> String {
    let mut h = Sha256::new();
    let mut w = BufWriter::new(File::create(path).unwrap());
    send_generated(&mut w, seed, 0, len, &mut h);
    w.flush().unwrap();
    finish_digest(h)
}

fn file_digest(path: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        match f.read(&mut buf).unwrap() {
            0 => break,
            n => h.update(&buf[..n]),
        }
    }
    finish_digest(h)
}

#[track_caller]
fn assert_no_panic(server: &Server) {
    let log = server.stderr();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

/// Waits up to `limit` for `cond`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

// ---------------------------------------------------------------------------------------------
// tests

#[test]
fn tls_1_2_and_1_3_with_alpn_http_1_1_and_verification() {
    let pki = Pki::standard();
    let server = start_tls(&pki, "server.crt", "server.key", &[]);
    let curl = Curl::new(&server, &pki, "ca");
    for (force, version) in [
        (&["--tlsv1.2", "--tls-max", "1.2"][..], "TLSv1.2"),
        (&["--tlsv1.3"][..], "TLSv1.3"),
    ] {
        let mut args = vec!["-v", "-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(force);
        args.push("{base}/v2/");
        let out = curl.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{version}: {err}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{version}");
        assert!(
            err.contains(&format!("SSL connection using {version}")),
            "{version} negotiated: {err}"
        );
        assert!(
            err.contains("ALPN: server accepted http/1.1"),
            "ALPN http/1.1 with {version}: {err}"
        );
        assert!(err.contains("SSL certificate verify ok"), "{err}");
    }
    // Also by name, and keep-alive: two requests on one connection (curl says it reused it).
    let port = server.addr.port();
    let out = curl.run(&[
        "-v",
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        &format!("https://localhost:{port}/v2/"),
        &format!("https://localhost:{port}/v2/_catalog"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Re-using existing connection"), "{err}");
    // A client that does not trust the CA stops at the certificate (curl's exit 60).
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .arg(curl.url("/v2/"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(60), "{:?}", out);
    // A client offering only h2 is refused in the handshake, not misunderstood after it.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-alpn",
            "h2",
        ])
        .arg("-CAfile")
        .arg(pki.path("ca.crt"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("no application protocol"), "{text}");
    assert_no_panic(&server);
}

#[test]
fn plain_http_and_garbage_on_the_tls_port_are_refused() {
    let pki = Pki::standard();
    let server = start_tls(&pki, "server.crt", "server.key", &[]);
    // Plain HTTP: a 400 saying why, in the spec's error shape, then the connection closes.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains("plain HTTP request to the TLS port"),
        "{answer}"
    );
    assert!(answer.contains("use https://"), "{answer}");
    // Neither HTTP nor TLS: closed, promptly.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    s.write_all(&[0x00, 0x01, 0x02, 0x03, 0xff, 0xfe, 0x10, 0x20, 0x30, 0x40])
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(rest.len() < 64, "at most an alert: {rest:?}");
    // A client that connects and leaves mid-handshake changes nothing either.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x40, 0x01]).unwrap();
    drop(s);
    let curl = Curl::new(&server, &pki, "ca");
    assert_eq!(curl.request(&["{base}/v2/"]).0, 200);
    assert_no_panic(&server);
}

#[test]
fn push_and_pull_blobs_and_manifests_over_tls_with_curl_and_skopeo() {
    require_tool("skopeo");
    let pki = Pki::standard();
    let server = start_tls(&pki, "server.crt", "server.key", &[]);
    let curl = Curl::new(&server, &pki, "ca");
    let work = tempfile::tempdir().unwrap();
    let layer = pseudo_random(3 * MIB as usize + 17, 7);
    let layer_digest = curl.push_bytes("tls/app", &layer, work.path());
    let config = image_config(std::slice::from_ref(&layer_digest));
    let config_digest = curl.push_bytes("tls/app", &config, work.path());
    let manifest = image_manifest(
        &(config_digest, config.len()),
        &[(layer_digest.clone(), layer.len())],
    );
    let manifest_file = work.path().join("manifest.json");
    std::fs::write(&manifest_file, &manifest).unwrap();
    let (status, body) = curl.request(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {OCI_MANIFEST}"),
        "--data-binary",
        &format!("@{}", manifest_file.display()),
        "{base}/v2/tls/app/manifests/1",
    ]);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    // Pulled back over TLS, byte for byte.
    let (status, got) = curl.request(&[
        "-H",
        &format!("Accept: {OCI_MANIFEST}"),
        "{base}/v2/tls/app/manifests/1",
    ]);
    assert_eq!((status, got), (200, manifest.clone()));
    let (status, got) = curl.request(&[&format!("{{base}}/v2/tls/app/blobs/{layer_digest}")]);
    assert_eq!(status, 200);
    assert_eq!(sha256_digest(&got), layer_digest);
    // A range of it (the TLS file send from an offset).
    let (status, got) = curl.request(&[
        "-r",
        "1000000-2000000",
        &format!("{{base}}/v2/tls/app/blobs/{layer_digest}"),
    ]);
    assert_eq!(status, 206);
    assert_eq!(got, &layer[1_000_000..=2_000_000]);

    // skopeo pulls the image and pushes it to another repository, verifying the certificate
    // against the CA in its cert dir.
    let certs = pki.cert_dir("ca");
    let host = format!("127.0.0.1:{}", server.addr.port());
    let src = format!("docker://{host}/tls/app:1");
    let dst = format!("docker://{host}/tls/copy:1");
    let skopeo = |args: &[&str]| {
        Command::new("skopeo")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run skopeo")
    };
    let cert_dir = certs.to_str().unwrap();
    let out = skopeo(&[
        "copy",
        "--src-cert-dir",
        cert_dir,
        "--dest-cert-dir",
        cert_dir,
        &src,
        &dst,
    ]);
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // skopeo's pull is byte for byte; its push is what it made of the image (it gzips a layer
    // that is not), every blob of which the registry serves under its digest.
    let out = skopeo(&["inspect", "--raw", "--cert-dir", cert_dir, &src]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, manifest, "skopeo pulled the manifest as pushed");
    let out = skopeo(&["inspect", "--raw", "--cert-dir", cert_dir, &dst]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copied: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut blobs = vec![copied["config"]["digest"].as_str().unwrap().to_string()];
    for l in copied["layers"].as_array().unwrap() {
        blobs.push(l["digest"].as_str().unwrap().to_string());
    }
    for d in blobs {
        let (status, got) = curl.request(&[&format!("{{base}}/v2/tls/copy/blobs/{d}")]);
        assert_eq!(status, 200);
        assert_eq!(sha256_digest(&got), d);
    }
    // Without the CA, skopeo refuses the server (verification is on by default).
    let out = skopeo(&["inspect", "--raw", &src]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
    assert_no_panic(&server);
}

/// Peak resident memory of a process, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_large_blob_over_tls_arrives_whole_with_the_servers_memory_bounded() {
    let pki = Pki::standard();
    let server = start_tls(&pki, "server.crt", "server.key", &[]);
    let curl = Curl::new(&server, &pki, "ca");
    let work = tempfile::tempdir().unwrap();
    let len = 256 * MIB + 5;
    let source = work.path().join("big");
    let digest = generated_file(&source, 11, len);
    curl.push_file("tls/big", &source, &digest);
    std::fs::remove_file(&source).unwrap();
    let out = work.path().join("out");
    let (status, _) = curl.request(&[
        "-o",
        out.to_str().unwrap(),
        &format!("{{base}}/v2/tls/big/blobs/{digest}"),
    ]);
    assert_eq!(status, 200);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), len);
    assert_eq!(file_digest(&out), digest);
    // One read buffer and the records of one write per download, not the blob.
    let peak = peak_rss_kib(server.pid());
    assert!(peak < 64 * 1024, "server peak RSS {peak} KiB");
    assert_no_panic(&server);
}

#[test]
fn certificate_replaced_during_a_download_the_download_completes_new_connections_get_it() {
    let pki = Pki::standard();
    pki.ca("ca2");
    pki.leaf("server2", "ca2", Use::Server, true, 2002);
    // The files the server watches, replaced by rename as renewal tools do.
    let live_cert = pki.path("live.crt");
    let live_key = pki.path("live.key");
    std::fs::copy(pki.path("server.crt"), &live_cert).unwrap();
    std::fs::copy(pki.path("server.key"), &live_key).unwrap();
    let server = start_tls(&pki, "live.crt", "live.key", &[]);
    let old = Curl::new(&server, &pki, "ca");
    let new = Curl::new(&server, &pki, "ca2");
    assert_eq!(old.request(&["{base}/v2/"]).0, 200);
    assert_eq!(
        new.run(&["{base}/v2/"]).status.code(),
        Some(60),
        "not the new CA yet"
    );

    let work = tempfile::tempdir().unwrap();
    let len = 200 * MIB;
    let source = work.path().join("big");
    let digest = generated_file(&source, 12, len);
    old.push_file("tls/reload", &source, &digest);
    std::fs::remove_file(&source).unwrap();
    // A download slow enough (about 10 s) to span the reload.
    let out = work.path().join("out");
    let mut download = old
        .command(&[
            "--limit-rate",
            "20M",
            "-o",
            out.to_str().unwrap(),
            "-w",
            "%{http_code}",
            &old.url(&format!("/v2/tls/reload/blobs/{digest}")),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 4 * MIB)
    }));

    pki.install("server2.key", &live_key);
    pki.install("server2.crt", &live_cert);
    let switched = eventually(Duration::from_secs(15), || {
        new.run(&["-o", "/dev/null", "{base}/v2/"]).status.success()
    });
    assert!(
        switched,
        "new connections never got the new certificate:\n{}",
        server.stderr()
    );
    assert!(server
        .stderr()
        .contains("reloaded; new connections use them"));
    assert_eq!(
        old.run(&["{base}/v2/"]).status.code(),
        Some(60),
        "new connections no longer present the old certificate"
    );
    assert!(
        download.try_wait().unwrap().is_none(),
        "the download was still running across the reload"
    );
    let done = download.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&done.stdout), "200");
    assert_eq!(file_digest(&out), digest, "the download completed intact");

    // A key that does not belong to the certificate is not taken: a warning, and the pair
    // loaded before goes on serving.
    pki.install("server.key", &live_key);
    assert!(
        eventually(Duration::from_secs(15), || server
            .stderr()
            .contains("TLS files changed but cannot be used")),
        "{}",
        server.stderr()
    );
    assert!(server
        .stderr()
        .contains("does not belong to the certificate"));
    assert_eq!(new.request(&["{base}/v2/"]).0, 200);
    assert_no_panic(&server);
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let pki = Pki::standard();
    pki.ca("clients");
    pki.leaf("alice", "clients", Use::Client, false, 3001);
    pki.ca("strangers");
    pki.leaf("mallory", "strangers", Use::Client, false, 4001);
    let client_ca = pki.s("clients.crt");
    let server = start_tls(
        &pki,
        "server.crt",
        "server.key",
        &["--tls-client-ca", &client_ca],
    );
    assert!(server.stderr().contains("client certificates from"));
    let curl = Curl::new(&server, &pki, "ca");
    for (force, version) in [
        (&["--tlsv1.3"][..], "TLS 1.3"),
        (&["--tlsv1.2", "--tls-max", "1.2"][..], "TLS 1.2"),
    ] {
        let with = |extra: &[&str]| {
            let mut args = force.to_vec();
            args.extend_from_slice(extra);
            args.extend_from_slice(&["-o", "/dev/null", "-w", "%{http_code}", "{base}/v2/"]);
            curl.run(&args)
        };
        let none = with(&[]);
        assert!(
            !none.status.success(),
            "{version}: no client certificate is refused"
        );
        assert_ne!(String::from_utf8_lossy(&none.stdout), "200");
        let (alice_crt, alice_key) = (pki.s("alice.crt"), pki.s("alice.key"));
        let alice = with(&["--cert", &alice_crt, "--key", &alice_key]);
        assert!(
            alice.status.success(),
            "{}",
            String::from_utf8_lossy(&alice.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&alice.stdout), "200");
        let (m_crt, m_key) = (pki.s("mallory.crt"), pki.s("mallory.key"));
        let mallory = with(&["--cert", &m_crt, "--key", &m_key]);
        assert!(
            !mallory.status.success(),
            "{version}: another CA's client is refused"
        );
    }
    assert_no_panic(&server);
}

#[test]
fn unusable_certificate_files_are_refused_at_start_naming_the_file() {
    let pki = Pki::standard();
    pki.ca("otherca");
    pki.leaf("other", "otherca", Use::Server, false, 5001);
    let root = tempfile::tempdir().unwrap();
    let root_s = root.path().join("root");
    let start = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--root",
            root_s.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        match Server::try_start(&args) {
            Ok(_) => panic!("started with {extra:?}"),
            Err((status, stderr)) => (status.code(), stderr),
        }
    };
    let (cert, key, other_key) = (pki.s("server.crt"), pki.s("server.key"), pki.s("other.key"));
    let (code, err) = start(&["--tls-cert", &cert, "--tls-key", &other_key]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "the TLS key {other_key} does not belong to the certificate {cert}"
        )),
        "{err}"
    );
    let missing = pki.s("missing.key");
    let (code, err) = start(&["--tls-cert", &cert, "--tls-key", &missing]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("cannot read the TLS key {missing}")),
        "{err}"
    );
    let (code, err) = start(&["--tls-cert", &key, "--tls-key", &key]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "the TLS certificate file {key} holds no certificate"
        )),
        "{err}"
    );
    // Half a pair is a configuration mistake (exit 2), found before anything starts.
    let (code, err) = start(&["--tls-cert", &cert]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--tls-cert: a certificate needs its private key"),
        "{err}"
    );
    assert!(!root_s.exists(), "nothing was created");
}
