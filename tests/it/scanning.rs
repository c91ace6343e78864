//! Vulnerability scanning on the real binary: images the tests build (Debian-, Alpine- and
//! Python/npm-style contents, a whiteout that removes a vulnerable package, a multi-arch
//! index, hostile layers), OSV records the tests write, imported with `ringyard vulndb
//! import` while the registry runs; scan on push, the scan API, rescans after an import,
//! the pull policy as docker and skopeo show it, webhooks across a kill -9.

use crate::common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ringyard");

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Exec(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
}

fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        match e {
            Entry::File(path, body) | Entry::Exec(path, body) => {
                h.set_size(body.len() as u64);
                h.set_mode(if matches!(e, Entry::Exec(..)) {
                    0o755
                } else {
                    0o644
                });
                h.set_mtime(1_700_000_000);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, path, *body).unwrap();
            }
            Entry::Link(path, target) => {
                h.set_size(0);
                h.set_mode(0o777);
                h.set_mtime(1_700_000_000);
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, path, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A layer as pushed (gzip) with its diff id (the digest of the tar), which docker checks.
struct Layer {
    gz: Vec<u8>,
    diff_id: String,
}

fn layer(tar: Vec<u8>) -> Layer {
    Layer {
        diff_id: sha256_digest(&tar),
        gz: gzip(&tar),
    }
}

const DEBIAN_OS: &[u8] =
    b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";

const ALPINE_OS: &[u8] =
    b"NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\"\n";

/// Layers of a Debian-style image: openssl (vulnerable), zlib (epoch: not), requests
/// (vulnerable), lodash (vulnerable, but removed by the second layer's whiteout).
fn debian_layers(openssl: &str) -> Vec<Layer> {
    let status = format!(
        "Package: libssl3\nStatus: install ok installed\nSource: openssl\nVersion: {openssl}\n\n\
         Package: zlib1g\nStatus: install ok installed\nSource: zlib (1:1.2.13.dfsg-1)\n\
         Version: 1:1.2.13.dfsg-1\n\n"
    );
    vec![
        layer(tar(&[
            Entry::Link("etc/os-release", "../usr/lib/os-release"),
            Entry::File("usr/lib/os-release", DEBIAN_OS),
            Entry::File("var/lib/dpkg/status", status.as_bytes()),
            Entry::File(
                "usr/lib/python3/dist-packages/requests-2.25.0.dist-info/METADATA",
                b"Metadata-Version: 2.1\nName: requests\nVersion: 2.25.0\n",
            ),
            Entry::File(
                "app/node_modules/lodash/package.json",
                br#"{"name": "lodash", "version": "4.17.20"}"#,
            ),
        ])),
        layer(tar(&[Entry::File("app/node_modules/.wh.lodash", b"")])),
    ]
}

fn alpine_layers() -> Vec<Layer> {
    vec![layer(tar(&[
        Entry::File("etc/os-release", ALPINE_OS),
        Entry::File(
            "lib/apk/db/installed",
            b"C:Q1abc=\nP:libcrypto3\nV:3.1.4-r5\nA:x86_64\no:openssl\n\n\
              C:Q1def=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\no:musl\n\n",
        ),
    ]))]
}

/// The OSV records of every test: each matches what its comment says, no more.
fn write_records(dir: &Path) {
    let records = [
        // openssl < 3.0.13-1~deb12u1 in Debian 12: critical (its vector).
        json!({"id": "DSA-5678-1", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2024-0001"],
            "summary": "openssl: a bad thing",
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.13-1~deb12u1"}]}]}]}),
        // zlib < 1.3: 1:1.2.13 is newer by its epoch.
        json!({"id": "CVE-2024-0002", "modified": "2024-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "Debian", "name": "zlib"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.3"}]}]}]}),
        // requests < 2.31.0: moderate.
        json!({"id": "GHSA-j8r2-6x86-q33q", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2023-32681"],
            "summary": "Requests leaks Proxy-Authorization headers",
            "affected": [{"package": {"ecosystem": "PyPI", "name": "requests"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "2.3.0"}, {"fixed": "2.31.0"}]}]}],
            "database_specific": {"severity": "MODERATE"}}),
        // lodash < 4.17.21: whited out in every image that has it.
        json!({"id": "GHSA-35jh-r3h4-6jhm", "modified": "2024-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "npm", "name": "lodash"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "4.17.21"}]}]}]}),
        // Alpine openssl (origin) up to 3.1.4-r5 inclusive: high.
        json!({"id": "ALPINE-CVE-2024-0005", "modified": "2024-01-01T00:00:00Z", "upstream": ["CVE-2024-0005"],
            "affected": [{"package": {"ecosystem": "Alpine:v3.19", "name": "openssl"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"last_affected": "3.1.4-r5"}]}],
                "database_specific": {"severity": "HIGH"}}]}),
        // musl: fixed in a pre-release-suffixed version below the installed one.
        json!({"id": "CVE-2024-0006", "modified": "2024-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "Alpine:v3.19", "name": "musl"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.2.4_git20230717-r3"}]}]}]}),
    ];
    std::fs::create_dir_all(dir).unwrap();
    for r in records {
        let id = r["id"].as_str().unwrap().to_string();
        std::fs::write(dir.join(format!("{id}.json")), r.to_string()).unwrap();
    }
}

/// A record added by a later import: zlib's epoch-aware advisory that does match.
fn write_zlib_record(dir: &Path) {
    let r = json!({"id": "CVE-2024-0007", "modified": "2024-02-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "Debian:12", "name": "zlib"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:1.3.dfsg-1"}]}],
            "ecosystem_specific": {"urgency": "medium"}}]});
    std::fs::write(dir.join("CVE-2024-0007.json"), r.to_string()).unwrap();
}

/// Pushes an image of `layers` (already compressed) as `repo:tag`; its digest.
fn push(c: &mut Client, repo: &str, tag: &str, layers: &[Layer], arch: &str) -> String {
    push_as(c, &[], repo, tag, layers, arch)
}

/// [`push`] with `auth` headers on every request.
fn push_as(
    c: &mut Client,
    auth: &[(&str, &str)],
    repo: &str,
    tag: &str,
    layers: &[Layer],
    arch: &str,
) -> String {
    let mut blob = |bytes: &[u8]| {
        let digest = sha256_digest(bytes);
        let mut h = auth.to_vec();
        h.push(("Content-Type", "application/octet-stream"));
        let r = c.request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            &h,
            bytes,
        );
        assert_status(&r, 201);
        digest
    };
    let mut descs = Vec::new();
    for l in layers {
        descs.push((blob(&l.gz), l.gz.len()));
    }
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = serde_json::to_vec(&json!({"architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}}))
    .unwrap();
    let cd = blob(&config);
    let layers: Vec<Value> = descs
        .iter()
        .map(|(d, s)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s}))
        .collect();
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": config.len()},
        "layers": layers}))
    .unwrap();
    let mut h = auth.to_vec();
    h.push(("Content-Type", OCI_MANIFEST));
    let r = c.request("PUT", &format!("/v2/{repo}/manifests/{tag}"), &h, &manifest);
    assert_status(&r, 201);
    sha256_digest(&manifest)
}

fn push_index(c: &mut Client, repo: &str, tag: &str, children: &[(&str, &str)]) -> String {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(d, arch)| {
            let size = c
                .head(&format!("/v2/{repo}/manifests/{d}"))
                .header("content-length")
                .unwrap()
                .parse::<u64>()
                .unwrap();
            json!({"mediaType": OCI_MANIFEST, "digest": d, "size": size,
                "platform": {"os": "linux", "architecture": arch}})
        })
        .collect();
    let index = serde_json::to_vec(&json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}))
    .unwrap();
    let r = c.put(
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
        &index,
    );
    assert_status(&r, 201);
    sha256_digest(&index)
}

/// `ringyard vulndb ARGS --root ROOT [--config C]`: (success, stdout + stderr).
fn vulndb(root: &Path, config: Option<&Path>, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("vulndb").args(args).arg("--root").arg(root);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RINGYARD_") {
            cmd.env_remove(&name);
        }
    }
    let (status, out, err) = run_to_exit(cmd, Duration::from_secs(120));
    (status.success(), format!("{out}{err}"))
}

/// Polls the scan of `repo@reference` until its status is `want`; the document.
#[track_caller]
fn wait_scan(c: &mut Client, repo: &str, reference: &str, want: &str) -> Value {
    wait_scan_within(c, repo, reference, want, Duration::from_secs(60))
}

#[track_caller]
fn wait_scan_within(
    c: &mut Client,
    repo: &str,
    reference: &str,
    want: &str,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let r = c.get(&format!("/v2/{repo}/manifests/{reference}/scan"));
        assert_status(&r, 200);
        let doc = r.json();
        if doc["status"] == want {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "scan of {repo}@{reference} never became {want}: {doc}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `done` every 100 ms until it holds; fails naming `what` after `secs` seconds.
#[track_caller]
fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether /metrics has this exact line.
fn metric(c: &mut Client, line: &str) -> bool {
    c.get("/metrics").text().lines().any(|l| l == line)
}

/// The completed scan of `repo:tag` once `ready` holds for it.
#[track_caller]
fn wait_doc(c: &mut Client, repo: &str, tag: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let mut doc = Value::Null;
    wait_until(&format!("the scan of {repo}:{tag}"), 30, || {
        doc = wait_scan(c, repo, tag, "completed");
        ready(&doc)
    });
    doc
}

/// (cve, severity, package, installed, fixed) of each detail, in the document's order.
fn findings(doc: &Value) -> Vec<(String, String, String, String, String)> {
    doc["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or("-").to_string();
            (
                s("cve"),
                s("severity"),
                s("package"),
                s("installed_version"),
                s("fixed_version"),
            )
        })
        .collect()
}

fn row(
    cve: &str,
    sev: &str,
    pkg: &str,
    inst: &str,
    fixed: &str,
) -> (String, String, String, String, String) {
    (
        cve.into(),
        sev.into(),
        pkg.into(),
        inst.into(),
        fixed.into(),
    )
}

fn debian_expected() -> Vec<(String, String, String, String, String)> {
    vec![
        row(
            "CVE-2024-0001",
            "critical",
            "openssl",
            "3.0.11-1~deb12u1",
            "3.0.13-1~deb12u1",
        ),
        row("CVE-2023-32681", "medium", "requests", "2.25.0", "2.31.0"),
    ]
}

const FAST: &str = "scan:\n  poll: 200ms\n";

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Push, scan, API, import while running, rescan without reading layers, skip of what is
/// up to date, manual request, summary.
#[test]
fn scan_on_push_the_api_and_rescans_after_an_import() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), FAST);
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let s = Server::start_with(&root, &["--config", config.to_str().unwrap()]);
    let mut c = s.client();

    // Before any data: the scan completes with the packages and no findings.
    let deb = push(
        &mut c,
        "lib/app",
        "v1",
        &debian_layers("3.0.11-1~deb12u1"),
        "amd64",
    );
    let doc = wait_scan(&mut c, "lib/app", "v1", "completed");
    assert_eq!(doc["digest"], deb.as_str());
    assert_eq!(findings(&doc), vec![]);
    assert_eq!(doc["platforms"][0]["packages"], 3, "{doc}");
    assert_eq!(doc["platforms"][0]["platform"], "linux/amd64");
    assert_eq!(doc["platforms"][0]["os"], "Debian GNU/Linux 12 (bookworm)");

    // Import while the registry runs; the stored result is re-evaluated.
    let osv = dir.path().join("osv");
    write_records(&osv);
    let (ok, out) = vulndb(&root, Some(&config), &["import", osv.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("imported 6 records from 6 file(s)"), "{out}");
    let (ok, out) = vulndb(&root, Some(&config), &["status"]);
    assert!(ok && out.contains(": 6 records, imported "), "{out}");
    assert!(
        out.contains("  Debian: 2\n") && out.contains("  Alpine: 2\n"),
        "{out}"
    );
    let doc = wait_doc(&mut c, "lib/app", "v1", |d| !findings(d).is_empty());
    assert_eq!(findings(&doc), debian_expected(), "{doc}");
    assert_eq!(
        doc["vulnerabilities"],
        json!({"critical": 1, "high": 0, "medium": 1, "low": 0, "unknown": 0})
    );
    let d = &doc["details"][0];
    assert_eq!(d["cvss"], 9.8);
    assert_eq!(d["description"], "openssl: a bad thing");
    assert_eq!(d["binary"], "libssl3");
    let metrics = c.get("/metrics").text();
    assert!(
        metrics.contains("ringyard_scan_rescans_total 1"),
        "re-evaluated, not rescanned:\n{}",
        grep(&metrics, "ringyard_scan")
    );
    assert!(
        metrics.contains("ringyard_scans_total{outcome=\"completed\"} 1"),
        "{}",
        grep(&metrics, "ringyard_scan")
    );

    // A second import that adds an advisory: the result gains it.
    write_zlib_record(&osv);
    let (ok, out) = vulndb(&root, Some(&config), &["import", osv.to_str().unwrap()]);
    assert!(ok, "{out}");
    let doc = wait_doc(&mut c, "lib/app", "v1", |d| findings(d).len() == 3);
    let mut want = debian_expected();
    want.push(row(
        "CVE-2024-0007",
        "medium",
        "zlib",
        "1:1.2.13.dfsg-1",
        "1:1.3.dfsg-1",
    ));
    let mut got = findings(&doc);
    got.sort_by(|a, b| sev_rank(&b.1).cmp(&sev_rank(&a.1)).then(a.0.cmp(&b.0)));
    want.sort_by(|a, b| sev_rank(&b.1).cmp(&sev_rank(&a.1)).then(a.0.cmp(&b.0)));
    assert_eq!(got, want);

    // The same image under another tag: up to date, not scanned again.
    let again = push(
        &mut c,
        "lib/app",
        "v2",
        &debian_layers("3.0.11-1~deb12u1"),
        "amd64",
    );
    assert_eq!(again, deb);
    std::thread::sleep(Duration::from_millis(800));
    let metrics = c.get("/metrics").text();
    assert!(
        metrics.contains("ringyard_scans_total{outcome=\"completed\"} 1"),
        "{}",
        grep(&metrics, "ringyard_scan")
    );

    // A manual request scans again.
    let r = c.post("/v2/lib/app/manifests/v2/scan", &[], b"");
    assert_status(&r, 202);
    assert_eq!(r.json()["scan_id"], deb.as_str());
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/lib/app/manifests/{deb}/scan").as_str())
    );
    wait_until("the manual scan never ran", 30, || {
        metric(&mut c, "ringyard_scans_total{outcome=\"completed\"} 2")
    });

    // An Alpine image in the same repository, pushed last: the summary's latest tag.
    push(&mut c, "lib/app", "alpine", &alpine_layers(), "amd64");
    let doc = wait_scan(&mut c, "lib/app", "alpine", "completed");
    assert_eq!(
        findings(&doc),
        vec![row("CVE-2024-0005", "high", "openssl", "3.1.4-r5", "-")],
        "musl's fix is below its installed version: {doc}"
    );
    let r = c.get("/v2/lib/app/scan/summary");
    assert_status(&r, 200);
    let sum = r.json();
    assert_eq!(sum["latest_tag"], "alpine", "{sum}");
    assert_eq!(sum["total_vulnerabilities"], 1);
    assert_eq!(sum["high_count"], 1);
    assert_eq!(sum["tagged_images"], 2);
    assert_eq!(sum["scanned_images"], 2);
    assert!(sum["last_scanned"].as_str().is_some(), "{sum}");

    // Errors: unknown tag, unknown repository, a digest that is not there.
    assert_error(
        &c.get("/v2/lib/app/manifests/nope/scan"),
        404,
        &["MANIFEST_UNKNOWN"],
    );
    assert_error(
        &c.get("/v2/no/such/manifests/v1/scan"),
        404,
        &["NAME_UNKNOWN"],
    );
    assert_error(&c.get("/v2/no/such/scan/summary"), 404, &["NAME_UNKNOWN"]);
    assert!(s.stop().success());
}

fn sev_rank(s: &str) -> u8 {
    match s {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

fn grep(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|l| l.contains(needle))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A multi-arch index: each platform's image scanned on its own, results per platform.
#[test]
fn a_multi_arch_index_is_scanned_per_platform() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), FAST);
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let osv = dir.path().join("osv");
    write_records(&osv);
    let (ok, out) = vulndb(&root, Some(&config), &["import", osv.to_str().unwrap()]);
    assert!(ok, "{out}");
    let s = Server::start_with(&root, &["--config", config.to_str().unwrap()]);
    let mut c = s.client();
    let amd = push(
        &mut c,
        "multi",
        "amd64",
        &debian_layers("3.0.11-1~deb12u1"),
        "amd64",
    );
    let arm = push(
        &mut c,
        "multi",
        "arm64",
        &debian_layers("3.0.13-1~deb12u1"),
        "arm64",
    );
    push_index(&mut c, "multi", "v1", &[(&amd, "amd64"), (&arm, "arm64")]);
    let doc = wait_scan(&mut c, "multi", "v1", "completed");
    let platforms: Vec<(String, u64)> = doc["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["platform"].as_str().unwrap().to_string(),
                p["vulnerabilities"]["critical"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        platforms,
        vec![("linux/amd64".into(), 1), ("linux/arm64".into(), 0)],
        "{doc}"
    );
    let per: Vec<(String, String)> = doc["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["platform"].as_str().unwrap().to_string(),
                d["cve"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        per,
        vec![
            ("linux/amd64".into(), "CVE-2024-0001".into()),
            ("linux/amd64".into(), "CVE-2023-32681".into()),
            ("linux/arm64".into(), "CVE-2023-32681".into()),
        ]
    );
    assert!(s.stop().success());
}

/// Hostile layers fail their scan with a reason; the registry keeps serving.
#[test]
fn hostile_layers_fail_their_scan_and_the_registry_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "scan:\n  poll: 200ms\n  max_expanded: 16MiB\n");
    let s = Server::start_in_temp(&["--config", config.to_str().unwrap()]);
    let mut c = s.client();
    let zeros = vec![0u8; 64 << 20];
    let bomb = layer(tar(&[Entry::File("big", &zeros)]));
    assert!(bomb.gz.len() < 1 << 20, "a bomb: {} bytes", bomb.gz.len());
    push(&mut c, "bad", "bomb", &[bomb], "amd64");
    let escape = layer(tar(&[
        Entry::Link("a/b", "../../../etc"),
        Entry::File("etc/os-release", ALPINE_OS),
    ]));
    push(&mut c, "bad", "escape", &[escape], "amd64");
    let mut truncated = layer(tar(&[
        Entry::File("etc/os-release", DEBIAN_OS),
        Entry::File("x", &vec![7u8; 100_000]),
    ]));
    truncated.gz.truncate(truncated.gz.len() / 2);
    push(&mut c, "bad", "truncated", &[truncated], "amd64");
    let cases = [
        ("bomb", "expand beyond 16.0 MiB"),
        ("escape", "../../../etc"),
        ("truncated", "layer 1"),
    ];
    for (tag, why) in cases {
        let doc = wait_scan(&mut c, "bad", tag, "failed");
        let err = doc["error"].as_str().unwrap_or("");
        assert!(err.contains(why), "{tag}: {doc}");
        assert_eq!(doc["details"], json!([]));
    }
    // Still serving, and a good image still scans.
    assert_status(&c.get("/v2/"), 200);
    push(&mut c, "good", "v1", &alpine_layers(), "amd64");
    wait_scan(&mut c, "good", "v1", "completed");
    assert_alive(&s);
    assert!(s.stop().success());
}

/// A registry killed right after pushes are acknowledged (scans pending or running) scans
/// them after its restart: nothing was queued only in memory.
#[test]
fn a_registry_killed_before_or_during_scans_scans_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), FAST);
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let s = Server::start_with(&root, &["--config", config.to_str().unwrap()]);
    let mut c = s.client();
    let mut tags = Vec::new();
    for i in 0..6 {
        let layers = debian_layers(&format!("3.0.{i}-1"));
        push(&mut c, "k9/app", &format!("v{i}"), &layers, "amd64");
        tags.push(format!("v{i}"));
    }
    s.kill9();
    let s = Server::start_with(&root, &["--config", config.to_str().unwrap()]);
    let mut c = s.client();
    for t in &tags {
        let doc = wait_scan(&mut c, "k9/app", t, "completed");
        assert_eq!(doc["platforms"][0]["packages"], 3, "{doc}");
    }
    assert!(s.stop().success());
}

/// Images stored while scanning on push was off are scanned once it is on (a backfill at
/// start, tagged images only), and the results of images garbage collection removed are
/// dropped from the scan store with their package lists.
#[test]
fn stored_images_are_backfilled_and_results_of_collected_ones_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &format!("{FAST}gc:\n  grace: 0s\n"));
    let config = config.to_str().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let s = Server::start_with(&root, &["--config", config, "--no-scan-on-push"]);
    let mut c = s.client();
    push(&mut c, "old/app", "v1", &debian_layers("3.0.1-1"), "amd64");
    let gone = push(&mut c, "old/gone", "v1", &alpine_layers(), "amd64");
    // An untagged image is left to be asked for.
    let untagged = push(&mut c, "old/app", "v2", &debian_layers("3.0.2-1"), "amd64");
    assert_status(&c.delete("/v2/old/app/manifests/v2"), 202);
    // The one to be collected is scanned by hand (on push off: nothing else is).
    assert_status(&c.post("/v2/old/gone/manifests/v1/scan", &[], b""), 202);
    wait_scan(&mut c, "old/gone", "v1", "completed");
    std::thread::sleep(Duration::from_millis(600));
    let doc = c.get("/v2/old/app/manifests/v1/scan").json();
    assert_eq!(doc["status"], "not_scanned", "{doc}");
    assert_status(&c.delete(&format!("/v2/old/gone/manifests/{gone}")), 202);
    assert!(s.stop().success());

    let rows = |digest: &str| -> (i64, i64) {
        let db = rusqlite::Connection::open(root.join("scan.db")).unwrap();
        let count = |table: &str| -> i64 {
            db.query_row(
                &format!("SELECT count(*) FROM {table} WHERE digest = ?1"),
                [digest],
                |r| r.get(0),
            )
            .unwrap()
        };
        (count("scans"), count("scan_packages"))
    };
    let (scans, packages) = rows(&gone);
    assert_eq!(scans, 1);
    assert!(packages > 0, "the scanned image's packages are stored");
    let r = root.to_str().unwrap();
    let out = run_ok(Command::new(BIN).args(["gc", "--delete", "--config", config, "--root", r]));
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("Deleted"), "{out}");

    let s = Server::start_with(&root, &["--config", config]);
    let mut c = s.client();
    let doc = wait_scan(&mut c, "old/app", "v1", "completed");
    assert_eq!(doc["platforms"][0]["packages"], 3, "{doc}");
    wait_until("the collected image's results dropped", 30, || {
        rows(&gone) == (0, 0)
    });
    let doc = c
        .get(&format!("/v2/old/app/manifests/{untagged}/scan"))
        .json();
    assert_eq!(doc["status"], "not_scanned", "{doc}");
    assert!(s.stop().success());
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

fn policy_yaml(allow: &str) -> String {
    format!(
        "scan:\n  poll: 200ms\n  policies:\n    - repository: \"prod/**\"\n      block_severity: high\n      unscanned: block\n{allow}"
    )
}

/// The policy refuses pulls of an image with a finding at or above its severity (412 DENIED,
/// naming the policy and the worst finding), as docker and skopeo show it; an allowlisted
/// finding lets the pull through; other repositories are not governed.
#[test]
fn the_policy_refuses_pulls_and_clients_show_why() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let osv = dir.path().join("osv");
    write_records(&osv);
    let config = config_file(dir.path(), &policy_yaml(""));
    let (ok, out) = vulndb(&root, Some(&config), &["import", osv.to_str().unwrap()]);
    assert!(ok, "{out}");
    let s = Server::start_with(&root, &["--config", config.to_str().unwrap()]);
    let mut c = s.client();
    let digest = push(
        &mut c,
        "prod/app",
        "v1",
        &debian_layers("3.0.11-1~deb12u1"),
        "amd64",
    );
    push(
        &mut c,
        "dev/app",
        "v1",
        &debian_layers("3.0.11-1~deb12u1"),
        "amd64",
    );
    wait_scan(&mut c, "prod/app", "v1", "completed");
    // Allow the event loops' cached states to expire (2 s).
    std::thread::sleep(Duration::from_millis(2_100));
    let r = c.get("/v2/prod/app/manifests/v1");
    assert_error(&r, 412, &["DENIED"]);
    let msg = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        msg,
        "image has 1 finding(s) at or above high, refused by the vulnerability policy \
         scan.policies[0] (line 4); worst: CVE-2024-0001 (critical) in openssl \
         3.0.11-1~deb12u1, fixed in 3.0.13-1~deb12u1"
    );
    assert_error(
        &c.get(&format!("/v2/prod/app/manifests/{digest}")),
        412,
        &["DENIED"],
    );
    assert_status(&c.get("/v2/dev/app/manifests/v1"), 200);
    // The scan API still answers for a blocked image.
    assert_status(&c.get("/v2/prod/app/manifests/v1/scan"), 200);

    // skopeo shows the message.
    if tool_present("skopeo") {
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let src = format!("docker://{}/prod/app:v1", s.host());
        let (ok, _, out) = skopeo_in(&home, &["inspect", "--tls-verify=false", &src]);
        assert!(!ok, "{out}");
        assert!(
            out.contains("refused by the vulnerability policy"),
            "skopeo:\n{out}"
        );
        assert!(out.contains("CVE-2024-0001"), "skopeo:\n{out}");
    } else {
        eprintln!("skopeo is not installed: its view of the refusal is not checked");
    }
    // docker shows it.
    if tool_present("dockerd") {
        let docker = DockerCli::new();
        dockerd();
        let out = docker.fails(&["pull", &format!("{}/prod/app:v1", s.host())]);
        assert!(
            out.contains("refused by the vulnerability policy"),
            "docker:\n{out}"
        );
        let ok = docker.run(&["pull", &format!("{}/dev/app:v1", s.host())]);
        assert!(ok.success(), "{}", ok.describe());
    } else {
        eprintln!("docker is not installed: its view of the refusal is not checked");
    }
    // An unscanned image is refused too (unscanned: block): a fresh push, read at once.
    let stopped = s.stop();
    assert!(stopped.success());

    // Allowlisted: the pull goes through.
    let config = config_file(
        dir.path(),
        &policy_yaml("  allowlist:\n    - id: CVE-2024-0001\n      repository: \"prod/**\"\n"),
    );
    let s = Server::start_with(&root, &["--config", config.to_str().unwrap()]);
    let mut c = s.client();
    assert_status(&c.get("/v2/prod/app/manifests/v1"), 200);
    if tool_present("skopeo") {
        let home = dir.path().join("home");
        let src = format!("docker://{}/prod/app:v1", s.host());
        let (ok, _, out) = skopeo_in(&home, &["inspect", "--tls-verify=false", &src]);
        assert!(ok, "allowlisted:\n{out}");
    }
    assert!(s.stop().success());
}

fn tool_present(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

/// A webhook receiver: every POST body it got, answering 204.
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    headers: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start(listener: TcpListener) -> Receiver {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let headers = Arc::new(Mutex::new(Vec::new()));
        let (b, h) = (bodies.clone(), headers.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head, body) = loop {
                    let Ok(n) = s.read(&mut chunk) else {
                        break (String::new(), Vec::new());
                    };
                    if n == 0 {
                        break (String::new(), Vec::new());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break (head, buf[end + 4..end + 4 + len].to_vec());
                    }
                };
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    b.lock().unwrap().push(v);
                    h.lock().unwrap().push(head);
                }
            }
        });
        Receiver { bodies, headers }
    }

    fn count(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }
}

/// One delivery per new finding set: the first scan's findings are delivered once (after a
/// kill -9 while the endpoint was down, from the outbox); the same image pushed again and a
/// rescan that finds nothing new deliver nothing more; a new advisory delivers once more.
#[test]
fn webhooks_deliver_once_per_new_finding_set_across_a_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let osv = dir.path().join("osv");
    write_records(&osv);
    // A port nobody listens on yet.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let yaml = format!(
        "scan:\n  poll: 200ms\n  webhooks:\n    - url: \"http://127.0.0.1:{port}/hook\"\n      headers: {{Authorization: \"Bearer hook-secret\"}}\n      timeout: 2s\n      retries: 20\n"
    );
    let config = config_file(dir.path(), &yaml);
    let (ok, out) = vulndb(&root, Some(&config), &["import", osv.to_str().unwrap()]);
    assert!(ok, "{out}");
    let s = Server::start_with(&root, &["--config", config.to_str().unwrap()]);
    let mut c = s.client();
    let digest = push(
        &mut c,
        "hooks/app",
        "v1",
        &debian_layers("3.0.11-1~deb12u1"),
        "amd64",
    );
    wait_scan(&mut c, "hooks/app", "v1", "completed");
    // The delivery failed at least once (nobody listens), and stays in the outbox.
    wait_until("no failed attempt seen", 20, || {
        metric(
            &mut c,
            "ringyard_webhook_deliveries_total{outcome=\"failed\"} 1",
        )
    });
    assert!(
        !s.stderr().contains("hook-secret"),
        "a header value reached the log"
    );
    s.kill9();
    let receiver = Receiver::start(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let s = Server::start_with(&root, &["--config", config.to_str().unwrap()]);
    let mut c = s.client();
    wait_until("the delivery never arrived after the restart", 60, || {
        receiver.count() >= 1
    });
    {
        let bodies = receiver.bodies.lock().unwrap();
        let b = &bodies[0];
        assert_eq!(b["event"], "vulnerabilities_found");
        assert_eq!(b["repository"], "hooks/app");
        assert_eq!(b["digest"], digest.as_str());
        assert_eq!(b["tags"], json!(["v1"]));
        let cves: Vec<&str> = b["new"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["cve"].as_str().unwrap())
            .collect();
        assert_eq!(cves, vec!["CVE-2024-0001", "CVE-2023-32681"]);
        assert!(b["delivery"].as_str().unwrap().starts_with(&digest));
        let head = &receiver.headers.lock().unwrap()[0];
        assert!(head.contains("Authorization: Bearer hook-secret"), "{head}");
    }
    // Nothing new: the same image again, a manual rescan.
    push(
        &mut c,
        "hooks/app",
        "v2",
        &debian_layers("3.0.11-1~deb12u1"),
        "amd64",
    );
    assert_status(&c.post("/v2/hooks/app/manifests/v1/scan", &[], b""), 202);
    wait_until("the manual scan never ran", 30, || {
        metric(&mut c, "ringyard_scans_total{outcome=\"completed\"} 1")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.count(), 1, "nothing new was found");
    // A new advisory: one more delivery, naming only it.
    write_zlib_record(&osv);
    let (ok, out) = vulndb(&root, Some(&config), &["import", osv.to_str().unwrap()]);
    assert!(ok, "{out}");
    wait_until("no delivery for the new advisory", 30, || {
        receiver.count() >= 2
    });
    std::thread::sleep(Duration::from_secs(2));
    let bodies = receiver.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let cves: Vec<&str> = bodies[1]["new"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["cve"].as_str().unwrap())
        .collect();
    assert_eq!(cves, vec!["CVE-2024-0007"]);
    assert!(s.stop().success());
}

// ---------------------------------------------------------------------------------------------
// Fleet
// ---------------------------------------------------------------------------------------------

/// Two nodes on PostgreSQL and S3: the data imported once (through the configuration's
/// database), a push to one node scanned once, its result and the policy's refusal on the
/// other node, a kill -9 of the scanning node before its scans leaving them to the other.
#[test]
fn scanning_on_a_fleet_of_postgres_and_s3() {
    let sv = crate::scale_out::Services::start("scanfleet");
    let extra = policy_yaml("");
    let config = sv.config("node.yaml", &extra);
    let osv = sv.dir.path().join("osv");
    write_records(&osv);
    let (ok, out) = vulndb(
        &sv.root("cli"),
        Some(&config),
        &["import", osv.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let a = sv.node(&config, &sv.root("a"));
    let b = sv.node(&config, &sv.root("b"));
    let (mut ca, mut cb) = (a.client(), b.client());
    let digest = push(
        &mut ca,
        "prod/app",
        "v1",
        &debian_layers("3.0.11-1~deb12u1"),
        "amd64",
    );
    let doc = wait_scan(&mut cb, "prod/app", "v1", "completed");
    assert_eq!(findings(&doc), debian_expected(), "{doc}");
    std::thread::sleep(Duration::from_millis(2_100));
    assert_error(&cb.get("/v2/prod/app/manifests/v1"), 412, &["DENIED"]);
    assert_error(
        &ca.get(&format!("/v2/prod/app/manifests/{digest}")),
        412,
        &["DENIED"],
    );
    let scanned = |c: &mut Client| -> u64 {
        let m = c.get("/metrics").text();
        m.lines()
            .find_map(|l| l.strip_prefix("ringyard_scans_total{outcome=\"completed\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        scanned(&mut ca) + scanned(&mut cb),
        1,
        "scanned once across the fleet"
    );

    // Node a dies right after acknowledging pushes; b scans them (those a had taken once
    // a's heartbeat is a minute old).
    for i in 0..3 {
        push(
            &mut ca,
            "dev/app",
            &format!("v{i}"),
            &debian_layers(&format!("3.1.{i}-1")),
            "amd64",
        );
    }
    a.kill9();
    for i in 0..3 {
        let doc = wait_scan_within(
            &mut cb,
            "dev/app",
            &format!("v{i}"),
            "completed",
            Duration::from_secs(150),
        );
        assert_eq!(doc["platforms"][0]["packages"], 3, "{doc}");
    }
    assert!(b.stop().success());
}

// ---------------------------------------------------------------------------------------------
// RPM, Go and Rust
// ---------------------------------------------------------------------------------------------

/// `cmd` to its end; its stdout, panicking with its stderr when it fails.
#[track_caller]
fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An rpm database (SQLite) holding one package, made by rpmbuild and rpm themselves.
fn rpm_database(dir: &Path) -> Vec<u8> {
    let spec = dir.join("probe.spec");
    std::fs::write(
        &spec,
        "Name: ringyard-probe\nEpoch: 3\nVersion: 1.2.3\nRelease: 4.el9\nSummary: probe\n\
         License: MIT\nBuildArch: noarch\n%description\nprobe\n%files\n",
    )
    .unwrap();
    let top = dir.join("top");
    run_ok(
        Command::new("rpmbuild")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg("-bb")
            .arg(&spec),
    );
    let db = dir.join("rpmdb");
    std::fs::create_dir_all(&db).unwrap();
    let rpm = |args: &[&std::ffi::OsStr]| {
        run_ok(Command::new("rpm").arg("--dbpath").arg(&db).args(args));
    };
    rpm(&["--initdb".as_ref()]);
    let package = top.join("RPMS/noarch/ringyard-probe-1.2.3-4.el9.noarch.rpm");
    rpm(&[
        "-i".as_ref(),
        "--justdb".as_ref(),
        "--nodeps".as_ref(),
        package.as_os_str(),
    ]);
    rpm(&["-qa".as_ref()]);
    std::fs::read(db.join("rpmdb.sqlite")).unwrap()
}

/// A Go program with a vendored dependency, built offline; its bytes and the toolchain's
/// version as build information reports it (`1.19.8`).
fn go_binary(dir: &Path) -> (Vec<u8>, String) {
    let w = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w(
        "go.mod",
        "module example.com/app\n\ngo 1.18\n\nrequire example.com/dep v1.2.3\n",
    );
    w(
        "main.go",
        "package main\n\nimport \"example.com/dep\"\n\nfunc main() { println(dep.Hello()) }\n",
    );
    w(
        "vendor/example.com/dep/dep.go",
        "package dep\n\nfunc Hello() string { return \"hi\" }\n",
    );
    w(
        "vendor/modules.txt",
        "# example.com/dep v1.2.3\n## explicit\nexample.com/dep\n",
    );
    run_ok(
        Command::new("go")
            .args(["build", "-o", "app", "."])
            .current_dir(dir)
            .env("GOFLAGS", "-mod=vendor")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("gopath"))
            .env("HOME", dir),
    );
    let version =
        String::from_utf8(run_ok(Command::new("go").arg("env").arg("GOVERSION"))).unwrap();
    let version = version.trim().trim_start_matches("go").to_string();
    (std::fs::read(dir.join("app")).unwrap(), version)
}

/// A real ELF (a copy of /bin/true) with a cargo-auditable `.dep-v0` section naming
/// smallvec 1.6.0 from crates.io.
fn auditable_binary(dir: &Path) -> Vec<u8> {
    let json = json!({"packages": [
        {"name": "rusty", "version": "0.1.0", "source": "local", "kind": "runtime", "root": true,
         "dependencies": [1]},
        {"name": "smallvec", "version": "1.6.0", "source": "crates.io", "kind": "runtime"}]});
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(json.to_string().as_bytes()).unwrap();
    let section = dir.join("dep-v0");
    std::fs::write(&section, z.finish().unwrap()).unwrap();
    let bin = dir.join("rusty");
    std::fs::copy("/bin/true", &bin).unwrap();
    run_ok(
        Command::new("objcopy")
            .arg("--add-section")
            .arg(format!(".dep-v0={}", section.display()))
            .arg(&bin),
    );
    std::fs::read(&bin).unwrap()
}

const ROCKY_OS: &[u8] = b"NAME=\"Rocky Linux\"\nVERSION=\"9.3 (Blue Onyx)\"\nID=\"rocky\"\n\
VERSION_ID=\"9.3\"\nPRETTY_NAME=\"Rocky Linux 9.3 (Blue Onyx)\"\n";

const CARGO_LOCK: &[u8] = b"version = 3\n\n[[package]]\nname = \"time\"\nversion = \"0.1.43\"\n\
source = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n[[package]]\n\
name = \"app\"\nversion = \"0.1.0\"\n";

/// An RPM-based image with a Go binary, a cargo-auditable binary and a Cargo.lock: each
/// ecosystem's package found and matched (each part where its tool is installed here).
#[test]
fn rpm_go_and_rust_packages_are_found_and_matched() {
    let dir = tempfile::tempdir().unwrap();
    let tools = |names: &[&str]| names.iter().all(|n| tool_present(n));
    let mut files: Vec<(String, Vec<u8>, bool)> = vec![
        ("etc/os-release".into(), ROCKY_OS.to_vec(), false),
        ("app/Cargo.lock".into(), CARGO_LOCK.to_vec(), false),
    ];
    let mut want = vec![row("RUSTSEC-2020-0071", "high", "time", "0.1.43", "0.2.23")];
    if tools(&["rpm", "rpmbuild"]) {
        files.push((
            "var/lib/rpm/rpmdb.sqlite".into(),
            rpm_database(dir.path()),
            false,
        ));
        want.push(row(
            "RLSA-2024:0001",
            "high",
            "ringyard-probe",
            "3:1.2.3-4.el9",
            "3:1.2.4-1.el9",
        ));
    } else {
        eprintln!("rpm or rpmbuild is not installed: the rpm part is not checked");
    }
    let mut stdlib = None;
    if tools(&["go"]) {
        let gdir = dir.path().join("go");
        std::fs::create_dir_all(&gdir).unwrap();
        let (bin, version) = go_binary(&gdir);
        files.push(("usr/local/bin/app".into(), bin, true));
        want.push(row(
            "GO-2024-0001",
            "medium",
            "example.com/dep",
            "v1.2.3",
            "1.2.4",
        ));
        want.push(row("GO-2024-0002", "low", "stdlib", &version, "1.99.0"));
        stdlib = Some(version);
    } else {
        eprintln!("go is not installed: the Go part is not checked");
    }
    if tools(&["objcopy"]) && Path::new("/bin/true").exists() {
        files.push((
            "usr/local/bin/rusty".into(),
            auditable_binary(dir.path()),
            true,
        ));
        want.push(row(
            "RUSTSEC-2021-0003",
            "critical",
            "smallvec",
            "1.6.0",
            "1.6.1",
        ));
    } else {
        eprintln!("objcopy is not installed: the cargo-auditable part is not checked");
    }
    let entries: Vec<Entry<'_>> = files
        .iter()
        .map(|(p, b, exec)| match exec {
            true => Entry::Exec(p, b),
            false => Entry::File(p, b),
        })
        .collect();

    let osv = dir.path().join("osv");
    std::fs::create_dir_all(&osv).unwrap();
    let records = [
        json!({"id": "RLSA-2024:0001", "modified": "2024-01-01T00:00:00Z", "upstream": ["CVE-2024-1001"],
            "affected": [{"package": {"ecosystem": "Rocky Linux:9", "name": "ringyard-probe"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3:1.2.4-1.el9"}]}]}],
            "database_specific": {"severity": "Important"}}),
        json!({"id": "GO-2024-0001", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2024-1002"],
            "affected": [{"package": {"ecosystem": "Go", "name": "example.com/dep"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.2.4"}]}],
                "ecosystem_specific": {"severity": "MODERATE"}}]}),
        json!({"id": "GO-2024-0002", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2024-1003"],
            "affected": [{"package": {"ecosystem": "Go", "name": "stdlib"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.99.0"}]}],
                "ecosystem_specific": {"severity": "LOW"}}]}),
        json!({"id": "RUSTSEC-2021-0003", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2021-25900"],
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            "affected": [{"package": {"ecosystem": "crates.io", "name": "smallvec"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0.6.3"}, {"fixed": "1.6.1"}]}]}]}),
        json!({"id": "RUSTSEC-2020-0071", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2020-26235"],
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            "affected": [{"package": {"ecosystem": "crates.io", "name": "time"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0.0.0-0"}, {"fixed": "0.2.23"}]}]}]}),
    ];
    for r in &records {
        let id = r["id"].as_str().unwrap().replace(':', "-");
        std::fs::write(osv.join(format!("{id}.json")), r.to_string()).unwrap();
    }
    let config = config_file(dir.path(), FAST);
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let (ok, out) = vulndb(&root, Some(&config), &["import", osv.to_str().unwrap()]);
    assert!(ok, "{out}");
    let s = Server::start_with(&root, &["--config", config.to_str().unwrap()]);
    let mut c = s.client();
    push(&mut c, "poly/app", "v1", &[layer(tar(&entries))], "amd64");
    let doc = wait_scan(&mut c, "poly/app", "v1", "completed");
    let platform = &doc["platforms"][0];
    assert_eq!(platform["os"], "Rocky Linux 9.3 (Blue Onyx)", "{doc}");
    let mut got: Vec<_> = findings(&doc)
        .into_iter()
        .map(|(_, sev, pkg, inst, fixed)| (sev, pkg, inst, fixed))
        .collect();
    let ids: Vec<String> = doc["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    let mut want_rows: Vec<_> = want
        .iter()
        .map(|(_, sev, pkg, inst, fixed)| (sev.clone(), pkg.clone(), inst.clone(), fixed.clone()))
        .collect();
    got.sort();
    want_rows.sort();
    assert_eq!(got, want_rows, "{doc}");
    let mut want_ids: Vec<String> = want.iter().map(|w| w.0.clone()).collect();
    let mut ids_sorted = ids.clone();
    want_ids.sort();
    ids_sorted.sort();
    assert_eq!(ids_sorted, want_ids);
    if let Some(v) = stdlib {
        assert!(!v.is_empty());
    }
    assert!(s.stop().success());
}

/// With authentication on, the scan API needs what the routes beside it need: pull for the
/// reads, push for a request.
#[test]
fn the_scan_api_is_authorized_like_pulls_and_pushes() {
    require_tool("htpasswd");
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    for (i, user) in ["reader", "writer"].iter().enumerate() {
        let create = if i == 0 { "-Bbc" } else { "-Bb" };
        let pw = format!("{user}-pw");
        let (ok, out) = run_command("htpasswd", &[create, htpasswd.to_str().unwrap(), user, &pw]);
        assert!(ok, "{out}");
    }
    let config = config_file(
        dir.path(),
        "scan:\n  poll: 200ms\nauth:\n  access:\n    - repository: \"**\"\n      users: [reader]\n      actions: [pull]\n    - repository: \"**\"\n      users: [writer]\n      actions: [pull, push]\n",
    );
    let s = Server::start_in_temp(&[
        "--config",
        config.to_str().unwrap(),
        "--htpasswd",
        htpasswd.to_str().unwrap(),
        "--auth-fail-delay",
        "0",
    ]);
    let mut c = s.client();
    use base64::Engine as _;
    let basic = |u: &str| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{u}-pw"));
        format!("Basic {b64}")
    };
    let (reader, writer) = (basic("reader"), basic("writer"));
    let as_reader = [("Authorization", reader.as_str())];
    let as_writer = [("Authorization", writer.as_str())];
    push_as(
        &mut c,
        &as_writer,
        "sec/app",
        "v1",
        &alpine_layers(),
        "amd64",
    );
    let path = "/v2/sec/app/manifests/v1/scan";
    assert_error(&c.get(path), 401, &["UNAUTHORIZED"]);
    assert_error(&c.get("/v2/sec/app/scan/summary"), 401, &["UNAUTHORIZED"]);
    assert_error(&c.post(path, &[], b""), 401, &["UNAUTHORIZED"]);
    wait_until("the scan as the reader sees it", 60, || {
        let r = c.request("GET", path, &as_reader, b"");
        assert_status(&r, 200);
        r.json()["status"] == "completed"
    });
    let r = c.request("GET", "/v2/sec/app/scan/summary", &as_reader, b"");
    assert_status(&r, 200);
    assert_error(&c.request("POST", path, &as_reader, b""), 403, &["DENIED"]);
    assert_status(&c.request("POST", path, &as_writer, b""), 202);
    assert!(s.stop().success());
}
