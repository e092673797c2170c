use super::*;
use proptest::prelude::*;

fn t(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000 + minutes * 60, 0).unwrap()
}

fn span(meter: u32, failed: i64, restored: Option<i64>) -> DarkSpan<u32> {
    DarkSpan {
        failed_at: t(failed),
        meter,
        restored_at: restored.map(t),
    }
}

#[test]
fn a_feeder_trip_is_one_outage_and_a_blown_fuse_is_none() {
    // 10 meters; 6 lose power within a minute (the feeder), meter 9 alone an hour later.
    let mut spans: Vec<DarkSpan<u32>> = (0..6)
        .map(|m| span(m, i64::from(m % 2), Some(60 + i64::from(m))))
        .collect();
    spans.push(span(9, 120, Some(125)));
    let outages = detect(&spans, 10, &OutageRule::default());
    assert_eq!(
        outages,
        vec![Outage {
            started_at: t(0),
            // Restorations at 60..=65: the lower median of six is the third, 62.
            ended_at: Some(t(62)),
            meters: vec![0, 1, 2, 3, 4, 5],
        }]
    );
}

#[test]
fn an_outage_is_going_on_until_half_its_meters_report_power_back() {
    let rule = OutageRule::default();
    let spans = vec![
        span(1, 0, Some(30)),
        span(2, 0, None),
        span(3, 1, None),
        span(4, 1, None),
    ];
    assert_eq!(detect(&spans, 4, &rule)[0].ended_at, None);
    let spans = vec![
        span(1, 0, Some(30)),
        span(2, 0, Some(40)),
        span(3, 1, None),
        span(4, 1, None),
    ];
    assert_eq!(detect(&spans, 4, &rule)[0].ended_at, Some(t(40)));
}

#[test]
fn too_few_meters_or_too_small_a_share_is_no_outage() {
    let rule = OutageRule::default();
    let two = vec![span(1, 0, Some(5)), span(2, 0, Some(5))];
    assert!(detect(&two, 2, &rule).is_empty(), "fewer than min_meters");
    let three = vec![
        span(1, 0, Some(5)),
        span(2, 0, Some(5)),
        span(3, 1, Some(5)),
    ];
    assert_eq!(detect(&three, 10, &rule).len(), 1, "3 of 10 is 30 %");
    assert!(
        detect(&three, 11, &rule).is_empty(),
        "3 of 11 is under 30 %"
    );
    let apart = vec![
        span(1, 0, Some(9)),
        span(2, 3, Some(9)),
        span(3, 6, Some(9)),
    ];
    assert!(
        detect(&apart, 3, &rule).is_empty(),
        "failures 3 minutes apart are not together"
    );
}

#[test]
fn meters_falling_silent_together_are_a_suspected_outage_and_old_silences_are_not() {
    let rule = OutageRule::default();
    // Ten meters; three went quiet over a poll period this evening; two have been silent for days.
    let silent = [t(-5000), t(-4000), t(600), t(610), t(614)];
    assert_eq!(
        suspected(&silent, 10, &rule),
        Some(OutageSpan {
            start: t(600),
            end: None
        })
    );
    assert_eq!(suspected(&silent[..4], 10, &rule), None, "two of ten");
    assert_eq!(
        suspected(&silent, 11, &rule),
        None,
        "three of eleven is under 30 %"
    );
    assert_eq!(suspected(&[], 10, &rule), None);
}

#[test]
fn events_pair_into_spans_per_meter() {
    let events = vec![
        ("b", t(5), false),
        ("a", t(0), true),
        ("a", t(10), false),
        ("b", t(1), true),
        ("a", t(20), true),
        ("c", t(3), false), // restoration with no failure in the window: ignored
        ("b", t(2), true),  // a second failure while dark: the first counts
    ];
    assert_eq!(
        dark_spans(&events),
        vec![
            DarkSpan {
                failed_at: t(0),
                meter: "a",
                restored_at: Some(t(10))
            },
            DarkSpan {
                failed_at: t(20),
                meter: "a",
                restored_at: None
            },
            DarkSpan {
                failed_at: t(1),
                meter: "b",
                restored_at: Some(t(5))
            },
        ]
    );
}

#[test]
fn outage_hours_after_the_crossing_move_the_grace_on() {
    let crossed = t(0);
    let end = t(600);
    // An outage from before the crossing to 60 minutes after it: 60 minutes more.
    let before = OutageSpan {
        start: t(-30),
        end: Some(t(60)),
    };
    // One of 100 minutes inside the grace, and one after the moved end: ignored.
    let inside = OutageSpan {
        start: t(300),
        end: Some(t(400)),
    };
    let after = OutageSpan {
        start: t(800),
        end: Some(t(900)),
    };
    assert_eq!(grace_end(crossed, end, &[]), Some(end));
    assert_eq!(
        grace_end(crossed, end, &[after, inside, before]),
        Some(t(760))
    );
    // An outage that began at 700, inside the moved grace, moves it again.
    let late = OutageSpan {
        start: t(700),
        end: Some(t(710)),
    };
    assert_eq!(
        grace_end(crossed, end, &[late, inside, before]),
        Some(t(770))
    );
    let going_on = OutageSpan {
        start: t(500),
        end: None,
    };
    assert_eq!(grace_end(crossed, end, &[going_on]), None);
}

#[test]
fn one_outage_recorded_twice_moves_the_grace_once() {
    let (crossed, end) = (t(0), t(600));
    // Seen first as the meters' silence, then from their power events, a little wider.
    let from_silence = OutageSpan {
        start: t(100),
        end: Some(t(200)),
    };
    let from_events = OutageSpan {
        start: t(95),
        end: Some(t(190)),
    };
    assert_eq!(
        grace_end(crossed, end, &[from_silence, from_events]),
        Some(t(705))
    );
}

fn spans() -> impl Strategy<Value = Vec<DarkSpan<u32>>> {
    proptest::collection::vec(
        (0u32..12, 0i64..600, proptest::option::of(1i64..300)),
        0..40,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .map(|(meter, failed, length)| span(meter, failed, length.map(|l| failed + l)))
            .collect()
    })
}

proptest! {
    #[test]
    fn outages_depend_on_the_set_of_spans_not_their_order(
        spans in spans(),
        seed in any::<u64>(),
        total in 1usize..20,
    ) {
        let rule = OutageRule::default();
        let mut shuffled = spans.clone();
        crate::testing::shuffle(&mut shuffled, seed);
        prop_assert_eq!(detect(&spans, total, &rule), detect(&shuffled, total, &rule));
    }

    #[test]
    fn an_outage_has_enough_meters_and_ends_after_it_starts(spans in spans(), total in 1usize..20) {
        let rule = OutageRule::default();
        for outage in detect(&spans, total, &rule) {
            prop_assert!(outage.meters.len() >= rule.min_meters);
            prop_assert!(outage.meters.len() * 100 >= total * usize::from(rule.min_share_percent));
            prop_assert!(outage.meters.windows(2).all(|w| w[0] < w[1]));
            if let Some(end) = outage.ended_at {
                prop_assert!(end > outage.started_at);
            }
        }
    }

    #[test]
    fn outages_never_shorten_a_grace(
        raw in proptest::collection::vec((0i64..1000, proptest::option::of(0i64..300)), 0..6),
        grace in 0i64..800,
    ) {
        let outages: Vec<OutageSpan> = raw
            .iter()
            .map(|&(start, length)| OutageSpan { start: t(start), end: length.map(|l| t(start + l)) })
            .collect();
        if let Some(end) = grace_end(t(0), t(grace), &outages) {
            prop_assert!(end >= t(grace));
            let total: i64 = raw.iter().filter_map(|&(_, l)| l).sum();
            prop_assert!(end <= t(grace + total));
        }
        // The same outage on record twice moves the grace no further than once.
        let mut twice = outages.clone();
        twice.extend(outages.iter().copied());
        prop_assert_eq!(grace_end(t(0), t(grace), &twice), grace_end(t(0), t(grace), &outages));
    }
}
