//! The radio benchmark: a simulated village day through lora-phy, the SX1262 emulator and the air,
//! under tokio's paused clock; reports simulated frames per wall-clock second.

use gramgrid_air::air::{link_loss_db, Air, AirConfig, AirStats, NodeSpec};
use gramgrid_air::capture::CaptureWriter;
use gramgrid_air::pathloss::PathLossModel;
use gramgrid_air::sim::radio_on_air;
use gramgrid_radio::budget::{choose_sf, GATEWAY_GAIN_DBI, METER_POWER_DBM};
use gramgrid_radio::phy::PhyOptions;
use gramgrid_radio::{Radio, RadioConfig, RadioError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;

/// Time for every radio to reset and initialise before the first uplink.
const SETTLE: Duration = Duration::from_secs(1);
/// Meter clocks wander: each uplink leaves up to this much after its nominal time, so the same
/// pairs of meters do not collide every interval.
const JITTER: Duration = Duration::from_secs(5);

/// What to simulate.
#[derive(Clone, Debug)]
pub struct RadioBenchOptions {
    /// Simulated meters, placed uniformly within `radius_m` of the gateway.
    pub meters: usize,
    /// Simulated time.
    pub simulated: Duration,
    /// Uplink interval of each meter.
    pub interval: Duration,
    /// Seed of everything random on the air (positions, shadowing, timing).
    pub seed: u64,
    /// Radius of the village around the gateway, in metres.
    pub radius_m: f64,
    /// PHYPayload length: LoRaWAN's 13 bytes plus the application payload.
    pub payload_len: usize,
    /// How the air attenuates signals over distance (the path-loss model).
    pub path_loss: PathLossModel,
    /// Write every frame on the air as a JSON line to this file.
    pub capture: Option<PathBuf>,
}

impl Default for RadioBenchOptions {
    /// 1,000 meters within 2 km, one uplink each every 15 minutes for a day: 96,000 uplinks.
    fn default() -> Self {
        Self {
            meters: 1000,
            simulated: Duration::from_secs(24 * 3600),
            interval: Duration::from_secs(15 * 60),
            seed: 1,
            radius_m: 2000.0,
            payload_len: 24,
            path_loss: PathLossModel::rural(),
            capture: None,
        }
    }
}

/// What happened, and how fast.
#[derive(Clone, Debug, Serialize)]
pub struct RadioBenchReport {
    /// Meters simulated.
    pub meters: usize,
    /// Meters per spreading factor SF7..SF12 chosen with a 5 dB margin.
    pub meters_per_sf: [usize; 6],
    /// Meters no spreading factor reaches (they still try at SF12).
    pub unreachable_meters: usize,
    /// Uplinks the meters transmitted.
    pub uplinks_sent: u64,
    /// Uplinks received intact by the gateway's radios (one per spreading factor).
    pub uplinks_received: u64,
    /// Receptions at the gateway that failed the payload CRC.
    pub crc_errors: u64,
    /// Receptions at the gateway with an invalid LoRa header.
    pub header_errors: u64,
    /// Driver calls that failed (setup, transmit, an unexpected receive error), meters and gateway.
    pub radio_errors: u64,
    /// What the air did: frames carried and the verdict of every reception.
    pub air: AirStats,
    /// Simulated time, in seconds.
    pub simulated_s: f64,
    /// Wall-clock time of the run, in seconds.
    pub wall_s: f64,
    /// Uplinks sent per wall-clock second: how fast the simulation runs.
    pub uplinks_per_wall_second: f64,
}

#[derive(Default)]
struct Counters {
    sent: Cell<u64>,
    received: Cell<u64>,
    crc: Cell<u64>,
    header: Cell<u64>,
    errors: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// A single-threaded runtime whose clock is paused: simulations run as fast as the CPU allows.
pub fn paused_runtime() -> Result<tokio::runtime::Runtime, RadioError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| RadioError::Io(format!("runtime: {e}")))
}

/// Runs the benchmark on its own single-threaded runtime with a paused clock.
pub fn run_radio_bench(options: &RadioBenchOptions) -> Result<RadioBenchReport, RadioError> {
    let runtime = paused_runtime()?;
    let wall = std::time::Instant::now();
    let mut report = tokio::task::LocalSet::new().block_on(&runtime, simulate(options))?;
    report.wall_s = wall.elapsed().as_secs_f64();
    report.uplinks_per_wall_second = report.uplinks_sent as f64 / report.wall_s.max(1e-9);
    Ok(report)
}

async fn simulate(options: &RadioBenchOptions) -> Result<RadioBenchReport, RadioError> {
    let air = Air::new(AirConfig {
        seed: options.seed,
        path_loss: options.path_loss.clone(),
        keep_records: false,
    });
    if let Some(path) = &options.capture {
        let writer = CaptureWriter::create(path)
            .map_err(|e| RadioError::Io(format!("{}: {e}", path.display())))?;
        air.set_capture(writer);
    }
    let counters = Rc::new(Counters::default());
    let start = Instant::now() + SETTLE;
    let end = start + options.simulated;
    let mut tasks = Vec::new();

    // One SX1262 per spreading factor on the mast: a single SX1262 demodulates one SF at a time.
    let mut gw_spec = NodeSpec::new("gw", 0.0, 0.0);
    gw_spec.antenna_gain_dbi = GATEWAY_GAIN_DBI;
    for sf in 7..=12u8 {
        let spec = NodeSpec {
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
        let c = counters.clone();
        tasks.push(tokio::task::spawn_local(async move {
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                match radio.receive(end - now).await {
                    Ok(_) => bump(&c.received),
                    Err(RadioError::Crc { .. }) => bump(&c.crc),
                    Err(RadioError::Header) => bump(&c.header),
                    Err(RadioError::Timeout(_)) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "bench gateway radio");
                        bump(&c.errors);
                    }
                }
            }
        }));
    }

    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut meters_per_sf = [0usize; 6];
    let mut unreachable = 0;
    for i in 0..options.meters {
        let r = options.radius_m * rng.random::<f64>().sqrt();
        let theta = std::f64::consts::TAU * rng.random::<f64>();
        let spec = NodeSpec::new(format!("m{i:05}"), r * theta.cos(), r * theta.sin());
        let rx = f64::from(METER_POWER_DBM) + GATEWAY_GAIN_DBI
            - link_loss_db(&options.path_loss, options.seed, &spec, &gw_spec);
        let sf = choose_sf(rx).unwrap_or_else(|| {
            unreachable += 1;
            12
        });
        meters_per_sf[usize::from(sf - 7)] += 1;
        let phase = options.interval.mul_f64(rng.random::<f64>());
        let mut meter_rng = ChaCha8Rng::seed_from_u64(rng.random());
        let id = u32::try_from(i).unwrap_or(u32::MAX);
        let len = options.payload_len;
        let (air, c) = (air.clone(), counters.clone());
        let interval = options.interval;
        tasks.push(tokio::task::spawn_local(async move {
            let mut radio = match radio_on_air(&air, spec, PhyOptions::default()).await {
                Ok((radio, _chip)) => radio,
                Err(e) => {
                    tracing::warn!(error = %e, "bench meter radio");
                    bump(&c.errors);
                    return;
                }
            };
            let config = RadioConfig {
                spreading_factor: sf,
                tx_power_dbm: METER_POWER_DBM,
                ..RadioConfig::meter()
            };
            if radio.configure(config).await.is_err() {
                bump(&c.errors);
                return;
            }
            let mut payload = vec![0u8; len.max(7)];
            payload[0] = 0x40; // LoRaWAN unconfirmed data up
            payload[1..5].copy_from_slice(&id.to_le_bytes());
            let mut next = start + phase;
            let mut fcnt: u16 = 0;
            while next < end {
                tokio::time::sleep_until(next + JITTER.mul_f64(meter_rng.random::<f64>())).await;
                payload[5..7].copy_from_slice(&fcnt.to_le_bytes());
                match radio.transmit(&payload).await {
                    Ok(_) => bump(&c.sent),
                    Err(e) => {
                        tracing::warn!(error = %e, "bench meter transmit");
                        bump(&c.errors);
                    }
                }
                fcnt = fcnt.wrapping_add(1);
                next += interval;
            }
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| RadioError::Io(format!("bench task: {e}")))?;
    }
    air.flush_capture()
        .map_err(|e| RadioError::Io(format!("capture: {e}")))?;
    Ok(RadioBenchReport {
        meters: options.meters,
        meters_per_sf,
        unreachable_meters: unreachable,
        uplinks_sent: counters.sent.get(),
        uplinks_received: counters.received.get(),
        crc_errors: counters.crc.get(),
        header_errors: counters.header.get(),
        radio_errors: counters.errors.get(),
        air: air.stats(),
        simulated_s: options.simulated.as_secs_f64(),
        wall_s: 0.0,
        uplinks_per_wall_second: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sf_choice_keeps_the_margin() {
        assert_eq!(choose_sf(-100.0), Some(7));
        assert_eq!(choose_sf(-119.0), Some(7));
        assert_eq!(choose_sf(-119.1), Some(8));
        assert_eq!(choose_sf(-132.0), Some(12));
        assert_eq!(choose_sf(-132.1), None);
    }

    #[test]
    fn small_bench_sends_every_uplink_and_most_arrive() {
        let report = run_radio_bench(&RadioBenchOptions {
            meters: 20,
            simulated: Duration::from_secs(3600),
            radius_m: 500.0,
            ..RadioBenchOptions::default()
        })
        .unwrap();
        assert_eq!(report.uplinks_sent, 80);
        assert_eq!(report.radio_errors, 0);
        assert_eq!(report.air.transmissions, 80);
        assert!(report.uplinks_received >= 60, "{report:?}");
    }
}
