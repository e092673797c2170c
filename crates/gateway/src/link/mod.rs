//! The meter link, gateway side: owns the gateway radio, talks LoRaWAN to the meters, ingests what
//! they report and carries the policy's relay commands to them.
//!
//! - `scheduler` (pure): who to poll next, at which spreading factor, from which interval on.
//! - `frames`: sessions, frame counters, rejection counters, report → readings.
//! - `task`: the async loop that owns the radio (scheduled mode, or ALOHA listening).
//!   `task::dlms` holds a DLMS/COSEM meter's turns (docs/dlms.md section 7).
//! - `config`: the `[radio]` and `[link]` sections of the gateway config.
//!
//! Whatever must be durable goes through a [`LinkBackend`]: the gateway's store in the daemon, an
//! in-memory tally in the capacity benchmark. A frame counter is committed before the frame it
//! belongs to is acted upon (uplink) or sent (downlink).

pub mod config;
pub mod frames;
pub mod scheduler;
pub mod task;

use crate::store::{DlmsIc, Fcnt, LinkSession, MeterReading, StoreError};
use chrono::{DateTime, Utc};
use gramgrid_core::policy::{RelayAction, RelayState};
use gramgrid_proto::payload::{DisplayUpdate, MeterEvent};
use gramgrid_proto::security::RejectCounters;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use task::Link;

/// How long a meter waits after a downlink ends before it answers: time for the gateway radio to
/// turn round from transmit to receive. Meter firmware and gateway share it.
pub const REPLY_DELAY: Duration = Duration::from_millis(30);
/// Class A (ALOHA mode): the meter's receive window opens this long after its uplink ends (RX1).
pub const RX1_DELAY: Duration = Duration::from_secs(1);

/// Why the link could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The store failed (sessions, keys, frame counters, readings or relay states).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The radio could not be opened, configured, or failed to transmit or receive.
    #[error("the gateway radio failed: {0}; check the [radio] section (and the air bus or the HAT wiring)")]
    Radio(#[from] gramgrid_radio::RadioError),
    /// The meter manifest in `[link] manifest` could not be read or parsed.
    #[error("cannot read the meter manifest {path}: {detail}")]
    Manifest {
        /// The manifest file from the config.
        path: std::path::PathBuf,
        /// What went wrong (I/O or parse error).
        detail: String,
    },
    /// `[radio] kind = "hardware"` in a build without feature `hardware`.
    #[error("[radio] kind = \"hardware\" needs a gramgrid built with `--features hardware`")]
    NoHardwareSupport,
    /// `[radio] kind = "emulator"` in a build without feature `emulator` (the Pi build).
    #[error("[radio] kind = \"emulator\" needs a gramgrid built with the simulator (the default build); this build is for a gateway with a radio HAT")]
    NoEmulatorSupport,
}

/// Where the link keeps what must survive, and where what it hears goes.
pub trait LinkBackend {
    /// Every provisioned meter's session and counters.
    fn sessions(&mut self) -> Result<Vec<LinkSession>, LinkError>;
    /// Durably records a frame counter (before the frame is acted upon or sent).
    fn commit_fcnt(&mut self, meter: i64, which: Fcnt, fcnt: u32) -> Result<(), LinkError>;
    /// Durably records a DLMS meter's invocation counter (the gateway's before its request is
    /// sent, the meter's before its answer is acted upon).
    fn commit_dlms_ic(&mut self, meter: i64, which: DlmsIc, ic: u32) -> Result<(), LinkError>;
    /// Readings heard from a meter.
    fn readings(&mut self, batch: &[MeterReading]) -> Result<(), LinkError>;
    /// Events a meter reported (tamper, power fail and restore, relay operated, clock set), heard
    /// at `at`; a meter may report one again.
    fn events(
        &mut self,
        meter: i64,
        events: &[MeterEvent],
        at: DateTime<Utc>,
    ) -> Result<(), LinkError>;
    /// A relay state a meter reported (it confirms relay commands).
    fn relay_state(
        &mut self,
        meter: i64,
        state: RelayState,
        at: DateTime<Utc>,
    ) -> Result<(), LinkError>;
}

/// A relay command on its way from the policy loop to the radio task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRequest {
    /// The meter's id in the gateway store (`meters.id`, not its serial).
    pub meter: i64,
    /// The store's relay command id; on the air it travels as [`task::wire_command_id`] of it.
    pub command_id: String,
    /// Connect (close the relay) or disconnect (open it).
    pub action: RelayAction,
    /// The command is not transmitted if its transmission would end after this (a disconnect's
    /// window end; None for connects and a technician's disconnect).
    pub not_after: Option<DateTime<Utc>>,
}

/// What the policy loop tells the radio task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRequest {
    /// Carry a relay command to its meter.
    Send(RelayRequest),
    /// A command sent earlier is withdrawn: it must not be transmitted again.
    Withdraw {
        /// The meter's id in the gateway store.
        meter: i64,
        /// The store's id of the withdrawn command.
        command_id: String,
    },
    /// Meters or their keys changed in the store (sync, commissioning): reload the sessions now.
    Reload,
    /// Whether the gateway trusts its clock now (`gramgrid_core::clock`): only then does the link
    /// set meters' clocks to it.
    ClockTrusted(bool),
    /// Show a balance on a meter's display in its next turn.
    Display {
        /// The meter's id in the gateway store.
        meter: i64,
        /// What to show.
        update: DisplayUpdate,
    },
}

/// A meter whose report's `meter_time` is further than this from the gateway's (trusted) clock has
/// its clock set in its next turn.
pub const MAX_METER_CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(30);

/// The meters the radio task has session keys for, and those that stopped answering, shared with
/// the policy loop's end of the command channel: a command for a meter the radio cannot reach yet
/// stays queued in the store (and is not counted as sent), and many meters falling silent together
/// is a supply outage going on.
#[derive(Debug, Clone, Default)]
pub struct ProvisionedMeters {
    keys: Arc<std::sync::RwLock<std::collections::HashSet<i64>>>,
    silent: Arc<std::sync::RwLock<std::collections::HashMap<i64, DateTime<Utc>>>>,
}

impl ProvisionedMeters {
    /// Whether the radio task can address `meter`.
    pub fn contains(&self, meter: i64) -> bool {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&meter)
    }

    /// The meters that missed their last [`scheduler::SILENCES_FOR_DARK`] turns or more, and when
    /// each first went unanswered.
    pub fn silent_since(&self) -> std::collections::HashMap<i64, DateTime<Utc>> {
        self.silent
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn replace(&self, meters: impl Iterator<Item = i64>) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = meters.collect();
    }

    fn set_silent(&self, silent: std::collections::HashMap<i64, DateTime<Utc>>) {
        *self.silent.write().unwrap_or_else(|p| p.into_inner()) = silent;
    }
}

/// The policy loop's end of the command channel: never blocks.
pub struct CommandSender {
    requests: mpsc::UnboundedSender<LinkRequest>,
    provisioned: ProvisionedMeters,
}

impl CommandSender {
    /// Whether the radio task has session keys for `meter` (a command for it would go on the air).
    pub fn can_reach(&self, meter: i64) -> bool {
        self.provisioned.contains(meter)
    }

    /// The meters that stopped answering, and since when ([`ProvisionedMeters::silent_since`]).
    pub fn silent_since(&self) -> std::collections::HashMap<i64, DateTime<Utc>> {
        self.provisioned.silent_since()
    }

    /// Hands a request to the radio task; fails only once that task has stopped.
    pub fn request(&self, request: LinkRequest) -> Result<(), String> {
        self.requests
            .send(request)
            .map_err(|_| "the radio task has stopped".to_string())
    }
}

/// A command channel: give the sender to the gateway, the receiver to the link task, and the same
/// `provisioned` to the link ([`Link::with_provisioned`]).
pub fn command_channel(
    provisioned: ProvisionedMeters,
) -> (CommandSender, mpsc::UnboundedReceiver<LinkRequest>) {
    let (requests, rx) = mpsc::unbounded_channel();
    (
        CommandSender {
            requests,
            provisioned,
        },
        rx,
    )
}

/// Wall-clock UTC derived from tokio's clock, so that a paused-time simulation has simulated UTC.
#[derive(Debug, Clone, Copy)]
pub struct LinkClock {
    origin: Instant,
    origin_utc: DateTime<Utc>,
}

impl LinkClock {
    /// A clock that reads `utc` now and runs with tokio time.
    pub fn starting_at(utc: DateTime<Utc>) -> Self {
        Self {
            origin: Instant::now(),
            origin_utc: utc,
        }
    }

    /// The system clock (the daemon).
    pub fn system() -> Self {
        Self::starting_at(Utc::now())
    }

    /// UTC now, on this clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.at(Instant::now())
    }

    /// The UTC this clock reads at a tokio `instant` (an instant before the clock started reads as
    /// its start).
    pub fn at(&self, instant: Instant) -> DateTime<Utc> {
        let elapsed = instant.saturating_duration_since(self.origin);
        self.origin_utc + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }

    /// The tokio instant at which this clock reads `utc` (now, if that is past).
    pub fn instant_of(&self, utc: DateTime<Utc>) -> Instant {
        let ahead = (utc - self.origin_utc).to_std().unwrap_or_default();
        self.origin + ahead
    }
}

/// What the link has done so far (logged periodically; read by the benchmark and tests).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkStats {
    /// Downlinks sent (polls, assignments, relay commands).
    pub downlinks: u64,
    /// Authentic uplinks accepted.
    pub uplinks: u64,
    /// Turns the polled meter did not answer.
    pub silences: u64,
    /// Readings from accepted uplinks that the backend took without error (duplicates included).
    pub readings: u64,
    /// Rejected uplinks per reason (`oversize`, `bad_mic`, `replayed_fcnt`, ...).
    #[serde(serialize_with = "serialize_rejects")]
    pub rejects: RejectCounters,
    /// Relay commands: from queued at the gateway to the meter's acknowledgement.
    pub relay_latencies: Vec<Duration>,
    /// Time the gateway's own transmissions occupied the channel.
    pub downlink_airtime: Duration,
    /// Each meter's radio health as the link last saw it (for the technician's pages; in memory
    /// only, so it starts empty after a restart).
    #[serde(skip)]
    pub meters: std::collections::HashMap<i64, MeterLinkHealth>,
    /// When the link's loop last turned (the watchdog's sign that it is alive).
    #[serde(skip)]
    pub last_turn: Option<std::time::Instant>,
}

/// One meter's radio health: how it was last heard, and its last exchanges.
#[derive(Debug, Clone, Default)]
pub struct MeterLinkHealth {
    /// When it was last heard (UTC).
    pub last_heard: Option<DateTime<Utc>>,
    /// Signal strength and quality of the last frame heard from it.
    pub rssi_dbm: Option<i16>,
    /// Signal-to-noise ratio of the last frame heard from it (dB).
    pub snr_db: Option<i16>,
    /// The spreading factor of its last exchange.
    pub sf: Option<u8>,
    /// Frames heard from it since the link started.
    pub heard: u64,
    /// Polls it did not answer since the link started.
    pub silences: u64,
    /// Its last [`LINK_HISTORY`] exchanges, oldest first.
    pub history: std::collections::VecDeque<LinkEvent>,
}

/// How many exchanges [`MeterLinkHealth::history`] keeps per meter.
pub const LINK_HISTORY: usize = 20;

/// One exchange with a meter, as the technician's link history shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkEvent {
    /// When (UTC).
    pub at: DateTime<Utc>,
    /// At which spreading factor.
    pub sf: Option<u8>,
    /// Heard (with its signal), or silent.
    pub heard: Option<(i16, i16)>,
}

impl MeterLinkHealth {
    /// Notes a frame heard from the meter.
    pub fn note_heard(&mut self, at: DateTime<Utc>, sf: Option<u8>, rssi_dbm: i16, snr_db: i16) {
        self.last_heard = Some(at);
        (self.rssi_dbm, self.snr_db) = (Some(rssi_dbm), Some(snr_db));
        self.sf = sf.or(self.sf);
        self.heard += 1;
        self.push(LinkEvent {
            at,
            sf,
            heard: Some((rssi_dbm, snr_db)),
        });
    }

    /// Notes a poll the meter did not answer.
    pub fn note_silent(&mut self, at: DateTime<Utc>, sf: u8) {
        self.sf = Some(sf);
        self.silences += 1;
        self.push(LinkEvent {
            at,
            sf: Some(sf),
            heard: None,
        });
    }

    fn push(&mut self, event: LinkEvent) {
        if self.history.len() == LINK_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(event);
    }
}

fn serialize_rejects<S: serde::Serializer>(c: &RejectCounters, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(None)?;
    for (reason, n) in c.iter() {
        map.serialize_entry(reason.as_str(), &n)?;
    }
    map.end()
}

/// Shared view of a running link's stats.
pub type SharedStats = Arc<Mutex<LinkStats>>;

/// The link's loop turns at least this often, even with nothing to do (the watchdog counts on it).
pub const IDLE_TURN: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads shared stats even if a panicking task left the lock poisoned (counters stay usable).
pub fn read_stats(stats: &SharedStats) -> LinkStats {
    stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
}
