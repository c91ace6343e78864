//! HTTP/1.1 behaviour the registry's own HTTP layer must get right: keep-alive, pipelining,
//! chunked request bodies, `Expect: 100-continue`, HTTP/1.0 and `Connection: close`.

use crate::common::*;
use std::time::Duration;

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let s = Server::start();
    let mut c = s.client();
    let data = pseudo_random(50_000, 1);
    let d = push_blob(&mut c, "ka", &data);
    for i in 0..30 {
        match i % 5 {
            0 => assert_status(&c.get("/v2/"), 200),
            1 => assert_status(&c.head(&format!("/v2/ka/blobs/{d}")), 200),
            2 => {
                let r = c.get(&format!("/v2/ka/blobs/{d}"));
                assert_status(&r, 200);
                assert!(r.body == data);
            }
            3 => {
                // An error response must not close the connection either.
                let r = c.get(&format!("/v2/ka/blobs/{}", sha256_digest(b"nope")));
                assert_error(&r, 404, &["BLOB_UNKNOWN"]);
            }
            _ => {
                let b = format!("blob {i}").into_bytes();
                push_blob(&mut c, "ka", &b);
            }
        }
    }
    assert_eq!(
        c.connections, 1,
        "the server closed a keep-alive connection"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = Server::start();
    let mut c = s.client();
    let data = pseudo_random(10_000, 2);
    let d = push_blob(&mut c, "pipe", &data);
    let missing = sha256_digest(b"missing");
    let host = s.host();
    let reqs = format!(
        "GET /v2/ HTTP/1.1\r\nHost: {host}\r\n\r\n\
         HEAD /v2/pipe/blobs/{d} HTTP/1.1\r\nHost: {host}\r\n\r\n\
         GET /v2/pipe/blobs/{d} HTTP/1.1\r\nHost: {host}\r\n\r\n\
         GET /v2/pipe/blobs/{missing} HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    c.send_raw(reqs.as_bytes());
    let r1 = c.read_response(false);
    assert_status(&r1, 200);
    assert_eq!(
        r1.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );
    let r2 = c.read_response(true);
    assert_status(&r2, 200);
    assert_eq!(r2.header("content-length"), Some("10000"));
    let r3 = c.read_response(false);
    assert_status(&r3, 200);
    assert!(r3.body == data);
    let r4 = c.read_response(false);
    assert_error(&r4, 404, &["BLOB_UNKNOWN"]);
    // And the connection carries on.
    assert_status(&c.get("/v2/"), 200);
    assert_eq!(c.connections, 1);
}

#[test]
fn pipelined_requests_with_bodies() {
    let s = Server::start();
    let mut c = s.client();
    let host = s.host();
    let a = pseudo_random(3000, 3);
    let b = pseudo_random(5000, 4);
    let (da, db) = (sha256_digest(&a), sha256_digest(&b));
    let mut bytes = Vec::new();
    for (d, body) in [(&da, &a), (&db, &b)] {
        bytes.extend_from_slice(
            format!(
                "POST /v2/pipebody/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: {host}\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        bytes.extend_from_slice(body);
    }
    bytes.extend_from_slice(
        format!("GET /v2/pipebody/blobs/{da} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    );
    c.send_raw(&bytes);
    assert_status(&c.read_response(false), 201);
    assert_status(&c.read_response(false), 201);
    let r = c.read_response(false);
    assert_status(&r, 200);
    assert!(r.body == a);
    let r = c.get(&format!("/v2/pipebody/blobs/{db}"));
    assert!(r.body == b);
}

#[test]
fn chunked_request_body_on_patch() {
    let s = Server::start();
    let mut c = s.client();
    let loc = start_upload(&mut c, "te");
    let data = pseudo_random(200_000, 5);
    let encoded = chunked_encode(&data, &[1, 10, 4096, 65536, 7, 100_000]);
    let r = c.patch(
        &loc,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Transfer-Encoding", "chunked"),
        ],
        &encoded,
    );
    assert_status(&r, 202);
    assert_eq!(must_header(&r, "range"), format!("0-{}", data.len() - 1));
    let loc = location_path(must_header(&r, "location"));
    // A second chunked PATCH appends.
    let more = pseudo_random(1234, 6);
    let r = c.patch(
        &loc,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Transfer-Encoding", "chunked"),
        ],
        &chunked_encode(&more, &[1000]),
    );
    assert_status(&r, 202);
    assert_eq!(
        must_header(&r, "range"),
        format!("0-{}", data.len() + more.len() - 1)
    );
    let loc = location_path(must_header(&r, "location"));
    let mut all = data.clone();
    all.extend_from_slice(&more);
    let d = sha256_digest(&all);
    let r = c.put(&with_query(&loc, &format!("digest={d}")), &[], b"");
    assert_status(&r, 201);
    let g = c.get(&format!("/v2/te/blobs/{d}"));
    assert!(g.body == all, "chunked upload stored other bytes");
    assert_eq!(c.connections, 1, "connection not kept after a chunked body");
}

#[test]
fn chunked_request_body_with_extensions_and_trailers() {
    let s = Server::start();
    let mut c = s.client();
    let data = b"hello chunked world, with extensions".to_vec();
    let d = sha256_digest(&data);
    let mut body = Vec::new();
    body.extend_from_slice(b"5;name=value\r\nhello\r\n");
    body.extend_from_slice(format!("{:X}\r\n", data.len() - 5).as_bytes());
    body.extend_from_slice(&data[5..]);
    body.extend_from_slice(b"\r\n0\r\nX-Trailer: yes\r\n\r\n");
    let r = c.post(
        &format!("/v2/te/blobs/uploads/?digest={d}"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Transfer-Encoding", "chunked"),
        ],
        &body,
    );
    assert_status(&r, 201);
    let g = c.get(&format!("/v2/te/blobs/{d}"));
    assert!(g.body == data);
}

#[test]
fn chunked_request_body_on_monolithic_post() {
    let s = Server::start();
    let mut c = s.client();
    let data = pseudo_random(300_001, 7);
    let d = sha256_digest(&data);
    let r = c.post(
        &format!("/v2/te/blobs/uploads/?digest={d}"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Transfer-Encoding", "chunked"),
        ],
        &chunked_encode(&data, &[8192, 3, 50_000]),
    );
    assert_status(&r, 201);
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    let g = c.get(&format!("/v2/te/blobs/{d}"));
    assert!(g.body == data);
    // Manifests can come chunked too.
    let cfg = image_config(std::slice::from_ref(&d));
    let cd = push_blob(&mut c, "te", &cfg);
    let m = image_manifest(&(cd, cfg.len()), &[(d, data.len())]);
    let r = c.put(
        "/v2/te/manifests/chunked",
        &[
            ("Content-Type", OCI_MANIFEST),
            ("Transfer-Encoding", "chunked"),
        ],
        &chunked_encode(&m, &[17]),
    );
    assert_status(&r, 201);
    let g = c.get("/v2/te/manifests/chunked");
    assert!(g.body == m);
}

#[test]
fn expect_100_continue_on_a_monolithic_post() {
    let s = Server::start();
    let mut c = s.client();
    let data = pseudo_random(100_000, 8);
    let d = sha256_digest(&data);
    c.send_raw(
        format!(
            "POST /v2/cont/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\n\r\n",
            s.host(),
            data.len()
        )
        .as_bytes(),
    );
    c.set_timeout(Duration::from_secs(10));
    let interim = c.read_response(false);
    assert_eq!(
        interim.status, 100,
        "expected 100 Continue before the body, got {interim:?}"
    );
    c.send_raw(&data);
    let r = c.read_response(false);
    assert_status(&r, 201);
    let g = c.get(&format!("/v2/cont/blobs/{d}"));
    assert!(g.body == data);
    assert_eq!(c.connections, 1);
}

#[test]
fn expect_100_continue_on_patch_and_manifest_put() {
    let s = Server::start();
    let mut c = s.client();
    c.set_timeout(Duration::from_secs(10));
    let loc = start_upload(&mut c, "cont");
    let data = pseudo_random(70_000, 9);
    c.send_raw(
        format!(
            "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            s.host(),
            data.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response(false).status, 100);
    c.send_raw(&data);
    let r = c.read_response(false);
    assert_status(&r, 202);
    assert_eq!(must_header(&r, "range"), format!("0-{}", data.len() - 1));

    let (_d, m) = push_image(&mut c, "cont", "a", &[b"cont layer"]);
    c.send_raw(
        format!(
            "PUT /v2/cont/manifests/b HTTP/1.1\r\nHost: {}\r\nContent-Type: {OCI_MANIFEST}\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            s.host(),
            m.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response(false).status, 100);
    c.send_raw(&m);
    assert_status(&c.read_response(false), 201);
    assert!(c.get("/v2/cont/manifests/b").body == m);
}

#[test]
fn expect_100_continue_on_a_request_rejected_before_its_body_gets_the_final_error() {
    let s = Server::start();
    for (method, path) in [
        (
            "POST",
            "/v2/cont/blobs/uploads/?digest=sha256:bad".to_string(),
        ),
        (
            "POST",
            "/v2/Bad_Name/blobs/uploads/?digest=sha256:bad".to_string(),
        ),
        (
            "PATCH",
            "/v2/cont/blobs/uploads/no-such-session".to_string(),
        ),
    ] {
        let mut c = s.client();
        c.set_timeout(Duration::from_secs(10));
        c.send_raw(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
                s.host()
            )
            .as_bytes(),
        );
        let r = c.read_response(false);
        assert_ne!(
            r.status, 100,
            "{method} {path}: 100 Continue for a request that fails"
        );
        assert!(
            r.status == 400 || r.status == 404,
            "{method} {path}: expected the final 4xx, got {} {:?}",
            r.status,
            r.text()
        );
        check_error_body(&r);
    }
    assert_alive(&s);
}

#[test]
fn http_1_0_is_answered_and_the_connection_closed() {
    let s = Server::start();
    let mut c = s.client();
    c.send_raw(b"GET /v2/ HTTP/1.0\r\n\r\n");
    let r = c.read_response(false);
    assert_status(&r, 200);
    assert_eq!(
        r.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );
    c.wait_closed(Duration::from_secs(5))
        .expect("an HTTP/1.0 request without keep-alive must close the connection");

    // HTTP/1.0 with a body-carrying response.
    let data = pseudo_random(5000, 10);
    let d = push_blob(&mut s.client(), "old", &data);
    let mut c = s.client();
    c.send_raw(
        format!(
            "GET /v2/old/blobs/{d} HTTP/1.0\r\nHost: {}\r\n\r\n",
            s.host()
        )
        .as_bytes(),
    );
    let r = c.read_response(false);
    assert_status(&r, 200);
    assert!(r.body == data);
    c.wait_closed(Duration::from_secs(5))
        .expect("HTTP/1.0: connection not closed");
    assert_alive(&s);
}

#[test]
fn connection_close_is_honoured() {
    let s = Server::start();
    let mut c = s.client();
    let r = c.request("GET", "/v2/", &[("Connection", "close")], b"");
    assert_status(&r, 200);
    c.wait_closed(Duration::from_secs(5))
        .expect("Connection: close must close the connection after the response");

    // Also after an error response, and after a request with a body.
    let mut c = s.client();
    let r = c.request(
        "GET",
        &format!("/v2/x/blobs/{}", sha256_digest(b"x")),
        &[("Connection", "close")],
        b"",
    );
    assert!(r.status == 404);
    c.wait_closed(Duration::from_secs(5))
        .expect("not closed after an error");

    let mut c = s.client();
    let data = b"closing upload".to_vec();
    let r = c.post(
        &format!("/v2/x/blobs/uploads/?digest={}", sha256_digest(&data)),
        &[
            ("Connection", "close"),
            ("Content-Type", "application/octet-stream"),
        ],
        &data,
    );
    assert_status(&r, 201);
    c.wait_closed(Duration::from_secs(5))
        .expect("not closed after an upload");

    // Pipelined requests after a `Connection: close` one are not answered.
    let mut c = s.client();
    let host = s.host();
    c.send_raw(
        format!(
            "GET /v2/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n\
             GET /v2/ HTTP/1.1\r\nHost: {host}\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_status(&c.read_response(false), 200);
    c.wait_closed(Duration::from_secs(5))
        .expect("a request after `Connection: close` was answered");
    assert_alive(&s);
}

#[test]
fn head_responses_carry_no_body_in_a_pipeline() {
    let s = Server::start();
    let mut c = s.client();
    let data = pseudo_random(20_000, 11);
    let d = push_blob(&mut c, "headpipe", &data);
    let (md, m) = push_image(&mut c, "headpipe", "t", &[b"l"]);
    let host = s.host();
    c.send_raw(
        format!(
            "HEAD /v2/headpipe/blobs/{d} HTTP/1.1\r\nHost: {host}\r\n\r\n\
             HEAD /v2/headpipe/manifests/t HTTP/1.1\r\nHost: {host}\r\n\r\n\
             HEAD /v2/headpipe/blobs/{} HTTP/1.1\r\nHost: {host}\r\n\r\n\
             GET /v2/headpipe/manifests/{md} HTTP/1.1\r\nHost: {host}\r\n\r\n",
            sha256_digest(b"missing")
        )
        .as_bytes(),
    );
    let r = c.read_response(true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("20000"));
    let r = c.read_response(true);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(m.len().to_string().as_str())
    );
    let r = c.read_response(true);
    assert_eq!(r.status, 404);
    // If any HEAD had sent a body, this would not parse as the manifest.
    let r = c.read_response(false);
    assert_status(&r, 200);
    assert!(r.body == m);
}

#[test]
fn absolute_form_request_targets_are_accepted() {
    // RFC 9112 3.2.2: a server MUST accept the absolute-form in requests.
    let s = Server::start();
    let mut c = s.client();
    let d = push_blob(&mut c, "abs", b"absolute");
    c.send_raw(
        format!(
            "GET http://{0}/v2/abs/blobs/{d} HTTP/1.1\r\nHost: {0}\r\n\r\n",
            s.host()
        )
        .as_bytes(),
    );
    let r = c.read_response(false);
    assert_status(&r, 200);
    assert_eq!(r.body, b"absolute");
}

#[test]
fn an_error_before_the_body_does_not_desync_the_connection() {
    // The server answers before reading the body: it must then skip the body or close the
    // connection, never parse the body bytes as the next request.
    let s = Server::start();
    let host = s.host();
    let body = vec![b'G'; 20_000];
    let cases = [
        "POST /v2/desync/blobs/uploads/?digest=sha256:bad".to_string(),
        "POST /v2/Bad/blobs/uploads/?digest=sha256:bad".to_string(),
        "PATCH /v2/desync/blobs/uploads/unknown-session".to_string(),
        "PUT /v2/desync/manifests/-bad-tag".to_string(),
    ];
    for target in cases {
        let mut c = s.client();
        let mut req = format!(
            "{target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        req.extend_from_slice(format!("GET /v2/ HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        let _ = c.try_send_raw(&req);
        let r = c.read_response(false);
        assert!(
            r.status == 400 || r.status == 404,
            "{target}: expected 400/404, got {} {:?}",
            r.status,
            r.text()
        );
        check_error_body(&r);
        // The pipelined GET is either answered properly, or the connection is closed.
        match c.try_read_response(false) {
            Ok(r2) => {
                assert_eq!(
                    r2.status,
                    200,
                    "{target}: the body was parsed as a request: {:?}",
                    r2.text()
                );
                assert_eq!(
                    r2.header("Docker-Distribution-API-Version"),
                    Some("registry/2.0")
                );
            }
            Err(e) => assert!(e.contains("closed"), "{target}: {e}"),
        }
    }
    assert_alive(&s);
}

#[test]
fn a_body_on_a_get_is_skipped() {
    let s = Server::start();
    let mut c = s.client();
    let r = c.request("GET", "/v2/", &[("Content-Length", "5")], b"GET /");
    assert_status(&r, 200);
    let r = c.request(
        "GET",
        "/v2/",
        &[("Transfer-Encoding", "chunked")],
        b"3\r\nGET\r\n0\r\n\r\n",
    );
    assert_status(&r, 200);
    let r = c.get("/v2/");
    assert_status(&r, 200);
}

#[test]
fn header_names_are_case_insensitive() {
    let s = Server::start();
    let mut c = s.client();
    let loc = start_upload(&mut c, "case");
    let data = pseudo_random(1000, 12);
    let host = s.host();
    let mut req = format!(
        "PATCH {loc} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/octet-stream\r\n\
         CONTENT-RANGE: 0-499\r\ncOnTeNt-LeNgTh: 500\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(&data[..500]);
    c.send_raw(&req);
    let r = c.read_response(false);
    assert_status(&r, 202);
    assert_eq!(must_header(&r, "range"), "0-499");
    let loc = location_path(must_header(&r, "location"));
    let mut req =
        format!("PATCH {loc} HTTP/1.1\r\nHOST: {host}\r\nTRANSFER-ENCODING: Chunked\r\n\r\n")
            .into_bytes();
    req.extend_from_slice(&chunked_encode(&data[500..], &[123]));
    c.send_raw(&req);
    let r = c.read_response(false);
    assert_status(&r, 202);
    assert_eq!(must_header(&r, "range"), "0-999");
    let loc = location_path(must_header(&r, "location"));
    let d = sha256_digest(&data);
    let r = c.put(&with_query(&loc, &format!("digest={d}")), &[], b"");
    assert_status(&r, 201);
    let r = c.request(
        "GET",
        &format!("/v2/case/blobs/{d}"),
        &[("rAnGe", "bytes=0-9")],
        b"",
    );
    assert_eq!(r.status, 206);
    assert!(r.body == data[..10]);
}
