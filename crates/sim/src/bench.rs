//! Benchmarks run on the machine at hand: `gramgrid bench ledger` measures ingest and rating.
use crate::village::{category_of, interval_energy};
use chrono::{DateTime, Duration, TimeZone, Utc};
use gramgrid_core::tariff::{Category, TariffBook};
use gramgrid_gateway::store::{Account, MeterInstall, MeterReading, Store, StoreError};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Settings of the ledger benchmark.
#[derive(Debug, Clone)]
pub struct LedgerBench {
    /// Meters (one account each) whose readings are ingested into a gateway store.
    pub meters: usize,
    /// Days of 15-minute readings per meter (96 a day).
    pub days: usize,
    /// Readings per transaction.
    pub batch: usize,
    /// Directory for the database (a temporary one when None).
    pub dir: Option<PathBuf>,
    /// Seed of the simulated consumption.
    pub seed: u64,
    /// Show a progress bar on the terminal.
    pub progress: bool,
}

/// What the ledger benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerFigures {
    /// Meters simulated.
    pub meters: usize,
    /// Days of readings per meter.
    pub days: usize,
    /// Readings ingested and charged (meters × days × 96).
    pub readings: usize,
    /// Readings per transaction.
    pub batch: usize,
    /// Wall-clock time of the ingest in seconds, closing the store (WAL checkpoint) included.
    pub seconds: f64,
    /// Readings ingested per wall-clock second.
    pub readings_per_second: f64,
    /// Bytes handed to write(2)/pwrite(2) by this process during ingest, WAL and checkpoints included.
    pub bytes_written: u64,
    /// `bytes_written` divided by `readings`.
    pub bytes_per_reading: f64,
    /// Size of the database file at the end (WAL checkpointed into it), in bytes.
    pub database_bytes: u64,
    /// What the readings charged, energy plus duty, in paise.
    pub charged_paise: i64,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The gateway store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The benchmark directory could not be used, or `/proc/self/io` could not be read.
    #[error("cannot use the benchmark directory: {0}")]
    Io(#[from] std::io::Error),
    /// Meters, days or batch was zero.
    #[error("the benchmark needs at least one meter, one day and a batch of at least one reading")]
    Empty,
}

/// Bytes this process has passed to write system calls (`wchar` in /proc/self/io).
fn bytes_written_so_far() -> std::io::Result<u64> {
    let io = std::fs::read_to_string("/proc/self/io")?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("/proc/self/io has no wchar line"))
}

fn populate(
    store: &mut Store,
    meters: usize,
    start: DateTime<Utc>,
) -> Result<Vec<(i64, Category)>, StoreError> {
    (0..meters)
        .map(|i| {
            let category = category_of(i);
            let account = format!("ACC{i:06}");
            store.upsert_account(&Account {
                id: account.clone(),
                consumer_name: format!("Consumer {i}"),
                category,
                phone: None,
                created_at: start,
            })?;
            let id = store.install_meter(&MeterInstall {
                serial: format!("MTR{i:06}"),
                account,
                installed_at: start,
                initial_register_wh: Some(0),
            })?;
            Ok((id, category))
        })
        .collect()
}

/// Runs the ledger benchmark: readings arrive time-major (every meter's interval at once), are
/// stored and rated in transactions of `batch` readings.
pub fn ledger(settings: &LedgerBench) -> Result<LedgerFigures, BenchError> {
    if settings.meters == 0 || settings.days == 0 || settings.batch == 0 {
        return Err(BenchError::Empty);
    }
    let temp = tempfile::tempdir()?;
    let dir: &Path = settings.dir.as_deref().unwrap_or(temp.path());
    std::fs::create_dir_all(dir)?;
    let path = dir.join("bench-ledger.db");
    if path.exists() {
        std::fs::remove_file(&path)?;
    }
    let book = TariffBook::builtin();
    let start = Utc
        .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let mut store = Store::open(&path)?;
    let meters = populate(&mut store, settings.meters, start)?;
    let intervals = settings.days * 96;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(settings.seed);
    let mut registers = vec![0i64; meters.len()];
    let mut pending: Vec<MeterReading> = Vec::with_capacity(settings.batch);
    let bar = if settings.progress {
        ProgressBar::new(intervals as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} intervals ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("ingesting");
    let bytes_before = bytes_written_so_far()?;
    let clock = Instant::now();
    let mut charged_paise = 0;
    for interval in 1..=intervals {
        let at = start + Duration::minutes(15 * interval as i64);
        let hour = gramgrid_core::civil::local(at)
            .format("%H")
            .to_string()
            .parse()
            .unwrap_or(0);
        for (index, ((meter, category), register)) in
            meters.iter().zip(registers.iter_mut()).enumerate()
        {
            *register += interval_energy(index, *category, hour, &mut rng);
            pending.push(MeterReading {
                meter: *meter,
                at,
                register_wh: *register,
                export_wh: 0,
            });
            if pending.len() == settings.batch {
                charged_paise += store.ingest(&book, &pending)?.charged_paise;
                pending.clear();
            }
        }
        bar.inc(1);
    }
    charged_paise += store.ingest(&book, &pending)?.charged_paise;
    drop(store); // closing checkpoints the WAL into the database: part of the cost
    let seconds = clock.elapsed().as_secs_f64();
    let bytes_written = bytes_written_so_far()?.saturating_sub(bytes_before);
    bar.finish_and_clear();
    let readings = intervals * meters.len();
    Ok(LedgerFigures {
        meters: meters.len(),
        days: settings.days,
        readings,
        batch: settings.batch,
        seconds,
        readings_per_second: readings as f64 / seconds.max(1e-9),
        bytes_written,
        bytes_per_reading: bytes_written as f64 / readings as f64,
        database_bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
        charged_paise,
    })
}

impl std::fmt::Display for LedgerFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "ledger ingest benchmark ({} meters x {} days, {} readings per commit)",
            self.meters, self.days, self.batch
        )?;
        writeln!(f, "  readings ingested and charged   {:>12}", self.readings)?;
        writeln!(
            f,
            "  wall time                       {:>12.2} s",
            self.seconds
        )?;
        writeln!(
            f,
            "  readings per second             {:>12.0}",
            self.readings_per_second
        )?;
        writeln!(
            f,
            "  bytes written per reading       {:>12.1}  (write syscalls: WAL, checkpoints, close)",
            self.bytes_per_reading
        )?;
        writeln!(
            f,
            "  database size                   {:>12} bytes",
            self.database_bytes
        )?;
        write!(
            f,
            "  energy charged                  {:>12} INR",
            gramgrid_core::tariff::rupees(self.charged_paise)
        )
    }
}

/// Settings of the sync benchmark.
#[derive(Debug, Clone)]
pub struct SyncBench {
    /// Households in the village (one meter each).
    pub meters: usize,
    /// Days the backhaul was down: what the gateway has to catch up on.
    pub outage_days: i64,
    /// Link bandwidth in each direction, kbit/s.
    pub kbit_per_second: u64,
    /// Seed of the simulated consumption.
    pub seed: u64,
    /// Show a progress bar on the terminal.
    pub progress: bool,
}

/// What the sync benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct SyncFigures {
    /// Households in the village.
    pub meters: usize,
    /// Days the backhaul was down.
    pub outage_days: i64,
    /// Link bandwidth in each direction, kbit/s.
    pub kbit_per_second: u64,
    /// Readings the catch-up session uploaded.
    pub readings: usize,
    /// Priority-lane records (money events, relay commands and states, alerts, ...) it uploaded.
    pub priority_records: usize,
    /// Request/answer exchanges the catch-up session took.
    pub exchanges: usize,
    /// Bytes through the link in both directions: TLS handshakes, records, HTTP and sync framing.
    pub wire_bytes: u64,
    /// `wire_bytes` per reading uploaded.
    pub wire_bytes_per_reading: f64,
    /// Compressed sync bodies only (what the wire format itself costs).
    pub body_bytes_per_reading: f64,
    /// Wall-clock time of the catch-up session, in seconds.
    pub catch_up_seconds: f64,
    /// Whether every account has the same balance at the gateway and at central afterwards.
    pub balances_agree: bool,
}

/// Runs the sync benchmark: a village whose gateway has been offline for `outage_days`, then one
/// catch-up through a link limited to `kbit_per_second`.
pub async fn sync(settings: &SyncBench) -> Result<SyncFigures, crate::village::VillageError> {
    let temp = tempfile::tempdir()?;
    let now = Utc::now();
    let start = DateTime::from_timestamp(now.timestamp() - now.timestamp().rem_euclid(900), 0)
        .unwrap_or(now)
        - Duration::days(settings.outage_days)
        - Duration::hours(1);
    let village =
        crate::village::Village::build(temp.path(), "gw-bench", settings.meters, start).await?;
    village.sync().await.map_err(sync_failed)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(settings.seed);
    let bar = if settings.progress {
        ProgressBar::new(settings.outage_days as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} days")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("simulating the outage");
    for day in 0..settings.outage_days {
        let from = start + Duration::days(day);
        village.consume_ticking(from, from + Duration::days(1), Duration::hours(6), &mut rng)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    {
        let mut plan = village
            .link
            .plan
            .lock()
            .map_err(|_| crate::village::VillageError::Poisoned)?;
        plan.bytes_per_second = Some(settings.kbit_per_second * 1000 / 8);
    }
    village
        .link
        .bytes
        .store(0, std::sync::atomic::Ordering::Relaxed);
    let clock = Instant::now();
    let report = village.sync().await.map_err(sync_failed)?;
    let catch_up_seconds = clock.elapsed().as_secs_f64();
    let wire_bytes = village
        .link
        .bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    let balances_agree = village.disagreements().await?.is_empty();
    let readings = report.readings.max(1);
    let figures = SyncFigures {
        meters: settings.meters,
        outage_days: settings.outage_days,
        kbit_per_second: settings.kbit_per_second,
        readings: report.readings,
        priority_records: report.priority_records,
        exchanges: report.exchanges,
        wire_bytes,
        wire_bytes_per_reading: wire_bytes as f64 / readings as f64,
        body_bytes_per_reading: (report.bytes_up + report.bytes_down) as f64 / readings as f64,
        catch_up_seconds,
        balances_agree,
    };
    village.central.stop().await?;
    Ok(figures)
}

fn sync_failed(error: gramgrid_gateway::sync::client::SyncError) -> crate::village::VillageError {
    crate::village::VillageError::Io(std::io::Error::other(error.to_string()))
}

impl std::fmt::Display for SyncFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "sync catch-up after a {}-day outage, {} meters, link {} kbit/s each way",
            self.outage_days, self.meters, self.kbit_per_second
        )?;
        writeln!(
            f,
            "  readings uploaded                {:>12}",
            self.readings
        )?;
        writeln!(
            f,
            "  priority records uploaded        {:>12}",
            self.priority_records
        )?;
        writeln!(
            f,
            "  exchanges                        {:>12}",
            self.exchanges
        )?;
        writeln!(
            f,
            "  bytes on the wire (TLS included) {:>12}",
            self.wire_bytes
        )?;
        writeln!(
            f,
            "  wire bytes per reading           {:>12.3}",
            self.wire_bytes_per_reading
        )?;
        writeln!(
            f,
            "  sync body bytes per reading      {:>12.3}",
            self.body_bytes_per_reading
        )?;
        writeln!(
            f,
            "  catch-up time                    {:>12.1} s",
            self.catch_up_seconds
        )?;
        write!(
            f,
            "  balances agree (gateway, central) {:>11}",
            yes_no(self.balances_agree)
        )
    }
}

/// "yes", or a loud "NO" for a check that failed, in a benchmark's summary.
pub(crate) fn yes_no(yes: bool) -> &'static str {
    if yes {
        "yes"
    } else {
        "NO"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_stores_and_charges_every_reading() {
        let figures = ledger(&LedgerBench {
            meters: 20,
            days: 1,
            batch: 100,
            dir: None,
            seed: 7,
            progress: false,
        })
        .unwrap();
        assert_eq!(figures.readings, 20 * 96);
        assert!(figures.charged_paise > 0);
        assert!(figures.bytes_written > 0 && figures.database_bytes > 0);
    }
}
