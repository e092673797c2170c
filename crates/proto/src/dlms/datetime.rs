//! COSEM date-time (Blue Book, date and time formats): a 12-byte octet-string, and its mapping to UTC.
//!
//! ```text
//! year u16 BE | month | day | weekday | hour | minute | second | hundredths | deviation i16 BE | clock status
//! ```
//!
//! "Not specified" is 0xFFFF for the year, 0xFF for the one-byte fields and clock status, 0x8000
//! for the deviation; this codec keeps those as `None`. The special month/day values 0xFD and 0xFE
//! (DST begin/end, last days of the month) are only meaningful in schedules and are refused.
//!
//! **Deviation sign.** The Blue Book defines deviation as "minutes of local time to UTC"; meters and
//! the DLMS UA examples use it as `deviation = UTC - local time`, so a zone ahead of UTC has a
//! negative deviation: CET (UTC+01:00) is -60 (0xFFC4) and India (IST, UTC+05:30) is -330 (0xFEB6).
//! Hence `UTC = local time + deviation`.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Timelike, Utc};
use thiserror::Error;

/// Deviation of Indian Standard Time (UTC+05:30) in the COSEM convention (UTC - local, minutes).
pub const IST_DEVIATION: i16 = -330;

/// Length of a COSEM date-time octet-string.
pub const LEN: usize = 12;

/// Why a date-time is malformed or cannot be mapped to UTC.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DateTimeError {
    /// The octet-string is not 12 bytes long (its length).
    #[error("date-time must be 12 bytes, got {0}")]
    Length(usize),
    /// A field is outside its range and is not the "not specified" value.
    #[error("date-time field `{field}` has invalid value {value}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// The raw value.
        value: u16,
    },
    /// A field needed to name one instant is "not specified".
    #[error("date-time field `{0}` is not specified")]
    NotSpecified(&'static str),
    /// Year, month and day do not name a calendar date.
    #[error("date-time names no calendar date")]
    NoSuchDate,
    /// The weekday byte does not match the date.
    #[error("date-time weekday {got} does not match the date (expected {expected})")]
    WrongWeekday {
        /// The weekday the date has (1 = Monday).
        expected: u8,
        /// The weekday sent.
        got: u8,
    },
    /// The instant is outside what the 12-byte form can carry (year 0..=65534).
    #[error("instant outside the COSEM date-time range")]
    OutOfRange,
}

/// A COSEM date-time with every field optional ("not specified").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CosemDateTime {
    /// Year (0..=65534).
    pub year: Option<u16>,
    /// Month 1..=12.
    pub month: Option<u8>,
    /// Day of month 1..=31.
    pub day: Option<u8>,
    /// Day of week 1..=7, Monday is 1.
    pub weekday: Option<u8>,
    /// Hour 0..=23.
    pub hour: Option<u8>,
    /// Minute 0..=59.
    pub minute: Option<u8>,
    /// Second 0..=59.
    pub second: Option<u8>,
    /// Hundredths of a second 0..=99.
    pub hundredths: Option<u8>,
    /// Minutes, -720..=720, `UTC - local time` (see the module docs).
    pub deviation: Option<i16>,
    /// Clock status bits (bit 0 invalid, 1 doubtful, 2 different base, 3 invalid status, 7 DST).
    pub clock_status: Option<u8>,
}

fn opt_u8(
    field: &'static str,
    raw: u8,
    max_ok: std::ops::RangeInclusive<u8>,
) -> Result<Option<u8>, DateTimeError> {
    match raw {
        0xFF => Ok(None),
        v if max_ok.contains(&v) => Ok(Some(v)),
        v => Err(DateTimeError::InvalidField {
            field,
            value: v.into(),
        }),
    }
}

impl CosemDateTime {
    /// Decodes the 12 bytes strictly (every field in range or "not specified").
    pub fn from_bytes(b: &[u8]) -> Result<Self, DateTimeError> {
        let b: &[u8; LEN] = b.try_into().map_err(|_| DateTimeError::Length(b.len()))?;
        let year = match u16::from_be_bytes([b[0], b[1]]) {
            0xFFFF => None,
            y => Some(y),
        };
        let deviation = match i16::from_be_bytes([b[9], b[10]]) {
            i16::MIN => None,
            d if (-720..=720).contains(&d) => Some(d),
            d => {
                return Err(DateTimeError::InvalidField {
                    field: "deviation",
                    value: d as u16,
                })
            }
        };
        Ok(CosemDateTime {
            year,
            month: opt_u8("month", b[2], 1..=12)?,
            day: opt_u8("day", b[3], 1..=31)?,
            weekday: opt_u8("weekday", b[4], 1..=7)?,
            hour: opt_u8("hour", b[5], 0..=23)?,
            minute: opt_u8("minute", b[6], 0..=59)?,
            second: opt_u8("second", b[7], 0..=59)?,
            hundredths: opt_u8("hundredths", b[8], 0..=99)?,
            deviation,
            clock_status: match b[11] {
                0xFF => None,
                s => Some(s),
            },
        })
    }

    /// The 12-byte encoding.
    pub fn to_bytes(&self) -> [u8; LEN] {
        let y = self.year.unwrap_or(0xFFFF).to_be_bytes();
        let d = self.deviation.unwrap_or(i16::MIN).to_be_bytes();
        let f = |v: Option<u8>| v.unwrap_or(0xFF);
        [
            y[0],
            y[1],
            f(self.month),
            f(self.day),
            f(self.weekday),
            f(self.hour),
            f(self.minute),
            f(self.second),
            f(self.hundredths),
            d[0],
            d[1],
            f(self.clock_status),
        ]
    }

    /// The instant named, in UTC. Date, hour, minute and second must be specified; unspecified
    /// hundredths count as 0; a specified weekday must match the date. When the deviation is not
    /// specified, `assumed_deviation` is used (e.g. [`IST_DEVIATION`] for an IS 15959 meter that
    /// keeps local time), and with `None` it is an error.
    pub fn to_utc(&self, assumed_deviation: Option<i16>) -> Result<DateTime<Utc>, DateTimeError> {
        let need = |v: Option<u8>, field| v.ok_or(DateTimeError::NotSpecified(field));
        let year = self.year.ok_or(DateTimeError::NotSpecified("year"))?;
        let date = NaiveDate::from_ymd_opt(
            year.into(),
            need(self.month, "month")?.into(),
            need(self.day, "day")?.into(),
        )
        .ok_or(DateTimeError::NoSuchDate)?;
        if let Some(got) = self.weekday {
            let expected = date.weekday().number_from_monday() as u8;
            if got != expected {
                return Err(DateTimeError::WrongWeekday { expected, got });
            }
        }
        let millis = u32::from(self.hundredths.unwrap_or(0)) * 10;
        let local = date
            .and_hms_milli_opt(
                need(self.hour, "hour")?.into(),
                need(self.minute, "minute")?.into(),
                need(self.second, "second")?.into(),
                millis,
            )
            .ok_or(DateTimeError::NoSuchDate)?;
        let deviation = self
            .deviation
            .or(assumed_deviation)
            .ok_or(DateTimeError::NotSpecified("deviation"))?;
        local
            .checked_add_signed(Duration::minutes(deviation.into()))
            .map(|t| t.and_utc())
            .ok_or(DateTimeError::OutOfRange)
    }

    /// The date-time for `utc` as local time with `deviation` (UTC - local, minutes), every field
    /// specified (weekday computed, hundredths truncated from the sub-second part).
    pub fn from_utc(
        utc: DateTime<Utc>,
        deviation: i16,
        clock_status: u8,
    ) -> Result<Self, DateTimeError> {
        if !(-720..=720).contains(&deviation) {
            return Err(DateTimeError::InvalidField {
                field: "deviation",
                value: deviation as u16,
            });
        }
        if clock_status == 0xFF {
            return Err(DateTimeError::InvalidField {
                field: "clock status",
                value: 0xFF,
            });
        }
        let local: NaiveDateTime = utc
            .naive_utc()
            .checked_sub_signed(Duration::minutes(deviation.into()))
            .ok_or(DateTimeError::OutOfRange)?;
        let year = u16::try_from(local.year())
            .ok()
            .filter(|y| *y != 0xFFFF)
            .ok_or(DateTimeError::OutOfRange)?;
        // A leap second (nanosecond >= 1e9) is clamped to 99 hundredths.
        let hundredths = (local.nanosecond() / 10_000_000).min(99) as u8;
        Ok(CosemDateTime {
            year: Some(year),
            month: Some(local.month() as u8),
            day: Some(local.day() as u8),
            weekday: Some(local.weekday().number_from_monday() as u8),
            hour: Some(local.hour() as u8),
            minute: Some(local.minute() as u8),
            second: Some(local.second() as u8),
            hundredths: Some(hundredths),
            deviation: Some(deviation),
            clock_status: Some(clock_status),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn ist_local_time_maps_to_utc_with_deviation_minus_330() {
        // 2024-03-15 (a Friday) 10:00:00 IST is 04:30:00 UTC; deviation -330 = 0xFEB6.
        let bytes = hex("07e8 03 0f 05 0a 00 00 00 feb6 00");
        let dt = CosemDateTime::from_bytes(&bytes).unwrap();
        assert_eq!(dt.deviation, Some(IST_DEVIATION));
        assert_eq!(dt.to_utc(None), Ok(utc("2024-03-15T04:30:00Z")));
        let back = CosemDateTime::from_utc(utc("2024-03-15T04:30:00Z"), IST_DEVIATION, 0).unwrap();
        assert_eq!(back.to_bytes().to_vec(), bytes);
    }

    // DLMS UA convention check, from the range descriptor vector in u9n/dlms-cosem
    // tests/test_xdlms/test_selective_access.py `test_range_descriptor_to_bytes` (MIT, commit
    // 0747b152b91f40ff13c415dc35d208f63676f501): 2020-01-01T00:03:00+02:00 is sent as
    // 07E4 01 01 FF 00 03 00 00 FF88 00 (deviation -120: UTC = local + deviation).
    #[test]
    fn u9n_range_descriptor_date_uses_utc_minus_local() {
        let dt = CosemDateTime::from_bytes(&hex("07e4 01 01 ff 00 03 00 00 ff88 00")).unwrap();
        assert_eq!(dt.weekday, None);
        assert_eq!(dt.to_utc(None), Ok(utc("2019-12-31T22:03:00Z")));
    }

    #[test]
    fn not_specified_fields_are_strict() {
        // Deviation not specified (0x8000): needs an assumed deviation.
        let dt = CosemDateTime::from_bytes(&hex("07e2 02 0c ff 00 00 00 00 8000 00")).unwrap();
        assert_eq!(
            dt.to_utc(None),
            Err(DateTimeError::NotSpecified("deviation"))
        );
        assert_eq!(
            dt.to_utc(Some(IST_DEVIATION)),
            Ok(utc("2018-02-11T18:30:00Z"))
        );
        // Hundredths not specified count as 0; hour not specified is an error.
        let dt = CosemDateTime::from_bytes(&hex("07e2 02 0c ff 00 00 00 ff ffc4 ff")).unwrap();
        assert_eq!(dt.to_utc(None), Ok(utc("2018-02-11T23:00:00Z")));
        let dt = CosemDateTime::from_bytes(&hex("07e2 02 0c ff ff 00 00 ff ffc4 ff")).unwrap();
        assert_eq!(dt.to_utc(None), Err(DateTimeError::NotSpecified("hour")));
        // 2018-02-12 is a Monday.
        let dt = CosemDateTime::from_bytes(&hex("07e2 02 0c 02 00 00 00 00 0000 00")).unwrap();
        assert_eq!(
            dt.to_utc(None),
            Err(DateTimeError::WrongWeekday {
                expected: 1,
                got: 2
            })
        );
        let dt = CosemDateTime::from_bytes(&hex("07e2 02 1e ff 00 00 00 00 0000 00")).unwrap();
        assert_eq!(dt.to_utc(None), Err(DateTimeError::NoSuchDate));
        for (bytes, field, value) in [
            ("07e2 0d 01 ff 00 00 00 00 0000 00", "month", 13),
            ("07e2 01 fe ff 00 00 00 00 0000 00", "day", 0xFE),
            ("07e2 01 01 ff 18 00 00 00 0000 00", "hour", 24),
            ("07e2 01 01 ff 00 00 00 64 0000 00", "hundredths", 100),
            ("07e2 01 01 ff 00 00 00 00 02d1 00", "deviation", 721),
        ] {
            assert_eq!(
                CosemDateTime::from_bytes(&hex(bytes)),
                Err(DateTimeError::InvalidField { field, value }),
                "{bytes}"
            );
        }
        assert_eq!(
            CosemDateTime::from_bytes(&[0; 11]),
            Err(DateTimeError::Length(11))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_re_encode(b in any::<[u8; 12]>()) {
            if let Ok(dt) = CosemDateTime::from_bytes(&b) {
                prop_assert_eq!(dt.to_bytes(), b);
                let _ = dt.to_utc(Some(IST_DEVIATION));
            }
        }

        #[test]
        fn utc_round_trips(secs in 0i64..4_102_444_800, centis in 0u32..100, dev in -720i16..=720) {
            let t = DateTime::from_timestamp(secs, centis * 10_000_000).unwrap();
            let dt = CosemDateTime::from_utc(t, dev, 0).unwrap();
            let back = CosemDateTime::from_bytes(&dt.to_bytes()).unwrap();
            prop_assert_eq!(back.to_utc(None), Ok(t));
        }
    }
}
