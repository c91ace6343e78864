//! Blobs and upload sessions: monolithic, chunked and streamed pushes, digest and size checks,
//! session status, cancel, unknown sessions, cross-repository mount, repository isolation,
//! HEAD/GET/DELETE, and sessions spread over several workers.

use crate::common::*;

const OCTET: (&str, &str) = ("Content-Type", "application/octet-stream");

#[track_caller]
fn range(r: &Response) -> String {
    must_header(r, "range").to_string()
}

/// `OCI-Chunk-Min-Length` of a session POST response (spec: SHOULD be sent when the registry has
/// a minimum; the issue requires it).
#[track_caller]
fn chunk_min(r: &Response) -> usize {
    let v = must_header(r, "OCI-Chunk-Min-Length");
    let n: usize = v
        .parse()
        .unwrap_or_else(|_| panic!("OCI-Chunk-Min-Length is not a number: {v:?}"));
    assert!(
        n <= 64 << 20,
        "OCI-Chunk-Min-Length {n} is too large for these tests (over 64 MiB)"
    );
    n
}

/// POST a session; returns (location path, min chunk length).
#[track_caller]
fn session(c: &mut Client, repo: &str) -> (String, usize) {
    let r = c.post(&format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_status(&r, 202);
    (location_path(must_header(&r, "location")), chunk_min(&r))
}

/// PATCH one chunk with Content-Range; asserts 202 and `Range: 0-<end>`; returns the new location.
#[track_caller]
fn patch_chunk(c: &mut Client, loc: &str, start: usize, data: &[u8]) -> String {
    let end = start + data.len() - 1;
    let cr = format!("{start}-{end}");
    let r = c.patch(loc, &[OCTET, ("Content-Range", &cr)], data);
    assert_status(&r, 202);
    assert_eq!(range(&r), format!("0-{end}"), "Range after chunk {cr}");
    location_path(must_header(&r, "location"))
}

#[track_caller]
fn assert_blob(c: &mut Client, repo: &str, digest: &str, bytes: &[u8]) {
    let r = c.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_status(&r, 200);
    assert_eq!(r.body.len(), bytes.len(), "GET {repo} {digest}: length");
    assert!(
        r.body == bytes,
        "GET {repo} {digest}: body differs from what was pushed"
    );
    assert_eq!(r.header("Docker-Content-Digest"), Some(digest));
}

#[track_caller]
fn assert_no_blob(c: &mut Client, repo: &str, digest: &str) {
    let r = c.head(&format!("/v2/{repo}/blobs/{digest}"));
    assert_head_status(&r, 404);
    let r = c.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_error(&r, 404, &["BLOB_UNKNOWN"]);
}

// ---------------------------------------------------------------------------------------------
// Monolithic
// ---------------------------------------------------------------------------------------------

#[test]
fn monolithic_post_with_digest_creates_the_blob() {
    let s = Server::start();
    let mut c = s.client();
    let data = pseudo_random(10_000, 1);
    let d = sha256_digest(&data);
    let r = c.post(
        &format!("/v2/mono/blobs/uploads/?digest={d}"),
        &[OCTET],
        &data,
    );
    assert_status(&r, 201);
    let loc = location_path(must_header(&r, "location"));
    assert_eq!(loc, format!("/v2/mono/blobs/{d}"), "Location of the blob");
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    // Location is pullable.
    let g = c.get(&loc);
    assert_status(&g, 200);
    assert!(g.body == data);
    assert_blob(&mut c, "mono", &d, &data);
}

#[test]
fn monolithic_post_of_an_existing_blob_is_201_again() {
    let s = Server::start();
    let mut c = s.client();
    let data = b"same bytes twice".to_vec();
    let d = push_blob(&mut c, "again", &data);
    let d2 = push_blob(&mut c, "again", &data);
    assert_eq!(d, d2);
    assert_blob(&mut c, "again", &d, &data);
}

#[test]
fn empty_blob_can_be_pushed_and_pulled() {
    let s = Server::start();
    let mut c = s.client();
    let d = push_blob(&mut c, "empty", b"");
    assert_eq!(
        d,
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let h = c.head(&format!("/v2/empty/blobs/{d}"));
    assert_status(&h, 200);
    assert_eq!(h.header("content-length"), Some("0"));
    assert_blob(&mut c, "empty", &d, b"");
}

#[test]
fn monolithic_post_with_a_wrong_digest_is_digest_invalid_and_stores_nothing() {
    let s = Server::start();
    let mut c = s.client();
    let data = pseudo_random(5000, 2);
    let wrong = sha256_digest(b"something else");
    let r = c.post(
        &format!("/v2/mono/blobs/uploads/?digest={wrong}"),
        &[OCTET],
        &data,
    );
    assert_error(&r, 400, &["DIGEST_INVALID"]);
    assert_no_blob(&mut c, "mono", &wrong);
    assert_no_blob(&mut c, "mono", &sha256_digest(&data));
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

#[test]
fn post_starts_a_session_with_location_range_min_chunk_and_uuid() {
    let s = Server::start();
    let mut c = s.client();
    let r1 = c.post("/v2/sess/blobs/uploads/", &[], b"");
    assert_status(&r1, 202);
    let loc1 = location_path(must_header(&r1, "location"));
    assert!(
        loc1.starts_with("/v2/sess/blobs/uploads/") && loc1.len() > "/v2/sess/blobs/uploads/".len(),
        "session Location {loc1:?}"
    );
    assert_eq!(range(&r1), "0-0");
    chunk_min(&r1);
    let uuid1 = must_header(&r1, "Docker-Upload-UUID").to_string();
    assert!(!uuid1.is_empty());
    assert!(
        loc1.contains(&uuid1),
        "the Location {loc1:?} should carry the session id {uuid1:?}"
    );

    let r2 = c.post("/v2/sess/blobs/uploads/", &[], b"");
    assert_status(&r2, 202);
    let loc2 = location_path(must_header(&r2, "location"));
    let uuid2 = must_header(&r2, "Docker-Upload-UUID").to_string();
    assert_ne!(loc1, loc2, "two sessions share a Location");
    assert_ne!(uuid1, uuid2, "two sessions share an id");
}

#[test]
fn chunked_patches_then_put_without_body_completes() {
    let s = Server::start();
    let mut c = s.client();
    let (mut loc, min) = session(&mut c, "chunky");
    let chunk = min.max(1000);
    let data = pseudo_random(chunk * 3 + 123, 3);
    let d = sha256_digest(&data);
    let mut off = 0;
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        loc = patch_chunk(&mut c, &loc, off, &data[off..end]);
        off = end;
    }
    let r = c.put(&with_query(&loc, &format!("digest={d}")), &[], b"");
    assert_status(&r, 201);
    assert_eq!(
        location_path(must_header(&r, "location")),
        format!("/v2/chunky/blobs/{d}")
    );
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    assert_blob(&mut c, "chunky", &d, &data);
    // The session is gone once completed.
    let g = c.get(&loc);
    assert_error(&g, 404, &["BLOB_UPLOAD_UNKNOWN"]);
    let again = c.put(&with_query(&loc, &format!("digest={d}")), &[], b"");
    assert_error(&again, 404, &["BLOB_UPLOAD_UNKNOWN"]);
}

#[test]
fn out_of_order_chunks_get_416_and_do_not_move_the_offset() {
    let s = Server::start();
    let mut c = s.client();
    let (mut loc, min) = session(&mut c, "order");
    let chunk = min.max(100);
    let data = pseudo_random(chunk * 3, 4);
    let d = sha256_digest(&data);

    // A first chunk that does not start at 0.
    let cr = format!("{}-{}", chunk, 2 * chunk - 1);
    let r = c.patch(
        &loc,
        &[OCTET, ("Content-Range", &cr)],
        &data[chunk..2 * chunk],
    );
    assert_error(
        &r,
        416,
        &["BLOB_UPLOAD_INVALID", "RANGE_INVALID", "SIZE_INVALID"],
    );

    let st = c.get(&loc);
    assert_status(&st, 204);
    assert_eq!(range(&st), "0-0", "offset after a rejected first chunk");

    loc = patch_chunk(&mut c, &loc, 0, &data[..chunk]);

    // A gap.
    let cr = format!("{}-{}", 2 * chunk, 3 * chunk - 1);
    let r = c.patch(&loc, &[OCTET, ("Content-Range", &cr)], &data[2 * chunk..]);
    assert_error(
        &r,
        416,
        &["BLOB_UPLOAD_INVALID", "RANGE_INVALID", "SIZE_INVALID"],
    );
    // An overlap (re-sending from 1).
    let cr = format!("1-{}", chunk);
    let r = c.patch(&loc, &[OCTET, ("Content-Range", &cr)], &data[1..=chunk]);
    assert_error(
        &r,
        416,
        &["BLOB_UPLOAD_INVALID", "RANGE_INVALID", "SIZE_INVALID"],
    );

    let st = c.get(&loc);
    assert_status(&st, 204);
    assert_eq!(
        range(&st),
        format!("0-{}", chunk - 1),
        "offset after rejected chunks"
    );

    // The session is still usable from the reported offset.
    loc = patch_chunk(&mut c, &loc, chunk, &data[chunk..2 * chunk]);
    // A closing PUT whose final chunk is out of order is refused too, and stores nothing.
    let cr = format!("{}-{}", 2 * chunk + 1, 3 * chunk);
    let r = c.put(
        &with_query(&loc, &format!("digest={d}")),
        &[OCTET, ("Content-Range", &cr)],
        &data[2 * chunk..],
    );
    assert_error(
        &r,
        416,
        &["BLOB_UPLOAD_INVALID", "RANGE_INVALID", "SIZE_INVALID"],
    );
    assert_no_blob(&mut c, "order", &d);
    let st = c.get(&loc);
    assert_status(&st, 204);
    assert_eq!(range(&st), format!("0-{}", 2 * chunk - 1));
    loc = patch_chunk(&mut c, &loc, 2 * chunk, &data[2 * chunk..]);
    let r = c.put(&with_query(&loc, &format!("digest={d}")), &[], b"");
    assert_status(&r, 201);
    assert_blob(&mut c, "order", &d, &data);
}

#[test]
fn malformed_content_range_is_rejected() {
    let s = Server::start();
    let mut c = s.client();
    let (loc, _) = session(&mut c, "badrange");
    for cr in ["abc", "9-0", "0-", "-9", "1-x"] {
        let r = c.patch(&loc, &[OCTET, ("Content-Range", cr)], &[7u8; 10]);
        assert!(
            r.status == 416 || r.status == 400,
            "Content-Range {cr:?}: expected 416 (or 400), got {} {:?}",
            r.status,
            r.text()
        );
        check_error_body(&r);
    }
    let st = c.get(&loc);
    assert_status(&st, 204);
    assert_eq!(range(&st), "0-0");
}

#[test]
fn content_range_that_disagrees_with_content_length_is_rejected() {
    let s = Server::start();
    let mut c = s.client();
    let (loc, _) = session(&mut c, "crlen");
    // Range says 20 bytes, the body has 10.
    let r = c.patch(&loc, &[OCTET, ("Content-Range", "0-19")], &[1u8; 10]);
    assert!(
        r.status == 416 || r.status == 400,
        "expected 416 or 400, got {} {:?}",
        r.status,
        r.text()
    );
    if r.status == 400 {
        assert_error(&r, 400, &["SIZE_INVALID", "BLOB_UPLOAD_INVALID"]);
    } else {
        check_error_body(&r);
    }
    let st = c.get(&loc);
    if st.status == 204 {
        assert_eq!(range(&st), "0-0", "a rejected chunk must not be appended");
    } else {
        // A registry may also drop the session after a 4xx.
        assert_error(&st, 404, &["BLOB_UPLOAD_UNKNOWN"]);
    }
}

#[test]
fn streamed_patches_without_content_range_append() {
    let s = Server::start();
    let mut c = s.client();
    let (mut loc, _) = session(&mut c, "stream");
    let a = pseudo_random(70_000, 5);
    let b = pseudo_random(33_333, 6);
    let r = c.patch(&loc, &[OCTET], &a);
    assert_status(&r, 202);
    assert_eq!(range(&r), format!("0-{}", a.len() - 1));
    loc = location_path(must_header(&r, "location"));
    let r = c.patch(&loc, &[OCTET], &b);
    assert_status(&r, 202);
    assert_eq!(range(&r), format!("0-{}", a.len() + b.len() - 1));
    loc = location_path(must_header(&r, "location"));
    let mut all = a.clone();
    all.extend_from_slice(&b);
    let d = sha256_digest(&all);
    let r = c.put(&with_query(&loc, &format!("digest={d}")), &[], b"");
    assert_status(&r, 201);
    assert_blob(&mut c, "stream", &d, &all);
}

#[test]
fn put_with_the_final_chunk_completes() {
    let s = Server::start();
    let mut c = s.client();
    let (mut loc, min) = session(&mut c, "final");
    let first = min.max(4096);
    let data = pseudo_random(first + 777, 7);
    let d = sha256_digest(&data);
    loc = patch_chunk(&mut c, &loc, 0, &data[..first]);
    let cr = format!("{}-{}", first, data.len() - 1);
    let r = c.put(
        &with_query(&loc, &format!("digest={d}")),
        &[OCTET, ("Content-Range", &cr)],
        &data[first..],
    );
    assert_status(&r, 201);
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    assert_blob(&mut c, "final", &d, &data);
}

#[test]
fn put_with_the_whole_blob_on_a_fresh_session_completes() {
    let s = Server::start();
    let mut c = s.client();
    let (loc, _) = session(&mut c, "postput");
    let data = pseudo_random(123_456, 8);
    let d = sha256_digest(&data);
    let r = c.put(&with_query(&loc, &format!("digest={d}")), &[OCTET], &data);
    assert_status(&r, 201);
    assert_eq!(
        location_path(must_header(&r, "location")),
        format!("/v2/postput/blobs/{d}")
    );
    assert_blob(&mut c, "postput", &d, &data);
}

#[test]
fn put_with_a_digest_that_does_not_match_is_digest_invalid_and_stores_nothing() {
    let s = Server::start();
    let mut c = s.client();
    let (mut loc, _) = session(&mut c, "mismatch");
    let data = pseudo_random(20_000, 9);
    let r = c.patch(&loc, &[OCTET], &data);
    assert_status(&r, 202);
    loc = location_path(must_header(&r, "location"));
    let mut other = data.clone();
    other[0] ^= 1;
    let wrong = sha256_digest(&other);
    let r = c.put(&with_query(&loc, &format!("digest={wrong}")), &[], b"");
    assert_error(&r, 400, &["DIGEST_INVALID"]);
    assert_no_blob(&mut c, "mismatch", &wrong);
    assert_no_blob(&mut c, "mismatch", &sha256_digest(&data));
}

#[test]
fn put_without_a_digest_is_rejected_and_the_session_survives() {
    let s = Server::start();
    let mut c = s.client();
    let (loc, _) = session(&mut c, "nodigest");
    let data = b"twelve bytes".to_vec();
    let r = c.patch(&loc, &[OCTET], &data);
    assert_status(&r, 202);
    let loc = location_path(must_header(&r, "location"));
    let r = c.put(&loc, &[], b"");
    assert_error(&r, 400, &["DIGEST_INVALID", "BLOB_UPLOAD_INVALID"]);
}

#[test]
fn sha512_digests_are_verified() {
    let s = Server::start();
    let mut c = s.client();
    // Monolithic.
    let data = pseudo_random(9_999, 10);
    let d512 = sha512_digest(&data);
    let r = c.post(
        &format!("/v2/sha512/blobs/uploads/?digest={d512}"),
        &[OCTET],
        &data,
    );
    assert_status(&r, 201);
    let canonical = must_header(&r, "Docker-Content-Digest").to_string();
    assert!(
        canonical == d512 || canonical == sha256_digest(&data),
        "Docker-Content-Digest {canonical} is neither the sha512 nor the sha256 of the bytes"
    );
    let g = c.get(&format!("/v2/sha512/blobs/{d512}"));
    assert_status(&g, 200);
    assert!(g.body == data, "GET by sha512 digest: body differs");
    let h = c.head(&format!("/v2/sha512/blobs/{d512}"));
    assert_status(&h, 200);
    assert_eq!(
        h.header("content-length"),
        Some(data.len().to_string().as_str())
    );

    // Chunked, closed with a sha512 digest.
    let (loc, _) = session(&mut c, "sha512");
    let data2 = pseudo_random(50_001, 11);
    let r = c.patch(&loc, &[OCTET], &data2);
    assert_status(&r, 202);
    let loc = location_path(must_header(&r, "location"));
    let d2 = sha512_digest(&data2);
    let r = c.put(&with_query(&loc, &format!("digest={d2}")), &[], b"");
    assert_status(&r, 201);
    let g = c.get(&format!("/v2/sha512/blobs/{d2}"));
    assert_status(&g, 200);
    assert!(g.body == data2);

    // Mismatch.
    let wrong = sha512_digest(b"not these bytes");
    let r = c.post(
        &format!("/v2/sha512/blobs/uploads/?digest={wrong}"),
        &[OCTET],
        &data,
    );
    assert_error(&r, 400, &["DIGEST_INVALID"]);
    let h = c.head(&format!("/v2/sha512/blobs/{wrong}"));
    assert_head_status(&h, 404);
}

#[test]
fn final_put_whose_content_range_disagrees_with_content_length_is_rejected() {
    let s = Server::start();
    let mut c = s.client();
    let (loc, _) = session(&mut c, "sizeput");
    let data = pseudo_random(10, 12);
    let d = sha256_digest(&data);
    // Content-Range claims 20 bytes, Content-Length (and the body) has 10.
    let r = c.put(
        &with_query(&loc, &format!("digest={d}")),
        &[OCTET, ("Content-Range", "0-19")],
        &data,
    );
    assert!(
        r.status == 400 || r.status == 416,
        "expected 400 SIZE_INVALID (or 416), got {} {:?}",
        r.status,
        r.text()
    );
    if r.status == 400 {
        assert_error(&r, 400, &["SIZE_INVALID", "BLOB_UPLOAD_INVALID"]);
    } else {
        check_error_body(&r);
    }
    assert_no_blob(&mut c, "sizeput", &d);
}

#[test]
fn final_put_with_a_body_shorter_than_its_content_length_stores_nothing() {
    let s = Server::start();
    let mut c = s.client();
    let (loc, _) = session(&mut c, "shortbody");
    let data = pseudo_random(100, 13);
    let d = sha256_digest(&data);
    let d_half = sha256_digest(&data[..50]);
    let mut raw = s.client();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\n",
        with_query(&loc, &format!("digest={d_half}")),
        s.host()
    );
    raw.send_raw(head.as_bytes());
    raw.send_raw(&data[..50]);
    raw.shutdown_write();
    // Closing the connection without an answer is acceptable.
    if let Ok(r) = raw.try_read_response(false) {
        assert!(
            r.status == 400 || r.status == 408,
            "a body cut short of its Content-Length must not be accepted: got {} {:?}",
            r.status,
            r.text()
        );
        check_error_body(&r);
    }
    assert_no_blob(&mut c, "shortbody", &d_half);
    assert_no_blob(&mut c, "shortbody", &d);
    assert_alive(&s);
}

#[test]
fn upload_status_reports_location_and_range() {
    let s = Server::start();
    let mut c = s.client();
    let (loc, _) = session(&mut c, "status");
    let st = c.get(&loc);
    assert_status(&st, 204);
    assert!(st.body.is_empty());
    assert_eq!(range(&st), "0-0");
    assert!(location_path(must_header(&st, "location")).starts_with("/v2/status/blobs/uploads/"));

    let data = pseudo_random(4321, 14);
    let r = c.patch(&loc, &[OCTET], &data);
    assert_status(&r, 202);
    let loc = location_path(must_header(&r, "location"));
    let st = c.get(&loc);
    assert_status(&st, 204);
    assert_eq!(range(&st), "0-4320");
    let st_loc = location_path(must_header(&st, "location"));
    // Resume from the status Location.
    let more = pseudo_random(100, 15);
    let r = c.patch(&st_loc, &[OCTET, ("Content-Range", "4321-4420")], &more);
    assert_status(&r, 202);
    assert_eq!(range(&r), "0-4420");
}

#[test]
fn cancelled_upload_is_gone() {
    let s = Server::start();
    let mut c = s.client();
    let (loc, _) = session(&mut c, "cancel");
    let r = c.patch(&loc, &[OCTET], b"some data");
    assert_status(&r, 202);
    let loc = location_path(must_header(&r, "location"));
    let r = c.delete(&loc);
    assert_status(&r, 204);
    let r = c.get(&loc);
    assert_error(&r, 404, &["BLOB_UPLOAD_UNKNOWN"]);
    let r = c.patch(&loc, &[OCTET], b"more");
    assert_error(&r, 404, &["BLOB_UPLOAD_UNKNOWN"]);
    let d = sha256_digest(b"some data");
    let r = c.put(&with_query(&loc, &format!("digest={d}")), &[], b"");
    assert_error(&r, 404, &["BLOB_UPLOAD_UNKNOWN"]);
    let r = c.delete(&loc);
    assert_error(&r, 404, &["BLOB_UPLOAD_UNKNOWN"]);
    assert_no_blob(&mut c, "cancel", &d);
}

/// The session id of a Location path (the last path segment, without query).
fn session_id(loc: &str) -> String {
    let path = loc.split('?').next().unwrap();
    path.rsplit('/').next().unwrap().to_string()
}

/// The same id with its last character changed to another of the same class.
fn mutate_id(id: &str) -> String {
    let mut chars: Vec<char> = id.chars().collect();
    let last = chars.last_mut().expect("non-empty id");
    *last = match *last {
        '0'..='8' | 'a'..='e' | 'A'..='E' => ((*last as u8) + 1) as char,
        '9' => '0',
        'f' => 'a',
        'F' => 'A',
        c if c.is_ascii_lowercase() => {
            if c == 'z' {
                'a'
            } else {
                ((c as u8) + 1) as char
            }
        }
        c if c.is_ascii_uppercase() => {
            if c == 'Z' {
                'A'
            } else {
                ((c as u8) + 1) as char
            }
        }
        _ => 'x',
    };
    chars.into_iter().collect()
}

#[test]
fn unknown_sessions_are_blob_upload_unknown() {
    let s = Server::start();
    let mut c = s.client();
    let (loc, _) = session(&mut c, "known");
    let id = session_id(&loc);
    let fake = mutate_id(&id);
    assert_ne!(fake, id);
    let d = sha256_digest(b"x");
    for path in [
        format!("/v2/known/blobs/uploads/{fake}"),
        // A real session id under another repository.
        format!("/v2/other/blobs/uploads/{id}"),
    ] {
        let r = c.get(&path);
        assert_error(&r, 404, &["BLOB_UPLOAD_UNKNOWN"]);
        let r = c.patch(&path, &[OCTET], b"x");
        assert_error(&r, 404, &["BLOB_UPLOAD_UNKNOWN"]);
        let r = c.put(&format!("{path}?digest={d}"), &[OCTET], b"x");
        assert_error(&r, 404, &["BLOB_UPLOAD_UNKNOWN"]);
        let r = c.delete(&path);
        assert_error(&r, 404, &["BLOB_UPLOAD_UNKNOWN"]);
    }
    // The real session was not touched by the attempts under another repository.
    let st = c.get(&loc);
    assert_status(&st, 204);
    assert_eq!(range(&st), "0-0");
}

// ---------------------------------------------------------------------------------------------
// Mount and isolation
// ---------------------------------------------------------------------------------------------

#[test]
fn mount_from_a_repository_that_has_the_blob_is_201() {
    let s = Server::start();
    let mut c = s.client();
    let data = pseudo_random(3000, 16);
    let d = push_blob(&mut c, "src/repo", &data);
    let r = c.post(
        &format!("/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo"),
        &[],
        b"",
    );
    assert_status(&r, 201);
    assert_eq!(
        location_path(must_header(&r, "location")),
        format!("/v2/dst/repo/blobs/{d}")
    );
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    assert_blob(&mut c, "dst/repo", &d, &data);
}

#[test]
fn mount_from_a_repository_without_the_blob_starts_a_session() {
    let s = Server::start();
    let mut c = s.client();
    let data = pseudo_random(3000, 17);
    // The blob exists in the registry, but only in `elsewhere`.
    let d = push_blob(&mut c, "elsewhere", &data);
    push_blob(&mut c, "src", b"src has other content");
    for from in ["src", "does-not-exist"] {
        let r = c.post(
            &format!("/v2/dst/blobs/uploads/?mount={d}&from={from}"),
            &[],
            b"",
        );
        assert_status(&r, 202);
        let loc = location_path(must_header(&r, "location"));
        assert!(loc.starts_with("/v2/dst/blobs/uploads/"), "{loc}");
        assert_eq!(range(&r), "0-0");
        // Not mounted: dst cannot read the blob.
        assert_no_blob(&mut c, "dst", &d);
        // The session is an ordinary one.
        let st = c.get(&loc);
        assert_status(&st, 204);
    }
    // Completing such a session works.
    let r = c.post(
        &format!("/v2/dst/blobs/uploads/?mount={d}&from=src"),
        &[],
        b"",
    );
    assert_status(&r, 202);
    let loc = location_path(must_header(&r, "location"));
    let r = c.put(&with_query(&loc, &format!("digest={d}")), &[OCTET], &data);
    assert_status(&r, 201);
    assert_blob(&mut c, "dst", &d, &data);
}

#[test]
fn a_blob_pushed_to_one_repository_is_not_readable_from_another() {
    let s = Server::start();
    let mut c = s.client();
    let data = pseudo_random(2048, 18);
    let d = push_blob(&mut c, "team-a/app", &data);
    push_blob(&mut c, "team-b/app", b"b's own blob");
    assert_no_blob(&mut c, "team-b/app", &d);
    // A repository that does not exist at all: 404 too.
    let r = c.get(&format!("/v2/team-c/app/blobs/{d}"));
    assert_error(&r, 404, &["BLOB_UNKNOWN", "NAME_UNKNOWN"]);
    let r = c.head(&format!("/v2/team-c/app/blobs/{d}"));
    assert_head_status(&r, 404);
    // And a prefix of the owning repository is another repository.
    let r = c.get(&format!("/v2/team-a/blobs/{d}"));
    assert_error(&r, 404, &["BLOB_UNKNOWN", "NAME_UNKNOWN"]);
    assert_blob(&mut c, "team-a/app", &d, &data);
}

#[test]
fn unknown_blob_is_404_blob_unknown() {
    let s = Server::start();
    let mut c = s.client();
    push_blob(&mut c, "r", b"exists");
    let d = sha256_digest(b"never pushed");
    assert_no_blob(&mut c, "r", &d);
    let r = c.delete(&format!("/v2/r/blobs/{d}"));
    assert_error(&r, 404, &["BLOB_UNKNOWN"]);
}

// ---------------------------------------------------------------------------------------------
// HEAD / GET / DELETE
// ---------------------------------------------------------------------------------------------

#[test]
fn blob_head_has_length_and_digest_and_no_body() {
    let s = Server::start();
    let mut c = s.client();
    let data = pseudo_random(65_537, 19);
    let d = push_blob(&mut c, "headrepo", &data);
    let h = c.head(&format!("/v2/headrepo/blobs/{d}"));
    assert_status(&h, 200);
    assert_eq!(h.header("content-length"), Some("65537"));
    assert_eq!(h.header("Docker-Content-Digest"), Some(d.as_str()));
    // No body followed: the next request parses (the client panics on stray bytes).
    let g = c.get(&format!("/v2/headrepo/blobs/{d}"));
    assert_status(&g, 200);
    assert_eq!(g.header("content-length"), Some("65537"));
    assert!(g.body == data);
    assert_eq!(c.connections, 1);
}

#[test]
fn large_blob_roundtrip_is_byte_exact() {
    let s = Server::start();
    let mut c = s.client();
    let (mut loc, min) = session(&mut c, "big");
    let data = pseudo_random(12 << 20, 20);
    let d = sha256_digest(&data);
    let chunk = min.max(3 << 20) + 12345;
    let mut off = 0;
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        loc = patch_chunk(&mut c, &loc, off, &data[off..end]);
        off = end;
    }
    let r = c.put(&with_query(&loc, &format!("digest={d}")), &[], b"");
    assert_status(&r, 201);
    let g = c.get(&format!("/v2/big/blobs/{d}"));
    assert_status(&g, 200);
    assert_eq!(g.body.len(), data.len());
    assert!(g.body == data, "12 MiB blob differs after the round trip");
}

#[test]
fn blob_delete_is_202_then_404() {
    let s = Server::start();
    let mut c = s.client();
    let data = pseudo_random(1000, 21);
    let d = push_blob(&mut c, "del/a", &data);
    push_blob(&mut c, "del/b", &data);
    let r = c.delete(&format!("/v2/del/a/blobs/{d}"));
    assert_status(&r, 202);
    assert_no_blob(&mut c, "del/a", &d);
    let r = c.delete(&format!("/v2/del/a/blobs/{d}"));
    assert_error(&r, 404, &["BLOB_UNKNOWN"]);
    // The other repository's copy is untouched.
    assert_blob(&mut c, "del/b", &d, &data);
    // A manifest in the repository that lost the blob can no longer reference it.
    let cfg = image_config(std::slice::from_ref(&d));
    let cd = push_blob(&mut c, "del/a", &cfg);
    let m = image_manifest(&(cd, cfg.len()), &[(d.clone(), data.len())]);
    let r = c.put(
        "/v2/del/a/manifests/t",
        &[("Content-Type", OCI_MANIFEST)],
        &m,
    );
    assert_error(&r, 400, &["MANIFEST_BLOB_UNKNOWN"]);
}

#[test]
fn upload_sessions_work_across_workers() {
    // Every request on a new connection: with 2 workers behind SO_REUSEPORT, they spread over
    // both, so the session must be visible to every worker.
    let s = Server::start();
    let mut first = s.client();
    let (mut loc, min) = session(&mut first, "workers");
    let chunk = min.max(2000);
    let data = pseudo_random(chunk * 10 + 11, 22);
    let d = sha256_digest(&data);
    let mut off = 0;
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        let mut c = s.client();
        loc = patch_chunk(&mut c, &loc, off, &data[off..end]);
        off = end;
        let mut c = s.client();
        let st = c.get(&loc);
        assert_status(&st, 204);
        assert_eq!(range(&st), format!("0-{}", end - 1));
    }
    let mut c = s.client();
    let r = c.put(&with_query(&loc, &format!("digest={d}")), &[], b"");
    assert_status(&r, 201);
    for _ in 0..4 {
        let mut c = s.client();
        assert_blob(&mut c, "workers", &d, &data);
    }
}

#[test]
fn concurrent_uploads_to_one_repository() {
    let s = Server::start();
    let addr = s.addr;
    let handles: Vec<_> = (0..6u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let data = pseudo_random(200_000 + i as usize, 100 + i);
                let (loc, _) = session(&mut c, "concurrent");
                let r = c.patch(&loc, &[OCTET], &data);
                assert_status(&r, 202);
                let loc = location_path(must_header(&r, "location"));
                let d = sha256_digest(&data);
                let r = c.put(&with_query(&loc, &format!("digest={d}")), &[], b"");
                assert_status(&r, 201);
                (d, data)
            })
        })
        .collect();
    let mut c = s.client();
    for h in handles {
        let (d, data) = h.join().expect("upload thread");
        assert_blob(&mut c, "concurrent", &d, &data);
    }
}

#[test]
fn percent_encoded_query_parameters_are_decoded() {
    // Go clients (docker, containerd) build queries with url.Values.Encode: `:` and `/` arrive
    // as %3A and %2F.
    let s = Server::start();
    let mut c = s.client();
    let data = pseudo_random(777, 23);
    let d = sha256_digest(&data);
    let enc = d.replace(':', "%3A");
    let r = c.post(
        &format!("/v2/enc/blobs/uploads/?digest={enc}"),
        &[OCTET],
        &data,
    );
    assert_status(&r, 201);
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));

    let data2 = pseudo_random(888, 24);
    let d2 = sha256_digest(&data2);
    let (loc, _) = session(&mut c, "enc/two");
    let r = c.put(
        &with_query(&loc, &format!("digest={}", d2.replace(':', "%3a"))),
        &[OCTET],
        &data2,
    );
    assert_status(&r, 201);
    assert_blob(&mut c, "enc/two", &d2, &data2);

    let r = c.post(
        &format!(
            "/v2/enc/three/blobs/uploads/?mount={}&from=enc%2Ftwo",
            d2.replace(':', "%3A")
        ),
        &[],
        b"",
    );
    assert_status(&r, 201);
    assert_blob(&mut c, "enc/three", &d2, &data2);
}

/// Regular files under `dir` whose size is exactly `size`.
fn files_of_size(dir: &std::path::Path, size: u64) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) if m.is_file() && m.len() == size => out.push(p),
                _ => {}
            }
        }
    }
    out
}

#[test]
fn upload_sessions_expire_and_their_data_is_removed() {
    let s = Server::start_in_temp(&["--upload-expiry", "2"]);
    let mut c = s.client();
    let (loc, _) = session(&mut c, "expiry");
    let data = pseudo_random(100_003, 25);
    let r = c.patch(&loc, &[OCTET], &data);
    assert_status(&r, 202);
    let loc = location_path(must_header(&r, "location"));
    assert!(
        !files_of_size(&s.root, data.len() as u64).is_empty(),
        "the session's data should be under the root while the session lives"
    );
    let start = std::time::Instant::now();
    loop {
        let st = c.get(&loc);
        if st.status == 404 {
            assert_error(&st, 404, &["BLOB_UPLOAD_UNKNOWN"]);
            break;
        }
        assert_status(&st, 204);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(15),
            "the session did not expire within 15 s of --upload-expiry 2"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(1000),
        "the session expired after only {:?}",
        start.elapsed()
    );
    let d = sha256_digest(&data);
    let r = c.put(&with_query(&loc, &format!("digest={d}")), &[], b"");
    assert_error(&r, 404, &["BLOB_UPLOAD_UNKNOWN"]);
    // Its data goes too (allow the sweeper a moment).
    let start = std::time::Instant::now();
    loop {
        let left = files_of_size(&s.root, data.len() as u64);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "expired session data left behind: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_no_blob(&mut c, "expiry", &d);
}
