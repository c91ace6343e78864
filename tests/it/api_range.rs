//! Range requests on blob GET (RFC 9110 single ranges), and HEAD lengths.

use crate::common::*;

fn blob100() -> Vec<u8> {
    (0..100u32).map(|i| (i * 7 + 3) as u8).collect()
}

fn setup() -> (Server, Client, String, Vec<u8>) {
    let s = Server::start();
    let mut c = s.client();
    let data = blob100();
    let d = push_blob(&mut c, "ranges", &data);
    (s, c, d, data)
}

#[track_caller]
fn get_range(c: &mut Client, d: &str, range: &str) -> Response {
    c.request(
        "GET",
        &format!("/v2/ranges/blobs/{d}"),
        &[("Range", range)],
        b"",
    )
}

#[track_caller]
fn assert_partial(r: &Response, data: &[u8], first: usize, last: usize) {
    assert_eq!(
        r.status,
        206,
        "expected 206 for bytes {first}-{last}; got {} {:?} {:?}",
        r.status,
        r.text(),
        r.headers
    );
    assert_eq!(
        must_header(r, "content-range"),
        format!("bytes {first}-{last}/{}", data.len())
    );
    assert_eq!(
        must_header(r, "content-length"),
        (last - first + 1).to_string(),
        "Content-Length of a 206"
    );
    assert!(
        r.body == data[first..=last],
        "206 body is not bytes {first}-{last}"
    );
}

#[track_caller]
fn assert_unsatisfiable(r: &Response, len: usize) {
    assert_eq!(
        r.status,
        416,
        "expected 416; got {} {:?}",
        r.status,
        r.text()
    );
    assert_eq!(must_header(r, "content-range"), format!("bytes */{len}"));
    check_error_body(r);
}

#[test]
fn first_byte() {
    let (_s, mut c, d, data) = setup();
    assert_partial(&get_range(&mut c, &d, "bytes=0-0"), &data, 0, 0);
}

#[test]
fn closed_range() {
    let (_s, mut c, d, data) = setup();
    assert_partial(&get_range(&mut c, &d, "bytes=10-19"), &data, 10, 19);
    assert_partial(&get_range(&mut c, &d, "bytes=99-99"), &data, 99, 99);
    assert_partial(&get_range(&mut c, &d, "bytes=0-99"), &data, 0, 99);
}

#[test]
fn open_ended_range() {
    let (_s, mut c, d, data) = setup();
    assert_partial(&get_range(&mut c, &d, "bytes=90-"), &data, 90, 99);
    assert_partial(&get_range(&mut c, &d, "bytes=0-"), &data, 0, 99);
}

#[test]
fn suffix_range() {
    let (_s, mut c, d, data) = setup();
    assert_partial(&get_range(&mut c, &d, "bytes=-5"), &data, 95, 99);
    assert_partial(&get_range(&mut c, &d, "bytes=-1"), &data, 99, 99);
    // A suffix longer than the representation is the whole of it.
    assert_partial(&get_range(&mut c, &d, "bytes=-200"), &data, 0, 99);
}

#[test]
fn end_past_the_length_is_clamped() {
    let (_s, mut c, d, data) = setup();
    assert_partial(&get_range(&mut c, &d, "bytes=50-1000"), &data, 50, 99);
    assert_partial(
        &get_range(&mut c, &d, "bytes=98-18446744073709551615"),
        &data,
        98,
        99,
    );
}

#[test]
fn start_past_the_length_is_416() {
    let (s, mut c, d, data) = setup();
    assert_unsatisfiable(&get_range(&mut c, &d, "bytes=100-"), data.len());
    assert_unsatisfiable(&get_range(&mut c, &d, "bytes=100-200"), data.len());
    assert_unsatisfiable(&get_range(&mut c, &d, "bytes=5000-6000"), data.len());
    // A zero-length suffix is unsatisfiable too (RFC 9110 14.1.1).
    assert_unsatisfiable(&get_range(&mut c, &d, "bytes=-0"), data.len());
    // The connection is still usable after a 416.
    let r = c.get(&format!("/v2/ranges/blobs/{d}"));
    assert_status(&r, 200);
    assert!(r.body == data);
    assert_alive(&s);
}

#[test]
fn ranges_on_an_empty_blob_are_unsatisfiable() {
    let s = Server::start();
    let mut c = s.client();
    let d = push_blob(&mut c, "ranges", b"");
    let r = c.request(
        "GET",
        &format!("/v2/ranges/blobs/{d}"),
        &[("Range", "bytes=0-0")],
        b"",
    );
    assert_unsatisfiable(&r, 0);
}

#[test]
fn multiple_ranges_are_ignored_with_the_full_body() {
    let (_s, mut c, d, data) = setup();
    let r = get_range(&mut c, &d, "bytes=0-1,5-6");
    assert_status(&r, 200);
    assert_eq!(r.header("content-length"), Some("100"));
    assert!(
        r.header("content-range").is_none(),
        "200 with Content-Range"
    );
    assert!(r.body == data);
}

#[test]
fn other_range_units_are_ignored() {
    let (_s, mut c, d, data) = setup();
    let r = get_range(&mut c, &d, "items=0-5");
    assert_status(&r, 200);
    assert!(r.body == data);
}

#[test]
fn syntactically_invalid_ranges_do_not_break_the_request() {
    let (s, mut c, d, data) = setup();
    for bad in [
        "bytes=abc",
        "bytes=5-2",
        "bytes=",
        "bytes=--1",
        "bytes=1-2-3",
    ] {
        let r = get_range(&mut c, &d, bad);
        match r.status {
            200 => assert!(r.body == data, "Range {bad:?}: 200 with a different body"),
            416 => check_error_body(&r),
            other => panic!("Range {bad:?}: expected 200 (ignored) or 416, got {other}"),
        }
    }
    assert_alive(&s);
}

#[test]
fn head_lengths() {
    let (_s, mut c, d, _data) = setup();
    let h = c.head(&format!("/v2/ranges/blobs/{d}"));
    assert_status(&h, 200);
    assert_eq!(h.header("content-length"), Some("100"));
    assert_eq!(h.header("Docker-Content-Digest"), Some(d.as_str()));
    // With a Range: RFC 9110 defines range handling for GET only, so a server may ignore it
    // (200, full length) or answer like the GET would (206 and the range's length). Either
    // way, no body follows.
    let h = c.request(
        "HEAD",
        &format!("/v2/ranges/blobs/{d}"),
        &[("Range", "bytes=10-19")],
        b"",
    );
    match h.status {
        200 => assert_eq!(h.header("content-length"), Some("100")),
        206 => {
            assert_eq!(h.header("content-length"), Some("10"));
            assert_eq!(h.header("content-range"), Some("bytes 10-19/100"));
        }
        other => panic!("HEAD with Range: {other}"),
    }
    // A GET on the same connection parses: no stray body bytes were sent.
    let g = get_range(&mut c, &d, "bytes=0-0");
    assert_eq!(g.status, 206);
    assert_eq!(c.connections, 1);
}

#[test]
fn range_responses_keep_the_connection_usable() {
    let (_s, mut c, d, data) = setup();
    for i in 0..20usize {
        let r = get_range(&mut c, &d, &format!("bytes={}-{}", i, i + 3));
        assert_partial(&r, &data, i, i + 3);
    }
    assert_eq!(c.connections, 1);
}

#[test]
fn range_on_a_large_blob() {
    let s = Server::start();
    let mut c = s.client();
    let data = pseudo_random(3 << 20, 77);
    let d = push_blob(&mut c, "ranges", &data);
    let first = (1 << 20) + 17;
    let last = (2 << 20) + 3;
    let r = c.request(
        "GET",
        &format!("/v2/ranges/blobs/{d}"),
        &[("Range", &format!("bytes={first}-{last}"))],
        b"",
    );
    assert_partial(&r, &data, first, last);
    let r = c.request(
        "GET",
        &format!("/v2/ranges/blobs/{d}"),
        &[("Range", "bytes=-65536")],
        b"",
    );
    assert_partial(&r, &data, data.len() - 65536, data.len() - 1);
}
