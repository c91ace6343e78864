//! Users from an Apache htpasswd file (`user:hash` per line), bcrypt entries only: the
//! `$2y$`/`$2a$`/`$2b$` hashes that `htpasswd -B` and `ringyard htpasswd add` write. Other
//! kinds (`$apr1$` MD5, `{SHA}`, crypt) are refused with the line named, as distribution does:
//! they are fast to guess. Empty lines and lines starting with `#` are skipped.
//!
//! Parsing is pure ([`parse`]); checking a password ([`Users::verify`]) runs bcrypt and so
//! belongs on a blocking pool, never on an event loop. An unknown user costs one bcrypt of a
//! dummy hash at the file's highest cost, so the time of an answer does not tell whether a
//! user exists. [`Store`] holds the current users and a generation that a reload bumps;
//! [`Watcher`] polls the file and reloads it, keeping the old users (with a warning) when the
//! new file is broken. [`add`] is `ringyard htpasswd add`: one entry written or replaced,
//! atomically.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The users of one version of the file.
pub struct Users {
    hashes: HashMap<String, String>,
    /// Checked against for an unknown user.
    dummy: String,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Users({} entries)", self.hashes.len())
    }
}

/// A problem with the file, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The cost of a bcrypt hash (`$2y$10$...`), if it is one.
fn bcrypt_cost(hash: &str) -> Result<u32, String> {
    let b = hash.as_bytes();
    let kind_ok = b.len() > 4 && b[0] == b'$' && b[1] == b'2' && matches!(b[2], b'y' | b'a' | b'b');
    if !kind_ok || b[3] != b'$' {
        let kind = if hash.starts_with("$apr1$") {
            "an MD5 ($apr1$) hash"
        } else if hash.starts_with("{SHA}") {
            "a SHA-1 ({SHA}) hash"
        } else if hash.starts_with('$') {
            "not a bcrypt hash"
        } else {
            "a crypt or plain-text entry"
        };
        return Err(format!(
            "{kind}; only bcrypt entries ($2y$, $2a$, $2b$) are accepted: write them with \
             `htpasswd -B` or `ringyard htpasswd add`"
        ));
    }
    let cost: u32 = hash
        .get(4..6)
        .and_then(|c| c.parse().ok())
        .filter(|c| (4..=31).contains(c))
        .ok_or("a bcrypt hash without a cost between 04 and 31")?;
    let alphabet = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'/';
    if b.len() != 60 || b[6] != b'$' || !b[7..].iter().all(|&c| alphabet(c)) {
        return Err(
            "a bcrypt hash that is not 60 characters of $2y$NN$ and bcrypt's base64".into(),
        );
    }
    Ok(cost)
}

/// Reads the whole file; the first problem found, with its line.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, LineError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| LineError { line, message };
        let entry = raw.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = entry.split_once(':') else {
            return Err(err("not user:hash".into()));
        };
        if user.is_empty() {
            return Err(err("an empty user name".into()));
        }
        bcrypt_cost(hash).map_err(|m| err(format!("user {user:?}: {m}")))?;
        if let Some(first) = seen.insert(user, line) {
            return Err(err(format!("user {user:?} again (first on line {first})")));
        }
        out.push((user.to_string(), hash.to_string()));
    }
    Ok(out)
}

impl Users {
    /// The users of `entries`, with a dummy hash at their highest cost (made here: one bcrypt,
    /// off the event loops since files are read on the start-up or watcher thread).
    pub fn new(entries: Vec<(String, String)>) -> Users {
        let cost = entries
            .iter()
            .filter_map(|(_, h)| bcrypt_cost(h).ok())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let dummy = bcrypt::hash("ringyard: no such user", cost).expect("cost checked");
        Users {
            hashes: entries.into_iter().collect(),
            dummy,
        }
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// A version of `user`'s entry that changes when the password does (a digest of its
    /// hash, which is salted): what a refresh token is bound to. None: no such user.
    pub fn credential_version(&self, user: &str) -> Option<String> {
        let hash = self.hashes.get(user)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, hash.as_bytes());
        Some(
            digest.as_ref()[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// Whether `password` is `user`'s. Blocking (bcrypt): call it on a pool. bcrypt compares
    /// its hashes in constant time; an unknown user costs the same bcrypt.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.hashes.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, &self.dummy);
                false
            }
        }
    }
}

/// Reads and parses `path`: `path: line N: ...` on a problem.
pub fn load(path: &Path) -> Result<Users, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("htpasswd file {}: {e}", path.display()))?;
    let entries = parse(&text).map_err(|e| format!("htpasswd file {}: {e}", path.display()))?;
    Ok(Users::new(entries))
}

/// The current users and their generation, shared by the API and the [`Watcher`].
pub struct Store {
    current: Mutex<(u64, Arc<Users>)>,
    /// The generation, readable without the lock (the cache keys on it).
    generation: AtomicU64,
}

impl Store {
    pub fn new(users: Users) -> Store {
        Store {
            current: Mutex::new((0, Arc::new(users))),
            generation: AtomicU64::new(0),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The users with the generation they belong to, read together.
    pub fn snapshot(&self) -> (u64, Arc<Users>) {
        let c = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        (c.0, c.1.clone())
    }

    /// Replaces the users; the new generation.
    pub fn replace(&self, users: Users) -> u64 {
        let mut c = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        c.0 += 1;
        c.1 = Arc::new(users);
        self.generation.store(c.0, Ordering::Release);
        c.0
    }
}

/// What tells that a file changed without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// How often the watcher looks at the file.
pub const POLL: Duration = Duration::from_secs(1);

/// A thread that reloads the file when it changes; stops when dropped.
pub struct Watcher {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Watches `path`, whose current content is in `store`; `on_reload` runs after each
    /// successful reload (the cache forgets what it knew).
    pub fn start(
        path: PathBuf,
        store: Arc<Store>,
        on_reload: impl Fn() + Send + 'static,
    ) -> std::io::Result<Watcher> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let mut seen = stamp(&path);
        let thread = std::thread::Builder::new()
            .name("ringyard-htpasswd".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(POLL)
                {
                    let now = stamp(&path);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    match load(&path) {
                        Ok(users) => {
                            let n = users.len();
                            store.replace(users);
                            on_reload();
                            crate::log::info(format_args!(
                                "htpasswd file {} reloaded: {n} users",
                                path.display()
                            ));
                        }
                        Err(e) => {
                            crate::log::warn(format_args!("{e}; keeping the users read before"))
                        }
                    }
                }
            })?;
        Ok(Watcher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The cost `ringyard htpasswd add` uses unless told: bcrypt's default, about 50 ms here.
pub const ADD_COST: u32 = 10;

/// `text` (a file's content, perhaps empty) with `user`'s entry set to `hash`: the line
/// replaced where the user has one, else appended. Other lines stay as they are, whatever
/// they hold. Pure.
pub fn with_entry(text: &str, user: &str, hash: &str) -> (String, bool) {
    let mut out = String::with_capacity(text.len() + user.len() + hash.len() + 2);
    let mut replaced = false;
    for line in text.lines() {
        let is_user = line.trim_start().split_once(':').map(|(u, _)| u) == Some(user);
        if is_user && !replaced {
            out.push_str(&format!("{user}:{hash}\n"));
            replaced = true;
        } else if !is_user {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(&format!("{user}:{hash}\n"));
    }
    (out, replaced)
}

/// Why a user name cannot go into the file.
pub fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() {
        Err("the user name is empty".into())
    } else if user.contains(':') {
        Err(format!("{user:?}: a user name cannot hold ':'"))
    } else if user.starts_with('#') {
        Err(format!("{user:?}: a user name cannot start with '#'"))
    } else if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!("{user:?}: a user name cannot hold spaces"))
    } else {
        Ok(())
    }
}

/// `ringyard htpasswd add FILE USER`: hashes `password` at `cost` and writes the file with
/// the entry through a temporary file and a rename, so a reader (the watcher of a running
/// registry) sees the old file or the new one. Whether an entry was replaced.
pub fn add(path: &Path, user: &str, password: &str, cost: u32) -> Result<bool, String> {
    check_user(user)?;
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    if super::robot::looks_like(password) {
        // Such a password is checked against the robot tokens, never against this file.
        return Err(format!(
            "a password starting with {:?} is taken for a robot token and could never log in",
            super::robot::PREFIX
        ));
    }
    // $2y$, as `htpasswd -B` writes: every reader of the format knows it.
    let hash = bcrypt::non_truncating_hash_with_result(password, cost)
        .map_err(|e| match e {
            bcrypt::BcryptError::Truncation(_) => {
                "the password is longer than bcrypt's 72 bytes".to_string()
            }
            e => format!("hashing the password: {e}"),
        })?
        .format_for_version(bcrypt::Version::TwoY);
    let (old, mode) = match std::fs::read_to_string(path) {
        Ok(t) => {
            let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode());
            (t, mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o600),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let (text, replaced) = with_entry(&old, user, &hash);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or("FILE names no file")?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })?;
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `htpasswd -Bbn alice secret` (Debian's apache2-utils, cost 5).
    const ALICE: &str = "$2y$05$f7rxD8ZIdTAKk8vqiuRQiOiY2cwmQiQlhx.wK.rvXkQO1R/rsB9b6";

    #[test]
    fn reads_bcrypt_entries() {
        let text = format!("# team\n\nalice:{ALICE}\r\nbob:$2y$04$gY9DZyOvwHAD7i/FaVs1kOWAUIojERJ6pd5f3zGt6NA4e5lIvzEyK\n");
        let entries = parse(&text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0], ("alice".into(), ALICE.into()));
        assert_eq!(entries[1].0, "bob");
    }

    #[test]
    fn refuses_other_hashes_and_broken_lines_naming_the_line() {
        let cases = [
            ("alice:$apr1$x$y\n", 1, "MD5"),
            ("\nalice:{SHA}abc=\n", 2, "SHA-1"),
            ("alice:plaintext\n", 1, "crypt or plain"),
            ("alice\n", 1, "not user:hash"),
            (":$2y$05$x\n", 1, "empty user"),
            (
                "alice:$2y$99$SDyq9rjzP1U8DFJJ/cqEzebBgZ2a5yctBAbq5eBEcmp6DFXrO.5YS\n",
                1,
                "cost",
            ),
            ("alice:$2y$05$short\n", 1, "60 characters"),
        ];
        for (text, line, what) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}");
            assert!(e.message.contains(what), "{text:?}: {e}");
        }
        let twice = format!("alice:{ALICE}\nalice:{ALICE}\n");
        assert_eq!(
            parse(&twice).unwrap_err().to_string(),
            "line 2: user \"alice\" again (first on line 1)"
        );
    }

    #[test]
    fn verifies_htpasswd_written_hashes_and_unknown_users() {
        let users = Users::new(parse(&format!("alice:{ALICE}\n")).unwrap());
        assert!(users.verify("alice", "secret"));
        assert!(!users.verify("alice", "Secret"));
        assert!(!users.verify("alice", ""));
        assert!(!users.verify("mallory", "secret"));
        // the dummy has the file's cost, so an unknown user costs as much
        assert!(users.dummy.starts_with("$2b$05$") || users.dummy.starts_with("$2y$05$"));
    }

    #[test]
    fn entries_are_replaced_or_appended_and_other_lines_kept() {
        let (t, replaced) = with_entry("", "alice", "H1");
        assert_eq!((t.as_str(), replaced), ("alice:H1\n", false));
        let (t, replaced) = with_entry("# c\nalice:H1\nbob:$apr1$x\n", "alice", "H2");
        assert_eq!(
            (t.as_str(), replaced),
            ("# c\nalice:H2\nbob:$apr1$x\n", true)
        );
        let (t, _) = with_entry("bob:X", "carol", "H3");
        assert_eq!(t, "bob:X\ncarol:H3\n");
        // a user whose name is a prefix of another's is not confused with it
        let (t, replaced) = with_entry("alice2:X\n", "alice", "H");
        assert_eq!((t.as_str(), replaced), ("alice2:X\nalice:H\n", false));
    }

    #[test]
    fn user_names() {
        assert!(check_user("alice").is_ok());
        assert!(check_user("ci-bot@example.com").is_ok());
        for bad in ["", "a:b", "a b", "#x", "a\tb"] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn add_writes_a_file_that_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        assert!(!add(&path, "alice", "one", 4).unwrap());
        assert!(add(&path, "alice", "two", 4).unwrap());
        assert!(!add(&path, "bob", "three", 4).unwrap());
        let users = load(&path).unwrap();
        assert_eq!(users.len(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("alice:$2y$04$"), "{text}");
        assert!(users.verify("alice", "two") && !users.verify("alice", "one"));
        assert!(users.verify("bob", "three"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(add(&path, "x", &"p".repeat(80), 4)
            .unwrap_err()
            .contains("72 bytes"));
        assert!(add(&path, "x", "", 4).unwrap_err().contains("empty"));
        assert!(add(&path, "x", "ryt_abc", 4)
            .unwrap_err()
            .contains("robot token"));
        assert_eq!(load(&path).unwrap().len(), 2, "nothing written");
    }
}
