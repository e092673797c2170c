//! Everything that simulates a village, for the demo, the benchmarks and the end-to-end tests
//! (never shipped to a Pi).
//!
//! - [`meter`]: simulated meters (firmware, load profiles, fleet, a light radio, `gramgrid sim`);
//! - [`village`]: central, one gateway and an emulated cellular link ([`netem`]) in one process;
//! - [`demo`]: `gramgrid demo`, a whole village on simulated time;
//! - [`capacity`], [`radio_bench`], [`central_bench`], [`flood_bench`], [`reconnect_bench`],
//!   [`bench`](crate::bench): the `gramgrid bench` commands;
//! - [`air_cli`]: `gramgrid air-bus` and `gramgrid bench radio`;
//! - [`modem_standin`]: a ModemManager stand-in on D-Bus that sends SMS into a list, and a
//!   private `dbus-daemon` ([`modem_standin::PrivateBus`]) to serve it on.
#![warn(missing_docs)]

pub mod air_cli;
pub mod bench;
pub mod capacity;
pub mod central_bench;
pub mod demo;
pub mod flood_bench;
pub mod meter;
pub mod modem_standin;
pub mod netem;
pub mod radio_bench;
pub mod reconnect_bench;
pub mod sms_standin;
pub mod steady_sync_bench;
pub mod village;
