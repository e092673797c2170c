//! The household's balance page under `/my/` on central's listener: balance, days and units
//! left, how fresh the figures are, 30 days of consumption, recharges and the month's bill so
//! far, in Hindi or English (docs/consumer.md).
//!
//! - `link`: signed, expiring links bound to one account (HMAC-SHA256 under `[consumer]
//!   link_key_file`), and the hash of login codes;
//! - `code`: one-time codes to the registered phone (rules pure, codes stored hashed);
//! - `view`: what the page shows, read in one transaction from central's own reports;
//! - `pages` and `i18n`: the HTML (maud, inline CSS and SVG, no script) and its texts;
//! - `routes`: the `/my/` routes and the in-memory sessions.
//!
//! Here: making a link ([`make_link`]) and sending it by SMS ([`send_link`]), for the API and the
//! command line.
mod code;
mod i18n;
mod link;
mod pages;
mod routes;
mod view;

pub use link::{LinkKey, LinkRefused};
pub use routes::router;

use crate::db::Tx;
use crate::{accounts, notify, Central, CentralError, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_core::message::{Kind, Vars};
use serde::Serialize;

/// A link to one account's page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerLink {
    /// The account it opens.
    pub account: String,
    /// The whole URL (`[consumer] base_url` + `/my/l/` + the token).
    pub url: String,
    /// When it stops opening the page.
    pub expires_at: DateTime<Utc>,
    /// The SMS that carries it, once queued.
    pub notification: Option<String>,
}

/// The path under which a link's token opens the page.
pub const LINK_PATH: &str = "/my/l/";

/// A link to `account`'s page made at `now`, valid for `valid_for` (the configured
/// `link_lifetime` when None). Nothing is stored: the link carries its own proof.
pub fn make_link(
    central: &Central,
    account: &str,
    now: DateTime<Utc>,
    valid_for: Option<std::time::Duration>,
) -> Result<ConsumerLink> {
    crate::check_id("account", account)?;
    let config = &central.config().consumer;
    if config.base_url.is_empty() {
        return Err(CentralError::Invalid(
            "no link can be made: [consumer] base_url is not set in the central config; set it to the address households reach central at, e.g. base_url = \"https://central.example:8443\"".into(),
        ));
    }
    let lifetime = valid_for.unwrap_or(config.link_lifetime);
    let expires_at = chrono::Duration::from_std(lifetime)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .filter(|at| lifetime.as_secs() > 0 && at.timestamp() < 1 << 40)
        .ok_or_else(|| {
            CentralError::Invalid(format!(
                "a link valid for {} cannot be made: give a duration from 1s to a few months",
                humantime_serde::re::humantime::format_duration(lifetime)
            ))
        })?;
    let expires_at = from_ts(ts(expires_at));
    let token = central.link_key().sign(account, expires_at);
    Ok(ConsumerLink {
        account: account.to_owned(),
        url: format!("{}{LINK_PATH}{token}", config.base_url),
        expires_at,
        notification: None,
    })
}

/// A link's lifetime as the config writes one (`7days`, `36h`, `90s`), for the command line.
pub fn parse_lifetime(text: &str) -> std::result::Result<std::time::Duration, String> {
    humantime_serde::re::humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration such as 7days, 36h or 90s: {e}"))
}

/// Checks that the link's account exists (a link to nobody is refused here, not at the door).
pub fn check_account(tx: &mut dyn Tx, link: &ConsumerLink) -> Result<()> {
    accounts::account(tx, &link.account).map(drop)
}

/// Queues `link` by SMS to its account's phone (once per link: the same link again queues
/// nothing new); the link with its message id.
pub fn send_link(tx: &mut dyn Tx, link: ConsumerLink, now: DateTime<Utc>) -> Result<ConsumerLink> {
    let account = accounts::account(tx, &link.account)?;
    if account.phone.as_deref().is_none_or(|p| p.trim().is_empty()) {
        return Err(CentralError::Invalid(format!(
            "account '{}' has no phone number to send the link to: set one (PUT /api/v1/accounts/{}), or make the link without sending it (gramgrid central consumer-link --account {}) and give it to the household another way",
            link.account, link.account, link.account
        )));
    }
    let id = format!("consumer-link:{}:{}", link.account, ts(link.expires_at));
    let vars: Vars = [("link".to_string(), link.url.clone())].into();
    notify::enqueue(
        tx,
        &id,
        &link.account,
        Kind::ConsumerLink.as_str(),
        "a link to the consumer page",
        &vars,
        now,
    )?;
    Ok(ConsumerLink {
        notification: Some(id),
        ..link
    })
}

#[cfg(test)]
mod tests;
