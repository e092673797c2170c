//! The summary's energy-audit section: each day the gateway audited the transformer, the loss,
//! whether the day was flagged and which meters it pointed to, and whether central has the day.
use super::{count, Run};
use gramgrid_proto::wire::EnergyAuditDay;
use rusqlite::Connection;
use serde::Serialize;

/// The transformer's audits in the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnergyAuditSummary {
    /// The households that went around their meters (meter serials), from the second day.
    pub bypassers: Vec<String>,
    /// Each day audited at the gateway, oldest first.
    pub days: Vec<AuditedDay>,
}

/// One audited day.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditedDay {
    /// The local day, `YYYY-MM-DD`.
    pub day: String,
    /// The transformer meter.
    pub transformer: String,
    /// 15-minute intervals compared, of 96.
    pub intervals_compared: u32,
    /// What the transformer delivered in them, Wh.
    pub transformer_wh: i64,
    /// What the households' meters recorded in them, Wh.
    pub consumers_wh: i64,
    /// The loss in percent of what the transformer delivered, one decimal.
    pub loss_percent: f64,
    /// Flagged for the office.
    pub flagged: bool,
    /// The meters the evidence points to, most likely first.
    pub suspects: Vec<String>,
    /// Central has the day's audit.
    pub at_central: bool,
}

/// Reads the audits from both databases.
pub fn read(
    gateway: &Connection,
    central: &Connection,
    run: &Run,
) -> rusqlite::Result<EnergyAuditSummary> {
    let mut statement = gateway.prepare("SELECT report FROM energy_audits ORDER BY day, id")?;
    let reports: Vec<String> = statement
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut days = Vec::new();
    for report in reports {
        let Ok(audit) = serde_json::from_str::<EnergyAuditDay>(&report) else {
            continue;
        };
        let at_central = count(
            central,
            "SELECT COUNT(*) FROM energy_audits WHERE id = ?1",
            [&audit.id],
        )? == 1;
        days.push(AuditedDay {
            loss_percent: if audit.transformer_wh == 0 {
                0.0
            } else {
                let loss = audit.transformer_wh - audit.consumers_wh;
                (loss as f64 * 1_000.0 / audit.transformer_wh as f64).round() / 10.0
            },
            day: audit.day,
            transformer: audit.transformer,
            intervals_compared: audit.intervals_compared,
            transformer_wh: audit.transformer_wh,
            consumers_wh: audit.consumers_wh,
            flagged: audit.flagged,
            suspects: audit.suspects.into_iter().map(|s| s.meter).collect(),
            at_central,
        });
    }
    Ok(EnergyAuditSummary {
        bypassers: run.bypassers.clone(),
        days,
    })
}

/// The section's lines, one per day audited.
pub fn lines(audit: &EnergyAuditSummary) -> Vec<String> {
    let mut lines = Vec::new();
    for (n, day) in audit.days.iter().enumerate() {
        let label = if n == 0 {
            "  energy audit       "
        } else {
            "                     "
        };
        let verdict = if day.flagged {
            let named: Vec<String> = day
                .suspects
                .iter()
                .take(4)
                .map(|serial| {
                    if audit.bypassers.contains(serial) {
                        format!("{serial} (on a hook)")
                    } else {
                        serial.clone()
                    }
                })
                .collect();
            format!("FLAGGED, pointing to {}", named.join(", "))
        } else {
            "within the allowance".into()
        };
        lines.push(format!(
            "{label}{} {}: {:.1} kWh delivered, {:.1} kWh metered, {:.1} % lost over {} of 96 intervals; {verdict}{}",
            day.day,
            day.transformer,
            day.transformer_wh as f64 / 1_000.0,
            day.consumers_wh as f64 / 1_000.0,
            day.loss_percent,
            day.intervals_compared,
            if day.at_central { "" } else { " (central LACKS it)" }
        ));
    }
    if audit.days.is_empty() {
        lines.push(
            "  energy audit       no day audited (a day is audited two hours after it ends)".into(),
        );
    }
    lines
}
