use super::*;
use crate::meta::graph::{BlobRow, ManifestRow, RefRow};

/// Times in the graphs below: `OLD` is idle as of `CUTOFF`, `NEW` is not.
const OLD: i64 = 1_000;
const CUTOFF: i64 = 10_000;
const NEW: i64 = 20_000;

fn d(label: &str) -> Digest {
    Digest::sha256_of(label.as_bytes())
}

/// A graph written the way the engines fill it: every manifest has a blob row of its own
/// digest (its bytes), and its config and layers are rows of their own.
#[derive(Default)]
struct G(Graph);

impl G {
    fn blob(mut self, label: &str, size: u64, at: i64) -> G {
        self.0.blobs.push(BlobRow {
            digest: d(label),
            size,
            last_referenced: at,
            sweeping: false,
        });
        self
    }

    fn sweeping(mut self, label: &str, size: u64, at: i64) -> G {
        self.0.blobs.push(BlobRow {
            digest: d(label),
            size,
            last_referenced: at,
            sweeping: true,
        });
        self
    }

    /// A manifest `label` in `repo`, last touched `at` (the blob row of its digest, added
    /// once even when the same digest is in several repositories), with `refs`.
    fn manifest(
        mut self,
        repo: &str,
        label: &str,
        at: i64,
        subject: Option<&str>,
        refs: &[(&str, RefKind)],
    ) -> G {
        if !self.0.blobs.iter().any(|b| b.digest == d(label)) {
            self = self.blob(label, 500, at);
        }
        self.0.manifests.push(ManifestRow {
            repo: repo.into(),
            digest: d(label),
            subject: subject.map(d),
            last_pulled: None,
        });
        for (child, kind) in refs {
            self.0.refs.push(RefRow {
                repo: repo.into(),
                manifest: d(label),
                child: d(child),
                kind: *kind,
            });
        }
        self
    }

    /// An image: `config` and `layers` as references.
    fn image(self, repo: &str, label: &str, at: i64, config: &str, layers: &[&str]) -> G {
        let mut refs = vec![(config, RefKind::Config)];
        refs.extend(layers.iter().map(|l| (*l, RefKind::Layer)));
        self.manifest(repo, label, at, None, &refs)
    }

    /// An index listing `children` (manifests of the same repository).
    fn index(self, repo: &str, label: &str, at: i64, children: &[&str]) -> G {
        let refs: Vec<_> = children.iter().map(|c| (*c, RefKind::Manifest)).collect();
        self.manifest(repo, label, at, None, &refs)
    }

    /// An artifact naming `subject`, with an artifact config.
    fn referrer(self, repo: &str, label: &str, at: i64, subject: &str, config: &str) -> G {
        self.manifest(repo, label, at, Some(subject), &[(config, RefKind::Config)])
    }

    fn tag(mut self, repo: &str, label: &str) -> G {
        self.0.tags.push(crate::meta::graph::TagRow {
            repo: repo.into(),
            name: format!("t{}", self.0.tags.len()),
            digest: d(label),
            updated: 0,
        });
        self
    }

    fn plan(&self, delete_untagged: bool) -> Plan {
        plan(&self.0, CUTOFF, delete_untagged)
    }
}

fn manifests(plan: &Plan) -> Vec<(String, Digest)> {
    plan.manifests.clone()
}

fn sorted(mut v: Vec<(String, Digest)>) -> Vec<(String, Digest)> {
    v.sort();
    v
}

fn m(repo: &str, label: &str) -> (String, Digest) {
    (repo.into(), d(label))
}

/// Blobs as (digest, size) in digest order, as [`Plan::blobs`] lists them.
fn blobs(list: &[(&str, u64)]) -> Vec<(Digest, u64)> {
    let mut v: Vec<_> = list.iter().map(|(l, s)| (d(l), *s)).collect();
    v.sort();
    v
}

fn position(plan: &Plan, repo: &str, label: &str) -> usize {
    plan.manifests
        .iter()
        .position(|k| *k == m(repo, label))
        .unwrap_or_else(|| panic!("{repo}@{label} is not in the plan: {plan:?}"))
}

fn assert_before(plan: &Plan, first: (&str, &str), then: (&str, &str)) {
    assert!(
        position(plan, first.0, first.1) < position(plan, then.0, then.1),
        "{first:?} must be removed before {then:?}: {:?}",
        plan.manifests
    );
}

#[test]
fn an_empty_graph_plans_nothing() {
    assert_eq!(plan(&Graph::default(), CUTOFF, true), Plan::default());
    assert_eq!(plan(&Graph::default(), CUTOFF, false), Plan::default());
}

/// Without `delete_untagged` every manifest lives, tagged or not: only blobs that no
/// manifest has or references, idle since the cutoff, go.
#[test]
fn without_delete_untagged_only_unreferenced_idle_blobs_go() {
    let g = G::default()
        .blob("cfg", 10, OLD)
        .blob("l1", 100, OLD)
        .blob("l2", 200, OLD)
        .blob("stray-old", 5, OLD)
        .blob("stray-new", 6, NEW)
        .image("a", "tagged", OLD, "cfg", &["l1"])
        .tag("a", "tagged")
        .image("a", "untagged", OLD, "cfg", &["l2"])
        .index("a", "untagged-index", OLD, &["untagged"])
        .referrer("a", "sig", OLD, "gone-subject", "cfg");
    let p = g.plan(false);
    assert_eq!(p.manifests, vec![], "no manifest goes");
    assert_eq!(p.blobs, blobs(&[("stray-old", 5)]));
    assert_eq!(p.unfinished, vec![]);

    // The same graph with delete_untagged: the untagged ones go, and what only they kept.
    let p = g.plan(true);
    assert_eq!(
        sorted(manifests(&p)),
        sorted(vec![
            m("a", "untagged"),
            m("a", "untagged-index"),
            m("a", "sig")
        ])
    );
    assert_before(&p, ("a", "untagged-index"), ("a", "untagged"));
    assert_eq!(
        p.blobs,
        blobs(&[
            ("stray-old", 5),
            ("l2", 200),
            ("untagged", 500),
            ("untagged-index", 500),
            ("sig", 500),
        ]),
        "cfg and l1 stay: the tagged image has them"
    );
}

/// The cutoff: a blob last touched before it is idle; at it or after, it stays. A manifest
/// touched at or after it is live (with what it references), tagged or not.
#[test]
fn idle_and_recent_are_judged_by_the_cutoff() {
    let g = G::default()
        .blob("before", 1, CUTOFF - 1)
        .blob("at", 2, CUTOFF)
        .blob("after", 3, NEW)
        .blob("old-layer", 4, OLD)
        .blob("old-cfg", 5, OLD)
        .image("r", "recent", CUTOFF, "old-cfg", &["old-layer"])
        .image("r", "idle", CUTOFF - 1, "old-cfg", &[]);
    for delete_untagged in [false, true] {
        let p = g.plan(delete_untagged);
        let mut want = vec![("before", 1)];
        if delete_untagged {
            want.push(("idle", 500));
        }
        assert_eq!(p.blobs, blobs(&want), "delete_untagged {delete_untagged}");
    }
    let p = g.plan(true);
    assert_eq!(p.manifests, vec![m("r", "idle")]);

    // Everything idle: a cutoff after every time.
    let p = plan(&g.0, i64::MAX, true);
    assert_eq!(
        sorted(manifests(&p)),
        sorted(vec![m("r", "recent"), m("r", "idle")])
    );
    assert_eq!(p.blobs.len(), g.0.blobs.len(), "every blob goes: {p:?}");
    // Nothing idle: a cutoff before every time.
    let p = plan(&g.0, 0, true);
    assert_eq!(p, Plan::default());
}

/// distribution bug #3178: a collection deleted the children of a tagged multi-arch index
/// (they are untagged), breaking every pull of it. A tagged index keeps its children, their
/// configs and layers, and their own blobs.
#[test]
fn a_tagged_index_keeps_its_children_and_their_layers() {
    let g = G::default()
        .blob("cfg-amd64", 10, OLD)
        .blob("cfg-arm64", 11, OLD)
        .blob("layer-amd64", 100, OLD)
        .blob("layer-arm64", 200, OLD)
        .blob("layer-shared", 300, OLD)
        .image(
            "app",
            "amd64",
            OLD,
            "cfg-amd64",
            &["layer-amd64", "layer-shared"],
        )
        .image(
            "app",
            "arm64",
            OLD,
            "cfg-arm64",
            &["layer-arm64", "layer-shared"],
        )
        .index("app", "multi", OLD, &["amd64", "arm64"])
        .tag("app", "multi")
        .blob("unrelated", 1, OLD);
    let p = g.plan(true);
    assert_eq!(p.manifests, vec![], "the children stay");
    assert_eq!(p.blobs, blobs(&[("unrelated", 1)]));

    // An index of indexes: the tag on the top keeps the whole tree.
    let g = g.index("app", "top", OLD, &["multi"]).tag("app", "top");
    let mut only_top = g.0.clone();
    only_top.tags.retain(|t| t.digest == d("top"));
    let p = plan(&only_top, CUTOFF, true);
    assert_eq!(p.manifests, vec![]);
    assert_eq!(p.blobs, blobs(&[("unrelated", 1)]));
}

/// An untagged, idle index goes with its untagged children: the index first (its removal
/// is what lets the children's own checks pass), then the children, then the blobs only
/// they had. A child that is tagged itself stays, with its layers.
#[test]
fn an_untagged_index_goes_with_its_untagged_children_index_first() {
    let g = G::default()
        .blob("cfg", 10, OLD)
        .blob("l1", 100, OLD)
        .blob("l2", 200, OLD)
        .image("app", "c1", OLD, "cfg", &["l1"])
        .image("app", "c2", OLD, "cfg", &["l2"])
        .index("app", "idx", OLD, &["c1", "c2"]);
    let p = g.plan(true);
    assert_eq!(
        sorted(manifests(&p)),
        sorted(vec![m("app", "idx"), m("app", "c1"), m("app", "c2")])
    );
    assert_eq!(p.manifests[0], m("app", "idx"), "the index first: {p:?}");
    assert_eq!(
        p.blobs,
        blobs(&[
            ("cfg", 10),
            ("l1", 100),
            ("l2", 200),
            ("c1", 500),
            ("c2", 500),
            ("idx", 500),
        ])
    );

    let p = g.tag("app", "c2").plan(true);
    assert_eq!(
        sorted(manifests(&p)),
        sorted(vec![m("app", "idx"), m("app", "c1")])
    );
    assert_before(&p, ("app", "idx"), ("app", "c1"));
    assert_eq!(
        p.blobs,
        blobs(&[("l1", 100), ("c1", 500), ("idx", 500)]),
        "cfg and l2 stay with the tagged child"
    );
}

/// Nested indexes: every parent before its children, every subject before its referrers,
/// whatever the order of the rows.
#[test]
fn removal_order_puts_every_parent_before_what_it_lists() {
    let build = |reverse: bool| {
        let mut g = G::default()
            .blob("cfg", 10, OLD)
            .image("r", "leaf1", OLD, "cfg", &[])
            .image("r", "leaf2", OLD, "cfg", &[])
            .index("r", "mid", OLD, &["leaf1", "leaf2"])
            .index("r", "top", OLD, &["mid", "leaf2"])
            .referrer("r", "sig-top", OLD, "top", "cfg")
            .referrer("r", "sig-sig", OLD, "sig-top", "cfg");
        if reverse {
            g.0.manifests.reverse();
            g.0.refs.reverse();
            g.0.blobs.reverse();
        }
        g
    };
    for reverse in [false, true] {
        let p = build(reverse).plan(true);
        assert_eq!(p.manifests.len(), 6, "{p:?}");
        for (first, then) in [
            ("sig-top", "sig-sig"),
            ("top", "sig-top"),
            ("top", "mid"),
            ("top", "leaf2"),
            ("mid", "leaf1"),
            ("mid", "leaf2"),
        ] {
            assert_before(&p, ("r", first), ("r", then));
        }
        assert_eq!(p.blobs.len(), 7, "cfg and the six manifests' own blobs");
    }
    assert_eq!(build(false).plan(true), build(false).plan(true), "pure");
}

/// A referrer (signature, SBOM) lives while its subject lives, and goes with a dead
/// subject, after it (its own check keeps it while the subject is there).
#[test]
fn referrers_follow_their_subject() {
    let g = G::default()
        .blob("cfg", 10, OLD)
        .blob("sig-cfg", 3, OLD)
        .image("app", "live", OLD, "cfg", &[])
        .tag("app", "live")
        .referrer("app", "sig-live", OLD, "live", "sig-cfg")
        .referrer("app", "sig-sig-live", OLD, "sig-live", "sig-cfg")
        .image("app", "dead", OLD, "cfg", &[])
        .blob("dead-sig-cfg", 4, OLD)
        .referrer("app", "sig-dead", OLD, "dead", "dead-sig-cfg");
    let p = g.plan(true);
    assert_eq!(
        sorted(manifests(&p)),
        sorted(vec![m("app", "dead"), m("app", "sig-dead")])
    );
    // The subject first: a referrer's own check keeps it while its subject is there.
    assert_before(&p, ("app", "dead"), ("app", "sig-dead"));
    assert_eq!(
        p.blobs,
        blobs(&[("dead", 500), ("sig-dead", 500), ("dead-sig-cfg", 4)]),
        "the live referrers keep their artifact config"
    );

    // A subject in another repository keeps nothing here.
    let p = G::default()
        .blob("sig-cfg", 3, OLD)
        .image("a", "subject", OLD, "sig-cfg", &[])
        .tag("a", "subject")
        .referrer("b", "sig", OLD, "subject", "sig-cfg")
        .plan(true);
    assert_eq!(p.manifests, vec![m("b", "sig")]);
    assert_eq!(p.blobs, blobs(&[("sig", 500)]));
}

/// Blobs are shared by digest across repositories: a layer that a live manifest of `a`
/// references stays when the only manifest of `b` that had it goes. So does a manifest's own
/// blob when the same manifest is live in another repository.
#[test]
fn a_blob_shared_with_a_live_manifest_in_another_repository_stays() {
    let g = G::default()
        .blob("cfg", 10, OLD)
        .blob("shared", 100, OLD)
        .blob("only-b", 200, OLD)
        .image("a", "live", OLD, "cfg", &["shared"])
        .tag("a", "live")
        .image("b", "dead", OLD, "cfg", &["shared", "only-b"])
        .image("a", "both", OLD, "cfg", &[])
        .tag("a", "both")
        .image("b", "both", OLD, "cfg", &[]);
    let p = g.plan(true);
    assert_eq!(
        sorted(manifests(&p)),
        sorted(vec![m("b", "dead"), m("b", "both")])
    );
    assert_eq!(p.blobs, blobs(&[("only-b", 200), ("dead", 500)]));
}

/// Rows an earlier pass marked and did not finish are listed apart (their removal is only
/// finished), never again as blobs, whatever their times or references.
#[test]
fn sweeping_blobs_land_in_unfinished() {
    let g = G::default()
        .sweeping("half-old", 7, OLD)
        .sweeping("half-new", 8, NEW)
        .sweeping("orphan", 9, 0)
        .blob("idle", 1, OLD)
        .blob("l1", 2, OLD)
        .image("r", "m", OLD, "l1", &["half-old"])
        .tag("r", "m");
    for delete_untagged in [false, true] {
        let p = g.plan(delete_untagged);
        assert_eq!(p.manifests, vec![]);
        assert_eq!(p.blobs, blobs(&[("idle", 1)]));
        assert_eq!(
            p.unfinished,
            blobs(&[("half-old", 7), ("half-new", 8), ("orphan", 9)])
        );
    }
}

/// Rows that do not add up (an index listing a child the repository does not have, two
/// indexes listing each other) neither panic nor lose a manifest.
#[test]
fn odd_graphs_are_planned_without_loss() {
    let p = G::default()
        .index("r", "idx", OLD, &["missing-child"])
        .tag("r", "idx")
        .plan(true);
    assert_eq!(p, Plan::default());

    let cycle = G::default()
        .index("r", "x", OLD, &["y"])
        .index("r", "y", OLD, &["x"]);
    let p = cycle.plan(true);
    assert_eq!(
        sorted(manifests(&p)),
        sorted(vec![m("r", "x"), m("r", "y")])
    );
    let p = cycle.tag("r", "y").plan(true);
    assert_eq!(p, Plan::default(), "a tag on either keeps both");
}

fn report(dry_run: bool, blobs: u64, bytes: u64, manifests: u64) -> Report {
    Report {
        dry_run,
        blobs,
        bytes,
        manifests,
        ..Report::default()
    }
}

#[test]
fn the_summary_reads_as_the_spec_words_it() {
    let gb = 2_300_000_000;
    assert_eq!(
        report(true, 15, gb, 0).summary(),
        "Would delete 15 unreferenced blobs (2.3 GB)"
    );
    assert_eq!(
        report(false, 15, gb, 0).summary(),
        "Deleted 15 blobs, reclaimed 2.3 GB"
    );
    assert_eq!(
        report(true, 15, gb, 2).summary(),
        "Would delete 15 unreferenced blobs (2.3 GB) and 2 untagged manifests"
    );
    assert_eq!(
        report(false, 15, gb, 1).summary(),
        "Deleted 15 blobs and 1 untagged manifest, reclaimed 2.3 GB"
    );
    assert_eq!(
        report(false, 1, 999, 0).summary(),
        "Deleted 1 blob, reclaimed 999 B"
    );
    assert_eq!(
        report(true, 0, 0, 0).summary(),
        "Would delete 0 unreferenced blobs (0 B)"
    );
    assert_eq!(
        report(false, 0, 0, 0).summary(),
        "Deleted 0 blobs, reclaimed 0 B"
    );
    // Orphans are blobs too, in the count and the bytes.
    let with_orphans = Report {
        orphans: 2,
        orphan_bytes: 1_000,
        ..report(false, 1, 500, 0)
    };
    assert_eq!(with_orphans.summary(), "Deleted 3 blobs, reclaimed 1.5 KB");
    let skipped = Report {
        skipped: true,
        ..report(true, 5, 5, 5)
    };
    assert_eq!(
        skipped.summary(),
        "Another node is collecting garbage now; nothing done"
    );
}

#[test]
fn human_bytes_uses_decimal_units_with_one_decimal() {
    for (n, want) in [
        (0, "0 B"),
        (1, "1 B"),
        (999, "999 B"),
        (1_000, "1.0 KB"),
        (1_049, "1.0 KB"),
        (1_050, "1.1 KB"),
        (1_500, "1.5 KB"),
        (999_949, "999.9 KB"),
        (999_950, "1.0 MB"),
        (1_000_000, "1.0 MB"),
        (2_300_000_000, "2.3 GB"),
        (999_999_999_999, "1.0 TB"),
        (1_234_000_000_000_000, "1.2 PB"),
        (u64::MAX, "18446.7 PB"),
    ] {
        assert_eq!(human_bytes(n), want, "{n}");
    }
}
