//! `gramgrid demo`: a whole village in one process on simulated time: central, one gateway whose
//! radio is lora-phy on an emulated SX1262, a meter fleet on the simulated air, a backhaul outage,
//! recharges and vouchers; it ends with a summary read from the databases.
//!
//! Two runtimes keep simulated time honest. The *air* runtime (one thread, tokio's paused clock)
//! runs the radio, the meter link and the meters; it only moves when the demo steps it, 15
//! simulated minutes at a time. The *office* runtime (real time) runs central, the emulated
//! cellular link and the TLS sync. Between steps the air stands still while the demo plays the
//! consumers' payments, syncs and runs the gateway's policy pass, all stamped with the simulated
//! time that a [`SimulatedClock`] gives central and the sync client alike.
pub mod guardrails;
pub mod scenario;
pub mod summary;

use crate::meter::fleet::{self, MeterHandle, PlannedMeter};
use crate::meter::light::LightRadio;
use crate::meter::supply::{Feeder, Supply};
use crate::netem::Fault;
use crate::village::{Village, VillageError};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use gramgrid_air::air::{Air, AirConfig};
use gramgrid_air::pathloss::PathLossModel;
use gramgrid_central::notify;
use gramgrid_core::policy::RelayState;
use gramgrid_core::tariff::TariffBook;
use gramgrid_gateway::daemon::{technician_launch, GatewayBackend, Services};
use gramgrid_gateway::link::{self, Link, LinkClock};
use gramgrid_gateway::local;
use gramgrid_net::wallclock::{SimulatedClock, WallClock};
use gramgrid_proto::manifest::MeterRole;
use gramgrid_proto::payload::AccessMode;
use gramgrid_radio::{RadioConfig, RadioError};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use scenario::{Channel, Consumer, Outage, Payment};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use summary::{BalanceSummary, Summary, SyncSummary};
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// The demo gateway's id (its certificate's name).
pub const GATEWAY_ID: &str = "gw-village-1";
/// How far the simulation moves between the office's turns.
const STEP: Duration = Duration::minutes(15);
/// While the backhaul is down the gateway still tries to sync, once per simulated hour.
const PROBE_EVERY_STEPS: usize = 4;
/// Sync attempts at the end before the demo gives up on agreeing balances.
const FINAL_SYNC_TRIES: usize = 5;

/// When the feeder cut begins by default: Wednesday 11:00 of a run from Tuesday 00:00.
const DEFAULT_FEEDER_CUT_AFTER: std::time::Duration = std::time::Duration::from_secs(35 * 3_600);

/// `gramgrid demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Meters (one household each) in the village.
    #[arg(long, default_value_t = 300)]
    pub meters: usize,
    /// Of those, this many speak DLMS/COSEM (IS 15959-2, docs/dlms.md) instead of payload v1:
    /// read, cut and reconnected through their own objects, beside the v1 meters. They are the
    /// first households whose link allows SF9 or faster (a profile read does not fit a slower
    /// downlink).
    #[arg(long, default_value_t = 0)]
    pub meters_dlms: usize,
    /// Simulated days, from 00:00 IST on --start.
    #[arg(long, default_value_t = 3)]
    pub days: u32,
    /// How long the backhaul is down ("0s": no outage).
    #[arg(long, default_value = "30h", value_parser = humantime::parse_duration)]
    pub outage: std::time::Duration,
    /// When the outage begins, counted from the start.
    #[arg(long, default_value = "20h", value_parser = humantime::parse_duration)]
    pub outage_after: std::time::Duration,
    /// How long the village's feeder is cut: every meter goes dark ("0s": no cut). Whole
    /// quarter-hours.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub feeder_cut: std::time::Duration,
    /// When the feeder cut begins, counted from the start; whole quarter-hours. Default: 35h
    /// (Wednesday 11:00, inside a disconnect window) when the run is long enough, else no cut.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub feeder_cut_after: Option<std::time::Duration>,
    /// First simulated day (Asia/Kolkata), YYYY-MM-DD.
    #[arg(long, default_value = "2026-12-01")]
    pub start: NaiveDate,
    /// Meters are scattered over a disc of this radius around the substation.
    #[arg(long, default_value_t = 1500.0)]
    pub radius_m: f64,
    /// Seed of the village (positions, keys, loads, consumers); the same seed gives the same summary.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep central's and the gateway's databases, PKI and logs in this directory (created if
    /// missing; must be empty). Default: a temporary directory, removed at the end.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the summary as one JSON object on stdout, without a progress bar.
    #[arg(long)]
    pub json: bool,
    /// After the simulated days, keep central, the gateway and the meters running in real time
    /// until Ctrl-C, so that the central API can be queried (the URL and a token are printed).
    #[arg(long)]
    pub serve: bool,
    /// Central's port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// With --serve, the technician app's HTTPS port on 127.0.0.1.
    #[arg(long, default_value_t = 9443)]
    pub technician_port: u16,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The command-line options are out of range or do not fit together.
    #[error("{0}")]
    Options(String),
    /// The demo's directory, or a file in it, could not be created or written.
    #[error("cannot use {path} for the demo's files: {detail}")]
    Dir {
        /// The directory or file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The real-time office runtime could not be started.
    #[error("cannot start the async runtimes: {0}")]
    Runtime(std::io::Error),
    /// Building or driving the village failed.
    #[error(transparent)]
    Village(#[from] VillageError),
    /// The technician app could not be set up for `--serve` (its certificate or the demo login).
    #[error("the technician app or the demo logins: {0}")]
    Technician(String),
    /// The messages to consumers could not be sent (the modem round or the SMS provider stand-in).
    #[error("messages to consumers: {0}")]
    Messages(String),
    /// The emulated radio, or the paused-clock air runtime, failed.
    #[error("the emulated radio failed: {0}")]
    Radio(#[from] RadioError),
    /// A sync the demo cannot go on without (at the start, or the last one) failed.
    #[error("sync with central failed {when}: {source}")]
    Sync {
        /// Which sync failed, in words for the message (at the start, or at the end after retries).
        when: &'static str,
        /// Why it failed.
        source: gramgrid_gateway::sync::client::SyncError,
    },
    /// The summary could not be read from the databases.
    #[error(transparent)]
    Summary(#[from] summary::SummaryError),
}

impl DemoArgs {
    fn outage(&self, start: DateTime<Utc>) -> Result<Option<Outage>, DemoError> {
        self.span(
            start,
            self.outage_after,
            self.outage,
            "the outage",
            "--outage",
        )
    }

    fn feeder_cut(&self, start: DateTime<Utc>) -> Result<Option<Outage>, DemoError> {
        let after = self.feeder_cut_after.unwrap_or(DEFAULT_FEEDER_CUT_AFTER);
        let whole_quarters =
            |d: std::time::Duration| d.subsec_nanos() == 0 && d.as_secs().is_multiple_of(900);
        if !whole_quarters(self.feeder_cut) || !whole_quarters(after) {
            return Err(DemoError::Options(
                "--feeder-cut and --feeder-cut-after must be whole quarter-hours, such as 1h or 35h15m"
                    .into(),
            ));
        }
        let span = self.span(
            start,
            after,
            self.feeder_cut,
            "the feeder cut",
            "--feeder-cut",
        );
        match span {
            // The default cut is left out of a run too short for it.
            Err(_) if self.feeder_cut_after.is_none() => Ok(None),
            span => span,
        }
    }

    /// The span `length` long from `after` into the run (None when `length` is zero); it must end
    /// an hour before the run does, so that the gateway can catch up.
    fn span(
        &self,
        start: DateTime<Utc>,
        after: std::time::Duration,
        length: std::time::Duration,
        what: &str,
        option: &str,
    ) -> Result<Option<Outage>, DemoError> {
        let duration = Duration::from_std(length).unwrap_or(Duration::MAX);
        if duration.is_zero() {
            return Ok(None);
        }
        let from = start + Duration::from_std(after).unwrap_or(Duration::MAX);
        let span = Outage {
            from,
            to: from + duration,
        };
        let end = start + Duration::days(i64::from(self.days));
        if span.to > end - Duration::hours(1) {
            return Err(DemoError::Options(format!(
                "{what} ({}, starting {} in) must end at least an hour before the {}-day run does, so that the gateway can catch up; shorten {option} or {option}-after, or add --days",
                humantime::format_duration(length),
                humantime::format_duration(after),
                self.days
            )));
        }
        Ok(Some(span))
    }

    fn check(&self) -> Result<(), DemoError> {
        if self.meters_dlms > self.meters {
            return Err(DemoError::Options(
                "--meters-dlms cannot exceed --meters (they are among the households)".into(),
            ));
        }
        if self.meters == 0 || self.meters > 10_000 {
            return Err(DemoError::Options(
                "--meters must be between 1 and 10000".into(),
            ));
        }
        if self.days == 0 || self.days > 60 {
            return Err(DemoError::Options("--days must be between 1 and 60".into()));
        }
        if !(self.radius_m > 0.0 && self.radius_m <= 20_000.0) {
            return Err(DemoError::Options(
                "--radius-m must be more than 0 and at most 20000 (metres)".into(),
            ));
        }
        Ok(())
    }
}

/// Where the demo keeps its files: the user's directory, or a temporary one.
enum Workspace {
    Kept(PathBuf),
    Temporary(tempfile::TempDir),
}

impl Workspace {
    fn new(dir: Option<&Path>) -> Result<Workspace, DemoError> {
        let Some(dir) = dir else {
            return tempfile::Builder::new()
                .prefix("gramgrid-demo-")
                .tempdir()
                .map(Workspace::Temporary)
                .map_err(|e| DemoError::Dir {
                    path: std::env::temp_dir(),
                    detail: e.to_string(),
                });
        };
        let fail = |detail: String| DemoError::Dir {
            path: dir.to_path_buf(),
            detail,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let mut entries = std::fs::read_dir(dir).map_err(|e| fail(e.to_string()))?;
        if entries.next().is_some() {
            return Err(fail(
                "it is not empty; give a new or empty directory (the demo never overwrites files)"
                    .into(),
            ));
        }
        Ok(Workspace::Kept(dir.to_path_buf()))
    }

    fn path(&self) -> &Path {
        match self {
            Workspace::Kept(path) => path,
            Workspace::Temporary(dir) => dir.path(),
        }
    }
}

/// The simulated village's radio side, on the air runtime.
struct AirSide {
    clock: LinkClock,
    air: Air,
    /// The households' meters, then the transformer's (the last).
    plan: Vec<PlannedMeter>,
    /// Their firmware, in the same order.
    meters: Vec<MeterHandle>,
}

/// A village that has run its simulated days (and can go on serving).
pub struct Demo {
    office: Runtime,
    air_runtime: Runtime,
    village: Village,
    clock: SimulatedClock,
    end: DateTime<Utc>,
    stop: watch::Sender<bool>,
    summary: Summary,
    workspace: Workspace,
    /// The gateway's emulated chip must outlive the link task that drives it.
    _gateway_chip: gramgrid_air::emulator::Sx126xEmulator,
}

/// The progress bar over the simulated intervals.
fn progress_bar(steps: u64, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:<42} [{bar:30}] {percent:>3}% {elapsed_precise} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

impl Demo {
    /// Builds the village and runs its simulated days.
    pub fn run(args: &DemoArgs) -> Result<Demo, DemoError> {
        let wall = std::time::Instant::now();
        args.check()?;
        let start = gramgrid_core::civil::start_of_local_day(args.start);
        let end = start + Duration::days(i64::from(args.days));
        let outage = args.outage(start)?;
        let feeder_cut = args.feeder_cut(start)?;
        let workspace = Workspace::new(args.dir.as_deref())?;
        let office = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(DemoError::Runtime)?;
        let air_runtime = crate::radio_bench::paused_runtime()?;
        let air_side = air_runtime.block_on(plan_air(args, start));
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
        let registers: Vec<u64> = air_side
            .meters
            .iter()
            .map(|m| fleet::locked(m).nvm.register_wh)
            .collect();
        let consumers = scenario::consumers(
            &air_side.plan[..args.meters],
            &registers,
            GATEWAY_ID,
            start,
            &TariffBook::builtin(),
            &mut rng,
        );
        let bypassers = scenario::bypassers(&consumers);
        for i in &bypassers {
            fleet::locked(&air_side.meters[*i]).start_bypass(scenario::bypass(start));
        }
        for i in scenario::rooftop_solar_homes(&consumers, &bypassers) {
            fleet::locked(&air_side.meters[i]).install_rooftop_solar(scenario::SOLAR_PEAK_W);
        }
        let clock = SimulatedClock::stopped_at(start);
        let enrolments = consumers
            .iter()
            .map(|c| (c.account.clone(), c.meter.clone()))
            .collect();
        // Central sends its messages through an SMS provider: a stand-in on loopback, over HTTPS.
        let provider = office
            .block_on(crate::sms_standin::SmsStandIn::start(
                &workspace.path().join("sms-provider"),
            ))
            .map_err(|e| DemoError::Messages(e.to_string()))?;
        let sms = crate::sms_standin::demo_config(&provider);
        let village = office.block_on(Village::build_with(
            workspace.path(),
            GATEWAY_ID,
            enrolments,
            WallClock::from(clock.clone()),
            SocketAddr::from(([127, 0, 0, 1], args.port)),
            Some(sms.clone()),
        ))?;
        office.block_on(enter_transformer_meter(
            &village,
            &air_side.plan[args.meters..],
            start,
        ))?;
        let mut run = Running {
            office: &office,
            village: &village,
            clock: &clock,
            air: &air_runtime,
            link_clock: air_side.clock,
            outage,
            feeder_cut,
            meters: air_side.meters.clone(),
            sync: SyncSummary::default(),
            meter_ids: HashMap::new(),
            scenes: guardrails::Scenes::default(),
            bad_publish: None,
            modem: crate::modem_standin::InProcessModem::default(),
            sms,
            _provider: provider,
        };
        run.open_accounts(&consumers, start)?;
        let (stop, stopping) = watch::channel(false);
        let chip = run.start_radio(&air_side, stopping)?;
        let mut top_ups =
            scenario::routine_top_ups(&consumers, start + Duration::hours(1), end, &mut rng);
        let (arrears, arrears_top_ups) =
            scenario::arrears(&consumers, start + Duration::hours(1), end, &mut rng);
        top_ups.extend(arrears_top_ups);
        run.enter_guardrails(&consumers, arrears, start)?;
        let good_policy = village.gateway_config.policy.clone();
        run.bad_publish =
            scenario::bad_publish_at(start, end, outage, &good_policy).map(|at| (at, good_policy));
        let bar = progress_bar(
            u64::try_from((end - start).num_minutes() / STEP.num_minutes()).unwrap_or(0),
            args.json,
        );
        run.simulate(start, end, top_ups, &mut rng, &bar)?;
        bar.finish_and_clear();
        run.settle()?;
        let sync = run.sync.clone();
        let scenes = run.scenes.clone();
        let balances = office.block_on(balances(&village))?;
        let gateway_db = village.with_gateway(|g| Ok(g.store().path().to_path_buf()))?;
        let summary = summary::read(
            &gateway_db,
            &workspace.path().join("central.db"),
            summary::Run {
                seed: args.seed,
                meters: args.meters,
                days: args.days,
                start,
                end,
                outage,
                feeder_cut,
                policy: village.gateway_config.policy.clone(),
                sync,
                balances,
                scenes,
                bypassers: bypassers
                    .iter()
                    .map(|i| consumers[*i].meter.serial.clone())
                    .collect(),
                dir: match (&workspace, args.serve) {
                    (Workspace::Temporary(_), false) => {
                        "a temporary directory (removed; keep them with --dir)".into()
                    }
                    _ => workspace.path().display().to_string(),
                },
                wall_seconds: (wall.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            },
        )?;
        let mut village = village;
        village.gateway_config.technician.listen =
            SocketAddr::from(([127, 0, 0, 1], args.technician_port));
        let demo = Demo {
            office,
            air_runtime,
            village,
            clock,
            end,
            stop,
            summary,
            workspace,
            _gateway_chip: chip,
        };
        // Kept files come with a config, so `gramgrid gateway --config DIR/gateway.toml status`
        // (holds, explain, ...) reads the village's gateway.
        if matches!(demo.workspace, Workspace::Kept(_)) {
            demo.write_gateway_config()?;
        }
        Ok(demo)
    }

    /// The summary of the simulated days, read from the databases when they ended.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// What a user needs to query the running demo.
    pub fn serving(&self) -> String {
        let dir = self.workspace.path();
        let central = &self.village.central.central;
        let consumer = gramgrid_central::consumer::make_link(
            central,
            &scenario::account_id(0),
            self.end,
            None,
        )
        .map_or_else(|e| format!("(no link: {e})"), |link| link.url);
        let url = format!("https://{}", self.village.central.addr);
        let ca = dir.join("pki").join("ca.pem");
        format!(
            "Central API:   {url}/api/v1/  (OpenAPI at {url}/api/v1/openapi.json)\n\
             Token:         {token}\n\
             CA certificate: {ca}\n\
             Try:           curl --cacert {ca} -H 'Authorization: Bearer {token}' {url}/api/v1/accounts/{account}/balance\n\
             Gateway:       gramgrid gateway status --config {config}\n\
             Technician app: https://{technician}/  (log in as {login} / {password}, a supervisor; its certificate is issued under the CA above, fingerprint: gramgrid gateway cert --config {config})\n\
             Office console: {url}/console/  (log in as {staff} / {staff_password}, an admin; the browser must trust the CA above)\n\
             Consumer page: {consumer}  (household {account}'s balance page; a link like the SMS one)\n\
             Simulated time now runs at real speed from {end}. Ctrl-C stops everything.",
            technician = self.village.gateway_config.technician.listen,
            login = DEMO_TECHNICIAN.0,
            password = DEMO_TECHNICIAN.1,
            staff = DEMO_STAFF.0,
            staff_password = DEMO_STAFF.1,
            token = self.village.api_token,
            ca = ca.display(),
            account = scenario::account_id(0),
            config = dir.join("gateway.toml").display(),
            end = gramgrid_core::civil::local(self.end).format("%a %d %b %Y %H:%M IST"),
        )
    }

    /// Keeps central, the gateway (policy loop, technician socket, sync client) and the meters
    /// running in real time, from the end of the simulated days, until `shutdown` completes.
    pub fn serve(self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), DemoError> {
        self.write_gateway_config()?;
        self.clock.run_from(self.end);
        let Demo {
            office,
            air_runtime,
            village,
            stop,
            ..
        } = self;
        let mut stopping = stop.subscribe();
        let air = std::thread::spawn(move || {
            air_runtime.block_on(async move {
                tokio::time::resume();
                let _ = stopping.wait_for(|s| *s).await;
            });
        });
        let config = &village.gateway_config;
        let services = Services {
            policy_schedule: config.policy_schedule(),
            socket: local::socket_path(&config.gateway.data_dir),
            sync: Some((village.transport.clone(), village.sync.clone())),
            modem: None,
            technician: technician_launch(config)
                .map_err(|e| DemoError::Technician(e.to_string()))?,
            health: village.health.clone(),
            clock: village.clock.clone(),
        };
        office.block_on(add_demo_logins(&village))?;
        office.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            services.spawn(&village.gateway, &mut tasks, &stop.subscribe());
            shutdown.await;
            let _ = stop.send(true);
            while tasks.join_next().await.is_some() {}
        });
        let _ = air.join();
        Ok(())
    }

    fn write_gateway_config(&self) -> Result<(), DemoError> {
        let config = &self.village.gateway_config;
        let path = self.workspace.path().join("gateway.toml");
        let bundle = config
            .sync
            .bundle
            .as_ref()
            .map(|b| format!("[sync]\nbundle = {:?}\n", b.display().to_string()))
            .unwrap_or_default();
        let text = format!(
            "# Written by `gramgrid demo`: the demo gateway's identity, data directory, enrolment bundle\n# and technician app, for the read-only gateway commands (status, explain, cert).\n[gateway]\nid = {:?}\ndata_dir = {:?}\n{bundle}[technician]\nlisten = \"{}\"\n",
            config.gateway.id,
            config.gateway.data_dir.display().to_string(),
            config.technician.listen,
        );
        std::fs::write(&path, text).map_err(|e| DemoError::Dir {
            path,
            detail: e.to_string(),
        })
    }
}

/// The supervisor login `gramgrid demo --serve` makes at central for its technician app.
pub const DEMO_TECHNICIAN: (&str, &str) = ("demo", "demo-technician-2026");

/// The office admin `gramgrid demo --serve` makes at central for its console.
pub const DEMO_STAFF: (&str, &str) = ("office", "demo-office-2026");

/// Makes the demo's logins at central: the office admin, and the technician (then syncs once, so
/// the technician is at the gateway before the app starts: the path a utility's logins take).
async fn add_demo_logins(village: &Village) -> Result<(), DemoError> {
    let staff = gramgrid_central::staff::StaffChange {
        full_name: "Demo Office".into(),
        role: gramgrid_central::staff::StaffRole::Admin,
        password: Some(DEMO_STAFF.1.into()),
        active: Some(true),
    };
    let change = gramgrid_central::technicians::TechnicianChange {
        full_name: "Demo Technician".into(),
        role: "supervisor".into(),
        password: Some(DEMO_TECHNICIAN.1.into()),
        active: Some(true),
    };
    let now = village.clock.now();
    village
        .central
        .central
        .db()
        .transaction(move |tx| {
            gramgrid_central::staff::set_staff(tx, DEMO_STAFF.0, &staff, now)?;
            gramgrid_central::technicians::set_technician(tx, DEMO_TECHNICIAN.0, &change, now)
        })
        .await
        .map_err(|e| DemoError::Technician(e.to_string()))?;
    village
        .sync()
        .await
        .map_err(|e| DemoError::Technician(e.to_string()))?;
    Ok(())
}

/// Plans the fleet and builds each meter's firmware, on the air runtime's clock.
async fn plan_air(args: &DemoArgs, start: DateTime<Utc>) -> AirSide {
    let clock = LinkClock::starting_at(start);
    let path_loss = PathLossModel::rural();
    let air = Air::new(AirConfig {
        seed: args.seed,
        path_loss: path_loss.clone(),
        keep_records: false,
    });
    let mut plan = fleet::plan(
        args.meters,
        args.radius_m,
        args.seed,
        &path_loss,
        &fleet::gateway_spec(),
    );
    fleet::make_dlms(
        &mut plan,
        args.meters_dlms,
        GATEWAY_ID,
        args.seed,
        fleet::DlmsChoice::FirstReadable,
    );
    // The households' meters, then the transformer's: it reads what they all draw.
    let feeder = Feeder::default();
    plan.push(fleet::transformer_meter(
        args.seed,
        &path_loss,
        &fleet::gateway_spec(),
    ));
    let meters = plan
        .iter()
        .map(|m| {
            let supply = match m.role {
                MeterRole::Consumer => Supply::Household {
                    feeder: feeder.clone(),
                    bypass: None,
                },
                MeterRole::Transformer => Supply::Transformer {
                    feeder: feeder.clone(),
                    loss_percent: scenario::LINE_LOSS_PERCENT,
                },
            };
            let firmware = fleet::firmware(m, AccessMode::Scheduled, false, &clock);
            Arc::new(Mutex::new(firmware.with_supply(supply)))
        })
        .collect();
    AirSide {
        clock,
        air,
        plan,
        meters,
    }
}

/// The office enters the transformer's meter at central from its manifest (`role = "dt"`); the
/// gateway learns it, with its keys, at the first sync.
async fn enter_transformer_meter(
    village: &Village,
    transformer: &[PlannedMeter],
    at: DateTime<Utc>,
) -> Result<(), DemoError> {
    let manifest =
        gramgrid_proto::manifest::MeterManifest::parse(&fleet::manifest_toml(transformer))
            .map_err(|e| DemoError::Options(format!("the transformer meter's manifest: {e}")))?;
    village
        .central
        .central
        .db()
        .transaction(move |tx| {
            gramgrid_central::import::import_manifest(tx, &manifest, GATEWAY_ID, at)
        })
        .await
        .map_err(VillageError::from)?;
    Ok(())
}

/// Every account's balance at the gateway and at central.
async fn balances(village: &Village) -> Result<BalanceSummary, VillageError> {
    let balances = village.balances().await?;
    let total_gateway_paise = balances.iter().map(|(_, gateway, _)| gateway).sum();
    let disagreements: Vec<_> = balances
        .into_iter()
        .filter(|(_, gateway, central)| gateway != central)
        .collect();
    Ok(BalanceSummary {
        accounts: village.households.len(),
        agree: village.households.len() - disagreements.len(),
        disagreements,
        total_gateway_paise,
    })
}

/// The demo while it runs its days.
struct Running<'a> {
    office: &'a Runtime,
    air: &'a Runtime,
    village: &'a Village,
    clock: &'a SimulatedClock,
    link_clock: LinkClock,
    outage: Option<Outage>,
    /// When every meter is dark (the feeder is cut), if ever.
    feeder_cut: Option<Outage>,
    /// The simulated meters, to cut their supply.
    meters: Vec<MeterHandle>,
    sync: SyncSummary,
    /// Gateway meter id per account (known after the first sync).
    meter_ids: HashMap<String, i64>,
    /// What the office did to show the guardrails.
    scenes: guardrails::Scenes,
    /// When the bad policy goes out, and the policy it corrects back to.
    bad_publish: Option<(DateTime<Utc>, gramgrid_core::policy::PolicyConfig)>,
    /// The gateway's cellular modem: urgent messages by SMS while the backhaul is down.
    modem: crate::modem_standin::InProcessModem,
    /// Central's `[sms]`.
    sms: notify::sms::SmsConfig,
    /// The provider stand-in `sms` points at, kept running while the demo does.
    _provider: crate::sms_standin::SmsStandIn,
}

impl Running<'_> {
    /// Opening balances at central, then the first sync: the gateway learns its accounts, meters,
    /// keys and credit before the radio starts.
    fn open_accounts(
        &mut self,
        consumers: &[Consumer],
        start: DateTime<Utc>,
    ) -> Result<(), DemoError> {
        self.publish_tariffs(start)?;
        for c in consumers {
            self.office.block_on(self.village.recharge_at_central(
                &c.account.id,
                c.opening_paise,
                &format!("opening-{}", c.account.id),
            ))?;
        }
        self.sync_now(false).map_err(|source| DemoError::Sync {
            when: "at the start (the gateway could not learn its accounts)",
            source,
        })?;
        self.meter_ids = self.village.with_gateway(|g| {
            consumers
                .iter()
                .filter_map(|c| match g.store().meter_id(&c.meter.serial) {
                    Ok(Some(id)) => Some(Ok((c.account.id.clone(), id))),
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect()
        })?;
        self.village.with_gateway(|g| g.tick(start).map(|_| ()))?;
        Ok(())
    }

    /// The evening before the first day, the office puts the shops on a time-of-day tariff from
    /// the first day, and the domestic tariff that banks solar homes' surplus export; the gateway
    /// learns them at its first sync.
    fn publish_tariffs(&self, start: DateTime<Utc>) -> Result<(), DemoError> {
        let first_day = gramgrid_core::civil::local_date(start);
        let book = TariffBook::builtin();
        let versions = [
            scenario::time_of_day_tariff(&book, first_day),
            scenario::net_metering_tariff(&book, first_day),
        ];
        let evening_before = start - Duration::minutes(1);
        for version in versions.into_iter().flatten() {
            self.village
                .central
                .central
                .publish_tariff_as("demo:office", version, evening_before)
                .map_err(VillageError::from)?;
        }
        Ok(())
    }

    /// Enters the arrears and the protected household at central, a minute after the opening
    /// credit (which is not a recharge the arrears take a share of).
    fn enter_guardrails(
        &mut self,
        consumers: &[Consumer],
        arrears: Vec<(String, i64)>,
        start: DateTime<Utc>,
    ) -> Result<(), DemoError> {
        let protected =
            scenario::protected(consumers, &TariffBook::builtin()).map(|c| c.account.id.clone());
        self.clock.set(start + Duration::minutes(1));
        self.office.block_on(guardrails::enter_at_central(
            self.village,
            &arrears,
            protected.as_deref(),
        ))?;
        self.scenes.arrears = arrears;
        self.scenes.protected = protected;
        Ok(())
    }

    /// The office's policy publishes: the bad one at its time, the correction after it.
    fn office_publishes(&mut self, now: DateTime<Utc>) -> Result<(), DemoError> {
        let Some((at, good)) = self.bad_publish.clone() else {
            return Ok(());
        };
        if now == at {
            let bad = scenario::bad_policy(&good);
            let central_hold = self
                .office
                .block_on(guardrails::publish(self.village, &bad))?;
            self.scenes.bad_publish = Some(guardrails::BadPublish {
                at,
                threshold_paise: bad.disconnect_threshold_paise,
                central_hold,
                corrected_at: None,
            });
        } else if now == at + scenario::BAD_POLICY_IN_FORCE {
            self.office
                .block_on(guardrails::publish(self.village, &good))?;
            if let Some(bad) = self.scenes.bad_publish.as_mut() {
                bad.corrected_at = Some(now);
            }
        }
        Ok(())
    }

    /// Starts the gateway's meter link (lora-phy on an emulated SX1262) and the meters.
    fn start_radio(
        &self,
        side: &AirSide,
        stopping: watch::Receiver<bool>,
    ) -> Result<gramgrid_air::emulator::Sx126xEmulator, DemoError> {
        let provisioned = link::ProvisionedMeters::default();
        let (commands, requests) = link::command_channel(provisioned.clone());
        self.village.with_gateway(|g| {
            g.set_relay_link(Box::new(commands));
            Ok(())
        })?;
        let backend = GatewayBackend::new(self.village.gateway.clone());
        let timing = self.village.gateway_config.link.timing();
        self.air.block_on(async {
            let (radio, chip) = gramgrid_air::sim::radio_on_air(
                &side.air,
                fleet::gateway_spec(),
                Default::default(),
            )
            .await?;
            let gateway_link = Link::new(backend, timing, RadioConfig::gateway(), side.clock)
                .with_provisioned(provisioned)
                .with_stats(self.village.link_stats.clone())
                .with_gateway_id(GATEWAY_ID);
            let stop = stopping.clone();
            tokio::spawn(async move {
                if let Err(error) = gateway_link.run_scheduled(radio, requests, stop).await {
                    tracing::error!(%error, "the demo's meter link stopped");
                }
            });
            for (m, fw) in side.plan.iter().zip(&side.meters) {
                let radio = LightRadio::attach(&side.air, m.spec.clone(), Some(m.keys.dev_addr));
                let (fw, clock, stop) = (fw.clone(), side.clock, stopping.clone());
                let serial = m.serial.clone();
                tokio::spawn(async move {
                    if let Err(error) =
                        fleet::run_meter(radio, fw, clock, Arc::default(), stop).await
                    {
                        tracing::warn!(%error, meter = %serial, "simulated meter stopped");
                    }
                });
            }
            Ok(chip)
        })
    }

    /// Steps the village from `start` to `end`.
    fn simulate(
        &mut self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        mut payments: Vec<Payment>,
        rng: &mut ChaCha8Rng,
        bar: &ProgressBar,
    ) -> Result<(), DemoError> {
        let mut cut: HashMap<String, bool> = HashMap::new();
        let mut was_down = false;
        let mut t = start;
        let mut step = 0usize;
        while t < end {
            t += STEP;
            step += 1;
            let until = self.link_clock.instant_of(t);
            self.air
                .block_on(async move { tokio::time::sleep_until(until).await });
            self.clock.set(t);
            self.cut_the_feeder(t);
            self.office_publishes(t)?;
            let down = self.outage.is_some_and(|o| o.contains(t));
            self.set_backhaul(down);
            payments.extend(self.households_newly_cut(&mut cut, t, rng)?);
            payments.sort_by_key(|p| p.at);
            let due = payments.partition_point(|p| p.at <= t);
            for payment in payments.drain(..due) {
                self.pay(&payment, t)?;
            }
            if !down || step.is_multiple_of(PROBE_EVERY_STEPS) {
                let catching_up = was_down && !down;
                if self.sync_now(catching_up).is_ok() && catching_up {
                    was_down = false;
                }
            }
            was_down |= down;
            self.village.with_gateway(|g| g.tick(t).map(|_| ()))?;
            if down {
                self.modem_round(t)?;
            }
            bar.set_message(format!(
                "{}{}",
                gramgrid_core::civil::local(t).format("%a %d %b %H:%M IST"),
                if down { " · backhaul down" } else { "" }
            ));
            bar.inc(1);
        }
        Ok(())
    }

    /// At the feeder cut's start every meter goes dark; at its end the supply is back.
    fn cut_the_feeder(&self, t: DateTime<Utc>) {
        let Some(cut) = self.feeder_cut else {
            return;
        };
        for meter in &self.meters {
            let mut firmware = fleet::locked(meter);
            if t == cut.from {
                firmware.power_off(t);
            } else if t == cut.to {
                firmware.power_on(t);
            }
        }
    }

    fn set_backhaul(&self, down: bool) {
        if let Ok(mut plan) = self.village.link.plan.lock() {
            plan.default_fault = if down { Fault::Refuse } else { Fault::None };
        }
    }

    /// Households whose meter reported its supply cut since the last step decide how to pay.
    fn households_newly_cut(
        &self,
        cut: &mut HashMap<String, bool>,
        now: DateTime<Utc>,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Payment>, DemoError> {
        let mut meters: Vec<(&String, &i64)> = self.meter_ids.iter().collect();
        meters.sort();
        let states = self.village.with_gateway(|g| {
            meters
                .iter()
                .map(|(_, meter)| g.store().relay_state(**meter))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let mut payments = Vec::new();
        for ((account, _), state) in meters.into_iter().zip(states) {
            let off = state == RelayState::Disconnected;
            let was_off = cut.insert(account.clone(), off).unwrap_or(false);
            if off && !was_off {
                payments.extend(scenario::payment_after_cut(account, now, self.outage, rng));
            }
        }
        Ok(payments)
    }

    /// A consumer pays: at central, or by a voucher issued at central and redeemed at the gateway.
    fn pay(&self, payment: &Payment, now: DateTime<Utc>) -> Result<(), DemoError> {
        let key = format!("{}-{}", payment.account, payment.at.timestamp());
        match payment.channel {
            Channel::Central => {
                self.office.block_on(self.village.recharge_at_central(
                    &payment.account,
                    payment.amount_paise,
                    &key,
                ))?;
            }
            Channel::Voucher => {
                let voucher = self.office.block_on(
                    self.village
                        .issue_voucher(&payment.account, payment.amount_paise),
                )?;
                self.village.with_gateway(|g| {
                    g.store().redeem_voucher(&voucher.code, now)?;
                    g.tick(now).map(|_| ())
                })?;
            }
        }
        Ok(())
    }

    /// One sync session, counted; a failure is counted, not fatal.
    fn sync_now(
        &mut self,
        catching_up: bool,
    ) -> Result<(), gramgrid_gateway::sync::client::SyncError> {
        let before = self
            .village
            .link
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        let outcome = self.office.block_on(self.village.sync());
        let after = self
            .village
            .link
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        self.sync.wire_bytes += after - before;
        match outcome {
            Ok(report) => {
                self.sync.sessions += 1;
                let readings = u64::try_from(report.readings).unwrap_or(0);
                self.sync.readings_uploaded += readings;
                if catching_up {
                    self.sync.catch_up_readings = readings;
                }
                Ok(())
            }
            Err(error) => {
                self.sync.failed_attempts += 1;
                Err(error)
            }
        }
    }

    /// The last sync, until it succeeds, so that central holds everything the gateway does; then
    /// central's pending notifications are delivered.
    fn settle(&mut self) -> Result<(), DemoError> {
        let mut last = None;
        for _ in 0..FINAL_SYNC_TRIES {
            match self.sync_now(false) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(error) => last = Some(error),
            }
        }
        if let Some(source) = last {
            return Err(DemoError::Sync {
                when: "at the end, after retries",
                source,
            });
        }
        self.sync.wire_bytes_per_reading = if self.sync.readings_uploaded == 0 {
            0.0
        } else {
            (100.0 * self.sync.wire_bytes as f64 / self.sync.readings_uploaded as f64).round()
                / 100.0
        };
        self.deliver_messages()
    }

    /// While the backhaul is down, the gateway's modem sends the urgent messages central cannot.
    fn modem_round(&self, now: DateTime<Utc>) -> Result<(), DemoError> {
        let after = gramgrid_gateway::modem::ModemConfig::default().send_after_backhaul_down;
        self.office
            .block_on(gramgrid_gateway::outage_sms::send_round(
                &self.village.gateway,
                &self.modem,
                after,
                now,
            ))
            .map_err(|e| DemoError::Messages(e.to_string()))?;
        Ok(())
    }

    /// The last of central's queued messages to the SMS provider (its notifier sends them as they
    /// come; this flushes the ones queued by the last sync).
    fn deliver_messages(&self) -> Result<(), DemoError> {
        let sender = notify::sms::ProviderSender::new(&self.sms)
            .map_err(|e| DemoError::Messages(e.to_string()))?;
        let rendering = notify::sms::rendering(&self.sms).map_err(DemoError::Messages)?;
        let central = self.village.central.central.clone();
        self.office
            .block_on(notify::deliver(&central, &sender, &rendering, i64::MAX))
            .map_err(VillageError::from)?;
        Ok(())
    }
}
