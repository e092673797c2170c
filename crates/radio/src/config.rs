//! Gateway configuration of a real radio HAT: SPI device, GPIO lines and board options.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Which transceiver sits on the HAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChipModel {
    /// Semtech SX1262 (sub-GHz, up to +22 dBm).
    Sx1262,
    /// Semtech SX1276 (older SX127x family).
    Sx1276,
}

/// The `[radio.hardware]` section of the gateway config. An empty section gives: SX1262 on
/// /dev/spidev0.0 (SPI0, CE0), NRESET on line 18, BUSY on 20, DIO1 on 16 of /dev/gpiochip0 (BCM
/// numbers on a Pi up to the 4), DIO2 as RF switch, no TCXO, DC-DC on, 2 MHz SPI.
///
/// These are the pins commonly given for SPI SX1262 HATs; they were not checked against a board
/// here. Boards differ: Waveshare's "SX1262 868M LoRa HAT" is a UART module that lora-phy cannot
/// drive at all, Core1262-style modules need `tcxo_volts = 1.8`, and on a Pi 5 the header may be
/// another gpiochip. Check the board's schematic and `gpioinfo`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HardwareRadioConfig {
    /// The transceiver on the board.
    pub chip: ChipModel,
    /// spidev node: `/dev/spidev<bus>.<chip select>`.
    pub spi_device: PathBuf,
    /// SPI clock; the SX126x takes up to 16 MHz, 2 MHz is safe on long jumper wires.
    pub spi_speed_hz: u32,
    /// GPIO character device that carries the lines below.
    pub gpio_chip: PathBuf,
    /// Line offsets (BCM numbers on a Pi's gpiochip0).
    pub reset_line: u32,
    /// SX126x BUSY; unused for SX127x.
    pub busy_line: u32,
    /// SX126x DIO1, or SX127x DIO0: the interrupt line.
    pub dio1_line: u32,
    /// Separate RF-switch enables, for boards that do not switch with DIO2.
    pub rf_switch_rx_line: Option<u32>,
    /// Line offset of the RF switch's transmit enable, if the board has one.
    pub rf_switch_tx_line: Option<u32>,
    /// TCXO supply voltage on DIO3 (e.g. 1.8), for modules with a TCXO; none for a crystal.
    pub tcxo_volts: Option<f32>,
    /// SX126x: power the chip from its DC-DC regulator rather than the LDO.
    pub use_dcdc: bool,
    /// Boosted receive gain (slightly better sensitivity, more current).
    pub rx_boost: bool,
    /// LoRaWAN public sync word.
    pub public_network: bool,
    /// Limit for one driver call that does not wait on the air.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

impl Default for HardwareRadioConfig {
    fn default() -> Self {
        Self {
            chip: ChipModel::Sx1262,
            spi_device: PathBuf::from("/dev/spidev0.0"),
            spi_speed_hz: 2_000_000,
            gpio_chip: PathBuf::from("/dev/gpiochip0"),
            reset_line: 18,
            busy_line: 20,
            dio1_line: 16,
            rf_switch_rx_line: None,
            rf_switch_tx_line: None,
            tcxo_volts: None,
            use_dcdc: true,
            rx_boost: false,
            public_network: true,
            command_timeout: Duration::from_secs(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gives_the_documented_defaults() {
        let c: HardwareRadioConfig = toml::from_str("").unwrap();
        assert_eq!(c, HardwareRadioConfig::default());
        assert_eq!(c.spi_device, PathBuf::from("/dev/spidev0.0"));
        assert_eq!((c.reset_line, c.busy_line, c.dio1_line), (18, 20, 16));
    }

    #[test]
    fn overrides_and_typos() {
        let c: HardwareRadioConfig =
            toml::from_str("chip = \"sx1276\"\ndio1_line = 25\ncommand_timeout = \"250ms\"")
                .unwrap();
        assert_eq!(c.chip, ChipModel::Sx1276);
        assert_eq!(c.dio1_line, 25);
        assert_eq!(c.command_timeout, Duration::from_millis(250));
        assert!(toml::from_str::<HardwareRadioConfig>("dio_line = 25").is_err());
    }
}
