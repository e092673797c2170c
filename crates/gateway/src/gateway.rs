//! The village gateway daemon: opens the store and runs the policy loop on its schedule.
//!
//! Each pass, for every account with a meter in service: charge the fixed charge of each local day
//! not yet charged, top up last month's minimum charge, then let the policy decide alerts and relay
//! commands, and move open relay commands along their retry schedule. A disconnect the policy no
//! longer wants, or that may not be carried out now, is withdrawn, never re-sent. The disconnects a
//! pass decides go through the disconnection breaker (`guard`) before any is queued; every relay
//! command is stored with the record of the decision that made it. The radio (meter link) plugs in
//! through [`RelayLink`] and [`Gateway::ingest_readings`]; the sync client through the store.
mod audit;
mod display;
mod events;
mod guard;
mod load;

use crate::config::GatewayConfig;
use crate::store::{
    Account, Alert, IngestReport, LoadTripped, MeterReading, MeterSwap, RelayCommand, Store,
    StoreError, TechnicianAction,
};
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::civil::{self, Month};
use gramgrid_core::decision::{DecisionRecord, Outcome};
use gramgrid_core::demand::kilowatts;
use gramgrid_core::ledger::{self, EventKind, LedgerEvent};
use gramgrid_core::message::{Kind, Vars};
use gramgrid_core::netmeter;
use gramgrid_core::policy::{self, AccountFacts, Arrangement, RelayAction, RelayState};
use gramgrid_core::relay::{CommandState, Step};
use gramgrid_core::tariff::{rupees, TariffBook};
use gramgrid_proto::payload::DisplayUpdate;
use std::collections::HashMap;

/// Why the gateway could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The data directory (`gateway.data_dir`) could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory from the config.
        path: std::path::PathBuf,
        /// The I/O error from creating it.
        source: std::io::Error,
    },
    /// The config's `[[tariff]]` versions do not form a valid tariff book.
    #[error("the tariff book in the config is invalid: {0}")]
    Tariff(#[from] gramgrid_core::tariff::TariffError),
    /// The store failed: it could not be opened or migrated, or a query or write failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sends relay commands to meters. The meter link implements it; without one, commands wait queued.
pub trait RelayLink {
    /// Hands a command to the radio. A transmission that would end after `not_after` (a disconnect's
    /// window end) must not happen. An error means it could not be sent now; it is retried.
    fn send(
        &mut self,
        meter: i64,
        command_id: &str,
        action: RelayAction,
        not_after: Option<DateTime<Utc>>,
    ) -> Result<(), String>;
    /// Tells the radio that a command it was given is withdrawn: it must not be transmitted again.
    fn withdraw(&mut self, meter: i64, command_id: &str) -> Result<(), String>;
    /// Whether the radio can address `meter` now (it has the meter's session keys). A command for
    /// a meter it cannot reach stays queued in the store and is not counted as sent.
    fn can_reach(&self, _meter: i64) -> bool {
        true
    }
    /// Tells the radio that meters or their keys changed in the store (added, re-keyed, moved or
    /// removed by sync or commissioning), so it takes them up at once.
    fn meters_changed(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Tells the radio whether the gateway trusts its clock now: only then may it set meters'
    /// clocks to it.
    fn clock_trusted(&mut self, _trusted: bool) -> Result<(), String> {
        Ok(())
    }
    /// Shows a balance on a meter's display (in the meter's next turn).
    fn show(&mut self, _meter: i64, _update: DisplayUpdate) -> Result<(), String> {
        Ok(())
    }
    /// The meters that stopped answering the radio, and when each first missed its turn.
    fn silent_since(&self) -> HashMap<i64, DateTime<Utc>> {
        HashMap::new()
    }
}

/// What holds for every account of one policy pass.
struct PassFacts {
    now: DateTime<Utc>,
    clock_trusted: bool,
    /// A supply outage the radio sees going on (meters silent together), if any.
    dark: Option<gramgrid_core::outage::OutageSpan>,
}

/// What one policy pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Accounts with a meter in service that the pass looked at (others are skipped).
    pub accounts: usize,
    /// Fixed-charge events recorded (one per account and Asia/Kolkata day, never twice).
    pub fixed_charges: usize,
    /// Minimum-charge top-ups recorded for the previous month (at most one per account and month).
    pub minimum_charges: usize,
    /// Demand charges recorded (first pass of a month, tariffs with a demand charge).
    pub demand_charges: usize,
    /// Net metering's month-close credits recorded (first pass of a month: banked export used,
    /// or the bank settled in March).
    pub export_credits: usize,
    /// Months newly flagged for drawing more than the sanctioned load (first pass of a day).
    pub overloads: usize,
    /// Supply outages found or changed since the last pass, queued for central.
    pub outages_sent: usize,
    /// Days of transformer energy audit recorded and queued for central (two hours after a day).
    pub energy_audits: usize,
    /// Alerts newly enqueued (low balance, daily message); one already enqueued is not counted.
    pub alerts: usize,
    /// Relay commands the policy decided and queued in the store in this pass.
    pub commands_queued: usize,
    /// Relay commands handed to the meter link and marked sent (first sends and re-sends).
    pub commands_sent: usize,
    /// Commands due but waiting because the radio has no session keys for their meter yet.
    pub commands_waiting_for_keys: usize,
    /// Commands closed as timed out: sent `relay.max_attempts` times and never confirmed by the
    /// meter (an alert is raised).
    pub commands_timed_out: usize,
    /// Disconnects withdrawn before the meter confirmed them (recharged, window closed, ...).
    pub commands_withdrawn: usize,
    /// Disconnects that were due but held back (outside a window, holiday, grace, clock,
    /// protected account, partial payment).
    pub disconnects_held: usize,
    /// Disconnects the policy decided but the disconnection breaker held (see `breaker`).
    pub disconnects_breaker_held: usize,
}

/// A gateway: its config, tariff book and store.
pub struct Gateway {
    config: GatewayConfig,
    /// The published policy's version (None while the config file's policy is in force).
    policy_version: Option<u64>,
    book: TariffBook,
    store: Store,
    link: Option<Box<dyn RelayLink + Send>>,
    /// What each meter's display was last sent (kept in memory: after a restart each is sent once).
    shown: HashMap<i64, display::Shown>,
    /// The supply outage the radio saw going on at the last pass, with every meter silent in it
    /// (to log its start once and record it when the meters answer again).
    dark: Option<(
        gramgrid_core::outage::OutageSpan,
        std::collections::BTreeSet<i64>,
    )>,
    /// The local day whose sanctioned-load check has run, and the sanctioned loads it saw (in
    /// memory: a restart checks once more, and a month already flagged stays flagged once).
    loads_checked: Option<(chrono::NaiveDate, (i64, i64))>,
    /// Free bytes on the data directory's file system (None: not known).
    free_space: FreeSpace,
    /// Since when readings are left on the meters for want of disk space (in memory: after a
    /// restart the first shed batch is reported again).
    shedding_since: Option<DateTime<Utc>>,
}

/// Reads the free bytes on the data directory's file system.
pub type FreeSpace = Box<dyn Fn() -> Option<u64> + Send>;

const MIB: u64 = 1024 * 1024;

impl Gateway {
    /// Opens the gateway's store (creating the data directory if needed).
    pub fn open(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        let dir = &config.gateway.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| GatewayError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let book = config.tariff_book()?;
        let store = Store::open(&config.database_path())?;
        let data_dir = dir.clone();
        let free_space: FreeSpace =
            Box::new(move || crate::health::disk_space(&data_dir).map(|d| d.free));
        let mut gateway = Gateway {
            config,
            policy_version: None,
            book,
            store,
            link: None,
            shown: Default::default(),
            dark: None,
            loads_checked: None,
            free_space,
            shedding_since: None,
        };
        gateway.refresh_published()?;
        Ok(gateway)
    }

    /// Attaches the link that carries relay commands to meters.
    pub fn set_relay_link(&mut self, link: Box<dyn RelayLink + Send>) {
        self.link = Some(link);
    }

    /// The store, for the sync client, the technician service and reports.
    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Tells the meter link that meters or their keys changed in the store.
    pub fn meters_changed(&mut self) {
        if let Some(link) = self.link.as_mut() {
            if let Err(error) = link.meters_changed() {
                tracing::warn!(%error, "cannot tell the meter link about changed meters; it reloads them within 10 minutes");
            }
        }
    }

    /// Takes up tariff and policy versions published by the central server (they win over the config
    /// file; the config's apply until central has published any).
    pub fn refresh_published(&mut self) -> Result<(), StoreError> {
        let published = self.store.published_tariffs()?;
        if !published.is_empty() {
            match TariffBook::new(published) {
                Ok(book) => self.book = book,
                Err(error) => {
                    tracing::error!(%error, "central published an invalid tariff book; keeping the current one")
                }
            }
        }
        if let Some((version, policy)) = self.store.published_policy()? {
            self.config.policy = policy;
            self.policy_version = Some(version);
        }
        // A meter handed over from another gateway brings its history: rated here as late
        // readings with the book now in force, as central rated it.
        let handed_over = self.store.ingest_handed_over(&self.book)?;
        if handed_over > 0 {
            tracing::info!(
                readings = handed_over,
                "history of meters handed over from another gateway rated"
            );
        }
        Ok(())
    }

    /// Whether the clock can be trusted at `now` (see `sync::clock`).
    pub fn clock_trusted(&mut self, now: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(gramgrid_core::clock::trusted(
            self.store.clock_state()?,
            now,
            self.max_clock_skew(),
        ))
    }

    fn max_clock_skew(&self) -> Duration {
        Duration::from_std(self.config.sync.max_clock_skew).unwrap_or(Duration::MAX)
    }

    /// One scheduled tick: judge the clock, run a policy pass, and on a trusted clock raise its
    /// high-water mark. A clock seen going backwards is noted: the breaker holds disconnections for
    /// a while after it is right again.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Result<PassReport, StoreError> {
        let state = self.store.clock_state()?;
        let trusted = gramgrid_core::clock::trusted(state, now, self.max_clock_skew());
        if gramgrid_core::clock::went_back(state, now) {
            self.store.note_clock_went_back()?;
        } else if trusted {
            self.store.note_clock_trusted(now)?;
        }
        if let Some(link) = self.link.as_mut() {
            if let Err(error) = link.clock_trusted(trusted) {
                tracing::warn!(%error, "cannot tell the link whether the clock is trusted");
            }
        }
        let report = self.policy_pass(now, trusted)?;
        if trusted {
            self.store.raise_clock_high_water(now)?;
        }
        Ok(report)
    }

    /// The policy in force (published by central, else the config file's).
    pub fn policy(&self) -> &gramgrid_core::policy::PolicyConfig {
        &self.config.policy
    }

    /// The tariff book in force.
    pub fn tariff_book(&self) -> &TariffBook {
        &self.book
    }

    /// Stores and rates a batch of readings (one durable transaction), unless free disk space is
    /// below `[gateway] disk_reserve_mib`: then the batch is refused (`ReadingsShed`), so the link
    /// leaves the readings on the meters, and the reserve stays for money and relay records.
    pub fn ingest_readings(&mut self, batch: &[MeterReading]) -> Result<IngestReport, StoreError> {
        self.keep_disk_reserve(batch)?;
        self.store.ingest(&self.book, batch)
    }

    /// Replaces how free disk space is read (tests: a simulated disk).
    pub fn set_free_space(&mut self, free_space: FreeSpace) {
        self.free_space = free_space;
    }

    /// Refuses readings while free space is below the reserve. The office learns when shedding
    /// starts and ends (`readings_shed` and `readings_resumed` anomalies, uploaded to central).
    fn keep_disk_reserve(&mut self, batch: &[MeterReading]) -> Result<(), StoreError> {
        let Some(free) = (self.free_space)() else {
            return Ok(());
        };
        let reserve_mib = self.config.gateway.disk_reserve_mib;
        let at = batch
            .iter()
            .map(|r| r.at)
            .max()
            .unwrap_or(DateTime::UNIX_EPOCH);
        if free >= reserve_mib.saturating_mul(MIB) {
            if let Some(since) = self.shedding_since.take() {
                tracing::warn!(%since, "disk space is back above the reserve; storing readings again");
                self.store.record_gateway_anomaly(
                    "readings_resumed",
                    &format!("disk space is back above the {reserve_mib} MiB reserve; readings left on the meters since {since} are fetched again"),
                    at,
                )?;
            }
            return Ok(());
        }
        let free_mib = free / MIB;
        if self.shedding_since.is_none() {
            tracing::error!(
                free_mib,
                reserve_mib,
                "data disk below its reserve: readings are left on the meters until space is freed"
            );
            self.store.record_gateway_anomaly(
                "readings_shed",
                &format!("only {free_mib} MiB free on the data disk, below the {reserve_mib} MiB reserve: readings are left on the meters (a week of them) until space is freed"),
                at,
            )?;
            self.shedding_since = Some(at);
        }
        Err(StoreError::ReadingsShed {
            free_mib,
            reserve_mib,
        })
    }

    /// Installs a spare meter from the stock on an account (a technician's commissioning, or the
    /// swap of a failed meter), audited as `action`. For a swap, the old meter's final register is
    /// stored and charged first, as its last reading; the new meter is billed on in the old one's
    /// slabs, so the account's charges run on across the swap. The link takes the new meter up at
    /// once. Returns the new meter's id.
    pub fn install_spare(
        &mut self,
        swap: &MeterSwap,
        action: &TechnicianAction,
    ) -> Result<i64, StoreError> {
        let refused = |why: String| Err(StoreError::InstallRefused(why));
        // Checked before the final reading is stored, so a refused swap stores nothing.
        let replaced = self.store.check_swap(swap)?;
        if let (Some((old, serial)), Some(final_wh)) = (replaced, swap.final_register_wh) {
            if let Some((last_at, last_wh)) = self.store.last_reading(old)? {
                if final_wh < last_wh {
                    return refused(format!(
                        "the final register {final_wh} Wh of meter {serial} is below its last reading ({last_wh} Wh): read the display again"
                    ));
                }
                if last_at > swap.at {
                    return refused(format!(
                        "meter {serial} has a reading after now ({last_at}); check the gateway's clock"
                    ));
                }
            }
            // The technician reads the import register only; the export register is taken as
            // it last read, so the final span credits no export rather than a guessed one.
            let final_reading = MeterReading {
                meter: old,
                at: swap.at,
                register_wh: final_wh,
                export_wh: self.store.last_export(old)?,
            };
            self.store.ingest(&self.book, &[final_reading])?;
        }
        let meter = self.store.install_spare(swap, action)?;
        self.meters_changed();
        Ok(meter)
    }

    /// Records a relay state reported by a meter; a confirmed disconnect, or a reconnect after one,
    /// alerts the consumer (a connect that only confirms a meter's first known state does not). A
    /// confirmed load-limit trip says so and when the supply comes back, never that the balance
    /// is exhausted.
    pub fn on_relay_report(
        &mut self,
        meter: i64,
        state: RelayState,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let before = self.store.relay_state(meter)?;
        let account = self.store.account_in_service(meter);
        self.store
            .record_relay_state(meter, state, at, |command, trip| {
                let account = account.clone()?;
                let (kind, message, vars) = relay_notice(command.action, trip, before)?;
                Some(Alert {
                    id: format!("{account}:{}:{}", kind.as_str(), command.id),
                    account,
                    kind: kind.as_str().into(),
                    created_at: at,
                    message,
                    vars,
                })
            })?;
        Ok(())
    }

    fn account_of_meter(&self, meter: i64) -> Result<String, StoreError> {
        self.store
            .account_in_service(meter)
            .ok_or_else(|| StoreError::UnknownMeter(meter.to_string()))
    }

    /// One pass of the policy loop at `now`.
    pub fn policy_pass(
        &mut self,
        now: DateTime<Utc>,
        clock_trusted: bool,
    ) -> Result<PassReport, StoreError> {
        let mut report = PassReport::default();
        let mut cuts = Vec::new();
        let dark = self.suspected_outage(now)?;
        for account in self.store.accounts()? {
            let Some((meter, _serial)) = self.store.active_meter(&account.id)? else {
                continue;
            };
            report.accounts += 1;
            report.fixed_charges += self.charge_fixed_days(&account, now)?;
            report.minimum_charges += self.charge_last_months_minimum(&account, now)?;
            report.demand_charges += self.charge_last_months_demand(&account, meter, now)?;
            report.export_credits += self.close_last_months_export(&account, now)?;
            let pass = PassFacts {
                now,
                clock_trusted,
                dark,
            };
            cuts.extend(self.decide_account(&account, meter, &pass, &mut report)?);
        }
        self.guard_cuts(cuts, now, clock_trusted, &mut report)?;
        report.overloads = self.check_sanctioned_loads(now)?;
        report.outages_sent = self.store.queue_outage_updates()?;
        report.energy_audits = self.audit_transformers(now)?;
        self.advance_relay_commands(now, clock_trusted, &mut report)?;
        Ok(report)
    }

    /// Charges each local day's fixed charge from the day after the last one charged (or the day the
    /// account was created) up to today. Ids are per account and day, so a repeated pass charges once.
    fn charge_fixed_days(
        &mut self,
        account: &Account,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let today = civil::local_date(now);
        let first = match self
            .store
            .last_event_at(&account.id, EventKind::FixedCharge)?
        {
            Some(last) => civil::local_date(last) + Duration::days(1),
            None => civil::local_date(account.created_at),
        };
        let events: Vec<LedgerEvent> = first
            .iter_days()
            .take_while(|day| *day <= today)
            .filter_map(|day| {
                let amount_paise = self.book.fixed_charge_for_day(account.category, day);
                (amount_paise > 0).then(|| LedgerEvent {
                    id: format!("{}:fixed:{}:{day}", self.config.gateway.id, account.id),
                    account: account.id.clone(),
                    at: civil::start_of_local_day(day).max(account.created_at),
                    kind: EventKind::FixedCharge,
                    amount_paise,
                    expires_at: None,
                })
            })
            .collect();
        self.store.record_events(&events)
    }

    /// At the first pass of a month, tops last month up to its minimum charge (energy plus fixed
    /// charges, duty excluded). Energy of last month read after this point is billed normally but
    /// does not revise the top-up.
    fn charge_last_months_minimum(
        &mut self,
        account: &Account,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let month = Month::containing(now).previous();
        let Some((start, end)) = month.span() else {
            return Ok(0);
        };
        let id = format!("{}:minimum:{}:{month}", self.config.gateway.id, account.id);
        // Once closed, a month stays closed: readings of it that come in late (a meter that was out
        // of reach at the month's end) are billed as energy but must not fail every later pass.
        if account.created_at >= end || self.store.has_event(&id)? {
            return Ok(0);
        }
        let billed = self.store.energy_charge_in(&account.id, month)?
            + self
                .store
                .sum_of(&account.id, EventKind::FixedCharge, start, end)?;
        let topup = self.book.minimum_topup(account.category, month, billed);
        if topup == 0 {
            return Ok(0);
        }
        self.store.record_events(&[LedgerEvent {
            id,
            account: account.id.clone(),
            at: end,
            kind: EventKind::MinimumCharge,
            amount_paise: topup,
            expires_at: None,
        }])
    }

    /// At the first pass of a month, charges last month's demand charge on the meter's maximum
    /// demand in it, where the tariff has one. Readings of last month that arrive after this do not
    /// revise it.
    fn charge_last_months_demand(
        &mut self,
        account: &Account,
        meter: i64,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let month = Month::containing(now).previous();
        let Some((start, end)) = month.span() else {
            return Ok(0);
        };
        let id = format!("{}:demand:{}:{month}", self.config.gateway.id, account.id);
        if account.created_at >= end
            || !self.book.has_demand_charge(account.category, month)
            || self.store.has_event(&id)?
        {
            return Ok(0);
        }
        let Some((_, max_demand_w)) = self.store.max_demand(meter, start, end)? else {
            return Ok(0);
        };
        let amount = self
            .book
            .demand_charge(account.category, month, max_demand_w);
        if amount == 0 {
            return Ok(0);
        }
        self.store.record_events(&[LedgerEvent {
            id,
            account: account.id.clone(),
            at: end,
            kind: EventKind::DemandCharge,
            amount_paise: amount,
            expires_at: None,
        }])
    }

    /// At the first pass of a month, closes last month's export for the account
    /// (`core::netmeter`): banked units used against its net units, its surplus banked, the bank
    /// settled in March; the credit is a money event. Once per account and month.
    fn close_last_months_export(
        &mut self,
        account: &Account,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let month = Month::containing(now).previous();
        let Some((_, end)) = month.span() else {
            return Ok(0);
        };
        if account.created_at >= end || self.store.export_month_closed(&account.id, month)? {
            return Ok(0);
        }
        let segments = self.store.month_segments(&account.id, month)?;
        let banked_in = self.store.export_banked_before(&account.id, month)?;
        let close =
            netmeter::close_month(&self.book, account.category, month, &segments, banked_in);
        let credit = (close.amount_paise() > 0).then(|| LedgerEvent {
            id: format!("{}:export:{}:{month}", self.config.gateway.id, account.id),
            account: account.id.clone(),
            at: end,
            kind: EventKind::ExportCredit,
            amount_paise: close.amount_paise(),
            expires_at: None,
        });
        self.store
            .record_export_close(&account.id, month, &close, credit.as_ref(), now)
    }

    /// Average daily charges over this month and last, as the basis of "days left".
    fn daily_consumption(
        &self,
        account: &Account,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let month = Month::containing(now);
        let since = month
            .previous()
            .first_day()
            .map(civil::start_of_local_day)
            .unwrap_or(now)
            .max(account.created_at);
        let days = (now - since).num_days();
        if days < 1 {
            return Ok(None);
        }
        let charged = self
            .store
            .energy_charges(&account.id, Some((month.previous(), month)))?;
        Ok(Some(charged / days))
    }

    /// The facts the policy decides an account on, read from the store.
    fn account_facts(
        &mut self,
        account: &Account,
        meter: i64,
        pass: &PassFacts,
    ) -> Result<AccountFacts, StoreError> {
        let (now, clock_trusted) = (pass.now, pass.clock_trusted);
        let position = self
            .store
            .position(&account.id, &self.config.policy.arrears)?;
        let credits = self.store.emergency_credits(&account.id)?;
        let pending = self
            .store
            .latest_relay_command(meter)?
            .filter(|c| self.config.relay.blocks_reissue(c.progress, now))
            .map(|c| c.action);
        let emergency_credit_paise = ledger::active_emergency_credit(
            &credits,
            position.last_recharge.as_ref().map(|r| r.at),
            now,
        );
        let relay = self.store.relay_state(meter)?;
        let arrangement = self.arrangement(
            account,
            relay,
            position.balance_paise,
            self.config.policy.disconnect_threshold_paise - emergency_credit_paise.max(0),
            now,
        )?;
        let below_threshold_since = self.store.below_threshold_since(&account.id)?;
        Ok(AccountFacts {
            balance_paise: position.balance_paise,
            last_recharge: position.last_recharge,
            emergency_credit_paise,
            daily_consumption_paise: self.daily_consumption(account, now)?,
            relay,
            pending,
            below_threshold_since,
            manual_override: self.store.active_override(&account.id, now)?,
            clock_trusted,
            protected: self.store.protection(&account.id)?.is_some(),
            arrangement,
            outages: self
                .outage_spans(below_threshold_since.unwrap_or(now))?
                .into_iter()
                .chain(pass.dark)
                .collect(),
            load: self.load_trip_facts(account, meter, now)?,
        })
    }

    /// The debt of a supply cut and what has been paid since (the partial-payment rule's facts).
    /// The cut is noted when the meter is first seen disconnected with the balance at or below
    /// the threshold, and forgotten once the balance is above it again.
    fn arrangement(
        &mut self,
        account: &Account,
        relay: RelayState,
        balance_paise: i64,
        threshold_paise: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<Arrangement>, StoreError> {
        let cut = self.store.cut(&account.id)?;
        let cut = match (cut, balance_paise <= threshold_paise) {
            (Some(_), false) => {
                self.store.set_cut(&account.id, None)?;
                None
            }
            (None, true) if relay == RelayState::Disconnected => {
                let cut = (now, threshold_paise - balance_paise);
                self.store.set_cut(&account.id, Some(cut))?;
                Some(cut)
            }
            (cut, _) => cut,
        };
        let Some((cut_at, debt_paise)) = cut else {
            return Ok(None);
        };
        let (paid_paise, last_paid_at) = self.store.recharged_since(&account.id, cut_at)?;
        Ok(Some(Arrangement {
            debt_paise,
            paid_paise,
            last_paid_at,
        }))
    }

    /// The record of a decision, for the store, central and `gateway explain`.
    fn decision_record(
        &self,
        account: &Account,
        facts: AccountFacts,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> DecisionRecord {
        DecisionRecord {
            account: account.id.clone(),
            at: now,
            policy: self.config.policy.clone(),
            policy_version: self.policy_version,
            tariff_version: self
                .book
                .version_on(account.category, civil::local_date(now))
                .map(|v| v.id.clone()),
            facts,
            outcome,
            breaker: None,
        }
    }

    /// Decides one account: alerts, withdrawals and connects at once; a disconnect is returned for
    /// the breaker to judge with the pass's others.
    fn decide_account(
        &mut self,
        account: &Account,
        meter: i64,
        pass: &PassFacts,
        report: &mut PassReport,
    ) -> Result<Option<guard::PlannedCommand>, StoreError> {
        let now = pass.now;
        let facts = self.account_facts(account, meter, pass)?;
        let decision = policy::decide(&self.config.policy, &facts, now);
        self.refresh_display(meter, &facts, &decision, now);
        if decision.below_threshold_since != facts.below_threshold_since {
            self.store
                .set_below_threshold_since(&account.id, decision.below_threshold_since)?;
        }
        for alert in alerts_for(account, &decision, facts.balance_paise, now) {
            report.alerts += usize::from(self.store.enqueue_alert(&alert)?);
        }
        if decision.hold.is_some() && facts.relay != RelayState::Disconnected {
            report.disconnects_held += 1;
        }
        if decision.hold == Some(policy::Hold::Protected) {
            self.tell_office_of_protected(account, &facts, &decision, now)?;
        }
        if decision.withdraw_disconnect {
            let why = match decision.hold {
                Some(hold) => hold.to_string(),
                None => format!(
                    "balance {} INR is above the disconnect threshold",
                    rupees(facts.balance_paise)
                ),
            };
            self.withdraw_disconnects_of(meter, now, &why, report)?;
        }
        let Some(action) = decision.relay else {
            return Ok(None);
        };
        let balance = format!("balance {} INR", rupees(facts.balance_paise));
        let (verb, reason) = match (action, decision.load_trip, facts.load) {
            (RelayAction::Disconnect, Some(until), Some(load)) => (
                "trip",
                format!(
                    "load-limit trip: above the sanctioned {} kW for {} intervals; off until {}",
                    kilowatts(load.sanctioned_w),
                    load.over.map_or(0, |run| run.intervals),
                    civil::local(until).format("%Y-%m-%d %H:%M IST")
                ),
            ),
            (RelayAction::Disconnect, _, _) => ("disconnect", balance),
            (RelayAction::Connect, _, _) if self.latest_command_was_a_trip(meter)? => (
                "connect",
                format!("the load-limit lockout is over; {balance}"),
            ),
            (RelayAction::Connect, _, _) => ("connect", balance),
        };
        let id = format!(
            "{}:relay:{}:{verb}:{}",
            self.config.gateway.id,
            account.id,
            now.timestamp()
        );
        let record = self.decision_record(account, facts, Outcome::from(&decision), now);
        let command = guard::PlannedCommand {
            id,
            meter,
            reason,
            record,
        };
        match action {
            RelayAction::Disconnect => Ok(Some(command)),
            RelayAction::Connect => {
                self.queue(&command, report)?;
                Ok(None)
            }
        }
    }

    /// Whether the meter's latest relay command was a load-limit trip.
    fn latest_command_was_a_trip(&self, meter: i64) -> Result<bool, StoreError> {
        match self.store.latest_relay_command(meter)? {
            Some(command) => Ok(self.store.load_trip_of_command(&command.id)?.is_some()),
            None => Ok(false),
        }
    }

    /// Queues a decided relay command with its record.
    fn queue(
        &mut self,
        command: &guard::PlannedCommand,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        let record = &command.record;
        let action = record.outcome.relay.unwrap_or(RelayAction::Connect);
        tracing::info!(account = %record.account, meter = command.meter, ?action, reason = %command.reason, rule = %record.rule(), "relay command queued");
        self.store.queue_relay_command(
            &command.id,
            command.meter,
            action,
            &command.reason,
            record.at,
            Some(record),
        )?;
        report.commands_queued += 1;
        Ok(())
    }

    /// A protected account at or below the threshold is not cut; the office is told once per
    /// episode (a decision record central flags).
    fn tell_office_of_protected(
        &mut self,
        account: &Account,
        facts: &AccountFacts,
        decision: &policy::Decision,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let since = decision.below_threshold_since.unwrap_or(now);
        let id = format!(
            "{}:protected:{}:{}",
            self.config.gateway.id,
            account.id,
            since.timestamp()
        );
        let record = self.decision_record(account, facts.clone(), Outcome::from(decision), now);
        self.store.record_decision(&id, &record)
    }

    /// Withdraws the open disconnects of a meter.
    fn withdraw_disconnects_of(
        &mut self,
        meter: i64,
        now: DateTime<Utc>,
        why: &str,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        for command in self.store.open_relay_commands()? {
            if command.meter == meter && command.action == RelayAction::Disconnect {
                self.withdraw(&command, now, why, report)?;
            }
        }
        Ok(())
    }

    /// Closes an open disconnect as withdrawn, saying why, and tells the link not to transmit it.
    fn withdraw(
        &mut self,
        command: &RelayCommand,
        now: DateTime<Utc>,
        why: &str,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        let detail = format!("no longer wanted: {why}");
        if !self
            .store
            .withdraw_relay_command(&command.id, now, &detail)?
        {
            return Ok(());
        }
        tracing::info!(command = %command.id, meter = command.meter, reason = why, "relay command withdrawn");
        report.commands_withdrawn += 1;
        if let Some(link) = self.link.as_mut() {
            if let Err(error) = link.withdraw(command.meter, &command.id) {
                tracing::warn!(command = %command.id, %error, "the meter link was not told of a withdrawal");
            }
        }
        Ok(())
    }

    /// Sends, re-sends or times out open relay commands according to the retry policy. A disconnect
    /// that may not be carried out now (outside a window, holiday, untrusted clock, a technician's
    /// connect override) is withdrawn instead; one that is sent carries its deadline.
    fn advance_relay_commands(
        &mut self,
        now: DateTime<Utc>,
        clock_trusted: bool,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        for command in self.store.open_relay_commands()? {
            let step = self.config.relay.next_step(command.progress, now);
            let not_after = match (command.action, step) {
                (RelayAction::Connect, _) | (RelayAction::Disconnect, Step::TimeOut) => None,
                (RelayAction::Disconnect, _) => {
                    let manual_override = match self.store.account_in_service(command.meter) {
                        Some(account) => self.store.active_override(&account, now)?,
                        None => None,
                    };
                    match policy::disconnect_deadline(
                        &self.config.policy,
                        manual_override,
                        clock_trusted,
                        now,
                    ) {
                        Ok(deadline) => deadline,
                        Err(hold) => {
                            self.withdraw(&command, now, &hold.to_string(), report)?;
                            continue;
                        }
                    }
                }
            };
            match step {
                Step::Send => {
                    let Some(link) = self.link.as_mut() else {
                        tracing::debug!(command = %command.id, "no meter link attached; command stays queued");
                        continue;
                    };
                    if !link.can_reach(command.meter) {
                        tracing::debug!(command = %command.id, meter = command.meter, "the radio has no session keys for this meter yet; the command stays queued");
                        report.commands_waiting_for_keys += 1;
                        continue;
                    }
                    match link.send(command.meter, &command.id, command.action, not_after) {
                        Ok(()) => {
                            self.store.mark_relay_sent(&command.id, now)?;
                            report.commands_sent += 1;
                        }
                        Err(error) => {
                            tracing::warn!(command = %command.id, %error, "relay command not sent; will retry")
                        }
                    }
                }
                Step::TimeOut => {
                    let account = self.account_of_meter(command.meter)?;
                    let message = format!(
                        "Relay command {} ({:?}) was sent {} times without the meter confirming; check the meter.",
                        command.id, command.action, command.progress.attempts
                    );
                    tracing::warn!(command = %command.id, "relay command timed out");
                    // One alert per meter and day: a meter out of reach times out every
                    // command the policy re-issues, and one message says it all.
                    let alert = Alert {
                        id: format!(
                            "{account}:relay_timeout:{}:{}",
                            command.meter,
                            civil::local_date(now)
                        ),
                        account,
                        kind: "relay_timeout".into(),
                        created_at: now,
                        message,
                        vars: Vars::new(),
                    };
                    self.store.close_relay_command(
                        &command.id,
                        CommandState::TimedOut,
                        now,
                        &alert,
                    )?;
                    report.commands_timed_out += 1;
                }
                Step::WaitUntil(_) | Step::Done => {}
            }
        }
        Ok(())
    }
}

/// The alerts a decision calls for (ids make each unique, so re-deciding does not repeat them).
fn alerts_for(
    account: &Account,
    decision: &policy::Decision,
    balance_paise: i64,
    now: DateTime<Utc>,
) -> Vec<Alert> {
    let days_left = decision
        .days_left
        .map(|d| format!(" About {d:.1} days left at your recent use."))
        .unwrap_or_default();
    let mut alerts: Vec<Alert> = decision
        .low_balance
        .iter()
        .map(|low| {
            let balance = rupees(balance_paise);
            // Level 0 is the balance exhausted: the notice that a disconnection is coming.
            let (kind, message, vars) = if low.level_percent == 0 {
                (
                    Kind::DisconnectNotice,
                    format!("Your balance is exhausted ({balance} INR). Recharge to avoid disconnection."),
                    vars(&[("balance", balance.clone())]),
                )
            } else {
                (
                    Kind::LowBalance,
                    format!(
                        "Your balance is {balance} INR, {} % or less of your last recharge.{days_left}",
                        low.level_percent
                    ),
                    vars(&[("balance", balance.clone()), ("percent", low.level_percent.to_string())]),
                )
            };
            Alert {
                id: format!(
                    "{}:low{}:{}",
                    account.id, low.level_percent, low.recharge_id
                ),
                account: account.id.clone(),
                kind: kind.as_str().into(),
                created_at: now,
                message,
                vars,
            }
        })
        .collect();
    if let Some(date) = decision.daily_message {
        alerts.push(Alert {
            id: format!("{}:daily:{date}", account.id),
            account: account.id.clone(),
            kind: Kind::DailyBalance.as_str().into(),
            created_at: now,
            message: format!(
                "Balance on {date}: {} INR.{days_left}",
                rupees(balance_paise)
            ),
            vars: vars(&[
                ("date", date.format("%d-%m-%Y").to_string()),
                ("balance", rupees(balance_paise)),
            ]),
        });
    }
    alerts
}

/// Template variables from name/value pairs.
fn vars(pairs: &[(&str, String)]) -> Vars {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect()
}

/// What the household is told when its meter confirms a command: the supply was cut (for want of
/// balance, or for a load above the sanctioned one) or restored. Nothing for a connect that found
/// the relay already closed.
fn relay_notice(
    action: RelayAction,
    trip: Option<LoadTripped>,
    before: RelayState,
) -> Option<(Kind, String, Vars)> {
    match (action, trip) {
        (RelayAction::Disconnect, Some(trip)) => {
            let (sanctioned, until) = (
                kilowatts(trip.sanctioned_w),
                civil::local(trip.until).format("%H:%M").to_string(),
            );
            Some((
                Kind::LoadLimitTrip,
                format!("Supply cut: your load was above your sanctioned {sanctioned} kW. It comes back at {until}. Reduce your load."),
                vars(&[("sanctioned_kw", sanctioned), ("until", until)]),
            ))
        }
        (RelayAction::Disconnect, None) => Some((
            Kind::Disconnected,
            "Supply disconnected: the balance is exhausted. Recharge to restore it.".into(),
            Vars::new(),
        )),
        (RelayAction::Connect, _) if before == RelayState::Disconnected => {
            Some((Kind::Reconnected, "Supply restored.".into(), Vars::new()))
        }
        (RelayAction::Connect, _) => None,
    }
}

#[cfg(test)]
mod tests;
