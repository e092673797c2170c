//! What gramgrid puts on the air and on the wire (pure, no I/O).
//!
//! - [`frame`]: LoRaWAN 1.0.x PHYPayload encode/decode with the `lorawan` crate, session keys, FCnt rules;
//! - [`security`]: the frame filter that turns raw bytes into an accepted frame or a counted rejection;
//! - [`manifest`]: the meter manifest that provisions ABP session keys;
//! - [`payload`]: the compact binary application payload v1 carried in FRMPayload;
//! - [`wire`]: the gateway ↔ central sync format (lanes, reading blocks, downlink records), with
//!   its own counterparts of the core's types ([`wire::model`]);
//! - [`outbox`]: the stored, versioned format of a gateway's outbox rows;
//! - [`voucher`]: offline voucher codes (Ed25519-signed, bound to one account).
//!
//! Byte layouts and rules are documented in `docs/protocol.md` and `docs/sync.md`.

#![warn(missing_docs)]

pub mod frame;
pub mod manifest;
pub mod outbox;
pub mod payload;
pub mod security;
pub mod voucher;
pub mod wire;
