//! What the gateway and central share to talk to each other: the PKI that enrols gateways, mutual
//! TLS over it, the wall clock both read "now" from, and config-file loading.
//!
//! - [`pki`]: the central CA and the gateway enrolment bundle (rcgen, ring);
//! - [`tls`]: rustls configs from the PKI, the TLS accept loop for axum, the HTTPS client;
//! - [`wallclock`]: where a shell reads "now" (the system clock, or the demo's simulated clock);
//! - [`config_file`]: reading a TOML config file, or the embedded defaults;
//! - [`files`]: files with secrets or personal data, created private whatever the umask;
//! - [`secrets`]: secrets sealed at rest under a key file outside the database.

#![warn(missing_docs)]

pub mod config_file;
pub mod files;
pub mod pki;
pub mod secrets;
pub mod tls;
pub mod wallclock;
