//! Accounts, meters, gateway assignment, recharges, balances and published tariffs at central.
//!
//! Each function is one transaction's worth of work over [`Tx`]; the caller picks the transaction.
//! A change a gateway must know is appended to that gateway's downlink log in the same transaction.
use super::db::{Tx, Value};
use super::downlink::{append_downlink, append_downlink_to_all, ensure_gateway};
use super::{CentralError, Result};
pub use crate::check_id;
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_core::ledger::{EventKind, LedgerEvent};
use gramgrid_core::tariff::{Category, TariffBook, TariffVersion};
use gramgrid_proto::wire::{DownlinkEvent, MeterKeys};
use serde::{Deserialize, Serialize};

/// The largest single recharge accepted (₹1,00,000): anything above is a typo, not a payment.
pub const MAX_RECHARGE_PAISE: i64 = 10_000_000;

/// A consumer account as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub consumer_name: String,
    pub category: Category,
    #[serde(default)]
    pub phone: Option<String>,
    /// The gateway that serves this account (and its meters); none until assigned.
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default = "Utc::now")]
    pub created_at: DateTime<Utc>,
}

/// A meter as the API shows it (keys are write-only: never returned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    pub serial: String,
    pub account: String,
    pub installed_at: DateTime<Utc>,
    #[serde(default)]
    pub initial_register_wh: Option<i64>,
    #[serde(default, skip_serializing)]
    pub keys: Option<MeterKeys>,
    #[serde(default = "unknown_relay")]
    pub relay_state: String,
}

fn unknown_relay() -> String {
    "unknown".into()
}

fn account_from_row(row: &super::db::Row) -> Result<Account> {
    let category = row.text(2)?;
    Ok(Account {
        id: row.text(0)?,
        consumer_name: row.text(1)?,
        category: Category::parse(&category)
            .ok_or_else(|| CentralError::Corrupt(format!("category '{category}'")))?,
        phone: row.opt_text(3)?,
        gateway: row.opt_text(4)?,
        created_at: from_ts(row.int(5)?),
    })
}

const ACCOUNT_COLUMNS: &str = "id, consumer_name, category, phone, gateway, created_at";

/// One account, or `NotFound`.
pub fn account(tx: &mut dyn Tx, id: &str) -> Result<Account> {
    let row = tx
        .query_opt(
            &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"),
            &[id.into()],
        )?
        .ok_or_else(|| CentralError::NotFound(format!("no account '{id}'")))?;
    account_from_row(&row)
}

/// Every account, by id.
pub fn list_accounts(tx: &mut dyn Tx) -> Result<Vec<Account>> {
    tx.query(
        &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"),
        &[],
    )?
    .iter()
    .map(account_from_row)
    .collect()
}

/// Creates an account (or, with `update`, replaces an existing one's details). When it is (or
/// becomes) assigned to a gateway, the gateway is sent the account, its meters and its central
/// money events.
pub fn put_account(tx: &mut dyn Tx, account: &Account, update: bool) -> Result<()> {
    check_id("account id", &account.id)?;
    if account.consumer_name.trim().is_empty() || account.consumer_name.len() > 200 {
        return Err(CentralError::Invalid(
            "consumer_name must be 1 to 200 characters".into(),
        ));
    }
    let existing = tx.query_opt(
        "SELECT gateway FROM accounts WHERE id = $1",
        &[account.id.as_str().into()],
    )?;
    match (&existing, update) {
        (Some(_), false) => {
            return Err(CentralError::Conflict(format!(
                "account '{}' already exists; update it with PUT /api/v1/accounts/{}",
                account.id, account.id
            )))
        }
        (None, true) => {
            return Err(CentralError::NotFound(format!(
                "no account '{}'",
                account.id
            )))
        }
        _ => {}
    }
    if let Some(gateway) = &account.gateway {
        ensure_gateway(tx, gateway)?;
    }
    let params = [
        account.id.as_str().into(),
        account.consumer_name.as_str().into(),
        account.category.as_str().into(),
        account.phone.clone().into(),
        account.gateway.clone().into(),
        ts(account.created_at).into(),
    ];
    if update {
        tx.execute(
            "UPDATE accounts SET consumer_name = $2, category = $3, phone = $4, gateway = $5 WHERE id = $1",
            &params[..5],
        )?;
    } else {
        tx.execute(
            &format!("INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
            &params,
        )?;
    }
    let previous_gateway = existing.and_then(|row| row.opt_text(0).ok().flatten());
    if let Some(gateway) = &account.gateway {
        let stored = self::account(tx, &account.id)?;
        append_downlink(tx, gateway, &account_event(&stored))?;
        if previous_gateway.as_deref() != Some(gateway.as_str()) {
            // A newly assigned gateway needs the account's meters and money history to derive
            // the same balance.
            for meter in meters_of(tx, &account.id)? {
                append_downlink(tx, gateway, &meter_event(&meter))?;
            }
            for event in central_events_of(tx, &account.id)? {
                append_downlink(tx, gateway, &DownlinkEvent::Ledger((&event).into()))?;
            }
        }
    }
    Ok(())
}

fn account_event(account: &Account) -> DownlinkEvent {
    DownlinkEvent::Account {
        id: account.id.clone(),
        consumer_name: account.consumer_name.clone(),
        category: account.category.into(),
        phone: account.phone.clone(),
        created_at: account.created_at,
    }
}

fn meter_event(meter: &Meter) -> DownlinkEvent {
    DownlinkEvent::Meter {
        serial: meter.serial.clone(),
        account: meter.account.clone(),
        installed_at: meter.installed_at,
        initial_register_wh: meter.initial_register_wh,
        keys: meter.keys.clone(),
    }
}

const METER_COLUMNS: &str =
    "serial, account, installed_at, initial_register_wh, dev_addr, nwk_skey, app_skey, relay_state";

fn meter_from_row(row: &super::db::Row) -> Result<Meter> {
    let keys = match (row.opt_int(4)?, row.opt_text(5)?, row.opt_text(6)?) {
        (Some(dev_addr), Some(nwk_skey), Some(app_skey)) => Some(MeterKeys {
            dev_addr: u32::try_from(dev_addr)
                .map_err(|_| CentralError::Corrupt(format!("dev_addr {dev_addr}")))?,
            nwk_skey,
            app_skey,
        }),
        _ => None,
    };
    Ok(Meter {
        serial: row.text(0)?,
        account: row.text(1)?,
        installed_at: from_ts(row.int(2)?),
        initial_register_wh: row.opt_int(3)?,
        keys,
        relay_state: row.text(7)?,
    })
}

fn meters_of(tx: &mut dyn Tx, account: &str) -> Result<Vec<Meter>> {
    tx.query(
        &format!("SELECT {METER_COLUMNS} FROM meters WHERE account = $1 ORDER BY serial"),
        &[account.into()],
    )?
    .iter()
    .map(meter_from_row)
    .collect()
}

/// Every meter, by serial.
pub fn list_meters(tx: &mut dyn Tx) -> Result<Vec<Meter>> {
    tx.query(
        &format!("SELECT {METER_COLUMNS} FROM meters ORDER BY serial"),
        &[],
    )?
    .iter()
    .map(meter_from_row)
    .collect()
}

/// Creates an account and its meter, installed when the account was created with a zero register:
/// what a bulk enrolment of new prepaid consumers does (benchmarks and the village harness use it).
pub fn enrol_household(tx: &mut dyn Tx, account: &Account, meter_serial: &str) -> Result<()> {
    put_account(tx, account, false)?;
    let meter = Meter {
        serial: meter_serial.to_string(),
        account: account.id.clone(),
        installed_at: account.created_at,
        initial_register_wh: Some(0),
        keys: None,
        relay_state: "unknown".into(),
    };
    put_meter(tx, &meter, false)
}

/// Installs a meter on an account (its initial register, if given, becomes its first reading, as
/// at the gateway) or, with `update`, changes an existing meter's keys. The account's gateway is
/// sent the meter.
pub fn put_meter(tx: &mut dyn Tx, meter: &Meter, update: bool) -> Result<()> {
    check_id("meter serial", &meter.serial)?;
    if let Some(keys) = &meter.keys {
        let hex16 = |k: &str| k.len() == 32 && k.chars().all(|c| c.is_ascii_hexdigit());
        if !hex16(&keys.nwk_skey) || !hex16(&keys.app_skey) {
            return Err(CentralError::Invalid(
                "meter keys nwk_skey and app_skey must be 32 hex digits each".into(),
            ));
        }
    }
    if meter.initial_register_wh.is_some_and(|r| r < 0) {
        return Err(CentralError::Invalid(
            "initial_register_wh cannot be negative".into(),
        ));
    }
    let owner = self::account(tx, &meter.account)?;
    let existing = tx.query_opt(
        "SELECT account FROM meters WHERE serial = $1",
        &[meter.serial.as_str().into()],
    )?;
    let (dev_addr, nwk, app) = match &meter.keys {
        Some(k) => (
            Value::Int(i64::from(k.dev_addr)),
            k.nwk_skey.as_str().into(),
            k.app_skey.as_str().into(),
        ),
        None => (Value::Null, Value::Null, Value::Null),
    };
    match (existing, update) {
        (Some(_), false) => {
            return Err(CentralError::Conflict(format!(
                "meter '{}' already exists; update it with PUT /api/v1/meters/{}",
                meter.serial, meter.serial
            )))
        }
        (None, true) => {
            return Err(CentralError::NotFound(format!(
                "no meter '{}'",
                meter.serial
            )))
        }
        (Some(row), true) => {
            if row.text(0)? != meter.account {
                return Err(CentralError::Invalid(
                    "a meter cannot move to another account; remove it and install a new meter record".into(),
                ));
            }
            tx.execute(
                "UPDATE meters SET dev_addr = $2, nwk_skey = $3, app_skey = $4 WHERE serial = $1",
                &[meter.serial.as_str().into(), dev_addr, nwk, app],
            )?;
        }
        (None, false) => {
            tx.execute(
                &format!("INSERT INTO meters ({METER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 'unknown')"),
                &[
                    meter.serial.as_str().into(),
                    meter.account.as_str().into(),
                    ts(meter.installed_at).into(),
                    meter.initial_register_wh.into(),
                    dev_addr,
                    nwk,
                    app,
                ],
            )?;
            if let Some(register) = meter.initial_register_wh {
                super::readings::install_baseline(tx, &meter.serial, meter.installed_at, register)?;
            }
        }
    }
    if let Some(gateway) = &owner.gateway {
        let stored = meters_of(tx, &meter.account)?
            .into_iter()
            .find(|m| m.serial == meter.serial)
            .ok_or_else(|| CentralError::NotFound(format!("no meter '{}'", meter.serial)))?;
        append_downlink(tx, gateway, &meter_event(&stored))?;
    }
    Ok(())
}

/// A recharge asked for through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RechargeRequest {
    /// Chosen by the caller, unique per payment: sending the same request again credits once.
    pub idempotency_key: String,
    pub account: String,
    pub amount_paise: i64,
    /// Payment reference (receipt number, UPI reference), kept for the statement.
    #[serde(default)]
    pub reference: Option<String>,
}

/// What a recharge, adjustment or emergency credit did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RechargeReceipt {
    pub event_id: String,
    pub account: String,
    pub amount_paise: i64,
    pub at: DateTime<Utc>,
    /// False when this key had already been used for the same request: nothing new was credited.
    pub created: bool,
}

/// Checks a money amount given by a caller.
pub fn check_amount(amount_paise: i64) -> Result<()> {
    if amount_paise <= 0 || amount_paise > MAX_RECHARGE_PAISE {
        return Err(CentralError::Invalid(format!(
            "amount_paise {amount_paise} is out of range: give a positive amount of at most {MAX_RECHARGE_PAISE} paise (₹1,00,000)"
        )));
    }
    Ok(())
}

/// Credits an account once per idempotency key. The same key with the same request returns the
/// first receipt; with a different request it is refused and nothing is written.
pub fn recharge(
    tx: &mut dyn Tx,
    request: &RechargeRequest,
    now: DateTime<Utc>,
) -> Result<RechargeReceipt> {
    check_amount(request.amount_paise)?;
    let receipt = money_once(
        tx,
        &request.idempotency_key,
        request,
        &request.account,
        EventKind::Recharge,
        request.amount_paise,
        None,
        now,
    )?;
    if receipt.created {
        super::notify::enqueue(
            tx,
            &format!("recharge:{}", receipt.event_id),
            &receipt.account,
            "recharge_received",
            &format!(
                "Recharge of Rs {} received.",
                gramgrid_core::tariff::rupees(receipt.amount_paise)
            ),
            now,
        )?;
    }
    Ok(receipt)
}

/// A correction by the utility, either sign (e.g. a refund or a billing error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    pub idempotency_key: String,
    pub account: String,
    /// Positive credits the account, negative debits it.
    pub amount_paise: i64,
    /// Why, for the statement and the audit (required).
    pub reason: String,
}

/// Records an adjustment once per idempotency key.
pub fn adjust(
    tx: &mut dyn Tx,
    request: &AdjustmentRequest,
    now: DateTime<Utc>,
) -> Result<RechargeReceipt> {
    check_amount(request.amount_paise.checked_abs().unwrap_or(i64::MAX))?;
    if request.reason.trim().is_empty() {
        return Err(CentralError::Invalid("an adjustment needs a reason".into()));
    }
    money_once(
        tx,
        &request.idempotency_key,
        request,
        &request.account,
        EventKind::Adjustment,
        request.amount_paise,
        None,
        now,
    )
}

/// The longest an emergency credit line may run.
pub const MAX_EMERGENCY_DAYS: i64 = 30;

/// A credit line until an expiry: it lowers the disconnect threshold, not the balance; the next
/// recharge closes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyCreditRequest {
    pub idempotency_key: String,
    pub account: String,
    pub amount_paise: i64,
    /// Days the credit line runs (1 to 30).
    pub valid_days: i64,
}

/// Grants emergency credit once per idempotency key.
pub fn emergency_credit(
    tx: &mut dyn Tx,
    request: &EmergencyCreditRequest,
    now: DateTime<Utc>,
) -> Result<RechargeReceipt> {
    check_amount(request.amount_paise)?;
    if !(1..=MAX_EMERGENCY_DAYS).contains(&request.valid_days) {
        return Err(CentralError::Invalid(format!(
            "valid_days {} is out of range: emergency credit runs 1 to {MAX_EMERGENCY_DAYS} days",
            request.valid_days
        )));
    }
    let expires_at = now + Duration::days(request.valid_days);
    money_once(
        tx,
        &request.idempotency_key,
        request,
        &request.account,
        EventKind::EmergencyCredit,
        request.amount_paise,
        Some(expires_at),
        now,
    )
}

/// Records one central money event per idempotency key: the key stores the request (with its
/// kind), so a repeat returns the first receipt and a different request under the key is refused.
#[allow(clippy::too_many_arguments)]
fn money_once(
    tx: &mut dyn Tx,
    key: &str,
    request: &impl Serialize,
    account: &str,
    kind: EventKind,
    amount_paise: i64,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<RechargeReceipt> {
    check_id("idempotency_key", key)?;
    let json = serde_json::to_string(request).map_err(|e| CentralError::Invalid(e.to_string()))?;
    let body = format!("{}:{json}", kind.as_str());
    if let Some(row) = tx.query_opt(
        "SELECT request, event_id FROM recharge_requests WHERE idempotency_key = $1",
        &[key.into()],
    )? {
        if row.text(0)? != body {
            return Err(CentralError::Conflict(format!(
                "idempotency_key '{key}' was already used for a different request; use a new key for a new payment or correction"
            )));
        }
        let event = ledger_event(tx, &row.text(1)?)?;
        return Ok(RechargeReceipt {
            event_id: event.id,
            account: event.account,
            amount_paise: event.amount_paise,
            at: event.at,
            created: false,
        });
    }
    let account = self::account(tx, account)?;
    let event = LedgerEvent {
        id: format!("central:{}:{}", kind.as_str(), uuid::Uuid::now_v7()),
        account: account.id.clone(),
        at: now,
        kind,
        amount_paise,
        expires_at,
    };
    tx.execute(
        "INSERT INTO recharge_requests (idempotency_key, request, event_id) VALUES ($1, $2, $3)",
        &[key.into(), body.into(), event.id.as_str().into()],
    )?;
    record_central_event(tx, &account, &event)?;
    Ok(RechargeReceipt {
        event_id: event.id,
        account: account.id,
        amount_paise,
        at: now,
        created: true,
    })
}

/// Records a money event made at central and sends it to the account's gateway.
pub(crate) fn record_central_event(
    tx: &mut dyn Tx,
    account: &Account,
    event: &LedgerEvent,
) -> Result<()> {
    insert_ledger_event(tx, event, "central")?;
    if let Some(gateway) = &account.gateway {
        append_downlink(tx, gateway, &DownlinkEvent::Ledger(event.into()))?;
    }
    Ok(())
}

/// Inserts a money event by id. Returns false when the same event was already stored; an id
/// stored with different content is a `Conflict`.
pub(crate) fn insert_ledger_event(
    tx: &mut dyn Tx,
    event: &LedgerEvent,
    source: &str,
) -> Result<bool> {
    let inserted = tx.execute(
        "INSERT INTO ledger_events (id, account, at, kind, amount_paise, effect_paise, expires_at, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        &[
            event.id.as_str().into(),
            event.account.as_str().into(),
            ts(event.at).into(),
            event.kind.as_str().into(),
            event.amount_paise.into(),
            event.balance_effect().into(),
            event.expires_at.map(ts).into(),
            source.into(),
        ],
    )?;
    if inserted == 1 {
        return Ok(true);
    }
    if ledger_event(tx, &event.id)? == *event {
        Ok(false)
    } else {
        Err(CentralError::Conflict(format!(
            "event id '{}' is already recorded with different content",
            event.id
        )))
    }
}

fn ledger_from_row(row: &super::db::Row) -> Result<LedgerEvent> {
    let kind = row.text(3)?;
    Ok(LedgerEvent {
        id: row.text(0)?,
        account: row.text(1)?,
        at: from_ts(row.int(2)?),
        kind: EventKind::parse(&kind)
            .ok_or_else(|| CentralError::Corrupt(format!("event kind '{kind}'")))?,
        amount_paise: row.int(4)?,
        expires_at: row.opt_int(5)?.map(from_ts),
    })
}

const LEDGER_COLUMNS: &str = "id, account, at, kind, amount_paise, expires_at";

fn ledger_event(tx: &mut dyn Tx, id: &str) -> Result<LedgerEvent> {
    let row = tx
        .query_opt(
            &format!("SELECT {LEDGER_COLUMNS} FROM ledger_events WHERE id = $1"),
            &[id.into()],
        )?
        .ok_or_else(|| CentralError::NotFound(format!("no money event '{id}'")))?;
    ledger_from_row(&row)
}

fn central_events_of(tx: &mut dyn Tx, account: &str) -> Result<Vec<LedgerEvent>> {
    tx.query(
        &format!("SELECT {LEDGER_COLUMNS} FROM ledger_events WHERE account = $1 AND source = 'central' ORDER BY at, id"),
        &[account.into()],
    )?
    .iter()
    .map(ledger_from_row)
    .collect()
}

/// An account's balance and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    pub account: String,
    /// Σ money events − Σ energy charges rated from the readings central has.
    pub balance_paise: i64,
    /// The balance is what central knew at this instant: the gateway's last sync (or now, for an
    /// account with no gateway).
    pub valid_at: DateTime<Utc>,
    /// "gateway:<id> last sync" or "central only".
    pub source: String,
    pub gateway: Option<String>,
    pub last_sync_at: Option<DateTime<Utc>>,
    /// True when the gateway has not synced for longer than `stale_after`: the true balance may be
    /// lower (consumption since) or higher (recharges at the gateway).
    pub stale: bool,
    /// Units (kWh) the balance buys at the average price of the last 7 days' consumption.
    pub estimated_units_left: Option<f64>,
    /// Days the balance lasts at the last 7 days' average daily charge.
    pub estimated_days_left: Option<f64>,
    /// Relay state of the account's meter(s) as last reported ("connected", "disconnected", "unknown").
    pub relay_state: String,
}

/// Σ money events − Σ energy charges, in paise.
pub fn balance_paise(tx: &mut dyn Tx, account: &str) -> Result<i64> {
    let money = tx.query_int(
        "SELECT CAST(SUM(effect_paise) AS BIGINT) FROM ledger_events WHERE account = $1",
        &[account.into()],
    )?;
    let energy = tx.query_int(
        "SELECT CAST(SUM(s.energy_paise + s.duty_paise) AS BIGINT) FROM segment_energy s
         JOIN meters m ON m.serial = s.meter WHERE m.account = $1",
        &[account.into()],
    )?;
    Ok(money - energy)
}

/// The balance report of one account at `now`.
pub fn balance(
    tx: &mut dyn Tx,
    account_id: &str,
    now: DateTime<Utc>,
    stale_after: Duration,
) -> Result<Balance> {
    let account = self::account(tx, account_id)?;
    let balance_paise = balance_paise(tx, account_id)?;
    let last_sync_at = match &account.gateway {
        Some(gateway) => tx
            .query_opt(
                "SELECT last_sync_at FROM gateways WHERE id = $1",
                &[gateway.as_str().into()],
            )?
            .and_then(|row| row.opt_int(0).ok().flatten())
            .map(from_ts),
        None => None,
    };
    let week_ago = ts(now - Duration::days(7));
    let usage = tx
        .query_opt(
            "SELECT CAST(SUM(r.charge_paise) AS BIGINT), MAX(r.register_wh) - MIN(r.register_wh) FROM readings r
             JOIN meters m ON m.serial = r.meter WHERE m.account = $1 AND r.at >= $2",
            &[account_id.into(), week_ago.into()],
        )?
        .map(|row| (row.opt_int(0).ok().flatten().unwrap_or(0), row.opt_int(1).ok().flatten().unwrap_or(0)))
        .unwrap_or((0, 0));
    let (charged, wh) = usage;
    let positive = balance_paise.max(0) as f64;
    let estimated_days_left = (charged > 0).then(|| positive / (charged as f64 / 7.0));
    let estimated_units_left =
        (charged > 0 && wh > 0).then(|| positive / (charged as f64 / (wh as f64 / 1000.0)));
    let states: Vec<String> = meters_of(tx, account_id)?
        .into_iter()
        .map(|m| m.relay_state)
        .collect();
    let relay_state = match states.as_slice() {
        [] => "unknown".to_owned(),
        [first, rest @ ..] if rest.iter().all(|s| s == first) => first.clone(),
        _ => "mixed".to_owned(),
    };
    let stale = account.gateway.is_some() && last_sync_at.is_none_or(|at| now - at > stale_after);
    Ok(Balance {
        account: account.id,
        balance_paise,
        valid_at: last_sync_at.unwrap_or(now),
        source: match &account.gateway {
            Some(gateway) => format!("gateway:{gateway} last sync"),
            None => "central only".into(),
        },
        gateway: account.gateway,
        last_sync_at,
        stale,
        estimated_units_left,
        estimated_days_left,
        relay_state,
    })
}

/// Publishes a policy version (alert levels, disconnect windows, grace, holiday calendar, daily
/// message time): stored and sent to every gateway. Versions only go up.
pub fn publish_policy(
    tx: &mut dyn Tx,
    version: u64,
    policy: &gramgrid_core::policy::PolicyConfig,
    now: DateTime<Utc>,
) -> Result<()> {
    policy.validate().map_err(CentralError::Invalid)?;
    // Versions are stored zero-padded, so the text maximum is the numeric one.
    let newest = tx
        .query_opt(
            "SELECT MAX(version) FROM published WHERE kind = 'policy'",
            &[],
        )?
        .and_then(|r| r.opt_text(0).ok().flatten())
        .and_then(|v| v.parse::<u64>().ok());
    if newest.is_some_and(|n| version <= n) {
        return Err(CentralError::Conflict(format!(
            "policy version {version} is not newer than the published {}; publish a higher version",
            newest.unwrap_or_default()
        )));
    }
    let event = DownlinkEvent::Policy {
        version,
        policy: policy.into(),
    };
    let body = serde_json::to_string(&event).map_err(|e| CentralError::Invalid(e.to_string()))?;
    tx.execute(
        "INSERT INTO published (kind, version, body, published_at) VALUES ('policy', $1, $2, $3)",
        &[format!("{version:020}").into(), body.into(), ts(now).into()],
    )?;
    append_downlink_to_all(tx, None, &event)
}

/// The published tariff versions (the built-in book until the first publish).
pub fn load_tariff_book(tx: &mut dyn Tx) -> Result<TariffBook> {
    let rows = tx.query(
        "SELECT body FROM published WHERE kind = 'tariff' ORDER BY version",
        &[],
    )?;
    if rows.is_empty() {
        return Ok(TariffBook::builtin());
    }
    let mut versions = Vec::with_capacity(rows.len());
    for row in rows {
        let version: TariffVersion = serde_json::from_str(&row.text(0)?)
            .map_err(|e| CentralError::Corrupt(e.to_string()))?;
        versions.push(version);
    }
    TariffBook::new(versions).map_err(|e| CentralError::Corrupt(e.to_string()))
}

/// Publishes a tariff version: it joins the book (replacing nothing: versions are immutable) and
/// is sent to every gateway. Returns the new book.
pub fn publish_tariff(
    tx: &mut dyn Tx,
    version: &TariffVersion,
    now: DateTime<Utc>,
) -> Result<TariffBook> {
    check_id("tariff version id", &version.id)?;
    let mut versions = load_tariff_book(tx)?.versions().to_vec();
    if versions.iter().any(|v| v.id == version.id) {
        return Err(CentralError::Conflict(format!(
            "tariff version '{}' is already published; versions are immutable, publish a new id",
            version.id
        )));
    }
    versions.push(version.clone());
    let book =
        TariffBook::new(versions.clone()).map_err(|e| CentralError::Invalid(e.to_string()))?;
    // The first publish also stores the built-in versions, so the book stays whole.
    for v in &versions {
        let body = serde_json::to_string(v).map_err(|e| CentralError::Invalid(e.to_string()))?;
        tx.execute(
            "INSERT INTO published (kind, version, body, published_at) VALUES ('tariff', $1, $2, $3) ON CONFLICT DO NOTHING",
            &[v.id.as_str().into(), body.into(), ts(now).into()],
        )?;
    }
    append_downlink_to_all(tx, None, &DownlinkEvent::Tariff(version.into()))?;
    Ok(book)
}
