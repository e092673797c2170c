//! Vouchers through the console's router on SQLite and PostgreSQL: issue and print, cancel,
//! refusals, and a viewer kept out.
use super::*;
use crate::console::accounts::tests::{count, household, Client};
use crate::staff::StaffRole;
use crate::testing::backends;

/// The code on a printed voucher, as its groups.
fn printed_code(html: &str) -> String {
    let start = html.find(r#"<p class="code">"#).expect("the code") + 16;
    html[start..]
        .split('<')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn states(t: &crate::testing::TestCentral) -> Vec<(String, String)> {
    t.tx(|tx| {
        Ok(recent(tx, None, 10)?
            .into_iter()
            .map(|v| (v.redemption_id, v.state))
            .collect())
    })
    .unwrap()
}

/// An account to issue vouchers for, and a signing key.
fn counter(t: &crate::testing::TestCentral) {
    household(t, "ACC-1", "Sunita Devi", "+919812345678", "MTR-0001");
    t.tx(|tx| crate::vouchers::ensure_key(tx, chrono::Utc::now()))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voucher_is_issued_printed_with_its_qr_code_and_cancelled_once() {
    for t in backends() {
        counter(&t);
        let cashier = Client::login(&t, "kiran", StaffRole::Cashier).await;
        let form = cashier.get("/console/vouchers?account=ACC-1").await;
        assert_eq!(form.status, 200);
        assert!(form.body.contains(r#"name="account" value="ACC-1""#));

        let fields = [
            ("account", "ACC-1"),
            ("amount", "150"),
            ("valid_days", "30"),
        ];
        let printed = cashier.post("/console/vouchers", &fields).await;
        assert_eq!(printed.status, 200, "{}", printed.body);
        let code = printed_code(&printed.body);
        assert_eq!(code.split(' ').count(), code.matches(' ').count() + 1);
        assert!(code.split(' ').all(|group| group.len() <= 5), "{code}");
        assert!(printed.body.contains("<svg") && !printed.body.contains("<?xml"));
        assert!(printed.body.contains("₹150.00") && printed.body.contains("Sunita Devi"));

        // Redeemed at the counter (the printed groups are the code): it cannot be cancelled.
        let now = t.central.now();
        let redeemed = code.clone();
        t.tx(move |tx| crate::vouchers::redeem_at_central(tx, &redeemed, now))
            .unwrap();
        let [(redeemed_id, state)] = states(&t).try_into().unwrap();
        assert_eq!(state, "redeemed");
        let cancel_path = format!(
            "/console/vouchers/{}/cancel",
            api::percent_encode(&redeemed_id)
        );
        let refused = cashier.post(&cancel_path, &[("reason", "typo")]).await;
        assert_eq!(refused.status, 409, "{}", refused.body);
        assert!(
            refused.body.contains("already redeemed"),
            "{}",
            refused.body
        );

        // Another one, cancelled with a reason; a second cancel is refused.
        let second = cashier.post("/console/vouchers", &fields).await;
        assert_eq!(second.status, 200);
        let open = states(&t)
            .into_iter()
            .find(|(_, state)| state == "issued")
            .unwrap()
            .0;
        let cancel_path = format!("/console/vouchers/{}/cancel", api::percent_encode(&open));
        let no_reason = cashier.post(&cancel_path, &[("reason", " ")]).await;
        assert_eq!(no_reason.status, 400);
        let done = cashier
            .post(&cancel_path, &[("reason", "wrong amount")])
            .await;
        assert_eq!(done.status, 303, "{}", done.body);
        let list = cashier.get(done.location.as_deref().unwrap()).await;
        assert!(list.body.contains("is cancelled"), "{}", list.body);
        assert!(states(&t).contains(&(open.clone(), "cancelled".into())));
        let again = cashier
            .post(&cancel_path, &[("reason", "wrong amount")])
            .await;
        assert_eq!(again.status, 409);
        assert!(again.body.contains("already cancelled"), "{}", again.body);
        let why = count(
            &t,
            "SELECT COUNT(*) FROM api_audit WHERE token = 'staff:kiran' AND path LIKE '%/cancel?reason=wrong%20amount'",
        );
        assert_eq!(why, 1, "the cancel is audited with its reason, once");

        let unknown = cashier
            .post(
                "/console/vouchers",
                &[
                    ("account", "NOBODY"),
                    ("amount", "10"),
                    ("valid_days", "30"),
                ],
            )
            .await;
        assert_eq!(unknown.status, 404);
        assert!(unknown.body.contains("There is no account"));
        let too_long = cashier
            .post(
                "/console/vouchers",
                &[("account", "ACC-1"), ("amount", "10"), ("valid_days", "91")],
            )
            .await;
        assert_eq!(too_long.status, 400);
        assert_eq!(states(&t).len(), 2, "refused forms issued nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_vouchers_and_cannot_issue_one() {
    for t in backends() {
        counter(&t);
        let viewer = Client::login(&t, "vikram", StaffRole::Viewer).await;
        assert_eq!(viewer.get("/console/vouchers").await.status, 403);
        let refused = viewer
            .post(
                "/console/vouchers",
                &[("account", "ACC-1"), ("amount", "10"), ("valid_days", "30")],
            )
            .await;
        assert_eq!(refused.status, 403);
        assert!(states(&t).is_empty());
        let page = viewer.get("/console/accounts/ACC-1").await;
        assert!(!page.body.contains("/console/vouchers?account="));
        assert!(
            !page.body.contains(r#"href="/console/vouchers""#),
            "not in the navigation"
        );
    }
}
