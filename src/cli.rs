//! The `gramgrid` command line: subcommand definitions and dispatch to the library.
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Prepaid electricity for villages whose backhaul comes and goes.
#[derive(Debug, Parser)]
#[command(name = "gramgrid", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure performance figures on this machine.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Run the shared simulated air on a loopback UDP port, so radios in separate processes
    /// (`gramgrid sim`, `gramgrid gateway`) hear each other. Prints the bound address.
    AirBus(crate::radio::cli::AirBusArgs),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Simulated uplinks per wall-clock second through lora-phy, the SX1262 emulator and the air.
    Radio(crate::radio::cli::RadioBenchArgs),
}

/// Runs a parsed command line and maps errors to an exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Bench { what } => match what {
            BenchCommand::Radio(args) => crate::radio::cli::bench(args),
        },
        Command::AirBus(args) => crate::radio::cli::air_bus(args),
    }
}
