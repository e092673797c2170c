//! The `gramgrid` command line: subcommand definitions and dispatch to the library.
//!
//! Exit codes: 0 success, 1 the command failed (the message says why and what to do), 2 the command
//! line itself was wrong (clap's usage error).
use crate::civil::Month;
use crate::config::GatewayConfig;
use crate::tariff::Category;
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
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
    Demo(crate::demo::DemoArgs),
    /// Run the village gateway daemon (or inspect one).
    Gateway(GatewayArgs),
    /// Price consumption with the tariff book.
    Tariff {
        #[command(subcommand)]
        what: TariffCommand,
    },
    /// Central server: certificate authority and gateway enrolment.
    Central {
        #[command(subcommand)]
        what: CentralCommand,
    },
    /// Measure performance figures on this machine.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Run the shared simulated air on a loopback UDP port, so radios in separate processes
    /// (`gramgrid sim`, `gramgrid gateway`) hear each other. Prints the bound address.
    AirBus(crate::radio::cli::AirBusArgs),
    /// Run a simulated meter fleet on the air bus until interrupted (see `gramgrid air-bus`).
    Sim(crate::meter::cli::SimArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GatewayArgs {
    /// Gateway config file (TOML); without it the embedded defaults are used.
    #[arg(long, short, global = true, env = "GRAMGRID_CONFIG")]
    pub config: Option<PathBuf>,
    /// Validate the config, print the effective settings and exit.
    #[arg(long)]
    pub check: bool,
    #[command(subcommand)]
    pub action: Option<GatewayAction>,
}

#[derive(Debug, Subcommand)]
pub enum GatewayAction {
    /// Print every account's balance, relay state and open commands from the gateway database.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check the database: SQLite integrity, and derived charges against the stored readings.
    Verify,
    /// Redeem an offline voucher code at this gateway (talks to the running daemon).
    Redeem {
        /// The voucher code as printed (dashes, spaces and letter case do not matter).
        code: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TariffCommand {
    /// A month's bill for some consumption, broken down by slab and component.
    Quote {
        /// Consumer category.
        #[arg(long, value_enum, default_value_t = Category::Domestic)]
        category: Category,
        /// Units (kWh) consumed in the month; decimals allowed.
        #[arg(long)]
        units: f64,
        /// Month to price (YYYY-MM); default: the current month in Asia/Kolkata.
        #[arg(long, value_parser = parse_month)]
        month: Option<Month>,
        /// Take the tariff book from this gateway config instead of the built-in one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the tariff book in force (config or built-in) as TOML.
    Show {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CentralCommand {
    /// Run the central server: API and gateway sync over TLS (needs `central init` first).
    Serve {
        /// Central config file (TOML); see docs/central.example.toml.
        #[arg(long, short, env = "GRAMGRID_CENTRAL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create the central CA and the central server's TLS certificate in DIR.
    Init {
        /// Directory for the CA, the server certificate and the gateway bundles.
        #[arg(long)]
        dir: PathBuf,
        /// URL the gateways reach central at (https://host:port), written into every bundle.
        #[arg(long)]
        url: String,
        /// DNS name or IP address of the central server, repeatable (default: localhost, 127.0.0.1).
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Issue a gateway's client certificate and write its bundle under DIR/gateways/NAME/.
    AddGateway {
        #[arg(long)]
        dir: PathBuf,
        /// Gateway id: letters, digits, '-' and '_'.
        #[arg(long)]
        id: String,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 1825)]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Simulated uplinks per wall-clock second through lora-phy, the SX1262 emulator and the air.
    Radio(crate::radio::cli::RadioBenchArgs),
    /// Readings per second the central server accepts from many gateways at once.
    Central {
        /// sqlite:PATH or postgres://...; default: SQLite in a temporary directory.
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long, default_value_t = 8)]
        gateways: usize,
        #[arg(long, default_value_t = 200)]
        meters: usize,
        /// Total readings (whole days of every meter).
        #[arg(long, default_value_t = 460_800)]
        readings: usize,
        /// PostgreSQL connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long)]
        json: bool,
    },
    /// Bytes on the wire per reading and catch-up time after an outage, over a throttled link.
    Sync {
        #[arg(long, default_value_t = 500)]
        meters: usize,
        /// Days the backhaul was down.
        #[arg(long, default_value_t = 7)]
        outage_days: i64,
        /// Link bandwidth in each direction, kbit/s.
        #[arg(long, default_value_t = 64)]
        kbit: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
    /// Largest fleet one channel serves (99.9 % of readings within 60 min), scheduled vs ALOHA.
    Capacity(crate::capacity::CapacityArgs),
    /// Readings ingested and charged per second into SQLite, and bytes written per reading.
    Ledger {
        #[arg(long, default_value_t = 1000)]
        meters: usize,
        #[arg(long, default_value_t = 7)]
        days: usize,
        /// Readings per transaction (the gateway's store.readings_commit_max).
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        /// Directory for the benchmark database (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_month(text: &str) -> std::result::Result<Month, String> {
    Month::parse(text)
        .ok_or_else(|| format!("'{text}' is not a month; write it as YYYY-MM, e.g. 2026-11"))
}

/// Runs a parsed command line and maps errors to an exit code.
pub fn run(cli: Cli) -> ExitCode {
    // The demo draws a progress bar and a summary: only errors interrupt them (the business events
    // central flags, e.g. offline overdrafts, are counted in the summary instead).
    init_tracing(if matches!(cli.command, Command::Demo(_)) {
        "error"
    } else {
        "info"
    });
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Gateway(args) => gateway(args),
        Command::Tariff { what } => tariff(what),
        Command::Central { what } => central(what),
        Command::Bench { what } => bench(what),
        Command::AirBus(args) => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime
                .block_on(crate::radio::cli::air_bus(args, shutdown_signal()))
                .context("the air bus stopped")
        }
        Command::Demo(args) => demo(&args),
        Command::Sim(args) => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime
                .block_on(crate::meter::cli::sim(args, shutdown_signal()))
                .context("the simulated fleet stopped")
        }
    }
}

fn central(what: CentralCommand) -> Result<()> {
    match what {
        CentralCommand::Serve { config } => central_serve(config),
        CentralCommand::Init { dir, url, names } => {
            let pki = crate::pki::CentralPki::init(&dir, &url, &names)?;
            println!("central CA created in {}", pki.dir().display());
            println!("  CA certificate:     {}", pki.ca_cert_path().display());
            println!(
                "  CA key (keep safe): {}",
                pki.dir().join("ca.key").display()
            );
            println!("  server certificate: {}", pki.server_cert_path().display());
            println!("  server key:         {}", pki.server_key_path().display());
            println!(
                "next: gramgrid central add-gateway --dir {} --id NAME",
                dir.display()
            );
            Ok(())
        }
        CentralCommand::AddGateway { dir, id, days } => {
            let pki = crate::pki::CentralPki::load(&dir)?;
            let bundle = pki.add_gateway(&id, days)?;
            println!(
                "gateway '{}' enrolled, certificate valid {days} days",
                bundle.gateway_id
            );
            println!("  bundle: {}", pki.bundle_path(&id).display());
            println!("  copy that directory to the gateway and point its config's sync bundle at bundle.toml");
            Ok(())
        }
    }
}

fn central_serve(config: Option<PathBuf>) -> Result<()> {
    let mut config = crate::central::CentralConfig::load(config.as_deref()).context(
        "fix the central config (see docs/central.example.toml for every option), then start again",
    )?;
    if let Ok(token) = std::env::var("GRAMGRID_API_TOKEN") {
        config.api_tokens.push(token);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listen = config.listen.clone();
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| {
                format!("cannot listen on {listen}; change `listen` in the central config")
            })?;
        let running = crate::central::server::start(config, listener).await?;
        shutdown_signal().await;
        running.stop().await?;
        anyhow::Ok(())
    })
}

fn load_config(path: Option<&std::path::Path>) -> Result<GatewayConfig> {
    GatewayConfig::load(path).context(
        "fix the config file (see docs/gateway.example.toml for every option), then start again",
    )
}

fn gateway(args: GatewayArgs) -> Result<()> {
    let config = load_config(args.config.as_deref())?;
    if args.check {
        print!(
            "{}",
            toml::to_string(&config).context("cannot print the config")?
        );
        return Ok(());
    }
    match args.action {
        None => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(crate::gateway::run(config, shutdown_signal()))?;
            Ok(())
        }
        Some(GatewayAction::Status { json }) => {
            let mut gateway = crate::gateway::Gateway::open(config)?;
            let status = crate::report::gateway_status(gateway.store())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", crate::report::render_status(&status));
            }
            Ok(())
        }
        Some(GatewayAction::Redeem { code }) => {
            let socket = crate::gateway::local::socket_path(&config.gateway.data_dir);
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let request = crate::gateway::local::LocalRequest::Redeem { code };
            let answer = runtime
                .block_on(crate::gateway::local::request(&socket, &request))
                .with_context(|| format!("cannot reach the gateway daemon at {}; is `gramgrid gateway` running with this config?", socket.display()))?;
            println!("{}", answer.message);
            if answer.ok {
                Ok(())
            } else {
                anyhow::bail!("the voucher was not redeemed")
            }
        }
        Some(GatewayAction::Verify) => {
            let mut gateway = crate::gateway::Gateway::open(config)?;
            let book = gateway.tariff_book().clone();
            let problems = gateway.store().verify(&book)?;
            if problems.is_empty() {
                println!(
                    "ok: database intact; every meter's charges match its readings and the tariff"
                );
                return Ok(());
            }
            for problem in &problems {
                println!("{problem}");
            }
            anyhow::bail!("{} problems found in the gateway database", problems.len())
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

fn tariff(what: TariffCommand) -> Result<()> {
    match what {
        TariffCommand::Quote {
            category,
            units,
            month,
            config,
            json,
        } => {
            if !units.is_finite() || !(0.0..=1.0e9).contains(&units) {
                anyhow::bail!("--units {units} is not a monthly consumption; give a number of kWh such as 250");
            }
            let book = load_config(config.as_deref())?.tariff_book()?;
            let month = month.unwrap_or_else(|| Month::containing(chrono::Utc::now()));
            let bill = book.quote(category, month, (units * 1000.0).round() as i64);
            if json {
                println!("{}", serde_json::to_string_pretty(&bill)?);
            } else {
                println!("{bill}");
            }
            Ok(())
        }
        TariffCommand::Show { config } => {
            #[derive(serde::Serialize)]
            struct Book<'a> {
                tariff: &'a [crate::tariff::TariffVersion],
            }
            let book = load_config(config.as_deref())?.tariff_book()?;
            print!(
                "{}",
                toml::to_string(&Book {
                    tariff: book.versions()
                })?
            );
            Ok(())
        }
    }
}

fn demo(args: &crate::demo::DemoArgs) -> Result<()> {
    let demo = crate::demo::Demo::run(args).context("the demo could not finish")?;
    let summary = demo.summary();
    if args.json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        print!("{}", crate::demo::summary::render(summary));
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

fn bench(what: BenchCommand) -> Result<()> {
    match what {
        BenchCommand::Radio(args) => {
            let report = crate::radio::cli::bench(args).context("the radio benchmark failed")?;
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
            let settings = crate::bench::SyncBench {
                meters,
                outage_days,
                kbit_per_second: kbit,
                seed,
                progress: !json,
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let figures = runtime.block_on(crate::bench::sync(&settings))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                println!("{figures}");
            }
            anyhow::ensure!(
                figures.balances_agree,
                "gateway and central balances disagree after the catch-up"
            );
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
            let settings = crate::central::bench::IngestBench {
                database_url,
                gateways,
                meters_per_gateway: meters,
                readings,
                connections,
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let figures = runtime.block_on(crate::central::bench::ingest(&settings))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                println!("{figures}");
            }
            Ok(())
        }
        BenchCommand::Capacity(args) => {
            let options = args.options().map_err(anyhow::Error::msg)?;
            let report = crate::capacity::capacity(&options, |mode, run| {
                eprintln!("{}", crate::capacity::run_line(mode, run));
            })
            .context("the capacity benchmark failed")?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&crate::capacity::json(&report))?
                );
            } else {
                print!("{}", crate::capacity::render(&report));
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
            let figures = crate::bench::ledger(&crate::bench::LedgerBench {
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
