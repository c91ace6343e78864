//! Blob uploads: monolithic (`POST ?digest=`), chunked and streamed (`PATCH`), completion
//! (`PUT ?digest=`), status (`GET`), cancel (`DELETE`) and cross-repository mount.
//! Bytes go to the session's file through io_uring (O_DIRECT where the filesystem allows) as
//! they arrive and are hashed on the way, so completing a 10 GB upload costs an fsync and a
//! rename, not a second read.

use super::{body_error, upload_location, Registry};
use crate::buf::AlignedBuf;
use crate::error::{Error, ErrorCode, Result};
use crate::http::body::Body;
use crate::http::query::query_get;
use crate::http::range::parse_upload_range;
use crate::http::request::Request;
use crate::http::response::Response;
use crate::oci::digest::{Algorithm, Digest, Hasher};
use crate::oci::name::validate_name;
use crate::store::appender::{Appender, PendingWrite};
use crate::store::uploads::{hash_file, Lease, Session};
use std::sync::Arc;

pub async fn start(
    reg: &Registry,
    req: &Request,
    body: &mut Body<'_>,
    name: &str,
) -> Result<Response> {
    if let Some(mount) = query_get(req.query(), "mount") {
        let digest = Digest::parse(&mount)?;
        if let Some(from) = query_get(req.query(), "from") {
            if validate_name(&from).is_ok() && reg.meta.mount_blob(&from, name, &digest).await? {
                return Ok(created(name, &digest));
            }
        }
        // Not mountable from there: the spec says to answer with an ordinary session.
    }
    if let Some(digest) = query_get(req.query(), "digest") {
        let digest = Digest::parse(&digest)?;
        let session = reg.uploads.start(&reg.pool, &reg.meta, name, false).await?;
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
    let session = reg.uploads.start(&reg.pool, &reg.meta, name, true).await?;
    Ok(session_response(202, name, &session, 0).header("OCI-Chunk-Min-Length", "1"))
}

pub fn status(reg: &Registry, name: &str, id: &str) -> Result<Response> {
    let session = reg.uploads.get(name, id)?;
    Ok(session_response(204, name, &session, session.offset()))
}

pub async fn patch(
    reg: &Registry,
    req: &Request,
    body: &mut Body<'_>,
    name: &str,
    id: &str,
) -> Result<Response> {
    let session = reg.uploads.get(name, id)?;
    let mut lease = reg.uploads.lease(session.clone())?;
    append_chunk(reg, req, body, &mut lease, name).await?;
    Ok(session_response(202, name, &session, lease.offset))
}

pub async fn finish(
    reg: &Registry,
    req: &Request,
    body: &mut Body<'_>,
    name: &str,
    id: &str,
) -> Result<Response> {
    let session = reg.uploads.get(name, id)?;
    let digest = query_get(req.query(), "digest").ok_or_else(|| {
        Error::new(ErrorCode::DigestInvalid)
            .with_message("the digest query parameter is required to complete an upload")
    })?;
    let digest = Digest::parse(&digest)?;
    let mut lease = reg.uploads.lease(session.clone())?;
    append_chunk(reg, req, body, &mut lease, name).await?;
    complete(reg, &mut lease, &digest).await?;
    Ok(created(name, &digest))
}

pub async fn cancel(reg: &Registry, name: &str, id: &str) -> Result<Response> {
    let session = reg.uploads.get(name, id)?;
    let lease = reg.uploads.lease(session.clone())?;
    reg.uploads.discard(&reg.pool, &reg.meta, &session).await?;
    drop(lease);
    Ok(Response::new(204))
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
fn check_chunk_range(
    req: &Request,
    body: &Body<'_>,
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
        return Err(Error::new(ErrorCode::BlobUploadInvalid)
            .with_status(416)
            .with_message("chunk does not start where the upload stands")
            .with_detail(serde_json::json!({
                "expected_start": lease.offset,
                "range": header,
                "location": upload_location(name, &lease.session.id),
            })));
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

/// A PATCH or final PUT body: checked against its Content-Range, appended, and its length
/// checked against what the range announced.
async fn append_chunk(
    reg: &Registry,
    req: &Request,
    body: &mut Body<'_>,
    lease: &mut Lease,
    name: &str,
) -> Result<()> {
    let expected = check_chunk_range(req, body, lease, name)?;
    append_body(reg, lease, body).await?;
    match expected {
        Some(len) if len != body.received() => Err(Error::new(ErrorCode::SizeInvalid)
            .with_message("chunk length differs from its Content-Range")
            .with_detail(serde_json::json!({ "expected": len, "received": body.received() }))),
        _ => Ok(()),
    }
}

/// Streams the request body to the end of the session's data file in three overlapping
/// stages: the event loop reads buffer N+1 from the socket while buffer N is hashed on the
/// hashing pool and buffer N-1 is written. Hashing a full buffer costs about as much as
/// receiving it, so keeping it off the event loop lets one upload use a second core (and
/// keeps a 1 MiB hash from stalling the loop's other connections); small buffers, a chunk's
/// unaligned head or a small blob, are hashed in place, where the handoff would cost more.
///
/// The session's hasher is taken out for the duration and put back only when every byte it
/// saw was written: if this ends early (an error, or the request dropped at shutdown), the
/// completion hashes the file instead, so the digest always covers exactly what is on disk.
///
/// A write that fails may have left part of its buffer in the file: the file is cut back to
/// the bytes counted. A write refused for lack of space undoes the whole request: the session
/// goes back to the offset and hash state this request found, so the client's 507 means the
/// request had no effect and the upload stands where it was last acknowledged.
async fn append_body(reg: &Registry, lease: &mut Lease, body: &mut Body<'_>) -> Result<()> {
    if body.is_done() {
        return Ok(());
    }
    let mut out = Appender::open(&lease.session.data_path(), lease.offset)
        .await
        .map_err(|e| Error::io("opening upload data", e))?;
    let found = (lease.offset, lease.hasher.clone());
    let mut hasher = lease.hasher.take();
    let mut hashing: Option<Hashing> = None;
    let mut writing: Option<PendingWrite> = None;
    let result = loop {
        let mut buf = AlignedBuf::take();
        let want = out.next_len();
        let mut read = Ok(());
        while buf.len() < want && !body.is_done() {
            let room = want - buf.len();
            let (r, b) = body.read_at_most(buf, room).await;
            buf = b;
            if let Err(e) = r {
                read = Err(body_error(e));
                break;
            }
        }
        // The buffer before this one: its hash is done once the hasher is back; then it
        // follows the one before it to the file.
        let hashed = match hashing.take() {
            Some(job) => match job.await {
                Ok((h, done)) => {
                    hasher = Some(h);
                    Some(done)
                }
                Err(e) => {
                    buf.give();
                    break Err(e);
                }
            },
            None => None,
        };
        if let Err(e) = write_after(lease, &mut out, &mut writing, hashed).await {
            buf.give();
            break Err(e);
        }
        if let Err(e) = read {
            // What was read of this buffer is not written: the hash would not match the file.
            hasher = None;
            buf.give();
            break Err(e);
        }
        if buf.is_empty() {
            buf.give();
            break Ok(());
        }
        match hasher.take() {
            Some(h) if buf.len() >= OFFLOAD_HASH_MIN => hashing = Some(hash_on_pool(reg, h, buf)),
            mut h => {
                if let Some(h) = h.as_mut() {
                    h.update(buf.as_slice());
                }
                hasher = h;
                if let Err(e) = write_after(lease, &mut out, &mut writing, Some(buf)).await {
                    break Err(e);
                }
            }
        }
    };
    // Every exit above has taken back the buffer being hashed; only a write may be in
    // flight, and it is counted whatever the result.
    debug_assert!(hashing.is_none());
    let result = match (result, writing.take()) {
        (Ok(()), Some(w)) => settle(lease, w).await,
        (r, Some(w)) => {
            let _ = settle(lease, w).await;
            r
        }
        (r, None) => r,
    };
    let written_to = out.end();
    out.close().await;
    match &result {
        Ok(()) => lease.hasher = hasher,
        Err(e) => {
            if e.is_storage_full() {
                (lease.offset, lease.hasher) = found;
            }
            if written_to > lease.offset {
                cut_back(reg, lease).await;
            }
        }
    }
    result
}

/// Truncates the session's data file to its offset after a failed append. If even that
/// fails, the session cannot be trusted and is discarded (the client starts over).
async fn cut_back(reg: &Registry, lease: &Lease) {
    let (path, len) = (lease.session.data_path(), lease.offset);
    let cut = reg
        .pool
        .run(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(len)
        })
        .await;
    if !matches!(cut, Ok(Ok(()))) {
        crate::log::warn(format_args!(
            "upload {}: the data file could not be cut back to {len} bytes; discarding it",
            lease.session.id
        ));
        let _ = reg
            .uploads
            .discard(&reg.pool, &reg.meta, &lease.session)
            .await;
    }
}

/// Buffers at least this large are hashed on the hashing pool rather than on the event loop.
const OFFLOAD_HASH_MIN: usize = 256 * 1024;

/// A hash of one buffer on the hashing pool; it resolves with the hasher and the buffer.
type Hashing = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(Hasher, AlignedBuf)>>>>;

fn hash_on_pool(reg: &Registry, mut hasher: Hasher, buf: AlignedBuf) -> Hashing {
    let pool = reg.hashing.clone();
    Box::pin(async move {
        pool.run(move || {
            hasher.update(buf.as_slice());
            (hasher, buf)
        })
        .await
    })
}

/// Waits for the write in flight (counting it), then starts writing `next` after it: one write
/// at a time keeps them in file order. On an error `next` is given back unwritten.
async fn write_after(
    lease: &mut Lease,
    out: &mut Appender,
    writing: &mut Option<PendingWrite>,
    next: Option<AlignedBuf>,
) -> Result<()> {
    if let Some(w) = writing.take() {
        if let Err(e) = settle(lease, w).await {
            if let Some(buf) = next {
                buf.give();
            }
            return Err(e);
        }
    }
    *writing = next.map(|buf| out.write(buf));
    Ok(())
}

/// Waits for a write and counts its bytes in the session's offset.
async fn settle(lease: &mut Lease, write: PendingWrite) -> Result<()> {
    let (r, buf) = write.await;
    buf.give();
    let n = r.map_err(|e| Error::io("writing upload data", e))?;
    lease.offset += n;
    Ok(())
}

/// Verifies the digest against the bytes received, then makes the blob durable and visible:
/// fsync the data, rename it into the tree, fsync the directory, commit the metadata. On a
/// mismatch or a failed fsync nothing is stored and the session is removed; when a later step
/// fails (a full disk) the session keeps its bytes and the completion can be retried.
async fn complete(reg: &Registry, lease: &mut Lease, expected: &Digest) -> Result<u64> {
    let session: Arc<Session> = lease.session.clone();
    let path = session.data_path();
    let file = monoio::fs::File::open(&path)
        .await
        .map_err(|e| Error::io("opening upload data", e))?;
    let synced = file.sync_all().await;
    let _ = file.close().await;
    if let Err(e) = synced {
        // After a failed fsync the kernel may have dropped the pages it could not write, and
        // a second fsync would not say so: the data cannot be trusted any more.
        let _ = reg.uploads.discard(&reg.pool, &reg.meta, &session).await;
        return Err(Error::io("fsync of upload data", e));
    }
    let actual = match (expected.algorithm(), lease.hasher.take()) {
        (Algorithm::Sha256, Some(h)) => h.finish(),
        (algorithm, _) => {
            let p = path.clone();
            reg.pool
                .run(move || hash_file(&p, algorithm))
                .await?
                .map_err(|e| Error::io("hashing upload data", e))?
        }
    };
    if &actual != expected {
        reg.uploads.discard(&reg.pool, &reg.meta, &session).await?;
        return Err(
            Error::new(ErrorCode::DigestInvalid).with_detail(serde_json::json!({
                "expected": expected.as_str(),
                "received": actual.as_str(),
            })),
        );
    }
    let size = lease.offset;
    reg.blobs.commit(path, expected).await?;
    reg.meta.link_blob(&session.repo, expected, size).await?;
    reg.uploads.discard(&reg.pool, &reg.meta, &session).await?;
    Ok(size)
}
