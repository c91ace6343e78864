//! The in-memory copy of the metadata that every read is served from.
//!
//! Reads on the hot path (tag -> digest, blob link checks, manifest records) must not reach SQL,
//! so the whole metadata set lives here. It changes only through [`Index::apply`], a pure
//! function of a [`WriteOp`] and the commit time, which the engine thread calls after the SQL
//! transaction committed. Because the same function also defines what each op means, it is the
//! reference the SQL side is tested against: loading the database must give back an equal
//! `Index` (see the `load_*` methods, used only by engines at startup).

use super::graph::{BlobRow, Graph, ManifestRow, RefRow, TagRow};
use super::{
    BlobInfo, Conflict, ManifestRecord, Pull, PushEvent, RefKind, Required, RobotToken, TagInfo,
    UploadRecord, WriteOp, WriteOutcome,
};
use crate::oci::digest::Digest;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Index {
    /// Every blob known anywhere, manifests included, with its size and when something last
    /// linked or referenced it. Never shrinks through a write op: forgetting a blob is garbage
    /// collection's decision, not an unlink's.
    blobs: HashMap<Digest, BlobInfo>,
    /// Sum of the sizes in `blobs`, kept with it so that metrics read it in O(1).
    blob_bytes: u64,
    /// Blobs that garbage collection marked and is removing ([`WriteOp::TombstoneBlob`]):
    /// out of `blobs` and out of every repository, so no read finds them, until
    /// [`WriteOp::ForgetBlob`].
    sweeping: HashMap<Digest, BlobInfo>,
    /// Digests not recorded that a writer claimed ([`WriteOp::ClaimBlob`]), and when.
    claims: HashMap<Digest, i64>,
    /// A `BTreeMap` so that the catalog pages come out in order without sorting.
    repos: BTreeMap<String, Repo>,
    uploads: HashMap<String, UploadRecord>,
    /// By name; a `BTreeMap` so that the list comes out in order.
    robot_tokens: BTreeMap<String, RobotToken>,
    /// Manifest puts not yet consumed ([`WriteOp::ForgetPushEvents`]): (repository, digest) ->
    /// time of the last put.
    push_events: HashMap<(String, Digest), i64>,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Repo {
    /// The access boundary: a blob is served from this repository only if linked here.
    blobs: HashSet<Digest>,
    /// `Arc` so that a read hands out the record without copying annotations under the lock.
    manifests: HashMap<Digest, Arc<ManifestRecord>>,
    tags: BTreeMap<String, TagInfo>,
    /// When each manifest was last pulled (coalesced by [`super::Meta::note_pull`]).
    pulls: HashMap<Digest, i64>,
    /// subject -> manifests naming it; a `BTreeSet` because the referrers API is read in digest
    /// order and must be stable across calls.
    referrers: HashMap<Digest, BTreeSet<Digest>>,
    /// child manifest -> the indexes listing it, so a delete can be refused in O(1).
    parents: HashMap<Digest, BTreeSet<Digest>>,
    /// index -> its child manifests; kept only to undo `parents` when the index goes away.
    children: HashMap<Digest, BTreeSet<Digest>>,
}

/// Adds `value` under `key`, creating the set on first use.
fn set_insert(map: &mut HashMap<Digest, BTreeSet<Digest>>, key: &Digest, value: &Digest) {
    map.entry(key.clone()).or_default().insert(value.clone());
}

/// Removes `value` under `key` and drops the set once empty: an empty set left behind would make
/// a live index differ from one loaded from the database, and leak memory on churn.
fn set_remove(map: &mut HashMap<Digest, BTreeSet<Digest>>, key: &Digest, value: &Digest) {
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

/// One page of an ordered key range strictly after `last`. `limit + 1` entries are looked at so
/// that "more remain" is known without counting the rest.
fn page<'a, V: 'a>(
    map: &'a BTreeMap<String, V>,
    last: Option<&str>,
    limit: usize,
) -> (Vec<String>, bool) {
    if limit == 0 {
        return (Vec::new(), false);
    }
    let start = match last {
        Some(last) => Bound::Excluded(last),
        None => Bound::Unbounded,
    };
    let mut keys = map
        .range::<str, _>((start, Bound::Unbounded))
        .map(|(k, _)| k);
    let out: Vec<String> = keys.by_ref().take(limit).cloned().collect();
    let more = out.len() == limit && keys.next().is_some();
    (out, more)
}

impl Repo {
    /// Drops what a stored manifest contributed to the reverse maps, before it is replaced or
    /// deleted.
    fn unlink_manifest(&mut self, record: &ManifestRecord) {
        if let Some(subject) = &record.subject {
            set_remove(&mut self.referrers, subject, &record.digest);
        }
        if let Some(children) = self.children.remove(&record.digest) {
            for child in &children {
                set_remove(&mut self.parents, child, &record.digest);
            }
        }
    }

    /// Removes the manifest, its tags and its pull time; the record if it was there.
    fn remove_manifest(&mut self, digest: &Digest) -> Option<Arc<ManifestRecord>> {
        let record = self.manifests.remove(digest)?;
        self.unlink_manifest(&record);
        self.tags.retain(|_, t| &t.digest != digest);
        self.pulls.remove(digest);
        Some(record)
    }

    fn add_child(&mut self, manifest: &Digest, child: &Digest) {
        set_insert(&mut self.children, manifest, child);
        set_insert(&mut self.parents, child, manifest);
    }

    fn insert_manifest(&mut self, record: Arc<ManifestRecord>) {
        if let Some(subject) = &record.subject {
            set_insert(&mut self.referrers, subject, &record.digest);
        }
        self.manifests.insert(record.digest.clone(), record);
    }
}

impl Index {
    /// The checks a write must pass against the state it would change, for engines whose
    /// transaction is this index (the in-memory engine); the SQL engines run the same checks in
    /// SQL inside their transaction. Pure: the index is not changed.
    pub fn check(&self, op: &WriteOp) -> Result<(), Conflict> {
        match op {
            WriteOp::PutManifest {
                repo,
                record,
                tag,
                fixed_tag,
                requires,
                ..
            } => {
                requires
                    .iter()
                    .try_for_each(|r| self.check_required(repo, r))?;
                self.not_sweeping(&record.digest)?;
                let held = tag
                    .as_ref()
                    .filter(|_| *fixed_tag)
                    .and_then(|t| Some((t, self.repos.get(repo.as_str())?.tags.get(t)?)));
                match held {
                    Some((t, info)) if info.digest != record.digest => {
                        Err(Conflict::TagImmutable {
                            tag: t.clone(),
                            digest: info.digest.clone(),
                        })
                    }
                    _ => Ok(()),
                }
            }
            WriteOp::AdvanceUpload { record, from } => {
                from.judge(self.uploads.get(&record.id), &record.repository)
            }
            WriteOp::LinkBlob { digest, .. } | WriteOp::ClaimBlob { digest } => {
                self.not_sweeping(digest)
            }
            WriteOp::CollectManifest {
                repo,
                digest,
                cutoff,
            } => self.check_collect_manifest(repo, digest, *cutoff),
            WriteOp::TombstoneBlob { digest, cutoff } => self.check_tombstone(digest, *cutoff),
            WriteOp::ExpireTag {
                repo,
                tag,
                digest,
                updated,
            } => match self.repos.get(repo.as_str()).and_then(|r| r.tags.get(tag)) {
                Some(t) if (&t.digest, t.updated) != (digest, *updated) => Err(Conflict::Live),
                _ => Ok(()),
            },
            WriteOp::TombstoneOrphan { digest, cutoff, .. } => {
                let recorded =
                    self.blobs.contains_key(digest) || self.sweeping.contains_key(digest);
                let claimed = self.claims.get(digest).is_some_and(|at| *at >= *cutoff);
                match recorded || claimed {
                    true => Err(Conflict::Live),
                    false => Ok(()),
                }
            }
            WriteOp::CreateRobotToken(t) => match self.robot_tokens.get(&t.name) {
                Some(old) if old.revoked.is_none() => Err(Conflict::RobotTokenExists {
                    name: t.name.clone(),
                }),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn not_sweeping(&self, digest: &Digest) -> Result<(), Conflict> {
        match self.sweeping.contains_key(digest) {
            true => Err(Conflict::BlobSweeping {
                digest: digest.clone(),
            }),
            false => Ok(()),
        }
    }

    /// [`WriteOp::CollectManifest`]'s check: nothing of `repo` keeps the manifest and nothing
    /// touched its digest since `cutoff`. A manifest already gone passes (its removal then
    /// removes nothing).
    fn check_collect_manifest(
        &self,
        repo: &str,
        digest: &Digest,
        cutoff: i64,
    ) -> Result<(), Conflict> {
        let Some(r) = self.repos.get(repo) else {
            return Ok(());
        };
        let Some(record) = r.manifests.get(digest) else {
            return Ok(());
        };
        let tagged = r.tags.values().any(|t| &t.digest == digest);
        let listed = r.parents.contains_key(digest);
        let subject_lives = record
            .subject
            .as_ref()
            .is_some_and(|s| r.manifests.contains_key(s));
        let active = self
            .blobs
            .get(digest)
            .is_some_and(|b| b.last_referenced >= cutoff);
        match tagged || listed || subject_lives || active {
            true => Err(Conflict::Live),
            false => Ok(()),
        }
    }

    /// What [`WriteOp::TombstoneBlob`] checks that this index knows: the blob is recorded,
    /// idle since `cutoff`, no manifest has its digest and no index lists it. (Config and layer references are
    /// not kept in memory; the engines check those against their own records.)
    pub fn check_tombstone(&self, digest: &Digest, cutoff: i64) -> Result<(), Conflict> {
        let idle = self
            .blobs
            .get(digest)
            .is_some_and(|b| b.last_referenced < cutoff);
        let manifest = self
            .repos
            .values()
            .any(|r| r.manifests.contains_key(digest));
        let listed = self.repos.values().any(|r| r.parents.contains_key(digest));
        match idle && !manifest && !listed {
            true => Ok(()),
            false => Err(Conflict::Live),
        }
    }

    fn check_required(&self, repo: &str, r: &Required) -> Result<(), Conflict> {
        let stored = if r.kind == RefKind::Manifest {
            self.manifest(repo, &r.digest).map(|m| m.size)
        } else {
            self.blob_in_repo(repo, &r.digest)
        };
        r.judge(stored)
    }

    /// Applies one committed write and says whether its target existed before.
    ///
    /// For puts, `existed` reports an already present link, manifest or upload; for deletes,
    /// whether there was anything to delete. Ops in a batch are applied in queue order, so the
    /// answer is exact even when the same batch touches the same key twice.
    ///
    /// `record.created` of a `PutManifest` is ignored: the commit time `now` is stamped on a new
    /// manifest and a re-put keeps the first one, so the answer does not depend on caller clocks
    /// and matches what SQL stored.
    pub fn apply(&mut self, op: &WriteOp, now: i64) -> WriteOutcome {
        let existed = match op {
            WriteOp::LinkBlob { repo, digest, size } => {
                self.record_blob(digest, *size, now);
                !self.link(repo, digest)
            }
            WriteOp::MountBlob { from, repo, digest } => match self.blob_in_repo(from, digest) {
                Some(size) => {
                    self.record_blob(digest, size, now);
                    self.link(repo, digest);
                    true
                }
                None => false,
            },
            WriteOp::UnlinkBlob { repo, digest } => self
                .repos
                .get_mut(repo.as_str())
                .is_some_and(|r| r.blobs.remove(digest)),
            WriteOp::PutManifest {
                repo,
                record,
                refs,
                tag,
                fixed_tag: _,
                requires: _,
            } => {
                let digest = &record.digest;
                self.record_blob(digest, record.size, now);
                for (child, kind) in refs {
                    if matches!(kind, RefKind::Config | RefKind::Layer) {
                        self.touch_blob(child, now);
                    }
                }
                self.link(repo, digest);
                let r = self.repo_mut(repo);
                let previous = r.manifests.get(digest).cloned();
                if let Some(previous) = &previous {
                    r.unlink_manifest(previous);
                }
                let mut stored = record.clone();
                stored.created = previous.as_ref().map_or(now, |p| p.created);
                r.insert_manifest(Arc::new(stored));
                for (child, kind) in refs {
                    if *kind == RefKind::Manifest {
                        r.add_child(digest, child);
                    }
                }
                if let Some(tag) = tag {
                    let info = TagInfo {
                        digest: digest.clone(),
                        updated: now,
                    };
                    r.tags.insert(tag.clone(), info);
                }
                self.push_events.insert((repo.clone(), digest.clone()), now);
                previous.is_some()
            }
            WriteOp::DeleteManifest { repo, digest } => self
                .repos
                .get_mut(repo.as_str())
                .and_then(|r| r.remove_manifest(digest))
                .is_some(),
            WriteOp::DeleteTag { repo, tag } => self
                .repos
                .get_mut(repo.as_str())
                .is_some_and(|r| r.tags.remove(tag.as_str()).is_some()),
            // A session alone does not create the repository: it shows in the catalog, and
            // answers tags/list, once content was committed to it (as in distribution).
            WriteOp::PutUpload(record) => self
                .uploads
                .insert(record.id.clone(), record.clone())
                .is_some(),
            // Checked first: the row is there, in this repository. Its start stays as it was.
            WriteOp::AdvanceUpload { record, .. } => match self.uploads.get_mut(&record.id) {
                Some(row) => {
                    row.expires = record.expires;
                    row.offset = record.offset;
                    row.hash_state = record.hash_state.clone();
                    row.remote = record.remote.clone();
                    true
                }
                None => false,
            },
            WriteOp::DeleteUpload { id } => self.uploads.remove(id.as_str()).is_some(),
            WriteOp::RecordPulls(pulls) => {
                for Pull { repo, digest, at } in pulls {
                    let Some(r) = self.repos.get_mut(repo.as_str()) else {
                        continue;
                    };
                    if r.manifests.contains_key(digest) {
                        let last = r.pulls.entry(digest.clone()).or_insert(*at);
                        *last = (*last).max(*at);
                    }
                }
                false
            }
            // Checked first: any token of that name is revoked.
            WriteOp::CreateRobotToken(t) => self
                .robot_tokens
                .insert(t.name.clone(), t.clone())
                .is_some(),
            WriteOp::RevokeRobotToken { name } => match self.robot_tokens.get_mut(name) {
                Some(t) if t.revoked.is_none() => {
                    t.revoked = Some(now);
                    true
                }
                _ => false,
            },
            WriteOp::RobotTokenUsed { name, at } => match self.robot_tokens.get_mut(name) {
                Some(t) => {
                    t.last_used = Some(t.last_used.map_or(*at, |last| last.max(*at)));
                    true
                }
                None => false,
            },
            WriteOp::ClaimBlob { digest } => match self.blobs.contains_key(digest) {
                true => {
                    self.touch_blob(digest, now);
                    true
                }
                false => {
                    self.claims.insert(digest.clone(), now);
                    false
                }
            },
            // Checked first: no row, no recent claim.
            WriteOp::TombstoneOrphan { digest, size, .. } => {
                let info = BlobInfo {
                    size: *size,
                    last_referenced: 0,
                };
                self.sweeping.insert(digest.clone(), info);
                true
            }
            // Checked first: absent, or as the pass read it.
            WriteOp::ExpireTag { repo, tag, .. } => self
                .repos
                .get_mut(repo.as_str())
                .is_some_and(|r| r.tags.remove(tag.as_str()).is_some()),
            WriteOp::ForgetClaims { before } => {
                self.claims.retain(|_, at| *at >= *before);
                false
            }
            WriteOp::ForgetPushEvents(events) => {
                let mut any = false;
                for e in events {
                    let key = (e.repo.clone(), e.digest.clone());
                    if self.push_events.get(&key) == Some(&e.at) {
                        self.push_events.remove(&key);
                        any = true;
                    }
                }
                any
            }
            WriteOp::RecordBlobUse(uses) => {
                for (digest, at) in uses {
                    self.touch_blob(digest, *at);
                }
                false
            }
            // Checked first: nothing keeps it.
            WriteOp::CollectManifest { repo, digest, .. } => self
                .repos
                .get_mut(repo.as_str())
                .and_then(|r| r.remove_manifest(digest))
                .is_some(),
            // Checked first: idle and unreferenced.
            WriteOp::TombstoneBlob { digest, .. } => match self.blobs.remove(digest) {
                Some(info) => {
                    self.blob_bytes = self.blob_bytes.saturating_sub(info.size);
                    for r in self.repos.values_mut() {
                        r.blobs.remove(digest);
                    }
                    self.sweeping.insert(digest.clone(), info);
                    true
                }
                None => false,
            },
            WriteOp::ForgetBlob { digest } => self.sweeping.remove(digest).is_some(),
        };
        WriteOutcome { existed }
    }

    /// Records a blob's size on first sight (the first size is kept, as in SQL) and that it
    /// was referenced at `now`.
    fn record_blob(&mut self, digest: &Digest, size: u64, now: i64) {
        if !self.blobs.contains_key(digest) {
            let info = BlobInfo {
                size,
                last_referenced: now,
            };
            self.blobs.insert(digest.clone(), info);
            self.blob_bytes = self.blob_bytes.saturating_add(size);
        }
        self.touch_blob(digest, now);
    }

    fn touch_blob(&mut self, digest: &Digest, now: i64) {
        if let Some(info) = self.blobs.get_mut(digest) {
            info.last_referenced = info.last_referenced.max(now);
        }
    }

    /// Creates the repository on first mention, as the SQL side does with its upsert.
    fn repo_mut(&mut self, name: &str) -> &mut Repo {
        if !self.repos.contains_key(name) {
            self.repos.insert(name.to_string(), Repo::default());
        }
        self.repos.get_mut(name).expect("just inserted")
    }

    // --- loading: engines rebuild the index row by row; order between tables does not matter.

    pub fn load_repository(&mut self, name: &str) {
        self.repo_mut(name);
    }

    pub fn load_blob(&mut self, digest: Digest, size: u64, last_referenced: i64) {
        let info = BlobInfo {
            size,
            last_referenced,
        };
        let previous = self.blobs.insert(digest, info).map_or(0, |b| b.size);
        self.blob_bytes = (self.blob_bytes - previous).saturating_add(size);
    }

    /// A blob row that a collection marked and did not finish removing.
    pub fn load_sweeping(&mut self, digest: Digest, size: u64, last_referenced: i64) {
        let info = BlobInfo {
            size,
            last_referenced,
        };
        self.sweeping.insert(digest, info);
    }

    pub fn load_claim(&mut self, digest: Digest, at: i64) {
        self.claims.insert(digest, at);
    }

    pub fn load_link(&mut self, repo: &str, digest: Digest) {
        self.link(repo, &digest);
    }

    /// `true` if the link is new.
    fn link(&mut self, repo: &str, digest: &Digest) -> bool {
        self.repo_mut(repo).blobs.insert(digest.clone())
    }

    pub fn marked_blobs(&self) -> Vec<(Digest, u64)> {
        let mut out: Vec<(Digest, u64)> = self
            .sweeping
            .iter()
            .map(|(d, b)| (d.clone(), b.size))
            .collect();
        out.sort();
        out
    }

    /// What `repo` holds: the sizes of the blobs (manifests included) linked to it. Summed
    /// when asked (only a push into a repository with a quota asks): a microsecond or so per
    /// thousand blobs, and no running total to keep right through every op and load order.
    pub fn repo_usage(&self, repo: &str) -> u64 {
        self.repos.get(repo).map_or(0, |r| {
            r.blobs
                .iter()
                .filter_map(|d| self.blob_size(d))
                .fold(0u64, u64::saturating_add)
        })
    }

    pub fn load_manifest(&mut self, repo: &str, record: ManifestRecord) {
        self.repo_mut(repo).insert_manifest(Arc::new(record));
    }

    /// Only `Manifest` references are kept in memory (for [`Index::manifest_parents`]); the
    /// others serve garbage collection, which reads them from the database.
    pub fn load_reference(&mut self, repo: &str, manifest: &Digest, child: &Digest, kind: RefKind) {
        if kind == RefKind::Manifest {
            self.repo_mut(repo).add_child(manifest, child);
        }
    }

    pub fn load_tag(&mut self, repo: &str, name: String, digest: Digest, updated: i64) {
        self.repo_mut(repo)
            .tags
            .insert(name, TagInfo { digest, updated });
    }

    pub fn load_pull(&mut self, repo: &str, digest: Digest, at: i64) {
        self.repo_mut(repo).pulls.insert(digest, at);
    }

    pub fn load_upload(&mut self, record: UploadRecord) {
        self.uploads.insert(record.id.clone(), record);
    }

    pub fn load_push_event(&mut self, repo: &str, digest: Digest, at: i64) {
        self.push_events.insert((repo.to_string(), digest), at);
    }

    /// The oldest `limit` push events (ties by repository and digest, so the order is total).
    pub fn push_events(&self, limit: usize) -> Vec<PushEvent> {
        let mut all: Vec<PushEvent> = self
            .push_events
            .iter()
            .map(|((repo, digest), at)| PushEvent {
                repo: repo.clone(),
                digest: digest.clone(),
                at: *at,
            })
            .collect();
        all.sort_by(|a, b| (a.at, &a.repo, &a.digest).cmp(&(b.at, &b.repo, &b.digest)));
        all.truncate(limit);
        all
    }

    pub fn load_robot_token(&mut self, token: RobotToken) {
        self.robot_tokens.insert(token.name.clone(), token);
    }

    /// Replaces every robot token with what the database holds now (another process wrote
    /// the table: see [`super::Engine::refresh_robot_tokens`]).
    pub fn replace_robot_tokens(&mut self, tokens: Vec<RobotToken>) {
        self.robot_tokens = tokens.into_iter().map(|t| (t.name.clone(), t)).collect();
    }

    // --- reads

    pub fn robot_token(&self, name: &str) -> Option<RobotToken> {
        self.robot_tokens.get(name).cloned()
    }

    pub fn robot_tokens(&self) -> Vec<RobotToken> {
        self.robot_tokens.values().cloned().collect()
    }

    pub fn repo_exists(&self, repo: &str) -> bool {
        self.repos.contains_key(repo)
    }

    pub fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Option<u64> {
        let linked = self.repos.get(repo)?.blobs.contains(digest);
        if linked {
            self.blob_size(digest)
        } else {
            None
        }
    }

    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        self.blobs.get(digest).map(|b| b.size)
    }

    pub fn blob(&self, digest: &Digest) -> Option<BlobInfo> {
        self.blobs.get(digest).copied()
    }

    pub fn resolve_tag(&self, repo: &str, tag: &str) -> Option<Digest> {
        self.tag(repo, tag).map(|t| t.digest)
    }

    pub fn tag(&self, repo: &str, tag: &str) -> Option<TagInfo> {
        self.repos.get(repo)?.tags.get(tag).cloned()
    }

    pub fn last_pulled(&self, repo: &str, digest: &Digest) -> Option<i64> {
        self.repos.get(repo)?.pulls.get(digest).copied()
    }

    pub fn manifest(&self, repo: &str, digest: &Digest) -> Option<Arc<ManifestRecord>> {
        self.repos.get(repo)?.manifests.get(digest).cloned()
    }

    pub fn tags_after(
        &self,
        repo: &str,
        last: Option<&str>,
        limit: usize,
    ) -> Option<(Vec<String>, bool)> {
        Some(page(&self.repos.get(repo)?.tags, last, limit))
    }

    pub fn repositories_after(&self, last: Option<&str>, limit: usize) -> (Vec<String>, bool) {
        page(&self.repos, last, limit)
    }

    pub fn referrers(&self, repo: &str, subject: &Digest) -> Vec<Arc<ManifestRecord>> {
        let Some(r) = self.repos.get(repo) else {
            return Vec::new();
        };
        r.referrers.get(subject).map_or_else(Vec::new, |set| {
            set.iter()
                .filter_map(|d| r.manifests.get(d).cloned())
                .collect()
        })
    }

    pub fn manifest_parents(&self, repo: &str, child: &Digest) -> Vec<Digest> {
        self.repos
            .get(repo)
            .and_then(|r| r.parents.get(child))
            .map_or_else(Vec::new, |set| set.iter().cloned().collect())
    }

    /// Tags of `repo` pointing at `digest`, in lexical order. A scan of the repository's tags:
    /// it serves rare paths (deletes, listings for one manifest), not the pull path.
    pub fn tags_of(&self, repo: &str, digest: &Digest) -> Vec<String> {
        self.repos.get(repo).map_or_else(Vec::new, |r| {
            r.tags
                .iter()
                .filter(|(_, t)| &t.digest == digest)
                .map(|(t, _)| t.clone())
                .collect()
        })
    }

    /// Sorted by id so that callers (expiry sweeps, tests) see a stable order.
    pub fn uploads(&self) -> Vec<UploadRecord> {
        let mut all: Vec<UploadRecord> = self.uploads.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    pub fn upload(&self, id: &str) -> Option<UploadRecord> {
        self.uploads.get(id).cloned()
    }

    /// The graph garbage collection reads, but for config and layer references, which the
    /// engines add from their own records (see [`Index::load_reference`]).
    pub fn graph_without_refs(&self) -> Graph {
        let blob = |(d, b): (&Digest, &BlobInfo), sweeping| BlobRow {
            digest: d.clone(),
            size: b.size,
            last_referenced: b.last_referenced,
            sweeping,
        };
        let mut g = Graph::default();
        g.blobs.extend(self.blobs.iter().map(|e| blob(e, false)));
        g.blobs.extend(self.sweeping.iter().map(|e| blob(e, true)));
        for (name, r) in &self.repos {
            for (digest, m) in &r.manifests {
                g.manifests.push(ManifestRow {
                    repo: name.clone(),
                    digest: digest.clone(),
                    subject: m.subject.clone(),
                    last_pulled: r.pulls.get(digest).copied(),
                });
            }
            for (index, children) in &r.children {
                for child in children {
                    g.refs.push(RefRow {
                        repo: name.clone(),
                        manifest: index.clone(),
                        child: child.clone(),
                        kind: RefKind::Manifest,
                    });
                }
            }
            for (tag, t) in &r.tags {
                g.tags.push(TagRow {
                    repo: name.clone(),
                    name: tag.clone(),
                    digest: t.digest.clone(),
                    updated: t.updated,
                });
            }
        }
        g
    }

    pub fn repository_count(&self) -> usize {
        self.repos.len()
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// Total size of every blob counted by [`Index::blob_count`].
    pub fn blob_bytes(&self) -> u64 {
        self.blob_bytes
    }

    pub fn manifest_count(&self) -> usize {
        self.repos.values().map(|r| r.manifests.len()).sum()
    }
}

/// The read half of [`super::Engine`] for an engine that answers every read from an
/// [`Index`] it holds, through its own `fn read<T>(&self, f: impl FnOnce(&Index) -> T) ->
/// Answer<T>` (the SQLite engine and the in-memory one): one definition of what each read
/// asks of the index.
macro_rules! reads_from_index {
    () => {
        fn repo_exists(&self, repo: &str) -> Answer<bool> {
            self.read(|ix| ix.repo_exists(repo))
        }

        fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Answer<Option<u64>> {
            self.read(|ix| ix.blob_in_repo(repo, digest))
        }

        fn blob(&self, digest: &Digest) -> Answer<Option<BlobInfo>> {
            self.read(|ix| ix.blob(digest))
        }

        fn repo_usage(&self, repo: &str) -> Answer<u64> {
            self.read(|ix| ix.repo_usage(repo))
        }

        fn marked_blobs(&self) -> Answer<Vec<(Digest, u64)>> {
            self.read(|ix| ix.marked_blobs())
        }

        fn push_events(&self, limit: usize) -> Answer<Vec<PushEvent>> {
            self.read(|ix| ix.push_events(limit))
        }

        fn tag(&self, repo: &str, tag: &str) -> Answer<Option<TagInfo>> {
            self.read(|ix| ix.tag(repo, tag))
        }

        fn manifest(&self, repo: &str, digest: &Digest) -> Answer<Option<Arc<ManifestRecord>>> {
            self.read(|ix| ix.manifest(repo, digest))
        }

        fn tagged_manifest(&self, repo: &str, tag: &str) -> Answer<Option<Arc<ManifestRecord>>> {
            self.read(|ix| ix.manifest(repo, &ix.tag(repo, tag)?.digest))
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

        fn repositories_after(
            &self,
            last: Option<&str>,
            limit: usize,
        ) -> Answer<(Vec<String>, bool)> {
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

        fn robot_token(&self, name: &str) -> Answer<Option<super::RobotToken>> {
            self.read(|ix| ix.robot_token(name))
        }

        fn robot_tokens(&self) -> Answer<Vec<super::RobotToken>> {
            self.read(|ix| ix.robot_tokens())
        }
    };
}
pub(super) use reads_from_index;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A distinct valid digest per label.
    pub(crate) fn dg(label: &str) -> Digest {
        Digest::sha256_of(label.as_bytes())
    }

    pub(crate) fn record(label: &str, subject: Option<&str>) -> ManifestRecord {
        ManifestRecord {
            digest: dg(label),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 100 + label.len() as u64,
            artifact_type: subject.map(|_| "application/example".into()),
            subject: subject.map(dg),
            annotations: None,
            created: 0,
        }
    }

    fn put(repo: &str, rec: ManifestRecord, tag: Option<&str>) -> WriteOp {
        WriteOp::PutManifest {
            repo: repo.into(),
            refs: vec![
                (dg("config"), RefKind::Config),
                (dg("layer"), RefKind::Layer),
            ],
            record: rec,
            tag: tag.map(str::to_string),
            fixed_tag: false,
            requires: vec![],
        }
    }

    fn link(repo: &str, label: &str, size: u64) -> WriteOp {
        WriteOp::LinkBlob {
            repo: repo.into(),
            digest: dg(label),
            size,
        }
    }

    fn existed(ix: &mut Index, op: WriteOp, now: i64) -> bool {
        ix.apply(&op, now).existed
    }

    #[test]
    fn link_and_unlink_blob() {
        let mut ix = Index::default();
        assert!(!ix.repo_exists("a"));
        assert!(!existed(&mut ix, link("a", "x", 5), 1));
        assert!(ix.repo_exists("a"));
        assert_eq!(ix.blob_in_repo("a", &dg("x")), Some(5));
        assert_eq!(ix.blob_in_repo("b", &dg("x")), None);
        assert_eq!(ix.blob_size(&dg("x")), Some(5));
        // Second link: existed; the first size is kept (a digest names one content).
        assert!(existed(&mut ix, link("a", "x", 6), 2));
        assert_eq!(ix.blob_size(&dg("x")), Some(5));
        assert_eq!((ix.blob_count(), ix.blob_bytes()), (1, 5));
        existed(&mut ix, link("a", "y", 11), 2);
        assert_eq!((ix.blob_count(), ix.blob_bytes()), (2, 16));
        // Linking into another repository is its own access grant.
        assert!(!existed(&mut ix, link("b", "x", 5), 3));
        let unlink = |repo: &str| WriteOp::UnlinkBlob {
            repo: repo.into(),
            digest: dg("x"),
        };
        assert!(existed(&mut ix, unlink("a"), 4));
        assert!(!existed(&mut ix, unlink("a"), 5));
        assert!(!existed(&mut ix, unlink("nowhere"), 5));
        assert!(!ix.repo_exists("nowhere"), "unlink must not create a repo");
        assert_eq!(ix.blob_in_repo("a", &dg("x")), None);
        assert_eq!(ix.blob_in_repo("b", &dg("x")), Some(5));
        assert_eq!(
            ix.blob_size(&dg("x")),
            Some(5),
            "global size survives unlink"
        );
        assert!(ix.repo_exists("a"), "repos outlive their links");
    }

    #[test]
    fn put_manifest_links_tags_and_stamps_created() {
        let mut ix = Index::default();
        let mut rec = record("m1", None);
        rec.created = 999; // ignored
        assert!(!existed(&mut ix, put("r", rec.clone(), Some("latest")), 10));
        let got = ix.manifest("r", &dg("m1")).unwrap();
        assert_eq!(got.created, 10);
        assert_eq!(got.media_type, rec.media_type);
        assert_eq!(ix.resolve_tag("r", "latest"), Some(dg("m1")));
        assert_eq!(ix.blob_in_repo("r", &dg("m1")), Some(rec.size));
        assert_eq!(ix.blob_size(&dg("m1")), Some(rec.size));
        // refs other than Manifest are not kept in memory and do not link blobs.
        assert_eq!(ix.blob_in_repo("r", &dg("config")), None);
        // Re-put keeps created, moves nothing else.
        assert!(existed(&mut ix, put("r", rec.clone(), None), 20));
        assert_eq!(ix.manifest("r", &dg("m1")).unwrap().created, 10);
        assert_eq!(ix.resolve_tag("r", "latest"), Some(dg("m1")));
        // Retag moves the tag.
        existed(&mut ix, put("r", record("m2", None), Some("latest")), 30);
        assert_eq!(ix.resolve_tag("r", "latest"), Some(dg("m2")));
        assert_eq!(ix.tags_of("r", &dg("m1")), Vec::<String>::new());
        assert_eq!(ix.manifest_count(), 2);
        assert_eq!(ix.manifest("other", &dg("m1")), None);
        assert_eq!(ix.resolve_tag("other", "latest"), None);
    }

    #[test]
    fn delete_manifest_removes_tags_and_reverse_entries() {
        let mut ix = Index::default();
        existed(&mut ix, put("r", record("m1", None), Some("a")), 1);
        existed(&mut ix, put("r", record("m1", None), Some("b")), 1);
        existed(&mut ix, put("r", record("m2", None), Some("c")), 1);
        existed(&mut ix, put("r", record("sig", Some("m1")), None), 1);
        let index_op = WriteOp::PutManifest {
            repo: "r".into(),
            record: record("idx", None),
            refs: vec![
                (dg("m1"), RefKind::Manifest),
                (dg("m1"), RefKind::Manifest),
                (dg("m2"), RefKind::Manifest),
            ],
            tag: None,
            fixed_tag: false,
            requires: vec![],
        };
        existed(&mut ix, index_op, 1);
        assert_eq!(ix.tags_of("r", &dg("m1")), vec!["a", "b"]);
        assert_eq!(ix.manifest_parents("r", &dg("m1")), vec![dg("idx")]);
        assert_eq!(ix.referrers("r", &dg("m1")).len(), 1);

        let del = |label: &str| WriteOp::DeleteManifest {
            repo: "r".into(),
            digest: dg(label),
        };
        assert!(existed(&mut ix, del("m1"), 2));
        assert!(!existed(&mut ix, del("m1"), 2));
        assert_eq!(ix.resolve_tag("r", "a"), None);
        assert_eq!(ix.resolve_tag("r", "b"), None);
        assert_eq!(ix.resolve_tag("r", "c"), Some(dg("m2")));
        // Its blob link stays: unlinking is garbage collection's job.
        assert!(ix.blob_in_repo("r", &dg("m1")).is_some());
        // The signature still names m1 as its subject and stays listed.
        assert_eq!(ix.referrers("r", &dg("m1")).len(), 1);
        // Deleting the referrer removes its entry.
        assert!(existed(&mut ix, del("sig"), 3));
        assert!(ix.referrers("r", &dg("m1")).is_empty());
        // Deleting the index frees its children.
        assert!(existed(&mut ix, del("idx"), 3));
        assert!(ix.manifest_parents("r", &dg("m2")).is_empty());
        assert!(!existed(
            &mut ix,
            WriteOp::DeleteManifest {
                repo: "nowhere".into(),
                digest: dg("m1")
            },
            3
        ));
        assert!(!ix.repo_exists("nowhere"));
        // Nothing empty is left behind: equal to an index built from scratch.
        let mut fresh = Index::default();
        existed(&mut fresh, put("r", record("m2", None), Some("c")), 1);
        existed(&mut fresh, link("r", "m1", 0), 1);
        existed(&mut fresh, link("r", "sig", 0), 1);
        existed(&mut fresh, link("r", "idx", 0), 1);
        let mut ix2 = ix.clone();
        ix2.blobs = fresh.blobs.clone();
        ix2.blob_bytes = fresh.blob_bytes;
        // Push events stay for their consumer (which finds the manifest gone).
        ix2.push_events = fresh.push_events.clone();
        assert_eq!(ix2, fresh);
    }

    #[test]
    fn replacing_references_updates_parents() {
        let mut ix = Index::default();
        let idx = |children: &[&str]| WriteOp::PutManifest {
            repo: "r".into(),
            record: record("idx", None),
            refs: children
                .iter()
                .map(|c| (dg(c), RefKind::Manifest))
                .collect(),
            tag: None,
            fixed_tag: false,
            requires: vec![],
        };
        existed(&mut ix, idx(&["a", "b"]), 1);
        assert_eq!(ix.manifest_parents("r", &dg("a")), vec![dg("idx")]);
        existed(&mut ix, idx(&["b"]), 2);
        assert!(ix.manifest_parents("r", &dg("a")).is_empty());
        assert_eq!(ix.manifest_parents("r", &dg("b")), vec![dg("idx")]);
        assert!(ix.manifest_parents("other", &dg("b")).is_empty());
    }

    #[test]
    fn delete_tag() {
        let mut ix = Index::default();
        existed(&mut ix, put("r", record("m", None), Some("t")), 1);
        let del = |repo: &str| WriteOp::DeleteTag {
            repo: repo.into(),
            tag: "t".into(),
        };
        assert!(existed(&mut ix, del("r"), 2));
        assert!(!existed(&mut ix, del("r"), 2));
        assert!(!existed(&mut ix, del("none"), 2));
        assert!(ix.manifest("r", &dg("m")).is_some(), "manifest stays");
        assert_eq!(ix.tags_after("r", None, 10), Some((vec![], false)));
    }

    #[test]
    fn uploads() {
        let mut ix = Index::default();
        let up = |id: &str, expires| UploadRecord {
            id: id.into(),
            repository: "r".into(),
            started: 1,
            expires,
            offset: expires as u64 * 10,
            hash_state: Some(vec![expires as u8; 3]),
            owner: (expires > 5).then(|| "alice".into()),
            remote: None,
        };
        assert!(!existed(&mut ix, WriteOp::PutUpload(up("u2", 5)), 1));
        assert!(
            !ix.repo_exists("r"),
            "a session alone creates no repository"
        );
        assert!(!existed(&mut ix, WriteOp::PutUpload(up("u1", 5)), 1));
        assert!(existed(&mut ix, WriteOp::PutUpload(up("u2", 9)), 1));
        assert_eq!(
            ix.upload("u2"),
            Some(up("u2", 9)),
            "a re-put replaces offset and state"
        );
        assert_eq!(ix.uploads(), vec![up("u1", 5), up("u2", 9)]);
        let del = WriteOp::DeleteUpload { id: "u1".into() };
        assert!(existed(&mut ix, del.clone(), 2));
        assert!(!existed(&mut ix, del, 2));
        assert_eq!(ix.upload("u1"), None);
        assert_eq!(ix.uploads(), vec![up("u2", 9)]);
    }

    #[test]
    fn referrers_are_ordered_by_digest_and_per_repo() {
        let mut ix = Index::default();
        let labels = ["s1", "s2", "s3", "s4", "s5", "s6"];
        for l in labels {
            existed(&mut ix, put("r", record(l, Some("base")), None), 1);
        }
        existed(&mut ix, put("other", record("s7", Some("base")), None), 1);
        let got: Vec<Digest> = ix
            .referrers("r", &dg("base"))
            .iter()
            .map(|m| m.digest.clone())
            .collect();
        let mut want: Vec<Digest> = labels.iter().map(|l| dg(l)).collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(ix.referrers("other", &dg("base")).len(), 1);
        assert!(ix.referrers("r", &dg("s1")).is_empty());
        assert!(ix.referrers("none", &dg("base")).is_empty());
        assert_eq!(
            ix.referrers("r", &dg("base"))[0].artifact_type.as_deref(),
            Some("application/example")
        );
    }

    #[test]
    fn tag_pagination_edges() {
        let mut ix = Index::default();
        assert_eq!(ix.tags_after("r", None, 10), None);
        for t in ["b", "d", "f"] {
            existed(&mut ix, put("r", record("m", None), Some(t)), 1);
        }
        let tags = |last: Option<&str>, n| ix.tags_after("r", last, n).unwrap();
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(tags(None, 0), (vec![], false));
        assert_eq!(tags(Some("b"), 0), (vec![], false));
        assert_eq!(tags(None, 10), (v(&["b", "d", "f"]), false));
        assert_eq!(tags(None, 3), (v(&["b", "d", "f"]), false));
        assert_eq!(tags(None, 2), (v(&["b", "d"]), true));
        assert_eq!(tags(Some("d"), 2), (v(&["f"]), false));
        assert_eq!(tags(Some("c"), 1), (v(&["d"]), true));
        assert_eq!(tags(Some("a"), 1), (v(&["b"]), true));
        assert_eq!(tags(Some("f"), 5), (vec![], false));
        assert_eq!(tags(Some("z"), 5), (vec![], false));
        assert_eq!(tags(Some(""), 1), (v(&["b"]), true));
        assert_eq!(tags(None, usize::MAX), (v(&["b", "d", "f"]), false));
    }

    #[test]
    fn repository_pagination_edges() {
        let mut ix = Index::default();
        assert_eq!(ix.repositories_after(None, 5), (vec![], false));
        for r in ["lib/b", "lib/d", "x"] {
            existed(&mut ix, link(r, "blob", 1), 1);
        }
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(ix.repositories_after(None, 0), (vec![], false));
        assert_eq!(
            ix.repositories_after(None, 2),
            (v(&["lib/b", "lib/d"]), true)
        );
        assert_eq!(
            ix.repositories_after(Some("lib/c"), 2),
            (v(&["lib/d", "x"]), false)
        );
        assert_eq!(ix.repositories_after(Some("lib/d"), 1), (v(&["x"]), false));
        assert_eq!(ix.repositories_after(Some("x"), 1), (vec![], false));
        assert_eq!(ix.repositories_after(Some("zzz"), 1), (vec![], false));
        assert_eq!(ix.repository_count(), 3);
        assert_eq!(ix.blob_count(), 1);
    }

    #[test]
    fn loading_rows_equals_applying_ops() {
        let mut applied = Index::default();
        existed(&mut applied, link("r", "l", 7), 5);
        existed(
            &mut applied,
            WriteOp::PutManifest {
                repo: "r".into(),
                record: record("idx", Some("s")),
                refs: vec![(dg("c"), RefKind::Manifest), (dg("l"), RefKind::Layer)],
                tag: Some("t".into()),
                fixed_tag: false,
                requires: vec![],
            },
            5,
        );
        existed(
            &mut applied,
            WriteOp::PutUpload(UploadRecord {
                id: "u".into(),
                repository: "q".into(),
                started: 1,
                expires: 2,
                offset: 4096,
                hash_state: Some(vec![1, 1, 7]),
                owner: Some("alice".into()),
                remote: None,
            }),
            5,
        );

        let mut loaded = Index::default();
        loaded.load_upload(UploadRecord {
            id: "u".into(),
            repository: "q".into(),
            started: 1,
            expires: 2,
            offset: 4096,
            hash_state: Some(vec![1, 1, 7]),
            owner: Some("alice".into()),
            remote: None,
        });
        loaded.load_tag("r", "t".into(), dg("idx"), 5);
        loaded.load_reference("r", &dg("idx"), &dg("c"), RefKind::Manifest);
        loaded.load_reference("r", &dg("idx"), &dg("l"), RefKind::Layer);
        let mut rec = record("idx", Some("s"));
        rec.created = 5;
        loaded.load_manifest("r", rec.clone());
        loaded.load_link("r", dg("idx"));
        loaded.load_link("r", dg("l"));
        loaded.load_blob(dg("l"), 7, 5);
        loaded.load_blob(dg("idx"), rec.size, 5);
        loaded.load_repository("r");
        loaded.load_push_event("r", dg("idx"), 5);
        assert_eq!(loaded, applied);
        assert_eq!(loaded.blob_bytes(), 7 + rec.size);
        // A row loaded twice (never in practice) must not count twice.
        loaded.load_blob(dg("l"), 7, 5);
        assert_eq!(loaded.blob_bytes(), 7 + rec.size);
    }
}
