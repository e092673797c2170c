//! What each gateway last said about itself (software version, start time, upload backlog, radio
//! counters, disk space; protocol 11), kept from its sync sessions for the console. Central trusts
//! no gateway: texts are cut to a bounded length and numbers clamped before they are stored.
use super::db::Tx;
use super::{CentralError, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_proto::wire::{DiskSpace, GatewayStatus, RadioCounters};
use std::collections::HashMap;

/// Longest software version kept (characters).
const MAX_SOFTWARE: usize = 40;
/// Most reject reasons kept, and the longest reason (characters).
const MAX_REASONS: usize = 16;
const MAX_REASON: usize = 24;

/// A gateway's status as central stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// When central received it (central's clock).
    pub at: DateTime<Utc>,
    /// What the gateway said, bounded.
    pub status: GatewayStatus,
    /// Of the backlog it reported, the priority records and readings central has not
    /// acknowledged since (the report comes at the start of a session that then uploads).
    pub still_waiting: (u64, u64),
}

/// Stores `status`, received from `gateway` at `now`, in place of the one before; `marks` are the
/// priority and readings acknowledgements its backlog was counted from.
pub fn record(
    tx: &mut dyn Tx,
    gateway: &str,
    status: &GatewayStatus,
    marks: (i64, i64),
    now: DateTime<Utc>,
) -> Result<()> {
    let status = bounded(status);
    let radio = status
        .radio
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| CentralError::Corrupt(e.to_string()))?;
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO gateway_status (gateway, reported_at, software, started_at, priority_backlog,
             readings_backlog, oldest_unsent, radio, disk_free, disk_total, priority_from,
             readings_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (gateway) DO UPDATE SET reported_at = excluded.reported_at,
             software = excluded.software, started_at = excluded.started_at,
             priority_backlog = excluded.priority_backlog,
             readings_backlog = excluded.readings_backlog, oldest_unsent = excluded.oldest_unsent,
             radio = excluded.radio, disk_free = excluded.disk_free, disk_total = excluded.disk_total,
             priority_from = excluded.priority_from, readings_from = excluded.readings_from",
        &[
            gateway.into(),
            ts(now).into(),
            status.software.as_str().into(),
            ts(status.started_at).into(),
            count(status.priority_backlog).into(),
            count(status.readings_backlog).into(),
            status.oldest_unsent.map(ts).into(),
            radio.into(),
            status.disk.map(|d| count(d.free)).into(),
            status.disk.map(|d| count(d.total)).into(),
            marks.0.into(),
            marks.1.into(),
        ],
    )?;
    Ok(())
}

/// Every gateway's last status, by gateway id.
pub fn all(tx: &mut dyn Tx) -> Result<HashMap<String, Reported>> {
    let rows = tx.query(
        "SELECT s.gateway, s.reported_at, s.software, s.started_at, s.priority_backlog,
                s.readings_backlog, s.oldest_unsent, s.radio, s.disk_free, s.disk_total,
                g.priority_acked - s.priority_from, g.readings_acked - s.readings_from
         FROM gateway_status s JOIN gateways g ON g.id = s.gateway",
        &[],
    )?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    rows.iter()
        .map(|row| {
            let radio: Option<RadioCounters> = row
                .opt_text(7)?
                .map(|json| serde_json::from_str(&json))
                .transpose()
                .map_err(|e| CentralError::Corrupt(format!("gateway_status.radio: {e}")))?;
            let disk = match (row.opt_int(8)?, row.opt_int(9)?) {
                (Some(free), Some(total)) => Some(DiskSpace {
                    free: count(free),
                    total: count(total),
                }),
                _ => None,
            };
            let status = GatewayStatus {
                software: row.text(2)?,
                started_at: from_ts(row.int(3)?),
                priority_backlog: count(row.int(4)?),
                readings_backlog: count(row.int(5)?),
                oldest_unsent: row.opt_int(6)?.map(from_ts),
                radio,
                disk,
            };
            // Acknowledged since the report; a mark that went back (a restored database) counts
            // as none.
            let since = |i: usize| -> Result<u64> { Ok(count(row.int(i)?)) };
            let still_waiting = (
                status.priority_backlog.saturating_sub(since(10)?),
                status.readings_backlog.saturating_sub(since(11)?),
            );
            let reported = Reported {
                at: from_ts(row.int(1)?),
                status,
                still_waiting,
            };
            Ok((row.text(0)?, reported))
        })
        .collect()
}

/// `status` with its texts cut and its lists shortened to what central keeps.
fn bounded(status: &GatewayStatus) -> GatewayStatus {
    let cut = |text: &str, most: usize| text.chars().take(most).collect::<String>();
    GatewayStatus {
        software: cut(&status.software, MAX_SOFTWARE),
        radio: status.radio.as_ref().map(|radio| RadioCounters {
            rejects: radio
                .rejects
                .iter()
                .take(MAX_REASONS)
                .map(|(reason, n)| (cut(reason, MAX_REASON), *n))
                .collect(),
            ..radio.clone()
        }),
        ..status.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{backends, priority_upload};
    use chrono::{Duration, TimeZone};
    use gramgrid_proto::wire::{ReadingBatch, ReadingBlock};

    fn status(software: &str, readings_backlog: u64) -> GatewayStatus {
        GatewayStatus {
            software: software.into(),
            started_at: Utc.with_ymd_and_hms(2026, 11, 30, 4, 0, 0).unwrap(),
            priority_backlog: 2,
            readings_backlog,
            oldest_unsent: Some(Utc.with_ymd_and_hms(2026, 11, 30, 5, 0, 0).unwrap()),
            radio: Some(RadioCounters {
                uplinks: 1_200,
                silences: 7,
                downlinks: 1_250,
                rejects: vec![("bad_mic".into(), 3)],
            }),
            disk: Some(DiskSpace {
                free: u64::MAX,
                total: 16 << 30,
            }),
        }
    }

    /// Readings `(after, after + n]` of meter M1, one every 15 minutes up to `end`.
    fn readings(after: u64, n: usize, end: DateTime<Utc>) -> ReadingBatch {
        let first = end - Duration::minutes(15 * n as i64);
        ReadingBatch {
            after_seq: after,
            through_seq: after + n as u64,
            blocks: ReadingBlock::group(
                (0..n as i64)
                    .map(|i| ("M1".to_string(), ts(first) + 900 * i, 1_000 + 50 * i))
                    .collect(),
            ),
            exports: Vec::new(),
        }
    }

    #[test]
    fn a_session_status_is_kept_until_the_next_one_and_bounded() {
        for t in backends() {
            let now = Utc.with_ymd_and_hms(2026, 11, 30, 5, 30, 0).unwrap();
            let mut first = priority_upload(1, Vec::new(), now);
            first.status = Some(status("0.9.0", 96));
            t.upload("gw-a", first, now);
            // A later exchange of the same session carries no status: the last one stays, and
            // what that exchange uploads no longer counts as waiting.
            let mut second = priority_upload(1, Vec::new(), now);
            second.readings = Some(readings(0, 90, now));
            t.upload("gw-a", second, now + Duration::minutes(1));
            let kept = t.tx(all).unwrap();
            let reported = &kept["gw-a"];
            assert_eq!(reported.at, now);
            assert_eq!(reported.still_waiting, (2, 6));
            let mut expected = status("0.9.0", 96);
            expected.disk = Some(DiskSpace {
                free: i64::MAX as u64,
                total: 16 << 30,
            });
            assert_eq!(reported.status, expected);

            // A hostile gateway's texts and lists are cut, never stored whole.
            let mut hostile = status(&"9".repeat(10_000), 0);
            if let Some(radio) = hostile.radio.as_mut() {
                radio.rejects = (0..1_000).map(|i| (format!("{i:0>100}"), 1)).collect();
            }
            let later = now + Duration::minutes(15);
            let mut third = priority_upload(1, Vec::new(), later);
            third.status = Some(hostile);
            t.upload("gw-a", third, later);
            let kept = t.tx(all).unwrap();
            let stored = &kept["gw-a"].status;
            assert_eq!(stored.software.len(), MAX_SOFTWARE);
            let rejects = &stored.radio.as_ref().unwrap().rejects;
            assert_eq!(rejects.len(), MAX_REASONS);
            assert!(rejects.iter().all(|(reason, _)| reason.len() == MAX_REASON));
            assert_eq!(stored.readings_backlog, 0);
        }
    }
}
