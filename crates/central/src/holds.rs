//! Holds on disconnections, so that no mass disconnection happens by mistake.
//!
//! - **Gateway breaker holds.** A gateway's disconnection breaker (`gramgrid_core::breaker`) holds a
//!   pass's disconnections when they are too many or a wrong cut is likely, and reports the hold
//!   (`BreakerHeld`): central stores it and raises an urgent `breaker_held` flag. A supervisor
//!   releases it here (the gateway is sent `BreakerRelease`) or at the gateway (reported as
//!   `BreakerReleased`, kept for the audit). A hold is released once.
//! - **Central's breaker on policy publishes.** A policy whose disconnect threshold (or arrears
//!   rules) would newly put more of a gateway's accounts at or below the threshold than the new
//!   policy's breaker allows in a day ([`newly_cut`]) is not published: it waits as a policy hold
//!   until an admin releases it, and is then published as it would have been.
use super::db::{Row, Tx};
use super::downlink::append_downlink;
use super::flags::flag;
use super::{accounts, check_reason, CentralError, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::breaker::BreakerConfig;
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_core::policy::PolicyConfig;
use gramgrid_proto::wire::DownlinkEvent;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who released a hold, when, why and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The API token's name, `cli:<user>` for the command line, or the supervisor's name the
    /// gateway reported.
    pub by: String,
    /// When (UTC, whole seconds; the gateway's clock for a release made there).
    pub at: DateTime<Utc>,
    /// Why, as the supervisor wrote it.
    pub reason: String,
    /// `central` (the API or the command line) or `gateway` (at the gateway itself).
    pub place: String,
}

fn release_from_row(row: &Row, first: usize) -> Result<Option<Release>> {
    let Some(by) = row.opt_text(first)? else {
        return Ok(None);
    };
    Ok(Some(Release {
        by,
        at: from_ts(row.int(first + 1)?),
        reason: row.text(first + 2)?,
        place: row.text(first + 3)?,
    }))
}

/// A gateway's breaker hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerHold {
    /// The gateway that holds.
    pub gateway: String,
    /// The hold's id at that gateway.
    pub id: String,
    /// When the breaker tripped (gateway clock, UTC).
    pub at: DateTime<Utc>,
    /// The accounts whose disconnection is held.
    pub accounts: Vec<String>,
    /// Why, in words.
    pub reasons: Vec<String>,
    /// When central received it.
    pub received_at: DateTime<Utc>,
    /// The release, once there is one.
    pub released: Option<Release>,
}

const HOLD_COLUMNS: &str = "gateway, id, at, accounts, reasons, received_at, released_by, released_at, release_reason, released_where";

fn json_list(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| CentralError::Corrupt(format!("a hold's list: {e}")))
}

fn to_json(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| CentralError::Corrupt(e.to_string()))
}

fn hold_from_row(row: &Row) -> Result<BreakerHold> {
    Ok(BreakerHold {
        gateway: row.text(0)?,
        id: row.text(1)?,
        at: from_ts(row.int(2)?),
        accounts: json_list(&row.text(3)?)?,
        reasons: json_list(&row.text(4)?)?,
        received_at: from_ts(row.int(5)?),
        released: release_from_row(row, 6)?,
    })
}

/// Whether `gateway` reported a breaker hold `id`.
pub(crate) fn is_breaker_hold(tx: &mut dyn Tx, gateway: &str, id: &str) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM breaker_holds WHERE gateway = $1 AND id = $2",
            &[gateway.into(), id.into()],
        )?
        .is_some())
}

/// Stores a hold a gateway reported (once per id) and raises the urgent `breaker_held` flag.
pub(crate) fn record_breaker_hold(
    tx: &mut dyn Tx,
    gateway: &str,
    id: &str,
    at: DateTime<Utc>,
    held: &[String],
    reasons: &[String],
    now: DateTime<Utc>,
) -> Result<()> {
    let new = tx.execute(
        "INSERT INTO breaker_holds (gateway, id, at, accounts, reasons, received_at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT DO NOTHING",
        &[gateway.into(), id.into(), ts(at).into(), to_json(&held)?.into(), to_json(&reasons)?.into(), ts(now).into()],
    )?;
    if new == 1 {
        flag(
            tx,
            &format!("breaker_held:{gateway}:{id}"),
            "breaker_held",
            Some(gateway),
            None,
            now,
            &format!(
                "gateway '{gateway}' holds {} disconnection(s) (hold '{id}'): {}; check them, then release with POST /api/v1/gateways/{gateway}/holds/{id}/release or `gramgrid central release {id} --gateway {gateway} --reason ...`",
                held.len(),
                reasons.join("; ")
            ),
        )?;
    }
    Ok(())
}

/// Records a release a supervisor made at the gateway (audit). A hold already released keeps its
/// first release.
pub(crate) fn record_gateway_release(
    tx: &mut dyn Tx,
    gateway: &str,
    hold_id: &str,
    by: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    tx.execute(
        "UPDATE breaker_holds SET released_by = $3, released_at = $4, release_reason = $5, released_where = 'gateway'
         WHERE gateway = $1 AND id = $2 AND released_by IS NULL",
        &[gateway.into(), hold_id.into(), by.into(), ts(at).into(), reason.into()],
    )?;
    Ok(())
}

/// The breaker holds of `gateway` (of every gateway when None), newest first.
pub fn breaker_holds(tx: &mut dyn Tx, gateway: Option<&str>) -> Result<Vec<BreakerHold>> {
    let (which, params) = match gateway {
        Some(gateway) => {
            if tx
                .query_opt("SELECT 1 FROM gateways WHERE id = $1", &[gateway.into()])?
                .is_none()
            {
                return Err(CentralError::NotFound(format!("no gateway '{gateway}'")));
            }
            ("WHERE gateway = $1", vec![gateway.into()])
        }
        None => ("", Vec::new()),
    };
    tx.query(
        &format!("SELECT {HOLD_COLUMNS} FROM breaker_holds {which} ORDER BY at DESC, gateway, id"),
        &params,
    )?
    .iter()
    .map(hold_from_row)
    .collect()
}

fn breaker_hold(tx: &mut dyn Tx, gateway: &str, id: &str) -> Result<BreakerHold> {
    let row = tx
        .query_opt(
            &format!("SELECT {HOLD_COLUMNS} FROM breaker_holds WHERE gateway = $1 AND id = $2"),
            &[gateway.into(), id.into()],
        )?
        .ok_or_else(|| {
            CentralError::NotFound(format!(
                "gateway '{gateway}' has no breaker hold '{id}' (see GET /api/v1/gateways/{gateway}/holds)"
            ))
        })?;
    hold_from_row(&row)
}

fn already_released(what: &str, release: &Release) -> CentralError {
    CentralError::Conflict(format!(
        "{what} was already released by '{}' at {} ({}): {}",
        release.by, release.at, release.place, release.reason
    ))
}

/// Releases a gateway's breaker hold from central: its accounts may be disconnected in the
/// gateway's next pass, once. The gateway is sent the release. `by` names who released it.
pub fn release_breaker_hold(
    tx: &mut dyn Tx,
    gateway: &str,
    hold_id: &str,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<BreakerHold> {
    check_reason("the release's reason", reason)?;
    let hold = breaker_hold(tx, gateway, hold_id)?;
    if let Some(release) = &hold.released {
        return Err(already_released(
            &format!("breaker hold '{hold_id}' of gateway '{gateway}'"),
            release,
        ));
    }
    let at = from_ts(ts(now));
    tx.execute(
        "UPDATE breaker_holds SET released_by = $3, released_at = $4, release_reason = $5, released_where = 'central'
         WHERE gateway = $1 AND id = $2",
        &[gateway.into(), hold_id.into(), by.into(), ts(at).into(), reason.into()],
    )?;
    append_downlink(
        tx,
        gateway,
        &DownlinkEvent::BreakerRelease {
            hold_id: hold_id.to_owned(),
            by: by.to_owned(),
            reason: reason.to_owned(),
            at,
        },
    )?;
    breaker_hold(tx, gateway, hold_id)
}

/// How a new policy would change one gateway's disconnections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayCount {
    /// The gateway.
    pub gateway: String,
    /// Accounts assigned to it.
    pub accounts: usize,
    /// Its accounts the new policy puts at or below the disconnect threshold that are above the
    /// one in force.
    pub newly_cut: usize,
    /// The most disconnections its breaker allows in a day under the new policy
    /// (`BreakerConfig::daily_limit`).
    pub limit: usize,
}

/// One account's standing for the publish guard: its balance under the rules in force and under
/// the new policy's (they differ only when the arrears rules change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The account's gateway.
    pub gateway: String,
    /// Balance under the policy in force, in paise.
    pub balance_now_paise: i64,
    /// Balance under the new policy, in paise.
    pub balance_new_paise: i64,
}

/// For each gateway, how many of its accounts `new` would newly put at or below its disconnect
/// threshold (at or below it under `new`, above `current`'s now), and the day's limit of `new`'s
/// breaker for that gateway. Pure; gateways in name order.
pub fn newly_cut(
    standings: &[Standing],
    current_threshold_paise: i64,
    new_threshold_paise: i64,
    breaker: &BreakerConfig,
) -> Vec<GatewayCount> {
    let mut per_gateway: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for s in standings {
        let entry = per_gateway.entry(s.gateway.as_str()).or_default();
        entry.0 += 1;
        if s.balance_new_paise <= new_threshold_paise
            && s.balance_now_paise > current_threshold_paise
        {
            entry.1 += 1;
        }
    }
    per_gateway
        .into_iter()
        .map(|(gateway, (accounts, newly_cut))| GatewayCount {
            gateway: gateway.to_owned(),
            accounts,
            newly_cut,
            limit: breaker.daily_limit(accounts),
        })
        .collect()
}

/// A policy publish central's breaker held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyHold {
    /// The hold's id (release it by this id).
    pub id: String,
    /// The policy version that waits.
    pub version: u64,
    /// The policy that waits.
    pub policy: PolicyConfig,
    /// Each gateway's count and limit when it was held.
    pub gateways: Vec<GatewayCount>,
    /// When it was held.
    pub held_at: DateTime<Utc>,
    /// Who asked for the publish (the API token's name, or `cli:<user>`).
    pub held_by: String,
    /// The release (which published it), once there is one.
    pub released: Option<Release>,
}

impl PolicyHold {
    /// Why the publish was held and how to release it, in one paragraph.
    pub fn explain(&self) -> String {
        let over: Vec<String> = self
            .gateways
            .iter()
            .filter(|g| g.newly_cut > g.limit)
            .map(|g| {
                format!(
                    "gateway '{}': {} of its {} accounts, more than the {} a day its breaker allows",
                    g.gateway, g.newly_cut, g.accounts, g.limit
                )
            })
            .collect();
        format!(
            "policy version {} was not published: it would newly put accounts at or below the disconnect threshold ({}); it is held as '{}': publish it with POST /api/v1/policy/holds/{}/release (or `gramgrid central release-policy {} --reason ...`) once checked",
            self.version,
            over.join("; "),
            self.id,
            self.id,
            self.id
        )
    }
}

/// What a guarded publish did.
#[derive(Debug, Clone, PartialEq)]
pub enum Publish {
    /// The policy was published and sent to every gateway.
    Published,
    /// Central's breaker held it: nothing was published; the hold waits for a release.
    Held(Box<PolicyHold>),
}

/// Publishes a policy version unless central's breaker holds it: counts each gateway's accounts
/// the new policy would newly put at or below the disconnect threshold (at central's balances),
/// and when any gateway's count exceeds the new policy's daily limit for it, stores a policy hold
/// instead. An invalid policy or version is refused first, held or not.
pub fn publish_policy(
    tx: &mut dyn Tx,
    version: u64,
    policy: &PolicyConfig,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Publish> {
    accounts::check_policy(tx, version, policy)?;
    let (_, current) = accounts::policy_in_force(tx)?;
    let now_balances = accounts::gateway_balances(tx, None, &current.arrears)?;
    let new_balances = if policy.arrears == current.arrears {
        now_balances.clone()
    } else {
        accounts::gateway_balances(tx, None, &policy.arrears)?
    };
    let standings: Vec<Standing> = now_balances
        .into_iter()
        .zip(new_balances)
        .map(|((gateway, _, now), (_, _, new))| Standing {
            gateway,
            balance_now_paise: now,
            balance_new_paise: new,
        })
        .collect();
    let gateways = newly_cut(
        &standings,
        current.disconnect_threshold_paise,
        policy.disconnect_threshold_paise,
        &policy.breaker,
    );
    if !gateways.iter().any(|g| g.newly_cut > g.limit) {
        accounts::publish_policy(tx, version, policy, now)?;
        return Ok(Publish::Published);
    }
    let hold = PolicyHold {
        id: uuid::Uuid::now_v7().to_string(),
        version,
        policy: policy.clone(),
        gateways,
        held_at: from_ts(ts(now)),
        held_by: by.to_owned(),
        released: None,
    };
    let stored_version = i64::try_from(version)
        .map_err(|_| CentralError::Invalid(format!("policy version {version} is too large")))?;
    tx.execute(
        "INSERT INTO policy_holds (id, version, policy, counts, held_at, held_by) VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            hold.id.as_str().into(),
            stored_version.into(),
            to_json(&hold.policy)?.into(),
            to_json(&hold.gateways)?.into(),
            ts(hold.held_at).into(),
            by.into(),
        ],
    )?;
    Ok(Publish::Held(Box::new(hold)))
}

/// Policy holds are released at central only: the place is a constant.
const POLICY_HOLD_COLUMNS: &str =
    "id, version, policy, counts, held_at, held_by, released_by, released_at, release_reason, 'central'";

fn policy_hold_from_row(row: &Row) -> Result<PolicyHold> {
    let corrupt = |e: serde_json::Error| CentralError::Corrupt(format!("policy hold: {e}"));
    Ok(PolicyHold {
        id: row.text(0)?,
        version: u64::try_from(row.int(1)?)
            .map_err(|e| CentralError::Corrupt(format!("policy hold version: {e}")))?,
        policy: serde_json::from_str(&row.text(2)?).map_err(corrupt)?,
        gateways: serde_json::from_str(&row.text(3)?).map_err(corrupt)?,
        held_at: from_ts(row.int(4)?),
        held_by: row.text(5)?,
        released: release_from_row(row, 6)?,
    })
}

/// Every policy hold, newest first.
pub fn policy_holds(tx: &mut dyn Tx) -> Result<Vec<PolicyHold>> {
    tx.query(
        &format!("SELECT {POLICY_HOLD_COLUMNS} FROM policy_holds ORDER BY held_at DESC, id DESC"),
        &[],
    )?
    .iter()
    .map(policy_hold_from_row)
    .collect()
}

fn policy_hold(tx: &mut dyn Tx, id: &str) -> Result<PolicyHold> {
    let row = tx
        .query_opt(
            &format!("SELECT {POLICY_HOLD_COLUMNS} FROM policy_holds WHERE id = $1"),
            &[id.into()],
        )?
        .ok_or_else(|| {
            CentralError::NotFound(format!(
                "no policy hold '{id}' (see GET /api/v1/policy/holds)"
            ))
        })?;
    policy_hold_from_row(&row)
}

/// Releases a policy hold: the policy is published as the held publish would have been (its
/// version must still be the next: a newer publish since makes it 409).
pub fn release_policy_hold(
    tx: &mut dyn Tx,
    id: &str,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<PolicyHold> {
    check_reason("the release's reason", reason)?;
    let hold = policy_hold(tx, id)?;
    if let Some(release) = &hold.released {
        return Err(already_released(&format!("policy hold '{id}'"), release));
    }
    accounts::publish_policy(tx, hold.version, &hold.policy, now)?;
    tx.execute(
        "UPDATE policy_holds SET released_by = $2, released_at = $3, release_reason = $4 WHERE id = $1",
        &[id.into(), by.into(), ts(now).into(), reason.into()],
    )?;
    policy_hold(tx, id)
}

#[cfg(test)]
mod tests;
