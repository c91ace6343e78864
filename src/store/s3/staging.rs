//! Upload sessions in the bucket ([`UploadStaging`] for [`S3Backend`]): a session `id` is a
//! multipart upload at `<prefix>assembled/<id>` and a tail object at
//! `<prefix>uploads/<id>/tail`. Parts and tails go up from ranges of the node's local spool
//! file, read a piece at a time (a [`Body::File`], sent by the backend's one request loop and
//! read again from the file for a retry), so a part of any size costs one piece of memory.
//!
//! Completion assembles the upload where it is and publishes it with a pointer at the blob's
//! key ([`super::pointer`]): nothing is copied, whatever the size. A session that never filled
//! a part is PUT straight to the blob's key. Cancel and expiry abort the multipart upload and
//! delete the tail, never an assembled object, which may be a blob's bytes by then; a
//! completion that refuses its digest after assembling deletes what it assembled.

use super::conn::Exchange;
use super::{failure, Body, Download, Head, Multipart, Req, S3Backend, READ_PIECE, SIGNED_FOR};
use crate::oci::digest::Digest;
use crate::store::backend::{BlobBackend, Chunks, Fut, UploadStaging};
use crate::store::error::{Error, Result};
use rusty_s3::S3Action;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

impl S3Backend {
    fn tail_key(&self, id: &str) -> String {
        format!("{}uploads/{id}/tail", self.prefix)
    }

    /// A GET of the whole object at `key`, its answer's head checked.
    async fn get_key(&self, key: &str) -> Result<(Head, Exchange)> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        self.call(&Req::new("GET", "GET", &url)).await
    }

    async fn put_part_from(
        &self,
        key: &str,
        upload: &str,
        number: u16,
        src: &Path,
        range: Range<u64>,
    ) -> Result<String> {
        super::with_file(src, async |file| {
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
            // The last part found the upload gone: a completion before this one went through
            // (its answer was lost), when its object is there whole. (The completion itself
            // says so the same way.)
            Err(Error::NotFound) if self.object_size(key).await? == Some(size) => Ok(()),
            other => other,
        }
    }
}

/// ETags compared as S3 means them: with or without their quotes.
fn same_etag(a: &str, b: &str) -> bool {
    a.trim_matches('"') == b.trim_matches('"')
}

impl UploadStaging for S3Backend {
    fn begin<'a>(&'a self, id: &'a str) -> Fut<'a, String> {
        Box::pin(async move {
            let m = self.create_multipart(&self.assembled_key(id)).await?;
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
            let key = self.assembled_key(id);
            self.put_part_from(&key, upload, number, src, range).await
        })
    }

    fn put_tail<'a>(&'a self, id: &'a str, src: &'a Path, range: Range<u64>) -> Fut<'a, String> {
        Box::pin(async move {
            let key = self.tail_key(id);
            super::with_file(src, async |file| {
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
            let (head, mut ex) = self.get_key(&self.tail_key(id)).await?;
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
            let key = self.assembled_key(id);
            self.assemble_at(&key, upload, parts, last, size).await
        })
    }

    fn read_assembled<'a>(&'a self, id: &'a str, size: u64) -> Fut<'a, Box<dyn Chunks + 'a>> {
        Box::pin(async move {
            let (head, ex) = self.get_key(&self.assembled_key(id)).await?;
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
            let assembled = self.assembled_key(id);
            match self.locate(digest).await? {
                None => self.point(digest, id, size).await,
                // A publication before this one went through (its answer was lost).
                Some(located) if located.key == assembled => Ok(()),
                // The blob was there already: these bytes are not needed.
                Some(_) => self.delete_key(&assembled).await,
            }
        })
    }

    fn publish_file<'a>(&'a self, src: &'a Path, digest: &'a Digest) -> Fut<'a, ()> {
        self.put_file(src, digest)
    }

    fn unassemble<'a>(&'a self, id: &'a str) -> Fut<'a, ()> {
        Box::pin(async move { self.delete_key(&self.assembled_key(id)).await })
    }

    fn discard<'a>(&'a self, id: &'a str, upload: Option<&'a str>) -> Fut<'a, ()> {
        Box::pin(async move {
            if let Some(upload) = upload {
                self.abort(&self.assembled_key(id), upload).await?;
            }
            self.delete_key(&self.tail_key(id)).await
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
            let (_, mut read) = self.backend.open(d).await.unwrap();
            let mut got = Vec::new();
            while let Some(piece) = read.next().await.unwrap() {
                got.extend_from_slice(&piece);
            }
            got
        }

        /// Whether the session left anything behind: its tail, or an assembled object other
        /// than the bytes of the blob `published` (which must be where they were assembled,
        /// not a copy).
        async fn leftovers(&self, id: &str, published: Option<&Digest>) -> bool {
            let b = &self.backend;
            let tail = b.object_size(&b.tail_key(id)).await.unwrap().is_some();
            let assembled = b.assembled_key(id);
            if let Some(d) = published {
                let located = b.locate(d).await.unwrap().expect("published");
                assert!(located.pointed && located.key == assembled, "{located:?}");
            }
            let there = b.object_size(&assembled).await.unwrap().is_some();
            tail || there != published.is_some()
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
        assert!(!c.leftovers(&id, Some(&digest)).await);

        // Listed with its size, and deleted whole: the pointer and the bytes it names.
        let listed = c.backend.list(None, 100).await.unwrap();
        assert!(
            listed.iter().any(|l| l.digest == digest && l.size == size),
            "{listed:?}"
        );
        assert!(c.backend.delete(&digest).await.unwrap());
        assert!(matches!(
            c.backend.stat(&digest).await,
            Err(Error::NotFound)
        ));
        let assembled = c.backend.assembled_key(&id);
        assert_eq!(c.backend.object_size(&assembled).await.unwrap(), None);
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
            assert!(!c.leftovers(&id, Some(&digest)).await);

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
                assert!(!c.leftovers(&id, (!wrong).then_some(&d)).await);
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
            assert!(!c.leftovers(&id, None).await);

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
            assert!(!c.leftovers(&ids[0], None).await);
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
            assert!(!c.leftovers(&ids[1], None).await);
            let listed = server.multipart_uploads().await;
            assert!(!listed.contains("<Upload>"), "{listed}");
        });
    }

    /// Two requests that pass their checks at the same instant write the same part number or
    /// the same tail key, and the row then names one request's object where the bucket may
    /// hold the other's. Found, the session is discarded (the client starts over), never
    /// completed with other bytes. Here another request's bytes replace part 1, then a tail.
    #[test]
    fn a_replaced_part_or_tail_ends_the_session() {
        let server = harness::S3Server::moto();
        let c = Cluster::new(&server, None);
        let data = pattern(6 * MIB + 5);
        let digest = Digest::sha256_of(&data);
        let scratch = tempfile::NamedTempFile::new().unwrap();
        let other: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
        std::fs::write(scratch.path(), &other).unwrap();
        harness::run(async {
            // A part: the completion finds it (moto checks part ETags, as AWS does).
            let a = c.node();
            let id = c.start(&a).await;
            c.patch(&a, &id, &data[..6 * MIB]).await;
            let staged = c.staged(&id);
            assert_eq!(staged.parts.len(), 1);
            let upload = staged.upload.unwrap();
            let five = 5 * MIB as u64;
            c.backend
                .put_part(&id, &upload, 1, scratch.path(), 0..five)
                .await
                .unwrap();
            let got = c.finish(&a, &id, &data[6 * MIB..], &digest).await;
            assert!(matches!(got, Err(Error::UnknownUpload(_))), "{got:?}");
            assert!(c.row(&id).is_none());
            assert!(matches!(
                c.backend.stat(&digest).await,
                Err(Error::NotFound)
            ));
            assert!(!c.leftovers(&id, None).await);

            // The tail: the node that goes on finds it.
            let id = c.start(&a).await;
            c.patch(&a, &id, &data[..6 * MIB]).await;
            c.backend
                .put_tail(&id, scratch.path(), five..6 * MIB as u64)
                .await
                .unwrap();
            let b = c.node();
            let got = b
                .uploads
                .lease_current(&c.pool, &c.meta, "r", ALICE, &id)
                .await
                .map(drop);
            assert!(matches!(got, Err(Error::UnknownUpload(_))), "{got:?}");
            assert!(c.row(&id).is_none());
            assert!(!c.leftovers(&id, None).await);
            let listed = server.multipart_uploads().await;
            assert!(!listed.contains("<Upload>"), "{listed}");
        });
    }

    /// A second push of a blob the bucket holds keeps the first one's bytes and deletes its
    /// own; a publication repeated (its answer lost) changes nothing. On both servers, since
    /// a pointer is user metadata, which each stores its own way.
    #[test]
    fn a_blob_pushed_twice_keeps_one_copy() {
        for server in [harness::S3Server::s3s_fs(), harness::S3Server::moto()] {
            pushed_twice(&Cluster::new(&server, None));
        }
    }

    fn pushed_twice(c: &Cluster) {
        harness::run(async {
            let data = pattern(7 * MIB + 9);
            let digest = Digest::sha256_of(&data);
            let a = c.node();
            let first = c.start(&a).await;
            c.patch(&a, &first, &data[..6 * MIB]).await;
            let second = c.start(&a).await;
            c.patch(&a, &second, &data[..6 * MIB]).await;
            c.finish(&a, &first, &data[6 * MIB..], &digest)
                .await
                .unwrap();
            c.backend
                .publish(&first, &digest, data.len() as u64)
                .await
                .unwrap();
            assert!(!c.leftovers(&first, Some(&digest)).await);
            c.finish(&a, &second, &data[6 * MIB..], &digest)
                .await
                .unwrap();
            assert!(!c.leftovers(&second, None).await, "the second's bytes went");
            assert!(!c.leftovers(&first, Some(&digest)).await);
            assert!(c.blob(&digest).await == data);
        });
    }
}
