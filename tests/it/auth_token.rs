//! The Docker token service against the real binary: the flow docker follows, by hand
//! (challenge, `GET /token` with Basic and the challenge's scope, retry with Bearer), push and
//! pull with tokens, refusals (`insufficient_scope` with the scope; expired, foreign, `alg:
//! none` and wrong-audience tokens as `invalid_token`, nothing stored), refresh and password
//! grants, the JWKS, external issuers' tokens (one by JWKS, one by an `x5c` chain; each for
//! its own audience) and their configuration errors, a partial grant, and skopeo following
//! the Bearer challenge with `--creds`.
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
    let verifier = Verifier::new(vec![TrustedIssuer {
        issuer: "ringyard".into(),
        audience: "ringyard".into(),
        keys,
        roots: None,
        algs: vec![ringyard::auth::token::keys::Alg::Es256],
    }]);
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
    let blob = format!("/v2/lib/app/blobs/{ld}");
    assert_status(&send(&mut c, "HEAD", &blob, Some(&g), b""), 404);
    assert_status(&push_blob(&mut c, &g, "lib/app", layer), 201);
    assert_status(&send(&mut c, "HEAD", &blob, Some(&g), b""), 200);
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
    let r = c.post_token(&form);
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["scope"], "repository:lib/app:pull,push");
    let token = j["access_token"].as_str().unwrap().to_string();
    assert_status(
        &push_blob(&mut c, &bearer(&token), "lib/app", b"via refresh"),
        201,
    );
    // The password grant, with a refresh token asked for.
    let r = c.post_token(
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
    let r = c.post_token(
        "grant_type=password&service=ringyard&client_id=test&username=bob&password=wrong",
    );
    assert_eq!(r.status, 401, "{}", r.text());
    let r = c.post_token(
        "grant_type=password&service=other&client_id=test&username=bob&password=bob-pw",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    // A changed password ends alice's refresh token (once the file is reloaded).
    write_htpasswd(&s.htpasswd, &[("alice", "new-pw"), ("bob", "bob-pw")]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = c.post_token(&form);
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

/// `pull,push` on `repo`, as an `access` claim.
fn push_scope(repo: &str) -> Vec<Scope> {
    vec![Scope {
        resource_type: "repository".into(),
        class: None,
        name: repo.into(),
        actions: vec!["pull".into(), "push".into()],
    }]
}

/// An issuer that signs with a certificate: a root CA (its PEM, for `rootcertbundle`) and a
/// leaf it signed, whose key signs tokens that carry the leaf in `x5c`.
struct CertIssuer {
    root_pem: String,
    leaf_der: Vec<u8>,
    leaf_key: ring::signature::EcdsaKeyPair,
}

impl CertIssuer {
    fn new() -> CertIssuer {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let params = |name: &str, ca: bool| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            if ca {
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            }
            p
        };
        let root_key = KeyPair::generate().unwrap();
        let root_params = params("eu token root", true);
        let root_pem = root_params.self_signed(&root_key).unwrap().pem();
        let root = Issuer::new(root_params, root_key);
        let leaf = KeyPair::generate().unwrap();
        let leaf_der = params("eu token signer", false)
            .signed_by(&leaf, &root)
            .unwrap()
            .der()
            .to_vec();
        let leaf_key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &leaf.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        CertIssuer {
            root_pem,
            leaf_der,
            leaf_key,
        }
    }

    /// An ES256 token with the leaf in `x5c`, as distribution's token servers make them.
    fn token(&self, issuer: &str, audience: &str, access: Vec<Scope>) -> String {
        let x5c = base64::engine::general_purpose::STANDARD.encode(&self.leaf_der);
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": [x5c]});
        let t = now();
        let claims = serde_json::json!({
            "iss": issuer, "sub": "eu-bot", "aud": audience, "exp": t + 300, "nbf": t,
            "iat": t, "jti": b64url(&t.to_be_bytes()), "access": access,
        });
        let input = format!(
            "{}.{}",
            b64url(&serde_json::to_vec(&header).unwrap()),
            b64url(&serde_json::to_vec(&claims).unwrap())
        );
        let sig = self
            .leaf_key
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64url(sig.as_ref()))
    }
}

/// Writes `key`'s JWKS into `dir`; its path.
fn jwks_file(dir: &Path, name: &str, key: &SigningKey) -> String {
    let path = dir.join(name);
    std::fs::write(&path, key.key_set().to_jwks()).unwrap();
    path.to_str().unwrap().to_string()
}

/// Three external issuers beside ours: corp-auth by JWKS for our default audience, eu-auth by
/// an x5c chain to a root bundle for `harbor-eu`, us-auth by JWKS; the first two without a
/// realm, so the challenge names eu-auth's, the first that has one.
#[test]
fn external_issuers_each_trusted_for_their_own_audience() {
    let dir = tempfile::tempdir().unwrap();
    let (corp, _) = SigningKey::generate().unwrap();
    let (us, _) = SigningKey::generate().unwrap();
    let eu = CertIssuer::new();
    let roots = dir.path().join("eu-roots.pem");
    std::fs::write(&roots, &eu.root_pem).unwrap();
    let yaml = format!(
        "{RULES}  token:
    external:
      - issuer: corp-auth
        jwks: {}
      - issuer: eu-auth
        rootcertbundle: {}
        service: harbor-eu
        realm: https://eu.example/token
      - issuer: us-auth
        jwks: {}
        realm: https://us.example/token
",
        jwks_file(dir.path(), "corp.jwks.json", &corp),
        roots.display(),
        jwks_file(dir.path(), "us.jwks.json", &us),
    );
    let s = start(&yaml, &[]);
    let mut c = s.server.client();
    let ch = challenge_of(&send(&mut c, "GET", "/v2/lib/app/tags/list", None, b""));
    assert_eq!(
        ch,
        "Bearer realm=\"https://eu.example/token\",service=\"harbor-eu\",scope=\"repository:lib/app:pull\""
    );
    assert!(s.server.stderr().contains(
        "challenges name realm https://eu.example/token service harbor-eu; tokens of external issuers corp-auth, eu-auth, us-auth trusted"
    ), "{}", s.server.stderr());

    // Each issuer's token for its own audience works on real requests; their access claims
    // decide (the rules give these subjects nothing).
    let corp_token = mint(
        &corp,
        "corp-auth",
        "ci-bot",
        "ringyard",
        push_scope("ci/app"),
        now(),
    );
    let eu_token = eu.token("eu-auth", "harbor-eu", push_scope("ci/app"));
    let us_token = mint(
        &us,
        "us-auth",
        "us-bot",
        "ringyard",
        push_scope("ci/app"),
        now(),
    );
    assert_status(
        &push_blob(&mut c, &bearer(&corp_token), "ci/app", b"from corp"),
        201,
    );
    assert_status(
        &push_blob(&mut c, &bearer(&eu_token), "ci/app", b"from eu"),
        201,
    );
    let head = |c: &mut Client, token: &str, bytes: &[u8]| {
        let path = format!("/v2/ci/app/blobs/{}", sha256_digest(bytes));
        send(c, "HEAD", &path, Some(&bearer(token)), b"").status
    };
    assert_eq!(head(&mut c, &eu_token, b"from corp"), 200);
    assert_eq!(head(&mut c, &us_token, b"from eu"), 200);
    // Ours still carry our service.
    let ours = load_or_create(None, &s.server.root).unwrap();
    let own = mint(
        &ours,
        "ringyard",
        "alice",
        "ringyard",
        push_scope("lib/app"),
        now(),
    );
    assert_status(&push_blob(&mut c, &bearer(&own), "lib/app", b"ours"), 201);

    // Refused with invalid_token, and nothing stored: a key nobody configured, one issuer's
    // key claiming another, a token of one issuer for another's audience (either way), ours
    // for an external audience, a chain to no configured root.
    let (stranger, _) = SigningKey::generate().unwrap();
    let other_roots = CertIssuer::new();
    for (what, t) in [
        (
            "an untrusted key",
            mint(
                &stranger,
                "corp-auth",
                "ci-bot",
                "ringyard",
                push_scope("ci/app"),
                now(),
            ),
        ),
        (
            "corp's key as us-auth",
            mint(
                &corp,
                "us-auth",
                "ci-bot",
                "ringyard",
                push_scope("ci/app"),
                now(),
            ),
        ),
        (
            "corp for harbor-eu",
            mint(
                &corp,
                "corp-auth",
                "ci-bot",
                "harbor-eu",
                push_scope("ci/app"),
                now(),
            ),
        ),
        (
            "eu for ringyard",
            eu.token("eu-auth", "ringyard", push_scope("ci/app")),
        ),
        (
            "ours for harbor-eu",
            mint(
                &ours,
                "ringyard",
                "alice",
                "harbor-eu",
                push_scope("ci/app"),
                now(),
            ),
        ),
        (
            "another root",
            other_roots.token("eu-auth", "harbor-eu", push_scope("ci/app")),
        ),
        (
            "an unknown issuer",
            mint(
                &corp,
                "nobody",
                "ci-bot",
                "ringyard",
                push_scope("ci/app"),
                now(),
            ),
        ),
    ] {
        let r = push_blob(&mut c, &bearer(&t), "ci/app", b"refused");
        let ch = challenge_of(&r);
        assert!(ch.ends_with(",error=\"invalid_token\""), "{what}: {ch}");
        assert!(
            ch.starts_with("Bearer realm=\"https://eu.example/token\""),
            "{what}: {ch}"
        );
    }
    assert_eq!(head(&mut c, &corp_token, b"refused"), 404);
}

/// A bad `auth.token.external` stops the start, naming the record and its line (and the file
/// when a file is at fault).
#[test]
fn bad_external_issuers_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    write_htpasswd(&htpasswd, USERS);
    let root = dir.path().join("root");
    let (corp, _) = SigningKey::generate().unwrap();
    let jwks = jwks_file(dir.path(), "corp.jwks.json", &corp);
    let refused = |external: &str, extra: &[&str]| {
        let config = dir.path().join("ringyard.yaml");
        std::fs::write(
            &config,
            format!("auth:\n  token:\n    external:\n{external}"),
        )
        .unwrap();
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--root",
            root.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--htpasswd",
            htpasswd.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        match Server::try_start(&args) {
            Ok(_) => panic!("{external} started"),
            Err((status, stderr)) => (status.code(), stderr),
        }
    };
    let config = dir.path().join("ringyard.yaml");
    let config = config.display();
    // Read with the file: exit 2, file and line.
    let (code, e) = refused(
        &format!("      - issuer: corp-auth\n        jwks: {jwks}\n      - issuer: corp-auth\n        jwks: {jwks}\n"),
        &["--token"],
    );
    assert_eq!(code, Some(2), "{e}");
    assert!(e.contains(&format!("{config}:6: auth.token.external[1].issuer: \"corp-auth\" again (first in auth.token.external[0] on line 4)")), "{e}");
    // Checked at start: exit 1, the record and its line.
    let (code, e) = refused(
        "      - issuer: corp-auth\n        realm: https://auth.example/token\n",
        &["--token"],
    );
    assert_eq!(code, Some(1), "{e}");
    assert!(
        e.contains("auth.token.external[0] (line 4): needs jwks"),
        "{e}"
    );
    let missing = dir.path().join("missing.jwks.json");
    let (_, e) = refused(
        &format!("      - issuer: corp-auth\n        jwks: {jwks}\n      - issuer: eu-auth\n        jwks: {}\n", missing.display()),
        &["--token"],
    );
    assert!(
        e.contains(&format!(
            "auth.token.external[1] (line 6): {}",
            missing.display()
        )),
        "{e}"
    );
    let (_, e) = refused(
        &format!("      - issuer: corp-auth\n        jwks: {jwks}\n"),
        &[],
    );
    assert!(
        e.contains("no auth.token.external record has a realm"),
        "{e}"
    );
    let (_, e) = refused(
        &format!("      - issuer: ringyard\n        jwks: {jwks}\n"),
        &["--token"],
    );
    assert!(
        e.contains(
            "auth.token.external[0] (line 4): issuer \"ringyard\" is also auth.token.issuer"
        ),
        "{e}"
    );
}

/// A team behind its own token server: external issuers alone turn authentication on, with no
/// htpasswd file and no built-in service. Their tokens are the credentials, the anonymous
/// rules still apply, and Basic credentials have no users to match.
#[test]
fn an_external_issuer_alone_needs_no_htpasswd() {
    let dir = tempfile::tempdir().unwrap();
    let (corp, _) = SigningKey::generate().unwrap();
    let config = dir.path().join("ringyard.yaml");
    std::fs::write(
        &config,
        format!(
            "auth:
  access:
    - repository: \"public/**\"
      anonymous: [pull]
  token:
    external:
      - issuer: corp-auth
        jwks: {}
        service: registry.example
        realm: https://auth.example/token
",
            jwks_file(dir.path(), "corp.jwks.json", &corp)
        ),
    )
    .unwrap();
    let root = dir.path().join("root");
    let server = Server::start_with(&root, &["--config", config.to_str().unwrap()]);
    assert!(
        server.stderr().contains("authentication: no htpasswd file"),
        "{}",
        server.stderr()
    );
    let mut c = server.client();
    assert_eq!(
        challenge_of(&send(&mut c, "GET", "/v2/", None, b"")),
        "Bearer realm=\"https://auth.example/token\",service=\"registry.example\""
    );
    let token = mint(
        &corp,
        "corp-auth",
        "ci-bot",
        "registry.example",
        push_scope("public/app"),
        now(),
    );
    assert_status(
        &push_blob(&mut c, &bearer(&token), "public/app", b"corp"),
        201,
    );
    // Anonymous: pull where the rules allow it, nothing else.
    let path = format!("/v2/public/app/blobs/{}", sha256_digest(b"corp"));
    assert_eq!(send(&mut c, "HEAD", &path, None, b"").status, 200);
    let anon_push = format!(
        "/v2/public/app/blobs/uploads/?digest={}",
        sha256_digest(b"anon")
    );
    challenge_of(&send(&mut c, "POST", &anon_push, None, b"anon"));
    // No users: Basic credentials are wrong ones, never anonymous.
    let r = send(&mut c, "GET", &path, Some(&basic("alice", "alice-pw")), b"");
    assert_eq!(
        challenge_of(&r),
        "Bearer realm=\"https://auth.example/token\",service=\"registry.example\""
    );
    // Our token service is off: no /token here.
    assert_eq!(
        send(&mut c, "GET", "/token?service=registry.example", None, b"").status,
        404
    );
    server.stop();
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
        let r = c.post_token(&format!(
            "grant_type=refresh_token&service=ringyard&client_id=docker\
                 &refresh_token={refresh}&scope=repository%3Alib%2Fapp%3Apull"
        ));
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
