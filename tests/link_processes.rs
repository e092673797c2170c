//! Three processes on loopback: `gramgrid air-bus`, `gramgrid sim` (a fleet of emulated meters) and
//! `gramgrid gateway` (the daemon with an emulated radio). Readings land in the gateway database.

use chrono::{Duration as Days, Utc};
use gramgrid_core::tariff::Category;
use gramgrid_gateway::config::GatewayConfig;
use gramgrid_gateway::store::{Account, MeterInstall, Store};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process stopped with SIGTERM when dropped (the daemon and the hub shut down cleanly).
struct Proc(Child);

impl Proc {
    fn start(args: &[&str]) -> (Proc, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gramgrid"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (Proc(child), line)
    }

    fn spawn(args: &[&str]) -> Proc {
        Proc(
            Command::new(env!("CARGO_BIN_EXE_gramgrid"))
                .args(args)
                .env("RUST_LOG", "warn")
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sim_and_gateway_exchange_frames_over_the_air_bus_and_readings_land_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, line) = Proc::start(&["air-bus", "--listen", "127.0.0.1:0", "--seed", "5"]);
    let bus = line.trim().rsplit(' ').next().unwrap().to_string();
    let manifest = dir.path().join("meters.toml");
    let (_sim, line) = Proc::start(&[
        "sim",
        "--meters",
        "2",
        "--bus",
        &bus,
        "--radius-m",
        "150",
        "--seed",
        "5",
        "--history-hours",
        "2",
        "--manifest-out",
        manifest.to_str().unwrap(),
    ]);
    assert!(line.starts_with("sim running 2 meters"), "{line}");

    let config_path = dir.path().join("gateway.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config_path,
        format!(
            "[gateway]\ndata_dir = {data:?}\n[radio]\nkind = \"emulator\"\nbus = \"{bus}\"\n[link]\nmanifest = {manifest:?}\n"
        ),
    )
    .unwrap();
    let config = GatewayConfig::load(Some(&config_path)).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    {
        let mut store = Store::open(&config.database_path()).unwrap();
        let installed = Utc::now() - Days::days(30);
        for i in 1..=2 {
            store
                .upsert_account(&Account {
                    id: format!("A{i}"),
                    consumer_name: format!("Consumer {i}"),
                    category: Category::Domestic,
                    phone: None,
                    created_at: installed,
                })
                .unwrap();
            store
                .install_meter(&MeterInstall {
                    serial: format!("SIM-{i:05}"),
                    account: format!("A{i}"),
                    installed_at: installed,
                    initial_register_wh: None,
                })
                .unwrap();
        }
    }
    let _gateway = Proc::spawn(&["gateway", "--config", config_path.to_str().unwrap()]);

    // Both meters start on SF12 (about 3.5 s per exchange), are moved to their own SF and polled.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let store = Store::open(&config.database_path()).unwrap();
        let sessions = store.link_sessions().unwrap();
        let heard = sessions
            .iter()
            .filter(|s| s.last_reading_at.is_some() && s.fcnt_up.is_some())
            .count();
        if sessions.len() == 2 && heard == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readings did not arrive: {sessions:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
