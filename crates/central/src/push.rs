//! The push channel: `GET /sync/v1/wait`, a gateway's long-poll over its mutual-TLS connection.
//! Central answers as soon as the gateway's downlink log holds a record after the one the
//! gateway names (a recharge, a tariff, ...), so the gateway syncs at once instead of at its next
//! scheduled session. A committed transaction rings the gateway's bell (`db::bell`); writes by
//! another process (the command line) are seen at the next re-check.
use super::Central;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gramgrid_proto::wire::MAX_WAIT_SECONDS;
use serde::Deserialize;
use std::time::Duration;
use tokio::time::Instant;

/// How often a waiting request re-reads the log without a ring (writes from other processes).
const RECHECK: Duration = Duration::from_secs(30);

/// The long-poll's query: the downlink sequence the gateway has, and how long to hold the request.
#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    /// The gateway's newest downlink record: central answers when it has a newer one.
    pub after: u64,
    /// Seconds to wait for one (1 to [`MAX_WAIT_SECONDS`]).
    pub wait_s: u64,
}

/// Holds `gateway`'s request until its downlink log passes `query.after` (200 with the log's
/// sequence), the wait runs out (204) or central shuts down (503).
pub async fn wait(central: &Central, gateway: String, query: WaitQuery) -> Response {
    let deadline = Instant::now() + Duration::from_secs(query.wait_s.clamp(1, MAX_WAIT_SECONDS));
    let after = i64::try_from(query.after).unwrap_or(i64::MAX);
    // Subscribed before the first read: a record committed in between still rings.
    let mut bell = central.db().bell().subscribe(&gateway);
    let mut closing = central.closing();
    loop {
        let id = gateway.clone();
        let seq = central
            .db()
            .transaction(move |tx| super::downlink::downlink_seq(tx, &id))
            .await;
        match seq {
            Ok(seq) if seq > after => return (StatusCode::OK, format!("{seq}\n")).into_response(),
            Ok(_) => {}
            Err(error) => return super::api::ApiError(error).into_response(),
        }
        let recheck = (Instant::now() + RECHECK).min(deadline);
        tokio::select! {
            _ = bell.changed() => {}
            _ = tokio::time::sleep_until(recheck) => {
                if Instant::now() >= deadline {
                    return StatusCode::NO_CONTENT.into_response();
                }
            }
            _ = closing.wait_for(|closing| *closing) => {
                return (StatusCode::SERVICE_UNAVAILABLE, "central is shutting down\n").into_response();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{self, RechargeRequest};
    use crate::testing::{backends, TestCentral};
    use axum::body::to_bytes;
    use std::sync::Arc;

    async fn answer(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let body = to_bytes(response.into_body(), 1024).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn seq(t: &TestCentral) -> u64 {
        let seq = t
            .tx(|tx| crate::downlink::downlink_seq(tx, "gw-a"))
            .unwrap();
        u64::try_from(seq).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_gateway_hears_of_a_recharge_at_once_and_of_nothing_after_its_wait() {
        for t in backends() {
            t.account("A1", Some("gw-a"));
            let after = seq(&t);
            // Nothing new: the wait runs out.
            let query = |wait_s| WaitQuery { after, wait_s };
            let (status, _) = answer(wait(&t.central, "gw-a".into(), query(1)).await).await;
            assert_eq!(status, StatusCode::NO_CONTENT);
            // Something already there: answered at once.
            let (status, body) = answer(
                wait(
                    &t.central,
                    "gw-a".into(),
                    WaitQuery {
                        after: 0,
                        wait_s: 60,
                    },
                )
                .await,
            )
            .await;
            assert_eq!(
                (status, body.trim().parse::<u64>().unwrap()),
                (StatusCode::OK, after)
            );

            // A recharge committed while the gateway waits: answered well before the wait's end
            // and the re-check, with the log's new sequence.
            let central = Arc::clone(&t.central);
            let waiting = tokio::spawn(async move {
                let started = Instant::now();
                let response =
                    wait(&central, "gw-a".into(), WaitQuery { after, wait_s: 600 }).await;
                (answer(response).await, started.elapsed())
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            let request = RechargeRequest {
                idempotency_key: "pay-1".into(),
                account: "A1".into(),
                amount_paise: 10_000,
                reference: None,
            };
            let now = t.central.now();
            t.central
                .db()
                .transaction(move |tx| accounts::recharge(tx, &request, now))
                .await
                .unwrap();
            let ((status, body), took) = waiting.await.unwrap();
            assert_eq!(status, StatusCode::OK);
            assert!(body.trim().parse::<u64>().unwrap() > after, "{body}");
            assert!(took < Duration::from_secs(5), "{took:?}");

            // Another gateway's records ring only its own bell.
            let central = Arc::clone(&t.central);
            let other = seq(&t);
            let quiet = tokio::spawn(async move {
                wait(
                    &central,
                    "gw-b".into(),
                    WaitQuery {
                        after: 0,
                        wait_s: 2,
                    },
                )
                .await
            });
            let (status, _) = answer(quiet.await.unwrap()).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "gw-b has no log: {other}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_request_ends_when_central_shuts_down() {
        let t = crate::testing::central();
        let central = Arc::clone(&t.central);
        let held = tokio::spawn(async move {
            wait(
                &central,
                "gw-a".into(),
                WaitQuery {
                    after: 0,
                    wait_s: 600,
                },
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        t.central.close();
        let response = tokio::time::timeout(Duration::from_secs(5), held)
            .await
            .expect("answered at shutdown")
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
