//! OCI builders: media types, digests, manifests and configs, and pushes of blobs and images
//! through the API.

#![allow(dead_code)]

use super::*;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256, Sha512};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

// ---------------------------------------------------------------------------------------------
// OCI helpers
// ---------------------------------------------------------------------------------------------

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// `sha256:<hex>`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// `sha512:<hex>`.
pub fn sha512_digest(bytes: &[u8]) -> String {
    format!("sha512:{}", hex(&Sha512::digest(bytes)))
}

/// `sha256:<hex>` of what `h` hashed.
pub fn finish_digest(h: Sha256) -> String {
    format!("sha256:{}", hex(&h.finalize()))
}

/// The path part (and query) of a `Location` header, which may be absolute or relative.
pub fn location_path(location: &str) -> String {
    if let Some(rest) = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("https://"))
    {
        match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        }
    } else {
        location.to_string()
    }
}

/// Appends a query parameter to a path that may already have a query.
pub fn with_query(path: &str, param: &str) -> String {
    if path.contains('?') {
        format!("{path}&{param}")
    } else {
        format!("{path}?{param}")
    }
}

/// Monolithic upload: `POST /v2/<repo>/blobs/uploads/?digest=<digest>` with the bytes; asserts
/// 201; returns the digest.
#[track_caller]
pub fn push_blob(c: &mut Client, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let r = c.post(
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    );
    assert_eq!(
        r.status,
        201,
        "monolithic push of {} bytes to {repo}: {:?} {:?}",
        bytes.len(),
        r.text(),
        r.headers
    );
    digest
}

/// Starts an upload session; asserts 202 and returns the Location path.
#[track_caller]
pub fn start_upload(c: &mut Client, repo: &str) -> String {
    let r = c.post(&format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_eq!(
        r.status,
        202,
        "POST uploads: {:?} {:?}",
        r.text(),
        r.headers
    );
    location_path(must_header(&r, "location"))
}

/// An OCI image manifest for a config and layers given as (digest, size).
pub fn image_manifest(config: &(String, usize), layers: &[(String, usize)]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, s)| serde_json::json!({"mediaType": OCI_LAYER, "digest": d, "size": s}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0, "size": config.1},
        "layers": layers,
    }))
    .unwrap()
}

/// A small image config that differs with its layers.
pub fn image_config(layer_digests: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    }))
    .unwrap()
}

/// Pushes a config and `layers` as blobs, then an OCI image manifest by `tag`; asserts 201.
/// Returns the manifest digest and bytes.
#[track_caller]
pub fn push_image(c: &mut Client, repo: &str, tag: &str, layers: &[&[u8]]) -> (String, Vec<u8>) {
    let mut descs = Vec::new();
    for l in layers {
        let d = push_blob(c, repo, l);
        descs.push((d, l.len()));
    }
    let digests: Vec<String> = descs.iter().map(|(d, _)| d.clone()).collect();
    let config = image_config(&digests);
    let cd = push_blob(c, repo, &config);
    let manifest = image_manifest(&(cd, config.len()), &descs);
    let r = c.put(
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", OCI_MANIFEST)],
        &manifest,
    );
    assert_eq!(
        r.status,
        201,
        "PUT manifest {repo}:{tag}: {:?} {:?}",
        r.text(),
        r.headers
    );
    (sha256_digest(&manifest), manifest)
}
