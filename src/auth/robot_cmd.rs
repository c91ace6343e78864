//! `ringyard token create|list|revoke`: robot tokens managed in the metadata database of a
//! data directory, from a process of their own. They may run while the registry serves the
//! same directory: SQLite in WAL mode lets this second connection commit, and the server
//! picks the change up within [`super::robot::REFRESH`] (see [`super::robot`]).
//!
//! These functions take the opened metadata and return what to print; `main` opens it from
//! the configuration and prints.

use super::robot::{self, PREFIX};
use crate::meta::{Conflict, Error, Meta, RobotToken, WriteOp};
use std::time::Duration;

/// A new token: the secret (shown once, stored only as its hash) and its record.
pub async fn create(
    meta: &Meta,
    name: &str,
    scopes: &[String],
    expires: Option<Duration>,
    now: i64,
) -> Result<(String, RobotToken), String> {
    robot::check_name(name)?;
    if scopes.is_empty() {
        return Err("a robot token needs at least one --scope".into());
    }
    robot::parse_scopes(scopes)?;
    let secret = robot::generate();
    let expires =
        expires.map(|d| i64::try_from(d.as_millis()).map_or(i64::MAX, |ms| now.saturating_add(ms)));
    let token = RobotToken {
        name: name.to_string(),
        secret_hash: robot::hash(&secret),
        scopes: scopes.to_vec(),
        created: now,
        expires,
        revoked: None,
        last_used: None,
    };
    match meta.write(WriteOp::CreateRobotToken(token.clone())).await {
        Ok(_) => Ok((secret, token)),
        Err(Error::Conflict(Conflict::RobotTokenExists { .. })) => Err(format!(
            "a robot token named {name:?} exists; `ringyard token revoke {name}` first to \
             replace it"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// `true` if a token of that name was active (not yet revoked).
pub async fn revoke(meta: &Meta, name: &str) -> Result<bool, String> {
    let op = WriteOp::RevokeRobotToken {
        name: name.to_string(),
    };
    meta.write(op)
        .await
        .map(|o| o.existed)
        .map_err(|e| e.to_string())
}

/// `active`, `expired` or `revoked` at `now`.
pub fn state(t: &RobotToken, now: i64) -> &'static str {
    if t.revoked.is_some() {
        "revoked"
    } else if t.expires.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

/// The table `token list` prints: a header and one line per token, with no secret nor hash
/// (the metadata holds no secret; the hash is left out too, as it is only of use to a
/// guesser).
pub fn table(tokens: &[RobotToken], now: i64) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "STATE".into(),
        "CREATED".into(),
        "EXPIRES".into(),
        "LAST USED".into(),
        "SCOPES".into(),
    ]];
    for t in tokens {
        rows.push([
            t.name.clone(),
            state(t, now).into(),
            time(Some(t.created)),
            t.expires.map_or("never".into(), |e| time(Some(e))),
            time(t.last_used),
            t.scopes.join(" "),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `2026-12-07T03:25Z`, or `-`: minutes are what an operator reads in a list.
pub fn time(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    let secs = ms.div_euclid(1000);
    let (y, m, d) = crate::log::civil_from_days(secs.div_euclid(86_400));
    let in_day = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}Z",
        in_day / 3600,
        in_day % 3600 / 60
    )
}

/// Whether `text` could be a secret this module made (for tests that look for leaks).
pub fn is_secret_shaped(text: &str) -> bool {
    text.starts_with(PREFIX) && text.len() == PREFIX.len() + 43
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking::block_on;

    #[test]
    fn create_list_revoke() {
        let meta = Meta::in_memory();
        let scopes = vec!["repository:ci/*:pull,push".to_string()];
        let day = Duration::from_secs(86_400);
        let (secret, token) =
            block_on(create(&meta, "ci-builder", &scopes, Some(day), 1_000)).unwrap();
        assert!(is_secret_shaped(&secret));
        assert_eq!(token.expires, Some(1_000 + 86_400_000));
        assert_eq!(token.secret_hash, robot::hash(&secret));
        let again = block_on(create(&meta, "ci-builder", &scopes, None, 2_000)).unwrap_err();
        assert!(again.contains("revoke"), "{again}");
        assert!(block_on(create(&meta, "x", &[], None, 1)).is_err());
        let bad = vec!["repository:ci/*:fly".to_string()];
        assert!(block_on(create(&meta, "x", &bad, None, 1))
            .unwrap_err()
            .contains("fly"));
        assert!(block_on(create(&meta, "a:b", &scopes, None, 1)).is_err());
        let (_, forever) = block_on(create(&meta, "forever", &scopes, None, 1)).unwrap();

        let tokens = block_on(meta.robot_tokens()).unwrap();
        let listed = table(&tokens, 5_000);
        assert!(!listed.contains(&secret));
        assert!(listed.contains("ci-builder  active"), "{listed}");
        assert!(listed.contains("never"), "{listed}");
        assert!(listed.contains("1970-01-01T00:00Z"), "{listed}");
        assert_eq!(state(&token, 1_000 + 86_400_000), "expired");
        assert_eq!(state(&forever, i64::MAX), "active");

        assert!(block_on(revoke(&meta, "ci-builder")).unwrap());
        assert!(!block_on(revoke(&meta, "ci-builder")).unwrap());
        assert!(!block_on(revoke(&meta, "nobody")).unwrap());
        let tokens = block_on(meta.robot_tokens()).unwrap();
        assert!(table(&tokens, 5_000).contains("ci-builder  revoked"));
        // a revoked name can be given to a new token
        assert!(block_on(create(&meta, "ci-builder", &scopes, None, 9_000)).is_ok());
    }

    #[test]
    fn times_read_as_utc_minutes() {
        assert_eq!(time(None), "-");
        assert_eq!(time(Some(0)), "1970-01-01T00:00Z");
        assert_eq!(time(Some(1_796_613_900_000)), "2026-12-07T03:25Z");
    }
}
