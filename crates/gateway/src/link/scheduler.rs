//! The scheduled-mode plan (pure): which meter the gateway talks to next, at which spreading factor,
//! and from which interval on it still lacks readings.
//!
//! The gateway owns the channel and does one exchange at a time (downlink, then the meter's reply),
//! so the plan is a sequence and transmissions never overlap. Each meter is due again one `period`
//! after it was heard; a silent meter is retried soon, then less and less often. When more meters
//! are due than the channel can serve, the most overdue goes first, which degrades into a plain
//! round-robin whose cycle is the sum of the exchange times.

use chrono::{DateTime, Duration, Utc};
use gramgrid_proto::payload::DisplayUpdate;
use gramgrid_radio::{toa, Modulation};
use std::collections::{BTreeMap, BTreeSet};

/// The spreading factor every meter listens on when it has no assignment (factory default, and the
/// fallback after it loses contact): the rendezvous.
pub const RENDEZVOUS_SF: u8 = 12;
/// Consecutive silences after which a meter below SF12 is sought at the rendezvous SF.
const SILENCES_BEFORE_RENDEZVOUS: u32 = 2;
/// Consecutive silences after which a meter is retried only every period (or a few).
const QUICK_RETRIES: u32 = 3;
/// Silent meters are never left longer than this many periods between attempts.
const MAX_BACKOFF_PERIODS: i32 = 8;
/// Consecutive unanswered turns after which a meter counts as silent (dark, or out of reach) for
/// the policy's outage rule.
pub const SILENCES_FOR_DARK: u32 = 2;

/// Timing of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleTiming {
    /// Each meter is polled this long after it was last heard.
    pub period: Duration,
    /// A meter that did not answer is tried again after this long (the first few times).
    pub retry_after: Duration,
}

/// What the gateway says to the meter in its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errand {
    /// "Send your intervals from `since` on."
    Poll {
        /// Start (UTC) of the oldest interval the gateway still lacks.
        since: DateTime<Utc>,
    },
    /// "From now on listen and answer at `sf`" (sent at the current SF).
    Assign {
        /// The new spreading factor (7 to 12).
        sf: u8,
    },
    /// "Set your clock to the gateway's" (the time is taken as the downlink goes out).
    SetClock,
    /// "Show this balance."
    Display(DisplayUpdate),
}

/// One exchange: talk to `meter` at `sf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// The meter's id in the gateway store.
    pub meter: i64,
    /// The spreading factor of the exchange: the one the meter listens on now.
    pub sf: u8,
    /// What the downlink asks.
    pub errand: Errand,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    sf: u8,
    due: DateTime<Utc>,
    /// Start of the oldest interval the gateway still wants.
    since: DateTime<Utc>,
    silences: u32,
    /// When the meter's current run of unanswered turns began.
    silent_since: Option<DateTime<Utc>>,
    /// An SF change to announce in the meter's next turn.
    assign: Option<u8>,
    /// The meter's clock is to be set in a coming turn.
    set_clock: bool,
    /// A balance to show on the meter's display in a coming turn (the latest replaces an older).
    display: Option<DisplayUpdate>,
}

/// The scheduler's state for every meter it serves.
#[derive(Debug, Clone)]
pub struct Scheduler {
    timing: ScheduleTiming,
    slots: BTreeMap<i64, Slot>,
    /// (due, meter): the order turns are handed out in.
    queue: BTreeSet<(DateTime<Utc>, i64)>,
}

impl Scheduler {
    /// An empty plan with the given timing.
    pub fn new(timing: ScheduleTiming) -> Self {
        Self {
            timing,
            slots: BTreeMap::new(),
            queue: BTreeSet::new(),
        }
    }

    /// Adds (or re-adds) a meter at `sf`, wanting intervals from `since`, due at `due`.
    pub fn add(&mut self, meter: i64, sf: u8, since: DateTime<Utc>, due: DateTime<Utc>) {
        self.remove(meter);
        self.slots.insert(
            meter,
            Slot {
                sf,
                due,
                since,
                silences: 0,
                silent_since: None,
                assign: None,
                set_clock: false,
                display: None,
            },
        );
        self.queue.insert((due, meter));
    }

    /// Stops planning turns for `meter` (nothing happens if it is not in the plan).
    pub fn remove(&mut self, meter: i64) {
        if let Some(slot) = self.slots.remove(&meter) {
            self.queue.remove(&(slot.due, meter));
        }
    }

    /// How often a meter that answers is polled.
    pub fn period(&self) -> std::time::Duration {
        self.timing.period.to_std().unwrap_or_default()
    }

    /// How many meters the plan serves.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the plan serves no meter.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The SF the gateway currently uses for `meter`.
    pub fn sf(&self, meter: i64) -> Option<u8> {
        self.slots.get(&meter).map(|s| s.sf)
    }

    /// When the next turn falls due (it may be in the past).
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.queue.first().map(|&(due, _)| due)
    }

    /// The most overdue meter's turn, if one is due at `now`.
    pub fn next(&self, now: DateTime<Utc>) -> Option<Turn> {
        let &(due, meter) = self.queue.first()?;
        if due > now {
            return None;
        }
        let slot = self.slots.get(&meter)?;
        // An SF change first (the meter may be unreachable otherwise), then what the meter must
        // be told, then readings.
        let errand = match (slot.assign, slot.set_clock, slot.display) {
            (Some(sf), _, _) => Errand::Assign { sf },
            (None, true, _) => Errand::SetClock,
            (None, false, Some(update)) => Errand::Display(update),
            (None, false, None) => Errand::Poll { since: slot.since },
        };
        Some(Turn {
            meter,
            sf: slot.sf,
            errand,
        })
    }

    /// The meter answered `turn`. `next_since` is the interval start after the newest one it sent
    /// (`None` if it sent none); `best_sf` the SF its reply's link margin allows.
    pub fn heard(
        &mut self,
        turn: &Turn,
        now: DateTime<Utc>,
        next_since: Option<DateTime<Utc>>,
        best_sf: Option<u8>,
    ) {
        let period = self.timing.period;
        self.update(turn.meter, |slot| {
            slot.silences = 0;
            slot.silent_since = None;
            if let Some(since) = next_since {
                slot.since = slot.since.max(since);
            }
            match turn.errand {
                Errand::Assign { sf } => {
                    // It answered at the old SF and switches now; poll it right away on the new one.
                    slot.sf = sf;
                    slot.assign = None;
                    slot.due = now;
                }
                // Told; its readings are asked for at once.
                Errand::SetClock => {
                    slot.set_clock = false;
                    slot.due = now;
                }
                Errand::Display(shown) => {
                    // A newer update that came in meanwhile is still to be shown.
                    if slot.display == Some(shown) {
                        slot.display = None;
                    }
                    slot.due = now;
                }
                Errand::Poll { .. } => {
                    slot.assign = best_sf.filter(|&sf| sf != slot.sf);
                    // Replies older than the last two intervals were cut to fit: more is waiting.
                    let more = next_since.is_some_and(|s| s < now - Duration::minutes(30));
                    let to_tell = slot.assign.is_some() || slot.set_clock || slot.display.is_some();
                    slot.due = if to_tell || more { now } else { now + period };
                }
            }
        });
    }

    /// The meter did not answer `turn`.
    pub fn silent(&mut self, turn: &Turn, now: DateTime<Utc>) {
        let timing = self.timing;
        self.update(turn.meter, |slot| {
            slot.silences += 1;
            slot.silent_since.get_or_insert(now);
            if slot.silences >= SILENCES_BEFORE_RENDEZVOUS && slot.sf < RENDEZVOUS_SF {
                // It may have missed an assignment, or lost contact and gone back to SF12.
                slot.sf = RENDEZVOUS_SF;
                slot.assign = None;
            }
            slot.due = if slot.silences <= QUICK_RETRIES {
                now + timing.retry_after
            } else {
                let periods = i32::try_from(slot.silences - QUICK_RETRIES)
                    .unwrap_or(MAX_BACKOFF_PERIODS)
                    .min(MAX_BACKOFF_PERIODS);
                now + timing.period * periods
            };
        });
    }

    /// Sets `meter`'s clock in its next turn, which falls due at once (nothing if it is not in
    /// the plan).
    pub fn set_clock(&mut self, meter: i64, now: DateTime<Utc>) {
        self.update(meter, |slot| {
            slot.set_clock = true;
            slot.due = slot.due.min(now);
        });
    }

    /// Shows `update` on `meter`'s display in its next turn, which falls due at once, instead of
    /// any update not yet shown (nothing if it is not in the plan).
    pub fn show(&mut self, meter: i64, update: DisplayUpdate, now: DateTime<Utc>) {
        self.update(meter, |slot| {
            slot.display = Some(update);
            slot.due = slot.due.min(now);
        });
    }

    /// Meters that missed their last [`SILENCES_FOR_DARK`] turns or more, and when each run of
    /// silence began.
    pub fn silent_meters(&self) -> std::collections::HashMap<i64, DateTime<Utc>> {
        self.slots
            .iter()
            .filter(|(_, s)| s.silences >= SILENCES_FOR_DARK)
            .filter_map(|(&m, s)| Some((m, s.silent_since?)))
            .collect()
    }

    /// Meters that did not answer their last few turns (still tried, less often).
    pub fn unresponsive(&self) -> impl Iterator<Item = i64> + '_ {
        self.slots
            .iter()
            .filter(|(_, s)| s.silences > QUICK_RETRIES)
            .map(|(&m, _)| m)
    }

    fn update(&mut self, meter: i64, f: impl FnOnce(&mut Slot)) {
        if let Some(slot) = self.slots.get_mut(&meter) {
            self.queue.remove(&(slot.due, meter));
            f(slot);
            self.queue.insert((slot.due, meter));
        }
    }
}

/// The SF a meter's reply allows: the fastest with the ADR margin over sensitivity. Below the noise
/// floor the packet RSSI (signal plus noise) stops falling, so weak signals are judged by SNR, as
/// LoRaWAN ADR does; strong ones by RSSI, because demodulators saturate SNR around +15 dB.
pub fn sf_for_reply(rssi_dbm: i16, snr_db: i16) -> Option<u8> {
    let noise_floor_dbm = -gramgrid_radio::budget::snr_db(0.0, 125_000);
    let signal = if snr_db < 10 {
        noise_floor_dbm + f64::from(snr_db)
    } else {
        f64::from(rssi_dbm)
    };
    gramgrid_radio::budget::choose_sf(signal)
}

/// Longest uplink the gateway waits for: a full-size reply at `sf` (IN865 limits).
pub fn max_reply_len(sf: u8) -> usize {
    gramgrid_proto::frame::in865_max_frm_payload(sf)
        .unwrap_or(gramgrid_proto::frame::MIN_IN865_FRM_PAYLOAD)
        + gramgrid_proto::frame::FRAME_OVERHEAD
}

/// Time on air of `len` bytes at `sf` on the default channel.
pub fn airtime(sf: u8, len: usize) -> std::time::Duration {
    toa::time_on_air(
        &Modulation {
            spreading_factor: sf,
            ..Modulation::default()
        },
        len,
    )
}

/// Upper bound of one exchange on the channel: downlink of `downlink_len` bytes, the meter's
/// turnaround, and the longest reply it may send.
pub fn exchange_bound(
    sf: u8,
    downlink_len: usize,
    turnaround: std::time::Duration,
) -> std::time::Duration {
    airtime(sf, downlink_len) + turnaround + airtime(sf, max_reply_len(sf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_824_000, 0).unwrap()
    }

    fn timing() -> ScheduleTiming {
        ScheduleTiming {
            period: Duration::minutes(30),
            retry_after: Duration::minutes(2),
        }
    }

    /// Runs the plan from `t0()` for `hours` with every meter answering; returns (meter, start, end)
    /// of each exchange as the gateway would put them on the air (one at a time).
    fn plan(sfs: &[u8], hours: i64) -> Vec<(i64, DateTime<Utc>, DateTime<Utc>)> {
        let mut s = Scheduler::new(timing());
        for (i, &sf) in sfs.iter().enumerate() {
            s.add(i as i64, sf, t0(), t0());
        }
        let turnaround = std::time::Duration::from_millis(30);
        let end = t0() + Duration::hours(hours);
        let mut now = t0();
        let mut out = Vec::new();
        while now < end {
            let Some(turn) = s.next(now) else {
                now = s.next_due().unwrap().max(now);
                continue;
            };
            let took = Duration::from_std(exchange_bound(turn.sf, 19, turnaround)).unwrap();
            out.push((turn.meter, now, now + took));
            now += took;
            let aligned = DateTime::from_timestamp(now.timestamp() / 900 * 900, 0).unwrap();
            s.heard(&turn, now, Some(aligned), None);
        }
        out
    }

    proptest! {
        #[test]
        fn feasible_plans_poll_every_meter_within_its_period_and_never_overlap(
            sfs in proptest::collection::vec(7u8..=12, 1..120),
        ) {
            let p = plan(&sfs, 3);
            for w in p.windows(2) {
                prop_assert!(w[0].2 <= w[1].1, "overlap: {:?}", w);
            }
            let load: f64 = sfs.iter().map(|&sf| exchange_bound(sf, 19, std::time::Duration::from_millis(30)).as_secs_f64()).sum();
            if load < timing().period.num_seconds() as f64 {
                // Period plus at most one full cycle of waiting behind others.
                let bound = timing().period + Duration::milliseconds((load * 1000.0).ceil() as i64 + 1);
                for m in 0..sfs.len() as i64 {
                    let starts: Vec<_> = p.iter().filter(|e| e.0 == m).map(|e| e.1).collect();
                    prop_assert!(!starts.is_empty());
                    prop_assert!(starts[0] - t0() <= Duration::milliseconds((load * 1000.0).ceil() as i64));
                    for w in starts.windows(2) {
                        prop_assert!(w[1] - w[0] <= bound, "meter {m}: {:?}", w[1] - w[0]);
                    }
                }
            }
        }
    }

    #[test]
    fn weak_replies_are_judged_by_snr() {
        // RSSI bottoms out near the noise floor (-117 dBm at BW125): SNR -14 dB means about -131 dBm.
        assert_eq!(sf_for_reply(-117, -14), Some(12));
        assert_eq!(sf_for_reply(-112, 5), Some(7));
        assert_eq!(sf_for_reply(-80, 15), Some(7));
        assert_eq!(sf_for_reply(-117, -18), None);
    }

    #[test]
    fn a_clock_to_set_and_a_display_go_before_the_poll_and_the_newest_display_wins() {
        use gramgrid_proto::payload::CreditStatus;
        let display = |balance_paise| DisplayUpdate {
            balance_paise,
            status: CreditStatus::Normal,
            days_left: None,
        };
        let mut s = Scheduler::new(timing());
        s.add(1, 7, t0(), t0() + Duration::minutes(10));
        let now = t0();
        s.show(1, display(100), now);
        s.show(1, display(200), now);
        s.set_clock(1, now);
        // Due at once, not in ten minutes.
        let turn = s.next(now).unwrap();
        assert_eq!(turn.errand, Errand::SetClock);
        s.heard(&turn, now, None, Some(7));
        let turn = s.next(now).unwrap();
        assert_eq!(turn.errand, Errand::Display(display(200)));
        // A newer balance arrives before the reply: it is still to be shown.
        s.show(1, display(300), now);
        s.heard(&turn, now, None, Some(7));
        assert_eq!(s.next(now).unwrap().errand, Errand::Display(display(300)));
        let turn = s.next(now).unwrap();
        s.heard(&turn, now, None, Some(7));
        assert_eq!(s.next(now).unwrap().errand, Errand::Poll { since: t0() });
    }

    #[test]
    fn lost_reply_keeps_since_and_retries_soon() {
        let mut s = Scheduler::new(timing());
        s.add(1, 7, t0(), t0());
        let turn = s.next(t0()).unwrap();
        s.silent(&turn, t0());
        assert_eq!(s.next_due(), Some(t0() + Duration::minutes(2)));
        let again = s.next(t0() + Duration::minutes(2)).unwrap();
        assert_eq!(again.errand, Errand::Poll { since: t0() });
    }

    #[test]
    fn silence_falls_back_to_the_rendezvous_sf_and_backs_off() {
        let mut s = Scheduler::new(timing());
        s.add(1, 8, t0(), t0());
        let mut now = t0();
        for _ in 0..5 {
            let turn = s.next(now).unwrap();
            s.silent(&turn, now);
            now = s.next_due().unwrap();
        }
        assert_eq!(s.sf(1), Some(RENDEZVOUS_SF));
        assert_eq!(s.unresponsive().collect::<Vec<_>>(), vec![1]);
        let turn = s.next(now).unwrap();
        s.silent(&turn, now);
        assert_eq!(
            s.next_due(),
            Some(now + Duration::minutes(90)),
            "third silence after the quick retries"
        );
    }

    #[test]
    fn better_margin_is_assigned_then_used() {
        let mut s = Scheduler::new(timing());
        s.add(1, 12, t0(), t0());
        let turn = s.next(t0()).unwrap();
        s.heard(&turn, t0(), Some(t0() + Duration::minutes(15)), Some(9));
        let assign = s.next(t0()).unwrap();
        assert_eq!(assign.errand, Errand::Assign { sf: 9 });
        assert_eq!(assign.sf, 12);
        s.heard(&assign, t0(), None, Some(9));
        let poll = s.next(t0()).unwrap();
        assert_eq!(poll.sf, 9);
        assert_eq!(
            poll.errand,
            Errand::Poll {
                since: t0() + Duration::minutes(15)
            }
        );
    }
}
