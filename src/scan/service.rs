//! Scanning as the registry runs it: the store, the policy, the webhook endpoints, and the
//! work of one scan job pass ([`Scanning::pass`]): push events into scan requests, a rescan
//! of stored results after an import, then pending scans one by one. The API's reads
//! ([`Scanning::state`]) and the pull policy's verdicts come from the stored rows, the
//! verdict's input cached per event loop for a few seconds.

use super::layer::Limits;
use super::osv::finding::Finding;
use super::osv::record::Record;
use super::policy::{Policy, Scanned, Verdict};
use super::scanner::{self, Blobs, ImageReport, Report};
use super::store::{Completed, Requested, ScanRow, ScanStore, Stamp, Status};
use super::webhook::Endpoint;
use crate::meta::{now_millis, Meta, PushEvent, WriteOp};
use crate::oci::digest::Digest;
use crate::store::blobs::BlobStore;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running row not heard of for this long on a shared database belongs to a scanner that
/// died; a live one's heartbeat moves its rows every [`HEARTBEAT`].
const STALE: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long one pass keeps taking scans before it returns to events and imports.
const PASS_BUDGET: Duration = Duration::from_secs(30);
/// How often results of images no longer stored are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long a verdict's input is reused by an event loop.
const VERDICT_TTL: Duration = Duration::from_secs(2);

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Figures {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub rescanned: AtomicU64,
    pub blocked: AtomicU64,
    pub webhooks_delivered: AtomicU64,
    pub webhooks_failed: AtomicU64,
    /// Seconds spent scanning (layers read, packages found), in milliseconds.
    pub scan_millis: AtomicU64,
}

impl Figures {
    pub fn snapshot(&self) -> crate::observe::metrics::ScanFigures {
        crate::observe::metrics::ScanFigures {
            completed: self.completed.load(Relaxed),
            failed: self.failed.load(Relaxed),
            rescans: self.rescanned.load(Relaxed),
            pulls_blocked: self.blocked.load(Relaxed),
            webhooks_delivered: self.webhooks_delivered.load(Relaxed),
            webhooks_failed: self.webhooks_failed.load(Relaxed),
            seconds: self.scan_millis.load(Relaxed) as f64 / 1000.0,
        }
    }
}

pub struct Scanning {
    pub store: Arc<ScanStore>,
    pub policy: Policy,
    pub on_push: bool,
    pub limits: Limits,
    pub webhooks: Vec<Endpoint>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether other processes take scans from the same store (PostgreSQL): then a running
    /// row is another's until it is stale; alone, every running row at start is a dead one's.
    shared: bool,
    /// The data version the last rescan brought results to (-1: none yet).
    rescanned_to: AtomicI64,
    /// Unix ms of the start: running rows older than this are a previous life's (alone).
    started: i64,
    /// This process among the scanners of a shared store (random, per start).
    owner: String,
    /// Bytes a second a scan reads while pushes are in progress (0: no limit).
    pace: u64,
    /// How far this start's backfill got (see [`Scanning::backfill`]).
    backfilled: std::sync::Mutex<Walk>,
    /// The walk dropping results of images no longer stored (see [`Scanning::prune`]): when
    /// the current round started, and the last digest it looked at.
    pruned: std::sync::Mutex<(Option<Instant>, String)>,
    pub figures: Figures,
}

/// A walk over repositories done a page per pass, so that a large registry's walk does not
/// hold back the scans of new pushes.
#[derive(Debug, Default)]
enum Walk {
    #[default]
    Start,
    /// Every repository up to this one (inclusive) is done.
    After(String),
    Done,
}

/// Tags a backfill pass looks at (whole repositories; at least one).
const BACKFILL_PAGE: usize = 2_000;
/// Scan rows a prune pass looks at.
const PRUNE_PAGE: i64 = 2_000;

/// What a scan row says, for the API and the policy.
#[derive(Debug, Clone)]
pub struct State {
    /// What the row was when read: a later read of the same stamp needs no reparse.
    pub stamp: Option<Stamp>,
    pub row: Option<ScanRow>,
    pub report: Option<Report>,
    /// The report's distinct findings, worst first: computed once per read, not per pull.
    pub findings: Vec<Finding>,
}

impl State {
    /// The word the API and the policy use.
    pub fn status(&self) -> &'static str {
        match &self.row {
            None => "not scanned",
            Some(r) => r.status.as_str(),
        }
    }
}

/// A digest's state as an event loop read it, and the verdicts judged from it per
/// repository (a pull asks the policy once per repository and read, not once per GET).
struct Cached {
    at: Instant,
    state: Arc<State>,
    verdicts: Vec<(String, Verdict)>,
    /// A request is reading a newer state: the others go on with this one meanwhile, so an
    /// expiry costs one store read per event loop, not one per request in flight.
    refreshing: bool,
}

thread_local! {
    /// Per event loop: digest -> what was read when, so a hot image's pulls ask the store
    /// once every few seconds, not once per GET.
    static STATES: RefCell<HashMap<Digest, Cached>> = RefCell::new(HashMap::new());
}

impl Scanning {
    pub fn new(
        store: ScanStore,
        shared: bool,
        cfg: &crate::config::Config,
    ) -> Result<Scanning, Vec<String>> {
        let policy = Policy::new(&cfg.scan_policies, &cfg.scan_allowlist)?;
        let mut errors = Vec::new();
        let webhooks: Vec<Endpoint> = cfg
            .scan_webhooks
            .iter()
            .filter_map(|w| Endpoint::new(w).map_err(|e| errors.push(e)).ok())
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        let tls = if webhooks.iter().any(|w| w.shown().starts_with("https:")) {
            Some(crate::store::s3::tls::client_config(None).map_err(|e| vec![e])?)
        } else {
            None
        };
        Ok(Scanning {
            store: Arc::new(store),
            policy,
            on_push: cfg.scan_on_push,
            limits: Limits {
                max_expanded: cfg.scan_max_expanded as u64,
                ..Limits::default()
            },
            webhooks,
            tls,
            shared,
            rescanned_to: AtomicI64::new(-1),
            started: now_millis(),
            owner: {
                let mut b = [0u8; 8];
                getrandom::getrandom(&mut b).map_err(|e| vec![e.to_string()])?;
                b.iter().map(|x| format!("{x:02x}")).collect()
            },
            pace: cfg.scan_pace_while_pushing as u64,
            backfilled: Default::default(),
            pruned: Default::default(),
            figures: Figures::default(),
        })
    }

    /// The stored scan of `digest`, its report parsed. Blocks (a pool thread calls it).
    pub fn read_state(store: &ScanStore, digest: &Digest) -> Result<State, String> {
        let (row, stamp) = store.get_stamped(digest.as_str())?.unzip();
        let report = row
            .as_ref()
            .filter(|r| r.status == Status::Completed)
            .and_then(stored_report);
        let findings = report
            .as_ref()
            .map(|r| r.distinct_findings().into_iter().cloned().collect())
            .unwrap_or_default();
        Ok(State {
            stamp,
            row,
            report,
            findings,
        })
    }

    /// The last result stored for `digest` whatever its row's status now (a rescan's row is
    /// running or pending while the result it replaces is still there): what new findings
    /// are new against.
    fn previous(&self, digest: &str) -> Result<Option<Report>, String> {
        Ok(self.store.get(digest)?.as_ref().and_then(stored_report))
    }

    /// The state of `digest`, from this event loop's cache when fresh.
    pub async fn state(
        &self,
        pool: &crate::blocking::Pool,
        digest: &Digest,
    ) -> Result<Arc<State>, String> {
        let now = Instant::now();
        let cached = STATES.with(|s| {
            let mut map = s.borrow_mut();
            let Some(c) = map.get_mut(digest) else {
                return Err(None);
            };
            if now.duration_since(c.at) < VERDICT_TTL || c.refreshing {
                return Ok(c.state.clone());
            }
            c.refreshing = true;
            Err(Some(c.state.clone()))
        });
        let expired = match cached {
            Ok(st) => return Ok(st),
            Err(expired) => expired,
        };
        let store = self.store.clone();
        let d = digest.clone();
        // Expired: only the stamp is read while the row is unchanged, so a hot image's large
        // result is parsed once per change, not once per expiry per event loop. The same
        // state is cached anew, its verdicts judged again (an allowlist entry may expire).
        let read = pool
            .run(move || match expired {
                Some(old) if old.stamp.is_some() && store.stamp(d.as_str())? == old.stamp => {
                    Ok(old)
                }
                _ => Scanning::read_state(&store, &d).map(Arc::new),
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        let st = match read {
            Ok(st) => st,
            Err(e) => {
                STATES.with(|s| {
                    if let Some(c) = s.borrow_mut().get_mut(digest) {
                        c.refreshing = false;
                    }
                });
                return Err(e);
            }
        };
        STATES.with(|s| {
            let mut map = s.borrow_mut();
            if map.len() > 10_000 {
                map.retain(|_, c| now.duration_since(c.at) < VERDICT_TTL);
            }
            let entry = Cached {
                at: now,
                state: st.clone(),
                verdicts: Vec::new(),
                refreshing: false,
            };
            map.insert(digest.clone(), entry);
        });
        Ok(st)
    }

    /// The pull policy's verdict on `digest` in `repo` (Allow at once where no rule could
    /// refuse); judged once per repository and read of the state.
    pub async fn verdict(
        &self,
        pool: &crate::blocking::Pool,
        repo: &str,
        digest: &Digest,
    ) -> Result<Verdict, String> {
        if !self.policy.governs(repo) {
            return Ok(Verdict::Allow);
        }
        let now = Instant::now();
        let known = STATES.with(|s| {
            let map = s.borrow();
            let c = map
                .get(digest)
                .filter(|c| now.duration_since(c.at) < VERDICT_TTL || c.refreshing)?;
            c.verdicts
                .iter()
                .find(|(r, _)| r == repo)
                .map(|(_, v)| v.clone())
        });
        let verdict = match known {
            Some(v) => v,
            None => {
                let st = self.state(pool, digest).await?;
                let scanned = match &st.report {
                    Some(_) => Scanned::Completed(&st.findings),
                    None => Scanned::Not(st.status()),
                };
                let v = self.policy.judge(repo, scanned, now_millis() / 1000);
                STATES.with(|s| {
                    if let Some(c) = s.borrow_mut().get_mut(digest) {
                        let judged = c.verdicts.iter().any(|(r, _)| r == repo);
                        if !judged && Arc::ptr_eq(&c.state, &st) && c.verdicts.len() < 64 {
                            c.verdicts.push((repo.to_string(), v.clone()));
                        }
                    }
                });
                v
            }
        };
        if matches!(verdict, Verdict::Block(_)) {
            self.figures.blocked.fetch_add(1, Relaxed);
        }
        Ok(verdict)
    }

    /// Keeps this process's running rows fresh while it lives (a shared store only), so that
    /// other nodes take them over only once it is gone. Runs on a thread of its own: a pass
    /// may scan one large image for longer than the stale time.
    pub fn start_heartbeat(self: &Arc<Self>) {
        if !self.shared {
            return;
        }
        let me = Arc::downgrade(self);
        let _ = std::thread::Builder::new()
            .name("ringyard-scan-heartbeat".into())
            .spawn(move || loop {
                std::thread::sleep(HEARTBEAT);
                let Some(s) = me.upgrade() else { return };
                if let Err(e) = s.store.heartbeat(&s.owner, now_millis()) {
                    crate::log::warn(format_args!("scan heartbeat: {e}"));
                }
            });
    }

    /// One pass of the scan job. Blocks.
    /// `pushing` says whether uploads are in progress on this node: scans then read layers at
    /// most `scan.pace_while_pushing` bytes a second (see [`Paced`]).
    pub fn pass(
        &self,
        meta: &Meta,
        blobs: &BlobStore,
        pushing: &dyn Fn() -> bool,
    ) -> Result<String, String> {
        background_priority();
        let requested = self.take_events(meta)? + self.backfill(meta)?;
        let pruned = self.prune(meta)?;
        let rescanned = self.rescan(meta)?;
        let reader = StoreBlobs {
            rt: RefCell::new(None),
            blobs,
            pushing,
            pace: self.pace,
        };
        let deadline = Instant::now() + PASS_BUDGET;
        let (mut done, mut failed) = (0, 0);
        while Instant::now() < deadline {
            let now = now_millis();
            let stale_before = match self.shared {
                true => now - STALE.as_millis() as i64,
                false => self.started,
            };
            let Some(claim) = self.store.claim(&self.owner, now, stale_before)? else {
                break;
            };
            let Ok(digest) = Digest::parse(&claim.digest) else {
                self.store
                    .fail(&claim.digest, "not a digest", now_millis())?;
                continue;
            };
            let started = Instant::now();
            match self.scan_one(meta, &reader, &digest, &claim.repository) {
                Ok(()) => {
                    done += 1;
                    self.figures.completed.fetch_add(1, Relaxed);
                }
                Err(why) => {
                    failed += 1;
                    self.figures.failed.fetch_add(1, Relaxed);
                    crate::log::warn(format_args!(
                        "scan of {}@{digest} failed: {why}",
                        claim.repository
                    ));
                    self.store.fail(&claim.digest, &why, now_millis())?;
                }
            }
            self.figures
                .scan_millis
                .fetch_add(started.elapsed().as_millis() as u64, Relaxed);
        }
        crate::store::s3::conn::close_idle();
        Ok(format!(
            "{requested} images queued, {pruned} results of removed images dropped, {rescanned} results re-evaluated, {done} scanned, {failed} failed"
        ))
    }

    /// Push events into scan requests (or only forgotten, with scan.on_push off).
    fn take_events(&self, meta: &Meta) -> Result<usize, String> {
        let events: Vec<PushEvent> =
            crate::blocking::block_on(meta.push_events(500)).map_err(|e| e.to_string())?;
        if events.is_empty() {
            return Ok(0);
        }
        let mut queued = 0;
        if self.on_push {
            for e in &events {
                let r = self
                    .store
                    .request(e.digest.as_str(), &e.repo, false, now_millis())?;
                queued += usize::from(r == Requested::Queued);
            }
        }
        crate::blocking::block_on(meta.write(WriteOp::ForgetPushEvents(events)))
            .map_err(|e| e.to_string())?;
        Ok(queued)
    }

    /// Once per start, with scanning on push: every tagged image without a scan is queued,
    /// so that images stored before scanning was turned on (or before this ringyard recorded
    /// push events) are scanned too, as zot does; untagged ones are scanned when asked for
    /// (`POST .../scan`). An index's platforms are scanned with it. A page of repositories
    /// per pass ([`BACKFILL_PAGE`] tags).
    fn backfill(&self, meta: &Meta) -> Result<usize, String> {
        if !self.on_push {
            return Ok(0);
        }
        let mut walk = self.backfilled.lock().unwrap_or_else(|p| p.into_inner());
        let (mut queued, mut seen) = (0, 0);
        while seen < BACKFILL_PAGE {
            let after = match &*walk {
                Walk::Done => break,
                Walk::Start => None,
                Walk::After(repo) => Some(repo.as_str()),
            };
            let (next, _) = crate::blocking::block_on(meta.repositories_after(after, 1))
                .map_err(|e| e.to_string())?;
            let Some(repo) = next.into_iter().next() else {
                *walk = Walk::Done;
                break;
            };
            let (tags, q) = self.backfill_repository(meta, &repo)?;
            (seen, queued) = (seen + tags, queued + q);
            *walk = Walk::After(repo);
        }
        Ok(queued)
    }

    /// Queues the tagged images of `repo` without a scan: (tags looked at, images queued).
    fn backfill_repository(&self, meta: &Meta, repo: &str) -> Result<(usize, usize), String> {
        let wait = |e: crate::meta::Error| e.to_string();
        let (mut seen, mut queued, mut after) = (0, 0, None::<String>);
        loop {
            let page = crate::blocking::block_on(meta.tags_after(repo, after.as_deref(), 500))
                .map_err(wait)?;
            let Some((tags, more)) = page else {
                return Ok((seen, queued));
            };
            seen += tags.len();
            let mut wanted = Vec::with_capacity(tags.len());
            for tag in &tags {
                if let Some(t) = crate::blocking::block_on(meta.tag(repo, tag)).map_err(wait)? {
                    wanted.push((t.digest.as_str().to_string(), repo.to_string()));
                }
            }
            wanted.sort();
            wanted.dedup_by(|a, b| a.0 == b.0);
            queued += self.store.request_missing(&wanted, now_millis())? as usize;
            match (more, tags.last()) {
                (true, Some(last)) => after = Some(last.clone()),
                _ => return Ok((seen, queued)),
            }
        }
    }

    /// Hourly, starting at start: the results of images no longer stored (collected by
    /// `gc`) are dropped with their package lists, so that the scan store does not keep
    /// every image ever pushed. A page of [`PRUNE_PAGE`] rows per pass.
    fn prune(&self, meta: &Meta) -> Result<usize, String> {
        let mut state = self.pruned.lock().unwrap_or_else(|p| p.into_inner());
        let (round, after) = &mut *state;
        if after.is_empty() {
            if round.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
                return Ok(0);
            }
            *round = Some(Instant::now());
        }
        let digests = self.store.digests_after(after, PRUNE_PAGE)?;
        let mut gone = Vec::new();
        for d in &digests {
            let Ok(digest) = Digest::parse(d) else {
                continue;
            };
            let stored =
                crate::blocking::block_on(meta.blob(&digest)).map_err(|e| e.to_string())?;
            if stored.is_none() {
                gone.push(d.clone());
            }
        }
        self.store.forget(&gone)?;
        // A short page ends the round.
        *after = match digests.last() {
            Some(last) if digests.len() as i64 == PRUNE_PAGE => last.clone(),
            _ => String::new(),
        };
        Ok(gone.len())
    }

    /// After an import: every completed result computed against other data is matched again
    /// from its stored packages (no layer read), or only moved to the new version when no
    /// package it has is named by the new data and it had no findings.
    fn rescan(&self, meta: &Meta) -> Result<usize, String> {
        let Some(version) = self.store.current_version()? else {
            return Ok(0);
        };
        if self.rescanned_to.load(Relaxed) == version {
            return Ok(0);
        }
        let mut count = 0;
        loop {
            let rows = self.store.outdated(version, 200)?;
            if rows.is_empty() {
                break;
            }
            let digests: Vec<String> = rows.iter().map(|r| r.digest.clone()).collect();
            let touched = self.store.touched_by(version, &digests)?;
            let untouched: Vec<String> = digests
                .iter()
                .filter(|d| !touched.contains(d))
                .cloned()
                .collect();
            self.store.move_to(version, &untouched)?;
            for row in rows.iter().filter(|r| touched.contains(&r.digest)) {
                let previous = stored_report(row);
                let mut report = previous.clone().unwrap_or_default();
                self.evaluate(&mut report, version)?;
                self.complete(
                    meta,
                    &row.digest,
                    &row.repository,
                    &report,
                    previous.as_ref(),
                    version,
                )?;
                count += 1;
            }
        }
        self.figures.rescanned.fetch_add(count as u64, Relaxed);
        self.rescanned_to.store(version, Relaxed);
        Ok(count)
    }

    /// Matches `report`'s packages against the data of `version`.
    fn evaluate(&self, report: &mut Report, version: i64) -> Result<(), String> {
        let keys = report.keys();
        let records: Vec<Record> = self
            .store
            .records_for(version, &keys)?
            .iter()
            .filter_map(|j| Record::parse(j.as_bytes()).ok())
            .collect();
        report.evaluate(&records);
        Ok(())
    }

    fn current(&self) -> Result<i64, String> {
        // Version 0: no data imported yet; packages are still listed, nothing matches.
        Ok(self.store.current_version()?.unwrap_or(0))
    }

    fn scan_one(
        &self,
        meta: &Meta,
        blobs: &dyn Blobs,
        digest: &Digest,
        repo: &str,
    ) -> Result<(), String> {
        let version = self.current()?;
        let previous = self.previous(digest.as_str())?;
        let mut known = |child: &Digest| -> Option<ImageReport> {
            let st = Scanning::read_state(&self.store, child).ok()?;
            let row = st.row?;
            (row.data_version == Some(version))
                .then_some(st.report?)
                .and_then(|mut r| (r.images.len() == 1).then(|| r.images.remove(0)))
        };
        let mut children: Vec<ImageReport> = Vec::new();
        let mut report = scanner::scan(blobs, digest, self.limits, &mut known, &mut |image| {
            children.push(image.clone())
        })
        .map_err(|e| e.0)?;
        // An index's images scanned here are stored as their own results too (their pulls
        // by digest are judged by them).
        for image in children {
            let mut own = Report {
                images: vec![image],
                notes: Vec::new(),
            };
            self.evaluate(&mut own, version)?;
            let child = own.images[0].digest.clone();
            let before = self.previous(&child)?;
            self.store.request(&child, repo, true, now_millis())?;
            self.complete(meta, &child, repo, &own, before.as_ref(), version)?;
        }
        self.evaluate(&mut report, version)?;
        let done = self.complete(
            meta,
            digest.as_str(),
            repo,
            &report,
            previous.as_ref(),
            version,
        );
        // An import while this scan ran: the result is against the data before it, so the
        // next pass's rescan must look again.
        if self.current()? != version {
            self.rescanned_to.store(-1, Relaxed);
        }
        done
    }

    /// Stores a result, with one webhook delivery per endpoint when it found something the
    /// previous result did not have.
    fn complete(
        &self,
        meta: &Meta,
        digest: &str,
        repo: &str,
        report: &Report,
        previous: Option<&Report>,
        version: i64,
    ) -> Result<(), String> {
        let new = report.new_since(previous);
        let notify = match (new.is_empty(), self.webhooks.is_empty()) {
            (false, false) => Some(self.webhook_body(meta, digest, repo, report, &new)),
            _ => None,
        };
        let done = Completed {
            data_version: version,
            counts: report.counts(),
            result: serde_json::to_string(report).map_err(|e| e.to_string())?,
            packages: report.keys(),
            notify,
            endpoints: self.webhooks.len(),
        };
        self.store
            .complete(digest, &done, now_millis())
            .map_err(|e| e.to_string())
    }

    fn webhook_body(
        &self,
        meta: &Meta,
        digest: &str,
        repo: &str,
        report: &Report,
        new: &[&Finding],
    ) -> String {
        let tags = Digest::parse(digest)
            .ok()
            .and_then(|d| crate::blocking::block_on(meta.tags_of(repo, &d)).ok())
            .unwrap_or_default();
        let [c, h, m, l, u] = report.counts();
        serde_json::json!({
            "event": "vulnerabilities_found",
            "repository": repo,
            "digest": digest,
            "tags": tags,
            "vulnerabilities": {"critical": c, "high": h, "medium": m, "low": l, "unknown": u},
            "new": new.iter().map(|f| detail(f, None)).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// One pass of the delivery job: due outbox rows posted to their endpoint. Blocks.
    pub fn deliver(&self) -> Result<String, String> {
        let now = now_millis();
        let due = self.store.due(now, 50)?;
        let (mut ok, mut failed) = (0, 0);
        for d in due {
            // The row names its endpoint by position (`...#2`); a configuration that no
            // longer has it drops the row.
            let endpoint =
                d.id.rsplit_once('#')
                    .and_then(|(_, i)| i.parse::<usize>().ok())
                    .and_then(|i| self.webhooks.get(i));
            let Some(endpoint) = endpoint else {
                self.store.delivered(&d.id)?;
                continue;
            };
            let body = with_delivery_id(&d.body, &d.id);
            match endpoint.post(&body, self.tls.as_ref()) {
                Ok(()) => {
                    ok += 1;
                    self.figures.webhooks_delivered.fetch_add(1, Relaxed);
                    self.store.delivered(&d.id)?;
                }
                Err(why) => {
                    failed += 1;
                    self.figures.webhooks_failed.fetch_add(1, Relaxed);
                    let attempt = d.attempts as u64;
                    let next = (attempt < endpoint.retries)
                        .then(|| now + super::webhook::backoff(attempt).as_millis() as i64);
                    if next.is_none() {
                        crate::log::warn(format_args!(
                            "webhook {} gave up after {} attempts: {why}",
                            endpoint.shown(),
                            attempt + 1
                        ));
                    }
                    self.store.retry(&d.id, next, &why)?;
                }
            }
        }
        Ok(format!("{ok} delivered, {failed} failed"))
    }
}

/// The report a row stores (whatever its status now), if it reads.
fn stored_report(row: &ScanRow) -> Option<Report> {
    serde_json::from_str(row.result.as_deref()?).ok()
}

/// Lowers this thread's CPU (nice 19) and disk (idle class) priority: a scan decompresses
/// and reads whole layers, which on a busy node would take the cores and the disk from the
/// event loops serving pushes and pulls; it proceeds in the time they leave. Linux applies
/// both per thread; failures (a kernel or sandbox without them) only leave the default.
fn background_priority() {
    // SAFETY: gettid, setpriority and ioprio_set take integers and change only this
    // thread's scheduling attributes.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_IDLE: libc::c_long = 3;
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid as libc::c_long,
            IOPRIO_CLASS_IDLE << 13,
        );
    }
}

/// The body with its delivery id, so a receiver can tell a repeat (a delivery whose answer
/// was lost is sent again).
fn with_delivery_id(body: &str, id: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("delivery".into(), id.into());
            serde_json::Value::Object(m).to_string()
        }
        _ => body.to_string(),
    }
}

/// A finding as the API and webhooks show it (the issue's `details` shape).
pub fn detail(f: &Finding, platform: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": f.id,
        "cve": f.cve.as_deref().unwrap_or(&f.id),
        "severity": f.severity,
        "package": f.package,
        "installed_version": f.installed,
        "fixed_version": f.fixed,
        // One decimal, as scores are written (an f32 would show 9.800000190734863).
        "cvss": f.cvss.map(|c| (f64::from(c) * 10.0).round() / 10.0),
        "description": f.summary,
        "ecosystem": f.ecosystem,
        "path": f.path,
    });
    if let Some(b) = &f.binary {
        v["binary"] = b.as_str().into();
    }
    if let Some(p) = platform {
        v["platform"] = p.into();
    }
    v
}

type FusionRt = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// Blobs from the registry's store, read on the scan job's thread (a miss on a remote
/// backend fills the local tier first, through this thread's own event loop).
struct StoreBlobs<'a> {
    /// Made on the first blob a pass reads: most passes find nothing to scan.
    rt: RefCell<Option<FusionRt>>,
    blobs: &'a BlobStore,
    pushing: &'a dyn Fn() -> bool,
    pace: u64,
}

impl Blobs for StoreBlobs<'_> {
    fn open(&self, digest: &Digest) -> Result<Box<dyn scanner::Blob + '_>, String> {
        let mut rt = match self.rt.take() {
            Some(rt) => rt,
            None => monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build()
                .map_err(|e| format!("starting an event loop for scans: {e}"))?,
        };
        let got = rt.block_on(self.blobs.get(digest));
        self.rt.replace(Some(rt));
        let file = got
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "missing from the blob store".to_string())?;
        let f = file.file().try_clone().map_err(|e| e.to_string())?;
        Ok(Box::new(Paced {
            inner: ReadAt { file: f, pos: 0 },
            pushing: self.pushing,
            pace: self.pace,
            window: Instant::now(),
            read: 0,
        }))
    }
}

/// A layer read that yields to pushes: while uploads are in progress it reads at most `pace`
/// bytes a second (`scan.pace_while_pushing`; 0: no limit), so that a scan (which reads, decompresses and walks
/// a whole layer) takes little of the disk and the cores from the pushes that follow the one
/// it scans; alone it reads at full speed. Measured by `compare.sh --only scan`: a 1 GiB
/// push while the previous one's scan ran went at 0.49x of scanning off at nice 19 and idle
/// I/O priority alone (this VM's disk scheduler does not weigh them).
struct Paced<'a, R> {
    inner: R,
    pushing: &'a dyn Fn() -> bool,
    pace: u64,
    window: Instant,
    read: u64,
}

impl<R: Read> Read for Paced<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // A window is a quarter of a second's worth of bytes.
        if self.pace > 0 && self.read >= self.pace / 4 {
            let due = Duration::from_millis(250);
            let spent = self.window.elapsed();
            if spent < due && (self.pushing)() {
                std::thread::sleep(due - spent);
            }
            self.window = Instant::now();
            self.read = 0;
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Seeking is not reading: it costs no pace.
impl<R: std::io::Seek> std::io::Seek for Paced<'_, R> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }
}

/// Reads a blob file from its start by position: the descriptor is shared with the store's
/// cache of open files (a `dup`), whose offset another read may have moved.
struct ReadAt {
    file: std::fs::File,
    pos: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for ReadAt {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        use std::io::SeekFrom;
        let (base, by) = match to {
            SeekFrom::Start(n) => (0, i128::from(n)),
            SeekFrom::End(n) => (self.file.metadata()?.len(), i128::from(n)),
            SeekFrom::Current(n) => (self.pos, i128::from(n)),
        };
        self.pos = u64::try_from(i128::from(base) + by)
            .map_err(|_| std::io::Error::other("seek before the start of a blob"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::index::tests::{dg, record};

    fn scanning(dir: &std::path::Path) -> Scanning {
        let store = ScanStore::open_sqlite(&dir.join("scan.db")).unwrap();
        Scanning::new(store, false, &crate::config::Config::default()).unwrap()
    }

    fn rows(s: &Scanning) -> usize {
        s.store.digests_after("", 1_000_000).unwrap().len()
    }

    /// The backfill and the prune each go a page a pass, resume where they stopped, and end.
    #[test]
    fn backfill_and_prune_walk_a_page_a_pass() {
        let dir = tempfile::tempdir().unwrap();
        let s = scanning(dir.path());
        let meta = Meta::in_memory();
        for repo in ["a/one", "b/two", "c/three"] {
            for i in 0..1_500 {
                let label = format!("{repo}-{i}");
                let put = meta.put_manifest(
                    repo,
                    record(&label, None),
                    Vec::new(),
                    Some(format!("t{i}")),
                    Vec::new(),
                );
                crate::blocking::block_on(put).unwrap();
            }
        }
        // Two repositories reach the page (whole repositories), then the third, then none.
        assert_eq!(s.backfill(&meta).unwrap(), 3_000);
        assert_eq!(s.backfill(&meta).unwrap(), 1_500);
        assert_eq!(s.backfill(&meta).unwrap(), 0);
        assert_eq!(rows(&s), 4_500);
        let first = s.store.get(dg("b/two-7").as_str()).unwrap().unwrap();
        assert_eq!(
            (first.status, first.repository.as_str()),
            (Status::Pending, "b/two")
        );

        // Results of 2,500 images the metadata does not hold: dropped over the round's
        // four passes (7,000 rows, 2,000 a pass, the short fourth ending it), then nothing
        // until the next round.
        let gone: Vec<(String, String)> = (0..2_500)
            .map(|i| (dg(&format!("gone-{i}")).as_str().to_string(), "x/y".into()))
            .collect();
        s.store.request_missing(&gone, 1).unwrap();
        let mut dropped = Vec::new();
        for _ in 0..5 {
            dropped.push(s.prune(&meta).unwrap());
        }
        assert_eq!(dropped.iter().sum::<usize>(), 2_500, "{dropped:?}");
        assert_eq!(dropped[4], 0, "the round ended: {dropped:?}");
        assert_eq!(rows(&s), 4_500);
        s.store.request_missing(&gone[..1], 2).unwrap();
        assert_eq!(s.prune(&meta).unwrap(), 0, "the next round waits an hour");
    }
}
