//! The demo's guardrail scenes, played at central: households that bring arrears from post-paid, a
//! protected household (a health centre), and a bad policy publish that central's breaker holds,
//! an engineer releases anyway, and the gateway's breaker stops; the office corrects it later.
use crate::village::{Village, VillageError};
use chrono::{DateTime, Utc};
use gramgrid_central::accounts::{self, ArrearsRequest};
use gramgrid_central::holds::{self, Publish};
use gramgrid_central::CentralError;
use gramgrid_core::policy::PolicyConfig;

/// Who publishes and releases in the demo's office.
const ENGINEER: &str = "office engineer";

/// What the office did, for the summary.
#[derive(Debug, Clone, Default)]
pub struct Scenes {
    /// Households with arrears from post-paid: (account, paise).
    pub arrears: Vec<(String, i64)>,
    /// The protected household, if the village has one short of credit.
    pub protected: Option<String>,
    /// The bad policy publish, if the run had a morning for it.
    pub bad_publish: Option<BadPublish>,
}

/// The bad publish and what central's breaker made of it.
#[derive(Debug, Clone)]
pub struct BadPublish {
    /// When it was published (simulated time).
    pub at: DateTime<Utc>,
    /// Its disconnect threshold, in paise.
    pub threshold_paise: i64,
    /// Central's hold: (accounts newly at or below the threshold, the day's limit), if it held it.
    pub central_hold: Option<(usize, usize)>,
    /// When the office published the correction.
    pub corrected_at: Option<DateTime<Utc>>,
}

/// Enters the arrears and the protection at central (after the opening credit, so that the
/// opening balances are not taken for arrears).
pub async fn enter_at_central(
    village: &Village,
    arrears: &[(String, i64)],
    protected: Option<&str>,
) -> Result<(), VillageError> {
    let now = village.clock.now();
    let arrears = arrears.to_vec();
    let protected = protected.map(str::to_string);
    village
        .central
        .central
        .db()
        .transaction(move |tx| {
            for (account, amount_paise) in &arrears {
                let request = ArrearsRequest {
                    id: format!("postpaid-{account}"),
                    amount_paise: *amount_paise,
                    note: Some("post-paid bill carried over".into()),
                };
                accounts::record_arrears(tx, account, &request, now)?;
            }
            if let Some(account) = &protected {
                accounts::set_protection(tx, account, Some("health centre"))?;
            }
            Ok::<_, CentralError>(())
        })
        .await?;
    Ok(())
}

/// Publishes `policy` as the next version; when central's breaker holds it, the engineer releases
/// it anyway. Returns central's hold (newly cut, limit) if there was one.
pub async fn publish(
    village: &Village,
    policy: &PolicyConfig,
) -> Result<Option<(usize, usize)>, VillageError> {
    let now = village.clock.now();
    let policy = policy.clone();
    let hold = village
        .central
        .central
        .db()
        .transaction(move |tx| {
            let (version, _) = accounts::policy_in_force(tx)?;
            let next = version.unwrap_or(0) + 1;
            match holds::publish_policy(tx, next, &policy, ENGINEER, now)? {
                Publish::Published => Ok::<_, CentralError>(None),
                Publish::Held(hold) => {
                    holds::release_policy_hold(
                        tx,
                        &hold.id,
                        ENGINEER,
                        "released in a hurry, without reading the counts",
                        now,
                    )?;
                    Ok(hold
                        .gateways
                        .iter()
                        .filter(|g| g.newly_cut > g.limit)
                        .map(|g| (g.newly_cut, g.limit))
                        .max())
                }
            }
        })
        .await?;
    Ok(hold)
}
