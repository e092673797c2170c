//! The central server: accounts, recharges, vouchers, balances and gateway sync over one database.
//!
//! `Central` is the library face (the HTTP API in `api` and the sync endpoint in `sync` are thin
//! shells over it). Every state change is one database transaction that also appends, for each
//! gateway concerned, the downlink record that tells it.
//!
//! Public: [`Central`] and [`CentralConfig`] (with its [`ApiToken`]s and their [`Scope`]s);
//! `server` (start and serve), `api` (routes), `sync` (the exchange), `accounts`, `vouchers`,
//! `bill` (printable monthly bills), `decisions` and `holds` (the guardrails: a reason for every cut, no mass disconnection by
//! mistake), `technicians` (accounts for the gateways' local web app, and what technicians did
//! there), `consumer` (the households' balance page), `import` (with the transformer meters it enters), `energy_audit` (the gateways' daily
//! audits of their transformers), `gateway_status` (what gateways report about themselves),
//! `notify`, `mqtt` (integration events) and `db` (for the command line, the benchmarks, the simulator and
//! the tests). Private: the
//! downlink logs, flags, the API audit, reading ingest and exports, which only the modules above
//! reach.
#![warn(missing_docs)]

pub mod accounts;
pub mod api;
mod audit;
pub mod backhaul;
pub mod bill;
mod config;
pub mod console;
pub mod consumer;
pub mod db;
pub mod decisions;
mod dlms;
mod downlink;
pub mod energy_audit;
pub mod events;
mod export;
pub mod flags;
pub mod gateway_status;
pub mod holds;
mod identity;
pub mod import;
pub mod mqtt;
pub mod notify;
mod origin;
pub mod push;
mod readings;
mod sealed_keys;
pub mod server;
mod sms_config;
pub mod staff;
pub mod stock;
pub mod sync;
pub mod technicians;
mod transformers;
pub mod vouchers;

use chrono::{DateTime, Utc};
pub use config::{
    ApiToken, CentralConfig, ConsoleConfig, ConsumerConfig, GatewaySite, MqttConfig, Scope,
    ENV_TOKEN_NAME,
};
use db::{Db, DbError};
use gramgrid_core::tariff::TariffBook;
use gramgrid_net::wallclock::WallClock;
use std::sync::{Arc, RwLock};

/// Why a central operation was refused or failed. The API maps each to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    /// The caller's input is not acceptable (an id, an amount, a range): 400.
    #[error("{0}")]
    Invalid(String),
    /// No such account, meter, gateway or record: 404.
    #[error("{0}")]
    NotFound(String),
    /// Clashes with what is stored (it already exists, an idempotency key was used for another
    /// request, a voucher was already redeemed or cancelled): 409.
    #[error("{0}")]
    Conflict(String),
    /// A gateway sent a record about an account or meter not assigned to it: 403.
    #[error("{0}")]
    Forbidden(String),
    /// A request body over the size limit (the message says the limit): 413.
    #[error("{0}")]
    TooLarge(String),
    /// A voucher code or key was refused (malformed, unknown or revoked key, bad signature,
    /// expired, another account): 422.
    #[error("voucher refused: {0}")]
    Voucher(#[from] gramgrid_proto::voucher::VoucherError),
    /// Readings could not be rated (no tariff in force for their date): 422.
    #[error("rating failed: {0}")]
    Rating(#[from] gramgrid_core::rating::RatingError),
    /// The database failed: 500 (a taken unique key: 409).
    #[error("storage: {0}")]
    Db(#[from] DbError),
    /// A stored value cannot be read back (a bug or a hand-edited database): 500.
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    /// The secrets key file is missing, unreadable or not the one the secrets were sealed with: 500.
    #[error(transparent)]
    Secrets(#[from] gramgrid_net::secrets::SecretsError),
}

/// Result alias for central operations.
pub type Result<T> = std::result::Result<T, CentralError>;

/// The central server's state: database, settings and the tariff book in force.
pub struct Central {
    db: Db,
    config: Arc<CentralConfig>,
    book: RwLock<Arc<TariffBook>>,
    clock: WallClock,
    /// The SMS provider's secret for delivery receipts (`[sms] receipt_token_file`).
    receipt_token: Option<String>,
    /// Signs consumer links and hashes login codes (`[consumer] link_key_file`).
    link_key: Arc<consumer::LinkKey>,
    /// Turns true when the server begins to shut down: held requests (`push`) answer at once.
    closing: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Central {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Central({:?})", self.db)
    }
}

impl Central {
    /// Opens (creating and migrating) the database named by the config, loads the published
    /// tariff book, and creates the first voucher signing key if there is none.
    pub fn open(config: CentralConfig) -> Result<Central> {
        Self::open_with_clock(config, WallClock::System)
    }

    /// As [`Central::open`], reading "now" from `clock` (the demo runs central on simulated time).
    pub fn open_with_clock(config: CentralConfig, clock: WallClock) -> Result<Central> {
        let sealer = Arc::new(gramgrid_net::secrets::Sealer::load_or_create(
            &config.secrets_key_file,
        )?);
        let link_key = Arc::new(consumer::LinkKey::load_or_create(&config.link_key_file())?);
        let mut db = Db::open(&config.database_url, config.database_connections, sealer)?;
        db.set_events(config.mqtt.as_ref().map(mqtt::outbox_of));
        // Secrets stored before sealing existed are sealed now; then one is opened, so a wrong
        // key file stops central here rather than at the first voucher.
        db.blocking(|tx| {
            accounts::seal_stored_meter_keys(tx)?;
            vouchers::seal_stored_secrets(tx)?;
            vouchers::check_secrets_open(tx)
        })?;
        let book = db.blocking(|tx| accounts::load_tariff_book(tx))?;
        let receipt_token = match &config.sms {
            Some(sms) => {
                notify::sms::receipt_token(sms).map_err(|e| CentralError::Invalid(e.to_string()))?
            }
            None => None,
        };
        let now = clock.now();
        db.blocking(move |tx| vouchers::ensure_key(tx, now))?;
        Ok(Central {
            db,
            config: Arc::new(config),
            book: RwLock::new(Arc::new(book)),
            clock,
            receipt_token,
            link_key,
            closing: tokio::sync::watch::channel(false).0,
        })
    }

    /// Whether the server is shutting down (turns true once, see [`Central::close`]).
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Says that the server is shutting down: requests held open (`push`) answer now, so the
    /// listener's grace period is not spent waiting for them.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// The key of consumer links and login codes.
    pub fn link_key(&self) -> &Arc<consumer::LinkKey> {
        &self.link_key
    }

    /// Whether `presented` is the SMS provider's receipt secret (compared in constant time; false
    /// when none is configured).
    pub fn receipt_token_matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.receipt_token.as_deref().is_some_and(|token| {
            !presented.is_empty() && bool::from(token.as_bytes().ct_eq(presented.as_bytes()))
        })
    }

    /// The time central stamps on what it records.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The database (for the sync endpoint, the notifier and the benchmark).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The settings in force.
    pub fn config(&self) -> &CentralConfig {
        &self.config
    }

    /// The tariff book in force.
    pub fn tariff_book(&self) -> Arc<TariffBook> {
        match self.book.read() {
            Ok(book) => Arc::clone(&book),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Runs an office write made outside the API (the `gramgrid central` commands) in one
    /// transaction with its audit row: `who` stands where the API records a token's name (e.g.
    /// `cli:asha`), `what` where it records the path (the command).
    pub fn write_as<T: Send + 'static>(
        &self,
        who: &str,
        what: &str,
        f: impl FnOnce(&mut dyn db::Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (who, what, now) = (who.to_owned(), what.to_owned(), self.now());
        self.db.blocking(move |tx| {
            let done = f(tx)?;
            audit::record(tx, &who, "CLI", &what, now)?;
            Ok(done)
        })
    }

    /// Publishes a tariff version (`accounts::publish_tariff`, decided as at `now`) as an office
    /// write outside the API, audited as [`Central::write_as`] does, and rates with the new book
    /// from then on.
    pub fn publish_tariff_as(
        &self,
        who: &str,
        version: gramgrid_core::tariff::TariffVersion,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let book = self.write_as(who, "publish tariff", move |tx| {
            accounts::publish_tariff(tx, &version, now)
        })?;
        self.set_tariff_book(book);
        Ok(())
    }

    fn set_tariff_book(&self, book: TariffBook) {
        let mut slot = match self.book.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(book);
    }
}

/// Longest reason or note accepted from a caller (a protection, a release, an arrears note), in
/// bytes.
pub const MAX_REASON_BYTES: usize = 500;

/// Checks a reason or note given by a caller: not blank, at most [`MAX_REASON_BYTES`].
pub fn check_reason(what: &str, text: &str) -> Result<()> {
    if text.trim().is_empty() || text.len() > MAX_REASON_BYTES {
        return Err(CentralError::Invalid(format!(
            "{what} must be 1 to {MAX_REASON_BYTES} bytes of text, not blank"
        )));
    }
    Ok(())
}

/// Longest id accepted from a caller (accounts, meters, gateways, idempotency keys).
const MAX_ID_LEN: usize = 64;

/// Checks an id given by a caller: 1 to 64 printable characters without spaces.
pub fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || id.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(CentralError::Invalid(format!(
            "{what} '{id}' is not valid: use 1 to {MAX_ID_LEN} characters without spaces"
        )));
    }
    Ok(())
}

/// What the unit tests share: a central on a fresh SQLite file, and the records they look at.
#[cfg(test)]
pub(crate) mod testing {
    use super::db::Tx;
    use super::{accounts, Central, CentralConfig, Result};
    use chrono::{DateTime, Duration, Utc};
    use gramgrid_core::decision::{DecisionRecord, Outcome};
    use gramgrid_core::policy::{self, AccountFacts, PolicyConfig, RelayState};
    use gramgrid_core::tariff::Category;
    use gramgrid_core::tariff::TariffBook;
    use gramgrid_proto::wire::{
        DownlinkEvent, PriorityRecord, UplinkEvent, UploadRequest, UploadResponse, PROTOCOL_VERSION,
    };

    /// An upload in this gramgrid's protocol, sent at `now`, carrying `events` as priority records
    /// `first_seq`, `first_seq + 1`, ... and nothing else (set the other fields as a test needs).
    pub(crate) fn priority_upload(
        first_seq: u64,
        events: Vec<UplinkEvent>,
        now: DateTime<Utc>,
    ) -> UploadRequest {
        UploadRequest {
            protocol: PROTOCOL_VERSION,
            sent_at: now,
            priority: events
                .into_iter()
                .zip(first_seq..)
                .map(|(event, seq)| PriorityRecord { seq, event })
                .collect(),
            readings: None,
            downlink_applied: 0,
            identity: None,
            status: None,
        }
    }

    /// A meter manifest of `(serial, dev_addr, role)` entries (`role`: `consumer` or `dt`), all
    /// with the same keys.
    pub(crate) fn manifest(
        meters: &[(&str, u32, &str)],
    ) -> gramgrid_proto::manifest::MeterManifest {
        let mut text = String::from("version = 1\n");
        for (serial, dev_addr, role) in meters {
            text += &format!(
                "[[meter]]\nserial = \"{serial}\"\ndev_addr = \"{dev_addr:08X}\"\nrole = \"{role}\"\nnwk_skey = \"00112233445566778899aabbccddeeff\"\napp_skey = \"ffeeddccbbaa99887766554433221100\"\n"
            );
        }
        gramgrid_proto::manifest::MeterManifest::parse(&text).unwrap()
    }

    /// A central server on a database of its own, removed with it.
    pub(crate) struct TestCentral {
        pub(crate) central: std::sync::Arc<Central>,
        _dir: tempfile::TempDir,
    }

    /// A flag as the tests read it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct SeenFlag {
        pub(crate) id: String,
        pub(crate) kind: String,
        pub(crate) gateway: Option<String>,
        pub(crate) account: Option<String>,
        pub(crate) detail: String,
        pub(crate) urgent: bool,
    }

    /// A fresh central.
    pub(crate) fn central() -> TestCentral {
        central_with_tokens(Vec::new())
    }

    /// A fresh central that takes these API tokens.
    pub(crate) fn central_with_tokens(api_tokens: Vec<super::ApiToken>) -> TestCentral {
        central_configured(|config| config.api_tokens = api_tokens)
    }

    /// A fresh central with its config changed by `change` (the database and secrets key stay
    /// in the central's own directory).
    pub(crate) fn central_configured(change: impl FnOnce(&mut CentralConfig)) -> TestCentral {
        central_clocked(change, gramgrid_net::wallclock::WallClock::System)
    }

    /// As [`central_configured`], reading "now" from `clock` (for background tasks that must see
    /// the scenario's time, not the machine's).
    pub(crate) fn central_clocked(
        change: impl FnOnce(&mut CentralConfig),
        clock: gramgrid_net::wallclock::WallClock,
    ) -> TestCentral {
        let dir = tempfile::tempdir().unwrap();
        let mut config = CentralConfig {
            database_url: format!("sqlite:{}", dir.path().join("central.db").display()),
            secrets_key_file: dir.path().join("secrets.key"),
            ..CentralConfig::default()
        };
        change(&mut config);
        TestCentral {
            central: std::sync::Arc::new(Central::open_with_clock(config, clock).unwrap()),
            _dir: dir,
        }
    }

    impl TestCentral {
        /// Runs `f` in one transaction.
        pub(crate) fn tx<T: Send + 'static>(
            &self,
            f: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
        ) -> Result<T> {
            self.central.db().blocking(f)
        }

        /// Applies `request` as an exchange of `gateway` at `now` (the sync endpoint's work,
        /// without the HTTP).
        pub(crate) fn upload(
            &self,
            gateway: &str,
            request: UploadRequest,
            now: DateTime<Utc>,
        ) -> UploadResponse {
            let gateway = gateway.to_owned();
            self.tx(move |tx| {
                crate::sync::apply(tx, &TariffBook::builtin(), &gateway, &request, now)
            })
            .unwrap()
        }

        /// Opens account `id` (domestic), assigned to `gateway` if given.
        pub(crate) fn account(&self, id: &str, gateway: Option<&str>) {
            let account = accounts::Account {
                id: id.into(),
                consumer_name: "Asha".into(),
                category: Category::Domestic,
                phone: None,
                gateway: gateway.map(str::to_owned),
                language: Default::default(),
                created_at: Utc::now(),
            };
            self.tx(move |tx| accounts::put_account(tx, &account, false))
                .unwrap();
        }

        /// Imports `manifest` for `gateway`, installed at `at`.
        pub(crate) fn import(
            &self,
            manifest: &gramgrid_proto::manifest::MeterManifest,
            gateway: &str,
            at: DateTime<Utc>,
        ) -> Result<crate::import::ImportReport> {
            let (manifest, gateway) = (manifest.clone(), gateway.to_owned());
            self.tx(move |tx| crate::import::import_manifest(tx, &manifest, &gateway, at))
        }

        /// Every record of `gateway`'s downlink log, in order.
        pub(crate) fn downlink(&self, gateway: &str) -> Vec<DownlinkEvent> {
            let gateway = gateway.to_owned();
            self.tx(move |tx| {
                Ok(tx
                    .query(
                        "SELECT event FROM downlink WHERE gateway = $1 ORDER BY seq",
                        &[gateway.into()],
                    )?
                    .iter()
                    .map(|row| serde_json::from_str(&row.text(0).unwrap()).unwrap())
                    .collect())
            })
            .unwrap()
        }

        /// Every flag, by id.
        pub(crate) fn flags(&self) -> Vec<SeenFlag> {
            self.tx(|tx| {
                Ok(tx
                    .query(
                        "SELECT id, kind, gateway, account, detail, urgent FROM flags ORDER BY id",
                        &[],
                    )?
                    .iter()
                    .map(|r| SeenFlag {
                        id: r.text(0).unwrap(),
                        kind: r.text(1).unwrap(),
                        gateway: r.opt_text(2).unwrap(),
                        account: r.opt_text(3).unwrap(),
                        detail: r.text(4).unwrap(),
                        urgent: r.int(5).unwrap() != 0,
                    })
                    .collect())
            })
            .unwrap()
        }
    }

    /// A central on SQLite, and one on a fresh PostgreSQL database when tests/run provides a
    /// server: for tests that run the same checks on both backends.
    pub(crate) fn backends() -> Vec<TestCentral> {
        let mut all = vec![central()];
        if let Some(url) = fresh_postgres("gg_backends") {
            all.push(central_configured(|c| c.database_url = url));
        }
        all
    }

    /// A fresh PostgreSQL database (named `prefix` and a random suffix) under
    /// GRAMGRID_TEST_POSTGRES_URL's server, if it is set.
    pub(crate) fn fresh_postgres(prefix: &str) -> Option<String> {
        let Ok(admin) = std::env::var("GRAMGRID_TEST_POSTGRES_URL") else {
            eprintln!("SKIP the PostgreSQL variant: GRAMGRID_TEST_POSTGRES_URL is not set (tests/run sets it)");
            return None;
        };
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let create = name.clone();
        let url = admin.clone();
        // The sync PostgreSQL client runs its own runtime: keep it on a thread of its own.
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client
                .batch_execute(&format!("CREATE DATABASE {create}"))
                .unwrap();
        })
        .join()
        .unwrap();
        Some(format!("{}/{name}", admin.rsplit_once('/').unwrap().0))
    }

    /// A decision for `account` at `at` with `balance_paise`, under the default policy, below the
    /// threshold for two days: a disconnect inside a window, nothing outside one.
    pub(crate) fn decision(account: &str, at: DateTime<Utc>, balance_paise: i64) -> DecisionRecord {
        let facts = AccountFacts {
            balance_paise,
            last_recharge: None,
            emergency_credit_paise: 0,
            daily_consumption_paise: None,
            relay: RelayState::Connected,
            pending: None,
            below_threshold_since: Some(at - Duration::days(2)),
            manual_override: None,
            clock_trusted: true,
            protected: false,
            arrangement: None,
            outages: Vec::new(),
            load: None,
        };
        let policy = PolicyConfig::default();
        let outcome = Outcome::from(&policy::decide(&policy, &facts, at));
        DecisionRecord {
            account: account.into(),
            at,
            policy,
            policy_version: Some(1),
            tariff_version: None,
            facts,
            outcome,
            breaker: None,
        }
    }
}
