//! `gramgrid bench capacity`: the largest fleet one channel serves: scheduled payload v1 meters,
//! scheduled DLMS/COSEM meters (docs/dlms.md section 7), and ALOHA.
//!
//! Each run simulates a village under tokio's paused clock: the real link task (scheduler, frame
//! filter, counters) on an emulated SX1262 driven by lora-phy at the mast, and `n` meters running
//! the virtual firmware. Meters use the light radio (`meter::light`): the same `Air`, path loss,
//! capture rule and time on air as the emulated chip, without one chip emulator per meter. ALOHA's
//! gateway gets one emulated SX1262 per spreading factor on the same channel (what a LoRaWAN
//! gateway's multi-SF demodulators do), which favours ALOHA: the comparison is conservative.
//!
//! A reading counts as delivered if the gateway has it within 60 minutes of its interval's end.
//! Meters that cannot be heard even at SF12 are left out of the percentage and reported apart.

use crate::meter::fleet::{self, locked, MeterHandle};
use crate::meter::light::LightRadio;
use chrono::{DateTime, Utc};
use gramgrid_air::air::{Air, AirConfig};
use gramgrid_air::pathloss::PathLossModel;
use gramgrid_air::sim::radio_on_air;
use gramgrid_core::policy::{RelayAction, RelayState};
use gramgrid_gateway::link::scheduler::RENDEZVOUS_SF;
use gramgrid_gateway::link::{self, Link, LinkBackend, LinkClock, LinkError};
use gramgrid_gateway::store::{DlmsAssociation, DlmsIc, Fcnt, LinkSession, MeterReading};
use gramgrid_proto::payload::{AccessMode, MeterEvent};
use gramgrid_radio::phy::PhyOptions;
use gramgrid_radio::{Radio, RadioConfig, RadioError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How the meters of a run are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The gateway's scheduler polls payload v1 meters.
    Scheduled,
    /// The gateway's scheduler reads DLMS/COSEM meters (range reads, blocks at the slow SFs).
    Dlms,
    /// Payload v1 meters send on their own timers (LoRaWAN Class A style).
    Aloha,
}

impl Mode {
    /// Every mode, in the report's order.
    pub const ALL: [Mode; 3] = [Mode::Scheduled, Mode::Dlms, Mode::Aloha];

    /// The mode's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Scheduled => "scheduled",
            Mode::Dlms => "dlms",
            Mode::Aloha => "aloha",
        }
    }

    fn access(self) -> AccessMode {
        match self {
            Mode::Scheduled | Mode::Dlms => AccessMode::Scheduled,
            Mode::Aloha => AccessMode::Aloha,
        }
    }
}

/// The gateway id of the benchmark's DLMS meters' association.
const BENCH_GATEWAY_ID: &str = "bench-gateway";

/// The delivery target of the issue: 99.9 % of readings within 60 minutes.
pub const TARGET_PERCENT: f64 = 99.9;
const DEADLINE: chrono::Duration = chrono::Duration::minutes(60);

/// What to simulate.
#[derive(Debug, Clone)]
pub struct CapacityOptions {
    /// Simulated time per run, warm-up included.
    pub hours: f64,
    /// The first part of a run that is not measured (the first polls find empty meter logs).
    pub warmup_hours: f64,
    /// Radius of the village in metres: meters are scattered uniformly over this disc around the
    /// gateway.
    pub radius_m: f64,
    /// Seed of everything random: fleet (positions, keys, loads), air (shadowing) and the relay
    /// commands' targets.
    pub seed: u64,
    /// The search never goes above this many meters.
    pub max_meters: usize,
    /// Relay commands injected per scheduled run (latency figures).
    pub relay_commands: usize,
    /// How the air attenuates signals over distance (the path-loss model).
    pub path_loss: PathLossModel,
    /// Simulate only this fleet size (no search).
    pub only: Option<usize>,
}

impl Default for CapacityOptions {
    fn default() -> Self {
        Self {
            hours: 4.0,
            warmup_hours: 1.5,
            radius_m: 2000.0,
            seed: 1,
            max_meters: 12_000,
            relay_commands: 40,
            path_loss: PathLossModel::rural(),
            only: None,
        }
    }
}

/// One simulated fleet.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Fleet size.
    pub meters: usize,
    /// Meters not reachable even at SF12 (excluded from `delivery_percent`).
    pub unreachable: usize,
    /// Reachable meters per spreading factor, SF7..SF12.
    pub sf_mix: [usize; 6],
    /// DLMS mode: reachable meters whose SF (10 to 12) cannot carry a load-profile read (a
    /// 91-byte request, a 51-byte downlink); excluded from `delivery_percent` and reported apart.
    pub unreadable: usize,
    /// Readings of reachable meters whose interval ended in the measured window (after the
    /// warm-up, and at least the 60-minute deadline before the end).
    pub readings_due: u64,
    /// Of those, readings the gateway had within 60 minutes of their interval's end.
    pub readings_on_time: u64,
    /// `readings_on_time` as a percentage of `readings_due` (0 when none was due).
    pub delivery_percent: f64,
    /// Share of the channel's time occupied by any transmission.
    pub channel_utilisation_percent: f64,
    /// Relay command latency (queued at the gateway → meter's acknowledgement heard), seconds.
    pub relay_latency_p50_s: Option<f64>,
    /// 99th percentile of that latency, in seconds.
    pub relay_latency_p99_s: Option<f64>,
    /// Relay commands whose acknowledgement the gateway heard (commands are injected in
    /// scheduled runs only).
    pub relay_commands_acknowledged: usize,
    /// Wall-clock time the run took, in seconds.
    pub wall_s: f64,
}

impl Run {
    /// Whether the run met the delivery target: [`TARGET_PERCENT`] % of readings within 60
    /// minutes.
    pub fn passes(&self) -> bool {
        self.delivery_percent >= TARGET_PERCENT
    }
}

/// One access mode's search.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    /// The largest fleet that met the target (0 if none did).
    pub max_meters: usize,
    /// The run at `max_meters`, if any.
    pub at_max: Option<Run>,
    /// Every run of the search, in the order simulated.
    pub runs: Vec<Run>,
}

/// Every mode.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityReport {
    /// The gateway's scheduler polls the meters.
    pub scheduled: ModeResult,
    /// The gateway's scheduler reads DLMS/COSEM meters.
    pub dlms: ModeResult,
    /// The meters send on their own timers (LoRaWAN Class A style).
    pub aloha: ModeResult,
    /// Simulated hours per run, warm-up included.
    pub hours: f64,
    /// Radius of the village, in metres.
    pub radius_m: f64,
    /// How the runs were simulated (channel, path loss, radios), for the report.
    pub method: &'static str,
}

const METHOD: &str = "one channel (865.0625 MHz, BW125); rural Hata path loss with 8 dB shadowing; gateway: real link task on an emulated SX1262 via lora-phy (ALOHA: one per SF); meters: virtual firmware on a light radio over the same Air and time-on-air model";

/// Runs the search for every mode; `progress` sees every run as it finishes.
pub fn capacity(
    options: &CapacityOptions,
    mut progress: impl FnMut(Mode, &Run),
) -> Result<CapacityReport, RadioError> {
    let mut search = |mode| search(options, mode, &mut progress);
    let scheduled = search(Mode::Scheduled)?;
    let dlms = search(Mode::Dlms)?;
    let aloha = search(Mode::Aloha)?;
    Ok(CapacityReport {
        scheduled,
        dlms,
        aloha,
        hours: options.hours,
        radius_m: options.radius_m,
        method: METHOD,
    })
}

/// Doubles the fleet from 250 until a run misses the target, then bisects to about 4 %.
fn search(
    options: &CapacityOptions,
    mode: Mode,
    progress: &mut impl FnMut(Mode, &Run),
) -> Result<ModeResult, RadioError> {
    let mut runs: Vec<Run> = Vec::new();
    let mut best: Option<Run> = None;
    let mut fail_at: Option<usize> = None;
    let mut n = options.only.unwrap_or(250).min(options.max_meters);
    loop {
        let run = simulate(options, mode, n)?;
        progress(mode, &run);
        runs.push(run.clone());
        if run.passes() {
            best = Some(run);
        } else {
            fail_at = Some(n);
        }
        let lo = best.as_ref().map_or(0, |r| r.meters);
        n = match fail_at {
            _ if options.only.is_some() => break,
            None if n >= options.max_meters => break,
            None => (n * 2).min(options.max_meters),
            Some(hi) => {
                if hi - lo <= (lo / 25).max(25) {
                    break;
                }
                (lo + hi) / 2
            }
        };
    }
    Ok(ModeResult {
        max_meters: best.as_ref().map_or(0, |r| r.meters),
        at_max: best,
        runs,
    })
}

/// What the benchmark's gateway remembers: which reading arrived when.
#[derive(Default)]
struct Tally {
    arrivals: HashMap<(i64, DateTime<Utc>), DateTime<Utc>>,
}

struct BenchBackend {
    sessions: Vec<LinkSession>,
    tally: Arc<Mutex<Tally>>,
    clock: LinkClock,
}

impl LinkBackend for BenchBackend {
    fn sessions(&mut self) -> Result<Vec<LinkSession>, LinkError> {
        Ok(self.sessions.clone())
    }
    fn commit_fcnt(&mut self, _: i64, _: Fcnt, _: u32) -> Result<(), LinkError> {
        Ok(())
    }
    fn commit_dlms_ic(&mut self, _: i64, _: DlmsIc, _: u32) -> Result<(), LinkError> {
        Ok(())
    }
    fn readings(&mut self, batch: &[MeterReading]) -> Result<(), LinkError> {
        let now = self.clock.now();
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        for r in batch {
            tally.arrivals.entry((r.meter, r.at)).or_insert(now);
        }
        Ok(())
    }
    fn events(&mut self, _: i64, _: &[MeterEvent], _: DateTime<Utc>) -> Result<(), LinkError> {
        Ok(())
    }
    fn relay_state(&mut self, _: i64, _: RelayState, _: DateTime<Utc>) -> Result<(), LinkError> {
        Ok(())
    }
}

/// Simulates `n` meters in `mode` on a fresh paused-clock runtime.
pub fn simulate(options: &CapacityOptions, mode: Mode, n: usize) -> Result<Run, RadioError> {
    let runtime = crate::radio_bench::paused_runtime()?;
    let wall = std::time::Instant::now();
    let mut run = runtime.block_on(village(options, mode, n))?;
    run.wall_s = wall.elapsed().as_secs_f64();
    Ok(run)
}

async fn village(options: &CapacityOptions, mode: Mode, n: usize) -> Result<Run, RadioError> {
    let air = Air::new(AirConfig {
        seed: options.seed,
        path_loss: options.path_loss.clone(),
        keep_records: false,
    });
    let gw_spec = fleet::gateway_spec();
    let mut plan = fleet::plan(
        n,
        options.radius_m,
        options.seed,
        &options.path_loss,
        &gw_spec,
    );
    if mode == Mode::Dlms {
        fleet::make_dlms(
            &mut plan,
            n,
            BENCH_GATEWAY_ID,
            options.seed,
            fleet::DlmsChoice::First,
        );
    }
    let start = DateTime::from_timestamp(1_795_804_200, 0).unwrap_or_default(); // 2026-11-28 00:00 IST
    let clock = LinkClock::starting_at(start);
    let id = |i: usize| i64::try_from(i).unwrap_or(i64::MAX) + 1;
    let sessions = plan
        .iter()
        .enumerate()
        .map(|(i, m)| LinkSession {
            meter: id(i),
            serial: m.serial.clone(),
            keys: m.keys.clone(),
            fcnt_up: None,
            fcnt_down: None,
            last_reading_at: None,
            installed_at: start - chrono::Duration::days(30),
            dlms: m.dlms.as_ref().map(|d| DlmsAssociation {
                security: d.security.clone(),
                gateway_next_ic: None,
                meter_last_ic: None,
            }),
        })
        .collect();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let backend = BenchBackend {
        sessions,
        tally: tally.clone(),
        clock,
    };
    let (stop, stopping) = watch::channel(false);
    let uplink_airtime: fleet::AirtimeTally = Arc::default();
    let timing = gramgrid_gateway::link::config::LinkSection::default().timing();
    let mut link =
        Link::new(backend, timing, RadioConfig::gateway(), clock).with_gateway_id(BENCH_GATEWAY_ID);
    let stats = link.stats();
    let sf_of: HashMap<i64, u8> = plan
        .iter()
        .enumerate()
        .map(|(i, m)| (id(i), m.sf.unwrap_or(RENDEZVOUS_SF)))
        .collect();
    link.load_sessions(|m| sf_of.get(&m).copied().unwrap_or(RENDEZVOUS_SF))
        .map_err(|e| RadioError::Io(e.to_string()))?;
    let (mut commands, requests) = link::command_channel(link::ProvisionedMeters::default());
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    match mode.access() {
        AccessMode::Scheduled => {
            let (radio, _chip) = radio_on_air(&air, gw_spec.clone(), PhyOptions::default()).await?;
            let stop = stopping.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(error) = link.run_scheduled(radio, requests, stop).await {
                    tracing::error!(%error, "benchmark link task failed");
                }
            }));
        }
        AccessMode::Aloha => {
            drop(requests);
            let (frames, mut heard) = mpsc::unbounded_channel();
            for sf in 7..=12u8 {
                let spec = gramgrid_air::air::NodeSpec {
                    name: format!("gw-sf{sf}"),
                    ..gw_spec.clone()
                };
                let (mut radio, _chip) = radio_on_air(&air, spec, PhyOptions::default()).await?;
                radio
                    .configure(RadioConfig {
                        spreading_factor: sf,
                        ..RadioConfig::gateway()
                    })
                    .await?;
                let (frames, mut stop) = (frames.clone(), stopping.clone());
                tasks.push(tokio::spawn(async move {
                    while !*stop.borrow() {
                        tokio::select! {
                            got = radio.receive(Duration::from_secs(60)) => {
                                if let Ok(frame) = got {
                                    let _ = frames.send(frame);
                                }
                            }
                            _ = stop.changed() => {}
                        }
                    }
                }));
            }
            drop(frames);
            tasks.push(tokio::spawn(async move {
                while let Some(frame) = heard.recv().await {
                    link.on_uplink(&frame);
                }
            }));
        }
    }
    let mut meters: Vec<(i64, Option<u8>, MeterHandle)> = Vec::new();
    for (i, m) in plan.iter().enumerate() {
        let radio = LightRadio::attach(&air, m.spec.clone(), Some(m.keys.dev_addr));
        let fw: MeterHandle = Arc::new(Mutex::new(fleet::firmware(m, mode.access(), true, &clock)));
        let (fw2, airtime, stop) = (fw.clone(), uplink_airtime.clone(), stopping.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(error) = fleet::run_meter(radio, fw2, clock, airtime, stop).await {
                tracing::warn!(%error, "benchmark meter stopped");
            }
        }));
        meters.push((id(i), m.sf, fw));
    }
    let run_for = Duration::from_secs_f64(options.hours * 3600.0);
    let warmup = Duration::from_secs_f64(options.warmup_hours * 3600.0);
    if mode.access() == AccessMode::Scheduled {
        let reachable: Vec<i64> = meters
            .iter()
            .filter(|m| m.1.is_some())
            .map(|m| m.0)
            .collect();
        let count = options.relay_commands;
        let span = run_for.saturating_sub(warmup + Duration::from_secs(3600));
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            let mut meter = 0;
            for k in 0..count {
                if k % 2 == 0 && !reachable.is_empty() {
                    meter = reachable[rng.random_range(0..reachable.len())];
                }
                let action = if k % 2 == 0 {
                    RelayAction::Disconnect
                } else {
                    RelayAction::Connect
                };
                let _ = gramgrid_gateway::gateway::RelayLink::send(
                    &mut commands,
                    meter,
                    &format!("bench-{k}"),
                    action,
                    None,
                );
                tokio::time::sleep(span / u32::try_from(count.max(1)).unwrap_or(1)).await;
            }
        }));
    }
    tokio::time::sleep(run_for).await;
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    // Measure.
    let from = start + chrono::Duration::from_std(warmup).unwrap_or_default();
    let until = start + chrono::Duration::from_std(run_for).unwrap_or_default() - DEADLINE;
    let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    let (mut due, mut on_time) = (0u64, 0u64);
    let mut sf_mix = [0usize; 6];
    let mut unreadable = 0;
    for (meter, sf, fw) in &meters {
        let Some(sf) = sf else { continue };
        sf_mix[usize::from(sf - 7)] += 1;
        if mode == Mode::Dlms && *sf > fleet::DLMS_SLOWEST_READABLE_SF {
            unreadable += 1;
            continue;
        }
        for interval in &locked(fw).nvm.log {
            let end = interval.interval_start + chrono::Duration::minutes(15);
            if end < from || end > until {
                continue;
            }
            due += 1;
            if tally
                .arrivals
                .get(&(*meter, end))
                .is_some_and(|&at| at <= end + DEADLINE)
            {
                on_time += 1;
            }
        }
    }
    let stats = link::read_stats(&stats);
    let busy = stats.downlink_airtime + *uplink_airtime.lock().unwrap_or_else(|p| p.into_inner());
    let mut latencies: Vec<f64> = stats
        .relay_latencies
        .iter()
        .map(Duration::as_secs_f64)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        (!latencies.is_empty()).then(|| {
            latencies[((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
        })
    };
    Ok(Run {
        meters: n,
        unreachable: meters.iter().filter(|m| m.1.is_none()).count(),
        sf_mix,
        unreadable,
        readings_due: due,
        readings_on_time: on_time,
        delivery_percent: if due == 0 {
            0.0
        } else {
            100.0 * on_time as f64 / due as f64
        },
        channel_utilisation_percent: 100.0 * busy.as_secs_f64() / run_for.as_secs_f64(),
        relay_latency_p50_s: rank(0.5),
        relay_latency_p99_s: rank(0.99),
        relay_commands_acknowledged: latencies.len(),
        wall_s: 0.0,
    })
}

/// `gramgrid bench capacity` options.
#[derive(Debug, clap::Args)]
pub struct CapacityArgs {
    /// Simulated hours per fleet size (the first --warmup-hours are not measured).
    #[arg(long, default_value_t = 4.0)]
    pub hours: f64,
    /// Hours at the start of each run that are not measured (the first polls find empty meter logs).
    #[arg(long, default_value_t = 1.5)]
    pub warmup_hours: f64,
    /// The search stops at this fleet size.
    #[arg(long, default_value_t = 12_000)]
    pub max_meters: usize,
    /// Radius of the village in metres: meters are scattered uniformly within it around the gateway.
    #[arg(long, default_value_t = 2000.0)]
    pub radius_m: f64,
    /// Seed of everything random: meter positions, keys and loads, shadowing, relay command targets.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Relay commands injected per scheduled run, for the latency figures.
    #[arg(long, default_value_t = 40)]
    pub relay_commands: usize,
    /// How the air attenuates signals over distance (the path-loss model).
    #[arg(long, value_enum, default_value = "rural")]
    pub path_loss: crate::air_cli::PathLossChoice,
    /// Simulate only this fleet size in each mode (no search).
    #[arg(long)]
    pub only: Option<usize>,
    /// Print JSON (each mode's largest fleet under `scheduled_max`, `dlms_max`, `aloha_max`).
    #[arg(long)]
    pub json: bool,
}

impl CapacityArgs {
    /// Checks the options and turns them into [`CapacityOptions`]; the error names the option to fix.
    pub fn options(&self) -> Result<CapacityOptions, String> {
        if self.hours <= self.warmup_hours + 1.0 || self.warmup_hours < 0.0 {
            return Err(
                "--hours must exceed --warmup-hours by more than the 1-hour delivery deadline"
                    .into(),
            );
        }
        if self.max_meters == 0 {
            return Err("--max-meters must be at least 1".into());
        }
        Ok(CapacityOptions {
            hours: self.hours,
            warmup_hours: self.warmup_hours,
            radius_m: self.radius_m,
            seed: self.seed,
            max_meters: self.max_meters,
            relay_commands: self.relay_commands,
            path_loss: self.path_loss.model(),
            only: self.only,
        })
    }
}

/// One line of the progress log / table.
pub fn run_line(mode: Mode, run: &Run) -> String {
    let mode = mode.name();
    let mix = run
        .sf_mix
        .iter()
        .map(|n| format!("{:.0}", 100.0 * *n as f64 / run.meters.max(1) as f64))
        .collect::<Vec<_>>()
        .join("/");
    format!(
        "{mode:<9} {:>6} {:>9.3} % {:>6.1} % {:>22} {:>7} {:>10} {:>7.1} s",
        run.meters,
        run.delivery_percent,
        run.channel_utilisation_percent,
        mix,
        run.unreachable,
        run.unreadable,
        run.wall_s
    )
}

/// The human-readable report.
pub fn render(report: &CapacityReport) -> String {
    let mut out = format!(
        "Capacity of one channel, village radius {:.0} m, {} simulated hours per fleet.\n{}.\n\n",
        report.radius_m, report.hours, report.method
    );
    out +=
        "mode        meters  delivery   channel  SF7/8/9/10/11/12 (% of fleet) unheard unreadable    wall\n";
    for (mode, result) in [
        (Mode::Scheduled, &report.scheduled),
        (Mode::Dlms, &report.dlms),
        (Mode::Aloha, &report.aloha),
    ] {
        for run in &result.runs {
            out += &run_line(mode, run);
            out += if run.passes() {
                "  ok\n"
            } else {
                "  below target\n"
            };
        }
    }
    out += &format!(
        "\nLargest fleet with >= {TARGET_PERCENT} % of readings within 60 min: scheduled {}, DLMS {}, ALOHA {}.\n",
        report.scheduled.max_meters, report.dlms.max_meters, report.aloha.max_meters
    );
    out += "Meters not heard even at SF12 are excluded from the delivery figure and listed as 'unheard'.\n";
    out += "DLMS meters whose link needs SF10 to SF12 cannot be sent a load-profile read there (91 bytes; such a downlink carries 51): held at SF9, excluded and listed as 'unreadable'.\n";
    for (name, result) in [("v1", &report.scheduled), ("DLMS", &report.dlms)] {
        let Some(run) = &result.at_max else { continue };
        if let (Some(p50), Some(p99)) = (run.relay_latency_p50_s, run.relay_latency_p99_s) {
            out += &format!(
                "Relay command latency, {name} at {} meters (queued → meter's confirmation heard, {} commands): median {p50:.1} s, p99 {p99:.1} s.\n",
                run.meters, run.relay_commands_acknowledged
            );
        }
    }
    out
}

/// The JSON report: the modes' maxima under named keys, then the details.
pub fn json(report: &CapacityReport) -> serde_json::Value {
    serde_json::json!({
        "scheduled_max": report.scheduled.max_meters,
        "dlms_max": report.dlms.max_meters,
        "aloha_max": report.aloha.max_meters,
        "target_percent": TARGET_PERCENT,
        "report": report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2.5 simulated hours (1 of warm-up), 4 relay commands.
    fn small_village() -> CapacityOptions {
        CapacityOptions {
            hours: 2.5,
            warmup_hours: 1.0,
            relay_commands: 4,
            ..CapacityOptions::default()
        }
    }

    #[test]
    fn a_small_village_is_served_in_both_modes() {
        let options = small_village();
        let scheduled = simulate(&options, Mode::Scheduled, 40).unwrap();
        assert!(scheduled.passes(), "{scheduled:?}");
        assert!(scheduled.readings_due >= 40 * 2, "{scheduled:?}");
        assert_eq!(scheduled.relay_commands_acknowledged, 4, "{scheduled:?}");
        assert_eq!(
            scheduled.sf_mix.iter().sum::<usize>() + scheduled.unreachable,
            40
        );
        let aloha = simulate(&options, Mode::Aloha, 40).unwrap();
        assert!(aloha.delivery_percent > 90.0, "{aloha:?}");
    }

    #[test]
    fn a_small_village_of_dlms_meters_is_served_and_its_relays_confirmed() {
        let options = small_village();
        let dlms = simulate(&options, Mode::Dlms, 40).unwrap();
        assert!(dlms.passes(), "{dlms:?}");
        assert!(dlms.readings_due >= 40 * 2, "{dlms:?}");
        assert_eq!(dlms.relay_commands_acknowledged, 4, "{dlms:?}");
        // The meters at SF10 to SF12 are pinged, not read: the read does not fit their downlink.
        assert_eq!(dlms.unreadable, dlms.sf_mix[3..].iter().sum::<usize>());
    }
}
