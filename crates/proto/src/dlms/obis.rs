//! OBIS codes (IEC 62056-6-1): six bytes A.B.C.D.E.F naming a COSEM object; the IS 15959-2 objects a
//! gateway reads, and the COSEM interface class ids they use.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// An OBIS code, the logical name of a COSEM object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Obis(pub [u8; 6]);

/// Why a string is not an OBIS code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("not an OBIS code `a.b.c.d.e.f` with six values 0..=255: {0:?}")]
pub struct ParseObisError(pub String);

impl Obis {
    /// The OBIS code A.B.C.D.E.F.
    pub const fn new(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8) -> Self {
        Obis([a, b, c, d, e, f])
    }
}

impl fmt::Display for Obis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a}.{b}.{c}.{d}.{e}.{g}")
    }
}

impl FromStr for Obis {
    type Err = ParseObisError;

    /// Parses `a.b.c.d.e.f` (decimal, no leading `+`, no spaces; leading zeros refused).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseObisError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split('.');
        for slot in &mut out {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                return Err(err());
            }
            *slot = p.parse().map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Obis(out))
    }
}

/// Clock (class 8): attribute 2 is the meter time.
pub const CLOCK: Obis = Obis::new(0, 0, 1, 0, 0, 255);
/// Cumulative active energy import, kWh register (class 3).
pub const IMPORT_ENERGY: Obis = Obis::new(1, 0, 1, 8, 0, 255);
/// Cumulative active energy export, kWh register (class 3; net meters).
pub const EXPORT_ENERGY: Obis = Obis::new(1, 0, 2, 8, 0, 255);
/// Block load profile (class 7), IS 15959-2: one row per capture period (15 or 30 min).
pub const BLOCK_LOAD_PROFILE: Obis = Obis::new(1, 0, 99, 1, 0, 255);
/// Daily load profile (class 7), IS 15959-2: one row per day at midnight.
pub const DAILY_LOAD_PROFILE: Obis = Obis::new(1, 0, 99, 2, 0, 255);
/// Event code of the power failure related events log (class 1): the code of its newest event
/// (IS 15959-2: 101 power failure, 102 power restored).
pub const EVENT_CODE_POWER: Obis = Obis::new(0, 0, 96, 11, 2, 255);
/// IS 15959-2 event log "Voltage related events" (class 7).
pub const EVENT_LOG_VOLTAGE: Obis = Obis::new(0, 0, 99, 98, 0, 255);
/// IS 15959-2 event log "Current related events" (class 7).
pub const EVENT_LOG_CURRENT: Obis = Obis::new(0, 0, 99, 98, 1, 255);
/// IS 15959-2 event log "Power failure related events" (class 7).
pub const EVENT_LOG_POWER: Obis = Obis::new(0, 0, 99, 98, 2, 255);
/// IS 15959-2 event log "Transaction related events" (configuration changes; class 7).
pub const EVENT_LOG_TRANSACTION: Obis = Obis::new(0, 0, 99, 98, 3, 255);
/// IS 15959-2 event log "Other events" (tamper: magnet, cover open, ...; class 7).
pub const EVENT_LOG_OTHER: Obis = Obis::new(0, 0, 99, 98, 4, 255);
/// IS 15959-2 event log "Non roll over events" (e.g. cover open, never overwritten; class 7).
pub const EVENT_LOG_NON_ROLLOVER: Obis = Obis::new(0, 0, 99, 98, 5, 255);
/// IS 15959-2 event log "Control events" (load switch connect/disconnect; class 7).
pub const EVENT_LOG_CONTROL: Obis = Obis::new(0, 0, 99, 98, 6, 255);
/// Disconnect control, the load switch (class 70).
pub const DISCONNECT_CONTROL: Obis = Obis::new(0, 0, 96, 3, 10, 255);
/// Limiter (class 71).
pub const LIMITER: Obis = Obis::new(0, 0, 17, 0, 0, 255);
/// Name plate: meter serial number (class 1).
pub const METER_SERIAL: Obis = Obis::new(0, 0, 96, 1, 0, 255);
/// Name plate: manufacturer name (class 1).
pub const MANUFACTURER: Obis = Obis::new(0, 0, 96, 1, 1, 255);
/// Name plate: firmware version (class 1).
pub const FIRMWARE_VERSION: Obis = Obis::new(1, 0, 0, 2, 0, 255);
/// Name plate: meter type (class 1).
pub const METER_TYPE: Obis = Obis::new(0, 0, 94, 91, 9, 255);
/// Name plate: category (class 1).
pub const METER_CATEGORY: Obis = Obis::new(0, 0, 94, 91, 11, 255);
/// Name plate: current rating (class 1).
pub const CURRENT_RATING: Obis = Obis::new(0, 0, 94, 91, 12, 255);
/// Name plate: year of manufacture (class 1).
pub const YEAR_OF_MANUFACTURE: Obis = Obis::new(0, 0, 96, 1, 4, 255);

/// COSEM interface class id: Data.
pub const CLASS_DATA: u16 = 1;
/// COSEM interface class id: Register.
pub const CLASS_REGISTER: u16 = 3;
/// COSEM interface class id: Profile generic.
pub const CLASS_PROFILE_GENERIC: u16 = 7;
/// COSEM interface class id: Clock.
pub const CLASS_CLOCK: u16 = 8;
/// COSEM interface class id: Disconnect control.
pub const CLASS_DISCONNECT_CONTROL: u16 = 70;
/// COSEM interface class id: Limiter.
pub const CLASS_LIMITER: u16 = 71;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn display_and_parse() {
        assert_eq!(CLOCK.to_string(), "0.0.1.0.0.255");
        assert_eq!("1.0.99.1.0.255".parse(), Ok(BLOCK_LOAD_PROFILE));
        assert_eq!("0.0.96.3.10.255".parse(), Ok(DISCONNECT_CONTROL));
        for bad in [
            "",
            "1.0.99.1.0",
            "1.0.99.1.0.256",
            "1.0.99.1.0.255.1",
            "1..99.1.0.255",
            "01.0.1.8.0.255",
            "+1.0.1.8.0.255",
            " 1.0.1.8.0.255",
        ] {
            assert!(bad.parse::<Obis>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn obis_text_round_trips(b in any::<[u8; 6]>()) {
            prop_assert_eq!(Obis(b).to_string().parse(), Ok(Obis(b)));
        }

        #[test]
        fn arbitrary_text_never_panics(s in "[0-9.]{0,30}") {
            if let Ok(o) = s.parse::<Obis>() {
                prop_assert_eq!(o.to_string(), s);
            }
        }
    }
}
