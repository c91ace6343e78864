//! The metadata engine with no storage at all: an [`Index`] behind a lock, each write checked
//! and applied under it (its "transaction"). Nothing survives the process. It is the reference
//! semantics: the engine suite runs the same questions on it and on the durable engines.

use super::Engine;
use super::{
    Answer, BlobInfo, EngineStats, Error, Index, ManifestRecord, TagInfo, UploadRecord, WriteOp,
    WriteOutcome,
};
use crate::oci::digest::Digest;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

#[derive(Default)]
pub struct MemoryEngine {
    index: RwLock<Index>,
    commits: AtomicU64,
    closed: AtomicBool,
}

impl MemoryEngine {
    fn read<T>(&self, f: impl FnOnce(&Index) -> T) -> Answer<T> {
        Answer::ready(f(&self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)))
    }
}

impl Engine for MemoryEngine {
    fn repo_exists(&self, repo: &str) -> Answer<bool> {
        self.read(|ix| ix.repo_exists(repo))
    }

    fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Answer<Option<u64>> {
        self.read(|ix| ix.blob_in_repo(repo, digest))
    }

    fn blob(&self, digest: &Digest) -> Answer<Option<BlobInfo>> {
        self.read(|ix| ix.blob(digest))
    }

    fn tag(&self, repo: &str, tag: &str) -> Answer<Option<TagInfo>> {
        self.read(|ix| ix.tag(repo, tag))
    }

    fn manifest(&self, repo: &str, digest: &Digest) -> Answer<Option<Arc<ManifestRecord>>> {
        self.read(|ix| ix.manifest(repo, digest))
    }

    fn last_pulled(&self, repo: &str, digest: &Digest) -> Answer<Option<i64>> {
        self.read(|ix| ix.last_pulled(repo, digest))
    }

    fn tags_after(
        &self,
        repo: &str,
        last: Option<&str>,
        limit: usize,
    ) -> Answer<Option<(Vec<String>, bool)>> {
        self.read(|ix| ix.tags_after(repo, last, limit))
    }

    fn repositories_after(&self, last: Option<&str>, limit: usize) -> Answer<(Vec<String>, bool)> {
        self.read(|ix| ix.repositories_after(last, limit))
    }

    fn referrers(&self, repo: &str, subject: &Digest) -> Answer<Vec<Arc<ManifestRecord>>> {
        self.read(|ix| ix.referrers(repo, subject))
    }

    fn manifest_parents(&self, repo: &str, child: &Digest) -> Answer<Vec<Digest>> {
        self.read(|ix| ix.manifest_parents(repo, child))
    }

    fn tags_of(&self, repo: &str, digest: &Digest) -> Answer<Vec<String>> {
        self.read(|ix| ix.tags_of(repo, digest))
    }

    fn uploads(&self) -> Answer<Vec<UploadRecord>> {
        self.read(|ix| ix.uploads())
    }

    fn upload(&self, id: &str) -> Answer<Option<UploadRecord>> {
        self.read(|ix| ix.upload(id))
    }

    fn write(&self, op: WriteOp) -> Answer<WriteOutcome> {
        if self.closed.load(Ordering::SeqCst) {
            return Answer::failed(Error::Unavailable {
                retry: false,
                cause: "the metadata engine is closed".into(),
            });
        }
        let mut ix = self.index.write().unwrap_or_else(PoisonError::into_inner);
        if let Err(conflict) = ix.check(&op) {
            return Answer::failed(Error::Conflict(conflict));
        }
        let outcome = ix.apply(&op, super::now_millis());
        self.commits.fetch_add(1, Ordering::Relaxed);
        Answer::ready(outcome)
    }

    fn ping(&self) -> Answer<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Answer::failed(Error::unavailable("the metadata engine is closed"));
        }
        Answer::ready(())
    }

    fn stats(&self) -> EngineStats {
        let ix = self.index.read().unwrap_or_else(PoisonError::into_inner);
        let commits = self.commits.load(Ordering::Relaxed);
        EngineStats {
            commits,
            ops: commits,
            blobs: ix.blob_count() as u64,
            blob_bytes: ix.blob_bytes(),
            ..EngineStats::default()
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}
