//! What a start puts on disk (directories, the lock file, a new metadata database), taken back
//! if the start fails: a mistyped `--root` or a port already in use must not leave a tree of
//! empty directories and a stray LOCK behind. Once the server listens, [`Created::keep`] makes
//! it all permanent.

use super::RootLock;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Default)]
pub struct Created {
    /// In creation order; undone in reverse.
    made: Vec<Made>,
    /// Held until the undoing is done, so that no other process takes the data directory while
    /// its lock file is being removed.
    lock: Option<RootLock>,
    kept: bool,
}

enum Made {
    Dir(PathBuf),
    File(PathBuf),
}

impl Created {
    /// `fs::create_dir_all`, remembering each directory it had to create.
    pub fn dir_all(&mut self, path: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut at = Some(path);
        while let Some(p) = at {
            if p.as_os_str().is_empty() || p.exists() {
                break;
            }
            missing.push(p.to_path_buf());
            at = p.parent();
        }
        for dir in missing.into_iter().rev() {
            match fs::create_dir(&dir) {
                Ok(()) => self.made.push(Made::Dir(dir)),
                // Made meanwhile by someone else: not ours to remove.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A file this start created.
    pub fn file(&mut self, path: PathBuf) {
        self.made.push(Made::File(path));
    }

    /// The data directory's lock, held by this guard until the start is over.
    pub fn hold(&mut self, lock: RootLock) {
        self.lock = Some(lock);
    }

    /// The start succeeded: everything stays, and the lock goes to the caller.
    pub fn keep(mut self) -> Option<RootLock> {
        self.kept = true;
        self.lock.take()
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for made in self.made.drain(..).rev() {
            // Best effort: a directory that is not empty holds something this start did not
            // make, and stays.
            let _ = match made {
                Made::Dir(p) => fs::remove_dir(p),
                Made::File(p) => fs::remove_file(p),
            };
        }
        // `lock` is released after this body, with the fields.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_takes_back_only_what_it_made() {
        let tmp = tempfile::tempdir().unwrap();
        let old = tmp.path().join("old");
        fs::create_dir(&old).unwrap();
        let root = old.join("a/b/root");
        {
            let mut c = Created::default();
            c.dir_all(&root).unwrap();
            c.dir_all(&root.join("blobs")).unwrap();
            fs::write(root.join("LOCK"), b"").unwrap();
            c.file(root.join("LOCK"));
            // Not made by this start: it keeps its directory.
            fs::write(old.join("a/other"), b"").unwrap();
        }
        assert!(old.join("a/other").exists());
        assert!(!old.join("a/b").exists());

        let mut c = Created::default();
        c.dir_all(&root).unwrap();
        assert!(c.keep().is_none());
        assert!(root.is_dir());
    }
}
