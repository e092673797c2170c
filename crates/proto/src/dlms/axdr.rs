//! The COSEM `Data` type in A-XDR (IEC 62056-6-2 / Blue Book `Data` CHOICE): a tag byte, then the value.
//!
//! Constructed values (array, structure) and strings carry an A-XDR length in its shortest form
//! (`< 0x80` one byte, `0x81 nn`, `0x82 nnnn`, ...). Decoding is strict: unknown tags, non-canonical
//! lengths, booleans other than 0/1, nonzero unused bits in a bit-string and nesting deeper than
//! [`MAX_DEPTH`] are errors, so whatever decodes re-encodes to the same bytes.

use super::{write_bytes, write_length, DecodeError, Reader};

/// Deepest nesting of arrays and structures accepted when decoding (hostile input cannot blow the
/// stack). IS 15959-2 buffers need 2 levels (array of structures).
pub const MAX_DEPTH: usize = 16;

const TAG_NULL: u8 = 0;
const TAG_ARRAY: u8 = 1;
const TAG_STRUCTURE: u8 = 2;
const TAG_BOOLEAN: u8 = 3;
const TAG_BIT_STRING: u8 = 4;
const TAG_DOUBLE_LONG: u8 = 5;
const TAG_DOUBLE_LONG_UNSIGNED: u8 = 6;
const TAG_OCTET_STRING: u8 = 9;
const TAG_VISIBLE_STRING: u8 = 10;
const TAG_UTF8_STRING: u8 = 12;
const TAG_INTEGER: u8 = 15;
const TAG_LONG: u8 = 16;
const TAG_UNSIGNED: u8 = 17;
const TAG_LONG_UNSIGNED: u8 = 18;
const TAG_LONG64: u8 = 20;
const TAG_LONG64_UNSIGNED: u8 = 21;
const TAG_ENUM: u8 = 22;
const TAG_FLOAT32: u8 = 23;

/// A bit-string: `len` bits, stored MSB first in `ceil(len / 8)` bytes, unused trailing bits zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BitString {
    len: usize,
    bytes: Vec<u8>,
}

impl BitString {
    /// A bit-string of `len` bits from `bytes`; None unless `bytes` has exactly `ceil(len / 8)`
    /// bytes and the unused trailing bits are zero.
    pub fn new(bytes: Vec<u8>, len: usize) -> Option<Self> {
        if bytes.len() != len.div_ceil(8) {
            return None;
        }
        let unused = bytes.len() * 8 - len;
        if unused > 0 && bytes.last().is_some_and(|b| b & ((1u8 << unused) - 1) != 0) {
            return None;
        }
        Some(BitString { len, bytes })
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the bit-string has no bits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, MSB first.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bit `i` (0 is the MSB of the first byte); false past the end.
    pub fn bit(&self, i: usize) -> bool {
        i < self.len
            && self
                .bytes
                .get(i / 8)
                .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
    }
}

/// A COSEM data value (the subset of the `Data` CHOICE used by IS 15959-2 meters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Data {
    /// null-data (tag 0).
    Null,
    /// array (tag 1): elements of one type.
    Array(Vec<Data>),
    /// structure (tag 2).
    Structure(Vec<Data>),
    /// boolean (tag 3).
    Boolean(bool),
    /// bit-string (tag 4).
    BitString(BitString),
    /// double-long, i32 (tag 5).
    DoubleLong(i32),
    /// double-long-unsigned, u32 (tag 6).
    DoubleLongUnsigned(u32),
    /// octet-string (tag 9); a COSEM date-time is a 12-byte octet-string.
    OctetString(Vec<u8>),
    /// visible-string (tag 10), raw bytes as sent (meters pad with NUL or spaces).
    VisibleString(Vec<u8>),
    /// utf8-string (tag 12).
    Utf8String(String),
    /// integer, i8 (tag 15).
    Integer(i8),
    /// long, i16 (tag 16).
    Long(i16),
    /// unsigned, u8 (tag 17).
    Unsigned(u8),
    /// long-unsigned, u16 (tag 18).
    LongUnsigned(u16),
    /// long64, i64 (tag 20).
    Long64(i64),
    /// long64-unsigned, u64 (tag 21).
    Long64Unsigned(u64),
    /// enum, u8 (tag 22).
    Enum(u8),
    /// float32 (tag 23), kept as its IEEE 754 bits so values compare and hash exactly.
    Float32(u32),
}

impl Data {
    /// A float32 value.
    pub fn float32(v: f32) -> Self {
        Data::Float32(v.to_bits())
    }

    /// The A-XDR encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    /// Appends the A-XDR encoding to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Data::Null => out.push(TAG_NULL),
            Data::Array(items) | Data::Structure(items) => {
                out.push(if matches!(self, Data::Array(_)) {
                    TAG_ARRAY
                } else {
                    TAG_STRUCTURE
                });
                write_length(out, items.len());
                for item in items {
                    item.write(out);
                }
            }
            Data::Boolean(b) => out.extend_from_slice(&[TAG_BOOLEAN, u8::from(*b)]),
            Data::BitString(bits) => {
                out.push(TAG_BIT_STRING);
                write_length(out, bits.len);
                out.extend_from_slice(&bits.bytes);
            }
            Data::DoubleLong(v) => push(out, TAG_DOUBLE_LONG, &v.to_be_bytes()),
            Data::DoubleLongUnsigned(v) => push(out, TAG_DOUBLE_LONG_UNSIGNED, &v.to_be_bytes()),
            Data::OctetString(s) => {
                out.push(TAG_OCTET_STRING);
                write_bytes(out, s);
            }
            Data::VisibleString(s) => {
                out.push(TAG_VISIBLE_STRING);
                write_bytes(out, s);
            }
            Data::Utf8String(s) => {
                out.push(TAG_UTF8_STRING);
                write_bytes(out, s.as_bytes());
            }
            Data::Integer(v) => push(out, TAG_INTEGER, &v.to_be_bytes()),
            Data::Long(v) => push(out, TAG_LONG, &v.to_be_bytes()),
            Data::Unsigned(v) => push(out, TAG_UNSIGNED, &[*v]),
            Data::LongUnsigned(v) => push(out, TAG_LONG_UNSIGNED, &v.to_be_bytes()),
            Data::Long64(v) => push(out, TAG_LONG64, &v.to_be_bytes()),
            Data::Long64Unsigned(v) => push(out, TAG_LONG64_UNSIGNED, &v.to_be_bytes()),
            Data::Enum(v) => push(out, TAG_ENUM, &[*v]),
            Data::Float32(v) => push(out, TAG_FLOAT32, &v.to_be_bytes()),
        }
    }

    /// Decodes exactly one value from `bytes` (no trailing bytes).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let d = Data::read(&mut r)?;
        r.finish()?;
        Ok(d)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::read_at(r, 0)
    }

    fn read_at(r: &mut Reader<'_>, depth: usize) -> Result<Self, DecodeError> {
        let tag = r.u8("data tag")?;
        Ok(match tag {
            TAG_NULL => Data::Null,
            TAG_ARRAY | TAG_STRUCTURE => {
                if depth >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep);
                }
                let n = r.length("element count")?;
                // Every element takes at least one byte; `length` already checked n <= remaining.
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(Self::read_at(r, depth + 1)?);
                }
                if tag == TAG_ARRAY {
                    Data::Array(items)
                } else {
                    Data::Structure(items)
                }
            }
            TAG_BOOLEAN => match r.u8("boolean")? {
                0 => Data::Boolean(false),
                1 => Data::Boolean(true),
                v => {
                    return Err(DecodeError::InvalidValue {
                        field: "boolean",
                        value: v.into(),
                    })
                }
            },
            TAG_BIT_STRING => {
                let len = r.length_raw("bit-string")?;
                let bytes = r.take(len.div_ceil(8), "bit-string")?.to_vec();
                Data::BitString(BitString::new(bytes, len).ok_or(DecodeError::InvalidValue {
                    field: "bit-string unused bits",
                    value: len as u64,
                })?)
            }
            TAG_DOUBLE_LONG => Data::DoubleLong(r.u32("double-long")? as i32),
            TAG_DOUBLE_LONG_UNSIGNED => Data::DoubleLongUnsigned(r.u32("double-long-unsigned")?),
            TAG_OCTET_STRING => Data::OctetString(r.bytes("octet-string")?.to_vec()),
            TAG_VISIBLE_STRING => Data::VisibleString(r.bytes("visible-string")?.to_vec()),
            TAG_UTF8_STRING => Data::Utf8String(
                String::from_utf8(r.bytes("utf8-string")?.to_vec())
                    .map_err(|_| DecodeError::InvalidUtf8)?,
            ),
            TAG_INTEGER => Data::Integer(r.u8("integer")? as i8),
            TAG_LONG => Data::Long(r.u16("long")? as i16),
            TAG_UNSIGNED => Data::Unsigned(r.u8("unsigned")?),
            TAG_LONG_UNSIGNED => Data::LongUnsigned(r.u16("long-unsigned")?),
            TAG_LONG64 => Data::Long64(r.u64("long64")? as i64),
            TAG_LONG64_UNSIGNED => Data::Long64Unsigned(r.u64("long64-unsigned")?),
            TAG_ENUM => Data::Enum(r.u8("enum")?),
            TAG_FLOAT32 => Data::Float32(r.u32("float32")?),
            tag => {
                return Err(DecodeError::UnknownTag {
                    field: "data tag",
                    tag,
                })
            }
        })
    }

    /// The value as an unsigned or signed integer widened to i128 (any integer type, enum
    /// included); None for other types.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Data::DoubleLong(v) => v.into(),
            Data::DoubleLongUnsigned(v) => v.into(),
            Data::Integer(v) => v.into(),
            Data::Long(v) => v.into(),
            Data::Unsigned(v) => v.into(),
            Data::LongUnsigned(v) => v.into(),
            Data::Long64(v) => v.into(),
            Data::Long64Unsigned(v) => v.into(),
            Data::Enum(v) => v.into(),
            _ => return None,
        })
    }

    /// The A-XDR type name (for error messages).
    pub fn type_name(&self) -> &'static str {
        match self {
            Data::Null => "null-data",
            Data::Array(_) => "array",
            Data::Structure(_) => "structure",
            Data::Boolean(_) => "boolean",
            Data::BitString(_) => "bit-string",
            Data::DoubleLong(_) => "double-long",
            Data::DoubleLongUnsigned(_) => "double-long-unsigned",
            Data::OctetString(_) => "octet-string",
            Data::VisibleString(_) => "visible-string",
            Data::Utf8String(_) => "utf8-string",
            Data::Integer(_) => "integer",
            Data::Long(_) => "long",
            Data::Unsigned(_) => "unsigned",
            Data::LongUnsigned(_) => "long-unsigned",
            Data::Long64(_) => "long64",
            Data::Long64Unsigned(_) => "long64-unsigned",
            Data::Enum(_) => "enum",
            Data::Float32(_) => "float32",
        }
    }
}

fn push(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn every_type_has_its_documented_encoding() {
        let cases = [
            (Data::Null, "00"),
            (Data::Boolean(true), "03 01"),
            (
                Data::BitString(BitString::new(vec![0xA0], 3).unwrap()),
                "04 03 a0",
            ),
            (Data::DoubleLong(-2), "05 fffffffe"),
            (Data::DoubleLongUnsigned(5009), "06 00001391"),
            (
                Data::OctetString(vec![0, 0, 1, 0, 0, 0xFF]),
                "09 06 0000010000ff",
            ),
            (Data::VisibleString(b"AB".to_vec()), "0a 02 4142"),
            (Data::Utf8String("₹".into()), "0c 03 e282b9"),
            (Data::Integer(-1), "0f ff"),
            (Data::Long(-300), "10 fed4"),
            (Data::Unsigned(7), "11 07"),
            (Data::LongUnsigned(8), "12 0008"),
            (Data::Long64(-1), "14 ffffffffffffffff"),
            (Data::Long64Unsigned(1), "15 0000000000000001"),
            (Data::Enum(2), "16 02"),
            (Data::float32(1.0), "17 3f800000"),
            (
                Data::Structure(vec![Data::Integer(-1), Data::Enum(30)]),
                "02 02 0f ff 16 1e",
            ),
            (Data::Array(vec![]), "01 00"),
        ];
        for (data, bytes) in cases {
            assert_eq!(data.to_bytes(), hex(bytes), "{data:?}");
            assert_eq!(Data::decode(&hex(bytes)), Ok(data));
        }
    }

    #[test]
    fn typed_errors_for_bad_input() {
        let cases = [
            ("", DecodeError::Truncated("data tag")),
            (
                "07 00",
                DecodeError::UnknownTag {
                    field: "data tag",
                    tag: 7,
                },
            ),
            (
                "03 02",
                DecodeError::InvalidValue {
                    field: "boolean",
                    value: 2,
                },
            ),
            (
                "04 03 a1",
                DecodeError::InvalidValue {
                    field: "bit-string unused bits",
                    value: 3,
                },
            ),
            (
                "09 81 05 0102030405",
                DecodeError::NonCanonicalLength("octet-string"),
            ),
            ("09 05 0102", DecodeError::Truncated("octet-string")),
            ("01 03 00 00", DecodeError::Truncated("element count")),
            ("11 01 00", DecodeError::TrailingBytes(1)),
            ("0c 01 ff", DecodeError::InvalidUtf8),
            ("06 0000", DecodeError::Truncated("double-long-unsigned")),
        ];
        for (bytes, err) in cases {
            assert_eq!(Data::decode(&hex(bytes)), Err(err), "{bytes}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut ok = vec![0x00];
        for _ in 0..MAX_DEPTH {
            ok = [&[0x02, 0x01][..], &ok].concat();
        }
        assert!(Data::decode(&ok).is_ok());
        let deep = [&[0x01, 0x01][..], &ok].concat();
        assert_eq!(Data::decode(&deep), Err(DecodeError::TooDeep));
        // A million-level bomb is refused without recursion trouble.
        let bomb: Vec<u8> = std::iter::repeat_n([0x01u8, 0x01], 1_000_000)
            .flatten()
            .collect();
        assert_eq!(Data::decode(&bomb), Err(DecodeError::TooDeep));
    }

    // A meter's load profile buffer (24 hourly rows of {date-time, status, value}) as quoted in
    // u9n/dlms-cosem tests/test_a_xdr.py `test_decode_array_and_structure` (MIT, commit
    // 0747b152b91f40ff13c415dc35d208f63676f501), rebuilt here row by row and checked byte for byte
    // against that file. Its leading 00 (Get-Data-Result "data") is not part of Data.
    #[test]
    fn u9n_load_profile_buffer_decodes_and_re_encodes() {
        let mut rows = String::new();
        for h in 0u32..24 {
            let value = 100_000 + 416 * h;
            rows += &format!("0203 090c07e2020c05{h:02x}000000800000 1100 06{value:08x}");
        }
        let bytes = hex(&format!("0118{rows}"));
        assert_eq!(bytes.len(), 554);
        let data = Data::decode(&bytes).unwrap();
        let Data::Array(rows) = &data else {
            panic!("{data:?}")
        };
        assert_eq!(rows.len(), 24);
        assert_eq!(
            rows[1],
            Data::Structure(vec![
                Data::OctetString(hex("07e2020c0501000000800000")),
                Data::Unsigned(0),
                Data::DoubleLongUnsigned(0x0001_8840),
            ])
        );
        assert_eq!(data.to_bytes(), bytes);
    }

    pub(crate) fn data() -> impl Strategy<Value = Data> {
        let leaf = prop_oneof![
            Just(Data::Null),
            any::<bool>().prop_map(Data::Boolean),
            (0usize..20).prop_flat_map(|len| {
                prop::collection::vec(any::<u8>(), len.div_ceil(8)).prop_map(move |mut b| {
                    if let Some(last) = b.last_mut() {
                        let unused = len.div_ceil(8) * 8 - len;
                        *last &= !((1u16 << unused) - 1) as u8;
                    }
                    Data::BitString(BitString::new(b, len).unwrap())
                })
            }),
            any::<i32>().prop_map(Data::DoubleLong),
            any::<u32>().prop_map(Data::DoubleLongUnsigned),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(Data::OctetString),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(Data::VisibleString),
            ".{0,10}".prop_map(Data::Utf8String),
            any::<i8>().prop_map(Data::Integer),
            any::<i16>().prop_map(Data::Long),
            any::<u8>().prop_map(Data::Unsigned),
            any::<u16>().prop_map(Data::LongUnsigned),
            any::<i64>().prop_map(Data::Long64),
            any::<u64>().prop_map(Data::Long64Unsigned),
            any::<u8>().prop_map(Data::Enum),
            any::<u32>().prop_map(Data::Float32),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Data::Array),
                prop::collection::vec(inner, 0..8).prop_map(Data::Structure),
            ]
        })
    }

    proptest! {
        #[test]
        fn data_round_trips(d in data()) {
            prop_assert_eq!(Data::decode(&d.to_bytes()), Ok(d));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_decoded_data_re_encodes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(d) = Data::decode(&bytes) {
                prop_assert_eq!(d.to_bytes(), bytes);
            }
        }

        #[test]
        fn mutated_data_never_panics(d in data(), at in any::<prop::sample::Index>(), b in any::<u8>()) {
            let mut bytes = d.to_bytes();
            let i = at.index(bytes.len());
            bytes[i] = b;
            if let Ok(d) = Data::decode(&bytes) {
                prop_assert_eq!(d.to_bytes(), bytes);
            }
        }
    }
}
