//! The sync wire format shared by gateway and central: records, batches, and their encoding.
//!
//! One exchange is one HTTPS POST from the gateway: it carries the gateway's unacknowledged records
//! (per lane, in origin-sequence order) and the download cursor it has applied; the answer carries
//! the central server's acknowledgement per lane and the next downlink records. Both bodies are
//! postcard (compact binary, varints) compressed with zstd. See docs/sync.md.
use crate::dlms::client::MeterSecurity;
use crate::voucher::{PublishedKey, Voucher};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod model;
pub use model::{
    ModelError, WireCategory, WireEventKind, WireLedgerEvent, WirePolicy, WirePolicyRules,
    WireRelayAction, WireRelayState, WireSlab, WireTariffVersion,
};

/// Bumped on any incompatible change; a peer answers a version it does not speak with an error.
/// Version 2 added [`UploadRequest::identity`] at the end of the request: central still takes
/// version 1 from older gateways (and answers in the request's version); the answer is the same in
/// both. Version 3 appended the guardrail records (arrears events, [`DownlinkEvent::PolicyRules`],
/// [`DownlinkEvent::AccountProtection`], [`DownlinkEvent::BreakerRelease`],
/// [`DownlinkEvent::DatabaseRestored`]; [`UplinkEvent::Decision`], [`UplinkEvent::BreakerHeld`],
/// [`UplinkEvent::BreakerReleased`]):
/// central sends none of them to an older gateway ([`DownlinkEvent::min_protocol`]).
/// Version 4 appended consumer messages as kind and variables ([`UplinkEvent::Notice`], which
/// also says when the gateway sent one through its modem) and [`DownlinkEvent::AccountLanguage`].
/// Version 5 appended technician accounts ([`DownlinkEvent::Technician`], sent to every gateway)
/// and the technicians' actions audited at the gateway ([`UplinkEvent::TechnicianAction`]).
/// Version 6 appended spare meters in a gateway's stock ([`DownlinkEvent::StockMeter`]) and the
/// meters technicians commissioned or swapped from it ([`UplinkEvent::MeterInstalled`]).
/// Version 7 appended what meters report besides readings ([`UplinkEvent::MeterEvent`]: tamper,
/// power fail and restore, relay operated, clock set) and the supply outages the gateway found in
/// them ([`UplinkEvent::SupplyOutage`]).
/// Version 8 appended the time-of-day slots and demand charge of a tariff version
/// ([`DownlinkEvent::TariffDetails`]), the gateway's demand charges (ledger kind `DemandCharge`),
/// accounts' sanctioned loads ([`DownlinkEvent::AccountSanctionedLoad`]) and the months a
/// household exceeded it ([`UplinkEvent::SanctionedLoadExceeded`]). A gateway older than that bills such a version at its slab rates only, so
/// upgrade the gateways before publishing one (central refuses while a gateway speaks an older one).
/// Version 9 appended distribution-transformer meters ([`DownlinkEvent::TransformerMeter`]) and the
/// gateway's daily energy audit of each ([`UplinkEvent::EnergyAudit`]).
/// Version 10 added net metering: the export registers of a batch's readings
/// ([`ReadingBatch::exports`], at the end of the batch; central still decodes the shorter batch of
/// older gateways) and of a handed-over meter's history ([`DownlinkEvent::NetReadings`]), a tariff
/// version's banking of surplus export ([`DownlinkEvent::TariffNetMetering`]) and the gateway's
/// month-close credit for it (ledger kind `ExportCredit`).
/// Version 11 appended the gateway's own report of its health ([`UploadRequest::status`]:
/// software version, start time, upload backlog, radio counters, disk space), sent with the first
/// exchange of each session; central still decodes the shorter request of older gateways.
/// Version 12 appended the DLMS/COSEM security of a meter ([`DownlinkEvent::MeterDlms`]: its
/// system title and association keys, sent right after the meter's record). An older gateway
/// cannot reach a DLMS meter, so central refuses one for a gateway known to speak an older
/// protocol, and sends a gateway that upgrades its DLMS meters' records again.
pub const PROTOCOL_VERSION: u16 = 12;
/// The oldest version this gramgrid still speaks.
pub const OLDEST_PROTOCOL_VERSION: u16 = 1;
/// HTTP content type of both bodies.
pub const CONTENT_TYPE: &str = "application/x-gramgrid-sync-v1+zstd";
/// Path of the exchange endpoint on the central server.
pub const EXCHANGE_PATH: &str = "/sync/v1/exchange";
/// Path of the push channel: a gateway's long-poll `GET {WAIT_PATH}?after=SEQ&wait_s=S`, which
/// central answers `200` (body: its downlink sequence, in decimal) as soon as it holds a downlink
/// record after `SEQ` for the gateway, or `204` after `S` seconds without one. See docs/sync.md.
pub const WAIT_PATH: &str = "/sync/v1/wait";
/// Longest wait central holds a push request for (seconds); a longer `wait_s` is cut to it.
pub const MAX_WAIT_SECONDS: u64 = 3600;
/// Largest body either side accepts, compressed and uncompressed (a bound against hostile input).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Most readings one exchange may carry (central applies an exchange in one transaction; a
/// gateway's `[sync] max_readings` may not exceed it). A week of 500 meters is 336,000: a
/// catch-up takes a few exchanges, each a bounded transaction.
pub const MAX_READINGS_PER_EXCHANGE: usize = 100_000;
/// Most priority records one exchange may carry.
pub const MAX_PRIORITY_PER_EXCHANGE: usize = 10_000;

/// Upload lanes. Each has its own origin sequence and acknowledgement, so urgent records never wait
/// behind bulk readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Lane {
    /// Money, relay, alert, audit and anomaly events.
    Priority,
    /// Interval readings.
    Bulk,
}

/// A gateway record on the priority lane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorityRecord {
    /// Origin sequence on the priority lane (the gateway's outbox row number); central applies the
    /// records strictly in sequence and acknowledges the highest contiguous one.
    pub seq: u64,
    /// What happened.
    pub event: UplinkEvent,
}

/// Something that happened at a gateway that the central server must know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UplinkEvent {
    /// A money event made at the gateway (fixed charge, minimum charge, voucher recharge).
    Ledger(WireLedgerEvent),
    /// A voucher was redeemed offline (outbox format 1 only; see [`UplinkEvent::VoucherCode`]); the
    /// matching recharge travelled as a `Ledger` event whose id is the voucher's redemption id.
    VoucherRedeemed {
        /// The verified voucher.
        voucher: Voucher,
        /// When the gateway accepted it (gateway clock, UTC).
        redeemed_at: DateTime<Utc>,
    },
    /// A relay command changed state.
    RelayCommand {
        /// The command's id (unique at the gateway).
        id: String,
        /// Serial of the meter commanded.
        meter: String,
        /// Connect or disconnect.
        action: WireRelayAction,
        /// `relay::CommandState::as_str`: queued, sent, acknowledged, failed, timed_out, withdrawn.
        state: String,
        /// When the command entered this state (gateway clock, UTC).
        at: DateTime<Utc>,
        /// Free text; for `withdrawn`, why the disconnect was no longer wanted.
        detail: String,
    },
    /// A meter reported its relay state.
    RelayState {
        /// Serial of the reporting meter.
        meter: String,
        /// The relay state it reported.
        state: WireRelayState,
        /// When the report was received (UTC).
        at: DateTime<Utc>,
    },
    /// A notification for a consumer (sent by the central server's notifier).
    Alert {
        /// Unique id: central queues each alert once.
        id: String,
        /// The consumer's account.
        account: String,
        /// `low_balance`, `daily_balance` or `relay_timeout`.
        kind: String,
        /// When the gateway raised it (UTC).
        created_at: DateTime<Utc>,
        /// The text for the consumer.
        message: String,
    },
    /// A technician's manual override (audit).
    Override {
        /// Unique id of the override.
        id: String,
        /// The account it applies to.
        account: String,
        /// The relay action imposed.
        action: WireRelayAction,
        /// When it lapses (UTC).
        until: DateTime<Utc>,
        /// Who recorded it.
        technician: String,
        /// Why, as the technician wrote it.
        reason: String,
        /// When it was recorded (UTC).
        created_at: DateTime<Utc>,
    },
    /// A reading the office should look at.
    Anomaly {
        /// Serial of the meter, if the reading's meter is known.
        meter: Option<String>,
        /// E.g. `register_went_back`, `conflicting_duplicate`, `unknown_meter`, `outside_service`.
        kind: String,
        /// Human-readable details for the office.
        detail: String,
        /// Time of the reading concerned (UTC).
        at: DateTime<Utc>,
    },
    /// The gateway found its clock off from the central server's by more than the allowed skew.
    ClockSkew {
        /// The gateway's clock at the midpoint of the exchange (UTC).
        gateway_time: DateTime<Utc>,
        /// Central's clock in the same exchange (UTC).
        central_time: DateTime<Utc>,
    },
    /// A voucher redeemed offline, with the signed code itself: central verifies the signature,
    /// the key's window and single use, and records the recharge (id: the redemption id) on its
    /// own. Replaces the pair `Ledger` + `VoucherRedeemed` that outbox format 1 queued.
    VoucherCode {
        /// The code as the gateway accepted it.
        code: String,
        /// When the gateway accepted it (gateway clock, UTC, whole seconds).
        redeemed_at: DateTime<Utc>,
    },
    /// A relay decision with the facts it was made from (protocol 3).
    Decision {
        /// Unique at the gateway (the relay command's id, or the hold's for a held disconnect).
        id: String,
        /// The account decided for.
        account: String,
        /// When it was decided (gateway clock, UTC).
        at: DateTime<Utc>,
        /// `gramgrid_core::decision::DecisionRecord` as JSON: the record both sides store and
        /// replay (its own format, versioned with the core's policy).
        record: String,
    },
    /// The disconnection breaker held a pass's disconnections (protocol 3).
    BreakerHeld {
        /// The hold's id; a supervisor releases it by this id.
        id: String,
        /// When (gateway clock, UTC).
        at: DateTime<Utc>,
        /// The accounts whose disconnection was held.
        accounts: Vec<String>,
        /// Why, in words (`gramgrid_core::breaker::Trip`).
        reasons: Vec<String>,
    },
    /// A supervisor released a breaker hold at the gateway itself (protocol 3; audit).
    BreakerReleased {
        /// The hold released.
        hold_id: String,
        /// Who released it.
        by: String,
        /// Why, as the supervisor wrote it.
        reason: String,
        /// When (gateway clock, UTC).
        at: DateTime<Utc>,
    },
    /// A message for a consumer as a kind and variables (protocol 4; replaces [`UplinkEvent::Alert`]
    /// for consumer messages): central renders it from the registered template in the consumer's
    /// language, unless the gateway sent it through its own modem already.
    Notice {
        /// Unique id: central queues each notice once.
        id: String,
        /// The consumer's account.
        account: String,
        /// A `gramgrid_core::message::Kind` name, or `relay_timeout` (for the office).
        kind: String,
        /// When the gateway decided it (UTC).
        created_at: DateTime<Utc>,
        /// The gateway's own text (for the office, and kinds without a template).
        message: String,
        /// The template's variables (`balance` → `"12.50"`).
        vars: Vec<(String, String)>,
        /// When the gateway sent it through its modem (backhaul down), if it did: central then
        /// records it as sent and never sends it again.
        sent_by_gateway_at: Option<DateTime<Utc>>,
    },
    /// Something a technician did at the gateway, or tried to (protocol 5; audit): central stores
    /// each once, by id, with the gateway of the certificate.
    TechnicianAction {
        /// Unique id (uuid v7 string).
        id: String,
        /// The gateway login name (or the name tried, for a failed login).
        technician: String,
        /// What happened: `login`, `login_failed`, `locked_out`, `logout`, `override`, `redeem`,
        /// `sync_now`, `diagnostics`, `commission`, `replace` (free text at the wire; central
        /// stores it as given).
        action: String,
        /// The account or meter it concerned, if any.
        subject: Option<String>,
        /// What was done, in words (e.g. "reconnect until 2026-11-30 10:00 IST").
        detail: String,
        /// Why, as the technician wrote it, where the action asks for a reason.
        reason: Option<String>,
        /// When (gateway clock, UTC).
        at: DateTime<Utc>,
    },
    /// A technician installed a spare meter from the gateway's stock on an account (protocol 6):
    /// a new connection, or the replacement of the account's failed meter. The old meter's final
    /// register travels as its last reading on the bulk lane; central installs the new one with
    /// the stock's keys, and the account's slabs continue across the swap.
    MeterInstalled {
        /// Unique id (`tech-<gateway>-<hex>`, the technician action's).
        id: String,
        /// The new meter's serial (one of this gateway's stock).
        serial: String,
        /// The account it now serves.
        account: String,
        /// When it was installed (gateway clock, UTC); its first register is read then.
        installed_at: DateTime<Utc>,
        /// Its register at installation in Wh, from its display; None when it could not be read
        /// (the meter's first report is then its baseline).
        first_register_wh: Option<i64>,
        /// The meter it replaced, if any (it leaves service at `installed_at`).
        replaces: Option<String>,
        /// Who installed it (the gateway login name).
        technician: String,
    },
    /// Something a meter reported in its event log (protocol 7; docs/events.md). A meter that
    /// reports the same event again makes the same id, so central stores it once.
    MeterEvent {
        /// `ev-<serial>-<kind>-<unix seconds>`.
        id: String,
        /// The reporting meter's serial.
        meter: String,
        /// `gramgrid_proto::payload::EventKind::name`: `tamper_magnet`, `power_fail`, ...
        kind: String,
        /// When it happened, by the meter's clock (UTC, whole seconds).
        at: DateTime<Utc>,
        /// For `relay_operated`: the gateway's wire command id that moved the relay (0: moved at
        /// the meter).
        command_id: Option<u32>,
    },
    /// A supply outage on the gateway's transformer or feeder (protocol 7): many meters lost power
    /// together. Sent when the gateway finds it and again whenever it learns more (its end, more
    /// meters); the latest record for an id is the outage.
    SupplyOutage {
        /// `outage-<gateway>-<unix seconds of the first power failure>`.
        id: String,
        /// The first of the meters' power failures (meter clocks, UTC).
        started_at: DateTime<Utc>,
        /// When supply came back to most of them; None while it has not.
        ended_at: Option<DateTime<Utc>>,
        /// Serials of the meters that lost power together.
        meters: Vec<String>,
    },
    /// A household drew more than its sanctioned load in several 15-minute intervals of a local
    /// month (protocol 8); sent once per account and month.
    SanctionedLoadExceeded {
        /// `<gateway>:overload:<account>:<YYYY-MM>`.
        id: String,
        /// The account.
        account: String,
        /// The local month, `YYYY-MM`.
        month: String,
        /// Intervals above the sanctioned load so far in the month.
        intervals: u32,
        /// The month's maximum demand so far, in W.
        max_demand_w: i64,
        /// The sanctioned load, in W.
        sanctioned_w: i64,
        /// When the gateway found it.
        at: DateTime<Utc>,
    },
    /// One local day's energy audit of a distribution transformer (protocol 9; docs/energy-audit.md).
    /// Sent once per transformer meter and day, at the first pass after the day ends.
    EnergyAudit(EnergyAuditDay),
}

/// A local day's comparison of what a transformer delivered with what its consumers' meters
/// recorded, and the meters the evidence points to when the loss is above the allowance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnergyAuditDay {
    /// `<gateway>:audit:<transformer serial>:<YYYY-MM-DD>`.
    pub id: String,
    /// The transformer meter's serial.
    pub transformer: String,
    /// The local (IST) day, `YYYY-MM-DD`.
    pub day: String,
    /// 15-minute intervals of the day in which the transformer and every consumer meter had
    /// readings (or a gap they could be spread over); the day's figures cover these only.
    pub intervals_compared: u32,
    /// Consumer meters compared.
    pub meters: u32,
    /// Energy the transformer delivered in the compared intervals, in Wh.
    pub transformer_wh: i64,
    /// Energy the consumers' meters recorded in them, in Wh.
    pub consumers_wh: i64,
    /// The technical loss allowed for (the configured percentage of `transformer_wh`), in Wh.
    pub allowance_wh: i64,
    /// True when the loss beyond the allowance exceeds the configured threshold.
    pub flagged: bool,
    /// The loss (transformer minus consumers, Wh) of each of the day's 96 intervals in order;
    /// `None` where the interval was not compared.
    pub interval_loss_wh: Vec<Option<i64>>,
    /// On a flagged day, the consumer meters the evidence points to, most likely first.
    pub suspects: Vec<AuditSuspect>,
    /// When the gateway made the audit (gateway clock, UTC).
    pub at: DateTime<Utc>,
}

/// One meter the evidence points to on a flagged day: evidence, never an accusation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSuspect {
    /// The meter's serial.
    pub meter: String,
    /// Its account.
    pub account: String,
    /// The ranking score, 0 to 100 (higher: more of the evidence points here).
    pub score: u32,
    /// Why, one entry per kind of evidence.
    pub reasons: Vec<AuditReason>,
}

/// A kind of evidence against a meter on a flagged day: the pure audit's own type, which crosses
/// the sync as it is (its variants are only ever appended).
pub use gramgrid_core::audit::Evidence as AuditReason;

/// Readings of one meter at a regular interval, delta-encoded: reading `i` was taken at
/// `first_at + i × interval_s` and its register is `first_register_wh + Σ register_deltas[..i]`.
/// A gap or an irregular time starts a new block, so the common case costs one small varint per
/// reading before compression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadingBlock {
    /// Serial of the meter.
    pub meter: String,
    /// Time of the first reading, in seconds since the Unix epoch (UTC).
    pub first_at: i64,
    /// Seconds between consecutive readings ([`INTERVAL_S`] when built by [`ReadingBlock::group`]).
    pub interval_s: u32,
    /// Cumulative import register of the first reading, in Wh.
    pub first_register_wh: i64,
    /// Register increase between consecutive readings (negative after a register reset).
    pub register_deltas: Vec<i64>,
}

/// The interval of meter readings (15 minutes).
pub const INTERVAL_S: u32 = 900;

/// A slice of the bulk lane: every reading the gateway stored with arrival sequence in
/// `(after_seq, through_seq]`, grouped by meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadingBatch {
    /// Exclusive lower bound of the arrival sequences in this batch.
    pub after_seq: u64,
    /// Inclusive upper bound of the arrival sequences; central acknowledges this once applied.
    pub through_seq: u64,
    /// The readings, one block per run of regular readings of a meter.
    pub blocks: Vec<ReadingBlock>,
    /// The export registers (net metering, protocol 10) of the readings in `blocks` whose export
    /// register is not 0, grouped the same way; every other reading's export register is 0.
    pub exports: Vec<ReadingBlock>,
}

/// One reading with both registers: (meter, time in seconds since the epoch, import Wh, export Wh).
pub type NetReading = (String, i64, i64, i64);

/// Readings and the export registers that go with them, as a batch or a handover carries them:
/// import blocks, and export blocks for the readings whose export register is not 0.
pub fn group_net(readings: Vec<NetReading>) -> (Vec<ReadingBlock>, Vec<ReadingBlock>) {
    let exports = readings
        .iter()
        .filter(|(_, _, _, export)| *export != 0)
        .map(|(meter, at, _, export)| (meter.clone(), *at, *export))
        .collect();
    let imports = readings
        .into_iter()
        .map(|(meter, at, import, _)| (meter, at, import))
        .collect();
    (ReadingBlock::group(imports), ReadingBlock::group(exports))
}

/// The export register of each reading in `blocks` that has one, by (meter, time). An export for a
/// reading `blocks` does not carry is refused: the sender is broken, and guessing would credit
/// energy nobody metered.
pub fn exports_by_reading<'a>(
    blocks: &'a [ReadingBlock],
    exports: &'a [ReadingBlock],
) -> Result<std::collections::HashMap<(&'a str, i64), i64>, WireError> {
    // Most batches carry no export (no rooftop solar): nothing to index on the ingest path.
    if exports.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    // Times only: a hostile block's registers may overflow, and the receiver checks them later.
    let known: std::collections::HashSet<(&str, i64)> = blocks
        .iter()
        .flat_map(|b| b.times().map(move |at| (b.meter.as_str(), at)))
        .collect();
    let mut by_reading = std::collections::HashMap::new();
    for block in exports {
        let mut export = block.first_register_wh;
        let deltas = std::iter::once(0).chain(block.register_deltas.iter().copied());
        for (at, delta) in block.times().zip(deltas) {
            export = export
                .checked_add(delta)
                .ok_or_else(|| WireError::AbsurdExport {
                    meter: block.meter.clone(),
                })?;
            let key = (block.meter.as_str(), at);
            if !known.contains(&key) {
                return Err(WireError::OrphanExport {
                    meter: block.meter.clone(),
                    at,
                });
            }
            by_reading.insert(key, export);
        }
    }
    Ok(by_reading)
}

/// Gateway → central.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRequest {
    /// The sender's [`PROTOCOL_VERSION`].
    pub protocol: u16,
    /// The gateway's clock when it sent this (for skew detection); identity comes from the TLS
    /// certificate, never from the body.
    pub sent_at: DateTime<Utc>,
    /// Unacknowledged priority records, in sequence order.
    pub priority: Vec<PriorityRecord>,
    /// The next slice of the bulk lane, if any readings are unacknowledged.
    pub readings: Option<ReadingBatch>,
    /// The highest downlink sequence the gateway has applied.
    pub downlink_applied: u64,
    /// Which database is talking and what it last heard (protocol 2; None from protocol 1).
    pub identity: Option<GatewayIdentity>,
    /// The gateway's report of its own health (protocol 11): sent with the first exchange of a
    /// session, None in the others and from older gateways.
    pub status: Option<GatewayStatus>,
}

/// What a gateway reports about itself (the office console's gateway pages): what central cannot
/// see from the records alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// The gramgrid version the gateway runs.
    pub software: String,
    /// When its daemon started (UTC, by the gateway's clock).
    pub started_at: DateTime<Utc>,
    /// Priority records (money, relay, alerts) not yet acknowledged by central.
    pub priority_backlog: u64,
    /// Readings not yet acknowledged by central.
    pub readings_backlog: u64,
    /// The oldest of those readings' time, if any.
    pub oldest_unsent: Option<DateTime<Utc>>,
    /// The meter link's counters since the daemon started; None when no radio runs.
    pub radio: Option<RadioCounters>,
    /// Free and total bytes on the data directory's file system, if known.
    pub disk: Option<DiskSpace>,
}

/// The meter link's counters since the gateway's daemon started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RadioCounters {
    /// Authentic uplinks accepted.
    pub uplinks: u64,
    /// Polls no meter answered.
    pub silences: u64,
    /// Downlinks sent (polls, assignments, relay commands).
    pub downlinks: u64,
    /// Rejected uplinks per reason (`bad_mic`, `replayed_fcnt`, ...), only reasons that occurred.
    pub rejects: Vec<(String, u64)>,
}

impl RadioCounters {
    /// Rejected uplinks of every reason.
    pub fn rejected(&self) -> u64 {
        self.rejects.iter().map(|(_, n)| n).sum()
    }
}

/// Space on a file system, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpace {
    /// Bytes an unprivileged writer can still use.
    pub free: u64,
    /// The file system's size.
    pub total: u64,
}

/// A gateway database's identity in an exchange: central tells from it a gateway whose database
/// was replaced (another `instance`) or restored from a backup (an `exchange` number it has seen
/// before), and resynchronises the lanes from the gateway's own marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayIdentity {
    /// Random, made once when the database was created; kept by backups and restores.
    pub instance: u64,
    /// This exchange's number: the database counts its exchanges and stores the count before it
    /// sends, so every exchange of one database history has a higher number than the last.
    pub exchange: u64,
    /// The priority-lane acknowledgement this database holds.
    pub priority_acked: u64,
    /// The readings-lane acknowledgement this database holds.
    pub readings_acked: u64,
}

/// Protocol 1's request: [`UploadRequest`] without `identity` (an older gateway).
#[derive(Deserialize)]
struct UploadRequestV1 {
    protocol: u16,
    sent_at: DateTime<Utc>,
    priority: Vec<PriorityRecord>,
    readings: Option<ReadingBatchV9>,
    downlink_applied: u64,
}

/// Protocols 2 to 9's request: the batch has no export registers.
#[derive(Deserialize)]
struct UploadRequestV9 {
    protocol: u16,
    sent_at: DateTime<Utc>,
    priority: Vec<PriorityRecord>,
    readings: Option<ReadingBatchV9>,
    downlink_applied: u64,
    identity: Option<GatewayIdentity>,
}

/// Protocol 10's request: [`UploadRequest`] without `status` (the tests encode one as such a
/// gateway did).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct UploadRequestV10 {
    protocol: u16,
    sent_at: DateTime<Utc>,
    priority: Vec<PriorityRecord>,
    readings: Option<ReadingBatch>,
    downlink_applied: u64,
    identity: Option<GatewayIdentity>,
}

/// Protocols 1 to 9's [`ReadingBatch`]: without `exports`.
#[derive(Deserialize)]
struct ReadingBatchV9 {
    after_seq: u64,
    through_seq: u64,
    blocks: Vec<ReadingBlock>,
}

impl From<ReadingBatchV9> for ReadingBatch {
    fn from(old: ReadingBatchV9) -> ReadingBatch {
        ReadingBatch {
            after_seq: old.after_seq,
            through_seq: old.through_seq,
            blocks: old.blocks,
            exports: Vec::new(),
        }
    }
}

/// The first field of every request: its protocol, which says the shape of the rest.
#[derive(Deserialize)]
struct RequestProtocol {
    protocol: u16,
}

/// Decodes a request of any protocol this gramgrid speaks, in the shape its protocol (the first
/// field) says: a newer shape would misread an older body rather than fail on it.
pub fn decode_request(body: &[u8]) -> Result<UploadRequest, WireError> {
    let RequestProtocol { protocol } = decode(body)?;
    match protocol {
        1 => {
            let old: UploadRequestV1 = decode(body)?;
            Ok(UploadRequest {
                protocol: old.protocol,
                sent_at: old.sent_at,
                priority: old.priority,
                readings: old.readings.map(ReadingBatch::from),
                downlink_applied: old.downlink_applied,
                identity: None,
                status: None,
            })
        }
        2..=9 => {
            let old: UploadRequestV9 = decode(body)?;
            Ok(UploadRequest {
                protocol: old.protocol,
                sent_at: old.sent_at,
                priority: old.priority,
                readings: old.readings.map(ReadingBatch::from),
                downlink_applied: old.downlink_applied,
                identity: old.identity,
                status: None,
            })
        }
        10 => {
            let old: UploadRequestV10 = decode(body)?;
            Ok(UploadRequest {
                protocol: old.protocol,
                sent_at: old.sent_at,
                priority: old.priority,
                readings: old.readings,
                downlink_applied: old.downlink_applied,
                identity: old.identity,
                status: None,
            })
        }
        _ => decode(body),
    }
}

/// Something the central server tells a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DownlinkEvent {
    /// An account assigned to this gateway, created or updated.
    Account {
        /// The account id.
        id: String,
        /// The consumer's name.
        consumer_name: String,
        /// Tariff category.
        category: WireCategory,
        /// Phone number for notifications, if any.
        phone: Option<String>,
        /// When the account was opened (UTC).
        created_at: DateTime<Utc>,
    },
    /// A meter of one of this gateway's accounts, installed or updated.
    Meter {
        /// The meter's serial.
        serial: String,
        /// The account it is installed on.
        account: String,
        /// When it was installed (UTC); readings before this are refused.
        installed_at: DateTime<Utc>,
        /// The register read at installation in Wh, if known: it becomes the meter's first reading.
        initial_register_wh: Option<i64>,
        /// ABP session keys (hex) for the meter link; absent for meters provisioned otherwise.
        keys: Option<MeterKeys>,
    },
    /// Recharges, adjustments and emergency credit recorded at central.
    Ledger(WireLedgerEvent),
    /// A published tariff version (stored by its id; a re-publish replaces it).
    Tariff(WireTariffVersion),
    /// A published enforcement policy.
    Policy {
        /// Policy version; central only ever publishes higher ones.
        version: u64,
        /// The policy settings.
        policy: WirePolicy,
    },
    /// The voucher public keys with their issuing windows and revocations.
    VoucherKeys(Vec<PublishedKey>),
    /// This voucher was redeemed elsewhere (or cancelled): refuse it here.
    VoucherRevoked {
        /// [`Voucher::redemption_id`] of the voucher.
        redemption_id: String,
    },
    /// The account was moved to another gateway (or unassigned): stop serving it here. Its meters
    /// leave service and its open relay commands are withdrawn; its history stays. Sent only to
    /// protocol-2 gateways (appended after protocol 1, which cannot decode it).
    AccountRemoved {
        /// The account id.
        id: String,
        /// The gateway that serves it now, if any.
        to_gateway: Option<String>,
    },
    /// Readings central holds of a meter handed over from another gateway: the gateway ingests them
    /// as late readings, so it rates the meter's history exactly as central did. Sent only to
    /// protocol-2 gateways.
    Readings {
        /// The readings, one block per run of regular readings of a meter.
        blocks: Vec<ReadingBlock>,
    },
    /// The guardrails of a published policy, sent right after its [`DownlinkEvent::Policy`] record.
    PolicyRules {
        /// The policy version they belong to.
        version: u64,
        /// The rules.
        rules: model::WirePolicyRules,
    },
    /// An account's protection changed: a protected account is never disconnected automatically.
    AccountProtection {
        /// The account id.
        id: String,
        /// Why it is protected (e.g. "life support"); None: no longer protected.
        protected: Option<String>,
    },
    /// A supervisor released a hold of the disconnection breaker: its accounts may be disconnected
    /// in the next pass, once.
    BreakerRelease {
        /// The hold released.
        hold_id: String,
        /// Who released it (the API token's name).
        by: String,
        /// Why, as the supervisor wrote it.
        reason: String,
        /// When (central clock, UTC).
        at: DateTime<Utc>,
    },
    /// Central found this gateway's database restored from a backup or replaced: the gateway
    /// holds disconnections for a while.
    DatabaseRestored {
        /// When central found it (UTC).
        at: DateTime<Utc>,
    },
    /// The language the account's consumer reads (protocol 4), for messages the gateway sends
    /// itself: `en` or `hi`.
    AccountLanguage {
        /// The account.
        account: String,
        /// ISO 639-1 code.
        language: String,
    },
    /// A technician account, created or changed at central (protocol 5): sent to every gateway, so
    /// technicians can log in to the gateway's local web app with no backhaul.
    Technician {
        /// Login name: 3–32 chars of lowercase ASCII letters, digits, '.', '-', '_'.
        name: String,
        /// The person's name as shown on pages and in the audit.
        full_name: String,
        /// `viewer`, `technician` or `supervisor`.
        role: String,
        /// Argon2id hash in PHC string form (never the password).
        password_hash: String,
        /// false: disabled (logins refused at the gateway).
        active: bool,
        /// When central last changed it (UTC).
        updated_at: DateTime<Utc>,
    },
    /// A spare meter in this gateway's stock (protocol 6): on no account yet, with its radio
    /// keys, so a technician can commission it or swap it for a failed one with no backhaul.
    StockMeter {
        /// The serial on its nameplate.
        serial: String,
        /// Its ABP session keys.
        keys: MeterKeys,
    },
    /// The load an account's connection is sanctioned for (protocol 8); None: not recorded.
    AccountSanctionedLoad {
        /// The account id.
        id: String,
        /// The sanctioned load, in W.
        watts: Option<i64>,
    },
    /// What a published tariff version has beyond [`DownlinkEvent::Tariff`] (protocol 8): its
    /// time-of-day slots and demand charge, sent right after it; a version with neither has none.
    TariffDetails {
        /// The tariff version's id.
        version_id: String,
        /// Its time-of-day slots.
        tod: Vec<model::WireTodSlot>,
        /// Its demand charge, paise per kW of the month's maximum demand.
        demand_paise_per_kw: i64,
    },
    /// Net metering's banking rule of a published tariff version (protocol 10), sent right after
    /// its [`DownlinkEvent::Tariff`] when it banks export.
    TariffNetMetering {
        /// The tariff version's id.
        version_id: String,
        /// A month's surplus export is banked for the months after.
        export_banking: bool,
        /// What units still banked at the end of March are paid at, paise per kWh (0: they lapse).
        export_settlement_paise_per_kwh: i64,
    },
    /// The distribution transformer's meter at this gateway (protocol 9): read like a household's,
    /// never billed; its readings feed the energy audit and stay at the gateway.
    TransformerMeter {
        /// The meter's serial.
        serial: String,
        /// When it was installed (UTC); readings before this are refused.
        installed_at: DateTime<Utc>,
        /// ABP session keys (hex) for the meter link.
        keys: MeterKeys,
    },
    /// [`DownlinkEvent::Readings`] of a handed-over meter with an export register (protocol 10):
    /// the readings, and the export registers of those whose export is not 0, in one record so
    /// the gateway never rates a reading without its export.
    NetReadings {
        /// The readings, one block per run of regular readings of a meter.
        blocks: Vec<ReadingBlock>,
        /// Export registers, grouped the same way ([`exports_by_reading`]).
        exports: Vec<ReadingBlock>,
    },
    /// The DLMS/COSEM security of a meter (protocol 12), sent right after its
    /// [`DownlinkEvent::Meter`] or [`DownlinkEvent::TransformerMeter`] record: the meter speaks
    /// DLMS with these keys (docs/dlms.md section 7); None: it speaks payload v1 (again).
    MeterDlms {
        /// The meter's serial.
        serial: String,
        /// Its system title and keys; None: not a DLMS meter.
        dlms: Option<WireDlms>,
    },
}

impl DownlinkEvent {
    /// The oldest protocol that can decode this record; central skips it for older gateways.
    pub fn min_protocol(&self) -> u16 {
        match self {
            DownlinkEvent::AccountRemoved { .. } | DownlinkEvent::Readings { .. } => 2,
            DownlinkEvent::Ledger(event) if event.kind == WireEventKind::Arrears => 3,
            DownlinkEvent::Ledger(event) if event.kind == WireEventKind::DemandCharge => 8,
            DownlinkEvent::PolicyRules { .. }
            | DownlinkEvent::AccountProtection { .. }
            | DownlinkEvent::BreakerRelease { .. }
            | DownlinkEvent::DatabaseRestored { .. } => 3,
            DownlinkEvent::AccountLanguage { .. } => 4,
            DownlinkEvent::Technician { .. } => 5,
            DownlinkEvent::StockMeter { .. } => 6,
            DownlinkEvent::TariffDetails { .. } | DownlinkEvent::AccountSanctionedLoad { .. } => 8,
            DownlinkEvent::TransformerMeter { .. } => 9,
            DownlinkEvent::NetReadings { .. } | DownlinkEvent::TariffNetMetering { .. } => 10,
            DownlinkEvent::Ledger(event) if event.kind == WireEventKind::ExportCredit => 10,
            DownlinkEvent::MeterDlms { .. } => 12,
            _ => 1,
        }
    }
}

/// LoRaWAN ABP session keys of one meter, hex.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterKeys {
    /// The meter's DevAddr (as a number; displayed MSB first).
    pub dev_addr: u32,
    /// Network session key, 32 hex digits MSB first. Never log it.
    pub nwk_skey: String,
    /// Application session key, 32 hex digits MSB first. Never log it.
    pub app_skey: String,
}

impl std::fmt::Debug for MeterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MeterKeys {{ dev_addr: {:08X}, keys: <redacted> }}",
            self.dev_addr
        )
    }
}

/// The DLMS/COSEM security of one meter, hex (docs/dlms.md section 7).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireDlms {
    /// The meter's system title, 16 hex digits.
    pub system_title: String,
    /// Global unicast encryption key (EK), 32 hex digits. Never log it.
    pub ek: String,
    /// Authentication key (AK), 32 hex digits. Never log it.
    pub ak: String,
}

impl WireDlms {
    /// The security these fields hold, validated as the meter manifest validates them; the error
    /// names the field and its problem, never the value.
    pub fn security(&self) -> Result<MeterSecurity, (&'static str, crate::manifest::FieldProblem)> {
        let fields = crate::manifest::DlmsFields {
            protocol: Some("dlms"),
            dlms_ek: Some(&self.ek),
            dlms_ak: Some(&self.ak),
            system_title: Some(&self.system_title),
        };
        crate::manifest::dlms_security(fields)?
            // Unreachable: protocol "dlms" always yields Some; a typed error keeps it panic-free.
            .ok_or(("protocol", crate::manifest::FieldProblem::Missing))
    }
}

impl From<&MeterSecurity> for WireDlms {
    fn from(security: &MeterSecurity) -> Self {
        WireDlms {
            system_title: hex::encode_upper(security.system_title),
            ek: hex::encode_upper(security.keys.encryption),
            ak: hex::encode_upper(security.keys.authentication),
        }
    }
}

impl std::fmt::Debug for WireDlms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WireDlms {{ system_title: {}, keys: <redacted> }}",
            self.system_title
        )
    }
}

/// A downlink record with its per-gateway sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownlinkRecord {
    /// Position in this gateway's downlink log; the gateway applies each record once, in order.
    pub seq: u64,
    /// What the gateway must apply.
    pub event: DownlinkEvent,
}

/// Central → gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadResponse {
    /// Central's [`PROTOCOL_VERSION`].
    pub protocol: u16,
    /// Central's clock when it answered (UTC), for the gateway's skew measurement.
    pub central_time: DateTime<Utc>,
    /// Highest contiguous priority sequence stored (0: none).
    pub priority_acked: u64,
    /// Highest reading arrival sequence stored (0: none).
    pub readings_acked: u64,
    /// Downlink records above the request's `downlink_applied`, in sequence order (at most 500).
    pub downlink: Vec<DownlinkRecord>,
    /// More downlink records are waiting: exchange again.
    pub more: bool,
}

/// Why a body could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// zstd failed to compress, or the body is not valid zstd (or inflates past the limit).
    #[error("sync body is not valid zstd: {0}")]
    Compression(std::io::Error),
    /// The compressed body exceeds [`MAX_BODY_BYTES`].
    #[error("sync body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The inflated body is not valid postcard for the expected message.
    #[error("sync body does not decode: {0}")]
    Decode(postcard::Error),
    /// The message could not be serialized.
    #[error("sync body does not encode: {0}")]
    Encode(postcard::Error),
    /// The peer's protocol version is not one this gramgrid speaks.
    #[error("peer speaks sync protocol {found}, this gramgrid speaks {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}; upgrade the older side")]
    Version {
        /// The version the peer sent.
        found: u16,
    },
    /// A batch's export registers overflow.
    #[error("the batch's export registers of meter {meter} overflow; the sender is broken")]
    AbsurdExport {
        /// The meter named by the export block.
        meter: String,
    },
    /// A batch carries an export register for a reading it does not carry.
    #[error("the batch carries an export register for meter {meter} at {at} but no reading there; the sender is broken")]
    OrphanExport {
        /// The meter named by the export block.
        meter: String,
        /// The reading time (seconds since the epoch) with no reading.
        at: i64,
    },
}

/// Encodes a message as postcard, compressed with zstd.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    let raw = postcard::to_stdvec(message).map_err(WireError::Encode)?;
    COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        let compressor = match slot.as_mut() {
            Some(compressor) => compressor,
            None => slot.insert(
                zstd::bulk::Compressor::new(COMPRESSION_LEVEL).map_err(WireError::Compression)?,
            ),
        };
        compressor.compress(&raw).map_err(WireError::Compression)
    })
}

/// zstd level of every sync body: the link is slow and metered, the bodies are small.
const COMPRESSION_LEVEL: i32 = 19;

thread_local! {
    /// A level-19 context is megabytes of tables; each thread keeps one instead of building it per
    /// body (it was most of the cost of a small exchange).
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decodes a body made by [`encode`], refusing bodies that inflate past [`MAX_BODY_BYTES`].
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(WireError::TooLarge);
    }
    let raw = zstd::bulk::decompress(body, MAX_BODY_BYTES).map_err(WireError::Compression)?;
    postcard::from_bytes(&raw).map_err(WireError::Decode)
}

/// Checks the protocol version of a decoded message.
pub fn check_version(found: u16) -> Result<(), WireError> {
    if (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&found) {
        Ok(())
    } else {
        Err(WireError::Version { found })
    }
}

impl ReadingBlock {
    /// Builds blocks from (meter, at, register) triples, readings in time order per meter.
    pub fn group(mut readings: Vec<(String, i64, i64)>) -> Vec<ReadingBlock> {
        readings.sort();
        let mut blocks: Vec<ReadingBlock> = Vec::new();
        for (meter, at, register) in readings {
            match blocks.last_mut() {
                Some(block) if block.meter == meter && at == block.next_at() => {
                    let last_register = block.last_register();
                    block.register_deltas.push(register - last_register);
                }
                _ => blocks.push(ReadingBlock {
                    meter,
                    first_at: at,
                    interval_s: INTERVAL_S,
                    first_register_wh: register,
                    register_deltas: Vec::new(),
                }),
            }
        }
        blocks
    }

    /// Number of readings in the block.
    pub fn len(&self) -> usize {
        self.register_deltas.len() + 1
    }

    /// Never true: a block holds at least its first reading.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The times of the block's readings, in seconds since the epoch (saturating: a hostile block
    /// cannot overflow them).
    pub fn times(&self) -> impl Iterator<Item = i64> + '_ {
        let step = i64::from(self.interval_s);
        (0..self.len()).map(move |i| {
            self.first_at
                .saturating_add(step.saturating_mul(i64::try_from(i).unwrap_or(i64::MAX)))
        })
    }

    fn next_at(&self) -> i64 {
        self.first_at + i64::from(self.interval_s) * self.len() as i64
    }

    fn last_register(&self) -> i64 {
        self.first_register_wh + self.register_deltas.iter().sum::<i64>()
    }

    /// The (time, register) pairs of the block.
    pub fn readings(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        let step = i64::from(self.interval_s);
        std::iter::once(0)
            .chain(self.register_deltas.iter().copied())
            .scan(self.first_register_wh, |register, delta| {
                *register += delta;
                Some(*register)
            })
            .enumerate()
            .map(move |(i, register)| (self.first_at + step * i as i64, register))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gramgrid_core::ledger::LedgerEvent;
    use gramgrid_core::policy::PolicyConfig;
    use proptest::prelude::*;
    use WireCategory as Category;
    use WireRelayAction as RelayAction;
    use WireRelayState as RelayState;

    proptest! {
        #[test]
        fn reading_blocks_round_trip(points in proptest::collection::btree_set((0u8..5, 0i64..100_000), 0..200), seed in any::<i64>()) {
            let readings: Vec<(String, i64, i64)> = points
                .iter()
                .map(|(m, i)| (format!("M{m}"), 1_800_000_000 + i * 900, (seed % 1_000_000).abs() + i * 7 - i64::from(*m)))
                .collect();
            let blocks = ReadingBlock::group(readings.clone());
            let mut back: Vec<(String, i64, i64)> = blocks
                .iter()
                .flat_map(|b| b.readings().map(move |(at, r)| (b.meter.clone(), at, r)))
                .collect();
            back.sort();
            let mut expected = readings;
            expected.sort();
            prop_assert_eq!(back, expected);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<UploadRequest>(&bytes);
            let _ = decode::<UploadResponse>(&bytes);
        }
    }

    proptest! {
        // A case takes microseconds; about 8 % of them decode to a (different) request.
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Random bytes rarely get past zstd's magic number, so this mutates a real request's
        /// postcard bytes and compresses them again: what reaches the decoder is well-framed and
        /// wrong. Decoding, and reading what decoded, must not panic; what decodes re-encodes to
        /// the same message.
        #[test]
        fn a_mutated_request_past_zstd_decodes_or_is_refused(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..8), 1..4),
        ) {
            let mut raw = postcard::to_allocvec(&sample_request()).unwrap();
            for (index, byte, how) in edits {
                let at = index.index(raw.len().max(1));
                // Mostly changed bytes (they keep the framing), sometimes one more or a cut.
                match how {
                    0..=5 if !raw.is_empty() => raw[at] = byte,
                    7 => raw.truncate(at),
                    _ => raw.insert(at.min(raw.len()), byte),
                }
            }
            let body = zstd::bulk::compress(&raw, 3).unwrap();
            if let Ok(request) = decode_request(&body) {
                if let Some(batch) = &request.readings {
                    let _ = exports_by_reading(&batch.blocks, &batch.exports);
                    for block in &batch.blocks {
                        prop_assert!(block.times().count() == block.len());
                    }
                }
                let again = decode_request(&encode(&request).unwrap()).unwrap();
                prop_assert_eq!(again, request);
            }
        }
    }

    /// A request with something in every part: priority records, readings with exports, the
    /// gateway's identity and status.
    fn sample_request() -> UploadRequest {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let ledger = LedgerEvent {
            id: "gw:fixed:A1:2027-01-15".into(),
            account: "A1".into(),
            at,
            kind: gramgrid_core::ledger::EventKind::FixedCharge,
            amount_paise: 194,
            expires_at: None,
        };
        let readings = |base: i64| {
            ReadingBlock::group(
                (0..6)
                    .map(|i| ("MTR001".to_string(), 1_800_000_000 + i * 900, base + i * 37))
                    .collect(),
            )
        };
        UploadRequest {
            protocol: PROTOCOL_VERSION,
            sent_at: at,
            priority: vec![PriorityRecord {
                seq: 7,
                event: UplinkEvent::Ledger((&ledger).into()),
            }],
            readings: Some(ReadingBatch {
                after_seq: 10,
                through_seq: 16,
                blocks: readings(120_000),
                exports: readings(4_000),
            }),
            downlink_applied: 3,
            identity: Some(GatewayIdentity {
                instance: 42,
                exchange: 9,
                priority_acked: 6,
                readings_acked: 10,
            }),
            status: Some(GatewayStatus {
                software: "0.1.0".into(),
                started_at: at,
                priority_backlog: 1,
                readings_backlog: 6,
                oldest_unsent: Some(at),
                radio: Some(RadioCounters {
                    uplinks: 100,
                    silences: 2,
                    downlinks: 5,
                    rejects: vec![("mic".into(), 1)],
                }),
                disk: Some(DiskSpace {
                    free: 1 << 30,
                    total: 1 << 32,
                }),
            }),
        }
    }

    /// Postcard is not self-describing: a `skip_serializing_if` anywhere in these types would make
    /// bodies undecodable. Every variant, with optional fields empty, must round-trip.
    #[test]
    fn every_event_variant_round_trips() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let ledger = LedgerEvent {
            id: "e1".into(),
            account: "A1".into(),
            at,
            kind: gramgrid_core::ledger::EventKind::Recharge,
            amount_paise: 100,
            expires_at: None,
        };
        let secret = crate::voucher::SigningSecret::generate(1);
        let voucher = crate::voucher::Voucher {
            key_id: 1,
            voucher_id: 9,
            account: "A1".into(),
            amount_paise: 5,
            issued_at: at,
            expires_at: at + chrono::Duration::days(1),
        };
        let downlink: Vec<DownlinkEvent> = vec![
            DownlinkEvent::Account {
                id: "A1".into(),
                consumer_name: "X".into(),
                category: Category::Domestic,
                phone: None,
                created_at: at,
            },
            DownlinkEvent::Meter {
                serial: "M1".into(),
                account: "A1".into(),
                installed_at: at,
                initial_register_wh: None,
                keys: None,
            },
            DownlinkEvent::Ledger((&ledger).into()),
            DownlinkEvent::Tariff(
                (&gramgrid_core::tariff::TariffBook::builtin().versions()[0]).into(),
            ),
            DownlinkEvent::Policy {
                version: 3,
                policy: (&PolicyConfig::default()).into(),
            },
            DownlinkEvent::VoucherKeys(vec![PublishedKey {
                key_id: 1,
                public_key: secret.public_key_hex(),
                issue_from: at,
                issue_until: None,
                revoked: false,
            }]),
            DownlinkEvent::VoucherRevoked {
                redemption_id: voucher.redemption_id(),
            },
            DownlinkEvent::AccountLanguage {
                account: "A1".into(),
                language: "hi".into(),
            },
            DownlinkEvent::Technician {
                name: "asha.v".into(),
                full_name: "Asha Verma".into(),
                role: "technician".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                active: false,
                updated_at: at,
            },
            DownlinkEvent::StockMeter {
                serial: "M9".into(),
                keys: MeterKeys {
                    dev_addr: 0x2601_0009,
                    nwk_skey: "00112233445566778899aabbccddeeff".into(),
                    app_skey: "ffeeddccbbaa99887766554433221100".into(),
                },
            },
            DownlinkEvent::TariffDetails {
                version_id: "tod-2026".into(),
                tod: vec![model::WireTodSlot {
                    name: "peak".into(),
                    from_minute: 1_080,
                    to_minute: 1_320,
                    percent: 25.0,
                }],
                demand_paise_per_kw: 12_000,
            },
            DownlinkEvent::TransformerMeter {
                serial: "DT-01".into(),
                installed_at: at,
                keys: MeterKeys {
                    dev_addr: 0x2601_0100,
                    nwk_skey: "00112233445566778899aabbccddeeff".into(),
                    app_skey: "ffeeddccbbaa99887766554433221100".into(),
                },
            },
            DownlinkEvent::MeterDlms {
                serial: "M1".into(),
                dlms: Some(WireDlms {
                    system_title: "4D4D4D0000BC614E".into(),
                    ek: "000102030405060708090A0B0C0D0E0F".into(),
                    ak: "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF".into(),
                }),
            },
            DownlinkEvent::MeterDlms {
                serial: "M2".into(),
                dlms: None,
            },
        ];
        let uplink: Vec<UplinkEvent> = vec![
            UplinkEvent::Ledger((&ledger).into()),
            UplinkEvent::VoucherRedeemed {
                voucher,
                redeemed_at: at,
            },
            UplinkEvent::RelayCommand {
                id: "c".into(),
                meter: "M1".into(),
                action: RelayAction::Connect,
                state: "sent".into(),
                at,
                detail: String::new(),
            },
            UplinkEvent::RelayState {
                meter: "M1".into(),
                state: RelayState::Unknown,
                at,
            },
            UplinkEvent::Alert {
                id: "a".into(),
                account: "A1".into(),
                kind: "low_balance".into(),
                created_at: at,
                message: "m".into(),
            },
            UplinkEvent::Override {
                id: "o".into(),
                account: "A1".into(),
                action: RelayAction::Connect,
                until: at,
                technician: "t".into(),
                reason: "r".into(),
                created_at: at,
            },
            UplinkEvent::Anomaly {
                meter: None,
                kind: "k".into(),
                detail: "d".into(),
                at,
            },
            UplinkEvent::ClockSkew {
                gateway_time: at,
                central_time: at,
            },
            UplinkEvent::Notice {
                id: "n".into(),
                account: "A1".into(),
                kind: "disconnect_notice".into(),
                created_at: at,
                message: "बैलेंस समाप्त".into(),
                vars: vec![("balance".into(), "-1.50".into())],
                sent_by_gateway_at: Some(at),
            },
            UplinkEvent::TechnicianAction {
                id: "0193a1b2-0000-7000-8000-000000000001".into(),
                technician: "asha.v".into(),
                action: "login_failed".into(),
                subject: None,
                detail: "wrong password".into(),
                reason: None,
                at,
            },
            UplinkEvent::MeterInstalled {
                id: "tech-gw-1-00ff".into(),
                serial: "M9".into(),
                account: "A1".into(),
                installed_at: at,
                first_register_wh: Some(12),
                replaces: Some("M1".into()),
                technician: "asha.v".into(),
            },
            UplinkEvent::TechnicianAction {
                id: "0193a1b2-0000-7000-8000-000000000002".into(),
                technician: "asha.v".into(),
                action: "override".into(),
                subject: Some("A1".into()),
                detail: "reconnect until 2026-11-30 10:00 IST".into(),
                reason: Some("medical equipment".into()),
                at,
            },
            UplinkEvent::MeterEvent {
                id: "ev-M1-tamper_magnet-1795845617".into(),
                meter: "M1".into(),
                kind: "tamper_magnet".into(),
                at,
                command_id: None,
            },
            UplinkEvent::SupplyOutage {
                id: "outage-gw-1-1795845617".into(),
                started_at: at,
                ended_at: None,
                meters: vec!["M1".into(), "M2".into()],
            },
            UplinkEvent::SanctionedLoadExceeded {
                id: "gw-1:overload:A1:2026-11".into(),
                account: "A1".into(),
                month: "2026-11".into(),
                intervals: 4,
                max_demand_w: 3_200,
                sanctioned_w: 2_000,
                at,
            },
            UplinkEvent::EnergyAudit(EnergyAuditDay {
                id: "gw-1:audit:DT-01:2026-11-29".into(),
                transformer: "DT-01".into(),
                day: "2026-11-29".into(),
                intervals_compared: 95,
                meters: 2,
                transformer_wh: 10_000,
                consumers_wh: 9_000,
                allowance_wh: 500,
                flagged: true,
                interval_loss_wh: vec![Some(10), None, Some(-3)],
                suspects: vec![AuditSuspect {
                    meter: "M1".into(),
                    account: "A1".into(),
                    score: 80,
                    reasons: vec![
                        AuditReason::Tamper {
                            kinds: vec!["tamper_magnet".into()],
                        },
                        AuditReason::NearZero { recorded_wh: 12 },
                        AuditReason::FallsWithLoss {
                            usual_wh: 4_200,
                            recorded_wh: 150,
                        },
                    ],
                }],
                at,
            }),
        ];
        for event in downlink {
            let record = DownlinkRecord { seq: 1, event };
            assert_eq!(
                decode::<DownlinkRecord>(&encode(&record).unwrap()).unwrap(),
                record
            );
        }
        for event in uplink {
            let record = PriorityRecord { seq: 1, event };
            assert_eq!(
                decode::<PriorityRecord>(&encode(&record).unwrap()).unwrap(),
                record
            );
        }
    }

    #[test]
    fn export_registers_travel_beside_their_readings_and_an_orphan_is_refused() {
        let (blocks, exports) = group_net(vec![
            ("M1".into(), 0, 10, 0),
            ("M1".into(), 900, 25, 300),
            ("M1".into(), 1_800, 30, 450),
            ("M2".into(), 0, 5, 0),
        ]);
        assert_eq!(blocks.iter().map(ReadingBlock::len).sum::<usize>(), 4);
        let by_reading = exports_by_reading(&blocks, &exports).unwrap();
        assert_eq!(by_reading.len(), 2);
        assert_eq!(by_reading[&("M1", 1_800)], 450);
        assert_eq!(by_reading.get(&("M1", 0)), None); // export 0: not carried
                                                      // Hostile registers are refused, never overflowed.
        let mut huge = blocks.clone();
        huge[0].register_deltas = vec![i64::MAX / 2; 2];
        assert_eq!(exports_by_reading(&huge, &exports).unwrap().len(), 2);
        let mut huge_exports = exports.clone();
        huge_exports[0].first_register_wh = i64::MAX;
        assert!(matches!(
            exports_by_reading(&blocks, &huge_exports),
            Err(WireError::AbsurdExport { meter }) if meter == "M1"
        ));
        let orphan = ReadingBlock::group(vec![("M2".into(), 900, 7)]);
        assert!(matches!(
            exports_by_reading(&blocks, &orphan),
            Err(WireError::OrphanExport { meter, at: 900 }) if meter == "M2"
        ));
    }

    #[test]
    fn a_protocol_10_request_decodes_without_a_status() {
        let identity = GatewayIdentity {
            instance: 42,
            exchange: 7,
            priority_acked: 3,
            readings_acked: 2,
        };
        let readings = ReadingBatch {
            after_seq: 2,
            through_seq: 4,
            blocks: ReadingBlock::group(vec![("M1".into(), 0, 10), ("M1".into(), 900, 25)]),
            exports: ReadingBlock::group(vec![("M1".into(), 900, 4_000)]),
        };
        let old = UploadRequestV10 {
            protocol: 10,
            sent_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            priority: Vec::new(),
            readings: Some(readings.clone()),
            downlink_applied: 5,
            identity: Some(identity),
        };
        let decoded = decode_request(&encode(&old).unwrap()).unwrap();
        assert_eq!(
            decoded,
            UploadRequest {
                protocol: 10,
                sent_at: old.sent_at,
                priority: Vec::new(),
                readings: Some(readings),
                downlink_applied: 5,
                identity: Some(identity),
                status: None,
            }
        );
    }

    #[test]
    fn messages_round_trip_and_versions_are_checked() {
        let request = UploadRequest {
            protocol: PROTOCOL_VERSION,
            sent_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            priority: vec![PriorityRecord {
                seq: 1,
                event: UplinkEvent::RelayState {
                    meter: "M1".into(),
                    state: RelayState::Disconnected,
                    at: DateTime::from_timestamp(1_800_000_100, 0).unwrap(),
                },
            }],
            readings: Some(ReadingBatch {
                after_seq: 0,
                through_seq: 3,
                blocks: ReadingBlock::group(vec![
                    ("M1".into(), 0, 10),
                    ("M1".into(), 900, 25),
                    ("M2".into(), 0, 5),
                ]),
                exports: ReadingBlock::group(vec![("M1".into(), 900, 4_000)]),
            }),
            downlink_applied: 7,
            identity: Some(GatewayIdentity {
                instance: u64::MAX - 3,
                exchange: 1 << 63,
                priority_acked: 9,
                readings_acked: 3,
            }),
            status: Some(GatewayStatus {
                software: "0.9.0".into(),
                started_at: DateTime::from_timestamp(1_799_990_000, 0).unwrap(),
                priority_backlog: 1,
                readings_backlog: 3,
                oldest_unsent: DateTime::from_timestamp(1_799_999_100, 0),
                radio: Some(RadioCounters {
                    uplinks: 812,
                    silences: 4,
                    downlinks: 830,
                    rejects: vec![("bad_mic".into(), 2), ("replayed_fcnt".into(), 1)],
                }),
                disk: Some(DiskSpace {
                    free: 3 << 30,
                    total: 15 << 30,
                }),
            }),
        };
        let body = encode(&request).unwrap();
        assert_eq!(decode_request(&body).unwrap(), request);
        assert!((1..=PROTOCOL_VERSION).all(|v| check_version(v).is_ok()));
        let next = PROTOCOL_VERSION + 1;
        assert!(matches!(
            check_version(next),
            Err(WireError::Version { found }) if found == next
        ));
        assert!(matches!(
            decode::<UploadRequest>(b"not zstd"),
            Err(WireError::Compression(_))
        ));
        let keys = MeterKeys {
            dev_addr: 0x2601_1F2A,
            nwk_skey: "00112233445566778899aabbccddeeff".into(),
            app_skey: "ffeeddccbbaa99887766554433221100".into(),
        };
        assert!(!format!("{keys:?}").contains("0011"));
    }

    #[test]
    fn dlms_security_travels_as_hex_is_validated_and_never_shown() {
        let security = MeterSecurity {
            keys: crate::dlms::cipher::Keys {
                encryption: [0x11; 16],
                authentication: [0x22; 16],
            },
            system_title: *b"MMM\0\0\xBC\x61\x4E",
        };
        let wire = WireDlms::from(&security);
        assert_eq!(wire.system_title, "4D4D4D0000BC614E");
        assert_eq!(wire.security().unwrap(), security);
        let shown = format!("{wire:?}");
        assert!(shown.contains("4D4D4D0000BC614E"));
        assert!(!shown.contains("1111") && !shown.contains("2222"));
        let bad = WireDlms {
            ek: "11".into(),
            ..wire.clone()
        };
        assert_eq!(
            bad.security().unwrap_err(),
            (
                "dlms_ek",
                crate::manifest::FieldProblem::WrongLength {
                    expected_digits: 32,
                    got_digits: 2
                }
            )
        );
        let event = DownlinkEvent::MeterDlms {
            serial: "M1".into(),
            dlms: Some(wire),
        };
        assert_eq!(event.min_protocol(), 12);
        assert!(!format!("{event:?}").contains("1111"));
    }
}
