//! What garbage collection reads from the metadata: every blob, manifest, reference and tag,
//! as flat rows taken at one instant. The engines only read them (in one transaction); what
//! is garbage is decided from them by a pure function (`lifecycle::gc::plan`), and every
//! removal is checked again inside its own write, so rows that changed since are safe.

use super::RefKind;
use crate::oci::digest::Digest;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    pub blobs: Vec<BlobRow>,
    pub manifests: Vec<ManifestRow>,
    /// Every reference but subjects (those are [`ManifestRow::subject`]).
    pub refs: Vec<RefRow>,
    pub tags: Vec<TagRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    pub digest: Digest,
    pub size: u64,
    /// Unix milliseconds of the last store, link, mount, reference or HEAD.
    pub last_referenced: i64,
    /// Marked by a collection that has not finished removing it.
    pub sweeping: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    pub repo: String,
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// Unix ms of its last recorded pull (retention's `pulled_within`).
    pub last_pulled: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRow {
    pub repo: String,
    pub name: String,
    pub digest: Digest,
    /// Unix ms of its last push.
    pub updated: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefRow {
    pub repo: String,
    pub manifest: Digest,
    pub child: Digest,
    pub kind: RefKind,
}

impl Graph {
    /// Rows in a fixed order, so that two engines' graphs of the same data compare equal.
    pub fn sorted(mut self) -> Graph {
        self.blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        self.manifests
            .sort_by(|a, b| (&a.repo, &a.digest).cmp(&(&b.repo, &b.digest)));
        self.refs.sort_by(|a, b| {
            (&a.repo, &a.manifest, &a.child, a.kind).cmp(&(&b.repo, &b.manifest, &b.child, b.kind))
        });
        self.tags
            .sort_by(|a, b| (&a.repo, &a.name).cmp(&(&b.repo, &b.name)));
        self
    }
}
