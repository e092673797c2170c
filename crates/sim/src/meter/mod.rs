//! Simulated meters: virtual firmware (`firmware`), load profiles (`profile`), a fleet scattered
//! over a village (`fleet`), and a light radio for fleets too big for one chip emulator each
//! (`light`), the village's supply as its transformer sees it (`supply`); `cli` runs a fleet as its
//! own process (`gramgrid sim`); `dlms` is the server side of a simulated DLMS/COSEM meter.

pub mod cli;
/// A simulated DLMS/COSEM meter's server side (docs/dlms.md section 7).
pub mod dlms;
pub mod firmware;
pub mod fleet;
pub mod light;
pub mod profile;
pub mod supply;
