use super::*;
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

fn facts(balance_paise: i64, last: Option<&LastRecharge>) -> AccountFacts<'_> {
    AccountFacts {
        balance_paise,
        last_recharge: last,
        emergency_credit_paise: 0,
        daily_consumption_paise: None,
        relay: RelayState::Connected,
        pending: None,
        below_threshold_since: None,
        manual_override: None,
        clock_trusted: true,
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
        disconnect_threshold_paise: 100,
        ..PolicyConfig::default()
    };
    assert!(config.validate().unwrap_err().contains("zero or negative"));
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
}
