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

use super::error::{Error, Result};
use crate::blocking::Pool;
use crate::meta::{now_millis, Meta, UploadRecord};
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
            }),
        }
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
}

/// Exclusive use of a session for one request.
pub struct Lease {
    pub session: Arc<Session>,
    pub offset: u64,
    pub hasher: Option<Hasher>,
    expiry_ms: i64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut s) = self.session.state.lock() {
            s.offset = self.offset;
            s.hasher = self.hasher.take();
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
        }
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
    pub fn restore(&self, records: Vec<UploadRecord>) -> Vec<String> {
        let mut dead_rows = Vec::new();
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
            remote: None,
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
                    remote: None,
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
        drop(s);
        Ok(Lease {
            session,
            offset,
            hasher,
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

    /// Removes a finished or abandoned session's files and metadata row.
    pub async fn discard(&self, pool: &Pool, meta: &Meta, session: &Session) -> Result<()> {
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
