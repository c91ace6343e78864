//! `os-release`: which distribution and release the image is, and so the OSV ecosystem its
//! OS packages' advisories are filed under (`Debian:12`, `Alpine:v3.19`, ...).

use super::{lines, Manager};

/// The distribution, as `os-release` names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Os {
    /// `ID` (`debian`, `alpine`, `rhel`); empty when the file has none.
    pub id: String,
    pub version_id: Option<String>,
    pub version_codename: Option<String>,
    pub pretty_name: Option<String>,
    /// The OSV ecosystem of its OS packages; None for a distribution OSV has no advisories
    /// for (its packages are still listed, under their package manager's name).
    pub ecosystem: Option<String>,
}

/// An [`Os`] with what it takes to name its packages' ecosystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub os: Os,
    /// Said once in the result when the ecosystem is a guess (Debian testing).
    pub note: Option<String>,
}

impl Release {
    /// The package manager the distribution installs with.
    pub fn manager(&self) -> Option<Manager> {
        manager_of(&self.os.id)
    }

    /// The ecosystem of packages from `manager`'s database: the distribution's, unless the
    /// database is not the distribution's own (an apk database in a Debian image).
    pub fn ecosystem_for(&self, manager: Manager) -> Option<&str> {
        if self.manager() == Some(manager) {
            self.os.ecosystem.as_deref()
        } else {
            None
        }
    }
}

fn manager_of(id: &str) -> Option<Manager> {
    Some(match id {
        "debian" | "ubuntu" => Manager::Dpkg,
        "alpine" | "wolfi" | "chainguard" => Manager::Apk,
        "rhel"
        | "rocky"
        | "almalinux"
        | "opensuse-leap"
        | "opensuse-tumbleweed"
        | "sles"
        | "mageia" => Manager::Rpm,
        _ => return None,
    })
}

/// Reads `os-release` (shell-like `KEY=value` lines, values optionally quoted). Total: lines
/// that are not assignments are ignored.
pub fn parse(bytes: &[u8]) -> Release {
    let text = String::from_utf8_lossy(bytes);
    let mut os = Os::default();
    let mut version = None;
    for line in lines(&text) {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key.trim() {
            "ID" => os.id = value,
            "VERSION_ID" => os.version_id = Some(value),
            "VERSION_CODENAME" => os.version_codename = Some(value),
            "PRETTY_NAME" => os.pretty_name = Some(value),
            "VERSION" => version = Some(value),
            _ => {}
        }
    }
    let (ecosystem, note) = ecosystem(&os, version.as_deref());
    os.ecosystem = ecosystem;
    Release { os, note }
}

/// A value as the shell would read it: `"..."` with backslash escapes, `'...'` verbatim,
/// or bare. An unterminated quote takes the rest of the line.
fn unquote(value: &str) -> String {
    let mut chars = value.chars();
    match chars.next() {
        Some('"') => {
            let mut out = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some(e @ ('\\' | '"' | '$' | '`')) => out.push(e),
                        Some(other) => {
                            out.push('\\');
                            out.push(other);
                        }
                        None => out.push('\\'),
                    },
                    c => out.push(c),
                }
            }
            out
        }
        Some('\'') => chars.take_while(|&c| c != '\'').collect(),
        _ => value.to_string(),
    }
}

/// The OSV ecosystem of a distribution's packages, as OSV's records spell it.
fn ecosystem(os: &Os, version: Option<&str>) -> (Option<String>, Option<String>) {
    let version_id = os.version_id.as_deref().filter(|v| !v.is_empty());
    let major = version_id.map(|v| v.split('.').next().unwrap_or(v));
    let with = |base: &str, suffix: Option<String>| match suffix {
        Some(suffix) => Some(format!("{base}:{suffix}")),
        None => Some(base.to_string()),
    };
    let ecosystem = match os.id.as_str() {
        "debian" => match major {
            Some(major) => with("Debian", Some(major.to_string())),
            None => {
                return (
                    Some("Debian".to_string()),
                    Some(
                        "Debian without a VERSION_ID (testing or unstable): \
                         its packages are listed under the ecosystem `Debian`, which OSV's \
                         Debian records (filed per release) do not use"
                            .to_string(),
                    ),
                )
            }
        },
        // OSV files Ubuntu's long-term releases as `Ubuntu:22.04:LTS`, others as
        // `Ubuntu:23.10`; os-release says which in VERSION ("22.04.3 LTS (Jammy Jellyfish)").
        "ubuntu" => version_id.map(|v| {
            let lts = version.is_some_and(|v| v.split_whitespace().any(|w| w == "LTS"));
            if lts {
                format!("Ubuntu:{v}:LTS")
            } else {
                format!("Ubuntu:{v}")
            }
        }),
        // Alpine's advisories are per branch (`v3.19`); VERSION_ID is the point release.
        "alpine" => version_id.map(|v| {
            let mut parts = v.split('.');
            match (parts.next(), parts.next()) {
                (Some(major), Some(minor)) => format!("Alpine:v{major}.{minor}"),
                _ => format!("Alpine:v{v}"),
            }
        }),
        "wolfi" => Some("Wolfi".to_string()),
        "chainguard" => Some("Chainguard".to_string()),
        // Red Hat's records are filed per product stream
        // (`Red Hat:enterprise_linux:9::appstream`, `...::baseos`); the rpm database does not
        // say which stream a package came from, so this names the release and the matcher
        // takes the streams under it.
        "rhel" => with("Red Hat", major.map(|m| format!("enterprise_linux:{m}"))),
        "rocky" => with("Rocky Linux", major.map(str::to_string)),
        "almalinux" => with("AlmaLinux", major.map(str::to_string)),
        "opensuse-leap" => with("openSUSE", version_id.map(|v| format!("Leap {v}"))),
        "opensuse-tumbleweed" => Some("openSUSE:Tumbleweed".to_string()),
        // `15.5` is `SUSE:Linux Enterprise Server 15 SP5`; `15` (no service pack) is `... 15`.
        "sles" => with(
            "SUSE",
            version_id.map(|v| match v.split_once('.') {
                Some((major, sp)) if sp != "0" => format!("Linux Enterprise Server {major} SP{sp}"),
                Some((major, _)) => format!("Linux Enterprise Server {major}"),
                None => format!("Linux Enterprise Server {v}"),
            }),
        ),
        "mageia" => with("Mageia", version_id.map(str::to_string)),
        _ => None,
    };
    (ecosystem, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eco(text: &str) -> Option<String> {
        parse(text.as_bytes()).os.ecosystem
    }

    #[test]
    fn reads_fields_quoted_or_not() {
        let r = parse(
            b"# comment\r\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\r\nNAME=\"Debian\"\r\n\
              VERSION_ID=\"12\"\r\nVERSION_CODENAME=bookworm\r\nID=debian\r\n\
              HOME_URL='https://www.debian.org/'\r\n",
        );
        assert_eq!(
            r.os,
            Os {
                id: "debian".into(),
                version_id: Some("12".into()),
                version_codename: Some("bookworm".into()),
                pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
                ecosystem: Some("Debian:12".into()),
            }
        );
        assert_eq!(r.note, None);
        assert_eq!(r.manager(), Some(Manager::Dpkg));
        assert_eq!(r.ecosystem_for(Manager::Dpkg), Some("Debian:12"));
        assert_eq!(r.ecosystem_for(Manager::Rpm), None);
    }

    #[test]
    fn unquotes_like_the_shell() {
        assert_eq!(unquote(r#""a \"b\" \\ \$c \n""#), r#"a "b" \ $c \n"#);
        assert_eq!(unquote("'x \"y\"'"), "x \"y\"");
        assert_eq!(unquote("\"open"), "open");
        assert_eq!(unquote("\"trailing\\"), "trailing\\");
        assert_eq!(unquote("bare"), "bare");
        assert_eq!(unquote(""), "");
    }

    #[test]
    fn names_each_distribution_as_osv_does() {
        assert_eq!(
            eco("ID=debian\nVERSION_ID=\"11\"\n").as_deref(),
            Some("Debian:11")
        );
        assert_eq!(
            eco("ID=ubuntu\nVERSION=\"22.04.3 LTS (Jammy Jellyfish)\"\nVERSION_ID=\"22.04\"\n")
                .as_deref(),
            Some("Ubuntu:22.04:LTS")
        );
        assert_eq!(
            eco("ID=ubuntu\nVERSION=\"23.10 (Mantic Minotaur)\"\nVERSION_ID=\"23.10\"\n")
                .as_deref(),
            Some("Ubuntu:23.10")
        );
        assert_eq!(
            eco("ID=alpine\nVERSION_ID=3.19.1\n").as_deref(),
            Some("Alpine:v3.19")
        );
        assert_eq!(
            eco("ID=alpine\nVERSION_ID=3.21.0_alpha20240807\n").as_deref(),
            Some("Alpine:v3.21")
        );
        assert_eq!(
            eco("ID=wolfi\nVERSION_ID=20230201\n").as_deref(),
            Some("Wolfi")
        );
        assert_eq!(eco("ID=chainguard\n").as_deref(), Some("Chainguard"));
        assert_eq!(
            eco("ID=\"rhel\"\nVERSION_ID=\"9.3\"\n").as_deref(),
            Some("Red Hat:enterprise_linux:9")
        );
        assert_eq!(
            eco("ID=\"rocky\"\nVERSION_ID=\"9.3\"\n").as_deref(),
            Some("Rocky Linux:9")
        );
        assert_eq!(
            eco("ID=\"almalinux\"\nVERSION_ID=\"8.9\"\n").as_deref(),
            Some("AlmaLinux:8")
        );
        assert_eq!(
            eco("ID=\"opensuse-leap\"\nVERSION_ID=\"15.5\"\n").as_deref(),
            Some("openSUSE:Leap 15.5")
        );
        assert_eq!(
            eco("ID=\"opensuse-tumbleweed\"\nVERSION_ID=\"20240101\"\n").as_deref(),
            Some("openSUSE:Tumbleweed")
        );
        assert_eq!(
            eco("ID=\"sles\"\nVERSION_ID=\"15.5\"\n").as_deref(),
            Some("SUSE:Linux Enterprise Server 15 SP5")
        );
        assert_eq!(
            eco("ID=\"sles\"\nVERSION_ID=\"15\"\n").as_deref(),
            Some("SUSE:Linux Enterprise Server 15")
        );
        assert_eq!(
            eco("ID=mageia\nVERSION_ID=9\n").as_deref(),
            Some("Mageia:9")
        );
        assert_eq!(eco("ID=arch\n"), None);
        assert_eq!(eco("ID=ubuntu\n"), None);
        assert_eq!(eco(""), None);
    }

    #[test]
    fn debian_testing_is_named_with_a_note() {
        let r = parse(b"PRETTY_NAME=\"Debian GNU/Linux trixie/sid\"\nID=debian\n");
        assert_eq!(r.os.ecosystem.as_deref(), Some("Debian"));
        assert!(r.note.is_some_and(|n| n.contains("testing or unstable")));
    }

    #[test]
    fn garbage_is_no_panic() {
        for bytes in [
            &b"\xff\xfe=\x00\n=\n==\n\"\n'"[..],
            b"ID",
            b"ID=\"",
            b"\n\n\r",
        ] {
            let _ = parse(bytes);
        }
        assert_eq!(parse(b"ID=\"\xffx\"").os.id, "\u{fffd}x");
    }
}
