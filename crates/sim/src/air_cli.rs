//! Command-line arguments and handlers of the radio subcommands (`bench radio`, `air-bus`).

use crate::radio_bench::{run_radio_bench, RadioBenchOptions};
use clap::{Args, ValueEnum};
use gramgrid_air::air::AirConfig;
use gramgrid_air::capture::CaptureWriter;
use gramgrid_air::pathloss::PathLossModel;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Which path-loss model the air uses.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PathLossChoice {
    /// Okumura-Hata suburban, 15 m mast, +10 dB building entry, sigma 8 dB (the rural default: a substation mast in a village).
    Rural,
    /// LoRaSim log-distance (urban, low antennas).
    Urban,
}

impl PathLossChoice {
    /// The path-loss model this choice names.
    pub fn model(self) -> PathLossModel {
        match self {
            Self::Rural => PathLossModel::rural(),
            Self::Urban => PathLossModel::urban(),
        }
    }
}

/// `gramgrid bench radio` options.
#[derive(Debug, Args)]
pub struct RadioBenchArgs {
    /// Simulated meters, placed uniformly within --radius-m of the gateway.
    #[arg(long, default_value_t = 1000)]
    pub meters: usize,
    /// Simulated time.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub simulated: Duration,
    /// Uplink interval of each meter.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Radius of the village in metres: meters are placed within it around the gateway.
    #[arg(long, default_value_t = 2000.0)]
    pub radius_m: f64,
    /// Seed, path loss and capture of the air.
    #[command(flatten)]
    pub air: AirArgs,
}

/// `gramgrid air-bus` options.
#[derive(Debug, Args)]
pub struct AirBusArgs {
    /// UDP address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Seed, path loss and capture of the air.
    #[command(flatten)]
    pub air: AirArgs,
}

/// Options of every command that runs an air.
#[derive(Debug, Args)]
pub struct AirArgs {
    /// Seed of everything random on the air (positions, shadowing, timing).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How the air attenuates signals over distance (the path-loss model).
    #[arg(long, value_enum, default_value = "rural")]
    pub path_loss: PathLossChoice,
    /// Write every frame on the air as a JSON line to this file.
    #[arg(long)]
    pub capture: Option<PathBuf>,
}

/// `gramgrid bench radio`: runs the benchmark with the command-line options.
pub fn bench(
    args: RadioBenchArgs,
) -> Result<crate::radio_bench::RadioBenchReport, gramgrid_radio::RadioError> {
    let options = RadioBenchOptions {
        meters: args.meters,
        simulated: args.simulated,
        interval: args.interval,
        seed: args.air.seed,
        radius_m: args.radius_m,
        path_loss: args.air.path_loss.model(),
        capture: args.air.capture,
        ..RadioBenchOptions::default()
    };
    run_radio_bench(&options)
}

/// `gramgrid air-bus`: runs the hub until `shutdown` completes.
pub async fn air_bus(
    args: AirBusArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let capture = args
        .air
        .capture
        .as_deref()
        .map(CaptureWriter::create_live)
        .transpose()?;
    let socket = tokio::net::UdpSocket::bind(args.listen).await?;
    // The first stdout line is the contract scripts and tests read the address from.
    println!("air bus listening on {}", socket.local_addr()?);
    let config = AirConfig {
        seed: args.air.seed,
        path_loss: args.air.path_loss.model(),
        keep_records: false,
    };
    let stats = gramgrid_air::bus::serve(socket, config, capture, shutdown).await?;
    eprintln!(
        "air bus carried {} frames: {:?}",
        stats.transmissions, stats.verdicts
    );
    Ok(())
}
