//! Wiring for simulations: an emulated SX1262 driven by lora-phy, on the in-process air or the UDP bus.

use crate::air::{Air, NodeSpec};
use crate::bus::BusClient;
use crate::emulator::{EmuLine, EmuPin, EmuSpi, Fault, Sx126xEmulator};
use gramgrid_radio::phy::{PhyOptions, PhyRadio, Sx1262Kind, Sx126xPins};
use gramgrid_radio::RadioError;
use std::net::SocketAddr;
use std::sync::Arc;

/// The radio every simulated meter and the emulated gateway use: real lora-phy, emulated chip.
pub type EmulatedRadio = PhyRadio<Sx1262Kind<EmuSpi, EmuPin, EmuLine>>;

/// Brings up lora-phy on an emulated chip (which should already have its antenna attached).
pub async fn emulated_radio(
    chip: &Sx126xEmulator,
    options: PhyOptions,
) -> Result<EmulatedRadio, RadioError> {
    let hal = chip.hal();
    let pins = Sx126xPins {
        reset: hal.reset,
        busy: hal.busy,
        dio1: hal.dio1,
        rf_switch_rx: None,
        rf_switch_tx: None,
    };
    PhyRadio::sx1262(hal.spi, pins, options).await
}

/// A new emulated SX1262 at `spec` on an in-process air, with lora-phy initialised on it.
pub async fn radio_on_air(
    air: &Air,
    spec: NodeSpec,
    options: PhyOptions,
) -> Result<(EmulatedRadio, Sx126xEmulator), RadioError> {
    let chip = Sx126xEmulator::new(Fault::None);
    chip.attach(Arc::new(air.attach(spec, chip.sink())));
    let radio = emulated_radio(&chip, options).await?;
    Ok((radio, chip))
}

/// A new emulated SX1262 at `spec` on the UDP air bus at `hub`, with lora-phy initialised on it.
/// Keep the returned client alive: dropping it takes the radio off the air.
pub async fn radio_on_bus(
    hub: SocketAddr,
    spec: NodeSpec,
    options: PhyOptions,
) -> Result<(EmulatedRadio, BusClient), RadioError> {
    let chip = Sx126xEmulator::new(Fault::None);
    let client = BusClient::connect(hub, spec, chip.sink()).await?;
    chip.attach(client.port());
    let radio = emulated_radio(&chip, options).await?;
    Ok((radio, client))
}
