//! dpkg's database: `var/lib/dpkg/status` (every package dpkg knows, installed or not) and
//! the distroless layout `var/lib/dpkg/status.d/<package>` (one installed package per file).
//!
//! Debian's and Ubuntu's advisories are keyed by source package, so a package is named by
//! its `Source:` (with the binary package kept as [`Fact::binary`]); a binary built from a
//! source of another version (`Source: foo (1.2-3)`) carries that source version.

use super::stanza::{Outcome, Stanza, Syntax};
use super::{Ecosystem, Fact, Found, Manager};

const SYNTAX: Syntax<4> = Syntax {
    keys: ["Package", "Version", "Source", "Status"],
    deb822: true,
};

/// Reads a dpkg status file. With `require_installed`, only stanzas whose `Status:` says
/// `installed` count (the main status file also lists removed packages whose configuration
/// remains); without, a stanza with no `Status:` counts (the `status.d` files have none).
pub fn parse(bytes: &[u8], require_installed: bool) -> Found {
    SYNTAX.parse(bytes, |stanza| fact(stanza, require_installed))
}

fn fact(stanza: Stanza<4>, require_installed: bool) -> Outcome {
    let [package, version, source, status] = stanza.values;
    // `Status: want flag state`: the third word is the state (`installed`,
    // `config-files`, `half-installed`, ...); `hold ok installed` is installed too.
    let installed = match &status {
        Some(status) => status.split_whitespace().nth(2) == Some("installed"),
        None => !require_installed,
    };
    if !installed {
        return Outcome::Skip;
    }
    let (Some(package), Some(version)) = (package, version) else {
        return Outcome::Incomplete;
    };
    if package.is_empty() || version.is_empty() {
        return Outcome::Incomplete;
    }
    let (name, version) = match source.as_deref().map(split_source) {
        Some((name, Some(source_version))) if !name.is_empty() => {
            (name.to_string(), source_version.to_string())
        }
        Some((name, _)) if !name.is_empty() => (name.to_string(), version),
        _ => (package.clone(), version),
    };
    let binary = (package != name).then_some(package);
    Outcome::Fact(Fact {
        ecosystem: Ecosystem::Os(Manager::Dpkg),
        name,
        version,
        binary,
    })
}

/// `foo (1.2-3)` into `foo` and `1.2-3`; `foo` alone has no version.
fn split_source(source: &str) -> (&str, Option<&str>) {
    match source.split_once('(') {
        Some((name, rest)) => {
            let version = rest.split(')').next().unwrap_or(rest).trim();
            (name.trim(), (!version.is_empty()).then_some(version))
        }
        None => (source.trim(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(name: &str, version: &str, binary: Option<&str>) -> Fact {
        Fact::os(Manager::Dpkg, name, version, binary)
    }

    const STATUS: &str = "\
Package: libssl3
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Source: openssl
Version: 3.0.11-1~deb12u2
Description: Secure Sockets Layer toolkit - shared libraries
 This package is part of the OpenSSL project's implementation of the SSL
 .
 Version: 9.9 is not a field here

Package: base-files
Status: install ok installed
Version: 12.4+deb12u5

Package: removed-thing
Status: deinstall ok config-files
Version: 1.0-1

Package: libgcc-s1
Status: hold ok installed
Source: gcc-12 (12.2.0-14)
Version: 12.2.0-14+b1
";

    #[test]
    fn reads_installed_packages_by_source() {
        let found = parse(STATUS.as_bytes(), true);
        assert_eq!(
            found.facts,
            vec![
                fact("openssl", "3.0.11-1~deb12u2", Some("libssl3")),
                fact("base-files", "12.4+deb12u5", None),
                fact("gcc-12", "12.2.0-14", Some("libgcc-s1")),
            ]
        );
        assert!(found.notes.is_empty());
    }

    #[test]
    fn crlf_and_extra_blank_lines() {
        let text = STATUS.replace('\n', "\r\n\r\n");
        // Blank lines inside a stanza split it: the halves are incomplete, not a panic.
        let found = parse(text.as_bytes(), true);
        assert!(found.facts.is_empty());
        let crlf = STATUS.replace('\n', "\r\n");
        assert_eq!(
            parse(crlf.as_bytes(), true).facts,
            parse(STATUS.as_bytes(), true).facts
        );
    }

    #[test]
    fn status_d_files_have_no_status_line() {
        let found = parse(
            b"Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n",
            false,
        );
        assert_eq!(found.facts, vec![fact("tzdata", "2024a-0+deb12u1", None)]);
        // The main status file requires one.
        assert!(parse(b"Package: tzdata\nVersion: 1\n", true)
            .facts
            .is_empty());
    }

    #[test]
    fn source_without_version_uses_version() {
        let found = parse(
            b"Package: libc6\nSource: glibc\nVersion: 2.36-9+deb12u4\n",
            false,
        );
        assert_eq!(
            found.facts,
            vec![fact("glibc", "2.36-9+deb12u4", Some("libc6"))]
        );
    }

    #[test]
    fn missing_fields_are_skipped_with_a_note() {
        let found = parse(b"Package: x\n\nVersion: 1\n\nDescription: y\n", false);
        assert!(found.facts.is_empty());
        assert_eq!(
            found.notes,
            vec!["3 entries without a package name or version skipped".to_string()]
        );
    }

    #[test]
    fn split_source_forms() {
        assert_eq!(
            split_source("gcc-12 (12.2.0-14)"),
            ("gcc-12", Some("12.2.0-14"))
        );
        assert_eq!(split_source("gcc-12"), ("gcc-12", None));
        assert_eq!(split_source("gcc-12 ("), ("gcc-12", None));
        assert_eq!(split_source("(1)"), ("", Some("1")));
    }

    #[test]
    fn garbage_is_no_panic() {
        for bytes in [
            &b"\xff\xfe:\x00\n:\n::\n"[..],
            b"Package:",
            b"Source: (",
            b"Source: x (\nPackage: y\nVersion: 1",
            b"\n\n\n",
            b" continuation first\n",
            b"",
        ] {
            let _ = parse(bytes, false);
            let _ = parse(bytes, true);
        }
        assert_eq!(
            parse(b"Source: x (\nPackage: y\nVersion: 1", false).facts,
            vec![fact("x", "1", Some("y"))]
        );
    }
}
