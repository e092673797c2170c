//! lora-phy end to end through the SX1262 emulator and the in-process air: init, transmit, receive,
//! downlink IQ, and the faults a gateway must survive without hanging.

use crate::common::exact_air;
use gramgrid_air::air::NodeSpec;
use gramgrid_air::emulator::{Fault, Sx126xEmulator};
use gramgrid_air::sim::{emulated_radio, radio_on_air};
use gramgrid_radio::phy::PhyOptions;
use gramgrid_radio::toa::time_on_air;
use gramgrid_radio::{Radio, RadioConfig, RadioError};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn uplink_and_downlink_between_two_lora_phy_radios() {
    let air = exact_air();
    let (mut gw, _) = radio_on_air(&air, NodeSpec::new("gw", 0.0, 0.0), PhyOptions::default())
        .await
        .unwrap();
    let (mut meter, _) = radio_on_air(&air, NodeSpec::new("m1", 100.0, 0.0), PhyOptions::default())
        .await
        .unwrap();
    gw.configure(RadioConfig::gateway()).await.unwrap();
    meter.configure(RadioConfig::meter()).await.unwrap();

    let uplink: Vec<u8> = (0..24).collect();
    let sent_at = Instant::now() + Duration::from_millis(100);
    let (rx, tx) = tokio::join!(gw.receive(Duration::from_secs(5)), async {
        tokio::time::sleep_until(sent_at).await;
        meter.transmit(&uplink).await
    });
    let airtime = tx.unwrap();
    assert_eq!(
        airtime,
        time_on_air(&RadioConfig::meter().modulation(true), 24)
    );
    let frame = rx.unwrap();
    assert_eq!(frame.payload, uplink);
    assert_eq!(frame.spreading_factor, 7);
    let delay = frame.received_at - sent_at;
    assert!(
        delay >= airtime && delay < airtime + Duration::from_millis(5),
        "{delay:?}"
    );
    // 100 m: 14 dBm - (127.41 + 20.8 log10(100/40)) = -121.7 dBm over a -117.0 dBm noise floor:
    // SNR -4.7 dB, and the packet RSSI (signal plus noise) -115.8 dBm
    assert_eq!(frame.rssi_dbm, -116);
    assert!((-5..=-4).contains(&frame.snr_db), "snr {}", frame.snr_db);

    // downlink: inverted IQ, which the meter listens for
    let downlink = b"relay on".to_vec();
    let (rx, tx) = tokio::join!(meter.receive(Duration::from_secs(5)), async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        gw.transmit(&downlink).await
    });
    tx.unwrap();
    assert_eq!(rx.unwrap().payload, downlink);
    let records = air.take_records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].from, "m1");
    assert_eq!(records[1].from, "gw");
}

#[tokio::test(start_paused = true)]
async fn a_meter_does_not_hear_another_meters_uplink() {
    let air = exact_air();
    let (mut a, _) = radio_on_air(&air, NodeSpec::new("a", 0.0, 0.0), PhyOptions::default())
        .await
        .unwrap();
    let (mut b, _) = radio_on_air(&air, NodeSpec::new("b", 50.0, 0.0), PhyOptions::default())
        .await
        .unwrap();
    a.configure(RadioConfig::meter()).await.unwrap();
    b.configure(RadioConfig::meter()).await.unwrap();
    let (rx, tx) = tokio::join!(a.receive(Duration::from_secs(1)), async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        b.transmit(b"uplink").await
    });
    tx.unwrap();
    assert!(matches!(rx, Err(RadioError::Timeout(_))), "{rx:?}");
}

#[tokio::test(start_paused = true)]
async fn missing_chip_is_a_clear_error_not_a_panic() {
    let chip = Sx126xEmulator::new(Fault::Absent);
    let t0 = Instant::now();
    let err = emulated_radio(&chip, PhyOptions::default())
        .await
        .err()
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1));
    match &err {
        RadioError::NoChip { got, expected, .. } => {
            assert_eq!(got, &vec![0xFF, 0xFF]);
            assert_eq!(expected, &vec![0x14, 0x24]);
        }
        other => panic!("expected NoChip, got {other:?}"),
    }
    assert!(err.to_string().contains("0x0740"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn chip_without_dio1_times_out_and_recovers_instead_of_hanging() {
    let chip = Sx126xEmulator::new(Fault::NoDio1);
    let air = exact_air();
    chip.attach(Arc::new(
        air.attach(NodeSpec::new("deaf", 0.0, 0.0), chip.sink()),
    ));
    let mut radio = emulated_radio(&chip, PhyOptions::default()).await.unwrap();
    radio.configure(RadioConfig::meter()).await.unwrap();
    let t0 = Instant::now();
    let err = radio.transmit(&[1, 2, 3]).await.err().unwrap();
    assert!(
        matches!(err, RadioError::Unresponsive { op: "transmit", .. }),
        "{err:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // after the reset the driver is usable again and still bounded
    let err = radio.transmit(&[4, 5, 6]).await.err().unwrap();
    assert!(matches!(err, RadioError::Unresponsive { .. }), "{err:?}");
    let rx = radio.receive(Duration::from_millis(500)).await;
    assert!(matches!(rx, Err(RadioError::Timeout(_))), "{rx:?}");
}

#[tokio::test(start_paused = true)]
async fn invalid_configuration_is_rejected_before_the_driver() {
    let air = exact_air();
    let (mut radio, _) = radio_on_air(&air, NodeSpec::new("x", 0.0, 0.0), PhyOptions::default())
        .await
        .unwrap();
    for bad in [
        RadioConfig {
            spreading_factor: 6,
            ..RadioConfig::default()
        },
        RadioConfig {
            bandwidth_hz: 100_000,
            ..RadioConfig::default()
        },
        RadioConfig {
            coding_rate: 9,
            ..RadioConfig::default()
        },
    ] {
        assert!(matches!(
            radio.configure(bad).await,
            Err(RadioError::InvalidConfig(_))
        ));
    }
    assert!(matches!(
        radio.transmit(&[0; 256]).await,
        Err(RadioError::PayloadTooLong(256))
    ));
}
