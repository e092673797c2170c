//! Read-only reports over a gateway database, for technicians and the office.
use crate::store::{Store, StoreError};
use gramgrid_core::policy::RelayState;
use gramgrid_core::tariff::rupees;
use serde::Serialize;

/// One account's line in the status report.
#[derive(Debug, Clone, Serialize)]
pub struct AccountStatus {
    pub account: String,
    pub consumer_name: String,
    pub category: String,
    pub meter: Option<String>,
    pub balance_paise: i64,
    pub relay_state: RelayState,
    pub open_command: Option<String>,
}

/// The gateway status report.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayStatus {
    pub accounts: Vec<AccountStatus>,
    pub open_relay_commands: usize,
    pub unsent_alerts: usize,
}

/// Collects the status of every account.
pub fn gateway_status(store: &Store) -> Result<GatewayStatus, StoreError> {
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
        accounts.push(AccountStatus {
            balance_paise: store.position(&account.id)?.balance_paise,
            account: account.id,
            consumer_name: account.consumer_name,
            category: account.category.to_string(),
            meter: meter.map(|(_, serial)| serial),
            relay_state,
            open_command,
        });
    }
    Ok(GatewayStatus {
        accounts,
        open_relay_commands: open.len(),
        unsent_alerts: store.unsent_alerts()?.len(),
    })
}

/// Renders the status report as a table.
pub fn render_status(status: &GatewayStatus) -> String {
    let mut out = format!(
        "{:<12} {:<24} {:<13} {:<12} {:>12} {:<13} {}\n",
        "ACCOUNT", "CONSUMER", "CATEGORY", "METER", "BALANCE INR", "RELAY", "OPEN COMMAND"
    );
    for a in &status.accounts {
        out.push_str(&format!(
            "{:<12} {:<24} {:<13} {:<12} {:>12} {:<13} {}\n",
            a.account,
            a.consumer_name,
            a.category,
            a.meter.as_deref().unwrap_or("-"),
            rupees(a.balance_paise),
            format!("{:?}", a.relay_state).to_lowercase(),
            a.open_command.as_deref().unwrap_or("-")
        ));
    }
    out.push_str(&format!(
        "{} accounts, {} open relay commands, {} alerts waiting to be sent\n",
        status.accounts.len(),
        status.open_relay_commands,
        status.unsent_alerts
    ));
    out
}
