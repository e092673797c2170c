//! The demo's closing summary, read from central's and the gateway's SQLite files (not from the
//! demo's own counters, except the sync traffic it measured on the link), as text or JSON.
mod dlms;
mod energy_audit;
mod guardrails;

pub use dlms::DlmsSummary;
pub use energy_audit::{AuditedDay, EnergyAuditSummary};
pub use guardrails::GuardrailSummary;

use chrono::{DateTime, Utc};
use gramgrid_core::civil;
use gramgrid_core::policy::PolicyConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Everything the demo claims at the end.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// The village's seed.
    pub seed: u64,
    /// Meters (one household each) in the village.
    pub meters: usize,
    /// Simulated days.
    pub days: u32,
    /// Simulated period, local time (Asia/Kolkata).
    pub from: String,
    /// End of the simulated period, local time (Asia/Kolkata).
    pub to: String,
    /// The backhaul outage, if there was one.
    pub outage: Option<OutageSummary>,
    /// The feeder cut (every meter dark), and what the gateway made of it.
    pub feeder_cut: Option<FeederCutSummary>,
    /// Readings from the meters to the gateway, and on to central.
    pub radio: RadioSummary,
    /// The shops on the time-of-day tariff, and what its slots added or took off.
    pub time_of_day: TimeOfDaySummary,
    /// The rooftop-solar homes' exports and net units.
    pub net_metering: NetMeteringSummary,
    /// What the close of a month crossed did (zeros when the run stays in one month).
    pub month_close: MonthCloseSummary,
    /// Recharges taken at central, and whether each reached the gateway.
    pub recharges: RechargeSummary,
    /// Vouchers issued at central and redeemed at the gateway.
    pub vouchers: VoucherSummary,
    /// Supply cuts and reconnections.
    pub relay: RelaySummary,
    /// Consumer alerts and the notifications central sent.
    pub alerts: AlertSummary,
    /// What the sync sessions carried over the emulated cellular link.
    pub sync: SyncSummary,
    /// Whether the gateway and central agree on every balance at the end.
    pub balances: BalanceSummary,
    /// The breakers, the protected household and the arrears.
    pub guardrails: GuardrailSummary,
    /// The transformer's energy audit of each day, and the households on a hook.
    pub energy_audit: EnergyAuditSummary,
    /// The DLMS/COSEM meters among the households (`--meters-dlms`): read, cut and reconnected
    /// like the others.
    pub dlms: DlmsSummary,
    /// Business events central flagged for the office (offline overdrafts, double redemptions).
    pub flags: i64,
    /// Where the databases are (kept only with `--dir` or `--serve`).
    pub dir: String,
    /// Wall-clock time of the demo, in seconds (one decimal).
    pub wall_seconds: f64,
}

/// The backhaul outage, in local time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutageSummary {
    /// When the backhaul went down, local time (Asia/Kolkata).
    pub from: String,
    /// When it came back, local time.
    pub to: String,
    /// How long it was down, in hours.
    pub hours: f64,
}

/// The feeder cut: when the supply was off, and the supply outage the gateway recorded from the
/// meters' silence and power events.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FeederCutSummary {
    /// When the supply went off, local time.
    pub from: String,
    /// When it came back, local time.
    pub to: String,
    /// The outage on record at the gateway overlapping the cut: its id, if there is one.
    pub recorded_id: Option<String>,
    /// Its start, local time.
    pub recorded_from: Option<String>,
    /// Its end, local time.
    pub recorded_to: Option<String>,
    /// Meters it lists.
    pub meters_dark: usize,
    /// Whether central holds the same outage (by id) after the sync.
    pub at_central: bool,
    /// Disconnect commands the meters confirmed while the feeder was cut (a dark meter confirms
    /// nothing; must be 0).
    pub disconnects_confirmed_during: i64,
    /// Disconnect commands withdrawn because of the outage (sent before it was seen, not wanted
    /// while it lasted).
    pub disconnects_withdrawn: i64,
}

/// The time-of-day tariff's effect, read from the segment totals at both ends.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimeOfDaySummary {
    /// The tariff version with the slots.
    pub tariff: String,
    /// Households billed under it.
    pub households: i64,
    /// Peak surcharges less solar-hour rebates at the gateway, in paise.
    pub gateway_paise: i64,
    /// The same at central, rated by central from the same readings (must equal the gateway's).
    pub central_paise: i64,
}

/// Net metering: what the rooftop-solar homes exported and what they were billed on, read from the
/// segment totals at both ends.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NetMeteringSummary {
    /// Homes whose meters exported something.
    pub homes: i64,
    /// What they drew from the grid, in Wh.
    pub imported_wh: i64,
    /// What they exported, at the gateway, in Wh.
    pub exported_wh: i64,
    /// The same at central, rated by central from the same readings (must equal the gateway's).
    pub exported_wh_at_central: i64,
    /// The net units their energy charges are on (import less export per segment, never below
    /// zero), in Wh.
    pub net_wh: i64,
}

/// What the gateway did at the close of a month the run crossed: demand charges, and net
/// metering's bank.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MonthCloseSummary {
    /// Demand charges the gateway recorded.
    pub demand_charges: i64,
    /// Their total at the gateway, in paise.
    pub demand_paise: i64,
    /// The same at central (must equal the gateway's).
    pub demand_paise_at_central: i64,
    /// Accounts whose month was closed with something banked.
    pub homes_banking: i64,
    /// What they banked, in Wh.
    pub banked_wh: i64,
    /// Credits for banked units used or settled, at the gateway, in paise.
    pub export_credit_paise: i64,
    /// The same at central (must equal the gateway's).
    pub export_credit_paise_at_central: i64,
}

/// How the readings travelled: by radio to the gateway, by sync to central.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RadioSummary {
    /// Meters with at least one reading at the gateway.
    pub meters_heard: i64,
    /// Meters never heard: beyond the gateway's reach even at SF12 (a repeater or a second
    /// gateway is needed for them).
    pub meters_not_heard: i64,
    /// 15-minute intervals the meters closed up to an hour before the end (the delivery deadline).
    pub readings_due: i64,
    /// Readings of those intervals the gateway stored.
    pub readings_at_gateway: i64,
    /// Readings of those intervals central stored.
    pub readings_at_central: i64,
    /// Readings at central out of those due from the meters that were heard.
    pub delivered_percent_of_heard: f64,
    /// Readings at central out of those due from every meter, heard or not.
    pub delivered_percent_of_all: f64,
}

/// Recharges taken at central, and whether they reached the gateway.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RechargeSummary {
    /// Opening balances credited at central when the village went prepaid.
    pub opening: i64,
    /// Recharges taken at central after the start (counters, UPI).
    pub top_ups: i64,
    /// Top-ups taken while the backhaul was down.
    pub top_ups_during_outage: i64,
    /// Central recharges found in the gateway's ledger (each id at most once: it is the key).
    pub applied_at_gateway: i64,
    /// Central recharges the gateway's ledger lacks (zero when the village ran as it should).
    pub missing_at_gateway: i64,
}

/// Vouchers issued at central, redeemed at the gateway and credited back at central.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VoucherSummary {
    /// Vouchers central issued.
    pub issued: i64,
    /// Vouchers typed in at the gateway.
    pub redeemed_at_gateway: i64,
    /// Of those, vouchers redeemed while the backhaul was down.
    pub redeemed_during_outage: i64,
    /// Redeemed vouchers whose recharge central holds (after the sync brought them).
    pub credited_at_central: i64,
}

/// Supply cuts and reconnections, read from the gateway's relay commands.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RelaySummary {
    /// Disconnect commands the meters confirmed.
    pub disconnects: i64,
    /// Transmissions of a disconnect command outside an allowed window (must be zero).
    pub disconnects_sent_outside_window: i64,
    /// Connect commands confirmed after a confirmed disconnect of the same meter.
    pub reconnects: i64,
    /// Meters whose supply was still cut at the end (relay state `disconnected`).
    pub disconnected_at_end: i64,
}

/// Consumer alerts raised at the gateway, and notifications central delivered.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertSummary {
    /// Alerts the gateway raised, of every kind.
    pub raised_at_gateway: i64,
    /// Alerts per kind (`low_balance`, `disconnected`, `reconnected`, ...).
    pub by_kind: BTreeMap<String, i64>,
    /// Messages central handed to the SMS provider (the stand-in on loopback).
    pub delivered_by_central: i64,
    /// Urgent messages the gateway's modem sent while the backhaul was down.
    pub sent_by_gateway_modem: i64,
    /// Messages sent by both (flagged `message_sent_twice`; must be 0).
    pub sent_twice: i64,
    /// Messages the provider refused or that could not be sent.
    pub failed: i64,
}

/// What the demo measured on the emulated cellular link.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SyncSummary {
    /// Sync sessions that succeeded.
    pub sessions: u64,
    /// Attempts refused while the backhaul was down.
    pub failed_attempts: u64,
    /// Bytes on the wire in both directions, TLS included.
    pub wire_bytes: u64,
    /// Readings those sessions uploaded.
    pub readings_uploaded: u64,
    /// `wire_bytes` per reading uploaded (two decimals).
    pub wire_bytes_per_reading: f64,
    /// The first session after the outage: readings it carried.
    pub catch_up_readings: u64,
}

/// Every account's balance at the gateway against central's, at the end.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BalanceSummary {
    /// Accounts compared.
    pub accounts: usize,
    /// Accounts whose balance is the same at both, to the paisa.
    pub agree: usize,
    /// (account, gateway paise, central paise) for every account that differs.
    pub disagreements: Vec<(String, i64, i64)>,
    /// Sum of the gateway's balances, in paise.
    pub total_gateway_paise: i64,
}

/// The facts only the demo knows: its settings, and what it measured on the link.
#[derive(Debug, Clone)]
pub struct Run {
    /// The village's seed.
    pub seed: u64,
    /// Meters in the village.
    pub meters: usize,
    /// Simulated days.
    pub days: u32,
    /// Start of the simulated period: 00:00 Asia/Kolkata on the first day.
    pub start: DateTime<Utc>,
    /// End of the simulated period (`days` after `start`).
    pub end: DateTime<Utc>,
    /// The backhaul outage, if any.
    pub outage: Option<super::scenario::Outage>,
    /// The feeder cut, if any.
    pub feeder_cut: Option<super::scenario::Outage>,
    /// The gateway's policy: its disconnect windows judge the disconnect commands sent.
    pub policy: PolicyConfig,
    /// What the sync sessions carried.
    pub sync: SyncSummary,
    /// The balances compared at the end.
    pub balances: BalanceSummary,
    /// The guardrail scenes the office played.
    pub scenes: super::guardrails::Scenes,
    /// Meters whose households go around them from the second day.
    pub bypassers: Vec<String>,
    /// Where the databases are, as the summary reports it.
    pub dir: String,
    /// Wall-clock time of the demo, in seconds.
    pub wall_seconds: f64,
}

/// Why the summary could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path} for the summary: {source}")]
pub struct SummaryError {
    path: String,
    source: rusqlite::Error,
}

fn open(path: &Path) -> Result<Connection, SummaryError> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|source| {
        SummaryError {
            path: path.display().to_string(),
            source,
        }
    })
}

fn local(at: DateTime<Utc>) -> String {
    civil::local(at).format("%a %d %b %Y %H:%M IST").to_string()
}

fn count(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<i64> {
    conn.query_row(sql, params, |r| r.get(0))
}

/// Reads the summary from the gateway's and central's databases.
pub fn read(gateway_db: &Path, central_db: &Path, run: Run) -> Result<Summary, SummaryError> {
    let gateway = open(gateway_db)?;
    let central = open(central_db)?;
    let failed = |path: &Path| {
        let path = path.display().to_string();
        move |source| SummaryError { path, source }
    };
    let radio = radio(&gateway, &central, &run).map_err(failed(gateway_db))?;
    let recharges = recharges(&gateway, &central, &run).map_err(failed(central_db))?;
    let vouchers = vouchers(&gateway, &central, &run).map_err(failed(central_db))?;
    let relay = relay(&gateway, &run.policy).map_err(failed(gateway_db))?;
    let time_of_day = time_of_day(&gateway, &central).map_err(failed(gateway_db))?;
    let net_metering = net_metering(&gateway, &central).map_err(failed(gateway_db))?;
    let month_close = month_close(&gateway, &central).map_err(failed(gateway_db))?;
    let alerts = alerts(&gateway, &central).map_err(failed(gateway_db))?;
    let flags = count(&central, "SELECT COUNT(*) FROM flags", []).map_err(failed(central_db))?;
    let guardrails = guardrails::read(&gateway, &run).map_err(failed(gateway_db))?;
    let energy_audit = energy_audit::read(&gateway, &central, &run).map_err(failed(gateway_db))?;
    let dlms = dlms::read(&gateway, &central, &run).map_err(failed(gateway_db))?;
    let feeder_cut = run
        .feeder_cut
        .map(|cut| feeder_cut(&gateway, &central, cut))
        .transpose()
        .map_err(failed(gateway_db))?;
    Ok(Summary {
        seed: run.seed,
        meters: run.meters,
        days: run.days,
        from: local(run.start),
        to: local(run.end),
        outage: run.outage.map(|o| OutageSummary {
            from: local(o.from),
            to: local(o.to),
            hours: (o.to - o.from).num_minutes() as f64 / 60.0,
        }),
        feeder_cut,
        radio,
        time_of_day,
        net_metering,
        month_close,
        recharges,
        vouchers,
        relay,
        alerts,
        sync: run.sync,
        balances: run.balances,
        guardrails,
        energy_audit,
        dlms,
        flags,
        dir: run.dir,
        wall_seconds: run.wall_seconds,
    })
}

/// Households billed under the time-of-day tariff, and the net of its slots at both ends.
fn time_of_day(gateway: &Connection, central: &Connection) -> rusqlite::Result<TimeOfDaySummary> {
    let tariff = super::scenario::TOD_TARIFF;
    let (households, gateway_paise) = gateway.query_row(
        "SELECT COUNT(DISTINCT s.meter), COALESCE(SUM(s.tod_paise), 0) FROM segment_energy s
         JOIN tariff_versions v ON v.id = s.version WHERE v.name = ?1",
        [tariff],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(TimeOfDaySummary {
        tariff: tariff.into(),
        households,
        gateway_paise,
        central_paise: count(
            central,
            "SELECT COALESCE(SUM(tod_paise), 0) FROM segment_energy WHERE version = ?1",
            [tariff],
        )?,
    })
}

/// The rooftop-solar homes' segments at the gateway, and their export at central.
fn net_metering(
    gateway: &Connection,
    central: &Connection,
) -> rusqlite::Result<NetMeteringSummary> {
    let (homes, imported_wh, exported_wh, net_wh) = gateway.query_row(
        "SELECT COUNT(DISTINCT meter), COALESCE(SUM(energy_wh), 0), COALESCE(SUM(export_wh), 0),
                COALESCE(SUM(MAX(energy_wh - export_wh, 0)), 0)
         FROM segment_energy WHERE meter IN (SELECT meter FROM segment_energy WHERE export_wh > 0)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    Ok(NetMeteringSummary {
        homes,
        imported_wh,
        exported_wh,
        exported_wh_at_central: count(
            central,
            "SELECT COALESCE(SUM(export_wh), 0) FROM segment_energy",
            [],
        )?,
        net_wh,
    })
}

/// The demand charges and export banks of the months the run closed, at both ends.
fn month_close(gateway: &Connection, central: &Connection) -> rusqlite::Result<MonthCloseSummary> {
    let sum_of = |conn: &Connection, kind: &str| {
        count(
            conn,
            "SELECT COALESCE(SUM(amount_paise), 0) FROM ledger_events WHERE kind = ?1",
            [kind],
        )
    };
    let (homes_banking, banked_wh) = gateway.query_row(
        "SELECT COUNT(*), COALESCE(SUM(banked_out_wh), 0) FROM export_bank WHERE banked_out_wh > 0",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(MonthCloseSummary {
        demand_charges: count(
            gateway,
            "SELECT COUNT(*) FROM ledger_events WHERE kind = 'demand_charge'",
            [],
        )?,
        demand_paise: sum_of(gateway, "demand_charge")?,
        demand_paise_at_central: sum_of(central, "demand_charge")?,
        homes_banking,
        banked_wh,
        export_credit_paise: sum_of(gateway, "export_credit")?,
        export_credit_paise_at_central: sum_of(central, "export_credit")?,
    })
}

/// The outage the gateway recorded over the feeder cut, and what became of disconnects during it.
fn feeder_cut(
    gateway: &Connection,
    central: &Connection,
    cut: super::scenario::Outage,
) -> rusqlite::Result<FeederCutSummary> {
    let (from, to) = (cut.from.timestamp(), cut.to.timestamp());
    let recorded: Option<(String, i64, Option<i64>, String)> = gateway
        .query_row(
            "SELECT id, started_at, ended_at, meters FROM supply_outages
             WHERE started_at < ?2 AND (ended_at IS NULL OR ended_at > ?1) ORDER BY started_at LIMIT 1",
            [from, to],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let at = |seconds: i64| local(DateTime::from_timestamp(seconds, 0).unwrap_or_default());
    let at_central = match &recorded {
        Some((id, ..)) => {
            count(
                central,
                "SELECT COUNT(*) FROM supply_outages WHERE id = ?1",
                [id],
            )? > 0
        }
        None => false,
    };
    Ok(FeederCutSummary {
        from: local(cut.from),
        to: local(cut.to),
        recorded_from: recorded.as_ref().map(|r| at(r.1)),
        recorded_to: recorded.as_ref().and_then(|r| r.2).map(at),
        meters_dark: recorded
            .as_ref()
            .and_then(|r| serde_json::from_str::<Vec<String>>(&r.3).ok())
            .map_or(0, |m| m.len()),
        recorded_id: recorded.map(|r| r.0),
        at_central,
        disconnects_confirmed_during: count(
            gateway,
            "SELECT COUNT(*) FROM relay_commands WHERE action = 'disconnect' AND state = 'acknowledged'
             AND closed_at >= ?1 AND closed_at < ?2",
            [from, to],
        )?,
        disconnects_withdrawn: count(
            gateway,
            "SELECT COUNT(*) FROM relay_command_events e JOIN relay_commands c ON c.id = e.command
             WHERE c.action = 'disconnect' AND e.state = 'withdrawn' AND e.detail LIKE '%supply outage%'",
            [],
        )?,
    })
}

/// Where the readings due lie: `(start, due until, dark from, dark to)` as Unix seconds (the
/// parameters of [`DUE_READINGS`]), and how many intervals each meter owes in it.
fn due_window(run: &Run) -> ((i64, i64, i64, i64), i64) {
    let due_until = run.end - chrono::Duration::hours(1);
    let margin = chrono::Duration::minutes(15);
    let (dark_from, dark_to) = run.feeder_cut.map_or((0, 0), |cut| {
        (
            (cut.from - margin).timestamp(),
            (cut.to + margin).min(due_until).timestamp(),
        )
    });
    let window = (
        run.start.timestamp(),
        due_until.timestamp(),
        dark_from,
        dark_to,
    );
    let dark = (dark_to - dark_from).max(0) / 900;
    (window, (due_until - run.start).num_minutes() / 15 - dark)
}

/// Counts the readings due (in [`due_window`], whose values are its four parameters).
const DUE_READINGS: &str =
    "SELECT COUNT(*) FROM readings WHERE at > ?1 AND at <= ?2 AND NOT (at > ?3 AND at <= ?4)";

/// Readings are due for intervals ending up to an hour before the end (the delivery deadline),
/// except around the feeder cut: a meter without supply captures nothing, and meters' clocks
/// differ by minutes, so neither what is due nor what arrived is counted from a quarter-hour before
/// the cut to a quarter-hour after it.
fn radio(gateway: &Connection, central: &Connection, run: &Run) -> rusqlite::Result<RadioSummary> {
    let (window, intervals) = due_window(run);
    let meters = i64::try_from(run.meters).unwrap_or(i64::MAX);
    // A meter's installation register is stored as its first reading: heard means read since.
    let heard = count(
        gateway,
        "SELECT COUNT(DISTINCT meter) FROM readings WHERE at > ?1 AND meter IN (SELECT id FROM meters WHERE role = 'consumer')",
        [run.start.timestamp()],
    )?;
    let due = DUE_READINGS;
    let at_gateway = count(
        gateway,
        &format!("{due} AND meter IN (SELECT id FROM meters WHERE role = 'consumer')"),
        window,
    )?;
    let at_central = count(central, due, window)?;
    let percent = |of: i64| {
        if of == 0 {
            0.0
        } else {
            (10_000.0 * at_central as f64 / of as f64).round() / 100.0
        }
    };
    Ok(RadioSummary {
        meters_heard: heard,
        meters_not_heard: meters - heard,
        readings_due: meters * intervals,
        readings_at_gateway: at_gateway,
        readings_at_central: at_central,
        delivered_percent_of_heard: percent(heard * intervals),
        delivered_percent_of_all: percent(meters * intervals),
    })
}

const CENTRAL_RECHARGE: &str = "kind = 'recharge' AND id LIKE 'central:recharge:%'";

fn recharges(
    gateway: &Connection,
    central: &Connection,
    run: &Run,
) -> rusqlite::Result<RechargeSummary> {
    let start = run.start.timestamp();
    let (outage_from, outage_to) = run
        .outage
        .map_or((0, 0), |o| (o.from.timestamp(), o.to.timestamp()));
    let opening = count(
        central,
        &format!("SELECT COUNT(*) FROM ledger_events WHERE {CENTRAL_RECHARGE} AND at <= ?1"),
        [start],
    )?;
    let top_ups = count(
        central,
        &format!("SELECT COUNT(*) FROM ledger_events WHERE {CENTRAL_RECHARGE} AND at > ?1"),
        [start],
    )?;
    let during_outage = count(
        central,
        &format!(
            "SELECT COUNT(*) FROM ledger_events WHERE {CENTRAL_RECHARGE} AND at >= ?1 AND at < ?2"
        ),
        [outage_from, outage_to],
    )?;
    let mut ids = central.prepare(&format!(
        "SELECT id FROM ledger_events WHERE {CENTRAL_RECHARGE}"
    ))?;
    let mut applied = 0;
    let mut missing = 0;
    for id in ids.query_map([], |r| r.get::<_, String>(0))? {
        let found = gateway
            .query_row(
                "SELECT 1 FROM ledger_events WHERE id = ?1 AND kind = 'recharge'",
                [id?],
                |_| Ok(()),
            )
            .optional()?;
        match found {
            Some(()) => applied += 1,
            None => missing += 1,
        }
    }
    Ok(RechargeSummary {
        opening,
        top_ups,
        top_ups_during_outage: during_outage,
        applied_at_gateway: applied,
        missing_at_gateway: missing,
    })
}

fn vouchers(
    gateway: &Connection,
    central: &Connection,
    run: &Run,
) -> rusqlite::Result<VoucherSummary> {
    let (outage_from, outage_to) = run
        .outage
        .map_or((0, 0), |o| (o.from.timestamp(), o.to.timestamp()));
    Ok(VoucherSummary {
        issued: count(central, "SELECT COUNT(*) FROM vouchers", [])?,
        redeemed_at_gateway: count(
            gateway,
            "SELECT COUNT(*) FROM vouchers_spent WHERE where_spent = 'here'",
            [],
        )?,
        redeemed_during_outage: count(
            gateway,
            "SELECT COUNT(*) FROM vouchers_spent WHERE where_spent = 'here' AND at >= ?1 AND at < ?2",
            [outage_from, outage_to],
        )?,
        credited_at_central: count(
            central,
            "SELECT COUNT(*) FROM ledger_events e JOIN vouchers v ON v.redemption_id = e.id WHERE e.kind = 'recharge'",
            [],
        )?,
    })
}

fn relay(gateway: &Connection, policy: &PolicyConfig) -> rusqlite::Result<RelaySummary> {
    let disconnects = count(
        gateway,
        "SELECT COUNT(*) FROM relay_commands WHERE action = 'disconnect' AND state = 'acknowledged'",
        [],
    )?;
    let mut sent = gateway.prepare(
        "SELECT e.at FROM relay_command_events e JOIN relay_commands c ON c.id = e.command
         WHERE c.action = 'disconnect' AND e.state = 'sent'",
    )?;
    let mut outside = 0;
    for at in sent.query_map([], |r| r.get::<_, i64>(0))? {
        let at = DateTime::from_timestamp(at?, 0).unwrap_or_default();
        if gramgrid_core::policy::disconnect_allowed(policy, at).is_err() {
            outside += 1;
        }
    }
    let reconnects = count(
        gateway,
        "SELECT COUNT(*) FROM relay_commands c WHERE c.action = 'connect' AND c.state = 'acknowledged'
         AND EXISTS (SELECT 1 FROM relay_commands d WHERE d.meter = c.meter AND d.action = 'disconnect'
                     AND d.state = 'acknowledged' AND d.closed_at <= c.created_at)",
        [],
    )?;
    Ok(RelaySummary {
        disconnects,
        disconnects_sent_outside_window: outside,
        reconnects,
        disconnected_at_end: count(
            gateway,
            "SELECT COUNT(*) FROM meters WHERE relay_state = 'disconnected'",
            [],
        )?,
    })
}

fn alerts(gateway: &Connection, central: &Connection) -> rusqlite::Result<AlertSummary> {
    let mut by_kind = BTreeMap::new();
    let mut kinds = gateway.prepare("SELECT kind, COUNT(*) FROM alerts GROUP BY kind")?;
    for row in kinds.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (kind, n) = row?;
        by_kind.insert(kind, n);
    }
    Ok(AlertSummary {
        raised_at_gateway: by_kind.values().sum(),
        by_kind,
        delivered_by_central: count(
            central,
            "SELECT COUNT(*) FROM notifications WHERE sent_at IS NOT NULL AND channel = 'sms_provider'",
            [],
        )?,
        sent_by_gateway_modem: count(
            central,
            "SELECT COUNT(*) FROM notifications WHERE channel = 'gateway_modem'",
            [],
        )?,
        sent_twice: count(
            central,
            "SELECT COUNT(*) FROM flags WHERE kind = 'message_sent_twice'",
            [],
        )?,
        failed: count(
            central,
            "SELECT COUNT(*) FROM notifications WHERE state = 'failed'",
            [],
        )?,
    })
}

impl Summary {
    /// The claims that do not hold (empty when the village ran as it should).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.balances.disagreements.is_empty() {
            problems.push(format!(
                "{} accounts have different balances at the gateway and at central",
                self.balances.disagreements.len()
            ));
        }
        if self.recharges.missing_at_gateway > 0 {
            problems.push(format!(
                "{} recharges taken at central never reached the gateway",
                self.recharges.missing_at_gateway
            ));
        }
        if self.alerts.sent_twice > 0 {
            problems.push(format!(
                "{} messages were sent both by central and by the gateway's modem",
                self.alerts.sent_twice
            ));
        }
        if self.vouchers.credited_at_central != self.vouchers.redeemed_at_gateway {
            problems.push(format!(
                "{} vouchers were redeemed at the gateway but central credited {}",
                self.vouchers.redeemed_at_gateway, self.vouchers.credited_at_central
            ));
        }
        if let Some(bad) = &self.guardrails.bad_publish {
            if bad.disconnects_under_it > 0 {
                problems.push(format!(
                    "{} disconnects were queued under the bad policy",
                    bad.disconnects_under_it
                ));
            }
        }
        if let Some(p) = self
            .guardrails
            .protected
            .as_ref()
            .filter(|p| p.disconnects > 0)
        {
            problems.push(format!(
                "the protected household {} was sent {} disconnects",
                p.account, p.disconnects
            ));
        }
        if self.time_of_day.gateway_paise != self.time_of_day.central_paise {
            problems.push(format!(
                "the time-of-day adjustments differ: {} paise at the gateway, {} at central",
                self.time_of_day.gateway_paise, self.time_of_day.central_paise
            ));
        }
        let c = &self.month_close;
        if (c.demand_paise, c.export_credit_paise)
            != (c.demand_paise_at_central, c.export_credit_paise_at_central)
        {
            problems.push(format!(
                "the month close differs: demand charges {} / {} paise, export credits {} / {} paise at the gateway / central",
                c.demand_paise, c.demand_paise_at_central, c.export_credit_paise, c.export_credit_paise_at_central
            ));
        }
        let n = &self.net_metering;
        if n.exported_wh != n.exported_wh_at_central {
            problems.push(format!(
                "the rooftop-solar exports differ: {} Wh at the gateway, {} Wh at central",
                n.exported_wh, n.exported_wh_at_central
            ));
        }
        if let Some(f) = &self.feeder_cut {
            if f.recorded_id.is_none() || !f.at_central {
                problems.push("the feeder cut is not on record as a supply outage at the gateway and at central".into());
            }
            if f.disconnects_confirmed_during > 0 {
                problems.push(format!(
                    "{} disconnects were confirmed while the feeder was cut",
                    f.disconnects_confirmed_during
                ));
            }
        }
        if self.relay.disconnects_sent_outside_window > 0 {
            problems.push(format!(
                "{} disconnect commands were sent outside an allowed window",
                self.relay.disconnects_sent_outside_window
            ));
        }
        problems
    }
}

/// The guardrail section's lines.
fn guardrail_lines(g: &GuardrailSummary) -> Vec<String> {
    use gramgrid_core::tariff::rupees;
    let mut lines = Vec::new();
    if let Some(bad) = &g.bad_publish {
        let central = match bad.central_held {
            Some((newly, limit)) => format!(
                "central held it ({newly} accounts newly at or below the threshold, limit {limit}), an engineer released it anyway; "
            ),
            None => String::new(),
        };
        lines.push(format!(
            "  bad policy         threshold {} INR published {}: {central}the gateway's breaker held {} disconnections ({}); {} households cut under it; corrected {}",
            rupees(bad.threshold_paise),
            bad.at,
            bad.gateway_held_accounts,
            bad.gateway_reasons.join("; "),
            bad.disconnects_under_it,
            bad.corrected_at.as_deref().unwrap_or("never")
        ));
    }
    if let Some(p) = &g.protected {
        lines.push(format!(
            "  protected          {} (health centre): {}; {} disconnects",
            p.account,
            if p.reached_threshold {
                "reached the threshold and was left on, the office told"
            } else {
                "never reached the threshold"
            },
            p.disconnects
        ));
    }
    let a = &g.arrears;
    if a.households > 0 {
        lines.push(format!(
            "  arrears            {} households brought {} INR from post-paid; {} INR recovered from their recharges, {} INR outstanding",
            a.households,
            rupees(a.opening_paise),
            rupees(a.recovered_paise),
            rupees(a.outstanding_paise)
        ));
    }
    lines
}

/// The summary as the terminal shows it.
pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "gramgrid demo: {} meters, {} simulated days ({} to {}), seed {}",
        s.meters, s.days, s.from, s.to, s.seed
    ));
    match &s.outage {
        Some(o) => line(format!(
            "  backhaul outage    {:.1} h, {} to {}",
            o.hours, o.from, o.to
        )),
        None => line("  backhaul outage    none".into()),
    }
    if let Some(f) = &s.feeder_cut {
        let recorded = match (&f.recorded_from, &f.recorded_to) {
            (Some(from), Some(to)) => format!(
                "the gateway recorded a supply outage {from} to {to} over {} meters ({}); ",
                f.meters_dark,
                if f.at_central {
                    "central has it"
                } else {
                    "central LACKS it"
                }
            ),
            (Some(from), None) => {
                format!("the gateway recorded a supply outage from {from}, still open; ")
            }
            _ => "the gateway recorded NO supply outage; ".into(),
        };
        line(format!(
            "  feeder cut         {} to {}: {recorded}{} disconnects confirmed during it, {} withdrawn for it",
            f.from, f.to, f.disconnects_confirmed_during, f.disconnects_withdrawn
        ));
    }
    let t = &s.time_of_day;
    line(format!(
        "  time of day        {} shops on {} (evening peak +20 %, solar hours -20 %): net {} INR at the gateway, {} INR at central",
        t.households,
        t.tariff,
        gramgrid_core::tariff::rupees(t.gateway_paise),
        gramgrid_core::tariff::rupees(t.central_paise)
    ));
    let n = &s.net_metering;
    let kwh = |wh: i64| format!("{:.1}", wh as f64 / 1000.0);
    line(format!(
        "  rooftop solar      {} homes exported {} kWh ({} kWh at central) and drew {} kWh: billed on {} kWh net",
        n.homes,
        kwh(n.exported_wh),
        kwh(n.exported_wh_at_central),
        kwh(n.imported_wh),
        kwh(n.net_wh)
    ));
    let c = &s.month_close;
    if c.demand_charges > 0 || c.homes_banking > 0 {
        line(format!(
            "  month close        {} demand charges on the shops' maximum demand ({} INR, {} INR at central); {} solar homes banked {} kWh of surplus export ({} INR credited)",
            c.demand_charges,
            gramgrid_core::tariff::rupees(c.demand_paise),
            gramgrid_core::tariff::rupees(c.demand_paise_at_central),
            c.homes_banking,
            kwh(c.banked_wh),
            gramgrid_core::tariff::rupees(c.export_credit_paise)
        ));
    }
    let r = &s.radio;
    line(format!(
        "  readings           {} of {} due reached central ({:.2} %; {:.2} % of the {} meters heard)",
        r.readings_at_central,
        r.readings_due,
        r.delivered_percent_of_all,
        r.delivered_percent_of_heard,
        r.meters_heard
    ));
    if r.meters_not_heard > 0 {
        line(format!(
            "                     {} meter{} out of radio reach even at SF12 (a repeater or a second gateway is needed)",
            r.meters_not_heard,
            if r.meters_not_heard == 1 { "" } else { "s" }
        ));
    }
    if let Some(text) = dlms::line(&s.dlms) {
        line(text);
    }
    let c = &s.recharges;
    line(format!(
        "  recharges          {} opening balances, {} top-ups at central ({} during the outage); {} of {} applied at the gateway, {} missing",
        c.opening,
        c.top_ups,
        c.top_ups_during_outage,
        c.applied_at_gateway,
        c.opening + c.top_ups,
        c.missing_at_gateway
    ));
    let v = &s.vouchers;
    line(format!(
        "  vouchers           {} issued, {} redeemed at the gateway ({} during the outage), {} credited at central",
        v.issued, v.redeemed_at_gateway, v.redeemed_during_outage, v.credited_at_central
    ));
    let d = &s.relay;
    line(format!(
        "  supply             {} disconnects ({} sent outside a window), {} reconnects, {} still off at the end",
        d.disconnects, d.disconnects_sent_outside_window, d.reconnects, d.disconnected_at_end
    ));
    let kinds: Vec<String> = s
        .alerts
        .by_kind
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    line(format!(
        "  alerts             {} raised at the gateway ({})",
        s.alerts.raised_at_gateway,
        kinds.join(", "),
    ));
    line(format!(
        "  messages           {} to the SMS provider (stand-in), {} by the gateway's modem during the outage, {} sent twice, {} failed",
        s.alerts.delivered_by_central,
        s.alerts.sent_by_gateway_modem,
        s.alerts.sent_twice,
        s.alerts.failed
    ));
    let y = &s.sync;
    line(format!(
        "  sync               {} sessions, {} refused during the outage; catch-up carried {} readings; {:.2} wire bytes per reading (TLS included)",
        y.sessions, y.failed_attempts, y.catch_up_readings, y.wire_bytes_per_reading
    ));
    let b = &s.balances;
    if b.disagreements.is_empty() {
        line(format!(
            "  balances           all {} accounts agree between gateway and central to the paisa",
            b.accounts
        ));
    } else {
        line(format!(
            "  balances           {} of {} accounts DIFFER between gateway and central: {:?}",
            b.disagreements.len(),
            b.accounts,
            b.disagreements
        ));
    }
    for text in guardrail_lines(&s.guardrails) {
        line(text);
    }
    for text in energy_audit::lines(&s.energy_audit) {
        line(text);
    }
    if s.flags > 0 {
        line(format!(
            "  flags              {} business events flagged for the office (GET /api/v1/flags)",
            s.flags
        ));
    }
    line(format!(
        "  wall time          {:.1} s; files in {}",
        s.wall_seconds, s.dir
    ));
    out
}
