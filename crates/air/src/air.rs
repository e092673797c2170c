//! The simulated village air: who hears which frame, decided by pure functions, driven by tokio time.

use crate::capture::{CaptureWriter, ReceiverRecord, TxRecord};
use crate::pathloss::{shadowing_db, PathLossModel};
use gramgrid_radio::budget::{sensitivity_dbm, snr_db};
use gramgrid_radio::toa;
use gramgrid_radio::Modulation;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

pub use crate::reception::{decide, Arrival, ReceiverState, Verdict, CAPTURE_THRESHOLD_DB};

/// Where a radio stands and how good its antenna is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Name of the radio in captures and records (e.g. a meter serial, "gw").
    pub name: String,
    /// Position on the village map's x axis, in metres.
    pub x_m: f64,
    /// Position on the village map's y axis, in metres.
    pub y_m: f64,
    /// Antenna gain in dBi, added to the received power at both ends of each link.
    pub antenna_gain_dbi: f64,
}

impl NodeSpec {
    /// A radio at (`x_m`, `y_m`) metres with a 0 dBi antenna.
    pub fn new(name: impl Into<String>, x_m: f64, y_m: f64) -> Self {
        Self {
            name: name.into(),
            x_m,
            y_m,
            antenna_gain_dbi: 0.0,
        }
    }

    /// Straight-line distance to another radio, in metres.
    pub fn distance_m(&self, other: &NodeSpec) -> f64 {
        (self.x_m - other.x_m).hypot(self.y_m - other.y_m)
    }
}

/// Total loss of the link between two radios in dB: median model plus the link's fixed shadowing.
/// Antenna gains are not included.
pub fn link_loss_db(model: &PathLossModel, seed: u64, a: &NodeSpec, b: &NodeSpec) -> f64 {
    model.median_db(a.distance_m(b))
        + shadowing_db(seed, (a.x_m, a.y_m), (b.x_m, b.y_m), model.sigma_db())
}

/// A frame handed to a receiving radio.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reception {
    /// How the frame was sent.
    pub modulation: Modulation,
    /// The bytes as received (garbled when the verdict is `CrcError`).
    #[serde(with = "crate::capture::hex_bytes")]
    pub payload: Vec<u8>,
    /// Received power at this radio, in dBm (path loss, shadowing and antenna gains applied).
    pub rssi_dbm: f64,
    /// SNR over thermal noise in the channel, in dB (interference not included).
    pub snr_db: f64,
    /// `Heard`, `CrcError` or `HeaderError`: the ones a chip reports.
    pub verdict: Verdict,
}

/// A frame a radio puts on the air.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transmission {
    /// Channel, spreading factor and the rest of the LoRa settings.
    pub modulation: Modulation,
    /// Transmit power in dBm (antenna gains are added by the air).
    pub power_dbm: f64,
    /// The PHYPayload bytes.
    #[serde(with = "crate::capture::hex_bytes")]
    pub payload: Vec<u8>,
}

/// The chip side of an antenna: receives what the air decided it heard.
pub trait ReceptionSink: Send + Sync {
    /// Hands over a frame at its end on the air (only `Heard`, `CrcError` and `HeaderError`).
    fn deliver(&self, reception: Reception);
}

/// The air side of an antenna, as a chip uses it.
pub trait AirPort: Send + Sync {
    /// Puts a frame on the air, starting now.
    fn transmit(&self, tx: Transmission);
    /// `Some` while in receive mode, `None` when the receiver is off.
    fn listen(&self, tuned: Option<Modulation>);
    /// Channel activity detection: is a frame on this channel and SF strong enough here, now?
    fn channel_active(&self, tuned: &Modulation) -> bool;
}

/// Counters over everything the air has carried.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AirStats {
    /// Frames that finished on the air.
    pub transmissions: u64,
    /// How many times each verdict was given, over all receivers of all frames.
    pub verdicts: BTreeMap<Verdict, u64>,
}

struct Node {
    spec: NodeSpec,
    sink: Arc<dyn ReceptionSink>,
    listening: Option<(Modulation, Duration)>,
    /// Pure transmitters (a meter that never listens) are not receivers and are left out of records.
    ever_listened: bool,
    /// The node's own transmissions still relevant for half-duplex checks.
    own: Vec<(Duration, Duration)>,
}

struct OnAir {
    id: u64,
    from: usize,
    tx: Transmission,
    start: Duration,
    end: Duration,
    done: bool,
}

struct AirState {
    epoch: Instant,
    seed: u64,
    model: PathLossModel,
    nodes: Vec<Node>,
    frames: Vec<OnAir>,
    next_id: u64,
    loss_cache: HashMap<(usize, usize), f64>,
    stats: AirStats,
    records: Vec<TxRecord>,
    keep_records: bool,
    capture: Option<CaptureWriter>,
}

/// Settings of a simulated air.
#[derive(Clone, Debug, Default)]
pub struct AirConfig {
    /// Seed of the shadowing: the same seed and positions give the same links in every run.
    pub seed: u64,
    /// Median path-loss model and shadowing spread.
    pub path_loss: PathLossModel,
    /// Keep a `TxRecord` of every frame in memory (`Air::take_records`).
    pub keep_records: bool,
}

/// An in-process air shared by any number of radios. Clone it freely: clones are the same air.
#[derive(Clone)]
pub struct Air {
    state: Arc<Mutex<AirState>>,
}

impl Air {
    /// An empty air; its time starts now (tokio's clock).
    pub fn new(config: AirConfig) -> Self {
        Self {
            state: Arc::new(Mutex::new(AirState {
                epoch: Instant::now(),
                seed: config.seed,
                model: config.path_loss,
                nodes: Vec::new(),
                frames: Vec::new(),
                next_id: 0,
                loss_cache: HashMap::new(),
                stats: AirStats::default(),
                records: Vec::new(),
                keep_records: config.keep_records,
                capture: None,
            })),
        }
    }

    /// Writes every frame as a JSON line to `writer` from now on.
    pub fn set_capture(&self, writer: CaptureWriter) {
        self.lock().capture = Some(writer);
    }

    /// Puts a radio on the air; the returned port is its antenna.
    pub fn attach(&self, spec: NodeSpec, sink: Arc<dyn ReceptionSink>) -> NodePort {
        let mut st = self.lock();
        st.nodes.push(Node {
            spec,
            sink,
            listening: None,
            ever_listened: false,
            own: Vec::new(),
        });
        NodePort {
            air: self.clone(),
            node: st.nodes.len() - 1,
        }
    }

    /// A snapshot of the counters so far.
    pub fn stats(&self) -> AirStats {
        self.lock().stats.clone()
    }

    /// Drains the in-memory frame records (kept when `AirConfig::keep_records`).
    pub fn take_records(&self) -> Vec<TxRecord> {
        std::mem::take(&mut self.lock().records)
    }

    /// Flushes the capture file, if any.
    pub fn flush_capture(&self) -> std::io::Result<()> {
        match self.lock().capture.as_mut() {
            Some(c) => c.flush(),
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, AirState> {
        // A panic while holding the lock leaves counters at worst half-updated; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn transmit(&self, from: usize, tx: Transmission) {
        let now = Instant::now();
        let end_at = now + toa::time_on_air(&tx.modulation, tx.payload.len());
        let id = {
            let mut st = self.lock();
            let start = now - st.epoch;
            let end = end_at - st.epoch;
            let id = st.next_id;
            st.next_id += 1;
            if let Some(n) = st.nodes.get_mut(from) {
                n.listening = None;
                n.own.push((start, end));
            }
            st.frames.push(OnAir {
                id,
                from,
                tx,
                start,
                end,
                done: false,
            });
            id
        };
        let air = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(end_at).await;
            air.finish(id);
        });
    }

    fn listen(&self, node: usize, tuned: Option<Modulation>) {
        let mut st = self.lock();
        let now = Instant::now() - st.epoch;
        if let Some(n) = st.nodes.get_mut(node) {
            n.ever_listened |= tuned.is_some();
            // Re-arming on the same settings keeps a reception in progress.
            n.listening = match (n.listening, tuned) {
                (Some((old, since)), Some(new)) if old == new => Some((old, since)),
                (_, t) => t.map(|m| (m, now)),
            };
        }
    }

    fn channel_active(&self, node: usize, tuned: &Modulation) -> bool {
        let mut st = self.lock();
        let now = Instant::now() - st.epoch;
        let active: Vec<(usize, f64)> = st
            .frames
            .iter()
            .filter(|f| {
                f.from != node
                    && f.start <= now
                    && now < f.end
                    && f.tx.modulation.same_channel(tuned)
                    && f.tx.modulation.spreading_factor == tuned.spreading_factor
            })
            .map(|f| (f.from, f.tx.power_dbm))
            .collect();
        active.into_iter().any(|(from, power)| {
            st.rx_power(from, node, power)
                >= sensitivity_dbm(tuned.spreading_factor, tuned.bandwidth_hz)
        })
    }

    /// The end of frame `id`: decide every receiver, deliver, record.
    fn finish(&self, id: u64) {
        let mut deliveries = Vec::new();
        {
            let mut st = self.lock();
            let Some(idx) = st.frames.iter().position(|f| f.id == id) else {
                return;
            };
            st.frames[idx].done = true;
            let (from, start, end, modulation, power) = {
                let f = &st.frames[idx];
                (f.from, f.start, f.end, f.tx.modulation, f.tx.power_dbm)
            };
            let overlapping: Vec<(usize, Modulation, Duration, Duration, f64)> = st
                .frames
                .iter()
                .filter(|o| o.id != id && o.start < end && start < o.end)
                .map(|o| (o.from, o.tx.modulation, o.start, o.end, o.tx.power_dbm))
                .collect();
            let mut receivers = Vec::new();
            let recording = st.capture.is_some() || st.keep_records;
            for r in 0..st.nodes.len() {
                if r == from {
                    continue;
                }
                let transmitted_during = st.nodes[r].own.iter().any(|&(s, e)| s < end && start < e);
                let listening = st.nodes[r].listening;
                if listening.is_none() && !(transmitted_during && st.nodes[r].ever_listened) {
                    // Idle radios are not listed: a day of a thousand sleeping meters would drown
                    // the capture in "not listening".
                    continue;
                }
                if let (Some((tuned, _)), false, false) = (listening, transmitted_during, recording)
                {
                    // Fast path for big fleets (thousands of Class C meters hear every downlink
                    // and uplink): a receiver tuned elsewhere gets the same verdict `decide` would
                    // give, without computing powers. Only taken when nothing is recorded.
                    let early = if !tuned.same_channel(&modulation) {
                        Some(Verdict::WrongChannel)
                    } else if tuned.spreading_factor != modulation.spreading_factor {
                        Some(Verdict::WrongSpreadingFactor)
                    } else if tuned.iq_inverted != modulation.iq_inverted {
                        Some(Verdict::WrongIq)
                    } else {
                        None
                    };
                    if let Some(verdict) = early {
                        *st.stats.verdicts.entry(verdict).or_default() += 1;
                        continue;
                    }
                }
                let arrival = Arrival {
                    modulation,
                    start,
                    end,
                    power_dbm: st.rx_power(from, r, power),
                };
                let others: Vec<Arrival> = overlapping
                    .iter()
                    .filter(|o| o.0 != r)
                    .map(|&(of, om, os, oe, op)| Arrival {
                        modulation: om,
                        start: os,
                        end: oe,
                        power_dbm: st.rx_power(of, r, op),
                    })
                    .collect();
                let state = ReceiverState {
                    listening,
                    transmitted_during,
                };
                let verdict = decide(&arrival, &state, &others);
                *st.stats.verdicts.entry(verdict).or_default() += 1;
                let snr = snr_db(arrival.power_dbm, modulation.bandwidth_hz);
                if recording {
                    receivers.push(ReceiverRecord {
                        node: st.nodes[r].spec.name.clone(),
                        verdict,
                        rssi_dbm: arrival.power_dbm,
                        snr_db: snr,
                    });
                }
                if matches!(
                    verdict,
                    Verdict::Heard | Verdict::CrcError | Verdict::HeaderError
                ) {
                    let mut payload = st.frames[idx].tx.payload.clone();
                    if verdict == Verdict::CrcError {
                        // What an interferer does to the bits: enough to fail any check.
                        for b in payload.iter_mut().skip(1).step_by(3) {
                            *b ^= 0x5a;
                        }
                    }
                    deliveries.push((
                        st.nodes[r].sink.clone(),
                        Reception {
                            modulation,
                            payload,
                            rssi_dbm: arrival.power_dbm,
                            snr_db: snr,
                            verdict,
                        },
                    ));
                }
            }
            st.stats.transmissions += 1;
            let record = TxRecord {
                t_s: start.as_secs_f64(),
                from: st.nodes[from].spec.name.clone(),
                frequency_hz: modulation.frequency_hz,
                spreading_factor: modulation.spreading_factor,
                bandwidth_hz: modulation.bandwidth_hz,
                power_dbm: power,
                airtime_ms: (end - start).as_secs_f64() * 1000.0,
                phy_payload: st.frames[idx].tx.payload.clone(),
                receivers,
            };
            if let Some(c) = st.capture.as_mut() {
                if let Err(e) = c.write(&record) {
                    tracing::warn!(error = %e, "air capture write failed; capture stopped");
                    st.capture = None;
                }
            }
            if st.keep_records {
                st.records.push(record);
            }
            st.prune();
        }
        for (sink, reception) in deliveries {
            sink.deliver(reception);
        }
    }
}

impl AirState {
    /// Received power at `to` of a frame `from` sends at `power_dbm`: median loss plus the link's
    /// fixed shadowing, cached per link.
    fn rx_power(&mut self, from: usize, to: usize, power_dbm: f64) -> f64 {
        let key = (from.min(to), from.max(to));
        let loss = match self.loss_cache.get(&key) {
            Some(&l) => l,
            None => {
                let l = link_loss_db(
                    &self.model,
                    self.seed,
                    &self.nodes[from].spec,
                    &self.nodes[to].spec,
                );
                self.loss_cache.insert(key, l);
                l
            }
        };
        power_dbm + self.nodes[from].spec.antenna_gain_dbi + self.nodes[to].spec.antenna_gain_dbi
            - loss
    }

    /// Forgets frames that can no longer overlap anything still on the air.
    fn prune(&mut self) {
        let horizon = self
            .frames
            .iter()
            .filter(|f| !f.done)
            .map(|f| f.start)
            .min()
            .unwrap_or(Duration::MAX);
        self.frames.retain(|f| !f.done || f.end > horizon);
        for n in &mut self.nodes {
            n.own.retain(|&(_, e)| e > horizon);
        }
    }
}

/// One radio's antenna on an in-process `Air`.
pub struct NodePort {
    air: Air,
    node: usize,
}

impl AirPort for NodePort {
    fn transmit(&self, tx: Transmission) {
        self.air.transmit(self.node, tx);
    }
    fn listen(&self, tuned: Option<Modulation>) {
        self.air.listen(self.node, tuned);
    }
    fn channel_active(&self, tuned: &Modulation) -> bool {
        self.air.channel_active(self.node, tuned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn frame(sf: u8, start_ms: u64, power: f64) -> Arrival {
        let modulation = Modulation {
            spreading_factor: sf,
            ..Modulation::default()
        };
        Arrival {
            modulation,
            start: ms(start_ms),
            end: ms(start_ms) + toa::time_on_air(&modulation, 24),
            power_dbm: power,
        }
    }

    fn listening(sf: u8) -> ReceiverState {
        ReceiverState {
            listening: Some((
                Modulation {
                    spreading_factor: sf,
                    ..Modulation::default()
                },
                Duration::ZERO,
            )),
            transmitted_during: false,
        }
    }

    #[test]
    fn clean_frame_is_heard() {
        assert_eq!(
            decide(&frame(7, 100, -100.0), &listening(7), &[]),
            Verdict::Heard
        );
    }

    #[test]
    fn sensitivity_edge_per_sf() {
        for (sf, s) in [(7, -124.0), (9, -130.0), (12, -137.0)] {
            assert_eq!(
                decide(&frame(sf, 100, s), &listening(sf), &[]),
                Verdict::Heard
            );
            assert_eq!(
                decide(&frame(sf, 100, s - 0.1), &listening(sf), &[]),
                Verdict::BelowSensitivity
            );
        }
    }

    #[test]
    fn equal_power_overlap_from_the_preamble_is_a_collision() {
        let a = frame(7, 100, -100.0);
        let b = frame(7, 101, -101.0);
        assert_eq!(decide(&a, &listening(7), &[b]), Verdict::Collision);
        assert_eq!(decide(&b, &listening(7), &[a]), Verdict::Collision);
    }

    #[test]
    fn six_db_stronger_frame_captures_the_receiver() {
        let strong = frame(7, 100, -94.0);
        let weak = frame(7, 100, -100.0);
        assert_eq!(decide(&strong, &listening(7), &[weak]), Verdict::Heard);
        assert_ne!(decide(&weak, &listening(7), &[strong]), Verdict::Heard);
        let nearly = frame(7, 100, -94.1);
        assert_eq!(decide(&nearly, &listening(7), &[weak]), Verdict::Collision);
    }

    #[test]
    fn late_interferer_spoils_header_or_payload() {
        let a = frame(7, 0, -100.0);
        // preamble ends at 12.25 symbols = 12.5 ms; header at 20.25 symbols = 20.7 ms
        assert_eq!(
            decide(&a, &listening(7), &[frame(7, 15, -100.0)]),
            Verdict::HeaderError
        );
        assert_eq!(
            decide(&a, &listening(7), &[frame(7, 40, -100.0)]),
            Verdict::CrcError
        );
    }

    #[test]
    fn other_spreading_factors_do_not_interfere() {
        let a = frame(7, 100, -100.0);
        assert_eq!(
            decide(&a, &listening(7), &[frame(8, 100, -80.0)]),
            Verdict::Heard
        );
        assert_eq!(
            decide(&a, &listening(8), &[]),
            Verdict::WrongSpreadingFactor
        );
    }

    #[test]
    fn transmitting_or_late_receiver_hears_nothing() {
        let a = frame(7, 100, -100.0);
        let mut busy = listening(7);
        busy.transmitted_during = true;
        assert_eq!(decide(&a, &busy, &[]), Verdict::HalfDuplex);
        let mut late = listening(7);
        late.listening = late.listening.map(|(m, _)| (m, ms(101)));
        assert_eq!(decide(&a, &late, &[]), Verdict::NotListening);
    }

    proptest::proptest! {
        /// Two overlapping same-SF frames: at most one survives, and the survivor is the one at
        /// least 6 dB stronger; frames on different SFs or apart in time never disturb each other.
        #[test]
        fn capture_is_exclusive(
            pa in -130.0f64..-60.0, pb in -130.0f64..-60.0,
            sa in 0u64..200, sb in 0u64..200,
            sf_a in 7u8..=12, sf_b in 7u8..=12,
        ) {
            let (a, b) = (frame(sf_a, sa, pa), frame(sf_b, sb, pb));
            let va = decide(&a, &listening(sf_a), &[b]);
            let vb = decide(&b, &listening(sf_b), &[a]);
            let sensitive = |f: &Arrival| f.power_dbm >= sensitivity_dbm(f.modulation.spreading_factor, 125_000);
            let overlap = a.start < b.end && b.start < a.end;
            if sf_a != sf_b || !overlap {
                proptest::prop_assert_eq!(va == Verdict::Heard, sensitive(&a));
                proptest::prop_assert_eq!(vb == Verdict::Heard, sensitive(&b));
            } else {
                proptest::prop_assert!(!(va == Verdict::Heard && vb == Verdict::Heard));
                if va == Verdict::Heard {
                    proptest::prop_assert!(pa - pb >= CAPTURE_THRESHOLD_DB);
                }
                if sensitive(&a) && pa - pb >= CAPTURE_THRESHOLD_DB {
                    proptest::prop_assert_eq!(va, Verdict::Heard);
                }
            }
        }
    }

    #[test]
    fn inverted_iq_separates_uplink_from_downlink() {
        let mut down = frame(7, 100, -90.0);
        down.modulation.iq_inverted = true;
        assert_eq!(decide(&down, &listening(7), &[]), Verdict::WrongIq);
    }
}
