//! The scan API (ours, beside the OCI routes): a manifest's scan, a request for one, and a
//! repository's summary, all answered from stored results (the scan job does the work).
//! Reads need pull, a request push, as the routes they sit beside.

use super::error::{Error, ErrorCode, Result};
use super::Registry;
use crate::http::response::Response;
use crate::oci::digest::Digest;
use crate::oci::name::Reference;
use crate::scan::scanner::Report;
use crate::scan::service::{detail, Scanning, State};
use crate::scan::store::Requested;
use std::sync::Arc;

fn scanning(reg: &Registry) -> Result<&Arc<Scanning>> {
    reg.scanning.as_ref().ok_or_else(|| {
        Error::new(ErrorCode::Unsupported)
            .with_status(404)
            .with_message("scanning is off: this read-only registry has no scan database")
    })
}

/// The digest `reference` names in `name`, as a manifest GET finds it.
async fn resolve(reg: &Registry, name: &str, reference: &str) -> Result<Digest> {
    let reference = Reference::parse(reference)?;
    let found = match &reference {
        Reference::Tag(t) => reg.meta.tag(name, t).await?.map(|t| t.digest),
        Reference::Digest(d) => reg.meta.manifest(name, d).await?.map(|m| m.digest.clone()),
    };
    match found {
        Some(d) => Ok(d),
        None if reg.meta.repo_exists(name).await? => {
            Err(Error::new(ErrorCode::ManifestUnknown).with_detail(reference.to_string()))
        }
        None => Err(Error::new(ErrorCode::NameUnknown).with_detail(name)),
    }
}

async fn read(reg: &Registry, s: &Scanning, digest: &Digest) -> Result<State> {
    let store = s.store.clone();
    let d = digest.clone();
    reg.pool
        .run(move || Scanning::read_state(&store, &d))
        .await
        .map_err(|e| Error::internal("reading a scan", e))?
        .map_err(|e| Error::internal("reading a scan", e))
}

fn rfc3339(ms: Option<i64>) -> serde_json::Value {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or(serde_json::Value::Null, |t| t.to_string().into())
}

fn counts(c: [i64; 5]) -> serde_json::Value {
    serde_json::json!({"critical": c[0], "high": c[1], "medium": c[2], "low": c[3], "unknown": c[4]})
}

/// The answer for one manifest: the shape (status, scanned_at, vulnerabilities,
/// details), plus each platform of an index and what the scan could not read.
pub fn document(name: &str, digest: &Digest, st: &State) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "repository": name,
        "digest": digest.as_str(),
        "status": st.row.as_ref().map_or("not_scanned", |r| r.status.as_str()),
        "scanned_at": rfc3339(st.row.as_ref().and_then(|r| r.finished.filter(|_| st.report.is_some()))),
        "requested_at": rfc3339(st.row.as_ref().map(|r| r.requested)),
        "vulnerabilities": counts(st.row.as_ref().filter(|_| st.report.is_some()).map_or([0; 5], |r| r.counts)),
        "details": [],
    });
    if let Some(row) = &st.row {
        if let Some(e) = &row.error {
            doc["error"] = e.as_str().into();
        }
        doc["data_version"] = row.data_version.into();
    }
    if let Some(report) = &st.report {
        doc["details"] = details(report).into();
        doc["platforms"] = report
            .images
            .iter()
            .map(|i| {
                let one = Report {
                    images: vec![i.clone()],
                    notes: Vec::new(),
                };
                serde_json::json!({
                    "digest": i.digest,
                    "platform": i.platform,
                    "os": i.os.as_ref().map(|o| o.pretty_name.clone().unwrap_or_else(|| o.id.clone())),
                    "packages": i.packages.len(),
                    "vulnerabilities": counts(one.counts()),
                    "notes": i.notes,
                })
            })
            .collect::<Vec<_>>()
            .into();
        if !report.notes.is_empty() {
            doc["notes"] = report.notes.clone().into();
        }
    }
    doc
}

/// Each finding once per platform it is in (one platform: no platform field).
fn details(report: &Report) -> Vec<serde_json::Value> {
    let many = report.images.len() > 1;
    let mut out: Vec<serde_json::Value> = Vec::new();
    for image in &report.images {
        for f in &image.findings {
            out.push(detail(f, image.platform.as_deref().filter(|_| many)));
        }
    }
    out
}

/// `GET /v2/<name>/manifests/<reference>/scan`.
pub async fn get(reg: &Registry, name: &str, reference: &str) -> Result<Response> {
    let s = scanning(reg)?;
    let digest = resolve(reg, name, reference).await?;
    let st = read(reg, s, &digest).await?;
    Ok(Response::json(200, &document(name, &digest, &st)))
}

/// `POST /v2/<name>/manifests/<reference>/scan`: 202 with the scan's id (the manifest's
/// digest: scans are by content), scanned again even if up to date.
pub async fn request(reg: &Registry, name: &str, reference: &str) -> Result<Response> {
    let s = scanning(reg)?;
    let digest = resolve(reg, name, reference).await?;
    let store = s.store.clone();
    let (d, repo) = (digest.to_string(), name.to_string());
    let outcome = reg
        .pool
        .run(move || store.request(&d, &repo, true, crate::meta::now_millis()))
        .await
        .map_err(|e| Error::internal("requesting a scan", e))?
        .map_err(|e| Error::internal("requesting a scan", e))?;
    let status = match outcome {
        Requested::InProgress => "in_progress",
        Requested::Queued | Requested::UpToDate => "pending",
    };
    let body = serde_json::json!({"scan_id": digest.as_str(), "status": status});
    Ok(Response::json(202, &body).header(
        "Location",
        format!("/v2/{name}/manifests/{}/scan", digest.as_str()),
    ))
}

/// `GET /v2/<name>/scan/summary`: the most recently pushed tag's scan, and how many of the
/// repository's tagged images are scanned.
pub async fn summary(reg: &Registry, name: &str) -> Result<Response> {
    let s = scanning(reg)?;
    let Some((tags, _)) = reg.meta.tags_after(name, None, 10_000).await? else {
        return Err(Error::new(ErrorCode::NameUnknown).with_detail(name));
    };
    let mut latest: Option<(String, crate::meta::TagInfo)> = None;
    let mut digests: Vec<Digest> = Vec::new();
    for t in tags {
        let Some(info) = reg.meta.tag(name, &t).await? else {
            continue;
        };
        if !digests.contains(&info.digest) {
            digests.push(info.digest.clone());
        }
        if latest
            .as_ref()
            .is_none_or(|(_, l)| info.updated > l.updated)
        {
            latest = Some((t, info));
        }
    }
    let mut scanned = 0;
    let mut last_scanned: Option<i64> = None;
    for d in &digests {
        let st = s
            .state(&reg.pool, d)
            .await
            .map_err(|e| Error::internal("reading a scan", e))?;
        if st.report.is_some() {
            scanned += 1;
            last_scanned = last_scanned.max(st.row.as_ref().and_then(|r| r.finished));
        }
    }
    let mut body = serde_json::json!({
        "repository": name,
        "latest_tag": null,
        "digest": null,
        "status": null,
        "last_scanned": rfc3339(last_scanned),
        "tagged_images": digests.len(),
        "scanned_images": scanned,
        "total_vulnerabilities": 0,
        "critical_count": 0, "high_count": 0, "medium_count": 0, "low_count": 0,
        "unknown_count": 0,
    });
    if let Some((tag, info)) = latest {
        let st = read(reg, s, &info.digest).await?;
        let c = st
            .row
            .as_ref()
            .filter(|_| st.report.is_some())
            .map_or([0; 5], |r| r.counts);
        body["latest_tag"] = tag.into();
        body["digest"] = info.digest.as_str().into();
        body["status"] = st.status().replace(' ', "_").into();
        body["total_vulnerabilities"] = c.iter().sum::<i64>().into();
        for (i, key) in [
            "critical_count",
            "high_count",
            "medium_count",
            "low_count",
            "unknown_count",
        ]
        .iter()
        .enumerate()
        {
            body[*key] = c[i].into();
        }
    }
    Ok(Response::json(200, &body))
}
