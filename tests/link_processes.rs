//! Three processes on loopback: `gramgrid air-bus`, `gramgrid sim` (a fleet of emulated meters) and
//! `gramgrid gateway` (the daemon with an emulated radio). Readings land in the gateway database.

use crate::common::village::sim_args;
use crate::common::Proc;
use chrono::{Duration as Days, Utc};
use gramgrid_core::tariff::Category;
use gramgrid_gateway::config::GatewayConfig;
use gramgrid_gateway::store::{Account, MeterInstall, Store};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `gramgrid ARGS` with logs at warn; `(process, first stdout line)`.
fn start(args: &[&str]) -> (Proc, String) {
    let mut proc = spawn_piped(args);
    let line = proc.first_line();
    (proc, line)
}

fn spawn_piped(args: &[&str]) -> Proc {
    Proc::new(
        Command::new(env!("CARGO_BIN_EXE_gramgrid"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn sim_and_gateway_exchange_frames_over_the_air_bus_and_readings_land_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, line) = start(&["air-bus", "--listen", "127.0.0.1:0", "--seed", "5"]);
    let bus = line.trim().rsplit(' ').next().unwrap().to_string();
    let manifest = dir.path().join("meters.toml");
    let (_sim, line) = start(&sim_args("2", &bus, manifest.to_str().unwrap()));
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
    let _gateway = spawn_piped(&["gateway", "--config", config_path.to_str().unwrap()]);

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
