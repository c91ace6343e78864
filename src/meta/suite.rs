//! The engine conformance suite: one set of questions every metadata engine must answer the
//! same way, run on each engine by a one-line test (the in-memory engine and SQLite here;
//! PostgreSQL runs it too), as distribution's storage-driver suite runs on every driver. Also
//! the small executor and temp-dir helpers the metadata tests share.

use super::graph::{BlobRow, Graph, ManifestRow, RefRow, TagRow};
use super::index::tests::{dg, record};
use super::{
    Answer, Conflict, Error, ManifestRecord, Meta, Pull, PushEvent, RefKind, Required, RobotToken,
    UploadAt, UploadRecord, WriteOp,
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
        format!("{:?}", now(meta.push_events(10_000))),
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
    repo_usage(&meta);
    push_events(&meta);
    gc_graph_contents(&meta);
    gc_tombstone_lifecycle(&meta);
    gc_tombstone_refusals(&meta);
    gc_collect_manifest(&meta);
    gc_claims_and_orphans(&meta);
    gc_races(&meta);
    gc_leave_marked(&meta);
    if durable {
        let after = observe(&meta);
        meta.close();
        drop(meta);
        let reopened = open(&dir.0);
        assert_eq!(observe(&reopened), after, "answers after reopening");
        gc_marked_after_restart(&reopened);
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
        gc_edges(&reopened);
        reopened.close();
    } else {
        gc_edges(&meta);
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

/// The commit path's outbox: a manifest put records its push in its own transaction, a
/// refused put records none, and a consumer forgets only what it read (a put again since
/// stays).
fn push_events(meta: &Meta) {
    let repo = "events/a";
    let mine = |meta: &Meta| -> Vec<PushEvent> {
        now(meta.push_events(100_000))
            .into_iter()
            .filter(|e| e.repo == repo)
            .collect()
    };
    let refused = put_checked(
        meta,
        repo,
        record("ev-refused", None),
        &[("ev-missing", 3, RefKind::Layer)],
        None,
    );
    assert!(refused.is_err());
    assert_eq!(mine(meta), vec![], "a refused put records nothing");
    put_checked(meta, repo, record("ev-1", None), &[], Some("v1")).unwrap();
    put_checked(meta, repo, record("ev-2", None), &[], None).unwrap();
    let first = mine(meta);
    let mut digests: Vec<_> = first.iter().map(|e| e.digest.clone()).collect();
    digests.sort();
    let mut want = vec![dg("ev-1"), dg("ev-2")];
    want.sort();
    assert_eq!(digests, want, "one event per put");
    assert!(
        first
            .windows(2)
            .all(|w| (w[0].at, &w[0].digest) < (w[1].at, &w[1].digest)),
        "oldest first, ties by digest: {first:?}"
    );
    assert!(first.iter().all(|e| e.at > 0));
    let stale = PushEvent {
        at: first[0].at - 1,
        ..first[0].clone()
    };
    let forget = |events: Vec<PushEvent>| {
        block_on(meta.write(WriteOp::ForgetPushEvents(events)))
            .unwrap()
            .existed
    };
    assert!(
        !forget(vec![stale]),
        "a put since the read is not forgotten"
    );
    assert_eq!(mine(meta).len(), 2);
    assert!(forget(vec![first[0].clone()]));
    assert_eq!(mine(meta), vec![first[1].clone()]);
    assert_eq!(now(meta.push_events(0)), vec![], "limit");
    assert!(forget(vec![first[1].clone()]));
    assert_eq!(mine(meta), vec![]);
    // A put again after it was forgotten is a new event.
    put_checked(meta, repo, record("ev-1", None), &[], None).unwrap();
    assert_eq!(mine(meta).len(), 1);
}

/// Robot tokens: a name is taken until its token is revoked, a revocation keeps its first
/// time, uses keep the latest time, and the list is in name order with revoked ones in it.
/// Quotas' usage: the distinct blobs and manifests linked to a repository, shared ones in
/// each, gone with an unlink or a collection's mark.
fn repo_usage(meta: &Meta) {
    let (a, b) = ("usage/a", "usage/b");
    let usage = |repo: &str| now(meta.repo_usage(repo));
    assert_eq!(usage(a), 0, "an unknown repository holds nothing");
    block_on(meta.link_blob(a, &dg("u-1"), 10)).unwrap();
    block_on(meta.link_blob(a, &dg("u-2"), 20)).unwrap();
    block_on(meta.link_blob(a, &dg("u-2"), 20)).unwrap();
    assert_eq!(usage(a), 30, "a link counts once");
    assert!(block_on(meta.mount_blob(a, b, &dg("u-2"))).unwrap());
    assert_eq!(
        (usage(a), usage(b)),
        (30, 20),
        "a shared blob counts in each"
    );
    let rec = record("u-m", None);
    put_checked(
        meta,
        a,
        rec.clone(),
        &[("u-1", 10, RefKind::Layer)],
        Some("t"),
    )
    .unwrap();
    assert_eq!(usage(a), 30 + rec.size, "the manifest is linked too");
    assert!(block_on(meta.unlink_blob(a, &dg("u-2"))).unwrap());
    assert_eq!(usage(a), 10 + rec.size);
    let mark = WriteOp::TombstoneBlob {
        digest: dg("u-2"),
        cutoff: FAR,
    };
    block_on(meta.write(mark)).unwrap();
    assert_eq!(
        usage(b),
        0,
        "a blob being collected is out of every repository"
    );
}

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

// --- garbage collection: the checked writes of a sweep, and the graph its mark reads.

/// A cutoff after every time the engines stamp: everything is idle.
const FAR: i64 = i64::MAX / 2;

fn live() -> Error {
    Error::Conflict(Conflict::Live)
}

fn being_swept(label: &str) -> Error {
    Error::Conflict(Conflict::BlobSweeping { digest: dg(label) })
}

fn tombstone(meta: &Meta, label: &str, cutoff: i64) -> Result<bool, Error> {
    block_on(meta.write(WriteOp::TombstoneBlob {
        digest: dg(label),
        cutoff,
    }))
    .map(|o| o.existed)
}

fn forget(meta: &Meta, label: &str) -> bool {
    block_on(meta.write(WriteOp::ForgetBlob { digest: dg(label) }))
        .expect("forget")
        .existed
}

fn claim(meta: &Meta, label: &str) -> Result<bool, Error> {
    block_on(meta.write(WriteOp::ClaimBlob { digest: dg(label) })).map(|o| o.existed)
}

fn orphan(meta: &Meta, label: &str, size: u64, cutoff: i64) -> Result<bool, Error> {
    block_on(meta.write(WriteOp::TombstoneOrphan {
        digest: dg(label),
        size,
        cutoff,
    }))
    .map(|o| o.existed)
}

fn collect(meta: &Meta, repo: &str, label: &str, cutoff: i64) -> Result<bool, Error> {
    block_on(meta.write(WriteOp::CollectManifest {
        repo: repo.into(),
        digest: dg(label),
        cutoff,
    }))
    .map(|o| o.existed)
}

/// The blob row of `label` in the collection graph, if any.
fn graph_row(meta: &Meta, label: &str) -> Option<BlobRow> {
    now(meta.gc_graph())
        .blobs
        .into_iter()
        .find(|b| b.digest == dg(label))
}

/// A manifest put of `label` in `repo` with these references, each also required (a
/// manifest reference as a manifest of the repository, the others as linked blobs).
fn put_checked(
    meta: &Meta,
    repo: &str,
    rec: ManifestRecord,
    refs: &[(&str, u64, RefKind)],
    tag: Option<&str>,
) -> Result<(), Error> {
    let requires = refs
        .iter()
        .filter(|(_, _, k)| *k != RefKind::Subject)
        .map(|(l, size, kind)| required(l, *size, *kind))
        .collect();
    let refs = refs.iter().map(|(l, _, k)| (dg(l), *k)).collect();
    block_on(meta.put_manifest(repo, rec, refs, tag.map(str::to_string), requires))
}

/// A blob's sweep, step by step: marked, it is gone for every read and refused to every
/// writer (a mount finds nothing, a manifest needing it misses it); forgotten, it may be
/// stored again as a new row.
fn gc_tombstone_lifecycle(meta: &Meta) {
    let link = |repo: &str| block_on(meta.link_blob(repo, &dg("tb"), 7));
    link("gc/tomb").unwrap();
    link("gc/tomb2").unwrap();
    assert_eq!(tombstone(meta, "tb", FAR), Ok(true));
    assert_eq!(now(meta.blob(&dg("tb"))), None, "marked: no read finds it");
    assert_eq!(now(meta.blob_in_repo("gc/tomb", &dg("tb"))), None);
    assert_eq!(now(meta.blob_in_repo("gc/tomb2", &dg("tb"))), None);
    assert!(
        graph_row(meta, "tb").is_some_and(|r| r.sweeping && r.size == 7),
        "the graph shows the row, marked"
    );
    assert!(
        now(meta.marked_blobs()).contains(&(dg("tb"), 7)),
        "and so does the list of marked blobs"
    );
    assert_eq!(tombstone(meta, "tb", FAR), Err(live()), "marked already");
    assert_eq!(link("gc/tomb"), Err(being_swept("tb")));
    assert_eq!(link("gc/elsewhere"), Err(being_swept("tb")));
    assert_eq!(claim(meta, "tb"), Err(being_swept("tb")));
    assert!(
        !block_on(meta.mount_blob("gc/tomb", "gc/tomb3", &dg("tb"))).unwrap(),
        "a mount finds nothing to mount"
    );
    assert_eq!(now(meta.blob_in_repo("gc/tomb3", &dg("tb"))), None);
    assert_eq!(
        put_checked(
            meta,
            "gc/tomb",
            record("tb-user", None),
            &[("tb", 7, RefKind::Layer)],
            Some("t"),
        ),
        Err(Error::Conflict(Conflict::Missing {
            digest: dg("tb"),
            kind: RefKind::Layer
        })),
        "a manifest needing it is refused"
    );
    assert_eq!(now(meta.manifest("gc/tomb", &dg("tb-user"))), None);
    assert_eq!(now(meta.tag("gc/tomb", "t")), None);
    assert_eq!(
        block_on(meta.put_manifest("gc/tomb", record("tb", None), vec![], None, vec![])),
        Err(being_swept("tb")),
        "nor is a manifest stored under its digest"
    );
    assert_eq!(now(meta.manifest("gc/tomb", &dg("tb"))), None);
    // Uses of a marked blob are ignored.
    let marked_at = graph_row(meta, "tb").unwrap().last_referenced;
    block_on(meta.write(WriteOp::RecordBlobUse(vec![(dg("tb"), FAR)]))).unwrap();
    assert_eq!(graph_row(meta, "tb").unwrap().last_referenced, marked_at);
    assert_eq!(now(meta.blob(&dg("tb"))), None);

    assert!(forget(meta, "tb"), "the marked row goes");
    assert!(!forget(meta, "tb"), "once");
    assert_eq!(graph_row(meta, "tb"), None);
    assert!(!now(meta.marked_blobs()).iter().any(|(d, _)| *d == dg("tb")));
    link("gc/tomb").expect("stored again after the sweep");
    assert_eq!(now(meta.blob(&dg("tb"))).map(|b| b.size), Some(7));
    assert_eq!(now(meta.blob_in_repo("gc/tomb", &dg("tb"))), Some(7));
    assert_eq!(
        now(meta.blob_in_repo("gc/tomb2", &dg("tb"))),
        None,
        "the links the mark removed stay removed"
    );
    assert!(graph_row(meta, "tb").is_some_and(|r| !r.sweeping));
    assert!(!forget(meta, "tb"), "an unmarked row is not forgotten");
    assert_eq!(now(meta.blob_in_repo("gc/tomb", &dg("tb"))), Some(7));
    assert!(!forget(meta, "tb-never"), "nor an absent one");
    assert_eq!(
        tombstone(meta, "tb-never", FAR),
        Err(live()),
        "nothing to mark"
    );
}

/// What keeps a blob from being marked, wherever it is kept: activity since the cutoff (a
/// link, a claim, a recorded use), a manifest of any repository referencing it as config or
/// layer or listing it, or having its digest. A refused mark changes nothing.
fn gc_tombstone_refusals(meta: &Meta) {
    let link = |repo: &str, l: &str, size| block_on(meta.link_blob(repo, &dg(l), size)).unwrap();
    link("gc/tomb", "tr", 3);
    assert_eq!(tombstone(meta, "tr", 0), Err(live()), "linked just now");
    assert_eq!(now(meta.blob_in_repo("gc/tomb", &dg("tr"))), Some(3));

    // Config and layer of an untagged manifest of another repository.
    for repo in ["gc/tomb", "gc/tombx"] {
        link(repo, "tl", 5);
        link(repo, "tc", 6);
    }
    put_checked(
        meta,
        "gc/tombx",
        record("tx", None),
        &[("tc", 6, RefKind::Config), ("tl", 5, RefKind::Layer)],
        None,
    )
    .unwrap();
    assert_eq!(tombstone(meta, "tl", FAR), Err(live()), "a layer");
    assert_eq!(tombstone(meta, "tc", FAR), Err(live()), "a config");
    assert_eq!(now(meta.blob_in_repo("gc/tomb", &dg("tl"))), Some(5));
    assert_eq!(now(meta.blob_in_repo("gc/tombx", &dg("tc"))), Some(6));
    assert!(block_on(meta.delete_manifest("gc/tombx", &dg("tx"))).unwrap());
    assert_eq!(
        tombstone(meta, "tl", FAR),
        Ok(true),
        "its references went with it"
    );
    assert_eq!(tombstone(meta, "tc", FAR), Ok(true));
    assert!(forget(meta, "tl") && forget(meta, "tc"));

    // A manifest's own digest, in any repository.
    for repo in ["gc/tomb", "gc/tomb2"] {
        block_on(meta.put_manifest(repo, record("tm", None), vec![], None, vec![])).unwrap();
    }
    assert_eq!(tombstone(meta, "tm", FAR), Err(live()));
    assert!(block_on(meta.delete_manifest("gc/tomb", &dg("tm"))).unwrap());
    assert_eq!(
        tombstone(meta, "tm", FAR),
        Err(live()),
        "still a manifest of gc/tomb2"
    );
    assert!(block_on(meta.delete_manifest("gc/tomb2", &dg("tm"))).unwrap());
    assert_eq!(now(meta.blob_in_repo("gc/tomb", &dg("tm"))), Some(102));
    assert_eq!(tombstone(meta, "tm", FAR), Ok(true), "now only a blob");
    assert_eq!(now(meta.blob_in_repo("gc/tomb", &dg("tm"))), None);
    assert!(forget(meta, "tm"));

    // A claim moves the activity time: a mark with a cutoff between the link and the claim
    // is refused.
    link("gc/tomb", "tt", 4);
    let linked = now(meta.blob(&dg("tt"))).unwrap().last_referenced;
    tick();
    assert_eq!(claim(meta, "tt"), Ok(true), "recorded");
    let claimed = now(meta.blob(&dg("tt"))).unwrap().last_referenced;
    assert!(claimed > linked, "a claim touches the blob");
    assert_eq!(tombstone(meta, "tt", linked + 1), Err(live()));
    assert_eq!(tombstone(meta, "tt", claimed + 1), Ok(true));
    assert!(forget(meta, "tt"));

    // So do recorded uses (a HEAD), the latest winning; unknown digests are ignored.
    link("gc/tomb", "tu", 8);
    let later = super::now_millis() + 10 * 3_600_000;
    let uses = |v: Vec<(&str, i64)>| {
        let v = v.into_iter().map(|(l, at)| (dg(l), at)).collect();
        block_on(meta.write(WriteOp::RecordBlobUse(v))).unwrap();
    };
    uses(vec![("tu", later), ("tu-never", later)]);
    uses(vec![("tu", 5)]);
    assert_eq!(now(meta.blob(&dg("tu"))).unwrap().last_referenced, later);
    assert_eq!(now(meta.blob(&dg("tu-never"))), None, "no row recorded");
    assert_eq!(graph_row(meta, "tu-never"), None);
    assert_eq!(
        tombstone(meta, "tu", super::now_millis() + 3_600_000),
        Err(live())
    );
    assert_eq!(tombstone(meta, "tu", FAR), Ok(true));
    assert!(forget(meta, "tu"));
}

/// Claims and orphans: a writer's claim of a digest no row records keeps an orphan sweep
/// away from its bytes until the claim is older than the cutoff (or forgotten); an orphan
/// mark keeps every writer away until it is forgotten.
fn gc_claims_and_orphans(meta: &Meta) {
    let hour_ago = super::now_millis() - 3_600_000;
    assert_eq!(claim(meta, "cl-new"), Ok(false), "nothing recorded");
    assert_eq!(now(meta.blob(&dg("cl-new"))), None, "a claim is not a row");
    assert_eq!(graph_row(meta, "cl-new"), None);
    assert_eq!(orphan(meta, "cl-new", 4, hour_ago), Err(live()), "claimed");
    block_on(meta.write(WriteOp::ForgetClaims { before: hour_ago })).unwrap();
    assert_eq!(
        orphan(meta, "cl-new", 4, hour_ago),
        Err(live()),
        "a recent claim is kept"
    );
    block_on(meta.write(WriteOp::ForgetClaims { before: FAR })).unwrap();
    assert_eq!(
        orphan(meta, "cl-new", 4, hour_ago),
        Ok(true),
        "claim forgotten"
    );
    let row = graph_row(meta, "cl-new").expect("a marked row");
    assert!(row.sweeping && row.size == 4, "{row:?}");
    assert_eq!(now(meta.blob(&dg("cl-new"))), None);
    assert_eq!(claim(meta, "cl-new"), Err(being_swept("cl-new")));
    assert_eq!(
        block_on(meta.link_blob("gc/claims", &dg("cl-new"), 4)),
        Err(being_swept("cl-new"))
    );
    assert_eq!(
        orphan(meta, "cl-new", 4, FAR),
        Err(live()),
        "marked already"
    );
    assert_eq!(tombstone(meta, "cl-new", FAR), Err(live()));
    assert!(forget(meta, "cl-new"));
    assert_eq!(graph_row(meta, "cl-new"), None);
    assert_eq!(
        claim(meta, "cl-new"),
        Ok(false),
        "claimed again after the sweep"
    );
    block_on(meta.link_blob("gc/claims", &dg("cl-new"), 4)).unwrap();
    assert_eq!(now(meta.blob_in_repo("gc/claims", &dg("cl-new"))), Some(4));

    // A claim older than the cutoff keeps nothing.
    assert_eq!(claim(meta, "cl-old"), Ok(false));
    assert_eq!(orphan(meta, "cl-old", 2, FAR), Ok(true));
    assert!(forget(meta, "cl-old"));

    // Any row keeps an orphan mark away: recorded, or marked by a blob sweep.
    block_on(meta.link_blob("gc/claims", &dg("cl-row"), 3)).unwrap();
    assert_eq!(orphan(meta, "cl-row", 3, FAR), Err(live()));
    assert_eq!(now(meta.blob_in_repo("gc/claims", &dg("cl-row"))), Some(3));
    assert_eq!(claim(meta, "cl-row"), Ok(true));
    assert_eq!(tombstone(meta, "cl-row", FAR), Ok(true));
    assert_eq!(orphan(meta, "cl-row", 3, FAR), Err(live()));
    assert!(graph_row(meta, "cl-row").is_some_and(|r| r.sweeping && r.size == 3));
    assert!(forget(meta, "cl-row"));
}

/// A manifest goes only when nothing of its repository keeps it: a tag, an index listing
/// it, a subject it refers to, or activity since the cutoff. Its references go with it.
fn gc_collect_manifest(meta: &Meta) {
    let repo = "gc/collect";
    let put = |rec: ManifestRecord, refs: &[(&str, u64, RefKind)], tag: Option<&str>| {
        put_checked(meta, repo, rec, refs, tag).unwrap()
    };
    assert_eq!(collect(meta, repo, "c-absent", FAR), Ok(false));
    assert_eq!(collect(meta, "gc/no-such-repo", "c-absent", FAR), Ok(false));

    // Tagged, then not.
    block_on(meta.link_blob(repo, &dg("c-layer"), 6)).unwrap();
    put(
        record("ct", None),
        &[("c-layer", 6, RefKind::Layer)],
        Some("t"),
    );
    assert_eq!(collect(meta, repo, "ct", FAR), Err(live()), "tagged");
    assert!(now(meta.manifest(repo, &dg("ct"))).is_some());
    assert!(block_on(meta.delete_tag(repo, "t")).unwrap());
    assert_eq!(collect(meta, repo, "ct", FAR), Ok(true));
    assert_eq!(now(meta.manifest(repo, &dg("ct"))), None);
    assert_eq!(now(meta.tags_of(repo, &dg("ct"))), Vec::<String>::new());
    assert_eq!(collect(meta, repo, "ct", FAR), Ok(false), "gone already");
    let graph = now(meta.gc_graph());
    assert!(
        !graph
            .refs
            .iter()
            .any(|r| r.repo == repo && r.manifest == dg("ct")),
        "its references went"
    );
    assert!(!graph.manifests.iter().any(|m| m.digest == dg("ct")));
    // And with them what kept its layer and its own blob.
    assert_eq!(tombstone(meta, "c-layer", FAR), Ok(true));
    assert_eq!(tombstone(meta, "ct", FAR), Ok(true));
    assert!(forget(meta, "c-layer") && forget(meta, "ct"));

    // Recent: its blob row was touched since the cutoff.
    put(record("cr", None), &[], None);
    assert_eq!(collect(meta, repo, "cr", 0), Err(live()), "pushed just now");
    assert_eq!(collect(meta, repo, "cr", FAR), Ok(true));

    // Listed by an index of the repository: the index first, then the child.
    put(record("cc", None), &[], None);
    let cc = record("cc", None).size;
    put(record("ci", None), &[("cc", cc, RefKind::Manifest)], None);
    assert_eq!(collect(meta, repo, "cc", FAR), Err(live()), "listed");
    assert_eq!(collect(meta, repo, "ci", FAR), Ok(true));
    assert_eq!(now(meta.manifest_parents(repo, &dg("cc"))), vec![]);
    assert_eq!(collect(meta, repo, "cc", FAR), Ok(true));

    // A referrer whose subject is a manifest of the repository.
    put(record("cs", None), &[], None);
    let cs = record("cs", None).size;
    put(
        record("cref", Some("cs")),
        &[("cs", cs, RefKind::Subject)],
        None,
    );
    assert_eq!(
        collect(meta, repo, "cref", FAR),
        Err(live()),
        "subject lives"
    );
    assert_eq!(now(meta.referrers(repo, &dg("cs"))).len(), 1);
    assert_eq!(
        collect(meta, repo, "cs", FAR),
        Ok(true),
        "a referrer does not keep its subject"
    );
    assert_eq!(collect(meta, repo, "cref", FAR), Ok(true), "subject gone");
    assert_eq!(now(meta.referrers(repo, &dg("cs"))), vec![]);

    // Another repository's subject, and another repository's tag, keep nothing here.
    block_on(meta.put_manifest(
        "gc/collect2",
        record("cso", None),
        vec![],
        Some("s".into()),
        vec![],
    ))
    .unwrap();
    put(record("cref2", Some("cso")), &[], None);
    assert_eq!(collect(meta, repo, "cref2", FAR), Ok(true));
    block_on(meta.put_manifest(
        "gc/collect2",
        record("cx", None),
        vec![],
        Some("x".into()),
        vec![],
    ))
    .unwrap();
    put(record("cx", None), &[], None);
    assert_eq!(collect(meta, repo, "cx", FAR), Ok(true));
    assert!(now(meta.manifest("gc/collect2", &dg("cx"))).is_some());
    assert_eq!(
        block_on(meta.resolve_tag("gc/collect2", "x")).unwrap(),
        Some(dg("cx"))
    );
    assert_eq!(
        tombstone(meta, "cx", FAR),
        Err(live()),
        "still a manifest of gc/collect2"
    );
}

/// The graph's rows of `repo` and of the blobs `labels`, sorted, activity times zeroed
/// (engines stamp them; each is checked to be set).
fn graph_of(meta: &Meta, repo: &str, labels: &[&str]) -> Graph {
    let mut g = now(meta.gc_graph());
    let digests: Vec<_> = labels.iter().map(|l| dg(l)).collect();
    g.blobs.retain(|b| digests.contains(&b.digest));
    for b in &mut g.blobs {
        assert!(b.sweeping || b.last_referenced > 0, "{b:?}");
        b.last_referenced = 0;
    }
    g.manifests.retain(|m| m.repo == repo);
    g.refs.retain(|r| r.repo == repo);
    g.tags.retain(|t| t.repo == repo);
    for t in &mut g.tags {
        assert!(t.updated > 0, "{t:?}");
        t.updated = 0;
    }
    g.sorted()
}

/// The graph of a small repository: an image (config and two layers) tagged twice, a
/// tagged index of two images, a signature of the first image. Then what the mark makes of
/// it, and the sweep of what it found, in its order, each removal passing its check.
fn gc_graph_contents(meta: &Meta) {
    let repo = "gc/graph";
    let blobs = [
        ("gg-cfg", 10),
        ("gg-l1", 100),
        ("gg-l2", 200),
        ("gg-acfg", 3),
    ];
    for (l, size) in blobs {
        block_on(meta.link_blob(repo, &dg(l), size)).unwrap();
    }
    let size = |l: &str| record(l, None).size;
    let put = |rec: ManifestRecord, refs: &[(&str, u64, RefKind)], tag: Option<&str>| {
        put_checked(meta, repo, rec, refs, tag).unwrap()
    };
    let (cfg, l1, l2) = (
        ("gg-cfg", 10, RefKind::Config),
        ("gg-l1", 100, RefKind::Layer),
        ("gg-l2", 200, RefKind::Layer),
    );
    put(record("gg-img", None), &[cfg, l1, l2], Some("v1"));
    put(record("gg-img", None), &[cfg, l1, l2], Some("latest"));
    put(record("gg-c1", None), &[cfg, l1], None);
    put(record("gg-c2", None), &[cfg, l2], None);
    put(
        record("gg-idx", None),
        &[
            ("gg-c1", size("gg-c1"), RefKind::Manifest),
            ("gg-c2", size("gg-c2"), RefKind::Manifest),
        ],
        Some("multi"),
    );
    put(
        record("gg-sig", Some("gg-img")),
        &[
            ("gg-img", size("gg-img"), RefKind::Subject),
            ("gg-acfg", 3, RefKind::Config),
        ],
        None,
    );
    let manifests = ["gg-img", "gg-c1", "gg-c2", "gg-idx", "gg-sig"];
    let labels: Vec<&str> = blobs.iter().map(|(l, _)| *l).chain(manifests).collect();
    let row = |l: &str, size| BlobRow {
        digest: dg(l),
        size,
        last_referenced: 0,
        sweeping: false,
    };
    let edge = |from: &str, to: &str, kind| RefRow {
        repo: repo.into(),
        manifest: dg(from),
        child: dg(to),
        kind,
    };
    let want = Graph {
        blobs: blobs
            .iter()
            .map(|(l, s)| row(l, *s))
            .chain(manifests.iter().map(|l| row(l, size(l))))
            .collect(),
        manifests: manifests
            .iter()
            .map(|l| ManifestRow {
                repo: repo.into(),
                digest: dg(l),
                subject: (*l == "gg-sig").then(|| dg("gg-img")),
                last_pulled: None,
            })
            .collect(),
        refs: vec![
            edge("gg-img", "gg-cfg", RefKind::Config),
            edge("gg-img", "gg-l1", RefKind::Layer),
            edge("gg-img", "gg-l2", RefKind::Layer),
            edge("gg-c1", "gg-cfg", RefKind::Config),
            edge("gg-c1", "gg-l1", RefKind::Layer),
            edge("gg-c2", "gg-cfg", RefKind::Config),
            edge("gg-c2", "gg-l2", RefKind::Layer),
            edge("gg-idx", "gg-c1", RefKind::Manifest),
            edge("gg-idx", "gg-c2", RefKind::Manifest),
            edge("gg-sig", "gg-acfg", RefKind::Config),
        ],
        tags: [("latest", "gg-img"), ("multi", "gg-idx"), ("v1", "gg-img")]
            .iter()
            .map(|(name, l)| TagRow {
                repo: repo.into(),
                name: name.to_string(),
                digest: dg(l),
                updated: 0,
            })
            .collect(),
    }
    .sorted();
    assert_eq!(graph_of(meta, repo, &labels), want);

    // Nothing of it is garbage; untagged, the index goes first, then its children; their
    // layers stay with the tagged image.
    let plan = |g: &Graph| crate::lifecycle::gc::plan(g, FAR, true);
    let p = plan(&graph_of(meta, repo, &labels));
    assert!(p.manifests.is_empty() && p.blobs.is_empty(), "{p:?}");
    assert!(block_on(meta.delete_tag(repo, "multi")).unwrap());
    let p = plan(&graph_of(meta, repo, &labels));
    let key = |l: &str| (repo.to_string(), dg(l));
    assert_eq!(p.manifests.first(), Some(&key("gg-idx")), "{p:?}");
    let mut found = p.manifests.clone();
    found.sort();
    let mut expected = vec![key("gg-idx"), key("gg-c1"), key("gg-c2")];
    expected.sort();
    assert_eq!(found, expected);
    let mut garbage: Vec<_> = ["gg-idx", "gg-c1", "gg-c2"]
        .iter()
        .map(|l| (dg(l), size(l)))
        .collect();
    garbage.sort();
    assert_eq!(p.blobs, garbage);
    for (r, d) in &p.manifests {
        let collected = block_on(meta.write(WriteOp::CollectManifest {
            repo: r.clone(),
            digest: d.clone(),
            cutoff: FAR,
        }));
        assert_eq!(collected.map(|o| o.existed), Ok(true), "{r}@{d}");
    }
    for (d, _) in &p.blobs {
        let marked = block_on(meta.write(WriteOp::TombstoneBlob {
            digest: d.clone(),
            cutoff: FAR,
        }));
        assert_eq!(marked.map(|o| o.existed), Ok(true), "{d}");
    }
    let g = graph_of(meta, repo, &labels);
    assert!(g.blobs.iter().filter(|b| b.sweeping).count() == 3, "{g:?}");
    for (d, _) in &p.blobs {
        let forgot = block_on(meta.write(WriteOp::ForgetBlob { digest: d.clone() }));
        assert_eq!(forgot.map(|o| o.existed), Ok(true));
    }
    let p = plan(&graph_of(meta, repo, &labels));
    assert!(p.manifests.is_empty() && p.blobs.is_empty(), "{p:?}");
    assert_eq!(
        graph_of(meta, repo, &labels).manifests.len(),
        2,
        "the image and its signature stay"
    );
}

/// The edges of the rules, last (a failure here leaves the cases above checked): bytes with
/// no row and no claim are an orphan whatever the cutoff; a digest that an index lists (a
/// reference of kind manifest) is kept like a config or a layer, even without a manifest of
/// that digest stored, since the rule is "no reference but a subject names it".
fn gc_edges(meta: &Meta) {
    // Bytes with no row and no claim, marked with a cutoff of 0 (every claim recent).
    let zero = orphan(meta, "cl-zero", 1, 0);
    // A blob that an index of another repository lists, though no manifest has its digest.
    block_on(meta.link_blob("gc/tomb", &dg("tghost"), 9)).unwrap();
    block_on(meta.put_manifest(
        "gc/tombx",
        record("tgidx", None),
        vec![(dg("tghost"), RefKind::Manifest)],
        None,
        vec![],
    ))
    .unwrap();
    let listed = tombstone(meta, "tghost", FAR);
    // Both at once, so that an engine wrong on one is still checked on the other.
    assert_eq!(
        (zero, listed),
        (Ok(true), Err(live())),
        "(an orphan marked with cutoff 0, a blob an index lists refused)"
    );
    assert!(forget(meta, "cl-zero"));
    assert_eq!(now(meta.blob_in_repo("gc/tomb", &dg("tghost"))), Some(9));
}

/// A sweep's mark and a writer's step on the same blob, queued together (one group commit,
/// or transactions racing on several connections), in both orders: one of the two wins,
/// never both. A link, a claim or a manifest put that won makes the blob active (or
/// referenced), so the mark is refused; a mark that won refuses the link and the claim, and
/// the put misses its layer.
fn gc_races(meta: &Meta) {
    let repo = "gc/race";
    for mark_first in [false, true] {
        for writer in ["link", "claim", "put"] {
            let l = format!("race-{writer}-{mark_first}");
            block_on(meta.link_blob(repo, &dg(&l), 5)).unwrap();
            // Idle as of `cutoff`; whatever the writer stamps is after it.
            let cutoff = now(meta.blob(&dg(&l))).unwrap().last_referenced + 1;
            tick();
            let (op, refused) = match writer {
                "link" => (
                    WriteOp::LinkBlob {
                        repo: repo.into(),
                        digest: dg(&l),
                        size: 5,
                    },
                    being_swept(&l),
                ),
                "claim" => (WriteOp::ClaimBlob { digest: dg(&l) }, being_swept(&l)),
                _ => (
                    WriteOp::PutManifest {
                        repo: repo.into(),
                        record: record(&format!("{l}-m"), None),
                        refs: vec![(dg(&l), RefKind::Layer)],
                        tag: Some(l.clone()),
                        fixed_tag: false,
                        requires: vec![required(&l, 5, RefKind::Layer)],
                    },
                    Error::Conflict(Conflict::Missing {
                        digest: dg(&l),
                        kind: RefKind::Layer,
                    }),
                ),
            };
            let mark = WriteOp::TombstoneBlob {
                digest: dg(&l),
                cutoff,
            };
            let (w, m) = if mark_first {
                let m = meta.write(mark);
                (meta.write(op), m)
            } else {
                let w = meta.write(op);
                (w, meta.write(mark))
            };
            match (block_on(w), block_on(m)) {
                (Ok(_), Err(e)) => {
                    assert_eq!(e, live(), "{l}");
                    assert_eq!(now(meta.blob_in_repo(repo, &dg(&l))), Some(5), "{l}");
                }
                (Err(e), Ok(marked)) => {
                    assert_eq!(e, refused, "{l}");
                    assert!(marked.existed, "{l}");
                    assert_eq!(now(meta.blob(&dg(&l))), None, "{l}");
                    assert_eq!(now(meta.tag(repo, &l)), None, "{l}");
                    assert!(forget(meta, &l), "{l}");
                }
                other => panic!("{l}: one of a mark and a writer must win: {other:?}"),
            }
        }
    }
}

/// Leaves a marked row behind, as a collector that died between its steps does.
fn gc_leave_marked(meta: &Meta) {
    block_on(meta.link_blob("gc/left", &dg("gc-left"), 11)).unwrap();
    assert_eq!(tombstone(meta, "gc-left", FAR), Ok(true));
}

/// After a restart, the row a dead collector marked is still marked: no read finds it, no
/// writer links it, the next collection finishes it.
fn gc_marked_after_restart(meta: &Meta) {
    let row = graph_row(meta, "gc-left").expect("the marked row");
    assert!(row.sweeping && row.size == 11, "{row:?}");
    assert_eq!(now(meta.blob(&dg("gc-left"))), None);
    assert_eq!(now(meta.blob_in_repo("gc/left", &dg("gc-left"))), None);
    assert_eq!(
        block_on(meta.link_blob("gc/left", &dg("gc-left"), 11)),
        Err(being_swept("gc-left"))
    );
    assert_eq!(claim(meta, "gc-left"), Err(being_swept("gc-left")));
    let unfinished = crate::lifecycle::gc::plan(&now(meta.gc_graph()), FAR, false).unfinished;
    assert!(unfinished.contains(&(dg("gc-left"), 11)), "{unfinished:?}");
    assert!(forget(meta, "gc-left"));
    block_on(meta.link_blob("gc/left", &dg("gc-left"), 11)).unwrap();
}
