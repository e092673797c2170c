//! Command-line entry point: parses arguments and calls into the library crates.
use clap::Parser;

mod cli;

fn main() -> std::process::ExitCode {
    cli::run(cli::Cli::parse())
}
