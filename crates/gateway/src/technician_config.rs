//! `[technician]`: where the technician app listens, its certificate, sessions and lockout.
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[technician]`: the technician web app on the village Wi-Fi (docs/technician.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TechnicianConfig {
    /// Whether the daemon serves the app at all.
    pub enabled: bool,
    /// The HTTPS address: the Wi-Fi interface's address on a gateway (the image sets 10.42.0.1),
    /// loopback elsewhere.
    pub listen: SocketAddr,
    /// A plain-HTTP address that only redirects to `listen` (e.g. "10.42.0.1:80"); none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_listen: Option<SocketAddr>,
    /// The server certificate and key; when unset, the one issued with the enrolment bundle, or a
    /// self-signed one made in the data directory for a gateway without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The key of `cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// A session ends after this long without a request.
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
    /// A session ends this long after login, however busy.
    #[serde(with = "humantime_serde")]
    pub session_max: Duration,
    /// Failed logins in a row that lock an account.
    pub lockout_after: u32,
    /// How long a locked account stays locked.
    #[serde(with = "humantime_serde")]
    pub lockout_for: Duration,
    /// The longest override a supervisor may set.
    #[serde(with = "humantime_serde")]
    pub override_max: Duration,
}

impl Default for TechnicianConfig {
    fn default() -> Self {
        TechnicianConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9443)),
            redirect_listen: None,
            cert: None,
            key: None,
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            lockout_after: 5,
            lockout_for: Duration::from_secs(15 * 60),
            override_max: Duration::from_secs(7 * 24 * 3600),
        }
    }
}
