//! Reading OSV records from a directory tree of `*.json` files or from a zip of them (the
//! per-ecosystem `all.zip` exports of osv.dev), one file at a time: memory holds one
//! record's text, never the export. A file that is not a record is counted and named in the
//! summary, and the import goes on; only a source that cannot be read at all, or the
//! caller's own refusal of a record, stops it.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use super::record::Record;

/// The largest record file read; osv.dev's largest records (kernel CVEs listing every
/// version) are a few MiB.
pub const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;

/// How many failed files a [`Summary`] names; the rest are only counted.
pub const ERRORS_KEPT: usize = 100;

/// Files done so far, of how many when that is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: Option<u64>,
}

impl Progress {
    /// Once the file at `index` (from 0) of `total` files is done.
    fn after(index: usize, total: u64) -> Progress {
        Progress {
            done: index as u64 + 1,
            total: Some(total),
        }
    }
}

/// A file that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file's path (a directory import) or its name in the zip.
    pub path: String,
    pub reason: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// `*.json` files seen.
    pub files: u64,
    /// Records handed to the caller.
    pub records: u64,
    /// Files that were not records (or not readable).
    pub failed: u64,
    /// The first [`ERRORS_KEPT`] of them.
    pub errors: Vec<FileError>,
}

impl Summary {
    fn fail(&mut self, path: String, reason: String) {
        self.failed += 1;
        if self.errors.len() < ERRORS_KEPT {
            self.errors.push(FileError { path, reason });
        }
    }
}

/// Why an import stopped.
#[derive(Debug)]
pub enum ImportError<E> {
    /// The source could not be opened or listed.
    Source { path: PathBuf, reason: String },
    /// The caller refused a record (its store failed).
    Sink(E),
}

impl<E: fmt::Display> fmt::Display for ImportError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Source { path, reason } => {
                write!(
                    f,
                    "cannot read OSV records from {}: {reason}",
                    path.display()
                )
            }
            ImportError::Sink(e) => write!(f, "storing an OSV record failed: {e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for ImportError<E> {}

/// Imports from `path`: a directory (searched recursively for `*.json`; symbolic links are
/// not followed), a zip file, or a single `.json` file. Each record goes to `on_record` as
/// it is read; `on_progress` hears after each file.
pub fn import<E>(
    path: &Path,
    on_record: impl FnMut(Record) -> Result<(), E>,
    on_progress: impl FnMut(Progress),
) -> Result<Summary, ImportError<E>> {
    let source = |e: io::Error| ImportError::Source {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(source)?;
    if meta.is_dir() {
        return import_dir(path, on_record, on_progress);
    }
    let mut file = File::open(path).map_err(source)?;
    let mut magic = [0u8; 4];
    let is_zip = file.read_exact(&mut magic).is_ok() && magic == *b"PK\x03\x04";
    file.rewind().map_err(source)?;
    if is_zip {
        return import_zip(file, path, on_record, on_progress);
    }
    let mut summary = Summary::default();
    let mut on_record = on_record;
    let mut on_progress = on_progress;
    let shown = path.display().to_string();
    one_file(&mut summary, shown, Ok((meta.len(), file)), &mut on_record)?;
    on_progress(Progress::after(0, 1));
    Ok(summary)
}

/// Imports every `*.json` file under `root`, in path order.
pub fn import_dir<E>(
    root: &Path,
    mut on_record: impl FnMut(Record) -> Result<(), E>,
    mut on_progress: impl FnMut(Progress),
) -> Result<Summary, ImportError<E>> {
    let mut summary = Summary::default();
    let mut files = Vec::new();
    let mut dirs = vec![root.to_owned()];
    let mut first = true;
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if first => {
                return Err(ImportError::Source {
                    path: root.to_owned(),
                    reason: e.to_string(),
                })
            }
            Err(e) => {
                summary.fail(dir.display().to_string(), e.to_string());
                continue;
            }
        };
        first = false;
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    summary.fail(dir.display().to_string(), e.to_string());
                    continue;
                }
            };
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() && is_json(&path.to_string_lossy()) => files.push(path),
                Ok(_) => {}
                Err(e) => summary.fail(path.display().to_string(), e.to_string()),
            }
        }
    }
    files.sort();
    let total = files.len() as u64;
    for (done, path) in files.iter().enumerate() {
        let shown = path.display().to_string();
        let opened = File::open(path).and_then(|f| Ok((f.metadata()?.len(), f)));
        let opened = opened.map_err(|e| e.to_string());
        one_file(&mut summary, shown, opened, &mut on_record)?;
        on_progress(Progress::after(done, total));
    }
    Ok(summary)
}

/// Imports every `*.json` entry of a zip, in the archive's order. `shown` names the zip in
/// errors.
pub fn import_zip<R: Read + Seek, E>(
    reader: R,
    shown: &Path,
    mut on_record: impl FnMut(Record) -> Result<(), E>,
    mut on_progress: impl FnMut(Progress),
) -> Result<Summary, ImportError<E>> {
    let mut archive = zip::ZipArchive::new(reader).map_err(|e| ImportError::Source {
        path: shown.to_owned(),
        reason: format!("not a readable zip: {e}"),
    })?;
    let mut summary = Summary::default();
    let entries: Vec<usize> = (0..archive.len())
        .filter(|&i| {
            matches!(archive.name_for_index(i), Some(Ok(name)) if is_json(&name) && !name.ends_with('/'))
        })
        .collect();
    let total = entries.len() as u64;
    for (done, i) in entries.into_iter().enumerate() {
        let name = archive
            .name_for_index(i)
            .and_then(Result::ok)
            .map(|n| n.into_owned())
            .unwrap_or_default();
        let opened = archive.by_index(i).map(|f| (f.size(), f));
        let opened = opened.map_err(|e| e.to_string());
        one_file(&mut summary, name, opened, &mut on_record)?;
        on_progress(Progress::after(done, total));
    }
    Ok(summary)
}

fn is_json(name: &str) -> bool {
    name.len() > 5
        && name
            .get(name.len() - 5..)
            .is_some_and(|ext| ext.eq_ignore_ascii_case(".json"))
}

/// Reads and parses one file (its declared size and body, or why it could not be opened),
/// counting it; a file that fails is recorded, not fatal.
fn one_file<E>(
    summary: &mut Summary,
    shown: String,
    opened: Result<(u64, impl Read), String>,
    on_record: &mut impl FnMut(Record) -> Result<(), E>,
) -> Result<(), ImportError<E>> {
    summary.files += 1;
    let record = opened.and_then(|(declared, body)| read_record(body, declared));
    match record {
        Ok(record) => {
            on_record(record).map_err(ImportError::Sink)?;
            summary.records += 1;
        }
        Err(reason) => summary.fail(shown, reason),
    }
    Ok(())
}

fn read_record(body: impl Read, declared: u64) -> Result<Record, String> {
    let too_big = || format!("larger than {MAX_RECORD_BYTES} bytes");
    if declared > MAX_RECORD_BYTES {
        return Err(too_big());
    }
    // The declared size may lie (a zip entry's); the cap holds regardless.
    let mut bytes = Vec::with_capacity(declared as usize);
    body.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(too_big());
    }
    Record::parse(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn record(id: &str) -> String {
        format!(
            r#"{{"id": "{id}", "modified": "2024-01-01T00:00:00Z",
                 "affected": [{{"package": {{"ecosystem": "Debian:12", "name": "openssl"}},
                   "ranges": [{{"type": "ECOSYSTEM", "events": [{{"introduced": "0"}}, {{"fixed": "3.0.10"}}]}}]}}]}}"#
        )
    }

    fn collect(
        path: &Path,
    ) -> (
        Result<Summary, ImportError<std::convert::Infallible>>,
        Vec<String>,
        Vec<Progress>,
    ) {
        let mut ids = Vec::new();
        let mut progress = Vec::new();
        let result = import(
            path,
            |r| {
                ids.push(r.id);
                Ok(())
            },
            |p| progress.push(p),
        );
        (result, ids, progress)
    }

    #[test]
    fn a_directory_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("debian/nested")).unwrap();
        std::fs::write(root.join("DSA-1.json"), record("DSA-1")).unwrap();
        std::fs::write(root.join("debian/DSA-2.JSON"), record("DSA-2")).unwrap();
        std::fs::write(root.join("debian/nested/DSA-3.json"), record("DSA-3")).unwrap();
        std::fs::write(root.join("debian/nested/broken.json"), "{\"id\": ").unwrap();
        std::fs::write(root.join("README.md"), "not a record").unwrap();
        std::os::unix::fs::symlink(root, root.join("debian/loop")).unwrap();

        let (result, ids, progress) = collect(root);
        let summary = result.unwrap();
        assert_eq!(ids, ["DSA-1", "DSA-2", "DSA-3"]);
        assert_eq!((summary.files, summary.records, summary.failed), (4, 3, 1));
        assert_eq!(summary.errors.len(), 1);
        assert_eq!(
            summary.errors[0].path,
            root.join("debian/nested/broken.json").display().to_string()
        );
        assert!(
            summary.errors[0]
                .reason
                .starts_with("not an OSV record: EOF while parsing"),
            "{}",
            summary.errors[0]
        );
        assert_eq!(progress.len(), 4);
        assert_eq!(
            progress.last(),
            Some(&Progress {
                done: 4,
                total: Some(4)
            })
        );
    }

    fn zip_of(entries: &[(&str, &[u8], zip::CompressionMethod)]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, body, method) in entries {
            let options = zip::write::SimpleFileOptions::default().compression_method(*method);
            if name.ends_with('/') {
                writer.add_directory(*name, options).unwrap();
            } else {
                writer.start_file(*name, options).unwrap();
                writer.write_all(body).unwrap();
            }
        }
        writer.finish().unwrap().into_inner()
    }

    #[test]
    fn a_zip_export() {
        use zip::CompressionMethod::{Deflated, Stored};
        let a = record("GHSA-aaaa");
        let b = record("GHSA-bbbb");
        let bytes = zip_of(&[
            ("GHSA-aaaa.json", a.as_bytes(), Deflated),
            ("sub/", b"", Stored),
            ("sub/GHSA-bbbb.json", b.as_bytes(), Stored),
            ("GHSA-cccc.json", b"[1, 2]", Deflated),
            ("notes.txt", b"ignored", Deflated),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.zip");
        std::fs::write(&path, &bytes).unwrap();

        let (result, ids, progress) = collect(&path);
        let summary = result.unwrap();
        assert_eq!(ids, ["GHSA-aaaa", "GHSA-bbbb"]);
        assert_eq!((summary.files, summary.records, summary.failed), (3, 2, 1));
        assert_eq!(summary.errors[0].path, "GHSA-cccc.json");
        assert!(summary.errors[0].reason.starts_with("not an OSV record: "));
        assert_eq!(
            progress,
            [1, 2, 3].map(|done| Progress {
                done,
                total: Some(3)
            })
        );
    }

    #[test]
    fn oversized_files_are_refused_without_reading_them_whole() {
        // 17 MiB of spaces compresses to almost nothing: the zip declares its size.
        let big = vec![b' '; (MAX_RECORD_BYTES + 1024 * 1024) as usize];
        let bytes = zip_of(&[
            ("big.json", &big, zip::CompressionMethod::Deflated),
            (
                "ok.json",
                record("OK-1").as_bytes(),
                zip::CompressionMethod::Stored,
            ),
        ]);
        let mut ids = Vec::new();
        let summary = import_zip(
            Cursor::new(bytes),
            Path::new("all.zip"),
            |r| {
                ids.push(r.id);
                Ok::<(), std::convert::Infallible>(())
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(ids, ["OK-1"]);
        assert_eq!(
            summary.errors,
            [FileError {
                path: "big.json".into(),
                reason: format!("larger than {MAX_RECORD_BYTES} bytes"),
            }]
        );
        // A body longer than it declares is cut at the cap all the same.
        let err = read_record(std::io::repeat(b' '), 10).unwrap_err();
        assert_eq!(err, format!("larger than {MAX_RECORD_BYTES} bytes"));
    }

    #[test]
    fn a_single_file_and_errors_that_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("CVE-1.json");
        std::fs::write(&path, record("CVE-1")).unwrap();
        let (result, ids, progress) = collect(&path);
        assert_eq!(result.unwrap().records, 1);
        assert_eq!(ids, ["CVE-1"]);
        assert_eq!(
            progress,
            [Progress {
                done: 1,
                total: Some(1)
            }]
        );

        let missing = dir.path().join("missing");
        let (result, _, _) = collect(&missing);
        let err = result.unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot read OSV records from {}: ",
                missing.display()
            )),
            "{err}"
        );

        let bad_zip = dir.path().join("bad.zip");
        std::fs::write(&bad_zip, b"PK\x03\x04 and then nothing").unwrap();
        let (result, _, _) = collect(&bad_zip);
        assert!(result
            .unwrap_err()
            .to_string()
            .contains("not a readable zip"));

        // The caller's refusal stops the import and comes back as it was.
        let err = import(&path, |_| Err("disk full"), |_| {}).unwrap_err();
        assert!(matches!(err, ImportError::Sink("disk full")));
        assert_eq!(err.to_string(), "storing an OSV record failed: disk full");
    }

    #[test]
    fn errors_beyond_the_kept_ones_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..(ERRORS_KEPT + 5) {
            std::fs::write(dir.path().join(format!("{i:04}.json")), "{}").unwrap();
        }
        let (result, ids, _) = collect(dir.path());
        let summary = result.unwrap();
        assert!(ids.is_empty());
        assert_eq!(summary.failed, ERRORS_KEPT as u64 + 5);
        assert_eq!(summary.errors.len(), ERRORS_KEPT);
    }
}
