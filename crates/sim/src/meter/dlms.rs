//! A simulated DLMS/COSEM meter, server side, as docs/dlms.md section 7 fixes it: a
//! pre-established association under security suite 0 (glo-ciphering, SC 0x30), the wrapper on
//! FPort 2 from the management client to the management logical device, GET (with the load profile
//! by range and block transfer sized to the link's FRMPayload), SET of the clock, ACTION on the
//! disconnect control, and data-notification pushes under general-glo-ciphering.
//!
//! Pure: no I/O and no clock reads (`now` is a parameter). What the meter measures and switches is
//! behind [`CosemObjects`], so the v1 firmware's state can back it.

use chrono::{DateTime, Duration, Utc};
use gramgrid_proto::dlms::apdu::{
    AccessSelection, ActionRequest, ActionResponse, ActionResult, Apdu, AttributeDescriptor,
    CaptureObject, DataAccessResult, DataBlock, DataNotification, GetDataResult, GetRequest,
    GetResponse, InvokeIdAndPriority, RangeDescriptor, SetRequest, SetResponse, CLOCK_TIME,
};
use gramgrid_proto::dlms::axdr::Data;
use gramgrid_proto::dlms::cipher::wrapped_glo_len;
use gramgrid_proto::dlms::cipher::{
    self, CipherError, Keys, ReplayGuard, Replayed, SecurityControl,
};
use gramgrid_proto::dlms::cosem::{POWER_EVENT_COLUMNS, PROFILE_COLUMNS};
use gramgrid_proto::dlms::datetime::{CosemDateTime, IST_DEVIATION};
use gramgrid_proto::dlms::obis::{self, Obis};
use gramgrid_proto::dlms::wrapper::{Wrapped, WrapperError, CLIENT_MANAGEMENT, SERVER_MANAGEMENT};
use gramgrid_proto::dlms::{length_len, DecodeError};
use gramgrid_proto::payload::{IntervalReading, RelayState, INTERVAL_SECS};
use std::ops::Range;
use thiserror::Error;

/// The smallest IN865 FRMPayload (SF10-SF12): a smaller limit counts as this one.
pub const MIN_FRM_PAYLOAD: usize = gramgrid_proto::frame::MIN_IN865_FRM_PAYLOAD;

/// The unit code of Wh in a register's scaler_unit.
const UNIT_WH: u8 = 30;

/// The meter's name plate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nameplate {
    /// Meter serial number (0.0.96.1.0.255).
    pub serial: String,
    /// Manufacturer name (0.0.96.1.1.255).
    pub manufacturer: String,
    /// Firmware version (1.0.0.2.0.255).
    pub firmware_version: String,
}

/// Why the relay did not move on a remote_disconnect or remote_reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayRefusal {
    /// It cannot move now but may later (answered `temporary-failure`).
    TemporaryFailure,
    /// The relay or its drive is broken (answered `hardware-fault`).
    HardwareFault,
}

/// What the DLMS server reads and changes in the meter.
pub trait CosemObjects {
    /// The meter clock's reading at true time `now`.
    fn meter_time(&self, now: DateTime<Utc>) -> DateTime<Utc>;
    /// Sets the meter clock so that it reads `to` at true time `now`.
    fn set_meter_time(&mut self, now: DateTime<Utc>, to: DateTime<Utc>);
    /// Cumulative active import register (1.0.1.8.0), Wh.
    fn import_wh(&self) -> u64;
    /// Cumulative active export register (1.0.2.8.0), Wh.
    fn export_wh(&self) -> u64;
    /// The load-profile rows whose capture time (interval start + 15 min) lies in `from..=to`, oldest first.
    fn profile_rows(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<IntervalReading>;
    /// The power failure related events (IS 15959-2 code 101 failure, 102 restored) stamped
    /// `from..=to` by the meter clock, oldest first.
    fn power_events(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(DateTime<Utc>, u16)>;
    /// The relay's control state.
    fn relay_state(&self) -> RelayState;
    /// Moves the relay to connected (`connect`) or disconnected: whether it moved, or why not.
    fn operate_relay(&mut self, connect: bool, now: DateTime<Utc>) -> Result<bool, RelayRefusal>;
    /// The name plate.
    fn nameplate(&self) -> Nameplate;
}

/// Why a frame got no answer (each maps to one of section 7's counters, [`Self::counter`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DlmsServerError {
    /// The FRMPayload is not a wrapper frame (truncated, version, length).
    #[error("bad wrapper: {0}")]
    BadWrapper(#[from] WrapperError),
    /// The wrapper is not from the management client to the management logical device.
    #[error("wrapper from wPort {source_wport:#06x} to {destination_wport:#06x}, expected 0x0001 to 0x0001")]
    WrongWport {
        /// Source wPort.
        source_wport: u16,
        /// Destination wPort.
        destination_wport: u16,
    },
    /// The APDU is not a glo-ciphered request this meter takes (plain, unknown tag, malformed).
    #[error("not a glo-ciphered DLMS request: {0}")]
    NotDlms(CipherError),
    /// The security control is not 0x30 (authenticated and encrypted).
    #[error("security control {0:#04x} refused: the association uses 0x30 only")]
    SecurityControl(u8),
    /// The GCM tag does not verify (wrong key or system title, tampering).
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The client's invocation counter is not above the last one accepted.
    #[error(transparent)]
    Replayed(#[from] Replayed),
    /// The decrypted APDU does not decode.
    #[error("malformed APDU: {0}")]
    Malformed(DecodeError),
    /// The decrypted APDU is not a GET, SET or ACTION request (its tag).
    #[error("unsupported APDU {0:#04x}")]
    UnsupportedApdu(u8),
    /// The meter's own invocation counter is used up: it cannot send without reusing an IV.
    #[error("the meter's invocation counter is exhausted")]
    CounterExhausted,
    /// A push does not fit the FRMPayload at the current SF (there is no block transfer for
    /// data-notification); nothing was sent or counted.
    #[error("a push of {len} bytes does not fit the {max}-byte FRMPayload")]
    PushTooLong {
        /// The wrapped push's length.
        len: usize,
        /// The largest FRMPayload.
        max: usize,
    },
}

impl DlmsServerError {
    /// The section 7 counter a refused frame counts in (`dlms_replayed`, `dlms_bad_tag` or
    /// `dlms_malformed`); None for the meter's own limits.
    pub fn counter(&self) -> Option<&'static str> {
        match self {
            DlmsServerError::Replayed(_) => Some("dlms_replayed"),
            DlmsServerError::AuthenticationFailed => Some("dlms_bad_tag"),
            DlmsServerError::CounterExhausted | DlmsServerError::PushTooLong { .. } => None,
            _ => Some("dlms_malformed"),
        }
    }
}

/// A GET answer being sent in blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlockTransfer {
    /// The whole raw data (one encoded `Data`).
    data: Vec<u8>,
    /// Blocks sent so far (the last one's number).
    sent: u32,
    /// The bytes of the last block sent.
    last: Range<usize>,
}

impl BlockTransfer {
    fn complete(&self) -> bool {
        self.last.end == self.data.len()
    }
}

/// The DLMS server of one meter: its keys, system titles, counters and a GET block transfer in
/// progress.
#[derive(Debug, Clone)]
pub struct DlmsServer {
    keys: Keys,
    meter_title: [u8; 8],
    client_title: [u8; 8],
    next_ic: u32,
    client_ic: ReplayGuard,
    max_frm_payload: usize,
    pending: Option<BlockTransfer>,
}

/// A load-profile row as the buffer holds it.
pub fn profile_row(r: &IntervalReading) -> Data {
    let capture = r.interval_start + Duration::seconds(INTERVAL_SECS.into());
    Data::Structure(vec![
        date_time(capture),
        Data::DoubleLongUnsigned(register(r.import_wh)),
        Data::DoubleLongUnsigned(register(r.export_wh)),
    ])
}

/// A register value as double-long-unsigned: it rolls over at 2^32 Wh as a meter's register does.
fn register(wh: u64) -> u32 {
    (wh % (1u64 << 32)) as u32
}

/// A date-time in IST as the octet-string a clock attribute holds.
fn date_time(t: DateTime<Utc>) -> Data {
    // An instant chrono can hold but the 12 bytes cannot is sent as "not specified".
    let dt = CosemDateTime::from_utc(t, IST_DEVIATION, 0).unwrap_or(CosemDateTime {
        year: None,
        month: None,
        day: None,
        weekday: None,
        hour: None,
        minute: None,
        second: None,
        hundredths: None,
        deviation: None,
        clock_status: None,
    });
    Data::OctetString(dt.to_bytes().to_vec())
}

/// A date-time sent by the client (deviation IST when unspecified).
fn read_date_time(d: &Data) -> Option<DateTime<Utc>> {
    match d {
        Data::OctetString(b) => CosemDateTime::from_bytes(b)
            .ok()?
            .to_utc(Some(IST_DEVIATION))
            .ok(),
        _ => None,
    }
}

impl DlmsServer {
    /// A meter with keys `keys` and system title `meter_title`, serving the gateway whose system
    /// title is `client_title` ([`gramgrid_proto::dlms::client::gateway_system_title`]); counters fresh (its own IC starts
    /// at 1, no client IC accepted yet), answers sized for SF12.
    pub fn new(keys: Keys, meter_title: [u8; 8], client_title: [u8; 8]) -> Self {
        DlmsServer {
            keys,
            meter_title,
            client_title,
            next_ic: 1,
            client_ic: ReplayGuard::new(None),
            max_frm_payload: MIN_FRM_PAYLOAD,
            pending: None,
        }
    }

    /// Restores the counters stored before a restart: the IC it uses next, and the client's last
    /// accepted IC.
    pub fn restore_counters(&mut self, next_ic: u32, client_last: Option<u32>) {
        self.next_ic = next_ic;
        self.client_ic = ReplayGuard::new(client_last);
    }

    /// The invocation counter the meter uses for its next APDU (store it after each answer).
    pub fn next_ic(&self) -> u32 {
        self.next_ic
    }

    /// The client's last accepted invocation counter (store it after each request).
    pub fn client_ic(&self) -> Option<u32> {
        self.client_ic.last()
    }

    /// The meter's system title.
    pub fn meter_title(&self) -> [u8; 8] {
        self.meter_title
    }

    /// The largest FRMPayload at the current SF (bytes; under [`MIN_FRM_PAYLOAD`] counts as it).
    pub fn set_max_frm_payload(&mut self, bytes: usize) {
        self.max_frm_payload = bytes.max(MIN_FRM_PAYLOAD);
    }

    /// The largest FRMPayload answers are sized for.
    pub fn max_frm_payload(&self) -> usize {
        self.max_frm_payload
    }

    /// Handles one FRMPayload received on FPort 2: the FRMPayload to answer with, or why there is
    /// none (count it; nothing in the meter changed, and the client's IC is spent only if the frame
    /// authenticated under SC 0x30). Store [`Self::next_ic`] and [`Self::client_ic`] afterwards.
    pub fn handle(
        &mut self,
        frm_payload: &[u8],
        objects: &mut impl CosemObjects,
        now: DateTime<Utc>,
    ) -> Result<Vec<u8>, DlmsServerError> {
        let wrapped = Wrapped::decode(frm_payload)?;
        if (wrapped.source, wrapped.destination) != (CLIENT_MANAGEMENT, SERVER_MANAGEMENT) {
            return Err(DlmsServerError::WrongWport {
                source_wport: wrapped.source,
                destination_wport: wrapped.destination,
            });
        }
        let opened = match cipher::unprotect(&self.keys, &self.client_title, wrapped.apdu) {
            Ok(opened) => opened,
            Err(CipherError::AuthenticationFailed) => {
                return Err(DlmsServerError::AuthenticationFailed)
            }
            Err(CipherError::UnsupportedSecurityControl(sc)) => {
                return Err(DlmsServerError::SecurityControl(sc))
            }
            Err(e) => return Err(DlmsServerError::NotDlms(e)),
        };
        if opened.security_control != SecurityControl::AUTHENTICATED_ENCRYPTED {
            return Err(DlmsServerError::SecurityControl(
                opened.security_control.byte(),
            ));
        }
        if self.next_ic == u32::MAX {
            return Err(DlmsServerError::CounterExhausted);
        }
        self.client_ic.accept(opened.invocation_counter)?;
        let request = Apdu::decode(&opened.apdu).map_err(DlmsServerError::Malformed)?;
        let answer = match request {
            Apdu::GetRequest(GetRequest::Normal {
                invoke,
                attribute,
                access,
            }) => {
                self.pending = None;
                let result = match get(objects, now, &attribute, access.as_ref()) {
                    Ok(data) => data,
                    Err(e) => return self.seal(&get_response(invoke, GetDataResult::Error(e))),
                };
                let raw = result.to_bytes();
                // get-response-normal: C4 01 invoke 00 data.
                if wrapped_glo_len(4 + raw.len()) <= self.max_frm_payload {
                    get_response(invoke, GetDataResult::Data(result))
                } else {
                    self.pending = Some(BlockTransfer {
                        data: raw,
                        sent: 0,
                        last: 0..0,
                    });
                    self.next_block(invoke)
                }
            }
            Apdu::GetRequest(GetRequest::Next {
                invoke,
                block_number,
            }) => self.get_next(invoke, block_number),
            Apdu::SetRequest(set) => set_response(&set, objects, now),
            Apdu::ActionRequest(action) => action_response(&action, objects, now),
            Apdu::GetResponse(_)
            | Apdu::SetResponse(_)
            | Apdu::ActionResponse(_)
            | Apdu::DataNotification(_)
            | Apdu::ExceptionResponse(_) => {
                return Err(DlmsServerError::UnsupportedApdu(
                    opened.apdu.first().copied().unwrap_or_default(),
                ))
            }
        };
        self.seal(&answer)
    }

    /// The newest load-profile row (captured by the meter's clock at `now`) pushed as a
    /// data-notification under general-glo-ciphering, wrapped: its body is
    /// `structure { octet-string meter system title, array of rows }` (no row if none yet).
    /// A one-row push takes 82 bytes: it does not fit at SF10-SF12 ([`DlmsServerError::PushTooLong`]).
    pub fn push(
        &mut self,
        objects: &impl CosemObjects,
        now: DateTime<Utc>,
    ) -> Result<Vec<u8>, DlmsServerError> {
        let newest = objects
            .profile_rows(DateTime::<Utc>::MIN_UTC, objects.meter_time(now))
            .pop();
        let mut notification = DataNotification {
            long_invoke_id_and_priority: self.next_ic,
            date_time: None,
            body: Data::Structure(vec![
                Data::OctetString(self.meter_title.to_vec()),
                Data::Array(newest.iter().map(profile_row).collect()),
            ]),
        };
        // general-glo-ciphering: DB 08 system-title, then as a glo-APDU.
        let len = wrapped_glo_len(
            Apdu::DataNotification(notification.clone())
                .to_bytes()
                .len(),
        ) + 9;
        if len > self.max_frm_payload {
            return Err(DlmsServerError::PushTooLong {
                len,
                max: self.max_frm_payload,
            });
        }
        let ic = self.take_ic()?;
        notification.long_invoke_id_and_priority = ic;
        let notification = Apdu::DataNotification(notification);
        let apdu = cipher::protect_general_glo(
            &self.keys,
            &self.meter_title,
            ic,
            SecurityControl::AUTHENTICATED_ENCRYPTED,
            &notification.to_bytes(),
        );
        wrap(&apdu)
    }

    fn take_ic(&mut self) -> Result<u32, DlmsServerError> {
        if self.next_ic == u32::MAX {
            return Err(DlmsServerError::CounterExhausted);
        }
        let ic = self.next_ic;
        self.next_ic += 1;
        Ok(ic)
    }

    /// Protects a plain answer with the meter's next IC and wraps it.
    fn seal(&mut self, plain: &[u8]) -> Result<Vec<u8>, DlmsServerError> {
        let ic = self.take_ic()?;
        let apdu = cipher::protect(
            &self.keys,
            &self.meter_title,
            ic,
            SecurityControl::AUTHENTICATED_ENCRYPTED,
            plain,
        )
        .map_err(DlmsServerError::NotDlms)?;
        wrap(&apdu)
    }

    /// The answer to get-request-next acknowledging block `received`.
    fn get_next(&mut self, invoke: InvokeIdAndPriority, received: u32) -> Vec<u8> {
        let Some(transfer) = &self.pending else {
            return block_error(invoke, received, DataAccessResult::NoLongGetInProgress);
        };
        if received == transfer.sent && !transfer.complete() {
            return self.next_block(invoke);
        }
        if received.checked_add(1) == Some(transfer.sent) {
            // The last block was lost: the same one again.
            let block = DataBlock {
                last_block: transfer.complete(),
                block_number: transfer.sent,
                result: Ok(transfer.data[transfer.last.clone()].to_vec()),
            };
            return datablock(invoke, block);
        }
        let error = if received == transfer.sent {
            DataAccessResult::NoLongGetInProgress
        } else {
            DataAccessResult::DataBlockNumberInvalid
        };
        self.pending = None;
        block_error(invoke, received, error)
    }

    /// Cuts the next block of the pending transfer, as large as fits one frame.
    fn next_block(&mut self, invoke: InvokeIdAndPriority) -> Vec<u8> {
        let max = self.max_frm_payload;
        let Some(transfer) = &mut self.pending else {
            return block_error(invoke, 0, DataAccessResult::NoLongGetInProgress);
        };
        let start = transfer.last.end;
        let left = transfer.data.len() - start;
        // get-response-with-datablock: C4 02 invoke last-block block-number(4) 00 length raw.
        let fits = |n: usize| wrapped_glo_len(9 + length_len(n) + n) <= max;
        let mut n = left.min(max);
        while n > 1 && !fits(n) {
            n -= 1;
        }
        transfer.sent += 1;
        transfer.last = start..start + n;
        let block = DataBlock {
            last_block: transfer.complete(),
            block_number: transfer.sent,
            result: Ok(transfer.data[transfer.last.clone()].to_vec()),
        };
        datablock(invoke, block)
    }
}

fn wrap(apdu: &[u8]) -> Result<Vec<u8>, DlmsServerError> {
    Wrapped {
        source: SERVER_MANAGEMENT,
        destination: CLIENT_MANAGEMENT,
        apdu,
    }
    .to_bytes()
    .map_err(DlmsServerError::BadWrapper)
}

fn get_response(invoke: InvokeIdAndPriority, result: GetDataResult) -> Vec<u8> {
    Apdu::GetResponse(GetResponse::Normal { invoke, result }).to_bytes()
}

fn datablock(invoke: InvokeIdAndPriority, block: DataBlock) -> Vec<u8> {
    Apdu::GetResponse(GetResponse::WithDatablock { invoke, block }).to_bytes()
}

/// A with-datablock answer that ends the transfer with `error`, numbered as the block the client
/// expects (so its reassembly reports the error, not a numbering fault).
fn block_error(invoke: InvokeIdAndPriority, received: u32, error: DataAccessResult) -> Vec<u8> {
    datablock(
        invoke,
        DataBlock {
            last_block: true,
            block_number: received.saturating_add(1),
            result: Err(error),
        },
    )
}

/// Which object an attribute or method descriptor names, if the meter has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Object {
    Clock,
    Import,
    Export,
    LoadProfile,
    PowerEvents,
    Disconnect,
    Serial,
    Manufacturer,
    Firmware,
}

impl Object {
    fn find(instance: Obis) -> Option<(Object, u16)> {
        Some(match instance {
            obis::CLOCK => (Object::Clock, obis::CLASS_CLOCK),
            obis::IMPORT_ENERGY => (Object::Import, obis::CLASS_REGISTER),
            obis::EXPORT_ENERGY => (Object::Export, obis::CLASS_REGISTER),
            obis::BLOCK_LOAD_PROFILE => (Object::LoadProfile, obis::CLASS_PROFILE_GENERIC),
            obis::EVENT_LOG_POWER => (Object::PowerEvents, obis::CLASS_PROFILE_GENERIC),
            obis::DISCONNECT_CONTROL => (Object::Disconnect, obis::CLASS_DISCONNECT_CONTROL),
            obis::METER_SERIAL => (Object::Serial, obis::CLASS_DATA),
            obis::MANUFACTURER => (Object::Manufacturer, obis::CLASS_DATA),
            obis::FIRMWARE_VERSION => (Object::Firmware, obis::CLASS_DATA),
            _ => return None,
        })
    }

    /// The object named by `class_id` and `instance`, or the access error.
    fn resolve(class_id: u16, instance: Obis) -> Result<Object, DataAccessResult> {
        match Object::find(instance) {
            None => Err(DataAccessResult::ObjectUndefined),
            Some((_, class)) if class != class_id => Err(DataAccessResult::ObjectClassInconsistent),
            Some((object, _)) => Ok(object),
        }
    }
}

/// The value of an attribute, or why it cannot be read.
fn get(
    objects: &impl CosemObjects,
    now: DateTime<Utc>,
    attribute: &AttributeDescriptor,
    access: Option<&AccessSelection>,
) -> Result<Data, DataAccessResult> {
    let object = Object::resolve(attribute.class_id, attribute.instance)?;
    let buffer = matches!(
        (object, attribute.attribute_id),
        (Object::LoadProfile | Object::PowerEvents, 2)
    );
    if access.is_some() && !buffer {
        // Selective access exists for the profile buffers only.
        return Err(DataAccessResult::OtherReason);
    }
    let text = |s: String| Ok(Data::OctetString(s.into_bytes()));
    match (object, attribute.attribute_id) {
        (_, 1) => Ok(Data::OctetString(attribute.instance.0.to_vec())),
        (Object::Clock, 2) => Ok(date_time(objects.meter_time(now))),
        (Object::Import, 2) => Ok(Data::DoubleLongUnsigned(register(objects.import_wh()))),
        (Object::Export, 2) => Ok(Data::DoubleLongUnsigned(register(objects.export_wh()))),
        (Object::Import | Object::Export, 3) => {
            Ok(Data::Structure(vec![Data::Integer(0), Data::Enum(UNIT_WH)]))
        }
        (Object::LoadProfile, 2) => profile_buffer(objects, access),
        (Object::LoadProfile, 3) => Ok(Data::Array(
            PROFILE_COLUMNS.iter().map(CaptureObject::to_data).collect(),
        )),
        (Object::LoadProfile, 4) => Ok(Data::DoubleLongUnsigned(INTERVAL_SECS)),
        (Object::PowerEvents, 2) => power_event_buffer(objects, access),
        (Object::PowerEvents, 3) => Ok(Data::Array(
            POWER_EVENT_COLUMNS
                .iter()
                .map(CaptureObject::to_data)
                .collect(),
        )),
        (Object::Disconnect, 2) => Ok(Data::Boolean(
            objects.relay_state() == RelayState::Connected,
        )),
        (Object::Disconnect, 3) => Ok(Data::Enum(objects.relay_state() as u8)),
        (Object::Serial, 2) => text(objects.nameplate().serial),
        (Object::Manufacturer, 2) => text(objects.nameplate().manufacturer),
        (Object::Firmware, 2) => text(objects.nameplate().firmware_version),
        _ => Err(DataAccessResult::ObjectUndefined),
    }
}

/// The load profile buffer: the rows in the range descriptor's capture-time range (all rows
/// without selective access), with the columns it selects (all if none).
fn profile_buffer(
    objects: &impl CosemObjects,
    access: Option<&AccessSelection>,
) -> Result<Data, DataAccessResult> {
    let (from, to, columns) = selected_range(access, &PROFILE_COLUMNS)?;
    let rows = if from > to {
        Vec::new()
    } else {
        objects.profile_rows(from, to)
    };
    Ok(Data::Array(
        rows.iter()
            .map(|r| match profile_row(r) {
                Data::Structure(values) if !columns.is_empty() => {
                    Data::Structure(columns.iter().map(|&i| values[i].clone()).collect())
                }
                row => row,
            })
            .collect(),
    ))
}

/// What a buffer read's selective access asks for: the clock range (everything without one) and
/// the indices of the columns selected (empty: all).
type Selection = (DateTime<Utc>, DateTime<Utc>, Vec<usize>);

fn selected_range(
    access: Option<&AccessSelection>,
    columns: &[CaptureObject],
) -> Result<Selection, DataAccessResult> {
    let Some(a) = access else {
        return Ok((
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            Vec::new(),
        ));
    };
    let range = RangeDescriptor::from_access_selection(a).ok_or(DataAccessResult::OtherReason)?;
    if range.restricting_object != CLOCK_TIME {
        return Err(DataAccessResult::OtherReason);
    }
    let from = read_date_time(&range.from).ok_or(DataAccessResult::TypeUnmatched)?;
    let to = read_date_time(&range.to).ok_or(DataAccessResult::TypeUnmatched)?;
    let selected = range
        .selected_values
        .iter()
        .map(|c| columns.iter().position(|p| p == c))
        .collect::<Option<Vec<usize>>>()
        .ok_or(DataAccessResult::ObjectUndefined)?;
    Ok((from, to, selected))
}

/// The power events log: the events in the range descriptor's range (all without selective
/// access), both columns (a column selection is refused).
fn power_event_buffer(
    objects: &impl CosemObjects,
    access: Option<&AccessSelection>,
) -> Result<Data, DataAccessResult> {
    let (from, to, columns) = selected_range(access, &POWER_EVENT_COLUMNS)?;
    if !columns.is_empty() {
        return Err(DataAccessResult::OtherReason);
    }
    let events = if from > to {
        Vec::new()
    } else {
        objects.power_events(from, to)
    };
    Ok(Data::Array(
        events
            .into_iter()
            .map(|(at, code)| Data::Structure(vec![date_time(at), Data::LongUnsigned(code)]))
            .collect(),
    ))
}

fn set_response(set: &SetRequest, objects: &mut impl CosemObjects, now: DateTime<Utc>) -> Vec<u8> {
    let result = match Object::resolve(set.attribute.class_id, set.attribute.instance) {
        Err(e) => e,
        Ok(_) if set.access.is_some() => DataAccessResult::OtherReason,
        Ok(Object::Clock) if set.attribute.attribute_id == 2 => match read_date_time(&set.value) {
            Some(to) => {
                objects.set_meter_time(now, to);
                DataAccessResult::Success
            }
            None => DataAccessResult::TypeUnmatched,
        },
        Ok(_) => DataAccessResult::ReadWriteDenied,
    };
    Apdu::SetResponse(SetResponse {
        invoke: set.invoke,
        result,
    })
    .to_bytes()
}

fn action_response(
    action: &ActionRequest,
    objects: &mut impl CosemObjects,
    now: DateTime<Utc>,
) -> Vec<u8> {
    let m = &action.method;
    let result = match Object::find(m.instance) {
        None => ActionResult::ObjectUndefined,
        Some((_, class)) if class != m.class_id => ActionResult::ObjectClassInconsistent,
        Some((Object::Disconnect, _)) if matches!(m.method_id, 1 | 2) => match action.parameters {
            None | Some(Data::Integer(0)) => match objects.operate_relay(m.method_id == 2, now) {
                Ok(_) => ActionResult::Success,
                Err(RelayRefusal::TemporaryFailure) => ActionResult::TemporaryFailure,
                Err(RelayRefusal::HardwareFault) => ActionResult::HardwareFault,
            },
            Some(_) => ActionResult::TypeUnmatched,
        },
        Some(_) => ActionResult::ObjectUnavailable,
    };
    Apdu::ActionResponse(ActionResponse {
        invoke: action.invoke,
        result,
        return_parameters: None,
    })
    .to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gramgrid_proto::dlms::apdu::{BlockAssembler, MethodDescriptor};
    use gramgrid_proto::dlms::cosem::{self, ControlState, ProfileBuffer, ScalerUnit};
    use gramgrid_proto::dlms::wrapper::CLIENT_PUBLIC;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// 10:30:30 IST, just after the last capture.
    const NOW: &str = "2024-03-15T05:00:30Z";
    const METER_TITLE: [u8; 8] = *b"MTR\x00\x00\x00\x00\x2a";
    const SF12: usize = 51;
    const SF9: usize = 115;
    const SF7: usize = 222;

    fn keys() -> Keys {
        Keys {
            encryption: *b"meter-42 EK 0001",
            authentication: *b"meter-42 AK 0001",
        }
    }

    fn gateway_title() -> [u8; 8] {
        gramgrid_proto::dlms::client::gateway_system_title("gw-test")
    }

    fn iip() -> InvokeIdAndPriority {
        InvokeIdAndPriority::new(1, true, true)
    }

    /// A meter whose clock runs `offset` ahead of true time, with eight intervals logged from
    /// 08:30 to 10:30 IST (captures 08:45 .. 10:30 IST).
    struct TestMeter {
        offset: Duration,
        import_wh: u64,
        export_wh: u64,
        rows: Vec<IntervalReading>,
        relay: RelayState,
        relay_stuck: bool,
        power_log: Vec<(DateTime<Utc>, u16)>,
    }

    impl TestMeter {
        fn new() -> Self {
            let rows = (0..8)
                .map(|k| IntervalReading {
                    interval_start: t("2024-03-15T03:00:00Z") + Duration::minutes(15 * k),
                    import_wh: 123_456 + 150 * k as u64,
                    export_wh: 7_000 + k as u64,
                })
                .collect::<Vec<_>>();
            TestMeter {
                offset: Duration::zero(),
                import_wh: rows[7].import_wh,
                export_wh: rows[7].export_wh,
                rows,
                relay: RelayState::Connected,
                relay_stuck: false,
                // A failure and its restoration, and a code the gateway does not map (a
                // voltage event): 3 events of 19 bytes, more than an SF12 frame carries.
                power_log: vec![
                    (t("2024-03-15T04:02:07Z"), 101),
                    (t("2024-03-15T04:20:00Z"), 7),
                    (t("2024-03-15T04:31:40Z"), 102),
                ],
            }
        }
    }

    impl CosemObjects for TestMeter {
        fn meter_time(&self, now: DateTime<Utc>) -> DateTime<Utc> {
            now + self.offset
        }
        fn set_meter_time(&mut self, now: DateTime<Utc>, to: DateTime<Utc>) {
            self.offset = to - now;
        }
        fn import_wh(&self) -> u64 {
            self.import_wh
        }
        fn export_wh(&self) -> u64 {
            self.export_wh
        }
        fn profile_rows(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<IntervalReading> {
            let fifteen = Duration::minutes(15);
            self.rows
                .iter()
                .filter(|r| (from..=to).contains(&(r.interval_start + fifteen)))
                .copied()
                .collect()
        }
        fn power_events(
            &self,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
        ) -> Vec<(DateTime<Utc>, u16)> {
            let log = self.power_log.iter();
            log.filter(|(at, _)| (from..=to).contains(at))
                .copied()
                .collect()
        }
        fn relay_state(&self) -> RelayState {
            self.relay
        }
        fn operate_relay(
            &mut self,
            connect: bool,
            _now: DateTime<Utc>,
        ) -> Result<bool, RelayRefusal> {
            if self.relay_stuck {
                return Err(RelayRefusal::TemporaryFailure);
            }
            let target = if connect {
                RelayState::Connected
            } else {
                RelayState::Disconnected
            };
            let moved = self.relay != target;
            self.relay = target;
            Ok(moved)
        }
        fn nameplate(&self) -> Nameplate {
            Nameplate {
                serial: "GG0000042".into(),
                manufacturer: "Gramgrid Sim".into(),
                firmware_version: "dlms-sim 1".into(),
            }
        }
    }

    /// The gateway's side, built from the codec only.
    struct Client {
        keys: Keys,
        ic: u32,
        meter_ic: ReplayGuard,
        answer_ics: Vec<u32>,
    }

    impl Client {
        fn new() -> Self {
            Client {
                keys: keys(),
                ic: 0,
                meter_ic: ReplayGuard::new(None),
                answer_ics: Vec::new(),
            }
        }

        /// The FRMPayload carrying `apdu` under the next IC.
        fn request(&mut self, apdu: &Apdu) -> Vec<u8> {
            self.ic += 1;
            self.frame(apdu, self.ic)
        }

        fn frame(&self, apdu: &Apdu, ic: u32) -> Vec<u8> {
            let glo = cipher::protect(
                &self.keys,
                &gateway_title(),
                ic,
                SecurityControl::AUTHENTICATED_ENCRYPTED,
                &apdu.to_bytes(),
            )
            .unwrap();
            wrapped(CLIENT_MANAGEMENT, &glo)
        }

        /// Opens the meter's answer: right ports, authentic, IC strictly above the last one.
        fn open(&mut self, frame: &[u8]) -> Apdu {
            let w = Wrapped::decode(frame).unwrap();
            assert_eq!(
                (w.source, w.destination),
                (SERVER_MANAGEMENT, CLIENT_MANAGEMENT)
            );
            let u = cipher::unprotect(&self.keys, &METER_TITLE, w.apdu).unwrap();
            assert_eq!(u.security_control, SecurityControl::AUTHENTICATED_ENCRYPTED);
            self.meter_ic.accept(u.invocation_counter).unwrap();
            self.answer_ics.push(u.invocation_counter);
            Apdu::decode(&u.apdu).unwrap()
        }
    }

    fn wrapped(source: u16, apdu: &[u8]) -> Vec<u8> {
        Wrapped {
            source,
            destination: SERVER_MANAGEMENT,
            apdu,
        }
        .to_bytes()
        .unwrap()
    }

    struct Rig {
        server: DlmsServer,
        client: Client,
        meter: TestMeter,
        now: DateTime<Utc>,
        /// Size of every answer frame so far.
        frame_sizes: Vec<usize>,
    }

    impl Rig {
        fn new(max_frm_payload: usize) -> Self {
            let mut server = DlmsServer::new(keys(), METER_TITLE, gateway_title());
            server.set_max_frm_payload(max_frm_payload);
            Rig {
                server,
                client: Client::new(),
                meter: TestMeter::new(),
                now: t(NOW),
                frame_sizes: Vec::new(),
            }
        }

        fn send(&mut self, frame: &[u8]) -> Result<Vec<u8>, DlmsServerError> {
            self.server.handle(frame, &mut self.meter, self.now)
        }

        fn ask(&mut self, apdu: &Apdu) -> Apdu {
            let frame = self.client.request(apdu);
            let answer = self.send(&frame).unwrap();
            self.frame_sizes.push(answer.len());
            self.client.open(&answer)
        }

        /// A GET's value, through get-request-next and [`BlockAssembler`] when it comes in
        /// blocks; and how many blocks it took (0: one get-response-normal).
        fn get(&mut self, apdu: &Apdu) -> (Result<Data, DataAccessResult>, u32) {
            let mut answer = self.ask(apdu);
            let mut assembler = BlockAssembler::new(64 * 1024);
            loop {
                match answer {
                    Apdu::GetResponse(GetResponse::Normal { result, .. }) => {
                        let result = match result {
                            GetDataResult::Data(d) => Ok(d),
                            GetDataResult::Error(e) => Err(e),
                        };
                        return (result, assembler.last_accepted());
                    }
                    Apdu::GetResponse(GetResponse::WithDatablock { block, .. }) => {
                        if let Some(raw) = assembler.push(&block).unwrap() {
                            return (Ok(Data::decode(&raw).unwrap()), block.block_number);
                        }
                        answer = self.ask(&next(assembler.last_accepted()));
                    }
                    other => panic!("not a get-response: {other:?}"),
                }
            }
        }

        fn get_data(&mut self, apdu: &Apdu) -> Data {
            self.get(apdu).0.unwrap()
        }

        fn action(&mut self, apdu: &Apdu) -> ActionResult {
            match self.ask(apdu) {
                Apdu::ActionResponse(a) => a.result,
                other => panic!("not an action-response: {other:?}"),
            }
        }

        fn control_state(&mut self) -> ControlState {
            ControlState::from_data(&self.get_data(&cosem::get_control_state(iip()))).unwrap()
        }
    }

    fn next(received: u32) -> Apdu {
        Apdu::GetRequest(GetRequest::Next {
            invoke: iip(),
            block_number: received,
        })
    }

    fn ist(utc: DateTime<Utc>) -> CosemDateTime {
        CosemDateTime::from_utc(utc, IST_DEVIATION, 0).unwrap()
    }

    fn profile_request(from: DateTime<Utc>, to: DateTime<Utc>) -> Apdu {
        cosem::get_profile_buffer(iip(), obis::BLOCK_LOAD_PROFILE, &ist(from), &ist(to))
    }

    /// What the gateway makes of a buffer: section 7's mapping onto IntervalReading.
    fn readings(columns: &Data, buffer: &Data) -> Vec<IntervalReading> {
        let columns = cosem::capture_objects(columns).unwrap();
        assert_eq!(columns, PROFILE_COLUMNS, "section 7 columns, in order");
        let buffer = ProfileBuffer::parse(columns, buffer).unwrap();
        let wh = |d: &Data| match d {
            Data::DoubleLongUnsigned(v) => u64::from(*v),
            other => panic!("not double-long-unsigned: {other:?}"),
        };
        buffer
            .rows
            .iter()
            .map(|row| IntervalReading {
                interval_start: cosem::clock_time(&row[0], None).unwrap() - Duration::minutes(15),
                import_wh: wh(&row[1]),
                export_wh: wh(&row[2]),
            })
            .collect()
    }

    #[test]
    fn a_profile_read_by_range_returns_exactly_the_rows_in_range() {
        let mut rig = Rig::new(SF7);
        let columns = rig.get_data(&cosem::get_capture_objects(iip(), obis::BLOCK_LOAD_PROFILE));
        // Captures at 09:00, 09:15 and 09:30 IST, both ends inclusive: intervals 08:45..09:15 IST.
        let (buffer, blocks) = rig.get(&profile_request(
            t("2024-03-15T03:30:00Z"),
            t("2024-03-15T04:00:00Z"),
        ));
        let buffer = buffer.unwrap();
        assert_eq!(blocks, 0, "three rows fit one frame at SF7");
        assert_eq!(readings(&columns, &buffer), rig.meter.rows[1..4]);
        // The capture time on the air is the end of the interval, in IST with deviation -330.
        let Data::Array(rows) = &buffer else {
            panic!("{buffer:?}")
        };
        let Data::Structure(first) = &rows[0] else {
            panic!("{rows:?}")
        };
        assert_eq!(
            first[0],
            Data::OctetString(ist(t("2024-03-15T03:30:00Z")).to_bytes().to_vec())
        );
        assert_eq!(
            &ist(t("2024-03-15T03:30:00Z")).to_bytes()[5..11],
            [9, 0, 0, 0, 0xFE, 0xB6]
        );

        // Nothing captured in the range: an empty array.
        let empty = rig.get_data(&profile_request(
            t("2024-03-16T00:00:00Z"),
            t("2024-03-16T01:00:00Z"),
        ));
        assert_eq!(empty, Data::Array(Vec::new()));
        // Without selective access: the whole buffer, oldest first.
        let all = rig.get_data(&cosem::get(
            iip(),
            obis::CLASS_PROFILE_GENERIC,
            obis::BLOCK_LOAD_PROFILE,
            2,
            None,
        ));
        assert_eq!(readings(&columns, &all), rig.meter.rows);
    }

    #[test]
    fn at_sf12_one_row_comes_in_blocks_that_each_fit_the_frame() {
        let one_row = profile_request(t("2024-03-15T03:15:00Z"), t("2024-03-15T03:15:00Z"));
        let mut sf7 = Rig::new(SF7);
        let (whole, blocks) = sf7.get(&one_row);
        assert_eq!(blocks, 0);
        assert_eq!(sf7.frame_sizes.len(), 1);
        assert!(sf7.frame_sizes[0] <= SF7);

        let mut sf12 = Rig::new(SF12);
        let (reassembled, blocks) = sf12.get(&one_row);
        assert!(blocks >= 2, "{blocks} blocks");
        assert_eq!(sf12.frame_sizes.len() as u32, blocks);
        assert!(
            sf12.frame_sizes.iter().all(|n| *n <= SF12),
            "{:?}",
            sf12.frame_sizes
        );
        // Blocks are filled: every frame but the last is exactly the limit.
        let (last, full) = sf12.frame_sizes.split_last().unwrap();
        assert!(full.iter().all(|n| *n == SF12) && *last <= SF12);
        assert_eq!(reassembled, whole);
        let columns = Data::Array(PROFILE_COLUMNS.iter().map(CaptureObject::to_data).collect());
        assert_eq!(
            readings(&columns, &reassembled.unwrap()),
            sf12.meter.rows[..1]
        );
        // A small answer is one frame at SF12.
        let (state, blocks) = sf12.get(&cosem::get_control_state(iip()));
        assert_eq!((state, blocks), (Ok(Data::Enum(1)), 0));
    }

    #[test]
    fn a_lost_block_is_sent_again_and_a_new_get_abandons_the_transfer() {
        let mut rig = Rig::new(SF12);
        let all = cosem::get(
            iip(),
            obis::CLASS_PROFILE_GENERIC,
            obis::BLOCK_LOAD_PROFILE,
            2,
            None,
        );
        let block = |a: Apdu| match a {
            Apdu::GetResponse(GetResponse::WithDatablock { block, .. }) => block,
            other => panic!("not a block: {other:?}"),
        };
        let b1 = block(rig.ask(&all));
        assert_eq!((b1.block_number, b1.last_block), (1, false));
        let b2 = block(rig.ask(&next(1)));
        assert_eq!(b2.block_number, 2);
        // Block 2 was lost: the gateway asks with the same get-request-next and gets it again.
        assert_eq!(block(rig.ask(&next(1))), b2);
        assert_eq!(block(rig.ask(&next(2))).block_number, 3);
        // A block number that is neither the last nor the one before ends the transfer.
        let bad = block(rig.ask(&next(7)));
        assert_eq!(bad.result, Err(DataAccessResult::DataBlockNumberInvalid));
        assert!(bad.last_block);
        assert_eq!(
            block(rig.ask(&next(3))).result,
            Err(DataAccessResult::NoLongGetInProgress)
        );

        // A new get-request-normal abandons a transfer in progress.
        assert_eq!(block(rig.ask(&all)).block_number, 1);
        assert_eq!(
            rig.get_data(&cosem::get_clock(iip())),
            Data::OctetString(ist(t(NOW)).to_bytes().to_vec())
        );
        let after = block(rig.ask(&next(1)));
        assert_eq!(after.result, Err(DataAccessResult::NoLongGetInProgress));
        // The gateway's assembler reports the error, not a numbering fault.
        let mut assembler = BlockAssembler::new(1024);
        assembler.push(&b1).unwrap();
        assert_eq!(
            assembler.push(&after),
            Err(gramgrid_proto::dlms::apdu::BlockError::Aborted(
                DataAccessResult::NoLongGetInProgress
            ))
        );
    }

    #[test]
    fn remote_disconnect_and_reconnect_switch_the_control_state() {
        let mut rig = Rig::new(SF12);
        assert_eq!(rig.control_state(), ControlState::Connected);
        assert_eq!(
            rig.action(&cosem::remote_disconnect(iip())),
            ActionResult::Success
        );
        assert_eq!(rig.control_state(), ControlState::Disconnected);
        assert_eq!(
            rig.get_data(&cosem::get_control_state(iip())),
            Data::Enum(0)
        );
        assert_eq!(
            rig.get_data(&cosem::get_output_state(iip())),
            Data::Boolean(false)
        );
        // A repeated command is acknowledged again and changes nothing.
        assert_eq!(
            rig.action(&cosem::remote_disconnect(iip())),
            ActionResult::Success
        );
        assert_eq!(rig.control_state(), ControlState::Disconnected);
        assert_eq!(
            rig.action(&cosem::remote_reconnect(iip())),
            ActionResult::Success
        );
        assert_eq!(
            rig.get_data(&cosem::get_control_state(iip())),
            Data::Enum(1)
        );
        assert_eq!(
            rig.get_data(&cosem::get_output_state(iip())),
            Data::Boolean(true)
        );

        // A relay that cannot move now: temporary-failure, and the state stays.
        rig.meter.relay_stuck = true;
        assert_eq!(
            rig.action(&cosem::remote_disconnect(iip())),
            ActionResult::TemporaryFailure
        );
        assert_eq!(rig.control_state(), ControlState::Connected);
        rig.meter.relay_stuck = false;

        // Other methods and parameters are refused without touching the relay.
        let method = |method_id, parameters| {
            Apdu::ActionRequest(ActionRequest {
                invoke: iip(),
                method: MethodDescriptor {
                    class_id: obis::CLASS_DISCONNECT_CONTROL,
                    instance: obis::DISCONNECT_CONTROL,
                    method_id,
                },
                parameters,
            })
        };
        assert_eq!(
            rig.action(&method(3, Some(Data::Integer(0)))),
            ActionResult::ObjectUnavailable
        );
        assert_eq!(
            rig.action(&method(1, Some(Data::Integer(5)))),
            ActionResult::TypeUnmatched
        );
        assert_eq!(rig.meter.relay, RelayState::Connected);
    }

    #[test]
    fn set_clock_moves_the_meter_clock() {
        let mut rig = Rig::new(SF12);
        let read = |rig: &mut Rig| {
            cosem::clock_time(&rig.get_data(&cosem::get_clock(iip())), None).unwrap()
        };
        assert_eq!(read(&mut rig), t(NOW));
        let target = t(NOW) + Duration::minutes(7) + Duration::seconds(3);
        let set = Apdu::SetRequest(SetRequest {
            invoke: iip(),
            attribute: AttributeDescriptor {
                class_id: obis::CLASS_CLOCK,
                instance: obis::CLOCK,
                attribute_id: 2,
            },
            access: None,
            value: Data::OctetString(ist(target).to_bytes().to_vec()),
        });
        match rig.ask(&set) {
            Apdu::SetResponse(r) => assert_eq!(r.result, DataAccessResult::Success),
            other => panic!("{other:?}"),
        }
        assert_eq!(rig.meter.meter_time(t(NOW)), target);
        assert_eq!(read(&mut rig), target);
        // Read-only attributes and values that are not date-times are refused.
        let mut bad = set.clone();
        if let Apdu::SetRequest(s) = &mut bad {
            s.value = Data::OctetString(vec![0; 5]);
        }
        match rig.ask(&bad) {
            Apdu::SetResponse(r) => assert_eq!(r.result, DataAccessResult::TypeUnmatched),
            other => panic!("{other:?}"),
        }
        if let Apdu::SetRequest(s) = &mut bad {
            s.attribute = AttributeDescriptor {
                class_id: obis::CLASS_REGISTER,
                instance: obis::IMPORT_ENERGY,
                attribute_id: 2,
            };
            s.value = Data::DoubleLongUnsigned(0);
        }
        match rig.ask(&bad) {
            Apdu::SetResponse(r) => assert_eq!(r.result, DataAccessResult::ReadWriteDenied),
            other => panic!("{other:?}"),
        }
        assert_eq!(rig.meter.import_wh, 123_456 + 150 * 7);
        assert_eq!(read(&mut rig), target);
    }

    #[test]
    fn registers_nameplate_and_unknown_objects() {
        let mut rig = Rig::new(SF12);
        assert_eq!(
            rig.get_data(&cosem::get_register_value(iip(), obis::IMPORT_ENERGY)),
            Data::DoubleLongUnsigned(124_506)
        );
        assert_eq!(
            rig.get_data(&cosem::get_register_value(iip(), obis::EXPORT_ENERGY)),
            Data::DoubleLongUnsigned(7_007)
        );
        let su = rig.get_data(&cosem::get_register_scaler_unit(iip(), obis::IMPORT_ENERGY));
        assert_eq!(
            ScalerUnit::from_data(&su).unwrap(),
            ScalerUnit {
                scaler: 0,
                unit: 30
            }
        );
        let data = |obis| cosem::get(iip(), obis::CLASS_DATA, obis, 2, None);
        assert_eq!(
            rig.get_data(&data(obis::METER_SERIAL)),
            Data::OctetString(b"GG0000042".to_vec())
        );
        assert_eq!(
            rig.get_data(&data(obis::MANUFACTURER)),
            Data::OctetString(b"Gramgrid Sim".to_vec())
        );
        assert_eq!(
            rig.get_data(&data(obis::FIRMWARE_VERSION)),
            Data::OctetString(b"dlms-sim 1".to_vec())
        );
        assert_eq!(
            rig.get(&data(obis::LIMITER)).0,
            Err(DataAccessResult::ObjectUndefined)
        );
        assert_eq!(
            rig.get(&cosem::get(iip(), obis::CLASS_DATA, obis::CLOCK, 2, None))
                .0,
            Err(DataAccessResult::ObjectClassInconsistent)
        );
        assert_eq!(
            rig.get(&cosem::get(iip(), obis::CLASS_CLOCK, obis::CLOCK, 9, None))
                .0,
            Err(DataAccessResult::ObjectUndefined)
        );
    }

    #[test]
    fn refused_requests_get_no_answer_and_change_nothing() {
        let mut rig = Rig::new(SF12);
        assert_eq!(rig.control_state(), ControlState::Connected);
        let (client_ic, next_ic) = (rig.server.client_ic(), rig.server.next_ic());
        assert_eq!((client_ic, next_ic), (Some(1), 2));
        let disconnect = cosem::remote_disconnect(iip());
        let glo = |keys: &Keys, sc, ic| {
            cipher::protect(keys, &gateway_title(), ic, sc, &disconnect.to_bytes()).unwrap()
        };
        let ae = SecurityControl::AUTHENTICATED_ENCRYPTED;
        let other_keys = Keys {
            encryption: [7; 16],
            ..keys()
        };
        let mut flipped = rig.client.frame(&disconnect, 2);
        let last = flipped.len() - 13;
        flipped[last] ^= 0x01;
        let mut sc20 = rig.client.frame(&disconnect, 2);
        sc20[gramgrid_proto::dlms::wrapper::HEADER_LEN + 2] = 0x20;

        let cases: Vec<(&str, Vec<u8>, DlmsServerError)> = vec![
            (
                "replayed",
                rig.client.frame(&disconnect, 1),
                DlmsServerError::Replayed(Replayed { last: 1, got: 1 }),
            ),
            (
                "wrong key",
                wrapped(CLIENT_MANAGEMENT, &glo(&other_keys, ae, 2)),
                DlmsServerError::AuthenticationFailed,
            ),
            (
                "other sender's system title",
                wrapped(
                    CLIENT_MANAGEMENT,
                    &cipher::protect(
                        &keys(),
                        &gramgrid_proto::dlms::client::gateway_system_title("gw-other"),
                        2,
                        ae,
                        &disconnect.to_bytes(),
                    )
                    .unwrap(),
                ),
                DlmsServerError::AuthenticationFailed,
            ),
            (
                "flipped bit",
                flipped,
                DlmsServerError::AuthenticationFailed,
            ),
            (
                "public client port",
                wrapped(CLIENT_PUBLIC, &glo(&keys(), ae, 2)),
                DlmsServerError::WrongWport {
                    source_wport: CLIENT_PUBLIC,
                    destination_wport: SERVER_MANAGEMENT,
                },
            ),
            ("SC 0x20", sc20, DlmsServerError::SecurityControl(0x20)),
            (
                "SC 0x10",
                wrapped(
                    CLIENT_MANAGEMENT,
                    &glo(&keys(), SecurityControl::AUTHENTICATED, 2),
                ),
                DlmsServerError::SecurityControl(0x10),
            ),
            (
                "plain",
                wrapped(CLIENT_MANAGEMENT, &disconnect.to_bytes()),
                DlmsServerError::NotDlms(CipherError::WrongTag(0xC3)),
            ),
            (
                "wrapper version 2",
                {
                    let mut f = rig.client.frame(&disconnect, 2);
                    f[1] = 2;
                    f
                },
                DlmsServerError::BadWrapper(WrapperError::Version(2)),
            ),
        ];
        for (what, frame, want) in cases {
            assert_eq!(rig.send(&frame), Err(want.clone()), "{what}");
            assert_eq!(rig.meter.relay, RelayState::Connected, "{what}");
            assert_eq!(rig.server.client_ic(), client_ic, "{what}");
            assert_eq!(rig.server.next_ic(), next_ic, "{what}");
        }
        assert_eq!(
            DlmsServerError::Replayed(Replayed { last: 1, got: 1 }).counter(),
            Some("dlms_replayed")
        );
        assert_eq!(
            DlmsServerError::AuthenticationFailed.counter(),
            Some("dlms_bad_tag")
        );
        assert_eq!(
            DlmsServerError::SecurityControl(0x20).counter(),
            Some("dlms_malformed")
        );

        // An authentic client response is not a request: refused, though its counter is spent.
        let response = Apdu::SetResponse(SetResponse {
            invoke: iip(),
            result: DataAccessResult::Success,
        });
        let frame = rig.client.frame(&response, 2);
        assert_eq!(
            rig.send(&frame),
            Err(DlmsServerError::UnsupportedApdu(0xC5))
        );
        assert_eq!(rig.server.client_ic(), Some(2));

        // The genuine command with the next counter still works: nothing above advanced the
        // meter's own counter or moved the relay.
        rig.client.ic = 2;
        assert_eq!(rig.action(&disconnect), ActionResult::Success);
        assert_eq!(rig.client.answer_ics, [1, 2]);
        assert_eq!(rig.meter.relay, RelayState::Disconnected);

        // After a restart with the stored counters, an old frame is still a replay.
        let mut restarted = DlmsServer::new(keys(), METER_TITLE, gateway_title());
        restarted.restore_counters(rig.server.next_ic(), rig.server.client_ic());
        let old = rig.client.frame(&cosem::remote_reconnect(iip()), 3);
        assert_eq!(
            restarted.handle(&old, &mut rig.meter, rig.now),
            Err(DlmsServerError::Replayed(Replayed { last: 3, got: 3 }))
        );
        assert_eq!(rig.meter.relay, RelayState::Disconnected);
    }

    #[test]
    fn answer_counters_strictly_increase_and_a_push_carries_the_newest_row() {
        let mut rig = Rig::new(SF12);
        // Blocks, a plain answer, an error answer and an action: each answer takes a new IC.
        let (all, blocks) = rig.get(&profile_request(
            t("2024-03-15T03:00:00Z"),
            t("2024-03-15T05:00:00Z"),
        ));
        assert_eq!(
            (all.map(|d| d.to_bytes().len()), blocks > 10),
            (Ok(2 + 8 * 26), true)
        );
        assert!(rig.get(&cosem::get_clock(iip())).0.is_ok());
        assert_eq!(
            rig.get(&cosem::get_register_value(iip(), obis::LIMITER)).0,
            Err(DataAccessResult::ObjectUndefined)
        );
        assert_eq!(
            rig.action(&cosem::remote_disconnect(iip())),
            ActionResult::Success
        );
        let ics = rig.client.answer_ics.clone();
        assert!(ics.len() > 10, "{ics:?}");
        assert!(ics.windows(2).all(|w| w[0] < w[1]), "{ics:?}");
        assert_eq!(ics[0], 1, "the meter's IC starts at 1");
        assert_eq!(rig.server.next_ic(), ics[ics.len() - 1] + 1);

        // A one-row push does not fit SF12: refused, its counter not spent.
        let next_ic = rig.server.next_ic();
        assert_eq!(
            rig.server.push(&rig.meter, rig.now),
            Err(DlmsServerError::PushTooLong { len: 82, max: SF12 })
        );
        assert_eq!(rig.server.next_ic(), next_ic);
        rig.server.set_max_frm_payload(SF9);
        let frame = rig.server.push(&rig.meter, rig.now).unwrap();
        assert_eq!(frame.len(), 82);
        let w = Wrapped::decode(&frame).unwrap();
        assert_eq!(
            (w.source, w.destination),
            (SERVER_MANAGEMENT, CLIENT_MANAGEMENT)
        );
        let (title, _) = cipher::general_glo_parts(w.apdu).unwrap();
        assert_eq!(title, METER_TITLE);
        let opened = cipher::unprotect_general_glo(&keys(), w.apdu).unwrap();
        assert_eq!(
            opened.security_control,
            SecurityControl::AUTHENTICATED_ENCRYPTED
        );
        assert!(opened.invocation_counter > ics[ics.len() - 1]);
        let Apdu::DataNotification(n) = Apdu::decode(&opened.apdu).unwrap() else {
            panic!("not a data-notification")
        };
        assert_eq!(n.long_invoke_id_and_priority, opened.invocation_counter);
        assert_eq!(n.date_time, None);
        let Data::Structure(body) = &n.body else {
            panic!("{:?}", n.body)
        };
        assert_eq!(body[0], Data::OctetString(METER_TITLE.to_vec()));
        let columns = Data::Array(PROFILE_COLUMNS.iter().map(CaptureObject::to_data).collect());
        assert_eq!(readings(&columns, &body[1]), [rig.meter.rows[7]]);

        // The next answer continues above the push.
        assert!(rig.get(&cosem::get_clock(iip())).0.is_ok());
        assert!(rig.client.answer_ics.last() > Some(&opened.invocation_counter));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut rig = Rig::new(SF12);
            let _ = rig.send(&bytes);
            let mut framed = wrapped(CLIENT_MANAGEMENT, &bytes);
            let _ = rig.send(&framed);
            framed.truncate(framed.len() / 2);
            let _ = rig.send(&framed);
        }

        #[test]
        fn arbitrary_authentic_apdus_never_panic(
            body in prop::collection::vec(any::<u8>(), 0..200),
            tag in prop::sample::select(vec![0xC0u8, 0xC1, 0xC3, 0xC4]),
            max in 0usize..300,
        ) {
            let mut rig = Rig::new(max);
            let apdu = [&[tag][..], &body].concat();
            let glo = cipher::protect(
                &keys(), &gateway_title(), 1, SecurityControl::AUTHENTICATED_ENCRYPTED, &apdu,
            ).unwrap();
            let _ = rig.send(&wrapped(CLIENT_MANAGEMENT, &glo));
            prop_assert_eq!(rig.meter.relay == RelayState::Connected || tag == 0xC3, true);
        }

        #[test]
        fn any_profile_range_answers_the_rows_in_it_at_any_limit(
            from in 0i64..12, len in 0i64..12, max in 51usize..260,
        ) {
            let mut rig = Rig::new(max);
            let base = t("2024-03-15T03:00:00Z");
            let (from, to) = (
                base + Duration::minutes(15 * from),
                base + Duration::minutes(15 * (from + len)),
            );
            let (data, _) = rig.get(&profile_request(from, to));
            prop_assert!(rig.frame_sizes.iter().all(|n| *n <= max));
            let columns = Data::Array(PROFILE_COLUMNS.iter().map(CaptureObject::to_data).collect());
            let want: Vec<_> = rig.meter.profile_rows(from, to);
            prop_assert_eq!(readings(&columns, &data.unwrap()), want);
        }
    }

    /// The gateway's real client against this server: each request goes to `handle`, each
    /// answer back to `on_uplink`, following blocks until the answer is whole.
    fn exchange(
        client: &mut gramgrid_proto::dlms::client::DlmsClient,
        server: &mut DlmsServer,
        meter: &mut TestMeter,
        request: Vec<u8>,
    ) -> gramgrid_proto::dlms::client::Answer {
        use gramgrid_proto::dlms::client::Answer;
        let mut frame = request;
        loop {
            let answer = server.handle(&frame, meter, t(NOW)).unwrap();
            assert!(
                answer.len() <= server.max_frm_payload(),
                "{} bytes",
                answer.len()
            );
            match client.on_uplink(&answer).unwrap() {
                Answer::NextBlock(next) => frame = next,
                whole => return whole,
            }
        }
    }

    #[test]
    fn the_gateways_client_reads_and_switches_this_meter_at_every_frame_size() {
        use gramgrid_proto::dlms::client::{rows_that_fit, Answer, DlmsClient};
        use gramgrid_proto::payload::RelayAction;
        for limit in [SF12, SF9, SF7] {
            let mut meter = TestMeter::new();
            let mut server = DlmsServer::new(keys(), METER_TITLE, gateway_title());
            server.set_max_frm_payload(limit);
            let mut client = DlmsClient::new(keys(), METER_TITLE, gateway_title());
            // All eight intervals, read in requests of as many rows as fit one frame.
            // `since` is the start of the first interval asked for.
            let mut since = meter.rows[0].interval_start;
            let mut read = Vec::new();
            while read.len() < meter.rows.len() {
                let rows = rows_that_fit(limit);
                let request = client.read_intervals(since, rows).unwrap();
                let Answer::Intervals(got) =
                    exchange(&mut client, &mut server, &mut meter, request)
                else {
                    panic!("not intervals");
                };
                assert!(
                    !got.is_empty() && got.len() <= rows,
                    "{limit} B: {} rows",
                    got.len()
                );
                since = got.last().unwrap().interval_start + Duration::minutes(15);
                read.extend(got);
            }
            assert_eq!(read, meter.rows, "{limit} B");

            for (action, state) in [
                (RelayAction::Disconnect, RelayState::Disconnected),
                (RelayAction::Connect, RelayState::Connected),
            ] {
                let request = client.relay(action).unwrap();
                let done = exchange(&mut client, &mut server, &mut meter, request);
                assert_eq!(
                    done,
                    Answer::RelayActionDone {
                        action,
                        accepted: true
                    }
                );
                let request = client.read_relay_state().unwrap();
                let seen = exchange(&mut client, &mut server, &mut meter, request);
                assert_eq!(seen, Answer::RelayState(state), "{limit} B");
            }
            // Both ends kept their counters in step: the next request is still accepted.
            assert_eq!(server.client_ic(), Some(client.next_ic() - 1));
        }
    }

    /// The power events log read by range, in blocks at SF12 and in one frame at SF7: failures and
    /// restorations become meter events, other codes are left out, and the range is honoured.
    #[test]
    fn the_gateways_client_reads_the_power_events_log_by_range() {
        use gramgrid_proto::dlms::client::{Answer, DlmsClient};
        use gramgrid_proto::payload::{EventKind, MeterEvent};
        for limit in [SF12, SF7] {
            let mut meter = TestMeter::new();
            let mut server = DlmsServer::new(keys(), METER_TITLE, gateway_title());
            server.set_max_frm_payload(limit);
            let mut client = DlmsClient::new(keys(), METER_TITLE, gateway_title());
            let (from, to) = (t("2024-03-15T04:00:00Z"), t("2024-03-15T05:00:00Z"));
            let request = client.read_power_events(from, to).unwrap();
            let events = exchange(&mut client, &mut server, &mut meter, request);
            assert_eq!(
                events,
                Answer::PowerEvents(vec![
                    MeterEvent {
                        kind: EventKind::PowerFail,
                        at: t("2024-03-15T04:02:07Z")
                    },
                    MeterEvent {
                        kind: EventKind::PowerRestore,
                        at: t("2024-03-15T04:31:40Z")
                    },
                ]),
                "{limit} B"
            );
            let later = client
                .read_power_events(t("2024-03-15T04:30:00Z"), to)
                .unwrap();
            let Answer::PowerEvents(restored) =
                exchange(&mut client, &mut server, &mut meter, later)
            else {
                panic!("not power events");
            };
            assert_eq!(restored.len(), 1, "{limit} B");
        }
    }

    /// At SF12 a row comes in blocks; a block lost on the air is asked for again with the
    /// client's `next_block`, and the meter sends it again: the read completes.
    #[test]
    fn a_block_lost_on_the_air_is_asked_for_again_and_the_read_completes() {
        use gramgrid_proto::dlms::client::{Answer, DlmsClient};
        let mut meter = TestMeter::new();
        let mut server = DlmsServer::new(keys(), METER_TITLE, gateway_title());
        server.set_max_frm_payload(SF12);
        let mut client = DlmsClient::new(keys(), METER_TITLE, gateway_title());
        let request = client
            .read_intervals(meter.rows[0].interval_start, 1)
            .unwrap();
        let first = server.handle(&request, &mut meter, t(NOW)).unwrap();
        let Answer::NextBlock(next) = client.on_uplink(&first).unwrap() else {
            panic!("one row at SF12 comes in blocks");
        };
        // The meter's answer to `next` is lost; the gateway asks again.
        let _lost = server.handle(&next, &mut meter, t(NOW)).unwrap();
        let again = client.next_block().unwrap();
        let mut answer = server.handle(&again, &mut meter, t(NOW)).unwrap();
        let rows = loop {
            match client.on_uplink(&answer).unwrap() {
                Answer::NextBlock(next) => {
                    answer = server.handle(&next, &mut meter, t(NOW)).unwrap()
                }
                Answer::Intervals(rows) => break rows,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(rows, meter.rows[..1]);
    }
}
