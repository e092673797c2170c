//! The SQLite backend: one connection (SQLite has one writer), WAL with `synchronous = FULL`.
use super::{DbError, Row, Tx, Value};
use gramgrid_net::secrets::Sealer;
use rusqlite::types::{ToSqlOutput, ValueRef};

pub(super) fn open(path: &std::path::Path) -> Result<rusqlite::Connection, DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| DbError::Dir {
            path: dir.to_owned(),
            source,
        })?;
    }
    // Voucher secrets, meter keys and phone numbers live here: owner only, before SQLite writes a
    // byte (its -wal and -shm files take the database file's mode).
    gramgrid_net::files::ensure_private(path, gramgrid_net::files::OWNER_ONLY).map_err(
        |source| DbError::Dir {
            path: path.to_owned(),
            source,
        },
    )?;
    let conn = rusqlite::Connection::open(path)?;
    // Another process may hold the write lock for a moment (`central import-meters` beside a
    // running `central serve`): wait for it rather than fail.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Durable before acknowledged: every commit is fsynced (see ARCHITECTURE.md).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

pub(super) fn transaction<T, E: From<DbError>>(
    conn: &mut rusqlite::Connection,
    sealer: &Sealer,
    f: impl FnOnce(&mut dyn Tx) -> Result<T, E>,
) -> Result<T, E> {
    // IMMEDIATE takes the write lock at BEGIN (waiting up to the busy timeout), so a transaction
    // never fails half-way on upgrading a read to a write when another process wrote meanwhile.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(DbError::from)?;
    let mut wrapped = SqliteTx(tx, sealer);
    let out = f(&mut wrapped)?;
    wrapped.0.commit().map_err(DbError::from)?;
    Ok(out)
}

struct SqliteTx<'a>(rusqlite::Transaction<'a>, &'a Sealer);

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
        })
    }
}

/// `$1` → `?1`: SQLite would read `$1` as a named parameter numbered by first appearance.
fn dialect(sql: &str) -> String {
    sql.replace('$', "?")
}

fn unique(error: rusqlite::Error) -> DbError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => DbError::Unique(error.to_string()),
        _ => DbError::Sqlite(error),
    }
}

impl Tx for SqliteTx<'_> {
    fn sealer(&self) -> &Sealer {
        self.1
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let mut statement = self.0.prepare_cached(&dialect(sql))?;
        let changed = statement
            .execute(rusqlite::params_from_iter(params))
            .map_err(unique)?;
        Ok(changed as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let mut statement = self.0.prepare_cached(&dialect(sql))?;
        let width = statement.column_count();
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    other => {
                        return Err(DbError::Type(format!(
                            "column {i} has type {:?}",
                            other.data_type()
                        )))
                    }
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }
}
