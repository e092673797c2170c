//! The `[radio]` and `[link]` sections of the gateway config: which radio the daemon drives and how
//! it shares the channel among the meters.

use super::scheduler::ScheduleTiming;
use gramgrid_radio::config::HardwareRadioConfig;
use gramgrid_radio::RadioConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Which radio the gateway runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RadioKind {
    /// No radio: the meter link does not run (readings come only from other sources).
    None,
    /// An emulated SX1262 on the UDP air bus (`gramgrid air-bus`), for simulations.
    Emulator,
    /// The SX1262/SX1276 HAT described in `[radio.hardware]` (build with `--features hardware`).
    Hardware,
}

/// `[radio]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RadioSection {
    /// Which radio the meter link drives; `none` (the default) runs no meter link.
    pub kind: RadioKind,
    /// Emulator: the air bus hub's address.
    pub bus: SocketAddr,
    /// Emulator: where the gateway's antenna stands in the simulated village (metres).
    pub x_m: f64,
    /// Emulator: the antenna's other coordinate in the simulated village (metres).
    pub y_m: f64,
    /// Emulator: gain of the mast antenna.
    pub antenna_gain_dbi: f64,
    /// The one channel (IN865: 865.0625, 865.4025 or 865.985 MHz).
    pub frequency_hz: u32,
    /// The gateway's transmit power (dBm).
    pub tx_power_dbm: i8,
    /// ALOHA mode only: the spreading factor the gateway listens on (one SX1262 = one SF).
    pub aloha_spreading_factor: u8,
    /// `[radio.hardware]`: the HAT's chip, SPI device and GPIO lines (for `kind = "hardware"`).
    pub hardware: HardwareRadioConfig,
}

impl Default for RadioSection {
    fn default() -> Self {
        let base = RadioConfig::gateway();
        Self {
            kind: RadioKind::None,
            bus: SocketAddr::from(([127, 0, 0, 1], 47000)),
            x_m: 0.0,
            y_m: 0.0,
            antenna_gain_dbi: gramgrid_radio::budget::GATEWAY_GAIN_DBI,
            frequency_hz: base.frequency_hz,
            tx_power_dbm: base.tx_power_dbm,
            aloha_spreading_factor: 7,
            hardware: HardwareRadioConfig::default(),
        }
    }
}

impl RadioSection {
    /// The gateway radio's base settings (the spreading factor is set per exchange).
    pub fn radio_config(&self) -> RadioConfig {
        RadioConfig {
            frequency_hz: self.frequency_hz,
            tx_power_dbm: self.tx_power_dbm,
            spreading_factor: self.aloha_spreading_factor,
            ..RadioConfig::gateway()
        }
    }
}

/// How meters share the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    /// The gateway polls Class C meters one at a time (the default).
    Scheduled,
    /// Meters send on their own timers (Class A); the gateway only listens.
    Aloha,
}

/// `[link]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkSection {
    /// How meters share the channel: `scheduled` polling (the default) or `aloha`.
    pub mode: AccessMode,
    /// Scheduled mode: a meter that answered is polled again this long after.
    #[serde(with = "humantime_serde")]
    pub poll_period: Duration,
    /// Scheduled mode: a meter that did not answer is tried again after this long (first tries).
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// A meter manifest (TOML, issued by the central server) whose keys are loaded at start for the
    /// meters installed here. Keys synced from central need no manifest.
    pub manifest: Option<PathBuf>,
}

impl Default for LinkSection {
    fn default() -> Self {
        Self {
            mode: AccessMode::Scheduled,
            poll_period: Duration::from_secs(30 * 60),
            retry_after: Duration::from_secs(120),
            manifest: None,
        }
    }
}

impl LinkSection {
    /// The scheduler's timing from `poll_period` and `retry_after`.
    pub fn timing(&self) -> ScheduleTiming {
        let d = |v: Duration| chrono::Duration::from_std(v).unwrap_or(chrono::Duration::MAX);
        ScheduleTiming {
            period: d(self.poll_period),
            retry_after: d(self.retry_after),
        }
    }
}
