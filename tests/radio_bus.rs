//! The air across processes: `gramgrid air-bus` runs in its own process and radios in this one
//! exchange frames through it over loopback UDP.

use gramgrid_air::air::NodeSpec;
use gramgrid_air::capture::TxRecord;
use gramgrid_air::sim::radio_on_bus;
use gramgrid_radio::phy::PhyOptions;
use gramgrid_radio::{Radio, RadioConfig};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The hub child process, stopped with SIGTERM (so it flushes its capture) when dropped.
struct Hub {
    child: Child,
    addr: SocketAddr,
}

impl Hub {
    fn start(capture: &std::path::Path) -> Hub {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gramgrid"))
            .args([
                "air-bus",
                "--listen",
                "127.0.0.1:0",
                "--path-loss",
                "urban",
                "--capture",
            ])
            .arg(capture)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
        Hub { child, addr }
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // only when a test failed before stop(): make sure the child does not outlive us
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_exchange_frames_over_the_udp_air() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("air.jsonl");
    let hub = Hub::start(&capture);

    let (mut gw, _gw_link) = radio_on_bus(
        hub.addr,
        NodeSpec::new("gw", 0.0, 0.0),
        PhyOptions::default(),
    )
    .await
    .unwrap();
    let (mut meter, _m_link) = radio_on_bus(
        hub.addr,
        NodeSpec::new("m1", 40.0, 0.0),
        PhyOptions::default(),
    )
    .await
    .unwrap();
    gw.configure(RadioConfig::gateway()).await.unwrap();
    meter.configure(RadioConfig::meter()).await.unwrap();

    let uplink = b"reading 1.0.1.8.0=12345Wh".to_vec();
    let (rx, tx) = tokio::join!(gw.receive(Duration::from_secs(5)), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        meter.transmit(&uplink).await
    });
    tx.unwrap();
    assert_eq!(rx.unwrap().payload, uplink);

    let downlink = b"relay on".to_vec();
    let (rx, tx) = tokio::join!(meter.receive(Duration::from_secs(5)), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        gw.transmit(&downlink).await
    });
    tx.unwrap();
    assert_eq!(rx.unwrap().payload, downlink);

    // the hub's capture is written as frames end, not only when it stops
    tokio::time::sleep(Duration::from_millis(200)).await;
    let live = std::fs::read_to_string(&capture).unwrap();
    assert_eq!(live.lines().count(), 2, "{live}");
    hub.stop();
    let lines: Vec<TxRecord> = std::fs::read_to_string(&capture)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].from, "m1");
    assert_eq!(lines[0].phy_payload, uplink);
    assert_eq!(lines[1].from, "gw");
}
