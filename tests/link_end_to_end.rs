//! The meter link end to end, in one process under tokio's paused clock: the real gateway (store,
//! policy, link task) on an emulated SX1262 driven by lora-phy, and meters running the virtual
//! firmware on emulated SX1262s, all on one simulated air.

use chrono::{DateTime, Duration as Days, TimeZone, Utc};
use gramgrid_air::air::{Air, AirConfig};
use gramgrid_air::capture::TxRecord;
use gramgrid_air::pathloss::PathLossModel;
use gramgrid_air::sim::radio_on_air;
use gramgrid_core::ledger::{EventKind, LedgerEvent};
use gramgrid_core::policy::RelayState;
use gramgrid_core::relay::CommandState;
use gramgrid_gateway::config::GatewayConfig;
use gramgrid_gateway::daemon::GatewayBackend;
use gramgrid_gateway::gateway::Gateway;
use gramgrid_gateway::link::{self, Link, LinkBackend, LinkClock, LinkError, SharedStats};
use gramgrid_gateway::store::{
    Account, DlmsIc, Fcnt, LinkSession, MeterInstall, MeterReading, StoreError,
};
use gramgrid_proto::frame;
use gramgrid_proto::payload::{self, AccessMode, Downlink, MeterEvent};
use gramgrid_radio::phy::PhyOptions;
use gramgrid_radio::{RadioConfig, RxFrame};
use gramgrid_sim::meter::fleet::{self, locked, MeterHandle, PlannedMeter};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// 2026-11-28 00:00 IST.
fn start() -> DateTime<Utc> {
    gramgrid_core::civil::ist()
        .with_ymd_and_hms(2026, 11, 28, 0, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

struct Village {
    _dir: tempfile::TempDir,
    air: Air,
    gateway: Arc<Mutex<Gateway>>,
    meters: Vec<(i64, PlannedMeter, MeterHandle)>,
    clock: LinkClock,
    stats: SharedStats,
    stop: watch::Sender<bool>,
    /// Set above zero, that many of the next reading batches fail to store (a full disk).
    store_failures: Arc<AtomicUsize>,
}

/// The daemon's backend, except that reading batches fail to store while `failures` is above zero.
struct FlakyStore {
    inner: GatewayBackend,
    failures: Arc<AtomicUsize>,
}

impl LinkBackend for FlakyStore {
    fn sessions(&mut self) -> Result<Vec<LinkSession>, LinkError> {
        self.inner.sessions()
    }
    fn commit_fcnt(&mut self, meter: i64, which: Fcnt, fcnt: u32) -> Result<(), LinkError> {
        self.inner.commit_fcnt(meter, which, fcnt)
    }
    fn commit_dlms_ic(&mut self, meter: i64, which: DlmsIc, ic: u32) -> Result<(), LinkError> {
        self.inner.commit_dlms_ic(meter, which, ic)
    }
    fn readings(&mut self, batch: &[MeterReading]) -> Result<(), LinkError> {
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(LinkError::Store(StoreError::DiskFull));
        }
        self.inner.readings(batch)
    }
    fn events(
        &mut self,
        meter: i64,
        events: &[MeterEvent],
        at: DateTime<Utc>,
    ) -> Result<(), LinkError> {
        self.inner.events(meter, events, at)
    }
    fn relay_state(
        &mut self,
        meter: i64,
        state: RelayState,
        at: DateTime<Utc>,
    ) -> Result<(), LinkError> {
        self.inner.relay_state(meter, state, at)
    }
}

/// A gateway and `n` meters within 300 m; the gateway config is `config_toml`.
async fn village(n: usize, config_toml: &str) -> Village {
    village_in(n, config_toml, AccessMode::Scheduled).await
}

async fn village_in(n: usize, config_toml: &str, mode: AccessMode) -> Village {
    village_of(n, 0, config_toml, mode).await
}

/// The gateway's id in these villages (DLMS meters are provisioned with its system title).
const GATEWAY_ID: &str = "gw-link-test";

/// A village of `n` meters, the first `dlms` of them DLMS/COSEM meters (docs/dlms.md §7).
async fn village_of(n: usize, dlms: usize, config_toml: &str, mode: AccessMode) -> Village {
    let dir = tempfile::tempdir().unwrap();
    let mut config = GatewayConfig::parse(config_toml).unwrap();
    config.gateway.data_dir = dir.path().join("data");
    let timing = config.link.timing();
    let mut gw = Gateway::open(config).unwrap();
    let air = Air::new(AirConfig {
        seed: 3,
        path_loss: PathLossModel::rural(),
        keep_records: true,
    });
    let clock = LinkClock::starting_at(start());
    let mut plan = fleet::plan(n, 300.0, 3, &PathLossModel::rural(), &fleet::gateway_spec());
    fleet::make_dlms(&mut plan, dlms, GATEWAY_ID, 3, fleet::DlmsChoice::First);
    let installed = start() - Days::days(30);
    let mut ids = Vec::new();
    for (i, m) in plan.iter().enumerate() {
        gw.store()
            .upsert_account(&Account {
                id: format!("A{i}"),
                consumer_name: format!("Consumer {i}"),
                category: m.category,
                phone: None,
                created_at: installed,
            })
            .unwrap();
        let id = gw
            .store()
            .install_meter(&MeterInstall {
                serial: m.serial.clone(),
                account: format!("A{i}"),
                installed_at: installed,
                initial_register_wh: None,
            })
            .unwrap();
        gw.store().set_meter_keys(id, &m.keys).unwrap();
        let security = m.dlms.as_ref().map(|d| &d.security);
        gw.store().set_meter_dlms(id, security).unwrap();
        ids.push(id);
    }
    // As the daemon does: the policy's relay commands go to the link task.
    let provisioned = link::ProvisionedMeters::default();
    let (commands, requests) = link::command_channel(provisioned.clone());
    gw.set_relay_link(Box::new(commands));
    let gateway = Arc::new(Mutex::new(gw));
    let (stop, stopping) = watch::channel(false);
    let (radio, _chip) = radio_on_air(&air, fleet::gateway_spec(), PhyOptions::default())
        .await
        .unwrap();
    let store_failures = Arc::new(AtomicUsize::new(0));
    let backend = FlakyStore {
        inner: GatewayBackend::new(gateway.clone()),
        failures: store_failures.clone(),
    };
    let l = Link::new(backend, timing, RadioConfig::gateway(), clock)
        .with_provisioned(provisioned)
        .with_gateway_id(GATEWAY_ID);
    let stats = l.stats();
    match mode {
        AccessMode::Scheduled => tokio::spawn(l.run_scheduled(radio, requests, stopping.clone())),
        AccessMode::Aloha => tokio::spawn(l.run_aloha(radio, requests, stopping.clone())),
    };
    let mut meters = Vec::new();
    for (id, m) in ids.into_iter().zip(plan) {
        let (radio, _chip) = radio_on_air(&air, m.spec.clone(), PhyOptions::default())
            .await
            .unwrap();
        let fw: MeterHandle = Arc::new(Mutex::new(fleet::firmware(&m, mode, false, &clock)));
        tokio::spawn(fleet::run_meter(
            radio,
            fw.clone(),
            clock,
            Arc::default(),
            stopping.clone(),
        ));
        meters.push((id, m, fw));
    }
    Village {
        _dir: dir,
        air,
        gateway,
        meters,
        clock,
        stats,
        stop,
        store_failures,
    }
}

impl Village {
    fn gw(&self) -> std::sync::MutexGuard<'_, Gateway> {
        self.gateway.lock().unwrap()
    }

    fn stats(&self) -> link::LinkStats {
        link::read_stats(&self.stats)
    }

    /// A gateway restart: a new link over the same store, its sessions loaded.
    fn restarted_link(&self) -> Link<GatewayBackend> {
        let timing = GatewayConfig::default().link.timing();
        let mut restarted = Link::new(
            GatewayBackend::new(self.gateway.clone()),
            timing,
            RadioConfig::gateway(),
            self.clock,
        )
        .with_gateway_id(GATEWAY_ID);
        restarted.load_sessions(|_| 12).unwrap();
        restarted
    }

    fn uplinks_of(&self, records: &[TxRecord], serial: &str) -> Vec<Vec<u8>> {
        records
            .iter()
            .filter(|r| r.from == serial && r.phy_payload[0] == 0x40)
            .map(|r| r.phy_payload.clone())
            .collect()
    }
}

/// The disconnects the gateway put on the air for meter `m`: when each started and ended.
fn disconnects_on_air(
    records: &[TxRecord],
    m: &PlannedMeter,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    records
        .iter()
        .filter(|r| r.from == fleet::gateway_spec().name)
        .filter_map(|r| {
            let header = frame::parse_header(&r.phy_payload).unwrap();
            if header.dev_addr != m.keys.dev_addr {
                return None;
            }
            let body =
                frame::open_data_frame(&m.keys, &r.phy_payload, u32::from(header.fcnt16)).unwrap();
            match Downlink::decode_frame(header.fport, &body).unwrap() {
                Downlink::RelayCommand(c) if c.action == payload::RelayAction::Disconnect => {
                    // The air's clock and the link clock both started at `start()`.
                    let began = start() + Days::microseconds((r.t_s * 1e6) as i64);
                    Some((
                        began,
                        began + Days::microseconds((r.airtime_ms * 1e3) as i64),
                    ))
                }
                _ => None,
            }
        })
        .collect()
}

/// Uplinks the link rejected for reason `name`.
fn rejected(stats: &link::LinkStats, name: &str) -> u64 {
    stats
        .rejects
        .iter()
        .find(|(r, _)| r.as_str() == name)
        .unwrap()
        .1
}

fn recharge(account: &str, at: DateTime<Utc>) -> LedgerEvent {
    LedgerEvent {
        id: format!("r-{account}"),
        account: account.into(),
        at,
        kind: EventKind::Recharge,
        amount_paise: 50_000,
        expires_at: None,
    }
}

fn frame(payload: Vec<u8>) -> RxFrame {
    RxFrame {
        payload,
        rssi_dbm: -90,
        snr_db: 10,
        received_at: tokio::time::Instant::now(),
        spreading_factor: 7,
        frequency_hz: 865_062_500,
    }
}

#[tokio::test(start_paused = true)]
async fn readings_reach_the_store_and_are_charged() {
    let v = village(3, "").await;
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    let stats = v.stats();
    assert_eq!(stats.rejects.total(), 0, "{stats:?}");
    for (id, m, fw) in &v.meters {
        let mut gw = v.gw();
        let account = gw
            .store()
            .accounts()
            .unwrap()
            .into_iter()
            .find(|a| gw.store().active_meter(&a.id).unwrap().map(|x| x.0) == Some(*id))
            .unwrap();
        assert!(
            gw.store().energy_charges(&account.id, None).unwrap() > 0,
            "{}",
            m.serial
        );
        // Within the delivery target: nothing older than an hour is missing.
        let captured = locked(fw).nvm.log.len();
        assert!(captured >= 11, "{captured}");
        let sessions = gw.store().link_sessions().unwrap();
        let s = sessions.iter().find(|s| s.meter == *id).unwrap();
        assert!(
            s.last_reading_at.unwrap() >= v.clock.now() - Days::minutes(60),
            "{:?} {:?} {:?}",
            s.last_reading_at,
            v.clock.now(),
            v.stats()
        );
        assert!(s.fcnt_up.is_some() && s.fcnt_down.is_some());
    }
    assert!(stats.readings >= 27, "{stats:?}");
    v.stop.send(true).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_policy_disconnect_reaches_the_meter_and_its_report_confirms_it() {
    let config = "[policy]\nfirst_disconnect = \"0s\"\ndisconnect_windows = [\"* * * * * *\"]\nholidays = []\n";
    let v = village(1, config).await;
    // Let the meter be found at the rendezvous SF and moved to its own.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let (meter, _, fw) = &v.meters[0];
    assert_eq!(locked(fw).nvm.relay, payload::RelayState::Connected);
    let report = v.gw().policy_pass(v.clock.now(), true).unwrap();
    assert_eq!(report.commands_sent, 1, "{report:?}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(locked(fw).nvm.relay, payload::RelayState::Disconnected);
    assert_eq!(
        v.gw().store().relay_state(*meter).unwrap(),
        RelayState::Disconnected
    );
    assert!(v.gw().store().open_relay_commands().unwrap().is_empty());
    let latencies = v.stats().relay_latencies;
    assert_eq!(latencies.len(), 1);
    assert!(latencies[0] < Duration::from_secs(10), "{latencies:?}");
    v.stop.send(true).unwrap();
}

#[tokio::test(start_paused = true)]
async fn forged_replayed_and_unknown_frames_are_counted_and_replays_stay_rejected_after_a_restart()
{
    let v = village(1, "").await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let (_, m, _) = &v.meters[0];
    let uplinks = v.uplinks_of(&v.air.take_records(), &m.serial);
    assert!(uplinks.len() >= 3, "{}", uplinks.len());
    v.stop.send(true).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut restarted = v.restarted_link();
    let last = uplinks.last().unwrap().clone();
    assert!(restarted.on_uplink(&frame(last.clone())).is_none());
    let mut forged = last.clone();
    let n = forged.len();
    forged[n - 1] ^= 0x01;
    assert!(restarted.on_uplink(&frame(forged)).is_none());
    let mut unknown = last.clone();
    unknown[1] ^= 0xFF;
    assert!(restarted.on_uplink(&frame(unknown)).is_none());
    assert!(restarted.on_uplink(&frame(vec![0x40, 1, 2])).is_none());
    let stats = link::read_stats(&restarted.stats());
    let count = |name: &str| rejected(&stats, name);
    assert_eq!(count("replayed_fcnt"), 1, "{stats:?}");
    assert_eq!(count("bad_mic"), 1, "{stats:?}");
    assert_eq!(count("unknown_dev_addr"), 1, "{stats:?}");
    assert_eq!(count("malformed"), 1, "{stats:?}");
    assert_eq!(stats.uplinks, 0);
}

/// How many intervals the meter captured up to the latest reading the gateway stored of it.
fn captured_up_to_last_stored(v: &Village, meter: i64, fw: &MeterHandle) -> usize {
    let sessions = v.gw().store().link_sessions().unwrap();
    let last = sessions
        .iter()
        .find(|s| s.meter == meter)
        .unwrap()
        .last_reading_at
        .unwrap();
    locked(fw)
        .nvm
        .log
        .iter()
        .filter(|i| i.interval_start + Days::minutes(15) <= last)
        .count()
}

#[tokio::test(start_paused = true)]
async fn intervals_whose_uplink_was_lost_are_fetched_again() {
    let v = village(1, "").await;
    tokio::time::sleep(Duration::from_secs(1800)).await;
    let (meter, _, fw) = &v.meters[0];
    locked(fw).lose_next_replies(2);
    tokio::time::sleep(Duration::from_secs(4 * 3600)).await;
    let stats = v.stats();
    assert!(stats.silences >= 2, "{stats:?}");
    // Every interval the meter captured is in the store, lost replies notwithstanding.
    let wanted = captured_up_to_last_stored(&v, *meter, fw);
    assert!(wanted >= 14, "{wanted}");
    assert_eq!(stats.readings as usize, wanted, "{stats:?}");
    v.stop.send(true).unwrap();
}

#[tokio::test(start_paused = true)]
async fn readings_that_could_not_be_stored_are_fetched_again() {
    let v = village(1, "").await;
    tokio::time::sleep(Duration::from_secs(1800)).await;
    let (meter, _, fw) = &v.meters[0];
    // The disk is full for the next two reports the link tries to store.
    v.store_failures.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4 * 3600)).await;
    assert_eq!(
        v.store_failures.load(Ordering::SeqCst),
        0,
        "both failures happened"
    );
    let stats = v.stats();
    // Every interval the meter captured up to the last one stored is in the store.
    let wanted = captured_up_to_last_stored(&v, *meter, fw);
    assert!(wanted >= 14, "{wanted}");
    assert_eq!(stats.readings as usize, wanted, "{stats:?}");
    v.stop.send(true).unwrap();
}

#[tokio::test(start_paused = true)]
async fn aloha_meters_report_on_their_own_timers_and_take_a_relay_command_in_rx1() {
    let config = "[policy]\nfirst_disconnect = \"0s\"\ndisconnect_windows = [\"* * * * * *\"]\nholidays = []\n";
    let v = village_in(2, config, AccessMode::Aloha).await;
    assert!(
        v.meters.iter().all(|m| m.1.sf == Some(7)),
        "the test village is all SF7"
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let stats = v.stats();
    assert!(stats.readings >= 6, "{stats:?}");
    assert_eq!(stats.downlinks, 0);
    // A disconnect waits for the meter's next uplink, goes out in its RX1 window, and the uplink
    // after that confirms it.
    v.gw().policy_pass(v.clock.now(), true).unwrap();
    tokio::time::sleep(Duration::from_secs(2 * 900)).await;
    for (meter, _, fw) in &v.meters {
        assert_eq!(locked(fw).nvm.relay, payload::RelayState::Disconnected);
        assert_eq!(
            v.gw().store().relay_state(*meter).unwrap(),
            RelayState::Disconnected
        );
    }
    assert_eq!(v.stats().relay_latencies.len(), 2);
    v.stop.send(true).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_disconnect_is_never_transmitted_after_its_deadline_while_the_meter_is_silent() {
    // Disconnects are allowed from 00:00 to 00:14 local time.
    let config = "[policy]\nfirst_disconnect = \"0s\"\ndisconnect_windows = [\"0 0-14 0 * * *\"]\nholidays = []\n";
    let v = village(1, config).await;
    let (meter, m, fw) = &v.meters[0];
    tokio::time::sleep(Duration::from_secs(600)).await;
    // From now on no reply of the meter reaches the gateway: no acknowledgement, no relay state.
    locked(fw).lose_next_replies(u32::MAX);
    tokio::time::sleep_until(v.clock.instant_of(start() + Days::minutes(14))).await;
    let deadline = start() + Days::minutes(15);
    let report = v.gw().policy_pass(v.clock.now(), true).unwrap();
    assert_eq!(report.commands_sent, 1, "{report:?}");
    // The link retries on its own every 20 s; the gateway's next pass comes after the deadline.
    tokio::time::sleep(Duration::from_secs(150)).await;
    let report = v.gw().policy_pass(v.clock.now(), true).unwrap();
    assert_eq!(
        (report.commands_sent, report.commands_withdrawn),
        (0, 1),
        "{report:?}"
    );
    tokio::time::sleep(Duration::from_secs(1200)).await;
    let on_air = disconnects_on_air(&v.air.take_records(), m);
    assert!(
        on_air.len() >= 2,
        "the link retried while the window was open: {on_air:?}"
    );
    assert!(
        on_air.iter().all(|(_, ended)| *ended <= deadline),
        "transmitted after {deadline}: {on_air:?}"
    );
    let command = v
        .gw()
        .store()
        .latest_relay_command(*meter)
        .unwrap()
        .unwrap();
    assert_eq!(command.progress.state, CommandState::Withdrawn);
    v.stop.send(true).unwrap();
}

/// A disconnect handed to the link and withdrawn (the household paid) before the link carried it.
async fn withdrawn_before_it_goes_out(mode: AccessMode) {
    let config = "[policy]\nfirst_disconnect = \"0s\"\ndisconnect_windows = [\"* * * * * *\"]\nholidays = []\n";
    let v = village_in(1, config, mode).await;
    // Long enough for an ALOHA meter's first report: the relay is known to be connected, so the
    // recharge below issues nothing new that would supersede the disconnect.
    tokio::time::sleep(Duration::from_secs(1800)).await;
    let (meter, m, fw) = &v.meters[0];
    assert_eq!(
        v.gw().store().relay_state(*meter).unwrap(),
        RelayState::Connected
    );
    let report = v.gw().policy_pass(v.clock.now(), true).unwrap();
    assert_eq!(report.commands_sent, 1, "{report:?}");
    v.gw()
        .store()
        .record_event(&recharge("A0", v.clock.now()))
        .unwrap();
    let report = v.gw().policy_pass(v.clock.now(), true).unwrap();
    assert_eq!(report.commands_withdrawn, 1, "{report:?}");
    tokio::time::sleep(Duration::from_secs(2 * 900)).await;
    assert_eq!(disconnects_on_air(&v.air.take_records(), m), Vec::new());
    assert_eq!(locked(fw).nvm.relay, payload::RelayState::Connected);
    assert_eq!(
        v.gw().store().relay_state(*meter).unwrap(),
        RelayState::Connected
    );
    v.stop.send(true).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_withdrawn_command_is_not_transmitted_in_scheduled_mode() {
    withdrawn_before_it_goes_out(AccessMode::Scheduled).await;
}

#[tokio::test(start_paused = true)]
async fn a_withdrawn_command_is_not_transmitted_in_aloha_mode() {
    withdrawn_before_it_goes_out(AccessMode::Aloha).await;
}

#[tokio::test(start_paused = true)]
async fn a_meter_clock_that_ran_off_is_set_on_a_trusted_clock_and_the_display_shows_the_balance() {
    let v = village(1, "").await;
    let (meter, _, fw) = &v.meters[0];
    locked(fw).skew_clock(Days::minutes(7));
    // Until the gateway tells the link its clock is trusted, the meter's is left alone.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let off = locked(fw).meter_time(v.clock.now()) - v.clock.now();
    assert!(off > Days::minutes(6), "{off}");

    // A recharge, and a policy tick on a clock the gateway trusts: the next turns set the
    // meter's clock and put the balance on its display.
    v.gw()
        .store()
        .record_event(&LedgerEvent {
            id: "r1".into(),
            account: "A0".into(),
            at: v.clock.now(),
            kind: EventKind::Recharge,
            amount_paise: 50_000,
            expires_at: None,
        })
        .unwrap();
    v.gw().tick(v.clock.now()).unwrap();
    tokio::time::sleep(Duration::from_secs(1200)).await;
    let off = locked(fw).meter_time(v.clock.now()) - v.clock.now();
    assert!(off.abs() < Days::seconds(2), "{off}");
    let clock_set = v.gw().store().meter_events(*meter, 10).unwrap();
    assert!(
        clock_set.iter().any(|e| e.kind == "clock_set"),
        "{clock_set:?}"
    );
    let balance = v.gw().store().position("A0", &[]).unwrap().balance_paise;
    let display = locked(fw).display().expect("the display was sent");
    assert_eq!(display.balance_paise, balance);
    assert_eq!(display.status, payload::CreditStatus::Normal);
    v.stop.send(true).unwrap();
}

#[tokio::test(start_paused = true)]
async fn meters_dark_in_a_feeder_outage_are_sent_no_disconnect_and_report_the_outage_after() {
    feeder_outage(0).await;
}

/// The same with two DLMS meters (household 0 among them): they report the outage from their
/// power events log, read when they answer again.
#[tokio::test(start_paused = true)]
async fn dlms_meters_dark_in_a_feeder_outage_report_it_from_their_power_events_log() {
    feeder_outage(2).await;
}

async fn feeder_outage(dlms: usize) {
    let config = "[policy]\nfirst_disconnect = \"0s\"\ndisconnect_windows = [\"* * * * * *\"]\nholidays = []\n";
    let v = village_of(4, dlms, config, AccessMode::Scheduled).await;
    // Households 1 to 3 have credit; household 0 has none.
    for i in 1..4 {
        v.gw()
            .store()
            .record_event(&LedgerEvent {
                id: format!("r{i}"),
                account: format!("A{i}"),
                at: v.clock.now(),
                kind: EventKind::Recharge,
                amount_paise: 100_000,
                expires_at: None,
            })
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(600)).await;
    // The feeder trips: every meter goes dark, and misses its turns.
    let off = v.clock.now();
    for (_, _, fw) in &v.meters {
        locked(fw).power_off(off);
    }
    tokio::time::sleep(Duration::from_secs(25 * 60)).await;
    let dark = v.gw().policy_pass(v.clock.now(), true).unwrap();
    assert_eq!(
        (dark.commands_queued, dark.disconnects_held),
        (0, 1),
        "{dark:?}"
    );

    // Power back: the meters answer again and report the outage from their logs; the cut waits
    // out the outage's hours (no grace here, so they are over) and goes.
    let on = v.clock.now();
    for (_, _, fw) in &v.meters {
        locked(fw).power_on(on);
    }
    tokio::time::sleep(Duration::from_secs(45 * 60)).await;
    let outages = v.gw().store().outages_since(off - Days::hours(1)).unwrap();
    assert_eq!(outages.len(), 1, "{outages:?}");
    assert_eq!(outages[0].meters.len(), 4);
    let ended = outages[0].ended_at.unwrap();
    assert!((ended - on).num_seconds().abs() < 60, "{outages:?}");
    let after = v.gw().policy_pass(v.clock.now(), true).unwrap();
    assert_eq!(after.commands_queued, 1, "{after:?}");
    v.stop.send(true).unwrap();
}

/// A village mixing payload v1 and DLMS/COSEM meters: the DLMS meters' load profiles are read in
/// range reads (in blocks at the slow SFs) and charged like the v1 meters' reports; a policy
/// disconnect and the reconnect after a recharge reach a DLMS meter through the disconnect
/// control object and are confirmed by its control_state.
#[tokio::test(start_paused = true)]
async fn dlms_meters_are_read_disconnected_and_reconnected_beside_v1_meters() {
    let config = "[policy]\nfirst_disconnect = \"0s\"\ndisconnect_windows = [\"* * * * * *\"]\nholidays = []\n";
    let v = village_of(3, 2, config, AccessMode::Scheduled).await;
    // Households 1 and 2 (a DLMS and a v1 meter) have credit; household 0 (DLMS) has none.
    for i in 1..3 {
        v.gw()
            .store()
            .record_event(&recharge(&format!("A{i}"), v.clock.now()))
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    let stats = v.stats();
    assert_eq!(stats.rejects.total(), 0, "{stats:?}");
    for (id, m, fw) in &v.meters {
        let sessions = v.gw().store().link_sessions().unwrap();
        let s = sessions.iter().find(|s| s.meter == *id).unwrap();
        assert_eq!(s.dlms.is_some(), m.dlms.is_some(), "{}", m.serial);
        assert!(
            s.last_reading_at.unwrap() >= v.clock.now() - Days::minutes(60),
            "{} last read {:?} at {:?}: {stats:?}",
            m.serial,
            s.last_reading_at,
            v.clock.now()
        );
        // Every reading the gateway holds is the meter's own register at that interval's end.
        let log = locked(fw).nvm.log.clone();
        let stored = v
            .gw()
            .store()
            .meter_readings(*id, start(), v.clock.now())
            .unwrap();
        // Three hours are 12 intervals; all but those of the last hour at least.
        assert!(stored.len() >= 8, "{}: {}", m.serial, stored.len());
        for (at, register_wh) in &stored {
            let logged = log
                .iter()
                .find(|i| i.interval_start + Days::minutes(15) == *at)
                .unwrap_or_else(|| panic!("{} has no interval ending {at}", m.serial));
            assert_eq!(*register_wh, logged.import_wh as i64, "{}", m.serial);
        }
        if let Some(dlms) = &s.dlms {
            // Both counters were stored as they were used.
            assert!(dlms.gateway_next_ic.unwrap() > 11, "{dlms:?}");
            assert!(dlms.meter_last_ic.unwrap() >= 11, "{dlms:?}");
        }
    }

    // Household 0's DLMS meter is cut through its disconnect control object...
    let (meter, _, fw) = &v.meters[0];
    let report = v.gw().policy_pass(v.clock.now(), true).unwrap();
    assert_eq!(report.commands_sent, 1, "{report:?}");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(locked(fw).nvm.relay, payload::RelayState::Disconnected);
    assert_eq!(
        v.gw().store().relay_state(*meter).unwrap(),
        RelayState::Disconnected
    );
    assert!(v.gw().store().open_relay_commands().unwrap().is_empty());
    // ... and reconnected after a recharge, confirmed by its control_state.
    v.gw()
        .store()
        .record_event(&recharge("A0", v.clock.now()))
        .unwrap();
    let report = v.gw().policy_pass(v.clock.now(), true).unwrap();
    assert_eq!(report.commands_sent, 1, "{report:?}");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(locked(fw).nvm.relay, payload::RelayState::Connected);
    assert_eq!(
        v.gw().store().relay_state(*meter).unwrap(),
        RelayState::Connected
    );
    assert!(v.gw().store().open_relay_commands().unwrap().is_empty());
    assert_eq!(v.stats().relay_latencies.len(), 2);
    v.stop.send(true).unwrap();
}

/// A DLMS meter's frames that are replayed (the same APDU in a new, authentic LoRaWAN frame),
/// wrongly ciphered or malformed are refused and counted, also by a gateway restarted since:
/// the meter's invocation counter is kept in the store.
#[tokio::test(start_paused = true)]
async fn replayed_forged_and_malformed_dlms_frames_are_refused_and_counted() {
    let v = village_of(1, 1, "", AccessMode::Scheduled).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let (_, m, _) = &v.meters[0];
    let last = v
        .uplinks_of(&v.air.take_records(), &m.serial)
        .into_iter()
        .rev()
        .find(|phy| frame::parse_header(phy).unwrap().fport == Some(2))
        .expect("a DLMS answer on FPort 2");
    v.stop.send(true).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut restarted = v.restarted_link();
    // Each test frame is a new authentic LoRaWAN frame, so only the DLMS layer can refuse it.
    let header = frame::parse_header(&last).unwrap();
    let apdu = frame::open_data_frame(&m.keys, &last, u32::from(header.fcnt16)).unwrap();
    let mut fcnt = u32::from(header.fcnt16);
    let mut reseal = |body: &[u8]| {
        fcnt += 1;
        frame::encode_data_frame(
            &m.keys,
            &frame::FrameSpec {
                direction: frame::Direction::Uplink,
                confirmed: false,
                ack: false,
                fcnt,
                fport: 2,
                payload: body,
            },
        )
        .unwrap()
    };
    assert!(restarted.on_uplink(&frame(reseal(&apdu))).is_none());
    let mut forged = apdu.clone();
    let n = forged.len();
    forged[n - 1] ^= 0x01;
    assert!(restarted.on_uplink(&frame(reseal(&forged))).is_none());
    assert!(restarted
        .on_uplink(&frame(reseal(&[0, 1, 0, 1, 0, 1, 0, 9, 1])))
        .is_none());
    let stats = link::read_stats(&restarted.stats());
    let count = |name: &str| rejected(&stats, name);
    assert_eq!(count("dlms_replayed"), 1, "{stats:?}");
    assert_eq!(count("dlms_bad_tag"), 1, "{stats:?}");
    assert_eq!(count("dlms_malformed"), 1, "{stats:?}");
    assert_eq!(stats.rejects.total(), 3, "{stats:?}");
}
