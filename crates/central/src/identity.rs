//! A gateway database's identity across exchanges: central tells a database that was replaced (a
//! new `instance`) or restored from a backup (an exchange number central has seen before), flags
//! it, and resynchronises the lanes without losing either side's records.
//!
//! A gateway numbers its exchanges and stores the number before it sends, so within one database
//! history every exchange has a higher number than any before it, whether or not an answer was
//! lost. A number at or below the highest central has seen is a database that went back in time.
//! Resynchronising takes the lanes' marks from the gateway's own (its outbox starts there; what
//! central already has is applied again idempotently), raises the lane epoch (so reused sequence
//! numbers make fresh origin ids), and sends the gateway back every money event of its accounts and
//! a refusal of every voucher it redeemed, which a restored database lost, and `DatabaseRestored`,
//! on which its disconnection breaker holds every cut for a while.
use super::db::Tx;
use super::downlink::append_downlink;
use super::flags::flag;
use super::{accounts, Result};
use chrono::{DateTime, Utc};
use gramgrid_proto::wire::{DownlinkEvent, GatewayIdentity};

/// The lanes' state for one exchange after the identity check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lanes {
    /// Priority-lane mark to apply from.
    pub priority_acked: i64,
    /// Readings-lane mark to apply from.
    pub readings_acked: i64,
    /// Lane epoch: part of the origin id of records applied in this exchange.
    pub epoch: i64,
}

/// What central holds about the gateway's database, read with the gateway's row.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// The lanes' marks and epoch as stored.
    pub lanes: Lanes,
    /// The instance last seen (None before the first protocol-2 exchange).
    pub instance: Option<u64>,
    /// The highest exchange number seen from it.
    pub last_exchange: u64,
}

/// Checks the identity a request shows, resynchronising when the database was replaced or
/// restored; returns the lanes to apply the request against.
pub fn check(
    tx: &mut dyn Tx,
    gateway: &str,
    known: Known,
    shown: Option<GatewayIdentity>,
    now: DateTime<Utc>,
) -> Result<Lanes> {
    let Some(shown) = shown else {
        return Ok(known.lanes);
    };
    let lanes = match known.instance {
        Some(instance) if instance != shown.instance => {
            resync(tx, gateway, known, shown, "gateway_replaced", now)?
        }
        Some(_) if shown.exchange <= known.last_exchange => {
            resync(tx, gateway, known, shown, "gateway_restored", now)?
        }
        _ => known.lanes,
    };
    tx.execute(
        "UPDATE gateways SET instance = $2, last_exchange = $3, lane_epoch = $4 WHERE id = $1",
        &[
            gateway.into(),
            as_stored(shown.instance).into(),
            as_stored(shown.exchange).into(),
            lanes.epoch.into(),
        ],
    )?;
    Ok(lanes)
}

/// Instances and exchange numbers are u64s stored bit for bit in a BIGINT.
pub fn as_stored(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// The inverse of [`as_stored`].
pub fn from_stored(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

fn resync(
    tx: &mut dyn Tx,
    gateway: &str,
    known: Known,
    shown: GatewayIdentity,
    kind: &str,
    now: DateTime<Utc>,
) -> Result<Lanes> {
    let lanes = Lanes {
        priority_acked: i64::try_from(shown.priority_acked).unwrap_or(i64::MAX),
        readings_acked: i64::try_from(shown.readings_acked).unwrap_or(i64::MAX),
        epoch: known.lanes.epoch + 1,
    };
    let what = if kind == "gateway_replaced" {
        "its database was replaced (another instance)"
    } else {
        "its database went back in time (restored from a backup?)"
    };
    flag(
        tx,
        &format!("{kind}:{gateway}:{}", lanes.epoch),
        kind,
        Some(gateway),
        None,
        now,
        &format!(
            "gateway '{gateway}': {what}; lanes resynchronised from the gateway's marks (priority {} → {}, readings {} → {}) and its money events and redeemed vouchers sent back to it; its disconnections are held for a while",
            known.lanes.priority_acked, lanes.priority_acked, known.lanes.readings_acked, lanes.readings_acked
        ),
    )?;
    send_back(tx, gateway)?;
    append_downlink(tx, gateway, &DownlinkEvent::DatabaseRestored { at: now })?;
    Ok(lanes)
}

/// Sends the gateway every money event of its accounts and a refusal of every voucher it
/// redeemed: a restored database may have lost them. Applying them is idempotent at the gateway.
fn send_back(tx: &mut dyn Tx, gateway: &str) -> Result<()> {
    for event in accounts::events_of_gateway_accounts(tx, gateway)? {
        append_downlink(tx, gateway, &DownlinkEvent::Ledger((&event).into()))?;
    }
    let redeemed = tx.query(
        "SELECT redemption_id FROM vouchers WHERE redeemed_by = $1 ORDER BY redemption_id",
        &[gateway.into()],
    )?;
    for row in redeemed {
        append_downlink(
            tx,
            gateway,
            &DownlinkEvent::VoucherRevoked {
                redemption_id: row.text(0)?,
            },
        )?;
    }
    Ok(())
}
