//! `ringyard db status` and `db migrate`: the schema version a metadata database records
//! and the versions this binary knows, for either engine. The migrations themselves are the
//! engines' own (run at every open as well); this only reads and applies them on demand.

use super::{postgres, sqlite};
use std::path::Path;

/// Which database, and what its schema is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// 0: no schema yet (a database never opened by ringyard).
    pub current: i64,
    /// The versions this binary can migrate to, in order; the last is the newest.
    pub known: Vec<i64>,
}

impl Schema {
    pub fn latest(&self) -> i64 {
        self.known.last().copied().unwrap_or(0)
    }

    /// Whether `db migrate` (or a start) would change the schema.
    pub fn needs_migration(&self) -> bool {
        self.current < self.latest()
    }

    /// Whether a newer binary wrote it: this one refuses to run on it.
    pub fn too_new(&self) -> bool {
        self.current > self.latest()
    }

    /// The status line of `db status`. Pure.
    pub fn describe(&self) -> String {
        let known = match (self.known.first(), self.known.last()) {
            (Some(a), Some(b)) if a != b => format!("versions {a} to {b}"),
            (Some(a), _) => format!("version {a}"),
            _ => "no versions".into(),
        };
        let verdict = if self.too_new() {
            "newer than this binary: upgrade ringyard, it refuses to run on it".to_string()
        } else if self.current == 0 {
            "no schema yet: migration needed (`ringyard db migrate`, or a start, applies it)".into()
        } else if self.needs_migration() {
            format!(
                "migration needed to version {} (`ringyard db migrate`, or a start, applies it)",
                self.latest()
            )
        } else {
            "up to date".into()
        };
        format!(
            "schema version {}; this binary knows {known}; {verdict}",
            self.current
        )
    }
}

/// PostgreSQL at `url`. Blocks.
pub fn postgres_status(url: &str) -> Result<Schema, String> {
    Ok(Schema {
        current: postgres::schema_version(url)?,
        known: postgres::known_versions(),
    })
}

pub fn postgres_migrate(url: &str) -> Result<Schema, String> {
    Ok(Schema {
        current: postgres::migrate_url(url)?,
        known: postgres::known_versions(),
    })
}

/// SQLite at `path` (0 when the file does not exist; nothing is created). Blocks.
pub fn sqlite_status(path: &Path) -> Result<Schema, String> {
    let known = (1..=sqlite::SCHEMA_VERSION).collect();
    if !path.is_file() {
        return Ok(Schema { current: 0, known });
    }
    let current = sqlite::recorded_version(path)?;
    Ok(Schema { current, known })
}

pub fn sqlite_migrate(path: &Path) -> Result<Schema, String> {
    drop(sqlite::SqliteEngine::open(path)?);
    sqlite_status(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let s = |current| Schema {
            current,
            known: vec![1, 2, 3],
        };
        assert!(s(0).describe().contains("no schema yet: migration needed"));
        assert!(s(2).describe().starts_with(
            "schema version 2; this binary knows versions 1 to 3; migration needed to version 3"
        ));
        assert!(s(3).describe().ends_with("up to date"));
        assert!(s(4).describe().contains("newer than this binary"));
        assert!(!s(3).needs_migration() && s(1).needs_migration() && s(4).too_new());
    }

    #[test]
    fn sqlite_status_and_migrate() {
        let dir = crate::testing::TempDir::new("ringyard-schema").unwrap();
        let path = dir.path().join("meta.db");
        let before = sqlite_status(&path).unwrap();
        assert_eq!(before.current, 0);
        assert!(!path.exists(), "status creates nothing");
        let after = sqlite_migrate(&path).unwrap();
        assert_eq!(after.current, sqlite::SCHEMA_VERSION);
        assert!(!after.needs_migration());
        assert_eq!(sqlite_status(&path).unwrap(), after);
    }
}
