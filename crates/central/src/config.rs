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
    /// `sqlite:PATH` (embedded, the default) or `postgres://user:password@host:port/database`,
    /// optionally with `?sslmode=disable|prefer|require|verify-ca|verify-full` and
    /// `&sslrootcert=PATH` for TLS to PostgreSQL (libpq's meanings; `require` encrypts without
    /// checking the certificate unless `sslrootcert` is given; see docs/central.example.toml).
    pub database_url: String,
    /// PostgreSQL connections (storage worker threads); SQLite always uses one.
    pub database_connections: usize,
    /// Directory of the central CA and server certificate (`gramgrid central init`).
    pub pki_dir: PathBuf,
    /// Key that seals the secrets stored in the database (voucher signing keys, meter session
    /// keys); made (0600) at the first start if missing. Back it up apart from the database:
    /// without it those secrets cannot be read.
    pub secrets_key_file: PathBuf,
    /// A balance is flagged stale when its gateway has not synced for longer than this.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// The default notification sender appends JSON lines here.
    pub notifications_log: PathBuf,
    /// How often queued notifications are handed to the sender.
    #[serde(with = "humantime_serde")]
    pub notify_every: Duration,
    /// Bearer tokens accepted by the API (`Authorization: Bearer TOKEN`), each with a name and a
    /// [`Scope`]. Empty: the API refuses every call, so set at least one (e.g. from a secrets
    /// manager via `GRAMGRID_API_TOKEN`).
    ///
    /// Two forms, which may be mixed in one list:
    /// - a plain string, the form before scopes existed: an `admin` token named `token-N`, N its
    ///   position in the list from 1, so existing configs keep working unchanged;
    /// - a table `{ name, token, scope }` (`[[api_tokens]]`): `name` (1 to 64 characters, no
    ///   spaces, unique) is recorded in the audit with every write the token makes; `scope` is
    ///   `read` (every GET but the audit), `recharge` (read + recharges and vouchers: issue,
    ///   redeem, cancel) or `admin` (everything, including the audit and voucher keys).
    ///
    /// `GRAMGRID_API_TOKEN` adds an `admin` token named `env`. Every token is at least 16
    /// characters, and no two entries share a token.
    #[serde(deserialize_with = "tokens::deserialize")]
    pub api_tokens: Vec<ApiToken>,
    /// `[sms]`: send consumer messages through an HTTP SMS provider (docs/sms.md). Absent: they
    /// are appended to `notifications_log`.
    pub sms: Option<crate::sms_config::SmsConfig>,
    /// Integration events published to an MQTT broker (docs/mqtt.md). Absent (the default): no
    /// events are queued or published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttConfig>,
    /// `[console]`: the office console's sessions and lock-out (docs/console.md).
    pub console: ConsoleConfig,
    /// `[consumer]`: the households' balance page under `/my/` (docs/consumer.md).
    pub consumer: ConsumerConfig,
}

/// `[console]`: how long a console login lasts, the lock-out after failed logins, and where each
/// gateway stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A session unused for longer than this is logged out.
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
    /// A session older than this is logged out however busy.
    #[serde(with = "humantime_serde")]
    pub session_max: Duration,
    /// Failed logins in a row that lock a staff account.
    pub lockout_after: u32,
    /// How long the lock lasts.
    #[serde(with = "humantime_serde")]
    pub lockout_for: Duration,
    /// `[console.sites."GATEWAY"]`: the village a gateway serves and where it stands, for the
    /// gateway list and its map. A gateway without an entry is listed by its id, off the map.
    pub sites: std::collections::BTreeMap<String, GatewaySite>,
}

/// Where a gateway stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySite {
    /// The village's name.
    pub village: String,
    /// Latitude, in degrees (north positive).
    pub lat: f64,
    /// Longitude, in degrees (east positive).
    pub lon: f64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            lockout_after: 5,
            lockout_for: Duration::from_secs(15 * 60),
            sites: Default::default(),
        }
    }
}

/// `[consumer]`: the households' balance page, its signed links and its sessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Where households reach central (`https://host:port`, no path): the start of every link
    /// sent to them. Empty: no link can be made until it is set.
    pub base_url: String,
    /// The key that signs consumer links and hashes login codes; made (0600) at the first start
    /// if missing. Replacing it invalidates every link sent. Absent: `consumer-link.key` beside
    /// `secrets_key_file` ([`CentralConfig::link_key_file`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_key_file: Option<PathBuf>,
    /// How long a link opens the page.
    #[serde(with = "humantime_serde")]
    pub link_lifetime: Duration,
    /// A household's session ends after this long without a page load.
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            base_url: String::new(),
            link_key_file: None,
            link_lifetime: Duration::from_secs(7 * 86_400),
            session_idle: Duration::from_secs(15 * 60),
        }
    }
}

impl ConsumerConfig {
    /// Checks the values links and sessions could not work with.
    pub fn check(&self) -> Result<(), String> {
        let base = &self.base_url;
        if !base.is_empty()
            && (!base.starts_with("https://") || base.ends_with('/') || base.len() <= 8)
        {
            return Err(format!(
                "[consumer] base_url '{base}' is not an https address without a trailing '/': give the address households reach central at, e.g. \"https://central.example:8443\""
            ));
        }
        if self.link_lifetime < Duration::from_secs(60) {
            return Err(
                "[consumer] link_lifetime must be at least 1 minute, e.g. \"7days\"".into(),
            );
        }
        if self.session_idle < Duration::from_secs(60) {
            return Err("[consumer] session_idle must be at least 1 minute, e.g. \"15m\"".into());
        }
        Ok(())
    }
}

/// `[mqtt]`: where central publishes its integration events (docs/mqtt.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// The broker's host name or address (required).
    pub host: String,
    /// The broker's TCP port (plain MQTT; TLS to the broker is not supported yet).
    pub port: u16,
    /// The client id central connects with. The broker keeps central's session under it (clean
    /// session off), so two central servers must not share one.
    pub client_id: String,
    /// The first level of every topic: `{topic_prefix}/gateway/{id}/up`, ...
    pub topic_prefix: String,
    /// MQTT keep-alive: the broker drops central after 1.5 times this without a packet.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// A gateway is announced down (`gateway/{id}/down`) when it has completed no exchange for
    /// longer than this, and up again at its next exchange.
    #[serde(with = "humantime_serde")]
    pub gateway_down_after: Duration,
    /// Published events are deleted from the outbox this long after the broker acknowledged them
    /// (the broker and the subscribers have them; central's database does not keep growing).
    #[serde(with = "humantime_serde")]
    pub keep_published: Duration,
    /// User name for the broker, if it asks for one.
    pub username: Option<String>,
    /// A file holding the broker password (its first line); needs `username`.
    pub password_file: Option<PathBuf>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: String::new(),
            port: 1883,
            client_id: "gramgrid-central".into(),
            topic_prefix: "gramgrid".into(),
            keep_alive: Duration::from_secs(30),
            gateway_down_after: Duration::from_secs(15 * 60),
            keep_published: Duration::from_secs(7 * 24 * 3600),
            username: None,
            password_file: None,
        }
    }
}

impl MqttConfig {
    /// Checks the values a broker or the event rules could not work with.
    pub fn check(&self) -> Result<(), String> {
        if self.host.trim().is_empty() {
            return Err("[mqtt] host is missing: name the broker, e.g. host = \"127.0.0.1\" (or remove the [mqtt] table to publish no events)".into());
        }
        if self.port == 0 {
            return Err("[mqtt] port 0 is not a port: the broker's is usually 1883".into());
        }
        crate::check_id("[mqtt] client_id", &self.client_id).map_err(|e| e.to_string())?;
        let prefix = &self.topic_prefix;
        if prefix.is_empty()
            || prefix.starts_with('/')
            || prefix.ends_with('/')
            || prefix.contains(['+', '#', '\0'])
            || prefix.contains("//")
        {
            return Err(format!(
                "[mqtt] topic_prefix '{prefix}' is not usable: give one or more topic levels such as \"gramgrid\" or \"utility/gramgrid\", without '+', '#' or a leading, trailing or doubled '/'"
            ));
        }
        if !(5..=65_535).contains(&self.keep_alive.as_secs()) {
            return Err(format!(
                "[mqtt] keep_alive {} is out of range: give 5s to 65535s, e.g. \"30s\"",
                humantime_serde::re::humantime::format_duration(self.keep_alive)
            ));
        }
        if self.gateway_down_after < Duration::from_secs(60) {
            return Err("[mqtt] gateway_down_after must be at least 1 minute (gateways sync every few minutes at best), e.g. \"15m\"".into());
        }
        if self.password_file.is_some() && self.username.is_none() {
            return Err("[mqtt] password_file is set without a username: add username".into());
        }
        Ok(())
    }
}

/// What an API token may do; each scope includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every GET route but the audit.
    Read,
    /// `read`, plus recharges and vouchers (issue, redeem, cancel).
    Recharge,
    /// Everything: accounts, meters, adjustments, emergency credit, tariffs, policy, voucher keys.
    Admin,
}

impl Scope {
    /// The scope's name as the config and the API write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Recharge => "recharge",
            Scope::Admin => "admin",
        }
    }

    /// Whether a token of this scope may call a route that needs `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One API token: its name (recorded with every write it makes), the secret and its scope.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    /// Recorded in the audit with every write the token makes.
    pub name: String,
    /// The bearer secret (at least 16 characters; never logged).
    pub token: String,
    /// What the token may do.
    pub scope: Scope,
}

impl ApiToken {
    /// A token with a name and a scope.
    pub fn new(name: impl Into<String>, token: impl Into<String>, scope: Scope) -> ApiToken {
        ApiToken {
            name: name.into(),
            token: token.into(),
            scope,
        }
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never in logs.
        write!(f, "ApiToken({} {}, <redacted>)", self.name, self.scope)
    }
}

/// The two forms of an `api_tokens` entry: a plain string or a `{ name, token, scope }` table.
mod tokens {
    use super::{ApiToken, Scope};
    use serde::de::{self, Deserializer, MapAccess, Visitor};
    use serde::Deserialize;

    /// The table form.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Table {
        name: String,
        token: String,
        scope: Scope,
    }

    /// One entry as written.
    enum Entry {
        Plain(String),
        Table(Table),
    }

    impl<'de> Deserialize<'de> for Entry {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Entry, D::Error> {
            deserializer.deserialize_any(EntryVisitor)
        }
    }

    struct EntryVisitor;

    impl<'de> Visitor<'de> for EntryVisitor {
        type Value = Entry;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a token string or a table { name = \"...\", token = \"...\", scope = \"read\" | \"recharge\" | \"admin\" }")
        }

        fn visit_str<E: de::Error>(self, token: &str) -> Result<Entry, E> {
            Ok(Entry::Plain(token.to_owned()))
        }

        fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Entry, M::Error> {
            Table::deserialize(de::value::MapAccessDeserializer::new(map)).map(Entry::Table)
        }
    }

    /// Reads the list; a plain string at position N (from 1) is an admin token named `token-N`.
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<ApiToken>, D::Error> {
        let entries = Vec::<Entry>::deserialize(deserializer)
            .map_err(|e| de::Error::custom(format!("api_tokens: {e}")))?;
        Ok(entries
            .into_iter()
            .enumerate()
            .map(|(i, entry)| match entry {
                Entry::Plain(token) => {
                    ApiToken::new(format!("token-{}", i + 1), token, Scope::Admin)
                }
                Entry::Table(t) => ApiToken::new(t.name, t.token, t.scope),
            })
            .collect())
    }
}

impl Default for CentralConfig {
    fn default() -> Self {
        CentralConfig {
            listen: "0.0.0.0:8443".into(),
            database_url: "sqlite:gramgrid-central/central.db".into(),
            database_connections: 4,
            pki_dir: PathBuf::from("gramgrid-central/pki"),
            secrets_key_file: PathBuf::from("gramgrid-central/secrets.key"),
            stale_after: Duration::from_secs(6 * 3600),
            notifications_log: PathBuf::from("gramgrid-central/notifications.log"),
            notify_every: Duration::from_secs(10),
            api_tokens: Vec::new(),
            sms: None,
            mqtt: None,
            console: ConsoleConfig::default(),
            consumer: ConsumerConfig::default(),
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
            .field("mqtt", &self.mqtt)
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
        check_tokens(&config.api_tokens).map_err(|problem| format!("api_tokens: {problem}"))?;
        if config.database_connections == 0 {
            return Err("database_connections must be at least 1".into());
        }
        if let Some(sms) = &config.sms {
            sms.check()?;
        }
        if config.notify_every.is_zero() {
            return Err(
                "notify_every = \"0s\" would stop the notifier: give a period such as \"10s\""
                    .into(),
            );
        }
        if let Some(mqtt) = &config.mqtt {
            mqtt.check()?;
        }
        config.consumer.check()?;
        Ok(config)
    }

    /// The consumer link key's file: `[consumer] link_key_file`, else `consumer-link.key` in the
    /// directory of `secrets_key_file` (so a central's keys stay together).
    pub fn link_key_file(&self) -> PathBuf {
        self.consumer
            .link_key_file
            .clone()
            .unwrap_or_else(|| self.secrets_key_file.with_file_name("consumer-link.key"))
    }

    /// Adds an API token from outside the file (`GRAMGRID_API_TOKEN`): an `admin` token named
    /// `env`, under the same rules as the file's.
    pub fn add_api_token(&mut self, token: String) -> Result<(), String> {
        let mut tokens = self.api_tokens.clone();
        tokens.push(ApiToken::new(ENV_TOKEN_NAME, token, Scope::Admin));
        check_tokens(&tokens)?;
        self.api_tokens = tokens;
        Ok(())
    }
}

/// The name of the token given by `GRAMGRID_API_TOKEN`.
pub const ENV_TOKEN_NAME: &str = "env";

/// Every token long enough, well named, and names and secrets each used once.
fn check_tokens(tokens: &[ApiToken]) -> Result<(), String> {
    for (i, token) in tokens.iter().enumerate() {
        check_name(&token.name)?;
        check_token(&token.token)
            .map_err(|problem| format!("token '{}': {problem}", token.name))?;
        for earlier in &tokens[..i] {
            if earlier.name == token.name {
                return Err(format!(
                    "two tokens are named '{}': give each a different name (plain strings are named token-1, token-2, ... by position; GRAMGRID_API_TOKEN is named '{ENV_TOKEN_NAME}')",
                    token.name
                ));
            }
            if earlier.token == token.token {
                return Err(format!(
                    "tokens '{}' and '{}' have the same secret: give each its own",
                    earlier.name, token.name
                ));
            }
        }
    }
    Ok(())
}

/// A token name is 1 to 64 printable characters without spaces.
fn check_name(name: &str) -> Result<(), String> {
    crate::check_id("token name", name).map_err(|e| e.to_string())
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

    const A: &str = "0123456789abcdef-a";
    const B: &str = "0123456789abcdef-b";

    fn tokens(text: &str) -> Vec<ApiToken> {
        CentralConfig::parse(text).unwrap().api_tokens
    }

    #[test]
    fn plain_tokens_are_admin_tokens_named_by_position() {
        assert_eq!(
            tokens(&format!("api_tokens = [\"{A}\", \"{B}\"]")),
            vec![
                ApiToken::new("token-1", A, Scope::Admin),
                ApiToken::new("token-2", B, Scope::Admin)
            ]
        );
    }

    #[test]
    fn table_tokens_carry_their_name_and_scope_and_mix_with_plain_ones() {
        let text = format!(
            "[[api_tokens]]\nname = \"counter-3\"\ntoken = \"{A}\"\nscope = \"recharge\"\n\n\
             [[api_tokens]]\nname = \"dashboard\"\ntoken = \"{B}\"\nscope = \"read\"\n"
        );
        assert_eq!(
            tokens(&text),
            vec![
                ApiToken::new("counter-3", A, Scope::Recharge),
                ApiToken::new("dashboard", B, Scope::Read)
            ]
        );
        let mixed = format!(
            "api_tokens = [\"{A}\", {{ name = \"ops\", token = \"{B}\", scope = \"admin\" }}]"
        );
        assert_eq!(
            tokens(&mixed),
            vec![
                ApiToken::new("token-1", A, Scope::Admin),
                ApiToken::new("ops", B, Scope::Admin)
            ]
        );
    }

    #[test]
    fn a_bad_token_entry_is_refused_with_what_is_wrong() {
        let table = |name: &str, token: &str, scope: &str| {
            format!("[[api_tokens]]\nname = \"{name}\"\ntoken = \"{token}\"\nscope = \"{scope}\"\n")
        };
        let cases = [
            (table("counter 3", A, "read"), "token name 'counter 3'"),
            (table(&"n".repeat(65), A, "read"), "1 to 64 characters"),
            (table("", A, "read"), "token name ''"),
            (table("c", "short", "read"), "token 'c': each token must be at least 16"),
            (table("c", A, "write"), "unknown variant `write`"),
            (table("c", A, "write"), "recharge"),
            (table("c", A, "read") + &table("c", B, "admin"), "two tokens are named 'c'"),
            (table("c", A, "read") + &table("d", A, "admin"), "tokens 'c' and 'd' have the same secret"),
            (format!("[[api_tokens]]\nname = \"c\"\ntoken = \"{A}\"\n"), "missing field `scope`"),
            (table("c", A, "read") + "role = \"x\"\n", "unknown field `role`"),
            (format!("api_tokens = [\"{A}\", {{ name = \"token-1\", token = \"{B}\", scope = \"read\" }}]"), "two tokens are named 'token-1'"),
            ("api_tokens = [1]".to_owned(), "a token string or a table"),
        ];
        for (text, expected) in cases {
            let error = CentralConfig::parse(&text).unwrap_err();
            assert!(error.contains(expected), "{text}\n=> {error}");
            assert!(error.contains("api_tokens"), "{text}\n=> {error}");
        }
    }

    #[test]
    fn the_environment_token_is_an_admin_token_named_env() {
        let mut config = CentralConfig::parse(&format!("api_tokens = [\"{A}\"]")).unwrap();
        config.add_api_token(B.into()).unwrap();
        assert_eq!(config.api_tokens[1], ApiToken::new("env", B, Scope::Admin));
        let mut config = CentralConfig::parse(&format!(
            "[[api_tokens]]\nname = \"env\"\ntoken = \"{A}\"\nscope = \"read\"\n"
        ))
        .unwrap();
        assert!(config
            .add_api_token(B.into())
            .unwrap_err()
            .contains("two tokens are named 'env'"));
        assert_eq!(config.api_tokens.len(), 1);
    }

    #[test]
    fn scopes_include_the_narrower_ones() {
        assert!(Scope::Admin.allows(Scope::Recharge) && Scope::Admin.allows(Scope::Read));
        assert!(Scope::Recharge.allows(Scope::Read) && Scope::Recharge.allows(Scope::Recharge));
        assert!(!Scope::Recharge.allows(Scope::Admin));
        assert!(!Scope::Read.allows(Scope::Recharge));
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
    fn the_link_key_lives_beside_the_secrets_key_unless_named() {
        let config =
            CentralConfig::parse("secrets_key_file = \"/srv/gg/secrets.key\"\n[consumer]\n")
                .unwrap();
        assert_eq!(
            config.link_key_file(),
            Path::new("/srv/gg/consumer-link.key")
        );
        let config = CentralConfig::parse(
            "[consumer]\nlink_key_file = \"/etc/gg/link.key\"\nbase_url = \"https://c.example:8443\"\n",
        )
        .unwrap();
        assert_eq!(config.link_key_file(), Path::new("/etc/gg/link.key"));
        for (text, expected) in [
            ("[consumer]\nbase_url = \"http://c.example\"\n", "base_url"),
            (
                "[consumer]\nbase_url = \"https://c.example/\"\n",
                "base_url",
            ),
            ("[consumer]\nlink_lifetime = \"10s\"\n", "link_lifetime"),
            ("[consumer]\nsession_idle = \"0s\"\n", "session_idle"),
        ] {
            let error = CentralConfig::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}\n=> {error}");
        }
    }

    #[test]
    fn the_mqtt_table_is_optional_takes_its_defaults_and_refuses_what_cannot_work() {
        assert_eq!(CentralConfig::parse("").unwrap().mqtt, None);
        let config = CentralConfig::parse("[mqtt]\nhost = \"broker.local\"\n").unwrap();
        assert_eq!(
            config.mqtt,
            Some(MqttConfig {
                host: "broker.local".into(),
                ..MqttConfig::default()
            })
        );
        let mqtt = config.mqtt.unwrap();
        assert_eq!(
            (
                mqtt.port,
                mqtt.client_id.as_str(),
                mqtt.topic_prefix.as_str()
            ),
            (1883, "gramgrid-central", "gramgrid")
        );
        assert_eq!(mqtt.keep_alive, Duration::from_secs(30));
        assert_eq!(mqtt.gateway_down_after, Duration::from_secs(900));
        let full = "[mqtt]\nhost = \"10.0.0.5\"\nport = 1884\nclient_id = \"central-2\"\ntopic_prefix = \"utility/grid\"\nkeep_alive = \"1m\"\ngateway_down_after = \"1h\"\nkeep_published = \"2days\"\nusername = \"central\"\npassword_file = \"/etc/pw\"\n";
        let mqtt = CentralConfig::parse(full).unwrap().mqtt.unwrap();
        assert_eq!(mqtt.password_file.as_deref(), Some(Path::new("/etc/pw")));
        assert_eq!(mqtt.keep_published, Duration::from_secs(2 * 86_400));
        assert_eq!(
            MqttConfig::default().keep_published,
            Duration::from_secs(7 * 86_400)
        );
        let cases = [
            ("[mqtt]\n", "host is missing"),
            ("[mqtt]\nhost = \"h\"\nport = 0\n", "port 0"),
            ("[mqtt]\nhost = \"h\"\nclient_id = \"a b\"\n", "client_id"),
            (
                "[mqtt]\nhost = \"h\"\ntopic_prefix = \"a/#\"\n",
                "topic_prefix",
            ),
            (
                "[mqtt]\nhost = \"h\"\ntopic_prefix = \"/a\"\n",
                "topic_prefix",
            ),
            (
                "[mqtt]\nhost = \"h\"\ntopic_prefix = \"\"\n",
                "topic_prefix",
            ),
            ("[mqtt]\nhost = \"h\"\nkeep_alive = \"1s\"\n", "keep_alive"),
            (
                "[mqtt]\nhost = \"h\"\ngateway_down_after = \"10s\"\n",
                "gateway_down_after",
            ),
            (
                "[mqtt]\nhost = \"h\"\npassword_file = \"/p\"\n",
                "without a username",
            ),
            ("[mqtt]\nhost = \"h\"\nqos = 2\n", "unknown field `qos`"),
        ];
        for (text, expected) in cases {
            let error = CentralConfig::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}\n=> {error}");
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
        let debug = format!("{config:?} {:?}", config.api_tokens);
        assert!(
            !debug.contains("secret") && !debug.contains("pw"),
            "{debug}"
        );
    }
}
