//! Offline-first sync between a gateway and the central server: wire format, gateway client, central endpoint.
pub mod client;
pub mod clock;
pub mod https;
pub mod netem;
pub mod wire;
