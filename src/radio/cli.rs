//! Command-line arguments and handlers of the radio subcommands (`bench radio`, `air-bus`).

use super::air::AirConfig;
use super::bench::{run_radio_bench, RadioBenchOptions};
use super::capture::CaptureWriter;
use super::pathloss::PathLossModel;
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Which path-loss model the air uses.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PathLossChoice {
    /// Okumura-Hata suburban, 15 m mast, +10 dB building entry, sigma 8 dB (DESIGN.md default).
    Rural,
    /// LoRaSim log-distance (urban, low antennas).
    Urban,
}

impl PathLossChoice {
    fn model(self) -> PathLossModel {
        match self {
            Self::Rural => PathLossModel::rural(),
            Self::Urban => PathLossModel::urban(),
        }
    }
}

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
    #[arg(long, default_value_t = 2000.0)]
    pub radius_m: f64,
    #[command(flatten)]
    pub air: AirArgs,
}

#[derive(Debug, Args)]
pub struct AirBusArgs {
    /// UDP address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub air: AirArgs,
}

/// Options of every command that runs an air.
#[derive(Debug, Args)]
pub struct AirArgs {
    /// Seed of everything random on the air (positions, shadowing, timing).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "rural")]
    pub path_loss: PathLossChoice,
    /// Write every frame on the air as a JSON line to this file.
    #[arg(long)]
    pub capture: Option<PathBuf>,
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
}

/// `gramgrid bench radio`: prints the report as JSON.
pub fn bench(args: RadioBenchArgs) -> ExitCode {
    init_logging();
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
    match run_radio_bench(&options) {
        Ok(report) => match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gramgrid bench radio: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("gramgrid bench radio: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `gramgrid air-bus`: runs the hub until Ctrl-C or SIGTERM.
pub fn air_bus(args: AirBusArgs) -> ExitCode {
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gramgrid air-bus: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_air_bus(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gramgrid air-bus: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_air_bus(args: AirBusArgs) -> std::io::Result<()> {
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
    let stats = super::bus::serve(socket, config, capture, shutdown_signal()).await?;
    eprintln!(
        "air bus carried {} frames: {:?}",
        stats.transmissions, stats.verdicts
    );
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
