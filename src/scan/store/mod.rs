//! Where scanning keeps what lasts: imported vulnerability data (versioned, replaced
//! atomically), each manifest's scan (its state, packages and findings), and the outbox of
//! webhook deliveries. One logic over two databases ([`sql`]): `<root>/scan.db` (SQLite,
//! [`lite`]) beside the metadata on a single node, and the metadata's PostgreSQL
//! ([`pg`]) on a fleet, so every node reads one database and one set of results.
//!
//! - Vulnerability data: an import writes a new version's rows while scans keep reading the
//!   current one, then makes it current in one transaction. The version before stays until
//!   the next import, so a scan that started on it finishes on it: no scan sees half a
//!   database.
//! - Scans: one row per manifest digest (content-addressed: the same in every repository),
//!   `pending` -> `running` -> `completed` | `failed`. A push or a manual request makes it
//!   pending unless it is pending, running, or completed against the current data already
//!   (the skip). A `running` row older than the stale time belongs to a scanner that died and
//!   is taken again, so a kill mid-scan scans again after the restart.
//! - Outbox: a webhook delivery is written in the transaction that completes the scan that
//!   found something new, and removed once delivered.

pub mod lite;
pub mod pg;
pub mod sql;

use sql::{first_int, Database, Sql, SqlError, SqlResult, Value};
use std::path::Path;

/// Created when missing, on either database (the types are ones both read alike).
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS vuln_imports (
        version    BIGINT PRIMARY KEY,
        source     TEXT NOT NULL,
        started    BIGINT NOT NULL,
        finished   BIGINT,
        is_current BIGINT NOT NULL DEFAULT 0,
        records    BIGINT NOT NULL DEFAULT 0,
        ecosystems TEXT,
        newest     BIGINT
    )",
    "CREATE TABLE IF NOT EXISTS vuln_records (
        version  BIGINT NOT NULL,
        id       TEXT NOT NULL,
        modified BIGINT NOT NULL,
        body     TEXT NOT NULL,
        PRIMARY KEY (version, id)
    )",
    "CREATE TABLE IF NOT EXISTS vuln_packages (
        version   BIGINT NOT NULL,
        ecosystem TEXT NOT NULL,
        name      TEXT NOT NULL,
        id        TEXT NOT NULL,
        PRIMARY KEY (version, ecosystem, name, id)
    )",
    "CREATE TABLE IF NOT EXISTS scans (
        digest       TEXT PRIMARY KEY,
        repository   TEXT NOT NULL,
        status       TEXT NOT NULL,
        requested    BIGINT NOT NULL,
        started      BIGINT,
        finished     BIGINT,
        attempts     BIGINT NOT NULL DEFAULT 0,
        owner        TEXT,
        data_version BIGINT,
        error        TEXT,
        critical     BIGINT NOT NULL DEFAULT 0,
        high         BIGINT NOT NULL DEFAULT 0,
        medium       BIGINT NOT NULL DEFAULT 0,
        low          BIGINT NOT NULL DEFAULT 0,
        unknown      BIGINT NOT NULL DEFAULT 0,
        result       TEXT
    )",
    "CREATE INDEX IF NOT EXISTS scans_status ON scans (status, requested)",
    "CREATE TABLE IF NOT EXISTS scan_packages (
        digest    TEXT NOT NULL,
        ecosystem TEXT NOT NULL,
        name      TEXT NOT NULL,
        PRIMARY KEY (digest, ecosystem, name)
    )",
    "CREATE INDEX IF NOT EXISTS scan_packages_name ON scan_packages (ecosystem, name)",
    "CREATE TABLE IF NOT EXISTS scan_outbox (
        id       TEXT PRIMARY KEY,
        created  BIGINT NOT NULL,
        body     TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_at  BIGINT NOT NULL,
        error    TEXT
    )",
];

/// One OSV record as stored: its JSON, and the `(ecosystem, name)` pairs it names (the
/// ecosystem without its release suffix: `Debian`, `PyPI`), by which scans look it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub id: String,
    /// Unix seconds.
    pub modified: i64,
    pub json: String,
    pub keys: Vec<(String, String)>,
}

/// What `ringyard vulndb status` shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DbStatus {
    pub version: i64,
    pub source: String,
    /// Unix milliseconds.
    pub imported: i64,
    pub records: i64,
    /// Records per ecosystem (base name), in name order.
    pub ecosystems: Vec<(String, i64)>,
    /// Unix seconds of the newest record's `modified`.
    pub newest: Option<i64>,
}

/// Where a manifest's scan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Running,
    Completed,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "running" => Status::Running,
            "completed" => Status::Completed,
            "failed" => Status::Failed,
            _ => return None,
        })
    }
}

/// Findings by severity, worst first: critical, high, medium, low, unknown.
pub type Counts = [i64; 5];

/// A manifest's scan as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRow {
    pub digest: String,
    pub repository: String,
    pub status: Status,
    /// Unix milliseconds.
    pub requested: i64,
    pub started: Option<i64>,
    pub finished: Option<i64>,
    pub attempts: i64,
    /// The vulnerability data version the result was computed against.
    pub data_version: Option<i64>,
    pub error: Option<String>,
    pub counts: Counts,
    /// The scanner's result document (JSON), when completed.
    pub result: Option<String>,
}

/// A stored scan's identity short of its result document (see [`ScanStore::stamp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The row, its `result` left out.
    row: ScanRow,
    /// The result's length as the database counts it.
    result_len: Option<i64>,
}

/// What a request for a scan did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Queued,
    /// Pending or running already.
    InProgress,
    /// Completed against the current vulnerability data: not scanned again.
    UpToDate,
}

/// A scan a scanner took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub digest: String,
    pub repository: String,
    pub attempts: i64,
}

/// A finished scan, to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub data_version: i64,
    pub counts: Counts,
    pub result: String,
    /// `(ecosystem, name)` of every package found: what a later import's rescan looks up.
    pub packages: Vec<(String, String)>,
    /// A webhook body to deliver (written in the same transaction, one row per endpoint),
    /// when the scan found something the previous one did not. A row's id is the digest,
    /// the data version and the endpoint: two nodes that found the same new findings (a
    /// rescan both ran after an import) write one delivery.
    pub notify: Option<String>,
    /// How many webhook endpoints there are: row `#i` is endpoint `i`'s delivery.
    pub endpoints: usize,
}

/// A webhook delivery waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub body: String,
    pub attempts: i64,
}

/// Times a scan may be taken without finishing before it fails (see [`ScanStore::claim`]).
pub const MAX_ATTEMPTS: i64 = 3;

/// The scan store's failures: the database's, or a row it cannot read.
pub type Result<T> = std::result::Result<T, SqlError>;

pub struct ScanStore {
    db: Box<dyn Database>,
}

const SCAN_COLUMNS: &str = "digest, repository, status, requested, started, finished, attempts,
    data_version, error, critical, high, medium, low, unknown, result";

fn scan_row(cols: &[Value]) -> SqlResult<ScanRow> {
    let bad = || SqlError("scan database: a scans row cannot be read".into());
    let text = |i: usize| cols.get(i).and_then(Value::text).map(str::to_string);
    let int = |i: usize| cols.get(i).and_then(Value::int);
    let count = |i: usize| int(i).unwrap_or(0);
    Ok(ScanRow {
        digest: text(0).ok_or_else(bad)?,
        repository: text(1).ok_or_else(bad)?,
        status: text(2).as_deref().and_then(Status::parse).ok_or_else(bad)?,
        requested: int(3).ok_or_else(bad)?,
        started: int(4),
        finished: int(5),
        attempts: count(6),
        data_version: int(7),
        error: text(8),
        counts: [count(9), count(10), count(11), count(12), count(13)],
        result: text(14),
    })
}

/// A row read with `length(result)` after its columns, and its stamp.
fn stamped(cols: &[Value]) -> SqlResult<(ScanRow, Stamp)> {
    let row = scan_row(cols)?;
    let stamp = Stamp {
        row: ScanRow {
            result: None,
            ..row.clone()
        },
        result_len: cols.get(15).and_then(Value::int),
    };
    Ok((row, stamp))
}

impl ScanStore {
    /// `<root>/scan.db`, created when missing.
    pub fn open_sqlite(path: &Path) -> Result<ScanStore> {
        ScanStore::new(Box::new(lite::Lite::open(path)?))
    }

    /// The tables in the PostgreSQL database at `url`, created when missing.
    pub fn open_postgres(url: &str) -> Result<ScanStore> {
        ScanStore::new(Box::new(pg::Pg::open(url)?))
    }

    fn new(db: Box<dyn Database>) -> Result<ScanStore> {
        let store = ScanStore { db };
        store.tx(|sql| {
            for stmt in SCHEMA {
                sql.execute(stmt, &[])?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs `work` in one transaction and hands back what it produced.
    fn tx<T>(&self, mut work: impl FnMut(&mut dyn Sql) -> SqlResult<T>) -> Result<T> {
        let mut out = None;
        self.db.transaction(&mut |sql| {
            out = Some(work(sql)?);
            Ok(())
        })?;
        out.ok_or_else(|| SqlError("scan database: transaction produced nothing".into()))
    }

    // ----- vulnerability data -----

    /// Starts an import from `source` (shown by status): a new version, not current yet.
    /// Versions a crashed import left unfinished are dropped first.
    pub fn begin_import(&self, source: &str, now: i64) -> Result<i64> {
        self.tx(|sql| {
            let abandoned = sql.query(
                "SELECT version FROM vuln_imports WHERE finished IS NULL",
                &[],
            )?;
            for row in abandoned {
                if let Some(v) = row.first().and_then(Value::int) {
                    drop_version(sql, v)?;
                }
            }
            let next = first_int(&sql.query(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM vuln_imports",
                &[],
            )?)
            .unwrap_or(1);
            sql.execute(
                "INSERT INTO vuln_imports (version, source, started) VALUES ($1, $2, $3)",
                &[next.into(), source.into(), now.into()],
            )?;
            Ok(next)
        })
    }

    /// Adds records to an import under way (a record id seen twice keeps the newer).
    pub fn import_records(&self, version: i64, records: &[StoredRecord]) -> Result<()> {
        self.tx(|sql| {
            for r in records {
                let held = sql.query(
                    "SELECT modified FROM vuln_records WHERE version = $1 AND id = $2",
                    &[version.into(), r.id.as_str().into()],
                )?;
                match first_int(&held) {
                    Some(m) if m > r.modified => continue,
                    Some(_) => {
                        sql.execute(
                            "DELETE FROM vuln_records WHERE version = $1 AND id = $2",
                            &[version.into(), r.id.as_str().into()],
                        )?;
                        sql.execute(
                            "DELETE FROM vuln_packages WHERE version = $1 AND id = $2",
                            &[version.into(), r.id.as_str().into()],
                        )?;
                    }
                    None => {}
                }
                sql.execute(
                    "INSERT INTO vuln_records (version, id, modified, body)
                     VALUES ($1, $2, $3, $4)",
                    &[
                        version.into(),
                        r.id.as_str().into(),
                        r.modified.into(),
                        r.json.as_str().into(),
                    ],
                )?;
                for (eco, name) in &r.keys {
                    sql.execute(
                        "INSERT INTO vuln_packages (version, ecosystem, name, id)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[
                            version.into(),
                            eco.as_str().into(),
                            name.as_str().into(),
                            r.id.as_str().into(),
                        ],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Makes `version` the current data in one transaction, keeping the one it replaces for
    /// scans still reading it and dropping anything older.
    pub fn finish_import(&self, version: i64, now: i64) -> Result<DbStatus> {
        self.tx(|sql| {
            let records = first_int(&sql.query(
                "SELECT COUNT(*) FROM vuln_records WHERE version = $1",
                &[version.into()],
            )?)
            .unwrap_or(0);
            let newest = first_int(&sql.query(
                "SELECT MAX(modified) FROM vuln_records WHERE version = $1",
                &[version.into()],
            )?);
            let per = sql.query(
                "SELECT ecosystem, COUNT(DISTINCT id) FROM vuln_packages WHERE version = $1
                 GROUP BY ecosystem ORDER BY ecosystem",
                &[version.into()],
            )?;
            let ecosystems: Vec<(String, i64)> = per
                .iter()
                .filter_map(|r| Some((r.first()?.text()?.to_string(), r.get(1)?.int()?)))
                .collect();
            let eco_json = serde_json::to_string(&ecosystems)
                .map_err(|e| SqlError(format!("scan database: {e}")))?;
            let changed = sql.execute(
                "UPDATE vuln_imports SET finished = $2, records = $3, ecosystems = $4,
                    newest = $5
                 WHERE version = $1 AND finished IS NULL",
                &[
                    version.into(),
                    now.into(),
                    records.into(),
                    eco_json.into(),
                    newest.into(),
                ],
            )?;
            if changed == 0 {
                return Err(SqlError(format!(
                    "import {version} was dropped while it ran (another import started): \
                     run it again"
                )));
            }
            let previous = first_int(
                &sql.query("SELECT version FROM vuln_imports WHERE is_current = 1", &[])?,
            );
            let old = sql.query(
                "SELECT version FROM vuln_imports
                 WHERE version <> $1 AND version <> $2 AND finished <> -1",
                &[version.into(), previous.unwrap_or(-1).into()],
            )?;
            for row in old {
                if let Some(v) = row.first().and_then(Value::int) {
                    drop_version(sql, v)?;
                }
            }
            sql.execute("UPDATE vuln_imports SET is_current = 0", &[])?;
            sql.execute(
                "UPDATE vuln_imports SET is_current = 1 WHERE version = $1",
                &[version.into()],
            )?;
            read_status(sql, version)
        })
    }

    /// The current data, if any was imported.
    pub fn status(&self) -> Result<Option<DbStatus>> {
        self.tx(|sql| match current(sql)? {
            Some(v) => read_status(sql, v).map(Some),
            None => Ok(None),
        })
    }

    /// The current data's version.
    pub fn current_version(&self) -> Result<Option<i64>> {
        self.tx(current)
    }

    /// The JSON of every record of `version` naming one of `keys` (each record once).
    pub fn records_for(&self, version: i64, keys: &[(String, String)]) -> Result<Vec<String>> {
        self.tx(|sql| {
            let mut ids = std::collections::BTreeSet::new();
            for (eco, name) in keys {
                for row in sql.query(
                    "SELECT id FROM vuln_packages
                     WHERE version = $1 AND ecosystem = $2 AND name = $3",
                    &[version.into(), eco.as_str().into(), name.as_str().into()],
                )? {
                    if let Some(id) = row.first().and_then(Value::text) {
                        ids.insert(id.to_string());
                    }
                }
            }
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let rows = sql.query(
                    "SELECT body FROM vuln_records WHERE version = $1 AND id = $2",
                    &[version.into(), id.into()],
                )?;
                if let Some(body) = rows.first().and_then(|r| r.first()?.text()) {
                    out.push(body.to_string());
                }
            }
            Ok(out)
        })
    }

    // ----- scans -----

    /// Asks for a scan of `digest` (found in `repository`): queued unless one is pending or
    /// running, or (unless `force`) it completed against the current data.
    pub fn request(
        &self,
        digest: &str,
        repository: &str,
        force: bool,
        now: i64,
    ) -> Result<Requested> {
        self.tx(|sql| {
            let cur = current(sql)?;
            let row = sql.query(
                "SELECT status, data_version FROM scans WHERE digest = $1",
                &[digest.into()],
            )?;
            let (status, data) = match row.first() {
                Some(r) => (
                    r.first().and_then(Value::text).and_then(Status::parse),
                    r.get(1).and_then(Value::int),
                ),
                None => (None, None),
            };
            match status {
                Some(Status::Pending | Status::Running) => return Ok(Requested::InProgress),
                Some(Status::Completed) if !force && data.is_some() && data == cur => {
                    return Ok(Requested::UpToDate)
                }
                _ => {}
            }
            sql.execute(
                "INSERT INTO scans (digest, repository, status, requested, attempts)
                 VALUES ($1, $2, 'pending', $3, 0)
                 ON CONFLICT (digest) DO UPDATE SET status = 'pending',
                    requested = excluded.requested, repository = excluded.repository,
                    attempts = 0",
                &[digest.into(), repository.into(), now.into()],
            )?;
            Ok(Requested::Queued)
        })
    }

    /// Queues a scan of each `(digest, repository)` of `wanted` that has no row (a backfill
    /// of images stored before scanning: a result already there, current or not, is left to
    /// the rescan). How many were queued.
    pub fn request_missing(&self, wanted: &[(String, String)], now: i64) -> Result<u64> {
        self.tx(|sql| {
            let mut queued = 0;
            for (digest, repository) in wanted {
                queued += sql.execute(
                    "INSERT INTO scans (digest, repository, status, requested, attempts)
                     VALUES ($1, $2, 'pending', $3, 0) ON CONFLICT (digest) DO NOTHING",
                    &[
                        digest.as_str().into(),
                        repository.as_str().into(),
                        now.into(),
                    ],
                )?;
            }
            Ok(queued)
        })
    }

    /// Digests that have a row, in order, strictly after `last`, at most `limit`.
    pub fn digests_after(&self, last: &str, limit: i64) -> Result<Vec<String>> {
        self.tx(|sql| {
            let rows = sql.query(
                "SELECT digest FROM scans WHERE digest > $1 ORDER BY digest LIMIT $2",
                &[last.into(), limit.into()],
            )?;
            Ok(rows
                .iter()
                .filter_map(|r| r.first().and_then(Value::text).map(str::to_string))
                .collect())
        })
    }

    /// Drops the scans of `digests` and their package lists (images no longer stored).
    /// Their webhook deliveries stay: what was found was found.
    pub fn forget(&self, digests: &[String]) -> Result<()> {
        self.tx(|sql| {
            for d in digests {
                sql.execute(
                    "DELETE FROM scan_packages WHERE digest = $1",
                    &[d.as_str().into()],
                )?;
                sql.execute("DELETE FROM scans WHERE digest = $1", &[d.as_str().into()])?;
            }
            Ok(())
        })
    }

    /// Takes the oldest pending scan, or a running one whose scanner has not been heard of
    /// since `stale_before` (it died: a live scanner's [`ScanStore::heartbeat`] keeps its
    /// rows fresh), marking it running for `owner` now. A scan that was taken
    /// [`MAX_ATTEMPTS`] times and never finished (its image stops the scanner) fails instead.
    pub fn claim(&self, owner: &str, now: i64, stale_before: i64) -> Result<Option<Claimed>> {
        self.tx(|sql| loop {
            let rows = sql.query(
                "SELECT digest, repository, attempts, status FROM scans
                 WHERE status = 'pending' OR (status = 'running' AND started < $1)
                 ORDER BY requested LIMIT 1",
                &[stale_before.into()],
            )?;
            let Some(r) = rows.first() else {
                return Ok(None);
            };
            let (Some(digest), Some(repository)) = (
                r.first().and_then(Value::text),
                r.get(1).and_then(Value::text),
            ) else {
                return Ok(None);
            };
            let attempts = r.get(2).and_then(Value::int).unwrap_or(0) + 1;
            if attempts > MAX_ATTEMPTS && r.get(3).and_then(Value::text) == Some("running") {
                sql.execute(
                    "UPDATE scans SET status = 'failed', finished = $2, error = $3
                     WHERE digest = $1",
                    &[
                        digest.into(),
                        now.into(),
                        format!(
                            "the scanner stopped {MAX_ATTEMPTS} times while scanning this \
                             image (killed, or out of memory); not tried again until asked"
                        )
                        .into(),
                    ],
                )?;
                continue;
            }
            // Only if still as read: another node may have taken it meanwhile.
            let took = sql.execute(
                "UPDATE scans SET status = 'running', started = $2, attempts = $3, owner = $5
                 WHERE digest = $1 AND (status = 'pending' OR (status = 'running' AND started < $4))",
                &[
                    digest.into(),
                    now.into(),
                    attempts.into(),
                    stale_before.into(),
                    owner.into(),
                ],
            )?;
            return Ok((took == 1).then(|| Claimed {
                digest: digest.to_string(),
                repository: repository.to_string(),
                attempts,
            }));
        })
    }

    /// A live scanner's rows stay its own: their time moves to `now`.
    pub fn heartbeat(&self, owner: &str, now: i64) -> Result<()> {
        self.tx(|sql| {
            sql.execute(
                "UPDATE scans SET started = $2 WHERE status = 'running' AND owner = $1",
                &[owner.into(), now.into()],
            )?;
            Ok(())
        })
    }

    /// Stores a finished scan (and its webhook, if any) in one transaction.
    pub fn complete(&self, digest: &str, done: &Completed, now: i64) -> Result<()> {
        self.tx(|sql| {
            let [c, h, m, l, u] = done.counts;
            sql.execute(
                "UPDATE scans SET status = 'completed', finished = $2, data_version = $3,
                    error = NULL, critical = $4, high = $5, medium = $6, low = $7,
                    unknown = $8, result = $9
                 WHERE digest = $1",
                &[
                    digest.into(),
                    now.into(),
                    done.data_version.into(),
                    c.into(),
                    h.into(),
                    m.into(),
                    l.into(),
                    u.into(),
                    done.result.as_str().into(),
                ],
            )?;
            sql.execute(
                "DELETE FROM scan_packages WHERE digest = $1",
                &[digest.into()],
            )?;
            for (eco, name) in &done.packages {
                sql.execute(
                    "INSERT INTO scan_packages (digest, ecosystem, name) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[digest.into(), eco.as_str().into(), name.as_str().into()],
                )?;
            }
            for i in 0..done.endpoints {
                let Some(body) = &done.notify else { break };
                sql.execute(
                    "INSERT INTO scan_outbox (id, created, body, next_at) VALUES ($1, $2, $3, $2)
                     ON CONFLICT DO NOTHING",
                    &[
                        format!("{digest}@v{}#{i}", done.data_version).into(),
                        now.into(),
                        body.as_str().into(),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Records why a scan failed.
    pub fn fail(&self, digest: &str, reason: &str, now: i64) -> Result<()> {
        self.tx(|sql| {
            sql.execute(
                "UPDATE scans SET status = 'failed', finished = $2, error = $3 WHERE digest = $1",
                &[digest.into(), now.into(), reason.into()],
            )?;
            Ok(())
        })
    }

    /// What identifies `digest`'s stored scan short of its result document: every column
    /// but the result, and the result's length. A pull's cached verdict stays good while
    /// this does not change, and reading it costs no transfer or parse of a result that may
    /// be megabytes.
    pub fn stamp(&self, digest: &str) -> Result<Option<Stamp>> {
        Ok(self.read_stamped(digest, "NULL")?.map(|(_, stamp)| stamp))
    }

    /// The stored scan of `digest` and its stamp, from one read.
    pub fn get_stamped(&self, digest: &str) -> Result<Option<(ScanRow, Stamp)>> {
        self.read_stamped(digest, "result")
    }

    /// The row with `result` read as `result_column` (`NULL` leaves it behind), and its stamp.
    fn read_stamped(&self, digest: &str, result_column: &str) -> Result<Option<(ScanRow, Stamp)>> {
        let columns = SCAN_COLUMNS.replace("result", result_column);
        self.tx(|sql| {
            let rows = sql.query(
                &format!("SELECT {columns}, length(result) FROM scans WHERE digest = $1"),
                &[digest.into()],
            )?;
            rows.first().map(|cols| stamped(cols)).transpose()
        })
    }

    pub fn get(&self, digest: &str) -> Result<Option<ScanRow>> {
        self.tx(|sql| {
            let rows = sql.query(
                &format!("SELECT {SCAN_COLUMNS} FROM scans WHERE digest = $1"),
                &[digest.into()],
            )?;
            rows.first().map(|r| scan_row(r)).transpose()
        })
    }

    /// Completed scans computed against other data than `version`: what a rescan after an
    /// import re-evaluates (from their stored packages).
    pub fn outdated(&self, version: i64, limit: i64) -> Result<Vec<ScanRow>> {
        self.tx(|sql| {
            let rows = sql.query(
                &format!(
                    "SELECT {SCAN_COLUMNS} FROM scans
                     WHERE status = 'completed' AND (data_version IS NULL OR data_version <> $1)
                     ORDER BY digest LIMIT $2"
                ),
                &[version.into(), limit.into()],
            )?;
            rows.iter().map(|r| scan_row(r)).collect()
        })
    }

    /// Of `digests`, those with a package some record of `version` names, or with findings
    /// (`CROSS JOIN`: SQLite then walks the image's few packages and looks each up in the
    /// version's index, instead of walking the version's every package per image, which took
    /// 36 ms an image at 100,000 records)
    /// (which the new data may withdraw): the ones a rescan must evaluate; the others only
    /// move to the new version.
    pub fn touched_by(&self, version: i64, digests: &[String]) -> Result<Vec<String>> {
        self.tx(|sql| {
            let mut out = Vec::new();
            for d in digests {
                let rows = sql.query(
                    "SELECT 1 FROM scans s WHERE s.digest = $1 AND (
                        s.critical + s.high + s.medium + s.low + s.unknown > 0
                        OR EXISTS (SELECT 1 FROM scan_packages p CROSS JOIN vuln_packages v
                            WHERE p.digest = s.digest AND v.version = $2
                              AND v.ecosystem = p.ecosystem AND v.name = p.name))",
                    &[d.as_str().into(), version.into()],
                )?;
                if !rows.is_empty() {
                    out.push(d.clone());
                }
            }
            Ok(out)
        })
    }

    /// Moves completed scans whose findings cannot change to `version`.
    pub fn move_to(&self, version: i64, digests: &[String]) -> Result<()> {
        self.tx(|sql| {
            for d in digests {
                sql.execute(
                    "UPDATE scans SET data_version = $2 WHERE digest = $1 AND status = 'completed'",
                    &[d.as_str().into(), version.into()],
                )?;
            }
            Ok(())
        })
    }

    // ----- outbox -----

    /// Deliveries due at `now`, oldest first.
    pub fn due(&self, now: i64, limit: i64) -> Result<Vec<Delivery>> {
        self.tx(|sql| {
            let rows = sql.query(
                "SELECT id, body, attempts FROM scan_outbox WHERE next_at <= $1
                 ORDER BY created, id LIMIT $2",
                &[now.into(), limit.into()],
            )?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    Some(Delivery {
                        id: r.first()?.text()?.to_string(),
                        body: r.get(1)?.text()?.to_string(),
                        attempts: r.get(2)?.int()?,
                    })
                })
                .collect())
        })
    }

    pub fn delivered(&self, id: &str) -> Result<()> {
        self.tx(|sql| {
            sql.execute("DELETE FROM scan_outbox WHERE id = $1", &[id.into()])?;
            Ok(())
        })
    }

    /// A failed attempt: tried again at `next_at`, or dropped (`next_at` None) after the
    /// last retry.
    pub fn retry(&self, id: &str, next_at: Option<i64>, error: &str) -> Result<()> {
        self.tx(|sql| {
            match next_at {
                Some(at) => sql.execute(
                    "UPDATE scan_outbox SET attempts = attempts + 1, next_at = $2, error = $3
                     WHERE id = $1",
                    &[id.into(), at.into(), error.into()],
                )?,
                None => sql.execute("DELETE FROM scan_outbox WHERE id = $1", &[id.into()])?,
            };
            Ok(())
        })
    }
}

fn current(sql: &mut dyn Sql) -> SqlResult<Option<i64>> {
    Ok(first_int(&sql.query(
        "SELECT version FROM vuln_imports WHERE is_current = 1",
        &[],
    )?))
}

/// Drops a version's rows. Its `vuln_imports` row stays, marked dropped (`finished` -1,
/// never current), so version numbers are never given out twice and an import dropped
/// while it ran cannot finish.
fn drop_version(sql: &mut dyn Sql, version: i64) -> SqlResult<()> {
    for table in ["vuln_packages", "vuln_records"] {
        sql.execute(
            &format!("DELETE FROM {table} WHERE version = $1"),
            &[version.into()],
        )?;
    }
    sql.execute(
        "UPDATE vuln_imports SET finished = -1, is_current = 0 WHERE version = $1",
        &[version.into()],
    )?;
    Ok(())
}

fn read_status(sql: &mut dyn Sql, version: i64) -> SqlResult<DbStatus> {
    let rows = sql.query(
        "SELECT source, finished, records, ecosystems, newest FROM vuln_imports
         WHERE version = $1",
        &[version.into()],
    )?;
    let r = rows
        .first()
        .ok_or_else(|| SqlError(format!("scan database: import {version} is gone")))?;
    let ecosystems = r
        .get(3)
        .and_then(Value::text)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    Ok(DbStatus {
        version,
        source: r.first().and_then(Value::text).unwrap_or("").to_string(),
        imported: r.get(1).and_then(Value::int).unwrap_or(0),
        records: r.get(2).and_then(Value::int).unwrap_or(0),
        ecosystems,
        newest: r.get(4).and_then(Value::int),
    })
}

#[cfg(test)]
mod tests;
