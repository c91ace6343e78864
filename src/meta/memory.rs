//! The metadata engine with no storage at all: an [`Index`] behind a lock, each write checked
//! and applied under it (its "transaction"). Nothing survives the process. It is the reference
//! semantics: the engine suite runs the same questions on it and on the durable engines.

use super::graph::{Graph, RefRow};
use super::Engine;
use super::{
    Answer, BlobInfo, EngineStats, Error, Index, ManifestRecord, PushEvent, TagInfo, UploadRecord,
    WriteOp, WriteOutcome,
};
use super::{Conflict, RefKind};
use crate::oci::digest::Digest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// The config and layer references of each manifest, by repository and digest: what the
/// index leaves to the durable engines' tables (garbage collection reads them).
type Refs = HashMap<(String, Digest), Vec<(Digest, RefKind)>>;

#[derive(Default)]
pub struct MemoryEngine {
    /// The index, and the references beside it (under one lock: one transaction).
    index: RwLock<(Index, Refs)>,
    commits: AtomicU64,
    closed: AtomicBool,
}

impl MemoryEngine {
    fn read<T>(&self, f: impl FnOnce(&Index) -> T) -> Answer<T> {
        Answer::ready(f(&self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0))
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
        let mut guard = self.index.write().unwrap_or_else(PoisonError::into_inner);
        let (ix, refs) = &mut *guard;
        if let Err(conflict) = ix.check(&op) {
            return Answer::failed(Error::Conflict(conflict));
        }
        if let WriteOp::TombstoneBlob { digest, .. } = &op {
            if refs.values().flatten().any(|(d, _)| d == digest) {
                return Answer::failed(Error::Conflict(Conflict::Live));
            }
        }
        let outcome = ix.apply(&op, super::now_millis());
        match &op {
            WriteOp::PutManifest {
                repo,
                record,
                refs: r,
                ..
            } => {
                let blobs = r
                    .iter()
                    .filter(|(_, k)| matches!(k, RefKind::Config | RefKind::Layer))
                    .cloned()
                    .collect();
                refs.insert((repo.clone(), record.digest.clone()), blobs);
            }
            WriteOp::DeleteManifest { repo, digest }
            | WriteOp::CollectManifest { repo, digest, .. } => {
                refs.remove(&(repo.clone(), digest.clone()));
            }
            _ => {}
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        Answer::ready(outcome)
    }

    fn gc_graph(&self) -> Answer<Graph> {
        let guard = self.index.read().unwrap_or_else(PoisonError::into_inner);
        let (ix, refs) = &*guard;
        let mut g = ix.graph_without_refs();
        for ((repo, manifest), children) in refs {
            for (child, kind) in children {
                g.refs.push(RefRow {
                    repo: repo.clone(),
                    manifest: manifest.clone(),
                    child: child.clone(),
                    kind: *kind,
                });
            }
        }
        Answer::ready(g)
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
        let guard = self.index.read().unwrap_or_else(PoisonError::into_inner);
        let ix = &guard.0;
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
