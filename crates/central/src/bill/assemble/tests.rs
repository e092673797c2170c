use super::*;
use chrono::{Duration, TimeZone};
use gramgrid_core::civil::start_of_local_day;
use gramgrid_core::rating::month_usage;
use gramgrid_core::tariff::TariffBook;

fn november() -> Month {
    Month::parse("2026-11").unwrap()
}

fn utc(month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, month, day, hour, minute, 0)
        .unwrap()
}

fn line(id: &str, at: DateTime<Utc>, kind: &str, effect_paise: i64) -> StatementLine {
    StatementLine {
        id: id.into(),
        at,
        kind: kind.into(),
        effect_paise,
        amount_paise: effect_paise.abs(),
        arrears_paise: 0,
    }
}

/// A commercial shop (₹6.40 to 100 kWh, ₹7.20 to 400, fixed ₹150 a month, minimum ₹200, duty
/// 12 %) read on 31 October, 10 and 20 November: 250 kWh in November.
fn readings() -> Vec<RegisterReading> {
    [
        (utc(10, 31, 10, 0), 1_000),
        (utc(11, 10, 6, 0), 101_000),
        (utc(11, 20, 6, 0), 251_000),
    ]
    .into_iter()
    .map(|(at, wh)| RegisterReading::import(at, wh))
    .collect()
}

fn tariff_of(book: &TariffBook, readings: &[RegisterReading]) -> Bill {
    let usage = month_usage(book, Category::Commercial, november(), &[readings.to_vec()]).unwrap();
    book.bill(Category::Commercial, november(), &usage, 0)
}

/// The statement of the shop's November: ₹500 opening, a ₹3,000 recharge, October's minimum
/// top-up of ₹40 posted on the 1st, the fixed charges of the first 20 days, and the energy.
fn statement(book: &TariffBook) -> Statement {
    let (start, _) = november().span().unwrap();
    let mut events = vec![
        line("gw-a:minimum:S1:2026-10", start, "minimum_charge", -4_000),
        line("pay-1", utc(11, 5, 6, 0), "recharge", 300_000),
    ];
    for day in 1..=20 {
        let date = NaiveDate::from_ymd_opt(2026, 11, day).unwrap();
        events.push(line(
            &format!("gw-a:fixed:S1:{date}"),
            start_of_local_day(date),
            "fixed_charge",
            -book.fixed_charge_for_day(Category::Commercial, date),
        ));
    }
    events.sort_by_key(|e| e.at);
    Statement {
        account: "S1".into(),
        month: "2026-11".into(),
        opening_paise: 50_000,
        events,
        units_wh: 250_000,
        export_wh: 0,
        energy_paise: 172_000,
        tod_paise: 0,
        duty_paise: 20_640,
        arrears_recovered_paise: 0,
        arrears_from_earlier_recharges_paise: 0,
        arrears: ArrearsReport::default(),
        closing_paise: 50_000 + 300_000 - 4_000 - 10_000 - 172_000 - 20_640,
    }
}

fn facts(book: &TariffBook) -> Facts {
    let (start, end) = november().span().unwrap();
    Facts {
        consumer: Consumer {
            account: "S1".into(),
            name: "Sharma General Store".into(),
            category: Category::Commercial,
            gateway: Some("gw-a".into()),
            sanctioned_load_w: Some(3_000),
        },
        period: (
            NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            NaiveDate::from_ymd_opt(2026, 11, 30).unwrap(),
        ),
        registers: vec![MeterRegisters::of("M-S1", &readings(), start, end)],
        tariff: tariff_of(book, &readings()),
        statement: statement(book),
        after: Vec::new(),
    }
}

#[test]
fn a_shops_month_worked_by_hand() {
    let book = TariffBook::builtin();
    let bill = assemble(facts(&book));

    // 100 kWh at ₹6.40 and 150 at ₹7.20; the lines add up to the energy charge.
    let slabs: Vec<(i64, i64, i64)> = bill
        .tariff
        .lines
        .iter()
        .map(|l| (l.units_wh, l.paise_per_kwh, l.amount_paise))
        .collect();
    assert_eq!(slabs, [(100_000, 640, 64_000), (150_000, 720, 108_000)]);
    assert_eq!(
        bill.tariff
            .lines
            .iter()
            .map(|l| l.amount_paise)
            .sum::<i64>(),
        bill.tariff.energy_paise
    );
    assert_eq!(bill.tariff.energy_paise, 172_000);
    assert_eq!(bill.tariff.duty_paise, 20_640); // 12 % of ₹1,720
    assert_eq!(bill.tariff.fixed_paise, 15_000);
    assert_eq!(bill.tariff.minimum_topup_paise, 0);

    // The charges are the ledger's: 20 days of fixed charge, October's top-up.
    let charges: Vec<(ChargeKind, Option<&str>, i64)> = bill
        .charges
        .iter()
        .map(|c| (c.kind, c.for_month.as_deref(), c.amount_paise))
        .collect();
    assert_eq!(
        charges,
        [
            (ChargeKind::Energy, None, 172_000),
            (ChargeKind::Fixed, None, 10_000),
            (ChargeKind::Minimum, Some("2026-10"), 4_000),
            (ChargeKind::Duty, None, 20_640),
        ]
    );
    let statement = statement(&book);
    let debited: i64 = statement
        .events
        .iter()
        .filter(|e| e.effect_paise < 0)
        .map(|e| -e.effect_paise)
        .sum::<i64>()
        + statement.energy_paise
        + statement.tod_paise
        + statement.duty_paise;
    assert_eq!(bill.account.charges_paise, debited);
    assert_eq!(bill.account.charges_paise, 206_640);

    // Opening − charges + credits = closing.
    assert_eq!(bill.account.credits_paise, 300_000);
    assert_eq!(
        bill.account.opening_paise + bill.account.credits_paise
            - bill.account.arrears_recovered_paise
            - bill.account.charges_paise,
        bill.account.closing_paise
    );
    assert_eq!(bill.account.closing_paise, 143_360);
    assert_eq!(bill.account.lines.len(), 1);

    // The registers: the reading of 31 October opens, that of 20 November closes.
    let meter = &bill.registers[0];
    assert_eq!(meter.opening.unwrap().import_wh, 1_000);
    assert_eq!(meter.closing.unwrap().import_wh, 251_000);
    assert_eq!(meter.import_wh, bill.tariff.units_wh);

    // Only the fixed charge differs from the tariff's month, and the bill says so.
    assert_eq!(
        bill.notes,
        [Note::FixedPartial {
            tariff_paise: 15_000,
            charged_paise: 10_000
        }]
    );
}

#[test]
fn the_slab_lines_are_the_quotes_for_the_same_units() {
    let book = TariffBook::builtin();
    let bill = assemble(facts(&book));
    let quote = book.quote(Category::Commercial, november(), bill.tariff.units_wh);
    assert_eq!(bill.tariff, quote);
}

#[test]
fn a_month_end_charge_posted_later_and_a_rating_that_moved_are_said() {
    let book = TariffBook::builtin();
    let mut facts = facts(&book);
    // 5 kWh: ₹32 of energy and ₹150 fixed, ₹18 short of the ₹200 minimum.
    let few = vec![
        RegisterReading::import(utc(10, 31, 10, 0), 1_000),
        RegisterReading::import(utc(11, 20, 6, 0), 6_000),
    ];
    facts.tariff = tariff_of(&book, &few);
    facts.registers = {
        let (start, end) = november().span().unwrap();
        vec![MeterRegisters::of("M-S1", &few, start, end)]
    };
    facts.after = vec![line(
        "gw-a:minimum:S1:2026-11",
        november().span().unwrap().1,
        "minimum_charge",
        -1_800,
    )];
    let bill = assemble(facts);
    assert_eq!(bill.tariff.minimum_topup_paise, 1_800);
    assert!(bill.notes.contains(&Note::MinimumNextMonth {
        tariff_paise: 1_800,
        charged_paise: Some(1_800)
    }));
    // The statement still holds 250 kWh's charges: the ledger's figures are shown, and why.
    assert!(bill.notes.contains(&Note::RatingDiffers {
        tariff_paise: 3_200 + 384,
        charged_paise: 172_000 + 20_640
    }));
    assert_eq!(bill.charges[0].amount_paise, 172_000);
}

#[test]
fn a_reading_at_midnight_on_the_first_is_the_months_and_opens_nothing() {
    let (start, end) = november().span().unwrap();
    let readings = [
        RegisterReading::import(start - Duration::minutes(15), 900),
        RegisterReading::import(start, 1_000),
        RegisterReading::import(end - Duration::minutes(15), 5_000),
        RegisterReading::import(end, 5_100),
    ];
    let meter = MeterRegisters::of("M-1", &readings, start, end);
    assert_eq!(meter.opening.unwrap().import_wh, 900);
    assert_eq!(meter.closing.unwrap().import_wh, 5_000);
    assert_eq!(meter.import_wh, 4_100);
    let book = TariffBook::builtin();
    let usage = month_usage(&book, Category::Domestic, november(), &[readings.to_vec()]).unwrap();
    assert_eq!(usage.iter().map(|u| u.wh).sum::<i64>(), 4_100);
    // A meter installed in the month opens at its first reading; its export was not read.
    let installed = [RegisterReading {
        at: start + Duration::days(3),
        register_wh: 7,
        export_wh: EXPORT_UNKNOWN,
    }];
    let meter = MeterRegisters::of("M-2", &installed, start, end);
    assert_eq!(meter.opening, meter.closing);
    assert_eq!(meter.opening.unwrap().export_wh, None);
    assert_eq!((meter.import_wh, meter.export_wh), (0, None));
}
