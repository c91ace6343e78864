//! The PostgreSQL engine: the metadata of several nodes in one database, read and written in
//! SQL on a few dedicated engine threads.
//!
//! Each engine thread owns one connection of the sync `postgres` client (whose tokio runtime
//! lives inside that thread) and takes jobs from one crossbeam channel; every trait method
//! queues a job and returns an [`Answer`] its oneshot completes, so an event loop never waits
//! on the database nor sees a runtime. A lost connection fails the job it was running
//! (unavailable, retryable) and the thread connects again for the next one.
//!
//! Every read goes to SQL: the database is the one truth that several nodes share, and a tag
//! pushed on one node must be seen by the next GET on any other, so no node keeps a copy of
//! a mutable row. Point lookups (tags, manifests, blob links) of many callers share one
//! statement per kind ([`batch`]): an engine thread takes every lookup waiting when it wakes,
//! which is what makes this fast under load, not a cache.
//!
//! Writes: one transaction per [`WriteOp`] (no group commit yet), at READ COMMITTED, stamped
//! with the database's clock so that every node orders its times by one clock. The checks a
//! write must pass lock what they read (`FOR SHARE`), so that an unlink or delete committed by
//! another node either happens before the check (and the write is refused) or waits for the
//! write; outcomes come from the statements themselves (`RETURNING`, row counts), never from a
//! read that another node could overtake. The verdicts are [`Required::judge`]'s, the rule
//! every engine shares.
//!
//! The schema is the SQLite engine's (same tables, same meaning), in PostgreSQL's types, with
//! names and digests in the "C" collation so that listings come out in the byte order the
//! other engines use. Versioned migrations run at open under an advisory lock, recorded in
//! `schema_migrations`; a database migrated by a newer binary is refused.

use super::redis_cache::{self, RedisCache};
use super::sql::{describe, digest_col, load_error, size_col};
use super::{
    Answer, BlobInfo, Conflict, Engine, EngineStats, Error, ManifestRecord, Pull, PushEvent,
    RefKind, Required, Result, RobotToken, TagInfo, UploadRecord, WriteOp, WriteOutcome,
};
use crate::oci::digest::Digest;
use postgres::error::SqlState;
use postgres::types::{FromSql, ToSql};
use postgres::{Client, GenericClient, NoTls, Row, Statement};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

mod batch;
use batch::{Lookup, Pending, MAX_BATCH};

/// The migrations, in order; each runs once, in the transaction that records it. Append only:
/// a released step is never edited, a change is a new step.
const MIGRATIONS: &[(i32, &str)] = &[(1, V1), (2, V2), (3, V3), (4, V4)];

/// Version 4: manifest puts not yet consumed by scan on push, written in the put's own
/// transaction (the commit path's outbox).
const V4: &str = r#"
CREATE TABLE push_events (
    repository TEXT COLLATE "C" NOT NULL,
    digest     TEXT COLLATE "C" NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (repository, digest)
);
CREATE INDEX push_events_at ON push_events (at);
"#;

/// Version 3: a blob row is marked (unix ms) while garbage collection removes its bytes.
/// Also the claims of digests a writer is storing that no row records yet, and an index
/// that finds a digest's manifests in any repository (a collection asks it per blob).
const V3: &str = r#"
ALTER TABLE blobs ADD COLUMN sweeping BIGINT;
CREATE INDEX blobs_sweeping ON blobs (digest) WHERE sweeping IS NOT NULL;
CREATE INDEX manifests_digest ON manifests (digest);
CREATE TABLE blob_claims (
    digest TEXT COLLATE "C" PRIMARY KEY,
    at     BIGINT NOT NULL
);
"#;

/// Version 2: an upload session's state in the remote backend (its multipart upload, parts
/// and tail), so that any node continues it; rows from before have none.
const V2: &str = "ALTER TABLE uploads ADD COLUMN remote TEXT;";

/// Version 1: the SQLite engine's schema version 4, in PostgreSQL types.
const V1: &str = r#"
CREATE TABLE repositories (
    name    TEXT COLLATE "C" PRIMARY KEY,
    created BIGINT NOT NULL
);

CREATE TABLE blobs (
    digest          TEXT COLLATE "C" PRIMARY KEY,
    size            BIGINT NOT NULL,
    created         BIGINT NOT NULL,
    last_referenced BIGINT NOT NULL
);

CREATE TABLE repository_blobs (
    repository TEXT COLLATE "C" NOT NULL REFERENCES repositories (name),
    digest     TEXT COLLATE "C" NOT NULL REFERENCES blobs (digest),
    created    BIGINT NOT NULL,
    PRIMARY KEY (repository, digest)
);
CREATE INDEX repository_blobs_digest ON repository_blobs (digest);

CREATE TABLE manifests (
    repository    TEXT COLLATE "C" NOT NULL REFERENCES repositories (name),
    digest        TEXT COLLATE "C" NOT NULL,
    media_type    TEXT NOT NULL,
    artifact_type TEXT,
    subject       TEXT COLLATE "C",
    size          BIGINT NOT NULL,
    -- The JSON text as written, not jsonb: it reads back exactly as it was put.
    annotations   TEXT,
    created       BIGINT NOT NULL,
    last_pulled   BIGINT,
    PRIMARY KEY (repository, digest)
);
CREATE INDEX manifests_subject ON manifests (repository, subject) WHERE subject IS NOT NULL;

CREATE TABLE manifest_references (
    repository   TEXT COLLATE "C" NOT NULL,
    manifest     TEXT COLLATE "C" NOT NULL,
    child_digest TEXT COLLATE "C" NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('config', 'layer', 'manifest', 'subject')),
    PRIMARY KEY (repository, manifest, child_digest, kind),
    FOREIGN KEY (repository, manifest) REFERENCES manifests (repository, digest)
);
CREATE INDEX manifest_references_child ON manifest_references (child_digest, repository);

CREATE TABLE tags (
    repository TEXT COLLATE "C" NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    digest     TEXT COLLATE "C" NOT NULL,
    updated    BIGINT NOT NULL,
    PRIMARY KEY (repository, name),
    FOREIGN KEY (repository, digest) REFERENCES manifests (repository, digest)
);
CREATE INDEX tags_digest ON tags (repository, digest);

-- No foreign key to repositories: a session does not create its repository.
CREATE TABLE uploads (
    id            TEXT COLLATE "C" PRIMARY KEY,
    repository    TEXT COLLATE "C" NOT NULL,
    started       BIGINT NOT NULL,
    expires       BIGINT NOT NULL,
    upload_offset BIGINT NOT NULL DEFAULT 0,
    hash_state    BYTEA,
    owner         TEXT
);
CREATE INDEX uploads_expires ON uploads (expires);
CREATE INDEX uploads_repository ON uploads (repository);

CREATE TABLE robot_tokens (
    name        TEXT COLLATE "C" PRIMARY KEY,
    secret_hash BYTEA NOT NULL CHECK (octet_length(secret_hash) = 32),
    scopes      TEXT NOT NULL,
    created     BIGINT NOT NULL,
    expires     BIGINT,
    revoked     BIGINT,
    last_used   BIGINT
);
"#;

/// Serializes migrations of every ringyard process on the database (any constant both sides
/// agree on; this one spells "ringyard").
const MIGRATION_LOCK: i64 = 0x7269_6e67_7961_7264;

/// The database's clock in Unix milliseconds: one clock for every node.
const NOW: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8";

/// A statement failed, or a value did not fit the database's types.
enum Fail {
    Sql(postgres::Error),
    Value(String),
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Fail {
        Fail::Sql(e)
    }
}

impl Fail {
    /// This layer's reading of a failure, `what` naming the operation ([`classify`]).
    fn into_error(self, what: &str) -> Error {
        let e = match self {
            Fail::Value(text) => return Error::Invalid(format!("{what}: {text}")),
            Fail::Sql(e) => e,
        };
        // The client's own Display says only "db error": the server's message, SQLSTATE and
        // the I/O cause are in the details.
        let text = match (e.as_db_error(), std::error::Error::source(&e)) {
            (Some(db), _) => format!("{what}: {} (SQLSTATE {})", db.message(), db.code().code()),
            (None, Some(cause)) => format!("{what}: {e}: {cause}"),
            (None, None) => format!("{what}: {e}"),
        };
        classify(e.code(), text)
    }
}

/// What a failure with this SQLSTATE (None: the connection itself failed) means to the
/// metadata's callers: worth retrying (a lost connection, a deadlock, a server shutting down
/// or short of memory), an operator's matter (no space, no permission), or corruption.
fn classify(code: Option<&SqlState>, text: String) -> Error {
    let Some(code) = code else {
        return Error::unavailable(text);
    };
    let any = |codes: &[SqlState]| codes.contains(code);
    if any(&[SqlState::DISK_FULL]) {
        Error::Full(text)
    } else if any(&[
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::QUERY_CANCELED,
        SqlState::OUT_OF_MEMORY,
    ]) {
        Error::unavailable(text)
    } else if any(&[SqlState::DATA_CORRUPTED, SqlState::INDEX_CORRUPTED]) {
        Error::Corrupt(text)
    } else if any(&[SqlState::NUMERIC_VALUE_OUT_OF_RANGE]) {
        Error::Invalid(text)
    } else if any(&[
        SqlState::INSUFFICIENT_PRIVILEGE,
        SqlState::INVALID_PASSWORD,
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        SqlState::READ_ONLY_SQL_TRANSACTION,
    ]) {
        Error::Unavailable {
            retry: false,
            cause: text,
        }
    } else {
        Error::Io(text)
    }
}

fn int(v: u64) -> Result<i64, Fail> {
    i64::try_from(v).map_err(|_| Fail::Value(format!("{v} is beyond a BIGINT")))
}

/// One connection and the statements prepared on it (a statement is parsed once per
/// connection, not per call).
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Conn {
    fn sql(&mut self) -> Sql<'_, Client> {
        Sql {
            c: &mut self.client,
            statements: &mut self.statements,
        }
    }
}

/// The statements of one connection, run on the connection or on a transaction of it.
struct Sql<'a, C: GenericClient> {
    c: &'a mut C,
    statements: &'a mut HashMap<&'static str, Statement>,
}

type Params<'p> = [&'p (dyn ToSql + Sync)];

impl<C: GenericClient> Sql<'_, C> {
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, Fail> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.c.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    fn execute(&mut self, sql: &'static str, p: &Params<'_>) -> Result<u64, Fail> {
        let s = self.prepared(sql)?;
        Ok(self.c.execute(&s, p)?)
    }

    fn rows(&mut self, sql: &'static str, p: &Params<'_>) -> Result<Vec<Row>, Fail> {
        let s = self.prepared(sql)?;
        Ok(self.c.query(&s, p)?)
    }

    fn opt(&mut self, sql: &'static str, p: &Params<'_>) -> Result<Option<Row>, Fail> {
        let s = self.prepared(sql)?;
        Ok(self.c.query_opt(&s, p)?)
    }
}

/// Column `i` of a row of `table`, or an error naming the table.
fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize, table: &str) -> Result<T> {
    row.try_get(i).map_err(|e| load_error(table, e))
}

/// Reads `sql`'s rows with `read`: a failed statement is the store's error, a row that does
/// not read back is corruption.
fn read_rows<C: GenericClient, T>(
    sql: &mut Sql<'_, C>,
    query: &'static str,
    p: &Params<'_>,
    mut read: impl FnMut(&Row) -> Result<T>,
) -> Result<Vec<T>> {
    let rows = sql
        .rows(query, p)
        .map_err(|f| f.into_error("metadata read"))?;
    rows.iter().map(&mut read).collect()
}

/// The columns [`manifest_row`] reads, in its order (likewise for uploads and robot tokens
/// below): macros, so that `concat!` makes each query one `&'static str`.
macro_rules! manifest_columns {
    () => {
        "digest, media_type, artifact_type, subject, size, annotations, created"
    };
}

fn manifest_row(row: &Row) -> Result<ManifestRecord> {
    let t = "manifests";
    let annotations = col::<Option<String>>(row, 5, t)?
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| load_error("manifests.annotations", e))?;
    Ok(ManifestRecord {
        digest: digest_col(t, col(row, 0, t)?)?,
        media_type: col(row, 1, t)?,
        artifact_type: col(row, 2, t)?,
        subject: col::<Option<&str>>(row, 3, t)?
            .map(|s| digest_col(t, s))
            .transpose()?,
        size: size_col(t, col(row, 4, t)?)?,
        annotations,
        created: col(row, 6, t)?,
    })
}

/// A row of `upload_columns!()`.
fn upload_row(row: &Row) -> Result<UploadRecord> {
    let t = "uploads";
    Ok(UploadRecord {
        id: col(row, 0, t)?,
        repository: col(row, 1, t)?,
        started: col(row, 2, t)?,
        expires: col(row, 3, t)?,
        offset: size_col(t, col(row, 4, t)?)?,
        hash_state: col(row, 5, t)?,
        owner: col(row, 6, t)?,
        remote: col(row, 7, t)?,
    })
}

/// A row of `robot_columns!()`.
fn robot_row(row: &Row) -> Result<RobotToken> {
    let t = "robot_tokens";
    let name: String = col(row, 0, t)?;
    let hash: Vec<u8> = col(row, 1, t)?;
    let secret_hash = hash
        .try_into()
        .map_err(|_| load_error(t, format_args!("{name:?}: a hash of another size")))?;
    Ok(RobotToken {
        secret_hash,
        scopes: col::<&str>(row, 2, t)?
            .lines()
            .map(str::to_string)
            .collect(),
        created: col(row, 3, t)?,
        expires: col(row, 4, t)?,
        revoked: col(row, 5, t)?,
        last_used: col(row, 6, t)?,
        name,
    })
}

macro_rules! upload_columns {
    () => {
        "id, repository, started, expires, upload_offset, hash_state, owner, remote"
    };
}

macro_rules! robot_columns {
    () => {
        "name, secret_hash, scopes, created, expires, revoked, last_used"
    };
}

/// Names strictly after `last` in `query`'s order, at most `limit`, and whether more remain:
/// `limit + 1` rows are asked for, as the index's pages do.
fn page<C: GenericClient>(
    sql: &mut Sql<'_, C>,
    query: &'static str,
    key: &Params<'_>,
    last: Option<&str>,
    limit: usize,
    table: &'static str,
) -> Result<(Vec<String>, bool)> {
    if limit == 0 {
        return Ok((Vec::new(), false));
    }
    let ask = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    let mut p: Vec<&(dyn ToSql + Sync)> = key.to_vec();
    p.push(&last);
    p.push(&ask);
    let mut names = read_rows(sql, query, &p, |row| col(row, 0, table))?;
    let more = names.len() > limit;
    names.truncate(limit);
    Ok((names, more))
}

// --- writes

fn ensure_repository<C: GenericClient>(
    sql: &mut Sql<'_, C>,
    repo: &str,
    now: i64,
) -> Result<(), Fail> {
    sql.execute(
        "INSERT INTO repositories (name, created) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&repo, &now],
    )?;
    Ok(())
}

/// Records the blob (first size and time win, the reference time moves) and links it to
/// `repo`; `true` if the link was there already. Refused while garbage collection removes the
/// blob. The blob's row is locked first, then the link: the order of every write that takes
/// both (see [`apply`]), so that none waits for another in a cycle.
fn link<C: GenericClient>(
    sql: &mut Sql<'_, C>,
    repo: &str,
    digest: &Digest,
    size: u64,
    now: i64,
) -> Result<std::result::Result<bool, Conflict>, Fail> {
    ensure_repository(sql, repo, now)?;
    let recorded = sql.opt(
        "INSERT INTO blobs (digest, size, created, last_referenced) VALUES ($1, $2, $3, $3)
         ON CONFLICT (digest) DO UPDATE SET
            last_referenced = GREATEST(blobs.last_referenced, excluded.last_referenced)
         WHERE blobs.sweeping IS NULL
         RETURNING 1",
        &[&digest.as_str(), &int(size)?, &now],
    )?;
    if recorded.is_none() {
        return Ok(Err(Conflict::BlobSweeping {
            digest: digest.clone(),
        }));
    }
    let added = sql.execute(
        "INSERT INTO repository_blobs (repository, digest, created) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&repo, &digest.as_str(), &now],
    )?;
    Ok(Ok(added == 0))
}

/// Moves the activity time of blobs not being swept, locking their rows, in digest order (two
/// writers touching the same blobs lock them in one order); `true` per digest touched.
fn touch<C: GenericClient>(
    sql: &mut Sql<'_, C>,
    digests: &mut Vec<(&Digest, i64)>,
) -> Result<(), Fail> {
    digests.sort();
    digests.dedup_by(|a, b| a.0 == b.0);
    for (digest, at) in digests.iter() {
        sql.execute(
            "UPDATE blobs SET last_referenced = GREATEST(last_referenced, $2)
             WHERE digest = $1 AND sweeping IS NULL",
            &[&digest.as_str(), at],
        )?;
    }
    Ok(())
}

/// Size of `digest` if `repo` may serve it, the link locked until the transaction ends so that
/// a concurrent unlink cannot slip between this check and what the write does with it.
fn linked_size<C: GenericClient>(
    sql: &mut Sql<'_, C>,
    repo: &str,
    digest: &Digest,
) -> Result<Option<u64>, Fail> {
    let row = sql.opt(
        "SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
         WHERE rb.repository = $1 AND rb.digest = $2 FOR SHARE OF rb",
        &[&repo, &digest.as_str()],
    )?;
    Ok(row.map(|r| r.get::<_, i64>(0) as u64))
}

/// Removes the manifest, its tags and its references; `true` if it was there.
fn remove_manifest<C: GenericClient>(
    sql: &mut Sql<'_, C>,
    repo: &str,
    digest: &Digest,
) -> Result<bool, Fail> {
    let key: [&(dyn ToSql + Sync); 2] = [&repo, &digest.as_str()];
    sql.execute(
        "DELETE FROM tags WHERE repository = $1 AND digest = $2",
        &key,
    )?;
    sql.execute(
        "DELETE FROM manifest_references WHERE repository = $1 AND manifest = $2",
        &key,
    )?;
    Ok(sql.execute(
        "DELETE FROM manifests WHERE repository = $1 AND digest = $2",
        &key,
    )? > 0)
}

/// The check every engine runs ([`Required::judge`]), on rows locked for the transaction.
fn check_required<C: GenericClient>(
    sql: &mut Sql<'_, C>,
    repo: &str,
    r: &Required,
) -> Result<Option<Conflict>, Fail> {
    let stored = if r.kind == RefKind::Manifest {
        sql.opt(
            "SELECT size FROM manifests WHERE repository = $1 AND digest = $2 FOR SHARE",
            &[&repo, &r.digest.as_str()],
        )?
        .map(|row| row.get::<_, i64>(0) as u64)
    } else {
        linked_size(sql, repo, &r.digest)?
    };
    Ok(r.judge(stored).err())
}

/// The PostgreSQL meaning of one op, inside the caller's transaction; the same meaning as the
/// SQLite engine's `apply_sql` and [`super::Index::apply`] (the suite checks all three).
///
/// `RETURNING (xmax = 0)` after an upsert tells whether the row was inserted (true) or an
/// existing one updated: answered by the statement itself, so exact under concurrent writers
/// where a read before it would not be.
fn apply<C: GenericClient>(
    sql: &mut Sql<'_, C>,
    op: &WriteOp,
    now: i64,
) -> Result<std::result::Result<WriteOutcome, Conflict>, Fail> {
    let existed = match op {
        WriteOp::LinkBlob { repo, digest, size } => match link(sql, repo, digest, *size, now)? {
            Ok(existed) => existed,
            Err(conflict) => return Ok(Err(conflict)),
        },
        // The blob's row first (a blob being swept is not touched, and has no links left).
        WriteOp::MountBlob { from, repo, digest } => {
            touch(sql, &mut vec![(digest, now)])?;
            match linked_size(sql, from, digest)? {
                Some(size) => {
                    if let Err(conflict) = link(sql, repo, digest, size, now)? {
                        return Ok(Err(conflict));
                    }
                    true
                }
                None => false,
            }
        }
        WriteOp::UnlinkBlob { repo, digest } => {
            sql.execute(
                "DELETE FROM repository_blobs WHERE repository = $1 AND digest = $2",
                &[repo, &digest.as_str()],
            )? > 0
        }
        WriteOp::PutManifest {
            repo,
            record,
            refs,
            tag,
            fixed_tag,
            requires,
        } => {
            // Blob rows before links (the order of every write): the referenced blobs are
            // touched first, and a collection marking one of them either waits for this
            // transaction (and then finds it referenced) or went first (and the check below
            // finds the link gone).
            let mut blobs: Vec<(&Digest, i64)> = refs
                .iter()
                .filter(|(_, k)| matches!(k, RefKind::Config | RefKind::Layer))
                .map(|(d, _)| (d, now))
                .collect();
            touch(sql, &mut blobs)?;
            for r in requires {
                if let Some(conflict) = check_required(sql, repo, r)? {
                    return Ok(Err(conflict));
                }
            }
            let digest = record.digest.as_str();
            if let Err(conflict) = link(sql, repo, &record.digest, record.size, now)? {
                return Ok(Err(conflict));
            }
            let annotations = record
                .annotations
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| Fail::Value(e.to_string()))?;
            // `created` is not in the update list: a re-put keeps the first time.
            let inserted: bool = sql
                .opt(
                    "INSERT INTO manifests (repository, digest, media_type, artifact_type,
                                            subject, size, annotations, created)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (repository, digest) DO UPDATE SET
                        media_type = excluded.media_type,
                        artifact_type = excluded.artifact_type,
                        subject = excluded.subject,
                        size = excluded.size,
                        annotations = excluded.annotations
                     RETURNING (xmax = 0)",
                    &[
                        repo,
                        &digest,
                        &record.media_type,
                        &record.artifact_type,
                        &record.subject.as_ref().map(Digest::as_str),
                        &int(record.size)?,
                        &annotations,
                        &now,
                    ],
                )?
                .is_some_and(|row| row.get(0));
            sql.execute(
                "DELETE FROM manifest_references WHERE repository = $1 AND manifest = $2",
                &[repo, &digest],
            )?;
            for (child, kind) in refs {
                sql.execute(
                    "INSERT INTO manifest_references (repository, manifest, child_digest, kind)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[repo, &digest, &child.as_str(), &kind.as_str()],
                )?;
            }
            if let Some(tag) = tag {
                // A fixed tag is updated only where it already names this digest; at READ
                // COMMITTED the WHERE sees a row another transaction committed meanwhile.
                let set = sql.execute(
                    "INSERT INTO tags (repository, name, digest, updated) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (repository, name) DO UPDATE SET
                        digest = excluded.digest, updated = excluded.updated
                     WHERE NOT $5 OR tags.digest = excluded.digest",
                    &[repo, tag, &digest, &now, fixed_tag],
                )?;
                if set == 0 {
                    let held: String = sql.rows(
                        "SELECT digest FROM tags WHERE repository = $1 AND name = $2",
                        &[repo, tag],
                    )?[0]
                        .get(0);
                    return Ok(Err(Conflict::TagImmutable {
                        tag: tag.clone(),
                        digest: digest_col("tags", &held)
                            .map_err(|e| Fail::Value(e.to_string()))?,
                    }));
                }
            }
            sql.execute(
                "INSERT INTO push_events (repository, digest, at) VALUES ($1, $2, $3)
                 ON CONFLICT (repository, digest) DO UPDATE SET at = excluded.at",
                &[repo, &digest, &now],
            )?;
            !inserted
        }
        WriteOp::DeleteManifest { repo, digest } => remove_manifest(sql, repo, digest)?,
        WriteOp::DeleteTag { repo, tag } => {
            sql.execute(
                "DELETE FROM tags WHERE repository = $1 AND name = $2",
                &[repo, tag],
            )? > 0
        }
        WriteOp::PutUpload(r) => {
            let inserted: bool = sql
                .opt(
                    "INSERT INTO uploads
                        (id, repository, started, expires, upload_offset, hash_state, owner,
                         remote)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (id) DO UPDATE SET
                        repository = excluded.repository,
                        started = excluded.started,
                        expires = excluded.expires,
                        upload_offset = excluded.upload_offset,
                        hash_state = excluded.hash_state,
                        owner = excluded.owner,
                        remote = excluded.remote
                     RETURNING (xmax = 0)",
                    &[
                        &r.id,
                        &r.repository,
                        &r.started,
                        &r.expires,
                        &int(r.offset)?,
                        &r.hash_state,
                        &r.owner,
                        &r.remote,
                    ],
                )?
                .is_some_and(|row| row.get(0));
            !inserted
        }
        // Start and owner stay as the session's start wrote them.
        // One statement decides: under concurrent writers it waits for the other's commit and
        // reads the row again, so of two that found the same state only the first advances it.
        WriteOp::AdvanceUpload { record: r, from } => {
            let updated = sql.execute(
                "UPDATE uploads SET expires = $3, upload_offset = $4, hash_state = $5, remote = $6
                 WHERE id = $1 AND repository = $2
                    AND upload_offset = $7 AND remote IS NOT DISTINCT FROM $8",
                &[
                    &r.id,
                    &r.repository,
                    &r.expires,
                    &int(r.offset)?,
                    &r.hash_state,
                    &r.remote,
                    &int(from.offset)?,
                    &from.remote,
                ],
            )?;
            if updated == 0 {
                let now = sql.opt(
                    "SELECT upload_offset FROM uploads WHERE id = $1 AND repository = $2",
                    &[&r.id, &r.repository],
                )?;
                return Ok(Err(match now {
                    Some(row) => Conflict::UploadMoved {
                        offset: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                    },
                    None => Conflict::UploadGone,
                }));
            }
            true
        }
        WriteOp::DeleteUpload { id } => {
            sql.execute("DELETE FROM uploads WHERE id = $1", &[id])? > 0
        }
        // One statement decides: a new name inserts, a revoked one is replaced, a live one is
        // left alone (no row comes back), even with another node creating the same name.
        WriteOp::CreateRobotToken(t) => {
            let row = sql.opt(
                "INSERT INTO robot_tokens
                    (name, secret_hash, scopes, created, expires, revoked, last_used)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (name) DO UPDATE SET
                    secret_hash = excluded.secret_hash, scopes = excluded.scopes,
                    created = excluded.created, expires = excluded.expires,
                    revoked = excluded.revoked, last_used = excluded.last_used
                 WHERE robot_tokens.revoked IS NOT NULL
                 RETURNING (xmax = 0)",
                &[
                    &t.name,
                    &&t.secret_hash[..],
                    &t.scopes.join("\n"),
                    &t.created,
                    &t.expires,
                    &t.revoked,
                    &t.last_used,
                ],
            )?;
            match row {
                None => {
                    return Ok(Err(Conflict::RobotTokenExists {
                        name: t.name.clone(),
                    }))
                }
                Some(row) => !row.get::<_, bool>(0),
            }
        }
        WriteOp::RevokeRobotToken { name } => {
            sql.execute(
                "UPDATE robot_tokens SET revoked = $2 WHERE name = $1 AND revoked IS NULL",
                &[name, &now],
            )? > 0
        }
        // GREATEST ignores NULL: the first use sets the time, later ones only move it forward.
        WriteOp::RobotTokenUsed { name, at } => {
            sql.execute(
                "UPDATE robot_tokens SET last_used = GREATEST(last_used, $2) WHERE name = $1",
                &[name, at],
            )? > 0
        }
        WriteOp::RecordPulls(pulls) => {
            for Pull { repo, digest, at } in pulls {
                sql.execute(
                    "UPDATE manifests SET last_pulled = GREATEST(last_pulled, $3)
                     WHERE repository = $1 AND digest = $2",
                    &[repo, &digest.as_str(), at],
                )?;
            }
            false
        }
        WriteOp::ClaimBlob { digest } => {
            let row = sql.opt(
                "UPDATE blobs SET last_referenced = GREATEST(last_referenced, $2)
                 WHERE digest = $1 RETURNING sweeping IS NOT NULL",
                &[&digest.as_str(), &now],
            )?;
            match row.map(|r| r.get::<_, bool>(0)) {
                Some(true) => {
                    return Ok(Err(Conflict::BlobSweeping {
                        digest: digest.clone(),
                    }))
                }
                Some(false) => true,
                None => {
                    // Committed before an orphan sweep marks the digest (which then finds
                    // it), or after (and then waits on the marked row's lock, or finds it).
                    sql.execute(
                        "INSERT INTO blob_claims (digest, at) VALUES ($1, $2)
                         ON CONFLICT (digest) DO UPDATE SET at = excluded.at",
                        &[&digest.as_str(), &now],
                    )?;
                    // A marked row inserted meanwhile is a sweep in progress.
                    if sql
                        .opt("SELECT 1 FROM blobs WHERE digest = $1", &[&digest.as_str()])?
                        .is_some()
                    {
                        return Ok(Err(Conflict::BlobSweeping {
                            digest: digest.clone(),
                        }));
                    }
                    false
                }
            }
        }
        WriteOp::TombstoneOrphan {
            digest,
            size,
            cutoff,
        } => {
            let d = digest.as_str();
            // The claim's row is locked (or created and locked) first, so a claim of the same
            // digest waits for this transaction or went first and is seen.
            // A row made here only to be locked holds the smallest time: never a claim.
            let claimed = sql
                .opt(
                    "INSERT INTO blob_claims (digest, at) VALUES ($1, $3)
                     ON CONFLICT (digest) DO UPDATE SET at = blob_claims.at
                     RETURNING at >= $2 AND at > $3",
                    &[&d, cutoff, &i64::MIN],
                )?
                .is_some_and(|r| r.get::<_, bool>(0));
            if claimed {
                return Ok(Err(Conflict::Live));
            }
            let inserted = sql.execute(
                "INSERT INTO blobs (digest, size, created, last_referenced, sweeping)
                 VALUES ($1, $2, $3, 0, $3) ON CONFLICT DO NOTHING",
                &[&d, &int(*size)?, &now],
            )?;
            if inserted == 0 {
                return Ok(Err(Conflict::Live));
            }
            true
        }
        WriteOp::ExpireTag {
            repo,
            tag,
            digest,
            updated,
        } => {
            let removed = sql.execute(
                "DELETE FROM tags
                 WHERE repository = $1 AND name = $2 AND digest = $3 AND updated = $4",
                &[repo, tag, &digest.as_str(), updated],
            )? > 0;
            if !removed
                && sql
                    .opt(
                        "SELECT 1 FROM tags WHERE repository = $1 AND name = $2",
                        &[repo, tag],
                    )?
                    .is_some()
            {
                return Ok(Err(Conflict::Live));
            }
            removed
        }
        WriteOp::ForgetClaims { before } => {
            sql.execute("DELETE FROM blob_claims WHERE at < $1", &[before])?;
            false
        }
        WriteOp::ForgetPushEvents(events) => {
            let mut any = false;
            for e in events {
                any |= sql.execute(
                    "DELETE FROM push_events
                     WHERE repository = $1 AND digest = $2 AND at = $3",
                    &[&e.repo, &e.digest.as_str(), &e.at],
                )? > 0;
            }
            any
        }
        WriteOp::RecordBlobUse(uses) => {
            let mut blobs: Vec<(&Digest, i64)> = uses.iter().map(|(d, at)| (d, *at)).collect();
            touch(sql, &mut blobs)?;
            false
        }
        // The manifest's row is locked first: a put that tags it or lists it in an index
        // locks it too (its upsert, its check), so one waits for the other and the checks
        // below, each a statement of its own at READ COMMITTED, see what it committed.
        WriteOp::CollectManifest {
            repo,
            digest,
            cutoff,
        } => {
            let key: [&(dyn ToSql + Sync); 2] = [repo, &digest.as_str()];
            let Some(row) = sql.opt(
                "SELECT subject FROM manifests WHERE repository = $1 AND digest = $2 FOR UPDATE",
                &key,
            )?
            else {
                return Ok(Ok(WriteOutcome { existed: false }));
            };
            let subject: Option<String> = row.get(0);
            let kept = sql
                .opt(
                    "SELECT 1 WHERE
                        EXISTS (SELECT 1 FROM tags WHERE repository = $1 AND digest = $2)
                     OR EXISTS (SELECT 1 FROM manifest_references
                                WHERE repository = $1 AND child_digest = $2
                                  AND kind = 'manifest')
                     OR EXISTS (SELECT 1 FROM blobs
                                WHERE digest = $2 AND last_referenced >= $3)
                     OR EXISTS (SELECT 1 FROM manifests WHERE repository = $1 AND digest = $4)",
                    &[repo, &digest.as_str(), cutoff, &subject],
                )?
                .is_some();
            if kept {
                return Ok(Err(Conflict::Live));
            }
            remove_manifest(sql, repo, digest)?
        }
        // The blob's row, then its links, locked in the order every write takes them; then
        // the references are read by statements that see whatever a put that held the
        // links committed.
        WriteOp::TombstoneBlob { digest, cutoff } => {
            let d: [&(dyn ToSql + Sync); 1] = [&digest.as_str()];
            let idle = sql
                .opt(
                    "SELECT 1 FROM blobs WHERE digest = $1 AND sweeping IS NULL
                        AND last_referenced < $2 FOR UPDATE",
                    &[&digest.as_str(), cutoff],
                )?
                .is_some();
            if !idle {
                return Ok(Err(Conflict::Live));
            }
            sql.rows(
                "SELECT 1 FROM repository_blobs WHERE digest = $1 FOR UPDATE",
                &d,
            )?;
            let referenced = sql
                .opt(
                    "SELECT 1 WHERE
                        EXISTS (SELECT 1 FROM manifests WHERE digest = $1)
                     OR EXISTS (SELECT 1 FROM manifest_references
                                WHERE child_digest = $1 AND kind <> 'subject')",
                    &d,
                )?
                .is_some();
            if referenced {
                return Ok(Err(Conflict::Live));
            }
            sql.execute("DELETE FROM repository_blobs WHERE digest = $1", &d)?;
            sql.execute(
                "UPDATE blobs SET sweeping = $2 WHERE digest = $1",
                &[&digest.as_str(), &now],
            )?;
            true
        }
        WriteOp::ForgetBlob { digest } => {
            sql.execute(
                "DELETE FROM blobs WHERE digest = $1 AND sweeping IS NOT NULL",
                &[&digest.as_str()],
            )? > 0
        }
    };
    Ok(Ok(WriteOutcome { existed }))
}

/// Runs `op` in a transaction of its own: committed when it passed its checks, rolled back
/// (by dropping the transaction) when refused or failed.
fn write(conn: &mut Conn, op: &WriteOp) -> Result<WriteOutcome> {
    let what = || format!("metadata write ({})", describe(op));
    let mut tx = conn
        .client
        .transaction()
        .map_err(|e| Fail::Sql(e).into_error(&what()))?;
    let mut sql = Sql {
        c: &mut tx,
        statements: &mut conn.statements,
    };
    let run = |sql: &mut Sql<'_, _>| -> Result<_, Fail> {
        let now: i64 = sql.rows(NOW, &[])?[0].get(0);
        apply(sql, op, now)
    };
    match run(&mut sql).map_err(|f| f.into_error(&what()))? {
        Ok(outcome) => {
            tx.commit().map_err(|e| Fail::Sql(e).into_error(&what()))?;
            Ok(outcome)
        }
        Err(conflict) => Err(Error::Conflict(conflict)),
    }
}

// --- migrations

/// Brings the schema to the newest of [`MIGRATIONS`] in one transaction, under a lock that
/// keeps two processes opening the database at once from both running a step; refuses a
/// database whose recorded version is newer than this code knows.
fn migrate(client: &mut Client) -> std::result::Result<(), String> {
    let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    let sql = |e: postgres::Error| format!("schema: {e}");
    let mut tx = client.transaction().map_err(sql)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(sql)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            applied BIGINT NOT NULL
        )",
    )
    .map_err(sql)?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(sql)?
        .get(0);
    if current > latest {
        return Err(format!(
            "schema version {current} is newer than this binary supports ({latest})"
        ));
    }
    for (version, steps) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(steps)
            .map_err(|e| format!("schema step {version}: {e}"))?;
        tx.execute(
            &format!("INSERT INTO schema_migrations (version, applied) VALUES ($1, ({NOW}))"),
            &[version],
        )
        .map_err(sql)?;
    }
    tx.commit().map_err(sql)
}

/// The versions [`MIGRATIONS`] knows, in order.
pub(crate) fn known_versions() -> Vec<i64> {
    MIGRATIONS.iter().map(|(v, _)| i64::from(*v)).collect()
}

/// The schema version recorded in the database at `url`: 0 before the first migration.
/// Changes nothing. Blocks.
pub(crate) fn schema_version(url: &str) -> std::result::Result<i64, String> {
    let mut client = connect(url).map_err(|e| format!("metadata database: {e}"))?;
    recorded_version(&mut client)
}

fn recorded_version(client: &mut Client) -> std::result::Result<i64, String> {
    let sql = |e: postgres::Error| format!("metadata database: schema: {e}");
    let row = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .map_err(sql)?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(sql)?;
    Ok(i64::from(row.get::<_, i32>(0)))
}

/// Brings the database at `url` to the newest schema (as opening the engine does, without
/// starting it) and answers the version it has then. Blocks.
pub(crate) fn migrate_url(url: &str) -> std::result::Result<i64, String> {
    let mut client = connect(url).map_err(|e| format!("metadata database: {e}"))?;
    migrate(&mut client).map_err(|e| format!("metadata database: {e}"))?;
    recorded_version(&mut client)
}

// --- the engine threads

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

enum Msg {
    Job(Job),
    /// A point lookup, answered with the others of its wake ([`batch`]).
    Lookup(Lookup),
    Stop,
}

/// An engine thread's state: its connection, made again after it was lost, and its
/// connection to the Redis cache when there is one.
struct Worker {
    url: String,
    conn: Option<Conn>,
    cache: Option<redis_cache::Session>,
}

fn connect(url: &str) -> Result<Client> {
    Client::connect(url, NoTls).map_err(|e| Fail::Sql(e).into_error("metadata connect"))
}

impl Worker {
    /// Whether the connection is gone (never made, or closed by a failure).
    fn lost(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.client.is_closed())
    }

    fn conn(&mut self) -> Result<&mut Conn> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(Conn {
                client: connect(&self.url)?,
                statements: HashMap::new(),
            });
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// A read: `f` gets the connection's statements outside any transaction (each statement
    /// sees what was committed when it started: every write that resolved before it). A read
    /// changes nothing, so one that failed because the connection was lost (the server
    /// restarted, a proxy dropped it) runs once more on a new connection; a write never does,
    /// since its commit may have happened.
    fn read<T>(&mut self, f: impl Fn(&mut Sql<'_, Client>) -> Result<T>) -> Result<T> {
        let result = self.conn().and_then(|c| f(&mut c.sql()));
        if result.is_err() && self.lost() {
            return self.conn().and_then(|c| f(&mut c.sql()));
        }
        result
    }

    /// Deletes the Redis entry of a manifest `op` changed or removed, after its commit and
    /// before the write resolves: a delete has removed it before anything is unlinked. Not
    /// what keeps reads right (the row stamps do, see [`redis_cache`]), so a failure here is
    /// counted and the write stands.
    fn forget(&mut self, op: &WriteOp) {
        let (repo, digest) = match op {
            WriteOp::PutManifest { repo, record, .. } => (repo, &record.digest),
            WriteOp::DeleteManifest { repo, digest }
            | WriteOp::CollectManifest { repo, digest, .. } => (repo, digest),
            _ => return,
        };
        if let Some(cache) = self.cache.as_mut() {
            cache.delete(&[redis_cache::manifest_key(repo, digest.as_str())]);
        }
    }

    /// Serves its lanes until a `Stop`: each wake takes what is waiting (up to
    /// [`MAX_BATCH`]), runs the jobs in order and answers the lookups together. All of them
    /// were asked before any answer was given, so no order among them is owed to anyone.
    fn serve(&mut self, lanes: &[crossbeam_channel::Receiver<Msg>]) {
        while let Some(first) = next_of(lanes) {
            let mut lookups = Pending::default();
            let mut next = Some(first);
            let mut taken = 0;
            let mut stop = false;
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Job(job) => job(self),
                    Msg::Lookup(l) => lookups.add(l),
                    Msg::Stop => {
                        stop = true;
                        break;
                    }
                }
                taken += 1;
                if taken < MAX_BATCH {
                    next = lanes.iter().find_map(|rx| rx.try_recv().ok());
                }
            }
            if !lookups.is_empty() {
                lookups.answer(self);
            }
            if stop {
                return;
            }
        }
    }
}

/// The next message of any of `lanes`, waiting for one; None once they are all closed.
fn next_of(lanes: &[crossbeam_channel::Receiver<Msg>]) -> Option<Msg> {
    if let [rx] = lanes {
        return rx.recv().ok();
    }
    let mut select = crossbeam_channel::Select::new();
    for rx in lanes {
        select.recv(rx);
    }
    let op = select.select();
    let i = op.index();
    // A closed lane: the engine is gone.
    op.recv(&lanes[i]).ok()
}

/// How many of an engine's `threads` serve only point lookups. Lookups are answered a
/// statement per wake, so the fewer threads take them the more each statement answers: spread
/// over eight threads, 64 callers' lookups became eight small statements where two threads
/// make two large ones, and the database's CPU went to statements, not lookups (PostgreSQL 15
/// on 2 cores: 60,000 against 80,000 manifest GETs per second). Writes and other reads keep
/// the rest, so that a slow write never holds up a GET. One thread does everything.
fn lookup_threads(threads: usize) -> usize {
    if threads <= 1 {
        0
    } else {
        (threads / 4).clamp(1, 2)
    }
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    blobs: AtomicU64,
    blob_bytes: AtomicU64,
    /// When `blobs` and `blob_bytes` were last counted (Unix ms), and whether a count is queued.
    totals_at: AtomicI64,
    counting: AtomicBool,
}

/// How old the blob totals in [`Engine::stats`] may get before a recount is queued: a count of
/// the blobs table is a scan, not something to run per metrics scrape.
const TOTALS_MAX_AGE_MS: i64 = 10_000;

pub struct PostgresEngine {
    jobs: crossbeam_channel::Sender<Msg>,
    /// Point lookups' lane, served by [`lookup_threads`] threads (by every thread when that
    /// is none).
    lookups: crossbeam_channel::Sender<Msg>,
    lookup_threads: usize,
    cache: Option<RedisCache>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    counters: Arc<Counters>,
    /// For the collection lock's own connection.
    url: String,
}

/// The key of the session advisory lock that one collector of a fleet holds.
const COLLECTION_LOCK: i64 = 0x7269_6e67_0067_6300;

/// Every row of garbage collection's graph, from one REPEATABLE READ snapshot.
fn read_graph(client: &mut Client) -> Result<super::graph::Graph> {
    use super::graph::{BlobRow, Graph, ManifestRow, RefRow, TagRow};
    let fail = |e| Fail::Sql(e).into_error("reading the collection graph");
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(fail)?;
    let mut g = Graph::default();
    for row in tx
        .query(
            "SELECT digest, size, last_referenced, sweeping IS NOT NULL FROM blobs",
            &[],
        )
        .map_err(fail)?
    {
        g.blobs.push(BlobRow {
            digest: digest_col("blobs", &col::<String>(&row, 0, "blobs")?)?,
            size: size_col("blobs", col(&row, 1, "blobs")?)?,
            last_referenced: col(&row, 2, "blobs")?,
            sweeping: col(&row, 3, "blobs")?,
        });
    }
    for row in tx
        .query(
            "SELECT repository, digest, subject, last_pulled FROM manifests",
            &[],
        )
        .map_err(fail)?
    {
        let t = "manifests";
        g.manifests.push(ManifestRow {
            repo: col(&row, 0, t)?,
            digest: digest_col(t, &col::<String>(&row, 1, t)?)?,
            subject: col::<Option<String>>(&row, 2, t)?
                .map(|s| digest_col(t, &s))
                .transpose()?,
            last_pulled: col(&row, 3, t)?,
        });
    }
    for row in tx
        .query(
            "SELECT repository, manifest, child_digest, kind FROM manifest_references
             WHERE kind <> 'subject'",
            &[],
        )
        .map_err(fail)?
    {
        let t = "manifest_references";
        let kind: String = col(&row, 3, t)?;
        g.refs.push(RefRow {
            repo: col(&row, 0, t)?,
            manifest: digest_col(t, &col::<String>(&row, 1, t)?)?,
            child: digest_col(t, &col::<String>(&row, 2, t)?)?,
            kind: RefKind::parse(&kind)
                .ok_or_else(|| load_error(t, format_args!("kind {kind:?}")))?,
        });
    }
    for row in tx
        .query("SELECT repository, name, digest, updated FROM tags", &[])
        .map_err(fail)?
    {
        g.tags.push(TagRow {
            repo: col(&row, 0, "tags")?,
            name: col(&row, 1, "tags")?,
            digest: digest_col("tags", &col::<String>(&row, 2, "tags")?)?,
            updated: col(&row, 3, "tags")?,
        });
    }
    tx.commit().map_err(fail)?;
    Ok(g)
}

impl PostgresEngine {
    /// Connects to `url` (a libpq-style `host=... dbname=...` string or a `postgresql://` URL),
    /// brings the schema up to date and starts `threads` engine threads (at least one), each
    /// with its own connection. Blocks: call it at startup, not on an event loop. Errors are
    /// for the operator, naming what failed.
    pub fn open(url: &str, threads: usize) -> std::result::Result<PostgresEngine, String> {
        PostgresEngine::open_with_cache(url, threads, None)
    }

    /// [`PostgresEngine::open`], with manifest records and blob sizes cached in Redis
    /// ([`redis_cache`]) when `cache` is given.
    pub fn open_with_cache(
        url: &str,
        threads: usize,
        cache: Option<RedisCache>,
    ) -> std::result::Result<PostgresEngine, String> {
        let fail = |e: &dyn std::fmt::Display| format!("metadata database: {e}");
        let mut first = connect(url).map_err(|e| fail(&e))?;
        migrate(&mut first).map_err(|e| fail(&e))?;
        let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
        let (lookups_tx, lookups_rx) = crossbeam_channel::unbounded::<Msg>();
        let threads = threads.max(1);
        let lookup_threads = lookup_threads(threads);
        let mut first = Some(first);
        let mut handles = Vec::new();
        for i in 0..threads {
            let mut worker = Worker {
                url: url.to_string(),
                conn: first.take().map(|client| Conn {
                    client,
                    statements: HashMap::new(),
                }),
                cache: cache.as_ref().map(RedisCache::session),
            };
            let lanes = match lookup_threads {
                0 => vec![lookups_rx.clone(), rx.clone()],
                n if i < n => vec![lookups_rx.clone()],
                _ => vec![rx.clone()],
            };
            let handle = std::thread::Builder::new()
                .name(format!("meta-pg-{i}"))
                .spawn(move || worker.serve(&lanes))
                .map_err(|e| fail(&format_args!("engine thread: {e}")))?;
            handles.push(handle);
        }
        Ok(PostgresEngine {
            jobs: tx,
            lookups: lookups_tx,
            lookup_threads,
            cache,
            threads: Mutex::new(handles),
            closed: AtomicBool::new(false),
            counters: Arc::default(),
            url: url.to_string(),
        })
    }

    /// Queues the message `make` builds around the sender of an answer on `lane`.
    fn queue<T>(
        &self,
        lane: &crossbeam_channel::Sender<Msg>,
        make: impl FnOnce(futures_channel::oneshot::Sender<Result<T>>) -> Msg,
    ) -> Answer<T> {
        if self.closed.load(Ordering::SeqCst) {
            return Answer::failed(Error::Unavailable {
                retry: false,
                cause: "the metadata engine is closed".into(),
            });
        }
        let (tx, answer) = Answer::channel();
        match lane.send(make(tx)) {
            Ok(()) => answer,
            Err(_) => Answer::failed(Error::unavailable("the metadata engine stopped")),
        }
    }

    /// Queues `f` for an engine thread; the answer completes with its result.
    fn ask<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> Result<T> + Send + 'static,
    ) -> Answer<T> {
        self.queue(&self.jobs, |tx| {
            Msg::Job(Box::new(move |w: &mut Worker| {
                let _ = tx.send(f(w));
            }))
        })
    }

    /// A point lookup, answered with the others of its engine thread's wake.
    fn lookup<T>(
        &self,
        make: impl FnOnce(futures_channel::oneshot::Sender<Result<T>>) -> Lookup,
    ) -> Answer<T> {
        self.queue(&self.lookups, |tx| Msg::Lookup(make(tx)))
    }

    /// A read on an engine thread ([`Worker::read`]).
    fn read<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Sql<'_, Client>) -> Result<T> + Send + 'static,
    ) -> Answer<T> {
        self.ask(move |w| w.read(f))
    }

    /// Every row of `query` with text parameters `key`, each read by `read`.
    fn all<T: Send + 'static>(
        &self,
        query: &'static str,
        key: Vec<String>,
        read: impl Fn(&Row) -> Result<T> + Send + 'static,
    ) -> Answer<Vec<T>> {
        self.read(move |sql| {
            let p: Vec<&(dyn ToSql + Sync)> = key.iter().map(|k| k as _).collect();
            read_rows(sql, query, &p, &read)
        })
    }

    /// The first row of `query` (the only one, for a lookup by key), if any.
    fn first<T: Send + 'static>(
        &self,
        query: &'static str,
        key: Vec<String>,
        read: impl Fn(&Row) -> Result<T> + Send + 'static,
    ) -> Answer<Option<T>> {
        self.read(move |sql| {
            let p: Vec<&(dyn ToSql + Sync)> = key.iter().map(|k| k as _).collect();
            Ok(read_rows(sql, query, &p, &read)?.into_iter().next())
        })
    }

    /// Queues a recount of the blob totals when they are old and none is queued.
    fn count_blobs_if_old(&self) {
        let c = &self.counters;
        let now = super::now_millis();
        if now - c.totals_at.load(Ordering::Relaxed) < TOTALS_MAX_AGE_MS
            || c.counting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let counters = self.counters.clone();
        let answer = self.read(move |sql| {
            let rows = read_rows(
                sql,
                "SELECT count(*), coalesce(sum(size), 0)::int8 FROM blobs WHERE sweeping IS NULL",
                &[],
                |row| Ok((col::<i64>(row, 0, "blobs")?, col::<i64>(row, 1, "blobs")?)),
            );
            if let Ok((blobs, bytes)) = rows.as_ref().map(|r| r[0]) {
                counters.blobs.store(blobs as u64, Ordering::Relaxed);
                counters.blob_bytes.store(bytes as u64, Ordering::Relaxed);
                counters
                    .totals_at
                    .store(super::now_millis(), Ordering::Relaxed);
            }
            counters.counting.store(false, Ordering::Release);
            rows.map(|_| ())
        });
        // Nobody waits for the count; the next stats() shows it.
        drop(answer);
    }
}

impl Engine for PostgresEngine {
    fn repo_exists(&self, repo: &str) -> Answer<bool> {
        let repo = repo.to_string();
        self.lookup(|reply| Lookup::RepoExists { repo, reply })
    }

    fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Answer<Option<u64>> {
        let (repo, digest) = (repo.to_string(), digest.clone());
        self.lookup(|reply| Lookup::BlobInRepo {
            repo,
            digest,
            reply,
        })
    }

    fn repo_usage(&self, repo: &str) -> Answer<u64> {
        let repo = repo.to_string();
        self.read(move |sql| {
            let rows = read_rows(
                sql,
                "SELECT coalesce(sum(b.size), 0)::int8 FROM repository_blobs rb
                 JOIN blobs b ON b.digest = rb.digest WHERE rb.repository = $1",
                &[&repo],
                |row| col::<i64>(row, 0, "blobs"),
            )?;
            Ok(rows.first().map_or(0, |n| (*n).max(0) as u64))
        })
    }

    fn push_events(&self, limit: usize) -> Answer<Vec<PushEvent>> {
        self.all(
            "SELECT repository, digest, at FROM push_events
             ORDER BY at, repository, digest LIMIT $1::TEXT::BIGINT",
            vec![limit.to_string()],
            |row| {
                Ok(PushEvent {
                    repo: col(row, 0, "push_events")?,
                    digest: digest_col("push_events", &col::<String>(row, 1, "push_events")?)?,
                    at: col(row, 2, "push_events")?,
                })
            },
        )
    }

    fn marked_blobs(&self) -> Answer<Vec<(Digest, u64)>> {
        self.all(
            "SELECT digest, size FROM blobs WHERE sweeping IS NOT NULL ORDER BY digest",
            Vec::new(),
            |row| {
                Ok((
                    digest_col("blobs", &col::<String>(row, 0, "blobs")?)?,
                    size_col("blobs", col(row, 1, "blobs")?)?,
                ))
            },
        )
    }

    fn blob(&self, digest: &Digest) -> Answer<Option<BlobInfo>> {
        let digest = digest.clone();
        self.lookup(|reply| Lookup::Blob { digest, reply })
    }

    fn tag(&self, repo: &str, tag: &str) -> Answer<Option<TagInfo>> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.lookup(|reply| Lookup::Tag { repo, tag, reply })
    }

    fn manifest(&self, repo: &str, digest: &Digest) -> Answer<Option<Arc<ManifestRecord>>> {
        let (repo, digest) = (repo.to_string(), digest.clone());
        self.lookup(|reply| Lookup::Manifest {
            repo,
            digest,
            reply,
        })
    }

    fn tagged_manifest(&self, repo: &str, tag: &str) -> Answer<Option<Arc<ManifestRecord>>> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.lookup(|reply| Lookup::TaggedManifest { repo, tag, reply })
    }

    /// NULL (never pulled) and no row (no such manifest) both read as None.
    fn last_pulled(&self, repo: &str, digest: &Digest) -> Answer<Option<i64>> {
        self.first(
            "SELECT last_pulled FROM manifests
             WHERE repository = $1 AND digest = $2 AND last_pulled IS NOT NULL",
            vec![repo.to_string(), digest.to_string()],
            |row| col(row, 0, "manifests"),
        )
    }

    fn tags_after(
        &self,
        repo: &str,
        last: Option<&str>,
        limit: usize,
    ) -> Answer<Option<(Vec<String>, bool)>> {
        let (repo, last) = (repo.to_string(), last.map(str::to_string));
        self.read(move |sql| {
            let exists = read_rows(
                sql,
                "SELECT 1 FROM repositories WHERE name = $1",
                &[&repo],
                |_| Ok(()),
            )?;
            if exists.is_empty() {
                return Ok(None);
            }
            page(
                sql,
                "SELECT name FROM tags WHERE repository = $1
                 AND ($2::text IS NULL OR name > $2::text) ORDER BY name LIMIT $3",
                &[&repo],
                last.as_deref(),
                limit,
                "tags",
            )
            .map(Some)
        })
    }

    fn repositories_after(&self, last: Option<&str>, limit: usize) -> Answer<(Vec<String>, bool)> {
        let last = last.map(str::to_string);
        self.read(move |sql| {
            page(
                sql,
                "SELECT name FROM repositories
                 WHERE ($1::text IS NULL OR name > $1::text) ORDER BY name LIMIT $2",
                &[],
                last.as_deref(),
                limit,
                "repositories",
            )
        })
    }

    fn referrers(&self, repo: &str, subject: &Digest) -> Answer<Vec<Arc<ManifestRecord>>> {
        self.all(
            concat!(
                "SELECT ",
                manifest_columns!(),
                " FROM manifests WHERE repository = $1 AND subject = $2 ORDER BY digest"
            ),
            vec![repo.to_string(), subject.to_string()],
            |row| manifest_row(row).map(Arc::new),
        )
    }

    fn manifest_parents(&self, repo: &str, child: &Digest) -> Answer<Vec<Digest>> {
        self.all(
            "SELECT manifest FROM manifest_references
             WHERE repository = $1 AND child_digest = $2 AND kind = 'manifest'
             ORDER BY manifest",
            vec![repo.to_string(), child.to_string()],
            |row| digest_col("manifest_references", col(row, 0, "manifest_references")?),
        )
    }

    fn tags_of(&self, repo: &str, digest: &Digest) -> Answer<Vec<String>> {
        self.all(
            "SELECT name FROM tags WHERE repository = $1 AND digest = $2 ORDER BY name",
            vec![repo.to_string(), digest.to_string()],
            |row| col(row, 0, "tags"),
        )
    }

    fn uploads(&self) -> Answer<Vec<UploadRecord>> {
        self.all(
            concat!("SELECT ", upload_columns!(), " FROM uploads ORDER BY id"),
            vec![],
            upload_row,
        )
    }

    fn upload(&self, id: &str) -> Answer<Option<UploadRecord>> {
        self.first(
            concat!("SELECT ", upload_columns!(), " FROM uploads WHERE id = $1"),
            vec![id.to_string()],
            upload_row,
        )
    }

    fn robot_token(&self, name: &str) -> Answer<Option<RobotToken>> {
        self.first(
            concat!(
                "SELECT ",
                robot_columns!(),
                " FROM robot_tokens WHERE name = $1"
            ),
            vec![name.to_string()],
            robot_row,
        )
    }

    fn robot_tokens(&self) -> Answer<Vec<RobotToken>> {
        self.all(
            concat!(
                "SELECT ",
                robot_columns!(),
                " FROM robot_tokens ORDER BY name"
            ),
            vec![],
            robot_row,
        )
    }

    /// Every read asks the database, so whatever another process committed is already seen.
    fn refresh_robot_tokens(&self) -> Answer<()> {
        Answer::ready(())
    }

    fn write(&self, op: WriteOp) -> Answer<WriteOutcome> {
        let counters = self.counters.clone();
        self.ask(move |w| {
            let outcome = w.conn().and_then(|conn| write(conn, &op));
            if outcome.is_ok() {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                w.forget(&op);
            }
            outcome
        })
    }

    /// A round trip on an engine thread, behind the jobs queued before it.
    fn gc_graph(&self) -> Answer<super::graph::Graph> {
        self.ask(|w| w.conn().and_then(|c| read_graph(&mut c.client)))
    }

    /// A session advisory lock on a connection of its own, held as long as the guard (the
    /// connection) lives: a collector that dies releases it with its connection.
    fn lock_collection(&self) -> Result<Option<Box<dyn Send>>> {
        let mut client = connect(&self.url)?;
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&COLLECTION_LOCK])
            .map_err(|e| Fail::Sql(e).into_error("taking the collection lock"))?
            .get(0);
        Ok(got.then(|| Box::new(client) as Box<dyn Send>))
    }

    fn ping(&self) -> Answer<()> {
        self.read(|sql| read_rows(sql, "SELECT 1", &[], |_| Ok(())).map(|_| ()))
    }

    fn stats(&self) -> EngineStats {
        self.count_blobs_if_old();
        let c = &self.counters;
        let commits = c.commits.load(Ordering::Relaxed);
        EngineStats {
            commits,
            ops: commits,
            failed_batches: 0,
            queue_depth: (self.jobs.len() + self.lookups.len()) as u64,
            blobs: c.blobs.load(Ordering::Relaxed),
            blob_bytes: c.blob_bytes.load(Ordering::Relaxed),
            cache: self.cache.as_ref().map(RedisCache::stats),
        }
    }

    /// Each thread stops at its `Stop`, after the jobs queued before it ran (queued writes
    /// commit); later calls fail at once.
    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        for i in 0..threads.len() {
            let lane = if i < self.lookup_threads {
                &self.lookups
            } else {
                &self.jobs
            };
            let _ = lane.send(Msg::Stop);
        }
        for t in threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for PostgresEngine {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::super::index::tests::dg;
    use super::super::redis_cache::tests::{raw, redis, RedisServer};
    use super::super::resp::Value;
    use super::super::suite::{self, block_on, now};
    use super::super::Meta;
    use super::*;
    use crate::testing::postgres::PgServer;

    fn server() -> PgServer {
        PgServer::start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Several engine threads, so that a write and the read after it run on different
    /// connections (read-your-writes across connections, as across nodes).
    fn open(url: &str) -> Meta {
        Meta::open_postgres(url, 3).expect("open postgres")
    }

    #[test]
    fn the_postgres_engine_passes_the_suite() {
        let pg = server();
        let url = pg.create_database("suite").unwrap();
        suite::run(&|_| open(&url), true);
    }

    fn versions(url: &str) -> Vec<i32> {
        let mut c = Client::connect(url, NoTls).unwrap();
        c.query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    }

    /// Every step is recorded once; opening again (or by a second node) runs none again.
    #[test]
    fn migrations_run_once_and_a_newer_schema_is_refused() {
        let pg = server();
        let url = pg.create_database("migrations").unwrap();
        let all: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        let a = open(&url);
        let b = open(&url);
        assert_eq!(versions(&url), all);
        block_on(a.link_blob("r", &dg("x"), 1)).unwrap();
        assert_eq!(now(b.blob_in_repo("r", &dg("x"))), Some(1));
        a.close();
        b.close();
        let mut c = Client::connect(&url, NoTls).unwrap();
        c.execute(
            "INSERT INTO schema_migrations (version, applied) VALUES (99, 0)",
            &[],
        )
        .unwrap();
        let err = Meta::open_postgres(&url, 1)
            .err()
            .expect("a newer schema must be refused");
        assert!(err.contains("99"), "{err}");
    }

    /// The check of a manifest put waits for an unlink that another node has running (here a
    /// transaction held open by hand), and then sees it: the put is refused, not stored with
    /// a check passed on a link already being removed. Without the lock, READ COMMITTED would
    /// let the check read the link as last committed and pass.
    #[test]
    fn a_check_waits_for_a_concurrent_unlink() {
        let pg = server();
        let url = pg.create_database("race").unwrap();
        let meta = open(&url);
        let layer = dg("layer");
        block_on(meta.link_blob("r", &layer, 10)).unwrap();
        let mut other_node = Client::connect(&url, NoTls).unwrap();
        let mut unlink = other_node.transaction().unwrap();
        let removed = unlink
            .execute(
                "DELETE FROM repository_blobs WHERE repository = 'r' AND digest = $1",
                &[&layer.as_str()],
            )
            .unwrap();
        assert_eq!(removed, 1);
        let rec = super::super::index::tests::record("m", None);
        let put = meta.write(WriteOp::PutManifest {
            repo: "r".into(),
            record: rec.clone(),
            refs: vec![(layer.clone(), RefKind::Layer)],
            tag: Some("t".into()),
            fixed_tag: false,
            requires: vec![Required {
                digest: layer.clone(),
                size: 10,
                kind: RefKind::Layer,
            }],
        });
        // Long enough for the put to reach the row the unlink holds.
        std::thread::sleep(std::time::Duration::from_millis(300));
        unlink.commit().unwrap();
        assert_eq!(
            block_on(put).unwrap_err(),
            Error::Conflict(Conflict::Missing {
                digest: layer,
                kind: RefKind::Layer
            })
        );
        assert_eq!(now(meta.manifest("r", &rec.digest)), None);
        assert_eq!(now(meta.tag("r", "t")), None);
    }

    /// The server ends the engine's connection (a restart, a proxy): the next read connects
    /// again and answers; a write in flight fails as retryable (its commit is unknown to the
    /// engine, so it is not run twice), and the next one goes through.
    #[test]
    fn a_lost_connection_is_made_again() {
        let pg = server();
        let url = pg.create_database("reconnect").unwrap();
        let meta = Meta::open_postgres(&url, 1).expect("open postgres");
        block_on(meta.link_blob("r", &dg("a"), 1)).unwrap();
        let end_engine_connection = || {
            let mut c = Client::connect(&url, NoTls).unwrap();
            let ended = c
                .query(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
                     WHERE datname = 'reconnect' AND pid <> pg_backend_pid()",
                    &[],
                )
                .unwrap();
            assert_eq!(ended.len(), 1, "the engine's one connection");
        };
        end_engine_connection();
        assert_eq!(now(meta.blob_in_repo("r", &dg("a"))), Some(1));
        end_engine_connection();
        let err = block_on(meta.link_blob("r", &dg("b"), 2)).unwrap_err();
        assert!(
            matches!(err, Error::Unavailable { retry: true, .. }),
            "{err}"
        );
        block_on(meta.link_blob("r", &dg("b"), 2)).unwrap();
        assert_eq!(now(meta.blob_in_repo("r", &dg("b"))), Some(2));
    }

    /// Lookups queued together (one engine thread, all asked before any is awaited, more than
    /// one wake takes) are answered in batches: each caller gets its own key's answer, hits
    /// and misses mixed, duplicates included.
    #[test]
    fn batched_lookups_get_their_own_answers() {
        let pg = server();
        let url = pg.create_database("batch").unwrap();
        let meta = Meta::open_postgres(&url, 1).expect("open postgres");
        for i in 0..20 {
            let rec = super::super::index::tests::record(&format!("m{i}"), None);
            block_on(meta.put_manifest(
                &format!("r{i}"),
                rec,
                vec![],
                Some(format!("t{i}")),
                vec![],
            ))
            .unwrap();
        }
        let n = 3 * batch::MAX_BATCH / 2;
        // Key i names repository r(i % 30): 20 of them exist, 10 do not.
        let key = |i: usize| (format!("r{}", i % 30), format!("t{}", i % 30), i % 30);
        let mut tagged = Vec::new();
        let mut tags = Vec::new();
        let mut manifests = Vec::new();
        let mut links = Vec::new();
        let mut repos = Vec::new();
        for i in 0..n {
            let (repo, tag, j) = key(i);
            let d = dg(&format!("m{j}"));
            tagged.push(meta.tagged_manifest(&repo, &tag));
            tags.push(meta.tag(&repo, &tag));
            manifests.push(meta.manifest(&repo, &d));
            links.push(meta.blob_in_repo(&repo, &d));
            repos.push(meta.repo_exists(&repo));
        }
        for (i, (((t, tg), m), (l, r))) in tagged
            .into_iter()
            .zip(tags)
            .zip(manifests)
            .zip(links.into_iter().zip(repos))
            .enumerate()
        {
            let (_, _, j) = key(i);
            let want = (j < 20).then(|| super::super::index::tests::record(&format!("m{j}"), None));
            let got = now(t);
            assert_eq!(
                got.as_ref().map(|m| m.digest.clone()),
                want.as_ref().map(|m| m.digest.clone()),
                "tagged {i}"
            );
            assert_eq!(
                got.as_ref().map(|m| m.size),
                want.as_ref().map(|m| m.size),
                "tagged {i}"
            );
            assert_eq!(
                now(tg).map(|t| t.digest),
                want.as_ref().map(|m| m.digest.clone()),
                "tag {i}"
            );
            assert_eq!(
                now(m).map(|m| m.digest.clone()),
                want.as_ref().map(|m| m.digest.clone()),
                "manifest {i}"
            );
            assert_eq!(now(l), want.as_ref().map(|m| m.size), "link {i}");
            assert_eq!(now(r), j < 20, "repo {i}");
        }
    }

    /// Two nodes on one database: whatever one of them wrote (a tag pushed, moved, deleted, a
    /// manifest deleted) the other reads at once, in both directions, many times over. An
    /// engine that kept a copy of tags or manifests without hearing of the other's writes
    /// fails here on the first round.
    #[test]
    fn a_write_on_one_node_is_read_on_the_other_at_once() {
        let pg = server();
        let url = pg.create_database("nodes").unwrap();
        two_nodes(&open(&url), &open(&url));
    }

    /// The same with both nodes behind one Redis: entries of either node never hide the
    /// other's writes, and the cache is used (hits), not bypassed.
    #[test]
    fn a_write_on_one_node_is_read_on_the_other_at_once_behind_redis() {
        let pg = server();
        let redis = redis();
        let url = pg.create_database("nodes_redis").unwrap();
        let open = || Meta::open_postgres_with_redis(&url, 3, &redis.url()).unwrap();
        let (a, b) = (open(), open());
        two_nodes(&a, &b);
        let hits = |m: &Meta| m.stats().cache.expect("a cache").hits;
        assert!(
            hits(&a) > 0 && hits(&b) > 0,
            "{:?} {:?}",
            a.stats(),
            b.stats()
        );
    }

    fn two_nodes(a: &Meta, b: &Meta) {
        for round in 0..100 {
            let (writer, reader) = if round % 2 == 0 { (a, b) } else { (b, a) };
            let rec = super::super::index::tests::record(&format!("n{round}"), None);
            let (d, d_size) = (rec.digest.clone(), rec.size);
            // Warm the reader on the old state first, so that a copy would be there to go stale.
            let before = now(reader.tagged_manifest("r", "latest")).map(|m| m.digest.clone());
            assert_ne!(before, Some(d.clone()));
            if let Some(old) = before {
                assert!(now(reader.manifest("r", &old)).is_some());
            }
            block_on(writer.put_manifest("r", rec, vec![], Some("latest".into()), vec![])).unwrap();
            assert_eq!(
                now(reader.tagged_manifest("r", "latest")).map(|m| m.digest.clone()),
                Some(d.clone()),
                "round {round}: tag move"
            );
            assert_eq!(
                now(reader.tag("r", "latest")).map(|t| t.digest),
                Some(d.clone())
            );
            assert!(now(reader.manifest("r", &d)).is_some());
            assert_eq!(now(reader.blob_in_repo("r", &d)), Some(d_size));
            if round % 3 == 0 {
                assert!(block_on(writer.delete_tag("r", "latest")).unwrap());
                assert_eq!(
                    now(reader.tagged_manifest("r", "latest")),
                    None,
                    "round {round}: tag delete"
                );
                assert_eq!(now(reader.tag("r", "latest")), None);
            } else if round % 3 == 1 {
                assert!(block_on(writer.delete_manifest("r", &d)).unwrap());
                assert_eq!(
                    now(reader.manifest("r", &d)),
                    None,
                    "round {round}: manifest delete"
                );
                assert_eq!(now(reader.tagged_manifest("r", "latest")), None);
            }
        }
    }

    #[test]
    fn the_postgres_engine_passes_the_suite_behind_redis() {
        let pg = server();
        let redis = redis();
        let url = pg.create_database("suite_redis").unwrap();
        suite::run(
            &|_| Meta::open_postgres_with_redis(&url, 3, &redis.url()).unwrap(),
            true,
        );
    }

    fn manifest_entry(redis: &RedisServer, repo: &str, digest: &Digest) -> bool {
        let key = redis_cache::manifest_key(repo, digest.as_str());
        raw(redis, &[b"EXISTS", key.as_bytes()]).unwrap() == Value::Integer(1)
    }

    /// A manifest delete has removed the Redis entry when it returns (and so before anything
    /// is unlinked); a re-put removes it too.
    #[test]
    fn a_delete_removes_the_redis_entry_before_returning() {
        let pg = server();
        let redis = redis();
        let url = pg.create_database("redis_delete").unwrap();
        let meta = Meta::open_postgres_with_redis(&url, 2, &redis.url()).unwrap();
        let rec = super::super::index::tests::record("del", None);
        let d = rec.digest.clone();
        block_on(meta.put_manifest("r", rec.clone(), vec![], Some("t".into()), vec![])).unwrap();
        assert!(!manifest_entry(&redis, "r", &d));
        assert!(now(meta.tagged_manifest("r", "t")).is_some());
        assert!(manifest_entry(&redis, "r", &d), "a read stores the entry");
        block_on(meta.put_manifest("r", rec, vec![], None, vec![])).unwrap();
        assert!(!manifest_entry(&redis, "r", &d), "a re-put removes it");
        assert!(now(meta.manifest("r", &d)).is_some());
        assert!(manifest_entry(&redis, "r", &d));
        assert!(block_on(meta.delete_manifest("r", &d)).unwrap());
        assert!(
            !manifest_entry(&redis, "r", &d),
            "gone when the delete returned"
        );
        assert_eq!(now(meta.manifest("r", &d)), None);
        assert_eq!(now(meta.tagged_manifest("r", "t")), None);
    }

    /// An entry that outlived its row (a node whose Redis was unreachable changed the row) is
    /// never served: the row's stamp differs, so the read goes to the database. Redis stopped
    /// in the middle: every read still right (from the database), the outage counted once;
    /// after a restart of redis-server the cache is used again.
    #[test]
    fn redis_going_away_or_going_stale_never_gives_a_wrong_answer() {
        let pg = server();
        let mut redis = redis();
        let url = pg.create_database("redis_outage").unwrap();
        let meta = Meta::open_postgres_with_redis(&url, 2, &redis.url()).unwrap();
        // A node without the cache: its writes delete no entry.
        let blind = open(&url);
        let stats = |m: &Meta| m.stats().cache.expect("a cache");
        let mut rec = super::super::index::tests::record("s", None);
        let d = rec.digest.clone();
        block_on(blind.link_blob("r", &dg("layer"), 7)).unwrap();
        block_on(blind.put_manifest("r", rec.clone(), vec![], Some("t".into()), vec![])).unwrap();
        for _ in 0..2 {
            assert_eq!(
                now(meta.tagged_manifest("r", "t")).unwrap().media_type,
                rec.media_type
            );
            assert_eq!(now(meta.blob_in_repo("r", &dg("layer"))), Some(7));
        }
        let warm = stats(&meta);
        assert!(warm.hits >= 2, "{warm:?}");
        // The row changes behind the cache's back.
        rec.media_type = "application/vnd.docker.distribution.manifest.v2+json".into();
        block_on(blind.put_manifest("r", rec.clone(), vec![], Some("t".into()), vec![])).unwrap();
        assert!(
            manifest_entry(&redis, "r", &d),
            "the stale entry is still there"
        );
        assert_eq!(
            now(meta.tagged_manifest("r", "t")).unwrap().media_type,
            rec.media_type
        );
        assert_eq!(
            now(meta.manifest("r", &d)).unwrap().media_type,
            rec.media_type
        );
        assert!(block_on(blind.unlink_blob("r", &dg("layer"))).unwrap());
        assert_eq!(
            now(meta.blob_in_repo("r", &dg("layer"))),
            None,
            "the link is the database's"
        );

        redis.stop();
        let other = super::super::index::tests::record("s2", None);
        for round in 0..3 {
            assert_eq!(
                now(meta.tagged_manifest("r", "t")).unwrap().digest,
                d,
                "round {round}"
            );
            assert_eq!(
                now(meta.manifest("r", &d)).unwrap().media_type,
                rec.media_type
            );
            assert_eq!(now(meta.blob_in_repo("r", &dg("layer"))), None);
        }
        block_on(meta.put_manifest("r", other.clone(), vec![], Some("t".into()), vec![])).unwrap();
        assert_eq!(
            now(meta.tagged_manifest("r", "t")).unwrap().digest,
            other.digest
        );
        assert!(block_on(meta.delete_manifest("r", &other.digest)).unwrap());
        assert_eq!(now(meta.tagged_manifest("r", "t")), None);
        let down = stats(&meta);
        assert_eq!(down.outages, 1, "{down:?}");
        assert!(down.errors > warm.errors, "{down:?}");

        redis.restart().unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(std::time::Duration::from_millis(1_200));
        block_on(meta.put_manifest("r", other.clone(), vec![], Some("t".into()), vec![])).unwrap();
        // Each engine thread tries Redis again at most once a second: lookups until one of
        // them is answered from the cache (bounded; a loaded machine is slow to get there).
        let mut back = stats(&meta);
        for _ in 0..200 {
            assert_eq!(
                now(meta.tagged_manifest("r", "t")).unwrap().digest,
                other.digest
            );
            back = stats(&meta);
            if back.hits > down.hits {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(back.hits > down.hits, "the cache is used again: {back:?}");
        assert_eq!(back.outages, 1);
    }

    /// A rough figure, not a gate (run with `--ignored --nocapture`): tag lookups per second
    /// from 8 caller threads, by number of engine threads, against SQLite's in-memory reads.
    #[test]
    #[ignore]
    fn tag_lookup_rate() {
        let pg = server();
        let url = pg.create_database("rate").unwrap();
        let rate = |meta: &Meta| {
            block_on(meta.put_manifest(
                "r",
                super::super::index::tests::record("m", None),
                vec![],
                Some("t".into()),
                vec![],
            ))
            .unwrap();
            let per_thread = 2_000;
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..8 {
                    s.spawn(|| {
                        for _ in 0..per_thread {
                            assert!(now(meta.tag("r", "t")).is_some());
                        }
                    });
                }
            });
            f64::from(8 * per_thread) / start.elapsed().as_secs_f64()
        };
        for threads in [1, 2, 4, 8] {
            let meta = Meta::open_postgres(&url, threads).unwrap();
            println!(
                "postgres, {threads} engine threads: {:.0} lookups/s",
                rate(&meta)
            );
        }
        let dir = suite::TempDir::new("rate");
        let sqlite = Meta::open_sqlite(&dir.0.join("meta.db")).unwrap();
        println!("sqlite (index in memory): {:.0} lookups/s", rate(&sqlite));
    }

    #[test]
    fn failures_are_classified_by_sqlstate() {
        let t = || "x".to_string();
        assert_eq!(classify(None, t()), Error::unavailable("x"));
        assert_eq!(
            classify(Some(&SqlState::T_R_DEADLOCK_DETECTED), t()),
            Error::unavailable("x")
        );
        assert_eq!(
            classify(Some(&SqlState::DISK_FULL), t()),
            Error::Full("x".into())
        );
        assert_eq!(
            classify(Some(&SqlState::INSUFFICIENT_PRIVILEGE), t()),
            Error::Unavailable {
                retry: false,
                cause: "x".into()
            }
        );
        assert_eq!(
            classify(Some(&SqlState::DATA_CORRUPTED), t()),
            Error::Corrupt("x".into())
        );
        assert_eq!(
            classify(Some(&SqlState::SYNTAX_ERROR), t()),
            Error::Io("x".into())
        );
    }

    /// A value beyond PostgreSQL's BIGINT fails that write alone, as invalid, and the engine
    /// goes on.
    #[test]
    fn an_oversized_value_is_invalid_and_changes_nothing() {
        let pg = server();
        let url = pg.create_database("invalid").unwrap();
        let meta = open(&url);
        let err = block_on(meta.link_blob("r", &dg("huge"), u64::MAX)).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        assert!(!now(meta.repo_exists("r")), "rolled back");
        block_on(meta.link_blob("r", &dg("ok"), 1)).unwrap();
        assert_eq!(now(meta.blob_in_repo("r", &dg("ok"))), Some(1));
    }
}
