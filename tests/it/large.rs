//! Large transfers, streamed end to end, with the server's memory measured.
//!
//! **Memory bound: the server's peak resident set size (VmHWM in /proc/PID/status, which counts
//! anonymous memory and any file pages it has mapped, over the whole life of the process) stays
//! under 64 MiB** while it receives and serves a 4 GiB blob, and while it receives and serves a
//! 1 GiB blob sent as 16 chunks of 64 MiB. "Stream, never buffer a blob": a few chunk buffers
//! per connection, whatever the blob size. VmRSS, RssAnon and RssFile are also sampled every
//! 20 ms so that a failure says which kind of memory grew.
//!
//! The bodies come from the harness's fast deterministic generator (`fill_generated`: splitmix64
//! over the word index, so any offset can be regenerated) in 1 MiB buffers, are written with raw `std::net::TcpStream` (the
//! harness client holds bodies in memory), and are hashed on the client while they are sent and
//! while they are received.

use crate::common::*;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// The bound stated above.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// The two tests each drive one server at full speed on a 2-core machine; running them one at
/// a time keeps their timing (and their memory readings) independent.
static SERIAL: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------------
// memory sampling

#[derive(Debug, Default, Clone, Copy)]
struct Mem {
    vm_rss: u64,
    rss_anon: u64,
    rss_file: u64,
    vm_hwm: u64,
}

fn read_mem(pid: u32) -> Option<Mem> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Mem {
        vm_rss: field("VmRSS:"),
        rss_anon: field("RssAnon:"),
        rss_file: field("RssFile:"),
        vm_hwm: field("VmHWM:"),
    })
}

struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Mem, usize)>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = Mem::default();
            let mut samples = 0;
            while !s2.load(Ordering::Relaxed) {
                if let Some(m) = read_mem(pid) {
                    peak.vm_rss = peak.vm_rss.max(m.vm_rss);
                    peak.rss_anon = peak.rss_anon.max(m.rss_anon);
                    peak.rss_file = peak.rss_file.max(m.rss_file);
                    peak.vm_hwm = peak.vm_hwm.max(m.vm_hwm);
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (peak, samples)
        });
        Sampler { stop, handle }
    }

    /// Stops sampling and asserts the bound on the kernel's peak (VmHWM) and on the sampled peak.
    fn finish_and_check(self, server: &Server, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let (peak, samples) = self.handle.join().unwrap();
        let now = read_mem(server.pid()).expect("server is still running");
        let hwm = now.vm_hwm.max(peak.vm_hwm);
        eprintln!(
            "{what}: server VmHWM {} KiB; sampled peaks ({samples} samples): VmRSS {} KiB, RssAnon {} KiB, RssFile {} KiB",
            hwm, peak.vm_rss, peak.rss_anon, peak.rss_file
        );
        assert!(samples > 10, "{what}: too few memory samples ({samples})");
        assert!(
            hwm < RSS_LIMIT_KIB && peak.vm_rss < RSS_LIMIT_KIB,
            "{what}: server peak RSS over the {} KiB bound: VmHWM {} KiB; sampled peaks VmRSS {} KiB, \
             RssAnon {} KiB (heap, buffers), RssFile {} KiB (mapped file pages)",
            RSS_LIMIT_KIB,
            hwm,
            peak.vm_rss,
            peak.rss_anon,
            peak.rss_file
        );
    }
}

// ---------------------------------------------------------------------------------------------
// raw HTTP

/// A connection for one streamed exchange (generous timeouts: a 4 GiB body takes a while).
fn connect(server: &Server) -> TcpStream {
    connect_raw(server.addr, Duration::from_secs(300)).expect("connect")
}

/// Writes a request head; the body, if any, is streamed after it.
fn send_head(
    s: &mut TcpStream,
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) {
    let head = request_bytes(&server.host(), method, path, headers, b"");
    s.write_all(&head).expect("sending a request head");
}

fn read_head(s: &mut TcpStream) -> RawHead {
    read_raw_head(s).expect("reading the response head")
}

/// GET the blob streaming, hash it, compare length and digest; returns the elapsed time.
fn get_and_verify(server: &Server, repo: &str, digest: &str, size: u64) -> Duration {
    let t = Instant::now();
    let mut s = connect(server);
    send_head(
        &mut s,
        server,
        "GET",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[("Connection", "close")],
    );
    let h = read_head(&mut s);
    assert_eq!(h.status, 200, "GET blob: {:?}", h.headers);
    assert_eq!(h.content_length(), Some(size), "GET Content-Length");
    let mut hasher = Sha256::new();
    let mut got = h.rest.len() as u64;
    hasher.update(&h.rest);
    let mut buf = vec![0u8; GEN_PIECE];
    while got < size {
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("GET body read failed after {got} bytes: {e}"));
        assert!(n > 0, "GET body ended after {got} of {size} bytes");
        hasher.update(&buf[..n]);
        got += n as u64;
    }
    assert_eq!(got, size, "GET returned more bytes than Content-Length");
    assert_eq!(finish_digest(hasher), digest, "GET body digest");
    t.elapsed()
}

fn head_length(server: &Server, repo: &str, digest: &str) -> Option<u64> {
    let r = server.client().head(&format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(r.status, 200, "HEAD blob");
    r.header("content-length").and_then(|v| v.parse().ok())
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// tests

/// A 4 GiB (4 * 1024^3 bytes) blob as one monolithic PUT (POST a session, then PUT with
/// `?digest=` and the whole body, Content-Length 4294967296, streamed from the generator and
/// hashed while sent), then HEAD (the 64-bit length), a streamed GET hashed while received, and
/// a Range GET of the last MiB. The server's peak RSS stays under 64 MiB throughout.
#[test]
fn four_gib_monolithic_put_and_get_in_bounded_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let size: u64 = 4 * GIB;
    let seed = 0x5EED_0004;
    let repo = "large/four-gib";
    let t = Instant::now();
    let digest = generated_digest(seed, size);
    eprintln!("generator digest of 4 GiB in {:?}", t.elapsed());

    let server = Server::start();
    let sampler = Sampler::start(server.pid());
    let loc = start_upload(&mut server.client(), repo);

    let t = Instant::now();
    let mut s = connect(&server);
    send_head(
        &mut s,
        &server,
        "PUT",
        &with_query(&loc, &format!("digest={digest}")),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", &size.to_string()),
            ("Connection", "close"),
        ],
    );
    let mut h = Sha256::new();
    send_generated(&mut s, seed, 0, size, &mut h);
    assert_eq!(finish_digest(h), digest, "the generator is deterministic");
    let head = read_head(&mut s);
    let body = head
        .read_body(&mut s, false)
        .expect("reading the PUT response body");
    assert_eq!(
        head.status,
        201,
        "4 GiB PUT: {} {}\n--- server stderr ---\n{}",
        head.status,
        String::from_utf8_lossy(&body),
        server.stderr()
    );
    assert_eq!(head.header("docker-content-digest"), Some(digest.as_str()));
    let put_time = t.elapsed();
    eprintln!(
        "4 GiB PUT in {put_time:?} ({:.0} MiB/s)",
        mbps(size, put_time)
    );
    drop(s);

    assert_eq!(
        head_length(&server, repo, &digest),
        Some(size),
        "HEAD Content-Length of the 4 GiB blob"
    );
    let get_time = get_and_verify(&server, repo, &digest, size);
    eprintln!(
        "4 GiB GET in {get_time:?} ({:.0} MiB/s)",
        mbps(size, get_time)
    );

    // the last MiB by Range: offsets beyond 32 bits of the byte count
    let mut s = connect(&server);
    let (a, b) = (size - MIB, size - 1);
    send_head(
        &mut s,
        &server,
        "GET",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[
            ("Range", &format!("bytes={a}-{b}")),
            ("Connection", "close"),
        ],
    );
    let head = read_head(&mut s);
    assert_eq!(head.status, 206, "Range GET of the last MiB");
    assert_eq!(
        head.header("content-range"),
        Some(format!("bytes {a}-{b}/{size}").as_str())
    );
    let body = head
        .read_body(&mut s, false)
        .expect("reading the Range body");
    let mut want = vec![0u8; MIB as usize];
    fill_generated(seed, a, &mut want);
    assert!(
        body == want,
        "Range GET of the last MiB returned other bytes"
    );

    sampler.finish_and_check(&server, "4 GiB monolithic PUT + GET");
    assert!(server.stop().success());
}

/// A 1 GiB blob in sixteen 64 MiB PATCHes (Content-Range, each streamed and hashed while sent,
/// each answered 202 with `Range: 0-<last>`), completed by a PUT with only `?digest=`, then
/// streamed back and compared. The server's peak RSS stays under 64 MiB throughout, although
/// each chunk alone is that large.
#[test]
fn one_gib_in_64_mib_patches_in_bounded_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let size: u64 = GIB;
    let chunk: u64 = 64 * MIB;
    let seed = 0x5EED_0001;
    let repo = "large/chunked";
    let server = Server::start();
    let sampler = Sampler::start(server.pid());
    let mut loc = start_upload(&mut server.client(), repo);
    let mut h = Sha256::new();
    let t = Instant::now();
    let mut off = 0;
    while off < size {
        let n = chunk.min(size - off);
        let mut s = connect(&server);
        send_head(
            &mut s,
            &server,
            "PATCH",
            &loc,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &format!("{}-{}", off, off + n - 1)),
                ("Content-Length", &n.to_string()),
                ("Connection", "close"),
            ],
        );
        send_generated(&mut s, seed, off, n, &mut h);
        let head = read_head(&mut s);
        let body = head
            .read_body(&mut s, false)
            .expect("reading the PATCH response body");
        assert_eq!(
            head.status,
            202,
            "PATCH {off}-{}: {}\n--- server stderr ---\n{}",
            off + n - 1,
            String::from_utf8_lossy(&body),
            server.stderr()
        );
        assert_eq!(
            head.header("range"),
            Some(format!("0-{}", off + n - 1).as_str()),
            "Range after PATCH"
        );
        loc = location_path(head.header("location").expect("Location on PATCH"));
        off += n;
    }
    let digest = finish_digest(h);
    let mut c = server.client();
    let r = c.put(
        &with_query(&loc, &format!("digest={digest}")),
        &[("Content-Length", "0")],
        b"",
    );
    assert_eq!(r.status, 201, "PUT to complete: {}", r.text());
    let up = t.elapsed();
    eprintln!(
        "1 GiB in 16 PATCHes in {up:?} ({:.0} MiB/s)",
        mbps(size, up)
    );
    assert_eq!(
        digest,
        generated_digest(seed, size),
        "the generator is deterministic"
    );

    assert_eq!(head_length(&server, repo, &digest), Some(size));
    let get_time = get_and_verify(&server, repo, &digest, size);
    eprintln!(
        "1 GiB GET in {get_time:?} ({:.0} MiB/s)",
        mbps(size, get_time)
    );
    sampler.finish_and_check(&server, "1 GiB chunked PATCH + GET");
    assert!(server.stop().success());
}

/// Evicts clean page-cache pages, so that the next reads of a blob come from the disk. Only
/// root may; elsewhere the blob is still cold in the usual case (uploads are written with
/// O_DIRECT and never enter the page cache).
fn drop_caches() {
    let _ = std::process::Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Pushes `size` generator bytes for `seed` as one monolithic PUT; returns the digest.
fn put_generated(server: &Server, repo: &str, seed: u64, size: u64) -> String {
    let digest = generated_digest(seed, size);
    let loc = start_upload(&mut server.client(), repo);
    let mut s = connect(server);
    send_head(
        &mut s,
        server,
        "PUT",
        &with_query(&loc, &format!("digest={digest}")),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", &size.to_string()),
            ("Connection", "close"),
        ],
    );
    send_generated(&mut s, seed, 0, size, &mut Sha256::new());
    let head = read_head(&mut s);
    assert_eq!(head.status, 201, "PUT of {size} bytes");
    digest
}

/// GETs bytes `[a, b]` of the blob by Range and compares them, piece by piece as they arrive,
/// with the generator's.
fn get_range_and_compare(server: &Server, repo: &str, digest: &str, seed: u64, a: u64, b: u64) {
    let mut s = connect(server);
    send_head(
        &mut s,
        server,
        "GET",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[
            ("Range", &format!("bytes={a}-{b}")),
            ("Connection", "close"),
        ],
    );
    let head = read_head(&mut s);
    assert_eq!(head.status, 206, "Range GET {a}-{b}");
    let len = b + 1 - a;
    assert_eq!(head.content_length(), Some(len));
    let mut got = head.rest.clone();
    let mut at = 0u64;
    let mut want = vec![0u8; GEN_PIECE];
    let mut buf = vec![0u8; GEN_PIECE];
    loop {
        let n = got.len().min(want.len());
        fill_generated(seed, a + at, &mut want[..n]);
        assert!(
            got[..n] == want[..n],
            "Range GET {a}-{b}: other bytes at {} (within {at}..{})",
            a + at,
            at + n as u64
        );
        at += n as u64;
        got.drain(..n);
        if at == len {
            break;
        }
        if got.is_empty() {
            let r = s
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("Range GET {a}-{b}: read failed at {at}: {e}"));
            assert!(r > 0, "Range GET {a}-{b} ended after {at} of {len} bytes");
            got.extend_from_slice(&buf[..r]);
        }
    }
    assert_eq!(s.read(&mut buf).ok(), Some(0), "bytes after the Range body");
}

/// A blob not in the page cache (just pushed, caches dropped when root) goes out by direct
/// reads of aligned 4 MiB spans: ranges starting and ending off block boundaries, one within a
/// single read and one across many, a range to the end of a file whose size is not a whole
/// number of blocks, and the whole blob, all return exactly the stored bytes.
#[test]
fn cold_blob_ranges_and_whole_return_the_right_bytes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let size: u64 = 300 * MIB + 1234;
    let seed = 0x5EED_C01D;
    let repo = "large/cold";
    let server = Server::start();
    let digest = put_generated(&server, repo, seed, size);
    let ranges = [
        (37 * MIB + 123, 250 * MIB - 77),
        (100 * MIB + 5, 103 * MIB + 9),
        (size - 20 * MIB - 3, size - 1),
    ];
    for (a, b) in ranges {
        drop_caches();
        get_range_and_compare(&server, repo, &digest, seed, a, b);
    }
    drop_caches();
    get_and_verify(&server, repo, &digest, size);
    // Part of it resident (a buffered read of the middle of the blob file): the send moves
    // from direct reads to sendfile and back.
    drop_caches();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let path = server
        .root
        .join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
    let mut f = std::fs::File::open(&path).expect("the blob file");
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(100 * MIB)).unwrap();
    let mut middle = vec![0u8; 40 * MIB as usize];
    f.read_exact(&mut middle).unwrap();
    get_and_verify(&server, repo, &digest, size);
    assert!(server.stop().success());
}
