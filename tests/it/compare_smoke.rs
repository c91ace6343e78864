//! The performance harness keeps working: `loadtest/compare.sh --smoke --auth --scale` (seconds
//! of each workload, small sizes, the authentication, TLS and S3 + PostgreSQL workloads
//! included) runs ringyard, the reference registry and nginx side by side and must end with
//! exit 0, no error in any run, and a figure for every workload. No timing is asserted: the machines are shared and
//! noisy; the figures are for people, in the README.
//!
//! Needs: docker-registry, nginx, jq, python3, openssl, PostgreSQL's binaries, s3s-fs and boto3
//! (`.ci/run` installs them).

use crate::common::*;
use std::process::Command;

#[test]
fn compare_smoke_run_completes_with_every_figure() {
    for tool in ["docker-registry", "jq", "python3", "openssl"] {
        require_tool(tool);
    }
    assert!(
        std::path::Path::new("/usr/sbin/nginx").exists() || which("nginx"),
        "required tool `nginx` is not installed: run .ci/run"
    );
    let out = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/loadtest/compare.sh");
    let run = Command::new("bash")
        .arg(script)
        .arg("--smoke")
        .arg("--auth")
        .arg("--scale")
        .arg("--out")
        .arg(out.path())
        .env("COMPARE_TMPDIR", std::env::temp_dir())
        .output()
        .expect("running loadtest/compare.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "compare.sh --smoke failed ({}):\n{stdout}\n--- stderr (tail) ---\n{}",
        run.status,
        tail(&stderr, 6000)
    );
    assert!(stdout.contains("errors across all runs: 0"), "{stdout}");
    let summary = json(&std::fs::read(out.path().join("summary.json")).unwrap());
    let positive = |path: &[&str]| {
        let mut v = &summary;
        for p in path {
            v = &v[*p];
        }
        let x = v
            .as_f64()
            .unwrap_or_else(|| panic!("summary lacks {path:?}: {summary}"));
        assert!(x > 0.0, "{path:?} is {x}");
    };
    for srv in ["RY", "DIST", "NGX"] {
        positive(&[&format!("manifest_{srv}"), "requests_per_s"]);
        positive(&[&format!("manifest_{srv}"), "p99_ms"]);
        positive(&[&format!("blob_{srv}"), "mb_per_s"]);
    }
    for srv in ["RY", "DIST"] {
        positive(&[&format!("pull_{srv}"), "p99_ms"]);
        positive(&[&format!("push_{srv}"), "mb_per_s"]);
        positive(&[&format!("huge_{srv}"), "peak_rss_mib"]);
        positive(&[&format!("huge_{srv}"), "pull_mb_per_s"]);
    }
    positive(&["openssl_sha256_mb_per_s"]);
    for kind in ["anon", "user", "bearer"] {
        positive(&[&format!("basic_{kind}"), "requests_per_s"]);
    }
    for srv in ["RYT", "NGXT"] {
        for figure in [
            "manifest_requests_per_s",
            "handshakes_per_s",
            "blob_mb_per_s",
        ] {
            positive(&[&format!("tls_{srv}"), figure]);
        }
    }
    for figure in [
        &["s3", "pull_warm", "p99_ms"][..],
        &["s3", "pull_warm", "single_node_fs_p99_ms"],
        &["s3", "pull_cold", "p99_ms"],
        &["s3", "manifest", "pg_requests_per_s"],
        &["s3", "manifest", "sqlite_requests_per_s"],
        &["s3", "push", "RYS1"],
        &["s3", "push", "RYM"],
        &["s3", "push", "DISTS"],
        &["s3", "push", "boto3"],
        &["s3", "huge", "pull_mb_per_s"],
    ] {
        positive(figure);
    }
    // A cold pull read the image from S3, on each node, at least once.
    let image = summary["s3"]["pull_cold"]["image_bytes"].as_f64().unwrap();
    for read in summary["s3"]["pull_cold"]["s3_read_bytes_per_node"]
        .as_array()
        .expect("S3 reads per node")
    {
        assert!(read.as_f64().unwrap() >= image, "{summary}");
    }
    // Every server the script started is gone again.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !ps.lines().any(|l| l.contains("ringyard-compare.")),
        "compare.sh left processes behind:\n{ps}"
    );
}

fn which(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .status()
        .is_ok_and(|s| s.success())
}
