//! TLS for `https://` targets: rustls's client state machine, its ciphertext carried by the
//! connection's own monoio TCP stream (see `conn`), so the plain path is untouched. The server
//! certificate is verified against a CA file (`--ca`), ALPN offers `http/1.1`, and session
//! resumption is off, so that a new connection per request measures full handshakes on every
//! server alike.

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::path::Path;
use std::sync::Arc;

/// Ciphertext read from the socket at a time: a few TLS records.
pub const CIPHER_BUF: usize = 64 * 1024;

/// How to reach a TLS server: the client configuration and the name its certificate must hold.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

impl TlsTarget {
    /// For `authority` (`host:port`), trusting the certificates in the PEM file `ca`.
    pub fn new(authority: &str, ca: &Path) -> Result<TlsTarget, String> {
        Ok(TlsTarget {
            config: client_config(ca)?,
            name: server_name(authority)?,
        })
    }

    pub fn connect(&self) -> Result<Session, String> {
        let conn = ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(|e| format!("TLS client: {e}"))?;
        Ok(Session {
            conn,
            cipher: Vec::with_capacity(CIPHER_BUF),
            pos: 0,
            out: Vec::new(),
        })
    }
}

/// One connection's TLS state and its ciphertext buffers.
pub struct Session {
    pub conn: ClientConnection,
    /// Ciphertext read from the socket, fed to rustls from `pos` on.
    pub cipher: Vec<u8>,
    pub pos: usize,
    /// Ciphertext to send (reused).
    pub out: Vec<u8>,
}

impl Session {
    /// Feeds buffered ciphertext to rustls (as much as it takes now) and processes it. Returns
    /// false when there was none left.
    pub fn feed(&mut self) -> Result<bool, String> {
        if self.pos == self.cipher.len() {
            return Ok(false);
        }
        let mut rest = &self.cipher[self.pos..];
        let n = self.conn.read_tls(&mut rest).map_err(|e| e.to_string())?;
        self.pos += n;
        self.conn
            .process_new_packets()
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(true)
    }
}

fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("--ca {ca:?}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("--ca {ca:?}: {e}"))?;
        roots.add(cert).map_err(|e| format!("--ca {ca:?}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("--ca {ca:?}: no certificate in it"));
    }
    // The provider the crate's features select (ring, as the server's).
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The host of `host:port` (`[v6]:port` too) as the name to verify.
pub fn server_name(authority: &str) -> Result<ServerName<'static>, String> {
    let host = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_authorities() {
        assert_eq!(
            server_name("localhost:8443").unwrap(),
            ServerName::try_from("localhost").unwrap()
        );
        assert!(matches!(
            server_name("127.0.0.1:443").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:443").unwrap(),
            ServerName::IpAddress(_)
        ));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate\n").unwrap();
        assert!(client_config(&p).is_err());
        assert!(client_config(&dir.path().join("missing.pem")).is_err());
    }
}
