//! `ringyard vulndb import|status`: OSV records from a directory or an `all.zip` into the
//! scan store as a new version, made current at the end in one transaction (the registry's
//! scan job notices the new version and re-evaluates stored results).

use super::osv::import::{self, Progress, Summary};
use super::osv::matching::{ecosystem_base, normalize_name};
use super::osv::record::Record;
use super::store::{DbStatus, ScanStore, StoredRecord};
use std::path::{Path, PathBuf};

/// Records written per transaction.
const BATCH: usize = 1_000;

/// The scan store a registry with this configuration uses: the metadata's PostgreSQL, else
/// `<root>/scan.db`.
pub fn open_store(database_url: Option<&str>, root: &Path) -> Result<ScanStore, String> {
    match database_url {
        Some(url) => Ok(ScanStore::open_postgres(url)?),
        None => {
            std::fs::create_dir_all(root)
                .map_err(|e| format!("data directory {}: {e}", root.display()))?;
            Ok(ScanStore::open_sqlite(&store_path(root))?)
        }
    }
}

pub fn store_path(root: &Path) -> PathBuf {
    root.join("scan.db")
}

/// The keys a scan looks a record up by: each affected package's ecosystem without its
/// release and its name as the ecosystem normalizes it.
pub fn keys(record: &Record) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = record
        .affected
        .iter()
        .map(|a| {
            let eco = &a.package.ecosystem;
            (
                ecosystem_base(eco).to_string(),
                normalize_name(eco, &a.package.name).into_owned(),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// A record as stored; None for a withdrawn one (it matches nothing).
pub fn stored(record: &Record) -> Option<StoredRecord> {
    if record.withdrawn.is_some() {
        return None;
    }
    Some(StoredRecord {
        id: record.id.clone(),
        modified: record.modified,
        json: serde_json::to_string(record).ok()?,
        keys: keys(record),
    })
}

/// Imports `path` as the new current data. `progress` hears after each file.
pub fn import_path(
    store: &ScanStore,
    path: &Path,
    now: i64,
    mut progress: impl FnMut(Progress),
) -> Result<(Summary, DbStatus), String> {
    let source = path
        .canonicalize()
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string();
    let version = store.begin_import(&source, now)?;
    let mut batch: Vec<StoredRecord> = Vec::with_capacity(BATCH);
    let summary = import::import(
        path,
        |record| {
            if let Some(r) = stored(&record) {
                batch.push(r);
            }
            if batch.len() >= BATCH {
                store.import_records(version, &batch)?;
                batch.clear();
            }
            Ok(())
        },
        &mut progress,
    )
    .map_err(|e: import::ImportError<super::store::sql::SqlError>| e.to_string())?;
    store.import_records(version, &batch)?;
    if summary.records == 0 {
        return Err(format!(
            "no OSV records in {source} ({} file(s), {} not records): nothing imported, the \
             current data stays",
            summary.files, summary.failed
        ));
    }
    let status = store.finish_import(version, crate::meta::now_millis())?;
    Ok((summary, status))
}

/// `vulndb status`'s lines. Pure.
pub fn describe(status: Option<&DbStatus>) -> String {
    let Some(s) = status else {
        return "no vulnerability data imported (ringyard vulndb import PATH)".into();
    };
    let mut out = format!(
        "vulnerability data version {}: {} records, imported {} from {}\n",
        s.version,
        s.records,
        time_text(s.imported / 1000),
        s.source
    );
    if let Some(n) = s.newest {
        out.push_str(&format!("newest record modified {}\n", time_text(n)));
    }
    for (eco, n) in &s.ecosystems {
        out.push_str(&format!("  {eco}: {n}\n"));
    }
    out
}

fn time_text(unix_seconds: i64) -> String {
    jiff::Timestamp::from_second(unix_seconds).map_or_else(
        |_| unix_seconds.to_string(),
        |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const REC: &str = r#"{"id": "GHSA-1", "modified": "2024-01-02T03:04:05Z",
        "affected": [
          {"package": {"ecosystem": "PyPI", "name": "Django_Rest"}},
          {"package": {"ecosystem": "Debian:12", "name": "openssl"}},
          {"package": {"ecosystem": "Debian:11", "name": "openssl"}}]}"#;

    #[test]
    fn keys_drop_the_release_and_normalize() {
        let r = Record::parse(REC.as_bytes()).unwrap();
        assert_eq!(
            keys(&r),
            vec![
                ("Debian".to_string(), "openssl".to_string()),
                ("PyPI".to_string(), "django-rest".to_string())
            ]
        );
        let withdrawn = REC.replace("\"id\"", "\"withdrawn\": \"2024-02-01T00:00:00Z\", \"id\"");
        assert!(stored(&Record::parse(withdrawn.as_bytes()).unwrap()).is_none());
    }

    #[test]
    fn imports_a_directory_and_reports_it() {
        let dir = crate::testing::TempDir::new("vulndb").unwrap();
        let src = dir.path().join("osv");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.json"), REC).unwrap();
        std::fs::write(
            src.join("sub/b.json"),
            REC.replace("GHSA-1", "GHSA-2")
                .replace("2024-01-02", "2024-03-04"),
        )
        .unwrap();
        std::fs::write(src.join("sub/c.json"), "{not json").unwrap();
        let store = open_store(None, dir.path()).unwrap();
        let mut seen = 0;
        let (summary, status) = import_path(&store, &src, 5, |_| seen += 1).unwrap();
        assert_eq!((summary.files, summary.records, summary.failed), (3, 2, 1));
        assert_eq!(seen, 3);
        assert_eq!(status.records, 2);
        assert_eq!(
            status.ecosystems,
            vec![("Debian".to_string(), 2), ("PyPI".to_string(), 2)]
        );
        let text = describe(Some(&status));
        assert!(text.contains(": 2 records, imported "), "{text}");
        assert!(
            text.contains("newest record modified 2024-03-04T03:04:05Z"),
            "{text}"
        );
        assert!(text.contains("  PyPI: 2\n"));
        let got = store
            .records_for(status.version, &[("PyPI".into(), "django-rest".into())])
            .unwrap();
        assert_eq!(got.len(), 2);
        let back = Record::parse(got[0].as_bytes()).unwrap();
        assert_eq!(back.id, "GHSA-1");
        // An empty source imports nothing and keeps the data.
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(import_path(&store, &empty, 6, |_| {})
            .unwrap_err()
            .contains("nothing imported"));
        assert_eq!(store.current_version().unwrap(), Some(status.version));
        assert!(describe(None).starts_with("no vulnerability data"));
    }
}
