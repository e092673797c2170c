//! During a backhaul outage the gateway sends urgent messages through its modem (ModemManager on a
//! private D-Bus, served by the stand-in), in the household's language; after the outage central
//! records them as sent by the gateway and sends none of them again.
use chrono::{Duration, DurationRound, Utc};
use gramgrid_central::{accounts, notify};
use gramgrid_core::message::Language;
use gramgrid_gateway::modem::{BusAddress, ModemManager};
use gramgrid_gateway::outage_sms;
use gramgrid_gateway::store::Alert;
use gramgrid_sim::modem_standin::{ModemStandin, PrivateBus};
use gramgrid_sim::netem::Fault;
use gramgrid_sim::village::Village;

fn alert(account: &str, kind: &str, vars: &[(&str, &str)]) -> Alert {
    Alert {
        id: format!("{account}:{kind}:outage"),
        account: account.into(),
        kind: kind.into(),
        created_at: Utc::now(),
        message: format!("{kind} (the gateway's own words)"),
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

async fn messages_at_central(village: &Village, account: &str) -> Vec<notify::MessageRecord> {
    let account = account.to_string();
    village
        .central
        .central
        .db()
        .transaction(move |tx| notify::account_messages(tx, &account, 100))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_outage_the_gateways_modem_tells_households_once_and_central_never_repeats_it() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = (Utc::now() - Duration::days(1))
        .duration_trunc(Duration::minutes(15))
        .unwrap();
    let village = Village::build(dir.path(), "gw-modem", 3, t0).await.unwrap();
    // Household 0 reads Hindi: central says so, and the gateway learns it with the account.
    village
        .central
        .central
        .db()
        .transaction(|tx| {
            let mut account = accounts::account(tx, "ACC000000")?;
            account.language = Language::Hindi;
            accounts::put_account(tx, &account, true)
        })
        .await
        .unwrap();
    village.sync().await.unwrap();

    // The backhaul goes down; the gateway decides messages meanwhile.
    village.link.plan.lock().unwrap().default_fault = Fault::Refuse;
    assert!(village.sync().await.is_err());
    village
        .with_gateway(|g| {
            g.store()
                .enqueue_alert(&alert("ACC000000", "disconnected", &[]))?;
            g.store().enqueue_alert(&alert(
                "ACC000001",
                "disconnect_notice",
                &[("balance", "-1.50")],
            ))?;
            g.store().enqueue_alert(&alert(
                "ACC000002",
                "daily_balance",
                &[("date", "30-11-2026"), ("balance", "41.00")],
            ))
        })
        .unwrap();
    let last_sync = village
        .with_gateway(|g| g.store().guard_marks())
        .unwrap()
        .last_sync_at
        .unwrap();

    let bus = PrivateBus::start().unwrap();
    let standin = ModemStandin::start(bus.address()).await.unwrap();
    let modem = ModemManager::connect(&BusAddress::Address(bus.address().into()))
        .await
        .unwrap();
    let after = std::time::Duration::from_secs(30 * 60);

    // Not while the outage is younger than the configured wait.
    let early = outage_sms::send_round(
        &village.gateway,
        &modem,
        after,
        last_sync + Duration::minutes(10),
    )
    .await
    .unwrap();
    assert_eq!(early, outage_sms::ModemRound::default());
    assert!(standin.sent().is_empty());

    // Then the urgent ones go, each once, in the household's language; the daily balance waits.
    let late = last_sync + Duration::minutes(31);
    let round = outage_sms::send_round(&village.gateway, &modem, after, late)
        .await
        .unwrap();
    assert_eq!((round.sent, round.failed), (2, 0));
    let again = outage_sms::send_round(&village.gateway, &modem, after, late)
        .await
        .unwrap();
    assert_eq!(again.sent, 0, "a message the modem sent is not sent again");
    let sent = standin.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].number, "+919900000000");
    assert_eq!(
        sent[0].text,
        "बैलेंस समाप्त होने से बिजली काट दी गई। रिचार्ज करें। - GramGrid"
    );
    assert_eq!(sent[1].number, "+919900000001");
    assert!(sent[1].text.contains("Rs -1.50"), "{}", sent[1].text);

    // The backhaul returns: central learns what the modem sent and sends only the rest.
    village.link.plan.lock().unwrap().default_fault = Fault::None;
    village.sync().await.unwrap();
    for account in ["ACC000000", "ACC000001"] {
        let messages = messages_at_central(&village, account).await;
        let modem_sent: Vec<_> = messages
            .iter()
            .filter(|m| m.channel.as_deref() == Some(notify::GATEWAY_MODEM))
            .collect();
        assert_eq!(modem_sent.len(), 1, "{messages:?}");
        assert_eq!(modem_sent[0].state, "sent");
    }
    let log = notify::LogFileSender {
        path: dir.path().join("sent.log"),
    };
    let round = notify::deliver(
        &village.central.central,
        &log,
        &notify::Rendering::built_in(),
        100,
    )
    .await
    .unwrap();
    let central_sent = std::fs::read_to_string(&log.path).unwrap_or_default();
    assert_eq!(round.sent, 1, "{central_sent}");
    assert!(
        central_sent.contains("ACC000002:daily_balance"),
        "{central_sent}"
    );
    assert!(!central_sent.contains(":disconnect"), "{central_sent}");
    let flags = village
        .central
        .central
        .db()
        .transaction(|tx| {
            Ok::<_, gramgrid_central::CentralError>(tx.query_int(
                "SELECT COUNT(*) FROM flags WHERE kind = 'message_sent_twice'",
                &[],
            )?)
        })
        .await
        .unwrap();
    assert_eq!(flags, 0);
}
