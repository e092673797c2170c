//! Meter events as they arrive: stored and sent to central, tampers logged for the technician, and
//! the supply outages found again in the power events (`gramgrid_core::outage`).
use super::Gateway;
use crate::store::{StoreError, StoredMeterEvent, SupplyOutage};
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::outage::{self, OutageSpan};
use gramgrid_proto::payload::MeterEvent;
use std::collections::BTreeSet;

/// How far back power events are read to find outages: a meter unheard for longer reports its
/// failure too late to change a decision.
const OUTAGE_LOOKBACK_DAYS: i64 = 7;

impl Gateway {
    /// Stores the events a meter reported (each once) and queues them for central. Power events
    /// make the gateway look for outages again. Returns the events that were new.
    pub fn on_meter_events(
        &mut self,
        meter: i64,
        events: &[MeterEvent],
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredMeterEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let new = self.store.record_meter_events(meter, events, now)?;
        for event in new.iter().filter(|e| e.is_tamper()) {
            tracing::warn!(meter, kind = %event.kind, at = %event.at, "meter reported a tamper");
        }
        if new
            .iter()
            .any(|e| e.kind == "power_fail" || e.kind == "power_restore")
        {
            self.refresh_outages(now)?;
        }
        Ok(new)
    }

    /// Finds the outages in the last week's power events and stores the new or changed ones. An
    /// outage keeps the id it was first stored with while later events move its start or end.
    pub fn refresh_outages(&mut self, now: DateTime<Utc>) -> Result<Vec<SupplyOutage>, StoreError> {
        let since = now - Duration::days(OUTAGE_LOOKBACK_DAYS);
        let power = self.store.power_events_since(since)?;
        let events: Vec<(i64, DateTime<Utc>, bool)> = power
            .iter()
            .map(|e| (e.meter, e.at, e.kind == "power_fail"))
            .collect();
        let spans = outage::dark_spans(&events);
        let found = outage::detect(&spans, self.store.meters_in_service(), &self.config.outage);
        let stored = self.store.outages_since(since)?;
        let mut changed = Vec::new();
        for outage in found {
            let mut meters = outage
                .meters
                .iter()
                .map(|m| self.store.meter_serial(*m))
                .collect::<Result<Vec<_>, _>>()?;
            meters.sort();
            let id = stored
                .iter()
                .find(|s| overlaps(s, outage.started_at, outage.ended_at))
                .map(|s| s.id.clone())
                .unwrap_or_else(|| {
                    format!(
                        "outage-{}-{}",
                        self.config.gateway.id,
                        outage.started_at.timestamp()
                    )
                });
            let outage = SupplyOutage {
                id,
                started_at: outage.started_at,
                ended_at: outage.ended_at,
                meters,
            };
            if self.store.put_outage(&outage)? {
                tracing::warn!(
                    id = %outage.id,
                    started_at = %outage.started_at,
                    ended_at = ?outage.ended_at,
                    meters = outage.meters.len(),
                    "supply outage on the transformer or feeder"
                );
                changed.push(outage);
            }
        }
        Ok(changed)
    }

    /// An outage going on as the radio sees it at `now`: enough meters silent together
    /// (`gramgrid_core::outage::suspected`). Logged when first seen. When the meters answer again
    /// it is recorded as an outage up to `now`, unless their power events told of it already, so
    /// its hours count for every household even when meters report no power events.
    pub(super) fn suspected_outage(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Option<OutageSpan>, StoreError> {
        let silent = self
            .link
            .as_ref()
            .map(|link| link.silent_since())
            .unwrap_or_default();
        let starts: Vec<DateTime<Utc>> = silent.values().copied().collect();
        let dark = outage::suspected(&starts, self.store.meters_in_service(), &self.config.outage);
        match (dark, self.dark.take()) {
            (Some(span), None) => {
                tracing::warn!(
                    silent = silent.len(),
                    since = %span.start,
                    "many meters stopped answering together: a supply outage is taken to be going on; no disconnect is sent until they answer"
                );
                self.dark = Some((span, silent.into_keys().collect()));
            }
            (Some(span), Some((_, mut meters))) => {
                meters.extend(silent.into_keys());
                self.dark = Some((span, meters));
            }
            (None, Some((span, meters))) => self.record_silent_outage(span.start, now, meters)?,
            (None, None) => {}
        }
        Ok(dark)
    }

    /// Records the outage the meters' silence showed from `start` to `now`, unless one on record
    /// (from their power events) overlaps it.
    fn record_silent_outage(
        &mut self,
        start: DateTime<Utc>,
        now: DateTime<Utc>,
        meters: BTreeSet<i64>,
    ) -> Result<(), StoreError> {
        if self
            .store
            .outages_since(start)?
            .iter()
            .any(|stored| overlaps(stored, start, Some(now)))
        {
            return Ok(());
        }
        let mut serials = meters
            .iter()
            .map(|m| self.store.meter_serial(*m))
            .collect::<Result<Vec<_>, _>>()?;
        serials.sort();
        let outage = SupplyOutage {
            id: format!("outage-{}-{}", self.config.gateway.id, start.timestamp()),
            started_at: start,
            ended_at: Some(now),
            meters: serials,
        };
        tracing::warn!(id = %outage.id, started_at = %start, ended_at = %now, meters = outage.meters.len(),
            "meters answer again after a supply outage seen in their silence; recorded");
        self.store.put_outage(&outage)?;
        Ok(())
    }

    /// The outages the policy must allow for from `since` on (going on, or ended after it).
    pub(super) fn outage_spans(&self, since: DateTime<Utc>) -> Result<Vec<OutageSpan>, StoreError> {
        Ok(self
            .store
            .outages_since(since)?
            .iter()
            .map(|o| OutageSpan {
                start: o.started_at,
                end: o.ended_at,
            })
            .collect())
    }
}

/// Whether a stored outage and a found one share any time (an open end runs on for ever).
fn overlaps(
    stored: &SupplyOutage,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
) -> bool {
    let before_end = ended_at.is_none_or(|end| stored.started_at <= end);
    let after_start = stored.ended_at.is_none_or(|end| end >= started_at);
    before_end && after_start
}
