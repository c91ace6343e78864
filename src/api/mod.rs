//! The OCI Distribution API: routes to handlers. Handlers return `Result<Response, Error>`;
//! the one conversion of an [`Error`] into a response is here. The operations endpoints
//! (`/healthz`, `/readyz`, `/metrics`) are routed here too, before the OCI routes; on the
//! separate operations listener ([`Site::Ops`]) they are the only ones.
//!
//! With authentication configured ([`Registry::auth`]), every request but the probes is first
//! identified from its `Authorization` header, then [`authorize`]d: no credentials where the
//! rules want some is a 401 with a challenge, wrong credentials a 401 (never a fallback to
//! anonymous), a user without the action a 403 `DENIED`. Without it none of that runs.
//!
//! With tokens configured (`auth.token.*`), every challenge is `Bearer realm,service,scope`
//! naming what the request needs, a Bearer token is verified (cached per event loop) and its
//! `access` claim decides instead of the rules, and the token service's own endpoints
//! (`/token`, `/token/jwks`: [`token`]) are routed here before the OCI routes. Basic
//! credentials are still accepted directly.

pub(crate) mod access;
pub(crate) mod blobs;
pub(crate) mod error;
mod file_body;
pub(crate) mod listing;
pub(crate) mod manifests;
pub(crate) mod pagination;
pub(crate) mod referrers;
pub mod router;
pub(crate) mod scans;
pub(crate) mod token;
pub(crate) mod uploads;

use crate::auth::token::challenge::ChallengeError;
use crate::auth::token::scope::{self as token_scope, format_scopes, needed_scopes, Need};
use crate::auth::{Auth, Identity, MetricsAccess, Refused};
use crate::blocking::Pool;
use crate::http::body::{Body, BodyError};
use crate::http::request::{Method, Request};
use crate::http::response::Response;
use crate::http::transport::Transport;
use crate::meta::Meta;
use crate::observe::{health, metrics, Ops, RouteClass};
use crate::oci::name::validate_name;
use crate::store::blobs::BlobStore;
use crate::store::upload_writer::UploadWriter;
use crate::store::uploads::Uploads;
use error::{Error, ErrorCode, Result};
use router::Route;
use std::time::Duration;

/// What the API may do, from configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_manifest_bytes: usize,
    pub delete_enabled: bool,
    /// Every write is refused (405 UNSUPPORTED); reads continue.
    pub read_only: bool,
    /// Largest page of tags or repositories one request returns.
    pub max_page: usize,
    /// Socket progress timeout while streaming a body.
    pub body_timeout: Duration,
    /// Blob GETs answered 307 to a presigned URL of the remote backend (`storage.redirect`).
    pub redirect: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 * 1024 * 1024,
            delete_enabled: true,
            read_only: false,
            max_page: 10_000,
            body_timeout: Duration::from_secs(60),
            redirect: false,
        }
    }
}

/// Everything a request handler can reach; shared by all workers.
pub struct Registry {
    pub meta: Meta,
    pub blobs: BlobStore,
    pub uploads: Uploads,
    pub pool: Pool,
    /// Hashes large upload buffers off the event loops (see `store::upload_writer`), one
    /// thread per core; apart from `pool` so that hashing never queues ahead of an fsync.
    pub hashing: Pool,
    pub limits: Limits,
    pub ops: Ops,
    /// The background jobs' counters, for `/metrics`.
    pub jobs: crate::jobs::Board,
    /// Users and access rules; None: no authentication, every request is let in.
    pub auth: Option<Auth>,
    /// The tags that may not move (`tags.immutable`).
    pub immutable: crate::lifecycle::ImmutableTags,
    /// What garbage collection removed, for `/metrics`.
    pub gc: crate::lifecycle::gc::Totals,
    /// Which tags garbage collection expires.
    pub retention: crate::lifecycle::retention::Retention,
    /// How much each repository may hold.
    pub quotas: crate::lifecycle::quota::Quotas,
    /// Vulnerability scanning: results, the pull policy, webhooks. None in read-only mode
    /// without a scan database.
    pub scanning: Option<std::sync::Arc<crate::scan::service::Scanning>>,
}

impl Registry {
    /// The upload pipeline over this registry's stores and pools.
    /// Refuses a push into `repo` that would take it past its quota by `adding` bytes (none
    /// without a quota, so no usage is read then).
    pub async fn within_quota(&self, repo: &str, adding: u64) -> Result<()> {
        let Some(quota) = self.quotas.limit(repo) else {
            return Ok(());
        };
        let used = self.meta.repo_usage(repo).await?;
        self.quotas
            .judge(repo, quota, used, adding)
            .map_err(error::quota_exceeded)
    }

    /// [`within_quota`](Self::within_quota) for the blob (or manifest) `digest` of `size`
    /// bytes arriving in `repo`: nothing when the repository holds it already (it adds
    /// nothing).
    pub async fn within_quota_for(
        &self,
        repo: &str,
        digest: &crate::oci::digest::Digest,
        size: u64,
    ) -> Result<()> {
        if self.quotas.limit(repo).is_none()
            || self.meta.blob_in_repo(repo, digest).await?.is_some()
        {
            return Ok(());
        }
        self.within_quota(repo, size).await
    }

    /// The policies a garbage collection pass applies.
    pub fn gc_rules(&self) -> crate::lifecycle::gc::Rules<'_> {
        crate::lifecycle::gc::Rules {
            retention: &self.retention,
            immutable: &self.immutable,
        }
    }

    pub fn upload_writer(&self) -> UploadWriter<'_> {
        UploadWriter {
            uploads: &self.uploads,
            blobs: &self.blobs,
            meta: &self.meta,
            pool: &self.pool,
            hashing: &self.hashing,
        }
    }
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The registry's: the OCI API and the operations endpoints.
    Registry,
    /// `metrics_listen`: only the operations endpoints.
    Ops,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpsEndpoint {
    Healthz,
    Readyz,
    Metrics,
}

fn ops_endpoint(path: &str) -> Option<OpsEndpoint> {
    match path {
        "/healthz" => Some(OpsEndpoint::Healthz),
        "/readyz" => Some(OpsEndpoint::Readyz),
        "/metrics" => Some(OpsEndpoint::Metrics),
        _ => None,
    }
}

/// What a request asks for, worked out once from its path: what answers it, and its route
/// class and repository (only if the name is valid) for the metrics and the access log.
pub struct Target<'a> {
    answer: Answer<'a>,
    pub class: RouteClass,
    pub repository: Option<&'a str>,
}

enum Answer<'a> {
    Ops(OpsEndpoint),
    Api(Route<'a>),
    /// `/token` and `/token/jwks` (404 unless the token service is on).
    Token,
    Jwks,
    /// A path other than the operations endpoints on the operations listener.
    Nothing,
}

pub fn target(site: Site, path: &str) -> Target<'_> {
    let (answer, class) = match (ops_endpoint(path), site) {
        (Some(OpsEndpoint::Metrics), _) => (Answer::Ops(OpsEndpoint::Metrics), RouteClass::Metrics),
        (Some(endpoint), _) => (Answer::Ops(endpoint), RouteClass::Probe),
        (None, Site::Ops) => (Answer::Nothing, RouteClass::Other),
        (None, Site::Registry) if path == "/token" => (Answer::Token, RouteClass::Other),
        (None, Site::Registry) if path == "/token/jwks" => (Answer::Jwks, RouteClass::Other),
        (None, Site::Registry) => {
            let route = router::route(path);
            let class = match route {
                Route::Base => RouteClass::Base,
                Route::Catalog => RouteClass::Catalog,
                Route::Tags { .. } => RouteClass::Tags,
                Route::Manifest { .. } => RouteClass::Manifest,
                Route::Blob { .. } => RouteClass::Blob,
                Route::UploadStart { .. } | Route::Upload { .. } => RouteClass::Upload,
                Route::Referrers { .. } => RouteClass::Referrers,
                Route::Quota { .. }
                | Route::Scan { .. }
                | Route::ScanSummary { .. }
                | Route::NotFound => RouteClass::Other,
            };
            (Answer::Api(route), class)
        }
    };
    let repository = match &answer {
        Answer::Api(route) => route_name(route).filter(|n| validate_name(n).is_ok()),
        _ => None,
    };
    Target {
        answer,
        class,
        repository,
    }
}

pub const API_VERSION_HEADER: (&str, &str) = ("Docker-Distribution-API-Version", "registry/2.0");

/// Answers one request, with who it was from (for the access log). Never fails: every error
/// becomes the spec's JSON error response, and an internal one's cause is logged here, once,
/// with the request id.
pub async fn handle<T: Transport>(
    reg: &Registry,
    target: Target<'_>,
    req: &Request,
    body: &mut Body<'_, T>,
    request_id: &str,
) -> (Response, Identity) {
    let mut caller = Identity::Anonymous;
    let result = match target.answer {
        Answer::Ops(endpoint) => ops(reg, req, endpoint, &mut caller, request_id).await,
        Answer::Api(route) => {
            dispatch(
                reg,
                route,
                target.repository,
                req,
                body,
                &mut caller,
                request_id,
            )
            .await
        }
        Answer::Token => token::token(reg, req, body, &mut caller, request_id).await,
        Answer::Jwks => token::jwks(reg, req),
        Answer::Nothing => Err(no_such_endpoint(req)),
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            if e.is_storage_full() {
                reg.ops.readiness.storage_full(&e.message);
            }
            if let Some(cause) = &e.cause {
                let level = if e.code == ErrorCode::Unknown {
                    crate::log::error
                } else {
                    crate::log::warn
                };
                level(format_args!("request {request_id}: {cause}"));
            }
            e.response()
        }
    };
    let resp = resp.header(API_VERSION_HEADER.0, API_VERSION_HEADER.1);
    let resp = if req.method == Method::Head {
        resp.into_head()
    } else {
        resp
    };
    (resp, caller)
}

/// Who sent `req`, into `caller`; Anonymous without authentication configured. Credentials
/// that are refused are a 401, after `auth.fail_delay` when they were wrong; `needed` is what
/// the request needs, named in a Bearer challenge (worked out only for a refusal, so that the
/// accepted path stays free of it).
async fn identify(
    reg: &Registry,
    req: &Request,
    caller: &mut Identity,
    request_id: &str,
    needed: Option<&access::Needed<'_>>,
) -> Result<()> {
    let Some(auth) = &reg.auth else {
        return Ok(());
    };
    let refused = match auth.identify(req.header("authorization")).await {
        Ok(identity) => {
            *caller = identity;
            return Ok(());
        }
        Err(r) => r,
    };
    let scope = needed.and_then(|n| challenge_scope(auth, n));
    let scope = scope.as_deref();
    Err(match refused {
        Refused::WrongCredentials { user } => wrong_credentials(auth, &user, request_id).await,
        Refused::Malformed(why) => Error::unauthorized(
            auth.challenge(scope, None),
            "unreadable Authorization header",
        )
        .with_detail(why),
        Refused::Bearer => Error::unauthorized(
            auth.challenge(scope, None),
            "this registry does not accept Bearer tokens; send Basic credentials (docker login)",
        ),
        Refused::InvalidToken(why) => {
            crate::log::warn(format_args!("request {request_id}: {why}"));
            Error::unauthorized(
                auth.challenge(scope, Some(ChallengeError::InvalidToken)),
                "invalid or expired token",
            )
        }
        Refused::Unavailable => unavailable(),
    })
}

/// The 401 for a wrong user or password, after `auth.fail_delay`.
async fn wrong_credentials(auth: &Auth, user: &str, request_id: &str) -> Error {
    crate::log::warn(format_args!(
        "request {request_id}: wrong password or unknown user {user:?}"
    ));
    if !auth.fail_delay.is_zero() {
        monoio::time::sleep(auth.fail_delay).await;
    }
    Error::unauthorized(auth.challenge(None, None), "invalid username or password")
}

fn unavailable() -> Error {
    Error::new(ErrorCode::Unavailable)
        .with_message("the registry is stopping; credentials cannot be checked")
}

/// The `scope` of a challenge for `needed` (None when it needs nothing, or without tokens:
/// a Basic challenge has no scope).
fn challenge_scope(auth: &Auth, needed: &access::Needed<'_>) -> Option<String> {
    auth.token.as_ref()?;
    let scopes = needed_scopes(&access::token_needs(needed, true));
    (!scopes.is_empty()).then(|| format_scopes(&scopes))
}

/// `repository` is the route's name when [`target`] found it valid; a name it left out is
/// checked again here only to answer with its error.
async fn dispatch<T: Transport>(
    reg: &Registry,
    route: Route<'_>,
    repository: Option<&str>,
    req: &Request,
    body: &mut Body<'_, T>,
    caller: &mut Identity,
    request_id: &str,
) -> Result<Response> {
    use Method::*;
    let needed = access::needed(&route, req.method, req.query());
    identify(reg, req, caller, request_id, Some(&needed)).await?;
    if let (Some(name), None) = (route_name(&route), repository) {
        validate_name(name)?;
    }
    let may_mount = authorize(reg, &needed, req.method, caller)?;
    match (route, req.method) {
        (Route::Base, Get | Head) => Ok(Response::json(200, &serde_json::json!({}))),
        (Route::Catalog, Get | Head) => match reg.auth.as_ref() {
            None => listing::catalog(reg, req, None).await,
            Some(auth) => {
                let who = caller.who();
                let may_pull =
                    |name: &str| auth.rules.allowed(who, name).contains(access::Action::Pull);
                listing::catalog(reg, req, Some(&may_pull)).await
            }
        },
        (Route::Tags { name }, Get | Head) => listing::tags(reg, req, name).await,
        (Route::Quota { name }, Get | Head) => listing::quota(reg, name).await,
        (Route::Scan { name, reference }, Get | Head) => scans::get(reg, name, reference).await,
        (Route::Scan { name, reference }, Post) => scans::request(reg, name, reference).await,
        (Route::ScanSummary { name }, Get | Head) => scans::summary(reg, name).await,
        (Route::Manifest { name, reference }, Get | Head) => {
            manifests::get(reg, req, name, reference).await
        }
        (Route::Manifest { name, reference }, Put) => {
            manifests::put(reg, req, body, name, reference).await
        }
        (Route::Manifest { name, reference }, Delete) => {
            manifests::delete(reg, name, reference).await
        }
        (Route::Blob { name, digest }, Get | Head) => blobs::get(reg, req, name, digest).await,
        (Route::Blob { name, digest }, Delete) => blobs::delete(reg, name, digest).await,
        (Route::UploadStart { name }, Post) => {
            uploads::start(reg, req, body, name, caller, may_mount).await
        }
        (Route::Upload { name, id }, Get) => uploads::status(reg, name, caller, id).await,
        (Route::Upload { name, id }, Patch) => {
            uploads::patch(reg, req, body, name, caller, id).await
        }
        (Route::Upload { name, id }, Put) => {
            uploads::finish(reg, req, body, name, caller, id).await
        }
        (Route::Upload { name, id }, Delete) => uploads::cancel(reg, name, caller, id).await,
        (Route::Referrers { name, digest }, Get | Head) => {
            referrers::list(reg, req, name, digest).await
        }
        (Route::NotFound, _) => Err(no_such_endpoint(req)),
        _ => Err(method_not_allowed(req)),
    }
}

/// 404 `UNSUPPORTED`: no operation of the API lives at this path. (Not `NAME_UNKNOWN`, which
/// would tell the client a repository is missing; the spec's list has no code for an unknown
/// path, and clients that read codes know only that list.)
fn no_such_endpoint(req: &Request) -> Error {
    Error::new(ErrorCode::Unsupported)
        .with_status(404)
        .with_message("no such endpoint")
        .with_detail(req.path().chars().take(256).collect::<String>())
}

fn method_not_allowed(req: &Request) -> Error {
    Error::new(ErrorCode::Unsupported)
        .with_message("method not allowed on this endpoint")
        .with_detail(req.method.as_str())
}

async fn ops(
    reg: &Registry,
    req: &Request,
    endpoint: OpsEndpoint,
    caller: &mut Identity,
    request_id: &str,
) -> Result<Response> {
    if !matches!(req.method, Method::Get | Method::Head) {
        return Err(method_not_allowed(req));
    }
    // The probes stay open: orchestrators have no credentials.
    if let (OpsEndpoint::Metrics, Some(auth)) = (endpoint, &reg.auth) {
        if auth.metrics == MetricsAccess::Authenticated {
            identify(reg, req, caller, request_id, None).await?;
            if *caller == Identity::Anonymous {
                return Err(Error::unauthorized(
                    auth.challenge(None, None),
                    "authentication required (auth.metrics: authenticated)",
                ));
            }
        }
    }
    match endpoint {
        OpsEndpoint::Healthz => Ok(health::healthz()),
        OpsEndpoint::Readyz => Ok(health::readyz(reg.ops.readiness.status().await)),
        OpsEndpoint::Metrics if !reg.ops.metrics_enabled => Err(no_such_endpoint(req)),
        OpsEndpoint::Metrics => {
            let stats = reg.meta.stats();
            let gauges = metrics::Gauges {
                connections_open: reg.ops.connections.open() as u64,
                worker_connections: reg
                    .ops
                    .connections
                    .per_worker()
                    .into_iter()
                    .map(|n| n as u64)
                    .collect(),
                connections_moved: reg.ops.connections.moved(),
                uploads_in_progress: reg.uploads.active_sessions() as u64,
                stored_blobs: stats.blobs,
                stored_blob_bytes: stats.blob_bytes,
                metadata_queue_depth: stats.queue_depth,
                metadata_commits: stats.commits,
                metadata_write_ops: stats.ops,
                jobs: reg.jobs.figures(),
                gc_manifests: reg.gc.manifests.load(std::sync::atomic::Ordering::Relaxed),
                gc_blobs: reg.gc.blobs.load(std::sync::atomic::Ordering::Relaxed),
                gc_bytes: reg.gc.bytes.load(std::sync::atomic::Ordering::Relaxed),
                gc_passes: reg.gc.passes.load(std::sync::atomic::Ordering::Relaxed),
                quotas: reg.quotas.seen(),
                gc_seconds: reg.gc.micros.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6,
                gc_last_pass: reg.gc.last_ms.load(std::sync::atomic::Ordering::Relaxed) / 1000,
                blob_cache: reg.blobs.cache_figures(),
                metadata_cache: stats.cache.map(|c| metrics::MetadataCacheFigures {
                    hits: c.hits,
                    misses: c.misses,
                    errors: c.errors,
                    outages: c.outages,
                }),
                scans: reg.scanning.as_ref().map(|s| s.figures.snapshot()),
                ..metrics::Gauges::default()
            };
            let text = reg.ops.render_metrics(gauges);
            Ok(Response::new(200).with_body(metrics::CONTENT_TYPE, text.into_bytes()))
        }
    }
}

fn route_name<'a>(route: &Route<'a>) -> Option<&'a str> {
    match *route {
        Route::Tags { name }
        | Route::Manifest { name, .. }
        | Route::Blob { name, .. }
        | Route::UploadStart { name }
        | Route::Upload { name, .. }
        | Route::Referrers { name, .. }
        | Route::Quota { name }
        | Route::Scan { name, .. }
        | Route::ScanSummary { name } => Some(name),
        Route::Base | Route::Catalog | Route::NotFound => None,
    }
}

/// The one decision on whether a request may proceed, from the access it needs (see
/// [`access`]): the caller's rules when authentication is on ([`permit`]), then the registry's
/// modes. Whether a cross-repository mount may read its source.
fn authorize(
    reg: &Registry,
    needed: &access::Needed<'_>,
    method: Method,
    caller: &Identity,
) -> Result<bool> {
    let may_mount = match (&reg.auth, caller) {
        (Some(auth), Identity::Token(claims)) => permit_token(auth, needed, &claims.access)?,
        (Some(auth), caller) => permit(auth, needed, caller)?,
        (None, _) => true,
    };
    if reg.limits.read_only && access::changes(needed, method) {
        return Err(Error::new(ErrorCode::Unsupported)
            .with_message("the registry is in read-only mode: pushes and deletes are refused")
            .with_detail(method.as_str()));
    }
    if !reg.limits.delete_enabled && needed.action() == Some(access::Action::Delete) {
        return Err(Error::new(ErrorCode::Unsupported)
            .with_message("deletion is disabled on this registry"));
    }
    Ok(may_mount)
}

/// What the access rules say of `who` asking for `needed`: refused (401 with a challenge to
/// an anonymous caller, who may have credentials to send; 403 to a user), or let through with
/// whether a mount may read its source. An anonymous caller is challenged even where nothing
/// is needed (`GET /v2/`): docker sends stored credentials only after a challenge there.
fn permit(auth: &Auth, needed: &access::Needed<'_>, caller: &Identity) -> Result<bool> {
    use crate::auth::Who;
    use access::{Action, Needed};
    let who = caller.who();
    let challenge = || {
        let scope = challenge_scope(auth, needed);
        Error::unauthorized(
            auth.challenge(scope.as_deref(), None),
            "authentication required",
        )
    };
    match (needed, who) {
        (Needed::Nothing, Who::Anonymous) => Err(challenge()),
        (Needed::Catalog, Who::Anonymous) if !auth.rules.anonymous_pulls_somewhere() => {
            Err(challenge())
        }
        (Needed::Nothing | Needed::Catalog, _) => Ok(true),
        (
            Needed::Repository {
                name,
                action,
                mount_from,
            },
            who,
        ) => {
            if !auth.rules.allowed(who, name).contains(*action) {
                return Err(match who {
                    Who::Anonymous => challenge(),
                    Who::User(_) | Who::Scoped(_) => Error::new(ErrorCode::Denied).with_detail(
                        serde_json::json!({ "repository": name, "action": action.as_str() }),
                    ),
                });
            }
            Ok(mount_from
                .as_deref()
                .is_none_or(|from| auth.rules.allowed(who, from).contains(Action::Pull)))
        }
    }
}

/// What a verified token's `access` says of `needed`: every need covered, or 401 with an
/// `insufficient_scope` challenge naming all of it (docker then asks for a new token); and
/// whether a mount may read its source (pull on `from` in the token, else no mount).
fn permit_token(
    auth: &Auth,
    needed: &access::Needed<'_>,
    granted: &[token_scope::Scope],
) -> Result<bool> {
    if token_scope::authorize(&access::token_needs(needed, false), granted).is_err() {
        let scope = challenge_scope(auth, needed);
        let scope = scope.as_deref();
        return Err(Error::unauthorized(
            auth.challenge(scope, Some(ChallengeError::InsufficientScope)),
            "the token does not grant this request's scope",
        )
        .with_detail(scope.unwrap_or_default().to_string()));
    }
    Ok(match needed {
        access::Needed::Repository {
            mount_from: Some(from),
            ..
        } => token_scope::authorize(&[Need::repository(from, "pull")], granted).is_ok(),
        _ => true,
    })
}

/// Maps a body read failure to the client-visible error.
pub fn body_error(e: BodyError) -> Error {
    match e {
        BodyError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::new(ErrorCode::SizeInvalid)
                .with_message("the body ended before its declared length")
        }
        BodyError::Io(e) => Error::new(ErrorCode::BlobUploadInvalid)
            .with_message("the request body could not be read")
            .with_detail(e.to_string()),
        BodyError::Malformed(m) => Error::malformed(m),
        BodyError::TooLarge => Error::new(ErrorCode::SizeInvalid)
            .with_status(413)
            .with_message("request body too large"),
        BodyError::TooSlow => Error::new(ErrorCode::BlobUploadInvalid)
            .with_status(408)
            .with_message("the request body arrived slower than the minimum rate"),
    }
}

/// `/v2/<name>/blobs/uploads/<id>`: where a client continues an upload.
pub fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}
