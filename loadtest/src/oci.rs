//! The OCI/Docker documents a pull reads and a push or seed writes: media types, parsing a
//! manifest or index into descriptors, picking a platform from an index, building configs
//! and manifests deterministically. Pure.

use serde_json::{json, Value};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The Accept list containerd sends for manifests.
pub const CONTAINERD_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// `os/architecture[/variant]` for index entries that name a platform.
    pub platform: Option<(String, String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Manifest {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        manifests: Vec<Descriptor>,
    },
}

fn descriptor(v: &Value) -> Result<Descriptor, String> {
    let digest = v["digest"]
        .as_str()
        .ok_or("descriptor without a digest")?
        .to_string();
    let size = v["size"].as_u64().ok_or("descriptor without a size")?;
    let platform = v.get("platform").and_then(|p| {
        Some((
            p["os"].as_str()?.to_string(),
            p["architecture"].as_str()?.to_string(),
            p["variant"].as_str().map(str::to_string),
        ))
    });
    Ok(Descriptor {
        media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
        digest,
        size,
        platform,
    })
}

/// Parses a manifest or an index. The kind comes from the Content-Type when it names one,
/// else from `mediaType` in the document, else from its shape (`manifests` vs `layers`).
pub fn parse_document(bytes: &[u8], content_type: Option<&str>) -> Result<Document, String> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("manifest is not JSON: {e}"))?;
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].contains(c));
    let media = ct.or_else(|| v["mediaType"].as_str());
    let is_index = match media {
        Some(m) if m == OCI_INDEX || m == DOCKER_LIST => true,
        Some(m) if m == OCI_MANIFEST || m == DOCKER_MANIFEST => false,
        _ => v.get("manifests").is_some(),
    };
    if is_index {
        let list = v["manifests"].as_array().ok_or("index without manifests")?;
        let manifests = list.iter().map(descriptor).collect::<Result<Vec<_>, _>>()?;
        return Ok(Document::Index { manifests });
    }
    let config = descriptor(&v["config"]).map_err(|e| format!("config: {e}"))?;
    let layers = match v.get("layers") {
        Some(l) => l
            .as_array()
            .ok_or("layers is not a list")?
            .iter()
            .map(descriptor)
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    Ok(Document::Manifest { config, layers })
}

/// The entry containerd would pick on linux/amd64: an exact os/architecture match, else the
/// first entry.
pub fn pick_platform(manifests: &[Descriptor]) -> Option<&Descriptor> {
    manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|(os, arch, _)| os == "linux" && arch == "amd64")
        })
        .or(manifests.first())
}

/// Media types of a generated image in either format: (manifest, config, layer).
pub fn media_types(docker: bool) -> (&'static str, &'static str, &'static str) {
    if docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER)
    } else {
        (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER)
    }
}

/// A small image config naming the layers (their digests stand in for the diff_ids).
pub fn image_config(layer_digests: &[String]) -> Vec<u8> {
    let v = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
        "history": layer_digests.iter().map(|_| json!({"created_by": "ringyard loadtest"})).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&v).expect("serializable")
}

/// An image manifest of the given config and layers (digest, size).
pub fn image_manifest(docker: bool, config: (&str, u64), layers: &[(String, u64)]) -> Vec<u8> {
    let (_, _, lt) = media_types(docker);
    image_manifest_of(docker, lt, config, layers)
}

/// [`image_manifest`] with layers of media type `lt` (an uncompressed tar, say).
pub fn image_manifest_of(
    docker: bool,
    lt: &str,
    config: (&str, u64),
    layers: &[(String, u64)],
) -> Vec<u8> {
    let (mt, ct, _) = media_types(docker);
    let v = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {"mediaType": ct, "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(d, s)| json!({"mediaType": lt, "digest": d, "size": s})).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&v).expect("serializable")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(p: Option<(&str, &str)>, digest: &str) -> Value {
        let mut v = json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": 10});
        if let Some((os, arch)) = p {
            v["platform"] = json!({"os": os, "architecture": arch});
        }
        v
    }

    #[test]
    fn platform_selection() {
        let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            d(Some(("linux", "arm64")), "sha256:a"),
            d(Some(("windows", "amd64")), "sha256:b"),
            d(Some(("linux", "amd64")), "sha256:c"),
        ]});
        let doc = parse_document(idx.to_string().as_bytes(), None).unwrap();
        let Document::Index { manifests } = doc else {
            panic!()
        };
        assert_eq!(pick_platform(&manifests).unwrap().digest, "sha256:c");
        let first = vec![
            descriptor(&d(Some(("linux", "arm64")), "sha256:a")).unwrap(),
            descriptor(&d(None, "sha256:b")).unwrap(),
        ];
        assert_eq!(pick_platform(&first).unwrap().digest, "sha256:a");
        assert!(pick_platform(&[]).is_none());
    }

    #[test]
    fn kinds_from_content_type_media_type_or_shape() {
        let list = json!({"schemaVersion": 2, "manifests": [d(None, "sha256:a")]});
        let bytes = list.to_string();
        assert!(matches!(
            parse_document(bytes.as_bytes(), Some(DOCKER_LIST)).unwrap(),
            Document::Index { .. }
        ));
        assert!(matches!(
            parse_document(bytes.as_bytes(), Some("application/octet-stream")).unwrap(),
            Document::Index { .. }
        ));
        let m = image_manifest(true, ("sha256:c", 5), &[("sha256:l".into(), 7)]);
        match parse_document(&m, Some(&format!("{DOCKER_MANIFEST}; charset=utf-8"))).unwrap() {
            Document::Manifest { config, layers } => {
                assert_eq!(config.digest, "sha256:c");
                assert_eq!(config.media_type, DOCKER_CONFIG);
                assert_eq!(layers.len(), 1);
                assert_eq!(layers[0].size, 7);
                assert_eq!(layers[0].media_type, DOCKER_LAYER);
            }
            _ => panic!(),
        }
        assert!(parse_document(b"{", None).is_err());
        assert!(parse_document(br#"{"config": {"digest": "sha256:a"}}"#, None).is_err());
    }

    #[test]
    fn generated_documents_are_deterministic() {
        let l = vec!["sha256:1".to_string()];
        assert_eq!(image_config(&l), image_config(&l));
        let m = image_manifest(false, ("sha256:c", 2), &[("sha256:1".into(), 3)]);
        let v: Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["mediaType"], OCI_MANIFEST);
        assert_eq!(v["config"]["mediaType"], OCI_CONFIG);
        assert_eq!(v["layers"][0]["mediaType"], OCI_LAYER);
        assert_eq!(v["schemaVersion"], 2);
    }
}
