//! Simulated meters: virtual firmware (`firmware`), load profiles (`profile`), a fleet scattered
//! over a village (`fleet`), and a light radio for fleets too big for one chip emulator each
//! (`light`).

pub mod firmware;
pub mod fleet;
pub mod light;
pub mod profile;
