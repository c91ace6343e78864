//! Authentication and access control against the real binary: htpasswd files written by
//! Debian's `htpasswd -B` (apache2-utils), Basic credentials on every route and method, the
//! access rules as a table, anonymous pull on a public prefix, mounts across repositories,
//! reloads of the file while the server runs, `ringyard htpasswd add`, and skopeo with
//! `--creds`.
//!
//! Needs: htpasswd (apache2-utils), skopeo.

use crate::common::*;
use base64::Engine as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ringyard");

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

/// An htpasswd file in `dir` with `users`, written by `htpasswd -B` itself.
fn htpasswd(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    require_tool("htpasswd");
    let path = dir.join("htpasswd");
    let _ = std::fs::remove_file(&path);
    for (i, (user, password)) in users.iter().enumerate() {
        let create = if i == 0 { "-Bbc" } else { "-Bb" };
        let (ok, out) = run_command(
            "htpasswd",
            &[create, path.to_str().unwrap(), user, password],
        );
        assert!(ok, "htpasswd {create} {user}: {out}");
    }
    path
}

/// A server on a fresh root with `path` as its htpasswd file and `yaml` as its configuration
/// file (auth sections), failed attempts not delayed unless `extra` says.
struct AuthServer {
    server: Server,
    _dir: tempfile::TempDir,
    htpasswd: PathBuf,
}

fn start(users: &[(&str, &str)], yaml: &str, extra: &[&str]) -> AuthServer {
    let dir = tempfile::tempdir().unwrap();
    let path = htpasswd(dir.path(), users);
    let config = dir.path().join("ringyard.yaml");
    std::fs::write(&config, yaml).unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--htpasswd",
        path.to_str().unwrap(),
    ];
    if !extra.contains(&"--auth-fail-delay") {
        args.extend_from_slice(&["--auth-fail-delay", "0"]);
    }
    args.extend_from_slice(extra);
    let server = Server::start_with(&root, &args);
    AuthServer {
        server,
        _dir: dir,
        htpasswd: path,
    }
}

/// One request with an optional `Authorization` header.
fn send(
    c: &mut Client,
    method: &str,
    path: &str,
    auth: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    if let Some(a) = auth {
        h.push(("Authorization", a));
    }
    c.request(method, path, &h, body)
}

/// A blob pushed monolithically as `auth`; asserts 201.
fn push_blob_as(c: &mut Client, auth: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let r = send(
        c,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        Some(auth),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    );
    assert_eq!(r.status, 201, "push blob to {repo}: {}", r.text());
    digest
}

/// An image of one layer pushed as `auth` by `tag`; (manifest digest, layer digest).
fn push_image_as(
    c: &mut Client,
    auth: &str,
    repo: &str,
    tag: &str,
    layer: &[u8],
) -> (String, String) {
    let ld = push_blob_as(c, auth, repo, layer);
    let config = image_config(std::slice::from_ref(&ld));
    let cd = push_blob_as(c, auth, repo, &config);
    let manifest = image_manifest(&(cd, config.len()), &[(ld.clone(), layer.len())]);
    let r = send(
        c,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        Some(auth),
        &[("Content-Type", OCI_MANIFEST)],
        &manifest,
    );
    assert_eq!(r.status, 201, "push manifest {repo}:{tag}: {}", r.text());
    (sha256_digest(&manifest), ld)
}

#[track_caller]
fn assert_challenge(r: &Response, what: &str) {
    assert_eq!(r.status, 401, "{what}: {:?}", r.text());
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"ringyard\""),
        "{what}"
    );
    if !r.body.is_empty() {
        assert_error(r, 401, &["UNAUTHORIZED"]);
    }
}

#[track_caller]
fn assert_denied(r: &Response, what: &str) {
    assert_eq!(r.status, 403, "{what}: {:?}", r.text());
    assert_eq!(r.header("www-authenticate"), None, "{what}");
    if !r.body.is_empty() {
        assert_error(r, 403, &["DENIED"]);
    }
}

fn catalog(c: &mut Client, auth: Option<&str>) -> Vec<String> {
    let r = send(c, "GET", "/v2/_catalog", auth, &[], b"");
    assert_eq!(r.status, 200, "catalog: {}", r.text());
    r.json()["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

const RULES: &str = "auth:
  groups:
    admins: {users: [root], admin: true}
    dev: {users: [bob, carol]}
  access:
    - repository: \"**\"
      users: [alice]
      actions: [pull, push, delete]
    - repository: \"public/**\"
      anonymous: [pull]
      default: [pull]
    - repository: \"public/**\"
      groups: [dev]
      actions: [push]
    - repository: \"team/*\"
      groups: [dev]
      actions: [pull, push]
    - repository: \"team/*\"
      users: [erin]
      actions: [pull]
    - repository: team/locked
      users: [carol]
      actions: [pull]
";

const USERS: &[(&str, &str)] = &[
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("carol", "carol-pw"),
    ("erin", "erin-pw"),
    ("zed", "zed-pw"),
    ("root", "root-pw"),
];

/// Every route and method, without credentials, with a wrong password, with an unknown user
/// and with a user the rules give nothing: the right status and challenge, and nothing stored.
#[test]
fn every_route_refuses_strangers_and_stores_nothing() {
    let strict = "auth:\n  access:\n    - {repository: \"**\", users: [alice], actions: [pull, push, delete]}\n";
    let s = start(USERS, strict, &[]);
    let mut c = s.server.client();
    let alice = basic("alice", "alice-pw");
    let (md, ld) = push_image_as(&mut c, &alice, "lib/app", "v1", b"layer one");
    // a session of alice's, for the session routes
    let r = send(
        &mut c,
        "POST",
        "/v2/lib/app/blobs/uploads/",
        Some(&alice),
        &[],
        b"",
    );
    assert_eq!(r.status, 202);
    let session = location_path(must_header(&r, "location"));
    let new_blob = b"a blob nobody may store".to_vec();
    let nd = sha256_digest(&new_blob);
    let manifest = image_manifest(&(ld.clone(), 9), &[]);
    let routes: Vec<(&str, String, Vec<u8>)> = vec![
        ("GET", "/v2/".into(), vec![]),
        ("GET", "/v2/_catalog".into(), vec![]),
        ("GET", "/v2/lib/app/tags/list".into(), vec![]),
        ("GET", "/v2/lib/app/manifests/v1".into(), vec![]),
        ("HEAD", "/v2/lib/app/manifests/v1".into(), vec![]),
        ("PUT", "/v2/lib/app/manifests/evil".into(), manifest),
        ("DELETE", format!("/v2/lib/app/manifests/{md}"), vec![]),
        ("GET", format!("/v2/lib/app/blobs/{ld}"), vec![]),
        ("HEAD", format!("/v2/lib/app/blobs/{ld}"), vec![]),
        ("DELETE", format!("/v2/lib/app/blobs/{ld}"), vec![]),
        (
            "POST",
            format!("/v2/lib/app/blobs/uploads/?digest={nd}"),
            new_blob.clone(),
        ),
        ("POST", "/v2/lib/new/blobs/uploads/".into(), vec![]),
        (
            "POST",
            format!("/v2/lib/other/blobs/uploads/?mount={ld}&from=lib/app"),
            vec![],
        ),
        ("GET", session.clone(), vec![]),
        ("PATCH", session.clone(), new_blob.clone()),
        (
            "PUT",
            with_query(&session, &format!("digest={nd}")),
            new_blob.clone(),
        ),
        ("DELETE", session.clone(), vec![]),
        ("GET", format!("/v2/lib/app/referrers/{md}"), vec![]),
        ("GET", "/v2/nowhere/at/all".into(), vec![]),
    ];
    let wrong = basic("alice", "not-it");
    let unknown = basic("mallory", "alice-pw");
    let zed = basic("zed", "zed-pw");
    for (method, path, body) in &routes {
        let what = |who: &str| format!("{method} {path} {who}");
        let r = send(&mut c, method, path, None, &[], body);
        assert_challenge(&r, &what("without credentials"));
        let r = send(&mut c, method, path, Some(&wrong), &[], body);
        assert_challenge(&r, &what("with a wrong password"));
        let r = send(&mut c, method, path, Some(&unknown), &[], body);
        assert_challenge(&r, &what("as an unknown user"));
        let r = send(&mut c, method, path, Some("Basic !!!"), &[], body);
        assert_challenge(&r, &what("with a malformed header"));
        let r = send(&mut c, method, path, Some("Bearer abc.def.ghi"), &[], body);
        assert_challenge(&r, &what("with a bearer token"));
        let r = send(&mut c, method, path, Some(&zed), &[], body);
        match (*method, path.as_str()) {
            // reaching the registry and the catalog need no rule: zed sees an empty one
            ("GET", "/v2/") => assert_eq!(r.status, 200, "{}", what("zed")),
            ("GET", "/v2/_catalog") => {
                assert_eq!(r.status, 200);
                assert_eq!(r.json()["repositories"], serde_json::json!([]));
            }
            ("GET", "/v2/nowhere/at/all") => assert_eq!(r.status, 404),
            _ => assert_denied(&r, &what("as a user without rights")),
        }
    }
    // nothing was stored or removed
    assert_eq!(catalog(&mut c, Some(&alice)), ["lib/app"]);
    let r = send(
        &mut c,
        "GET",
        &format!("/v2/lib/app/blobs/{nd}"),
        Some(&alice),
        &[],
        b"",
    );
    assert_eq!(r.status, 404, "the refused blob was stored");
    let r = send(
        &mut c,
        "GET",
        "/v2/lib/app/manifests/v1",
        Some(&alice),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    let r = send(
        &mut c,
        "GET",
        &format!("/v2/lib/app/blobs/{ld}"),
        Some(&alice),
        &[],
        b"",
    );
    assert_eq!(r.body, b"layer one");
    let r = send(
        &mut c,
        "GET",
        "/v2/lib/app/tags/list",
        Some(&alice),
        &[],
        b"",
    );
    assert_eq!(r.json()["tags"], serde_json::json!(["v1"]));
    let r = send(&mut c, "GET", &session, Some(&alice), &[], b"");
    assert_eq!(r.status, 204, "alice's session is still there, empty");
    assert_eq!(must_header(&r, "range"), "0-0");
    // the access log names the user and never a secret
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.server_log().contains("user=zed") {
        assert!(Instant::now() < deadline, "{}", tail(&s.server_log(), 2000));
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = s.server_log();
    assert!(log.contains("user=alice"), "{}", tail(&log, 2000));
    for secret in [
        "alice-pw",
        "zed-pw",
        "not-it",
        alice.as_str(),
        wrong.as_str(),
    ] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    assert!(log.contains("wrong password or unknown user \"mallory\""));
}

impl AuthServer {
    fn server_log(&self) -> String {
        self.server.stderr()
    }
}

/// A table of users x repositories x actions, through real requests: pull is a manifest GET,
/// push an upload start, delete a DELETE of an unknown blob (404 when allowed).
#[test]
fn rules_table_and_anonymous_pull_on_a_public_prefix() {
    let s = start(USERS, RULES, &[]);
    let mut c = s.server.client();
    let root = basic("root", "root-pw");
    for repo in ["public/base", "team/app", "team/locked", "private"] {
        push_image_as(&mut c, &root, repo, "v1", repo.as_bytes());
    }
    let gone = sha256_digest(b"never pushed");
    let act = |c: &mut Client, who: Option<&str>, repo: &str, action: &str| -> u16 {
        let auth = who.map(|u| basic(u, &format!("{u}-pw")));
        let auth = auth.as_deref();
        match action {
            "pull" => {
                send(
                    c,
                    "GET",
                    &format!("/v2/{repo}/manifests/v1"),
                    auth,
                    &[],
                    b"",
                )
                .status
            }
            "push" => {
                send(
                    c,
                    "POST",
                    &format!("/v2/{repo}/blobs/uploads/"),
                    auth,
                    &[],
                    b"",
                )
                .status
            }
            _ => {
                send(
                    c,
                    "DELETE",
                    &format!("/v2/{repo}/blobs/{gone}"),
                    auth,
                    &[],
                    b"",
                )
                .status
            }
        }
    };
    // the statuses for pull, push, delete: allowed is 200, 202, 404
    let table: &[(Option<&str>, &str, [u16; 3])] = &[
        (None, "public/base", [200, 401, 401]),
        (None, "team/app", [401, 401, 401]),
        (None, "private", [401, 401, 401]),
        (Some("alice"), "private", [200, 202, 404]),
        (Some("alice"), "team/app", [403, 403, 403]),
        (Some("bob"), "public/base", [200, 202, 403]),
        (Some("bob"), "team/app", [200, 202, 403]),
        (Some("bob"), "team/locked", [403, 403, 403]),
        (Some("bob"), "private", [403, 403, 403]),
        (Some("carol"), "team/locked", [200, 403, 403]),
        (Some("erin"), "team/app", [200, 403, 403]),
        (Some("erin"), "public/base", [200, 403, 403]),
        (Some("zed"), "public/base", [200, 403, 403]),
        (Some("zed"), "team/app", [403, 403, 403]),
        (Some("root"), "team/locked", [200, 202, 404]),
        (Some("root"), "private", [200, 202, 404]),
    ];
    for (who, repo, want) in table {
        let got = ["pull", "push", "delete"].map(|a| act(&mut c, *who, repo, a));
        assert_eq!(&got, want, "{who:?} in {repo}: pull, push, delete");
    }
    // anonymous: the base is challenged even though anonymous pull is allowed (docker sends
    // stored credentials only after a challenge), the catalog shows the public part only
    assert_challenge(
        &send(&mut c, "GET", "/v2/", None, &[], b""),
        "anonymous /v2/",
    );
    assert_eq!(catalog(&mut c, None), ["public/base"]);
    let bob = basic("bob", "bob-pw");
    assert_eq!(catalog(&mut c, Some(&bob)), ["public/base", "team/app"]);
    assert_eq!(
        catalog(&mut c, Some(&root)),
        ["private", "public/base", "team/app", "team/locked"]
    );
    // pages count visible repositories only
    let r = send(&mut c, "GET", "/v2/_catalog?n=1", Some(&bob), &[], b"");
    assert_eq!(r.json()["repositories"], serde_json::json!(["public/base"]));
    assert!(
        must_header(&r, "link").contains("last=public%2Fbase")
            || must_header(&r, "link").contains("last=public/base")
    );
    let r = send(
        &mut c,
        "GET",
        "/v2/_catalog?n=1&last=public/base",
        Some(&bob),
        &[],
        b"",
    );
    assert_eq!(r.json()["repositories"], serde_json::json!(["team/app"]));
    assert_eq!(r.header("link"), None, "no more for bob");
}

/// A mount reads its source: with pull on `from` the blob is mounted (201), without it the
/// answer is an ordinary upload session (202) and the blob stays out of reach.
#[test]
fn mounts_need_pull_on_their_source() {
    let yaml = "auth:
  access:
    - repository: \"bob/*\"
      users: [bob]
      actions: [pull, push]
    - repository: \"shared/*\"
      users: [bob]
      actions: [pull]
  groups:
    admins: {users: [alice], admin: true}
";
    let s = start(&[("alice", "a"), ("bob", "b")], yaml, &[]);
    let mut c = s.server.client();
    let (alice, bob) = (basic("alice", "a"), basic("bob", "b"));
    let shared = push_blob_as(&mut c, &alice, "shared/base", b"shared layer");
    let secret = push_blob_as(&mut c, &alice, "secret/base", b"secret layer");
    let mount = |c: &mut Client, d: &str, from: &str| {
        let path = format!("/v2/bob/app/blobs/uploads/?mount={d}&from={from}");
        send(c, "POST", &path, Some(&bob), &[], b"")
    };
    let r = mount(&mut c, &shared, "shared/base");
    assert_eq!(r.status, 201, "{}", r.text());
    let r = mount(&mut c, &secret, "secret/base");
    assert_eq!(r.status, 202, "a session, not a mount: {}", r.text());
    let head = |c: &mut Client, d: &str| {
        send(
            c,
            "HEAD",
            &format!("/v2/bob/app/blobs/{d}"),
            Some(&bob),
            &[],
            b"",
        )
        .status
    };
    assert_eq!(head(&mut c, &shared), 200);
    assert_eq!(head(&mut c, &secret), 404);
    // alice, who may pull from secret/, mounts it
    let path = format!("/v2/alice/app/blobs/uploads/?mount={secret}&from=secret/base");
    assert_eq!(
        send(&mut c, "POST", &path, Some(&alice), &[], b"").status,
        201
    );
}

/// Without rules every user may do everything and anonymous requests nothing; wrong
/// credentials wait for `auth.fail_delay`; /metrics follows `auth.metrics`; the probes stay
/// open.
#[test]
fn no_rules_fail_delay_metrics_and_probes() {
    let s = start(&[("alice", "a")], "", &["--auth-fail-delay", "400ms"]);
    let mut c = s.server.client();
    let alice = basic("alice", "a");
    push_image_as(&mut c, &alice, "any/where", "v1", b"x");
    assert_eq!(catalog(&mut c, Some(&alice)), ["any/where"]);
    assert_challenge(
        &send(&mut c, "GET", "/v2/any/where/manifests/v1", None, &[], b""),
        "anonymous",
    );
    let t = Instant::now();
    assert_challenge(
        &send(&mut c, "GET", "/v2/", Some(&basic("alice", "b")), &[], b""),
        "wrong",
    );
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_eq!(
        send(&mut c, "GET", "/v2/", Some(&alice), &[], b"").status,
        200
    );
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "right ones are not delayed"
    );
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(c.get(probe).status, 200, "{probe}");
    }
    assert_challenge(&c.get("/metrics"), "metrics");
    assert_eq!(
        send(&mut c, "GET", "/metrics", Some(&alice), &[], b"").status,
        200
    );
    let open = start(&[("alice", "a")], "auth:\n  metrics: open\n", &[]);
    assert_eq!(open.server.client().get("/metrics").status, 200);
}

/// The file is reloaded while the server runs: a new password works and the old one stops; a
/// broken edit keeps the users read before, with a warning.
#[test]
fn htpasswd_reloads_while_running() {
    let s = start(&[("alice", "one"), ("bob", "b")], "", &[]);
    let mut c = s.server.client();
    let base = |c: &mut Client, user: &str, pw: &str| {
        send(c, "GET", "/v2/", Some(&basic(user, pw)), &[], b"").status
    };
    assert_eq!(base(&mut c, "alice", "one"), 200);
    let file = s.htpasswd.to_str().unwrap();
    let (ok, out) = run_command("htpasswd", &["-Bb", file, "alice", "two"]);
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while base(&mut c, "alice", "two") != 200 {
        assert!(Instant::now() < deadline, "the new password never worked");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        base(&mut c, "alice", "one"),
        401,
        "the old password (cached) still works"
    );
    assert_eq!(base(&mut c, "bob", "b"), 200);
    // a broken edit: an MD5 entry
    let mut text = std::fs::read_to_string(file).unwrap();
    text.push_str("carol:$apr1$abc$def\n");
    std::fs::write(file, text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.server_log().contains("keeping the users read before") {
        assert!(Instant::now() < deadline, "no warning: {}", s.server_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(s
        .server_log()
        .contains("line 3: user \"carol\": an MD5 ($apr1$) hash"));
    assert_eq!(base(&mut c, "alice", "two"), 200);
    assert_eq!(base(&mut c, "bob", "b"), 200);
}

/// A broken file, rules without users, an unknown group: the start is refused with the line.
#[test]
fn broken_configurations_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let root = root.to_str().unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "# team\nalice:{SHA}abcdef=\n").unwrap();
    let config = |yaml: &str| {
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, yaml).unwrap();
        p.to_str().unwrap().to_string()
    };
    let refused = |args: &[&str]| {
        let mut all = vec!["--listen", "127.0.0.1:0", "--root", root];
        all.extend_from_slice(args);
        match Server::try_start(&all) {
            Ok(_) => panic!("{args:?} started"),
            Err((_, stderr)) => stderr,
        }
    };
    let e = refused(&["--htpasswd", bad.to_str().unwrap()]);
    assert!(
        e.contains("line 2: user \"alice\": a SHA-1 ({SHA}) hash"),
        "{e}"
    );
    let rules = config("auth:\n  access:\n    - {repository: x, users: [a], actions: [pull]}\n");
    let e = refused(&["--config", &rules]);
    assert!(
        e.contains("auth.access[0] (line 3): access rules need auth.htpasswd.path"),
        "{e}"
    );
    let good = htpasswd(dir.path(), &[("a", "b")]);
    let groups =
        config("auth:\n  access:\n    - {repository: x, groups: [ghosts], actions: [pull]}\n");
    let e = refused(&["--config", &groups, "--htpasswd", good.to_str().unwrap()]);
    assert!(
        e.contains("auth.access[0] (line 3): groups: no group \"ghosts\" in auth.groups"),
        "{e}"
    );
    let e = refused(&["--htpasswd", dir.path().join("missing").to_str().unwrap()]);
    assert!(e.contains("missing"), "{e}");
}

/// `ringyard htpasswd add` writes entries Apache's own tool verifies, and the server accepts.
#[test]
fn htpasswd_add_round_trip() {
    require_tool("htpasswd");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    let add = |user: &str, input: &str| {
        let mut child = Command::new(BIN)
            .args([
                "htpasswd",
                "add",
                file.to_str().unwrap(),
                user,
                "--cost",
                "5",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let verify = |user: &str, pw: &str| {
        run_command("htpasswd", &["-vb", file.to_str().unwrap(), user, pw]).0
    };
    assert_eq!(
        add("alice", "first\n"),
        (true, format!("added user alice in {}\n", file.display()))
    );
    assert!(add("bob", "b0b\r\n").0);
    assert!(verify("alice", "first") && verify("bob", "b0b"));
    let (ok, msg) = add("alice", "second\n");
    assert!(ok && msg.starts_with("updated user alice"), "{msg}");
    assert!(verify("alice", "second") && !verify("alice", "first"));
    let (ok, msg) = add("a:b", "x\n");
    assert!(!ok && msg.contains("cannot hold ':'"), "{msg}");
    let (ok, msg) = add("carol", "\n");
    assert!(!ok && msg.contains("empty"), "{msg}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(!text.contains("second"));
    let s = Server::start_in_temp(&["--htpasswd", file.to_str().unwrap()]);
    let mut c = s.client();
    let r = send(
        &mut c,
        "GET",
        "/v2/",
        Some(&basic("alice", "second")),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_challenge(
        &send(
            &mut c,
            "GET",
            "/v2/",
            Some(&basic("alice", "first")),
            &[],
            b"",
        ),
        "old",
    );
}

/// skopeo answers the challenge with `--creds`, and fails without them.
#[test]
fn skopeo_with_creds() {
    require_tool("skopeo");
    let s = start(&[("alice", "alice-pw")], "", &[]);
    let mut c = s.server.client();
    let alice = basic("alice", "alice-pw");
    let (md, _) = push_image_as(&mut c, &alice, "lib/app", "v1", b"a layer for skopeo");
    let host = s.server.host();
    let tmp = tempfile::tempdir().unwrap();
    let skopeo = |args: &[&str]| skopeo_in(tmp.path(), args);
    let src = format!("docker://{host}/lib/app:v1");
    let dst = format!("docker://{host}/lib/copy:v1");
    let (ok, _, out) = skopeo(&["inspect", "--raw", "--tls-verify=false", &src]);
    assert!(!ok, "inspect without credentials: {out}");
    assert!(
        out.to_lowercase().contains("unauthorized") || out.contains("401"),
        "{out}"
    );
    let creds = ["--creds", "alice:alice-pw"];
    let (ok, raw, out) = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        creds[0],
        creds[1],
        &src,
    ]);
    assert!(ok, "{out}");
    assert_eq!(sha256_digest(raw.as_bytes()), md);
    let (ok, _, out) = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        "alice:alice-pw",
        "--dest-creds",
        "alice:alice-pw",
        &src,
        &dst,
    ]);
    assert!(ok, "{out}");
    let (ok, _, out) = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        "alice:alice-pw",
        "--dest-creds",
        "alice:wrong",
        &src,
        &format!("docker://{host}/lib/nope:v1"),
    ]);
    assert!(!ok, "{out}");
    assert_eq!(catalog(&mut c, Some(&alice)), ["lib/app", "lib/copy"]);
}
