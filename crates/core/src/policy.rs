//! Enforcement policy: from an account's facts and "now", decide alerts and relay actions.
//!
//! Pure: no clock, no I/O. The rules:
//! - **Reconnect** as soon as the balance is above the disconnect threshold (lowered by any active
//!   emergency credit), at any hour.
//! - **Disconnect** only when the balance is at or below that threshold *and* now is inside an allowed
//!   disconnect window (cron expressions in Asia/Kolkata time), not on a holiday, at or after the first
//!   window the grace rule allows (CSPDCL practice: the day after the threshold was crossed), and only
//!   on a clock the gateway trusts. A disconnect that is due but held back says why. A disconnect
//!   already in flight that these rules no longer want (recharged, window closed) is withdrawn, and
//!   one that is sent carries the end of its run of allowed minutes as its deadline.
//! - **Protected accounts** (life support, a health centre, the village water pump) are never
//!   disconnected automatically; the gateway tells the office instead.
//! - **Partial payment**: after a cut, a payment of at least a configured share of the debt reconnects
//!   and gives a configured number of days to pay the rest before the next disconnect
//!   ([`PartialPaymentRule`], effective-dated; tiers by share paid).
//! - **Load-limit trip** (`[load] trip_after_intervals`, off by default): a household that drew more
//!   than its sanctioned load for that many consecutive intervals is disconnected for the lockout
//!   and then reconnected, like a prepaid meter's load limiter ([`crate::demand::LoadTrip`]). The
//!   trip is a disconnect like any other: only in a window, not on a holiday, on a trusted clock,
//!   not during a supply outage, never for a protected account. It does not come into it when the
//!   balance rules cut the supply anyway; a recharge does not end its lockout, and after the
//!   lockout the balance rules decide again (an exhausted balance keeps the supply off).
//! - **Manual override** by a technician (an audited event) wins over all of these until it expires.
//! - **Alerts** when the balance falls to each configured share of the last recharge (30 %, 10 %,
//!   0 % by default), each at most once per recharge, plus a daily balance message.
use crate::breaker::BreakerConfig;
use crate::civil;
use crate::demand::LoadTrip;
use crate::ledger::{ArrearsRule, LastRecharge};
use crate::outage::{self, OutageSpan};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Policy settings (the `[policy]` table of the gateway config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Alert when the balance falls to these percentages of the last recharge.
    pub alert_levels_percent: Vec<u8>,
    /// Supply may be cut when the balance is at or below this (paise; zero or negative).
    pub disconnect_threshold_paise: i64,
    /// Minutes in which a disconnect may be carried out, as cron expressions in Asia/Kolkata time
    /// (sec min hour day-of-month month day-of-week).
    pub disconnect_windows: Vec<Window>,
    /// The earliest a disconnect may act after the threshold is crossed: "next-day" or a duration.
    pub first_disconnect: Grace,
    /// Local dates on which no disconnect happens.
    pub holidays: Vec<NaiveDate>,
    /// Local time of day at which the daily balance message is due.
    pub daily_message_at: NaiveTime,
    /// The disconnection circuit breaker.
    pub breaker: BreakerConfig,
    /// How arrears carried over from post-paid are recovered from recharges (effective-dated).
    pub arrears: Vec<ArrearsRule>,
    /// Reconnection after a partial payment of the debt (effective-dated tiers; none: off).
    pub partial_payment: Vec<PartialPaymentRule>,
}

/// A tier of the partial-payment rule: a payment of at least `min_paid_percent` of the debt at the
/// cut reconnects, and the rest is due within `days_to_pay_rest` days of the payment. Of the rules
/// with the latest `effective_from` on or before the payment's date, the tier with the most days
/// that the payment reaches applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialPaymentRule {
    /// First local date the tier applies.
    pub effective_from: NaiveDate,
    /// Share of the debt that must be paid, in percent (1 to 100).
    pub min_paid_percent: u8,
    /// Days from the payment to pay the rest before the next disconnect.
    pub days_to_pay_rest: u16,
}

/// An account whose supply was cut with a debt, and what it has paid since (facts for the
/// partial-payment rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrangement {
    /// How far below the disconnect threshold the balance was when the supply was cut (paise).
    pub debt_paise: i64,
    /// Recharges since the cut, as credit (after any arrears share), in paise.
    pub paid_paise: i64,
    /// The latest of those recharges, if any.
    pub last_paid_at: Option<DateTime<Utc>>,
}

/// The end of the time to pay the rest granted by a partial payment, if the payment reaches a tier.
pub fn partial_payment_until(
    rules: &[PartialPaymentRule],
    arrangement: &Arrangement,
) -> Option<DateTime<Utc>> {
    let paid_at = arrangement.last_paid_at?;
    if arrangement.debt_paise <= 0 || arrangement.paid_paise <= 0 {
        return None;
    }
    let date = civil::local_date(paid_at);
    let in_force = rules
        .iter()
        .filter(|r| r.effective_from <= date)
        .map(|r| r.effective_from)
        .max()?;
    rules
        .iter()
        .filter(|r| r.effective_from == in_force)
        .filter(|r| {
            i128::from(arrangement.paid_paise) * 100
                >= i128::from(arrangement.debt_paise) * i128::from(r.min_paid_percent)
        })
        .map(|r| paid_at + Duration::days(i64::from(r.days_to_pay_rest)))
        .max()
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let holidays = [
            (2026, 1, 26),
            (2026, 8, 15),
            (2026, 10, 2),
            (2027, 1, 26),
            (2027, 8, 15),
            (2027, 10, 2),
        ];
        PolicyConfig {
            alert_levels_percent: vec![30, 10, 0],
            disconnect_threshold_paise: 0,
            disconnect_windows: vec![
                Window::from_str(DEFAULT_WINDOW).unwrap_or_else(|e| unreachable!("{e}"))
            ],
            first_disconnect: Grace::NextDay,
            holidays: holidays
                .iter()
                .filter_map(|(y, m, d)| NaiveDate::from_ymd_opt(*y, *m, *d))
                .collect(),
            daily_message_at: NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default(),
            breaker: BreakerConfig::default(),
            arrears: ArrearsRule::default_rules(),
            partial_payment: Vec::new(),
        }
    }
}

/// The highest disconnect threshold a policy may set: a cut while 1,000 INR are left.
pub const MAX_THRESHOLD_PAISE: i64 = 100_000;

/// Working days (Monday to Saturday), 10:00 to 13:59 local time.
const DEFAULT_WINDOW: &str = "0 * 10-13 * * Mon-Sat";

impl PolicyConfig {
    /// Checks what serde cannot: thresholds, levels, shares and tiers in range.
    pub fn validate(&self) -> Result<(), String> {
        if self.disconnect_threshold_paise > MAX_THRESHOLD_PAISE {
            return Err(format!(
                "policy.disconnect_threshold_paise = {} is above the most allowed, {MAX_THRESHOLD_PAISE} (1,000 INR)",
                self.disconnect_threshold_paise
            ));
        }
        self.breaker.validate()?;
        ArrearsRule::validate(&self.arrears)?;
        if let Some(rule) = self
            .partial_payment
            .iter()
            .find(|r| r.min_paid_percent == 0 || r.min_paid_percent > 100)
        {
            return Err(format!(
                "policy.partial_payment from {}: min_paid_percent = {} must be 1 to 100",
                rule.effective_from, rule.min_paid_percent
            ));
        }
        if let Some(level) = self.alert_levels_percent.iter().find(|l| **l > 100) {
            return Err(format!(
                "policy.alert_levels_percent contains {level}; levels are 0 to 100"
            ));
        }
        Ok(())
    }
}

/// A disconnect window: a cron expression matched minute by minute in Asia/Kolkata time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Window {
    expression: String,
    schedule: cron::Schedule,
}

impl FromStr for Window {
    type Err = String;
    fn from_str(expression: &str) -> Result<Window, String> {
        let schedule = cron::Schedule::from_str(expression).map_err(|e| {
            format!("'{expression}' is not a cron expression (sec min hour day month weekday, e.g. \"{DEFAULT_WINDOW}\"): {e}")
        })?;
        Ok(Window {
            expression: expression.to_string(),
            schedule,
        })
    }
}

impl TryFrom<String> for Window {
    type Error = String;
    fn try_from(text: String) -> Result<Window, String> {
        Window::from_str(&text)
    }
}

impl From<Window> for String {
    fn from(window: Window) -> String {
        window.expression
    }
}

impl Window {
    /// Whether the minute containing `at` is inside this window.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let local = civil::local(at);
        let minute = local
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(local);
        self.schedule.includes(minute)
    }
}

/// How long after crossing the threshold the first disconnect may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Grace {
    /// Not before the local day after the crossing (CSPDCL practice).
    NextDay,
    /// Not before this long after the crossing.
    After(std::time::Duration),
}

impl TryFrom<String> for Grace {
    type Error = String;
    fn try_from(text: String) -> Result<Grace, String> {
        if text == "next-day" {
            return Ok(Grace::NextDay);
        }
        humantime::parse_duration(&text)
            .map(Grace::After)
            .map_err(|e| {
                format!("'{text}' is neither \"next-day\" nor a duration such as \"6h\": {e}")
            })
    }
}

impl From<Grace> for String {
    fn from(grace: Grace) -> String {
        match grace {
            Grace::NextDay => "next-day".into(),
            Grace::After(d) => humantime::format_duration(d).to_string(),
        }
    }
}

impl Grace {
    /// The earliest instant a disconnect may act for a threshold crossed at `crossed`.
    pub fn earliest(self, crossed: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Grace::NextDay => {
                civil::start_of_local_day(civil::local_date(crossed) + Duration::days(1))
            }
            Grace::After(d) => crossed + Duration::from_std(d).unwrap_or(Duration::MAX),
        }
    }
}

/// What the relay is, as far as the gateway knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    /// The meter reported its relay closed: supply on.
    Connected,
    /// The meter reported its relay open: supply cut.
    Disconnected,
    /// Not known: the meter has not reported its relay state.
    Unknown,
}

/// A command to the meter's relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayAction {
    /// Close the relay: restore supply.
    Connect,
    /// Open the relay: cut supply.
    Disconnect,
}

impl RelayAction {
    /// The relay state this action produces.
    pub fn target(self) -> RelayState {
        match self {
            RelayAction::Connect => RelayState::Connected,
            RelayAction::Disconnect => RelayState::Disconnected,
        }
    }
}

/// A technician's manual override, in force until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// The relay action the technician imposed.
    pub action: RelayAction,
    /// When the override lapses (UTC); it is ignored from this instant on.
    pub until: DateTime<Utc>,
}

/// Everything the policy looks at for one account (stored with every relay decision, so the
/// decision can be replayed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountFacts {
    /// Current balance, in paise (see [`crate::ledger::Position`]).
    pub balance_paise: i64,
    /// The latest recharge: the base of the low-balance alert levels.
    pub last_recharge: Option<LastRecharge>,
    /// Emergency credit in force now, in paise; lowers the threshold.
    pub emergency_credit_paise: i64,
    /// Average charges per day over the recent past, in paise, if known.
    pub daily_consumption_paise: Option<i64>,
    /// The relay state last reported by the meter.
    pub relay: RelayState,
    /// The action of a command that is still in flight, if any.
    pub pending: Option<RelayAction>,
    /// When the balance was first seen at or below the threshold in the current episode.
    pub below_threshold_since: Option<DateTime<Utc>>,
    /// A technician's override, if one was recorded (ignored once expired).
    pub manual_override: Option<Override>,
    /// False while the gateway doubts its clock (e.g. after a power cut with no backhaul).
    pub clock_trusted: bool,
    /// Never disconnected automatically (life support, health centre, water pump).
    #[serde(default)]
    pub protected: bool,
    /// The supply was cut with a debt: what has been paid since (partial-payment rule).
    #[serde(default)]
    pub arrangement: Option<Arrangement>,
    /// Supply outages of the transformer or feeder since the threshold was crossed (or going on):
    /// their hours do not count towards the grace, and none is disconnected while one lasts
    /// ([`crate::outage`]).
    #[serde(default)]
    pub outages: Vec<OutageSpan>,
    /// The load-limit trip's facts, when the trip is on and the account has a sanctioned load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadTrip>,
}

/// Why a due disconnect was not carried out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// Now is in no disconnect window.
    OutsideWindow,
    /// Today (local date) is a configured holiday.
    Holiday,
    /// The grace period after the threshold was crossed has not ended.
    Grace {
        /// The earliest instant (UTC) a disconnect may act.
        until: DateTime<Utc>,
    },
    /// The gateway does not trust its clock (see [`crate::clock`]).
    ClockUntrusted,
    /// A technician's connect override is in force.
    ManualOverride,
    /// The account is protected: never disconnected automatically.
    Protected,
    /// A partial payment reconnected the supply; the rest is due by `until`.
    PartialPayment {
        /// The end of the time to pay the rest (UTC).
        until: DateTime<Utc>,
    },
    /// A supply outage of the transformer or feeder is going on: the meters are dark.
    SupplyOutage,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::OutsideWindow => write!(f, "outside every disconnect window"),
            Hold::Holiday => write!(f, "a holiday"),
            Hold::Grace { until } => write!(f, "in the grace period until {until}"),
            Hold::ClockUntrusted => write!(f, "the clock is not trusted"),
            Hold::ManualOverride => write!(f, "a technician's connect override"),
            Hold::Protected => write!(f, "a protected account (never cut automatically)"),
            Hold::PartialPayment { until } => {
                write!(f, "a partial payment; the rest is due by {until}")
            }
            Hold::SupplyOutage => write!(f, "a supply outage on the transformer or feeder"),
        }
    }
}

/// A low-balance alert: the balance reached `level_percent` of recharge `recharge_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowBalance {
    /// The configured alert level reached, in percent of the recharge amount.
    pub level_percent: u8,
    /// Ledger event id of the recharge the level refers to.
    pub recharge_id: String,
}

/// What the policy decided for one account at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Every level reached (the outbox keeps each once).
    pub low_balance: Vec<LowBalance>,
    /// Days until the balance reaches the threshold at the daily consumption, floored to 0.1 day;
    /// None without a positive daily consumption.
    pub days_left: Option<f64>,
    /// The relay command to issue now, if any.
    pub relay: Option<RelayAction>,
    /// Set when a disconnect is due but held back.
    pub hold: Option<Hold>,
    /// The new value of "below threshold since" to keep for the next decision.
    pub below_threshold_since: Option<DateTime<Utc>>,
    /// The local date whose daily balance message is due (the outbox keeps each once).
    pub daily_message: Option<NaiveDate>,
    /// A disconnect is in flight (`facts.pending`) that the rules do not want now (balance back
    /// above the threshold, outside every window, holiday, grace, untrusted clock, a technician's
    /// connect override): the gateway withdraws it before the meter carries it out.
    pub withdraw_disconnect: bool,
    /// Set when the load-limit trip, not the balance, decided the relay (a trip, or a lockout
    /// keeping the supply off): the end of its lockout.
    pub load_trip: Option<DateTime<Utc>>,
}

/// How far [`disconnect_allowed_until`] looks ahead, in minutes (24 h).
const UNTIL_HORIZON_MINUTES: i64 = 24 * 60;

/// Whether a disconnect may be carried out at `now`, or why not.
pub fn disconnect_allowed(config: &PolicyConfig, now: DateTime<Utc>) -> Result<(), Hold> {
    if config.holidays.contains(&civil::local_date(now)) {
        return Err(Hold::Holiday);
    }
    if !config.disconnect_windows.iter().any(|w| w.contains(now)) {
        return Err(Hold::OutsideWindow);
    }
    Ok(())
}

/// The end of the run of allowed minutes that contains `now`: the first instant after `now` at
/// which a disconnect is no longer allowed (a window closes, a holiday begins), or None if none is
/// allowed now. The scan stops 24 h after the start of `now`'s minute and returns that instant: a
/// deadline earlier than the run's real end only makes a disconnect more cautious.
pub fn disconnect_allowed_until(
    config: &PolicyConfig,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    disconnect_allowed(config, now).ok()?;
    let minute = DateTime::from_timestamp(now.timestamp().div_euclid(60) * 60, 0)?;
    let horizon = minute.checked_add_signed(Duration::minutes(UNTIL_HORIZON_MINUTES))?;
    (1..UNTIL_HORIZON_MINUTES)
        .map(|k| minute + Duration::minutes(k))
        .find(|t| disconnect_allowed(config, *t).is_err())
        .or(Some(horizon))
}

/// Whether a disconnect already decided may go to the meter (again) at `now`, and by when its
/// transmission must be over. A technician's disconnect override sends it with no deadline, at any
/// hour; otherwise it needs a trusted clock and an allowed minute, and its deadline is the end of
/// that run of allowed minutes ([`disconnect_allowed_until`]). A disconnect that may not go now
/// says why (the gateway withdraws it).
pub fn disconnect_deadline(
    config: &PolicyConfig,
    manual_override: Option<Override>,
    clock_trusted: bool,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, Hold> {
    match manual_override.filter(|o| o.until > now).map(|o| o.action) {
        Some(RelayAction::Disconnect) => return Ok(None),
        Some(RelayAction::Connect) => return Err(Hold::ManualOverride),
        None => {}
    }
    if !clock_trusted {
        return Err(Hold::ClockUntrusted);
    }
    disconnect_allowed(config, now)?;
    disconnect_allowed_until(config, now)
        .map(Some)
        .ok_or(Hold::OutsideWindow)
}

/// Decides alerts and the relay action for one account.
pub fn decide(config: &PolicyConfig, facts: &AccountFacts, now: DateTime<Utc>) -> Decision {
    let threshold = config.disconnect_threshold_paise - facts.emergency_credit_paise.max(0);
    let exhausted = facts.balance_paise <= threshold;
    let below_threshold_since = exhausted.then(|| facts.below_threshold_since.unwrap_or(now));
    let (wanted, hold, load_trip) = wanted_relay(config, facts, below_threshold_since, now);
    let relay = wanted.filter(|w| facts.relay != w.target() && facts.pending != Some(*w));
    Decision {
        low_balance: low_balance(config, facts),
        days_left: facts.daily_consumption_paise.filter(|d| *d > 0).map(|d| {
            ((facts.balance_paise - threshold).max(0) as f64 / d as f64 * 10.0).floor() / 10.0
        }),
        relay,
        hold,
        below_threshold_since,
        daily_message: (civil::local(now).time() >= config.daily_message_at)
            .then(|| civil::local_date(now)),
        withdraw_disconnect: facts.pending == Some(RelayAction::Disconnect)
            && wanted != Some(RelayAction::Disconnect),
        load_trip,
    }
}

/// The relay state the rules want now, why a wanted disconnect is held back, and the end of the
/// load-limit lockout when the trip decided.
fn wanted_relay(
    config: &PolicyConfig,
    facts: &AccountFacts,
    below_threshold_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (Option<RelayAction>, Option<Hold>, Option<DateTime<Utc>>) {
    if let Some(o) = facts.manual_override.filter(|o| o.until > now) {
        let hold = (below_threshold_since.is_some() && o.action == RelayAction::Connect)
            .then_some(Hold::ManualOverride);
        return (Some(o.action), hold, None);
    }
    let (wanted, hold) = balance_relay(config, facts, below_threshold_since, now);
    if wanted == Some(RelayAction::Disconnect) || facts.protected {
        return (wanted, hold, None);
    }
    let Some(until) = facts.load.and_then(|load| load.off_until(now)) else {
        return (wanted, hold, None);
    };
    match may_cut_now(config, facts, now) {
        Ok(()) => (Some(RelayAction::Disconnect), None, Some(until)),
        Err(hold) => (None, Some(hold), Some(until)),
    }
}

/// What the balance rules want (the override aside), and why a wanted disconnect is held back.
fn balance_relay(
    config: &PolicyConfig,
    facts: &AccountFacts,
    below_threshold_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (Option<RelayAction>, Option<Hold>) {
    let Some(crossed) = below_threshold_since else {
        return (Some(RelayAction::Connect), None);
    };
    if facts.protected {
        return (None, Some(Hold::Protected));
    }
    let paid_until = facts
        .arrangement
        .and_then(|a| partial_payment_until(&config.partial_payment, &a));
    if let Some(until) = paid_until.filter(|until| now < *until) {
        return (
            Some(RelayAction::Connect),
            Some(Hold::PartialPayment { until }),
        );
    }
    let grace = config.first_disconnect.earliest(crossed);
    let check = match outage::grace_end(crossed, grace, &facts.outages) {
        _ if !facts.clock_trusted => Err(Hold::ClockUntrusted),
        None => Err(Hold::SupplyOutage),
        _ if supply_out(facts, now) => Err(Hold::SupplyOutage),
        Some(earliest) if now < earliest => Err(Hold::Grace { until: earliest }),
        Some(_) => disconnect_allowed(config, now),
    };
    match check {
        Ok(()) => (Some(RelayAction::Disconnect), None),
        Err(hold) => (None, Some(hold)),
    }
}

/// Whether a supply outage is going on at `now`.
fn supply_out(facts: &AccountFacts, now: DateTime<Utc>) -> bool {
    facts
        .outages
        .iter()
        .any(|o| o.start <= now && o.end.is_none_or(|end| end > now))
}

/// The rules every automatic disconnect meets at the instant it is decided: a trusted clock, no
/// supply outage going on, an allowed window, not a holiday.
fn may_cut_now(
    config: &PolicyConfig,
    facts: &AccountFacts,
    now: DateTime<Utc>,
) -> Result<(), Hold> {
    if !facts.clock_trusted {
        return Err(Hold::ClockUntrusted);
    }
    if supply_out(facts, now) {
        return Err(Hold::SupplyOutage);
    }
    disconnect_allowed(config, now)
}

fn low_balance(config: &PolicyConfig, facts: &AccountFacts) -> Vec<LowBalance> {
    let Some(recharge) = &facts.last_recharge else {
        return Vec::new();
    };
    config
        .alert_levels_percent
        .iter()
        .filter(|level| facts.balance_paise * 100 <= recharge.amount_paise * i64::from(**level))
        .map(|level| LowBalance {
            level_percent: *level,
            recharge_id: recharge.id.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
