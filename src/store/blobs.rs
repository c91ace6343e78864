//! The content-addressed blob tree: `<root>/blobs/<algorithm>/<first two hex>/<hex>`.
//! A file appears there only by an atomic rename of a fully written, fsynced file, followed by
//! an fsync of its directory, so a crash never leaves a partial blob under its digest's name.
//! Files are never modified after that, which is what makes serving them by `sendfile` or from
//! mmap safe. Open blobs are cached per worker; the S3 tier of the scale-out issue plugs in
//! behind the same `open`/`commit` pair, with this tree as its local cache.

use crate::blocking::Pool;
use crate::error::{Error, Result};
use crate::oci::digest::Digest;
use memmap2::Mmap;
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Blobs kept open per worker. Past this the cache is emptied: opening is cheap to redo, and a
/// bound keeps descriptors and address space in check.
const OPEN_CACHE_ENTRIES: usize = 4096;

thread_local! {
    static OPEN: RefCell<HashMap<Digest, Rc<BlobFile>>> = RefCell::new(HashMap::new());
}

/// A committed blob, open for serving. Large bodies go to the socket by `sendfile` straight
/// from the page cache (no copy through this process, no pages mapped into it, so a 10 GB
/// download leaves the RSS flat); small ones (manifests, configs) are read through a mapping,
/// made on first use, so that they leave in the same write as the response head.
pub struct BlobFile {
    file: fs::File,
    len: u64,
    map: OnceCell<Mmap>,
}

impl BlobFile {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn file(&self) -> &fs::File {
        &self.file
    }

    /// The whole content, mapped. Meant for small blobs: every page read stays counted in the
    /// process's RSS while the blob is cached.
    pub fn bytes(&self) -> io::Result<&[u8]> {
        if self.len == 0 {
            return Ok(&[]);
        }
        if let Some(m) = self.map.get() {
            return Ok(m);
        }
        // SAFETY: committed blob files are immutable and never truncated (module docs).
        let m = unsafe { Mmap::map(&self.file)? };
        Ok(self.map.get_or_init(|| m))
    }
}

#[derive(Clone)]
pub struct BlobStore {
    blobs_dir: PathBuf,
    staging_dir: PathBuf,
    pool: Pool,
}

impl BlobStore {
    /// Creates the tree's top directories (at startup, before any event loop runs).
    pub fn open(root: &Path, pool: Pool) -> io::Result<BlobStore> {
        let blobs_dir = root.join("blobs");
        let staging_dir = root.join("uploads");
        fs::create_dir_all(&blobs_dir)?;
        fs::create_dir_all(&staging_dir)?;
        Ok(BlobStore {
            blobs_dir,
            staging_dir,
            pool,
        })
    }

    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        shard_path(&self.blobs_dir, digest)
    }

    /// Where upload sessions keep their data (`<root>/uploads`).
    pub fn staging_dir(&self) -> &Path {
        &self.staging_dir
    }

    /// The blob, open. `Ok(None)` when the file is absent.
    pub fn get(&self, digest: &Digest) -> io::Result<Option<Rc<BlobFile>>> {
        if let Some(b) = OPEN.with(|c| c.borrow().get(digest).cloned()) {
            return Ok(Some(b));
        }
        let file = match fs::File::open(self.path_of(digest)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let blob = Rc::new(BlobFile {
            file,
            len,
            map: OnceCell::new(),
        });
        OPEN.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= OPEN_CACHE_ENTRIES {
                c.clear();
            }
            c.insert(digest.clone(), blob.clone());
        });
        Ok(Some(blob))
    }

    /// Moves a fully written and fsynced file into the tree under `digest`. When the blob is
    /// already there (same content by definition), the staged file is simply removed.
    pub async fn commit(&self, staged: PathBuf, digest: &Digest) -> Result<()> {
        let dest = self.path_of(digest);
        self.pool
            .run(move || commit_blocking(&staged, &dest))
            .await?
            .map_err(|e| Error::io("committing blob", e))
    }

    /// Writes small content (a manifest) durably under its digest. A failed write (a full disk)
    /// leaves no staged file behind.
    pub async fn put_bytes(&self, digest: &Digest, bytes: Vec<u8>) -> Result<()> {
        let dest = self.path_of(digest);
        let staged = self
            .staging_dir
            .join(format!("manifest-{}", crate::store::uploads::new_id()));
        self.pool
            .run(move || -> io::Result<()> {
                if dest.exists() {
                    return Ok(());
                }
                let written = fs::File::create(&staged).and_then(|mut f| {
                    f.write_all(&bytes)?;
                    f.sync_all()
                });
                let result = written.and_then(|()| commit_blocking(&staged, &dest));
                if result.is_err() {
                    let _ = fs::remove_file(&staged);
                }
                result
            })
            .await?
            .map_err(|e| Error::io("writing manifest", e))
    }
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
fn commit_blocking(staged: &Path, dest: &Path) -> io::Result<()> {
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
    fn commit_then_map_empty_and_nonempty() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), Pool::new(1, "t").unwrap()).unwrap();
        for content in [&b""[..], b"some bytes"] {
            let d = Digest::sha256_of(content);
            let staged = store.staging_dir().join("x");
            fs::write(&staged, content).unwrap();
            commit_blocking(&staged, &store.path_of(&d)).unwrap();
            assert!(!staged.exists());
            let b = store.get(&d).unwrap().unwrap();
            assert_eq!(b.len(), content.len() as u64);
            assert_eq!(b.bytes().unwrap(), content);
            // Committing the same content again keeps one copy and removes the staged file.
            fs::write(&staged, content).unwrap();
            commit_blocking(&staged, &store.path_of(&d)).unwrap();
            assert!(!staged.exists());
        }
        assert!(store.get(&Digest::sha256_of(b"absent")).unwrap().is_none());
    }
}
