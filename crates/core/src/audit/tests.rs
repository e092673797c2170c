use super::*;
use crate::testing::shuffle;
use proptest::prelude::*;

fn t(minutes: i64) -> DateTime<Utc> {
    // 2026-12-01 00:00 IST.
    DateTime::from_timestamp(1_796_063_400, 0).unwrap() + Duration::minutes(minutes)
}

fn reading(minutes: i64, register_wh: i64) -> RegisterReading {
    RegisterReading::import(t(minutes), register_wh)
}

#[test]
fn a_gap_is_spread_evenly_and_adds_up_and_a_long_one_stays_unknown() {
    let readings = [
        reading(0, 1_000),
        reading(15, 1_040),
        // Readings at 30, 45 and 60 were missed: 100 Wh over four intervals.
        reading(75, 1_140),
        reading(90, 1_150),
        // Five hours of silence: nothing is known about them.
        reading(390, 2_000),
    ];
    let energy = interval_energy(&readings, t(0), 8);
    assert_eq!(
        energy,
        vec![
            Some(40),
            Some(25),
            Some(25),
            Some(25),
            Some(25),
            Some(10),
            None,
            None
        ]
    );
    // 100 Wh over three intervals: 33 + 33 + 34, never a lost or invented watt-hour.
    let uneven = interval_energy(&[reading(0, 0), reading(45, 100)], t(0), 3);
    assert_eq!(uneven, vec![Some(33), Some(33), Some(34)]);
    // Before the first reading, after the last, or across a register that went back: unknown.
    assert_eq!(
        interval_energy(&[reading(15, 50), reading(30, 20)], t(0), 3),
        vec![None, None, None]
    );
}

proptest! {
    #[test]
    fn interval_energy_depends_only_on_the_set_of_readings(
        steps in proptest::collection::vec((1i64..=4, 0i64..500), 1..30),
        seed in any::<u64>(),
        duplicate in any::<prop::sample::Index>(),
    ) {
        let mut at = 0;
        let mut register = 10_000;
        let mut readings = vec![reading(0, register)];
        for (intervals, wh) in steps {
            at += 15 * intervals;
            register += wh;
            readings.push(reading(at, register));
        }
        let n = (at / 15) as usize;
        let reference = interval_energy(&readings, t(0), n);
        // Every interval is covered (no span is longer than an hour) and they add up exactly.
        prop_assert_eq!(reference.iter().flatten().sum::<i64>(), register - 10_000);
        let mut shuffled = readings.clone();
        shuffled.push(readings[duplicate.index(readings.len())]);
        shuffle(&mut shuffled, seed);
        prop_assert_eq!(interval_energy(&shuffled, t(0), n), reference);
    }
}

fn consumer(meter: &str, energy: Vec<Option<i64>>) -> ConsumerDay<String> {
    ConsumerDay {
        meter: meter.to_owned(),
        exported: vec![Some(0); energy.len()],
        energy,
        usual: None,
        connected: true,
        tamper_kinds: Vec::new(),
    }
}

fn rule() -> AuditRule {
    AuditRule {
        technical_loss_percent: 4.0,
        flag_above_percent: 1.0,
        near_zero_wh: 100,
        min_intervals: 2,
    }
}

#[test]
fn the_day_compares_only_intervals_everyone_reported_with_supply_on() {
    let transformer = [Some(1_000), Some(1_200), Some(0), Some(900), None];
    let consumers = [
        consumer("M1", vec![Some(500), Some(600), Some(0), None, Some(10)]),
        consumer(
            "M2",
            vec![Some(450), Some(500), Some(0), Some(400), Some(10)],
        ),
    ];
    let audit = audit_day(&rule(), &transformer, &consumers);
    // Interval 2 had no supply, 3 misses M1, 4 misses the transformer.
    assert_eq!(
        audit.interval_loss,
        vec![Some(50), Some(100), None, None, None]
    );
    assert_eq!(audit.intervals_compared, 2);
    assert_eq!(audit.transformer_wh, 2_200);
    assert_eq!(audit.consumers_wh, 2_050);
    assert_eq!(audit.loss_wh(), 150);
    // 4 % of 2,200 is 88 Wh; the rest, 62 Wh, is 2.8 % of 2,200: above the 1 % threshold.
    assert_eq!(audit.allowance_wh, 88);
    assert!(audit.flagged);
    // Within the allowance and the threshold: not flagged, nobody listed.
    let lenient = AuditRule {
        technical_loss_percent: 5.0,
        flag_above_percent: 2.0,
        ..rule()
    };
    let calm = audit_day(&lenient, &transformer, &consumers);
    assert!(!calm.flagged);
    assert!(calm.suspects.is_empty());
    // Too few intervals compared: reported, never flagged.
    let strict = AuditRule {
        min_intervals: 3,
        ..rule()
    };
    assert!(!audit_day(&strict, &transformer, &consumers).flagged);
}

fn household_wh_at(meter: usize, k: usize) -> i64 {
    100 + ((k * 7 + meter * 13) % 11) as i64 * 10
}

/// A village evening: 40 intervals, loads rising and falling; `thief` stops recording in the
/// last 16 while its load still comes off the transformer.
fn evening(thief_from: usize) -> (Vec<Option<i64>>, Vec<ConsumerDay<String>>) {
    let n = 40;
    let load = household_wh_at;
    let mut consumers = Vec::new();
    let mut transformer = vec![0i64; n];
    for meter in 0..6 {
        let mut energy = Vec::new();
        for (k, delivered) in transformer.iter_mut().enumerate() {
            let true_load = load(meter, k);
            *delivered += true_load * 104 / 100;
            let bypassed = meter == 0 && k >= thief_from;
            energy.push(Some(if bypassed { 0 } else { true_load }));
        }
        let usual = (0..INTERVALS_PER_DAY)
            .map(|k| (k < n).then(|| load(meter, k)))
            .collect();
        consumers.push(ConsumerDay {
            usual: Some(usual),
            ..consumer(&format!("M{meter}"), energy)
        });
    }
    (transformer.into_iter().map(Some).collect(), consumers)
}

#[test]
fn a_meter_whose_consumption_falls_when_the_loss_rises_ranks_first() {
    let (transformer, mut consumers) = evening(24);
    consumers[3].tamper_kinds = vec!["tamper_magnet".into()];
    // A meter that stopped: nothing all day, and no usual day to compare with.
    consumers[5].energy = vec![Some(1); 40];
    consumers[5].usual = None;
    // A household that used 30 % less than usual all evening: ordinary, not evidence.
    for wh in consumers[2].energy.iter_mut().flatten() {
        *wh = *wh * 7 / 10;
    }
    let audit = audit_day(&rule(), &transformer, &consumers);
    assert!(audit.flagged);
    let listed: Vec<&str> = audit.suspects.iter().map(|s| s.meter.as_str()).collect();
    assert_eq!(listed, vec!["M0", "M5", "M3"], "{:?}", audit.suspects);
    // In the quarter of the evening with the most loss (10 intervals, all bypassed) it recorded
    // nothing of its usual: the whole 60 points.
    let thief = &audit.suspects[0];
    assert!(
        matches!(
            thief.evidence[..],
            [Evidence::FallsWithLoss { usual_wh, recorded_wh: 0 }] if usual_wh >= 10 * 100
        ),
        "{thief:?}"
    );
    assert_eq!(thief.score, 60);
    assert_eq!(
        audit.suspects[1].evidence,
        vec![Evidence::NearZero { recorded_wh: 40 }]
    );
    assert_eq!(audit.suspects[1].score, 40);
    assert_eq!(
        audit.suspects[2].evidence,
        vec![Evidence::Tamper {
            kinds: vec!["tamper_magnet".into()]
        }]
    );
    // Honest meters are not listed.
    assert!(!listed.contains(&"M1") && !listed.contains(&"M2"));
}

#[test]
fn no_evidence_without_history_or_from_a_disconnected_meter() {
    let (transformer, mut consumers) = evening(24);
    for c in &mut consumers {
        c.usual = None;
    }
    consumers[5].connected = false;
    consumers[5].energy = vec![Some(0); 40];
    let audit = audit_day(&rule(), &transformer, &consumers);
    assert!(audit.flagged);
    assert!(audit.suspects.is_empty(), "{:?}", audit.suspects);
}

#[test]
fn usual_day_averages_the_known_days_only() {
    let mut first = vec![None; INTERVALS_PER_DAY];
    let mut second = vec![None; INTERVALS_PER_DAY];
    first[0] = Some(10);
    second[0] = Some(21);
    second[1] = Some(7);
    let usual = usual_day(&[first, second]);
    assert_eq!(&usual[..3], &[Some(15), Some(7), None]);
}

#[test]
fn the_rule_refuses_impossible_settings() {
    assert_eq!(AuditRule::default().problem(), None);
    let bad = AuditRule {
        technical_loss_percent: 60.0,
        ..AuditRule::default()
    };
    assert!(bad
        .problem()
        .unwrap()
        .contains("technical_loss_percent = 60"));
    let bad = AuditRule {
        min_intervals: 97,
        ..AuditRule::default()
    };
    assert!(bad.problem().unwrap().contains("min_intervals = 97"));
}
