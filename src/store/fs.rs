//! The content-addressed tree on this machine: `<root>/blobs/<algorithm>/<first two hex>/<hex>`,
//! the first [`BlobBackend`], and the local hot tier that every pull is served from.
//!
//! A file appears there only by an atomic rename of a fully written, fsynced file, followed by
//! an fsync of its directory, so a crash never leaves a partial blob under its digest's name.
//! Files are never modified after that, which is what makes serving them by `sendfile` or from
//! a mapping safe. Directory work runs on the blocking pool, never on an event loop.

use super::backend::{BlobBackend, Chunks, Fut, Listed};
use super::error::{Error, Result};
use crate::blocking::Pool;
use crate::oci::digest::{Algorithm, Digest, Hasher};
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Pieces of a [`BlobBackend::read`] from this tree.
const READ_PIECE: usize = 1024 * 1024;

pub struct FsBackend {
    blobs_dir: PathBuf,
    staging_dir: PathBuf,
    pool: Pool,
}

impl FsBackend {
    /// The tree's top directories under `root`: `blobs/`, and `uploads/` for staging.
    pub fn top_dirs(root: &Path) -> [PathBuf; 2] {
        [root.join("blobs"), root.join("uploads")]
    }

    /// The tree under `root` as it is: nothing is created (read-only mode starts on a
    /// read-only filesystem).
    pub fn at(root: &Path, pool: Pool) -> FsBackend {
        let [blobs_dir, staging_dir] = Self::top_dirs(root);
        FsBackend {
            blobs_dir,
            staging_dir,
            pool,
        }
    }

    /// The tree under `root`, its top directories created when missing (the tests' way in;
    /// the server's is `BlobStore::open`).
    #[cfg(test)]
    pub fn open(root: &Path, pool: Pool) -> io::Result<FsBackend> {
        for dir in Self::top_dirs(root) {
            fs::create_dir_all(dir)?;
        }
        Ok(Self::at(root, pool))
    }

    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        shard_path(&self.blobs_dir, digest)
    }

    /// Where upload sessions and fetches keep their data while it arrives.
    pub fn staging_dir(&self) -> &Path {
        &self.staging_dir
    }

    /// Moves a fully written and fsynced file of the staging area into the tree under
    /// `digest` (the upload path: no copy). When the blob is there already (same content by
    /// definition), the staged file is removed.
    pub async fn adopt(&self, staged: PathBuf, digest: &Digest) -> Result<()> {
        let dest = self.path_of(digest);
        self.on_pool("committing blob", move || commit_blocking(&staged, &dest))
            .await
    }

    /// Runs blocking file work on the pool and reads its error in the store's terms.
    async fn on_pool<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.pool
            .run(f)
            .await
            .map_err(|_| Error::Io(format!("{what}: the blocking pool stopped")))?
            .map_err(|e| Error::io(what, e))
    }
}

impl BlobBackend for FsBackend {
    fn stat<'a>(&'a self, digest: &'a Digest) -> Fut<'a, u64> {
        let path = self.path_of(digest);
        Box::pin(self.on_pool("examining blob", move || Ok(fs::metadata(path)?.len())))
    }

    fn read<'a>(&'a self, digest: &'a Digest, range: Range<u64>) -> Fut<'a, Box<dyn Chunks + 'a>> {
        let path = self.path_of(digest);
        Box::pin(async move {
            let file = self
                .on_pool("opening blob", move || fs::File::open(path))
                .await?;
            let chunks: Box<dyn Chunks + 'a> = Box::new(FileChunks {
                file: Some(file),
                at: range.start,
                end: range.end,
                pool: &self.pool,
            });
            Ok(chunks)
        })
    }

    /// A hard link into the staging area, renamed into place: no copy where `src` is on the
    /// same filesystem; a copy (then fsync) where it is not.
    fn put_file<'a>(&'a self, src: &'a Path, digest: &'a Digest) -> Fut<'a, ()> {
        let dest = self.path_of(digest);
        let (src, staged) = (
            src.to_path_buf(),
            self.staging_dir
                .join(format!("put-{}", super::uploads::new_id())),
        );
        Box::pin(self.on_pool("storing blob", move || {
            if dest.exists() {
                return Ok(());
            }
            if fs::hard_link(&src, &staged).is_err() {
                fs::copy(&src, &staged)?;
                fs::File::open(&staged)?.sync_all()?;
            }
            commit_blocking(&staged, &dest)
        }))
    }

    /// One trip to the pool per piece, the next piece read ahead so that the last one goes
    /// with the checks, the fsync and the commit: content of one piece (a manifest) is stored
    /// in a single trip.
    fn put_stream<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        src: &'a mut dyn Chunks,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            let staged = self
                .staging_dir
                .join(format!("put-{}", super::uploads::new_id()));
            let mut put = Some(StreamPut {
                staged: staged.clone(),
                dest: self.path_of(digest),
                digest: digest.clone(),
                size,
                file: None,
                hasher: Hasher::new(digest.algorithm()),
                received: 0,
            });
            let result = async {
                let mut piece = src.next().await?;
                loop {
                    let next = match piece {
                        Some(_) => src.next().await?,
                        None => None,
                    };
                    let last = next.is_none();
                    let mut p = put.take().expect("put back after each step");
                    let (p, step) = self
                        .pool
                        .run(move || {
                            let step = p.step(piece, last);
                            (p, step)
                        })
                        .await?;
                    put = Some(p);
                    if step? {
                        return Ok(());
                    }
                    piece = next;
                }
            }
            .await;
            if result.is_err() {
                // Whatever was staged (nothing, if it failed before its first piece), its
                // file closed there too.
                let _ = self
                    .pool
                    .run(move || {
                        drop(put);
                        fs::remove_file(staged)
                    })
                    .await;
            }
            result
        })
    }

    /// Without an fsync of the directory: garbage collection removes thousands of blobs a
    /// pass, and an unlink a crash undoes only brings back bytes that no row records, which
    /// the next pass's orphan sweep removes again.
    fn delete<'a>(&'a self, digest: &'a Digest) -> Fut<'a, bool> {
        let path = self.path_of(digest);
        Box::pin(
            self.on_pool("deleting blob", move || match fs::remove_file(&path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }),
        )
    }

    fn list<'a>(&'a self, after: Option<&'a Digest>, limit: usize) -> Fut<'a, Vec<Listed>> {
        let dir = self.blobs_dir.clone();
        let after = after.cloned();
        Box::pin(self.on_pool("listing blobs", move || {
            list_blocking(&dir, after.as_ref(), limit)
        }))
    }
}

/// A [`BlobBackend::put_stream`] in progress: its blocking side, moved to the pool and back
/// for each piece.
struct StreamPut {
    staged: PathBuf,
    dest: PathBuf,
    digest: Digest,
    size: u64,
    /// Created with the first piece, unless the blob is there already.
    file: Option<fs::File>,
    hasher: Hasher,
    received: u64,
}

impl StreamPut {
    /// Writes `piece` to the staged file; with the `last`, checks size and digest, fsyncs and
    /// commits. `true` when done (also when the blob was there already).
    fn step(&mut self, piece: Option<Vec<u8>>, last: bool) -> Result<bool> {
        let what = "storing blob";
        let file = match &mut self.file {
            Some(f) => f,
            None if self.dest.exists() => return Ok(true),
            None => self
                .file
                .insert(fs::File::create(&self.staged).map_err(|e| Error::io(what, e))?),
        };
        if let Some(piece) = piece {
            self.received += piece.len() as u64;
            if self.received > self.size {
                return Err(self.size_mismatch());
            }
            self.hasher.update(&piece);
            file.write_all(&piece).map_err(|e| Error::io(what, e))?;
        }
        if !last {
            return Ok(false);
        }
        if self.received != self.size {
            return Err(self.size_mismatch());
        }
        let actual =
            std::mem::replace(&mut self.hasher, Hasher::new(self.digest.algorithm())).finish();
        if actual != self.digest {
            return Err(Error::DigestMismatch {
                expected: self.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        file.sync_all().map_err(|e| Error::io(what, e))?;
        commit_blocking(&self.staged, &self.dest).map_err(|e| Error::io(what, e))?;
        self.file = None;
        Ok(true)
    }

    fn size_mismatch(&self) -> Error {
        Error::SizeMismatch {
            expected: self.size,
            actual: self.received,
        }
    }
}

struct FileChunks<'a> {
    /// Taken while a piece is read on the pool.
    file: Option<fs::File>,
    at: u64,
    end: u64,
    pool: &'a Pool,
}

impl Chunks for FileChunks<'_> {
    fn next(&mut self) -> Fut<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            if self.at >= self.end {
                return Ok(None);
            }
            let mut file = self
                .file
                .take()
                .ok_or_else(|| Error::Io("a previous read of this blob failed".into()))?;
            let (at, want) = (
                self.at,
                (self.end - self.at).min(READ_PIECE as u64) as usize,
            );
            let (file, piece) = self
                .pool
                .run(move || {
                    let mut piece = vec![0u8; want];
                    let r = file
                        .seek(io::SeekFrom::Start(at))
                        .and_then(|_| file.read_exact(&mut piece));
                    (file, r.map(|()| piece))
                })
                .await
                .map_err(|_| Error::Io("reading blob: the blocking pool stopped".into()))?;
            let piece = piece.map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    Error::Corrupt("the blob file is shorter than the range read".into())
                }
                _ => Error::io("reading blob", e),
            })?;
            self.file = Some(file);
            self.at += piece.len() as u64;
            Ok(Some(piece))
        })
    }
}

/// Walks the tree in digest order: algorithms, then shards, then files, each sorted, skipping
/// whole shards that sort before `after`.
fn list_blocking(dir: &Path, after: Option<&Digest>, limit: usize) -> io::Result<Vec<Listed>> {
    let mut out = Vec::new();
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        let alg_dir = dir.join(algorithm.as_str());
        for shard in sorted_names(&alg_dir)? {
            let shard_dir = alg_dir.join(&shard);
            if let Some(a) = after {
                let a_shard = &a.hex()[..2];
                if a.algorithm() == algorithm && shard.as_str() < a_shard {
                    continue;
                }
            }
            for name in sorted_names(&shard_dir)? {
                // Only complete names of valid digests are blobs; anything else is not ours.
                let Ok(digest) = Digest::parse(&format!("{}:{name}", algorithm.as_str())) else {
                    continue;
                };
                if after.is_some_and(|a| digest <= *a) {
                    continue;
                }
                let meta = match fs::metadata(shard_dir.join(&name)) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(i64::MAX, |d| d.as_millis() as i64);
                out.push(Listed {
                    digest,
                    size: meta.len(),
                    modified,
                });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

fn sorted_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect::<Vec<_>>(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    names.sort();
    Ok(names)
}

pub fn shard_path(blobs_dir: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    blobs_dir
        .join(digest.algorithm().as_str())
        .join(&hex[..2])
        .join(hex)
}

/// rename + fsync of the directory (and of the parents we had to create), in that order, so
/// the name is durable before the caller acknowledges anything.
pub(crate) fn commit_blocking(staged: &Path, dest: &Path) -> io::Result<()> {
    if dest.exists() {
        fs::remove_file(staged)?;
        return Ok(());
    }
    let shard = dest
        .parent()
        .ok_or_else(|| io::Error::other("blob path has no parent"))?;
    if !shard.exists() {
        fs::create_dir_all(shard)?;
        if let Some(alg_dir) = shard.parent() {
            fsync_dir(alg_dir)?;
            if let Some(blobs) = alg_dir.parent() {
                fsync_dir(blobs)?;
            }
        }
    }
    fs::rename(staged, dest)?;
    fsync_dir(shard)?;
    if let Some(staging) = staged.parent() {
        // The source directory lost an entry; not needed for durability of the blob, but keeps
        // a restart from seeing a stale staged name.
        let _ = fsync_dir(staging);
    }
    Ok(())
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_layout() {
        let d = Digest::sha256_of(b"hello");
        let p = shard_path(Path::new("/r/blobs"), &d);
        assert_eq!(
            p,
            Path::new("/r/blobs/sha256/2c/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
    }

    #[test]
    fn the_filesystem_backend_passes_the_backend_suite() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FsBackend::open(dir.path(), Pool::new(2, "t").unwrap()).unwrap();
        let staging = backend.staging_dir().to_path_buf();
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .build()
            .unwrap();
        rt.block_on(super::super::backend::suite(&backend, &staging));
        // Stray names in the tree (a crash's leftovers, someone's editor) are not blobs.
        let shard = dir.path().join("blobs/sha256/ab");
        fs::create_dir_all(&shard).unwrap();
        fs::write(shard.join("not-a-digest"), b"x").unwrap();
        let listed = rt.block_on(backend.list(None, 10)).unwrap();
        assert_eq!(listed.len(), 2);
    }
}
