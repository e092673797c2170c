//! The PostgreSQL backend: the synchronous `postgres` client on a storage worker thread.
use super::{DbError, Row, Tx, Value};
use ::postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use ::postgres::{Client, NoTls, Statement};
use gramgrid_net::secrets::Sealer;
use std::collections::HashMap;

/// A connection and its prepared statements: the central's SQL is a small fixed set, so each is
/// parsed and planned once per connection instead of once per call.
pub(super) struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
}

pub(super) fn open(url: &str) -> Result<PgConn, DbError> {
    Ok(PgConn {
        client: Client::connect(url, NoTls)?,
        statements: HashMap::new(),
    })
}

impl PgConn {
    /// Whether the server dropped the connection.
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

pub(super) fn transaction<T, E: From<DbError>>(
    conn: &mut PgConn,
    sealer: &Sealer,
    f: impl FnOnce(&mut dyn Tx) -> Result<T, E>,
) -> Result<T, E> {
    let tx = conn.client.transaction().map_err(DbError::from)?;
    let mut wrapped = PgTx {
        tx,
        statements: &mut conn.statements,
        sealer,
    };
    let out = f(&mut wrapped)?;
    wrapped.tx.commit().map_err(DbError::from)?;
    Ok(out)
}

struct PgTx<'a> {
    tx: ::postgres::Transaction<'a>,
    statements: &'a mut HashMap<String, Statement>,
    sealer: &'a Sealer,
}

impl PgTx<'_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.tx.prepare(sql)?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Text(v) => v.as_str().to_sql(ty, out),
        }
    }

    // The server infers each placeholder's type from the SQL; a Value fits integer and text ones.
    fn accepts(ty: &Type) -> bool {
        [Type::INT8, Type::INT4, Type::TEXT, Type::VARCHAR].contains(ty)
    }

    to_sql_checked!();
}

fn unique(error: ::postgres::Error) -> DbError {
    match error.code() {
        Some(code) if *code == ::postgres::error::SqlState::UNIQUE_VIOLATION => {
            DbError::Unique(error.to_string())
        }
        _ => DbError::Postgres(error),
    }
}

fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// One column of an `UNNEST` insert, typed by its first non-NULL value.
enum Column {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
}

impl Tx for PgTx<'_> {
    fn sealer(&self) -> &Sealer {
        self.sealer
    }

    /// One `INSERT ... SELECT * FROM UNNEST($1::bigint[], ...)` per call: a single short statement
    /// however many rows, instead of parsing a statement with thousands of placeholders.
    fn insert_many(
        &mut self,
        table_and_columns: &str,
        width: usize,
        rows: &[Vec<Value>],
        suffix: &str,
    ) -> Result<u64, DbError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut columns: Vec<Column> = (0..width)
            .map(|c| {
                match rows
                    .iter()
                    .find_map(|r| r.get(c).filter(|v| **v != Value::Null))
                {
                    Some(Value::Text(_)) => Column::Text(Vec::with_capacity(rows.len())),
                    _ => Column::Int(Vec::with_capacity(rows.len())),
                }
            })
            .collect();
        for row in rows {
            for (c, column) in columns.iter_mut().enumerate() {
                match (column, row.get(c)) {
                    (Column::Int(values), Some(Value::Int(v))) => values.push(Some(*v)),
                    (Column::Text(values), Some(Value::Text(v))) => values.push(Some(v.clone())),
                    (Column::Int(values), Some(Value::Null) | None) => values.push(None),
                    (Column::Text(values), Some(Value::Null) | None) => values.push(None),
                    (_, Some(other)) => {
                        return Err(DbError::Type(format!("column {c} mixes types: {other:?}")))
                    }
                }
            }
        }
        let casts: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(c, column)| match column {
                Column::Int(_) => format!("${}::bigint[]", c + 1),
                Column::Text(_) => format!("${}::text[]", c + 1),
            })
            .collect();
        let sql = format!(
            "INSERT INTO {table_and_columns} SELECT * FROM UNNEST({}) {suffix}",
            casts.join(", ")
        );
        let params: Vec<&(dyn ToSql + Sync)> = columns
            .iter()
            .map(|column| match column {
                Column::Int(values) => values as &(dyn ToSql + Sync),
                Column::Text(values) => values as &(dyn ToSql + Sync),
            })
            .collect();
        let statement = self.statement(&sql)?;
        self.tx.execute(&statement, &params).map_err(unique)
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64, DbError> {
        let statement = self.statement(sql)?;
        self.tx.execute(&statement, &params(values)).map_err(unique)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>, DbError> {
        let statement = self.statement(sql)?;
        let rows = self.tx.query(&statement, &params(values))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(row.len());
            for (i, column) in row.columns().iter().enumerate() {
                let value = match *column.type_() {
                    Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
                    Type::INT4 => row
                        .try_get::<_, Option<i32>>(i)?
                        .map(|v| Value::Int(i64::from(v))),
                    Type::TEXT | Type::VARCHAR => {
                        row.try_get::<_, Option<String>>(i)?.map(Value::Text)
                    }
                    ref other => {
                        return Err(DbError::Type(format!("column {i} has type {other}")));
                    }
                };
                values.push(value.unwrap_or(Value::Null));
            }
            out.push(Row(values));
        }
        Ok(out)
    }
}
