//! Net metering's month close: a month's surplus export banked, banked units used against a later
//! month's net units, and what is still banked at the end of the settlement year paid out.
//!
//! Pure. Within a month, rating already bills the net units of each segment (import less export,
//! never below zero; `rating`). What a segment exported beyond its import is its surplus. At the
//! close of a month (the gateway's first pass of the next), where the tariff in force on the
//! month's last day has `export_banking`:
//! - the units banked before the month are used against its segments' net units, earliest segment
//!   first, each worth what it takes off that segment's charge (energy, time of day and duty);
//! - the month's surplus joins what is left in the bank;
//! - at the close of March (India's financial year, the settlement year) the bank is paid at
//!   `export_settlement_paise_per_kwh` (floored to the paisa) and emptied.
//!
//! Without banking the surplus lapses and the bank is emptied without payment. Readings of a
//! month that arrive after its close do not revise it, as for the demand charge.
use crate::civil::Month;
use crate::tariff::{Category, SegmentEnergy, SegmentKey, TariffBook};
use serde::{Deserialize, Serialize};

/// The month whose close settles the bank (March: the end of India's financial year).
pub const SETTLEMENT_MONTH: u32 = 3;

/// What a month's close did with an account's export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthClose {
    /// Units banked before the month, in Wh.
    pub banked_in_wh: i64,
    /// Banked units used against the month's net units, in Wh.
    pub used_wh: i64,
    /// What they took off the month's charges, in paise.
    pub credit_paise: i64,
    /// The month's surplus export (beyond its import, segment by segment), in Wh.
    pub surplus_wh: i64,
    /// Units paid out at the settlement, in Wh (0 but in the settlement month).
    pub settled_wh: i64,
    /// What they were paid, in paise.
    pub settlement_paise: i64,
    /// Units banked after the month, in Wh.
    pub banked_out_wh: i64,
}

impl MonthClose {
    /// The money the close credits the account: the banked units used and the settlement.
    pub fn amount_paise(&self) -> i64 {
        self.credit_paise.saturating_add(self.settlement_paise)
    }

    /// Whether the close changed anything worth recording.
    pub fn is_empty(&self) -> bool {
        self.banked_in_wh == 0 && self.surplus_wh == 0
    }
}

/// Closes `month` for a meter of `category` whose segments hold `segments` (any order), with
/// `banked_in_wh` banked from the months before.
pub fn close_month(
    book: &TariffBook,
    category: Category,
    month: Month,
    segments: &[(SegmentKey, SegmentEnergy)],
    banked_in_wh: i64,
) -> MonthClose {
    let mut segments: Vec<&(SegmentKey, SegmentEnergy)> = segments
        .iter()
        .filter(|(key, _)| key.month == month)
        .collect();
    segments.sort_by_key(|(key, _)| book.segment(category, key).map(|segment| segment.first_day));
    let surplus_wh: i64 = segments.iter().map(|(_, e)| e.surplus_wh()).sum();
    let last_version = book
        .segments_of(category, month)
        .last()
        .map(|segment| segment.version.clone());
    let Some(version) = last_version.filter(|v| v.export_banking) else {
        return MonthClose {
            banked_in_wh,
            surplus_wh,
            ..MonthClose::default()
        };
    };
    let (mut remaining, mut credit_paise) = (banked_in_wh.max(0), 0);
    for (key, energy) in &segments {
        let Some(segment) = book.segment(category, key) else {
            continue;
        };
        let used = remaining.min(energy.net_wh());
        let with_bank = SegmentEnergy {
            export_wh: energy.export_wh.saturating_add(used),
            ..*energy
        };
        credit_paise += segment.cost_of(*energy).total() - segment.cost_of(with_bank).total();
        remaining -= used;
    }
    let banked = remaining.saturating_add(surplus_wh);
    let (settled_wh, settlement_paise, banked_out_wh) = if month.month == SETTLEMENT_MONTH {
        let paise = i128::from(banked) * i128::from(version.export_settlement_paise_per_kwh) / 1000;
        (banked, i64::try_from(paise).unwrap_or(i64::MAX), 0)
    } else {
        (0, 0, banked)
    };
    MonthClose {
        banked_in_wh,
        used_wh: banked_in_wh.max(0) - remaining,
        credit_paise,
        surplus_wh,
        settled_wh,
        settlement_paise,
        banked_out_wh,
    }
}

#[cfg(test)]
mod tests;
