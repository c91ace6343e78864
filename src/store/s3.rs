//! Committed blobs in an S3 bucket, at `<prefix>blobs/<algorithm>/<hex>`: the second
//! [`BlobBackend`]. Requests are signed by rusty-s3 (sans-IO SigV4, presigned URLs) and sent
//! by [`conn`], our HTTP/1.1 on the caller's monoio loop: no tokio, no thread hop per
//! request, pooled keep-alive connections per loop.
//!
//! A put never makes a wrong blob visible: content smaller than one part is held in memory,
//! checked against its size and digest, then PUT; larger content goes up as a multipart upload
//! whose parts are uploaded as they fill, and only completed (the moment the object appears)
//! once the whole stream has been counted and hashed; any failure aborts the upload. Part
//! sizes start at S3's minimum of 5 MiB and grow with the announced size so that S3's 10,000
//! parts cover any blob up to 100 GiB and beyond; memory is one part buffer per put.
//!
//! S3 answers are read in the store's terms once, in [`status_error`] and [`down`]: a missing
//! object is [`Error::NotFound`], an unreachable or overloaded S3 is
//! [`Error::Unavailable`] with `retry`, refused credentials are `Unavailable` without.

mod conn;
#[cfg(test)]
pub(crate) mod harness;
mod staging;

use super::backend::{BlobBackend, Chunks, Fut, Whole};
use super::error::{Error, Result};
use crate::oci::digest::{Digest, Hasher};
use conn::{Exchange, Failure, Head};
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::Path;
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
/// Tries of a request whose body is in memory (idempotent), when the connection broke.
const TRIES: usize = 2;

/// Where the bucket is and how to reach it.
#[derive(Clone, Debug)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// `http://host:port` of any S3-compatible service.
    pub endpoint: String,
    /// `endpoint/bucket/key` rather than `bucket.endpoint/key`.
    pub path_style: bool,
    /// Put before every key (`registry/`); empty for none.
    pub prefix: String,
    pub access_key: String,
    pub secret_key: String,
    /// Longest wait for any one socket operation (connect, a read, a write).
    pub timeout: Duration,
}

pub struct S3Backend {
    bucket: Bucket,
    /// The endpoint's address, resolved once at start (a lookup blocks; loops never do).
    addr: SocketAddr,
    credentials: Credentials,
    prefix: String,
    timeout: Duration,
}

impl S3Backend {
    /// Resolves the endpoint's host name: a blocking call, for start-up, not for a loop.
    pub fn new(config: &S3Config) -> std::result::Result<S3Backend, String> {
        let endpoint = Url::parse(&config.endpoint)
            .map_err(|e| format!("S3 endpoint {:?}: {e}", config.endpoint))?;
        if endpoint.scheme() != "http" {
            return Err(format!(
                "S3 endpoint {:?}: only http:// endpoints are supported so far",
                config.endpoint
            ));
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
        let url = bucket.base_url();
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("S3 endpoint {host}:{port}: {e}"))?
            .next()
            .ok_or_else(|| format!("S3 endpoint {host}:{port}: no address"))?;
        Ok(S3Backend {
            bucket,
            addr,
            credentials: Credentials::new(config.access_key.clone(), config.secret_key.clone()),
            prefix: config.prefix.clone(),
            timeout: config.timeout,
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

    /// The digest a listed key names; `None` for keys not of our shape.
    fn digest_of_key(&self, key: &str) -> Option<Digest> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix("blobs/")?;
        let (algorithm, hex) = rest.split_once('/')?;
        let digest = Digest::parse(&format!("{algorithm}:{hex}")).ok()?;
        (digest.algorithm().as_str() == algorithm).then_some(digest)
    }

    /// Sends a request whose body (if any) is in memory and reads its answer's head, trying
    /// again on a fresh connection when the connection broke (every such request here is
    /// idempotent: the same bytes under the same key or part number).
    async fn call(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Result<(Head, Exchange)> {
        let mut last = None;
        for _ in 0..TRIES {
            match self.try_call(method, url, headers, body).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Down(m)) => last = Some(Failure::Down(m)),
                Err(other) => return Err(failure(method, other)),
            }
        }
        Err(failure(method, last.expect("at least one try")))
    }

    async fn try_call(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> conn::Result<(Head, Exchange)> {
        let len = body.map(|b| b.len() as u64);
        let mut ex = Exchange::start(self.addr, method, url, headers, len, self.timeout).await?;
        // In pieces: the socket write takes its buffer by value, so each is copied once.
        for piece in body.unwrap_or_default().chunks(WRITE_PIECE) {
            ex.write(piece).await?;
        }
        let head = ex.response().await?;
        Ok((head, ex))
    }

    /// A request whose answer is wanted whole (XML, or nothing): the status checked.
    async fn call_for_body(
        &self,
        what: &str,
        method: &str,
        url: &Url,
        body: Option<&[u8]>,
    ) -> Result<(Head, Vec<u8>)> {
        let (head, mut ex) = self.call(method, url, &[], body).await?;
        let text = ex.body(MAX_XML).await.map_err(|f| failure(what, f))?;
        if !(200..300).contains(&head.status) {
            return Err(status_error(what, head.status, &text));
        }
        Ok((head, text))
    }

    async fn head(&self, digest: &Digest) -> Result<u64> {
        let key = self.key(digest);
        let url = self
            .bucket
            .head_object(Some(&self.credentials), &key)
            .sign(SIGNED_FOR);
        let (head, _) = self.call_for_body("HEAD", "HEAD", &url, None).await?;
        head.header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Io(format!("S3 HEAD {key}: no content-length")))
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
                    self.upload_part(&key, m, &buf[..part_size]).await?;
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
                    let url = self
                        .bucket
                        .put_object(Some(&self.credentials), &key)
                        .sign(SIGNED_FOR);
                    self.call_for_body("PUT", "PUT", &url, Some(&buf)).await?;
                }
                Some(m) => {
                    if !buf.is_empty() {
                        self.upload_part(&key, m, &buf).await?;
                    }
                    match self.complete_multipart(&key, m).await {
                        // A completion retried after a lost answer finds its upload gone:
                        // the object is there if the first try completed it.
                        Err(Error::NotFound) if self.present(digest).await? => {}
                        other => other?,
                    }
                }
            }
            Ok(())
        }
        .await;
        if outcome.is_err() {
            if let Some(m) = &multipart {
                // Best effort: an upload left behind holds storage until a bucket lifecycle
                // rule or a sweep removes it; the put's own error is what the caller needs.
                let url = self
                    .bucket
                    .abort_multipart_upload(Some(&self.credentials), &key, &m.id)
                    .sign(SIGNED_FOR);
                let _ = self.call_for_body("abort", "DELETE", &url, None).await;
            }
        }
        outcome
    }

    async fn create_multipart(&self, key: &str) -> Result<Multipart> {
        // Signed here rather than by rusty-s3's CreateMultipartUpload, which sends
        // `?uploads=1`: S3 and s3s-fs ignore the value, moto 5.2.6 answers 500 to it.
        let url = rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            rusty_s3::Method::Post,
            self.bucket.object_url(key),
            self.credentials.key(),
            self.credentials.secret(),
            self.credentials.token(),
            self.bucket.region(),
            SIGNED_FOR.as_secs(),
            std::iter::once(("uploads", "")),
            std::iter::empty(),
        );
        let (_, body) = self
            .call_for_body("create multipart upload", "POST", &url, Some(b""))
            .await?;
        let text = String::from_utf8_lossy(&body);
        let parsed = CreateMultipartUpload::parse_response(&text)
            .map_err(|e| Error::Io(format!("S3 create multipart upload answer: {e}")))?;
        Ok(Multipart {
            id: parsed.upload_id().to_string(),
            etags: Vec::new(),
        })
    }

    async fn upload_part(&self, key: &str, m: &mut Multipart, bytes: &[u8]) -> Result<()> {
        let number = u16::try_from(m.etags.len() + 1)
            .ok()
            .filter(|n| u64::from(*n) <= MAX_PARTS)
            .ok_or_else(|| Error::Io(format!("S3 upload of {key}: more than 10,000 parts")))?;
        let url = self
            .bucket
            .upload_part(Some(&self.credentials), key, number, &m.id)
            .sign(SIGNED_FOR);
        let (head, _) = self
            .call_for_body("upload part", "PUT", &url, Some(bytes))
            .await?;
        let etag = head
            .header("etag")
            .ok_or_else(|| Error::Io(format!("S3 upload part {number} of {key}: no ETag")))?;
        m.etags.push(etag.to_string());
        Ok(())
    }

    async fn complete_multipart(&self, key: &str, m: &Multipart) -> Result<()> {
        let action = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            &m.id,
            m.etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let (_, answer) = self
            .call_for_body(
                "complete multipart upload",
                "POST",
                &url,
                Some(body.as_bytes()),
            )
            .await?;
        // S3 may answer 200 and still fail the completion, in the body.
        let text = String::from_utf8_lossy(&answer);
        if text.contains("<Error>") {
            return Err(status_error("complete multipart upload", 500, &answer));
        }
        Ok(())
    }

    async fn list_page(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, u64)>> {
        let prefix = format!("{}blobs/", self.prefix);
        let start_after = after.map(|d| self.key(d));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            action.with_prefix(prefix.as_str());
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
                if let Some(d) = self.digest_of_key(&object.key) {
                    out.push((d, object.size.unwrap_or(0)));
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }
}

struct Multipart {
    id: String,
    /// Of the parts uploaded so far, in order.
    etags: Vec<String>,
}

/// Bytes per part for a blob of `size`: S3's 5 MiB minimum, or (rounded up to whole MiB) the
/// size that fits the blob into 10,000 parts. Pure.
fn part_size(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let fit = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    fit.max(MIN_PART)
}

/// A request that got no answer, in the store's terms.
fn failure(what: &str, f: Failure) -> Error {
    match f {
        Failure::Down(m) => down(what, m),
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

/// A staged file, read piece by piece through io_uring (no blocking call on the loop).
struct FileChunks {
    file: monoio::fs::File,
    pos: u64,
    size: u64,
}

impl Chunks for FileChunks {
    fn next(&mut self) -> Fut<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            if self.pos >= self.size {
                return Ok(None);
            }
            let want = (self.size - self.pos).min(READ_PIECE as u64) as usize;
            let (r, buf) = self.file.read_at(Vec::with_capacity(want), self.pos).await;
            let n = r.map_err(|e| Error::io("reading a staged blob", e))?;
            if n == 0 {
                return Err(Error::Io("a staged blob shrank while being stored".into()));
            }
            self.pos += n as u64;
            Ok(Some(buf))
        })
    }
}

impl BlobBackend for S3Backend {
    fn stat<'a>(&'a self, digest: &'a Digest) -> Fut<'a, u64> {
        Box::pin(self.head(digest))
    }

    fn read<'a>(&'a self, digest: &'a Digest, range: Range<u64>) -> Fut<'a, Box<dyn Chunks + 'a>> {
        Box::pin(async move {
            if range.is_empty() {
                self.head(digest).await?;
                return Ok(Box::new(Whole(None)) as Box<dyn Chunks>);
            }
            let key = self.key(digest);
            let url = self
                .bucket
                .get_object(Some(&self.credentials), &key)
                .sign(SIGNED_FOR);
            let ranged = [("range", format!("bytes={}-{}", range.start, range.end - 1))];
            let (head, mut ex) = self.call("GET", &url, &ranged, None).await?;
            if !(200..300).contains(&head.status) {
                let text = ex.body(MAX_XML).await.unwrap_or_default();
                return Err(status_error("GET", head.status, &text));
            }
            let want = range.end - range.start;
            let got: Option<u64> = head.header("content-length").and_then(|v| v.parse().ok());
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
                }) as Box<dyn Chunks>);
            }
            Ok(Box::new(Download { ex }) as Box<dyn Chunks>)
        })
    }

    fn put_file<'a>(&'a self, src: &'a Path, digest: &'a Digest) -> Fut<'a, ()> {
        Box::pin(async move {
            if self.present(digest).await? {
                return Ok(());
            }
            let file = monoio::fs::File::open(src)
                .await
                .map_err(|e| Error::io("opening a staged blob", e))?;
            let size = file
                .metadata()
                .await
                .map_err(|e| Error::io("sizing a staged blob", e))?
                .len();
            let mut chunks = FileChunks { file, pos: 0, size };
            self.put(digest, size, &mut chunks).await
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
            if !self.present(digest).await? {
                return Ok(false);
            }
            let key = self.key(digest);
            let url = self
                .bucket
                .delete_object(Some(&self.credentials), &key)
                .sign(SIGNED_FOR);
            self.call_for_body("DELETE", "DELETE", &url, None).await?;
            Ok(true)
        })
    }

    fn list<'a>(&'a self, after: Option<&'a Digest>, limit: usize) -> Fut<'a, Vec<(Digest, u64)>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            self.list_page(after, limit).await
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
        match self.head(digest).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
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
            timeout: Duration::from_secs(1),
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
    /// put, which must abort rather than complete, and a put that spans several parts.
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
        backend
            .put_stream(&d, len, &mut Whole::new(content.clone()))
            .await
            .expect("a put of three parts");
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

    #[test]
    fn the_s3_backend_passes_the_backend_suite_on_s3s_fs() {
        let server = harness::S3Server::s3s_fs();
        server.run_suite("registry/");
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
        server.run_suite("");
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
