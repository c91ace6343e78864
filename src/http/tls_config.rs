//! The TLS server configuration: built from the PEM files the settings name, checked whole (a
//! certificate and a key that do not belong together are refused here, naming both files),
//! and held where every worker's next handshake finds the current one.
//!
//! Building is pure over the files' bytes ([`build`]); [`load`] reads them, off the event
//! loops (at start, and on the reload thread). A reload swaps the `Arc` in [`TlsConfig`]: a
//! connection keeps the configuration it was accepted with, so connections in flight are not
//! disturbed, and the next handshake gets the new one.

use rustls::crypto::ring;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The files of a TLS configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// With it, clients must present a certificate signed by one of its CAs.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Every file, certificate first.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        [
            Some(&self.certificate),
            Some(&self.key),
            self.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
    }
}

/// The only application protocol spoken: HTTP/1.1 (a client offering only h2 is refused in
/// the handshake rather than misunderstood after it).
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Reads the files and builds the configuration; the error names the file at fault.
pub fn load(files: &TlsFiles) -> Result<ServerConfig, String> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path)
            .map_err(|e| format!("cannot read the TLS {what} {}: {e}", path.display()))
    };
    let certificate = read(&files.certificate, "certificate")?;
    let key = read(&files.key, "key")?;
    let client_ca = match &files.client_ca {
        Some(p) => Some(read(p, "client CA")?),
        None => None,
    };
    build(files, &certificate, &key, client_ca.as_deref())
}

/// The configuration from the files' contents: TLS 1.3 and 1.2 with the `ring` provider, ALPN
/// `http/1.1`, and client certificates verified against `client_ca` when given.
pub fn build(
    files: &TlsFiles,
    certificate: &[u8],
    key: &[u8],
    client_ca: Option<&[u8]>,
) -> Result<ServerConfig, String> {
    let cert_path = files.certificate.display();
    let key_path = files.key.display();
    let chain = certificates(certificate, &files.certificate)?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "the TLS key {key_path} holds no private key (expected a PEM block \
             PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
        ),
        e => format!("the TLS key {key_path} is not a PEM private key: {e}"),
    })?;
    // `ring` (deprecated in 0.23.48 only as a nudge towards aws-lc-rs for post-quantum key
    // exchange, which the clients of a registry do not offer yet): a small C build, where
    // aws-lc-rs is a large one.
    #[allow(deprecated)]
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match (client_ca, &files.client_ca) {
        (Some(pem), Some(path)) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(pem, path)? {
                roots.add(ca).map_err(|e| {
                    format!(
                        "the TLS client CA {}: a certificate in it: {e}",
                        path.display()
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .map_err(|e| format!("the TLS client CA {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
            "the TLS key {key_path} does not belong to the certificate {cert_path} \
             (their public keys differ)"
        ),
        e => format!("the TLS certificate {cert_path} with the key {key_path}: {e}"),
    })?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(config)
}

/// Every certificate of a PEM file, in order; at least one.
fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "the TLS certificate file {} is not PEM: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "the TLS certificate file {} holds no certificate (expected a PEM block CERTIFICATE)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The configuration new handshakes use, replaced whole on reload.
pub struct TlsConfig {
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsConfig {
    pub fn new(config: ServerConfig) -> TlsConfig {
        TlsConfig {
            current: RwLock::new(Arc::new(config)),
        }
    }

    /// The configuration for a handshake starting now. The lock is held for a clone of the
    /// `Arc` only, never across an await.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, config: ServerConfig) {
        let config = Arc::new(config);
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> TlsFiles {
        TlsFiles {
            certificate: "/etc/r/cert.pem".into(),
            key: "/etc/r/key.pem".into(),
            client_ca: None,
        }
    }

    #[test]
    fn files_without_pem_blocks_are_named() {
        let e = build(&files(), b"hello", b"", None).unwrap_err();
        assert_eq!(
            e,
            "the TLS certificate file /etc/r/cert.pem holds no certificate \
             (expected a PEM block CERTIFICATE)"
        );
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let e = build(&files(), cert, b"no key here", None).unwrap_err();
        assert!(
            e.starts_with("the TLS key /etc/r/key.pem holds no private key"),
            "{e}"
        );
    }

    #[test]
    fn a_certificate_that_is_not_one_is_refused_with_both_files() {
        // A well-formed PEM frame around bytes that are no certificate, and a key that is
        // none either: refused, never accepted for a later handshake to fail on.
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";
        let e = build(&files(), cert, key, None).unwrap_err();
        assert!(
            e.contains("/etc/r/cert.pem") && e.contains("/etc/r/key.pem"),
            "{e}"
        );
    }

    #[test]
    fn paths_list_every_file() {
        let mut f = files();
        assert_eq!(f.paths().count(), 2);
        f.client_ca = Some("/etc/r/ca.pem".into());
        let all: Vec<&Path> = f.paths().collect();
        assert_eq!(all[2], Path::new("/etc/r/ca.pem"));
    }
}
