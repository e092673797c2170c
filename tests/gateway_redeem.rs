//! A technician redeems an offline voucher against the running gateway daemon: accepted once,
//! refused the second time, and the balance counts it once.
use chrono::{Duration, Utc};
use gramgrid_core::tariff::Category;
use gramgrid_gateway::store::{Account, Store};
use gramgrid_proto::voucher::{PublishedKey, SigningSecret, Voucher};
use gramgrid_proto::wire::{DownlinkEvent, DownlinkRecord};
use std::process::{Command, Stdio};

fn gramgrid() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gramgrid"))
}

#[test]
fn a_voucher_is_redeemed_once_through_the_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nid = \"gw-test\"\ndata_dir = {:?}\n",
            data.display().to_string()
        ),
    )
    .unwrap();

    // What a sync from central would have brought: the account and the voucher key.
    let secret = SigningSecret::generate(1);
    let now = Utc::now();
    {
        let mut store = Store::open(&data.join("gateway.db")).unwrap();
        store
            .upsert_account(&Account {
                id: "ACC7".into(),
                consumer_name: "Test".into(),
                category: Category::Domestic,
                phone: None,
                created_at: now,
            })
            .unwrap();
        let key = PublishedKey {
            key_id: 1,
            public_key: secret.public_key_hex(),
            issue_from: now - Duration::days(1),
            issue_until: None,
            revoked: false,
        };
        store
            .apply_downlink(
                &[DownlinkRecord {
                    seq: 1,
                    event: DownlinkEvent::VoucherKeys(vec![key]),
                }],
                now,
            )
            .unwrap();
    }
    let code = secret
        .issue(&Voucher {
            key_id: 1,
            voucher_id: 77,
            account: "ACC7".into(),
            amount_paise: 30_000,
            issued_at: now - Duration::hours(1),
            expires_at: now + Duration::days(7),
        })
        .unwrap();

    let mut daemon = gramgrid()
        .args(["gateway", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = data.join("gateway.sock");
    let started = std::time::Instant::now();
    while !socket.exists() && started.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let redeem = || {
        gramgrid()
            .args(["gateway", "redeem", &code.to_lowercase(), "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let first = redeem();
    let second = redeem();
    let _ = daemon.kill();
    daemon.wait().unwrap();

    let first_out = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{first_out}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        first_out.contains("300.00 INR credited to account ACC7"),
        "{first_out}"
    );
    let second_out = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(1));
    assert!(second_out.contains("already redeemed here"), "{second_out}");
    let store = Store::open(&data.join("gateway.db")).unwrap();
    assert_eq!(store.position("ACC7", &[]).unwrap().balance_paise, 30_000);
}

#[test]
fn redeem_without_a_running_daemon_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\ndata_dir = {:?}\n",
            dir.path().display().to_string()
        ),
    )
    .unwrap();
    let out = gramgrid()
        .args(["gateway", "redeem", "ABCDE", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `gramgrid gateway` running"));
}
