//! Durability against the real binary: everything survives SIGTERM + restart byte-identical;
//! upload sessions survive a restart and resume from the reported offset, without reading back
//! the bytes they had; kill -9 during 8
//! concurrent pushers never loses an acknowledged (201) blob, manifest or tag and never leaves a
//! blob file whose content does not match its name; expired upload sessions are gone with their
//! data.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// helpers

fn body_text(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 600 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(600).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s.into_owned()
    }
}

/// `Range: 0-N` of an upload -> bytes received so far (N + 1); "0-0" before any data is
/// ambiguous in the spec and read as 0 when nothing was sent.
fn range_end(r: &Response) -> u64 {
    let range = r
        .header("range")
        .unwrap_or_else(|| panic!("no Range header: {:?}", r.headers));
    let (a, b) = range
        .trim_start_matches("bytes=")
        .split_once('-')
        .unwrap_or_else(|| panic!("bad Range header {range:?}"));
    assert_eq!(a, "0", "Range must start at 0: {range:?}");
    b.parse::<u64>()
        .unwrap_or_else(|_| panic!("bad Range header {range:?}"))
        + 1
}

/// One request on a new connection (`Connection: close`), the whole response read, that reports
/// IO errors instead of panicking: the crash test needs to tell a refused or reset connection
/// after kill -9 from a wrong answer before it.
fn raw_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut s = connect_raw(addr, Duration::from_secs(60))?;
    let mut all = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    s.write_all(&request_bytes(&addr.to_string(), method, path, &all, body))?;
    let head = read_raw_head(&mut s)?;
    let body = head.read_body(&mut s, method == "HEAD")?;
    Ok(head.into_response(body))
}

/// Every regular file under `<root>/blobs` named as a sha256 digest sits in its shard directory
/// and hashes to its name. Returns (files checked, problems); files with other names (temporary
/// files a crash may leave) are listed on stderr: they can never be served by digest.
fn scan_blob_tree(root: &Path) -> (usize, Vec<String>) {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(_) => return,
        };
        for e in entries.flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(&p, files);
            } else {
                files.push(p);
            }
        }
    }
    let blobs = root.join("blobs");
    assert!(blobs.is_dir(), "{} is missing", blobs.display());
    let mut files = Vec::new();
    walk(&blobs, &mut files);
    let mut checked = 0;
    let mut problems = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let is_hex =
            name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !is_hex {
            eprintln!(
                "note: non-digest file in the blob tree (never servable): {}",
                f.display()
            );
            continue;
        }
        let shard = f
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned());
        let algo = f
            .parent()
            .and_then(|p| p.parent())
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned());
        if shard.as_deref() != Some(&name[..2]) || algo.as_deref() != Some("sha256") {
            problems.push(format!(
                "{}: not at blobs/sha256/{}/{}",
                f.display(),
                &name[..2],
                name
            ));
        }
        match std::fs::read(&f) {
            Ok(bytes) => {
                checked += 1;
                let got = sha256_digest(&bytes);
                if got != format!("sha256:{name}") {
                    problems.push(format!(
                        "{}: {} bytes hash to {got}, not to its name",
                        f.display(),
                        bytes.len()
                    ));
                }
            }
            Err(e) => problems.push(format!("{}: unreadable: {e}", f.display())),
        }
    }
    (checked, problems)
}

fn manifest_media_type(bytes: &[u8]) -> String {
    let v = json(bytes);
    v["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string()
}

// ---------------------------------------------------------------------------------------------
// (a) persistence across a graceful restart

/// Per path: the status, Content-Type, Docker-Content-Digest and body of a GET.
type Snapshot = BTreeMap<String, (u16, Option<String>, Option<String>, Vec<u8>)>;

/// The answers to requests that must be identical before and after the restart.
fn snapshot(s: &Server, paths: &[String]) -> Snapshot {
    let mut c = s.client();
    paths
        .iter()
        .map(|p| {
            let r = c.get(p);
            (
                p.clone(),
                (
                    r.status,
                    r.header("content-type").map(String::from),
                    r.header("docker-content-digest").map(String::from),
                    r.body,
                ),
            )
        })
        .collect()
}

/// Push (blobs, images, an index, a referrer, a moved tag, a deleted tag and manifest), SIGTERM
/// (exit 0, the port then refuses connections), start again on the same root: every manifest (by
/// tag and by digest), blob, tag list, the catalog and the referrers answer byte-identical, the
/// deletions stay deleted, and pushing still works.
#[test]
fn persistence_across_sigterm_restart() {
    let root = tempfile::tempdir().unwrap();
    let s = Server::start_with(root.path(), &[]);
    let addr = s.addr;
    let mut c = s.client();
    let mut paths: Vec<String> = vec!["/v2/_catalog".into(), "/v2/_catalog?n=2".into()];
    let mut gone: Vec<String> = Vec::new();

    let repos = ["library/alpine", "team/app/api", "x"];
    let mut seed = 1u64;
    let mut child_manifests = Vec::new();
    for repo in repos {
        for tag in ["1", "latest", "v2.0.1"] {
            let l1 = generated(seed, 1000 + seed as usize * 777);
            let l2 = generated(seed + 1000, 300_000);
            seed += 1;
            let (digest, manifest) = push_image(&mut c, repo, tag, &[&l1, &l2]);
            paths.push(format!("/v2/{repo}/manifests/{tag}"));
            paths.push(format!("/v2/{repo}/manifests/{digest}"));
            let v = json(&manifest);
            paths.push(format!(
                "/v2/{repo}/blobs/{}",
                v["config"]["digest"].as_str().unwrap()
            ));
            for l in v["layers"].as_array().unwrap() {
                paths.push(format!(
                    "/v2/{repo}/blobs/{}",
                    l["digest"].as_str().unwrap()
                ));
            }
            if repo == "library/alpine" {
                child_manifests.push((digest, manifest.len(), manifest_media_type(&manifest)));
            }
        }
        paths.push(format!("/v2/{repo}/tags/list"));
        paths.push(format!("/v2/{repo}/tags/list?n=1"));
        paths.push(format!("/v2/{repo}/tags/list?n=2&last=1"));
    }

    // a tag moved to a second manifest: the last write wins, after the restart too
    let (_first, _) = push_image(&mut c, "x", "moving", &[&generated(500, 4096)]);
    let (second, _) = push_image(&mut c, "x", "moving", &[&generated(501, 4096)]);
    let r = c.get("/v2/x/manifests/moving");
    assert_eq!(r.header("docker-content-digest"), Some(second.as_str()));
    paths.push("/v2/x/manifests/moving".into());

    // a lone blob, pushed without a manifest
    let lone = generated(600, 2 * 1024 * 1024 + 17);
    let lone_digest = push_blob(&mut c, "lonely/blob", &lone);
    paths.push(format!("/v2/lonely/blob/blobs/{lone_digest}"));

    // an image index over two of the manifests
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": child_manifests[..2].iter().zip(["amd64", "arm64"]).map(|((d, n, mt), arch)| serde_json::json!({
            "mediaType": mt, "digest": d, "size": n,
            "platform": {"architecture": arch, "os": "linux"}
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let r = c.put(
        "/v2/library/alpine/manifests/multiarch",
        &[("Content-Type", OCI_INDEX)],
        &index,
    );
    assert_eq!(r.status, 201, "PUT index: {}", body_text(&r.body));
    let index_digest = sha256_digest(&index);
    paths.push("/v2/library/alpine/manifests/multiarch".into());
    paths.push(format!("/v2/library/alpine/manifests/{index_digest}"));

    // a referrer (artifact with a subject)
    let subject = &child_manifests[0];
    let empty = b"{}".to_vec();
    let empty_digest = push_blob(&mut c, "library/alpine", &empty);
    let sig = generated(700, 512);
    let sig_digest = push_blob(&mut c, "library/alpine", &sig);
    let artifact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sig_digest, "size": sig.len()}],
        "subject": {"mediaType": subject.2, "digest": subject.0, "size": subject.1},
        "annotations": {"org.example.note": "persisted"}
    }))
    .unwrap();
    let art_digest = sha256_digest(&artifact);
    let r = c.put(
        &format!("/v2/library/alpine/manifests/{art_digest}"),
        &[("Content-Type", OCI_MANIFEST)],
        &artifact,
    );
    assert_eq!(r.status, 201, "PUT artifact: {}", body_text(&r.body));
    paths.push(format!("/v2/library/alpine/manifests/{art_digest}"));
    paths.push(format!("/v2/library/alpine/referrers/{}", subject.0));
    paths.push(format!(
        "/v2/library/alpine/referrers/{}?artifactType=application/vnd.example.signature",
        subject.0
    ));

    // deletions: a tag (its manifest stays) and a manifest by digest
    let r = c.delete("/v2/team/app/api/manifests/v2.0.1");
    assert_eq!(r.status, 202, "DELETE tag: {}", body_text(&r.body));
    gone.push("/v2/team/app/api/manifests/v2.0.1".into());
    paths.retain(|p| p != "/v2/team/app/api/manifests/v2.0.1");
    let (victim, _) = push_image(&mut c, "x", "victim", &[&generated(800, 1000)]);
    let r = c.delete(&format!("/v2/x/manifests/{victim}"));
    assert_eq!(r.status, 202, "DELETE manifest: {}", body_text(&r.body));
    gone.push(format!("/v2/x/manifests/{victim}"));
    gone.push("/v2/x/manifests/victim".into());

    let before = snapshot(&s, &paths);
    for (p, (status, ..)) in &before {
        assert_eq!(*status, 200, "before restart: GET {p} -> {status}");
    }
    let mut c0 = s.client();
    for p in &gone {
        assert_eq!(c0.get(p).status, 404, "before restart: GET {p} must be 404");
    }
    drop(c0);
    drop(c);

    let status = s.stop();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    assert!(
        port_refuses(addr),
        "after exit, {addr} must refuse connections"
    );

    let s2 = Server::start_with(root.path(), &[]);
    let after = snapshot(&s2, &paths);
    for (p, b) in &before {
        let a = &after[p];
        assert_eq!(
            a.0,
            b.0,
            "after restart: status of GET {p}\n{}",
            tail(&s2.stderr(), 3000)
        );
        assert_eq!(a.1, b.1, "after restart: Content-Type of GET {p}");
        assert_eq!(a.2, b.2, "after restart: Docker-Content-Digest of GET {p}");
        assert!(
            a.3 == b.3,
            "after restart: body of GET {p} differs\nbefore: {}\nafter:  {}",
            body_text(&b.3),
            body_text(&a.3)
        );
    }
    let mut c2 = s2.client();
    for p in &gone {
        assert_eq!(
            c2.get(p).status,
            404,
            "after restart: GET {p} must stay 404"
        );
    }
    let cat = c2.get("/v2/_catalog").json();
    let names: Vec<&str> = cat["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for repo in repos.iter().chain(["lonely/blob"].iter()) {
        assert!(
            names.contains(repo),
            "catalog after restart lacks {repo}: {names:?}"
        );
    }

    // still writable
    let (d, m) = push_image(&mut c2, "after/restart", "1", &[&generated(900, 70_000)]);
    let r = c2.get(&format!("/v2/after/restart/manifests/{d}"));
    assert!(r.status == 200 && r.body == m, "push after restart");
    drop(c2);
    let status = s2.stop();
    assert!(status.success(), "second SIGTERM must exit 0, got {status}");
    let (n, problems) = scan_blob_tree(root.path());
    assert!(n > 0 && problems.is_empty(), "blob tree: {problems:#?}");
}

// ---------------------------------------------------------------------------------------------
// (b) resumable uploads across restarts

fn patch_chunk(c: &mut Client, loc: &str, start: u64, bytes: &[u8]) -> Response {
    let range = format!("{}-{}", start, start + bytes.len() as u64 - 1);
    let len = bytes.len().to_string();
    c.patch(
        loc,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &range),
            ("Content-Length", &len),
        ],
        bytes,
    )
}

/// Resume after restart: finish the session from the offset GET reports; returns nothing, checks
/// the stored blob.
fn resume_and_finish(s: &Server, loc: &str, data: &[u8], max_offset: u64, repo: &str) {
    let mut c = s.client();
    let r = c.get(loc);
    assert_eq!(
        r.status,
        204,
        "GET upload status after restart: {} {}\n{}",
        r.status,
        body_text(&r.body),
        tail(&s.stderr(), 3000)
    );
    let offset = range_end(&r);
    assert!(
        offset <= max_offset,
        "server reports {offset} bytes received, more than the {max_offset} sent"
    );
    let loc = r
        .header("location")
        .map(location_path)
        .unwrap_or_else(|| loc.to_string());
    let r = patch_chunk(&mut c, &loc, offset, &data[offset as usize..]);
    assert_eq!(
        r.status,
        202,
        "PATCH from offset {offset}: {}",
        body_text(&r.body)
    );
    assert_eq!(
        range_end(&r),
        data.len() as u64,
        "Range after the last PATCH"
    );
    let loc = location_path(r.header("location").expect("Location on PATCH"));
    let digest = sha256_digest(data);
    let r = c.put(
        &with_query(&loc, &format!("digest={digest}")),
        &[("Content-Length", "0")],
        b"",
    );
    assert_eq!(r.status, 201, "PUT to complete: {}", body_text(&r.body));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let r = c.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(r.status, 200);
    assert!(r.body == data, "resumed blob differs from what was sent");
    let r = c.get(&loc);
    assert_eq!(r.status, 404, "a completed session is gone");
}

/// Start a chunked upload, PATCH part of it, stop gracefully, start again: GET reports exactly
/// what was acknowledged, the rest PATCHed from there completes with the right digest.
#[test]
fn resumable_upload_across_graceful_restart() {
    let root = tempfile::tempdir().unwrap();
    let repo = "resume/graceful";
    let data = generated(42, 3 * 1024 * 1024 + 4321);
    let first = 1024 * 1024 + 123;
    let s = Server::start_with(root.path(), &[]);
    let mut c = s.client();
    let loc = start_upload(&mut c, repo);
    let r = patch_chunk(&mut c, &loc, 0, &data[..first]);
    assert_eq!(r.status, 202, "first PATCH: {}", body_text(&r.body));
    assert_eq!(range_end(&r), first as u64);
    let loc = location_path(r.header("location").expect("Location on PATCH"));
    drop(c);
    let st = s.stop();
    assert!(st.success(), "SIGTERM must exit 0, got {st}");

    let s = Server::start_with(root.path(), &[]);
    let mut c = s.client();
    let r = c.get(&loc);
    assert_eq!(
        r.status,
        204,
        "GET upload status after restart: {}",
        body_text(&r.body)
    );
    assert_eq!(
        range_end(&r),
        first as u64,
        "a graceful restart keeps every acknowledged byte"
    );
    drop(c);
    resume_and_finish(&s, &loc, &data, first as u64, repo);
    assert!(s.stop().success());
}

/// The same across kill -9: the session survives, the reported offset never exceeds what was sent,
/// and finishing from it gives the right blob.
#[test]
fn resumable_upload_across_kill9() {
    let root = tempfile::tempdir().unwrap();
    let repo = "resume/crash";
    let data = generated(43, 5 * 1024 * 1024 + 99);
    let s = Server::start_with(root.path(), &[]);
    let mut c = s.client();
    let loc = start_upload(&mut c, repo);
    let mut sent = 0usize;
    let mut loc = loc;
    for chunk in [700_000usize, 1_300_000] {
        let r = patch_chunk(&mut c, &loc, sent as u64, &data[sent..sent + chunk]);
        assert_eq!(r.status, 202, "PATCH: {}", body_text(&r.body));
        sent += chunk;
        assert_eq!(range_end(&r), sent as u64);
        loc = location_path(r.header("location").expect("Location on PATCH"));
    }
    drop(c);
    s.kill9();
    let s = Server::start_with(root.path(), &[]);
    resume_and_finish(&s, &loc, &data, sent as u64, repo);
    assert!(s.stop().success());
}

/// Bytes the process has read through read calls: its file reads on the blocking pool count,
/// its socket receives through io_uring do not (measured: finishing after a 1 MiB tail adds
/// about 12 KiB).
fn rchar(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/<pid>/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/<pid>/io")
}

/// A big first chunk, a restart (`crash`: kill -9 right after the 202, else SIGTERM), then
/// the tail and the completion: 201, the blob pulls back byte-identical, and the server read
/// about the tail's bytes to finish, not the first chunk again (the session resumed its hash
/// from the recorded state).
fn resume_without_reading_back(crash: bool) {
    let root = tempfile::tempdir().unwrap();
    let repo = "resume/noreread";
    let first = 64 * 1024 * 1024 + 4097;
    let tail = 1024 * 1024 + 99;
    let data = generated(44, first + tail);
    let s = Server::start_with(root.path(), &[]);
    let mut c = s.client();
    let loc = start_upload(&mut c, repo);
    let r = patch_chunk(&mut c, &loc, 0, &data[..first]);
    assert_eq!(r.status, 202, "first PATCH: {}", body_text(&r.body));
    assert_eq!(range_end(&r), first as u64);
    let loc = location_path(r.header("location").expect("Location on PATCH"));
    drop(c);
    if crash {
        s.kill9();
    } else {
        assert!(s.stop().success(), "SIGTERM must exit 0");
    }

    let s = Server::start_with(root.path(), &[]);
    let mut c = s.client();
    let r = c.get(&loc);
    assert_eq!(
        r.status,
        204,
        "status after restart: {}",
        body_text(&r.body)
    );
    assert_eq!(
        range_end(&r),
        first as u64,
        "the acknowledged offset survives"
    );
    let before = rchar(s.pid());
    let r = patch_chunk(&mut c, &loc, first as u64, &data[first..]);
    assert_eq!(r.status, 202, "tail PATCH: {}", body_text(&r.body));
    let digest = sha256_digest(&data);
    let r = c.put(
        &with_query(&loc, &format!("digest={digest}")),
        &[("Content-Length", "0")],
        b"",
    );
    assert_eq!(r.status, 201, "PUT to complete: {}", body_text(&r.body));
    let read = rchar(s.pid()) - before;
    assert!(
        read < (tail + 8 * 1024 * 1024) as u64,
        "finishing read {read} bytes for a {tail}-byte tail: the first {first} were read back"
    );
    let r = c.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(r.status, 200);
    assert!(r.body == data, "resumed blob differs from what was sent");
    eprintln!("crash={crash}: completing read {read} bytes (tail {tail}, first chunk {first})");
    drop(c);
    assert!(s.stop().success());
}

#[test]
fn resumed_upload_is_not_read_back_after_sigterm() {
    resume_without_reading_back(false);
}

#[test]
fn resumed_upload_is_not_read_back_after_kill9() {
    resume_without_reading_back(true);
}

// ---------------------------------------------------------------------------------------------
// (c) kill -9 during concurrent pushes

#[derive(Default)]
struct Acked {
    /// repo, digest, generator seed, length
    blobs: Vec<(String, String, u64, usize)>,
    /// small blobs (image configs): repo, digest, bytes
    configs: Vec<(String, String, Vec<u8>)>,
    /// repo, digest, bytes
    manifests: Vec<(String, String, Vec<u8>)>,
    /// repo, tag, digest
    tags: Vec<(String, String, String)>,
    /// answers that were wrong while the server was alive
    errors: Vec<String>,
}

/// Why a step of a crash-test pusher did not get its answer.
enum Failure {
    /// The connection failed: expected once the kill is announced, a finding before.
    Io(io::Error),
    /// A wrong answer while the server was alive: always a finding.
    Wrong(String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Io(e)
    }
}

/// [`raw_http`], with any status but `want` a [`Failure::Wrong`].
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    want: u16,
) -> Result<Response, Failure> {
    let r = raw_http(addr, method, path, headers, body)?;
    if r.status != want {
        return Err(Failure::Wrong(format!(
            "{method} {path}: {} {}",
            r.status,
            body_text(&r.body)
        )));
    }
    Ok(r)
}

/// Uploads a blob one of three ways (monolithic POST, POST + PUT with the body, POST + two
/// PATCHes + PUT); `Ok` once it is acknowledged (201).
fn crash_push_blob(addr: SocketAddr, repo: &str, data: &[u8], how: u64) -> Result<(), Failure> {
    let digest = sha256_digest(data);
    let octets = [("Content-Type", "application/octet-stream")];
    let way = how % 3;
    if way == 0 {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
        exchange(addr, "POST", &path, &octets, data, 201)?;
        return Ok(());
    }
    let r = exchange(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
        202,
    )?;
    let mut loc = location_path(r.header("location").unwrap_or(""));
    if way == 1 {
        let path = with_query(&loc, &format!("digest={digest}"));
        exchange(addr, "PUT", &path, &octets, data, 201)?;
        return Ok(());
    }
    let half = data.len() / 2;
    for (start, part) in [(0, &data[..half]), (half, &data[half..])] {
        if part.is_empty() {
            continue;
        }
        let range = format!("{}-{}", start, start + part.len() - 1);
        let headers = [octets[0], ("Content-Range", &range)];
        let r = exchange(addr, "PATCH", &loc, &headers, part, 202)?;
        loc = location_path(r.header("location").unwrap_or(&loc));
    }
    let path = with_query(&loc, &format!("digest={digest}"));
    exchange(addr, "PUT", &path, &[], b"", 201)?;
    Ok(())
}

/// Whether a pusher's step was acknowledged; a failure that is a finding goes to `acked.errors`
/// (an IO error after the kill was announced is expected, anything else is a finding).
fn settled(acked: &Mutex<Acked>, stop: &AtomicBool, who: &str, step: Result<(), Failure>) -> bool {
    match step {
        Ok(()) => true,
        Err(Failure::Wrong(e)) => {
            acked.lock().unwrap().errors.push(format!("{who}: {e}"));
            false
        }
        Err(Failure::Io(e)) => {
            if !stop.load(Ordering::SeqCst) {
                acked
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("{who}: IO error {e}"));
            }
            false
        }
    }
}

/// Pushes blobs, configs and manifests until `stop`, recording what was acknowledged; ends at
/// the first failure.
fn crash_worker(
    addr: SocketAddr,
    round: u64,
    thread: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
) {
    let mut i: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let who = |step: &str| format!("thread {thread} op {i} {step}");
        let repo = format!("crash/r{}", (thread + i) % 3);
        let seed = (round << 40) | (thread << 32) | i;
        // mostly small blobs, every fifth one a few MiB so that kills land inside big writes
        let len = if i % 5 == 4 {
            1024 * 1024 + (seed % 3) as usize * 1024 * 1024 + 333
        } else {
            1 + (seed.wrapping_mul(2654435761) % 60_000) as usize
        };
        let layer = generated(seed, len);
        let layer_digest = sha256_digest(&layer);
        let step = crash_push_blob(addr, &repo, &layer, i);
        if !settled(&acked, &stop, &who("blob"), step) {
            return;
        }
        acked
            .lock()
            .unwrap()
            .blobs
            .push((repo.clone(), layer_digest.clone(), seed, len));

        let config = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{layer_digest}\"]}},\"seed\":{seed}}}"
        )
        .into_bytes();
        let config_digest = sha256_digest(&config);
        let step = exchange(
            addr,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={config_digest}"),
            &[("Content-Type", "application/octet-stream")],
            &config,
            201,
        );
        if !settled(&acked, &stop, &who("config"), step.map(drop)) {
            return;
        }
        acked
            .lock()
            .unwrap()
            .configs
            .push((repo.clone(), config_digest.clone(), config.clone()));

        let manifest = image_manifest(&(config_digest, config.len()), &[(layer_digest, len)]);
        let mdigest = sha256_digest(&manifest);
        let tag = format!("r{round}-t{thread}-{i}");
        let reference = if i % 4 == 3 {
            mdigest.clone()
        } else {
            tag.clone()
        };
        let step = exchange(
            addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", &manifest_media_type(&manifest))],
            &manifest,
            201,
        );
        if !settled(&acked, &stop, &who("manifest"), step.map(drop)) {
            return;
        }
        let mut a = acked.lock().unwrap();
        a.manifests.push((repo.clone(), mdigest.clone(), manifest));
        if reference == tag {
            a.tags.push((repo, tag, mdigest));
        }
        drop(a);
        i += 1;
    }
}

fn verify_acked(s: &Server, acked: &Acked, when: &str) {
    let mut c = s.client();
    let log = || tail(&s.stderr(), 3000).to_string();
    // GET path is 200 with exactly `want`
    let mut check = |path: String, what: String, want: &[u8]| {
        let r = c.get(&path);
        assert_eq!(
            r.status,
            200,
            "{when}: acknowledged {what} missing: {}\n{}",
            body_text(&r.body),
            log()
        );
        assert!(r.body == want, "{when}: acknowledged {what} differs");
    };
    for (repo, digest, seed, len) in &acked.blobs {
        check(
            format!("/v2/{repo}/blobs/{digest}"),
            format!("blob {repo}@{digest}"),
            &generated(*seed, *len),
        );
    }
    for (repo, digest, bytes) in &acked.configs {
        check(
            format!("/v2/{repo}/blobs/{digest}"),
            format!("config blob {repo}@{digest}"),
            bytes,
        );
    }
    for (repo, digest, bytes) in &acked.manifests {
        check(
            format!("/v2/{repo}/manifests/{digest}"),
            format!("manifest {repo}@{digest}"),
            bytes,
        );
    }
    for (repo, tag, digest) in &acked.tags {
        let r = c.get(&format!("/v2/{repo}/manifests/{tag}"));
        assert_eq!(
            r.status,
            200,
            "{when}: acknowledged tag {repo}:{tag} missing: {}\n{}",
            body_text(&r.body),
            log()
        );
        assert_eq!(
            r.header("docker-content-digest"),
            Some(digest.as_str()),
            "{when}: tag {repo}:{tag}"
        );
        assert_eq!(
            &sha256_digest(&r.body),
            digest,
            "{when}: tag {repo}:{tag} body"
        );
    }
    for repo in ["crash/r0", "crash/r1", "crash/r2"] {
        let want: std::collections::BTreeSet<&str> = acked
            .tags
            .iter()
            .filter(|t| t.0 == repo)
            .map(|t| t.1.as_str())
            .collect();
        if want.is_empty() {
            continue;
        }
        let r = c.get(&format!("/v2/{repo}/tags/list"));
        assert_eq!(r.status, 200, "{when}: tags/list of {repo}");
        let v = r.json();
        let have: std::collections::BTreeSet<&str> = v["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        let missing: Vec<_> = want.difference(&have).collect();
        assert!(
            missing.is_empty(),
            "{when}: tags/list of {repo} lacks acknowledged tags {missing:?}"
        );
    }
}

/// 8 threads push blobs (monolithic, POST+PUT, chunked) and manifests (by tag and by digest)
/// concurrently; the server is killed with SIGKILL mid-load at three different moments (on the
/// same root, so earlier rounds are re-verified). After each restart every acknowledged (201)
/// blob, manifest and tag is there byte-identical, and every digest-named file in the blob tree
/// hashes to its name.
#[test]
fn crash_kill9_during_concurrent_pushes() {
    let root = tempfile::tempdir().unwrap();
    let mut all = Acked::default();
    for (round, kill_after_ms) in [(0u64, 400u64), (1, 1300), (2, 2900)] {
        let s = Server::start_with(root.path(), &[]);
        if round > 0 {
            verify_acked(&s, &all, &format!("round {round} start"));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Acked::default()));
        let addr = s.addr;
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (stop, acked) = (stop.clone(), acked.clone());
                std::thread::spawn(move || crash_worker(addr, round, t, stop, acked))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        let log_before = s.stderr();
        stop.store(true, Ordering::SeqCst);
        s.kill9();
        for t in threads {
            t.join().expect("pusher thread panicked");
        }
        let acked = Arc::try_unwrap(acked).ok().unwrap().into_inner().unwrap();
        assert!(
            acked.errors.is_empty(),
            "round {round}: wrong answers before the kill: {:#?}\n--- server stderr ---\n{}",
            acked.errors,
            tail(&log_before, 3000)
        );
        assert!(
            !acked.blobs.is_empty() && !acked.manifests.is_empty(),
            "round {round}: nothing was acknowledged in {kill_after_ms} ms; the kill did not land mid-load"
        );
        eprintln!(
            "round {round}: killed after {kill_after_ms} ms with {} layer blobs, {} config blobs, {} manifests, {} tags acknowledged",
            acked.blobs.len(),
            acked.configs.len(),
            acked.manifests.len(),
            acked.tags.len()
        );
        all.blobs.extend(acked.blobs);
        all.configs.extend(acked.configs);
        all.manifests.extend(acked.manifests);
        all.tags.extend(acked.tags);

        let (n, problems) = scan_blob_tree(root.path());
        assert!(
            problems.is_empty(),
            "round {round}: blob tree after kill -9 ({n} files): {problems:#?}"
        );
        let s = Server::start_with(root.path(), &[]);
        verify_acked(&s, &all, &format!("round {round} after restart"));
        // the restarted server accepts new pushes
        let mut c = s.client();
        let extra = generated(9_000 + round, 10_000);
        let d = push_blob(&mut c, "crash/after", &extra);
        assert!(c.get(&format!("/v2/crash/after/blobs/{d}")).body == extra);
        drop(c);
        assert!(s.stop().success());
    }
    let (n, problems) = scan_blob_tree(root.path());
    assert!(
        problems.is_empty(),
        "blob tree at the end ({n} files): {problems:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// (d) upload expiry

/// With `--upload-expiry 2`, an upload session with data is 404 BLOB_UPLOAD_UNKNOWN after ~5 s
/// and its directory under uploads/ is removed; a session that is completed in time is not
/// affected.
#[test]
fn upload_sessions_expire_and_their_data_is_removed() {
    let root = tempfile::tempdir().unwrap();
    let s = Server::start_with(root.path(), &["--upload-expiry", "2"]);
    let uploads = root.path().join("uploads");
    let entries = |p: &Path| -> Vec<String> {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let before_any = entries(&uploads);
    let mut c = s.client();
    let loc = start_upload(&mut c, "expiry/test");
    let data = generated(77, 256 * 1024);
    let r = patch_chunk(&mut c, &loc, 0, &data);
    assert_eq!(r.status, 202, "PATCH: {}", body_text(&r.body));
    let loc = location_path(r.header("location").expect("Location"));
    let id = loc
        .split('?')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let session_dirs: Vec<String> = entries(&uploads)
        .into_iter()
        .filter(|e| !before_any.contains(e))
        .collect();
    assert!(
        !session_dirs.is_empty(),
        "the session with data must have a directory under {} (id {id})",
        uploads.display()
    );
    let r = c.get(&loc);
    assert_eq!(r.status, 204, "fresh session status");
    drop(c);

    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let mut c = s.client();
    let r = c.get(&loc);
    assert_eq!(r.status, 404, "expired session GET: {}", body_text(&r.body));
    let code: Option<String> = serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(String::from));
    assert_eq!(
        code.as_deref(),
        Some("BLOB_UPLOAD_UNKNOWN"),
        "body: {}",
        body_text(&r.body)
    );
    let r = patch_chunk(&mut c, &loc, data.len() as u64, &generated(78, 1000));
    assert_eq!(
        r.status,
        404,
        "PATCH to an expired session: {}",
        body_text(&r.body)
    );
    // the sweep may trail the expiry a little; allow up to 10 s after the PATCH in total
    let deadline = t0 + Duration::from_secs(10);
    loop {
        let left: Vec<String> = entries(&uploads)
            .into_iter()
            .filter(|e| session_dirs.contains(e))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expired session data still under {}: {left:?}\n{}",
            uploads.display(),
            tail(&s.stderr(), 2000)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = c.put(
        &with_query(&loc, &format!("digest={}", sha256_digest(&data))),
        &[],
        b"",
    );
    assert_eq!(
        r.status,
        404,
        "PUT to an expired session: {}",
        body_text(&r.body)
    );

    // a session that completes within the expiry is stored normally
    let loc = start_upload(&mut c, "expiry/test");
    let data = generated(79, 10_000);
    let d = sha256_digest(&data);
    let r = c.put(
        &with_query(&loc, &format!("digest={d}")),
        &[("Content-Type", "application/octet-stream")],
        &data,
    );
    assert_eq!(r.status, 201, "PUT within expiry: {}", body_text(&r.body));
    std::thread::sleep(Duration::from_secs(3));
    let r = c.get(&format!("/v2/expiry/test/blobs/{d}"));
    assert!(
        r.status == 200 && r.body == data,
        "a completed blob is not subject to upload expiry"
    );
    drop(c);
    assert!(s.stop().success());
}
