//! The life of one connection: read a head, hand the request and its streaming body to the
//! API, write the answer, and repeat while keep-alive allows. Malformed heads get their 400
//! or 431 in the spec's error shape before the connection closes.

use crate::api::{self, Registry};
use crate::error::{Error, ErrorCode};
use crate::http::body::Body;
use crate::http::conn::{Conn, HeadOutcome};
use crate::http::request::HeadError;
use crate::http::response::{write_response, Response};
use crate::server::signal::LocalSignal;
use monoio::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    pub max_head: usize,
    /// Wait for the next request on a kept-alive connection.
    pub idle_timeout: Duration,
    /// Deadline for the rest of a request head once its first byte arrived.
    pub head_timeout: Duration,
    /// Progress timeout for request bodies and responses.
    pub body_timeout: Duration,
}

/// Answers a connection over the limit with 503 UNAVAILABLE and closes it, so that clients see
/// why instead of a reset (they retry after `Retry-After`).
pub async fn refuse(stream: TcpStream, settings: ConnSettings) {
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(stream);
    let err = Error::new(ErrorCode::Unavailable).with_message("too many connections; retry later");
    let resp = Response::error(&err)
        .header("Retry-After", "1")
        .header(api::API_VERSION_HEADER.0, api::API_VERSION_HEADER.1);
    if write_response(&mut conn, resp, false, settings.body_timeout)
        .await
        .is_ok()
    {
        conn.linger_close().await;
    }
}

pub async fn serve(
    stream: TcpStream,
    reg: Arc<Registry>,
    settings: ConnSettings,
    shutdown: LocalSignal,
) {
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(stream);
    loop {
        let outcome = conn
            .read_head(
                settings.max_head,
                settings.idle_timeout,
                settings.head_timeout,
                &shutdown,
            )
            .await;
        let req = match outcome {
            HeadOutcome::Request(r) => r,
            HeadOutcome::Closed | HeadOutcome::TimedOut => return,
            HeadOutcome::Invalid(e) => {
                let err = match e {
                    HeadError::TooLarge => Error::new(ErrorCode::BadRequest)
                        .with_status(431)
                        .with_message("request header fields too large"),
                    HeadError::Malformed(m) => Error::new(ErrorCode::BadRequest).with_detail(m),
                };
                let resp = Response::error(&err)
                    .header(api::API_VERSION_HEADER.0, api::API_VERSION_HEADER.1);
                let _ = write_response(&mut conn, resp, false, settings.body_timeout).await;
                conn.linger_close().await;
                return;
            }
        };
        let mut body = Body::new(&mut conn, &req, settings.body_timeout);
        let resp = api::handle(&reg, &req, &mut body).await;
        let reusable = body.finish().await;
        let keep_alive = req.keep_alive && reusable && !shutdown.fired();
        if write_response(&mut conn, resp, keep_alive, settings.body_timeout)
            .await
            .is_err()
        {
            return;
        }
        super::cpu_yield::request_done();
        if !keep_alive {
            conn.linger_close().await;
            return;
        }
    }
}
