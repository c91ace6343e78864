//! Values that must never reach a log, an error or `config defaults`: the S3 secret key and
//! the passwords inside `database.url` and `storage.cache.redis_url`. [`Secret`] holds one and
//! shows itself redacted (`Debug`, and through [`redact_url`] for URLs); only
//! [`Secret::expose`], at the one place that connects, gives the text.

use std::fmt;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The text itself, for the client that connects with it; never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How the value may be shown: a URL without its password, anything else as `***`.
    pub fn shown(&self) -> String {
        shown(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

/// `text` as it may be shown: empty stays empty, a URL loses its password
/// ([`redact_url`]), anything else is `***`. Pure.
pub fn shown(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else if text.contains("://") {
        redact_url(text)
    } else {
        "***".into()
    }
}

/// `scheme://user:PASSWORD@host/...?password=P` with both passwords as `***`
/// (`postgres://user:***@host/db`); the rest as it is. Works on text that does not parse as a
/// URL too, since what does not parse is what ends up in an error message. Pure.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(start) = url.find("://").map(|i| i + 3) {
        let rest = &url[start..];
        // The authority ends the URL's way, or where the URL ends inside a message.
        let end = rest
            .find(['/', '?', '#', ' ', ')', '"', '\n'])
            .unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out = format!("{}{}:***{}", &url[..start], &rest[..colon], &rest[at..]);
            }
        }
    }
    // libpq also takes the password as a parameter: `?password=...` (any case).
    let mut from = 0;
    while let Some(i) = out[from..].to_ascii_lowercase().find("password=") {
        let value = from + i + "password=".len();
        let before = out[..from + i].chars().last();
        let end = out[value..]
            .find(['&', '#', ' '])
            .map_or(out.len(), |e| value + e);
        if matches!(before, Some('?' | '&' | ' ') | None) && end > value {
            out.replace_range(value..end, "***");
        }
        from = value;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://user:pw@host/db"),
            "postgres://user:***@host/db"
        );
        assert_eq!(
            redact_url("postgres://user:p%40ss:w@host:5432/db?sslmode=disable"),
            "postgres://user:***@host:5432/db?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://user@host/db"),
            "postgres://user@host/db"
        );
        assert_eq!(
            redact_url("redis://:secret@127.0.0.1:6379"),
            "redis://:***@127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("postgresql://h/db?user=u&password=hunter2&x=1"),
            "postgresql://h/db?user=u&password=***&x=1"
        );
        assert_eq!(
            redact_url("postgres://u:a@b@host/db"),
            "postgres://u:***@host/db",
            "an @ in the password"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(
            redact_url("at redis://:pw@h:1 (for a@b)"),
            "at redis://:***@h:1 (for a@b)",
            "a URL inside a message"
        );
        assert_eq!(
            redact_url("http://h/x@y:z"),
            "http://h/x@y:z",
            "@ in the path"
        );
    }

    #[test]
    fn secrets_show_redacted() {
        let s = Secret::new("wJalrXUtnFEMI");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert_eq!(s.shown(), "***");
        assert_eq!(s.expose(), "wJalrXUtnFEMI");
        let u = Secret::new("postgres://a:b@h/d");
        assert_eq!(format!("{u:?}"), "\"postgres://a:***@h/d\"");
        assert_eq!(Secret::default().shown(), "");
    }
}
