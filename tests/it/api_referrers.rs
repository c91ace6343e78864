//! `GET /v2/<name>/referrers/<digest>`: an image index of the manifests whose `subject` is that
//! digest, with the `artifactType` filter.

use crate::common::*;
use serde_json::{json, Value};

const EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn desc(media_type: &str, digest: &str, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// Pushes a manifest by digest; asserts 201 (and OCI-Subject when it has a subject).
#[track_caller]
fn put_by_digest(c: &mut Client, repo: &str, media_type: &str, v: &Value) -> (String, usize) {
    let body = serde_json::to_vec_pretty(v).unwrap();
    let d = sha256_digest(&body);
    let r = c.put(
        &format!("/v2/{repo}/manifests/{d}"),
        &[("Content-Type", media_type)],
        &body,
    );
    assert_status(&r, 201);
    if let Some(subject) = v.get("subject") {
        assert_eq!(r.header("OCI-Subject"), subject["digest"].as_str());
    }
    (d, body.len())
}

#[track_caller]
fn referrers(c: &mut Client, path: &str) -> (Response, Vec<Value>) {
    let r = c.get(path);
    assert_status(&r, 200);
    assert_eq!(
        r.header("content-type"),
        Some(OCI_INDEX),
        "referrers Content-Type"
    );
    let v = r.json();
    assert_eq!(v["schemaVersion"], json!(2));
    assert_eq!(v["mediaType"], json!(OCI_INDEX));
    let list = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("referrers `manifests` is not an array: {v}"))
        .clone();
    (r, list)
}

fn by_digest<'a>(list: &'a [Value], d: &str) -> &'a Value {
    list.iter()
        .find(|m| m["digest"] == json!(d))
        .unwrap_or_else(|| panic!("{d} not in referrers {list:?}"))
}

struct Fixture {
    _s: Server,
    c: Client,
    subject: String,
    sbom: (String, usize),
    sig: (String, usize),
    idx: (String, usize),
    plain_idx: (String, usize),
}

/// A subject image with four referrers in repository `app`:
/// - sbom: image manifest with artifactType and annotations;
/// - sig: image manifest without artifactType (config media type stands in), with annotations;
/// - idx: an index with artifactType;
/// - plain_idx: an index without artifactType;
///
/// plus a manifest in `app` whose subject is another digest, and one in `other` whose subject is
/// the same digest (neither may be listed).
fn fixture() -> Fixture {
    let s = Server::start();
    let mut c = s.client();
    let (subject, subject_body) = push_image(&mut c, "app", "v1", &[b"subject layer"]);
    let subj = desc(OCI_MANIFEST, &subject, subject_body.len());
    push_blob(&mut c, "app", b"{}");
    let sbom_data = br#"{"spdxVersion":"SPDX-2.3"}"#;
    let sbom_layer = push_blob(&mut c, "app", sbom_data);
    let sbom = put_by_digest(
        &mut c,
        "app",
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom.v1",
            "config": desc(OCI_EMPTY, EMPTY_CONFIG_DIGEST, 2),
            "layers": [desc("application/spdx+json", &sbom_layer, sbom_data.len())],
            "subject": subj,
            "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "org.example.format": "spdx"},
        }),
    );
    let sig_cfg = br#"{"signer":"test"}"#;
    let sig_cfg_d = push_blob(&mut c, "app", sig_cfg);
    let sig = put_by_digest(
        &mut c,
        "app",
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": desc("application/vnd.example.signature.config.v1+json", &sig_cfg_d, sig_cfg.len()),
            "layers": [],
            "subject": subj,
            "annotations": {"org.example.signature.fingerprint": "abcd"},
        }),
    );
    let idx = put_by_digest(
        &mut c,
        "app",
        OCI_INDEX,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": "application/vnd.example.bundle.v1",
            "manifests": [desc(OCI_MANIFEST, &sbom.0, sbom.1)],
            "subject": subj,
            "annotations": {"org.example.kind": "bundle"},
        }),
    );
    let plain_idx = put_by_digest(
        &mut c,
        "app",
        OCI_INDEX,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [desc(OCI_MANIFEST, &sig.0, sig.1)],
            "subject": subj,
        }),
    );
    // Not referrers of `subject`:
    let (other_subject, other_body) = push_image(&mut c, "app", "v2", &[b"another layer"]);
    put_by_digest(
        &mut c,
        "app",
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom.v1",
            "config": desc(OCI_EMPTY, EMPTY_CONFIG_DIGEST, 2),
            "layers": [],
            "subject": desc(OCI_MANIFEST, &other_subject, other_body.len()),
        }),
    );
    push_blob(&mut c, "other", b"{}");
    put_by_digest(
        &mut c,
        "other",
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom.v1",
            "config": desc(OCI_EMPTY, EMPTY_CONFIG_DIGEST, 2),
            "layers": [],
            "subject": subj,
        }),
    );
    Fixture {
        _s: s,
        c,
        subject,
        sbom,
        sig,
        idx,
        plain_idx,
    }
}

#[test]
fn no_referrers_is_an_empty_index() {
    let s = Server::start();
    let mut c = s.client();
    let (d, _) = push_image(&mut c, "lonely", "v1", &[b"x"]);
    let (_r, list) = referrers(&mut c, &format!("/v2/lonely/referrers/{d}"));
    assert!(list.is_empty(), "{list:?}");
    // A digest that names nothing at all: still 200 and empty, never 404.
    let ghost = sha256_digest(b"ghost");
    let (_r, list) = referrers(&mut c, &format!("/v2/lonely/referrers/{ghost}"));
    assert!(list.is_empty());
    // With a filter, still empty.
    let (_r, list) = referrers(
        &mut c,
        &format!("/v2/lonely/referrers/{d}?artifactType=application/vnd.example.sbom.v1"),
    );
    assert!(list.is_empty());
}

#[test]
fn referrers_of_an_unknown_repository_are_empty_not_404() {
    let s = Server::start();
    let mut c = s.client();
    let ghost = sha256_digest(b"ghost");
    let (_r, list) = referrers(&mut c, &format!("/v2/never/pushed/referrers/{ghost}"));
    assert!(list.is_empty());
}

#[test]
fn referrers_are_listed_with_descriptor_fields() {
    let mut f = fixture();
    let (r, list) = referrers(&mut f.c, &format!("/v2/app/referrers/{}", f.subject));
    assert!(
        r.header("OCI-Filters-Applied").is_none(),
        "no filter was requested"
    );
    let mut got: Vec<String> = list
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut want = vec![
        f.sbom.0.clone(),
        f.sig.0.clone(),
        f.idx.0.clone(),
        f.plain_idx.0.clone(),
    ];
    want.sort();
    assert_eq!(got, want, "referrers of the subject: {list:?}");

    let m = by_digest(&list, &f.sbom.0);
    assert_eq!(m["mediaType"], json!(OCI_MANIFEST));
    assert_eq!(m["size"], json!(f.sbom.1));
    assert_eq!(m["artifactType"], json!("application/vnd.example.sbom.v1"));
    assert_eq!(
        m["annotations"],
        json!({"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "org.example.format": "spdx"})
    );

    // Without artifactType, an image manifest is listed with its config's media type.
    let m = by_digest(&list, &f.sig.0);
    assert_eq!(m["mediaType"], json!(OCI_MANIFEST));
    assert_eq!(m["size"], json!(f.sig.1));
    assert_eq!(
        m["artifactType"],
        json!("application/vnd.example.signature.config.v1+json")
    );
    assert_eq!(
        m["annotations"],
        json!({"org.example.signature.fingerprint": "abcd"})
    );

    let m = by_digest(&list, &f.idx.0);
    assert_eq!(m["mediaType"], json!(OCI_INDEX));
    assert_eq!(m["size"], json!(f.idx.1));
    assert_eq!(
        m["artifactType"],
        json!("application/vnd.example.bundle.v1")
    );
    assert_eq!(m["annotations"], json!({"org.example.kind": "bundle"}));

    // An index without artifactType: the descriptor has none.
    let m = by_digest(&list, &f.plain_idx.0);
    assert_eq!(m["mediaType"], json!(OCI_INDEX));
    assert_eq!(m["size"], json!(f.plain_idx.1));
    assert!(
        m.get("artifactType").map(|a| a.is_null()).unwrap_or(true),
        "an index without artifactType is listed with one: {m}"
    );
}

#[test]
fn artifact_type_filter() {
    let mut f = fixture();
    let (r, list) = referrers(
        &mut f.c,
        &format!(
            "/v2/app/referrers/{}?artifactType=application/vnd.example.sbom.v1",
            f.subject
        ),
    );
    assert_eq!(r.header("OCI-Filters-Applied"), Some("artifactType"));
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["digest"], json!(f.sbom.0));

    // Filtering on the config media type that stands in for a missing artifactType.
    let (r, list) = referrers(
        &mut f.c,
        &format!(
            "/v2/app/referrers/{}?artifactType=application%2Fvnd.example.signature.config.v1%2Bjson",
            f.subject
        ),
    );
    assert_eq!(r.header("OCI-Filters-Applied"), Some("artifactType"));
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["digest"], json!(f.sig.0));

    // No match: empty, and the filter is still reported as applied.
    let (r, list) = referrers(
        &mut f.c,
        &format!(
            "/v2/app/referrers/{}?artifactType=application/vnd.example.none",
            f.subject
        ),
    );
    assert_eq!(r.header("OCI-Filters-Applied"), Some("artifactType"));
    assert!(list.is_empty(), "{list:?}");
}

#[test]
fn deleting_a_referrer_removes_it_from_the_list() {
    let mut f = fixture();
    let r = f.c.delete(&format!("/v2/app/manifests/{}", f.sbom.0));
    assert_status(&r, 202);
    let (_r, list) = referrers(&mut f.c, &format!("/v2/app/referrers/{}", f.subject));
    assert!(
        list.iter().all(|m| m["digest"] != json!(f.sbom.0)),
        "a deleted manifest is still listed: {list:?}"
    );
    assert_eq!(list.len(), 3);
}

#[test]
fn referrers_of_a_subject_pushed_later_or_never() {
    let s = Server::start();
    let mut c = s.client();
    push_blob(&mut c, "early", b"{}");
    let future_layer: &[u8] = b"the subject comes later";
    // The subject's digest is known before it is pushed.
    let ld = push_blob(&mut c, "early", future_layer);
    let cfg = image_config(std::slice::from_ref(&ld));
    let cd = push_blob(&mut c, "early", &cfg);
    let subject_body = image_manifest(&(cd, cfg.len()), &[(ld, future_layer.len())]);
    let subject = sha256_digest(&subject_body);
    let (art, _) = put_by_digest(
        &mut c,
        "early",
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.early.v1",
            "config": desc(OCI_EMPTY, EMPTY_CONFIG_DIGEST, 2),
            "layers": [],
            "subject": desc(OCI_MANIFEST, &subject, subject_body.len()),
        }),
    );
    let (_r, list) = referrers(&mut c, &format!("/v2/early/referrers/{subject}"));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], json!(art));
    let r = c.put(
        "/v2/early/manifests/now",
        &[("Content-Type", OCI_MANIFEST)],
        &subject_body,
    );
    assert_status(&r, 201);
    let (_r, list) = referrers(&mut c, &format!("/v2/early/referrers/{subject}"));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], json!(art));
    assert_eq!(
        list[0]["artifactType"],
        json!("application/vnd.example.early.v1")
    );
}

#[test]
fn invalid_digest_is_400() {
    let s = Server::start();
    let mut c = s.client();
    push_image(&mut c, "app", "v1", &[b"x"]);
    for d in [
        "sha256:abc".to_string(),
        "latest".to_string(),
        format!("sha256:{}", "Z".repeat(64)),
        format!("sha256:{}", "0".repeat(63)),
    ] {
        let r = c.get(&format!("/v2/app/referrers/{d}"));
        assert_error(&r, 400, &["DIGEST_INVALID"]);
    }
}
