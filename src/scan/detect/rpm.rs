//! rpm's database in its SQLite form (`rpmdb.sqlite`, RHEL 9, Fedora 33+, SUSE 15.4+): table
//! `Packages(hnum, blob)`, each blob one package's header. The older Berkeley DB and NDB
//! forms (`Packages`, `Packages.db`) are not read; the keeper notes them.
//!
//! A header blob is big-endian: the index entry count and the data length, then 16-byte
//! entries `{tag, type, offset, count}`, then the data the entries point into.
//!
//! Packages are named by their binary package name (`openssl-libs`): the Red Hat, AlmaLinux,
//! Rocky Linux and SUSE records in OSV list binary packages, and osv-scanner matches rpm
//! packages by it.

use std::path::Path;

use rusqlite::{config::DbConfig, Connection, OpenFlags, OptionalExtension};

use super::{Ecosystem, Fact, Found, Manager};

pub const TAG_NAME: u32 = 1000;
pub const TAG_VERSION: u32 = 1001;
pub const TAG_RELEASE: u32 = 1002;
pub const TAG_EPOCH: u32 = 1003;
pub const TAG_ARCH: u32 = 1022;
pub const TAG_SOURCERPM: u32 = 1044;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

/// rpm's own limits on a header (`hdrchkTags`, `hdrchkData`).
const MAX_ENTRIES: u32 = 0xffff;
const MAX_DATA: u32 = 256 << 20;

/// The fields of a package header a scan uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub name: Option<String>,
    pub version: Option<String>,
    pub release: Option<String>,
    pub epoch: Option<u32>,
    pub arch: Option<String>,
    pub source_rpm: Option<String>,
}

impl Header {
    /// The package as a fact; None for rpm's `gpg-pubkey` pseudo-packages (imported keys)
    /// and for headers without a name or version.
    pub fn fact(&self) -> Option<Fact> {
        let name = self.name.as_deref().filter(|n| !n.is_empty())?;
        let version = self.version.as_deref().filter(|v| !v.is_empty())?;
        if name == "gpg-pubkey" {
            return None;
        }
        let mut evr = String::new();
        // Epoch 0 is the same as none in rpm's order; OSV's records write neither.
        if let Some(epoch) = self.epoch.filter(|&e| e != 0) {
            evr.push_str(&format!("{epoch}:"));
        }
        evr.push_str(version);
        if let Some(release) = self.release.as_deref().filter(|r| !r.is_empty()) {
            evr.push('-');
            evr.push_str(release);
        }
        Some(Fact {
            ecosystem: Ecosystem::Os(Manager::Rpm),
            name: name.to_string(),
            version: evr,
            binary: None,
        })
    }
}

/// Reads a header blob, every offset checked against the data.
pub fn header(blob: &[u8]) -> Result<Header, &'static str> {
    let be32 = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            blob.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let (Some(entries), Some(data_len)) = (be32(0), be32(4)) else {
        return Err("header shorter than its preamble");
    };
    if entries > MAX_ENTRIES || data_len > MAX_DATA {
        return Err("header larger than rpm allows");
    }
    let index_end = 8 + entries as usize * 16;
    let data = blob
        .get(index_end..)
        .and_then(|rest| rest.get(..data_len as usize))
        .ok_or("header shorter than its index and data")?;
    let string = |offset: u32| -> Option<String> {
        let tail = data.get(offset as usize..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(tail.get(..end)?).into_owned())
    };
    let mut h = Header::default();
    for i in 0..entries as usize {
        let at = 8 + i * 16;
        let (Some(tag), Some(kind), Some(offset), Some(count)) =
            (be32(at), be32(at + 4), be32(at + 8), be32(at + 12))
        else {
            return Err("header index cut short");
        };
        let slot = match tag {
            TAG_NAME => &mut h.name,
            TAG_VERSION => &mut h.version,
            TAG_RELEASE => &mut h.release,
            TAG_ARCH => &mut h.arch,
            TAG_SOURCERPM => &mut h.source_rpm,
            TAG_EPOCH => {
                if kind == TYPE_INT32 && count >= 1 {
                    let at = offset as usize;
                    let bytes = data
                        .get(at..at.saturating_add(4))
                        .ok_or("epoch outside the data")?;
                    h.epoch = bytes.try_into().ok().map(u32::from_be_bytes);
                }
                continue;
            }
            _ => continue,
        };
        if matches!(kind, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING) {
            *slot = Some(string(offset).ok_or("string outside the data")?);
        }
    }
    Ok(h)
}

/// Reads every package of an `rpmdb.sqlite` at `path`, opened read-only and immutable
/// (no journal or lock files are looked for or written). A file that is not such a
/// database becomes a note.
pub fn read_sqlite(path: &Path) -> Found {
    match read_sqlite_inner(path) {
        Ok(found) => found,
        Err(e) => Found::note(format!(
            "not a readable rpm SQLite database ({e}): not scanned"
        )),
    }
}

fn read_sqlite_inner(path: &Path) -> rusqlite::Result<Found> {
    let uri = format!("file:{}?immutable=1", uri_path(path));
    let conn = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // The file comes from an image: nothing in its schema may run functions or write.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    let kind: Option<String> = conn
        .query_row(
            "SELECT type FROM sqlite_master WHERE name = 'Packages'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if kind.as_deref() != Some("table") {
        return Ok(Found::note(
            "rpm SQLite database without a Packages table: not scanned",
        ));
    }
    let mut found = Found::default();
    let mut unreadable = 0usize;
    let mut stmt = conn.prepare("SELECT blob FROM Packages")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let parsed = match row.get_ref(0)? {
            rusqlite::types::ValueRef::Blob(blob) => header(blob).ok(),
            _ => None,
        };
        match parsed {
            Some(h) => found.facts.extend(h.fact()),
            None => unreadable += 1,
        }
    }
    if unreadable > 0 {
        found
            .notes
            .push(format!("{unreadable} unreadable package headers skipped"));
    }
    Ok(found)
}

/// A path as an SQLite URI's path: unreserved bytes as they are, the rest percent-encoded.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A header blob with the given entries (tag, type, value).
    fn blob(entries: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut data = Vec::new();
        let mut index = Vec::new();
        for (tag, kind, value) in entries {
            if *kind == TYPE_INT32 {
                while data.len() % 4 != 0 {
                    data.push(0);
                }
            }
            index.extend_from_slice(&tag.to_be_bytes());
            index.extend_from_slice(&kind.to_be_bytes());
            index.extend_from_slice(&(data.len() as u32).to_be_bytes());
            index.extend_from_slice(&1u32.to_be_bytes());
            data.extend_from_slice(value);
        }
        let mut out = (entries.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&index);
        out.extend_from_slice(&data);
        out
    }

    fn rpm(name: &str, version: &str) -> Fact {
        Fact {
            ecosystem: Ecosystem::Os(Manager::Rpm),
            name: name.into(),
            version: version.into(),
            binary: None,
        }
    }

    #[test]
    fn reads_a_header() {
        let b = blob(&[
            (63, 7, b"region-ignored\0"),
            (TAG_NAME, TYPE_STRING, b"openssl-libs\0"),
            (TAG_VERSION, TYPE_STRING, b"3.0.7\0"),
            (TAG_RELEASE, TYPE_STRING, b"25.el9_3\0"),
            (TAG_EPOCH, TYPE_INT32, &1u32.to_be_bytes()),
            (TAG_ARCH, TYPE_STRING, b"x86_64\0"),
            (
                TAG_SOURCERPM,
                TYPE_STRING,
                b"openssl-3.0.7-25.el9_3.src.rpm\0",
            ),
        ]);
        let h = header(&b).expect("header");
        assert_eq!(
            h,
            Header {
                name: Some("openssl-libs".into()),
                version: Some("3.0.7".into()),
                release: Some("25.el9_3".into()),
                epoch: Some(1),
                arch: Some("x86_64".into()),
                source_rpm: Some("openssl-3.0.7-25.el9_3.src.rpm".into()),
            }
        );
        assert_eq!(h.fact(), Some(rpm("openssl-libs", "1:3.0.7-25.el9_3")));
    }

    #[test]
    fn epoch_zero_and_missing_fields() {
        let b = blob(&[
            (TAG_NAME, TYPE_STRING, b"bash\0"),
            (TAG_VERSION, TYPE_STRING, b"5.1.8\0"),
            (TAG_RELEASE, TYPE_STRING, b"6.el9\0"),
            (TAG_EPOCH, TYPE_INT32, &0u32.to_be_bytes()),
        ]);
        assert_eq!(
            header(&b).expect("header").fact(),
            Some(rpm("bash", "5.1.8-6.el9"))
        );
        let no_version = blob(&[(TAG_NAME, TYPE_STRING, b"bash\0")]);
        assert_eq!(header(&no_version).expect("header").fact(), None);
        let key = blob(&[
            (TAG_NAME, TYPE_STRING, b"gpg-pubkey\0"),
            (TAG_VERSION, TYPE_STRING, b"fd431d51\0"),
        ]);
        assert_eq!(header(&key).expect("header").fact(), None);
    }

    #[test]
    fn every_offset_is_checked() {
        let b = blob(&[
            (TAG_NAME, TYPE_STRING, b"bash\0"),
            (TAG_VERSION, TYPE_STRING, b"5.1.8\0"),
            (TAG_EPOCH, TYPE_INT32, &2u32.to_be_bytes()),
        ]);
        for len in 0..b.len() {
            assert!(header(&b[..len]).is_err(), "{len}");
        }
        let mut flipped = b.clone();
        for i in 0..flipped.len() {
            for x in [0xff, 0x80, 0x01] {
                flipped[i] ^= x;
                let _ = header(&flipped);
                flipped[i] ^= x;
            }
        }
        // An unterminated string.
        let mut b = blob(&[(TAG_NAME, TYPE_STRING, b"bash")]);
        assert_eq!(header(&b), Err("string outside the data"));
        b[0..4].copy_from_slice(&0x10000u32.to_be_bytes());
        assert_eq!(header(&b), Err("header larger than rpm allows"));
    }

    #[test]
    fn uri_paths_are_escaped() {
        assert_eq!(uri_path(Path::new("/tmp/a b?c#%")), "/tmp/a%20b%3Fc%23%25");
    }

    #[test]
    fn garbage_databases_are_notes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rpmdb.sqlite");
        std::fs::write(&path, b"not sqlite at all").expect("write");
        let found = read_sqlite(&path);
        assert!(found.facts.is_empty());
        assert!(
            found.notes[0].starts_with("not a readable rpm SQLite database"),
            "{found:?}"
        );

        std::fs::remove_file(&path).expect("remove");
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch("CREATE TABLE Other (x); CREATE VIEW Packages AS SELECT 1 AS blob;")
            .expect("schema");
        drop(conn);
        assert_eq!(
            read_sqlite(&path).notes,
            vec!["rpm SQLite database without a Packages table: not scanned".to_string()]
        );

        std::fs::remove_file(&path).expect("remove");
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB);")
            .expect("schema");
        let good = blob(&[
            (TAG_NAME, TYPE_STRING, b"zlib\0"),
            (TAG_VERSION, TYPE_STRING, b"1.2.11\0"),
            (TAG_RELEASE, TYPE_STRING, b"40.el9\0"),
        ]);
        conn.execute("INSERT INTO Packages (blob) VALUES (?1)", [&good])
            .expect("insert");
        conn.execute("INSERT INTO Packages (blob) VALUES ('text')", [])
            .expect("insert");
        conn.execute("INSERT INTO Packages (blob) VALUES (x'00000001')", [])
            .expect("insert");
        drop(conn);
        let found = read_sqlite(&path);
        assert_eq!(found.facts, vec![rpm("zlib", "1.2.11-40.el9")]);
        assert_eq!(
            found.notes,
            vec!["2 unreadable package headers skipped".to_string()]
        );
    }

    /// Builds a real package with rpmbuild, registers it in a fresh SQLite rpm database with
    /// rpm itself, and reads the database back.
    #[test]
    fn reads_a_real_rpm_database() {
        let backend = Command::new("rpm")
            .args(["--eval", "%_db_backend"])
            .output();
        let Ok(backend) = backend else {
            println!("skipped: `rpm` is not installed (apt-get install rpm)");
            return;
        };
        let backend = String::from_utf8_lossy(&backend.stdout).trim().to_string();
        if backend != "sqlite" {
            println!("skipped: rpm's database backend is `{backend}`, not sqlite");
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let spec = root.join("probe.spec");
        std::fs::write(
            &spec,
            "Name: ringyard-probe\nEpoch: 3\nVersion: 1.2.3\nRelease: 4.el9\nSummary: probe\n\
             License: MIT\nBuildArch: noarch\n%description\nprobe\n%files\n",
        )
        .expect("write spec");
        let top = root.join("top");
        let status = Command::new("rpmbuild")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg("-bb")
            .arg(&spec)
            .output()
            .expect("run rpmbuild");
        assert!(
            status.status.success(),
            "rpmbuild: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let package = top.join("RPMS/noarch/ringyard-probe-1.2.3-4.el9.noarch.rpm");
        let db = root.join("db");
        std::fs::create_dir(&db).expect("mkdir");
        let run = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("rpm")
                .arg("--dbpath")
                .arg(&db)
                .args(args)
                .output()
                .expect("run rpm");
            assert!(
                out.status.success(),
                "rpm: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["--initdb".as_ref()]);
        run(&[
            "-i".as_ref(),
            "--justdb".as_ref(),
            "--nodeps".as_ref(),
            "--noscripts".as_ref(),
            package.as_os_str(),
        ]);
        // A query closes the database cleanly, folding the write-ahead log in.
        run(&["-qa".as_ref()]);
        let found = read_sqlite(&db.join("rpmdb.sqlite"));
        assert_eq!(found.facts, vec![rpm("ringyard-probe", "3:1.2.3-4.el9")]);
        assert!(found.notes.is_empty(), "{:?}", found.notes);
    }
}
