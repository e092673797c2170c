//! `gramgrid bench central`: readings per second that central accepts from many gateways at once.
//!
//! Every gateway is a task that uploads day-sized reading batches (all its meters, 96 intervals)
//! through the real exchange path (wire encode, decode, one transaction, rating, answer), as many
//! gateways at once as asked. HTTP and TLS are left out: they cost the same per request whatever
//! the storage, and the question is what the storage and rating sustain.
use chrono::{TimeZone, Utc};
use gramgrid_central::accounts::{self, Account};
use gramgrid_central::{Central, CentralConfig, CentralError};
use gramgrid_core::tariff::Category;
use gramgrid_proto::wire::{
    self, ReadingBatch, ReadingBlock, UploadRequest, UploadResponse, INTERVAL_S, PROTOCOL_VERSION,
};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// Settings of the ingest benchmark.
#[derive(Debug, Clone)]
pub struct IngestBench {
    /// `sqlite:PATH` or `postgres://...`; None: SQLite in a temporary directory.
    pub database_url: Option<String>,
    /// Gateways uploading at once, each from its own task.
    pub gateways: usize,
    /// Meters (one account each) per gateway.
    pub meters_per_gateway: usize,
    /// Total readings to upload (rounded down to whole days of every meter).
    pub readings: usize,
    /// Database connections for PostgreSQL (SQLite always uses one).
    pub connections: usize,
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct IngestFigures {
    /// The database backend: `sqlite` or `postgres`.
    pub backend: String,
    /// Gateways that uploaded at once.
    pub gateways: usize,
    /// Meters of all gateways.
    pub meters: usize,
    /// Readings uploaded, stored and rated (whole days of every meter).
    pub readings: usize,
    /// Sync exchanges: one per gateway and day of readings.
    pub exchanges: usize,
    /// Wall-clock time of the uploads in seconds (setting up the accounts excluded).
    pub seconds: f64,
    /// Readings central accepted per wall-clock second.
    pub readings_per_second: f64,
}

impl std::fmt::Display for IngestFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} readings from {} gateways ({} meters) in {} exchanges, {:.2} s: {:.0} readings/s",
            self.backend, self.readings, self.gateways, self.meters, self.exchanges, self.seconds, self.readings_per_second
        )
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Central failed (opening the database, enrolling the households).
    #[error(transparent)]
    Central(#[from] CentralError),
    /// The temporary directory could not be made.
    #[error("cannot make a temporary directory: {0}")]
    Io(#[from] std::io::Error),
    /// Central answered an exchange with an error status.
    #[error("gateway {gateway}: the exchange answered {status}: {body}")]
    Exchange {
        /// The gateway whose exchange was refused.
        gateway: String,
        /// The HTTP status.
        status: u16,
        /// The answer's body (the error message).
        body: String,
    },
    /// A task panicked or was cancelled, or a request or answer could not be encoded or decoded.
    #[error("a gateway task failed: {0}")]
    Task(String),
    /// Too few gateways, meters or readings for one whole day of every meter.
    #[error("the benchmark needs at least one gateway, one meter and one day of readings")]
    Empty,
}

const PER_DAY: usize = 96;

/// Runs the benchmark.
pub async fn ingest(settings: &IngestBench) -> Result<IngestFigures, BenchError> {
    let days = settings.readings
        / (settings.gateways.max(1) * settings.meters_per_gateway.max(1) * PER_DAY);
    if settings.gateways == 0 || settings.meters_per_gateway == 0 || days == 0 {
        return Err(BenchError::Empty);
    }
    let dir = tempfile::tempdir()?;
    let database_url = settings
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", dir.path().join("central.db").display()));
    let config = CentralConfig {
        database_url,
        database_connections: settings.connections,
        secrets_key_file: dir.path().join("secrets.key"),
        ..CentralConfig::default()
    };
    let central = Arc::new(
        tokio::task::spawn_blocking(move || Central::open(config))
            .await
            .map_err(|e| BenchError::Task(e.to_string()))??,
    );
    // Ids unique per run, so a PostgreSQL database can be reused.
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let start = Utc
        .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let gateways: Vec<(String, Vec<String>)> = (0..settings.gateways)
        .map(|g| {
            let id = format!("bench-{run}-{g}");
            let meters = (0..settings.meters_per_gateway)
                .map(|m| format!("{id}-m{m}"))
                .collect();
            (id, meters)
        })
        .collect();
    for (gateway, meters) in &gateways {
        let (gateway, meters) = (gateway.clone(), meters.clone());
        central
            .db()
            .transaction(move |tx| {
                for serial in &meters {
                    let account = Account {
                        language: Default::default(),
                        id: format!("acct-{serial}"),
                        consumer_name: "bench".into(),
                        category: Category::Domestic,
                        phone: None,
                        gateway: Some(gateway.clone()),
                        created_at: start,
                    };
                    accounts::enrol_household(tx, &account, serial)?;
                }
                Ok::<_, CentralError>(())
            })
            .await?;
    }
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (gateway, meters) in gateways {
        let central = Arc::clone(&central);
        tasks.spawn(
            async move { upload(&central, gateway, &meters, start.timestamp(), days).await },
        );
    }
    let mut exchanges = 0;
    while let Some(done) = tasks.join_next().await {
        exchanges += done.map_err(|e| BenchError::Task(e.to_string()))??;
    }
    let seconds = began.elapsed().as_secs_f64();
    let readings = settings.gateways * settings.meters_per_gateway * days * PER_DAY;
    Ok(IngestFigures {
        backend: central.db().backend().to_owned(),
        gateways: settings.gateways,
        meters: settings.gateways * settings.meters_per_gateway,
        readings,
        exchanges,
        seconds,
        readings_per_second: readings as f64 / seconds,
    })
}

/// One gateway: a day of every meter's readings per exchange.
async fn upload(
    central: &Central,
    gateway: String,
    meters: &[String],
    start: i64,
    days: usize,
) -> Result<usize, BenchError> {
    let mut acked = 0u64;
    for day in 0..days {
        let first_at =
            start + (day * PER_DAY) as i64 * i64::from(INTERVAL_S) + i64::from(INTERVAL_S);
        let blocks = meters
            .iter()
            .enumerate()
            .map(|(m, serial)| ReadingBlock {
                meter: serial.clone(),
                first_at,
                first_register_wh: ((day * PER_DAY + 1) * (100 + m % 50)) as i64,
                interval_s: INTERVAL_S,
                register_deltas: vec![(100 + m % 50) as i64; PER_DAY - 1],
            })
            .collect();
        let through = acked + (meters.len() * PER_DAY) as u64;
        let request = UploadRequest {
            protocol: PROTOCOL_VERSION,
            sent_at: Utc::now(),
            priority: Vec::new(),
            readings: Some(ReadingBatch {
                after_seq: acked,
                through_seq: through,
                blocks,
                exports: Vec::new(),
            }),
            downlink_applied: u64::MAX >> 1,
            identity: None,
            status: None,
        };
        let body = wire::encode(&request).map_err(|e| BenchError::Task(e.to_string()))?;
        let response =
            gramgrid_central::sync::exchange(central, gateway.clone(), body.into()).await;
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), wire::MAX_BODY_BYTES)
            .await
            .map_err(|e| BenchError::Task(e.to_string()))?;
        if status != 200 {
            return Err(BenchError::Exchange {
                gateway,
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        let answer: UploadResponse =
            wire::decode(&bytes).map_err(|e| BenchError::Task(e.to_string()))?;
        acked = answer.readings_acked;
    }
    Ok(days)
}
