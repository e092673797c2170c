//! The PostgreSQL backend: the synchronous `postgres` client on a storage worker thread.
use super::{DbError, Row, Tx, Value};
use ::postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use ::postgres::{Client, NoTls};

pub(super) fn open(url: &str) -> Result<Client, DbError> {
    Ok(Client::connect(url, NoTls)?)
}

pub(super) fn transaction<T, E: From<DbError>>(
    client: &mut Client,
    f: impl FnOnce(&mut dyn Tx) -> Result<T, E>,
) -> Result<T, E> {
    let tx = client.transaction().map_err(DbError::from)?;
    let mut wrapped = PgTx(tx);
    let out = f(&mut wrapped)?;
    wrapped.0.commit().map_err(DbError::from)?;
    Ok(out)
}

struct PgTx<'a>(::postgres::Transaction<'a>);

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

impl Tx for PgTx<'_> {
    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64, DbError> {
        self.0.execute(sql, &params(values)).map_err(unique)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>, DbError> {
        let rows = self.0.query(sql, &params(values))?;
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
