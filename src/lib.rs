//! gramgrid: a prepaid-electricity engine that runs at the village edge and syncs when it can.
pub mod cli;
pub mod radio;
