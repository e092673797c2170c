//! What a gateway may originate. Every uplink record is checked against the certificate's gateway
//! id, the accounts and meters assigned to it, and bounds central sets, before it is applied.
//!
//! A gateway makes: fixed and minimum charges (ids `<gateway>:fixed:…`, `<gateway>:minimum:…`,
//! amounts no larger than the tariff allows), voucher redemptions (the signed code, verified here
//! again), alerts, overrides, relay events and decisions, breaker holds and their releases,
//! anomalies, readings of its own meters, and the audit of its technicians' actions. Anything
//! else, or anything out of bounds, is a [`Refusal`]: the exchange acknowledges the record (so it
//! cannot block the lane), applies nothing of it, and flags it in `GET /api/v1/flags`.
use super::db::Tx;
use super::flags::flag;
use super::readings::{self, MeterInfo};
use super::{CentralError, Result};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use gramgrid_core::civil::Month;
use gramgrid_core::decision::DecisionRecord;
use gramgrid_core::ledger::{EventKind, LedgerEvent};
use gramgrid_core::rating::MAX_REGISTER_WH;
use gramgrid_core::tariff::{Category, TariffBook};
use gramgrid_proto::wire::{AuditReason, EnergyAuditDay, ReadingBlock, UplinkEvent};
use std::collections::HashMap;

/// How far ahead of central's clock a gateway's timestamp may be (a gateway clock runs free while
/// the backhaul is down; more than this is a wrong clock or a forgery).
pub const MAX_AHEAD: Duration = Duration::days(1);
/// Largest power a single consumer may draw, in W: bounds a register's advance per interval.
pub const MAX_POWER_W: i64 = 200_000;
/// Longest text (alert message, anomaly detail, override reason) central stores from a gateway.
pub const MAX_TEXT_BYTES: usize = 1_000;
/// Longest id of a gateway's decision or breaker hold, and longest name of who released a hold.
pub const MAX_RECORD_ID_BYTES: usize = 200;
/// Longest decision record (JSON) central stores: it carries the policy with its holidays.
pub const MAX_DECISION_BYTES: usize = 64 * 1024;
/// Most accounts one breaker hold may name.
pub const MAX_HOLD_ACCOUNTS: usize = 20_000;
/// Most reasons one breaker hold may give.
pub const MAX_HOLD_REASONS: usize = 32;
/// Most meters one supply outage may name.
pub const MAX_OUTAGE_METERS: usize = 20_000;
/// Most 15-minute intervals one local day has (India keeps no daylight saving time).
pub const MAX_AUDIT_INTERVALS: usize = 96;
/// Highest score a gateway may give a suspect of an energy audit.
pub const MAX_AUDIT_SCORE: u32 = 100;
/// Most reasons one suspect of an energy audit may have.
pub const MAX_AUDIT_REASONS: usize = 8;

/// Why a record from a gateway was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The flag kind: `foreign_record`, `forged_money`, `forged_voucher`, `absurd_value` or
    /// `event_id_conflict`.
    pub kind: &'static str,
    /// The account concerned, when there is one.
    pub account: Option<String>,
    /// What was wrong, in the office's terms.
    pub detail: String,
}

impl Refusal {
    fn new(kind: &'static str, account: Option<&str>, detail: String) -> Refusal {
        Refusal {
            kind,
            account: account.map(str::to_owned),
            detail,
        }
    }

    /// A record whose id is already stored with other content (`event_id_conflict`): ids are
    /// never reused.
    pub fn id_conflict(account: Option<&str>, detail: String) -> Refusal {
        Refusal::new("event_id_conflict", account, detail)
    }

    /// A meter installation that does not match central's stock (`foreign_record`).
    pub fn foreign_meter(account: &str, detail: String) -> Refusal {
        Refusal::new("foreign_record", Some(account), detail)
    }

    /// A voucher that does not verify, or that central never issued.
    pub fn forged_voucher(account: Option<&str>, detail: String) -> Refusal {
        Refusal::new("forged_voucher", account, detail)
    }

    /// Raises the refusal as a flag (once per `id`).
    pub fn flag(&self, tx: &mut dyn Tx, id: &str, gateway: &str, at: DateTime<Utc>) -> Result<()> {
        flag(
            tx,
            id,
            self.kind,
            Some(gateway),
            self.account.as_deref(),
            at,
            &format!("refused from gateway '{gateway}': {}", self.detail),
        )
    }
}

/// The outcome of a check: `Ok(Ok(x))` admitted, `Ok(Err(refusal))` refused, `Err` a storage error.
pub type Checked<T> = Result<std::result::Result<T, Refusal>>;

/// What the checks know about the sending gateway, looked up once per exchange.
pub struct Origin<'a> {
    /// The gateway's id, from its client certificate.
    pub gateway: &'a str,
    /// Central's tariff book.
    pub book: &'a TariffBook,
    /// Central's clock.
    pub now: DateTime<Utc>,
    /// The lane epoch (`identity`): 0 until the gateway's database was first resynchronised.
    epoch: i64,
    accounts: HashMap<String, Option<AccountFacts>>,
    meters: HashMap<String, Option<MeterInfo>>,
}

#[derive(Debug, Clone)]
struct AccountFacts {
    gateway: Option<String>,
    category: Category,
}

impl<'a> Origin<'a> {
    /// Checks for one exchange of `gateway` in lane epoch `epoch`.
    pub fn new(
        gateway: &'a str,
        book: &'a TariffBook,
        now: DateTime<Utc>,
        epoch: i64,
    ) -> Origin<'a> {
        Origin {
            gateway,
            book,
            now,
            epoch,
            accounts: HashMap::new(),
            meters: HashMap::new(),
        }
    }

    /// The gateway's lanes as ids name them: `<gateway>`, or `<gateway>:<epoch>` after a
    /// resynchronisation, so a restored database's reused sequence numbers make new ids.
    pub fn lane_id(&self) -> String {
        if self.epoch == 0 {
            self.gateway.to_owned()
        } else {
            format!("{}:{}", self.gateway, self.epoch)
        }
    }

    /// The origin id of priority record `seq`: unique per gateway database history.
    pub fn record_id(&self, seq: u64) -> String {
        format!("{}:{seq}", self.lane_id())
    }

    /// Admits `account` when it is assigned to this gateway; returns its category.
    pub fn account(&mut self, tx: &mut dyn Tx, account: &str) -> Checked<Category> {
        if !self.accounts.contains_key(account) {
            let facts = tx
                .query_opt(
                    "SELECT gateway, category FROM accounts WHERE id = $1",
                    &[account.into()],
                )?
                .map(|row| -> Result<AccountFacts> {
                    let category = row.text(1)?;
                    Ok(AccountFacts {
                        gateway: row.opt_text(0)?,
                        category: Category::parse(&category).ok_or_else(|| {
                            CentralError::Corrupt(format!("category '{category}'"))
                        })?,
                    })
                })
                .transpose()?;
            self.accounts.insert(account.to_owned(), facts);
        }
        Ok(match self.accounts.get(account) {
            Some(Some(facts)) if facts.gateway.as_deref() == Some(self.gateway) => {
                Ok(facts.category)
            }
            Some(Some(facts)) => Err(self.foreign(
                Some(account),
                format!(
                    "account '{account}' is assigned to {}",
                    facts
                        .gateway
                        .as_deref()
                        .map_or("no gateway".to_owned(), |g| format!("gateway '{g}'"))
                ),
            )),
            _ => Err(self.foreign(Some(account), format!("account '{account}' is unknown"))),
        })
    }

    /// Admits `meter` when its account is assigned to this gateway.
    pub fn meter(&mut self, tx: &mut dyn Tx, meter: &str) -> Checked<MeterInfo> {
        if !self.meters.contains_key(meter) {
            let info = readings::meter_infos(tx, &[meter])?.remove(meter);
            self.meters.insert(meter.to_owned(), info);
        }
        Ok(self.meter_known(meter))
    }

    /// A meter whose events and power this gateway may report: one of its accounts' meters, or
    /// its transformer meter (which has no account).
    fn reporting_meter(&mut self, tx: &mut dyn Tx, meter: &str) -> Checked<()> {
        let household = self.meter(tx, meter)?;
        if household.is_ok() {
            return Ok(Ok(()));
        }
        match super::transformers::gateway_of(tx, meter)? {
            Some(owner) if owner == self.gateway => Ok(Ok(())),
            _ => Ok(household.map(drop)),
        }
    }

    /// Looks up many meters with one query each `IN` chunk (a readings batch).
    pub fn load_meters(&mut self, tx: &mut dyn Tx, serials: &[&str]) -> Result<()> {
        let infos = readings::meter_infos(tx, serials)?;
        for serial in serials {
            self.meters
                .insert((*serial).to_owned(), infos.get(*serial).cloned());
        }
        Ok(())
    }

    fn meter_known(&self, meter: &str) -> std::result::Result<MeterInfo, Refusal> {
        match self.meters.get(meter) {
            Some(Some(info)) if info.gateway.as_deref() == Some(self.gateway) => Ok(info.clone()),
            Some(Some(info)) => Err(self.foreign(
                Some(&info.account),
                format!(
                    "meter '{meter}' belongs to account '{}', which is not assigned to this gateway",
                    info.account
                ),
            )),
            _ => Err(self.foreign(None, format!("meter '{meter}' is unknown"))),
        }
    }

    fn foreign(&self, account: Option<&str>, detail: String) -> Refusal {
        Refusal::new("foreign_record", account, detail)
    }

    /// Checks a record's ownership and bounds (a voucher code's signature is checked when it is
    /// applied, against the keys in the same transaction).
    pub fn check(&mut self, tx: &mut dyn Tx, event: &UplinkEvent) -> Checked<()> {
        match event {
            UplinkEvent::Ledger(event) => {
                let event = LedgerEvent::from(event.clone());
                let category = match self.account(tx, &event.account)? {
                    Ok(category) => category,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                self.check_money(tx, &event, category)
            }
            UplinkEvent::VoucherRedeemed { voucher, .. } => {
                Ok(self.account(tx, &voucher.account)?.map(drop))
            }
            UplinkEvent::VoucherCode { redeemed_at, .. } => Ok(self.not_ahead(*redeemed_at, None)),
            UplinkEvent::Notice {
                account,
                message: text,
                created_at: at,
                vars,
                ..
            } if vars.len() > MAX_NOTICE_VARS
                || vars.iter().any(|(k, v)| k.len() + v.len() > 200) =>
            {
                Ok(self.account(tx, account)?.and_then(|_| {
                    Err(Refusal::new(
                        "absurd_value",
                        Some(account),
                        format!(
                            "a notice at {at} ('{}') carries more than {MAX_NOTICE_VARS} variables or one over 200 bytes",
                            text.chars().take(40).collect::<String>()
                        ),
                    ))
                }))
            }
            UplinkEvent::Alert {
                account,
                message: text,
                created_at: at,
                ..
            }
            | UplinkEvent::Notice {
                account,
                message: text,
                created_at: at,
                ..
            }
            | UplinkEvent::Override {
                account,
                reason: text,
                created_at: at,
                ..
            } => Ok(self.account(tx, account)?.and_then(|_| {
                self.not_ahead(*at, Some(account))?;
                short(text, Some(account))
            })),
            UplinkEvent::RelayCommand { meter, at, .. }
            | UplinkEvent::RelayState { meter, at, .. } => Ok(self
                .meter(tx, meter)?
                .and_then(|_| self.not_ahead(*at, None))),
            UplinkEvent::Anomaly { meter, detail, .. } => {
                if let Some(meter) = meter {
                    if let Err(refusal) = self.meter(tx, meter)? {
                        return Ok(Err(refusal));
                    }
                }
                Ok(short(detail, None))
            }
            UplinkEvent::ClockSkew { .. } => Ok(Ok(())),
            // Audit of what happened at the gateway: kept whatever it concerned (a technician
            // may have tried a meter of another gateway), within bounds.
            UplinkEvent::TechnicianAction {
                id,
                technician,
                action,
                subject,
                detail,
                reason,
                at,
            } => Ok(self.not_ahead(*at, None).and_then(|()| {
                if id.is_empty() {
                    return Err(Refusal::new(
                        "absurd_value",
                        None,
                        "a technician action without an id".into(),
                    ));
                }
                bounded("a technician action id", id, MAX_RECORD_ID_BYTES, None)?;
                bounded("a technician's name", technician, MAX_RECORD_ID_BYTES, None)?;
                bounded("a technician action", action, MAX_RECORD_ID_BYTES, None)?;
                if let Some(subject) = subject {
                    bounded("a technician action's subject", subject, MAX_RECORD_ID_BYTES, None)?;
                }
                short(detail, None)?;
                reason.as_deref().map_or(Ok(()), |reason| short(reason, None))
            })),
            UplinkEvent::MeterInstalled {
                id,
                serial,
                account,
                installed_at,
                first_register_wh,
                replaces,
                technician,
            } => Ok(self.account(tx, account)?.and_then(|_| {
                self.not_ahead(*installed_at, Some(account))?;
                bounded("an installation id", id, MAX_RECORD_ID_BYTES, Some(account))?;
                bounded("a meter serial", serial, MAX_RECORD_ID_BYTES, Some(account))?;
                bounded("a technician's name", technician, MAX_RECORD_ID_BYTES, Some(account))?;
                if let Some(old) = replaces {
                    bounded("a meter serial", old, MAX_RECORD_ID_BYTES, Some(account))?;
                }
                if let Some(register) = first_register_wh {
                    if !(0..=gramgrid_core::rating::MAX_REGISTER_WH).contains(register) {
                        return Err(Refusal::new(
                            "absurd_value",
                            Some(account),
                            format!("meter {serial} installed with a register of {register} Wh"),
                        ));
                    }
                }
                Ok(())
            })),
            UplinkEvent::MeterEvent {
                id, meter, kind, at, ..
            } => Ok(self.reporting_meter(tx, meter)?.and_then(|()| {
                self.not_ahead(*at, None)?;
                bounded("a meter event id", id, MAX_RECORD_ID_BYTES, None)?;
                bounded("a meter event kind", kind, MAX_RECORD_ID_BYTES, None)
            })),
            UplinkEvent::SupplyOutage {
                id,
                started_at,
                ended_at,
                meters,
            } => {
                if meters.len() > MAX_OUTAGE_METERS {
                    return Ok(Err(Refusal::new(
                        "absurd_value",
                        None,
                        format!("an outage of {} meters", meters.len()),
                    )));
                }
                for meter in meters {
                    if let Err(refusal) = self.reporting_meter(tx, meter)? {
                        return Ok(Err(refusal));
                    }
                }
                Ok(self.not_ahead(*started_at, None).and_then(|()| {
                    bounded("an outage id", id, MAX_RECORD_ID_BYTES, None)?;
                    match ended_at {
                        Some(end) if end < started_at => Err(Refusal::new(
                            "absurd_value",
                            None,
                            format!("outage {id} ends at {end}, before it started at {started_at}"),
                        )),
                        _ => Ok(()),
                    }
                }))
            }
            UplinkEvent::SanctionedLoadExceeded {
                id,
                account,
                month,
                at,
                ..
            } => Ok(self.account(tx, account)?.and_then(|_| {
                self.not_ahead(*at, Some(account))?;
                bounded("an overload id", id, MAX_RECORD_ID_BYTES, Some(account))?;
                match Month::parse(month) {
                    Some(_) => Ok(()),
                    None => Err(Refusal::new(
                        "absurd_value",
                        Some(account),
                        format!("'{month}' is not a month (YYYY-MM)"),
                    )),
                }
            })),
            UplinkEvent::EnergyAudit(day) => self.energy_audit(tx, day),
            UplinkEvent::Decision {
                id,
                account,
                at,
                record,
            } => Ok(self.account(tx, account)?.and_then(|_| {
                self.not_ahead(*at, Some(account))?;
                bounded("a decision id", id, MAX_RECORD_ID_BYTES, Some(account))?;
                decision_record(account, record).map(drop)
            })),
            UplinkEvent::BreakerHeld {
                id,
                at,
                accounts,
                reasons,
            } => {
                if accounts.is_empty() || accounts.len() > MAX_HOLD_ACCOUNTS {
                    return Ok(Err(Refusal::new(
                        "absurd_value",
                        None,
                        format!(
                            "breaker hold '{}' names {} accounts (1 to {MAX_HOLD_ACCOUNTS})",
                            id.chars().take(MAX_RECORD_ID_BYTES).collect::<String>(),
                            accounts.len()
                        ),
                    )));
                }
                for account in accounts {
                    if let Err(refusal) = self.account(tx, account)? {
                        return Ok(Err(refusal));
                    }
                }
                Ok(self.not_ahead(*at, None).and_then(|()| {
                    bounded("a breaker hold id", id, MAX_RECORD_ID_BYTES, None)?;
                    if reasons.len() > MAX_HOLD_REASONS {
                        return Err(Refusal::new(
                            "absurd_value",
                            None,
                            format!(
                                "breaker hold '{id}' gives {} reasons (at most {MAX_HOLD_REASONS})",
                                reasons.len()
                            ),
                        ));
                    }
                    reasons.iter().try_for_each(|r| short(r, None))
                }))
            }
            UplinkEvent::BreakerReleased {
                hold_id,
                by,
                reason,
                at,
            } => {
                let bounds = self.not_ahead(*at, None).and_then(|()| {
                    bounded("a breaker hold id", hold_id, MAX_RECORD_ID_BYTES, None)?;
                    bounded("who released a hold", by, MAX_RECORD_ID_BYTES, None)?;
                    short(reason, None)
                });
                if let Err(refusal) = bounds {
                    return Ok(Err(refusal));
                }
                if !super::holds::is_breaker_hold(tx, self.gateway, hold_id)? {
                    return Ok(Err(self.foreign(
                        None,
                        format!("breaker hold '{hold_id}' released at the gateway is not a hold of this gateway"),
                    )));
                }
                Ok(Ok(()))
            }
        }
    }

    /// An energy audit: of this gateway's own transformer meter, under its own id, of a real
    /// day, within bounds, naming as suspects only meters of accounts this gateway serves.
    fn energy_audit(&mut self, tx: &mut dyn Tx, day: &EnergyAuditDay) -> Checked<()> {
        let own_id = format!("{}:audit:{}:{}", self.gateway, day.transformer, day.day);
        if day.id != own_id {
            return Ok(Err(self.foreign(
                None,
                format!(
                    "energy audit id '{}' is not {own_id}",
                    day.id.chars().take(MAX_RECORD_ID_BYTES).collect::<String>()
                ),
            )));
        }
        if let Err(refusal) = audit_bounds(day).and_then(|()| self.not_ahead(day.at, None)) {
            return Ok(Err(refusal));
        }
        match super::transformers::gateway_of(tx, &day.transformer)? {
            Some(owner) if owner == self.gateway => {}
            Some(owner) => {
                return Ok(Err(self.foreign(
                    None,
                    format!(
                        "energy audit of transformer meter '{}', which is gateway '{owner}'s",
                        day.transformer
                    ),
                )))
            }
            None => {
                return Ok(Err(self.foreign(
                    None,
                    format!(
                        "energy audit of '{}', which is not a transformer meter",
                        day.transformer
                    ),
                )))
            }
        }
        for suspect in &day.suspects {
            let info = match self.meter(tx, &suspect.meter)? {
                Ok(info) => info,
                Err(refusal) => return Ok(Err(refusal)),
            };
            if info.account != suspect.account {
                return Ok(Err(self.foreign(
                    Some(&info.account),
                    format!(
                        "energy audit {}: suspect meter '{}' is on account '{}', not '{}'",
                        day.id, suspect.meter, info.account, suspect.account
                    ),
                )));
            }
        }
        Ok(Ok(()))
    }

    fn not_ahead(
        &self,
        at: DateTime<Utc>,
        account: Option<&str>,
    ) -> std::result::Result<(), Refusal> {
        if at > self.now + MAX_AHEAD {
            return Err(Refusal::new(
                "absurd_value",
                account,
                format!(
                    "time {at} is more than a day ahead of central's clock ({})",
                    self.now
                ),
            ));
        }
        Ok(())
    }

    /// A gateway may charge fixed, minimum and demand charges under its own ids, within the
    /// tariff's amounts, and may repeat a voucher recharge central issued (outbox format 1).
    fn check_money(&self, tx: &mut dyn Tx, event: &LedgerEvent, category: Category) -> Checked<()> {
        let account = Some(event.account.as_str());
        if let Err(refusal) = self.not_ahead(event.at, account) {
            return Ok(Err(refusal));
        }
        let forged = |detail: String| Ok(Err(Refusal::new("forged_money", account, detail)));
        // A day's share or a month's top-up is at most the monthly amount of some version of the
        // category (the gateway may not hold central's newest version yet, so the exact amount is
        // not required).
        let ceiling = match event.kind {
            EventKind::FixedCharge => {
                if self
                    .own_id(event, "fixed")
                    .is_none_or(|d| d.parse::<NaiveDate>().is_err())
                {
                    return forged(format!(
                        "fixed charge id '{}' is not {}:fixed:{}:<date>",
                        event.id, self.gateway, event.account
                    ));
                }
                max_of(self.book, category, |v| v.fixed_monthly_paise)
            }
            EventKind::MinimumCharge => {
                if self
                    .own_id(event, "minimum")
                    .and_then(Month::parse)
                    .is_none()
                {
                    return forged(format!(
                        "minimum charge id '{}' is not {}:minimum:{}:<month>",
                        event.id, self.gateway, event.account
                    ));
                }
                max_of(self.book, category, |v| v.minimum_monthly_paise)
            }
            EventKind::DemandCharge => {
                if self
                    .own_id(event, "demand")
                    .and_then(Month::parse)
                    .is_none()
                {
                    return forged(format!(
                        "demand charge id '{}' is not {}:demand:{}:<month>",
                        event.id, self.gateway, event.account
                    ));
                }
                // At most the highest rate on the most power a consumer may draw.
                max_of(self.book, category, |v| v.demand_paise_per_kw)
                    .saturating_mul(MAX_POWER_W / 1000)
            }
            EventKind::ExportCredit => {
                if self
                    .own_id(event, "export")
                    .and_then(Month::parse)
                    .is_none()
                {
                    return forged(format!(
                        "export credit id '{}' is not {}:export:{}:<month>",
                        event.id, self.gateway, event.account
                    ));
                }
                // Only where a tariff banks export; at most a year's bank of the most power a
                // connection may carry, at the highest rate with duty doubling it.
                max_of(self.book, category, |v| {
                    let top_slab = v.slabs.iter().map(|s| s.paise_per_kwh).max().unwrap_or(0);
                    if v.export_banking {
                        top_slab.max(v.export_settlement_paise_per_kwh)
                    } else {
                        0
                    }
                })
                .saturating_mul(2 * MAX_POWER_W / 1000 * 24 * 366)
            }
            EventKind::Recharge if event.id.starts_with("voucher:") => {
                return issued_voucher_recharge(tx, event);
            }
            other => {
                return forged(format!(
                    "a gateway may not originate a {} ({} paise, id '{}')",
                    other.as_str(),
                    event.amount_paise,
                    event.id
                ))
            }
        };
        if event.amount_paise <= 0 || event.amount_paise > ceiling {
            return forged(format!(
                "{} of {} paise is outside 1 to {ceiling} paise, the most the tariff allows",
                event.kind.as_str(),
                event.amount_paise
            ));
        }
        Ok(Ok(()))
    }

    /// The tail of an id `<gateway>:<kind>:<account>:<tail>`, if the id has that form.
    fn own_id<'e>(&self, event: &'e LedgerEvent, kind: &str) -> Option<&'e str> {
        event
            .id
            .strip_prefix(self.gateway)?
            .strip_prefix(':')?
            .strip_prefix(kind)?
            .strip_prefix(':')?
            .strip_prefix(event.account.as_str())?
            .strip_prefix(':')
    }

    /// Checks a readings block's meter and the plausibility of its registers.
    pub fn check_block(&self, block: &ReadingBlock) -> std::result::Result<MeterInfo, Refusal> {
        let info = self.meter_known(&block.meter)?;
        self.check_bounds(block, &info)?;
        Ok(info)
    }

    /// For a meter whose account was moved away from this gateway: the readings of `block` taken
    /// before the move (plausible ones only), the meter, and the gateway that serves it now. These
    /// are still taken, and handed to the new gateway.
    pub fn moved_away_part(
        &self,
        block: &ReadingBlock,
    ) -> Option<(MeterInfo, String, Vec<ReadingBlock>)> {
        let Some(Some(info)) = self.meters.get(&block.meter) else {
            return None;
        };
        let (from, moved_at) = info.moved_from.as_ref()?;
        let to = info.gateway.clone()?;
        if from != self.gateway || to == self.gateway || self.check_bounds(block, info).is_err() {
            return None;
        }
        let before: Vec<(String, i64, i64)> = block
            .readings()
            .filter(|(at, _)| at <= moved_at)
            .map(|(at, register)| (block.meter.clone(), at, register))
            .collect();
        (!before.is_empty()).then(|| (info.clone(), to, ReadingBlock::group(before)))
    }

    fn check_bounds(
        &self,
        block: &ReadingBlock,
        info: &MeterInfo,
    ) -> std::result::Result<(), Refusal> {
        let absurd =
            |detail: String| Err(Refusal::new("absurd_value", Some(&info.account), detail));
        if block.interval_s == 0 || block.interval_s > 86_400 {
            return absurd(format!(
                "meter '{}': reading interval {} s is not 1 s to 1 day",
                block.meter, block.interval_s
            ));
        }
        let last_at = i64::try_from(block.register_deltas.len())
            .ok()
            .and_then(|n| n.checked_mul(i64::from(block.interval_s)))
            .and_then(|span| block.first_at.checked_add(span));
        if last_at.is_none_or(|last| last > gramgrid_core::civil::ts(self.now + MAX_AHEAD)) {
            return absurd(format!(
                "meter '{}': readings reach beyond a day ahead of central's clock",
                block.meter
            ));
        }
        if !(0..=MAX_REGISTER_WH).contains(&block.first_register_wh) {
            return absurd(format!(
                "meter '{}': register {} Wh is outside 0 to {MAX_REGISTER_WH} Wh",
                block.meter, block.first_register_wh
            ));
        }
        let max_step = MAX_POWER_W * i64::from(block.interval_s) / 3600;
        let mut register = block.first_register_wh;
        for delta in &block.register_deltas {
            register += delta.clamp(&-MAX_REGISTER_WH, &MAX_REGISTER_WH);
            if *delta > max_step || !(0..=MAX_REGISTER_WH).contains(&register) {
                return absurd(format!(
                    "meter '{}': a register step of {delta} Wh in {} s (more than {MAX_POWER_W} W) or a register outside 0 to {MAX_REGISTER_WH} Wh",
                    block.meter, block.interval_s
                ));
            }
        }
        Ok(())
    }
}

fn max_of(
    book: &TariffBook,
    category: Category,
    field: impl Fn(&gramgrid_core::tariff::TariffVersion) -> i64,
) -> i64 {
    book.versions()
        .iter()
        .filter(|v| v.category == category)
        .map(field)
        .max()
        .unwrap_or(0)
}

/// The figures of an energy audit within bounds: a real day, at most a day's intervals, energies
/// no meter could exceed, scores on their scale, texts and lists bounded.
fn audit_bounds(day: &EnergyAuditDay) -> std::result::Result<(), Refusal> {
    let absurd = |detail: String| Err(Refusal::new("absurd_value", None, detail));
    let id = &day.id;
    bounded("an energy audit id", id, MAX_RECORD_ID_BYTES, None)?;
    if super::energy_audit::parse_day(&day.day).is_none() {
        return absurd(format!(
            "energy audit {id}: '{}' is not a day (YYYY-MM-DD)",
            day.day
        ));
    }
    let intervals = usize::try_from(day.intervals_compared).unwrap_or(usize::MAX);
    if day.interval_loss_wh.len() > MAX_AUDIT_INTERVALS || intervals > MAX_AUDIT_INTERVALS {
        return absurd(format!(
            "energy audit {id}: {} interval losses and {intervals} intervals compared (a day has {MAX_AUDIT_INTERVALS})",
            day.interval_loss_wh.len()
        ));
    }
    let energy = (0..=MAX_REGISTER_WH).contains(&day.transformer_wh)
        && (0..=MAX_REGISTER_WH).contains(&day.consumers_wh)
        && (0..=MAX_REGISTER_WH).contains(&day.allowance_wh)
        && day
            .interval_loss_wh
            .iter()
            .flatten()
            .all(|loss| loss.abs() <= MAX_REGISTER_WH);
    if !energy {
        return absurd(format!(
            "energy audit {id}: an energy outside 0 to {MAX_REGISTER_WH} Wh"
        ));
    }
    let meters = usize::try_from(day.meters).unwrap_or(usize::MAX);
    if meters > MAX_OUTAGE_METERS || day.suspects.len() > MAX_OUTAGE_METERS {
        return absurd(format!(
            "energy audit {id}: {meters} meters and {} suspects (at most {MAX_OUTAGE_METERS} each)",
            day.suspects.len()
        ));
    }
    for suspect in &day.suspects {
        bounded("a meter serial", &suspect.meter, MAX_RECORD_ID_BYTES, None)?;
        bounded("an account id", &suspect.account, MAX_RECORD_ID_BYTES, None)?;
        if suspect.score > MAX_AUDIT_SCORE || suspect.reasons.len() > MAX_AUDIT_REASONS {
            return absurd(format!(
                "energy audit {id}: suspect {} scored {} (0 to {MAX_AUDIT_SCORE}) with {} reasons (at most {MAX_AUDIT_REASONS})",
                suspect.meter,
                suspect.score,
                suspect.reasons.len()
            ));
        }
        for reason in &suspect.reasons {
            match reason {
                AuditReason::Tamper { kinds } => {
                    if kinds.len() > MAX_AUDIT_REASONS {
                        return absurd(format!(
                            "energy audit {id}: suspect {} with {} tamper kinds",
                            suspect.meter,
                            kinds.len()
                        ));
                    }
                    for kind in kinds {
                        bounded("a meter event kind", kind, MAX_RECORD_ID_BYTES, None)?;
                    }
                }
                AuditReason::NearZero { recorded_wh }
                    if !(0..=MAX_REGISTER_WH).contains(recorded_wh) =>
                {
                    return absurd(format!(
                        "energy audit {id}: suspect {} recorded {recorded_wh} Wh",
                        suspect.meter
                    ));
                }
                AuditReason::FallsWithLoss {
                    usual_wh,
                    recorded_wh,
                } if ![usual_wh, recorded_wh]
                    .iter()
                    .all(|wh| (0..=MAX_REGISTER_WH).contains(*wh)) =>
                {
                    return absurd(format!(
                        "energy audit {id}: suspect {} recorded {recorded_wh} Wh against {usual_wh} Wh usually",
                        suspect.meter
                    ));
                }
                AuditReason::NearZero { .. } | AuditReason::FallsWithLoss { .. } => {}
            }
        }
    }
    Ok(())
}

/// Most variables a notice may carry (the richest template has two).
const MAX_NOTICE_VARS: usize = 8;

fn short(text: &str, account: Option<&str>) -> std::result::Result<(), Refusal> {
    bounded("a text", text, MAX_TEXT_BYTES, account)
}

/// Refuses `what` longer than `max` bytes.
fn bounded(
    what: &str,
    text: &str,
    max: usize,
    account: Option<&str>,
) -> std::result::Result<(), Refusal> {
    if text.len() > max {
        return Err(Refusal::new(
            "absurd_value",
            account,
            format!("{what} of {} bytes (at most {max})", text.len()),
        ));
    }
    Ok(())
}

/// A gateway's decision record for `account`: at most [`MAX_DECISION_BYTES`], a
/// [`DecisionRecord`] in JSON, about that account.
pub fn decision_record(account: &str, text: &str) -> std::result::Result<DecisionRecord, Refusal> {
    bounded("a decision record", text, MAX_DECISION_BYTES, Some(account))?;
    let record: DecisionRecord = serde_json::from_str(text).map_err(|e| {
        Refusal::new(
            "absurd_value",
            Some(account),
            format!("a decision record that is not one: {e}"),
        )
    })?;
    if record.account != account {
        return Err(Refusal::new(
            "foreign_record",
            Some(account),
            format!(
                "a decision sent for account '{account}' records account '{}'",
                record.account
            ),
        ));
    }
    Ok(record)
}

/// A voucher recharge sent as a plain money event (outbox format 1) is admitted only when central
/// issued that voucher, for that account and amount.
fn issued_voucher_recharge(tx: &mut dyn Tx, event: &LedgerEvent) -> Checked<()> {
    let issued = tx
        .query_opt(
            "SELECT account, amount_paise FROM vouchers WHERE redemption_id = $1",
            &[event.id.as_str().into()],
        )?
        .map(|row| -> Result<(String, i64)> { Ok((row.text(0)?, row.int(1)?)) })
        .transpose()?;
    match issued {
        Some((account, amount)) if account == event.account && amount == event.amount_paise => {
            Ok(Ok(()))
        }
        _ => Ok(Err(Refusal::new(
            "forged_money",
            Some(&event.account),
            format!(
                "recharge '{}' of {} paise names no voucher central issued for this account and amount",
                event.id, event.amount_paise
            ),
        ))),
    }
}
