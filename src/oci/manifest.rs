//! Validation of pushed manifests, and the facts the registry needs from them: which blobs an
//! image uses, which manifests an index lists, what it refers to (`subject`) and how it shows up
//! in the referrers API.
//!
//! The body is walked as a `serde_json::Value` rather than deserialised into strict structs:
//! unknown fields must pass (the image spec says so, and Docker manifest lists carry
//! `platform`), and each error has to name the field that is wrong, which derive-based
//! deserialisation reports poorly. The manifest bytes themselves are stored untouched; this
//! module only decides whether to accept them.

use super::error::{Error, Result};
use crate::oci::digest::Digest;
use crate::oci::media::{self, ManifestKind};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// `None` also when the field was the empty string: the spec treats empty and missing alike.
    pub artifact_type: Option<String>,
    pub annotations: Option<Map<String, Value>>,
}

#[derive(Debug, Clone)]
pub struct ParsedManifest {
    /// Always one of [`media::KNOWN_MANIFEST_TYPES`], never the client's spelling.
    pub media_type: String,
    pub kind: ManifestKind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// What the referrers API reports for this manifest: the top-level `artifactType` when
    /// present and non-empty, else, for an image, the config's media type (distribution-spec
    /// v1.1, "Listing Referrers"); an index without one reports none.
    pub artifact_type: Option<String>,
    pub annotations: Option<Map<String, Value>>,
}

impl ParsedManifest {
    /// The blobs an image needs present in the repository (config first, then layers); an
    /// index references manifests instead, so it yields nothing.
    pub fn referenced_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter())
    }
}

/// Sizes are stored as SQLite integers, and the image spec defines `size` as an int64, so
/// anything above `i64::MAX` is refused rather than silently wrapped later.
const MAX_SIZE: u64 = i64::MAX as u64;

/// Bounds how much of a client-supplied string is echoed back in an error.
const ECHO_MAX_CHARS: usize = 200;

fn echo(s: &str) -> String {
    s.chars().take(ECHO_MAX_CHARS).collect()
}

fn invalid(what: impl Into<String>) -> Error {
    Error::ManifestInvalid(what.into())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Validates a pushed manifest.
///
/// `content_type` is the request's `Content-Type`. It decides the manifest type when it names
/// one of the four known types; otherwise (absent, `application/json`, ...) the body's
/// `mediaType` decides. When both are given they must agree, so a client cannot store a body
/// that will later be served under a type it does not have.
pub fn parse_manifest(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(invalid(format!(
            "body must be a JSON object, got {}",
            json_type(&value)
        )));
    };

    check_schema_version(&obj, content_type)?;
    let (media_type, kind) = effective_media_type(&obj, content_type)?;

    let subject = match obj.get("subject") {
        None => None,
        Some(v) => Some(parse_descriptor(v, "subject")?),
    };
    let declared_artifact_type = optional_artifact_type(&obj, "")?;
    let annotations = optional_annotations(&obj, "")?;

    let mut parsed = ParsedManifest {
        media_type: media_type.to_string(),
        kind,
        config: None,
        layers: Vec::new(),
        manifests: Vec::new(),
        subject,
        artifact_type: None,
        annotations,
    };
    match kind {
        ManifestKind::Image => {
            let config = match obj.get("config") {
                Some(v) => parse_descriptor(v, "config")?,
                None => return Err(invalid("config is required for an image manifest")),
            };
            parsed.layers = descriptor_array(&obj, "layers", "an image manifest")?;
            parsed.artifact_type =
                declared_artifact_type.or_else(|| Some(config.media_type.clone()));
            parsed.config = Some(config);
        }
        ManifestKind::Index => {
            parsed.manifests = descriptor_array(&obj, "manifests", "an image index")?;
            parsed.artifact_type = declared_artifact_type;
        }
    }
    Ok(parsed)
}

fn check_schema_version(obj: &Map<String, Value>, content_type: Option<&str>) -> Result<()> {
    let schema1 =
        || invalid("Docker schema 1 manifests are unsupported; push a schema 2 or OCI manifest");
    if content_type.is_some_and(media::is_schema1) {
        return Err(schema1());
    }
    match obj.get("schemaVersion") {
        None => Err(invalid("schemaVersion is required and must be 2")),
        Some(v) => match v.as_u64() {
            Some(2) => Ok(()),
            Some(1) => Err(schema1()),
            _ => Err(invalid(format!(
                "schemaVersion must be the integer 2, got {}",
                echo(&v.to_string())
            ))),
        },
    }
}

fn effective_media_type(
    obj: &Map<String, Value>,
    content_type: Option<&str>,
) -> Result<(&'static str, ManifestKind)> {
    let body_type = match obj.get("mediaType") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(invalid(format!(
                "mediaType must be a string, got {}",
                json_type(other)
            )))
        }
    };
    if body_type.is_some_and(media::is_schema1) {
        return Err(invalid(
            "Docker schema 1 manifests are unsupported; push a schema 2 or OCI manifest",
        ));
    }
    let header_known = content_type.and_then(media::canonical_manifest_type);
    let chosen = match (header_known, body_type) {
        (Some(header), Some(body)) => {
            if media::canonical_manifest_type(body) != Some(header) {
                return Err(invalid(format!(
                    "mediaType {:?} does not match Content-Type {header:?}",
                    echo(body)
                )));
            }
            header
        }
        (Some(header), None) => header,
        (None, Some(body)) => media::canonical_manifest_type(body).ok_or_else(|| {
            invalid(format!(
                "unsupported manifest media type {:?} (Content-Type {:?})",
                echo(body),
                echo(content_type.unwrap_or(""))
            ))
        })?,
        (None, None) => {
            return Err(invalid(format!(
                "cannot tell the manifest type: no mediaType in the body and Content-Type is {}",
                match content_type {
                    Some(ct) => format!("{:?}", echo(ct)),
                    None => "absent".to_string(),
                }
            )))
        }
    };
    // Every canonical type has a kind; the fallback only keeps this free of unwrap().
    let kind = media::manifest_kind(chosen)
        .ok_or_else(|| invalid(format!("unsupported manifest media type {chosen:?}")))?;
    Ok((chosen, kind))
}

fn descriptor_array(obj: &Map<String, Value>, field: &str, what: &str) -> Result<Vec<Descriptor>> {
    match obj.get(field) {
        None => Err(invalid(format!("{field} is required for {what}"))),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| parse_descriptor(v, &format!("{field}[{i}]")))
            .collect(),
        Some(other) => Err(invalid(format!(
            "{field} must be an array, got {}",
            json_type(other)
        ))),
    }
}

/// Parses one descriptor; `path` (`config`, `layers[3]`, ...) prefixes every error so a client
/// can find the offending entry in a large manifest.
fn parse_descriptor(v: &Value, path: &str) -> Result<Descriptor> {
    let Value::Object(obj) = v else {
        return Err(invalid(format!(
            "{path} must be a descriptor object, got {}",
            json_type(v)
        )));
    };

    let media_type = match obj.get("mediaType") {
        Some(Value::String(s)) if media::is_valid_media_type(s) => s.clone(),
        Some(Value::String(s)) => {
            return Err(invalid(format!(
                "{path}.mediaType {:?} is not a valid media type",
                echo(s)
            )))
        }
        Some(other) => {
            return Err(invalid(format!(
                "{path}.mediaType must be a string, got {}",
                json_type(other)
            )))
        }
        None => return Err(invalid(format!("{path}.mediaType is required"))),
    };

    let digest = match obj.get("digest") {
        Some(Value::String(s)) => Digest::parse(s).map_err(|e| {
            invalid(format!(
                "{path}.digest {:?} is not a valid digest ({})",
                echo(s),
                e
            ))
        })?,
        Some(other) => {
            return Err(invalid(format!(
                "{path}.digest must be a string, got {}",
                json_type(other)
            )))
        }
        None => return Err(invalid(format!("{path}.digest is required"))),
    };

    let size = match obj.get("size") {
        // as_u64 is None for negative numbers and for floats, including 1.0 and numbers too
        // large for u64 (serde_json parses those as floats).
        Some(n @ Value::Number(_)) => match n.as_u64() {
            Some(size) if size <= MAX_SIZE => size,
            _ => {
                return Err(invalid(format!(
                    "{path}.size must be a non-negative integer no larger than {MAX_SIZE}, got {}",
                    echo(&n.to_string())
                )))
            }
        },
        Some(other) => {
            return Err(invalid(format!(
                "{path}.size must be a non-negative integer, got {}",
                json_type(other)
            )))
        }
        None => return Err(invalid(format!("{path}.size is required"))),
    };

    Ok(Descriptor {
        media_type,
        digest,
        size,
        artifact_type: optional_artifact_type(obj, path)?,
        annotations: optional_annotations(obj, path)?,
    })
}

/// The field's name in messages: `key` at the top level, `prefix.key` inside a descriptor.
fn field_path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Empty strings are treated as absent, because the spec's referrers rule does ("if the
/// `artifactType` is empty or missing"); anything non-empty must be a real media type.
fn optional_artifact_type(obj: &Map<String, Value>, prefix: &str) -> Result<Option<String>> {
    let path = || field_path(prefix, "artifactType");
    match obj.get("artifactType") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if media::is_valid_media_type(s) => Ok(Some(s.clone())),
        Some(Value::String(s)) => Err(invalid(format!(
            "{} {:?} is not a valid media type",
            path(),
            echo(s)
        ))),
        Some(other) => Err(invalid(format!(
            "{} must be a string, got {}",
            path(),
            json_type(other)
        ))),
    }
}

/// Annotations must map strings to strings (image spec), at the top level as well as in
/// descriptors: top-level annotations are copied into referrers descriptors, which must obey
/// the descriptor rules.
fn optional_annotations(
    obj: &Map<String, Value>,
    prefix: &str,
) -> Result<Option<Map<String, Value>>> {
    let path = || field_path(prefix, "annotations");
    match obj.get("annotations") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => {
            if let Some((key, v)) = map.iter().find(|(_, v)| !v.is_string()) {
                return Err(invalid(format!(
                    "{}[{:?}] must be a string, got {}",
                    path(),
                    echo(key),
                    json_type(v)
                )));
            }
            Ok(Some(map.clone()))
        }
        Some(other) => Err(invalid(format!(
            "{} must be an object, got {}",
            path(),
            json_type(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media::{
        DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, OCI_INDEX,
        OCI_MANIFEST,
    };
    use serde_json::json;

    const D1: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const D2: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    const D3: &str = "sha256:2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6";

    fn desc(media_type: &str, digest: &str, size: u64) -> Value {
        json!({ "mediaType": media_type, "digest": digest, "size": size })
    }

    fn image() -> Value {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": desc("application/vnd.oci.image.config.v1+json", D1, 2),
            "layers": [
                desc("application/vnd.oci.image.layer.v1.tar+gzip", D2, 100),
                desc("application/vnd.oci.image.layer.v1.tar+gzip", D3, 200),
            ],
        })
    }

    fn index() -> Value {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST, "digest": D1, "size": 500,
                    "platform": { "architecture": "amd64", "os": "linux" }
                },
                desc(OCI_MANIFEST, D2, 501),
            ],
        })
    }

    fn parse(ct: Option<&str>, v: &Value) -> Result<ParsedManifest> {
        parse_manifest(ct, &serde_json::to_vec(v).unwrap())
    }

    fn parse_err(ct: Option<&str>, v: &Value) -> Error {
        let e = parse(ct, v).unwrap_err();
        assert!(matches!(e, Error::ManifestInvalid(_)), "{e}");
        e
    }

    fn err_bytes(ct: Option<&str>, body: &[u8]) -> Error {
        let e = parse_manifest(ct, body).unwrap_err();
        assert!(matches!(e, Error::ManifestInvalid(_)), "{e}");
        e
    }

    #[test]
    fn parses_an_oci_image() {
        let m = parse(Some(OCI_MANIFEST), &image()).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.kind, ManifestKind::Image);
        let config = m.config.as_ref().unwrap();
        assert_eq!(config.digest.as_str(), D1);
        assert_eq!(config.size, 2);
        assert_eq!(m.layers.len(), 2);
        assert_eq!(m.layers[1].size, 200);
        assert!(m.manifests.is_empty());
        assert!(m.subject.is_none());
        // No artifactType: the config media type stands in for it.
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let blobs: Vec<&str> = m.referenced_blobs().map(|d| d.digest.as_str()).collect();
        assert_eq!(blobs, [D1, D2, D3]);
    }

    #[test]
    fn parses_an_oci_index() {
        let m = parse(None, &index()).unwrap();
        assert_eq!(m.media_type, OCI_INDEX);
        assert_eq!(m.kind, ManifestKind::Index);
        assert!(m.config.is_none());
        assert!(m.layers.is_empty());
        assert_eq!(m.manifests.len(), 2);
        assert_eq!(m.manifests[0].size, 500);
        assert_eq!(m.artifact_type, None);
        assert_eq!(m.referenced_blobs().count(), 0);
    }

    #[test]
    fn parses_docker_types() {
        let mut v = image();
        v["mediaType"] = json!(DOCKER_MANIFEST);
        let m = parse(Some(DOCKER_MANIFEST), &v).unwrap();
        assert_eq!(
            (m.media_type.as_str(), m.kind),
            (DOCKER_MANIFEST, ManifestKind::Image)
        );

        let mut v = index();
        v["mediaType"] = json!(DOCKER_MANIFEST_LIST);
        let m = parse(None, &v).unwrap();
        assert_eq!(
            (m.media_type.as_str(), m.kind),
            (DOCKER_MANIFEST_LIST, ManifestKind::Index)
        );
    }

    #[test]
    fn empty_layers_and_manifests_are_allowed() {
        let mut v = image();
        v["layers"] = json!([]);
        assert!(parse(None, &v).unwrap().layers.is_empty());
        let mut v = index();
        v["manifests"] = json!([]);
        assert!(parse(None, &v).unwrap().manifests.is_empty());
    }

    #[test]
    fn header_decides_when_body_has_no_media_type() {
        let mut v = image();
        v.as_object_mut().unwrap().remove("mediaType");
        let m = parse(
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
            &v,
        )
        .unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        let e = parse_err(None, &v);
        assert!(e.to_string().contains("absent"), "{}", e);
        let e = parse_err(Some("application/json"), &v);
        assert!(e.to_string().contains("application/json"), "{}", e);
    }

    #[test]
    fn body_decides_when_header_is_generic_or_absent() {
        for ct in [None, Some("application/json"), Some(""), Some("text/plain")] {
            let m = parse(ct, &image()).unwrap();
            assert_eq!(m.media_type, OCI_MANIFEST);
        }
    }

    #[test]
    fn header_and_body_must_agree() {
        let e = parse_err(Some(OCI_INDEX), &image());
        assert!(e.to_string().contains("does not match"), "{}", e);
        let e = parse_err(Some(DOCKER_MANIFEST), &image());
        assert!(e.to_string().contains("does not match"));
        // Same type, different spelling: fine.
        let m = parse(
            Some(" Application/VND.oci.image.manifest.v1+json ;x=y"),
            &image(),
        )
        .unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        let mut v = image();
        v["mediaType"] = json!("APPLICATION/vnd.oci.image.manifest.v1+json; a=b");
        assert_eq!(
            parse(Some(OCI_MANIFEST), &v).unwrap().media_type,
            OCI_MANIFEST
        );
        // A known header with an unknown body type is a mismatch too.
        let mut v = image();
        v["mediaType"] = json!("application/vnd.example.thing");
        parse_err(Some(OCI_MANIFEST), &v);
    }

    #[test]
    fn unknown_media_types_are_rejected_and_named() {
        let mut v = image();
        v["mediaType"] = json!("application/vnd.example.thing+json");
        let e = parse_err(None, &v);
        assert!(
            e.to_string().contains("application/vnd.example.thing+json"),
            "{}",
            e.to_string()
        );
        v["mediaType"] = json!(42);
        let e = parse_err(Some(OCI_MANIFEST), &v);
        assert!(e.to_string().contains("mediaType must be a string"));
        v["mediaType"] = json!("x".repeat(100_000));
        let e = parse_err(None, &v);
        assert!(e.to_string().len() < 1000, "error echo is bounded");
    }

    #[test]
    fn body_shape_follows_the_effective_type() {
        // An index body pushed as an image lacks config.
        let mut v = index();
        v.as_object_mut().unwrap().remove("mediaType");
        let e = parse_err(Some(OCI_MANIFEST), &v);
        assert!(e.to_string().contains("config is required"), "{}", e);
        // An image body pushed as an index lacks manifests.
        let mut v = image();
        v.as_object_mut().unwrap().remove("mediaType");
        let e = parse_err(Some(OCI_INDEX), &v);
        assert!(e.to_string().contains("manifests is required"), "{}", e);
    }

    #[test]
    fn schema_version_must_be_two() {
        for bad in [
            json!(1),
            json!(3),
            json!(0),
            json!(-2),
            json!(2.0),
            json!("2"),
            json!(null),
            json!(2.5),
            json!(1e300),
        ] {
            let mut v = image();
            v["schemaVersion"] = bad.clone();
            let e = parse_err(None, &v);
            assert!(e.to_string().contains("schema"), "{bad}: {}", e);
        }
        let mut v = image();
        v.as_object_mut().unwrap().remove("schemaVersion");
        let e = parse_err(None, &v);
        assert!(e.to_string().contains("schemaVersion is required"));
        // schemaVersion 1 is called out as schema 1.
        let mut v = image();
        v["schemaVersion"] = json!(1);
        let e = parse_err(None, &v);
        assert!(
            e.to_string().contains("schema 1 manifests are unsupported"),
            "{}",
            e.to_string()
        );
    }

    #[test]
    fn schema1_is_unsupported() {
        let schema1 = json!({
            "schemaVersion": 1, "name": "a/b", "tag": "latest", "architecture": "amd64",
            "fsLayers": [], "history": [], "signatures": []
        });
        for ct in [Some(DOCKER_SCHEMA1), Some(DOCKER_SCHEMA1_SIGNED), None] {
            let e = parse_err(ct, &schema1);
            assert!(e.to_string().contains("unsupported"), "{}", e);
        }
        // Even with a schemaVersion 2 body, a schema 1 Content-Type or mediaType is refused.
        let e = parse_err(Some(DOCKER_SCHEMA1_SIGNED), &image());
        assert!(e.to_string().contains("schema 1"));
        let mut v = image();
        v["mediaType"] = json!(DOCKER_SCHEMA1);
        let e = parse_err(None, &v);
        assert!(e.to_string().contains("schema 1"));
    }

    #[test]
    fn body_must_be_a_json_object() {
        for body in [
            &b""[..],
            b"   ",
            b"null",
            b"[]",
            b"2",
            b"\"x\"",
            b"{",
            b"{\"schemaVersion\":2,}",
            b"\xff\xfe",
            b"{} trailing",
            b"\0",
        ] {
            err_bytes(Some(OCI_MANIFEST), body);
        }
        let e = err_bytes(None, b"[1,2]");
        assert!(e.to_string().contains("JSON object"), "{}", e);
        assert!(e.to_string().contains("array"));
    }

    #[test]
    fn deeply_nested_json_does_not_overflow() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        err_bytes(None, deep.as_bytes());
        let mut nested = String::from(r#"{"schemaVersion":2,"mediaType":""#);
        nested.push_str(OCI_MANIFEST);
        nested.push_str(r#"","x":"#);
        nested.push_str(&"{\"a\":".repeat(50_000));
        err_bytes(None, nested.as_bytes());
    }

    #[test]
    fn config_and_layers_are_required_and_typed() {
        let mut v = image();
        v.as_object_mut().unwrap().remove("config");
        assert!(parse_err(None, &v)
            .to_string()
            .contains("config is required"));

        let mut v = image();
        v.as_object_mut().unwrap().remove("layers");
        assert!(parse_err(None, &v)
            .to_string()
            .contains("layers is required"));

        for bad in [json!({}), json!(null), json!("x"), json!(1)] {
            let mut v = image();
            v["layers"] = bad;
            assert!(parse_err(None, &v)
                .to_string()
                .contains("layers must be an array"));
        }
        for bad in [json!([]), json!(null), json!("x")] {
            let mut v = image();
            v["config"] = bad;
            assert!(parse_err(None, &v)
                .to_string()
                .contains("config must be a descriptor"));
        }
        for bad in [json!({}), json!(null)] {
            let mut v = index();
            v["manifests"] = bad;
            assert!(parse_err(None, &v)
                .to_string()
                .contains("manifests must be an array"));
        }
    }

    #[test]
    fn descriptor_errors_name_the_field() {
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "mediaType",
                Value::Null,
                "layers[1].mediaType must be a string",
            ),
            (
                "mediaType",
                json!(5),
                "layers[1].mediaType must be a string",
            ),
            (
                "mediaType",
                json!(""),
                "layers[1].mediaType \"\" is not a valid media type",
            ),
            ("mediaType", json!("no-slash"), "layers[1].mediaType"),
            ("mediaType", json!("a/b\r\nX: y"), "layers[1].mediaType"),
            (
                "digest",
                json!("sha256:abc"),
                "layers[1].digest \"sha256:abc\" is not a valid digest",
            ),
            ("digest", json!("md5:abc"), "layers[1].digest"),
            (
                "digest",
                json!("sha256:../../../etc/passwd"),
                "layers[1].digest",
            ),
            ("digest", json!(D1.to_uppercase()), "layers[1].digest"),
            ("digest", json!(1), "layers[1].digest must be a string"),
            (
                "size",
                json!(-1),
                "layers[1].size must be a non-negative integer",
            ),
            (
                "size",
                json!(1.5),
                "layers[1].size must be a non-negative integer",
            ),
            (
                "size",
                json!(1.0),
                "layers[1].size must be a non-negative integer",
            ),
            (
                "size",
                json!("100"),
                "layers[1].size must be a non-negative integer",
            ),
            (
                "size",
                json!(null),
                "layers[1].size must be a non-negative integer",
            ),
            (
                "size",
                json!(u64::MAX),
                "layers[1].size must be a non-negative integer",
            ),
            ("size", json!(i64::MAX as u64 + 1), "layers[1].size"),
            (
                "artifactType",
                json!(1),
                "layers[1].artifactType must be a string",
            ),
            ("artifactType", json!("bogus"), "layers[1].artifactType"),
            (
                "annotations",
                json!([]),
                "layers[1].annotations must be an object",
            ),
            (
                "annotations",
                json!({"k": 1}),
                "layers[1].annotations[\"k\"] must be a string",
            ),
            (
                "annotations",
                json!({"k": {"x": "y"}}),
                "layers[1].annotations",
            ),
        ];
        for (field, bad, expected) in cases {
            let mut v = image();
            v["layers"][1][field] = bad.clone();
            let e = parse_err(None, &v);
            assert!(e.to_string().contains(expected), "{field}={bad}: {}", e);
        }
        for field in ["mediaType", "digest", "size"] {
            let mut v = index();
            v["manifests"][0].as_object_mut().unwrap().remove(field);
            let e = parse_err(None, &v);
            assert!(
                e.to_string()
                    .contains(&format!("manifests[0].{field} is required")),
                "{}",
                e.to_string()
            );
            let mut v = image();
            v["config"].as_object_mut().unwrap().remove(field);
            let e = parse_err(None, &v);
            assert!(e
                .to_string()
                .contains(&format!("config.{field} is required")));
        }
    }

    #[test]
    fn sizes_at_the_limits() {
        let mut v = image();
        v["layers"][0]["size"] = json!(0);
        v["layers"][1]["size"] = json!(i64::MAX);
        let m = parse(None, &v).unwrap();
        assert_eq!(m.layers[0].size, 0);
        assert_eq!(m.layers[1].size, i64::MAX as u64);
        // A number too large for u64 in the raw text.
        let body = serde_json::to_string(&image())
            .unwrap()
            .replace("\"size\":2", "\"size\":184467440737095516160000");
        let e = err_bytes(None, body.as_bytes());
        assert!(e.to_string().contains("config.size"), "{}", e);
    }

    #[test]
    fn subject_artifact_type_and_annotations() {
        let mut v = image();
        v["subject"] = json!({
            "mediaType": OCI_MANIFEST, "digest": D3, "size": 7,
            "annotations": { "a": "b" }
        });
        v["artifactType"] = json!("application/vnd.example.sbom.v1");
        v["annotations"] = json!({ "org.opencontainers.image.created": "2024-01-01T00:00:00Z" });
        v["layers"][0]["artifactType"] = json!("application/vnd.example.layer");
        v["layers"][0]["annotations"] = json!({ "k": "v", "ünïcode": "✓" });
        let m = parse(Some(OCI_MANIFEST), &v).unwrap();
        let subject = m.subject.as_ref().unwrap();
        assert_eq!(subject.digest.as_str(), D3);
        assert_eq!(subject.size, 7);
        assert_eq!(subject.annotations.as_ref().unwrap()["a"], "b");
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.example.sbom.v1")
        );
        assert_eq!(
            m.annotations.as_ref().unwrap()["org.opencontainers.image.created"],
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(
            m.layers[0].artifact_type.as_deref(),
            Some("application/vnd.example.layer")
        );
        assert_eq!(m.layers[0].annotations.as_ref().unwrap()["ünïcode"], "✓");
        assert_eq!(m.layers[1].artifact_type, None);
        assert_eq!(m.layers[1].annotations, None);
    }

    #[test]
    fn empty_artifact_type_counts_as_missing() {
        let mut v = image();
        v["artifactType"] = json!("");
        let m = parse(None, &v).unwrap();
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let mut v = index();
        v["artifactType"] = json!("");
        assert_eq!(parse(None, &v).unwrap().artifact_type, None);
        let mut v = index();
        v["artifactType"] = json!("application/vnd.example.idx");
        assert_eq!(
            parse(None, &v).unwrap().artifact_type.as_deref(),
            Some("application/vnd.example.idx")
        );
        let mut v = image();
        v["config"]["mediaType"] = json!(crate::oci::media::OCI_EMPTY_CONFIG);
        v["artifactType"] = json!("application/vnd.example.sig");
        assert_eq!(
            parse(None, &v).unwrap().artifact_type.as_deref(),
            Some("application/vnd.example.sig")
        );
    }

    #[test]
    fn top_level_optional_fields_are_typed() {
        for (field, bad, expected) in [
            ("subject", json!("x"), "subject must be a descriptor"),
            (
                "subject",
                json!({"mediaType": OCI_MANIFEST, "size": 1}),
                "subject.digest is required",
            ),
            ("subject", json!(null), "subject must be a descriptor"),
            (
                "artifactType",
                json!(["a/b"]),
                "artifactType must be a string",
            ),
            ("artifactType", json!("not a type"), "artifactType"),
            ("annotations", json!("x"), "annotations must be an object"),
            (
                "annotations",
                json!({"a": null}),
                "annotations[\"a\"] must be a string",
            ),
        ] {
            let mut v = image();
            v[field] = bad;
            let e = parse_err(None, &v);
            assert!(e.to_string().contains(expected), "{field}: {}", e);
        }
        // null for artifactType/annotations is treated as absent.
        let mut v = image();
        v["artifactType"] = Value::Null;
        v["annotations"] = Value::Null;
        assert!(parse(None, &v).is_ok());
    }

    #[test]
    fn unknown_fields_pass() {
        let mut v = image();
        v["x-vendor"] = json!({ "anything": [1, 2, 3] });
        v["config"]["urls"] = json!(["https://example.com"]);
        v["config"]["data"] = json!("e30=");
        v["layers"][0]["platform"] = json!({ "os": "linux" });
        assert!(parse(None, &v).is_ok());
        let mut v = index();
        v["config"] = json!("ignored for an index");
        v["layers"] = json!(42);
        assert!(parse(None, &v).is_ok());
    }

    #[test]
    fn index_children_are_validated() {
        let mut v = index();
        v["manifests"][1]["digest"] = json!("sha256:zz");
        let e = parse_err(None, &v);
        assert!(e.to_string().contains("manifests[1].digest"), "{}", e);
        let mut v = index();
        v["manifests"][0] = json!(7);
        let e = parse_err(None, &v);
        assert!(e
            .to_string()
            .contains("manifests[0] must be a descriptor object"));
    }

    #[test]
    fn unicode_and_escaped_input() {
        // JSON escapes decode before checks: an escaped newline in a media type is still caught.
        let body = serde_json::to_string(&image()).unwrap().replace(
            "application/vnd.oci.image.config.v1+json",
            "application/x\\u000ay",
        );
        let e = err_bytes(None, body.as_bytes());
        assert!(e.to_string().contains("config.mediaType"), "{}", e);
        let mut v = image();
        v["mediaType"] = json!("application/vnd.oci.image.manifest.v1+jsön");
        parse_err(None, &v);
    }

    #[test]
    fn sha512_digests_are_accepted() {
        let d512 = Digest::of(crate::oci::digest::Algorithm::Sha512, b"x");
        let mut v = image();
        v["layers"][0]["digest"] = json!(d512.as_str());
        let m = parse(None, &v).unwrap();
        assert_eq!(m.layers[0].digest, d512);
    }
}
