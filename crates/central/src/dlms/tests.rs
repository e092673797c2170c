//! A DLMS meter's security is stored sealed, sent right after its meter's record to a gateway
//! that speaks protocol 12 (and again to one that upgrades to it), refused for a gateway known to
//! be older, and taken through the API with the manifest's validation, never shown.
use super::*;
use crate::accounts::{self, Meter};
use crate::testing::{backends, priority_upload, TestCentral};
use chrono::{DateTime, TimeZone, Utc};
use gramgrid_proto::manifest::MeterManifest;

const EK: &str = "000102030405060708090A0B0C0D0E0F";
const AK: &str = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF";
const TITLE: &str = "4D4D4D0000BC614E";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
}

/// A manifest of `(serial, dev_addr, role, dlms)` entries, all with the same radio keys; a DLMS
/// entry has [`EK`], [`AK`] and [`TITLE`].
fn manifest(meters: &[(&str, u32, &str, bool)]) -> MeterManifest {
    let mut text = String::from("version = 1\n");
    for (serial, dev_addr, role, dlms) in meters {
        text += &format!(
            "[[meter]]\nserial = \"{serial}\"\ndev_addr = \"{dev_addr:08X}\"\nrole = \"{role}\"\nnwk_skey = \"00112233445566778899aabbccddeeff\"\napp_skey = \"ffeeddccbbaa99887766554433221100\"\n"
        );
        if *dlms {
            text += &format!(
                "protocol = \"dlms\"\ndlms_ek = \"{EK}\"\ndlms_ak = \"{AK}\"\nsystem_title = \"{TITLE}\"\n"
            );
        }
    }
    MeterManifest::parse(&text).unwrap()
}

/// The DLMS records among `events`, by serial (None: switched back to payload v1).
fn dlms_records(events: &[DownlinkEvent]) -> Vec<(String, Option<WireDlms>)> {
    events
        .iter()
        .filter_map(|event| match event {
            DownlinkEvent::MeterDlms { serial, dlms } => Some((serial.clone(), dlms.clone())),
            _ => None,
        })
        .collect()
}

fn exchange(t: &TestCentral, gateway: &str, protocol: u16, applied: u64) -> Vec<DownlinkEvent> {
    let mut request = priority_upload(1, Vec::new(), t0());
    request.protocol = protocol;
    request.downlink_applied = applied;
    let response = t.upload(gateway, request, t0());
    response.downlink.into_iter().map(|r| r.event).collect()
}

fn expected() -> WireDlms {
    WireDlms {
        system_title: TITLE.into(),
        ek: EK.into(),
        ak: AK.into(),
    }
}

#[test]
fn an_imported_dlms_meter_reaches_a_protocol_12_gateway_right_after_its_meter_record() {
    for t in backends() {
        an_imported_dlms_meter_reaches_a_protocol_12_gateway_right_after_its_meter_record_on(&t);
    }
}

fn an_imported_dlms_meter_reaches_a_protocol_12_gateway_right_after_its_meter_record_on(
    t: &TestCentral,
) {
    let village = manifest(&[
        ("M1", 0x2601_0001, "consumer", true),
        ("M2", 0x2601_0002, "consumer", false),
        ("DT-A", 0x2601_0100, "dt", true),
    ]);
    let report = t.import(&village, "gw-a", t0()).unwrap();
    assert_eq!((report.added, report.transformers_added), (2, 1));
    let log = t.downlink("gw-a");
    let after = |serial: &str| {
        let at = log
            .iter()
            .position(|e| match e {
                DownlinkEvent::Meter { serial: s, .. }
                | DownlinkEvent::TransformerMeter { serial: s, .. } => s == serial,
                _ => false,
            })
            .unwrap();
        log.get(at + 1).cloned()
    };
    for serial in ["M1", "DT-A"] {
        assert_eq!(
            after(serial),
            Some(DownlinkEvent::MeterDlms {
                serial: serial.into(),
                dlms: Some(expected()),
            })
        );
    }
    assert_eq!(dlms_records(&log).len(), 2, "none for the payload-v1 meter");
    // Sealed at rest, the title alone in the clear.
    let (title, ek) = t
        .tx(|tx| {
            let row = tx
                .query_opt(
                    "SELECT dlms_title, dlms_ek FROM meters WHERE serial = 'M1'",
                    &[],
                )?
                .unwrap();
            Ok((row.text(0)?, row.text(1)?))
        })
        .unwrap();
    assert_eq!(title, TITLE);
    assert!(!ek.contains("00010203"), "{ek}");
    // The listing says the protocol and title, never the keys.
    let listed = t.tx(|tx| accounts::list_meters(tx)).unwrap();
    let m1 = listed.iter().find(|m| m.serial == "M1").unwrap();
    assert_eq!(m1.dlms.as_ref(), village.meters[0].dlms.as_ref());
    let shown = serde_json::to_value(m1).unwrap();
    assert_eq!(shown["protocol"], "dlms");
    assert_eq!(shown["system_title"], TITLE);
    assert!(!shown.to_string().contains(EK) && !shown.to_string().contains(AK));

    let sent = exchange(t, "gw-a", DLMS_PROTOCOL, 0);
    assert_eq!(dlms_records(&sent).len(), 2, "{sent:?}");

    // The same manifest again changes nothing; a meter back on payload v1 is told so.
    let again = t.import(&village, "gw-a", t0()).unwrap();
    assert_eq!((again.rekeyed, again.transformers_rekeyed), (0, 0));
    assert_eq!(dlms_records(&t.downlink("gw-a")).len(), 2);
    let v1 = manifest(&[("M1", 0x2601_0001, "consumer", false)]);
    assert_eq!(t.import(&v1, "gw-a", t0()).unwrap().rekeyed, 1);
    let records = dlms_records(&t.downlink("gw-a"));
    assert_eq!(records.last(), Some(&("M1".to_string(), None)));
}

#[test]
fn a_protocol_11_gateway_skips_the_record_and_gets_it_when_it_upgrades() {
    for t in backends() {
        a_protocol_11_gateway_skips_the_record_and_gets_it_when_it_upgrades_on(&t);
    }
}

fn a_protocol_11_gateway_skips_the_record_and_gets_it_when_it_upgrades_on(t: &TestCentral) {
    t.import(
        &manifest(&[
            ("M1", 0x2601_0001, "consumer", true),
            ("DT-A", 0x2601_0100, "dt", true),
        ]),
        "gw-b",
        t0(),
    )
    .unwrap();
    let old = exchange(t, "gw-b", DLMS_PROTOCOL - 1, 0);
    assert!(dlms_records(&old).is_empty(), "{old:?}");
    assert!(old
        .iter()
        .any(|e| matches!(e, DownlinkEvent::Meter { serial, .. } if serial == "M1")));
    let through = t.downlink("gw-b").len() as u64;
    let upgraded = exchange(t, "gw-b", DLMS_PROTOCOL, through);
    assert_eq!(
        dlms_records(&upgraded),
        vec![
            ("M1".to_string(), Some(expected())),
            ("DT-A".to_string(), Some(expected()))
        ]
    );
    // Sent once: the next exchange owes nothing.
    let next = exchange(t, "gw-b", DLMS_PROTOCOL, t.downlink("gw-b").len() as u64);
    assert!(next.is_empty(), "{next:?}");
}

#[test]
fn a_dlms_meter_is_refused_for_a_gateway_known_to_be_too_old() {
    for t in backends() {
        a_dlms_meter_is_refused_for_a_gateway_known_to_be_too_old_on(&t);
    }
}

fn a_dlms_meter_is_refused_for_a_gateway_known_to_be_too_old_on(t: &TestCentral) {
    exchange(t, "gw-c", DLMS_PROTOCOL - 1, 0);
    for role in ["consumer", "dt"] {
        let error = t
            .import(&manifest(&[("M1", 0x2601_0001, role, true)]), "gw-c", t0())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("gw-c (sync protocol 11)") && error.contains("upgrade it"),
            "{error}"
        );
    }
    // Payload-v1 meters are still taken; nothing of the refused imports stayed.
    let report = t
        .import(
            &manifest(&[("M2", 0x2601_0002, "consumer", false)]),
            "gw-c",
            t0(),
        )
        .unwrap();
    assert_eq!(report.added, 1);
    assert_eq!(t.tx(|tx| accounts::list_meters(tx)).unwrap().len(), 1);
    // Spares carry radio keys alone: a DLMS spare is refused, not taken without its keys.
    let spare = manifest(&[("S1", 0x2601_0003, "consumer", true)]);
    let error = t
        .tx(move |tx| crate::stock::add_to_stock(tx, &spare, "gw-c", t0()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("S1 speaks DLMS"), "{error}");
    // Once it speaks protocol 12, they are.
    exchange(t, "gw-c", DLMS_PROTOCOL, 0);
    t.import(
        &manifest(&[("M1", 0x2601_0001, "consumer", true)]),
        "gw-c",
        t0(),
    )
    .unwrap();
}

#[test]
fn the_api_takes_dlms_fields_with_the_manifest_s_validation_and_never_echoes_a_key() {
    let body = |extra: serde_json::Value| {
        let mut meter = serde_json::json!({
            "serial": "M1",
            "account": "A1",
            "installed_at": "2026-12-01T00:00:00Z",
        });
        if let (Some(meter), Some(extra)) = (meter.as_object_mut(), extra.as_object()) {
            meter.extend(extra.clone());
        }
        serde_json::from_value::<Meter>(meter)
    };
    let v1 = body(serde_json::json!({})).unwrap();
    assert_eq!(v1.dlms, None);
    assert_eq!(serde_json::to_value(&v1).unwrap()["protocol"], "v1");
    let dlms = body(serde_json::json!({
        "protocol": "dlms", "dlms_ek": EK, "dlms_ak": AK, "system_title": TITLE,
    }))
    .unwrap();
    assert_eq!(
        dlms.dlms.as_ref().map(WireDlms::from),
        Some(expected()),
        "read as the manifest reads it"
    );
    let refused = |extra: serde_json::Value| body(extra).unwrap_err().to_string();
    let short = refused(serde_json::json!({
        "protocol": "dlms", "dlms_ek": "0001020304", "dlms_ak": AK, "system_title": TITLE,
    }));
    assert!(
        short.contains("dlms_ek has 10 hex digits, expected 32") && !short.contains("0001020304"),
        "{short}"
    );
    let stray = refused(serde_json::json!({ "dlms_ak": AK }));
    assert!(
        stray.contains("dlms_ak is set, but the meter's `protocol` is not `dlms`")
            && !stray.contains(AK),
        "{stray}"
    );
    let missing = refused(serde_json::json!({ "protocol": "dlms", "dlms_ek": EK, "dlms_ak": AK }));
    assert!(missing.contains("system_title is missing"), "{missing}");
    let zero = refused(serde_json::json!({
        "protocol": "dlms", "dlms_ek": "0".repeat(32), "dlms_ak": AK, "system_title": TITLE,
    }));
    assert!(zero.contains("dlms_ek is all zeros"), "{zero}");
    assert!(refused(serde_json::json!({ "protocol": "iec" })).contains("protocol is not"));
}

#[test]
fn an_api_update_rekeys_a_meter_and_a_move_takes_its_security_to_the_new_gateway() {
    for t in backends() {
        an_api_update_rekeys_a_meter_and_a_move_takes_its_security_to_the_new_gateway_on(&t);
    }
}

fn an_api_update_rekeys_a_meter_and_a_move_takes_its_security_to_the_new_gateway_on(
    t: &TestCentral,
) {
    t.account("A1", Some("gw-a"));
    let security = manifest(&[("M1", 0x2601_0001, "consumer", true)]).meters[0]
        .dlms
        .clone();
    let meter = Meter {
        serial: "M1".into(),
        account: "A1".into(),
        installed_at: t0(),
        initial_register_wh: None,
        keys: None,
        dlms: security,
        relay_state: "unknown".into(),
    };
    let stored = meter.clone();
    t.tx(move |tx| accounts::put_meter(tx, &stored, false))
        .unwrap();
    assert_eq!(
        dlms_records(&t.downlink("gw-a")),
        vec![("M1".to_string(), Some(expected()))]
    );
    let v1 = Meter {
        dlms: None,
        ..meter.clone()
    };
    t.tx(move |tx| accounts::put_meter(tx, &v1, true)).unwrap();
    assert_eq!(
        dlms_records(&t.downlink("gw-a")).last(),
        Some(&("M1".to_string(), None))
    );
    let back = meter.clone();
    t.tx(move |tx| accounts::put_meter(tx, &back, true))
        .unwrap();
    // Moved to a gateway that has not synced yet: it gets the meter and its security.
    let moved = t.tx(|tx| accounts::account(tx, "A1")).unwrap();
    let moved = accounts::Account {
        gateway: Some("gw-d".into()),
        ..moved
    };
    let to_old = moved.clone();
    t.tx(move |tx| accounts::put_account(tx, &moved, true))
        .unwrap();
    assert_eq!(
        dlms_records(&t.downlink("gw-d")),
        vec![("M1".to_string(), Some(expected()))]
    );
    // Not to a gateway too old to reach it.
    exchange(t, "gw-e", DLMS_PROTOCOL - 1, 0);
    let to_old = accounts::Account {
        gateway: Some("gw-e".into()),
        ..to_old
    };
    let error = t
        .tx(move |tx| accounts::put_account(tx, &to_old, true))
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot reach"), "{error}");
}
