//! The little SQL the scan store needs, spoken to SQLite and PostgreSQL alike: statements
//! are written once with `$1`-style parameters (PostgreSQL's; rewritten to `?1` for SQLite)
//! and values cross as [`Value`], so that the store's logic exists once and the two
//! deployments cannot drift apart.

use std::fmt;

/// A column or parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl Value {
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// A failure of the database under the store, with what was being done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError(pub String);

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

/// The scan job and the API carry failures as text; `?` on a store call converts.
impl From<SqlError> for String {
    fn from(e: SqlError) -> String {
        e.0
    }
}

pub type SqlResult<T> = Result<T, SqlError>;

/// One transaction's statements.
pub trait Sql {
    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> SqlResult<u64>;
    /// Runs a query; every row, each as its columns in order.
    fn query(&mut self, sql: &str, params: &[Value]) -> SqlResult<Vec<Vec<Value>>>;
}

/// A database the store runs transactions on.
pub trait Database: Send + Sync {
    /// Runs `work` in one transaction, committed when it returns `Ok`, rolled back otherwise.
    fn transaction(&self, work: &mut dyn FnMut(&mut dyn Sql) -> SqlResult<()>) -> SqlResult<()>;
}

/// `$1` parameters as SQLite's `?1`. Pure.
pub fn lite(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// The first column of the first row as an integer (counts, versions).
pub fn first_int(rows: &[Vec<Value>]) -> Option<i64> {
    rows.first()?.first()?.int()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_for_sqlite() {
        assert_eq!(
            lite("SELECT a FROM t WHERE b = $1 AND c = $12 AND d = '$x'"),
            "SELECT a FROM t WHERE b = ?1 AND c = ?12 AND d = '$x'"
        );
    }
}
