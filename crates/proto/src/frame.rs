//! LoRaWAN 1.0.x data frames (PHYPayload) built and opened with the `lorawan` crate, plus the FCnt rules.
//!
//! gramgrid uses activation by personalisation (ABP): every meter has a fixed DevAddr, NwkSKey and
//! AppSKey from the meter manifest. The MIC is computed with the NwkSKey, the FRMPayload is encrypted
//! with the AppSKey (FPort > 0) and the 32-bit frame counter travels as its low 16 bits.

use std::fmt;

use lorawan::keys::{AppSKey, NewSKey, AES128};
use lorawan::parser::{DataPayload, FCtrl, PhyPayload};
use thiserror::Error;

/// Largest PHYPayload a LoRa radio carries (the PHY length field is one byte).
pub const MAX_PHY_PAYLOAD: usize = 255;
/// MHDR (1) + DevAddr (4) + FCtrl (1) + FCnt (2) + FPort (1) + MIC (4): LoRaWAN bytes around FRMPayload.
pub const FRAME_OVERHEAD: usize = 13;
/// Largest FRMPayload in any IN865 data rate when no FOpts are sent (DR4/DR5 without a repeater).
pub const MAX_FRM_PAYLOAD: usize = MAX_PHY_PAYLOAD - FRAME_OVERHEAD;
/// LoRaWAN 1.0.x MAX_FCNT_GAP: a counter further ahead than this is treated as lost sync.
pub const MAX_FCNT_GAP: u32 = 16_384;

/// A 32-bit LoRaWAN device address. Displayed MSB first (`26011F2A`); sent little-endian on air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevAddr(pub u32);

impl DevAddr {
    /// The four bytes as they appear in the FHDR (little-endian).
    pub fn to_air_bytes(self) -> [u8; 4] {
        self.0.to_le_bytes()
    }

    /// Reads the address from the four FHDR bytes (little-endian).
    pub fn from_air_bytes(bytes: [u8; 4]) -> Self {
        DevAddr(u32::from_le_bytes(bytes))
    }
}

impl fmt::Display for DevAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

/// A 128-bit AES session key. It has no `Display`, and `Debug` prints a placeholder, so a key cannot
/// reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; 16]);

impl SessionKey {
    /// Wraps raw key bytes (MSB first, as LoRaWAN tools print them).
    pub fn new(bytes: [u8; 16]) -> Self {
        SessionKey(bytes)
    }

    /// Parses 32 MSB-first hex digits; `None` otherwise (the text is never echoed back).
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
        Some(SessionKey(bytes))
    }

    /// The key as 32 hex digits, for storage only: never format the result into a log line.
    pub fn to_storage_hex(&self) -> String {
        hex::encode_upper(self.0)
    }

    fn aes(&self) -> AES128 {
        AES128(self.0)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

/// The ABP session of one meter: its address and its two session keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// The meter's fixed device address.
    pub dev_addr: DevAddr,
    /// Network session key: computes and checks the MIC.
    pub nwk_skey: SessionKey,
    /// Application session key: encrypts and decrypts the FRMPayload.
    pub app_skey: SessionKey,
}

/// Which way a frame travels: meter to gateway (up) or gateway to meter (down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Meter to gateway.
    Uplink,
    /// Gateway to meter.
    Downlink,
}

/// What to put in a data frame. FPort 0 (MAC commands) is not used by gramgrid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec<'a> {
    /// Uplink or downlink: sets the MHDR type and enters MIC and encryption.
    pub direction: Direction,
    /// Confirmed frames ask the receiver for an ACK.
    pub confirmed: bool,
    /// Sets FCtrl.ACK: this frame acknowledges the last confirmed frame received.
    pub ack: bool,
    /// The full 32-bit counter; only its low 16 bits go on air, all 32 enter MIC and encryption.
    pub fcnt: u32,
    /// Application port, 1..=223.
    pub fport: u8,
    /// The clear FRMPayload, at most [`MAX_FRM_PAYLOAD`] bytes; encrypted with the AppSKey.
    pub payload: &'a [u8],
}

/// The clear-text header fields of a data frame, readable without keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Uplink or downlink, from the MHDR.
    pub direction: Direction,
    /// Whether the MHDR marks a confirmed data frame.
    pub confirmed: bool,
    /// The sender's (uplink) or addressee's (downlink) device address.
    pub dev_addr: DevAddr,
    /// FCtrl.ACK: the frame acknowledges the last confirmed frame received.
    pub ack: bool,
    /// The 16 bits of FCnt that travel on air.
    pub fcnt16: u16,
    /// FPort, or None when the frame carries no FRMPayload.
    pub fport: Option<u8>,
}

/// Why a frame could not be built or opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Too short, or its length fields do not add up (the text says which).
    #[error("frame too short or inconsistent: {0}")]
    Malformed(&'static str),
    /// The MHDR is not an unconfirmed or confirmed data frame of LoRaWAN R1 (e.g. a join request).
    #[error("not a LoRaWAN R1 data frame (MHDR {mhdr:#04x})")]
    NotDataFrame {
        /// The MHDR byte found.
        mhdr: u8,
    },
    /// The MIC does not verify: wrong keys, wrong 32-bit counter, or a corrupted or forged frame.
    #[error("MIC check failed")]
    BadMic,
    /// FPort 0 (MAC commands) or 224..=255 was asked for.
    #[error("FPort {0} is reserved (gramgrid uses 1..=223)")]
    ReservedFport(u8),
    /// The FRMPayload does not fit in a frame.
    #[error("FRMPayload of {len} bytes exceeds {max}")]
    PayloadTooLarge {
        /// Bytes offered.
        len: usize,
        /// Largest FRMPayload allowed ([`MAX_FRM_PAYLOAD`]).
        max: usize,
    },
    /// The `lorawan` crate refused to build the frame (its error, as text).
    #[error("lorawan encoder refused the frame: {0}")]
    Encoder(String),
}

/// Builds a data frame: encrypts `spec.payload` with the AppSKey and appends the MIC (NwkSKey).
pub fn encode_data_frame(keys: &SessionKeys, spec: &FrameSpec<'_>) -> Result<Vec<u8>, FrameError> {
    if spec.fport == 0 || spec.fport > 223 {
        return Err(FrameError::ReservedFport(spec.fport));
    }
    if spec.payload.len() > MAX_FRM_PAYLOAD {
        return Err(FrameError::PayloadTooLarge {
            len: spec.payload.len(),
            max: MAX_FRM_PAYLOAD,
        });
    }
    let uplink = spec.direction == Direction::Uplink;
    let mut fctrl = FCtrl::new(0, uplink);
    if spec.ack {
        fctrl.set_ack();
    }
    let mut creator = lorawan::creator::DataPayloadCreator::new();
    creator
        .set_uplink(uplink)
        .set_confirmed(spec.confirmed)
        .set_dev_addr(&keys.dev_addr.to_air_bytes())
        .set_fctrl(&fctrl)
        .set_fcnt(spec.fcnt)
        .set_f_port(spec.fport);
    let nwk = NewSKey::from(keys.nwk_skey.0);
    let app = AppSKey::from(keys.app_skey.0);
    creator
        .build(spec.payload, &[], &nwk, &app)
        .map(<[u8]>::to_vec)
        .map_err(|e| FrameError::Encoder(format!("{e:?}")))
}

/// An unconfirmed data frame on FPort 1 (application payload v1) with counter `fcnt`: what the
/// gateway and the meters exchange.
pub fn seal_v1(
    keys: &SessionKeys,
    direction: Direction,
    fcnt: u32,
    body: &[u8],
) -> Result<Vec<u8>, FrameError> {
    encode_data_frame(
        keys,
        &FrameSpec {
            direction,
            confirmed: false,
            ack: false,
            fcnt,
            fport: 1,
            payload: body,
        },
    )
}

/// Reads the clear-text header of a data frame without keys (to find the meter and its counter).
pub fn parse_header(phy: &[u8]) -> Result<FrameHeader, FrameError> {
    // MHDR + DevAddr + FCtrl + FCnt + MIC is the shortest possible data frame.
    const MIN_LEN: usize = 12;
    let mhdr = *phy.first().ok_or(FrameError::Malformed("empty frame"))?;
    let (direction, confirmed) = match mhdr {
        0x40 => (Direction::Uplink, false),
        0x80 => (Direction::Uplink, true),
        0x60 => (Direction::Downlink, false),
        0xA0 => (Direction::Downlink, true),
        other => return Err(FrameError::NotDataFrame { mhdr: other }),
    };
    if phy.len() < MIN_LEN {
        return Err(FrameError::Malformed(
            "shorter than a data frame header and MIC",
        ));
    }
    let fctrl = phy[5];
    let fhdr_end = 8 + usize::from(fctrl & 0x0F);
    let mic_start = phy.len() - 4;
    if fhdr_end > mic_start {
        return Err(FrameError::Malformed("FOptsLen runs into the MIC"));
    }
    Ok(FrameHeader {
        direction,
        confirmed,
        dev_addr: DevAddr::from_air_bytes([phy[1], phy[2], phy[3], phy[4]]),
        ack: fctrl & 0x20 != 0,
        fcnt16: u16::from_le_bytes([phy[6], phy[7]]),
        fport: (fhdr_end < mic_start).then(|| phy[fhdr_end]),
    })
}

/// Verifies the MIC of a data frame for the given full counter and returns the decrypted FRMPayload.
///
/// `fcnt32` must be the reconstructed 32-bit counter (see [`check_fcnt`]); the MIC covers all 32 bits.
pub fn open_data_frame(keys: &SessionKeys, phy: &[u8], fcnt32: u32) -> Result<Vec<u8>, FrameError> {
    // parse_header rejects what the lorawan parser would index out of bounds on.
    parse_header(phy)?;
    let parsed = lorawan::parser::parse(phy.to_vec()).map_err(|e| match e {
        lorawan::parser::Error::UnsupportedMajorVersion
        | lorawan::parser::Error::InvalidMessageType => FrameError::NotDataFrame { mhdr: phy[0] },
        _ => FrameError::Malformed("rejected by the LoRaWAN parser"),
    })?;
    let PhyPayload::Data(DataPayload::Encrypted(encrypted)) = parsed else {
        return Err(FrameError::NotDataFrame { mhdr: phy[0] });
    };
    let nwk = keys.nwk_skey.aes();
    let app = keys.app_skey.aes();
    let decrypted = encrypted
        .decrypt_if_mic_ok(&nwk, &app, fcnt32)
        .map_err(|_| FrameError::BadMic)?;
    Ok(match decrypted.frm_payload() {
        lorawan::parser::FRMPayload::Data(data) => data.to_vec(),
        lorawan::parser::FRMPayload::MACCommands(cmds) => cmds.data().to_vec(),
        lorawan::parser::FRMPayload::None => Vec::new(),
    })
}

/// The outcome of placing a 16-bit on-air FCnt against the last accepted 32-bit counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FcntCheck {
    /// New frame: the smallest counter above the last accepted one with these low 16 bits.
    Accept(u32),
    /// The counter is at or below the last accepted one: a replay, a retransmission or a reset meter.
    /// `fcnt` is the regressed 32-bit value, which still verifies the MIC of a genuine old frame.
    Replay {
        /// The regressed 32-bit counter.
        fcnt: u32,
    },
    /// The counter is more than MAX_FCNT_GAP ahead (or would pass 2^32): frames were lost or forged.
    TooFarAhead,
}

/// Applies the LoRaWAN 1.0.x counter rule.
///
/// `last` is the last accepted counter of this session (`None` before the first frame, when the
/// meter starts at 0). A 16-bit value is taken as new if it lies less than MAX_FCNT_GAP above the
/// next expected counter, and as a replay if it lies less than 2^15 at or below the last one.
pub fn check_fcnt(last: Option<u32>, fcnt16: u16) -> FcntCheck {
    let next = last.map_or(0, |l| u64::from(l) + 1);
    // Distance forward from the next expected counter, modulo 2^16 (only 16 bits are on air).
    let ahead = u64::from(fcnt16.wrapping_sub(next as u16));
    if ahead < u64::from(MAX_FCNT_GAP) {
        return u32::try_from(next + ahead).map_or(FcntCheck::TooFarAhead, FcntCheck::Accept);
    }
    match last {
        Some(last) => {
            let behind = u32::from((last as u16).wrapping_sub(fcnt16));
            if behind < 0x8000 && behind <= last {
                FcntCheck::Replay {
                    fcnt: last - behind,
                }
            } else {
                FcntCheck::TooFarAhead
            }
        }
        None => FcntCheck::TooFarAhead,
    }
}

/// The smallest IN865 FRMPayload ([`in865_max_frm_payload`] at SF10 to SF12), in bytes.
pub const MIN_IN865_FRM_PAYLOAD: usize = 51;

/// Largest FRMPayload (bytes, no FOpts) per spreading factor at BW125 in IN865.
///
/// Source: LoRaWAN Regional Parameters RP002-1.0.x, IN865-867 maximum payload size table
/// (DR0 SF12, DR1 SF11, DR2 SF10: N = 51; DR3 SF9: 115; DR4 SF8, DR5 SF7: 222 with a possible repeater,
/// 242 without). gramgrid uses the repeater-compatible column so frames stay valid if one is added.
pub fn in865_max_frm_payload(spreading_factor: u8) -> Option<usize> {
    match spreading_factor {
        10..=12 => Some(MIN_IN865_FRM_PAYLOAD),
        9 => Some(115),
        7 | 8 => Some(222),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SessionKeys {
        SessionKeys {
            dev_addr: DevAddr(0x2601_1F2A),
            nwk_skey: SessionKey::new([0x11; 16]),
            app_skey: SessionKey::new([0x22; 16]),
        }
    }

    fn spec(direction: Direction, fcnt: u32, payload: &[u8]) -> FrameSpec<'_> {
        FrameSpec {
            direction,
            confirmed: false,
            ack: false,
            fcnt,
            fport: 1,
            payload,
        }
    }

    #[test]
    fn debug_output_never_contains_key_bytes() {
        let mut k = keys();
        k.nwk_skey = SessionKey::new([0xAB; 16]);
        k.app_skey = SessionKey::new([0xCD; 16]);
        let shown = format!("{k:?}");
        assert!(shown.contains("DevAddr"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
        for leak in ["171", "205", "ab", "AB", "cd", "CD"] {
            assert!(!shown.contains(leak), "key material {leak} in {shown}");
        }
    }

    #[test]
    fn dev_addr_goes_little_endian_on_air() {
        let phy = encode_data_frame(&keys(), &spec(Direction::Uplink, 1, b"x")).unwrap();
        assert_eq!(&phy[1..5], &[0x2A, 0x1F, 0x01, 0x26]);
        assert_eq!(DevAddr(0x2601_1F2A).to_string(), "26011F2A");
    }

    #[test]
    fn round_trip_all_four_data_types_with_32_bit_counter() {
        let payload = b"meter report bytes";
        for direction in [Direction::Uplink, Direction::Downlink] {
            for confirmed in [false, true] {
                let fcnt = 0x0001_2345;
                let s = FrameSpec {
                    confirmed,
                    ack: confirmed,
                    ..spec(direction, fcnt, payload)
                };
                let phy = encode_data_frame(&keys(), &s).unwrap();
                assert_eq!(phy.len(), FRAME_OVERHEAD + payload.len());
                assert_ne!(
                    &phy[9..9 + payload.len()],
                    payload,
                    "FRMPayload must be encrypted"
                );
                let h = parse_header(&phy).unwrap();
                assert_eq!(
                    h,
                    FrameHeader {
                        direction,
                        confirmed,
                        dev_addr: keys().dev_addr,
                        ack: confirmed,
                        fcnt16: 0x2345,
                        fport: Some(1),
                    }
                );
                assert_eq!(open_data_frame(&keys(), &phy, fcnt).unwrap(), payload);
                // Same low 16 bits, other high bits: the MIC covers all 32.
                assert_eq!(
                    open_data_frame(&keys(), &phy, 0x2345),
                    Err(FrameError::BadMic)
                );
            }
        }
    }

    #[test]
    fn wrong_keys_and_flipped_bits_fail_the_mic() {
        let phy = encode_data_frame(&keys(), &spec(Direction::Uplink, 7, b"hello")).unwrap();
        let mut other = keys();
        other.nwk_skey = SessionKey::new([0x12; 16]);
        assert_eq!(open_data_frame(&other, &phy, 7), Err(FrameError::BadMic));
        for i in 0..phy.len() {
            let mut bad = phy.clone();
            bad[i] ^= 0x01;
            assert!(
                open_data_frame(&keys(), &bad, 7).is_err(),
                "bit flip at byte {i} accepted"
            );
        }
    }

    #[test]
    fn encoder_refuses_reserved_ports_and_oversize_payloads() {
        let big = vec![0u8; MAX_FRM_PAYLOAD + 1];
        assert_eq!(
            encode_data_frame(&keys(), &spec(Direction::Uplink, 1, &big)),
            Err(FrameError::PayloadTooLarge {
                len: MAX_FRM_PAYLOAD + 1,
                max: MAX_FRM_PAYLOAD
            })
        );
        let max = vec![0u8; MAX_FRM_PAYLOAD];
        assert_eq!(
            encode_data_frame(&keys(), &spec(Direction::Uplink, 1, &max))
                .unwrap()
                .len(),
            255
        );
        for fport in [0, 224, 255] {
            let s = FrameSpec {
                fport,
                ..spec(Direction::Uplink, 1, b"x")
            };
            assert_eq!(
                encode_data_frame(&keys(), &s),
                Err(FrameError::ReservedFport(fport))
            );
        }
    }

    #[test]
    fn header_parser_rejects_short_and_non_data_frames() {
        assert!(matches!(parse_header(&[]), Err(FrameError::Malformed(_))));
        assert!(matches!(
            parse_header(&[0x40; 11]),
            Err(FrameError::Malformed(_))
        ));
        assert_eq!(
            parse_header(&[0x00; 23]),
            Err(FrameError::NotDataFrame { mhdr: 0x00 })
        );
        assert_eq!(
            parse_header(&[0x41; 20]),
            Err(FrameError::NotDataFrame { mhdr: 0x41 })
        );
        // FOptsLen 15 in a 20-byte frame leaves no room for the MIC.
        let mut f = vec![0x40, 1, 2, 3, 4, 0x0F, 0, 0];
        f.extend([0; 12]);
        assert!(matches!(parse_header(&f), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn fcnt_first_frame_and_simple_increments() {
        assert_eq!(check_fcnt(None, 0), FcntCheck::Accept(0));
        assert_eq!(check_fcnt(None, 5), FcntCheck::Accept(5));
        assert_eq!(check_fcnt(Some(0), 1), FcntCheck::Accept(1));
        assert_eq!(check_fcnt(Some(10), 11), FcntCheck::Accept(11));
        assert_eq!(check_fcnt(Some(10), 20), FcntCheck::Accept(20));
    }

    #[test]
    fn fcnt_rolls_over_16_bits_into_the_upper_half() {
        assert_eq!(check_fcnt(Some(0xFFFF), 0), FcntCheck::Accept(0x1_0000));
        assert_eq!(
            check_fcnt(Some(0x1_FFF0), 0x0005),
            FcntCheck::Accept(0x2_0005)
        );
        assert_eq!(
            check_fcnt(Some(76_542), 76_543u32 as u16),
            FcntCheck::Accept(76_543)
        );
    }

    #[test]
    fn fcnt_replays_and_regressions_are_named() {
        assert_eq!(check_fcnt(Some(10), 10), FcntCheck::Replay { fcnt: 10 });
        assert_eq!(check_fcnt(Some(10), 3), FcntCheck::Replay { fcnt: 3 });
        assert_eq!(
            check_fcnt(Some(0x1_0002), 0xFFFE),
            FcntCheck::Replay { fcnt: 0xFFFE }
        );
        // Behind by more than the counter itself: cannot be an old frame of this session.
        assert_eq!(check_fcnt(Some(5), 60_000), FcntCheck::TooFarAhead);
    }

    #[test]
    fn fcnt_gap_limit_is_exclusive() {
        let last = 1_000;
        let edge = (last + MAX_FCNT_GAP) as u16; // next + MAX_FCNT_GAP - 1
        assert_eq!(
            check_fcnt(Some(last), edge),
            FcntCheck::Accept(last + MAX_FCNT_GAP)
        );
        assert_eq!(check_fcnt(Some(last), edge + 1), FcntCheck::TooFarAhead);
        assert_eq!(
            check_fcnt(None, MAX_FCNT_GAP as u16),
            FcntCheck::TooFarAhead
        );
    }

    #[test]
    fn fcnt_never_wraps_past_u32() {
        assert_eq!(
            check_fcnt(Some(u32::MAX - 1), 0xFFFF),
            FcntCheck::Accept(u32::MAX)
        );
        assert_eq!(check_fcnt(Some(u32::MAX), 0), FcntCheck::TooFarAhead);
    }

    #[test]
    fn in865_payload_table() {
        assert_eq!(in865_max_frm_payload(12), Some(51));
        assert_eq!(in865_max_frm_payload(10), Some(51));
        assert_eq!(in865_max_frm_payload(9), Some(115));
        assert_eq!(in865_max_frm_payload(7), Some(222));
        assert_eq!(in865_max_frm_payload(6), None);
        assert_eq!(in865_max_frm_payload(13), None);
    }
}
