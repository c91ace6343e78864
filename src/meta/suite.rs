//! The engine conformance suite: one set of questions every metadata engine must answer the
//! same way, run on each engine by a one-line test (the in-memory engine and SQLite here;
//! PostgreSQL runs it too), as distribution's storage-driver suite runs on every driver. Also
//! the small executor and temp-dir helpers the metadata tests share.

use super::index::tests::{dg, record};
use super::{
    Answer, Conflict, Error, ManifestRecord, Meta, Pull, RefKind, Required, RobotToken, UploadAt,
    UploadRecord, WriteOp,
};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// A minimal executor: the metadata tests run off any event loop.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// The value of an answer that must succeed.
pub(crate) fn now<T>(a: Answer<T>) -> T {
    block_on(a).expect("engine answer")
}

/// Polls `f` once without waiting for the answer.
pub(crate) fn start<F: Future + Unpin>(f: &mut F) {
    let mut cx = Context::from_waker(Waker::noop());
    let _ = Pin::new(f).poll(&mut cx);
}

pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ringyard-meta-{name}-{}-{}-{}",
            std::process::id(),
            super::now_millis(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn manifest_with(label: &str, subject: Option<&str>) -> ManifestRecord {
    let mut r = record(label, subject);
    let mut ann = serde_json::Map::new();
    ann.insert("org.example.k".into(), serde_json::json!("v"));
    ann.insert("n".into(), serde_json::json!(1));
    r.annotations = Some(ann);
    r
}

/// Writes touching every op and every read path.
fn populate(meta: &Meta) {
    block_on(async {
        meta.link_blob("lib/app", &dg("cfg"), 10).await.unwrap();
        meta.link_blob("lib/app", &dg("l1"), 1000).await.unwrap();
        meta.link_blob("lib/app", &dg("l2"), 2000).await.unwrap();
        meta.link_blob("other", &dg("l1"), 1000).await.unwrap();
        meta.link_blob("gone", &dg("tmp"), 5).await.unwrap();
        assert!(meta.unlink_blob("gone", &dg("tmp")).await.unwrap());
        assert!(!meta.unlink_blob("gone", &dg("tmp")).await.unwrap());
        let refs = vec![
            (dg("cfg"), RefKind::Config),
            (dg("l1"), RefKind::Layer),
            (dg("l2"), RefKind::Layer),
        ];
        for (label, tag) in [("m1", "v1"), ("m2", "v2"), ("m3", "v3")] {
            meta.put_manifest(
                "lib/app",
                manifest_with(label, None),
                refs.clone(),
                Some(tag.into()),
                vec![],
            )
            .await
            .unwrap();
        }
        meta.put_manifest(
            "lib/app",
            record("m1", None),
            refs.clone(),
            Some("latest".into()),
            vec![],
        )
        .await
        .unwrap();
        meta.put_manifest(
            "lib/app",
            record("idx", None),
            vec![(dg("m1"), RefKind::Manifest), (dg("m2"), RefKind::Manifest)],
            Some("multi".into()),
            vec![],
        )
        .await
        .unwrap();
        for label in ["sigA", "sigB", "sigC"] {
            meta.put_manifest(
                "lib/app",
                manifest_with(label, Some("m1")),
                vec![(dg("m1"), RefKind::Subject), (dg("cfg"), RefKind::Config)],
                None,
                vec![],
            )
            .await
            .unwrap();
        }
        assert!(meta.delete_manifest("lib/app", &dg("m3")).await.unwrap());
        assert!(!meta.delete_manifest("lib/app", &dg("m3")).await.unwrap());
        assert!(meta.delete_tag("lib/app", "v2").await.unwrap());
        assert!(!meta.delete_tag("lib/app", "v2").await.unwrap());
        assert!(meta.delete_manifest("lib/app", &dg("sigB")).await.unwrap());
        for (id, exp) in [("u1", 100), ("u2", 200), ("u3", 300)] {
            meta.put_upload(UploadRecord {
                id: id.into(),
                repository: "uploads/only".into(),
                started: 1,
                expires: exp,
                offset: exp as u64 * 3,
                hash_state: Some(vec![1, 2, exp as u8]),
                owner: None,
                remote: Some(format!("r{exp}")),
            })
            .await
            .unwrap();
        }
        assert!(meta.delete_upload("u2").await.unwrap());
        assert!(!meta.delete_upload("u2").await.unwrap());
    });
}

/// Every read, on a fixed set of questions, as one comparable value.
fn observe(meta: &Meta) -> Vec<String> {
    let repos = ["lib/app", "other", "gone", "uploads/only", "nope"];
    let labels = [
        "cfg", "l1", "l2", "tmp", "m1", "m2", "m3", "idx", "sigA", "sigB", "sigC", "x",
    ];
    let mut out = vec![
        format!("{:?}", now(meta.repositories_after(None, 100))),
        format!("{:?}", now(meta.repositories_after(Some("lib"), 2))),
        format!("{:?}", now(meta.uploads())),
        format!("{:?}", now(meta.upload("u1"))),
        format!("{:?}", now(meta.upload("u2"))),
        format!("{:?}", now(meta.robot_tokens())),
        format!("{:?}", now(meta.robot_token("ci")).map(|t| t.secret_hash)),
    ];
    for repo in repos {
        out.push(format!("{repo} exists {}", now(meta.repo_exists(repo))));
        out.push(format!(
            "{repo} tags {:?}",
            now(meta.tags_after(repo, None, 100))
        ));
        out.push(format!(
            "{repo} tags {:?}",
            now(meta.tags_after(repo, Some("m"), 1))
        ));
        for tag in ["v1", "v2", "v3", "latest", "multi"] {
            out.push(format!("{repo}:{tag} {:?}", now(meta.tag(repo, tag))));
            out.push(format!(
                "{repo}:{tag} man {:?}",
                now(meta.tagged_manifest(repo, tag))
            ));
        }
        for l in labels {
            let d = dg(l);
            out.push(format!(
                "{repo}@{l} blob {:?}",
                now(meta.blob_in_repo(repo, &d))
            ));
            out.push(format!("{repo}@{l} man {:?}", now(meta.manifest(repo, &d))));
            out.push(format!(
                "{repo}@{l} refs {:?}",
                now(meta.referrers(repo, &d))
            ));
            out.push(format!(
                "{repo}@{l} par {:?}",
                now(meta.manifest_parents(repo, &d))
            ));
            out.push(format!("{repo}@{l} tags {:?}", now(meta.tags_of(repo, &d))));
            out.push(format!(
                "{repo}@{l} pulled {:?}",
                now(meta.last_pulled(repo, &d))
            ));
        }
    }
    for l in labels {
        out.push(format!("{l} blob {:?}", now(meta.blob(&dg(l)))));
    }
    out
}

/// Waits until the engine clock has moved on, so that timestamps taken before and after differ.
fn tick() {
    std::thread::sleep(Duration::from_millis(3));
}

/// Runs the suite on the engine `open` makes over a directory. A durable engine given the same
/// directory again must answer every question as before (`durable`).
pub(crate) fn run(open: &dyn Fn(&Path) -> Meta, durable: bool) {
    let dir = TempDir::new("suite");
    let meta = open(&dir.0);
    populate(&meta);
    block_on(meta.write(WriteOp::RecordPulls(vec![
        Pull {
            repo: "lib/app".into(),
            digest: dg("m1"),
            at: 1_000,
        },
        Pull {
            repo: "lib/app".into(),
            digest: dg("m1"),
            at: 900,
        },
        Pull {
            repo: "lib/app".into(),
            digest: dg("never-pushed"),
            at: 1_000,
        },
    ])))
    .unwrap();
    let before = observe(&meta);
    semantics(&meta);
    checks_run_inside_the_write(&meta);
    fixed_tags(&meta);
    mounts(&meta);
    timestamps(&meta);
    uploads(&meta);
    robot_tokens(&meta);
    if durable {
        let after = observe(&meta);
        meta.close();
        drop(meta);
        let reopened = open(&dir.0);
        assert_eq!(observe(&reopened), after, "answers after reopening");
        // Writes after reopening continue from the stored state.
        let created = now(reopened.manifest("lib/app", &dg("m1")))
            .unwrap()
            .created;
        block_on(reopened.put_manifest("lib/app", record("m1", None), vec![], None, vec![]))
            .unwrap();
        assert_eq!(
            now(reopened.manifest("lib/app", &dg("m1")))
                .unwrap()
                .created,
            created,
            "a re-put after restart keeps the first created"
        );
        reopened.close();
    }
    let _ = before;
}

/// Spot checks of what [`populate`] left, so that "same answers" is not "same wrong answers".
fn semantics(meta: &Meta) {
    let m1 = now(meta.manifest("lib/app", &dg("m1"))).unwrap();
    assert_eq!(m1.annotations, None, "re-put replaces annotations");
    assert_eq!(
        block_on(meta.resolve_tag("lib/app", "latest")).unwrap(),
        Some(dg("m1"))
    );
    assert_eq!(block_on(meta.resolve_tag("lib/app", "v3")).unwrap(), None);
    assert_eq!(
        now(meta.tagged_manifest("lib/app", "latest")),
        Some(m1.clone()),
        "by tag, the record the tag's manifest has"
    );
    assert_eq!(now(meta.tagged_manifest("lib/app", "v3")), None);
    assert_eq!(now(meta.tagged_manifest("nope", "latest")), None);
    let sigs: Vec<_> = now(meta.referrers("lib/app", &dg("m1")))
        .iter()
        .map(|m| m.digest.clone())
        .collect();
    let mut want = vec![dg("sigA"), dg("sigC")];
    want.sort();
    assert_eq!(sigs, want);
    assert!(now(meta.referrers("lib/app", &dg("m1")))[0]
        .annotations
        .is_some());
    assert_eq!(
        now(meta.manifest_parents("lib/app", &dg("m2"))),
        vec![dg("idx")]
    );
    assert_eq!(
        now(meta.blob_in_repo("lib/app", &dg("m1"))),
        Some(record("m1", None).size)
    );
    assert_eq!(now(meta.blob_in_repo("other", &dg("l2"))), None);
    assert_eq!(block_on(meta.blob_size(&dg("tmp"))).unwrap(), Some(5));
    assert!(
        !now(meta.repo_exists("uploads/only")),
        "an upload session alone creates no repository"
    );
    assert_eq!(
        now(meta.tags_after("lib/app", None, 100)).unwrap().0,
        vec!["latest", "multi", "v1"]
    );
    assert_eq!(now(meta.last_pulled("lib/app", &dg("m1"))), Some(1_000));
    assert_eq!(now(meta.last_pulled("lib/app", &dg("never-pushed"))), None);
    assert_eq!(now(meta.last_pulled("lib/app", &dg("m2"))), None);
}

pub(crate) fn robot(name: &str, created: i64) -> RobotToken {
    RobotToken {
        name: name.into(),
        secret_hash: [created as u8; 32],
        scopes: vec![
            "repository:ci/*:pull,push".into(),
            "repository:base:pull".into(),
        ],
        created,
        expires: Some(created + 1_000),
        revoked: None,
        last_used: None,
    }
}

/// Robot tokens: a name is taken until its token is revoked, a revocation keeps its first
/// time, uses keep the latest time, and the list is in name order with revoked ones in it.
fn robot_tokens(meta: &Meta) {
    let w = |op: WriteOp| block_on(meta.write(op));
    let revoke = |name: &str| WriteOp::RevokeRobotToken { name: name.into() };
    let used = |name: &str, at| WriteOp::RobotTokenUsed {
        name: name.into(),
        at,
    };
    assert!(
        !w(WriteOp::CreateRobotToken(robot("ci", 10)))
            .unwrap()
            .existed
    );
    assert!(
        !w(WriteOp::CreateRobotToken(robot("build", 20)))
            .unwrap()
            .existed
    );
    assert_eq!(
        w(WriteOp::CreateRobotToken(robot("ci", 30))).unwrap_err(),
        Error::Conflict(Conflict::RobotTokenExists { name: "ci".into() })
    );
    assert_eq!(now(meta.robot_token("ci")), Some(robot("ci", 10)));
    assert!(w(used("ci", 50)).unwrap().existed);
    assert!(w(used("ci", 40)).unwrap().existed);
    assert!(!w(used("nobody", 40)).unwrap().existed);
    assert_eq!(now(meta.robot_token("ci")).unwrap().last_used, Some(50));
    assert!(w(revoke("ci")).unwrap().existed);
    let revoked = now(meta.robot_token("ci")).unwrap().revoked;
    assert!(revoked.is_some());
    tick();
    assert!(!w(revoke("ci")).unwrap().existed, "already revoked");
    assert!(!w(revoke("nobody")).unwrap().existed);
    assert_eq!(now(meta.robot_token("ci")).unwrap().revoked, revoked);
    let names: Vec<_> = now(meta.robot_tokens())
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["build", "ci"]);
    // A revoked name may be taken again, by a new token that is not revoked.
    assert!(
        w(WriteOp::CreateRobotToken(robot("ci", 60)))
            .unwrap()
            .existed
    );
    assert_eq!(now(meta.robot_token("ci")), Some(robot("ci", 60)));
    assert_eq!(now(meta.robot_token("nobody")), None);
    block_on(meta.refresh_robot_tokens()).unwrap();
    assert_eq!(now(meta.robot_token("ci")), Some(robot("ci", 60)));
}

/// An upload session's row is what any node finds it by: the read gives back offset and hash
/// state (and remote state) as last recorded; advancing needs the row (a completed, cancelled
/// or expired session is never brought back) where the writer found it (of two writers from
/// one state only the first advances it, the other learns where it stands), and keeps its
/// start.
fn uploads(meta: &Meta) {
    let row = |id: &str, repository: &str, offset: u64| UploadRecord {
        id: id.into(),
        repository: repository.into(),
        started: 7,
        expires: 1_000 + offset as i64,
        offset,
        hash_state: Some(offset.to_le_bytes().to_vec()),
        owner: Some("alice".into()),
        remote: (offset > 0).then(|| format!("{{\"parts_end\":{offset}}}")),
    };
    let at = |r: &UploadRecord| UploadAt::of(r);
    let advance = |r: UploadRecord, from: &UploadRecord| block_on(meta.advance_upload(r, at(from)));
    assert_eq!(now(meta.upload("s1")), None);
    let started = row("s1", "lib/app", 0);
    block_on(meta.put_upload(started.clone())).unwrap();
    assert_eq!(now(meta.upload("s1")), Some(started.clone()));
    let advanced = UploadRecord {
        started: 99,
        owner: Some("mallory".into()),
        ..row("s1", "lib/app", 5 << 32)
    };
    advance(advanced, &started).unwrap();
    let first = row("s1", "lib/app", 5 << 32);
    assert_eq!(
        now(meta.upload("s1")),
        Some(first.clone()),
        "offset, state, remote state and expiry advance; the start and the owner stay"
    );
    let unstaged = UploadRecord {
        remote: None,
        ..row("s1", "lib/app", 6)
    };
    advance(unstaged.clone(), &first).unwrap();
    assert_eq!(
        now(meta.upload("s1")),
        Some(unstaged.clone()),
        "a remote state cleared"
    );

    // Two writers found the session where `unstaged` stands; the first advances it.
    let (a, b) = (row("s1", "lib/app", 20), row("s1", "lib/app", 30));
    advance(a.clone(), &unstaged).unwrap();
    let moved = |r: Result<(), Error>| match r {
        Err(Error::Conflict(Conflict::UploadMoved { offset })) => Some(offset),
        _ => None,
    };
    assert_eq!(
        moved(advance(b.clone(), &unstaged)),
        Some(20),
        "the second is refused with where the row stands"
    );
    assert_eq!(
        moved(advance(a.clone(), &unstaged)),
        Some(20),
        "also when it would record the same state"
    );
    assert_eq!(
        now(meta.upload("s1")),
        Some(a.clone()),
        "the first's state stays"
    );
    // A new remote state at the same offset (a multipart upload recorded) moves it too.
    let begun = UploadRecord {
        remote: Some("{\"upload\":\"u2\"}".into()),
        ..a.clone()
    };
    advance(begun.clone(), &a).unwrap();
    assert_eq!(
        moved(advance(b.clone(), &a)),
        Some(20),
        "same offset, other remote state"
    );
    assert_eq!(
        moved(advance(
            a.clone(),
            &UploadRecord {
                remote: None,
                ..a.clone()
            }
        )),
        Some(20),
        "an absent remote state is not a present one"
    );
    advance(b.clone(), &begun).unwrap();
    assert_eq!(now(meta.upload("s1")), Some(b.clone()));

    let gone =
        |r: UploadRecord| matches!(advance(r, &b), Err(Error::Conflict(Conflict::UploadGone)));
    assert!(gone(row("s1", "other", 9)), "another repository's session");
    assert!(gone(row("never", "lib/app", 9)), "a session never started");
    assert!(block_on(meta.delete_upload("s1")).unwrap());
    assert!(gone(row("s1", "lib/app", 40)), "a finished session");
    assert_eq!(now(meta.upload("s1")), None, "not brought back");
}

fn required(label: &str, size: u64, kind: RefKind) -> Required {
    Required {
        digest: dg(label),
        size,
        kind,
    }
}

/// A manifest put names what it needs; the engine refuses it inside the write, changing
/// nothing, when something is missing or has another size.
fn checks_run_inside_the_write(meta: &Meta) {
    let put = |label: &str, requires: Vec<Required>| {
        block_on(meta.put_manifest(
            "checks",
            record(label, None),
            vec![],
            Some(label.to_string()),
            requires,
        ))
    };
    block_on(meta.link_blob("checks", &dg("layer"), 10)).unwrap();
    let e = put("c1", vec![required("absent", 3, RefKind::Layer)]).unwrap_err();
    assert_eq!(
        e,
        Error::Conflict(Conflict::Missing {
            digest: dg("absent"),
            kind: RefKind::Layer
        })
    );
    assert_eq!(
        now(meta.manifest("checks", &dg("c1"))),
        None,
        "nothing stored"
    );
    assert_eq!(now(meta.tag("checks", "c1")), None);
    let e = put("c1", vec![required("layer", 11, RefKind::Config)]).unwrap_err();
    assert_eq!(
        e,
        Error::Conflict(Conflict::SizeMismatch {
            digest: dg("layer"),
            declared: 11,
            stored: 10
        })
    );
    // A blob linked in another repository does not count here.
    block_on(meta.link_blob("elsewhere", &dg("foreign"), 4)).unwrap();
    assert!(put("c1", vec![required("foreign", 4, RefKind::Layer)]).is_err());
    put("c1", vec![required("layer", 10, RefKind::Layer)]).unwrap();
    // An index needs its children stored as manifests of the repository, not as blobs.
    let child_size = record("c1", None).size;
    assert!(put("i1", vec![required("layer", 10, RefKind::Manifest)]).is_err());
    assert!(put(
        "i1",
        vec![required("c1", child_size + 1, RefKind::Manifest)]
    )
    .is_err());
    put("i1", vec![required("c1", child_size, RefKind::Manifest)]).unwrap();
    // After the unlink, the same put is refused: the check sees the latest committed state.
    assert!(block_on(meta.unlink_blob("checks", &dg("layer"))).unwrap());
    assert!(put("c2", vec![required("layer", 10, RefKind::Layer)]).is_err());
}

/// A fixed tag (tag immutability) is created, and put again on its digest, never moved: the
/// refused put changes nothing, not even the manifest it brought. Two puts racing for a new
/// fixed tag, queued together, leave one winner. Ordinary tags still move.
fn fixed_tags(meta: &Meta) {
    let op = |label: &str, tag: &str, fixed_tag: bool| WriteOp::PutManifest {
        repo: "fixed".into(),
        record: record(label, None),
        refs: vec![],
        tag: Some(tag.into()),
        fixed_tag,
        requires: vec![],
    };
    let put = |label: &str, tag: &str, fixed: bool| block_on(meta.write(op(label, tag, fixed)));
    let held = |tag: &str, label: &str| {
        Error::Conflict(Conflict::TagImmutable {
            tag: tag.into(),
            digest: dg(label),
        })
    };
    put("f1", "v1", true).unwrap();
    put("f1", "v1", true).expect("the same digest again");
    assert_eq!(put("f2", "v1", true).unwrap_err(), held("v1", "f1"));
    assert_eq!(
        block_on(meta.resolve_tag("fixed", "v1")).unwrap(),
        Some(dg("f1"))
    );
    assert_eq!(
        now(meta.manifest("fixed", &dg("f2"))),
        None,
        "nothing stored"
    );
    put("f2", "latest", false).unwrap();
    put("f1", "latest", false).expect("an ordinary tag moves");
    assert_eq!(put("f2", "latest", true).unwrap_err(), held("latest", "f1"));

    let (a, b) = (
        meta.write(op("f1", "race", true)),
        meta.write(op("f2", "race", true)),
    );
    let (a, b) = (block_on(a), block_on(b));
    let winner = block_on(meta.resolve_tag("fixed", "race")).unwrap();
    match (a, b) {
        (Ok(_), Err(e)) => {
            assert_eq!(e, held("race", "f1"));
            assert_eq!(winner, Some(dg("f1")));
        }
        (Err(e), Ok(_)) => {
            assert_eq!(e, held("race", "f2"));
            assert_eq!(winner, Some(dg("f2")));
        }
        other => panic!("one of two racing puts must win: {other:?}"),
    }
}

fn mounts(meta: &Meta) {
    block_on(meta.link_blob("mount/src", &dg("shared"), 7)).unwrap();
    assert!(!block_on(meta.mount_blob("mount/none", "mount/dst", &dg("shared"))).unwrap());
    assert!(
        !now(meta.repo_exists("mount/dst")),
        "a failed mount creates nothing"
    );
    assert!(block_on(meta.mount_blob("mount/src", "mount/dst", &dg("shared"))).unwrap());
    assert_eq!(now(meta.blob_in_repo("mount/dst", &dg("shared"))), Some(7));
    assert!(!block_on(meta.mount_blob("mount/src", "mount/dst", &dg("other"))).unwrap());
}

/// The times later issues read: last push per tag, last pull per manifest, last reference per
/// blob; all stamped by the engine, moving forward only.
fn timestamps(meta: &Meta) {
    let tag = |t: &str| now(meta.tag("times", t)).unwrap();
    let blob = |l: &str| now(meta.blob(&dg(l))).unwrap();
    block_on(meta.link_blob("times", &dg("t-layer"), 1)).unwrap();
    let linked = blob("t-layer").last_referenced;
    assert!(linked > 0);
    tick();
    let put = || {
        block_on(meta.put_manifest(
            "times",
            record("t-m", None),
            vec![(dg("t-layer"), RefKind::Layer)],
            Some("t".into()),
            vec![],
        ))
        .unwrap()
    };
    put();
    let first = tag("t");
    assert_eq!(first.digest, dg("t-m"));
    assert!(
        blob("t-layer").last_referenced > linked,
        "a manifest put references its layers"
    );
    tick();
    put();
    assert!(tag("t").updated > first.updated, "a re-push moves the time");
    let pull = |at| {
        block_on(meta.write(WriteOp::RecordPulls(vec![Pull {
            repo: "times".into(),
            digest: dg("t-m"),
            at,
        }])))
        .unwrap()
    };
    pull(50);
    pull(40);
    assert_eq!(now(meta.last_pulled("times", &dg("t-m"))), Some(50));
    assert!(block_on(meta.delete_manifest("times", &dg("t-m"))).unwrap());
    assert_eq!(now(meta.last_pulled("times", &dg("t-m"))), None);
}

#[test]
fn the_in_memory_engine_passes_the_suite() {
    run(&|_| Meta::in_memory(), false);
}

#[test]
fn the_sqlite_engine_passes_the_suite() {
    run(
        &|dir| Meta::open_sqlite(&dir.join("meta.db")).expect("open sqlite"),
        true,
    );
}
