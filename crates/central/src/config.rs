//! Central server configuration: a TOML file whose every option has a documented default.
//!
//! `docs/central.example.toml` lists every option with its default; a unit test checks that the
//! file parses to exactly [`CentralConfig::default`], so the two cannot drift.
use gramgrid_net::config_file::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole central configuration.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CentralConfig {
    /// Address the HTTPS listener binds.
    pub listen: String,
    /// `sqlite:PATH` (embedded, the default) or `postgres://user:password@host:port/database`.
    pub database_url: String,
    /// PostgreSQL connections (storage worker threads); SQLite always uses one.
    pub database_connections: usize,
    /// Directory of the central CA and server certificate (`gramgrid central init`).
    pub pki_dir: PathBuf,
    /// A balance is flagged stale when its gateway has not synced for longer than this.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// The default notification sender appends JSON lines here.
    pub notifications_log: PathBuf,
    /// How often queued notifications are handed to the sender.
    #[serde(with = "humantime_serde")]
    pub notify_every: Duration,
    /// Bearer tokens accepted by the API (`Authorization: Bearer TOKEN`). Empty: the API refuses
    /// every call, so set at least one (e.g. from a secrets manager via `GRAMGRID_API_TOKEN`).
    pub api_tokens: Vec<String>,
}

impl Default for CentralConfig {
    fn default() -> Self {
        CentralConfig {
            listen: "0.0.0.0:8443".into(),
            database_url: "sqlite:gramgrid-central/central.db".into(),
            database_connections: 4,
            pki_dir: PathBuf::from("gramgrid-central/pki"),
            stale_after: Duration::from_secs(6 * 3600),
            notifications_log: PathBuf::from("gramgrid-central/notifications.log"),
            notify_every: Duration::from_secs(10),
            api_tokens: Vec::new(),
        }
    }
}

impl std::fmt::Debug for CentralConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens and database passwords are secrets: never in logs.
        f.debug_struct("CentralConfig")
            .field("listen", &self.listen)
            .field("database", &self.database_url.split('@').next_back())
            .field("pki_dir", &self.pki_dir)
            .field("stale_after", &self.stale_after)
            .field(
                "api_tokens",
                &format!("<{} redacted>", self.api_tokens.len()),
            )
            .finish_non_exhaustive()
    }
}

impl CentralConfig {
    /// Reads a config file, or the defaults when `path` is None.
    pub fn load(path: Option<&Path>) -> Result<CentralConfig, ConfigError> {
        gramgrid_net::config_file::load_file(path, CentralConfig::parse)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<CentralConfig, String> {
        let config: CentralConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        for token in &config.api_tokens {
            check_token(token).map_err(|problem| format!("api_tokens: {problem}"))?;
        }
        if config.database_connections == 0 {
            return Err("database_connections must be at least 1".into());
        }
        if config.notify_every.is_zero() {
            return Err(
                "notify_every = \"0s\" would stop the notifier: give a period such as \"10s\""
                    .into(),
            );
        }
        Ok(config)
    }

    /// Adds an API token from outside the file (`GRAMGRID_API_TOKEN`), under the same rules.
    pub fn add_api_token(&mut self, token: String) -> Result<(), String> {
        check_token(&token)?;
        self.api_tokens.push(token);
        Ok(())
    }
}

/// An API token must be long enough not to be guessed.
fn check_token(token: &str) -> Result<(), String> {
    if token.len() < 16 {
        return Err(
            "each token must be at least 16 characters (use a random one, e.g. `openssl rand -hex 24`)"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_token_and_a_zero_notify_period_are_refused_wherever_they_come_from() {
        assert!(CentralConfig::parse("api_tokens = [\"x\"]\n")
            .unwrap_err()
            .contains("at least 16 characters"));
        let mut config = CentralConfig::default();
        assert!(config.add_api_token("x".into()).is_err());
        assert!(config.api_tokens.is_empty());
        assert!(config.add_api_token("0123456789abcdef".into()).is_ok());
        assert!(CentralConfig::parse("notify_every = \"0s\"\n")
            .unwrap_err()
            .contains("notify_every"));
    }

    #[test]
    fn the_example_file_documents_exactly_the_defaults() {
        let text = include_str!("../../../docs/central.example.toml");
        assert_eq!(
            CentralConfig::parse(text).unwrap(),
            CentralConfig::default()
        );
        // Every option appears in the example, uncommented.
        let defaults = toml::to_string(&CentralConfig::default()).unwrap();
        for line in defaults.lines().filter(|l| l.contains(" = ")) {
            let key = line.split(" = ").next().unwrap();
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{key} = "))),
                "{key} is not documented"
            );
        }
    }

    #[test]
    fn bad_values_name_the_key_and_secrets_stay_out_of_debug() {
        assert!(CentralConfig::parse("listen_on = 1")
            .unwrap_err()
            .contains("listen_on"));
        assert!(CentralConfig::parse("api_tokens = [\"short\"]")
            .unwrap_err()
            .contains("api_tokens"));
        let config = CentralConfig::parse(
            "api_tokens = [\"0123456789abcdef-secret\"]\ndatabase_url = \"postgres://u:pw@h/db\"",
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("secret") && !debug.contains("pw"),
            "{debug}"
        );
    }
}
