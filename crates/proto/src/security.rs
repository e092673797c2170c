//! The frame filter: raw PHYPayload in, accepted frame or a typed, countable rejection out.
//!
//! Pure by design: the caller looks up the session (keys and last accepted FCnt), and after an
//! acceptance the caller persists the new counter *before* acting on the frame, so a frame replayed
//! after a gateway restart still meets the stored counter and is rejected.

use std::fmt;

use thiserror::Error;

use super::frame::{
    check_fcnt, open_data_frame, parse_header, DevAddr, Direction, FcntCheck, FrameError,
    SessionKeys, MAX_PHY_PAYLOAD,
};

/// What the filter needs to know about one meter's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The meter's DevAddr and ABP session keys.
    pub keys: SessionKeys,
    /// Last accepted counter in the filter's direction; `None` if no frame was ever accepted.
    pub last_fcnt: Option<u32>,
}

/// A frame that passed every check. Persist `fcnt` as the session's new last counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedFrame {
    /// The sender's (uplink) or addressee's (downlink) device address.
    pub dev_addr: DevAddr,
    /// The reconstructed 32-bit counter.
    pub fcnt: u32,
    /// FPort, or None when the frame carries no FRMPayload.
    pub fport: Option<u8>,
    /// Whether the sender asked for an ACK (confirmed data frame).
    pub confirmed: bool,
    /// FCtrl.ACK: the sender acknowledges our last confirmed frame.
    pub ack: bool,
    /// Decrypted FRMPayload.
    pub payload: Vec<u8>,
}

/// Why a frame was dropped. None of these is fatal; each is counted and logged by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    /// Longer than the filter's size limit.
    #[error("frame of {len} bytes exceeds {max}")]
    Oversize {
        /// Bytes received.
        len: usize,
        /// The filter's limit in bytes.
        max: usize,
    },
    /// Not a well-formed LoRaWAN data frame.
    #[error("malformed frame: {0}")]
    Malformed(FrameError),
    /// An uplink reached a downlink filter or the other way round (e.g. another gateway's downlink).
    #[error("{got:?} frame where {expected:?} was expected")]
    WrongDirection {
        /// The direction this filter accepts.
        expected: Direction,
        /// The direction of the frame received.
        got: Direction,
    },
    /// No session is known for this DevAddr (not in the manifest, or another network's device).
    #[error("unknown DevAddr {0}")]
    UnknownDevAddr(DevAddr),
    /// The MIC does not verify with the session's keys: corrupted or forged.
    #[error("bad MIC from DevAddr {0}")]
    BadMic(DevAddr),
    /// A genuine frame (MIC verified) whose counter is at or below the last accepted one.
    #[error("replayed or regressed FCnt {fcnt} from DevAddr {dev_addr} (last accepted {last})")]
    ReplayedFcnt {
        /// The sender's device address.
        dev_addr: DevAddr,
        /// The frame's reconstructed 32-bit counter.
        fcnt: u32,
        /// The session's last accepted counter.
        last: u32,
    },
    /// The counter is more than [`MAX_FCNT_GAP`](super::frame::MAX_FCNT_GAP) ahead: frames were
    /// lost or forged; the MIC cannot be checked.
    #[error(
        "FCnt {fcnt16} from DevAddr {dev_addr} is beyond the gap limit (last accepted {last:?})"
    )]
    FcntGap {
        /// The sender's device address.
        dev_addr: DevAddr,
        /// The 16 counter bits received on air.
        fcnt16: u16,
        /// The session's last accepted counter, None if none yet.
        last: Option<u32>,
    },
}

/// The field-less kind of a rejection, for counters and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// [`Rejection::Oversize`].
    Oversize,
    /// [`Rejection::Malformed`].
    Malformed,
    /// [`Rejection::WrongDirection`].
    WrongDirection,
    /// [`Rejection::UnknownDevAddr`].
    UnknownDevAddr,
    /// [`Rejection::BadMic`].
    BadMic,
    /// [`Rejection::ReplayedFcnt`].
    ReplayedFcnt,
    /// [`Rejection::FcntGap`].
    FcntGap,
    /// The frame was good but its application payload did not decode (recorded by the caller).
    BadPayload,
    /// An authentic frame carrying a DLMS APDU whose invocation counter is not above the last one
    /// accepted from the meter (`dlms::client::DlmsClientError::Replayed`).
    DlmsReplayed,
    /// A DLMS APDU whose GCM tag does not verify: wrong key or system title, or a changed bit.
    DlmsBadTag,
    /// A DLMS frame whose wrapper, ciphered envelope or APDU is malformed.
    DlmsMalformed,
    /// An authentic DLMS APDU that answers nothing in flight, names another meter, or carries
    /// values outside what docs/dlms.md section 7 fixes.
    DlmsUnexpected,
}

impl RejectReason {
    /// Every reason, in a fixed order (the order of [`RejectCounters::iter`]).
    pub const ALL: [RejectReason; 12] = [
        RejectReason::Oversize,
        RejectReason::Malformed,
        RejectReason::WrongDirection,
        RejectReason::UnknownDevAddr,
        RejectReason::BadMic,
        RejectReason::ReplayedFcnt,
        RejectReason::FcntGap,
        RejectReason::BadPayload,
        RejectReason::DlmsReplayed,
        RejectReason::DlmsBadTag,
        RejectReason::DlmsMalformed,
        RejectReason::DlmsUnexpected,
    ];

    /// A stable snake_case name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Oversize => "oversize",
            RejectReason::Malformed => "malformed",
            RejectReason::WrongDirection => "wrong_direction",
            RejectReason::UnknownDevAddr => "unknown_dev_addr",
            RejectReason::BadMic => "bad_mic",
            RejectReason::ReplayedFcnt => "replayed_fcnt",
            RejectReason::FcntGap => "fcnt_gap",
            RejectReason::BadPayload => "bad_payload",
            RejectReason::DlmsReplayed => "dlms_replayed",
            RejectReason::DlmsBadTag => "dlms_bad_tag",
            RejectReason::DlmsMalformed => "dlms_malformed",
            RejectReason::DlmsUnexpected => "dlms_unexpected",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Rejection {
    /// The counter this rejection belongs to.
    pub fn reason(&self) -> RejectReason {
        match self {
            Rejection::Oversize { .. } => RejectReason::Oversize,
            Rejection::Malformed(_) => RejectReason::Malformed,
            Rejection::WrongDirection { .. } => RejectReason::WrongDirection,
            Rejection::UnknownDevAddr(_) => RejectReason::UnknownDevAddr,
            Rejection::BadMic(_) => RejectReason::BadMic,
            Rejection::ReplayedFcnt { .. } => RejectReason::ReplayedFcnt,
            Rejection::FcntGap { .. } => RejectReason::FcntGap,
        }
    }
}

/// The result of checking one frame.
pub type FrameVerdict = Result<AcceptedFrame, Rejection>;

/// Per-reason rejection counters, for the metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectCounters {
    counts: [u64; RejectReason::ALL.len()],
}

impl RejectCounters {
    /// Counts one rejection of this kind.
    pub fn record(&mut self, reason: RejectReason) {
        let slot = &mut self.counts[reason.index()];
        *slot = slot.saturating_add(1);
    }

    /// Rejections of this kind counted so far.
    pub fn get(&self, reason: RejectReason) -> u64 {
        self.counts[reason.index()]
    }

    /// Rejections of every kind counted so far (saturating).
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0, |acc, c| acc.saturating_add(*c))
    }

    /// `(reason, count)` for every reason, zeros included, so metrics series never disappear.
    pub fn iter(&self) -> impl Iterator<Item = (RejectReason, u64)> + '_ {
        RejectReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }
}

/// Checks frames travelling in one direction: the gateway filters uplinks, a meter filters downlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameFilter {
    direction: Direction,
    max_len: usize,
}

impl FrameFilter {
    /// The gateway's filter: accepts uplinks up to the LoRa maximum of 255 bytes.
    pub fn gateway() -> Self {
        FrameFilter {
            direction: Direction::Uplink,
            max_len: MAX_PHY_PAYLOAD,
        }
    }

    /// A meter's filter: accepts downlinks up to 255 bytes.
    pub fn meter() -> Self {
        FrameFilter {
            direction: Direction::Downlink,
            max_len: MAX_PHY_PAYLOAD,
        }
    }

    /// Lowers the size limit, e.g. to the largest frame the current spreading factor allows.
    pub fn with_max_len(self, max_len: usize) -> Self {
        FrameFilter {
            max_len: max_len.min(MAX_PHY_PAYLOAD),
            ..self
        }
    }

    /// Checks one raw PHYPayload. `lookup` returns the session for a DevAddr, or `None` if unknown.
    ///
    /// Order: size, header, direction, DevAddr, counter window, MIC, then replay. The MIC is verified
    /// before a replay is declared, so a forged frame counts as a bad MIC and a genuine old frame as
    /// a replay; a frame beyond the gap limit cannot be verified and counts as a gap.
    pub fn check<F>(&self, phy: &[u8], lookup: F) -> FrameVerdict
    where
        F: FnOnce(DevAddr) -> Option<Session>,
    {
        if phy.len() > self.max_len {
            return Err(Rejection::Oversize {
                len: phy.len(),
                max: self.max_len,
            });
        }
        let header = parse_header(phy).map_err(Rejection::Malformed)?;
        if header.direction != self.direction {
            return Err(Rejection::WrongDirection {
                expected: self.direction,
                got: header.direction,
            });
        }
        let dev_addr = header.dev_addr;
        let session = lookup(dev_addr).ok_or(Rejection::UnknownDevAddr(dev_addr))?;
        let (fcnt, is_new) = match check_fcnt(session.last_fcnt, header.fcnt16) {
            FcntCheck::Accept(fcnt) => (fcnt, true),
            FcntCheck::Replay { fcnt } => (fcnt, false),
            FcntCheck::TooFarAhead => {
                return Err(Rejection::FcntGap {
                    dev_addr,
                    fcnt16: header.fcnt16,
                    last: session.last_fcnt,
                })
            }
        };
        let payload = open_data_frame(&session.keys, phy, fcnt).map_err(|e| match e {
            FrameError::BadMic => Rejection::BadMic(dev_addr),
            other => Rejection::Malformed(other),
        })?;
        match session.last_fcnt {
            Some(last) if !is_new => Err(Rejection::ReplayedFcnt {
                dev_addr,
                fcnt,
                last,
            }),
            _ => Ok(AcceptedFrame {
                dev_addr,
                fcnt,
                fport: header.fport,
                confirmed: header.confirmed,
                ack: header.ack,
                payload,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_data_frame, FrameSpec, SessionKey};
    use proptest::prelude::*;

    const ADDR: DevAddr = DevAddr(0x2601_0001);

    fn keys() -> SessionKeys {
        SessionKeys {
            dev_addr: ADDR,
            nwk_skey: SessionKey::new([7; 16]),
            app_skey: SessionKey::new([9; 16]),
        }
    }

    fn uplink(fcnt: u32, payload: &[u8]) -> Vec<u8> {
        let spec = FrameSpec {
            direction: Direction::Uplink,
            confirmed: false,
            ack: false,
            fcnt,
            fport: 1,
            payload,
        };
        encode_data_frame(&keys(), &spec).unwrap()
    }

    fn session(last_fcnt: Option<u32>) -> impl FnOnce(DevAddr) -> Option<Session> {
        move |addr| {
            (addr == ADDR).then(|| Session {
                keys: keys(),
                last_fcnt,
            })
        }
    }

    #[test]
    fn accepts_a_fresh_frame_and_reports_the_full_counter() {
        let phy = uplink(0x1_0005, b"reading");
        let got = FrameFilter::gateway()
            .check(&phy, session(Some(0x1_0001)))
            .unwrap();
        assert_eq!(
            got,
            AcceptedFrame {
                dev_addr: ADDR,
                fcnt: 0x1_0005,
                fport: Some(1),
                confirmed: false,
                ack: false,
                payload: b"reading".to_vec(),
            }
        );
    }

    #[test]
    fn replay_after_restart_with_restored_counter_is_rejected() {
        // Before the restart: the gateway accepts FCnt 41 and its store persists last_fcnt = 41.
        let phy = uplink(41, b"kWh");
        let accepted = FrameFilter::gateway()
            .check(&phy, session(Some(40)))
            .unwrap();
        let persisted: u32 = accepted.fcnt;
        // After the restart the counter comes back from the store; the captured frame is replayed.
        let restored = Some(persisted);
        let verdict = FrameFilter::gateway().check(&phy, session(restored));
        assert_eq!(
            verdict,
            Err(Rejection::ReplayedFcnt {
                dev_addr: ADDR,
                fcnt: 41,
                last: 41
            })
        );
        // An older frame is a regression, also rejected; the next real frame passes.
        let older = uplink(30, b"kWh");
        assert!(matches!(
            FrameFilter::gateway().check(&older, session(restored)),
            Err(Rejection::ReplayedFcnt { fcnt: 30, .. })
        ));
        assert!(FrameFilter::gateway()
            .check(&uplink(42, b"kWh"), session(restored))
            .is_ok());
    }

    #[test]
    fn forged_old_frame_counts_as_bad_mic_not_replay() {
        let mut phy = uplink(5, b"abc");
        let last = phy.len() - 1;
        phy[last] ^= 0xFF;
        assert_eq!(
            FrameFilter::gateway().check(&phy, session(Some(9))),
            Err(Rejection::BadMic(ADDR))
        );
        assert_eq!(
            FrameFilter::gateway().check(&phy, session(Some(1))),
            Err(Rejection::BadMic(ADDR))
        );
    }

    #[test]
    fn unknown_dev_addr_wrong_direction_gap_and_oversize() {
        let phy = uplink(1, b"x");
        assert_eq!(
            FrameFilter::gateway().check(&phy, |_| None),
            Err(Rejection::UnknownDevAddr(ADDR))
        );
        assert_eq!(
            FrameFilter::meter().check(&phy, session(None)),
            Err(Rejection::WrongDirection {
                expected: Direction::Downlink,
                got: Direction::Uplink
            })
        );
        let far = uplink(20_000, b"x");
        assert_eq!(
            FrameFilter::gateway().check(&far, session(Some(1))),
            Err(Rejection::FcntGap {
                dev_addr: ADDR,
                fcnt16: 20_000,
                last: Some(1)
            })
        );
        let big = vec![0x40; 256];
        assert_eq!(
            FrameFilter::gateway().check(&big, session(None)),
            Err(Rejection::Oversize { len: 256, max: 255 })
        );
        let tight = FrameFilter::gateway().with_max_len(20);
        assert_eq!(
            tight.check(&uplink(1, &[0; 8]), session(None)),
            Err(Rejection::Oversize { len: 21, max: 20 })
        );
        assert!(matches!(
            FrameFilter::gateway().check(&[0x40, 1, 2], session(None)),
            Err(Rejection::Malformed(_))
        ));
    }

    #[test]
    fn meter_filter_accepts_gateway_downlinks() {
        let spec = FrameSpec {
            direction: Direction::Downlink,
            confirmed: true,
            ack: true,
            fcnt: 3,
            fport: 1,
            payload: b"relay",
        };
        let phy = encode_data_frame(&keys(), &spec).unwrap();
        let got = FrameFilter::meter().check(&phy, session(Some(2))).unwrap();
        assert!(got.confirmed && got.ack);
        assert_eq!(got.payload, b"relay");
    }

    #[test]
    fn counters_follow_reasons() {
        let mut c = RejectCounters::default();
        let phy = uplink(1, b"x");
        for _ in 0..3 {
            if let Err(r) = FrameFilter::gateway().check(&phy, |_| None) {
                c.record(r.reason());
            }
        }
        c.record(RejectReason::BadPayload);
        assert_eq!(c.get(RejectReason::UnknownDevAddr), 3);
        assert_eq!(c.get(RejectReason::BadPayload), 1);
        assert_eq!(c.get(RejectReason::BadMic), 0);
        assert_eq!(c.total(), 4);
        let names: Vec<_> = c.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(names.len(), 12);
        assert_eq!(names[3], "unknown_dev_addr");
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "ALL must follow declaration order");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_or_pass(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                                               last in proptest::option::of(any::<u32>())) {
            let verdict = FrameFilter::gateway().check(&bytes, session(last));
            // Without the keys nobody forges a MIC; 2^-32 per case is negligible.
            prop_assert!(verdict.is_err());
        }

        #[test]
        fn every_single_bit_flip_is_rejected(fcnt in 1u32..100_000, payload in proptest::collection::vec(any::<u8>(), 0..60), bit in 0usize..(8 * 73)) {
            let mut phy = uplink(fcnt, &payload);
            let bit = bit % (8 * phy.len());
            phy[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(FrameFilter::gateway().check(&phy, session(Some(fcnt - 1))).is_err());
        }
    }
}
