//! A village in one process: the central server, one gateway and the link between them, on real TLS
//! over loopback, with real SQLite files. The sync tests, `gramgrid bench sync` and the demo use it.
use crate::netem::{self, LinkPlan, Relay};
use chrono::{DateTime, Duration, Utc};
use gramgrid_central::accounts::{self, RechargeReceipt, RechargeRequest};
use gramgrid_central::vouchers::{self, IssueRequest, IssuedVoucher};
use gramgrid_central::{
    ApiToken, CentralConfig, CentralError, ConsoleConfig, ConsumerConfig, GatewaySite, Scope,
};
use gramgrid_core::tariff::Category;
use gramgrid_gateway::config::GatewayConfig;
use gramgrid_gateway::gateway::{Gateway, GatewayError};
use gramgrid_gateway::health::Health;
use gramgrid_gateway::link::SharedStats;
use gramgrid_gateway::store::{MeterReading, StoreError};
use gramgrid_gateway::sync::client::{self, SessionReport, SyncConfig, SyncError};
use gramgrid_gateway::sync::https::HttpsTransport;
use gramgrid_net::wallclock::WallClock;
use rand::Rng;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why a village could not be built or driven.
#[derive(Debug, thiserror::Error)]
pub enum VillageError {
    /// The central PKI could not be created, or the gateway not enrolled.
    #[error("central PKI: {0}")]
    Pki(#[from] gramgrid_net::pki::PkiError),
    /// The central server could not start.
    #[error("central server: {0}")]
    Start(#[from] gramgrid_central::server::StartError),
    /// A central operation failed.
    #[error("central: {0}")]
    Central(#[from] CentralError),
    /// The gateway could not be opened or run its policy pass.
    #[error("gateway: {0}")]
    Gateway(#[from] GatewayError),
    /// The gateway's store failed.
    #[error("gateway store: {0}")]
    Store(#[from] StoreError),
    /// The gateway's HTTPS transport could not be set up.
    #[error("sync transport: {0}")]
    Transport(#[from] gramgrid_gateway::sync::https::SetupError),
    /// A file, a socket or the link relay failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A task panicked while holding the gateway.
    #[error("the gateway state is unavailable (a task panicked while holding it)")]
    Poisoned,
}

/// One consumer of the village.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Household {
    /// Account id.
    pub account: String,
    /// Serial of its meter.
    pub meter: String,
    /// Tariff category.
    pub category: Category,
}

/// The consumer category of the `index`-th household: 10 % commercial, 10 % agricultural.
pub fn category_of(index: usize) -> Category {
    match index % 10 {
        0 => Category::Commercial,
        1 => Category::Agricultural,
        _ => Category::Domestic,
    }
}

/// A day's load shape: relative consumption per local hour, by category (domestic evening peak,
/// commercial daytime, agricultural pump hours).
fn hourly_weight(category: Category, hour: u32) -> u32 {
    match (category, hour) {
        (Category::Domestic, 18..=22) => 4,
        (Category::Domestic, 6..=8) => 2,
        (Category::Commercial, 9..=19) => 5,
        (Category::Agricultural, 5..=9) | (Category::Agricultural, 15..=18) => 8,
        _ => 1,
    }
}

/// Energy (Wh) one household uses in one 15-minute interval: a steady base load (refrigerator,
/// lights, a fan: 5 to 24 Wh depending on the household) plus, in the category's busy hours,
/// appliances switched on in steps of 50 Wh (an iron, a pump, a motor), as real meters see it.
pub fn interval_energy(household: usize, category: Category, hour: u32, rng: &mut impl Rng) -> i64 {
    let base = 5 + (household as i64 * 7) % 20;
    let weight = hourly_weight(category, hour);
    let appliances = if weight > 1 && rng.random_bool(0.35) {
        50 * i64::from(rng.random_range(1..=weight))
    } else {
        0
    };
    base + appliances
}

/// A village under test.
pub struct Village {
    /// The directory of central's and the gateway's files (databases, PKI, logs).
    pub dir: PathBuf,
    /// The running central server.
    pub central: gramgrid_central::server::Running,
    /// The emulated cellular link between gateway and central (faults and bandwidth set here).
    pub link: Relay,
    /// The gateway (store and policy pass), shared with whatever drives it.
    pub gateway: Arc<Mutex<Gateway>>,
    /// The configuration the gateway was opened with.
    pub gateway_config: GatewayConfig,
    /// The gateway's HTTPS transport to central, through `link`.
    pub transport: HttpsTransport,
    /// The gateway's sync settings.
    pub sync: SyncConfig,
    /// Every household, in enrolment order.
    pub households: Vec<Household>,
    /// The API token the utility's systems use.
    pub api_token: String,
    /// Where central, the sync client and the village's own calls read "now".
    pub clock: WallClock,
    /// The gateway's health as its sync sessions report it to central; a meter link started on
    /// this village counts into [`Village::link_stats`].
    pub health: Health,
    /// The counters of the village's meter link, if one is started with them.
    pub link_stats: SharedStats,
    registers: Mutex<Vec<i64>>,
}

impl Village {
    /// Builds a village of `households` meters in `dir` on the system clock: central CA and server,
    /// gateway enrolled, accounts and meters (zero registers, no radio keys) created at central and
    /// assigned to the gateway (not yet synced).
    pub async fn build(
        dir: &Path,
        gateway_id: &str,
        households: usize,
        start: DateTime<Utc>,
    ) -> Result<Village, VillageError> {
        let enrolments = (0..households)
            .map(|i| {
                let account = accounts::Account {
                    language: Default::default(),
                    id: format!("ACC{i:06}"),
                    consumer_name: format!("Household {i}"),
                    category: category_of(i),
                    phone: Some(format!("+9199{i:08}")),
                    gateway: Some(gateway_id.to_string()),
                    created_at: start,
                };
                let meter = accounts::Meter {
                    serial: format!("MTR{i:06}"),
                    account: account.id.clone(),
                    installed_at: start,
                    initial_register_wh: Some(0),
                    keys: None,
                    dlms: None,
                    relay_state: "unknown".into(),
                };
                (account, meter)
            })
            .collect();
        let any_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        Self::build_with(
            dir,
            gateway_id,
            enrolments,
            WallClock::System,
            any_port,
            None,
        )
        .await
    }

    /// Builds a village in `dir` whose central (listening on `central_addr`) and gateway read "now"
    /// from `clock`, with one meter per account as given (the accounts should name `gateway_id`;
    /// they reach the gateway at the first sync).
    pub async fn build_with(
        dir: &Path,
        gateway_id: &str,
        enrolments: Vec<(accounts::Account, accounts::Meter)>,
        clock: WallClock,
        central_addr: std::net::SocketAddr,
        sms: Option<gramgrid_central::notify::sms::SmsConfig>,
    ) -> Result<Village, VillageError> {
        std::fs::create_dir_all(dir)?;
        let pki =
            gramgrid_net::pki::CentralPki::init(&dir.join("pki"), "https://127.0.0.1:8443", &[])?;
        let bundle = pki.add_gateway(gateway_id, 30)?;
        let api_token = format!("{:032x}", rand::random::<u128>());
        let listener = tokio::net::TcpListener::bind(central_addr).await?;
        let config = CentralConfig {
            database_url: format!("sqlite:{}", dir.join("central.db").display()),
            pki_dir: dir.join("pki"),
            secrets_key_file: dir.join("secrets.key"),
            notifications_log: dir.join("notifications.log"),
            api_tokens: vec![ApiToken::new("demo", api_token.clone(), Scope::Admin)],
            sms,
            console: ConsoleConfig {
                sites: [(gateway_id.to_string(), demo_site())].into(),
                ..ConsoleConfig::default()
            },
            // Households' links point at this central (its port is known once bound).
            consumer: ConsumerConfig {
                base_url: format!("https://{}", listener.local_addr()?),
                ..ConsumerConfig::default()
            },
            ..CentralConfig::default()
        };
        let central =
            gramgrid_central::server::start_with_clock(config, listener, clock.clone()).await?;
        let link = netem::start(central.addr, LinkPlan::default()).await?;
        let sync = SyncConfig {
            bundle: Some(pki.bundle_path(gateway_id)),
            ..SyncConfig::default()
        };
        let transport = HttpsTransport::with_url(
            &pki.bundle_path(gateway_id),
            &format!("https://127.0.0.1:{}", link.addr.port()),
            sync.request_timeout,
        )?;
        let mut gateway_config = GatewayConfig::default();
        gateway_config.gateway.id = bundle.gateway_id.clone();
        gateway_config.gateway.data_dir = dir.join("gateway");
        gateway_config.sync = sync.clone();
        let gateway = Arc::new(Mutex::new(Gateway::open(gateway_config.clone())?));
        let link_stats = SharedStats::default();
        let health = Health::new(
            clock.now(),
            Some(link_stats.clone()),
            gateway_config.gateway.data_dir.clone(),
        );
        let households: Vec<Household> = enrolments
            .iter()
            .map(|(account, meter)| Household {
                account: account.id.clone(),
                meter: meter.serial.clone(),
                category: account.category,
            })
            .collect();
        let village = Village {
            dir: dir.to_path_buf(),
            central,
            link,
            gateway,
            gateway_config,
            transport,
            sync,
            registers: Mutex::new(vec![0; households.len()]),
            households,
            api_token,
            clock,
            health,
            link_stats,
        };
        village
            .central
            .central
            .db()
            .transaction(move |tx| {
                for (account, meter) in &enrolments {
                    accounts::put_account(tx, account, false)?;
                    accounts::put_meter(tx, meter, false)?;
                }
                Ok::<_, CentralError>(())
            })
            .await?;
        Ok(village)
    }

    /// One sync session through the link, as the gateway's sync client runs it. Sessions here
    /// are minutes to days apart in simulated time, so each starts on a new connection, as it
    /// would in the field (a connection is kept only seconds); its exchanges share one.
    pub async fn sync(&self) -> Result<SessionReport, SyncError> {
        self.transport.forget_connection();
        let health = Some(&self.health);
        client::session(
            &self.gateway,
            &self.transport,
            &self.sync,
            &self.clock,
            health,
        )
        .await
    }

    /// Runs `f` on the gateway.
    pub fn with_gateway<T>(
        &self,
        f: impl FnOnce(&mut Gateway) -> Result<T, StoreError>,
    ) -> Result<T, VillageError> {
        let mut gateway = self.gateway.lock().map_err(|_| VillageError::Poisoned)?;
        Ok(f(&mut gateway)?)
    }

    /// Readings of every meter for each 15-minute interval in `[from, to)`, with the village's load
    /// profiles, ingested into the gateway in one batch per interval; one policy tick per interval.
    pub fn consume(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rng: &mut impl Rng,
    ) -> Result<usize, VillageError> {
        self.consume_ticking(from, to, Duration::minutes(15), rng)
    }

    /// As [`Village::consume`], with a policy tick only every `tick_every` of simulated time.
    pub fn consume_ticking(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        tick_every: Duration,
        rng: &mut impl Rng,
    ) -> Result<usize, VillageError> {
        let mut next_tick = from;
        let mut registers = self.registers.lock().map_err(|_| VillageError::Poisoned)?;
        let mut stored = 0;
        let mut at = from;
        while at < to {
            let hour = gramgrid_core::civil::local(at)
                .format("%H")
                .to_string()
                .parse()
                .unwrap_or(0);
            let mut gateway = self.gateway.lock().map_err(|_| VillageError::Poisoned)?;
            let meter_ids: Vec<Option<i64>> = self
                .households
                .iter()
                .map(|h| gateway.store().meter_id(&h.meter))
                .collect::<Result<_, _>>()?;
            let batch: Vec<MeterReading> = self
                .households
                .iter()
                .zip(registers.iter_mut())
                .zip(meter_ids)
                .enumerate()
                .filter_map(|(i, ((h, register), id))| {
                    *register += interval_energy(i, h.category, hour, rng);
                    id.map(|meter| MeterReading {
                        meter,
                        at,
                        register_wh: *register,
                        export_wh: 0,
                    })
                })
                .collect();
            stored += gateway.ingest_readings(&batch)?.stored;
            if at >= next_tick {
                gateway.tick(at)?;
                next_tick = at + tick_every;
            }
            at += Duration::minutes(15);
        }
        Ok(stored)
    }

    /// A recharge made through the central API's logic (as a payment counter would).
    pub async fn recharge_at_central(
        &self,
        account: &str,
        amount_paise: i64,
        key: &str,
    ) -> Result<RechargeReceipt, VillageError> {
        let request = RechargeRequest {
            idempotency_key: key.into(),
            account: account.into(),
            amount_paise,
            reference: None,
        };
        let now = self.clock.now();
        Ok(self
            .central
            .central
            .db()
            .transaction(move |tx| accounts::recharge(tx, &request, now))
            .await?)
    }

    /// A voucher issued at central for an account.
    pub async fn issue_voucher(
        &self,
        account: &str,
        amount_paise: i64,
    ) -> Result<IssuedVoucher, VillageError> {
        let request = IssueRequest {
            account: account.into(),
            amount_paise,
            valid_days: 30,
        };
        let now = self.clock.now();
        Ok(self
            .central
            .central
            .db()
            .transaction(move |tx| vouchers::issue(tx, &request, now))
            .await?)
    }

    /// The balance central reports for an account.
    pub async fn central_balance(&self, account: &str) -> Result<i64, VillageError> {
        let account = account.to_string();
        Ok(self
            .central
            .central
            .db()
            .transaction(move |tx| accounts::balance_paise(tx, &account))
            .await?)
    }

    /// The balance the gateway derives for an account.
    pub fn gateway_balance(&self, account: &str) -> Result<i64, VillageError> {
        self.with_gateway(|g| {
            let rules = g.policy().arrears.clone();
            g.store().position(account, &rules).map(|p| p.balance_paise)
        })
    }

    /// Every account's balance at the gateway and at central: (account, gateway, central).
    pub async fn balances(&self) -> Result<Vec<(String, i64, i64)>, VillageError> {
        let mut out = Vec::with_capacity(self.households.len());
        for h in &self.households {
            out.push((
                h.account.clone(),
                self.gateway_balance(&h.account)?,
                self.central_balance(&h.account).await?,
            ));
        }
        Ok(out)
    }

    /// Accounts whose balances differ between gateway and central: (account, gateway, central).
    pub async fn disagreements(&self) -> Result<Vec<(String, i64, i64)>, VillageError> {
        let mut balances = self.balances().await?;
        balances.retain(|(_, gateway, central)| gateway != central);
        Ok(balances)
    }
}

/// Where the simulated village stands, for the office console's map (a village of Bastar).
fn demo_site() -> GatewaySite {
    GatewaySite {
        village: "Kothi".into(),
        lat: 19.0748,
        lon: 82.0080,
    }
}
