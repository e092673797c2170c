//! The end-to-end suite: one test binary (one link) for every scenario, each in its own module.
//! Real SQLite files, real TLS on loopback, the real lora-phy driver on the SX1262 emulator, and
//! the `gramgrid` binary in separate processes.

mod bills;
mod central;
mod cli_errors;
mod common;
mod consumer_web;
mod demo;
mod docs_recipes;
mod field_engineer;
mod gateway_redeem;
mod guardrails_central;
mod layering;
mod link_end_to_end;
mod link_processes;
mod meter_events;
mod modem_outage;
mod office_web;
mod protocol_end_to_end;
mod protocol_vectors;
mod push;
mod radio_air;
mod radio_bus;
mod radio_emulator;
mod radio_phy;
mod radio_trace;
mod sms_provider;
mod store_crash;
mod sync_end_to_end;
mod sync_kill;
mod systemd;
mod technician_web;
mod tls_cli;
mod tls_gateway;
mod wire_golden;
