//! Retention policies (`retention`) and storage quotas (`quotas`) on the real binary.
//!
//! Retention: `ringyard gc` asking a running registry through `<root>/admin.sock` expires the
//! tags each repository's most specific rule does not keep (keep_tags, keep_last,
//! pulled_within, with the pull times the registry records every few seconds), never an
//! immutable tag; with `delete_untagged` the expired tags' manifests and their own blobs go
//! in the same pass, shared blobs stay; a `dry_run` rule only reports. `-v` lists each item,
//! the summary counts them.
//!
//! Quotas: every kind of push that would take a repository past its quota is refused with 403
//! DENIED before its bytes are stored (monolithic POST, session start, PATCH of known length,
//! completion of a streamed session, cross-repository mount, manifest PUT), with the figures
//! in the message and the detail; what the repository already holds adds nothing;
//! `GET /v2/_quota/NAME` and /metrics tell the usage. skopeo shows the refusal as it is.

use crate::common::*;
use crate::gc::si;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ringyard");
const OCTET: (&str, &str) = ("Content-Type", "application/octet-stream");

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `ringyard gc ARGS --root ROOT --config CONFIG` to its exit (at most two minutes), without
/// the `RINGYARD_*` and `AWS_*` variables of this process: (status, stdout, stderr).
fn run_gc(root: &Path, config: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("gc")
        .args(args)
        .arg("--root")
        .arg(root)
        .arg("--config")
        .arg(config);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("RINGYARD_") || n.starts_with("AWS_") {
            cmd.env_remove(&name);
        }
    }
    run_to_exit(cmd, Duration::from_secs(120))
}

/// `ringyard gc ARGS`, which must succeed: its item lines and its summary line.
#[track_caller]
fn gc_ok(root: &Path, config: &Path, args: &[&str]) -> (BTreeSet<String>, String) {
    let (status, out, err) = run_gc(root, config, args);
    assert!(
        status.success(),
        "ringyard gc {args:?}: {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    let summary = lines.pop().unwrap_or_default();
    let items: BTreeSet<String> = lines.into_iter().collect();
    (items, summary)
}

/// A pushed image: its manifest's digest and size, its config's, and its layers'.
#[derive(Clone, Debug)]
struct Image {
    digest: String,
    size: u64,
    config: (String, u64),
    layers: Vec<(String, u64)>,
}

impl Image {
    /// Every blob of the image, the manifest itself included, with its size.
    fn blobs(&self) -> Vec<(String, u64)> {
        let mut out = vec![(self.digest.clone(), self.size), self.config.clone()];
        out.extend(self.layers.iter().cloned());
        out
    }
}

/// Pushes an image of `layers` by `tag` (asserting 201), then sleeps a little so that the next
/// push has a later push time.
#[track_caller]
fn push_tagged(c: &mut Client, repo: &str, tag: &str, layers: &[&[u8]]) -> Image {
    let (digest, manifest) = push_image(c, repo, tag, layers);
    std::thread::sleep(Duration::from_millis(15));
    let v = json(&manifest);
    let desc = |d: &serde_json::Value| {
        (
            d["digest"].as_str().unwrap().to_string(),
            d["size"].as_u64().unwrap(),
        )
    };
    Image {
        digest,
        size: manifest.len() as u64,
        config: desc(&v["config"]),
        layers: v["layers"].as_array().unwrap().iter().map(desc).collect(),
    }
}

/// The tags of `repo`, as `GET /v2/<repo>/tags/list` lists them.
#[track_caller]
fn tags_of(c: &mut Client, repo: &str) -> Vec<String> {
    let r = c.get(&format!("/v2/{repo}/tags/list"));
    assert_status(&r, 200);
    r.json()["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The `-v` line of a tag retention expires.
fn tag_item(repo: &str, tag: &str, image: &Image, rule: &str, suffix: &str) -> String {
    format!("tag {repo}:{tag} ({}, {rule}){suffix}", image.digest)
}

#[track_caller]
fn assert_blob_gone(c: &mut Client, repo: &str, digest: &str) {
    let r = c.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_error(&r, 404, &["BLOB_UNKNOWN"]);
}

#[track_caller]
fn assert_blob_there(c: &mut Client, repo: &str, digest: &str) {
    let r = c.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_status(&r, 200);
    assert_eq!(sha256_digest(&r.body), digest);
}

// ---------------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------------

/// Line numbers: retention[0] is on line 7, retention[1] on 11, retention[2] on 13.
const RETENTION: &str = "gc:
  grace: 0s
tags.immutable:
  - repository: prod
    tags: [\"v*\"]
retention:
  - repository: \"ci/**\"
    keep_last: 2
    keep_tags: [\"release-*\"]
    delete_untagged: true
  - repository: ci/pulled
    pulled_within: 1h
  - repository: prod
    keep_last: 0
";

#[test]
fn retention_expires_tags_by_each_rule_and_keeps_immutable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), RETENTION);
    let s = Server::start_in_temp(&["--config", config.to_str().unwrap()]);
    let root = s.root.clone();
    let mut c = s.client();
    let layer = |seed: u64| pseudo_random(2000 + 37 * seed as usize, 0x7e7e_0000 + seed);
    let shared = layer(0);

    // ci/app: keep_last 2 and keep_tags release-*, under the ci/** rule.
    let release = push_tagged(&mut c, "ci/app", "release-1", &[&shared, &layer(1)]);
    let t1 = push_tagged(&mut c, "ci/app", "t1", &[&shared, &layer(2)]);
    let t2 = push_tagged(&mut c, "ci/app", "t2", &[&shared, &layer(3)]);
    let t3 = push_tagged(&mut c, "ci/app", "t3", &[&shared, &layer(4)]);
    let t4 = push_tagged(&mut c, "ci/app", "t4", &[&layer(5)]);
    // ci/pulled: its own rule (more specific than ci/**), pulled_within only.
    let first = push_tagged(&mut c, "ci/pulled", "first", &[&layer(6)]);
    let second = push_tagged(&mut c, "ci/pulled", "second", &[&layer(7)]);
    let third = push_tagged(&mut c, "ci/pulled", "third", &[&layer(8)]);
    // prod: keep_last 0, but v* is immutable there.
    let v1 = push_tagged(&mut c, "prod", "v1", &[&layer(9)]);
    let latest = push_tagged(&mut c, "prod", "latest", &[&layer(10)]);
    let v2 = push_tagged(&mut c, "prod", "v2", &[&layer(11)]);
    let scratch = push_tagged(&mut c, "prod", "scratch", &[&layer(12)]);
    // No rule governs misc.
    let x = push_tagged(&mut c, "misc", "x", &[&layer(13)]);
    push_tagged(&mut c, "misc", "y", &[&layer(14)]);

    let ci = "retention[0] (line 7)";
    let pulled_rule = "retention[1] (line 11)";
    let prod = "retention[2] (line 13)";
    let expiring = |with_first: bool, suffix: &str| -> BTreeSet<String> {
        let mut out = BTreeSet::from([
            tag_item("ci/app", "t1", &t1, ci, suffix),
            tag_item("ci/app", "t2", &t2, ci, suffix),
            tag_item("ci/pulled", "second", &second, pulled_rule, suffix),
            tag_item("ci/pulled", "third", &third, pulled_rule, suffix),
            tag_item("prod", "latest", &latest, prod, suffix),
            tag_item("prod", "scratch", &scratch, prod, suffix),
        ]);
        if with_first {
            out.insert(tag_item("ci/pulled", "first", &first, pulled_rule, suffix));
        }
        out
    };
    // What delete_untagged takes in ci/app with t1 and t2: their manifests, configs and own
    // layers; the shared layer stays.
    let garbage: Vec<(String, u64)> = [&t1, &t2]
        .iter()
        .flat_map(|i| i.blobs())
        .filter(|(d, _)| *d != sha256_digest(&shared))
        .collect();
    assert_eq!(garbage.len(), 6);
    let garbage_bytes: u64 = garbage.iter().map(|(_, n)| n).sum();
    let collected_items = |expired: BTreeSet<String>| -> BTreeSet<String> {
        let mut out = expired;
        for i in [&t1, &t2] {
            out.insert(format!("manifest ci/app@{}", i.digest));
        }
        for (d, n) in &garbage {
            out.insert(format!("blob {d} ({})", si(*n)));
        }
        out
    };

    // Before any pull, every tag of ci/pulled would expire.
    let (items, summary) = gc_ok(&root, &config, &["--dry-run", "-v"]);
    assert_eq!(
        items,
        collected_items(expiring(true, ": would expire")),
        "dry run before the pull; summary {summary}"
    );
    assert_eq!(
        summary,
        format!(
            "Would delete 6 unreferenced blobs ({}) and 2 untagged manifests; 7 tags would \
             expire by retention",
            si(garbage_bytes)
        )
    );

    // A pull of the oldest tag of ci/pulled keeps it, once the registry wrote the pull time
    // (every 5 s, src/server/worker.rs PULL_FLUSH_EVERY).
    let pulled_at = Instant::now();
    let r = c.get("/v2/ci/pulled/manifests/first");
    assert_status(&r, 200);
    let deadline = pulled_at + Duration::from_secs(30);
    let (items, summary) = loop {
        let (items, summary) = gc_ok(&root, &config, &["--dry-run", "-v"]);
        let first_line = tag_item("ci/pulled", "first", &first, pulled_rule, ": would expire");
        if !items.contains(&first_line) {
            break (items, summary);
        }
        assert!(
            Instant::now() < deadline,
            "the pull of ci/pulled:first was not recorded within 30 s:\n{items:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "the pull time was recorded within {:?}",
        pulled_at.elapsed()
    );
    assert_eq!(items, collected_items(expiring(false, ": would expire")));
    assert_eq!(
        summary,
        format!(
            "Would delete 6 unreferenced blobs ({}) and 2 untagged manifests; 6 tags would \
             expire by retention",
            si(garbage_bytes)
        )
    );
    // A dry run changed nothing.
    assert_eq!(
        tags_of(&mut c, "ci/app"),
        ["release-1", "t1", "t2", "t3", "t4"]
    );

    // The real pass, through the running registry's socket.
    assert!(
        root.join("admin.sock").exists(),
        "the registry's admin socket"
    );
    let (items, summary) = gc_ok(&root, &config, &["--delete", "-v"]);
    assert_eq!(items, collected_items(expiring(false, "")));
    assert_eq!(
        summary,
        format!(
            "Deleted 6 blobs and 2 untagged manifests, reclaimed {}; 6 tags expired by retention",
            si(garbage_bytes)
        )
    );

    assert_eq!(tags_of(&mut c, "ci/app"), ["release-1", "t3", "t4"]);
    assert_eq!(tags_of(&mut c, "ci/pulled"), ["first"]);
    assert_eq!(tags_of(&mut c, "prod"), ["v1", "v2"]);
    assert_eq!(tags_of(&mut c, "misc"), ["x", "y"]);
    for (repo, tag) in [
        ("ci/app", "t1"),
        ("ci/app", "t2"),
        ("ci/pulled", "second"),
        ("ci/pulled", "third"),
        ("prod", "latest"),
        ("prod", "scratch"),
    ] {
        let r = c.get(&format!("/v2/{repo}/manifests/{tag}"));
        assert_error(&r, 404, &["MANIFEST_UNKNOWN"]);
    }
    // Kept tags still serve their images.
    for (repo, tag, image) in [
        ("ci/app", "release-1", &release),
        ("ci/app", "t3", &t3),
        ("ci/app", "t4", &t4),
        ("ci/pulled", "first", &first),
        ("prod", "v1", &v1),
        ("prod", "v2", &v2),
        ("misc", "x", &x),
    ] {
        let r = c.get(&format!("/v2/{repo}/manifests/{tag}"));
        assert_status(&r, 200);
        assert_eq!(must_header(&r, "Docker-Content-Digest"), image.digest);
        for (d, _) in &image.layers {
            assert_blob_there(&mut c, repo, d);
        }
    }
    // delete_untagged (ci/**): the untagged manifests and their own blobs are gone, the
    // shared layer stays.
    for i in [&t1, &t2] {
        let r = c.get(&format!("/v2/ci/app/manifests/{}", i.digest));
        assert_error(&r, 404, &["MANIFEST_UNKNOWN"]);
    }
    for (d, _) in &garbage {
        assert_blob_gone(&mut c, "ci/app", d);
    }
    assert_blob_there(&mut c, "ci/app", &sha256_digest(&shared));
    // Without it (ci/pulled, prod): the expired tags' manifests stay, untagged.
    for (repo, i) in [
        ("ci/pulled", &second),
        ("ci/pulled", &third),
        ("prod", &latest),
        ("prod", &scratch),
    ] {
        let r = c.get(&format!("/v2/{repo}/manifests/{}", i.digest));
        assert_status(&r, 200);
    }

    // A second pass finds nothing more.
    let (items, summary) = gc_ok(&root, &config, &["--delete", "-v"]);
    assert!(items.is_empty(), "{items:#?}");
    assert_eq!(summary, "Deleted 0 blobs, reclaimed 0 B");
    assert_alive(&s);
    assert!(s.stop().success());
}

/// Line numbers: retention[0] is on line 4, retention[1] on line 8.
const DRY_RULE: &str = "gc:
  grace: 0s
retention:
  - repository: \"ci/**\"
    keep_last: 1
    delete_untagged: true
    dry_run: true
  - repository: live
    keep_last: 1
";

#[test]
fn a_dry_run_rule_only_reports() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), DRY_RULE);
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let s = Server::start_with(&root, &["--config", config.to_str().unwrap()]);
    let mut c = s.client();
    let a = push_tagged(&mut c, "ci/web", "a", &[b"dry layer a"]);
    let b = push_tagged(&mut c, "ci/web", "b", &[b"dry layer b"]);
    push_tagged(&mut c, "ci/web", "c", &[b"dry layer c"]);
    let old = push_tagged(&mut c, "live", "old", &[b"live layer old"]);
    push_tagged(&mut c, "live", "new", &[b"live layer new"]);

    let dry_rule = "retention[0] (line 4)";
    let reported = [
        tag_item("ci/web", "a", &a, dry_rule, ": would expire (dry-run rule)"),
        tag_item("ci/web", "b", &b, dry_rule, ": would expire (dry-run rule)"),
    ];
    let (items, summary) = gc_ok(&root, &config, &["--delete", "-v"]);
    let mut want = BTreeSet::from(reported.clone());
    want.insert(tag_item("live", "old", &old, "retention[1] (line 8)", ""));
    assert_eq!(items, want);
    // The dry-run rule's tags are not counted: only what went is.
    assert_eq!(
        summary,
        "Deleted 0 blobs, reclaimed 0 B; 1 tag expired by retention"
    );
    assert_eq!(tags_of(&mut c, "ci/web"), ["a", "b", "c"]);
    assert_eq!(tags_of(&mut c, "live"), ["new"]);
    for i in [&a, &b] {
        let r = c.get(&format!("/v2/ci/web/manifests/{}", i.digest));
        assert_status(&r, 200);
        for (d, _) in &i.layers {
            assert_blob_there(&mut c, "ci/web", d);
        }
    }
    assert!(s.stop().success());

    // On the stopped registry's data, the command collects itself: the same report.
    let (items, summary) = gc_ok(&root, &config, &["--dry-run", "-v"]);
    assert_eq!(items, BTreeSet::from(reported));
    assert_eq!(summary, "Would delete 0 unreferenced blobs (0 B)");
    let (items, summary) = gc_ok(&root, &config, &["--delete", "-v"]);
    assert_eq!(items.len(), 2, "{items:#?}");
    assert_eq!(summary, "Deleted 0 blobs, reclaimed 0 B");
    let s = Server::start_with(&root, &["--config", config.to_str().unwrap()]);
    let mut c = s.client();
    assert_eq!(tags_of(&mut c, "ci/web"), ["a", "b", "c"]);
    assert!(s.stop().success());
}

// ---------------------------------------------------------------------------------------------
// Quotas
// ---------------------------------------------------------------------------------------------

/// Line numbers: quotas[0] is on line 2, quotas[1] on line 4, quotas[2] on line 6.
const QUOTAS: &str = "quotas:
  - repository: app
    bytes: 110KB
  - repository: \"team/**\"
    bytes: 20KB
  - repository: team/big
    bytes: 1MiB
";
const APP: &str = "quotas[0] (line 2)";
const LIMIT: u64 = 110_000;

/// Asserts a quota refusal: 403 DENIED, the message and the detail with these figures.
#[track_caller]
fn assert_refused(r: &Response, repo: &str, used: u64, limit: u64, adding: u64, quota: &str) {
    assert_error(r, 403, &["DENIED"]);
    let e = &r.json()["errors"][0];
    assert_eq!(
        e["message"].as_str().unwrap(),
        format!(
            "storage quota exceeded: {repo} holds {} of its {} ({quota}), and this push adds {}",
            si(used),
            si(limit),
            si(adding)
        )
    );
    assert_eq!(
        e["detail"],
        json!({
            "repository": repo,
            "used_bytes": used,
            "limit_bytes": limit,
            "adding_bytes": adding,
            "quota": quota,
        })
    );
}

/// A monolithic push: `POST /v2/<repo>/blobs/uploads/?digest=` with the bytes.
fn post_blob(c: &mut Client, repo: &str, bytes: &[u8]) -> Response {
    let digest = sha256_digest(bytes);
    c.post(
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[OCTET],
        bytes,
    )
}

fn quota_of(c: &mut Client, repo: &str) -> serde_json::Value {
    let r = c.get(&format!("/v2/_quota/{repo}"));
    assert_status(&r, 200);
    r.json()
}

#[test]
fn quotas_refuse_each_kind_of_push_before_storing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), QUOTAS);
    let s = Server::start_in_temp(&["--config", config.to_str().unwrap()]);
    let mut c = s.client();
    let mut used = 0u64;

    // Monolithic: accepted while it fits, refused before a byte is stored when not.
    let a = pseudo_random(50_000, 1);
    push_blob(&mut c, "app", &a);
    used += 50_000;
    let big = pseudo_random(60_001, 2);
    let r = post_blob(&mut c, "app", &big);
    assert_refused(&r, "app", used, LIMIT, 60_001, APP);
    assert_blob_gone(&mut c, "app", &sha256_digest(&big));

    // A session's PATCH of declared length: refused when the session would hold more than
    // the room left; the session stays where it was.
    let part1 = pseudo_random(30_000, 3);
    let too_much = pseudo_random(30_001, 4);
    let part2 = pseudo_random(10_000, 5);
    let loc = start_upload(&mut c, "app");
    let r = c.patch(&loc, &[OCTET, ("Content-Range", "0-29999")], &part1);
    assert_status(&r, 202);
    let loc = location_path(must_header(&r, "Location"));
    let r = c.patch(&loc, &[OCTET, ("Content-Range", "30000-60000")], &too_much);
    assert_refused(&r, "app", used, LIMIT, 60_001, APP);
    let r = c.get(&loc);
    assert_status(&r, 204);
    assert_eq!(must_header(&r, "Range"), "0-29999");
    let r = c.patch(&loc, &[OCTET, ("Content-Range", "30000-39999")], &part2);
    assert_status(&r, 202);
    let loc = location_path(must_header(&r, "Location"));
    let chunked_blob = [part1, part2].concat();
    let chunked_digest = sha256_digest(&chunked_blob);
    let r = c.put(
        &with_query(&loc, &format!("digest={chunked_digest}")),
        &[OCTET],
        b"",
    );
    assert_status(&r, 201);
    used += 40_000;
    assert_blob_there(&mut c, "app", &chunked_digest);

    // A PATCH without a length (chunked transfer coding) is taken, and the completion is
    // refused with the whole size; the session is discarded.
    let streamed = pseudo_random(25_000, 6);
    let loc = start_upload(&mut c, "app");
    let r = c.patch(
        &loc,
        &[OCTET, ("Transfer-Encoding", "chunked")],
        &chunked_encode(&streamed, &[4096, 1000]),
    );
    assert_status(&r, 202);
    let loc = location_path(must_header(&r, "Location"));
    let streamed_digest = sha256_digest(&streamed);
    let r = c.put(
        &with_query(&loc, &format!("digest={streamed_digest}")),
        &[OCTET],
        b"",
    );
    assert_refused(&r, "app", used, LIMIT, 25_000, APP);
    let r = c.get(&loc);
    assert_error(&r, 404, &["BLOB_UPLOAD_UNKNOWN"]);
    assert_blob_gone(&mut c, "app", &streamed_digest);

    // Mounts from a repository without a quota: refused when too big, taken when it fits.
    let m1 = pseudo_random(30_000, 7);
    let m2 = pseudo_random(15_000, 8);
    let (d1, d2) = (
        push_blob(&mut c, "other", &m1),
        push_blob(&mut c, "other", &m2),
    );
    let mount = |c: &mut Client, d: &str| {
        c.post(
            &format!("/v2/app/blobs/uploads/?mount={d}&from=other"),
            &[],
            b"",
        )
    };
    let r = mount(&mut c, &d1);
    assert_refused(&r, "app", used, LIMIT, 30_000, APP);
    assert_blob_gone(&mut c, "app", &d1);
    let r = mount(&mut c, &d2);
    assert_status(&r, 201);
    used += 15_000;
    assert_blob_there(&mut c, "app", &d2);

    // Manifests count too: one that fits, then one that does not.
    let a_digest = sha256_digest(&a);
    let cfg = image_config(std::slice::from_ref(&a_digest));
    let cfg_digest = push_blob(&mut c, "app", &cfg);
    used += cfg.len() as u64;
    let cfg_desc = (cfg_digest, cfg.len());
    let man1 = image_manifest(&cfg_desc, &[(a_digest.clone(), a.len())]);
    let put_manifest = |c: &mut Client, reference: &str, m: &[u8]| {
        c.put(
            &format!("/v2/app/manifests/{reference}"),
            &[("Content-Type", OCI_MANIFEST)],
            m,
        )
    };
    let r = put_manifest(&mut c, "v1", &man1);
    assert_status(&r, 201);
    used += man1.len() as u64;
    let man2 = image_manifest(
        &cfg_desc,
        &[(a_digest.clone(), a.len()), (d2.clone(), 15_000)],
    );
    let room = LIMIT - used;
    let filler1 = pseudo_random((room - (man2.len() as u64 - 1)) as usize, 9);
    push_blob(&mut c, "app", &filler1);
    used += filler1.len() as u64;
    assert_eq!(LIMIT - used, man2.len() as u64 - 1);
    let r = put_manifest(&mut c, "v2", &man2);
    assert_refused(&r, "app", used, LIMIT, man2.len() as u64, APP);
    let r = c.get(&format!("/v2/app/manifests/{}", sha256_digest(&man2)));
    assert_error(&r, 404, &["MANIFEST_UNKNOWN"]);
    let r = c.get("/v2/app/manifests/v2");
    assert_error(&r, 404, &["MANIFEST_UNKNOWN"]);

    // Exactly at the limit.
    let filler2 = pseudo_random(man2.len() - 1, 10);
    push_blob(&mut c, "app", &filler2);
    used += filler2.len() as u64;
    assert_eq!(used, LIMIT);
    // What the repository holds adds nothing: a blob again, a mount of it, another tag on
    // a manifest it holds.
    push_blob(&mut c, "app", &a);
    let r = mount(&mut c, &d2);
    assert_status(&r, 201);
    let r = put_manifest(&mut c, "v1-again", &man1);
    assert_status(&r, 201);
    // Anything new is refused, a session's start included.
    let r = post_blob(&mut c, "app", b"x");
    assert_refused(&r, "app", LIMIT, LIMIT, 1, APP);
    let r = c.post("/v2/app/blobs/uploads/", &[], b"");
    assert_refused(&r, "app", LIMIT, LIMIT, 1, APP);

    // The usage is the sum of what was accepted.
    assert_eq!(
        quota_of(&mut c, "app"),
        json!({"repository": "app", "used_bytes": LIMIT, "limit_bytes": LIMIT, "quota": APP})
    );
    let r = c.get("/metrics");
    assert_status(&r, 200);
    let metrics = r.text();
    for line in [
        format!("ringyard_quota_used_bytes{{repository=\"app\"}} {LIMIT}"),
        format!("ringyard_quota_limit_bytes{{repository=\"app\"}} {LIMIT}"),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no line {line:?} on /metrics"
        );
    }

    // A repository without a quota takes anything.
    let huge = pseudo_random(300_000, 11);
    push_blob(&mut c, "other", &huge);
    assert_eq!(
        quota_of(&mut c, "other"),
        json!({
            "repository": "other",
            "used_bytes": 345_000,
            "limit_bytes": null,
            "quota": null
        })
    );
    let r = c.get("/v2/_quota/nothing/here");
    assert_error(&r, 404, &["NAME_UNKNOWN"]);

    // team/**: each repository has its 20 KB to itself; team/big's own record overrides.
    let team = "quotas[1] (line 4)";
    push_blob(&mut c, "team/a", &pseudo_random(15_000, 12));
    push_blob(&mut c, "team/b", &pseudo_random(15_000, 13));
    let r = post_blob(&mut c, "team/a", &pseudo_random(6_000, 14));
    assert_refused(&r, "team/a", 15_000, 20_000, 6_000, team);
    let r = post_blob(&mut c, "team/c", &pseudo_random(20_001, 15));
    assert_refused(&r, "team/c", 0, 20_000, 20_001, team);
    push_blob(&mut c, "team/big", &huge);
    assert_eq!(
        quota_of(&mut c, "team/big"),
        json!({
            "repository": "team/big",
            "used_bytes": 300_000,
            "limit_bytes": 1_048_576,
            "quota": "quotas[2] (line 6)"
        })
    );
    assert_eq!(quota_of(&mut c, "team/a")["used_bytes"], 15_000);
    let r = c.get("/metrics");
    let metrics = r.text();
    for line in [
        "ringyard_quota_used_bytes{repository=\"team/big\"} 300000",
        "ringyard_quota_limit_bytes{repository=\"team/big\"} 1048576",
        "ringyard_quota_limit_bytes{repository=\"team/a\"} 20000",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no line {line:?} on /metrics"
        );
    }
    assert!(
        !metrics.contains("repository=\"other\""),
        "a repository without a quota has no quota series"
    );
    assert_alive(&s);
    assert!(s.stop().success());
}

// ---------------------------------------------------------------------------------------------
// skopeo
// ---------------------------------------------------------------------------------------------

/// A tar archive of one regular file (ustar, deterministic).
fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, s: &[u8]| h[at..at + s.len()].copy_from_slice(s);
    put(&mut h, 0, name.as_bytes());
    put(&mut h, 100, b"0000644\0");
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{:011o}\0", data.len()).as_bytes());
    put(&mut h, 136, b"00000000000\0");
    put(&mut h, 148, b"        ");
    h[156] = b'0';
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

/// An OCI layout in `dir` with one image tagged `1`: a layer of `layer_bytes` pseudo-random
/// bytes (in a tar), its config, its manifest.
fn oci_layout(dir: &Path, layer_bytes: usize) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let write = |bytes: &[u8]| {
        let d = sha256_digest(bytes);
        std::fs::write(blobs.join(d.strip_prefix("sha256:").unwrap()), bytes).unwrap();
        (d, bytes.len())
    };
    let layer = write(&tar_of("data.bin", &pseudo_random(layer_bytes, 0x5c09e0)));
    let config = write(&image_config(std::slice::from_ref(&layer.0)));
    let manifest = image_manifest(&config, &[layer]);
    let (digest, size) = write(&manifest);
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "1"}
        }]
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

/// skopeo copies an image bigger than the repository's quota: it fails, showing the
/// registry's reason; the same image goes where it fits.
#[test]
fn skopeo_shows_the_quota_refusal() {
    require_tool("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        "quotas:\n  - repository: \"small/**\"\n    bytes: 100KB\n",
    );
    let s = Server::start_in_temp(&["--config", config.to_str().unwrap()]);
    let layout = dir.path().join("layout");
    oci_layout(&layout, 300_000);
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let src = format!("oci:{}:1", layout.display());
    let copy = |dst: &str| {
        let dst = format!("docker://{}/{dst}", s.host());
        let args = [
            "--policy",
            policy.to_str().unwrap(),
            "copy",
            "--dest-tls-verify=false",
            src.as_str(),
            dst.as_str(),
        ];
        skopeo_in(&home, &args)
    };
    let (ok, _, out) = copy("small/app:v1");
    assert!(!ok, "skopeo copy into a quota too small succeeded:\n{out}");
    assert!(
        out.contains("denied") && out.contains("storage quota exceeded: small/app holds"),
        "skopeo shows the registry's reason:\n{out}"
    );
    assert!(out.contains("quotas[0] (line 2)"), "{out}");
    let mut c = s.client();
    let r = c.get("/v2/small/app/manifests/v1");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = c.get("/v2/_quota/small/app");
    if r.status == 200 {
        let used = r.json()["used_bytes"].as_u64().unwrap();
        assert!(used <= 100_000, "small/app holds {used} bytes");
    } else {
        assert_error(&r, 404, &["NAME_UNKNOWN"]);
    }

    let (ok, _, out) = copy("large/app:v1");
    assert!(ok, "skopeo copy where no quota applies:\n{out}");
    let r = c.get("/v2/large/app/manifests/v1");
    assert_status(&r, 200);
    assert_alive(&s);
    assert!(s.stop().success());
}
