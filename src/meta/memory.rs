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
    super::index::reads_from_index!();

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

    /// Nothing but this process writes it.
    fn refresh_robot_tokens(&self) -> Answer<()> {
        Answer::ready(())
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
            cache: None,
            ..EngineStats::default()
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}
