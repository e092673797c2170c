//! A transformer meter is entered once on no account and sent to its gateway with its keys,
//! re-keyed on change, never also a household's meter or a spare, and sent again to a gateway
//! that was too old for it when it upgrades.
use super::*;
use crate::accounts;
use crate::testing::{central, manifest, priority_upload};
use chrono::TimeZone;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

fn transformer_records(events: &[DownlinkEvent]) -> Vec<(String, MeterKeys)> {
    events
        .iter()
        .filter_map(|event| match event {
            DownlinkEvent::TransformerMeter { serial, keys, .. } => {
                Some((serial.clone(), keys.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_transformer_meter_is_entered_on_no_account_and_sent_with_its_keys() {
    let t = central();
    let village = manifest(&[("DT-A", 0x2601_0100, "dt"), ("M1", 0x2601_0001, "consumer")]);
    let report = t.import(&village, "gw-a", t0()).unwrap();
    assert_eq!(
        (report.added, report.transformers_added, report.rekeyed),
        (1, 1, 0)
    );
    let accounts = t.tx(|tx| accounts::list_accounts(tx)).unwrap();
    assert_eq!(accounts.len(), 1, "only the household has an account");
    let sent = transformer_records(&t.downlink("gw-a"));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "DT-A");
    assert_eq!(sent[0].1.dev_addr, 0x2601_0100);
    assert_eq!(sent[0].1.nwk_skey, "00112233445566778899AABBCCDDEEFF");
    // Stored sealed, not in the clear.
    let stored = t
        .tx(|tx| Ok(tx.query_opt("SELECT nwk_skey FROM transformer_meters", &[])?))
        .unwrap()
        .unwrap();
    assert!(!stored.text(0).unwrap().contains("00112233"));

    let again = t.import(&village, "gw-a", t0()).unwrap();
    assert_eq!(
        (again.transformers_added, again.transformers_rekeyed),
        (0, 0)
    );
    assert_eq!(transformer_records(&t.downlink("gw-a")).len(), 1);

    let rekeyed = manifest(&[("DT-A", 0x2601_0200, "dt")]);
    let report = t.import(&rekeyed, "gw-a", t0()).unwrap();
    assert_eq!(
        (report.transformers_added, report.transformers_rekeyed),
        (0, 1)
    );
    let sent = transformer_records(&t.downlink("gw-a"));
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].1.dev_addr, 0x2601_0200);
}

#[test]
fn a_serial_is_a_households_a_spares_or_a_transformers_meter_never_two() {
    let t = central();
    t.import(
        &manifest(&[("DT-A", 0x2601_0100, "dt"), ("M1", 0x2601_0001, "consumer")]),
        "gw-a",
        t0(),
    )
    .unwrap();
    let refused = |serial: &str, role: &str, gateway: &str| {
        t.import(&manifest(&[(serial, 0x2601_0300, role)]), gateway, t0())
            .unwrap_err()
            .to_string()
    };
    let error = refused("M1", "dt", "gw-a");
    assert!(
        error.contains("M1 is a household meter on account ACC-M1"),
        "{error}"
    );
    let error = refused("DT-A", "consumer", "gw-a");
    assert!(
        error.contains("DT-A is the transformer meter of gateway gw-a"),
        "{error}"
    );
    let error = refused("DT-A", "dt", "gw-b");
    assert!(
        error.contains("transformer meter of gateway gw-a, not gw-b"),
        "{error}"
    );
    let stock = |m: &str, role: &str| {
        let spares = manifest(&[(m, 0x2601_0400, role)]);
        t.tx(move |tx| crate::stock::add_to_stock(tx, &spares, "gw-a", t0()))
            .unwrap_err()
            .to_string()
    };
    assert!(stock("DT-B", "dt").contains("import it without --stock"));
    assert!(stock("DT-A", "consumer").contains("transformer meter of gateway gw-a"));
    t.tx(|tx| {
        crate::stock::add_to_stock(
            tx,
            &manifest(&[("S1", 0x2601_0500, "consumer")]),
            "gw-a",
            t0(),
        )
    })
    .unwrap();
    let error = refused("S1", "dt", "gw-a");
    assert!(
        error.contains("S1 is a spare in the stock of gateway gw-a"),
        "{error}"
    );
    // Nothing of a refused import stayed.
    let count = t
        .tx(|tx| Ok(tx.query_int("SELECT COUNT(*) FROM transformer_meters", &[])?))
        .unwrap();
    assert_eq!(count, 1);
}

#[test]
fn a_gateway_too_old_for_transformer_meters_gets_them_when_it_upgrades() {
    let t = central();
    t.import(&manifest(&[("DT-A", 0x2601_0100, "dt")]), "gw-a", t0())
        .unwrap();
    let exchange = |protocol: u16, applied: u64| {
        let mut request = priority_upload(1, Vec::new(), t0());
        request.protocol = protocol;
        request.downlink_applied = applied;
        t.upload("gw-a", request, t0())
    };
    let old = exchange(TRANSFORMER_PROTOCOL - 1, 0);
    assert!(transformer_records(
        &old.downlink
            .iter()
            .map(|r| r.event.clone())
            .collect::<Vec<_>>()
    )
    .is_empty());
    let through = t.downlink("gw-a").len() as u64;
    let upgraded = exchange(TRANSFORMER_PROTOCOL, through);
    let events: Vec<DownlinkEvent> = upgraded.downlink.into_iter().map(|r| r.event).collect();
    assert_eq!(transformer_records(&events).len(), 1, "{events:?}");
    // Sent once: the next exchange owes nothing.
    let next = exchange(TRANSFORMER_PROTOCOL, t.downlink("gw-a").len() as u64);
    assert!(next.downlink.is_empty());
}
