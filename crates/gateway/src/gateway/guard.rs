//! The disconnection breaker in the policy pass: the disconnects a pass decided are judged together
//! (`gramgrid_core::breaker::admit`); held ones are stored as a hold for a supervisor to release.
use super::{Gateway, PassReport};
use crate::store::{HeldPass, StoreError};
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::breaker::{self, PassFacts, Trip, BASELINE_DAYS};
use gramgrid_core::civil;
use gramgrid_core::decision::{BreakerHold, DecisionRecord};
use std::collections::BTreeSet;

/// A relay command the policy decided, not yet queued.
pub(super) struct PlannedCommand {
    /// The command's id.
    pub id: String,
    /// The meter commanded.
    pub meter: i64,
    /// The reason stored with the command.
    pub reason: String,
    /// The decision's record.
    pub record: DecisionRecord,
}

impl Gateway {
    /// Queues the disconnects the breaker admits and holds the rest.
    pub(super) fn guard_cuts(
        &mut self,
        cuts: Vec<PlannedCommand>,
        now: DateTime<Utc>,
        clock_trusted: bool,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        // A release serves the next pass only, whatever that pass wants: never a standing switch.
        let release = self.store.unused_release()?;
        if let Some(release) = &release {
            self.store.use_release(&release.hold_id, now)?;
        }
        if cuts.is_empty() {
            return Ok(());
        }
        let facts = self.pass_facts(report.accounts, now, clock_trusted)?;
        let wanted: Vec<String> = cuts.iter().map(|c| c.record.account.clone()).collect();
        let admission = breaker::admit(
            &self.config.policy.breaker,
            &facts,
            &wanted,
            release.as_ref(),
            now,
        );
        if let Some(release) = release.filter(|_| admission.release_used) {
            tracing::warn!(hold = %release.hold_id, "disconnections of a released breaker hold go ahead");
        }
        let admitted: BTreeSet<&String> = admission.admitted.iter().collect();
        let (go, held): (Vec<PlannedCommand>, Vec<PlannedCommand>) = cuts
            .into_iter()
            .partition(|c| admitted.contains(&c.record.account));
        for command in &go {
            self.queue(command, report)?;
        }
        if !held.is_empty() {
            report.disconnects_breaker_held += held.len();
            self.hold(held, &admission.trips, now)?;
        }
        Ok(())
    }

    /// What the breaker judges a pass by.
    fn pass_facts(
        &mut self,
        accounts: usize,
        now: DateTime<Utc>,
        clock_trusted: bool,
    ) -> Result<PassFacts, StoreError> {
        let today = civil::local_date(now);
        let marks = self.store.guard_marks()?;
        // The baseline counts only days the gateway served accounts.
        let first_day = self
            .store
            .first_account_at()?
            .map(civil::local_date)
            .unwrap_or(today);
        let from = (today - Duration::days(BASELINE_DAYS)).max(first_day);
        let yesterday = today - Duration::days(1);
        let recent_days = if from <= yesterday {
            self.store.disconnects_per_day(from, yesterday)?
        } else {
            Vec::new()
        };
        Ok(PassFacts {
            accounts,
            disconnected_today: self
                .store
                .disconnects_per_day(today, today)?
                .first()
                .copied()
                .unwrap_or(0),
            recent_days,
            policy_changed_at: marks.policy_changed_at,
            tariff_changed_at: self.book.last_change(now),
            clock_trusted,
            clock_jumped_at: marks.clock_jumped_at,
            database_restored_at: marks.database_restored_at,
            last_sync_at: marks.last_sync_at,
            ledger_consistent: marks.ledger_inconsistent_at.is_none(),
        })
    }

    /// Stores a hold of these disconnects, unless today's open hold already holds them all. A new
    /// hold takes in the open one's accounts, so releasing the newest hold releases the day's.
    fn hold(
        &mut self,
        held: Vec<PlannedCommand>,
        trips: &[Trip],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut accounts: BTreeSet<String> =
            held.iter().map(|c| c.record.account.clone()).collect();
        let open =
            self.store.holds(1)?.into_iter().next().filter(|h| {
                h.released.is_none() && civil::local_date(h.at) == civil::local_date(now)
            });
        if let Some(open) = open {
            let open_accounts: BTreeSet<String> = open.accounts.into_iter().collect();
            if accounts.is_subset(&open_accounts) {
                return Ok(());
            }
            accounts.extend(open_accounts);
        }
        let id = format!("{}:hold:{}", self.config.gateway.id, now.timestamp());
        let reasons: Vec<String> = trips.iter().map(ToString::to_string).collect();
        tracing::warn!(
            hold = %id,
            accounts = accounts.len(),
            reasons = %reasons.join("; "),
            "disconnection breaker tripped: disconnections held until a supervisor releases them (gramgrid gateway release, or central's API)"
        );
        let decisions: Vec<(String, DecisionRecord)> = held
            .into_iter()
            .map(|command| {
                let mut record = command.record;
                record.breaker = Some(BreakerHold {
                    hold_id: id.clone(),
                    reasons: reasons.clone(),
                });
                (format!("{id}:{}", record.account), record)
            })
            .collect();
        self.store.record_hold(
            &HeldPass {
                id,
                at: now,
                accounts: accounts.into_iter().collect(),
                reasons,
                released: None,
                used_at: None,
            },
            &decisions,
        )
    }
}
