//! One scan: a manifest's bytes in, a [`Report`] out. An image's layers are read in order
//! into one view ([`super::layer`]) whose files the detectors keep what they need of
//! ([`super::detect`]); its packages are then matched against the records a lookup gives
//! ([`super::osv`]). An index is its platforms' images, each scanned on its own.
//!
//! Blobs come through [`Blobs`], so that this module knows no store: the scan job opens
//! them from the local tier (filling it from S3 first on a fleet), tests from memory.

use super::detect::{self, Detected, Detector, Kept, Os};
use super::layer::{Limits, View};
use super::osv::finding::{Finding, Index};
use super::osv::matching::{ecosystem_base, normalize_name};
use super::osv::record::Record;
use super::osv::severity::Severity;
use super::store::Counts;
use super::Package;
use crate::oci::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Read;

/// Manifests and image configs are read whole; larger ones are not what an image has.
const MAX_JSON: u64 = 4 * 1024 * 1024;

/// Where a scan reads blobs from.
pub trait Blobs {
    /// The blob's bytes, seekable: a plain tar layer's unread bodies are passed over.
    fn open(&self, digest: &Digest) -> Result<Box<dyn Blob + '_>, String>;
}

/// A stored blob as the scanner reads it.
pub trait Blob: Read + std::io::Seek {}

impl<T: Read + std::io::Seek> Blob for T {}

/// What a scan found in one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageReport {
    /// The image manifest's digest.
    pub digest: String,
    /// `linux/amd64`, `linux/arm64/v8`: from the index entry, else the image's config.
    pub platform: Option<String>,
    pub os: Option<Os>,
    pub packages: Vec<Package>,
    pub notes: Vec<String>,
    pub findings: Vec<Finding>,
}

/// What a scan found in a manifest: one image, or an index's images (one per platform).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Report {
    pub images: Vec<ImageReport>,
    /// Why there is nothing to scan (an artifact that is not an image), and the like.
    pub notes: Vec<String>,
}

impl Report {
    /// Each distinct finding (by id, package and installed version) once, worst first.
    pub fn distinct_findings(&self) -> Vec<&Finding> {
        let mut seen = BTreeSet::new();
        let mut out: Vec<&Finding> = self
            .images
            .iter()
            .flat_map(|i| &i.findings)
            .filter(|f| seen.insert((&f.id, &f.package, &f.installed)))
            .collect();
        out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(&b.id)));
        out
    }

    /// Findings by severity: critical, high, medium, low, unknown.
    pub fn counts(&self) -> Counts {
        let mut c = [0i64; 5];
        for f in self.distinct_findings() {
            let i = match f.severity {
                Severity::Critical => 0,
                Severity::High => 1,
                Severity::Medium => 2,
                Severity::Low => 3,
                Severity::Unknown => 4,
            };
            c[i] += 1;
        }
        c
    }

    /// The `(ecosystem, name)` keys of every package, as records are stored under.
    pub fn keys(&self) -> Vec<(String, String)> {
        package_keys(self.images.iter().flat_map(|i| &i.packages))
    }

    /// Matches every image's packages again (a rescan after an import: no layer read).
    pub fn evaluate(&mut self, records: &[Record]) {
        let index = Index::new(records);
        for image in &mut self.images {
            image.findings = index.findings(&image.packages);
        }
    }

    /// The findings of this report that `previous` did not have (by id and package).
    pub fn new_since(&self, previous: Option<&Report>) -> Vec<&Finding> {
        let before: BTreeSet<(&str, &str)> = previous
            .map(|p| {
                p.images
                    .iter()
                    .flat_map(|i| &i.findings)
                    .map(|f| (f.id.as_str(), f.package.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        self.distinct_findings()
            .into_iter()
            .filter(|f| !before.contains(&(f.id.as_str(), f.package.as_str())))
            .collect()
    }
}

/// The keys records are looked up by, for these packages. Pure.
pub fn package_keys<'a>(packages: impl Iterator<Item = &'a Package>) -> Vec<(String, String)> {
    let keys: BTreeSet<(String, String)> = packages
        .map(|p| {
            (
                ecosystem_base(&p.ecosystem).to_string(),
                normalize_name(&p.ecosystem, &p.name).into_owned(),
            )
        })
        .collect();
    keys.into_iter().collect()
}

/// Why a scan failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError(pub String);

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn read_json(
    blobs: &dyn Blobs,
    digest: &Digest,
    what: &str,
) -> Result<serde_json::Value, ScanError> {
    let mut bytes = Vec::new();
    blobs
        .open(digest)
        .map_err(|e| ScanError(format!("reading the {what} {digest}: {e}")))?
        .take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ScanError(format!("reading the {what} {digest}: {e}")))?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(ScanError(format!(
            "the {what} {digest} is over {MAX_JSON} bytes"
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ScanError(format!("the {what} {digest} is not JSON: {e}")))
}

fn digest_of(v: &serde_json::Value) -> Option<Digest> {
    Digest::parse(v.get("digest")?.as_str()?).ok()
}

/// `os/architecture[/variant]` of a platform object.
fn platform_text(p: &serde_json::Value) -> Option<String> {
    let os = p.get("os")?.as_str()?;
    let arch = p.get("architecture")?.as_str()?;
    Some(match p.get("variant").and_then(|v| v.as_str()) {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    })
}

/// Layer media types a scan reads as tar streams (compressed or not, as their bytes say).
fn is_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// Config media types of container images (anything else is an artifact).
fn is_image_config(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.config.v1+json"
        || media_type == "application/vnd.docker.container.image.v1+json"
}

/// What the manifest `digest` is, as the scan sees it.
pub enum Shape {
    /// An image: its config and layers, in order.
    Image { config: Digest, layers: Vec<Digest> },
    /// An index: its image manifests with their platforms (attestations and other
    /// artifacts it lists are left out).
    Index(Vec<(Digest, Option<String>)>),
    /// Not a container image (a signature, an SBOM, a Helm chart): why.
    Artifact(String),
}

/// Reads what the manifest is. Pure over its JSON.
pub fn shape(manifest: &serde_json::Value) -> Shape {
    if let Some(list) = manifest.get("manifests").and_then(|m| m.as_array()) {
        let images = list
            .iter()
            .filter(|d| {
                // BuildKit's attestation manifests ride in indexes as platform unknown/unknown.
                let attestation = d
                    .get("annotations")
                    .and_then(|a| a.get("vnd.docker.reference.type"))
                    .is_some();
                let unknown =
                    d.get("platform").and_then(platform_text).as_deref() == Some("unknown/unknown");
                !attestation && !unknown
            })
            .filter_map(|d| Some((digest_of(d)?, d.get("platform").and_then(platform_text))))
            .collect();
        return Shape::Index(images);
    }
    let config = manifest.get("config");
    let config_type = config
        .and_then(|c| c.get("mediaType"))
        .and_then(|m| m.as_str())
        .unwrap_or("");
    let Some(config) = config.and_then(digest_of) else {
        return Shape::Artifact("no config: not a container image".into());
    };
    if !is_image_config(config_type) {
        return Shape::Artifact(format!(
            "config of type {config_type}: an artifact, not a container image"
        ));
    }
    let mut layers = Vec::new();
    for l in manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
    {
        let media = l.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
        if !is_layer(media) {
            return Shape::Artifact(format!(
                "a layer of type {media}: an artifact, not a container image"
            ));
        }
        match digest_of(l) {
            Some(d) => layers.push(d),
            None => return Shape::Artifact("a layer without a digest".into()),
        }
    }
    Shape::Image { config, layers }
}

/// Scans one image manifest: its layers into a view, the packages found there.
pub fn scan_image(
    blobs: &dyn Blobs,
    digest: &Digest,
    platform: Option<String>,
    limits: Limits,
) -> Result<ImageReport, ScanError> {
    let manifest = read_json(blobs, digest, "manifest")?;
    let (config, layers) = match shape(&manifest) {
        Shape::Image { config, layers } => (config, layers),
        Shape::Index(_) => return Err(ScanError(format!("{digest} is an index, not an image"))),
        Shape::Artifact(why) => {
            return Ok(ImageReport {
                digest: digest.to_string(),
                platform,
                os: None,
                packages: Vec::new(),
                notes: vec![why],
                findings: Vec::new(),
            })
        }
    };
    let platform = match platform {
        Some(p) => Some(p),
        None => platform_text(&read_json(blobs, &config, "image config")?),
    };
    let mut view: View<Kept> = View::new(limits);
    let mut detector = Detector::new();
    for (i, layer) in layers.iter().enumerate() {
        let stream = blobs
            .open(layer)
            .map_err(|e| ScanError(format!("reading layer {} ({layer}): {e}", i + 1)))?;
        view.apply(stream, &mut detector)
            .map_err(|e| ScanError(format!("layer {} ({layer}): {e}", i + 1)))?;
    }
    let Detected {
        os,
        packages,
        notes,
    } = detect::packages(|p| view.kept(p), view.files());
    Ok(ImageReport {
        digest: digest.to_string(),
        platform,
        os,
        packages,
        notes,
        findings: Vec::new(),
    })
}

/// Scans a manifest (image or index) into a report without findings; `known` answers an
/// index's image from an earlier scan when it has one (the children of an index are pushed,
/// and scanned, before it).
pub fn scan(
    blobs: &dyn Blobs,
    digest: &Digest,
    limits: Limits,
    known: &mut dyn FnMut(&Digest) -> Option<ImageReport>,
    scanned: &mut dyn FnMut(&ImageReport),
) -> Result<Report, ScanError> {
    let manifest = read_json(blobs, digest, "manifest")?;
    match shape(&manifest) {
        Shape::Index(children) => {
            let mut report = Report::default();
            if children.is_empty() {
                report.notes.push("an index without images".into());
            }
            for (child, platform) in children {
                let image = match known(&child) {
                    Some(mut image) => {
                        image.platform = platform.or(image.platform);
                        image
                    }
                    None => {
                        let image = scan_image(blobs, &child, platform, limits)?;
                        scanned(&image);
                        image
                    }
                };
                report.images.push(image);
            }
            Ok(report)
        }
        Shape::Artifact(why) => Ok(Report {
            images: Vec::new(),
            notes: vec![why],
        }),
        Shape::Image { .. } => Ok(Report {
            images: vec![scan_image(blobs, digest, None, limits)?],
            notes: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests;
