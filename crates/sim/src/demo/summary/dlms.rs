//! The summary's DLMS section: the households whose meters speak DLMS/COSEM (docs/dlms.md
//! section 7), whether their readings reached central like the v1 meters', and the disconnects and
//! reconnects their disconnect control objects confirmed.
use super::{count, due_window, Run, DUE_READINGS};
use rusqlite::Connection;
use serde::Serialize;

/// The DLMS meters in the run (all zero without `--meters-dlms`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DlmsSummary {
    /// Household meters provisioned as DLMS meters at the gateway.
    pub meters: i64,
    /// Of those, meters with at least one reading at the gateway.
    pub meters_heard: i64,
    /// Readings due from the DLMS meters heard (as in the radio section).
    pub readings_due: i64,
    /// Of those, readings central stored.
    pub readings_at_central: i64,
    /// `readings_at_central` of `readings_due`, in percent (two decimals).
    pub delivered_percent: f64,
    /// Disconnects confirmed by a DLMS meter's control_state.
    pub disconnects: i64,
    /// Reconnects confirmed by a DLMS meter's control_state after a confirmed disconnect.
    pub reconnects: i64,
}

/// DLMS meters by their gateway id.
const DLMS_METERS: &str = "SELECT meter FROM meter_dlms";

/// Reads the section from both databases.
pub fn read(
    gateway: &Connection,
    central: &Connection,
    run: &Run,
) -> rusqlite::Result<DlmsSummary> {
    let (window, intervals) = due_window(run);
    let meters = count(
        gateway,
        &format!("SELECT COUNT(*) FROM ({DLMS_METERS})"),
        [],
    )?;
    let heard = count(
        gateway,
        &format!(
            "SELECT COUNT(DISTINCT meter) FROM readings WHERE at > ?1 AND meter IN ({DLMS_METERS})"
        ),
        [run.start.timestamp()],
    )?;
    let serials: Vec<String> = gateway
        .prepare(&format!(
            "SELECT serial FROM meters WHERE id IN ({DLMS_METERS})"
        ))?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut at_central = 0;
    for serial in &serials {
        at_central += count(
            central,
            &format!("{DUE_READINGS} AND meter = ?5"),
            rusqlite::params![window.0, window.1, window.2, window.3, serial],
        )?;
    }
    let due = heard * intervals;
    let confirmed = |action: &str, after_a_disconnect: &str| {
        count(
            gateway,
            &format!(
                "SELECT COUNT(*) FROM relay_commands c WHERE c.action = ?1 AND c.state = 'acknowledged'
                 AND c.meter IN ({DLMS_METERS}) {after_a_disconnect}"
            ),
            [action],
        )
    };
    Ok(DlmsSummary {
        meters,
        meters_heard: heard,
        readings_due: due,
        readings_at_central: at_central,
        delivered_percent: if due == 0 {
            0.0
        } else {
            (10_000.0 * at_central as f64 / due as f64).round() / 100.0
        },
        disconnects: confirmed("disconnect", "")?,
        reconnects: confirmed(
            "connect",
            "AND EXISTS (SELECT 1 FROM relay_commands d WHERE d.meter = c.meter AND d.action = 'disconnect'
             AND d.state = 'acknowledged' AND d.closed_at <= c.created_at)",
        )?,
    })
}

/// The section's line; none without DLMS meters.
pub fn line(s: &DlmsSummary) -> Option<String> {
    (s.meters > 0).then(|| {
        format!(
            "  DLMS meters        {} of {} heard; {} of {} readings due reached central ({:.2} %); {} disconnects and {} reconnects confirmed by their disconnect control",
            s.meters_heard,
            s.meters,
            s.readings_at_central,
            s.readings_due,
            s.delivered_percent,
            s.disconnects,
            s.reconnects
        )
    })
}
