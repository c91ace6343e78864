//! `/v2/` (API version check) and the shape of errors for requests outside the API.

use crate::common::*;

#[test]
fn v2_get_answers_200_with_api_version_header() {
    let s = Server::start();
    let mut c = s.client();
    let r = c.get("/v2/");
    assert_status(&r, 200);
    assert_eq!(
        r.header("Docker-Distribution-API-Version"),
        Some("registry/2.0"),
        "headers {:?}",
        r.headers
    );
    // Whatever the body is, its length must be declared correctly: a second request on the same
    // connection must parse.
    let r2 = c.get("/v2/");
    assert_status(&r2, 200);
    assert_eq!(
        c.connections, 1,
        "the server closed a keep-alive connection"
    );
}

#[test]
fn v2_head_answers_200_with_api_version_header_and_no_body() {
    let s = Server::start();
    let mut c = s.client();
    let get = c.get("/v2/");
    let r = c.head("/v2/");
    assert_status(&r, 200);
    assert_eq!(
        r.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );
    // HEAD announces the length a GET would have, and sends no body: the next response on the
    // same connection must start right away (the client panics on stray bytes).
    if let Some(cl) = r.header("content-length") {
        assert_eq!(
            cl.parse::<usize>().unwrap(),
            get.body.len(),
            "HEAD Content-Length"
        );
    }
    let r2 = c.get("/v2/");
    assert_status(&r2, 200);
    assert_eq!(c.connections, 1);
}

#[test]
fn v2_without_trailing_slash_or_with_query_is_still_the_base() {
    let s = Server::start();
    let mut c = s.client();
    let r = c.get("/v2/?foo=bar");
    assert_status(&r, 200);
    assert_eq!(
        r.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );
}

#[test]
fn unknown_paths_get_404_with_an_oci_error_body() {
    let s = Server::start();
    let mut c = s.client();
    for path in [
        "/",
        "/v1/",
        "/v2/foo/bar",
        "/v2/foo/unknown/sha256:abc",
        "/favicon.ico",
    ] {
        let r = c.get(path);
        assert_eq!(r.status, 404, "GET {path}: {:?}", r.text());
        // UNSUPPORTED (no operation lives there), not NAME_UNKNOWN: no repository is missing.
        assert_error(&r, 404, &["UNSUPPORTED"]);
    }
    assert_alive(&s);
}

#[test]
fn unsupported_methods_get_an_oci_error() {
    let s = Server::start();
    let mut c = s.client();
    // A method the route does not define: 405 (or 404), always with the error body.
    for (method, path) in [
        ("PATCH", "/v2/repo/manifests/latest"),
        ("POST", "/v2/repo/manifests/latest"),
        ("PUT", "/v2/repo/tags/list"),
        ("DELETE", "/v2/"),
        ("POST", "/v2/repo/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000"),
    ] {
        let r = c.request(method, path, &[], b"");
        assert!(
            r.status == 405 || r.status == 404,
            "{method} {path}: expected 405 (or 404), got {} {:?}",
            r.status,
            r.text()
        );
        check_error_body(&r);
    }
    assert_alive(&s);
}
