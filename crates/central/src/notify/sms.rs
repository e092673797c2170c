//! The SMS provider: central's `[sms]` config (provider URL, auth header, body template, DLT
//! sender and template ids, quiet hours, retries) and the HTTPS sender behind the outbox.
use super::{Notification, Outcome, Rendering, SendFuture, Sender};
use crate::sms_config::key;
pub use crate::sms_config::SmsConfig;
use gramgrid_core::message::{self, Kind, Language, QuietHours};
use gramgrid_net::tls::{api_client_config, system_client_config, ClientError, HttpsClient};
use std::path::PathBuf;
use std::sync::Arc;

/// Templates, quiet hours and retries for the outbox from `[sms]`.
pub fn rendering(config: &SmsConfig) -> Result<Rendering, String> {
    let mut rendering = Rendering::built_in();
    for kind in Kind::ALL {
        for language in Language::ALL {
            let name = key(kind, language);
            let text = config
                .texts
                .get(&name)
                .cloned()
                .unwrap_or_else(|| message::default_template(kind, language).to_string());
            message::check_template(kind, &text)
                .map_err(|e| format!("[sms.texts] '{name}': {e}"))?;
            rendering.templates.insert(
                (kind, language),
                (config.dlt_template_ids.get(&name).cloned(), text),
            );
        }
    }
    rendering.quiet_hours = QuietHours::parse(&config.quiet_hours);
    rendering.max_attempts = config.max_attempts.max(1);
    rendering.retry_initial = config.retry_initial;
    rendering.retry_max = config.retry_max.max(config.retry_initial);
    Ok(rendering)
}

/// Why the SMS sender could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A secret or CA file could not be read.
    #[error("[sms] cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The I/O or PEM error.
        error: String,
    },
    /// The URL or CA is not usable.
    #[error("[sms] {0}")]
    Config(String),
}

fn read_secret(path: &std::path::Path) -> Result<String, SetupError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| SetupError::Read {
            path: path.display().to_string(),
            error: e.to_string(),
        })
}

/// The secret the provider must present with delivery receipts, if configured.
pub fn receipt_token(config: &SmsConfig) -> Result<Option<String>, SetupError> {
    config
        .receipt_token_file
        .as_deref()
        .map(read_secret)
        .transpose()
}

/// Sends through the provider's HTTPS endpoint.
pub struct ProviderSender {
    client: HttpsClient,
    path: String,
    auth: Option<(String, String)>,
    config: SmsConfig,
}

impl ProviderSender {
    /// A sender for `config` (reads the auth value and CA files now).
    pub fn new(config: &SmsConfig) -> Result<ProviderSender, SetupError> {
        let tls = match &config.ca_file {
            Some(ca) => {
                api_client_config(ca).map_err(|e| SetupError::Config(format!("ca_file: {e}")))?
            }
            None => system_client_config().map_err(|e| SetupError::Config(e.to_string()))?,
        };
        let uri: axum::http::Uri = config
            .url
            .parse()
            .map_err(|e| SetupError::Config(format!("url '{}': {e}", config.url)))?;
        let base = format!(
            "https://{}",
            uri.authority()
                .ok_or_else(|| SetupError::Config(format!("url '{}' has no host", config.url)))?
        );
        let client = HttpsClient::new(tls, &base).map_err(|e| SetupError::Config(e.to_string()))?;
        let auth = config
            .auth_value_file
            .as_deref()
            .map(read_secret)
            .transpose()?
            .map(|value| (config.auth_header.clone(), value));
        Ok(ProviderSender {
            client,
            path: uri
                .path_and_query()
                .map_or("/".into(), |p| p.as_str().to_string()),
            auth,
            config: config.clone(),
        })
    }

    fn body(&self, notification: &Notification) -> Result<String, String> {
        let json = self.config.content_type.contains("json");
        let escape = |value: &str| {
            if json {
                let quoted = serde_json::Value::String(value.to_string()).to_string();
                quoted[1..quoted.len() - 1].to_string()
            } else {
                form_encode(value)
            }
        };
        let vars: message::Vars = [
            ("to", notification.to.as_str()),
            ("text", notification.message.as_str()),
            ("sender", self.config.sender_id.as_str()),
            ("entity_id", self.config.entity_id.as_str()),
            (
                "template_id",
                notification.dlt_template_id.as_deref().unwrap_or(""),
            ),
            ("ref", notification.id.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), escape(v)))
        .collect();
        Ok(fill_body(&self.config.body, &vars))
    }

    async fn post(&self, notification: &Notification) -> Outcome {
        if notification.to.trim().is_empty() {
            return Outcome::Failed {
                error: "the account has no phone number".into(),
            };
        }
        if notification.dlt_template_id.is_none() {
            let name = format!("{}.{}", notification.kind, notification.language.code());
            let error = match Kind::parse(&notification.kind) {
                Some(kind) if kind.template_id_optional() && !self.config.dlt_template_ids.contains_key(&name) => format!(
                    "no DLT template id for '{name}': add it to [sms.dlt_template_ids] (docs/sms.md)"
                ),
                _ => "no DLT template matches this text (a message from a gateway older than protocol 4)".into(),
            };
            return Outcome::Failed { error };
        }
        let body = match self.body(notification) {
            Ok(body) => body,
            Err(error) => return Outcome::Failed { error },
        };
        let headers: Vec<(&str, &str)> = self
            .auth
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let answer = self
            .client
            .post_with_headers(
                &self.path,
                &headers,
                &self.config.content_type,
                body.into_bytes(),
                self.config.timeout,
            )
            .await;
        match answer {
            Ok((status, body)) => outcome_of(status.as_u16(), &body),
            Err(error) => Outcome::Retry {
                error: describe(&error, &self.config.url),
                throttled: false,
            },
        }
    }
}

impl Sender for ProviderSender {
    fn channel(&self) -> &'static str {
        "sms_provider"
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.post(notification))
    }
}

/// What a provider's answer means: 2xx accepted (its `id` or `message_id` kept), 429 throttled,
/// 5xx try later, any other 4xx refused for good.
fn outcome_of(status: u16, body: &[u8]) -> Outcome {
    let text: String = String::from_utf8_lossy(body).chars().take(300).collect();
    match status {
        200..=299 => {
            let provider_id = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| {
                    ["id", "message_id", "messageId"].iter().find_map(|k| {
                        v.get(*k)
                            .map(|id| id.as_str().map_or(id.to_string(), str::to_string))
                    })
                });
            Outcome::Sent { provider_id }
        }
        429 => Outcome::Retry {
            error: format!("the provider is throttling (429): {text}"),
            throttled: true,
        },
        500..=599 | 408 => Outcome::Retry {
            error: format!("the provider answered {status}: {text}"),
            throttled: false,
        },
        _ => Outcome::Failed {
            error: format!("the provider refused the message ({status}): {text}"),
        },
    }
}

/// The client's error in the provider's terms (its messages speak of central).
fn describe(error: &ClientError, url: &str) -> String {
    match error {
        ClientError::ConnectRefused { .. } => {
            format!("the SMS provider at {url} refused the connection")
        }
        ClientError::Connect { error, .. } => {
            format!("cannot reach the SMS provider at {url}: {error}")
        }
        ClientError::TlsHandshake { reason, .. } => {
            format!("TLS with the SMS provider at {url} failed: {reason}; check [sms] ca_file")
        }
        ClientError::Timeout(limit) => format!("no answer from the SMS provider within {limit:?}"),
        other => format!("SMS provider at {url}: {other}"),
    }
}

/// Replaces each `{name}` of `vars` in `body` in one pass (a JSON body's own braces, and braces
/// inside the values, stay as they are).
fn fill_body(body: &str, vars: &message::Vars) -> String {
    let mut out = String::with_capacity(body.len() + 256);
    let mut rest = body;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let known = after
            .find('}')
            .and_then(|close| vars.get(&after[..close]).map(|value| (close, value)));
        match known {
            Some((close, value)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `application/x-www-form-urlencoded` value encoding.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The sender central uses: the provider when `[sms]` is set, else the log file.
pub fn sender_for(
    sms: Option<&SmsConfig>,
    log: PathBuf,
) -> Result<(Arc<dyn Sender>, Rendering), SetupError> {
    match sms {
        Some(config) => {
            let rendering = rendering(config).map_err(SetupError::Config)?;
            for name in config.missing_optional_template_ids() {
                tracing::warn!(
                    kind = %name,
                    "[sms.dlt_template_ids] has no DLT template id for '{name}': such messages are not sent through the SMS provider; register the text (docs/sms.md) and add \"{name}\" = \"<template id>\" to [sms.dlt_template_ids]"
                );
            }
            Ok((Arc::new(ProviderSender::new(config)?), rendering))
        }
        None => Ok((
            Arc::new(super::LogFileSender { path: log }),
            Rendering::built_in(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_answer_is_read_as_sent_retry_or_refused() {
        assert_eq!(
            outcome_of(202, br#"{"message_id":"p-17"}"#),
            Outcome::Sent {
                provider_id: Some("p-17".into())
            }
        );
        assert!(matches!(
            outcome_of(429, b"slow down"),
            Outcome::Retry {
                throttled: true,
                ..
            }
        ));
        assert!(matches!(
            outcome_of(503, b""),
            Outcome::Retry {
                throttled: false,
                ..
            }
        ));
        assert!(matches!(
            outcome_of(400, b"template mismatch"),
            Outcome::Failed { .. }
        ));
    }

    #[test]
    fn a_config_without_a_first_set_dlt_template_id_is_refused_and_later_kinds_are_optional() {
        let mut config = SmsConfig {
            url: "https://sms.example/send".into(),
            sender_id: "GRMGRD".into(),
            ..SmsConfig::default()
        };
        let error = config.check().unwrap_err();
        assert!(error.contains("low_balance.hi"), "{error}");
        // A config of the first release: every kind it knew, none added since.
        for &kind in Kind::FIRST_SET {
            for language in Language::ALL {
                config
                    .dlt_template_ids
                    .insert(key(kind, language), "1107000000000000001".into());
            }
        }
        config.check().unwrap();
        assert_eq!(
            config.missing_optional_template_ids(),
            [
                "sanctioned_load_exceeded.en",
                "sanctioned_load_exceeded.hi",
                "load_limit_trip.en",
                "load_limit_trip.hi",
                "consumer_link.en",
                "consumer_link.hi",
                "login_code.en",
                "login_code.hi"
            ]
        );
        for kind in Kind::ALL {
            for language in Language::ALL {
                config
                    .dlt_template_ids
                    .insert(key(kind, language), "1107000000000000001".into());
            }
        }
        config.check().unwrap();
        assert!(config.missing_optional_template_ids().is_empty());
        config
            .texts
            .insert("low_balance.en".into(), "Balance low".into());
        let error = config.check().unwrap_err();
        assert!(
            error.contains("low_balance.en") && error.contains("{balance}"),
            "{error}"
        );
        config.texts.clear();
        config.sender_id = "GRAMGRID".into();
        assert!(config.check().unwrap_err().contains("6 letters"));
    }

    #[tokio::test]
    async fn a_later_kind_without_a_template_id_is_not_sent_and_the_key_to_add_is_named() {
        let config = SmsConfig {
            url: "https://127.0.0.1:9/send".into(),
            sender_id: "GRMGRD".into(),
            ..SmsConfig::default()
        };
        let sender = ProviderSender::new(&config).unwrap();
        let notification = Notification {
            id: "n1".into(),
            account: "A1".into(),
            kind: Kind::SanctionedLoadExceeded.as_str().into(),
            message: "Load above sanctioned".into(),
            created_at: chrono::Utc::now(),
            to: "+919800000001".into(),
            language: Language::Hindi,
            dlt_template_id: None,
            parts: 1,
        };
        let Outcome::Failed { error } = sender.send(&notification).await else {
            panic!("sent without a DLT template id");
        };
        assert!(
            error.contains("'sanctioned_load_exceeded.hi'")
                && error.contains("[sms.dlt_template_ids]"),
            "{error}"
        );
    }

    #[test]
    fn values_are_escaped_for_the_body_they_go_into() {
        assert_eq!(form_encode("a b&c=₹"), "a+b%26c%3D%E2%82%B9");
        let vars: message::Vars = [("to", "+91 1"), ("text", "say \"{ref}\"")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            fill_body(r#"{"to":"{to}","text":"{text}","x":{}}"#, &vars),
            r#"{"to":"+91 1","text":"say "{ref}"","x":{}}"#
        );
    }
}
