//! Installed Python distributions: `*.dist-info/METADATA` (wheels, pip) and
//! `*.egg-info/PKG-INFO` or a lone `*.egg-info` file (setuptools), all RFC 822-style headers
//! whose `Name:` and `Version:` name the distribution.

use super::{lines, Ecosystem, Fact, Found};

/// Whether `path` is one of the metadata files this module reads.
pub fn is_metadata(path: &str) -> bool {
    let (dir, file) = match path.rsplit_once('/') {
        Some((dir, file)) => (dir, file),
        None => ("", path),
    };
    let parent = dir.rsplit('/').next().unwrap_or(dir);
    (file == "METADATA" && parent.ends_with(".dist-info"))
        || (file == "PKG-INFO" && parent.ends_with(".egg-info"))
        || (file.ends_with(".egg-info") && file.len() > ".egg-info".len())
}

/// Reads the header of a metadata file (up to the first blank line; the body is the long
/// description).
pub fn parse(bytes: &[u8]) -> Found {
    let text = String::from_utf8_lossy(bytes);
    let mut name = None;
    let mut version = None;
    for line in lines(&text) {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        if key.eq_ignore_ascii_case("Name") && name.is_none() {
            name = Some(value.trim().to_string());
        } else if key.eq_ignore_ascii_case("Version") && version.is_none() {
            version = Some(value.trim().to_string());
        }
    }
    match (
        name.filter(|n| !n.is_empty()),
        version.filter(|v| !v.is_empty()),
    ) {
        (Some(name), Some(version)) => {
            let normalized = normalize(&name);
            Found {
                facts: vec![Fact {
                    ecosystem: Ecosystem::Named("PyPI"),
                    binary: (normalized != name).then_some(name),
                    name: normalized,
                    version,
                }],
                notes: Vec::new(),
            }
        }
        _ => Found::note("Python package metadata without a Name or Version: skipped"),
    }
}

/// PEP 503's normalized name: lower case, each run of `-`, `_`, `.` one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.extend(c.to_lowercase());
            in_run = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_metadata_paths() {
        for yes in [
            "usr/lib/python3/dist-packages/requests-2.31.0.dist-info/METADATA",
            "app/.venv/lib/python3.12/site-packages/Flask-3.0.0.dist-info/METADATA",
            "usr/lib/python3/dist-packages/six-1.16.0.egg-info/PKG-INFO",
            "usr/lib/python2.7/dist-packages/argparse-1.2.1.egg-info",
        ] {
            assert!(is_metadata(yes), "{yes}");
        }
        for no in [
            "METADATA",
            "x/METADATA",
            "x.dist-info/RECORD",
            "x.dist-info/sub/METADATA",
            ".egg-info",
            "x.egg-info/SOURCES.txt",
        ] {
            assert!(!is_metadata(no), "{no}");
        }
    }

    #[test]
    fn reads_name_and_version_normalized() {
        let found = parse(
            b"Metadata-Version: 2.1\r\nName: Foo.Bar__baz\r\nVersion: 1.0.post1\r\n\
              Summary: x\r\n\r\nName: not-this\r\n",
        );
        assert_eq!(
            found.facts,
            vec![Fact {
                ecosystem: Ecosystem::Named("PyPI"),
                name: "foo-bar-baz".into(),
                version: "1.0.post1".into(),
                binary: Some("Foo.Bar__baz".into()),
            }]
        );
        let found = parse(b"Name: requests\nVersion: 2.31.0\n");
        assert_eq!(found.facts[0].name, "requests");
        assert_eq!(found.facts[0].binary, None);
    }

    #[test]
    fn normalizes_per_pep_503() {
        assert_eq!(normalize("Django"), "django");
        assert_eq!(normalize("zope.interface"), "zope-interface");
        assert_eq!(normalize("a-_.-b"), "a-b");
        assert_eq!(normalize("_x_"), "-x-");
    }

    #[test]
    fn missing_fields_and_garbage() {
        assert_eq!(parse(b"Name: x\n").facts, vec![]);
        assert_eq!(parse(b"Name: x\n").notes.len(), 1);
        assert_eq!(parse(b"\nName: x\nVersion: 1\n").facts, vec![]);
        for bytes in [&b"\xff\xfe:"[..], b"", b":::\n::", b"Name:\nVersion:"] {
            let _ = parse(bytes);
        }
    }
}
