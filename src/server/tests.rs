//! The real request loop ([`serve`]) and handlers over a real registry on a temporary
//! directory, driven in process through the in-memory transport: no socket, no server
//! process. File bodies take the transport's default file send (read and write), the path
//! TLS will take.

use super::connection::{serve, ConnCtx, ConnSettings};
use crate::api::{Limits, Registry, Site};
use crate::blocking::Pool;
use crate::http::memory::{self, Peer};
use crate::meta::Meta;
use crate::observe::connections::Connections;
use crate::observe::health::{Readiness, Timeouts};
use crate::observe::Ops;
use crate::oci::digest::Digest;
use crate::signal::LocalSignal;
use crate::store::blobs::BlobStore;
use crate::store::uploads::Uploads;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

fn registry(root: &Path) -> Registry {
    let meta = Meta::open_sqlite(&root.join("meta.db")).unwrap();
    for dir in BlobStore::top_dirs(root) {
        std::fs::create_dir_all(dir).unwrap();
    }
    let pool = Pool::new(2, "test-fs").unwrap();
    let blobs = BlobStore::at(root, pool.clone());
    let uploads = Uploads::new(blobs.staging_dir().to_path_buf(), Duration::from_secs(3600));
    let readiness =
        Readiness::new(root.to_path_buf(), true, meta.clone(), Timeouts::default()).unwrap();
    Registry {
        ops: Ops::new(true, false, Arc::new(Connections::new(1)), readiness),
        meta,
        blobs,
        uploads,
        pool,
        hashing: Pool::new(1, "test-hash").unwrap(),
        limits: Limits::default(),
        jobs: Default::default(),
        auth: None,
        immutable: Default::default(),
        gc: Default::default(),
        retention: Default::default(),
        quotas: Default::default(),
        scanning: None,
    }
}

fn context(reg: Arc<Registry>) -> Rc<ConnCtx> {
    let timeout = Duration::from_secs(10);
    Rc::new(ConnCtx {
        obs: reg.ops.worker(0),
        reg,
        settings: ConnSettings {
            max_head: 64 * 1024,
            idle_timeout: timeout,
            head_timeout: timeout,
            body_timeout: timeout,
            min_body_rate: 0,
        },
        shutdown: LocalSignal::new(),
        tls: None,
    })
}

/// One response as it arrived: the raw head (status line included) and the body.
struct Answer {
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn status_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A whole response at the start of `bytes`, framed by its Content-Length (every answer of
/// ours carries one, except 204s, which have no body).
fn parse_answer(bytes: &[u8]) -> Option<(Answer, usize)> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8(bytes[..head_end].to_vec()).unwrap();
    let mut answer = Answer {
        head,
        body: Vec::new(),
    };
    let len: usize = answer
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    let end = head_end + len;
    if bytes.len() < end {
        return None;
    }
    answer.body = bytes[head_end..end].to_vec();
    Some((answer, end))
}

async fn exchange(peer: &Peer, request: &[u8]) -> Answer {
    peer.send(request);
    peer.receive(parse_answer)
        .await
        .expect("the server closed without a whole answer")
}

fn request(method: &str, target: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {target} HTTP/1.1\r\nHost: test\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[test]
fn a_blob_is_pushed_and_pulled_through_the_request_loop_without_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(registry(dir.path()));
    // Larger than one read-and-write chunk and than the inline limit, so that the GETs go
    // through the transport's file send, several chunks of it.
    let blob: Vec<u8> = (0..600 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = Digest::sha256_of(&blob);
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let (transport, peer) = memory::pair();
        let server = monoio::spawn(serve(transport, None, Site::Registry, context(reg.clone())));

        let a = exchange(
            &peer,
            &request("POST", "/v2/lib/app/blobs/uploads/", "", b""),
        )
        .await;
        assert_eq!(a.status_line(), "HTTP/1.1 202 Accepted");
        assert!(a.header("x-request-id").is_some(), "{}", a.head);
        let location = a.header("location").unwrap().to_owned();
        assert!(
            location.starts_with("/v2/lib/app/blobs/uploads/"),
            "{location}"
        );

        let put = format!("{location}?digest={digest}");
        let a = exchange(&peer, &request("PUT", &put, "", &blob)).await;
        assert_eq!(a.status_line(), "HTTP/1.1 201 Created", "{}", a.head);
        assert_eq!(a.header("docker-content-digest"), Some(digest.as_str()));
        let blob_url = format!("/v2/lib/app/blobs/{digest}");
        assert_eq!(a.header("location"), Some(blob_url.as_str()));

        let a = exchange(&peer, &request("GET", &blob_url, "", b"")).await;
        assert_eq!(a.status_line(), "HTTP/1.1 200 OK");
        assert_eq!(a.header("content-length"), Some("614400"));
        assert_eq!(a.header("content-type"), Some("application/octet-stream"));
        assert_eq!(a.header("docker-content-digest"), Some(digest.as_str()));
        assert!(a.body == blob, "the body differs from the blob pushed");

        // A range from the middle, on a connection asked to close after it.
        let range = "Range: bytes=1000-400999\r\nConnection: close\r\n";
        let a = exchange(&peer, &request("GET", &blob_url, range, b"")).await;
        assert_eq!(a.status_line(), "HTTP/1.1 206 Partial Content");
        assert_eq!(a.header("content-range"), Some("bytes 1000-400999/614400"));
        assert_eq!(a.header("connection"), Some("close"));
        assert!(
            a.body == blob[1000..401000],
            "the range differs from the blob's"
        );

        // After that answer the server half-closes, writing nothing more, and lingers until
        // the client's end.
        let more = peer.receive(|b| (!b.is_empty()).then_some(((), 0))).await;
        assert!(more.is_none(), "bytes after the last answer");
        peer.close();
        server.await;
    });
    reg.meta.close();
}
