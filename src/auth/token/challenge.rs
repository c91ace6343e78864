//! The `WWW-Authenticate: Bearer` challenge (RFC 6750 §3) that sends docker to the token
//! service: `Bearer realm="...",service="..."`, with `scope="..."` naming what the request
//! needs and `error="..."` when a token was presented but refused or insufficient.

/// Why a presented token did not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeError {
    /// Any [`super::TokenError`]: expired, bad signature, wrong audience, ...
    InvalidToken,
    /// A valid token without the needed scope.
    InsufficientScope,
}

impl ChallengeError {
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeError::InvalidToken => "invalid_token",
            ChallengeError::InsufficientScope => "insufficient_scope",
        }
    }
}

/// The header value. `scope` is omitted when empty or `None` (`GET /v2/` needs none).
pub fn bearer(
    realm: &str,
    service: &str,
    scope: Option<&str>,
    error: Option<ChallengeError>,
) -> String {
    let mut out = format!("Bearer realm={},service={}", quoted(realm), quoted(service));
    if let Some(scope) = scope.filter(|s| !s.is_empty()) {
        out.push_str(",scope=");
        out.push_str(&quoted(scope));
    }
    if let Some(error) = error {
        out.push_str(",error=");
        out.push_str(&quoted(error.as_str()));
    }
    out
}

/// An HTTP quoted-string: `"` and `\` escaped, control characters dropped so that no value
/// (a configured realm included) can end the header.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_distribution_does() {
        assert_eq!(
            bearer("https://reg.example/token", "reg.example", None, None),
            r#"Bearer realm="https://reg.example/token",service="reg.example""#
        );
        assert_eq!(
            bearer(
                "http://127.0.0.1:5000/token",
                "ringyard",
                Some("repository:a:pull,push"),
                None
            ),
            r#"Bearer realm="http://127.0.0.1:5000/token",service="ringyard",scope="repository:a:pull,push""#
        );
        assert_eq!(
            bearer(
                "r",
                "s",
                Some("repository:a:push repository:b:pull"),
                Some(ChallengeError::InsufficientScope)
            ),
            r#"Bearer realm="r",service="s",scope="repository:a:push repository:b:pull",error="insufficient_scope""#
        );
        assert_eq!(
            bearer("r", "s", Some(""), Some(ChallengeError::InvalidToken)),
            r#"Bearer realm="r",service="s",error="invalid_token""#
        );
    }

    #[test]
    fn values_cannot_break_out_of_their_quotes_or_the_header() {
        assert_eq!(
            bearer("a\"b\\c\r\nX-Evil: 1", "s", None, None),
            r#"Bearer realm="a\"b\\cX-Evil: 1",service="s""#
        );
    }
}
