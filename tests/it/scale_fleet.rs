//! A fleet on S3 + PostgreSQL as an operator runs it: what issue 13 asks of several nodes
//! beyond seeing each other's writes (`scale_out`).
//!
//! - The OCI conformance suite, whole and in order, against a node on S3 + PostgreSQL.
//! - kill -9 of the node a push is talking to, mid-request, three rounds: the client asks
//!   another node where the upload stands, goes on from the offset it is told, completes; every
//!   byte acknowledged before the kill is kept, and every node (the killed one restarted too)
//!   serves the blob.
//! - docker, skopeo and podman through a round-robin balancer (no stickiness) in front of three
//!   nodes with authentication on (one htpasswd file, one token signing key): login, push, pull,
//!   refusals, with the balancer's count showing that more than one node did the work.
//! - `storage.redirect`: blob GETs answered 307 to presigned S3 URLs, which give the bytes
//!   (curl, whole and a range), and a docker pull that follows them and runs the image.

use crate::common::proxy::RoundRobin;
use crate::common::*;
use crate::scale_out::{assert_blob, cluster, Services, OCTET};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

#[test]
fn conformance_whole_suite_on_s3_and_postgres() {
    let sv = Services::start("conformance");
    let config = sv.config("node.yaml", "");
    let node = sv.node(&config, &sv.root("node"));
    crate::conformance::whole_suite(&node, true, "");
    crate::conformance::whole_suite(&node, false, "-again");
}

/// Where an upload stands on `c`'s node: the end of its `Range` (exclusive), 0 for none.
fn upload_offset(c: &mut Client, location: &str) -> u64 {
    let r = c.get(location);
    assert_status(&r, 204);
    match r.header("Range") {
        Some(range) => {
            let end: u64 = range
                .strip_prefix("0-")
                .and_then(|e| e.parse().ok())
                .unwrap_or_else(|| panic!("Range {range:?}"));
            end + 1
        }
        None => 0,
    }
}

#[test]
fn a_node_killed_mid_push_loses_nothing_acknowledged() {
    let mut cl = cluster("killed");
    for round in 0..3usize {
        let n = cl.nodes.len();
        let victim = round % n;
        let bytes = generated(40 + round as u64, 20 * 1024 * 1024 + 3 * round);
        let digest = sha256_digest(&bytes);
        let repo = format!("killed/round{round}");
        let mut c = cl.nodes[victim].client();
        let loc = start_upload(&mut c, &repo);
        // Acknowledged: the first 7 MiB (more than one S3 part).
        let first = 7 * 1024 * 1024 + round;
        let r = c.patch(
            &loc,
            &[OCTET, ("Content-Range", &format!("0-{}", first - 1))],
            &bytes[..first],
        );
        assert_status(&r, 202);
        let loc = location_path(must_header(&r, "location"));
        // Not acknowledged: a PATCH of the rest that the node dies in the middle of.
        let rest = &bytes[first..];
        let head = format!(
            "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
             Content-Range: {first}-{}\r\nContent-Length: {}\r\n\r\n",
            bytes.len() - 1,
            rest.len()
        );
        let mut raw = connect_raw(cl.nodes[victim].addr, Duration::from_secs(30)).unwrap();
        raw.write_all(head.as_bytes()).unwrap();
        raw.write_all(&rest[..rest.len() / 2]).unwrap();
        raw.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let killed = cl.nodes.remove(victim);
        let root = killed.root.clone();
        killed.kill9();
        drop(raw);

        // The client's retry lands on another node: it learns the offset and goes on.
        let mut c = cl.nodes[round % (n - 1)].client();
        let offset = upload_offset(&mut c, &loc);
        assert!(
            offset >= first as u64,
            "round {round}: {first} bytes were acknowledged, the upload now stands at {offset}"
        );
        assert!(offset <= bytes.len() as u64);
        let from = offset as usize;
        if from < bytes.len() {
            let r = c.patch(
                &loc,
                &[
                    OCTET,
                    ("Content-Range", &format!("{from}-{}", bytes.len() - 1)),
                ],
                &bytes[from..],
            );
            assert_status(&r, 202);
        }
        let r = c.put(&with_query(&loc, &format!("digest={digest}")), &[], b"");
        assert_status(&r, 201);

        // The killed node comes back on its data directory; every node serves the blob.
        let back = cl.node_on(&root);
        cl.nodes.insert(victim, back);
        for node in &cl.nodes {
            assert_blob(&mut node.client(), &repo, &digest, &bytes);
        }
    }
}

/// A P-256 PKCS#8 key for the token service, the same file for every node.
fn token_key(dir: &Path) -> String {
    let key = dir.join("token-key.pem");
    let (ok, out) = run_command(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            key.to_str().unwrap(),
        ],
    );
    assert!(ok, "openssl genpkey: {out}");
    key.to_str().unwrap().to_string()
}

#[test]
fn docker_skopeo_and_podman_through_a_round_robin_balancer_with_auth() {
    for tool in ["htpasswd", "openssl", "skopeo", "podman"] {
        require_tool(tool);
    }
    let sv = Services::start("fleet");
    let htpasswd = sv.root("htpasswd");
    let (ok, out) = run_command(
        "htpasswd",
        &["-Bbc", htpasswd.to_str().unwrap(), "admin", "fleet-secret"],
    );
    assert!(ok, "htpasswd: {out}");
    let auth = format!(
        "auth:\n  fail_delay: 0s\n  htpasswd:\n    path: {}\n  token:\n    enabled: true\n    \
         key: {}\n",
        htpasswd.display(),
        token_key(sv.dir.path())
    );
    let config = sv.config("fleet.yaml", &auth);
    let nodes: Vec<Server> = ["a", "b", "c"]
        .iter()
        .map(|n| sv.node(&config, &sv.root(n)))
        .collect();
    let lb = RoundRobin::start(nodes.iter().map(|n| n.addr).collect());
    let host = lb.host();

    // Nothing answers without credentials, on any node.
    for node in &nodes {
        let r = node.client().get("/v2/_catalog");
        assert_status(&r, 401);
    }

    // docker: login, push, the local image removed, pull back the same image.
    let cli = DockerCli::new();
    let image = format!("{host}/fleet/app:v1");
    let id = crate::clients_auth::docker_build(&cli, &image);
    let out = cli.ok(&["login", &host, "-u", "admin", "-p", "fleet-secret"]);
    assert!(out.contains("Login Succeeded"), "{out}");
    let out = cli.ok(&["push", &image]);
    assert!(out.contains("digest: sha256:"), "docker push:\n{out}");
    cli.ok(&["rmi", &image]);
    cli.ok(&["pull", &image]);
    assert_eq!(
        crate::clients_auth::image_id(&cli, &image).as_deref(),
        Some(id.as_str()),
        "the image pulled through the balancer is the one pushed"
    );
    cli.ok(&["rmi", &image]);

    // skopeo pushes an OCI layout, podman pulls it, both with credentials.
    let layout = crate::clients_auth::busybox_layout();
    let want = crate::clients_auth::layout_digest(&layout, "1");
    let tmp = tempfile::tempdir().unwrap();
    let skopeo = |args: &[&str]| {
        let (ok, out, err) = skopeo_in(tmp.path(), args);
        assert!(ok, "skopeo {args:?}: {out}{err}");
        out
    };
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "admin:fleet-secret",
        &format!("oci:{}:1", layout.display()),
        &format!("docker://{host}/fleet/busybox:1"),
    ]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "admin:fleet-secret",
        &format!("docker://{host}/fleet/busybox:1"),
    ]);
    assert_eq!(sha256_digest(raw.as_bytes()), want, "skopeo inspect --raw");
    let storage = tmp.path().join("storage.conf");
    std::fs::write(
        &storage,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
            tmp.path().display()
        ),
    )
    .unwrap();
    let podman = std::process::Command::new("podman")
        .env("CONTAINERS_STORAGE_CONF", &storage)
        .env("HOME", tmp.path())
        .args([
            "pull",
            "--tls-verify=false",
            "--creds",
            "admin:fleet-secret",
            &format!("{host}/fleet/busybox:1"),
        ])
        .output()
        .expect("podman");
    assert!(
        podman.status.success(),
        "podman pull through the balancer: {}",
        String::from_utf8_lossy(&podman.stderr)
    );
    // A wrong password is refused whichever node answers.
    let (ok, out, err) = skopeo_in(
        tmp.path(),
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "admin:wrong",
            &format!("docker://{host}/fleet/busybox:1"),
        ],
    );
    assert!(!ok, "a wrong password must be refused: {out}");
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("401"),
        "{err}"
    );

    let busy = lb.counts().iter().filter(|&&c| c > 0).count();
    assert!(
        busy >= 2,
        "the balancer spread connections over the nodes: {:?}",
        lb.counts()
    );
    for node in &nodes {
        let log = node.stderr();
        assert!(!log.contains("fleet-secret"), "a password in a log:\n{log}");
    }
}

/// A node of `sv` with `storage.redirect: true`.
fn redirecting_node(sv: &Services) -> Server {
    let config = sv.config("redirect.yaml", "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen("storage:\n", "storage:\n  redirect: true\n", 1),
    )
    .unwrap();
    sv.node(&config, &sv.root("node"))
}

/// Blob GETs `c`'s node answered with `code`, from its /metrics.
fn blob_gets(c: &mut Client, code: u16) -> u64 {
    let r = c.get("/metrics");
    assert_status(&r, 200);
    let series =
        format!("ringyard_http_requests_total{{method=\"GET\",route=\"blob\",code=\"{code}\"}} ");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// `storage.redirect` with a real client: dockerd pulls an image whose blob GETs the node
/// answers 307 only (none with bytes), so the layers and config came from the presigned S3
/// URLs; the image pulled is the one pushed (its id is its config's digest, and docker checks
/// every layer against its digest), and it runs.
#[test]
fn docker_pulls_through_redirects_to_s3() {
    let sv = Services::start("redirect_docker");
    let node = redirecting_node(&sv);
    let mut c = node.client();
    let cli = DockerCli::new();
    let image = format!("{}/redir/docker:v1", node.addr);
    let id = crate::clients_auth::docker_build(&cli, &image);
    let out = cli.ok(&["push", &image]);
    assert!(out.contains("digest: sha256:"), "docker push:\n{out}");
    cli.ok(&["rmi", &image]);
    let (redirected, served) = (blob_gets(&mut c, 307), blob_gets(&mut c, 200));
    cli.ok(&["pull", &image]);
    assert_eq!(
        crate::clients_auth::image_id(&cli, &image).as_deref(),
        Some(id.as_str()),
        "the image pulled through redirects is the one pushed"
    );
    let redirected = blob_gets(&mut c, 307) - redirected;
    assert!(
        redirected >= 2,
        "the config and the layers were redirected: {redirected} blob GETs answered 307"
    );
    assert_eq!(
        blob_gets(&mut c, 200) - served,
        0,
        "no blob bytes from the node"
    );
    let out = cli.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "/bin/busybox",
        "cat",
        "/nonce",
    ]);
    assert!(out.starts_with(&image), "the image runs: {out}");
    cli.ok(&["rmi", &image]);
}

/// `storage.redirect`: a blob GET is answered 307 to a presigned S3 URL that gives the bytes
/// (whole, and a range of them) without the node; HEAD and manifests are answered by the node.
#[test]
fn blob_gets_redirect_to_presigned_s3_urls() {
    require_tool("curl");
    let sv = Services::start("redirect");
    let node = redirecting_node(&sv);
    let mut c = node.client();
    let layer = generated(77, 2 * 1024 * 1024 + 9);
    let (_, manifest) = push_image(&mut c, "redir/app", "v1", &[&layer]);
    let digest = sha256_digest(&layer);
    let path = format!("/v2/redir/app/blobs/{digest}");

    let r = c.head(&path);
    assert_status(&r, 200);
    let r = c.get(&path);
    assert_status(&r, 307);
    assert_eq!(r.header("Docker-Content-Digest"), Some(digest.as_str()));
    let url = must_header(&r, "location").to_string();
    assert!(
        url.contains("X-Amz-Signature=") && !url.contains(&node.addr.to_string()),
        "a presigned S3 URL: {url}"
    );
    let fetch = |range: Option<&str>| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "--fail"]);
        if let Some(r) = range {
            cmd.args(["-H", &format!("Range: bytes={r}")]);
        }
        let out = cmd.arg(&url).output().expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert!(fetch(None) == layer, "the presigned URL gives the blob");
    assert!(
        fetch(Some("10-1033")) == layer[10..1034],
        "and a range of it"
    );
    // An unknown blob is still the registry's 404, and manifests are served by the node.
    let r = c.get(&format!("/v2/redir/app/blobs/{}", sha256_digest(b"absent")));
    assert_status(&r, 404);
    let r = c.get("/v2/redir/app/manifests/v1");
    assert_status(&r, 200);
    assert!(r.body == manifest);
}
