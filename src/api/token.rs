//! The built-in token service's endpoints (Docker token authentication): `GET /token`
//! (credentials in the `Authorization` header, as docker sends them after a Bearer
//! challenge), the OAuth2 form of `POST /token` (`grant_type=password|refresh_token`), and
//! `GET /token/jwks`, our public key for other services.
//!
//! The grant is the intersection of the requested scopes and what the access rules allow the
//! caller ([`grant`]); a partial or empty grant is a token all the same, as with distribution
//! (the registry then answers `insufficient_scope`). Credentials are checked as on any
//! request: bcrypt on the auth pool (a robot secret against the robot tokens), the same
//! failure delay.
//!
//! Refresh tokens go to users and robots alike, bound to what [`Auth::refresh_binding`] says;
//! the refresh grant asks [`Auth::refresh_subject`] who the subject is now (a robot with its
//! current scopes) and answers with a new refresh token, the presented one staying valid
//! (see [`crate::auth::token::refresh`] for why).

use super::error::{Error, Result};
use super::{body_error, identify};
use crate::api::Registry;
use crate::auth::token::scope::{self, format_scopes, Scope, ANY_ACTION};
use crate::auth::token::service::{now, TokenService};
use crate::auth::token::{request, RequestError};
use crate::auth::{Action, Auth, Identity, Lapsed, Refused, Who};
use crate::http::body::Body;
use crate::http::request::{Method, Request};
use crate::http::response::Response;
use crate::http::transport::Transport;

/// Largest `POST /token` form: a refresh token and a few scopes fit many times over.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// What the rules allow `who` on each requested resource, as token actions.
pub fn grant(auth: &Auth, who: Who<'_>, requested: &[Scope]) -> Vec<Scope> {
    scope::grant(requested, |resource_type, name| match resource_type {
        "repository" => {
            let allowed = auth.rules.allowed(who, name);
            [Action::Pull, Action::Push, Action::Delete]
                .into_iter()
                .filter(|a| allowed.contains(*a))
                .map(Action::as_str)
                .collect::<Vec<_>>()
        }
        // The catalog lists only what the caller may pull, so anyone who may pull
        // somewhere may ask for it.
        "registry"
            if name == "catalog"
                && (!matches!(who, Who::Anonymous) || auth.rules.anonymous_pulls_somewhere()) =>
        {
            vec![ANY_ACTION]
        }
        _ => Vec::new(),
    })
}

fn bad_request(e: RequestError) -> Error {
    Error::malformed(e.to_string()).with_message("invalid token request")
}

/// 400 for a `service` other than ours, as distribution answers it.
fn check_service(svc: &TokenService, asked: Option<&str>) -> Result<()> {
    match asked {
        Some(s) if s != svc.service() => Err(Error::malformed(serde_json::json!({
            "service": s,
            "expected": svc.service(),
        }))
        .with_message("this token service issues tokens only for its own service")),
        _ => Ok(()),
    }
}

fn refused_token(auth: &Auth, why: impl std::fmt::Display, request_id: &str) -> Error {
    crate::log::warn(format_args!(
        "request {request_id}: refresh token refused: {why}"
    ));
    Error::unauthorized(
        auth.challenge(None, None),
        "invalid or expired refresh token: log in again",
    )
}

/// `/token`, GET or POST.
pub async fn token<T: Transport>(
    reg: &Registry,
    req: &Request,
    body: &mut Body<'_, T>,
    caller: &mut Identity,
    request_id: &str,
) -> Result<Response> {
    let (Some(auth), Some(svc)) = (
        reg.auth.as_ref(),
        reg.auth.as_ref().and_then(|a| a.token.as_ref()),
    ) else {
        return Err(super::no_such_endpoint(req));
    };
    if !svc.serves_tokens() {
        return Err(super::no_such_endpoint(req));
    }
    let (asked, refresh_in) = match req.method {
        Method::Get => {
            let asked = request::parse_get(req.query()).map_err(bad_request)?;
            check_service(svc, asked.service.as_deref())?;
            identify(reg, req, caller, request_id, None).await?;
            if let Identity::Token(_) = caller {
                *caller = Identity::Anonymous;
                return Err(Error::unauthorized(
                    auth.challenge(None, None),
                    "the token service takes Basic credentials, not a Bearer token",
                ));
            }
            (asked, None)
        }
        Method::Post => {
            let form = body.read_to_vec(MAX_FORM_BYTES).await.map_err(body_error)?;
            let asked = request::parse_post_form(&form).map_err(bad_request)?;
            check_service(svc, asked.service.as_deref())?;
            let refresh_in = match &asked.grant {
                request::Grant::Password { username, password } => {
                    match auth.password(username.clone(), password.clone()).await {
                        Ok(identity) => *caller = identity,
                        Err(Refused::WrongCredentials { user }) => {
                            return Err(super::wrong_credentials(auth, &user, request_id).await)
                        }
                        Err(_) => return Err(super::unavailable()),
                    }
                    None
                }
                request::Grant::RefreshToken(t) => {
                    let claims = svc
                        .verify_refresh(t, now())
                        .map_err(|e| refused_token(auth, e, request_id))?;
                    let (identity, binding) =
                        auth.refresh_subject(&claims).await.map_err(|e| match e {
                            Lapsed::Changed(why) => refused_token(auth, why, request_id),
                            Lapsed::Unavailable => super::unavailable(),
                        })?;
                    *caller = identity;
                    Some((claims, binding))
                }
                request::Grant::Header => return Err(super::method_not_allowed(req)),
            };
            (asked, refresh_in)
        }
        _ => return Err(super::method_not_allowed(req)),
    };
    let granted = grant(auth, caller.who(), &asked.scopes);
    let at = now();
    let subject = caller.user().unwrap_or_default().to_string();
    let refresh = match (asked.offline, refresh_in) {
        // The rotation: the presented token's client, a fresh expiry.
        (_, Some((presented, binding))) => Some((presented.client_id, binding)),
        (false, None) => None,
        (true, None) => {
            let client_id = asked
                .client_id
                .clone()
                .ok_or_else(|| bad_request(RequestError::MissingField("client_id")))?;
            let binding = auth.refresh_binding(caller).ok_or_else(|| match caller {
                Identity::User(user) => {
                    refused_token(auth, format_args!("user {user:?} removed"), request_id)
                }
                _ => Error::unauthorized(
                    auth.challenge(None, None),
                    "a refresh token (offline_token) needs a user's or a robot token's \
                     credentials",
                ),
            })?;
            Some((client_id, binding))
        }
    };
    let refresh = refresh
        .map(|(client_id, binding)| svc.issue_refresh(&subject, &client_id, &binding, at))
        .transpose()
        .map_err(|e| Error::internal("issuing a refresh token", e))?;
    let scope_text = format_scopes(&granted);
    let issued = svc
        .issue(&subject, granted, at)
        .map_err(|e| Error::internal("issuing a token", e))?;
    let scope_field = (req.method == Method::Post).then_some(scope_text.as_str());
    let body = request::response_body(&issued, refresh.as_deref(), scope_field);
    Ok(Response::new(200)
        .with_body("application/json", body)
        .header("Cache-Control", "no-store"))
}

/// `GET /token/jwks`: our public key, open to anyone (it is public).
pub fn jwks(reg: &Registry, req: &Request) -> Result<Response> {
    let Some(keys) = reg
        .auth
        .as_ref()
        .and_then(|a| a.token.as_ref())
        .and_then(TokenService::jwks)
    else {
        return Err(super::no_such_endpoint(req));
    };
    if !matches!(req.method, Method::Get | Method::Head) {
        return Err(super::method_not_allowed(req));
    }
    Ok(Response::new(200).with_body("application/json", keys))
}
