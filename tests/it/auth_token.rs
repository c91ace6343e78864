//! The Docker token service against the real binary: the flow docker follows, by hand
//! (challenge, `GET /token` with Basic and the challenge's scope, retry with Bearer), push and
//! pull with tokens, refusals (`insufficient_scope` with the scope; expired, foreign, `alg:
//! none` and wrong-audience tokens as `invalid_token`, nothing stored), refresh and password
//! grants, the JWKS, an external issuer's tokens, a partial grant, and skopeo following the
//! Bearer challenge with `--creds`.
//!
//! Needs: htpasswd (apache2-utils), skopeo.

use crate::common::*;
use base64::Engine as _;
use ringyard::auth::token::jwt::{issue, TrustedIssuer, Verifier};
use ringyard::auth::token::keys::{load_or_create, KeySet, SigningKey};
use ringyard::auth::token::scope::Scope;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RULES: &str = "auth:
  access:
    - repository: \"lib/**\"
      users: [alice]
      actions: [pull, push, delete]
    - repository: \"lib/**\"
      users: [bob]
      actions: [pull]
";

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token signed with `key` for `subject` at `audience`, issued at `at`, living 5 minutes.
fn mint(
    key: &SigningKey,
    issuer: &str,
    subject: &str,
    audience: &str,
    access: Vec<Scope>,
    at: i64,
) -> String {
    issue(
        key,
        issuer,
        subject,
        audience,
        access,
        at,
        Duration::from_secs(300),
    )
    .unwrap()
    .token
}

fn write_htpasswd(path: &Path, users: &[(&str, &str)]) {
    require_tool("htpasswd");
    let _ = std::fs::remove_file(path);
    for (i, (user, password)) in users.iter().enumerate() {
        let create = if i == 0 { "-Bbc" } else { "-Bb" };
        let (ok, out) = run_command(
            "htpasswd",
            &[create, path.to_str().unwrap(), user, password],
        );
        assert!(ok, "htpasswd {create} {user}: {out}");
    }
}

struct TokenServer {
    server: Server,
    dir: tempfile::TempDir,
    htpasswd: PathBuf,
}

const USERS: &[(&str, &str)] = &[("alice", "alice-pw"), ("bob", "bob-pw")];

/// A server with htpasswd, `yaml` (rules, token settings) and the token service on.
fn start(yaml: &str, extra: &[&str]) -> TokenServer {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    write_htpasswd(&htpasswd, USERS);
    let config = dir.path().join("ringyard.yaml");
    std::fs::write(&config, yaml).unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--htpasswd",
        htpasswd.to_str().unwrap(),
        "--auth-fail-delay",
        "0",
        "--token",
    ];
    args.extend_from_slice(extra);
    let server = Server::start_with(&root, &args);
    TokenServer {
        server,
        dir,
        htpasswd,
    }
}

fn send(c: &mut Client, method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> Response {
    let mut h = vec![("Content-Type", "application/octet-stream")];
    if let Some(a) = auth {
        h.push(("Authorization", a));
    }
    c.request(method, path, &h, body)
}

/// The `WWW-Authenticate` of a 401 `UNAUTHORIZED`.
#[track_caller]
fn challenge_of(r: &Response) -> String {
    assert_eq!(r.status, 401, "{}", r.text());
    assert_error(r, 401, &["UNAUTHORIZED"]);
    must_header(r, "www-authenticate").to_string()
}

/// `GET /token` for `scopes` with `auth`; the token.
#[track_caller]
fn get_token(c: &mut Client, auth: Option<&str>, scopes: &[&str]) -> String {
    let mut q = String::from("/token?service=ringyard");
    for s in scopes {
        q.push_str("&scope=");
        q.push_str(&s.replace(':', "%3A").replace('/', "%2F"));
    }
    let r = send(c, "GET", &q, auth, b"");
    assert_eq!(r.status, 200, "{q}: {}", r.text());
    let j = r.json();
    assert_eq!(j["token"], j["access_token"]);
    assert!(j["expires_in"].as_u64().unwrap() > 0);
    j["token"].as_str().unwrap().to_string()
}

/// The `access` claim of a token (not verified: the server did that).
fn access_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    json(&bytes)["access"].clone()
}

fn push_blob(c: &mut Client, auth: &str, repo: &str, bytes: &[u8]) -> Response {
    let digest = sha256_digest(bytes);
    send(
        c,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        Some(auth),
        bytes,
    )
}

/// A one-layer image pushed with `auth`; the manifest's digest.
fn push_image(c: &mut Client, auth: &str, repo: &str, tag: &str, layer: &[u8]) -> String {
    let ld = sha256_digest(layer);
    assert_status(&push_blob(c, auth, repo, layer), 201);
    let config = image_config(std::slice::from_ref(&ld));
    assert_status(&push_blob(c, auth, repo, &config), 201);
    let manifest = image_manifest(
        &(sha256_digest(&config), config.len()),
        &[(ld, layer.len())],
    );
    let r = c.request(
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", OCI_MANIFEST), ("Authorization", auth)],
        &manifest,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    sha256_digest(&manifest)
}

#[test]
fn docker_flow_by_hand_push_pull_scopes_and_jwks() {
    let s = start(RULES, &[]);
    let mut c = s.server.client();
    let realm = format!("http://127.0.0.1:{}/token", s.server.addr.port());

    // 1. The ping: a challenge without scope, even though nothing is needed.
    let ch = challenge_of(&send(&mut c, "GET", "/v2/", None, b""));
    assert_eq!(ch, format!("Bearer realm=\"{realm}\",service=\"ringyard\""));
    // A pull names its scope.
    let ch = challenge_of(&send(&mut c, "GET", "/v2/lib/app/manifests/v1", None, b""));
    assert_eq!(
        ch,
        format!("Bearer realm=\"{realm}\",service=\"ringyard\",scope=\"repository:lib/app:pull\"")
    );

    // 2. The token for the push, as docker asks for it.
    let alice = basic("alice", "alice-pw");
    let token = get_token(&mut c, Some(&alice), &["repository:lib/app:pull,push"]);
    assert_eq!(
        access_of(&token),
        serde_json::json!([{"type": "repository", "name": "lib/app", "actions": ["pull", "push"]}])
    );
    let b = bearer(&token);
    assert_status(&send(&mut c, "GET", "/v2/", Some(&b), b""), 200);

    // 3. Push and pull with it.
    let md = push_image(&mut c, &b, "lib/app", "v1", b"a layer pushed with a token");
    let r = c.request(
        "GET",
        "/v2/lib/app/manifests/v1",
        &[("Authorization", &b), ("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sha256_digest(&r.body), md);
    let ld = sha256_digest(b"a layer pushed with a token");
    let r = send(
        &mut c,
        "GET",
        &format!("/v2/lib/app/blobs/{ld}"),
        Some(&b),
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"a layer pushed with a token");

    // 4. The same token elsewhere: insufficient_scope naming what is needed.
    let ch = challenge_of(&send(
        &mut c,
        "GET",
        "/v2/lib/other/tags/list",
        Some(&b),
        b"",
    ));
    assert_eq!(
        ch,
        format!(
            "Bearer realm=\"{realm}\",service=\"ringyard\",scope=\"repository:lib/other:pull\",error=\"insufficient_scope\""
        )
    );
    let ch = challenge_of(&send(
        &mut c,
        "DELETE",
        &format!("/v2/lib/app/manifests/{md}"),
        Some(&b),
        b"",
    ));
    assert!(
        ch.contains("scope=\"repository:lib/app:delete\",error=\"insufficient_scope\""),
        "{ch}"
    );

    // Basic is still accepted directly (curl -u).
    let r = c.request(
        "GET",
        "/v2/lib/app/manifests/v1",
        &[("Authorization", &alice), ("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(r.status, 200);
    // Wrong Basic credentials: 401 with the Bearer challenge, never anonymous.
    let ch = challenge_of(&send(
        &mut c,
        "GET",
        "/v2/",
        Some(&basic("alice", "nope")),
        b"",
    ));
    assert!(ch.starts_with("Bearer realm="), "{ch}");
    // /token with wrong credentials is 401 too, and another service is 400.
    let r = send(
        &mut c,
        "GET",
        "/token?service=ringyard&scope=repository%3Alib%2Fapp%3Apull",
        Some(&basic("alice", "nope")),
        b"",
    );
    assert_eq!(r.status, 401);
    let r = send(&mut c, "GET", "/token?service=elsewhere", Some(&alice), b"");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = send(
        &mut c,
        "GET",
        "/token?service=ringyard&scope=nonsense",
        Some(&alice),
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // 5. A partial grant: bob asks push and pull, the rules give pull.
    let bob = get_token(
        &mut c,
        Some(&basic("bob", "bob-pw")),
        &["repository:lib/app:pull,push"],
    );
    assert_eq!(
        access_of(&bob),
        serde_json::json!([{"type": "repository", "name": "lib/app", "actions": ["pull"]}])
    );
    let bb = bearer(&bob);
    assert_status(
        &send(
            &mut c,
            "GET",
            &format!("/v2/lib/app/blobs/{ld}"),
            Some(&bb),
            b"",
        ),
        200,
    );
    let ch = challenge_of(&push_blob(&mut c, &bb, "lib/app", b"bob's layer"));
    assert!(ch.contains("error=\"insufficient_scope\""), "{ch}");
    // Anonymous gets a token with nothing in it.
    let anon = get_token(&mut c, None, &["repository:lib/app:pull"]);
    assert_eq!(access_of(&anon), serde_json::json!([]));
    challenge_of(&send(
        &mut c,
        "GET",
        "/v2/lib/app/tags/list",
        Some(&bearer(&anon)),
        b"",
    ));

    // The catalog with its scope.
    let cat = get_token(&mut c, Some(&alice), &["registry:catalog:*"]);
    let r = send(&mut c, "GET", "/v2/_catalog", Some(&bearer(&cat)), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["repositories"], serde_json::json!(["lib/app"]));

    // 6. The JWKS verifies our tokens.
    let r = send(&mut c, "GET", "/token/jwks", None, b"");
    assert_eq!(r.status, 200);
    let keys = KeySet::from_jwks(&r.body).unwrap();
    assert_eq!(keys.len(), 1);
    let verifier = Verifier::new(
        "ringyard",
        vec![TrustedIssuer {
            issuer: "ringyard".into(),
            keys,
            roots: None,
            algs: vec![ringyard::auth::token::keys::Alg::Es256],
        }],
    );
    let claims = verifier.verify(&token, now()).unwrap();
    assert_eq!(claims.registered.sub, "alice");
}

#[test]
fn refused_tokens_are_invalid_token_and_store_nothing() {
    let s = start(RULES, &[]);
    let mut c = s.server.client();
    let scope = || {
        vec![Scope {
            resource_type: "repository".into(),
            class: None,
            name: "lib/app".into(),
            actions: vec!["pull".into(), "push".into()],
        }]
    };
    // Our own key, read from the data directory where the server generated it.
    let ours = load_or_create(None, &s.server.root).unwrap();
    let expired = mint(
        &ours,
        "ringyard",
        "alice",
        "ringyard",
        scope(),
        now() - 3600,
    );
    let (other, _) = SigningKey::generate().unwrap();
    let foreign = mint(&other, "ringyard", "alice", "ringyard", scope(), now());
    let audience = mint(&ours, "ringyard", "alice", "elsewhere", scope(), now());
    let good = mint(&ours, "ringyard", "alice", "ringyard", scope(), now());
    // alg none: the good token's claims, no signature.
    let claims = good.split('.').nth(1).unwrap();
    let none = format!("{}.{claims}.", b64url(br#"{"alg":"none","typ":"JWT"}"#));
    let layer = b"a layer that must not be stored";
    let ld = sha256_digest(layer);
    for (what, t) in [
        ("expired", &expired),
        ("another key", &foreign),
        ("another audience", &audience),
        ("alg none", &none),
        ("garbage", &"not.a.token".to_string()),
    ] {
        let ch = challenge_of(&push_blob(&mut c, &bearer(t), "lib/app", layer));
        assert!(ch.ends_with(",error=\"invalid_token\""), "{what}: {ch}");
        assert!(
            ch.contains("scope=\"repository:lib/app:push\""),
            "{what}: {ch}"
        );
        let ch = challenge_of(&send(&mut c, "GET", "/v2/_catalog", Some(&bearer(t)), b""));
        assert!(ch.contains("error=\"invalid_token\""), "{what}: {ch}");
    }
    // Nothing was stored; the good token (minted with the server's key) sees so.
    let g = bearer(&good);
    assert_status(
        &send(
            &mut c,
            "HEAD",
            &format!("/v2/lib/app/blobs/{ld}"),
            Some(&g),
            b"",
        ),
        404,
    );
    assert_status(&push_blob(&mut c, &g, "lib/app", layer), 201);
    assert_status(
        &send(
            &mut c,
            "HEAD",
            &format!("/v2/lib/app/blobs/{ld}"),
            Some(&g),
            b"",
        ),
        200,
    );
}

/// The form of `POST /token`.
fn post_token(c: &mut Client, form: &str) -> Response {
    c.request(
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
}

#[test]
fn refresh_and_password_grants() {
    let s = start(RULES, &[]);
    let mut c = s.server.client();
    let alice = basic("alice", "alice-pw");
    // docker login: GET with offline_token and client_id gives a refresh token.
    let r = send(
        &mut c,
        "GET",
        "/token?service=ringyard&offline_token=true&client_id=docker&account=alice",
        Some(&alice),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    // A refresh token is not an access token.
    challenge_of(&send(&mut c, "GET", "/v2/", Some(&bearer(&refresh)), b""));
    // Traded back for an access token.
    let form = format!(
        "grant_type=refresh_token&service=ringyard&client_id=docker&refresh_token={refresh}\
         &scope=repository%3Alib%2Fapp%3Apull+repository%3Alib%2Fapp%3Apush"
    );
    let r = post_token(&mut c, &form);
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["scope"], "repository:lib/app:pull,push");
    let token = j["access_token"].as_str().unwrap().to_string();
    assert_status(
        &push_blob(&mut c, &bearer(&token), "lib/app", b"via refresh"),
        201,
    );
    // The password grant, with a refresh token asked for.
    let r = post_token(
        &mut c,
        "grant_type=password&service=ringyard&client_id=test&username=bob&password=bob-pw\
         &access_type=offline&scope=repository%3Alib%2Fapp%3Apull",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["refresh_token"].is_string());
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let digest = sha256_digest(b"via refresh");
    assert_status(
        &send(
            &mut c,
            "GET",
            &format!("/v2/lib/app/blobs/{digest}"),
            Some(&bearer(&token)),
            b"",
        ),
        200,
    );
    let r = post_token(
        &mut c,
        "grant_type=password&service=ringyard&client_id=test&username=bob&password=wrong",
    );
    assert_eq!(r.status, 401, "{}", r.text());
    let r = post_token(
        &mut c,
        "grant_type=password&service=other&client_id=test&username=bob&password=bob-pw",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    // A changed password ends alice's refresh token (once the file is reloaded).
    write_htpasswd(&s.htpasswd, &[("alice", "new-pw"), ("bob", "bob-pw")]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = post_token(&mut c, &form);
        if r.status == 401 {
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            Instant::now() < deadline,
            "refresh token still works after the change"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn external_issuer_tokens_are_accepted_and_others_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (corp, _) = SigningKey::generate().unwrap();
    let jwks = dir.path().join("corp.jwks.json");
    std::fs::write(&jwks, corp.key_set().to_jwks()).unwrap();
    let yaml = format!(
        "{RULES}  token:\n    external:\n      issuer: corp-auth\n      realm: https://auth.example/token\n      jwks: {}\n",
        jwks.display()
    );
    let s = start(&yaml, &[]);
    let mut c = s.server.client();
    // The challenge sends clients to the external issuer.
    let ch = challenge_of(&send(&mut c, "GET", "/v2/lib/app/tags/list", None, b""));
    assert_eq!(
        ch,
        "Bearer realm=\"https://auth.example/token\",service=\"ringyard\",scope=\"repository:lib/app:pull\""
    );
    let access = vec![Scope {
        resource_type: "repository".into(),
        class: None,
        name: "ci/app".into(),
        actions: vec!["pull".into(), "push".into()],
    }];
    let theirs = mint(
        &corp,
        "corp-auth",
        "ci-bot",
        "ringyard",
        access.clone(),
        now(),
    );
    // Accepted: its access claim decides (the rules give ci-bot nothing).
    assert_status(
        &push_blob(&mut c, &bearer(&theirs), "ci/app", b"external"),
        201,
    );
    // The same key under another issuer name, and another issuer's key: refused.
    let impostor = mint(
        &corp,
        "someone-else",
        "ci-bot",
        "ringyard",
        access.clone(),
        now(),
    );
    let (evil, _) = SigningKey::generate().unwrap();
    let unknown = mint(&evil, "corp-auth", "ci-bot", "ringyard", access, now());
    for t in [impostor, unknown] {
        let ch = challenge_of(&push_blob(&mut c, &bearer(&t), "ci/app", b"refused"));
        assert!(ch.contains("error=\"invalid_token\""), "{ch}");
    }
    assert_status(
        &send(
            &mut c,
            "HEAD",
            &format!("/v2/ci/app/blobs/{}", sha256_digest(b"refused")),
            Some(&bearer(&theirs)),
            b"",
        ),
        404,
    );
}

/// skopeo follows the Bearer challenge to /token with `--creds`.
#[test]
fn skopeo_follows_the_bearer_challenge() {
    require_tool("skopeo");
    let s = start(RULES, &[]);
    let mut c = s.server.client();
    let alice = basic("alice", "alice-pw");
    let md = push_image(&mut c, &alice, "lib/app", "v1", b"a layer for skopeo");
    let host = s.server.host();
    let skopeo = |args: &[&str]| skopeo_in(s.dir.path(), args);
    let src = format!("docker://{host}/lib/app:v1");
    let (ok, raw, out) = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "alice:alice-pw",
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
        &format!("docker://{host}/lib/copy:v1"),
    ]);
    assert!(ok, "{out}");
    let (ok, _, out) = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "alice:wrong",
        &src,
    ]);
    assert!(!ok, "wrong password: {out}");
}

/// The refresh grant rotates: it answers with a new refresh token (another one, for the same
/// user and client, with a fresh expiry) that works in turn, and the presented one keeps
/// working, as docker keeps the identity token of `docker login` and never stores another.
#[test]
fn refresh_grant_rotates_and_the_first_token_keeps_working() {
    let s = start(RULES, &[]);
    let mut c = s.server.client();
    let r = send(
        &mut c,
        "GET",
        "/token?service=ringyard&offline_token=true&client_id=docker&account=alice",
        Some(&basic("alice", "alice-pw")),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let first = r.json()["refresh_token"].as_str().unwrap().to_string();
    let claims = |t: &str| {
        let payload = t.split('.').nth(1).unwrap();
        json(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
    };
    let grant = |c: &mut Client, refresh: &str| {
        let r = post_token(
            c,
            &format!(
                "grant_type=refresh_token&service=ringyard&client_id=docker\
                 &refresh_token={refresh}&scope=repository%3Alib%2Fapp%3Apull"
            ),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j["scope"], "repository:lib/app:pull");
        j["refresh_token"].as_str().unwrap().to_string()
    };
    // Issued within the same second as the first, the second would still differ (its id).
    let second = grant(&mut c, &first);
    assert_ne!(second, first, "a new refresh token");
    let (a, b) = (claims(&first), claims(&second));
    for same in ["sub", "client_id", "cred", "kind", "aud"] {
        assert_eq!(a[same], b[same], "{same}: {a} / {b}");
    }
    assert!(b["exp"].as_i64() >= a["exp"].as_i64(), "a fresh expiry");
    let third = grant(&mut c, &second);
    assert_ne!(third, second);
    let again = grant(&mut c, &first);
    assert_ne!(again, first, "the first keeps working, and rotates again");
    assert_eq!(claims(&again)["kind"], "user");
}
