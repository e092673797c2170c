use super::*;
use crate::tariff::Segment;
use proptest::prelude::*;

/// The built-in book, its domestic tariff banking export and settling it at ₹3.00 per kWh.
fn book(banking: bool) -> TariffBook {
    let mut versions = TariffBook::builtin().versions().to_vec();
    for version in versions
        .iter_mut()
        .filter(|v| v.category == Category::Domestic)
    {
        version.export_banking = banking;
        version.export_settlement_paise_per_kwh = if banking { 300 } else { 0 };
    }
    TariffBook::new(versions).unwrap()
}

fn month(text: &str) -> Month {
    Month::parse(text).unwrap()
}

/// The month's single segment holding `import_kwh` in and `export_kwh` out.
fn segments(
    book: &TariffBook,
    m: Month,
    import_kwh: i64,
    export_kwh: i64,
) -> Vec<(SegmentKey, SegmentEnergy)> {
    let segment: Segment<'_> = book.segments_of(Category::Domestic, m)[0];
    vec![(
        segment.key(),
        SegmentEnergy {
            export_wh: export_kwh * 1000,
            ..SegmentEnergy::flat(import_kwh * 1000)
        },
    )]
}

#[test]
fn a_sunny_months_surplus_is_banked_and_pays_for_the_next_months_dearest_units() {
    let book = book(true);
    // November: 100 kWh in, 150 out: nothing charged, 50 kWh banked.
    let november = close_month(
        &book,
        Category::Domestic,
        month("2026-11"),
        &segments(&book, month("2026-11"), 100, 150),
        0,
    );
    assert_eq!(
        (
            november.surplus_wh,
            november.banked_out_wh,
            november.amount_paise()
        ),
        (50_000, 50_000, 0)
    );
    // December: 200 kWh in, 20 out: 180 net units; the 50 banked take the top 50 off them.
    // 180 kWh = 100 × 3.70 + 80 × 3.90 = ₹682.00; 130 kWh = ₹487.00; the credit is ₹195.00.
    let december = close_month(
        &book,
        Category::Domestic,
        month("2026-12"),
        &segments(&book, month("2026-12"), 200, 20),
        november.banked_out_wh,
    );
    assert_eq!(
        (
            december.used_wh,
            december.credit_paise,
            december.banked_out_wh
        ),
        (50_000, 19_500, 0)
    );
    // A bank bigger than the month: every net unit is paid for, the rest stays banked.
    let big = close_month(
        &book,
        Category::Domestic,
        month("2026-12"),
        &segments(&book, month("2026-12"), 200, 20),
        300_000,
    );
    assert_eq!(
        (big.used_wh, big.credit_paise, big.banked_out_wh),
        (180_000, 68_200, 120_000)
    );
}

#[test]
fn march_settles_the_bank_at_the_settlement_rate_and_without_banking_the_surplus_lapses() {
    let march = month("2027-03");
    let settled = close_month(
        &book(true),
        Category::Domestic,
        march,
        &segments(&book(true), march, 10, 60),
        20_000,
    );
    // March exported more than it imported: no net units to pay for, so the 20 kWh banked and
    // its 50 kWh surplus, 70 kWh, are paid at ₹3.00: ₹210.00.
    assert_eq!(
        (
            settled.used_wh,
            settled.settled_wh,
            settled.settlement_paise,
            settled.banked_out_wh
        ),
        (0, 70_000, 21_000, 0)
    );
    let lapsed = close_month(
        &book(false),
        Category::Domestic,
        month("2026-11"),
        &segments(&book(false), month("2026-11"), 100, 150),
        20_000,
    );
    assert_eq!(
        (
            lapsed.surplus_wh,
            lapsed.banked_out_wh,
            lapsed.amount_paise()
        ),
        (50_000, 0, 0)
    );
}

proptest! {
    /// Banked units are never lost or made up, and the credit never exceeds the month's charges.
    #[test]
    fn the_bank_balances_and_the_credit_is_bounded(import_kwh in 0i64..600, export_kwh in 0i64..600, banked_kwh in 0i64..600, m in 1u32..=12) {
        let book = book(true);
        let m = Month { year: 2027, month: m };
        let segments = segments(&book, m, import_kwh, export_kwh);
        let close = close_month(&book, Category::Domestic, m, &segments, banked_kwh * 1000);
        prop_assert_eq!(close.banked_in_wh + close.surplus_wh, close.used_wh + close.settled_wh + close.banked_out_wh);
        let charged: i64 = segments.iter().map(|(k, e)| book.segment(Category::Domestic, k).unwrap().cost_of(*e).total()).sum();
        prop_assert!((0..=charged).contains(&close.credit_paise));
    }
}
