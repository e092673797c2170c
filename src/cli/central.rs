//! `gramgrid central`: the certificate authority, gateway enrolment, the central server, and the
//! office's guardrail, billing and technician commands (protected accounts, arrears, breaker and
//! policy holds, decisions, monthly bills, technician and staff accounts, consumer links), which
//! work on central's database directly, as `import-meters` does, each write audited as `cli:<user>`.
use super::shutdown_signal;
use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand};
use gramgrid_central::{
    accounts, bill, consumer, decisions, energy_audit, holds, technicians, Central,
};
use std::path::PathBuf;

/// The central config of a command that opens central's database.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Central config file (TOML), as for `central serve`.
    #[arg(long, short, env = "GRAMGRID_CENTRAL_CONFIG")]
    config: Option<PathBuf>,
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
    /// changes nothing; new keys for a known meter re-key it. A meter with `role = "dt"` is the
    /// gateway's distribution-transformer meter: on no account, read for the energy audit.
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
        #[arg(long, value_parser = parse_utc, conflicts_with = "stock")]
        installed_at: Option<chrono::DateTime<chrono::Utc>>,
        /// Enter the meters as spares in the gateway's stock, on no account: its technicians
        /// commission them on new connections or swap them for failed meters (docs/technician.md).
        #[arg(long)]
        stock: bool,
    },
    /// Protect an account: never disconnected automatically (life support, a health centre, the
    /// village water pump); or end its protection with --off. Its gateway is told at its next sync.
    Protect {
        #[command(flatten)]
        config: ConfigArg,
        /// The account.
        account: String,
        /// Why it is protected (e.g. "life support").
        #[arg(long, required_unless_present = "off", conflicts_with = "off")]
        reason: Option<String>,
        /// End the account's protection.
        #[arg(long)]
        off: bool,
    },
    /// Record arrears carried over from post-paid, once per --id (the same command again records
    /// nothing; another amount under the same id is refused). Each later recharge pays a share of
    /// them (the policy's arrears rules); the account's gateway is told at its next sync.
    Arrears {
        #[command(flatten)]
        config: ConfigArg,
        /// The account.
        account: String,
        /// Unique id of this entry (e.g. the post-paid bill number).
        #[arg(long)]
        id: String,
        /// The arrears in rupees, e.g. 1200.00.
        #[arg(long, value_parser = parse_inr, required_unless_present = "amount_paise", conflicts_with = "amount_paise")]
        amount_inr: Option<i64>,
        /// The arrears in paise, e.g. 120000.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        amount_paise: Option<i64>,
        /// Where the figure comes from, for the office.
        #[arg(long)]
        note: Option<String>,
    },
    /// List the gateways' disconnection breaker holds (newest first) and, without --gateway, the
    /// policy publishes central's breaker held.
    Holds {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this gateway's holds.
        #[arg(long)]
        gateway: Option<String>,
    },
    /// Release a gateway's breaker hold: its accounts may be disconnected in the gateway's next
    /// pass, once. The gateway is told at its next sync.
    Release {
        #[command(flatten)]
        config: ConfigArg,
        /// The hold's id (see `central holds`).
        hold: String,
        /// The gateway that holds.
        #[arg(long)]
        gateway: String,
        /// Why, for the audit and the gateway.
        #[arg(long)]
        reason: String,
    },
    /// Publish a policy central's breaker held (see `central holds`), as it would have been.
    ReleasePolicy {
        #[command(flatten)]
        config: ConfigArg,
        /// The policy hold's id.
        hold: String,
        /// Why, for the audit.
        #[arg(long)]
        reason: String,
    },
    /// Print an account's relay decisions in words: the one in force at --at, or the latest ones.
    Decisions {
        #[command(flatten)]
        config: ConfigArg,
        /// The account.
        account: String,
        /// The decision in force at this time (RFC 3339, e.g. 2026-11-30T11:00:00+05:30).
        #[arg(long, value_parser = parse_utc)]
        at: Option<DateTime<Utc>>,
        /// Without --at, at most this many, newest first.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=decisions::MAX_DECISIONS_LIMIT))]
        limit: i64,
    },
    /// Compare the villages' energy losses, then list each audited day with its loss and, on a
    /// flagged day, the meters the evidence points to.
    ///
    /// Every local day each gateway compares what its distribution transformer's meter delivered
    /// with what its consumers' meters recorded, interval by interval (docs/energy-audit.md).
    /// This prints one line per village (gateway) over the range, the largest share of loss
    /// first, then each day, newest first, with its loss in kWh and as a share of what the
    /// transformer delivered. On a flagged day (a loss beyond the technical allowance) it ranks
    /// the meters the evidence points to, with the evidence in words: tamper events, almost
    /// nothing recorded while connected, consumption that falls when the loss rises. That is
    /// evidence for an inspection, never an accusation.
    EnergyAudit {
        #[command(flatten)]
        config: ConfigArg,
        /// List only this gateway's days (the comparison still shows every village).
        #[arg(long)]
        gateway: Option<String>,
        /// The first local (IST) day, YYYY-MM-DD. Default: 29 days before --to.
        #[arg(long, value_parser = parse_day)]
        from: Option<NaiveDate>,
        /// The last local (IST) day, YYYY-MM-DD. Default: today.
        #[arg(long, value_parser = parse_day)]
        to: Option<NaiveDate>,
        /// List at most this many days, newest first.
        #[arg(long, default_value_t = energy_audit::DEFAULT_AUDITS_LIMIT, value_parser = clap::value_parser!(i64).range(1..=energy_audit::MAX_AUDITS_LIMIT))]
        limit: i64,
    },
    /// An account's printable monthly bill, in the layout of an Indian electricity bill: the
    /// consumer, the meter registers at the month's start and end, units by slab with rate and
    /// amount, time-of-day lines, fixed, minimum, demand charges and duty, then the prepaid
    /// account (opening balance, recharges and credits, charges, closing balance).
    ///
    /// The units are the readings read in the month rated again with the tariff in force (the
    /// slab lines are `gramgrid tariff quote`'s for the same units); the charges are those the
    /// ledger took, as the month's statement has them, and a note says where and why the two
    /// differ (fixed charges posted day by day, a month's minimum and demand charges posted at
    /// the start of the next). Prints a summary; --html and --pdf write the bill.
    Bill {
        #[command(flatten)]
        config: ConfigArg,
        /// The account.
        #[arg(long)]
        account: String,
        /// The Asia/Kolkata month to bill, YYYY-MM (e.g. 2026-11).
        #[arg(long, value_parser = super::tariff::parse_month)]
        month: gramgrid_core::civil::Month,
        /// The bill's language: en (English) or hi (Hindi).
        #[arg(long, default_value = "en", value_parser = ["en", "hi"])]
        lang: String,
        /// Write the bill as one self-contained HTML page (prints on A4 from any browser).
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Write the bill as a PDF, printed by headless chromium (the `chromium` package).
        #[arg(long, value_name = "FILE")]
        pdf: Option<PathBuf>,
    },
    /// Make a link to a household's balance page (docs/consumer.md) and print it; with --send,
    /// also queue it by SMS to the account's phone (the running server sends it). The link opens
    /// the page without a password until it expires.
    ConsumerLink {
        #[command(flatten)]
        config: ConfigArg,
        /// The account whose page the link opens.
        #[arg(long)]
        account: String,
        /// Queue the link by SMS to the account's phone (audited as cli:<user>).
        #[arg(long)]
        send: bool,
        /// How long the link opens the page, e.g. 36h or 30days (default: [consumer]
        /// link_lifetime, 7 days).
        #[arg(long, value_parser = gramgrid_central::consumer::parse_lifetime)]
        valid_for: Option<std::time::Duration>,
    },
    /// Technician accounts for the gateways' local web app: every gateway holds them all (sent at
    /// its next sync), so technicians log in with no backhaul.
    Technician {
        #[command(subcommand)]
        what: TechnicianCommand,
    },
    /// Office staff accounts for the console (https://CENTRAL/console/): make the first admin
    /// here; admins manage the rest in the console.
    Staff {
        #[command(subcommand)]
        what: StaffCommand,
    },
}

/// `gramgrid central staff ...`.
#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    /// Create or change a staff member. The password comes from --password-file (its first line)
    /// or, for a new member without one, from standard input; never from the command line. It is
    /// stored only as an Argon2id hash; a new password also lifts a lock-out.
    Set {
        #[command(flatten)]
        config: ConfigArg,
        /// Login name: 3 to 32 of lowercase letters a-z, digits, '.', '-' and '_' (e.g. meera.sahu).
        name: String,
        /// The person's name, as pages and the audit show it.
        #[arg(long)]
        full_name: String,
        /// viewer: reads everything; cashier: also payments and vouchers; engineer: also resolves
        /// flags; admin: everything, including staff accounts.
        #[arg(long, value_parser = ["viewer", "cashier", "engineer", "admin"])]
        role: String,
        /// A file whose first line is the password (at least 8 characters).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Refuse the member's logins.
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Allow the member's logins again (a new member is enabled).
        #[arg(long)]
        enable: bool,
    },
    /// List the staff accounts (never their passwords or hashes).
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// `gramgrid central technician ...`.
#[derive(Debug, Subcommand)]
pub enum TechnicianCommand {
    /// Create or change a technician. The password comes from --password-file (its first line)
    /// or, for a new technician without one, from standard input; never from the command line. It
    /// is stored only as an Argon2id hash. A change without a password keeps the current one.
    Set {
        #[command(flatten)]
        config: ConfigArg,
        /// Login name: 3 to 32 of lowercase letters a-z, digits, '.', '-' and '_' (e.g. asha.verma).
        name: String,
        /// The person's name, as pages and the audit show it.
        #[arg(long)]
        full_name: String,
        /// What the technician may do at a gateway.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(technicians::ROLES.iter().copied()))]
        role: String,
        /// A file whose first line is the password (at least 8 characters).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Refuse the technician's logins at every gateway.
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Allow the technician's logins again (a new technician is enabled).
        #[arg(long)]
        enable: bool,
    },
    /// List the technicians (never their passwords or hashes).
    List {
        #[command(flatten)]
        config: ConfigArg,
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
            stock,
        } => {
            let target = if stock {
                ImportTarget::Stock
            } else {
                ImportTarget::Accounts { installed_at }
            };
            import_meters(config, &manifest, gateway, target)
        }
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
        CentralCommand::Protect {
            config,
            account,
            reason,
            off: _,
        } => {
            let central = open_central(config)?;
            let what = format!("central protect {account}");
            let view = central
                .write_as(&who(), &what, move |tx| {
                    accounts::set_protection(tx, &account, reason.as_deref())
                })
                .context("the protection was not changed")?;
            let told = told(view.account.gateway.as_deref());
            match view.protected {
                Some(reason) => println!(
                    "account {} protected ({reason}): never disconnected automatically{told}",
                    view.account.id
                ),
                None => println!("account {} is no longer protected{told}", view.account.id),
            }
            Ok(())
        }
        CentralCommand::Arrears {
            config,
            account,
            id,
            amount_inr,
            amount_paise,
            note,
        } => {
            let request = accounts::ArrearsRequest {
                id,
                amount_paise: amount_inr.or(amount_paise).unwrap_or_default(),
                note,
            };
            let central = open_central(config)?;
            let now = central.now();
            let what = format!("central arrears {account} --id {}", request.id);
            let receipt = central
                .write_as(&who(), &what, move |tx| {
                    accounts::record_arrears(tx, &account, &request, now)
                })
                .context("no arrears were recorded")?;
            let amount = gramgrid_core::tariff::rupees(receipt.amount_paise);
            if receipt.created {
                println!(
                    "arrears of Rs {amount} recorded for {} (event {}); each later recharge pays a share of them",
                    receipt.account, receipt.event_id
                );
            } else {
                println!(
                    "arrears of Rs {amount} were already recorded for {} under this id (event {}): nothing new",
                    receipt.account, receipt.event_id
                );
            }
            Ok(())
        }
        CentralCommand::Holds { config, gateway } => {
            let central = open_central(config)?;
            let all = gateway.is_none();
            let (breaker, policy) = central.db().blocking(move |tx| {
                let breaker = holds::breaker_holds(tx, gateway.as_deref())?;
                let policy = if all {
                    holds::policy_holds(tx)?
                } else {
                    Vec::new()
                };
                Ok::<_, gramgrid_central::CentralError>((breaker, policy))
            })?;
            print_holds(&breaker, &policy, all);
            Ok(())
        }
        CentralCommand::Release {
            config,
            hold,
            gateway,
            reason,
        } => {
            let central = open_central(config)?;
            let (now, by) = (central.now(), who());
            let what = format!("central release {hold} --gateway {gateway}");
            let released = central
                .write_as(&by.clone(), &what, move |tx| {
                    holds::release_breaker_hold(tx, &gateway, &hold, &by, &reason, now)
                })
                .context("the hold was not released")?;
            println!(
                "hold {} of gateway {} released ({} account(s)); the gateway may disconnect them in its first pass after its next sync",
                released.id,
                released.gateway,
                released.accounts.len()
            );
            Ok(())
        }
        CentralCommand::ReleasePolicy {
            config,
            hold,
            reason,
        } => {
            let central = open_central(config)?;
            let (now, by) = (central.now(), who());
            let what = format!("central release-policy {hold}");
            let released = central
                .write_as(&by.clone(), &what, move |tx| {
                    holds::release_policy_hold(tx, &hold, &by, &reason, now)
                })
                .context("the policy was not published")?;
            println!(
                "policy version {} published (hold {} released); every gateway takes it at its next sync",
                released.version, released.id
            );
            Ok(())
        }
        CentralCommand::Decisions {
            config,
            account,
            at,
            limit,
        } => {
            let central = open_central(config)?;
            let name = account.clone();
            let found = central
                .db()
                .blocking(move |tx| decisions::of_account(tx, &account, at, limit))?;
            if found.is_empty() {
                let when = at.map(|at| format!(" at {at}")).unwrap_or_default();
                println!("no relay decision recorded for {name}{when}");
            }
            for (i, decision) in found.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("decision {} of gateway {}", decision.id, decision.gateway);
                for line in &decision.words {
                    println!("  {line}");
                }
            }
            Ok(())
        }
        CentralCommand::EnergyAudit {
            config,
            gateway,
            from,
            to,
            limit,
        } => {
            let today = gramgrid_core::civil::local_date(Utc::now());
            // A range that runs backwards or is too long is a wrong command line.
            let range = energy_audit::DayRange::new(from, to, today)
                .map_err(|e| super::UsageError(e.to_string()))?;
            let central = open_central(config)?;
            let (villages, days) = central.db().blocking(move |tx| {
                let villages = energy_audit::villages(tx, range)?;
                let days = energy_audit::audits(tx, gateway.as_deref(), range, limit)?;
                Ok::<_, gramgrid_central::CentralError>((villages, days))
            })?;
            print_energy_audit(range, &villages, &days);
            Ok(())
        }
        CentralCommand::Bill {
            config,
            account,
            month,
            lang,
            html,
            pdf,
        } => {
            let central = open_central(config)?;
            let bill = central
                .db()
                .blocking(move |tx| bill::month_bill(tx, &account, month))?;
            let lang = gramgrid_core::message::Language::parse(&lang).unwrap_or_default();
            write_bill(&bill, lang, html.as_deref(), pdf.as_deref())
        }
        CentralCommand::Technician { what } => technician(what),
        CentralCommand::Staff { what } => staff(what),
        CentralCommand::ConsumerLink {
            config,
            account,
            send,
            valid_for,
        } => consumer_link(config, &account, send, valid_for),
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

fn consumer_link(
    config: ConfigArg,
    account: &str,
    send: bool,
    valid_for: Option<std::time::Duration>,
) -> Result<()> {
    let central = open_central(config)?;
    let now = central.now();
    let link =
        consumer::make_link(&central, account, now, valid_for).context("no link was made")?;
    let link = if send {
        let what = format!("central consumer-link --account {account} --send");
        central
            .write_as(&who(), &what, move |tx| consumer::send_link(tx, link, now))
            .context("the link was not sent")?
    } else {
        let checked = link.clone();
        central
            .db()
            .blocking(move |tx| consumer::check_account(tx, &checked))
            .context("no link was made")?;
        link
    };
    println!("{}", link.url);
    let expires = gramgrid_core::civil::local(link.expires_at).format("%d-%m-%Y %H:%M IST");
    match &link.notification {
        Some(id) => eprintln!(
            "link for {account}, valid until {expires}; queued by SMS as message {id} (the running server sends it)"
        ),
        None => eprintln!("link for {account}, valid until {expires}; not sent (add --send to send it by SMS)"),
    }
    Ok(())
}

fn technician(what: TechnicianCommand) -> Result<()> {
    match what {
        TechnicianCommand::Set {
            config,
            name,
            full_name,
            role,
            password_file,
            disable,
            enable,
        } => {
            // A bad name is a wrong command line: said before a password is asked for.
            technicians::check_name(&name).map_err(|e| super::UsageError(e.to_string()))?;
            let central = open_central(config)?;
            let password = password_given(
                &central,
                password_file.as_deref(),
                &name,
                "technician",
                |tx, name| technicians::technician(tx, name).map(drop),
            )?;
            let change = technicians::TechnicianChange {
                full_name,
                role,
                password,
                active: (disable || enable).then_some(enable),
            };
            let now = central.now();
            let what = format!("central technician set {name}");
            let saved = central
                .write_as(&who(), &what, move |tx| {
                    technicians::set_technician(tx, &name, &change, now)
                })
                .context("the technician was not saved")?;
            let t = &saved.technician;
            println!(
                "technician {} {} ({}, {}, {}); {} gateway(s) are told at their next sync",
                t.name,
                if saved.created { "created" } else { "changed" },
                t.full_name,
                t.role,
                if t.active { "active" } else { "disabled" },
                saved.gateways
            );
            Ok(())
        }
        TechnicianCommand::List { config } => {
            let central = open_central(config)?;
            let all = central.db().blocking(technicians::list_technicians)?;
            if all.is_empty() {
                println!("no technicians");
            }
            for t in all {
                println!(
                    "{:<32} {:<10} {:<8} {} (changed {})",
                    t.name,
                    t.role,
                    if t.active { "active" } else { "disabled" },
                    t.full_name,
                    t.updated_at.format("%Y-%m-%d %H:%M UTC")
                );
            }
            Ok(())
        }
    }
}

/// The password of a set command: from `file`, else from standard input for a `who` that does not
/// exist yet (`find` says whether it does), else none (the current one is kept).
fn password_given(
    central: &Central,
    file: Option<&std::path::Path>,
    name: &str,
    who: &str,
    find: fn(&mut dyn gramgrid_central::db::Tx, &str) -> gramgrid_central::Result<()>,
) -> Result<Option<String>> {
    if let Some(path) = file {
        return Ok(Some(password_from_file(path)?));
    }
    let known = name.to_owned();
    let exists = central.db().blocking(move |tx| match find(tx, &known) {
        Ok(()) => Ok(true),
        Err(gramgrid_central::CentralError::NotFound(_)) => Ok(false),
        Err(other) => Err(other),
    })?;
    if exists {
        Ok(None)
    } else {
        Ok(Some(password_from_stdin(who, name)?))
    }
}

fn staff(what: StaffCommand) -> Result<()> {
    use gramgrid_central::staff::{self, StaffChange, StaffRole};
    match what {
        StaffCommand::Set {
            config,
            name,
            full_name,
            role,
            password_file,
            disable,
            enable,
        } => {
            technicians::check_login_name("staff", &name)
                .map_err(|e| super::UsageError(e.to_string()))?;
            let role = StaffRole::parse(&role)
                .ok_or_else(|| super::UsageError(format!("unknown role '{role}'")))?;
            let central = open_central(config)?;
            let password = password_given(
                &central,
                password_file.as_deref(),
                &name,
                "staff member",
                |tx, name| staff::staff_member(tx, name).map(drop),
            )?;
            let change = StaffChange {
                full_name,
                role,
                password,
                active: (disable || enable).then_some(enable),
            };
            let now = central.now();
            let what = format!("central staff set {name}");
            let (member, created) = central
                .write_as(&who(), &what, move |tx| {
                    staff::set_staff(tx, &name, &change, now)
                })
                .context("the staff member was not saved")?;
            println!(
                "staff member {} {} ({}, {}, {}); they log in at https://CENTRAL/console/",
                member.name,
                if created { "created" } else { "changed" },
                member.full_name,
                member.role.as_str(),
                if member.active { "active" } else { "disabled" },
            );
            Ok(())
        }
        StaffCommand::List { config } => {
            let central = open_central(config)?;
            let all = central.db().blocking(staff::list_staff)?;
            if all.is_empty() {
                println!("no staff accounts: make the first admin with `gramgrid central staff set NAME --full-name ... --role admin`");
            }
            for m in all {
                println!(
                    "{:<32} {:<9} {:<8} {} (changed {})",
                    m.name,
                    m.role.as_str(),
                    if m.active { "active" } else { "disabled" },
                    m.full_name,
                    m.updated_at.format("%Y-%m-%d %H:%M UTC")
                );
            }
            Ok(())
        }
    }
}

/// The first line of `path` (without its line end): a password given in a file.
fn password_from_file(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// The first line of standard input: the password of a new technician or staff member (`who`)
/// given no file.
fn password_from_stdin(who: &str, name: &str) -> Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("password for new {who} {name} (at least 8 characters; shown as typed, or use --password-file), then Enter:");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
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

fn parse_day(text: &str) -> std::result::Result<NaiveDate, String> {
    energy_audit::parse_day(text)
        .ok_or_else(|| format!("'{text}' is not a day: write it YYYY-MM-DD, e.g. 2026-11-29"))
}

/// Who the audit names for a write made on this command line: `cli:<login name>` ($USER, else
/// $LOGNAME).
fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// When the account's gateway hears of a change.
fn told(gateway: Option<&str>) -> String {
    gateway
        .map(|g| format!("; gateway {g} is told at its next sync"))
        .unwrap_or_default()
}

fn parse_inr(text: &str) -> std::result::Result<i64, String> {
    gramgrid_central::accounts::parse_rupees(text)
        .filter(|paise| *paise > 0)
        .ok_or_else(|| format!("'{text}' is not an amount in rupees such as 1200.00"))
}

fn load_config(path: Option<&std::path::Path>) -> Result<gramgrid_central::CentralConfig> {
    gramgrid_central::CentralConfig::load(path).context(
        "fix the central config (see docs/central.example.toml for every option), then try again",
    )
}

/// Central on the database the config names (the server may be running on it too).
fn open(config: gramgrid_central::CentralConfig) -> Result<Central> {
    Central::open(config).context("cannot open central's database (is database_url right?)")
}

/// Prints a bill's summary and writes its page and PDF where asked.
fn write_bill(
    bill: &bill::MonthBill,
    lang: gramgrid_core::message::Language,
    html: Option<&std::path::Path>,
    pdf: Option<&std::path::Path>,
) -> Result<()> {
    use gramgrid_web::format::{inr, kwh};
    println!(
        "bill of {} ({}) for {}: {} kWh, charges {}, closing balance {}",
        bill.consumer.account,
        bill.consumer.name,
        bill.month,
        kwh(bill.tariff.units_wh),
        inr(bill.account.charges_paise),
        inr(bill.account.closing_paise)
    );
    let page = bill::html::render(bill, lang).into_string();
    if let Some(path) = html {
        std::fs::write(path, &page)
            .with_context(|| format!("cannot write the bill to {}", path.display()))?;
        println!("  html: {}", path.display());
    }
    if let Some(path) = pdf {
        bill::pdf::print_to_pdf(&page, path).context("no PDF was made")?;
        println!("  pdf:  {}", path.display());
    }
    Ok(())
}

fn open_central(config: ConfigArg) -> Result<Central> {
    open(load_config(config.config.as_deref())?)
}

fn print_holds(breaker: &[holds::BreakerHold], policy: &[holds::PolicyHold], all: bool) {
    if breaker.is_empty() {
        println!("no breaker holds");
    }
    for hold in breaker {
        let state = match &hold.released {
            None => "HELD".to_owned(),
            Some(r) => format!(
                "released by {} at {} ({}): {}",
                r.by, r.at, r.place, r.reason
            ),
        };
        println!(
            "{} {} at {}: {} account(s), {state}",
            hold.gateway,
            hold.id,
            hold.at,
            hold.accounts.len()
        );
        println!("  why: {}", hold.reasons.join("; "));
        println!("  accounts: {}", hold.accounts.join(" "));
    }
    if !all {
        return;
    }
    if policy.is_empty() {
        println!("no held policy publishes");
    }
    for hold in policy {
        let state = match &hold.released {
            None => "HELD".to_owned(),
            Some(r) => format!("published: released by {} at {}: {}", r.by, r.at, r.reason),
        };
        println!(
            "policy hold {}: version {}, asked by {} at {}, {state}",
            hold.id, hold.version, hold.held_by, hold.held_at
        );
        for g in &hold.gateways {
            println!(
                "  gateway {}: {} newly at or below the threshold, limit {} of {} accounts",
                g.gateway, g.newly_cut, g.limit, g.accounts
            );
        }
    }
}

/// `loss_wh` of `delivered_wh` in kWh, with its share when there is one: "1.80 kWh (18.0%)".
fn loss_words(loss_wh: i64, permille: Option<i64>) -> String {
    let share = permille
        .map(|p| format!(" ({})", energy_audit::percent(p)))
        .unwrap_or_default();
    format!("{} kWh{share}", energy_audit::kwh(loss_wh))
}

fn print_energy_audit(
    range: energy_audit::DayRange,
    villages: &[energy_audit::VillageLoss],
    days: &[energy_audit::AuditDay],
) {
    use energy_audit::kwh;
    if villages.is_empty() {
        println!("no energy audits from {} to {}", range.from, range.to);
        return;
    }
    println!(
        "villages from {} to {}, the largest share of loss first:",
        range.from, range.to
    );
    for v in villages {
        println!(
            "  {:<20} loss {:<22} delivered {} kWh, recorded {} kWh, allowance {} kWh; {} day(s) audited, {} flagged",
            v.gateway,
            loss_words(v.loss_wh, v.loss_permille),
            kwh(v.transformer_wh),
            kwh(v.consumers_wh),
            kwh(v.allowance_wh),
            v.days,
            v.flagged_days
        );
    }
    println!();
    println!("days, newest first:");
    if days.is_empty() {
        println!("  none of this gateway's");
    }
    for day in days {
        println!(
            "  {} {} transformer {}: loss {} of {} kWh delivered (allowance {} kWh; {} intervals, {} meters){}",
            day.day,
            day.gateway,
            day.transformer,
            loss_words(day.loss_wh, day.loss_permille),
            kwh(day.transformer_wh),
            kwh(day.allowance_wh),
            day.intervals_compared,
            day.meters,
            if day.flagged { " FLAGGED" } else { "" }
        );
        if day.flagged && day.suspects.is_empty() {
            println!("    no meter stands out: check the feeder and unmetered connections");
        }
        for (rank, suspect) in day.suspects.iter().enumerate() {
            println!(
                "    {}. meter {} (account {}), score {}",
                rank + 1,
                suspect.meter,
                suspect.account,
                suspect.score
            );
            for why in &suspect.why {
                println!("       - {why}");
            }
        }
    }
}

/// Where `import-meters` puts a manifest's meters.
enum ImportTarget {
    /// Each on an account of its own, installed then (default: now).
    Accounts {
        installed_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Into the gateway's stock of spares.
    Stock,
}

fn import_meters(
    config: Option<PathBuf>,
    manifest_path: &std::path::Path,
    gateway: String,
    target: ImportTarget,
) -> Result<()> {
    let config = load_config(config.as_deref())?;
    let text = std::fs::read_to_string(manifest_path)
        .with_context(|| format!("cannot read the meter manifest {}", manifest_path.display()))?;
    let manifest = gramgrid_proto::manifest::MeterManifest::parse(&text).with_context(|| {
        format!(
            "the meter manifest {} is not valid",
            manifest_path.display()
        )
    })?;
    let central = open(config)?;
    let installed_at = match target {
        ImportTarget::Accounts { installed_at } => installed_at.unwrap_or_else(|| central.now()),
        ImportTarget::Stock => {
            let now = central.now();
            let report = central
                .db()
                .blocking(move |tx| {
                    gramgrid_central::stock::add_to_stock(tx, &manifest, &gateway, now)
                })
                .context("nothing was put in stock")?;
            println!(
                "{} spare meters added to the stock, {} re-keyed, {} unchanged; the gateway takes them up at its next sync",
                report.added, report.rekeyed, report.unchanged
            );
            return Ok(());
        }
    };
    let report = central
        .db()
        .blocking(move |tx| {
            gramgrid_central::import::import_manifest(tx, &manifest, &gateway, installed_at)
        })
        .context("nothing was imported")?;
    println!(
        "{} meters added (each on its own account ACC-<serial>), {} re-keyed; {} transformer meters added, {} re-keyed; the gateway takes them up at its next sync",
        report.added, report.rekeyed, report.transformers_added, report.transformers_rekeyed
    );
    Ok(())
}
