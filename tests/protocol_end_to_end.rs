//! The protocol layer as the gateway and a simulated meter use it: manifest → keys, meter report up
//! through the frame filter, relay command down, and the counters a restart restores.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use gramgrid_proto::frame::{encode_data_frame, DevAddr, Direction, FrameSpec, SessionKeys};
use gramgrid_proto::manifest::MeterManifest;
use gramgrid_proto::payload::{
    AckOutcome, Downlink, EventKind, IntervalReading, MeterEvent, MeterReport, RelayAck,
    RelayAction, RelayCommand, RelayState, Uplink, FPORT,
};
use gramgrid_proto::security::{FrameFilter, RejectCounters, RejectReason, Rejection, Session};

const MANIFEST: &str = r#"
version = 1

[[meter]]
serial = "GG-0001"
dev_addr = "26011F2A"
nwk_skey = "2B7E151628AED2A6ABF7158809CF4F3C"
app_skey = "3C4FCF098815F7ABA6D2AE2816157E2B"
category = "domestic"
"#;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

/// Builds a frame as the meter (uplink) or the gateway (downlink) would send it.
fn send(keys: &SessionKeys, direction: Direction, fcnt: u32, fport: u8, payload: &[u8]) -> Vec<u8> {
    let confirmed = direction == Direction::Downlink;
    let spec = FrameSpec {
        direction,
        confirmed,
        ack: false,
        fcnt,
        fport,
        payload,
    };
    encode_data_frame(keys, &spec).unwrap()
}

/// Stand-in for the gateway store: last accepted uplink counter per DevAddr.
type CounterStore = HashMap<DevAddr, u32>;

fn receive(
    manifest: &MeterManifest,
    store: &mut CounterStore,
    counters: &mut RejectCounters,
    phy: &[u8],
) -> Option<Uplink> {
    let verdict = FrameFilter::gateway().check(phy, |addr| {
        manifest.by_dev_addr(addr).map(|m| Session {
            keys: m.keys.clone(),
            last_fcnt: store.get(&addr).copied(),
        })
    });
    match verdict {
        Ok(frame) => {
            store.insert(frame.dev_addr, frame.fcnt); // persist before acting
            match Uplink::decode_frame(frame.fport, &frame.payload) {
                Ok(msg) => Some(msg),
                Err(_) => {
                    counters.record(RejectReason::BadPayload);
                    None
                }
            }
        }
        Err(rejection) => {
            counters.record(rejection.reason());
            None
        }
    }
}

#[test]
fn report_up_command_down_and_replay_after_restart() {
    let manifest = MeterManifest::parse(MANIFEST).unwrap();
    let meter_keys = manifest.meters[0].keys.clone();
    let day = 1_795_824_000; // 2026-11-28 00:00 UTC

    // Meter side: a batch of four intervals, fitted to SF12 (51 bytes), sent as uplink FCnt 7.
    let report = MeterReport {
        meter_time: t(day + 3_605),
        intervals: (0..4)
            .map(|i| IntervalReading {
                interval_start: t(day + 900 * i),
                import_wh: 50_000 + 120 * i as u64,
                export_wh: 0,
            })
            .collect(),
        power_w: 480,
        voltage_dv: 2_290,
        relay_state: RelayState::Connected,
        events: vec![MeterEvent {
            kind: EventKind::PowerRestore,
            at: t(day + 1_000),
        }],
        acks: vec![],
    };
    let (payload, included) = report.encode_fitting(51).unwrap();
    assert_eq!(included, 4);
    let phy = send(&meter_keys, Direction::Uplink, 7, FPORT, &payload);

    // Gateway side.
    let mut store = CounterStore::new();
    let mut counters = RejectCounters::default();
    let got = receive(&manifest, &mut store, &mut counters, &phy);
    assert_eq!(got, Some(Uplink::MeterReport(report)));
    assert_eq!(store[&DevAddr(0x2601_1F2A)], 7);

    // Restart: the store survives, the filter has no memory; the captured frame is replayed.
    let mut restored = store.clone();
    assert_eq!(receive(&manifest, &mut restored, &mut counters, &phy), None);
    assert_eq!(counters.get(RejectReason::ReplayedFcnt), 1);

    // A frame on another port is authentic but not payload v1.
    let other_port = send(&meter_keys, Direction::Uplink, 8, 9, &payload);
    assert_eq!(
        receive(&manifest, &mut restored, &mut counters, &other_port),
        None
    );
    assert_eq!(counters.get(RejectReason::BadPayload), 1);

    // Gateway → meter: a disconnect command as confirmed downlink FCnt 0; the meter's filter opens it.
    let command = Downlink::RelayCommand(RelayCommand {
        command_id: 41,
        action: RelayAction::Disconnect,
    });
    let bytes = command.encode().unwrap();
    let down = send(
        &manifest.meters[0].keys,
        Direction::Downlink,
        0,
        FPORT,
        &bytes,
    );
    let at_meter = FrameFilter::meter()
        .check(&down, |_| {
            Some(Session {
                keys: meter_keys.clone(),
                last_fcnt: None,
            })
        })
        .unwrap();
    assert!(at_meter.confirmed);
    assert_eq!(
        Downlink::decode_frame(at_meter.fport, &at_meter.payload).unwrap(),
        command
    );

    // The meter's next report acknowledges command 41 in a confirmed-ACK uplink.
    let ack_report = MeterReport {
        meter_time: t(day + 3_700),
        intervals: vec![],
        power_w: 0,
        voltage_dv: 2_290,
        relay_state: RelayState::Disconnected,
        events: vec![MeterEvent {
            kind: EventKind::RelayOperated { command_id: 41 },
            at: t(day + 3_650),
        }],
        acks: vec![RelayAck {
            command_id: 41,
            outcome: AckOutcome::Applied,
        }],
    };
    let bytes = Uplink::MeterReport(ack_report.clone()).encode().unwrap();
    let phy = send(&meter_keys, Direction::Uplink, 9, FPORT, &bytes);
    assert_eq!(
        receive(&manifest, &mut restored, &mut counters, &phy),
        Some(Uplink::MeterReport(ack_report))
    );

    // A frame from a meter that is not in the manifest.
    let mut stranger = meter_keys.clone();
    stranger.dev_addr = DevAddr(0x2601_FFFF);
    let phy = send(&stranger, Direction::Uplink, 1, FPORT, &bytes);
    assert_eq!(receive(&manifest, &mut restored, &mut counters, &phy), None);
    assert_eq!(counters.get(RejectReason::UnknownDevAddr), 1);
    assert_eq!(counters.total(), 3);
    let shown = Rejection::UnknownDevAddr(DevAddr(0x2601_FFFF)).to_string();
    assert_eq!(shown, "unknown DevAddr 2601FFFF");
}
