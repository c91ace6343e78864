//! Robot tokens against the real binary: `ringyard token create|list|revoke` on a data
//! directory (before the server starts and while it runs), the secret as the password of
//! Basic credentials, its scopes as its only rules (push and pull inside them, 403 `DENIED`
//! outside, the catalog limited to them), expired and wrong secrets answered 401, a
//! revocation made by the command seen by the running server within a bounded wait, and
//! the secret in neither `token list` nor the server's log. With the token service on: a
//! robot's refresh tokens (`docker login`'s identity token), bound to the robot and not to a
//! user of the same name, granting within the robot's current scopes, ended by a revocation,
//! a replacement or the robot's expiry. docker itself with robot tokens, over Basic and
//! Bearer challenges: `clients_auth`.

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

/// Adds `user` with `password` to the htpasswd file `users` (created if missing).
fn add_user(users: &Path, user: &str, password: &str) {
    let mut add = Command::new(BIN)
        .args(["htpasswd", "add", users.to_str().unwrap(), user])
        .args(["--cost", "4"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = format!("{password}\n");
    add.stdin
        .take()
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    assert!(add.wait().unwrap().success());
}

/// A temp dir with a data directory to be (`root`) and an htpasswd file (`users`) holding
/// admin/secret.
fn data_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let users = dir.path().join("htpasswd");
    add_user(&users, "admin", "secret");
    (dir, root, users)
}

#[test]
fn robot_tokens_end_to_end() {
    let (_dir, root, users) = data_dir();

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
    poll_until(status, || {
        request(c, "GET", "/v2/ci/app/manifests/1", auth, b"")
    })
}

/// Sends `ask` until the answer is `status`, at most 10 s: how long it took.
fn poll_until(status: u16, mut ask: impl FnMut() -> Response) -> Duration {
    let start = Instant::now();
    loop {
        let r = ask();
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

// ---------------------------------------------------------------------------------------------
// with the token service on: refresh tokens

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The claims of a JWT (not verified: the server does that).
fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    json(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `docker login`'s request: `GET /token` with Basic credentials and `offline_token`; the
/// refresh token, or the refusal.
fn login(c: &mut Client, user: &str, password: &str) -> Result<String, Response> {
    let path =
        format!("/token?service=ringyard&offline_token=true&client_id=docker&account={user}");
    let r = request(c, "GET", &path, &basic(user, password), b"");
    match r.status {
        200 => Ok(r.json()["refresh_token"]
            .as_str()
            .expect("a refresh token")
            .to_string()),
        _ => Err(r),
    }
}

/// `grant_type=refresh_token` for `scopes` (as written in a challenge, space separated).
fn refresh_grant(c: &mut Client, refresh: &str, scopes: &str) -> Response {
    let scope = scopes
        .replace(':', "%3A")
        .replace('/', "%2F")
        .replace(',', "%2C")
        .replace(' ', "+");
    c.post_token(&format!(
        "grant_type=refresh_token&service=ringyard&client_id=docker\
             &refresh_token={refresh}&scope={scope}"
    ))
}

/// The `scope` a refresh grant answered with (what the access token grants), after checking
/// that the access token says the same.
#[track_caller]
fn granted(r: &Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    let access = claims_of(j["access_token"].as_str().unwrap())["access"].clone();
    let scope = j["scope"].as_str().unwrap().to_string();
    let from_claims: Vec<String> = access
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let actions: Vec<&str> = a["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            format!(
                "{}:{}:{}",
                a["type"].as_str().unwrap(),
                a["name"].as_str().unwrap(),
                actions.join(",")
            )
        })
        .collect();
    assert_eq!(
        from_claims.join(" "),
        scope,
        "the token grants what scope says"
    );
    scope
}

/// A server with htpasswd and the token service on.
fn token_server(root: &Path, users: &Path) -> Server {
    Server::start_with(
        root,
        &[
            "--htpasswd",
            users.to_str().unwrap(),
            "--auth-fail-delay",
            "0",
            "--token",
        ],
    )
}

#[test]
fn robot_refresh_tokens() {
    let (_dir, root, users) = data_dir();
    // A user with the name of a robot (no access rules: every user may do everything).
    add_user(&users, "twin", "twin-pw");
    let ci = create(&root, "ci-builder", &["repository:ci/*:pull,push"], "30d");
    let twin = create(&root, "twin", &["repository:ci/*:pull"], "30d");
    let brief_made = now_secs();
    let brief = create(&root, "brief", &["repository:ci/*:pull"], "5s");
    let server = token_server(&root, &users);
    let mut c = server.client();
    let both = "repository:ci/app:pull,push repository:team/app:pull,push";

    // docker login with the robot secret: a refresh token that says it is a robot's, capped
    // at the robot's expiry.
    let refresh = login(&mut c, "ci-builder", &ci).unwrap_or_else(|r| panic!("{}", r.text()));
    let claims = claims_of(&refresh);
    assert_eq!(claims["kind"], "robot", "{claims}");
    assert_eq!(claims["sub"], "ci-builder");
    let brief_refresh = login(&mut c, "brief", &brief).unwrap_or_else(|r| panic!("{}", r.text()));
    let exp = claims_of(&brief_refresh)["exp"].as_i64().unwrap();
    assert!(
        exp <= now_secs() + 5 && exp >= brief_made,
        "a refresh token does not outlive its robot: exp {exp}, robot made at {brief_made}"
    );

    // Traded for an access token: only what the robot's scopes allow.
    let r = refresh_grant(&mut c, &refresh, both);
    assert_eq!(granted(&r), "repository:ci/app:pull,push");
    let access = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(claims_of(&access)["sub"], "ci-builder");
    assert_status(
        &push(
            &mut c,
            &bearer(&access),
            "ci/app",
            "1",
            b"via a robot refresh",
        ),
        201,
    );
    let outside = push(&mut c, &bearer(&access), "team/app", "1", b"outside");
    assert_error(&outside, 401, &["UNAUTHORIZED"]);
    assert!(
        must_header(&outside, "www-authenticate").contains("insufficient_scope"),
        "{:?}",
        outside.header("www-authenticate")
    );
    // The refresh grant rotates: a new refresh token, for the robot, that works; the
    // presented one keeps working (docker keeps the first).
    let rotated = r.json()["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rotated, refresh);
    assert_eq!(claims_of(&rotated)["kind"], "robot");
    assert_eq!(claims_of(&rotated)["cred"], claims["cred"]);
    assert_eq!(
        granted(&refresh_grant(&mut c, &rotated, both)),
        "repository:ci/app:pull,push"
    );
    assert_eq!(
        granted(&refresh_grant(&mut c, &refresh, "repository:ci/app:pull")),
        "repository:ci/app:pull"
    );
    // The password grant takes a robot secret too.
    let r = c.post_token(&format!(
        "grant_type=password&service=ringyard&client_id=ci&username=ci-builder\
             &password={ci}&access_type=offline&scope=repository%3Aci%2Fapp%3Apush"
    ));
    assert_eq!(granted(&r), "repository:ci/app:push");
    assert_eq!(
        claims_of(r.json()["refresh_token"].as_str().unwrap())["kind"],
        "robot"
    );

    // A user and a robot of the same name: each refresh token is what it was issued for.
    let user_refresh = login(&mut c, "twin", "twin-pw").unwrap_or_else(|r| panic!("{}", r.text()));
    let robot_refresh = login(&mut c, "twin", &twin).unwrap_or_else(|r| panic!("{}", r.text()));
    assert_eq!(claims_of(&user_refresh)["kind"], "user");
    assert_eq!(claims_of(&robot_refresh)["kind"], "robot");
    assert_eq!(
        granted(&refresh_grant(&mut c, &user_refresh, both)),
        both,
        "the user's rights"
    );
    assert_eq!(
        granted(&refresh_grant(&mut c, &robot_refresh, both)),
        "repository:ci/app:pull",
        "the robot's scopes"
    );
    let (ok, _, err) = token(&root, &["revoke", "twin"]);
    assert!(ok, "{err}");
    poll_until(401, || refresh_grant(&mut c, &robot_refresh, both));
    assert_eq!(
        granted(&refresh_grant(&mut c, &user_refresh, both)),
        both,
        "the user is not the revoked robot"
    );

    // Revoked: every refresh token of the robot is refused, soon.
    let started = Instant::now();
    let (ok, _, err) = token(&root, &["revoke", "ci-builder"]);
    assert!(ok, "{err}");
    let waited = poll_until(401, || refresh_grant(&mut c, &refresh, both));
    eprintln!(
        "a revocation ended a refresh token after {waited:?} ({:?} with the command)",
        started.elapsed()
    );
    let r = refresh_grant(&mut c, &rotated, both);
    assert_error(&r, 401, &["UNAUTHORIZED"]);
    assert!(r.text().contains("log in again"), "{}", r.text());
    // Created again under the name: the new secret works, the old refresh tokens do not.
    let again = create(&root, "ci-builder", &["repository:ci/*:pull,push"], "30d");
    let new_refresh = poll_login(&mut c, "ci-builder", &again);
    assert_ne!(claims_of(&new_refresh)["cred"], claims["cred"]);
    assert_eq!(
        granted(&refresh_grant(&mut c, &new_refresh, both)),
        "repository:ci/app:pull,push"
    );
    for old in [&refresh, &rotated] {
        assert_error(&refresh_grant(&mut c, old, both), 401, &["UNAUTHORIZED"]);
    }

    // Expired: its refresh token ends with it.
    let after = Duration::from_secs(u64::try_from(brief_made + 6 - now_secs()).unwrap_or(0));
    std::thread::sleep(after);
    assert_error(
        &refresh_grant(&mut c, &brief_refresh, "repository:ci/app:pull"),
        401,
        &["UNAUTHORIZED"],
    );

    let log = server.stderr();
    for secret in [&ci, &twin, &brief, &again] {
        assert!(!log.contains(&secret[4..]), "a secret in the log");
    }
    server.stop();
}

/// `login` until the server has seen the robot (made by the command while it runs).
fn poll_login(c: &mut Client, user: &str, password: &str) -> String {
    let mut got = None;
    poll_until(200, || match login(c, user, password) {
        Ok(t) => {
            got = Some(t);
            request(c, "GET", "/v2/", &basic(user, password), b"")
        }
        Err(r) => r,
    });
    got.expect("a refresh token")
}
