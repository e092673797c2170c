//! Read-only reports over a gateway database, for technicians and the office.
use crate::store::{Store, StoreError};
use gramgrid_core::policy::{PolicyConfig, RelayState};
use gramgrid_core::tariff::rupees;
use serde::Serialize;

/// One account's line in the status report.
#[derive(Debug, Clone, Serialize)]
pub struct AccountStatus {
    /// The account id.
    pub account: String,
    /// The consumer's name.
    pub consumer_name: String,
    /// The tariff category: `domestic`, `commercial` or `agricultural`.
    pub category: String,
    /// Serial of the meter in service; None when the account has none.
    pub meter: Option<String>,
    /// The balance derived from money events and rated readings (paise; negative when overdrawn).
    pub balance_paise: i64,
    /// Arrears from post-paid still to be recovered from recharges (paise).
    pub arrears_outstanding_paise: i64,
    /// Why the account is protected (never cut automatically), if it is.
    pub protected: Option<String>,
    /// The relay state the meter last reported (`unknown` without a meter or a report).
    pub relay_state: RelayState,
    /// The meter's open (queued or sent) relay command as "action (state, N sends)", if any.
    pub open_command: Option<String>,
}

/// The gateway status report.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayStatus {
    /// One line per account, by account id.
    pub accounts: Vec<AccountStatus>,
    /// Relay commands queued or sent and not yet confirmed, over all meters.
    pub open_relay_commands: usize,
    /// Alerts made here still in the outbox: central has not acknowledged them yet.
    pub alerts_awaiting_upload: u64,
    /// Alerts central has acknowledged. Whether central has told the consumer yet does not come
    /// back to the gateway.
    pub alerts_uploaded: u64,
    /// Breaker holds not yet released, newest first.
    pub open_holds: Vec<OpenHold>,
}

/// A breaker hold waiting for a supervisor.
#[derive(Debug, Clone, Serialize)]
pub struct OpenHold {
    /// The hold's id (release it by this id).
    pub id: String,
    /// When the breaker tripped (UTC).
    pub at: chrono::DateTime<chrono::Utc>,
    /// How many accounts' disconnection it holds.
    pub accounts: usize,
    /// Why.
    pub reasons: Vec<String>,
}

/// Collects the status of every account under `policy` (its arrears rules).
pub fn gateway_status(store: &Store, policy: &PolicyConfig) -> Result<GatewayStatus, StoreError> {
    let open = store.open_relay_commands()?;
    let mut accounts = Vec::new();
    for account in store.accounts()? {
        let meter = store.active_meter(&account.id)?;
        let relay_state = match &meter {
            Some((id, _)) => store.relay_state(*id)?,
            None => RelayState::Unknown,
        };
        let open_command = meter
            .as_ref()
            .and_then(|(id, _)| open.iter().find(|c| c.meter == *id))
            .map(|c| {
                format!(
                    "{:?} ({:?}, {} sends)",
                    c.action, c.progress.state, c.progress.attempts
                )
            });
        let position = store.position(&account.id, &policy.arrears)?;
        accounts.push(AccountStatus {
            balance_paise: position.balance_paise,
            arrears_outstanding_paise: position.arrears.outstanding_paise(),
            protected: store.protection(&account.id)?,
            account: account.id,
            consumer_name: account.consumer_name,
            category: account.category.to_string(),
            meter: meter.map(|(_, serial)| serial),
            relay_state,
            open_command,
        });
    }
    let alerts = store.alert_uploads()?;
    Ok(GatewayStatus {
        accounts,
        open_relay_commands: open.len(),
        alerts_awaiting_upload: alerts.awaiting_upload,
        alerts_uploaded: alerts.uploaded,
        open_holds: store
            .holds(OPEN_HOLDS_SHOWN)?
            .into_iter()
            .filter(|h| h.released.is_none())
            .map(|h| OpenHold {
                id: h.id,
                at: h.at,
                accounts: h.accounts.len(),
                reasons: h.reasons,
            })
            .collect(),
    })
}

/// How many recent holds the status report looks at.
const OPEN_HOLDS_SHOWN: usize = 20;

/// Renders the status report as a table.
pub fn render_status(status: &GatewayStatus) -> String {
    let mut out = format!(
        "{:<12} {:<24} {:<13} {:<12} {:>12} {:>12} {:<13} {}\n",
        "ACCOUNT",
        "CONSUMER",
        "CATEGORY",
        "METER",
        "BALANCE INR",
        "ARREARS INR",
        "RELAY",
        "OPEN COMMAND"
    );
    for a in &status.accounts {
        let relay = format!("{:?}", a.relay_state).to_lowercase();
        out.push_str(&format!(
            "{:<12} {:<24} {:<13} {:<12} {:>12} {:>12} {:<13} {}{}\n",
            a.account,
            a.consumer_name,
            a.category,
            a.meter.as_deref().unwrap_or("-"),
            rupees(a.balance_paise),
            rupees(a.arrears_outstanding_paise),
            relay,
            a.open_command.as_deref().unwrap_or("-"),
            a.protected
                .as_deref()
                .map(|why| format!("  [protected: {why}]"))
                .unwrap_or_default()
        ));
    }
    for hold in &status.open_holds {
        out.push_str(&format!(
            "BREAKER HOLD {} since {}: {} disconnections held ({}); release: gramgrid gateway release {} --by NAME --reason TEXT\n",
            hold.id,
            hold.at,
            hold.accounts,
            hold.reasons.join("; "),
            hold.id
        ));
    }
    out.push_str(&format!(
        "{} accounts, {} open relay commands, alerts: {} not yet uploaded to central, {} uploaded\n",
        status.accounts.len(),
        status.open_relay_commands,
        status.alerts_awaiting_upload,
        status.alerts_uploaded
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Account, Alert, MeterInstall};
    use chrono::{TimeZone, Utc};
    use gramgrid_core::tariff::Category;

    #[test]
    fn alerts_count_as_uploaded_once_central_acknowledges_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("gateway.db")).unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
        store
            .upsert_account(&Account {
                id: "A1".into(),
                consumer_name: "Asha".into(),
                category: Category::Domestic,
                phone: None,
                created_at: t0,
            })
            .unwrap();
        store
            .install_meter(&MeterInstall {
                serial: "M-A1".into(),
                account: "A1".into(),
                installed_at: t0,
                initial_register_wh: Some(0),
            })
            .unwrap();
        let alert = |id: &str| Alert {
            id: id.into(),
            account: "A1".into(),
            kind: "low_balance".into(),
            created_at: t0,
            message: "Balance is low".into(),
            vars: Default::default(),
        };
        store.enqueue_alert(&alert("low-1")).unwrap();
        store.enqueue_alert(&alert("low-2")).unwrap();
        let status = gateway_status(&store, &PolicyConfig::default()).unwrap();
        assert_eq!(
            (status.alerts_awaiting_upload, status.alerts_uploaded),
            (2, 0)
        );
        assert!(
            render_status(&status).contains("alerts: 2 not yet uploaded to central, 0 uploaded"),
            "{}",
            render_status(&status)
        );

        // Central acknowledges the first alert's record: it has it, the second still waits.
        let records = store.priority_after(0, 100).unwrap();
        let first = records
            .iter()
            .find(|r| matches!(&r.event, gramgrid_proto::wire::UplinkEvent::Notice { id, .. } if id == "low-1"))
            .unwrap()
            .seq;
        store.record_acks(first, 0).unwrap();
        let status = gateway_status(&store, &PolicyConfig::default()).unwrap();
        assert_eq!(
            (status.alerts_awaiting_upload, status.alerts_uploaded),
            (1, 1)
        );
        let text = render_status(&status);
        assert!(
            text.contains("alerts: 1 not yet uploaded to central, 1 uploaded"),
            "{text}"
        );
        assert!(!text.contains("waiting to be sent"), "{text}");
    }
}
