//! The central end of gateway sync: `POST /sync/v1/exchange`, and the per-gateway downlink logs.
//!
//! One request is applied in one transaction (all or nothing; a resent request is harmless):
//! priority records in origin-sequence order from the stored high-water mark, stopping at a gap;
//! the readings batch when it continues the bulk lane; then the downlink records the gateway has
//! not applied. Every record passes `origin`'s checks first: a record this gateway may not send
//! (another gateway's account, forged money, an absurd value) is refused alone, acknowledged and
//! flagged, and the rest of the exchange goes on. See docs/sync.md.
use super::backhaul;
use super::db::Tx;
use super::downlink::{append_downlink, ensure_gateway, resend_when_current, technician_events};
use super::flags::flag;
use super::gateway_status;
use super::origin::{self, Origin, Refusal};
use super::readings;
use super::stock;
use super::{
    accounts, decisions, energy_audit, events, holds, identity, mqtt, notify, technicians,
    transformers, vouchers, Central, CentralError, Result,
};
use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::ts;
use gramgrid_core::rating;
use gramgrid_core::tariff::TariffBook;
use gramgrid_proto::wire::{
    self, DownlinkEvent, DownlinkRecord, PriorityRecord, ReadingBatch, ReadingBlock, UplinkEvent,
    UploadRequest, UploadResponse, WireRelayAction, WireRelayState,
};
use std::collections::{BTreeSet, HashMap};

/// Most downlink records in one answer; `more` tells the gateway to exchange again.
pub const DOWNLINK_PAGE: usize = 500;

/// The HTTP face of an exchange: decodes the body, applies it, encodes the answer.
pub async fn exchange(central: &Central, gateway: String, body: Bytes) -> Response {
    let request: UploadRequest = match wire::decode_request(&body) {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    };
    if let Err(error) = wire::check_version(request.protocol) {
        return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response();
    }
    if let Err(too_large) = check_size(&request) {
        return super::api::ApiError(too_large).into_response();
    }
    let book = central.tariff_book();
    let now = central.now();
    let applied = central
        .db()
        .transaction(move |tx| apply(tx, &book, &gateway, &request, now))
        .await;
    let answer = match applied {
        Ok(answer) => answer,
        Err(error) => return super::api::ApiError(error).into_response(),
    };
    match wire::encode(&answer) {
        Ok(bytes) => ([(header::CONTENT_TYPE, wire::CONTENT_TYPE)], bytes).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

/// Refuses an exchange bigger than central takes in one transaction (413, with the limits).
fn check_size(request: &UploadRequest) -> Result<()> {
    let readings: usize = request
        .readings
        .as_ref()
        .map_or(0, |b| b.blocks.iter().map(|block| block.len()).sum());
    let priority = request.priority.len();
    if readings > wire::MAX_READINGS_PER_EXCHANGE || priority > wire::MAX_PRIORITY_PER_EXCHANGE {
        return Err(CentralError::TooLarge(format!(
            "this exchange carries {readings} readings and {priority} priority records; one may carry at most {} and {}: lower the gateway's [sync] max_readings / max_priority_records",
            wire::MAX_READINGS_PER_EXCHANGE,
            wire::MAX_PRIORITY_PER_EXCHANGE
        )));
    }
    Ok(())
}

/// A sequence number or count from the wire as the database stores it (a hostile one past
/// `i64::MAX` is held there).
fn stored(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Applies one upload inside the caller's transaction and builds the answer.
pub fn apply(
    tx: &mut dyn Tx,
    book: &TariffBook,
    gateway: &str,
    request: &UploadRequest,
    now: DateTime<Utc>,
) -> Result<UploadResponse> {
    ensure_gateway(tx, gateway)?;
    // Taking the gateway's row first serialises concurrent exchanges of one gateway (PostgreSQL
    // row lock; SQLite has one writer anyway).
    let state = tx
        .query_opt(
            "UPDATE gateways SET last_sync_at = $2, last_gateway_time = $3 WHERE id = $1
             RETURNING priority_acked, readings_acked, lane_epoch, instance, last_exchange, technicians_resend, transformers_resend, dlms_resend",
            &[gateway.into(), ts(now).into(), ts(request.sent_at).into()],
        )?
        .ok_or_else(|| CentralError::NotFound(format!("no gateway '{gateway}'")))?;
    let known = identity::Known {
        lanes: identity::Lanes {
            priority_acked: state.int(0)?,
            readings_acked: state.int(1)?,
            epoch: state.int(2)?,
        },
        instance: state.opt_int(3)?.map(identity::from_stored),
        last_exchange: identity::from_stored(state.int(4)?),
    };
    mqtt::gateway_exchanged(tx, gateway, now)?;
    backhaul::record_exchange(tx, gateway, now)?;
    let lanes = identity::check(tx, gateway, known, request.identity, now)?;
    if let Some(status) = &request.status {
        // The gateway counted its backlog from the marks it holds.
        let marks = request
            .identity
            .map_or((lanes.priority_acked, lanes.readings_acked), |held| {
                (stored(held.priority_acked), stored(held.readings_acked))
            });
        gateway_status::record(tx, gateway, status, marks, now)?;
    }
    // A gateway that upgraded gets the records its older protocol skipped.
    let spoken = |owed: bool| (gateway, request.protocol, owed);
    resend_when_current(tx, spoken(state.int(5)? != 0), &technicians::OWED, |tx| {
        technician_events(tx)
    })?;
    resend_when_current(tx, spoken(state.int(6)? != 0), &transformers::OWED, |tx| {
        transformers::transformer_events(tx, gateway)
    })?;
    resend_when_current(tx, spoken(state.int(7)? != 0), &crate::dlms::OWED, |tx| {
        crate::dlms::dlms_events(tx, gateway)
    })?;
    let (mut priority_acked, mut readings_acked) = (lanes.priority_acked, lanes.readings_acked);
    let mut origin = Origin::new(gateway, book, now, lanes.epoch);
    let mut touched = BTreeSet::new();
    let mut records: Vec<&PriorityRecord> = request.priority.iter().collect();
    records.sort_by_key(|r| r.seq);
    for record in records {
        let seq = stored(record.seq);
        if seq <= priority_acked {
            continue;
        }
        if seq != priority_acked + 1 {
            break;
        }
        let refused = match origin.check(tx, &record.event)? {
            Ok(()) => apply_record(tx, &mut origin, record, &mut touched)?,
            Err(refusal) => Some(refusal),
        };
        if let Some(refusal) = refused {
            refusal.flag(
                tx,
                &format!("refused:{}", origin.record_id(record.seq)),
                gateway,
                now,
            )?;
        }
        priority_acked = seq;
    }
    if let Some(batch) = &request.readings {
        let after = stored(batch.after_seq);
        let through = stored(batch.through_seq);
        if after <= readings_acked && readings_acked < through {
            let exports = batch_exports(batch)?;
            let admitted = admitted_blocks(tx, &mut origin, batch, &exports, through)?;
            let all = admitted.all();
            let report = readings::ingest(tx, book, gateway, &all, &exports)?;
            readings_event(tx, gateway, &all, report.stored, now)?;
            touched.extend(report.accounts);
            readings_acked = through;
        }
    }
    if !touched.is_empty() {
        flag_overdrafts(tx, gateway, now)?;
        let touched: Vec<String> = touched.into_iter().collect();
        mqtt::balances_changed(tx, accounts::balance_paise, &touched, "sync", None, now)?;
    }
    let applied = stored(request.downlink_applied);
    tx.execute(
        "UPDATE gateways SET priority_acked = $2, readings_acked = $3, downlink_applied = $4, protocol = $5 WHERE id = $1",
        &[
            gateway.into(),
            priority_acked.into(),
            readings_acked.into(),
            applied.into(),
            i64::from(request.protocol).into(),
        ],
    )?;
    let rows = tx.query(
        "SELECT seq, event FROM downlink WHERE gateway = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        &[
            gateway.into(),
            applied.into(),
            (DOWNLINK_PAGE as i64 + 1).into(),
        ],
    )?;
    let more = rows.len() > DOWNLINK_PAGE;
    let mut downlink = Vec::with_capacity(rows.len().min(DOWNLINK_PAGE));
    for row in rows.iter().take(DOWNLINK_PAGE) {
        let event: DownlinkEvent = serde_json::from_str(&row.text(1)?)
            .map_err(|e| CentralError::Corrupt(e.to_string()))?;
        // An older gateway cannot decode this record; it skips its sequence number instead.
        if request.protocol < event.min_protocol() {
            continue;
        }
        downlink.push(DownlinkRecord {
            seq: u64::try_from(row.int(0)?).unwrap_or(0),
            event,
        });
    }
    Ok(UploadResponse {
        // Answered in the request's version, so an older gateway reads it.
        protocol: request.protocol,
        central_time: now,
        priority_acked: u64::try_from(priority_acked).unwrap_or(0),
        readings_acked: u64::try_from(readings_acked).unwrap_or(0),
        downlink,
        more,
    })
}

/// The export registers of a batch's readings, by meter and time; a batch whose exports name a
/// reading it does not carry, or an export register no meter can show, is refused whole.
fn batch_exports(batch: &ReadingBatch) -> Result<HashMap<(&str, i64), i64>> {
    let exports = wire::exports_by_reading(&batch.blocks, &batch.exports)
        .map_err(|e| CentralError::Invalid(e.to_string()))?;
    let plausible = |export: i64| {
        export == rating::EXPORT_UNKNOWN || (0..=rating::MAX_REGISTER_WH).contains(&export)
    };
    if let Some(((meter, _), export)) = exports.iter().find(|(_, export)| !plausible(**export)) {
        return Err(CentralError::Invalid(format!(
            "meter '{meter}': export register {export} Wh is outside 0 to {} Wh; the gateway is broken",
            rating::MAX_REGISTER_WH
        )));
    }
    Ok(exports)
}

/// Admitted readings of a batch: blocks of the gateway's own meters as sent, and the parts taken
/// before a move of meters that moved away from it (handed to their new gateway).
struct Admitted<'b> {
    own: Vec<(readings::MeterInfo, &'b ReadingBlock)>,
    handed_over: Vec<(readings::MeterInfo, ReadingBlock)>,
}

impl Admitted<'_> {
    fn all(&self) -> Vec<(readings::MeterInfo, &ReadingBlock)> {
        let handed = self
            .handed_over
            .iter()
            .map(|(info, block)| (info.clone(), block));
        self.own.iter().cloned().chain(handed).collect()
    }
}

/// The blocks of a readings batch this gateway may send; each refused block is flagged (once per
/// meter and batch) and left out. Of a meter that moved away from this gateway, the readings taken
/// before the move are kept and sent on to the new gateway (`DownlinkEvent::Readings`).
fn admitted_blocks<'b>(
    tx: &mut dyn Tx,
    origin: &mut Origin<'_>,
    batch: &'b ReadingBatch,
    exports: &HashMap<(&str, i64), i64>,
    through: i64,
) -> Result<Admitted<'b>> {
    let serials: Vec<&str> = batch.blocks.iter().map(|b| b.meter.as_str()).collect();
    origin.load_meters(tx, &serials)?;
    let mut admitted = Admitted {
        own: Vec::with_capacity(batch.blocks.len()),
        handed_over: Vec::new(),
    };
    for block in &batch.blocks {
        let refusal = match origin.check_block(block) {
            Ok(info) => {
                admitted.own.push((info, block));
                continue;
            }
            Err(refusal) => refusal,
        };
        let mut taken = 0;
        if let Some((info, to, blocks)) = origin.moved_away_part(block) {
            taken = blocks.iter().map(ReadingBlock::len).sum();
            let readings = blocks
                .iter()
                .flat_map(|b| b.readings().map(move |(at, r)| (b.meter.as_str(), at, r)))
                .map(|(meter, at, register)| {
                    let export = exports.get(&(meter, at)).copied().unwrap_or(0);
                    (meter.to_owned(), at, register, export)
                })
                .collect();
            append_downlink(tx, &to, &accounts::handover_record(readings))?;
            admitted
                .handed_over
                .extend(blocks.into_iter().map(|b| (info.clone(), b)));
        }
        if taken < block.len() {
            let id = format!(
                "refused:{}:readings:{through}:{}",
                origin.lane_id(),
                block.meter
            );
            refusal.flag(tx, &id, origin.gateway, origin.now)?;
        }
    }
    Ok(admitted)
}

/// Flags (once a day per account) every account of this gateway whose balance is below zero after
/// the sync: consumption on a negative balance while offline is a business event, not a conflict.
fn flag_overdrafts(tx: &mut dyn Tx, gateway: &str, now: DateTime<Utc>) -> Result<()> {
    let (_, policy) = accounts::policy_in_force(tx)?;
    let day = gramgrid_core::civil::local_date(now);
    for (_, account, balance) in accounts::gateway_balances(tx, Some(gateway), &policy.arrears)? {
        if balance >= 0 {
            continue;
        }
        flag(
            tx,
            &format!("overdraft:{account}:{day}"),
            "offline_overdraft",
            Some(gateway),
            Some(&account),
            now,
            &format!("balance {balance} paise after sync with gateway '{gateway}'"),
        )?;
    }
    Ok(())
}

/// Applies one admitted record; returns a refusal found only while applying it (a voucher code
/// that does not verify, a legacy redemption of a voucher central never issued).
fn apply_record(
    tx: &mut dyn Tx,
    checks: &mut Origin<'_>,
    record: &PriorityRecord,
    touched: &mut BTreeSet<String>,
) -> Result<Option<Refusal>> {
    let gateway = checks.gateway;
    let origin = checks.record_id(record.seq);
    match &record.event {
        UplinkEvent::Ledger(event) => {
            let inserted = accounts::insert_ledger_event(tx, &event.clone().into(), gateway);
            money_recorded(
                tx,
                inserted,
                gateway,
                &origin,
                &event.account,
                event.at,
                touched,
            )?;
        }
        UplinkEvent::VoucherRedeemed {
            voucher,
            redeemed_at,
        } => {
            let redemption =
                vouchers::redeemed_at_gateway(tx, gateway, voucher, *redeemed_at, false)?;
            if redemption == vouchers::Redemption::Unknown {
                return Ok(Some(Refusal::forged_voucher(
                    Some(&voucher.account),
                    format!(
                        "redemption of voucher {} names no voucher central issued",
                        voucher.redemption_id()
                    ),
                )));
            }
        }
        UplinkEvent::VoucherCode { code, redeemed_at } => {
            return redeem_code(tx, checks, code, *redeemed_at, touched, &origin);
        }
        UplinkEvent::RelayCommand {
            id,
            meter,
            action,
            state,
            at,
            detail,
        } => {
            tx.execute(
                "INSERT INTO relay_events (id, gateway, meter, what, at, detail) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[origin.as_str().into(), gateway.into(), meter.as_str().into(),
                  format!("command {id} {action:?} {state}").into(), ts(*at).into(), detail.as_str().into()],
            )?;
            let action = match action {
                WireRelayAction::Connect => "connect",
                WireRelayAction::Disconnect => "disconnect",
            };
            let report = RelayReport {
                meter,
                command: Some((id.as_str(), action)),
                state,
                at: *at,
                detail,
            };
            relay_event(tx, gateway, report, checks.now)?;
        }
        UplinkEvent::RelayState { meter, state, at } => {
            let state = match state {
                WireRelayState::Connected => "connected",
                WireRelayState::Disconnected => "disconnected",
                WireRelayState::Unknown => "unknown",
            };
            tx.execute(
                "UPDATE meters SET relay_state = $2, relay_state_at = $3 WHERE serial = $1 AND (relay_state_at IS NULL OR relay_state_at <= $3)",
                &[meter.as_str().into(), state.into(), ts(*at).into()],
            )?;
            tx.execute(
                "INSERT INTO relay_events (id, gateway, meter, what, at, detail) VALUES ($1, $2, $3, $4, $5, '') ON CONFLICT DO NOTHING",
                &[origin.as_str().into(), gateway.into(), meter.as_str().into(), format!("state {state}").into(), ts(*at).into()],
            )?;
            let report = RelayReport {
                meter,
                command: None,
                state,
                at: *at,
                detail: "",
            };
            relay_event(tx, gateway, report, checks.now)?;
        }
        UplinkEvent::Alert {
            id,
            account,
            kind,
            created_at,
            message,
        } => {
            // Namespaced by the certificate's gateway id: no gateway can pre-empt another's ids.
            let id = format!("{gateway}/{id}");
            notify::enqueue(
                tx,
                &id,
                account,
                kind,
                message,
                &Default::default(),
                *created_at,
            )?;
        }
        UplinkEvent::Notice {
            id,
            account,
            kind,
            created_at,
            message,
            vars,
            sent_by_gateway_at,
        } => {
            let id = format!("{gateway}/{id}");
            let vars = vars.iter().cloned().collect();
            notify::enqueue(tx, &id, account, kind, message, &vars, *created_at)?;
            if let Some(at) = sent_by_gateway_at {
                notify::record_sent_by_gateway(tx, gateway, &id, message, *at)?;
            }
        }
        UplinkEvent::Override {
            id,
            account,
            action,
            until,
            technician,
            reason,
            created_at,
        } => {
            tx.execute(
                "INSERT INTO overrides (id, gateway, account, action, until, technician, reason, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[format!("{gateway}/{id}").into(), gateway.into(), account.as_str().into(), format!("{action:?}").to_lowercase().into(),
                  ts(*until).into(), technician.as_str().into(), reason.as_str().into(), ts(*created_at).into()],
            )?;
        }
        UplinkEvent::Anomaly {
            meter,
            kind,
            detail,
            at,
        } => {
            readings::record_anomaly(tx, &origin, gateway, meter.as_deref(), kind, detail, *at)?;
            // One about the gateway itself (no meter: its disk below the reserve and back, a
            // published record it could not keep) is for the office to act on.
            if meter.is_none() {
                flag(
                    tx,
                    &format!("anomaly:{origin}"),
                    kind,
                    Some(gateway),
                    None,
                    *at,
                    detail,
                )?;
            }
        }
        UplinkEvent::ClockSkew {
            gateway_time,
            central_time,
        } => {
            flag(
                tx,
                &format!("clock_skew:{origin}"),
                "clock_skew",
                Some(gateway),
                None,
                *central_time,
                &format!("gateway clock said {gateway_time} when central's said {central_time}"),
            )?;
        }
        UplinkEvent::Decision {
            id,
            account,
            at,
            record,
        } => {
            let parsed = match origin::decision_record(account, record) {
                Ok(parsed) => parsed,
                Err(refusal) => return Ok(Some(refusal)),
            };
            decisions::record(tx, gateway, id, *at, &parsed, record, checks.now)?;
        }
        UplinkEvent::BreakerHeld {
            id,
            at,
            accounts,
            reasons,
        } => {
            holds::record_breaker_hold(tx, gateway, id, *at, accounts, reasons, checks.now)?;
        }
        UplinkEvent::BreakerReleased {
            hold_id,
            by,
            reason,
            at,
        } => {
            holds::record_gateway_release(tx, gateway, hold_id, by, reason, *at)?;
        }
        UplinkEvent::TechnicianAction {
            id,
            technician,
            action,
            subject,
            detail,
            reason,
            at,
        } => {
            let action = technicians::TechnicianAction {
                id: id.clone(),
                gateway: gateway.to_owned(),
                technician: technician.clone(),
                action: action.clone(),
                subject: subject.clone(),
                detail: detail.clone(),
                reason: reason.clone(),
                at: *at,
                received_at: checks.now,
            };
            match technicians::record_action(tx, &action) {
                Ok(_) => {}
                Err(CentralError::Conflict(detail)) => {
                    return Ok(Some(Refusal::id_conflict(subject.as_deref(), detail)))
                }
                Err(other) => return Err(other),
            }
        }
        UplinkEvent::MeterInstalled {
            serial,
            account,
            installed_at,
            first_register_wh,
            replaces,
            ..
        } => {
            let installation = stock::Installation {
                gateway,
                serial,
                account,
                installed_at: *installed_at,
                first_register_wh: *first_register_wh,
                replaces: replaces.as_deref(),
            };
            if let Err(why) = stock::record_installation(tx, &installation)? {
                return Ok(Some(Refusal::foreign_meter(account, why)));
            }
            touched.insert(account.clone());
        }
        UplinkEvent::MeterEvent {
            id,
            meter,
            kind,
            at,
            command_id,
        } => {
            let account = checks.meter(tx, meter)?.ok().map(|info| info.account);
            let event = events::ReportedEvent {
                gateway,
                id,
                meter,
                account: account.as_deref(),
                kind,
                at: *at,
                command_id: *command_id,
            };
            events::record_event(tx, &event, checks.now)?;
        }
        UplinkEvent::SupplyOutage {
            id,
            started_at,
            ended_at,
            meters,
        } => {
            let outage = events::OutageRow {
                id: id.clone(),
                gateway: gateway.to_owned(),
                started_at: *started_at,
                ended_at: *ended_at,
                meters: meters.clone(),
            };
            events::record_outage(tx, &outage, checks.now)?;
        }
        UplinkEvent::EnergyAudit(day) => {
            energy_audit::record(tx, gateway, day, checks.now)?;
        }
        UplinkEvent::SanctionedLoadExceeded {
            id,
            account,
            month,
            intervals,
            max_demand_w,
            sanctioned_w,
            at,
        } => {
            let detail = format!(
                "in {month} the household drew more than its sanctioned load of {sanctioned_w} W in {intervals} 15-minute intervals (maximum {max_demand_w} W): check the connection, or revise the sanctioned load"
            );
            flag(
                tx,
                &format!("{gateway}:{id}"),
                "sanctioned_load_exceeded",
                Some(gateway),
                Some(account),
                *at,
                &detail,
            )?;
        }
    }
    Ok(None)
}

/// A relay report of a gateway, as `account/{id}/relay` tells it.
struct RelayReport<'a> {
    meter: &'a str,
    /// The command's id and action, for a command's progress.
    command: Option<(&'a str, &'a str)>,
    state: &'a str,
    at: DateTime<Utc>,
    detail: &'a str,
}

/// Queues `account/{id}/relay` for a relay report (a meter of no account is left out: the
/// origin checks refuse those before).
fn relay_event(
    tx: &mut dyn Tx,
    gateway: &str,
    report: RelayReport<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    if tx.events().is_none() {
        return Ok(());
    }
    let Some(row) = tx.query_opt(
        "SELECT account FROM meters WHERE serial = $1",
        &[report.meter.into()],
    )?
    else {
        return Ok(());
    };
    let event = mqtt::Event::Relay {
        account: row.text(0)?,
        gateway: gateway.to_owned(),
        meter: report.meter.to_owned(),
        report: if report.command.is_some() {
            "command"
        } else {
            "state"
        }
        .to_owned(),
        command: report.command.map(|(id, _)| id.to_owned()),
        action: report.command.map(|(_, action)| action.to_owned()),
        state: report.state.to_owned(),
        at: mqtt::rfc3339(report.at),
        detail: report.detail.to_owned(),
    };
    mqtt::enqueue(tx, event, now)
}

/// Queues `gateway/{id}/readings` for the readings an exchange took in.
fn readings_event(
    tx: &mut dyn Tx,
    gateway: &str,
    blocks: &[(readings::MeterInfo, &ReadingBlock)],
    stored: usize,
    now: DateTime<Utc>,
) -> Result<()> {
    let count: usize = blocks.iter().map(|(_, b)| b.len()).sum();
    if tx.events().is_none() || count == 0 {
        return Ok(());
    }
    let nonempty = || blocks.iter().map(|(_, b)| *b).filter(|b| !b.is_empty());
    let first = nonempty().map(|b| b.first_at).min().unwrap_or_default();
    let last = nonempty()
        .map(|b| b.first_at + i64::from(b.interval_s) * (b.len() as i64 - 1))
        .max()
        .unwrap_or_default();
    let meters: BTreeSet<&str> = nonempty().map(|b| b.meter.as_str()).collect();
    let event = mqtt::Event::Readings {
        gateway: gateway.to_owned(),
        count: count as u64,
        stored: stored as u64,
        meters: meters.into_iter().map(str::to_owned).collect(),
        first_interval_end: mqtt::rfc3339(gramgrid_core::civil::from_ts(first)),
        last_interval_end: mqtt::rfc3339(gramgrid_core::civil::from_ts(last)),
    };
    mqtt::enqueue(tx, event, now)
}

/// Verifies an uploaded voucher code, checks its account is this gateway's, and records it.
fn redeem_code(
    tx: &mut dyn Tx,
    checks: &mut Origin<'_>,
    code: &str,
    redeemed_at: DateTime<Utc>,
    touched: &mut BTreeSet<String>,
    origin: &str,
) -> Result<Option<Refusal>> {
    let voucher = match vouchers::verify_gateway_code(tx, code, redeemed_at)? {
        Ok(voucher) => voucher,
        Err(refused) => {
            return Ok(Some(Refusal::forged_voucher(
                None,
                format!("voucher code redeemed at {redeemed_at}: {refused}"),
            )))
        }
    };
    if let Err(refusal) = checks.account(tx, &voucher.account)? {
        return Ok(Some(refusal));
    }
    let gateway = checks.gateway;
    let recorded = vouchers::record_gateway_code(tx, gateway, &voucher, redeemed_at);
    money_recorded(
        tx,
        recorded,
        gateway,
        origin,
        &voucher.account,
        checks.now,
        touched,
    )?;
    Ok(None)
}

/// The outcome of recording a gateway's money event: the account's balance changed, or the
/// event's id was already taken by other content, which is flagged (the first is kept).
fn money_recorded<T>(
    tx: &mut dyn Tx,
    recorded: Result<T>,
    gateway: &str,
    origin: &str,
    account: &str,
    at: DateTime<Utc>,
    touched: &mut BTreeSet<String>,
) -> Result<()> {
    match recorded {
        Ok(_) => {
            touched.insert(account.to_owned());
            Ok(())
        }
        Err(CentralError::Conflict(detail)) => flag(
            tx,
            &format!("event_conflict:{origin}"),
            "event_id_conflict",
            Some(gateway),
            Some(account),
            at,
            &detail,
        ),
        Err(other) => Err(other),
    }
}

#[cfg(test)]
mod tests;
