//! `loadtest seed`: a deterministic generated image (layers, config, manifest tagged TAG, in
//! OCI or Docker media types) pushed to a registry and/or written under an output directory
//! laid out by URL path, so that a static server (nginx `root DIR`) serves the same bytes at
//! the same URLs. `--blob-only SIZE` does the same for one large blob. Blobs are streamed
//! from the generator, never held whole in memory.
//!
//! `--images N` pushes N such images at once instead (a registry with many manifests, e.g.
//! for garbage collection): image i has the layers of blob indices i*L .. i*L+L-1 and a config
//! naming them, so every blob of every image is distinct; uploads are monolithic (each blob
//! hashed just before it is sent); `--list FILE` records NAME:TAG@DIGEST per image.

use super::push::human_size;
use super::registry::{put_manifest, upload, Content, Counters, UploadStyle};
use super::Outcome;
use crate::cli::{Format, SeedArgs};
use crate::digest;
use crate::error::Error;
use crate::gen::Generator;
use crate::http::Conn;
use crate::oci;
use crate::run::Run;
use crate::runtime::{run_on_threads, share};
use crate::stats::{mb_per_s, per_second, round3, Latencies};
use crate::url::{split_url, Target};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Blob index of `--blob-only`, far from the layer indices 0, 1, 2 ...
pub const BLOB_ONLY_INDEX: u64 = 1 << 40;

/// The manifest and config of a generated image, from its layers (digest, size).
pub fn documents(docker: bool, layers: &[(String, u64)]) -> (Vec<u8>, Vec<u8>) {
    let digests: Vec<String> = layers.iter().map(|(d, _)| d.clone()).collect();
    let config = oci::image_config(&digests);
    let cd = digest::sha256_of(&config);
    let manifest = oci::image_manifest(docker, (&cd, config.len() as u64), layers);
    (config, manifest)
}

/// `DIR/v2/<name>/<kind>`, created if missing.
fn dir_for(out: &Path, name: &str, kind: &str) -> Result<PathBuf, String> {
    let d = out.join("v2").join(name).join(kind);
    fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    Ok(d)
}

/// Writes generated blob `blob` of `size` bytes to `DIR/v2/<name>/blobs/<digest>` (through a
/// temporary name, hashing on the way) and returns its digest.
pub fn write_blob_file(
    out: &Path,
    name: &str,
    gen: &Generator,
    blob: u64,
    size: u64,
) -> Result<String, String> {
    let dir = dir_for(out, name, "blobs")?;
    let tmp = dir.join(format!(".tmp-{}-{blob}", std::process::id()));
    let mut f =
        fs::File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut h = Sha256::new();
    gen.stream(blob, size, &mut buf, |piece| {
        h.update(piece);
        f.write_all(piece)
            .map_err(|e| format!("writing {}: {e}", tmp.display()))
    })?;
    drop(f);
    let d = digest::finish(h);
    let path = dir.join(&d);
    fs::rename(&tmp, &path).map_err(|e| format!("cannot rename to {}: {e}", path.display()))?;
    Ok(d)
}

fn write_file(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), String> {
    let p = dir.join(file);
    fs::write(&p, bytes).map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// One pushed blob: digest known beforehand (monolithic) or computed while streaming.
#[derive(Clone)]
struct BlobJob {
    blob: u64,
    size: u64,
    digest: Option<String>,
}

pub fn run(args: SeedArgs) -> Result<Outcome, String> {
    let target = match &args.registry {
        Some(r) => Some(Target::resolve(&split_url(r)?.0)?),
        None => None,
    };
    if target.is_none() && args.out_dir.is_none() {
        return Err("seed needs --registry, --out-dir, or both".into());
    }
    let timeout = Duration::from_secs(args.common.timeout);
    let run = Arc::new(Run::new(0, timeout, args.common.max_seconds));
    let gen = Generator::new(args.seed);
    let name = args.image.name.clone();
    let t0 = Instant::now();

    if let Some(size) = args.blob_only {
        return seed_blob(&args, target, run, gen, size, t0);
    }
    if args.images > 1 {
        let target = target.ok_or("seed --images needs --registry")?;
        return seed_images(&args, target, gen, t0);
    }

    let docker = args.format == Format::Docker;
    let sizes = args.layers.clone();
    // Files first: their digests then make the pushes monolithic (no second hashing).
    let mut known: Vec<Option<String>> = vec![None; sizes.len()];
    if let Some(out) = &args.out_dir {
        for (i, &size) in sizes.iter().enumerate() {
            known[i] = Some(write_blob_file(out, &name, &gen, i as u64, size)?);
        }
    }
    let mut layers: Vec<(String, u64)> = Vec::new();
    let mut pushed = false;
    if let Some(target) = target {
        let jobs: Vec<BlobJob> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| BlobJob {
                blob: i as u64,
                size,
                digest: known[i].clone(),
            })
            .collect();
        let (name2, tag, run2, gen2) = (
            name.clone(),
            args.image.reference.clone(),
            run.clone(),
            gen.clone(),
        );
        let out = run_on_threads(1, move |_| {
            push_image(
                target.clone(),
                name2.clone(),
                tag.clone(),
                docker,
                jobs.clone(),
                gen2.clone(),
                run2.clone(),
            )
        })?;
        layers = out.into_iter().next().unwrap_or_default();
        pushed = run.total_errors() == 0;
    } else {
        for (d, &s) in known.iter().zip(&sizes) {
            layers.push((d.clone().unwrap_or_default(), s));
        }
    }
    if layers.len() != sizes.len() {
        // The push failed: the files' digests (if any) still describe the image.
        if known.iter().all(Option::is_some) {
            layers = known
                .iter()
                .flatten()
                .cloned()
                .zip(sizes.iter().copied())
                .collect();
        } else {
            let errors = run.total_errors();
            let json = json!({
                "workload": "seed",
                "registry": args.registry,
                "image": format!("{}:{}", name, args.image.reference),
                "pushed": false,
                "manifest_digest": null,
                "errors": errors,
                "error_kinds": run.error_kinds(),
            });
            let text = format!(
                "seed {}:{}: the push failed, errors {errors}",
                name, args.image.reference
            );
            return Ok(Outcome { json, text, errors });
        }
    }
    let (config, manifest) = documents(docker, &layers);
    let config_digest = digest::sha256_of(&config);
    let manifest_digest = digest::sha256_of(&manifest);
    if let Some(out) = &args.out_dir {
        let blobs = dir_for(out, &name, "blobs")?;
        write_file(&blobs, &config_digest, &config)?;
        let manifests = dir_for(out, &name, "manifests")?;
        write_file(&manifests, &manifest_digest, &manifest)?;
        write_file(&manifests, &args.image.reference, &manifest)?;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let errors = run.total_errors();
    let media = oci::media_types(docker).0;
    let json = json!({
        "workload": "seed",
        "registry": args.registry,
        "image": format!("{}:{}", name, args.image.reference),
        "format": if docker { "docker" } else { "oci" },
        "seed": args.seed,
        "pushed": pushed,
        "out_dir": args.out_dir.as_ref().map(|p| p.display().to_string()),
        "elapsed_s": round3(elapsed),
        "manifest_digest": manifest_digest,
        "manifest_size": manifest.len(),
        "manifest_media_type": media,
        "config": {"digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|(d, s)| json!({"digest": d, "size": s})).collect::<Vec<_>>(),
        "errors": errors,
        "error_kinds": run.error_kinds(),
    });
    let mut text = format!(
        "seed {}:{} ({}, seed {}){}{}\n  manifest {manifest_digest} ({} bytes, {media})\n  config   {config_digest} ({} bytes)\n",
        name,
        args.image.reference,
        if docker { "docker" } else { "oci" },
        args.seed,
        if pushed { format!(", pushed to {}", args.registry.as_deref().unwrap_or("")) } else { String::new() },
        args.out_dir.as_ref().map(|p| format!(", files under {}", p.display())).unwrap_or_default(),
        manifest.len(),
        config.len()
    );
    for (d, s) in &layers {
        text += &format!("  layer    {d} ({})\n", human_size(*s));
    }
    text += &format!("  elapsed {elapsed:.3} s, errors {errors}");
    Ok(Outcome { json, text, errors })
}

/// Uploads the layers, then the config and the manifest by tag; returns the layers (digest,
/// size) or an empty list after an error (counted in `run`).
async fn push_image(
    target: Target,
    name: String,
    tag: String,
    docker: bool,
    jobs: Vec<BlobJob>,
    gen: Generator,
    run: Arc<Run>,
) -> Vec<(String, u64)> {
    let counters = Counters::default();
    let mut conn = Conn::new(target);
    let r: Result<Vec<(String, u64)>, Error> = async {
        let mut layers = Vec::new();
        for j in &jobs {
            let d = push_blob(&mut conn, &name, &gen, j, run.timeout, &counters).await?;
            layers.push((d, j.size));
        }
        let (config, manifest) = documents(docker, &layers);
        let cd = digest::sha256_of(&config);
        upload(
            &mut conn,
            &name,
            Content::Bytes(&config),
            config.len() as u64,
            UploadStyle::Monolithic,
            Some(&cd),
            run.timeout,
            &counters,
        )
        .await?;
        put_manifest(
            &mut conn,
            &name,
            &tag,
            oci::media_types(docker).0,
            &manifest,
            run.timeout,
            &counters,
        )
        .await?;
        Ok(layers)
    }
    .await;
    r.unwrap_or_else(|e| {
        run.error("seed", &e);
        Vec::new()
    })
}

async fn push_blob(
    conn: &mut Conn,
    name: &str,
    gen: &Generator,
    j: &BlobJob,
    timeout: Duration,
    counters: &Counters,
) -> Result<String, Error> {
    let style = if j.digest.is_some() {
        UploadStyle::Monolithic
    } else {
        UploadStyle::Stream
    };
    let content = Content::Generated { gen, blob: j.blob };
    upload(
        conn,
        name,
        content,
        j.size,
        style,
        j.digest.as_deref(),
        timeout,
        counters,
    )
    .await
}

fn seed_blob(
    args: &SeedArgs,
    target: Option<Target>,
    run: Arc<Run>,
    gen: Generator,
    size: u64,
    t0: Instant,
) -> Result<Outcome, String> {
    let name = args.image.name.clone();
    let mut digest = None;
    if let Some(out) = &args.out_dir {
        digest = Some(write_blob_file(out, &name, &gen, BLOB_ONLY_INDEX, size)?);
    }
    let mut pushed = false;
    let mut push_s = 0.0;
    if let Some(target) = target {
        let job = BlobJob {
            blob: BLOB_ONLY_INDEX,
            size,
            digest: digest.clone(),
        };
        let (name2, run2, gen2) = (name.clone(), run.clone(), gen.clone());
        let t = Instant::now();
        let out = run_on_threads(1, move |_| {
            let (target, name, run, gen) =
                (target.clone(), name2.clone(), run2.clone(), gen2.clone());
            let job = job.clone();
            async move {
                let mut conn = Conn::new(target);
                let r = push_blob(
                    &mut conn,
                    &name,
                    &gen,
                    &job,
                    run.timeout,
                    &Counters::default(),
                )
                .await;
                r.map_err(|e| run.error("seed blob", &e)).ok()
            }
        })?;
        push_s = t.elapsed().as_secs_f64();
        if let Some(Some(d)) = out.into_iter().next() {
            digest = Some(d);
            pushed = true;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let errors = run.total_errors();
    let digest = digest.unwrap_or_default();
    let json = json!({
        "workload": "seed-blob",
        "registry": args.registry,
        "repo": name,
        "digest": digest,
        "size": size,
        "seed": args.seed,
        "pushed": pushed,
        "out_dir": args.out_dir.as_ref().map(|p| p.display().to_string()),
        "elapsed_s": round3(elapsed),
        "mb_per_s": round3(mb_per_s(if pushed { size } else { 0 }, push_s)),
        "errors": errors,
        "error_kinds": run.error_kinds(),
    });
    let text = format!(
        "seed blob {digest} ({}) in {name}, seed {}{}{}\n  elapsed {elapsed:.3} s, errors {errors}",
        human_size(size),
        args.seed,
        if pushed {
            format!(", pushed at {:.1} MB/s", mb_per_s(size, push_s))
        } else {
            String::new()
        },
        args.out_dir
            .as_ref()
            .map(|p| format!(", file under {}", p.display()))
            .unwrap_or_default(),
    );
    Ok(Outcome { json, text, errors })
}

/// The repository and tag of image `i` of `--images`.
fn image_name(args: &SeedArgs, i: u64) -> (String, String) {
    let repo = if args.repos > 1 {
        format!("{}-{}", args.image.name, i % args.repos)
    } else {
        args.image.name.clone()
    };
    (repo, format!("{}-{i}", args.image.reference))
}

struct Many {
    run: Arc<Run>,
    gen: Generator,
    docker: bool,
    sizes: Vec<u64>,
    /// (repository, tag) of every image, by index.
    names: Vec<(String, String)>,
}

/// `--images N`: C clients, each on its own connection, pushing whole images (layers, config,
/// manifest by tag) one after another.
fn seed_images(
    args: &SeedArgs,
    target: Target,
    gen: Generator,
    t0: Instant,
) -> Result<Outcome, String> {
    for r in 0..args.repos.min(args.images) {
        let (repo, tag) = image_name(args, r);
        crate::cli::parse_image(&format!("{repo}:{tag}"))?;
    }
    let threads = args
        .common
        .threads
        .unwrap_or_else(crate::runtime::default_threads);
    let clients = args.clients.max(1);
    let timeout = Duration::from_secs(args.common.timeout);
    let run = Arc::new(Run::new(args.images, timeout, args.common.max_seconds));
    let many = Arc::new(Many {
        run: run.clone(),
        gen,
        docker: args.format == Format::Docker,
        sizes: args.layers.clone(),
        names: (0..args.images).map(|i| image_name(args, i)).collect(),
    });
    let m = many.clone();
    let results = run_on_threads(threads, move |t| {
        let (m, target) = (m.clone(), target.clone());
        async move { images_thread(m, target, share(clients, threads, t)).await }
    })?;
    let elapsed = run.started.elapsed().as_secs_f64();
    run.settle_unclaimed();
    let mut lat = Latencies::new();
    let mut done: Vec<(u64, String)> = Vec::new();
    for (l, d) in results {
        lat.merge(&l);
        done.extend(d);
    }
    done.sort();
    if let Some(path) = &args.list {
        let mut text = String::new();
        for (i, digest) in &done {
            let (repo, tag) = &many.names[*i as usize];
            text += &format!("{repo}:{tag}@{digest}\n");
        }
        fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let errors = run.total_errors();
    let per_image = args.layers.len() as u64 + 1;
    let blobs = done.len() as u64 * per_image;
    let s = lat.summary();
    let json = json!({
        "workload": "seed-images",
        "registry": args.registry,
        "name": args.image.name,
        "repos": args.repos,
        "images": args.images,
        "images_done": done.len(),
        "layers_per_image": args.layers.len(),
        "layer_bytes": args.layers,
        "blobs": blobs,
        "clients": clients,
        "threads": threads,
        "seed": args.seed,
        "list": args.list.as_ref().map(|p| p.display().to_string()),
        "elapsed_s": round3(t0.elapsed().as_secs_f64()),
        "images_per_s": round3(per_second(done.len() as f64, elapsed)),
        "blobs_per_s": round3(per_second(blobs as f64, elapsed)),
        "image": s.to_json(),
        "errors": errors,
        "error_kinds": run.error_kinds(),
    });
    let text = format!(
        "seed {} images ({} layers of {} and a config each) into {} repositor{} of {}, {clients} clients on {threads} threads, seed {}\n  \
         elapsed {elapsed:.3} s, {:.0} images/s, {:.0} blobs/s\n  image     {}\n{}",
        done.len(),
        args.layers.len(),
        args.layers.iter().map(|&b| human_size(b)).collect::<Vec<_>>().join(","),
        args.repos,
        if args.repos == 1 { "y" } else { "ies" },
        args.image.name,
        args.seed,
        per_second(done.len() as f64, elapsed),
        per_second(blobs as f64, elapsed),
        s.line(),
        run.errors_line(errors)
    );
    Ok(Outcome { json, text, errors })
}

async fn images_thread(
    m: Arc<Many>,
    target: Target,
    clients: usize,
) -> (Latencies, Vec<(u64, String)>) {
    let lat = Rc::new(RefCell::new(Latencies::new()));
    let done = Rc::new(RefCell::new(Vec::new()));
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (m, lat, done) = (m.clone(), lat.clone(), done.clone());
        let mut conn = Conn::new(target.clone());
        handles.push(monoio::spawn(async move {
            let counters = Counters::default();
            let most = m.sizes.iter().copied().max().unwrap_or(0);
            let mut buf = vec![0u8; most.clamp(1, 1 << 20) as usize];
            while let Some(i) = m.run.claim() {
                let t = Instant::now();
                match push_one(&m, &mut conn, i, &mut buf, &counters).await {
                    Ok(d) => {
                        lat.borrow_mut().record(t.elapsed());
                        done.borrow_mut().push((i, d));
                    }
                    Err(e) => {
                        lat.borrow_mut().error();
                        let (repo, tag) = &m.names[i as usize];
                        m.run.error(&format!("image {repo}:{tag}"), &e);
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await;
    }
    let l = lat.borrow().clone();
    let d = done.take();
    (l, d)
}

/// Image `i` of `--images`: its layers, its config, its manifest by tag; its manifest digest.
async fn push_one(
    m: &Many,
    conn: &mut Conn,
    i: u64,
    buf: &mut [u8],
    counters: &Counters,
) -> Result<String, Error> {
    let (repo, tag) = &m.names[i as usize];
    let timeout = m.run.timeout;
    let base = i * m.sizes.len() as u64;
    let mut layers = Vec::with_capacity(m.sizes.len());
    for (j, &size) in m.sizes.iter().enumerate() {
        let blob = base + j as u64;
        let digest = super::push::blob_digest(&m.gen, blob, size, buf);
        let content = Content::Generated { gen: &m.gen, blob };
        upload(
            conn,
            repo,
            content,
            size,
            UploadStyle::Monolithic,
            Some(&digest),
            timeout,
            counters,
        )
        .await?;
        layers.push((digest, size));
    }
    let (config, manifest) = documents(m.docker, &layers);
    let cd = digest::sha256_of(&config);
    upload(
        conn,
        repo,
        Content::Bytes(&config),
        config.len() as u64,
        UploadStyle::Monolithic,
        Some(&cd),
        timeout,
        counters,
    )
    .await?;
    put_manifest(
        conn,
        repo,
        tag,
        oci::media_types(m.docker).0,
        &manifest,
        timeout,
        counters,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_dir_layout_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let g = Generator::with_base_len(1, 1 << 16);
        let d = write_blob_file(dir.path(), "a/b", &g, 0, 3_000_000).unwrap();
        let bytes = fs::read(dir.path().join("v2/a/b/blobs").join(&d)).unwrap();
        assert_eq!(bytes.len(), 3_000_000);
        assert_eq!(digest::sha256_of(&bytes), d);
        let (c, m) = documents(false, &[(d.clone(), 3_000_000)]);
        let (c2, m2) = documents(false, &[(d, 3_000_000)]);
        assert_eq!((c, m), (c2, m2));
    }
}
