//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`. Manifests are stored
//! byte-exact as blobs; what the API needs to answer without reading them (media type, size,
//! subject, artifact type) is in the metadata index, so a HEAD by tag touches no file.

use super::{body_error, Registry};
use crate::api::error::{Error, ErrorCode, Result};
use crate::http::body::{Body, BodyError};
use crate::http::request::{Method, Request};
use crate::http::response::{Body as RespBody, Response};
use crate::http::transport::Transport;
use crate::meta::{now_millis, Conflict, Error as MetaError, ManifestRecord, RefKind, Required};
use crate::oci::digest::Digest;
use crate::oci::manifest::{parse_manifest, Descriptor};
use crate::oci::name::Reference;

/// MANIFEST_UNKNOWN in a repository that exists, NAME_UNKNOWN otherwise.
async fn unknown(reg: &Registry, name: &str, reference: String) -> Error {
    match reg.meta.repo_exists(name).await {
        Ok(true) => Error::new(ErrorCode::ManifestUnknown).with_detail(reference),
        Ok(false) => Error::new(ErrorCode::NameUnknown).with_detail(name),
        Err(e) => e.into(),
    }
}

pub async fn get(reg: &Registry, req: &Request, name: &str, reference: &str) -> Result<Response> {
    let reference = parse_for_read(reg, name, reference).await?;
    // By tag in one engine call: an engine that asks another store (PostgreSQL) answers it in
    // one round trip.
    let record = match &reference {
        Reference::Tag(t) => reg.meta.tagged_manifest(name, t).await?,
        Reference::Digest(d) => reg.meta.manifest(name, d).await?,
    };
    let Some(record) = record else {
        return Err(unknown(reg, name, reference.to_string()).await);
    };
    let digest = &record.digest;
    if let Some(scanning) = &reg.scanning {
        let verdict = scanning
            .verdict(&reg.pool, name, digest)
            .await
            .map_err(|e| Error::internal("judging a pull by the vulnerability policy", e))?;
        if let crate::scan::policy::Verdict::Block(why) = verdict {
            // 412, as Harbor answers a pull its vulnerability policy refuses; the message
            // is what docker, podman and skopeo show.
            return Err(Error::new(ErrorCode::Denied)
                .with_status(412)
                .with_message(why));
        }
    }
    reg.meta.note_pull(name, digest);
    let mut resp = Response::new(200)
        .header("Content-Type", media_type_value(&record.media_type))
        .header("Docker-Content-Digest", digest.as_str().to_owned());
    if req.method == Method::Head {
        resp.body = RespBody::LengthOnly(record.size);
        return Ok(resp);
    }
    let blob = reg
        .blobs
        .get(digest)
        .await?
        .ok_or_else(|| Error::internal("manifest file missing", digest.as_str()))?;
    let len = blob.len();
    resp.body = RespBody::File(blob, 0, len);
    Ok(resp)
}

/// A read by a reference that is not a valid tag asks for a manifest that cannot exist: the
/// spec answers a manifest absent from the repository with 404, and the conformance suite
/// checks exactly that (`GET`/`HEAD .../manifests/.INVALID_MANIFEST_NAME`), so reads get
/// `MANIFEST_UNKNOWN` where a PUT gets `TAG_INVALID`. A malformed digest stays
/// `DIGEST_INVALID`: a reference with a `:` was meant as a digest, and saying what is wrong
/// with it serves the client better.
async fn parse_for_read(reg: &Registry, name: &str, reference: &str) -> Result<Reference> {
    match Reference::parse(reference) {
        Err(crate::oci::Error::TagInvalid { .. }) => {
            Err(unknown(reg, name, reference.chars().take(128).collect()).await)
        }
        parsed => Ok(parsed?),
    }
}

pub async fn put<T: Transport>(
    reg: &Registry,
    req: &Request,
    body: &mut Body<'_, T>,
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
    // What must be in the repository is checked by the metadata write itself, inside its
    // transaction: a blob deleted or unlinked concurrently cannot leave the manifest
    // pointing at nothing. The same checks run ahead from reads, so that a refused manifest
    // leaves no file behind in the common case.
    let mut requires: Vec<Required> = parsed
        .referenced_blobs()
        .filter(|blob| !is_nondistributable(&blob.media_type))
        .map(|blob| required(blob, RefKind::Layer))
        .collect();
    let mut refs = Vec::new();
    if let Some(c) = &parsed.config {
        refs.push((c.digest.clone(), RefKind::Config));
    }
    for l in &parsed.layers {
        refs.push((l.digest.clone(), RefKind::Layer));
    }
    for child in &parsed.manifests {
        requires.push(required(child, RefKind::Manifest));
        refs.push((child.digest.clone(), RefKind::Manifest));
    }
    if let Some(s) = &parsed.subject {
        refs.push((s.digest.clone(), RefKind::Subject));
    }
    reg.meta.precheck(name, &requires).await?;
    reg.within_quota_for(name, &digest, bytes.len() as u64)
        .await?;
    reg.meta.claim_blob(&digest).await?;
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
    let rule = tag.as_deref().and_then(|t| reg.immutable.rule(name, t));
    let put = reg
        .meta
        .put_manifest_tagged(name, record, refs, tag.clone(), rule.is_some(), requires)
        .await;
    if let (Err(MetaError::Conflict(Conflict::TagImmutable { tag, digest })), Some(rule)) =
        (&put, rule)
    {
        return Err(immutable(name, tag, rule).with_detail(serde_json::json!({
            "tag": tag,
            "digest": digest.as_str(),
        })));
    }
    put?;
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

/// A descriptor as something the repository must hold; `kind` tells a manifest from a blob
/// (the kind of a blob, config or layer, does not change the check).
fn required(d: &Descriptor, kind: RefKind) -> Required {
    Required {
        digest: d.digest.clone(),
        size: d.size,
        kind,
    }
}

/// The refusal of a change to an immutable tag, naming the rule: 409 (the tag's state, not
/// the caller's rights, refuses it) with `DENIED`, which docker prints as `denied: <message>`.
fn immutable(name: &str, tag: &str, rule: &crate::lifecycle::Immutable) -> Error {
    Error::new(ErrorCode::Denied)
        .with_status(409)
        .with_message(format!(
            "tag {tag} of {name} is immutable ({rule}): push under another tag"
        ))
}

pub async fn delete(reg: &Registry, name: &str, reference: &str) -> Result<Response> {
    let reference = Reference::parse(reference)?;
    // Deleting an immutable tag, or a manifest that carries one, would free the tag for
    // another digest. (Checked ahead of the delete, not inside it: a protected tag pushed onto
    // the manifest at that very moment goes with it.)
    let held = match &reference {
        _ if reg.immutable.is_empty() => Vec::new(),
        Reference::Tag(t) => match reg.meta.tag(name, t).await? {
            Some(_) => vec![t.to_string()],
            None => Vec::new(),
        },
        Reference::Digest(d) => reg.meta.tags_of(name, d).await?,
    };
    if let Some((tag, rule)) = held
        .iter()
        .find_map(|t| Some((t, reg.immutable.rule(name, t)?)))
    {
        return Err(immutable(name, tag, rule));
    }
    let existed = match &reference {
        Reference::Tag(t) => reg.meta.delete_tag(name, t).await?,
        Reference::Digest(d) => reg.meta.delete_manifest(name, d).await?,
    };
    if !existed {
        return Err(unknown(reg, name, reference.to_string()).await);
    }
    Ok(Response::new(202))
}
