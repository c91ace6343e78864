//! The life of one connection: read a head, hand the request and its streaming body to the
//! API, write the answer, and repeat while keep-alive allows. Malformed heads get their 400
//! or 431 in the spec's error shape before the connection closes.
//!
//! On a TLS listener the handshake runs first, on the worker that serves the connection (the
//! balancer hands over bare sockets), bounded by the head timeout and ended by shutdown; a
//! client speaking plain HTTP to it is told so in a plain 400.
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
use crate::http::tls::{self, Accepted};
use crate::http::tls_config::TlsConfig;
use crate::http::transport::{TcpTransport, Transport};
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
    /// The registry listener's TLS configuration; None: plain HTTP. (The operations
    /// listener stays plain: probes and scrapers on a private address.)
    pub tls: Option<Arc<TlsConfig>>,
}

/// What becomes of an accepted connection once its transport is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Serve,
    /// Over the connection limit: answered 503 and closed.
    Refuse,
}

/// Runs `task` on a connection accepted on `site`: over TLS after the handshake when the site
/// speaks TLS, else over plain TCP. Each transport gets its own copy of the request loop, and
/// the TLS one lives in a box of its own, so the plain path and its task are what they are
/// without TLS (rustls's state would otherwise enlarge every connection's task).
pub async fn open(
    stream: monoio::net::TcpStream,
    remote: Option<SocketAddr>,
    site: Site,
    task: Task,
    ctx: Rc<ConnCtx>,
) {
    match (&ctx.tls, site) {
        (Some(tls), Site::Registry) => {
            let config = tls.current();
            Box::pin(open_tls(stream, config, remote, site, task, ctx)).await
        }
        _ => run(TcpTransport::new(stream), remote, site, task, ctx).await,
    }
}

async fn open_tls(
    stream: monoio::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
    remote: Option<SocketAddr>,
    site: Site,
    task: Task,
    ctx: Rc<ConnCtx>,
) {
    let handshake = monoio::select! {
        r = monoio::time::timeout(ctx.settings.head_timeout, tls::accept(stream, config)) => r,
        _ = ctx.shutdown.wait() => return,
    };
    let peer = remote.map(|r| r.to_string()).unwrap_or_default();
    match handshake {
        Ok(Ok(Accepted::Tls(t))) => run(*t, remote, site, task, ctx).await,
        Ok(Ok(Accepted::PlainHttp(stream))) => {
            let err = Error::malformed("this port speaks TLS: use https://")
                .with_message("plain HTTP request to the TLS port");
            close_with(TcpTransport::new(stream), &err, None, remote, &ctx).await;
        }
        Ok(Err(e)) => crate::log::debug(format_args!("TLS handshake with {peer} failed: {e}")),
        Err(_) => crate::log::debug(format_args!("TLS handshake with {peer} timed out")),
    }
}

async fn run<T: Transport>(
    transport: T,
    remote: Option<SocketAddr>,
    site: Site,
    task: Task,
    ctx: Rc<ConnCtx>,
) {
    match task {
        Task::Serve => serve(transport, remote, site, ctx).await,
        Task::Refuse => refuse(transport, remote, ctx).await,
    }
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
    let err = Error::new(ErrorCode::Unavailable).with_message("too many connections; retry later");
    close_with(transport, &err, Some(("Retry-After", "1")), remote, &ctx).await;
}

/// Answers `err` before any request was read, and closes.
async fn close_with<T: Transport>(
    transport: T,
    err: &Error,
    extra: Option<(&'static str, &'static str)>,
    remote: Option<SocketAddr>,
    ctx: &ConnCtx,
) {
    let started = Instant::now();
    let mut conn = Conn::new(transport);
    if answer_unparsed(&mut conn, err, extra, remote, ctx, started).await {
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
