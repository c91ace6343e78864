//! Upload sessions in the bucket ([`UploadStaging`] for [`S3Backend`]): a session `id` is a
//! multipart upload at `<prefix>uploads/<id>/data` and a tail object at
//! `<prefix>uploads/<id>/tail`. Parts and tails go up from ranges of the node's local spool
//! file, read a piece at a time (a [`Body::File`], sent by the backend's one request loop and
//! read again from the file for a retry), so a part of any size costs one piece of memory.
//!
//! Completion assembles the upload at the session's key and then copies it to the blob's key
//! server-side (S3 cannot rename): one CopyObject up to S3's 5 GiB limit, UploadPartCopy in
//! ranges beyond it (as distribution's S3 driver moves large objects); the session's objects
//! go with its discard, which follows. A session that never filled a part is PUT straight to
//! the blob's key.

use super::conn::Exchange;
use super::{
    failure, status_error, Body, Download, Head, Multipart, Req, S3Backend, MAX_XML, READ_PIECE,
    SIGNED_FOR,
};
use crate::oci::digest::Digest;
use crate::store::backend::{BlobBackend, Chunks, Fut, UploadStaging};
use crate::store::error::{Error, Result};
use rusty_s3::S3Action;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use url::Url;

/// Largest object one CopyObject may copy.
const COPY_MAX: u64 = 5 * 1024 * 1024 * 1024;
/// Bytes per UploadPartCopy when an object is copied in ranges (at most 5 GiB each).
const COPY_PART: u64 = 1024 * 1024 * 1024;

impl S3Backend {
    fn session_key(&self, id: &str, name: &str) -> String {
        format!("{}uploads/{id}/{name}", self.prefix)
    }

    /// A GET of the whole object at `key`, its answer's head checked.
    async fn get_key(&self, key: &str) -> Result<(Head, Exchange)> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        self.call(&Req::new("GET", "GET", &url)).await
    }

    /// A request on `key` signed with its query and extra headers (a copy source, which S3
    /// wants signed), which rusty-s3's actions do not cover.
    pub(super) fn sign_with(
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

    /// CopyObject of `from` (`size` bytes, up to 5 GiB) to `to`.
    async fn copy_object(&self, from: &str, to: &str, size: u64) -> Result<()> {
        let source = self.copy_source(from);
        let headers = [("x-amz-copy-source", source.as_str())];
        let url = self.sign_with(rusty_s3::Method::Put, to, &[], &headers);
        let sent = [("x-amz-copy-source", source.clone())];
        let req = Req {
            headers: &sent,
            body: Some(Body::Bytes(b"")),
            allowance: super::server_side_allowance(size),
            ..Req::new("copy", "PUT", &url)
        };
        let (head, mut ex) = self.call(&req).await?;
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
                let req = Req {
                    headers: &sent,
                    body: Some(Body::Bytes(b"")),
                    allowance: super::server_side_allowance(end - start),
                    ..Req::new("copy part", "PUT", &url)
                };
                let (head, mut ex) = self.call(&req).await?;
                let text = ex
                    .body(MAX_XML)
                    .await
                    .map_err(|f| failure("copy part", f))?;
                let answer = String::from_utf8_lossy(&text);
                let etag = super::xml_text(&answer, "ETag")
                    .filter(|_| (200..300).contains(&head.status))
                    .ok_or_else(|| status_error("copy part", head.status.max(500), &text))?;
                m.etags.push(etag.replace("&quot;", "\""));
                start = end;
            }
            self.complete_multipart(to, &m, size).await
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
        with_file(src, async |file| {
            let body = Body::File(file, range);
            self.upload_part(key, upload, number, body).await
        })
        .await
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
                let number = super::part_number(parts.len() + 1)?;
                let etag = self.put_part_from(key, upload, number, src, range).await?;
                m.etags.push(etag);
            }
            self.complete_multipart(key, &m, size).await
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

/// `send` with the spool `src` open, closed after whatever the outcome.
async fn with_file<T>(
    src: &Path,
    send: impl AsyncFnOnce(&monoio::fs::File) -> Result<T>,
) -> Result<T> {
    let file = monoio::fs::File::open(src)
        .await
        .map_err(|e| Error::io("opening an upload spool", e))?;
    let out = send(&file).await;
    let _ = file.close().await;
    out
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
            with_file(src, async |file| {
                self.put_object("put tail", &key, Body::File(file, range))
                    .await
            })
            .await
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
            let got_len: Option<u64> = head.content_length;
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
                    .next_piece(READ_PIECE)
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
            let got: Option<u64> = head.content_length;
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
                    self.copy_object(&from, &to, size).await?;
                } else {
                    let part = COPY_PART.max(size.div_ceil(super::MAX_PARTS));
                    self.copy_in_parts(&from, &to, size, part).await?;
                }
            }
            Ok(())
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
    use super::*;
    use crate::blocking::Pool;
    use crate::meta::Meta;
    use crate::store::blobs::BlobStore;
    use crate::store::upload_writer::{AppendError, Bytes, UploadWriter};
    use crate::store::uploads::{Staged, Uploads};
    use crate::testing::s3 as harness;
    use std::time::Duration;

    const MIB: usize = 1024 * 1024;
    const ALICE: Option<&str> = Some("alice");

    /// A node: its own tier directory and session table over the shared S3 and metadata.
    struct Node {
        _dir: tempfile::TempDir,
        blobs: BlobStore,
        uploads: Uploads,
    }

    struct Cluster {
        backend: Arc<S3Backend>,
        meta: Meta,
        pool: Pool,
        _meta_dir: tempfile::TempDir,
    }

    impl Cluster {
        fn new(server: &harness::S3Server, meta: Option<Meta>) -> Cluster {
            let meta_dir = tempfile::tempdir().unwrap();
            let meta =
                meta.unwrap_or_else(|| Meta::open_sqlite(&meta_dir.path().join("m.db")).unwrap());
            Cluster {
                backend: Arc::new(S3Backend::new(&server.config("reg/")).unwrap()),
                meta,
                pool: Pool::new(2, "staged-test").unwrap(),
                _meta_dir: meta_dir,
            }
        }

        /// A node as it starts: nothing cached, no spool trusted.
        fn node(&self) -> Node {
            let dir = tempfile::tempdir().unwrap();
            let blobs = BlobStore::with_remote(
                dir.path(),
                self.pool.clone(),
                self.backend.clone(),
                1 << 30,
            )
            .unwrap();
            let uploads = Uploads::new(blobs.staging_dir().to_path_buf(), Duration::from_secs(60))
                .with_staging(blobs.upload_staging())
                .with_parts_per_step(2);
            let rows = crate::blocking::block_on(self.meta.uploads()).unwrap();
            assert!(uploads.restore(rows).is_empty(), "no staged row is dead");
            Node {
                _dir: dir,
                blobs,
                uploads,
            }
        }

        fn writer<'a>(&'a self, node: &'a Node) -> UploadWriter<'a> {
            UploadWriter {
                uploads: &node.uploads,
                blobs: &node.blobs,
                meta: &self.meta,
                pool: &self.pool,
                hashing: &self.pool,
            }
        }

        async fn start(&self, node: &Node) -> String {
            let s = node
                .uploads
                .start(&self.pool, &self.meta, "r", ALICE, true)
                .await
                .unwrap();
            s.id.clone()
        }

        /// One PATCH of `bytes` on `node`; the offset it acknowledges.
        async fn patch(&self, node: &Node, id: &str, bytes: &[u8]) -> u64 {
            let mut lease = node
                .uploads
                .lease_current(&self.pool, &self.meta, "r", ALICE, id)
                .await
                .unwrap();
            self.writer(node)
                .append(&mut lease, &mut Bytes(bytes))
                .await
                .map_err(|e| match e {
                    AppendError::Source(e) | AppendError::Store(e) => e,
                })
                .unwrap();
            lease.offset
        }

        /// The final PUT (with `rest` as its body) on `node`.
        async fn finish(&self, node: &Node, id: &str, rest: &[u8], digest: &Digest) -> Result<u64> {
            let mut lease = node
                .uploads
                .lease_current(&self.pool, &self.meta, "r", ALICE, id)
                .await?;
            self.writer(node)
                .finish_with(&mut lease, rest, digest)
                .await
        }

        fn row(&self, id: &str) -> Option<crate::meta::UploadRecord> {
            crate::blocking::block_on(self.meta.upload(id)).unwrap()
        }

        fn staged(&self, id: &str) -> Staged {
            Staged::parse(self.row(id).unwrap().remote.as_deref()).unwrap()
        }

        async fn blob(&self, d: &Digest) -> Vec<u8> {
            let size = self.backend.stat(d).await.unwrap();
            let mut read = self.backend.read(d, 0..size).await.unwrap();
            let mut got = Vec::new();
            while let Some(piece) = read.next().await.unwrap() {
                got.extend_from_slice(&piece);
            }
            got
        }

        /// Whether the session left anything at its keys.
        async fn leftovers(&self, id: &str) -> bool {
            let mut any = false;
            for name in ["tail", "data"] {
                let key = self.backend.session_key(id, name);
                any |= self.backend.object_size(&key).await.unwrap().is_some();
            }
            any
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7919) as u8).collect()
    }

    /// Two nodes alternate PATCHes of awkward sizes across part boundaries and the other one
    /// completes: the blob at its key is the bytes sent, the parts grew (5, 5, 10 MiB with
    /// two parts a step), the spools held about a part, and the session left nothing.
    async fn alternate(c: &Cluster) {
        let data = pattern(27 * MIB + 4321);
        let digest = Digest::sha256_of(&data);
        let (a, b) = (c.node(), c.node());
        let id = c.start(&a).await;
        let cuts = [
            MIB + 7,
            6 * MIB + 3,
            6 * MIB + 4,
            9 * MIB - 11,
            24 * MIB,
            26 * MIB + 1,
        ];
        let mut at = 0;
        for (i, &cut) in cuts.iter().enumerate() {
            let node = if i % 2 == 0 { &a } else { &b };
            assert_eq!(c.patch(node, &id, &data[at..cut]).await, cut as u64);
            assert_eq!(c.row(&id).unwrap().offset, cut as u64);
            at = cut;
        }
        let staged = c.staged(&id);
        let lens: Vec<u64> = staged.parts.iter().map(|(_, l)| *l).collect();
        let m = MIB as u64;
        assert_eq!(lens, vec![5 * m, 5 * m, 10 * m], "parts grow");
        assert!(staged.tail.is_some());
        for node in [&a, &b] {
            let spool = node.blobs.staging_dir().join(&id).join("data");
            let used =
                std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(spool).unwrap()) * 512;
            assert!(
                used <= 12 * m,
                "the spool holds about a part, not {used} bytes"
            );
        }
        // A status request on either node answers the row's offset.
        for node in [&a, &b] {
            let s = node
                .uploads
                .current(&c.pool, &c.meta, "r", ALICE, &id)
                .await
                .unwrap();
            assert_eq!(s.offset(), at as u64);
        }
        let size = c.finish(&a, &id, &data[at..], &digest).await.unwrap();
        assert_eq!(size, data.len() as u64);
        assert!(
            c.blob(&digest).await == data,
            "byte-identical at the blob key"
        );
        assert_eq!(
            crate::blocking::block_on(c.meta.blob_in_repo("r", &digest)),
            Ok(Some(data.len() as u64))
        );
        assert!(c.row(&id).is_none());
        assert!(!c.leftovers(&id).await);
    }

    #[test]
    fn two_nodes_alternate_and_complete_on_either() {
        let server = harness::S3Server::s3s_fs();
        let c = Cluster::new(&server, None);
        harness::run(alternate(&c));
    }

    #[test]
    fn two_nodes_alternate_over_postgres() {
        let pg = crate::testing::postgres::PgServer::start().unwrap_or_else(|e| panic!("{e}"));
        let url = pg.create_database("staged").unwrap();
        let server = harness::S3Server::s3s_fs();
        let c = Cluster::new(&server, Some(Meta::open_postgres(&url, 2).unwrap()));
        harness::run(alternate(&c));
    }

    /// A node gone (kill -9: its writer, its cache and its spool lost) loses nothing
    /// acknowledged: a fresh node goes on at the row's offset with the row's hash state; one
    /// whose hash state was lost (or a digest other than sha256) reads the assembled object
    /// back to verify, and a wrong digest then leaves nothing at the blob key.
    #[test]
    fn a_session_survives_its_node() {
        let server = harness::S3Server::s3s_fs();
        let c = Cluster::new(&server, None);
        harness::run(async {
            let data = pattern(13 * MIB + 77);
            let digest = Digest::sha256_of(&data);
            let first = 7 * MIB + 5;
            let a = c.node();
            let id = c.start(&a).await;
            assert_eq!(c.patch(&a, &id, &data[..first]).await, first as u64);
            drop(a);
            let b = c.node();
            let s = b
                .uploads
                .current(&c.pool, &c.meta, "r", ALICE, &id)
                .await
                .unwrap();
            assert_eq!(s.offset(), first as u64);
            c.finish(&b, &id, &data[first..], &digest).await.unwrap();
            assert!(c.blob(&digest).await == data);

            // The hash state lost: verified by reading the assembled object back.
            for (wrong, content) in [(true, pattern(11 * MIB + 1)), (false, pattern(12 * MIB))] {
                let d = Digest::sha256_of(&content);
                let claimed = if wrong {
                    Digest::sha256_of(b"other")
                } else {
                    d.clone()
                };
                let a = c.node();
                let id = c.start(&a).await;
                c.patch(&a, &id, &content[..6 * MIB]).await;
                let row = c.row(&id).unwrap();
                c.meta
                    .put_upload(crate::meta::UploadRecord {
                        hash_state: None,
                        ..row
                    })
                    .await
                    .unwrap();
                let b = c.node();
                let got = c.finish(&b, &id, &content[6 * MIB..], &claimed).await;
                if wrong {
                    assert!(matches!(got, Err(Error::DigestMismatch { .. })), "{got:?}");
                    assert!(matches!(
                        c.backend.stat(&claimed).await,
                        Err(Error::NotFound)
                    ));
                } else {
                    got.unwrap();
                    assert!(c.blob(&d).await == content);
                }
                assert!(c.row(&id).is_none());
                assert!(!c.leftovers(&id).await);
            }
        });
    }

    /// A refused digest (running hash) leaves nothing at the blob key; cancel and expiry abort
    /// the multipart upload and delete the tail (moto lists multipart uploads).
    #[test]
    fn refusal_cancel_and_expiry_leave_nothing() {
        let server = harness::S3Server::moto();
        let c = Cluster::new(&server, None);
        let a = c.node();
        let data = pattern(8 * MIB + 3);
        let ids = harness::run(async {
            let d = Digest::sha256_of(b"not these bytes");
            let id = c.start(&a).await;
            c.patch(&a, &id, &data).await;
            let got = c.finish(&a, &id, b"", &d).await;
            assert!(matches!(got, Err(Error::DigestMismatch { .. })), "{got:?}");
            assert!(matches!(c.backend.stat(&d).await, Err(Error::NotFound)));
            assert!(!c.leftovers(&id).await);

            let mut ids = Vec::new();
            for _ in 0..2 {
                let id = c.start(&a).await;
                c.patch(&a, &id, &data).await;
                assert!(c.staged(&id).upload.is_some() && c.staged(&id).tail.is_some());
                ids.push(id);
            }
            assert!(server.multipart_uploads().await.contains("<Upload>"));
            let lease = a
                .uploads
                .lease_current(&c.pool, &c.meta, "r", ALICE, &ids[0])
                .await
                .unwrap();
            a.uploads
                .discard(&c.pool, &c.meta, &lease.session)
                .await
                .unwrap();
            drop(lease);
            assert!(!c.leftovers(&ids[0]).await);
            ids
        });
        // Expiry, on a job's thread (no event loop), from the rows alone.
        let rows = crate::blocking::block_on(c.meta.uploads()).unwrap();
        let far = rows[0].expires + 1;
        let other = c.node();
        let expired = other.uploads.take_expired(&rows, far);
        assert_eq!(expired.len(), 1);
        other
            .uploads
            .discard_blocking(&c.meta, &expired[0])
            .unwrap();
        assert!(c.row(&ids[1]).is_none());
        harness::run(async {
            assert!(!c.leftovers(&ids[1]).await);
            let listed = server.multipart_uploads().await;
            assert!(!listed.contains("<Upload>"), "{listed}");
        });
    }

    /// Beyond CopyObject's 5 GiB: a copy in ranges gives the same bytes (with ranges small
    /// enough to test), and the source stays until the caller removes it.
    #[test]
    fn a_copy_in_ranges_is_byte_identical() {
        let server = harness::S3Server::s3s_fs();
        let backend = S3Backend::new(&server.config("copy/")).unwrap();
        let content: Vec<u8> = (0..12 * 1024 * 1024 + 5).map(|i| (i % 249) as u8).collect();
        let d = Digest::sha256_of(&content);
        harness::run(async {
            backend
                .put_object("PUT", "copy/src", Body::Bytes(&content))
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
