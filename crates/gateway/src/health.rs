//! What the gateway can tell about its own health: its version, uptime, upload backlog, radio
//! counters and disk space. The technician's status page shows it; each sync session sends it to
//! central ([`gramgrid_proto::wire::GatewayStatus`]).
use crate::link::{read_stats, LinkStats, SharedStats};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use gramgrid_proto::wire::{DiskSpace, GatewayStatus, RadioCounters};
use std::path::PathBuf;
use std::time::Instant;

/// The gramgrid version this gateway runs.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the gateway's health is read from; cheap to clone (the daemon hands one to the
/// technician app and one to the sync client).
#[derive(Clone)]
pub struct Health {
    started_at: DateTime<Utc>,
    started: Instant,
    link_stats: Option<SharedStats>,
    data_dir: PathBuf,
}

impl Health {
    /// The health of a daemon that started at `started_at` (by its clock) with `data_dir`, and the
    /// meter link's counters when a radio runs.
    pub fn new(
        started_at: DateTime<Utc>,
        link_stats: Option<SharedStats>,
        data_dir: PathBuf,
    ) -> Self {
        Health {
            started_at,
            started: Instant::now(),
            link_stats,
            data_dir,
        }
    }

    /// Seconds since the daemon started.
    pub fn uptime_seconds(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX)
    }

    /// A copy of the meter link's counters, when a radio runs.
    pub fn link(&self) -> Option<LinkStats> {
        self.link_stats.as_ref().map(read_stats)
    }

    /// The meter link's counters in the form central takes, when a radio runs.
    pub fn radio(&self) -> Option<RadioCounters> {
        self.link().map(|stats| RadioCounters {
            uplinks: stats.uplinks,
            silences: stats.silences,
            downlinks: stats.downlinks,
            rejects: stats
                .rejects
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(reason, n)| (reason.as_str().to_string(), n))
                .collect(),
        })
    }

    /// Free and total bytes on the data directory's file system.
    pub fn disk(&self) -> Option<DiskSpace> {
        disk_space(&self.data_dir)
    }

    /// The report central gets with a session's first exchange.
    pub fn status(&self, store: &mut Store) -> Result<GatewayStatus, StoreError> {
        let (priority_backlog, readings_backlog) = store.sync_backlog()?;
        Ok(GatewayStatus {
            software: SOFTWARE_VERSION.into(),
            started_at: self.started_at,
            priority_backlog,
            readings_backlog,
            oldest_unsent: store.oldest_unsent_reading()?,
            radio: self.radio(),
            disk: self.disk(),
        })
    }
}

/// Free (for an unprivileged user) and total bytes on the file system holding `dir`.
pub fn disk_space(dir: &std::path::Path) -> Option<DiskSpace> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(DiskSpace {
        free: stat.f_bavail.saturating_mul(stat.f_frsize),
        total: stat.f_blocks.saturating_mul(stat.f_frsize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gramgrid_proto::security::RejectReason;

    #[test]
    fn the_radio_counters_carry_only_the_reasons_that_occurred() {
        let stats = SharedStats::default();
        {
            let mut s = stats.lock().unwrap();
            s.uplinks = 40;
            s.silences = 3;
            s.downlinks = 45;
            s.rejects.record(RejectReason::BadMic);
            s.rejects.record(RejectReason::BadMic);
        }
        let dir = tempfile::tempdir().unwrap();
        let health = Health::new(Utc::now(), Some(stats), dir.path().into());
        let radio = health.radio().unwrap();
        assert_eq!(
            (radio.uplinks, radio.silences, radio.downlinks),
            (40, 3, 45)
        );
        assert_eq!(radio.rejects, vec![("bad_mic".to_string(), 2)]);
        assert_eq!(radio.rejected(), 2);
        let disk = health.disk().unwrap();
        assert!(disk.total > 0 && disk.free <= disk.total);
        let no_radio = Health::new(Utc::now(), None, dir.path().into());
        assert_eq!(no_radio.radio(), None);
    }
}
