//! Records written by the previous sync and outbox format (golden bytes in tests/data/wire-v1/,
//! written once by gramgrid 0.1 before the wire had its own types) still decode, to the same
//! values: an upgraded gateway with a full outbox keeps syncing with an upgraded central.
use chrono::{DateTime, Duration, NaiveDate, Utc};
use gramgrid_core::ledger::{EventKind, LedgerEvent};
use gramgrid_core::policy::PolicyConfig;
use gramgrid_core::tariff::{Category, TariffBook, TariffVersion};
use gramgrid_proto::outbox;
use gramgrid_proto::wire::{
    self, DownlinkEvent, UplinkEvent, UploadRequest, UploadResponse, WireRelayAction,
    WireRelayState,
};
use std::path::PathBuf;

fn golden(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/wire-v1")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_796_000_400, 0).unwrap()
}

fn ledger(event: &UplinkEvent) -> LedgerEvent {
    match event {
        UplinkEvent::Ledger(e) => e.clone().into(),
        other => panic!("expected a ledger event, got {other:?}"),
    }
}

#[test]
fn outbox_rows_of_format_1_decode_to_the_events_that_were_queued() {
    let fixed = ledger(&outbox::decode(1, &golden("uplink-ledger-fixed-charge.postcard")).unwrap());
    assert_eq!(
        fixed,
        LedgerEvent {
            id: "village-a:fixed:ACC-0042:2026-11-29".into(),
            account: "ACC-0042".into(),
            at: at(),
            kind: EventKind::FixedCharge,
            amount_paise: 133,
            expires_at: None,
        }
    );
    let credit =
        ledger(&outbox::decode(1, &golden("uplink-ledger-emergency-credit.postcard")).unwrap());
    assert_eq!(credit.kind, EventKind::EmergencyCredit);
    assert_eq!(credit.expires_at, Some(at() + Duration::days(3)));

    match outbox::decode(1, &golden("uplink-voucher-redeemed.postcard")).unwrap() {
        UplinkEvent::VoucherRedeemed {
            voucher,
            redeemed_at,
        } => {
            assert_eq!(voucher.voucher_id, 0x1234_5678_9abc_def0);
            assert_eq!(voucher.amount_paise, 25_000);
            assert_eq!(voucher.expires_at, at() + Duration::days(30));
            assert_eq!(redeemed_at, at());
        }
        other => panic!("{other:?}"),
    }
    match outbox::decode(1, &golden("uplink-relay-command.postcard")).unwrap() {
        UplinkEvent::RelayCommand {
            id,
            meter,
            action,
            state,
            detail,
            ..
        } => {
            assert_eq!(
                (id.as_str(), meter.as_str()),
                ("village-a:cmd:17", "MTR-0042")
            );
            assert_eq!(action, WireRelayAction::Disconnect);
            assert_eq!(
                (state.as_str(), detail.as_str()),
                ("acknowledged", "meter confirmed")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        outbox::decode(1, &golden("uplink-relay-state.postcard")).unwrap(),
        UplinkEvent::RelayState {
            meter: "MTR-0042".into(),
            state: WireRelayState::Disconnected,
            at: at()
        }
    );
    assert_eq!(
        outbox::decode(1, &golden("uplink-alert.postcard")).unwrap(),
        UplinkEvent::Alert {
            id: "village-a:alert:9".into(),
            account: "ACC-0042".into(),
            kind: "low_balance".into(),
            created_at: at(),
            message: "Balance Rs 12.00 left.".into(),
        }
    );
    assert_eq!(
        outbox::decode(1, &golden("uplink-override.postcard")).unwrap(),
        UplinkEvent::Override {
            id: "ov-1".into(),
            account: "ACC-0042".into(),
            action: WireRelayAction::Connect,
            until: at() + Duration::hours(6),
            technician: "ramesh".into(),
            reason: "hospital patient at home".into(),
            created_at: at(),
        }
    );
    assert_eq!(
        outbox::decode(1, &golden("uplink-anomaly.postcard")).unwrap(),
        UplinkEvent::Anomaly {
            meter: Some("MTR-0042".into()),
            kind: "register_went_back".into(),
            detail: "1200 Wh after 1500 Wh".into(),
            at: at(),
        }
    );
    assert_eq!(
        outbox::decode(1, &golden("uplink-clock-skew.postcard")).unwrap(),
        UplinkEvent::ClockSkew {
            gateway_time: at(),
            central_time: at() + Duration::seconds(400)
        }
    );
}

#[test]
fn a_previous_upload_request_decodes_with_every_record() {
    let request: UploadRequest = wire::decode_request(&golden("upload-request.zst")).unwrap();
    wire::check_version(request.protocol).unwrap();
    assert_eq!(request.sent_at, at());
    assert_eq!(request.downlink_applied, 7);
    assert_eq!(
        request.priority.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>()
    );
    assert_eq!(ledger(&request.priority[0].event).amount_paise, 133);
    let batch = request.readings.unwrap();
    let readings: Vec<(String, i64, i64)> = batch
        .blocks
        .iter()
        .flat_map(|b| b.readings().map(move |(t, r)| (b.meter.clone(), t, r)))
        .collect();
    assert_eq!(
        readings,
        vec![
            ("MTR-0042".into(), 1_796_000_400, 1_500),
            ("MTR-0042".into(), 1_796_001_300, 1_620),
            ("MTR-0043".into(), 1_796_000_400, 90),
        ]
    );
}

#[test]
fn a_previous_upload_response_decodes_to_the_same_domain_values() {
    let response: UploadResponse = wire::decode(&golden("upload-response.zst")).unwrap();
    assert_eq!((response.priority_acked, response.readings_acked), (9, 3));
    let events: Vec<DownlinkEvent> = response.downlink.into_iter().map(|r| r.event).collect();
    let [account, meter, recharge, tariff, policy, keys, revoked] = events.try_into().unwrap();
    match account {
        DownlinkEvent::Account {
            id,
            category,
            phone,
            ..
        } => {
            assert_eq!(id, "ACC-0042");
            assert_eq!(Category::from(category), Category::Domestic);
            assert_eq!(phone.as_deref(), Some("+919876543210"));
        }
        other => panic!("{other:?}"),
    }
    match meter {
        DownlinkEvent::Meter {
            serial,
            initial_register_wh,
            keys,
            ..
        } => {
            assert_eq!(serial, "MTR-0042");
            assert_eq!(initial_register_wh, Some(1_500));
            let keys = keys.unwrap();
            assert_eq!(keys.dev_addr, 0x2601_1F2A);
            assert_eq!(keys.nwk_skey, "00112233445566778899aabbccddeeff");
        }
        other => panic!("{other:?}"),
    }
    match recharge {
        DownlinkEvent::Ledger(e) => {
            let e = LedgerEvent::from(e);
            assert_eq!((e.kind, e.amount_paise), (EventKind::Recharge, 50_000));
        }
        other => panic!("{other:?}"),
    }
    match tariff {
        DownlinkEvent::Tariff(t) => {
            assert_eq!(TariffVersion::from(t), TariffBook::builtin().versions()[0])
        }
        other => panic!("{other:?}"),
    }
    match policy {
        DownlinkEvent::Policy { version, policy } => {
            assert_eq!(version, 3);
            let policy = PolicyConfig::try_from(policy).unwrap();
            assert_eq!(policy, PolicyConfig::default());
            assert!(policy
                .holidays
                .contains(&NaiveDate::from_ymd_opt(2026, 8, 15).unwrap()));
        }
        other => panic!("{other:?}"),
    }
    match keys {
        DownlinkEvent::VoucherKeys(keys) => {
            assert_eq!(keys[0].key_id, 2);
            assert_eq!(keys[0].public_key.len(), 64);
            assert_eq!(keys[0].issue_until, Some(at() + Duration::days(90)));
        }
        other => panic!("{other:?}"),
    }
    match revoked {
        DownlinkEvent::VoucherRevoked { redemption_id } => {
            assert_eq!(redemption_id, "voucher:2:123456789abcdef0")
        }
        other => panic!("{other:?}"),
    }
}
