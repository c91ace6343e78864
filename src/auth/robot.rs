//! Robot tokens for CI fleets: a secret that works as the password of Basic credentials
//! (`docker login -u ci-builder -p ryt_...`), whose scopes are its only rules.
//!
//! - **The secret** is `ryt_` and 32 random bytes in unpadded base64url ([`generate`]): the
//!   prefix lets [`super::Auth::identify`] tell a robot secret from a user's password without
//!   a lookup (and lets secret scanners find leaked ones); 256 random bits cannot be guessed.
//! - **Stored as SHA-256** ([`hash`]), never in clear. Not bcrypt: bcrypt's cost exists to
//!   slow the guessing of human passwords, which are short and drawn from small spaces; a
//!   random 256-bit secret has no such space to search, so one fast hash is as safe, and it
//!   keeps a check at about a microsecond on the event loop, on every request, with no cache
//!   that would have to be told about a revocation.
//! - **Scopes** are `repository:PATTERN:ACTIONS` ([`parse_scope`]): the patterns of the access
//!   rules ([`Pattern`], `ci/*`, `team/**`) and the actions `pull`, `push`, `delete` or `*`.
//!   A token may do in a repository what the scopes matching it grant together; the access
//!   rules of the configuration are not consulted (the token's scopes are its rules).
//! - **Revocation reaches the server** through the metadata: `ringyard token revoke` commits
//!   in another process, and [`Robots`] asks the engine to pick up such commits
//!   ([`crate::meta::Engine::refresh_robot_tokens`], one `PRAGMA data_version` when nothing
//!   changed, measured at about 17 µs with its round trip to the writer thread) at most every
//!   [`REFRESH`]: a request made more than that after a revocation is refused, on every worker
//!   at once, since they share one index.

use super::rules::{Action, Actions, Grants, Pattern};
use crate::meta::{Meta, RobotToken, WriteOp};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What every robot secret starts with.
pub const PREFIX: &str = "ryt_";

/// How stale the server's view of the robot tokens may be (milliseconds): the longest a
/// revocation made by another process goes unseen.
pub const REFRESH: i64 = 500;

/// A token's last use is written at most this often (milliseconds): `token list` shows it
/// to the minute, and a busy CI fleet costs no write per request.
const NOTE_USE_EVERY: i64 = 60_000;

/// Whether a password is a robot secret (and so checked against the robot tokens only).
pub fn looks_like(password: &str) -> bool {
    password.starts_with(PREFIX)
}

/// A new secret: [`PREFIX`] and 32 random bytes, base64url without padding.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("the system's random source");
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!("{PREFIX}{encoded}")
}

pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares every byte whatever the first difference: the time does not tell how much of a
/// guess was right.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A name as the commands accept it: what a user name of Basic credentials may be, kept to
/// characters that need no quoting in a shell or a log.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"-_.@".contains(&b);
    if name.is_empty() || name.len() > 64 || !name.bytes().all(ok) {
        return Err(format!(
            "{name:?}: a robot token name is 1 to 64 letters, digits and - _ . @"
        ));
    }
    Ok(())
}

/// One scope: `repository:PATTERN:ACTIONS`, split at the first and the last `:` as Docker
/// scopes are.
pub fn parse_scope(text: &str) -> Result<(Pattern, Actions), String> {
    let bad = |why: &str| format!("scope {text:?}: {why} (write repository:PATTERN:pull,push)");
    let (kind, rest) = text.split_once(':').ok_or_else(|| bad("no type"))?;
    if kind != "repository" {
        return Err(bad("the type must be repository"));
    }
    let (pattern, actions) = rest.rsplit_once(':').ok_or_else(|| bad("no actions"))?;
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/*".contains(&b);
    if !pattern.bytes().all(allowed) {
        return Err(bad("a pattern is a repository name with * and **"));
    }
    let pattern = Pattern::parse(pattern).map_err(|e| bad(&e))?;
    let mut set = Actions::NONE;
    for word in actions.split(',') {
        set = match (word, Action::parse(word)) {
            ("*", _) => Actions::ALL,
            (_, Some(a)) => set.with(a),
            _ => return Err(bad(&format!("unknown action {word:?}"))),
        };
    }
    Ok((pattern, set))
}

/// Every scope of a token, or the first that does not read.
pub fn parse_scopes<S: AsRef<str>>(scopes: &[S]) -> Result<Grants, String> {
    scopes
        .iter()
        .map(|s| parse_scope(s.as_ref()))
        .collect::<Result<Vec<_>, _>>()
        .map(Grants::new)
}

/// A robot token whose secret was presented and holds: who it is and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Robot {
    pub name: Arc<str>,
    pub grants: Grants,
}

/// Why a robot secret was not accepted. The reason goes to the operator's log only: the
/// client learns as little as from a wrong password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    WrongSecret,
    Revoked,
    Expired,
    /// Scopes stored that do not read (written by hand into the database).
    Unreadable,
    /// The metadata could not be asked (the process is stopping, the database failing).
    Unavailable,
}

/// The decision, pure: `stored` (None: no such token) against the presented secret at `now`.
pub fn judge(stored: Option<&RobotToken>, secret: &str, now: i64) -> Result<Grants, Refusal> {
    let presented = hash(secret);
    let Some(token) = stored else {
        // the same hash and comparison as for a known name
        let _ = same(&presented, &[0; 32]);
        return Err(Refusal::Unknown);
    };
    if !same(&presented, &token.secret_hash) {
        return Err(Refusal::WrongSecret);
    }
    if token.revoked.is_some() {
        return Err(Refusal::Revoked);
    }
    if token.expires.is_some_and(|e| e <= now) {
        return Err(Refusal::Expired);
    }
    parse_scopes(&token.scopes).map_err(|_| Refusal::Unreadable)
}

/// The server's side: checks secrets against the metadata's robot tokens, keeping its view
/// of them at most [`REFRESH`] old, and notes uses.
pub struct Robots {
    meta: Meta,
    /// Unix milliseconds at which the next check asks the engine for other processes'
    /// commits; the check that moves it on does the asking.
    next_refresh: AtomicI64,
    /// Per token, when its use was last written.
    noted: Mutex<HashMap<Arc<str>, i64>>,
}

impl Robots {
    pub fn new(meta: Meta) -> Robots {
        Robots {
            meta,
            next_refresh: AtomicI64::new(0),
            noted: Mutex::new(HashMap::new()),
        }
    }

    pub async fn verify(&self, name: &str, secret: &str) -> Result<Robot, Refusal> {
        let now = crate::meta::now_millis();
        let due = self.next_refresh.load(Ordering::Acquire);
        if now >= due
            && self
                .next_refresh
                .compare_exchange(due, now + REFRESH, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            if let Err(e) = self.meta.refresh_robot_tokens().await {
                // the next check tries again rather than trusting a view that may be stale
                self.next_refresh.store(0, Ordering::Release);
                crate::log::warn(format_args!("robot tokens cannot be refreshed: {e}"));
                return Err(Refusal::Unavailable);
            }
        }
        let stored = self
            .meta
            .robot_token(name)
            .await
            .map_err(|_| Refusal::Unavailable)?;
        let grants = judge(stored.as_ref(), secret, now).inspect_err(|r| {
            crate::log::info(format_args!("robot token {name:?} refused: {r:?}"));
        })?;
        let name: Arc<str> = name.into();
        self.note_use(&name, now);
        Ok(Robot { name, grants })
    }

    /// Writes the use without waiting for it, at most every [`NOTE_USE_EVERY`] per token.
    fn note_use(&self, name: &Arc<str>, now: i64) {
        let mut noted = self.noted.lock().unwrap_or_else(PoisonError::into_inner);
        match noted.get(name) {
            Some(&at) if now - at < NOTE_USE_EVERY => return,
            _ => noted.insert(name.clone(), now),
        };
        drop(noted);
        drop(self.meta.write(WriteOp::RobotTokenUsed {
            name: name.to_string(),
            at: now,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking::block_on;

    fn token(secret: &str, scopes: &[&str]) -> RobotToken {
        RobotToken {
            name: "ci".into(),
            secret_hash: hash(secret),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            created: 1_000,
            expires: Some(2_000),
            revoked: None,
            last_used: None,
        }
    }

    #[test]
    fn secrets_are_prefixed_random_and_hash_to_what_is_stored() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(looks_like(&a) && !looks_like("hunter2"));
        assert_eq!(a.len(), PREFIX.len() + 43, "{a}");
        assert!(a[PREFIX.len()..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        // the known SHA-256 of "abc"
        assert_eq!(hash("abc")[..4], [0xba, 0x78, 0x16, 0xbf]);
    }

    #[test]
    fn the_decision() {
        let t = token("ryt_right", &["repository:ci/*:pull,push"]);
        assert!(judge(Some(&t), "ryt_right", 1_500).is_ok());
        assert_eq!(
            judge(Some(&t), "ryt_wrong", 1_500),
            Err(Refusal::WrongSecret)
        );
        assert_eq!(judge(None, "ryt_right", 1_500), Err(Refusal::Unknown));
        assert_eq!(judge(Some(&t), "ryt_right", 2_000), Err(Refusal::Expired));
        let never = RobotToken {
            expires: None,
            ..t.clone()
        };
        assert!(judge(Some(&never), "ryt_right", i64::MAX).is_ok());
        let revoked = RobotToken {
            revoked: Some(1_200),
            ..t.clone()
        };
        assert_eq!(
            judge(Some(&revoked), "ryt_right", 1_500),
            Err(Refusal::Revoked)
        );
        let broken = token("ryt_right", &["nonsense"]);
        assert_eq!(
            judge(Some(&broken), "ryt_right", 1_500),
            Err(Refusal::Unreadable)
        );
    }

    #[test]
    fn scopes_grant_by_pattern_together() {
        let g = parse_scopes(&[
            "repository:ci/*:pull,push",
            "repository:base/**:pull",
            "repository:ci/cache:delete",
            "repository:tools:*",
        ])
        .unwrap();
        let s = |repo: &str| {
            let a = g.allowed(repo);
            [Action::Pull, Action::Push, Action::Delete]
                .iter()
                .map(|&x| if a.contains(x) { x.as_str() } else { "-" })
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(s("ci/app"), "pull,push,-");
        assert_eq!(
            s("ci/cache"),
            "pull,push,delete",
            "every matching scope adds"
        );
        assert_eq!(s("ci/app/sub"), "-,-,-", "* stops at /");
        assert_eq!(s("base/debian/12"), "pull,-,-");
        assert_eq!(s("tools"), "pull,push,delete");
        assert_eq!(s("team/app"), "-,-,-");
    }

    #[test]
    fn bad_scopes_say_why() {
        let bad = |s: &str| parse_scope(s).unwrap_err();
        assert!(bad("registry:catalog:*").contains("type must be repository"));
        assert!(bad("repository:ci/*").contains("no actions"));
        assert!(bad("repository:ci/*:").contains("unknown action"));
        assert!(bad("ci/*:pull").contains("type must be"));
        assert!(bad("repository:ci//x:pull").contains("empty path"));
        assert!(bad("repository:CI/*:pull").contains("pattern"));
        assert!(bad("repository:ci/*:pull,fly").contains("\"fly\""));
        assert!(bad("nothing").contains("no type"));
        assert!(check_name("ci-builder").is_ok());
        assert!(check_name("a b").is_err() && check_name("").is_err());
        assert!(
            check_name("x:y").is_err(),
            "a : would end the Basic user name"
        );
    }

    /// Through an engine: a robot is let in with its grants, its use is noted, and a
    /// revocation in this process is seen by the next check.
    #[test]
    fn robots_check_against_the_engine() {
        let meta = Meta::in_memory();
        let robots = Robots::new(meta.clone());
        let secret = generate();
        let mut t = token(&secret, &["repository:ci/*:pull"]);
        t.expires = None;
        block_on(meta.write(WriteOp::CreateRobotToken(t))).unwrap();
        let robot = block_on(robots.verify("ci", &secret)).unwrap();
        assert_eq!(&*robot.name, "ci");
        assert!(robot.grants.allowed("ci/x").contains(Action::Pull));
        assert!(block_on(meta.robot_token("ci"))
            .unwrap()
            .unwrap()
            .last_used
            .is_some());
        assert_eq!(
            block_on(robots.verify("other", &secret)),
            Err(Refusal::Unknown)
        );
        block_on(meta.write(WriteOp::RevokeRobotToken { name: "ci".into() })).unwrap();
        assert_eq!(
            block_on(robots.verify("ci", &secret)),
            Err(Refusal::Revoked)
        );
    }
}
