//! Upload sessions. Each lives in `<root>/uploads/<id>/data` with a row in the metadata store,
//! and in a process-wide table so a PATCH may land on any worker. A session is leased by one
//! request at a time; the lease carries the offset and the running sha256 and puts them back
//! when the request ends, however it ends. The row records the offset last acknowledged and
//! the hash state at it (see `upload_writer`), so after a restart the session resumes both;
//! when the state is missing or unusable, the offset is the data file's length and the hash is
//! recomputed from the file when the upload completes.

use super::error::{Error, Result};
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
    pub started: i64,
    /// Persisted sessions have a metadata row; the staging of a monolithic upload does not.
    persisted: bool,
    dir: PathBuf,
    state: Mutex<State>,
}

impl Session {
    pub fn data_path(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn offset(&self) -> u64 {
        self.state.lock().map(|s| s.offset).unwrap_or(0)
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
                Some((offset, hasher)) => {
                    let session = Session {
                        id: r.id.clone(),
                        repo: r.repository.clone(),
                        started: r.started,
                        persisted: true,
                        dir,
                        state: Mutex::new(State {
                            offset,
                            hasher,
                            busy: false,
                            // A restart gives every session a fresh expiry window.
                            expires: now + self.expiry_ms(),
                        }),
                    };
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
        }
    }

    /// Starts a session: its directory and empty data file, and (when `persist`) its metadata
    /// row, so that it survives a restart. If any of it fails (a full disk), what was made is
    /// removed again.
    pub async fn start(
        &self,
        pool: &crate::blocking::Pool,
        meta: &Meta,
        repo: &str,
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

    /// The session `id` of `repo`, if it exists (a session is not visible from another
    /// repository).
    pub fn get(&self, repo: &str, id: &str) -> Result<Arc<Session>> {
        let unknown = || Error::UnknownUpload(id.chars().take(64).collect());
        if !valid_id(id) {
            return Err(unknown());
        }
        match self.table().get(id) {
            Some(s) if s.repo == repo => Ok(s.clone()),
            _ => Err(unknown()),
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

    /// Sessions in the table: resumable uploads started and not yet finished, cancelled or
    /// expired (a monolithic upload's staging is never in it).
    pub fn active_sessions(&self) -> usize {
        self.table().len()
    }

    /// Forgets the session (completed, cancelled or expired); the caller removes its files.
    pub fn forget(&self, id: &str) {
        self.table().remove(id);
    }

    /// Sessions past their expiry and not in use right now.
    pub fn take_expired(&self, now: i64) -> Vec<Arc<Session>> {
        let mut table = self.table();
        let expired: Vec<String> = table
            .values()
            .filter(|s| {
                s.state
                    .lock()
                    .map(|st| !st.busy && st.expires <= now)
                    .unwrap_or(false)
            })
            .map(|s| s.id.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|id| table.remove(&id))
            .collect()
    }

    /// Removes a finished or abandoned session's files and metadata row.
    pub async fn discard(
        &self,
        pool: &crate::blocking::Pool,
        meta: &Meta,
        session: &Session,
    ) -> Result<()> {
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
