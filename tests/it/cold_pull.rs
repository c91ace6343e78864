//! Pulls that miss the local cache of an S3 node: the blob is sent while the one fetch from
//! S3 writes it, to every client that asked, byte-identical; a blob whose bytes in the bucket
//! no longer match its digest is cut short on the wire (never presented as whole) and stays
//! out of the cache.

use crate::common::*;
use crate::scale_out::Services;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const LEN: usize = 24 * 1024 * 1024 + 3;

/// The value of an unlabelled metric line `name value`.
fn metric(c: &mut Client, name: &str) -> f64 {
    let r = c.get("/metrics");
    assert_status(&r, 200);
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// A GET read to the end of the connection (the node closes it: `Connection: close`): the
/// status, the announced Content-Length and the body bytes that came.
fn raw_get(addr: std::net::SocketAddr, path: &str) -> (u16, usize, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&all[..end]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Content-Length");
    (status, len, all[end..].to_vec())
}

#[test]
fn a_cold_pull_streams_from_one_fetch_and_a_corrupt_object_is_cut_short() {
    let sv = Services::start("cold");
    let config = sv.config("node.yaml", "");
    let a = sv.node(&config, &sv.root("a"));
    let layer = generated(21, LEN);
    let other = generated(22, LEN);
    let (_, _) = push_image(&mut a.client(), "cold/app", "v1", &[&layer, &other]);
    let digest = sha256_digest(&layer);

    // A node with an empty cache: four clients at once, one read from S3.
    let b = sv.node(&config, &sv.root("b"));
    let path = format!("/v2/cold/app/blobs/{digest}");
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            let (addr, path) = (b.addr, path.clone());
            std::thread::spawn(move || raw_get(addr, &path))
        })
        .collect();
    for p in pulls {
        let (status, len, body) = p.join().unwrap();
        assert_eq!((status, len), (200, LEN));
        assert!(body == layer, "{} bytes, not the layer", body.len());
    }
    let mut cb = b.client();
    assert_eq!(
        metric(&mut cb, "ringyard_blob_cache_remote_read_bytes_total"),
        LEN as f64,
        "one read from S3 for four cold pulls"
    );
    // The fetch is indexed once synced and moved into the tree, just after the last byte went
    // out; from then on the layer is a hit.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while metric(&mut cb, "ringyard_blob_cache_bytes") < LEN as f64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the fetch never indexed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let hits = metric(&mut cb, "ringyard_blob_cache_hits_total");
    let r = cb.get(&path);
    assert_status(&r, 200);
    assert!(r.body == layer);
    assert_eq!(
        metric(&mut cb, "ringyard_blob_cache_hits_total"),
        hits + 1.0
    );

    // The other layer's object now holds other bytes of the same length.
    let hex = sha256_digest(&other)
        .strip_prefix("sha256:")
        .unwrap()
        .to_owned();
    let object = sv.s3().bucket_dir().join("registry/blobs/sha256").join(hex);
    std::fs::write(&object, generated(23, LEN)).unwrap();
    let c = sv.node(&config, &sv.root("c"));
    let path = format!("/v2/cold/app/blobs/{}", sha256_digest(&other));
    for _ in 0..2 {
        let (status, len, body) = raw_get(c.addr, &path);
        assert_eq!((status, len), (200, LEN));
        assert!(
            body.len() < LEN,
            "a corrupt object must not arrive whole ({} bytes)",
            body.len()
        );
    }
    let said = |s: &str| s.contains("from the remote backend failed: stored blob is corrupt");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !said(&c.stderr()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        said(&c.stderr()),
        "the node says why:\n{}",
        tail(&c.stderr(), 3000)
    );
}
