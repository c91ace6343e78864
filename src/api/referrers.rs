//! `GET /v2/<name>/referrers/<digest>`: an OCI image index of the manifests whose `subject`
//! is the digest, optionally filtered by `artifactType`. Never 404: no referrers (or an
//! unknown subject) is an empty index, as the spec requires.

use super::Registry;
use crate::api::error::Result;
use crate::http::query::query_get;
use crate::http::request::Request;
use crate::http::response::Response;
use crate::meta::ManifestRecord;
use crate::oci::digest::Digest;
use crate::oci::media::OCI_INDEX;
use serde_json::{json, Map, Value};

pub async fn list(reg: &Registry, req: &Request, name: &str, digest: &str) -> Result<Response> {
    let subject = Digest::parse(digest)?;
    let filter = query_get(req.query(), "artifactType").filter(|f| !f.is_empty());
    let records = reg.meta.referrers(name, &subject).await?;
    let manifests: Vec<Value> = records
        .iter()
        .filter(|r| match &filter {
            Some(f) => r.artifact_type.as_deref() == Some(f.as_str()),
            None => true,
        })
        .map(|r| descriptor(r))
        .collect();
    let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = Response::new(200).with_body(OCI_INDEX, body);
    if filter.is_some() {
        resp = resp.header("OCI-Filters-Applied", "artifactType");
    }
    Ok(resp)
}

fn descriptor(r: &ManifestRecord) -> Value {
    let mut d = Map::new();
    d.insert("mediaType".into(), json!(r.media_type));
    d.insert("digest".into(), json!(r.digest.as_str()));
    d.insert("size".into(), json!(r.size));
    if let Some(t) = &r.artifact_type {
        d.insert("artifactType".into(), json!(t));
    }
    if let Some(a) = &r.annotations {
        if !a.is_empty() {
            d.insert("annotations".into(), Value::Object(a.clone()));
        }
    }
    Value::Object(d)
}
