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
    /// With --csr the gateway's own key is used (`gramgrid gateway request-certificate`) and no
    /// private key is written here; without it, the key is made here and is part of the bundle.
    AddGateway {
        /// The PKI directory `central init` created (it holds the CA key).
        #[arg(long)]
        dir: PathBuf,
        /// Gateway id: letters, digits, '-' and '_'.
        #[arg(long)]
        id: String,
        /// Days the certificate is valid (1 to 3650).
        #[arg(long, default_value_t = 1825, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// The gateway's certificate signing request (gateway.csr from `gateway request-certificate`).
        #[arg(long)]
        csr: Option<PathBuf>,
    },
    /// Revoke a gateway's certificate (lost or stolen box): a running central refuses it at the
    /// TLS handshake within seconds, no restart. Needs the CA key, like add-gateway.
    RevokeGateway {
        /// The PKI directory `central init` created (it holds the CA key).
        #[arg(long)]
        dir: PathBuf,
        /// The gateway whose certificate (DIR/gateways/ID/gateway.pem) is revoked.
        #[arg(long)]
        id: String,
    },
    /// Enter every meter of a meter manifest (serials and radio keys, e.g. from `gramgrid sim
    /// --manifest-out`) at central, each on an account of its own (ACC-<serial>), assigned to a
    /// gateway; the gateway takes them up at its next sync, with no restart. Running it again
    /// changes nothing; new keys for a known meter re-key it.
    ImportMeters {
        /// Central config file (TOML), as for `central serve`.
        #[arg(long, short, env = "GRAMGRID_CENTRAL_CONFIG")]
        config: Option<PathBuf>,
        /// The meter manifest (TOML).
        #[arg(long)]
        manifest: PathBuf,
        /// The gateway that serves these meters (its id from `central add-gateway`).
        #[arg(long)]
        gateway: String,
        /// When the meters were installed (RFC 3339, e.g. 2026-11-01T00:00:00Z); readings from
        /// before it are not billed. Default: now.
        #[arg(long, value_parser = parse_utc)]
        installed_at: Option<chrono::DateTime<chrono::Utc>>,
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
        CentralCommand::ImportMeters {
            config,
            manifest,
            gateway,
            installed_at,
        } => import_meters(config, &manifest, gateway, installed_at),
        CentralCommand::AddGateway { dir, id, days, csr } => {
            let pki = gramgrid_net::pki::CentralPki::load(&dir)?;
            let bundle = match &csr {
                Some(path) => {
                    let request = std::fs::read_to_string(path).with_context(|| {
                        format!("cannot read the signing request {}", path.display())
                    })?;
                    pki.add_gateway_from_request(&id, &request, days)?
                }
                None => pki.add_gateway(&id, days)?,
            };
            println!(
                "gateway '{}' enrolled, certificate valid {days} days",
                bundle.gateway_id
            );
            println!("  bundle: {}", pki.bundle_path(&id).display());
            if csr.is_some() {
                println!("  copy gateway.pem, ca.pem and bundle.toml from there into the gateway's request directory (next to its gateway.key) and point its config's sync bundle at bundle.toml");
            } else {
                println!("  copy that directory to the gateway and point its config's sync bundle at bundle.toml");
            }
            Ok(())
        }
        CentralCommand::RevokeGateway { dir, id } => {
            let pki = gramgrid_net::pki::CentralPki::load(&dir)?;
            let revoked = pki.revoke_gateway(&id)?;
            println!(
                "gateway '{id}' certificate {} revoked at {}",
                revoked.serial, revoked.revoked_at
            );
            println!("  revocation list: {}", pki.crl_path().display());
            println!(
                "  a running central refuses it at the next handshake (within {} s)",
                gramgrid_central::server::REVOCATION_CHECK.as_secs()
            );
            Ok(())
        }
    }
}

fn central_serve(config: Option<PathBuf>) -> Result<()> {
    let mut config = gramgrid_central::CentralConfig::load(config.as_deref()).context(
        "fix the central config (see docs/central.example.toml for every option), then start again",
    )?;
    if let Ok(token) = std::env::var("GRAMGRID_API_TOKEN") {
        config
            .add_api_token(token)
            .map_err(|problem| anyhow::anyhow!("GRAMGRID_API_TOKEN: {problem}"))?;
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

fn parse_utc(text: &str) -> std::result::Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("'{text}' is not an RFC 3339 time such as 2026-11-01T00:00:00Z: {e}"))
}

fn import_meters(
    config: Option<PathBuf>,
    manifest_path: &std::path::Path,
    gateway: String,
    installed_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<()> {
    let config = gramgrid_central::CentralConfig::load(config.as_deref()).context(
        "fix the central config (see docs/central.example.toml for every option), then try again",
    )?;
    let text = std::fs::read_to_string(manifest_path)
        .with_context(|| format!("cannot read the meter manifest {}", manifest_path.display()))?;
    let manifest = gramgrid_proto::manifest::MeterManifest::parse(&text).with_context(|| {
        format!(
            "the meter manifest {} is not valid",
            manifest_path.display()
        )
    })?;
    let central = gramgrid_central::Central::open(config)
        .context("cannot open central's database (is database_url right?)")?;
    let installed_at = installed_at.unwrap_or_else(|| central.now());
    let report = central
        .db()
        .blocking(move |tx| {
            gramgrid_central::import::import_manifest(tx, &manifest, &gateway, installed_at)
        })
        .context("nothing was imported")?;
    println!(
        "{} meters added (each on its own account ACC-<serial>), {} re-keyed; the gateway takes them up at its next sync",
        report.added, report.rekeyed
    );
    Ok(())
}
