//! Storage faults on the gateway: power cuts at random points of a day lose nothing acknowledged
//! and double nothing; a full disk leaves readings on the meters and keeps money and relay records
//! going; I/O errors fail cleanly and leave every balance right.
//!
//! The gateway's database lives on [`cut_disk`], a SQLite VFS that drops, keeps or tears every
//! write not yet fsynced when the power fails. A day's work (central's recharges applied, a local
//! recharge, readings ingested and charged, vouchers redeemed, policy passes that disconnect and
//! reconnect, acknowledgements from central) runs once without a cut, with a snapshot after each
//! step. Then, for each cut point, it runs again with the power failing at a random write or sync:
//! the disk comes back as a real one could, the gateway reopens, and
//! - `gateway verify`'s checks pass (SQLite's quick_check, charges match the stored readings);
//! - everything the steps before the cut acknowledged is there, and nothing the cut step could
//!   not have made (recharges and redemptions, charges, relay commands, sync cursors);
//! - after the cut step is retried (as the meter link, sync and technician do) and the day runs
//!   to its end, the ledger, balances, relay commands and cursors are the uncut run's.
//!
//! `GRAMGRID_POWER_CUTS` sets the number of cut points: 500 by default, 10,000 in the long mode
//! (`GRAMGRID_LONG=1`). `GRAMGRID_POWER_CUT_SEED` sets the seed (printed; a failing cut names its
//! seed, point and tear seed).
#[path = "storage_faults/cut_disk.rs"]
mod cut_disk;

use chrono::{DateTime, Duration, TimeZone, Utc};
use gramgrid_core::ledger::{EventKind, LedgerEvent};
use gramgrid_core::policy::{RelayAction, RelayState};
use gramgrid_core::tariff::Category;
use gramgrid_gateway::config::GatewayConfig;
use gramgrid_gateway::gateway::{Gateway, RelayLink};
use gramgrid_gateway::store::{Account, MeterInstall, MeterReading, StoreError};
use gramgrid_proto::voucher::{PublishedKey, SigningSecret, Voucher};
use gramgrid_proto::wire::{
    DownlinkEvent, DownlinkRecord, UplinkEvent, WireEventKind, WireLedgerEvent,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const ACCOUNTS: [&str; 4] = ["A1", "A2", "A3", "A4"];

/// Monday 30 November 2026 (day 30) or the Tuesday after (day 31), Asia/Kolkata wall-clock
/// time, as UTC.
fn ist(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    gramgrid_core::civil::ist()
        .with_ymd_and_hms(2026, 11, 30, hour, minute, 0)
        .map(|monday| monday + Duration::days(i64::from(day) - 30))
        .unwrap()
        .with_timezone(&Utc)
}

/// A radio that takes every command.
struct AcceptingLink;

impl RelayLink for AcceptingLink {
    fn send(
        &mut self,
        _meter: i64,
        _command_id: &str,
        _action: RelayAction,
        _not_after: Option<DateTime<Utc>>,
    ) -> Result<(), String> {
        Ok(())
    }

    fn withdraw(&mut self, _meter: i64, _command_id: &str) -> Result<(), String> {
        Ok(())
    }
}

/// One step of the gateway's day.
#[derive(Debug, Clone)]
enum Step {
    /// Central's recharge arrives in a sync session as downlink record `seq`.
    CentralRecharge {
        seq: u64,
        account: &'static str,
        paise: i64,
        at: DateTime<Utc>,
    },
    /// A money event made at the gateway.
    LocalRecharge { id: &'static str, paise: i64 },
    /// Every meter's register at `at` (the meter link's report), in one batch.
    Readings { at: DateTime<Utc>, wh: [i64; 4] },
    /// A technician redeems a voucher code.
    Redeem { code: String, at: DateTime<Utc> },
    /// The policy pass.
    Policy { at: DateTime<Utc> },
    /// Each meter confirms the relay state its newest command asked for.
    RelayReports { at: DateTime<Utc> },
    /// Central acknowledges everything uploaded so far.
    CentralAcks,
}

/// Two days: A1 runs out on the first (a notice) and is disconnected in the second's window,
/// pays at central and is reconnected; A2 and A3 redeem vouchers; central acknowledges twice.
fn day(vouchers: &[String]) -> Vec<Step> {
    use Step::*;
    vec![
        CentralRecharge {
            seq: 2,
            account: "A1",
            paise: 10_000,
            at: ist(30, 8, 0),
        },
        CentralRecharge {
            seq: 3,
            account: "A2",
            paise: 20_000,
            at: ist(30, 8, 5),
        },
        CentralRecharge {
            seq: 4,
            account: "A4",
            paise: 10_000,
            at: ist(30, 8, 10),
        },
        LocalRecharge {
            id: "local-A3-1",
            paise: 15_000,
        },
        Readings {
            at: ist(30, 9, 0),
            wh: [30_000, 1_000, 2_000, 500],
        },
        Redeem {
            code: vouchers[0].clone(),
            at: ist(30, 9, 30),
        },
        Policy {
            at: ist(30, 10, 30),
        },
        CentralAcks,
        Readings {
            at: ist(30, 18, 0),
            wh: [45_000, 2_500, 4_000, 900],
        },
        Policy {
            at: ist(31, 10, 30),
        },
        RelayReports {
            at: ist(31, 10, 40),
        },
        CentralRecharge {
            seq: 5,
            account: "A1",
            paise: 50_000,
            at: ist(31, 11, 0),
        },
        Policy { at: ist(31, 11, 5) },
        RelayReports {
            at: ist(31, 11, 10),
        },
        Redeem {
            code: vouchers[1].clone(),
            at: ist(31, 11, 20),
        },
        CentralAcks,
        Readings {
            at: ist(31, 12, 0),
            wh: [46_000, 4_000, 6_000, 1_500],
        },
    ]
}

/// What the checks compare.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    /// (account, event id, effect) of every ledger event.
    ledger: BTreeSet<(String, String, i64)>,
    balances: BTreeMap<String, i64>,
    /// (command id, action) of every relay command.
    commands: BTreeSet<(String, String)>,
    /// Priority and readings acknowledged by central, downlink applied.
    cursors: (u64, u64, u64),
    /// Readings stored on the two days.
    readings: usize,
    /// (account, kind, raised at) of every alert for the household (SMS, display, office).
    alerts: BTreeSet<(String, String, i64)>,
}

impl Snapshot {
    fn take(gateway: &mut Gateway, meters: &[i64]) -> Snapshot {
        let rules = gateway.policy().arrears.clone();
        let store = gateway.store();
        let mut ledger = BTreeSet::new();
        let mut balances = BTreeMap::new();
        let mut alerts = BTreeSet::new();
        for account in ACCOUNTS {
            for (kind, at) in store.recent_alerts(account, 1_000).unwrap() {
                alerts.insert((account.to_string(), kind, at.timestamp()));
            }
            for event in store.events(account).unwrap() {
                ledger.insert((account.to_string(), event.id.clone(), event.amount_paise));
            }
            let position = store.position(account, &rules).unwrap();
            balances.insert(account.to_string(), position.balance_paise);
        }
        let mut commands = BTreeSet::new();
        for &meter in meters {
            for command in store.relay_commands_of(meter).unwrap() {
                commands.insert((command.id, format!("{:?}", command.action)));
            }
        }
        let cursors = store.sync_cursors().unwrap();
        let mut readings = 0;
        for &meter in meters {
            let day = store
                .meter_readings(meter, ist(30, 0, 0), ist(31, 23, 59))
                .unwrap();
            readings += day.len();
        }
        Snapshot {
            alerts,
            ledger,
            balances,
            commands,
            cursors: (
                cursors.priority_acked,
                cursors.readings_acked,
                cursors.downlink_applied,
            ),
            readings,
        }
    }

    /// What differs from `other`, field by field (empty when equal).
    fn differences(&self, other: &Snapshot) -> Vec<String> {
        fn sets<T: Ord + std::fmt::Debug>(
            name: &str,
            a: &BTreeSet<T>,
            b: &BTreeSet<T>,
        ) -> Option<String> {
            (a != b).then(|| {
                let only_a: Vec<_> = a.difference(b).collect();
                let only_b: Vec<_> = b.difference(a).collect();
                format!("{name}: only in the uncut run {only_a:?}, only after the cut {only_b:?}")
            })
        }
        let mut found: Vec<String> = [
            sets("ledger", &self.ledger, &other.ledger),
            sets("alerts", &self.alerts, &other.alerts),
            sets("commands", &self.commands, &other.commands),
        ]
        .into_iter()
        .flatten()
        .collect();
        if self.balances != other.balances {
            found.push(format!(
                "balances {:?} against {:?}",
                self.balances, other.balances
            ));
        }
        if self.cursors != other.cursors {
            found.push(format!(
                "cursors {:?} against {:?}",
                self.cursors, other.cursors
            ));
        }
        if self.readings != other.readings {
            found.push(format!(
                "readings {} against {}",
                self.readings, other.readings
            ));
        }
        found
    }

    /// Whether everything in `self` that can only grow is also in `later`.
    fn within(&self, later: &Snapshot) -> bool {
        self.ledger.is_subset(&later.ledger)
            && self.alerts.is_subset(&later.alerts)
            && self.commands.is_subset(&later.commands)
            && self.cursors.0 <= later.cursors.0
            && self.cursors.1 <= later.cursors.1
            && self.cursors.2 <= later.cursors.2
            && self.readings <= later.readings
    }
}

/// The fixture: the signing key central publishes and the vouchers it issued.
struct Fixture {
    key: PublishedKey,
    vouchers: Vec<String>,
}

impl Fixture {
    fn new() -> Fixture {
        let secret = SigningSecret::generate(1);
        let issued_at = ist(30, 7, 0);
        let vouchers = [("A2", 5_000), ("A3", 7_500)]
            .into_iter()
            .enumerate()
            .map(|(i, (account, paise))| {
                secret
                    .issue(&Voucher {
                        key_id: 1,
                        voucher_id: 0x5eed_0000 + i as u64,
                        account: account.into(),
                        amount_paise: paise,
                        issued_at,
                        expires_at: issued_at + Duration::days(30),
                    })
                    .unwrap()
            })
            .collect();
        Fixture {
            key: PublishedKey {
                key_id: 1,
                public_key: secret.public_key_hex(),
                issue_from: ist(30, 0, 0) - Duration::days(365),
                issue_until: None,
                revoked: false,
            },
            vouchers,
        }
    }
}

fn open(data_dir: &Path) -> Result<Gateway, gramgrid_gateway::gateway::GatewayError> {
    let mut config = GatewayConfig::parse("").unwrap();
    config.gateway.data_dir = data_dir.to_path_buf();
    let mut gateway = Gateway::open(config)?;
    gateway.set_relay_link(Box::new(AcceptingLink));
    // Free space is the simulated disk's, never the machine's.
    gateway.set_free_space(Box::new(cut_disk::free_space));
    Ok(gateway)
}

/// Accounts, meters with closed relays, and the voucher key: the gateway before its day.
fn commission(data_dir: &Path, fixture: &Fixture) -> Vec<i64> {
    let mut gateway = open(data_dir).unwrap();
    let opened = ist(30, 0, 0) - Duration::days(29);
    let mut meters = Vec::new();
    for (i, account) in ACCOUNTS.into_iter().enumerate() {
        let store = gateway.store();
        store
            .upsert_account(&Account {
                id: account.into(),
                consumer_name: format!("Consumer {i}"),
                category: Category::Domestic,
                phone: None,
                created_at: opened,
            })
            .unwrap();
        let meter = store
            .install_meter(&MeterInstall {
                serial: format!("M{i}"),
                account: account.into(),
                installed_at: opened,
                initial_register_wh: Some(0),
            })
            .unwrap();
        gateway
            .on_relay_report(meter, RelayState::Connected, opened)
            .unwrap();
        meters.push(meter);
    }
    gateway
        .store()
        .apply_downlink(
            &[DownlinkRecord {
                seq: 1,
                event: DownlinkEvent::VoucherKeys(vec![fixture.key.clone()]),
            }],
            opened,
        )
        .unwrap();
    meters
}

/// Runs one step; an error is the store's (a failed write when the power goes).
fn run(step: &Step, gateway: &mut Gateway, meters: &[i64]) -> Result<(), StoreError> {
    match step {
        Step::CentralRecharge {
            seq,
            account,
            paise,
            at,
        } => {
            let event = DownlinkEvent::Ledger(WireLedgerEvent {
                id: format!("central-{seq}"),
                account: account.to_string(),
                at: *at,
                kind: WireEventKind::Recharge,
                amount_paise: *paise,
                expires_at: None,
            });
            let record = DownlinkRecord { seq: *seq, event };
            gateway.store().apply_downlink(&[record], *at)?;
        }
        Step::LocalRecharge { id, paise } => {
            gateway.store().record_event(&LedgerEvent {
                id: id.to_string(),
                account: "A3".into(),
                at: ist(30, 8, 30),
                kind: EventKind::Recharge,
                amount_paise: *paise,
                expires_at: None,
            })?;
        }
        Step::Readings { at, wh } => {
            let batch: Vec<MeterReading> = meters
                .iter()
                .zip(wh)
                .map(|(&meter, &register_wh)| MeterReading {
                    meter,
                    at: *at,
                    register_wh,
                    export_wh: 0,
                })
                .collect();
            gateway.ingest_readings(&batch)?;
        }
        Step::Redeem { code, at } => match gateway.store().redeem_voucher(code, *at) {
            // Retried after a cut that had already committed it: the technician is told so.
            Ok(_) | Err(StoreError::VoucherSpent { .. }) => {}
            Err(other) => return Err(other),
        },
        Step::Policy { at } => {
            gateway.policy_pass(*at, true)?;
        }
        Step::RelayReports { at } => {
            // Each meter reports the relay state its newest command asked for.
            for &meter in meters {
                let newest = gateway
                    .store()
                    .relay_commands_of(meter)?
                    .into_iter()
                    .max_by_key(|c| c.created_at);
                if let Some(command) = newest {
                    let state = match command.action {
                        RelayAction::Connect => RelayState::Connected,
                        RelayAction::Disconnect => RelayState::Disconnected,
                    };
                    gateway.on_relay_report(meter, state, *at)?;
                }
            }
        }
        Step::CentralAcks => {
            let store = gateway.store();
            let cursors = store.sync_cursors()?;
            let priority = store
                .priority_after(cursors.priority_acked, 100_000)?
                .last()
                .map_or(cursors.priority_acked, |r| r.seq);
            let readings = store
                .readings_after(cursors.readings_acked, 100_000)?
                .map_or(cursors.readings_acked, |b| b.through_seq);
            store.record_acks(priority, readings)?;
        }
    }
    Ok(())
}

/// The uncut day.
struct UncutDay {
    /// Before the first step, and after each.
    snapshots: Vec<Snapshot>,
    /// Writes and syncs made by the end of each step (cut points are drawn from 1 to the last).
    mutations_by_step: Vec<u64>,
}

impl UncutDay {
    fn mutations(&self) -> u64 {
        self.mutations_by_step.last().copied().unwrap_or(0)
    }

    /// The cut points that fall in `step`.
    fn points_in(&self, step: usize) -> std::ops::RangeInclusive<u64> {
        let first = step.checked_sub(1).map_or(0, |s| self.mutations_by_step[s]) + 1;
        first..=self.mutations_by_step[step]
    }
}

fn uncut_day(fixture: &Fixture) -> UncutDay {
    let dir = tempfile::tempdir().unwrap();
    cut_disk::reset();
    let meters = commission(dir.path(), fixture);
    let mut gateway = open(dir.path()).unwrap();
    let mut snapshots = vec![Snapshot::take(&mut gateway, &meters)];
    let before = cut_disk::mutations();
    let mut mutations_by_step = Vec::new();
    for step in day(&fixture.vouchers) {
        run(&step, &mut gateway, &meters).unwrap();
        mutations_by_step.push(cut_disk::mutations() - before);
        snapshots.push(Snapshot::take(&mut gateway, &meters));
    }
    // The day must make the relay decisions the cuts are to test.
    let actions: BTreeSet<&str> = snapshots[snapshots.len() - 1]
        .commands
        .iter()
        .map(|(_, action)| action.as_str())
        .collect();
    assert_eq!(actions, BTreeSet::from(["Connect", "Disconnect"]));
    let book = gateway.tariff_book().clone();
    assert!(gateway.store().verify(&book).unwrap().is_empty());
    UncutDay {
        snapshots,
        mutations_by_step,
    }
}

/// What one cut showed.
struct CutOutcome {
    /// The step the power failed in.
    step: usize,
    /// Changes not yet synced at the cut (lost, kept or torn).
    unsynced: usize,
}

/// Runs the day with the power failing at mutating call `point`, checks the disk that comes back,
/// retries the step and finishes the day. Returns where the cut fell, or a description of what
/// went wrong.
fn cut_day(
    fixture: &Fixture,
    uncut: &[Snapshot],
    point: u64,
    tear_seed: u64,
) -> Result<CutOutcome, String> {
    let dir = tempfile::tempdir().unwrap();
    cut_disk::reset();
    let meters = commission(dir.path(), fixture);
    let steps = day(&fixture.vouchers);
    let mut gateway = open(dir.path()).unwrap();
    cut_disk::arm(point);
    let mut cut_step = None;
    for (i, step) in steps.iter().enumerate() {
        let result = run(step, &mut gateway, &meters);
        if cut_disk::powered_off() {
            cut_step = Some(i);
            break;
        }
        result.map_err(|e| format!("step {i} ({step:?}) failed with the power on: {e}"))?;
    }
    let Some(cut_step) = cut_step else {
        return Err(format!("the power never failed (cut point {point})"));
    };
    drop(gateway);
    let unsynced = cut_disk::power_on(tear_seed);

    let mut gateway =
        open(dir.path()).map_err(|e| format!("the gateway does not reopen after the cut: {e}"))?;
    let book = gateway.tariff_book().clone();
    let problems = gateway.store().verify(&book).map_err(|e| e.to_string())?;
    if !problems.is_empty() {
        return Err(format!("verify after the cut: {problems:?}"));
    }
    let after_cut = Snapshot::take(&mut gateway, &meters);
    if !uncut[cut_step].within(&after_cut) {
        return Err(format!(
            "the cut in step {cut_step} lost what was acknowledged:\n acknowledged {:?}\n after the cut {after_cut:?}",
            uncut[cut_step]
        ));
    }
    if !after_cut.within(&uncut[cut_step + 1]) {
        return Err(format!(
            "after the cut in step {cut_step} the store holds more than the step could make:\n after the step {:?}\n after the cut {after_cut:?}",
            uncut[cut_step + 1]
        ));
    }
    for (i, step) in steps.iter().enumerate().skip(cut_step) {
        run(step, &mut gateway, &meters)
            .map_err(|e| format!("step {i} ({step:?}) failed after the cut: {e}"))?;
    }
    let end = Snapshot::take(&mut gateway, &meters);
    let uncut_end = uncut.last().expect("the uncut day has snapshots");
    let differences = uncut_end.differences(&end);
    if !differences.is_empty() {
        return Err(format!(
            "the day ended differently after a cut in step {cut_step}: {differences:#?}"
        ));
    }
    let problems = gateway.store().verify(&book).map_err(|e| e.to_string())?;
    if !problems.is_empty() {
        return Err(format!("verify at the end of the day: {problems:?}"));
    }
    Ok(CutOutcome {
        step: cut_step,
        unsynced,
    })
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The disk is one per process: the tests take turns.
static DISK_IN_USE: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn power_cuts_at_random_points_lose_and_double_nothing_acknowledged() {
    let _disk = DISK_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    let long_mode = std::env::var_os("GRAMGRID_LONG").is_some();
    let cuts = env_number("GRAMGRID_POWER_CUTS", if long_mode { 10_000 } else { 500 });
    let seed = env_number("GRAMGRID_POWER_CUT_SEED", rand::rng().random());
    println!("power cuts: {cuts}, seed {seed} (GRAMGRID_POWER_CUT_SEED={seed} repeats them)");
    let fixture = Fixture::new();
    let uncut = uncut_day(&fixture);
    let mutations = uncut.mutations();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut per_step = vec![0u32; uncut.mutations_by_step.len()];
    let mut unsynced_total = 0;
    for n in 0..cuts {
        let point = rng.random_range(1..=mutations);
        let tear_seed = rng.random();
        match cut_day(&fixture, &uncut.snapshots, point, tear_seed) {
            Ok(outcome) => {
                per_step[outcome.step] += 1;
                unsynced_total += outcome.unsynced;
            }
            Err(problem) => panic!(
                "cut {n} at write/sync {point} of {mutations} (seed {seed}, tear seed {tear_seed}): {problem}"
            ),
        }
    }
    println!(
        "{cuts} cuts over {mutations} writes and syncs; per step {per_step:?}; {unsynced_total} unsynced changes lost, kept or torn; nothing acknowledged lost, nothing doubled"
    );
    // Every step of the day was cut into at least once (a step with no write would be a bug here).
    if cuts >= 200 {
        assert!(
            per_step.iter().all(|&n| n > 0),
            "steps never cut: {per_step:?}"
        );
    }
}

#[test]
fn the_cut_disk_loses_unsynced_writes_and_keeps_synced_ones() {
    let _disk = DISK_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    // Through SQLite with synchronous = OFF nothing is synced: a cut loses the row (with most seeds);
    // with FULL the committed row survives every seed.
    let survived = |synchronous: &str, seed: u64| -> bool {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        cut_disk::reset();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.execute("CREATE TABLE t (x INTEGER)", []).unwrap();
        conn.pragma_update(None, "synchronous", synchronous)
            .unwrap();
        conn.execute("INSERT INTO t VALUES (42)", []).unwrap();
        cut_disk::arm(1);
        let _ = conn.execute("INSERT INTO t VALUES (43)", []);
        assert!(cut_disk::powered_off());
        drop(conn);
        cut_disk::power_on(seed);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row("SELECT COUNT(*) FROM t WHERE x = 42", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
            == 1
    };
    assert!((0..32).all(|seed| survived("FULL", seed)));
    assert!((0..32).any(|seed| !survived("OFF", seed)));
}

/// Every write and sync of the relay reports (the meter confirms the disconnect, then the
/// reconnect) is a cut point, with four ways for the disk to come back: the household's notice
/// of each is never lost (it once was, when the command's acknowledgement and its notice were
/// two transactions).
#[test]
fn every_cut_in_a_relay_report_keeps_its_notice() {
    let _disk = DISK_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    let fixture = Fixture::new();
    let uncut = uncut_day(&fixture);
    let reports: Vec<usize> = day(&fixture.vouchers)
        .iter()
        .enumerate()
        .filter_map(|(i, step)| matches!(step, Step::RelayReports { .. }).then_some(i))
        .collect();
    assert_eq!(reports.len(), 2);
    for step in reports {
        assert!(
            !uncut.points_in(step).is_empty(),
            "step {step} writes nothing"
        );
        for point in uncut.points_in(step) {
            for tear_seed in 0..4 {
                if let Err(problem) = cut_day(&fixture, &uncut.snapshots, point, tear_seed) {
                    panic!("cut at write/sync {point} (tear seed {tear_seed}): {problem}");
                }
            }
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// The anomalies about the gateway itself waiting for upload, by kind.
fn gateway_anomalies(gateway: &mut Gateway) -> Vec<String> {
    gateway
        .store()
        .priority_after(0, 100_000)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event {
            UplinkEvent::Anomaly {
                meter: None, kind, ..
            } => Some(kind),
            _ => None,
        })
        .collect()
}

/// With free space under the reserve (64 MiB by default) readings are refused and left on the
/// meters, the office is told once, money and relay decisions still land; with no space at all a
/// recharge fails cleanly and lands on retry; when space returns the readings are stored again and
/// the day ends as if the disk had never filled.
#[test]
fn a_full_disk_leaves_readings_on_the_meters_and_keeps_enforcing() {
    let _disk = DISK_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    let fixture = Fixture::new();
    let uncut = uncut_day(&fixture);
    let steps = day(&fixture.vouchers);
    let dir = tempfile::tempdir().unwrap();
    cut_disk::reset();
    let meters = commission(dir.path(), &fixture);
    let mut gateway = open(dir.path()).unwrap();
    let readings_step = steps
        .iter()
        .position(|s| matches!(s, Step::Readings { .. }))
        .unwrap();
    for step in &steps[..readings_step] {
        run(step, &mut gateway, &meters).unwrap();
    }

    // 32 MiB left: under the reserve.
    cut_disk::set_capacity(Some(cut_disk::used() + 32 * MIB));
    for _ in 0..3 {
        let refused = run(&steps[readings_step], &mut gateway, &meters).unwrap_err();
        assert!(
            matches!(
                refused,
                StoreError::ReadingsShed {
                    free_mib: 30..=32,
                    reserve_mib: 64
                }
            ),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("readings stay on the meters"),
            "{refused}"
        );
    }
    assert_eq!(gateway_anomalies(&mut gateway), ["readings_shed"]);
    let readings: usize = meters
        .iter()
        .map(|&m| {
            gateway
                .store()
                .meter_readings(m, ist(30, 0, 0), ist(31, 23, 59))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(readings, 0);
    // What must never be refused lands in the reserve: a voucher, a recharge from central.
    let voucher = steps
        .iter()
        .position(|s| matches!(s, Step::Redeem { .. }))
        .unwrap();
    run(&steps[voucher], &mut gateway, &meters).unwrap();

    // No space at all: a recharge fails cleanly, nothing half-written, and lands on retry.
    let before = gateway.store().position("A1", &[]).unwrap().balance_paise;
    cut_disk::set_capacity(Some(cut_disk::used()));
    let recharge = LedgerEvent {
        id: "counter-A1-disk".into(),
        account: "A1".into(),
        at: ist(30, 9, 45),
        kind: EventKind::Recharge,
        amount_paise: 1_000,
        expires_at: None,
    };
    let full = gateway.store().record_event(&recharge).unwrap_err();
    assert!(matches!(full, StoreError::DiskFull), "{full}");
    assert_eq!(
        gateway.store().position("A1", &[]).unwrap().balance_paise,
        before
    );

    // Space returns (a gigabyte freed): the recharge lands, the readings are stored, the office
    // is told.
    cut_disk::set_capacity(Some(cut_disk::used() + 1024 * MIB));
    assert!(gateway.store().record_event(&recharge).unwrap());
    assert_eq!(
        gateway.store().position("A1", &[]).unwrap().balance_paise,
        before + 1_000
    );
    run(&steps[readings_step], &mut gateway, &meters).unwrap();
    assert_eq!(
        gateway_anomalies(&mut gateway),
        ["readings_shed", "readings_resumed"]
    );
    for step in steps.iter().skip(readings_step + 1) {
        run(step, &mut gateway, &meters).unwrap();
    }
    let book = gateway.tariff_book().clone();
    assert!(gateway.store().verify(&book).unwrap().is_empty());
    let mut end = Snapshot::take(&mut gateway, &meters);
    // Beyond the uncut day: the extra recharge, and three uploads (it, and the two anomalies).
    end.ledger.retain(|(_, id, _)| id != "counter-A1-disk");
    *end.balances.get_mut("A1").unwrap() -= 1_000;
    end.cursors.0 -= 3;
    let uncut_end = uncut.snapshots.last().unwrap();
    let differences = uncut_end.differences(&end);
    assert!(differences.is_empty(), "{differences:#?}");
}

/// The SD card fails every read and write while one step of the day runs: the step fails with an
/// error that tells the technician what to do (or succeeds from SQLite's cache), nothing panics,
/// and once the card works again, retried in the same process or after a restart, the day ends
/// with the uncut run's ledger, balances, alerts, relay commands, cursors and readings.
#[test]
fn storage_io_errors_fail_cleanly_and_leave_every_balance_right() {
    let _disk = DISK_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    let fixture = Fixture::new();
    let uncut = uncut_day(&fixture);
    let steps = day(&fixture.vouchers);
    let mut failed_steps = 0;
    for faulty in 0..steps.len() {
        let dir = tempfile::tempdir().unwrap();
        cut_disk::reset();
        let meters = commission(dir.path(), &fixture);
        let mut gateway = open(dir.path()).unwrap();
        for step in &steps[..faulty] {
            run(step, &mut gateway, &meters).unwrap();
        }
        cut_disk::fail_io(true);
        let outcome = run(&steps[faulty], &mut gateway, &meters);
        cut_disk::fail_io(false);
        if let Err(error) = outcome {
            failed_steps += 1;
            assert!(
                matches!(error, StoreError::StorageFault(_)),
                "step {faulty}: {error}"
            );
            assert!(error.to_string().contains("check the SD card"), "{error}");
        }
        if faulty % 2 == 1 {
            drop(gateway);
            gateway = open(dir.path()).unwrap();
        }
        for step in &steps[faulty..] {
            run(step, &mut gateway, &meters)
                .unwrap_or_else(|e| panic!("step {faulty} retried: {e}"));
        }
        let book = gateway.tariff_book().clone();
        assert!(gateway.store().verify(&book).unwrap().is_empty());
        let differences = uncut
            .snapshots
            .last()
            .unwrap()
            .differences(&Snapshot::take(&mut gateway, &meters));
        assert!(
            differences.is_empty(),
            "I/O errors in step {faulty}: {differences:#?}"
        );
    }
    assert!(
        failed_steps > steps.len() / 2,
        "{failed_steps} steps failed"
    );
}
