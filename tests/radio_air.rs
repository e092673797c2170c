//! The simulated air with real lora-phy radios on emulated chips: collisions, capture, range,
//! spreading factor, half duplex, CRC and header errors, and same-seed determinism.

use crate::common::exact_air;
use gramgrid_air::air::{Air, NodeSpec, Verdict};
use gramgrid_air::capture::TxRecord;
use gramgrid_air::sim::{radio_on_air, EmulatedRadio};
use gramgrid_radio::phy::PhyOptions;
use gramgrid_radio::{Radio, RadioConfig, RadioError, RxFrame};
use gramgrid_sim::radio_bench::{run_radio_bench, RadioBenchOptions};
use std::time::Duration;

async fn radio(air: &Air, name: &str, x: f64, config: RadioConfig) -> EmulatedRadio {
    let (mut r, _) = radio_on_air(air, NodeSpec::new(name, x, 0.0), PhyOptions::default())
        .await
        .unwrap();
    r.configure(config).await.unwrap();
    r
}

fn sf(sf: u8, base: RadioConfig) -> RadioConfig {
    RadioConfig {
        spreading_factor: sf,
        ..base
    }
}

/// Gateway listens for `window` while each meter sends its own payload after its delay.
async fn listen_while(
    gw: &mut EmulatedRadio,
    window: Duration,
    meters: &mut [(&mut EmulatedRadio, u64)],
) -> Result<RxFrame, RadioError> {
    let sends = futures_join(meters);
    let (rx, ()) = tokio::join!(gw.receive(window), sends);
    rx
}

async fn futures_join(meters: &mut [(&mut EmulatedRadio, u64)]) {
    let mut handles = Vec::new();
    for (i, (radio, delay_ms)) in meters.iter_mut().enumerate() {
        let delay = Duration::from_millis(*delay_ms);
        handles.push(async move {
            tokio::time::sleep(delay).await;
            radio.transmit(&[i as u8; 24]).await.unwrap();
        });
    }
    for h in join_all(handles).await {
        h
    }
}

/// A tiny join_all so the tests need no futures crate.
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

fn verdict_at(records: &[TxRecord], from: &str, at: &str) -> Verdict {
    records
        .iter()
        .find(|r| r.from == from)
        .and_then(|r| r.receivers.iter().find(|x| x.node == at))
        .map(|x| x.verdict)
        .unwrap_or_else(|| panic!("no record of {from} at {at}: {records:?}"))
}

const WINDOW: Duration = Duration::from_secs(2);

#[tokio::test(start_paused = true)]
async fn equal_power_frames_collide() {
    let air = exact_air();
    let mut gw = radio(&air, "gw", 0.0, RadioConfig::gateway()).await;
    let mut a = radio(&air, "a", 60.0, RadioConfig::meter()).await;
    let mut b = radio(&air, "b", -60.0, RadioConfig::meter()).await;
    let rx = listen_while(&mut gw, WINDOW, &mut [(&mut a, 10), (&mut b, 11)]).await;
    assert!(matches!(rx, Err(RadioError::Timeout(_))), "{rx:?}");
    let records = air.take_records();
    assert_eq!(verdict_at(&records, "a", "gw"), Verdict::Collision);
    assert_eq!(verdict_at(&records, "b", "gw"), Verdict::Collision);
}

#[tokio::test(start_paused = true)]
async fn a_frame_six_db_stronger_is_captured() {
    let air = exact_air();
    let mut gw = radio(&air, "gw", 0.0, RadioConfig::gateway()).await;
    // 20.8 log10(2) = 6.26 dB apart
    let mut near = radio(&air, "near", 30.0, RadioConfig::meter()).await;
    let mut far = radio(&air, "far", -60.0, RadioConfig::meter()).await;
    let rx = listen_while(&mut gw, WINDOW, &mut [(&mut far, 10), (&mut near, 11)]).await;
    assert_eq!(rx.unwrap().payload, vec![1u8; 24]);
    let records = air.take_records();
    assert_eq!(verdict_at(&records, "near", "gw"), Verdict::Heard);
    assert_eq!(verdict_at(&records, "far", "gw"), Verdict::Collision);
}

#[tokio::test(start_paused = true)]
async fn out_of_range_at_sf7_but_heard_at_sf12() {
    let air = exact_air();
    let mut gw = radio(&air, "gw", 0.0, RadioConfig::gateway()).await;
    // 300 m: 14 - 145.6 = -131.6 dBm: under SF7's -124, over SF12's -137
    let mut m = radio(&air, "m", 300.0, RadioConfig::meter()).await;
    let rx = listen_while(&mut gw, WINDOW, &mut [(&mut m, 10)]).await;
    assert!(matches!(rx, Err(RadioError::Timeout(_))), "{rx:?}");
    assert_eq!(
        verdict_at(&air.take_records(), "m", "gw"),
        Verdict::BelowSensitivity
    );

    gw.configure(sf(12, RadioConfig::gateway())).await.unwrap();
    m.configure(sf(12, RadioConfig::meter())).await.unwrap();
    let rx = listen_while(&mut gw, Duration::from_secs(5), &mut [(&mut m, 10)]).await;
    let frame = rx.unwrap();
    assert_eq!(frame.spreading_factor, 12);
    // -131.6 dBm is under the noise floor: packet RSSI shows the noise, SNR the signal
    assert_eq!(frame.rssi_dbm, -117);
    assert!((-15..=-14).contains(&frame.snr_db), "snr {}", frame.snr_db);
}

#[tokio::test(start_paused = true)]
async fn wrong_spreading_factor_is_not_heard() {
    let air = exact_air();
    let mut gw = radio(&air, "gw", 0.0, RadioConfig::gateway()).await;
    let mut m = radio(&air, "m", 50.0, sf(8, RadioConfig::meter())).await;
    let rx = listen_while(&mut gw, WINDOW, &mut [(&mut m, 10)]).await;
    assert!(matches!(rx, Err(RadioError::Timeout(_))), "{rx:?}");
    assert_eq!(
        verdict_at(&air.take_records(), "m", "gw"),
        Verdict::WrongSpreadingFactor
    );
}

#[tokio::test(start_paused = true)]
async fn a_transmitting_gateway_hears_nothing() {
    let air = exact_air();
    let mut gw = radio(&air, "gw", 0.0, RadioConfig::gateway()).await;
    let mut m = radio(&air, "m", 50.0, RadioConfig::meter()).await;
    // arm the gateway's receiver first, so it counts as a receiver
    assert!(gw.receive(Duration::from_millis(1)).await.is_err());
    let downlink = [7u8; 200]; // ~330 ms at SF7
    let (tx, ()) = tokio::join!(gw.transmit(&downlink), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        m.transmit(&[1; 24]).await.unwrap();
    });
    tx.unwrap();
    let rx = gw.receive(Duration::from_millis(500)).await;
    assert!(matches!(rx, Err(RadioError::Timeout(_))), "{rx:?}");
    assert_eq!(
        verdict_at(&air.take_records(), "m", "gw"),
        Verdict::HalfDuplex
    );
}

#[tokio::test(start_paused = true)]
async fn interference_after_the_header_is_a_crc_error_never_a_frame() {
    let air = exact_air();
    let mut gw = radio(&air, "gw", 0.0, RadioConfig::gateway()).await;
    let mut a = radio(&air, "a", 60.0, RadioConfig::meter()).await;
    let mut b = radio(&air, "b", -60.0, RadioConfig::meter()).await;
    // header of a 24-byte SF7 frame ends 20.7 ms in; b starts at 40 ms
    let rx = listen_while(&mut gw, WINDOW, &mut [(&mut a, 10), (&mut b, 50)]).await;
    assert!(matches!(rx, Err(RadioError::Crc { .. })), "{rx:?}");
    let records = air.take_records();
    assert_eq!(verdict_at(&records, "a", "gw"), Verdict::CrcError);
    // and the receiver keeps working afterwards
    let rx = listen_while(&mut gw, WINDOW, &mut [(&mut b, 10)]).await;
    assert_eq!(rx.unwrap().payload, vec![0u8; 24]);
}

#[tokio::test(start_paused = true)]
async fn interference_during_the_header_is_a_header_error() {
    let air = exact_air();
    let mut gw = radio(&air, "gw", 0.0, RadioConfig::gateway()).await;
    let mut a = radio(&air, "a", 60.0, RadioConfig::meter()).await;
    let mut b = radio(&air, "b", -60.0, RadioConfig::meter()).await;
    // preamble ends 12.5 ms in, header 20.7 ms: b starts 15 ms after a
    let rx = listen_while(&mut gw, WINDOW, &mut [(&mut a, 10), (&mut b, 25)]).await;
    assert!(matches!(rx, Err(RadioError::Header)), "{rx:?}");
    assert_eq!(
        verdict_at(&air.take_records(), "a", "gw"),
        Verdict::HeaderError
    );
}

fn small_village(seed: u64, capture: std::path::PathBuf) -> RadioBenchOptions {
    RadioBenchOptions {
        meters: 60,
        simulated: Duration::from_secs(3 * 3600),
        interval: Duration::from_secs(300),
        seed,
        capture: Some(capture),
        ..RadioBenchOptions::default()
    }
}

#[test]
fn same_seed_same_capture_trace() {
    let dir = tempfile::tempdir().unwrap();
    let run = |seed: u64, name: &str| {
        let path = dir.path().join(name);
        let report = run_radio_bench(&small_village(seed, path.clone())).unwrap();
        (report, std::fs::read_to_string(path).unwrap())
    };
    let (r1, t1) = run(7, "a.jsonl");
    let (r2, t2) = run(7, "b.jsonl");
    let (_, t3) = run(8, "c.jsonl");
    assert_eq!(r1.uplinks_sent, 60 * 36);
    assert_eq!(t1.lines().count() as u64, r1.uplinks_sent);
    assert_eq!(t1, t2, "same seed, different trace");
    assert_eq!(r1.air, r2.air);
    assert_ne!(t1, t3, "different seeds gave the same trace");
    // every line is a full record with per-receiver verdicts
    let first: TxRecord = serde_json::from_str(t1.lines().next().unwrap()).unwrap();
    assert_eq!(first.phy_payload.len(), 24);
    assert_eq!(first.receivers.len(), 6, "one SX1262 per SF on the mast");
}
