//! Monthly bills end to end: a central database with a household's November (four weeks of its
//! meter's 15-minute readings synced, a recharge), then `gramgrid central bill` as its own process
//! prints it to PDF with headless chromium; the PDF's text holds the bill's total, and its slab
//! lines are `gramgrid tariff quote`'s for the same units.
use chrono::{DateTime, TimeZone, Timelike, Utc};
use gramgrid_central::accounts::{self, Account, Meter, RechargeRequest};
use gramgrid_central::{bill, sync, Central, CentralConfig};
use gramgrid_core::civil::Month;
use gramgrid_core::tariff::TariffBook;
use gramgrid_proto::wire::{self, ReadingBatch, ReadingBlock};
use gramgrid_web::format::{inr, kwh};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn ist(month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    gramgrid_core::civil::ist()
        .with_ymd_and_hms(2026, month, day, hour, minute, 0)
        .unwrap()
        .with_timezone(&Utc)
}

/// Central's config in `dir` (an SQLite database beside it), also written to `central.toml`.
fn central_in(dir: &Path) -> CentralConfig {
    let database_url = format!("sqlite:{}", dir.join("central.db").display());
    let secrets = dir.join("secrets.key");
    std::fs::write(
        dir.join("central.toml"),
        format!("database_url = {database_url:?}\nsecrets_key_file = {secrets:?}\n"),
    )
    .unwrap();
    CentralConfig {
        database_url,
        secrets_key_file: secrets,
        ..CentralConfig::default()
    }
}

/// Household H1 (domestic) on gw-a, its meter installed on 25 October at 0 Wh, a ₹500 recharge,
/// and 15-minute readings from the last evening of October to 28 November: 100 Wh a quarter-hour,
/// 400 in the evening hours.
fn household(central: &Central) {
    let account: Account = serde_json::from_value(serde_json::json!({
        "id": "H1", "consumer_name": "Asha Devi", "category": "domestic", "gateway": "gw-a",
        "created_at": ist(10, 25, 0, 0),
    }))
    .unwrap();
    let meter: Meter = serde_json::from_value(serde_json::json!({
        "serial": "M-H1", "account": "H1", "installed_at": ist(10, 25, 0, 0),
        "initial_register_wh": 0,
    }))
    .unwrap();
    let recharge = RechargeRequest {
        idempotency_key: "upi-1".into(),
        account: "H1".into(),
        amount_paise: 50_000,
        reference: Some("UPI 4711".into()),
    };
    let first = ist(10, 31, 20, 0);
    let mut register = 0;
    let readings: Vec<(String, i64, i64)> = (0..28 * 96)
        .map(|i| {
            let at = first + chrono::Duration::minutes(15 * i);
            let hour = gramgrid_core::civil::local(at).hour();
            register += if (18..22).contains(&hour) { 400 } else { 100 };
            ("M-H1".to_string(), at.timestamp(), register)
        })
        .collect();
    let request = wire::UploadRequest {
        protocol: wire::PROTOCOL_VERSION,
        sent_at: ist(11, 29, 6, 0),
        priority: Vec::new(),
        readings: Some(ReadingBatch {
            after_seq: 0,
            through_seq: readings.len() as u64,
            blocks: ReadingBlock::group(readings),
            exports: Vec::new(),
        }),
        downlink_applied: 0,
        identity: None,
        status: None,
    };
    central
        .db()
        .blocking(move |tx| {
            accounts::put_account(tx, &account, false)?;
            accounts::put_meter(tx, &meter, false)?;
            accounts::recharge(tx, &recharge, ist(11, 2, 10, 0))?;
            sync::apply(
                tx,
                &TariffBook::builtin(),
                "gw-a",
                &request,
                ist(11, 29, 6, 0),
            )
        })
        .unwrap();
}

/// `gramgrid central bill` on the config in `dir` for H1's November, with `extra` options.
fn bill_of_november(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let config = dir.join("central.toml");
    let mut args = vec![
        "central",
        "bill",
        "--config",
        config.to_str().unwrap(),
        "--account",
        "H1",
        "--month",
        "2026-11",
    ];
    args.extend(extra);
    gramgrid(&args, env)
}

fn gramgrid(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gramgrid"));
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_bill_prints_to_pdf_with_its_total_and_its_slabs_are_the_quotes() {
    let dir = tempfile::tempdir().unwrap();
    let central = Central::open(central_in(dir.path())).unwrap();
    household(&central);
    let november = Month::parse("2026-11").unwrap();
    let expected = central
        .db()
        .blocking(move |tx| bill::month_bill(tx, "H1", november))
        .unwrap();
    drop(central);
    assert!(
        expected.tariff.lines.len() >= 3,
        "{:?}",
        expected.tariff.lines
    );
    let total = inr(expected.account.charges_paise);

    let (html, pdf) = (dir.path().join("bill.html"), dir.path().join("bill.pdf"));
    let said = succeeded(&bill_of_november(
        dir.path(),
        &[
            "--html",
            html.to_str().unwrap(),
            "--pdf",
            pdf.to_str().unwrap(),
        ],
        &[],
    ));
    assert!(said.contains(&format!("charges {total}")), "{said}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains(&total) && page.contains("Asha Devi"));
    let bytes = std::fs::read(&pdf).unwrap();
    assert!(
        bytes.starts_with(b"%PDF"),
        "not a PDF: {} bytes",
        bytes.len()
    );
    match Command::new("pdftotext").arg(&pdf).arg("-").output() {
        Ok(text) if text.status.success() => {
            let text = String::from_utf8_lossy(&text.stdout);
            let figure = total.trim_start_matches('₹');
            assert!(
                text.contains(figure),
                "the PDF's text has no {figure}: {text}"
            );
            assert!(text.contains("Closing balance"), "{text}");
        }
        _ => eprintln!("SKIP the PDF's text: no pdftotext (poppler-utils; tests/run installs it)"),
    }

    // In Hindi, a PDF alone.
    let hindi = dir.path().join("bill-hi.pdf");
    succeeded(&bill_of_november(
        dir.path(),
        &["--lang", "hi", "--pdf", hindi.to_str().unwrap()],
        &[],
    ));
    assert!(std::fs::read(&hindi).unwrap().starts_with(b"%PDF"));

    // The slab lines and the totals are the quote's for the same units and month.
    let units = kwh(expected.tariff.units_wh).replace(',', "");
    let quote: Value = serde_json::from_str(&succeeded(&gramgrid(
        &[
            "tariff", "quote", "--units", &units, "--month", "2026-11", "--json",
        ],
        &[],
    )))
    .unwrap();
    let tariff = serde_json::to_value(&expected.tariff).unwrap();
    for field in [
        "lines",
        "energy_paise",
        "fixed_paise",
        "duty_paise",
        "minimum_topup_paise",
    ] {
        assert_eq!(tariff[field], quote[field], "{field}");
    }
    assert_eq!(
        expected
            .tariff
            .lines
            .iter()
            .map(|l| l.amount_paise)
            .sum::<i64>(),
        quote["energy_paise"].as_i64().unwrap()
    );
}

#[test]
fn without_chromium_the_bill_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    household(&Central::open(central_in(dir.path())).unwrap());
    let pdf = dir.path().join("bill.pdf");
    let output = bill_of_november(
        dir.path(),
        &["--pdf", pdf.to_str().unwrap()],
        &[("PATH", "/nonexistent"), ("GRAMGRID_CHROMIUM", "")],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("install the `chromium` package"),
        "{stderr}"
    );
    assert!(!pdf.exists());
    // A month that is not one is a wrong command line.
    let output = gramgrid(
        &["central", "bill", "--account", "H1", "--month", "2026-13"],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
}
