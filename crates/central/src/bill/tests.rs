//! A shop's November at central (SQLite, and PostgreSQL when GRAMGRID_TEST_POSTGRES_URL is set):
//! readings and a gateway's fixed charges synced, a recharge at the counter; the bill agrees with
//! the statement, the balance and a quote for the same units.
use super::*;
use crate::accounts::{put_account, put_meter, recharge, Account, Meter, RechargeRequest};
use crate::testing::{central, central_configured, fresh_postgres, priority_upload, TestCentral};
use chrono::{DateTime, TimeZone, Utc};
use gramgrid_core::civil::start_of_local_day;
use gramgrid_core::ledger::{EventKind, LedgerEvent};
use gramgrid_core::message::Language;
use gramgrid_core::tariff::{Category, TariffBook};
use gramgrid_proto::wire::{ReadingBatch, ReadingBlock, UplinkEvent};

fn ist(month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    gramgrid_core::civil::ist()
        .with_ymd_and_hms(2026, month, day, hour, minute, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn november() -> Month {
    Month::parse("2026-11").unwrap()
}

fn centrals() -> Vec<TestCentral> {
    let mut all = vec![central()];
    if let Some(url) = fresh_postgres("gg_bill") {
        all.push(central_configured(|config| config.database_url = url));
    }
    all
}

/// Shop S1 (commercial: ₹6.40 to 100 kWh, ₹7.20 to 400, fixed ₹150 a month, duty 12 %) on
/// gw-a, its meter installed on 25 October at 0 Wh; a ₹3,000 recharge on 2 November; the
/// gateway's fixed charges for 1 to 10 November; readings around and through November.
fn shop(t: &TestCentral) {
    let account = Account {
        id: "S1".into(),
        consumer_name: "Sharma General Store".into(),
        category: Category::Commercial,
        phone: None,
        gateway: Some("gw-a".into()),
        language: Language::Hindi,
        created_at: ist(10, 25, 0, 0),
    };
    let meter = Meter {
        serial: "M-S1".into(),
        account: "S1".into(),
        installed_at: ist(10, 25, 0, 0),
        initial_register_wh: Some(0),
        keys: None,
        dlms: None,
        relay_state: "unknown".into(),
    };
    t.tx(move |tx| {
        put_account(tx, &account, false)?;
        put_meter(tx, &meter, false)
    })
    .unwrap();
    let request = RechargeRequest {
        idempotency_key: "counter-1".into(),
        account: "S1".into(),
        amount_paise: 300_000,
        reference: None,
    };
    t.tx(move |tx| recharge(tx, &request, ist(11, 2, 10, 0)))
        .unwrap();
    let book = TariffBook::builtin();
    let fixed: Vec<UplinkEvent> = (1..=10)
        .map(|day| {
            let date = chrono::NaiveDate::from_ymd_opt(2026, 11, day).unwrap();
            UplinkEvent::Ledger(
                LedgerEvent {
                    id: format!("gw-a:fixed:S1:{date}"),
                    account: "S1".into(),
                    at: start_of_local_day(date),
                    kind: EventKind::FixedCharge,
                    amount_paise: book.fixed_charge_for_day(Category::Commercial, date),
                    expires_at: None,
                }
                .into(),
            )
        })
        .collect();
    let readings: Vec<(String, i64, i64)> = [
        (ist(10, 28, 12, 0), 5_000),
        (ist(10, 31, 23, 45), 9_000),
        (ist(11, 1, 0, 0), 9_100),
        (ist(11, 15, 12, 0), 109_100),
        (ist(11, 30, 23, 45), 259_100),
        (ist(12, 1, 0, 0), 260_000),
    ]
    .into_iter()
    .map(|(at, wh)| ("M-S1".to_string(), at.timestamp(), wh))
    .collect();
    let mut request = priority_upload(1, fixed, ist(12, 1, 6, 0));
    request.readings = Some(ReadingBatch {
        after_seq: 0,
        through_seq: readings.len() as u64,
        blocks: ReadingBlock::group(readings),
        exports: Vec::new(),
    });
    let answer = t.upload("gw-a", request, ist(12, 1, 6, 0));
    assert_eq!(answer.priority_acked, 10);
}

#[test]
fn a_shops_bill_agrees_with_its_statement_its_balance_and_a_quote() {
    for t in centrals() {
        shop(&t);
        let bill = t.tx(|tx| month_bill(tx, "S1", november())).unwrap();
        let statement = t.tx(|tx| export::statement(tx, "S1", november())).unwrap();

        // The registers: 23:45 on 31 October opens (the reading at midnight is November's).
        let meter = &bill.registers[0];
        assert_eq!(meter.serial, "M-S1");
        assert_eq!(meter.opening.unwrap().import_wh, 9_000);
        assert_eq!(meter.closing.unwrap().import_wh, 259_100);
        assert_eq!(meter.import_wh, 250_100);
        assert_eq!(bill.tariff.units_wh, statement.units_wh);
        assert_eq!(bill.tariff.units_wh, 250_100);

        // The slabs add up to the energy charge the ledger took, and are a quote's.
        let slabs: i64 = bill.tariff.lines.iter().map(|l| l.amount_paise).sum();
        assert_eq!(slabs, statement.energy_paise);
        assert_eq!(bill.tariff.duty_paise, statement.duty_paise);
        // The maximum demand is the gateway's: readings from the month's start to its end, both
        // included (900 Wh in the quarter-hour to midnight on 30 November: 3.6 kW).
        assert_eq!(bill.tariff.max_demand_w, 3_600);
        let usage = gramgrid_core::tariff::Usage {
            units_wh: 250_100,
            max_demand_w: 3_600,
            ..Default::default()
        };
        let quote = TariffBook::builtin()
            .quote_usage(Category::Commercial, november(), &usage)
            .unwrap();
        assert_eq!(bill.tariff, quote);

        // Charges: energy, ten days' fixed charge, duty; the statement's debits, and the
        // account adds up to the statement's closing balance.
        let charged = |kind| {
            bill.charges
                .iter()
                .filter(|c| c.kind == kind)
                .map(|c| c.amount_paise)
                .sum::<i64>()
        };
        assert_eq!(charged(ChargeKind::Energy), 172_072);
        assert_eq!(charged(ChargeKind::Fixed), 5_000);
        assert_eq!(charged(ChargeKind::Duty), 20_648);
        assert_eq!(bill.account.charges_paise, 172_072 + 5_000 + 20_648);
        assert_eq!(bill.account.credits_paise, 300_000);
        assert_eq!(bill.account.opening_paise, statement.opening_paise);
        assert_eq!(bill.account.closing_paise, statement.closing_paise);
        assert_eq!(
            bill.account.opening_paise + bill.account.credits_paise - bill.account.charges_paise,
            bill.account.closing_paise
        );
        // December's first reading is December's: the balance now is November's close less it.
        let balance = t.tx(|tx| accounts::balance_paise(tx, "S1")).unwrap();
        let december = t
            .tx(|tx| export::statement(tx, "S1", november().next()))
            .unwrap();
        assert_eq!(december.opening_paise, bill.account.closing_paise);
        assert_eq!(balance, december.closing_paise);

        // Ten of thirty days' fixed charge: said, with both figures.
        assert_eq!(
            bill.notes,
            [Note::FixedPartial {
                tariff_paise: 15_000,
                charged_paise: 5_000
            }]
        );

        // The page, in both languages, with the total grouped the Indian way.
        let english = html::render(&bill, Language::English).into_string();
        assert!(english.contains("₹1,977.20"), "{english}");
        assert!(english.contains("Sharma General Store"));
        assert!(english.contains("@media print"));
        let hindi = html::render(&bill, Language::Hindi).into_string();
        assert!(hindi.contains("बिजली बिल") && hindi.contains("₹1,977.20"));

        // No such account, or a month out of range: refused, not a blank bill.
        assert!(matches!(
            t.tx(|tx| month_bill(tx, "NOPE", november())),
            Err(CentralError::NotFound(_))
        ));
    }
}
