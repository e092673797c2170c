use super::*;
use crate::accounts::RechargeRequest;
use crate::testing::{central, TestCentral};
use chrono::{Duration, TimeZone};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 5, 30, 0).unwrap()
}

fn standing(gateway: &str, now: i64, new: i64) -> Standing {
    Standing {
        gateway: gateway.into(),
        balance_now_paise: now,
        balance_new_paise: new,
    }
}

#[test]
fn only_accounts_the_new_policy_newly_puts_at_or_below_the_threshold_count() {
    let breaker = BreakerConfig::default();
    let standings = [
        standing("gw-a", 5_000, 5_000), // above 0 now, at or below 10,000: counts
        standing("gw-a", 10_000, 10_000), // exactly at the new threshold: counts
        standing("gw-a", 10_001, 10_001), // stays above
        standing("gw-a", 0, 0),         // at or below the threshold already
        standing("gw-a", -300, -300),   // below already
        standing("gw-b", 20_000, 9_000), // the new arrears rules take it below: counts
    ];
    let counts = newly_cut(&standings, 0, 10_000, &breaker);
    assert_eq!(
        counts,
        [
            GatewayCount {
                gateway: "gw-a".into(),
                accounts: 5,
                newly_cut: 2,
                limit: 3
            },
            GatewayCount {
                gateway: "gw-b".into(),
                accounts: 1,
                newly_cut: 1,
                limit: 3
            },
        ]
    );
    // A threshold that goes down cuts nobody new.
    assert!(newly_cut(&standings, 10_000, 0, &breaker)
        .iter()
        .all(|c| c.newly_cut == 0));
    // 10 % of 200 accounts is 20 a day.
    let many: Vec<Standing> = (0..200).map(|_| standing("gw-c", 1, 1)).collect();
    assert_eq!(newly_cut(&many, 0, 0, &breaker)[0].limit, 20);
}

/// `gw-a` with `credited` accounts holding 100 INR and 5 at zero; `gw-b` with one at 100 INR.
fn village(credited: usize) -> TestCentral {
    let t = central();
    for i in 0..credited + 5 {
        let id = format!("A{i}");
        t.account(&id, Some("gw-a"));
        if i < credited {
            recharge(&t, &id, 10_000);
        }
    }
    t.account("B1", Some("gw-b"));
    recharge(&t, "B1", 10_000);
    t
}

fn recharge(t: &TestCentral, account: &str, amount_paise: i64) {
    let request = RechargeRequest {
        idempotency_key: format!("r-{account}-{amount_paise}"),
        account: account.into(),
        amount_paise,
        reference: None,
    };
    t.tx(move |tx| accounts::recharge(tx, &request, now()))
        .unwrap();
}

fn threshold(paise: i64) -> PolicyConfig {
    PolicyConfig {
        disconnect_threshold_paise: paise,
        ..PolicyConfig::default()
    }
}

fn publish(t: &TestCentral, version: u64, policy: PolicyConfig) -> Result<Publish> {
    t.tx(move |tx| publish_policy(tx, version, &policy, "office", now()))
}

fn policy_records(t: &TestCentral, gateway: &str) -> Vec<(&'static str, u64)> {
    t.downlink(gateway)
        .into_iter()
        .filter_map(|e| match e {
            DownlinkEvent::Policy { version, .. } => Some(("policy", version)),
            DownlinkEvent::PolicyRules { version, .. } => Some(("rules", version)),
            _ => None,
        })
        .collect()
}

fn in_force(t: &TestCentral) -> (Option<u64>, PolicyConfig) {
    t.tx(accounts::policy_in_force).unwrap()
}

#[test]
fn a_publish_within_the_limit_goes_out_with_its_rules_to_every_gateway() {
    let t = village(3);
    let mut policy = threshold(10_000);
    policy.arrears[0].recovery_percent = 40;
    assert_eq!(publish(&t, 1, policy.clone()).unwrap(), Publish::Published);
    for gateway in ["gw-a", "gw-b"] {
        assert_eq!(policy_records(&t, gateway), [("policy", 1), ("rules", 1)]);
    }
    // Central reads back the policy the gateways hold, rules included.
    assert_eq!(in_force(&t), (Some(1), policy));
    // A gateway seen later gets both too, in order.
    t.account("C1", Some("gw-c"));
    assert_eq!(policy_records(&t, "gw-c"), [("policy", 1), ("rules", 1)]);
}

#[test]
fn a_publish_that_would_cut_too_many_is_held_until_released() {
    let t = village(4);
    let Publish::Held(hold) = publish(&t, 1, threshold(10_000)).unwrap() else {
        panic!("published");
    };
    // 4 of gw-a's 9 accounts would be newly cut, its limit is 3; gw-b's one is within its limit.
    assert_eq!(hold.gateways.len(), 2);
    assert_eq!((hold.gateways[0].newly_cut, hold.gateways[0].limit), (4, 3));
    assert!(
        hold.explain()
            .contains("gateway 'gw-a': 4 of its 9 accounts"),
        "{}",
        hold.explain()
    );
    assert!(hold.explain().contains(&hold.id));
    // Nothing was published.
    assert!(policy_records(&t, "gw-a").is_empty());
    assert_eq!(in_force(&t).0, None);
    assert_eq!(t.tx(policy_holds).unwrap(), [(*hold).clone()]);
    // A release needs a reason; then it publishes, once.
    let id = hold.id.clone();
    let release = move |reason: &'static str| {
        let id = id.clone();
        move |tx: &mut dyn Tx| release_policy_hold(tx, &id, "admin-1", reason, now())
    };
    assert!(matches!(t.tx(release(" ")), Err(CentralError::Invalid(_))));
    let released = t.tx(release("arrears drive agreed")).unwrap();
    let by = released.released.unwrap();
    assert_eq!(
        (by.by.as_str(), by.reason.as_str()),
        ("admin-1", "arrears drive agreed")
    );
    for gateway in ["gw-a", "gw-b"] {
        assert_eq!(policy_records(&t, gateway), [("policy", 1), ("rules", 1)]);
    }
    assert_eq!(in_force(&t), (Some(1), threshold(10_000)));
    assert!(matches!(
        t.tx(release("again")),
        Err(CentralError::Conflict(m)) if m.contains("already released by 'admin-1'")
    ));
    assert!(matches!(
        t.tx(|tx| release_policy_hold(tx, "no-such-hold", "a", "b", now())),
        Err(CentralError::NotFound(_))
    ));
}

#[test]
fn a_held_publish_overtaken_by_a_newer_version_cannot_be_released() {
    let t = village(4);
    let Publish::Held(hold) = publish(&t, 1, threshold(10_000)).unwrap() else {
        panic!("published");
    };
    assert_eq!(publish(&t, 2, threshold(0)).unwrap(), Publish::Published);
    let id = hold.id.clone();
    let refused = t.tx(move |tx| release_policy_hold(tx, &id, "admin", "checked", now()));
    assert!(
        matches!(refused, Err(CentralError::Conflict(_))),
        "{refused:?}"
    );
    // The refused release changed nothing.
    assert!(t.tx(policy_holds).unwrap()[0].released.is_none());
    assert_eq!(in_force(&t).0, Some(2));
    // An invalid policy is refused, not held.
    assert!(matches!(
        publish(&t, 3, threshold(200_000)),
        Err(CentralError::Invalid(_))
    ));
}

fn report_hold(t: &TestCentral, gateway: &str, id: &str) {
    let (gateway, id) = (gateway.to_owned(), id.to_owned());
    t.tx(move |tx| {
        record_breaker_hold(
            tx,
            &gateway,
            &id,
            now(),
            &["A0".to_owned()],
            &["the clock jumped".to_owned()],
            now(),
        )
    })
    .unwrap();
}

fn release(t: &TestCentral, gateway: &'static str, id: &'static str) -> Result<BreakerHold> {
    t.tx(move |tx| release_breaker_hold(tx, gateway, id, "admin-1", "meter list checked", now()))
}

#[test]
fn a_breaker_hold_is_released_once_and_the_gateway_is_told() {
    let t = village(1);
    report_hold(&t, "gw-a", "hold-1");
    assert!(matches!(
        release(&t, "gw-a", "hold-2"),
        Err(CentralError::NotFound(_))
    ));
    assert!(matches!(
        release(&t, "gw-b", "hold-1"),
        Err(CentralError::NotFound(_))
    ));
    let later = now() + Duration::hours(1);
    assert!(matches!(
        t.tx(move |tx| breaker_holds(tx, Some("gw-z"))),
        Err(CentralError::NotFound(_))
    ));
    let released = release(&t, "gw-a", "hold-1").unwrap();
    let by = released.released.clone().unwrap();
    assert_eq!((by.by.as_str(), by.place.as_str()), ("admin-1", "central"));
    let sent: Vec<DownlinkEvent> = t
        .downlink("gw-a")
        .into_iter()
        .filter(|e| matches!(e, DownlinkEvent::BreakerRelease { .. }))
        .collect();
    assert_eq!(
        sent,
        [DownlinkEvent::BreakerRelease {
            hold_id: "hold-1".into(),
            by: "admin-1".into(),
            reason: "meter list checked".into(),
            at: now(),
        }]
    );
    assert!(matches!(
        release(&t, "gw-a", "hold-1"),
        Err(CentralError::Conflict(m)) if m.contains("already released by 'admin-1'")
    ));
    // A hold released at the gateway is not released again from here.
    report_hold(&t, "gw-a", "hold-3");
    t.tx(move |tx| record_gateway_release(tx, "gw-a", "hold-3", "ravi", "looked", later))
        .unwrap();
    assert!(matches!(
        release(&t, "gw-a", "hold-3"),
        Err(CentralError::Conflict(m)) if m.contains("(gateway)")
    ));
    assert_eq!(t.tx(|tx| breaker_holds(tx, Some("gw-a"))).unwrap().len(), 2);
    assert!(t
        .tx(|tx| breaker_holds(tx, Some("gw-b")))
        .unwrap()
        .is_empty());
}
