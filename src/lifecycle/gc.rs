//! Garbage collection: online mark and sweep, safe while clients push and pull.
//!
//! **Mark** is a pure function ([`plan`]) of the metadata's graph read at one instant
//! ([`crate::meta::graph`]): live manifests (with `delete_untagged`, those a tag, an index or
//! a living subject keeps, or touched within the grace period; otherwise all), then live
//! blobs (a live manifest's own digest, config and layers). Garbage is every other blob idle
//! since the cutoff (now minus `gc.grace`), and every manifest not live.
//!
//! **Sweep** never trusts the mark alone: every removal is a metadata write that checks its
//! condition again inside its transaction, so whatever a push did since the read wins.
//! - A manifest goes by [`WriteOp::CollectManifest`], an index before its children and a
//!   subject before its referrers, so that one pass takes a whole untagged tree.
//! - A blob goes in three steps: [`WriteOp::TombstoneBlob`] (checked: idle, unreferenced; its
//!   links go and its row is marked, so no read finds it and no writer links it), then its
//!   bytes (cache tier first, then the backend), then [`WriteOp::ForgetBlob`]. Bytes are
//!   removed only after the commit that forgets them, never before.
//! - Writers that store bytes first claim the digest ([`WriteOp::ClaimBlob`]): the claim
//!   moves the blob's activity time (so a sweep that has not marked it yet leaves it), or
//!   waits while it is marked (so no writer places bytes that the sweep then deletes). A
//!   manifest PUT naming a blob swept meanwhile is refused inside its transaction
//!   (`MANIFEST_BLOB_UNKNOWN`) and the client uploads it again: never a manifest pointing at
//!   missing bytes.
//! - A crash between the steps leaves marked rows, finished by the next pass, and bytes that
//!   no row records: the **orphan sweep** lists the backend and removes bytes older than the
//!   cutoff that no row records and no writer claimed, marking them first the same way.
//!
//! One collector at a time: the metadata's lock ([`crate::meta::Engine::lock_collection`],
//! an advisory lock on PostgreSQL) across nodes, and [`RUNNING`] within a process.

use super::retention::{Expired, Retention, TagState};
use super::ImmutableTags;
use crate::meta::graph::Graph;
use crate::meta::{now_millis, Conflict, Error as MetaError, Meta, RefKind, WriteOp};
use crate::oci::digest::Digest;
use crate::store::blobs::BlobStore;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a collection may remove, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Nothing touched within this long before the pass is removed.
    pub grace: Duration,
    /// Also remove manifests that no tag, index or living subject keeps.
    pub delete_untagged: bool,
    /// Report what would go; change nothing.
    pub dry_run: bool,
    /// List every manifest, blob and tag in the report (`ringyard gc -v`).
    pub verbose: bool,
}

/// What [`plan`] found to remove.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// In removal order: an index before its children, a subject before its referrers (each
    /// removal's own check passes once what kept it went before it).
    pub manifests: Vec<(String, Digest)>,
    /// Unreferenced blobs idle since the cutoff, with their sizes, in digest order.
    pub blobs: Vec<(Digest, u64)>,
    /// Blobs an earlier pass marked and did not finish.
    pub unfinished: Vec<(Digest, u64)>,
}

/// The mark phase: what nothing keeps, as of `graph`. Pure.
pub fn plan(graph: &Graph, cutoff: i64, delete_untagged: bool) -> Plan {
    plan_with(graph, cutoff, &|_| delete_untagged)
}

/// [`plan`], with untagged manifests garbage in the repositories `untagged` names (retention
/// rules may ask it of some repositories only).
pub fn plan_with(graph: &Graph, cutoff: i64, untagged: &dyn Fn(&str) -> bool) -> Plan {
    let active: HashMap<&Digest, i64> = graph
        .blobs
        .iter()
        .map(|b| (&b.digest, b.last_referenced))
        .collect();
    let key = |repo: &str, d: &Digest| (repo.to_string(), d.clone());
    // Edges from a manifest to what it keeps alive: its children (an index) and, reversed,
    // the referrers of a subject.
    let mut children: HashMap<(String, Digest), Vec<Digest>> = HashMap::new();
    for r in graph.refs.iter().filter(|r| r.kind == RefKind::Manifest) {
        children
            .entry(key(&r.repo, &r.manifest))
            .or_default()
            .push(r.child.clone());
    }
    let mut referrers: HashMap<(String, Digest), Vec<Digest>> = HashMap::new();
    for m in &graph.manifests {
        if let Some(s) = &m.subject {
            referrers
                .entry(key(&m.repo, s))
                .or_default()
                .push(m.digest.clone());
        }
    }
    let exists: HashSet<(String, Digest)> = graph
        .manifests
        .iter()
        .map(|m| key(&m.repo, &m.digest))
        .collect();
    let mut live: HashSet<(String, Digest)> = HashSet::new();
    // Roots: every manifest of a repository that keeps untagged ones; elsewhere the tagged
    // ones and those touched since the cutoff.
    let recent_or_kept = graph
        .manifests
        .iter()
        .filter(|m| !untagged(&m.repo) || active.get(&m.digest).is_some_and(|t| *t >= cutoff))
        .map(|m| key(&m.repo, &m.digest));
    let tagged = graph.tags.iter().map(|t| key(&t.repo, &t.digest));
    let mut work: Vec<(String, Digest)> = tagged.chain(recent_or_kept).collect();
    while let Some(k) = work.pop() {
        if !exists.contains(&k) || !live.insert(k.clone()) {
            continue;
        }
        let next = children.get(&k).into_iter().chain(referrers.get(&k));
        for d in next.flatten() {
            work.push(key(&k.0, d));
        }
    }
    let manifests = removal_order(graph, &live, &children);
    let mut kept: HashSet<&Digest> = live.iter().map(|(_, d)| d).collect();
    for r in &graph.refs {
        if live.contains(&key(&r.repo, &r.manifest)) {
            kept.insert(&r.child);
        }
    }
    let mut out = Plan {
        manifests,
        ..Plan::default()
    };
    for b in &graph.blobs {
        if b.sweeping {
            out.unfinished.push((b.digest.clone(), b.size));
        } else if !kept.contains(&b.digest) && b.last_referenced < cutoff {
            out.blobs.push((b.digest.clone(), b.size));
        }
    }
    out.blobs.sort();
    out.unfinished.sort();
    out
}

/// The manifests not `live`, in an order where nothing [`WriteOp::CollectManifest`] checks
/// still keeps the next: an index before the children it lists, a subject before the
/// referrers that name it.
fn removal_order(
    graph: &Graph,
    live: &HashSet<(String, Digest)>,
    children: &HashMap<(String, Digest), Vec<Digest>>,
) -> Vec<(String, Digest)> {
    let dead: Vec<(String, Digest)> = {
        let mut v: Vec<_> = graph
            .manifests
            .iter()
            .map(|m| (m.repo.clone(), m.digest.clone()))
            .filter(|k| !live.contains(k))
            .collect();
        v.sort();
        v
    };
    let is_dead: HashSet<&(String, Digest)> = dead.iter().collect();
    // pointed-at -> how many dead manifests point at it.
    let mut pointers: HashMap<(String, Digest), usize> = HashMap::new();
    let mut edges: HashMap<(String, Digest), Vec<(String, Digest)>> = HashMap::new();
    let subject: HashMap<(String, Digest), &Digest> = graph
        .manifests
        .iter()
        .filter_map(|m| Some(((m.repo.clone(), m.digest.clone()), m.subject.as_ref()?)))
        .collect();
    // first -> then: an index before each child; a subject before each referrer.
    let mut order = |first: (String, Digest), then: (String, Digest)| {
        if is_dead.contains(&first) && is_dead.contains(&then) {
            *pointers.entry(then.clone()).or_default() += 1;
            edges.entry(first).or_default().push(then);
        }
    };
    for from in &dead {
        for child in children.get(from).into_iter().flatten() {
            order(from.clone(), (from.0.clone(), child.clone()));
        }
        if let Some(s) = subject.get(from) {
            order((from.0.clone(), (*s).clone()), from.clone());
        }
    }
    let mut ready: Vec<(String, Digest)> = dead
        .iter()
        .filter(|k| !pointers.contains_key(*k))
        .cloned()
        .collect();
    ready.reverse();
    let mut out = Vec::with_capacity(dead.len());
    let mut placed: HashSet<(String, Digest)> = HashSet::new();
    while let Some(k) = ready.pop() {
        for to in edges.get(&k).into_iter().flatten() {
            if let Some(n) = pointers.get_mut(to) {
                *n -= 1;
                if *n == 0 {
                    ready.push(to.clone());
                }
            }
        }
        placed.insert(k.clone());
        out.push(k);
    }
    // Content addressing rules out cycles; should a graph hold one anyway, its members go
    // last, and their own checks keep whatever is still pointed at.
    out.extend(dead.into_iter().filter(|k| !placed.contains(k)));
    out
}

/// The policies a pass applies before it marks.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    pub retention: &'a Retention,
    pub immutable: &'a ImmutableTags,
}

/// What a pass did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub dry_run: bool,
    /// Another collector held the lock: nothing was done.
    pub skipped: bool,
    /// Tags retention expired (or, in a dry run or by a dry-run rule, would expire).
    pub tags: u64,
    pub manifests: u64,
    pub blobs: u64,
    pub bytes: u64,
    /// Bytes that no row recorded (a crash's leftovers).
    pub orphans: u64,
    pub orphan_bytes: u64,
    /// Found garbage, then kept by its transaction's check: a push got there first.
    pub raced: u64,
    /// What was (or would be) removed, one line each, with [`Options::verbose`].
    pub items: Vec<String>,
    pub elapsed: Duration,
}

impl Report {
    /// The summary line, as the product spec words it: `Would delete 15 unreferenced blobs
    /// (2.3 GB)`, `Deleted 15 blobs, reclaimed 2.3 GB`.
    pub fn summary(&self) -> String {
        if self.skipped {
            return "Another node is collecting garbage now; nothing done".into();
        }
        let blobs = self.blobs + self.orphans;
        let bytes = human_bytes(self.bytes + self.orphan_bytes);
        let manifests = match self.manifests {
            0 => String::new(),
            n => format!(" and {n} untagged manifest{}", plural(n)),
        };
        let tags = match (self.tags, self.dry_run) {
            (0, _) => String::new(),
            (n, true) => format!("; {n} tag{} would expire by retention", plural(n)),
            (n, false) => format!("; {n} tag{} expired by retention", plural(n)),
        };
        if self.dry_run {
            format!(
                "Would delete {blobs} unreferenced blob{} ({bytes}){manifests}{tags}",
                plural(blobs)
            )
        } else {
            format!(
                "Deleted {blobs} blob{}{manifests}, reclaimed {bytes}{tags}",
                plural(blobs)
            )
        }
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Decimal units with one decimal, as `du -h --si` and the product spec write them.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 999.95 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// What collections removed since the start, for `/metrics`.
#[derive(Debug, Default)]
pub struct Totals {
    pub manifests: AtomicU64,
    pub blobs: AtomicU64,
    pub bytes: AtomicU64,
    /// Passes that deleted (scheduled or asked for), and the end of the last one (unix ms).
    pub passes: AtomicU64,
    pub last_ms: AtomicU64,
    /// Time those passes took, in microseconds.
    pub micros: AtomicU64,
}

impl Totals {
    /// Counts a pass that removed something (or found nothing to remove); dry runs and
    /// skipped passes change nothing.
    pub fn add(&self, r: &Report) {
        if r.dry_run || r.skipped {
            return;
        }
        self.passes.fetch_add(1, Relaxed);
        self.manifests.fetch_add(r.manifests, Relaxed);
        self.blobs.fetch_add(r.blobs + r.orphans, Relaxed);
        self.bytes.fetch_add(r.bytes + r.orphan_bytes, Relaxed);
        self.last_ms.store(now_millis().max(0) as u64, Relaxed);
        let micros = u64::try_from(r.elapsed.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(micros, Relaxed);
    }
}

/// Where a pass is, for a progress bar: `phase` with `done` of `total` items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
}

/// The tags of `graph` with their manifests' pull times, as retention judges them.
fn tag_states(graph: &Graph) -> Vec<TagState> {
    let pulled: HashMap<(&str, &Digest), i64> = graph
        .manifests
        .iter()
        .filter_map(|m| Some(((m.repo.as_str(), &m.digest), m.last_pulled?)))
        .collect();
    graph
        .tags
        .iter()
        .map(|t| TagState {
            repo: t.repo.clone(),
            name: t.name.clone(),
            digest: t.digest.clone(),
            updated: t.updated,
            last_pulled: pulled.get(&(t.repo.as_str(), &t.digest)).copied(),
        })
        .collect()
}

/// One collection at a time in this process (the schedule, a command, the start's finish).
pub static RUNNING: Mutex<()> = Mutex::new(());

/// Blobs marked, deleted and forgotten per round: a round's marks are one group commit.
const ROUND: usize = 64;

/// Runs one pass on this thread (a job's, a command's: it blocks). Errors name what failed;
/// what was removed before the failure is counted in the log, and the next pass goes on.
pub fn collect(
    meta: &Meta,
    store: &BlobStore,
    opts: Options,
    rules: Rules<'_>,
    progress: &dyn Fn(Progress),
) -> Result<Report, String> {
    exclusive(meta, store, opts, rules, progress, Pass::run)
}

/// Finishes what a collection killed halfway left marked (their bytes, then their rows), and
/// nothing else: at a start, so that a writer claiming one of those digests does not wait
/// for the next scheduled pass. Reads only the marked rows. Blocks.
pub fn finish_unfinished(meta: &Meta, store: &BlobStore) -> Result<Report, String> {
    let opts = Options {
        grace: Duration::ZERO,
        delete_untagged: false,
        dry_run: false,
        verbose: false,
    };
    let rules = Rules {
        retention: &Retention::default(),
        immutable: &ImmutableTags::default(),
    };
    exclusive(meta, store, opts, rules, &|_| {}, |mut pass| async move {
        let marked = pass
            .meta
            .marked_blobs()
            .await
            .map_err(|e| format!("reading the marked blobs: {e}"))?;
        pass.finish(&marked).await?;
        Ok(pass.report)
    })
}

/// Runs `work` as the only collector (of this process, and of the fleet's metadata), on an
/// event loop of this thread's own.
fn exclusive<'a, F, Fut>(
    meta: &'a Meta,
    store: &'a BlobStore,
    opts: Options,
    rules: Rules<'a>,
    progress: &'a dyn Fn(Progress),
    work: F,
) -> Result<Report, String>
where
    F: FnOnce(Pass<'a>) -> Fut,
    Fut: std::future::Future<Output = Result<Report, String>>,
{
    // A pass asked for while another runs here waits for it, then runs.
    let _one = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let Some(_lock) = meta
        .lock_collection()
        .map_err(|e| format!("taking the collection lock: {e}"))?
    else {
        return Ok(Report {
            skipped: true,
            dry_run: opts.dry_run,
            ..Report::default()
        });
    };
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .map_err(|e| format!("starting an event loop for the collection: {e}"))?;
    let pass = Pass {
        meta,
        store,
        opts,
        rules,
        progress,
        report: Report {
            dry_run: opts.dry_run,
            ..Report::default()
        },
    };
    let out = rt.block_on(async {
        let out = work(pass).await;
        // Connections parked by this loop (S3) end with it.
        crate::store::s3::conn::close_idle();
        out
    });
    out.map(|mut r| {
        r.elapsed = started.elapsed();
        r
    })
}

struct Pass<'a> {
    meta: &'a Meta,
    store: &'a BlobStore,
    opts: Options,
    rules: Rules<'a>,
    progress: &'a dyn Fn(Progress),
    report: Report,
}

impl Pass<'_> {
    async fn run(mut self) -> Result<Report, String> {
        let now = now_millis();
        let cutoff = now.saturating_sub(self.opts.grace.as_millis() as i64);
        let graph = self.graph().await?;
        let expired = self
            .rules
            .retention
            .expired(self.rules.immutable, &tag_states(&graph), now);
        // Read again after tags went: the mark sees what retention left. A dry run marks as
        // if they had gone.
        let graph = match self.expire(&expired).await? {
            true => self.graph().await?,
            false if self.opts.dry_run => {
                let mut g = graph;
                g.tags.retain(|t| {
                    !expired
                        .iter()
                        .any(|e| !e.dry_run && (&e.tag.repo, &e.tag.name) == (&t.repo, &t.name))
                });
                g
            }
            false => graph,
        };
        let retention = self.rules.retention;
        let everywhere = self.opts.delete_untagged;
        let untagged = |repo: &str| everywhere || retention.deletes_untagged(repo);
        let plan = plan_with(&graph, cutoff, &untagged);
        if !self.opts.dry_run {
            self.finish(&plan.unfinished).await?;
        }
        self.manifests(&plan.manifests, cutoff).await?;
        self.blobs(&plan.blobs, cutoff).await?;
        let recorded: HashSet<&Digest> = graph.blobs.iter().map(|b| &b.digest).collect();
        self.orphans(&recorded, cutoff).await?;
        // Sessions read before the backend lists what it keeps for them.
        let live: HashSet<String> = self
            .meta
            .uploads()
            .await
            .map_err(|e| format!("reading upload sessions: {e}"))?
            .into_iter()
            .map(|u| u.id)
            .collect();
        let (n, bytes) = self
            .store
            .strays(&live, cutoff, !self.opts.dry_run)
            .await
            .map_err(|e| format!("sweeping what finished uploads left: {e}"))?;
        self.report.orphans += n;
        self.report.orphan_bytes += bytes;
        if n > 0 {
            self.item(|| {
                format!(
                    "{n} assembled upload object(s) of sessions gone ({})",
                    human_bytes(bytes)
                )
            });
        }
        if !self.opts.dry_run {
            self.write(WriteOp::ForgetClaims { before: cutoff })
                .await
                .map_err(|e| format!("forgetting old claims: {e}"))?;
        }
        Ok(self.report)
    }

    async fn graph(&self) -> Result<Graph, String> {
        self.meta
            .gc_graph()
            .await
            .map_err(|e| format!("reading the metadata: {e}"))
    }

    /// Removes the tags retention expired (but those of dry-run rules, and all in a dry
    /// run); whether any went.
    async fn expire(&mut self, expired: &[Expired]) -> Result<bool, String> {
        let mut removed = false;
        for e in expired {
            let t = &e.tag;
            let what = format!("tag {}:{} ({}, {})", t.repo, t.name, t.digest, e.rule);
            if e.dry_run {
                // The rule only reports; the summary counts what goes.
                self.item(|| format!("{what}: would expire (dry-run rule)"));
                continue;
            }
            if self.opts.dry_run {
                self.report.tags += 1;
                self.item(|| format!("{what}: would expire"));
                continue;
            }
            let op = WriteOp::ExpireTag {
                repo: t.repo.clone(),
                tag: t.name.clone(),
                digest: t.digest.clone(),
                updated: t.updated,
            };
            match self.write(op).await {
                Ok(true) => {
                    removed = true;
                    self.report.tags += 1;
                    self.item(|| what);
                }
                Ok(false) => {}
                Err(MetaError::Conflict(Conflict::Live)) => self.report.raced += 1,
                Err(e) => return Err(format!("expiring {what}: {e}")),
            }
        }
        Ok(removed)
    }

    async fn write(&self, op: WriteOp) -> Result<bool, MetaError> {
        self.meta.write(op).await.map(|o| o.existed)
    }

    /// Marked rows of a pass that died: their bytes, then the rows.
    async fn finish(&mut self, unfinished: &[(Digest, u64)]) -> Result<(), String> {
        let marked: Vec<(&Digest, u64)> = unfinished.iter().map(|(d, n)| (d, *n)).collect();
        self.remove_and_forget(&marked).await?;
        for (digest, size) in marked {
            self.count_blob(digest, size);
        }
        Ok(())
    }

    async fn manifests(&mut self, list: &[(String, Digest)], cutoff: i64) -> Result<(), String> {
        let total = list.len() as u64;
        for (n, (repo, digest)) in list.iter().enumerate() {
            (self.progress)(Progress {
                phase: "manifests",
                done: n as u64,
                total,
            });
            if self.opts.dry_run {
                self.report.manifests += 1;
                self.item(|| format!("manifest {repo}@{digest}"));
                continue;
            }
            let op = WriteOp::CollectManifest {
                repo: repo.clone(),
                digest: digest.clone(),
                cutoff,
            };
            match self.write(op).await {
                Ok(true) => {
                    self.report.manifests += 1;
                    self.item(|| format!("manifest {repo}@{digest}"));
                }
                Ok(false) => {}
                Err(MetaError::Conflict(Conflict::Live)) => self.report.raced += 1,
                Err(e) => return Err(format!("removing manifest {repo}@{digest}: {e}")),
            }
        }
        Ok(())
    }

    async fn blobs(&mut self, list: &[(Digest, u64)], cutoff: i64) -> Result<(), String> {
        let total = list.len() as u64;
        for (n, round) in list.chunks(ROUND).enumerate() {
            (self.progress)(Progress {
                phase: "blobs",
                done: (n * ROUND) as u64,
                total,
            });
            if self.opts.dry_run {
                for (digest, size) in round {
                    self.count_blob(digest, *size);
                }
                continue;
            }
            // Queued together: one group commit marks the round.
            let marks: Vec<_> = round
                .iter()
                .map(|(digest, _)| {
                    self.meta.write(WriteOp::TombstoneBlob {
                        digest: digest.clone(),
                        cutoff,
                    })
                })
                .collect();
            let mut marked = Vec::new();
            for ((digest, size), mark) in round.iter().zip(marks) {
                match mark.await {
                    Ok(_) => marked.push((digest, *size)),
                    Err(MetaError::Conflict(Conflict::Live)) => self.report.raced += 1,
                    Err(e) => return Err(format!("marking {digest}: {e}")),
                }
            }
            self.remove_and_forget(&marked).await?;
            for (digest, size) in marked {
                self.count_blob(digest, size);
            }
        }
        Ok(())
    }

    /// One line of what the pass removes (or would), kept only when asked to list them: a
    /// scheduled pass over millions of blobs keeps none.
    fn item(&mut self, text: impl FnOnce() -> String) {
        if self.opts.verbose {
            self.report.items.push(text());
        }
    }

    fn count_blob(&mut self, digest: &Digest, size: u64) {
        self.report.blobs += 1;
        self.report.bytes += size;
        self.item(|| format!("blob {digest} ({})", human_bytes(size)));
    }

    /// The bytes of marked blobs, several at once, then their rows.
    async fn remove_and_forget(&self, marked: &[(&Digest, u64)]) -> Result<(), String> {
        let removals: Vec<_> = marked
            .iter()
            .map(|(d, _)| {
                let (store, d) = (self.store.clone(), (*d).clone());
                monoio::spawn(async move { store.remove(&d).await.map_err(|e| (d, e)) })
            })
            .collect();
        for r in removals {
            r.await
                .map_err(|(d, e)| format!("deleting the bytes of {d}: {e}"))?;
        }
        let forgets: Vec<_> = marked
            .iter()
            .map(|(d, _)| {
                self.meta.write(WriteOp::ForgetBlob {
                    digest: (*d).clone(),
                })
            })
            .collect();
        for f in forgets {
            f.await
                .map_err(|e| format!("forgetting a removed blob: {e}"))?;
        }
        Ok(())
    }

    /// Bytes in the backend that no row of the graph records, older than the cutoff: each is
    /// marked (refused if a row or a claim appeared since), deleted, forgotten.
    async fn orphans(&mut self, recorded: &HashSet<&Digest>, cutoff: i64) -> Result<(), String> {
        let mut after: Option<Digest> = None;
        loop {
            let page = self
                .store
                .list(after.as_ref(), 1000)
                .await
                .map_err(|e| format!("listing the stored blobs: {e}"))?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.digest.clone());
            let old = page
                .iter()
                .filter(|l| !recorded.contains(&l.digest) && l.modified < cutoff);
            let mut marked = Vec::new();
            for l in old {
                if !self.opts.dry_run {
                    let mark = WriteOp::TombstoneOrphan {
                        digest: l.digest.clone(),
                        size: l.size,
                        cutoff,
                    };
                    match self.write(mark).await {
                        Ok(_) => {}
                        Err(MetaError::Conflict(Conflict::Live)) => {
                            self.report.raced += 1;
                            continue;
                        }
                        Err(e) => return Err(format!("marking orphan {}: {e}", l.digest)),
                    }
                }
                marked.push((&l.digest, l.size));
            }
            if !self.opts.dry_run {
                self.remove_and_forget(&marked).await?;
            }
            for (digest, size) in marked {
                self.report.orphans += 1;
                self.report.orphan_bytes += size;
                self.item(|| format!("orphan {digest} ({})", human_bytes(size)));
            }
        }
    }
}

#[cfg(test)]
mod tests;
