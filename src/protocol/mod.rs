//! LoRaWAN 1.0.x framing, per-meter security and the gramgrid application payload v1 (pure, no I/O).
//!
//! Layering, from the air inwards:
//! - [`frame`]: PHYPayload encode/decode with the `lorawan` crate, session keys, FCnt rules;
//! - [`security`]: the frame filter that turns raw bytes into an accepted frame or a counted rejection;
//! - [`manifest`]: the meter manifest that provisions ABP session keys;
//! - [`payload`]: the compact binary application payload carried in FRMPayload.
//!
//! Byte layouts and rules are documented in `docs/protocol.md`.

pub mod frame;
pub mod manifest;
pub mod payload;
pub mod security;
