//! The reception rule (pure): what happens to one frame at one receiver, given what else was on
//! the air (LoRaSim's model: sensitivity per SF, collisions, capture at 6 dB, half duplex).
use gramgrid_radio::budget::sensitivity_dbm;
use gramgrid_radio::toa;
use gramgrid_radio::Modulation;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A frame one dB-stronger-by-this-much than every overlapping frame survives (LoRaSim's capture).
pub const CAPTURE_THRESHOLD_DB: f64 = 6.0;

/// What happened to one frame at one receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Received intact.
    Heard,
    /// Locked on and got the header, then an overlapping frame spoilt the payload.
    CrcError,
    /// Locked on the preamble, then an overlapping frame spoilt the header.
    HeaderError,
    /// Overlapped from the preamble on by a frame less than 6 dB weaker: nothing decoded.
    Collision,
    /// Weaker than the receiver's sensitivity at this spreading factor and bandwidth.
    BelowSensitivity,
    /// Was transmitting during the frame.
    HalfDuplex,
    /// The receiver was off, or started listening after the frame began.
    NotListening,
    /// Tuned to another frequency or bandwidth.
    WrongChannel,
    /// Tuned to another spreading factor.
    WrongSpreadingFactor,
    /// Listening with the other I/Q polarity (an uplink at a meter, a downlink at the gateway).
    WrongIq,
}

/// A frame as seen at one receiver: on-air interval (from the air's epoch) and received power.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Arrival {
    /// How the frame was sent.
    pub modulation: Modulation,
    /// When its preamble began, since the air's epoch.
    pub start: Duration,
    /// When its last symbol ended, since the air's epoch.
    pub end: Duration,
    /// Received power at this receiver, in dBm.
    pub power_dbm: f64,
}

/// A receiver's state during a frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReceiverState {
    /// What it listens for, and since when; `None` when idle, asleep or transmitting.
    pub listening: Option<(Modulation, Duration)>,
    /// Whether any of its own transmissions overlapped the frame.
    pub transmitted_during: bool,
}

/// The pure air decision for frame `frame` at one receiver, given every other frame that overlaps it
/// there (any channel: only same-channel, same-SF ones interfere).
pub fn decide(frame: &Arrival, receiver: &ReceiverState, others: &[Arrival]) -> Verdict {
    if receiver.transmitted_during {
        return Verdict::HalfDuplex;
    }
    let Some((tuned, since)) = receiver.listening else {
        return Verdict::NotListening;
    };
    if since > frame.start {
        return Verdict::NotListening;
    }
    let m = &frame.modulation;
    if !tuned.same_channel(m) {
        return Verdict::WrongChannel;
    }
    if tuned.spreading_factor != m.spreading_factor {
        return Verdict::WrongSpreadingFactor;
    }
    if tuned.iq_inverted != m.iq_inverted {
        return Verdict::WrongIq;
    }
    if frame.power_dbm < sensitivity_dbm(m.spreading_factor, m.bandwidth_hz) {
        return Verdict::BelowSensitivity;
    }
    let first_hit = others
        .iter()
        .filter(|o| {
            o.modulation.same_channel(m)
                && o.modulation.spreading_factor == m.spreading_factor
                && o.start < frame.end
                && frame.start < o.end
                && frame.power_dbm - o.power_dbm < CAPTURE_THRESHOLD_DB
        })
        .map(|o| o.start.max(frame.start))
        .min();
    match first_hit {
        None => Verdict::Heard,
        Some(hit) if hit >= frame.start + toa::header_end(m) => Verdict::CrcError,
        Some(hit) if hit >= frame.start + Duration::from_secs_f64(toa::preamble_us(m) / 1e6) => {
            Verdict::HeaderError
        }
        Some(_) => Verdict::Collision,
    }
}
