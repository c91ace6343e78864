//! Garbage collection on the real binary: `ringyard gc --dry-run|--delete` on a stopped
//! registry's data directory (its figures, its `-v` lines, and exactly what it removes),
//! what untagged deletion keeps (an index's children, referrers of a living subject, a layer
//! mounted into another repository) and what it takes, the scheduled pass (`gc.interval`)
//! racing eight pushers, a collector killed -9 in the middle of a sweep, and a fleet of two
//! nodes on PostgreSQL and S3. After every collection, the blobs left are exactly the ones
//! that the manifests still kept reference, and every image acknowledged and still kept
//! pulls byte-identical.
//! `ringyard gc` asking a running registry (through its socket) is in the first test; the
//! retention tests use it throughout.

use crate::common::*;
use crate::scale_out::{assert_blob, Services};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ringyard");
const OCTET: (&str, &str) = ("Content-Type", "application/octet-stream");
/// Completed passes of the scheduled collection, on GET /metrics.
const GC_RUNS: &str = "ringyard_job_runs_total{job=\"gc\"}";
const GC_FAILURES: &str = "ringyard_job_failures_total{job=\"gc\"}";
const GC_BLOBS: &str = "ringyard_gc_blobs_deleted_total";
const GC_MANIFESTS: &str = "ringyard_gc_manifests_deleted_total";
const GC_BYTES: &str = "ringyard_gc_bytes_reclaimed_total";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// How long the pushers push: `default` seconds, or GC_SOAK_SECS (a soak of minutes
/// by hand; CI keeps the default).
fn soak(default: u64) -> Duration {
    let secs = std::env::var("GC_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(secs)
}

/// `ringyard gc ARGS`, without the `RINGYARD_*` and `AWS_*` variables of this process.
fn gc_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("gc").args(args);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("RINGYARD_") || n.starts_with("AWS_") {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// `ringyard gc ARGS` to its exit (at most two minutes): (status, stdout, stderr).
fn run_gc(args: &[&str]) -> (ExitStatus, String, String) {
    run_to_exit(gc_command(args), Duration::from_secs(120))
}

/// `ringyard gc ARGS`, which must succeed: its standard output.
#[track_caller]
fn gc_ok(args: &[&str]) -> String {
    let (status, out, err) = run_gc(args);
    assert!(
        status.success(),
        "ringyard gc {args:?}: {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    out
}

/// Decimal units with one decimal ("12.4 KB"), "N B" under 1000: the figures of the spec's
/// lines, computed here on their own (half-way cases are the caller's to avoid).
pub(crate) fn si(n: u64) -> String {
    if n < 1000 {
        return format!("{n} B");
    }
    let (tenths, unit) = if n < 999_950 {
        assert_ne!(
            n % 100,
            50,
            "{n} bytes: a half-way figure, choose other sizes"
        );
        ((n + 50) / 100, "KB")
    } else {
        ((n + 50_000) / 100_000, "MB")
    };
    format!("{}.{} {unit}", tenths / 10, tenths % 10)
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The digests of the files under `<root>/blobs` (`sha256/ab/abcd...`). A file of any other
/// shape is named by its path, so that a comparison shows it.
fn stored_blobs(root: &Path) -> BTreeSet<String> {
    let base = root.join("blobs");
    files_under(&base)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&base).unwrap().to_path_buf();
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match parts.as_slice() {
                [alg, shard, name]
                    if alg == "sha256"
                        && name.len() == 64
                        && name.starts_with(shard.as_str())
                        && name.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    format!("sha256:{name}")
                }
                _ => format!("unexpected file {}", rel.display()),
            }
        })
        .collect()
}

/// The digests of the blob objects in an s3s-fs bucket under the prefix `registry/` (each
/// object is a file there); other files under `registry/blobs` are named by their path.
fn bucket_blobs(bucket: &Path) -> BTreeSet<String> {
    let base = bucket.join("registry").join("blobs");
    files_under(&base)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&base).unwrap().to_path_buf();
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match parts.as_slice() {
                [alg, name]
                    if alg == "sha256"
                        && name.len() == 64
                        && name.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    format!("sha256:{name}")
                }
                _ => format!("unexpected object file {}", rel.display()),
            }
        })
        .collect()
}

/// Panics, listing (some of) the differences, unless `got` is `want`.
#[track_caller]
fn assert_same_set(what: &str, got: &BTreeSet<String>, want: &BTreeSet<String>) {
    if got == want {
        return;
    }
    let extra: Vec<&String> = got.difference(want).collect();
    let missing: Vec<&String> = want.difference(got).collect();
    panic!(
        "{what}: {} found, {} expected; {} not expected (first: {:?}); {} missing (first: \
         {:?})",
        got.len(),
        want.len(),
        extra.len(),
        &extra[..extra.len().min(8)],
        missing.len(),
        &missing[..missing.len().min(8)]
    );
}

/// The sample `series` (a name with its labels) of GET /metrics.
#[track_caller]
fn metric(c: &mut Client, series: &str) -> f64 {
    let r = c.get("/metrics");
    assert_status(&r, 200);
    let text = r.text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no sample {series} on /metrics:\n{text}"))
}

/// Waits until `more` passes of the scheduled collection ended on `server` since `from` (a
/// value of [`GC_RUNS`]); panics after `limit`. Every pass must have succeeded.
#[track_caller]
fn await_passes(server: &Server, from: f64, more: f64, limit: Duration) {
    let mut c = server.client();
    let deadline = Instant::now() + limit;
    loop {
        let runs = metric(&mut c, GC_RUNS);
        if runs >= from + more {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} passes of gc in {limit:?}: only {}",
            more,
            runs - from
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        metric(&mut c, GC_FAILURES),
        0.0,
        "a scheduled collection failed:\n{}",
        tail(&server.stderr(), 4000)
    );
}

/// A small pseudo-random generator (splitmix64); the tests print their seeds.
struct Rng(u64);

impl Rng {
    fn seeded() -> (Rng, u64) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let seed = nanos ^ ((std::process::id() as u64) << 32);
        (Rng(seed), seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A manifest and the blobs it references (an image's config and layers, an artifact's).
#[derive(Clone, Debug)]
struct Image {
    media_type: &'static str,
    manifest: Vec<u8>,
    digest: String,
    /// Config first, then the layers.
    blobs: Vec<(String, Vec<u8>)>,
}

impl Image {
    /// An OCI image manifest of `config` and `layers`.
    fn new(config: Vec<u8>, layers: Vec<Vec<u8>>) -> Image {
        let descs: Vec<(String, usize)> =
            layers.iter().map(|l| (sha256_digest(l), l.len())).collect();
        let manifest = image_manifest(&(sha256_digest(&config), config.len()), &descs);
        let mut blobs = vec![(sha256_digest(&config), config)];
        blobs.extend(layers.into_iter().map(|l| (sha256_digest(&l), l)));
        Image {
            media_type: OCI_MANIFEST,
            digest: sha256_digest(&manifest),
            manifest,
            blobs,
        }
    }

    /// An image of `layers` with the config that [`image_config`] makes for them.
    fn of(layers: Vec<Vec<u8>>) -> Image {
        let digests: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
        Image::new(image_config(&digests), layers)
    }

    /// Any manifest (`doc`) with the blobs it references.
    fn raw(media_type: &'static str, doc: serde_json::Value, blobs: Vec<Vec<u8>>) -> Image {
        let manifest = serde_json::to_vec(&doc).unwrap();
        Image {
            media_type,
            digest: sha256_digest(&manifest),
            manifest,
            blobs: blobs.into_iter().map(|b| (sha256_digest(&b), b)).collect(),
        }
    }

    /// Its descriptor in another manifest.
    fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.manifest.len()})
    }

    /// The digests it keeps: its manifest's, then its blobs'.
    fn digests(&self) -> Vec<String> {
        let mut v = vec![self.digest.clone()];
        v.extend(self.blobs.iter().map(|(d, _)| d.clone()));
        v
    }

    /// Pushes its blobs and its manifest by `reference`; asserts 201 for each.
    #[track_caller]
    fn push(&self, c: &mut Client, repo: &str, reference: &str) {
        for (_, b) in &self.blobs {
            push_blob(c, repo, b);
        }
        self.put(c, repo, reference);
    }

    /// Puts its manifest by `reference` (its blobs pushed already); asserts 201.
    #[track_caller]
    fn put(&self, c: &mut Client, repo: &str, reference: &str) {
        let r = c.put(
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", self.media_type)],
            &self.manifest,
        );
        assert_status(&r, 201);
        assert_eq!(
            r.header("Docker-Content-Digest"),
            Some(self.digest.as_str())
        );
    }

    /// Its manifest by `reference` and every blob, byte-identical from `repo`.
    #[track_caller]
    fn assert_pulls(&self, c: &mut Client, repo: &str, reference: &str) {
        let r = c.get(&format!("/v2/{repo}/manifests/{reference}"));
        assert_status(&r, 200);
        assert!(
            r.body == self.manifest,
            "GET {repo}:{reference} on {}: not the manifest pushed ({})",
            c.addr(),
            self.digest
        );
        for (d, b) in &self.blobs {
            assert_blob(c, repo, d, b);
        }
    }
}

/// `digest` is gone from `repo`: 404 BLOB_UNKNOWN.
#[track_caller]
fn assert_blob_gone(c: &mut Client, repo: &str, digest: &str) {
    let r = c.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_error(&r, 404, &["BLOB_UNKNOWN"]);
}

/// The manifest `digest` is gone from `repo`: 404 MANIFEST_UNKNOWN.
#[track_caller]
fn assert_manifest_gone(c: &mut Client, repo: &str, digest: &str) {
    let r = c.get(&format!("/v2/{repo}/manifests/{digest}"));
    assert_error(&r, 404, &["MANIFEST_UNKNOWN"]);
}

/// The `-v` lines of a collection: the item lines, then the summary (returned apart).
fn verbose_lines(out: &str) -> (BTreeSet<String>, String) {
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    let summary = lines.pop().unwrap_or_default();
    (lines.into_iter().collect(), summary)
}

// ---------------------------------------------------------------------------------------------
// Pushers: images pushed, retagged and deleted, with what the registry acknowledged
// ---------------------------------------------------------------------------------------------

/// Clients of the nodes, one request on each in turn (one node: always that one).
struct Alternating {
    clients: Vec<Client>,
    turn: usize,
}

impl Alternating {
    fn new(nodes: &[&Server], first: usize) -> Alternating {
        Alternating {
            clients: nodes.iter().map(|n| n.client()).collect(),
            turn: first,
        }
    }

    fn next(&mut self) -> &mut Client {
        self.turn = (self.turn + 1) % self.clients.len();
        &mut self.clients[self.turn]
    }
}

/// What one pusher was told: the image last acknowledged for each of its tags, and every
/// manifest acknowledged and not deleted since (tagged or not).
#[derive(Default)]
struct Ledger {
    tags: BTreeMap<(String, String), Image>,
    manifests: BTreeMap<(String, String), Image>,
    pushed: u64,
    /// Pushes refused while a collection raced them, then pushed again.
    retried: u64,
    /// Of those, refused at a blob upload (503) rather than at the manifest (400).
    blob_refusals: u64,
    /// Pushes whose manifest came a while after their blobs.
    slow: u64,
    retagged: u64,
    deleted: u64,
}

struct Load<'a> {
    nodes: Vec<&'a Server>,
    repos: &'a [&'a str],
    /// Layers every pusher uses now and then, in every repository.
    pool: &'a [Vec<u8>],
    /// Whether the collection removes untagged manifests (then only tagged ones are kept).
    untagged_go: bool,
    /// How long a slow client waits between its blobs and its manifest.
    slow: Duration,
    until: Instant,
    seed: u64,
}

/// Pushes an image's blobs (always uploaded, never trusted from an earlier HEAD or push),
/// then its manifest by `tag`: Err when a collection raced it (a blob upload answered 503
/// UNAVAILABLE because the blob is being removed, or a manifest PUT 400
/// MANIFEST_BLOB_UNKNOWN); any other answer fails the test.
fn try_push(
    c: &mut Alternating,
    repo: &str,
    tag: &str,
    img: &Image,
    pause: Duration,
) -> Result<(), String> {
    for (d, b) in &img.blobs {
        let c = c.next();
        let r = c.post(
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[OCTET],
            b,
        );
        match r.status {
            201 => {}
            503 if r.error_code() == "UNAVAILABLE"
                && r.text().contains("garbage collection is removing") =>
            {
                return Err(format!("blob {d}: 503 {}", r.text()));
            }
            _ => panic!(
                "upload of {d} to {repo} on {}: {} {:?}",
                c.addr(),
                r.status,
                r.text()
            ),
        }
    }
    std::thread::sleep(pause);
    let c = c.next();
    let r = c.put(
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", OCI_MANIFEST)],
        &img.manifest,
    );
    match r.status {
        201 => Ok(()),
        400 if r.error_code() == "MANIFEST_BLOB_UNKNOWN" => {
            Err(format!("manifest {repo}:{tag}: 400 {}", r.text()))
        }
        _ => panic!(
            "PUT {repo}:{tag} on {}: {} {:?}",
            c.addr(),
            r.status,
            r.text()
        ),
    }
}

/// One pusher until `load.until`: new images (a layer of its own, now and then layers of the
/// shared pool), tags moved to other images, manifests deleted by digest.
fn pusher(load: &Load, id: u64) -> Ledger {
    let mut rng = Rng(load
        .seed
        .wrapping_add(id.wrapping_mul(0x1234_5678_9abc_def1)));
    let mut c = Alternating::new(&load.nodes, id as usize);
    let mut led = Ledger::default();
    let mut n = 0u64;
    while Instant::now() < load.until {
        let repo = load.repos[rng.below(load.repos.len() as u64) as usize].to_string();
        let tag = format!("p{id}-{}", rng.below(4));
        let action = rng.below(10);
        let held: Vec<(String, String)> = led
            .tags
            .keys()
            .filter(|(r, _)| *r == repo)
            .cloned()
            .collect();
        if action < 6 || held.is_empty() {
            // A new image: its own layer, and up to two of the pool.
            n += 1;
            let own_len = 100 + rng.below(3000) as usize;
            let mut layers = vec![pseudo_random(own_len, rng.next())];
            for _ in 0..rng.below(3) {
                let l = &load.pool[rng.below(load.pool.len() as u64) as usize];
                if !layers.contains(l) {
                    layers.push(l.clone());
                }
            }
            let img = Image::of(layers);
            // Now and then a slow client: its manifest comes after the grace period and a
            // pass, which may have taken the blobs it uploaded (then it is refused).
            let mut pause = match rng.below(20) {
                0 => load.slow,
                _ => Duration::ZERO,
            };
            if !pause.is_zero() {
                led.slow += 1;
            }
            let mut tries = 0;
            loop {
                match try_push(&mut c, &repo, &tag, &img, std::mem::take(&mut pause)) {
                    Ok(()) => break,
                    Err(why) => {
                        tries += 1;
                        led.retried += 1;
                        led.blob_refusals += u64::from(why.starts_with("blob"));
                        assert!(
                            tries < 30,
                            "pusher {id}: image {n} refused {tries} times, last: {why}"
                        );
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            led.pushed += 1;
            led.tags.insert((repo.clone(), tag), img.clone());
            led.manifests.insert((repo, img.digest.clone()), img);
        } else if action < 8 {
            // The image of one of its tags, by another tag: never refused (it is kept).
            let from = &held[rng.below(held.len() as u64) as usize];
            let img = led.tags[from].clone();
            img.put(c.next(), &repo, &tag);
            led.retagged += 1;
            led.tags.insert((repo, tag), img);
        } else {
            // One of its tagged manifests (with every tag on it), or with untagged manifests
            // kept, any of its manifests.
            let digest = if load.untagged_go {
                led.tags[&held[rng.below(held.len() as u64) as usize]]
                    .digest
                    .clone()
            } else {
                let mine: Vec<&(String, String)> =
                    led.manifests.keys().filter(|(r, _)| *r == repo).collect();
                mine[rng.below(mine.len() as u64) as usize].1.clone()
            };
            let r = c.next().delete(&format!("/v2/{repo}/manifests/{digest}"));
            assert_status(&r, 202);
            led.deleted += 1;
            led.tags
                .retain(|(r, _), img| !(*r == repo && img.digest == digest));
            led.manifests.remove(&(repo, digest));
        }
    }
    led
}

/// Runs `pushers` pushers at once until `load.until`; their ledgers, merged.
fn run_load(load: &Load, pushers: u64) -> Ledger {
    let ledgers: Vec<Ledger> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..pushers)
            .map(|id| s.spawn(move || pusher(load, id)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all = Ledger::default();
    for l in ledgers {
        all.tags.extend(l.tags);
        all.manifests.extend(l.manifests);
        all.pushed += l.pushed;
        all.retried += l.retried;
        all.slow += l.slow;
        all.blob_refusals += l.blob_refusals;
        all.retagged += l.retagged;
        all.deleted += l.deleted;
    }
    all
}

/// The layers of the shared pool.
fn pool() -> Vec<Vec<u8>> {
    (0..6)
        .map(|i| generated(9000 + i, 1500 + 17 * i as usize))
        .collect()
}

/// Every digest the images keep.
fn kept<'a>(images: impl IntoIterator<Item = &'a Image>) -> BTreeSet<String> {
    images.into_iter().flat_map(Image::digests).collect()
}

// ---------------------------------------------------------------------------------------------
// The command on a stopped registry
// ---------------------------------------------------------------------------------------------

#[test]
fn the_spec_demo_lines_print_their_figures() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let r = root.to_str().unwrap().to_string();
    let s = Server::start_with(&root, &[]);
    let mut c = s.client();
    // Two images sharing a config; the second is deleted by digest, its tag with it.
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}"#.to_vec();
    let kept_img = Image::new(config.clone(), vec![generated(1, 5000), generated(2, 3000)]);
    let gone = Image::new(config, vec![generated(3, 7000), generated(4, 4321)]);
    kept_img.push(&mut c, "demo/app", "stable");
    gone.push(&mut c, "demo/app", "old");
    let r_del = c.delete(&format!("/v2/demo/app/manifests/{}", gone.digest));
    assert_status(&r_del, 202);
    assert!(s.stop().success());

    // The three blobs only the deleted manifest referenced: its own, and its two layers.
    let garbage: Vec<(String, u64)> = std::iter::once((gone.digest.clone(), gone.manifest.len()))
        .chain(gone.blobs[1..].iter().map(|(d, b)| (d.clone(), b.len())))
        .map(|(d, n)| (d, n as u64))
        .collect();
    let total: u64 = garbage.iter().map(|(_, n)| n).sum();
    let size = si(total);
    assert!(size.ends_with(" KB"), "{size}");

    // With the default grace (1h), everything is too recent.
    let out = gc_ok(&["--dry-run", "--root", &r]);
    assert_eq!(out, "Would delete 0 unreferenced blobs (0 B)\n");

    let cfg = config_file(dir.path(), "gc:\n  grace: 0s\n");
    let cfg = cfg.to_str().unwrap();
    let out = gc_ok(&["--dry-run", "--config", cfg, "--root", &r]);
    assert_eq!(out, format!("Would delete 3 unreferenced blobs ({size})\n"));
    let out = gc_ok(&["--dry-run", "-v", "--config", cfg, "--root", &r]);
    let (items, summary) = verbose_lines(&out);
    let want: BTreeSet<String> = garbage
        .iter()
        .map(|(d, n)| format!("blob {d} ({})", si(*n)))
        .collect();
    assert_eq!(items, want, "{out}");
    assert_eq!(
        summary,
        format!("Would delete 3 unreferenced blobs ({size})")
    );
    // A dry run changes nothing.
    let everything: BTreeSet<String> = kept([&kept_img, &gone]);
    assert_same_set(
        "blobs after the dry runs",
        &stored_blobs(&root),
        &everything,
    );

    let out = gc_ok(&["--delete", "--config", cfg, "--root", &r]);
    assert_eq!(out, format!("Deleted 3 blobs, reclaimed {size}\n"));
    assert_same_set(
        "blobs after gc --delete",
        &stored_blobs(&root),
        &kept([&kept_img]),
    );
    let out = gc_ok(&["--delete", "--config", cfg, "--root", &r]);
    assert_eq!(out, "Deleted 0 blobs, reclaimed 0 B\n");

    let s = Server::start_with(&root, &["--gc-grace", "0s"]);
    let mut c = s.client();
    kept_img.assert_pulls(&mut c, "demo/app", "stable");
    kept_img.assert_pulls(&mut c, "demo/app", &kept_img.digest);
    for (d, _) in &garbage {
        assert_blob_gone(&mut c, "demo/app", d);
    }
    assert_manifest_gone(&mut c, "demo/app", &gone.digest);

    // The registry running: the command asks it (its grace, 0s here, not the command's
    // configuration), and it holds the data directory all along.
    let stray = generated(9, 1234);
    let stray_digest = push_blob(&mut c, "demo/app", &stray);
    let out = gc_ok(&["--dry-run", "-v", "--root", &r]);
    assert_eq!(
        out,
        format!("blob {stray_digest} (1.2 KB)\nWould delete 1 unreferenced blob (1.2 KB)\n")
    );
    let out = gc_ok(&["--delete", "--root", &r]);
    assert_eq!(out, "Deleted 1 blob, reclaimed 1.2 KB\n");
    assert_blob_gone(&mut c, "demo/app", &stray_digest);
    assert_eq!(metric(&mut c, GC_BLOBS), 1.0);
    assert_eq!(metric(&mut c, GC_BYTES), 1234.0);
    assert_eq!(metric(&mut c, "ringyard_gc_runs_total"), 1.0);
    kept_img.assert_pulls(&mut c, "demo/app", "stable");
    assert!(s.stop().success());
    eprintln!(
        "the_spec_demo_lines_print_their_figures: {:?}",
        started.elapsed()
    );
}

#[test]
fn untagged_indexes_referrers_and_mounts() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let r = root.to_str().unwrap().to_string();
    let s = Server::start_with(&root, &[]);
    let mut c = s.client();
    let layer = |name: &str| format!("layer {name} ").repeat(40).into_bytes();

    // A tagged multi-arch index whose children were pushed by digest, untagged: all kept,
    // their layers too (distribution bug #3178 removed them).
    let amd64 = Image::of(vec![layer("amd64")]);
    let arm64 = Image::of(vec![layer("arm64"), layer("arm64 second")]);
    amd64.push(&mut c, "multi", &amd64.digest);
    arm64.push(&mut c, "multi", &arm64.digest);
    let mut children = Vec::new();
    for (img, arch) in [(&amd64, "amd64"), (&arm64, "arm64")] {
        let mut d = img.descriptor();
        d["platform"] = json!({"architecture": arch, "os": "linux"});
        children.push(d);
    }
    let index = Image::raw(
        OCI_INDEX,
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}),
        vec![],
    );
    index.put(&mut c, "multi", "v1");

    // A referrer of a tagged image: kept.
    let subject = Image::of(vec![layer("subject")]);
    subject.push(&mut c, "app", "v1");
    let artifact = |subject: &Image, name: &str| {
        let config = format!("{{\"signer\":\"{name}\"}}").into_bytes();
        let data = format!("signature {name} ").repeat(20).into_bytes();
        Image::raw(
            OCI_MANIFEST,
            json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.example.signature.v1",
                "config": {"mediaType": "application/vnd.example.signature.config.v1+json",
                           "digest": sha256_digest(&config), "size": config.len()},
                "layers": [{"mediaType": "application/octet-stream",
                            "digest": sha256_digest(&data), "size": data.len()}],
                "subject": subject.descriptor(),
            }),
            vec![config, data],
        )
    };
    let signature = artifact(&subject, "kept");
    signature.push(&mut c, "app", &signature.digest);
    // A referrer of an untagged manifest nothing else keeps: both go, with their blobs.
    let orphan_subject = Image::of(vec![layer("untagged subject")]);
    orphan_subject.push(&mut c, "app", &orphan_subject.digest);
    let orphan_signature = artifact(&orphan_subject, "gone");
    orphan_signature.push(&mut c, "app", &orphan_signature.digest);
    // An untagged plain manifest: goes.
    let plain = Image::of(vec![layer("plain untagged")]);
    plain.push(&mut c, "app", &plain.digest);

    // A layer mounted from `a` into `b`, where a tagged image references it; `a`'s image is
    // deleted: the layer stays, and still pulls from `b`.
    let shared = layer("mounted");
    let in_a = Image::of(vec![shared.clone()]);
    in_a.push(&mut c, "a", "v1");
    let shared_digest = sha256_digest(&shared);
    let m = c.post(
        &format!("/v2/b/blobs/uploads/?mount={shared_digest}&from=a"),
        &[],
        b"",
    );
    assert_status(&m, 201);
    let in_b = Image::of(vec![shared.clone(), layer("b only")]);
    for (d, b) in &in_b.blobs {
        if *d != shared_digest {
            push_blob(&mut c, "b", b);
        }
    }
    in_b.put(&mut c, "b", "v1");
    let del = c.delete(&format!("/v2/a/manifests/{}", in_a.digest));
    assert_status(&del, 202);
    assert!(s.stop().success());

    let survivors = [&amd64, &arm64, &index, &subject, &signature, &in_b];
    let keep = kept(survivors);
    let untagged = [&orphan_signature, &orphan_subject, &plain];
    let mut garbage: BTreeMap<String, u64> = BTreeMap::new();
    for img in untagged.iter().copied().chain([&in_a]) {
        garbage.insert(img.digest.clone(), img.manifest.len() as u64);
        for (d, b) in &img.blobs {
            if !keep.contains(d) {
                garbage.insert(d.clone(), b.len() as u64);
            }
        }
    }
    // A's manifest and config; three blobs of each untagged manifest.
    assert_eq!(garbage.len(), 11, "{garbage:?}");
    let size = si(garbage.values().sum());
    let all: BTreeSet<String> = keep.iter().chain(garbage.keys()).cloned().collect();
    assert_same_set("blobs before collection", &stored_blobs(&root), &all);

    let cfg = config_file(dir.path(), "gc:\n  grace: 0s\n  delete_untagged: true\n");
    let cfg = cfg.to_str().unwrap();
    let out = gc_ok(&["--dry-run", "-v", "--config", cfg, "--root", &r]);
    let (items, summary) = verbose_lines(&out);
    let mut want: BTreeSet<String> = garbage
        .iter()
        .map(|(d, n)| format!("blob {d} ({})", si(*n)))
        .collect();
    want.extend(
        untagged
            .iter()
            .map(|m| format!("manifest app@{}", m.digest)),
    );
    assert_eq!(items, want, "{out}");
    assert_eq!(
        summary,
        format!("Would delete 11 unreferenced blobs ({size}) and 3 untagged manifests")
    );
    let (status, out, err) = run_gc(&["--delete", "-v", "--config", cfg, "--root", &r]);
    assert!(status.success(), "{status}: {out}{err}");
    let (items, summary) = verbose_lines(&out);
    // One pass takes a whole untagged tree: the referrer of the untagged subject too.
    assert!(
        items.contains(&format!("manifest app@{}", orphan_signature.digest)),
        "the referrer {} of the untagged subject {} outlived this pass, which removed its \
         subject; gc --delete -v:\n{out}{err}",
        orphan_signature.digest,
        orphan_subject.digest
    );
    assert_eq!(items, want, "gc --delete -v:\n{out}{err}");
    assert_eq!(
        summary,
        format!("Deleted 11 blobs and 3 untagged manifests, reclaimed {size}"),
        "{err}"
    );
    assert_same_set("blobs after collection", &stored_blobs(&root), &keep);

    let s = Server::start_with(&root, &[]);
    let mut c = s.client();
    index.assert_pulls(&mut c, "multi", "v1");
    amd64.assert_pulls(&mut c, "multi", &amd64.digest);
    arm64.assert_pulls(&mut c, "multi", &arm64.digest);
    subject.assert_pulls(&mut c, "app", "v1");
    signature.assert_pulls(&mut c, "app", &signature.digest);
    let refs = c.get(&format!("/v2/app/referrers/{}", subject.digest));
    assert_status(&refs, 200);
    let listed: Vec<String> = refs.json()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        std::slice::from_ref(&signature.digest),
        "{}",
        refs.text()
    );
    for img in untagged {
        assert_manifest_gone(&mut c, "app", &img.digest);
        for (d, _) in &img.blobs {
            assert_blob_gone(&mut c, "app", d);
        }
    }
    in_b.assert_pulls(&mut c, "b", "v1");
    assert_blob(&mut c, "b", &shared_digest, &shared);
    assert_manifest_gone(&mut c, "a", &in_a.digest);
    assert_blob_gone(&mut c, "a", &in_a.blobs[0].0);
    assert!(s.stop().success());
    eprintln!(
        "untagged_indexes_referrers_and_mounts: {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// The schedule, racing pushers
// ---------------------------------------------------------------------------------------------

/// The administration socket's file removed under a running registry (a data directory
/// cleaned by hand or by a tmp cleaner): SIGTERM still stops it. Waking the socket's accept
/// by connecting to its path hung the stop forever.
#[test]
fn a_registry_stops_with_its_admin_socket_file_removed() {
    let s = Server::start_in_temp(&[]);
    let sock = s.root.join("admin.sock");
    assert!(sock.exists(), "the registry's admin socket");
    std::fs::remove_file(&sock).unwrap();
    assert!(s.stop().success());
}

#[test]
fn online_collection_under_eight_pushers() {
    let started = Instant::now();
    let (_, seed) = Rng::seeded();
    eprintln!("online_collection_under_eight_pushers: seed {seed}");
    let s = Server::start_in_temp(&[
        "--gc-interval",
        "1s",
        "--gc-grace",
        "2s",
        "--gc-delete-untagged",
    ]);
    let pool = pool();
    let load = Load {
        nodes: vec![&s],
        repos: &["load/one", "load/two", "load/three"],
        pool: &pool,
        untagged_go: true,
        slow: Duration::from_millis(3500),
        until: Instant::now() + soak(30),
        seed,
    };
    let led = run_load(&load, 8);
    let stopped = Instant::now();
    eprintln!(
        "8 pushers: {} images acknowledged ({} slowly; {} pushed again after a collection \
         raced them, {} of them refused at a blob), {} retags, {} deletes; {} tags kept",
        led.pushed,
        led.slow,
        led.retried,
        led.blob_refusals,
        led.retagged,
        led.deleted,
        led.tags.len()
    );
    assert!(led.pushed > 100, "only {} images pushed", led.pushed);
    assert!(
        led.slow == 0 || led.retried > 0,
        "no slow push was refused: a pass should have taken their blobs meanwhile"
    );
    let mut c = s.client();
    for ((repo, tag), img) in &led.tags {
        img.assert_pulls(&mut c, repo, tag);
    }

    // Past the grace period, two more passes: exactly what the tags keep is left.
    let grace = Duration::from_secs(2);
    std::thread::sleep(
        (stopped + grace + Duration::from_millis(200)).saturating_duration_since(Instant::now()),
    );
    let runs = metric(&mut c, GC_RUNS);
    assert!(runs > 10.0, "only {runs} scheduled passes in 30 s");
    await_passes(&s, runs, 2.0, Duration::from_secs(60));
    assert_same_set(
        "blobs after the load and two passes",
        &stored_blobs(&s.root),
        &kept(led.tags.values()),
    );
    for ((repo, tag), img) in &led.tags {
        img.assert_pulls(&mut c, repo, tag);
    }
    let blobs = metric(&mut c, GC_BLOBS);
    let manifests = metric(&mut c, GC_MANIFESTS);
    let bytes = metric(&mut c, GC_BYTES);
    eprintln!("collected {blobs} blobs ({bytes} bytes), {manifests} untagged manifests");
    assert!(blobs > 0.0 && bytes > 0.0, "nothing collected");
    assert!(manifests > 0.0, "no untagged manifest collected");
    assert!(s.stop().success());
    eprintln!(
        "online_collection_under_eight_pushers: {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Kill -9 in the middle of a sweep
// ---------------------------------------------------------------------------------------------

/// Pushes `n` small blobs that no manifest references (the `round`th such batch) into `repo`,
/// from four connections; their digests.
fn push_garbage(s: &Server, round: u64, n: u64) -> BTreeSet<String> {
    let next = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut c = s.client();
                    let mut mine = BTreeSet::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return mine;
                        }
                        let bytes = pseudo_random(64 + (i % 200) as usize, round << 32 | i);
                        mine.insert(push_blob(&mut c, "junk", &bytes));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// How many of `garbage` are still files under `root`.
fn left_of(root: &Path, garbage: &BTreeSet<String>) -> usize {
    stored_blobs(root).intersection(garbage).count()
}

#[test]
fn kill9_during_a_sweep_loses_nothing_live() {
    const GARBAGE: u64 = 2000;
    let started = Instant::now();
    let (mut rng, seed) = Rng::seeded();
    eprintln!("kill9_during_a_sweep_loses_nothing_live: seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let r = root.to_str().unwrap().to_string();
    let cfg = config_file(dir.path(), "gc:\n  grace: 0s\n");
    let cfg = cfg.to_str().unwrap().to_string();
    let images: Vec<(String, Image)> = (0..4u64)
        .map(|i| {
            let layers = vec![generated(100 + i, 2000), generated(200 + i % 2, 3000)];
            (format!("keep/app{}", i % 2), Image::of(layers))
        })
        .collect();
    let s = Server::start_with(&root, &[]);
    let mut c = s.client();
    for (i, (repo, img)) in images.iter().enumerate() {
        img.push(&mut c, repo, &format!("v{i}"));
    }
    let mut garbage = push_garbage(&s, 0, GARBAGE);
    assert!(s.stop().success());
    let live = kept(images.iter().map(|(_, img)| img));
    let check = |s: &Server, gone: &BTreeSet<String>| {
        let mut c = s.client();
        for (i, (repo, img)) in images.iter().enumerate() {
            img.assert_pulls(&mut c, repo, &format!("v{i}"));
        }
        for d in gone.iter().take(20) {
            assert_blob_gone(&mut c, "junk", d);
        }
    };

    // `ringyard gc --delete` killed -9 after a random delay, until a kill lands mid-sweep:
    // some of the garbage gone, not all.
    let mut delay_ms = 50 + rng.below(250);
    let mut batches = 0;
    let mut landed = None;
    for attempt in 0..12 {
        let total = left_of(&root, &garbage);
        let mut child = gc_command(&["--delete", "--config", &cfg, "--root", &r])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ringyard gc");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        let left = left_of(&root, &garbage);
        eprintln!(
            "attempt {attempt}: killed after {delay_ms} ms{}: {left} of {total} garbage blobs \
             left",
            if finished { " (it had finished)" } else { "" }
        );
        if left > 0 && left < total {
            landed = Some((delay_ms, left, total));
            break;
        }
        if left == 0 {
            // Too late: more garbage, and a shorter delay.
            batches += 1;
            let s = Server::start_with(&root, &[]);
            garbage = push_garbage(&s, batches, GARBAGE);
            assert!(s.stop().success());
            delay_ms = (delay_ms / 2).max(5) + rng.below(delay_ms / 2 + 1);
        } else {
            // Too early: nothing removed yet.
            delay_ms += 30 + rng.below(delay_ms + 1);
        }
    }
    let (delay_ms, left, total) = landed.expect("no kill landed in the middle of a sweep");
    eprintln!("a kill after {delay_ms} ms left {left} of {total} garbage blobs");

    // The next collection finishes the job: exactly the live blobs are left.
    let out = gc_ok(&["--delete", "--config", &cfg, "--root", &r]);
    let deleted: usize = out
        .strip_prefix("Deleted ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a summary line: {out:?}"));
    // Marked rows whose bytes were gone already count again; nothing else does.
    assert!(
        deleted >= left && deleted <= total,
        "{deleted} deleted, {left} garbage files were left of {total}: {out}"
    );
    assert_same_set(
        "blobs after the second collection",
        &stored_blobs(&root),
        &live,
    );
    let out = gc_ok(&["--delete", "--config", &cfg, "--root", &r]);
    assert_eq!(out, "Deleted 0 blobs, reclaimed 0 B\n");
    let mut plain = Server::start_with(&root, &[]);
    check(&plain, &garbage);

    // The same on the server's own schedule: killed -9 while a pass sweeps, restarted, the
    // next pass completes.
    let gc_args = ["--gc-interval", "1s", "--gc-grace", "0s"];
    let mut landed = false;
    for round in 0..4u64 {
        garbage = push_garbage(&plain, 100 + round, GARBAGE);
        let total = garbage.len();
        assert!(plain.stop().success());
        let s = Server::start_with(&root, &gc_args);
        let deadline = Instant::now() + Duration::from_secs(30);
        let left = loop {
            let left = left_of(&root, &garbage);
            if left < total || Instant::now() > deadline {
                break left;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        s.kill9();
        let after = left_of(&root, &garbage);
        eprintln!(
            "scheduled pass {round}: killed with {left} of {total} garbage blobs left ({after} \
             after the kill)"
        );
        assert!(left < total, "no scheduled pass in 30 s");
        plain = Server::start_with(&root, &[]);
        if after > 0 {
            landed = true;
            break;
        }
    }
    assert!(plain.stop().success());
    assert!(landed, "no kill -9 landed during a scheduled sweep");
    let s = Server::start_with(&root, &gc_args);
    await_passes(&s, 0.0, 1.0, Duration::from_secs(60));
    assert_same_set(
        "blobs after a pass following the kill",
        &stored_blobs(&root),
        &live,
    );
    check(&s, &garbage);
    assert!(s.stop().success());
    eprintln!(
        "kill9_during_a_sweep_loses_nothing_live: {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// A fleet on PostgreSQL and S3
// ---------------------------------------------------------------------------------------------

#[test]
fn fleet_on_postgres_and_s3() {
    let started = Instant::now();
    let (_, seed) = Rng::seeded();
    eprintln!("fleet_on_postgres_and_s3: seed {seed}");
    let sv = Services::start("gcfleet");
    let config = sv.config("fleet.yaml", "gc:\n  interval: 1s\n  grace: 2s\n");
    let a = sv.node(&config, &sv.root("a"));
    let b = sv.node(&config, &sv.root("b"));
    let pool = pool();
    let load = Load {
        nodes: vec![&a, &b],
        repos: &["fleet/one", "fleet/two"],
        pool: &pool,
        untagged_go: false,
        slow: Duration::from_millis(3500),
        until: Instant::now() + soak(12),
        seed,
    };
    let led = run_load(&load, 8);
    let stopped = Instant::now();
    eprintln!(
        "8 pushers over 2 nodes: {} images acknowledged ({} slowly; {} pushed again after a \
         collection raced them, {} of them refused at a blob), {} retags, {} deletes; {} tags, {} manifests kept",
        led.pushed,
        led.slow,
        led.retried,
        led.blob_refusals,
        led.retagged,
        led.deleted,
        led.tags.len(),
        led.manifests.len()
    );
    assert!(led.pushed > 50, "only {} images pushed", led.pushed);
    let check = |when: &str| {
        for node in [&a, &b] {
            let mut c = node.client();
            for ((repo, tag), img) in &led.tags {
                img.assert_pulls(&mut c, repo, tag);
            }
            for ((repo, digest), img) in &led.manifests {
                img.assert_pulls(&mut c, repo, digest);
            }
        }
        eprintln!(
            "{when}: every image pulls from both nodes ({:?} in)",
            started.elapsed()
        );
    };
    check("after the load");

    // Past the grace period, two more passes on each node: exactly what the manifests keep
    // (untagged ones too: gc.delete_untagged is off) is left in the bucket.
    let grace = Duration::from_secs(2);
    std::thread::sleep(
        (stopped + grace + Duration::from_millis(200)).saturating_duration_since(Instant::now()),
    );
    let runs: Vec<f64> = [&a, &b]
        .iter()
        .map(|n| metric(&mut n.client(), GC_RUNS))
        .collect();
    for (node, runs) in [&a, &b].iter().zip(&runs) {
        await_passes(node, *runs, 2.0, Duration::from_secs(60));
    }
    assert_same_set(
        "objects in the bucket after the load and two passes",
        &bucket_blobs(&sv.s3().bucket_dir()),
        &kept(led.manifests.values()),
    );
    check("after collection");
    let collected: f64 = [&a, &b]
        .iter()
        .map(|n| metric(&mut n.client(), GC_BLOBS))
        .sum();
    assert!(collected > 0.0, "nothing collected on either node");

    // The command, with the fleet's configuration, while the nodes run: nothing left to do.
    // (A node's pass may hold the lock at that moment: then the command says so; again.)
    let gc_root = sv.root("gc");
    let args = [
        "--dry-run",
        "--config",
        config.to_str().unwrap(),
        "--root",
        gc_root.to_str().unwrap(),
    ];
    let mut tries = 0;
    let out = loop {
        let out = gc_ok(&args);
        tries += 1;
        if !out.starts_with("Another node is collecting") || tries == 50 {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(out, "Would delete 0 unreferenced blobs (0 B)\n");
    eprintln!(
        "the dry run after {tries} tries ({:?} in)",
        started.elapsed()
    );
    assert!(a.stop().success());
    assert!(b.stop().success());
    eprintln!("fleet_on_postgres_and_s3: {:?}", started.elapsed());
}

/// The same on a fleet's PostgreSQL and S3: `ringyard gc --delete` killed -9 while it deletes
/// objects, with a node serving; the next run leaves exactly the referenced set in the
/// bucket, and every image still pulls.
#[test]
fn kill9_during_a_fleet_sweep_loses_nothing_live() {
    const GARBAGE: u64 = 300;
    let started = Instant::now();
    let (mut rng, seed) = Rng::seeded();
    eprintln!("kill9_during_a_fleet_sweep_loses_nothing_live: seed {seed}");
    let sv = Services::start("gckill");
    let config = sv.config("fleet.yaml", "gc:\n  grace: 0s\n");
    let cfg = config.to_str().unwrap().to_string();
    let a = sv.node(&config, &sv.root("a"));
    let images: Vec<(String, Image)> = (0..3u64)
        .map(|i| {
            (
                format!("keep/app{i}"),
                Image::of(vec![generated(300 + i, 2500)]),
            )
        })
        .collect();
    let mut c = a.client();
    for (i, (repo, img)) in images.iter().enumerate() {
        img.push(&mut c, repo, &format!("v{i}"));
    }
    let live = kept(images.iter().map(|(_, img)| img));
    let bucket = sv.s3().bucket_dir();
    let gc_root = sv.root("gc");
    let r = gc_root.to_str().unwrap().to_string();
    let mut garbage = push_garbage(&a, 0, GARBAGE);
    let left = |g: &BTreeSet<String>| bucket_blobs(&bucket).intersection(g).count();

    let mut delay_ms = 100 + rng.below(300);
    let mut landed = None;
    for attempt in 0..12 {
        let total = left(&garbage);
        let mut child = gc_command(&["--delete", "--config", &cfg, "--root", &r])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ringyard gc");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let now_left = left(&garbage);
        eprintln!("attempt {attempt}: killed after {delay_ms} ms: {now_left} of {total} left");
        if now_left > 0 && now_left < total {
            landed = Some((delay_ms, now_left, total));
            break;
        }
        if now_left == 0 {
            garbage = push_garbage(&a, attempt + 1, GARBAGE);
            delay_ms = (delay_ms / 2).max(20) + rng.below(delay_ms / 2 + 1);
        } else {
            delay_ms += 100 + rng.below(delay_ms + 1);
        }
    }
    let (delay_ms, now_left, total) = landed.expect("no kill landed in the middle of a sweep");
    eprintln!("a kill after {delay_ms} ms left {now_left} of {total} garbage blobs");
    for (i, (repo, img)) in images.iter().enumerate() {
        img.assert_pulls(&mut c, repo, &format!("v{i}"));
    }

    // The next run finishes the marked blobs and takes the rest.
    let out = gc_ok(&["--delete", "--config", &cfg, "--root", &r]);
    assert!(out.starts_with("Deleted "), "{out}");
    assert_same_set(
        "objects in the bucket after the next run",
        &bucket_blobs(&bucket),
        &live,
    );
    for (i, (repo, img)) in images.iter().enumerate() {
        img.assert_pulls(&mut c, repo, &format!("v{i}"));
    }
    let out = gc_ok(&["--delete", "--config", &cfg, "--root", &r]);
    assert_eq!(out, "Deleted 0 blobs, reclaimed 0 B\n");
    eprintln!(
        "kill9_during_a_fleet_sweep_loses_nothing_live: {:?}",
        started.elapsed()
    );
}
