//! The IEC 62056-47 (COSEM transport over TCP/UDP) wrapper: an 8-byte header in front of each
//! APDU, used by gramgrid as the framing of DLMS inside LoRaWAN FRMPayload on [`DLMS_FPORT`].
//!
//! ```text
//! version u16 BE = 0x0001 | source wPort u16 BE | destination wPort u16 BE | length u16 BE | APDU
//! ```

use thiserror::Error;

use super::{DecodeError, Reader};

/// The LoRaWAN FPort that carries wrapped DLMS APDUs (application payload v1 is on FPort 1).
pub const DLMS_FPORT: u8 = 2;
/// The only wrapper version.
pub const VERSION: u16 = 0x0001;
/// Header length in bytes.
pub const HEADER_LEN: usize = 8;
/// wPort of the management client (full access, authenticated).
pub const CLIENT_MANAGEMENT: u16 = 0x0001;
/// wPort of the public client (no security, read-only basics).
pub const CLIENT_PUBLIC: u16 = 0x0010;
/// wPort of the server's management logical device.
pub const SERVER_MANAGEMENT: u16 = 0x0001;

/// One wrapped APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped<'a> {
    /// Sender's wPort.
    pub source: u16,
    /// Receiver's wPort.
    pub destination: u16,
    /// The APDU.
    pub apdu: &'a [u8],
}

/// Why a wrapper frame is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WrapperError {
    /// Structure errors (truncated header, trailing bytes).
    #[error("malformed wrapper frame: {0}")]
    Malformed(#[from] DecodeError),
    /// The version is not 0x0001 (the value read).
    #[error("wrapper version {0:#06x}, expected 0x0001")]
    Version(u16),
    /// The length field does not match the bytes that follow.
    #[error("wrapper length {declared} but {actual} bytes follow")]
    Length {
        /// The length field.
        declared: u16,
        /// Bytes after the header.
        actual: usize,
    },
    /// An APDU longer than 65535 bytes cannot be wrapped (its length).
    #[error("APDU of {0} bytes does not fit the 16-bit wrapper length")]
    TooLong(usize),
    /// The frame arrived on another FPort (None if it had none).
    #[error("frame on FPort {0:?}, DLMS travels on FPort {DLMS_FPORT}")]
    WrongFport(Option<u8>),
}

impl<'a> Wrapped<'a> {
    /// Header and APDU.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WrapperError> {
        let len =
            u16::try_from(self.apdu.len()).map_err(|_| WrapperError::TooLong(self.apdu.len()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + self.apdu.len());
        for v in [VERSION, self.source, self.destination, len] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(self.apdu);
        Ok(out)
    }

    /// Decodes strictly: version 1 and a length equal to the bytes that follow.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, WrapperError> {
        let mut r = Reader::new(bytes);
        let version = r.u16("wrapper version")?;
        if version != VERSION {
            return Err(WrapperError::Version(version));
        }
        let source = r.u16("source wPort")?;
        let destination = r.u16("destination wPort")?;
        let declared = r.u16("wrapper length")?;
        let apdu = r.rest();
        if apdu.len() != usize::from(declared) {
            return Err(WrapperError::Length {
                declared,
                actual: apdu.len(),
            });
        }
        Ok(Wrapped {
            source,
            destination,
            apdu,
        })
    }

    /// Decodes the FRMPayload of an accepted frame, refusing frames on other ports.
    pub fn decode_frame(fport: Option<u8>, frm_payload: &'a [u8]) -> Result<Self, WrapperError> {
        if fport != Some(DLMS_FPORT) {
            return Err(WrapperError::WrongFport(fport));
        }
        Self::decode(frm_payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The get-request of the glo-get-request example, from the public client to the management
    // logical device: 0001 0010 0001 000d | c0 01 ...
    #[test]
    fn wrapper_bytes_match_the_documented_layout() {
        let apdu = hex::decode("c00100000800000100 00ff0200".replace(' ', "")).unwrap();
        let w = Wrapped {
            source: CLIENT_PUBLIC,
            destination: SERVER_MANAGEMENT,
            apdu: &apdu,
        };
        let bytes = w.to_bytes().unwrap();
        assert_eq!(
            hex::encode(&bytes),
            "000100100001000dc0010000080000010000ff0200"
        );
        assert_eq!(Wrapped::decode_frame(Some(2), &bytes), Ok(w));
        assert_eq!(
            Wrapped::decode_frame(Some(1), &bytes),
            Err(WrapperError::WrongFport(Some(1)))
        );
        let mut bad = bytes.clone();
        bad[1] = 2;
        assert_eq!(Wrapped::decode(&bad), Err(WrapperError::Version(2)));
        assert_eq!(
            Wrapped::decode(&bytes[..20]),
            Err(WrapperError::Length {
                declared: 13,
                actual: 12
            })
        );
        assert_eq!(
            Wrapped::decode(&[&bytes[..], &[0]].concat()),
            Err(WrapperError::Length {
                declared: 13,
                actual: 14
            })
        );
        assert_eq!(
            Wrapped::decode(&bytes[..7]),
            Err(WrapperError::Malformed(DecodeError::Truncated(
                "wrapper length"
            )))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_re_encode(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(w) = Wrapped::decode(&bytes) {
                prop_assert_eq!(w.to_bytes().unwrap(), bytes);
            }
        }

        #[test]
        fn wrapped_round_trips(s in any::<u16>(), d in any::<u16>(), apdu in prop::collection::vec(any::<u8>(), 0..300)) {
            let w = Wrapped { source: s, destination: d, apdu: &apdu };
            let bytes = w.to_bytes().unwrap();
            prop_assert_eq!(Wrapped::decode(&bytes), Ok(w));
        }
    }
}
