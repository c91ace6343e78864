//! The S3 client under faults, against a real S3 server (s3s-fs) behind a small proxy of
//! plain threads that this test steers: it passes bytes through, or closes the next
//! connections at once, accepts and never answers, cuts an answer after so many bytes,
//! answers `503 SlowDown` itself, terminates TLS (a CA made by rcgen), or stops listening
//! altogether and starts again on the same port (S3 stopped and restarted, as the client
//! sees it: refused connections, and its parked ones reset).

use super::{Retry, S3Backend, S3Config, Timeouts};
use crate::oci::digest::Digest;
use crate::store::backend::{BlobBackend, Whole};
use crate::store::Error;
use crate::testing::s3::{run, S3Server};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pass,
    /// Closed as soon as accepted.
    Close,
    /// Read from, never answered.
    Silent,
    /// Passed through, but the answer cut after this many bytes.
    Cut(usize),
    /// Answered `503 SlowDown` by the proxy.
    SlowDown,
}

struct Shared {
    /// The mode of the next `n` connections; `Pass` after them.
    next: Mutex<(Mode, usize)>,
    accepted: AtomicUsize,
    stopping: AtomicBool,
    live: Mutex<Vec<TcpStream>>,
}

struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on 127.0.0.1:`port` (0: any), forwarding to `upstream`; TLS with `tls`.
    fn start(upstream: SocketAddr, port: u16, tls: Option<Arc<rustls::ServerConfig>>) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("the proxy's port");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            next: Mutex::new((Mode::Pass, 0)),
            accepted: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let mode = {
                    let mut next = s.next.lock().unwrap();
                    if next.1 > 0 {
                        next.1 -= 1;
                        next.0
                    } else {
                        Mode::Pass
                    }
                };
                s.live.lock().unwrap().push(client.try_clone().unwrap());
                let tls = tls.clone();
                std::thread::spawn(move || serve(client, upstream, mode, tls));
            }
        });
        Proxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// The next `n` connections get `mode`.
    fn next(&self, mode: Mode, n: usize) {
        *self.shared.next.lock().unwrap() = (mode, n);
    }

    fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Stops listening and resets every connection; the port is free to listen on again.
    fn stop(&mut self) {
        if self.accept.is_none() {
            return;
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
        for s in self.shared.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One proxied connection.
fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    mode: Mode,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    match mode {
        Mode::Close => {
            let _ = client.shutdown(Shutdown::Both);
        }
        Mode::Silent => {
            let mut sink = [0u8; 4096];
            let mut client = client;
            while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
        }
        Mode::SlowDown => {
            let mut client = client;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && matches!(client.read(&mut byte), Ok(1)) {
                head.push(byte[0]);
            }
            let body = "<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>";
            let answer = format!(
                "HTTP/1.1 503 Slow Down\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(answer.as_bytes());
        }
        Mode::Pass | Mode::Cut(_) => {
            let Ok(server) = TcpStream::connect(upstream) else {
                return;
            };
            match tls {
                Some(config) => pump_tls(client, server, config),
                None => pump(client, server, mode),
            }
        }
    }
}

/// Both directions of a plain connection; the answer cut after `Cut(n)` bytes.
fn pump(client: TcpStream, server: TcpStream, mode: Mode) {
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_in, &mut s_out);
        let _ = s_out.shutdown(Shutdown::Write);
    });
    let limit = match mode {
        Mode::Cut(n) => n as u64,
        _ => u64::MAX,
    };
    let (mut s_in, mut c_out) = (server, client);
    let _ = std::io::copy(&mut (&mut s_in).take(limit), &mut c_out);
    let _ = c_out.shutdown(Shutdown::Both);
    let _ = s_in.shutdown(Shutdown::Both);
    let _ = up.join();
}

/// Both directions of a TLS connection, terminated here: one thread polling each side.
fn pump_tls(client: TcpStream, mut server: TcpStream, config: Arc<rustls::ServerConfig>) {
    let poll = Some(Duration::from_millis(2));
    client.set_read_timeout(poll).unwrap();
    server.set_read_timeout(poll).unwrap();
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, client);
    let mut buf = vec![0u8; 64 * 1024];
    let waiting =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if server.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if waiting(&e) => {}
            Err(_) => break,
        }
        match server.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tls.write_all(&buf[..n]).and_then(|_| tls.flush()).is_err() {
                    break;
                }
            }
            Err(e) if waiting(&e) => {}
            Err(_) => break,
        }
    }
    let _ = tls.sock.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

/// s3s-fs's address.
fn upstream(server: &S3Server) -> SocketAddr {
    server
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

/// The configuration of `server`, reached through the proxy on `port` with short timeouts.
fn through(server: &S3Server, port: u16) -> S3Config {
    S3Config {
        endpoint: format!("http://127.0.0.1:{port}"),
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_millis(500),
            idle: Duration::from_millis(500),
        },
        retry: Retry {
            max_tries: 3,
            base: Duration::from_millis(20),
            cap: Duration::from_millis(100),
        },
        ..server.config("faults/")
    }
}

async fn read_all(
    backend: &S3Backend,
    d: &Digest,
    len: u64,
) -> crate::store::error::Result<Vec<u8>> {
    let mut chunks = backend.read(d, 0..len).await?;
    let mut out = Vec::new();
    while let Some(piece) = chunks.next().await? {
        out.extend_from_slice(&piece);
    }
    Ok(out)
}

fn blob(n: usize, seed: u8) -> (Vec<u8>, Digest) {
    let content: Vec<u8> = (0..n).map(|i| (i % 251) as u8 ^ seed).collect();
    let d = Digest::sha256_of(&content);
    (content, d)
}

/// s3s-fs behind a proxy, a backend through it, and a blob of `n` bytes stored there.
struct Setup {
    proxy: Proxy,
    backend: S3Backend,
    content: Vec<u8>,
    d: Digest,
    len: u64,
    server: S3Server,
}

fn setup(n: usize, seed: u8) -> Setup {
    let server = S3Server::s3s_fs();
    let proxy = Proxy::start(upstream(&server), 0, None);
    let backend = S3Backend::new(&through(&server, proxy.port)).unwrap();
    let (content, d) = blob(n, seed);
    let len = content.len() as u64;
    run(backend.put_stream(&d, len, &mut Whole::new(content.clone()))).unwrap();
    Setup {
        proxy,
        backend,
        content,
        d,
        len,
        server,
    }
}

fn unavailable<T: std::fmt::Debug>(got: &crate::store::error::Result<T>) -> bool {
    matches!(got, Err(Error::Unavailable { retry: true, .. }))
}

#[test]
fn a_stopped_s3_fails_promptly_and_is_used_again_once_restarted() {
    let Setup {
        mut proxy,
        backend,
        content,
        d,
        len,
        server,
    } = setup(100_000, 1);
    let port = proxy.port;
    let (other, d2) = blob(50_000, 2);
    run(async {
        assert_eq!(read_all(&backend, &d, len).await.unwrap(), content);

        // Stopped: parked connections reset, new ones refused.
        proxy.stop();
        for _ in 0..2 {
            let started = Instant::now();
            let stat = backend.stat(&d).await;
            assert!(unavailable(&stat), "{stat:?}");
            let read = read_all(&backend, &d, len).await;
            assert!(unavailable(&read), "{read:?}");
            let put = backend
                .put_stream(&d2, other.len() as u64, &mut Whole::new(other.clone()))
                .await;
            assert!(unavailable(&put), "{put:?}");
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(5),
                "three refusals took {took:?}"
            );
        }

        // Started again on the same port: everything works again.
        let proxy = Proxy::start(upstream(&server), port, None);
        assert_eq!(backend.stat(&d).await.unwrap(), len);
        assert_eq!(read_all(&backend, &d, len).await.unwrap(), content);
        backend
            .put_stream(&d2, other.len() as u64, &mut Whole::new(other.clone()))
            .await
            .unwrap();
        assert_eq!(backend.stat(&d2).await.unwrap(), other.len() as u64);
        drop(proxy);
    });
}

#[test]
fn a_server_that_accepts_and_never_answers_times_out() {
    let server = S3Server::s3s_fs();
    let proxy = Proxy::start(upstream(&server), 0, None);
    proxy.next(Mode::Silent, usize::MAX);
    let backend = S3Backend::new(&through(&server, proxy.port)).unwrap();
    let started = Instant::now();
    let got = run(backend.stat(&Digest::sha256_of(b"x")));
    let took = started.elapsed();
    assert!(unavailable(&got), "{got:?}");
    assert_eq!(proxy.accepted(), 3, "a HEAD is tried max_tries times");
    // Three first-byte timeouts of 500 ms and two short waits.
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
}

#[test]
fn a_body_cut_mid_read_is_an_error_not_a_short_blob() {
    let s = setup(3 * 1024 * 1024, 3);
    run(async {
        s.proxy.next(Mode::Cut(1024 * 1024), 1);
        super::conn::close_idle();
        let mut chunks = s
            .backend
            .read(&s.d, 0..s.len)
            .await
            .expect("the head arrives");
        let mut got = 0u64;
        let outcome = loop {
            match chunks.next().await {
                Ok(Some(piece)) => got += piece.len() as u64,
                other => break other,
            }
        };
        assert!(
            matches!(outcome, Err(Error::Unavailable { retry: true, .. })),
            "{outcome:?} after {got} bytes"
        );
        assert!(got < s.len);
        drop(chunks);
        // The next read, on a connection that is not cut, is whole.
        assert_eq!(read_all(&s.backend, &s.d, s.len).await.unwrap(), s.content);
    });
}

#[test]
fn failures_that_may_pass_are_retried_and_only_where_safe() {
    let s = setup(10_000, 4);
    run(async {
        // Two connections dropped: the third try of the GET succeeds.
        let before = s.proxy.accepted();
        s.proxy.next(Mode::Close, 2);
        assert_eq!(read_all(&s.backend, &s.d, s.len).await.unwrap(), s.content);
        assert_eq!(s.proxy.accepted() - before, 3);

        // S3 says SlowDown twice: waited out.
        super::conn::close_idle();
        let before = s.proxy.accepted();
        s.proxy.next(Mode::SlowDown, 2);
        assert_eq!(s.backend.stat(&s.d).await.unwrap(), s.len);
        assert_eq!(s.proxy.accepted() - before, 3);

        // ... but not beyond the tries allowed: 503 with retry for the client.
        super::conn::close_idle();
        s.proxy.next(Mode::SlowDown, 3);
        let got = s.backend.stat(&s.d).await;
        assert!(unavailable(&got), "{got:?}");

        // A request that must not be sent twice (a new multipart upload) is not, once it
        // may have arrived; a refused connection (nothing sent) is tried again even so.
        super::conn::close_idle();
        let before = s.proxy.accepted();
        s.proxy.next(Mode::Close, 1);
        let got = s.backend.create_multipart("faults/once").await.map(|_| ());
        assert!(unavailable(&got), "{got:?}");
        assert_eq!(s.proxy.accepted() - before, 1, "sent once");
    });
}

#[test]
fn a_changed_address_is_followed() {
    use super::resolve::{Lookup, Resolver};
    use std::sync::atomic::AtomicU16;
    let mut s = setup(10_000, 6);
    let target = Arc::new(AtomicU16::new(s.proxy.port));
    let t = target.clone();
    let lookup: Lookup = Arc::new(move |_, _| {
        Ok(vec![SocketAddr::from((
            [127, 0, 0, 1],
            t.load(Ordering::SeqCst),
        ))])
    });
    // An hour's TTL: only the failed connect makes the name be looked up again.
    let resolver = Resolver::with("s3.test", 0, lookup, Duration::from_secs(3600)).unwrap();
    s.backend.endpoint.set_resolver(resolver);
    run(async {
        assert_eq!(s.backend.stat(&s.d).await.unwrap(), s.len);
        // The service moves: the old address stops answering, the name gives the new one.
        let moved = Proxy::start(upstream(&s.server), 0, None);
        target.store(moved.port, Ordering::SeqCst);
        s.proxy.stop();
        assert_eq!(s.backend.stat(&s.d).await.unwrap(), s.len);
        assert_eq!(read_all(&s.backend, &s.d, s.len).await.unwrap(), s.content);
        assert!(moved.accepted() >= 1);
    });
}

/// A CA and a server certificate for localhost and 127.0.0.1 signed by it, made by rcgen:
/// the CA's PEM and the server's configuration.
fn pki() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "ringyard test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], der.into())
        .unwrap();
    (ca_cert.pem(), Arc::new(config))
}

#[test]
fn https_endpoints_are_verified_against_the_configured_ca() {
    let server = S3Server::s3s_fs();
    let (ca_pem, tls) = pki();
    let proxy = Proxy::start(upstream(&server), 0, Some(tls));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let mut config = S3Config {
        // A name, so the address is looked up and the certificate's DNS name checked.
        endpoint: format!("https://localhost:{}", proxy.port),
        ca_file: Some(ca_file),
        ..through(&server, proxy.port)
    };
    config.timeouts.first_byte = Duration::from_secs(10);
    config.timeouts.idle = Duration::from_secs(10);
    let backend = S3Backend::new(&config).unwrap();
    let (content, d) = blob(2 * 1024 * 1024 + 7, 5);
    let len = content.len() as u64;
    run(async {
        backend
            .put_stream(&d, len, &mut Whole::new(content.clone()))
            .await
            .unwrap();
        assert_eq!(backend.stat(&d).await.unwrap(), len);
        assert_eq!(read_all(&backend, &d, len).await.unwrap(), content);
        let listed = backend.list(None, 10).await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|l| (&l.digest, l.size))
                .collect::<Vec<_>>(),
            vec![(&d, len)]
        );
        assert!(backend.delete(&d).await.unwrap());
    });
    // Without the CA, the system's roots do not vouch for the test's server.
    let untrusted = S3Backend::new(&S3Config {
        ca_file: None,
        public_endpoint: None,
        ..config.clone()
    })
    .unwrap();
    let got = run(untrusted.stat(&d));
    match got {
        Err(Error::Unavailable { cause, .. }) => {
            assert!(cause.to_lowercase().contains("certificate"), "{cause}")
        }
        other => panic!("{other:?}"),
    }
}

/// A part whose body comes from a file goes through the same loop as one from memory: sent
/// again, read again from the file, after a broken connection or a busy S3; a file shorter
/// than the range sent fails at once, without another try.
#[test]
fn a_part_from_a_file_is_read_again_for_each_try() {
    use crate::store::backend::UploadStaging;
    let s = setup(10, 7);
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let (content, _) = blob(3 * 1024 * 1024 + 5, 8);
    std::fs::write(&spool, &content).unwrap();
    let len = content.len() as u64;
    run(async {
        let upload = s.backend.begin("f").await.unwrap();
        super::conn::close_idle();
        let before = s.proxy.accepted();
        s.proxy.next(Mode::Close, 2);
        let etag = s
            .backend
            .put_part("f", &upload, 1, &spool, 0..len)
            .await
            .unwrap();
        assert_eq!(
            s.proxy.accepted() - before,
            3,
            "two broken tries, then whole"
        );

        super::conn::close_idle();
        let before = s.proxy.accepted();
        s.proxy.next(Mode::SlowDown, 1);
        let again = s.backend.put_part("f", &upload, 1, &spool, 0..len).await;
        assert_eq!(again.unwrap(), etag, "the same bytes, the same part");
        assert_eq!(s.proxy.accepted() - before, 2);

        super::conn::close_idle();
        let before = s.proxy.accepted();
        let past = s
            .backend
            .put_part("f", &upload, 2, &spool, 0..len + 1)
            .await;
        assert!(matches!(past, Err(Error::Io(_))), "{past:?}");
        // The request failed on our side, perhaps before the proxy's thread took the
        // connection: wait for it to count that one, then see that no second came.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while s.proxy.accepted() == before && std::time::Instant::now() < deadline {
            monoio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        monoio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(s.proxy.accepted() - before, 1, "not tried again");

        s.backend
            .assemble("f", &upload, &[etag], None, len)
            .await
            .unwrap();
        let mut chunks = s.backend.read_assembled("f", len).await.unwrap();
        let mut got = Vec::new();
        while let Some(piece) = chunks.next().await.unwrap() {
            got.extend_from_slice(&piece);
        }
        assert!(got == content, "the part went up whole");
    });
}
