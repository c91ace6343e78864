//! Packages found in the view of an image's files.
//!
//! Two steps, because layers stream by once and memory must stay bounded:
//!
//! 1. While layers are read, [`Detector`] (the layer reader's [`Keeper`]) looks at each
//!    regular file by path and mode. Package databases and metadata files are read and parsed
//!    on the spot into [`Fact`]s; executables are spooled to an unlinked temporary file and
//!    only their embedded build information (Go, cargo-auditable) is read back. What the view
//!    keeps per path is a [`Kept`]: the facts and notes, never a binary, and whole bytes only
//!    for `os-release`, which the end needs.
//! 2. Once the view is complete (whiteouts applied, later layers replacing earlier files),
//!    [`packages`] reads `os-release` to learn the distribution, names the OS packages' OSV
//!    ecosystem from it, and lists every package with the path it was found at.
//!
//! Parsing in step 1 rather than keeping bytes means a `site-packages` with hundreds of
//! `METADATA` files (each holding a whole README) costs a few strings per package. Facts from
//! a file that a later layer deletes or replaces disappear with its path in the view.
//!
//! Each format has its own module with a pure parser over bytes. Every parser is total:
//! garbage is skipped or becomes a note, never a panic.
//!
//! [`Keeper`]: super::layer::Keeper

use std::fmt;
use std::io;

use super::Package;

pub mod apk;
pub mod cargo;
pub mod dpkg;
pub mod elf;
pub mod golang;
pub mod keeper;
pub mod npm;
pub mod os_release;
pub mod python;
pub mod rpm;
pub mod spool;
mod stanza;

pub use keeper::Detector;
pub use os_release::Os;

/// What the view keeps of a file the detectors care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// The bytes of `etc/os-release` or `usr/lib/os-release`: the OS packages' ecosystem
    /// depends on it, and a later layer may replace it, so it is read once the view is final.
    OsRelease(Vec<u8>),
    /// What the detectors learned from the file.
    Found(Found),
}

/// Packages and notes learned from one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub facts: Vec<Fact>,
    /// Things a user should know about this file (a format not read, a part skipped); the
    /// path is prefixed when [`packages`] reports them.
    pub notes: Vec<String>,
}

impl Found {
    fn is_empty(&self) -> bool {
        self.facts.is_empty() && self.notes.is_empty()
    }

    fn note(note: impl Into<String>) -> Found {
        Found {
            facts: Vec::new(),
            notes: vec![note.into()],
        }
    }
}

/// A package as a detector read it, before the view tells its OSV ecosystem and path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fact {
    pub ecosystem: Ecosystem,
    /// The name advisories use (see [`Package::name`]).
    pub name: String,
    pub version: String,
    /// The image's own name for it when it differs (see [`Package::binary`]).
    pub binary: Option<String>,
}

#[cfg(test)]
impl Fact {
    /// An OS package as the detectors' tests expect one.
    pub(crate) fn os(manager: Manager, name: &str, version: &str, binary: Option<&str>) -> Fact {
        Fact {
            ecosystem: Ecosystem::Os(manager),
            name: name.into(),
            version: version.into(),
            binary: binary.map(Into::into),
        }
    }
}

/// Where a fact's OSV ecosystem comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ecosystem {
    /// An OS package database: the ecosystem is the distribution's, from `os-release`.
    Os(Manager),
    /// Fixed by the format: `PyPI`, `npm`, `Go`, `crates.io`.
    Named(&'static str),
}

/// The OS package managers whose databases are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Manager {
    Dpkg,
    Apk,
    Rpm,
}

impl Manager {
    /// The name packages carry as their ecosystem when the distribution has none in OSV:
    /// lower case, so it is never mistaken for an OSV ecosystem (those are capitalized).
    pub fn name(self) -> &'static str {
        match self {
            Manager::Dpkg => "dpkg",
            Manager::Apk => "apk",
            Manager::Rpm => "rpm",
        }
    }
}

/// Everything found in an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Detected {
    /// The distribution, from `etc/os-release` (or `usr/lib/os-release`).
    pub os: Option<Os>,
    /// Sorted and without duplicates.
    pub packages: Vec<Package>,
    /// Sorted and without duplicates; each names the path it is about.
    pub notes: Vec<String>,
}

/// Where `os-release` may be, in the order the os-release specification reads them.
pub const OS_RELEASE_PATHS: [&str; 2] = ["etc/os-release", "usr/lib/os-release"];

/// Lists the packages of a complete view. `kept` looks a path up (following symlinks, as
/// `etc/os-release` usually is one); `files` yields every kept regular file with its path.
/// Shaped as closures so that the layer view's own methods plug in directly.
pub fn packages<'a, K, I>(kept: K, files: I) -> Detected
where
    K: Fn(&str) -> Option<&'a Kept>,
    I: IntoIterator<Item = (&'a str, &'a Kept)>,
{
    let mut notes = Vec::new();
    let os = OS_RELEASE_PATHS.iter().find_map(|path| match kept(path) {
        Some(Kept::OsRelease(bytes)) => Some((*path, os_release::parse(bytes))),
        _ => None,
    });
    if let Some((path, Some(note))) = os.as_ref().map(|(path, os)| (path, &os.note)) {
        notes.push(format!("{path}: {note}"));
    }
    let os = os.map(|(_, os)| os);

    let mut packages = Vec::new();
    let mut unnamed = std::collections::BTreeMap::<Manager, &str>::new();
    for (path, kept) in files {
        let Kept::Found(found) = kept else { continue };
        notes.extend(found.notes.iter().map(|note| format!("{path}: {note}")));
        for fact in &found.facts {
            let ecosystem = match fact.ecosystem {
                Ecosystem::Named(name) => name.to_string(),
                Ecosystem::Os(manager) => {
                    match os.as_ref().and_then(|os| os.ecosystem_for(manager)) {
                        Some(ecosystem) => ecosystem.to_string(),
                        None => {
                            // The first path in order, so the note does not depend on the
                            // order the view yields files in.
                            let first = unnamed.entry(manager).or_insert(path);
                            *first = (*first).min(path);
                            manager.name().to_string()
                        }
                    }
                }
            };
            packages.push(Package {
                ecosystem,
                name: fact.name.clone(),
                version: fact.version.clone(),
                binary: fact.binary.clone(),
                path: path.to_string(),
            });
        }
    }
    for (manager, path) in unnamed {
        let why = match &os {
            None => "the image has no etc/os-release".to_string(),
            Some(os) if os.manager().is_some_and(|m| m != manager) => format!(
                "the distribution `{}` does not use {} packages",
                os.os.id,
                manager.name()
            ),
            Some(os) => format!("the distribution `{}` has no OSV ecosystem", os.os.id),
        };
        notes.push(format!(
            "{path}: {} packages are listed under the ecosystem `{}` and not matched \
             against advisories: {why}",
            manager.name(),
            manager.name()
        ));
    }

    packages.sort();
    packages.dedup();
    notes.sort();
    notes.dedup();
    Detected {
        os: os.map(|os| os.os),
        packages,
        notes,
    }
}

/// A detector's refusal to go on, with the path: the scan stops rather than silently
/// reporting an image as having fewer packages than it has.
#[derive(Debug)]
pub enum DetectError {
    /// A file a detector must read is larger than its limit.
    TooLarge {
        path: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    /// The temporary file a database or binary is copied to could not be written or read.
    TempFile { path: String, source: io::Error },
}

impl fmt::Display for DetectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DetectError::TooLarge {
                path,
                what,
                size,
                limit,
            } => write!(
                f,
                "{path}: the {what} is {size} bytes, over the scanner's limit of {limit} bytes"
            ),
            DetectError::TempFile { path, source } => write!(
                f,
                "{path}: cannot copy it to a temporary file in {} (set TMPDIR to a writable \
                 directory with space): {source}",
                std::env::temp_dir().display()
            ),
        }
    }
}

impl std::error::Error for DetectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DetectError::TooLarge { .. } => None,
            DetectError::TempFile { source, .. } => Some(source),
        }
    }
}

impl From<DetectError> for io::Error {
    fn from(e: DetectError) -> io::Error {
        let kind = match &e {
            DetectError::TooLarge { .. } => io::ErrorKind::InvalidData,
            DetectError::TempFile { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}

/// Splits text into lines without their `\n` or `\r\n`.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(ecosystem: Ecosystem, name: &str, version: &str) -> Fact {
        Fact {
            ecosystem,
            name: name.into(),
            version: version.into(),
            binary: None,
        }
    }

    fn pkg(ecosystem: &str, name: &str, version: &str, path: &str) -> Package {
        Package {
            ecosystem: ecosystem.into(),
            name: name.into(),
            version: version.into(),
            binary: None,
            path: path.into(),
        }
    }

    fn run(files: &[(&str, Kept)]) -> Detected {
        packages(
            |p| files.iter().find(|(path, _)| *path == p).map(|(_, k)| k),
            files.iter().map(|(p, k)| (*p, k)),
        )
    }

    #[test]
    fn os_packages_take_the_distribution_ecosystem() {
        let dpkg = Kept::Found(Found {
            facts: vec![
                fact(Ecosystem::Os(Manager::Dpkg), "openssl", "3.0.11-1~deb12u2"),
                fact(Ecosystem::Os(Manager::Dpkg), "openssl", "3.0.11-1~deb12u2"),
            ],
            notes: vec!["one stanza skipped".into()],
        });
        let go = Kept::Found(Found {
            facts: vec![fact(Ecosystem::Named("Go"), "stdlib", "1.19.8")],
            notes: vec![],
        });
        let d = run(&[
            (
                "usr/lib/os-release",
                Kept::OsRelease(
                    b"ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian 12\"\n".to_vec(),
                ),
            ),
            ("var/lib/dpkg/status", dpkg),
            ("app", go),
        ]);
        assert_eq!(
            d.os.as_ref().map(|o| o.ecosystem.as_deref()),
            Some(Some("Debian:12"))
        );
        assert_eq!(
            d.packages,
            vec![
                pkg(
                    "Debian:12",
                    "openssl",
                    "3.0.11-1~deb12u2",
                    "var/lib/dpkg/status"
                ),
                pkg("Go", "stdlib", "1.19.8", "app"),
            ]
        );
        assert_eq!(
            d.notes,
            vec!["var/lib/dpkg/status: one stanza skipped".to_string()]
        );
    }

    #[test]
    fn etc_os_release_wins_over_usr_lib() {
        let d = run(&[
            (
                "usr/lib/os-release",
                Kept::OsRelease(b"ID=debian\nVERSION_ID=11\n".to_vec()),
            ),
            (
                "etc/os-release",
                Kept::OsRelease(b"ID=ubuntu\nVERSION_ID=22.04\n".to_vec()),
            ),
        ]);
        assert_eq!(d.os.map(|o| o.id), Some("ubuntu".to_string()));

        let d = run(&[(
            "usr/lib/os-release",
            Kept::OsRelease(b"ID=debian\n".to_vec()),
        )]);
        assert_eq!(d.os.and_then(|o| o.ecosystem), Some("Debian".to_string()));
        assert_eq!(d.notes.len(), 1);
        assert!(d.notes[0].starts_with("usr/lib/os-release: Debian without a VERSION_ID"));
    }

    #[test]
    fn os_packages_without_an_osv_distribution_are_listed_with_a_note() {
        let apk = Kept::Found(Found {
            facts: vec![fact(Ecosystem::Os(Manager::Apk), "musl", "1.2.4-r2")],
            notes: vec![],
        });
        let d = run(&[("lib/apk/db/installed", apk.clone())]);
        assert_eq!(d.os, None);
        assert_eq!(
            d.packages,
            vec![pkg("apk", "musl", "1.2.4-r2", "lib/apk/db/installed")]
        );
        assert_eq!(
            d.notes,
            vec![
                "lib/apk/db/installed: apk packages are listed under the ecosystem `apk` and \
                  not matched against advisories: the image has no etc/os-release"
                    .to_string()
            ]
        );

        let d = run(&[
            (
                "etc/os-release",
                Kept::OsRelease(b"ID=debian\nVERSION_ID=12\n".to_vec()),
            ),
            ("lib/apk/db/installed", apk.clone()),
        ]);
        assert_eq!(d.packages[0].ecosystem, "apk");
        assert!(d.notes[0].ends_with("the distribution `debian` does not use apk packages"));

        let d = run(&[
            (
                "etc/os-release",
                Kept::OsRelease(b"ID=postmarketos\nVERSION_ID=v23.12\n".to_vec()),
            ),
            ("lib/apk/db/installed", apk),
        ]);
        assert_eq!(d.os.as_ref().map(|o| o.ecosystem.clone()), Some(None));
        assert!(d.notes[0].ends_with("the distribution `postmarketos` has no OSV ecosystem"));
    }

    #[test]
    fn too_large_names_the_path() {
        let e: io::Error = DetectError::TooLarge {
            path: "var/lib/dpkg/status".into(),
            what: "dpkg status database",
            size: 70 << 20,
            limit: 64 << 20,
        }
        .into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            e.to_string(),
            "var/lib/dpkg/status: the dpkg status database is 73400320 bytes, over the \
             scanner's limit of 67108864 bytes"
        );
    }
}
