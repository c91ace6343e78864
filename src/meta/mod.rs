//! Registry metadata: repositories, blob links, manifests, tags, upload sessions, robot
//! tokens.
//!
//! Handlers reach it through one trait, [`Engine`]: reads and writes, each answering with an
//! [`Answer`] that an engine answering from memory completes at once and an engine that must
//! ask another thread completes later. Every durable change is a [`WriteOp`] through
//! [`Engine::write`], the one commit path: its outcome (did the target exist) and the checks
//! that must hold atomically with it (a manifest's blobs are in its repository) come from the
//! engine's transaction, never from a read before it. Errors are this layer's own
//! ([`Error`]); `api` maps them to OCI codes.
//!
//! Engines:
//! - [`indexed`]: one writer thread over a [`indexed::Database`] (SQLite, [`sqlite`]) with group
//!   commit, and the whole metadata in an in-memory [`Index`] as its read path; one writer
//!   keeps the index exact, and a write resolves only after the commit and the index update.
//! - [`memory::MemoryEngine`]: the index alone, for tests and as the reference the others are
//!   checked against by one suite ([`suite`], run on every engine).
//! - [`postgres::PostgresEngine`]: PostgreSQL, shared by several nodes, on a few engine threads
//!   of its own, chosen by `database.url`; reads go to SQL, the point lookups of many callers
//!   batched into one statement per kind, optionally with manifest records and blob sizes in
//!   Redis ([`redis_cache`]).
//!
//! An engine for data that does not fit in memory and is written by several nodes
//! (PostgreSQL) answers reads from SQL; the trait asks nothing of it that only one process
//! could know, and what it may take from a cache is only what the database vouches for at the
//! same read (a blob's size by digest, a manifest record whose row version matches).

pub(crate) mod answer;
pub(crate) mod error;
pub mod graph;
pub(crate) mod index;
pub(crate) mod indexed;
pub(crate) mod memory;
pub(crate) mod postgres;
mod pulls;
pub(crate) mod redis_cache;
mod resp;
pub mod schema;
mod sql;
pub(crate) mod sqlite;
#[cfg(test)]
pub(crate) mod suite;

pub use answer::Answer;
pub use error::{Conflict, Error, Result};
pub use index::Index;

use crate::oci::digest::Digest;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    /// Unix milliseconds. Set by the engine on the first put (the caller's value is ignored), so
    /// that one clock orders everything garbage collection compares.
    pub created: i64,
}

/// What a manifest references; stored so that validation, referrers and the garbage
/// collector's mark phase can follow the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefKind {
    Config,
    Layer,
    Manifest,
    Subject,
}

impl RefKind {
    /// The text stored in `manifest_references.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Config => "config",
            RefKind::Layer => "layer",
            RefKind::Manifest => "manifest",
            RefKind::Subject => "subject",
        }
    }

    pub fn parse(s: &str) -> Option<RefKind> {
        Some(match s {
            "config" => RefKind::Config,
            "layer" => RefKind::Layer,
            "manifest" => RefKind::Manifest,
            "subject" => RefKind::Subject,
            _ => return None,
        })
    }
}

/// An upload session as the metadata sees it: enough for expiry and for any node to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: String,
    pub repository: String,
    /// Unix milliseconds.
    pub started: i64,
    /// Unix milliseconds after which the session may be swept.
    pub expires: i64,
    /// Bytes acknowledged to the client; durable in the data file when the record is written.
    pub offset: u64,
    /// The running hash of those bytes (`Hasher::save`), so a restart resumes it instead of
    /// reading the file back. None when it was lost (a failed request) or not yet known (rows
    /// from schema v1).
    pub hash_state: Option<Vec<u8>>,
    /// The user who started the session (None: anonymous, or a row from before schema v4);
    /// only that identity may use it. Set when the row is put, never changed by an advance.
    pub owner: Option<String>,
    /// Where the session's bytes stand in a remote backend (a multipart upload, its parts and
    /// the object holding the bytes after them), as the store writes it; None on a deployment
    /// without one, and for rows from before schema v5 (SQLite) or migration 2 (PostgreSQL).
    /// The metadata keeps it as opaque text.
    pub remote: Option<String>,
}

/// Where an upload session's row stands: the two columns a request changes. Every request
/// that writes moves the offset, and the one step that leaves it (recording a new multipart
/// upload) changes the remote state, so two requests that found the same pair found the same
/// state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadAt {
    pub offset: u64,
    pub remote: Option<String>,
}

impl UploadAt {
    /// Where `record` stands.
    pub fn of(record: &UploadRecord) -> UploadAt {
        UploadAt {
            offset: record.offset,
            remote: record.remote.clone(),
        }
    }

    /// Whether the session's `row` (as read now, if any) still stands here, where a writer in
    /// `repository` found it; the conflict that says why not. Pure: the in-memory engine's
    /// check of an advance, and the upload pipeline's before it writes shared objects.
    pub fn judge(&self, row: Option<&UploadRecord>, repository: &str) -> Result<(), Conflict> {
        match row {
            Some(r) if r.repository != repository => Err(Conflict::UploadGone),
            Some(r) if UploadAt::of(r) != *self => Err(Conflict::UploadMoved { offset: r.offset }),
            Some(_) => Ok(()),
            None => Err(Conflict::UploadGone),
        }
    }
}

/// A robot token as stored: its name, the SHA-256 of its secret (never the secret), the
/// scopes it grants as written (`repository:ci/*:pull,push`; `auth::robot` reads them), and
/// its times. The metadata knows nothing of what the scopes mean.
#[derive(Clone, PartialEq, Eq)]
pub struct RobotToken {
    pub name: String,
    pub secret_hash: [u8; 32],
    pub scopes: Vec<String>,
    /// Unix milliseconds, as the creator's clock gave them.
    pub created: i64,
    /// Unix milliseconds after which the token is refused; None: never.
    pub expires: Option<i64>,
    /// Unix milliseconds of the revocation; a revoked token is kept (listed as revoked) until
    /// a token of the same name replaces it.
    pub revoked: Option<i64>,
    /// Unix milliseconds of a recent use (recorded at most about once a minute per token).
    pub last_used: Option<i64>,
}

/// Without the hash: these records travel near log lines and test output.
impl std::fmt::Debug for RobotToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobotToken")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("created", &self.created)
            .field("expires", &self.expires)
            .field("revoked", &self.revoked)
            .field("last_used", &self.last_used)
            .finish_non_exhaustive()
    }
}

/// Every change the metadata accepts. One enum, so that the SQL side and the index side are two
/// interpretations of the same value and can be tested against each other.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Grants `repo` access to a blob, recording the blob (first size and time kept).
    LinkBlob {
        repo: String,
        digest: Digest,
        size: u64,
    },
    /// Links into `repo` a blob that `from` holds, in one step, so that an unlink in `from`
    /// cannot slip between the check and the link. `existed` answers whether `from` had it
    /// (and so whether anything was linked).
    MountBlob {
        from: String,
        repo: String,
        digest: Digest,
    },
    UnlinkBlob {
        repo: String,
        digest: Digest,
    },
    /// Upserts the manifest, replaces its references, optionally points `tag` at it, and links
    /// the manifest's own digest as a blob of `repo` (GET blobs/<manifest digest> works, as in
    /// distribution). Refused with a [`Conflict`] unless everything in `requires` is in `repo`
    /// with its size, checked inside the transaction: a concurrent unlink or delete either
    /// happens before (and the put is refused) or after. With `fixed_tag`, the tag may be
    /// created or put again on the digest it names, never moved (tag immutability): a move is
    /// refused with [`Conflict::TagImmutable`] in the same transaction, so that two pushes to
    /// a new tag cannot both take it.
    PutManifest {
        repo: String,
        record: ManifestRecord,
        refs: Vec<(Digest, RefKind)>,
        tag: Option<String>,
        fixed_tag: bool,
        requires: Vec<Required>,
    },
    /// Removes the manifest, its references and every tag on it; blobs stay linked until garbage
    /// collection decides.
    DeleteManifest {
        repo: String,
        digest: Digest,
    },
    DeleteTag {
        repo: String,
        tag: String,
    },
    /// Inserts or replaces the session with this id (a session starting).
    PutUpload(UploadRecord),
    /// Records a session's new offset, hash state, remote state and expiry after a request,
    /// refused with [`Conflict::UploadGone`] unless the session is still there in the same
    /// repository (a session completed, cancelled or expired, on any node, is never brought
    /// back by a writer that still had it open), and with [`Conflict::UploadMoved`] unless its
    /// row still stands `from` where the writer found it: of two requests that raced from the
    /// same state (a client's retry beside its original request, on two nodes), only the
    /// first to commit advances the row, and the other cannot overwrite what it recorded.
    AdvanceUpload {
        record: UploadRecord,
        from: UploadAt,
    },
    DeleteUpload {
        id: String,
    },
    /// Last-pull times, coalesced in memory ([`Meta::note_pull`]) and written now and then:
    /// never a write per GET. Pulls of manifests no longer there are ignored.
    RecordPulls(Vec<Pull>),
    /// Stores a new robot token, replacing a revoked one of the same name; refused with
    /// [`Conflict::RobotTokenExists`] while a token of that name is not revoked.
    CreateRobotToken(RobotToken),
    /// Marks the token revoked at the commit time (a second revocation keeps the first time);
    /// `existed`: whether a token of that name was not yet revoked.
    RevokeRobotToken {
        name: String,
    },
    /// Records that the token was used at `at` (the latest time wins); `existed`: whether the
    /// token is there.
    RobotTokenUsed {
        name: String,
        at: i64,
    },
    /// A writer is about to store the bytes of `digest` (an upload's completion, a manifest
    /// put) and link them after: moves the blob's activity time to now if it is recorded (or
    /// else records the claim), so that a collection that has not yet marked it leaves it
    /// (and bytes found under its digest) alone, and is refused with
    /// [`Conflict::BlobSweeping`] while a collection is removing it (the writer waits and
    /// claims again). `existed`: whether the blob is recorded. See `lifecycle::gc` for why
    /// this closes the race between a sweep and a push.
    ClaimBlob {
        digest: Digest,
    },
    /// Blobs asked for (HEAD) at these times, coalesced like pulls: their activity times move,
    /// so that a client that found a blob and is about to reference it keeps it through the
    /// grace period. Blobs not recorded, or being removed, are ignored.
    RecordBlobUse(Vec<(Digest, i64)>),
    /// Garbage collection removes a manifest nothing keeps, checked in the transaction: no tag
    /// of `repo` names it, no index of `repo` lists it, its subject (if any) is not a manifest
    /// of `repo`, and nothing stored or referenced its digest since `cutoff` (unix ms).
    /// `existed`: whether it was removed.
    CollectManifest {
        repo: String,
        digest: Digest,
        cutoff: i64,
    },
    /// Garbage collection's first step for a blob: checked in the transaction (recorded, not
    /// being removed already, no activity since `cutoff`, no manifest of any repository has
    /// its digest or references it as config or layer), its links are removed and its row is
    /// marked as being swept, so that no read finds it and no writer links it until
    /// [`WriteOp::ForgetBlob`]. `existed`: whether it was marked.
    TombstoneBlob {
        digest: Digest,
        cutoff: i64,
    },
    /// Garbage collection's last step for a blob, after its bytes are deleted: removes the
    /// row marked by [`WriteOp::TombstoneBlob`] or [`WriteOp::TombstoneOrphan`]. `existed`:
    /// whether a marked row was removed.
    ForgetBlob {
        digest: Digest,
    },
    /// Garbage collection found bytes under `digest` that no row records (a crash between a
    /// store and its link, or an older collection's): checked in the transaction (still no
    /// row, and no writer claimed the digest since `cutoff`), a marked row is written so that
    /// a writer's claim waits while the bytes are deleted. `existed`: whether it was marked.
    TombstoneOrphan {
        digest: Digest,
        size: u64,
        cutoff: i64,
    },
    /// Drops the claims of digests never recorded made before `before` (unix ms): a writer
    /// that claimed and then failed leaves one.
    ForgetClaims {
        before: i64,
    },
    /// Retention removes a tag, only if it still names `digest` and was last pushed at
    /// `updated` (as the pass read it): a tag pushed again since is kept, refused with
    /// [`Conflict::Live`]. `existed`: whether it was removed (false: already gone).
    ExpireTag {
        repo: String,
        tag: String,
        digest: Digest,
        updated: i64,
    },
    /// A consumer (the scan job) has acted on these push events: each is removed only if it
    /// still stands at the time read, so a push again in between is not lost. `existed`:
    /// whether any was removed.
    ForgetPushEvents(Vec<PushEvent>),
}

/// A manifest put, recorded by [`WriteOp::PutManifest`] in its own transaction (the commit
/// path's outbox): what scan on push consumes, so that no push is scanned only from a memory
/// queue a crash would lose. One per repository and digest; a put again moves its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    pub repo: String,
    pub digest: Digest,
    /// Unix milliseconds of the last put.
    pub at: i64,
}

/// Something a manifest needs in its repository: a blob (config, layer) linked there, or a
/// manifest (an index's child) stored there, with the size its descriptor declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Required {
    pub digest: Digest,
    pub size: u64,
    pub kind: RefKind,
}

impl Required {
    /// The check itself, given the size of what the repository holds under the digest (a
    /// linked blob, or a manifest for [`RefKind::Manifest`]): one rule for every engine and
    /// for the read-only pre-check.
    pub fn judge(&self, stored: Option<u64>) -> std::result::Result<(), Conflict> {
        match stored {
            None => Err(Conflict::Missing {
                digest: self.digest.clone(),
                kind: self.kind,
            }),
            Some(stored) if stored != self.size => Err(Conflict::SizeMismatch {
                digest: self.digest.clone(),
                declared: self.size,
                stored,
            }),
            Some(_) => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    pub repo: String,
    pub digest: Digest,
    /// Unix milliseconds.
    pub at: i64,
}

/// A blob as the metadata knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    /// Unix milliseconds of the last link, mount or manifest put that referenced it: garbage
    /// collection's grace period runs from here.
    pub last_referenced: i64,
}

/// Where a tag points and when it was last pushed (retention's "pushed within").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    pub digest: Digest,
    /// Unix milliseconds.
    pub updated: i64,
}

/// `existed`: whether the op's target was there before it ran. For deletes, whether anything
/// was deleted (a 404 vs 202 decision); for `LinkBlob`, `PutManifest` and `PutUpload`, whether
/// the link, manifest or upload was already present (`AdvanceUpload`: always, or refused); for `MountBlob`, whether the source
/// repository had the blob (so it is now linked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOutcome {
    pub existed: bool,
}

/// Counters and totals of an engine, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineStats {
    /// Transactions that committed (a batch, or one op of a batch retried alone).
    pub commits: u64,
    /// Ops that committed.
    pub ops: u64,
    /// Batches whose transaction failed and were retried op by op.
    pub failed_batches: u64,
    /// Writes waiting for the engine; growing means the store cannot keep up.
    pub queue_depth: u64,
    /// Blobs recorded (manifests included) and their total size.
    pub blobs: u64,
    pub blob_bytes: u64,
    /// The Redis cache's figures, when the engine has one.
    pub cache: Option<redis_cache::CacheStats>,
}

/// The metadata store as handlers see it. Object-safe: the server holds an `Arc<dyn Engine>`
/// chosen by configuration. Methods return at once; the [`Answer`] resolves when the engine
/// has answered. Writes are queued when called, so dropping the answer does not cancel them.
pub trait Engine: Send + Sync {
    fn repo_exists(&self, repo: &str) -> Answer<bool>;
    /// Size of the blob, only if it is linked to `repo` (the access boundary).
    fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Answer<Option<u64>>;
    /// What `repo` holds, in bytes: the sizes of the distinct blobs (manifests included)
    /// linked to it (quotas).
    fn repo_usage(&self, repo: &str) -> Answer<u64>;
    /// The blob if any repository ever recorded it (mounts, dedup of uploads).
    fn blob(&self, digest: &Digest) -> Answer<Option<BlobInfo>>;
    fn tag(&self, repo: &str, tag: &str) -> Answer<Option<TagInfo>>;
    fn manifest(&self, repo: &str, digest: &Digest) -> Answer<Option<Arc<ManifestRecord>>>;
    /// The manifest `tag` points at in `repo`: a GET by tag in one step, so that an engine
    /// asking another store answers it in one round trip, from one snapshot.
    fn tagged_manifest(&self, repo: &str, tag: &str) -> Answer<Option<Arc<ManifestRecord>>>;
    /// When the manifest was last pulled, as far as recorded pulls go.
    fn last_pulled(&self, repo: &str, digest: &Digest) -> Answer<Option<i64>>;
    /// Tags of `repo` in lexical order, strictly after `last`, at most `limit`; bool = more
    /// remain. None if the repo is unknown.
    fn tags_after(
        &self,
        repo: &str,
        last: Option<&str>,
        limit: usize,
    ) -> Answer<Option<(Vec<String>, bool)>>;
    /// Repository names in lexical order, strictly after `last`, at most `limit`; bool = more
    /// remain.
    fn repositories_after(&self, last: Option<&str>, limit: usize) -> Answer<(Vec<String>, bool)>;
    /// Manifests in `repo` whose subject is `subject`, ordered by digest.
    fn referrers(&self, repo: &str, subject: &Digest) -> Answer<Vec<Arc<ManifestRecord>>>;
    /// Manifests in `repo` that list `child` as a reference of kind [`RefKind::Manifest`] (the
    /// indexes that still need it), ordered by digest.
    fn manifest_parents(&self, repo: &str, child: &Digest) -> Answer<Vec<Digest>>;
    /// Tags of `repo` pointing at `digest`, in lexical order.
    fn tags_of(&self, repo: &str, digest: &Digest) -> Answer<Vec<String>>;
    /// All upload sessions, ordered by id.
    fn uploads(&self) -> Answer<Vec<UploadRecord>>;
    fn upload(&self, id: &str) -> Answer<Option<UploadRecord>>;
    fn robot_token(&self, name: &str) -> Answer<Option<RobotToken>>;
    /// Every robot token, revoked ones included, ordered by name.
    fn robot_tokens(&self) -> Answer<Vec<RobotToken>>;
    /// Picks up robot tokens that another process (`ringyard token create|revoke`) committed
    /// since the last call, so that later reads see them: the one table written from outside
    /// while the registry runs. Resolves once they are visible (at once for an engine that
    /// no other process writes).
    fn refresh_robot_tokens(&self) -> Answer<()>;

    /// Everything garbage collection decides from, read at one instant (one transaction).
    /// Costly (every blob, manifest, reference and tag): a collector's job thread calls it,
    /// never a request.
    fn gc_graph(&self) -> Answer<graph::Graph>;
    /// Blobs a collection marked ([`WriteOp::TombstoneBlob`], [`WriteOp::TombstoneOrphan`])
    /// and did not finish removing, with their sizes: what a start finishes, without reading
    /// the whole graph.
    fn marked_blobs(&self) -> Answer<Vec<(Digest, u64)>>;
    /// Push events not yet forgotten ([`WriteOp::ForgetPushEvents`]), oldest first, at most
    /// `limit`.
    fn push_events(&self, limit: usize) -> Answer<Vec<PushEvent>>;
    /// Makes this process the only collector of the metadata while the returned guard lives;
    /// `None` when another holds it (another node of a fleet). Blocks (a job thread calls
    /// it). Engines that only one process opens need no lock and always grant it.
    fn lock_collection(&self) -> Result<Option<Box<dyn Send>>> {
        Ok(Some(Box::new(())))
    }

    /// Applies `op` durably; resolves once it is committed and visible to every read on every
    /// thread, with its outcome, or with [`Error::Conflict`] when an in-transaction check
    /// refused it.
    fn write(&self, op: WriteOp) -> Answer<WriteOutcome>;
    /// A cheap round trip to the store behind the writes queued before it (readiness probes).
    /// A stuck store never answers, so callers bound the wait.
    fn ping(&self) -> Answer<()>;
    fn stats(&self) -> EngineStats;
    /// Stops after the queued writes committed (at shutdown); idempotent. May block: call it
    /// from a thread that may. Later writes fail.
    fn close(&self);
}

/// How long a writer waits for a blob that garbage collection is removing before it answers
/// that the blob is being collected (see [`Meta::claim_blob`]).
pub const CLAIM_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Unix time in milliseconds, the unit of every stored timestamp.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The handle every worker holds: the engine, plus the writes that are shorthand for one op.
/// Cloning is an `Arc` bump. Reads are the engine's own methods (through `Deref`).
#[derive(Clone)]
pub struct Meta {
    engine: Arc<dyn Engine>,
}

impl Deref for Meta {
    type Target = dyn Engine;

    fn deref(&self) -> &Self::Target {
        &*self.engine
    }
}

impl Meta {
    pub fn new(engine: Arc<dyn Engine>) -> Meta {
        Meta { engine }
    }

    /// Opens (creating) the SQLite database at `path`, loads its index, starts its writer.
    pub fn open_sqlite(path: &Path) -> Result<Meta, String> {
        let db = sqlite::SqliteEngine::open(path)?;
        indexed::Indexed::start(Box::new(db)).map(|e| Meta::new(Arc::new(e)))
    }

    /// Connects to the PostgreSQL database at `url`, brings its schema up to date and starts
    /// `threads` engine threads (see [`postgres::PostgresEngine::open`]). Blocks.
    pub fn open_postgres(url: &str, threads: usize) -> Result<Meta, String> {
        postgres::PostgresEngine::open(url, threads).map(|e| Meta::new(Arc::new(e)))
    }

    /// [`Meta::open_postgres`] with manifest records and blob sizes cached in the Redis at
    /// `redis_url` (`redis://[[user]:password@]host[:port][/db]`; see [`redis_cache`] for
    /// what is cached and why it cannot be served stale). A Redis that is down, at start or
    /// later, only sends every read to the database until it answers again.
    pub fn open_postgres_with_redis(
        url: &str,
        threads: usize,
        redis_url: &str,
    ) -> Result<Meta, String> {
        let cache = redis_cache::RedisCache::new(redis_url)?;
        postgres::PostgresEngine::open_with_cache(url, threads, Some(cache))
            .map(|e| Meta::new(Arc::new(e)))
    }

    pub fn in_memory() -> Meta {
        Meta::new(Arc::new(memory::MemoryEngine::default()))
    }

    /// Opens an existing SQLite database at `path` without writing it (read-only mode; see
    /// [`sqlite::SqliteEngine::open_read_only`]), loads its index, starts its writer (which
    /// then has nothing to write but pulls, refused by the database).
    pub fn open_sqlite_read_only(path: &Path) -> Result<Meta, String> {
        let db = sqlite::SqliteEngine::open_read_only(path)?;
        indexed::Indexed::start(Box::new(db)).map(|e| Meta::new(Arc::new(e)))
    }

    pub async fn resolve_tag(&self, repo: &str, tag: &str) -> Result<Option<Digest>> {
        Ok(self.tag(repo, tag).await?.map(|t| t.digest))
    }

    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.blob(digest).await?.map(|b| b.size))
    }

    pub async fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<()> {
        self.write(WriteOp::LinkBlob {
            repo: repo.to_string(),
            digest: digest.clone(),
            size,
        })
        .await
        .map(|_| ())
    }

    /// Links `digest` into `repo` if `from` has it; `true` if it did.
    pub async fn mount_blob(&self, from: &str, repo: &str, digest: &Digest) -> Result<bool> {
        self.write(WriteOp::MountBlob {
            from: from.to_string(),
            repo: repo.to_string(),
            digest: digest.clone(),
        })
        .await
        .map(|o| o.existed)
    }

    /// `true` if the link existed.
    pub async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        self.write(WriteOp::UnlinkBlob {
            repo: repo.to_string(),
            digest: digest.clone(),
        })
        .await
        .map(|o| o.existed)
    }

    /// The manifest PUT's checks run ahead from reads, so that a manifest sure to be refused
    /// is refused before its bytes are written (which would leave an orphan file). The write
    /// runs the same checks again inside its transaction, and that answer is the one that
    /// counts: something deleted in between is still caught.
    pub async fn precheck(&self, repo: &str, requires: &[Required]) -> Result<()> {
        for r in requires {
            let stored = if r.kind == RefKind::Manifest {
                self.manifest(repo, &r.digest).await?.map(|m| m.size)
            } else {
                self.blob_in_repo(repo, &r.digest).await?
            };
            r.judge(stored).map_err(Error::Conflict)?;
        }
        Ok(())
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        record: ManifestRecord,
        refs: Vec<(Digest, RefKind)>,
        tag: Option<String>,
        requires: Vec<Required>,
    ) -> Result<()> {
        self.put_manifest_tagged(repo, record, refs, tag, false, requires)
            .await
    }

    /// [`put_manifest`](Self::put_manifest), with `fixed_tag` as in [`WriteOp::PutManifest`].
    pub async fn put_manifest_tagged(
        &self,
        repo: &str,
        record: ManifestRecord,
        refs: Vec<(Digest, RefKind)>,
        tag: Option<String>,
        fixed_tag: bool,
        requires: Vec<Required>,
    ) -> Result<()> {
        self.write(WriteOp::PutManifest {
            repo: repo.to_string(),
            record,
            refs,
            tag,
            fixed_tag,
            requires,
        })
        .await
        .map(|_| ())
    }

    /// `true` if the manifest existed.
    pub async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool> {
        self.write(WriteOp::DeleteManifest {
            repo: repo.to_string(),
            digest: digest.clone(),
        })
        .await
        .map(|o| o.existed)
    }

    /// `true` if the tag existed.
    pub async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool> {
        self.write(WriteOp::DeleteTag {
            repo: repo.to_string(),
            tag: tag.to_string(),
        })
        .await
        .map(|o| o.existed)
    }

    pub async fn put_upload(&self, record: UploadRecord) -> Result<()> {
        self.write(WriteOp::PutUpload(record)).await.map(|_| ())
    }

    /// See [`WriteOp::AdvanceUpload`].
    pub async fn advance_upload(&self, record: UploadRecord, from: UploadAt) -> Result<()> {
        self.write(WriteOp::AdvanceUpload { record, from })
            .await
            .map(|_| ())
    }

    /// `true` if the upload existed.
    pub async fn delete_upload(&self, id: &str) -> Result<bool> {
        self.write(WriteOp::DeleteUpload { id: id.to_string() })
            .await
            .map(|o| o.existed)
    }

    /// Remembers that `digest` was pulled from `repo` now: a map update on this thread, written
    /// by the next [`Meta::flush_pulls`] on it.
    pub fn note_pull(&self, repo: &str, digest: &Digest) {
        pulls::note(repo, digest, now_millis());
    }

    /// Remembers that a client asked for `digest` now (a HEAD before a push that skips the
    /// upload): written with the pulls.
    pub fn note_blob_use(&self, digest: &Digest) {
        pulls::note_blob(digest, now_millis());
    }

    /// Writes this thread's noted pulls and blob uses as one op each, without waiting for
    /// them (a worker's timer calls this every few seconds, and once more when it stops).
    pub fn flush_pulls(&self) {
        let pulls = pulls::take();
        if !pulls.is_empty() {
            drop(self.write(WriteOp::RecordPulls(pulls)));
        }
        let uses = pulls::take_blobs();
        if !uses.is_empty() {
            drop(self.write(WriteOp::RecordBlobUse(uses)));
        }
    }

    /// [`WriteOp::ClaimBlob`], waiting while a collection removes the blob (a sweep takes a
    /// blob's bytes away in well under a second; a collector that died halfway leaves the
    /// mark to the next collection, and then the claim fails after [`CLAIM_PATIENCE`]).
    pub async fn claim_blob(&self, digest: &Digest) -> Result<()> {
        let deadline = std::time::Instant::now() + CLAIM_PATIENCE;
        loop {
            match self
                .write(WriteOp::ClaimBlob {
                    digest: digest.clone(),
                })
                .await
            {
                Err(Error::Conflict(Conflict::BlobSweeping { .. }))
                    if std::time::Instant::now() < deadline =>
                {
                    monoio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => return other.map(|_| ()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_kind_text_round_trips() {
        for k in [
            RefKind::Config,
            RefKind::Layer,
            RefKind::Manifest,
            RefKind::Subject,
        ] {
            assert_eq!(RefKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(RefKind::parse("Layer"), None);
    }
}
