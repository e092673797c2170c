//! `gramgrid central`: the certificate authority, gateway enrolment and the central server.
use super::shutdown_signal;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;

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

pub(super) fn run(what: CentralCommand) -> Result<()> {
    match what {
        CentralCommand::Serve { config } => central_serve(config),
        CentralCommand::Init { dir, url, names } => {
            let pki = gramgrid_net::pki::CentralPki::init(&dir, &url, &names)?;
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
            let pki = gramgrid_net::pki::CentralPki::load(&dir)?;
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
    let mut config = gramgrid_central::CentralConfig::load(config.as_deref()).context(
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
        let running = gramgrid_central::server::start(config, listener).await?;
        shutdown_signal().await;
        running.stop().await?;
        anyhow::Ok(())
    })
}
