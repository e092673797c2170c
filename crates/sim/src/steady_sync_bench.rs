//! `gramgrid bench sync-steady`: what the backhaul costs a village in normal times. A village with
//! central and the gateway in one process over real TLS, its meters read every 15 minutes and the
//! gateway syncing after each interval, as the default schedule does; the bytes through the link
//! (TLS handshakes and records, HTTP, sync framing) are counted per reading, per session and per
//! month, which is what a SIM's data plan is paid by.
use crate::bench::yes_no;
use crate::village::{Village, VillageError};
use chrono::{DateTime, Duration, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use serde::Serialize;
use std::sync::atomic::Ordering;

/// Sessions a gateway syncing every 15 minutes runs in a 30-day month.
const SESSIONS_PER_MONTH: u64 = 30 * 24 * 4;

/// `gramgrid bench sync-steady` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SteadySyncArgs {
    /// Households in the village (one meter each, read every 15 minutes).
    #[arg(long, default_value_t = 300)]
    pub meters: usize,
    /// Sync sessions measured, one after each 15-minute interval.
    #[arg(long, default_value_t = 24)]
    pub sessions: u32,
    /// Seed of the households' load.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the steady-state sync benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct SteadySyncFigures {
    /// Households in the village.
    pub meters: usize,
    /// Sessions measured.
    pub sessions: u32,
    /// Readings they uploaded.
    pub readings: usize,
    /// Request/answer exchanges they took.
    pub exchanges: usize,
    /// Bytes through the link in both directions over the measured sessions.
    pub wire_bytes: u64,
    /// Compressed sync bodies the gateway sent (readings, records, its status report).
    pub body_bytes_up: u64,
    /// Compressed sync bodies central answered (acknowledgements, downlink records).
    pub body_bytes_down: u64,
    /// `wire_bytes` per reading uploaded.
    pub wire_bytes_per_reading: f64,
    /// `wire_bytes` per session.
    pub wire_bytes_per_session: f64,
    /// What a month of 15-minute sessions costs the gateway's SIM, in megabytes (10^6 bytes).
    pub megabytes_per_month: f64,
    /// Whether every account has the same balance at the gateway and at central afterwards.
    pub balances_agree: bool,
}

/// Runs the benchmark: two warm-up intervals and sessions (the first session carries the accounts'
/// setup, and a meter's first reading goes up with its second), then `sessions` sessions, each after
/// 15 more minutes of readings.
pub async fn steady(args: &SteadySyncArgs) -> Result<SteadySyncFigures, VillageError> {
    let temp = tempfile::tempdir()?;
    let now = Utc::now();
    let interval = Duration::minutes(15);
    let aligned = DateTime::from_timestamp(now.timestamp() - now.timestamp().rem_euclid(900), 0)
        .unwrap_or(now);
    let start = aligned - interval * (args.sessions as i32 + 4);
    let village = Village::build(temp.path(), "gw-steady", args.meters, start).await?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    for warm_up in 0..2 {
        let from = start + interval * warm_up;
        village.consume(from, from + interval, &mut rng)?;
        village.sync().await.map_err(sync_failed)?;
    }
    let bar = progress(args);
    village.link.bytes.store(0, Ordering::Relaxed);
    let (mut readings, mut exchanges, mut up, mut down) = (0, 0, 0, 0);
    for session in 1..=args.sessions {
        let from = start + interval * (session as i32 + 1);
        village.consume(from, from + interval, &mut rng)?;
        let report = village.sync().await.map_err(sync_failed)?;
        readings += report.readings;
        exchanges += report.exchanges;
        up += report.bytes_up;
        down += report.bytes_down;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let wire_bytes = village.link.bytes.load(Ordering::Relaxed);
    let balances_agree = village.disagreements().await?.is_empty();
    village.central.stop().await?;
    let per_session = wire_bytes as f64 / f64::from(args.sessions.max(1));
    Ok(SteadySyncFigures {
        meters: args.meters,
        sessions: args.sessions,
        readings,
        exchanges,
        wire_bytes,
        body_bytes_up: up as u64,
        body_bytes_down: down as u64,
        wire_bytes_per_reading: wire_bytes as f64 / readings.max(1) as f64,
        wire_bytes_per_session: per_session,
        megabytes_per_month: per_session * SESSIONS_PER_MONTH as f64 / 1e6,
        balances_agree,
    })
}

fn progress(args: &SteadySyncArgs) -> ProgressBar {
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(u64::from(args.sessions))
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} sessions")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("15-minute sessions");
    bar
}

fn sync_failed(error: gramgrid_gateway::sync::client::SyncError) -> VillageError {
    VillageError::Io(std::io::Error::other(error.to_string()))
}

impl std::fmt::Display for SteadySyncFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "steady-state sync, {} meters read every 15 minutes, one session after each interval",
            self.meters
        )?;
        let rows = [
            ("sessions", format!("{}", self.sessions)),
            ("readings uploaded", format!("{}", self.readings)),
            ("exchanges", format!("{}", self.exchanges)),
            (
                "bytes on the wire (TLS included)",
                format!("{}", self.wire_bytes),
            ),
            ("sync body bytes up", format!("{}", self.body_bytes_up)),
            ("sync body bytes down", format!("{}", self.body_bytes_down)),
            (
                "wire bytes per reading",
                format!("{:.2}", self.wire_bytes_per_reading),
            ),
            (
                "wire bytes per session",
                format!("{:.0}", self.wire_bytes_per_session),
            ),
            (
                "backhaul per month (30 days)",
                format!("{:.1} MB", self.megabytes_per_month),
            ),
            (
                "balances agree (gateway, central)",
                yes_no(self.balances_agree).to_string(),
            ),
        ];
        for (i, (what, figure)) in rows.iter().enumerate() {
            let end = if i + 1 == rows.len() { "" } else { "\n" };
            write!(f, "  {what:<34} {figure:>12}{end}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_small_village_uploads_every_interval_and_counts_its_bytes() {
        let figures = steady(&SteadySyncArgs {
            meters: 5,
            sessions: 3,
            seed: 1,
            json: true,
        })
        .await
        .unwrap();
        assert_eq!(figures.readings, 5 * 3);
        assert!(figures.balances_agree);
        // Every session carries at least its request and answer through TLS.
        assert!(figures.wire_bytes > figures.body_bytes_up + figures.body_bytes_down);
        assert!(figures.megabytes_per_month > 0.0);
    }
}
