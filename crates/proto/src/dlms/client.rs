//! The gateway's DLMS/COSEM client session for one meter on the gramgrid link (docs/dlms.md,
//! section 7). Pure: no I/O and no clock reads; the gateway's link task drives it turn by turn.
//!
//! - Each request builder ([`DlmsClient::read_intervals`], [`DlmsClient::disconnect`], ...) returns
//!   the FRMPayload to send on [`super::wrapper::DLMS_FPORT`]: the plain APDU, glo-ciphered (SC
//!   0x30, the gateway's system title and its next invocation counter) and wrapped from the
//!   management client to the management logical device. It records the request in flight; a new
//!   request replaces the one in flight and abandons its block transfer.
//! - [`DlmsClient::on_uplink`] takes the FRMPayload of a frame from the meter: it unwraps and
//!   authenticates it, applies the replay rule to the meter's invocation counter, matches the
//!   answer to the request in flight and maps it ([`Answer`]), or refuses it ([`DlmsClientError`]).
//!
//! **Counters.** Both counters must be stored durably by the caller: [`DlmsClient::next_ic`]
//! after each request is built and **before** it is sent (so no IV is ever reused), and
//! [`DlmsClient::last_meter_ic`] after each [`DlmsClient::on_uplink`] call that changed it (whatever
//! it returned), before acting on the answer. [`DlmsClient::restore`] takes both back after a
//! restart. The meter's counter advances on every frame that authenticates and is fresh, even one
//! that is then refused as unexpected, so that an authentic stray answer cannot be replayed later.

use chrono::{DateTime, TimeDelta, Utc};
use thiserror::Error;

use super::apdu::{
    ActionResult, Apdu, AttributeDescriptor, BlockAssembler, BlockError, DataAccessResult,
    DataNotification, GetDataResult, GetRequest, GetResponse, InvokeIdAndPriority, SetRequest,
};
use super::axdr::Data;
use super::cipher::wrapped_glo_len;
use super::cipher::{self, CipherError, Keys, ReplayGuard, Replayed, SecurityControl};
use super::cosem::PROFILE_COLUMNS;
use super::cosem::{self, ControlState, CosemError, ProfileBuffer};
use super::datetime::{CosemDateTime, DateTimeError, IST_DEVIATION};
use super::obis;
use super::wrapper::{Wrapped, WrapperError, CLIENT_MANAGEMENT, SERVER_MANAGEMENT};
use super::{length_len, DecodeError};
use crate::payload::{
    EventKind, IntervalReading, MeterEvent, RelayAction, RelayState, INTERVAL_SECS,
};
use crate::security::RejectReason;

/// A profile row in A-XDR: `structure(3) { octet-string(12) date-time, double-long-unsigned,
/// double-long-unsigned }` = 2 + 14 + 5 + 5 bytes.
pub const ROW_LEN: usize = 26;
/// A get-response-normal with data: tag, choice, invoke-id-and-priority, result choice.
const GET_RESPONSE_NORMAL_HEADER: usize = 4;
/// The most rows one [`DlmsClient::read_intervals`] may ask for (31 days of 15-minute intervals).
pub const MAX_ROWS_PER_READ: usize = 31 * 24 * 4;
/// An event of the power events log in A-XDR: `structure(2) { octet-string(12) date-time,
/// long-unsigned }` = 2 + 14 + 3 bytes.
const POWER_EVENT_ROW_LEN: usize = 19;
/// The most power events one read may return (a meter's log holds fewer).
pub const MAX_POWER_EVENTS: usize = 100;
/// A bound on the reassembled data of a block transfer that is not a profile read (a clock or a
/// control state takes a few bytes).
const SMALL_ANSWER_LIMIT: usize = 64;

const INTERVAL: TimeDelta = TimeDelta::seconds(INTERVAL_SECS as i64);

/// The gateway's system title (docs/dlms.md section 7): the ASCII bytes `GG` followed by the
/// first 6 bytes of SHA-256 of the gateway id.
pub fn gateway_system_title(gateway_id: &str) -> [u8; 8] {
    let digest = ring::digest::digest(&ring::digest::SHA256, gateway_id.as_bytes());
    let mut title = [0u8; 8];
    title[..2].copy_from_slice(b"GG");
    title[2..].copy_from_slice(&digest.as_ref()[..6]);
    title
}

/// What the gateway needs to reach one DLMS meter (docs/dlms.md section 7): its global unicast keys
/// and its system title, from the meter manifest or central. Never log the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct MeterSecurity {
    /// The meter's global unicast encryption key (EK) and authentication key (AK).
    pub keys: Keys,
    /// The meter's system title.
    pub system_title: [u8; 8],
}

impl std::fmt::Debug for MeterSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MeterSecurity {{ system_title: {:02X?}, keys: <redacted> }}",
            self.system_title
        )
    }
}

/// Bytes of the encoded profile buffer (`array` of `rows` rows).
fn profile_data_len(rows: usize) -> usize {
    1 + length_len(rows) + rows.saturating_mul(ROW_LEN)
}

/// The FRMPayload size of the meter's answer to a range read that returns `rows` rows in one
/// get-response-normal (wrapped and glo-ciphered).
pub fn profile_answer_frame_len(rows: usize) -> usize {
    wrapped_glo_len(GET_RESPONSE_NORMAL_HEADER + profile_data_len(rows))
}

/// How many profile rows to ask for in one [`DlmsClient::read_intervals`] so that the meter's
/// answer fits one frame of `max_frm_payload` bytes (see [`max_frm_payload`]). At least 1: when
/// not even one row fits (51 bytes at SF12 to SF10), the meter sends that row in blocks.
pub fn rows_that_fit(max_frm_payload: usize) -> usize {
    let mut rows = 0;
    while rows < MAX_ROWS_PER_READ && profile_answer_frame_len(rows + 1) <= max_frm_payload {
        rows += 1;
    }
    rows.max(1)
}

/// What the gateway asked the meter (the request in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The profile rows of the intervals starting at `since`, `since + 15 min`, ... (`rows` of
    /// them): capture times `since + 15 min ..= since + rows × 15 min`.
    Intervals {
        /// Start of the first interval asked for.
        since: DateTime<Utc>,
        /// Number of intervals asked for.
        rows: usize,
    },
    /// remote_disconnect or remote_reconnect.
    Relay(RelayAction),
    /// Disconnect control `control_state`.
    RelayState,
    /// The meter's clock.
    Clock,
    /// Set the meter's clock to this time.
    SetClock(DateTime<Utc>),
    /// The power failure related events stamped `from..=to` (meter time).
    PowerEvents {
        /// Earliest event time asked for.
        from: DateTime<Utc>,
        /// Latest event time asked for.
        to: DateTime<Utc>,
    },
}

impl Request {
    fn name(self) -> &'static str {
        match self {
            Request::Intervals { .. } => "profile read",
            Request::Relay(_) => "relay action",
            Request::RelayState => "control_state read",
            Request::Clock => "clock read",
            Request::SetClock(_) => "clock set",
            Request::PowerEvents { .. } => "power event log read",
        }
    }

    fn is_get(self) -> bool {
        matches!(
            self,
            Request::Intervals { .. }
                | Request::RelayState
                | Request::Clock
                | Request::PowerEvents { .. }
        )
    }

    /// The most raw data a block transfer for this request may reassemble.
    fn answer_limit(self) -> usize {
        match self {
            Request::Intervals { rows, .. } => profile_data_len(rows),
            Request::PowerEvents { .. } => {
                1 + length_len(MAX_POWER_EVENTS) + MAX_POWER_EVENTS * POWER_EVENT_ROW_LEN
            }
            _ => SMALL_ANSWER_LIMIT,
        }
    }
}

/// What a frame from the meter meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The rows of a range read, mapped to readings, oldest first (empty if the meter has none).
    Intervals(Vec<IntervalReading>),
    /// A block of a long answer that is not the last: send this get-request-next FRMPayload next
    /// (the client's outgoing counter has advanced: store it first).
    NextBlock(Vec<u8>),
    /// The meter's acknowledgement of a relay command (`accepted`: action-result success). The
    /// command is done when a later [`Answer::RelayState`] shows the commanded state.
    RelayActionDone {
        /// The command acknowledged.
        action: RelayAction,
        /// True if the meter answered success.
        accepted: bool,
    },
    /// The relay's control state.
    RelayState(RelayState),
    /// The meter's clock, in UTC.
    Clock(DateTime<Utc>),
    /// The answer to a clock set: true if the meter answered success.
    ClockSet(bool),
    /// A data-notification pushed by the meter: its newest rows.
    Pushed(Vec<IntervalReading>),
    /// The power failures and restorations in the range asked for, oldest first (by meter time).
    PowerEvents(Vec<MeterEvent>),
}

/// Why a frame from the meter is not well-formed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Malformed {
    /// The wrapper header is invalid.
    #[error("wrapper: {0}")]
    Wrapper(WrapperError),
    /// The frame is not from the management logical device to the management client.
    #[error("wPorts {from:#06x} -> {to:#06x}, expected 0x0001 -> 0x0001")]
    WPorts {
        /// Source wPort.
        from: u16,
        /// Destination wPort.
        to: u16,
    },
    /// The ciphered APDU is malformed, not a glo-* or general-glo-ciphering APDU, or carries an
    /// APDU of another kind than its glo tag announces.
    #[error("ciphered APDU: {0}")]
    Cipher(CipherError),
    /// The frame is authenticated but not encrypted (SC 0x10); the association uses SC 0x30.
    #[error("security control {0:#04x}, the association uses 0x30")]
    SecurityControl(u8),
    /// The decrypted APDU (or the reassembled data of a block transfer) does not decode.
    #[error("APDU: {0}")]
    Apdu(DecodeError),
}

/// Why an authentic frame does not answer the request in flight.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Unexpected {
    /// No request is in flight.
    #[error("no request is in flight")]
    NothingInFlight,
    /// The answer carries another invoke-id-and-priority than the request in flight.
    #[error("invoke-id-and-priority {got:#04x}, the request in flight has {expected:#04x}")]
    InvokeId {
        /// The request's.
        expected: u8,
        /// The answer's.
        got: u8,
    },
    /// The answer is of another kind than the request in flight calls for.
    #[error("{got} does not answer the {request} in flight")]
    WrongAnswer {
        /// The request in flight.
        request: &'static str,
        /// The APDU received.
        got: &'static str,
    },
    /// A block that is not the next one, or more data than the request can return.
    #[error("block transfer: {0}")]
    Block(BlockError),
    /// The meter sent something that is neither an answer nor a push (its APDU kind), or a push
    /// under a glo-* tag.
    #[error("{0} is neither an answer nor a push")]
    NotAnAnswer(&'static str),
}

/// Why the rows of a profile read or a push are refused (section 7 fixes their columns and types;
/// a buffer is never guessed at).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProfileError {
    /// The buffer is not an array of 3-value structures, or a push body is not
    /// `structure { octet-string, array }`.
    #[error("{0}")]
    Shape(CosemError),
    /// A value has another type than its column defines.
    #[error("row {row} column {column} is {got}, expected {expected}")]
    Column {
        /// Row index.
        row: usize,
        /// Column index.
        column: usize,
        /// The column's type.
        expected: &'static str,
        /// The A-XDR type received.
        got: &'static str,
    },
    /// A capture time is malformed or names no instant.
    #[error("row {row}: capture time: {error}")]
    CaptureTime {
        /// Row index.
        row: usize,
        /// Why.
        error: DateTimeError,
    },
    /// A capture time is not on a 15-minute boundary.
    #[error("row {row}: capture time {at} is not on a 15-minute boundary")]
    Unaligned {
        /// Row index.
        row: usize,
        /// The capture time.
        at: DateTime<Utc>,
    },
    /// A capture time lies outside the range asked for.
    #[error("row {row}: capture time {at} is outside the range asked for")]
    OutOfRange {
        /// Row index.
        row: usize,
        /// The capture time.
        at: DateTime<Utc>,
    },
    /// Capture times are not strictly increasing (rows come oldest first).
    #[error("row {row}: capture time is not after the previous row's")]
    NotIncreasing {
        /// Row index.
        row: usize,
    },
}

/// Why a frame from the meter is refused. Each variant is one thing the gateway counts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DlmsClientError {
    /// The wrapper, the ciphered envelope or the APDU is malformed (`dlms_malformed`).
    #[error("malformed DLMS frame: {0}")]
    Malformed(#[from] Malformed),
    /// The GCM tag does not verify: wrong key, system title or counter, or a changed bit
    /// (`dlms_bad_tag`).
    #[error("DLMS frame authentication failed")]
    AuthenticationFailed,
    /// The meter's invocation counter is not above the last accepted (`dlms_replayed`).
    #[error(transparent)]
    Replayed(#[from] Replayed),
    /// A general-glo-ciphering push (or its body) names another system title than this meter's.
    #[error("frame names system title {got:02x?}, this meter is {expected:02x?}")]
    WrongSender {
        /// This meter's system title.
        expected: [u8; 8],
        /// The one named.
        got: [u8; 8],
    },
    /// An authentic frame that does not answer the request in flight.
    #[error("unexpected answer: {0}")]
    Unexpected(#[from] Unexpected),
    /// The meter answered the GET in flight with a data-access-result instead of data (or
    /// aborted its block transfer with one).
    #[error("the meter refused the request: {0:?}")]
    Refused(DataAccessResult),
    /// The profile rows do not have the columns and types section 7 fixes.
    #[error("bad load profile: {0}")]
    BadProfile(#[from] ProfileError),
    /// A clock or control_state value of the wrong type or out of its domain.
    #[error("bad value: {0}")]
    BadValue(CosemError),
    /// The get-request-next that should follow a block could not be built.
    #[error("cannot ask for the next block: {0}")]
    Request(#[from] RequestError),
}

impl DlmsClientError {
    /// The link counter a refused frame goes to; None for a meter's refusal of a request (an
    /// answer, not a bad frame).
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            DlmsClientError::Malformed(_) => Some(RejectReason::DlmsMalformed),
            DlmsClientError::AuthenticationFailed => Some(RejectReason::DlmsBadTag),
            DlmsClientError::Replayed(_) => Some(RejectReason::DlmsReplayed),
            DlmsClientError::Refused(_) | DlmsClientError::Request(_) => None,
            DlmsClientError::WrongSender { .. }
            | DlmsClientError::Unexpected(_)
            | DlmsClientError::BadProfile(_)
            | DlmsClientError::BadValue(_) => Some(RejectReason::DlmsUnexpected),
        }
    }
}

/// Why a request cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// The gateway's invocation counter for this meter is used up: the meter needs new keys.
    #[error("invocation counter exhausted: the meter needs new keys")]
    CounterExhausted,
    /// A range read must ask for 1 to [`MAX_ROWS_PER_READ`] rows (the number asked for).
    #[error("a range read asks for 1 to {MAX_ROWS_PER_READ} rows, not {0}")]
    Rows(usize),
    /// `since` is not on a 15-minute boundary.
    #[error("{0} is not on a 15-minute boundary")]
    Unaligned(DateTime<Utc>),
    /// A time cannot be carried as a COSEM date-time.
    #[error("time out of range: {0}")]
    Time(#[from] DateTimeError),
    /// No block transfer is in progress.
    #[error("no block transfer is in progress")]
    NoTransfer,
    /// Protecting or wrapping failed (not expected for the APDUs built here).
    #[error("cannot encode the request: {0}")]
    Encode(String),
}

#[derive(Debug, Clone)]
struct InFlight {
    request: Request,
    invoke: InvokeIdAndPriority,
    transfer: Option<BlockAssembler>,
}

/// The client session with one meter: its keys and system titles, both invocation counters, the
/// request in flight and the block transfer in progress.
#[derive(Debug, Clone)]
pub struct DlmsClient {
    keys: Keys,
    meter_title: [u8; 8],
    gateway_title: [u8; 8],
    next_ic: u32,
    meter_ic: ReplayGuard,
    invoke_id: u8,
    in_flight: Option<InFlight>,
}

fn aligned(t: DateTime<Utc>) -> bool {
    t.timestamp().rem_euclid(i64::from(INTERVAL_SECS)) == 0 && t.timestamp_subsec_nanos() == 0
}

fn apdu_name(apdu: &Apdu) -> &'static str {
    match apdu {
        Apdu::GetRequest(_) => "get-request",
        Apdu::GetResponse(GetResponse::Normal { .. }) => "get-response-normal",
        Apdu::GetResponse(GetResponse::WithDatablock { .. }) => "get-response-with-datablock",
        Apdu::SetRequest(_) => "set-request",
        Apdu::SetResponse(_) => "set-response",
        Apdu::ActionRequest(_) => "action-request",
        Apdu::ActionResponse(_) => "action-response",
        Apdu::DataNotification(_) => "data-notification",
        Apdu::ExceptionResponse(_) => "exception-response",
    }
}

fn cipher_error(e: CipherError) -> DlmsClientError {
    match e {
        CipherError::AuthenticationFailed => DlmsClientError::AuthenticationFailed,
        other => Malformed::Cipher(other).into(),
    }
}

fn ist(t: DateTime<Utc>) -> Result<CosemDateTime, DateTimeError> {
    CosemDateTime::from_utc(t, IST_DEVIATION, 0)
}

impl DlmsClient {
    /// A new session: the gateway's counter starts at 1 and no meter counter is accepted yet.
    pub fn new(keys: Keys, meter_system_title: [u8; 8], gateway_system_title: [u8; 8]) -> Self {
        Self::restore(keys, meter_system_title, gateway_system_title, 1, None)
    }

    /// A session restored from storage: `next_ic` is the gateway's next invocation counter (as
    /// [`Self::next_ic`] returned it) and `last_meter_ic` the meter's last accepted counter (as
    /// [`Self::last_meter_ic`] returned it).
    pub fn restore(
        keys: Keys,
        meter_system_title: [u8; 8],
        gateway_system_title: [u8; 8],
        next_ic: u32,
        last_meter_ic: Option<u32>,
    ) -> Self {
        DlmsClient {
            keys,
            meter_title: meter_system_title,
            gateway_title: gateway_system_title,
            next_ic,
            meter_ic: ReplayGuard::new(last_meter_ic),
            invoke_id: 0,
            in_flight: None,
        }
    }

    /// The invocation counter the next request will use (store it before sending each request).
    pub fn next_ic(&self) -> u32 {
        self.next_ic
    }

    /// The meter's last accepted invocation counter (store it before acting on an answer).
    pub fn last_meter_ic(&self) -> Option<u32> {
        self.meter_ic.last()
    }

    /// The association's keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The meter's system title.
    pub fn meter_system_title(&self) -> [u8; 8] {
        self.meter_title
    }

    /// The gateway's system title.
    pub fn gateway_system_title(&self) -> [u8; 8] {
        self.gateway_title
    }

    /// The request in flight, if any.
    pub fn in_flight(&self) -> Option<Request> {
        self.in_flight.as_ref().map(|f| f.request)
    }

    /// The number of the last block received of a transfer in progress, if one is.
    pub fn block_in_progress(&self) -> Option<u32> {
        self.in_flight
            .as_ref()?
            .transfer
            .as_ref()
            .map(BlockAssembler::last_accepted)
    }

    /// Forgets the request in flight (no answer came in time); a late answer is then refused.
    pub fn abandon(&mut self) {
        self.in_flight = None;
    }

    /// Reads the load profile rows of the `rows` intervals starting at `since` (aligned to 15
    /// minutes): GET block load profile attr 2 with a range descriptor on the capture time from
    /// `since + 15 min` to `since + rows × 15 min`, in IST, all columns. Use
    /// [`rows_that_fit`] for `rows`.
    pub fn read_intervals(
        &mut self,
        since: DateTime<Utc>,
        rows: usize,
    ) -> Result<Vec<u8>, RequestError> {
        if rows == 0 || rows > MAX_ROWS_PER_READ {
            return Err(RequestError::Rows(rows));
        }
        if !aligned(since) {
            return Err(RequestError::Unaligned(since));
        }
        let span = TimeDelta::seconds(i64::from(INTERVAL_SECS) * rows as i64);
        let from = since
            .checked_add_signed(INTERVAL)
            .ok_or(DateTimeError::OutOfRange)?;
        let to = since
            .checked_add_signed(span)
            .ok_or(DateTimeError::OutOfRange)?;
        let (from, to) = (ist(from)?, ist(to)?);
        self.send_new(Request::Intervals { since, rows }, |invoke| {
            cosem::get_profile_buffer(invoke, obis::BLOCK_LOAD_PROFILE, &from, &to)
        })
    }

    /// ACTION disconnect control remote_disconnect (method 1, integer 0).
    pub fn disconnect(&mut self) -> Result<Vec<u8>, RequestError> {
        self.relay(RelayAction::Disconnect)
    }

    /// ACTION disconnect control remote_reconnect (method 2, integer 0).
    pub fn reconnect(&mut self) -> Result<Vec<u8>, RequestError> {
        self.relay(RelayAction::Connect)
    }

    /// [`Self::disconnect`] or [`Self::reconnect`].
    pub fn relay(&mut self, action: RelayAction) -> Result<Vec<u8>, RequestError> {
        self.send_new(Request::Relay(action), |invoke| match action {
            RelayAction::Disconnect => cosem::remote_disconnect(invoke),
            RelayAction::Connect => cosem::remote_reconnect(invoke),
        })
    }

    /// Reads the power failure related events log (0.0.99.98.2.255 attr 2): the events stamped
    /// `from..=to` by the meter's clock, with a range descriptor in IST.
    pub fn read_power_events(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<u8>, RequestError> {
        let (first, last) = (ist(from)?, ist(to)?);
        self.send_new(Request::PowerEvents { from, to }, |invoke| {
            cosem::get_profile_buffer(invoke, obis::EVENT_LOG_POWER, &first, &last)
        })
    }

    /// GET disconnect control attr 3, control_state.
    pub fn read_relay_state(&mut self) -> Result<Vec<u8>, RequestError> {
        self.send_new(Request::RelayState, cosem::get_control_state)
    }

    /// GET clock attr 2.
    pub fn read_clock(&mut self) -> Result<Vec<u8>, RequestError> {
        self.send_new(Request::Clock, cosem::get_clock)
    }

    /// SET clock attr 2 to `utc`, sent as IST (deviation −330, clock status 0).
    pub fn set_clock(&mut self, utc: DateTime<Utc>) -> Result<Vec<u8>, RequestError> {
        let value = Data::OctetString(ist(utc)?.to_bytes().to_vec());
        self.send_new(Request::SetClock(utc), |invoke| {
            Apdu::SetRequest(SetRequest {
                invoke,
                attribute: AttributeDescriptor {
                    class_id: obis::CLASS_CLOCK,
                    instance: obis::CLOCK,
                    attribute_id: 2,
                },
                access: None,
                value,
            })
        })
    }

    /// The get-request-next for the transfer in progress, asking for the block after the last one
    /// received: what [`Answer::NextBlock`] carries, and how a lost block is asked for again
    /// (with a new invocation counter).
    pub fn next_block(&mut self) -> Result<Vec<u8>, RequestError> {
        let (invoke, block_number) = match &self.in_flight {
            Some(InFlight {
                invoke,
                transfer: Some(t),
                ..
            }) => (*invoke, t.last_accepted()),
            _ => return Err(RequestError::NoTransfer),
        };
        self.seal(&Apdu::GetRequest(GetRequest::Next {
            invoke,
            block_number,
        }))
    }

    /// Builds a new request with the next invoke id and records it in flight.
    fn send_new(
        &mut self,
        request: Request,
        build: impl FnOnce(InvokeIdAndPriority) -> Apdu,
    ) -> Result<Vec<u8>, RequestError> {
        let invoke_id = self.invoke_id % 15 + 1;
        let invoke = InvokeIdAndPriority::new(invoke_id, true, true);
        let frame = self.seal(&build(invoke))?;
        self.invoke_id = invoke_id;
        self.in_flight = Some(InFlight {
            request,
            invoke,
            transfer: None,
        });
        Ok(frame)
    }

    /// Protects and wraps a request with the next invocation counter, and advances it.
    fn seal(&mut self, apdu: &Apdu) -> Result<Vec<u8>, RequestError> {
        // u32::MAX is never used, so that `next_ic` always names an unused counter.
        let ic = self.next_ic;
        if ic == u32::MAX {
            return Err(RequestError::CounterExhausted);
        }
        let ciphered = cipher::protect(
            &self.keys,
            &self.gateway_title,
            ic,
            SecurityControl::AUTHENTICATED_ENCRYPTED,
            &apdu.to_bytes(),
        )
        .map_err(|e| RequestError::Encode(e.to_string()))?;
        let frame = Wrapped {
            source: CLIENT_MANAGEMENT,
            destination: SERVER_MANAGEMENT,
            apdu: &ciphered,
        }
        .to_bytes()
        .map_err(|e| RequestError::Encode(e.to_string()))?;
        self.next_ic = ic + 1;
        Ok(frame)
    }

    /// Takes the FRMPayload of a frame from the meter (FPort 2): an answer to the request in
    /// flight or a push. On a refusal the session is unchanged, except that the meter's counter
    /// advances when the frame authenticated and was fresh, and that a refused or aborted answer
    /// ends the request in flight.
    pub fn on_uplink(&mut self, frm_payload: &[u8]) -> Result<Answer, DlmsClientError> {
        let wrapped = Wrapped::decode(frm_payload).map_err(Malformed::Wrapper)?;
        if (wrapped.source, wrapped.destination) != (SERVER_MANAGEMENT, CLIENT_MANAGEMENT) {
            return Err(Malformed::WPorts {
                from: wrapped.source,
                to: wrapped.destination,
            }
            .into());
        }
        let general = wrapped.apdu.first() == Some(&cipher::TAG_GENERAL_GLO_CIPHERING);
        let opened = if general {
            let (title, _) = cipher::general_glo_parts(wrapped.apdu).map_err(cipher_error)?;
            if title != self.meter_title {
                return Err(DlmsClientError::WrongSender {
                    expected: self.meter_title,
                    got: title,
                });
            }
            cipher::unprotect_general_glo(&self.keys, wrapped.apdu)
        } else {
            cipher::unprotect(&self.keys, &self.meter_title, wrapped.apdu)
        }
        .map_err(cipher_error)?;
        self.meter_ic.accept(opened.invocation_counter)?;
        if opened.security_control != SecurityControl::AUTHENTICATED_ENCRYPTED {
            return Err(Malformed::SecurityControl(opened.security_control.byte()).into());
        }
        let apdu = Apdu::decode(&opened.apdu).map_err(Malformed::Apdu)?;
        match apdu {
            Apdu::DataNotification(n) if general => self.pushed(&n),
            Apdu::GetResponse(_) | Apdu::SetResponse(_) | Apdu::ActionResponse(_) if !general => {
                self.answer(apdu)
            }
            other => Err(Unexpected::NotAnAnswer(apdu_name(&other)).into()),
        }
    }

    fn pushed(&self, n: &DataNotification) -> Result<Answer, DlmsClientError> {
        let shape = |got: &Data| {
            ProfileError::Shape(CosemError::UnexpectedType {
                field: "push body",
                expected: "structure { octet-string, array }",
                got: got.type_name(),
            })
        };
        let Data::Structure(fields) = &n.body else {
            return Err(shape(&n.body).into());
        };
        let [Data::OctetString(title), rows] = fields.as_slice() else {
            return Err(shape(&n.body).into());
        };
        if title.as_slice() != self.meter_title {
            let mut got = [0u8; 8];
            let len = title.len().min(8);
            got[..len].copy_from_slice(&title[..len]);
            return Err(DlmsClientError::WrongSender {
                expected: self.meter_title,
                got,
            });
        }
        Ok(Answer::Pushed(readings(rows, None)?))
    }

    fn answer(&mut self, apdu: Apdu) -> Result<Answer, DlmsClientError> {
        let Some(flight) = self.in_flight.as_mut() else {
            return Err(Unexpected::NothingInFlight.into());
        };
        let invoke = match &apdu {
            Apdu::GetResponse(GetResponse::Normal { invoke, .. })
            | Apdu::GetResponse(GetResponse::WithDatablock { invoke, .. }) => *invoke,
            Apdu::SetResponse(s) => s.invoke,
            Apdu::ActionResponse(a) => a.invoke,
            other => return Err(Unexpected::NotAnAnswer(apdu_name(other)).into()),
        };
        if invoke != flight.invoke {
            return Err(Unexpected::InvokeId {
                expected: flight.invoke.byte(),
                got: invoke.byte(),
            }
            .into());
        }
        let request = flight.request;
        match apdu {
            Apdu::ActionResponse(a) => {
                let Request::Relay(action) = request else {
                    return Err(self.wrong_answer("action-response"));
                };
                self.in_flight = None;
                Ok(Answer::RelayActionDone {
                    action,
                    accepted: a.result == ActionResult::Success,
                })
            }
            Apdu::SetResponse(s) => {
                let Request::SetClock(_) = request else {
                    return Err(self.wrong_answer("set-response"));
                };
                self.in_flight = None;
                Ok(Answer::ClockSet(s.result == DataAccessResult::Success))
            }
            Apdu::GetResponse(_) if !request.is_get() => Err(self.wrong_answer(apdu_name(&apdu))),
            Apdu::GetResponse(GetResponse::Normal { result, .. }) => match result {
                GetDataResult::Error(e) => {
                    self.in_flight = None;
                    Err(DlmsClientError::Refused(e))
                }
                // Data in one piece while blocks are being received.
                GetDataResult::Data(_) if flight.transfer.is_some() => {
                    Err(self.wrong_answer("get-response-normal"))
                }
                GetDataResult::Data(d) => {
                    self.in_flight = None;
                    finish(request, &d)
                }
            },
            Apdu::GetResponse(GetResponse::WithDatablock { block, .. }) => {
                let transfer = flight
                    .transfer
                    .get_or_insert_with(|| BlockAssembler::new(request.answer_limit()));
                match transfer.push(&block) {
                    Ok(None) => Ok(Answer::NextBlock(self.next_block()?)),
                    Ok(Some(raw)) => {
                        self.in_flight = None;
                        let d = Data::decode(&raw).map_err(Malformed::Apdu)?;
                        finish(request, &d)
                    }
                    // Keep the transfer: the expected block may still come, or be asked again
                    // (a transfer with no block yet is dropped: the request is sent again).
                    Err(e @ BlockError::OutOfOrder { .. }) => {
                        if transfer.last_accepted() == 0 {
                            flight.transfer = None;
                        }
                        Err(Unexpected::Block(e).into())
                    }
                    Err(BlockError::Aborted(e)) => {
                        self.in_flight = None;
                        Err(DlmsClientError::Refused(e))
                    }
                    Err(e) => {
                        self.in_flight = None;
                        Err(Unexpected::Block(e).into())
                    }
                }
            }
            other => Err(Unexpected::NotAnAnswer(apdu_name(&other)).into()),
        }
    }

    fn wrong_answer(&self, got: &'static str) -> DlmsClientError {
        Unexpected::WrongAnswer {
            request: self.in_flight().map_or("nothing", Request::name),
            got,
        }
        .into()
    }
}

/// Maps the data of a complete GET answer for `request`.
fn finish(request: Request, d: &Data) -> Result<Answer, DlmsClientError> {
    match request {
        Request::Intervals { since, rows } => {
            // Both were computed when the request was built.
            let range = since
                .checked_add_signed(INTERVAL)
                .zip(since.checked_add_signed(TimeDelta::seconds(
                    i64::from(INTERVAL_SECS).saturating_mul(rows as i64),
                )));
            Ok(Answer::Intervals(readings(d, range)?))
        }
        Request::RelayState => {
            let state = ControlState::from_data(d).map_err(DlmsClientError::BadValue)?;
            Ok(Answer::RelayState(match state {
                ControlState::Disconnected => RelayState::Disconnected,
                ControlState::Connected => RelayState::Connected,
                ControlState::ReadyForReconnection => RelayState::ReadyForReconnection,
            }))
        }
        Request::Clock => Ok(Answer::Clock(
            cosem::clock_time(d, Some(IST_DEVIATION)).map_err(DlmsClientError::BadValue)?,
        )),
        Request::PowerEvents { from, to } => Ok(Answer::PowerEvents(power_events(d, from, to)?)),
        // Not GETs: their answers are matched before.
        Request::Relay(_) | Request::SetClock(_) => Err(Unexpected::WrongAnswer {
            request: request.name(),
            got: "get-response",
        }
        .into()),
    }
}

/// Maps the rows of the power events log to meter events: codes 101 (failure) and 102
/// (restoration); other codes are not the gateway's concern and are skipped. Times must lie in
/// `from..=to` and not go back.
fn power_events(
    buffer: &Data,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<MeterEvent>, ProfileError> {
    let log = ProfileBuffer::parse(cosem::POWER_EVENT_COLUMNS.to_vec(), buffer)
        .map_err(ProfileError::Shape)?;
    let mut previous: Option<DateTime<Utc>> = None;
    let mut out = Vec::new();
    for (row, values) in log.rows.iter().enumerate() {
        let column = |column: usize, expected: &'static str| ProfileError::Column {
            row,
            column,
            expected,
            got: values.get(column).map_or("nothing", Data::type_name),
        };
        let [Data::OctetString(time), code] = values.as_slice() else {
            return Err(column(0, "octet-string"));
        };
        let Data::LongUnsigned(code) = code else {
            return Err(column(1, "long-unsigned"));
        };
        let at = CosemDateTime::from_bytes(time)
            .and_then(|t| t.to_utc(Some(IST_DEVIATION)))
            .map_err(|error| ProfileError::CaptureTime { row, error })?;
        if at < from || at > to {
            return Err(ProfileError::OutOfRange { row, at });
        }
        if previous.is_some_and(|p| at < p) {
            return Err(ProfileError::NotIncreasing { row });
        }
        previous = Some(at);
        let kind = match *code {
            cosem::EVENT_POWER_FAILURE => EventKind::PowerFail,
            cosem::EVENT_POWER_RESTORED => EventKind::PowerRestore,
            _ => continue,
        };
        out.push(MeterEvent { kind, at });
    }
    Ok(out)
}

/// Maps profile rows (section 7 columns) to readings: interval start = capture time − 15 min.
/// Capture times must be on 15-minute boundaries, strictly increasing and, when `range` is given,
/// within it (both ends inclusive).
fn readings(
    buffer: &Data,
    range: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Result<Vec<IntervalReading>, ProfileError> {
    let profile =
        ProfileBuffer::parse(PROFILE_COLUMNS.to_vec(), buffer).map_err(ProfileError::Shape)?;
    let mut previous: Option<DateTime<Utc>> = None;
    let mut out = Vec::with_capacity(profile.rows.len());
    for (row, values) in profile.rows.iter().enumerate() {
        let column = |column: usize, expected: &'static str| ProfileError::Column {
            row,
            column,
            expected,
            got: values.get(column).map_or("nothing", Data::type_name),
        };
        let [time, import, export] = values.as_slice() else {
            return Err(column(0, "three values"));
        };
        let Data::OctetString(time) = time else {
            return Err(column(0, "octet-string"));
        };
        let at = CosemDateTime::from_bytes(time)
            .and_then(|t| t.to_utc(Some(IST_DEVIATION)))
            .map_err(|error| ProfileError::CaptureTime { row, error })?;
        if !aligned(at) {
            return Err(ProfileError::Unaligned { row, at });
        }
        if range.is_some_and(|(first, last)| at < first || at > last) {
            return Err(ProfileError::OutOfRange { row, at });
        }
        if previous.is_some_and(|p| at <= p) {
            return Err(ProfileError::NotIncreasing { row });
        }
        previous = Some(at);
        let Data::DoubleLongUnsigned(import_wh) = import else {
            return Err(column(1, "double-long-unsigned"));
        };
        let Data::DoubleLongUnsigned(export_wh) = export else {
            return Err(column(2, "double-long-unsigned"));
        };
        let interval_start = at
            .checked_sub_signed(INTERVAL)
            .ok_or(ProfileError::CaptureTime {
                row,
                error: DateTimeError::OutOfRange,
            })?;
        out.push(IntervalReading {
            interval_start,
            import_wh: u64::from(*import_wh),
            export_wh: u64::from(*export_wh),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlms::apdu::tests::hex;
    use crate::dlms::apdu::{
        ActionResponse, DataBlock, MethodDescriptor, RangeDescriptor, SetResponse,
    };
    use crate::dlms::wrapper::DLMS_FPORT;
    use chrono::TimeZone;

    /// The range read is what limits DLMS meters to SF9 or faster on the link (docs/dlms.md
    /// section 7): longer than an SF10-SF12 downlink (51 bytes), within an SF9 one (115).
    #[test]
    fn a_range_read_fits_an_sf9_downlink_but_not_an_sf10_one() {
        let mut client = DlmsClient::new(
            Keys {
                encryption: [1; 16],
                authentication: [2; 16],
            },
            *b"SIM\0\0\0\0\x01",
            gateway_system_title("gw"),
        );
        let since = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        let read = client.read_intervals(since, 7).unwrap();
        assert_eq!(read.len(), 91);
        let max = |sf| crate::frame::in865_max_frm_payload(sf).unwrap();
        assert!(read.len() > max(10) && read.len() <= max(9));
        // What still fits at SF12: the control_state read and the relay actions.
        assert_eq!(client.read_relay_state().unwrap().len(), 40);
        assert_eq!(client.disconnect().unwrap().len(), 42);
    }
    use proptest::prelude::*;

    const METER_TITLE: [u8; 8] = *b"ISK\x00\x01\x02\x03\x04";

    fn keys() -> Keys {
        Keys {
            encryption: *b"meter-ek-0123456",
            authentication: *b"meter-ak-0123456",
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    /// 2024-03-15 00:00 IST.
    fn midnight_ist() -> DateTime<Utc> {
        utc(2024, 3, 14, 18, 30)
    }

    fn client() -> DlmsClient {
        DlmsClient::new(keys(), METER_TITLE, gateway_system_title("gw-test"))
    }

    /// The meter, played with the codec: it opens the gateway's requests and seals its answers.
    struct Meter {
        keys: Keys,
        title: [u8; 8],
        gateway_title: [u8; 8],
        ic: u32,
    }

    impl Meter {
        fn new() -> Self {
            Meter {
                keys: keys(),
                title: METER_TITLE,
                gateway_title: gateway_system_title("gw-test"),
                ic: 0,
            }
        }

        /// Unwraps and unprotects a request as the meter does; returns the APDU and the IC.
        fn open(&self, frame: &[u8]) -> (Apdu, u32) {
            let w = Wrapped::decode_frame(Some(DLMS_FPORT), frame).unwrap();
            assert_eq!((w.source, w.destination), (0x0001, 0x0001));
            let u = cipher::unprotect(&self.keys, &self.gateway_title, w.apdu).unwrap();
            assert_eq!(u.security_control, SecurityControl::AUTHENTICATED_ENCRYPTED);
            (Apdu::decode(&u.apdu).unwrap(), u.invocation_counter)
        }

        fn invoke(&self, frame: &[u8]) -> InvokeIdAndPriority {
            match self.open(frame).0 {
                Apdu::GetRequest(GetRequest::Normal { invoke, .. })
                | Apdu::GetRequest(GetRequest::Next { invoke, .. }) => invoke,
                Apdu::SetRequest(s) => s.invoke,
                Apdu::ActionRequest(a) => a.invoke,
                other => panic!("{other:?}"),
            }
        }

        fn wrap(apdu: &[u8]) -> Vec<u8> {
            Wrapped {
                source: SERVER_MANAGEMENT,
                destination: CLIENT_MANAGEMENT,
                apdu,
            }
            .to_bytes()
            .unwrap()
        }

        /// A glo-ciphered, wrapped answer with the meter's next IC.
        fn seal(&mut self, apdu: &Apdu) -> Vec<u8> {
            self.ic += 1;
            let c = cipher::protect(
                &self.keys,
                &self.title,
                self.ic,
                SecurityControl::AUTHENTICATED_ENCRYPTED,
                &apdu.to_bytes(),
            )
            .unwrap();
            Self::wrap(&c)
        }

        fn get_data(&mut self, request: &[u8], d: Data) -> Vec<u8> {
            let invoke = self.invoke(request);
            self.answer(invoke, d)
        }

        fn answer(&mut self, invoke: InvokeIdAndPriority, d: Data) -> Vec<u8> {
            self.seal(&Apdu::GetResponse(GetResponse::Normal {
                invoke,
                result: GetDataResult::Data(d),
            }))
        }

        /// A data-notification push under general-glo-ciphering naming `title`.
        fn push(&mut self, title: [u8; 8], body: Data) -> Vec<u8> {
            self.ic += 1;
            let apdu = Apdu::DataNotification(DataNotification {
                long_invoke_id_and_priority: self.ic,
                date_time: None,
                body,
            });
            Self::wrap(&cipher::protect_general_glo(
                &self.keys,
                &title,
                self.ic,
                SecurityControl::AUTHENTICATED_ENCRYPTED,
                &apdu.to_bytes(),
            ))
        }
    }

    /// A profile row captured at `capture` (UTC), stamped in IST as the meter does.
    fn row(capture: DateTime<Utc>, import: u32, export: u32) -> Data {
        Data::Structure(vec![
            Data::OctetString(ist(capture).unwrap().to_bytes().to_vec()),
            Data::DoubleLongUnsigned(import),
            Data::DoubleLongUnsigned(export),
        ])
    }

    fn rows(since: DateTime<Utc>, n: usize) -> Data {
        Data::Array(
            (1..=n)
                .map(|i| row(since + INTERVAL * i as i32, 1000 + 10 * i as u32, i as u32))
                .collect(),
        )
    }

    fn reading(start: DateTime<Utc>, import_wh: u64, export_wh: u64) -> IntervalReading {
        IntervalReading {
            interval_start: start,
            import_wh,
            export_wh,
        }
    }

    #[test]
    fn range_read_asks_for_ist_capture_times_and_maps_the_rows() {
        let mut c = client();
        let mut m = Meter::new();
        let since = midnight_ist();
        let req = c.read_intervals(since, 4).unwrap();
        assert_eq!(c.in_flight(), Some(Request::Intervals { since, rows: 4 }));
        let (apdu, ic) = m.open(&req);
        assert_eq!(ic, 1);
        // The section 3 layout, from 00:15 to 01:00 IST (deviation -330 = 0xFEB6).
        assert_eq!(
            apdu.to_bytes(),
            hex("c0 01 c1 0007 0100630100ff 02 01 01
                 0204 0204 120008 0906 0000010000ff 0f02 120000
                      090c 07e8030f05 000f0000 feb6 00
                      090c 07e8030f05 01000000 feb6 00
                      0100")
        );
        let Apdu::GetRequest(GetRequest::Normal {
            attribute,
            access: Some(access),
            ..
        }) = &apdu
        else {
            panic!("{apdu:?}")
        };
        assert_eq!(
            *attribute,
            AttributeDescriptor {
                class_id: 7,
                instance: obis::BLOCK_LOAD_PROFILE,
                attribute_id: 2
            }
        );
        let range = RangeDescriptor::from_access_selection(access).unwrap();
        assert_eq!(range.restricting_object, crate::dlms::apdu::CLOCK_TIME);
        assert!(range.selected_values.is_empty(), "all columns");
        let (from, to) = range.date_times().unwrap();
        assert_eq!(from.deviation, Some(IST_DEVIATION));
        assert_eq!(from.to_utc(None).unwrap(), since + INTERVAL);
        assert_eq!(to.to_utc(None).unwrap(), since + INTERVAL * 4);

        let answer = m.get_data(&req, rows(since, 4));
        assert_eq!(
            c.on_uplink(&answer),
            Ok(Answer::Intervals(vec![
                reading(since, 1010, 1),
                reading(since + INTERVAL, 1020, 2),
                reading(since + INTERVAL * 2, 1030, 3),
                reading(since + INTERVAL * 3, 1040, 4),
            ]))
        );
        assert_eq!(c.in_flight(), None);
        assert_eq!(c.last_meter_ic(), Some(1));

        // No rows in the range: an empty array.
        let req = c.read_intervals(since, 4).unwrap();
        let answer = m.get_data(&req, Data::Array(vec![]));
        assert_eq!(c.on_uplink(&answer), Ok(Answer::Intervals(vec![])));
    }

    #[test]
    fn profile_rows_are_checked_strictly() {
        let since = midnight_ist();
        let good = row(since + INTERVAL, 5, 0);
        let capture = ist(since + INTERVAL).unwrap().to_bytes().to_vec();
        let cases: Vec<(Data, DlmsClientError)> = vec![
            (
                Data::Array(vec![row(since + TimeDelta::minutes(16), 5, 0)]),
                ProfileError::Unaligned {
                    row: 0,
                    at: since + TimeDelta::minutes(16),
                }
                .into(),
            ),
            (
                Data::Array(vec![row(since + INTERVAL * 5, 5, 0)]),
                ProfileError::OutOfRange {
                    row: 0,
                    at: since + INTERVAL * 5,
                }
                .into(),
            ),
            (
                Data::Array(vec![row(since, 5, 0)]),
                ProfileError::OutOfRange { row: 0, at: since }.into(),
            ),
            (
                Data::Array(vec![good.clone(), good.clone()]),
                ProfileError::NotIncreasing { row: 1 }.into(),
            ),
            (
                Data::Array(vec![Data::Structure(vec![
                    Data::OctetString(capture.clone()),
                    Data::DoubleLong(5),
                    Data::DoubleLongUnsigned(0),
                ])]),
                ProfileError::Column {
                    row: 0,
                    column: 1,
                    expected: "double-long-unsigned",
                    got: "double-long",
                }
                .into(),
            ),
            (
                Data::Array(vec![Data::Structure(vec![
                    Data::DoubleLongUnsigned(0),
                    Data::DoubleLongUnsigned(5),
                    Data::DoubleLongUnsigned(0),
                ])]),
                ProfileError::Column {
                    row: 0,
                    column: 0,
                    expected: "octet-string",
                    got: "double-long-unsigned",
                }
                .into(),
            ),
            (
                // Two columns: another capture object list is never guessed at.
                Data::Array(vec![Data::Structure(vec![
                    Data::OctetString(capture.clone()),
                    Data::DoubleLongUnsigned(5),
                ])]),
                ProfileError::Shape(CosemError::RowWidth {
                    row: 0,
                    expected: 3,
                    got: 2,
                })
                .into(),
            ),
            (
                Data::Array(vec![Data::Structure(vec![
                    Data::OctetString(capture[..11].to_vec()),
                    Data::DoubleLongUnsigned(5),
                    Data::DoubleLongUnsigned(0),
                ])]),
                ProfileError::CaptureTime {
                    row: 0,
                    error: DateTimeError::Length(11),
                }
                .into(),
            ),
            (
                Data::DoubleLongUnsigned(5),
                ProfileError::Shape(CosemError::UnexpectedType {
                    field: "profile buffer",
                    expected: "array",
                    got: "double-long-unsigned",
                })
                .into(),
            ),
        ];
        let mut c = client();
        let mut m = Meter::new();
        for (buffer, error) in cases {
            let req = c.read_intervals(since, 4).unwrap();
            assert_eq!(
                c.on_uplink(&m.get_data(&req, buffer.clone())),
                Err(error),
                "{buffer:?}"
            );
        }
        // A capture time without deviation is taken as IST, the meter's clock.
        let mut t = ist(since + INTERVAL).unwrap();
        t.deviation = None;
        let req = c.read_intervals(since, 4).unwrap();
        let buffer = Data::Array(vec![Data::Structure(vec![
            Data::OctetString(t.to_bytes().to_vec()),
            Data::DoubleLongUnsigned(5),
            Data::DoubleLongUnsigned(0),
        ])]);
        assert_eq!(
            c.on_uplink(&m.get_data(&req, buffer)),
            Ok(Answer::Intervals(vec![reading(since, 5, 0)]))
        );
    }

    #[test]
    fn read_requests_are_refused_when_they_cannot_be_built() {
        let mut c = client();
        assert_eq!(
            c.read_intervals(midnight_ist(), 0),
            Err(RequestError::Rows(0))
        );
        assert_eq!(
            c.read_intervals(midnight_ist(), MAX_ROWS_PER_READ + 1),
            Err(RequestError::Rows(MAX_ROWS_PER_READ + 1))
        );
        let t = midnight_ist() + TimeDelta::minutes(1);
        assert_eq!(c.read_intervals(t, 1), Err(RequestError::Unaligned(t)));
        assert_eq!(c.next_block(), Err(RequestError::NoTransfer));
        assert_eq!(c.next_ic(), 1, "no counter used by refused requests");
        assert_eq!(c.in_flight(), None);
    }

    /// The meter's two blocks of a get-response whose data is `d`, split after `at` raw bytes.
    fn blocks(invoke: InvokeIdAndPriority, d: &Data, at: usize) -> [Apdu; 2] {
        let raw = d.to_bytes();
        let block = |n: u32, last: bool, part: &[u8]| {
            Apdu::GetResponse(GetResponse::WithDatablock {
                invoke,
                block: DataBlock {
                    last_block: last,
                    block_number: n,
                    result: Ok(part.to_vec()),
                },
            })
        };
        [block(1, false, &raw[..at]), block(2, true, &raw[at..])]
    }

    #[test]
    fn a_two_block_answer_asks_for_block_one_then_yields_the_intervals() {
        let mut c = client();
        let mut m = Meter::new();
        let since = midnight_ist();
        let req = c.read_intervals(since, 1).unwrap();
        let invoke = m.invoke(&req);
        let [b1, b2] = blocks(invoke, &rows(since, 1), 14);
        let Ok(Answer::NextBlock(next)) = c.on_uplink(&m.seal(&b1)) else {
            panic!()
        };
        assert_eq!(c.block_in_progress(), Some(1));
        assert_eq!(
            m.open(&next),
            (
                Apdu::GetRequest(GetRequest::Next {
                    invoke,
                    block_number: 1
                }),
                2
            )
        );
        assert_eq!(
            c.on_uplink(&m.seal(&b2)),
            Ok(Answer::Intervals(vec![reading(since, 1010, 1)]))
        );
        assert_eq!((c.in_flight(), c.block_in_progress()), (None, None));
    }

    #[test]
    fn an_out_of_order_block_is_refused_and_the_transfer_goes_on() {
        let mut c = client();
        let mut m = Meter::new();
        let since = midnight_ist();
        let req = c.read_intervals(since, 2).unwrap();
        let invoke = m.invoke(&req);
        let d = rows(since, 2);
        let [b1, b2] = blocks(invoke, &d, 20);
        assert!(matches!(
            c.on_uplink(&m.seal(&b1)),
            Ok(Answer::NextBlock(_))
        ));
        // Block 1 again, then a block 3: neither is the next one.
        for n in [1, 3] {
            let Apdu::GetResponse(GetResponse::WithDatablock { block, .. }) = &b2 else {
                panic!()
            };
            let wrong = Apdu::GetResponse(GetResponse::WithDatablock {
                invoke,
                block: DataBlock {
                    block_number: n,
                    ..block.clone()
                },
            });
            assert_eq!(
                c.on_uplink(&m.seal(&wrong)),
                Err(Unexpected::Block(BlockError::OutOfOrder {
                    expected: 2,
                    got: n
                })
                .into())
            );
        }
        // A transfer cannot start with block 2.
        let mut c2 = client();
        let req = c2.read_intervals(since, 2).unwrap();
        let [_, b2_of_c2] = blocks(m.invoke(&req), &d, 20);
        assert_eq!(
            c2.on_uplink(&m.seal(&b2_of_c2)),
            Err(Unexpected::Block(BlockError::OutOfOrder {
                expected: 1,
                got: 2
            })
            .into())
        );
        assert_eq!(c2.block_in_progress(), None);
        assert_eq!(c2.next_block(), Err(RequestError::NoTransfer));

        // The lost block is asked for again: same block number, a new counter.
        let again = c.next_block().unwrap();
        assert_eq!(
            m.open(&again),
            (
                Apdu::GetRequest(GetRequest::Next {
                    invoke,
                    block_number: 1
                }),
                3
            )
        );
        assert!(matches!(
            c.on_uplink(&m.seal(&b2)),
            Ok(Answer::Intervals(r)) if r.len() == 2
        ));

        // A block carrying a data-access-result aborts the transfer.
        let req = c.read_intervals(since, 2).unwrap();
        let invoke = m.invoke(&req);
        let [b1, _] = blocks(invoke, &d, 20);
        assert!(matches!(
            c.on_uplink(&m.seal(&b1)),
            Ok(Answer::NextBlock(_))
        ));
        let abort = Apdu::GetResponse(GetResponse::WithDatablock {
            invoke,
            block: DataBlock {
                last_block: true,
                block_number: 2,
                result: Err(DataAccessResult::LongGetAborted),
            },
        });
        assert_eq!(
            c.on_uplink(&m.seal(&abort)),
            Err(DlmsClientError::Refused(DataAccessResult::LongGetAborted))
        );
        assert_eq!(c.in_flight(), None);

        // More data than the rows asked for.
        let req = c.read_intervals(since, 1).unwrap();
        let invoke = m.invoke(&req);
        let [b1, b2] = blocks(invoke, &d, 20);
        assert!(matches!(
            c.on_uplink(&m.seal(&b1)),
            Ok(Answer::NextBlock(_))
        ));
        assert_eq!(
            c.on_uplink(&m.seal(&b2)),
            Err(Unexpected::Block(BlockError::TooLarge(profile_data_len(1))).into())
        );
    }

    #[test]
    fn relay_commands_are_acknowledged_and_the_state_is_read() {
        let mut c = client();
        let mut m = Meter::new();
        let req = c.disconnect().unwrap();
        let (apdu, _) = m.open(&req);
        let Apdu::ActionRequest(a) = &apdu else {
            panic!("{apdu:?}")
        };
        assert_eq!(
            (a.method, &a.parameters),
            (
                MethodDescriptor {
                    class_id: 70,
                    instance: obis::DISCONNECT_CONTROL,
                    method_id: 1
                },
                &Some(Data::Integer(0))
            )
        );
        let ack = |m: &mut Meter, req: &[u8], result| {
            let invoke = m.invoke(req);
            m.seal(&Apdu::ActionResponse(ActionResponse {
                invoke,
                result,
                return_parameters: None,
            }))
        };
        assert_eq!(
            c.on_uplink(&ack(&mut m, &req, ActionResult::Success)),
            Ok(Answer::RelayActionDone {
                action: RelayAction::Disconnect,
                accepted: true
            })
        );

        let req = c.reconnect().unwrap();
        let Apdu::ActionRequest(a) = m.open(&req).0 else {
            panic!()
        };
        assert_eq!(a.method.method_id, 2);
        assert_eq!(
            c.on_uplink(&ack(&mut m, &req, ActionResult::TemporaryFailure)),
            Ok(Answer::RelayActionDone {
                action: RelayAction::Connect,
                accepted: false
            })
        );

        let req = c.read_relay_state().unwrap();
        assert_eq!(
            m.open(&req).0.to_bytes()[3..],
            hex("0046 000060030aff 03 00")[..]
        );
        let answer = m.get_data(&req, Data::Enum(0));
        assert_eq!(
            c.on_uplink(&answer),
            Ok(Answer::RelayState(RelayState::Disconnected))
        );
        for (value, state) in [
            (1, RelayState::Connected),
            (2, RelayState::ReadyForReconnection),
        ] {
            let req = c.read_relay_state().unwrap();
            let answer = m.get_data(&req, Data::Enum(value));
            assert_eq!(c.on_uplink(&answer), Ok(Answer::RelayState(state)));
        }
        let req = c.read_relay_state().unwrap();
        let answer = m.get_data(&req, Data::Enum(3));
        assert_eq!(
            c.on_uplink(&answer),
            Err(DlmsClientError::BadValue(CosemError::InvalidValue {
                field: "control_state",
                value: 3
            }))
        );

        // An action-response does not answer a GET (and the GET stays in flight).
        let req = c.read_relay_state().unwrap();
        assert_eq!(
            c.on_uplink(&ack(&mut m, &req, ActionResult::Success)),
            Err(Unexpected::WrongAnswer {
                request: "control_state read",
                got: "action-response"
            }
            .into())
        );
        assert_eq!(c.in_flight(), Some(Request::RelayState));
    }

    #[test]
    fn the_clock_is_read_and_set_in_ist() {
        let mut c = client();
        let mut m = Meter::new();
        let req = c.read_clock().unwrap();
        // 2024-03-15 10:00:00 IST = 04:30 UTC (docs/dlms.md section 4).
        let answer = m.get_data(&req, Data::OctetString(hex("07e8030f050a000000feb600")));
        assert_eq!(
            c.on_uplink(&answer),
            Ok(Answer::Clock(utc(2024, 3, 15, 4, 30)))
        );
        let req = c.read_clock().unwrap();
        let answer = m.get_data(&req, Data::Long(5));
        assert!(matches!(
            c.on_uplink(&answer),
            Err(DlmsClientError::BadValue(CosemError::UnexpectedType { .. }))
        ));

        let now = utc(2024, 3, 15, 4, 30) + TimeDelta::seconds(7);
        let req = c.set_clock(now).unwrap();
        assert_eq!(c.in_flight(), Some(Request::SetClock(now)));
        let (apdu, _) = m.open(&req);
        let Apdu::SetRequest(s) = &apdu else {
            panic!("{apdu:?}")
        };
        assert_eq!(
            (s.attribute, &s.access, &s.value),
            (
                AttributeDescriptor {
                    class_id: 8,
                    instance: obis::CLOCK,
                    attribute_id: 2
                },
                &None,
                &Data::OctetString(hex("07e8030f050a000700feb600"))
            )
        );
        for (result, ok) in [
            (DataAccessResult::Success, true),
            (DataAccessResult::ReadWriteDenied, false),
        ] {
            let req = c.set_clock(now).unwrap();
            let invoke = m.invoke(&req);
            let answer = m.seal(&Apdu::SetResponse(SetResponse { invoke, result }));
            assert_eq!(c.on_uplink(&answer), Ok(Answer::ClockSet(ok)));
        }
    }

    #[test]
    fn a_get_refused_by_the_meter_is_a_typed_error() {
        let mut c = client();
        let mut m = Meter::new();
        let req = c.read_intervals(midnight_ist(), 2).unwrap();
        let invoke = m.invoke(&req);
        let answer = m.seal(&Apdu::GetResponse(GetResponse::Normal {
            invoke,
            result: GetDataResult::Error(DataAccessResult::ObjectUnavailable),
        }));
        assert_eq!(
            c.on_uplink(&answer),
            Err(DlmsClientError::Refused(
                DataAccessResult::ObjectUnavailable
            ))
        );
        assert_eq!(c.in_flight(), None);
    }

    #[test]
    fn an_answer_to_another_request_is_refused() {
        let mut c = client();
        let mut m = Meter::new();
        let old = c.read_clock().unwrap();
        let new = c.read_clock().unwrap();
        assert_ne!(m.invoke(&old), m.invoke(&new), "invoke ids rotate");
        let late = m.get_data(&old, Data::OctetString(hex("07e8030f050a000000feb600")));
        assert_eq!(
            c.on_uplink(&late),
            Err(Unexpected::InvokeId {
                expected: m.invoke(&new).byte(),
                got: m.invoke(&old).byte()
            }
            .into())
        );
        assert_eq!(c.in_flight(), Some(Request::Clock));
        // The invoke id wraps around 1..=15.
        let ids: Vec<u8> = (0..16)
            .map(|_| m.invoke(&c.read_clock().unwrap()).invoke_id())
            .collect();
        assert_eq!(ids, [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 1, 2, 3]);
    }

    #[test]
    fn refusals_are_typed_and_do_not_move_the_meter_counter() {
        let mut c = client();
        let mut m = Meter::new();
        let clock = || Data::OctetString(hex("07e8030f050a000000feb600"));
        let req = c.read_clock().unwrap();
        let first = m.get_data(&req, clock());
        assert!(matches!(c.on_uplink(&first), Ok(Answer::Clock(_))));
        assert_eq!(c.last_meter_ic(), Some(1));

        // The same answer again, while an identical request is in flight.
        let req = c.read_clock().unwrap();
        let first_again = m.get_data(&req, clock()); // IC 2, kept for later
        let mut replay = first.clone();
        // Same invoke id as the request in flight would not help: the IC is checked first.
        assert_eq!(
            c.on_uplink(&replay),
            Err(DlmsClientError::Replayed(Replayed { last: 1, got: 1 }))
        );
        assert_eq!(c.last_meter_ic(), Some(1));

        // Under another key.
        let invoke = m.invoke(&req);
        let mut impostor = Meter::new();
        impostor.keys.encryption[0] ^= 1;
        impostor.ic = 10;
        assert_eq!(
            c.on_uplink(&impostor.answer(invoke, clock())),
            Err(DlmsClientError::AuthenticationFailed)
        );
        // Under another authentication key.
        let mut impostor = Meter::new();
        impostor.keys.authentication[15] ^= 1;
        impostor.ic = 10;
        assert_eq!(
            c.on_uplink(&impostor.answer(invoke, clock())),
            Err(DlmsClientError::AuthenticationFailed)
        );
        // One flipped bit anywhere in the ciphered part.
        for i in crate::dlms::wrapper::HEADER_LEN + 2..first_again.len() {
            replay = first_again.clone();
            replay[i] ^= 0x10;
            let got = c.on_uplink(&replay);
            assert!(
                matches!(got, Err(DlmsClientError::AuthenticationFailed))
                    || (i == crate::dlms::wrapper::HEADER_LEN + 2
                        && matches!(got, Err(DlmsClientError::Malformed(_)))),
                "byte {i}: {got:?}"
            );
        }
        // A push naming another meter.
        let mut other = Meter::new();
        other.title = *b"OTHER-01";
        other.ic = 10;
        assert_eq!(
            c.on_uplink(&other.push(*b"OTHER-01", Data::Array(vec![]))),
            Err(DlmsClientError::WrongSender {
                expected: METER_TITLE,
                got: *b"OTHER-01"
            })
        );
        // A frame that is not from the management logical device.
        let mut wports = first_again.clone();
        wports[3] = 0x10;
        assert_eq!(
            c.on_uplink(&wports),
            Err(Malformed::WPorts {
                from: 0x0010,
                to: 0x0001
            }
            .into())
        );
        assert_eq!(c.last_meter_ic(), Some(1), "no refusal moved the counter");
        assert_eq!(c.in_flight(), Some(Request::Clock));

        // The genuine answer still gets through.
        assert!(matches!(c.on_uplink(&first_again), Ok(Answer::Clock(_))));
        assert_eq!(c.last_meter_ic(), Some(2));

        // Nothing in flight: refused. The frame is authentic and fresh, so the counter moves
        // (then the same frame cannot answer a later request).
        let stray = m.get_data(&req, clock()); // IC 3
        assert_eq!(c.on_uplink(&stray), Err(Unexpected::NothingInFlight.into()));
        assert_eq!(c.last_meter_ic(), Some(3));
        let _ = c.read_clock().unwrap();
        assert_eq!(
            c.on_uplink(&stray),
            Err(DlmsClientError::Replayed(Replayed { last: 3, got: 3 }))
        );
        // Authenticated-only answers are refused too: the association encrypts.
        let invoke = m.invoke(&c.read_clock().unwrap());
        m.ic += 1;
        let plain = Apdu::GetResponse(GetResponse::Normal {
            invoke,
            result: GetDataResult::Data(clock()),
        });
        let sealed = cipher::protect(
            &m.keys,
            &m.title,
            m.ic,
            SecurityControl::AUTHENTICATED,
            &plain.to_bytes(),
        )
        .unwrap();
        assert_eq!(
            c.on_uplink(&Meter::wrap(&sealed)),
            Err(Malformed::SecurityControl(0x10).into())
        );
    }

    #[test]
    fn pushes_map_rows_and_must_name_this_meter() {
        let mut c = client();
        let mut m = Meter::new();
        let since = midnight_ist();
        let req = c.read_clock().unwrap();
        let title = Data::OctetString(METER_TITLE.to_vec());
        let push = m.push(
            METER_TITLE,
            Data::Structure(vec![title.clone(), rows(since, 2)]),
        );
        assert_eq!(
            c.on_uplink(&push),
            Ok(Answer::Pushed(vec![
                reading(since, 1010, 1),
                reading(since + INTERVAL, 1020, 2)
            ]))
        );
        assert_eq!(c.last_meter_ic(), Some(1));
        assert_eq!(
            c.in_flight(),
            Some(Request::Clock),
            "a push answers nothing"
        );
        // The body names another meter although the envelope names this one.
        let push = m.push(
            METER_TITLE,
            Data::Structure(vec![
                Data::OctetString(b"OTHER-01".to_vec()),
                rows(since, 1),
            ]),
        );
        assert_eq!(
            c.on_uplink(&push),
            Err(DlmsClientError::WrongSender {
                expected: METER_TITLE,
                got: *b"OTHER-01"
            })
        );
        let push = m.push(METER_TITLE, rows(since, 1));
        assert!(matches!(
            c.on_uplink(&push),
            Err(DlmsClientError::BadProfile(ProfileError::Shape(_)))
        ));
        // A get-response under general-glo-ciphering is not a push.
        let invoke = m.invoke(&req);
        m.ic += 1;
        let answer = Apdu::GetResponse(GetResponse::Normal {
            invoke,
            result: GetDataResult::Data(Data::Null),
        });
        let frame = Meter::wrap(&cipher::protect_general_glo(
            &m.keys,
            &m.title,
            m.ic,
            SecurityControl::AUTHENTICATED_ENCRYPTED,
            &answer.to_bytes(),
        ));
        assert_eq!(
            c.on_uplink(&frame),
            Err(Unexpected::NotAnAnswer("get-response-normal").into())
        );
    }

    #[test]
    fn the_gateway_counter_strictly_increases_and_is_restored() {
        let mut c = client();
        let m = Meter::new();
        let mut ics = Vec::new();
        for i in 0..6 {
            let before = c.next_ic();
            let frame = match i % 6 {
                0 => c.read_intervals(midnight_ist(), 3),
                1 => c.disconnect(),
                2 => c.reconnect(),
                3 => c.read_relay_state(),
                4 => c.read_clock(),
                _ => c.set_clock(midnight_ist()),
            }
            .unwrap();
            let ic = m.open(&frame).1;
            assert_eq!((ic, c.next_ic()), (before, before + 1));
            ics.push(ic);
        }
        assert_eq!(ics, [1, 2, 3, 4, 5, 6]);

        // After a restart both counters come back from storage.
        let mut c = DlmsClient::restore(
            keys(),
            METER_TITLE,
            gateway_system_title("gw-test"),
            1000,
            Some(7),
        );
        let req = c.read_clock().unwrap();
        assert_eq!(m.open(&req).1, 1000);
        let mut m = Meter::new();
        m.ic = 6;
        let answer = m.get_data(&req, Data::OctetString(hex("07e8030f050a000000feb600")));
        assert_eq!(
            c.on_uplink(&answer),
            Err(DlmsClientError::Replayed(Replayed { last: 7, got: 7 }))
        );
        let answer = m.get_data(&req, Data::OctetString(hex("07e8030f050a000000feb600")));
        assert!(matches!(c.on_uplink(&answer), Ok(Answer::Clock(_))));

        let mut c = DlmsClient::restore(
            keys(),
            METER_TITLE,
            gateway_system_title("gw-test"),
            u32::MAX - 1,
            None,
        );
        assert!(c.read_clock().is_ok());
        assert_eq!(c.read_clock(), Err(RequestError::CounterExhausted));
        assert_eq!(c.next_ic(), u32::MAX);
    }

    #[test]
    fn gateway_system_title_is_gg_and_the_start_of_sha256() {
        // SHA-256("") = e3b0c442 98fc1c14...; SHA-256("abc") = ba7816bf 8f01cfea...
        assert_eq!(gateway_system_title(""), *b"GG\xe3\xb0\xc4\x42\x98\xfc");
        assert_eq!(gateway_system_title("abc"), *b"GG\xba\x78\x16\xbf\x8f\x01");
        let t = gateway_system_title("gw-kalyanpur-01");
        assert_eq!(t, gateway_system_title("gw-kalyanpur-01"));
        assert_eq!(&t[..2], b"GG");
        assert_ne!(t, gateway_system_title("gw-kalyanpur-02"));
    }

    /// The meter's answer to a range read of `n` rows, as it goes on the air.
    fn encoded_answer(n: usize) -> Vec<u8> {
        let mut m = Meter::new();
        m.ic = 0x0102_0304;
        let since = midnight_ist();
        m.seal(&Apdu::GetResponse(GetResponse::Normal {
            invoke: InvokeIdAndPriority::new(1, true, true),
            result: GetDataResult::Data(rows(since, n)),
        }))
    }

    #[test]
    fn rows_that_fit_one_frame_match_the_encoded_answers() {
        for n in [0, 1, 2, 3, 4, 7, 8, 100, 127, 128, 200, 255, 256, 300] {
            assert_eq!(profile_answer_frame_len(n), encoded_answer(n).len(), "{n}");
        }
        // Section 7: SF12 to SF10 fit no row (blocks carry it), SF9 fits 3, SF8 and SF7 fit 7.
        let at_sf = |sf| rows_that_fit(crate::frame::in865_max_frm_payload(sf).unwrap());
        assert_eq!([12, 11, 10, 9, 8, 7].map(at_sf), [1, 1, 1, 3, 7, 7]);
        assert!(encoded_answer(1).len() > 51);
        assert_eq!(rows_that_fit(0), 1);
        let mut previous = 1;
        for limit in (0..2000).step_by(7) {
            let n = rows_that_fit(limit);
            assert!(n >= previous, "grows with the limit");
            previous = n;
            if encoded_answer(1).len() <= limit {
                assert!(encoded_answer(n).len() <= limit, "{limit}: {n} rows fit");
                assert!(
                    encoded_answer(n + 1).len() > limit,
                    "{limit}: {n} is the most"
                );
            } else {
                assert_eq!(n, 1);
            }
        }
        assert!(rows_that_fit(1024) > rows_that_fit(222));
        // The block sizes of section 7: about 14 bytes of raw data per block at SF12.
        let block = |raw: usize| {
            wrapped_glo_len(
                Apdu::GetResponse(GetResponse::WithDatablock {
                    invoke: InvokeIdAndPriority::new(1, true, true),
                    block: DataBlock {
                        last_block: false,
                        block_number: 1,
                        result: Ok(vec![0; raw]),
                    },
                })
                .to_bytes()
                .len(),
            )
        };
        assert_eq!((block(14), block(15)), (51, 52));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut c = client();
            let _ = c.read_intervals(midnight_ist(), 3);
            let _ = c.on_uplink(&bytes);
            // Behind a valid wrapper header, and behind the glo and general-glo tags.
            let _ = c.on_uplink(&Meter::wrap(&bytes));
            for tag in [0xCC, 0xCD, 0xCF, 0xDB] {
                let mut b = bytes.clone();
                b.insert(0, tag);
                prop_assert!(c.on_uplink(&Meter::wrap(&b)).is_err());
            }
            prop_assert_eq!(c.last_meter_ic(), None);
        }

        #[test]
        fn mutated_answers_never_panic(
            n in 0usize..4,
            at in any::<prop::sample::Index>(),
            x in 1u8..=255,
        ) {
            let mut c = client();
            let mut m = Meter::new();
            let req = c.read_intervals(midnight_ist(), 3).unwrap();
            let mut answer = m.get_data(&req, rows(midnight_ist(), n));
            let i = at.index(answer.len());
            answer[i] ^= x;
            prop_assert!(c.on_uplink(&answer).is_err());
            prop_assert_eq!(c.last_meter_ic(), None);
        }

        #[test]
        fn any_authentic_answer_never_panics(d in crate::dlms::axdr::tests::data()) {
            let mut c = client();
            let mut m = Meter::new();
            for req in [
                c.read_intervals(midnight_ist(), 3).unwrap(),
                c.read_relay_state().unwrap(),
                c.read_clock().unwrap(),
            ] {
                let _ = c.on_uplink(&m.get_data(&req, d.clone()));
                prop_assert_eq!(c.last_meter_ic(), Some(m.ic));
            }
            let _ = c.on_uplink(&m.push(METER_TITLE, d.clone()));
            let body = Data::Structure(vec![Data::OctetString(METER_TITLE.to_vec()), d]);
            let _ = c.on_uplink(&m.push(METER_TITLE, body));
        }
    }
}
