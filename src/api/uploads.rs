//! Blob uploads: monolithic (`POST ?digest=`), chunked and streamed (`PATCH`), completion
//! (`PUT ?digest=`), status (`GET`), cancel (`DELETE`) and cross-repository mount. This is the
//! HTTP side; the bytes' way to the blob tree is `store::upload_writer`.
//!
//! A session belongs to the caller who started it: the handlers pass the caller's user name
//! (none when anonymous) down to where the session is found, and anyone else is told the
//! upload is unknown (`store::uploads` says why).

use super::{body_error, upload_location, Registry};
use crate::api::error::{Error, ErrorCode, Result};
use crate::auth::Identity;
use crate::buf::AlignedBuf;
use crate::http::body::Body;
use crate::http::query::query_get;
use crate::http::range::parse_upload_range;
use crate::http::request::Request;
use crate::http::response::Response;
use crate::http::transport::Transport;
use crate::oci::digest::Digest;
use crate::oci::name::validate_name;
use crate::store::upload_writer::{moved, AppendError, ByteSource};
use crate::store::uploads::{Lease, Session};

pub async fn start<T: Transport>(
    reg: &Registry,
    req: &Request,
    body: &mut Body<'_, T>,
    name: &str,
    caller: &Identity,
    may_mount: bool,
) -> Result<Response> {
    // Without pull on `from` (access rules), no mount: an ordinary session, as below.
    if let Some(mount) = query_get(req.query(), "mount").filter(|_| may_mount) {
        let digest = Digest::parse(&mount)?;
        if let Some(from) = query_get(req.query(), "from") {
            if validate_name(&from).is_ok() {
                if let Some(size) = reg.meta.blob_in_repo(&from, &digest).await? {
                    reg.within_quota_for(name, &digest, size).await?;
                }
                if reg.meta.mount_blob(&from, name, &digest).await? {
                    return Ok(created(name, &digest));
                }
            }
        }
        // Not mountable from there: the spec says to answer with an ordinary session.
    }
    if let Some(digest) = query_get(req.query(), "digest") {
        let digest = Digest::parse(&digest)?;
        // Before a byte of the body is read.
        let declared = body.declared_length().unwrap_or(0);
        reg.within_quota_for(name, &digest, declared).await?;
        let session = reg
            .uploads
            .start(&reg.pool, &reg.meta, name, caller.user(), false)
            .await?;
        let mut lease = reg.uploads.lease(session.clone())?;
        let outcome = async {
            append_body(reg, &mut lease, body).await?;
            complete(reg, &mut lease, &digest).await
        }
        .await;
        if outcome.is_err() {
            let _ = reg.uploads.discard(&reg.pool, &reg.meta, &session).await;
        }
        outcome?;
        return Ok(created(name, &digest));
    }
    // A repository at its quota takes no new session (a blob it already holds needs none).
    reg.within_quota(name, 1).await?;
    let session = reg
        .uploads
        .start(&reg.pool, &reg.meta, name, caller.user(), true)
        .await?;
    Ok(session_response(202, name, &session, 0).header("OCI-Chunk-Min-Length", "1"))
}

pub async fn status(reg: &Registry, name: &str, caller: &Identity, id: &str) -> Result<Response> {
    let session = reg
        .uploads
        .current(&reg.pool, &reg.meta, name, caller.user(), id)
        .await?;
    Ok(session_response(204, name, &session, session.offset()))
}

pub async fn patch<T: Transport>(
    reg: &Registry,
    req: &Request,
    body: &mut Body<'_, T>,
    name: &str,
    caller: &Identity,
    id: &str,
) -> Result<Response> {
    let mut lease = lease(reg, name, caller, id).await?;
    append_chunk(reg, req, body, &mut lease, name).await?;
    Ok(session_response(202, name, &lease.session, lease.offset))
}

pub async fn finish<T: Transport>(
    reg: &Registry,
    req: &Request,
    body: &mut Body<'_, T>,
    name: &str,
    caller: &Identity,
    id: &str,
) -> Result<Response> {
    let digest = query_get(req.query(), "digest").ok_or_else(|| {
        Error::new(ErrorCode::DigestInvalid)
            .with_message("the digest query parameter is required to complete an upload")
    })?;
    let digest = Digest::parse(&digest)?;
    let mut lease = lease(reg, name, caller, id).await?;
    append_chunk(reg, req, body, &mut lease, name).await?;
    complete(reg, &mut lease, &digest).await?;
    Ok(created(name, &digest))
}

pub async fn cancel(reg: &Registry, name: &str, caller: &Identity, id: &str) -> Result<Response> {
    let lease = lease(reg, name, caller, id).await?;
    reg.uploads
        .discard(&reg.pool, &reg.meta, &lease.session)
        .await?;
    drop(lease);
    Ok(Response::new(204))
}

/// The caller's session for one request, wherever it was started (see
/// `Uploads::lease_current`).
async fn lease(reg: &Registry, name: &str, caller: &Identity, id: &str) -> Result<Lease> {
    Ok(reg
        .uploads
        .lease_current(&reg.pool, &reg.meta, name, caller.user(), id)
        .await?)
}

fn created(name: &str, digest: &Digest) -> Response {
    Response::new(201)
        .header("Location", format!("/v2/{name}/blobs/{digest}"))
        .header("Docker-Content-Digest", digest.as_str().to_owned())
}

/// Location, Range and id of a session. `Range` is `0-<last byte>`, and `0-0` for an empty
/// upload, as distribution answers and clients expect.
fn session_response(status: u16, name: &str, session: &Session, offset: u64) -> Response {
    Response::new(status)
        .header("Location", upload_location(name, &session.id))
        .header("Range", format!("0-{}", offset.saturating_sub(1)))
        .header("Docker-Upload-UUID", session.id.clone())
}

/// A chunk with `Content-Range` must start where the upload stands (416 otherwise, with the
/// current Range so the client can resume). Returns the chunk length it announces.
fn check_chunk_range<T: Transport>(
    req: &Request,
    body: &Body<'_, T>,
    lease: &Lease,
    name: &str,
) -> Result<Option<u64>> {
    let Some(header) = req.header("content-range") else {
        return Ok(None);
    };
    let Some((start, end)) = parse_upload_range(header) else {
        return Err(Error::new(ErrorCode::BlobUploadInvalid)
            .with_status(416)
            .with_message("invalid Content-Range")
            .with_detail(header.chars().take(128).collect::<String>()));
    };
    if start != lease.offset {
        return Err(out_of_order(
            "chunk does not start where the upload stands",
            name,
            &lease.session.id,
            lease.offset,
            Some(header),
        ));
    }
    let len = end - start + 1;
    if let Some(declared) = body.declared_length() {
        if declared != len {
            return Err(Error::new(ErrorCode::SizeInvalid)
                .with_message("Content-Range and Content-Length disagree")
                .with_detail(
                    serde_json::json!({ "content_range": header, "content_length": declared }),
                ));
        }
    }
    Ok(Some(len))
}

/// The answer to a chunk that does not go on where the upload stands (416, the spec's), with
/// where it does, so that the client can resume from there.
fn out_of_order(message: &str, name: &str, id: &str, offset: u64, range: Option<&str>) -> Error {
    let mut detail = serde_json::json!({
        "expected_start": offset,
        "location": upload_location(name, id),
    });
    if let Some(range) = range {
        detail["range"] = range.into();
    }
    Error::new(ErrorCode::BlobUploadInvalid)
        .with_status(416)
        .with_message(message)
        .with_detail(detail)
}

/// A PATCH or final PUT body: checked against its Content-Range, appended, and its length
/// checked against what the range announced.
async fn append_chunk<T: Transport>(
    reg: &Registry,
    req: &Request,
    body: &mut Body<'_, T>,
    lease: &mut Lease,
    name: &str,
) -> Result<()> {
    let expected = check_chunk_range(req, body, lease, name)?;
    // A chunk of known length that would take the repository past its quota is refused
    // before it is read (its session stays, for a smaller chunk or a cancel).
    if let Some(len) = body.declared_length().filter(|n| *n > 0) {
        if reg.quotas.limit(name).is_some() {
            reg.within_quota(name, lease.offset.saturating_add(len))
                .await?;
        }
    }
    append_body(reg, lease, body).await?;
    match expected {
        Some(len) if len != body.received() => Err(Error::new(ErrorCode::SizeInvalid)
            .with_message("chunk length differs from its Content-Range")
            .with_detail(serde_json::json!({ "expected": len, "received": body.received() }))),
        _ => Ok(()),
    }
}

/// A request body as the upload writer's source of bytes.
struct BodySource<'a, 'b, T>(&'a mut Body<'b, T>);

impl<T: Transport> ByteSource for BodySource<'_, '_, T> {
    type Error = Error;

    async fn read_into(&mut self, buf: AlignedBuf, max: usize) -> (Result<usize>, AlignedBuf) {
        let (r, buf) = self.0.read_at_most(buf, max).await;
        (r.map_err(body_error), buf)
    }

    fn is_done(&self) -> bool {
        self.0.is_done()
    }
}

/// Appends the body. A request that another one on the same session (a client's retry of
/// it, on another node) beat to the row gets the out-of-order chunk's answer: the session
/// stands where the other left it, and this body was not taken.
async fn append_body<T: Transport>(
    reg: &Registry,
    lease: &mut Lease,
    body: &mut Body<'_, T>,
) -> Result<()> {
    let appended = reg
        .upload_writer()
        .append(lease, &mut BodySource(body))
        .await;
    match appended {
        Err(AppendError::Store(e)) => Err(match moved(&e) {
            Some(offset) => out_of_order(
                "another request on this upload session went first",
                &lease.session.repo,
                &lease.session.id,
                offset,
                None,
            ),
            None => e.into(),
        }),
        r => Ok(r?),
    }
}

/// Completes the session after the quota check of its whole size; a refused session is
/// discarded (its bytes were never a blob).
async fn complete(reg: &Registry, lease: &mut Lease, expected: &Digest) -> Result<u64> {
    if let Err(e) = reg
        .within_quota_for(&lease.session.repo, expected, lease.offset)
        .await
    {
        let _ = reg
            .uploads
            .discard_leased(&reg.pool, &reg.meta, lease)
            .await;
        return Err(e);
    }
    Ok(reg.upload_writer().complete(lease, expected).await?)
}
