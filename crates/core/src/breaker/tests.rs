use super::*;
use chrono::TimeZone;
use proptest::prelude::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 5, 0, 0).unwrap()
}

fn calm(accounts: usize) -> PassFacts {
    PassFacts {
        accounts,
        clock_trusted: true,
        ledger_consistent: true,
        last_sync_at: Some(now() - Duration::hours(1)),
        ..PassFacts::default()
    }
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("A{i}")).collect()
}

#[test]
fn a_tenth_of_the_village_may_go_in_a_day_and_no_more() {
    let config = BreakerConfig::default();
    let facts = calm(200);
    let ok = admit(&config, &facts, &ids(0..20), None, now());
    assert_eq!(ok.admitted.len(), 20);
    assert!(ok.trips.is_empty());
    let held = admit(&config, &facts, &ids(0..21), None, now());
    assert!(held.admitted.is_empty(), "all or nothing");
    assert_eq!(held.held.len(), 21);
    assert_eq!(
        held.trips,
        vec![Trip::TooMany {
            wanted: 21,
            limit: 20,
            accounts: 200
        }]
    );
    // Earlier passes of the day count.
    let later = PassFacts {
        disconnected_today: 18,
        ..calm(200)
    };
    assert!(!admit(&config, &later, &ids(0..3), None, now())
        .trips
        .is_empty());
    // A small village may always lose a few.
    assert!(admit(&config, &calm(12), &ids(0..3), None, now())
        .trips
        .is_empty());
}

#[test]
fn a_jump_above_the_recent_average_trips() {
    let config = BreakerConfig::default();
    let facts = PassFacts {
        recent_days: vec![1; 14],
        ..calm(1_000)
    };
    // 4 × 1 a day: the fifth trips, far below the 100 the share would allow.
    assert!(admit(&config, &facts, &ids(0..4), None, now())
        .trips
        .is_empty());
    let held = admit(&config, &facts, &ids(0..5), None, now());
    assert_eq!(
        held.trips,
        vec![Trip::AboveBaseline {
            wanted: 5,
            average_tenths: 10,
            limit: 4
        }]
    );
    // Too little history: the baseline does not apply yet.
    let young = PassFacts {
        recent_days: vec![0; 3],
        ..calm(1_000)
    };
    assert!(admit(&config, &young, &ids(0..50), None, now())
        .trips
        .is_empty());
}

#[test]
fn changes_that_make_a_wrong_cut_likely_hold_for_a_day() {
    let config = BreakerConfig::default();
    let hour_ago = now() - Duration::hours(1);
    let cases = [
        (
            PassFacts {
                policy_changed_at: Some(hour_ago),
                ..calm(100)
            },
            Trip::PolicyChanged { at: hour_ago },
        ),
        (
            PassFacts {
                tariff_changed_at: Some(hour_ago),
                ..calm(100)
            },
            Trip::TariffChanged { at: hour_ago },
        ),
        (
            PassFacts {
                clock_trusted: false,
                ..calm(100)
            },
            Trip::ClockUntrusted,
        ),
        (
            PassFacts {
                clock_jumped_at: Some(hour_ago),
                ..calm(100)
            },
            Trip::ClockJumped { at: hour_ago },
        ),
        (
            PassFacts {
                database_restored_at: Some(hour_ago),
                ..calm(100)
            },
            Trip::DatabaseRestored { at: hour_ago },
        ),
        (
            PassFacts {
                last_sync_at: Some(now() - Duration::days(4)),
                ..calm(100)
            },
            Trip::SyncGap {
                last: now() - Duration::days(4),
            },
        ),
        (
            PassFacts {
                ledger_consistent: false,
                ..calm(100)
            },
            Trip::LedgerInconsistent,
        ),
    ];
    for (facts, trip) in cases {
        let admission = admit(&config, &facts, &ids(0..1), None, now());
        assert_eq!(admission.trips, vec![trip.clone()], "{trip}");
        assert!(admission.admitted.is_empty());
    }
    // A day later the change no longer holds; a gateway that never synced is not in a gap.
    let old = PassFacts {
        policy_changed_at: Some(now() - Duration::hours(25)),
        last_sync_at: None,
        ..calm(100)
    };
    assert!(admit(&config, &old, &ids(0..1), None, now())
        .trips
        .is_empty());
}

#[test]
fn a_release_lets_exactly_its_accounts_go() {
    let config = BreakerConfig::default();
    let facts = calm(100);
    let held = admit(&config, &facts, &ids(0..40), None, now());
    let release = Release {
        hold_id: "h1".into(),
        accounts: held.held.iter().cloned().collect(),
    };
    let released = admit(&config, &facts, &ids(0..40), Some(&release), now());
    assert_eq!(released.admitted.len(), 40);
    assert!(released.release_used);
    // An account the release did not name is judged as usual: 41 today trips.
    let more = admit(&config, &facts, &ids(0..41), Some(&release), now());
    assert_eq!(more.admitted.len(), 40);
    assert_eq!(more.held, vec!["A40".to_string()]);
}

proptest! {
    /// No sequence of passes in a day disconnects more than the day's limit without a release,
    /// and a release lets through only the accounts it names, in the one pass that uses it.
    #[test]
    fn nothing_beyond_the_limit_goes_without_a_release(
        accounts in 0usize..400,
        percent in 0u8..=100,
        always in 0u32..10,
        passes in proptest::collection::vec((0usize..60, any::<bool>()), 1..20),
    ) {
        let config = BreakerConfig { max_share_percent: percent, always_allowed: always, ..BreakerConfig::default() };
        let limit = config.daily_limit(accounts);
        // The gateway's shell, modelled: the day's count, and a release until a pass uses it.
        let (mut today, mut unreleased_total) = (0usize, 0usize);
        let mut release: Option<Release> = None;
        let mut next = 0usize;
        for (count, supervisor_releases) in passes {
            let wanted: Vec<String> = (next..next + count).map(|i| format!("A{i}")).collect();
            let facts = PassFacts { disconnected_today: today, ..calm(accounts) };
            let admission = admit(&config, &facts, &wanted, release.as_ref(), now());
            let named = |a: &String| release.as_ref().is_some_and(|r| r.accounts.contains(a));
            let unreleased = admission.admitted.iter().filter(|a| !named(a)).count();
            prop_assert_eq!(admission.admitted.len() + admission.held.len(), wanted.len());
            prop_assert!(admission.held.iter().all(|a| !named(a)));
            unreleased_total += unreleased;
            prop_assert!(unreleased_total <= limit, "{} went without a release, limit {}", unreleased_total, limit);
            if admission.release_used {
                release = None;
            }
            today += admission.admitted.len();
            if admission.held.is_empty() {
                next += count;
            } else if supervisor_releases {
                // The held accounts stay wanted; the supervisor releases this hold for the next pass.
                release = Some(Release { hold_id: format!("h{next}"), accounts: admission.held.iter().cloned().collect() });
            }
        }
    }
}
