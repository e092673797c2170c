//! Central storage: one SQL dialect over two backends (SQLite file, PostgreSQL), run on worker threads.
//!
//! The central logic is written once against [`Tx`]: a transaction that executes `$1`-style
//! parameterised SQL understood by both SQLite and PostgreSQL. Every call of [`Db::transaction`] is
//! one database transaction on a worker thread that owns its connection, so an async caller never
//! blocks its runtime and a closure that returns an error leaves nothing written.
//!
//! Portable SQL rules: integers are `BIGINT`, sums are `CAST(... AS BIGINT)` (PostgreSQL sums to
//! NUMERIC), upserts are `ON CONFLICT`, and no placeholder appears inside a string literal.
pub mod bell;
mod postgres;
mod schema;
mod sqlite;

use gramgrid_net::secrets::Sealer;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// What the transactions need to know about MQTT when `[mqtt]` is configured (`mqtt::enqueue`
/// queues events only then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventOutbox {
    /// `[mqtt] gateway_down_after`, in seconds.
    pub gateway_down_after_s: i64,
}

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// An integer (`BIGINT`); times are stored as UTC seconds, money as paise.
    Int(i64),
    /// Text.
    Text(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Column `i` through `pick`, which reads its variant; NULL is `None`, another variant an error.
    fn column<T>(
        &self,
        i: usize,
        what: &str,
        pick: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>, DbError> {
        match self.0.get(i) {
            Some(Value::Null) => Ok(None),
            Some(value) => pick(value).map(Some).ok_or_else(|| {
                DbError::Type(format!("column {i}: expected {what}, got {value:?}"))
            }),
            None => Err(DbError::Type(format!("no column {i}"))),
        }
    }
    /// Column `i` as an optional integer.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, DbError> {
        self.column(i, "integer", |v| match v {
            Value::Int(n) => Some(*n),
            _ => None,
        })
    }
    /// Column `i` as optional text.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        self.column(i, "text", |v| match v {
            Value::Text(t) => Some(t.clone()),
            _ => None,
        })
    }
    /// Column `i` as an integer (NULL is an error).
    pub fn int(&self, i: usize) -> Result<i64, DbError> {
        self.opt_int(i)?
            .ok_or_else(|| DbError::Type(format!("column {i} is NULL")))
    }
    /// Column `i` as text (NULL is an error).
    pub fn text(&self, i: usize) -> Result<String, DbError> {
        self.opt_text(i)?
            .ok_or_else(|| DbError::Type(format!("column {i} is NULL")))
    }
}

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// `database_url` names neither a SQLite file (`sqlite:PATH`) nor a PostgreSQL server.
    #[error("database_url '{0}' is neither sqlite:PATH nor postgres://...; fix it in the central config")]
    BadUrl(String),
    /// The SQLite backend failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL backend failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] ::postgres::Error),
    /// TLS to PostgreSQL cannot be set up as `database_url` asks (`sslmode`, `sslrootcert`), or
    /// the server does not offer TLS where it is required.
    #[error("PostgreSQL TLS: {0}")]
    PostgresTls(String),
    /// The SQLite file's directory could not be created.
    #[error("cannot create the database directory or file {path}: {source}")]
    Dir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why it could not be created.
        source: std::io::Error,
    },
    /// The database was migrated by a newer gramgrid; this one leaves it untouched.
    #[error("the database has schema version {found}, newer than this gramgrid knows ({known}); run a newer gramgrid")]
    NewerSchema {
        /// The database's schema version (the highest migration in its `schema_migrations`).
        found: i64,
        /// The latest schema version this gramgrid knows.
        known: i64,
    },
    /// A column is missing, NULL where a value is required, or of another type than read.
    #[error("unexpected column type: {0}")]
    Type(String),
    /// The storage worker threads have ended (the server is shutting down).
    #[error("the storage workers have stopped (the server is shutting down)")]
    Stopped,
    /// A unique key is already taken (on SQLite, any constraint violation); the API answers 409.
    #[error("a unique key is already taken: {0}")]
    Unique(String),
    /// A bug panicked inside a transaction: it was rolled back and the worker goes on. The log has
    /// the panic under the same id.
    #[error("internal error {id}: the transaction was rolled back (the log has the details under this id)")]
    Panicked {
        /// The error id shared by the answer and the log line.
        id: String,
    },
}

/// Rows per multi-row `INSERT` (SQLite's bundled limit is 32,766 parameters).
const ROWS_PER_STATEMENT: usize = 2000;

/// One open transaction. SQL uses `$1`, `$2`, ... placeholders.
pub trait Tx {
    /// Runs a statement; returns the number of rows changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;
    /// Runs a query and returns every row.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError>;
    /// Seals and opens the secrets stored in the database (`secrets`).
    fn sealer(&self) -> &Sealer;
    /// The MQTT event outbox's settings when `[mqtt]` is configured: events are queued only then
    /// (`mqtt::enqueue`). `None` by default.
    fn events(&self) -> Option<&EventOutbox> {
        None
    }

    /// "sqlite" or "postgres" (for the few statements the two spell differently: migrations).
    fn backend(&self) -> &'static str;

    /// Notes that this transaction appended to `gateway`'s downlink log: once it commits, the
    /// gateway's [`bell::DownlinkBell`] rings.
    fn downlink_appended(&mut self, _gateway: &str) {}

    /// The first row of a query, if any.
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
    /// Inserts many rows: `rows` of `width` values into `table_and_columns` (e.g.
    /// `readings (meter, at, register_wh)`), with `suffix` such as `ON CONFLICT DO NOTHING`. The
    /// default uses multi-row `VALUES` statements in chunks under both backends' parameter limits.
    fn insert_many(
        &mut self,
        table_and_columns: &str,
        width: usize,
        rows: &[Vec<Value>],
        suffix: &str,
    ) -> Result<u64, DbError> {
        let mut changed = 0;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut sql = format!("INSERT INTO {table_and_columns} VALUES ");
            let mut params = Vec::with_capacity(chunk.len() * width);
            for (r, row) in chunk.iter().enumerate() {
                sql.push_str(if r == 0 { "(" } else { ",(" });
                for c in 0..width {
                    if c > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("${}", r * width + c + 1));
                }
                sql.push(')');
                params.extend(row.iter().cloned());
            }
            sql.push(' ');
            sql.push_str(suffix);
            changed += self.execute(&sql, &params)?;
        }
        Ok(changed)
    }

    /// A single integer (e.g. a `CAST(SUM(..) AS BIGINT)` or `COUNT(*)`), 0 when NULL or no row.
    fn query_int(&mut self, sql: &str, params: &[Value]) -> Result<i64, DbError> {
        match self.query_opt(sql, params)? {
            Some(row) => Ok(row.opt_int(0)?.unwrap_or(0)),
            None => Ok(0),
        }
    }
}

/// `$first, $first+1, ...` (n of them), for an `IN (...)` list.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keys per `IN (...)` query.
pub const IN_CHUNK: usize = 500;

/// A connection owned by one worker thread.
enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::PgConn>),
}

impl Conn {
    /// Runs `f` in a transaction. A panic in it rolls the transaction back (the transaction's
    /// drop during unwinding) and becomes [`DbError::Panicked`], so the worker and its
    /// connection live on.
    fn transaction<T, E: From<DbError>>(
        &mut self,
        sealer: &Sealer,
        events: Option<&EventOutbox>,
        appended: &mut Vec<String>,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        let f = |tx: &mut dyn Tx| {
            f(&mut Wrapped {
                tx,
                events,
                appended,
            })
        };
        let run = std::panic::AssertUnwindSafe(|| match self {
            Conn::Sqlite(conn) => sqlite::transaction(conn, sealer, f),
            Conn::Postgres(client) => postgres::transaction(client, sealer, f),
        });
        std::panic::catch_unwind(run).unwrap_or_else(|payload| {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let panic = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(error_id = %id, panic, "a storage transaction panicked; rolled back");
            Err(DbError::Panicked { id }.into())
        })
    }

    /// Whether the connection is gone (a PostgreSQL server restarted or dropped it).
    fn is_closed(&mut self) -> bool {
        match self {
            Conn::Sqlite(_) => false,
            Conn::Postgres(client) => !client.is_usable(),
        }
    }
}

/// A backend's transaction as callers see it: with the MQTT event outbox when it is switched on
/// ([`Tx::events`]), noting the gateways whose downlink logs grew ([`Tx::downlink_appended`]).
struct Wrapped<'a> {
    tx: &'a mut dyn Tx,
    events: Option<&'a EventOutbox>,
    appended: &'a mut Vec<String>,
}

impl Tx for Wrapped<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        self.tx.execute(sql, params)
    }
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        self.tx.query(sql, params)
    }
    fn sealer(&self) -> &Sealer {
        self.tx.sealer()
    }
    fn events(&self) -> Option<&EventOutbox> {
        self.events
    }
    fn downlink_appended(&mut self, gateway: &str) {
        if !self.appended.iter().any(|g| g == gateway) {
            self.appended.push(gateway.to_owned());
        }
    }
    fn insert_many(
        &mut self,
        table_and_columns: &str,
        width: usize,
        rows: &[Vec<Value>],
        suffix: &str,
    ) -> Result<u64, DbError> {
        // The backend's own (PostgreSQL's is faster than the default).
        self.tx.insert_many(table_and_columns, width, rows, suffix)
    }
    fn backend(&self) -> &'static str {
        self.tx.backend()
    }
}

type Job = Box<dyn FnOnce(&mut Conn, &Sealer) + Send>;

/// The database: a pool of worker threads, each owning one connection.
#[derive(Clone)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
    backend: &'static str,
    events: Option<Arc<EventOutbox>>,
    bell: Arc<bell::DownlinkBell>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db({})", self.backend)
    }
}

impl Db {
    /// Opens `sqlite:PATH` (one connection: SQLite has one writer) or `postgres://...` (`connections`
    /// connections), and brings the schema up to date. Secrets are sealed with `sealer`.
    pub fn open(url: &str, connections: usize, sealer: Arc<Sealer>) -> Result<Db, DbError> {
        let (backend, workers) = if url.starts_with("sqlite:") {
            ("sqlite", 1)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            ("postgres", connections.max(1))
        } else {
            return Err(DbError::BadUrl(url.to_owned()));
        };
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let (ready_tx, ready) = mpsc::channel();
        for _ in 0..workers {
            let receiver = Arc::clone(&receiver);
            let ready_tx = ready_tx.clone();
            let url = url.to_owned();
            let sealer = Arc::clone(&sealer);
            // Each worker connects on its own thread: the sync PostgreSQL client runs its own
            // runtime, which must never be created or dropped inside an async task.
            std::thread::spawn(move || {
                let conn = match connect(&url) {
                    Ok(conn) => conn,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                drop(ready_tx);
                worker(conn, &url, &sealer, &receiver);
            });
        }
        drop(ready_tx);
        for _ in 0..workers {
            ready.recv().map_err(|_| DbError::Stopped)??;
        }
        let db = Db {
            jobs,
            backend,
            events: None,
            bell: Arc::default(),
        };
        db.blocking(schema::migrate)?;
        Ok(db)
    }

    /// "sqlite" or "postgres".
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The bells that ring when a gateway's downlink log grew (shared by this handle's clones).
    pub fn bell(&self) -> &bell::DownlinkBell {
        &self.bell
    }

    /// A job that runs `f` in a transaction on a worker's connection, hands the outcome to `done`
    /// and, once it committed, rings the bells of the gateways whose downlink logs it appended to.
    fn job<T, E>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
        done: impl FnOnce(Result<T, E>) + Send + 'static,
    ) -> Job
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let events = self.events.clone();
        let bell = Arc::clone(&self.bell);
        Box::new(move |conn: &mut Conn, sealer: &Sealer| {
            let mut appended = Vec::new();
            let outcome = conn.transaction(sealer, events.as_deref(), &mut appended, f);
            if outcome.is_ok() {
                bell.ring(&appended);
            }
            done(outcome);
        })
    }

    /// Switches the MQTT event outbox on (`Some`) for the transactions of this handle and of its
    /// clones made afterwards.
    pub(crate) fn set_events(&mut self, events: Option<EventOutbox>) {
        self.events = events.map(Arc::new);
    }

    /// Runs `f` in one transaction on a worker: committed when it returns `Ok`, rolled back otherwise.
    pub async fn transaction<T, E>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job = self.job(f, move |outcome| {
            let _ = done.send(outcome);
        });
        self.jobs.send(job).map_err(|_| DbError::Stopped)?;
        result.await.map_err(|_| DbError::Stopped)?
    }

    /// [`Db::transaction`] for callers outside an async runtime (startup, migrations).
    pub fn blocking<T, E>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (done, result) = mpsc::channel();
        let job = self.job(f, move |outcome| {
            let _ = done.send(outcome);
        });
        self.jobs.send(job).map_err(|_| DbError::Stopped)?;
        result.recv().map_err(|_| DbError::Stopped)?
    }
}

fn connect(url: &str) -> Result<Conn, DbError> {
    match url.strip_prefix("sqlite:") {
        Some(path) => sqlite::open(std::path::Path::new(path)).map(Conn::Sqlite),
        None => postgres::open(url).map(|c| Conn::Postgres(Box::new(c))),
    }
}

fn worker(mut conn: Conn, url: &str, sealer: &Sealer, jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A dropped connection (server restart, network cut) is found by a ping and reopened
        // before the job runs on it.
        if conn.is_closed() {
            match connect(url) {
                Ok(fresh) => {
                    tracing::warn!("the database connection was lost; reconnected");
                    conn = fresh;
                }
                Err(error) => {
                    tracing::error!(%error, "the database connection was lost and cannot be reopened yet")
                }
            }
        }
        job(&mut conn, sealer);
    }
}
