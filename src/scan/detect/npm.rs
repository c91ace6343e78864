//! Installed npm packages: `node_modules/<name>/package.json` and
//! `node_modules/@scope/<name>/package.json`.
//!
//! Only a package's own manifest counts: a `package.json` deeper inside a package (test
//! fixtures, `lib/package.json` module-type markers) names nothing that is installed, and
//! the application's own `package.json` outside `node_modules` is not a dependency.

use super::{Ecosystem, Fact, Found};

/// Whether `path` is an installed package's manifest.
pub fn is_manifest(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        [.., "node_modules", scope, name, "package.json"]
            if scope.starts_with('@') && scope.len() > 1 && !name.is_empty() =>
        {
            true
        }
        [.., "node_modules", name, "package.json"] => !name.is_empty() && !name.starts_with('@'),
        _ => false,
    }
}

#[derive(serde::Deserialize)]
struct Manifest {
    name: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

/// Reads a manifest's `name` and `version`; one without both (as strings) names no package.
pub fn parse(bytes: &[u8]) -> Found {
    let manifest: Manifest = match serde_json::from_slice(bytes) {
        Ok(m) => m,
        Err(e) => return Found::note(format!("package.json is not valid JSON ({e}): skipped")),
    };
    match (manifest.name, manifest.version) {
        (Some(serde_json::Value::String(name)), Some(serde_json::Value::String(version)))
            if !name.trim().is_empty() && !version.trim().is_empty() =>
        {
            Found {
                facts: vec![Fact {
                    ecosystem: Ecosystem::Named("npm"),
                    name: name.trim().to_string(),
                    version: version.trim().to_string(),
                    binary: None,
                }],
                notes: Vec::new(),
            }
        }
        _ => Found::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_installed_manifests_only() {
        for yes in [
            "app/node_modules/lodash/package.json",
            "node_modules/@babel/core/package.json",
            "usr/lib/node_modules/npm/node_modules/semver/package.json",
            "app/node_modules/.pnpm/a@1.0.0/node_modules/a/package.json",
        ] {
            assert!(is_manifest(yes), "{yes}");
        }
        for no in [
            "app/package.json",
            "package.json",
            "node_modules/package.json",
            "node_modules/lodash/test/fixtures/package.json",
            "node_modules/@babel/package.json",
            "node_modules/@/x/package.json",
            "node_modules//package.json",
            "node_modules/lodash/index.js",
        ] {
            assert!(!is_manifest(no), "{no}");
        }
    }

    #[test]
    fn reads_name_and_version() {
        let found = parse(br#"{"name": "@babel/core", "version": "7.23.9", "deps": {}}"#);
        assert_eq!(
            found.facts,
            vec![Fact {
                ecosystem: Ecosystem::Named("npm"),
                name: "@babel/core".into(),
                version: "7.23.9".into(),
                binary: None,
            }]
        );
        assert!(found.notes.is_empty());
    }

    #[test]
    fn skips_manifests_without_both() {
        assert_eq!(parse(br#"{"name": "x"}"#), Found::default());
        assert_eq!(parse(br#"{"version": "1.0.0"}"#), Found::default());
        assert_eq!(
            parse(br#"{"name": 1, "version": "1.0.0"}"#),
            Found::default()
        );
        assert_eq!(
            parse(br#"{"name": "", "version": "1.0.0"}"#),
            Found::default()
        );
        assert_eq!(parse(b"[]").notes.len(), 1);
        assert_eq!(parse(b"\xff{").notes.len(), 1);
        let deep = "[".repeat(100_000);
        assert_eq!(parse(deep.as_bytes()).notes.len(), 1);
    }
}
