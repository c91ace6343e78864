//! The Redis cache in front of the PostgreSQL engine (`storage.cache.type: redis`): manifest
//! records and blob sizes, shared by every node.
//!
//! Several nodes write the database and a tag pushed on one must be seen by the next GET on any
//! other, so Redis may never be the only answer to "is it there": a writer whose invalidation
//! failed (Redis down for it alone, a crash between commit and delete) would leave another node
//! serving what is gone. Redis therefore only holds what the database can vouch for cheaply:
//! - a blob's size by digest (`ringyard:v1:blob:<digest>`): content addressing makes it the
//!   same forever; whether a repository holds the blob is still asked of the database;
//! - a manifest record by repository and digest (`ringyard:v1:manifest:<hash of the
//!   repository>:<digest>`), stamped with the version of the row it was read from (the row's
//!   `xmin` and creation time). The database answers every lookup with the row's current
//!   stamp, and a record is used only when the stamps agree, so an entry left behind by any
//!   failure is never served: it is a miss, read again and replaced.
//!
//! A write that changes or removes a manifest deletes its entry after the commit and before it
//! resolves (so a delete has removed it before anything is unlinked); that keeps Redis tidy,
//! and correctness does not hang on it.
//!
//! Redis down: every read is answered from the database alone (slower, never wrong); the
//! outage is logged once when it starts and once when it ends, and counted
//! ([`CacheStats`]). Each engine thread keeps its own connection and, after a failure, tries
//! again at most once a second, so an outage costs the engine threads no connect timeouts.

use super::resp::{self, Value};
use super::ManifestRecord;
use crate::oci::digest::Digest;
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Every key starts with this: the registry's own namespace and the layout's version.
const PREFIX: &str = "ringyard:v1:";

/// How long an entry lives unread-and-unchanged in Redis: bounds what dead entries cost.
const ENTRY_TTL_SECS: &str = "604800";

/// Connect and I/O timeout: a Redis that takes longer is treated as down.
const TIMEOUT: Duration = Duration::from_millis(500);

/// How long after a failure an engine thread waits before trying Redis again.
const RETRY_MS: i64 = 1_000;

/// Where Redis is and how to log in, from a `redis://[[user]:password@]host[:port][/db]` URL.
#[derive(Clone, PartialEq, Eq)]
struct Target {
    addr: String,
    user: Option<String>,
    password: Option<String>,
    db: Option<u32>,
}

/// Never the password: targets travel into log lines.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redis://{}", self.addr)?;
        if let Some(db) = self.db {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

fn parse_url(url: &str) -> std::result::Result<Target, String> {
    let rest = url.strip_prefix("redis://").ok_or_else(|| {
        "a Redis URL starts with redis:// (rediss:// is not supported)".to_string()
    })?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (Some(auth), rest),
        None => (None, rest),
    };
    let (hostport, db) = match rest.split_once('/') {
        Some((h, "")) => (h, None),
        Some((h, db)) => (
            h,
            Some(
                db.parse::<u32>()
                    .map_err(|_| format!("Redis database {db:?} is not a number"))?,
            ),
        ),
        None => (rest, None),
    };
    if hostport.is_empty() {
        return Err("the Redis URL names no host".into());
    }
    let addr = if hostport.starts_with('[') || hostport.matches(':').count() == 1 {
        hostport.to_string()
    } else {
        format!("{hostport}:6379")
    };
    let (user, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
            None => (Some(a.to_string()), None),
        },
    };
    Ok(Target {
        addr,
        user,
        password,
        db,
    })
}

/// Cache figures for /metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups answered with an entry from Redis.
    pub hits: u64,
    /// Lookups whose entry was missing or stale (then read from the database and stored).
    pub misses: u64,
    /// Redis operations that failed or were skipped while Redis was down: each one a read
    /// served by the database alone, or an entry not stored or not deleted.
    pub errors: u64,
    /// Outages seen (Redis went from answering to failing).
    pub outages: u64,
}

/// What every engine thread's [`Session`] shares: the target, whether Redis is down, and the
/// counters.
struct Shared {
    target: Target,
    down: AtomicBool,
    /// Unix ms before which no thread connects again after a failure.
    retry_at: AtomicI64,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    outages: AtomicU64,
}

/// The cache of one engine: give each engine thread a [`Session`]. Cloning shares it.
#[derive(Clone)]
pub struct RedisCache {
    shared: Arc<Shared>,
}

impl RedisCache {
    /// Checks `url` (`redis://[[user]:password@]host[:port][/db]`); connects nothing yet, so a
    /// Redis that is down at start only means reads go to the database until it is up.
    pub fn new(url: &str) -> std::result::Result<RedisCache, String> {
        let target = parse_url(url).map_err(|e| format!("storage.cache.redis_url: {e}"))?;
        Ok(RedisCache {
            shared: Arc::new(Shared {
                target,
                down: AtomicBool::new(false),
                retry_at: AtomicI64::new(0),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                outages: AtomicU64::new(0),
            }),
        })
    }

    pub(crate) fn session(&self) -> Session {
        Session {
            shared: self.shared.clone(),
            conn: None,
        }
    }

    pub fn stats(&self) -> CacheStats {
        let s = &self.shared;
        CacheStats {
            hits: s.hits.load(Ordering::Relaxed),
            misses: s.misses.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            outages: s.outages.load(Ordering::Relaxed),
        }
    }
}

/// One engine thread's connection to Redis, made when first needed and again after a failure.
pub(crate) struct Session {
    shared: Arc<Shared>,
    conn: Option<Conn>,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(t: &Target) -> std::result::Result<Conn, String> {
        let addr = t
            .addr
            .to_socket_addrs()
            .map_err(|e| format!("{t:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{t:?}: no address"))?;
        let stream =
            TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{t:?}: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| format!("{t:?}: {e}"))?;
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
        };
        let mut hello: Vec<Vec<Vec<u8>>> = Vec::new();
        if let Some(p) = &t.password {
            let mut auth = vec![b"AUTH".to_vec()];
            auth.extend(t.user.as_ref().map(|u| u.as_bytes().to_vec()));
            auth.push(p.as_bytes().to_vec());
            hello.push(auth);
        }
        if let Some(db) = t.db {
            hello.push(vec![b"SELECT".to_vec(), db.to_string().into_bytes()]);
        }
        for reply in conn.pipeline(&hello)? {
            if let Value::Error(e) = reply {
                return Err(format!("{t:?}: {e}"));
            }
        }
        Ok(conn)
    }

    /// Sends every command, then reads one reply per command.
    fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>]) -> std::result::Result<Vec<Value>, String> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for c in cmds {
            let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            resp::encode(&mut out, &args);
        }
        self.stream
            .write_all(&out)
            .map_err(|e| format!("write: {e}"))?;
        let mut replies = Vec::with_capacity(cmds.len());
        let mut chunk = [0u8; 16 * 1024];
        while replies.len() < cmds.len() {
            match resp::decode(&self.buf).map_err(|e| format!("reply: {}", e.0))? {
                Some((v, used)) => {
                    self.buf.drain(..used);
                    replies.push(v);
                }
                None => {
                    let n = self
                        .stream
                        .read(&mut chunk)
                        .map_err(|e| format!("read: {e}"))?;
                    if n == 0 {
                        return Err("connection closed by Redis".into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        Ok(replies)
    }
}

impl Session {
    /// Runs `cmds` in one round trip, or None when Redis is down (counted; the first failure
    /// of an outage is logged).
    fn run(&mut self, cmds: &[Vec<Vec<u8>>]) -> Option<Vec<Value>> {
        let s = &*self.shared;
        if self.conn.is_none() {
            if super::now_millis() < s.retry_at.load(Ordering::Relaxed) {
                s.errors.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match Conn::open(&s.target) {
                Ok(c) => self.conn = Some(c),
                Err(e) => return self.failed(&e),
            }
        }
        let conn = self.conn.as_mut()?;
        match conn.pipeline(cmds) {
            Ok(replies) => {
                if s.down.swap(false, Ordering::AcqRel) {
                    crate::log::info(format_args!(
                        "Redis cache {:?} answers again; reads use it again",
                        s.target
                    ));
                }
                Some(replies)
            }
            Err(e) => {
                self.conn = None;
                self.failed(&e)
            }
        }
    }

    fn failed<T>(&mut self, why: &str) -> Option<T> {
        let s = &*self.shared;
        s.errors.fetch_add(1, Ordering::Relaxed);
        s.retry_at
            .store(super::now_millis() + RETRY_MS, Ordering::Relaxed);
        if !s.down.swap(true, Ordering::AcqRel) {
            s.outages.fetch_add(1, Ordering::Relaxed);
            crate::log::warn(format_args!(
                "Redis cache unavailable ({why}): metadata reads are served by the database \
                 alone until it answers again"
            ));
        }
        None
    }

    /// The values of `keys` (None for a missing key), or None when Redis is down.
    pub(crate) fn get_many(&mut self, keys: &[String]) -> Option<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let mut cmd = vec![b"MGET".to_vec()];
        cmd.extend(keys.iter().map(|k| k.as_bytes().to_vec()));
        let reply = self.run(&[cmd])?.pop()?;
        let Value::Array(Some(items)) = reply else {
            return self.failed(&format!("MGET answered {reply:?}"));
        };
        if items.len() != keys.len() {
            return self.failed("MGET answered another number of values");
        }
        Some(
            items
                .into_iter()
                .map(|v| match v {
                    Value::Bulk(b) => b,
                    _ => None,
                })
                .collect(),
        )
    }

    /// Stores the entries (with their time to live), in one round trip; best effort.
    pub(crate) fn put_many(&mut self, entries: Vec<(String, Vec<u8>)>) {
        if entries.is_empty() {
            return;
        }
        let cmds: Vec<Vec<Vec<u8>>> = entries
            .into_iter()
            .map(|(k, v)| {
                vec![
                    b"SET".to_vec(),
                    k.into_bytes(),
                    v,
                    b"EX".to_vec(),
                    ENTRY_TTL_SECS.as_bytes().to_vec(),
                ]
            })
            .collect();
        let _ = self.run(&cmds);
    }

    /// Deletes `keys`; false when Redis could not be told (counted, and harmless: the stamps
    /// keep a left-behind entry from being served).
    pub(crate) fn delete(&mut self, keys: &[String]) -> bool {
        if keys.is_empty() {
            return true;
        }
        let mut cmd = vec![b"DEL".to_vec()];
        cmd.extend(keys.iter().map(|k| k.as_bytes().to_vec()));
        self.run(&[cmd]).is_some()
    }

    pub(crate) fn hits(&self, n: usize) {
        self.shared.hits.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn misses(&self, n: usize) {
        self.shared.misses.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The key of a manifest record: the repository hashed (names run to 255 bytes and more; the
/// hash keeps every key short and of one shape), the digest as it is.
pub(crate) fn manifest_key(repo: &str, digest: &str) -> String {
    let h = Sha256::digest(repo.as_bytes());
    let hex: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}manifest:{hex}:{digest}")
}

pub(crate) fn blob_key(digest: &str) -> String {
    format!("{PREFIX}blob:{digest}")
}

/// A manifest entry: the row's stamp, a newline, the record as JSON.
pub(crate) fn encode_manifest(stamp: &str, r: &ManifestRecord) -> Vec<u8> {
    let json = serde_json::json!({
        "digest": r.digest.as_str(),
        "media_type": r.media_type,
        "size": r.size,
        "artifact_type": r.artifact_type,
        "subject": r.subject.as_ref().map(Digest::as_str),
        "annotations": r.annotations,
        "created": r.created,
    });
    let mut out = stamp.as_bytes().to_vec();
    out.push(b'\n');
    out.extend_from_slice(json.to_string().as_bytes());
    out
}

/// The record of an entry whose stamp is `stamp`; None for another stamp or an entry that
/// does not read back (either way a miss, not an error: the database has the answer).
pub(crate) fn decode_manifest(stamp: &str, entry: &[u8]) -> Option<ManifestRecord> {
    let nl = entry.iter().position(|&b| b == b'\n')?;
    if &entry[..nl] != stamp.as_bytes() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&entry[nl + 1..]).ok()?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str());
    let digest = |k: &str| text(k).map(Digest::parse).transpose().ok();
    Some(ManifestRecord {
        digest: digest("digest")??,
        media_type: text("media_type")?.to_string(),
        size: v.get("size")?.as_u64()?,
        artifact_type: text("artifact_type").map(str::to_string),
        subject: digest("subject")?,
        annotations: match v.get("annotations")? {
            serde_json::Value::Null => None,
            serde_json::Value::Object(m) => Some(m.clone()),
            _ => return None,
        },
        created: v.get("created")?.as_i64()?,
    })
}

pub(crate) fn encode_size(size: u64) -> Vec<u8> {
    size.to_string().into_bytes()
}

pub(crate) fn decode_size(entry: &[u8]) -> Option<u64> {
    std::str::from_utf8(entry).ok()?.parse().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    pub(crate) use crate::testing::redis::RedisServer;

    #[test]
    fn urls_give_address_credentials_and_database() {
        let t = parse_url("redis://localhost").unwrap();
        assert_eq!(t.addr, "localhost:6379");
        let t = parse_url("redis://:s3cret@127.0.0.1:6380/2").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.user, t.password.as_deref(), t.db),
            ("127.0.0.1:6380", None, Some("s3cret"), Some(2))
        );
        let t = parse_url("redis://bob:pw@[::1]:7000/").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.user.as_deref()),
            ("[::1]:7000", Some("bob"))
        );
        assert!(!format!("{t:?}").contains("pw"), "no password in logs");
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("redis://h/x").is_err());
        assert!(parse_url("redis://").is_err());
    }

    #[test]
    fn keys_are_namespaced_and_short() {
        let long = "a/".repeat(200);
        let k = manifest_key(&long, "sha256:ab");
        assert!(k.starts_with("ringyard:v1:manifest:"), "{k}");
        assert!(k.len() < 80, "{k}");
        assert_ne!(k, manifest_key("a/", "sha256:ab"));
        assert_eq!(blob_key("sha256:ab"), "ringyard:v1:blob:sha256:ab");
    }

    #[test]
    fn a_manifest_entry_reads_back_only_with_its_stamp() {
        let mut r = super::super::index::tests::record("m", Some("s"));
        let mut ann = serde_json::Map::new();
        ann.insert("k".into(), serde_json::json!("v"));
        r.annotations = Some(ann);
        r.created = 1234;
        let e = encode_manifest("77:1234", &r);
        assert_eq!(decode_manifest("77:1234", &e), Some(r.clone()));
        assert_eq!(decode_manifest("78:1234", &e), None);
        assert_eq!(decode_manifest("77:1234", b"77:1234\n{"), None);
        r.annotations = None;
        r.subject = None;
        r.artifact_type = None;
        assert_eq!(decode_manifest("1:2", &encode_manifest("1:2", &r)), Some(r));
        assert_eq!(decode_size(&encode_size(42)), Some(42));
    }

    /// One command to `server` on a connection of its own, as an operator's redis-cli would.
    pub(crate) fn raw(server: &RedisServer, args: &[&[u8]]) -> std::result::Result<Value, String> {
        let t = parse_url(&server.url())?;
        let mut c = Conn::open(&t)?;
        let cmd: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        c.pipeline(&[cmd])?.pop().ok_or_else(|| "no reply".into())
    }

    /// A throwaway server ([`crate::testing::redis`]), or the test fails saying what is
    /// missing.
    pub(crate) fn redis() -> RedisServer {
        RedisServer::start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The client against a real server: values round-trip, a missing key is None, a delete
    /// removes; with the server stopped every call fails soft (counted, one outage), and after
    /// a restart (and the retry pause) the same session works again.
    #[test]
    fn a_session_survives_an_outage() {
        let mut server = redis();
        let cache = RedisCache::new(&server.url()).unwrap();
        let mut s = cache.session();
        s.put_many(vec![("ringyard:v1:test:a".into(), b"1".to_vec())]);
        assert_eq!(
            s.get_many(&["ringyard:v1:test:a".into(), "ringyard:v1:test:b".into()]),
            Some(vec![Some(b"1".to_vec()), None])
        );
        assert!(s.delete(&["ringyard:v1:test:a".into()]));
        assert_eq!(s.get_many(&["ringyard:v1:test:a".into()]), Some(vec![None]));
        server.stop();
        assert_eq!(s.get_many(&["ringyard:v1:test:a".into()]), None);
        assert_eq!(s.get_many(&["ringyard:v1:test:a".into()]), None);
        let st = cache.stats();
        assert_eq!(st.outages, 1);
        assert!(st.errors >= 2, "{st:?}");
        server.restart().unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_millis(RETRY_MS as u64 + 100));
        assert_eq!(s.get_many(&["ringyard:v1:test:a".into()]), Some(vec![None]));
        assert_eq!(cache.stats().outages, 1);
    }
}
