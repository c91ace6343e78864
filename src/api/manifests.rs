//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`. Manifests are stored
//! byte-exact as blobs; what the API needs to answer without reading them (media type, size,
//! subject, artifact type) is in the metadata index, so a HEAD by tag touches no file.

use super::{body_error, Registry};
use crate::error::{Error, ErrorCode, Result};
use crate::http::body::{Body, BodyError};
use crate::http::request::{Method, Request};
use crate::http::response::{Body as RespBody, Response};
use crate::meta::{now_millis, ManifestRecord, RefKind};
use crate::oci::digest::Digest;
use crate::oci::manifest::{parse_manifest, Descriptor};
use crate::oci::name::Reference;

fn resolve(reg: &Registry, name: &str, reference: &Reference) -> Result<Digest> {
    let digest = match reference {
        Reference::Digest(d) => Some(d.clone()),
        Reference::Tag(t) => reg.meta.resolve_tag(name, t),
    };
    digest.ok_or_else(|| unknown(reg, name, reference))
}

fn unknown(reg: &Registry, name: &str, reference: &Reference) -> Error {
    if reg.meta.repo_exists(name) {
        Error::new(ErrorCode::ManifestUnknown).with_detail(reference.to_string())
    } else {
        Error::new(ErrorCode::NameUnknown).with_detail(name)
    }
}

pub fn get(reg: &Registry, req: &Request, name: &str, reference: &str) -> Result<Response> {
    let reference = Reference::parse(reference)?;
    let digest = resolve(reg, name, &reference)?;
    let record = reg
        .meta
        .manifest(name, &digest)
        .ok_or_else(|| unknown(reg, name, &reference))?;
    let mut resp = Response::new(200)
        .header("Content-Type", media_type_value(&record.media_type))
        .header("Docker-Content-Digest", digest.as_str().to_owned());
    if req.method == Method::Head {
        resp.body = RespBody::LengthOnly(record.size);
        return Ok(resp);
    }
    let blob = reg
        .blobs
        .get(&digest)
        .map_err(|e| Error::internal("opening manifest", e))?
        .ok_or_else(|| Error::internal("manifest file missing", digest.as_str()))?;
    let len = blob.len();
    resp.body = RespBody::Blob(blob, 0, len);
    Ok(resp)
}

pub async fn put(
    reg: &Registry,
    req: &Request,
    body: &mut Body<'_>,
    name: &str,
    reference: &str,
) -> Result<Response> {
    let reference = Reference::parse(reference)?;
    let limit = reg.limits.max_manifest_bytes;
    let bytes = match body.read_to_vec(limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return Err(Error::new(ErrorCode::ManifestInvalid)
                .with_status(413)
                .with_message(format!("manifest exceeds the limit of {limit} bytes")))
        }
        Err(e) => return Err(body_error(e)),
    };
    let parsed = parse_manifest(req.header("content-type"), &bytes)?;
    let digest = match &reference {
        Reference::Digest(d) => {
            let actual = Digest::of(d.algorithm(), &bytes);
            if &actual != d {
                return Err(
                    Error::new(ErrorCode::DigestInvalid).with_detail(serde_json::json!({
                        "expected": d.as_str(),
                        "received": actual.as_str(),
                    })),
                );
            }
            actual
        }
        Reference::Tag(_) => Digest::sha256_of(&bytes),
    };
    let mut refs = Vec::new();
    for blob in parsed.referenced_blobs() {
        check_blob(reg, name, blob)?;
    }
    if let Some(c) = &parsed.config {
        refs.push((c.digest.clone(), RefKind::Config));
    }
    for l in &parsed.layers {
        refs.push((l.digest.clone(), RefKind::Layer));
    }
    for child in &parsed.manifests {
        match reg.meta.manifest(name, &child.digest) {
            Some(m) if m.size == child.size => {}
            Some(m) => return Err(size_mismatch(child, m.size)),
            None => {
                return Err(Error::new(ErrorCode::ManifestBlobUnknown)
                    .with_message("the index lists a manifest unknown to this repository")
                    .with_detail(child.digest.as_str()))
            }
        }
        refs.push((child.digest.clone(), RefKind::Manifest));
    }
    if let Some(s) = &parsed.subject {
        refs.push((s.digest.clone(), RefKind::Subject));
    }
    reg.blobs.put_bytes(&digest, bytes.clone()).await?;
    let record = ManifestRecord {
        digest: digest.clone(),
        media_type: parsed.media_type.clone(),
        size: bytes.len() as u64,
        artifact_type: parsed.artifact_type.clone(),
        subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
        annotations: parsed.annotations.clone(),
        created: now_millis(),
    };
    let tag = reference.as_tag().map(str::to_string);
    reg.meta.put_manifest(name, record, refs, tag).await?;
    let mut resp = Response::new(201)
        .header("Location", format!("/v2/{name}/manifests/{digest}"))
        .header("Docker-Content-Digest", digest);
    if let Some(s) = &parsed.subject {
        resp = resp.header("OCI-Subject", s.digest.as_str().to_owned());
    }
    Ok(resp)
}

/// The stored media type as a header value: the common ones are constants, so answering a
/// pull allocates nothing for them.
fn media_type_value(media_type: &str) -> std::borrow::Cow<'static, str> {
    match crate::oci::media::KNOWN_MANIFEST_TYPES
        .into_iter()
        .find(|known| *known == media_type)
    {
        Some(known) => known.into(),
        None => media_type.to_string().into(),
    }
}

/// Layers that clients must fetch from elsewhere (Windows foreign layers) are never pushed,
/// so distribution does not require them; neither do we.
fn is_nondistributable(media_type: &str) -> bool {
    media_type.contains("foreign") || media_type.contains("nondistributable")
}

fn check_blob(reg: &Registry, name: &str, blob: &Descriptor) -> Result<()> {
    if is_nondistributable(&blob.media_type) {
        return Ok(());
    }
    match reg.meta.blob_in_repo(name, &blob.digest) {
        Some(size) if size == blob.size => Ok(()),
        Some(size) => Err(size_mismatch(blob, size)),
        None => Err(Error::new(ErrorCode::ManifestBlobUnknown).with_detail(blob.digest.as_str())),
    }
}

fn size_mismatch(d: &Descriptor, actual: u64) -> Error {
    Error::new(ErrorCode::ManifestInvalid)
        .with_message("a descriptor's size differs from the stored content")
        .with_detail(serde_json::json!({
            "digest": d.digest.as_str(),
            "descriptor_size": d.size,
            "stored_size": actual,
        }))
}

pub async fn delete(reg: &Registry, name: &str, reference: &str) -> Result<Response> {
    let reference = Reference::parse(reference)?;
    let existed = match &reference {
        Reference::Tag(t) => reg.meta.delete_tag(name, t).await?,
        Reference::Digest(d) => reg.meta.delete_manifest(name, d).await?,
    };
    if !existed {
        return Err(unknown(reg, name, &reference));
    }
    Ok(Response::new(202))
}
