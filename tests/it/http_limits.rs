//! Limits and malformed input: oversized header blocks, garbage, bad framing, stalled requests.
//! After each, the server must still serve other connections.

use crate::common::*;
use std::time::{Duration, Instant};

#[test]
fn header_block_over_64_kib_gets_431() {
    let s = Server::start();
    let mut c = s.client();
    c.set_timeout(Duration::from_secs(15));
    let big = "x".repeat(66 * 1024);
    let req = format!(
        "GET /v2/ HTTP/1.1\r\nHost: {}\r\nX-Big: {big}\r\n\r\n",
        s.host()
    );
    let _ = c.try_send_raw(req.as_bytes());
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("expected a 431 answer to a 66 KiB header block: {e}"));
    assert_eq!(r.status, 431, "{:?}", r.text());
    check_error_body(&r);
    assert_alive(&s);
}

#[test]
fn many_headers_spread_over_64_kib_get_431() {
    let s = Server::start();
    let mut c = s.client();
    c.set_timeout(Duration::from_secs(15));
    let mut req = format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\n", s.host());
    for i in 0..700 {
        req.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(100)));
    }
    req.push_str("\r\n");
    assert!(req.len() > 64 * 1024);
    let _ = c.try_send_raw(req.as_bytes());
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("expected a 431 answer: {e}"));
    assert_eq!(r.status, 431, "{:?}", r.text());
    check_error_body(&r);
    assert_alive(&s);
}

#[test]
fn a_large_but_acceptable_header_block_is_served() {
    let s = Server::start();
    let mut c = s.client();
    let big = "y".repeat(30 * 1024);
    let r = c.request("GET", "/v2/", &[("X-Big", &big)], b"");
    assert_status(&r, 200);
    // Many small headers within the limit: either served or refused cleanly, never a crash.
    let mut req = format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\n", s.host());
    for i in 0..150 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let mut c = s.client();
    c.send_raw(req.as_bytes());
    let r = c.read_response(false);
    assert!(
        r.status == 200 || r.status == 431,
        "150 headers: {}",
        r.status
    );
    if r.status != 200 {
        check_error_body(&r);
    }
    assert_alive(&s);
}

#[track_caller]
fn assert_400_for(s: &Server, raw: &[u8]) {
    let mut c = s.client();
    c.set_timeout(Duration::from_secs(10));
    let _ = c.try_send_raw(raw);
    let r = c.try_read_response(false).unwrap_or_else(|e| {
        panic!(
            "no 400 answer to malformed request {:?}: {e}",
            String::from_utf8_lossy(raw)
        )
    });
    assert_eq!(
        r.status,
        400,
        "malformed request {:?}: {:?}",
        String::from_utf8_lossy(raw),
        r.text()
    );
    check_error_body(&r);
    // A malformed request leaves the stream in an unknown state: the server closes it.
    c.wait_closed(Duration::from_secs(5))
        .expect("connection kept open after a malformed request");
}

#[test]
fn garbage_request_lines_get_400_and_the_server_carries_on() {
    let s = Server::start();
    assert_400_for(&s, b"HELLO\r\n\r\n");
    assert_400_for(&s, b"GET\r\n\r\n");
    assert_400_for(&s, b"GET /v2/ HTTP/1.1 extra\r\nHost: x\r\n\r\n");
    assert_400_for(&s, b"\x00\x01\x02\x03\xff\xfe\r\n\r\n");
    assert_400_for(&s, b"GET /v2/ HTTP/1.1\r\nNo colon in this header\r\n\r\n");
    assert_400_for(&s, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n");
    assert_400_for(&s, b"G\xc3\xa9T /v2/ HTTP/1.1\r\n\r\n");
    assert_alive(&s);
}

#[test]
fn bad_request_framing_gets_400() {
    let s = Server::start();
    let h = s.host();
    assert_400_for(
        &s,
        format!("POST /v2/x/blobs/uploads/ HTTP/1.1\r\nHost: {h}\r\nContent-Length: abc\r\n\r\n")
            .as_bytes(),
    );
    assert_400_for(
        &s,
        format!("POST /v2/x/blobs/uploads/ HTTP/1.1\r\nHost: {h}\r\nContent-Length: -1\r\n\r\n")
            .as_bytes(),
    );
    assert_400_for(
        &s,
        format!(
            "POST /v2/x/blobs/uploads/ HTTP/1.1\r\nHost: {h}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
        )
        .as_bytes(),
    );
    assert_400_for(
        &s,
        format!(
            "POST /v2/x/blobs/uploads/?digest={} HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            sha256_digest(b"abc")
        )
        .as_bytes(),
    );
    assert_400_for(
        &s,
        format!(
            "POST /v2/x/blobs/uploads/ HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: gzip\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_alive(&s);
}

#[test]
fn unsupported_http_versions_are_refused() {
    let s = Server::start();
    for line in [
        "GET /v2/ HTTP/2.0\r\n\r\n",
        "GET /v2/ HTTP/9.9\r\n\r\n",
        "GET /v2/ FTP/1.1\r\n\r\n",
    ] {
        let mut c = s.client();
        c.set_timeout(Duration::from_secs(10));
        c.send_raw(line.as_bytes());
        match c.try_read_response(false) {
            Ok(r) => assert!(
                r.status == 400 || r.status == 505,
                "{line:?}: expected 400 or 505, got {}",
                r.status
            ),
            Err(e) => panic!("{line:?}: no answer: {e}"),
        }
    }
    assert_alive(&s);
}

#[test]
fn random_bytes_never_crash_the_server() {
    let s = Server::start();
    for seed in 0..20u64 {
        let mut c = s.client();
        c.set_timeout(Duration::from_secs(10));
        let mut junk = pseudo_random(2000 + seed as usize * 37, seed + 1000);
        junk.extend_from_slice(b"\r\n\r\n");
        let _ = c.try_send_raw(&junk);
        c.shutdown_write();
        if let Ok(r) = c.try_read_response(false) {
            assert!((400..500).contains(&r.status), "junk {seed}: {}", r.status);
        }
    }
    // Half a request, then close.
    for cut in [1, 5, 16, 30] {
        let mut c = s.client();
        let req = format!(
            "POST /v2/x/blobs/uploads/ HTTP/1.1\r\nHost: {}\r\n",
            s.host()
        );
        let _ = c.try_send_raw(&req.as_bytes()[..cut.min(req.len())]);
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_alive(&s);
    let mut c = s.client();
    push_blob(&mut c, "still/works", b"after the junk");
}

fn with_timeout_server() -> Server {
    Server::start_in_temp(&["--request-timeout", "2"])
}

#[test]
fn a_request_that_stalls_mid_head_is_closed_after_the_timeout() {
    let s = with_timeout_server();
    let mut c = s.client();
    let start = Instant::now();
    c.send_raw(format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\nX-Partial: ", s.host()).as_bytes());
    // The server may answer 408 before closing; either way the connection ends.
    c.set_timeout(Duration::from_secs(15));
    match c.try_read_response(false) {
        Ok(r) => {
            assert_eq!(
                r.status,
                408,
                "a stalled request got {} {:?}",
                r.status,
                r.text()
            );
            check_error_body(&r);
            c.wait_closed(Duration::from_secs(5))
                .expect("closed after 408");
        }
        Err(e) => assert!(e.contains("closed"), "expected a close, got: {e}"),
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(10),
        "closed after {elapsed:?} with --request-timeout 2"
    );
    assert_alive(&s);
}

#[test]
fn a_request_that_stalls_mid_body_is_closed_after_the_timeout() {
    let s = with_timeout_server();
    let mut c = s.client();
    let loc = start_upload(&mut c, "stall");
    let start = Instant::now();
    c.send_raw(
        format!(
            "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n",
            s.host()
        )
        .as_bytes(),
    );
    c.send_raw(&[1u8; 1000]);
    // The server may answer 408 (or 400) before closing; either way the connection ends.
    time_to_close(&mut c, Duration::from_secs(15));
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(10),
        "closed after {elapsed:?} with --request-timeout 2"
    );
    // The partial chunk was not committed as if complete.
    let mut c = s.client();
    let st = c.get(&loc);
    if st.status == 204 {
        assert_ne!(must_header(&st, "range"), "0-99999");
    }
    assert_alive(&s);
}

#[test]
fn stalled_connections_do_not_block_other_clients() {
    let s = with_timeout_server();
    // More stalled connections than workers.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut c = s.client();
        c.send_raw(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n");
        stalled.push(c);
    }
    let start = Instant::now();
    for _ in 0..8 {
        let mut c = s.client();
        c.set_timeout(Duration::from_secs(5));
        assert_status(&c.get("/v2/"), 200);
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "requests waited for stalled connections: {:?}",
        start.elapsed()
    );
    drop(stalled);
}

#[test]
fn an_idle_keep_alive_connection_is_reused_or_closed_cleanly() {
    let s = with_timeout_server();
    let mut c = s.client();
    assert_status(&c.get("/v2/"), 200);
    std::thread::sleep(Duration::from_secs(3));
    // Whether the server closed the idle connection or not, the next request succeeds (the
    // client reconnects when the server closed it).
    assert_status(&c.get("/v2/"), 200);
}

#[test]
fn survives_everything_at_once() {
    let s = Server::start();
    let h = s.host();
    let mut threads = Vec::new();
    let addr = s.addr;
    for i in 0..4u64 {
        let h = h.clone();
        threads.push(std::thread::spawn(move || {
            for j in 0..10u64 {
                let mut c = Client::connect(addr);
                c.set_timeout(Duration::from_secs(10));
                match (i + j) % 4 {
                    0 => {
                        let _ = c.try_send_raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
                    }
                    1 => {
                        let _ = c.try_send_raw(
                            format!(
                                "GET /v2/ HTTP/1.1\r\nHost: {h}\r\nX: {}\r\n\r\n",
                                "z".repeat(70_000)
                            )
                            .as_bytes(),
                        );
                        let _ = c.try_read_response(false);
                    }
                    2 => {
                        let d = sha256_digest(&j.to_le_bytes());
                        let r = c.post(
                            &format!("/v2/mix/blobs/uploads/?digest={d}"),
                            &[],
                            &j.to_le_bytes(),
                        );
                        assert_eq!(r.status, 201);
                    }
                    _ => {
                        let r = c.get("/v2/_catalog");
                        assert_eq!(r.status, 200);
                    }
                }
            }
        }));
    }
    for t in threads {
        t.join().expect("client thread");
    }
    assert_alive(&s);
}
