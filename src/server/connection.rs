//! The life of one connection: read a head, hand the request and its streaming body to the
//! API, write the answer, and repeat while keep-alive allows. Malformed heads get their 400
//! or 431 in the spec's error shape before the connection closes.
//!
//! Every answer carries an `X-Request-Id` and is recorded once written: counted in the
//! worker's metrics and, when the access log is on, logged with its method, route class,
//! repository, status, body bytes both ways, duration (head read to response written), id
//! and peer, and the user when the request was authenticated.

use crate::api::error::{Error, ErrorCode};
use crate::api::{self, Registry, Site};
use crate::http::body::{Body, BodyLimits};
use crate::http::conn::{Conn, HeadOutcome};
use crate::http::request::{HeadError, Method};
use crate::http::response::write_response;
use crate::http::transport::Transport;
use crate::observe::{Exchange, RouteClass, WorkerObs, REQUEST_ID_HEADER};
use crate::signal::LocalSignal;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    pub max_head: usize,
    /// Wait for the next request on a kept-alive connection.
    pub idle_timeout: Duration,
    /// Deadline for the rest of a request head once its first byte arrived.
    pub head_timeout: Duration,
    /// Progress timeout for request bodies and responses.
    pub body_timeout: Duration,
    /// Bytes per second a request body must bring over each `body_timeout`; 0: any.
    pub min_body_rate: u64,
}

/// What every connection of one worker shares.
pub struct ConnCtx {
    pub reg: Arc<Registry>,
    pub settings: ConnSettings,
    pub shutdown: LocalSignal,
    pub obs: WorkerObs,
}

/// Writes an answer given before any request was understood (refusal, malformed head), with
/// its request id, and records it.
async fn answer_unparsed<T: Transport>(
    conn: &mut Conn<T>,
    err: &Error,
    extra: Option<(&'static str, &'static str)>,
    remote: Option<SocketAddr>,
    ctx: &ConnCtx,
    started: Instant,
) -> bool {
    let id = ctx.obs.request_id(None);
    let mut resp = err
        .response()
        .header(api::API_VERSION_HEADER.0, api::API_VERSION_HEADER.1)
        .header(REQUEST_ID_HEADER, id.as_str().to_string());
    if let Some((name, value)) = extra {
        resp = resp.header(name, value);
    }
    let (status, sent) = (resp.status, resp.body.wire_len());
    let written = write_response(conn, resp, false, ctx.settings.body_timeout)
        .await
        .is_ok();
    ctx.obs.record(&Exchange {
        method: Method::Other,
        route: RouteClass::Other,
        repository: None,
        user: None,
        status,
        received: 0,
        sent: if written { sent } else { 0 },
        elapsed: started.elapsed(),
        request_id: id.as_str(),
        remote,
    });
    written
}

/// Answers a connection over the limit with 503 UNAVAILABLE and closes it, so that clients see
/// why instead of a reset (they retry after `Retry-After`).
pub async fn refuse<T: Transport>(transport: T, remote: Option<SocketAddr>, ctx: Rc<ConnCtx>) {
    let started = Instant::now();
    let mut conn = Conn::new(transport);
    let err = Error::new(ErrorCode::Unavailable).with_message("too many connections; retry later");
    if answer_unparsed(
        &mut conn,
        &err,
        Some(("Retry-After", "1")),
        remote,
        &ctx,
        started,
    )
    .await
    {
        conn.linger_close().await;
    }
}

/// Serves one connection over any transport: the worker's TCP connections, or a test's
/// in-memory one.
pub async fn serve<T: Transport>(
    transport: T,
    remote: Option<SocketAddr>,
    site: Site,
    ctx: Rc<ConnCtx>,
) {
    let settings = ctx.settings;
    let mut conn = Conn::new(transport);
    loop {
        let outcome = conn
            .read_head(
                settings.max_head,
                settings.idle_timeout,
                settings.head_timeout,
                &ctx.shutdown,
            )
            .await;
        let started = Instant::now();
        let req = match outcome {
            HeadOutcome::Request(r) => r,
            HeadOutcome::Closed | HeadOutcome::TimedOut => return,
            HeadOutcome::Invalid(e) => {
                let err = match e {
                    HeadError::TooLarge => Error::malformed("request head too large")
                        .with_status(431)
                        .with_message("request header fields too large"),
                    HeadError::Malformed(m) => Error::malformed(m),
                };
                answer_unparsed(&mut conn, &err, None, remote, &ctx, started).await;
                conn.linger_close().await;
                return;
            }
        };
        let id = ctx.obs.request_id(req.header("x-request-id"));
        let target = api::target(site, req.path());
        let (route, repository) = (target.class, target.repository);
        let limits = BodyLimits {
            timeout: settings.body_timeout,
            min_rate: settings.min_body_rate,
        };
        let mut body = Body::new(&mut conn, &req, limits);
        let (resp, caller) = api::handle(&ctx.reg, target, &req, &mut body, id.as_str()).await;
        let resp = resp.header(REQUEST_ID_HEADER, id.as_str().to_string());
        let received = body.received();
        let reusable = body.finish().await;
        let keep_alive = req.keep_alive && reusable && !ctx.shutdown.fired();
        let (status, sent) = (resp.status, resp.body.wire_len());
        let written = write_response(&mut conn, resp, keep_alive, settings.body_timeout).await;
        if let Err(e) = &written {
            crate::log::debug(format_args!(
                "request {}: writing the response failed: {e}",
                id.as_str()
            ));
        }
        ctx.obs.record(&Exchange {
            method: req.method,
            route,
            repository,
            user: caller.user(),
            status,
            received,
            sent: if written.is_ok() { sent } else { 0 },
            elapsed: started.elapsed(),
            request_id: id.as_str(),
            remote,
        });
        if written.is_err() {
            return;
        }
        super::cpu_yield::request_done();
        if !keep_alive {
            conn.linger_close().await;
            return;
        }
    }
}
