//! The sync wire's own counterparts of the core's domain types, and the conversions between them.
//!
//! postcard is positional: a field's place and a variant's index are the format. Keeping these
//! types apart from the core's means a rename or a reordering in `gramgrid-core` cannot change a
//! byte on the wire or in a gateway's outbox; changing one of these types is a format change
//! (bump [`super::PROTOCOL_VERSION`] and [`crate::outbox::OUTBOX_FORMAT`], keep a decoder for the
//! old one, and add golden files under `tests/data/`).
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use gramgrid_core::breaker::BreakerConfig;
use gramgrid_core::ledger::{ArrearsRule, EventKind, LedgerEvent};
use gramgrid_core::policy::{
    Grace, PartialPaymentRule, PolicyConfig, RelayAction, RelayState, Window,
};
use gramgrid_core::tariff::{Category, ClockTime, Slab, TariffVersion, TodSlot};
use serde::{Deserialize, Serialize};

/// A money event on the wire (see `gramgrid_core::ledger::LedgerEvent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLedgerEvent {
    /// Globally unique event id.
    pub id: String,
    /// Account id.
    pub account: String,
    /// When the event took effect.
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: WireEventKind,
    /// Magnitude in paise (signed for adjustments).
    pub amount_paise: i64,
    /// Emergency credit only: when the credit line lapses.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A money event's kind on the wire; the variant order is the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")] // Names matter only in JSON (stored published config).
#[allow(missing_docs)] // Each variant is the core's `EventKind` of the same name.
pub enum WireEventKind {
    Recharge,
    Charge,
    FixedCharge,
    MinimumCharge,
    Adjustment,
    EmergencyCredit,
    /// Protocol 3: arrears carried over from post-paid (never sent to an older gateway).
    Arrears,
    /// Protocol 8: a month's demand charge (made by protocol-8 gateways only).
    DemandCharge,
    /// Protocol 10: net metering's credit at a month's close (made by protocol-10 gateways only).
    ExportCredit,
}

/// A consumer category on the wire; the variant order is the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")] // Names matter only in JSON (stored published config).
#[allow(missing_docs)] // Each variant is the core's `Category` of the same name.
pub enum WireCategory {
    Domestic,
    Commercial,
    Agricultural,
}

/// A relay command on the wire; the variant order is the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // Each variant is the core's `RelayAction` of the same name.
pub enum WireRelayAction {
    Connect,
    Disconnect,
}

/// A relay state on the wire; the variant order is the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // Each variant is the core's `RelayState` of the same name.
pub enum WireRelayState {
    Connected,
    Disconnected,
    Unknown,
}

/// The enforcement policy on the wire: windows and grace as the text the config uses. The gateway
/// also keeps published policies as this type's JSON (`published_config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WirePolicy {
    /// Alert levels, percent of the last recharge.
    pub alert_levels_percent: Vec<u8>,
    /// Disconnect threshold in paise (at most `policy::MAX_THRESHOLD_PAISE`).
    pub disconnect_threshold_paise: i64,
    /// Disconnect windows as cron expressions (Asia/Kolkata).
    pub disconnect_windows: Vec<String>,
    /// "next-day" or a humantime duration.
    pub first_disconnect: String,
    /// Local dates with no disconnect.
    pub holidays: Vec<NaiveDate>,
    /// Local time of the daily balance message.
    pub daily_message_at: NaiveTime,
}

/// One tariff version on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireTariffVersion {
    /// Unique, stable name.
    pub id: String,
    /// The category it prices.
    pub category: WireCategory,
    /// First local date it applies.
    pub effective_from: NaiveDate,
    /// Telescopic slabs.
    pub slabs: Vec<WireSlab>,
    /// Fixed charge per month (paise).
    pub fixed_monthly_paise: i64,
    /// Minimum monthly charge (paise).
    pub minimum_monthly_paise: i64,
    /// Duty on the energy charge, percent.
    pub duty_percent: f64,
}

/// One time-of-day slot on the wire (see `gramgrid_core::tariff::TodSlot`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireTodSlot {
    /// The slot's name.
    pub name: String,
    /// Local start, minutes after midnight.
    pub from_minute: u16,
    /// Local end (exclusive), minutes after midnight.
    pub to_minute: u16,
    /// Surcharge (positive) or rebate (negative) on the energy charge, percent.
    pub percent: f64,
}

impl From<&TodSlot> for WireTodSlot {
    fn from(slot: &TodSlot) -> Self {
        WireTodSlot {
            name: slot.name.clone(),
            from_minute: slot.from.minutes(),
            to_minute: slot.to.minutes(),
            percent: slot.percent,
        }
    }
}

impl TryFrom<WireTodSlot> for TodSlot {
    type Error = ModelError;
    fn try_from(slot: WireTodSlot) -> Result<Self, ModelError> {
        let time = |minute: u16| {
            ClockTime::from_minutes(minute).ok_or_else(|| {
                ModelError(format!(
                    "slot '{}': minute {minute} is not a time of day",
                    slot.name
                ))
            })
        };
        Ok(TodSlot {
            from: time(slot.from_minute)?,
            to: time(slot.to_minute)?,
            name: slot.name.clone(),
            percent: slot.percent,
        })
    }
}

/// One slab on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSlab {
    /// Upper limit in units per month; None on the open-ended last slab.
    pub up_to_units: Option<u32>,
    /// Energy charge in paise per kWh.
    pub paise_per_kwh: i64,
}

/// A wire record that names something this side cannot accept (e.g. a cron expression that does
/// not parse): the record is refused, the rest of the exchange goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sync record refused: {0}")]
pub struct ModelError(pub String);

/// Maps two enums with variants of the same names onto each other, both ways.
macro_rules! same_variants {
    ($a:ty, $b:ty, $($v:ident),+) => {
        impl From<$a> for $b {
            fn from(value: $a) -> $b {
                match value { $(<$a>::$v => <$b>::$v),+ }
            }
        }
        impl From<$b> for $a {
            fn from(value: $b) -> $a {
                match value { $(<$b>::$v => <$a>::$v),+ }
            }
        }
    };
}

same_variants!(
    EventKind,
    WireEventKind,
    Recharge,
    Charge,
    FixedCharge,
    MinimumCharge,
    Adjustment,
    EmergencyCredit,
    Arrears,
    DemandCharge,
    ExportCredit
);
same_variants!(Category, WireCategory, Domestic, Commercial, Agricultural);
same_variants!(RelayAction, WireRelayAction, Connect, Disconnect);
same_variants!(RelayState, WireRelayState, Connected, Disconnected, Unknown);

impl From<&LedgerEvent> for WireLedgerEvent {
    fn from(e: &LedgerEvent) -> Self {
        WireLedgerEvent {
            id: e.id.clone(),
            account: e.account.clone(),
            at: e.at,
            kind: e.kind.into(),
            amount_paise: e.amount_paise,
            expires_at: e.expires_at,
        }
    }
}

impl From<LedgerEvent> for WireLedgerEvent {
    fn from(e: LedgerEvent) -> Self {
        WireLedgerEvent::from(&e)
    }
}

impl From<WireLedgerEvent> for LedgerEvent {
    fn from(e: WireLedgerEvent) -> Self {
        LedgerEvent {
            id: e.id,
            account: e.account,
            at: e.at,
            kind: e.kind.into(),
            amount_paise: e.amount_paise,
            expires_at: e.expires_at,
        }
    }
}

impl From<&PolicyConfig> for WirePolicy {
    fn from(p: &PolicyConfig) -> Self {
        WirePolicy {
            alert_levels_percent: p.alert_levels_percent.clone(),
            disconnect_threshold_paise: p.disconnect_threshold_paise,
            disconnect_windows: p
                .disconnect_windows
                .iter()
                .cloned()
                .map(String::from)
                .collect(),
            first_disconnect: p.first_disconnect.into(),
            holidays: p.holidays.clone(),
            daily_message_at: p.daily_message_at,
        }
    }
}

impl TryFrom<WirePolicy> for PolicyConfig {
    type Error = ModelError;
    fn try_from(p: WirePolicy) -> Result<Self, ModelError> {
        let disconnect_windows = p
            .disconnect_windows
            .into_iter()
            .map(Window::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ModelError)?;
        let policy = PolicyConfig {
            alert_levels_percent: p.alert_levels_percent,
            disconnect_threshold_paise: p.disconnect_threshold_paise,
            disconnect_windows,
            first_disconnect: Grace::try_from(p.first_disconnect).map_err(ModelError)?,
            holidays: p.holidays,
            daily_message_at: p.daily_message_at,
            // The defaults until the version's `PolicyRules` record (protocol 3) sets them.
            ..PolicyConfig::default()
        };
        policy.validate().map_err(ModelError)?;
        Ok(policy)
    }
}

impl From<&TariffVersion> for WireTariffVersion {
    fn from(t: &TariffVersion) -> Self {
        WireTariffVersion {
            id: t.id.clone(),
            category: t.category.into(),
            effective_from: t.effective_from,
            slabs: t
                .slabs
                .iter()
                .map(|s| WireSlab {
                    up_to_units: s.up_to_units,
                    paise_per_kwh: s.paise_per_kwh,
                })
                .collect(),
            fixed_monthly_paise: t.fixed_monthly_paise,
            minimum_monthly_paise: t.minimum_monthly_paise,
            duty_percent: t.duty_percent,
        }
    }
}

impl From<WireTariffVersion> for TariffVersion {
    fn from(t: WireTariffVersion) -> Self {
        TariffVersion {
            id: t.id,
            category: t.category.into(),
            effective_from: t.effective_from,
            slabs: t
                .slabs
                .into_iter()
                .map(|s| Slab {
                    up_to_units: s.up_to_units,
                    paise_per_kwh: s.paise_per_kwh,
                })
                .collect(),
            fixed_monthly_paise: t.fixed_monthly_paise,
            minimum_monthly_paise: t.minimum_monthly_paise,
            duty_percent: t.duty_percent,
            // These travel in their own record (`DownlinkEvent::TariffDetails`, protocol 8).
            tod: Vec::new(),
            demand_paise_per_kw: 0,
            // In `DownlinkEvent::TariffNetMetering` (protocol 10).
            export_banking: false,
            export_settlement_paise_per_kwh: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_values_survive_the_wire_model() {
        let policy = PolicyConfig::default();
        assert_eq!(
            PolicyConfig::try_from(WirePolicy::from(&policy)).unwrap(),
            policy
        );
        for version in gramgrid_core::tariff::TariffBook::builtin().versions() {
            assert_eq!(
                &TariffVersion::from(WireTariffVersion::from(version)),
                version
            );
        }
    }

    #[test]
    fn a_policy_whose_window_does_not_parse_is_refused() {
        let mut wire = WirePolicy::from(&PolicyConfig::default());
        wire.disconnect_windows = vec!["every day at ten".into()];
        assert!(PolicyConfig::try_from(wire).is_err());
    }
}

/// The policy's guardrails on the wire (protocol 3): the breaker, arrears recovery and the
/// partial-payment tiers. Sent beside [`WirePolicy`] with the same version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePolicyRules {
    /// `BreakerConfig::max_share_percent`.
    pub max_share_percent: u8,
    /// `BreakerConfig::always_allowed`.
    pub always_allowed: u32,
    /// `BreakerConfig::baseline_factor`.
    pub baseline_factor: u32,
    /// `BreakerConfig::hold_after_change`, in seconds.
    pub hold_after_change_s: u64,
    /// `BreakerConfig::max_sync_gap`, in seconds.
    pub max_sync_gap_s: u64,
    /// Arrears recovery versions: (effective from, percent, cap per recharge in paise).
    pub arrears: Vec<(NaiveDate, u8, i64)>,
    /// Partial-payment tiers: (effective from, minimum share paid in percent, days to pay the rest).
    pub partial_payment: Vec<(NaiveDate, u8, u16)>,
}

impl From<&PolicyConfig> for WirePolicyRules {
    fn from(p: &PolicyConfig) -> Self {
        WirePolicyRules {
            max_share_percent: p.breaker.max_share_percent,
            always_allowed: p.breaker.always_allowed,
            baseline_factor: p.breaker.baseline_factor,
            hold_after_change_s: p.breaker.hold_after_change.as_secs(),
            max_sync_gap_s: p.breaker.max_sync_gap.as_secs(),
            arrears: p
                .arrears
                .iter()
                .map(|r| {
                    (
                        r.effective_from,
                        r.recovery_percent,
                        r.max_per_recharge_paise,
                    )
                })
                .collect(),
            partial_payment: p
                .partial_payment
                .iter()
                .map(|r| (r.effective_from, r.min_paid_percent, r.days_to_pay_rest))
                .collect(),
        }
    }
}

impl WirePolicyRules {
    /// Sets these rules on `policy` (which came as a [`WirePolicy`]) and checks the result.
    pub fn apply_to(&self, mut policy: PolicyConfig) -> Result<PolicyConfig, ModelError> {
        policy.breaker = BreakerConfig {
            max_share_percent: self.max_share_percent,
            always_allowed: self.always_allowed,
            baseline_factor: self.baseline_factor,
            hold_after_change: std::time::Duration::from_secs(self.hold_after_change_s),
            max_sync_gap: std::time::Duration::from_secs(self.max_sync_gap_s),
        };
        policy.arrears = self
            .arrears
            .iter()
            .map(
                |(effective_from, recovery_percent, max_per_recharge_paise)| ArrearsRule {
                    effective_from: *effective_from,
                    recovery_percent: *recovery_percent,
                    max_per_recharge_paise: *max_per_recharge_paise,
                },
            )
            .collect();
        policy.partial_payment = self
            .partial_payment
            .iter()
            .map(
                |(effective_from, min_paid_percent, days_to_pay_rest)| PartialPaymentRule {
                    effective_from: *effective_from,
                    min_paid_percent: *min_paid_percent,
                    days_to_pay_rest: *days_to_pay_rest,
                },
            )
            .collect();
        policy.validate().map_err(ModelError)?;
        Ok(policy)
    }
}
