//! Tags list and catalog: order, `n`, `last`, `Link: <...>; rel="next"`, and their edges.

use crate::common::*;
use serde_json::json;

/// Tags one manifest with each of `tags` (in the given order).
fn tag_all(c: &mut Client, repo: &str, tags: &[&str]) {
    let (_d, manifest) = push_image(c, repo, tags[0], &[b"one layer for all tags"]);
    for t in &tags[1..] {
        let r = c.put(
            &format!("/v2/{repo}/manifests/{t}"),
            &[("Content-Type", OCI_MANIFEST)],
            &manifest,
        );
        assert_status(&r, 201);
    }
}

fn strings(v: &serde_json::Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("`{key}` is not an array: {v}"))
        .iter()
        .map(|t| t.as_str().expect("string entry").to_string())
        .collect()
}

/// The target of a `Link: <target>; rel="next"` header, as a path, if present.
#[track_caller]
fn next_link(r: &Response) -> Option<String> {
    let v = r.header("link")?;
    let open = v
        .find('<')
        .unwrap_or_else(|| panic!("Link without <: {v:?}"));
    let close = v
        .find('>')
        .unwrap_or_else(|| panic!("Link without >: {v:?}"));
    let params = &v[close + 1..];
    assert!(
        params.replace(' ', "").contains("rel=\"next\""),
        "Link header without rel=\"next\": {v:?}"
    );
    Some(location_path(&v[open + 1..close]))
}

/// Follows `Link` headers from `first`; returns the pages.
fn pages(c: &mut Client, first: &str, key: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut path = Some(first.to_string());
    while let Some(p) = path {
        assert!(out.len() < 100, "pagination does not end");
        let r = c.get(&p);
        assert_status(&r, 200);
        out.push(strings(&r.json(), key));
        path = next_link(&r);
    }
    out
}

fn byte_sorted(v: &[&str]) -> Vec<String> {
    let mut s: Vec<String> = v.iter().map(|t| t.to_string()).collect();
    s.sort();
    s
}

const TAGS: &[&str] = &[
    "latest", "1.10", "1.0", "1.2", "a-b", "a.b", "a_b", "z", "b", "0", "v1", "v10", "v2",
];

#[test]
fn tags_are_listed_in_lexical_order() {
    let s = Server::start();
    let mut c = s.client();
    tag_all(&mut c, "lib/app", TAGS);
    let r = c.get("/v2/lib/app/tags/list");
    assert_status(&r, 200);
    assert!(
        must_header(&r, "content-type").starts_with("application/json"),
        "tags list Content-Type"
    );
    let v = r.json();
    assert_eq!(v["name"], json!("lib/app"));
    assert_eq!(strings(&v, "tags"), byte_sorted(TAGS));
    assert!(r.header("link").is_none(), "Link header on a complete list");
}

#[test]
fn mixed_case_tags_are_in_lexical_or_asciibetical_order() {
    let s = Server::start();
    let mut c = s.client();
    let tags = ["b", "B", "a", "C", "c", "A"];
    tag_all(&mut c, "case", &tags);
    let r = c.get("/v2/case/tags/list");
    assert_status(&r, 200);
    let got = strings(&r.json(), "tags");
    let ascii = byte_sorted(&tags);
    let folded_sorted = got
        .windows(2)
        .all(|w| w[0].to_ascii_lowercase() <= w[1].to_ascii_lowercase());
    assert!(
        got == ascii || (folded_sorted && got.len() == tags.len()),
        "tags {got:?} are neither ASCIIbetical nor case-insensitive order"
    );
}

#[test]
fn tags_pagination_with_n_and_link() {
    let s = Server::start();
    let mut c = s.client();
    tag_all(&mut c, "paged", TAGS);
    let all = byte_sorted(TAGS);

    // The first page: exactly n, with a Link to the rest.
    let r = c.get("/v2/paged/tags/list?n=3");
    assert_status(&r, 200);
    assert_eq!(strings(&r.json(), "tags"), all[..3].to_vec());
    let link = next_link(&r).expect("Link header when more tags remain");
    assert!(
        link.starts_with("/v2/paged/tags/list?"),
        "Link target {link:?}"
    );
    assert!(link.contains("n=3"), "Link keeps n: {link:?}");
    assert!(
        link.contains(&format!("last={}", all[2])),
        "Link carries last: {link:?}"
    );

    let ps = pages(&mut c, "/v2/paged/tags/list?n=3", "tags");
    for (i, p) in ps.iter().enumerate() {
        if i + 1 < ps.len() {
            assert_eq!(p.len(), 3, "page {i} of {ps:?}");
        } else {
            assert!(!p.is_empty() && p.len() <= 3, "last page {p:?}");
        }
    }
    let joined: Vec<String> = ps.concat();
    assert_eq!(joined, all, "pages concatenated");
}

#[test]
fn n_at_or_above_the_count_returns_everything_without_link() {
    let s = Server::start();
    let mut c = s.client();
    tag_all(&mut c, "full", TAGS);
    let all = byte_sorted(TAGS);
    for n in [TAGS.len(), TAGS.len() + 1, 1000] {
        let r = c.get(&format!("/v2/full/tags/list?n={n}"));
        assert_status(&r, 200);
        assert_eq!(strings(&r.json(), "tags"), all);
        assert!(
            r.header("link").is_none(),
            "n={n}: Link although nothing remains"
        );
    }
}

#[test]
fn n_zero_is_an_empty_list_without_link() {
    let s = Server::start();
    let mut c = s.client();
    tag_all(&mut c, "zero", TAGS);
    let r = c.get("/v2/zero/tags/list?n=0");
    assert_status(&r, 200);
    let v = r.json();
    assert_eq!(v["name"], json!("zero"));
    assert_eq!(v["tags"], json!([]));
    assert!(
        r.header("link").is_none(),
        "n=0 MUST NOT include a Link header"
    );
}

#[test]
fn last_selects_the_tags_strictly_after_it() {
    let s = Server::start();
    let mut c = s.client();
    tag_all(&mut c, "last", TAGS);
    let all = byte_sorted(TAGS);
    // Without n: everything after `last`.
    let r = c.get(&format!("/v2/last/tags/list?last={}", all[4]));
    assert_status(&r, 200);
    assert_eq!(strings(&r.json(), "tags"), all[5..].to_vec());
    // With n.
    let r = c.get(&format!("/v2/last/tags/list?n=2&last={}", all[4]));
    assert_status(&r, 200);
    assert_eq!(strings(&r.json(), "tags"), all[5..7].to_vec());
    assert!(next_link(&r).is_some());
    // A `last` that is not itself a tag: the tags after its position.
    let r = c.get("/v2/last/tags/list?last=a-a");
    assert_status(&r, 200);
    let expect: Vec<String> = all.iter().filter(|t| t.as_str() > "a-a").cloned().collect();
    assert_eq!(strings(&r.json(), "tags"), expect);
    // Past the end: empty, no Link.
    for last in ["zzz", "~"] {
        let r = c.get(&format!("/v2/last/tags/list?n=5&last={last}"));
        assert_status(&r, 200);
        assert_eq!(r.json()["tags"], json!([]), "last={last}");
        assert!(r.header("link").is_none());
    }
    // The last tag itself.
    let r = c.get(&format!("/v2/last/tags/list?last={}", all[all.len() - 1]));
    assert_status(&r, 200);
    assert_eq!(r.json()["tags"], json!([]));
}

#[test]
fn tags_of_an_unknown_repository_is_name_unknown() {
    let s = Server::start();
    let mut c = s.client();
    tag_all(&mut c, "exists", &["x"]);
    let r = c.get("/v2/does/not/exist/tags/list");
    assert_error(&r, 404, &["NAME_UNKNOWN"]);
    let r = c.get("/v2/exist/tags/list");
    assert_error(&r, 404, &["NAME_UNKNOWN"]);
}

/// Starting an upload does not create a repository (as in distribution, whose catalog lists
/// repositories with layers or manifests): until content is committed it is not in the catalog,
/// tags/list is NAME_UNKNOWN, and that holds across a restart; a committed blob then creates it.
#[test]
fn an_upload_session_alone_creates_no_repository() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &[]);
    let mut c = s.client();
    let loc = start_upload(&mut c, "pending/only");
    let r = c.get("/v2/pending/only/tags/list");
    assert_error(&r, 404, &["NAME_UNKNOWN"]);
    let r = c.get("/v2/_catalog");
    assert_eq!(r.json()["repositories"], json!([]));
    assert_eq!(s.stop().code(), Some(0));

    let s = Server::start_with(dir.path(), &[]);
    let mut c = s.client();
    let r = c.get("/v2/_catalog");
    assert_eq!(r.json()["repositories"], json!([]), "after a restart");
    let digest = sha256_digest(b"content");
    let r = c.put(
        &with_query(&location_path(&loc), &format!("digest={digest}")),
        &[("Content-Type", "application/octet-stream")],
        b"content",
    );
    assert_status(&r, 201);
    let r = c.get("/v2/_catalog");
    assert_eq!(r.json()["repositories"], json!(["pending/only"]));
    let r = c.get("/v2/pending/only/tags/list");
    assert_status(&r, 200);
    assert_eq!(r.json()["tags"], json!([]));
}

#[test]
fn repository_with_untagged_manifests_only_has_an_empty_tag_list() {
    let s = Server::start();
    let mut c = s.client();
    let (_d, body) = push_image(&mut c, "untagged", "tmp", &[b"layer"]);
    let d = sha256_digest(&body);
    let r = c.put(
        &format!("/v2/untagged/manifests/{d}"),
        &[("Content-Type", OCI_MANIFEST)],
        &body,
    );
    assert_status(&r, 201);
    let r = c.delete("/v2/untagged/manifests/tmp");
    assert_status(&r, 202);
    let r = c.get("/v2/untagged/tags/list");
    assert_status(&r, 200);
    assert_eq!(r.json()["tags"], json!([]));
}

#[test]
fn invalid_n_is_400() {
    let s = Server::start();
    let mut c = s.client();
    tag_all(&mut c, "badn", &["x", "y"]);
    push_blob(&mut c, "badn", b"x");
    for n in ["-1", "abc", "1.5", "%20", "0x10"] {
        let r = c.get(&format!("/v2/badn/tags/list?n={n}"));
        assert_eq!(r.status, 400, "tags n={n}: {:?}", r.text());
        check_error_body(&r);
        let r = c.get(&format!("/v2/_catalog?n={n}"));
        assert_eq!(r.status, 400, "catalog n={n}: {:?}", r.text());
        check_error_body(&r);
    }
}

// ---------------------------------------------------------------------------------------------
// Catalog
// ---------------------------------------------------------------------------------------------

const REPOS: &[&str] = &["b/x", "a", "c", "a/b", "aa", "a-z", "a.c", "z/y/x"];

fn push_repos(c: &mut Client) {
    for (i, r) in REPOS.iter().enumerate() {
        push_image(c, r, "t", &[format!("layer {i}").as_bytes()]);
    }
}

#[test]
fn catalog_lists_every_repository_in_order() {
    let s = Server::start();
    let mut c = s.client();
    let r = c.get("/v2/_catalog");
    assert_status(&r, 200);
    assert_eq!(
        r.json()["repositories"],
        json!([]),
        "catalog of an empty registry"
    );
    push_repos(&mut c);
    let r = c.get("/v2/_catalog");
    assert_status(&r, 200);
    assert_eq!(strings(&r.json(), "repositories"), byte_sorted(REPOS));
    assert!(r.header("link").is_none());
}

#[test]
fn catalog_pagination() {
    let s = Server::start();
    let mut c = s.client();
    push_repos(&mut c);
    let all = byte_sorted(REPOS);
    let r = c.get("/v2/_catalog?n=3");
    assert_status(&r, 200);
    assert_eq!(strings(&r.json(), "repositories"), all[..3].to_vec());
    let link = next_link(&r).expect("catalog Link when more remain");
    assert!(link.starts_with("/v2/_catalog?"), "{link:?}");
    let ps = pages(&mut c, "/v2/_catalog?n=3", "repositories");
    assert_eq!(ps.concat(), all);
    assert!(ps[..ps.len() - 1].iter().all(|p| p.len() == 3), "{ps:?}");

    let r = c.get("/v2/_catalog?n=0");
    assert_status(&r, 200);
    assert_eq!(r.json()["repositories"], json!([]));
    assert!(r.header("link").is_none());

    let r = c.get(&format!("/v2/_catalog?n=100&last={}", all[all.len() - 1]));
    assert_status(&r, 200);
    assert_eq!(r.json()["repositories"], json!([]));
    assert!(r.header("link").is_none());

    let r = c.get("/v2/_catalog?last=zzzz");
    assert_status(&r, 200);
    assert_eq!(r.json()["repositories"], json!([]));

    let r = c.get("/v2/_catalog?n=2&last=a");
    assert_status(&r, 200);
    let after: Vec<String> = all
        .iter()
        .filter(|x| x.as_str() > "a")
        .take(2)
        .cloned()
        .collect();
    assert_eq!(strings(&r.json(), "repositories"), after);
    assert!(next_link(&r).is_some());

    let r = c.get(&format!("/v2/_catalog?n={}", all.len()));
    assert_status(&r, 200);
    assert_eq!(strings(&r.json(), "repositories"), all);
    assert!(r.header("link").is_none());
}
