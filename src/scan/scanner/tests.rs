//! Images built here, in memory, with known contents, scanned against records written here:
//! every expected finding, nothing else.

use super::*;
use crate::oci::digest::Digest;
use std::collections::HashMap;
use std::io::Write;

/// A registry's blobs, in memory.
#[derive(Default)]
pub(crate) struct Mem(pub HashMap<Digest, Vec<u8>>);

impl Mem {
    pub(crate) fn put(&mut self, bytes: Vec<u8>) -> Digest {
        let d = Digest::sha256_of(&bytes);
        self.0.insert(d.clone(), bytes);
        d
    }
}

impl Blobs for Mem {
    fn open(&self, digest: &Digest) -> Result<Box<dyn Blob + '_>, String> {
        match self.0.get(digest) {
            Some(b) => Ok(Box::new(std::io::Cursor::new(&b[..]))),
            None => Err("no such blob".into()),
        }
    }
}

pub(crate) enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
}

pub(crate) fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = ::tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = ::tar::Header::new_gnu();
        match e {
            Entry::File(path, body) => {
                h.set_size(body.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(::tar::EntryType::Regular);
                b.append_data(&mut h, path, *body).unwrap();
            }
            Entry::Link(path, target) => {
                h.set_size(0);
                h.set_mode(0o777);
                h.set_entry_type(::tar::EntryType::Symlink);
                b.append_link(&mut h, path, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An OCI image of these layers (already compressed or not) into `mem`; its digest.
pub(crate) fn image(mem: &mut Mem, layers: &[Vec<u8>], platform: (&str, &str)) -> Digest {
    let config = serde_json::json!({"architecture": platform.1, "os": platform.0,
        "rootfs": {"type": "layers", "diff_ids": []}});
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_len = config_bytes.len();
    let config = mem.put(config_bytes);
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let len = l.len();
            let d = mem.put(l.clone());
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": d.as_str(), "size": len})
        })
        .collect();
    let manifest = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.as_str(), "size": config_len},
        "layers": layers});
    mem.put(serde_json::to_vec(&manifest).unwrap())
}

const OS_RELEASE: &[u8] =
    b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";

const DPKG_STATUS: &[u8] = b"Package: libssl3\nStatus: install ok installed\nSource: openssl\n\
Version: 3.0.11-1~deb12u1\n\nPackage: zlib1g\nStatus: install ok installed\n\
Source: zlib (1:1.2.13.dfsg-1)\nVersion: 1:1.2.13.dfsg-1\n\nPackage: libc6\n\
Status: install ok installed\nSource: glibc\nVersion: 2.36-9+deb12u4\n\nPackage: gone\n\
Status: deinstall ok config-files\nVersion: 1.0\n\n";

fn record(json: &str) -> Record {
    Record::parse(json.as_bytes()).unwrap()
}

/// Records written for the fixtures: each either matches exactly one package or is there
/// to be missed for a reason the comment says.
fn records() -> Vec<Record> {
    [
        // openssl 3.0.11-1~deb12u1 < 3.0.13-1~deb12u1: found, critical by its vector.
        r#"{"id": "DSA-5678-1", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2024-0001"],
           "summary": "openssl: a bad thing",
           "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
           "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.13-1~deb12u1"}]}]}]}"#,
        // openssl in Debian 11 only: not this image's release.
        r#"{"id": "DSA-0001-1", "modified": "2024-01-01T00:00:00Z",
           "affected": [{"package": {"ecosystem": "Debian:11", "name": "openssl"},
             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]}"#,
        // zlib: the epoch makes 1:1.2.13 newer than 1.3 (not affected).
        r#"{"id": "CVE-2024-0002", "modified": "2024-01-01T00:00:00Z",
           "affected": [{"package": {"ecosystem": "Debian", "name": "zlib"},
             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.3"}]}]}]}"#,
        // glibc up to and including 2.36-9+deb12u4 (last_affected): found, no fix known, low.
        r#"{"id": "CVE-2024-0003", "modified": "2024-01-01T00:00:00Z",
           "affected": [{"package": {"ecosystem": "Debian:12", "name": "glibc"},
             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "2.36-1"}, {"last_affected": "2.36-9+deb12u4"}]}],
             "ecosystem_specific": {"urgency": "low"}}]}"#,
        // requests < 2.31.0 (PEP 440): found, moderate.
        r#"{"id": "GHSA-j8r2-6x86-q33q", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2023-32681"],
           "affected": [{"package": {"ecosystem": "PyPI", "name": "Requests"},
             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "2.3.0"}, {"fixed": "2.31.0"}]}]}],
           "database_specific": {"severity": "MODERATE"}}"#,
        // lodash: installed in layer 1, removed by a whiteout in layer 2: never reported.
        r#"{"id": "GHSA-35jh-r3h4-6jhm", "modified": "2024-01-01T00:00:00Z",
           "affected": [{"package": {"ecosystem": "npm", "name": "lodash"},
             "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "4.17.21"}]}]}]}"#,
        // left-pad 1.3.0 in layer 2, affected only at 1.2.0 (versions list): not found.
        r#"{"id": "GHSA-lp", "modified": "2024-01-01T00:00:00Z",
           "affected": [{"package": {"ecosystem": "npm", "name": "left-pad"}, "versions": ["1.2.0"]}]}"#,
    ]
    .iter()
    .map(|j| record(j))
    .collect()
}

fn debian_image(mem: &mut Mem) -> Digest {
    let layer1 = gzip(&tar(&[
        Entry::Link("etc/os-release", "../usr/lib/os-release"),
        Entry::File("usr/lib/os-release", OS_RELEASE),
        Entry::File("var/lib/dpkg/status", DPKG_STATUS),
        Entry::File(
            "usr/lib/python3/dist-packages/requests-2.25.0.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: requests\nVersion: 2.25.0\n",
        ),
        Entry::File(
            "app/node_modules/lodash/package.json",
            br#"{"name": "lodash", "version": "4.17.20"}"#,
        ),
    ]));
    let layer2 = tar(&[
        Entry::File("app/node_modules/.wh.lodash", b""),
        Entry::File(
            "app/node_modules/left-pad/package.json",
            br#"{"name": "left-pad", "version": "1.3.0"}"#,
        ),
    ]);
    image(mem, &[layer1, layer2], ("linux", "amd64"))
}

fn scan_all(mem: &Mem, digest: &Digest) -> Report {
    let mut report = scan(mem, digest, Limits::default(), &mut |_| None, &mut |_| {}).unwrap();
    report.evaluate(&records());
    report
}

#[test]
fn every_expected_finding_and_nothing_else() {
    let mut mem = Mem::default();
    let digest = debian_image(&mut mem);
    let report = scan_all(&mem, &digest);
    assert_eq!(report.images.len(), 1);
    let image = &report.images[0];
    assert_eq!(image.platform.as_deref(), Some("linux/amd64"));
    assert_eq!(
        image
            .os
            .as_ref()
            .and_then(|o| o.ecosystem.clone())
            .as_deref(),
        Some("Debian:12")
    );
    let pkgs: Vec<(&str, &str, &str)> = image
        .packages
        .iter()
        .map(|p| (p.ecosystem.as_str(), p.name.as_str(), p.version.as_str()))
        .collect();
    assert_eq!(
        pkgs,
        vec![
            ("Debian:12", "glibc", "2.36-9+deb12u4"),
            ("Debian:12", "openssl", "3.0.11-1~deb12u1"),
            ("Debian:12", "zlib", "1:1.2.13.dfsg-1"),
            ("PyPI", "requests", "2.25.0"),
            ("npm", "left-pad", "1.3.0"),
        ],
        "lodash was whited out; the deinstalled package is not there"
    );
    type Row<'a> = (
        &'a str,
        Option<&'a str>,
        Severity,
        &'a str,
        &'a str,
        Option<&'a str>,
    );
    let found: Vec<Row<'_>> = image
        .findings
        .iter()
        .map(|f| {
            (
                f.id.as_str(),
                f.cve.as_deref(),
                f.severity,
                f.package.as_str(),
                f.installed.as_str(),
                f.fixed.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "DSA-5678-1",
                Some("CVE-2024-0001"),
                Severity::Critical,
                "openssl",
                "3.0.11-1~deb12u1",
                Some("3.0.13-1~deb12u1")
            ),
            (
                "GHSA-j8r2-6x86-q33q",
                Some("CVE-2023-32681"),
                Severity::Medium,
                "requests",
                "2.25.0",
                Some("2.31.0")
            ),
            (
                "CVE-2024-0003",
                Some("CVE-2024-0003"),
                Severity::Low,
                "glibc",
                "2.36-9+deb12u4",
                None
            ),
        ]
    );
    assert_eq!(image.findings[0].cvss, Some(9.8));
    assert_eq!(image.findings[0].binary.as_deref(), Some("libssl3"));
    assert_eq!(report.counts(), [1, 0, 1, 1, 0]);
}

#[test]
fn an_index_is_its_platforms_and_reuses_what_was_scanned() {
    let mut mem = Mem::default();
    let amd = debian_image(&mut mem);
    let arm_layer = gzip(&tar(&[
        Entry::File("etc/os-release", OS_RELEASE),
        Entry::File(
            "var/lib/dpkg/status",
            b"Package: libssl3\nStatus: install ok installed\nSource: openssl\nVersion: 3.0.13-1~deb12u1\n",
        ),
    ]));
    let arm = image(&mut mem, &[arm_layer], ("linux", "arm64"));
    let index = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd.as_str(),
             "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm.as_str(),
             "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm.as_str(),
             "size": 1, "platform": {"os": "unknown", "architecture": "unknown"}}]});
    let index = mem.put(serde_json::to_vec(&index).unwrap());
    let mut scanned = Vec::new();
    let mut report = scan(
        &mem,
        &index,
        Limits::default(),
        &mut |d| (*d == amd).then(|| scan_all(&mem, &amd).images.remove(0)),
        &mut |i| scanned.push(i.digest.clone()),
    )
    .unwrap();
    assert_eq!(scanned, vec![arm.to_string()], "amd64 was known already");
    report.evaluate(&records());
    let platforms: Vec<(Option<&str>, usize)> = report
        .images
        .iter()
        .map(|i| (i.platform.as_deref(), i.findings.len()))
        .collect();
    assert_eq!(
        platforms,
        vec![(Some("linux/amd64"), 3), (Some("linux/arm64/v8"), 0)],
        "the attestation-like unknown/unknown entry is left out; the fixed openssl is clean"
    );
}

#[test]
fn artifacts_are_not_images() {
    let mut mem = Mem::default();
    let cfg = mem.put(b"{}".to_vec());
    let manifest = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json",
            "digest": cfg.as_str(), "size": 2},
        "layers": []});
    let d = mem.put(serde_json::to_vec(&manifest).unwrap());
    let report = scan_all(&mem, &d);
    assert!(report.images.is_empty());
    assert!(report.notes[0].contains("an artifact, not a container image"));
}

#[test]
fn hostile_layers_fail_the_scan_with_a_reason() {
    let mut mem = Mem::default();
    let escape = tar(&[
        Entry::Link("etc", "/"),
        Entry::Link("a/b", "../../../outside"),
    ]);
    let d = image(&mut mem, &[escape], ("linux", "amd64"));
    let err = scan(&mem, &d, Limits::default(), &mut |_| None, &mut |_| {}).unwrap_err();
    assert!(err.0.starts_with("layer 1 (sha256:"), "{err}");
    assert!(err.0.contains("../../../outside"), "{err}");

    let zeros = vec![0u8; 4 << 20];
    let bomb = gzip(&tar(&[Entry::File("big", &zeros)]));
    let d = image(&mut mem, &[bomb], ("linux", "amd64"));
    let limits = Limits {
        max_expanded: 1 << 20,
        ..Limits::default()
    };
    let err = scan(&mem, &d, limits, &mut |_| None, &mut |_| {}).unwrap_err();
    assert!(err.0.contains("expand beyond"), "{err}");

    let mut truncated = gzip(&tar(&[Entry::File("etc/os-release", OS_RELEASE)]));
    truncated.truncate(truncated.len() / 2);
    let d = image(&mut mem, &[truncated], ("linux", "amd64"));
    let err = scan(&mem, &d, Limits::default(), &mut |_| None, &mut |_| {}).unwrap_err();
    assert!(err.0.starts_with("layer 1"), "{err}");
}

#[test]
fn new_findings_since_the_previous_report() {
    let mut mem = Mem::default();
    let digest = debian_image(&mut mem);
    let report = scan_all(&mem, &digest);
    assert_eq!(report.new_since(None).len(), 3);
    assert!(report.new_since(Some(&report)).is_empty());
    let mut fewer = report.clone();
    fewer.images[0].findings.remove(0);
    let new: Vec<&str> = report
        .new_since(Some(&fewer))
        .iter()
        .map(|f| f.id.as_str())
        .collect();
    assert_eq!(new, vec!["DSA-5678-1"]);
}
