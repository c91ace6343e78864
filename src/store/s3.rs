//! Committed blobs in an S3 bucket, at `<prefix>blobs/<algorithm>/<hex>` (or where a pointer
//! there names, for blobs pushed in parts: [`pointer`]): the second [`BlobBackend`]. Requests
//! are signed by rusty-s3 (sans-IO SigV4, presigned URLs) and sent by [`conn`], our HTTP/1.1
//! on the caller's monoio loop: no tokio, no thread hop per request, pooled keep-alive
//! connections per loop.
//!
//! A put of a stream never makes a wrong blob visible: content smaller than one part is held
//! in memory, checked against its size and digest, then PUT; larger content goes up as a
//! multipart upload whose parts are uploaded as they fill, and only completed (the moment the
//! object appears) once the whole stream has been counted and hashed; any failure aborts the
//! upload. Part sizes start at S3's minimum of 5 MiB and grow with the announced size so that
//! S3's 10,000 parts cover any blob up to 100 GiB and beyond; memory is one part buffer per
//! put. A put of a local file, verified by the caller, goes up from the file's ranges, two
//! parts in flight, without a part buffer or a second hash.
//!
//! Every request goes through [`S3Backend::call`], its body from memory or a range of a file
//! ([`Body`]): sent again (bounded tries, exponential backoff with jitter, [`retry`]) when it
//! failed in a way that may pass and is safe to repeat, and its failure read in the store's
//! terms once, in [`status_error`] and [`failure`]: a missing object is [`Error::NotFound`],
//! an unreachable, silent or overloaded S3 is [`Error::Unavailable`] with `retry` (the API
//! answers 503 with Retry-After), refused credentials are `Unavailable` without. `https://`
//! endpoints are verified against the system's roots and an optional CA file ([`tls`]).

pub(crate) mod check;
pub(crate) mod conn;
#[cfg(test)]
mod faults;
mod pointer;
mod resolve;
mod retry;
mod staging;
pub(crate) mod tls;

use super::backend::{BlobBackend, Chunks, Fut, Listed, Whole};
use super::error::{Error, Result};
use crate::http::response_head::ResponseHead as Head;
use crate::oci::digest::{Digest, Hasher};
pub use conn::Timeouts;
use conn::{Endpoint, Exchange, Failure};
use monoio::buf::SliceMut;
pub use retry::Retry;
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// Largest piece of a [`BlobBackend::read`].
const READ_PIECE: usize = 1024 * 1024;
/// Largest piece of a request body handed to the socket at once.
const WRITE_PIECE: usize = 1024 * 1024;
/// S3's smallest part (but the last).
const MIN_PART: u64 = 5 * 1024 * 1024;
/// S3's most parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// How long a signed request stays valid: requests are signed just before they are sent.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// Largest XML answer read (a list page of 1,000 keys is about 300 KiB).
const MAX_XML: usize = 4 * 1024 * 1024;
/// Free retries of a request whose parked connection turned out closed (before the tries).
const STALE_RETRIES: u32 = 2;
/// The rate at which S3 is expected to move bytes server-side at the least (assembling a
/// completed multipart upload): such a request's first byte may take this much longer per
/// byte it moves. AWS answers in seconds, but an S3-compatible server may not (moto
/// assembles 1 GiB in about 4.5 s, and s3s-fs writes the whole object out again); a slow
/// step is not a silent server, and repeating it would only add to its load.
const SERVER_SIDE_RATE: u64 = 16 * 1024 * 1024;

/// What a request that moves `bytes` server-side may add to the wait for its first byte.
fn server_side_allowance(bytes: u64) -> Duration {
    Duration::from_secs(bytes / SERVER_SIDE_RATE)
}

/// Where the bucket is and how to reach it.
#[derive(Clone, Debug)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// `http://host:port` or `https://host:port` of any S3-compatible service.
    pub endpoint: String,
    /// `endpoint/bucket/key` rather than `bucket.endpoint/key`.
    pub path_style: bool,
    /// Put before every key (`registry/`); empty for none.
    pub prefix: String,
    pub access_key: String,
    pub secret_key: String,
    /// A temporary credential's session token (AWS_SESSION_TOKEN), signed into every request.
    pub session_token: Option<String>,
    /// How long each step of a request may wait (connect, first byte, idle).
    pub timeouts: Timeouts,
    /// How often and after how long a request safe to repeat is sent again.
    pub retry: Retry,
    /// PEM CA certificates trusted for an `https` endpoint next to the system's
    /// (`storage.s3.ca_file`): a private S3 service's own CA.
    pub ca_file: Option<PathBuf>,
    /// Where clients reach S3 when it differs from `endpoint` (presigned URLs are signed for
    /// the host they are sent to); None: `endpoint`.
    pub public_endpoint: Option<String>,
}

pub struct S3Backend {
    bucket: Bucket,
    /// The bucket as clients reach it (`public_endpoint`), for presigned URLs.
    public: Bucket,
    /// Where requests go: addresses looked up per new connection, TLS, timeouts.
    endpoint: Endpoint,
    credentials: Credentials,
    prefix: String,
    retry: Retry,
}

/// A request's body, which every try sends whole again: bytes in memory, or a range of a
/// file read a piece at a time and read again for a retry (so a part of any size costs a
/// piece of memory). A file is for requests that put the same bytes at the same place
/// however often they are sent (an object or a part), which makes them safe to repeat.
#[derive(Clone)]
pub(crate) enum Body<'a> {
    Bytes(&'a [u8]),
    File(&'a monoio::fs::File, Range<u64>),
}

impl Body<'_> {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::File(_, range) => range.end - range.start,
        }
    }
}

/// One request to send: what it is for (in errors), and whether it may be sent twice.
struct Req<'a> {
    what: &'a str,
    method: &'a str,
    url: &'a Url,
    headers: &'a [(&'a str, String)],
    body: Option<Body<'a>>,
    /// Safe to send again after S3 may have acted on it.
    repeat: bool,
    /// Extra wait for the answer's first byte.
    allowance: Duration,
}

impl<'a> Req<'a> {
    fn new(what: &'a str, method: &'a str, url: &'a Url) -> Req<'a> {
        Req {
            what,
            method,
            url,
            headers: &[],
            body: None,
            repeat: true,
            allowance: Duration::ZERO,
        }
    }
}

impl S3Backend {
    /// Reads the CA roots for an `https` endpoint (file IO: for start-up, not for a loop).
    pub fn new(config: &S3Config) -> std::result::Result<S3Backend, String> {
        let endpoint = Url::parse(&config.endpoint)
            .map_err(|e| format!("S3 endpoint {:?}: {e}", config.endpoint))?;
        let tls = match endpoint.scheme() {
            "https" => Some(
                tls::client_config(config.ca_file.as_deref())
                    .map_err(|e| format!("S3 endpoint {:?}: CA roots: {e}", config.endpoint))?,
            ),
            "http" => None,
            other => {
                return Err(format!(
                    "S3 endpoint {:?}: scheme {other}: http or https",
                    config.endpoint
                ))
            }
        };
        if config.retry.max_tries == 0 {
            return Err("S3 retries: at least one try".into());
        }
        let style = if config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            endpoint,
            style,
            config.bucket.clone(),
            config.region.clone(),
        )
        .map_err(|e| format!("S3 bucket {:?}: {e}", config.bucket))?;
        let public = match &config.public_endpoint {
            Some(url) => {
                let url =
                    Url::parse(url).map_err(|e| format!("S3 public endpoint {url:?}: {e}"))?;
                Bucket::new(url, style, config.bucket.clone(), config.region.clone())
                    .map_err(|e| format!("S3 bucket {:?}: {e}", config.bucket))?
            }
            None => bucket.clone(),
        };
        // The host requests go to: the bucket's own name with virtual-host style.
        let endpoint = Endpoint::new(bucket.base_url(), tls, config.timeouts)?;
        Ok(S3Backend {
            bucket,
            public,
            endpoint,
            credentials: match &config.session_token {
                Some(token) => Credentials::new_with_token(
                    config.access_key.clone(),
                    config.secret_key.clone(),
                    token.clone(),
                ),
                None => Credentials::new(config.access_key.clone(), config.secret_key.clone()),
            },
            prefix: config.prefix.clone(),
            retry: config.retry,
        })
    }

    fn key(&self, digest: &Digest) -> String {
        format!(
            "{}blobs/{}/{}",
            self.prefix,
            digest.algorithm().as_str(),
            digest.hex()
        )
    }

    /// A request on `key` signed with its query and extra headers (user metadata, which S3
    /// wants signed), which rusty-s3's actions do not cover.
    fn sign_with(
        &self,
        method: rusty_s3::Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Url {
        rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            method,
            self.bucket.object_url(key),
            self.credentials.key(),
            self.credentials.secret(),
            self.credentials.token(),
            self.bucket.region(),
            SIGNED_FOR.as_secs(),
            query.iter().copied(),
            headers.iter().copied(),
        )
    }

    /// The digest a listed key names; `None` for keys not of our shape.
    fn digest_of_key(&self, key: &str) -> Option<Digest> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix("blobs/")?;
        let (algorithm, hex) = rest.split_once('/')?;
        let digest = Digest::parse(&format!("{algorithm}:{hex}")).ok()?;
        (digest.algorithm().as_str() == algorithm).then_some(digest)
    }

    /// Sends a request and reads its answer's head: a 2xx answer, or the failure in the
    /// store's terms once the tries allowed are spent. A connection that could not be made is
    /// tried again whatever the request (S3 saw nothing); a broken connection or a retryable
    /// S3 error only for a request safe to repeat. Every try sends the whole body again
    /// ([`Body`]); a body's file that cannot be read fails the request at once.
    async fn call(&self, req: &Req<'_>) -> Result<(Head, Exchange)> {
        let mut tries = 0;
        let mut stale = 0;
        loop {
            tries += 1;
            let last = tries >= self.retry.max_tries;
            let error = match self.try_call(req).await? {
                Ok((head, ex)) if head.is_success() => return Ok((head, ex)),
                Ok((head, mut ex)) => {
                    let text = ex.body(MAX_XML).await.unwrap_or_default();
                    let code = xml_text(&String::from_utf8_lossy(&text), "Code")
                        .unwrap_or("")
                        .to_string();
                    let error = status_error(req.what, head.status, &text);
                    if last || !req.repeat || !retry::retryable_status(head.status, &code) {
                        return Err(error);
                    }
                    error
                }
                Err(Failure::Stale(_)) if req.repeat && stale < STALE_RETRIES => {
                    // Closed by S3 while parked: not a try, and no wait.
                    stale += 1;
                    tries -= 1;
                    continue;
                }
                Err(f @ Failure::Connect(_)) if !last => failure(req.what, f),
                Err(f @ (Failure::Down(_) | Failure::Stale(_) | Failure::Silent(_)))
                    if req.repeat && !last =>
                {
                    failure(req.what, f)
                }
                Err(f) => return Err(failure(req.what, f)),
            };
            let wait = self.retry.backoff(tries, retry::random());
            crate::log::debug(format_args!(
                "S3 {} failed (try {tries} of {}), again in {wait:?}: {error}",
                req.what, self.retry.max_tries
            ));
            monoio::time::sleep(wait).await;
        }
    }

    /// One try of [`S3Backend::call`]: the request's failure on the way inside, a failure
    /// to read its body's file outside.
    async fn try_call(&self, req: &Req<'_>) -> Result<conn::Result<(Head, Exchange)>> {
        let len = req.body.as_ref().map(Body::len);
        let fresh = !req.repeat;
        let start = Exchange::start(&self.endpoint, req.method, req.url, req.headers, len, fresh);
        let mut ex = match start.await {
            Ok(ex) => ex,
            Err(f) => return Ok(Err(f)),
        };
        if let Err(f) = send_body(&mut ex, req.body.clone()).await? {
            return Ok(Err(f));
        }
        Ok(ex.response(req.allowance).await.map(|head| (head, ex)))
    }

    /// A request safe to repeat whose answer is wanted whole (XML, or nothing).
    pub(crate) async fn call_for_body(
        &self,
        what: &str,
        method: &str,
        url: &Url,
        body: Option<Body<'_>>,
    ) -> Result<(Head, Vec<u8>)> {
        let req = Req {
            body,
            ..Req::new(what, method, url)
        };
        self.answer_of(&req).await
    }

    /// The head and whole (small) body of `req`'s 2xx answer.
    async fn answer_of(&self, req: &Req<'_>) -> Result<(Head, Vec<u8>)> {
        let (head, mut ex) = self.call(req).await?;
        let text = ex.body(MAX_XML).await.map_err(|f| failure(req.what, f))?;
        Ok((head, text))
    }

    /// The size of the blob `digest`; `NotFound` when the bucket does not hold it.
    async fn head(&self, digest: &Digest) -> Result<u64> {
        Ok(self.locate(digest).await?.ok_or(Error::NotFound)?.size)
    }

    /// The size of the object at `key` (a HEAD), None when there is none.
    async fn object_size(&self, key: &str) -> Result<Option<u64>> {
        let Some(head) = self.object_head(key).await? else {
            return Ok(None);
        };
        head.content_length
            .map(Some)
            .ok_or_else(|| Error::Io(format!("S3 HEAD {key}: no content-length")))
    }

    /// The answer to a HEAD of `key`, None when there is no object.
    async fn object_head(&self, key: &str) -> Result<Option<Head>> {
        let url = self
            .bucket
            .head_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        match self.call_for_body("HEAD", "HEAD", &url, None).await {
            Ok((head, _)) => Ok(Some(head)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the object at `key`; one that is not there is no error.
    async fn delete_key(&self, key: &str) -> Result<()> {
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        match self.call_for_body("DELETE", "DELETE", &url, None).await {
            Ok(_) | Err(Error::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stores what `src` delivers under `digest` once it is `size` bytes that digest to
    /// `digest`; see the module doc for how.
    async fn put(&self, digest: &Digest, size: u64, src: &mut dyn Chunks) -> Result<()> {
        let key = self.key(digest);
        let part_size = part_size(size) as usize;
        let mut hasher = Hasher::new(digest.algorithm());
        let mut buf: Vec<u8> = Vec::new();
        let mut total = 0u64;
        let mut multipart: Option<Multipart> = None;
        let outcome: Result<()> = async {
            while let Some(piece) = src.next().await? {
                total += piece.len() as u64;
                if total > size {
                    return Err(Error::SizeMismatch {
                        expected: size,
                        actual: total,
                    });
                }
                hasher.update(&piece);
                buf.extend_from_slice(&piece);
                while buf.len() >= part_size {
                    if multipart.is_none() {
                        multipart = Some(self.create_multipart(&key).await?);
                    }
                    let m = multipart.as_mut().expect("created above");
                    self.add_part(&key, m, Body::Bytes(&buf[..part_size]))
                        .await?;
                    buf.drain(..part_size);
                }
            }
            if total != size {
                return Err(Error::SizeMismatch {
                    expected: size,
                    actual: total,
                });
            }
            let actual = hasher.finish();
            if actual != *digest {
                return Err(Error::DigestMismatch {
                    expected: digest.to_string(),
                    actual: actual.to_string(),
                });
            }
            match multipart.as_mut() {
                None => {
                    self.put_object("PUT", &key, Body::Bytes(&buf)).await?;
                }
                Some(m) => {
                    if !buf.is_empty() {
                        self.add_part(&key, m, Body::Bytes(&buf)).await?;
                    }
                    self.complete_multipart(&key, m, size).await?;
                }
            }
            Ok(())
        }
        .await;
        if outcome.is_err() {
            if let Some(m) = &multipart {
                // Best effort: an upload left behind holds storage until a bucket lifecycle
                // rule or a sweep removes it; the put's own error is what the caller needs.
                let _ = self.abort(&key, &m.id).await;
            }
        }
        outcome
    }

    /// Stores the `size` bytes of `file` (complete and verified) at `key`: one PUT up to a
    /// part's size, else a multipart upload of its ranges, two parts in flight. The bytes go
    /// from the file a piece at a time (and again from the file on a retry), so memory is
    /// two pieces, and nothing is hashed again.
    async fn put_from_file(&self, key: &str, file: &monoio::fs::File, size: u64) -> Result<()> {
        let part = part_size(size);
        if size <= part {
            return self
                .put_object("PUT", key, Body::File(file, 0..size))
                .await
                .map(drop);
        }
        let mut m = self.create_multipart(key).await?;
        let sent: Result<()> = async {
            let mut at = 0;
            while at < size {
                let first = at..(at + part).min(size);
                let second = first.end..(first.end + part).min(size);
                let n = part_number(m.etags.len() + 1)?;
                let one = self.upload_part(key, &m.id, n, Body::File(file, first.clone()));
                if second.is_empty() {
                    m.etags.push(one.await?);
                } else {
                    let n = part_number(m.etags.len() + 2)?;
                    let two = self.upload_part(key, &m.id, n, Body::File(file, second.clone()));
                    let (one, two) = monoio::join!(one, two);
                    m.etags.extend([one?, two?]);
                }
                at = first.end.max(second.end);
            }
            self.complete_multipart(key, &m, size).await
        }
        .await;
        if sent.is_err() {
            // Best effort, as in `put`.
            let _ = self.abort(key, &m.id).await;
        }
        sent
    }

    /// Aborts the multipart upload `upload` at `key`; one already gone is no error.
    async fn abort(&self, key: &str, upload: &str) -> Result<()> {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.credentials), key, upload)
            .sign(SIGNED_FOR);
        match self.call_for_body("abort", "DELETE", &url, None).await {
            Ok(_) | Err(Error::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create_multipart(&self, key: &str) -> Result<Multipart> {
        // Signed here rather than by rusty-s3's CreateMultipartUpload, which sends
        // `?uploads=1`: S3 and s3s-fs ignore the value, moto 5.2.6 answers 500 to it.
        let url = self.sign_with(rusty_s3::Method::Post, key, &[("uploads", "")], &[]);
        // Not sent twice: a second upload would be left behind, unknown to anyone.
        let req = Req {
            body: Some(Body::Bytes(b"")),
            repeat: false,
            ..Req::new("create multipart upload", "POST", &url)
        };
        let (_, body) = self.answer_of(&req).await?;
        let text = String::from_utf8_lossy(&body);
        let parsed = CreateMultipartUpload::parse_response(&text)
            .map_err(|e| Error::Io(format!("S3 create multipart upload answer: {e}")))?;
        Ok(Multipart {
            id: parsed.upload_id().to_string(),
            etags: Vec::new(),
        })
    }

    /// Uploads `body` as the next part of `m`, and notes its ETag.
    async fn add_part(&self, key: &str, m: &mut Multipart, body: Body<'_>) -> Result<()> {
        let number = part_number(m.etags.len() + 1)?;
        let etag = self.upload_part(key, &m.id, number, body).await?;
        m.etags.push(etag);
        Ok(())
    }

    /// Uploads `body` as part `number` of the multipart upload `upload` at `key`; the part's
    /// ETag. Safe to repeat: the same bytes to the same part.
    async fn upload_part(
        &self,
        key: &str,
        upload: &str,
        number: u16,
        body: Body<'_>,
    ) -> Result<String> {
        let url = self
            .bucket
            .upload_part(Some(&self.credentials), key, number, upload)
            .sign(SIGNED_FOR);
        let (head, _) = self
            .call_for_body("upload part", "PUT", &url, Some(body))
            .await?;
        etag_of(&head, &format!("upload part {number} of {key}"))
    }

    /// PUTs `body` as the object at `key` (`what` it is, in errors); its ETag.
    async fn put_object(&self, what: &str, key: &str, body: Body<'_>) -> Result<String> {
        let url = self
            .bucket
            .put_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let (head, _) = self.call_for_body(what, "PUT", &url, Some(body)).await?;
        etag_of(&head, what)
    }

    /// Safe to repeat: a completion whose first try succeeded unseen finds its upload gone,
    /// which [`S3Backend::put`] reads as success once the object is there.
    async fn complete_multipart(&self, key: &str, m: &Multipart, size: u64) -> Result<()> {
        let action = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            &m.id,
            m.etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let req = Req {
            body: Some(Body::Bytes(body.as_bytes())),
            allowance: server_side_allowance(size),
            ..Req::new("complete multipart upload", "POST", &url)
        };
        let answer = match self.answer_of(&req).await {
            Ok((_, answer)) => answer,
            // A completion retried after a lost answer finds its upload gone: the object is
            // there, whole, if the first try completed it.
            Err(Error::NotFound) if self.object_size(key).await? == Some(size) => return Ok(()),
            Err(e) => return Err(e),
        };
        // S3 may answer 200 and still fail the completion, in the body.
        let text = String::from_utf8_lossy(&answer);
        if text.contains("<Error>") {
            return Err(status_error("complete multipart upload", 500, &answer));
        }
        Ok(())
    }

    /// Objects under `prefix` (the whole key), in key order after `start_after`, at most
    /// `limit` (`usize::MAX`: all, a page at a time) that `keep` takes, given each key, size
    /// and time: `(key, size, unix ms of LastModified)`.
    async fn list_keys(
        &self,
        prefix: &str,
        start_after: Option<String>,
        limit: usize,
        mut keep: impl FnMut(&str, u64, i64) -> bool,
    ) -> Result<Vec<(String, u64, i64)>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            action.with_prefix(prefix);
            action.with_max_keys((limit - out.len()).clamp(1, 1000));
            match (&token, &start_after) {
                (Some(t), _) => action.with_continuation_token(t.as_str()),
                (None, Some(s)) => action.with_start_after(s.as_str()),
                (None, None) => {}
            }
            let url = action.sign(SIGNED_FOR);
            let (_, body) = self.call_for_body("list", "GET", &url, None).await?;
            let text = String::from_utf8_lossy(&body);
            let page = ListObjectsV2::parse_response(&text)
                .map_err(|e| Error::Io(format!("S3 list answer: {e}")))?;
            for object in page.contents {
                let size = object.size.unwrap_or(0);
                let modified = object
                    .last_modified
                    .as_deref()
                    .and_then(crate::log::parse_utc_millis)
                    .unwrap_or(i64::MAX);
                if !keep(&object.key, size, modified) {
                    continue;
                }
                out.push((object.key, size, modified));
                if out.len() == limit {
                    return Ok(out);
                }
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    async fn list_page(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<Listed>> {
        let prefix = format!("{}blobs/", self.prefix);
        let start_after = after.map(|d| self.key(d));
        let keys = self
            .list_keys(&prefix, start_after, limit, |k, _, _| {
                self.digest_of_key(k).is_some()
            })
            .await?;
        let mut out = Vec::with_capacity(keys.len());
        for (key, mut size, modified) in keys {
            let Some(digest) = self.digest_of_key(&key) else {
                continue;
            };
            if size == 0 {
                // Perhaps a pointer, whose size is in its metadata (a listing has none); gone
                // since the listing, it is not listed.
                match self.locate(&digest).await? {
                    Some(located) => size = located.size,
                    None => continue,
                }
            }
            out.push(Listed {
                digest,
                size,
                modified,
            });
        }
        Ok(out)
    }

    /// Every key a pointer names (the assembled objects that are blobs' bytes).
    async fn pointed_keys(&self) -> Result<std::collections::HashSet<String>> {
        let prefix = format!("{}blobs/", self.prefix);
        // Pointers are the empty objects at blob keys.
        let empty = self
            .list_keys(&prefix, None, usize::MAX, |k, size, _| {
                size == 0 && self.digest_of_key(k).is_some()
            })
            .await?;
        let mut pointed = std::collections::HashSet::new();
        for (key, ..) in empty {
            let Some(digest) = self.digest_of_key(&key) else {
                continue;
            };
            if let Some(l) = self.locate(&digest).await?.filter(|l| l.pointed) {
                pointed.insert(l.key);
            }
        }
        Ok(pointed)
    }
}

struct Multipart {
    id: String,
    /// Of the parts uploaded so far, in order.
    etags: Vec<String>,
}

/// The number of part `n` (from 1), refused beyond S3's 10,000. Pure.
fn part_number(n: usize) -> Result<u16> {
    u16::try_from(n)
        .ok()
        .filter(|n| u64::from(*n) <= MAX_PARTS)
        .ok_or_else(|| Error::Io("an S3 upload of more than 10,000 parts".into()))
}

/// A part's or object's ETag from its answer.
fn etag_of(head: &Head, what: &str) -> Result<String> {
    head.header("etag")
        .map(str::to_string)
        .ok_or_else(|| Error::Io(format!("S3 {what}: no ETag")))
}

/// Bytes per part for a blob of `size`: S3's 5 MiB minimum, or (rounded up to whole MiB) the
/// size that fits the blob into 10,000 parts. Pure.
fn part_size(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let fit = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    fit.max(MIN_PART)
}

/// A request that got no (whole) answer, in the store's terms: an S3 that cannot be reached
/// or broke off may be back soon; an answer we cannot read is the operator's business.
fn failure(what: &str, f: Failure) -> Error {
    match f {
        Failure::Connect(m) | Failure::Stale(m) | Failure::Down(m) | Failure::Silent(m) => {
            down(what, m)
        }
        Failure::Protocol(m) => Error::Io(format!("S3 {what}: {m}")),
    }
}

fn down(what: &str, cause: String) -> Error {
    Error::Unavailable {
        retry: true,
        cause: format!("S3 {what}: {cause}"),
    }
}

/// An S3 error answer in the store's terms: what the registry can tell its client, not
/// S3's status. Pure.
fn status_error(what: &str, status: u16, body: &[u8]) -> Error {
    let text = String::from_utf8_lossy(body);
    let code = xml_text(&text, "Code").unwrap_or("");
    let message = xml_text(&text, "Message").unwrap_or("");
    let cause = format!("S3 {what}: {status} {code} {message}")
        .trim()
        .to_string();
    match (status, code) {
        (404, "NoSuchBucket") => Error::Unavailable {
            retry: false,
            cause,
        },
        (404, _) => Error::NotFound,
        // A completion naming a part by an ETag the upload no longer holds.
        (400, "InvalidPart") => Error::Corrupt(cause),
        (401 | 403, _) => Error::Unavailable {
            retry: false,
            cause,
        },
        (408 | 429 | 500 | 502 | 503 | 504, _) | (_, "SlowDown" | "InternalError") => {
            Error::Unavailable { retry: true, cause }
        }
        _ => Error::Io(cause),
    }
}

/// The text of the first `<tag>` in a small XML document. Pure.
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find("</")?;
    Some(&xml[start..start + len])
}

/// Writes `body` after the request's head: bytes a piece at a time (the socket takes its buffer
/// by value, so each piece is copied once), a file's range read a piece at a time into one
/// buffer that goes to the socket and comes back for the next. The request's failure inside,
/// a failure to read the file outside (not worth another try).
async fn send_body(ex: &mut Exchange, body: Option<Body<'_>>) -> Result<conn::Result<()>> {
    match body {
        None => {}
        Some(Body::Bytes(bytes)) => {
            for piece in bytes.chunks(WRITE_PIECE) {
                if let Err(f) = ex.write(piece).await {
                    return Ok(Err(f));
                }
            }
        }
        Some(Body::File(file, range)) => {
            let mut buf = Vec::with_capacity(WRITE_PIECE);
            let mut pos = range.start;
            while pos < range.end {
                let want = (range.end - pos).min(WRITE_PIECE as u64) as usize;
                buf.clear();
                let (r, slice) = file.read_at(SliceMut::new(buf, 0, want), pos).await;
                buf = slice.into_inner();
                let n = r.map_err(|e| Error::io("reading a file sent to S3", e))?;
                if n == 0 {
                    return Err(Error::Io(
                        "a file sent to S3 ended before the range sent".into(),
                    ));
                }
                buf = match ex.write_owned(buf).await {
                    Ok(buf) => buf,
                    Err(f) => return Ok(Err(f)),
                };
                pos += n as u64;
            }
        }
    }
    Ok(Ok(()))
}

/// A ranged GET's body, piece by piece.
struct Download {
    ex: Exchange,
}

impl Chunks for Download {
    fn next(&mut self) -> Fut<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            self.ex
                .next_piece(READ_PIECE)
                .await
                .map_err(|f| failure("read", f))
        })
    }
}

impl S3Backend {
    /// Bytes `range` of the object at `key`, piece by piece.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Box<dyn Chunks + '_>> {
        if range.is_empty() {
            return Ok(Box::new(Whole(None)));
        }
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let ranged = [("range", format!("bytes={}-{}", range.start, range.end - 1))];
        let req = Req {
            headers: &ranged,
            ..Req::new("GET", "GET", &url)
        };
        let (head, ex) = self.call(&req).await?;
        let want = range.end - range.start;
        let got: Option<u64> = head.content_length;
        let whole_object_for_a_prefix = head.status == 200 && range.start == 0;
        if got != Some(want) && !(whole_object_for_a_prefix && got.is_some_and(|g| g >= want)) {
            return Err(Error::Io(format!(
                "S3 GET {key} bytes {range:?}: answered {} with {got:?} bytes",
                head.status
            )));
        }
        if got != Some(want) {
            // A server that ignored Range: read the prefix, drop the connection after.
            return Ok(Box::new(Prefix {
                inner: Download { ex },
                left: want,
            }));
        }
        Ok(Box::new(Download { ex }))
    }
}

/// `send` with the local file `src` open, closed after whatever the outcome.
async fn with_file<T>(
    src: &Path,
    send: impl AsyncFnOnce(&monoio::fs::File) -> Result<T>,
) -> Result<T> {
    let file = monoio::fs::File::open(src)
        .await
        .map_err(|e| Error::io("opening a local file to send to S3", e))?;
    let out = send(&file).await;
    let _ = file.close().await;
    out
}

impl BlobBackend for S3Backend {
    fn stat<'a>(&'a self, digest: &'a Digest) -> Fut<'a, u64> {
        Box::pin(self.head(digest))
    }

    fn read<'a>(&'a self, digest: &'a Digest, range: Range<u64>) -> Fut<'a, Box<dyn Chunks + 'a>> {
        Box::pin(async move {
            let key = self.locate(digest).await?.ok_or(Error::NotFound)?.key;
            self.get_range(&key, range).await
        })
    }

    fn open<'a>(&'a self, digest: &'a Digest) -> Fut<'a, (u64, Box<dyn Chunks + 'a>)> {
        Box::pin(async move {
            let located = self.locate(digest).await?.ok_or(Error::NotFound)?;
            let chunks = self.get_range(&located.key, 0..located.size).await?;
            Ok((located.size, chunks))
        })
    }

    fn put_file<'a>(&'a self, src: &'a Path, digest: &'a Digest) -> Fut<'a, ()> {
        Box::pin(async move {
            if self.present(digest).await? {
                return Ok(());
            }
            with_file(src, async |file| {
                let size = file
                    .metadata()
                    .await
                    .map_err(|e| Error::io("sizing a staged blob", e))?
                    .len();
                self.put_from_file(&self.key(digest), file, size).await
            })
            .await
        })
    }

    fn put_stream<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        src: &'a mut dyn Chunks,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            if self.present(digest).await? {
                return Ok(());
            }
            self.put(digest, size, src).await
        })
    }

    fn delete<'a>(&'a self, digest: &'a Digest) -> Fut<'a, bool> {
        Box::pin(async move {
            // S3 answers a DELETE the same whether the object was there or not.
            let Some(located) = self.locate(digest).await? else {
                return Ok(false);
            };
            // The pointer first: never one that names nothing.
            self.delete_key(&self.key(digest)).await?;
            if located.pointed {
                self.delete_key(&located.key).await?;
            }
            Ok(true)
        })
    }

    /// Assembled objects of sessions that are gone, named by no pointer: the assembled list
    /// is read before the pointers, so a completion publishing meanwhile is either still a
    /// live session (read before) or has its pointer already (read after).
    fn strays<'a>(
        &'a self,
        live: &'a std::collections::HashSet<String>,
        cutoff: i64,
        delete: bool,
    ) -> Fut<'a, (u64, u64)> {
        Box::pin(async move {
            let prefix = self.assembled_key("");
            let candidates = self
                .list_keys(&prefix, None, usize::MAX, |key, _, modified| {
                    modified < cutoff && !live.contains(&key[prefix.len()..])
                })
                .await?;
            if candidates.is_empty() {
                return Ok((0, 0));
            }
            let pointed = self.pointed_keys().await?;
            let (mut count, mut bytes) = (0, 0);
            for (key, size, _) in candidates {
                if pointed.contains(&key) {
                    continue;
                }
                if delete {
                    self.delete_key(&key).await?;
                }
                count += 1;
                bytes += size;
            }
            Ok((count, bytes))
        })
    }

    fn list<'a>(&'a self, after: Option<&'a Digest>, limit: usize) -> Fut<'a, Vec<Listed>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            self.list_page(after, limit).await
        })
    }

    fn presigned_get<'a>(&'a self, digest: &'a Digest, valid: Duration) -> Fut<'a, Option<String>> {
        Box::pin(async move {
            let Some(located) = self.locate(digest).await? else {
                return Ok(None);
            };
            let url = self
                .public
                .get_object(Some(&self.credentials), &located.key)
                .sign(valid);
            Ok(Some(url.to_string()))
        })
    }

    fn upload_staging(
        self: std::sync::Arc<Self>,
    ) -> Option<std::sync::Arc<dyn super::backend::UploadStaging>> {
        Some(self.staging())
    }
}

impl S3Backend {
    async fn present(&self, digest: &Digest) -> Result<bool> {
        Ok(self.object_head(&self.key(digest)).await?.is_some())
    }
}

/// The first `left` bytes of a longer body.
struct Prefix {
    inner: Download,
    left: u64,
}

impl Chunks for Prefix {
    fn next(&mut self) -> Fut<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            if self.left == 0 {
                return Ok(None);
            }
            let Some(mut piece) = self.inner.next().await? else {
                return Err(Error::Io("S3 body ended early".into()));
            };
            piece.truncate(self.left.min(piece.len() as u64) as usize);
            self.left -= piece.len() as u64;
            Ok(Some(piece))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::s3 as harness;

    /// The backend suite against `server`, objects under `prefix`.
    fn run_suite(server: &harness::S3Server, prefix: &str) {
        let backend = S3Backend::new(&server.config(prefix)).unwrap();
        let staging = crate::testing::TempDir::new("ringyard-s3-staging").unwrap();
        harness::run(crate::store::backend::suite(&backend, staging.path()));
    }

    #[test]
    fn parts_grow_so_that_10000_cover_the_blob() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(part_size(0), 5 * MIB);
        assert_eq!(part_size(10 * 1024 * MIB), 5 * MIB);
        let hundred_gib = 100 * 1024 * MIB;
        assert_eq!(part_size(hundred_gib), 11 * MIB);
        assert!(part_size(hundred_gib) * MAX_PARTS >= hundred_gib);
        let five_tib = 5 * 1024 * 1024 * MIB;
        assert!(part_size(five_tib) * MAX_PARTS >= five_tib);
    }

    #[test]
    fn s3_answers_read_as_store_errors() {
        assert!(matches!(status_error("GET", 404, b""), Error::NotFound));
        let no_bucket = b"<Error><Code>NoSuchBucket</Code><Message>m</Message></Error>";
        assert!(matches!(
            status_error("GET", 404, no_bucket),
            Error::Unavailable { retry: false, .. }
        ));
        assert!(matches!(
            status_error("PUT", 503, b"<Error><Code>SlowDown</Code></Error>"),
            Error::Unavailable { retry: true, .. }
        ));
        assert!(matches!(
            status_error(
                "PUT",
                403,
                b"<Error><Code>SignatureDoesNotMatch</Code></Error>"
            ),
            Error::Unavailable { retry: false, .. }
        ));
        assert!(matches!(status_error("PUT", 400, b""), Error::Io(_)));
    }

    fn backend(prefix: &str) -> S3Backend {
        S3Backend::new(&S3Config {
            bucket: "reg".into(),
            region: "us-east-1".into(),
            endpoint: "http://127.0.0.1:9".into(),
            path_style: true,
            prefix: prefix.into(),
            access_key: "k".into(),
            secret_key: "s".into(),
            session_token: None,
            timeouts: Timeouts::default(),
            retry: Retry::default(),
            ca_file: None,
            public_endpoint: None,
        })
        .unwrap()
    }

    #[test]
    fn keys_name_digests_both_ways() {
        let b = backend("registry/");
        let d = Digest::sha256_of(b"x");
        let key = b.key(&d);
        assert_eq!(key, format!("registry/blobs/sha256/{}", d.hex()));
        assert_eq!(b.digest_of_key(&key), Some(d));
        assert_eq!(b.digest_of_key("registry/blobs/sha256/nothex"), None);
        assert_eq!(b.digest_of_key("other/blobs/sha256/ab"), None);
    }

    #[test]
    fn an_unreachable_s3_is_unavailable_with_retry() {
        let b = backend("");
        let got = harness::run(b.stat(&Digest::sha256_of(b"x")));
        assert!(
            matches!(got, Err(Error::Unavailable { retry: true, .. })),
            "{got:?}"
        );
    }

    /// What the suite's streams (all under one part) do not reach: refusals of a multipart
    /// put, which must abort rather than complete, and puts of a stream and of a file that
    /// span several parts.
    async fn multipart_puts(backend: &S3Backend) {
        use crate::store::backend::Whole;
        let content: Vec<u8> = (0..11 * 1024 * 1024 + 3).map(|i| (i % 253) as u8).collect();
        let d = Digest::sha256_of(&content);
        let len = content.len() as u64;
        let mut wrong = content.clone();
        wrong[len as usize - 2] ^= 1;
        let bad = backend.put_stream(&d, len, &mut Whole::new(wrong)).await;
        assert!(matches!(bad, Err(Error::DigestMismatch { .. })), "{bad:?}");
        let short = backend
            .put_stream(&d, len + 1, &mut Whole::new(content.clone()))
            .await;
        assert!(
            matches!(short, Err(Error::SizeMismatch { expected, actual }) if expected == len + 1 && actual == len),
            "{short:?}"
        );
        assert!(matches!(backend.stat(&d).await, Err(Error::NotFound)));
        // From a stream, then from a file (two parts at a time, then the last alone).
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("three-parts");
        std::fs::write(&src, &content).unwrap();
        for from_file in [false, true] {
            let put = if from_file {
                backend.put_file(&src, &d).await
            } else {
                backend
                    .put_stream(&d, len, &mut Whole::new(content.clone()))
                    .await
            };
            put.expect("a put of three parts");
            assert_eq!(backend.stat(&d).await.unwrap(), len);
            let mut read = backend.read(&d, 0..len).await.unwrap();
            let mut got = Vec::new();
            while let Some(piece) = read.next().await.unwrap() {
                assert!(piece.len() <= READ_PIECE, "reads come in bounded pieces");
                got.extend_from_slice(&piece);
            }
            assert!(got == content);
            assert!(backend.delete(&d).await.unwrap());
        }
    }

    #[test]
    fn the_s3_backend_passes_the_backend_suite_on_s3s_fs() {
        let server = harness::S3Server::s3s_fs();
        run_suite(&server, "registry/");
        let backend = S3Backend::new(&server.config("multipart/")).unwrap();
        let got = harness::run(async {
            multipart_puts(&backend).await;
            // S3 gone after use: the parked connection is dead and a new one refused.
            drop(server);
            backend.stat(&Digest::sha256_of(b"x")).await
        });
        assert!(
            matches!(got, Err(Error::Unavailable { retry: true, .. })),
            "{got:?}"
        );
    }

    #[test]
    fn the_s3_backend_passes_the_backend_suite_on_moto() {
        let server = harness::S3Server::moto();
        run_suite(&server, "");
        let backend = S3Backend::new(&server.config("multipart/")).unwrap();
        harness::run(multipart_puts(&backend));
        // moto lists multipart uploads (s3s-fs cannot): the refused puts aborted theirs.
        let uploads = harness::run(server.multipart_uploads());
        assert!(
            uploads.contains("ListMultipartUploadsResult") && !uploads.contains("<Upload>"),
            "{uploads}"
        );
    }

    #[test]
    fn refused_credentials_are_unavailable_without_retry() {
        let server = harness::S3Server::s3s_fs();
        let mut config = server.config("");
        config.secret_key = "not-the-secret".into();
        let backend = S3Backend::new(&config).unwrap();
        let got = harness::run(backend.list(None, 10));
        assert!(
            matches!(got, Err(Error::Unavailable { retry: false, .. })),
            "{got:?}"
        );
    }
}
