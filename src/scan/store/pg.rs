//! The scan store in PostgreSQL: the same database as the metadata (`database.url`), its own
//! tables and its own connection, so that every node of a fleet reads one vulnerability
//! database and one set of results.

use super::sql::{Database, Sql, SqlError, SqlResult, Value};
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls};
use std::sync::Mutex;

pub struct Pg {
    url: String,
    /// One connection, made again after a failure (the next transaction reconnects).
    conn: Mutex<Option<Client>>,
}

fn err(e: postgres::Error) -> SqlError {
    // The driver's message without the URL (which may carry a password).
    SqlError(format!("scan database: {e}"))
}

impl Pg {
    pub fn open(url: &str) -> SqlResult<Pg> {
        let pg = Pg {
            url: url.to_string(),
            conn: Mutex::new(None),
        };
        pg.transaction(&mut |_| Ok(()))?;
        Ok(pg)
    }
}

/// SQL NULL for a parameter of any type (`Option<T>::None` is typed, and refused where the
/// column's type is another).
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        Ok(postgres::types::IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

struct Tx<'a, 'b>(&'a mut postgres::Transaction<'b>);

fn params(values: &[Value]) -> Vec<Box<dyn ToSql + Sync>> {
    values
        .iter()
        .map(|v| -> Box<dyn ToSql + Sync> {
            match v {
                Value::Null => Box::new(Null),
                Value::Int(n) => Box::new(*n),
                Value::Text(s) => Box::new(s.clone()),
            }
        })
        .collect()
}

impl Sql for Tx<'_, '_> {
    fn execute(&mut self, sql: &str, values: &[Value]) -> SqlResult<u64> {
        let owned = params(values);
        let p: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| &**b as _).collect();
        self.0.execute(sql, &p).map_err(err)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> SqlResult<Vec<Vec<Value>>> {
        let owned = params(values);
        let p: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| &**b as _).collect();
        let rows = self.0.query(sql, &p).map_err(err)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut cols = Vec::with_capacity(row.len());
            for (i, c) in row.columns().iter().enumerate() {
                let v = match *c.type_() {
                    Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(err)?.into(),
                    Type::INT4 => row
                        .try_get::<_, Option<i32>>(i)
                        .map_err(err)?
                        .map(i64::from)
                        .into(),
                    Type::BOOL => row
                        .try_get::<_, Option<bool>>(i)
                        .map_err(err)?
                        .map(i64::from)
                        .into(),
                    _ => row.try_get::<_, Option<String>>(i).map_err(err)?.into(),
                };
                cols.push(v);
            }
            out.push(cols);
        }
        Ok(out)
    }
}

impl Database for Pg {
    fn transaction(&self, work: &mut dyn FnMut(&mut dyn Sql) -> SqlResult<()>) -> SqlResult<()> {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = Some(
                Client::connect(&self.url, NoTls)
                    .map_err(|e| SqlError(format!("connecting to the scan database: {e}")))?,
            );
        }
        let Some(client) = slot.as_mut() else {
            return Err(SqlError("no connection to the scan database".into()));
        };
        let result = (|| {
            let mut tx = client.transaction().map_err(err)?;
            work(&mut Tx(&mut tx))?;
            tx.commit().map_err(err)
        })();
        if result.is_err() && client.is_closed() {
            *slot = None;
        }
        result
    }
}
