//! Read-only mode on a really read-only filesystem (a read-only bind mount; these tests run as
//! root), and starts that fail leaving nothing behind, against the real binary.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A read-only bind mount of `src` at `dst`, unmounted when dropped.
struct RoMount {
    dst: PathBuf,
}

impl RoMount {
    fn new(src: &Path, dst: &Path) -> RoMount {
        std::fs::create_dir_all(dst).unwrap();
        let out = Command::new("mount")
            .args(["--bind", "-o", "ro"])
            .arg(src)
            .arg(dst)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount --bind -o ro {} {} failed ({}): {}{}",
            src.display(),
            dst.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let m = RoMount {
            dst: dst.to_path_buf(),
        };
        // The mount must really refuse writes, or the test proves nothing.
        let probe = std::fs::write(dst.join("probe"), b"x").unwrap_err();
        assert_eq!(probe.raw_os_error(), Some(libc::EROFS), "{probe}");
        m
    }
}

impl Drop for RoMount {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(&self.dst).output();
        if !out.is_ok_and(|o| o.status.success()) {
            // Still busy (a server killed by a failing assertion): detach it instead.
            let _ = Command::new("umount").arg("-l").arg(&self.dst).output();
        }
    }
}

/// Every file under `dir` with its size, sorted: what a run may not change.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path().strip_prefix(dir).unwrap().to_path_buf(), m.len()));
        }
    }
    out.sort();
    out
}

struct Pushed {
    manifest_digest: String,
    manifest: Vec<u8>,
    blobs: Vec<Vec<u8>>,
}

/// A normal run into `root`: an image tagged v1 and v2 in ro/app, a blob in ro/other. Ends
/// with a clean stop, or with SIGKILL (the last commits then wait in SQLite's -wal file).
fn populate(root: &Path, clean_stop: bool) -> Pushed {
    let s = Server::start_with(root, &[]);
    let mut c = s.client();
    let layers = [pseudo_random(200_000, 11), pseudo_random(3_000, 12)];
    let (manifest_digest, manifest) = push_image(&mut c, "ro/app", "v1", &[&layers[0], &layers[1]]);
    let r = c.put(
        "/v2/ro/app/manifests/v2",
        &[("Content-Type", OCI_MANIFEST)],
        &manifest,
    );
    assert_status(&r, 201);
    let other = pseudo_random(5_000, 13);
    push_blob(&mut c, "ro/other", &other);
    if clean_stop {
        assert_eq!(s.stop().code(), Some(0));
    } else {
        s.kill9();
    }
    let mut blobs = layers.to_vec();
    blobs.push(other);
    Pushed {
        manifest_digest,
        manifest,
        blobs,
    }
}

/// A data directory written by a normal run, bind-mounted read-only: `--read-only` starts on
/// it and serves every pull byte for byte, tags and the catalog, its readiness probe is 200,
/// and a push gets 405 UNSUPPORTED. Both after a clean stop (SQLite's -wal and -shm are gone)
/// and after SIGKILL (the last commits are still in the -wal). Without `--read-only` the
/// same mount is refused at start, with a message naming the problem.
#[test]
fn read_only_mount_serves_pulls_with_read_only_and_is_refused_without() {
    for clean_stop in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("data");
        let pushed = populate(&src, clean_stop);
        let wal = src.join("meta.db-wal");
        assert_eq!(
            wal.exists(),
            !clean_stop,
            "precondition: a -wal file only after SIGKILL"
        );
        let before = listing(&src);
        let mount = RoMount::new(&src, &tmp.path().join("ro"));
        let dst = mount.dst.to_str().unwrap();
        let what = if clean_stop { "clean stop" } else { "SIGKILL" };

        let s = Server::start_with(&mount.dst, &["--read-only"]);
        let mut c = s.client();
        let r = c.get("/v2/ro/app/manifests/v1");
        assert_status(&r, 200);
        assert!(r.body == pushed.manifest, "{what}: manifest bytes differ");
        assert_eq!(
            must_header(&r, "docker-content-digest"),
            pushed.manifest_digest
        );
        let r = c.get(&format!("/v2/ro/app/manifests/{}", pushed.manifest_digest));
        assert_status(&r, 200);
        assert!(r.body == pushed.manifest);
        for (i, b) in pushed.blobs.iter().enumerate() {
            let repo = if i < 2 { "ro/app" } else { "ro/other" };
            let r = c.get(&format!("/v2/{repo}/blobs/{}", sha256_digest(b)));
            assert_status(&r, 200);
            assert!(r.body == *b, "{what}: blob {i} bytes differ");
        }
        assert_eq!(
            c.get("/v2/ro/app/tags/list").json()["tags"],
            serde_json::json!(["v1", "v2"])
        );
        assert_eq!(
            c.get("/v2/_catalog").json()["repositories"],
            serde_json::json!(["ro/app", "ro/other"])
        );
        assert_status(&c.get("/readyz"), 200);
        let r = c.post(
            &format!("/v2/ro/app/blobs/uploads/?digest={}", sha256_digest(b"new")),
            &[("Content-Type", "application/octet-stream")],
            b"new",
        );
        assert_error(&r, 405, &["UNSUPPORTED"]);
        assert_eq!(s.stop().code(), Some(0), "{what}");

        let (status, stderr) =
            match Server::try_start(&["serve", "--listen", "127.0.0.1:0", "--root", dst]) {
                Ok(s) => panic!(
                    "{what}: started read-write on a read-only mount: {}",
                    s.stderr()
                ),
                Err(failed) => failed,
            };
        assert!(!status.success(), "{what}: {status}");
        assert!(
            stderr.contains("Read-only file system") && stderr.contains("--read-only"),
            "{what}: the message should name the read-only filesystem and the way out: {stderr}"
        );
        drop(mount);
        assert_eq!(listing(&src), before, "{what}: the data directory changed");
    }
}

/// A start that fails leaves behind no directory or LOCK file it made: into a fresh nested
/// path with the port taken, into an existing empty directory with the port taken, and with
/// `--read-only` on a path that does not exist.
#[test]
fn a_failed_start_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let start = |root: &Path, extra: &[&str]| {
        let mut args = vec!["serve", "--listen", &port, "--root", root.to_str().unwrap()];
        args.extend_from_slice(extra);
        match Server::try_start(&args) {
            Ok(s) => panic!("started on a taken port: {}", s.stderr()),
            Err((status, stderr)) => {
                assert!(!status.success(), "{status}");
                stderr
            }
        }
    };

    let fresh = tmp.path().join("fresh");
    let stderr = start(&fresh.join("a/root"), &[]);
    assert!(stderr.contains(&port), "{stderr}");
    assert!(!fresh.exists(), "left behind: {:?}", listing(tmp.path()));

    let existing = tmp.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    start(&existing, &[]);
    assert_eq!(
        listing(&existing),
        vec![],
        "left behind in an existing root"
    );

    let stderr = start(&fresh, &["--read-only"]);
    assert!(stderr.contains("--read-only"), "{stderr}");
    assert!(!fresh.exists());
    drop(taken);
}
