//! Virtual meter firmware (pure: the caller supplies time and moves frames): captures 15-minute
//! intervals, opens authenticated downlinks only, obeys relay commands, and builds its replies.

use super::dlms::{CosemObjects, DlmsServer, Nameplate, RelayRefusal};
use super::profile;
use super::supply::{Bypass, Supply};
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::tariff::Category;
use gramgrid_proto::dlms::cosem;
use gramgrid_proto::dlms::wrapper::DLMS_FPORT;
use gramgrid_proto::frame::{encode_data_frame, Direction, FrameSpec, SessionKeys};
use gramgrid_proto::payload::{
    AccessMode, AckOutcome, DisplayUpdate, Downlink, EventKind, IntervalReading, MeterEvent,
    MeterReport, RelayAck, RelayAction, RelayState, Uplink, INTERVAL_SECS,
};
use gramgrid_proto::security::{FrameFilter, Session};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;

/// Intervals a meter keeps (its load-profile buffer): a week.
const LOG_CAPACITY: usize = 7 * 96;
/// With no downlink for this long, a scheduled meter goes back to listening on the rendezvous SF.
const LOST_CONTACT: Duration = Duration::hours(2);

/// What survives a power cut (the meter's non-volatile memory).
#[derive(Debug, Clone, PartialEq)]
pub struct Nvm {
    /// Cumulative active import register (OBIS 1.0.1.8.0), in Wh.
    pub register_wh: u64,
    /// Cumulative active export register (OBIS 1.0.2.8.0), in Wh: 0 unless rooftop solar fed the
    /// grid through it.
    pub export_wh: u64,
    /// Next uplink counter to use.
    pub fcnt_up: u32,
    /// Last downlink counter accepted.
    pub fcnt_down: Option<u32>,
    /// The relay: connected (supply on) or disconnected (the register stands still).
    pub relay: RelayState,
    /// The spreading factor it listens and answers on.
    pub sf: u8,
    /// How it gets air time: polled by the gateway (scheduled) or on its own timer (ALOHA).
    pub mode: AccessMode,
    /// The load-profile log: one reading per 15-minute interval, oldest first, a week at most.
    pub log: VecDeque<IntervalReading>,
    /// The last relay command obeyed and its outcome (a re-sent command is only re-acknowledged).
    pub last_command: Option<RelayAck>,
}

/// How many reports carry each event: a report lost on the air does not lose it, and the gateway
/// stores each (meter, kind, time) once.
pub const EVENT_REPEATS: u8 = 3;
/// Events a DLMS meter's power events log keeps (IS 15959-2 asks for at least 100).
const POWER_LOG_LEN: usize = 100;

/// One meter.
#[derive(Debug, Clone)]
pub struct Firmware {
    keys: SessionKeys,
    category: Category,
    /// What survives a power cut: register, frame counters, relay, listening SF, mode, log.
    pub nvm: Nvm,
    /// RAM: lost at a power cut.
    acks: Vec<RelayAck>,
    /// Events not yet sent [`EVENT_REPEATS`] times, with the sends left.
    events: Vec<(MeterEvent, u8)>,
    /// The power failure related events log a DLMS meter keeps (meter time, IS 15959-2 code),
    /// oldest first, the newest [`POWER_LOG_LEN`].
    power_log: VecDeque<(DateTime<Utc>, u16)>,
    last_downlink: Option<DateTime<Utc>>,
    /// What the display shows, as the gateway last sent it.
    display: Option<DisplayUpdate>,
    /// Since when the meter has had no supply ([`Firmware::power_off`]): it neither captures nor
    /// hears nor sends.
    dark_since: Option<DateTime<Utc>>,
    /// Fault injection: this many replies are built and counted but never reach the air.
    replies_to_lose: u32,
    rng: ChaCha8Rng,
    /// Meter clock = true time + offset + drift.
    clock_offset: Duration,
    drift_ppm: f64,
    clock_origin: DateTime<Utc>,
    /// How it is connected to the village's supply (None: on its own, as in the benchmarks).
    supply: Option<Supply>,
    /// Peak power of a rooftop-solar array behind the meter, in W (0: none).
    solar_peak_w: u32,
    /// A DLMS/COSEM meter (docs/dlms.md §7): its server answers FPort 2, and its name plate.
    dlms: Option<(DlmsServer, Nameplate)>,
}

impl Firmware {
    /// A factory-fresh meter (listening on `sf`), whose clock is off by up to ±30 s and drifts up
    /// to ±50 ppm, both drawn from `seed`.
    pub fn new(
        keys: SessionKeys,
        category: Category,
        sf: u8,
        seed: u64,
        now: DateTime<Utc>,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let clock_offset = Duration::milliseconds(rng.random_range(-30_000..=30_000));
        let drift_ppm = rng.random_range(-50.0..=50.0);
        Self {
            keys,
            category,
            nvm: Nvm {
                register_wh: rng.random_range(1_000..2_000_000),
                export_wh: 0,
                fcnt_up: 0,
                fcnt_down: None,
                relay: RelayState::Connected,
                sf,
                mode: AccessMode::Scheduled,
                log: VecDeque::new(),
                last_command: None,
            },
            acks: Vec::new(),
            events: Vec::new(),
            power_log: VecDeque::new(),
            last_downlink: None,
            display: None,
            dark_since: None,
            replies_to_lose: 0,
            rng,
            clock_offset,
            drift_ppm,
            clock_origin: now,
            supply: None,
            solar_peak_w: 0,
            dlms: None,
        }
    }

    /// Makes it a DLMS/COSEM meter: `server` answers the gateway on FPort 2 (docs/dlms.md §7).
    /// Payload v1 downlinks on FPort 1 still work; a DLMS meter hears ScheduleAssign there, in
    /// place of the LoRaWAN MAC commands a real one would take its data rate from.
    pub fn with_dlms(mut self, server: DlmsServer, nameplate: Nameplate) -> Self {
        self.dlms = Some((server, nameplate));
        self
    }

    /// Puts a rooftop-solar array of `peak_w` behind the meter (a net meter): what it generates
    /// beyond the household's use in an interval is exported. The array has been there a while:
    /// the export register already holds `peak_w × 500` Wh (a 2 kWp roof's 1,000 kWh), which the
    /// gateway must not credit (its installation reading does not know it).
    pub fn install_rooftop_solar(&mut self, peak_w: u32) {
        self.solar_peak_w = peak_w;
        self.nvm.export_wh = u64::from(peak_w) * 500;
    }

    /// Connects the meter to a village's supply (a household's, or the transformer's).
    pub fn with_supply(mut self, supply: Supply) -> Self {
        self.supply = Some(supply);
        self
    }

    /// The household starts going around this meter as `bypass` says (a household's meter only).
    pub fn start_bypass(&mut self, bypass: Bypass) {
        if let Some(Supply::Household {
            bypass: current, ..
        }) = &mut self.supply
        {
            *current = Some(bypass);
        }
    }

    /// Runs in ALOHA mode (Class A): one uplink per reading, on its own timer.
    pub fn with_mode(mut self, mode: AccessMode) -> Self {
        self.nvm.mode = mode;
        self
    }

    /// The meter's own clock reading at true time `now`.
    pub fn meter_time(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let elapsed_ms = (now - self.clock_origin).num_milliseconds() as f64;
        now + self.clock_offset + Duration::milliseconds((elapsed_ms * self.drift_ppm / 1e6) as i64)
    }

    /// True time at which the meter's clock next shows an interval boundary after `now`.
    pub fn next_capture(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let meter_now = self.meter_time(now);
        let skew = meter_now - now;
        let step_ms = i64::from(INTERVAL_SECS) * 1000;
        let boundary = (meter_now.timestamp_millis().div_euclid(step_ms) + 1) * step_ms;
        let at = DateTime::from_timestamp_millis(boundary).unwrap_or(now) - skew;
        // Strictly later than `now`, even when called at the boundary itself.
        if at <= now {
            at + Duration::milliseconds(step_ms)
        } else {
            at
        }
    }

    /// Closes the interval that just ended on the meter's clock (call at `next_capture`).
    pub fn capture(&mut self, now: DateTime<Utc>) {
        if self.dark_since.is_some() {
            return;
        }
        let step = i64::from(INTERVAL_SECS);
        // Round to the nearest boundary: the caller wakes at it, give or take a millisecond.
        let end = (self.meter_time(now).timestamp() + step / 2).div_euclid(step) * step;
        if let Some(start) = DateTime::from_timestamp(end - step, 0) {
            self.record(start, self.nvm.relay == RelayState::Connected);
        }
    }

    /// Appends the interval starting at `start` (unless already logged), adding its consumption
    /// to the register if the supply was on.
    fn record(&mut self, start: DateTime<Utc>, supplied: bool) {
        let start = self
            .supply
            .as_ref()
            .map_or(start, |supply| supply.logged_interval(start));
        if self
            .nvm
            .log
            .back()
            .is_some_and(|l| l.interval_start >= start)
        {
            return;
        }
        if supplied {
            let (imported, exported) = self.metered_wh(start);
            self.nvm.register_wh += imported;
            self.nvm.export_wh += exported;
        }
        self.nvm.log.push_back(IntervalReading {
            interval_start: start,
            import_wh: self.nvm.register_wh,
            export_wh: self.nvm.export_wh,
        });
        while self.nvm.log.len() > LOG_CAPACITY {
            self.nvm.log.pop_front();
        }
    }

    /// What the import and export registers count for the interval starting at `start` (supply
    /// on): the household's use, less what its rooftop solar generated (the rest exported),
    /// unless it is bypassed (what it draws goes to the feeder either way); or for the transformer
    /// what the households drew plus the loss (in this interval and any it did not log).
    fn metered_wh(&mut self, start: DateTime<Utc>) -> (u64, u64) {
        if let Some(Supply::Transformer {
            feeder,
            loss_percent,
        }) = &self.supply
        {
            // Its register runs on while it is dark or missed a capture: everything drawn since
            // the interval it last logged counts, though only this interval is logged.
            let after = self.nvm.log.back().map(|l| l.interval_start);
            return (
                feeder.drawn_between(after, start) * (100 + loss_percent) / 100,
                0,
            );
        }
        let used = profile::interval_wh(self.category, start, &mut self.rng);
        let generated = profile::solar_wh(self.solar_peak_w, start);
        let (imported, exported) = (
            used.saturating_sub(generated),
            generated.saturating_sub(used),
        );
        let Some(Supply::Household { feeder, bypass }) = &self.supply else {
            return (imported, exported);
        };
        match bypass.as_ref().filter(|b| b.covers(start)) {
            Some(bypass) => {
                feeder.draw(start, used + bypass.extra_wh);
                (0, 0)
            }
            None => {
                feeder.draw(start, imported);
                feeder.feed(start, exported);
                (imported, exported)
            }
        }
    }

    /// Fills the load-profile log with the `intervals` that ended before `now`, as a meter that has
    /// been in service a while has them (simulations that should not wait 15 minutes for data).
    pub fn backfill(&mut self, now: DateTime<Utc>, intervals: usize) {
        let step = i64::from(INTERVAL_SECS);
        let last_end = self.meter_time(now).timestamp().div_euclid(step) * step;
        for k in (1..=i64::try_from(intervals).unwrap_or(0)).rev() {
            if let Some(start) = DateTime::from_timestamp(last_end - k * step, 0) {
                self.record(start, true);
            }
        }
    }

    /// A power cut from `off` to `on`: RAM is lost, the intervals in between were never captured,
    /// and the event log says so.
    pub fn power_cycle(&mut self, off: DateTime<Utc>, on: DateTime<Utc>) {
        let (dark_from, dark_to) = (self.meter_time(off), self.meter_time(on));
        // A log filled in advance (`backfill`) loses the intervals that began in the dark.
        self.nvm
            .log
            .retain(|i| i.interval_start < dark_from || i.interval_start >= dark_to);
        self.acks.clear();
        self.events.clear();
        // A rebooted scheduled meter waits for the gateway at the rendezvous SF: the gateway
        // looks for it there once it has missed two turns.
        self.last_downlink = None;
        if self.nvm.mode == AccessMode::Scheduled {
            self.nvm.sf = gramgrid_gateway::link::scheduler::RENDEZVOUS_SF;
        }
        self.record_event(EventKind::PowerFail, off);
        self.record_event(EventKind::PowerRestore, on);
    }

    /// The supply fails at `at` (a feeder or transformer outage): the meter goes dark until
    /// [`Firmware::power_on`]. It has no last gasp: its log reports the failure once power is back.
    pub fn power_off(&mut self, at: DateTime<Utc>) {
        self.dark_since.get_or_insert(at);
    }

    /// The supply is back at `at`: the meter runs again, as after [`Firmware::power_cycle`].
    pub fn power_on(&mut self, at: DateTime<Utc>) {
        if let Some(off) = self.dark_since.take() {
            self.power_cycle(off, at);
        }
    }

    /// Something happened at the meter at `at` (true time): its event log says so in the next
    /// reports.
    pub fn record_event(&mut self, kind: EventKind, at: DateTime<Utc>) {
        let event = MeterEvent {
            kind,
            at: self.meter_time(at),
        };
        let code = match kind {
            EventKind::PowerFail => Some(cosem::EVENT_POWER_FAILURE),
            EventKind::PowerRestore => Some(cosem::EVENT_POWER_RESTORED),
            _ => None,
        };
        if let Some(code) = code {
            if self.power_log.len() == POWER_LOG_LEN {
                self.power_log.pop_front();
            }
            self.power_log.push_back((event.at, code));
        }
        self.events.push((event, EVENT_REPEATS));
    }

    /// What the display shows (None until the gateway sends it something).
    pub fn display(&self) -> Option<DisplayUpdate> {
        self.display
    }

    /// Fault injection (tests, simulations): the meter's clock jumps by `by` (a flat RTC
    /// battery, a clock set by hand).
    pub fn skew_clock(&mut self, by: Duration) {
        self.clock_offset += by;
    }

    /// Fault injection (tests, simulations): the next `n` replies are lost on their way, as if an
    /// interferer had hit them at the gateway.
    pub fn lose_next_replies(&mut self, n: u32) {
        self.replies_to_lose = n;
    }

    /// The listening SF right now (scheduled meters fall back to the rendezvous SF when lost).
    pub fn listen_sf(&mut self, now: DateTime<Utc>) -> u8 {
        let lost = self.last_downlink.is_some_and(|t| now - t > LOST_CONTACT);
        if lost && self.nvm.mode == AccessMode::Scheduled {
            self.nvm.sf = gramgrid_gateway::link::scheduler::RENDEZVOUS_SF;
            self.last_downlink = None;
        }
        self.nvm.sf
    }

    /// Handles a received frame; the reply (a sealed uplink) to send (after `link::REPLY_DELAY`), if any. Frames for
    /// other meters, forged or replayed ones are dropped silently, as a meter must.
    pub fn on_downlink(&mut self, phy: &[u8], now: DateTime<Utc>) -> Option<Vec<u8>> {
        if self.dark_since.is_some() {
            return None;
        }
        let session = Session {
            keys: self.keys.clone(),
            last_fcnt: self.nvm.fcnt_down,
        };
        let mine = self.keys.dev_addr;
        let frame = FrameFilter::meter()
            .check(phy, |addr| (addr == mine).then_some(session))
            .ok()?;
        self.nvm.fcnt_down = Some(frame.fcnt);
        self.last_downlink = Some(now);
        if frame.fport == Some(DLMS_FPORT) {
            return self.on_dlms(&frame.payload, now);
        }
        let message = Downlink::decode_frame(frame.fport, &frame.payload).ok()?;
        let sf = self.nvm.sf;
        let mut then_sf = sf;
        let intervals: Vec<IntervalReading> = match message {
            Downlink::Poll(p) => self.intervals_from(p.since),
            Downlink::ResendRequest(r) => self
                .nvm
                .log
                .iter()
                .filter(|i| r.missing.contains(&i.interval_start))
                .copied()
                .collect(),
            Downlink::RelayCommand(c) => {
                self.obey(c.command_id, c.action, now);
                Vec::new()
            }
            Downlink::ScheduleAssign(a) => {
                if (7..=12).contains(&a.spreading_factor) {
                    then_sf = a.spreading_factor;
                }
                self.nvm.mode = a.mode;
                Vec::new()
            }
            Downlink::TimeSync(t) => {
                self.clock_offset += t.utc - self.meter_time(now);
                self.record_event(EventKind::ClockSet, now);
                Vec::new()
            }
            Downlink::DisplayUpdate(update) => {
                self.display = Some(update);
                Vec::new()
            }
        };
        if self.nvm.mode == AccessMode::Aloha {
            // Class A answers in its next scheduled uplink.
            return None;
        }
        let out = self.report(intervals, now, sf);
        self.nvm.sf = then_sf;
        let lost = self.lose_reply();
        out.filter(|_| !lost)
    }

    /// A DLMS request on FPort 2: the server's answer, sealed on FPort 2 and sized to the SF. A
    /// request the server refuses (forged, replayed, malformed) gets no answer.
    fn on_dlms(&mut self, request: &[u8], now: DateTime<Utc>) -> Option<Vec<u8>> {
        let max = gramgrid_proto::frame::in865_max_frm_payload(self.nvm.sf)?;
        let (mut server, nameplate) = self.dlms.take()?;
        server.set_max_frm_payload(max);
        let answer = server.handle(request, self, now);
        self.dlms = Some((server, nameplate));
        let phy = self.seal_uplink(DLMS_FPORT, &answer.ok()?)?;
        Some(phy).filter(|_| !self.lose_reply())
    }

    /// Seals `body` as the next uplink on `fport`; the counter is spent even if the frame is then
    /// lost on its way.
    fn seal_uplink(&mut self, fport: u8, body: &[u8]) -> Option<Vec<u8>> {
        let fcnt = self.nvm.fcnt_up;
        let phy = encode_data_frame(
            &self.keys,
            &FrameSpec {
                direction: Direction::Uplink,
                confirmed: false,
                ack: false,
                fcnt,
                fport,
                payload: body,
            },
        )
        .ok()?;
        self.nvm.fcnt_up = fcnt.wrapping_add(1);
        Some(phy)
    }

    /// Fault injection: whether this reply is one of those [`Firmware::lose_next_replies`] loses.
    fn lose_reply(&mut self) -> bool {
        let lose = self.replies_to_lose > 0;
        self.replies_to_lose = self.replies_to_lose.saturating_sub(1);
        lose
    }

    /// ALOHA mode: the uplink for the interval just captured.
    pub fn aloha_uplink(&mut self, now: DateTime<Utc>) -> Option<Vec<u8>> {
        if self.dark_since.is_some() {
            return None;
        }
        let latest: Vec<IntervalReading> = self.nvm.log.back().copied().into_iter().collect();
        let sf = self.nvm.sf;
        self.report(latest, now, sf)
    }

    fn intervals_from(&self, since: DateTime<Utc>) -> Vec<IntervalReading> {
        self.nvm
            .log
            .iter()
            .filter(|i| i.interval_start >= since)
            .copied()
            .collect()
    }

    fn obey(&mut self, command_id: u32, action: RelayAction, now: DateTime<Utc>) {
        if let Some(ack) = self.nvm.last_command.filter(|a| a.command_id == command_id) {
            self.acks.push(ack);
            return;
        }
        let target = match action {
            RelayAction::Connect => RelayState::Connected,
            RelayAction::Disconnect => RelayState::Disconnected,
        };
        if self.nvm.relay != target {
            self.nvm.relay = target;
            self.record_event(EventKind::RelayOperated { command_id }, now);
        }
        let ack = RelayAck {
            command_id,
            outcome: AckOutcome::Applied,
        };
        self.nvm.last_command = Some(ack);
        self.acks.push(ack);
    }

    /// Seals a report with `intervals` (as many as fit at `sf`, oldest first), pending events and acks.
    fn report(
        &mut self,
        intervals: Vec<IntervalReading>,
        now: DateTime<Utc>,
        sf: u8,
    ) -> Option<Vec<u8>> {
        let report = MeterReport {
            meter_time: self.meter_time(now),
            intervals,
            power_w: match self.nvm.relay {
                RelayState::Connected => profile::power_w(self.category, now),
                _ => 0,
            },
            voltage_dv: 2300,
            relay_state: self.nvm.relay,
            events: self.events.iter().map(|(event, _)| *event).collect(),
            acks: std::mem::take(&mut self.acks),
        };
        for (_, left) in &mut self.events {
            *left -= 1;
        }
        self.events.retain(|(_, left)| *left > 0);
        let max = gramgrid_proto::frame::in865_max_frm_payload(sf)?;
        let (body, _) = report.encode_fitting(max).ok()?;
        debug_assert!(Uplink::decode(&body).is_ok());
        self.seal_uplink(gramgrid_proto::payload::FPORT, &body)
    }
}

/// What the DLMS server reads and changes: the same registers, load-profile log, relay and
/// clock the v1 reports carry.
impl CosemObjects for Firmware {
    fn meter_time(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        Firmware::meter_time(self, now)
    }
    fn set_meter_time(&mut self, now: DateTime<Utc>, to: DateTime<Utc>) {
        self.clock_offset += to - Firmware::meter_time(self, now);
        self.record_event(EventKind::ClockSet, now);
    }
    fn import_wh(&self) -> u64 {
        self.nvm.register_wh
    }
    fn export_wh(&self) -> u64 {
        self.nvm.export_wh
    }
    fn power_events(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(DateTime<Utc>, u16)> {
        self.power_log
            .iter()
            .filter(|(at, _)| (from..=to).contains(at))
            .copied()
            .collect()
    }
    fn profile_rows(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<IntervalReading> {
        let interval = Duration::seconds(i64::from(INTERVAL_SECS));
        self.nvm
            .log
            .iter()
            .filter(|i| (from..=to).contains(&(i.interval_start + interval)))
            .copied()
            .collect()
    }
    fn relay_state(&self) -> RelayState {
        self.nvm.relay
    }
    fn operate_relay(&mut self, connect: bool, now: DateTime<Utc>) -> Result<bool, RelayRefusal> {
        let target = if connect {
            RelayState::Connected
        } else {
            RelayState::Disconnected
        };
        if self.nvm.relay == target {
            return Ok(false);
        }
        self.nvm.relay = target;
        // Operated by the DLMS method, not by a v1 command id.
        self.record_event(EventKind::RelayOperated { command_id: 0 }, now);
        Ok(true)
    }
    fn nameplate(&self) -> Nameplate {
        self.dlms
            .as_ref()
            .map(|(_, nameplate)| nameplate.clone())
            .unwrap_or(Nameplate {
                serial: String::new(),
                manufacturer: String::new(),
                firmware_version: String::new(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gramgrid_proto::frame::{seal_v1, DevAddr, SessionKey};
    use gramgrid_proto::payload::{Poll, RelayCommand};

    fn keys(addr: u32, k: u8) -> SessionKeys {
        SessionKeys {
            dev_addr: DevAddr(addr),
            nwk_skey: SessionKey::new([k; 16]),
            app_skey: SessionKey::new([k + 1; 16]),
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_824_000, 0).unwrap()
    }

    fn downlink(keys: &SessionKeys, fcnt: u32, message: &Downlink) -> Vec<u8> {
        seal_v1(keys, Direction::Downlink, fcnt, &message.encode().unwrap()).unwrap()
    }

    fn disconnect(id: u32) -> Downlink {
        Downlink::RelayCommand(RelayCommand {
            command_id: id,
            action: RelayAction::Disconnect,
        })
    }

    /// The events of the report in an uplink the meter sent with counter `fcnt`.
    fn reported_events(keys: &SessionKeys, phy: &[u8], fcnt: u32) -> Vec<MeterEvent> {
        let body = gramgrid_proto::frame::open_data_frame(keys, phy, fcnt).unwrap();
        let Uplink::MeterReport(report) = Uplink::decode(&body).unwrap();
        report.events
    }

    #[test]
    fn a_bypassed_household_records_nothing_and_the_transformer_sees_it_all() {
        use crate::meter::supply::Feeder;
        let feeder = Feeder::default();
        let household = |seed, bypass| {
            Firmware::new(keys(seed, 1), Category::Domestic, 7, u64::from(seed), t0()).with_supply(
                Supply::Household {
                    feeder: feeder.clone(),
                    bypass,
                },
            )
        };
        let mut honest = household(1, None);
        // t0 is 05:30 IST: bypassed from 05:00 to 07:00, with a 1 kWh-per-interval extra load.
        let mut thief = household(
            2,
            Some(Bypass {
                from: t0(),
                hours: 5..7,
                extra_wh: 1_000,
            }),
        );
        let mut transformer = Firmware::new(keys(3, 5), Category::Domestic, 7, 3, t0())
            .with_supply(Supply::Transformer {
                feeder: feeder.clone(),
                loss_percent: 4,
            });
        let (honest_before, thief_before, dt_before) = (
            honest.nvm.register_wh,
            thief.nvm.register_wh,
            transformer.nvm.register_wh,
        );
        honest.record(t0(), true);
        thief.record(t0(), true);
        let honest_used = honest.nvm.register_wh - honest_before;
        assert!(honest_used > 0);
        assert_eq!(
            thief.nvm.register_wh, thief_before,
            "the bypassed meter records nothing"
        );
        let drawn = feeder.drawn_between(None, t0());
        assert!(drawn > honest_used + 1_000, "{drawn}");
        // The transformer's capture at the end of the next interval logs this one, with the loss.
        transformer.record(t0() + Duration::minutes(15), true);
        assert_eq!(transformer.nvm.register_wh - dt_before, drawn * 104 / 100);
        assert_eq!(transformer.nvm.log.back().unwrap().interval_start, t0());
    }

    #[test]
    fn an_event_rides_in_three_reports_so_one_lost_on_the_air_loses_nothing() {
        let k = keys(0x2601_0001, 7);
        let mut fw = Firmware::new(k.clone(), Category::Domestic, 7, 1, t0());
        fw.record_event(
            EventKind::Tamper(gramgrid_proto::payload::Tamper::Magnet),
            t0(),
        );
        let poll = Downlink::Poll(Poll { since: t0() });
        let counts: Vec<usize> = (0..4)
            .map(|n| {
                let phy = fw.on_downlink(&downlink(&k, n, &poll), t0()).unwrap();
                reported_events(&k, &phy, n).len()
            })
            .collect();
        assert_eq!(counts, [1, 1, 1, 0]);
    }

    #[test]
    fn the_relay_obeys_only_authentic_fresh_commands_and_acts_once_per_id() {
        let k = keys(0x2601_0001, 7);
        let mut fw = Firmware::new(k.clone(), Category::Domestic, 7, 1, t0());
        // Forged (wrong key) and for another meter: silently dropped.
        assert!(fw
            .on_downlink(&downlink(&keys(0x2601_0001, 9), 0, &disconnect(5)), t0())
            .is_none());
        assert!(fw
            .on_downlink(&downlink(&keys(0x2601_0002, 7), 0, &disconnect(5)), t0())
            .is_none());
        assert_eq!(fw.nvm.relay, RelayState::Connected);
        let genuine = downlink(&k, 0, &disconnect(5));
        assert!(fw.on_downlink(&genuine, t0()).is_some());
        assert_eq!(fw.nvm.relay, RelayState::Disconnected);
        // A replay of the same frame is refused; the same command re-sent is re-acknowledged only.
        fw.nvm.relay = RelayState::Connected;
        assert!(fw.on_downlink(&genuine, t0()).is_none());
        assert!(fw
            .on_downlink(&downlink(&k, 1, &disconnect(5)), t0())
            .is_some());
        assert_eq!(fw.nvm.relay, RelayState::Connected);
    }

    #[test]
    fn counters_and_registers_survive_a_power_cut_and_missed_captures_stay_missing() {
        let k = keys(0x2601_0001, 7);
        let mut fw = Firmware::new(k.clone(), Category::Commercial, 7, 1, t0());
        let q = Duration::minutes(15);
        let mut now = t0();
        for _ in 0..4 {
            now = fw.next_capture(now);
            fw.capture(now);
        }
        let poll = |since| Downlink::Poll(Poll { since });
        assert!(fw
            .on_downlink(&downlink(&k, 0, &poll(t0() - q)), now)
            .is_some());
        let (fcnt_up, register, logged) = (fw.nvm.fcnt_up, fw.nvm.register_wh, fw.nvm.log.len());
        // Off for an hour: nothing is captured, RAM is lost, NVM is not.
        let on = now + Duration::hours(1);
        fw.power_cycle(now, on);
        assert_eq!((fw.nvm.fcnt_up, fw.nvm.register_wh), (fcnt_up, register));
        let next = fw.next_capture(on);
        fw.capture(next);
        let starts: Vec<_> = fw.nvm.log.iter().map(|i| i.interval_start).collect();
        assert_eq!(starts.len(), logged + 1, "{starts:?}");
        assert!(starts[logged] - starts[logged - 1] > q * 3, "{starts:?}");
        // The old downlink counter still stands after the cut: a replayed poll is refused.
        assert!(fw.on_downlink(&downlink(&k, 0, &poll(t0())), on).is_none());
        assert!(fw
            .on_downlink(&downlink(&k, 1, &poll(t0())), next)
            .is_some());
        assert_eq!(fw.nvm.fcnt_up, fcnt_up + 1);
    }

    /// A DLMS meter over real LoRaWAN frames on FPort 2: the gateway's DLMS client reads its
    /// load-profile log (in blocks at SF12), disconnects it (the register stands still) and
    /// reconnects it; a replayed request frame gets no answer.
    #[test]
    fn a_dlms_meter_answers_the_gateways_client_over_lorawan_frames() {
        use gramgrid_proto::dlms::cipher::Keys;
        use gramgrid_proto::dlms::client::{gateway_system_title, Answer, DlmsClient};
        use gramgrid_proto::frame::open_data_frame;
        let session = keys(0x2601_0042, 7);
        let dlms_keys = Keys {
            encryption: *b"dlms-meter-EK-42",
            authentication: *b"dlms-meter-AK-42",
        };
        let (meter_title, gateway_title) = (*b"SIM00042", gateway_system_title("gw-1"));
        let nameplate = Nameplate {
            serial: "SIM-00042".into(),
            manufacturer: "gramgrid sim".into(),
            firmware_version: "1".into(),
        };
        let mut meter = Firmware::new(session.clone(), Category::Domestic, 12, 42, t0()).with_dlms(
            DlmsServer::new(dlms_keys.clone(), meter_title, gateway_title),
            nameplate,
        );
        meter.backfill(t0(), 4);
        let mut client = DlmsClient::new(dlms_keys, meter_title, gateway_title);
        let (mut fcnt_down, mut fcnt_up) = (0, 0);
        // One exchange: the request in a sealed downlink, the answer opened from the uplink.
        let mut exchange = |meter: &mut Firmware, request: &[u8]| -> Option<Vec<u8>> {
            let phy = encode_data_frame(
                &session,
                &FrameSpec {
                    direction: Direction::Downlink,
                    confirmed: false,
                    ack: false,
                    fcnt: fcnt_down,
                    fport: DLMS_FPORT,
                    payload: request,
                },
            )
            .unwrap();
            fcnt_down += 1;
            let up = meter.on_downlink(&phy, t0())?;
            assert!(up.len() <= 51 + 13, "an SF12 frame: {} bytes", up.len());
            let answer = open_data_frame(&session, &up, fcnt_up).unwrap();
            fcnt_up += 1;
            Some(answer)
        };
        let logged: Vec<IntervalReading> = meter.nvm.log.iter().copied().collect();
        assert_eq!(logged.len(), 4);
        let mut request = client.read_intervals(logged[0].interval_start, 4).unwrap();
        let read = loop {
            let answer = exchange(&mut meter, &request).expect("an answer");
            match client.on_uplink(&answer).unwrap() {
                Answer::NextBlock(next) => request = next,
                Answer::Intervals(rows) => break rows,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(read, logged);

        let disconnect = client.disconnect().unwrap();
        let answer = exchange(&mut meter, &disconnect).expect("an answer");
        assert!(matches!(
            client.on_uplink(&answer).unwrap(),
            Answer::RelayActionDone { accepted: true, .. }
        ));
        assert_eq!(meter.nvm.relay, RelayState::Disconnected);
        let register = meter.nvm.register_wh;
        meter.record(
            t0() + Duration::minutes(60),
            meter.nvm.relay == RelayState::Connected,
        );
        assert_eq!(meter.nvm.register_wh, register, "no supply, no energy");

        // The same request again (a replay of the DLMS bytes in a new, authentic frame): nothing.
        assert_eq!(exchange(&mut meter, &disconnect), None);
        let reconnect = client.reconnect().unwrap();
        let answer = exchange(&mut meter, &reconnect).expect("an answer");
        assert!(matches!(
            client.on_uplink(&answer).unwrap(),
            Answer::RelayActionDone { accepted: true, .. }
        ));
        let state = client.read_relay_state().unwrap();
        let answer = exchange(&mut meter, &state).expect("an answer");
        assert_eq!(
            client.on_uplink(&answer).unwrap(),
            Answer::RelayState(RelayState::Connected)
        );
    }
}
