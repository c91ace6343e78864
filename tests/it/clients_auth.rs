//! Real clients against a registry with authentication (htpasswd written by `htpasswd -Bbc`,
//! user `admin`, password `secret`), issue 12 section 4:
//!
//! - docker, through an engine the tests start themselves ([`dockerd`]): the spec's demo
//!   literally over plain HTTP (`docker login localhost:PORT -u admin -p secret`, push, logout,
//!   pull refused, login, pull, the same image), and the same over TLS with the test CA trusted
//!   through `/etc/docker/certs.d/HOST:PORT/ca.crt`. docker treats every registry whose host
//!   resolves into 127.0.0.0/8 as insecure: over https it then skips certificate verification
//!   altogether (and reads no `certs.d`), so a TLS test on `localhost` or `127.0.0.1` would
//!   pass whatever certificate the server showed. The TLS test therefore names the registry
//!   `0.0.0.0:PORT`: connecting to 0.0.0.0 reaches the loopback listener, but 0.0.0.0 is not in
//!   127.0.0.0/8, so docker verifies the certificate (which names IP 0.0.0.0) against the CA in
//!   `certs.d`, and without that file the login fails with `x509: certificate signed by
//!   unknown authority`, which the test checks first.
//! - docker with the token service on (`--token`, Bearer challenges): the same demo, where
//!   `docker login` stores the refresh token the service issues (`identitytoken`) instead of
//!   the password and later pushes and pulls trade it at `POST /token`; a user who may only
//!   pull is refused a push.
//! - docker with a robot token (`ringyard token create`) as the password of `docker login -u
//!   ci-builder --password-stdin`, answering Basic challenges and Bearer ones: push inside its
//!   scope, refused outside it, pull, and refused once `ringyard token revoke` ran.
//! - skopeo (`--dest-creds` / `--src-creds`, `--dest-cert-dir` / `--src-cert-dir`) and podman
//!   (`--creds`, `--cert-dir`) with TLS verification on: push and pull with the right
//!   credentials, an authentication error with wrong ones (and nothing stored), a certificate
//!   error without the CA.
//!
//! Needs: dockerd and docker (docker.io), skopeo, podman, umoci, jq, /bin/busybox, htpasswd,
//! openssl, curl; a missing one fails the test with its name (`.ci/run` installs them).
//! docker's `certs.d` is a fixed path, so the TLS test runs as root.

use crate::common::*;
use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const USER: &str = "admin";
const PASSWORD: &str = "secret";
const CREDS: &str = "admin:secret";
const WRONG_CREDS: &str = "admin:wrong";

/// What docker, skopeo and podman print when the registry refuses for want of valid
/// credentials (docker: `no basic auth credentials` when it has none to answer a Basic
/// challenge with; the registry's own `UNAUTHORIZED` message otherwise).
const AUTH_REFUSALS: &[&str] = &[
    "no basic auth credentials",
    "unauthorized",
    "authentication required",
    "invalid username or password",
];

/// What docker prints when the registry refuses an action to the caller (403 `DENIED`, or a
/// Bearer token without the action).
const DENIALS: &[&str] = &["requested access to the resource is denied"];

/// What they print when the server's certificate is not trusted.
const CERT_REFUSALS: &[&str] = &[
    "x509: certificate signed by unknown authority",
    "certificate is not trusted",
];

#[track_caller]
fn assert_says(out: &str, any_of: &[&str], what: &str) {
    let lower = out.to_lowercase();
    assert!(
        any_of.iter().any(|m| lower.contains(&m.to_lowercase())),
        "{what}: expected one of {any_of:?} in the output:\n{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// the registry

/// What a [`Registry`] starts with beyond admin/secret in its htpasswd file.
#[derive(Default)]
struct Setup<'a> {
    /// TLS with the [`Pki`]'s server certificate.
    tls: Option<&'a Pki>,
    /// `--token`: the built-in token service, Bearer challenges.
    token: bool,
    /// More htpasswd users, (user, password).
    users: &'a [(&'a str, &'a str)],
    /// A configuration file (`auth.access` rules), passed with `--config`.
    config: Option<&'a str>,
}

/// ringyard with an htpasswd file holding admin/secret, plain or with TLS, with or without
/// the token service.
struct Registry {
    server: Server,
    dir: tempfile::TempDir,
    /// The CA file clients trust (TLS only).
    ca: Option<PathBuf>,
    /// The token service is on.
    token: bool,
}

impl Registry {
    fn start(tls: Option<&Pki>) -> Registry {
        Registry::start_with(Setup {
            tls,
            ..Setup::default()
        })
    }

    fn start_with(setup: Setup) -> Registry {
        for tool in ["htpasswd", "curl"] {
            require_tool(tool);
        }
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        let users = std::iter::once((USER, PASSWORD)).chain(setup.users.iter().copied());
        for (i, (user, password)) in users.enumerate() {
            let create = if i == 0 { "-Bbc" } else { "-Bb" };
            let (ok, out) = run_command(
                "htpasswd",
                &[create, htpasswd.to_str().unwrap(), user, password],
            );
            assert!(ok, "htpasswd {create} {user}: {out}");
        }
        let mut args: Vec<String> = vec![
            "--htpasswd".into(),
            htpasswd.to_str().unwrap().into(),
            "--auth-fail-delay".into(),
            "0".into(),
        ];
        if let Some(pki) = setup.tls {
            args.extend(["--tls-cert".into(), pki.s("server.crt")]);
            args.extend(["--tls-key".into(), pki.s("server.key")]);
        }
        if setup.token {
            args.push("--token".into());
        }
        if let Some(yaml) = setup.config {
            let config = dir.path().join("ringyard.yaml");
            std::fs::write(&config, yaml).unwrap();
            args.extend(["--config".into(), config.to_str().unwrap().into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::start_in_temp(&args);
        if setup.tls.is_some() {
            assert!(
                server.stderr().contains("with TLS"),
                "the listening line says TLS:\n{}",
                server.stderr()
            );
        }
        Registry {
            server,
            dir,
            ca: setup.tls.map(|p| p.path("ca.crt")),
            token: setup.token,
        }
    }

    fn port(&self) -> u16 {
        self.server.addr.port()
    }

    /// What docker prints when it has no credentials for this registry: with Basic challenges,
    /// that it has none to answer with; with Bearer ones it fetches an anonymous token, which
    /// grants nothing, and reports the registry's refusal of that token as a denial.
    fn anonymous_refusals(&self) -> &'static [&'static str] {
        if self.token {
            DENIALS
        } else {
            AUTH_REFUSALS
        }
    }

    /// GET `path` with curl (trusting the test CA under TLS), as `creds` if given: the status
    /// and the body.
    fn get(&self, path: &str, creds: Option<&str>) -> (u16, Vec<u8>) {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        let body = self.dir.path().join("curl-body");
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "60", "-o"])
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args([
                "-H",
                "Accept: application/vnd.docker.distribution.manifest.v2+json, \
                 application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.oci.image.index.v1+json",
            ]);
        if let Some(ca) = &self.ca {
            c.arg("--cacert").arg(ca);
        }
        if let Some(u) = creds {
            c.args(["-u", u]);
        }
        c.arg(format!("{scheme}://127.0.0.1:{}{path}", self.port()));
        let r = run_tool(c, self.dir.path());
        assert!(r.success(), "{}", r.describe());
        let status = r.stdout.trim().parse().expect("curl's status code");
        (status, std::fs::read(&body).unwrap_or_default())
    }

    /// The manifest stored for `repo:tag`, read with the right credentials; fails the test
    /// unless it is there.
    #[track_caller]
    fn manifest_digest(&self, repo: &str, tag: &str) -> String {
        let (status, body) = self.get(&format!("/v2/{repo}/manifests/{tag}"), Some(CREDS));
        assert_eq!(
            status,
            200,
            "{repo}:{tag} in the registry: {}",
            String::from_utf8_lossy(&body)
        );
        sha256_digest(&body)
    }

    /// Asserts that nothing is stored under `repo` (its tag list is 404 to the admin).
    #[track_caller]
    fn assert_no_repo(&self, repo: &str) {
        let (status, body) = self.get(&format!("/v2/{repo}/tags/list"), Some(CREDS));
        assert_eq!(
            status,
            404,
            "{repo} should hold nothing: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// docker

/// Builds a two-layer image FROM scratch (busybox and a file unique to this call, so that
/// removing it locally really removes a layer the pull must fetch again) as `tag`; its ID.
pub(crate) fn docker_build(cli: &DockerCli, tag: &str) -> String {
    assert!(
        Path::new("/bin/busybox").exists(),
        "missing tool: /bin/busybox (Debian package busybox-static)"
    );
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", ctx.path().join("busybox")).unwrap();
    let nonce = format!(
        "{tag} {} {:?}\n",
        std::process::id(),
        std::time::SystemTime::now()
    );
    std::fs::write(ctx.path().join("nonce"), nonce).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY nonce /nonce\n",
    )
    .unwrap();
    // No build cache: the tests share one engine, and a step cached from another test's
    // build names an intermediate image that test's `docker rmi` may delete meanwhile
    // ("failed to set parent ...: unknown parent image ID").
    cli.ok(&[
        "build",
        "--no-cache",
        "--network",
        "host",
        "-t",
        tag,
        ctx.path().to_str().unwrap(),
    ]);
    image_id(cli, tag).expect("the image just built")
}

/// The local image ID of `image`, `None` if the engine has no such image.
pub(crate) fn image_id(cli: &DockerCli, image: &str) -> Option<String> {
    let r = cli.run(&["image", "inspect", "--format", "{{.Id}}", image]);
    if r.success() {
        Some(r.stdout.trim().to_string())
    } else {
        assert_says(&r.output(), &["no such image"], "docker image inspect");
        None
    }
}

/// The `auth` entry `docker login` stored for `registry` in the test's own config.json.
fn stored_auth(cli: &DockerCli, registry: &str) -> Option<String> {
    cli.config_json()["auths"][registry]["auth"]
        .as_str()
        .map(str::to_string)
}

/// Asserts what `docker login` as `user` with `password` left for `registry` in the test's
/// DOCKER_CONFIG. Answering Basic challenges, docker stores the credentials themselves.
/// Answering Bearer ones, it asks `GET /token` for a refresh token (`offline_token=true`,
/// `client_id=docker`) and stores that as `identitytoken` with the user name but no
/// password, so every later push and pull trades the refresh token for access tokens.
#[track_caller]
fn assert_stored_login(
    cli: &DockerCli,
    reg: &Registry,
    registry: &str,
    user: &str,
    password: &str,
) {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let config = cli.config_json();
    let entry = &config["auths"][registry];
    let stored = if reg.token {
        let refresh = entry["identitytoken"].as_str().unwrap_or_else(|| {
            panic!("docker login stores an identity token (a refresh token): {config}")
        });
        let part = |i: usize| {
            let b64 = refresh.split('.').nth(i).expect("a JWT");
            json(&URL_SAFE_NO_PAD.decode(b64).expect("base64url"))
        };
        assert_eq!(part(0)["typ"], "ringyard-refresh+jwt", "{refresh}");
        let claims = part(1);
        assert_eq!(claims["sub"], user, "{claims}");
        assert_eq!(claims["client_id"], "docker", "{claims}");
        // Bound to the robot, never to an htpasswd user of the same name.
        let kind = if password.starts_with("ryt_") {
            "robot"
        } else {
            "user"
        };
        assert_eq!(claims["kind"], kind, "{claims}");
        format!("{user}:")
    } else {
        assert!(entry.get("identitytoken").is_none(), "{config}");
        format!("{user}:{password}")
    };
    assert_eq!(
        stored_auth(cli, registry),
        Some(STANDARD.encode(stored)),
        "docker login's entry in the test's DOCKER_CONFIG: {config}"
    );
}

/// The spec's demo against `registry` (`HOST:PORT` as the image reference names it): push
/// refused before login, a wrong password refused, `docker login -u admin -p secret`, push,
/// logout, the local image removed, pull refused, login again, pull, the same image.
fn docker_demo(cli: &DockerCli, reg: &Registry, registry: &str) {
    let image = format!("{registry}/demo/app:v1");
    let id = docker_build(cli, &image);

    let out = cli.fails(&["push", &image]);
    assert_says(
        &out,
        reg.anonymous_refusals(),
        "docker push before docker login",
    );
    reg.assert_no_repo("demo/app");

    let out = cli.fails(&["login", registry, "-u", USER, "-p", "wrong"]);
    assert_says(
        &out,
        &["401", "unauthorized"],
        "docker login, wrong password",
    );
    assert_eq!(
        stored_auth(cli, registry),
        None,
        "a failed login stores nothing"
    );

    let out = cli.ok(&["login", registry, "-u", USER, "-p", PASSWORD]);
    assert!(out.contains("Login Succeeded"), "docker login:\n{out}");
    assert_stored_login(cli, reg, registry, USER, PASSWORD);

    let out = cli.ok(&["push", &image]);
    let digest = out
        .split("digest: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in docker push's output:\n{out}"))
        .to_string();
    assert_eq!(
        reg.manifest_digest("demo/app", "v1"),
        digest,
        "the registry stores the manifest docker pushed"
    );
    let (status, _) = reg.get("/v2/demo/app/manifests/v1", None);
    assert_eq!(status, 401, "the manifest without credentials");

    let out = cli.ok(&["logout", registry]);
    assert!(out.contains("Removing login credentials"), "{out}");
    assert_eq!(stored_auth(cli, registry), None, "docker logout");

    cli.ok(&["rmi", &image]);
    assert_eq!(image_id(cli, &image), None, "the image is gone locally");

    let out = cli.fails(&["pull", &image]);
    assert_says(
        &out,
        reg.anonymous_refusals(),
        "docker pull after docker logout",
    );
    assert_eq!(image_id(cli, &image), None, "a refused pull brings nothing");

    cli.ok(&["login", registry, "-u", USER, "-p", PASSWORD]);
    let out = cli.ok(&["pull", &image]);
    assert!(
        out.contains(&format!("Digest: {digest}")),
        "docker pull names the pushed digest {digest}:\n{out}"
    );
    assert_eq!(
        image_id(cli, &image).as_deref(),
        Some(id.as_str()),
        "the pulled image is the one built and pushed"
    );
    let repo_digests = cli.ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &image,
    ]);
    assert!(
        repo_digests.contains(&format!("{registry}/demo/app@{digest}")),
        "RepoDigests: {repo_digests}"
    );
    cli.ok(&["rmi", &image]);
}

#[test]
fn docker_login_push_logout_pull_over_http() {
    let reg = Registry::start(None);
    let cli = DockerCli::new();
    // The spec's demo names localhost; docker speaks plain HTTP to it without settings.
    docker_demo(&cli, &reg, &format!("localhost:{}", reg.port()));
}

#[test]
fn docker_login_push_logout_pull_over_tls_with_certs_d() {
    let pki = Pki::standard();
    let reg = Registry::start(Some(&pki));
    let cli = DockerCli::new();
    let registry = format!("0.0.0.0:{}", reg.port());

    // Without the CA, docker does not trust the server: verification is on for this name.
    let out = cli.fails(&["login", &registry, "-u", USER, "-p", PASSWORD]);
    assert_says(
        &out,
        CERT_REFUSALS,
        "docker login before certs.d has the CA",
    );

    let _certs = DockerCertsD::install(&registry, &pki.path("ca.crt"));
    docker_demo(&cli, &reg, &registry);
}

/// A second user, and the rules of the token-service demo: admin may push and pull
/// `demo/app`, reader may only pull it.
const READER: &str = "reader";
const READER_PASSWORD: &str = "reader-pw";
const DEMO_RULES: &str = "auth:
  access:
    - repository: demo/app
      users: [admin]
      actions: [pull, push]
    - repository: demo/app
      users: [reader]
      actions: [pull]
";

#[test]
fn docker_login_push_logout_pull_with_the_token_service() {
    let reg = Registry::start_with(Setup {
        token: true,
        users: &[(READER, READER_PASSWORD)],
        config: Some(DEMO_RULES),
        ..Setup::default()
    });
    let registry = format!("127.0.0.1:{}", reg.port());
    let r = reg.server.client().get("/v2/demo/app/manifests/v1");
    assert_eq!(r.status, 401, "{}", r.text());
    let challenge = must_header(&r, "www-authenticate");
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"http://{registry}/token\"")),
        "the challenge sends docker to the token service: {challenge}"
    );

    docker_demo(&DockerCli::new(), &reg, &registry);

    // reader: the pull goes through, the push of a new tag does not.
    let reader = DockerCli::new();
    let image = format!("{registry}/demo/app:v1");
    reader.ok(&["login", &registry, "-u", READER, "-p", READER_PASSWORD]);
    assert_stored_login(&reader, &reg, &registry, READER, READER_PASSWORD);
    let out = reader.ok(&["pull", &image]);
    let digest = reg.manifest_digest("demo/app", "v1");
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    let v2 = format!("{registry}/demo/app:v2");
    reader.ok(&["tag", &image, &v2]);
    let out = reader.fails(&["push", &v2]);
    assert_says(&out, DENIALS, "docker push by a user who may only pull");
    let (status, tags) = reg.get("/v2/demo/app/tags/list", Some(CREDS));
    assert_eq!(
        (status, json(&tags)["tags"].clone()),
        (200, serde_json::json!(["v1"]))
    );
    reader.ok(&["rmi", &image, &v2]);

    // The demo's last pull had only the identity token to go on: docker traded it for access
    // tokens with `POST /token` (grant_type=refresh_token), the one POST the token route
    // answers 200 with a user. Access lines reach stderr within about half a second.
    let traded = |l: &str| {
        l.contains(" access method=POST route=other ")
            && l.contains(" status=200 ")
            && l.ends_with(" user=admin")
    };
    let start = Instant::now();
    while !reg.server.stderr().lines().any(traded) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no refresh-token grant in the access log:\n{}",
            tail(&reg.server.stderr(), 4000)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The robot of the robot-token tests and its scope.
const ROBOT: &str = "ci-builder";
const ROBOT_SCOPE: &str = "repository:ci/*:pull,push";

/// `ringyard token ARGS` on the running registry's data directory; its output.
fn robot_command(reg: &Registry, args: &[&str]) -> String {
    let root = reg.server.root.to_str().unwrap();
    let args: Vec<&str> = [&["token"], args, &["--root", root]].concat();
    let (ok, out) = run_command(env!("CARGO_BIN_EXE_ringyard"), &args);
    assert!(ok, "ringyard {args:?}: {out}");
    out
}

/// A robot token as docker's password (`docker login -u ci-builder --password-stdin`): push
/// inside its scope, refused outside it, pull; after `ringyard token revoke`, pulls refused
/// (the registry sees the revocation within half a second: polled, no timing asserted).
fn docker_robot(reg: &Registry) {
    let cli = DockerCli::new();
    let registry = format!("127.0.0.1:{}", reg.port());
    let created = robot_command(
        reg,
        &[
            "create",
            "--name",
            ROBOT,
            "--scope",
            ROBOT_SCOPE,
            "--expires",
            "30d",
        ],
    );
    let secret = created
        .lines()
        .find(|l| l.starts_with("ryt_"))
        .unwrap_or_else(|| panic!("no secret printed: {created}"));
    let login = ["login", &registry, "-u", ROBOT, "--password-stdin"];
    let r = cli.run_fed(&login, secret);
    if !(r.success() && r.output().contains("Login Succeeded")) {
        // the server's lines reach its stderr within about half a second
        std::thread::sleep(Duration::from_secs(1));
        panic!(
            "{}\n--- ringyard's log (tail) ---\n{}",
            r.describe(),
            tail(&reg.server.stderr(), 3000)
        );
    }
    assert_stored_login(&cli, reg, &registry, ROBOT, secret);

    let image = format!("{registry}/ci/app:1");
    let id = docker_build(&cli, &image);
    cli.ok(&["push", &image]);
    reg.manifest_digest("ci/app", "1");
    let other = format!("{registry}/other/app:1");
    cli.ok(&["tag", &image, &other]);
    let out = cli.fails(&["push", &other]);
    assert_says(&out, DENIALS, "docker push outside the robot's scope");
    reg.assert_no_repo("other/app");

    cli.ok(&["rmi", &image, &other]);
    cli.ok(&["pull", &image]);
    assert_eq!(
        image_id(&cli, &image),
        Some(id),
        "the robot pulls what it pushed"
    );

    robot_command(reg, &["revoke", ROBOT]);
    let start = Instant::now();
    let out = loop {
        let r = cli.run(&["pull", &image]);
        if !r.success() {
            break r.output();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "docker pull still works 10 s after the revocation: {}",
            r.describe()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_says(
        &out,
        AUTH_REFUSALS,
        "docker pull with a revoked robot token",
    );
    cli.ok(&["rmi", &image]);
}

#[test]
fn docker_robot_token_with_basic() {
    docker_robot(&Registry::start_with(Setup::default()));
}

/// docker login with a robot token asks the token service for a refresh token like any login.
#[test]
fn docker_robot_token_with_the_token_service() {
    docker_robot(&Registry::start_with(Setup {
        token: true,
        ..Setup::default()
    }));
}

// ---------------------------------------------------------------------------------------------
// skopeo and podman

static FIXTURES: OnceLock<PathBuf> = OnceLock::new();

/// The fixture script's `busybox` OCI layout (built once per process).
pub(crate) fn busybox_layout() -> PathBuf {
    FIXTURES
        .get_or_init(|| {
            for tool in ["umoci", "jq"] {
                require_tool(tool);
            }
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("clients-auth-fixtures-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build-images.sh");
            let (ok, out) = run_command("bash", &[script.to_str().unwrap(), dir.to_str().unwrap()]);
            assert!(ok, "build-images.sh: {out}");
            dir
        })
        .join("busybox")
}

/// The digest tagged `tag` in an OCI layout's index.json.
pub(crate) fn layout_digest(layout: &Path, tag: &str) -> String {
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    index["manifests"]
        .as_array()
        .expect("index.json manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag))
        .and_then(|m| m["digest"].as_str())
        .unwrap_or_else(|| panic!("{}: no tag {tag}", layout.display()))
        .to_string()
}

/// skopeo and podman with their storage, configuration and registries.conf in a temp dir
/// (nothing marked insecure: TLS verification stays on), and the directories `--cert-dir`
/// takes: one with the test CA, one without.
struct Containers {
    tmp: tempfile::TempDir,
    with_ca: PathBuf,
    without_ca: PathBuf,
}

impl Containers {
    fn new(pki: &Pki, tools: &[&str]) -> Containers {
        for t in tools {
            require_tool(t);
        }
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let p = |n: &str| t.join(n).display().to_string();
        std::fs::write(
            t.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                p("graph"),
                p("run")
            ),
        )
        .unwrap();
        std::fs::write(
            t.join("containers.conf"),
            format!(
                "[engine]\ntmp_dir = \"{}\"\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\n",
                p("libpod-tmp")
            ),
        )
        .unwrap();
        std::fs::write(
            t.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        // podman wants REGISTRY_AUTH_FILE to exist; `--creds` leaves it as it is.
        std::fs::write(t.join("auth.json"), "{}\n").unwrap();
        std::fs::create_dir_all(t.join("tmp")).unwrap();
        let without_ca = t.join("no-ca");
        std::fs::create_dir_all(&without_ca).unwrap();
        Containers {
            with_ca: pki.cert_dir("ca"),
            without_ca,
            tmp,
        }
    }

    fn run(&self, prog: &str, args: &[&str]) -> ToolRun {
        let t = self.tmp.path();
        let mut c = Command::new(prog);
        c.args(args)
            .env("CONTAINERS_STORAGE_CONF", t.join("storage.conf"))
            .env("CONTAINERS_CONF", t.join("containers.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", t.join("registries.conf"))
            .env("REGISTRY_AUTH_FILE", t.join("auth.json"))
            .env("TMPDIR", t.join("tmp"));
        run_tool(c, t)
    }

    /// Runs `prog ARGS`; fails the test unless it succeeds. Returns its stdout.
    #[track_caller]
    fn ok(&self, prog: &str, args: &[&str]) -> String {
        let r = self.run(prog, args);
        assert!(r.success(), "{}", r.describe());
        r.stdout
    }

    #[track_caller]
    fn ok_owned(&self, prog: &str, args: Vec<String>) -> String {
        self.ok(prog, &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    #[track_caller]
    fn fails(&self, prog: &str, args: &[&str]) -> String {
        let r = self.run(prog, args);
        assert!(
            r.status.is_some() && !r.success(),
            "expected a failure: {}",
            r.describe()
        );
        r.output()
    }

    /// Runs `prog` with the arguments `args(creds, cert_dir)` builds, twice: with a wrong
    /// password (and the CA), then with the right one but without the CA; asserts that both
    /// fail, with an authentication error and a certificate error.
    #[track_caller]
    fn assert_refusals(&self, prog: &str, what: &str, args: impl Fn(&str, &str) -> Vec<String>) {
        for (creds, trusted, refusals, why) in [
            (WRONG_CREDS, true, AUTH_REFUSALS, "with a wrong password"),
            (CREDS, false, CERT_REFUSALS, "without the CA"),
        ] {
            let a = args(creds, self.ca(trusted));
            let out = self.fails(prog, &a.iter().map(String::as_str).collect::<Vec<_>>());
            assert_says(&out, refusals, &format!("{prog} {what} {why}"));
        }
    }

    fn ca(&self, trusted: bool) -> &str {
        let d = if trusted {
            &self.with_ca
        } else {
            &self.without_ca
        };
        d.to_str().unwrap()
    }
}

#[test]
fn skopeo_creds_and_cert_dir_with_tls_verification() {
    let pki = Pki::standard();
    let reg = Registry::start(Some(&pki));
    let c = Containers::new(&pki, &["skopeo"]);
    let layout = busybox_layout();
    let src = format!("oci:{}:1", layout.display());
    let want = layout_digest(&layout, "1");
    let remote = |repo: &str| format!("docker://127.0.0.1:{}/{repo}:v1", reg.port());
    let ca = c.ca(true);

    // `skopeo copy FROM TO` with `--SIDE-creds` and `--SIDE-cert-dir` (SIDE: dest or src)
    let copy = |side: &'static str, from: String, to: String| {
        move |creds: &str, certs: &str| -> Vec<String> {
            let (c, d) = (format!("--{side}-creds"), format!("--{side}-cert-dir"));
            ["copy", &c, creds, &d, certs, &from, &to]
                .into_iter()
                .map(String::from)
                .collect()
        }
    };
    let push = copy("dest", src.clone(), remote("sk/app"));
    c.assert_refusals("skopeo", "push", &push);
    reg.assert_no_repo("sk/app");
    c.ok_owned("skopeo", push(CREDS, ca));
    assert_eq!(reg.manifest_digest("sk/app", "v1"), want, "skopeo's push");

    let out_dir = c.tmp.path().join("pulled");
    let dst = format!("oci:{}:v1", out_dir.display());
    let pull = copy("src", remote("sk/app"), dst);
    c.assert_refusals("skopeo", "pull", &pull);
    c.ok_owned("skopeo", pull(CREDS, ca));
    assert_eq!(layout_digest(&out_dir, "v1"), want, "skopeo's pull");
    let raw = c.run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--creds",
            CREDS,
            "--cert-dir",
            ca,
            &remote("sk/app"),
        ],
    );
    assert!(raw.success(), "{}", raw.describe());
    assert_eq!(
        sha256_digest(raw.stdout.as_bytes()),
        want,
        "skopeo inspect --raw: {}",
        raw.stdout
    );
}

#[test]
fn podman_creds_and_cert_dir_with_tls_verification() {
    let pki = Pki::standard();
    let reg = Registry::start(Some(&pki));
    let c = Containers::new(&pki, &["podman"]);
    let layout = busybox_layout();
    let image = format!("127.0.0.1:{}/pd/app:v1", reg.port());
    let ca = c.ca(true);

    c.ok("podman", &["pull", &format!("oci:{}:1", layout.display())]);
    let local = c.ok("podman", &["images", "-q", "--no-trunc"]);
    let local_id = local
        .trim()
        .lines()
        .next()
        .expect("the image podman pulled");
    c.ok("podman", &["tag", local_id, &image]);

    let podman = |verb: &'static str| {
        let image = image.clone();
        move |creds: &str, certs: &str| -> Vec<String> {
            [verb, "--creds", creds, "--cert-dir", certs, &image]
                .into_iter()
                .map(String::from)
                .collect()
        }
    };
    c.assert_refusals("podman", "push", podman("push"));
    reg.assert_no_repo("pd/app");

    let digest_file = c.tmp.path().join("digest");
    let mut push = podman("push")(CREDS, ca);
    push.insert(1, "--digestfile".into());
    push.insert(2, digest_file.to_str().unwrap().into());
    c.ok_owned("podman", push);
    let digest = std::fs::read_to_string(&digest_file).unwrap();
    let digest = digest.trim();
    assert_eq!(reg.manifest_digest("pd/app", "v1"), digest, "podman's push");

    c.ok("podman", &["rmi", "--all", "--force"]);
    c.assert_refusals("podman", "pull", podman("pull"));
    assert!(
        c.ok("podman", &["images", "-q"]).trim().is_empty(),
        "refused pulls bring nothing"
    );
    c.ok_owned("podman", podman("pull")(CREDS, ca));
    let pulled = c.ok(
        "podman",
        &["image", "inspect", "--format", "{{.Digest}}", &image],
    );
    assert_eq!(pulled.trim(), digest, "podman's pull");
    let id = c.ok(
        "podman",
        &["image", "inspect", "--format", "{{.Id}}", &image],
    );
    assert!(
        local_id.ends_with(id.trim()),
        "the same image: {local_id} / {id}"
    );
}
