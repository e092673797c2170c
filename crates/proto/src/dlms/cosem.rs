//! Typed requests and answers for the IS 15959-2 objects a gateway uses: clock, registers
//! (value and scaler_unit), profile generic (buffer by time range, capture objects) and
//! disconnect control (remote disconnect/reconnect, control and output state).

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::apdu::{
    range_descriptor, AccessSelection, ActionRequest, Apdu, AttributeDescriptor, CaptureObject,
    DataAccessResult, GetDataResult, GetRequest, GetResponse, InvokeIdAndPriority,
    MethodDescriptor, CLOCK_TIME,
};
use super::axdr::Data;
use super::datetime::{CosemDateTime, DateTimeError};
use super::obis::{self, Obis};

/// Why an answer does not have the shape the object defines.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CosemError {
    /// The value has another type than the attribute defines.
    #[error("`{field}` is {got}, expected {expected}")]
    UnexpectedType {
        /// What was parsed.
        field: &'static str,
        /// The expected type.
        expected: &'static str,
        /// The A-XDR type received.
        got: &'static str,
    },
    /// An enum value outside the attribute's domain.
    #[error("`{field}` has invalid value {value}")]
    InvalidValue {
        /// What was parsed.
        field: &'static str,
        /// The value received.
        value: i128,
    },
    /// The meter answered with an access error instead of data.
    #[error("the meter refused access: {0:?}")]
    Access(DataAccessResult),
    /// The APDU is not a get-response-normal.
    #[error("expected a get-response-normal")]
    NotGetResponseNormal,
    /// A profile row does not have one value per capture object.
    #[error("profile row {row} has {got} values for {expected} capture objects")]
    RowWidth {
        /// Row index.
        row: usize,
        /// Number of capture objects.
        expected: usize,
        /// Values in the row.
        got: usize,
    },
    /// A date-time value is malformed or does not name an instant.
    #[error("invalid date-time: {0}")]
    DateTime(#[from] DateTimeError),
}

fn unexpected(field: &'static str, expected: &'static str, got: &Data) -> CosemError {
    CosemError::UnexpectedType {
        field,
        expected,
        got: got.type_name(),
    }
}

/// The capture objects of the block load profile on the gramgrid link, in the order
/// docs/dlms.md section 7 fixes: capture time (clock attr 2), cumulative import and cumulative
/// export (register attr 2). The gateway reads a buffer by them and the simulated meter fills one.
pub const PROFILE_COLUMNS: [CaptureObject; 3] = [
    CLOCK_TIME,
    CaptureObject {
        class_id: obis::CLASS_REGISTER,
        instance: obis::IMPORT_ENERGY,
        attribute_id: 2,
        data_index: 0,
    },
    CaptureObject {
        class_id: obis::CLASS_REGISTER,
        instance: obis::EXPORT_ENERGY,
        attribute_id: 2,
        data_index: 0,
    },
];

/// The capture objects of the power failure related events log (docs/dlms.md section 7): the
/// event's time (clock attr 2) and its code (event code data object, attr 2, long-unsigned).
pub const POWER_EVENT_COLUMNS: [CaptureObject; 2] = [
    CLOCK_TIME,
    CaptureObject {
        class_id: obis::CLASS_DATA,
        instance: obis::EVENT_CODE_POWER,
        attribute_id: 2,
        data_index: 0,
    },
];
/// IS 15959-2 event code: supply failed.
pub const EVENT_POWER_FAILURE: u16 = 101;
/// IS 15959-2 event code: supply restored.
pub const EVENT_POWER_RESTORED: u16 = 102;

/// A GET of one attribute.
pub fn get(
    invoke: InvokeIdAndPriority,
    class_id: u16,
    instance: Obis,
    attribute_id: i8,
    access: Option<AccessSelection>,
) -> Apdu {
    Apdu::GetRequest(GetRequest::Normal {
        invoke,
        attribute: AttributeDescriptor {
            class_id,
            instance,
            attribute_id,
        },
        access,
    })
}

/// GET clock (class 8) attribute 2, the meter time.
pub fn get_clock(invoke: InvokeIdAndPriority) -> Apdu {
    get(invoke, obis::CLASS_CLOCK, obis::CLOCK, 2, None)
}

/// GET register (class 3) attribute 2, the value.
pub fn get_register_value(invoke: InvokeIdAndPriority, register: Obis) -> Apdu {
    get(invoke, obis::CLASS_REGISTER, register, 2, None)
}

/// GET register (class 3) attribute 3, scaler_unit.
pub fn get_register_scaler_unit(invoke: InvokeIdAndPriority, register: Obis) -> Apdu {
    get(invoke, obis::CLASS_REGISTER, register, 3, None)
}

/// GET profile generic (class 7) attribute 2, the buffer rows whose clock column lies in
/// `from..=to` (range descriptor, all columns).
pub fn get_profile_buffer(
    invoke: InvokeIdAndPriority,
    profile: Obis,
    from: &CosemDateTime,
    to: &CosemDateTime,
) -> Apdu {
    get(
        invoke,
        obis::CLASS_PROFILE_GENERIC,
        profile,
        2,
        Some(range_descriptor(from, to)),
    )
}

/// GET profile generic (class 7) attribute 3, capture_objects (the buffer's columns).
pub fn get_capture_objects(invoke: InvokeIdAndPriority, profile: Obis) -> Apdu {
    get(invoke, obis::CLASS_PROFILE_GENERIC, profile, 3, None)
}

fn disconnect_action(invoke: InvokeIdAndPriority, method_id: i8) -> Apdu {
    Apdu::ActionRequest(ActionRequest {
        invoke,
        method: MethodDescriptor {
            class_id: obis::CLASS_DISCONNECT_CONTROL,
            instance: obis::DISCONNECT_CONTROL,
            method_id,
        },
        parameters: Some(Data::Integer(0)),
    })
}

/// ACTION disconnect control (class 70) method 1, remote_disconnect (parameter integer 0).
pub fn remote_disconnect(invoke: InvokeIdAndPriority) -> Apdu {
    disconnect_action(invoke, 1)
}

/// ACTION disconnect control (class 70) method 2, remote_reconnect (parameter integer 0).
pub fn remote_reconnect(invoke: InvokeIdAndPriority) -> Apdu {
    disconnect_action(invoke, 2)
}

/// GET disconnect control attribute 2, output_state (boolean: true = connected).
pub fn get_output_state(invoke: InvokeIdAndPriority) -> Apdu {
    get(
        invoke,
        obis::CLASS_DISCONNECT_CONTROL,
        obis::DISCONNECT_CONTROL,
        2,
        None,
    )
}

/// GET disconnect control attribute 3, control_state.
pub fn get_control_state(invoke: InvokeIdAndPriority) -> Apdu {
    get(
        invoke,
        obis::CLASS_DISCONNECT_CONTROL,
        obis::DISCONNECT_CONTROL,
        3,
        None,
    )
}

/// The data of a get-response-normal, or the meter's access error.
pub fn response_data(apdu: &Apdu) -> Result<&Data, CosemError> {
    match apdu {
        Apdu::GetResponse(GetResponse::Normal {
            result: GetDataResult::Data(d),
            ..
        }) => Ok(d),
        Apdu::GetResponse(GetResponse::Normal {
            result: GetDataResult::Error(e),
            ..
        }) => Err(CosemError::Access(*e)),
        _ => Err(CosemError::NotGetResponseNormal),
    }
}

/// Disconnect control attribute 3, control_state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlState {
    /// disconnected (0).
    Disconnected = 0,
    /// connected (1).
    Connected = 1,
    /// ready_for_reconnection (2).
    ReadyForReconnection = 2,
}

impl ControlState {
    /// From the attribute value (an enum).
    pub fn from_data(d: &Data) -> Result<Self, CosemError> {
        match d {
            Data::Enum(0) => Ok(ControlState::Disconnected),
            Data::Enum(1) => Ok(ControlState::Connected),
            Data::Enum(2) => Ok(ControlState::ReadyForReconnection),
            Data::Enum(v) => Err(CosemError::InvalidValue {
                field: "control_state",
                value: (*v).into(),
            }),
            other => Err(unexpected("control_state", "enum", other)),
        }
    }
}

/// Disconnect control attribute 2, output_state: true when the supply is connected.
pub fn output_state(d: &Data) -> Result<bool, CosemError> {
    match d {
        Data::Boolean(b) => Ok(*b),
        other => Err(unexpected("output_state", "boolean", other)),
    }
}

/// Clock attribute 2 as UTC; `assumed_deviation` is used when the meter leaves the deviation
/// unspecified (see [`CosemDateTime::to_utc`]).
pub fn clock_time(d: &Data, assumed_deviation: Option<i16>) -> Result<DateTime<Utc>, CosemError> {
    match d {
        Data::OctetString(b) => Ok(CosemDateTime::from_bytes(b)?.to_utc(assumed_deviation)?),
        other => Err(unexpected("clock time", "octet-string", other)),
    }
}

/// Register attribute 3: value = raw x 10^scaler, in `unit` (DLMS unit enum: 30 Wh, 27 W, 35 V,
/// 33 A).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScalerUnit {
    /// Power of ten.
    pub scaler: i8,
    /// DLMS unit code.
    pub unit: u8,
}

impl ScalerUnit {
    /// From `structure {integer scaler, enum unit}`.
    pub fn from_data(d: &Data) -> Result<Self, CosemError> {
        match d {
            Data::Structure(f) => match f.as_slice() {
                [Data::Integer(scaler), Data::Enum(unit)] => Ok(ScalerUnit {
                    scaler: *scaler,
                    unit: *unit,
                }),
                _ => Err(unexpected("scaler_unit", "structure {integer, enum}", d)),
            },
            other => Err(unexpected("scaler_unit", "structure", other)),
        }
    }

    /// A raw register value scaled to the unit (floating point, for display).
    pub fn apply(&self, raw: i128) -> f64 {
        raw as f64 * 10f64.powi(self.scaler.into())
    }
}

/// Profile generic attribute 3: the capture objects (columns).
pub fn capture_objects(d: &Data) -> Result<Vec<CaptureObject>, CosemError> {
    let Data::Array(items) = d else {
        return Err(unexpected("capture_objects", "array", d));
    };
    items
        .iter()
        .map(|i| {
            CaptureObject::from_data(i).ok_or_else(|| {
                unexpected(
                    "capture object",
                    "structure {long-unsigned, octet-string(6), integer, long-unsigned}",
                    i,
                )
            })
        })
        .collect()
}

/// A profile buffer (attribute 2) split into rows, one value per capture object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileBuffer {
    /// The columns.
    pub columns: Vec<CaptureObject>,
    /// The rows, oldest first, each with one value per column (null-data where the meter left a
    /// value out).
    pub rows: Vec<Vec<Data>>,
}

impl ProfileBuffer {
    /// Splits `buffer` (an array of structures) by `columns`.
    pub fn parse(columns: Vec<CaptureObject>, buffer: &Data) -> Result<Self, CosemError> {
        let Data::Array(rows) = buffer else {
            return Err(unexpected("profile buffer", "array", buffer));
        };
        let rows = rows
            .iter()
            .enumerate()
            .map(|(i, row)| match row {
                Data::Structure(values) if values.len() == columns.len() => Ok(values.clone()),
                Data::Structure(values) => Err(CosemError::RowWidth {
                    row: i,
                    expected: columns.len(),
                    got: values.len(),
                }),
                other => Err(unexpected("profile row", "structure", other)),
            })
            .collect::<Result<_, _>>()?;
        Ok(ProfileBuffer { columns, rows })
    }

    /// The column index of `instance` attribute `attribute_id`.
    pub fn column(&self, instance: Obis, attribute_id: i8) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.instance == instance && c.attribute_id == attribute_id)
    }

    /// The value in `row` of `instance` attribute `attribute_id`.
    pub fn value(&self, row: usize, instance: Obis, attribute_id: i8) -> Option<&Data> {
        self.rows
            .get(row)?
            .get(self.column(instance, attribute_id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlms::apdu::tests::hex;
    use crate::dlms::apdu::CLOCK_TIME;
    use crate::dlms::datetime::IST_DEVIATION;
    use proptest::prelude::*;

    fn iip() -> InvokeIdAndPriority {
        InvokeIdAndPriority::new(1, true, true)
    }

    #[test]
    fn request_bytes_match_the_documented_layout() {
        // Clock attribute 2 is the plain text of the Green Book glo-get-request example (there with
        // invoke-id-and-priority 0x00).
        assert_eq!(
            get_clock(InvokeIdAndPriority::from_byte(0).unwrap()).to_bytes(),
            hex("C0010000080000010000FF0200")
        );
        assert_eq!(
            get_register_value(iip(), obis::IMPORT_ENERGY).to_bytes(),
            hex("c0 01 c1 0003 0100010800ff 02 00")
        );
        assert_eq!(
            get_register_scaler_unit(iip(), obis::IMPORT_ENERGY).to_bytes(),
            hex("c0 01 c1 0003 0100010800ff 03 00")
        );
        assert_eq!(
            get_capture_objects(iip(), obis::BLOCK_LOAD_PROFILE).to_bytes(),
            hex("c0 01 c1 0007 0100630100ff 03 00")
        );
        assert_eq!(
            remote_disconnect(iip()).to_bytes(),
            hex("c3 01 c1 0046 000060030aff 01 01 0f00")
        );
        assert_eq!(
            remote_reconnect(iip()).to_bytes(),
            hex("c3 01 c1 0046 000060030aff 02 01 0f00")
        );
        assert_eq!(
            get_output_state(iip()).to_bytes(),
            hex("c0 01 c1 0046 000060030aff 02 00")
        );
        assert_eq!(
            get_control_state(iip()).to_bytes(),
            hex("c0 01 c1 0046 000060030aff 03 00")
        );
        // Block load profile for 2024-03-15 00:00 to 01:00 IST.
        let from =
            CosemDateTime::from_utc("2024-03-14T18:30:00Z".parse().unwrap(), IST_DEVIATION, 0)
                .unwrap();
        let to = CosemDateTime::from_utc("2024-03-14T19:30:00Z".parse().unwrap(), IST_DEVIATION, 0)
            .unwrap();
        assert_eq!(
            get_profile_buffer(iip(), obis::BLOCK_LOAD_PROFILE, &from, &to).to_bytes(),
            hex("c0 01 c1 0007 0100630100ff 02 01 01
                 0204 0204 120008 0906 0000010000ff 0f02 120000
                 090c 07e8030f05 00000000 feb6 00
                 090c 07e8030f05 01000000 feb6 00
                 0100")
        );
    }

    #[test]
    fn disconnect_control_answers() {
        let answer = Apdu::decode(&hex("c4 01 c1 00 16 02")).unwrap();
        assert_eq!(
            ControlState::from_data(response_data(&answer).unwrap()),
            Ok(ControlState::ReadyForReconnection)
        );
        assert_eq!(
            ControlState::from_data(&Data::Enum(3)),
            Err(CosemError::InvalidValue {
                field: "control_state",
                value: 3
            })
        );
        let answer = Apdu::decode(&hex("c4 01 c1 00 03 00")).unwrap();
        assert_eq!(output_state(response_data(&answer).unwrap()), Ok(false));
        let refused = Apdu::decode(&hex("c4 01 c1 01 03")).unwrap();
        assert_eq!(
            response_data(&refused),
            Err(CosemError::Access(DataAccessResult::ReadWriteDenied))
        );
        assert_eq!(
            output_state(&Data::Enum(1)),
            Err(CosemError::UnexpectedType {
                field: "output_state",
                expected: "boolean",
                got: "enum"
            })
        );
    }

    #[test]
    fn clock_register_and_capture_objects_parse() {
        let clock = Data::OctetString(hex("07e8030f050a000000feb600"));
        assert_eq!(
            clock_time(&clock, None),
            Ok("2024-03-15T04:30:00Z".parse().unwrap())
        );
        let su = ScalerUnit::from_data(&Data::decode(&hex("0202 0f01 161e")).unwrap()).unwrap();
        assert_eq!(
            su,
            ScalerUnit {
                scaler: 1,
                unit: 30
            }
        );
        assert_eq!(su.apply(12345), 123450.0);
        let columns = capture_objects(&Data::Array(vec![
            CLOCK_TIME.to_data(),
            CaptureObject {
                class_id: 3,
                instance: obis::IMPORT_ENERGY,
                attribute_id: 2,
                data_index: 0,
            }
            .to_data(),
        ]))
        .unwrap();
        assert_eq!(columns[0], CLOCK_TIME);
        assert!(capture_objects(&Data::Array(vec![Data::Null])).is_err());
    }

    // The 24-row load profile buffer of u9n/dlms-cosem tests/test_a_xdr.py (see axdr tests), split
    // by capture objects {clock, status, import energy}; its time stamps leave the deviation
    // unspecified (0x8000), so the gateway supplies IST.
    #[test]
    fn u9n_load_profile_buffer_splits_into_rows() {
        let mut rows = String::new();
        for h in 0u32..24 {
            rows += &format!(
                "0203 090c07e2020c05{h:02x}000000800000 1100 06{:08x}",
                100_000 + 416 * h
            );
        }
        let buffer = Data::decode(&hex(&format!("0118{rows}"))).unwrap();
        let status = CaptureObject {
            class_id: 1,
            instance: Obis::new(0, 0, 96, 10, 1, 255),
            attribute_id: 2,
            data_index: 0,
        };
        let energy = CaptureObject {
            class_id: 3,
            instance: obis::IMPORT_ENERGY,
            attribute_id: 2,
            data_index: 0,
        };
        let p = ProfileBuffer::parse(vec![CLOCK_TIME, status, energy], &buffer).unwrap();
        assert_eq!(p.rows.len(), 24);
        assert_eq!(
            p.value(23, obis::IMPORT_ENERGY, 2),
            Some(&Data::DoubleLongUnsigned(100_000 + 416 * 23))
        );
        // The rows say weekday 5 (Friday) for 2018-02-12, a Monday: the strict check refuses them.
        let stamp = p.value(0, obis::CLOCK, 2).unwrap();
        assert_eq!(
            clock_time(stamp, Some(IST_DEVIATION)),
            Err(CosemError::DateTime(DateTimeError::WrongWeekday {
                expected: 1,
                got: 5
            }))
        );
        let Data::OctetString(b) = stamp else {
            panic!()
        };
        let no_weekday = CosemDateTime {
            weekday: None,
            ..CosemDateTime::from_bytes(b).unwrap()
        };
        assert_eq!(
            no_weekday.to_utc(Some(IST_DEVIATION)).unwrap().to_rfc3339(),
            "2018-02-11T18:30:00+00:00"
        );
        assert_eq!(
            ProfileBuffer::parse(vec![CLOCK_TIME, energy], &buffer),
            Err(CosemError::RowWidth {
                row: 0,
                expected: 2,
                got: 3
            })
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(d in crate::dlms::axdr::tests::data()) {
            let _ = ControlState::from_data(&d);
            let _ = output_state(&d);
            let _ = clock_time(&d, Some(IST_DEVIATION));
            let _ = ScalerUnit::from_data(&d);
            if let Ok(cols) = capture_objects(&d) {
                let _ = ProfileBuffer::parse(cols, &d);
            }
            let _ = ProfileBuffer::parse(vec![CLOCK_TIME], &d);
        }
    }
}
