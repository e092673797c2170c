//! What a meter's display shows, so that a household without a phone sees it too: the balance, the
//! credit status and the days left. The policy pass sends it after a recharge (a balance higher
//! than the one shown), when the status changes, and once each local day (the day's charges).
use super::Gateway;
use chrono::{DateTime, NaiveDate, Utc};
use gramgrid_core::civil;
use gramgrid_core::policy::{AccountFacts, Decision, RelayState};
use gramgrid_proto::payload::{CreditStatus, DisplayUpdate, DAYS_LEFT_MAX};

/// What was last sent to a meter's display, and on which local day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Shown {
    update: DisplayUpdate,
    day: NaiveDate,
}

/// The display for an account's facts and the policy's decision on them.
fn display_for(facts: &AccountFacts, decision: &Decision) -> DisplayUpdate {
    let status = if facts.relay == RelayState::Disconnected {
        CreditStatus::Disconnected
    } else if decision.below_threshold_since.is_some() {
        CreditStatus::Exhausted
    } else if !decision.low_balance.is_empty() {
        CreditStatus::Low
    } else {
        CreditStatus::Normal
    };
    DisplayUpdate {
        balance_paise: facts.balance_paise,
        status,
        // Whole days, floored: "3 days" while 3.9 are left.
        days_left: decision
            .days_left
            .map(|days| days.clamp(0.0, f64::from(DAYS_LEFT_MAX)) as u8),
    }
}

/// Whether `update` must be sent on `day`, after `last`: nothing shown yet, a new day, a recharge
/// (a higher balance) or another status. Charges alone lower the balance all day; they are shown
/// the next day.
fn due(last: Option<&Shown>, update: &DisplayUpdate, day: NaiveDate) -> bool {
    last.is_none_or(|last| {
        last.day != day
            || update.balance_paise > last.update.balance_paise
            || update.status != last.update.status
    })
}

impl Gateway {
    /// Sends `meter` its display when it is due (see the module doc). A meter the radio cannot
    /// reach yet gets it once it can.
    pub(super) fn refresh_display(
        &mut self,
        meter: i64,
        facts: &AccountFacts,
        decision: &Decision,
        now: DateTime<Utc>,
    ) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let update = display_for(facts, decision);
        let day = civil::local_date(now);
        if !link.can_reach(meter) || !due(self.shown.get(&meter), &update, day) {
            return;
        }
        match link.show(meter, update) {
            Ok(()) => {
                self.shown.insert(meter, Shown { update, day });
            }
            Err(error) => {
                tracing::warn!(meter, %error, "cannot hand the meter's display to the link")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(balance_paise: i64, status: CreditStatus, day: u32) -> Shown {
        Shown {
            update: DisplayUpdate {
                balance_paise,
                status,
                days_left: None,
            },
            day: NaiveDate::from_ymd_opt(2026, 11, day).unwrap(),
        }
    }

    #[test]
    fn a_recharge_a_new_status_or_a_new_day_is_shown_and_charges_wait_for_the_next_day() {
        let last = shown(10_000, CreditStatus::Normal, 30);
        let same_day = last.day;
        let next_day = same_day.succ_opt().unwrap();
        let update = |balance_paise, status| DisplayUpdate {
            balance_paise,
            status,
            days_left: Some(4),
        };
        assert!(due(None, &update(10_000, CreditStatus::Normal), same_day));
        assert!(!due(
            Some(&last),
            &update(9_500, CreditStatus::Normal),
            same_day
        ));
        assert!(due(
            Some(&last),
            &update(9_500, CreditStatus::Normal),
            next_day
        ));
        assert!(due(
            Some(&last),
            &update(60_000, CreditStatus::Normal),
            same_day
        ));
        assert!(due(
            Some(&last),
            &update(2_000, CreditStatus::Low),
            same_day
        ));
    }
}
