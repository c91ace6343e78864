//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`: served from the blob file, with
//! single-range support; visible only in repositories the blob was pushed, mounted or
//! referenced in.

use super::Registry;
use crate::api::error::{Error, ErrorCode, Result};
use crate::http::range::{content_range, parse_range, unsatisfied_range, ByteRange};
use crate::http::request::{Method, Request};
use crate::http::response::{Body, Response};
use crate::oci::digest::Digest;
use crate::store::blobs::Served;

/// How long a redirect's presigned URL stays valid: long enough for a slow client to start,
/// short enough that a leaked URL soon stops working.
const REDIRECT_VALID: std::time::Duration = std::time::Duration::from_secs(20 * 60);

pub async fn get(reg: &Registry, req: &Request, name: &str, digest: &str) -> Result<Response> {
    let digest = Digest::parse(digest)?;
    let unknown = || Error::new(ErrorCode::BlobUnknown).with_detail(digest.as_str());
    let size = reg
        .meta
        .blob_in_repo(name, &digest)
        .await?
        .ok_or_else(unknown)?;
    let range = parse_range(req.header("range"), size);
    let base = |status: u16| {
        Response::new(status)
            .header("Docker-Content-Digest", digest.as_str().to_owned())
            .header("Accept-Ranges", "bytes")
            .header("Content-Type", "application/octet-stream")
    };
    let (status, start, end) = match range {
        ByteRange::Full => (200, 0, size),
        ByteRange::Partial { start, end } => (206, start, end + 1),
        ByteRange::Unsatisfiable => {
            let e = Error::new(ErrorCode::RangeInvalid)
                .with_message("requested range not satisfiable")
                .with_detail(format!("blob size is {size}"));
            return Ok(e
                .response()
                .header("Content-Range", unsatisfied_range(size)));
        }
    };
    let mut resp = base(status);
    if status == 206 {
        resp = resp.header("Content-Range", content_range(start, end - 1, size));
    }
    if req.method == Method::Head {
        // A client that finds the blob skips its upload and references it next: garbage
        // collection's grace period runs from here (coalesced, written every few seconds).
        reg.meta.note_blob_use(&digest);
        resp.body = Body::LengthOnly(end - start);
        return Ok(resp);
    }
    if reg.limits.redirect {
        // The client takes the bytes from S3 itself, its Range with it.
        if let Some(url) = reg.blobs.presigned_get(&digest, REDIRECT_VALID).await? {
            return Ok(Response::new(307)
                .header("Location", url)
                .header("Docker-Content-Digest", digest.as_str().to_owned()));
        }
    }
    let missing = || Error::internal("blob file missing", digest.as_str());
    let differs = || Error::internal("blob file size differs from metadata", digest.as_str());
    // A whole blob may be sent while the cache fetches it; a range waits for the whole file.
    resp.body = if status == 200 {
        match reg
            .blobs
            .get_streaming(&digest)
            .await?
            .ok_or_else(missing)?
        {
            Served::File(blob) if blob.len() == size => Body::File(blob, start, end),
            Served::Growing(blob) if blob.len() == size => Body::Growing(blob, size),
            _ => return Err(differs()),
        }
    } else {
        let blob = reg.blobs.get(&digest).await?.ok_or_else(missing)?;
        if blob.len() != size {
            return Err(differs());
        }
        Body::File(blob, start, end)
    };
    Ok(resp)
}

pub async fn delete(reg: &Registry, name: &str, digest: &str) -> Result<Response> {
    let digest = Digest::parse(digest)?;
    if !reg.meta.unlink_blob(name, &digest).await? {
        return Err(Error::new(ErrorCode::BlobUnknown).with_detail(digest.as_str()));
    }
    Ok(Response::new(202).header("Docker-Content-Digest", digest))
}
