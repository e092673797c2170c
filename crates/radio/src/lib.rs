//! The gateway radio: one [`Radio`] trait and the lora-phy driver behind it.
//!
//! `Radio` (trait) <- [`phy::PhyRadio`] (lora-phy `LoRa<Sx126x|Sx127x>`) <- an SPI device and pins,
//! which are either `hardware` (spidev + GPIO character device, feature `hardware`) or, off the Pi,
//! the SX1262 emulator of the `gramgrid-air` crate. [`toa`] and [`budget`] are the arithmetic the
//! gateway's scheduler and the simulated air share (time on air, sensitivity, spreading factor).
//!
//! This crate knows nothing of the simulator: the build for a Pi links it without `gramgrid-air`.

#![warn(missing_docs)]

pub mod budget;
pub mod config;
#[cfg(feature = "hardware")]
pub mod hardware;
pub mod phy;
pub mod toa;

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::Instant;

/// The LoRa parameters that decide who can hear a frame and how long it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Modulation {
    /// Carrier frequency in Hz (default 865.0625 MHz, an IN865 channel).
    pub frequency_hz: u32,
    /// 7..=12 on the air; the emulator also accepts SX126x's 5 and 6.
    pub spreading_factor: u8,
    /// Channel bandwidth in Hz: 125, 250 or 500 kHz.
    pub bandwidth_hz: u32,
    /// Coding rate denominator: 5..=8 for 4/5..4/8.
    pub coding_rate: u8,
    /// Preamble length in symbols; sender and receiver must agree.
    pub preamble_symbols: u16,
    /// LoRa explicit header (length, coding rate and CRC flag sent in the header); always on here.
    pub explicit_header: bool,
    /// Payload CRC present; always on here.
    pub crc_on: bool,
    /// LoRaWAN inverts I/Q on downlinks so that meters do not hear each other's uplinks.
    pub iq_inverted: bool,
}

impl Default for Modulation {
    /// IN865 channel 865.0625 MHz, SF7, BW125, CR4/5, preamble 8, explicit header, CRC on.
    fn default() -> Self {
        Self {
            frequency_hz: 865_062_500,
            spreading_factor: 7,
            bandwidth_hz: 125_000,
            coding_rate: 5,
            preamble_symbols: 8,
            explicit_header: true,
            crc_on: true,
            iq_inverted: false,
        }
    }
}

impl Modulation {
    /// Whether a receiver tuned to `self` can demodulate a frame sent with `other` at all.
    pub fn same_channel(&self, other: &Modulation) -> bool {
        self.frequency_hz == other.frequency_hz && self.bandwidth_hz == other.bandwidth_hz
    }
}

/// What the gateway and the meters set on their radio; `Default` is an uplink-side meter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RadioConfig {
    /// Carrier frequency in Hz; 150-960 MHz is accepted.
    pub frequency_hz: u32,
    /// Spreading factor, 7..=12.
    pub spreading_factor: u8,
    /// Channel bandwidth in Hz: 125,000, 250,000 or 500,000.
    pub bandwidth_hz: u32,
    /// Coding rate denominator: 5..=8 for 4/5..4/8.
    pub coding_rate: u8,
    /// Preamble length in symbols.
    pub preamble_symbols: u16,
    /// Transmit power in dBm at the chip's output (default 14).
    pub tx_power_dbm: i8,
    /// Send with inverted I/Q (true on the gateway: LoRaWAN downlinks).
    pub tx_iq_inverted: bool,
    /// Listen for inverted I/Q (true on a meter: it hears downlinks, not other meters' uplinks).
    pub rx_iq_inverted: bool,
}

impl Default for RadioConfig {
    fn default() -> Self {
        let m = Modulation::default();
        Self {
            frequency_hz: m.frequency_hz,
            spreading_factor: m.spreading_factor,
            bandwidth_hz: m.bandwidth_hz,
            coding_rate: m.coding_rate,
            preamble_symbols: m.preamble_symbols,
            tx_power_dbm: 14,
            tx_iq_inverted: false,
            rx_iq_inverted: false,
        }
    }
}

impl RadioConfig {
    /// The gateway side of a LoRaWAN link: hears normal-IQ uplinks, sends inverted-IQ downlinks.
    pub fn gateway() -> Self {
        Self {
            tx_iq_inverted: true,
            ..Self::default()
        }
    }

    /// The meter side: sends normal-IQ uplinks, hears inverted-IQ downlinks.
    pub fn meter() -> Self {
        Self {
            rx_iq_inverted: true,
            ..Self::default()
        }
    }

    /// The modulation of frames this radio sends (`tx = true`) or listens for.
    pub fn modulation(&self, tx: bool) -> Modulation {
        Modulation {
            frequency_hz: self.frequency_hz,
            spreading_factor: self.spreading_factor,
            bandwidth_hz: self.bandwidth_hz,
            coding_rate: self.coding_rate,
            preamble_symbols: self.preamble_symbols,
            explicit_header: true,
            crc_on: true,
            iq_inverted: if tx {
                self.tx_iq_inverted
            } else {
                self.rx_iq_inverted
            },
        }
    }

    /// Rejects what no LoRa radio here can do, before it reaches a driver.
    pub fn validate(&self) -> Result<(), RadioError> {
        let bad = |why: String| Err(RadioError::InvalidConfig(why));
        if !(7..=12).contains(&self.spreading_factor) {
            return bad(format!(
                "spreading factor {} not in 7..=12",
                self.spreading_factor
            ));
        }
        if ![125_000, 250_000, 500_000].contains(&self.bandwidth_hz) {
            return bad(format!(
                "bandwidth {} Hz not 125, 250 or 500 kHz",
                self.bandwidth_hz
            ));
        }
        if !(5..=8).contains(&self.coding_rate) {
            return bad(format!(
                "coding rate 4/{} not in 4/5..4/8",
                self.coding_rate
            ));
        }
        if !(150_000_000..=960_000_000).contains(&self.frequency_hz) {
            return bad(format!(
                "frequency {} Hz outside 150-960 MHz",
                self.frequency_hz
            ));
        }
        Ok(())
    }
}

/// A frame that arrived with a good CRC.
#[derive(Clone, Debug, PartialEq)]
pub struct RxFrame {
    /// The PHYPayload bytes (up to 255).
    pub payload: Vec<u8>,
    /// Received signal strength of the frame, in dBm.
    pub rssi_dbm: i16,
    /// Signal-to-noise ratio of the frame, in dB (negative below the noise floor, as LoRa allows).
    pub snr_db: i16,
    /// When the driver saw RxDone (the end of the frame on the air), on tokio's clock.
    pub received_at: Instant,
    /// The spreading factor the radio was listening on.
    pub spreading_factor: u8,
    /// The frequency the radio was listening on, in Hz.
    pub frequency_hz: u32,
}

/// Everything a radio can report instead of a good frame or a finished transmission.
#[derive(Debug, thiserror::Error)]
pub enum RadioError {
    /// A frame arrived but failed its payload CRC (collision, interference, weak signal); dropped.
    #[error("frame received with a CRC error (RSSI {rssi_dbm} dBm, SNR {snr_db} dB)")]
    Crc {
        /// Signal strength of the damaged frame, in dBm.
        rssi_dbm: i16,
        /// Its signal-to-noise ratio, in dB.
        snr_db: i16,
    },
    /// A preamble was heard but the LoRa header did not decode.
    #[error("LoRa header error: a preamble was heard but its header did not decode")]
    Header,
    /// No frame within the receive window given (normal on a quiet channel).
    #[error("nothing received within {0:?}")]
    Timeout(Duration),
    /// The chip probe read the wrong bytes: no chip, wrong chip or bad wiring.
    #[error("no radio chip answers on SPI: {what} read {got:02x?}, expected {expected:02x?} (HAT missing, miswired, or wrong chip select?)")]
    NoChip {
        /// The register probed.
        what: &'static str,
        /// The bytes read.
        got: Vec<u8>,
        /// The bytes the chip should answer.
        expected: Vec<u8>,
    },
    /// A driver call did not finish in time; the chip was reset and re-initialised.
    #[error("radio {op} did not finish within {limit:?} (driver calls that time out reset and re-initialise the chip)")]
    Unresponsive {
        /// The operation that hung.
        op: &'static str,
        /// The time limit it exceeded.
        limit: Duration,
    },
    /// After a timed-out call, re-initialising the chip failed too: the radio is out of service.
    #[error("radio did not come back after a reset: {0}")]
    RecoveryFailed(String),
    /// lora-phy reported an error.
    #[error("lora-phy driver error during {op}: {detail}")]
    Driver {
        /// The operation in progress.
        op: &'static str,
        /// lora-phy's error, as text.
        detail: String,
    },
    /// A setting no LoRa radio here supports (see [`RadioConfig::validate`]).
    #[error("invalid radio configuration: {0}")]
    InvalidConfig(String),
    /// A payload longer than 255 bytes (its length).
    #[error("payload of {0} bytes does not fit a LoRa frame (255 max)")]
    PayloadTooLong(usize),
    /// Opening or driving the SPI device or a GPIO line failed.
    #[error("radio hardware I/O: {0}")]
    Io(String),
}

/// The radio as the gateway and the simulated meters use it.
///
/// Futures are not required to be `Send`: one radio is one piece of hardware owned by one task
/// (run it on its own task or `LocalSet`); the concrete emulated and hardware radios are `Send`.
#[allow(async_fn_in_trait)]
pub trait Radio {
    /// Sets channel, spreading factor, power and IQ for what follows.
    async fn configure(&mut self, config: RadioConfig) -> Result<(), RadioError>;
    /// Sends one frame and returns once it has left the antenna, with its time on air.
    async fn transmit(&mut self, payload: &[u8]) -> Result<Duration, RadioError>;
    /// Waits up to `within` for one good frame; CRC and header errors come back as errors.
    async fn receive(&mut self, within: Duration) -> Result<RxFrame, RadioError>;
}
