//! One suite, run on SQLite and on PostgreSQL: the two must answer alike.

use super::*;
use crate::testing::postgres::PgServer;

fn record(id: &str, modified: i64, keys: &[(&str, &str)]) -> StoredRecord {
    StoredRecord {
        id: id.into(),
        modified,
        json: format!("{{\"id\":\"{id}\",\"modified\":{modified}}}"),
        keys: keys
            .iter()
            .map(|(e, n)| (e.to_string(), n.to_string()))
            .collect(),
    }
}

fn key(e: &str, n: &str) -> Vec<(String, String)> {
    vec![(e.to_string(), n.to_string())]
}

fn suite(store: &ScanStore) {
    // No data yet.
    assert_eq!(store.status().unwrap(), None);
    assert_eq!(store.current_version().unwrap(), None);

    // An import is invisible until finished, then replaces the data at once.
    let v1 = store.begin_import("first", 1_000).unwrap();
    store
        .import_records(
            v1,
            &[
                record("CVE-1", 10, &[("Debian", "openssl")]),
                record("GHSA-2", 20, &[("PyPI", "django"), ("PyPI", "django-x")]),
            ],
        )
        .unwrap();
    // Same id again: the newer modification wins, the older is ignored.
    store
        .import_records(v1, &[record("CVE-1", 5, &[("Debian", "other")])])
        .unwrap();
    assert_eq!(store.current_version().unwrap(), None, "not finished yet");
    let st = store.finish_import(v1, 2_000).unwrap();
    assert_eq!(
        (st.version, st.records, st.newest, st.source.as_str()),
        (v1, 2, Some(20), "first")
    );
    assert_eq!(
        st.ecosystems,
        vec![("Debian".to_string(), 1), ("PyPI".to_string(), 1)]
    );
    assert_eq!(store.status().unwrap(), Some(st));
    assert_eq!(
        store.records_for(v1, &key("Debian", "openssl")).unwrap(),
        vec!["{\"id\":\"CVE-1\",\"modified\":10}".to_string()]
    );
    assert_eq!(
        store
            .records_for(v1, &key("Debian", "other"))
            .unwrap()
            .len(),
        0
    );
    let both = [key("PyPI", "django"), key("PyPI", "django-x")].concat();
    assert_eq!(
        store.records_for(v1, &both).unwrap().len(),
        1,
        "each record once"
    );

    // Scans: queued, in progress, claimed once, completed, skipped against the same data.
    assert_eq!(
        store.request("sha256:a", "lib/app", false, 100).unwrap(),
        Requested::Queued
    );
    assert_eq!(
        store.request("sha256:a", "lib/app", false, 101).unwrap(),
        Requested::InProgress
    );
    let c = store.claim("me", 200, 0).unwrap().unwrap();
    assert_eq!((c.digest.as_str(), c.attempts), ("sha256:a", 1));
    assert_eq!(store.claim("me", 201, 0).unwrap(), None, "taken once");
    assert_eq!(
        store.get("sha256:a").unwrap().unwrap().status,
        Status::Running
    );
    // A scanner that died: its running row is taken again once stale.
    let again = store.claim("other", 300, 250).unwrap().unwrap();
    assert_eq!((again.digest.as_str(), again.attempts), ("sha256:a", 2));
    // A live scanner's heartbeat keeps its row: not stale at 350 any more.
    store.heartbeat("other", 400).unwrap();
    assert_eq!(store.claim("me", 401, 350).unwrap(), None);
    let done = Completed {
        data_version: v1,
        counts: [1, 0, 2, 0, 0],
        result: "{\"x\":1}".into(),
        packages: vec![
            ("Debian".into(), "openssl".into()),
            ("npm".into(), "left-pad".into()),
        ],
        notify: Some("{\"new\":1}".into()),
        endpoints: 1,
    };
    store.complete("sha256:a", &done, 400).unwrap();
    let row = store.get("sha256:a").unwrap().unwrap();
    assert_eq!(
        (row.status, row.counts, row.data_version, row.finished),
        (Status::Completed, [1, 0, 2, 0, 0], Some(v1), Some(400))
    );
    assert_eq!(row.result.as_deref(), Some("{\"x\":1}"));
    // The stamp: the row short of its result, and the result's length; the same while
    // nothing changes.
    let stamp = store.stamp("sha256:a").unwrap().unwrap();
    assert_eq!(
        stamp.row,
        ScanRow {
            result: None,
            ..row.clone()
        }
    );
    assert_eq!(stamp.result_len, Some(7));
    assert_eq!(
        store.request("sha256:a", "lib/app", false, 500).unwrap(),
        Requested::UpToDate
    );
    assert_eq!(store.stamp("sha256:a").unwrap(), Some(stamp.clone()));
    assert_eq!(store.stamp("sha256:missing").unwrap(), None);
    assert_eq!(store.get("sha256:missing").unwrap(), None);

    // The outbox: written with the completion, due, retried, delivered.
    let due = store.due(400, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].body.as_str(), due[0].attempts), ("{\"new\":1}", 0));
    store.retry(&due[0].id, Some(1_000), "refused").unwrap();
    assert!(store.due(999, 10).unwrap().is_empty());
    assert_eq!(store.due(1_000, 10).unwrap()[0].attempts, 1);
    store.delivered(&due[0].id).unwrap();
    assert!(store.due(i64::MAX, 10).unwrap().is_empty());

    // A failure, then a forced request queues it again.
    store.request("sha256:b", "lib/app", false, 600).unwrap();
    let b = store.claim("me", 700, 0).unwrap().unwrap();
    store
        .fail(&b.digest, "layer 2 is a truncated gzip", 800)
        .unwrap();
    let row = store.get("sha256:b").unwrap().unwrap();
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.error.as_deref(), Some("layer 2 is a truncated gzip"));
    assert_eq!(
        store.request("sha256:b", "lib/app", false, 900).unwrap(),
        Requested::Queued
    );
    assert_eq!(
        store.request("sha256:a", "lib/app", true, 900).unwrap(),
        Requested::Queued,
        "forced"
    );
    assert_ne!(
        store.stamp("sha256:a").unwrap(),
        Some(stamp),
        "queued again"
    );
    while let Some(c) = store.claim("me", 1_000, 0).unwrap() {
        let mut d = done.clone();
        d.notify = None;
        if c.digest == "sha256:b" {
            d.counts = [0; 5];
            d.packages = vec![("PyPI".into(), "flask".into())];
        }
        store.complete(&c.digest, &d, 1_000).unwrap();
    }

    // A scan whose scanner keeps dying fails after MAX_ATTEMPTS takes.
    store.request("sha256:c", "lib/app", false, 2_000).unwrap();
    for n in 1..=MAX_ATTEMPTS {
        let c = store.claim("dies", 2_000 + n, 2_000 + n).unwrap().unwrap();
        assert_eq!(c.attempts, n);
    }
    assert_eq!(store.claim("me", 3_000, 2_999).unwrap(), None);
    let row = store.get("sha256:c").unwrap().unwrap();
    assert_eq!(row.status, Status::Failed);
    assert!(row
        .error
        .unwrap()
        .starts_with("the scanner stopped 3 times"));

    // A second import: the first stays readable until a third replaces it.
    let v2 = store.begin_import("second", 3_000).unwrap();
    store
        .import_records(v2, &[record("CVE-9", 30, &[("npm", "left-pad")])])
        .unwrap();
    let st2 = store.finish_import(v2, 4_000).unwrap();
    assert_eq!((st2.version, st2.records), (v2, 1));
    assert_eq!(
        store
            .records_for(v1, &key("Debian", "openssl"))
            .unwrap()
            .len(),
        1
    );
    let outdated = store.outdated(v2, 100).unwrap();
    let digests: Vec<String> = outdated.iter().map(|r| r.digest.clone()).collect();
    assert_eq!(
        digests,
        vec!["sha256:a".to_string(), "sha256:b".to_string()]
    );
    // a: has findings and left-pad, which CVE-9 names; b: nothing the new data names.
    assert_eq!(
        store.touched_by(v2, &digests).unwrap(),
        vec!["sha256:a".to_string()]
    );
    store.move_to(v2, &["sha256:b".to_string()]).unwrap();
    assert_eq!(store.outdated(v2, 100).unwrap().len(), 1);

    // A backfill queues only what has no row; pruning drops rows and package lists.
    let wanted = [
        ("sha256:a".to_string(), "lib/app".to_string()),
        ("sha256:d".to_string(), "lib/old".to_string()),
    ];
    assert_eq!(store.request_missing(&wanted, 5_000).unwrap(), 1);
    assert_eq!(store.request_missing(&wanted, 5_001).unwrap(), 0);
    let d = store.get("sha256:d").unwrap().unwrap();
    assert_eq!(
        (d.status, d.repository.as_str()),
        (Status::Pending, "lib/old")
    );
    assert_eq!(
        store.get("sha256:a").unwrap().unwrap().status,
        Status::Completed,
        "left as it was"
    );
    assert_eq!(
        store.digests_after("", 2).unwrap(),
        vec!["sha256:a".to_string(), "sha256:b".to_string()]
    );
    assert_eq!(
        store.digests_after("sha256:b", 10).unwrap(),
        vec!["sha256:c".to_string(), "sha256:d".to_string()]
    );
    store
        .forget(&["sha256:a".to_string(), "sha256:d".to_string()])
        .unwrap();
    assert_eq!(store.get("sha256:a").unwrap(), None);
    assert_eq!(
        store.digests_after("", 10).unwrap(),
        vec!["sha256:b".to_string(), "sha256:c".to_string()]
    );
    let packages = store
        .tx(|sql| {
            sql.query(
                "SELECT 1 FROM scan_packages WHERE digest = $1",
                &["sha256:a".into()],
            )
        })
        .unwrap();
    assert!(packages.is_empty(), "its packages are gone");

    // A crashed import is dropped by the next one; the third drops the first.
    let crashed = store.begin_import("crashed", 5_000).unwrap();
    store
        .import_records(crashed, &[record("CVE-X", 1, &[("Go", "x")])])
        .unwrap();
    let v4 = store.begin_import("fourth", 6_000).unwrap();
    assert!(store.finish_import(crashed, 6_500).is_err());
    store.finish_import(v4, 7_000).unwrap();
    assert_eq!(store.current_version().unwrap(), Some(v4));
    assert_eq!(
        store.records_for(crashed, &key("Go", "x")).unwrap().len(),
        0
    );
    assert_eq!(
        store
            .records_for(v1, &key("Debian", "openssl"))
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        store
            .records_for(v2, &key("npm", "left-pad"))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn sqlite_store_passes_the_suite() {
    let dir = crate::testing::TempDir::new("scan-store").unwrap();
    let path = dir.path().join("scan.db");
    suite(&ScanStore::open_sqlite(&path).unwrap());
    // Reopened: the data is there.
    let again = ScanStore::open_sqlite(&path).unwrap();
    assert!(again.current_version().unwrap().is_some());
}

#[test]
fn postgres_store_passes_the_suite() {
    let pg = PgServer::start().unwrap_or_else(|e| panic!("{e}"));
    let url = pg.create_database("scanstore").unwrap();
    suite(&ScanStore::open_postgres(&url).unwrap());
}
