//! An honest audit is stored, listed and flagged; a re-audit of the day replaces it; a forged or
//! absurd one is refused and stores nothing; villages compare by their share of loss; the
//! evidence reads in words.
use super::*;
use crate::testing::{central, manifest, priority_upload, TestCentral};
use chrono::TimeZone;
use gramgrid_proto::wire::UplinkEvent;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 6, 0, 0).unwrap()
}

/// The `energy_loss` flags central raised.
fn energy_loss_flags(t: &TestCentral) -> Vec<crate::testing::SeenFlag> {
    t.flags()
        .into_iter()
        .filter(|f| f.kind == "energy_loss")
        .collect()
}

fn day(text: &str) -> NaiveDate {
    parse_day(text).unwrap()
}

/// gw-a: transformer DT-A, households M1 and M2; gw-b: transformer DT-B, household N1.
fn two_villages() -> TestCentral {
    let t = central();
    let installed = now() - Duration::days(60);
    let a = manifest(&[
        ("DT-A", 0x2601_0100, "dt"),
        ("M1", 0x2601_0001, "consumer"),
        ("M2", 0x2601_0002, "consumer"),
    ]);
    t.import(&a, "gw-a", installed).unwrap();
    let b = manifest(&[("DT-B", 0x2601_0200, "dt"), ("N1", 0x2601_0003, "consumer")]);
    t.import(&b, "gw-b", installed).unwrap();
    t
}

/// gw-a's audit of DT-A on `on`: 10 kWh delivered, `consumers_wh` recorded, flagged when more
/// than 1 kWh beyond the 0.5 kWh allowance is missing; M1 the suspect.
fn audit(gateway: &str, transformer: &str, on: &str, consumers_wh: i64) -> EnergyAuditDay {
    let flagged = 10_000 - consumers_wh - 500 > 1_000;
    let mut losses = vec![Some(10); 95];
    losses.push(None);
    EnergyAuditDay {
        id: format!("{gateway}:audit:{transformer}:{on}"),
        transformer: transformer.into(),
        day: on.into(),
        intervals_compared: 95,
        meters: 2,
        transformer_wh: 10_000,
        consumers_wh,
        allowance_wh: 500,
        flagged,
        interval_loss_wh: losses,
        suspects: if flagged {
            vec![AuditSuspect {
                meter: "M1".into(),
                account: "ACC-M1".into(),
                score: 80,
                reasons: vec![
                    AuditReason::Tamper {
                        kinds: vec!["tamper_magnet".into()],
                    },
                    AuditReason::NearZero { recorded_wh: 20 },
                    AuditReason::FallsWithLoss {
                        usual_wh: 4_200,
                        recorded_wh: 150,
                    },
                ],
            }]
        } else {
            Vec::new()
        },
        at: now() - Duration::hours(1),
    }
}

fn send(t: &TestCentral, gateway: &str, first_seq: u64, days: Vec<EnergyAuditDay>) {
    let events = days.into_iter().map(UplinkEvent::EnergyAudit).collect();
    t.upload(gateway, priority_upload(first_seq, events, now()), now());
}

/// [`two_villages`], with gw-a's audits of 2026-11-28 (within the allowance) and 2026-11-29
/// (flagged) received.
fn two_days_of_village_a() -> TestCentral {
    let t = two_villages();
    let days = vec![
        audit("gw-a", "DT-A", "2026-11-28", 9_400),
        audit("gw-a", "DT-A", "2026-11-29", 8_200),
    ];
    send(&t, "gw-a", 1, days);
    t
}

fn everything(t: &TestCentral) -> Vec<AuditDay> {
    let range = DayRange::new(
        Some(day("2026-11-01")),
        Some(day("2026-11-30")),
        day("2026-11-30"),
    )
    .unwrap();
    t.tx(move |tx| audits(tx, None, range, MAX_AUDITS_LIMIT))
        .unwrap()
}

#[test]
fn an_honest_audit_is_stored_listed_and_a_flagged_day_flagged_once() {
    let t = two_days_of_village_a();
    let days = everything(&t);
    let ids: Vec<&str> = days.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        ["gw-a:audit:DT-A:2026-11-29", "gw-a:audit:DT-A:2026-11-28"],
        "newest first"
    );
    let flagged = &days[0];
    assert!(flagged.flagged);
    assert_eq!((flagged.loss_wh, flagged.loss_permille), (1_800, Some(180)));
    assert_eq!(flagged.interval_loss_wh.len(), 96);
    assert_eq!(flagged.interval_loss_wh[95], None);
    assert_eq!(flagged.suspects[0].meter, "M1");
    assert_eq!(
        flagged.suspects[0].why,
        [
            "tamper events: tamper_magnet",
            "recorded 0.02 kWh all day while connected",
            "recorded 0.15 kWh in the hours of most loss, against 4.20 kWh usually"
        ]
    );
    let flags = energy_loss_flags(&t);
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags[0].gateway.as_deref(), Some("gw-a"));
    assert!(
        flags[0]
            .detail
            .contains("gateway gw-a, transformer DT-A, 2026-11-29: 1.80 kWh (18.0%)"),
        "{}",
        flags[0].detail
    );
    assert!(flags[0]
        .detail
        .contains("first M1 of account ACC-M1 (score 80)"));
}

#[test]
fn a_reaudit_of_a_day_replaces_it() {
    let t = two_villages();
    send(
        &t,
        "gw-a",
        1,
        vec![audit("gw-a", "DT-A", "2026-11-29", 8_200)],
    );
    // Late readings arrived: most of the loss was on meters that had not reported.
    send(
        &t,
        "gw-a",
        2,
        vec![audit("gw-a", "DT-A", "2026-11-29", 9_300)],
    );
    let days = everything(&t);
    assert_eq!(days.len(), 1);
    assert_eq!((days[0].consumers_wh, days[0].flagged), (9_300, false));
    assert!(days[0].suspects.is_empty());
    // The day's flag stays on record, and now says the day was cleared.
    let flags = energy_loss_flags(&t);
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert!(
        flags[0]
            .detail
            .ends_with("re-audited: no longer beyond the allowance"),
        "{}",
        flags[0].detail
    );
}

#[test]
fn a_forged_or_absurd_audit_is_refused_and_nothing_is_stored() {
    let t = two_villages();
    let mut suspect_elsewhere = audit("gw-a", "DT-A", "2026-11-29", 8_000);
    suspect_elsewhere.suspects[0].meter = "N1".into();
    suspect_elsewhere.suspects[0].account = "ACC-N1".into();
    let mut wrong_account = audit("gw-a", "DT-A", "2026-11-29", 8_000);
    wrong_account.suspects[0].account = "ACC-M2".into();
    let mut overscored = audit("gw-a", "DT-A", "2026-11-29", 8_000);
    overscored.suspects[0].score = 101;
    let mut too_many = audit("gw-a", "DT-A", "2026-11-29", 8_000);
    too_many.interval_loss_wh.push(Some(1));
    let mut negative = audit("gw-a", "DT-A", "2026-11-29", 8_000);
    negative.transformer_wh = -1;
    let mut other_id = audit("gw-a", "DT-A", "2026-11-29", 8_000);
    other_id.id = "gw-b:audit:DT-A:2026-11-29".into();
    let forged = vec![
        // Another gateway's id, and another gateway's transformer under this one's id.
        audit("gw-b", "DT-A", "2026-11-29", 8_000),
        other_id,
        audit("gw-a", "DT-B", "2026-11-29", 8_000),
        audit("gw-a", "M1", "2026-11-29", 8_000),
        audit("gw-a", "DT-X", "2026-11-29", 8_000),
        audit("gw-a", "DT-A", "2026-11-31", 8_000),
        audit("gw-a", "DT-A", "2026-11-3", 8_000),
        suspect_elsewhere,
        wrong_account,
        overscored,
        too_many,
        negative,
    ];
    let count = forged.len();
    send(&t, "gw-a", 1, forged);
    assert!(everything(&t).is_empty());
    let flags = t.flags();
    assert!(!flags.iter().any(|f| f.kind == "energy_loss"));
    let refused: Vec<_> = flags
        .iter()
        .filter(|f| f.id.starts_with("refused:gw-a:"))
        .map(|f| (f.kind.as_str(), f.detail.as_str()))
        .collect();
    assert_eq!(refused.len(), count, "{refused:#?}");
    let foreign = refused
        .iter()
        .filter(|(k, _)| *k == "foreign_record")
        .count();
    assert_eq!(foreign, 7, "{refused:#?}");
    assert!(refused
        .iter()
        .any(|(_, d)| d.contains("'DT-B', which is gateway 'gw-b's")));
    assert!(refused
        .iter()
        .any(|(_, d)| d.contains("'2026-11-31' is not a day")));
}

#[test]
fn villages_compare_by_their_share_of_loss() {
    let t = two_days_of_village_a();
    let mut b = audit("gw-b", "DT-B", "2026-11-29", 7_000);
    b.suspects.clear();
    send(&t, "gw-b", 1, vec![b]);
    let range = DayRange::new(
        Some(day("2026-11-29")),
        Some(day("2026-11-29")),
        day("2026-11-30"),
    )
    .unwrap();
    let one_day = t.tx(move |tx| villages(tx, range)).unwrap();
    let order: Vec<(&str, Option<i64>)> = one_day
        .iter()
        .map(|v| (v.gateway.as_str(), v.loss_permille))
        .collect();
    assert_eq!(order, [("gw-b", Some(300)), ("gw-a", Some(180))]);
    let range = DayRange::new(None, None, day("2026-11-30")).unwrap();
    let month = t.tx(move |tx| villages(tx, range)).unwrap();
    let a = month.iter().find(|v| v.gateway == "gw-a").unwrap();
    assert_eq!(
        (
            a.days,
            a.flagged_days,
            a.transformer_wh,
            a.consumers_wh,
            a.loss_wh
        ),
        (2, 1, 20_000, 17_600, 2_400)
    );
    assert_eq!(a.loss_permille, Some(120));
    let range = DayRange::new(None, Some(day("2026-11-28")), day("2026-11-30")).unwrap();
    let gw_a_only = t.tx(move |tx| audits(tx, Some("gw-a"), range, 10)).unwrap();
    assert_eq!(gw_a_only.len(), 1);
}

#[test]
fn a_range_is_read_from_dates_and_refused_when_it_makes_no_sense() {
    let today = day("2026-11-30");
    let range = DayRange::parse(None, None, today).unwrap();
    assert_eq!((range.from, range.to), (day("2026-11-01"), today));
    let range = DayRange::parse(Some("2026-11-02"), Some("2026-11-09"), today).unwrap();
    assert_eq!(
        (range.from, range.to),
        (day("2026-11-02"), day("2026-11-09"))
    );
    for (from, to, says) in [
        (Some("2026-13-01"), None, "from '2026-13-01' is not a date"),
        (None, Some("29/11/2026"), "to '29/11/2026' is not a date"),
        (Some("2026-11-9"), None, "write it YYYY-MM-DD"),
        (Some("2026-11-10"), Some("2026-11-09"), "is after to"),
        (Some("2024-01-01"), Some("2026-11-09"), "more than 366 days"),
    ] {
        let error = DayRange::parse(from, to, today).unwrap_err();
        assert!(matches!(error, CentralError::Invalid(_)), "{error}");
        assert!(error.to_string().contains(says), "{error}");
    }
}

#[test]
fn energy_and_shares_are_written_from_integers() {
    assert_eq!(kwh(1_234), "1.23");
    assert_eq!(kwh(1_235), "1.24");
    assert_eq!(kwh(-20), "-0.02");
    assert_eq!(kwh(-4), "0.00");
    assert_eq!(kwh(0), "0.00");
    assert_eq!(permille(1_800, 10_000), Some(180));
    assert_eq!(permille(1, 3), Some(333));
    assert_eq!(permille(2, 3), Some(667));
    assert_eq!(permille(-2, 3), Some(-667));
    assert_eq!(permille(5, 0), None);
    assert_eq!(percent(182), "18.2%");
    assert_eq!(percent(-5), "-0.5%");
    assert_eq!(
        Reason::FallsWithLoss {
            usual_wh: 4_200,
            recorded_wh: 150
        }
        .to_string(),
        "recorded 0.15 kWh in the hours of most loss, against 4.20 kWh usually"
    );
}
