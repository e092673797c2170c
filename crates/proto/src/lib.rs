//! What gramgrid puts on the air and on the wire (pure, no I/O).
//!
//! - [`frame`]: LoRaWAN 1.0.x PHYPayload encode/decode with the `lorawan` crate, session keys, FCnt rules;
//! - [`security`]: the frame filter that turns raw bytes into an accepted frame or a counted rejection;
//! - [`manifest`]: the meter manifest that provisions ABP session keys;
//! - [`payload`]: the compact binary application payload v1 carried in FRMPayload;
//! - [`wire`]: the gateway ↔ central sync format (lanes, reading blocks, downlink records), with
//!   its own counterparts of the core's types ([`wire::model`]);
//! - [`outbox`]: the stored, versioned format of a gateway's outbox rows;
//! - [`voucher`]: offline voucher codes (Ed25519-signed, bound to one account);
//! - [`dlms`]: a DLMS/COSEM codec (IEC 62056-5-3 subset) for IS 15959-2 meters, carried on its own FPort.
//!
//! Byte layouts and rules are documented in `docs/protocol.md`, `docs/sync.md` and `docs/dlms.md`.

#![warn(missing_docs)]

pub mod dlms;
pub mod frame;
pub mod manifest;
pub mod outbox;
pub mod payload;
pub mod security;
pub mod voucher;
pub mod wire;
