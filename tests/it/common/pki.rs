//! Keys and certificates made by `openssl` at test time, for the TLS tests: a CA and leaves
//! signed by it (server certificates name `localhost`, 127.0.0.1 and 0.0.0.0; the last is how
//! docker reaches a loopback registry that it does not treat as insecure, see
//! `clients_auth`), and the `ca.crt` directories that skopeo, podman and docker read.

use super::*;
use std::path::{Path, PathBuf};

/// A directory of keys and certificates made with openssl.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

pub fn openssl(args: &[&str]) {
    let (ok, out) = run_command("openssl", args);
    assert!(ok, "openssl {args:?} failed:\n{out}");
}

/// What a leaf certificate is for.
#[derive(Clone, Copy)]
pub enum Use {
    Server,
    Client,
}

impl Pki {
    pub fn new() -> Pki {
        for tool in ["openssl", "curl"] {
            require_tool(tool);
        }
        Pki {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// A self-signed CA: `NAME.key`, `NAME.crt`.
    pub fn ca(&self, name: &str) {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &self.s(&format!("{name}.key")),
            "-out",
            &self.s(&format!("{name}.crt")),
            "-days",
            "2",
            "-subj",
            &format!("/CN=ringyard test {name}"),
        ]);
    }

    /// `NAME.key` (EC P-256, or RSA 2048 when `rsa`) and `NAME.crt` signed by `ca` with
    /// `serial`; a server certificate is for `localhost` and 127.0.0.1.
    pub fn leaf(&self, name: &str, ca: &str, usage: Use, rsa: bool, serial: u32) {
        let key_args: &[&str] = if rsa {
            &["-newkey", "rsa:2048"]
        } else {
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        };
        let csr = self.s(&format!("{name}.csr"));
        let mut args = vec!["req"];
        args.extend_from_slice(key_args);
        let key = self.s(&format!("{name}.key"));
        let subj = format!("/CN={name}");
        args.extend_from_slice(&["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(&args);
        let ext = match usage {
            Use::Server => {
                "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:0.0.0.0\nextendedKeyUsage=serverAuth\n"
            }
            Use::Client => "extendedKeyUsage=clientAuth\n",
        };
        let ext_path = self.path(&format!("{name}.ext"));
        std::fs::write(&ext_path, ext).unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &self.s(&format!("{ca}.crt")),
            "-CAkey",
            &self.s(&format!("{ca}.key")),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-extfile",
            ext_path.to_str().unwrap(),
            "-out",
            &self.s(&format!("{name}.crt")),
        ]);
    }

    /// A directory holding `ca.crt` = `CA.crt`, as skopeo's `--cert-dir` and docker's
    /// `certs.d/HOST:PORT` want it.
    pub fn cert_dir(&self, ca: &str) -> PathBuf {
        let dir = self.path(&format!("certs-{ca}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(self.path(&format!("{ca}.crt")), dir.join("ca.crt")).unwrap();
        dir
    }

    /// Puts a copy of `name` at `to` by rename, as renewal tools replace files.
    pub fn install(&self, name: &str, to: &Path) {
        let tmp = self.path("incoming");
        std::fs::copy(self.path(name), &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }

    /// The standard set: CA `ca` and the server certificate `server` it signed.
    pub fn standard() -> Pki {
        let pki = Pki::new();
        pki.ca("ca");
        pki.leaf("server", "ca", Use::Server, false, 1001);
        pki
    }
}
