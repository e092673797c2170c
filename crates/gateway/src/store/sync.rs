//! The gateway's side of sync in the store: the priority outbox, upload slices, acknowledgements,
//! and applying downlink records with the cursor in the same transaction.
use super::{
    set_signed_state_in, signed_state_in, ts, Account, MeterInstall, MeterReading, Result, Store,
    StoreError,
};
use gramgrid_core::clock::ClockState;
use gramgrid_core::ledger::{EventKind, LedgerEvent};
use gramgrid_core::tariff::{TariffVersion, TodSlot};
use gramgrid_proto::frame::{DevAddr, SessionKey, SessionKeys};
use gramgrid_proto::voucher::{PublishedKey, Voucher};
use gramgrid_proto::wire::model::WireTodSlot;
use gramgrid_proto::wire::{
    self, DownlinkEvent, DownlinkRecord, ReadingBatch, ReadingBlock, UplinkEvent, WireDlms,
    WirePolicy, WirePolicyRules, WireTariffVersion,
};
use rusqlite::{params, OptionalExtension, Transaction};
use std::collections::HashMap;

const PRIORITY_ACKED: &str = "priority_acked";
const READINGS_ACKED: &str = "readings_acked";
const DOWNLINK_APPLIED: &str = "downlink_applied";
const INSTANCE: &str = "instance";
const EXCHANGE: &str = "exchange";
/// Every reading not yet acknowledged by central has `at` at or after this (Unix seconds): the bulk
/// lane scans the readings' primary key from here instead of keeping an index on arrival order.
const READINGS_UNACKED_FROM: &str = "readings_unacked_from";

/// Lowers the unacknowledged-readings bound for a reading just stored (inside its transaction).
pub(super) fn note_unacked_reading(tx: &Transaction<'_>, at: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO sync_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = MIN(value, ?2)",
    )?
    .execute(params![READINGS_UNACKED_FROM, at])?;
    Ok(())
}

pub(super) fn state_in(tx: &Transaction<'_>, key: &str) -> Result<u64> {
    let value: Option<i64> = tx
        .prepare_cached("SELECT value FROM sync_state WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    Ok(value.unwrap_or(0).max(0) as u64)
}

/// A 64-bit word stored bit for bit (the instance, the token): any value, unlike the cursors.
fn word_in(tx: &Transaction<'_>, key: &str) -> Result<u64> {
    let value: Option<i64> = tx
        .prepare_cached("SELECT value FROM sync_state WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    Ok(u64::from_ne_bytes(value.unwrap_or(0).to_ne_bytes()))
}

pub(super) fn set_state_in(tx: &Transaction<'_>, key: &str, value: u64) -> Result<()> {
    tx.prepare_cached("INSERT INTO sync_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2")?
        .execute(params![key, value as i64])?;
    Ok(())
}

/// How far sync has got: what central acknowledged and what the gateway applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncCursors {
    /// Highest priority outbox sequence central has acknowledged (all up to it are acknowledged).
    pub priority_acked: u64,
    /// Highest reading arrival sequence central has acknowledged (the bulk lane).
    pub readings_acked: u64,
    /// Sequence of the last downlink record applied here; central sends from the next one.
    pub downlink_applied: u64,
    /// This database's random instance (made when it was created).
    pub instance: u64,
    /// The number of the last exchange started from this database.
    pub exchange: u64,
}

impl Store {
    /// The current sync cursors.
    pub fn sync_cursors(&mut self) -> Result<SyncCursors> {
        let tx = self.conn.transaction()?;
        let cursors = SyncCursors {
            priority_acked: state_in(&tx, PRIORITY_ACKED)?,
            readings_acked: state_in(&tx, READINGS_ACKED)?,
            downlink_applied: state_in(&tx, DOWNLINK_APPLIED)?,
            instance: word_in(&tx, INSTANCE)?,
            exchange: state_in(&tx, EXCHANGE)?,
        };
        tx.commit()?;
        Ok(cursors)
    }

    /// Up to `limit` readings stored after arrival sequence `after`, as one batch.
    pub fn readings_after(&self, after: u64, limit: usize) -> Result<Option<ReadingBatch>> {
        let mut statement = self.conn.prepare_cached(
            // A transformer meter's readings stay here: central gets its daily energy audit.
            "SELECT r.seq, m.serial, r.at, r.register_wh, r.export_wh FROM readings r JOIN meters m ON m.id = r.meter
             WHERE r.at >= ?3 AND r.seq > ?1 AND m.role = 'consumer' ORDER BY r.seq LIMIT ?2",
        )?;
        let from: i64 = self
            .conn
            .query_row(
                "SELECT value FROM sync_state WHERE key = ?1",
                [READINGS_UNACKED_FROM],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let rows = statement.query_map(params![after as i64, limit as i64, from], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut through = after;
        let mut readings = Vec::new();
        for row in rows {
            let (seq, serial, at, register, export) = row?;
            through = through.max(seq as u64);
            readings.push((serial, at, register, export));
        }
        if readings.is_empty() {
            return Ok(None);
        }
        let (blocks, exports) = wire::group_net(readings);
        Ok(Some(ReadingBatch {
            after_seq: after,
            through_seq: through,
            blocks,
            exports,
        }))
    }

    /// Counts a new exchange and stores the count before the exchange is sent, so each exchange of
    /// this database has a higher number than every one before (`GatewayIdentity::exchange`).
    pub fn next_exchange(&mut self) -> Result<u64> {
        let tx = self.conn.transaction()?;
        let next = state_in(&tx, EXCHANGE)? + 1;
        set_state_in(&tx, EXCHANGE, next)?;
        tx.commit()?;
        Ok(next)
    }

    /// Records what central acknowledged; acknowledged outbox rows are dropped (their facts stay in
    /// their own tables). Acknowledgements never move backwards.
    pub fn record_acks(&mut self, priority_acked: u64, readings_acked: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        let priority = state_in(&tx, PRIORITY_ACKED)?.max(priority_acked);
        let readings = state_in(&tx, READINGS_ACKED)?.max(readings_acked);
        set_state_in(&tx, PRIORITY_ACKED, priority)?;
        set_state_in(&tx, READINGS_ACKED, readings)?;
        // Raise the scan bound to the earliest reading still unacknowledged (none: past the newest).
        let from: i64 = tx
            .query_row(
                "SELECT COALESCE((SELECT MIN(at) FROM readings WHERE at >= COALESCE((SELECT value FROM sync_state WHERE key = ?1), 0) AND seq > ?2),
                                 (SELECT COALESCE(MAX(at), 0) + 1 FROM readings))",
                params![READINGS_UNACKED_FROM, readings as i64],
                |r| r.get(0),
            )?;
        tx.execute(
            "INSERT INTO sync_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
            params![READINGS_UNACKED_FROM, from],
        )?;
        tx.execute("DELETE FROM sync_outbox WHERE seq <= ?1", [priority as i64])?;
        tx.commit()?;
        Ok(())
    }

    /// Records waiting for upload: (priority outbox rows, readings not yet acknowledged).
    pub fn sync_backlog(&mut self) -> Result<(u64, u64)> {
        let cursors = self.sync_cursors()?;
        let priority: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM sync_outbox WHERE seq > ?1",
            [cursors.priority_acked as i64],
            |r| r.get(0),
        )?;
        let readings = (self.next_reading_seq as u64).saturating_sub(cursors.readings_acked + 1);
        Ok((priority as u64, readings))
    }

    /// Ingests the readings handed over by central (`DownlinkEvent::Readings`) with `book`, as
    /// late readings, then forgets them; returns how many were new. Ingesting twice is harmless.
    pub fn ingest_handed_over(
        &mut self,
        book: &gramgrid_core::tariff::TariffBook,
    ) -> Result<usize> {
        let batch: Vec<MeterReading> = self
            .conn
            .prepare(
                "SELECT m.id, h.at, h.register_wh, h.export_wh FROM handed_over_readings h JOIN meters m ON m.serial = h.serial
                 ORDER BY h.at",
            )?
            .query_map([], |r| {
                Ok(MeterReading {
                    meter: r.get(0)?,
                    at: super::from_ts(r.get(1)?),
                    register_wh: r.get(2)?,
                    export_wh: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let stored = if batch.is_empty() {
            0
        } else {
            self.ingest(book, &batch)?.stored
        };
        self.conn.execute("DELETE FROM handed_over_readings", [])?;
        Ok(stored)
    }

    /// Applies downlink records in order, each in one transaction with the download cursor, so a
    /// crash between records neither loses nor repeats one. Records at or below the cursor are skipped.
    pub fn apply_downlink(
        &mut self,
        records: &[DownlinkRecord],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize> {
        let mut applied = 0;
        for record in records {
            let tx = self.conn.transaction()?;
            if record.seq <= state_in(&tx, DOWNLINK_APPLIED)? {
                continue;
            }
            let effect = apply_one(&tx, &self.sealer, &record.event, now)?;
            set_state_in(&tx, DOWNLINK_APPLIED, record.seq)?;
            tx.commit()?;
            self.after_downlink(effect)?;
            applied += 1;
        }
        Ok(applied)
    }

    /// Keeps the in-memory caches in step with what a downlink record changed.
    fn after_downlink(&mut self, effect: Effect) -> Result<()> {
        match effect {
            Effect::None => Ok(()),
            Effect::Account(account) => {
                for info in self.meters.values_mut().filter(|m| m.account == account.id) {
                    info.category = account.category;
                }
                Ok(())
            }
            Effect::Meter => self.load_caches(),
        }
    }

    /// Tariff versions published by central (empty when none were), each with its time-of-day
    /// slots and demand charge (`TariffDetails`, stored under the version's id).
    pub fn published_tariffs(&self) -> Result<Vec<TariffVersion>> {
        let versions: Vec<(u64, WireTariffVersion)> = self.published("tariff")?;
        let mut details: HashMap<String, (Vec<WireTodSlot>, i64)> = self
            .published::<(String, Vec<WireTodSlot>, i64)>("tariff_details")?
            .into_iter()
            .map(|(_, (id, tod, demand))| (id, (tod, demand)))
            .collect();
        let mut banking: HashMap<String, (bool, i64)> = self
            .published::<(String, bool, i64)>("tariff_net_metering")?
            .into_iter()
            .map(|(_, (id, banks, settlement))| (id, (banks, settlement)))
            .collect();
        versions
            .into_iter()
            .map(|(_, wire)| {
                let (tod, demand) = details.remove(&wire.id).unwrap_or_default();
                let (banks, settlement) = banking.remove(&wire.id).unwrap_or_default();
                let mut version = TariffVersion::from(wire);
                version.demand_paise_per_kw = demand;
                version.export_banking = banks;
                version.export_settlement_paise_per_kwh = settlement;
                version.tod = tod
                    .into_iter()
                    .map(TodSlot::try_from)
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| StoreError::Encoding(e.to_string()))?;
                Ok(version)
            })
            .collect()
    }

    /// The newest policy published by central, if any, with its version and its guardrails
    /// (`PolicyRules` of the same version; the defaults if central sent none).
    pub fn published_policy(&self) -> Result<Option<(u64, gramgrid_core::policy::PolicyConfig)>> {
        let Some((version, policy)) = self.published::<WirePolicy>("policy")?.pop() else {
            return Ok(None);
        };
        let encoding = |e: gramgrid_proto::wire::ModelError| StoreError::Encoding(e.to_string());
        let mut config = gramgrid_core::policy::PolicyConfig::try_from(policy).map_err(encoding)?;
        let rules = self
            .published::<WirePolicyRules>("policy_rules")?
            .into_iter()
            .find(|(v, _)| *v == version);
        if let Some((_, rules)) = rules {
            config = rules.apply_to(config).map_err(encoding)?;
        }
        Ok(Some((version, config)))
    }

    /// Published records of a kind with their version, oldest first (numeric versions in number
    /// order; a version that is not a number, such as a tariff id, reads as 0).
    fn published<T: serde::de::DeserializeOwned>(&self, kind: &str) -> Result<Vec<(u64, T)>> {
        let mut statement = self.conn.prepare(
            "SELECT version, body FROM published_config WHERE kind = ?1 ORDER BY CAST(version AS INTEGER), version",
        )?;
        let rows = statement.query_map([kind], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (version, body) = row?;
            let value =
                serde_json::from_str(&body).map_err(|e| StoreError::Encoding(e.to_string()))?;
            out.push((version.parse().unwrap_or(0), value));
        }
        Ok(out)
    }

    /// Voucher keys published by central.
    pub fn voucher_keys(&self) -> Result<Vec<PublishedKey>> {
        let mut statement = self
            .conn
            .prepare("SELECT body FROM voucher_keys ORDER BY key_id")?;
        let rows = statement.query_map([], |r| r.get::<_, String>(0))?;
        let mut keys = Vec::new();
        for body in rows {
            keys.push(
                serde_json::from_str(&body?).map_err(|e| StoreError::Encoding(e.to_string()))?,
            );
        }
        Ok(keys)
    }
}

const CLOCK_HIGH_WATER: &str = "clock_high_water";
const CLOCK_SKEW_MS: &str = "clock_skew_ms";

impl Store {
    /// What the gateway remembers about its clock (see `sync::clock`).
    pub fn clock_state(&mut self) -> Result<ClockState> {
        let tx = self.conn.transaction()?;
        let state = ClockState {
            high_water: signed_state_in(&tx, CLOCK_HIGH_WATER)?.map(super::from_ts),
            last_skew: signed_state_in(&tx, CLOCK_SKEW_MS)?.map(chrono::Duration::milliseconds),
        };
        tx.commit()?;
        Ok(state)
    }

    /// Raises the clock high-water mark to `now` (never lowers it).
    pub fn raise_clock_high_water(&mut self, now: chrono::DateTime<chrono::Utc>) -> Result<()> {
        let tx = self.conn.transaction()?;
        let current = signed_state_in(&tx, CLOCK_HIGH_WATER)?.unwrap_or(i64::MIN);
        set_signed_state_in(&tx, CLOCK_HIGH_WATER, current.max(ts(now)))?;
        tx.commit()?;
        Ok(())
    }

    /// Records the skew a sync measured. A skew beyond `max_skew` is also uploaded as an event;
    /// a skew within it resets the high-water mark, since the clock is now known to be right.
    pub fn record_clock_skew(
        &mut self,
        skew: chrono::Duration,
        gateway_time: chrono::DateTime<chrono::Utc>,
        central_time: chrono::DateTime<chrono::Utc>,
        max_skew: chrono::Duration,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        super::guard::note_sync_in(&tx, gateway_time)?;
        set_signed_state_in(&tx, CLOCK_SKEW_MS, skew.num_milliseconds())?;
        if skew.abs() > max_skew {
            tracing::warn!(
                skew_seconds = skew.num_seconds(),
                "gateway clock is off from central; disconnects are held"
            );
            super::outbox::append_outbox(
                &tx,
                &UplinkEvent::ClockSkew {
                    gateway_time,
                    central_time,
                },
            )?;
        } else {
            set_signed_state_in(&tx, CLOCK_HIGH_WATER, ts(gateway_time))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Redeems an offline voucher: verifies it against the published keys, refuses it if it was
    /// spent here or elsewhere, then in one durable transaction marks it spent, credits the account
    /// (a recharge whose id is the voucher's redemption id, so central counts it once) and queues
    /// the signed code for upload: central verifies it again and records the same recharge itself,
    /// so a gateway can never credit money central did not sign for.
    pub fn redeem_voucher(
        &mut self,
        code: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Voucher> {
        let voucher = gramgrid_proto::voucher::verify(&self.voucher_keys()?, code, now)?;
        let redemption_id = voucher.redemption_id();
        let tx = self.conn.transaction()?;
        let spent: Option<(String, i64)> = tx
            .query_row(
                "SELECT where_spent, at FROM vouchers_spent WHERE redemption_id = ?1",
                [&redemption_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((where_spent, at)) = spent {
            return Err(StoreError::VoucherSpent {
                where_spent,
                at: super::from_ts(at),
            });
        }
        tx.execute(
            "INSERT INTO vouchers_spent (redemption_id, where_spent, at) VALUES (?1, 'here', ?2)",
            params![redemption_id, ts(now)],
        )?;
        // Whole seconds, as central records the same recharge from the uploaded code.
        let redeemed_at = super::from_ts(ts(now));
        let recharge = LedgerEvent {
            id: redemption_id,
            account: voucher.account.clone(),
            at: redeemed_at,
            kind: EventKind::Recharge,
            amount_paise: voucher.amount_paise,
            expires_at: None,
        };
        super::money::insert_events_in(&tx, std::slice::from_ref(&recharge), false)?;
        super::outbox::append_outbox(
            &tx,
            &UplinkEvent::VoucherCode {
                code: code.trim().to_owned(),
                redeemed_at,
            },
        )?;
        // The household hears that its voucher counted (by the gateway's modem if the backhaul is
        // down, else through central).
        let amount = gramgrid_core::tariff::rupees(voucher.amount_paise);
        super::commands::insert_alert(
            &tx,
            &super::Alert {
                id: format!("{}:voucher_redeemed:{}", voucher.account, recharge.id),
                account: voucher.account.clone(),
                kind: gramgrid_core::message::Kind::VoucherRedeemed
                    .as_str()
                    .into(),
                created_at: redeemed_at,
                message: format!("Voucher of {amount} INR added to your account."),
                vars: [("amount".to_string(), amount)].into_iter().collect(),
            },
        )?;
        tx.commit()?;
        Ok(voucher)
    }
}

/// What the caches must learn after a downlink record is committed.
enum Effect {
    None,
    Account(Account),
    Meter,
}

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Encoding(e.to_string()))
}

fn apply_one(
    tx: &Transaction<'_>,
    sealer: &gramgrid_net::secrets::Sealer,
    event: &DownlinkEvent,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Effect> {
    match event {
        DownlinkEvent::Account {
            id,
            consumer_name,
            category,
            phone,
            created_at,
        } => {
            let account = Account {
                id: id.clone(),
                consumer_name: consumer_name.clone(),
                category: (*category).into(),
                phone: phone.clone(),
                created_at: *created_at,
            };
            super::upsert_account_in(tx, &account)?;
            Ok(Effect::Account(account))
        }
        DownlinkEvent::Meter {
            serial,
            account,
            installed_at,
            initial_register_wh,
            keys,
        } => {
            let install = MeterInstall {
                serial: serial.clone(),
                account: account.clone(),
                installed_at: *installed_at,
                initial_register_wh: *initial_register_wh,
            };
            let next_seq: i64 =
                tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM readings", [], |r| {
                    r.get(0)
                })?;
            let meter = super::install_meter_in(tx, &install, next_seq)?;
            if let Some(keys) = keys {
                match session_keys(keys) {
                    Some(keys) => super::link::set_meter_keys_in(tx, sealer, meter, &keys)?,
                    // Refusing the record would stop this gateway's sync for good; the meter waits
                    // unprovisioned until central sends keys that parse.
                    None => tracing::error!(
                        %serial,
                        "central sent radio keys that are not 32 hex digits; the meter stays unprovisioned"
                    ),
                }
            }
            Ok(Effect::Meter)
        }
        DownlinkEvent::Ledger(event) => {
            super::money::insert_events_in(tx, &[event.clone().into()], false)?;
            Ok(Effect::None)
        }
        DownlinkEvent::Tariff(version) => {
            keep_published::<WireTariffVersion>(tx, "tariff", &version.id, version, now)?;
            Ok(Effect::None)
        }
        DownlinkEvent::TariffDetails {
            version_id,
            tod,
            demand_paise_per_kw,
        } => {
            keep_published::<(String, Vec<WireTodSlot>, i64)>(
                tx,
                "tariff_details",
                version_id,
                &(version_id, tod, demand_paise_per_kw),
                now,
            )?;
            Ok(Effect::None)
        }
        DownlinkEvent::TariffNetMetering {
            version_id,
            export_banking,
            export_settlement_paise_per_kwh,
        } => {
            keep_published::<(String, bool, i64)>(
                tx,
                "tariff_net_metering",
                version_id,
                &(version_id, export_banking, export_settlement_paise_per_kwh),
                now,
            )?;
            Ok(Effect::None)
        }
        DownlinkEvent::Policy { version, policy } => {
            // Whether this changes the policy in force depends on the ones kept before it.
            if reads_back::<WirePolicy>(policy)?.is_ok() {
                super::guard::note_policy_change_in(tx, now)?;
            }
            keep_published::<WirePolicy>(tx, "policy", &version.to_string(), policy, now)?;
            Ok(Effect::None)
        }
        DownlinkEvent::PolicyRules { version, rules } => {
            keep_published::<WirePolicyRules>(
                tx,
                "policy_rules",
                &version.to_string(),
                rules,
                now,
            )?;
            Ok(Effect::None)
        }
        DownlinkEvent::Technician {
            name,
            full_name,
            role,
            password_hash,
            active,
            updated_at,
        } => {
            let account = super::TechnicianAccount {
                name: name.clone(),
                full_name: full_name.clone(),
                role: role.clone(),
                password_hash: password_hash.clone(),
                active: *active,
            };
            super::technicians::put_technician_in(tx, &account, Some(*updated_at))?;
            Ok(Effect::None)
        }
        DownlinkEvent::StockMeter { serial, keys } => {
            match session_keys(keys) {
                Some(keys) => super::stock::put_stock_meter_in(tx, sealer, serial, &keys)?,
                // As for a meter's keys: refusing the record would stop this gateway's sync.
                None => tracing::error!(
                    %serial,
                    "central sent a spare meter whose radio keys are not 32 hex digits; it is not put in stock"
                ),
            }
            Ok(Effect::None)
        }
        DownlinkEvent::AccountLanguage { account, language } => {
            tx.execute(
                "UPDATE accounts SET language = ?2 WHERE id = ?1",
                rusqlite::params![account, language],
            )?;
            Ok(Effect::None)
        }
        DownlinkEvent::AccountProtection { id, protected } => {
            super::guard::set_protection_in(tx, id, protected.as_deref())?;
            Ok(Effect::None)
        }
        DownlinkEvent::TransformerMeter {
            serial,
            installed_at,
            keys,
        } => {
            match session_keys(keys) {
                Some(keys) => {
                    super::audit::install_transformer_in(tx, sealer, serial, *installed_at, &keys)?
                }
                // As for a meter's keys: refusing the record would stop this gateway's sync.
                None => tracing::error!(
                    %serial,
                    "central sent a transformer meter whose radio keys are not 32 hex digits; it is not installed"
                ),
            }
            Ok(Effect::Meter)
        }
        DownlinkEvent::MeterDlms { serial, dlms } => {
            // Sent right after the meter's record, so the meter is known; if not (a record of a
            // meter this database lost), there is nothing to key. Either way, refusing the record
            // would stop this gateway's sync for good.
            let meter: Option<i64> = tx
                .query_row("SELECT id FROM meters WHERE serial = ?1", [serial], |r| {
                    r.get(0)
                })
                .optional()?;
            let Some(meter) = meter else {
                tracing::error!(%serial, "central sent the DLMS security of a meter this gateway does not know; ignored");
                return Ok(Effect::None);
            };
            match dlms.as_ref().map(WireDlms::security).transpose() {
                Ok(security) => {
                    super::link::set_meter_dlms_in(tx, sealer, meter, security.as_ref())?
                }
                // As for a meter's radio keys: the meter keeps what it had until central sends
                // security that parses.
                Err((field, problem)) => tracing::error!(
                    %serial,
                    "central sent DLMS security whose {field} {problem}; the meter keeps what it had"
                ),
            }
            // The link reloads its sessions after a meter record: the same for its security.
            Ok(Effect::Meter)
        }
        DownlinkEvent::AccountSanctionedLoad { id, watts } => {
            super::load::set_sanctioned_load_in(tx, id, *watts)?;
            Ok(Effect::None)
        }
        DownlinkEvent::BreakerRelease {
            hold_id,
            by,
            reason,
            at,
        } => {
            // A release of a hold this database does not know (restored from an older backup) or
            // released here already changes nothing; refusing it would stop sync for good.
            match super::guard::release_in(tx, hold_id, by, reason, *at) {
                Err(StoreError::UnknownHold(_) | StoreError::HoldAlreadyReleased { .. }) => {
                    tracing::warn!(hold = %hold_id, %by, "central released a breaker hold this gateway does not hold open; ignored");
                }
                other => other?,
            }
            Ok(Effect::None)
        }
        DownlinkEvent::DatabaseRestored { at } => {
            tracing::warn!(%at, "central found this database restored or replaced: disconnections are held for a while");
            super::guard::note_restored_in(tx, now)?;
            Ok(Effect::None)
        }
        DownlinkEvent::VoucherKeys(keys) => {
            for key in keys {
                tx.execute(
                    "INSERT INTO voucher_keys (key_id, body) VALUES (?1, ?2) ON CONFLICT (key_id) DO UPDATE SET body = ?2",
                    params![key.key_id, json(key)?],
                )?;
            }
            Ok(Effect::None)
        }
        DownlinkEvent::VoucherRevoked { redemption_id } => {
            tx.execute(
                "INSERT INTO vouchers_spent (redemption_id, where_spent, at) VALUES (?1, 'elsewhere', ?2)
                 ON CONFLICT (redemption_id) DO NOTHING",
                params![redemption_id, ts(now)],
            )?;
            Ok(Effect::None)
        }
        DownlinkEvent::Readings { blocks } => {
            keep_handed_over(tx, blocks, &[])?;
            Ok(Effect::None)
        }
        DownlinkEvent::NetReadings { blocks, exports } => {
            keep_handed_over(tx, blocks, exports)?;
            Ok(Effect::None)
        }
        DownlinkEvent::AccountRemoved { id, to_gateway } => {
            let to = to_gateway.as_deref().unwrap_or("no gateway");
            super::commands::withdraw_account_commands_in(
                tx,
                id,
                now,
                &format!("account moved to {to}"),
            )?;
            tx.execute(
                "UPDATE meters SET removed_at = ?2 WHERE account = ?1 AND removed_at IS NULL",
                params![id, ts(now)],
            )?;
            // Its protection and debt go with it: central sends them again if it ever comes back.
            tx.execute(
                "UPDATE accounts SET removed_at = ?2, protected = NULL, cut_at = NULL, cut_debt_paise = NULL WHERE id = ?1",
                params![id, ts(now)],
            )?;
            tracing::warn!(account = %id, to, "account moved away: no longer served here");
            Ok(Effect::Meter)
        }
    }
}

/// Session keys as the link uses them, from the hex a downlink record carries.
fn session_keys(keys: &gramgrid_proto::wire::MeterKeys) -> Option<SessionKeys> {
    Some(SessionKeys {
        dev_addr: DevAddr(keys.dev_addr),
        nwk_skey: SessionKey::from_hex(&keys.nwk_skey)?,
        app_skey: SessionKey::from_hex(&keys.app_skey)?,
    })
}

/// Keeps readings handed over by central, with their export registers, until they are ingested.
fn keep_handed_over(
    tx: &Transaction<'_>,
    blocks: &[ReadingBlock],
    exports: &[ReadingBlock],
) -> Result<()> {
    let exports = wire::exports_by_reading(blocks, exports)
        .map_err(|e| StoreError::Encoding(format!("handed-over readings from central: {e}")))?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO handed_over_readings (serial, at, register_wh, export_wh) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (serial, at) DO NOTHING",
    )?;
    for block in blocks {
        for (at, register) in block.readings() {
            let export = exports
                .get(&(block.meter.as_str(), at))
                .copied()
                .unwrap_or(0);
            insert.execute(params![block.meter, at, register, export])?;
        }
    }
    Ok(())
}

/// Keeps a record central published (`kind` of `version`), replacing an earlier copy of it.
/// Keeps what central published, if it reads back as the `Stored` it will be read as. One that
/// would not (a tariff with a duty of NaN is stored as JSON `null`)
/// is refused alone and reported to central as a `published_refused` anomaly: stored, it would
/// stop every later start of the gateway, and refused with an error it would stop every later
/// downlink record.
fn keep_published<Stored: serde::de::DeserializeOwned>(
    tx: &Transaction<'_>,
    kind: &str,
    version: &str,
    value: &impl serde::Serialize,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let body = match reads_back::<Stored>(value)? {
        Ok(body) => body,
        Err(error) => return refuse_published(tx, kind, version, &error, now),
    };
    tx.execute(
        "INSERT INTO published_config (kind, version, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (kind, version) DO UPDATE SET body = ?3",
        params![kind, version, body],
    )?;
    Ok(())
}

/// `value` as the JSON it is kept as, if that reads back as `Stored` (else why not).
fn reads_back<Stored: serde::de::DeserializeOwned>(
    value: &impl serde::Serialize,
) -> Result<std::result::Result<String, String>> {
    let body = json(value)?;
    Ok(match serde_json::from_str::<Stored>(&body) {
        Ok(_) => Ok(body),
        Err(error) => Err(error.to_string()),
    })
}

/// Reports a published record this gateway cannot keep: logged, and a `published_refused`
/// anomaly queued for central in the record's own transaction.
fn refuse_published(
    tx: &Transaction<'_>,
    kind: &str,
    version: &str,
    error: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let detail = format!(
        "central published {kind} {version}, which this gateway cannot keep ({error}); it is skipped"
    );
    tracing::error!(kind, version, %error, "published record refused");
    super::anomalies::anomaly_in(tx, None, "published_refused", &detail, now)
}
