//! `gramgrid gateway`: run the daemon, check its config, and the technician's commands against it.
use super::shutdown_signal;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use gramgrid_gateway::config::GatewayConfig;
use std::path::PathBuf;

#[derive(Debug, Args)]
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
    /// Print every account's balance, arrears, protection, relay state and open commands, and the
    /// breaker's open holds, from the gateway database.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check the database: SQLite integrity, and derived charges against the stored readings. The
    /// result is kept: while the last check found a problem, the breaker holds disconnections.
    Verify,
    /// Show an account's relay decisions in words, with the facts each was made from, and replay
    /// each through the policy (a replay that disagrees is flagged to the office).
    Explain {
        /// The account id.
        account: String,
        /// Only the decision in force at this time (RFC 3339, e.g. 2026-11-30T11:00:00+05:30).
        #[arg(long)]
        at: Option<chrono::DateTime<chrono::FixedOffset>>,
        /// At most this many decisions, newest first.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Print the stored records as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the disconnection breaker's holds, newest first.
    Holds,
    /// Release a breaker hold (a supervisor's decision, audited and sent to central): its held
    /// disconnections go ahead in the next policy pass, once.
    Release {
        /// The hold's id, as `gramgrid gateway holds` shows it.
        hold: String,
        /// Who releases it (recorded in the audit).
        #[arg(long)]
        by: String,
        /// Why the disconnections are right (recorded in the audit).
        #[arg(long)]
        reason: String,
    },
    /// Redeem an offline voucher code at this gateway (talks to the running daemon).
    Redeem {
        /// The voucher code as printed (dashes, spaces and letter case do not matter).
        code: String,
    },
    /// Print the technician app's HTTPS certificate: its file, the SHA-256 fingerprint to print on
    /// the enclosure label (technicians compare it with the one their browser shows), the
    /// addresses it is valid for and its expiry. A gateway without one gets a self-signed one now.
    Cert,
    /// Make this gateway's private key (it never leaves DIR) and a certificate signing request
    /// for the office: `gramgrid central add-gateway --id ID --csr DIR/gateway.csr`.
    RequestCertificate {
        /// Directory for gateway.key (0600) and gateway.csr; the signed bundle goes here too.
        #[arg(long)]
        dir: PathBuf,
        /// Gateway id to ask for: letters, digits, '-' and '_' (default: the config's gateway.id).
        #[arg(long)]
        id: Option<String>,
    },
}

pub(super) fn load_config(path: Option<&std::path::Path>) -> Result<GatewayConfig> {
    GatewayConfig::load(path).context(
        "fix the config file (see docs/gateway.example.toml for every option), then start again",
    )
}

pub(super) fn run(args: GatewayArgs) -> Result<()> {
    if args.check && args.action.is_some() {
        return Err(super::UsageError(
            "--check validates the daemon's config on its own; drop the subcommand".into(),
        )
        .into());
    }
    let config = load_config(args.config.as_deref())?;
    if args.check {
        let missing = config.missing_files();
        if !missing.is_empty() {
            anyhow::bail!(
                "the config names files that are not there:\n  {}",
                missing.join("\n  ")
            );
        }
        if let Some(path) = &config.sync.bundle {
            let bundle = gramgrid_net::pki::GatewayBundle::load(path).with_context(|| {
                format!("the enrolment bundle {} is not usable", path.display())
            })?;
            anyhow::ensure!(
                bundle.gateway_id == config.gateway.id,
                "gateway.id is '{}' but the enrolment bundle {} is for gateway '{}'; set gateway.id = \"{}\"",
                config.gateway.id,
                path.display(),
                bundle.gateway_id,
                bundle.gateway_id
            );
        }
        print!(
            "{}",
            toml::to_string(&config).context("cannot print the config")?
        );
        return Ok(());
    }
    match args.action {
        Some(GatewayAction::RequestCertificate { dir, id }) => {
            let id = id.unwrap_or_else(|| config.gateway.id.clone());
            let csr = gramgrid_net::pki::request_certificate(&id, &dir)?;
            println!(
                "key and signing request for gateway '{id}' written to {}",
                dir.display()
            );
            println!(
                "  the key ({}) stays here; send only {}",
                dir.join(gramgrid_net::pki::REQUEST_KEY).display(),
                csr.display()
            );
            println!(
                "  office: gramgrid central add-gateway --dir PKI --id {id} --csr gateway.csr"
            );
            println!("  then copy gateway.pem, ca.pem and bundle.toml from the office's PKI/gateways/{id}/ into {}", dir.display());
            Ok(())
        }
        None => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(gramgrid_gateway::daemon::run(config, shutdown_signal()))?;
            Ok(())
        }
        Some(GatewayAction::Cert) => technician_cert(&config),
        Some(GatewayAction::Status { json }) => {
            let mut gateway = open_existing(config)?;
            let policy = gateway.policy().clone();
            let status = gramgrid_gateway::report::gateway_status(gateway.store(), &policy)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", gramgrid_gateway::report::render_status(&status));
            }
            Ok(())
        }
        Some(GatewayAction::Redeem { code }) => {
            let socket = gramgrid_gateway::local::socket_path(&config.gateway.data_dir);
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let request = gramgrid_gateway::local::LocalRequest::Redeem { code };
            let answer = runtime
                .block_on(gramgrid_gateway::local::request(&socket, &request))
                .with_context(|| format!("cannot reach the gateway daemon at {}; is `gramgrid gateway` running with this config?", socket.display()))?;
            println!("{}", answer.message);
            if answer.ok {
                Ok(())
            } else {
                anyhow::bail!("the voucher was not redeemed")
            }
        }
        Some(GatewayAction::Verify) => {
            let mut gateway = open_existing(config)?;
            let book = gateway.tariff_book().clone();
            let problems = gateway.store().verify(&book)?;
            gateway
                .store()
                .note_ledger_check(problems.is_empty(), chrono::Utc::now())?;
            if problems.is_empty() {
                println!(
                    "ok: database intact; every meter's charges match its readings and the tariff"
                );
                return Ok(());
            }
            for problem in &problems {
                println!("{problem}");
            }
            anyhow::bail!("{} problems found in the gateway database; the breaker holds disconnections until `gramgrid gateway verify` passes", problems.len())
        }
        Some(GatewayAction::Explain {
            account,
            at,
            limit,
            json,
        }) => explain(open_existing(config)?, &account, at, limit, json),
        Some(GatewayAction::Holds) => {
            let mut gateway = open_existing(config)?;
            let holds = gateway.store().holds(100)?;
            if holds.is_empty() {
                println!("no breaker holds");
            }
            for hold in holds {
                let state = match (&hold.released, hold.used_at) {
                    (None, _) => "OPEN".to_string(),
                    (Some((by, reason, at)), used) => format!(
                        "released by {by} at {at} ({reason}){}",
                        if used.is_some() { ", used" } else { "" }
                    ),
                };
                println!(
                    "{}  {}  {} accounts  {}\n  reasons: {}\n  accounts: {}",
                    hold.id,
                    hold.at,
                    hold.accounts.len(),
                    state,
                    hold.reasons.join("; "),
                    hold.accounts.join(" ")
                );
            }
            Ok(())
        }
        Some(GatewayAction::Release { hold, by, reason }) => {
            anyhow::ensure!(
                !by.trim().is_empty() && !reason.trim().is_empty(),
                super::UsageError(
                    "--by and --reason must say who releases the hold and why".into()
                )
            );
            let mut gateway = open_existing(config)?;
            gateway
                .store()
                .release_hold(&hold, &by, &reason, chrono::Utc::now())?;
            println!("hold {hold} released by {by}: its disconnections go ahead in the next policy pass (once)");
            Ok(())
        }
    }
}

/// `gramgrid gateway cert`: the technician certificate the daemon serves, for the label.
fn technician_cert(config: &GatewayConfig) -> Result<()> {
    let bundle =
        match &config.sync.bundle {
            Some(path) => Some(gramgrid_net::pki::GatewayBundle::load(path).with_context(
                || format!("the enrolment bundle {} is not usable", path.display()),
            )?),
            None => None,
        };
    let (cert, _) = gramgrid_gateway::technician::certificate(
        &config.technician,
        bundle.as_ref(),
        &config.gateway.data_dir,
        &config.gateway.id,
    )?;
    let info = gramgrid_net::pki::certificate_info(&cert)?;
    println!("certificate: {}", cert.display());
    println!(
        "SHA-256 fingerprint (for the enclosure label):\n  {}",
        info.fingerprint
    );
    println!("valid for:   {}", info.names.join(", "));
    println!("expires:     {}", info.not_after.format("%Y-%m-%d"));
    println!(
        "issued by:   {}",
        if info.self_signed {
            "itself (self-signed: this gateway's bundle has no technician certificate)"
        } else {
            "the central CA (at enrolment)"
        }
    );
    println!("served at:   https://{}/", config.technician.listen);
    Ok(())
}

/// `gramgrid gateway explain`: the decisions in words, each replayed.
fn explain(
    mut gateway: gramgrid_gateway::gateway::Gateway,
    account: &str,
    at: Option<chrono::DateTime<chrono::FixedOffset>>,
    limit: usize,
    json: bool,
) -> Result<()> {
    let at = at.map(|t| t.with_timezone(&chrono::Utc));
    let decisions = gateway.store().decisions(account, at, limit)?;
    if decisions.is_empty() {
        anyhow::bail!(
            "no relay decisions recorded for account '{account}'{}",
            at.map(|t| format!(" at or before {t}")).unwrap_or_default()
        );
    }
    let mut disagreeing = 0;
    for (id, record) in &decisions {
        if !record.replays() {
            disagreeing += 1;
            let detail = format!(
                "recorded {:?}, replay gives {:?}",
                record.outcome,
                record.replay()
            );
            gateway
                .store()
                .flag_replay_mismatch(id, &detail, chrono::Utc::now())?;
        }
        if json {
            println!("{}", serde_json::to_string(record)?);
        } else {
            println!("decision {id}");
            for line in record.explain() {
                println!("  {line}");
            }
        }
    }
    anyhow::ensure!(
        disagreeing == 0,
        "{disagreeing} decisions no longer replay to what was decided; flagged to the office"
    );
    Ok(())
}

/// Opens the gateway database for a command that only reads it; a missing database is a mistyped
/// data directory, never a new empty gateway.
fn open_existing(config: GatewayConfig) -> Result<gramgrid_gateway::gateway::Gateway> {
    let path = config.database_path();
    if !path.exists() {
        anyhow::bail!(
            "there is no gateway database at {}: is gateway.data_dir right? (the daemon creates it when it first starts)",
            path.display()
        );
    }
    Ok(gramgrid_gateway::gateway::Gateway::open(config)?)
}
