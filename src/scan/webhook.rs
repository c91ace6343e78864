//! Webhook delivery (`scan.webhooks`): one blocking HTTP/1.1 POST per endpoint and delivery,
//! on the delivery job's thread (never an event loop), over TLS for `https://` (the system's
//! CAs, as for S3). A delivery counts as done when every endpoint answered 2xx; the outbox
//! row stays until then and its retries back off ([`backoff`]).
//!
//! Headers are sent and never logged: an `Authorization` value is a secret.

use crate::config::scan::WebhookRule;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// One endpoint, checked.
#[derive(Clone)]
pub struct Endpoint {
    url: url::Url,
    headers: Vec<(String, String)>,
    timeout: Duration,
    pub retries: u64,
    at: String,
}

impl std::fmt::Debug for Endpoint {
    /// Without the headers (they may carry a secret).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url.as_str())
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub fn new(rule: &WebhookRule) -> Result<Endpoint, String> {
        let url = url::Url::parse(&rule.url).map_err(|e| format!("{}: url: {e}", rule.at))?;
        for (name, value) in &rule.headers {
            let bad = |c: char| c == '\r' || c == '\n';
            if name.is_empty() || name.contains(bad) || name.contains(':') || value.contains(bad) {
                return Err(format!("{}: headers: {name:?} cannot be sent", rule.at));
            }
        }
        Ok(Endpoint {
            url,
            headers: rule.headers.clone(),
            timeout: rule.timeout,
            retries: rule.retries,
            at: rule.at.clone(),
        })
    }

    /// Where it posts, for log lines (no credentials: a URL's password is dropped).
    pub fn shown(&self) -> String {
        let mut u = self.url.clone();
        let _ = u.set_password(None);
        u.to_string()
    }

    /// POSTs `body` (JSON); Ok on a 2xx answer, else why not.
    pub fn post(&self, body: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<(), String> {
        let host = self
            .url
            .host_str()
            .ok_or_else(|| format!("{}: no host", self.shown()))?
            .to_string();
        let https = self.url.scheme() == "https";
        let port = self
            .url
            .port_or_known_default()
            .unwrap_or(if https { 443 } else { 80 });
        let addr = (host.trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .map_err(|e| format!("resolving {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("resolving {host}: no address"))?;
        let tcp = TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        tcp.set_read_timeout(Some(self.timeout)).ok();
        tcp.set_write_timeout(Some(self.timeout)).ok();
        let request = self.request(body, &host);
        let status = if https {
            let config = tls.ok_or("no TLS configuration for an https:// webhook")?;
            let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']))
                .map_err(|e| format!("{host}: {e}"))?
                .to_owned();
            let conn = rustls::ClientConnection::new(config.clone(), name)
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(rustls::StreamOwned::new(conn, tcp), &request)?
        } else {
            exchange(tcp, &request)?
        };
        match status {
            200..=299 => Ok(()),
            s => Err(format!("{} answered {s}", self.shown())),
        }
    }

    fn request(&self, body: &str, host: &str) -> Vec<u8> {
        let mut path = self.url.path().to_string();
        if let Some(q) = self.url.query() {
            path.push('?');
            path.push_str(q);
        }
        let host_header = match self.url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: ringyard\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body.as_bytes());
        out
    }
}

/// Sends the request and reads the status line's code.
fn exchange<S: Read + Write>(mut stream: S, request: &[u8]) -> Result<u16, String> {
    stream
        .write_all(request)
        .and_then(|()| stream.flush())
        .map_err(|e| format!("sending: {e}"))?;
    let mut line = String::new();
    BufReader::new(Read::by_ref(&mut stream).take(8 * 1024))
        .read_line(&mut line)
        .map_err(|e| format!("reading the answer: {e}"))?;
    status_code(&line).ok_or_else(|| format!("not an HTTP answer: {:?}", line.trim_end()))
}

/// The code of an HTTP/1.x status line. Pure.
fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

/// How long to wait before attempt `attempt + 1` (the first retry 2 s after the failure,
/// doubling, at most 10 minutes). Pure.
pub fn backoff(attempt: u64) -> Duration {
    let secs = 2u64.saturating_mul(1u64 << attempt.min(20));
    Duration::from_secs(secs.min(600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn status_lines_and_backoff() {
        assert_eq!(status_code("HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code("HTTP/1.0 500\r\n"), Some(500));
        assert_eq!(status_code("SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(""), None);
        assert_eq!(backoff(0), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(16));
        assert_eq!(backoff(60), Duration::from_secs(600));
    }

    fn rule(url: &str, headers: &[(&str, &str)]) -> WebhookRule {
        WebhookRule {
            url: url.into(),
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            timeout: Duration::from_secs(5),
            retries: 2,
            at: "scan.webhooks[0]".into(),
        }
    }

    #[test]
    fn posts_the_body_with_the_headers_and_reads_the_status() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut got = Vec::new();
            for answer in [
                "HTTP/1.1 204 No Content\r\n\r\n",
                "HTTP/1.1 503 Busy\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = vec![0u8; 4096];
                let mut req = Vec::new();
                // Head and the 9-byte body.
                while !String::from_utf8_lossy(&req).ends_with("{\"a\":true}") {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0);
                    req.extend_from_slice(&buf[..n]);
                }
                s.write_all(answer.as_bytes()).unwrap();
                got.push(String::from_utf8(req).unwrap());
            }
            got
        });
        let e = Endpoint::new(&rule(
            &format!("http://127.0.0.1:{port}/hook?x=1"),
            &[("Authorization", "Bearer s3cret")],
        ))
        .unwrap();
        assert_eq!(e.post("{\"a\":true}", None), Ok(()));
        let err = e.post("{\"a\":true}", None).unwrap_err();
        assert!(err.ends_with("answered 503"), "{err}");
        assert!(!format!("{e:?}").contains("s3cret"), "headers never shown");
        let got = server.join().unwrap();
        assert!(
            got[0].starts_with("POST /hook?x=1 HTTP/1.1\r\n"),
            "{}",
            got[0]
        );
        assert!(got[0].contains("\r\nAuthorization: Bearer s3cret\r\n"));
        assert!(got[0].contains("\r\nContent-Length: 10\r\n"));
        assert!(got[0].contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")));
    }

    #[test]
    fn refusals() {
        assert!(Endpoint::new(&rule("http://h/x", &[("X", "a\r\nInjected: 1")])).is_err());
        let e = Endpoint::new(&rule("http://127.0.0.1:1/x", &[])).unwrap();
        assert!(e.post("{}", None).unwrap_err().starts_with("connecting to"));
    }
}
