//! Point lookups of many callers answered by one statement per kind.
//!
//! A manifest GET by tag is one key lookup, and 64 connections make 64 of them at once: asked
//! one statement each, the engine threads spend their time on round trips and per-statement
//! overhead, not on the lookups. An engine thread therefore takes every lookup waiting in the
//! queue when it wakes ([`Pending`]), and answers each kind with one statement that joins an
//! `unnest` of the keys (`WITH ORDINALITY` says whose answer a row is).
//!
//! Nothing is cached: each statement reads what was committed when it started, which is after
//! every lookup in it was asked, so a write that resolved (committed, on any node) before a
//! lookup was asked is seen by it. Read-your-writes across nodes holds as it does for a single
//! lookup, and batching only changes how many callers share a round trip.

use super::{col, manifest_row, Fail, Sql, Worker};
use crate::meta::redis_cache::{
    blob_key, decode_manifest, decode_size, encode_manifest, encode_size, manifest_key,
};
use crate::meta::{BlobInfo, Error, ManifestRecord, Result, TagInfo};
use crate::oci::digest::Digest;
use futures_channel::oneshot::Sender;
use postgres::types::ToSql;
use postgres::{Client, Row};
use std::collections::HashMap;
use std::sync::Arc;

/// The most lookups one wake of an engine thread takes from the queue: bounds a statement's
/// size and the wait of the first caller in it.
pub(super) const MAX_BATCH: usize = 256;

/// One caller's lookup and where its answer goes.
pub(super) enum Lookup {
    RepoExists {
        repo: String,
        reply: Sender<Result<bool>>,
    },
    BlobInRepo {
        repo: String,
        digest: Digest,
        reply: Sender<Result<Option<u64>>>,
    },
    Blob {
        digest: Digest,
        reply: Sender<Result<Option<BlobInfo>>>,
    },
    Tag {
        repo: String,
        tag: String,
        reply: Sender<Result<Option<TagInfo>>>,
    },
    Manifest {
        repo: String,
        digest: Digest,
        reply: Sender<Result<Option<Arc<ManifestRecord>>>>,
    },
    /// The manifest a tag points at, in one statement (a GET by tag needs nothing else).
    TaggedManifest {
        repo: String,
        tag: String,
        reply: Sender<Result<Option<Arc<ManifestRecord>>>>,
    },
}

/// Where one caller's answer goes: a found row (or none) becomes what the caller asked for.
trait Reply<T> {
    fn send(self, v: Result<Option<T>>);
}

impl<T> Reply<T> for Sender<Result<Option<T>>> {
    fn send(self, v: Result<Option<T>>) {
        // A caller that stopped waiting is no one's concern.
        let _ = Sender::send(self, v);
    }
}

/// An existence check: found is true.
struct Exists(Sender<Result<bool>>);

impl Reply<()> for Exists {
    fn send(self, v: Result<Option<()>>) {
        let _ = self.0.send(v.map(|found| found.is_some()));
    }
}

/// The lookups of one kind taken in one wake: keys by column, each once, and who waits for
/// each. Callers asking the same key (a fleet pulling one tag) share its row, so a statement's
/// size is the number of keys, not of callers.
struct Group<T, R> {
    first: Vec<String>,
    second: Vec<String>,
    /// Where each key is in `first` and `second`.
    index: HashMap<(String, Option<String>), usize>,
    /// Each caller, with the index of its key.
    replies: Vec<(usize, R)>,
    _found: std::marker::PhantomData<fn() -> T>,
}

impl<T, R> Default for Group<T, R> {
    fn default() -> Self {
        Group {
            first: Vec::new(),
            second: Vec::new(),
            index: HashMap::new(),
            replies: Vec::new(),
            _found: std::marker::PhantomData,
        }
    }
}

impl<T: Clone, R: Reply<T>> Group<T, R> {
    fn push(&mut self, first: String, second: Option<String>, reply: R) {
        let key = (first, second);
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.first.len();
                self.first.push(key.0.clone());
                self.second.extend(key.1.clone());
                self.index.insert(key, i);
                i
            }
        };
        self.replies.push((i, reply));
    }

    fn query(
        &self,
        sql: &mut Sql<'_, Client>,
        query: &'static str,
        read: &impl Fn(&Row) -> Result<T>,
    ) -> Result<Vec<Option<T>>> {
        by_keys(sql, query, &self.first, &self.second, read)
    }

    /// Answers every caller: its key's row (found per key, in key order), or the same error
    /// for all.
    fn answer(self, result: Result<Vec<Option<T>>>) {
        match result {
            Ok(found) => {
                for (i, reply) in self.replies {
                    reply.send(Ok(found.get(i).cloned().flatten()));
                }
            }
            Err(e) => {
                for (_, reply) in self.replies {
                    reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The answer for each key, by `query`: its parameters are the key columns as text arrays
/// (`second` empty for one-column keys), and its last column is the 1-based ordinal of the key
/// a row answers; `read` reads the rest.
fn by_keys<T>(
    sql: &mut Sql<'_, Client>,
    query: &'static str,
    first: &[String],
    second: &[String],
    read: &impl Fn(&Row) -> Result<T>,
) -> Result<Vec<Option<T>>> {
    let mut p: Vec<&(dyn ToSql + Sync)> = vec![&first];
    if !second.is_empty() {
        p.push(&second);
    }
    let rows = sql
        .rows(query, &p)
        .map_err(|f: Fail| f.into_error("metadata read"))?;
    let mut found: Vec<Option<T>> = std::iter::repeat_with(|| None).take(first.len()).collect();
    for row in &rows {
        let i: i64 = col(row, row.len() - 1, "lookup")?;
        let slot = usize::try_from(i - 1)
            .ok()
            .and_then(|i| found.get_mut(i))
            .ok_or_else(|| Error::Corrupt(format!("lookup ordinal {i} out of range")))?;
        *slot = Some(read(row)?);
    }
    Ok(found)
}

type Replies<T> = Sender<Result<Option<T>>>;

/// Every lookup taken in one wake, grouped by kind.
#[derive(Default)]
pub(super) struct Pending {
    repo_exists: Group<(), Exists>,
    blob_in_repo: Group<u64, Replies<u64>>,
    blob: Group<BlobInfo, Replies<BlobInfo>>,
    tag: Group<TagInfo, Replies<TagInfo>>,
    manifest: Group<Arc<ManifestRecord>, Replies<Arc<ManifestRecord>>>,
    tagged_manifest: Group<Arc<ManifestRecord>, Replies<Arc<ManifestRecord>>>,
}

/// The columns [`manifest_row`] reads, from the manifests table aliased `m`, then the ordinal.
macro_rules! manifest_of_key {
    ($from:literal) => {
        concat!(
            "SELECT m.digest, m.media_type, m.artifact_type, m.subject, m.size, m.annotations, \
             m.created, k.i FROM ",
            $from
        )
    };
}

const REPO_EXISTS: &str = "SELECT k.i FROM unnest($1::text[]) WITH ORDINALITY AS k(name, i)
     JOIN repositories r ON r.name = k.name";
const BLOB_IN_REPO: &str =
    "SELECT b.size, k.i FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(repo, digest, i)
     JOIN repository_blobs rb ON rb.repository = k.repo AND rb.digest = k.digest
     JOIN blobs b ON b.digest = rb.digest";
const BLOB: &str = "SELECT b.size, b.last_referenced, k.i
     FROM unnest($1::text[]) WITH ORDINALITY AS k(digest, i)
     JOIN blobs b ON b.digest = k.digest AND b.sweeping IS NULL";
const TAG: &str = "SELECT t.digest, t.updated, k.i
     FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(repo, name, i)
     JOIN tags t ON t.repository = k.repo AND t.name = k.name";
const MANIFEST: &str = manifest_of_key!(
    "unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(repo, digest, i)
     JOIN manifests m ON m.repository = k.repo AND m.digest = k.digest"
);
const TAGGED_MANIFEST: &str = manifest_of_key!(
    "unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(repo, name, i)
     JOIN tags t ON t.repository = k.repo AND t.name = k.name
     JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest"
);

fn size_of(row: &Row) -> Result<u64> {
    crate::meta::sql::size_col("blobs", col(row, 0, "blobs")?)
}

fn blob_of(row: &Row) -> Result<BlobInfo> {
    Ok(BlobInfo {
        size: size_of(row)?,
        last_referenced: col(row, 1, "blobs")?,
    })
}

fn tag_of(row: &Row) -> Result<TagInfo> {
    Ok(TagInfo {
        digest: crate::meta::sql::digest_col("tags", col(row, 0, "tags")?)?,
        updated: col(row, 1, "tags")?,
    })
}

fn manifest_of(row: &Row) -> Result<Arc<ManifestRecord>> {
    manifest_row(row).map(Arc::new)
}

impl Pending {
    pub(super) fn is_empty(&self) -> bool {
        self.repo_exists.replies.is_empty()
            && self.blob_in_repo.replies.is_empty()
            && self.blob.replies.is_empty()
            && self.tag.replies.is_empty()
            && self.manifest.replies.is_empty()
            && self.tagged_manifest.replies.is_empty()
    }

    pub(super) fn add(&mut self, l: Lookup) {
        match l {
            Lookup::RepoExists { repo, reply } => self.repo_exists.push(repo, None, Exists(reply)),
            Lookup::BlobInRepo {
                repo,
                digest,
                reply,
            } => self
                .blob_in_repo
                .push(repo, Some(digest.as_str().to_owned()), reply),
            Lookup::Blob { digest, reply } => {
                self.blob.push(digest.as_str().to_owned(), None, reply)
            }
            Lookup::Tag { repo, tag, reply } => self.tag.push(repo, Some(tag), reply),
            Lookup::Manifest {
                repo,
                digest,
                reply,
            } => self
                .manifest
                .push(repo, Some(digest.as_str().to_owned()), reply),
            Lookup::TaggedManifest { repo, tag, reply } => {
                self.tagged_manifest.push(repo, Some(tag), reply)
            }
        }
    }

    /// Answers every lookup, one statement per kind present, on `w`'s connection; with a
    /// Redis cache, manifests and blob sizes come from it where the database vouches for them.
    pub(super) fn answer(self, w: &mut Worker) {
        fn one<T: Clone, R: Reply<T>>(
            w: &mut Worker,
            g: Group<T, R>,
            query: &'static str,
            read: impl Fn(&Row) -> Result<T>,
        ) {
            if !g.replies.is_empty() {
                let result = w.read(|sql| g.query(sql, query, &read));
                g.answer(result);
            }
        }
        fn manifests<R: Reply<Arc<ManifestRecord>>>(
            w: &mut Worker,
            g: Group<Arc<ManifestRecord>, R>,
            query: &'static str,
            stamps: &'static str,
        ) {
            if w.cache.is_none() {
                return one(w, g, query, manifest_of);
            }
            if !g.replies.is_empty() {
                let result = cached_manifests(w, &g.first, &g.second, stamps);
                g.answer(result);
            }
        }
        one(w, self.repo_exists, REPO_EXISTS, |_| Ok(()));
        if w.cache.is_some() && !self.blob_in_repo.replies.is_empty() {
            let g = self.blob_in_repo;
            let result = cached_sizes(w, &g.first, &g.second);
            g.answer(result);
        } else {
            one(w, self.blob_in_repo, BLOB_IN_REPO, size_of);
        }
        one(w, self.blob, BLOB, blob_of);
        one(w, self.tag, TAG, tag_of);
        manifests(w, self.manifest, MANIFEST, MANIFEST_STAMP);
        manifests(
            w,
            self.tagged_manifest,
            TAGGED_MANIFEST,
            TAGGED_MANIFEST_STAMP,
        );
    }
}

/// A manifest row's version: its `xmin` (the transaction that wrote this version of the row:
/// every update or re-insert changes it) and its creation time (which a wrapped-around xmin
/// would also have to match).
macro_rules! stamp {
    () => {
        "m.xmin::text || ':' || m.created::text"
    };
}

/// Which manifest each key finds and that row's stamp.
const MANIFEST_STAMP: &str = concat!(
    "SELECT m.digest, ",
    stamp!(),
    ", k.i FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(repo, digest, i)
     JOIN manifests m ON m.repository = k.repo AND m.digest = k.digest"
);
const TAGGED_MANIFEST_STAMP: &str = concat!(
    "SELECT m.digest, ",
    stamp!(),
    ", k.i FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(repo, name, i)
     JOIN tags t ON t.repository = k.repo AND t.name = k.name
     JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest"
);
/// Whole rows with their stamps, for the entries Redis did not have right.
const MANIFEST_STAMPED: &str = concat!(
    "SELECT m.digest, m.media_type, m.artifact_type, m.subject, m.size, m.annotations, \
     m.created, ",
    stamp!(),
    ", k.i FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(repo, digest, i)
     JOIN manifests m ON m.repository = k.repo AND m.digest = k.digest"
);
/// Which keys' repositories hold the blob (its size is Redis's, or read with [`BLOB_IN_REPO`]).
const LINKED: &str =
    "SELECT k.i FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(repo, digest, i)
     JOIN repository_blobs rb ON rb.repository = k.repo AND rb.digest = k.digest";

/// Manifests by `stamps` (a query giving each key's digest and row stamp): records from Redis
/// whose stamp is the row's, the rest read whole from the database and stored in Redis.
fn cached_manifests(
    w: &mut Worker,
    repos: &[String],
    second: &[String],
    stamps: &'static str,
) -> Result<Vec<Option<Arc<ManifestRecord>>>> {
    let found: Vec<Option<(String, String)>> = w.read(|sql| {
        by_keys(sql, stamps, repos, second, &|row| {
            Ok((col(row, 0, "manifests")?, col(row, 1, "manifests")?))
        })
    })?;
    let mut out: Vec<Option<Arc<ManifestRecord>>> = vec![None; found.len()];
    let present: Vec<(usize, &String, &String)> = found
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.as_ref().map(|(d, s)| (i, d, s)))
        .collect();
    let keys: Vec<String> = present
        .iter()
        .map(|(i, d, _)| manifest_key(&repos[*i], d))
        .collect();
    let cache = w.cache.as_mut().expect("cached path");
    let entries = cache.get_many(&keys);
    let mut miss: Vec<usize> = Vec::new();
    for (n, (i, _, stamp)) in present.iter().enumerate() {
        let hit = entries
            .as_ref()
            .and_then(|e| e[n].as_deref())
            .and_then(|e| decode_manifest(stamp, e));
        match hit {
            Some(r) => out[*i] = Some(Arc::new(r)),
            None => miss.push(n),
        }
    }
    cache.hits(present.len() - miss.len());
    if miss.is_empty() {
        return Ok(out);
    }
    cache.misses(miss.len());
    let miss_repos: Vec<String> = miss.iter().map(|&n| repos[present[n].0].clone()).collect();
    let miss_digests: Vec<String> = miss.iter().map(|&n| present[n].1.clone()).collect();
    let rows = w.read(|sql| {
        by_keys(sql, MANIFEST_STAMPED, &miss_repos, &miss_digests, &|row| {
            Ok((manifest_row(row)?, col::<String>(row, 7, "manifests")?))
        })
    })?;
    let mut fills = Vec::new();
    for (&n, row) in miss.iter().zip(rows) {
        // None: deleted since the first statement, and so not there now.
        if let Some((record, stamp)) = row {
            fills.push((keys[n].clone(), encode_manifest(&stamp, &record)));
            out[present[n].0] = Some(Arc::new(record));
        }
    }
    if entries.is_some() {
        if let Some(cache) = w.cache.as_mut() {
            cache.put_many(fills);
        }
    }
    Ok(out)
}

/// Sizes of blobs linked in repositories: whether each is linked asked of the database, the
/// size (the same for a digest forever) from Redis, or read with the link and stored.
fn cached_sizes(w: &mut Worker, repos: &[String], digests: &[String]) -> Result<Vec<Option<u64>>> {
    let linked = w.read(|sql| by_keys(sql, LINKED, repos, digests, &|_| Ok(())))?;
    let present: Vec<usize> = (0..linked.len()).filter(|&i| linked[i].is_some()).collect();
    let keys: Vec<String> = present.iter().map(|&i| blob_key(&digests[i])).collect();
    let cache = w.cache.as_mut().expect("cached path");
    let entries = cache.get_many(&keys);
    let mut out = vec![None; linked.len()];
    let mut miss = Vec::new();
    for (n, &i) in present.iter().enumerate() {
        match entries
            .as_ref()
            .and_then(|e| e[n].as_deref())
            .and_then(decode_size)
        {
            Some(size) => out[i] = Some(size),
            None => miss.push(n),
        }
    }
    cache.hits(present.len() - miss.len());
    if miss.is_empty() {
        return Ok(out);
    }
    cache.misses(miss.len());
    let miss_repos: Vec<String> = miss.iter().map(|&n| repos[present[n]].clone()).collect();
    let miss_digests: Vec<String> = miss.iter().map(|&n| digests[present[n]].clone()).collect();
    let sizes = w.read(|sql| by_keys(sql, BLOB_IN_REPO, &miss_repos, &miss_digests, &size_of))?;
    let mut fills = Vec::new();
    for (&n, size) in miss.iter().zip(sizes) {
        if let Some(size) = size {
            fills.push((keys[n].clone(), encode_size(size)));
            out[present[n]] = Some(size);
        }
    }
    if entries.is_some() {
        if let Some(cache) = w.cache.as_mut() {
            cache.put_many(fills);
        }
    }
    Ok(out)
}
