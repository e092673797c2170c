//! The gateway's SQLite store: schema migrations, accounts and meters, and the durability policy.
//!
//! Durability policy:
//! - The database runs in WAL mode with `synchronous = FULL`, so every commit is fsynced: once a
//!   method here returns `Ok`, what it wrote survives a power cut.
//! - Money events (recharges, charges, adjustments, emergency credit), relay commands and their
//!   state changes, overrides, alerts and technicians' actions are committed before the method
//!   returns, one transaction per call: nothing is acknowledged before it is durable.
//! - Readings: [`Store::ingest`] stores and rates a batch in one transaction. The meter link passes
//!   each meter report as it arrives and advances its poll cursor only after the commit, so a power
//!   cut loses nothing stored and the meter is asked again for what was not.
//! - Backups use SQLite's online backup API ([`Store::backup_to`]), never a file copy.
mod anomalies;
mod audit;
mod commands;
mod events;
mod guard;
mod link;
mod load;
mod messages;
mod money;
mod netmeter;
mod outbox;
mod readings;
mod schema;
mod stock;
mod sync;
mod technicians;
mod views;

pub use audit::{AuditInputs, ConsumerFacts, TransformerMeter};
pub use commands::{Alert, AlertUploads, OverrideRecord, RelayCommand};
pub use events::{StoredMeterEvent, SupplyOutage};
pub use guard::{GuardMarks, HeldPass};
pub use link::{DlmsAssociation, DlmsIc, Fcnt, LinkSession};
pub use load::{LoadTripped, Overload};
pub use messages::ModemMessage;
pub use readings::{IngestReport, MeterReading};
pub use stock::{MeterSwap, StockMeter};
pub use sync::SyncCursors;
pub use technicians::{TechnicianAccount, TechnicianAction};

use chrono::{DateTime, Utc};
use gramgrid_core::policy::RelayState;
use gramgrid_core::rating::{RegisterReading, EXPORT_UNKNOWN};
use gramgrid_core::tariff::Category;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A signed value of `sync_state` (a time, a skew), if set.
fn signed_state_in(tx: &rusqlite::Transaction<'_>, key: &str) -> Result<Option<i64>> {
    Ok(tx
        .prepare_cached("SELECT value FROM sync_state WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

fn set_signed_state_in(tx: &rusqlite::Transaction<'_>, key: &str, value: i64) -> Result<()> {
    tx.prepare_cached("INSERT INTO sync_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2")?
        .execute(params![key, value])?;
    Ok(())
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key file sealing the meter session keys is missing, unreadable or another one.
    #[error(transparent)]
    Secrets(#[from] gramgrid_net::secrets::SecretsError),
    /// The database file could not be opened or set up (WAL, `synchronous = FULL`, foreign keys).
    #[error("cannot open the database {path}: {source}; check that the directory exists and is writable")]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer gramgrid; it is left untouched.
    #[error("the database {path} has schema version {found}, newer than this gramgrid knows ({known}); run the gramgrid version that wrote it, or a newer one")]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its schema version (`PRAGMA user_version`).
        found: i64,
        /// The newest version this build knows (the number of migrations).
        known: i64,
    },
    /// A migration failed `PRAGMA foreign_key_check` and was rolled back.
    #[error("schema migration {version} of {path} would leave {rows} rows referring to missing rows (first in table {table}); it was rolled back: keep the file and report this")]
    MigrationForeignKeys {
        /// The database file.
        path: PathBuf,
        /// The schema version the migration would have reached.
        version: i64,
        /// How many rows refer to missing ones.
        rows: usize,
        /// The table of the first such row.
        table: String,
    },
    /// SQLite reported a full disk; the transaction was rolled back.
    #[error("the disk holding the database is full; nothing from the failed transaction was written: free space and retry")]
    DiskFull,
    /// Free space is below the reserve kept for money and relay records: readings are not stored.
    #[error("only {free_mib} MiB free on the data disk, below the {reserve_mib} MiB kept for money and relay records: readings stay on the meters (a week of them) until space is freed")]
    ReadingsShed {
        /// Free space (MiB).
        free_mib: u64,
        /// The configured reserve (MiB).
        reserve_mib: u64,
    },
    /// The storage (SD card) failed a read or a write; the transaction was rolled back.
    #[error("the gateway's storage failed a read or write ({0}); nothing from the failed operation was acknowledged: check the SD card with `gramgrid gateway verify`, and restore the latest backup if it fails")]
    StorageFault(rusqlite::Error),
    /// No account with this id in the store.
    #[error("no account '{0}'")]
    UnknownAccount(String),
    /// No meter with this store id (`meters.id`), or none in service where one must be.
    #[error("no meter '{0}'")]
    UnknownMeter(String),
    /// A money event id already stored with different content (ids are never reused).
    #[error(
        "event id '{0}' is already recorded with different content; an id must never be reused"
    )]
    EventIdConflict(String),
    /// The voucher code does not verify against the published keys (malformed, bad signature,
    /// unknown or revoked key, expired, ...).
    #[error("voucher refused: {0}")]
    VoucherRefused(#[from] gramgrid_proto::voucher::VoucherError),
    /// The voucher was already redeemed; a voucher is spent once.
    #[error("voucher already redeemed {where_spent} at {at}; it cannot be used twice")]
    VoucherSpent {
        /// `here` (redeemed at this gateway) or `elsewhere` (central revoked it after a redemption
        /// at central or another gateway).
        where_spent: String,
        /// When this gateway recorded it spent (UTC): the redemption here, or the arrival of
        /// central's revocation.
        at: DateTime<Utc>,
    },
    /// A stored or published record (outbox row, session keys, published config) could not be
    /// encoded or decoded.
    #[error("cannot encode or decode a stored record: {0}")]
    Encoding(String),
    /// Rating a reading against the tariff book failed.
    #[error("rating failed: {0}")]
    Rating(#[from] gramgrid_core::rating::RatingError),
    /// A technician's commissioning or replacement cannot be done as asked (the meter is not in
    /// stock, the account has no meter to replace, the final register went back, ...).
    #[error("meter installation refused: {0}")]
    InstallRefused(String),
    /// No breaker hold with this id.
    #[error("no breaker hold '{0}'; `gramgrid gateway holds` lists them")]
    UnknownHold(String),
    /// The hold was released before; a release is used once.
    #[error("breaker hold '{id}' was already released by {by} at {at}")]
    HoldAlreadyReleased {
        /// The hold.
        id: String,
        /// Who released it.
        by: String,
        /// When (UTC).
        at: DateTime<Utc>,
    },
    /// Any other SQLite error.
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// A database file could not be created or given its owner-only mode.
    #[error(
        "cannot create {path} owner-only: {detail}; check the data directory and its permissions"
    )]
    File {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        detail: String,
    },
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::DiskFull,
            Some(rusqlite::ErrorCode::SystemIoFailure) => StoreError::StorageFault(error),
            _ => StoreError::Sqlite(error),
        }
    }
}

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// A consumer account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account id (as central knows it; alert and event ids contain it).
    pub id: String,
    /// The consumer's name.
    pub consumer_name: String,
    /// Tariff category: selects the tariff versions that rate its energy and fixed charges.
    pub category: Category,
    /// The consumer's phone number, if known.
    pub phone: Option<String>,
    /// When the account was opened (UTC); fixed charges start on its Asia/Kolkata day.
    pub created_at: DateTime<Utc>,
}

/// A meter being installed on an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterInstall {
    /// The meter's serial number (unique in the store).
    pub serial: String,
    /// The account it is installed on.
    pub account: String,
    /// When it went into service (UTC): the account's previous meter is removed at this instant,
    /// and readings from before it are refused.
    pub installed_at: DateTime<Utc>,
    /// The register read at installation, if known: it becomes the meter's first reading.
    pub initial_register_wh: Option<i64>,
}

/// What rating needs to know about a meter, cached in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MeterInfo {
    account: String,
    category: Category,
    installed_at: i64,
    removed_at: Option<i64>,
    /// The meter whose slabs this one is billed in: itself, or for a replacement the meter it
    /// replaced (so the account's month continues across the swap).
    billing: i64,
}

/// The gateway database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    meters: HashMap<i64, MeterInfo>,
    /// The transformer meters (role `dt`): installed and removed at (UTC seconds).
    transformers: HashMap<i64, (i64, Option<i64>)>,
    /// Each meter's latest reading (mirror of `meter_cursor`).
    cursors: HashMap<i64, RegisterReading>,
    /// Segment totals read so far (mirror of rows of `segment_energy`).
    segments: HashMap<readings::SegmentRow, readings::SegmentTotals>,
    /// Tariff version name → small integer used in `segment_energy`.
    versions: HashMap<String, i64>,
    /// The earliest reading time stored since the energy audit last asked (in memory): a day
    /// already audited that it falls in is audited again.
    stored_since_audit: Option<i64>,
    /// Arrival sequence the next stored reading gets (the bulk upload lane's origin sequence).
    next_reading_seq: i64,
    /// Seals the meter session keys at rest, with the key in `secrets.key` beside the database.
    sealer: gramgrid_net::secrets::Sealer,
    /// While the gateway's modem sends a message, the outbox is not offered to central from this
    /// sequence on (`messages`): the notice is amended to say it was sent before anyone sees it.
    outbox_hold: Option<u64>,
}

/// The file beside a gateway database that holds the key sealing its meter session keys: a copy
/// of the database alone (a backup) reveals no key.
pub fn secrets_key_path(database: &Path) -> PathBuf {
    database.with_file_name("secrets.key")
}

pub(crate) use gramgrid_core::civil::{from_ts, ts};

/// The serial of a meter id (for events that leave the gateway).
fn serial_of(tx: &rusqlite::Transaction<'_>, meter: i64) -> Result<String> {
    Ok(tx
        .prepare_cached("SELECT serial FROM meters WHERE id = ?1")?
        .query_row([meter], |r| r.get(0))
        .optional()?
        .unwrap_or_else(|| format!("#{meter}")))
}

/// Creates a database file owner-only before SQLite opens it (or narrows an existing one).
fn private_file(path: &Path) -> Result<()> {
    gramgrid_net::files::ensure_private(path, gramgrid_net::files::OWNER_ONLY).map_err(|e| {
        StoreError::File {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    })
}

/// Switches a connection to write-ahead logging. Two processes making a new file at once can both
/// try; SQLite answers the loser "busy" at once, without calling the busy handler, so it waits here.
fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

impl Store {
    /// Opens (creating if needed) a database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        // Meter keys and phone numbers live here: owner only, before SQLite writes a byte (its
        // -wal and -shm files take the database file's mode).
        private_file(path)?;
        let conn = Connection::open(path).map_err(open_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_error)?;
        enable_wal(&conn).map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_error)?;
        let sealer = gramgrid_net::secrets::Sealer::load_or_create(&secrets_key_path(path))?;
        let mut store = Store {
            sealer,
            conn,
            path: path.to_path_buf(),
            meters: HashMap::new(),
            transformers: HashMap::new(),
            cursors: HashMap::new(),
            segments: HashMap::new(),
            versions: HashMap::new(),
            next_reading_seq: 1,
            stored_since_audit: None,
            outbox_hold: None,
        };
        store.migrate()?;
        store.seal_stored_keys()?;
        store.load_caches()?;
        Ok(store)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<()> {
        let known = schema::MIGRATIONS.len() as i64;
        let found = self.schema_version()?;
        if found > known {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found,
                known,
            });
        }
        if found == known {
            return Ok(());
        }
        // The pragma is a no-op inside a transaction: it is switched off around them all.
        self.conn.pragma_update(None, "foreign_keys", "OFF")?;
        let migrated = self.apply_migrations();
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        migrated
    }

    /// Applies the missing migrations, each in its own transaction, committed only when no row
    /// refers to a missing one. Each takes the write lock before it reads the version: another
    /// process opening the same file at the same time (the daemon and a technician's command at
    /// first boot) waits, then finds the step done instead of applying it twice.
    fn apply_migrations(&mut self) -> Result<()> {
        loop {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let Some(sql) = schema::MIGRATIONS.get(version as usize) else {
                return Ok(());
            };
            tx.execute_batch(sql)?;
            let dangling: Vec<String> = tx
                .prepare("PRAGMA foreign_key_check")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if let Some(table) = dangling.first() {
                return Err(StoreError::MigrationForeignKeys {
                    path: self.path.clone(),
                    version: version + 1,
                    rows: dangling.len(),
                    table: table.clone(),
                });
            }
            tx.pragma_update(None, "user_version", version + 1)?;
            tx.commit()?;
            tracing::info!(version = version + 1, path = %self.path.display(), "applied schema migration");
        }
    }

    fn load_caches(&mut self) -> Result<()> {
        let mut meters = self.conn.prepare(
            "SELECT m.id, m.account, a.category, m.installed_at, m.removed_at, COALESCE(m.billing_meter, m.id)
             FROM meters m JOIN accounts a ON a.id = m.account",
        )?;
        self.meters = meters
            .query_map([], |r| {
                let category: String = r.get(2)?;
                Ok((
                    r.get(0)?,
                    MeterInfo {
                        account: r.get(1)?,
                        category: Category::parse(&category).unwrap_or(Category::Domestic),
                        installed_at: r.get(3)?,
                        removed_at: r.get(4)?,
                        billing: r.get(5)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut transformers = self
            .conn
            .prepare("SELECT id, installed_at, removed_at FROM meters WHERE role = 'dt'")?;
        self.transformers = transformers
            .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
            .collect::<rusqlite::Result<_>>()?;
        let mut cursors = self
            .conn
            .prepare("SELECT meter, at, register_wh, export_wh FROM meter_cursor")?;
        self.cursors = cursors
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    RegisterReading {
                        at: from_ts(r.get(1)?),
                        register_wh: r.get(2)?,
                        export_wh: r.get(3)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        self.next_reading_seq =
            self.conn
                .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM readings", [], |r| {
                    r.get(0)
                })?;
        let mut versions = self.conn.prepare("SELECT name, id FROM tariff_versions")?;
        self.versions = versions
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(())
    }

    /// Creates an account or updates its name, category and phone.
    pub fn upsert_account(&mut self, account: &Account) -> Result<()> {
        let tx = self.conn.transaction()?;
        upsert_account_in(&tx, account)?;
        tx.commit()?;
        for info in self.meters.values_mut().filter(|m| m.account == account.id) {
            info.category = account.category;
        }
        Ok(())
    }

    /// The accounts served here (not moved to another gateway), by id.
    pub fn accounts(&self) -> Result<Vec<Account>> {
        let mut statement = self.conn.prepare(
            "SELECT id, consumer_name, category, phone, created_at FROM accounts WHERE removed_at IS NULL ORDER BY id",
        )?;
        let rows = statement.query_map([], |r| {
            let category: String = r.get(2)?;
            Ok(Account {
                id: r.get(0)?,
                consumer_name: r.get(1)?,
                category: Category::parse(&category).unwrap_or(Category::Domestic),
                phone: r.get(3)?,
                created_at: from_ts(r.get(4)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Installs a meter on an account, replacing (removing) the account's current meter if any.
    /// Returns the meter's id. Installing the same serial again on the same account is a no-op.
    pub fn install_meter(&mut self, install: &MeterInstall) -> Result<i64> {
        if let Some(id) = self.meter_id(&install.serial)? {
            return Ok(id);
        }
        let tx = self.conn.transaction()?;
        let id = install_meter_in(&tx, install, self.next_reading_seq)?;
        tx.commit()?;
        self.load_caches()?;
        Ok(id)
    }

    /// The id of a meter by serial.
    pub fn meter_id(&self, serial: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT id FROM meters WHERE serial = ?1", [serial], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// The account's meter in service (not removed), with its id and serial.
    pub fn active_meter(&self, account: &str) -> Result<Option<(i64, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, serial FROM meters WHERE account = ?1 AND removed_at IS NULL",
                [account],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The account a meter in service belongs to (None for an unknown or removed meter), from the
    /// in-memory meter cache.
    pub fn account_in_service(&self, meter: i64) -> Option<String> {
        self.meters
            .get(&meter)
            .filter(|m| m.removed_at.is_none())
            .map(|m| m.account.clone())
    }

    /// The last relay state the meter reported.
    pub fn relay_state(&self, meter: i64) -> Result<RelayState> {
        let state: String = self
            .conn
            .query_row(
                "SELECT relay_state FROM meters WHERE id = ?1",
                [meter],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::UnknownMeter(meter.to_string()))?;
        Ok(match state.as_str() {
            "connected" => RelayState::Connected,
            "disconnected" => RelayState::Disconnected,
            _ => RelayState::Unknown,
        })
    }

    /// Policy state: when the account's balance was first seen at or below the threshold.
    pub fn below_threshold_since(&self, account: &str) -> Result<Option<DateTime<Utc>>> {
        let value: Option<i64> = self.conn.query_row(
            "SELECT below_threshold_since FROM accounts WHERE id = ?1",
            [account],
            |r| r.get(0),
        )?;
        Ok(value.map(from_ts))
    }

    /// Records the policy's "below threshold since" for an account.
    pub fn set_below_threshold_since(
        &mut self,
        account: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE accounts SET below_threshold_since = ?2 WHERE id = ?1",
            params![account, since.map(ts)],
        )?;
        Ok(())
    }

    /// Writes a consistent copy of the live database to `target` with SQLite's online backup API.
    pub fn backup_to(&self, target: &Path) -> Result<()> {
        private_file(target)?;
        let mut destination = Connection::open(target)?;
        let backup = rusqlite::backup::Backup::new(&self.conn, &mut destination)?;
        backup.run_to_completion(256, std::time::Duration::from_millis(0), None)?;
        Ok(())
    }
}

/// Creates or updates an account inside a transaction.
fn upsert_account_in(tx: &rusqlite::Transaction<'_>, account: &Account) -> Result<()> {
    tx.execute(
        "INSERT INTO accounts (id, consumer_name, category, phone, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET consumer_name = ?2, category = ?3, phone = ?4, removed_at = NULL",
        params![account.id, account.consumer_name, account.category.as_str(), account.phone, ts(account.created_at)],
    )?;
    Ok(())
}

/// Installs a meter inside a transaction (see [`Store::install_meter`]); its installation reading,
/// if any, gets arrival sequence `reading_seq`. The caller reloads the caches after commit.
fn install_meter_in(
    tx: &rusqlite::Transaction<'_>,
    install: &MeterInstall,
    reading_seq: i64,
) -> Result<i64> {
    tx.query_row(
        "SELECT 1 FROM accounts WHERE id = ?1",
        [&install.account],
        |_| Ok(()),
    )
    .optional()?
    .ok_or_else(|| StoreError::UnknownAccount(install.account.clone()))?;
    if let Some(id) = tx
        .query_row(
            "SELECT id FROM meters WHERE serial = ?1",
            [&install.serial],
            |r| r.get(0),
        )
        .optional()?
    {
        return Ok(id);
    }
    let at = ts(install.installed_at);
    tx.execute(
        "UPDATE meters SET removed_at = ?2 WHERE account = ?1 AND removed_at IS NULL",
        params![install.account, at],
    )?;
    tx.execute(
        "INSERT INTO meters (serial, account, installed_at) VALUES (?1, ?2, ?3)",
        params![install.serial, install.account, at],
    )?;
    let id = tx.last_insert_rowid();
    if let Some(register_wh) = install.initial_register_wh {
        tx.execute(
            "INSERT INTO readings (at, meter, register_wh, export_wh, charge_paise, seq) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            params![at, id, register_wh, EXPORT_UNKNOWN, reading_seq],
        )?;
        tx.execute(
            "INSERT INTO meter_cursor (meter, at, register_wh, export_wh) VALUES (?1, ?2, ?3, ?4)",
            params![id, at, register_wh, EXPORT_UNKNOWN],
        )?;
        sync::note_unacked_reading(tx, at)?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests;
