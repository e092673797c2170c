//! `gramgrid sim`: a simulated meter fleet in its own process, on the UDP air bus.

use super::fleet::{self, MeterHandle};
use crate::air_cli::PathLossChoice;
use clap::Args;
use gramgrid_air::sim::radio_on_bus;
use gramgrid_gateway::link::LinkClock;
use gramgrid_proto::payload::{AccessMode, EventKind, Tamper};
use gramgrid_radio::phy::PhyOptions;
use gramgrid_radio::RadioError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// `gramgrid sim` options.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// How many meters to run (serials SIM-00001, SIM-00002, ...).
    #[arg(long, default_value_t = 10)]
    pub meters: usize,
    /// The air bus hub (`gramgrid air-bus` prints it).
    #[arg(long)]
    pub bus: SocketAddr,
    /// Meters are scattered over a disc of this radius around the gateway at (0, 0).
    #[arg(long, default_value_t = 2000.0)]
    pub radius_m: f64,
    /// Seed of positions, keys and load; use the air bus's seed and path loss so that
    /// `--commissioned` spreading factors match the air.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Path-loss model that picks the `--commissioned` spreading factors; use the air bus's.
    #[arg(long, value_enum, default_value = "rural")]
    pub path_loss: PathLossChoice,
    /// Write the fleet's meter manifest (serials and ABP keys) here for the gateway's
    /// `[link] manifest`. The file holds keys: keep it private.
    #[arg(long)]
    pub manifest_out: Option<PathBuf>,
    /// Meters send each reading on their own timer (Class A) instead of waiting to be polled.
    #[arg(long)]
    pub aloha: bool,
    /// Meters already listen on the spreading factor their link budget allows (a fleet that has
    /// run before) instead of starting on the rendezvous SF12.
    #[arg(long)]
    pub commissioned: bool,
    /// Each meter starts with this many hours of load profile already recorded.
    #[arg(long, default_value_t = 24)]
    pub history_hours: usize,
    /// The fleet starts as the supply comes back after a feeder outage of this many minutes:
    /// every meter's event log has the power failure and the restoration, and no load profile
    /// for the dark intervals.
    #[arg(long)]
    pub outage_minutes: Option<u32>,
    /// The first this many meters report a magnet tamper five minutes before the start.
    #[arg(long, default_value_t = 0)]
    pub tampered: usize,
    /// The first this many meters are net meters with a 2 kWp rooftop array behind them: they
    /// report their export register (payload 0x02), which already holds 1,000 kWh from before
    /// they were installed (not credited) and rises when the sun outruns the household.
    #[arg(long, default_value_t = 0)]
    pub rooftop_solar: usize,
    /// This many meters speak DLMS/COSEM (docs/dlms.md section 7) instead of payload v1: the
    /// first whose link allows SF9 or faster (a profile read does not fit a slower downlink);
    /// `--manifest-out` writes their keys and system titles (`protocol = "dlms"`).
    #[arg(long, default_value_t = 0)]
    pub dlms: usize,
    /// The id of the gateway the DLMS meters serve (its `[gateway] id`, default `gateway-1`):
    /// their association carries its system title.
    #[arg(long, default_value = "gateway-1")]
    pub gateway_id: String,
}

/// Peak power of a `--rooftop-solar` home's array, in W.
const ROOFTOP_PEAK_W: u32 = 2_000;

/// Runs the fleet until `shutdown` completes. Meters run the real lora-phy driver on emulated chips.
pub async fn sim(
    args: SimArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RadioError> {
    let mut plan = fleet::plan(
        args.meters,
        args.radius_m,
        args.seed,
        &args.path_loss.model(),
        &fleet::gateway_spec(),
    );
    fleet::make_dlms(
        &mut plan,
        args.dlms,
        &args.gateway_id,
        args.seed,
        fleet::DlmsChoice::FirstReadable,
    );
    if let Some(path) = &args.manifest_out {
        std::fs::write(path, fleet::manifest_toml(&plan))
            .map_err(|e| RadioError::Io(format!("{}: {e}", path.display())))?;
    }
    let mode = if args.aloha {
        AccessMode::Aloha
    } else {
        AccessMode::Scheduled
    };
    let clock = LinkClock::system();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut memberships = Vec::new();
    let start = clock.now();
    for (n, m) in plan.iter().enumerate() {
        let (radio, membership) =
            radio_on_bus(args.bus, m.spec.clone(), PhyOptions::default()).await?;
        memberships.push(membership);
        let mut firmware = fleet::firmware(m, mode, args.commissioned, &clock);
        if n < args.rooftop_solar {
            firmware.install_rooftop_solar(ROOFTOP_PEAK_W);
        }
        firmware.backfill(start, args.history_hours * 4);
        if let Some(minutes) = args.outage_minutes {
            firmware.power_cycle(start - chrono::Duration::minutes(minutes.into()), start);
        }
        if n < args.tampered {
            let magnet = EventKind::Tamper(Tamper::Magnet);
            firmware.record_event(magnet, start - chrono::Duration::minutes(5));
        }
        let fw: MeterHandle = Arc::new(Mutex::new(firmware));
        let serial = m.serial.clone();
        let stop = stopping.clone();
        tasks.spawn(async move {
            if let Err(error) = fleet::run_meter(radio, fw, clock, Arc::default(), stop).await {
                tracing::error!(%error, meter = %serial, "simulated meter stopped");
            }
        });
    }
    // The first stdout line is the contract scripts and tests wait for.
    println!("sim running {} meters on {}", plan.len(), args.bus);
    shutdown.await;
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}
