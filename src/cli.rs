//! The `gramgrid` command line: subcommand definitions and dispatch to the library.
//!
//! Exit codes: 0 success, 1 the command failed (the message says why and what to do), 2 the command
//! line itself was wrong (clap's usage error).
//!
//! Which subcommands exist depends on the build's features: the default build has them all; the
//! build for a Pi (`--no-default-features --features hardware`) has only `gateway` and `tariff`.
#[cfg(feature = "central")]
mod central;
mod gateway;
#[cfg(feature = "sim")]
mod sim;
mod tariff;

#[allow(unused_imports)] // `Context` is used only by the simulator's commands.
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Prepaid electricity for villages whose backhaul comes and goes.
///
/// The gateway at the village substation keeps the ledger and enforces the utility's rules locally;
/// the central server keeps accounts and syncs with every gateway when the link is up.
#[derive(Debug, Parser)]
#[command(name = "gramgrid", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start here: a whole village on simulated time, with a summary at the end.
    ///
    /// Runs in one process central, a gateway whose radio is lora-phy on an emulated SX1262, and
    /// hundreds of simulated meters; three days with a backhaul outage, recharges at central,
    /// vouchers redeemed at the gateway, cuts inside the disconnect window and reconnections. The
    /// summary is read from the databases. Nothing to install or set up.
    #[cfg(feature = "sim")]
    Demo(gramgrid_sim::demo::DemoArgs),
    /// Run the village gateway daemon (or inspect one).
    Gateway(gateway::GatewayArgs),
    /// Price consumption with the tariff book.
    Tariff {
        #[command(subcommand)]
        what: tariff::TariffCommand,
    },
    /// Central server: certificate authority and gateway enrolment.
    #[cfg(feature = "central")]
    Central {
        #[command(subcommand)]
        what: central::CentralCommand,
    },
    /// Measure performance figures on this machine.
    #[cfg(feature = "sim")]
    Bench {
        #[command(subcommand)]
        what: sim::BenchCommand,
    },
    /// Run the shared simulated air on a loopback UDP port, so radios in separate processes
    /// (`gramgrid sim`, `gramgrid gateway`) hear each other. Prints the bound address.
    #[cfg(feature = "sim")]
    AirBus(gramgrid_sim::air_cli::AirBusArgs),
    /// Run a simulated meter fleet on the air bus until interrupted (see `gramgrid air-bus`).
    #[cfg(feature = "sim")]
    Sim(gramgrid_sim::meter::cli::SimArgs),
}

/// An option value the command cannot work with (exit code 2, as for clap's own usage errors).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Runs a parsed command line and maps errors to an exit code.
pub fn run(cli: Cli) -> ExitCode {
    // Long commands show a progress bar and a result: only errors interrupt them (the business
    // events central flags, e.g. offline overdrafts, are counted in their summaries instead).
    #[cfg(feature = "sim")]
    let quiet = matches!(cli.command, Command::Demo(_) | Command::Bench { .. });
    #[cfg(not(feature = "sim"))]
    let quiet = false;
    init_tracing(if quiet { "error" } else { "info" });
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.downcast_ref::<UsageError>().is_some() => {
            eprintln!("error: {}", say_once(&error));
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {}", say_once(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: a library error that already quotes its cause in its
/// own message (`cannot read config file x: Is a directory`) is not followed by that cause again.
fn say_once(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Standard error, and the latest lines kept for the technician's diagnostics bundle.
        .with_writer(|| gramgrid_gateway::recent_logs::Tee)
        // Colours only on a terminal: a log file or the journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // Under systemd, standard error goes to the journal (which sets JOURNAL_STREAM), and the
    // journal stamps each line itself: `journalctl -u gramgrid-gateway` shows one time, not two.
    let _ = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Gateway(args) => gateway::run(args),
        Command::Tariff { what } => tariff::run(what),
        #[cfg(feature = "central")]
        Command::Central { what } => central::run(what),
        #[cfg(feature = "sim")]
        Command::Bench { what } => sim::bench(what),
        #[cfg(feature = "sim")]
        Command::AirBus(args) => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime
                .block_on(gramgrid_sim::air_cli::air_bus(args, shutdown_signal()))
                .context("the air bus stopped")
        }
        #[cfg(feature = "sim")]
        Command::Demo(args) => sim::demo(&args),
        #[cfg(feature = "sim")]
        Command::Sim(args) => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime
                .block_on(gramgrid_sim::meter::cli::sim(args, shutdown_signal()))
                .context("the simulated fleet stopped")
        }
    }
}

/// Completes on Ctrl-C or SIGTERM (systemd's stop).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the gateway");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
