//! `gramgrid bench reconnect`: how long a household that pays waits for its supply. A village in
//! one process on the wall clock: central, the gateway's own daemon services (policy loop, sync
//! client, push channel, technician socket) behind an emulated cellular link with its round-trip
//! time, the gateway's meter link on the emulated air and a fleet of simulated meters. Every
//! household starts with no credit and is cut; then each is paid, one after the other: half by a
//! recharge committed at central, half by a voucher redeemed at the gateway's socket (as
//! `gramgrid gateway redeem` does). The latency is from the payment to the moment the meter's relay
//! closes, i.e. the reconnect command has come over the air and been obeyed.
use crate::meter::fleet::{self, MeterHandle, PlannedMeter};
use crate::meter::light::LightRadio;
use crate::village::{Village, VillageError};
use chrono::{DateTime, Duration as Span, Utc};
use gramgrid_air::air::{Air, AirConfig};
use gramgrid_air::pathloss::PathLossModel;
use gramgrid_central::accounts::{self, RechargeRequest};
use gramgrid_central::vouchers::{self, IssueRequest};
use gramgrid_core::policy::PolicyConfig;
use gramgrid_gateway::daemon::{GatewayBackend, Services};
use gramgrid_gateway::link::{self, Link, LinkClock};
use gramgrid_gateway::local::{self, LocalRequest};
use gramgrid_gateway::sync::client::SyncConfig;
use gramgrid_proto::payload::{AccessMode, RelayState};
use gramgrid_radio::RadioConfig;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// `gramgrid bench reconnect` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconnectArgs {
    /// Households in the village: each is paid once, the first half at central, the rest by
    /// voucher at the gateway.
    #[arg(long, default_value_t = 40)]
    pub households: usize,
    /// Round-trip time of the emulated cellular backhaul, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub rtt_ms: u64,
    /// Radius of the village in metres (meters farther out need slower spreading factors).
    #[arg(long, default_value_t = 600.0)]
    pub radius_m: f64,
    /// Seed of the fleet and of the pauses between payments.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Payment-to-relay latencies of one way of paying.
#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    /// Payments measured.
    pub payments: usize,
    /// Median, seconds.
    pub p50_s: f64,
    /// 99th percentile (nearest rank), seconds.
    pub p99_s: f64,
    /// The slowest, seconds.
    pub max_s: f64,
}

impl Latencies {
    fn of(mut samples: Vec<Duration>) -> Latencies {
        samples.sort();
        let rank = |q: f64| {
            let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len().max(1)) - 1;
            samples.get(i).map_or(0.0, Duration::as_secs_f64)
        };
        Latencies {
            payments: samples.len(),
            p50_s: rank(0.5),
            p99_s: rank(0.99),
            max_s: samples.last().map_or(0.0, Duration::as_secs_f64),
        }
    }
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReconnectFigures {
    /// Households in the village.
    pub households: usize,
    /// The backhaul's round-trip time, ms.
    pub rtt_ms: u64,
    /// A recharge committed at central → the meter's relay closed.
    pub recharge_at_central: Latencies,
    /// A voucher redeemed at the gateway → the meter's relay closed.
    pub voucher_at_gateway: Latencies,
}

impl std::fmt::Display for ReconnectFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "payment → relay closed at the meter, {} households, backhaul RTT {} ms",
            self.households, self.rtt_ms
        )?;
        for (what, l) in [
            ("recharge at central", &self.recharge_at_central),
            ("voucher at the gateway", &self.voucher_at_gateway),
        ] {
            writeln!(
                f,
                "  {what:<24} {:>3} payments: median {:.1} s, p99 {:.1} s, max {:.1} s",
                l.payments, l.p50_s, l.p99_s, l.max_s
            )?;
        }
        Ok(())
    }
}

/// The gateway's id in the benchmark's village.
const GATEWAY_ID: &str = "gw-bench";
/// Longest wait for one household's relay after its payment (then the run fails).
const RELAY_LIMIT: Duration = Duration::from_secs(120);
/// Longest wait for every household to be cut at the start.
const CUT_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Runs the benchmark (on the caller's multi-threaded runtime).
pub async fn reconnect(args: &ReconnectArgs) -> Result<ReconnectFigures, VillageError> {
    let temp = tempfile::tempdir()?;
    let now = Utc::now();
    let village = Village::build(temp.path(), GATEWAY_ID, 0, now - Span::hours(1)).await?;
    village
        .link
        .plan
        .lock()
        .map_err(|_| VillageError::Poisoned)?
        .latency = Duration::from_millis(args.rtt_ms / 2);
    let plan = fleet::plan(
        args.households,
        args.radius_m,
        args.seed,
        &PathLossModel::rural(),
        &fleet::gateway_spec(),
    );
    enter_at_central(&village, &plan, now).await?;
    let (stop, stopping) = watch::channel(false);
    let clock = LinkClock::system();
    let air = Air::new(AirConfig {
        seed: args.seed,
        path_loss: PathLossModel::rural(),
        keep_records: false,
    });
    let _chip = start_gateway_link(&village, &air, clock, stopping.clone()).await?;
    let meters = start_meters(&air, &plan, clock, &stopping);
    let mut tasks = tokio::task::JoinSet::new();
    gateway_services(&village)?.spawn(&village.gateway, &mut tasks, &stopping);

    let bar = progress(args.json, args.households as u64 + 1);
    bar.set_message("cutting every household (no credit yet)");
    wait_for_relays(&meters, RelayState::Disconnected, CUT_LIMIT, "cut").await?;
    bar.inc(1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let (mut by_recharge, mut by_voucher) = (Vec::new(), Vec::new());
    let socket = local::socket_path(&village.gateway_config.gateway.data_dir);
    for (i, (meter, firmware)) in plan.iter().zip(&meters).enumerate() {
        // A pause of 0 to 3 s, so payments fall at every phase of the link's turns.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..3_000))).await;
        let account = format!("ACC-{}", meter.serial);
        let at_central = i < args.households / 2;
        bar.set_message(if at_central {
            "recharges at central"
        } else {
            "vouchers at the gateway"
        });
        let paid = if at_central {
            recharge(&village, &account, i).await?
        } else {
            redeem(&village, &socket, &account).await?
        };
        wait_for_relays(
            std::slice::from_ref(firmware),
            RelayState::Connected,
            RELAY_LIMIT,
            "reconnected",
        )
        .await?;
        let took = paid.elapsed();
        if at_central {
            by_recharge.push(took);
        } else {
            by_voucher.push(took);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    village.central.stop().await?;
    Ok(ReconnectFigures {
        households: args.households,
        rtt_ms: args.rtt_ms,
        recharge_at_central: Latencies::of(by_recharge),
        voucher_at_gateway: Latencies::of(by_voucher),
    })
}

fn progress(hidden: bool, steps: u64) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The fleet's meters on accounts of their own at central (no credit), and a policy that may cut
/// at any minute (the default windows would make the run depend on the hour) and lets the whole
/// village be cut at once (the breaker would rightly hold such a mass cut for a supervisor).
async fn enter_at_central(
    village: &Village,
    plan: &[PlannedMeter],
    now: DateTime<Utc>,
) -> Result<(), VillageError> {
    let manifest = gramgrid_proto::manifest::MeterManifest::parse(&fleet::manifest_toml(plan))
        .map_err(|e| VillageError::Io(std::io::Error::other(e.to_string())))?;
    let policy: PolicyConfig = serde_json::from_value(serde_json::json!({
        "disconnect_windows": ["* * * * * *"],
        "first_disconnect": "1s",
        "holidays": [],
        "breaker": {
            "max_share_percent": 100,
            "always_allowed": 1_000_000,
            "hold_after_change": "0s",
        },
    }))
    .map_err(|e| VillageError::Io(std::io::Error::other(e.to_string())))?;
    village
        .central
        .central
        .db()
        .transaction(move |tx| {
            gramgrid_central::import::import_manifest(
                tx,
                &manifest,
                GATEWAY_ID,
                now - Span::days(1),
            )?;
            accounts::publish_policy(tx, 2, &policy, now)
        })
        .await?;
    Ok(())
}

/// The gateway's meter link on the air, driving relays through the gateway's store; returns the
/// emulated chip, which must outlive the link.
async fn start_gateway_link(
    village: &Village,
    air: &Air,
    clock: LinkClock,
    stopping: watch::Receiver<bool>,
) -> Result<gramgrid_air::emulator::Sx126xEmulator, VillageError> {
    let provisioned = link::ProvisionedMeters::default();
    let (commands, requests) = link::command_channel(provisioned.clone());
    village.with_gateway(|g| {
        g.set_relay_link(Box::new(commands));
        Ok(())
    })?;
    let backend = GatewayBackend::new(village.gateway.clone());
    let timing = village.gateway_config.link.timing();
    let (radio, chip) =
        gramgrid_air::sim::radio_on_air(air, fleet::gateway_spec(), Default::default())
            .await
            .map_err(|e| VillageError::Io(std::io::Error::other(e.to_string())))?;
    let gateway_link = Link::new(backend, timing, RadioConfig::gateway(), clock)
        .with_provisioned(provisioned)
        .with_stats(village.link_stats.clone());
    tokio::spawn(async move {
        if let Err(error) = gateway_link.run_scheduled(radio, requests, stopping).await {
            tracing::error!(%error, "the benchmark's meter link stopped");
        }
    });
    Ok(chip)
}

/// Every planned meter on the air, each with its firmware (whose relay the benchmark watches).
fn start_meters(
    air: &Air,
    plan: &[PlannedMeter],
    clock: LinkClock,
    stopping: &watch::Receiver<bool>,
) -> Vec<MeterHandle> {
    plan.iter()
        .map(|m| {
            let firmware: MeterHandle = Arc::new(std::sync::Mutex::new(fleet::firmware(
                m,
                AccessMode::Scheduled,
                false,
                &clock,
            )));
            let radio = LightRadio::attach(air, m.spec.clone(), Some(m.keys.dev_addr));
            let (fw, stop) = (firmware.clone(), stopping.clone());
            tokio::spawn(async move {
                if let Err(error) = fleet::run_meter(radio, fw, clock, Arc::default(), stop).await {
                    tracing::warn!(%error, "simulated meter stopped");
                }
            });
            firmware
        })
        .collect()
}

/// The daemon's services over the village's gateway: policy passes every minute, sync sessions
/// once a day (everything else comes by push), the technician socket in the data directory.
fn gateway_services(village: &Village) -> Result<Services, VillageError> {
    let every_minute = cron::Schedule::from_str("0 * * * * *")
        .map_err(|e| VillageError::Io(std::io::Error::other(e.to_string())))?;
    let sync = SyncConfig {
        schedule: "0 0 0 * * *".into(),
        ..village.sync.clone()
    };
    Ok(Services {
        policy_schedule: every_minute,
        socket: local::socket_path(&village.gateway_config.gateway.data_dir),
        sync: Some((village.transport.clone(), sync)),
        modem: None,
        technician: None,
        health: village.health.clone(),
        clock: village.clock.clone(),
    })
}

/// Commits a recharge for `account` at central; returns when it was paid.
async fn recharge(village: &Village, account: &str, n: usize) -> Result<Instant, VillageError> {
    let request = RechargeRequest {
        idempotency_key: format!("bench-{n}"),
        account: account.to_owned(),
        amount_paise: 50_000,
        reference: None,
    };
    let now = Utc::now();
    let paid = Instant::now();
    village
        .central
        .central
        .db()
        .transaction(move |tx| accounts::recharge(tx, &request, now))
        .await?;
    Ok(paid)
}

/// Issues a voucher for `account` at central, then redeems it at the gateway's socket; returns
/// when it was redeemed.
async fn redeem(village: &Village, socket: &Path, account: &str) -> Result<Instant, VillageError> {
    let request = IssueRequest {
        account: account.to_owned(),
        amount_paise: 50_000,
        valid_days: 30,
    };
    let now = Utc::now();
    let voucher = village
        .central
        .central
        .db()
        .transaction(move |tx| vouchers::issue(tx, &request, now))
        .await?;
    let paid = Instant::now();
    let answer = local::request(socket, &LocalRequest::Redeem { code: voucher.code }).await?;
    if !answer.ok {
        return Err(VillageError::Io(std::io::Error::other(format!(
            "the gateway refused the voucher: {}",
            answer.message
        ))));
    }
    Ok(paid)
}

/// Waits until every meter's relay is `state`, or fails after `limit`.
async fn wait_for_relays(
    meters: &[MeterHandle],
    state: RelayState,
    limit: Duration,
    what: &str,
) -> Result<(), VillageError> {
    let started = Instant::now();
    while meters.iter().any(|m| fleet::locked(m).nvm.relay != state) {
        if started.elapsed() > limit {
            return Err(VillageError::Io(std::io::Error::other(format!(
                "not every meter was {what} within {limit:?}"
            ))));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
