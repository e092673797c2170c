//! lora-phy driven directly against the SX1262 emulator, for the paths the `Radio` trait does not
//! use: CAD, single receive with a symbol timeout, sleep and wake-up.

use gramgrid_air::air::{Air, AirConfig, NodeSpec};
use gramgrid_air::emulator::{EmuLine, EmuPin, EmuSpi, Fault, Sx126xEmulator};
use gramgrid_air::pathloss::PathLossModel;
use gramgrid_air::sim::radio_on_air;
use gramgrid_radio::phy::{PhyOptions, TokioDelay};
use gramgrid_radio::{Radio, RadioConfig};
use lora_phy::iv::GenericSx126xInterfaceVariant;
use lora_phy::mod_params::{Bandwidth, CodingRate, RadioError, SpreadingFactor};
use lora_phy::sx126x::{Config, Sx1262, Sx126x};
use lora_phy::{LoRa, RxMode};
use std::sync::Arc;
use std::time::Duration;

type Raw = LoRa<Sx126x<EmuSpi, GenericSx126xInterfaceVariant<EmuPin, EmuLine>, Sx1262>, TokioDelay>;

async fn raw_radio(air: &Air, name: &str, x: f64) -> (Raw, Sx126xEmulator) {
    let chip = Sx126xEmulator::new(Fault::None);
    chip.attach(Arc::new(
        air.attach(NodeSpec::new(name, x, 0.0), chip.sink()),
    ));
    let hal = chip.hal();
    let iv = GenericSx126xInterfaceVariant::new(hal.reset, hal.dio1, hal.busy, None, None).unwrap();
    let config = Config {
        chip: Sx1262,
        tcxo_ctrl: None,
        use_dcdc: true,
        rx_boost: false,
    };
    let lora = LoRa::new(Sx126x::new(hal.spi, iv, config), true, TokioDelay)
        .await
        .unwrap();
    (lora, chip)
}

fn air() -> Air {
    Air::new(AirConfig {
        seed: 1,
        path_loss: PathLossModel::urban(),
        keep_records: false,
    })
}

#[tokio::test(start_paused = true)]
async fn cad_sees_a_frame_on_the_air_and_not_silence() {
    let air = air();
    let (mut listener, chip) = raw_radio(&air, "cad", 0.0).await;
    let (mut talker, _) = radio_on_air(
        &air,
        NodeSpec::new("talker", 30.0, 0.0),
        PhyOptions::default(),
    )
    .await
    .unwrap();
    talker.configure(RadioConfig::meter()).await.unwrap();
    let mp = listener
        .create_modulation_params(
            SpreadingFactor::_7,
            Bandwidth::_125KHz,
            CodingRate::_4_5,
            865_062_500,
        )
        .unwrap();

    listener.prepare_for_cad(&mp).await.unwrap();
    assert!(
        !listener.cad(&mp).await.unwrap(),
        "activity on a silent channel"
    );

    let (busy, tx) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            listener.prepare_for_cad(&mp).await.unwrap();
            listener.cad(&mp).await.unwrap()
        },
        talker.transmit(&[0u8; 24])
    );
    tx.unwrap();
    assert!(busy, "no activity while a frame is on the air");
    assert_eq!(chip.command_errors(), 0);
}

#[tokio::test(start_paused = true)]
async fn single_receive_times_out_after_its_symbols() {
    let air = air();
    let (mut lora, chip) = raw_radio(&air, "rx", 0.0).await;
    let mp = lora
        .create_modulation_params(
            SpreadingFactor::_7,
            Bandwidth::_125KHz,
            CodingRate::_4_5,
            865_062_500,
        )
        .unwrap();
    let pp = lora
        .create_rx_packet_params(8, false, 255, true, false, &mp)
        .unwrap();
    lora.prepare_for_rx(RxMode::Single(100), &mp, &pp)
        .await
        .unwrap();
    let t0 = tokio::time::Instant::now();
    let mut buf = [0u8; 255];
    let r = lora.rx(&pp, &mut buf).await;
    assert!(matches!(r, Err(RadioError::ReceiveTimeout)));
    // lora-phy asks for 100 symbols of 1.024 ms (rounded by the chip's mantissa/exponent form)
    let waited = t0.elapsed();
    assert!(
        waited > Duration::from_millis(90) && waited < Duration::from_millis(120),
        "{waited:?}"
    );
    assert_eq!(chip.command_errors(), 0);
}

#[tokio::test(start_paused = true)]
async fn sleep_then_wake_and_transmit() {
    let air = air();
    let (mut lora, chip) = raw_radio(&air, "sleeper", 0.0).await;
    lora.sleep(false).await.unwrap();
    let mp = lora
        .create_modulation_params(
            SpreadingFactor::_9,
            Bandwidth::_125KHz,
            CodingRate::_4_5,
            865_062_500,
        )
        .unwrap();
    let mut pp = lora
        .create_tx_packet_params(8, false, true, false, &mp)
        .unwrap();
    lora.prepare_for_tx(&mp, &mut pp, 14, &[1, 2, 3])
        .await
        .unwrap();
    let t0 = tokio::time::Instant::now();
    lora.tx().await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(100));
    lora.enter_standby().await.unwrap();
    assert_eq!(chip.command_errors(), 0);
}

/// Compile-time check that the gateway can `tokio::spawn` work on an emulated radio.
#[tokio::test(start_paused = true)]
async fn emulated_radio_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let air = air();
    let up = radio_on_air(&air, NodeSpec::new("s", 0.0, 0.0), PhyOptions::default());
    send(&up);
    let (mut radio, _) = up.await.unwrap();
    send(&radio.transmit(&[1]));
    send(&radio.receive(Duration::ZERO));
}
