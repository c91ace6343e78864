//! The embedded engine: one SQLite file in WAL mode, written only by the engine thread.
//!
//! `synchronous=FULL` because a reply means durable: in WAL mode `NORMAL` may lose the last
//! commits on power loss, and the registry would then have acknowledged a push it forgot.
//! Foreign keys are on so that a bug that would orphan a tag or a link fails its write instead of
//! silently corrupting what garbage collection later reasons about.
//!
//! The SQL sticks to what PostgreSQL also accepts (`ON CONFLICT`, partial indexes, no
//! `INSERT OR ...`), so the PostgreSQL engine can share the statements' meaning, if not the text.

use super::{Engine, Index, ManifestRecord, RefKind, UploadRecord, WriteOp};
use crate::error::{Error, ErrorCode, Result};
use crate::oci::digest::Digest;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

/// Stored in `PRAGMA user_version`. Bump it with a migration step in [`migrate`] whenever the
/// schema changes shape.
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS repositories (
    name    TEXT PRIMARY KEY NOT NULL,
    created INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS blobs (
    digest  TEXT PRIMARY KEY NOT NULL,
    size    INTEGER NOT NULL,
    created INTEGER NOT NULL
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
    PRIMARY KEY (repository, digest)
) WITHOUT ROWID;
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
    hash_state    BLOB
) WITHOUT ROWID;
-- Expiry sweep.
CREATE INDEX IF NOT EXISTS uploads_expires ON uploads (expires);
CREATE INDEX IF NOT EXISTS uploads_repository ON uploads (repository);
";

pub struct SqliteEngine {
    conn: Connection,
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
        Ok(SqliteEngine { conn })
    }
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

/// v1 to v2: upload sessions record their acknowledged offset and hash state. Rows of v1
/// get offset 0 and no state, which restore reads as "unknown: take the file as it is".
const V1_TO_V2: &str = "
ALTER TABLE uploads ADD COLUMN upload_offset INTEGER NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN hash_state BLOB;
";

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

fn int(v: u64) -> rusqlite::Result<i64> {
    i64::try_from(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn ensure_repository(tx: &Transaction<'_>, repo: &str, now: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO repositories (name, created) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?
    .execute(params![repo, now])?;
    Ok(())
}

/// Records the blob (first size and time win) and links it to `repo`.
fn link(
    tx: &Transaction<'_>,
    repo: &str,
    digest: &Digest,
    size: u64,
    now: i64,
) -> rusqlite::Result<()> {
    ensure_repository(tx, repo, now)?;
    tx.prepare_cached(
        "INSERT INTO blobs (digest, size, created) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    )?
    .execute(params![digest.as_str(), int(size)?, now])?;
    tx.prepare_cached(
        "INSERT INTO repository_blobs (repository, digest, created) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
    )?
    .execute(params![repo, digest.as_str(), now])?;
    Ok(())
}

/// The SQL meaning of one op; [`Index::apply`] is the in-memory meaning and the two must agree
/// (the tests load the database back and compare).
pub fn apply_sql(tx: &Transaction<'_>, op: &WriteOp, now: i64) -> rusqlite::Result<()> {
    match op {
        WriteOp::LinkBlob { repo, digest, size } => link(tx, repo, digest, *size, now)?,
        WriteOp::UnlinkBlob { repo, digest } => {
            tx.prepare_cached(
                "DELETE FROM repository_blobs WHERE repository = ?1 AND digest = ?2",
            )?
            .execute(params![repo, digest.as_str()])?;
        }
        WriteOp::PutManifest {
            repo,
            record,
            refs,
            tag,
        } => {
            let digest = record.digest.as_str();
            link(tx, repo, &record.digest, record.size, now)?;
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
            for (child, kind) in refs {
                insert.execute(params![repo, digest, child.as_str(), kind.as_str()])?;
            }
            if let Some(tag) = tag {
                tx.prepare_cached(
                    "INSERT INTO tags (repository, name, digest, updated) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (repository, name) DO UPDATE SET
                        digest = excluded.digest, updated = excluded.updated",
                )?
                .execute(params![repo, tag, digest, now])?;
            }
        }
        WriteOp::DeleteManifest { repo, digest } => {
            let key = params![repo, digest.as_str()];
            tx.prepare_cached("DELETE FROM tags WHERE repository = ?1 AND digest = ?2")?
                .execute(key)?;
            tx.prepare_cached(
                "DELETE FROM manifest_references WHERE repository = ?1 AND manifest = ?2",
            )?
            .execute(key)?;
            tx.prepare_cached("DELETE FROM manifests WHERE repository = ?1 AND digest = ?2")?
                .execute(key)?;
        }
        WriteOp::DeleteTag { repo, tag } => {
            tx.prepare_cached("DELETE FROM tags WHERE repository = ?1 AND name = ?2")?
                .execute(params![repo, tag])?;
        }
        WriteOp::PutUpload(UploadRecord {
            id,
            repository,
            started,
            expires,
            offset,
            hash_state,
        }) => {
            tx.prepare_cached(
                "INSERT INTO uploads (id, repository, started, expires, upload_offset, hash_state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET
                    repository = excluded.repository,
                    started = excluded.started,
                    expires = excluded.expires,
                    upload_offset = excluded.upload_offset,
                    hash_state = excluded.hash_state",
            )?
            .execute(params![
                id,
                repository,
                started,
                expires,
                int(*offset)?,
                hash_state
            ])?;
        }
        WriteOp::DeleteUpload { id } => {
            tx.prepare_cached("DELETE FROM uploads WHERE id = ?1")?
                .execute(params![id])?;
        }
    }
    Ok(())
}

/// For the log line of a failed op: the kind and target, not the whole record.
fn describe(op: &WriteOp) -> String {
    match op {
        WriteOp::LinkBlob { repo, digest, .. } => format!("link {repo}@{digest}"),
        WriteOp::UnlinkBlob { repo, digest } => format!("unlink {repo}@{digest}"),
        WriteOp::PutManifest { repo, record, .. } => {
            format!("put manifest {repo}@{}", record.digest)
        }
        WriteOp::DeleteManifest { repo, digest } => format!("delete manifest {repo}@{digest}"),
        WriteOp::DeleteTag { repo, tag } => format!("delete tag {repo}:{tag}"),
        WriteOp::PutUpload(r) => format!("put upload {}", r.id),
        WriteOp::DeleteUpload { id } => format!("delete upload {id}"),
    }
}

/// A load error carries its cause in the message: it is shown to the operator at startup and
/// never reaches a client.
fn load_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::Unknown).with_message(format!("reading {what}: {e}"))
}

fn digest_col(table: &str, text: &str) -> Result<Digest> {
    Digest::parse(text).map_err(|_| load_error(table, format_args!("invalid digest {text:?}")))
}

fn size_col(table: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| load_error(table, format_args!("negative size {v}")))
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
    let mut stmt = conn.prepare(sql).map_err(|e| load_error(table, e))?;
    let rows = stmt
        .query_map(params, read)
        .map_err(|e| load_error(table, e))?;
    for row in rows {
        each(row.map_err(|e| load_error(table, e))?)?;
    }
    Ok(())
}

impl Engine for SqliteEngine {
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
            "SELECT digest, size FROM blobs",
            [],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            |(d, size)| {
                ix.load_blob(digest_col("blobs", &d)?, size_col("blobs", size)?);
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
        );
        for_rows(
            conn,
            "manifests",
            "SELECT repository, digest, media_type, artifact_type, subject, size, annotations,
                    created
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
                ))
            },
            |(repo, d, media_type, artifact_type, subject, size, annotations, created)| {
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
            "SELECT repository, name, digest FROM tags",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            },
            |(repo, name, d)| {
                ix.load_tag(&repo, name, digest_col("tags", &d)?);
                Ok(())
            },
        )?;
        for_rows(
            conn,
            "uploads",
            "SELECT id, repository, started, expires, upload_offset, hash_state FROM uploads",
            [],
            |r| {
                Ok(UploadRecord {
                    id: r.get(0)?,
                    repository: r.get(1)?,
                    started: r.get(2)?,
                    expires: r.get(3)?,
                    offset: r.get(4)?,
                    hash_state: r.get(5)?,
                })
            },
            |record| {
                ix.load_upload(record);
                Ok(())
            },
        )?;
        Ok(ix)
    }

    /// One `BEGIN IMMEDIATE` transaction for the whole batch: taking the write lock up front
    /// means a busy database fails (or waits) at the start, not halfway through. Dropping the
    /// transaction on any error rolls it back.
    fn apply_batch(&mut self, ops: &[WriteOp], now: i64) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Error::internal("metadata begin", e))?;
        for op in ops {
            apply_sql(&tx, op, now).map_err(|e| {
                Error::internal("metadata write", format_args!("{}: {e}", describe(op)))
            })?;
        }
        tx.commit()
            .map_err(|e| Error::internal("metadata commit", e))
    }

    /// A read through the connection: proves the database file is open and readable. Needs
    /// no lock a writer holds (WAL), so it answers even while another process writes.
    fn ping(&mut self) -> Result<()> {
        self.conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|_| ())
            .map_err(|e| Error::internal("metadata ping", e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::index::tests::{dg, record};
    use super::super::tests::TempDir;
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
              'tags', 'uploads')",
        );
        assert_eq!(tables, 7);
        drop(e);
        // Opening again is a no-op on an up-to-date schema.
        let e = open(&dir);
        assert_eq!(pragma(&e, "user_version"), SCHEMA_VERSION.to_string());
    }

    /// A database written by the v1 binary (its uploads table, a session in it) opens, moves
    /// to v2 and keeps the session, with no offset or hash state known.
    #[test]
    fn migrates_v1_and_keeps_its_sessions() {
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
            INSERT INTO uploads VALUES ('u1', 'lib/app', 5, 6);
            PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(v1);
        let mut e = open(&dir);
        assert_eq!(pragma(&e, "user_version"), "2");
        let old = UploadRecord {
            id: "u1".into(),
            repository: "lib/app".into(),
            started: 5,
            expires: 6,
            offset: 0,
            hash_state: None,
        };
        assert_eq!(e.load().unwrap().uploads(), vec![old.clone()]);
        let moved = UploadRecord {
            offset: 77,
            hash_state: Some(vec![1, 1, 2]),
            ..old
        };
        e.apply_batch(&[WriteOp::PutUpload(moved.clone())], 7)
            .unwrap();
        drop(e);
        let mut e = open(&dir);
        assert_eq!(e.load().unwrap().uploads(), vec![moved]);
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
                },
                WriteOp::PutManifest {
                    repo: "a".into(),
                    record: record("idx", Some("m1")),
                    refs: vec![(dg("m1"), RefKind::Manifest), (dg("m2"), RefKind::Manifest)],
                    tag: Some("one".into()),
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

    #[test]
    fn a_corrupt_row_is_reported_by_table() {
        let dir = TempDir::new("corrupt");
        let mut e = open(&dir);
        e.conn
            .execute(
                "INSERT INTO blobs (digest, size, created) VALUES ('sha256:nope', 1, 1)",
                [],
            )
            .unwrap();
        let err = e.load().unwrap_err();
        assert!(err.message.contains("blobs"), "{}", err.message);
        assert!(err.message.contains("sha256:nope"), "{}", err.message);
    }
}
