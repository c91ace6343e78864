//! Upload sessions belong to the identity that started them (issue 12, section 2): another
//! user with push rights on the repository, holding the session's URL, can neither see, write,
//! complete nor cancel it, and is answered exactly as for an id that never existed (404
//! `BLOB_UPLOAD_UNKNOWN`), so the URL reveals nothing. Anonymous is an identity of its own: a
//! session started anonymously (where the rules let anonymous callers push) is not usable by a
//! user, nor a user's by an anonymous caller. The owner is in the session's metadata row, so it
//! holds after a restart too.

use crate::common::*;
use base64::Engine as _;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ringyard");

/// alice and bob may push anywhere; under `open/` anonymous callers may too.
const RULES: &str = "auth:
  access:
    - repository: \"**\"
      users: [alice, bob]
      actions: [pull, push, delete]
    - repository: \"open/**\"
      users: [alice, bob]
      actions: [pull, push, delete]
    - repository: \"open/**\"
      anonymous: [pull, push, delete]
";

fn basic(user: &str) -> String {
    let pair = format!("{user}:{user}-pw");
    let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
    format!("Basic {b64}")
}

/// An htpasswd file with alice and bob, written by `ringyard htpasswd add` (the password on
/// stdin).
fn users_file(dir: &Path) -> String {
    let path = dir.join("htpasswd").to_str().unwrap().to_string();
    for user in ["alice", "bob"] {
        let mut child = Command::new(BIN)
            .args(["htpasswd", "add", &path, user])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{user}-pw").unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    path
}

/// The server's arguments: the rules and users above, failed attempts not delayed.
fn args(dir: &Path) -> Vec<String> {
    let config = dir.join("ringyard.yaml");
    std::fs::write(&config, RULES).unwrap();
    vec![
        "--config".into(),
        config.to_str().unwrap().into(),
        "--htpasswd".into(),
        users_file(dir),
        "--auth-fail-delay".into(),
        "0".into(),
    ]
}

fn start(root: &Path, args: &[String]) -> Server {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with(root, &args)
}

/// `who`: a user name, or None for an anonymous caller.
fn send(
    c: &mut Client,
    who: Option<&str>,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let auth = who.map(basic);
    let mut headers = extra.to_vec();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    c.request(method, path, &headers, body)
}

/// Starts a session in `repo` as `who` and sends `first` to it; the session's path.
fn begin(c: &mut Client, who: Option<&str>, repo: &str, first: &[u8]) -> String {
    let r = send(
        c,
        who,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    );
    assert_eq!(r.status, 202, "start as {who:?}: {}", r.text());
    let path = r.header("Location").unwrap().to_string();
    let r = send(c, who, "PATCH", &path, &[], first);
    assert_eq!(r.status, 202, "first chunk as {who:?}: {}", r.text());
    assert_eq!(r.header("Range"), Some(&*format!("0-{}", first.len() - 1)));
    path
}

/// Every operation on the session at `path` by `who` is answered as for an unknown id
/// (compared with the answer for a made-up id of the same shape, byte for byte once the ids
/// are swapped), and changes nothing.
fn refused(c: &mut Client, who: Option<&str>, path: &str, digest: &str) {
    let id = path.rsplit('/').next().unwrap();
    let fake = "0123456789abcdef0123456789abcdef";
    for (method, query, body) in [
        ("GET", "", &b""[..]),
        ("PATCH", "", &b"intruder bytes"[..]),
        ("PUT", &*format!("?digest={digest}"), &b""[..]),
        ("DELETE", "", &b""[..]),
    ] {
        let theirs = send(c, who, method, &format!("{path}{query}"), &[], body);
        let what = format!("{method} by {who:?}");
        assert_error(&theirs, 404, &["BLOB_UPLOAD_UNKNOWN"]);
        let unknown = path.replace(id, fake);
        let never = send(c, who, method, &format!("{unknown}{query}"), &[], body);
        assert_eq!(
            theirs.text().replace(id, fake),
            never.text(),
            "{what}: the same answer as an id that never existed"
        );
        assert_eq!(theirs.header("Location"), None, "{what}");
    }
}

/// The owner completes the session at `path` with `rest`, after checking that it stands at
/// `first.len()` (nothing the others sent was written), and the blob holds `first + rest`.
fn complete(c: &mut Client, who: Option<&str>, repo: &str, path: &str, first: &[u8], rest: &[u8]) {
    let r = send(c, who, "GET", path, &[], b"");
    assert_eq!(r.status, 204, "status as {who:?}: {}", r.text());
    assert_eq!(r.header("Range"), Some(&*format!("0-{}", first.len() - 1)));
    let whole = [first, rest].concat();
    let digest = sha256_digest(&whole);
    let r = send(c, who, "PUT", &format!("{path}?digest={digest}"), &[], rest);
    assert_eq!(r.status, 201, "complete as {who:?}: {}", r.text());
    let r = send(
        c,
        who,
        "GET",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r.body == whole, "the blob is the owner's bytes alone");
}

#[test]
fn another_identity_cannot_touch_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let args = args(dir.path());
    let server = start(&root, &args);
    let mut c = server.client();
    let (alice, bob) = (Some("alice"), Some("bob"));

    // A user's session, and another user with push rights on the repository.
    let path = begin(&mut c, alice, "team/app", b"alice's first chunk");
    let digest = sha256_digest(b"alice's first chunk");
    refused(&mut c, bob, &path, &digest);
    complete(
        &mut c,
        alice,
        "team/app",
        &path,
        b"alice's first chunk",
        b" and the rest",
    );

    // Anonymous and a user, both ways, where anonymous callers may push.
    let anon = begin(&mut c, None, "open/app", b"anonymous bytes");
    let mine = begin(&mut c, alice, "open/app", b"alice's bytes");
    refused(&mut c, alice, &anon, &digest);
    refused(&mut c, None, &mine, &digest);
    complete(&mut c, None, "open/app", &anon, b"anonymous bytes", b"!");

    // The owner is in the row: after a restart (no writer cached) the same holds.
    let kept = begin(&mut c, bob, "team/app", b"bob's chunk");
    drop(c);
    server.stop();
    let server = start(&root, &args);
    let mut c = server.client();
    refused(&mut c, alice, &kept, &digest);
    complete(&mut c, bob, "team/app", &kept, b"bob's chunk", b" finished");
    let r = send(&mut c, alice, "DELETE", &mine, &[], b"");
    assert_eq!(r.status, 204, "the owner cancels: {}", r.text());
    let r = send(&mut c, alice, "GET", &mine, &[], b"");
    assert_error(&r, 404, &["BLOB_UPLOAD_UNKNOWN"]);
}
