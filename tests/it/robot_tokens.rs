//! Robot tokens against the real binary: `ringyard token create|list|revoke` on a data
//! directory (before the server starts and while it runs), the secret as the password of
//! Basic credentials, its scopes as its only rules (push and pull inside them, 403 `DENIED`
//! outside, the catalog limited to them), expired and wrong secrets answered 401, a
//! revocation made by the command seen by the running server within a bounded wait, and
//! the secret in neither `token list` nor the server's log.

use crate::common::*;
use base64::Engine as _;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ringyard");

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

/// `ringyard token ARGS --root ROOT`: (exit success, stdout, stderr).
fn token(root: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("token")
        .args(args)
        .args(["--root", root.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A new token's secret, which `token create` prints alone on standard output.
fn create(root: &Path, name: &str, scopes: &[&str], expires: &str) -> String {
    let mut args = vec!["create", "--name", name, "--expires", expires];
    for s in scopes {
        args.extend_from_slice(&["--scope", s]);
    }
    let (ok, out, err) = token(root, &args);
    assert!(ok, "token create {name}: {out}{err}");
    let secret = out.trim().to_string();
    assert!(secret.starts_with("ryt_") && secret.len() == 47, "{out}");
    secret
}

fn request(c: &mut Client, method: &str, path: &str, auth: &str, body: &[u8]) -> Response {
    let ctype = if path.contains("/manifests/") {
        OCI_MANIFEST
    } else {
        "application/octet-stream"
    };
    c.request(
        method,
        path,
        &[("Authorization", auth), ("Content-Type", ctype)],
        body,
    )
}

/// Pushes a one-layer image as `auth`; the status of the first refused step, or of the
/// manifest PUT.
fn push(c: &mut Client, auth: &str, repo: &str, tag: &str, layer: &[u8]) -> Response {
    let ld = sha256_digest(layer);
    let config = image_config(std::slice::from_ref(&ld));
    let cd = sha256_digest(&config);
    for (digest, bytes) in [(&ld, layer), (&cd, &config[..])] {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
        let r = request(c, "POST", &path, auth, bytes);
        if r.status != 201 {
            return r;
        }
    }
    let manifest = image_manifest(&(cd, config.len()), &[(ld, layer.len())]);
    request(
        c,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        auth,
        &manifest,
    )
}

#[test]
fn robot_tokens_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let users = dir.path().join("htpasswd");
    let mut add = Command::new(BIN)
        .args([
            "htpasswd",
            "add",
            users.to_str().unwrap(),
            "admin",
            "--cost",
            "4",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(b"secret\n").unwrap();
    assert!(add.wait().unwrap().success());

    // Made before the server starts, on a data directory that did not exist.
    let ci = create(
        &root,
        "ci-builder",
        &["repository:ci/*:pull,push", "repository:base/**:pull"],
        "30d",
    );
    let expired = create(&root, "old", &["repository:ci/*:pull,push"], "1ms");
    let (ok, _, err) = token(
        &root,
        &["create", "--name", "bad", "--scope", "repository:ci/*:fly"],
    );
    assert!(!ok && err.contains("fly"), "{err}");
    let (ok, _, err) = token(
        &root,
        &[
            "create",
            "--name",
            "ci-builder",
            "--scope",
            "repository:x:pull",
        ],
    );
    assert!(
        !ok && err.contains("revoke"),
        "a live name is not taken twice: {err}"
    );

    let server = Server::start_with(
        &root,
        &[
            "--htpasswd",
            users.to_str().unwrap(),
            "--auth-fail-delay",
            "0",
        ],
    );
    let mut c = server.client();
    let admin = basic("admin", "secret");
    let robot = basic("ci-builder", &ci);
    assert_status(&push(&mut c, &admin, "team/app", "1", b"team layer"), 201);
    assert_status(&push(&mut c, &admin, "base/debian/12", "1", b"base"), 201);

    // Within its scopes: push, pull, the base of the API.
    assert_status(&request(&mut c, "GET", "/v2/", &robot, b""), 200);
    assert_status(&push(&mut c, &robot, "ci/app", "1", b"ci layer"), 201);
    assert_status(
        &request(&mut c, "GET", "/v2/ci/app/manifests/1", &robot, b""),
        200,
    );
    assert_status(
        &request(&mut c, "GET", "/v2/base/debian/12/manifests/1", &robot, b""),
        200,
    );
    // Outside: 403 DENIED, and nothing stored.
    let denied = push(&mut c, &robot, "team/app", "2", b"intruder");
    assert_error(&denied, 403, &["DENIED"]);
    assert_error(
        &push(&mut c, &robot, "ci/app/deep", "1", b"x"),
        403,
        &["DENIED"],
    );
    assert_error(
        &push(&mut c, &robot, "base/debian/12", "2", b"x"),
        403,
        &["DENIED"],
    );
    assert_error(
        &request(&mut c, "GET", "/v2/team/app/manifests/1", &robot, b""),
        403,
        &["DENIED"],
    );
    assert_error(
        &request(&mut c, "DELETE", "/v2/ci/app/manifests/1", &robot, b""),
        403,
        &["DENIED"],
    );
    assert_status(
        &request(&mut c, "GET", "/v2/team/app/tags/list", &admin, b""),
        200,
    );
    let tags = request(&mut c, "GET", "/v2/team/app/tags/list", &admin, b"").json();
    assert_eq!(
        tags["tags"],
        serde_json::json!(["1"]),
        "the refused push stored nothing"
    );
    // The catalog shows only what the token may pull.
    let catalog = request(&mut c, "GET", "/v2/_catalog", &robot, b"");
    assert_status(&catalog, 200);
    assert_eq!(
        catalog.json()["repositories"],
        serde_json::json!(["base/debian/12", "ci/app"])
    );

    // Expired, wrong, or a robot secret for another name: 401.
    let unauthorized = |c: &mut Client, auth: &str| {
        assert_error(
            &request(c, "GET", "/v2/ci/app/manifests/1", auth, b""),
            401,
            &["UNAUTHORIZED"],
        );
    };
    unauthorized(&mut c, &basic("old", &expired));
    let mut wrong = ci.clone();
    wrong.replace_range(10..11, if &ci[10..11] == "A" { "B" } else { "A" });
    unauthorized(&mut c, &basic("ci-builder", &wrong));
    unauthorized(&mut c, &basic("admin", &ci));
    unauthorized(&mut c, &basic("nobody", &ci));

    // Made while the server runs: usable within a bounded wait.
    let late = create(&root, "late", &["repository:ci/*:pull"], "1h");
    let late_auth = basic("late", &late);
    let waited = poll_status(&mut c, &late_auth, 200);
    eprintln!("a token created by the command was accepted after {waited:?}");

    // `token list`: every token and its state, no secret.
    let (ok, listed, _) = token(&root, &["list"]);
    assert!(ok);
    for secret in [&ci, &expired, &late] {
        assert!(!listed.contains(secret.as_str()), "{listed}");
    }
    let line = |name: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {listed}"))
            .to_string()
    };
    assert!(line("ci-builder").contains("active"), "{listed}");
    assert!(
        line("ci-builder").contains("repository:base/**:pull"),
        "{listed}"
    );
    assert!(line("old").contains("expired"), "{listed}");

    // Revoked by the command while the server runs: refused within a bounded wait.
    let started = Instant::now();
    let (ok, _, err) = token(&root, &["revoke", "ci-builder"]);
    assert!(ok, "{err}");
    let waited = poll_status(&mut c, &robot, 401);
    eprintln!(
        "a revocation by the command was seen after {waited:?} ({:?} with the command)",
        started.elapsed()
    );
    let (ok, listed, _) = token(&root, &["list"]);
    assert!(ok && listed.contains("revoked"), "{listed}");
    let (ok, _, err) = token(&root, &["revoke", "ci-builder"]);
    assert!(!ok && err.contains("no active"), "{err}");
    // Others go on.
    assert_status(
        &request(&mut c, "GET", "/v2/ci/app/manifests/1", &late_auth, b""),
        200,
    );
    assert_status(
        &request(&mut c, "GET", "/v2/ci/app/manifests/1", &admin, b""),
        200,
    );

    let log = server.stderr();
    for secret in [&ci, &expired, &late] {
        assert!(!log.contains(secret.as_str()), "a secret in the log");
        assert!(!log.contains(&secret[4..]), "a secret in the log");
    }
    server.stop();
}

/// Asks for the manifest as `auth` until the answer is `status`, at most 10 s: how long it
/// took.
fn poll_status(c: &mut Client, auth: &str, status: u16) -> Duration {
    let start = Instant::now();
    loop {
        let r = request(c, "GET", "/v2/ci/app/manifests/1", auth, b"");
        if r.status == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still {} after 10 s: {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
