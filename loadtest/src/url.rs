//! `http://HOST:PORT/path` URLs and upload `Location`s (absolute or relative). Pure, apart
//! from the one-time name resolution in `Target::resolve`.

use std::net::{SocketAddr, ToSocketAddrs};

/// Where requests go: the Host header value and the socket address behind it.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` as given (sent as the Host header).
    pub authority: String,
    pub addr: SocketAddr,
    /// Some for an `https://` target.
    pub tls: Option<crate::http::tls::TlsTarget>,
}

impl Target {
    /// Resolves `authority` once, preferring IPv4 (the benchmarks listen on 127.0.0.1).
    pub fn resolve(authority: &str) -> Result<Target, String> {
        let addrs: Vec<SocketAddr> = authority
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {authority}: {e}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("{authority} resolves to no address"))?;
        Ok(Target {
            authority: authority.to_string(),
            addr,
            tls: None,
        })
    }
}

/// Splits `http://host[:port][/path]` into (authority with port, path). The port defaults
/// to 80; the path to `/`. Only plain HTTP: the workloads but `get` speak no TLS.
pub fn split_url(url: &str) -> Result<(String, String), String> {
    match split_any_url(url)? {
        (false, authority, path) => Ok((authority, path)),
        (true, ..) => Err(format!("{url:?}: only http:// URLs are supported here")),
    }
}

/// [`split_url`] for `http://` and `https://` (port 443 by default): (https, authority, path).
pub fn split_any_url(url: &str) -> Result<(bool, String, String), String> {
    let (https, rest, default_port) = match url.strip_prefix("https://") {
        Some(rest) => (true, rest, 443),
        None => (
            false,
            url.strip_prefix("http://")
                .ok_or_else(|| format!("{url:?}: only http:// and https:// URLs are supported"))?,
            80,
        ),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?}: expected http://HOST:PORT"));
    }
    let authority = if has_port(authority) {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    Ok((https, authority, path.to_string()))
}

fn has_port(authority: &str) -> bool {
    match authority.rfind(':') {
        // `[::1]` has colons but no port after the bracket.
        Some(i) => !authority[i..].contains(']'),
        None => false,
    }
}

/// The request target for a `Location` header: a path as is, or the path and query of an
/// absolute URL on the same authority (distribution answers with absolute URLs built from
/// our Host header). Another host is an error: this client keeps one connection target.
pub fn location_target(location: &str, authority: &str) -> Result<String, String> {
    if location.starts_with('/') {
        return Ok(location.to_string());
    }
    if let Some(rest) = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("https://"))
    {
        let (auth, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let same = auth.eq_ignore_ascii_case(authority)
            || (!has_port(auth) && format!("{auth}:80").eq_ignore_ascii_case(authority));
        if !same {
            return Err(format!(
                "Location {location:?} points to another host than {authority}"
            ));
        }
        return Ok(path.to_string());
    }
    if location.is_empty() {
        return Err("empty Location header".into());
    }
    Err(format!("unsupported relative Location {location:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split() {
        assert_eq!(
            split_url("http://127.0.0.1:5000").unwrap(),
            ("127.0.0.1:5000".into(), "/".into())
        );
        assert_eq!(
            split_url("http://localhost:5000/v2/a/manifests/t").unwrap(),
            ("localhost:5000".into(), "/v2/a/manifests/t".into())
        );
        assert_eq!(
            split_url("http://example").unwrap(),
            ("example:80".into(), "/".into())
        );
        assert_eq!(
            split_url("http://[::1]:5000/x").unwrap(),
            ("[::1]:5000".into(), "/x".into())
        );
        assert!(split_url("https://a:1").is_err());
        assert_eq!(
            split_any_url("https://localhost/v2/").unwrap(),
            (true, "localhost:443".into(), "/v2/".into())
        );
        assert_eq!(
            split_any_url("http://a:1").unwrap(),
            (false, "a:1".into(), "/".into())
        );
        assert!(split_url("a:1").is_err());
        assert!(split_url("http:///x").is_err());
    }

    #[test]
    fn locations() {
        let a = "127.0.0.1:5000";
        assert_eq!(
            location_target("/v2/a/blobs/uploads/1", a).unwrap(),
            "/v2/a/blobs/uploads/1"
        );
        assert_eq!(
            location_target("http://127.0.0.1:5000/v2/a/blobs/uploads/1?_state=x", a).unwrap(),
            "/v2/a/blobs/uploads/1?_state=x"
        );
        assert!(location_target("http://other:5000/v2/", a).is_err());
        assert!(location_target("", a).is_err());
        assert!(location_target("v2/a", a).is_err());
        assert_eq!(
            location_target("http://host/v2/x", "host:80").unwrap(),
            "/v2/x"
        );
    }
}
