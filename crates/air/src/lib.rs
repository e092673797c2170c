//! The simulated LoRa air, for everything that runs without radio hardware (never shipped to a Pi).
//!
//! `emulator` is an SX1262 at SPI-command level that the real lora-phy driver
//! (`gramgrid_radio::phy`) talks to; its antenna is an `air::AirPort`: the in-process [`air::Air`]
//! (time on air, path loss with shadowing, collisions and capture, per-SF sensitivity, half duplex)
//! or a client of the UDP air [`bus`] that `gramgrid air-bus` runs. [`sim`] wires a driver, an
//! emulator and an air together; [`capture`] writes what went over the air as JSON lines.
//!
//! ```no_run
//! use gramgrid_air::air::{Air, AirConfig, NodeSpec};
//! use gramgrid_air::sim;
//! use gramgrid_radio::{phy::PhyOptions, Radio, RadioConfig};
//! use std::time::Duration;
//!
//! # async fn village() -> Result<(), gramgrid_radio::RadioError> {
//! // In-process: one air (seeded; run under `tokio::time::pause()` to go faster than real time)...
//! let air = Air::new(AirConfig { seed: 7, ..AirConfig::default() });
//! let (mut gw, _chip) = sim::radio_on_air(&air, NodeSpec::new("gw", 0.0, 0.0), PhyOptions::default()).await?;
//! gw.configure(RadioConfig::gateway()).await?;
//! let mut meters = Vec::new();
//! for i in 0..10 {
//!     let spec = NodeSpec::new(format!("m{i}"), 100.0 * f64::from(i), 50.0);
//!     let (mut m, _chip) = sim::radio_on_air(&air, spec, PhyOptions::default()).await?;
//!     m.configure(RadioConfig::meter()).await?;
//!     meters.push(m);
//! }
//! // ...or across processes, on the hub that `gramgrid air-bus` runs:
//! let hub = "127.0.0.1:47000".parse().unwrap();
//! let (mut remote, _membership) = sim::radio_on_bus(hub, NodeSpec::new("gw", 0.0, 0.0), PhyOptions::default()).await?;
//! remote.configure(RadioConfig::gateway()).await?;
//! let frame = remote.receive(Duration::from_secs(60)).await?;
//! println!("{} bytes at {} dBm, SNR {} dB", frame.payload.len(), frame.rssi_dbm, frame.snr_db);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod air;
pub mod bus;
pub mod capture;
pub mod emulator;
pub mod pathloss;
mod reception;
pub mod sim;
