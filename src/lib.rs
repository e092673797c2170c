//! gramgrid: a prepaid-electricity engine that runs at the village edge and syncs when it can.
pub mod bench;
pub mod civil;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod ledger;
pub mod pki;
pub mod policy;
pub mod protocol;
pub mod rating;
pub mod relay;
pub mod report;
pub mod store;
pub mod sync;
pub mod tariff;
pub mod tls;
pub mod voucher;
