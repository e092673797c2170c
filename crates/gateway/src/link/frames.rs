//! Gateway-side frame handling: opens uplinks and seals downlinks with each meter's session, keeps
//! the frame counters, counts rejections, and turns a meter report into readings (pure apart from
//! the counters it holds; the caller persists them).

use crate::store::{LinkSession, MeterReading};
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::policy;
use gramgrid_proto::dlms::wrapper::DLMS_FPORT;
use gramgrid_proto::frame::{encode_data_frame, DevAddr, Direction, FrameSpec, SessionKeys};
use gramgrid_proto::payload::{self, DecodeError, Downlink, MeterReport, Uplink, INTERVAL_SECS};
use gramgrid_proto::security::{FrameFilter, RejectCounters, RejectReason, Rejection, Session};
use std::collections::HashMap;

#[derive(Debug, Clone)]
struct MeterSession {
    meter: i64,
    keys: SessionKeys,
    fcnt_up: Option<u32>,
    fcnt_down: Option<u32>,
}

/// An authentic uplink. Its counter must be committed before it is acted upon, even when its
/// payload does not decode (count that as `bad_payload`), so it cannot be replayed either.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedUplink {
    /// The meter whose session authenticated the frame (its id in the gateway store).
    pub meter: i64,
    /// The frame's uplink counter, to commit before anything else.
    pub fcnt: u32,
    /// What the frame carries, by its FPort.
    pub payload: AppPayload,
}

/// The application payload of an authentic uplink.
#[derive(Debug, Clone, PartialEq)]
pub enum AppPayload {
    /// FPort 1 (or any port but DLMS's): a payload v1 meter report, or why it is not one.
    V1(Result<MeterReport, DecodeError>),
    /// FPort 2 ([`DLMS_FPORT`]): a wrapped DLMS APDU for the meter's DLMS client to open.
    Dlms(Vec<u8>),
}

/// Why a downlink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The meter (store id) has no session keys loaded.
    #[error("meter {0} has no session keys; provision it (meter manifest or sync) first")]
    NoSession(i64),
    /// The message is longer than a downlink at its spreading factor may carry (IN865 regional
    /// parameters: 51 bytes at SF10 to SF12, 115 at SF9, 222 at SF7 and SF8).
    #[error("downlink to meter {meter} not sent: its {len}-byte payload exceeds the {max} bytes a frame at SF{sf} may carry")]
    TooLong {
        /// The addressed meter (store id).
        meter: i64,
        /// The FRMPayload's length.
        len: usize,
        /// The most the SF allows.
        max: usize,
        /// The spreading factor of the exchange.
        sf: u8,
    },
    /// The message or the frame could not be encoded.
    #[error("downlink to meter {meter} could not be encoded: {detail}")]
    Encode {
        /// The addressed meter (store id).
        meter: i64,
        /// The encoder's error.
        detail: String,
    },
}

/// What a downlink carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutMessage {
    /// A payload v1 message on FPort 1.
    V1(Downlink),
    /// A wrapped, ciphered DLMS request (from the meter's DLMS client) on FPort 2.
    Dlms(Vec<u8>),
}

/// All meter sessions the gateway knows, by DevAddr and by meter id.
#[derive(Debug, Default)]
pub struct Sessions {
    by_addr: HashMap<DevAddr, MeterSession>,
    addr_of: HashMap<i64, DevAddr>,
    rejects: RejectCounters,
}

impl Sessions {
    /// Makes the sessions those stored: adds new meters, takes new keys (with the stored counters,
    /// which the store resets on re-keying), and forgets meters no longer stored (removed or moved
    /// away). Counters already in memory for unchanged keys are kept if newer. Returns the meters
    /// forgotten.
    pub fn load(&mut self, stored: &[LinkSession]) -> Vec<i64> {
        let keep: std::collections::HashSet<i64> = stored.iter().map(|s| s.meter).collect();
        let gone: Vec<i64> = self
            .addr_of
            .keys()
            .copied()
            .filter(|m| !keep.contains(m))
            .collect();
        for meter in &gone {
            if let Some(addr) = self.addr_of.remove(meter) {
                self.by_addr.remove(&addr);
            }
        }
        for s in stored {
            let (up, down) = match self.by_addr.get(&s.keys.dev_addr) {
                Some(m) if m.keys == s.keys => {
                    (m.fcnt_up.max(s.fcnt_up), m.fcnt_down.max(s.fcnt_down))
                }
                _ => (s.fcnt_up, s.fcnt_down),
            };
            if let Some(old) = self.addr_of.insert(s.meter, s.keys.dev_addr) {
                if old != s.keys.dev_addr {
                    self.by_addr.remove(&old);
                }
            }
            self.by_addr.insert(
                s.keys.dev_addr,
                MeterSession {
                    meter: s.meter,
                    keys: s.keys.clone(),
                    fcnt_up: up,
                    fcnt_down: down,
                },
            );
        }
        gone
    }

    /// The meters that have session keys.
    pub fn meters(&self) -> impl Iterator<Item = i64> + '_ {
        self.addr_of.keys().copied()
    }

    /// Whether `meter` has session keys loaded.
    pub fn contains(&self, meter: i64) -> bool {
        self.addr_of.contains_key(&meter)
    }

    /// Checks a raw uplink. Rejections are counted here; the caller logs them.
    pub fn open_uplink(&mut self, phy: &[u8]) -> Result<OpenedUplink, Rejection> {
        let by_addr = &self.by_addr;
        let checked = FrameFilter::gateway().check(phy, |addr| {
            by_addr.get(&addr).map(|m| Session {
                keys: m.keys.clone(),
                last_fcnt: m.fcnt_up,
            })
        });
        let opened = checked.and_then(|frame| {
            let meter = self
                .by_addr
                .get(&frame.dev_addr)
                .map(|m| m.meter)
                .ok_or(Rejection::UnknownDevAddr(frame.dev_addr))?;
            let payload = if frame.fport == Some(DLMS_FPORT) {
                AppPayload::Dlms(frame.payload)
            } else {
                AppPayload::V1(
                    Uplink::decode_frame(frame.fport, &frame.payload)
                        .map(|Uplink::MeterReport(r)| r),
                )
            };
            Ok(OpenedUplink {
                meter,
                fcnt: frame.fcnt,
                payload,
            })
        });
        if let Err(rejection) = &opened {
            self.rejects.record(rejection.reason());
        }
        opened
    }

    /// Records an uplink counter after it was committed.
    pub fn accepted_up(&mut self, meter: i64, fcnt: u32) {
        if let Some(s) = self.session_mut(meter) {
            s.fcnt_up = Some(fcnt);
        }
    }

    /// Builds the next downlink for `meter` at spreading factor `sf`; returns its counter (commit
    /// it, then `sent_down`).
    pub fn seal_downlink(
        &self,
        meter: i64,
        sf: u8,
        message: &OutMessage,
    ) -> Result<(u32, Vec<u8>), SealError> {
        let session = self
            .addr_of
            .get(&meter)
            .and_then(|a| self.by_addr.get(a))
            .ok_or(SealError::NoSession(meter))?;
        let fcnt = session.fcnt_down.map_or(0, |f| f.wrapping_add(1));
        let encode = |detail: String| SealError::Encode { meter, detail };
        let (fport, body) = match message {
            OutMessage::V1(message) => (
                payload::FPORT,
                message.encode().map_err(|e| encode(e.to_string()))?,
            ),
            OutMessage::Dlms(request) => (DLMS_FPORT, request.clone()),
        };
        let max = gramgrid_proto::frame::in865_max_frm_payload(sf)
            .unwrap_or(gramgrid_proto::frame::MIN_IN865_FRM_PAYLOAD);
        if body.len() > max {
            return Err(SealError::TooLong {
                meter,
                len: body.len(),
                max,
                sf,
            });
        }
        let spec = FrameSpec {
            direction: Direction::Downlink,
            confirmed: false,
            ack: false,
            fcnt,
            fport,
            payload: &body,
        };
        let phy = encode_data_frame(&session.keys, &spec).map_err(|e| encode(e.to_string()))?;
        Ok((fcnt, phy))
    }

    /// Records a downlink counter after it was committed.
    pub fn sent_down(&mut self, meter: i64, fcnt: u32) {
        if let Some(s) = self.session_mut(meter) {
            s.fcnt_down = Some(fcnt);
        }
    }

    /// Rejections so far, per reason.
    pub fn rejects(&self) -> &RejectCounters {
        &self.rejects
    }

    /// Counts a rejection decided after the filter (an authentic frame whose payload is not v1).
    pub fn count_reject(&mut self, reason: RejectReason) {
        self.rejects.record(reason);
    }

    fn session_mut(&mut self, meter: i64) -> Option<&mut MeterSession> {
        let addr = self.addr_of.get(&meter)?;
        self.by_addr.get_mut(addr)
    }
}

/// The readings a report carries: the register at the end of each interval.
pub fn readings_of(meter: i64, report: &MeterReport) -> Vec<MeterReading> {
    interval_readings(meter, &report.intervals)
}

/// The readings of a meter's intervals (a v1 report's, a DLMS profile's rows): the registers at
/// the end of each.
pub fn interval_readings(meter: i64, intervals: &[payload::IntervalReading]) -> Vec<MeterReading> {
    intervals
        .iter()
        .map(|i| MeterReading {
            meter,
            at: interval_end(i.interval_start),
            register_wh: i64::try_from(i.import_wh).unwrap_or(i64::MAX),
            export_wh: i64::try_from(i.export_wh).unwrap_or(i64::MAX),
        })
        .collect()
}

/// The start of the interval after the newest one in the report, if it has any.
pub fn next_since(report: &MeterReport) -> Option<DateTime<Utc>> {
    report
        .intervals
        .last()
        .map(|i| interval_end(i.interval_start))
}

/// The end of the interval starting at `start`.
pub fn interval_end(start: DateTime<Utc>) -> DateTime<Utc> {
    start + Duration::seconds(i64::from(INTERVAL_SECS))
}

/// The relay state as the policy sees it: "ready for reconnection" is still off.
pub fn relay_state(state: payload::RelayState) -> policy::RelayState {
    match state {
        payload::RelayState::Connected => policy::RelayState::Connected,
        payload::RelayState::Disconnected | payload::RelayState::ReadyForReconnection => {
            policy::RelayState::Disconnected
        }
    }
}

/// The relay state a command leaves the meter in.
pub fn state_after(action: policy::RelayAction) -> policy::RelayState {
    match action {
        policy::RelayAction::Connect => policy::RelayState::Connected,
        policy::RelayAction::Disconnect => policy::RelayState::Disconnected,
    }
}

/// The policy's action as it goes on air.
pub fn relay_action(action: policy::RelayAction) -> payload::RelayAction {
    match action {
        policy::RelayAction::Connect => payload::RelayAction::Connect,
        policy::RelayAction::Disconnect => payload::RelayAction::Disconnect,
    }
}
