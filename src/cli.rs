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
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {}

/// Runs a parsed command line and maps errors to an exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Bench { what } => match what {},
    }
}
