//! The TLS client configuration of an `https://` S3 endpoint: the system's CA roots (the
//! distribution's bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR`, read by rustls-native-certs)
//! plus an optional CA file of the operator's (a private S3 service's own CA), ALPN
//! `http/1.1`, rustls's ring provider like the server's. Built once at start: reading the
//! roots is file IO, never done on a loop.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::Arc;

/// The configuration for `https://` endpoints; `ca_file` (PEM, one or more certificates) is
/// trusted next to the system's roots. An unreadable or empty CA file is an error: an
/// operator who named one means it.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    // Certificates the system store cannot parse are skipped, as every TLS client does; a
    // store that cannot be read at all leaves only the CA file.
    let system = rustls_native_certs::load_native_certs();
    let (_added, _skipped) = roots.add_parsable_certificates(system.certs);
    if let Some(path) = ca_file {
        let mut own = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("{path:?}: {e}"))? {
            let cert = cert.map_err(|e| format!("{path:?}: {e}"))?;
            roots.add(cert).map_err(|e| format!("{path:?}: {e}"))?;
            own += 1;
        }
        if own == 0 {
            return Err(format!("{path:?}: no certificate in it"));
        }
    }
    if roots.is_empty() {
        return Err(
            "no CA certificates: the system store is empty and no CA file is configured".into(),
        );
    }
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate\n").unwrap();
        assert!(client_config(Some(&p))
            .unwrap_err()
            .contains("no certificate"));
        assert!(client_config(Some(&dir.path().join("missing.pem"))).is_err());
    }
}
