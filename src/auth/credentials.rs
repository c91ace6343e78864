//! What an `Authorization` header claims, read without checking it (RFC 7617 for Basic, RFC
//! 6750 for Bearer). Pure. The scheme is case-insensitive; Basic is `user:password` in
//! standard base64, split at the first `:` (a user name cannot hold one, a password can).

use base64::Engine as _;

/// The credentials a request carries.
#[derive(PartialEq, Eq)]
pub enum Credentials<'a> {
    Basic {
        user: String,
        password: String,
    },
    /// A token, verified by the token service (`auth::token::service`) when one is configured.
    Bearer(&'a str),
}

/// Never prints the password or the token: these values travel near log lines.
impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user:?}, <password>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<token>)"),
        }
    }
}

/// Why a header could not be read as credentials; the client sees this text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Reads an `Authorization` header value.
pub fn parse(header: &str) -> Result<Credentials<'_>, Malformed> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let rest = rest.trim_start();
    if scheme.eq_ignore_ascii_case("basic") {
        basic(rest)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        match rest {
            "" => Err(Malformed("a Bearer header without a token")),
            token => Ok(Credentials::Bearer(token)),
        }
    } else {
        Err(Malformed(
            "an Authorization scheme other than Basic or Bearer",
        ))
    }
}

fn basic(encoded: &str) -> Result<Credentials<'static>, Malformed> {
    if encoded.is_empty() {
        return Err(Malformed("a Basic header without credentials"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| Malformed("Basic credentials that are not base64"))?;
    let text =
        String::from_utf8(bytes).map_err(|_| Malformed("Basic credentials that are not UTF-8"))?;
    let Some((user, password)) = text.split_once(':') else {
        return Err(Malformed(
            "Basic credentials without a : between user and password",
        ));
    };
    if user.is_empty() {
        return Err(Malformed("Basic credentials with an empty user name"));
    }
    Ok(Credentials::Basic {
        user: user.to_string(),
        password: password.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn basic_of(user: &str, password: &str) -> Credentials<'static> {
        Credentials::Basic {
            user: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn basic_headers() {
        let ok = |h: String, u: &str, p: &str| assert_eq!(parse(&h), Ok(basic_of(u, p)), "{h}");
        ok(format!("Basic {}", b64("alice:secret")), "alice", "secret");
        ok(format!("basic {}", b64("alice:secret")), "alice", "secret");
        ok(
            format!("BASIC   {}  ", b64("alice:secret")),
            "alice",
            "secret",
        );
        // the password may hold colons and be empty; UTF-8 passes through
        ok(format!("Basic {}", b64("bob:a:b:c")), "bob", "a:b:c");
        ok(format!("Basic {}", b64("bob:")), "bob", "");
        ok(format!("Basic {}", b64("zoë:pässwört")), "zoë", "pässwört");
    }

    #[test]
    fn malformed_headers() {
        let bad = |h: &str| parse(h).expect_err(h);
        assert_eq!(
            bad("Basic"),
            Malformed("a Basic header without credentials")
        );
        assert_eq!(
            bad("Basic "),
            Malformed("a Basic header without credentials")
        );
        assert!(bad("Basic !!!").0.contains("base64"));
        assert!(bad(&format!("Basic {}", b64("nocolon"))).0.contains(':'));
        assert!(bad(&format!("Basic {}", b64(":pw")))
            .0
            .contains("empty user"));
        let latin1 = base64::engine::general_purpose::STANDARD.encode(b"u:\xe9");
        assert!(bad(&format!("Basic {latin1}")).0.contains("UTF-8"));
        assert!(bad("Digest username=x").0.contains("scheme"));
        assert!(bad("").0.contains("scheme"));
        assert!(bad("Bearer").0.contains("without a token"));
        // base64 without its padding is not standard base64
        assert!(bad("Basic YWxpY2U6c2VjcmV0MQ").0.contains("base64"));
    }

    #[test]
    fn bearer_tokens_and_no_secret_in_debug() {
        assert_eq!(parse("Bearer abc.def"), Ok(Credentials::Bearer("abc.def")));
        assert_eq!(parse("bearer abc"), Ok(Credentials::Bearer("abc")));
        let shown = format!("{:?}", basic_of("alice", "hunter2"));
        assert!(
            shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(!format!("{:?}", Credentials::Bearer("s3cr3t")).contains("s3cr3t"));
    }
}
