//! Manifests: every media type the issue names, byte-exact storage, PUT validation (digest, JSON,
//! media type, missing blobs, size limit), subject, deletion by digest and by tag, unknown
//! references, and `--no-delete`.

use crate::common::*;
use serde_json::json;

const EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// Pretty-printed with a trailing newline: a registry that re-serializes would change the bytes.
fn odd_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).unwrap();
    b.extend_from_slice(b"\n\n");
    b
}

fn desc(media_type: &str, digest: &str, size: usize) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// Pushes a config and `n` layers; returns their descriptors as (digest, size).
fn push_parts(
    c: &mut Client,
    repo: &str,
    seed: u64,
    n: usize,
) -> ((String, usize), Vec<(String, usize)>) {
    let mut layers = Vec::new();
    for i in 0..n {
        let data = pseudo_random(1000 + i * 10, seed * 100 + i as u64);
        let d = push_blob(c, repo, &data);
        layers.push((d, data.len()));
    }
    let digests: Vec<String> = layers.iter().map(|(d, _)| d.clone()).collect();
    let cfg = image_config(&digests);
    let cd = push_blob(c, repo, &cfg);
    ((cd, cfg.len()), layers)
}

fn oci_manifest_value(cfg: &(String, usize), layers: &[(String, usize)]) -> serde_json::Value {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, &cfg.0, cfg.1),
        "layers": layers.iter().map(|(d, s)| desc(OCI_LAYER_GZIP, d, *s)).collect::<Vec<_>>(),
        "annotations": {"org.opencontainers.image.title": "test image"},
    })
}

#[track_caller]
fn put_manifest(
    c: &mut Client,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Response {
    c.put(
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        body,
    )
}

/// PUT, asserting 201, the Location (pullable) and Docker-Content-Digest; returns the digest.
#[track_caller]
fn put_ok(c: &mut Client, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
    let r = put_manifest(c, repo, reference, media_type, body);
    assert_status(&r, 201);
    let d = sha256_digest(body);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(d.as_str()),
        "PUT {repo}:{reference}"
    );
    let loc = location_path(must_header(&r, "location"));
    assert!(
        loc.starts_with(&format!("/v2/{repo}/manifests/")),
        "manifest Location {loc:?}"
    );
    let g = c.get(&loc);
    assert_status(&g, 200);
    assert!(g.body == body, "GET on the Location returns other bytes");
    d
}

/// GET and HEAD by `reference`: 200, Content-Type, Docker-Content-Digest, Content-Length, body.
#[track_caller]
fn assert_manifest(c: &mut Client, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
    let d = sha256_digest(body);
    let path = format!("/v2/{repo}/manifests/{reference}");
    let g = c.request("GET", &path, &[("Accept", media_type)], b"");
    assert_status(&g, 200);
    assert_eq!(
        g.header("content-type"),
        Some(media_type),
        "GET {path}: Content-Type"
    );
    assert_eq!(
        g.header("Docker-Content-Digest"),
        Some(d.as_str()),
        "GET {path}"
    );
    assert!(
        g.body == body,
        "GET {path}: body is not byte-identical to what was pushed"
    );
    let h = c.request("HEAD", &path, &[("Accept", media_type)], b"");
    assert_status(&h, 200);
    assert_eq!(
        h.header("content-type"),
        Some(media_type),
        "HEAD {path}: Content-Type"
    );
    assert_eq!(
        h.header("Docker-Content-Digest"),
        Some(d.as_str()),
        "HEAD {path}"
    );
    assert_eq!(
        h.header("content-length"),
        Some(body.len().to_string().as_str()),
        "HEAD {path}: Content-Length"
    );
}

#[track_caller]
fn assert_manifest_unknown(c: &mut Client, repo: &str, reference: &str) {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let r = c.get(&path);
    assert_error(&r, 404, &["MANIFEST_UNKNOWN"]);
    let h = c.head(&path);
    assert_head_status(&h, 404);
}

// ---------------------------------------------------------------------------------------------
// Media types
// ---------------------------------------------------------------------------------------------

#[test]
fn oci_image_manifest_by_tag_and_by_digest() {
    let s = Server::start();
    let mut c = s.client();
    let (cfg, layers) = push_parts(&mut c, "oci/img", 1, 2);
    let body = odd_bytes(&oci_manifest_value(&cfg, &layers));
    let d = put_ok(&mut c, "oci/img", "v1.0", OCI_MANIFEST, &body);
    assert_manifest(&mut c, "oci/img", "v1.0", OCI_MANIFEST, &body);
    assert_manifest(&mut c, "oci/img", &d, OCI_MANIFEST, &body);

    // By digest: no tag is created.
    let (cfg2, layers2) = push_parts(&mut c, "oci/img", 2, 1);
    let body2 = odd_bytes(&oci_manifest_value(&cfg2, &layers2));
    let d2 = sha256_digest(&body2);
    let d2b = put_ok(&mut c, "oci/img", &d2, OCI_MANIFEST, &body2);
    assert_eq!(d2, d2b);
    assert_manifest(&mut c, "oci/img", &d2, OCI_MANIFEST, &body2);
    let t = c.get("/v2/oci/img/tags/list");
    assert_status(&t, 200);
    assert_eq!(t.json()["tags"], json!(["v1.0"]));
}

#[test]
fn manifest_without_media_type_field_is_served_with_the_put_content_type() {
    let s = Server::start();
    let mut c = s.client();
    let (cfg, layers) = push_parts(&mut c, "nomt", 3, 1);
    let mut v = oci_manifest_value(&cfg, &layers);
    v.as_object_mut().unwrap().remove("mediaType");
    let body = odd_bytes(&v);
    put_ok(&mut c, "nomt", "latest", OCI_MANIFEST, &body);
    assert_manifest(&mut c, "nomt", "latest", OCI_MANIFEST, &body);
}

#[test]
fn oci_image_index() {
    let s = Server::start();
    let mut c = s.client();
    let mut children = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let (cfg, layers) = push_parts(&mut c, "oci/idx", 10 + i as u64, 1);
        let body = odd_bytes(&oci_manifest_value(&cfg, &layers));
        let d = sha256_digest(&body);
        put_ok(&mut c, "oci/idx", &d, OCI_MANIFEST, &body);
        children.push(json!({
            "mediaType": OCI_MANIFEST, "digest": d, "size": body.len(),
            "platform": {"architecture": arch, "os": "linux"}
        }));
    }
    let index = odd_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children,
        "annotations": {"org.example": "index"},
    }));
    let d = put_ok(&mut c, "oci/idx", "multi", OCI_INDEX, &index);
    assert_manifest(&mut c, "oci/idx", "multi", OCI_INDEX, &index);
    assert_manifest(&mut c, "oci/idx", &d, OCI_INDEX, &index);
}

#[test]
fn docker_schema2_manifest_and_manifest_list() {
    let s = Server::start();
    let mut c = s.client();
    let mut children = Vec::new();
    for (i, arch) in ["amd64", "arm64", "s390x"].iter().enumerate() {
        let (cfg, layers) = push_parts(&mut c, "docker/img", 20 + i as u64, 2);
        let v = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": desc(DOCKER_CONFIG, &cfg.0, cfg.1),
            "layers": layers.iter().map(|(d, s)| desc(DOCKER_LAYER, d, *s)).collect::<Vec<_>>(),
        });
        let body = odd_bytes(&v);
        let d = put_ok(
            &mut c,
            "docker/img",
            &format!("v2s2-{arch}"),
            DOCKER_MANIFEST,
            &body,
        );
        assert_manifest(
            &mut c,
            "docker/img",
            &format!("v2s2-{arch}"),
            DOCKER_MANIFEST,
            &body,
        );
        assert_manifest(&mut c, "docker/img", &d, DOCKER_MANIFEST, &body);
        children.push(json!({
            "mediaType": DOCKER_MANIFEST, "digest": d, "size": body.len(),
            "platform": {"architecture": arch, "os": "linux"}
        }));
    }
    let list = odd_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": children,
    }));
    let d = put_ok(&mut c, "docker/img", "list", DOCKER_LIST, &list);
    assert_manifest(&mut c, "docker/img", "list", DOCKER_LIST, &list);
    assert_manifest(&mut c, "docker/img", &d, DOCKER_LIST, &list);
}

#[test]
fn artifact_with_artifact_type_and_empty_config() {
    let s = Server::start();
    let mut c = s.client();
    let empty = push_blob(&mut c, "art", b"{}");
    assert_eq!(empty, EMPTY_CONFIG_DIGEST);
    let sbom = br#"{"spdxVersion":"SPDX-2.3"}"#;
    let sd = push_blob(&mut c, "art", sbom);
    let body = odd_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_CONFIG_DIGEST, "size": 2, "data": "e30="},
        "layers": [desc("application/spdx+json", &sd, sbom.len())],
    }));
    let d = put_ok(&mut c, "art", "sbom", OCI_MANIFEST, &body);
    assert_manifest(&mut c, "art", "sbom", OCI_MANIFEST, &body);
    assert_manifest(&mut c, "art", &d, OCI_MANIFEST, &body);
}

#[test]
fn artifact_with_an_arbitrary_config_media_type_and_no_layers() {
    let s = Server::start();
    let mut c = s.client();
    let cfg = br#"{"tool":"helm","version":"3"}"#;
    let cd = push_blob(&mut c, "charts/app", cfg);
    let body = odd_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.cncf.helm.config.v1+json", &cd, cfg.len()),
        "layers": [],
    }));
    let d = put_ok(&mut c, "charts/app", "0.1.0", OCI_MANIFEST, &body);
    assert_manifest(&mut c, "charts/app", "0.1.0", OCI_MANIFEST, &body);
    assert_manifest(&mut c, "charts/app", &d, OCI_MANIFEST, &body);
}

#[test]
fn retagging_moves_the_tag() {
    let s = Server::start();
    let mut c = s.client();
    let a: &[u8] = b"layer a";
    let b: &[u8] = b"layer b";
    let (da, ba) = push_image(&mut c, "retag", "latest", &[a]);
    assert_manifest(&mut c, "retag", "latest", OCI_MANIFEST, &ba);
    let (db, bb) = push_image(&mut c, "retag", "latest", &[b]);
    assert_ne!(da, db);
    assert_manifest(&mut c, "retag", "latest", OCI_MANIFEST, &bb);
    // The old manifest is still there by digest.
    assert_manifest(&mut c, "retag", &da, OCI_MANIFEST, &ba);
    let t = c.get("/v2/retag/tags/list");
    assert_status(&t, 200);
    assert_eq!(
        t.json()["tags"],
        json!(["latest"]),
        "a re-pushed tag is listed once"
    );
}

#[test]
fn content_type_parameters_are_ignored() {
    // Spec: "Registries SHOULD ignore any parameters" on the manifest Content-Type.
    let s = Server::start();
    let mut c = s.client();
    let (cfg, layers) = push_parts(&mut c, "params", 42, 1);
    let body = odd_bytes(&oci_manifest_value(&cfg, &layers));
    let r = put_manifest(
        &mut c,
        "params",
        "p",
        &format!("{OCI_MANIFEST}; charset=utf-8"),
        &body,
    );
    assert_status(&r, 201);
    let g = c.get("/v2/params/manifests/p");
    assert_status(&g, 200);
    assert!(g.body == body);
    assert_eq!(
        g.header("content-type")
            .map(|v| v.split(';').next().unwrap().trim()),
        Some(OCI_MANIFEST)
    );
}

// ---------------------------------------------------------------------------------------------
// PUT validation
// ---------------------------------------------------------------------------------------------

#[test]
fn put_by_digest_with_a_wrong_digest_is_digest_invalid() {
    let s = Server::start();
    let mut c = s.client();
    let (cfg, layers) = push_parts(&mut c, "wrongd", 30, 1);
    let body = odd_bytes(&oci_manifest_value(&cfg, &layers));
    let wrong = sha256_digest(b"another manifest");
    let r = put_manifest(&mut c, "wrongd", &wrong, OCI_MANIFEST, &body);
    assert_error(&r, 400, &["DIGEST_INVALID"]);
    assert_manifest_unknown(&mut c, "wrongd", &wrong);
    assert_manifest_unknown(&mut c, "wrongd", &sha256_digest(&body));
}

#[test]
fn invalid_json_is_manifest_invalid() {
    let s = Server::start();
    let mut c = s.client();
    push_blob(&mut c, "badjson", b"make the repo exist");
    for body in [
        &b"{not json"[..],
        b"",
        b"[]",
        b"\"a string\"",
        b"{\"schemaVersion\": 2, \"mediaType\": \"application/vnd.oci.image.manifest.v1+json\", \"config\": ",
        b"\xff\xfe\x00garbage",
    ] {
        let r = put_manifest(&mut c, "badjson", "t", OCI_MANIFEST, body);
        assert_error(&r, 400, &["MANIFEST_INVALID"]);
    }
    assert_manifest_unknown(&mut c, "badjson", "t");
}

#[test]
fn structurally_invalid_manifests_are_manifest_invalid() {
    let s = Server::start();
    let mut c = s.client();
    let (cfg, layers) = push_parts(&mut c, "shape", 31, 1);
    let mut no_config = oci_manifest_value(&cfg, &layers);
    no_config.as_object_mut().unwrap().remove("config");
    let mut bad_schema = oci_manifest_value(&cfg, &layers);
    bad_schema["schemaVersion"] = json!(1);
    let mut bad_layer_digest = oci_manifest_value(&cfg, &layers);
    bad_layer_digest["layers"][0]["digest"] = json!("sha256:nothex");
    let mut layers_not_array = oci_manifest_value(&cfg, &layers);
    layers_not_array["layers"] = json!({"a": 1});
    for (what, v, codes) in [
        ("no config", no_config, &["MANIFEST_INVALID"][..]),
        ("schemaVersion 1", bad_schema, &["MANIFEST_INVALID"][..]),
        (
            "invalid layer digest",
            bad_layer_digest,
            &["MANIFEST_INVALID", "DIGEST_INVALID"][..],
        ),
        (
            "layers not an array",
            layers_not_array,
            &["MANIFEST_INVALID"][..],
        ),
    ] {
        let r = put_manifest(&mut c, "shape", "t", OCI_MANIFEST, &odd_bytes(&v));
        assert_eq!(r.status, 400, "{what}: {:?}", r.text());
        assert_error(&r, 400, codes);
    }
    assert_manifest_unknown(&mut c, "shape", "t");
}

#[test]
fn body_media_type_that_contradicts_the_content_type_is_manifest_invalid() {
    let s = Server::start();
    let mut c = s.client();
    let (cfg, layers) = push_parts(&mut c, "mt", 32, 1);
    let oci = odd_bytes(&oci_manifest_value(&cfg, &layers));
    // OCI manifest body declared as a Docker manifest.
    let r = put_manifest(&mut c, "mt", "a", DOCKER_MANIFEST, &oci);
    assert_error(&r, 400, &["MANIFEST_INVALID"]);
    // OCI manifest body declared as an index.
    let r = put_manifest(&mut c, "mt", "b", OCI_INDEX, &oci);
    assert_error(&r, 400, &["MANIFEST_INVALID"]);
    // An index body whose mediaType says index, sent as a manifest.
    let d = put_ok(&mut c, "mt", "img", OCI_MANIFEST, &oci);
    let index = odd_bytes(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [desc(OCI_MANIFEST, &d, oci.len())],
    }));
    let r = put_manifest(&mut c, "mt", "c", OCI_MANIFEST, &index);
    assert_error(&r, 400, &["MANIFEST_INVALID"]);
    for t in ["a", "b", "c"] {
        assert_manifest_unknown(&mut c, "mt", t);
    }
}

#[test]
fn missing_config_or_layer_is_manifest_blob_unknown() {
    let s = Server::start();
    let mut c = s.client();
    let (cfg, layers) = push_parts(&mut c, "missing", 33, 2);
    let ghost = (sha256_digest(b"never pushed"), 12usize);

    let mut missing_layer = layers.clone();
    missing_layer.push(ghost.clone());
    let body = odd_bytes(&oci_manifest_value(&cfg, &missing_layer));
    let r = put_manifest(&mut c, "missing", "l", OCI_MANIFEST, &body);
    assert_error(&r, 400, &["MANIFEST_BLOB_UNKNOWN"]);
    assert!(
        r.text().contains(&ghost.0),
        "the error should name the missing digest: {}",
        r.text()
    );

    let body = odd_bytes(&oci_manifest_value(&ghost, &layers));
    let r = put_manifest(&mut c, "missing", "c", OCI_MANIFEST, &body);
    assert_error(&r, 400, &["MANIFEST_BLOB_UNKNOWN"]);

    // A blob that exists, but in another repository only.
    let foreign = pseudo_random(500, 34);
    let fd = push_blob(&mut c, "someone-else", &foreign);
    let mut foreign_layer = layers.clone();
    foreign_layer.push((fd, foreign.len()));
    let body = odd_bytes(&oci_manifest_value(&cfg, &foreign_layer));
    let r = put_manifest(&mut c, "missing", "f", OCI_MANIFEST, &body);
    assert_error(&r, 400, &["MANIFEST_BLOB_UNKNOWN"]);

    for t in ["l", "c", "f"] {
        assert_manifest_unknown(&mut c, "missing", t);
    }
    // A refused manifest leaves no file behind: its checks run before its bytes are written.
    for refused in [
        odd_bytes(&oci_manifest_value(&cfg, &missing_layer)),
        odd_bytes(&oci_manifest_value(&ghost, &layers)),
        odd_bytes(&oci_manifest_value(&cfg, &foreign_layer)),
    ] {
        let digest = sha256_digest(&refused);
        let hex = &digest["sha256:".len()..];
        let file = s.root.join("blobs/sha256").join(&hex[..2]).join(hex);
        assert!(
            !file.exists(),
            "refused manifest stored at {}",
            file.display()
        );
    }
}

#[test]
fn index_with_a_missing_child_is_rejected() {
    let s = Server::start();
    let mut c = s.client();
    let (cfg, layers) = push_parts(&mut c, "idxmiss", 35, 1);
    let child = odd_bytes(&oci_manifest_value(&cfg, &layers));
    let cd = put_ok(&mut c, "idxmiss", "child", OCI_MANIFEST, &child);
    let ghost = sha256_digest(b"no such manifest");
    // A child that exists only in another repository.
    let (fd, _) = push_image(&mut c, "idxother", "x", &[b"other layer"]);
    for (tag, missing) in [("g", ghost.clone()), ("f", fd.clone())] {
        let index = odd_bytes(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [desc(OCI_MANIFEST, &cd, child.len()), desc(OCI_MANIFEST, &missing, 300)],
        }));
        let r = put_manifest(&mut c, "idxmiss", tag, OCI_INDEX, &index);
        assert!(
            r.status == 400 || r.status == 404,
            "index with missing child: {} {:?}",
            r.status,
            r.text()
        );
        let code = r.error_code();
        assert!(
            (r.status == 400 && code == "MANIFEST_BLOB_UNKNOWN") || code == "MANIFEST_UNKNOWN",
            "index with missing child: {} {code}",
            r.status
        );
        assert_manifest_unknown(&mut c, "idxmiss", tag);
    }
}

#[test]
fn manifest_over_4_mib_is_413_and_not_stored() {
    let s = Server::start();
    let mut c = s.client();
    let (cfg, layers) = push_parts(&mut c, "huge", 36, 1);
    let body = manifest_of_size(&cfg, &layers, 4 * 1024 * 1024 + 1);
    let d = sha256_digest(&body);
    let r = put_manifest(&mut c, "huge", "big", OCI_MANIFEST, &body);
    assert_eq!(r.status, 413, "{:?}", r.text());
    check_error_body(&r);
    let mut c = s.client();
    assert_manifest_unknown(&mut c, "huge", "big");
    assert_manifest_unknown(&mut c, "huge", &d);
    // By digest too.
    let r = put_manifest(&mut c, "huge", &d, OCI_MANIFEST, &body);
    assert_eq!(r.status, 413, "{:?}", r.text());
    check_error_body(&r);
    let mut c = s.client();
    assert_manifest_unknown(&mut c, "huge", &d);
    assert_alive(&s);
}

/// PUTs `body` chunked (no Content-Length: the limit must hold while the body streams in).
fn put_chunked(c: &mut Client, repo: &str, tag: &str, body: &[u8]) -> Response {
    c.put(
        &format!("/v2/{repo}/manifests/{tag}"),
        &[
            ("Content-Type", OCI_MANIFEST),
            ("Transfer-Encoding", "chunked"),
        ],
        &chunked_encode(body, &[65536, 300]),
    )
}

#[test]
fn chunked_manifest_over_4_mib_is_413_and_not_stored() {
    let s = Server::start();
    let mut c = s.client();
    let (cfg, layers) = push_parts(&mut c, "chunkedbig", 41, 1);
    let body = manifest_of_size(&cfg, &layers, 4 * 1024 * 1024 + 1);
    let r = put_chunked(&mut c, "chunkedbig", "big", &body);
    assert_eq!(r.status, 413, "chunked 4 MiB + 1 manifest: {:?}", r.text());
    check_error_body(&r);
    let mut c = s.client();
    assert_manifest_unknown(&mut c, "chunkedbig", "big");
    assert_manifest_unknown(&mut c, "chunkedbig", &sha256_digest(&body));
}

#[test]
fn chunked_manifest_over_a_small_limit_is_413_and_not_stored() {
    let s = Server::start_in_temp(&["--max-manifest-bytes", "2000"]);
    let mut c = s.client();
    let (cfg, layers) = push_parts(&mut c, "chunkedbig", 40, 1);
    for (tag, size) in [("over1", 2001), ("over10k", 12_000)] {
        let body = manifest_of_size(&cfg, &layers, size);
        let r = put_chunked(&mut c, "chunkedbig", tag, &body);
        assert_eq!(
            r.status,
            413,
            "chunked {size}-byte manifest, limit 2000: {:?}",
            r.text()
        );
        check_error_body(&r);
        let mut c2 = s.client();
        assert_manifest_unknown(&mut c2, "chunkedbig", tag);
    }
    let mut c = s.client();
    let ok = manifest_of_size(&cfg, &layers, 2000);
    let r = put_chunked(&mut c, "chunkedbig", "fits", &ok);
    assert_status(&r, 201);
    assert_manifest(&mut c, "chunkedbig", "fits", OCI_MANIFEST, &ok);
}

#[test]
fn manifest_of_exactly_4_mib_is_accepted() {
    let s = Server::start();
    let mut c = s.client();
    let (cfg, layers) = push_parts(&mut c, "fourmib", 37, 1);
    let body = manifest_of_size(&cfg, &layers, 4 * 1024 * 1024);
    put_ok(&mut c, "fourmib", "edge", OCI_MANIFEST, &body);
    assert_manifest(&mut c, "fourmib", "edge", OCI_MANIFEST, &body);
}

#[test]
fn oversized_manifest_with_expect_continue_gets_413_without_100() {
    let s = Server::start();
    let mut c = s.client();
    let (cfg, layers) = push_parts(&mut c, "huge", 38, 1);
    let body = manifest_of_size(&cfg, &layers, 5 * 1024 * 1024);
    let mut raw = s.client();
    raw.send_raw(
        format!(
            "PUT /v2/huge/manifests/big HTTP/1.1\r\nHost: {}\r\nContent-Type: {OCI_MANIFEST}\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            s.host(),
            body.len()
        )
        .as_bytes(),
    );
    raw.set_timeout(std::time::Duration::from_secs(10));
    let r = raw.read_response(false);
    assert_eq!(
        r.status, 413,
        "an oversized Content-Length with Expect: 100-continue must get the final 413, not {}",
        r.status
    );
    check_error_body(&r);
    assert_manifest_unknown(&mut c, "huge", "big");
    assert_alive(&s);
}

#[test]
fn max_manifest_bytes_is_configurable() {
    let s = Server::start_in_temp(&["--max-manifest-bytes", "1024"]);
    let mut c = s.client();
    let (cfg, layers) = push_parts(&mut c, "small", 39, 1);
    let ok = manifest_of_size(&cfg, &layers, 1024);
    put_ok(&mut c, "small", "fits", OCI_MANIFEST, &ok);
    assert_manifest(&mut c, "small", "fits", OCI_MANIFEST, &ok);
    let too_big = manifest_of_size(&cfg, &layers, 1025);
    let r = put_manifest(&mut c, "small", "over", OCI_MANIFEST, &too_big);
    assert_eq!(r.status, 413, "{:?}", r.text());
    check_error_body(&r);
    let mut c = s.client();
    assert_manifest_unknown(&mut c, "small", "over");
    assert_manifest_unknown(&mut c, "small", &sha256_digest(&too_big));
}

/// A valid OCI manifest of exactly `size` bytes (padded through an annotation).
fn manifest_of_size(cfg: &(String, usize), layers: &[(String, usize)], size: usize) -> Vec<u8> {
    let mut v = oci_manifest_value(cfg, layers);
    v["annotations"] = json!({"pad": ""});
    let base = serde_json::to_vec(&v).unwrap().len();
    assert!(size >= base, "manifest_of_size: {size} < {base}");
    v["annotations"]["pad"] = json!("p".repeat(size - base));
    let b = serde_json::to_vec(&v).unwrap();
    assert_eq!(b.len(), size);
    b
}

// ---------------------------------------------------------------------------------------------
// Subject
// ---------------------------------------------------------------------------------------------

#[test]
fn put_with_a_subject_answers_oci_subject() {
    let s = Server::start();
    let mut c = s.client();
    let (sd, sb) = push_image(&mut c, "subj", "v1", &[b"subject layer"]);
    push_blob(&mut c, "subj", b"{}");
    let sig = br#"{"sig":"abc"}"#;
    let sigd = push_blob(&mut c, "subj", sig);
    let body = odd_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature.v1",
        "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_CONFIG_DIGEST, "size": 2},
        "layers": [desc("application/vnd.example.signature.v1+json", &sigd, sig.len())],
        "subject": desc(OCI_MANIFEST, &sd, sb.len()),
    }));
    let d = sha256_digest(&body);
    let r = put_manifest(&mut c, "subj", &d, OCI_MANIFEST, &body);
    assert_status(&r, 201);
    assert_eq!(r.header("OCI-Subject"), Some(sd.as_str()));
    assert_manifest(&mut c, "subj", &d, OCI_MANIFEST, &body);
}

#[test]
fn a_missing_subject_is_accepted() {
    let s = Server::start();
    let mut c = s.client();
    push_blob(&mut c, "subj2", b"{}");
    let absent = sha256_digest(b"a manifest pushed later, or never");
    let body = odd_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_CONFIG_DIGEST, "size": 2},
        "layers": [],
        "subject": desc(OCI_MANIFEST, &absent, 1234),
    }));
    let r = put_manifest(&mut c, "subj2", "sbom", OCI_MANIFEST, &body);
    assert_status(&r, 201);
    assert_eq!(r.header("OCI-Subject"), Some(absent.as_str()));
    assert_manifest(&mut c, "subj2", "sbom", OCI_MANIFEST, &body);
}

// ---------------------------------------------------------------------------------------------
// Delete and unknown
// ---------------------------------------------------------------------------------------------

#[test]
fn delete_manifest_by_digest_removes_it_and_its_tags() {
    let s = Server::start();
    let mut c = s.client();
    let (d, body) = push_image(&mut c, "delm", "v1", &[b"delete me"]);
    put_ok(&mut c, "delm", "v2", OCI_MANIFEST, &body);
    let (_keep, keep_body) = push_image(&mut c, "delm", "keep", &[b"keep me"]);
    let r = c.delete(&format!("/v2/delm/manifests/{d}"));
    assert_status(&r, 202);
    assert_manifest_unknown(&mut c, "delm", &d);
    assert_manifest_unknown(&mut c, "delm", "v1");
    assert_manifest_unknown(&mut c, "delm", "v2");
    let t = c.get("/v2/delm/tags/list");
    assert_status(&t, 200);
    assert_eq!(t.json()["tags"], json!(["keep"]));
    assert_manifest(&mut c, "delm", "keep", OCI_MANIFEST, &keep_body);
    let r = c.delete(&format!("/v2/delm/manifests/{d}"));
    assert_error(&r, 404, &["MANIFEST_UNKNOWN"]);
}

#[test]
fn delete_by_tag_removes_only_the_tag() {
    let s = Server::start();
    let mut c = s.client();
    let (d, body) = push_image(&mut c, "delt", "v1", &[b"tagged twice"]);
    put_ok(&mut c, "delt", "v2", OCI_MANIFEST, &body);
    let r = c.delete("/v2/delt/manifests/v1");
    assert_status(&r, 202);
    assert_manifest_unknown(&mut c, "delt", "v1");
    assert_manifest(&mut c, "delt", &d, OCI_MANIFEST, &body);
    assert_manifest(&mut c, "delt", "v2", OCI_MANIFEST, &body);
    let t = c.get("/v2/delt/tags/list");
    assert_status(&t, 200);
    assert_eq!(t.json()["tags"], json!(["v2"]));
    let r = c.delete("/v2/delt/manifests/v1");
    assert_error(&r, 404, &["MANIFEST_UNKNOWN"]);
}

#[test]
fn unknown_repository_tag_and_digest_are_404() {
    let s = Server::start();
    let mut c = s.client();
    let (d, _) = push_image(&mut c, "known", "v1", &[b"x"]);
    let ghost = sha256_digest(b"ghost");

    // Unknown repository.
    for reference in ["latest", ghost.as_str()] {
        let r = c.get(&format!("/v2/unknown/repo/manifests/{reference}"));
        assert_error(&r, 404, &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"]);
        let h = c.head(&format!("/v2/unknown/repo/manifests/{reference}"));
        assert_head_status(&h, 404);
    }
    // Known repository, unknown tag / digest.
    assert_manifest_unknown(&mut c, "known", "nope");
    assert_manifest_unknown(&mut c, "known", &ghost);
    let r = c.delete("/v2/known/manifests/nope");
    assert_error(&r, 404, &["MANIFEST_UNKNOWN"]);
    let r = c.delete(&format!("/v2/known/manifests/{ghost}"));
    assert_error(&r, 404, &["MANIFEST_UNKNOWN"]);
    let r = c.delete(&format!("/v2/unknown/repo/manifests/{d}"));
    assert_error(&r, 404, &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"]);
    // A manifest of repository `known` is not visible from another repository.
    push_blob(&mut c, "other", b"exists");
    assert_manifest_unknown(&mut c, "other", &d);
    assert_manifest_unknown(&mut c, "other", "v1");
}

#[test]
fn no_delete_flag_refuses_every_delete_with_405_unsupported() {
    let s = Server::start_in_temp(&["--no-delete"]);
    let mut c = s.client();
    let layer: &[u8] = b"undeletable";
    let (d, body) = push_image(&mut c, "keep", "v1", &[layer]);
    let ld = sha256_digest(layer);
    for path in [
        format!("/v2/keep/manifests/{d}"),
        "/v2/keep/manifests/v1".to_string(),
        format!("/v2/keep/blobs/{ld}"),
    ] {
        let r = c.delete(&path);
        assert_error(&r, 405, &["UNSUPPORTED"]);
    }
    assert_manifest(&mut c, "keep", "v1", OCI_MANIFEST, &body);
    let g = c.get(&format!("/v2/keep/blobs/{ld}"));
    assert_status(&g, 200);
    assert!(g.body == layer);
}
