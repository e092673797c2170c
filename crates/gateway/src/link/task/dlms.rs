//! A DLMS/COSEM meter's turns on the scheduled link (docs/dlms.md section 7): polls become range
//! reads of the block load profile (in blocks where one frame cannot carry a row), relay commands
//! become remote_disconnect / remote_reconnect actions confirmed by a read of the disconnect
//! control's `control_state`, and clock sets become a SET of the clock.
//!
//! Both invocation counters are committed before they count: the gateway's before each request is
//! sent, the meter's before its answer is acted upon.

use super::{Heard, Link, OutMessage, Reply, Sent, Turn};
use crate::link::frames;
use crate::link::scheduler::Errand;
use crate::link::{LinkBackend, LinkError};
use crate::store::{DlmsIc, LinkSession};
use chrono::{DateTime, Utc};
use gramgrid_proto::dlms::client::{rows_that_fit, Answer, DlmsClient, RequestError};
use gramgrid_proto::frame::in865_max_frm_payload;
use gramgrid_proto::payload::{IntervalReading, INTERVAL_SECS};
use gramgrid_radio::Radio;
use std::time::Duration;
use tokio::time::Instant;

/// A DLMS meter's clock and power events log are read after a poll this often (a v1 meter
/// reports both in every reply), and its power events log also after it missed a turn.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(6 * 3600);
/// How far back a meter's power events log is read the first time.
const FIRST_EVENTS_LOOKBACK: chrono::Duration = chrono::Duration::days(1);
/// A power events read reaches this far past the gateway's clock (meter clocks run ahead too).
const EVENTS_AHEAD: chrono::Duration = chrono::Duration::hours(1);
/// A lost block is asked for again this many times within the turn before the read is abandoned.
const BLOCK_RETRIES: u32 = 2;
/// A range whose last capture time is this far past is complete: rows missing from it were never
/// captured (the meter was dark), and the next read starts after it. Covers meter clock skew.
const RANGE_SETTLED: chrono::Duration = chrono::Duration::minutes(5);

/// The slowest SF whose downlink carries a load-profile read: SF9 carries 115 bytes, SF10 to
/// SF12 carry 51, and the read is 91 (docs/dlms.md section 7, "Requests are the limit").
pub(super) const SLOWEST_READABLE_SF: u8 = 9;

/// How a DLMS exchange (a request and its blocks) ended.
enum Exchanged {
    /// Not transmitted: it would have ended after its deadline.
    TooLate,
    /// Not transmitted: it could not be built or sealed (logged).
    NotSent,
    /// No (acceptable) answer in time.
    Silent,
    /// The meter answered; the signal (RSSI, SNR) of its last frame.
    Answered(Answer, (i16, i16)),
}

impl<B: LinkBackend> Link<B> {
    /// Makes the DLMS clients those stored: a new or re-keyed meter gets a client restored from
    /// its stored counters; an unchanged one keeps its client (its counters in memory are never
    /// behind the stored ones); a meter no longer DLMS loses it.
    pub(super) fn load_dlms(&mut self, stored: &[LinkSession]) {
        let dlms_meters: std::collections::HashSet<i64> = stored
            .iter()
            .filter(|s| s.dlms.is_some())
            .map(|s| s.meter)
            .collect();
        self.dlms.retain(|meter, _| dlms_meters.contains(meter));
        for s in stored {
            let Some(association) = &s.dlms else { continue };
            let security = &association.security;
            let unchanged = self.dlms.get(&s.meter).is_some_and(|c| {
                c.meter_system_title() == security.system_title
                    && c.gateway_system_title() == self.gateway_title
                    && c.keys() == &security.keys
            });
            if !unchanged {
                self.dlms.insert(
                    s.meter,
                    DlmsClient::restore(
                        security.keys.clone(),
                        security.system_title,
                        self.gateway_title,
                        association.gateway_next_ic.unwrap_or(1),
                        association.meter_last_ic,
                    ),
                );
            }
        }
    }

    /// Opens a DLMS frame from `meter` with its client and acts on it: readings stored, a relay
    /// state noted (confirming a command that wanted it). Refused frames are counted.
    pub(super) fn on_dlms(&mut self, meter: i64, apdu: &[u8]) -> Option<Answer> {
        let Some(client) = self.dlms.get_mut(&meter) else {
            self.count_reject(gramgrid_proto::security::RejectReason::BadPayload);
            tracing::warn!(
                meter,
                "DLMS frame from a meter provisioned for payload v1; ignored"
            );
            return None;
        };
        let before = client.last_meter_ic();
        let opened = client.on_uplink(apdu);
        let after = client.last_meter_ic();
        if let Some(ic) = after.filter(|_| after != before) {
            if let Err(error) = self.backend.commit_dlms_ic(meter, DlmsIc::MeterLast, ic) {
                tracing::error!(%error, meter, "cannot persist the meter's DLMS invocation counter; frame not acted upon");
                return None;
            }
        }
        let answer = match opened {
            Ok(answer) => answer,
            Err(error) => {
                if let Some(reason) = error.reject_reason() {
                    self.count_reject(reason);
                }
                tracing::warn!(%error, meter, "DLMS frame refused");
                return None;
            }
        };
        let at = self.clock.now();
        Some(match answer {
            Answer::Intervals(rows) => Answer::Intervals(self.store_rows(meter, rows)),
            Answer::Pushed(rows) => Answer::Pushed(self.store_rows(meter, rows)),
            Answer::PowerEvents(events) => {
                if !events.is_empty() {
                    if let Err(error) = self.backend.events(meter, &events, at) {
                        tracing::error!(%error, meter, "meter events heard but not stored");
                        return None;
                    }
                }
                Answer::PowerEvents(events)
            }
            Answer::RelayState(shown) => {
                let state = frames::relay_state(shown);
                let confirmed = self.commands.iter().position(|p| {
                    p.request.meter == meter && frames::state_after(p.request.action) == state
                });
                if let Some(i) = confirmed {
                    self.command_done(i, Instant::now());
                }
                self.note_relay_state(meter, state, confirmed.is_some(), at);
                Answer::RelayState(shown)
            }
            other => other,
        })
    }

    /// Stores profile rows as readings; returns them, or none if they could not be stored (so
    /// they are not counted as fetched and are read again).
    fn store_rows(&mut self, meter: i64, rows: Vec<IntervalReading>) -> Vec<IntervalReading> {
        let readings = frames::interval_readings(meter, &rows);
        if self.store_readings(meter, &readings) {
            rows
        } else {
            Vec::new()
        }
    }

    /// A scheduled turn of a DLMS meter: a range read, or a clock set (a display update has no
    /// DLMS object here and is dropped).
    pub(super) async fn dlms_turn<R: Radio>(
        &mut self,
        radio: &mut R,
        turn: Turn,
    ) -> Result<(), LinkError> {
        let (meter, sf) = (turn.meter, turn.sf);
        let request = match turn.errand {
            Errand::Poll { since } => self.poll_request(meter, sf, since),
            Errand::SetClock => {
                let utc = super::whole_second_after(self.clock.now());
                self.dlms_request(meter, |c| c.set_clock(utc))
            }
            Errand::Display(_) | Errand::Assign { .. } => None,
        };
        let Some(request) = request else {
            self.turn_not_sent(&turn);
            return Ok(());
        };
        match self.dlms_exchange(radio, meter, sf, request, None).await? {
            Exchanged::Answered(answer, signal) => {
                let since = match (&answer, turn.errand) {
                    (Answer::Intervals(rows), Errand::Poll { since }) => {
                        self.next_since(since, sf, rows)
                    }
                    _ => None,
                };
                self.end_turn(&turn, Some(signal), since);
                if matches!(answer, Answer::Intervals(_)) {
                    self.check_power_events(radio, meter, sf).await?;
                    self.check_clock(radio, meter, sf).await?;
                }
            }
            Exchanged::Silent => {
                self.dlms_missed.insert(meter);
                self.end_turn(&turn, None, None);
            }
            Exchanged::TooLate | Exchanged::NotSent => self.turn_not_sent(&turn),
        }
        Ok(())
    }

    /// A turn whose request could not go out (logged): done for this period, so that the meter
    /// is not offered the same turn again at once.
    fn turn_not_sent(&mut self, turn: &Turn) {
        let now = self.clock.now();
        self.scheduler.heard(turn, now, None, None);
    }

    /// A poll's request: the range read, or, where it does not fit a downlink at `sf` (a range
    /// read is 91 bytes ciphered and wrapped, an SF10 to SF12 downlink carries 51), a read of the
    /// disconnect control's `control_state`, which fits: the meter's answer still tells the
    /// scheduler its link margin, so a meter heard at the rendezvous SF is moved to a faster one.
    fn poll_request(&mut self, meter: i64, sf: u8, since: DateTime<Utc>) -> Option<Vec<u8>> {
        let max = in865_max_frm_payload(sf).unwrap_or(gramgrid_proto::frame::MIN_IN865_FRM_PAYLOAD);
        let read = self.dlms_request(meter, |c| c.read_intervals(since, rows_that_fit(max)))?;
        if read.len() <= max {
            return Some(read);
        }
        if self.dlms_unreadable.insert(meter) {
            tracing::warn!(meter, sf, len = read.len(), max, "a DLMS load-profile read does not fit a downlink at this SF: the meter is only pinged (control_state) until it reaches SF9 or faster (docs/dlms.md section 7)");
        }
        if let Some(client) = self.dlms.get_mut(&meter) {
            client.abandon();
        }
        self.dlms_request(meter, DlmsClient::read_relay_state)
    }

    /// Where the next read starts after a range read from `since` returned `rows`: after the
    /// newest row, and past the whole range once it has settled (its missing rows never were).
    fn next_since(
        &self,
        since: DateTime<Utc>,
        sf: u8,
        rows: &[IntervalReading],
    ) -> Option<DateTime<Utc>> {
        let asked = rows_that_fit(
            in865_max_frm_payload(sf).unwrap_or(gramgrid_proto::frame::MIN_IN865_FRM_PAYLOAD),
        );
        let range_end = since
            + chrono::Duration::seconds(i64::from(INTERVAL_SECS) * i64::try_from(asked).ok()?);
        let newest = rows.last().map(|r| frames::interval_end(r.interval_start));
        let settled = (range_end + RANGE_SETTLED <= self.clock.now()).then_some(range_end);
        newest.max(settled)
    }

    /// Reads the meter's clock if it has not been read for [`HOUSEKEEPING_EVERY`], and has it set
    /// in its next turn when it is off by more than [`crate::link::MAX_METER_CLOCK_SKEW`].
    async fn check_clock<R: Radio>(
        &mut self,
        radio: &mut R,
        meter: i64,
        sf: u8,
    ) -> Result<(), LinkError> {
        let due = self
            .dlms_clock_read
            .get(&meter)
            .is_none_or(|at| at.elapsed() >= HOUSEKEEPING_EVERY);
        if !self.clock_trusted || !due {
            return Ok(());
        }
        let Some(request) = self.dlms_request(meter, DlmsClient::read_clock) else {
            return Ok(());
        };
        if let Exchanged::Answered(Answer::Clock(meter_time), _) =
            self.dlms_exchange(radio, meter, sf, request, None).await?
        {
            self.dlms_clock_read.insert(meter, Instant::now());
            let now = self.clock.now();
            let skew = meter_time - now;
            if skew.abs() > crate::link::MAX_METER_CLOCK_SKEW {
                tracing::info!(
                    meter,
                    skew_s = skew.num_seconds(),
                    "DLMS meter clock off; setting it in its next turn"
                );
                self.scheduler.set_clock(meter, now);
            }
        }
        Ok(())
    }

    /// Reads the meter's power events log (failures and restorations, which the gateway's outage
    /// records come from) after it missed a turn, or every [`HOUSEKEEPING_EVERY`]: from where
    /// the last read ended (a little before, the store keeps each event once).
    async fn check_power_events<R: Radio>(
        &mut self,
        radio: &mut R,
        meter: i64,
        sf: u8,
    ) -> Result<(), LinkError> {
        let now = self.clock.now();
        let last = self.dlms_events_read.get(&meter).copied();
        let due = self.dlms_missed.contains(&meter)
            || last.is_none_or(|at| {
                at + chrono::Duration::from_std(HOUSEKEEPING_EVERY).unwrap_or_default() <= now
            });
        if !due {
            return Ok(());
        }
        let from = last.unwrap_or(now - FIRST_EVENTS_LOOKBACK) - RANGE_SETTLED;
        let Some(request) =
            self.dlms_request(meter, |c| c.read_power_events(from, now + EVENTS_AHEAD))
        else {
            return Ok(());
        };
        if let Exchanged::Answered(Answer::PowerEvents(_), _) =
            self.dlms_exchange(radio, meter, sf, request, None).await?
        {
            self.dlms_events_read.insert(meter, now);
            self.dlms_missed.remove(&meter);
        }
        Ok(())
    }

    /// Carries relay command `i` to a DLMS meter: the disconnect control's method, then a read of
    /// its `control_state`, which confirms the command when it shows the commanded state.
    pub(super) async fn dlms_command_turn<R: Radio>(
        &mut self,
        radio: &mut R,
        i: usize,
        sf: u8,
    ) -> Result<(), LinkError> {
        let request = self.commands[i].request.clone();
        let meter = request.meter;
        let (_, action) = self.note_try(i);
        let wire_action = frames::relay_action(action);
        let Some(frame) = self.dlms_request(meter, |c| c.relay(wire_action)) else {
            return Ok(());
        };
        match self
            .dlms_exchange(radio, meter, sf, frame, request.not_after)
            .await?
        {
            Exchanged::TooLate => self.drop_late(&request),
            Exchanged::Silent => {
                self.dlms_missed.insert(meter);
                self.note_silence(meter, sf, self.clock.now());
            }
            Exchanged::NotSent => {}
            Exchanged::Answered(answer, _) => {
                if let Answer::RelayActionDone {
                    accepted: false, ..
                } = answer
                {
                    tracing::warn!(meter, command = %request.command_id, "DLMS meter refused the relay action; reading its state, then trying again");
                }
                let Some(read) = self.dlms_request(meter, DlmsClient::read_relay_state) else {
                    return Ok(());
                };
                if let Exchanged::Silent = self.dlms_exchange(radio, meter, sf, read, None).await? {
                    self.note_silence(meter, sf, self.clock.now());
                }
            }
        }
        Ok(())
    }

    /// Builds a request with `meter`'s DLMS client; None (logged) if it cannot be built.
    fn dlms_request(
        &mut self,
        meter: i64,
        build: impl FnOnce(&mut DlmsClient) -> Result<Vec<u8>, RequestError>,
    ) -> Option<Vec<u8>> {
        let client = self.dlms.get_mut(&meter)?;
        match build(client) {
            Ok(frame) => Some(frame),
            Err(error) => {
                tracing::error!(%error, meter, "DLMS request not built");
                None
            }
        }
    }

    /// Sends `request` (its invocation counter committed first) and follows its blocks until the
    /// meter's answer is complete; a lost block is asked for again up to [`BLOCK_RETRIES`] times.
    async fn dlms_exchange<R: Radio>(
        &mut self,
        radio: &mut R,
        meter: i64,
        sf: u8,
        mut request: Vec<u8>,
        not_after: Option<DateTime<Utc>>,
    ) -> Result<Exchanged, LinkError> {
        let (mut first, mut retries) = (true, 0);
        loop {
            let Some(next_ic) = self.dlms.get(&meter).map(DlmsClient::next_ic) else {
                return Ok(Exchanged::NotSent);
            };
            self.backend
                .commit_dlms_ic(meter, DlmsIc::GatewayNext, next_ic)?;
            // Only the first frame carries the command's deadline: once the meter has it, its
            // blocks and reads are not the command.
            let deadline = if first { not_after } else { None };
            first = false;
            match self
                .send(radio, meter, sf, &OutMessage::Dlms(request), deadline)
                .await?
            {
                Sent::TooLate => return Ok(Exchanged::TooLate),
                Sent::Unsealed => return Ok(Exchanged::NotSent),
                Sent::Transmitted => {}
            }
            let reply = self.reply_from(radio, meter, sf).await?;
            let Some(client) = self.dlms.get_mut(&meter) else {
                return Ok(Exchanged::NotSent);
            };
            match reply {
                Some(Reply {
                    heard: Heard::Dlms(Answer::NextBlock(next)),
                    ..
                }) => request = next,
                Some(Reply {
                    heard: Heard::Dlms(answer),
                    rssi_dbm,
                    snr_db,
                }) => return Ok(Exchanged::Answered(answer, (rssi_dbm, snr_db))),
                // A v1 report (the answer to an earlier ScheduleAssign) is no DLMS answer.
                Some(_) | None => {
                    if client.block_in_progress().is_some() && retries < BLOCK_RETRIES {
                        retries += 1;
                        match client.next_block() {
                            Ok(again) => {
                                request = again;
                                continue;
                            }
                            Err(error) => {
                                tracing::error!(%error, meter, "DLMS block not asked again")
                            }
                        }
                    }
                    client.abandon();
                    return Ok(Exchanged::Silent);
                }
            }
        }
    }
}
