//! The layer reader's [`Keeper`]: which files the detectors read, with what limit, and what
//! the view keeps of them.
//!
//! Limits (a file over its limit stops the scan with [`DetectError::TooLarge`] rather than
//! being skipped, so a scan never silently reports fewer packages than the image has):
//!
//! | files | limit | held |
//! | --- | --- | --- |
//! | `os-release` | [`OS_RELEASE_LIMIT`] (1 MiB) | kept until the end |
//! | dpkg, apk databases, `Cargo.lock`, Python and npm metadata | [`TEXT_LIMIT`] (64 MiB) | in memory while parsed |
//! | `rpmdb.sqlite` | [`RPMDB_LIMIT`] (512 MiB) | on disk while read |
//! | ELF executables | [`EXECUTABLE_LIMIT`] (512 MiB) | on disk while read |
//!
//! An executable over its limit is noted, not refused: it is not a file a detector needs,
//! only one that might carry build information.

use std::io::{self, Read};

use super::elf::{read_range, Elf};
use super::spool::{self, TempFile};
use super::{apk, cargo, dpkg, golang, npm, python, rpm};
use super::{DetectError, Found, Kept};
use crate::scan::layer::{FileHead, Keeper};

pub const OS_RELEASE_LIMIT: u64 = 1 << 20;
pub const TEXT_LIMIT: u64 = 64 << 20;
pub const RPMDB_LIMIT: u64 = 512 << 20;
pub const EXECUTABLE_LIMIT: u64 = 512 << 20;

/// What a file is to the detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OsRelease,
    /// `var/lib/dpkg/status`.
    DpkgStatus,
    /// A file in `var/lib/dpkg/status.d/` (distroless images).
    DpkgStatusD,
    ApkInstalled,
    RpmSqlite,
    /// `rpmdb.sqlite-wal`: changes not yet folded into the database.
    RpmSqliteWal,
    /// `Packages` (Berkeley DB, RHEL 8 and older) or `Packages.db` (NDB, SUSE).
    RpmUnread(&'static str),
    PythonMetadata,
    NpmManifest,
    CargoLock,
    /// Any file with an execute bit: read when it turns out to be ELF.
    Executable,
}

const RPM_DIRS: [&str; 2] = ["var/lib/rpm/", "usr/lib/sysimage/rpm/"];

/// What `path` (normalized, no leading `/`) with permission bits `mode` is to the detectors.
pub fn classify(path: &str, mode: u32) -> Option<Kind> {
    if super::OS_RELEASE_PATHS.contains(&path) {
        return Some(Kind::OsRelease);
    }
    match path {
        "var/lib/dpkg/status" => return Some(Kind::DpkgStatus),
        "lib/apk/db/installed" => return Some(Kind::ApkInstalled),
        _ => {}
    }
    if let Some(name) = path.strip_prefix("var/lib/dpkg/status.d/") {
        if !name.is_empty() && !name.contains('/') && !name.ends_with(".md5sums") {
            return Some(Kind::DpkgStatusD);
        }
    }
    if let Some(name) = RPM_DIRS.iter().find_map(|dir| path.strip_prefix(dir)) {
        match name {
            "rpmdb.sqlite" => return Some(Kind::RpmSqlite),
            "rpmdb.sqlite-wal" => return Some(Kind::RpmSqliteWal),
            "Packages" => return Some(Kind::RpmUnread("Berkeley DB")),
            "Packages.db" => return Some(Kind::RpmUnread("NDB")),
            _ => {}
        }
    }
    if python::is_metadata(path) {
        return Some(Kind::PythonMetadata);
    }
    if npm::is_manifest(path) {
        return Some(Kind::NpmManifest);
    }
    if cargo::is_lock(path) {
        return Some(Kind::CargoLock);
    }
    if mode & 0o111 != 0 {
        return Some(Kind::Executable);
    }
    None
}

/// The package detectors, as the layer reader's [`Keeper`].
#[derive(Debug, Default)]
pub struct Detector {
    _private: (),
}

impl Detector {
    pub fn new() -> Detector {
        Detector::default()
    }
}

impl Keeper for Detector {
    type Kept = Kept;

    fn keep(&mut self, head: FileHead<'_>, body: &mut dyn Read) -> io::Result<Option<Kept>> {
        let Some(kind) = classify(head.path, head.mode) else {
            return Ok(None);
        };
        let mut text = |what| read_all(head, body, TEXT_LIMIT, what);
        let found = match kind {
            Kind::OsRelease => {
                let bytes = read_all(head, body, OS_RELEASE_LIMIT, "os-release file")?;
                return Ok(Some(Kept::OsRelease(bytes)));
            }
            Kind::DpkgStatus => dpkg::parse(&text("dpkg status database")?, true),
            Kind::DpkgStatusD => dpkg::parse(&text("dpkg status file")?, false),
            Kind::ApkInstalled => apk::parse(&text("apk installed database")?),
            Kind::PythonMetadata => python::parse(&text("Python package metadata")?),
            Kind::NpmManifest => npm::parse(&text("npm package.json")?),
            Kind::CargoLock => cargo::parse_lock(&text("Cargo.lock")?),
            Kind::RpmSqlite => rpm_sqlite(head, body)?,
            Kind::RpmSqliteWal if head.size > 0 => Found::note(
                "rpm database write-ahead log not read: packages installed last may be missing",
            ),
            Kind::RpmSqliteWal => Found::default(),
            Kind::RpmUnread(format) => Found::note(format!(
                "rpm database in {format} format not scanned: only rpmdb.sqlite is read"
            )),
            Kind::Executable => executable(head, body)?,
        };
        Ok((!found.is_empty()).then_some(Kept::Found(found)))
    }
}

fn too_large(head: FileHead<'_>, what: &'static str, limit: u64) -> io::Error {
    DetectError::TooLarge {
        path: head.path.to_string(),
        what,
        size: head.size,
        limit,
    }
    .into()
}

/// The whole body, refused past `limit`.
fn read_all(
    head: FileHead<'_>,
    body: &mut dyn Read,
    limit: u64,
    what: &'static str,
) -> io::Result<Vec<u8>> {
    if head.size > limit {
        return Err(too_large(head, what, limit));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(usize::try_from(head.size).unwrap_or(0))
        .map_err(io::Error::other)?;
    body.take(head.size).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn temp_error(head: FileHead<'_>) -> impl Fn(io::Error) -> io::Error + '_ {
    move |source| {
        DetectError::TempFile {
            path: head.path.to_string(),
            source,
        }
        .into()
    }
}

/// SQLite reads a database by path: the body goes to a temporary file, removed after.
fn rpm_sqlite(head: FileHead<'_>, body: &mut dyn Read) -> io::Result<Found> {
    if head.size > RPMDB_LIMIT {
        return Err(too_large(head, "rpm database", RPMDB_LIMIT));
    }
    let mut temp = TempFile::create().map_err(temp_error(head))?;
    spool::copy(&[], &mut body.take(head.size), temp.file(), head.path)?;
    Ok(rpm::read_sqlite(temp.path()))
}

/// An executable's Go and Rust build information; nothing for one that is not ELF or has
/// neither.
fn executable(head: FileHead<'_>, body: &mut dyn Read) -> io::Result<Found> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match body.read(magic.get_mut(got..).unwrap_or(&mut [])) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got < magic.len() || &magic != b"\x7fELF" {
        return Ok(Found::default());
    }
    if head.size > EXECUTABLE_LIMIT {
        return Ok(Found::note(format!(
            "ELF executable of {} bytes is over the scanner's limit of {EXECUTABLE_LIMIT} \
             bytes: its build information was not read",
            head.size
        )));
    }
    let mut temp = TempFile::create().map_err(temp_error(head))?;
    spool::copy(&magic, &mut body.take(head.size), temp.file(), head.path)?;
    let file = temp.unlink().map_err(temp_error(head))?;
    binary(&file).map_err(temp_error(head))
}

/// Reads a spooled ELF file's build information. Errors are the temporary file's.
pub fn binary(file: &(impl super::elf::ReadAt + ?Sized)) -> io::Result<Found> {
    let elf = match Elf::parse(file)? {
        Ok(elf) => elf,
        Err(why) => return Ok(Found::note(format!("not a readable ELF file ({why})"))),
    };
    let mut found = golang::read(file, &elf)?;
    if let Some(section) = elf.section(file, b".dep-v0")? {
        if section.size > cargo::AUDITABLE_LIMIT {
            found.notes.push(format!(
                "cargo-auditable dependency list (.dep-v0) is {} bytes, over the scanner's \
                 limit of {} bytes: not read",
                section.size,
                cargo::AUDITABLE_LIMIT
            ));
        } else {
            let bytes = read_range(file, section.offset, section.size, cargo::AUDITABLE_LIMIT)?;
            let rust = cargo::parse_auditable(&bytes);
            found.facts.extend(rust.facts);
            found.notes.extend(rust.notes);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::detect::{packages, Detected, Ecosystem, Fact, Manager};
    use crate::scan::Package;
    use std::process::Command;

    fn keep(path: &str, mode: u32, bytes: &[u8]) -> io::Result<Option<Kept>> {
        let head = FileHead {
            path,
            size: bytes.len() as u64,
            mode,
        };
        Detector::new().keep(head, &mut &bytes[..])
    }

    fn found(kept: io::Result<Option<Kept>>) -> Found {
        match kept.expect("keep") {
            Some(Kept::Found(found)) => found,
            other => panic!("expected facts, got {other:?}"),
        }
    }

    #[test]
    fn classifies_paths() {
        let cases = [
            ("etc/os-release", 0o644, Some(Kind::OsRelease)),
            ("usr/lib/os-release", 0o644, Some(Kind::OsRelease)),
            ("var/lib/dpkg/status", 0o644, Some(Kind::DpkgStatus)),
            ("var/lib/dpkg/status-old", 0o644, None),
            (
                "var/lib/dpkg/status.d/base-files",
                0o644,
                Some(Kind::DpkgStatusD),
            ),
            ("var/lib/dpkg/status.d/base-files.md5sums", 0o644, None),
            ("var/lib/dpkg/status.d/x/y", 0o644, None),
            ("lib/apk/db/installed", 0o644, Some(Kind::ApkInstalled)),
            ("var/lib/rpm/rpmdb.sqlite", 0o644, Some(Kind::RpmSqlite)),
            (
                "usr/lib/sysimage/rpm/rpmdb.sqlite",
                0o644,
                Some(Kind::RpmSqlite),
            ),
            (
                "var/lib/rpm/rpmdb.sqlite-wal",
                0o644,
                Some(Kind::RpmSqliteWal),
            ),
            (
                "var/lib/rpm/Packages",
                0o644,
                Some(Kind::RpmUnread("Berkeley DB")),
            ),
            (
                "usr/lib/sysimage/rpm/Packages.db",
                0o644,
                Some(Kind::RpmUnread("NDB")),
            ),
            (
                "x/requests-2.0.dist-info/METADATA",
                0o644,
                Some(Kind::PythonMetadata),
            ),
            (
                "x/node_modules/a/package.json",
                0o644,
                Some(Kind::NpmManifest),
            ),
            ("package.json", 0o644, None),
            ("src/Cargo.lock", 0o755, Some(Kind::CargoLock)),
            ("usr/bin/app", 0o755, Some(Kind::Executable)),
            ("usr/bin/app", 0o001, Some(Kind::Executable)),
            ("usr/lib/libx.so", 0o644, None),
        ];
        for (path, mode, kind) in cases {
            assert_eq!(classify(path, mode), kind, "{path}");
        }
    }

    #[test]
    fn parses_text_files_as_they_pass() {
        let f = found(keep(
            "var/lib/dpkg/status",
            0o644,
            b"Package: libc6\nStatus: install ok installed\nSource: glibc\nVersion: 2.36-9\n",
        ));
        assert_eq!(
            f.facts,
            vec![Fact {
                ecosystem: Ecosystem::Os(Manager::Dpkg),
                name: "glibc".into(),
                version: "2.36-9".into(),
                binary: Some("libc6".into()),
            }]
        );
        assert_eq!(
            keep("etc/os-release", 0o644, b"ID=debian\n").expect("keep"),
            Some(Kept::OsRelease(b"ID=debian\n".to_vec()))
        );
        // Nothing found: nothing kept.
        assert_eq!(keep("var/lib/dpkg/status", 0o644, b"").expect("keep"), None);
        assert_eq!(
            keep("usr/share/doc/x", 0o644, b"anything").expect("keep"),
            None
        );
        assert_eq!(
            found(keep("var/lib/rpm/Packages", 0o644, b"\0\0\0\0bdb")).notes,
            vec![
                "rpm database in Berkeley DB format not scanned: only rpmdb.sqlite is read"
                    .to_string()
            ]
        );
    }

    #[test]
    fn over_the_limit_is_an_error_with_the_path() {
        let head = FileHead {
            path: "var/lib/dpkg/status",
            size: TEXT_LIMIT + 1,
            mode: 0o644,
        };
        let e = Detector::new()
            .keep(head, &mut io::empty())
            .expect_err("too large");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e
            .to_string()
            .starts_with("var/lib/dpkg/status: the dpkg status database is"));
        let inner = e.get_ref().and_then(|e| e.downcast_ref::<DetectError>());
        assert!(matches!(inner, Some(DetectError::TooLarge { .. })));

        let head = FileHead {
            path: "etc/os-release",
            size: OS_RELEASE_LIMIT + 1,
            mode: 0o644,
        };
        assert!(Detector::new().keep(head, &mut io::empty()).is_err());
    }

    #[test]
    fn executables_that_are_not_elf_are_left_unread() {
        struct Script(usize);
        impl Read for Script {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let src = b"#!/bin/sh\necho hi\n";
                let n = buf.len().min(src.len() - self.0).min(2);
                buf[..n].copy_from_slice(&src[self.0..self.0 + n]);
                self.0 += n;
                Ok(n)
            }
        }
        let mut body = Script(0);
        let head = FileHead {
            path: "usr/bin/hello",
            size: 18,
            mode: 0o755,
        };
        assert_eq!(Detector::new().keep(head, &mut body).expect("keep"), None);
        assert_eq!(body.0, 4, "read past the magic");
        // A huge ELF is noted without being read.
        let head = FileHead {
            path: "usr/bin/huge",
            size: EXECUTABLE_LIMIT + 1,
            mode: 0o755,
        };
        let f = found(Detector::new().keep(head, &mut &b"\x7fELF"[..]));
        assert_eq!(f.notes.len(), 1);
        // ELF magic, then garbage.
        let f = found(keep("usr/bin/bad", 0o755, b"\x7fELF\x09"));
        assert_eq!(
            f.notes,
            vec!["not a readable ELF file (unknown ELF class)".to_string()]
        );
    }

    #[test]
    fn go_binaries_keep_only_their_modules() {
        let blob = crate::scan::detect::golang::tests::blob(
            "go1.22.1",
            "path\tx\nmod\tx\t(devel)\t\ndep\tgolang.org/x/text\tv0.14.0\th1:x=\n",
        );
        let elf = crate::scan::detect::elf::tests::build(
            true,
            false,
            &[(".go.buildinfo", &blob)],
            b"data",
        );
        let f = found(keep("usr/local/bin/app", 0o755, &elf));
        let names: Vec<_> = f
            .facts
            .iter()
            .map(|f| (f.name.as_str(), f.version.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![("stdlib", "1.22.1"), ("golang.org/x/text", "v0.14.0")]
        );
    }

    /// A real ELF (a copy of /bin/true) given a cargo-auditable section with objcopy.
    #[test]
    fn reads_cargo_auditable_from_a_real_elf() {
        if Command::new("objcopy").arg("--version").output().is_err() {
            println!("skipped: `objcopy` is not installed (apt-get install binutils)");
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("app");
        std::fs::copy("/bin/true", &bin).expect("copy /bin/true");
        let json = br#"{"packages":[
            {"name":"app","version":"0.1.0","source":"local","dependencies":[1],"root":true},
            {"name":"serde","version":"1.0.197","source":"crates.io"}]}"#;
        let zlib = dir.path().join("dep-v0");
        std::fs::write(&zlib, crate::scan::detect::cargo::tests::zlib(json)).expect("write");
        let out = Command::new("objcopy")
            .arg("--add-section")
            .arg(format!(".dep-v0={}", zlib.display()))
            .arg(&bin)
            .output()
            .expect("run objcopy");
        assert!(
            out.status.success(),
            "objcopy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&bin).expect("read");
        let kept = keep("usr/bin/app", 0o755, &bytes).expect("keep");
        let Some(Kept::Found(f)) = &kept else {
            panic!("expected facts, got {kept:?}");
        };
        assert_eq!(
            f.facts,
            vec![Fact {
                ecosystem: Ecosystem::Named("crates.io"),
                name: "serde".into(),
                version: "1.0.197".into(),
                binary: None,
            }]
        );
        // A plain /bin/true keeps nothing.
        let plain = std::fs::read("/bin/true").expect("read");
        assert_eq!(keep("bin/true", 0o755, &plain).expect("keep"), None);
    }

    /// Files through the keeper, then the view's listing.
    #[test]
    fn from_files_to_packages() {
        let files: Vec<(&str, u32, &[u8])> = vec![
            ("etc/os-release", 0o644, b"ID=alpine\nVERSION_ID=3.19.1\n"),
            (
                "lib/apk/db/installed",
                0o644,
                b"P:libcrypto3\nV:3.1.4-r5\no:openssl\n\nP:musl\nV:1.2.4-r2\no:musl\n",
            ),
            (
                "app/node_modules/lodash/package.json",
                0o644,
                br#"{"name":"lodash","version":"4.17.21"}"#,
            ),
            (
                "app/package.json",
                0o644,
                br#"{"name":"app","version":"1.0.0"}"#,
            ),
            (
                "usr/lib/python3.11/site-packages/PyYAML-6.0.1.dist-info/METADATA",
                0o644,
                b"Name: PyYAML\nVersion: 6.0.1\n",
            ),
        ];
        let kept: Vec<(&str, Kept)> = files
            .iter()
            .filter_map(|(p, m, b)| keep(p, *m, b).expect("keep").map(|k| (*p, k)))
            .collect();
        let d: Detected = packages(
            |p| kept.iter().find(|(q, _)| *q == p).map(|(_, k)| k),
            kept.iter().map(|(p, k)| (*p, k)),
        );
        let pkg = |e: &str, n: &str, v: &str, b: Option<&str>, p: &str| Package {
            ecosystem: e.into(),
            name: n.into(),
            version: v.into(),
            binary: b.map(Into::into),
            path: p.into(),
        };
        assert_eq!(
            d.packages,
            vec![
                pkg(
                    "Alpine:v3.19",
                    "musl",
                    "1.2.4-r2",
                    None,
                    "lib/apk/db/installed"
                ),
                pkg(
                    "Alpine:v3.19",
                    "openssl",
                    "3.1.4-r5",
                    Some("libcrypto3"),
                    "lib/apk/db/installed"
                ),
                pkg(
                    "PyPI",
                    "pyyaml",
                    "6.0.1",
                    Some("PyYAML"),
                    "usr/lib/python3.11/site-packages/PyYAML-6.0.1.dist-info/METADATA"
                ),
                pkg(
                    "npm",
                    "lodash",
                    "4.17.21",
                    None,
                    "app/node_modules/lodash/package.json"
                ),
            ]
        );
        assert!(d.notes.is_empty(), "{:?}", d.notes);
        assert_eq!(d.os.map(|o| o.pretty_name), Some(None));
    }
}
