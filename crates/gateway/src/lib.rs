//! The village gateway: the prepaid engine at the edge.
//!
//! - [`store`]: the SQLite store (readings, money events, relay commands, alerts, sync outbox);
//! - [`gateway`]: the policy pass over the store ([`gateway::Gateway`]), asking the pure core;
//! - [`link`]: the meter link that owns the radio (scheduled polls or ALOHA);
//! - [`sync`]: the sync client and its mutual-TLS transport;
//! - [`local`]: the technician socket in the data directory;
//! - [`modem`]: SMS through the cellular modem (ModemManager over D-Bus);
//! - [`technician`]: the technician web app (HTTPS on the village Wi-Fi), configured by
//!   [`technician_config`];
//! - [`config`]: the gateway TOML config;
//! - [`report`]: read-only reports (`gramgrid gateway status`);
//! - [`health`]: the gateway's own health (version, backlog, radio counters, disk), for the
//!   technician's status page and the status each sync session sends central;
//! - [`recent_logs`]: the latest log lines, kept for the diagnostics bundle;
//! - [`wakers`]: wake-up calls between the daemon's tasks (money arrived: policy pass and sync now);
//! - [`watchdog`]: systemd readiness and the watchdog that pings only while every loop is alive;
//! - [`daemon`]: the composition root that builds all of the above and runs it until shutdown.
//!
//! Architecture invariant: nothing here depends on the central server or the simulator; the
//! emulated radio (feature `emulator`) is the only simulator piece the daemon can drive.

#![warn(missing_docs)]

pub mod config;
pub mod daemon;
pub mod gateway;
pub mod health;
pub mod link;
pub mod local;
pub mod modem;
pub mod outage_sms;
pub mod recent_logs;
pub mod report;
pub mod store;
pub mod sync;
pub mod technician;
pub mod technician_config;
pub mod wakers;
pub mod watchdog;
