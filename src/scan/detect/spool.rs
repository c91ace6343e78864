//! Temporary files for what must be read at random offsets (an ELF binary's sections) or by
//! path (an SQLite database) without holding it in memory. They live in the system's
//! temporary directory (`TMPDIR`), are readable by the owner only, and are removed when
//! dropped (an executable's copy is unlinked at once and lives as an open handle).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::DetectError;

/// A temporary file removed when dropped.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    /// Creates a new, empty file that no one else has opened.
    pub fn create() -> io::Result<TempFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir();
        let mut last = None;
        for _ in 0..8 {
            let mut random = [0u8; 8];
            getrandom::getrandom(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
            let name = format!(
                "ringyard-scan-{}-{}-{:016x}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                u64::from_le_bytes(random)
            );
            let path = dir.join(name);
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => return Ok(TempFile { path, file }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free temporary file name")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The open file, its name removed: the bytes go when the handle closes.
    pub fn unlink(mut self) -> io::Result<File> {
        std::fs::remove_file(&self.path)?;
        // Nothing left for Drop to remove (an empty path names no file).
        self.path = PathBuf::new();
        self.file.try_clone()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `prefix` then the rest of `body` into `file`. A read error is the layer's and is
/// returned as it is; a write error is the temporary file's, reported with `path`.
pub fn copy(prefix: &[u8], body: &mut dyn Read, file: &mut File, path: &str) -> io::Result<u64> {
    let temp = |source| -> io::Error {
        DetectError::TempFile {
            path: path.to_string(),
            source,
        }
        .into()
    };
    file.write_all(prefix).map_err(temp)?;
    let mut total = prefix.len() as u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        file.write_all(buf.get(..n).unwrap_or(&[])).map_err(temp)?;
        total += n as u64;
    }
    file.flush().map_err(temp)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::detect::elf::ReadAt;

    #[test]
    fn temp_files_go_away() {
        let mut t = TempFile::create().expect("create");
        let path = t.path().to_path_buf();
        let n = copy(b"ab", &mut &b"cdef"[..], t.file(), "x").expect("copy");
        assert_eq!(n, 6);
        assert!(path.exists());
        let file = t.unlink().expect("unlink");
        assert!(!path.exists());
        let mut buf = [0u8; 6];
        assert_eq!(file.read_at(&mut buf, 0).expect("read"), 6);
        assert_eq!(&buf, b"abcdef");

        let t = TempFile::create().expect("create");
        let path = t.path().to_path_buf();
        drop(t);
        assert!(!path.exists());
    }

    #[test]
    fn read_errors_pass_through() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "layer cut short",
                ))
            }
        }
        let mut t = TempFile::create().expect("create");
        let e = copy(b"", &mut Broken, t.file(), "x").expect_err("broken body");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(e.to_string(), "layer cut short");
    }
}
