//! The scan store in SQLite: `<root>/scan.db`, beside the metadata database rather than in
//! it, so that an import of hundreds of thousands of advisory rows never holds the write
//! lock the registry's metadata writer needs. SQLite's own locking lets `ringyard vulndb
//! import` write it while the registry runs.

use super::sql::{lite, Database, Sql, SqlError, SqlResult, Value};
use rusqlite::{types::ValueRef, Connection, OpenFlags};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

pub struct Lite {
    conn: Mutex<Connection>,
}

fn err(e: rusqlite::Error) -> SqlError {
    SqlError(format!("scan database: {e}"))
}

impl Lite {
    pub fn open(path: &Path) -> SqlResult<Lite> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| SqlError(format!("opening {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(err)?;
        Ok(Lite {
            conn: Mutex::new(conn),
        })
    }
}

struct Tx<'a>(&'a rusqlite::Transaction<'a>);

fn param(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Int(n) => rusqlite::types::Value::Integer(*n),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
    }
}

impl Sql for Tx<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> SqlResult<u64> {
        let p: Vec<_> = params.iter().map(param).collect();
        let mut st = self.0.prepare_cached(&lite(sql)).map_err(err)?;
        st.execute(rusqlite::params_from_iter(p))
            .map(|n| n as u64)
            .map_err(err)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> SqlResult<Vec<Vec<Value>>> {
        let p: Vec<_> = params.iter().map(param).collect();
        let mut st = self.0.prepare_cached(&lite(sql)).map_err(err)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(p)).map_err(err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            let mut cols = Vec::with_capacity(n);
            for i in 0..n {
                cols.push(match row.get_ref(i).map_err(err)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Int(n),
                    ValueRef::Real(f) => Value::Int(f as i64),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Value::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.push(cols);
        }
        Ok(out)
    }
}

impl Database for Lite {
    fn transaction(&self, work: &mut dyn FnMut(&mut dyn Sql) -> SqlResult<()>) -> SqlResult<()> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        work(&mut Tx(&tx))?;
        tx.commit().map_err(err)
    }
}
