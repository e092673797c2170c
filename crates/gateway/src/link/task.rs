//! The task that owns the gateway radio: one exchange at a time in scheduled mode (downlink, then
//! the addressed meter's reply), or continuous listening with Class A replies in ALOHA mode.
//!
//! A relay command withdrawn by the gateway is dropped, and one whose transmission would end after
//! its `not_after` (a disconnect's window end, judged on the link clock just before transmitting)
//! is dropped untransmitted; the gateway's policy decides again.
//!
//! A DLMS meter (docs/dlms.md section 7) takes its polls, clock sets and relay commands as DLMS
//! exchanges (`dlms`); its SF assignment stays a payload v1 ScheduleAssign.

mod dlms;

use super::frames::{self, AppPayload, OpenedUplink, OutMessage, Sessions};
use super::scheduler::{self, Errand, ScheduleTiming, Scheduler, Turn};
use super::{
    LinkBackend, LinkClock, LinkError, LinkRequest, ProvisionedMeters, RelayRequest, SharedStats,
    REPLY_DELAY, RX1_DELAY,
};
use crate::store::{Fcnt, MeterReading, StoreError};
use chrono::{DateTime, Utc};
use gramgrid_core::policy::RelayState;
use gramgrid_proto::dlms::client::{Answer, DlmsClient};
use gramgrid_proto::payload::{
    AccessMode, Downlink, MeterReport, Poll, RelayCommand, ScheduleAssign, TimeSync,
};
use gramgrid_proto::security::RejectReason;
use gramgrid_radio::{toa, Radio, RadioConfig, RadioError, RxFrame};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Extra listening time after the longest possible reply could have ended.
const REPLY_GUARD: Duration = Duration::from_millis(50);
/// A relay command not acknowledged is tried again after this long...
const COMMAND_RETRY: Duration = Duration::from_secs(20);
/// ...this many times, then left to the gateway's own retry policy (which re-sends it).
const COMMAND_TRIES: u32 = 5;
/// Time a radio driver may take from the deadline check to the start of the transmission (SPI
/// writes, the switch to TX); a command with a deadline goes out only if it ends before it with this
/// to spare.
const TX_START_GUARD: Duration = Duration::from_millis(100);
/// How often newly provisioned meters are picked up from the backend.
const RELOAD_EVERY: Duration = Duration::from_secs(600);
/// How often the link logs a summary.
const SUMMARY_EVERY: Duration = Duration::from_secs(3600);
/// A radio that fails is given this long before the next attempt.
const RADIO_PAUSE: Duration = Duration::from_secs(5);
/// How far back a meter heard for the first time is asked for its intervals.
const FIRST_POLL_LOOKBACK: chrono::Duration = chrono::Duration::days(1);

/// A relay command waiting for its acknowledgement.
#[derive(Debug, Clone)]
struct Pending {
    request: RelayRequest,
    wire_id: u32,
    queued: Instant,
    next_try: Instant,
    tries: u32,
}

/// What became of a downlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Transmitted,
    /// Not transmitted: it could not be sealed (logged).
    Unsealed,
    /// Not transmitted: it would have ended after its `not_after`.
    TooLate,
}

/// What an accepted uplink said.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// A payload v1 report (its intervals emptied if they could not be stored).
    Report(MeterReport),
    /// A DLMS meter's answer or push, already acted upon (readings stored, relay state noted).
    Dlms(Answer),
}

/// A reply heard from the meter an exchange addressed.
struct Reply {
    heard: Heard,
    rssi_dbm: i16,
    snr_db: i16,
}

/// The gateway side of the meter link.
pub struct Link<B: LinkBackend> {
    backend: B,
    sessions: Sessions,
    scheduler: Scheduler,
    clock: LinkClock,
    radio: RadioConfig,
    stats: SharedStats,
    commands: Vec<Pending>,
    relay_seen: HashMap<i64, RelayState>,
    provisioned: ProvisionedMeters,
    /// Whether meters' clocks may be set to the gateway's ([`LinkRequest::ClockTrusted`]).
    clock_trusted: bool,
    /// The DLMS client of each DLMS meter (by meter id).
    dlms: HashMap<i64, DlmsClient>,
    /// When each DLMS meter's clock was last read (v1 meters report theirs in every reply).
    dlms_clock_read: HashMap<i64, Instant>,
    /// When each DLMS meter's power events log was last read (v1 meters report events).
    dlms_events_read: HashMap<i64, DateTime<Utc>>,
    /// DLMS meters that missed a turn since their power events log was last read.
    dlms_missed: std::collections::HashSet<i64>,
    /// DLMS meters already warned about: at their SF a load-profile read does not fit a downlink.
    dlms_unreadable: std::collections::HashSet<i64>,
    /// The gateway's DLMS system title (from its id).
    gateway_title: [u8; 8],
}

impl<B: LinkBackend> Link<B> {
    /// A link over `backend`; `radio` is the base configuration (channel, power, IQ) whose spreading
    /// factor is replaced per exchange.
    pub fn new(backend: B, timing: ScheduleTiming, radio: RadioConfig, clock: LinkClock) -> Self {
        Self {
            backend,
            sessions: Sessions::default(),
            scheduler: Scheduler::new(timing),
            clock,
            radio,
            stats: SharedStats::default(),
            commands: Vec::new(),
            relay_seen: HashMap::new(),
            provisioned: ProvisionedMeters::default(),
            clock_trusted: false,
            dlms: HashMap::new(),
            dlms_clock_read: HashMap::new(),
            dlms_events_read: HashMap::new(),
            dlms_missed: std::collections::HashSet::new(),
            dlms_unreadable: std::collections::HashSet::new(),
            gateway_title: gramgrid_proto::dlms::client::gateway_system_title(""),
        }
    }

    /// The gateway's id, from which its DLMS system title comes (docs/dlms.md section 7); DLMS
    /// meters are provisioned with that title.
    pub fn with_gateway_id(mut self, gateway_id: &str) -> Self {
        self.gateway_title = gramgrid_proto::dlms::client::gateway_system_title(gateway_id);
        self
    }

    /// Publishes the meters this link can reach to `provisioned` (the command channel's view).
    pub fn with_provisioned(mut self, provisioned: ProvisionedMeters) -> Self {
        self.provisioned = provisioned;
        self
    }

    /// Counts into `stats` (shared with whoever shows them, e.g. the technician's pages).
    pub fn with_stats(mut self, stats: SharedStats) -> Self {
        self.stats = stats;
        self
    }

    /// A handle on this link's counters; it stays readable while the link runs (see
    /// [`super::read_stats`]).
    pub fn stats(&self) -> SharedStats {
        self.stats.clone()
    }

    /// Starts meters at `sf` instead of the rendezvous SF (commissioned fleets, the benchmark).
    /// Called at start, on [`LinkRequest::Reload`] and every `RELOAD_EVERY` as a backstop: meters
    /// added, re-keyed or removed since are taken up at once.
    pub fn load_sessions(&mut self, initial_sf: impl Fn(i64) -> u8) -> Result<(), LinkError> {
        let stored = self.backend.sessions()?;
        for meter in self.sessions.load(&stored) {
            self.scheduler.remove(meter);
            self.commands.retain(|p| p.request.meter != meter);
            self.relay_seen.remove(&meter);
            self.dlms.remove(&meter);
            tracing::info!(
                meter,
                "meter no longer provisioned here; the link stops polling it"
            );
        }
        self.load_dlms(&stored);
        self.provisioned.replace(self.sessions.meters());
        let now = self.clock.now();
        for s in &stored {
            if self.scheduler.sf(s.meter).is_none() {
                // A new meter: the intervals of the last FIRST_POLL_LOOKBACK, but none from before
                // it was installed here (they are not this account's, and refused anyway).
                let since = s
                    .last_reading_at
                    .unwrap_or_else(|| align_down((now - FIRST_POLL_LOOKBACK).max(s.installed_at)));
                self.scheduler.add(s.meter, initial_sf(s.meter), since, now);
            }
        }
        Ok(())
    }

    /// Scheduled mode until `stop` turns true: polls, fetches missing intervals, carries commands.
    pub async fn run_scheduled<R: Radio>(
        mut self,
        mut radio: R,
        mut requests: mpsc::UnboundedReceiver<LinkRequest>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), LinkError> {
        self.load_sessions(|_| scheduler::RENDEZVOUS_SF)?;
        let mut reload_at = Instant::now() + RELOAD_EVERY;
        let mut summary_at = Instant::now() + SUMMARY_EVERY;
        tracing::info!(
            meters = self.scheduler.len(),
            "meter link started (scheduled mode)"
        );
        while !*stop.borrow() {
            self.note_turn();
            self.take_requests(&mut requests);
            let now = Instant::now();
            if now >= reload_at {
                if let Err(error) = self.load_sessions(|_| scheduler::RENDEZVOUS_SF) {
                    tracing::error!(%error, "cannot reload meter sessions; keeping the ones loaded");
                }
                reload_at = now + RELOAD_EVERY;
            }
            if now >= summary_at {
                self.log_summary();
                summary_at = now + SUMMARY_EVERY;
            }
            let done = match self.next_command(now) {
                Some(i) => self.command_turn(&mut radio, i).await,
                None => match self.scheduler.next(self.clock.now()) {
                    Some(turn) => self.scheduled_turn(&mut radio, turn).await,
                    None => {
                        // Wakes at least every IDLE_TURN, so the watchdog sees the loop alive.
                        let wake = self
                            .next_wake()
                            .min(reload_at)
                            .min(summary_at)
                            .min(now + super::IDLE_TURN);
                        tokio::select! {
                            _ = tokio::time::sleep_until(wake) => {}
                            Some(request) = requests.recv() => self.handle(request),
                            _ = stop.changed() => {}
                        }
                        Ok(())
                    }
                },
            };
            if let Err(error) = done {
                tracing::error!(%error, "meter link exchange failed; pausing before the next");
                tokio::time::sleep(RADIO_PAUSE).await;
            }
        }
        self.log_summary();
        Ok(())
    }

    /// ALOHA mode until `stop`: listens on the radio's one spreading factor and answers an uplink
    /// with a queued relay command in the meter's RX1 window (Class A).
    pub async fn run_aloha<R: Radio>(
        mut self,
        mut radio: R,
        mut requests: mpsc::UnboundedReceiver<LinkRequest>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), LinkError> {
        self.load_sessions(|_| scheduler::RENDEZVOUS_SF)?;
        tracing::info!(
            meters = self.scheduler.len(),
            "meter link started (ALOHA mode)"
        );
        radio.configure(self.radio).await?;
        while !*stop.borrow() {
            self.note_turn();
            self.take_requests(&mut requests);
            let heard = tokio::select! {
                heard = radio.receive(Duration::from_secs(1)) => heard,
                _ = stop.changed() => continue,
            };
            let frame = match heard {
                Ok(frame) => frame,
                Err(RadioError::Timeout(_) | RadioError::Crc { .. } | RadioError::Header) => {
                    continue
                }
                Err(error) => {
                    tracing::error!(%error, "gateway radio receive failed");
                    tokio::time::sleep(RADIO_PAUSE).await;
                    continue;
                }
            };
            let Some((meter, _)) = self.on_uplink(&frame) else {
                continue;
            };
            if !self.commands.iter().any(|p| p.request.meter == meter) {
                continue;
            }
            tokio::time::sleep_until(frame.received_at + RX1_DELAY).await;
            // The command may have been withdrawn while waiting for RX1.
            self.take_requests(&mut requests);
            let Some(i) = self.commands.iter().position(|p| p.request.meter == meter) else {
                continue;
            };
            let request = self.commands[i].request.clone();
            let message = OutMessage::V1(self.command_message(i));
            let sf = self.radio.spreading_factor;
            match self
                .send(&mut radio, meter, sf, &message, request.not_after)
                .await
            {
                Ok(Sent::TooLate) => self.drop_late(&request),
                Ok(Sent::Transmitted | Sent::Unsealed) => {}
                Err(error) => tracing::error!(%error, meter, "relay command downlink failed"),
            }
            radio.configure(self.radio).await?;
        }
        self.log_summary();
        Ok(())
    }

    /// Handles one uplink heard outside an exchange (ALOHA, or a benchmark's extra receivers).
    /// Returns the meter and what it said if the frame was accepted; a report whose readings could
    /// not be stored comes back without them, so that no one counts them as fetched.
    pub fn on_uplink(&mut self, frame: &RxFrame) -> Option<(i64, Heard)> {
        let opened = match self.sessions.open_uplink(&frame.payload) {
            Ok(opened) => opened,
            Err(rejection) => {
                self.stats_mut(|s| s.rejects = self.sessions.rejects().clone());
                tracing::warn!(%rejection, rssi_dbm = frame.rssi_dbm, "uplink rejected");
                return None;
            }
        };
        let OpenedUplink {
            meter,
            fcnt,
            payload,
        } = opened;
        if let Err(error) = self.backend.commit_fcnt(meter, Fcnt::Up, fcnt) {
            tracing::error!(%error, meter, "cannot persist the uplink counter; frame not acted upon");
            return None;
        }
        self.sessions.accepted_up(meter, fcnt);
        let (at, sf) = (self.clock.now(), self.scheduler.sf(meter));
        self.stats_mut(|s| {
            s.uplinks += 1;
            let health = s.meters.entry(meter).or_default();
            health.note_heard(at, sf, frame.rssi_dbm, frame.snr_db);
        });
        let report = match payload {
            AppPayload::V1(Ok(report)) => report,
            AppPayload::Dlms(apdu) => {
                return self.on_dlms(meter, &apdu).map(|a| (meter, Heard::Dlms(a)))
            }
            AppPayload::V1(Err(error)) => {
                self.count_reject(RejectReason::BadPayload);
                tracing::warn!(%error, meter, "authentic uplink whose payload is not v1; ignored");
                return None;
            }
        };
        let mut report = report;
        if !self.apply(meter, &report) {
            // Not stored (a full disk, an I/O error): the caller must not count these intervals as
            // fetched, so the next poll asks for them again. The meter keeps a week of them.
            report.intervals.clear();
        }
        Some((meter, Heard::Report(report)))
    }

    fn count_reject(&mut self, reason: RejectReason) {
        self.sessions.count_reject(reason);
        self.stats_mut(|s| s.rejects = self.sessions.rejects().clone());
    }

    /// Stores what a report says; false if its readings could not be stored.
    fn apply(&mut self, meter: i64, report: &MeterReport) -> bool {
        let at = self.clock.now();
        let skew = report.meter_time - at;
        if self.clock_trusted && skew.abs() > super::MAX_METER_CLOCK_SKEW {
            tracing::info!(
                meter,
                skew_s = skew.num_seconds(),
                "meter clock off; setting it in its next turn"
            );
            self.scheduler.set_clock(meter, at);
        }
        let stored = self.store_readings(meter, &frames::readings_of(meter, report));
        if !report.events.is_empty() {
            if let Err(error) = self.backend.events(meter, &report.events, at) {
                tracing::error!(%error, meter, "meter events heard but not stored");
            }
        }
        let now = Instant::now();
        let mut acked = false;
        for ack in &report.acks {
            if let Some(i) = self
                .commands
                .iter()
                .position(|p| p.request.meter == meter && p.wire_id == ack.command_id)
            {
                tracing::info!(meter, outcome = ?ack.outcome, "relay command acknowledged");
                self.command_done(i, now);
                acked = true;
            }
        }
        self.note_relay_state(meter, frames::relay_state(report.relay_state), acked, at);
        stored
    }

    /// Hands readings heard from `meter` to the backend; false if they could not be stored.
    fn store_readings(&mut self, meter: i64, readings: &[MeterReading]) -> bool {
        if readings.is_empty() {
            return true;
        }
        match self.backend.readings(readings) {
            Ok(()) => {
                self.stats_mut(|s| s.readings += readings.len() as u64);
                true
            }
            // Shedding for want of disk space is logged once by the gateway: a line per
            // report would fill the disk further.
            Err(LinkError::Store(StoreError::ReadingsShed { .. })) => false,
            Err(error) => {
                tracing::error!(%error, meter, "readings heard but not stored; they will be fetched again");
                false
            }
        }
    }

    /// Hands a relay state heard from `meter` to the backend when it changed, or always when it
    /// confirms a command (`confirms`).
    fn note_relay_state(
        &mut self,
        meter: i64,
        state: RelayState,
        confirms: bool,
        at: DateTime<Utc>,
    ) {
        if confirms || self.relay_seen.get(&meter) != Some(&state) {
            match self.backend.relay_state(meter, state, at) {
                Ok(()) => {
                    self.relay_seen.insert(meter, state);
                }
                Err(error) => tracing::error!(%error, meter, "relay state heard but not stored"),
            }
        }
    }

    /// Ends waiting command `i`: its meter confirmed it.
    fn command_done(&mut self, i: usize, now: Instant) {
        let done = self.commands.swap_remove(i);
        let latency = now - done.queued;
        tracing::info!(meter = done.request.meter, command = %done.request.command_id, ?latency, "relay command confirmed by the meter");
        self.stats_mut(|s| s.relay_latencies.push(latency));
    }

    async fn scheduled_turn<R: Radio>(
        &mut self,
        radio: &mut R,
        turn: Turn,
    ) -> Result<(), LinkError> {
        if self.dlms.contains_key(&turn.meter) && !matches!(turn.errand, Errand::Assign { .. }) {
            return self.dlms_turn(radio, turn).await;
        }
        let message = match turn.errand {
            Errand::Poll { since } => Downlink::Poll(Poll { since }),
            Errand::Assign { sf } => Downlink::ScheduleAssign(ScheduleAssign {
                mode: AccessMode::Scheduled,
                slot_offset_ms: 0,
                period_ms: u32::try_from(self.timing_period_ms()).unwrap_or(u32::MAX),
                spreading_factor: sf,
            }),
            // Whole seconds, rounded up: the frame reaches the meter a little after it is built.
            Errand::SetClock => Downlink::TimeSync(TimeSync {
                utc: whole_second_after(self.clock.now()),
            }),
            Errand::Display(update) => Downlink::DisplayUpdate(update),
        };
        self.send(radio, turn.meter, turn.sf, &OutMessage::V1(message), None)
            .await?;
        let reply = self.reply_from(radio, turn.meter, turn.sf).await?;
        let since = reply.as_ref().and_then(|r| match &r.heard {
            Heard::Report(report) => frames::next_since(report),
            Heard::Dlms(_) => None,
        });
        self.end_turn(&turn, reply.map(|r| (r.rssi_dbm, r.snr_db)), since);
        Ok(())
    }

    /// Tells the scheduler how `turn` went: answered (the reply's RSSI and SNR, and the start of
    /// the interval after the newest fetched) or not.
    fn end_turn(&mut self, turn: &Turn, signal: Option<(i16, i16)>, since: Option<DateTime<Utc>>) {
        let now = self.clock.now();
        match signal {
            Some((rssi_dbm, snr_db)) => {
                let mut best = scheduler::sf_for_reply(rssi_dbm, snr_db);
                if self.dlms.contains_key(&turn.meter) {
                    // Slower than this, its profile reads no longer fit a downlink: a DLMS meter
                    // is kept at SF9 even where the margin asks for more (it answers or falls
                    // silent; silence takes it back to the rendezvous SF).
                    best = best.map(|sf| sf.min(dlms::SLOWEST_READABLE_SF));
                }
                self.scheduler.heard(turn, now, since, best);
            }
            None => {
                self.note_silence(turn.meter, turn.sf, now);
                self.scheduler.silent(turn, now);
            }
        }
        self.provisioned.set_silent(self.scheduler.silent_meters());
    }

    async fn command_turn<R: Radio>(&mut self, radio: &mut R, i: usize) -> Result<(), LinkError> {
        let request = self.commands[i].request.clone();
        let meter = request.meter;
        let sf = self.scheduler.sf(meter).unwrap_or(scheduler::RENDEZVOUS_SF);
        if self.dlms.contains_key(&meter) {
            return self.dlms_command_turn(radio, i, sf).await;
        }
        let message = OutMessage::V1(self.command_message(i));
        if self
            .send(radio, meter, sf, &message, request.not_after)
            .await?
            == Sent::TooLate
        {
            self.drop_late(&request);
            return Ok(());
        }
        if self.reply_from(radio, meter, sf).await?.is_none() {
            self.note_silence(meter, sf, self.clock.now());
        }
        Ok(())
    }

    /// Marks command `i` as tried now and returns its downlink.
    fn command_message(&mut self, i: usize) -> Downlink {
        let (wire_id, action) = self.note_try(i);
        Downlink::RelayCommand(RelayCommand {
            command_id: wire_id,
            action: frames::relay_action(action),
        })
    }

    /// Marks command `i` as tried now (dropping it after its last try) and returns its wire id
    /// and action.
    fn note_try(&mut self, i: usize) -> (u32, gramgrid_core::policy::RelayAction) {
        let p = &mut self.commands[i];
        p.tries += 1;
        p.next_try = Instant::now() + COMMAND_RETRY;
        let tried = (p.wire_id, p.request.action);
        if p.tries >= COMMAND_TRIES {
            tracing::warn!(meter = p.request.meter, command = %p.request.command_id, "relay command unconfirmed after {COMMAND_TRIES} tries; the gateway's retry policy takes over");
            self.commands.swap_remove(i);
        }
        tried
    }

    /// Listens for the reply of `meter` to the downlink just sent at `sf`.
    async fn reply_from<R: Radio>(
        &mut self,
        radio: &mut R,
        meter: i64,
        sf: u8,
    ) -> Result<Option<Reply>, LinkError> {
        let deadline = Instant::now()
            + REPLY_DELAY
            + scheduler::airtime(sf, scheduler::max_reply_len(sf))
            + REPLY_GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match radio.receive(left).await {
                Ok(frame) => {
                    if let Some((from, heard)) = self.on_uplink(&frame) {
                        if from == meter {
                            return Ok(Some(Reply {
                                heard,
                                rssi_dbm: frame.rssi_dbm,
                                snr_db: frame.snr_db,
                            }));
                        }
                    }
                }
                Err(RadioError::Timeout(_)) => return Ok(None),
                Err(RadioError::Crc { .. } | RadioError::Header) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Seals, commits the downlink counter, and transmits at `sf`, unless the transmission would end
    /// after `not_after` on the link clock (checked last, just before transmitting).
    async fn send<R: Radio>(
        &mut self,
        radio: &mut R,
        meter: i64,
        sf: u8,
        message: &OutMessage,
        not_after: Option<DateTime<Utc>>,
    ) -> Result<Sent, LinkError> {
        let (fcnt, phy) = match self.sessions.seal_downlink(meter, sf, message) {
            Ok(sealed) => sealed,
            Err(error) => {
                tracing::error!(%error, "downlink not sent");
                return Ok(Sent::Unsealed);
            }
        };
        self.backend.commit_fcnt(meter, Fcnt::Down, fcnt)?;
        self.sessions.sent_down(meter, fcnt);
        let config = RadioConfig {
            spreading_factor: sf,
            ..self.radio
        };
        radio.configure(config).await?;
        if let Some(deadline) = not_after {
            let airtime = toa::time_on_air(&config.modulation(true), phy.len()) + TX_START_GUARD;
            let ends = self
                .clock
                .now()
                .checked_add_signed(chrono::Duration::from_std(airtime).unwrap_or_default());
            if ends.is_none_or(|ends| ends > deadline) {
                return Ok(Sent::TooLate);
            }
        }
        let airtime = radio.transmit(&phy).await?;
        self.stats_mut(|s| {
            s.downlinks += 1;
            s.downlink_airtime += airtime;
        });
        Ok(Sent::Transmitted)
    }

    /// Handles every request already waiting on the channel, without blocking.
    fn take_requests(&mut self, requests: &mut mpsc::UnboundedReceiver<LinkRequest>) {
        while let Ok(request) = requests.try_recv() {
            self.handle(request);
        }
    }

    fn handle(&mut self, request: LinkRequest) {
        match request {
            LinkRequest::Send(request) => self.queue_command(request),
            LinkRequest::Withdraw { meter, command_id } => {
                if self.remove_command(meter, &command_id) {
                    tracing::info!(meter, command = %command_id, "relay command withdrawn by the gateway; dropped");
                }
            }
            LinkRequest::ClockTrusted(trusted) => self.clock_trusted = trusted,
            // DLMS meters are not sent display updates (no such object in section 7's subset).
            LinkRequest::Display { meter, .. } if self.dlms.contains_key(&meter) => {}
            LinkRequest::Display { meter, update } => {
                self.scheduler.show(meter, update, self.clock.now())
            }
            LinkRequest::Reload => {
                let before = self.scheduler.len();
                match self.load_sessions(|_| scheduler::RENDEZVOUS_SF) {
                    Ok(()) => tracing::info!(
                        before,
                        meters = self.scheduler.len(),
                        "meter sessions reloaded"
                    ),
                    Err(error) => {
                        tracing::error!(%error, "cannot reload meter sessions; keeping the ones loaded")
                    }
                }
            }
        }
    }

    /// Drops a command that was not transmitted because it would have ended after its deadline.
    fn drop_late(&mut self, request: &RelayRequest) {
        self.remove_command(request.meter, &request.command_id);
        tracing::info!(meter = request.meter, command = %request.command_id, not_after = ?request.not_after, "relay command not transmitted: it would end after its deadline; dropped, the gateway decides again");
    }

    /// Removes a waiting command; false if it was not waiting.
    fn remove_command(&mut self, meter: i64, command_id: &str) -> bool {
        let waiting = self.commands.len();
        self.commands
            .retain(|p| !(p.request.meter == meter && p.request.command_id == command_id));
        self.commands.len() < waiting
    }

    fn queue_command(&mut self, request: RelayRequest) {
        if !self.sessions.contains(request.meter) {
            tracing::warn!(meter = request.meter, command = %request.command_id, "relay command for a meter without session keys; it waits in the store");
            return;
        }
        if let Some(p) = self
            .commands
            .iter_mut()
            .find(|p| p.request.meter == request.meter)
        {
            if p.request.command_id == request.command_id {
                // The gateway's own retry: keep this link's tries, take its deadline.
                p.request.not_after = request.not_after;
            } else {
                // A newer decision for the same meter supersedes the old one.
                *p = pending(request);
            }
            return;
        }
        self.commands.push(pending(request));
    }

    fn next_command(&self, now: Instant) -> Option<usize> {
        self.commands
            .iter()
            .enumerate()
            .filter(|(_, p)| p.next_try <= now)
            .min_by_key(|(_, p)| p.next_try)
            .map(|(i, _)| i)
    }

    fn next_wake(&self) -> Instant {
        let commands = self.commands.iter().map(|p| p.next_try).min();
        let scheduled = self.scheduler.next_due().map(|d| self.clock.instant_of(d));
        [commands, scheduled]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + RELOAD_EVERY)
    }

    fn timing_period_ms(&self) -> u128 {
        self.scheduler.period().as_millis()
    }

    fn log_summary(&self) {
        let stats = super::read_stats(&self.stats);
        tracing::info!(
            downlinks = stats.downlinks,
            uplinks = stats.uplinks,
            silences = stats.silences,
            readings = stats.readings,
            rejected = stats.rejects.total(),
            unresponsive_meters = self.scheduler.unresponsive().count(),
            "meter link summary"
        );
        for (reason, n) in stats.rejects.iter().filter(|(_, n)| *n > 0) {
            tracing::info!(reason = reason.as_str(), count = n, "uplinks rejected");
        }
    }

    /// Counts a turn the addressed meter did not answer.
    fn note_silence(&self, meter: i64, sf: u8, at: DateTime<Utc>) {
        self.stats_mut(|s| {
            s.silences += 1;
            s.meters.entry(meter).or_default().note_silent(at, sf);
        });
    }

    fn stats_mut(&self, f: impl FnOnce(&mut super::LinkStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Marks the loop alive for the watchdog.
    fn note_turn(&self) {
        self.stats_mut(|s| s.last_turn = Some(std::time::Instant::now()));
    }
}

fn pending(request: RelayRequest) -> Pending {
    let now = Instant::now();
    Pending {
        wire_id: wire_command_id(&request.command_id),
        request,
        queued: now,
        next_try: now,
        tries: 0,
    }
}

/// The 32-bit id a command travels under: a stable hash of its id, so a re-sent command (even after
/// a gateway restart) has the same id and the meter does not act twice. Never 0 (local operation).
pub fn wire_command_id(command_id: &str) -> u32 {
    let h = command_id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h.max(1)
}

/// The first whole second at or after `t`.
fn whole_second_after(t: DateTime<Utc>) -> DateTime<Utc> {
    let second = t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0);
    DateTime::from_timestamp(second, 0).unwrap_or(t)
}

fn align_down(t: DateTime<Utc>) -> DateTime<Utc> {
    let step = i64::from(gramgrid_proto::payload::INTERVAL_SECS);
    DateTime::from_timestamp(t.timestamp().div_euclid(step) * step, 0).unwrap_or(t)
}
