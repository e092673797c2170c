use super::*;
use chrono::TimeZone;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// 2026-10-31 12:00 UTC: the first month boundary (local midnight) is 6.5 hours later.
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 31, 12, 0, 0).unwrap()
}

fn at_interval(i: i64) -> DateTime<Utc> {
    start() + chrono::Duration::minutes(15 * i)
}

fn reading(i: i64, register_wh: i64) -> RegisterReading {
    RegisterReading::import(at_interval(i), register_wh)
}

/// A meter as the store keeps it: readings by time and energy per segment.
#[derive(Default)]
struct Meter {
    /// Import and export registers by time.
    readings: BTreeMap<DateTime<Utc>, (i64, i64)>,
    segments: HashMap<SegmentKey, SegmentEnergy>,
    charged: Cost,
    anomalies: usize,
}

impl Meter {
    fn arrive(&mut self, book: &TariffBook, r: RegisterReading) {
        if self.readings.contains_key(&r.at) {
            return; // duplicate
        }
        let as_reading =
            |(at, (register_wh, export_wh)): (&DateTime<Utc>, &(i64, i64))| RegisterReading {
                at: *at,
                register_wh: *register_wh,
                export_wh: *export_wh,
            };
        let neighbours = Neighbours {
            previous: self.readings.range(..r.at).next_back().map(as_reading),
            next: self.readings.range(r.at..).next().map(as_reading),
        };
        let rated = rate_arrival(book, Category::Domestic, neighbours, r, |k| {
            self.segments.get(k).copied().unwrap_or_default()
        })
        .unwrap();
        for change in rated.changes {
            let totals = self.segments.entry(change.key).or_default();
            *totals = *totals + change.delta;
        }
        self.charged = self.charged + rated.charge;
        self.anomalies += rated.anomalies.len();
        self.readings.insert(r.at, (r.register_wh, r.export_wh));
    }
}

/// The time-of-day basis points of `book()` at a UTC instant, written out by hand: IST is UTC+5:30;
/// 18:00–22:00 is +25 %, 09:00–16:00 is −20 %.
fn reference_basis_points(at: DateTime<Utc>) -> i64 {
    let minute = (at.timestamp().rem_euclid(86_400) / 60 + 330) % 1_440;
    match minute {
        1_080..1_320 => 2_500,
        540..960 => -2_000,
        _ => 0,
    }
}

/// The specification: sort the set, walk consecutive spans, bill each in its later reading's
/// segment, weighted by the time-of-day slot of its start when it is one interval long.
fn reference_segments(
    book: &TariffBook,
    set: &BTreeMap<DateTime<Utc>, (i64, i64)>,
) -> BTreeMap<SegmentKey, SegmentEnergy> {
    let mut totals: BTreeMap<SegmentKey, SegmentEnergy> = BTreeMap::new();
    let points: Vec<_> = set.iter().collect();
    for pair in points.windows(2) {
        let energy = (pair[1].1 .0 - pair[0].1 .0).max(0);
        let export = (pair[1].1 .1 - pair[0].1 .1).max(0);
        let one_interval = (*pair[1].0 - *pair[0].0).num_minutes() <= 15;
        let basis_points = if one_interval {
            reference_basis_points(*pair[0].0)
        } else {
            0
        };
        let key = book
            .segment_at(Category::Domestic, *pair[1].0)
            .unwrap()
            .key();
        let totals = totals.entry(key).or_default();
        totals.wh += energy;
        totals.tod_weight += energy * basis_points;
        totals.export_wh += export;
    }
    totals.retain(|_, e| *e != SegmentEnergy::default());
    totals
}

/// The built-in book with duty and time-of-day slots on the domestic tariff.
fn book() -> TariffBook {
    let mut versions = TariffBook::builtin().versions().to_vec();
    versions[0].duty_percent = 8.0;
    versions[0].tod = vec![
        crate::tariff::tests::slot("peak", "18:00", "22:00", 25.0),
        crate::tariff::tests::slot("solar", "09:00", "16:00", -20.0),
    ];
    TariffBook::new(versions).unwrap()
}

fn cost_of(book: &TariffBook, segments: &BTreeMap<SegmentKey, SegmentEnergy>) -> Cost {
    segments.iter().fold(Cost::default(), |acc, (key, energy)| {
        acc + book
            .segment(Category::Domestic, key)
            .unwrap()
            .cost_of(*energy)
    })
}

fn sorted(m: &Meter) -> BTreeMap<SegmentKey, SegmentEnergy> {
    let mut s: BTreeMap<_, _> = m.segments.clone().into_iter().collect();
    s.retain(|_, e| *e != SegmentEnergy::default());
    s
}

#[test]
fn first_reading_is_a_baseline_and_gaps_lose_nothing() {
    let book = book();
    let mut m = Meter::default();
    m.arrive(&book, reading(0, 1_000));
    assert_eq!(m.charged, Cost::default());
    m.arrive(&book, reading(1, 1_400));
    m.arrive(&book, reading(9, 3_400)); // seven intervals missing, but in the same (October) day
    let october = book
        .segment_at(Category::Domestic, at_interval(1))
        .unwrap()
        .key();
    assert_eq!(m.segments[&october].wh, 2_400);
    assert_eq!(m.charged, cost_of(&book, &sorted(&m)));
}

#[test]
fn a_late_reading_across_a_month_boundary_moves_energy_to_its_own_month() {
    let book = book();
    let mut m = Meter::default();
    m.arrive(&book, reading(0, 0)); // 31 Oct 17:30 IST
    m.arrive(&book, reading(30, 30_000)); // 1 Nov 01:00 IST: all 30 kWh billed in November
    let october = book
        .segment_at(Category::Domestic, at_interval(0))
        .unwrap()
        .key();
    let november = book
        .segment_at(Category::Domestic, at_interval(30))
        .unwrap()
        .key();
    assert_eq!(m.segments.get(&october), None);
    assert_eq!(m.segments[&november].wh, 30_000);
    m.arrive(&book, reading(20, 21_000)); // 31 Oct 22:30 IST, arrives late
    assert_eq!(m.segments[&october].wh, 21_000);
    assert_eq!(m.segments[&november].wh, 9_000);
    assert_eq!(m.charged, cost_of(&book, &sorted(&m)));
}

#[test]
fn a_register_that_goes_back_bills_nothing_and_is_reported() {
    let book = book();
    let mut m = Meter::default();
    m.arrive(&book, reading(0, 50_000));
    m.arrive(&book, reading(1, 10)); // reset
    m.arrive(&book, reading(2, 510));
    assert_eq!(m.anomalies, 1);
    assert_eq!(m.segments.values().map(|e| e.wh).sum::<i64>(), 500);
}

#[test]
fn no_tariff_in_force_is_an_error_naming_the_category() {
    let book = book();
    let old = RegisterReading::import(Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap(), 10);
    let neighbours = Neighbours {
        previous: Some(RegisterReading::import(
            old.at - chrono::Duration::minutes(15),
            0,
        )),
        next: None,
    };
    let err = rate_arrival(&book, Category::Domestic, neighbours, old, |_| {
        SegmentEnergy::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("no domestic tariff"), "{err}");
}

/// A meter's life: readings mostly one interval apart (so time-of-day slots count), with gaps, and
/// import and export registers that mostly rise and sometimes reset (a rooftop-solar home's meter:
/// some intervals export more than they import).
fn readings_strategy() -> impl Strategy<Value = Vec<RegisterReading>> {
    let step = (
        prop_oneof![4 => Just(1i64), 1 => 2i64..12],
        0i64..2_000,
        prop_oneof![1 => Just(0i64), 1 => 0i64..3_000],
        0u8..50,
    );
    (0i64..3_000, proptest::collection::vec(step, 1..80)).prop_map(|(first, steps)| {
        let mut index = first;
        let (mut register, mut export) = (0, 0);
        steps
            .into_iter()
            .map(|(gap, increase, exported, reset_roll)| {
                index += gap;
                (register, export) = match reset_roll {
                    0 => (increase, export + exported),
                    1 => (register + increase, exported),
                    _ => (register + increase, export + exported),
                };
                RegisterReading {
                    at: at_interval(index),
                    register_wh: register,
                    export_wh: export,
                }
            })
            .collect()
    })
}

#[test]
fn an_evening_interval_pays_the_peak_surcharge_and_a_gap_pays_the_slab_rate() {
    let book = book();
    let mut m = Meter::default();
    // Interval 2 starts 2026-10-31 18:00 IST: the peak slot.
    m.arrive(&book, reading(2, 0));
    m.arrive(&book, reading(3, 1_000));
    // 1 kWh at ₹3.70 = 370 paise; +25 % = 92.5 → 92; duty 8 % of 462 = 36.96 → 36.
    assert_eq!(
        m.charged,
        Cost {
            energy_paise: 370,
            tod_paise: 92,
            duty_paise: 36
        }
    );
    // Seven intervals missed: 1 kWh of unknown time of use at the slab rate.
    m.arrive(&book, reading(10, 2_000));
    assert_eq!(m.charged.energy_paise, 740);
    assert_eq!(m.charged.tod_paise, 92);
    // The missing readings arrive: the hour from 18:15 is peak too, and the charge follows.
    for (i, register) in (4..10).zip((1_100..).step_by(100)) {
        m.arrive(&book, reading(i, register));
    }
    assert_eq!(m.charged.tod_paise, 185); // 370 × 2,000 Wh × 25 % / 2,000 Wh = 185
    assert_eq!(m.charged, cost_of(&book, &sorted(&m)));
}

proptest! {
    /// Charging is unchanged by duplicated or reordered readings: the segment totals equal the
    /// specification's, and what was charged equals the cost of those totals, to the paisa.
    #[test]
    fn charging_is_independent_of_order_and_duplication(
        readings in readings_strategy(),
        order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..120),
    ) {
        let book = book();
        let mut arrivals: Vec<RegisterReading> = readings.clone();
        for index in &order {
            arrivals.push(*index.get(&readings)); // duplicates
        }
        // A deterministic shuffle driven by the generated indices.
        for (i, index) in order.iter().enumerate() {
            let len = arrivals.len();
            arrivals.swap(i % len, index.index(len));
        }
        let mut meter = Meter::default();
        for r in arrivals {
            meter.arrive(&book, r);
        }
        let set: BTreeMap<_, _> = readings
            .iter()
            .map(|r| (r.at, (r.register_wh, r.export_wh)))
            .collect();
        let expected = reference_segments(&book, &set);
        prop_assert_eq!(sorted(&meter), expected.clone());
        prop_assert_eq!(meter.charged, cost_of(&book, &expected));
    }
}

fn solar_reading(i: i64, register_wh: i64, export_wh: i64) -> RegisterReading {
    RegisterReading {
        at: at_interval(i),
        register_wh,
        export_wh,
    }
}

#[test]
fn a_solar_home_pays_for_its_net_units_and_its_surplus_is_not_charged() {
    let book = book();
    let mut m = Meter::default();
    // 31 Oct 17:30 IST onwards: outside the slots until 18:00.
    m.arrive(&book, solar_reading(0, 10_000, 4_000));
    m.arrive(&book, solar_reading(1, 12_000, 4_500)); // 2 kWh in, 0.5 kWh out
                                                      // Net 1.5 kWh at ₹3.70 = 555 paise; duty 8 % = 44.4 → 44.
    assert_eq!(
        m.charged,
        Cost {
            energy_paise: 555,
            tod_paise: 0,
            duty_paise: 44
        }
    );
    // A reading after a gap, still in October: 1 kWh in, 6 kWh out. The month's export now
    // exceeds its import: nothing is charged, and what was charged is given back.
    m.arrive(&book, solar_reading(20, 13_000, 10_500));
    assert_eq!(m.charged, Cost::default());
    let segment = *m.segments.values().next().unwrap();
    assert_eq!(segment.net_wh(), 0);
    assert_eq!(segment.surplus_wh(), 3_500);
    assert_eq!(m.charged, cost_of(&book, &sorted(&m)));
}

#[test]
fn an_export_register_that_goes_back_credits_nothing_and_bills_the_import() {
    let book = book();
    let mut m = Meter::default();
    m.arrive(&book, solar_reading(0, 10_000, 9_000));
    m.arrive(&book, solar_reading(1, 11_000, 5)); // export register reset
    assert_eq!(m.anomalies, 1);
    assert_eq!(m.charged.energy_paise, 370); // 1 kWh, no export credited
    m.arrive(&book, solar_reading(2, 12_000, 505)); // 0.5 kWh exported from the new baseline
    assert_eq!(m.charged.energy_paise, 555);
}

#[test]
fn an_installation_baselines_unknown_export_credits_nothing_and_the_next_reading_is_the_baseline() {
    let book = book();
    let mut m = Meter::default();
    // A net meter that had exported 40 kWh before it was installed; its export was not read.
    m.arrive(&book, solar_reading(0, 10_000, EXPORT_UNKNOWN));
    m.arrive(&book, solar_reading(1, 11_000, 40_000));
    assert_eq!((m.anomalies, m.charged.energy_paise), (0, 370)); // 1 kWh, no export credited
    m.arrive(&book, solar_reading(2, 12_000, 40_500)); // 0.5 kWh exported from there
    assert_eq!(m.charged.energy_paise, 555);
}

proptest! {
    /// Reading a month's spans again from the set of readings gives the segment totals that
    /// rating accumulated arrival by arrival, in any order, with each slot's Wh weighing what the
    /// segment's time-of-day weight holds.
    #[test]
    fn a_months_usage_read_again_is_what_rating_accumulated(
        readings in readings_strategy(),
        seed in any::<u64>(),
    ) {
        let book = book();
        let mut arrivals = readings.clone();
        crate::testing::shuffle(&mut arrivals, seed);
        let mut meter = Meter::default();
        for r in &arrivals {
            meter.arrive(&book, *r);
        }
        let accumulated = sorted(&meter);
        let months: std::collections::BTreeSet<Month> =
            readings.iter().map(|r| Month::containing(r.at)).collect();
        let mut read_again = BTreeMap::new();
        for month in months {
            for part in month_usage(&book, Category::Domestic, month, &[arrivals.clone()]).unwrap() {
                prop_assert_eq!(part.segment.month, month);
                let tod_weight: i64 = part
                    .segment
                    .version
                    .tod
                    .iter()
                    .zip(&part.slot_wh)
                    .map(|(slot, wh)| wh * slot.basis_points())
                    .sum();
                read_again.insert(
                    part.segment.key(),
                    SegmentEnergy { wh: part.wh, tod_weight, export_wh: part.export_wh },
                );
            }
        }
        read_again.retain(|_, e| *e != SegmentEnergy::default());
        prop_assert_eq!(read_again, accumulated);
    }
}

#[test]
fn a_months_usage_takes_only_the_spans_read_in_it() {
    let book = book();
    // Interval 25 ends at 2026-11-01 00:15 IST; interval 26 is the first read in November (the
    // boundary is 18:30 UTC, interval 26 exactly).
    let readings = vec![
        reading(20, 0),
        reading(25, 500),
        reading(26, 600),
        reading(27, 900),
    ];
    let october = Month::parse("2026-10").unwrap();
    let november = Month::parse("2026-11").unwrap();
    let oct = month_usage(
        &book,
        Category::Domestic,
        october,
        std::slice::from_ref(&readings),
    )
    .unwrap();
    let nov = month_usage(&book, Category::Domestic, november, &[readings]).unwrap();
    assert_eq!(oct.iter().map(|u| u.wh).sum::<i64>(), 500);
    assert_eq!(nov.iter().map(|u| u.wh).sum::<i64>(), 400);
    // The span from 20 to 25 is longer than an interval: no slot; 25→26 and 26→27 are after
    // midnight, outside both slots.
    assert!(oct
        .iter()
        .chain(&nov)
        .all(|u| u.slot_wh.iter().all(|wh| *wh == 0)));
}
