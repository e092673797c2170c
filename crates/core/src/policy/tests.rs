use super::*;
use crate::demand::LoadTrip;
use crate::outage::OutageSpan;
use chrono::{Datelike, TimeZone, Weekday};
use proptest::prelude::*;

/// A UTC instant from a local (IST) wall-clock time.
fn ist(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    civil::ist()
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn recharge(amount_paise: i64) -> LastRecharge {
    LastRecharge {
        id: "r1".into(),
        amount_paise,
        at: ist(2026, 11, 1, 9, 0),
    }
}

fn facts(balance_paise: i64, last: Option<&LastRecharge>) -> AccountFacts {
    AccountFacts {
        balance_paise,
        last_recharge: last.cloned(),
        emergency_credit_paise: 0,
        daily_consumption_paise: None,
        relay: RelayState::Connected,
        pending: None,
        below_threshold_since: None,
        manual_override: None,
        clock_trusted: true,
        protected: false,
        arrangement: None,
        outages: Vec::new(),
        load: None,
    }
}

#[test]
fn default_window_is_working_days_ten_to_two_local_time() {
    let config = PolicyConfig::default();
    // 2026-11-30 is a Monday.
    assert_eq!(
        disconnect_allowed(&config, ist(2026, 11, 30, 10, 0)),
        Ok(())
    );
    assert_eq!(
        disconnect_allowed(&config, ist(2026, 11, 30, 13, 59)),
        Ok(())
    );
    assert_eq!(
        disconnect_allowed(&config, ist(2026, 11, 30, 14, 0)),
        Err(Hold::OutsideWindow)
    );
    assert_eq!(
        disconnect_allowed(&config, ist(2026, 11, 30, 9, 59)),
        Err(Hold::OutsideWindow)
    );
    assert_eq!(
        disconnect_allowed(&config, ist(2026, 11, 29, 11, 0)),
        Err(Hold::OutsideWindow)
    ); // Sunday
    assert_eq!(
        disconnect_allowed(&config, ist(2027, 1, 26, 11, 0)),
        Err(Hold::Holiday)
    );
}

#[test]
fn disconnect_waits_for_the_next_days_window() {
    let config = PolicyConfig::default();
    let crossed = ist(2026, 11, 30, 10, 30); // Monday, inside a window
    let mut f = facts(-10, None);
    let today = decide(&config, &f, crossed);
    assert_eq!(today.relay, None);
    assert_eq!(today.below_threshold_since, Some(crossed));
    assert!(matches!(today.hold, Some(Hold::Grace { until }) if until == ist(2026, 12, 1, 0, 0)));

    f.below_threshold_since = today.below_threshold_since;
    assert_eq!(
        decide(&config, &f, ist(2026, 12, 1, 9, 0)).hold,
        Some(Hold::OutsideWindow)
    );
    assert_eq!(
        decide(&config, &f, ist(2026, 12, 1, 10, 0)).relay,
        Some(RelayAction::Disconnect)
    );

    f.clock_trusted = false;
    let untrusted = decide(&config, &f, ist(2026, 12, 1, 10, 0));
    assert_eq!(
        (untrusted.relay, untrusted.hold),
        (None, Some(Hold::ClockUntrusted))
    );
}

#[test]
fn a_supply_outage_holds_the_cut_and_its_hours_move_the_grace_on() {
    let config = PolicyConfig::default();
    let crossed = ist(2026, 11, 30, 10, 30); // Monday; the grace ends at midnight
    let mut f = facts(-10, None);
    f.below_threshold_since = Some(crossed);
    // The feeder was out from 18:00 to 22:00 that evening, and the supply is out again now.
    f.outages = vec![
        OutageSpan {
            start: ist(2026, 11, 30, 18, 0),
            end: Some(ist(2026, 11, 30, 22, 0)),
        },
        OutageSpan {
            start: ist(2026, 12, 1, 10, 0),
            end: None,
        },
    ];
    let dark = decide(&config, &f, ist(2026, 12, 1, 10, 5));
    assert_eq!((dark.relay, dark.hold), (None, Some(Hold::SupplyOutage)));
    // Power back at 10:30: the four evening hours moved the grace to 04:00; the cut may go now.
    f.outages[1].end = Some(ist(2026, 12, 1, 10, 30));
    assert_eq!(
        decide(&config, &f, ist(2026, 12, 1, 10, 31)).relay,
        Some(RelayAction::Disconnect)
    );
    // The same evening outage with a ten-hour grace from 10:30: due at 20:30 without it, at
    // 00:30 with it.
    let ten_hours = PolicyConfig {
        first_disconnect: Grace::After(std::time::Duration::from_secs(10 * 3600)),
        disconnect_windows: vec![Window::try_from("0 * * * * *".to_string()).unwrap()],
        ..PolicyConfig::default()
    };
    f.outages.truncate(1);
    let hold = decide(&ten_hours, &f, ist(2026, 11, 30, 23, 0)).hold;
    assert_eq!(
        hold,
        Some(Hold::Grace {
            until: ist(2026, 12, 1, 0, 30)
        })
    );
    assert_eq!(
        decide(&ten_hours, &f, ist(2026, 12, 1, 0, 30)).relay,
        Some(RelayAction::Disconnect)
    );
}

#[test]
fn emergency_credit_and_negative_threshold_move_the_cut_point() {
    let config = PolicyConfig {
        disconnect_threshold_paise: -20_000,
        first_disconnect: Grace::After(std::time::Duration::ZERO),
        ..PolicyConfig::default()
    };
    let now = ist(2026, 12, 1, 11, 0);
    assert_eq!(decide(&config, &facts(-19_999, None), now).relay, None);
    assert_eq!(
        decide(&config, &facts(-20_000, None), now).relay,
        Some(RelayAction::Disconnect)
    );
    let mut with_credit = facts(-20_000, None);
    with_credit.emergency_credit_paise = 5_000;
    assert_eq!(decide(&config, &with_credit, now).relay, None);
}

#[test]
fn a_pending_or_already_applied_action_is_not_repeated() {
    let config = PolicyConfig::default();
    let mut f = facts(500, None);
    f.relay = RelayState::Disconnected;
    assert_eq!(
        decide(&config, &f, ist(2026, 11, 29, 23, 0)).relay,
        Some(RelayAction::Connect)
    );
    f.pending = Some(RelayAction::Connect);
    assert_eq!(decide(&config, &f, ist(2026, 11, 29, 23, 0)).relay, None);
    f.relay = RelayState::Connected;
    f.pending = None;
    assert_eq!(decide(&config, &f, ist(2026, 11, 29, 23, 0)).relay, None);
}

#[test]
fn a_manual_override_wins_until_it_expires() {
    let config = PolicyConfig::default();
    let now = ist(2026, 12, 1, 11, 0);
    let mut f = facts(-500, None);
    f.below_threshold_since = Some(ist(2026, 11, 20, 11, 0));
    f.manual_override = Some(Override {
        action: RelayAction::Connect,
        until: now + Duration::hours(2),
    });
    let d = decide(&config, &f, now);
    assert_eq!((d.relay, d.hold), (None, Some(Hold::ManualOverride)));
    assert_eq!(
        decide(&config, &f, now + Duration::hours(2)).relay,
        Some(RelayAction::Disconnect)
    );
}

#[test]
fn low_balance_alerts_at_each_level_of_the_last_recharge_and_days_left() {
    let config = PolicyConfig::default();
    let r = recharge(50_000);
    let levels = |balance| -> Vec<u8> {
        decide(&config, &facts(balance, Some(&r)), ist(2026, 11, 2, 7, 0))
            .low_balance
            .iter()
            .map(|l| l.level_percent)
            .collect()
    };
    assert_eq!(levels(15_001), Vec::<u8>::new());
    assert_eq!(levels(15_000), vec![30]);
    assert_eq!(levels(5_000), vec![30, 10]);
    assert_eq!(levels(0), vec![30, 10, 0]);
    let mut f = facts(10_000, Some(&r));
    f.daily_consumption_paise = Some(3_000);
    assert_eq!(
        decide(&config, &f, ist(2026, 11, 2, 7, 0)).days_left,
        Some(3.3)
    );
}

#[test]
fn daily_message_is_due_from_the_configured_local_time() {
    let config = PolicyConfig::default();
    let f = facts(10_000, None);
    assert_eq!(
        decide(&config, &f, ist(2026, 11, 2, 7, 59)).daily_message,
        None
    );
    assert_eq!(
        decide(&config, &f, ist(2026, 11, 2, 8, 0)).daily_message,
        NaiveDate::from_ymd_opt(2026, 11, 2)
    );
}

#[test]
fn bad_settings_are_refused_with_guidance() {
    let err = Window::from_str("every day at ten").unwrap_err();
    assert!(err.contains("not a cron expression"), "{err}");
    assert!(Grace::try_from("tomorrow".to_string())
        .unwrap_err()
        .contains("next-day"));
    let config = PolicyConfig {
        disconnect_threshold_paise: MAX_THRESHOLD_PAISE + 1,
        ..PolicyConfig::default()
    };
    assert!(config
        .validate()
        .unwrap_err()
        .contains("above the most allowed"));
    let config = PolicyConfig {
        partial_payment: vec![PartialPaymentRule {
            effective_from: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            min_paid_percent: 0,
            days_to_pay_rest: 3,
        }],
        ..PolicyConfig::default()
    };
    assert!(config.validate().unwrap_err().contains("1 to 100"));
}

#[test]
fn a_protected_account_is_never_cut_automatically() {
    let config = PolicyConfig::default();
    // Monday 11:00, two days after crossing: every other rule would cut.
    let now = ist(2026, 11, 30, 11, 0);
    let mut f = facts(-5_000, None);
    f.below_threshold_since = Some(ist(2026, 11, 27, 9, 0));
    assert_eq!(
        decide(&config, &f, now).relay,
        Some(RelayAction::Disconnect)
    );
    f.protected = true;
    let d = decide(&config, &f, now);
    assert_eq!((d.relay, d.hold), (None, Some(Hold::Protected)));
    f.pending = Some(RelayAction::Disconnect);
    assert!(decide(&config, &f, now).withdraw_disconnect);
    // A technician's disconnect override is not automatic.
    f.pending = None;
    f.manual_override = Some(Override {
        action: RelayAction::Disconnect,
        until: now + Duration::hours(1),
    });
    assert_eq!(
        decide(&config, &f, now).relay,
        Some(RelayAction::Disconnect)
    );
}

/// UPPCL-style tiers: half the debt buys 3 days, three quarters 7 days.
fn tiers() -> Vec<PartialPaymentRule> {
    let from = NaiveDate::from_ymd_opt(2026, 4, 1).unwrap();
    vec![
        PartialPaymentRule {
            effective_from: from,
            min_paid_percent: 50,
            days_to_pay_rest: 3,
        },
        PartialPaymentRule {
            effective_from: from,
            min_paid_percent: 75,
            days_to_pay_rest: 7,
        },
    ]
}

#[test]
fn paying_half_the_debt_reconnects_with_days_to_pay_the_rest() {
    let config = PolicyConfig {
        partial_payment: tiers(),
        ..PolicyConfig::default()
    };
    let paid_at = ist(2026, 11, 30, 9, 0);
    let mut f = facts(-1_000, None);
    f.relay = RelayState::Disconnected;
    f.below_threshold_since = Some(ist(2026, 11, 20, 9, 0));
    // Cut at -2,000 paise, 1,000 paid: half the debt.
    f.arrangement = Some(Arrangement {
        debt_paise: 2_000,
        paid_paise: 1_000,
        last_paid_at: Some(paid_at),
    });
    let until = paid_at + Duration::days(3);
    let d = decide(&config, &f, paid_at + Duration::minutes(1));
    assert_eq!(d.relay, Some(RelayAction::Connect));
    assert_eq!(d.hold, Some(Hold::PartialPayment { until }));
    // Back on supply and in the window, but inside the three days: no cut.
    f.relay = RelayState::Connected;
    assert_eq!(decide(&config, &f, ist(2026, 12, 2, 11, 0)).relay, None);
    // After them, with the rest unpaid, the usual rules cut again (Thursday 11:00).
    assert_eq!(
        decide(&config, &f, ist(2026, 12, 3, 11, 0)).relay,
        Some(RelayAction::Disconnect)
    );
    // Three quarters buys seven days; less than half buys nothing.
    f.arrangement = Some(Arrangement {
        debt_paise: 2_000,
        paid_paise: 1_500,
        last_paid_at: Some(paid_at),
    });
    assert_eq!(
        decide(&config, &f, ist(2026, 12, 3, 11, 0)).hold,
        Some(Hold::PartialPayment {
            until: paid_at + Duration::days(7)
        })
    );
    f.arrangement = Some(Arrangement {
        debt_paise: 2_000,
        paid_paise: 999,
        last_paid_at: Some(paid_at),
    });
    assert_eq!(
        decide(&config, &f, ist(2026, 12, 1, 11, 0)).relay,
        Some(RelayAction::Disconnect)
    );
    // Before the rule took effect it did not exist.
    f.arrangement = Some(Arrangement {
        debt_paise: 2_000,
        paid_paise: 1_500,
        last_paid_at: Some(ist(2026, 3, 31, 9, 0)),
    });
    assert_eq!(
        partial_payment_until(&tiers(), &f.arrangement.unwrap()),
        None
    );
}

#[test]
fn a_disconnect_is_allowed_until_its_window_closes_or_a_holiday_begins() {
    let config = PolicyConfig::default();
    let monday_two_pm = Some(ist(2026, 11, 30, 14, 0));
    assert_eq!(
        disconnect_allowed_until(&config, ist(2026, 11, 30, 10, 0)),
        monday_two_pm
    );
    let late = ist(2026, 11, 30, 13, 59) + Duration::seconds(30);
    assert_eq!(disconnect_allowed_until(&config, late), monday_two_pm);
    assert_eq!(
        disconnect_allowed_until(&config, ist(2026, 11, 30, 14, 0)),
        None
    );
    assert_eq!(
        disconnect_allowed_until(&config, ist(2027, 1, 26, 11, 0)),
        None
    );
    // A night window runs across midnight unless the next day is a holiday.
    let mut night = PolicyConfig {
        disconnect_windows: vec![Window::from_str("0 * 22-23,0-1 * * *").unwrap()],
        holidays: vec![],
        ..PolicyConfig::default()
    };
    assert_eq!(
        disconnect_allowed_until(&night, ist(2026, 11, 30, 23, 0)),
        Some(ist(2026, 12, 1, 2, 0))
    );
    night.holidays = vec![NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()];
    assert_eq!(
        disconnect_allowed_until(&night, ist(2026, 11, 30, 23, 0)),
        Some(ist(2026, 12, 1, 0, 0))
    );
    // Always allowed: the scan stops a day ahead.
    let always = PolicyConfig {
        disconnect_windows: vec![Window::from_str("* * * * * *").unwrap()],
        holidays: vec![],
        ..PolicyConfig::default()
    };
    assert_eq!(
        disconnect_allowed_until(&always, late),
        Some(ist(2026, 12, 1, 13, 59))
    );
}

#[test]
fn a_recharge_or_a_closed_window_withdraws_a_disconnect_in_flight() {
    let config = PolicyConfig::default();
    let now = ist(2026, 12, 1, 11, 0);
    let mut f = facts(-10, None);
    f.below_threshold_since = Some(ist(2026, 11, 28, 11, 0));
    f.pending = Some(RelayAction::Disconnect);
    let wanted = decide(&config, &f, now);
    assert_eq!((wanted.relay, wanted.withdraw_disconnect), (None, false));

    let closed = decide(&config, &f, ist(2026, 12, 1, 14, 0));
    assert_eq!(closed.hold, Some(Hold::OutsideWindow));
    assert!(closed.withdraw_disconnect);

    // Recharged while the relay is still connected: nothing to issue, but the disconnect must go.
    f.balance_paise = 20_000;
    let recharged = decide(&config, &f, now);
    assert_eq!(
        (
            recharged.relay,
            recharged.hold,
            recharged.withdraw_disconnect
        ),
        (None, None, true)
    );
    assert_eq!(recharged.below_threshold_since, None);

    // A technician's disconnect keeps it wanted, at any hour.
    f.manual_override = Some(Override {
        action: RelayAction::Disconnect,
        until: now + Duration::days(1),
    });
    assert!(!decide(&config, &f, ist(2026, 12, 1, 20, 0)).withdraw_disconnect);
}

#[test]
fn a_decided_disconnect_goes_out_with_the_end_of_its_window_as_deadline() {
    let config = PolicyConfig::default();
    let inside = ist(2026, 12, 1, 13, 59);
    assert_eq!(
        disconnect_deadline(&config, None, true, inside),
        Ok(Some(ist(2026, 12, 1, 14, 0)))
    );
    assert_eq!(
        disconnect_deadline(&config, None, true, ist(2026, 12, 1, 14, 0)),
        Err(Hold::OutsideWindow)
    );
    assert_eq!(
        disconnect_deadline(&config, None, true, ist(2027, 1, 26, 11, 0)),
        Err(Hold::Holiday)
    );
    assert_eq!(
        disconnect_deadline(&config, None, false, inside),
        Err(Hold::ClockUntrusted)
    );
    let technician = |action| {
        Some(Override {
            action,
            until: inside + Duration::hours(12),
        })
    };
    assert_eq!(
        disconnect_deadline(&config, technician(RelayAction::Connect), true, inside),
        Err(Hold::ManualOverride)
    );
    let night = ist(2026, 12, 1, 22, 0);
    assert_eq!(
        disconnect_deadline(&config, technician(RelayAction::Disconnect), false, night),
        Ok(None)
    );
}

fn relay_state() -> impl Strategy<Value = RelayState> {
    prop_oneof![
        Just(RelayState::Connected),
        Just(RelayState::Disconnected),
        Just(RelayState::Unknown)
    ]
}

proptest! {
    /// Checked against an independent reading of the rule: local hour 10-13, Monday to Saturday,
    /// not a holiday, and never on an untrusted clock.
    #[test]
    fn no_disconnect_outside_a_window_or_on_a_holiday(
        minutes in 0i64..(60 * 24 * 30),
        balance in -100_000i64..1_000,
        crossed_minutes_before in 0i64..(60 * 24 * 5),
        relay in relay_state(),
        clock_trusted in any::<bool>(),
    ) {
        let config = PolicyConfig::default();
        let now = ist(2027, 1, 10, 0, 0) + Duration::minutes(minutes);
        let mut f = facts(balance, None);
        f.relay = relay;
        f.clock_trusted = clock_trusted;
        f.below_threshold_since = Some(now - Duration::minutes(crossed_minutes_before));
        let decision = decide(&config, &f, now);
        if decision.relay == Some(RelayAction::Disconnect) {
            let local = civil::local(now);
            prop_assert!((10..14).contains(&local.hour()), "{local}");
            prop_assert!(local.weekday() != Weekday::Sun, "{local}");
            prop_assert!(!config.holidays.contains(&local.date_naive()), "{local}");
            prop_assert!(clock_trusted);
            prop_assert!(balance <= config.disconnect_threshold_paise);
        }
    }

    /// A recharge that lifts the balance above the threshold always yields a reconnect, at any hour,
    /// whatever the clock, unless a technician holds the supply off.
    #[test]
    fn recharge_above_threshold_always_reconnects(
        minutes in 0i64..(60 * 24 * 30),
        threshold in -50_000i64..=0,
        lift in 1i64..1_000_000,
        credit in 0i64..10_000,
        relay in prop_oneof![Just(RelayState::Disconnected), Just(RelayState::Unknown)],
        clock_trusted in any::<bool>(),
    ) {
        let config = PolicyConfig { disconnect_threshold_paise: threshold, ..PolicyConfig::default() };
        let now = ist(2027, 1, 10, 0, 0) + Duration::minutes(minutes);
        let mut f = facts(threshold + lift, None);
        f.relay = relay;
        f.emergency_credit_paise = credit;
        f.clock_trusted = clock_trusted;
        f.below_threshold_since = Some(now - Duration::days(3));
        let decision = decide(&config, &f, now);
        prop_assert_eq!(decision.relay, Some(RelayAction::Connect));
        prop_assert_eq!(decision.below_threshold_since, None);
    }

    /// Every minute from now to the deadline allows a disconnect, and the deadline's minute does not
    /// (unless the scan reached its 24 h horizon). Windows include one across midnight and one that
    /// always allows; holidays are drawn at random.
    #[test]
    fn a_disconnect_deadline_ends_the_run_of_allowed_minutes(
        minutes in 0i64..(60 * 24 * 21),
        seconds in 0i64..60,
        window in prop::sample::select(vec![
            "0 * 10-13 * * Mon-Sat",
            "0 0-29 * * * *",
            "0 * 22-23,0-1 * * *",
            "0 * 9-11,12-16 * * Mon-Fri",
            "* * * * * *",
        ]),
        holiday_days in prop::collection::vec(0i64..21, 0..4),
    ) {
        let start = ist(2027, 1, 4, 0, 0);
        let config = PolicyConfig {
            disconnect_windows: vec![Window::from_str(window).unwrap()],
            holidays: holiday_days
                .iter()
                .map(|d| civil::local_date(start) + Duration::days(*d))
                .collect(),
            ..PolicyConfig::default()
        };
        let now = start + Duration::minutes(minutes) + Duration::seconds(seconds);
        let until = disconnect_allowed_until(&config, now);
        prop_assert_eq!(until.is_some(), disconnect_allowed(&config, now).is_ok());
        if let Some(until) = until {
            prop_assert!(until > now);
            let minute = now - Duration::seconds(seconds);
            let mut t = minute;
            while t < until {
                prop_assert_eq!(disconnect_allowed(&config, t), Ok(()), "{} before {}", t, until);
                t += Duration::minutes(1);
            }
            prop_assert!(
                disconnect_allowed(&config, until).is_err() || until == minute + Duration::days(1),
                "{} is still allowed", until
            );
        }
    }

    /// Checked against an independent reading of the default window: a disconnect allowed now is
    /// allowed until 14:00 local time the same day.
    #[test]
    fn the_default_deadline_is_two_pm_on_a_working_day(minutes in 0i64..(60 * 24 * 30)) {
        let config = PolicyConfig::default();
        let now = ist(2027, 1, 10, 0, 0) + Duration::minutes(minutes);
        let local = civil::local(now);
        let allowed = (10..14).contains(&local.hour())
            && local.weekday() != Weekday::Sun
            && !config.holidays.contains(&local.date_naive());
        let two_pm = ist(local.year(), local.month(), local.day(), 14, 0);
        prop_assert_eq!(disconnect_allowed_until(&config, now), allowed.then_some(two_pm));
    }

    /// A disconnect in flight is withdrawn exactly when an independent reading of the rules does not
    /// want one now; that reading also predicts when `decide` issues a new disconnect.
    #[test]
    fn a_disconnect_in_flight_is_withdrawn_exactly_when_it_is_no_longer_wanted(
        minutes in 0i64..(60 * 24 * 30),
        balance in -5_000i64..5_000,
        crossed_minutes_before in prop::option::of(0i64..(60 * 24 * 3)),
        pending in prop_oneof![
            Just(None),
            Just(Some(RelayAction::Connect)),
            Just(Some(RelayAction::Disconnect)),
        ],
        relay in relay_state(),
        clock_trusted in any::<bool>(),
        technician in prop::option::of((any::<bool>(), -120i64..120)),
    ) {
        let config = PolicyConfig::default();
        let now = ist(2027, 1, 10, 0, 0) + Duration::minutes(minutes);
        let mut f = facts(balance, None);
        f.relay = relay;
        f.pending = pending;
        f.clock_trusted = clock_trusted;
        f.below_threshold_since = crossed_minutes_before.map(|m| now - Duration::minutes(m));
        f.manual_override = technician.map(|(disconnect, minutes_left)| Override {
            action: if disconnect { RelayAction::Disconnect } else { RelayAction::Connect },
            until: now + Duration::minutes(minutes_left),
        });
        let local = civil::local(now);
        let in_window = (10..14).contains(&local.hour())
            && local.weekday() != Weekday::Sun
            && !config.holidays.contains(&local.date_naive());
        let crossed = f.below_threshold_since.unwrap_or(now);
        let wanted = match f.manual_override.filter(|o| o.until > now) {
            Some(o) => o.action == RelayAction::Disconnect,
            None => balance <= config.disconnect_threshold_paise
                && clock_trusted
                && local.date_naive() > civil::local_date(crossed)
                && in_window,
        };
        let decision = decide(&config, &f, now);
        prop_assert_eq!(
            decision.withdraw_disconnect,
            pending == Some(RelayAction::Disconnect) && !wanted
        );
        let issues_disconnect = wanted && relay != RelayState::Disconnected && pending.is_none();
        if pending.is_none() {
            prop_assert_eq!(decision.relay == Some(RelayAction::Disconnect), issues_disconnect);
        }
        if decision.withdraw_disconnect {
            prop_assert_ne!(decision.relay, Some(RelayAction::Disconnect));
        }
    }
}

proptest! {
    /// A payment short of the lowest tier never reconnects early; paying more never buys fewer days;
    /// and the time to pay the rest is always one of the tiers' days from the payment.
    #[test]
    fn partial_payment_tiers_are_monotonic(
        debt in 1i64..10_000_000,
        paid in 0i64..10_000_000,
        more in 0i64..1_000_000,
        hours in 0i64..24 * 400,
    ) {
        let rules = tiers();
        let paid_at = ist(2026, 4, 1, 0, 0) + Duration::hours(hours);
        let arrangement = |paid_paise| Arrangement { debt_paise: debt, paid_paise, last_paid_at: Some(paid_at) };
        let until = partial_payment_until(&rules, &arrangement(paid));
        if i128::from(paid) * 100 < i128::from(debt) * 50 {
            prop_assert_eq!(until, None);
        } else {
            let days = until.map(|u| (u - paid_at).num_days());
            prop_assert!(days == Some(3) || days == Some(7), "{:?}", days);
        }
        let more_until = partial_payment_until(&rules, &arrangement(paid + more));
        prop_assert!(more_until >= until);
    }
}

/// A household with 2 kW sanctioned and a trip after 3 intervals for 30 minutes.
fn load(
    over_intervals: Option<u32>,
    run_end: DateTime<Utc>,
    tripped_at: Option<DateTime<Utc>>,
) -> LoadTrip {
    LoadTrip {
        trip_after_intervals: 3,
        trip_minutes: 30,
        sanctioned_w: 2_000,
        over: over_intervals.map(|intervals| crate::demand::OverRun {
            intervals,
            from: run_end - Duration::minutes(15 * i64::from(intervals)),
            until: run_end,
            max_w: 2_600,
        }),
        tripped_at,
    }
}

#[test]
fn a_load_trip_cuts_in_a_window_keeps_off_through_a_recharge_and_reconnects_at_the_lockout_end() {
    let config = PolicyConfig::default();
    let now = ist(2026, 11, 30, 11, 2); // Monday, in the window
    let mut f = facts(50_000, None);
    f.load = Some(load(Some(3), ist(2026, 11, 30, 11, 0), None));
    let trip = decide(&config, &f, now);
    assert_eq!(trip.relay, Some(RelayAction::Disconnect));
    assert_eq!(trip.load_trip, Some(now + Duration::minutes(30)));
    assert_eq!(trip.below_threshold_since, None, "not a balance episode");

    // Carried out: off, and a recharge in the lockout changes nothing.
    f.relay = RelayState::Disconnected;
    f.load = Some(load(Some(3), ist(2026, 11, 30, 11, 0), Some(now)));
    f.balance_paise += 100_000;
    let during = decide(&config, &f, now + Duration::minutes(29));
    assert_eq!((during.relay, during.hold), (None, None));
    assert_eq!(during.load_trip, Some(now + Duration::minutes(30)));
    // Outside the window, still off until the end.
    let late = ist(2026, 11, 30, 13, 50);
    let mut f_late = f.clone();
    f_late.load = Some(load(Some(3), ist(2026, 11, 30, 13, 45), Some(late)));
    let after_window = decide(&config, &f_late, ist(2026, 11, 30, 14, 5));
    assert_eq!(after_window.relay, None);
    assert_eq!(after_window.hold, Some(Hold::OutsideWindow));
    assert_eq!(
        decide(&config, &f_late, late + Duration::minutes(30)).relay,
        Some(RelayAction::Connect)
    );

    let end = decide(&config, &f, now + Duration::minutes(30));
    assert_eq!(end.relay, Some(RelayAction::Connect));
    assert_eq!(end.load_trip, None);

    // Had the balance run out in the lockout, the balance rules keep it off after it.
    f.balance_paise = -500;
    let exhausted = decide(&config, &f, now + Duration::minutes(30));
    assert_eq!(exhausted.relay, None);
    assert!(matches!(exhausted.hold, Some(Hold::Grace { .. })));
}

#[test]
fn a_load_trip_is_held_like_any_disconnect_and_never_for_a_protected_account() {
    let config = PolicyConfig::default();
    let now = ist(2026, 11, 30, 11, 2);
    let mut f = facts(50_000, None);
    f.load = Some(load(Some(4), ist(2026, 11, 30, 11, 0), None));
    f.clock_trusted = false;
    assert_eq!(decide(&config, &f, now).hold, Some(Hold::ClockUntrusted));
    f.clock_trusted = true;
    f.outages = vec![OutageSpan {
        start: now - Duration::minutes(5),
        end: None,
    }];
    assert_eq!(decide(&config, &f, now).hold, Some(Hold::SupplyOutage));
    f.outages.clear();
    assert_eq!(
        decide(&config, &f, ist(2027, 1, 26, 11, 2)).relay,
        None,
        "holiday"
    );
    f.protected = true;
    let protected = decide(&config, &f, now);
    assert_eq!(
        (protected.relay, protected.hold, protected.load_trip),
        (None, None, None)
    );
    f.protected = false;
    f.manual_override = Some(Override {
        action: RelayAction::Connect,
        until: now + Duration::hours(1),
    });
    let overridden = decide(&config, &f, now);
    assert_eq!((overridden.relay, overridden.load_trip), (None, None));
    f.manual_override = None;
    assert_eq!(
        decide(&config, &f, now).relay,
        Some(RelayAction::Disconnect)
    );
}

proptest! {
    #[test]
    fn never_a_load_trip_outside_a_window_or_with_the_setting_off(
        minutes in 0i64..(60 * 24 * 14),
        intervals in 0u32..8,
        after in 0u32..5,
        age in 0i64..120,
        tripped_ago in proptest::option::of(0i64..120),
        balance in -1_000i64..100_000,
    ) {
        let config = PolicyConfig::default();
        let now = ist(2026, 11, 23, 0, 0) + Duration::minutes(minutes);
        let mut f = facts(balance, None);
        let mut trip = load(
            (intervals > 0).then_some(intervals),
            now - Duration::minutes(age),
            tripped_ago.map(|m| now - Duration::minutes(m)),
        );
        trip.trip_after_intervals = after;
        f.load = Some(trip);
        if tripped_ago.is_some() {
            f.relay = RelayState::Disconnected;
        }
        let d = decide(&config, &f, now);
        if d.relay == Some(RelayAction::Disconnect) && d.load_trip.is_some() {
            prop_assert!(after > 0);
            prop_assert!(disconnect_allowed(&config, now).is_ok());
            prop_assert_eq!(d.load_trip, Some(now + Duration::minutes(30)));
        }
        if after == 0 {
            prop_assert_eq!(d.load_trip, None);
            let mut without = f.clone();
            without.load = None;
            prop_assert_eq!(d.clone(), decide(&config, &without, now));
        }
        // The lockout ends exactly on time: off until its end, and from then the balance rules
        // decide (a positive balance reconnects) unless a new run trips it again.
        if let (Some(at), true) = (tripped_ago.map(|m| now - Duration::minutes(m)), after > 0) {
            let end = at + Duration::minutes(30);
            prop_assert_eq!(d.load_trip == Some(end), now < end);
            if now < end {
                prop_assert_ne!(d.relay, Some(RelayAction::Connect));
            } else if d.load_trip.is_none() && balance > 0 {
                prop_assert_eq!(d.relay, Some(RelayAction::Connect));
            }
        }
    }
}
