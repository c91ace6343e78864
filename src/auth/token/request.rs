//! The `/token` endpoint's requests and responses as values: `GET /token?service=&scope=...`
//! (credentials, if any, in the `Authorization` header) and the OAuth2 form of
//! `POST /token` (docker/distribution docs/spec/auth/oauth.md), both read into one
//! [`TokenRequest`]; and the JSON body of the answer.
//!
//! A POST body is HTML form encoding, where `+` is a space (the space-separated `scope` of a
//! Go client arrives as `scope=repository%3Aa%3Apull+repository%3Ab%3Apush`), unlike a
//! query string, where this registry keeps `+` literal.

use super::error::RequestError;
use super::jwt::IssuedToken;
use super::scope::{parse_scopes, Scope};
use super::time::rfc3339;
use crate::http::query::{percent_decode, query_pairs};
use serde::Serialize;
use std::fmt;

/// How the caller proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Grant {
    /// GET: the `Authorization` header (Basic), or nobody (anonymous).
    Header,
    /// POST `grant_type=password`.
    Password { username: String, password: String },
    /// POST `grant_type=refresh_token`.
    RefreshToken(String),
}

/// The secret never reaches a log through `{:?}`.
impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::Header => f.write_str("Header"),
            Grant::Password { username, .. } => write!(f, "Password({username:?}, <redacted>)"),
            Grant::RefreshToken(_) => f.write_str("RefreshToken(<redacted>)"),
        }
    }
}

/// A `/token` request, either form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The audience asked for; the caller refuses one that is not its own service. Required
    /// on POST, optional on GET (where docker always sends it).
    pub service: Option<String>,
    pub scopes: Vec<Scope>,
    /// A refresh token is wanted (`offline_token=true`, `access_type=offline`).
    pub offline: bool,
    pub client_id: Option<String>,
    /// GET's `account`: the user docker means to log in as (informational; the credentials
    /// decide).
    pub account: Option<String>,
    pub grant: Grant,
}

/// Reads the query of `GET /token`.
pub fn parse_get(query: &str) -> Result<TokenRequest, RequestError> {
    let pairs = query_pairs(query);
    let first = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let offline = match first("offline_token") {
        None => false,
        Some(v) => parse_go_bool(&v).ok_or_else(|| RequestError::UnsupportedValue {
            field: "offline_token",
            value: super::error::truncated(&v),
        })?,
    };
    let scopes = parse_scopes(
        pairs
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str()),
    )?;
    Ok(TokenRequest {
        service: first("service"),
        scopes,
        offline,
        client_id: first("client_id"),
        account: first("account"),
        grant: Grant::Header,
    })
}

/// What Go's `strconv.ParseBool` accepts, which is what distribution takes for
/// `offline_token`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` pairs: `+` is a space, then `%XY` escapes.
fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    let body = String::from_utf8_lossy(body);
    body.split('&')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (k, v) = s.split_once('=').unwrap_or((s, ""));
            let decode = |x: &str| percent_decode(&x.replace('+', " "));
            (decode(k), decode(v))
        })
        .collect()
}

/// Reads the form body of `POST /token`. `grant_type`, `service` and `client_id` are
/// required (as the OAuth2 spec and distribution have them), and so are the grant's own
/// fields.
pub fn parse_post_form(body: &[u8]) -> Result<TokenRequest, RequestError> {
    let pairs = form_pairs(body);
    let field = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let required = |key: &'static str| field(key).ok_or(RequestError::MissingField(key));
    let unsupported = |field: &'static str, value: &str| RequestError::UnsupportedValue {
        field,
        value: super::error::truncated(value),
    };
    let grant = match required("grant_type")?.as_str() {
        "password" => Grant::Password {
            username: required("username")?,
            password: required("password")?,
        },
        "refresh_token" => Grant::RefreshToken(required("refresh_token")?),
        other => return Err(unsupported("grant_type", other)),
    };
    let offline = match field("access_type").as_deref() {
        None | Some("online") => false,
        Some("offline") => true,
        Some(other) => return Err(unsupported("access_type", other)),
    };
    let scope = field("scope").unwrap_or_default();
    Ok(TokenRequest {
        service: Some(required("service")?),
        scopes: parse_scopes([scope.as_str()])?,
        offline,
        client_id: Some(required("client_id")?),
        account: None,
        grant,
    })
}

/// The JSON of a successful answer, as distribution returns it: the token under both
/// `token` (docker's original field) and `access_token` (OAuth2's), `expires_in` in seconds,
/// `issued_at` in RFC 3339, and `refresh_token` when one was asked for. `scope` is the
/// granted scope, which the POST form's OAuth2 answer carries.
#[derive(Debug, Serialize)]
struct ResponseBody<'a> {
    token: &'a str,
    access_token: &'a str,
    expires_in: u64,
    issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

/// The body of a `200` from `/token`.
pub fn response_body(
    issued: &IssuedToken,
    refresh_token: Option<&str>,
    scope: Option<&str>,
) -> Vec<u8> {
    let body = ResponseBody {
        token: &issued.token,
        access_token: &issued.token,
        expires_in: issued.expires_in,
        issued_at: rfc3339(issued.issued_at),
        refresh_token,
        scope,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::scope::format_scopes;

    #[test]
    fn get_query_as_docker_sends_it() {
        let q = "account=alice&client_id=docker&offline_token=true&service=registry.local\
                 &scope=repository%3Ateam%2Fapp%3Apull%2Cpush&scope=repository:base:pull";
        let r = parse_get(q).unwrap();
        assert_eq!(r.service.as_deref(), Some("registry.local"));
        assert_eq!(r.account.as_deref(), Some("alice"));
        assert_eq!(r.client_id.as_deref(), Some("docker"));
        assert!(r.offline);
        assert_eq!(r.grant, Grant::Header);
        assert_eq!(
            format_scopes(&r.scopes),
            "repository:team/app:pull,push repository:base:pull"
        );

        let bare = parse_get("").unwrap();
        assert_eq!(bare.service, None);
        assert!(bare.scopes.is_empty());
        assert!(!bare.offline);
        for (v, want) in [("1", true), ("False", false), ("t", true), ("0", false)] {
            assert_eq!(
                parse_get(&format!("offline_token={v}")).unwrap().offline,
                want
            );
        }
        assert!(matches!(
            parse_get("offline_token=yes"),
            Err(RequestError::UnsupportedValue {
                field: "offline_token",
                ..
            })
        ));
        assert!(matches!(
            parse_get("scope=repository:a"),
            Err(RequestError::InvalidScope { .. })
        ));
    }

    #[test]
    fn post_form_with_password_and_refresh_grants() {
        let body = b"grant_type=password&username=alice&password=p%40ss+w%2Bord&service=registry\
                     &client_id=docker&access_type=offline\
                     &scope=repository%3Aa%3Apull+repository%3Ab%3Apull%2Cpush";
        let r = parse_post_form(body).unwrap();
        assert_eq!(
            r.grant,
            Grant::Password {
                username: "alice".into(),
                password: "p@ss w+ord".into()
            }
        );
        assert!(r.offline);
        assert_eq!(r.service.as_deref(), Some("registry"));
        assert_eq!(r.client_id.as_deref(), Some("docker"));
        assert_eq!(
            format_scopes(&r.scopes),
            "repository:a:pull repository:b:pull,push"
        );
        assert!(
            !format!("{r:?}").contains("w+ord"),
            "the password is not in Debug"
        );

        let r = parse_post_form(
            b"grant_type=refresh_token&refresh_token=abc.def.ghi&service=s&client_id=c",
        )
        .unwrap();
        assert_eq!(r.grant, Grant::RefreshToken("abc.def.ghi".into()));
        assert!(!r.offline);
        assert!(r.scopes.is_empty());
    }

    #[test]
    fn post_form_refusals() {
        let cases: [(&[u8], RequestError); 7] = [
            (
                b"service=s&client_id=c",
                RequestError::MissingField("grant_type"),
            ),
            (
                b"grant_type=password&password=p&service=s&client_id=c",
                RequestError::MissingField("username"),
            ),
            (
                b"grant_type=password&username=u&service=s&client_id=c",
                RequestError::MissingField("password"),
            ),
            (
                b"grant_type=refresh_token&service=s&client_id=c",
                RequestError::MissingField("refresh_token"),
            ),
            (
                b"grant_type=refresh_token&refresh_token=t&client_id=c",
                RequestError::MissingField("service"),
            ),
            (
                b"grant_type=refresh_token&refresh_token=t&service=s",
                RequestError::MissingField("client_id"),
            ),
            (
                b"grant_type=client_credentials&service=s&client_id=c",
                RequestError::UnsupportedValue {
                    field: "grant_type",
                    value: "client_credentials".into(),
                },
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                parse_post_form(body).unwrap_err(),
                want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let bad_access =
            b"grant_type=refresh_token&refresh_token=t&service=s&client_id=c&access_type=forever";
        assert!(matches!(
            parse_post_form(bad_access),
            Err(RequestError::UnsupportedValue {
                field: "access_type",
                ..
            })
        ));
        let bad_scope =
            b"grant_type=refresh_token&refresh_token=t&service=s&client_id=c&scope=nonsense";
        assert!(matches!(
            parse_post_form(bad_scope),
            Err(RequestError::InvalidScope { .. })
        ));
    }

    #[test]
    fn response_body_has_both_token_fields() {
        let issued = IssuedToken {
            token: "h.p.s".into(),
            expires_in: 300,
            issued_at: 1_796_608_265,
        };
        let body: serde_json::Value =
            serde_json::from_slice(&response_body(&issued, None, None)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "token": "h.p.s", "access_token": "h.p.s", "expires_in": 300,
                "issued_at": "2026-12-07T01:51:05Z"
            })
        );
        let body: serde_json::Value = serde_json::from_slice(&response_body(
            &issued,
            Some("r.t.s"),
            Some("repository:a:pull"),
        ))
        .unwrap();
        assert_eq!(body["refresh_token"], "r.t.s");
        assert_eq!(body["scope"], "repository:a:pull");
    }
}
