//! `[sms]` in central's config: the SMS provider (URL, auth, body template), the DLT sender and
//! template ids, quiet hours and retries. Read by `notify::sms`.
use gramgrid_core::message::{self, Kind, Language, QuietHours};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `[sms]`: how central hands consumer messages to an HTTP SMS gateway.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// The provider's send endpoint, `https://host[:port]/path`.
    pub url: String,
    /// PEM file of the CA that signed the provider's certificate; empty: the system CA bundle.
    pub ca_file: Option<PathBuf>,
    /// The header that carries the provider's credential.
    pub auth_header: String,
    /// File holding the header's value (e.g. `Bearer 5f2...` or a bare API key); keep it 0600.
    pub auth_value_file: Option<PathBuf>,
    /// Content type of the request body.
    pub content_type: String,
    /// The request body, with `{to}`, `{text}`, `{sender}`, `{entity_id}`, `{template_id}` and
    /// `{ref}` (the message id, which the provider echoes in its delivery receipts). Values are
    /// escaped for JSON when `content_type` is JSON, else URL-encoded.
    pub body: String,
    /// The DLT header (sender id) registered for the utility: 6 letters, e.g. `GRMGRD`.
    pub sender_id: String,
    /// The utility's DLT principal entity id.
    pub entity_id: String,
    /// DLT template id per `kind.language` (e.g. `"low_balance.hi" = "1107161234567890123"`),
    /// one for every consumer message kind of the first set in English and Hindi; a kind added
    /// later (e.g. `sanctioned_load_exceeded`) without one is not sent through the provider.
    pub dlt_template_ids: BTreeMap<String, String>,
    /// The registered text per `kind.language`, when it differs from the built-in one. Each must
    /// use exactly the kind's variables.
    pub texts: BTreeMap<String, String>,
    /// Local hours (Asia/Kolkata) when non-urgent messages wait, `"HH:MM-HH:MM"`; empty: none.
    pub quiet_hours: String,
    /// Attempts before a message is given up as failed.
    pub max_attempts: u32,
    /// First retry delay, doubled per attempt.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Time allowed for one request to the provider.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// File holding the secret the provider presents when it posts delivery receipts to
    /// `POST /sms/v1/receipts` (`Authorization: Bearer SECRET` or `?token=SECRET`).
    pub receipt_token_file: Option<PathBuf>,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            url: String::new(),
            ca_file: None,
            auth_header: "Authorization".into(),
            auth_value_file: None,
            content_type: "application/json".into(),
            body: r#"{"to":"{to}","text":"{text}","sender":"{sender}","entity_id":"{entity_id}","template_id":"{template_id}","ref":"{ref}"}"#.into(),
            sender_id: String::new(),
            entity_id: String::new(),
            dlt_template_ids: BTreeMap::new(),
            texts: BTreeMap::new(),
            quiet_hours: "21:00-07:00".into(),
            max_attempts: 8,
            retry_initial: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            receipt_token_file: None,
        }
    }
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsConfig")
            .field("url", &self.url)
            .field("sender_id", &self.sender_id)
            .finish_non_exhaustive()
    }
}

pub(crate) fn key(kind: Kind, language: Language) -> String {
    format!("{}.{}", kind.as_str(), language.code())
}

impl SmsConfig {
    /// Whether `[sms.dlt_template_ids]` gives a (non-blank) id for `kind.language` key `name`.
    fn has_template_id(&self, name: &str) -> bool {
        self.dlt_template_ids
            .get(name)
            .is_some_and(|id| !id.trim().is_empty())
    }

    /// The `kind.language` keys of message kinds added after the first set that have no DLT
    /// template id: such messages are not sent through the provider (central warns at start).
    pub fn missing_optional_template_ids(&self) -> Vec<String> {
        Kind::ALL
            .into_iter()
            .filter(|kind| kind.template_id_optional())
            .flat_map(|kind| Language::ALL.map(|language| key(kind, language)))
            .filter(|k| !self.has_template_id(k))
            .collect()
    }

    /// Checks the table: a usable URL, a DLT sender id, a template id for every kind of the first
    /// set (later kinds may lack one), texts that use their kinds' variables, quiet hours that
    /// parse.
    pub fn check(&self) -> Result<(), String> {
        if !self.url.starts_with("https://") {
            return Err(format!(
                "[sms] url = '{}': give the provider's https:// send endpoint",
                self.url
            ));
        }
        if self.sender_id.len() != 6 || !self.sender_id.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!(
                "[sms] sender_id = '{}': the DLT header is 6 letters (e.g. \"GRMGRD\")",
                self.sender_id
            ));
        }
        if !self.quiet_hours.is_empty() && QuietHours::parse(&self.quiet_hours).is_none() {
            return Err(format!(
                "[sms] quiet_hours = '{}': write \"HH:MM-HH:MM\", e.g. \"21:00-07:00\", or \"\" for none",
                self.quiet_hours
            ));
        }
        let wanted: Vec<String> = Kind::ALL
            .into_iter()
            .flat_map(|kind| Language::ALL.map(|language| key(kind, language)))
            .collect();
        let missing: Vec<String> = Kind::FIRST_SET
            .iter()
            .copied()
            .flat_map(|kind| Language::ALL.map(|language| key(kind, language)))
            .filter(|k| !self.has_template_id(k))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "[sms.dlt_template_ids] has no DLT template id for {}: register each text (docs/sms.md) and give its id",
                missing.join(", ")
            ));
        }
        for name in self.dlt_template_ids.keys().chain(self.texts.keys()) {
            if !wanted.contains(name) {
                return Err(format!(
                    "[sms] '{name}' is not a message: use kind.language with kind one of {} and language en or hi",
                    Kind::ALL.map(Kind::as_str).join(", ")
                ));
            }
        }
        for (name, text) in &self.texts {
            let kind = Kind::ALL
                .into_iter()
                .find(|k| name.starts_with(&format!("{}.", k.as_str())));
            if let Some(kind) = kind {
                message::check_template(kind, text)
                    .map_err(|e| format!("[sms.texts] '{name}': {e}"))?;
            }
        }
        Ok(())
    }
}
