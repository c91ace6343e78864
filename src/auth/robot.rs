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
//! - **Refresh tokens** (`docker login` with the token service on) are bound to a token's
//!   [`Stamp`]: its credential version is a digest of the stored record's secret hash,
//!   creation and expiry, so a token recreated under the same name is another credential, and
//!   [`Robots::current`] refuses the refresh token of a revoked, expired or replaced one with
//!   the same view of the metadata as a secret's check.

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

/// A robot token whose secret (or refresh token) was presented and holds: who it is, what it
/// may do, and which record it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Robot {
    pub name: Arc<str>,
    pub grants: Grants,
    pub stamp: Stamp,
}

/// Which stored record a robot was admitted by: what a refresh token issued to it is bound
/// to. Kept rather than the digest so that a request that asks for no refresh token pays no
/// second hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Stamp {
    secret_hash: [u8; 32],
    created: i64,
    /// Unix milliseconds, as stored.
    expires: Option<i64>,
}

impl Stamp {
    fn of(token: &RobotToken) -> Stamp {
        Stamp {
            secret_hash: token.secret_hash,
            created: token.created,
            expires: token.expires,
        }
    }

    /// The credential version of this record: 24 hex digits of a SHA-256 over its secret
    /// hash, creation and expiry. Another secret or another creation (a token recreated under
    /// the same name) is another version. It reveals nothing usable: the secret hash is the
    /// digest of 256 random bits, and this is a digest of that.
    pub fn credential_version(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"ringyard robot token\0");
        h.update(self.secret_hash);
        h.update(self.created.to_be_bytes());
        match self.expires {
            Some(e) => {
                h.update([1]);
                h.update(e.to_be_bytes());
            }
            None => h.update([0]),
        }
        h.finalize()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// When the token expires, in unix seconds (rounded down, so that nothing issued for it
    /// outlives it); None: never.
    pub fn expires_secs(&self) -> Option<i64> {
        self.expires.map(|ms| ms.div_euclid(1000))
    }
}

/// Without the hash, as [`RobotToken`]'s own.
impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stamp")
            .field("created", &self.created)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
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
    /// A refresh token of another record of that name (revoked and created again since).
    Replaced,
}

/// The decision, pure: `stored` (None: no such token) against the presented secret at `now`.
pub fn judge(stored: Option<&RobotToken>, secret: &str, now: i64) -> Result<Robot, Refusal> {
    let presented = hash(secret);
    let Some(token) = stored else {
        // the same hash and comparison as for a known name
        let _ = same(&presented, &[0; 32]);
        return Err(Refusal::Unknown);
    };
    if !same(&presented, &token.secret_hash) {
        return Err(Refusal::WrongSecret);
    }
    standing(token, now)
}

/// The decision on a refresh token, pure: `stored` against the credential version the
/// refresh token was issued for (`version`, from its signed claims, so no secret to compare
/// in constant time), at `now`.
pub fn judge_refresh(
    stored: Option<&RobotToken>,
    version: &str,
    now: i64,
) -> Result<Robot, Refusal> {
    let token = stored.ok_or(Refusal::Unknown)?;
    if Stamp::of(token).credential_version() != version {
        return Err(Refusal::Replaced);
    }
    standing(token, now)
}

/// A token that was identified: admitted unless revoked or expired, with its current scopes.
fn standing(token: &RobotToken, now: i64) -> Result<Robot, Refusal> {
    if token.revoked.is_some() {
        return Err(Refusal::Revoked);
    }
    if token.expires.is_some_and(|e| e <= now) {
        return Err(Refusal::Expired);
    }
    Ok(Robot {
        name: token.name.as_str().into(),
        grants: parse_scopes(&token.scopes).map_err(|_| Refusal::Unreadable)?,
        stamp: Stamp::of(token),
    })
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

    /// The robot whose `secret` was presented as `name`'s password.
    pub async fn verify(&self, name: &str, secret: &str) -> Result<Robot, Refusal> {
        let now = crate::meta::now_millis();
        let stored = self.stored(name, now).await?;
        self.admit(name, now, judge(stored.as_ref(), secret, now))
    }

    /// The robot `name` as it stands now, if it is still the record of credential `version`
    /// (the refresh token's): its current scopes, or why it is refused.
    pub async fn current(&self, name: &str, version: &str) -> Result<Robot, Refusal> {
        let now = crate::meta::now_millis();
        let stored = self.stored(name, now).await?;
        self.admit(name, now, judge_refresh(stored.as_ref(), version, now))
    }

    /// The record of `name`, from a view of the metadata at most [`REFRESH`] old.
    async fn stored(&self, name: &str, now: i64) -> Result<Option<RobotToken>, Refusal> {
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
        self.meta
            .robot_token(name)
            .await
            .map_err(|_| Refusal::Unavailable)
    }

    /// Logs a refusal; notes an admission's use.
    fn admit(
        &self,
        name: &str,
        now: i64,
        decided: Result<Robot, Refusal>,
    ) -> Result<Robot, Refusal> {
        let robot = decided.inspect_err(|r| {
            crate::log::info(format_args!("robot token {name:?} refused: {r:?}"));
        })?;
        self.note_use(&robot.name, now);
        Ok(robot)
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
    fn a_refresh_token_holds_only_for_the_same_record() {
        let t = token("ryt_right", &["repository:ci/*:pull,push"]);
        let version = Stamp::of(&t).credential_version();
        assert_eq!(version.len(), 24);
        let robot = judge_refresh(Some(&t), &version, 1_500).unwrap();
        assert_eq!(robot, judge(Some(&t), "ryt_right", 1_500).unwrap());
        assert_eq!(robot.stamp.credential_version(), version);
        assert_eq!(robot.stamp.expires_secs(), Some(2));
        assert_eq!(
            judge_refresh(Some(&t), &version, 2_000),
            Err(Refusal::Expired)
        );
        assert_eq!(judge_refresh(None, &version, 1_500), Err(Refusal::Unknown));
        let revoked = RobotToken {
            revoked: Some(1_200),
            ..t.clone()
        };
        assert_eq!(
            judge_refresh(Some(&revoked), &version, 1_500),
            Err(Refusal::Revoked)
        );
        // Created again under the name: another secret, or the same hash at another time,
        // or another expiry, is another credential.
        let others = [
            token("ryt_other", &["repository:ci/*:pull,push"]),
            RobotToken {
                created: 1_001,
                ..t.clone()
            },
            RobotToken {
                expires: None,
                ..t.clone()
            },
        ];
        for other in others {
            assert_ne!(Stamp::of(&other).credential_version(), version);
            assert_eq!(
                judge_refresh(Some(&other), &version, 1_500),
                Err(Refusal::Replaced)
            );
        }
        // Scopes changed in place (by hand in the database): the current ones count.
        let narrowed = RobotToken {
            scopes: vec!["repository:ci/*:pull".into()],
            ..t.clone()
        };
        let now = judge_refresh(Some(&narrowed), &version, 1_500).unwrap();
        assert!(!now.grants.allowed("ci/x").contains(Action::Push));
        // Seconds round down, so nothing issued for the token outlives it.
        let odd = RobotToken {
            expires: Some(2_999),
            ..t.clone()
        };
        assert_eq!(Stamp::of(&odd).expires_secs(), Some(2));
        assert!(!format!("{:?}", Stamp::of(&t)).contains("secret"));
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
        let version = robot.stamp.credential_version();
        assert_eq!(block_on(robots.current("ci", &version)).unwrap(), robot);
        assert_eq!(
            block_on(robots.current("ci", "0123")),
            Err(Refusal::Replaced)
        );
        block_on(meta.write(WriteOp::RevokeRobotToken { name: "ci".into() })).unwrap();
        assert_eq!(
            block_on(robots.verify("ci", &secret)),
            Err(Refusal::Revoked)
        );
        assert_eq!(
            block_on(robots.current("ci", &version)),
            Err(Refusal::Revoked)
        );
    }
}
