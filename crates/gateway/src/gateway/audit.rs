//! The transformer's energy audit: two hours after each local day ends, each transformer meter's
//! energy is compared with what its consumers' meters recorded (`gramgrid_core::audit`, `[audit]`),
//! and the day is recorded once and sent to central (docs/energy-audit.md).
use super::Gateway;
use crate::store::{ConsumerFacts, StoreError, TransformerMeter};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use gramgrid_core::audit::{self, ConsumerDay, DayAudit, INTERVALS_PER_DAY};
use gramgrid_core::civil;
use gramgrid_core::tariff::INTERVAL_SECS;
use gramgrid_proto::wire::{AuditSuspect, EnergyAuditDay};

/// How long after a day ends its audit waits, so the day's last readings (a transformer meter
/// logs an interval once it has closed, a poll may be missed) have arrived.
pub const AUDIT_DELAY: Duration = Duration::hours(2);
/// Days looked back: after a restart or a long stop, the days missed are audited too.
const LOOKBACK_DAYS: i64 = 7;
/// Earlier days whose mean is a meter's usual day.
const USUAL_DAYS: i64 = 7;

impl Gateway {
    /// Audits every day of every transformer meter that is due and not on record, and again a
    /// day late readings of which arrived since the last pass; returns how many days were
    /// recorded (new, or changed by the late readings).
    pub(super) fn audit_transformers(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut recorded = 0;
        let late_from = self.store.take_stored_since_audit();
        for transformer in self.store.transformer_meters()? {
            let last_due = civil::local_date(now - AUDIT_DELAY) - Duration::days(1);
            let first = civil::local_date(transformer.installed_at)
                .max(last_due - Duration::days(LOOKBACK_DAYS - 1));
            for day in first.iter_days().take_while(|day| *day <= last_due) {
                let id = format!(
                    "{}:audit:{}:{day}",
                    self.config.gateway.id, transformer.serial
                );
                let day_end = civil::start_of_local_day(day) + Duration::days(1);
                let late = late_from.is_some_and(|from| from <= day_end);
                if !late && self.store.energy_audit(&id)?.is_some() {
                    continue;
                }
                let audit = self.audit_day(&transformer, day, id, now)?;
                if audit.flagged {
                    tracing::warn!(transformer = %transformer.serial, %day,
                        loss_wh = audit.transformer_wh - audit.consumers_wh,
                        suspects = audit.suspects.len(),
                        "the transformer lost more than its allowance; flagged for the office");
                }
                if self.store.record_energy_audit(transformer.id, &audit)? {
                    recorded += 1;
                }
            }
        }
        Ok(recorded)
    }

    fn audit_day(
        &self,
        transformer: &TransformerMeter,
        day: NaiveDate,
        id: String,
        now: DateTime<Utc>,
    ) -> Result<EnergyAuditDay, StoreError> {
        let start = civil::start_of_local_day(day);
        let end = start + Duration::days(1);
        // Readings a little beyond the day let a gap across midnight be spread over its intervals.
        let margin = Duration::seconds(audit::MAX_SPREAD_SECS);
        let inputs = self.store.audit_inputs(
            transformer.id,
            (start, end),
            (start - Duration::days(USUAL_DAYS) - margin, end + margin),
        )?;
        let mut delivered = audit::interval_energy(&inputs.transformer, start, INTERVALS_PER_DAY);
        // A supply outage is nobody's loss: its intervals are not compared, whatever a meter's
        // register did across it.
        for outage in self.store.outages_since(start)? {
            let outage_end = outage.ended_at.unwrap_or(end);
            for (k, wh) in delivered.iter_mut().enumerate() {
                let from = start + Duration::seconds(INTERVAL_SECS * k as i64);
                let to = from + Duration::seconds(INTERVAL_SECS);
                if from < outage_end && outage.started_at < to {
                    *wh = None;
                }
            }
        }
        let consumers: Vec<ConsumerDay<usize>> = inputs
            .consumers
            .iter()
            .enumerate()
            .map(|(index, facts)| consumer_day(index, facts, start))
            .collect();
        let result = audit::audit_day(&self.config.audit, &delivered, &consumers);
        Ok(wire_audit(
            id,
            transformer,
            day,
            &result,
            &inputs.consumers,
            now,
        ))
    }
}

/// A consumer meter's day: its energy in each interval (nothing in the intervals it was not in
/// service), and its usual day over the days before.
fn consumer_day(index: usize, facts: &ConsumerFacts, start: DateTime<Utc>) -> ConsumerDay<usize> {
    let mut energy = audit::interval_energy(&facts.readings, start, INTERVALS_PER_DAY);
    let mut exported = audit::interval_export(&facts.readings, start, INTERVALS_PER_DAY);
    for (k, (wh, out)) in energy.iter_mut().zip(&mut exported).enumerate() {
        let from = start + Duration::seconds(INTERVAL_SECS * k as i64);
        let to = from + Duration::seconds(INTERVAL_SECS);
        if to <= facts.installed_at || facts.removed_at.is_some_and(|removed| from >= removed) {
            (*wh, *out) = (Some(0), Some(0));
        }
    }
    let earlier: Vec<Vec<Option<i64>>> = (1..=USUAL_DAYS)
        .map(|back| {
            audit::interval_energy(
                &facts.readings,
                start - Duration::days(back),
                INTERVALS_PER_DAY,
            )
        })
        .collect();
    let usual = audit::usual_day(&earlier);
    ConsumerDay {
        meter: index,
        energy,
        exported,
        usual: usual.iter().any(Option::is_some).then_some(usual),
        connected: facts.connected,
        tamper_kinds: facts.tamper_kinds.clone(),
    }
}

fn wire_audit(
    id: String,
    transformer: &TransformerMeter,
    day: NaiveDate,
    result: &DayAudit<usize>,
    consumers: &[ConsumerFacts],
    now: DateTime<Utc>,
) -> EnergyAuditDay {
    EnergyAuditDay {
        id,
        transformer: transformer.serial.clone(),
        day: day.to_string(),
        intervals_compared: u32::try_from(result.intervals_compared).unwrap_or(u32::MAX),
        meters: u32::try_from(consumers.len()).unwrap_or(u32::MAX),
        transformer_wh: result.transformer_wh,
        consumers_wh: result.consumers_wh,
        allowance_wh: result.allowance_wh,
        flagged: result.flagged,
        interval_loss_wh: result.interval_loss.clone(),
        suspects: result
            .suspects
            .iter()
            .filter_map(|suspect| {
                let facts = consumers.get(suspect.meter)?;
                Some(AuditSuspect {
                    meter: facts.serial.clone(),
                    account: facts.account.clone(),
                    score: suspect.score,
                    reasons: suspect.evidence.clone(),
                })
            })
            .collect(),
        at: now,
    }
}
