//! Credentials a workload sends: Basic on every request (`--basic USER:PASS`), or a Bearer
//! token, given (`--bearer TOKEN`) or fetched once before the run from a token service
//! (`--token-realm URL`, as docker does after a challenge: `GET realm?service=&scope=` with the
//! Basic credentials, the answer `{"token": ...}` or `{"access_token": ...}`) and then reused
//! on every request, as docker reuses it. The value becomes one more request header, so the
//! request path is the same with or without it. The request and answer formats are pure
//! functions with unit tests; the fetch is the one piece of IO.

use crate::cli::AuthArgs;
use crate::http::conn::Body;
use crate::http::{Conn, Sink};
use crate::runtime::run_on_threads;
use crate::url::{split_url, Target};
use crate::work::registry::check_status;
use base64::Engine as _;
use std::time::Duration;

/// The largest token answer read: tokens with many scopes are a few KiB.
const MAX_TOKEN_ANSWER: usize = 1 << 20;

/// The `Authorization` header value the options ask for, fetching a token if they say so;
/// None without credentials.
pub fn authorization(a: &AuthArgs, timeout: Duration) -> Result<Option<String>, String> {
    let basic = a.basic.as_deref().map(basic_value).transpose()?;
    match (&a.bearer, &a.token_realm) {
        (Some(_), Some(_)) => Err("--bearer and --token-realm exclude each other".into()),
        (Some(token), None) => Ok(Some(format!("Bearer {token}"))),
        (None, Some(realm)) => {
            let target = token_target(realm, a.token_service.as_deref(), &a.token_scopes)?;
            let token = fetch_token(target, basic, timeout)?;
            Ok(Some(format!("Bearer {token}")))
        }
        (None, None) => Ok(basic),
    }
}

/// `Basic base64(USER:PASS)`.
pub fn basic_value(user_pass: &str) -> Result<String, String> {
    if !user_pass.contains(':') {
        return Err(format!("--basic {user_pass:?}: expected USER:PASSWORD"));
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(user_pass);
    Ok(format!("Basic {b64}"))
}

/// Where the token request goes: the realm's HOST:PORT and its path with `service` and each
/// `scope` added to whatever query the realm carries.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenTarget {
    pub authority: String,
    pub path: String,
}

pub fn token_target(
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
) -> Result<TokenTarget, String> {
    let (authority, mut path) = split_url(realm).map_err(|e| format!("--token-realm: {e}"))?;
    let params = service
        .map(|s| ("service", s))
        .into_iter()
        .chain(scopes.iter().map(|s| ("scope", s.as_str())));
    for (k, v) in params {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(k);
        path.push('=');
        path.push_str(&query_escape(v));
    }
    Ok(TokenTarget { authority, path })
}

/// Percent-encodes all but the unreserved characters (a scope has `:` and `,`, a name `/`).
fn query_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The token in a token service's answer: `token`, or OAuth2's `access_token`.
pub fn parse_token(body: &[u8]) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("token answer is not JSON: {e}"))?;
    ["token", "access_token"]
        .iter()
        .find_map(|k| v.get(k).and_then(|t| t.as_str()))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| "token answer has no \"token\" or \"access_token\"".into())
}

/// One GET to the token service on an event loop of its own, before the workload starts.
fn fetch_token(
    target: TokenTarget,
    basic: Option<String>,
    timeout: Duration,
) -> Result<String, String> {
    let resolved = Target::resolve(&target.authority)?;
    let mut answers = run_on_threads(1, move |_| {
        let (resolved, path, basic) = (resolved.clone(), target.path.clone(), basic.clone());
        async move {
            let mut conn = Conn::new(resolved);
            let mut sink = Sink::collect(MAX_TOKEN_ANSWER, false);
            let headers: Vec<(&str, &str)> = basic
                .as_deref()
                .map(|b| ("Authorization", b))
                .into_iter()
                .collect();
            let head = conn
                .request("GET", &path, &headers, Body::None, &mut sink, timeout)
                .await
                .map_err(|e| e.to_string())?;
            check_status(&head, &mut sink, "token request").map_err(|e| e.to_string())?;
            parse_token(&sink.take_body())
        }
    })?;
    answers
        .pop()
        .unwrap_or_else(|| Err("no token answer".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_is_base64_of_user_and_password() {
        assert_eq!(
            basic_value("alice:s3cr:et").unwrap(),
            "Basic YWxpY2U6czNjcjpldA=="
        );
        assert!(basic_value("alice").is_err());
    }

    #[test]
    fn token_request_carries_service_and_scopes() {
        let t = token_target(
            "http://127.0.0.1:5000/token",
            Some("ringyard"),
            &[
                "repository:bench/small:pull".into(),
                "repository:a/b:pull,push".into(),
            ],
        )
        .unwrap();
        assert_eq!(t.authority, "127.0.0.1:5000");
        assert_eq!(
            t.path,
            "/token?service=ringyard&scope=repository%3Abench%2Fsmall%3Apull\
             &scope=repository%3Aa%2Fb%3Apull%2Cpush"
        );
        let t = token_target("http://h:1/auth?x=1", None, &["registry:catalog:*".into()]);
        assert_eq!(t.unwrap().path, "/auth?x=1&scope=registry%3Acatalog%3A%2A");
        assert!(token_target("https://h/token", None, &[]).is_err());
    }

    #[test]
    fn token_answers() {
        assert_eq!(
            parse_token(br#"{"token":"abc","expires_in":300}"#).unwrap(),
            "abc"
        );
        assert_eq!(parse_token(br#"{"access_token":"xyz"}"#).unwrap(), "xyz");
        assert!(parse_token(br#"{"token":""}"#).is_err());
        assert!(parse_token(b"<html>").is_err());
    }

    /// The fetch against a listener that answers as a token service: one GET with the
    /// Basic credentials and the scope, the token taken from the answer.
    #[test]
    fn fetches_the_token_once_with_basic() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            let body = br#"{"token":"t0k3n","expires_in":300}"#;
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            s.write_all(answer.as_bytes()).unwrap();
            s.write_all(body).unwrap();
            String::from_utf8(head).unwrap()
        });
        let a = AuthArgs {
            basic: Some("alice:pw".into()),
            token_realm: Some(format!("http://127.0.0.1:{port}/token")),
            token_service: Some("ringyard".into()),
            token_scopes: vec!["repository:bench/small:pull".into()],
            ..AuthArgs::default()
        };
        let value = authorization(&a, Duration::from_secs(10)).unwrap();
        assert_eq!(value.as_deref(), Some("Bearer t0k3n"));
        let head = server.join().unwrap();
        assert!(
            head.starts_with(
                "GET /token?service=ringyard&scope=repository%3Abench%2Fsmall%3Apull HTTP/1.1\r\n"
            ),
            "{head}"
        );
        assert!(
            head.contains("\r\nAuthorization: Basic YWxpY2U6cHc=\r\n"),
            "{head}"
        );
    }

    #[test]
    fn bearer_given_or_basic_alone() {
        let mut a = AuthArgs::default();
        assert_eq!(authorization(&a, Duration::from_secs(1)).unwrap(), None);
        a.basic = Some("u:p".into());
        assert_eq!(
            authorization(&a, Duration::from_secs(1)).unwrap().unwrap(),
            "Basic dTpw"
        );
        a.bearer = Some("tok".into());
        assert_eq!(
            authorization(&a, Duration::from_secs(1)).unwrap().unwrap(),
            "Bearer tok"
        );
        a.token_realm = Some("http://127.0.0.1:1/token".into());
        assert!(authorization(&a, Duration::from_secs(1)).is_err());
    }
}
