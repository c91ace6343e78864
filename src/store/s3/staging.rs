//! Upload sessions in the bucket ([`UploadStaging`] for [`S3Backend`]): a session `id` is a
//! multipart upload at `<prefix>uploads/<id>/data` and a tail object at
//! `<prefix>uploads/<id>/tail`. Parts and tails go up from ranges of the node's local spool
//! file, read a piece at a time, so a part of any size costs one piece of memory.
//!
//! Completion assembles the upload at the session's key and then copies it to the blob's key
//! server-side (S3 cannot rename): one CopyObject up to S3's 5 GiB limit, UploadPartCopy in
//! ranges beyond it (as distribution's S3 driver moves large objects), and removes the
//! session's object. A session that never filled a part is PUT straight to the blob's key.

use super::conn::{Exchange, Failure, Head};
use super::{failure, status_error, Download, Multipart, S3Backend, MAX_XML, SIGNED_FOR, TRIES};
use crate::oci::digest::Digest;
use crate::store::backend::{BlobBackend, Chunks, Fut, UploadStaging};
use crate::store::error::{Error, Result};
use rusty_s3::S3Action;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use url::Url;

/// Largest piece of a part read from the spool and written to the socket at once.
const PIECE: u64 = 1024 * 1024;
/// Largest object one CopyObject may copy.
const COPY_MAX: u64 = 5 * 1024 * 1024 * 1024;
/// Bytes per UploadPartCopy when an object is copied in ranges (at most 5 GiB each).
const COPY_PART: u64 = 1024 * 1024 * 1024;

impl S3Backend {
    fn session_key(&self, id: &str, name: &str) -> String {
        format!("{}uploads/{id}/{name}", self.prefix)
    }

    /// Sends `range` of the file `src` as the body of `method` on `url`, read from the file a
    /// piece at a time; tried again from the file when the connection broke (every such
    /// request is idempotent: the same bytes to the same key or part). The answer's head and
    /// body, its status checked.
    async fn send_file(
        &self,
        what: &str,
        method: &str,
        url: &Url,
        src: &Path,
        range: Range<u64>,
    ) -> Result<(Head, Vec<u8>)> {
        let file = monoio::fs::File::open(src)
            .await
            .map_err(|e| Error::io("opening an upload spool", e))?;
        let mut last = None;
        let mut outcome = None;
        for _ in 0..TRIES {
            match self.try_send_file(method, url, &file, range.clone()).await {
                Ok(answer) => {
                    outcome = Some(answer);
                    break;
                }
                Err(SendError::Net(Failure::Down(m))) => last = Some(Failure::Down(m)),
                Err(SendError::Net(f)) => {
                    last = Some(f);
                    break;
                }
                Err(SendError::Store(e)) => {
                    let _ = file.close().await;
                    return Err(e);
                }
            }
        }
        let _ = file.close().await;
        let (head, mut ex) = match outcome {
            Some(answer) => answer,
            None => return Err(failure(what, last.expect("at least one try"))),
        };
        let text = ex.body(MAX_XML).await.map_err(|f| failure(what, f))?;
        if !(200..300).contains(&head.status) {
            return Err(status_error(what, head.status, &text));
        }
        Ok((head, text))
    }

    async fn try_send_file(
        &self,
        method: &str,
        url: &Url,
        file: &monoio::fs::File,
        range: Range<u64>,
    ) -> std::result::Result<(Head, Exchange), SendError> {
        let len = range.end - range.start;
        let mut ex = Exchange::start(self.addr, method, url, &[], Some(len), self.timeout)
            .await
            .map_err(SendError::Net)?;
        let mut pos = range.start;
        while pos < range.end {
            let want = (range.end - pos).min(PIECE) as usize;
            let (r, buf) = file.read_at(Vec::with_capacity(want), pos).await;
            let n = r.map_err(|e| SendError::Store(Error::io("reading an upload spool", e)))?;
            if n == 0 {
                return Err(SendError::Store(Error::Io(
                    "an upload spool is shorter than its session".into(),
                )));
            }
            ex.write(&buf).await.map_err(SendError::Net)?;
            pos += n as u64;
        }
        let head = ex.response().await.map_err(SendError::Net)?;
        Ok((head, ex))
    }

    /// The size of the object at `key`, None when there is none.
    async fn object_size(&self, key: &str) -> Result<Option<u64>> {
        let url = self
            .bucket
            .head_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        match self.call_for_body("HEAD", "HEAD", &url, None).await {
            Ok((head, _)) => Ok(head.header("content-length").and_then(|v| v.parse().ok())),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

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

    /// A GET of the whole object at `key`, its answer's head checked.
    async fn get_key(&self, key: &str) -> Result<(Head, Exchange)> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let (head, mut ex) = self.call("GET", &url, &[], None).await?;
        if !(200..300).contains(&head.status) {
            let text = ex.body(MAX_XML).await.unwrap_or_default();
            return Err(status_error("GET", head.status, &text));
        }
        Ok((head, ex))
    }

    /// A request signed with extra headers (the copy source), which S3 wants signed.
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

    fn copy_source(&self, key: &str) -> String {
        format!("/{}/{key}", self.bucket.name())
    }

    /// CopyObject of `from` to `to` (up to 5 GiB).
    async fn copy_object(&self, from: &str, to: &str) -> Result<()> {
        let source = self.copy_source(from);
        let headers = [("x-amz-copy-source", source.as_str())];
        let url = self.sign_with(rusty_s3::Method::Put, to, &[], &headers);
        let sent = [("x-amz-copy-source", source.clone())];
        let (head, mut ex) = self.call("PUT", &url, &sent, Some(b"")).await?;
        let text = ex.body(MAX_XML).await.map_err(|f| failure("copy", f))?;
        // S3 may answer 200 and still fail the copy, in the body.
        if !(200..300).contains(&head.status) || String::from_utf8_lossy(&text).contains("<Error>")
        {
            return Err(status_error("copy", head.status.max(500), &text));
        }
        Ok(())
    }

    /// Copies `from` (`size` bytes) to `to` as a multipart upload of UploadPartCopy ranges of
    /// `part` bytes: the way past CopyObject's 5 GiB limit. Aborted on any failure.
    async fn copy_in_parts(&self, from: &str, to: &str, size: u64, part: u64) -> Result<()> {
        let mut m = self.create_multipart(to).await?;
        let source = self.copy_source(from);
        let copied: Result<()> = async {
            let mut start = 0;
            while start < size {
                let end = (start + part).min(size);
                let number = (m.etags.len() + 1).to_string();
                let range = format!("bytes={}-{}", start, end - 1);
                let headers = [
                    ("x-amz-copy-source", source.as_str()),
                    ("x-amz-copy-source-range", range.as_str()),
                ];
                let query = [("partNumber", number.as_str()), ("uploadId", m.id.as_str())];
                let url = self.sign_with(rusty_s3::Method::Put, to, &query, &headers);
                let sent = [
                    ("x-amz-copy-source", source.clone()),
                    ("x-amz-copy-source-range", range.clone()),
                ];
                let (head, mut ex) = self.call("PUT", &url, &sent, Some(b"")).await?;
                let text = ex.body(MAX_XML).await.map_err(|f| failure("copy part", f))?;
                let answer = String::from_utf8_lossy(&text);
                let etag = super::xml_text(&answer, "ETag")
                    .filter(|_| (200..300).contains(&head.status))
                    .ok_or_else(|| status_error("copy part", head.status.max(500), &text))?;
                m.etags.push(etag.replace("&quot;", "\""));
                start = end;
            }
            self.complete_multipart(to, &m).await
        }
        .await;
        if copied.is_err() {
            let _ = self.abort(to, &m.id).await;
        }
        copied
    }

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

    async fn put_part_from(
        &self,
        key: &str,
        upload: &str,
        number: u16,
        src: &Path,
        range: Range<u64>,
    ) -> Result<String> {
        let url = self
            .bucket
            .upload_part(Some(&self.credentials), key, number, upload)
            .sign(SIGNED_FOR);
        let (head, _) = self
            .send_file("upload part", "PUT", &url, src, range)
            .await?;
        etag_of(&head, "upload part")
    }

    async fn assemble_at(
        &self,
        key: &str,
        upload: &str,
        parts: &[String],
        last: Option<(&Path, Range<u64>)>,
        size: u64,
    ) -> Result<()> {
        let mut m = Multipart {
            id: upload.to_string(),
            etags: parts.to_vec(),
        };
        let done: Result<()> = async {
            if let Some((src, range)) = last {
                let number = u16::try_from(parts.len() + 1)
                    .map_err(|_| Error::Io("an upload of more than 10,000 parts".into()))?;
                let etag = self.put_part_from(key, upload, number, src, range).await?;
                m.etags.push(etag);
            }
            self.complete_multipart(key, &m).await
        }
        .await;
        match done {
            // The upload is gone: a completion before this one went through (its answer was
            // lost), when its object is there whole.
            Err(Error::NotFound) if self.object_size(key).await? == Some(size) => Ok(()),
            other => other,
        }
    }
}

/// Why sending a file failed: on the way (try again), or reading the file (do not).
enum SendError {
    Net(Failure),
    Store(Error),
}

/// A part's or object's ETag from its answer.
fn etag_of(head: &Head, what: &str) -> Result<String> {
    head.header("etag")
        .map(str::to_string)
        .ok_or_else(|| Error::Io(format!("S3 {what}: no ETag")))
}

/// ETags compared as S3 means them: with or without their quotes.
fn same_etag(a: &str, b: &str) -> bool {
    a.trim_matches('"') == b.trim_matches('"')
}

impl UploadStaging for S3Backend {
    fn begin<'a>(&'a self, id: &'a str) -> Fut<'a, String> {
        Box::pin(async move {
            let m = self.create_multipart(&self.session_key(id, "data")).await?;
            Ok(m.id)
        })
    }

    fn put_part<'a>(
        &'a self,
        id: &'a str,
        upload: &'a str,
        number: u16,
        src: &'a Path,
        range: Range<u64>,
    ) -> Fut<'a, String> {
        Box::pin(async move {
            let key = self.session_key(id, "data");
            self.put_part_from(&key, upload, number, src, range).await
        })
    }

    fn put_tail<'a>(&'a self, id: &'a str, src: &'a Path, range: Range<u64>) -> Fut<'a, String> {
        Box::pin(async move {
            let key = self.session_key(id, "tail");
            let url = self
                .bucket
                .put_object(Some(&self.credentials), &key)
                .sign(SIGNED_FOR);
            let (head, _) = self.send_file("put tail", "PUT", &url, src, range).await?;
            etag_of(&head, "put tail")
        })
    }

    fn get_tail<'a>(
        &'a self,
        id: &'a str,
        etag: &'a str,
        len: u64,
        dst: &'a Path,
        at: u64,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            let (head, mut ex) = self.get_key(&self.session_key(id, "tail")).await?;
            let got_len: Option<u64> = head.header("content-length").and_then(|v| v.parse().ok());
            let got_etag = head.header("etag").unwrap_or_default();
            if got_len != Some(len) || !same_etag(got_etag, etag) {
                return Err(Error::Corrupt(format!(
                    "an upload session's tail is not the one its row names \
                     ({got_len:?} bytes, not {len})"
                )));
            }
            let file = monoio::fs::OpenOptions::new()
                .write(true)
                .open(dst)
                .await
                .map_err(|e| Error::io("opening an upload spool", e))?;
            let mut pos = at;
            let written: Result<()> = async {
                while let Some(piece) = ex
                    .next_piece(PIECE as usize)
                    .await
                    .map_err(|f| failure("GET tail", f))?
                {
                    let n = piece.len() as u64;
                    let (r, _) = file.write_all_at(piece, pos).await;
                    r.map_err(|e| Error::io("writing an upload spool", e))?;
                    pos += n;
                }
                if pos - at != len {
                    return Err(Error::Io("S3 GET tail: the body ended early".into()));
                }
                Ok(())
            }
            .await;
            let _ = file.close().await;
            written
        })
    }

    fn assemble<'a>(
        &'a self,
        id: &'a str,
        upload: &'a str,
        parts: &'a [String],
        last: Option<(&'a Path, Range<u64>)>,
        size: u64,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            let key = self.session_key(id, "data");
            self.assemble_at(&key, upload, parts, last, size).await
        })
    }

    fn read_assembled<'a>(&'a self, id: &'a str, size: u64) -> Fut<'a, Box<dyn Chunks + 'a>> {
        Box::pin(async move {
            let (head, ex) = self.get_key(&self.session_key(id, "data")).await?;
            let got: Option<u64> = head.header("content-length").and_then(|v| v.parse().ok());
            if got != Some(size) {
                return Err(Error::Corrupt(format!(
                    "an assembled upload reads back as {got:?} bytes, not {size}"
                )));
            }
            Ok(Box::new(Download { ex }) as Box<dyn Chunks>)
        })
    }

    fn publish<'a>(&'a self, id: &'a str, digest: &'a Digest, size: u64) -> Fut<'a, ()> {
        Box::pin(async move {
            let from = self.session_key(id, "data");
            if !self.present(digest).await? {
                let to = self.key(digest);
                if size <= COPY_MAX {
                    self.copy_object(&from, &to).await?;
                } else {
                    let part = COPY_PART.max(size.div_ceil(super::MAX_PARTS));
                    self.copy_in_parts(&from, &to, size, part).await?;
                }
            }
            self.delete_key(&from).await
        })
    }

    fn publish_file<'a>(&'a self, src: &'a Path, digest: &'a Digest) -> Fut<'a, ()> {
        self.put_file(src, digest)
    }

    fn discard<'a>(&'a self, id: &'a str, upload: Option<&'a str>) -> Fut<'a, ()> {
        Box::pin(async move {
            let data = self.session_key(id, "data");
            if let Some(upload) = upload {
                self.abort(&data, upload).await?;
            }
            self.delete_key(&self.session_key(id, "tail")).await?;
            self.delete_key(&data).await
        })
    }

    fn discard_blocking(&self, id: &str, upload: Option<&str>) -> Result<()> {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .map_err(|e| Error::io("starting an event loop to reach S3", e))?;
        rt.block_on(async {
            let out = self.discard(id, upload).await;
            // The parked connections belong to this loop, which ends here.
            super::conn::close_idle();
            out
        })
    }
}

impl S3Backend {
    /// This backend as the staging of upload sessions.
    pub(super) fn staging(self: Arc<Self>) -> Arc<dyn UploadStaging> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::harness;
    use super::*;

    /// Beyond CopyObject's 5 GiB: a copy in ranges gives the same bytes (with ranges small
    /// enough to test), and the source stays until the caller removes it.
    #[test]
    fn a_copy_in_ranges_is_byte_identical() {
        let server = harness::S3Server::s3s_fs();
        let backend = S3Backend::new(&server.config("copy/")).unwrap();
        let content: Vec<u8> = (0..12 * 1024 * 1024 + 5).map(|i| (i % 249) as u8).collect();
        let d = Digest::sha256_of(&content);
        harness::run(async {
            let url = backend
                .bucket
                .put_object(Some(&backend.credentials), "copy/src")
                .sign(SIGNED_FOR);
            backend
                .call_for_body("PUT", "PUT", &url, Some(&content))
                .await
                .unwrap();
            let to = backend.key(&d);
            backend
                .copy_in_parts("copy/src", &to, content.len() as u64, 5 * 1024 * 1024)
                .await
                .unwrap();
            let mut read = backend.read(&d, 0..content.len() as u64).await.unwrap();
            let mut got = Vec::new();
            while let Some(piece) = read.next().await.unwrap() {
                got.extend_from_slice(&piece);
            }
            assert!(got == content);
            assert_eq!(
                backend.object_size("copy/src").await.unwrap(),
                Some(content.len() as u64)
            );
        });
    }
}
