//! Micro benchmarks of the pure functions every request goes through: request heads, routing,
//! name/tag/digest grammar, Range headers, sha256, manifest parsing and the in-memory metadata
//! index. No IO here (see `blob_store.rs` for that), so the numbers are stable enough to compare
//! before and after a change.
//!
//! Run: `cargo bench --bench hot_paths` (add a filter such as `index` to run one group).
//! `cargo test --bench hot_paths` runs each benchmark once, as a smoke test.
//!
//! Sample counts and sizes are fixed per group rather than auto-tuned (divan stops tuning at a
//! sample size of 1 when its first, cold sample happens to be slow), which keeps the whole run
//! to a few seconds; `--sample-count` / `--sample-size` on the command line override them.

use divan::counter::BytesCount;
use divan::{black_box, Bencher};
use ringyard::meta::{Index, ManifestRecord, RefKind, WriteOp};
use ringyard::oci::digest::{Algorithm, Digest, Hasher};
use std::sync::LazyLock;

fn main() {
    // Build the shared fixtures before any timing starts.
    LazyLock::force(&INDEX);
    LazyLock::force(&IMAGE_MANIFEST);
    divan::main();
}

/// Request heads as they arrive off the socket, and what the connection loop does with them.
#[divan::bench_group(sample_count = 500, sample_size = 200)]
mod http {
    use super::*;
    use ringyard::api::router::route;
    use ringyard::http::request::{parse_head, Request};
    use ringyard::http::response::{head_bytes, Body, Response};

    const MAX_HEAD: usize = 64 * 1024;

    /// `docker pull` through containerd: GET of a manifest by tag, with its five-type Accept list.
    const PULL_HEAD: &[u8] = b"GET /v2/library/alpine/manifests/latest HTTP/1.1\r\n\
Host: localhost:5000\r\n\
User-Agent: containerd/v1.7.22\r\n\
Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*\r\n\
Accept-Encoding: gzip\r\n\
\r\n";

    /// A chunked-upload PATCH: one 5 MiB chunk of a layer with its Content-Range.
    const PATCH_HEAD: &[u8] =
        b"PATCH /v2/library/alpine/blobs/uploads/3f2a9c1e0b7d4e6f8a1b2c3d4e5f6a7b HTTP/1.1\r\n\
Host: localhost:5000\r\n\
User-Agent: containerd/v1.7.22\r\n\
Content-Type: application/octet-stream\r\n\
Content-Length: 5242880\r\n\
Content-Range: 5242880-10485759\r\n\
Accept-Encoding: gzip\r\n\
\r\n";

    /// Every pull: parse the head of a manifest GET.
    #[divan::bench]
    fn parse_head_pull_manifest() -> (Request, usize) {
        parse_head(black_box(PULL_HEAD), MAX_HEAD)
            .unwrap()
            .expect("complete head")
    }

    /// Every push chunk: parse the head of an upload PATCH (Content-Length, Content-Range).
    #[divan::bench]
    fn parse_head_push_patch() -> (Request, usize) {
        parse_head(black_box(PATCH_HEAD), MAX_HEAD)
            .unwrap()
            .expect("complete head")
    }

    /// Every pull: route a manifest GET by tag.
    #[divan::bench]
    fn route_manifest() {
        black_box(route(black_box("/v2/library/alpine/manifests/latest")));
    }

    /// Every layer pull: route a blob GET under a deep repository name.
    #[divan::bench]
    fn route_blob_deep_name() {
        black_box(route(black_box(
            "/v2/a/b/c/d/e/long-name_with.parts/blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        )));
    }

    /// Every push chunk: route an upload PATCH.
    #[divan::bench]
    fn route_upload() {
        black_box(route(black_box(
            "/v2/library/alpine/blobs/uploads/3f2a9c1e0b7d4e6f8a1b2c3d4e5f6a7b",
        )));
    }

    /// Every response: serialize the status line and headers of a manifest HEAD answer.
    #[divan::bench]
    fn response_head_bytes(bencher: Bencher) {
        let mut resp = Response::new(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .header(
                "Docker-Content-Digest",
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            )
            .header("Docker-Distribution-Api-Version", "registry/2.0");
        resp.body = Body::LengthOnly(1_234);
        bencher.bench_local(|| head_bytes(black_box(&resp), true));
    }
}

/// The grammar checks run on every URL before anything touches the store or the index.
#[divan::bench_group(sample_count = 500, sample_size = 1000)]
mod grammar {
    use super::*;
    use ringyard::oci::name::{validate_name, validate_tag, Reference};

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// Every `/v2/<name>/...` request: validate the repository name.
    #[divan::bench(args = ["library/alpine", "a/b/c/d/e/long-name_with.parts"])]
    fn validate_repository_name(name: &str) {
        validate_name(black_box(name)).unwrap();
    }

    /// Manifest PUT/GET by tag: validate the tag.
    #[divan::bench(args = ["latest", "v1.2.3-alpine3.20_build.7"])]
    fn validate_tag_name(tag: &str) {
        validate_tag(black_box(tag)).unwrap();
    }

    /// `/manifests/<tag>`: decide tag or digest, validate the tag.
    #[divan::bench]
    fn parse_reference_tag() -> Reference {
        Reference::parse(black_box("latest")).unwrap()
    }

    /// `/manifests/<digest>`: decide tag or digest, validate the digest.
    #[divan::bench]
    fn parse_reference_digest() -> Reference {
        Reference::parse(black_box(DIGEST)).unwrap()
    }

    /// Blob GET/HEAD and upload completion: parse the `sha256:<hex>` digest.
    #[divan::bench]
    fn parse_digest() -> Digest {
        Digest::parse(black_box(DIGEST)).unwrap()
    }

    /// A client's mistake: the error path for an invalid digest (builds the OCI error).
    #[divan::bench]
    fn parse_digest_invalid() -> bool {
        Digest::parse(black_box("sha256:not-a-digest")).is_err()
    }
}

/// Range headers of resumable blob pulls and the Content-Range of upload chunks.
#[divan::bench_group(sample_count = 500, sample_size = 1000)]
mod range {
    use super::*;
    use ringyard::http::range::{parse_range, parse_upload_range};

    /// A 32 MiB layer.
    const BLOB_LEN: u64 = 32 << 20;

    /// Blob GET with `Range`: parse and clamp against the blob's length.
    #[divan::bench(args = ["bytes=0-1023", "bytes=-500", "bytes=1048576-"])]
    fn parse_get_range(header: &str) {
        black_box(parse_range(black_box(Some(header)), BLOB_LEN));
    }

    /// Upload PATCH: parse `Content-Range` in the spec's form and in the RFC 9110 form.
    #[divan::bench(args = ["5242880-10485759", "bytes 5242880-10485759/*"])]
    fn parse_patch_content_range(header: &str) -> Option<(u64, u64)> {
        parse_upload_range(black_box(header))
    }
}

/// Hashing every pushed byte: the streaming hasher fed as upload chunks arrive.
#[divan::bench_group(sample_count = 100, sample_size = 1)]
mod digest {
    use super::*;

    /// Blob upload: sha256 of one buffer through the streaming hasher, with throughput.
    #[divan::bench(args = [64 * 1024, 4 * 1024 * 1024])]
    fn sha256_stream(bencher: Bencher, len: usize) {
        let buf: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        bencher.counter(BytesCount::new(len)).bench(|| {
            let mut h = Hasher::new(Algorithm::Sha256);
            h.update(black_box(&buf));
            h.finish()
        });
    }

    /// Manifest PUT: the digest of the whole (small) manifest body.
    #[divan::bench(sample_size = 100)]
    fn sha256_of_manifest(bencher: Bencher) {
        let body = &*IMAGE_MANIFEST;
        bencher
            .counter(BytesCount::new(body.len()))
            .bench(|| Digest::sha256_of(black_box(body)));
    }
}

/// Manifest PUT: parse and validate the body before it is stored.
#[divan::bench_group(sample_count = 500, sample_size = 20)]
mod manifest {
    use super::*;
    use ringyard::oci::manifest::parse_manifest;
    use ringyard::oci::media::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};

    /// `docker push` / buildkit: an OCI image manifest with a config and 5 layers.
    #[divan::bench]
    fn parse_oci_image_manifest(bencher: Bencher) {
        let body = &*IMAGE_MANIFEST;
        bencher
            .counter(BytesCount::new(body.len()))
            .bench(|| parse_manifest(Some(OCI_MANIFEST), black_box(body)).unwrap());
    }

    /// `docker push` of a classic image: the Docker v2 schema 2 form of the same manifest.
    #[divan::bench]
    fn parse_docker_v2_manifest(bencher: Bencher) {
        let body = &*DOCKER_V2_MANIFEST;
        bencher
            .counter(BytesCount::new(body.len()))
            .bench(|| parse_manifest(Some(DOCKER_MANIFEST), black_box(body)).unwrap());
    }

    /// Multi-platform push (`docker buildx --platform ...`): an OCI index of 4 platforms.
    #[divan::bench]
    fn parse_oci_index(bencher: Bencher) {
        let body = &*IMAGE_INDEX;
        bencher
            .counter(BytesCount::new(body.len()))
            .bench(|| parse_manifest(Some(OCI_INDEX), black_box(body)).unwrap());
    }
}

/// Reads served from the in-memory metadata index (1000 repositories x 50 tags).
#[divan::bench_group(sample_count = 500, sample_size = 100)]
mod index {
    use super::*;

    /// Lookups cycle over a fixed pseudo-random set of keys, so they touch many repositories
    /// instead of one hot cache line.
    fn keys() -> impl FnMut() -> &'static (String, String, Digest) {
        let mut i = 0usize;
        move || {
            i = (i + 1) % LOOKUPS.len();
            &LOOKUPS[i]
        }
    }

    /// Pull by tag, first step: tag -> digest.
    #[divan::bench]
    fn resolve_tag(bencher: Bencher) {
        let ix = &*INDEX;
        bencher
            .with_inputs(keys())
            .bench_local_refs(|k| ix.resolve_tag(&k.0, &k.1));
    }

    /// `HEAD /v2/<name>/manifests/<tag>`: tag -> digest -> manifest record.
    #[divan::bench]
    fn head_manifest_by_tag(bencher: Bencher) {
        let ix = &*INDEX;
        bencher.with_inputs(keys()).bench_local_refs(|k| {
            let d = ix.resolve_tag(&k.0, &k.1)?;
            ix.manifest(&k.0, &d)
        });
    }

    /// `GET /v2/<name>/manifests/<digest>`: manifest record by digest.
    #[divan::bench]
    fn manifest_by_digest(bencher: Bencher) {
        let ix = &*INDEX;
        bencher
            .with_inputs(keys())
            .bench_local_refs(|k| ix.manifest(&k.0, &k.2));
    }

    /// `GET /v2/<name>/blobs/<digest>`: the repository/blob link check and size.
    #[divan::bench]
    fn blob_in_repo(bencher: Bencher) {
        let ix = &*INDEX;
        bencher
            .with_inputs(keys())
            .bench_local_refs(|k| ix.blob_in_repo(&k.0, &k.2));
    }

    /// A pull of a tag that does not exist (404 path).
    #[divan::bench]
    fn resolve_tag_miss(bencher: Bencher) {
        let ix = &*INDEX;
        bencher
            .with_inputs(keys())
            .bench_local_refs(|k| ix.resolve_tag(&k.0, "no-such-tag"));
    }

    /// `GET /v2/<name>/tags/list`: one page of up to 100 tags (all 50 of the repository).
    #[divan::bench]
    fn tags_list_page(bencher: Bencher) {
        let ix = &*INDEX;
        bencher
            .with_inputs(keys())
            .bench_local_refs(|k| ix.tags_after(&k.0, None, 100));
    }

    /// `GET /v2/_catalog?n=100&last=...`: one page of repository names from the middle.
    #[divan::bench]
    fn catalog_page(bencher: Bencher) {
        let ix = &*INDEX;
        let last = repo_name(500);
        bencher.bench(|| ix.repositories_after(Some(black_box(&last)), 100));
    }

    /// Manifest PUT, after the SQL commit: apply a re-push of an existing tagged manifest.
    #[divan::bench]
    fn apply_put_manifest(bencher: Bencher) {
        let mut ix = INDEX.clone();
        let (repo, tag, digest) = &LOOKUPS[7];
        let op = WriteOp::PutManifest {
            repo: repo.clone(),
            record: manifest_record(digest.clone()),
            refs: manifest_refs(repo, 0),
            tag: Some(tag.clone()),
            fixed_tag: false,
            requires: vec![],
        };
        bencher.bench_local(|| ix.apply(black_box(&op), 1_700_000_000_000));
    }
}

// --- fixtures

const REPOS: usize = 1000;
const TAGS_PER_REPO: usize = 50;
/// Layers per manifest in the index fixture (plus one config).
const LAYERS: usize = 3;

fn repo_name(i: usize) -> String {
    format!("team-{:02}/service-{i:04}", i % 40)
}

fn tag_name(j: usize) -> String {
    if j == 0 {
        "latest".to_string()
    } else {
        format!("v1.{j}.0")
    }
}

fn dg(label: &str) -> Digest {
    Digest::sha256_of(label.as_bytes())
}

fn manifest_refs(repo: &str, j: usize) -> Vec<(Digest, RefKind)> {
    let mut refs = vec![(dg(&format!("{repo}/config/{j}")), RefKind::Config)];
    for l in 0..LAYERS {
        // Base layers are shared by every tag of a repository, the top one is per tag.
        let label = if l + 1 < LAYERS {
            format!("{repo}/layer/{l}")
        } else {
            format!("{repo}/layer/{l}/{j}")
        };
        refs.push((dg(&label), RefKind::Layer));
    }
    refs
}

fn manifest_record(digest: Digest) -> ManifestRecord {
    ManifestRecord {
        digest,
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        size: 1_024,
        artifact_type: Some("application/vnd.oci.image.config.v1+json".into()),
        subject: None,
        annotations: None,
        created: 0,
    }
}

/// 1000 repositories x 50 tags, each tag on its own manifest with a config and 3 layers linked,
/// built through `Index::apply` as the engine thread does after each commit.
static INDEX: LazyLock<Index> = LazyLock::new(|| {
    let mut ix = Index::default();
    let mut now = 1_700_000_000_000;
    for i in 0..REPOS {
        let repo = repo_name(i);
        for j in 0..TAGS_PER_REPO {
            let refs = manifest_refs(&repo, j);
            for (k, (digest, _)) in refs.iter().enumerate() {
                ix.apply(
                    &WriteOp::LinkBlob {
                        repo: repo.clone(),
                        digest: digest.clone(),
                        size: 1_000 + k as u64 * 10_000_000,
                    },
                    now,
                );
            }
            let op = WriteOp::PutManifest {
                repo: repo.clone(),
                record: manifest_record(dg(&format!("{repo}/manifest/{j}"))),
                refs,
                tag: Some(tag_name(j)),
                fixed_tag: false,
                requires: vec![],
            };
            ix.apply(&op, now);
            now += 1;
        }
    }
    assert_eq!(ix.repository_count(), REPOS);
    assert_eq!(ix.manifest_count(), REPOS * TAGS_PER_REPO);
    ix
});

/// (repository, tag, manifest digest) triples spread over the whole index.
static LOOKUPS: LazyLock<Vec<(String, String, Digest)>> = LazyLock::new(|| {
    (0..1024usize)
        .map(|n| {
            let i = (n * 7919) % REPOS;
            let j = (n * 104_729) % TAGS_PER_REPO;
            let repo = repo_name(i);
            let digest = dg(&format!("{repo}/manifest/{j}"));
            (repo, tag_name(j), digest)
        })
        .collect()
});

fn descriptor(media_type: &str, label: &str, size: u64) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": dg(label).as_str(),
        "size": size,
    })
}

fn image_manifest(media_type: &str, config_type: &str, layer_type: &str) -> Vec<u8> {
    let sizes = [3_623_807u64, 29_126_484, 1_243_022, 18_771, 512];
    let layers: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| descriptor(layer_type, &format!("layer{i}"), s))
        .collect();
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config_type, "config", 1_472),
        "layers": layers,
    });
    if media_type.contains("oci") {
        m["annotations"] = serde_json::json!({
            "org.opencontainers.image.created": "2024-10-01T12:00:00Z",
            "org.opencontainers.image.source": "https://example.com/acme/service",
            "org.opencontainers.image.revision": "41ca978a0a5400cc24b274137efa9f25517fcc0b",
        });
    }
    serde_json::to_vec_pretty(&m).unwrap()
}

/// An OCI image manifest: config + 5 layers + annotations, as buildkit pushes it.
static IMAGE_MANIFEST: LazyLock<Vec<u8>> = LazyLock::new(|| {
    image_manifest(
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    )
});

/// The same image as a Docker v2 schema 2 manifest.
static DOCKER_V2_MANIFEST: LazyLock<Vec<u8>> = LazyLock::new(|| {
    image_manifest(
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.container.image.v1+json",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    )
});

/// An OCI index of 4 platforms (linux/amd64, linux/arm64/v8, linux/arm/v7, linux/s390x).
static IMAGE_INDEX: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let platforms = [
        ("amd64", None),
        ("arm64", Some("v8")),
        ("arm", Some("v7")),
        ("s390x", None),
    ];
    let manifests: Vec<_> = platforms
        .iter()
        .map(|(arch, variant)| {
            let mut d = descriptor(
                "application/vnd.oci.image.manifest.v1+json",
                &format!("manifest-{arch}"),
                1_609,
            );
            let mut platform = serde_json::json!({ "architecture": arch, "os": "linux" });
            if let Some(v) = variant {
                platform["variant"] = serde_json::json!(v);
            }
            d["platform"] = platform;
            d
        })
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    serde_json::to_vec_pretty(&m).unwrap()
});
