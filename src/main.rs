//! Command-line entry point: parses arguments and calls into the library.
use clap::Parser;

fn main() -> std::process::ExitCode {
    gramgrid::cli::run(gramgrid::cli::Cli::parse())
}
