//! The spec's grammar for repository names, tags and digests: invalid ones get 400 with
//! NAME_INVALID / TAG_INVALID (or MANIFEST_INVALID) / DIGEST_INVALID on every endpoint (except
//! reads of a manifest by an invalid tag: 404, a manifest that cannot exist), and no request
//! can touch the filesystem outside the data directory.

use crate::common::*;
use std::path::Path;

const OCTET: (&str, &str) = ("Content-Type", "application/octet-stream");

fn bad_names() -> Vec<String> {
    vec![
        "Upper".into(),
        "upper/Case".into(),
        "a/../b".into(),
        "..".into(),
        "a/./b".into(),
        "a//b".into(),
        "a/".into(),
        "/a".into(),
        "%2e%2e".into(),
        "a/%2e%2e/b".into(),
        "a%2f..%2fb".into(),
        "-a".into(),
        "a-".into(),
        "a..b".into(),
        "a___b".into(),
        "a%20b".into(),
        "a@b".into(),
        "a".repeat(256),
        format!("{}/{}", "a".repeat(128), "b".repeat(128)),
    ]
}

/// A well-formed image manifest body (its blobs need not exist: the name is checked first).
fn some_manifest() -> Vec<u8> {
    image_manifest(&(sha256_digest(b"cfg"), 3), &[(sha256_digest(b"layer"), 5)])
}

#[test]
fn invalid_repository_names_are_name_invalid_on_every_endpoint() {
    let s = Server::start();
    let mut c = s.client();
    let d = sha256_digest(b"layer");
    let manifest = some_manifest();
    for name in bad_names() {
        let cases: Vec<(&str, String, Vec<u8>)> = vec![
            ("GET", format!("/v2/{name}/tags/list"), vec![]),
            ("GET", format!("/v2/{name}/manifests/latest"), vec![]),
            ("GET", format!("/v2/{name}/manifests/{d}"), vec![]),
            (
                "PUT",
                format!("/v2/{name}/manifests/latest"),
                manifest.clone(),
            ),
            ("DELETE", format!("/v2/{name}/manifests/latest"), vec![]),
            ("GET", format!("/v2/{name}/blobs/{d}"), vec![]),
            ("DELETE", format!("/v2/{name}/blobs/{d}"), vec![]),
            ("POST", format!("/v2/{name}/blobs/uploads/"), vec![]),
            (
                "POST",
                format!("/v2/{name}/blobs/uploads/?digest={d}"),
                b"layer".to_vec(),
            ),
            ("GET", format!("/v2/{name}/referrers/{d}"), vec![]),
        ];
        for (method, path, body) in cases {
            let headers: &[(&str, &str)] = if method == "PUT" {
                &[("Content-Type", OCI_MANIFEST)]
            } else {
                &[]
            };
            let r = c.request(method, &path, headers, &body);
            assert_eq!(
                r.status,
                400,
                "{method} {path}: expected 400 NAME_INVALID, got {} {:?}",
                r.status,
                r.text()
            );
            assert_error(&r, 400, &["NAME_INVALID"]);
        }
        let h = c.head(&format!("/v2/{name}/manifests/latest"));
        assert_eq!(h.status, 400, "HEAD /v2/{name}/manifests/latest");
        let h = c.head(&format!("/v2/{name}/blobs/{d}"));
        assert_eq!(h.status, 400, "HEAD /v2/{name}/blobs/{d}");
    }
    assert_alive(&s);
}

#[test]
fn valid_unusual_names_are_accepted() {
    let s = Server::start();
    let mut c = s.client();
    for name in [
        "a".to_string(),
        "0".to_string(),
        "a.b_c__d---e/f0".to_string(),
        "deep/er/and/deeper/still".to_string(),
        format!("{}/{}", "a".repeat(100), "b".repeat(100)),
    ] {
        let data = format!("blob for {name}").into_bytes();
        let d = push_blob(&mut c, &name, &data);
        let r = c.get(&format!("/v2/{name}/blobs/{d}"));
        assert_status(&r, 200);
        assert!(r.body == data);
    }
}

fn bad_tags() -> Vec<String> {
    vec![
        "-lead".into(),
        ".lead".into(),
        "%2e%2e".into(),
        "a".repeat(129),
        "bad%21".into(),
        "bad%20tag".into(),
        "t%2Bx".into(),
        ".INVALID_MANIFEST_NAME".into(),
    ]
}

/// The conformance suite's `.INVALID_MANIFEST_NAME` among them.
#[test]
fn invalid_tags_are_refused_and_never_found() {
    let s = Server::start();
    let mut c = s.client();
    let (_d, manifest) = push_image(&mut c, "tags", "ok", &[b"layer for tags"]);
    for tag in bad_tags() {
        let path = format!("/v2/tags/manifests/{tag}");
        let r = c.put(&path, &[("Content-Type", OCI_MANIFEST)], &manifest);
        assert_error(&r, 400, &["TAG_INVALID", "MANIFEST_INVALID"]);
        // Reads ask for a manifest that cannot exist: 404, as the conformance suite expects.
        let r = c.get(&path);
        assert_error(&r, 404, &["MANIFEST_UNKNOWN"]);
        assert_head_status(&c.head(&path), 404);
        let r = c.get(&format!("/v2/never-pushed/manifests/{tag}"));
        assert_error(&r, 404, &["NAME_UNKNOWN"]);
        let r = c.delete(&path);
        assert_error(&r, 400, &["TAG_INVALID", "MANIFEST_INVALID"]);
    }
    let t = c.get("/v2/tags/tags/list");
    assert_status(&t, 200);
    assert_eq!(t.json()["tags"], serde_json::json!(["ok"]));
}

#[test]
fn valid_edge_tags_are_accepted() {
    let s = Server::start();
    let mut c = s.client();
    let (_d, manifest) = push_image(&mut c, "tags", "ok", &[b"layer for edge tags"]);
    for tag in [
        "_lead".to_string(),
        "a".repeat(128),
        "A.b-C_9".to_string(),
        "0".to_string(),
    ] {
        let r = c.put(
            &format!("/v2/tags/manifests/{tag}"),
            &[("Content-Type", OCI_MANIFEST)],
            &manifest,
        );
        assert_status(&r, 201);
        let g = c.get(&format!("/v2/tags/manifests/{tag}"));
        assert_status(&g, 200);
        assert!(g.body == manifest);
    }
}

fn bad_digests() -> Vec<String> {
    vec![
        "sha256:abc".into(),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}g", "0".repeat(63)),
        format!("sha256:{}", "0".repeat(65)),
        format!("sha512:{}", "0".repeat(64)),
        "sha256:".into(),
        format!(":{}", "0".repeat(64)),
        format!("sha256:{}%2f..", "0".repeat(62)),
    ]
}

#[test]
fn invalid_digests_are_digest_invalid() {
    let s = Server::start();
    let mut c = s.client();
    push_blob(&mut c, "dg", b"repo exists");
    let (_md, manifest) = push_image(&mut c, "dg", "ok", &[b"digest tests"]);
    let session = start_upload(&mut c, "dg");
    for d in bad_digests() {
        for (method, path) in [
            ("GET", format!("/v2/dg/blobs/{d}")),
            ("DELETE", format!("/v2/dg/blobs/{d}")),
            ("GET", format!("/v2/dg/manifests/{d}")),
            ("DELETE", format!("/v2/dg/manifests/{d}")),
        ] {
            let r = c.request(method, &path, &[], b"");
            assert_error(&r, 400, &["DIGEST_INVALID"]);
        }
        let h = c.head(&format!("/v2/dg/blobs/{d}"));
        assert_eq!(h.status, 400, "HEAD blob {d}");
        let h = c.head(&format!("/v2/dg/manifests/{d}"));
        assert_eq!(h.status, 400, "HEAD manifest {d}");
        let r = c.put(
            &format!("/v2/dg/manifests/{d}"),
            &[("Content-Type", OCI_MANIFEST)],
            &manifest,
        );
        assert_error(&r, 400, &["DIGEST_INVALID"]);
        let r = c.post(
            &format!("/v2/dg/blobs/uploads/?digest={d}"),
            &[OCTET],
            b"abc",
        );
        assert_error(&r, 400, &["DIGEST_INVALID"]);
    }
    // Closing a session with an invalid digest.
    for d in bad_digests() {
        let r = c.put(&with_query(&session, &format!("digest={d}")), &[], b"");
        assert_error(&r, 400, &["DIGEST_INVALID"]);
    }
}

#[test]
fn unsupported_digest_algorithms_cannot_be_pushed() {
    let s = Server::start();
    let mut c = s.client();
    let md5 = "md5:d41d8cd98f00b204e9800998ecf8427e";
    let r = c.post(
        &format!("/v2/alg/blobs/uploads/?digest={md5}"),
        &[OCTET],
        b"",
    );
    assert_error(&r, 400, &["DIGEST_INVALID", "UNSUPPORTED"]);
    let loc = start_upload(&mut c, "alg");
    let r = c.put(&with_query(&loc, &format!("digest={md5}")), &[], b"");
    assert_error(&r, 400, &["DIGEST_INVALID", "UNSUPPORTED"]);
    // Reading one is either invalid or simply unknown.
    let r = c.get(&format!("/v2/alg/blobs/{md5}"));
    assert!(
        r.status == 400 || r.status == 404,
        "GET md5 blob: {}",
        r.status
    );
    check_error_body(&r);
}

/// Every path under `dir` (relative), except what is under `except`.
fn tree(dir: &Path, except: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.starts_with(except) && p != except {
                continue;
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() && !p.starts_with(except) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn nothing_is_created_outside_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let outer = tmp.path().join("outer");
    let root = outer.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let s = Server::start_with(&root, &[]);
    let mut c = s.client();
    let data = b"a legitimate blob".to_vec();
    let good = push_blob(&mut c, "ok", &data);
    let session = start_upload(&mut c, "ok");
    let body = b"escape".to_vec();
    let d = sha256_digest(&body);
    let manifest = some_manifest();
    let attempts: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "POST",
            format!("/v2/..%2f..%2fescape/blobs/uploads/?digest={d}"),
            body.clone(),
        ),
        (
            "POST",
            format!("/v2/../../escape/blobs/uploads/?digest={d}"),
            body.clone(),
        ),
        (
            "POST",
            "/v2/%2e%2e/%2e%2e/escape/blobs/uploads/".into(),
            vec![],
        ),
        (
            "PUT",
            "/v2/a/../../escape/manifests/latest".into(),
            manifest.clone(),
        ),
        (
            "PUT",
            "/v2/ok/manifests/..%2f..%2fescape".into(),
            manifest.clone(),
        ),
        (
            "PUT",
            "/v2/ok/manifests/%2e%2e%2f%2e%2e%2fescape".into(),
            manifest.clone(),
        ),
        (
            "GET",
            "/v2/ok/blobs/sha256:..%2f..%2f..%2fescape".into(),
            vec![],
        ),
        ("GET", "/v2/ok/blobs/sha256:../../../escape".into(), vec![]),
        (
            "PATCH",
            "/v2/ok/blobs/uploads/..%2f..%2fescape".into(),
            body.clone(),
        ),
        (
            "PATCH",
            "/v2/ok/blobs/uploads/../../escape".into(),
            body.clone(),
        ),
        (
            "PUT",
            format!("/v2/ok/blobs/uploads/..%2f..%2f..%2fescape?digest={d}"),
            body.clone(),
        ),
        (
            "DELETE",
            "/v2/ok/blobs/uploads/..%2f..%2f..%2fouter".into(),
            vec![],
        ),
        ("DELETE", "/v2/ok/blobs/uploads/..".into(), vec![]),
        ("DELETE", "/v2/ok/blobs/uploads/%2e%2e".into(), vec![]),
        (
            "GET",
            "/v2/ok/blobs/uploads/..%2f..%2fmeta.db".into(),
            vec![],
        ),
        (
            "POST",
            "/v2/ok/blobs/uploads/?mount=sha256:..%2f..%2fx&from=..%2f..%2fescape".into(),
            vec![],
        ),
        ("GET", "/v2/%2e%2e/%2e%2e/tags/list".into(), vec![]),
        (
            "GET",
            "/v2/ok/referrers/sha256:..%2f..%2fescape".into(),
            vec![],
        ),
        (
            "GET",
            "/v2/..%2f..%2f..%2f..%2fetc/tags/list".into(),
            vec![],
        ),
    ];
    for (method, path, body) in attempts {
        let headers: &[(&str, &str)] = if method == "PUT" && path.contains("/manifests/") {
            &[("Content-Type", OCI_MANIFEST)]
        } else {
            &[("Content-Type", "application/octet-stream")]
        };
        let r = c.request(method, &path, headers, &body);
        assert!(
            (400..500).contains(&r.status) || (path.contains("mount=") && r.status == 202),
            "{method} {path}: expected a 4xx, got {} {:?}",
            r.status,
            r.text()
        );
        if r.status >= 400 {
            check_error_body(&r);
        }
    }
    // Nothing next to the root, nothing next to its parent.
    assert_eq!(
        tree(tmp.path(), &root),
        vec!["outer".to_string(), "outer/root".to_string()]
    );
    let escaped: Vec<String> = tree(&root, Path::new("/nonexistent"))
        .into_iter()
        .filter(|p| p.contains("escape"))
        .collect();
    assert!(
        escaped.is_empty(),
        "paths named after request input inside the root: {escaped:?}"
    );
    // The legitimate content and session survived.
    let r = c.get(&format!("/v2/ok/blobs/{good}"));
    assert_status(&r, 200);
    assert!(r.body == data);
    let st = c.get(&session);
    assert_status(&st, 204);
    assert_alive(&s);
}
