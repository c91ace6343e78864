//! The S3 + PostgreSQL deployment, on the real binary: the tests start a throwaway PostgreSQL
//! and an s3s-fs (`ringyard::testing`, as the unit tests do) and nodes configured by a file.
//!
//! - One node: every kind of push and read, then a restart on a WIPED data directory where
//!   everything still pulls byte-identical (the bytes come back from the bucket, the metadata
//!   from the database).
//! - Starts refused with one clear line: S3 unreachable, wrong credentials, missing bucket,
//!   database unreachable, no credentials at all; no secret in any output.
//! - `db status` / `db migrate` on PostgreSQL and on SQLite.
//! - Three nodes over the same services: what one writes, the others serve at once; a push
//!   alternating between them; two PATCHes of one session racing on two nodes, of which only
//!   the first to finish is acknowledged.

use crate::common::*;
use ringyard::testing::postgres::PgServer;
use ringyard::testing::s3::{S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ringyard");
/// The database password in every URL here: trust authentication ignores it, so it can be
/// looked for in every output.
const DB_PASSWORD: &str = "pg-hunter2-secret";
pub(crate) const OCTET: (&str, &str) = ("Content-Type", "application/octet-stream");

/// PostgreSQL and S3 for one test, and a temp dir for configuration files and data.
pub(crate) struct Services {
    pg: PgServer,
    s3: S3Server,
    db_url: String,
    pub(crate) dir: tempfile::TempDir,
}

impl Services {
    pub(crate) fn start(db: &str) -> Services {
        let pg = PgServer::start().unwrap_or_else(|e| panic!("{e}"));
        pg.create_database(db).unwrap_or_else(|e| panic!("{e}"));
        let db_url = pg
            .uri(db)
            .replace("postgres@", &format!("postgres:{DB_PASSWORD}@"));
        Services {
            pg,
            s3: S3Server::s3s_fs(),
            db_url,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A configuration file for a node on these services (`extra` YAML appended).
    pub(crate) fn config(&self, name: &str, extra: &str) -> PathBuf {
        let text = format!(
            "storage:\n  backend: s3\n  s3:\n    bucket: {BUCKET}\n    endpoint: {}\n    \
             prefix: registry/\n    path_style: true\n    access_key: {ACCESS_KEY}\n    \
             secret_key: {SECRET_KEY}\ndatabase:\n  url: {}\n  connections: 3\nlog:\n  \
             level: debug\n{extra}",
            self.s3.endpoint, self.db_url
        );
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub(crate) fn s3(&self) -> &S3Server {
        &self.s3
    }

    pub(crate) fn root(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A node with `config` on its own data directory `root`.
    pub(crate) fn node(&self, config: &Path, root: &Path) -> Server {
        std::fs::create_dir_all(root).unwrap();
        Server::start_with(root, &["--config", config.to_str().unwrap()])
    }
}

/// The bytes of an object of the bucket (s3s-fs keeps each as a file).
fn object(s3: &S3Server, digest: &str) -> Option<Vec<u8>> {
    s3.blob("registry/", digest)
}

/// No secret of the configuration in `text`.
#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    for secret in [SECRET_KEY, DB_PASSWORD] {
        assert!(
            !text.contains(secret),
            "{what} shows a secret ({secret}):\n{text}"
        );
    }
}

/// A blob pushed in three PATCHes, then the closing PUT; returns its digest.
fn push_chunked(c: &mut Client, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let mut loc = start_upload(c, repo);
    let third = bytes.len() / 3;
    for (start, end) in [(0, third), (third, 2 * third), (2 * third, bytes.len())] {
        let range = format!("{start}-{}", end - 1);
        let r = c.patch(
            &loc,
            &[OCTET, ("Content-Range", &range)],
            &bytes[start..end],
        );
        assert_status(&r, 202);
        loc = location_path(must_header(&r, "location"));
    }
    let r = c.put(&with_query(&loc, &format!("digest={digest}")), &[], b"");
    assert_status(&r, 201);
    digest
}

#[track_caller]
pub(crate) fn assert_blob(c: &mut Client, repo: &str, digest: &str, bytes: &[u8]) {
    let r = c.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_status(&r, 200);
    assert!(
        r.body == bytes,
        "GET {repo} {digest} on {}: {} bytes, not the {} pushed",
        c.addr(),
        r.body.len(),
        bytes.len()
    );
}

#[track_caller]
fn assert_manifest(c: &mut Client, repo: &str, reference: &str, bytes: &[u8]) {
    let r = c.get(&format!("/v2/{repo}/manifests/{reference}"));
    assert_status(&r, 200);
    assert!(r.body == bytes, "GET {repo}:{reference} on {}", c.addr());
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(sha256_digest(bytes).as_str())
    );
}

fn tags(c: &mut Client, repo: &str) -> serde_json::Value {
    let r = c.get(&format!("/v2/{repo}/tags/list"));
    assert_status(&r, 200);
    r.json()["tags"].clone()
}

fn catalog(c: &mut Client) -> serde_json::Value {
    let r = c.get("/v2/_catalog");
    assert_status(&r, 200);
    r.json()["repositories"].clone()
}

/// What one node stores, read back after its data directory is gone.
#[test]
fn one_node_on_s3_and_postgres_survives_a_wiped_data_directory() {
    let sv = Services::start("single");
    let config = sv.config("node.yaml", "");
    let root = sv.root("node");
    let node = sv.node(&config, &root);
    let mut c = node.client();

    let big = generated(7, 6 * 1024 * 1024 + 11);
    let chunked = push_chunked(&mut c, "team/app", &big);
    let small = b"a monolithic layer".to_vec();
    let mono = push_blob(&mut c, "team/app", &small);
    let config_blob = image_config(&[chunked.clone(), mono.clone()]);
    let config_digest = push_blob(&mut c, "team/app", &config_blob);
    let manifest = image_manifest(
        &(config_digest.clone(), config_blob.len()),
        &[(chunked.clone(), big.len()), (mono.clone(), small.len())],
    );
    let r = c.put(
        "/v2/team/app/manifests/v1",
        &[("Content-Type", OCI_MANIFEST)],
        &manifest,
    );
    assert_status(&r, 201);
    let digest = sha256_digest(&manifest);
    let (gone, _) = push_image(&mut c, "team/other", "old", &[b"to be deleted"]);
    let r = c.delete(&format!("/v2/team/other/manifests/{gone}"));
    assert_status(&r, 202);

    // In the bucket, whole: the blob store is S3, not the data directory.
    assert!(object(&sv.s3, &chunked).as_deref() == Some(&big[..]));
    assert!(object(&sv.s3, &digest).as_deref() == Some(&manifest[..]));

    let check = |c: &mut Client| {
        assert_blob(c, "team/app", &chunked, &big);
        assert_blob(c, "team/app", &mono, &small);
        assert_manifest(c, "team/app", "v1", &manifest);
        assert_manifest(c, "team/app", &digest, &manifest);
        assert_eq!(tags(c, "team/app"), serde_json::json!(["v1"]));
        let r = c.get(&format!("/v2/team/other/manifests/{gone}"));
        assert_status(&r, 404);
        assert_eq!(tags(c, "team/other"), serde_json::json!([]));
        assert_eq!(catalog(c), serde_json::json!(["team/app", "team/other"]));
    };
    check(&mut c);
    let log = node.stderr();
    assert!(log.contains("blobs in S3 bucket"), "{log}");
    assert!(log.contains("metadata in PostgreSQL at"), "{log}");
    assert_no_secret("the server's log", &log);
    assert!(node.stop().success());

    std::fs::remove_dir_all(&root).unwrap();
    let node = sv.node(&config, &root);
    let mut c = node.client();
    check(&mut c);
    // The blob came back from the bucket into the new local cache.
    let hex = chunked.strip_prefix("sha256:").unwrap();
    let cached = walk(&root).into_iter().any(|p| p.ends_with(hex));
    assert!(cached, "{hex} not in the cache under {}", root.display());
    assert_no_secret("the server's log", &node.stderr());
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Runs the binary to its exit with `env` only (no `RINGYARD_*` or `AWS_*` of ours, HOME in
/// `home` so that no credentials file of this machine is read): (status, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)], home: &Path) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("RINGYARD_") || n.starts_with("AWS_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("HOME", home).envs(env.iter().copied());
    run_to_exit(cmd, Duration::from_secs(60))
}

/// A start that must fail: exit status 1 (a start failure, as a port in use), and its
/// error line.
#[track_caller]
fn refused(sv: &Services, config: &Path, env: &[(&str, &str)]) -> String {
    let root = sv.root("refused");
    let args = [
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--root",
        root.to_str().unwrap(),
    ];
    let (status, stdout, stderr) = run(&args, env, sv.dir.path());
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert_no_secret("a refused start", &format!("{stdout}{stderr}"));
    let error = stderr
        .lines()
        .rfind(|l| l.contains("error"))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    error.to_string()
}

/// The configuration of [`Services::config`] with `from` replaced by `to`.
fn config_with(sv: &Services, name: &str, from: &str, to: &str) -> PathBuf {
    let path = sv.config(name, "");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from} in {text}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
    path
}

#[test]
fn a_start_that_cannot_reach_its_services_is_refused_with_one_clear_line() {
    let sv = Services::start("refusals");
    let nothing = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let endpoint = config_with(&sv, "endpoint.yaml", &sv.s3.endpoint, &nothing);
    let line = refused(&sv, &endpoint, &[]);
    assert!(
        line.contains(&format!("S3 bucket \"{BUCKET}\"")) && line.contains("storage.s3.endpoint"),
        "{line}"
    );

    let wrong_key = config_with(
        &sv,
        "credentials.yaml",
        &format!("secret_key: {SECRET_KEY}"),
        "secret_key: not-the-right-one",
    );
    let line = refused(&sv, &wrong_key, &[]);
    assert!(line.contains("check the credentials"), "{line}");
    assert!(!line.contains("not-the-right-one"), "{line}");

    let bucket = config_with(
        &sv,
        "bucket.yaml",
        &format!("bucket: {BUCKET}"),
        "bucket: no-such-bucket",
    );
    let line = refused(&sv, &bucket, &[]);
    assert!(
        line.contains("no-such-bucket") && line.contains("create the bucket"),
        "{line}"
    );

    // No credentials anywhere: the line names the three ways to give them. With the AWS
    // variables, the start goes on to the bucket check, which passes (then the database).
    let none = config_with(
        &sv,
        "none.yaml",
        &format!("    access_key: {ACCESS_KEY}\n    secret_key: {SECRET_KEY}\n"),
        "",
    );
    let line = refused(&sv, &none, &[]);
    for way in [
        "storage.s3.access_key",
        "AWS_ACCESS_KEY_ID",
        "credentials file",
    ] {
        assert!(line.contains(way), "{line}");
    }
    let pg_port = sv.pg.port().to_string();
    let nowhere = config_with(&sv, "database.yaml", &format!(":{pg_port}/"), ":1/");
    let line = refused(&sv, &nowhere, &[]);
    assert!(line.contains("metadata database"), "{line}");
    assert!(line.contains("postgres:***@127.0.0.1:1/"), "{line}");
    assert!(!line.contains("redis_url"), "no cache configured: {line}");
    // With a Redis cache, the line names it too, its password hidden as the database's.
    let text = std::fs::read_to_string(&nowhere).unwrap().replace(
        "  backend: s3\n",
        "  backend: s3\n  cache:\n    type: redis\n    \
         redis_url: redis://:redis-hunter2@127.0.0.1:1/0\n",
    );
    let cached = sv.dir.path().join("database-cache.yaml");
    std::fs::write(&cached, text).unwrap();
    let line = refused(&sv, &cached, &[]);
    assert!(
        line.contains("postgres:***@127.0.0.1:1/")
            && line.contains("storage.cache.redis_url redis://:***@127.0.0.1:1/0"),
        "{line}"
    );
    assert!(!line.contains("redis-hunter2"), "{line}");

    // The AWS variables are a way in: this start gets past S3 (to the unreachable database).
    let text = std::fs::read_to_string(&none)
        .unwrap()
        .replace(&format!(":{pg_port}/"), ":1/");
    std::fs::write(&none, text).unwrap();
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    let line = refused(&sv, &none, &env);
    assert!(line.contains("metadata database"), "{line}");
    // ... and so is the shared credentials file, with a profile.
    let aws = sv.dir.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    let creds = format!(
        "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[ci]\n\
         aws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    );
    std::fs::write(aws.join("credentials"), creds).unwrap();
    let line = refused(&sv, &none, &[("AWS_PROFILE", "ci")]);
    assert!(line.contains("metadata database"), "{line}");
    let line = refused(&sv, &none, &[]);
    assert!(
        line.contains("check the credentials"),
        "the default profile's: {line}"
    );
}

#[test]
fn secrets_stay_out_of_config_commands() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://u:{DB_PASSWORD}@127.0.0.1:1/db");
    let env = [
        ("RINGYARD_STORAGE_S3_SECRET_KEY", SECRET_KEY),
        ("RINGYARD_DATABASE_URL", url.as_str()),
    ];
    let (status, out, err) = run(&["config", "defaults"], &env, dir.path());
    assert!(status.success(), "{err}");
    assert!(
        out.contains("secret_key: \"\"") && out.contains("url: \"\""),
        "{out}"
    );
    assert_no_secret("config defaults", &format!("{out}{err}"));
    // A URL refused by `config check` is quoted without its password.
    let file = dir.path().join("bad.yaml");
    let bad = format!("database:\n  url: mysql://u:{DB_PASSWORD}@h/db\n");
    std::fs::write(&file, bad).unwrap();
    let (status, out, err) = run(
        &["config", "check", file.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert_eq!(status.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("database.url") && err.contains("u:***@h"),
        "{err}"
    );
    assert_no_secret("config check", &format!("{out}{err}"));
    // s3 without a bucket: refused naming the key.
    std::fs::write(&file, "storage:\n  backend: s3\n").unwrap();
    let (status, _, err) = run(
        &["config", "check", file.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("storage.s3.bucket"), "{err}");
    // Tokens signed by a key per data directory would not be accepted by the other nodes.
    let tokens = "auth:\n  token:\n    enabled: true\ndatabase:\n  url: postgres://h/db\n";
    std::fs::write(&file, tokens).unwrap();
    let (status, _, err) = run(
        &["config", "check", file.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("set auth.token.key"), "{err}");
    // --read-only has no meaning for nodes sharing a bucket and a database.
    std::fs::write(&file, "storage:\n  backend: s3\n  s3:\n    bucket: b\n").unwrap();
    let args = ["serve", "--config", file.to_str().unwrap(), "--read-only"];
    let (status, _, err) = run(&args, &[], dir.path());
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--read-only: storage.read_only"), "{err}");
}

#[test]
fn db_status_and_migrate() {
    let sv = Services::start("schema");
    let config = sv.config("db.yaml", "");
    let c = config.to_str().unwrap();
    let home = sv.dir.path();
    let (status, out, err) = run(&["db", "status", "--config", c], &[], home);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains("schema version 0;") && out.contains("migration needed"),
        "{out}"
    );
    assert!(out.contains("postgres:***@127.0.0.1"), "{out}");
    let (status, out, err) = run(&["db", "migrate", "--config", c], &[], home);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains(": schema version 4"), "{out}");
    let (status, out, err) = run(&["db", "status", "--config", c], &[], home);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("schema version 4; this binary knows versions 1 to 4; up to date"),
        "{out}"
    );
    assert_no_secret("db commands", &format!("{out}{err}"));
    // Again: nothing to do, same answer.
    let (status, out, _) = run(&["db", "migrate", "--config", c], &[], home);
    assert!(
        status.success() && out.contains(": schema version 4"),
        "{out}"
    );

    // SQLite, in a data directory.
    let root = sv.root("sqlite");
    let r = root.to_str().unwrap();
    let (status, out, _) = run(&["db", "status", "--root", r], &[], home);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.starts_with("SQLite ") && out.contains("schema version 0;"),
        "{out}"
    );
    let (status, out, err) = run(&["db", "migrate", "--root", r], &[], home);
    assert!(status.success(), "{out}{err}");
    let (status, out, _) = run(&["db", "status", "--root", r], &[], home);
    assert!(status.success() && out.contains("up to date"), "{out}");

    // A database nobody answers for: exit 1, the URL without its password.
    let nowhere = format!("postgres://u:{DB_PASSWORD}@127.0.0.1:1/db");
    let env = [("RINGYARD_DATABASE_URL", nowhere.as_str())];
    let (status, out, err) = run(&["db", "status", "--root", r], &env, home);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains("u:***@127.0.0.1:1/db"), "{err}");
    assert_no_secret("db status", &format!("{out}{err}"));
}

/// `token create` and `list` on the configured engine: a token created through one node's
/// configuration is listed through another's (both on PostgreSQL).
#[test]
fn token_commands_use_the_configured_database() {
    let sv = Services::start("tokens");
    let config = sv.config("tokens.yaml", "");
    let c = config.to_str().unwrap();
    let home = sv.dir.path();
    let a = sv.root("a");
    let args = [
        "token",
        "create",
        "--name",
        "ci",
        "--scope",
        "repository:ci/*:pull",
        "--config",
        c,
        "--root",
        a.to_str().unwrap(),
    ];
    let (status, out, err) = run(&args, &[], home);
    assert!(status.success(), "{out}{err}");
    let b = sv.root("b");
    let (status, out, err) = run(
        &[
            "token",
            "list",
            "--config",
            c,
            "--root",
            b.to_str().unwrap(),
        ],
        &[],
        home,
    );
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("ci") && out.contains("repository:ci/*:pull"),
        "{out}"
    );
    assert!(!b.join("meta.db").exists(), "no SQLite database made");
}

/// Three nodes over one bucket and one database.
pub(crate) struct Cluster {
    /// Kept running while the nodes are.
    sv: Services,
    config: PathBuf,
    pub(crate) nodes: Vec<Server>,
}

impl Cluster {
    /// One more node of the cluster on the data directory `root` (a restart keeps it).
    pub(crate) fn node_on(&self, root: &Path) -> Server {
        self.sv.node(&self.config, root)
    }
}

pub(crate) fn cluster(db: &str) -> Cluster {
    let sv = Services::start(db);
    let config = sv.config("cluster.yaml", "");
    let nodes = ["a", "b", "c"]
        .iter()
        .map(|n| sv.node(&config, &sv.root(n)))
        .collect();
    Cluster { sv, config, nodes }
}

#[test]
fn three_nodes_see_each_others_writes_at_once() {
    let cl = cluster("three");
    let mut c: Vec<Client> = cl.nodes.iter().map(Server::client).collect();
    let layer = generated(11, 3 * 1024 * 1024 + 5);
    let (digest, manifest) = push_image(&mut c[0], "shared/app", "latest", &[&layer]);
    let layer_digest = sha256_digest(&layer);
    // B and C at once, as a fleet's pulls land on any node.
    std::thread::scope(|s| {
        for node in &cl.nodes[1..] {
            let (layer, manifest, layer_digest) = (&layer, &manifest, &layer_digest);
            s.spawn(move || {
                let mut c = node.client();
                assert_manifest(&mut c, "shared/app", "latest", manifest);
                assert_blob(&mut c, "shared/app", layer_digest, layer);
            });
        }
    });
    // A tag moved on B is what A serves next.
    let (moved, moved_bytes) = push_image(&mut c[1], "shared/app", "latest", &[b"second layer"]);
    assert_ne!(moved, digest);
    assert_manifest(&mut c[0], "shared/app", "latest", &moved_bytes);
    // A manifest deleted on C is gone on A.
    let r = c[2].delete(&format!("/v2/shared/app/manifests/{digest}"));
    assert_status(&r, 202);
    let r = c[0].get(&format!("/v2/shared/app/manifests/{digest}"));
    assert_status(&r, 404);
    // Catalog and tag lists agree.
    push_image(&mut c[2], "shared/tool", "v1", &[b"tool"]);
    push_image(&mut c[0], "shared/tool", "v2", &[b"tool 2"]);
    for c in &mut c {
        assert_eq!(catalog(c), serde_json::json!(["shared/app", "shared/tool"]));
        assert_eq!(tags(c, "shared/tool"), serde_json::json!(["v1", "v2"]));
        assert_eq!(tags(c, "shared/app"), serde_json::json!(["latest"]));
    }
    for node in &cl.nodes {
        assert_no_secret("a node's log", &node.stderr());
    }
}

/// One push whose requests go to every node in turn, as behind a load balancer without
/// sticky sessions: the session must live in S3 and the database, not in one node.
#[test]
fn a_push_alternating_between_nodes_completes() {
    let cl = cluster("alternate");
    let mut c: Vec<Client> = cl.nodes.iter().map(Server::client).collect();
    let bytes = generated(13, 12 * 1024 * 1024 + 7);
    let digest = sha256_digest(&bytes);
    let mut loc = start_upload(&mut c[0], "alt/app");
    let half = bytes.len() / 2;
    for (node, (start, end)) in [(1, (0, half)), (2, (half, bytes.len()))] {
        let range = format!("{start}-{}", end - 1);
        let r = c[node].patch(
            &loc,
            &[OCTET, ("Content-Range", &range)],
            &bytes[start..end],
        );
        assert_status(&r, 202);
        loc = location_path(must_header(&r, "location"));
    }
    let r = c[0].put(&with_query(&loc, &format!("digest={digest}")), &[], b"");
    assert_status(&r, 201);
    let config = push_blob(&mut c[0], "alt/app", b"{}");
    let manifest = image_manifest(&(config, 2), &[(digest.clone(), bytes.len())]);
    let r = c[1].put(
        "/v2/alt/app/manifests/v1",
        &[("Content-Type", OCI_MANIFEST)],
        &manifest,
    );
    assert_status(&r, 201);
    for c in &mut c {
        assert_blob(c, "alt/app", &digest, &bytes);
        assert_manifest(c, "alt/app", "v1", &manifest);
    }
}

/// One PATCH of `bytes` at `start` to the session at `loc`, sent in two halves: the head and
/// the first half now (the node finds the session's row on the head), the rest by
/// [`HalfSent::finish`].
struct HalfSent<'a> {
    c: Client,
    rest: &'a [u8],
}

impl<'a> HalfSent<'a> {
    fn send(node: &Server, loc: &str, start: usize, bytes: &'a [u8]) -> HalfSent<'a> {
        let mut c = node.client();
        let range = format!("{start}-{}", start + bytes.len() - 1);
        let length = bytes.len().to_string();
        let half = bytes.len() / 2;
        let head = request_bytes(
            "localhost",
            "PATCH",
            loc,
            &[
                OCTET,
                ("Content-Range", &range),
                ("Content-Length", &length),
            ],
            &bytes[..half],
        );
        c.send_raw(&head);
        HalfSent {
            c,
            rest: &bytes[half..],
        }
    }

    fn finish(mut self) -> Response {
        self.c.send_raw(self.rest);
        self.c.read_response(false)
    }
}

/// Two PATCHes of one session at the same offset on two nodes at once (a client's retry
/// racing its original request through a load balancer): both find the same row, then the
/// first finishes and is acknowledged. The second gets the answer of an out-of-order chunk,
/// with where the session stands, and leaves nothing of itself: its bytes differ here (the
/// worst case), and the session still completes with exactly the bytes acknowledged, from
/// yet another node that must read back what the winner put in the bucket.
#[test]
fn racing_patches_on_two_nodes_acknowledge_one() {
    const MIB: usize = 1024 * 1024;
    let cl = cluster("race");
    let n = &cl.nodes;
    let bytes = generated(17, 12 * MIB + 7);
    let digest = sha256_digest(&bytes);
    let junk = generated(18, bytes.len());
    let loc = start_upload(&mut n[0].client(), "race/app");
    // `winner` finishes first; both had found the session at `start` before.
    let race = |winner: &Server, loser: &Server, loc: &str, range: (usize, usize)| {
        let (start, end) = range;
        let won = HalfSent::send(winner, loc, start, &bytes[start..end]);
        let lost = HalfSent::send(loser, loc, start, &junk[start..end]);
        std::thread::sleep(Duration::from_millis(1500));
        let won = won.finish();
        assert_status(&won, 202);
        assert_eq!(must_header(&won, "range"), format!("0-{}", end - 1));
        let lost = lost.finish();
        assert_error(&lost, 416, &["BLOB_UPLOAD_INVALID"]);
        let error = &lost.json()["errors"][0];
        assert_eq!(
            error["message"], "another request on this upload session went first",
            "the loser found the row the winner moved: no race was run"
        );
        assert_eq!(error["detail"]["expected_start"], end);
        location_path(must_header(&won, "location"))
    };
    // From a session without a multipart upload yet: only tails.
    let loc = race(&n[0], &n[1], &loc, (0, 3 * MIB));
    // The loser's node goes on from the row: the first part, and a tail read back.
    let r = n[1].client().patch(
        &loc,
        &[
            OCTET,
            ("Content-Range", &format!("{}-{}", 3 * MIB, 8 * MIB + 4)),
        ],
        &bytes[3 * MIB..8 * MIB + 5],
    );
    assert_status(&r, 202);
    let loc = location_path(must_header(&r, "location"));
    // With a part recorded, the other way round.
    let loc = race(&n[2], &n[1], &loc, (8 * MIB + 5, 9 * MIB + 5));
    let mut c = n[0].client();
    let r = c.request(
        "PUT",
        &with_query(&loc, &format!("digest={digest}")),
        &[
            OCTET,
            (
                "Content-Range",
                &format!("{}-{}", 9 * MIB + 5, bytes.len() - 1),
            ),
        ],
        &bytes[9 * MIB + 5..],
    );
    assert_status(&r, 201);
    for node in n {
        assert_blob(&mut node.client(), "race/app", &digest, &bytes);
    }
}
