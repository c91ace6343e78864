//! apk's database `lib/apk/db/installed`: one blank-line separated record per installed
//! package, one `X:value` line per field (`P` package, `V` version, `o` origin).
//!
//! Alpine's advisories (secdb, and OSV's Alpine records built from it) are keyed by the
//! origin, the source package an APKBUILD builds (`openssl` for `libcrypto3`), as
//! osv-scanner matches them; the package's own name is kept as [`Fact::binary`].

use super::stanza::{Outcome, Stanza, Syntax};
use super::{Ecosystem, Fact, Found, Manager};

const SYNTAX: Syntax<3> = Syntax {
    keys: ["P", "V", "o"],
    deb822: false,
};

/// Reads an apk installed database.
pub fn parse(bytes: &[u8]) -> Found {
    SYNTAX.parse(bytes, |stanza| match fact(stanza) {
        Some(fact) => Outcome::Fact(fact),
        None => Outcome::Incomplete,
    })
}

fn fact(stanza: Stanza<3>) -> Option<Fact> {
    let [package, version, origin] = stanza.values;
    let package = package.filter(|p| !p.is_empty())?;
    let version = version.filter(|v| !v.is_empty())?;
    let name = origin
        .filter(|o| !o.is_empty())
        .unwrap_or_else(|| package.clone());
    let binary = (package != name).then_some(package);
    Some(Fact {
        ecosystem: Ecosystem::Os(Manager::Apk),
        name,
        version,
        binary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(name: &str, version: &str, binary: Option<&str>) -> Fact {
        Fact::os(Manager::Apk, name, version, binary)
    }

    const INSTALLED: &str = "\
C:Q1Deb0jNytkrjPW4N/eKLZ43BwOlw=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
T:the musl c library (libc) implementation
o:musl
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755

C:Q1abc=
P:libcrypto3
V:3.1.4-r5
A:x86_64
o:openssl
p:so:libcrypto.so.3=3

P:no-origin
V:1-r0
";

    #[test]
    fn reads_packages_by_origin() {
        let found = parse(INSTALLED.as_bytes());
        assert_eq!(
            found.facts,
            vec![
                fact("musl", "1.2.4_git20230717-r4", None),
                fact("openssl", "3.1.4-r5", Some("libcrypto3")),
                fact("no-origin", "1-r0", None),
            ]
        );
        assert!(found.notes.is_empty());
        let crlf = INSTALLED.replace('\n', "\r\n");
        assert_eq!(parse(crlf.as_bytes()).facts, found.facts);
    }

    #[test]
    fn incomplete_records_are_noted() {
        let found = parse(b"P:x\n\nV:1\n\nnonsense\n");
        assert!(found.facts.is_empty());
        assert_eq!(
            found.notes,
            vec!["3 entries without a package name or version skipped".to_string()]
        );
    }

    #[test]
    fn garbage_is_no_panic() {
        for bytes in [&b"\xff:\xfe\n::\nP:\nV:\n"[..], b"P", b"", b"\n\n"] {
            let _ = parse(bytes);
        }
    }
}
