//! Tag immutability (`tags.immutable`) on the real binary: a protected tag is pushed once and
//! put again on its digest, but never moved, deleted, or freed by deleting its manifest. The
//! refusal is 409 `DENIED` naming the rule, the refused manifest is not stored, and other tags
//! move as before.

use crate::common::*;

const RULES: &str = "tags.immutable:\n  - repository: \"prod/**\"\n    tags: [\"v*\", stable]\n";

/// A manifest for one more layer, its blobs pushed, not the manifest; its bytes.
fn another_image(c: &mut Client, repo: &str, layer: &[u8]) -> Vec<u8> {
    let l = push_blob(c, repo, layer);
    let config = image_config(std::slice::from_ref(&l));
    let cd = push_blob(c, repo, &config);
    image_manifest(&(cd, config.len()), &[(l, layer.len())])
}

fn digest_of_tag(c: &mut Client, repo: &str, tag: &str) -> String {
    let r = c.get(&format!("/v2/{repo}/manifests/{tag}"));
    assert_status(&r, 200);
    must_header(&r, "Docker-Content-Digest").to_string()
}

#[test]
fn an_immutable_tag_is_pushed_once_and_never_moved() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), RULES);
    let s = Server::start_in_temp(&["--config", config.to_str().unwrap()]);
    let mut c = s.client();

    let (first, _) = push_image(&mut c, "prod/team/web", "v1", &[b"layer one"]);
    // The same manifest again (a CI retry) is taken.
    let (again, _) = push_image(&mut c, "prod/team/web", "v1", &[b"layer one"]);
    assert_eq!(again, first);

    let other = another_image(&mut c, "prod/team/web", b"layer two");
    let r = c.put(
        "/v2/prod/team/web/manifests/v1",
        &[("Content-Type", OCI_MANIFEST)],
        &other,
    );
    assert_error(&r, 409, &["DENIED"]);
    let message = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("tag v1 of prod/team/web is immutable")
            && message.contains("tags.immutable[0] (line 2): repository prod/**, tags v*, stable"),
        "{message}"
    );
    assert_eq!(r.json()["errors"][0]["detail"]["digest"], first.as_str());
    assert_eq!(digest_of_tag(&mut c, "prod/team/web", "v1"), first);
    let refused = sha256_digest(&other);
    let r = c.get(&format!("/v2/prod/team/web/manifests/{refused}"));
    assert_error(&r, 404, &["MANIFEST_UNKNOWN"]);

    // Tags no rule names move, here and in other repositories.
    push_image(&mut c, "prod/team/web", "latest", &[b"layer one"]);
    let r = c.put(
        "/v2/prod/team/web/manifests/latest",
        &[("Content-Type", OCI_MANIFEST)],
        &other,
    );
    assert_status(&r, 201);
    push_image(&mut c, "staging/web", "v1", &[b"layer one"]);
    let (moved, _) = push_image(&mut c, "staging/web", "v1", &[b"layer three"]);
    assert_eq!(digest_of_tag(&mut c, "staging/web", "v1"), moved);

    // Deleting the tag, or the manifest that carries it, would free it.
    let r = c.delete("/v2/prod/team/web/manifests/v1");
    assert_error(&r, 409, &["DENIED"]);
    let r = c.delete(&format!("/v2/prod/team/web/manifests/{first}"));
    assert_error(&r, 409, &["DENIED"]);
    assert_eq!(digest_of_tag(&mut c, "prod/team/web", "v1"), first);
    let r = c.delete("/v2/prod/team/web/manifests/v9");
    assert_error(&r, 404, &["MANIFEST_UNKNOWN"]);
    let r = c.delete("/v2/prod/team/web/manifests/latest");
    assert_status(&r, 202);
}

#[test]
fn a_bad_pattern_stops_the_start_naming_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "tags.immutable:\n  - repository: \"prod//web\"\n    tags: [v1]\n";
    let config = config_file(dir.path(), bad);
    let root = dir.path().join("root");
    let (status, stderr) = Server::try_start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--root",
        root.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ])
    .err()
    .expect("the start is refused");
    assert!(!status.success());
    assert!(
        stderr.contains("tags.immutable[0] (line 2)") && stderr.contains("empty path component"),
        "{stderr}"
    );
}
