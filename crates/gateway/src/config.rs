//! Gateway configuration: a TOML file whose every option has a documented default.
//!
//! `docs/gateway.example.toml` lists every option with its default value; a unit
//! test checks that file parses to exactly [`GatewayConfig::default`], so the two cannot drift.
use gramgrid_core::policy::PolicyConfig;
use gramgrid_core::relay::RetryPolicy;
use gramgrid_core::tariff::{TariffBook, TariffVersion};
use gramgrid_net::config_file::load_file;
pub use gramgrid_net::config_file::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The whole gateway configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// `[gateway]`: this gateway's id, its data directory and the policy loop's schedule.
    pub gateway: GatewaySection,
    /// `[policy]`: alert levels, disconnect threshold (paise), disconnect windows and holidays
    /// (Asia/Kolkata), grace and the daily message time. A policy central publishes replaces it.
    pub policy: PolicyConfig,
    /// `[relay]`: how relay commands are re-sent until the meter confirms, and when they time out.
    pub relay: RetryPolicy,
    /// `[sync]`: enrolment bundle, schedule (UTC), batch sizes, backoff and the clock-skew limit.
    pub sync: crate::sync::client::SyncConfig,
    /// `[radio]`: which radio the meter link drives, its channel and transmit power.
    pub radio: crate::link::config::RadioSection,
    /// `[link]`: how meters share the channel (scheduled polls or ALOHA), poll timing, manifest.
    pub link: crate::link::config::LinkSection,
    /// `[modem]`: urgent consumer messages through the cellular modem while the backhaul is down.
    pub modem: crate::modem::ModemConfig,
    /// `[technician]`: the technician web app on the village Wi-Fi (HTTPS).
    pub technician: crate::technician_config::TechnicianConfig,
    /// `[outage]`: when meters losing power together count as a supply outage.
    pub outage: gramgrid_core::outage::OutageRule,
    /// `[load]`: when drawing more than the sanctioned load is flagged for the office, and the
    /// load-limit trip (off by default).
    pub load: gramgrid_core::demand::LoadRule,
    /// `[audit]`: the transformer's energy audit: the technical loss allowed, and when the rest
    /// flags a day.
    pub audit: gramgrid_core::audit::AuditRule,
    /// Tariff versions; when absent the built-in book is used (see `gramgrid tariff show`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tariff: Vec<TariffVersion>,
}

/// Identity and paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySection {
    /// This gateway's name; it prefixes the ids of the events it creates, so it must be unique.
    pub id: String,
    /// Where the gateway keeps its database (created if missing).
    pub data_dir: PathBuf,
    /// When the policy loop runs: a cron expression in Asia/Kolkata time.
    pub policy_schedule: String,
    /// Free space on the data directory's file system kept for money events, relay decisions and
    /// alerts, in MiB: below it, new readings are left on the meters until space returns.
    pub disk_reserve_mib: u64,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            id: "gateway-1".into(),
            data_dir: PathBuf::from("gramgrid-gateway"),
            policy_schedule: "0 * * * * *".into(),
            disk_reserve_mib: 64,
        }
    }
}

impl GatewayConfig {
    /// Loads a config file, or the embedded defaults when `path` is None.
    pub fn load(path: Option<&Path>) -> Result<GatewayConfig, ConfigError> {
        load_file(path, GatewayConfig::parse)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<GatewayConfig, String> {
        let config: GatewayConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.gateway.id.is_empty()
            || !self
                .gateway
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "gateway.id = {:?}: use letters, digits, '-' and '_' only (it becomes part of event ids)",
                self.gateway.id
            ));
        }
        cron::Schedule::from_str(&self.gateway.policy_schedule).map_err(|e| {
            format!(
                "gateway.policy_schedule = {:?} is not a cron expression: {e}",
                self.gateway.policy_schedule
            )
        })?;
        cron::Schedule::from_str(&self.sync.schedule).map_err(|e| {
            format!(
                "sync.schedule = {:?} is not a cron expression: {e}",
                self.sync.schedule
            )
        })?;
        let (max_readings, max_priority) = (
            gramgrid_proto::wire::MAX_READINGS_PER_EXCHANGE,
            gramgrid_proto::wire::MAX_PRIORITY_PER_EXCHANGE,
        );
        if !(1..=max_readings).contains(&self.sync.max_readings)
            || !(1..=max_priority).contains(&self.sync.max_priority_records)
        {
            return Err(format!(
                "sync.max_readings must be 1 to {max_readings} and sync.max_priority_records 1 to {max_priority} (the most central takes in one exchange)"
            ));
        }
        if self.relay.max_attempts == 0 {
            return Err("relay.max_attempts must be at least 1".into());
        }
        if !(7..=12).contains(&self.radio.aloha_spreading_factor) {
            return Err("radio.aloha_spreading_factor must be 7..=12".into());
        }
        if self.link.poll_period.is_zero() || self.link.retry_after.is_zero() {
            return Err("link.poll_period and link.retry_after must be above zero".into());
        }
        self.policy.validate()?;
        self.load.validate()?;
        if let Some(problem) = self.audit.problem() {
            return Err(format!("audit.{problem}"));
        }
        self.tariff_book()
            .map(|_| ())
            .map_err(|e| format!("[[tariff]]: {e}"))
    }

    /// The tariff book this config selects.
    pub fn tariff_book(&self) -> Result<TariffBook, gramgrid_core::tariff::TariffError> {
        if self.tariff.is_empty() {
            Ok(TariffBook::builtin())
        } else {
            TariffBook::new(self.tariff.clone())
        }
    }

    /// The policy loop schedule (validated at load).
    pub fn policy_schedule(&self) -> cron::Schedule {
        cron::Schedule::from_str(&self.gateway.policy_schedule).unwrap_or_else(|_| {
            cron::Schedule::from_str("0 * * * * *").unwrap_or_else(|e| unreachable!("{e}"))
        })
    }

    /// The gateway database file.
    pub fn database_path(&self) -> PathBuf {
        self.gateway.data_dir.join("gateway.db")
    }

    /// The files this config names that do not exist: the sync bundle, the meter manifest, and,
    /// for a hardware radio, its SPI and GPIO devices. (The data directory is created on start.)
    pub fn missing_files(&self) -> Vec<String> {
        let mut named: Vec<(&str, &Path)> = Vec::new();
        if let Some(bundle) = &self.sync.bundle {
            named.push(("[sync] bundle", bundle));
        }
        if let Some(manifest) = &self.link.manifest {
            named.push(("[link] manifest", manifest));
        }
        if self.radio.kind == crate::link::config::RadioKind::Hardware {
            named.push((
                "[radio.hardware] spi_device",
                &self.radio.hardware.spi_device,
            ));
            named.push(("[radio.hardware] gpio_chip", &self.radio.hardware.gpio_chip));
        }
        named
            .into_iter()
            .filter(|(_, path)| !path.exists())
            .map(|(what, path)| format!("{what} = {:?} does not exist", path.display().to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_batches_larger_than_central_takes_are_refused() {
        let error = GatewayConfig::parse("[sync]\nmax_readings = 200000\n").unwrap_err();
        assert!(error.contains("100000"), "{error}");
        assert!(GatewayConfig::parse("[sync]\nmax_readings = 100000\n").is_ok());
    }

    #[test]
    fn check_names_every_file_the_config_points_at_that_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.toml");
        let config = GatewayConfig::parse(&format!(
            "[sync]\nbundle = {bundle:?}\n[link]\nmanifest = \"no-such-meters.toml\"\n"
        ))
        .unwrap();
        let missing = config.missing_files();
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].contains("[sync] bundle") && missing[1].contains("[link] manifest"));
        std::fs::write(&bundle, "").unwrap();
        assert_eq!(config.missing_files().len(), 1);
        assert!(GatewayConfig::default().missing_files().is_empty());
    }

    const EXAMPLE: &str = include_str!("../../../docs/gateway.example.toml");

    #[test]
    fn the_example_file_documents_exactly_the_defaults() {
        let parsed = GatewayConfig::parse(EXAMPLE).unwrap();
        // The example spells the built-in tariff book out; an empty list means the same book.
        let defaults = GatewayConfig {
            tariff: TariffBook::builtin().versions().to_vec(),
            ..GatewayConfig::default()
        };
        assert_eq!(parsed, defaults);
        assert_eq!(parsed.tariff_book().unwrap(), TariffBook::builtin());
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(GatewayConfig::parse("").unwrap(), GatewayConfig::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = GatewayConfig::parse("[policy]\ndisconect_windows = []\n").unwrap_err();
        assert!(
            err.contains("disconect_windows") && err.contains("disconnect_windows"),
            "{err}"
        );
        let err =
            GatewayConfig::parse("[policy]\ndisconnect_windows = [\"10 to 14\"]\n").unwrap_err();
        assert!(
            err.contains("disconnect_windows") && err.contains("cron"),
            "{err}"
        );
        let err = GatewayConfig::parse("[sync]\nevery = \"soon\"\n").unwrap_err();
        assert!(err.contains("every"), "{err}");
        let err = GatewayConfig::parse("[gateway]\nid = \"a b\"\n").unwrap_err();
        assert!(err.contains("gateway.id"), "{err}");
        let err = GatewayConfig::parse("[[tariff]]\nid = \"x\"\ncategory = \"domestic\"\neffective_from = \"2024-01-01\"\nslabs = []\n").unwrap_err();
        assert!(
            err.contains("[[tariff]]") && err.contains("no slabs"),
            "{err}"
        );
    }
}
