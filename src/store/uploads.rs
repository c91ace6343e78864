//! Upload sessions. Each lives in `<root>/uploads/<id>/data` with a row in the metadata engine,
//! and the row is the source of truth for whether the session exists, in which repository, and
//! where it stands (the offset last acknowledged and the hash state at it, see
//! `upload_writer`). This process's table is a cache of open writers, so that a PATCH may land
//! on any worker without a metadata round trip; a session it does not hold (started by another
//! node, or before a restart) is found through the engine and its writer restored from the row,
//! without reading its bytes back.
//!
//! A cached writer may be stale: another node may have gone on with the session, or finished
//! it. Before a request writes, the data file's length (one `statx`, no metadata round trip) is
//! compared with the cached offset; when they differ the cache entry is dropped and the row read
//! again. The write that records a request's new offset is refused once the row is gone, so a
//! session completed, cancelled or expired anywhere is never brought back.
//!
//! A session belongs to the identity that started it (`owner`: the user's name, None for an
//! anonymous caller, which is every caller without authentication). A session is found only
//! with its repository and its owner; to anyone else it is unknown, with the answer an id
//! that never existed gets, so that holding another user's upload URL reveals nothing.
//!
//! A session is leased by one request at a time; the lease carries the offset and the running
//! sha256 and puts them back when the request ends, however it ends. When the state is missing
//! or unusable, the offset is the data file's length and the hash is recomputed from the file
//! when the upload completes.
//!
//! With a remote backend that stages sessions ([`UploadStaging`], S3), the session's bytes are
//! not on any one node: they are the parts of a multipart upload plus a tail object, which the
//! row names ([`Staged`]), and the local data file is only a spool holding the bytes not yet
//! in a part. Nodes share no disk then, so the row, not the file, says whether a cached writer
//! is current: every request reads it (one metadata round trip), and a writer whose offset or
//! staged state differs from the row's is replaced by one restored from the row, whose spool
//! is refilled from the tail object under the lease. A restart trusts no spool at all.
//!
//! The lease is per process; two requests on one session may still run at once on two nodes
//! (a client's retry racing its original request). Each writer keeps where the row stood when
//! it found it ([`Lease::recorded`]), and its advance is refused unless the row still stands
//! there (`meta::WriteOp::AdvanceUpload`): only the first to finish is acknowledged, the
//! other is answered as an out-of-order chunk, with where the session stands.

use super::backend::UploadStaging;
use super::error::{Error, Result};
use crate::blocking::Pool;
use crate::meta::{now_millis, Conflict, Meta, UploadAt, UploadRecord};
use crate::oci::digest::{Algorithm, Digest, Hasher};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// 128 random bits as hex: unguessable, and safe as a path component.
pub fn new_id() -> String {
    let mut raw = [0u8; 16];
    if getrandom::getrandom(&mut raw).is_err() {
        // No entropy source is a broken machine; still never reuse an id in this process.
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        raw = n.to_le_bytes();
    }
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Session ids come from clients in URLs: only our own shape is ever used as a path.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

struct State {
    offset: u64,
    /// None after a restart: the bytes are on disk, the hash state is not.
    hasher: Option<Hasher>,
    busy: bool,
    expires: i64,
    /// Where the bytes stand in the remote backend; None on a deployment without staging.
    staged: Option<Staged>,
    /// Whether the local spool holds the bytes after the last part (staged sessions only).
    spool_ready: bool,
    /// Where the row stood when this writer last read or wrote it: the state its next
    /// advance must find there (see [`Lease::recorded`]).
    recorded: UploadAt,
}

/// A staged session's bytes in the remote backend, as its row records them (JSON in the
/// row's `remote` column): the multipart upload, its parts so far, and the tail object with
/// the bytes after them. The bytes of every part and the tail were acknowledged by the
/// backend before the row named them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Staged {
    /// The multipart upload's id, once the first part was ready; recorded before any part
    /// goes up, so that cancel and expiry can always abort it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
    /// ETag and length of each part, in part order (part numbers from 1).
    #[serde(default)]
    pub parts: Vec<(String, u64)>,
    /// The tail object's ETag: the bytes from [`parts_end`](Self::parts_end) to the offset;
    /// None when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<String>,
}

impl Staged {
    /// Bytes the parts cover.
    pub fn parts_end(&self) -> u64 {
        self.parts.iter().map(|(_, len)| len).sum()
    }

    /// The row's text. Deterministic, so that two states compare as their texts do.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A row's text; None when absent or unreadable.
    pub fn parse(text: Option<&str>) -> Option<Staged> {
        serde_json::from_str(text?).ok()
    }
}

/// Bytes in part `number` (from 1): S3's 5 MiB minimum, growing by 5 MiB every `per_step`
/// parts, so that 10,000 parts of the default step (1,000) cover 268 GiB while a session's
/// spool holds at most about two parts. Pure.
pub fn part_len(number: usize, per_step: usize) -> u64 {
    const STEP: u64 = 5 * 1024 * 1024;
    STEP * (1 + (number.saturating_sub(1) / per_step.max(1)) as u64)
}

pub struct Session {
    pub id: String,
    pub repo: String,
    /// Who started it; only they may use it (see the module doc).
    pub owner: Option<String>,
    pub started: i64,
    /// Persisted sessions have a metadata row; the staging of a monolithic upload does not.
    persisted: bool,
    dir: PathBuf,
    state: Mutex<State>,
}

impl Session {
    /// A resumable session as its row describes it, its writer at `offset` with `hasher`.
    fn from_row(
        dir: PathBuf,
        r: &UploadRecord,
        (offset, hasher): (u64, Option<Hasher>),
        expires: i64,
    ) -> Session {
        Session {
            id: r.id.clone(),
            repo: r.repository.clone(),
            owner: r.owner.clone(),
            started: r.started,
            persisted: true,
            dir,
            state: Mutex::new(State {
                offset,
                hasher,
                busy: false,
                expires,
                staged: Staged::parse(r.remote.as_deref()),
                spool_ready: false,
                recorded: UploadAt::of(r),
            }),
        }
    }

    /// Whether this writer stands where `row` says (staged sessions: the row decides).
    fn matches(&self, row: &UploadRecord) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.offset == row.offset && state.staged.as_ref().map(Staged::to_text) == row.remote
    }

    fn busy(&self) -> bool {
        self.state.lock().map(|s| s.busy).unwrap_or(true)
    }

    /// The staged state as last released by a request.
    fn staged(&self) -> Option<Staged> {
        self.state.lock().ok().and_then(|s| s.staged.clone())
    }

    pub fn data_path(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn offset(&self) -> u64 {
        self.state.lock().map(|s| s.offset).unwrap_or(0)
    }

    /// Whether `caller`, asking in `repo`, may see this session.
    fn visible(&self, repo: &str, caller: Option<&str>) -> bool {
        visible(&self.repo, self.owner.as_deref(), repo, caller)
    }

    /// Whether the session has a metadata row to keep up to date.
    pub fn persisted(&self) -> bool {
        self.persisted
    }
}

pub struct Uploads {
    dir: PathBuf,
    expiry: Duration,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Where resumable sessions keep their bytes when the blobs are remote; None: on this
    /// machine's disk.
    staging: Option<Arc<dyn UploadStaging>>,
    /// Parts per step of the part size ([`part_len`]).
    parts_per_step: usize,
}

/// Exclusive use of a session for one request.
pub struct Lease {
    pub session: Arc<Session>,
    pub offset: u64,
    pub hasher: Option<Hasher>,
    /// The session's bytes in the remote backend (staged sessions).
    pub staged: Option<Staged>,
    /// Whether the local spool holds the bytes after the last part (staged sessions).
    pub spool_ready: bool,
    /// Where the session's row stands as far as this writer knows: as it was read when the
    /// writer was restored, or as this process last recorded it. The request's advance is
    /// refused unless the row still stands there, so that of two requests racing on two
    /// nodes from the same state only one is acknowledged.
    pub recorded: UploadAt,
    expiry_ms: i64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut s) = self.session.state.lock() {
            s.offset = self.offset;
            s.hasher = self.hasher.take();
            s.staged = self.staged.take();
            s.spool_ready = self.spool_ready;
            s.recorded = std::mem::take(&mut self.recorded);
            s.busy = false;
            s.expires = now_millis() + self.expiry_ms;
        }
    }
}

impl Uploads {
    pub fn new(dir: PathBuf, expiry: Duration) -> Uploads {
        Uploads {
            dir,
            expiry,
            sessions: Mutex::new(HashMap::new()),
            staging: None,
            parts_per_step: 1000,
        }
    }

    /// Resumable sessions keep their bytes in `staging` (the remote blob backend's, see
    /// [`BlobStore::upload_staging`](super::blobs::BlobStore::upload_staging)) when given.
    pub fn with_staging(self, staging: Option<Arc<dyn UploadStaging>>) -> Uploads {
        Uploads { staging, ..self }
    }

    /// Parts per step of the part size (tests use small steps to see parts grow).
    pub fn with_parts_per_step(self, parts_per_step: usize) -> Uploads {
        Uploads {
            parts_per_step,
            ..self
        }
    }

    pub fn staging(&self) -> Option<&Arc<dyn UploadStaging>> {
        self.staging.as_ref()
    }

    /// Bytes in part `number` of a staged session.
    pub fn part_len(&self, number: usize) -> u64 {
        part_len(number, self.parts_per_step)
    }

    fn expiry_ms(&self) -> i64 {
        self.expiry.as_millis().min(i64::MAX as u128) as i64
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the session table at startup from the metadata rows and the files on disk;
    /// returns the ids of rows without data (crash leftovers, for the caller to delete).
    /// Changes nothing on disk (read-only mode calls it too). Runs before any event loop
    /// starts, so plain blocking calls are fine here.
    ///
    /// With staging, every session lives in the remote backend and its row, not here: none is
    /// dead for lack of local data, and no spool is trusted after a restart (each is refilled
    /// from its row when a request comes), so nothing is restored.
    pub fn restore(&self, records: Vec<UploadRecord>) -> Vec<String> {
        let mut dead_rows = Vec::new();
        if self.staging.is_some() {
            return dead_rows;
        }
        let now = now_millis();
        for r in records {
            let dir = self.dir.join(&r.id);
            let resumed = if valid_id(&r.id) {
                resume(&dir.join("data"), &r).ok()
            } else {
                None
            };
            match resumed {
                Some(at) => {
                    // A restart gives every session a fresh expiry window.
                    let session = Session::from_row(dir, &r, at, now + self.expiry_ms());
                    self.table().insert(r.id, Arc::new(session));
                }
                None => dead_rows.push(r.id),
            }
        }
        dead_rows
    }

    /// Removes what the staging area holds beyond the restored sessions (crash leftovers);
    /// after [`restore`](Self::restore), before any event loop starts.
    pub fn remove_strays(&self) {
        let table = self.table();
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !table.contains_key(&name) {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                }
            }
        }
    }

    /// The session's row as the lease has it: offset and hash state.
    pub fn record(&self, lease: &Lease) -> UploadRecord {
        UploadRecord {
            id: lease.session.id.clone(),
            repository: lease.session.repo.clone(),
            started: lease.session.started,
            expires: now_millis() + self.expiry_ms(),
            offset: lease.offset,
            hash_state: lease.hasher.as_ref().map(Hasher::save),
            owner: lease.session.owner.clone(),
            remote: lease.staged.as_ref().map(Staged::to_text),
        }
    }

    /// Starts a session for `owner`: its directory and empty data file, and (when `persist`)
    /// its metadata row, so that it survives a restart. If any of it fails (a full disk), what
    /// was made is removed again.
    pub async fn start(
        &self,
        pool: &Pool,
        meta: &Meta,
        repo: &str,
        owner: Option<&str>,
        persist: bool,
    ) -> Result<Arc<Session>> {
        let id = new_id();
        let dir = self.dir.join(&id);
        let d = dir.clone();
        pool.run(move || -> io::Result<()> {
            let made = fs::create_dir_all(&d).and_then(|()| fs::File::create(d.join("data")));
            if made.is_err() {
                let _ = fs::remove_dir_all(&d);
            }
            made.map(drop)
        })
        .await?
        .map_err(|e| Error::io("creating upload session", e))?;
        let started = now_millis();
        let staged = (persist && self.staging.is_some()).then(Staged::default);
        let recorded = UploadAt {
            offset: 0,
            remote: staged.as_ref().map(Staged::to_text),
        };
        if persist {
            let row = meta
                .put_upload(UploadRecord {
                    id: id.clone(),
                    repository: repo.to_string(),
                    started,
                    expires: started + self.expiry_ms(),
                    offset: 0,
                    hash_state: Some(Hasher::new(Algorithm::Sha256).save()),
                    owner: owner.map(str::to_owned),
                    remote: recorded.remote.clone(),
                })
                .await;
            if let Err(e) = row {
                let d = dir.clone();
                let _ = pool.run(move || fs::remove_dir_all(d)).await;
                return Err(e.into());
            }
        }
        let session = Arc::new(Session {
            id: id.clone(),
            repo: repo.to_string(),
            owner: owner.map(str::to_owned),
            started,
            persisted: persist,
            dir,
            state: Mutex::new(State {
                offset: 0,
                hasher: Some(Hasher::new(Algorithm::Sha256)),
                busy: false,
                expires: started + self.expiry_ms(),
                staged,
                spool_ready: true,
                recorded,
            }),
        });
        if persist {
            self.table().insert(id, session.clone());
        }
        Ok(session)
    }

    /// The session `id` of `repo`, if it exists and `caller` started it (a session is not
    /// visible from another repository, nor to another identity): this process's writer when it holds one (no metadata round trip, the hot
    /// PATCH path), else the session as its row in the engine describes it, its writer restored
    /// at the recorded offset and hash state and cached. It may be stale: see
    /// [`lease_current`](Self::lease_current).
    pub async fn find(
        &self,
        pool: &Pool,
        meta: &Meta,
        repo: &str,
        caller: Option<&str>,
        id: &str,
    ) -> Result<Arc<Session>> {
        if !valid_id(id) {
            return Err(unknown(id));
        }
        if self.staging.is_some() {
            return self.find_staged(meta, repo, caller, id).await;
        }
        if let Some(s) = self.table().get(id) {
            return if s.visible(repo, caller) {
                Ok(s.clone())
            } else {
                Err(unknown(id))
            };
        }
        let row = match meta.upload(id).await? {
            Some(row) if visible(&row.repository, row.owner.as_deref(), repo, caller) => row,
            _ => return Err(unknown(id)),
        };
        let dir = self.dir.join(id);
        let (data, r) = (dir.join("data"), row.clone());
        let at = match pool.run(move || adopt(&data, &r)).await? {
            Ok(Some(at)) => at,
            // The row says more than the file holds: a request is writing (or died writing)
            // past it elsewhere; its bytes are not acknowledged, and not this node's to cut.
            Ok(None) => return Err(Error::Busy),
            // No data here: the session was finished meanwhile, or its files are not on this
            // node's storage.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(unknown(id)),
            Err(e) => return Err(Error::io("restoring upload session", e)),
        };
        let session = Session::from_row(dir, &row, at, now_millis() + self.expiry_ms());
        // A request on another worker may have restored it meanwhile: one writer per session.
        Ok(self
            .table()
            .entry(row.id)
            .or_insert_with(|| Arc::new(session))
            .clone())
    }

    /// [`find`](Self::find) for staged sessions: the row first, every time (see the module
    /// doc); the cached writer when it stands where the row says (or a request here is using
    /// it), else one restored from the row, its spool to be refilled under the lease.
    async fn find_staged(
        &self,
        meta: &Meta,
        repo: &str,
        caller: Option<&str>,
        id: &str,
    ) -> Result<Arc<Session>> {
        let row = match meta.upload(id).await? {
            Some(row) if visible(&row.repository, row.owner.as_deref(), repo, caller) => row,
            _ => {
                self.forget(id);
                return Err(unknown(id));
            }
        };
        if row.remote.is_none() && row.offset > 0 {
            // Written by a node that kept the bytes on its own disk: not reachable from here.
            return Err(unknown(id));
        }
        let mut table = self.table();
        if let Some(s) = table.get(id) {
            if s.busy() || s.matches(&row) {
                return Ok(s.clone());
            }
        }
        let hasher = row
            .hash_state
            .as_deref()
            .and_then(Hasher::restore)
            .filter(|h| h.bytes_hashed() == row.offset);
        let mut session = Session::from_row(
            self.dir.join(id),
            &row,
            (row.offset, hasher),
            now_millis() + self.expiry_ms(),
        );
        if let Ok(state) = session.state.get_mut() {
            state.staged.get_or_insert_with(Staged::default);
        }
        let session = Arc::new(session);
        table.insert(row.id, session.clone());
        Ok(session)
    }

    /// Makes the leased staged session's spool hold the bytes after its last part: as it is
    /// when this node wrote them, else recreated (sparse up to the parts' end) and filled from
    /// the tail object the row names.
    async fn ready_spool(&self, pool: &Pool, lease: &mut Lease) -> Result<()> {
        let Some(staging) = self.staging.clone() else {
            return Ok(());
        };
        if lease.spool_ready && on_disk(&lease.session, lease.offset).await {
            return Ok(());
        }
        lease.spool_ready = false;
        let staged = lease.staged.clone().unwrap_or_default();
        let end = staged.parts_end();
        let (dir, data) = (lease.session.dir.clone(), lease.session.data_path());
        pool.run(move || -> io::Result<()> {
            fs::create_dir_all(&dir)?;
            fs::File::create(&data)?.set_len(end)
        })
        .await?
        .map_err(|e| Error::io("making an upload spool", e))?;
        if lease.offset > end {
            let etag = staged
                .tail
                .as_deref()
                .ok_or_else(|| Error::Corrupt("an upload session's row names no tail".into()))?;
            let data = lease.session.data_path();
            staging
                .get_tail(&lease.session.id, etag, lease.offset - end, &data, end)
                .await?;
        }
        lease.spool_ready = true;
        Ok(())
    }

    /// [`find`](Self::find), then [`lease`](Self::lease), with the cached writer checked
    /// against the data file first: when another node went on with the session (the file is
    /// longer) or finished it (the file is gone), the cache entry is dropped and the session
    /// found again through its row. The check is a `statx` of the file, not a metadata read,
    /// so a current cache hit costs no round trip.
    pub async fn lease_current(
        &self,
        pool: &Pool,
        meta: &Meta,
        repo: &str,
        caller: Option<&str>,
        id: &str,
    ) -> Result<Lease> {
        let lease = self.lease(self.find(pool, meta, repo, caller, id).await?)?;
        if self.staging.is_some() {
            let mut lease = lease;
            return match self.ready_spool(pool, &mut lease).await {
                Ok(()) => Ok(lease),
                Err(e @ Error::Corrupt(_)) => Err(self.broken(pool, meta, &lease, e).await),
                Err(e) => Err(e),
            };
        }
        if on_disk(&lease.session, lease.offset).await {
            return Ok(lease);
        }
        self.evict(&lease.session);
        drop(lease);
        let lease = self.lease(self.find(pool, meta, repo, caller, id).await?)?;
        if on_disk(&lease.session, lease.offset).await {
            Ok(lease)
        } else {
            // Moved on again since the row was read: a request elsewhere is writing now.
            self.evict(&lease.session);
            Err(Error::Busy)
        }
    }

    /// The session for a status request, checked as [`lease_current`](Self::lease_current)
    /// checks it (unless a request of this process is writing to it), without taking it: a
    /// status request is no activity that keeps a session from expiring.
    pub async fn current(
        &self,
        pool: &Pool,
        meta: &Meta,
        repo: &str,
        caller: Option<&str>,
        id: &str,
    ) -> Result<Arc<Session>> {
        let session = self.find(pool, meta, repo, caller, id).await?;
        if self.staging.is_some() {
            // Found through the row: current, or in use by a request here.
            return Ok(session);
        }
        let (busy, offset) = {
            let state = session.state.lock().unwrap_or_else(|p| p.into_inner());
            (state.busy, state.offset)
        };
        if busy || on_disk(&session, offset).await {
            return Ok(session);
        }
        self.evict(&session);
        self.find(pool, meta, repo, caller, id).await
    }

    /// Drops `session` from the cache if it is the one cached under its id (a request may
    /// already have restored a newer one).
    pub fn evict(&self, session: &Arc<Session>) {
        let mut table = self.table();
        if table
            .get(&session.id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            table.remove(&session.id);
        }
    }

    /// Takes the session for one request. A second request on the same session while one is
    /// in progress is refused rather than interleaving bytes.
    pub fn lease(&self, session: Arc<Session>) -> Result<Lease> {
        let mut s = session
            .state
            .lock()
            .map_err(|_| Error::Io("an upload session's lock is poisoned".into()))?;
        if s.busy {
            return Err(Error::Busy);
        }
        s.busy = true;
        let offset = s.offset;
        let hasher = s.hasher.take();
        let staged = s.staged.clone();
        let spool_ready = s.spool_ready;
        let recorded = s.recorded.clone();
        drop(s);
        Ok(Lease {
            session,
            offset,
            hasher,
            staged,
            spool_ready,
            recorded,
            expiry_ms: self.expiry_ms(),
        })
    }

    /// Sessions whose writer this process holds: resumable uploads started or continued here
    /// and not yet finished, cancelled, expired or evicted (a monolithic upload's staging is
    /// never in it).
    pub fn active_sessions(&self) -> usize {
        self.table().len()
    }

    /// Forgets the session (completed, cancelled or expired); the caller removes its files.
    pub fn forget(&self, id: &str) {
        self.table().remove(id);
    }

    /// Sessions to discard: past their expiry and not in use right now. The rows decide, since
    /// a session idle here may be in use on another node: a cached writer idle past its expiry
    /// whose row was advanced within it is only dropped from the cache. A row past its expiry
    /// that no writer here holds (its node stopped, or it was evicted) is discarded too.
    /// `rows` are the engine's upload rows.
    pub fn take_expired(&self, rows: &[UploadRecord], now: i64) -> Vec<Arc<Session>> {
        let alive: HashMap<&str, bool> = rows
            .iter()
            .map(|r| (r.id.as_str(), r.expires > now))
            .collect();
        let mut table = self.table();
        let idle: Vec<String> = table
            .values()
            .filter(|s| {
                s.state
                    .lock()
                    .map(|st| !st.busy && st.expires <= now)
                    .unwrap_or(false)
            })
            .map(|s| s.id.clone())
            .collect();
        let mut expired: Vec<Arc<Session>> = idle
            .iter()
            .filter_map(|id| table.remove(id))
            .filter(|s| alive.get(s.id.as_str()) != Some(&true))
            .collect();
        expired.extend(
            rows.iter()
                .filter(|r| r.expires <= now && valid_id(&r.id))
                .filter(|r| !table.contains_key(&r.id) && !idle.contains(&r.id))
                .map(|r| {
                    let dir = self.dir.join(&r.id);
                    Arc::new(Session::from_row(dir, r, (r.offset, None), r.expires))
                }),
        );
        expired
    }

    /// Removes a finished or abandoned session's files and metadata row, and (staged) what
    /// the remote backend holds of it, first: a failure there leaves the row for expiry.
    pub async fn discard(&self, pool: &Pool, meta: &Meta, session: &Session) -> Result<()> {
        self.discard_staged(pool, meta, session, session.staged())
            .await
    }

    /// What becomes of a staged session whose objects in the bucket are not the ones its row
    /// names (`cause`, an [`Error::Corrupt`]): two requests on it passed their checks at the
    /// same instant and one replaced a part or the tail the other's row then named (S3 has no
    /// conditional part upload). If the row moved on since the lease read it, the other
    /// request won and this one is refused as a loser is; otherwise the session cannot go on
    /// and is discarded, and the client, told it is unknown, starts over. (An S3 server that
    /// checks part ETags at completion, as AWS and moto do, finds a replaced part; one that
    /// does not, such as s3s-fs, cannot.)
    pub async fn broken(&self, pool: &Pool, meta: &Meta, lease: &Lease, cause: Error) -> Error {
        let row = match meta.upload(&lease.session.id).await {
            Ok(row) => row,
            Err(e) => return e.into(),
        };
        self.evict(&lease.session);
        match lease.recorded.judge(row.as_ref(), &lease.session.repo) {
            Err(moved @ Conflict::UploadMoved { .. }) => {
                return Error::Metadata(crate::meta::Error::Conflict(moved));
            }
            Ok(()) => {
                crate::log::warn(format_args!(
                    "an upload session in {} is discarded: {cause}",
                    lease.session.repo
                ));
                if let Err(e) = self.discard_leased(pool, meta, lease).await {
                    return e;
                }
            }
            Err(_) => {}
        }
        Error::UnknownUpload(lease.session.id.clone())
    }

    /// [`discard`](Self::discard) of the leased session, whose request may have started its
    /// multipart upload.
    pub async fn discard_leased(&self, pool: &Pool, meta: &Meta, lease: &Lease) -> Result<()> {
        let staged = lease.staged.clone().or_else(|| lease.session.staged());
        self.discard_staged(pool, meta, &lease.session, staged)
            .await
    }

    async fn discard_staged(
        &self,
        pool: &Pool,
        meta: &Meta,
        session: &Session,
        staged: Option<Staged>,
    ) -> Result<()> {
        if let (Some(staging), Some(staged)) = (&self.staging, &staged) {
            staging
                .discard(&session.id, staged.upload.as_deref())
                .await?;
        }
        self.forget(&session.id);
        let dir = session.dir.clone();
        pool.run(move || remove_session_dir(&dir))
            .await?
            .map_err(|e| Error::io("removing upload session", e))?;
        if session.persisted {
            meta.delete_upload(&session.id).await?;
        }
        Ok(())
    }

    /// [`Uploads::discard`] for a thread that may block (a background job's). The error says
    /// what failed, never the session id (it is the secret in the upload URL).
    pub fn discard_blocking(&self, meta: &Meta, session: &Session) -> Result<(), String> {
        if let (Some(staging), Some(staged)) = (&self.staging, session.staged()) {
            staging
                .discard_blocking(&session.id, staged.upload.as_deref())
                .map_err(|e| format!("removing it from the remote backend: {e}"))?;
        }
        self.forget(&session.id);
        remove_session_dir(&session.dir).map_err(|e| format!("removing its files: {e}"))?;
        if session.persisted {
            crate::blocking::block_on(meta.delete_upload(&session.id))
                .map_err(|e| format!("removing its metadata: {e}"))?;
        }
        Ok(())
    }

    /// Unix milliseconds when the session was last released by a request (or started, or
    /// restored after a restart).
    pub fn last_used(&self, session: &Session) -> i64 {
        let state = session.state.lock().unwrap_or_else(|p| p.into_inner());
        state.expires - self.expiry_ms()
    }
}

/// Whether a session of `repo` started by `owner` is visible to `caller` asking in `asked`:
/// the same repository and the same identity (anonymous only to anonymous).
fn visible(repo: &str, owner: Option<&str>, asked: &str, caller: Option<&str>) -> bool {
    repo == asked && owner == caller
}

fn unknown(id: &str) -> Error {
    Error::UnknownUpload(id.chars().take(64).collect())
}

/// Whether `offset` is where the session's data file ends: no other node has written to the
/// session since this process's writer last did, and it is not finished.
async fn on_disk(session: &Session, offset: u64) -> bool {
    monoio::fs::metadata(session.data_path())
        .await
        .is_ok_and(|m| m.len() == offset)
}

/// A session's directory and everything in it; one already gone is no error.
fn remove_session_dir(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Where a restored session stands: its offset, and its hasher when the recorded state is
/// usable. With a state that covers exactly the recorded offset, the data file is cut back to
/// that offset (bytes past it belong to a request that was never acknowledged) and hashing
/// resumes. Without one (a failed request lost it, a v1 row, or it is corrupt), or when the
/// file is shorter than the record says, the file is taken as it is and hashed at completion.
/// An error: the data file is gone.
fn resume(data: &Path, record: &UploadRecord) -> io::Result<(u64, Option<Hasher>)> {
    let len = fs::metadata(data)?.len();
    let hasher = record
        .hash_state
        .as_deref()
        .and_then(Hasher::restore)
        .filter(|h| h.bytes_hashed() == record.offset);
    match hasher {
        Some(h) if len > record.offset => {
            let cut = fs::OpenOptions::new()
                .write(true)
                .open(data)
                .and_then(|f| f.set_len(record.offset));
            Ok(match cut {
                Ok(()) => (record.offset, Some(h)),
                Err(_) => (len, None),
            })
        }
        Some(h) if len == record.offset => Ok((record.offset, Some(h))),
        _ => Ok((len, None)),
    }
}

/// Where a session found through its row stands, as [`resume`] but on a node that may not be
/// the only one: nothing is cut. None when the file is longer than the row says (bytes not
/// acknowledged, perhaps being written elsewhere right now).
fn adopt(data: &Path, record: &UploadRecord) -> io::Result<Option<(u64, Option<Hasher>)>> {
    let len = fs::metadata(data)?.len();
    if len > record.offset {
        return Ok(None);
    }
    let hasher = record
        .hash_state
        .as_deref()
        .and_then(Hasher::restore)
        .filter(|h| h.bytes_hashed() == len);
    Ok(Some((len, hasher)))
}

/// Hashes a whole file (used when a session's hash state was lost, or for sha512 digests):
/// runs on the pool.
pub fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<Digest> {
    let mut f = fs::File::open(path)?;
    let mut h = Hasher::new(algorithm);
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_valid() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(valid_id(&a));
        assert!(!valid_id("../../etc"));
        assert!(!valid_id(&a.to_uppercase()));
    }

    #[test]
    fn hash_file_matches_in_memory_hash() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let content = vec![7u8; 3 * 1024 * 1024 + 5];
        fs::write(&p, &content).unwrap();
        assert_eq!(
            hash_file(&p, Algorithm::Sha256).unwrap(),
            Digest::sha256_of(&content)
        );
        assert_eq!(
            hash_file(&p, Algorithm::Sha512).unwrap(),
            Digest::of(Algorithm::Sha512, &content)
        );
    }
}
