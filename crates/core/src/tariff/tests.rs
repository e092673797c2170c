use super::*;
use proptest::prelude::*;

fn month(text: &str) -> Month {
    Month::parse(text).unwrap()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// A time-of-day slot from its config spelling.
pub(crate) fn slot(name: &str, from: &str, to: &str, percent: f64) -> TodSlot {
    TodSlot {
        name: name.into(),
        from: ClockTime::try_from(from.to_string()).unwrap(),
        to: ClockTime::try_from(to.to_string()).unwrap(),
        percent,
    }
}

fn domestic_segment(book: &TariffBook) -> Segment<'_> {
    book.segment_on(Category::Domestic, date(2026, 11, 10))
        .unwrap()
}

/// A domestic book with a fixed charge and duty, so every component of a bill is exercised.
fn book_with_fixed_and_duty() -> TariffBook {
    let mut versions = TariffBook::builtin().versions().to_vec();
    let domestic = versions
        .iter_mut()
        .find(|v| v.category == Category::Domestic)
        .unwrap();
    domestic.fixed_monthly_paise = 6000;
    domestic.duty_percent = 8.0;
    TariffBook::new(versions).unwrap()
}

#[test]
fn quote_250_units_domestic_in_a_30_day_month() {
    let bill = TariffBook::builtin().quote(Category::Domestic, month("2026-11"), 250_000);
    // 100 × 3.70 + 100 × 3.90 + 50 × 5.30 = 370 + 390 + 265 = ₹1,025.00
    let amounts: Vec<i64> = bill.lines.iter().map(|l| l.amount_paise).collect();
    assert_eq!(amounts, vec![37_000, 39_000, 26_500]);
    assert_eq!(bill.energy_paise, 102_500);
    assert_eq!(bill.minimum_topup_paise, 0);
    assert_eq!(bill.total_paise, 102_500);
}

#[test]
fn quote_with_fixed_charge_and_duty() {
    let bill = book_with_fixed_and_duty().quote(Category::Domestic, month("2026-11"), 250_000);
    assert_eq!(bill.energy_paise, 102_500);
    assert_eq!(bill.duty_paise, 8_200); // 8 % of ₹1,025.00
    assert_eq!(bill.fixed_paise, 6_000);
    assert_eq!(bill.total_paise, 116_700);
}

/// The built-in book with an evening peak (+25 %) and a solar-hours rebate (−20 %) on domestic.
fn book_with_tod() -> TariffBook {
    let mut versions = TariffBook::builtin().versions().to_vec();
    let domestic = versions
        .iter_mut()
        .find(|v| v.category == Category::Domestic)
        .unwrap();
    domestic.tod = vec![
        slot("peak", "18:00", "22:00", 25.0),
        slot("solar", "09:00", "16:00", -20.0),
    ];
    TariffBook::new(versions).unwrap()
}

#[test]
fn quote_with_units_in_time_of_day_slots() {
    let book = book_with_tod();
    let bill = book
        .quote_usage(
            Category::Domestic,
            month("2026-11"),
            &Usage {
                units_wh: 250_000,
                slot_units: vec![("peak".into(), 60_000), ("solar".into(), 40_000)],
                max_demand_w: 0,
                export_wh: 0,
            },
        )
        .unwrap();
    assert_eq!(bill.energy_paise, 102_500);
    // Average rate ₹4.10/kWh: 60 kWh × 4.10 × 25 % = ₹61.50; 40 kWh × 4.10 × −20 % = −₹32.80.
    let lines: Vec<(&str, i64, i64)> = bill
        .tod_lines
        .iter()
        .map(|l| (l.slot.as_str(), l.units_wh, l.amount_paise))
        .collect();
    assert_eq!(
        lines,
        vec![("peak", 60_000, 6_150), ("solar", 40_000, -3_280)]
    );
    assert_eq!(bill.tod_paise, 2_870);
    assert_eq!(bill.total_paise, 105_370);
    let text = bill.to_string();
    assert!(text.contains("time of day peak"), "{text}");
    assert!(text.contains("time-of-day adjustment     28.70"), "{text}");
}

#[test]
fn an_even_quote_spreads_units_over_the_slots_hours() {
    let bill = book_with_tod().quote(Category::Domestic, month("2026-11"), 250_000);
    // 4 of 24 hours peak: 41,666 Wh; 7 of 24 solar: 72,916 Wh.
    let units: Vec<i64> = bill.tod_lines.iter().map(|l| l.units_wh).collect();
    assert_eq!(units, vec![41_666, 72_916]);
    // 102,500 × (41,666 × 2,500 − 72,916 × 2,000) / (250,000 × 10,000) = −1,708.3 → −1,709.
    assert_eq!(bill.tod_paise, -1_709);
    assert_eq!(
        bill.tod_lines.iter().map(|l| l.amount_paise).sum::<i64>(),
        -1_709
    );
}

fn slots(units_wh: i64, slot: &str, slot_wh: i64) -> Usage {
    Usage {
        units_wh,
        slot_units: vec![(slot.into(), slot_wh)],
        max_demand_w: 0,
        export_wh: 0,
    }
}

#[test]
fn a_demand_charge_is_pro_rated_by_the_days_of_each_version() {
    let mut versions = TariffBook::builtin().versions().to_vec();
    let commercial = versions
        .iter()
        .position(|v| v.category == Category::Commercial)
        .unwrap();
    versions[commercial].demand_paise_per_kw = 10_000; // ₹100 per kW
    let mut higher = versions[commercial].clone();
    higher.id = "commercial-from-the-21st".into();
    higher.effective_from = date(2026, 11, 21);
    higher.demand_paise_per_kw = 16_000;
    versions.push(higher);
    let book = TariffBook::new(versions).unwrap();
    // 4.5 kW: 20 days at ₹100 and 10 at ₹160 of 30: 300.00 + 240.00.
    assert_eq!(
        book.demand_charge(Category::Commercial, month("2026-11"), 4_500),
        54_000
    );
    let bill = book
        .quote_usage(
            Category::Commercial,
            month("2026-11"),
            &Usage {
                units_wh: 100_000,
                slot_units: Vec::new(),
                max_demand_w: 4_500,
                export_wh: 0,
            },
        )
        .unwrap();
    assert_eq!(bill.demand_paise, 54_000);
    assert_eq!(
        bill.total_paise,
        bill.energy_paise + bill.duty_paise + bill.fixed_paise + bill.minimum_topup_paise + 54_000
    );
    assert!(
        bill.to_string()
            .contains("demand charge              540.00   [4.500 kW maximum demand]"),
        "{bill}"
    );
    // The domestic tariff has no demand charge.
    assert_eq!(
        book.demand_charge(Category::Domestic, month("2026-11"), 4_500),
        0
    );
    let mut versions = book.versions().to_vec();
    versions[0].demand_paise_per_kw = -1;
    let err = TariffBook::new(versions).unwrap_err().to_string();
    assert!(err.contains("demand_paise_per_kw = -1 is outside"), "{err}");
}

#[test]
fn quote_refuses_an_unknown_slot_or_more_slot_units_than_the_month() {
    let book = book_with_tod();
    let err = book
        .quote_usage(
            Category::Domestic,
            month("2026-11"),
            &slots(10_000, "night", 1),
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "no tariff in force this month has a time-of-day slot named 'night'; its slots: peak, solar");
    let err = book
        .quote_usage(
            Category::Domestic,
            month("2026-11"),
            &slots(10_000, "peak", 10_001),
        )
        .unwrap_err();
    assert_eq!(err, QuoteError::SlotsExceedTotal);
}

#[test]
fn overlapping_or_empty_slots_are_refused_with_the_reason() {
    let mut versions = book_with_tod().versions().to_vec();
    versions[0].tod.push(slot("late", "21:00", "23:00", 10.0));
    let err = TariffBook::new(versions.clone()).unwrap_err().to_string();
    assert!(err.contains("'peak' and 'late' overlap at 21:00"), "{err}");
    versions[0].tod.pop();
    versions[0].tod.push(slot("night", "23:00", "23:00", 10.0));
    let err = TariffBook::new(versions.clone()).unwrap_err().to_string();
    assert!(err.contains("starts and ends at 23:00"), "{err}");
    versions[0].tod.pop();
    versions[0]
        .tod
        .push(slot("night", "23:00", "05:00", -100.5));
    let err = TariffBook::new(versions).unwrap_err().to_string();
    assert!(err.contains("percent = -100.5"), "{err}");
    assert!(ClockTime::try_from("24:00".to_string()).is_err());
    assert_eq!(
        ClockTime::try_from("06:05".to_string())
            .unwrap()
            .to_string(),
        "06:05"
    );
}

#[test]
fn fixed_charge_per_day_adds_up_to_the_month_in_every_month_length() {
    let book = book_with_fixed_and_duty();
    for m in ["2026-02", "2028-02", "2026-04", "2026-05"] {
        let m = month(m);
        let days: Vec<i64> = m
            .first_day()
            .unwrap()
            .iter_days()
            .take(m.days() as usize)
            .map(|d| book.fixed_charge_for_day(Category::Domestic, d))
            .collect();
        assert_eq!(days.iter().sum::<i64>(), 6_000, "{m}");
        assert!(
            days.iter().all(|d| (193..=215).contains(d)),
            "{m}: {days:?}"
        );
    }
}

#[test]
fn minimum_charge_tops_up_a_small_month() {
    let bill = TariffBook::builtin().quote(Category::Domestic, month("2026-11"), 5_000);
    assert_eq!(bill.energy_paise, 1_850);
    assert_eq!(bill.minimum_topup_paise, 2_150);
    assert_eq!(bill.total_paise, 4_000);
}

#[test]
fn slab_boundaries_are_exact() {
    let book = TariffBook::builtin();
    let seg = domestic_segment(&book);
    let cases = [
        (0, 0),
        (100_000, 37_000),
        (100_001, 37_000), // 1 Wh at 3.90/kWh is 0.39 paise: floored
        (100_003, 37_001),
        (200_000, 76_000),
        (400_000, 182_000),
        (600_000, 308_000),
        (601_000, 308_790),
    ];
    for (wh, paise) in cases {
        assert_eq!(seg.cost(wh).energy_paise, paise, "{wh} Wh");
    }
}

#[test]
fn a_month_spanning_a_version_change_is_rated_piecewise() {
    let mut versions = TariffBook::builtin().versions().to_vec();
    let mut revised = versions[0].clone();
    revised.id = "revised".into();
    revised.effective_from = date(2026, 11, 16);
    for slab in &mut revised.slabs {
        slab.paise_per_kwh = slab.paise_per_kwh * 11 / 10;
    }
    versions.push(revised);
    let book = TariffBook::new(versions).unwrap();
    let segments = book.segments_of(Category::Domestic, month("2026-11"));
    assert_eq!(segments.len(), 2);
    assert_eq!((segments[0].days(), segments[1].days()), (15, 15));
    let bill = book.quote(Category::Domestic, month("2026-11"), 300_000);
    // Each half gets 150 units with slab limits halved (50, 100, 200, 300 units).
    // old: 50×3.70 + 50×3.90 + 50×5.30 = 645.00; new: 50×4.07 + 50×4.29 + 50×5.83 = 709.50
    assert_eq!(bill.energy_paise, 64_500 + 70_950);
    assert_eq!(
        book.segment_on(Category::Domestic, date(2026, 11, 16))
            .unwrap()
            .version
            .id,
        "revised"
    );
    assert_eq!(
        book.segment_on(Category::Domestic, date(2026, 12, 1))
            .unwrap()
            .days(),
        31
    );
}

#[test]
fn invalid_books_are_refused_with_the_version_named() {
    let mut versions = TariffBook::builtin().versions().to_vec();
    versions[0].slabs[1].up_to_units = Some(50);
    let err = TariffBook::new(versions).unwrap_err().to_string();
    assert!(
        err.contains("cspdcl-lv1-domestic") && err.contains("must increase"),
        "{err}"
    );

    let mut versions = TariffBook::builtin().versions().to_vec();
    versions[0].duty_percent = 8.125;
    assert!(TariffBook::new(versions)
        .unwrap_err()
        .to_string()
        .contains("two decimals"));

    let versions: Vec<_> = TariffBook::builtin()
        .versions()
        .iter()
        .filter(|v| v.category != Category::Agricultural)
        .cloned()
        .collect();
    assert_eq!(
        TariffBook::new(versions),
        Err(TariffError::MissingCategory(Category::Agricultural))
    );
}

#[test]
fn bill_renders_every_component() {
    let text = book_with_fixed_and_duty()
        .quote(Category::Domestic, month("2026-11"), 250_000)
        .to_string();
    for expected in [
        "250.000 kWh",
        "370.00",
        "265.00",
        "fixed charge",
        "60.00",
        "82.00",
        "1167.00",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
}

proptest! {
    /// However a month's energy is cut into intervals, the interval charges add up to the month's cost.
    #[test]
    fn interval_charges_telescope_to_the_monthly_cost(deltas in proptest::collection::vec(0i64..5_000, 0..300)) {
        let book = book_with_fixed_and_duty();
        let seg = domestic_segment(&book);
        let mut cumulative = 0;
        let mut charged = Cost::default();
        for delta in &deltas {
            let c = seg.charge(SegmentEnergy::flat(cumulative), SegmentEnergy::flat(*delta));
            prop_assert!(c.energy_paise >= 0 && c.duty_paise >= 0);
            charged = charged + c;
            cumulative += delta;
        }
        prop_assert_eq!(charged, seg.cost(cumulative));
    }

    /// At every slab limit the cost is exactly the sum of the full slabs below it, and cost never
    /// decreases as energy grows.
    #[test]
    fn slab_limits_price_exactly(extra in 0i64..1_000_000) {
        let book = TariffBook::builtin();
        let seg = domestic_segment(&book);
        let mut full_slabs = 0;
        let mut lower_units = 0;
        for slab in &seg.version.slabs {
            if let Some(upper) = slab.up_to_units {
                full_slabs += i64::from(upper - lower_units) * slab.paise_per_kwh;
                prop_assert_eq!(seg.cost(i64::from(upper) * 1000).energy_paise, full_slabs);
                lower_units = upper;
            }
        }
        prop_assert!(seg.cost(extra + 1).energy_paise >= seg.cost(extra).energy_paise);
    }
}

proptest! {
    /// With time-of-day weights, interval charges still add up to the month's cost, and the
    /// adjustment never exceeds the slots' percentages of the energy charge.
    #[test]
    fn time_of_day_charges_telescope_and_stay_in_bounds(
        intervals in proptest::collection::vec((0i64..5_000, -10_000i64..=20_000), 0..300),
    ) {
        let book = book_with_fixed_and_duty();
        let seg = domestic_segment(&book);
        let mut before = SegmentEnergy::default();
        let mut charged = Cost::default();
        for (wh, basis_points) in &intervals {
            let delta = SegmentEnergy { wh: *wh, tod_weight: wh * basis_points, export_wh: 0 };
            charged = charged + seg.charge(before, delta);
            before = before + delta;
        }
        let cost = seg.cost_of(before);
        prop_assert_eq!(charged, cost);
        prop_assert!(cost.tod_paise >= -cost.energy_paise && cost.tod_paise <= 2 * cost.energy_paise);
        prop_assert!(cost.duty_paise >= 0);
    }
}

/// A domestic book whose domestic version has the given rate, charges and duty.
fn book_with(rate: i64, monthly: i64, duty_basis_points: i64) -> Result<TariffBook, TariffError> {
    let mut versions = TariffBook::builtin().versions().to_vec();
    let domestic = versions
        .iter_mut()
        .find(|v| v.category == Category::Domestic)
        .unwrap();
    domestic.slabs = vec![
        Slab {
            up_to_units: Some(u32::MAX),
            paise_per_kwh: rate,
        },
        Slab {
            up_to_units: None,
            paise_per_kwh: rate,
        },
    ];
    domestic.fixed_monthly_paise = monthly;
    domestic.minimum_monthly_paise = monthly;
    domestic.duty_percent = duty_basis_points as f64 / 100.0;
    TariffBook::new(versions)
}

#[test]
fn rates_and_monthly_charges_beyond_the_bounds_are_refused() {
    let err = book_with(i64::MAX, 0, 0).unwrap_err().to_string();
    assert!(err.contains("paise per kWh is outside"), "{err}");
    let err = book_with(500, i64::MAX, 0).unwrap_err().to_string();
    assert!(err.contains("monthly charges must be 0 to"), "{err}");
    assert!(book_with(MAX_RATE_PAISE_PER_KWH, MAX_MONTHLY_PAISE, 10_000).is_ok());
}

proptest! {
    /// No tariff the book accepts and no energy, however absurd, makes a charge wrap: costs never
    /// go negative, never decrease with energy, and charging never panics (debug builds check
    /// every operation for overflow).
    #[test]
    fn no_accepted_tariff_and_no_energy_overflows(
        rate in 0..=MAX_RATE_PAISE_PER_KWH,
        monthly in 0..=MAX_MONTHLY_PAISE,
        duty in 0i64..=10_000,
        wh in any::<i64>(),
        delta in any::<i64>(),
        day in 1u32..=30,
    ) {
        let book = book_with(rate, monthly, duty).unwrap();
        let seg = domestic_segment(&book);
        let cost = seg.cost(wh);
        prop_assert!(cost.energy_paise >= 0 && cost.duty_paise >= 0);
        prop_assert!(seg.cost(wh.saturating_add(1)).total() >= cost.total() || cost.total() == i64::MAX);
        let charge = seg.charge(SegmentEnergy::flat(wh.max(0)), SegmentEnergy::flat(delta));
        prop_assert!(delta < 0 || charge.energy_paise >= 0);
        let fixed = book.fixed_charge_for_day(Category::Domestic, date(2026, 11, day));
        prop_assert!((0..=monthly).contains(&fixed));
        prop_assert!((0..=monthly).contains(&book.minimum_topup(Category::Domestic, month("2026-11"), -wh.abs().min(i64::MAX / 2))));
    }
}

#[test]
fn quote_for_a_rooftop_solar_home_bills_the_net_units_and_shows_the_export() {
    let book = book_with_fixed_and_duty();
    let usage = |units_wh, export_wh| Usage {
        units_wh,
        export_wh,
        ..Usage::default()
    };
    // 250 kWh in, 150 kWh out: 100 net units in the first slab, 100 × 3.70 = ₹370.00.
    let bill = book
        .quote_usage(
            Category::Domestic,
            month("2026-11"),
            &usage(250_000, 150_000),
        )
        .unwrap();
    assert_eq!((bill.net_wh, bill.surplus_wh), (100_000, 0));
    assert_eq!(bill.energy_paise, 37_000);
    assert_eq!(bill.duty_paise, 2_960); // 8 % of ₹370.00
    assert_eq!(bill.total_paise, 37_000 + 2_960 + 6_000);
    assert!(
        bill.to_string()
            .contains("exported      150.000 kWh, net      100.000 kWh billed, surplus 0.000 kWh"),
        "{bill}"
    );
    // Export beyond the import: no energy charge, the fixed charge stays, the surplus is shown.
    let bill = book
        .quote_usage(
            Category::Domestic,
            month("2026-11"),
            &usage(100_000, 130_000),
        )
        .unwrap();
    assert_eq!((bill.net_wh, bill.surplus_wh), (0, 30_000));
    assert_eq!(bill.energy_paise + bill.duty_paise, 0);
    assert_eq!(bill.total_paise, 6_000 + bill.minimum_topup_paise);
    // An import-only home's bill has no export line.
    let bill = book.quote(Category::Domestic, month("2026-11"), 250_000);
    assert!(!bill.to_string().contains("exported"), "{bill}");
}

#[test]
fn a_settlement_rate_needs_banking_and_a_plausible_rate() {
    let refused = |change: fn(&mut TariffVersion)| {
        let mut versions = TariffBook::builtin().versions().to_vec();
        change(&mut versions[0]);
        TariffBook::new(versions).unwrap_err().to_string()
    };
    let err = refused(|v| v.export_settlement_paise_per_kwh = 300);
    assert!(err.contains("set export_banking = true too"), "{err}");
    let err = refused(|v| {
        v.export_banking = true;
        v.export_settlement_paise_per_kwh = -1;
    });
    assert!(
        err.contains("export_settlement_paise_per_kwh = -1 is outside"),
        "{err}"
    );
}
