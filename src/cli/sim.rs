//! The simulator's commands: `gramgrid demo`, `gramgrid bench`, `gramgrid air-bus`, `gramgrid sim`.
use super::shutdown_signal;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Simulated uplinks per wall-clock second through lora-phy, the SX1262 emulator and the air.
    Radio(gramgrid_sim::air_cli::RadioBenchArgs),
    /// Readings per second the central server accepts from many gateways at once.
    Central {
        /// sqlite:PATH or postgres://...; default: SQLite in a temporary directory.
        #[arg(long)]
        database_url: Option<String>,
        /// Gateways uploading at once (each a task with its own accounts and meters).
        #[arg(long, default_value_t = 8)]
        gateways: usize,
        /// Meters per gateway.
        #[arg(long, default_value_t = 200)]
        meters: usize,
        /// Total readings (whole days of every meter).
        #[arg(long, default_value_t = 460_800)]
        readings: usize,
        /// PostgreSQL connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// How long a real API call takes while idle connections flood central's listener (loopback
    /// only, from 127.0.0.10 and up), against the same call without the flood.
    Flood {
        /// Idle TCP connections to open.
        #[arg(long, default_value_t = 600)]
        connections: usize,
        /// Source addresses they come from (1 to 200).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=200))]
        addresses: u8,
        /// Real API calls timed in each phase.
        #[arg(long, default_value_t = 20)]
        requests: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Bytes on the wire per reading and catch-up time after an outage, over a throttled link.
    Sync {
        /// Households in the village.
        #[arg(long, default_value_t = 500)]
        meters: usize,
        /// Days the backhaul was down.
        #[arg(long, default_value_t = 7)]
        outage_days: i64,
        /// Link bandwidth in each direction, kbit/s.
        #[arg(long, default_value_t = 64)]
        kbit: u64,
        /// Seed of the households' load and the link's faults.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Backhaul bytes per reading, per session and per month with 15-minute sessions, TLS included.
    SyncSteady(gramgrid_sim::steady_sync_bench::SteadySyncArgs),
    /// Largest fleet one channel serves (99.9 % of readings within 60 min), scheduled vs ALOHA.
    Capacity(gramgrid_sim::capacity::CapacityArgs),
    /// Seconds from a payment (a recharge at central, a voucher at the gateway) to the meter's
    /// relay closing, over an emulated cellular backhaul and the emulated air.
    Reconnect(gramgrid_sim::reconnect_bench::ReconnectArgs),
    /// Readings ingested and charged per second into SQLite, and bytes written per reading.
    Ledger {
        /// Meters reporting.
        #[arg(long, default_value_t = 1000)]
        meters: usize,
        /// Days of 15-minute readings per meter.
        #[arg(long, default_value_t = 7)]
        days: usize,
        /// Readings per transaction (the link commits each meter report, a few readings, on its own).
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        /// Directory for the benchmark database (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Seed of the load profiles.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn demo(args: &gramgrid_sim::demo::DemoArgs) -> Result<()> {
    let demo = match gramgrid_sim::demo::Demo::run(args) {
        Ok(demo) => demo,
        Err(gramgrid_sim::demo::DemoError::Options(problem)) => {
            return Err(super::UsageError(problem).into())
        }
        Err(error) => return Err(anyhow::Error::new(error).context("the demo could not finish")),
    };
    let summary = demo.summary();
    if args.json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        print!("{}", gramgrid_sim::demo::summary::render(summary));
    }
    let problems = summary.problems();
    if !problems.is_empty() {
        anyhow::bail!(
            "the demo's village did not run as it should: {}; rerun with --dir DIR and RUST_LOG=info to inspect it",
            problems.join("; ")
        );
    }
    if args.serve {
        let serving = demo.serving();
        if args.json {
            eprintln!("{serving}");
        } else {
            println!("\n{serving}");
        }
        demo.serve(shutdown_signal())
            .context("the demo stopped serving")?;
    }
    Ok(())
}

pub(super) fn bench(what: BenchCommand) -> Result<()> {
    match what {
        BenchCommand::Radio(args) => {
            let report =
                gramgrid_sim::air_cli::bench(args).context("the radio benchmark failed")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        BenchCommand::Sync {
            meters,
            outage_days,
            kbit,
            seed,
            json,
        } => {
            let settings = gramgrid_sim::bench::SyncBench {
                meters,
                outage_days,
                kbit_per_second: kbit,
                seed,
                progress: !json,
            };
            let figures = run_bench(gramgrid_sim::bench::sync(&settings), "sync", json)?;
            anyhow::ensure!(
                figures.balances_agree,
                "gateway and central balances disagree after the catch-up"
            );
            Ok(())
        }
        BenchCommand::SyncSteady(args) => {
            let figures = run_bench(
                gramgrid_sim::steady_sync_bench::steady(&args),
                "steady-state sync",
                args.json,
            )?;
            anyhow::ensure!(
                figures.balances_agree,
                "gateway and central balances disagree after the sessions"
            );
            Ok(())
        }
        BenchCommand::Reconnect(args) => {
            run_bench(
                gramgrid_sim::reconnect_bench::reconnect(&args),
                "reconnect",
                args.json,
            )?;
            Ok(())
        }
        BenchCommand::Central {
            database_url,
            gateways,
            meters,
            readings,
            connections,
            json,
        } => {
            let settings = gramgrid_sim::central_bench::IngestBench {
                database_url,
                gateways,
                meters_per_gateway: meters,
                readings,
                connections,
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let figures = runtime.block_on(gramgrid_sim::central_bench::ingest(&settings))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                println!("{figures}");
            }
            Ok(())
        }
        BenchCommand::Flood {
            connections,
            addresses,
            requests,
            json,
        } => {
            let settings = gramgrid_sim::flood_bench::FloodBench {
                connections,
                addresses,
                requests,
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let figures = runtime.block_on(gramgrid_sim::flood_bench::flood(&settings))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                println!("{figures}");
            }
            Ok(())
        }
        BenchCommand::Capacity(args) => {
            let options = args.options().map_err(anyhow::Error::msg)?;
            let report = gramgrid_sim::capacity::capacity(&options, |mode, run| {
                eprintln!("{}", gramgrid_sim::capacity::run_line(mode, run));
            })
            .context("the capacity benchmark failed")?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&gramgrid_sim::capacity::json(&report))?
                );
            } else {
                print!("{}", gramgrid_sim::capacity::render(&report));
            }
            Ok(())
        }
        BenchCommand::Ledger {
            meters,
            days,
            batch,
            dir,
            seed,
            json,
        } => {
            let figures = gramgrid_sim::bench::ledger(&gramgrid_sim::bench::LedgerBench {
                meters,
                days,
                batch,
                dir,
                seed,
                progress: !json,
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                println!("{figures}");
            }
            Ok(())
        }
    }
}

/// Runs an async benchmark to its end on a new runtime and prints its figures (as JSON with
/// `json`); returns them for the caller's checks.
fn run_bench<F, T, E>(bench: F, name: &str, json: bool) -> Result<T>
where
    F: std::future::Future<Output = std::result::Result<T, E>>,
    T: serde::Serialize + std::fmt::Display,
    E: std::error::Error + Send + Sync + 'static,
{
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let figures = runtime
        .block_on(bench)
        .with_context(|| format!("the {name} benchmark failed"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!("{figures}");
    }
    Ok(figures)
}
