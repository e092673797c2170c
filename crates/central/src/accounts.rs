//! Accounts, meters, gateway assignment, recharges, balances and published tariffs at central.
//!
//! Each function is one transaction's worth of work over [`Tx`]; the caller picks the transaction.
//! A change a gateway must know is appended to that gateway's downlink log in the same transaction.
use super::db::{Tx, Value};
use super::downlink::{append_downlink, append_downlink_to_all, ensure_gateway};
use super::sealed_keys::{self, KeyHome};
use super::{CentralError, Result};
pub use crate::check_id;
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::civil::{from_ts, ts, Month};
use gramgrid_core::ledger::{self, ArrearsRule, EventKind, LedgerEvent};
use gramgrid_core::message::Language;
use gramgrid_core::policy::PolicyConfig;
use gramgrid_core::tariff::{rupees, Category, TariffBook, TariffVersion};
use gramgrid_net::secrets::Sealer;
use gramgrid_proto::dlms::client::MeterSecurity;
use gramgrid_proto::wire::{DownlinkEvent, MeterKeys, WireDlms, WirePolicyRules};
use serde::{Deserialize, Serialize};

/// The largest single recharge accepted (₹1,00,000): anything above is a typo, not a payment.
pub const MAX_RECHARGE_PAISE: i64 = 10_000_000;

/// A consumer account as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The account id, chosen by the utility (1 to 64 characters without spaces).
    pub id: String,
    /// The consumer's name as the office knows it (1 to 200 characters).
    pub consumer_name: String,
    /// Tariff category: picks the tariff versions that rate the account's energy.
    pub category: Category,
    /// The consumer's phone number, if known; sent to the gateway with the account.
    #[serde(default)]
    pub phone: Option<String>,
    /// The gateway that serves this account (and its meters); none until assigned.
    #[serde(default)]
    pub gateway: Option<String>,
    /// The language of the consumer's messages: `en` (the default) or `hi`.
    #[serde(default)]
    pub language: Language,
    /// When the account was opened (the system clock's now when a request omits it); kept in whole
    /// UTC seconds, never changed by an update.
    #[serde(default = "Utc::now")]
    pub created_at: DateTime<Utc>,
}

/// A meter as the API shows it (keys are write-only: never returned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    /// The meter's serial number, its id everywhere (1 to 64 characters without spaces).
    pub serial: String,
    /// The account the meter is installed on; a meter never moves to another account.
    pub account: String,
    /// When the meter was installed; readings before it are refused as anomalies. Set at creation
    /// only (an update changes the keys alone).
    pub installed_at: DateTime<Utc>,
    /// The register (cumulative Wh) at installation; when given, it is the meter's first reading,
    /// charged nothing.
    #[serde(default)]
    pub initial_register_wh: Option<i64>,
    /// ABP session keys, written as LoRaWAN tools and meter manifests write them: `dev_addr` as 8
    /// hex digits, the keys as 32 hex digits each.
    #[serde(default, skip_serializing, deserialize_with = "keys_in_hex")]
    pub keys: Option<MeterKeys>,
    /// DLMS/COSEM security (docs/dlms.md section 7), written as the meter manifest writes it:
    /// `protocol` (`v1`, the default, or `dlms`) and, for `dlms`, `dlms_ek` and `dlms_ak` (32 hex
    /// digits each) and `system_title` (16 hex digits). The keys are write-only: a meter is shown
    /// with its `protocol` and `system_title` alone. None: the meter speaks payload v1.
    #[serde(
        flatten,
        serialize_with = "dlms_shown",
        deserialize_with = "dlms_in_hex"
    )]
    pub dlms: Option<MeterSecurity>,
    /// Relay state as last reported by the gateway: "connected", "disconnected" or "unknown" (until
    /// a report arrives). Ignored on input.
    #[serde(default = "unknown_relay")]
    pub relay_state: String,
}

/// Reads `keys` with `dev_addr` in hex ("26011F2A"), the one format the manifest, the docs and
/// LoRaWAN tools use.
fn keys_in_hex<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<MeterKeys>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct HexKeys {
        dev_addr: String,
        nwk_skey: String,
        app_skey: String,
    }
    let Some(keys) = Option::<HexKeys>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let dev_addr = (keys.dev_addr.len() == 8)
        .then(|| u32::from_str_radix(&keys.dev_addr, 16).ok())
        .flatten()
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "keys.dev_addr {:?} is not a DevAddr: write it as 8 hex digits, e.g. \"26011F2A\"",
                keys.dev_addr
            ))
        })?;
    Ok(Some(MeterKeys {
        dev_addr,
        nwk_skey: keys.nwk_skey,
        app_skey: keys.app_skey,
    }))
}

/// Reads a meter's `protocol`, `dlms_ek`, `dlms_ak` and `system_title` with the meter manifest's
/// validation; an error names the field and its problem, never the key.
fn dlms_in_hex<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<MeterSecurity>, D::Error> {
    #[derive(Deserialize)]
    struct Fields {
        protocol: Option<String>,
        dlms_ek: Option<String>,
        dlms_ak: Option<String>,
        system_title: Option<String>,
    }
    let fields = Fields::deserialize(deserializer)?;
    gramgrid_proto::manifest::dlms_security(gramgrid_proto::manifest::DlmsFields {
        protocol: fields.protocol.as_deref(),
        dlms_ek: fields.dlms_ek.as_deref(),
        dlms_ak: fields.dlms_ak.as_deref(),
        system_title: fields.system_title.as_deref(),
    })
    .map_err(|(field, problem)| serde::de::Error::custom(format!("{field} {problem}")))
}

/// Shows a meter's `protocol` and, for a DLMS meter, its `system_title` (not a secret: the meter
/// sends it in the clear); never the keys.
fn dlms_shown<S: serde::Serializer>(
    dlms: &Option<MeterSecurity>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Shown {
        protocol: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        system_title: Option<String>,
    }
    Shown {
        protocol: if dlms.is_some() { "dlms" } else { "v1" },
        system_title: dlms.as_ref().map(|d| WireDlms::from(d).system_title),
    }
    .serialize(serializer)
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
        language: Language::parse(&row.text(6)?).unwrap_or_default(),
    })
}

const ACCOUNT_COLUMNS: &str = "id, consumer_name, category, phone, gateway, created_at, language";

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

/// An account as the accounts list shows it: its details and whether it is protected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// The account's details.
    #[serde(flatten)]
    pub account: Account,
    /// Why the account is never disconnected automatically (e.g. "life support"); None when it
    /// is not protected. Set with `PUT /api/v1/accounts/{id}/protection`.
    pub protected: Option<String>,
    /// The load the connection is sanctioned for, in W; None when not recorded. Set with
    /// `PUT /api/v1/accounts/{id}/sanctioned-load`.
    pub sanctioned_load_w: Option<i64>,
}

fn account_view_from_row(row: &super::db::Row) -> Result<AccountView> {
    Ok(AccountView {
        account: account_from_row(row)?,
        protected: row.opt_text(7)?,
        sanctioned_load_w: row.opt_int(8)?,
    })
}

/// The smallest and largest sanctioned load the office may record, in W.
pub const SANCTIONED_LOAD_W: std::ops::RangeInclusive<i64> = 100..=200_000;

/// One account with its protection, or `NotFound`.
pub fn account_view(tx: &mut dyn Tx, id: &str) -> Result<AccountView> {
    let row = tx
        .query_opt(
            &format!("SELECT {ACCOUNT_COLUMNS}, protected, sanctioned_load_w FROM accounts WHERE id = $1"),
            &[id.into()],
        )?
        .ok_or_else(|| CentralError::NotFound(format!("no account '{id}'")))?;
    account_view_from_row(&row)
}

/// Every account with its protection, by id.
pub fn list_accounts(tx: &mut dyn Tx) -> Result<Vec<AccountView>> {
    tx.query(
        &format!(
            "SELECT {ACCOUNT_COLUMNS}, protected, sanctioned_load_w FROM accounts ORDER BY id"
        ),
        &[],
    )?
    .iter()
    .map(account_view_from_row)
    .collect()
}

/// Records the load an account's connection is sanctioned for (W), or with None forgets it. Its
/// gateway is told, and flags the months the household draws more in several intervals.
pub fn set_sanctioned_load(tx: &mut dyn Tx, id: &str, watts: Option<i64>) -> Result<AccountView> {
    if let Some(watts) = watts.filter(|w| !SANCTIONED_LOAD_W.contains(w)) {
        return Err(CentralError::Invalid(format!(
            "a sanctioned load of {watts} W is outside {} to {} W",
            SANCTIONED_LOAD_W.start(),
            SANCTIONED_LOAD_W.end()
        )));
    }
    let account = self::account(tx, id)?;
    tx.execute(
        "UPDATE accounts SET sanctioned_load_w = $2 WHERE id = $1",
        &[id.into(), watts.into()],
    )?;
    if let Some(gateway) = &account.gateway {
        append_downlink(tx, gateway, &sanctioned_load_event(id, watts))?;
    }
    account_view(tx, id)
}

fn sanctioned_load_event(id: &str, watts: Option<i64>) -> DownlinkEvent {
    DownlinkEvent::AccountSanctionedLoad {
        id: id.to_owned(),
        watts,
    }
}

/// Protects an account (`reason`, e.g. "life support": never disconnected automatically) or, with
/// None, ends its protection. Its gateway is told.
pub fn set_protection(tx: &mut dyn Tx, id: &str, reason: Option<&str>) -> Result<AccountView> {
    if let Some(reason) = reason {
        crate::check_reason("the protection's reason", reason)?;
    }
    let account = self::account(tx, id)?;
    tx.execute(
        "UPDATE accounts SET protected = $2 WHERE id = $1",
        &[id.into(), reason.into()],
    )?;
    if let Some(gateway) = &account.gateway {
        append_downlink(
            tx,
            gateway,
            &DownlinkEvent::AccountProtection {
                id: id.to_owned(),
                protected: reason.map(str::to_owned),
            },
        )?;
    }
    account_view(tx, id)
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
        account.language.code().into(),
        ts(account.created_at).into(),
    ];
    if update {
        tx.execute(
            "UPDATE accounts SET consumer_name = $2, category = $3, phone = $4, gateway = $5, language = $6 WHERE id = $1",
            &params[..6],
        )?;
    } else {
        tx.execute(
            &format!(
                "INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $7, $6)"
            ),
            &params,
        )?;
    }
    let previous_gateway = existing.and_then(|row| row.opt_text(0).ok().flatten());
    if let Some(previous) = previous_gateway
        .as_deref()
        .filter(|p| account.gateway.as_deref() != Some(*p))
    {
        // The old gateway stops serving the account (and can no longer cut its meter).
        append_downlink(
            tx,
            previous,
            &DownlinkEvent::AccountRemoved {
                id: account.id.clone(),
                to_gateway: account.gateway.clone(),
            },
        )?;
    }
    if let Some(gateway) = &account.gateway {
        let stored = self::account(tx, &account.id)?;
        append_downlink(tx, gateway, &account_event(&stored))?;
        append_downlink(
            tx,
            gateway,
            &DownlinkEvent::AccountLanguage {
                account: stored.id.clone(),
                language: stored.language.code().into(),
            },
        )?;
        if previous_gateway.as_deref() != Some(gateway.as_str()) {
            // A newly assigned gateway needs the account's meters and money history (central's
            // and the previous gateway's events) to derive the same balance.
            for meter in meters_of(tx, &account.id)? {
                append_downlink(tx, gateway, &meter_event(&meter))?;
                if let Some(security) = &meter.dlms {
                    crate::dlms::refuse_for_old_gateway(tx, gateway, &meter.serial)?;
                    append_downlink(
                        tx,
                        gateway,
                        &crate::dlms::record(&meter.serial, Some(security)),
                    )?;
                }
                hand_over_readings(tx, gateway, &meter.serial)?;
            }
            for event in events_of(tx, &account.id)? {
                append_downlink(tx, gateway, &DownlinkEvent::Ledger((&event).into()))?;
            }
            let view = account_view(tx, &account.id)?;
            if let Some(reason) = view.protected {
                append_downlink(
                    tx,
                    gateway,
                    &DownlinkEvent::AccountProtection {
                        id: account.id.clone(),
                        protected: Some(reason),
                    },
                )?;
            }
            if let Some(watts) = view.sanctioned_load_w {
                append_downlink(
                    tx,
                    gateway,
                    &sanctioned_load_event(&account.id, Some(watts)),
                )?;
            }
        }
    }
    Ok(())
}

/// Records that an account left gateway `from` at `at`: that gateway's readings of the account's
/// meters from before then are still taken and handed to the new gateway.
pub fn note_move(tx: &mut dyn Tx, account: &str, from: &str, at: DateTime<Utc>) -> Result<()> {
    tx.execute(
        "UPDATE accounts SET moved_from = $2, moved_at = $3 WHERE id = $1",
        &[account.into(), from.into(), ts(at).into()],
    )?;
    Ok(())
}

/// Readings per `DownlinkEvent::Readings` record of a handed-over meter's history.
const READINGS_PER_RECORD: usize = 10_000;

/// Sends a newly assigned gateway the readings central holds of a meter, so it rates the meter's
/// history (as late readings) exactly as central did, instead of from the installation reading.
pub(crate) fn hand_over_readings(tx: &mut dyn Tx, gateway: &str, serial: &str) -> Result<()> {
    let rows = tx.query(
        "SELECT at, register_wh, export_wh FROM readings WHERE meter = $1 ORDER BY at",
        &[serial.into()],
    )?;
    let readings = rows
        .iter()
        .map(|r| Ok((serial.to_owned(), r.int(0)?, r.int(1)?, r.int(2)?)))
        .collect::<Result<Vec<_>>>()?;
    if readings.len() <= 1 {
        // Only the installation reading, which the `Meter` record carries already.
        return Ok(());
    }
    for chunk in readings.chunks(READINGS_PER_RECORD) {
        append_downlink(tx, gateway, &handover_record(chunk.to_vec()))?;
    }
    Ok(())
}

/// The record that hands readings over to a gateway: `Readings`, or `NetReadings` when one of them
/// has an export register (so an import-only meter's handover still reaches an older gateway).
pub(crate) fn handover_record(readings: Vec<gramgrid_proto::wire::NetReading>) -> DownlinkEvent {
    let (blocks, exports) = gramgrid_proto::wire::group_net(readings);
    if exports.is_empty() {
        DownlinkEvent::Readings { blocks }
    } else {
        DownlinkEvent::NetReadings { blocks, exports }
    }
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
    "serial, account, installed_at, initial_register_wh, dev_addr, nwk_skey, app_skey, relay_state, dlms_title, dlms_ek, dlms_ak";

/// Where a meter's sealed session key belongs (`secrets`): `which` is `nwk` or `app`.
fn key_context(serial: &str, which: &str) -> String {
    sealed_keys::context(KeyHome::Meter, serial, which)
}

/// A meter's stored session keys, opened; None if it has none.
pub(crate) fn stored_keys(
    sealer: &Sealer,
    serial: &str,
    dev_addr: Option<i64>,
    nwk: Option<String>,
    app: Option<String>,
) -> Result<Option<MeterKeys>> {
    let (Some(dev_addr), Some(nwk), Some(app)) = (dev_addr, nwk, app) else {
        return Ok(None);
    };
    sealed_keys::open(sealer, KeyHome::Meter, serial, dev_addr, (&nwk, &app)).map(Some)
}

/// Seals meter session keys stored in the clear by a gramgrid before sealing existed.
pub(crate) fn seal_stored_meter_keys(tx: &mut dyn Tx) -> Result<()> {
    let rows = tx.query(
        "SELECT serial, nwk_skey, app_skey FROM meters WHERE nwk_skey IS NOT NULL",
        &[],
    )?;
    for row in rows {
        let (serial, nwk, app) = (row.text(0)?, row.text(1)?, row.text(2)?);
        if Sealer::is_sealed(&nwk) {
            continue;
        }
        let nwk = tx.sealer().seal(&nwk, &key_context(&serial, "nwk"));
        let app = tx.sealer().seal(&app, &key_context(&serial, "app"));
        tx.execute(
            "UPDATE meters SET nwk_skey = $2, app_skey = $3 WHERE serial = $1",
            &[serial.as_str().into(), nwk.into(), app.into()],
        )?;
    }
    Ok(())
}

fn meter_from_row(sealer: &Sealer, row: &super::db::Row) -> Result<Meter> {
    let serial = row.text(0)?;
    let keys = stored_keys(
        sealer,
        &serial,
        row.opt_int(4)?,
        row.opt_text(5)?,
        row.opt_text(6)?,
    )?;
    let dlms = sealed_keys::open_dlms(
        sealer,
        KeyHome::Meter,
        &serial,
        (row.opt_text(8)?, row.opt_text(9)?, row.opt_text(10)?),
    )?;
    Ok(Meter {
        serial,
        account: row.text(1)?,
        installed_at: from_ts(row.int(2)?),
        initial_register_wh: row.opt_int(3)?,
        keys,
        dlms,
        relay_state: row.text(7)?,
    })
}

pub(crate) fn meters_of(tx: &mut dyn Tx, account: &str) -> Result<Vec<Meter>> {
    tx.query(
        // In installation order: a gateway the account moves to installs them in this order, and
        // each installation takes the one before out of service, so the latest stays in service.
        &format!(
            "SELECT {METER_COLUMNS} FROM meters WHERE account = $1 ORDER BY installed_at, serial"
        ),
        &[account.into()],
    )?
    .iter()
    .map(|row| meter_from_row(tx.sealer(), row))
    .collect()
}

/// Every meter, by serial.
pub fn list_meters(tx: &mut dyn Tx) -> Result<Vec<Meter>> {
    tx.query(
        &format!("SELECT {METER_COLUMNS} FROM meters ORDER BY serial"),
        &[],
    )?
    .iter()
    .map(|row| meter_from_row(tx.sealer(), row))
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
        dlms: None,
        relay_state: "unknown".into(),
    };
    put_meter(tx, &meter, false)
}

/// Installs a meter on an account (its initial register, if given, becomes its first reading, as
/// at the gateway) or, with `update`, changes an existing meter's keys (radio and DLMS). The
/// account's gateway is sent the meter, and its DLMS security when it has (or had) some; a DLMS
/// meter is refused for a gateway too old to reach it.
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
    if let (Some(gateway), Some(_)) = (&owner.gateway, &meter.dlms) {
        crate::dlms::refuse_for_old_gateway(tx, gateway, &meter.serial)?;
    }
    let existing = tx.query_opt(
        "SELECT account, dlms_title FROM meters WHERE serial = $1",
        &[meter.serial.as_str().into()],
    )?;
    let was_dlms = match &existing {
        Some(row) => row.opt_text(1)?.is_some(),
        None => false,
    };
    let (dlms_title, dlms_ek, dlms_ak) = match &meter.dlms {
        Some(security) => {
            let (title, ek, ak) =
                sealed_keys::seal_dlms(tx.sealer(), KeyHome::Meter, &meter.serial, security);
            (title.into(), ek.into(), ak.into())
        }
        None => (Value::Null, Value::Null, Value::Null),
    };
    let (dev_addr, nwk, app) = match &meter.keys {
        Some(k) => {
            let (nwk, app) = sealed_keys::seal(tx.sealer(), KeyHome::Meter, &meter.serial, k);
            (Value::Int(i64::from(k.dev_addr)), nwk.into(), app.into())
        }
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
                "UPDATE meters SET dev_addr = $2, nwk_skey = $3, app_skey = $4, dlms_title = $5, dlms_ek = $6, dlms_ak = $7 WHERE serial = $1",
                &[meter.serial.as_str().into(), dev_addr, nwk, app, dlms_title, dlms_ek, dlms_ak],
            )?;
        }
        (None, false) => {
            if let Some(gateway) = super::transformers::gateway_of(tx, &meter.serial)? {
                return Err(CentralError::Conflict(format!(
                    "meter {} is the transformer meter of gateway {gateway} (role = \"dt\"); a household's meter must be a meter of its own",
                    meter.serial
                )));
            }
            tx.execute(
                &format!("INSERT INTO meters ({METER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 'unknown', $8, $9, $10)"),
                &[
                    meter.serial.as_str().into(),
                    meter.account.as_str().into(),
                    ts(meter.installed_at).into(),
                    meter.initial_register_wh.into(),
                    dev_addr,
                    nwk,
                    app,
                    dlms_title,
                    dlms_ek,
                    dlms_ak,
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
        // Right after the meter's record; a meter switched back to payload v1 is told so.
        if stored.dlms.is_some() || was_dlms {
            append_downlink(
                tx,
                gateway,
                &crate::dlms::record(&stored.serial, stored.dlms.as_ref()),
            )?;
        }
    }
    Ok(())
}

/// A recharge asked for through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RechargeRequest {
    /// Chosen by the caller, unique per payment: sending the same request again credits once.
    pub idempotency_key: String,
    /// The account to credit.
    pub account: String,
    /// Amount paid, in paise (1 to [`MAX_RECHARGE_PAISE`]).
    pub amount_paise: i64,
    /// Payment reference (receipt number, UPI reference), kept for the statement.
    #[serde(default)]
    pub reference: Option<String>,
}

/// What a recharge, adjustment or emergency credit did.
///
/// A repeat of the request (same idempotency key, same body) gets this receipt again, identical
/// to the byte: `at` is the money event's stored time (whole UTC seconds, as the ledger keeps it
/// and statements show it), and whether this call created the event is not part of the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RechargeReceipt {
    /// Id of the money event recorded (`central:<kind>:<uuid>`): the same on every repeat.
    pub event_id: String,
    /// The account the event belongs to.
    pub account: String,
    /// The request's amount, in paise (an adjustment's with its sign; an emergency credit's is the
    /// credit line, which does not move the balance).
    pub amount_paise: i64,
    /// When the money event was recorded, in whole UTC seconds.
    pub at: DateTime<Utc>,
    /// False when this key had already been used for the same request: nothing new was credited.
    /// Not serialized (the API says it with the status: 201 created, 200 a repeat), so a repeat's
    /// body is the first receipt's.
    #[serde(skip)]
    pub created: bool,
}

/// Reads an amount in rupees as people write it ("1200", "1200.5", "1200.00") into paise,
/// exactly (no floating point); None for anything else (a sign, more than two decimals, an
/// amount that does not fit).
pub fn parse_rupees(text: &str) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 2 {
        return None;
    }
    let paise_part = format!("{fraction:0<2}").parse::<i64>().ok()?;
    whole
        .parse::<i64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(paise_part)
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
        let amount = rupees(receipt.amount_paise);
        let balance = rupees(balance_paise(tx, &receipt.account)?);
        super::notify::enqueue(
            tx,
            &format!("recharge:{}", receipt.event_id),
            &receipt.account,
            "recharge_received",
            &format!("Recharge of Rs {amount} received."),
            &[
                ("amount".to_string(), amount),
                ("balance".to_string(), balance),
            ]
            .into_iter()
            .collect(),
            now,
        )?;
    }
    Ok(receipt)
}

/// A correction by the utility, either sign (e.g. a refund or a billing error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    /// Chosen by the caller, unique per correction: sending the same request again records it once.
    pub idempotency_key: String,
    /// The account to correct.
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
    /// Chosen by the caller, unique per grant: sending the same request again grants once.
    pub idempotency_key: String,
    /// The account to grant the credit line to.
    pub account: String,
    /// Size of the credit line, in paise (1 to [`MAX_RECHARGE_PAISE`]).
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

/// Arrears carried over from post-paid, entered when an account moves to prepaid. They are not part
/// of the balance: each later recharge pays a share into them (the policy's arrears rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrearsRequest {
    /// Chosen by the caller, unique per entry (an idempotency key, like a recharge's): the same
    /// request again records once; another request under the same id is refused.
    pub id: String,
    /// The arrears, in paise (1 to [`MAX_RECHARGE_PAISE`]).
    pub amount_paise: i64,
    /// Where the figure comes from (the post-paid bill), for the office.
    #[serde(default)]
    pub note: Option<String>,
}

/// Records an account's arrears once per request id; its gateway is sent the money event.
pub fn record_arrears(
    tx: &mut dyn Tx,
    account: &str,
    request: &ArrearsRequest,
    now: DateTime<Utc>,
) -> Result<RechargeReceipt> {
    check_amount(request.amount_paise)?;
    if let Some(note) = &request.note {
        crate::check_reason("the arrears note", note)?;
    }
    /// What the id stands for: the request and the account it was made for.
    #[derive(Serialize)]
    struct Stored<'a> {
        account: &'a str,
        #[serde(flatten)]
        request: &'a ArrearsRequest,
    }
    money_once(
        tx,
        &request.id,
        &Stored { account, request },
        account,
        EventKind::Arrears,
        request.amount_paise,
        None,
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
    // The ledger stores whole UTC seconds: the event, the receipt and every repeat of it carry the
    // stored time, not a finer one only the first answer would have had.
    let now = from_ts(ts(now));
    let expires_at = expires_at.map(|at| from_ts(ts(at)));
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
    crate::mqtt::balances_changed(
        tx,
        balance_paise,
        std::slice::from_ref(&account.id),
        event.kind.as_str(),
        Some(&event.id),
        event.at,
    )
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

/// Every money event of an account, whoever made it (central, this or an earlier gateway).
pub(crate) fn events_of(tx: &mut dyn Tx, account: &str) -> Result<Vec<LedgerEvent>> {
    tx.query(
        &format!("SELECT {LEDGER_COLUMNS} FROM ledger_events WHERE account = $1 ORDER BY at, id"),
        &[account.into()],
    )?
    .iter()
    .map(ledger_from_row)
    .collect()
}

/// Every money event of the accounts assigned to `gateway`.
pub(crate) fn events_of_gateway_accounts(
    tx: &mut dyn Tx,
    gateway: &str,
) -> Result<Vec<LedgerEvent>> {
    let columns = LEDGER_COLUMNS
        .split(", ")
        .map(|c| format!("l.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    tx.query(
        &format!("SELECT {columns} FROM ledger_events l JOIN accounts a ON a.id = l.account WHERE a.gateway = $1 ORDER BY l.at, l.id"),
        &[gateway.into()],
    )?
    .iter()
    .map(ledger_from_row)
    .collect()
}

/// An account's balance and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    /// The account id.
    pub account: String,
    /// Σ money events − Σ energy charges rated from the readings central has.
    pub balance_paise: i64,
    /// The balance is what central knew at this instant: the gateway's last sync (or now, for an
    /// account with no gateway or whose gateway has never synced).
    pub valid_at: DateTime<Utc>,
    /// Where the balance comes from: `"gateway:<id> last sync"` (central's figure as of that
    /// gateway's last sync, `last_sync_at`), `"central (gateway <id> has not synced yet)"` (only
    /// what was recorded at central: no reading or gateway-made charge has arrived), or "central
    /// only" (the account has no gateway).
    pub source: String,
    /// The gateway that serves the account, if any.
    pub gateway: Option<String>,
    /// When that gateway last synced with central; none if it never has or there is no gateway.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// True when the gateway has not synced for longer than `stale_after`: the true balance may be
    /// lower (consumption since) or higher (recharges at the gateway).
    pub stale: bool,
    /// Units (kWh) the balance buys at the average price of the last 7 days' consumption.
    pub estimated_units_left: Option<f64>,
    /// Days the balance lasts at the daily energy charge of the readings of the last 7 days, over
    /// the time they actually cover; a history shorter than a day is topped up to a day at the
    /// category's typical consumption (see [`estimate_days_left`]). None when nothing is being
    /// charged (a whole day or more of readings with no consumption).
    pub estimated_days_left: Option<f64>,
    /// Relay state of the account's meter(s) as last reported: "connected", "disconnected",
    /// "unknown", or "mixed" when its meters differ.
    pub relay_state: String,
    /// Arrears carried over from post-paid and their recovery from recharges (all zero when the
    /// account has none).
    pub arrears: ArrearsReport,
    /// Why the account is protected (never disconnected automatically), if it is.
    pub protected: Option<String>,
}

/// An account's arrears from post-paid, in paise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrearsReport {
    /// Arrears recorded.
    pub opening_paise: i64,
    /// Recovered from recharges so far (already taken off the balance).
    pub recovered_paise: i64,
    /// Still to be recovered: opening − recovered.
    pub outstanding_paise: i64,
}

impl From<ledger::Arrears> for ArrearsReport {
    fn from(a: ledger::Arrears) -> Self {
        ArrearsReport {
            opening_paise: a.opening_paise,
            recovered_paise: a.recovered_paise,
            outstanding_paise: a.outstanding_paise(),
        }
    }
}

/// Σ money events − arrears recovered − Σ energy charges, in paise, under the arrears rules of the
/// policy in force: the gateway's `ledger::position` less its energy charges.
pub fn balance_paise(tx: &mut dyn Tx, account: &str) -> Result<i64> {
    let (_, policy) = policy_in_force(tx)?;
    Ok(balance_and_arrears(tx, account, &policy.arrears)?.0)
}

/// An account's balance (as [`balance_paise`]) and its arrears, under `rules`.
fn balance_and_arrears(
    tx: &mut dyn Tx,
    account: &str,
    rules: &[ArrearsRule],
) -> Result<(i64, ledger::Arrears)> {
    let money = tx.query_int(
        "SELECT CAST(SUM(effect_paise) AS BIGINT) FROM ledger_events WHERE account = $1",
        &[account.into()],
    )?;
    let energy = tx.query_int(
        "SELECT CAST(SUM(s.energy_paise + s.tod_paise + s.duty_paise) AS BIGINT) FROM segment_energy s
         JOIN meters m ON m.serial = s.meter WHERE m.account = $1",
        &[account.into()],
    )?;
    let arrears = ledger::arrears(&events_of(tx, account)?, rules);
    Ok((money - arrears.recovered_paise - energy, arrears))
}

/// The balance of every account assigned to a gateway (to `gateway` only, when given), as
/// [`balance_paise`] derives it under `rules`: `(gateway, account, balance)`, by gateway and account.
pub(crate) fn gateway_balances(
    tx: &mut dyn Tx,
    gateway: Option<&str>,
    rules: &[ArrearsRule],
) -> Result<Vec<(String, String, i64)>> {
    let (which, params) = match gateway {
        Some(gateway) => ("a.gateway = $1", vec![gateway.into()]),
        None => ("a.gateway IS NOT NULL", Vec::new()),
    };
    // Correlated sums over the accounts asked for (index lookups).
    let rows = tx.query(
        &format!(
            "SELECT a.gateway, a.id,
               COALESCE((SELECT CAST(SUM(l.effect_paise) AS BIGINT) FROM ledger_events l WHERE l.account = a.id), 0)
               - COALESCE((SELECT CAST(SUM(s.energy_paise + s.tod_paise + s.duty_paise) AS BIGINT) FROM segment_energy s
                           JOIN meters m ON m.serial = s.meter WHERE m.account = a.id), 0),
               (SELECT COUNT(*) FROM ledger_events r WHERE r.account = a.id AND r.kind = 'arrears')
             FROM accounts a WHERE {which} ORDER BY a.gateway, a.id"
        ),
        &params,
    )?;
    let mut balances = Vec::with_capacity(rows.len());
    for row in rows {
        let (gateway, account, mut balance) = (row.text(0)?, row.text(1)?, row.int(2)?);
        // Only accounts with arrears have anything recovered: their events are read.
        if row.int(3)? > 0 {
            balance -= ledger::arrears(&events_of(tx, &account)?, rules).recovered_paise;
        }
        balances.push((gateway, account, balance));
    }
    Ok(balances)
}

/// The policy in force at central, as the gateways hold it: the newest published version with its
/// rules (the defaults of the rules for a version published without them), or, before any publish,
/// `PolicyConfig::default()` and no version.
pub fn policy_in_force(tx: &mut dyn Tx) -> Result<(Option<u64>, PolicyConfig)> {
    let corrupt =
        |e: &dyn std::fmt::Display| CentralError::Corrupt(format!("published policy: {e}"));
    let Some(row) = tx.query_opt(
        "SELECT version, body FROM published WHERE kind = 'policy' ORDER BY version DESC LIMIT 1",
        &[],
    )?
    else {
        return Ok((None, PolicyConfig::default()));
    };
    let stored_version = row.text(0)?;
    let event: DownlinkEvent = serde_json::from_str(&row.text(1)?).map_err(|e| corrupt(&e))?;
    let DownlinkEvent::Policy { version, policy } = event else {
        return Err(corrupt(&"not a policy record"));
    };
    let mut config = PolicyConfig::try_from(policy).map_err(|e| corrupt(&e))?;
    if let Some(rules) = tx.query_opt(
        "SELECT body FROM published WHERE kind = 'policy_rules' AND version = $1",
        &[stored_version.into()],
    )? {
        let event: DownlinkEvent =
            serde_json::from_str(&rules.text(0)?).map_err(|e| corrupt(&e))?;
        let DownlinkEvent::PolicyRules { rules, .. } = event else {
            return Err(corrupt(&"not a policy rules record"));
        };
        config = rules.apply_to(config).map_err(|e| corrupt(&e))?;
    }
    Ok((Some(version), config))
}

/// The balance report of one account at `now`, with the days left estimated against `book`.
pub fn balance(
    tx: &mut dyn Tx,
    account_id: &str,
    now: DateTime<Utc>,
    stale_after: Duration,
    book: &TariffBook,
) -> Result<Balance> {
    let account = account_view(tx, account_id)?;
    let (protected, account) = (account.protected, account.account);
    let (_, policy) = policy_in_force(tx)?;
    let (balance_paise, arrears) = balance_and_arrears(tx, account_id, &policy.arrears)?;
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
    let usage = recent_usage(tx, account_id, now - Duration::days(USAGE_WINDOW_DAYS))?;
    let positive = balance_paise.max(0) as f64;
    let estimated_days_left = estimate_days_left(
        balance_paise,
        &usage,
        typical_daily_paise(book, account.category, now),
    );
    let (charged, wh) = (usage.charged_paise, usage.energy_wh);
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
        source: balance_source(account.gateway.as_deref(), last_sync_at.is_some()),
        gateway: account.gateway,
        last_sync_at,
        stale,
        estimated_units_left,
        estimated_days_left,
        relay_state,
        arrears: arrears.into(),
        protected,
    })
}

/// What a balance report says its figure rests on.
fn balance_source(gateway: Option<&str>, synced: bool) -> String {
    match (gateway, synced) {
        (Some(gateway), true) => format!("gateway:{gateway} last sync"),
        (Some(gateway), false) => format!("central (gateway {gateway} has not synced yet)"),
        (None, _) => "central only".into(),
    }
}

/// How far back the consumption behind the estimates looks.
const USAGE_WINDOW_DAYS: i64 = 7;

/// What an account's readings since `since` say about its consumption: the spans between each
/// meter's first and last reading in the window (the first one's charge is for the span before
/// the window, so it is left out).
fn recent_usage(tx: &mut dyn Tx, account: &str, since: DateTime<Utc>) -> Result<RecentUsage> {
    let per_meter = tx.query(
        "SELECT MIN(r.at), MAX(r.at), MAX(r.register_wh) - MIN(r.register_wh) FROM readings r
         JOIN meters m ON m.serial = r.meter WHERE m.account = $1 AND r.at >= $2 GROUP BY r.meter",
        &[account.into(), ts(since).into()],
    )?;
    let (mut first, mut last, mut energy_wh) = (i64::MAX, i64::MIN, 0);
    for row in &per_meter {
        first = first.min(row.int(0)?);
        last = last.max(row.int(1)?);
        energy_wh += row.int(2)?.max(0);
    }
    let charged_paise = tx.query_int(
        "SELECT CAST(SUM(r.charge_paise) AS BIGINT) FROM readings r
         JOIN meters m ON m.serial = r.meter WHERE m.account = $1
         AND r.at > (SELECT MIN(f.at) FROM readings f WHERE f.meter = r.meter AND f.at >= $2)",
        &[account.into(), ts(since).into()],
    )?;
    Ok(RecentUsage {
        span_seconds: if per_meter.is_empty() {
            0
        } else {
            last - first
        },
        charged_paise,
        energy_wh,
    })
}

/// What the recent readings of an account say about its consumption.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecentUsage {
    /// Seconds from the first to the last reading (0 with one reading or none).
    pub span_seconds: i64,
    /// Energy charges (energy and duty) of that span, in paise.
    pub charged_paise: i64,
    /// Energy of that span, in Wh.
    pub energy_wh: i64,
}

/// Readings covering less than this (seconds) are topped up to it at the category's typical rate
/// before the days left are estimated. A day, because consumption follows the hour of the day
/// (a household draws about 120 W at night and 900 W in the evening): a few hours of readings
/// say more about which hours they were than about the household.
pub const ESTIMATE_MIN_SPAN_SECONDS: i64 = 86_400;

/// A typical day's consumption of a category, in Wh, for an account with (almost) no readings yet.
///
/// These are the means of the simulator's load profiles (`gramgrid_sim::meter::profile::
/// mean_daily_wh`, which a test there keeps equal to these): a domestic household 8.94 kWh a
/// day, a shop 17.54 kWh (1.5 kW through opening hours), a 5 hp irrigation pump 26.07 kWh (3.7 kW
/// in its two supply windows). They are a starting estimate, replaced by the account's own
/// readings as a day of them arrives.
pub fn typical_daily_wh(category: Category) -> i64 {
    match category {
        Category::Domestic => 8_940,
        Category::Commercial => 17_540,
        Category::Agricultural => 26_070,
    }
}

/// The energy charge and duty (paise) of a typical day of `category` in the month of `now`:
/// [`typical_daily_wh`] every day of the month, quoted from `book`.
pub fn typical_daily_paise(book: &TariffBook, category: Category, now: DateTime<Utc>) -> f64 {
    let month = Month::containing(now);
    let days = i64::from(month.days()).max(1);
    let bill = book.quote(category, month, typical_daily_wh(category) * days);
    (bill.energy_paise + bill.tod_paise + bill.duty_paise) as f64 / days as f64
}

/// Days a balance lasts (pure: no clock, no I/O).
///
/// The daily charge is what `usage` charged over the time its readings cover. When they cover
/// less than [`ESTIMATE_MIN_SPAN_SECONDS`], the rest of that span is filled at
/// `typical_daily_paise`, so an account with no readings is estimated at its category's typical
/// day and a few hours of readings move the estimate only as far as they count. A balance at or
/// below zero has 0 days left; None when nothing is being charged (no estimate can be made).
pub fn estimate_days_left(
    balance_paise: i64,
    usage: &RecentUsage,
    typical_daily_paise: f64,
) -> Option<f64> {
    const DAY: f64 = 86_400.0;
    let span = usage.span_seconds.max(0) as f64;
    let floor = ESTIMATE_MIN_SPAN_SECONDS as f64;
    let typical_part = typical_daily_paise.max(0.0) * (floor - span).max(0.0) / DAY;
    let charged = usage.charged_paise.max(0) as f64 + typical_part;
    let daily = charged / (span.max(floor) / DAY);
    (daily.is_finite() && daily > 0.0).then(|| balance_paise.max(0) as f64 / daily)
}

/// Publishes a policy version (alert levels, disconnect windows, grace, holiday calendar, daily
/// message time, and its rules: breaker, arrears recovery, partial payment): stored and sent to
/// every gateway, the `Policy` record followed by its `PolicyRules`. Versions only go up. This is
/// the publish itself: `holds::publish_policy` guards it.
pub fn publish_policy(
    tx: &mut dyn Tx,
    version: u64,
    policy: &PolicyConfig,
    now: DateTime<Utc>,
) -> Result<()> {
    check_policy(tx, version, policy)?;
    let events = [
        (
            "policy",
            DownlinkEvent::Policy {
                version,
                policy: policy.into(),
            },
        ),
        (
            "policy_rules",
            DownlinkEvent::PolicyRules {
                version,
                rules: WirePolicyRules::from(policy),
            },
        ),
    ];
    for (kind, event) in &events {
        let body =
            serde_json::to_string(event).map_err(|e| CentralError::Invalid(e.to_string()))?;
        tx.execute(
            "INSERT INTO published (kind, version, body, published_at) VALUES ($1, $2, $3, $4)",
            &[
                (*kind).into(),
                format!("{version:020}").into(),
                body.into(),
                ts(now).into(),
            ],
        )?;
        append_downlink_to_all(tx, None, event)?;
    }
    Ok(())
}

/// Checks that `policy` may be published as `version`: valid, newer than the published one, and
/// not too far above it.
pub fn check_policy(tx: &mut dyn Tx, version: u64, policy: &PolicyConfig) -> Result<()> {
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
    // A step bound, so one typo (or u64::MAX) cannot use up every later version number.
    let highest = newest.unwrap_or(0).saturating_add(MAX_POLICY_VERSION_STEP);
    if version > highest {
        return Err(CentralError::Invalid(format!(
            "policy version {version} jumps too far: the next version may be at most {highest} ({MAX_POLICY_VERSION_STEP} above the published one)"
        )));
    }
    Ok(())
}

/// How far above the published policy version a new one may be.
pub const MAX_POLICY_VERSION_STEP: u64 = 1_000;

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
    let today = gramgrid_core::civil::local_date(now);
    if version.effective_from <= today {
        return Err(CentralError::Invalid(format!(
            "tariff version '{}' takes effect on {}, but a new version may take effect from tomorrow ({}) at the earliest: readings already rated under the old one would be rated differently by gateways that learn of it later",
            version.id,
            version.effective_from,
            today + chrono::Duration::days(1)
        )));
    }
    let mut versions = load_tariff_book(tx)?.versions().to_vec();
    if versions.iter().any(|v| v.id == version.id) {
        return Err(CentralError::Conflict(format!(
            "tariff version '{}' is already published; versions are immutable, publish a new id",
            version.id
        )));
    }
    refuse_for_old_gateways(tx, version)?;
    versions.push(version.clone());
    let book =
        TariffBook::new(versions.clone()).map_err(|e| CentralError::Invalid(e.to_string()))?;
    // The first publish also stores the built-in versions, so the book stays whole, and sends them
    // too: a gateway builds its book from what central published alone.
    for v in &versions {
        let body = serde_json::to_string(v).map_err(|e| CentralError::Invalid(e.to_string()))?;
        let stored = tx.execute(
            "INSERT INTO published (kind, version, body, published_at) VALUES ('tariff', $1, $2, $3) ON CONFLICT DO NOTHING",
            &[v.id.as_str().into(), body.into(), ts(now).into()],
        )?;
        if stored > 0 {
            for event in crate::downlink::tariff_events(v) {
                append_downlink_to_all(tx, None, &event)?;
            }
        }
    }
    Ok(book)
}

/// Refuses a version that a gateway, as old as its latest exchange says, would bill otherwise than
/// central: time-of-day slots or a demand charge before sync protocol 8 (billed at the slab rates
/// alone), banking of export before protocol 10 (the surplus would lapse).
fn refuse_for_old_gateways(tx: &mut dyn Tx, version: &TariffVersion) -> Result<()> {
    let needs = [
        (
            !version.tod.is_empty() || version.demand_paise_per_kw != 0,
            8,
            "time-of-day slots or a demand charge",
        ),
        (version.export_banking, 10, "banking of surplus export"),
    ];
    for (uses, protocol, what) in needs {
        if !uses {
            continue;
        }
        let old: Vec<String> = tx
            .query(
                "SELECT id, protocol FROM gateways WHERE protocol < $1 ORDER BY id",
                &[i64::from(protocol).into()],
            )?
            .iter()
            .map(|r| Ok(format!("{} (protocol {})", r.text(0)?, r.int(1)?)))
            .collect::<Result<_>>()?;
        if !old.is_empty() {
            return Err(CentralError::Conflict(format!(
                "tariff version '{}' has {what}, which gateways older than sync protocol {protocol} would not bill; upgrade these first: {}",
                version.id,
                old.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600;

    /// At one paisa per Wh, paise read as Wh: the figures in kWh carry over directly.
    fn usage(hours: i64, wh: i64) -> RecentUsage {
        RecentUsage {
            span_seconds: hours * HOUR,
            charged_paise: wh,
            energy_wh: wh,
        }
    }

    #[test]
    fn two_hours_of_readings_do_not_stretch_over_seven_days() {
        // The issue: 2 h of readings, 0.865 kWh used, 134 kWh of credit left. Dividing by 7 days
        // said 1,087 days (134 / (0.865 / 7)); the household lasts about 15 (14.8 here).
        let typical = typical_daily_wh(Category::Domestic) as f64;
        let days = estimate_days_left(134_000, &usage(2, 865), typical).unwrap();
        assert!((14.0..16.0).contains(&days), "{days}");
        // 2 h of the day at the measured rate, the other 22 h at the typical one.
        let daily = 865.0 + typical * 22.0 / 24.0;
        assert!((days - 134_000.0 / daily).abs() < 1e-9, "{days}");
    }

    #[test]
    fn a_day_or_more_of_readings_is_the_household_s_own_rate() {
        // 3 days covered, 30 kWh: 10 kWh a day, whatever the category's typical day.
        let days = estimate_days_left(134_000, &usage(72, 30_000), 1.0).unwrap();
        assert!((days - 13.4).abs() < 1e-9, "{days}");
        // Exactly a day: no typical part left.
        let days = estimate_days_left(20_000, &usage(24, 10_000), 99_999.0).unwrap();
        assert!((days - 2.0).abs() < 1e-9, "{days}");
        // A full week, as the old rule assumed.
        let days = estimate_days_left(70_000, &usage(7 * 24, 70_000), 5.0).unwrap();
        assert!((days - 7.0).abs() < 1e-9, "{days}");
    }

    #[test]
    fn no_history_is_estimated_at_the_category_s_typical_day() {
        let none = RecentUsage::default();
        let days = estimate_days_left(89_400, &none, 8_940.0).unwrap();
        assert!((days - 10.0).abs() < 1e-9, "{days}");
        // One reading (a meter just installed): no span, still the typical day.
        let one = RecentUsage {
            span_seconds: 0,
            charged_paise: 0,
            energy_wh: 0,
        };
        assert_eq!(estimate_days_left(89_400, &one, 8_940.0), Some(10.0));
    }

    #[test]
    fn the_estimate_moves_smoothly_from_typical_to_measured() {
        let typical = 8_940.0;
        let mut last = estimate_days_left(100_000, &usage(0, 0), typical).unwrap();
        for hours in 1..=48 {
            // A household using twice the typical rate.
            let wh = (2.0 * typical * hours as f64 / 24.0) as i64;
            let days = estimate_days_left(100_000, &usage(hours, wh), typical).unwrap();
            assert!(days <= last + 1e-9, "{hours} h: {days} after {last}");
            last = days;
        }
        let measured = 100_000.0 / (2.0 * typical);
        assert!((last - measured).abs() < 0.01, "{last} vs {measured}");
    }

    #[test]
    fn nothing_left_or_nothing_charged() {
        assert_eq!(estimate_days_left(-500, &usage(2, 865), 8_940.0), Some(0.0));
        assert_eq!(estimate_days_left(0, &usage(48, 1_000), 8_940.0), Some(0.0));
        // Two days of readings and no consumption: the balance is not going down.
        assert_eq!(estimate_days_left(10_000, &usage(48, 0), 8_940.0), None);
        // No history and no typical price (a tariff that charges nothing).
        assert_eq!(
            estimate_days_left(10_000, &RecentUsage::default(), 0.0),
            None
        );
    }

    #[test]
    fn typical_daily_charge_prices_the_typical_day_with_the_tariff() {
        let book = TariffBook::builtin();
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 15, 6, 0, 0).unwrap();
        for category in Category::ALL {
            let month = Month::containing(now);
            let days = i64::from(month.days());
            let bill = book.quote(category, month, typical_daily_wh(category) * days);
            let daily = typical_daily_paise(&book, category, now);
            assert!(daily > 0.0, "{category}");
            assert!(
                (daily - (bill.energy_paise + bill.duty_paise) as f64 / days as f64).abs() < 1e-9
            );
        }
    }

    #[test]
    fn the_source_says_when_the_gateway_has_never_synced() {
        assert_eq!(
            balance_source(Some("village-a"), true),
            "gateway:village-a last sync"
        );
        assert_eq!(
            balance_source(Some("village-a"), false),
            "central (gateway village-a has not synced yet)"
        );
        assert_eq!(balance_source(None, false), "central only");
    }

    use crate::testing::{central, TestCentral};
    use chrono::TimeZone;

    fn at(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 5, 30, 0).unwrap() + Duration::minutes(minute)
    }

    fn arrears(
        t: &TestCentral,
        id: &str,
        amount_paise: i64,
        minute: i64,
    ) -> Result<RechargeReceipt> {
        let request = ArrearsRequest {
            id: id.into(),
            amount_paise,
            note: Some("post-paid bill 2026-10".into()),
        };
        t.tx(move |tx| record_arrears(tx, "A1", &request, at(minute)))
    }

    fn pay(t: &TestCentral, key: &str, amount_paise: i64, minute: i64) {
        let request = RechargeRequest {
            idempotency_key: key.into(),
            account: "A1".into(),
            amount_paise,
            reference: None,
        };
        t.tx(move |tx| recharge(tx, &request, at(minute))).unwrap();
    }

    fn report(t: &TestCentral) -> Balance {
        t.tx(|tx| balance(tx, "A1", at(60), Duration::hours(6), &TariffBook::builtin()))
            .unwrap()
    }

    #[test]
    fn rupees_are_read_into_paise_exactly() {
        assert_eq!(parse_rupees("1200.00"), Some(120_000));
        assert_eq!(parse_rupees("1200"), Some(120_000));
        assert_eq!(parse_rupees("1200.5"), Some(120_050));
        assert_eq!(parse_rupees("0.07"), Some(7));
        assert_eq!(parse_rupees("12."), Some(1_200));
        for bad in [
            "",
            ".5",
            "-5",
            "+5",
            "1.234",
            "1,200",
            "12e3",
            "1.2.3",
            "99999999999999999999",
        ] {
            assert_eq!(parse_rupees(bad), None, "{bad}");
        }
    }

    #[test]
    fn arrears_are_recorded_once_per_id_and_sent_to_the_gateway() {
        let t = central();
        t.account("A1", Some("gw-a"));
        let first = arrears(&t, "postpaid-A1", 120_000, 0).unwrap();
        assert!(first.created);
        let again = arrears(&t, "postpaid-A1", 120_000, 5).unwrap();
        assert!(!again.created);
        assert_eq!(
            (again.event_id.as_str(), again.at),
            (first.event_id.as_str(), first.at)
        );
        assert!(matches!(
            arrears(&t, "postpaid-A1", 99_000, 5),
            Err(CentralError::Conflict(_))
        ));
        // An id is one request whatever its kind: a recharge under it is refused too.
        let recharge_request = RechargeRequest {
            idempotency_key: "postpaid-A1".into(),
            account: "A1".into(),
            amount_paise: 120_000,
            reference: None,
        };
        assert!(matches!(
            t.tx(move |tx| recharge(tx, &recharge_request, at(6))),
            Err(CentralError::Conflict(_))
        ));
        assert!(matches!(
            arrears(&t, "bad id", 1, 0),
            Err(CentralError::Invalid(_))
        ));
        assert!(matches!(
            arrears(&t, "zero", 0, 0),
            Err(CentralError::Invalid(_))
        ));
        let sent: Vec<DownlinkEvent> = t
            .downlink("gw-a")
            .into_iter()
            .filter(|e| matches!(e, DownlinkEvent::Ledger(_)))
            .collect();
        assert_eq!(sent.len(), 1);
        let DownlinkEvent::Ledger(event) = &sent[0] else {
            unreachable!()
        };
        assert_eq!(event.kind, gramgrid_proto::wire::WireEventKind::Arrears);
        assert_eq!(event.amount_paise, 120_000);
        // Arrears do not move the balance by themselves.
        assert_eq!(report(&t).balance_paise, 0);
    }

    #[test]
    fn central_takes_arrears_recovered_off_the_balance_as_the_gateway_does() {
        // The worked example of `ledger`: 1,200 INR of arrears, 25 % of each recharge, at most
        // 500 INR of one.
        let t = central();
        t.account("A1", Some("gw-a"));
        arrears(&t, "postpaid-A1", 120_000, 0).unwrap();
        pay(&t, "r1", 40_000, 10);
        pay(&t, "r2", 300_000, 20);
        pay(&t, "r3", 100_000, 30);
        let b = report(&t);
        assert_eq!(
            b.arrears,
            ArrearsReport {
                opening_paise: 120_000,
                recovered_paise: 85_000,
                outstanding_paise: 35_000
            }
        );
        assert_eq!(b.balance_paise, 440_000 - 85_000);
        // The gateway's position over the same events, under the same rules.
        let events = t.tx(|tx| events_of(tx, "A1")).unwrap();
        let rules = PolicyConfig::default().arrears;
        assert_eq!(
            ledger::position(&events, &rules).balance_paise,
            b.balance_paise
        );
        assert_eq!(t.tx(|tx| balance_paise(tx, "A1")).unwrap(), b.balance_paise);
        let all = t.tx(move |tx| gateway_balances(tx, None, &rules)).unwrap();
        assert_eq!(all, [("gw-a".to_owned(), "A1".to_owned(), b.balance_paise)]);
        // A published policy's arrears rules are the ones central applies.
        let mut policy = PolicyConfig::default();
        policy.arrears[0].recovery_percent = 10;
        t.tx(move |tx| publish_policy(tx, 1, &policy, at(40)))
            .unwrap();
        // 10 % of each: 40 + 300 + 100 INR = 440 INR.
        assert_eq!(report(&t).arrears.recovered_paise, 44_000);
        assert_eq!(report(&t).balance_paise, 440_000 - 44_000);
    }

    #[test]
    fn a_protected_account_s_gateway_is_told_and_so_is_its_next_one() {
        let t = central();
        t.account("A1", Some("gw-a"));
        t.account("A2", None);
        let protect = |id: &'static str, reason: Option<&'static str>| {
            t.tx(move |tx| set_protection(tx, id, reason))
        };
        let view = protect("A1", Some("life support")).unwrap();
        assert_eq!(view.protected.as_deref(), Some("life support"));
        assert_eq!(view.account.gateway.as_deref(), Some("gw-a"));
        assert!(matches!(
            protect("A1", Some("  ")),
            Err(CentralError::Invalid(_))
        ));
        assert!(matches!(
            protect("A9", Some("pump")),
            Err(CentralError::NotFound(_))
        ));
        // An account with no gateway is protected at central only until it gets one.
        protect("A2", Some("health centre")).unwrap();
        let protection = |gateway: &str| -> Vec<(String, Option<String>)> {
            t.downlink(gateway)
                .into_iter()
                .filter_map(|e| match e {
                    DownlinkEvent::AccountProtection { id, protected } => Some((id, protected)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            protection("gw-a"),
            [("A1".into(), Some("life support".into()))]
        );
        // Moved to gw-b: the new gateway learns it with the account.
        let mut moved = t.tx(|tx| account(tx, "A1")).unwrap();
        moved.gateway = Some("gw-b".into());
        t.tx(move |tx| put_account(tx, &moved, true)).unwrap();
        assert_eq!(
            protection("gw-b"),
            [("A1".into(), Some("life support".into()))]
        );
        let view = protect("A1", None).unwrap();
        assert_eq!(view.protected, None);
        assert_eq!(
            protection("gw-b"),
            [
                ("A1".into(), Some("life support".into())),
                ("A1".into(), None)
            ]
        );
        let listed = t.tx(list_accounts).unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|v| (v.account.id.as_str(), v.protected.as_deref()))
                .collect::<Vec<_>>(),
            [("A1", None), ("A2", Some("health centre"))]
        );
        assert_eq!(report(&t).protected, None);
    }
}
