//! Operations: read-only mode, the connection limit, the header size limit and the three
//! separately configured timeouts (head, idle, body), against the real binary.

use crate::common::*;
use std::time::{Duration, Instant};

/// Pushes an image into a fresh root, then serves the same root read-only: everything reads
/// as before; every kind of write (upload start, chunk, completion, cancel, manifest PUT,
/// every DELETE) gets 405 UNSUPPORTED saying the registry is read-only, and nothing changes.
#[test]
fn read_only_mode_refuses_every_write_and_serves_every_read() {
    let root = tempfile::tempdir().unwrap();
    let s = Server::start_with(root.path(), &[]);
    let mut c = s.client();
    let layer = pseudo_random(300_000, 3);
    let (digest, manifest) = push_image(&mut c, "ro/app", "v1", &[&layer]);
    let layer_digest = sha256_digest(&layer);
    // A session begun before the switch, to be continued after it.
    let session = start_upload(&mut c, "ro/app");
    assert_eq!(s.stop().code(), Some(0));

    let s = Server::start_with(root.path(), &["--read-only"]);
    let mut c = s.client();
    let r = c.get("/v2/ro/app/manifests/v1");
    assert_status(&r, 200);
    assert!(r.body == manifest);
    assert_status(&c.head(&format!("/v2/ro/app/manifests/{digest}")), 200);
    let r = c.get(&format!("/v2/ro/app/blobs/{layer_digest}"));
    assert_status(&r, 200);
    assert!(r.body == layer);
    assert_status(&c.get("/v2/ro/app/tags/list"), 200);
    assert_status(&c.get("/v2/_catalog"), 200);
    assert_status(&c.get(&location_path(&session)), 204);

    let refused = |r: &Response, what: &str| {
        assert_error(r, 405, &["UNSUPPORTED"]);
        let msg = r.json()["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(msg.contains("read-only"), "{what}: message {msg:?}");
    };
    let blob = b"new bytes";
    let new_digest = sha256_digest(blob);
    let octet = [("Content-Type", "application/octet-stream")];
    refused(
        &c.post("/v2/ro/app/blobs/uploads/", &[], b""),
        "POST upload",
    );
    refused(
        &c.post(
            &format!("/v2/ro/app/blobs/uploads/?digest={new_digest}"),
            &octet,
            blob,
        ),
        "monolithic POST",
    );
    refused(
        &c.post(
            &format!("/v2/other/blobs/uploads/?mount={layer_digest}&from=ro/app"),
            &[],
            b"",
        ),
        "mount",
    );
    let loc = location_path(&session);
    refused(&c.patch(&loc, &octet, blob), "PATCH");
    refused(
        &c.put(
            &with_query(&loc, &format!("digest={new_digest}")),
            &octet,
            blob,
        ),
        "PUT completion",
    );
    refused(&c.delete(&loc), "DELETE upload");
    refused(
        &c.put(
            "/v2/ro/app/manifests/v2",
            &[("Content-Type", OCI_MANIFEST)],
            &manifest,
        ),
        "manifest PUT",
    );
    refused(&c.delete("/v2/ro/app/manifests/v1"), "tag DELETE");
    refused(
        &c.delete(&format!("/v2/ro/app/manifests/{digest}")),
        "manifest DELETE",
    );
    refused(
        &c.delete(&format!("/v2/ro/app/blobs/{layer_digest}")),
        "blob DELETE",
    );

    // Nothing changed.
    assert_status(&c.get("/v2/ro/app/manifests/v1"), 200);
    assert_status(&c.get(&loc), 204);
    assert_eq!(
        c.get("/v2/_catalog").json()["repositories"],
        serde_json::json!(["ro/app"])
    );
    assert_error(
        &c.get(&format!("/v2/ro/app/blobs/{new_digest}")),
        404,
        &["BLOB_UNKNOWN"],
    );
}

/// With `--max-connections 2`, a third connection is answered 503 UNAVAILABLE with
/// Retry-After and closed, without the client sending anything; the two admitted ones keep
/// working; once one of them closes, a new connection is served.
#[test]
fn connections_beyond_the_limit_get_503_and_the_limit_frees_up() {
    let s = Server::start_in_temp(&["--max-connections", "2"]);
    let mut a = s.client();
    let mut b = s.client();
    assert_status(&a.get("/v2/"), 200);
    assert_status(&b.get("/v2/"), 200);

    let mut third = s.client();
    third.set_timeout(Duration::from_secs(10));
    let r = third
        .try_read_response(false)
        .expect("a refused connection gets an answer, not a reset");
    assert_error(&r, 503, &["UNAVAILABLE"]);
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    assert_eq!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close")
    );
    third
        .wait_closed(Duration::from_secs(10))
        .expect("closed after the 503");

    // The admitted connections are unaffected.
    assert_status(&a.get("/v2/_catalog"), 200);
    assert_status(&b.get("/v2/_catalog"), 200);

    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = s.client();
        c.set_timeout(Duration::from_secs(5));
        let r = c.get("/v2/");
        if r.status == 200 {
            break;
        }
        assert_error(&r, 503, &["UNAVAILABLE"]);
        assert!(
            Instant::now() < deadline,
            "a slot never freed up after a connection closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_status(&b.get("/v2/"), 200);
}

/// `--max-header-size 4KiB`: a 5 KiB header block gets 431 (in the spec's error shape), a
/// 3 KiB one is served.
#[test]
fn the_header_size_limit_is_configurable() {
    let s = Server::start_in_temp(&["--max-header-size", "4KiB"]);
    let mut c = s.client();
    let big = "x".repeat(5 * 1024);
    c.send_raw(format!("GET /v2/ HTTP/1.1\r\nHost: h\r\nX-Big: {big}\r\n\r\n").as_bytes());
    let r = c.read_response(false);
    assert_eq!(r.status, 431, "{:?}", r.text());
    check_error_body(&r);

    let mut c = s.client();
    let ok = "y".repeat(3 * 1024);
    c.send_raw(format!("GET /v2/ HTTP/1.1\r\nHost: h\r\nX-Ok: {ok}\r\n\r\n").as_bytes());
    assert_status(&c.read_response(false), 200);
}

/// The head, idle and body timeouts are separate settings and each ends its own kind of
/// stall: with head 1 s, body 2 s and idle 6 s, a stalled head and a stalled body are closed
/// long before an idle connection is.
#[test]
fn head_idle_and_body_timeouts_apply_separately() {
    let s = Server::start_in_temp(&[
        "--head-timeout",
        "1s",
        "--body-timeout",
        "2s",
        "--idle-timeout",
        "6s",
    ]);
    let host = s.host();

    let mut head = s.client();
    head.send_raw(format!("GET /v2/ HTTP/1.1\r\nHost: {host}\r\nX-Partial: ").as_bytes());
    let t = time_to_close(&mut head, Duration::from_secs(20));
    assert!(
        t >= Duration::from_millis(900) && t < Duration::from_millis(5500),
        "stalled head closed after {t:?} (head timeout 1 s, idle 6 s)"
    );

    let mut body = s.client();
    let loc = start_upload(&mut body, "timeouts/body");
    body.send_raw(
        format!(
            "PATCH {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n",
            location_path(&loc)
        )
        .as_bytes(),
    );
    body.send_raw(&[7u8; 10]);
    let t = time_to_close(&mut body, Duration::from_secs(20));
    assert!(
        t >= Duration::from_millis(1800) && t < Duration::from_millis(3500),
        "stalled body closed after {t:?} (body timeout 2 s, idle 6 s)"
    );

    let mut idle = s.client();
    assert_status(&idle.get("/v2/"), 200);
    let t = idle
        .wait_closed(Duration::from_secs(30))
        .expect("an idle connection is closed");
    assert!(
        t >= Duration::from_millis(5500),
        "idle connection closed after {t:?} (idle timeout 6 s)"
    );
    assert_alive(&s);
}

/// Under an open-file limit of 256 (soft and hard, as `ulimit -n 256` leaves it), 400 distinct
/// blobs pushed and then pulled back on 8 connections at once all come back 200 with their
/// bytes, and a brand-new connection is answered afterwards: the open-blob cache is sized from
/// the limit and gives way to requests and connections instead of starving them.
#[test]
fn pulls_and_new_connections_survive_a_low_open_file_limit() {
    const BLOBS: usize = 400;
    const CONNS: usize = 8;
    let s = Server::start_in_temp_with_nofile(&[], 256);
    let blobs: Vec<Vec<u8>> = (0..BLOBS)
        .map(|i| pseudo_random(500 + i * 7, 1000 + i as u64))
        .collect();
    let digests: Vec<String> = blobs.iter().map(|b| sha256_digest(b)).collect();
    std::thread::scope(|scope| {
        for t in 0..CONNS {
            let (s, blobs) = (&s, &blobs);
            scope.spawn(move || {
                let mut c = s.client();
                for b in blobs.iter().skip(t).step_by(CONNS) {
                    push_blob(&mut c, "fd/many", b);
                }
            });
        }
    });
    let failures: Vec<String> = std::thread::scope(|scope| {
        let pulls: Vec<_> = (0..CONNS)
            .map(|t| {
                let (s, blobs, digests) = (&s, &blobs, &digests);
                scope.spawn(move || {
                    let mut c = s.client();
                    let mut bad = Vec::new();
                    for i in (t..BLOBS).step_by(CONNS) {
                        let r = c.get(&format!("/v2/fd/many/blobs/{}", digests[i]));
                        if r.status != 200 || r.body != blobs[i] {
                            bad.push(format!("blob {i}: {} {:?}", r.status, tail(&r.text(), 200)));
                        }
                    }
                    bad
                })
            })
            .collect();
        pulls.into_iter().flat_map(|p| p.join().unwrap()).collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {BLOBS} pulls failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let mut fresh = s.client();
    fresh.set_timeout(Duration::from_secs(10));
    assert_status(&fresh.get("/v2/"), 200);
    let r = fresh.get(&format!("/v2/fd/many/blobs/{}", digests[0]));
    assert_status(&r, 200);
    assert!(r.body == blobs[0]);
    let log = s.stderr();
    assert!(
        log.contains("open-file limit 256 (already the hard limit 256)"),
        "no line saying the open-file limit: {log}"
    );
}

/// Sends `bytes` on a clone of `c`'s connection, one every `every`, until they run out, a
/// write fails (the server closed) or the returned flag is set.
fn trickle(
    c: &mut Client,
    bytes: Vec<u8>,
    every: Duration,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut s = c.stream().try_clone().unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let t = std::thread::spawn(move || {
        for b in bytes {
            if flag.load(Ordering::Relaxed) || s.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(every);
        }
    });
    (stop, t)
}

/// `--body-timeout 2s --min-body-rate 1KiB`: a PATCH body trickled at a byte per 100 ms (each
/// byte is progress, so the timeout alone never ends it) is cut off after a window or so, as
/// is a chunked body trickling its framing; the session stays usable. A stalled body closes
/// after one timeout, not two. A slow body above the rate completes.
#[test]
fn a_body_slower_than_the_minimum_rate_is_cut_off() {
    use std::sync::atomic::Ordering;
    let s = Server::start_in_temp(&["--body-timeout", "2s", "--min-body-rate", "1KiB"]);
    let host = s.host();
    let blob = pseudo_random(1000, 41);

    // Content-Length, one data byte per 100 ms.
    let mut c = s.client();
    let loc = start_upload(&mut c, "rate/trickle");
    c.send_raw(
        format!(
            "PATCH {loc} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n"
        )
        .as_bytes(),
    );
    let (stop, t) = trickle(&mut c, blob.clone(), Duration::from_millis(100));
    let took = time_to_close(&mut c, Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "a 10 bytes/s body ended after {took:?} (window 2 s, minimum 1 KiB/s)"
    );
    // The session is still there, and takes the blob.
    let mut c = s.client();
    let st = c.get(&loc);
    assert_status(&st, 204);
    assert_eq!(
        must_header(&st, "range"),
        "0-0",
        "the cut-off chunk was not kept"
    );
    let done = c.put(
        &with_query(&loc, &format!("digest={}", sha256_digest(&blob))),
        &[("Content-Type", "application/octet-stream")],
        &blob,
    );
    assert_status(&done, 201);

    // Chunked, trickling an endless chunk extension: framing counts, and is not progress
    // enough either.
    let mut c = s.client();
    let loc = start_upload(&mut c, "rate/framing");
    c.send_raw(
        format!(
            "PATCH {loc} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n1;"
        )
        .as_bytes(),
    );
    let (stop, t) = trickle(&mut c, vec![b'x'; 1000], Duration::from_millis(100));
    let took = time_to_close(&mut c, Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "a trickled chunk extension ended after {took:?}"
    );

    // Stalled: closed after the body timeout, not twice it.
    let mut c = s.client();
    let loc = start_upload(&mut c, "rate/stall");
    c.send_raw(
        format!(
            "PATCH {loc} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n"
        )
        .as_bytes(),
    );
    c.send_raw(&blob[..10]);
    let took = time_to_close(&mut c, Duration::from_secs(20));
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_millis(3500),
        "a stalled body closed after {took:?} (body timeout 2 s)"
    );

    // 5 KiB/s over 5 s: slow, but above the minimum.
    let big = pseudo_random(25 * 1024, 42);
    let mut c = s.client();
    let loc = start_upload(&mut c, "rate/adequate");
    c.send_raw(
        format!(
            "PATCH {loc} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    );
    for piece in big.chunks(512) {
        c.send_raw(piece);
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = c.read_response(false);
    assert_status(&r, 202);
    assert_eq!(must_header(&r, "range"), format!("0-{}", big.len() - 1));
    let done = c.put(
        &with_query(&loc, &format!("digest={}", sha256_digest(&big))),
        &[],
        b"",
    );
    assert_status(&done, 201);
    assert_alive(&s);
}
