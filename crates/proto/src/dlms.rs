//! DLMS/COSEM codec (IEC 62056-5-3 / 6-2 subset for IS 15959-2 meters; pure, no I/O).
//!
//! - [`axdr`]: the COSEM `Data` type in A-XDR (tagged values, canonical lengths, bounded nesting);
//! - [`obis`]: OBIS codes, the IS 15959-2 objects a gateway reads and the COSEM class ids;
//! - [`datetime`]: the 12-byte COSEM date-time and its mapping to UTC;
//! - [`apdu`]: xDLMS GET/SET/ACTION requests and responses, data-notification, exception-response,
//!   selective access and block transfer reassembly;
//! - [`acse`]: AARQ/AARE/RLRQ/RLRE in BER with the xDLMS InitiateRequest/InitiateResponse;
//! - [`cipher`]: security suite 0 (AES-128-GCM) for the glo-* and general-glo-ciphering APDUs, and the
//!   invocation counter replay rule;
//! - [`wrapper`]: the IEC 62056-47 wrapper header that frames an APDU inside FRMPayload on
//!   [`wrapper::DLMS_FPORT`];
//! - [`cosem`]: typed requests and parsers for the IS 15959-2 objects (clock, registers, profiles,
//!   disconnect control);
//! - [`client`]: the gateway's client session for one meter on the gramgrid link (docs/dlms.md
//!   section 7): ciphered requests out, answers and pushes checked and mapped to readings.
//!
//! Byte layouts, choices and the test vectors used are documented in `docs/dlms.md`.

use thiserror::Error;

pub mod acse;
pub mod apdu;
pub mod axdr;
pub mod cipher;
pub mod client;
pub mod cosem;
pub mod datetime;
pub mod obis;
pub mod wrapper;

/// Why bytes are not a valid DLMS structure (A-XDR, xDLMS APDU, BER ACSE APDU or wrapper).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes end inside the named field (or a length or count runs past the end).
    #[error("DLMS data ends inside field `{0}`")]
    Truncated(&'static str),
    /// Bytes left over after a complete structure (how many).
    #[error("{0} unexpected bytes after the DLMS structure")]
    TrailingBytes(usize),
    /// A tag or choice byte that this codec does not know in the named field.
    #[error("unknown tag {tag:#04x} in field `{field}`")]
    UnknownTag {
        /// The field's name.
        field: &'static str,
        /// The tag read.
        tag: u8,
    },
    /// A length is not in its shortest form (every value has one encoding).
    #[error("length in field `{0}` is not in its shortest form")]
    NonCanonicalLength(&'static str),
    /// A length does not fit (more than four length bytes, or beyond the address space).
    #[error("length in field `{0}` is too large")]
    LengthTooLarge(&'static str),
    /// Data nested deeper than [`axdr::MAX_DEPTH`].
    #[error("data nested deeper than {} levels", axdr::MAX_DEPTH)]
    TooDeep,
    /// A field holds a value outside its domain.
    #[error("field `{field}` has invalid value {value}")]
    InvalidValue {
        /// The field's name.
        field: &'static str,
        /// The value read.
        value: u64,
    },
    /// A utf8-string is not valid UTF-8.
    #[error("utf8-string is not valid UTF-8")]
    InvalidUtf8,
    /// A date-time field is malformed.
    #[error("invalid date-time: {0}")]
    DateTime(#[from] datetime::DateTimeError),
}

/// A strict cursor over input bytes: every read is bounds-checked and names its field.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Truncated(field))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated(field))?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Reads the expected byte (a tag) or fails with `UnknownTag`.
    pub(crate) fn expect(&mut self, want: u8, field: &'static str) -> Result<(), DecodeError> {
        let tag = self.u8(field)?;
        if tag == want {
            Ok(())
        } else {
            Err(DecodeError::UnknownTag { field, tag })
        }
    }

    /// An A-XDR / BER definite length, shortest form only, that counts bytes or elements still to
    /// come (so it cannot exceed the bytes left: every element takes at least one byte).
    pub(crate) fn length(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let len = self.length_raw(field)?;
        if len > self.remaining() {
            return Err(DecodeError::Truncated(field));
        }
        Ok(len)
    }

    /// A definite length in its shortest form, not checked against the bytes left (a bit count).
    pub(crate) fn length_raw(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let first = self.u8(field)?;
        if first < 0x80 {
            return Ok(usize::from(first));
        }
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return Err(DecodeError::LengthTooLarge(field));
        }
        let mut len: u64 = 0;
        for &b in self.take(n, field)? {
            len = (len << 8) | u64::from(b);
        }
        // Shortest form: no leading zero byte, and a long form only for 0x80 and above.
        if len < 0x80 || len < (1u64 << (8 * (n - 1))) {
            return Err(DecodeError::NonCanonicalLength(field));
        }
        usize::try_from(len).map_err(|_| DecodeError::LengthTooLarge(field))
    }

    /// A length-prefixed byte string.
    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.length(field)?;
        self.take(n, field)
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

/// Bytes of the A-XDR / BER length field [`write_length`] writes for `len`.
pub fn length_len(len: usize) -> usize {
    let mut out = Vec::new();
    write_length(&mut out, len);
    out.len()
}

/// Appends an A-XDR / BER definite length in its shortest form.
pub(crate) fn write_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = (len as u64).to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let significant = &bytes[skip..];
    out.push(0x80 | significant.len() as u8);
    out.extend_from_slice(significant);
}

/// Appends a length-prefixed byte string.
pub(crate) fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_length(out, bytes.len());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lengths_use_the_shortest_form() {
        for (len, bytes) in [
            (0usize, &[0x00][..]),
            (0x7F, &[0x7F]),
            (0x80, &[0x81, 0x80]),
            (0xFF, &[0x81, 0xFF]),
            (0x100, &[0x82, 0x01, 0x00]),
            (0x049E, &[0x82, 0x04, 0x9E]),
        ] {
            let mut out = Vec::new();
            write_length(&mut out, len);
            assert_eq!(out, bytes, "{len}");
        }
        let padded = [&[0x81u8, 0x05][..], &[0x82, 0x00, 0x90], &[0x80]];
        for bad in padded {
            let mut input = bad.to_vec();
            input.resize(0x200, 0);
            assert!(Reader::new(&input).length("len").is_err(), "{bad:02x?}");
        }
        assert_eq!(
            Reader::new(&[0x82, 0x01, 0x00]).length("len"),
            Err(DecodeError::Truncated("len"))
        );
    }

    proptest! {
        #[test]
        fn lengths_round_trip(len in 0usize..70_000) {
            let mut out = Vec::new();
            write_length(&mut out, len);
            out.resize(out.len() + len, 0);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.length("len").unwrap(), len);
        }
    }
}
