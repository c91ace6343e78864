//! Real clients against the real binary: skopeo, podman and buildah push and pull images that
//! `tests/fixtures/build-images.sh` builds offline (Debian's static busybox, a three-layer image,
//! a two-platform OCI image index), in OCI and Docker v2s2 formats; digests and bytes are compared
//! after every round trip, and what the registry stores (GET by digest) is compared with what the
//! clients see (`skopeo inspect --raw`).
//!
//! Needs: skopeo, podman, buildah, umoci, jq, /bin/busybox (busybox-static). A missing tool fails
//! the test with its name (`.ci/run` installs them).

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long one client command may run before the test fails (and the command is killed).
const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------------
// fixtures

static FIXTURES: OnceLock<PathBuf> = OnceLock::new();

/// Builds the fixture layouts once per test binary, under cargo's per-target temp dir (named by
/// our pid; layouts left by earlier runs whose process is gone are removed here).
fn fixtures() -> &'static Path {
    FIXTURES.get_or_init(|| {
        for tool in ["umoci", "jq"] {
            require_tool(tool);
        }
        assert!(
            Path::new("/bin/busybox").exists(),
            "missing tool: /bin/busybox (Debian package busybox-static)"
        );
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&base).unwrap();
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("clients-fixtures-") {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = base.join(format!("clients-fixtures-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build-images.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .expect("running tests/fixtures/build-images.sh");
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "build-images.sh failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// An OCI layout built by the fixture script: its tagged top-level manifest.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn get(name: &str) -> Layout {
        Layout {
            dir: fixtures().join(name),
        }
    }
    fn oci_ref(&self) -> String {
        format!("oci:{}:1", self.dir.display())
    }
    fn top_digest(&self) -> String {
        top_digest_of(&self.dir, "1")
    }
    fn blob(&self, digest: &str) -> Vec<u8> {
        layout_blob(&self.dir, digest)
    }
}

fn top_digest_of(layout: &Path, tag: &str) -> String {
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    for m in index["manifests"].as_array().expect("index.json manifests") {
        if m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag) {
            return m["digest"].as_str().unwrap().to_string();
        }
    }
    panic!("{}: no tag {tag} in index.json", layout.display());
}

fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let p = layout.join("blobs/sha256").join(hex);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every digest reachable from a manifest or index (itself included), in a stable order.
fn reachable(manifest: &[u8], digest: &str, load: &dyn Fn(&str) -> Vec<u8>) -> Vec<String> {
    let mut out = vec![digest.to_string()];
    let v = json(manifest);
    if let Some(children) = v["manifests"].as_array() {
        for c in children {
            let d = c["digest"].as_str().unwrap();
            let bytes = load(d);
            assert_eq!(
                sha256_digest(&bytes),
                d,
                "child manifest bytes do not match digest"
            );
            for x in reachable(&bytes, d, load) {
                if !out.contains(&x) {
                    out.push(x);
                }
            }
        }
    } else {
        for d in config_and_layers(&v) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

fn config_and_layers(v: &Value) -> Vec<String> {
    let mut out = vec![v["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string()];
    for l in v["layers"].as_array().expect("layers") {
        out.push(l["digest"].as_str().unwrap().to_string());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// per-test context: a server, an isolated containers config, and the tool runner

struct Ctx {
    server: Server,
    tmp: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Ctx {
    fn new(tools: &[&str]) -> Ctx {
        Ctx::with_server(tools, Server::start())
    }

    fn with_server(tools: &[&str], server: Server) -> Ctx {
        for t in tools {
            require_tool(t);
        }
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        std::fs::create_dir_all(t.join("tmp")).unwrap();
        std::fs::write(
            t.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                t.join("graph").display(),
                t.join("run").display()
            ),
        )
        .unwrap();
        std::fs::write(
            t.join("containers.conf"),
            format!(
                "[engine]\ntmp_dir = \"{}\"\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\n",
                t.join("libpod-tmp").display()
            ),
        )
        .unwrap();
        std::fs::write(
            t.join("registries.conf"),
            format!(
                "unqualified-search-registries = []\n\n[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
                server.host()
            ),
        )
        .unwrap();
        let p = |n: &str| t.join(n).display().to_string();
        let env = vec![
            ("CONTAINERS_STORAGE_CONF".to_string(), p("storage.conf")),
            ("CONTAINERS_CONF".to_string(), p("containers.conf")),
            (
                "CONTAINERS_REGISTRIES_CONF".to_string(),
                p("registries.conf"),
            ),
            ("TMPDIR".to_string(), p("tmp")),
            ("BUILDAH_ISOLATION".to_string(), "chroot".to_string()),
        ];
        Ctx { server, tmp, env }
    }

    fn host(&self) -> String {
        self.server.host()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn server_log_tail(&self) -> String {
        tail(&self.server.stderr(), 4000).to_string()
    }

    /// Runs a command; returns its stdout as bytes. Fails the test, with the command line, its
    /// output and the tail of the server's log, on a non-zero exit or after TOOL_TIMEOUT.
    fn run_bytes(&self, prog: &str, args: &[&str]) -> Vec<u8> {
        match self.try_run(prog, args) {
            Ok(out) => out,
            Err(msg) => panic!(
                "{msg}\n--- server stderr (tail) ---\n{}",
                self.server_log_tail()
            ),
        }
    }

    fn try_run(&self, prog: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = format!(
            "{prog}-{}",
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let out_p = self.path(&format!("{id}.out"));
        let err_p = self.path(&format!("{id}.err"));
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_p).unwrap())
            .stderr(std::fs::File::create(&err_p).unwrap());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let line = format!("{prog} {}", args.join(" "));
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run `{line}`: {e}"))?;
        let deadline = Instant::now() + TOOL_TIMEOUT;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = std::fs::read(&out_p).unwrap_or_default();
        let stderr = std::fs::read(&err_p).unwrap_or_default();
        let _ = std::fs::remove_file(&out_p);
        let _ = std::fs::remove_file(&err_p);
        match status {
            Some(st) if st.success() => Ok(stdout),
            Some(st) => Err(format!(
                "`{line}` failed ({st})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            )),
            None => Err(format!(
                "`{line}` did not finish within {TOOL_TIMEOUT:?}; killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            )),
        }
    }

    fn run(&self, prog: &str, args: &[&str]) -> String {
        String::from_utf8(self.run_bytes(prog, args)).expect("tool output is UTF-8")
    }

    fn skopeo_copy(&self, extra: &[&str], src: &str, dst: &str) {
        let mut args = vec!["copy", "--src-tls-verify=false", "--dest-tls-verify=false"];
        args.extend_from_slice(extra);
        args.push(src);
        args.push(dst);
        self.run("skopeo", &args);
    }

    fn inspect_raw(&self, image: &str) -> Vec<u8> {
        self.run_bytes("skopeo", &["inspect", "--raw", "--tls-verify=false", image])
    }

    fn docker_ref(&self, repo_tag: &str) -> String {
        format!("docker://{}/{}", self.host(), repo_tag)
    }

    /// GET on the registry; fails the test on anything but 200.
    fn get_ok(&self, path: &str) -> Response {
        let r = self.server.client().get(path);
        assert_eq!(
            r.status,
            200,
            "GET {path}: expected 200, got {}: {}\n--- server stderr (tail) ---\n{}",
            r.status,
            r.text(),
            self.server_log_tail()
        );
        r
    }

    /// What the registry stores for `repo` at `reference`, checked for consistency: the same bytes
    /// by tag and by digest, `Docker-Content-Digest` right, `Content-Type` the manifest's own
    /// mediaType, HEAD with the real length. Returns (digest, bytes, content type).
    fn stored_manifest(&self, repo: &str, reference: &str) -> (String, Vec<u8>, String) {
        let r = self.get_ok(&format!("/v2/{repo}/manifests/{reference}"));
        let digest = sha256_digest(&r.body);
        assert_eq!(
            r.header("docker-content-digest"),
            Some(digest.as_str()),
            "Docker-Content-Digest of {repo}:{reference}"
        );
        let ct = r.header("content-type").unwrap_or_default().to_string();
        let v = r.json();
        if let Some(mt) = v["mediaType"].as_str() {
            assert_eq!(
                ct, mt,
                "Content-Type of {repo}:{reference} vs its mediaType"
            );
        }
        let by_digest = self.get_ok(&format!("/v2/{repo}/manifests/{digest}"));
        assert!(
            by_digest.body == r.body,
            "{repo}: GET by digest differs from GET by {reference}"
        );
        let h = self
            .server
            .client()
            .head(&format!("/v2/{repo}/manifests/{reference}"));
        assert_eq!(h.status, 200, "HEAD {repo}:{reference}");
        assert_eq!(
            h.header("content-length"),
            Some(r.body.len().to_string().as_str()),
            "HEAD Content-Length of {repo}:{reference}"
        );
        assert_eq!(h.header("docker-content-digest"), Some(digest.as_str()));
        (digest, r.body, ct)
    }

    /// What a client pushed to `repo:tag`: consistent as [`Ctx::stored_manifest`] checks, the
    /// very bytes `skopeo inspect --raw` sees, with Content-Type `media`. Returns (digest, bytes).
    fn pushed_manifest(&self, repo: &str, tag: &str, media: &str) -> (String, Vec<u8>) {
        let raw = self.inspect_raw(&self.docker_ref(&format!("{repo}:{tag}")));
        let (digest, stored, ct) = self.stored_manifest(repo, tag);
        assert!(
            stored == raw,
            "{repo}:{tag}: registry bytes differ from skopeo inspect --raw"
        );
        assert_eq!(ct, media, "{repo}:{tag}: Content-Type");
        (digest, stored)
    }

    /// Every blob a stored manifest (or an index and its child manifests) references is served by
    /// `repo` (GET and HEAD) with bytes that hash to its digest; returns the reachable digests
    /// (manifests first) with their bytes.
    fn stored_closure(&self, repo: &str, digest: &str) -> Vec<(String, Vec<u8>)> {
        let manifest = |d: &str| self.get_ok(&format!("/v2/{repo}/manifests/{d}")).body;
        let top = manifest(digest);
        let mut manifests = vec![(digest.to_string(), top.clone())];
        if let Some(kids) = json(&top)["manifests"].as_array() {
            for k in kids {
                let d = k["digest"].as_str().expect("child digest");
                manifests.push((d.to_string(), manifest(d)));
            }
        }
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        for (d, b) in &manifests {
            assert_eq!(
                &sha256_digest(b),
                d,
                "{repo}: manifest {d} does not hash to its digest"
            );
            out.push((d.clone(), b.clone()));
        }
        for (_, m) in &manifests {
            let v = json(m);
            if v["manifests"].is_array() {
                continue;
            }
            for d in config_and_layers(&v) {
                if out.iter().any(|(x, _)| *x == d) {
                    continue;
                }
                let b = self.get_ok(&format!("/v2/{repo}/blobs/{d}")).body;
                assert_eq!(
                    sha256_digest(&b),
                    d,
                    "{repo}: blob {d} does not hash to its digest"
                );
                let h = self.server.client().head(&format!("/v2/{repo}/blobs/{d}"));
                assert_eq!(h.status, 200, "HEAD blob {d} in {repo}");
                assert_eq!(
                    h.header("content-length"),
                    Some(b.len().to_string().as_str()),
                    "HEAD Content-Length of blob {d} in {repo}"
                );
                out.push((d, b));
            }
        }
        out
    }
}

/// Every blob of the pulled OCI layout reachable from `tag` is byte-identical to the source
/// layout's blob of the same digest, and the top-level digest is `want_top`.
fn assert_layout_identical(src: &Layout, pulled: &Path, tag: &str, want_top: &str) {
    let top = top_digest_of(pulled, tag);
    assert_eq!(top, want_top, "top-level digest of the pulled layout");
    let load = |d: &str| layout_blob(pulled, d);
    let digests = reachable(&load(&top), &top, &load);
    assert!(
        digests.len() >= 3,
        "pulled layout is too small: {digests:?}"
    );
    for d in digests {
        let got = layout_blob(pulled, &d);
        assert_eq!(
            sha256_digest(&got),
            d,
            "pulled blob {d} does not hash to its name"
        );
        assert!(
            got == src.blob(&d),
            "pulled blob {d} differs from the source layout's"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// skopeo

/// skopeo pushes the busybox and three-layer images in OCI format and pulls them back: the stored
/// manifests are the source bytes, every blob round-trips byte-identical.
#[test]
fn skopeo_oci_push_pull_roundtrip() {
    let ctx = Ctx::new(&["skopeo", "umoci", "jq"]);
    for (name, repo) in [
        ("busybox", "library/busybox"),
        ("multi", "ringyard/tests/multi"),
    ] {
        let src = Layout::get(name);
        let src_digest = src.top_digest();
        let src_manifest = src.blob(&src_digest);
        ctx.skopeo_copy(&[], &src.oci_ref(), &ctx.docker_ref(&format!("{repo}:1")));

        // skopeo inspect --raw sees the stored bytes (pushed_manifest), which are the source's
        let (digest, stored) = ctx.pushed_manifest(repo, "1", OCI_MANIFEST);
        assert!(
            stored == src_manifest,
            "{name}: skopeo inspect --raw differs from the pushed manifest"
        );
        assert_eq!(digest, src_digest, "{name}: stored manifest digest");
        for (d, bytes) in ctx.stored_closure(repo, &digest) {
            assert!(
                bytes == src.blob(&d),
                "{name}: stored {d} differs from the source"
            );
        }

        // skopeo's own view of the image
        let info = json(&ctx.run_bytes(
            "skopeo",
            &[
                "inspect",
                "--tls-verify=false",
                &ctx.docker_ref(&format!("{repo}:1")),
            ],
        ));
        assert_eq!(
            info["Digest"].as_str(),
            Some(src_digest.as_str()),
            "{name}: skopeo inspect Digest"
        );
        let want_layers: Vec<String> = config_and_layers(&json(&src_manifest))[1..].to_vec();
        let got_layers: Vec<String> = info["Layers"]
            .as_array()
            .expect("skopeo inspect Layers")
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect();
        assert_eq!(got_layers, want_layers, "{name}: skopeo inspect Layers");

        // pull back by tag and by digest into fresh layouts
        let out = ctx.path(&format!("pulled-{name}"));
        ctx.skopeo_copy(
            &[],
            &ctx.docker_ref(&format!("{repo}:1")),
            &format!("oci:{}:1", out.display()),
        );
        assert_layout_identical(&src, &out, "1", &src_digest);
        let out2 = ctx.path(&format!("pulled-{name}-by-digest"));
        ctx.skopeo_copy(
            &[],
            &ctx.docker_ref(&format!("{repo}@{src_digest}")),
            &format!("oci:{}:d", out2.display()),
        );
        assert_layout_identical(&src, &out2, "d", &src_digest);
    }
}

/// skopeo converts to Docker schema 2 on push (`--format v2s2`): the registry stores and serves the
/// Docker media type, config and layer digests are unchanged, and a `dir:` pull gets the exact
/// manifest and blobs back.
#[test]
fn skopeo_v2s2_push_pull_roundtrip() {
    let ctx = Ctx::new(&["skopeo", "umoci", "jq"]);
    for (name, repo) in [("busybox", "v2s2/busybox"), ("multi", "v2s2/multi")] {
        let src = Layout::get(name);
        let src_manifest = json(&src.blob(&src.top_digest()));
        ctx.skopeo_copy(
            &["--format", "v2s2"],
            &src.oci_ref(),
            &ctx.docker_ref(&format!("{repo}:v2")),
        );
        let (digest, stored) = ctx.pushed_manifest(repo, "v2", DOCKER_MANIFEST);
        let v = json(&stored);
        assert_eq!(v["mediaType"].as_str(), Some(DOCKER_MANIFEST));
        assert_eq!(
            config_and_layers(&v),
            config_and_layers(&src_manifest),
            "{name}: v2s2 conversion must keep the config and layer digests"
        );
        for (d, bytes) in ctx.stored_closure(repo, &digest) {
            if d != digest {
                assert!(
                    bytes == src.blob(&d),
                    "{name}: stored {d} differs from the source"
                );
            }
        }

        // dir: keeps the manifest as the registry serves it
        let out = ctx.path(&format!("dir-{name}"));
        ctx.skopeo_copy(
            &[],
            &ctx.docker_ref(&format!("{repo}:v2")),
            &format!("dir:{}", out.display()),
        );
        let pulled = std::fs::read(out.join("manifest.json")).unwrap();
        assert!(
            pulled == stored,
            "{name}: dir: pull manifest differs from the stored one"
        );
        for d in config_and_layers(&v) {
            let b = std::fs::read(out.join(d.strip_prefix("sha256:").unwrap())).unwrap();
            assert!(
                b == src.blob(&d),
                "{name}: pulled blob {d} differs from the source"
            );
        }
        // and back into an OCI layout: skopeo converts the manifest and re-serializes the config
        // as an OCI config (client behaviour, so its bytes may differ); the layers stay identical
        // and the config means the same image
        let out_oci = ctx.path(&format!("oci-from-v2s2-{name}"));
        ctx.skopeo_copy(
            &[],
            &ctx.docker_ref(&format!("{repo}@{digest}")),
            &format!("oci:{}:1", out_oci.display()),
        );
        let back = json(&layout_blob(&out_oci, &top_digest_of(&out_oci, "1")));
        assert_eq!(
            config_and_layers(&back)[1..],
            config_and_layers(&src_manifest)[1..],
            "{name}: layers after v2s2 -> oci"
        );
        for d in &config_and_layers(&back)[1..] {
            assert!(
                layout_blob(&out_oci, d) == src.blob(d),
                "{name}: {d} after v2s2->oci"
            );
        }
        let cfg_back = json(&layout_blob(&out_oci, &config_and_layers(&back)[0]));
        let cfg_src = json(&src.blob(&config_and_layers(&src_manifest)[0]));
        for field in ["architecture", "os", "rootfs"] {
            assert_eq!(
                cfg_back[field], cfg_src[field],
                "{name}: config {field} after v2s2 -> oci"
            );
        }
    }
}

/// `skopeo copy --all` of a two-platform OCI image index: the index and both platform manifests are
/// stored byte-exact, everything pulls back with `--all`, and a single-platform pull
/// (`--override-arch arm64`) resolves the right child.
#[test]
fn skopeo_multiarch_index_all() {
    let ctx = Ctx::new(&["skopeo", "umoci", "jq"]);
    let src = Layout::get("index");
    let src_digest = src.top_digest();
    let src_index = src.blob(&src_digest);
    let children: Vec<(String, String)> = json(&src_index)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(children.len(), 2);
    let repo = "multiarch/busybox";
    ctx.skopeo_copy(
        &["--all"],
        &src.oci_ref(),
        &ctx.docker_ref(&format!("{repo}:1")),
    );

    // skopeo inspect --raw sees the stored bytes (pushed_manifest), which are the source's
    let (digest, stored) = ctx.pushed_manifest(repo, "1", OCI_INDEX);
    assert!(
        stored == src_index,
        "skopeo inspect --raw differs from the source index"
    );
    assert_eq!(digest, src_digest);
    for (_, child) in &children {
        let (d, bytes, ct) = ctx.stored_manifest(repo, child);
        assert_eq!(&d, child);
        assert!(
            bytes == src.blob(child),
            "child {child} differs from the source"
        );
        assert_eq!(ct, OCI_MANIFEST);
    }
    let closure = ctx.stored_closure(repo, &digest);
    assert_eq!(
        closure.len(),
        6,
        "index + 2 manifests + 2 configs + 1 shared layer"
    );
    for (d, bytes) in closure {
        assert!(bytes == src.blob(&d), "stored {d} differs from the source");
    }

    let out = ctx.path("pulled-index");
    ctx.skopeo_copy(
        &["--all"],
        &ctx.docker_ref(&format!("{repo}:1")),
        &format!("oci:{}:1", out.display()),
    );
    assert_layout_identical(&src, &out, "1", &src_digest);

    let (_, arm) = children.iter().find(|(a, _)| a == "arm64").unwrap();
    let out_arm = ctx.path("pulled-arm64");
    ctx.run(
        "skopeo",
        &[
            "--override-arch",
            "arm64",
            "copy",
            "--src-tls-verify=false",
            &ctx.docker_ref(&format!("{repo}:1")),
            &format!("oci:{}:arm", out_arm.display()),
        ],
    );
    assert_eq!(
        &top_digest_of(&out_arm, "arm"),
        arm,
        "arm64 pull resolved the wrong manifest"
    );
}

/// The same index converted to a Docker manifest list (`--all --format v2s2`): stored with the
/// Docker list media type, every child a v2s2 manifest the registry serves.
#[test]
fn skopeo_multiarch_docker_manifest_list() {
    let ctx = Ctx::new(&["skopeo", "umoci", "jq"]);
    let src = Layout::get("index");
    let repo = "multiarch/busybox-v2s2";
    ctx.skopeo_copy(
        &["--all", "--format", "v2s2"],
        &src.oci_ref(),
        &ctx.docker_ref(&format!("{repo}:1")),
    );
    let (digest, stored) = ctx.pushed_manifest(repo, "1", DOCKER_LIST);
    let list = json(&stored);
    let kids = list["manifests"].as_array().expect("manifests");
    assert_eq!(kids.len(), 2);
    for k in kids {
        assert_eq!(k["mediaType"].as_str(), Some(DOCKER_MANIFEST));
        let (_, _, ct) = ctx.stored_manifest(repo, k["digest"].as_str().unwrap());
        assert_eq!(ct, DOCKER_MANIFEST);
    }
    assert_eq!(ctx.stored_closure(repo, &digest).len(), 6);
    let out = ctx.path("pulled-list");
    ctx.skopeo_copy(
        &["--all"],
        &ctx.docker_ref(&format!("{repo}:1")),
        &format!("dir:{}", out.display()),
    );
    let pulled = std::fs::read(out.join("manifest.json")).unwrap();
    assert!(
        pulled == stored,
        "dir: pull of the list differs from the stored list"
    );
}

/// skopeo against an immutable tag (`tags.immutable`): the same image again is taken, another
/// one fails with the registry's reason in skopeo's output, and other tags still move.
#[test]
fn skopeo_meets_an_immutable_tag() {
    let dir = tempfile::tempdir().unwrap();
    let rules = "tags.immutable:\n  - repository: \"prod/**\"\n    tags: [\"v*\"]\n";
    let config = config_file(dir.path(), rules);
    let server = Server::start_in_temp(&["--config", config.to_str().unwrap()]);
    let ctx = Ctx::with_server(&["skopeo", "umoci", "jq"], server);
    let dst = ctx.docker_ref("prod/app:v1");
    let copy = |layout: &str| {
        let args = ["copy", "--src-tls-verify=false", "--dest-tls-verify=false"];
        let src = Layout::get(layout).oci_ref();
        ctx.try_run(
            "skopeo",
            &[&args[..], &[src.as_str(), dst.as_str()]].concat(),
        )
    };
    copy("busybox").expect("the first push");
    copy("busybox").expect("the same image again");
    let (kept, _, _) = ctx.stored_manifest("prod/app", "v1");
    let refused = copy("multi").expect_err("another image to an immutable tag");
    assert!(
        refused.contains("tag v1 of prod/app is immutable")
            && refused.contains("tags.immutable[0]"),
        "skopeo shows the registry's reason:\n{refused}"
    );
    assert_eq!(ctx.stored_manifest("prod/app", "v1").0, kept);
    ctx.skopeo_copy(
        &[],
        &Layout::get("multi").oci_ref(),
        &ctx.docker_ref("prod/app:latest"),
    );
}

/// `skopeo list-tags` sees every pushed tag, lexically sorted (as the registry's tags/list says),
/// and `skopeo delete` removes a manifest so that neither its digest nor its tag serves it.
#[test]
fn skopeo_list_tags_and_delete() {
    let ctx = Ctx::new(&["skopeo", "umoci", "jq"]);
    let src = Layout::get("busybox");
    let repo = "tags/busybox";
    let tags = ["1", "latest", "v1.0.0", "a-tag", "Z_upper", "1.36.1-musl"];
    for t in tags {
        ctx.skopeo_copy(&[], &src.oci_ref(), &ctx.docker_ref(&format!("{repo}:{t}")));
    }
    let listed = json(&ctx.run_bytes(
        "skopeo",
        &["list-tags", "--tls-verify=false", &ctx.docker_ref(repo)],
    ));
    let got: Vec<String> = listed["Tags"]
        .as_array()
        .expect("skopeo list-tags Tags")
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "skopeo list-tags");
    let api = json(&ctx.get_ok(&format!("/v2/{repo}/tags/list")).body);
    assert_eq!(api["name"].as_str(), Some(repo));
    let api_tags: Vec<String> = api["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(api_tags, want, "GET tags/list");

    // skopeo delete: DELETE of the manifest by digest
    let single = "tags/deleteme";
    ctx.skopeo_copy(
        &[],
        &Layout::get("multi").oci_ref(),
        &ctx.docker_ref(&format!("{single}:only")),
    );
    let (digest, _, _) = ctx.stored_manifest(single, "only");
    ctx.run(
        "skopeo",
        &[
            "delete",
            "--tls-verify=false",
            &ctx.docker_ref(&format!("{single}:only")),
        ],
    );
    let r = ctx
        .server
        .client()
        .get(&format!("/v2/{single}/manifests/{digest}"));
    assert_eq!(r.status, 404, "deleted manifest by digest: {}", r.text());
    let r = ctx
        .server
        .client()
        .get(&format!("/v2/{single}/manifests/only"));
    assert_eq!(
        r.status,
        404,
        "a tag must not serve a deleted manifest: {}",
        r.text()
    );
    assert!(
        ctx.try_run(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &ctx.docker_ref(&format!("{single}:only"))
            ]
        )
        .is_err(),
        "skopeo inspect of a deleted image must fail"
    );
    // the other repository is untouched
    ctx.stored_manifest(repo, "latest");
}

// ---------------------------------------------------------------------------------------------
// podman

fn podman_image_id(ctx: &Ctx, reference: &str) -> String {
    ctx.run(
        "podman",
        &["image", "inspect", "--format", "{{.Id}}", reference],
    )
    .trim()
    .to_string()
}

/// podman pulls an image skopeo pushed, pushes it to other repositories (OCI and v2s2), and pulls
/// those back: the image ID (config digest) survives every hop, and every stored blob hashes right.
#[test]
fn podman_pull_push_pull() {
    let ctx = Ctx::new(&["podman", "skopeo", "umoci", "jq"]);
    let src = Layout::get("multi");
    let src_manifest = json(&src.blob(&src.top_digest()));
    let config_digest = src_manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let config_hex = config_digest.strip_prefix("sha256:").unwrap().to_string();
    let host = ctx.host();
    ctx.skopeo_copy(&[], &src.oci_ref(), &ctx.docker_ref("podman/src:1"));

    ctx.run(
        "podman",
        &[
            "pull",
            "--tls-verify=false",
            &format!("{host}/podman/src:1"),
        ],
    );
    assert_eq!(
        podman_image_id(&ctx, &format!("{host}/podman/src:1")),
        config_hex
    );

    for (format, repo, media) in [
        ("oci", "podman/dst-oci", OCI_MANIFEST),
        ("v2s2", "podman/dst-v2s2", DOCKER_MANIFEST),
    ] {
        ctx.run(
            "podman",
            &[
                "push",
                "--tls-verify=false",
                "--format",
                format,
                &format!("{host}/podman/src:1"),
                &format!("docker://{host}/{repo}:pushed"),
            ],
        );
        let (digest, stored) = ctx.pushed_manifest(repo, "pushed", media);
        let v = json(&stored);
        assert_eq!(
            v["config"]["digest"].as_str(),
            Some(config_digest.as_str()),
            "{repo}: config"
        );
        assert_eq!(
            v["layers"].as_array().unwrap().len(),
            3,
            "{repo}: layer count"
        );
        let closure = ctx.stored_closure(repo, &digest);
        assert_eq!(closure.len(), 5, "{repo}: manifest + config + 3 layers");
    }

    // a fresh pull of what podman pushed
    ctx.run("podman", &["rmi", "-a", "-f"]);
    for repo in ["podman/dst-oci", "podman/dst-v2s2"] {
        let r = format!("{host}/{repo}:pushed");
        ctx.run("podman", &["pull", "--tls-verify=false", &r]);
        assert_eq!(
            podman_image_id(&ctx, &r),
            config_hex,
            "{repo}: image ID after pull"
        );
        // the image is the same for both pulls (same config), so podman records a second
        // repo digest rather than replacing .Digest
        let repo_digests = ctx.run(
            "podman",
            &[
                "image",
                "inspect",
                "--format",
                "{{range .RepoDigests}}{{.}} {{end}}",
                &r,
            ],
        );
        let (stored_digest, _, _) = ctx.stored_manifest(repo, "pushed");
        let want = format!("{host}/{repo}@{stored_digest}");
        assert!(
            repo_digests.split_whitespace().any(|d| d == want),
            "{repo}: podman's RepoDigests {repo_digests:?} lack {want}"
        );
    }
}

/// podman pulls the right platform out of an image index, by default (amd64) and with --arch.
#[test]
fn podman_pull_multiarch() {
    let ctx = Ctx::new(&["podman", "skopeo", "umoci", "jq"]);
    let src = Layout::get("index");
    let index = json(&src.blob(&src.top_digest()));
    let config_of = |arch: &str| -> String {
        let m = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"].as_str() == Some(arch))
            .unwrap();
        let man = json(&src.blob(m["digest"].as_str().unwrap()));
        man["config"]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_string()
    };
    let host = ctx.host();
    ctx.skopeo_copy(
        &["--all"],
        &src.oci_ref(),
        &ctx.docker_ref("podman/multiarch:1"),
    );
    let r = format!("{host}/podman/multiarch:1");
    ctx.run(
        "podman",
        &["pull", "--tls-verify=false", "--arch", "amd64", &r],
    );
    assert_eq!(podman_image_id(&ctx, &r), config_of("amd64"));
    ctx.run(
        "podman",
        &["pull", "--tls-verify=false", "--arch", "arm64", &r],
    );
    assert_eq!(podman_image_id(&ctx, &r), config_of("arm64"));
}

// ---------------------------------------------------------------------------------------------
// buildah

/// buildah builds an image from scratch (busybox copied in), commits it straight to the registry
/// and also pushes a committed local image in OCI and v2s2; podman pulls them back by ID.
#[test]
fn buildah_from_scratch_commit_push() {
    let ctx = Ctx::new(&["buildah", "podman", "skopeo"]);
    assert!(
        Path::new("/bin/busybox").exists(),
        "missing tool: /bin/busybox (busybox-static)"
    );
    let host = ctx.host();
    let ctr = ctx.run("buildah", &["from", "scratch"]).trim().to_string();
    ctx.run("buildah", &["copy", &ctr, "/bin/busybox", "/bin/busybox"]);
    ctx.run(
        "buildah",
        &[
            "config",
            "--cmd",
            "/bin/busybox sh",
            "--os",
            "linux",
            "--arch",
            "amd64",
            "--label",
            "built-by=ringyard-tests",
            &ctr,
        ],
    );
    let id = ctx
        .run(
            "buildah",
            &[
                "commit",
                "--quiet",
                "--timestamp",
                "1700000000",
                &ctr,
                "localhost/ringyard/built:1",
            ],
        )
        .trim()
        .trim_start_matches("sha256:")
        .to_string();
    assert_eq!(id.len(), 64, "buildah commit printed an image ID: {id:?}");

    // commit straight to the registry
    ctx.run(
        "buildah",
        &[
            "commit",
            "--quiet",
            "--tls-verify=false",
            "--timestamp",
            "1700000000",
            &ctr,
            &format!("docker://{host}/built/direct:1"),
        ],
    );
    let (digest, _) = ctx.pushed_manifest("built/direct", "1", OCI_MANIFEST);
    assert_eq!(
        ctx.stored_closure("built/direct", &digest).len(),
        3,
        "manifest + config + 1 layer"
    );

    for (format, repo, media) in [
        ("oci", "built/pushed-oci", OCI_MANIFEST),
        ("v2s2", "built/pushed-v2s2", DOCKER_MANIFEST),
    ] {
        ctx.run(
            "buildah",
            &[
                "push",
                "--tls-verify=false",
                "--format",
                format,
                "localhost/ringyard/built:1",
                &format!("docker://{host}/{repo}:1"),
            ],
        );
        let (digest, stored) = ctx.pushed_manifest(repo, "1", media);
        let v = json(&stored);
        assert_eq!(
            v["config"]["digest"]
                .as_str()
                .map(|d| d.trim_start_matches("sha256:")),
            Some(id.as_str()),
            "{repo}: the config is the committed image"
        );
        assert_eq!(
            ctx.stored_closure(repo, &digest).len(),
            3,
            "{repo}: manifest + config + 1 layer"
        );
    }
    ctx.run("buildah", &["rm", &ctr]);

    let pulled: BTreeSet<String> = ["built/pushed-oci", "built/pushed-v2s2"]
        .iter()
        .map(|repo| {
            let r = format!("{host}/{repo}:1");
            ctx.run("podman", &["pull", "--tls-verify=false", &r]);
            podman_image_id(&ctx, &r)
        })
        .collect();
    assert_eq!(pulled.into_iter().collect::<Vec<_>>(), vec![id.clone()]);
}
