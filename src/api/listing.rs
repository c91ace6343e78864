//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`: lexical order, `n`/`last` pagination
//! and a `Link` header while more remain, all from the in-memory index.

use super::pagination::{next_link, parse_page_query};
use super::Registry;
use crate::api::error::{Error, ErrorCode, Result};
use crate::http::request::Request;
use crate::http::response::Response;

pub async fn tags(reg: &Registry, req: &Request, name: &str) -> Result<Response> {
    let q = parse_page_query(req.query())?;
    let limit = q.limit(reg.limits.max_page);
    let (tags, more) = reg
        .meta
        .tags_after(name, q.last.as_deref(), limit)
        .await?
        .ok_or_else(|| Error::new(ErrorCode::NameUnknown).with_detail(name))?;
    let body = serde_json::json!({ "name": name, "tags": tags });
    Ok(with_link(
        Response::json(200, &body),
        more,
        &format!("/v2/{name}/tags/list"),
        limit,
        tags.last(),
    ))
}

/// `GET /v2/_quota/<name>`: what the repository holds and its quota (`quotas`), as
/// `{"repository", "used_bytes", "limit_bytes", "quota"}` (the last two null without one).
pub async fn quota(reg: &Registry, name: &str) -> Result<Response> {
    if !reg.meta.repo_exists(name).await? {
        return Err(Error::new(ErrorCode::NameUnknown).with_detail(name));
    }
    let used = reg.meta.repo_usage(name).await?;
    let quota = reg.quotas.limit(name);
    if let Some(q) = quota {
        // Recorded for /metrics; the verdict does not matter here.
        let _ = reg.quotas.judge(name, q, used, 0);
    }
    let body = serde_json::json!({
        "repository": name,
        "used_bytes": used,
        "limit_bytes": quota.map(|q| q.bytes),
        "quota": quota.map(|q| q.to_string()),
    });
    Ok(Response::json(200, &body))
}

/// The catalog, of the repositories `visible` lets through when given (those the caller may
/// pull, with access rules): pages are filled with visible ones only, so `n` and `Link` mean
/// the same as without rules and a name the caller may not pull never shows, not even as a
/// `last` in a link.
pub async fn catalog(
    reg: &Registry,
    req: &Request,
    visible: Option<&dyn Fn(&str) -> bool>,
) -> Result<Response> {
    let q = parse_page_query(req.query())?;
    let limit = q.limit(reg.limits.max_page);
    let (repos, more) = match visible {
        None => {
            reg.meta
                .repositories_after(q.last.as_deref(), limit)
                .await?
        }
        Some(visible) => visible_page(reg, q.last, limit, visible).await?,
    };
    let body = serde_json::json!({ "repositories": repos });
    Ok(with_link(
        Response::json(200, &body),
        more,
        "/v2/_catalog",
        limit,
        repos.last(),
    ))
}

/// Up to `limit` visible repositories after `last`, and whether another visible one follows.
async fn visible_page(
    reg: &Registry,
    mut last: Option<String>,
    limit: usize,
    visible: &dyn Fn(&str) -> bool,
) -> Result<(Vec<String>, bool)> {
    let mut out = Vec::new();
    let batch = limit.clamp(100, 10_000);
    loop {
        let (repos, more) = reg.meta.repositories_after(last.as_deref(), batch).await?;
        last = repos.last().cloned();
        for r in repos {
            if visible(&r) {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(r);
            }
        }
        if !more {
            return Ok((out, false));
        }
    }
}

fn with_link(resp: Response, more: bool, path: &str, n: usize, last: Option<&String>) -> Response {
    match (more, last) {
        (true, Some(last)) => resp.header("Link", next_link(path, n, last)),
        _ => resp,
    }
}
