//! Application payload v1: the compact binary messages carried in FRMPayload (byte layout in docs/protocol.md).
//!
//! Every message starts with a version byte and a message type; uplink types are 0x01..=0x7F and
//! downlink types 0x81..=0xFF, so a message read in the wrong direction is an unknown type.
//! Integers are little-endian; variable-size integers are canonical LEB128 varints. Decoding is
//! strict (no trailing bytes, no overlong varints, no unknown codes) so that every valid message has
//! exactly one encoding.

use chrono::{DateTime, Utc};
use thiserror::Error;

/// The payload version this codec reads and writes.
pub const VERSION: u8 = 1;
/// The FPort that carries payload v1.
pub const FPORT: u8 = 1;
/// Length of one metering interval; interval starts are aligned to it (UTC).
pub const INTERVAL_SECS: u32 = 900;

const MSG_METER_REPORT: u8 = 0x01;
const MSG_NET_METER_REPORT: u8 = 0x02;
const MSG_RELAY_COMMAND: u8 = 0x81;
const MSG_DISPLAY_UPDATE: u8 = 0x82;
const MSG_TIME_SYNC: u8 = 0x83;
const MSG_POLL: u8 = 0x84;
const MSG_SCHEDULE_ASSIGN: u8 = 0x85;
const MSG_RESEND_REQUEST: u8 = 0x86;

/// One 15-minute interval: the cumulative import register (OBIS 1.0.1.8.0) at the interval's end,
/// and for a net meter (rooftop solar) the cumulative export register (OBIS 1.0.2.8.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalReading {
    /// Start of the interval, aligned to [`INTERVAL_SECS`].
    pub interval_start: DateTime<Utc>,
    /// Cumulative active import energy in Wh.
    pub import_wh: u64,
    /// Cumulative active export energy in Wh; 0 for a meter that never exported.
    pub export_wh: u64,
}

/// Relay (disconnect control, OBIS 0.0.96.3.10) control state, with the DLMS enumeration values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayState {
    /// Relay open: supply cut (wire code 0).
    Disconnected = 0,
    /// Relay closed: supply on (wire code 1).
    Connected = 1,
    /// Disconnected, and the consumer may reconnect locally (DLMS "ready_for_reconnection").
    ReadyForReconnection = 2,
}

/// Which tamper the meter detected (IS 15959 "other/tamper" event log occurrences).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tamper {
    /// A tamper the meter does not name (code 1).
    Unspecified,
    /// A strong magnet near the meter (code 6).
    Magnet,
    /// The meter's cover was opened (code 7).
    CoverOpen,
    /// Neutral missing or disturbed (code 8).
    NeutralDisturbance,
    /// Current flowing in reverse through an import-only meter (code 9).
    ReverseCurrent,
}

/// What happened at the meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Tamper detected (codes 1 and 6 to 9, by [`Tamper`]).
    Tamper(Tamper),
    /// Mains supply failed (code 2).
    PowerFail,
    /// Mains supply restored (code 3).
    PowerRestore,
    /// The relay switched; `command_id` is the command that caused it, 0 for a local operation.
    RelayOperated {
        /// The [`RelayCommand::command_id`] that caused it; 0 for a local operation.
        command_id: u32,
    },
    /// The meter's real-time clock was set (code 5).
    ClockSet,
}

impl EventKind {
    /// The kind's stable name, as the store, the sync wire and the office see it
    /// (`tamper_magnet`, `power_fail`, ...).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Tamper(Tamper::Unspecified) => "tamper",
            EventKind::Tamper(Tamper::Magnet) => "tamper_magnet",
            EventKind::Tamper(Tamper::CoverOpen) => "tamper_cover_open",
            EventKind::Tamper(Tamper::NeutralDisturbance) => "tamper_neutral",
            EventKind::Tamper(Tamper::ReverseCurrent) => "tamper_reverse_current",
            EventKind::PowerFail => "power_fail",
            EventKind::PowerRestore => "power_restore",
            EventKind::RelayOperated { .. } => "relay_operated",
            EventKind::ClockSet => "clock_set",
        }
    }

    fn code(self) -> u8 {
        match self {
            EventKind::Tamper(Tamper::Unspecified) => 1,
            EventKind::PowerFail => 2,
            EventKind::PowerRestore => 3,
            EventKind::RelayOperated { .. } => 4,
            EventKind::ClockSet => 5,
            EventKind::Tamper(Tamper::Magnet) => 6,
            EventKind::Tamper(Tamper::CoverOpen) => 7,
            EventKind::Tamper(Tamper::NeutralDisturbance) => 8,
            EventKind::Tamper(Tamper::ReverseCurrent) => 9,
        }
    }
}

/// A meter event and when it happened (meter clock, whole seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterEvent {
    /// What happened.
    pub kind: EventKind,
    /// When, by the meter clock (UTC, whole seconds; never after the report's `meter_time`).
    pub at: DateTime<Utc>,
}

/// How the meter handled a relay command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckOutcome {
    /// Carried out (wire code 0).
    Applied = 0,
    /// Not carried out (e.g. the meter's local safety interlock).
    Refused = 1,
}

/// The meter's acknowledgement of a [`RelayCommand`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayAck {
    /// The acknowledged command's id.
    pub command_id: u32,
    /// Whether the meter carried it out.
    pub outcome: AckOutcome,
}

/// The uplink report: a batch of intervals plus instantaneous values, events and command acks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterReport {
    /// Meter clock when the report was built (whole seconds; a sub-second part is dropped).
    pub meter_time: DateTime<Utc>,
    /// Oldest first, strictly increasing starts, non-decreasing register.
    pub intervals: Vec<IntervalReading>,
    /// Instantaneous active import power in W (OBIS 1.0.1.7.0).
    pub power_w: u32,
    /// Instantaneous voltage L1 in decivolts (OBIS 1.0.32.7.0): 2301 = 230.1 V.
    pub voltage_dv: u16,
    /// Relay control state at `meter_time` (OBIS 0.0.96.3.10 attr 3).
    pub relay_state: RelayState,
    /// Events no later than `meter_time`, in any order.
    pub events: Vec<MeterEvent>,
    /// Answers to relay commands received since the last report.
    pub acks: Vec<RelayAck>,
}

/// Messages from meter to gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplink {
    /// Message type 0x01: interval readings and meter state.
    MeterReport(MeterReport),
}

/// Relay switching requested by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayAction {
    /// Open the relay: cut supply (wire code 0).
    Disconnect = 0,
    /// Close the relay: restore supply (wire code 1).
    Connect = 1,
}

/// Connect or disconnect; the meter answers with a [`RelayAck`] carrying the same `command_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayCommand {
    /// Identifies the command; re-sending the same id must be idempotent at the meter.
    pub command_id: u32,
    /// Connect or disconnect.
    pub action: RelayAction,
}

/// What the consumer display shows next to the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreditStatus {
    /// Balance is fine (wire code 0).
    Normal = 0,
    /// Balance is low: recharge soon (wire code 1).
    Low = 1,
    /// At or below zero, supply still on (grace or outside the disconnect window).
    Exhausted = 2,
    /// Supply has been cut for lack of credit (wire code 3).
    Disconnected = 3,
}

/// Balance shown on the meter display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayUpdate {
    /// Balance in paise; negative when the account is in debt.
    pub balance_paise: i64,
    /// The status indicator shown next to the balance.
    pub status: CreditStatus,
    /// Days the balance lasts at the recent rate of use, if known (at most
    /// [`DAYS_LEFT_MAX`]: "that many or more").
    pub days_left: Option<u8>,
}

/// The most days left a [`DisplayUpdate`] can say (wire value 255 is "unknown").
pub const DAYS_LEFT_MAX: u8 = 254;

/// Sets the meter clock (whole seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSync {
    /// The time to set, UTC (whole seconds, 1970..2106).
    pub utc: DateTime<Utc>,
}

/// Scheduled mode: "your turn: report intervals starting at `since`" (as many as fit the SF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    /// An interval start, aligned to [`INTERVAL_SECS`].
    pub since: DateTime<Utc>,
}

/// How a meter gets air time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessMode {
    /// The gateway owns the channel: the meter sends only in its slot or when polled.
    Scheduled = 0,
    /// Baseline: the meter sends on its own timer every `period_ms`, LoRaWAN style.
    Aloha = 1,
}

/// Assigns a meter its access mode, slot and spreading factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleAssign {
    /// Scheduled (gateway-owned channel) or ALOHA.
    pub mode: AccessMode,
    /// Offset of the meter's slot inside each period (ms); below `period_ms`.
    pub slot_offset_ms: u32,
    /// Length of the schedule cycle (ms); not zero.
    pub period_ms: u32,
    /// 7..=12, the lowest its link margin allows.
    pub spreading_factor: u8,
}

/// Intervals the gateway is missing and wants sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResendRequest {
    /// Aligned interval starts, strictly increasing.
    pub missing: Vec<DateTime<Utc>>,
}

/// Messages from gateway to meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Downlink {
    /// Message type 0x81.
    RelayCommand(RelayCommand),
    /// Message type 0x82.
    DisplayUpdate(DisplayUpdate),
    /// Message type 0x83.
    TimeSync(TimeSync),
    /// Message type 0x84.
    Poll(Poll),
    /// Message type 0x85.
    ScheduleAssign(ScheduleAssign),
    /// Message type 0x86.
    ResendRequest(ResendRequest),
}

/// Field-less enums sent as one byte: the discriminant is the wire code.
macro_rules! wire_code {
    ($($name:ident: $($variant:ident),+;)+) => {$(
        impl $name {
            fn from_code(code: u8) -> Option<Self> {
                [$($name::$variant),+].into_iter().find(|v| *v as u8 == code)
            }
        }
    )+};
}

wire_code! {
    RelayState: Disconnected, Connected, ReadyForReconnection;
    AckOutcome: Applied, Refused;
    RelayAction: Disconnect, Connect;
    CreditStatus: Normal, Low, Exhausted, Disconnected;
    AccessMode: Scheduled, Aloha;
}

/// Why bytes are not a valid v1 message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes end inside the named field (or a count exceeds the bytes left).
    #[error("payload ends inside field `{0}`")]
    Truncated(&'static str),
    /// The version byte is not [`VERSION`].
    #[error("unknown payload version {0}")]
    UnknownVersion(u8),
    /// The message type is unknown in this direction.
    #[error("unknown message type {0:#04x}")]
    UnknownMessageType(u8),
    /// Bytes left over after a complete message (how many).
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
    /// A varint does not fit the named field's type.
    #[error("varint in field `{0}` is longer than its type allows")]
    VarintOverflow(&'static str),
    /// A varint has a redundant zero byte (every value has one encoding).
    #[error("varint in field `{0}` has a redundant trailing byte")]
    NonCanonicalVarint(&'static str),
    /// A field holds a value outside its domain (unknown code, zero step, bad schedule).
    #[error("field `{field}` has invalid value {value}")]
    InvalidValue {
        /// The field's name.
        field: &'static str,
        /// The value read.
        value: u64,
    },
    /// Accumulating deltas (register, slot) overflows the named field.
    #[error("field `{0}` overflows when accumulated")]
    Overflow(&'static str),
    /// The frame is not on [`FPORT`] (its FPort, None if it had none).
    #[error("frame on FPort {0:?}, payload v1 travels on FPort {FPORT}")]
    WrongFport(Option<u8>),
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A time in the named field does not fit u32 seconds since the epoch.
    #[error("time in field `{0}` is outside 1970..2106 (u32 seconds)")]
    TimeOutOfRange(&'static str),
    /// An interval start is not a multiple of [`INTERVAL_SECS`] (UTC).
    #[error("time in field `{0}` is not aligned to a 15-minute interval")]
    NotAligned(&'static str),
    /// A list of interval starts is not strictly increasing.
    #[error("field `{0}` must strictly increase")]
    NotIncreasing(&'static str),
    /// An interval's register is lower than the one before it.
    #[error("cumulative register decreases within the batch")]
    RegisterDecreased,
    /// An event is dated after the report's `meter_time`.
    #[error("event time is after the report's meter time")]
    EventAfterMeterTime,
    /// A schedule field is out of range (SF not 7..=12, zero period, offset not below period).
    #[error("field `{0}` is out of range")]
    OutOfRange(&'static str),
    /// Even without intervals the message exceeds the size limit.
    #[error("message needs {len} bytes, limit is {max}")]
    TooLarge {
        /// Bytes the smallest encoding needs.
        len: usize,
        /// The limit given, in bytes.
        max: usize,
    },
}

impl Uplink {
    /// Encodes the message as FRMPayload bytes; refuses values the layout cannot carry.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        match self {
            Uplink::MeterReport(r) => r.encode(),
        }
    }

    /// Decodes the FRMPayload of an accepted frame, refusing frames on other ports.
    pub fn decode_frame(fport: Option<u8>, frm_payload: &[u8]) -> Result<Self, DecodeError> {
        expect_payload_port(fport)?;
        Self::decode(frm_payload)
    }

    /// Decodes FRMPayload bytes strictly (no trailing bytes, canonical varints, known codes).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (msg_type, mut r) = Reader::open(bytes)?;
        let msg = match msg_type {
            MSG_METER_REPORT => Uplink::MeterReport(MeterReport::read(&mut r, false)?),
            MSG_NET_METER_REPORT => Uplink::MeterReport(MeterReport::read(&mut r, true)?),
            other => return Err(DecodeError::UnknownMessageType(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

impl MeterReport {
    /// A report with an export register that has counted something travels as a net meter
    /// report (0x02, each interval also carrying its export register); every other as 0x01.
    fn is_net(&self) -> bool {
        self.intervals.iter().any(|i| i.export_wh != 0)
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let net = self.is_net();
        let mut w = header(if net {
            MSG_NET_METER_REPORT
        } else {
            MSG_METER_REPORT
        });
        let meter_secs = secs(self.meter_time, "meter_time")?;
        w.extend_from_slice(&meter_secs.to_le_bytes());
        put_varint(&mut w, u64::from(self.power_w));
        w.extend_from_slice(&self.voltage_dv.to_le_bytes());
        w.push(self.relay_state as u8);
        let starts: Vec<DateTime<Utc>> = self.intervals.iter().map(|i| i.interval_start).collect();
        put_slots(&mut w, &starts, "interval_start")?;
        let mut previous: Option<&IntervalReading> = None;
        for reading in &self.intervals {
            let delta = |register: fn(&IntervalReading) -> u64| match previous {
                None => Ok(register(reading)),
                Some(p) => register(reading)
                    .checked_sub(register(p))
                    .ok_or(EncodeError::RegisterDecreased),
            };
            put_varint(&mut w, delta(|i| i.import_wh)?);
            if net {
                put_varint(&mut w, delta(|i| i.export_wh)?);
            }
            previous = Some(reading);
        }
        put_len(&mut w, self.events.len());
        for event in &self.events {
            let at = secs(event.at, "event.at")?;
            let age = meter_secs
                .checked_sub(at)
                .ok_or(EncodeError::EventAfterMeterTime)?;
            w.push(event.kind.code());
            put_varint(&mut w, u64::from(age));
            if let EventKind::RelayOperated { command_id } = event.kind {
                put_varint(&mut w, u64::from(command_id));
            }
        }
        put_len(&mut w, self.acks.len());
        for ack in &self.acks {
            put_varint(&mut w, u64::from(ack.command_id));
            w.push(ack.outcome as u8);
        }
        Ok(w)
    }

    fn read(r: &mut Reader<'_>, net: bool) -> Result<Self, DecodeError> {
        let meter_secs = r.u32_le("meter_time")?;
        let power_w = r.varint_u32("power_w")?;
        let voltage_dv = r.u16_le("voltage_dv")?;
        let relay_state = r.code("relay_state", RelayState::from_code)?;
        let starts = read_slots(r, "interval_start")?;
        let mut intervals: Vec<IntervalReading> = Vec::with_capacity(starts.len());
        for interval_start in starts {
            let previous = intervals.last().copied();
            let mut register = |field: &'static str, of: fn(&IntervalReading) -> u64| {
                let value = r.varint(field)?;
                match previous {
                    None => Ok(value),
                    Some(p) => of(&p)
                        .checked_add(value)
                        .ok_or(DecodeError::Overflow(field)),
                }
            };
            let import_wh = register("import_wh", |i| i.import_wh)?;
            let export_wh = if net {
                register("export_wh", |i| i.export_wh)?
            } else {
                0
            };
            intervals.push(IntervalReading {
                interval_start,
                import_wh,
                export_wh,
            });
        }
        if net && intervals.iter().all(|i| i.export_wh == 0) {
            // Such a report has one encoding, as 0x01.
            return Err(DecodeError::InvalidValue {
                field: "export_wh",
                value: 0,
            });
        }
        let n_events = r.len("event_count")?;
        let mut events = Vec::with_capacity(n_events);
        for _ in 0..n_events {
            let code = r.u8("event.kind")?;
            let age = r.varint_u32("event.age")?;
            let kind = match code {
                1 => EventKind::Tamper(Tamper::Unspecified),
                6 => EventKind::Tamper(Tamper::Magnet),
                7 => EventKind::Tamper(Tamper::CoverOpen),
                8 => EventKind::Tamper(Tamper::NeutralDisturbance),
                9 => EventKind::Tamper(Tamper::ReverseCurrent),
                2 => EventKind::PowerFail,
                3 => EventKind::PowerRestore,
                4 => EventKind::RelayOperated {
                    command_id: r.varint_u32("event.command_id")?,
                },
                5 => EventKind::ClockSet,
                v => {
                    return Err(DecodeError::InvalidValue {
                        field: "event.kind",
                        value: v.into(),
                    })
                }
            };
            let at_secs = meter_secs
                .checked_sub(age)
                .ok_or(DecodeError::InvalidValue {
                    field: "event.age",
                    value: age.into(),
                })?;
            events.push(MeterEvent {
                kind,
                at: time(at_secs),
            });
        }
        let n_acks = r.len("ack_count")?;
        let mut acks = Vec::with_capacity(n_acks);
        for _ in 0..n_acks {
            let command_id = r.varint_u32("ack.command_id")?;
            let outcome = r.code("ack.outcome", AckOutcome::from_code)?;
            acks.push(RelayAck {
                command_id,
                outcome,
            });
        }
        Ok(MeterReport {
            meter_time: time(meter_secs),
            intervals,
            power_w,
            voltage_dv,
            relay_state,
            events,
            acks,
        })
    }

    /// Encodes the report with as many of its intervals as fit in `max_len` bytes, oldest first.
    ///
    /// Returns the bytes and the number of intervals included; the rest wait for the next report.
    /// Events and acks are always included: if they alone do not fit, the result is `TooLarge`.
    pub fn encode_fitting(&self, max_len: usize) -> Result<(Vec<u8>, usize), EncodeError> {
        let with = |n: usize| {
            let prefix = MeterReport {
                intervals: self.intervals[..n].to_vec(),
                ..self.clone()
            };
            prefix.encode()
        };
        let full = self.encode()?;
        if full.len() <= max_len {
            return Ok((full, self.intervals.len()));
        }
        // Encoded length grows with the prefix length, so binary-search the longest prefix that fits.
        let (mut fits, mut too_big) = (0, self.intervals.len());
        let mut best = with(0)?;
        if best.len() > max_len {
            return Err(EncodeError::TooLarge {
                len: best.len(),
                max: max_len,
            });
        }
        while too_big - fits > 1 {
            let mid = (fits + too_big) / 2;
            let bytes = with(mid)?;
            if bytes.len() <= max_len {
                fits = mid;
                best = bytes;
            } else {
                too_big = mid;
            }
        }
        Ok((best, fits))
    }
}

impl Downlink {
    /// Encodes the message as FRMPayload bytes; refuses values the layout cannot carry.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w;
        match self {
            Downlink::RelayCommand(c) => {
                w = header(MSG_RELAY_COMMAND);
                put_varint(&mut w, u64::from(c.command_id));
                w.push(c.action as u8);
            }
            Downlink::DisplayUpdate(d) => {
                w = header(MSG_DISPLAY_UPDATE);
                put_varint(&mut w, zigzag(d.balance_paise));
                w.push(d.status as u8);
                w.push(d.days_left.map_or(u8::MAX, |days| days.min(DAYS_LEFT_MAX)));
            }
            Downlink::TimeSync(t) => {
                w = header(MSG_TIME_SYNC);
                w.extend_from_slice(&secs(t.utc, "utc")?.to_le_bytes());
            }
            Downlink::Poll(p) => {
                w = header(MSG_POLL);
                w.extend_from_slice(&slot(p.since, "since")?.to_le_bytes());
            }
            Downlink::ScheduleAssign(s) => {
                validate_schedule(s.slot_offset_ms, s.period_ms, s.spreading_factor)
                    .map_err(EncodeError::OutOfRange)?;
                w = header(MSG_SCHEDULE_ASSIGN);
                w.push(s.mode as u8);
                w.push(s.spreading_factor);
                put_varint(&mut w, u64::from(s.slot_offset_ms));
                put_varint(&mut w, u64::from(s.period_ms));
            }
            Downlink::ResendRequest(req) => {
                w = header(MSG_RESEND_REQUEST);
                put_slots(&mut w, &req.missing, "missing")?;
            }
        }
        Ok(w)
    }

    /// Decodes the FRMPayload of an accepted frame, refusing frames on other ports.
    pub fn decode_frame(fport: Option<u8>, frm_payload: &[u8]) -> Result<Self, DecodeError> {
        expect_payload_port(fport)?;
        Self::decode(frm_payload)
    }

    /// Decodes FRMPayload bytes strictly (no trailing bytes, canonical varints, known codes).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (msg_type, mut r) = Reader::open(bytes)?;
        let msg = match msg_type {
            MSG_RELAY_COMMAND => Downlink::RelayCommand(RelayCommand {
                command_id: r.varint_u32("command_id")?,
                action: r.code("action", RelayAction::from_code)?,
            }),
            MSG_DISPLAY_UPDATE => Downlink::DisplayUpdate(DisplayUpdate {
                balance_paise: unzigzag(r.varint("balance_paise")?),
                status: r.code("credit_status", CreditStatus::from_code)?,
                days_left: Some(r.u8("days_left")?).filter(|&days| days != u8::MAX),
            }),
            MSG_TIME_SYNC => Downlink::TimeSync(TimeSync {
                utc: time(r.u32_le("utc")?),
            }),
            MSG_POLL => Downlink::Poll(Poll {
                since: slot_time(r.u32_le("since")?),
            }),
            MSG_SCHEDULE_ASSIGN => {
                let mode = r.code("mode", AccessMode::from_code)?;
                let spreading_factor = r.u8("spreading_factor")?;
                let slot_offset_ms = r.varint_u32("slot_offset_ms")?;
                let period_ms = r.varint_u32("period_ms")?;
                validate_schedule(slot_offset_ms, period_ms, spreading_factor).map_err(
                    |field| {
                        let value = match field {
                            "spreading_factor" => spreading_factor.into(),
                            "period_ms" => period_ms.into(),
                            _ => slot_offset_ms.into(),
                        };
                        DecodeError::InvalidValue { field, value }
                    },
                )?;
                Downlink::ScheduleAssign(ScheduleAssign {
                    mode,
                    slot_offset_ms,
                    period_ms,
                    spreading_factor,
                })
            }
            MSG_RESEND_REQUEST => Downlink::ResendRequest(ResendRequest {
                missing: read_slots(&mut r, "missing")?,
            }),
            other => return Err(DecodeError::UnknownMessageType(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

fn expect_payload_port(fport: Option<u8>) -> Result<(), DecodeError> {
    match fport {
        Some(FPORT) => Ok(()),
        other => Err(DecodeError::WrongFport(other)),
    }
}

/// Returns the name of the first invalid field of a schedule assignment.
fn validate_schedule(offset_ms: u32, period_ms: u32, sf: u8) -> Result<(), &'static str> {
    if !(7..=12).contains(&sf) {
        Err("spreading_factor")
    } else if period_ms == 0 {
        Err("period_ms")
    } else if offset_ms >= period_ms {
        Err("slot_offset_ms")
    } else {
        Ok(())
    }
}

fn header(msg_type: u8) -> Vec<u8> {
    vec![VERSION, msg_type]
}

/// Whole UTC seconds as u32 (1970..2106); the sub-second part is dropped.
fn secs(t: DateTime<Utc>, field: &'static str) -> Result<u32, EncodeError> {
    u32::try_from(t.timestamp()).map_err(|_| EncodeError::TimeOutOfRange(field))
}

/// The interval index (start / 900 s) of an aligned interval start.
fn slot(t: DateTime<Utc>, field: &'static str) -> Result<u32, EncodeError> {
    let s = t.timestamp();
    if s < 0 || s % i64::from(INTERVAL_SECS) != 0 || t.timestamp_subsec_nanos() != 0 {
        return Err(EncodeError::NotAligned(field));
    }
    u32::try_from(s / i64::from(INTERVAL_SECS)).map_err(|_| EncodeError::TimeOutOfRange(field))
}

fn time(secs: u32) -> DateTime<Utc> {
    // Every u32 second count is within chrono's range, so the fallback is unreachable in practice.
    DateTime::from_timestamp(i64::from(secs), 0).unwrap_or(DateTime::UNIX_EPOCH)
}

fn slot_time(slot: u32) -> DateTime<Utc> {
    // u32::MAX * 900 s is about year 138,000, still inside chrono's range.
    DateTime::from_timestamp(i64::from(slot) * i64::from(INTERVAL_SECS), 0)
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// A list of interval starts: count, then (if any) the first slot as u32 LE and varint slot steps >= 1.
fn put_slots(
    w: &mut Vec<u8>,
    starts: &[DateTime<Utc>],
    field: &'static str,
) -> Result<(), EncodeError> {
    put_len(w, starts.len());
    let mut previous: Option<u32> = None;
    for start in starts {
        let s = slot(*start, field)?;
        match previous {
            None => w.extend_from_slice(&s.to_le_bytes()),
            Some(p) if s > p => put_varint(w, u64::from(s - p)),
            Some(_) => return Err(EncodeError::NotIncreasing(field)),
        }
        previous = Some(s);
    }
    Ok(())
}

fn read_slots(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<DateTime<Utc>>, DecodeError> {
    let n = r.len(field)?;
    let mut out = Vec::with_capacity(n);
    let mut current: Option<u32> = None;
    for _ in 0..n {
        let s = match current {
            None => r.u32_le(field)?,
            Some(p) => {
                let step = r.varint_u32(field)?;
                if step == 0 {
                    return Err(DecodeError::InvalidValue { field, value: 0 });
                }
                p.checked_add(step).ok_or(DecodeError::Overflow(field))?
            }
        };
        current = Some(s);
        out.push(slot_time(s));
    }
    Ok(out)
}

fn put_len(w: &mut Vec<u8>, n: usize) {
    put_varint(w, n as u64);
}

fn put_varint(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A cursor over a message that never reads past the end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Checks the version and returns the message type and a reader positioned after it.
    fn open(buf: &'a [u8]) -> Result<(u8, Self), DecodeError> {
        let mut r = Reader { buf, pos: 0 };
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let msg_type = r.u8("message_type")?;
        Ok((msg_type, r))
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self
            .buf
            .get(self.pos..self.pos + N)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(DecodeError::Truncated(field))?;
        self.pos += N;
        Ok(bytes)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take::<1>(field)?[0])
    }

    fn u16_le(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(field)?))
    }

    fn u32_le(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(field)?))
    }

    /// A one-byte enumeration code; unknown codes are errors, not defaults.
    fn code<T>(
        &mut self,
        field: &'static str,
        from_code: fn(u8) -> Option<T>,
    ) -> Result<T, DecodeError> {
        let code = self.u8(field)?;
        from_code(code).ok_or(DecodeError::InvalidValue {
            field,
            value: code.into(),
        })
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = self.u8(field)?;
            let bits = u64::from(byte & 0x7F);
            // The tenth byte may only carry the single remaining bit of a u64.
            if i == 9 && bits > 1 {
                return Err(DecodeError::VarintOverflow(field));
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(DecodeError::NonCanonicalVarint(field));
                }
                return Ok(value);
            }
        }
        Err(DecodeError::VarintOverflow(field))
    }

    fn varint_u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.varint(field)?).map_err(|_| DecodeError::VarintOverflow(field))
    }

    /// A varint element count; each element takes at least one byte, so a count larger than the
    /// remaining bytes is truncated input (and never drives a large allocation).
    fn len(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let n = self.varint(field)?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if n > remaining {
            return Err(DecodeError::Truncated(field));
        }
        Ok(n as usize)
    }

    fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes(extra)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    /// 2026-11-28 00:00:00 UTC, an interval boundary.
    const DAY: i64 = 1_795_824_000;

    fn report(n_intervals: usize, delta_wh: u64) -> MeterReport {
        MeterReport {
            meter_time: t(DAY + 3_600 * 6 + 17),
            intervals: (0..n_intervals)
                .map(|i| IntervalReading {
                    interval_start: t(DAY + 900 * i as i64),
                    import_wh: 1_234_567 + delta_wh * i as u64,
                    export_wh: 0,
                })
                .collect(),
            power_w: 1_500,
            voltage_dv: 2_301,
            relay_state: RelayState::Connected,
            events: vec![],
            acks: vec![],
        }
    }

    #[test]
    fn meter_report_bytes_match_the_documented_layout() {
        let mut r = report(3, 250);
        r.intervals[2].interval_start = t(DAY + 900 * 4); // a gap of one missing interval
        r.events = vec![MeterEvent {
            kind: EventKind::RelayOperated { command_id: 300 },
            at: t(DAY + 3_600 * 6 + 7),
        }];
        r.acks = vec![RelayAck {
            command_id: 300,
            outcome: AckOutcome::Applied,
        }];
        let bytes = Uplink::MeterReport(r.clone()).encode().unwrap();
        // Literal bytes, as printed in docs/protocol.md.
        let mut expected = vec![0x01, 0x01];
        expected.extend([0xF1, 0x6D, 0x0A, 0x6B]); // meter time 1,795,845,617 s
        expected.extend([0xDC, 0x0B]); // power 1500 W, varint
        expected.extend([0xFD, 0x08]); // 230.1 V as 2301 dV, u16 LE
        expected.push(0x01); // relay connected
        expected.push(0x03); // 3 intervals
        expected.extend([0x60, 0x72, 0x1E, 0x00]); // first slot 1,995,360
        expected.extend([0x01, 0x03]); // slot steps: +1, +3 (one interval missing)
        expected.extend([0x87, 0xAD, 0x4B]); // 1,234,567 Wh, varint
        expected.extend([0xFA, 0x01, 0xFA, 0x01]); // +250 Wh, +250 Wh
        expected.extend([0x01, 0x04, 0x0A, 0xAC, 0x02]); // 1 event: relay operated, 10 s ago, cmd 300
        expected.extend([0x01, 0xAC, 0x02, 0x00]); // 1 ack: cmd 300 applied
        assert_eq!(bytes, expected);
        assert_eq!(Uplink::decode(&bytes).unwrap(), Uplink::MeterReport(r));
    }

    #[test]
    fn net_meter_report_bytes_match_the_documented_layout() {
        let mut r = report(2, 250);
        r.intervals[0].export_wh = 40_000;
        r.intervals[1].export_wh = 40_300;
        let bytes = Uplink::MeterReport(r.clone()).encode().unwrap();
        // Literal bytes, as printed in docs/protocol.md.
        let mut expected = vec![0x01, 0x02];
        expected.extend([0xF1, 0x6D, 0x0A, 0x6B, 0xDC, 0x0B, 0xFD, 0x08, 0x01]); // as 0x01
        expected.push(0x02); // 2 intervals
        expected.extend([0x60, 0x72, 0x1E, 0x00, 0x01]); // first slot 1,995,360, then +1
        expected.extend([0x87, 0xAD, 0x4B, 0xC0, 0xB8, 0x02]); // import 1,234,567, export 40,000
        expected.extend([0xFA, 0x01, 0xAC, 0x02]); // +250 Wh in, +300 Wh out
        expected.extend([0x00, 0x00]); // no events, no acks
        assert_eq!(bytes, expected);
        assert_eq!(
            Uplink::decode(&bytes).unwrap(),
            Uplink::MeterReport(r.clone())
        );
        // A report whose export registers are all zero has one encoding: 0x01.
        let mut zero = expected[..17].to_vec();
        zero.extend([0x87, 0xAD, 0x4B, 0x00, 0xFA, 0x01, 0x00, 0x00, 0x00]);
        assert!(matches!(
            Uplink::decode(&zero),
            Err(DecodeError::InvalidValue {
                field: "export_wh",
                ..
            })
        ));
        // An export register that went back cannot be encoded.
        r.intervals[1].export_wh = 39_999;
        assert_eq!(
            Uplink::MeterReport(r).encode(),
            Err(EncodeError::RegisterDecreased)
        );
    }

    #[test]
    fn event_codes_are_the_documented_ones_and_an_unknown_code_is_refused() {
        let codes = [
            (EventKind::Tamper(Tamper::Unspecified), 1),
            (EventKind::PowerFail, 2),
            (EventKind::PowerRestore, 3),
            (EventKind::ClockSet, 5),
            (EventKind::Tamper(Tamper::Magnet), 6),
            (EventKind::Tamper(Tamper::CoverOpen), 7),
            (EventKind::Tamper(Tamper::NeutralDisturbance), 8),
            (EventKind::Tamper(Tamper::ReverseCurrent), 9),
        ];
        for (kind, code) in codes {
            let mut r = report(0, 0);
            r.events = vec![MeterEvent {
                kind,
                at: r.meter_time,
            }];
            let bytes = Uplink::MeterReport(r).encode().unwrap();
            // Header, time, power, voltage, relay, no intervals; then 1 event: its code, age 0.
            assert_eq!(&bytes[12..15], [0x01, code, 0x00], "{kind:?}");
            let mut unknown = bytes.clone();
            unknown[13] = 10;
            assert!(matches!(
                Uplink::decode(&unknown),
                Err(DecodeError::InvalidValue {
                    field: "event.kind",
                    value: 10
                })
            ));
        }
    }

    #[test]
    fn downlink_bytes_match_the_documented_layout() {
        let cases = [
            (
                Downlink::RelayCommand(RelayCommand {
                    command_id: 300,
                    action: RelayAction::Disconnect,
                }),
                vec![0x01, 0x81, 0xAC, 0x02, 0x00],
            ),
            (
                Downlink::DisplayUpdate(DisplayUpdate {
                    balance_paise: -15_000,
                    status: CreditStatus::Exhausted,
                    days_left: None,
                }),
                vec![0x01, 0x82, 0xAF, 0xEA, 0x01, 0x02, 0xFF],
            ),
            (
                Downlink::DisplayUpdate(DisplayUpdate {
                    balance_paise: 12_345,
                    status: CreditStatus::Low,
                    days_left: Some(3),
                }),
                vec![0x01, 0x82, 0xF2, 0xC0, 0x01, 0x01, 0x03],
            ),
            (Downlink::TimeSync(TimeSync { utc: t(DAY) }), {
                let mut v = vec![0x01, 0x83];
                v.extend((DAY as u32).to_le_bytes());
                v
            }),
            (Downlink::Poll(Poll { since: t(DAY) }), {
                let mut v = vec![0x01, 0x84];
                v.extend(((DAY / 900) as u32).to_le_bytes());
                v
            }),
            (
                Downlink::ScheduleAssign(ScheduleAssign {
                    mode: AccessMode::Scheduled,
                    slot_offset_ms: 1_500,
                    period_ms: 900_000,
                    spreading_factor: 9,
                }),
                vec![0x01, 0x85, 0x00, 0x09, 0xDC, 0x0B, 0xA0, 0xF7, 0x36],
            ),
            (
                Downlink::ResendRequest(ResendRequest {
                    missing: vec![t(DAY), t(DAY + 2_700)],
                }),
                vec![0x01, 0x86, 0x02, 0x60, 0x72, 0x1E, 0x00, 0x03],
            ),
        ];
        for (msg, bytes) in cases {
            assert_eq!(msg.encode().unwrap(), bytes, "{msg:?}");
            assert_eq!(Downlink::decode(&bytes).unwrap(), msg);
        }
    }

    #[test]
    fn typed_errors_for_bad_input() {
        assert_eq!(Uplink::decode(&[]), Err(DecodeError::Truncated("version")));
        assert_eq!(Uplink::decode(&[2, 1]), Err(DecodeError::UnknownVersion(2)));
        assert_eq!(
            Uplink::decode(&[1]),
            Err(DecodeError::Truncated("message_type"))
        );
        // A downlink type read as an uplink and vice versa.
        assert_eq!(
            Uplink::decode(&[1, 0x81, 0, 0]),
            Err(DecodeError::UnknownMessageType(0x81))
        );
        assert_eq!(
            Downlink::decode(&[1, 0x01]),
            Err(DecodeError::UnknownMessageType(0x01))
        );
        assert_eq!(
            Downlink::decode(&[1, 0x81, 5, 1, 0]),
            Err(DecodeError::TrailingBytes(1))
        );
        assert_eq!(
            Downlink::decode(&[1, 0x81, 5]),
            Err(DecodeError::Truncated("action"))
        );
        assert_eq!(
            Downlink::decode(&[1, 0x81, 5, 9]),
            Err(DecodeError::InvalidValue {
                field: "action",
                value: 9
            })
        );
        assert_eq!(
            Downlink::decode(&[1, 0x81, 0xFF, 0xFF, 0xFF, 0xFF, 0x10, 0]),
            Err(DecodeError::VarintOverflow("command_id"))
        );
        let eleven = [0x81; 11];
        let mut v = vec![1, 0x82];
        v.extend(eleven);
        assert_eq!(
            Downlink::decode(&v),
            Err(DecodeError::VarintOverflow("balance_paise"))
        );
        assert_eq!(
            Downlink::decode(&[1, 0x81, 0x85, 0x00, 1]),
            Err(DecodeError::NonCanonicalVarint("command_id"))
        );
        assert_eq!(
            Downlink::decode(&[1, 0x85, 0, 13, 0, 1]),
            Err(DecodeError::InvalidValue {
                field: "spreading_factor",
                value: 13
            })
        );
        assert_eq!(
            Downlink::decode(&[1, 0x85, 0, 7, 5, 5]),
            Err(DecodeError::InvalidValue {
                field: "slot_offset_ms",
                value: 5
            })
        );
        // Resend list with a zero step (duplicate interval).
        assert_eq!(
            Downlink::decode(&[1, 0x86, 2, 0, 0, 0, 0, 0]),
            Err(DecodeError::InvalidValue {
                field: "missing",
                value: 0
            })
        );
        // A huge element count cannot drive an allocation.
        assert_eq!(
            Downlink::decode(&[1, 0x86, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
            Err(DecodeError::Truncated("missing"))
        );
        // The register accumulates past u64::MAX.
        let mut r = report(2, 1);
        r.intervals[0].import_wh = u64::MAX - 1;
        r.intervals[1].import_wh = u64::MAX;
        let mut bytes = Uplink::MeterReport(r).encode().unwrap();
        let delta_at = bytes.len() - 3; // delta varint, then event and ack counts
        bytes[delta_at] = 0x02;
        assert_eq!(
            Uplink::decode(&bytes),
            Err(DecodeError::Overflow("import_wh"))
        );
    }

    #[test]
    fn frames_on_other_ports_are_not_decoded() {
        let bytes = Uplink::MeterReport(report(1, 0)).encode().unwrap();
        assert!(Uplink::decode_frame(Some(FPORT), &bytes).is_ok());
        assert_eq!(
            Uplink::decode_frame(Some(2), &bytes),
            Err(DecodeError::WrongFport(Some(2)))
        );
        assert_eq!(
            Uplink::decode_frame(None, &bytes),
            Err(DecodeError::WrongFport(None))
        );
        let down = Downlink::TimeSync(TimeSync { utc: t(DAY) })
            .encode()
            .unwrap();
        assert!(Downlink::decode_frame(Some(FPORT), &down).is_ok());
        assert_eq!(
            Downlink::decode_frame(Some(0), &down),
            Err(DecodeError::WrongFport(Some(0)))
        );
    }

    #[test]
    fn encoder_refuses_what_the_decoder_would_not_read_back() {
        let mut r = report(2, 10);
        r.intervals[1].import_wh = 5;
        assert_eq!(
            Uplink::MeterReport(r).encode(),
            Err(EncodeError::RegisterDecreased)
        );
        let mut r = report(2, 10);
        r.intervals[1].interval_start = r.intervals[0].interval_start;
        assert_eq!(
            Uplink::MeterReport(r).encode(),
            Err(EncodeError::NotIncreasing("interval_start"))
        );
        let mut r = report(1, 10);
        r.intervals[0].interval_start = t(DAY + 60);
        assert_eq!(
            Uplink::MeterReport(r).encode(),
            Err(EncodeError::NotAligned("interval_start"))
        );
        let mut r = report(0, 0);
        r.events.push(MeterEvent {
            kind: EventKind::Tamper(Tamper::Unspecified),
            at: r.meter_time + chrono::Duration::seconds(1),
        });
        assert_eq!(
            Uplink::MeterReport(r).encode(),
            Err(EncodeError::EventAfterMeterTime)
        );
        let mut r = report(0, 0);
        r.meter_time = t(-1);
        assert_eq!(
            Uplink::MeterReport(r).encode(),
            Err(EncodeError::TimeOutOfRange("meter_time"))
        );
        let s = ScheduleAssign {
            mode: AccessMode::Aloha,
            slot_offset_ms: 0,
            period_ms: 0,
            spreading_factor: 7,
        };
        assert_eq!(
            Downlink::ScheduleAssign(s).encode(),
            Err(EncodeError::OutOfRange("period_ms"))
        );
    }

    /// The batch sizes quoted in docs/protocol.md ("How many intervals fit"): a report with no events
    /// or acks, 1.5 kW, register 1,234,567 Wh, contiguous intervals.
    #[test]
    fn intervals_per_spreading_factor_match_the_docs() {
        use crate::frame::in865_max_frm_payload;
        let cases = [
            // (sf, Wh per interval, intervals that fit)
            (12, 375, 11),
            (10, 375, 11),
            (9, 375, 32),
            (7, 375, 68),
            (12, 100, 16),
            (9, 100, 48),
            (7, 100, 101),
        ];
        for (sf, wh, expected) in cases {
            let budget = in865_max_frm_payload(sf).unwrap();
            let (bytes, n) = report(200, wh).encode_fitting(budget).unwrap();
            assert!(bytes.len() <= budget);
            assert_eq!(n, expected, "SF{sf}, {wh} Wh/interval");
            let one_more = MeterReport {
                intervals: report(200, wh).intervals[..=n].to_vec(),
                ..report(0, 0)
            };
            assert!(
                one_more.encode().unwrap().len() > budget,
                "SF{sf}: n is not the maximum"
            );
            let Uplink::MeterReport(back) = Uplink::decode(&bytes).unwrap();
            assert_eq!(back.intervals, report(200, wh).intervals[..n]);
        }
    }

    #[test]
    fn encode_fitting_keeps_everything_when_it_fits_and_fails_when_nothing_can() {
        let r = report(3, 10);
        let (bytes, n) = r.encode_fitting(222).unwrap();
        assert_eq!(
            (n, bytes),
            (3, Uplink::MeterReport(r.clone()).encode().unwrap())
        );
        assert!(matches!(
            r.encode_fitting(10),
            Err(EncodeError::TooLarge { max: 10, .. })
        ));
    }

    fn whole_seconds() -> impl Strategy<Value = DateTime<Utc>> {
        (0u32..=u32::MAX).prop_map(|s| t(i64::from(s)))
    }

    fn slots() -> impl Strategy<Value = Vec<DateTime<Utc>>> {
        (
            0u32..5_000_000,
            proptest::collection::vec(1u32..5_000, 0..40),
        )
            .prop_map(|(base, steps)| {
                let mut s = base;
                let mut out = vec![t(i64::from(s) * 900)];
                for step in steps {
                    s += step;
                    out.push(t(i64::from(s) * 900));
                }
                out
            })
    }

    fn event_kind() -> impl Strategy<Value = EventKind> {
        prop_oneof![
            Just(EventKind::Tamper(Tamper::Unspecified)),
            Just(EventKind::Tamper(Tamper::Magnet)),
            Just(EventKind::Tamper(Tamper::CoverOpen)),
            Just(EventKind::Tamper(Tamper::NeutralDisturbance)),
            Just(EventKind::Tamper(Tamper::ReverseCurrent)),
            Just(EventKind::PowerFail),
            Just(EventKind::PowerRestore),
            any::<u32>().prop_map(|command_id| EventKind::RelayOperated { command_id }),
            Just(EventKind::ClockSet),
        ]
    }

    fn meter_report() -> impl Strategy<Value = MeterReport> {
        (
            whole_seconds(),
            proptest::option::of(slots()),
            any::<u64>(),
            proptest::collection::vec((0u64..100_000, prop_oneof![Just(0u64), 0u64..5_000]), 40),
            any::<u32>(),
            any::<u16>(),
            prop_oneof![
                Just(RelayState::Disconnected),
                Just(RelayState::Connected),
                Just(RelayState::ReadyForReconnection)
            ],
            proptest::collection::vec((event_kind(), any::<u32>()), 0..6),
            proptest::collection::vec(
                (
                    any::<u32>(),
                    prop_oneof![Just(AckOutcome::Applied), Just(AckOutcome::Refused)],
                ),
                0..4,
            ),
        )
            .prop_map(
                |(
                    meter_time,
                    starts,
                    first,
                    deltas,
                    power_w,
                    voltage_dv,
                    relay_state,
                    events,
                    acks,
                )| {
                    let (mut register, mut export) = (first / 2, 0);
                    let intervals = starts
                        .unwrap_or_default()
                        .into_iter()
                        .zip(deltas)
                        .map(|(interval_start, (d, exported))| {
                            register += d;
                            export += exported;
                            IntervalReading {
                                interval_start,
                                import_wh: register,
                                export_wh: export,
                            }
                        })
                        .collect();
                    let meter_secs = meter_time.timestamp();
                    MeterReport {
                        meter_time,
                        intervals,
                        power_w,
                        voltage_dv,
                        relay_state,
                        events: events
                            .into_iter()
                            .map(|(kind, age)| MeterEvent {
                                kind,
                                at: t(meter_secs - i64::from(age).min(meter_secs)),
                            })
                            .collect(),
                        acks: acks
                            .into_iter()
                            .map(|(command_id, outcome)| RelayAck {
                                command_id,
                                outcome,
                            })
                            .collect(),
                    }
                },
            )
    }

    fn downlink() -> impl Strategy<Value = Downlink> {
        prop_oneof![
            (
                any::<u32>(),
                prop_oneof![Just(RelayAction::Connect), Just(RelayAction::Disconnect)]
            )
                .prop_map(|(command_id, action)| Downlink::RelayCommand(
                    RelayCommand { command_id, action }
                )),
            (
                any::<i64>(),
                prop_oneof![
                    Just(CreditStatus::Normal),
                    Just(CreditStatus::Low),
                    Just(CreditStatus::Exhausted),
                    Just(CreditStatus::Disconnected)
                ],
                proptest::option::of(0u8..=DAYS_LEFT_MAX)
            )
                .prop_map(
                    |(balance_paise, status, days_left)| Downlink::DisplayUpdate(DisplayUpdate {
                        balance_paise,
                        status,
                        days_left
                    })
                ),
            whole_seconds().prop_map(|utc| Downlink::TimeSync(TimeSync { utc })),
            (0u32..=u32::MAX).prop_map(|s| Downlink::Poll(Poll {
                since: t(i64::from(s) * 900)
            })),
            (
                prop_oneof![Just(AccessMode::Scheduled), Just(AccessMode::Aloha)],
                1u32..=u32::MAX,
                any::<u32>(),
                7u8..=12
            )
                .prop_map(|(mode, period_ms, offset, spreading_factor)| {
                    Downlink::ScheduleAssign(ScheduleAssign {
                        mode,
                        slot_offset_ms: offset % period_ms,
                        period_ms,
                        spreading_factor,
                    })
                }),
            proptest::option::of(slots()).prop_map(|s| Downlink::ResendRequest(ResendRequest {
                missing: s.unwrap_or_default()
            })),
        ]
    }

    proptest! {
        #[test]
        fn meter_report_round_trips(r in meter_report()) {
            let msg = Uplink::MeterReport(r);
            let bytes = msg.encode().unwrap();
            prop_assert_eq!(Uplink::decode(&bytes).unwrap(), msg);
        }

        #[test]
        fn downlinks_round_trip(msg in downlink()) {
            let bytes = msg.encode().unwrap();
            prop_assert_eq!(Downlink::decode(&bytes).unwrap(), msg);
        }

        #[test]
        fn truncated_messages_are_errors(r in meter_report(), d in downlink(), cut in any::<prop::sample::Index>()) {
            let up = Uplink::MeterReport(r).encode().unwrap();
            prop_assert!(Uplink::decode(&up[..cut.index(up.len())]).is_err());
            let down = d.encode().unwrap();
            prop_assert!(Downlink::decode(&down[..cut.index(down.len())]).is_err());
        }

        /// Arbitrary bytes never panic, and whatever decodes re-encodes to the same bytes (one encoding
        /// per message, so a decoded report cannot hide extra data).
        #[test]
        fn arbitrary_bytes_never_panic_and_decoding_is_canonical(
            tail in proptest::collection::vec(any::<u8>(), 0..120),
            msg_type in prop_oneof![Just(0x01u8), 0x81u8..=0x87, any::<u8>()],
            version in prop_oneof![Just(1u8), any::<u8>()],
        ) {
            let mut bytes = vec![version, msg_type];
            bytes.extend(tail);
            if let Ok(up) = Uplink::decode(&bytes) {
                prop_assert_eq!(up.encode().unwrap(), bytes.clone());
            }
            if let Ok(down) = Downlink::decode(&bytes) {
                prop_assert_eq!(down.encode().unwrap(), bytes);
            }
        }
    }
}
