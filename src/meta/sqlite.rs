//! The embedded engine: one SQLite file in WAL mode, written only by the engine thread.
//!
//! `synchronous=FULL` because a reply means durable: in WAL mode `NORMAL` may lose the last
//! commits on power loss, and the registry would then have acknowledged a push it forgot.
//! Foreign keys are on so that a bug that would orphan a tag or a link fails its write instead of
//! silently corrupting what garbage collection later reasons about.
//!
//! The SQL sticks to what PostgreSQL also accepts (`ON CONFLICT`, partial indexes, no
//! `INSERT OR ...`), so the PostgreSQL engine can share the statements' meaning, if not the text.
//! Outcomes (did the target exist) and the checks a write must pass come from these statements,
//! inside the transaction; the in-memory [`Index`] is updated from the committed ops after.

use super::graph::RefRow;
use super::indexed::{Database, OpResult};
use super::sql::{describe, digest_col, load_error, size_col};
use super::{Conflict, Error, Index, ManifestRecord, Pull, RefKind, Required, Result};
use super::{RobotToken, UploadRecord, WriteOp, WriteOutcome};
use crate::oci::digest::Digest;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

/// Stored in `PRAGMA user_version`. Bump it with a migration step in [`migrate`] whenever the
/// schema changes shape.
pub const SCHEMA_VERSION: i64 = 7;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS repositories (
    name    TEXT PRIMARY KEY NOT NULL,
    created INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS blobs (
    digest          TEXT PRIMARY KEY NOT NULL,
    size            INTEGER NOT NULL,
    created         INTEGER NOT NULL,
    last_referenced INTEGER NOT NULL,
    -- Schema v6: set (unix ms) while garbage collection removes the blob's bytes.
    sweeping        INTEGER
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS repository_blobs (
    repository TEXT NOT NULL REFERENCES repositories (name),
    digest     TEXT NOT NULL REFERENCES blobs (digest),
    created    INTEGER NOT NULL,
    PRIMARY KEY (repository, digest)
) WITHOUT ROWID;
-- Sweep: is this blob linked anywhere? Also the child index of the foreign key.
CREATE INDEX IF NOT EXISTS repository_blobs_digest ON repository_blobs (digest);

CREATE TABLE IF NOT EXISTS manifests (
    repository    TEXT NOT NULL REFERENCES repositories (name),
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    size          INTEGER NOT NULL,
    annotations   TEXT,
    created       INTEGER NOT NULL,
    last_pulled   INTEGER,
    PRIMARY KEY (repository, digest)
) WITHOUT ROWID;
-- Garbage collection: is this digest a manifest anywhere? (schema v6)
CREATE INDEX IF NOT EXISTS manifests_digest ON manifests (digest);
-- Referrers API.
CREATE INDEX IF NOT EXISTS manifests_subject
    ON manifests (repository, subject) WHERE subject IS NOT NULL;

CREATE TABLE IF NOT EXISTS manifest_references (
    repository   TEXT NOT NULL,
    manifest     TEXT NOT NULL,
    child_digest TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('config', 'layer', 'manifest', 'subject')),
    PRIMARY KEY (repository, manifest, child_digest, kind),
    FOREIGN KEY (repository, manifest) REFERENCES manifests (repository, digest)
) WITHOUT ROWID;
-- Mark and sweep: who still references this digest?
CREATE INDEX IF NOT EXISTS manifest_references_child
    ON manifest_references (child_digest, repository);

CREATE TABLE IF NOT EXISTS tags (
    repository TEXT NOT NULL,
    name       TEXT NOT NULL,
    digest     TEXT NOT NULL,
    updated    INTEGER NOT NULL,
    PRIMARY KEY (repository, name),
    FOREIGN KEY (repository, digest) REFERENCES manifests (repository, digest)
) WITHOUT ROWID;
-- Deleting a manifest drops its tags; also the child index of the foreign key.
CREATE INDEX IF NOT EXISTS tags_digest ON tags (repository, digest);

-- No foreign key to repositories: a session does not create its repository (the index's
-- PutUpload says why).
CREATE TABLE IF NOT EXISTS uploads (
    id            TEXT PRIMARY KEY NOT NULL,
    repository    TEXT NOT NULL,
    started       INTEGER NOT NULL,
    expires       INTEGER NOT NULL,
    upload_offset INTEGER NOT NULL DEFAULT 0,
    hash_state    BLOB,
    owner         TEXT,
    remote        TEXT
) WITHOUT ROWID;
-- Expiry sweep.
CREATE INDEX IF NOT EXISTS uploads_expires ON uploads (expires);
CREATE INDEX IF NOT EXISTS uploads_repository ON uploads (repository);

-- Schema v6: digests a writer is storing that no row records yet (garbage collection's
-- orphan sweep leaves their bytes alone).
CREATE TABLE IF NOT EXISTS blob_claims (
    digest TEXT PRIMARY KEY NOT NULL,
    at     INTEGER NOT NULL
) WITHOUT ROWID;

-- Schema v7: manifest puts not yet consumed by scan on push, written in the put's own
-- transaction (the commit path's outbox).
CREATE TABLE IF NOT EXISTS push_events (
    repository TEXT NOT NULL,
    digest     TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (repository, digest)
) WITHOUT ROWID;

-- Robot tokens (schema v3): the SHA-256 of the secret, never the secret; scopes one per line.
CREATE TABLE IF NOT EXISTS robot_tokens (
    name        TEXT PRIMARY KEY NOT NULL,
    secret_hash BLOB NOT NULL CHECK (length(secret_hash) = 32),
    scopes      TEXT NOT NULL,
    created     INTEGER NOT NULL,
    expires     INTEGER,
    revoked     INTEGER,
    last_used   INTEGER
) WITHOUT ROWID;
";

pub struct SqliteEngine {
    conn: Connection,
    /// `PRAGMA data_version` when the robot tokens were last read: it changes when another
    /// connection (another process) commits, never for this connection's own commits.
    data_version: Option<i64>,
}

impl SqliteEngine {
    /// Opens or creates the database and brings its schema to [`SCHEMA_VERSION`]. Errors name
    /// the file, since they end up in front of an operator at startup.
    pub fn open(path: &Path) -> Result<SqliteEngine, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!("metadata database {}: {what}: {e}", path.display())
        };
        let conn = Connection::open(path).map_err(|e| fail("open", &e))?;
        configure(&conn).map_err(|e| fail("configure", &e))?;
        migrate(&conn).map_err(|e| fail("schema", &e))?;
        Ok(SqliteEngine {
            conn,
            data_version: None,
        })
    }

    /// Opens the database for a read-only server, changing nothing on disk and, where SQLite
    /// can help it, creating nothing. Two ways, each where it is the safe one (both were tried
    /// on a read-only bind mount):
    ///
    /// - `immutable=1`, when the directory is not writable and no committed writes wait in
    ///   `meta.db-wal`: SQLite then reads the file as a plain file, with no `-shm` and no locks,
    ///   which is the only way to open a WAL database there after a clean stop (the last
    ///   connection's checkpoint removed `-wal` and `-shm`, and a read-only connection must
    ///   create `-shm` to read in WAL mode). Immutable means it also ignores any `-wal`: with a
    ///   non-empty one it would read a database without its last commits (seen: missing
    ///   tables), hence the condition. Nor may the file change under it: not through this
    ///   directory, which is not writable, and a ringyard writing it elsewhere on this host
    ///   holds the data directory's lock, which our shared lock excludes.
    /// - `SQLITE_OPEN_READ_ONLY` otherwise: it reads `meta.db-wal` through `meta.db-shm`, so it
    ///   sees the commits a server killed mid-run left there, and coordinates with any other
    ///   reader. In a writable directory SQLite makes `-shm` and `-wal` if missing (the same
    ///   files any reader makes, and nothing of the data). In a read-only one without `-shm`
    ///   it cannot read the log at all, and the error says how to fold it in.
    pub fn open_read_only(path: &Path) -> Result<SqliteEngine, String> {
        use rusqlite::OpenFlags;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!("metadata database {}: {what}: {e}", path.display())
        };
        if !path.is_file() {
            return Err(format!(
                "no metadata database at {}: --read-only serves a data directory that a \
                 read-write run has written",
                path.display()
            ));
        }
        let wal = sibling(path, "-wal");
        let pending = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
        let dir = path.parent().unwrap_or(Path::new("."));
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = if !pending && !writable(dir) {
            Connection::open_with_flags(format!("{}?immutable=1", file_uri(path)), flags)
        } else {
            Connection::open_with_flags(path, flags)
        };
        let conn = conn.map_err(|e| {
            if pending && !writable(dir) {
                fail(
                    "open",
                    &format_args!(
                        "{e}; {} holds commits not yet in the database, which a read-only \
                         directory without its -shm file cannot show: run once read-write on \
                         a writable copy to fold them in",
                        wal.display()
                    ),
                )
            } else {
                fail("open", &e)
            }
        })?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| fail("configure", &e))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| fail("schema", &e))?;
        if version != SCHEMA_VERSION {
            return Err(fail(
                "schema",
                &format_args!(
                    "version {version}, but this binary reads version {SCHEMA_VERSION} and \
                     cannot migrate in read-only mode"
                ),
            ));
        }
        Ok(SqliteEngine {
            conn,
            data_version: None,
        })
    }
}

/// `meta.db` + `suffix`: SQLite's side files.
fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Whether this process may create files in `dir` (false on a read-only mount, even as root).
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid C string; access only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// A `file:` URI for `path`, every byte outside the unreserved set and `/` percent-encoded
/// (`?`, `#` and `%` in a path would otherwise be read as URI syntax).
fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

fn configure(conn: &Connection) -> Result<(), String> {
    let sql = |e: rusqlite::Error| e.to_string();
    // Another process (a `gc` or `scan` command) may hold the write lock briefly.
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("journal_mode stayed {mode}: WAL unsupported here"));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sql)?;
    Ok(())
}

/// v1 to v2: upload sessions record their acknowledged offset and hash state (rows of v1 get
/// offset 0 and no state, which restore reads as "unknown: take the file as it is"); blobs
/// record when they were last referenced (from their creation, for v1 rows) and manifests
/// when they were last pulled, the times garbage collection and retention read.
const V1_TO_V2: &str = "
ALTER TABLE uploads ADD COLUMN upload_offset INTEGER NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN hash_state BLOB;
ALTER TABLE blobs ADD COLUMN last_referenced INTEGER NOT NULL DEFAULT 0;
UPDATE blobs SET last_referenced = created;
ALTER TABLE manifests ADD COLUMN last_pulled INTEGER;
";

/// v3 to v4 (and any older schema, after its own steps): upload sessions record who started
/// them. Rows from before get none, that is anonymous: with authentication on, only an
/// anonymous caller may go on with them. Added only where it is missing, so the step holds
/// whatever else v3 brought and in whichever order the two were merged.
///
/// v4 to v5 likewise adds `remote`, where a session's state in a remote backend is kept
/// (rows from before have none: they were written on a filesystem deployment).
///
/// v5 to v6 likewise adds `blobs.sweeping` (garbage collection's mark).
fn add_column(conn: &Connection, table: &str, column: &str, kind: &str) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |row| row.get(0),
    )?;
    if !has {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind};"))?;
    }
    Ok(())
}

/// The `user_version` of the database at `path`, read without changing anything.
pub(crate) fn recorded_version(path: &Path) -> Result<i64, String> {
    use rusqlite::OpenFlags;
    let fail = |e: rusqlite::Error| format!("metadata database {}: {e}", path.display());
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(fail)
}

/// v2 to v3 adds only the `robot_tokens` table, which [`SCHEMA`] creates when missing.
///
/// Brings older schemas forward step by step, creates what is missing, and refuses a database
/// written by a newer binary, whose schema this code would misread. All in one write
/// transaction, with the version read inside it, so two processes opening an old database
/// at once cannot both run a step.
fn migrate(conn: &Connection) -> Result<(), String> {
    let sql = |e: rusqlite::Error| e.to_string();
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql)?;
    let steps = || -> Result<(), String> {
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sql)?;
        if version > SCHEMA_VERSION {
            return Err(format!(
                "schema version {version} is newer than this binary supports ({SCHEMA_VERSION})"
            ));
        }
        if version == 1 {
            conn.execute_batch(V1_TO_V2).map_err(sql)?;
        }
        if (1..4).contains(&version) {
            add_column(conn, "uploads", "owner", "TEXT").map_err(sql)?;
        }
        if (1..5).contains(&version) {
            add_column(conn, "uploads", "remote", "TEXT").map_err(sql)?;
        }
        if (1..6).contains(&version) {
            add_column(conn, "blobs", "sweeping", "INTEGER").map_err(sql)?;
        }
        conn.execute_batch(&format!("{SCHEMA} PRAGMA user_version = {SCHEMA_VERSION};"))
            .map_err(sql)
    };
    match steps() {
        Ok(()) => conn.execute_batch("COMMIT").map_err(sql),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// This layer's reading of an SQLite failure: full and busy are what an operator can act on.
fn sql_error(what: &str, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode as C;
    let text = format!("{what}: {e}");
    match e.sqlite_error_code() {
        Some(C::DiskFull) => Error::Full(text),
        Some(C::DatabaseBusy | C::DatabaseLocked) => Error::Unavailable {
            retry: true,
            cause: text,
        },
        Some(C::DatabaseCorrupt | C::NotADatabase) => Error::Corrupt(text),
        Some(C::ReadOnly | C::CannotOpen | C::PermissionDenied) => Error::Unavailable {
            retry: false,
            cause: text,
        },
        _ if matches!(e, rusqlite::Error::ToSqlConversionFailure(_)) => Error::Invalid(text),
        _ => Error::Io(text),
    }
}

fn int(v: u64) -> rusqlite::Result<i64> {
    i64::try_from(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn ensure_repository(tx: &Connection, repo: &str, now: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO repositories (name, created) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?
    .execute(params![repo, now])?;
    Ok(())
}

/// Whether garbage collection is removing the blob (its row is marked).
fn sweeping(tx: &Connection, digest: &Digest) -> rusqlite::Result<bool> {
    exists(
        tx,
        "SELECT 1 FROM blobs WHERE digest = ?1 AND sweeping IS NOT NULL",
        params![digest.as_str()],
    )
}

/// Records the blob (first size and time win, the reference time moves) and links it to
/// `repo`; `true` if the link was there already. Refused while garbage collection removes
/// the blob.
fn link(
    tx: &Connection,
    repo: &str,
    digest: &Digest,
    size: u64,
    now: i64,
) -> rusqlite::Result<Result<bool, Conflict>> {
    if sweeping(tx, digest)? {
        return Ok(Err(Conflict::BlobSweeping {
            digest: digest.clone(),
        }));
    }
    ensure_repository(tx, repo, now)?;
    // `max` is SQLite's two-argument scalar; PostgreSQL spells it GREATEST.
    tx.prepare_cached(
        "INSERT INTO blobs (digest, size, created, last_referenced) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT (digest) DO UPDATE SET
            last_referenced = max(last_referenced, excluded.last_referenced)",
    )?
    .execute(params![digest.as_str(), int(size)?, now])?;
    let added = tx
        .prepare_cached(
            "INSERT INTO repository_blobs (repository, digest, created) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![repo, digest.as_str(), now])?;
    Ok(Ok(added == 0))
}

/// Removes the manifest, its tags and its references; `true` if it was there.
fn remove_manifest(tx: &Connection, repo: &str, digest: &Digest) -> rusqlite::Result<bool> {
    let key = params![repo, digest.as_str()];
    tx.prepare_cached("DELETE FROM tags WHERE repository = ?1 AND digest = ?2")?
        .execute(key)?;
    tx.prepare_cached("DELETE FROM manifest_references WHERE repository = ?1 AND manifest = ?2")?
        .execute(key)?;
    Ok(tx
        .prepare_cached("DELETE FROM manifests WHERE repository = ?1 AND digest = ?2")?
        .execute(key)?
        > 0)
}

/// `true` if nothing keeps the blob: no manifest has its digest and none references it
/// (subjects aside). The same rule as PostgreSQL's, over the same tables.
fn unreferenced(tx: &Connection, digest: &Digest) -> rusqlite::Result<bool> {
    let d = params![digest.as_str()];
    Ok(
        !exists(tx, "SELECT 1 FROM manifests WHERE digest = ?1 LIMIT 1", d)?
            && !exists(
                tx,
                "SELECT 1 FROM manifest_references
                 WHERE child_digest = ?1 AND kind <> 'subject' LIMIT 1",
                d,
            )?,
    )
}

/// Size of `digest` if `repo` may serve it.
fn linked_size(tx: &Connection, repo: &str, digest: &Digest) -> rusqlite::Result<Option<u64>> {
    tx.prepare_cached(
        "SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
         WHERE rb.repository = ?1 AND rb.digest = ?2",
    )?
    .query_row(params![repo, digest.as_str()], |r| r.get::<_, i64>(0))
    .optional()
    .map(|size| size.map(|s| s as u64))
}

/// The same check as [`Index::check`], in SQL, inside the write's transaction.
fn check_required(tx: &Connection, repo: &str, r: &Required) -> rusqlite::Result<Option<Conflict>> {
    let stored = if r.kind == RefKind::Manifest {
        tx.prepare_cached("SELECT size FROM manifests WHERE repository = ?1 AND digest = ?2")?
            .query_row(params![repo, r.digest.as_str()], |row| row.get::<_, i64>(0))
            .optional()?
            .map(|s| s as u64)
    } else {
        linked_size(tx, repo, &r.digest)?
    };
    Ok(r.judge(stored).err())
}

fn exists(tx: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<bool> {
    tx.prepare_cached(sql)?
        .query_row(p, |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
}

/// The SQL meaning of one op; [`Index::apply`] is the in-memory meaning and the two must agree
/// (the tests load the database back and compare).
pub fn apply_sql(tx: &Connection, op: &WriteOp, now: i64) -> rusqlite::Result<OpResult> {
    let existed = match op {
        WriteOp::LinkBlob { repo, digest, size } => match link(tx, repo, digest, *size, now)? {
            Ok(existed) => existed,
            Err(conflict) => return Ok(Err(conflict)),
        },
        // A blob being swept has no links left, so its mount finds nothing.
        WriteOp::MountBlob { from, repo, digest } => match linked_size(tx, from, digest)? {
            Some(size) => {
                if let Err(conflict) = link(tx, repo, digest, size, now)? {
                    return Ok(Err(conflict));
                }
                true
            }
            None => false,
        },
        WriteOp::UnlinkBlob { repo, digest } => {
            tx.prepare_cached("DELETE FROM repository_blobs WHERE repository = ?1 AND digest = ?2")?
                .execute(params![repo, digest.as_str()])?
                > 0
        }
        WriteOp::PutManifest {
            repo,
            record,
            refs,
            tag,
            fixed_tag,
            requires,
        } => {
            for r in requires {
                if let Some(conflict) = check_required(tx, repo, r)? {
                    return Ok(Err(conflict));
                }
            }
            let digest = record.digest.as_str();
            let existed = exists(
                tx,
                "SELECT 1 FROM manifests WHERE repository = ?1 AND digest = ?2",
                params![repo, digest],
            )?;
            if let Err(conflict) = link(tx, repo, &record.digest, record.size, now)? {
                return Ok(Err(conflict));
            }
            let annotations = record
                .annotations
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            // `created` is not in the update list: a re-put keeps the first time.
            tx.prepare_cached(
                "INSERT INTO manifests (repository, digest, media_type, artifact_type, subject,
                                        size, annotations, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (repository, digest) DO UPDATE SET
                    media_type = excluded.media_type,
                    artifact_type = excluded.artifact_type,
                    subject = excluded.subject,
                    size = excluded.size,
                    annotations = excluded.annotations",
            )?
            .execute(params![
                repo,
                digest,
                record.media_type,
                record.artifact_type,
                record.subject.as_ref().map(Digest::as_str),
                int(record.size)?,
                annotations,
                now
            ])?;
            tx.prepare_cached(
                "DELETE FROM manifest_references WHERE repository = ?1 AND manifest = ?2",
            )?
            .execute(params![repo, digest])?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO manifest_references (repository, manifest, child_digest, kind)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )?;
            let mut touch = tx.prepare_cached(
                "UPDATE blobs SET last_referenced = max(last_referenced, ?2)
                 WHERE digest = ?1 AND sweeping IS NULL",
            )?;
            for (child, kind) in refs {
                insert.execute(params![repo, digest, child.as_str(), kind.as_str()])?;
                if matches!(kind, RefKind::Config | RefKind::Layer) {
                    touch.execute(params![child.as_str(), now])?;
                }
            }
            if let Some(tag) = tag {
                // A fixed tag is updated only where it already names this digest.
                let set = tx
                    .prepare_cached(
                        "INSERT INTO tags (repository, name, digest, updated)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (repository, name) DO UPDATE SET
                            digest = excluded.digest, updated = excluded.updated
                         WHERE NOT ?5 OR tags.digest = excluded.digest",
                    )?
                    .execute(params![repo, tag, digest, now, fixed_tag])?;
                if set == 0 {
                    let held: String = tx
                        .prepare_cached(
                            "SELECT digest FROM tags WHERE repository = ?1 AND name = ?2",
                        )?
                        .query_row(params![repo, tag], |r| r.get(0))?;
                    return Ok(Err(Conflict::TagImmutable {
                        tag: tag.clone(),
                        digest: super::sql::digest_col("tags", &held)
                            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                    }));
                }
            }
            tx.prepare_cached(
                "INSERT INTO push_events (repository, digest, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (repository, digest) DO UPDATE SET at = excluded.at",
            )?
            .execute(params![repo, digest, now])?;
            existed
        }
        WriteOp::DeleteManifest { repo, digest } => remove_manifest(tx, repo, digest)?,
        WriteOp::DeleteTag { repo, tag } => {
            tx.prepare_cached("DELETE FROM tags WHERE repository = ?1 AND name = ?2")?
                .execute(params![repo, tag])?
                > 0
        }
        WriteOp::PutUpload(UploadRecord {
            id,
            repository,
            started,
            expires,
            offset,
            hash_state,
            owner,
            remote,
        }) => {
            let existed = exists(tx, "SELECT 1 FROM uploads WHERE id = ?1", params![id])?;
            tx.prepare_cached(
                "INSERT INTO uploads
                    (id, repository, started, expires, upload_offset, hash_state, owner, remote)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET
                    repository = excluded.repository,
                    started = excluded.started,
                    expires = excluded.expires,
                    upload_offset = excluded.upload_offset,
                    hash_state = excluded.hash_state,
                    owner = excluded.owner,
                    remote = excluded.remote",
            )?
            .execute(params![
                id,
                repository,
                started,
                expires,
                int(*offset)?,
                hash_state,
                owner,
                remote
            ])?;
            existed
        }
        WriteOp::AdvanceUpload {
            record:
                UploadRecord {
                    id,
                    repository,
                    started: _,
                    expires,
                    offset,
                    hash_state,
                    owner: _,
                    remote,
                },
            from,
        } => {
            // One statement decides, so that of two writers that found the same state only
            // the first to commit advances it (`IS`: two absent remote states are equal).
            let updated = tx
                .prepare_cached(
                    "UPDATE uploads SET expires = ?3, upload_offset = ?4, hash_state = ?5,
                        remote = ?6
                     WHERE id = ?1 AND repository = ?2 AND upload_offset = ?7 AND remote IS ?8",
                )?
                .execute(params![
                    id,
                    repository,
                    expires,
                    int(*offset)?,
                    hash_state,
                    remote,
                    int(from.offset)?,
                    from.remote
                ])?;
            if updated == 0 {
                let now: Option<i64> = tx
                    .prepare_cached(
                        "SELECT upload_offset FROM uploads WHERE id = ?1 AND repository = ?2",
                    )?
                    .query_row(params![id, repository], |r| r.get(0))
                    .optional()?;
                return Ok(Err(match now {
                    Some(at) => Conflict::UploadMoved {
                        offset: u64::try_from(at).unwrap_or(0),
                    },
                    None => Conflict::UploadGone,
                }));
            }
            true
        }
        WriteOp::DeleteUpload { id } => {
            tx.prepare_cached("DELETE FROM uploads WHERE id = ?1")?
                .execute(params![id])?
                > 0
        }
        WriteOp::CreateRobotToken(t) => {
            let revoked: Option<Option<i64>> = tx
                .prepare_cached("SELECT revoked FROM robot_tokens WHERE name = ?1")?
                .query_row(params![t.name], |r| r.get(0))
                .optional()?;
            if let Some(None) = revoked {
                return Ok(Err(Conflict::RobotTokenExists {
                    name: t.name.clone(),
                }));
            }
            tx.prepare_cached(
                "INSERT INTO robot_tokens
                    (name, secret_hash, scopes, created, expires, revoked, last_used)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (name) DO UPDATE SET
                    secret_hash = excluded.secret_hash, scopes = excluded.scopes,
                    created = excluded.created, expires = excluded.expires,
                    revoked = excluded.revoked, last_used = excluded.last_used",
            )?
            .execute(params![
                t.name,
                &t.secret_hash[..],
                t.scopes.join("\n"),
                t.created,
                t.expires,
                t.revoked,
                t.last_used
            ])?;
            revoked.is_some()
        }
        WriteOp::RevokeRobotToken { name } => {
            tx.prepare_cached(
                "UPDATE robot_tokens SET revoked = ?2 WHERE name = ?1 AND revoked IS NULL",
            )?
            .execute(params![name, now])?
                > 0
        }
        WriteOp::RobotTokenUsed { name, at } => {
            tx.prepare_cached(
                "UPDATE robot_tokens SET last_used = max(coalesce(last_used, ?2), ?2)
                 WHERE name = ?1",
            )?
            .execute(params![name, at])?
                > 0
        }
        WriteOp::ClaimBlob { digest } => {
            if sweeping(tx, digest)? {
                return Ok(Err(Conflict::BlobSweeping {
                    digest: digest.clone(),
                }));
            }
            let recorded = tx
                .prepare_cached(
                    "UPDATE blobs SET last_referenced = max(last_referenced, ?2)
                     WHERE digest = ?1",
                )?
                .execute(params![digest.as_str(), now])?
                > 0;
            if !recorded {
                tx.prepare_cached(
                    "INSERT INTO blob_claims (digest, at) VALUES (?1, ?2)
                     ON CONFLICT (digest) DO UPDATE SET at = excluded.at",
                )?
                .execute(params![digest.as_str(), now])?;
            }
            recorded
        }
        WriteOp::TombstoneOrphan {
            digest,
            size,
            cutoff,
        } => {
            let d = digest.as_str();
            if exists(tx, "SELECT 1 FROM blobs WHERE digest = ?1", params![d])?
                || exists(
                    tx,
                    "SELECT 1 FROM blob_claims WHERE digest = ?1 AND at >= ?2",
                    params![d, cutoff],
                )?
            {
                return Ok(Err(Conflict::Live));
            }
            tx.prepare_cached(
                "INSERT INTO blobs (digest, size, created, last_referenced, sweeping)
                 VALUES (?1, ?2, ?3, 0, ?3)",
            )?
            .execute(params![d, int(*size)?, now])?;
            true
        }
        WriteOp::ExpireTag {
            repo,
            tag,
            digest,
            updated,
        } => {
            let removed = tx
                .prepare_cached(
                    "DELETE FROM tags
                     WHERE repository = ?1 AND name = ?2 AND digest = ?3 AND updated = ?4",
                )?
                .execute(params![repo, tag, digest.as_str(), updated])?
                > 0;
            if !removed
                && exists(
                    tx,
                    "SELECT 1 FROM tags WHERE repository = ?1 AND name = ?2",
                    params![repo, tag],
                )?
            {
                return Ok(Err(Conflict::Live));
            }
            removed
        }
        WriteOp::ForgetClaims { before } => {
            tx.prepare_cached("DELETE FROM blob_claims WHERE at < ?1")?
                .execute(params![before])?;
            false
        }
        WriteOp::ForgetPushEvents(events) => {
            let mut delete = tx.prepare_cached(
                "DELETE FROM push_events WHERE repository = ?1 AND digest = ?2 AND at = ?3",
            )?;
            let mut any = false;
            for e in events {
                any |= delete.execute(params![e.repo, e.digest.as_str(), e.at])? > 0;
            }
            any
        }
        WriteOp::RecordBlobUse(uses) => {
            let mut update = tx.prepare_cached(
                "UPDATE blobs SET last_referenced = max(last_referenced, ?2)
                 WHERE digest = ?1 AND sweeping IS NULL",
            )?;
            for (digest, at) in uses {
                update.execute(params![digest.as_str(), at])?;
            }
            false
        }
        WriteOp::CollectManifest {
            repo,
            digest,
            cutoff,
        } => {
            let key = params![repo, digest.as_str()];
            let subject: Option<Option<String>> = tx
                .prepare_cached(
                    "SELECT subject FROM manifests WHERE repository = ?1 AND digest = ?2",
                )?
                .query_row(key, |r| r.get(0))
                .optional()?;
            let Some(subject) = subject else {
                return Ok(Ok(WriteOutcome { existed: false }));
            };
            let kept = exists(
                tx,
                "SELECT 1 FROM tags WHERE repository = ?1 AND digest = ?2",
                key,
            )? || exists(
                tx,
                "SELECT 1 FROM manifest_references
                 WHERE repository = ?1 AND child_digest = ?2 AND kind = 'manifest'",
                key,
            )? || exists(
                tx,
                "SELECT 1 FROM blobs WHERE digest = ?1 AND last_referenced >= ?2",
                params![digest.as_str(), cutoff],
            )? || match &subject {
                Some(s) => exists(
                    tx,
                    "SELECT 1 FROM manifests WHERE repository = ?1 AND digest = ?2",
                    params![repo, s],
                )?,
                None => false,
            };
            if kept {
                return Ok(Err(Conflict::Live));
            }
            remove_manifest(tx, repo, digest)?
        }
        WriteOp::TombstoneBlob { digest, cutoff } => {
            let idle = exists(
                tx,
                "SELECT 1 FROM blobs
                 WHERE digest = ?1 AND sweeping IS NULL AND last_referenced < ?2",
                params![digest.as_str(), cutoff],
            )?;
            if !idle || !unreferenced(tx, digest)? {
                return Ok(Err(Conflict::Live));
            }
            tx.prepare_cached("DELETE FROM repository_blobs WHERE digest = ?1")?
                .execute(params![digest.as_str()])?;
            tx.prepare_cached("UPDATE blobs SET sweeping = ?2 WHERE digest = ?1")?
                .execute(params![digest.as_str(), now])?;
            true
        }
        WriteOp::ForgetBlob { digest } => {
            tx.prepare_cached("DELETE FROM blobs WHERE digest = ?1 AND sweeping IS NOT NULL")?
                .execute(params![digest.as_str()])?
                > 0
        }
        WriteOp::RecordPulls(pulls) => {
            let mut update = tx.prepare_cached(
                "UPDATE manifests SET last_pulled = max(coalesce(last_pulled, ?3), ?3)
                 WHERE repository = ?1 AND digest = ?2",
            )?;
            for Pull { repo, digest, at } in pulls {
                update.execute(params![repo, digest.as_str(), at])?;
            }
            false
        }
    };
    Ok(Ok(WriteOutcome { existed }))
}

/// Runs `sql` and hands each row, read as `T`, to `each`.
fn for_rows<T, P: rusqlite::Params>(
    conn: &Connection,
    table: &str,
    sql: &str,
    params: P,
    read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    mut each: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    let failed = |e| sql_error(&format!("reading {table}"), e);
    let mut stmt = conn.prepare(sql).map_err(failed)?;
    let rows = stmt.query_map(params, read).map_err(failed)?;
    for row in rows {
        each(row.map_err(|e| load_error(table, e))?)?;
    }
    Ok(())
}

fn data_version(conn: &Connection) -> Result<i64> {
    conn.pragma_query_value(None, "data_version", |r| r.get(0))
        .map_err(|e| sql_error("reading data_version", e))
}

fn read_robot_tokens(conn: &Connection) -> Result<Vec<RobotToken>> {
    let mut out = Vec::new();
    for_rows(
        conn,
        "robot_tokens",
        "SELECT name, secret_hash, scopes, created, expires, revoked, last_used
         FROM robot_tokens ORDER BY name",
        [],
        // the hash is checked in `each`, where a wrong one can name its token
        |r| {
            let token = RobotToken {
                name: r.get(0)?,
                secret_hash: [0; 32],
                scopes: r.get::<_, String>(2)?.lines().map(str::to_string).collect(),
                created: r.get(3)?,
                expires: r.get(4)?,
                revoked: r.get(5)?,
                last_used: r.get(6)?,
            };
            Ok((token, r.get::<_, Vec<u8>>(1)?))
        },
        |(mut token, hash)| {
            token.secret_hash = hash.try_into().map_err(|_| {
                let name = &token.name;
                load_error(
                    "robot_tokens",
                    format_args!("{name:?}: a hash of another size"),
                )
            })?;
            out.push(token);
            Ok(())
        },
    )?;
    Ok(out)
}

impl Database for SqliteEngine {
    fn load(&mut self) -> Result<Index> {
        let conn = &self.conn;
        let mut ix = Index::default();
        for_rows(
            conn,
            "repositories",
            "SELECT name FROM repositories",
            [],
            |r| r.get::<_, String>(0),
            |name| {
                ix.load_repository(&name);
                Ok(())
            },
        )?;
        for_rows(
            conn,
            "blobs",
            "SELECT digest, size, last_referenced, sweeping IS NOT NULL FROM blobs",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get(2)?,
                    r.get::<_, bool>(3)?,
                ))
            },
            |(d, size, referenced, sweeping)| {
                let digest = digest_col("blobs", &d)?;
                let size = size_col("blobs", size)?;
                match sweeping {
                    true => ix.load_sweeping(digest, size, referenced),
                    false => ix.load_blob(digest, size, referenced),
                }
                Ok(())
            },
        )?;
        for_rows(
            conn,
            "blob_claims",
            "SELECT digest, at FROM blob_claims",
            [],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            |(d, at)| {
                ix.load_claim(digest_col("blob_claims", &d)?, at);
                Ok(())
            },
        )?;
        for_rows(
            conn,
            "push_events",
            "SELECT repository, digest, at FROM push_events",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
            |(repo, d, at)| {
                ix.load_push_event(&repo, digest_col("push_events", &d)?, at);
                Ok(())
            },
        )?;
        for_rows(
            conn,
            "repository_blobs",
            "SELECT repository, digest FROM repository_blobs",
            [],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            |(repo, d)| {
                ix.load_link(&repo, digest_col("repository_blobs", &d)?);
                Ok(())
            },
        )?;
        type ManifestRow = (
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            i64,
            Option<String>,
            i64,
            Option<i64>,
        );
        for_rows(
            conn,
            "manifests",
            "SELECT repository, digest, media_type, artifact_type, subject, size, annotations,
                    created, last_pulled
             FROM manifests",
            [],
            |r| -> rusqlite::Result<ManifestRow> {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            },
            |(repo, d, media_type, artifact_type, subject, size, annotations, created, pulled)| {
                let annotations = annotations
                    .map(|text| serde_json::from_str(&text))
                    .transpose()
                    .map_err(|e| load_error("manifests.annotations", e))?;
                let record = ManifestRecord {
                    digest: digest_col("manifests", &d)?,
                    media_type,
                    size: size_col("manifests", size)?,
                    artifact_type,
                    subject: subject.map(|s| digest_col("manifests", &s)).transpose()?,
                    annotations,
                    created,
                };
                if let Some(at) = pulled {
                    ix.load_pull(&repo, record.digest.clone(), at);
                }
                ix.load_manifest(&repo, record);
                Ok(())
            },
        )?;
        // Only what the index keeps; config and layer references stay for garbage collection.
        for_rows(
            conn,
            "manifest_references",
            "SELECT repository, manifest, child_digest FROM manifest_references
             WHERE kind = ?1",
            [RefKind::Manifest.as_str()],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            },
            |(repo, m, child)| {
                let table = "manifest_references";
                ix.load_reference(
                    &repo,
                    &digest_col(table, &m)?,
                    &digest_col(table, &child)?,
                    RefKind::Manifest,
                );
                Ok(())
            },
        )?;
        for_rows(
            conn,
            "tags",
            "SELECT repository, name, digest, updated FROM tags",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
            |(repo, name, d, updated)| {
                ix.load_tag(&repo, name, digest_col("tags", &d)?, updated);
                Ok(())
            },
        )?;
        for_rows(
            conn,
            "uploads",
            "SELECT id, repository, started, expires, upload_offset, hash_state, owner, remote
             FROM uploads",
            [],
            |r| {
                Ok(UploadRecord {
                    id: r.get(0)?,
                    repository: r.get(1)?,
                    started: r.get(2)?,
                    expires: r.get(3)?,
                    offset: r.get(4)?,
                    hash_state: r.get(5)?,
                    owner: r.get(6)?,
                    remote: r.get(7)?,
                })
            },
            |record| {
                ix.load_upload(record);
                Ok(())
            },
        )?;
        for token in read_robot_tokens(conn)? {
            ix.load_robot_token(token);
        }
        self.data_version = Some(data_version(conn)?);
        Ok(ix)
    }

    /// One pragma read when nothing changed (measured in `robot_token_refresh_cost`); the
    /// whole table, which holds a few tokens per CI fleet, when another process committed.
    fn robot_tokens_changed(&mut self) -> Result<Option<Vec<RobotToken>>> {
        let version = data_version(&self.conn)?;
        if self.data_version == Some(version) {
            return Ok(None);
        }
        let tokens = read_robot_tokens(&self.conn)?;
        self.data_version = Some(version);
        Ok(Some(tokens))
    }

    /// One `BEGIN IMMEDIATE` transaction for the whole batch: taking the write lock up front
    /// means a busy database fails (or waits) at the start, not halfway through. Each op runs
    /// in a savepoint, so an op refused by its checks is undone alone. Dropping the
    /// transaction on any error rolls it back.
    fn apply_batch(&mut self, ops: &[WriteOp], now: i64) -> Result<Vec<OpResult>> {
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_error("metadata begin", e))?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let failed = |e| sql_error(&format!("metadata write ({})", describe(op)), e);
            let sp = tx.savepoint().map_err(failed)?;
            let result = apply_sql(&sp, op, now).map_err(failed)?;
            if result.is_ok() {
                sp.commit().map_err(failed)?;
            } else {
                // Dropping the savepoint rolls it back.
                drop(sp);
            }
            results.push(result);
        }
        tx.commit().map_err(|e| sql_error("metadata commit", e))?;
        Ok(results)
    }

    fn blob_references(&mut self) -> Result<Vec<RefRow>> {
        let mut out = Vec::new();
        for_rows(
            &self.conn,
            "manifest_references",
            "SELECT repository, manifest, child_digest, kind FROM manifest_references
             WHERE kind IN ('config', 'layer')",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
            |(repo, manifest, child, kind)| {
                out.push(RefRow {
                    repo,
                    manifest: digest_col("manifest_references", &manifest)?,
                    child: digest_col("manifest_references", &child)?,
                    kind: RefKind::parse(&kind).ok_or_else(|| {
                        Error::Corrupt(format!("manifest_references: kind {kind:?}"))
                    })?,
                });
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// A read through the connection: proves the database file is open and readable. Needs
    /// no lock a writer holds (WAL), so it answers even while another process writes.
    fn ping(&mut self) -> Result<()> {
        self.conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|_| ())
            .map_err(|e| sql_error("metadata ping", e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::index::tests::{dg, record};
    use super::super::suite::TempDir;
    use super::*;

    fn open(dir: &TempDir) -> SqliteEngine {
        SqliteEngine::open(&dir.0.join("meta.db")).unwrap()
    }

    fn count(e: &SqliteEngine, sql: &str) -> i64 {
        e.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn pragma(e: &SqliteEngine, name: &str) -> String {
        e.conn
            .pragma_query_value(None, name, |r| {
                Ok(match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                    other => format!("{:?}", other.as_i64()?),
                })
            })
            .unwrap()
    }

    #[test]
    fn schema_and_pragmas() {
        let dir = TempDir::new("schema");
        let e = open(&dir);
        assert_eq!(pragma(&e, "journal_mode"), "wal");
        assert_eq!(pragma(&e, "synchronous"), "2"); // FULL
        assert_eq!(pragma(&e, "foreign_keys"), "1");
        assert_eq!(pragma(&e, "user_version"), SCHEMA_VERSION.to_string());
        let tables = count(
            &e,
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN
             ('repositories', 'blobs', 'repository_blobs', 'manifests', 'manifest_references',
              'tags', 'uploads', 'robot_tokens')",
        );
        assert_eq!(tables, 8);
        drop(e);
        // Opening again is a no-op on an up-to-date schema.
        let e = open(&dir);
        assert_eq!(pragma(&e, "user_version"), SCHEMA_VERSION.to_string());
    }

    /// A database written by the v1 binary (its tables as v1 made them, a blob and a session
    /// in them) opens, moves to v2 and keeps its rows: the session with no offset or hash
    /// state known, the blob referenced as of its creation.
    #[test]
    fn migrates_v1_and_keeps_its_rows() {
        let dir = TempDir::new("v1");
        let path = dir.0.join("meta.db");
        let v1 = Connection::open(&path).unwrap();
        v1.execute_batch(
            "CREATE TABLE uploads (
                id         TEXT PRIMARY KEY NOT NULL,
                repository TEXT NOT NULL,
                started    INTEGER NOT NULL,
                expires    INTEGER NOT NULL
            ) WITHOUT ROWID;
            CREATE TABLE blobs (digest TEXT PRIMARY KEY NOT NULL, size INTEGER NOT NULL,
                                created INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE repositories (name TEXT PRIMARY KEY NOT NULL,
                                       created INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE manifests (repository TEXT NOT NULL, digest TEXT NOT NULL,
                media_type TEXT NOT NULL, artifact_type TEXT, subject TEXT,
                size INTEGER NOT NULL, annotations TEXT, created INTEGER NOT NULL,
                PRIMARY KEY (repository, digest)) WITHOUT ROWID;
            INSERT INTO uploads VALUES ('u1', 'lib/app', 5, 6);
            PRAGMA user_version = 1;",
        )
        .unwrap();
        v1.execute(
            "INSERT INTO blobs (digest, size, created) VALUES (?1, 5, 77)",
            [dg("old").as_str()],
        )
        .unwrap();
        drop(v1);
        let mut e = open(&dir);
        assert_eq!(pragma(&e, "user_version"), SCHEMA_VERSION.to_string());
        assert_eq!(
            e.load().unwrap().blob(&dg("old")),
            Some(super::super::BlobInfo {
                size: 5,
                last_referenced: 77
            })
        );
        let old = UploadRecord {
            id: "u1".into(),
            repository: "lib/app".into(),
            started: 5,
            expires: 6,
            offset: 0,
            hash_state: None,
            owner: None,
            remote: None,
        };
        assert_eq!(e.load().unwrap().uploads(), vec![old.clone()]);
        let moved = UploadRecord {
            offset: 77,
            hash_state: Some(vec![1, 1, 2]),
            owner: Some("alice".into()),
            remote: Some("{}".into()),
            ..old
        };
        e.apply_batch(&[WriteOp::PutUpload(moved.clone())], 7)
            .unwrap();
        drop(e);
        let mut e = open(&dir);
        assert_eq!(e.load().unwrap().uploads(), vec![moved]);
    }

    /// A v2 or v3 database gains the owner column (its sessions anonymous), and one that has
    /// it already (the column came with another step) opens as well; a v4 one gains the
    /// remote state column (its sessions without one).
    #[test]
    fn adds_the_upload_owner_and_remote_once() {
        for (version, drop_owner) in [(2, true), (3, true), (3, false), (4, false)] {
            let dir = TempDir::new("owner");
            drop(open(&dir));
            let old = Connection::open(dir.0.join("meta.db")).unwrap();
            if drop_owner {
                old.execute_batch("ALTER TABLE uploads DROP COLUMN owner")
                    .unwrap();
            }
            old.execute_batch("ALTER TABLE uploads DROP COLUMN remote")
                .unwrap();
            old.execute_batch(&format!(
                "INSERT INTO uploads (id, repository, started, expires) VALUES ('u', 'r', 1, 2);
                 PRAGMA user_version = {version};"
            ))
            .unwrap();
            drop(old);
            let mut e = open(&dir);
            assert_eq!(pragma(&e, "user_version"), SCHEMA_VERSION.to_string());
            let rows = e.load().unwrap().uploads();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].owner, None, "v{version}: anonymous");
            assert_eq!(rows[0].remote, None, "v{version}: no remote state");
            let owned = UploadRecord {
                owner: Some("bob".into()),
                remote: Some("{}".into()),
                ..rows[0].clone()
            };
            e.apply_batch(&[WriteOp::PutUpload(owned.clone())], 3)
                .unwrap();
            drop(e);
            assert_eq!(open(&dir).load().unwrap().uploads(), vec![owned]);
        }
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = TempDir::new("newer");
        let e = open(&dir);
        e.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(e);
        let err = SqliteEngine::open(&dir.0.join("meta.db"))
            .err()
            .expect("newer schema must be refused");
        assert!(err.contains("99"), "{err}");
    }

    #[test]
    fn rows_match_the_model() {
        let dir = TempDir::new("rows");
        let mut e = open(&dir);
        let mut rec = record("m", Some("s"));
        let mut ann = serde_json::Map::new();
        ann.insert("k".into(), "v".into());
        rec.annotations = Some(ann.clone());
        let ops = vec![
            WriteOp::LinkBlob {
                repo: "r".into(),
                digest: dg("layer"),
                size: 42,
            },
            WriteOp::PutManifest {
                repo: "r".into(),
                record: rec.clone(),
                refs: vec![
                    (dg("config"), RefKind::Config),
                    (dg("layer"), RefKind::Layer),
                    (dg("layer"), RefKind::Layer),
                    (dg("child"), RefKind::Manifest),
                    (dg("s"), RefKind::Subject),
                ],
                tag: Some("t".into()),
                fixed_tag: false,
                requires: vec![],
            },
        ];
        e.apply_batch(&ops, 1234).unwrap();
        assert_eq!(count(&e, "SELECT count(*) FROM manifest_references"), 4);
        assert_eq!(
            count(
                &e,
                "SELECT count(*) FROM manifest_references WHERE kind = 'subject'"
            ),
            1
        );
        assert_eq!(count(&e, "SELECT created FROM manifests"), 1234);
        assert_eq!(count(&e, "SELECT updated FROM tags"), 1234);
        assert_eq!(count(&e, "SELECT count(*) FROM repository_blobs"), 2);
        let stored: String = e
            .conn
            .query_row("SELECT annotations FROM manifests", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&stored).unwrap()["k"],
            "v"
        );

        // Re-put later: created kept, tag time moves, references replaced.
        let reput = WriteOp::PutManifest {
            repo: "r".into(),
            record: rec.clone(),
            refs: vec![(dg("config"), RefKind::Config)],
            tag: Some("t".into()),
            fixed_tag: false,
            requires: vec![],
        };
        e.apply_batch(std::slice::from_ref(&reput), 5000).unwrap();
        assert_eq!(count(&e, "SELECT created FROM manifests"), 1234);
        assert_eq!(count(&e, "SELECT updated FROM tags"), 5000);
        assert_eq!(count(&e, "SELECT count(*) FROM manifest_references"), 1);

        let del = WriteOp::DeleteManifest {
            repo: "r".into(),
            digest: dg("m"),
        };
        e.apply_batch(&[del], 6000).unwrap();
        for table in ["manifests", "manifest_references", "tags"] {
            assert_eq!(
                count(&e, &format!("SELECT count(*) FROM {table}")),
                0,
                "{table}"
            );
        }
        // Links and blob rows are garbage collection's to remove.
        assert_eq!(count(&e, "SELECT count(*) FROM repository_blobs"), 2);
        assert_eq!(count(&e, "SELECT count(*) FROM blobs"), 2);
    }

    #[test]
    fn a_failed_batch_leaves_nothing() {
        let dir = TempDir::new("rollback");
        let mut e = open(&dir);
        let ops = vec![
            WriteOp::LinkBlob {
                repo: "r".into(),
                digest: dg("ok"),
                size: 1,
            },
            WriteOp::LinkBlob {
                repo: "r".into(),
                digest: dg("huge"),
                size: u64::MAX,
            },
        ];
        assert!(e.apply_batch(&ops, 1).is_err());
        assert_eq!(e.load().unwrap(), Index::default());
        assert_eq!(count(&e, "SELECT count(*) FROM repositories"), 0);
        // The engine is usable afterwards.
        e.apply_batch(&ops[..1], 2).unwrap();
        assert_eq!(e.load().unwrap().blob_size(&dg("ok")), Some(1));
    }

    #[test]
    fn load_equals_applying_the_same_ops() {
        let dir = TempDir::new("equiv");
        let mut e = open(&dir);
        let mut ix = Index::default();
        let upload = |id: &str, offset: u64| UploadRecord {
            id: id.into(),
            repository: "up".into(),
            started: 3,
            expires: 4,
            offset,
            hash_state: (offset > 0).then(|| vec![1, 1, offset as u8, 0]),
            owner: (offset > 0).then(|| "alice".into()),
            remote: (offset > 0).then(|| format!("{{\"parts_end\":{offset}}}")),
        };
        let batches: Vec<Vec<WriteOp>> = vec![
            vec![
                WriteOp::LinkBlob {
                    repo: "a".into(),
                    digest: dg("l"),
                    size: 9,
                },
                WriteOp::PutManifest {
                    repo: "a".into(),
                    record: record("m1", None),
                    refs: vec![(dg("l"), RefKind::Layer)],
                    tag: Some("one".into()),
                    fixed_tag: false,
                    requires: vec![],
                },
                WriteOp::PutManifest {
                    repo: "a".into(),
                    record: record("idx", Some("m1")),
                    refs: vec![(dg("m1"), RefKind::Manifest), (dg("m2"), RefKind::Manifest)],
                    tag: Some("one".into()),
                    fixed_tag: false,
                    requires: vec![],
                },
                WriteOp::PutUpload(upload("u1", 0)),
                WriteOp::PutUpload(upload("u2", 0)),
            ],
            vec![
                WriteOp::UnlinkBlob {
                    repo: "a".into(),
                    digest: dg("l"),
                },
                WriteOp::DeleteUpload { id: "u1".into() },
                WriteOp::PutUpload(upload("u2", 3 << 40)),
                WriteOp::PutManifest {
                    repo: "b".into(),
                    record: record("m1", None),
                    refs: vec![],
                    tag: Some("x".into()),
                    fixed_tag: false,
                    requires: vec![],
                },
                WriteOp::DeleteTag {
                    repo: "b".into(),
                    tag: "x".into(),
                },
            ],
            vec![WriteOp::DeleteManifest {
                repo: "a".into(),
                digest: dg("m1"),
            }],
        ];
        for (i, batch) in batches.iter().enumerate() {
            let now = 100 * (i as i64 + 1);
            e.apply_batch(batch, now).unwrap();
            for op in batch {
                ix.apply(op, now);
            }
            assert_eq!(e.load().unwrap(), ix, "after batch {i}");
        }
        assert_eq!(ix.manifest_parents("a", &dg("m2")), vec![dg("idx")]);
        assert_eq!(ix.referrers("a", &dg("m1")).len(), 1);
    }

    /// One op refused by its in-transaction check rolls back alone; the batch commits the rest.
    #[test]
    fn a_refused_op_leaves_its_batch_to_commit() {
        let dir = TempDir::new("refused");
        let mut e = open(&dir);
        let link = |label: &str| WriteOp::LinkBlob {
            repo: "r".into(),
            digest: dg(label),
            size: 1,
        };
        let refused = WriteOp::PutManifest {
            repo: "r".into(),
            record: record("m", None),
            refs: vec![(dg("missing"), RefKind::Layer)],
            tag: Some("t".into()),
            fixed_tag: false,
            requires: vec![Required {
                digest: dg("missing"),
                size: 1,
                kind: RefKind::Layer,
            }],
        };
        let results = e.apply_batch(&[link("a"), refused, link("b")], 1).unwrap();
        assert!(results[0].is_ok() && results[2].is_ok());
        assert!(matches!(results[1], Err(Conflict::Missing { .. })));
        assert_eq!(count(&e, "SELECT count(*) FROM manifests"), 0);
        assert_eq!(count(&e, "SELECT count(*) FROM tags"), 0);
        assert_eq!(count(&e, "SELECT count(*) FROM repository_blobs"), 2);
    }

    #[test]
    fn a_corrupt_row_is_reported_by_table() {
        let dir = TempDir::new("corrupt");
        let mut e = open(&dir);
        e.conn
            .execute(
                "INSERT INTO blobs (digest, size, created, last_referenced)
                 VALUES ('sha256:nope', 1, 1, 1)",
                [],
            )
            .unwrap();
        let err = e.load().unwrap_err().to_string();
        assert!(err.contains("blobs"), "{err}");
        assert!(err.contains("sha256:nope"), "{err}");
    }
}
