//! The production path as a field engineer meets it, every part its own process: `central serve`,
//! `gramgrid gateway` (emulated radio on `gramgrid air-bus`) and a fleet from `gramgrid sim`. The
//! gateway is installed first; the meters are added at central while it runs, and are then read,
//! cut at zero balance, recharged and reconnected with no restart anywhere. Every frame on the air
//! is checked against the meters' keys with the `lorawan` crate.
use crate::common::village::{wait_for, Village};
use gramgrid_proto::manifest::MeterManifest;
use std::path::Path;
use std::time::Duration;

#[test]
fn meters_added_at_central_while_the_gateway_runs_are_read_cut_and_reconnected_without_a_restart() {
    // The gateway is installed and synced first; weeks later the meters are installed and
    // entered at central, and the running gateway takes them up: keys arrive by sync, the link
    // polls them at once.
    let mut village = Village::start(2, "");
    village.install_meters();
    let d = village.path().to_path_buf();
    // No credit yet: both are cut, inside the (any-minute) window, and the meters confirm.
    wait_for(
        "both disconnects confirmed by the meters",
        Duration::from_secs(90),
        &d,
        || village.acknowledged("disconnect") == 2,
    );
    for i in 0..2 {
        village.central.post(
            "/api/v1/recharges",
            &format!(r#"{{"idempotency_key": "counter-{i}", "account": "ACC-{i}", "amount_paise": 50000}}"#),
        );
    }
    wait_for(
        "both reconnects confirmed by the meters",
        Duration::from_secs(90),
        &d,
        || village.acknowledged("connect") == 2,
    );
    wait_for(
        "central to see both relays connected",
        Duration::from_secs(30),
        &d,
        || {
            let (_, meters) = village.central.call("GET", "/api/v1/meters", None);
            meters.matches(r#""relay_state":"connected""#).count() == 2
        },
    );
    let (status, balance) = village
        .central
        .call("GET", "/api/v1/accounts/ACC-0/balance", None);
    assert_eq!(status, 200, "{balance}");

    // Every frame on the air between the gateway and these meters carries a good MIC.
    village.gateway.take();
    village.hub.take();
    let checked = check_capture(&d.join("air.jsonl"), &village.manifest);
    assert!(
        checked.uplinks >= 4 && checked.downlinks >= 4,
        "too few frames on the air: {checked:?}"
    );
}

#[derive(Debug, Default)]
struct Checked {
    uplinks: usize,
    downlinks: usize,
}

/// Verifies the MIC of every data frame in an air capture with the `lorawan` crate and the keys of
/// the manifest; a frame for an unknown DevAddr or with a bad MIC fails the test.
fn check_capture(capture: &Path, manifest: &MeterManifest) -> Checked {
    let mut checked = Checked::default();
    let text = std::fs::read_to_string(capture).unwrap();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let phy = hex::decode(record["phy_payload"].as_str().unwrap()).unwrap();
        let dev_addr = u32::from_le_bytes([phy[1], phy[2], phy[3], phy[4]]);
        let fcnt = u32::from(u16::from_le_bytes([phy[6], phy[7]]));
        let meter = manifest
            .meters
            .iter()
            .find(|m| m.keys.dev_addr.0 == dev_addr)
            .unwrap_or_else(|| panic!("frame for unknown DevAddr {dev_addr:08X}"));
        let nwk: [u8; 16] = hex::decode(meter.keys.nwk_skey.to_storage_hex())
            .unwrap()
            .try_into()
            .unwrap();
        let parsed = lorawan::parser::parse(phy.clone()).unwrap();
        let lorawan::parser::PhyPayload::Data(lorawan::parser::DataPayload::Encrypted(frame)) =
            parsed
        else {
            panic!("not a data frame: {line}");
        };
        assert!(
            frame.validate_mic(&lorawan::keys::AES128(nwk), fcnt),
            "bad MIC on the air: {line}"
        );
        // MType: 010 unconfirmed data up, 011 unconfirmed data down (and 100/101 confirmed).
        match phy[0] >> 5 {
            0b010 | 0b100 => checked.uplinks += 1,
            _ => checked.downlinks += 1,
        }
    }
    checked
}
