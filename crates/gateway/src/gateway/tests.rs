//! Tests of the policy pass over a real store (fixed and minimum charges, alerts, the clock rule,
//! relay commands through a recording [`RelayLink`]: windows, withdrawals, deadlines, time-outs).
use super::*;
use crate::daemon::run;
use crate::store::{MeterInstall, OverrideRecord};
use chrono::TimeZone;
use gramgrid_core::tariff::Category;
use gramgrid_proto::wire::{
    AuditReason, DownlinkEvent, DownlinkRecord, EnergyAuditDay, UplinkEvent, WireTariffVersion,
};
use std::sync::{Arc, Mutex};

/// A UTC instant from Asia/Kolkata wall-clock time.
fn ist(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    civil::ist()
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .unwrap()
        .with_timezone(&Utc)
}

/// What the gateway told the meter link.
#[derive(Debug, Clone, PartialEq)]
enum Told {
    Send {
        command_id: String,
        action: RelayAction,
        not_after: Option<DateTime<Utc>>,
    },
    Withdraw {
        command_id: String,
    },
}

/// Records what the gateway tells the meter link.
#[derive(Clone, Default)]
struct RecordingLink(Arc<Mutex<Vec<Told>>>);

impl RecordingLink {
    /// Every command sent: id, action and deadline.
    fn sends(&self) -> Vec<(String, RelayAction, Option<DateTime<Utc>>)> {
        let told = self.0.lock().unwrap();
        told.iter()
            .filter_map(|t| match t {
                Told::Send {
                    command_id,
                    action,
                    not_after,
                } => Some((command_id.clone(), *action, *not_after)),
                Told::Withdraw { .. } => None,
            })
            .collect()
    }

    /// Every command withdrawn.
    fn withdrawals(&self) -> Vec<String> {
        let told = self.0.lock().unwrap();
        told.iter()
            .filter_map(|t| match t {
                Told::Withdraw { command_id } => Some(command_id.clone()),
                Told::Send { .. } => None,
            })
            .collect()
    }
}

impl RelayLink for RecordingLink {
    fn send(
        &mut self,
        _meter: i64,
        command_id: &str,
        action: RelayAction,
        not_after: Option<DateTime<Utc>>,
    ) -> Result<(), String> {
        self.0.lock().unwrap().push(Told::Send {
            command_id: command_id.to_string(),
            action,
            not_after,
        });
        Ok(())
    }

    fn withdraw(&mut self, _meter: i64, command_id: &str) -> Result<(), String> {
        self.0.lock().unwrap().push(Told::Withdraw {
            command_id: command_id.to_string(),
        });
        Ok(())
    }
}

/// The states and details of a command queued for upload to central, in order.
fn uploaded_states(gw: &mut Gateway, command: &str) -> Vec<(String, String)> {
    gw.store()
        .priority_after(0, 10_000)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event {
            UplinkEvent::RelayCommand {
                id, state, detail, ..
            } if id == command => Some((state, detail)),
            _ => None,
        })
        .collect()
}

fn gateway(dir: &tempfile::TempDir, config_toml: &str) -> (Gateway, i64, RecordingLink) {
    let mut config = GatewayConfig::parse(config_toml).unwrap();
    config.gateway.data_dir = dir.path().join("data");
    let mut gateway = Gateway::open(config).unwrap();
    let link = RecordingLink::default();
    gateway.set_relay_link(Box::new(link.clone()));
    let created = ist(2026, 11, 1, 0, 0);
    gateway
        .store()
        .upsert_account(&Account {
            id: "A1".into(),
            consumer_name: "Kamla Bai".into(),
            category: Category::Domestic,
            phone: None,
            created_at: created,
        })
        .unwrap();
    let meter = gateway
        .store()
        .install_meter(&MeterInstall {
            serial: "M1".into(),
            account: "A1".into(),
            installed_at: created,
            initial_register_wh: Some(0),
        })
        .unwrap();
    gateway
        .on_relay_report(meter, RelayState::Connected, created)
        .unwrap();
    (gateway, meter, link)
}

/// A gateway config's tariffs: a domestic version (id "dom" from 2023-04-01) with `domestic`'s
/// lines, and flat commercial and agricultural ones.
fn tariffs_with_domestic(domestic: &str) -> String {
    format!(
        r#"
        [[tariff]]
        id = "dom"
        category = "domestic"
        effective_from = "2023-04-01"
        {domestic}
        [[tariff]]
        id = "com"
        category = "commercial"
        effective_from = "2023-04-01"
        slabs = [{{ paise_per_kwh = 700 }}]
        [[tariff]]
        id = "agr"
        category = "agricultural"
        effective_from = "2023-04-01"
        slabs = [{{ paise_per_kwh = 300 }}]
        "#
    )
}

fn recharge(id: &str, amount_paise: i64, at: DateTime<Utc>) -> LedgerEvent {
    LedgerEvent {
        id: id.into(),
        account: "A1".into(),
        at,
        kind: EventKind::Recharge,
        amount_paise,
        expires_at: None,
    }
}

#[test]
fn exhausted_balance_disconnects_in_the_next_days_window_and_a_recharge_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, meter, link) = gateway(&dir, "");
    gw.store()
        .record_event(&recharge("r1", 37_000, ist(2026, 11, 1, 9, 0)))
        .unwrap();
    // 100 kWh at 3.70 INR uses up exactly the 370 INR recharge: balance 0, at the threshold.
    let used = MeterReading {
        meter,
        at: ist(2026, 11, 30, 10, 15),
        register_wh: 100_000,
        export_wh: 0,
    };
    gw.ingest_readings(&[used]).unwrap();

    let monday = gw.policy_pass(ist(2026, 11, 30, 10, 30), true).unwrap();
    assert_eq!((monday.commands_queued, monday.disconnects_held), (0, 1));
    assert_eq!(gw.store().alert_count("A1", "low_balance").unwrap(), 2); // 30 %, 10 %
                                                                         // 0 %: the notice that the supply will be cut.
    assert_eq!(
        gw.store().alert_count("A1", "disconnect_notice").unwrap(),
        1
    );
    assert_eq!(
        gw.policy_pass(ist(2026, 12, 1, 9, 59), true)
            .unwrap()
            .commands_queued,
        0
    );

    let tuesday = gw.policy_pass(ist(2026, 12, 1, 10, 0), true).unwrap();
    assert_eq!((tuesday.commands_queued, tuesday.commands_sent), (1, 1));
    assert_eq!(link.sends()[0].1, RelayAction::Disconnect);
    // Not confirmed yet: no new command, no alert.
    assert_eq!(
        gw.policy_pass(ist(2026, 12, 1, 10, 1), true)
            .unwrap()
            .commands_queued,
        0
    );
    assert_eq!(gw.store().alert_count("A1", "disconnected").unwrap(), 0);
    gw.on_relay_report(meter, RelayState::Disconnected, ist(2026, 12, 1, 10, 2))
        .unwrap();
    assert_eq!(gw.store().alert_count("A1", "disconnected").unwrap(), 1);

    // A recharge at night, outside every window, reconnects at the next pass.
    gw.store()
        .record_event(&recharge("r2", 20_000, ist(2026, 12, 1, 23, 0)))
        .unwrap();
    let night = gw.policy_pass(ist(2026, 12, 1, 23, 1), true).unwrap();
    assert_eq!(night.commands_queued, 1);
    assert_eq!(link.sends().last().unwrap().1, RelayAction::Connect);
    gw.on_relay_report(meter, RelayState::Connected, ist(2026, 12, 1, 23, 2))
        .unwrap();
    assert_eq!(gw.store().alert_count("A1", "reconnected").unwrap(), 1);
    assert_eq!(gw.store().below_threshold_since("A1").unwrap(), None);
}

#[test]
fn fixed_and_minimum_charges_are_charged_once_however_often_the_loop_runs() {
    let dir = tempfile::tempdir().unwrap();
    // A domestic tariff with a 60 INR fixed charge, as the example file would state it.
    let toml = tariffs_with_domestic(
        r#"
        fixed_monthly_paise = 6000
        minimum_monthly_paise = 10000
        slabs = [{ paise_per_kwh = 400 }]
        "#,
    );
    let (mut gw, _meter, _link) = gateway(&dir, &toml);
    for hour in [0, 6, 12, 18] {
        gw.policy_pass(ist(2026, 11, 30, hour, 5), true).unwrap();
    }
    let november_fixed = gw
        .store()
        .sum_of(
            "A1",
            EventKind::FixedCharge,
            ist(2026, 11, 1, 0, 0),
            ist(2026, 12, 1, 0, 0),
        )
        .unwrap();
    assert_eq!(november_fixed, 6_000);
    // December 1st: one more fixed day, and November is topped up from 60 INR to the 100 INR minimum.
    let first = gw.policy_pass(ist(2026, 12, 1, 0, 1), true).unwrap();
    let second = gw.policy_pass(ist(2026, 12, 1, 0, 2), true).unwrap();
    assert_eq!((first.fixed_charges, first.minimum_charges), (1, 1));
    assert_eq!((second.fixed_charges, second.minimum_charges), (0, 0));
    assert_eq!(
        gw.store().position("A1", &[]).unwrap().balance_paise,
        -(6_000 + 4_000 + 6_000 / 31)
    );
}

#[test]
fn readings_of_a_closed_month_that_come_in_late_are_billed_without_failing_later_passes() {
    let dir = tempfile::tempdir().unwrap();
    // ₹100 minimum and ₹120 per kW of maximum demand, ₹4 per kWh.
    let toml = tariffs_with_domestic(
        r#"
        minimum_monthly_paise = 10000
        demand_paise_per_kw = 12000
        slabs = [{ paise_per_kwh = 400 }]
        "#,
    );
    let (mut gw, meter, _link) = gateway(&dir, &toml);
    let reading = |at, register_wh| MeterReading {
        meter,
        at,
        register_wh,
        export_wh: 0,
    };
    gw.ingest_readings(&[
        reading(ist(2026, 11, 20, 18, 0), 10_000),
        reading(ist(2026, 11, 20, 18, 15), 10_250),
    ])
    .unwrap();
    // The month closes on 1 December with 250 Wh (₹1) billed and 1 kW of demand.
    let close = gw.policy_pass(ist(2026, 12, 1, 0, 1), true).unwrap();
    assert_eq!((close.minimum_charges, close.demand_charges), (1, 1));
    let balance = |gw: &mut Gateway| gw.store().position("A1", &[]).unwrap().balance_paise;
    let at_close = balance(&mut gw);
    // The meter was out of reach at the month's end: its last November readings arrive now, with
    // 20 kWh more and a higher 15-minute peak.
    gw.ingest_readings(&[
        reading(ist(2026, 11, 29, 18, 0), 20_000),
        reading(ist(2026, 11, 29, 18, 15), 30_250),
    ])
    .unwrap();
    let later = gw
        .policy_pass(ist(2026, 12, 1, 6, 0), true)
        .expect("a late reading of a closed month must not stop the policy pass");
    assert_eq!((later.minimum_charges, later.demand_charges), (0, 0));
    // 20 kWh at ₹4, billed as energy; the closed month's charges are not revised.
    assert_eq!(at_close - balance(&mut gw), 8_000);
    let events = gw.store().events("A1").unwrap();
    let once = |kind| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(once(EventKind::MinimumCharge), 1);
    assert_eq!(once(EventKind::DemandCharge), 1);
}

#[test]
fn a_months_demand_charge_is_charged_once_on_its_maximum_demand() {
    let dir = tempfile::tempdir().unwrap();
    // ₹120 per kW of the month's maximum demand on domestic, nothing else.
    let toml = tariffs_with_domestic(
        r#"
        demand_paise_per_kw = 12000
        slabs = [{ paise_per_kwh = 0 }]
        "#,
    );
    let (mut gw, meter, _link) = gateway(&dir, &toml);
    // November's evening of 15-minute readings: the highest interval draws 800 Wh (3.2 kW).
    let start = ist(2026, 11, 20, 18, 0);
    let draws = [300, 500, 800, 450, 200];
    let mut register = 10_000;
    let mut readings = vec![MeterReading {
        meter,
        at: start,
        register_wh: register,
        export_wh: 0,
    }];
    for (i, wh) in (1..).zip(draws) {
        register += wh;
        readings.push(MeterReading {
            meter,
            at: start + Duration::minutes(15 * i),
            register_wh: register,
            export_wh: 0,
        });
    }
    // Two hours missed, then 2 kWh: not one interval, so no demand is read from it.
    readings.push(MeterReading {
        meter,
        at: start + Duration::minutes(15 * 5 + 120),
        register_wh: register + 2_000,
        export_wh: 0,
    });
    gw.ingest_readings(&readings).unwrap();
    let november = gw.policy_pass(ist(2026, 11, 30, 23, 0), true).unwrap();
    assert_eq!(november.demand_charges, 0, "the month is not over");
    let first = gw.policy_pass(ist(2026, 12, 1, 0, 1), true).unwrap();
    let second = gw.policy_pass(ist(2026, 12, 1, 0, 2), true).unwrap();
    assert_eq!((first.demand_charges, second.demand_charges), (1, 0));
    // 3,200 W × ₹120 per kW = ₹384.00.
    assert_eq!(
        gw.store()
            .sum_of(
                "A1",
                EventKind::DemandCharge,
                ist(2026, 11, 1, 0, 0),
                ist(2026, 12, 2, 0, 0)
            )
            .unwrap(),
        38_400
    );
}

#[test]
fn a_solar_homes_surplus_is_banked_at_the_months_close_and_pays_for_the_next_month_once() {
    let dir = tempfile::tempdir().unwrap();
    // Domestic at ₹4.00 per kWh, banking export and settling it in March at ₹3.00.
    let toml = tariffs_with_domestic(
        r#"
        export_banking = true
        export_settlement_paise_per_kwh = 300
        slabs = [{ paise_per_kwh = 400 }]
        "#,
    );
    let (mut gw, meter, _link) = gateway(&dir, &toml);
    let reading = |at, register_wh, export_wh| MeterReading {
        meter,
        at,
        register_wh,
        export_wh,
    };
    // The meter's first report gives its export register (the installation's was not read);
    // then November: 40 kWh in, 100 kWh out: nothing charged, 60 kWh banked at the close.
    gw.ingest_readings(&[
        reading(ist(2026, 11, 1, 0, 15), 0, 0),
        reading(ist(2026, 11, 30, 18, 0), 40_000, 100_000),
    ])
    .unwrap();
    let first = gw.policy_pass(ist(2026, 12, 1, 0, 1), true).unwrap();
    assert_eq!(
        first.export_credits, 0,
        "a bank, but nothing yet to pay for"
    );
    // December: 100 kWh more in, 10 out: 90 net units, ₹360.00 charged as they are read.
    gw.ingest_readings(&[reading(ist(2026, 12, 31, 18, 0), 140_000, 110_000)])
        .unwrap();
    assert_eq!(gw.store().energy_charges("A1", None).unwrap(), 36_000);
    // January's first passes: the 60 banked kWh take ₹240.00 off December, once.
    let first = gw.policy_pass(ist(2027, 1, 1, 0, 1), true).unwrap();
    let second = gw.policy_pass(ist(2027, 1, 1, 0, 2), true).unwrap();
    assert_eq!((first.export_credits, second.export_credits), (1, 0));
    let credited = gw
        .store()
        .sum_of(
            "A1",
            EventKind::ExportCredit,
            ist(2026, 12, 1, 0, 0),
            ist(2027, 1, 2, 0, 0),
        )
        .unwrap();
    assert_eq!(credited, 24_000);
    assert_eq!(
        gw.store()
            .export_banked_before("A1", Month::parse("2027-01").unwrap())
            .unwrap(),
        0
    );
}

#[test]
fn a_household_over_its_sanctioned_load_repeatedly_is_flagged_once_a_month() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, meter, _link) = gateway(&dir, "[load]\nalert_after_intervals = 3\n");
    gw.store().set_sanctioned_load("A1", Some(2_000)).unwrap();
    // An evening: 600 Wh in a quarter-hour is 2.4 kW, over the 2 kW sanctioned.
    let start = ist(2026, 11, 20, 18, 0);
    let mut register = 5_000;
    let mut readings = vec![MeterReading {
        meter,
        at: start,
        register_wh: register,
        export_wh: 0,
    }];
    for (i, wh) in (1..).zip([600, 300, 600, 450, 700]) {
        register += wh;
        readings.push(MeterReading {
            meter,
            at: start + Duration::minutes(15 * i),
            register_wh: register,
            export_wh: 0,
        });
    }
    gw.ingest_readings(&readings[..3]).unwrap();
    // Two intervals over by the next morning: not yet repeated enough.
    let first = gw.policy_pass(ist(2026, 11, 21, 0, 1), true).unwrap();
    assert_eq!(first.overloads, 0);
    gw.ingest_readings(&readings[3..]).unwrap();
    let same_day = gw.policy_pass(ist(2026, 11, 21, 10, 0), true).unwrap();
    assert_eq!(same_day.overloads, 0, "checked once a day");
    let next_day = gw.policy_pass(ist(2026, 11, 22, 0, 1), true).unwrap();
    assert_eq!(next_day.overloads, 1);
    let again = gw.policy_pass(ist(2026, 11, 23, 0, 1), true).unwrap();
    assert_eq!(again.overloads, 0, "once a month");
    // The household is told once, as a kind and variables central renders in its language.
    assert_eq!(
        gw.store()
            .alert_count("A1", "sanctioned_load_exceeded")
            .unwrap(),
        1
    );
    let notices: Vec<(String, Vec<(String, String)>)> = gw
        .store()
        .priority_after(0, 10_000)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event {
            UplinkEvent::Notice { kind, vars, id, .. } if kind == "sanctioned_load_exceeded" => {
                Some((id, vars))
            }
            _ => None,
        })
        .collect();
    let expected_vars = [
        ("intervals", "3"),
        ("max_kw", "2.80"),
        ("month", "11-2026"),
        ("sanctioned_kw", "2.00"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    assert_eq!(
        notices,
        vec![("A1:overload:2026-11".to_string(), expected_vars.to_vec())]
    );
    let text = gramgrid_core::message::render(
        gramgrid_core::message::default_template(
            Kind::SanctionedLoadExceeded,
            gramgrid_core::message::Language::English,
        ),
        &notices[0].1.iter().cloned().collect(),
    )
    .unwrap();
    assert!(
        text.contains("above your sanctioned 2.00 kW in 3 quarter-hours (highest 2.80 kW)"),
        "{text}"
    );
    // A household whose load central records in the day is checked at once, not the next day.
    village(&mut gw, "V", 1);
    let v0 = gw.store().meter_id("MV0").unwrap().unwrap();
    let evening = [(0, 10_000), (15, 10_700), (30, 11_400), (45, 12_100)];
    gw.ingest_readings(&evening.map(|(minutes, register_wh)| MeterReading {
        meter: v0,
        at: start + Duration::minutes(minutes),
        register_wh,
        export_wh: 0,
    }))
    .unwrap();
    gw.store().set_sanctioned_load("V0", Some(2_000)).unwrap();
    let at_once = gw.policy_pass(ist(2026, 11, 23, 10, 0), true).unwrap();
    assert_eq!(at_once.overloads, 1);
    let flagged: Vec<(String, u32, i64, i64)> = gw
        .store()
        .priority_after(0, 10_000)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event {
            UplinkEvent::SanctionedLoadExceeded {
                account,
                intervals,
                max_demand_w,
                sanctioned_w,
                month,
                ..
            } if month == "2026-11" => Some((account, intervals, max_demand_w, sanctioned_w)),
            _ => None,
        })
        .collect();
    assert_eq!(
        flagged,
        vec![
            ("A1".to_string(), 3, 2_800, 2_000),
            ("V0".to_string(), 3, 2_800, 2_000)
        ]
    );
}

#[test]
fn an_unconfirmed_command_is_retried_then_times_out_with_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, meter, link) = gateway(
        &dir,
        "[relay]\nmax_attempts = 3\n[policy]\nfirst_disconnect = \"0s\"\n",
    );
    let mut now = ist(2026, 12, 1, 10, 0);
    gw.policy_pass(now, true).unwrap(); // balance 0 with no recharge: disconnect due
    for _ in 0..50 {
        now += Duration::minutes(1);
        gw.policy_pass(now, true).unwrap();
    }
    let sends = link.sends().len();
    assert_eq!(
        sends, 3,
        "sent at 0, +1 min and +3 min, then gave up; not reissued within the hour"
    );
    assert_eq!(gw.store().alert_count("A1", "relay_timeout").unwrap(), 1);
    // The policy re-issues the disconnect after the cool-down; it times out again, but the
    // consumer and the office are not told again the same day.
    for _ in 0..150 {
        now += Duration::minutes(1);
        gw.policy_pass(now, true).unwrap();
    }
    let timed_out = gw
        .store()
        .relay_commands_of(meter)
        .unwrap()
        .iter()
        .filter(|c| c.progress.state == CommandState::TimedOut)
        .count();
    assert!(timed_out >= 2, "{timed_out} commands timed out");
    assert_eq!(gw.store().alert_count("A1", "relay_timeout").unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_daemon_runs_a_pass_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = GatewayConfig::default();
    config.gateway.data_dir = dir.path().join("data");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(run(config.clone(), async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    stop.send(()).unwrap();
    daemon.await.unwrap().unwrap();
    assert!(config.database_path().exists());
}

#[test]
fn no_disconnect_on_a_clock_that_went_back_after_a_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, link) = gateway(&dir, "[policy]\nfirst_disconnect = \"0s\"\n");
    // The balance is exhausted (no recharge), and the gateway ran until Tuesday evening.
    gw.tick(ist(2026, 12, 1, 20, 0)).unwrap();
    // Power cut; the Pi boots at its last saved time, a day behind, in a disconnect window.
    let rebooted_at = ist(2026, 11, 30, 11, 0);
    assert!(!gw.clock_trusted(rebooted_at).unwrap());
    let report = gw.tick(rebooted_at).unwrap();
    assert_eq!((report.commands_queued, report.disconnects_held), (0, 1));
    assert!(link.sends().is_empty());
    // Once the clock is right again (NTP, or a sync measured it), the breaker still holds the
    // cut for a day, saying why; then it goes ahead.
    let report = gw.tick(ist(2026, 12, 2, 10, 30)).unwrap();
    assert_eq!(
        (report.commands_queued, report.disconnects_breaker_held),
        (0, 1)
    );
    assert!(gw.store().holds(1).unwrap()[0].reasons[0].contains("the clock went back"));
    let report = gw.tick(ist(2026, 12, 3, 10, 31)).unwrap();
    assert_eq!(report.commands_queued, 1);
}

#[test]
fn confirming_a_new_meters_first_connect_does_not_tell_the_consumer_supply_was_restored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _, _) = gateway(&dir, "");
    let created = ist(2026, 11, 1, 0, 0);
    gw.store()
        .upsert_account(&Account {
            id: "A2".into(),
            consumer_name: "Ramesh".into(),
            category: Category::Domestic,
            phone: None,
            created_at: created,
        })
        .unwrap();
    let meter = gw
        .store()
        .install_meter(&MeterInstall {
            serial: "M2".into(),
            account: "A2".into(),
            installed_at: created,
            initial_register_wh: Some(0),
        })
        .unwrap();
    gw.store()
        .record_event(&LedgerEvent {
            account: "A2".into(),
            ..recharge("r-a2", 50_000, created)
        })
        .unwrap();
    // The relay state is unknown until the meter reports: the policy makes sure it is connected.
    assert_eq!(gw.policy_pass(created, true).unwrap().commands_queued, 1);
    gw.on_relay_report(meter, RelayState::Connected, created + Duration::minutes(1))
        .unwrap();
    assert_eq!(gw.store().alert_count("A2", "reconnected").unwrap(), 0);
    assert_eq!(
        gw.store().relay_state(meter).unwrap(),
        RelayState::Connected
    );
}

#[test]
fn a_disconnect_unconfirmed_when_its_window_closes_is_withdrawn_not_resent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, meter, link) = gateway(&dir, "[policy]\nfirst_disconnect = \"0s\"\n");
    // Tuesday 13:59, the window's last minute: the balance is exhausted (no recharge).
    let decided = ist(2026, 12, 1, 13, 59);
    let report = gw.policy_pass(decided, true).unwrap();
    assert_eq!((report.commands_queued, report.commands_sent), (1, 1));
    let (id, action, not_after) = link.sends()[0].clone();
    assert_eq!(action, RelayAction::Disconnect);
    assert_eq!(not_after, Some(ist(2026, 12, 1, 14, 0)));
    // The meter never confirms; the retry policy would re-send at 14:00, 14:02, 14:06, ...
    let mut withdrawn = 0;
    for minute in 1..=180 {
        let report = gw
            .policy_pass(decided + Duration::minutes(minute), true)
            .unwrap();
        withdrawn += report.commands_withdrawn;
        assert_eq!(report.commands_sent, 0, "re-sent at +{minute} min");
    }
    assert_eq!(withdrawn, 1);
    assert_eq!(link.sends().len(), 1);
    assert_eq!(link.withdrawals(), vec![id.clone()]);
    let command = gw.store().latest_relay_command(meter).unwrap().unwrap();
    assert_eq!(command.progress.state, CommandState::Withdrawn);
    let (state, detail) = uploaded_states(&mut gw, &id).pop().unwrap();
    assert_eq!(state, "withdrawn");
    assert!(
        detail.contains("outside every disconnect window"),
        "{detail}"
    );
    assert_eq!(gw.store().alert_count("A1", "relay_timeout").unwrap(), 0);
    // The policy decides again in the next window: a withdrawn command blocks nothing.
    let report = gw.policy_pass(ist(2026, 12, 2, 10, 0), true).unwrap();
    assert_eq!((report.commands_queued, report.commands_sent), (1, 1));
}

#[test]
fn an_open_disconnect_outside_the_window_is_withdrawn_by_the_resend_check_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, meter, link) = gateway(&dir, "");
    // Queued and sent by an earlier pass; the policy's own decision is not consulted here.
    let sent_at = ist(2026, 12, 1, 13, 58);
    gw.store()
        .queue_relay_command("c1", meter, RelayAction::Disconnect, "test", sent_at, None)
        .unwrap();
    gw.store().mark_relay_sent("c1", sent_at).unwrap();
    let mut report = PassReport::default();
    gw.advance_relay_commands(ist(2026, 12, 1, 13, 59), true, &mut report)
        .unwrap();
    assert_eq!((report.commands_sent, report.commands_withdrawn), (1, 0));
    assert_eq!(link.sends()[0].2, Some(ist(2026, 12, 1, 14, 0)));
    gw.advance_relay_commands(ist(2026, 12, 1, 14, 1), true, &mut report)
        .unwrap();
    assert_eq!((report.commands_sent, report.commands_withdrawn), (1, 1));
    assert_eq!(link.withdrawals(), vec!["c1".to_string()]);
    // Inside a window but on an untrusted clock: withdrawn too.
    gw.store()
        .queue_relay_command("c2", meter, RelayAction::Disconnect, "test", sent_at, None)
        .unwrap();
    gw.advance_relay_commands(ist(2026, 12, 2, 11, 0), false, &mut report)
        .unwrap();
    assert_eq!((report.commands_sent, report.commands_withdrawn), (1, 2));
    let (_, detail) = uploaded_states(&mut gw, "c2").pop().unwrap();
    assert!(detail.contains("clock is not trusted"), "{detail}");
}

#[test]
fn a_recharge_while_a_disconnect_is_in_flight_withdraws_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, meter, link) = gateway(&dir, "[policy]\nfirst_disconnect = \"0s\"\n");
    let report = gw.policy_pass(ist(2026, 12, 1, 10, 0), true).unwrap();
    assert_eq!(report.commands_sent, 1);
    let id = link.sends()[0].0.clone();
    // The household pays before the meter has confirmed the cut.
    gw.store()
        .record_event(&recharge("r1", 50_000, ist(2026, 12, 1, 10, 5)))
        .unwrap();
    let report = gw.policy_pass(ist(2026, 12, 1, 10, 6), true).unwrap();
    assert_eq!(
        (report.commands_withdrawn, report.commands_queued),
        (1, 0),
        "the relay is still connected: nothing else to issue"
    );
    assert_eq!(link.withdrawals(), vec![id.clone()]);
    for minute in 7..=60 {
        gw.policy_pass(ist(2026, 12, 1, 10, 0) + Duration::minutes(minute), true)
            .unwrap();
    }
    assert_eq!(link.sends().len(), 1, "the disconnect is never re-sent");
    assert!(gw.store().open_relay_commands().unwrap().is_empty());
    let (state, detail) = uploaded_states(&mut gw, &id).pop().unwrap();
    assert_eq!(state, "withdrawn");
    assert!(
        detail.starts_with("no longer wanted: balance")
            && detail.ends_with("INR is above the disconnect threshold"),
        "{detail}"
    );
    assert_eq!(
        gw.store().latest_relay_command(meter).unwrap().unwrap().id,
        id
    );
}

#[test]
fn a_disconnect_still_wanted_inside_the_window_is_resent_with_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, meter, link) = gateway(&dir, "[policy]\nfirst_disconnect = \"0s\"\n");
    let start = ist(2026, 12, 1, 10, 0);
    let mut withdrawn = 0;
    for minute in 0..=10 {
        let report = gw
            .policy_pass(start + Duration::minutes(minute), true)
            .unwrap();
        withdrawn += report.commands_withdrawn;
    }
    let sends = link.sends();
    assert_eq!(
        sends.len(),
        4,
        "sent at 10:00, 10:01, 10:03 and 10:07: {sends:?}"
    );
    assert!(sends.iter().all(|(id, action, not_after)| id == &sends[0].0
        && *action == RelayAction::Disconnect
        && *not_after == Some(ist(2026, 12, 1, 14, 0))));
    assert_eq!(withdrawn, 0);
    assert!(link.withdrawals().is_empty());
    let command = gw.store().latest_relay_command(meter).unwrap().unwrap();
    assert_eq!(
        (command.progress.state, command.progress.attempts),
        (CommandState::Sent, 4)
    );
}

#[test]
fn a_technicians_disconnect_goes_out_at_any_hour_without_a_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, link) = gateway(&dir, "");
    gw.store()
        .record_event(&recharge("r1", 50_000, ist(2026, 12, 1, 9, 0)))
        .unwrap();
    let night = ist(2026, 12, 1, 22, 0);
    gw.store()
        .record_override(&OverrideRecord {
            id: "o1".into(),
            account: "A1".into(),
            action: RelayAction::Disconnect,
            until: night + Duration::hours(4),
            technician: "tech-7".into(),
            reason: "unsafe wiring".into(),
            created_at: night,
        })
        .unwrap();
    for minute in 0..=3 {
        let report = gw
            .policy_pass(night + Duration::minutes(minute), true)
            .unwrap();
        assert_eq!(report.commands_withdrawn, 0);
    }
    let sends = link.sends();
    assert_eq!(sends.len(), 3, "sent at 22:00, 22:01 and 22:03: {sends:?}");
    assert!(sends
        .iter()
        .all(|(_, action, not_after)| *action == RelayAction::Disconnect && not_after.is_none()));
}

/// A meter link that has no session keys for any meter yet.
struct LinkWithoutKeys;

impl RelayLink for LinkWithoutKeys {
    fn send(
        &mut self,
        _: i64,
        id: &str,
        _: RelayAction,
        _: Option<DateTime<Utc>>,
    ) -> Result<(), String> {
        panic!("command {id} handed to a radio that cannot address its meter")
    }
    fn withdraw(&mut self, _: i64, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn can_reach(&self, _meter: i64) -> bool {
        false
    }
}

#[test]
fn a_command_for_a_meter_the_radio_cannot_address_waits_queued_and_is_not_counted_as_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, meter, link) = gateway(&dir, "[policy]\nfirst_disconnect = \"0s\"\n");
    gw.set_relay_link(Box::new(LinkWithoutKeys));
    let decided = ist(2026, 12, 1, 11, 0);
    let report = gw.policy_pass(decided, true).unwrap();
    assert_eq!(report.commands_queued, 1);
    assert_eq!(report.commands_sent, 0);
    assert_eq!(report.commands_waiting_for_keys, 1);
    let command = gw.store().latest_relay_command(meter).unwrap().unwrap();
    assert_eq!(command.progress.state, CommandState::Queued);
    // Keys arrive (the link can address the meter): the next pass sends it, once.
    gw.set_relay_link(Box::new(link.clone()));
    let report = gw
        .policy_pass(decided + Duration::minutes(1), true)
        .unwrap();
    assert_eq!(
        (report.commands_sent, report.commands_waiting_for_keys),
        (1, 0)
    );
    assert_eq!(link.sends().len(), 1);
}

/// A village of `n` more accounts (`prefix`0..) beside A1, every one connected with nothing paid:
/// all at the threshold, so every one is due for a disconnect.
fn village(gw: &mut Gateway, prefix: &str, n: usize) {
    let created = ist(2026, 11, 1, 0, 0);
    for i in 0..n {
        let id = format!("{prefix}{i}");
        gw.store()
            .upsert_account(&Account {
                id: id.clone(),
                consumer_name: id.clone(),
                category: Category::Domestic,
                phone: None,
                created_at: created,
            })
            .unwrap();
        let meter = gw
            .store()
            .install_meter(&MeterInstall {
                serial: format!("M{id}"),
                account: id,
                installed_at: created,
                initial_register_wh: Some(0),
            })
            .unwrap();
        gw.on_relay_report(meter, RelayState::Connected, created)
            .unwrap();
    }
}

const NO_GRACE: &str = "[policy]\nfirst_disconnect = \"0s\"\n";

fn disconnect_sends(link: &RecordingLink) -> usize {
    link.sends()
        .iter()
        .filter(|s| s.1 == RelayAction::Disconnect)
        .count()
}

#[test]
fn a_mass_cut_is_held_until_a_supervisor_releases_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, link) = gateway(&dir, NO_GRACE);
    village(&mut gw, "B", 39); // 40 accounts: a day may lose max(3, 10 %) = 4
    let monday = ist(2026, 11, 30, 10, 0);
    let pass = gw.policy_pass(monday, true).unwrap();
    assert_eq!(pass.disconnects_breaker_held, 40);
    assert_eq!(pass.commands_queued, 0);
    assert_eq!(disconnect_sends(&link), 0, "no household goes dark");
    let holds = gw.store().holds(10).unwrap();
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].accounts.len(), 40);
    assert!(holds[0].reasons[0].contains("40 disconnections today would exceed the limit of 4"));
    // Central hears of it, with a decision record per held account.
    let uplinks = gw.store().priority_after(0, 10_000).unwrap();
    assert!(uplinks.iter().any(
        |r| matches!(&r.event, UplinkEvent::BreakerHeld { accounts, .. } if accounts.len() == 40)
    ));
    let held = gw.store().decisions("B7", None, 10).unwrap();
    assert_eq!(held.len(), 1);
    assert!(held[0].1.replays());
    assert_eq!(
        held[0].1.breaker.as_ref().map(|b| b.hold_id.as_str()),
        Some(holds[0].id.as_str())
    );

    // The next passes say nothing new: the open hold already holds them.
    gw.policy_pass(monday + Duration::minutes(1), true).unwrap();
    assert_eq!(gw.store().holds(10).unwrap().len(), 1);

    // Reconnections are never held: A1 pays and its (already cut) supply comes back.
    gw.on_relay_report(1, RelayState::Disconnected, monday + Duration::minutes(2))
        .unwrap();
    gw.store()
        .record_event(&recharge("r1", 50_000, monday + Duration::minutes(2)))
        .unwrap();
    gw.policy_pass(monday + Duration::minutes(3), true).unwrap();
    assert_eq!(link.sends().last().unwrap().1, RelayAction::Connect);

    // A supervisor releases the hold: its 39 remaining disconnections go, once.
    let release_at = monday + Duration::minutes(5);
    gw.store()
        .release_hold(
            &holds[0].id,
            "supervisor Verma",
            "checked the ledger",
            release_at,
        )
        .unwrap();
    let released = gw.policy_pass(release_at, true).unwrap();
    assert_eq!(released.commands_queued, 39);
    assert_eq!(disconnect_sends(&link), 39);
    assert!(matches!(
        gw.store()
            .release_hold(&holds[0].id, "someone", "again", release_at),
        Err(StoreError::HoldAlreadyReleased { .. })
    ));
    // The release was for that pass only: a new household due today is held again.
    village(&mut gw, "C", 1);
    let after = gw
        .policy_pass(release_at + Duration::minutes(1), true)
        .unwrap();
    assert_eq!(
        (after.commands_queued, after.disconnects_breaker_held),
        (0, 1)
    );
    assert_eq!(gw.store().holds(10).unwrap().len(), 2);
}

#[test]
fn a_few_cuts_go_ahead_and_each_is_recorded_with_the_facts_that_made_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, link) = gateway(&dir, NO_GRACE);
    // 1 of 40 accounts is due: well within the day's limit.
    for i in 0..39 {
        gw.store()
            .upsert_account(&Account {
                id: format!("P{i}"),
                consumer_name: "paid".into(),
                category: Category::Domestic,
                phone: None,
                created_at: ist(2026, 11, 1, 0, 0),
            })
            .unwrap();
    }
    let monday = ist(2026, 11, 30, 10, 0);
    let pass = gw.policy_pass(monday, true).unwrap();
    assert_eq!(
        (pass.commands_queued, pass.disconnects_breaker_held),
        (1, 0)
    );
    assert_eq!(disconnect_sends(&link), 1);
    let decisions = gw.store().decisions("A1", None, 10).unwrap();
    let (id, record) = &decisions[0];
    assert_eq!(
        id,
        &link.sends()[0].0,
        "the decision is stored under the command's id"
    );
    assert_eq!(record.outcome.relay, Some(RelayAction::Disconnect));
    assert_eq!(record.facts.balance_paise, 0);
    assert!(record.replays());
    assert!(
        record.rule().contains("at or below the threshold"),
        "{}",
        record.rule()
    );
    // `--at` finds the decision in force then; before it there was none.
    assert_eq!(
        gw.store().decisions("A1", Some(monday), 10).unwrap().len(),
        1
    );
    assert!(gw
        .store()
        .decisions("A1", Some(monday - Duration::seconds(1)), 10)
        .unwrap()
        .is_empty());
}

#[test]
fn a_protected_account_is_left_on_and_the_office_is_told_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, link) = gateway(&dir, NO_GRACE);
    gw.store()
        .set_protection("A1", Some("life support"))
        .unwrap();
    let monday = ist(2026, 11, 30, 10, 0);
    for minute in 0..3 {
        let pass = gw
            .policy_pass(monday + Duration::minutes(minute), true)
            .unwrap();
        assert_eq!(pass.commands_queued, 0);
    }
    assert_eq!(disconnect_sends(&link), 0);
    let decisions = gw.store().decisions("A1", None, 10).unwrap();
    assert_eq!(decisions.len(), 1, "one record per episode, not per pass");
    assert_eq!(decisions[0].1.outcome.hold, Some(policy::Hold::Protected));
    let told = gw
        .store()
        .priority_after(0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|r| matches!(&r.event, UplinkEvent::Decision { account, .. } if account == "A1"))
        .count();
    assert_eq!(told, 1);
}

#[test]
fn a_policy_change_holds_disconnections_for_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, link) = gateway(&dir, NO_GRACE);
    let policy = |version| gramgrid_proto::wire::DownlinkRecord {
        seq: version,
        event: gramgrid_proto::wire::DownlinkEvent::Policy {
            version,
            policy: (&GatewayConfig::parse(NO_GRACE).unwrap().policy).into(),
        },
    };
    let sunday = ist(2026, 11, 29, 12, 0);
    // A new gateway's first policy comes before its accounts: no change.
    let mut fresh = Store::open(&dir.path().join("fresh.db")).unwrap();
    fresh.apply_downlink(&[policy(1)], sunday).unwrap();
    assert_eq!(fresh.guard_marks().unwrap().policy_changed_at, None);
    // Here it replaces the config file's policy over an account: a change.
    gw.store().apply_downlink(&[policy(1)], sunday).unwrap();
    gw.refresh_published().unwrap();
    assert_eq!(
        gw.store().guard_marks().unwrap().policy_changed_at,
        Some(sunday)
    );
    gw.store().apply_downlink(&[policy(2)], sunday).unwrap();
    gw.refresh_published().unwrap();
    let monday = ist(2026, 11, 30, 10, 0);
    let pass = gw.policy_pass(monday, true).unwrap();
    assert_eq!(pass.disconnects_breaker_held, 1);
    assert!(gw.store().holds(1).unwrap()[0].reasons[0].contains("a new policy took effect"));
    // A day after the change the cut goes ahead.
    let tuesday = ist(2026, 12, 1, 12, 1);
    assert_eq!(gw.policy_pass(tuesday, true).unwrap().commands_queued, 1);
    assert_eq!(disconnect_sends(&link), 1);
}

#[test]
fn paying_half_the_debt_reconnects_and_the_rest_is_due_in_three_days() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[policy]\nfirst_disconnect = \"0s\"\n[[policy.partial_payment]]\neffective_from = \"2026-04-01\"\nmin_paid_percent = 50\ndays_to_pay_rest = 3\n";
    let (mut gw, meter, link) = gateway(&dir, toml);
    // 100 kWh at 3.70 INR: a debt of 370 INR.
    gw.ingest_readings(&[MeterReading {
        meter,
        at: ist(2026, 11, 30, 9, 0),
        register_wh: 100_000,
        export_wh: 0,
    }])
    .unwrap();
    let monday = ist(2026, 11, 30, 10, 0);
    gw.policy_pass(monday, true).unwrap();
    assert_eq!(disconnect_sends(&link), 1);
    gw.on_relay_report(
        meter,
        RelayState::Disconnected,
        monday + Duration::minutes(1),
    )
    .unwrap();
    gw.policy_pass(monday + Duration::minutes(2), true).unwrap();
    assert_eq!(
        gw.store().cut("A1").unwrap().map(|c| c.1),
        Some(37_000),
        "the debt at the cut"
    );
    // Half of it paid: supply back although the balance is still below zero.
    gw.store()
        .record_event(&recharge("r1", 18_500, monday + Duration::hours(1)))
        .unwrap();
    gw.policy_pass(monday + Duration::hours(1), true).unwrap();
    assert_eq!(link.sends().last().unwrap().1, RelayAction::Connect);
    let (_, record) = &gw.store().decisions("A1", None, 1).unwrap()[0];
    assert!(
        record.rule().contains("partial payment"),
        "{}",
        record.rule()
    );
    gw.on_relay_report(meter, RelayState::Connected, monday + Duration::hours(2))
        .unwrap();
    // Inside the three days no cut; after them, the rest unpaid, the usual rule cuts again.
    assert_eq!(
        gw.policy_pass(ist(2026, 12, 2, 11, 0), true)
            .unwrap()
            .commands_queued,
        0
    );
    assert_eq!(
        gw.policy_pass(ist(2026, 12, 3, 11, 0), true)
            .unwrap()
            .commands_queued,
        1
    );
    assert_eq!(link.sends().last().unwrap().1, RelayAction::Disconnect);
}

#[test]
fn arrears_take_their_share_of_each_recharge() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, _link) = gateway(&dir, "");
    let arrears = LedgerEvent {
        id: "arrears-A1".into(),
        account: "A1".into(),
        at: ist(2026, 11, 1, 0, 0),
        kind: EventKind::Arrears,
        amount_paise: 120_000,
        expires_at: None,
    };
    gw.store().record_event(&arrears).unwrap();
    gw.store()
        .record_event(&recharge("r1", 40_000, ist(2026, 11, 2, 9, 0)))
        .unwrap();
    let rules = gw.policy().arrears.clone();
    let position = gw.store().position("A1", &rules).unwrap();
    // 25 % of 400 INR to the arrears, 300 INR credit.
    assert_eq!(position.balance_paise, 30_000);
    assert_eq!(position.arrears.recovered_paise, 10_000);
    assert_eq!(position.arrears.outstanding_paise(), 110_000);
}

#[test]
fn a_release_the_next_pass_cannot_use_is_spent_all_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, link) = gateway(&dir, NO_GRACE);
    village(&mut gw, "B", 19);
    let monday = ist(2026, 11, 30, 10, 0);
    gw.policy_pass(monday, true).unwrap();
    let hold = gw.store().holds(1).unwrap().remove(0);
    // Released after the window closed: the next pass may not cut, and uses the release up.
    let late = ist(2026, 11, 30, 14, 30);
    gw.store()
        .release_hold(&hold.id, "supervisor", "checked", late)
        .unwrap();
    gw.policy_pass(late + Duration::minutes(1), true).unwrap();
    assert!(gw.store().holds(1).unwrap()[0].used_at.is_some());
    assert_eq!(gw.store().unused_release().unwrap(), None);
    // Tuesday's window: held again, as a new hold, until someone releases that one.
    let tuesday = gw.policy_pass(ist(2026, 12, 1, 10, 0), true).unwrap();
    assert_eq!(tuesday.disconnects_breaker_held, 20);
    assert_eq!(disconnect_sends(&link), 0);
    assert_eq!(gw.store().holds(10).unwrap().len(), 2);
}

#[test]
fn a_restored_database_a_clock_that_went_back_and_a_failed_check_each_hold_cuts() {
    let monday = ist(2026, 11, 30, 10, 0);
    let reason_of = |gw: &mut Gateway| gw.store().holds(1).unwrap()[0].reasons.join("; ");

    // Central found this database restored from a backup.
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, link) = gateway(&dir, NO_GRACE);
    let restored = gramgrid_proto::wire::DownlinkRecord {
        seq: 1,
        event: gramgrid_proto::wire::DownlinkEvent::DatabaseRestored { at: monday },
    };
    gw.store()
        .apply_downlink(&[restored], monday - Duration::hours(1))
        .unwrap();
    assert_eq!(gw.tick(monday).unwrap().disconnects_breaker_held, 1);
    assert!(reason_of(&mut gw).contains("restored or replaced"));
    assert_eq!(disconnect_sends(&link), 0);

    // The clock went back (a Pi booted at an old saved time) and came right again.
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, link) = gateway(&dir, NO_GRACE);
    gw.tick(ist(2026, 11, 30, 9, 0)).unwrap();
    gw.tick(ist(2026, 11, 29, 9, 0)).unwrap();
    assert_eq!(gw.tick(monday).unwrap().disconnects_breaker_held, 1);
    assert!(reason_of(&mut gw).contains("the clock went back"));
    assert_eq!(disconnect_sends(&link), 0);

    // The last ledger check failed; once one passes, the cut goes ahead.
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, link) = gateway(&dir, NO_GRACE);
    gw.store().note_ledger_check(false, monday).unwrap();
    assert_eq!(gw.tick(monday).unwrap().disconnects_breaker_held, 1);
    assert!(reason_of(&mut gw).contains("ledger check"));
    gw.store().note_ledger_check(true, monday).unwrap();
    gw.tick(monday + Duration::minutes(1)).unwrap();
    assert_eq!(disconnect_sends(&link), 1);
}

/// Puts a spare meter in the gateway's stock the way central does (a downlink record).
fn stock_spare(gw: &mut Gateway, serial: &str, dev_addr: u32, seq: u64) {
    let record = gramgrid_proto::wire::DownlinkRecord {
        seq,
        event: gramgrid_proto::wire::DownlinkEvent::StockMeter {
            serial: serial.into(),
            keys: gramgrid_proto::wire::MeterKeys {
                dev_addr,
                nwk_skey: "00112233445566778899aabbccddeeff".into(),
                app_skey: "ffeeddccbbaa99887766554433221100".into(),
            },
        },
    };
    gw.store().apply_downlink(&[record], Utc::now()).unwrap();
}

fn installed_by(
    technician: &str,
    action: &str,
    subject: &str,
    at: DateTime<Utc>,
) -> TechnicianAction {
    TechnicianAction {
        id: format!("tech-gw-{action}-{subject}"),
        technician: technician.into(),
        action: action.into(),
        subject: Some(subject.into()),
        detail: format!("{action} {subject}"),
        reason: None,
        at,
    }
}

#[test]
fn a_swapped_meter_bills_on_in_the_old_meters_slabs_and_central_hears_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, old, _) = gateway(&dir, "");
    stock_spare(&mut gw, "M2", 0x2601_0002, 1);
    assert_eq!(gw.store().stock_meters().unwrap()[0].serial, "M2");
    // 150 kWh on the old meter by the 15th, then the swap: 60 kWh more on the old meter's
    // register (read from its display) and 50 kWh on the new one by the 20th.
    let mid = ist(2026, 11, 15, 10, 0);
    gw.ingest_readings(&[MeterReading {
        meter: old,
        at: mid,
        register_wh: 150_000,
        export_wh: 0,
    }])
    .unwrap();
    let swap_at = ist(2026, 11, 16, 11, 0);
    let swap = MeterSwap {
        account: "A1".into(),
        serial: "M2".into(),
        first_register_wh: Some(7_000),
        final_register_wh: Some(210_000),
        at: swap_at,
    };
    let new = gw
        .install_spare(&swap, &installed_by("asha.v", "replace", "A1", swap_at))
        .unwrap();
    gw.ingest_readings(&[MeterReading {
        meter: new,
        at: ist(2026, 11, 20, 10, 0),
        register_wh: 57_000,
        export_wh: 0,
    }])
    .unwrap();
    // 260 kWh in the month, one household: 100 at 3.70, 100 at 3.90, 60 at 5.30 (plus duty),
    // exactly what one meter reading 260 kWh is charged; a fresh first slab for the new meter
    // would have charged 50 kWh at 3.70 instead of 5.30.
    let book = gw.tariff_book().clone();
    let one_meter = book
        .segment_at(Category::Domestic, swap_at)
        .unwrap()
        .cost(260_000)
        .total();
    assert_eq!(gw.store().energy_charges("A1", None).unwrap(), one_meter);
    assert!(gw.store().verify(&book).unwrap().is_empty());
    assert_eq!(
        gw.store().active_meter("A1").unwrap(),
        Some((new, "M2".into()))
    );
    assert!(gw.store().stock_meters().unwrap().is_empty());
    // The old meter's readings after the swap are refused; central hears of the swap once.
    let late = gw
        .ingest_readings(&[MeterReading {
            meter: old,
            at: ist(2026, 11, 17, 0, 0),
            register_wh: 211_000,
            export_wh: 0,
        }])
        .unwrap();
    assert_eq!(late.refused, 1);
    let installed: Vec<_> = gw
        .store()
        .priority_after(0, 100)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event {
            UplinkEvent::MeterInstalled {
                serial,
                replaces,
                first_register_wh,
                ..
            } => Some((serial, replaces, first_register_wh)),
            _ => None,
        })
        .collect();
    assert_eq!(
        installed,
        vec![("M2".to_string(), Some("M1".to_string()), Some(7_000))]
    );
}

#[test]
fn a_swap_is_refused_with_a_reason_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, old, _) = gateway(&dir, "");
    stock_spare(&mut gw, "M2", 0x2601_0002, 1);
    let at = ist(2026, 11, 16, 11, 0);
    gw.ingest_readings(&[MeterReading {
        meter: old,
        at: ist(2026, 11, 15, 0, 0),
        register_wh: 90_000,
        export_wh: 0,
    }])
    .unwrap();
    let swap = |serial: &str, final_register_wh| MeterSwap {
        account: "A1".into(),
        serial: serial.into(),
        first_register_wh: Some(0),
        final_register_wh,
        at,
    };
    let refusals = [
        (swap("M9", Some(95_000)), "not in this gateway's stock"),
        (
            swap("M2", Some(80_000)),
            "below its last reading (90000 Wh)",
        ),
        (swap("M2", None), "already has meter M1 in service"),
    ];
    for (swap, why) in refusals {
        let error = gw
            .install_spare(&swap, &installed_by("asha.v", "replace", &swap.serial, at))
            .unwrap_err();
        assert!(error.to_string().contains(why), "{error}");
    }
    assert_eq!(
        gw.store().active_meter("A1").unwrap(),
        Some((old, "M1".into()))
    );
    assert_eq!(gw.store().stock_meters().unwrap().len(), 1);
    assert_eq!(gw.store().last_reading(old).unwrap().unwrap().1, 90_000);
}

/// Power fail and restore events of `meters`, the n-th a second after the one before.
fn power_events(
    gw: &mut Gateway,
    meters: &[i64],
    failed: DateTime<Utc>,
    restored: Option<DateTime<Utc>>,
    heard: DateTime<Utc>,
) {
    use gramgrid_proto::payload::{EventKind as MeterEventKind, MeterEvent};
    for (n, meter) in (0..).zip(meters) {
        let mut events = vec![MeterEvent {
            kind: MeterEventKind::PowerFail,
            at: failed + Duration::seconds(n),
        }];
        events.extend(restored.map(|at| MeterEvent {
            kind: MeterEventKind::PowerRestore,
            at: at + Duration::seconds(n),
        }));
        // Reported twice (a meter may repeat its log): stored once.
        for _ in 0..2 {
            gw.on_meter_events(*meter, &events, heard).unwrap();
        }
    }
}

/// A1 and a village of five with credit, behind `link`, with ten hours' grace and a window every
/// minute; A1's balance crossed the threshold at 10:30 on 30 November (grace to 20:30). Returns
/// the gateway and the meters of A1 and three neighbours.
fn village_with_a_ten_hour_grace(
    dir: &tempfile::TempDir,
    link: Box<dyn RelayLink + Send>,
) -> (Gateway, Vec<i64>) {
    let config = "[policy]\nfirst_disconnect = \"10h\"\ndisconnect_windows = [\"0 * * * * *\"]\n";
    let (mut gw, meter, _) = gateway(dir, config);
    gw.set_relay_link(link);
    village(&mut gw, "V", 5);
    for i in 0..5 {
        gw.store()
            .record_event(&LedgerEvent {
                account: format!("V{i}"),
                ..recharge(&format!("rv{i}"), 50_000, ist(2026, 11, 1, 9, 0))
            })
            .unwrap();
    }
    gw.store()
        .record_event(&recharge("r1", 37_000, ist(2026, 11, 1, 9, 0)))
        .unwrap();
    gw.ingest_readings(&[MeterReading {
        meter,
        at: ist(2026, 11, 30, 10, 15),
        register_wh: 100_000,
        export_wh: 0,
    }])
    .unwrap();
    gw.policy_pass(ist(2026, 11, 30, 10, 30), true).unwrap();
    let mut meters = vec![meter];
    meters.extend((0..3).map(|i| gw.store().meter_id(&format!("MV{i}")).unwrap().unwrap()));
    (gw, meters)
}

#[test]
fn a_feeder_outage_holds_the_cut_while_it_lasts_and_its_hours_move_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let link = RecordingLink::default();
    let (mut gw, dark) = village_with_a_ten_hour_grace(&dir, Box::new(link.clone()));

    // The feeder is out from 18:00 to 22:00: A1 and three neighbours report it afterwards.
    power_events(
        &mut gw,
        &dark,
        ist(2026, 11, 30, 18, 0),
        Some(ist(2026, 11, 30, 22, 0)),
        ist(2026, 11, 30, 22, 5),
    );
    let outages = gw.store().outages_since(ist(2026, 11, 30, 0, 0)).unwrap();
    assert_eq!(outages.len(), 1, "{outages:?}");
    let outage = &outages[0];
    assert_eq!(
        outage.id,
        format!("outage-gateway-1-{}", ist(2026, 11, 30, 18, 0).timestamp())
    );
    assert_eq!(outage.meters, ["M1", "MV0", "MV1", "MV2"]);
    // Restorations 22:00:00 to 22:00:03: the lower median of four is the second.
    assert_eq!(
        outage.ended_at,
        Some(ist(2026, 11, 30, 22, 0) + Duration::seconds(1))
    );
    // Four hours without supply moved the grace from 20:30 to 00:31 (the median restoration).
    let before = gw.policy_pass(ist(2026, 11, 30, 23, 0), true).unwrap();
    assert_eq!((before.commands_queued, disconnect_sends(&link)), (0, 0));

    // Every event went to central once; the outage, refined by each meter's report, went once
    // (at the pass) in its latest state.
    let uplinked: Vec<UplinkEvent> = gw
        .store()
        .priority_after(0, 10_000)
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    let meter_events = uplinked
        .iter()
        .filter(|e| matches!(e, UplinkEvent::MeterEvent { .. }))
        .count();
    assert_eq!(meter_events, 8, "each event once");
    let outage_records: Vec<(usize, Option<DateTime<Utc>>)> = uplinked
        .iter()
        .filter_map(|e| match e {
            UplinkEvent::SupplyOutage {
                meters, ended_at, ..
            } => Some((meters.len(), *ended_at)),
            _ => None,
        })
        .collect();
    assert_eq!(outage_records, vec![(4, outage.ended_at)]);
    assert_eq!(before.outages_sent, 1);

    // Another outage from 00:10, reported by the meters' last gasp: nothing is cut while it lasts.
    power_events(
        &mut gw,
        &dark,
        ist(2026, 12, 1, 0, 10),
        None,
        ist(2026, 12, 1, 0, 11),
    );
    let dark_pass = gw.policy_pass(ist(2026, 12, 1, 0, 35), true).unwrap();
    assert_eq!(disconnect_sends(&link), 0, "no disconnect to a dark meter");
    assert_eq!(dark_pass.disconnects_held, 1);

    // Power back at 00:40: thirty more minutes of grace, to 01:01.
    power_events(
        &mut gw,
        &dark,
        ist(2026, 12, 1, 0, 10),
        Some(ist(2026, 12, 1, 0, 40)),
        ist(2026, 12, 1, 0, 41),
    );
    gw.policy_pass(ist(2026, 12, 1, 0, 45), true).unwrap();
    assert_eq!(disconnect_sends(&link), 0);
    gw.policy_pass(ist(2026, 12, 1, 1, 2), true).unwrap();
    assert_eq!(disconnect_sends(&link), 1);
}

/// A meter link whose meters stop answering when the test says (and records what it is told).
#[derive(Clone, Default)]
struct SilentLink {
    told: RecordingLink,
    silent: Arc<Mutex<HashMap<i64, DateTime<Utc>>>>,
}

impl RelayLink for SilentLink {
    fn send(
        &mut self,
        meter: i64,
        command_id: &str,
        action: RelayAction,
        not_after: Option<DateTime<Utc>>,
    ) -> Result<(), String> {
        self.told.send(meter, command_id, action, not_after)
    }

    fn withdraw(&mut self, meter: i64, command_id: &str) -> Result<(), String> {
        self.told.withdraw(meter, command_id)
    }

    fn silent_since(&self) -> HashMap<i64, DateTime<Utc>> {
        self.silent.lock().unwrap().clone()
    }
}

#[test]
fn an_outage_seen_only_in_the_meters_silence_is_recorded_and_moves_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let link = SilentLink::default();
    let (mut gw, dark) = village_with_a_ten_hour_grace(&dir, Box::new(link.clone()));

    // From 18:00 A1 and three neighbours miss their turns; they report no power events at all.
    let off = ist(2026, 11, 30, 18, 0);
    *link.silent.lock().unwrap() = dark.iter().map(|m| (*m, off)).collect();
    let held = gw.policy_pass(ist(2026, 11, 30, 21, 0), true).unwrap();
    assert_eq!(held.disconnects_held, 1, "{held:?}");

    // They answer again; the pass at 22:00 records the outage up to then.
    link.silent.lock().unwrap().clear();
    gw.policy_pass(ist(2026, 11, 30, 22, 0), true).unwrap();
    let outages = gw.store().outages_since(off - Duration::hours(1)).unwrap();
    assert_eq!(outages.len(), 1, "{outages:?}");
    assert_eq!(outages[0].started_at, off);
    assert_eq!(outages[0].ended_at, Some(ist(2026, 11, 30, 22, 0)));
    assert_eq!(outages[0].meters, ["M1", "MV0", "MV1", "MV2"]);
    let uplinked = gw.store().priority_after(0, 10_000).unwrap();
    assert!(uplinked
        .iter()
        .any(|r| matches!(&r.event, UplinkEvent::SupplyOutage { id, .. } if *id == outages[0].id)));

    // Four dark hours moved the grace from 20:30 to 00:30.
    gw.policy_pass(ist(2026, 12, 1, 0, 20), true).unwrap();
    assert_eq!(disconnect_sends(&link.told), 0);
    gw.policy_pass(ist(2026, 12, 1, 0, 31), true).unwrap();
    assert_eq!(disconnect_sends(&link.told), 1);
    // The meters' power events arrive later: the same outage, refined, under its first id.
    power_events(
        &mut gw,
        &dark,
        off,
        Some(ist(2026, 11, 30, 21, 50)),
        ist(2026, 12, 1, 1, 0),
    );
    let outages = gw.store().outages_since(off - Duration::hours(1)).unwrap();
    assert_eq!(outages.len(), 1, "{outages:?}");
    assert_eq!(
        outages[0].ended_at,
        Some(ist(2026, 11, 30, 21, 50) + Duration::seconds(1))
    );
}

/// What household meter `index` uses in interval `k` of a day: a base and a wobble, 100 to 200 Wh.
fn household_wh(index: usize, k: usize) -> i64 {
    100 + ((k * 7 + index * 13) % 11) as i64 * 10
}

#[test]
fn the_transformer_audit_flags_the_day_a_meter_is_bypassed_and_points_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[audit]\ntechnical_loss_percent = 4.5\nflag_above_percent = 0.5\n";
    let (mut gw, m1, _link) = gateway(&dir, config);
    village(&mut gw, "V", 3);
    let mut meters = vec![m1];
    for i in 0..3 {
        meters.push(gw.store().meter_id(&format!("MV{i}")).unwrap().unwrap());
    }
    let keys = gramgrid_proto::frame::SessionKeys {
        dev_addr: gramgrid_proto::frame::DevAddr(0x2601_0100),
        nwk_skey: gramgrid_proto::frame::SessionKey::new([7; 16]),
        app_skey: gramgrid_proto::frame::SessionKey::new([9; 16]),
    };
    let day1 = ist(2026, 11, 20, 0, 0);
    gw.store()
        .install_transformer_meter("DT-1", day1, &keys)
        .unwrap();
    let dt = gw.store().meter_id("DT-1").unwrap().unwrap();
    // Two days of quarter-hours. On the second, MV0 (index 1) is bypassed from 18:00: its meter
    // records nothing while the transformer still delivers its load; the lines lose 4 %.
    let mut registers = vec![0i64; meters.len()];
    let mut dt_register = 1_000_000;
    let mut readings = Vec::new();
    for k in 0..=192 {
        let at = day1 + Duration::minutes(15 * k as i64);
        for (index, meter) in meters.iter().enumerate() {
            readings.push(MeterReading {
                meter: *meter,
                at,
                register_wh: registers[index],
                export_wh: 0,
            });
        }
        readings.push(MeterReading {
            meter: dt,
            at,
            register_wh: dt_register,
            export_wh: 0,
        });
        let delivered: i64 = (0..meters.len()).map(|i| household_wh(i, k % 96)).sum();
        dt_register += delivered * 104 / 100;
        for (index, register) in registers.iter_mut().enumerate() {
            let bypassed = index == 1 && k >= 96 + 72;
            if !bypassed {
                *register += household_wh(index, k % 96);
            }
        }
    }
    // M1's readings from 10:00 to 16:00 on the first day arrive late: six hours is too long a
    // gap to spread, so the first audit compares 72 intervals, and the day is audited again once
    // they are in.
    let (late, on_time): (Vec<MeterReading>, Vec<MeterReading>) =
        readings.into_iter().partition(|r| {
            let k = (r.at - day1).num_minutes() / 15;
            r.meter == m1 && (41..64).contains(&k)
        });
    let report = gw.ingest_readings(&on_time).unwrap();
    assert_eq!(report.refused, 0);
    // The supply failed from 12:00 to 13:00 on the first day: those intervals are nobody's loss,
    // whatever the registers did across them.
    let mut everyone = meters.clone();
    everyone.push(dt);
    power_events(
        &mut gw,
        &everyone,
        day1 + Duration::hours(12),
        Some(day1 + Duration::hours(13)),
        day1 + Duration::hours(13),
    );
    let day2 = day1 + Duration::days(1);
    gw.on_meter_events(
        meters[3],
        &[gramgrid_proto::payload::MeterEvent {
            kind: gramgrid_proto::payload::EventKind::Tamper(
                gramgrid_proto::payload::Tamper::Magnet,
            ),
            at: day2 + Duration::hours(9),
        }],
        day2 + Duration::hours(10),
    )
    .unwrap();
    // A day is audited two hours after it ends, once.
    assert_eq!(
        gw.policy_pass(day2 + Duration::minutes(90), true)
            .unwrap()
            .energy_audits,
        0
    );
    assert_eq!(
        gw.policy_pass(day2 + Duration::hours(3), true)
            .unwrap()
            .energy_audits,
        1
    );
    assert_eq!(
        gw.policy_pass(day2 + Duration::hours(27), true)
            .unwrap()
            .energy_audits,
        1
    );
    gw.ingest_readings(&late).unwrap();
    for (hours, audited) in [(28, 1), (29, 0)] {
        let pass = gw.policy_pass(day2 + Duration::hours(hours), true).unwrap();
        assert_eq!(pass.energy_audits, audited, "at +{hours} h");
    }
    let audits: Vec<EnergyAuditDay> = gw
        .store()
        .priority_after(0, 10_000)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event {
            UplinkEvent::EnergyAudit(audit) => Some(audit),
            _ => None,
        })
        .collect();
    assert_eq!(audits.len(), 3);
    assert_eq!(audits[0].id, audits[2].id);
    assert_eq!(audits[0].intervals_compared, 72);
    let (calm, flagged) = (&audits[2], &audits[1]);
    assert_eq!(calm.id, "gateway-1:audit:DT-1:2026-11-20");
    // The outage ends when most meters had power back, a few seconds after 13:00: the interval
    // from 13:00 is left out too.
    assert_eq!((calm.intervals_compared, calm.meters), (91, 4));
    assert!(calm.interval_loss_wh[48..53].iter().all(Option::is_none));
    let recorded: i64 = (0..96)
        .filter(|k| !(48..53).contains(k))
        .flat_map(|k| (0..4).map(move |i| household_wh(i, k)))
        .sum();
    assert_eq!(calm.consumers_wh, recorded);
    assert!(calm.transformer_wh > recorded && !calm.flagged, "{calm:?}");
    assert!(calm.suspects.is_empty());
    assert!(flagged.flagged, "{flagged:?}");
    let listed: Vec<&str> = flagged.suspects.iter().map(|s| s.meter.as_str()).collect();
    assert_eq!(listed, vec!["MV0", "MV2"], "{:?}", flagged.suspects);
    assert!(matches!(
        flagged.suspects[0].reasons[..],
        [AuditReason::FallsWithLoss { recorded_wh: 0, usual_wh }] if usual_wh > 0
    ));
    assert_eq!(
        flagged.suspects[1].reasons,
        vec![AuditReason::Tamper {
            kinds: vec!["tamper_magnet".into()]
        }]
    );
    // The transformer meter is nobody's: not billed, not an account, its readings stay here.
    assert_eq!(gw.store().accounts().unwrap().len(), 4);
    let uploaded = gw.store().readings_after(0, 100_000).unwrap().unwrap();
    assert!(uploaded.blocks.iter().all(|b| b.meter != "DT-1"));
    assert!(gw
        .store()
        .verify(&TariffBook::builtin())
        .unwrap()
        .is_empty());
    assert_eq!(gw.store().energy_audits(10).unwrap()[0], *flagged);
}

#[test]
fn a_manifest_loaded_at_the_gateway_installs_its_transformer_meter_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _m1, _link) = gateway(&dir, "");
    let entry = |serial: &str, dev_addr: &str, role: &str| {
        format!(
            "[[meter]]\nserial = \"{serial}\"\ndev_addr = \"{dev_addr}\"\nnwk_skey = \"{}\"\napp_skey = \"{}\"\nrole = \"{role}\"\n",
            "11".repeat(16),
            "22".repeat(16)
        )
    };
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(
        &manifest,
        format!(
            "version = 1\n{}{}",
            entry("M1", "26010001", "consumer"),
            entry("DT-1", "26010100", "dt")
        ),
    )
    .unwrap();
    for _ in 0..2 {
        let provisioned = crate::daemon::provision_from_manifest(gw.store(), &manifest).unwrap();
        assert_eq!(provisioned, 2);
    }
    let transformers = gw.store().transformer_meters().unwrap();
    assert_eq!(transformers.len(), 1);
    assert_eq!(transformers[0].serial, "DT-1");
    // The radio polls it like any meter; it is nobody's account.
    let sessions = gw.store().link_sessions().unwrap();
    assert!(sessions.iter().any(|s| s.serial == "DT-1"));
    assert_eq!(gw.store().accounts().unwrap().len(), 1);
}

const LOAD_TRIP: &str = "[load]\ntrip_after_intervals = 3\ntrip_minutes = 30\n";

/// Readings of `meter` every quarter-hour from `start`: `wh` in each, from `register` on.
fn draw(gw: &mut Gateway, meter: i64, start: DateTime<Utc>, register: i64, wh: &[i64]) -> i64 {
    let mut register = register;
    let mut readings = vec![MeterReading {
        export_wh: 0,
        meter,
        at: start,
        register_wh: register,
    }];
    for (i, wh) in (1..).zip(wh) {
        register += wh;
        readings.push(MeterReading {
            export_wh: 0,
            meter,
            at: start + Duration::minutes(15 * i),
            register_wh: register,
        });
    }
    gw.ingest_readings(&readings).unwrap();
    register
}

#[test]
fn a_load_trip_cuts_for_the_lockout_a_recharge_does_not_end_it_and_its_end_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, meter, link) = gateway(&dir, LOAD_TRIP);
    gw.store()
        .record_event(&recharge("r1", 100_000, ist(2026, 11, 1, 9, 0)))
        .unwrap();
    gw.store().set_sanctioned_load("A1", Some(2_000)).unwrap();
    // Monday morning: 600 Wh a quarter-hour is 2.4 kW. Two intervals over are not enough.
    let start = ist(2026, 11, 30, 10, 0);
    let register = draw(&mut gw, meter, start, 1_000, &[600, 600]);
    let two = gw.policy_pass(ist(2026, 11, 30, 10, 31), true).unwrap();
    assert_eq!(two.commands_queued, 0);
    let register = draw(&mut gw, meter, ist(2026, 11, 30, 10, 30), register, &[650]);
    let tripped_at = ist(2026, 11, 30, 10, 46);
    let trip = gw.policy_pass(tripped_at, true).unwrap();
    assert_eq!((trip.commands_queued, trip.commands_sent), (1, 1));
    let (id, action, not_after) = link.sends()[0].clone();
    assert_eq!(action, RelayAction::Disconnect);
    assert!(id.contains(":trip:"), "{id}");
    // Sent like any disconnect: with the end of the window as its deadline.
    assert_eq!(not_after, Some(ist(2026, 11, 30, 14, 0)));
    // Audited: the decision says it was the load, and replays.
    let (_, record) = gw.store().decisions("A1", None, 1).unwrap().remove(0);
    assert!(record.replays());
    assert_eq!(
        record.outcome.load_trip,
        Some(tripped_at + Duration::minutes(30))
    );
    assert!(
        record
            .rule()
            .contains("load-limit trip: 3 consecutive intervals"),
        "{}",
        record.rule()
    );
    assert!(uploaded_states(&mut gw, &id)[0]
        .1
        .starts_with("load-limit trip: above the sanctioned 2.00 kW"));

    // The meter confirms: the household hears of the load and the hour, not of its balance.
    gw.on_relay_report(
        meter,
        RelayState::Disconnected,
        tripped_at + Duration::minutes(1),
    )
    .unwrap();
    assert_eq!(gw.store().alert_count("A1", "load_limit_trip").unwrap(), 1);
    assert_eq!(gw.store().alert_count("A1", "disconnected").unwrap(), 0);
    let notice = gw
        .store()
        .unsent_alerts()
        .unwrap()
        .into_iter()
        .find(|a| a.kind == "load_limit_trip")
        .unwrap();
    assert_eq!(notice.vars.get("until").map(String::as_str), Some("11:16"));
    assert_eq!(
        notice.vars.get("sanctioned_kw").map(String::as_str),
        Some("2.00")
    );

    // A recharge in the lockout does not end it; nothing is re-sent while it lasts.
    gw.store()
        .record_event(&recharge("r2", 50_000, ist(2026, 11, 30, 10, 50)))
        .unwrap();
    draw(
        &mut gw,
        meter,
        ist(2026, 11, 30, 10, 45),
        register,
        &[100, 0],
    );
    for minute in [51, 60, 75] {
        let pass = gw
            .policy_pass(tripped_at + Duration::minutes(minute - 46), true)
            .unwrap();
        assert_eq!(pass.commands_queued, 0, "minute {minute}");
    }
    assert_eq!(
        gw.policy_pass(ist(2026, 11, 30, 11, 15), true)
            .unwrap()
            .commands_queued,
        0
    );
    // Exactly at the end of the lockout the supply comes back.
    let end = gw.policy_pass(ist(2026, 11, 30, 11, 16), true).unwrap();
    assert_eq!(end.commands_queued, 1);
    let (connect, action, _) = link.sends().last().unwrap().clone();
    assert_eq!(action, RelayAction::Connect);
    assert!(uploaded_states(&mut gw, &connect)[0]
        .1
        .starts_with("the load-limit lockout is over"));
    let (_, record) = gw.store().decisions("A1", None, 1).unwrap().remove(0);
    assert!(record.replays());
    assert!(
        record.rule().contains("load-limit lockout ended"),
        "{}",
        record.rule()
    );
    gw.on_relay_report(meter, RelayState::Connected, ist(2026, 11, 30, 11, 17))
        .unwrap();
    assert_eq!(gw.store().alert_count("A1", "reconnected").unwrap(), 1);
    // The run that caused the trip trips nothing again.
    assert_eq!(
        gw.policy_pass(ist(2026, 11, 30, 11, 20), true)
            .unwrap()
            .commands_queued,
        0
    );
}

#[test]
fn a_load_trip_waits_for_a_window_never_happens_with_the_setting_off_and_an_empty_balance_keeps_it_off(
) {
    let dir = tempfile::tempdir().unwrap();
    // The setting off (the default): a household far over its load is never tripped.
    let (mut off, off_meter, off_link) = gateway(&dir, "");
    off.store()
        .record_event(&recharge("r1", 100_000, ist(2026, 11, 1, 9, 0)))
        .unwrap();
    off.store().set_sanctioned_load("A1", Some(1_000)).unwrap();
    draw(&mut off, off_meter, ist(2026, 11, 30, 10, 0), 0, &[900; 8]);
    assert_eq!(
        off.policy_pass(ist(2026, 11, 30, 12, 1), true)
            .unwrap()
            .commands_queued,
        0
    );
    assert!(off_link.sends().is_empty());

    let dir = tempfile::tempdir().unwrap();
    let (mut gw, meter, link) = gateway(&dir, LOAD_TRIP);
    gw.store()
        .record_event(&recharge("r1", 100_000, ist(2026, 11, 1, 9, 0)))
        .unwrap();
    gw.store().set_sanctioned_load("A1", Some(2_000)).unwrap();
    // Sunday: outside every window. Held, and an hour later the run is stale: no trip at all.
    let register = draw(&mut gw, meter, ist(2026, 11, 29, 10, 0), 0, &[700; 4]);
    let sunday = gw.policy_pass(ist(2026, 11, 29, 11, 1), true).unwrap();
    assert_eq!((sunday.commands_queued, sunday.disconnects_held), (0, 1));
    assert_eq!(
        gw.policy_pass(ist(2026, 11, 29, 12, 5), true)
            .unwrap()
            .disconnects_held,
        0
    );
    // Nor on a clock the gateway does not trust.
    let register = draw(
        &mut gw,
        meter,
        ist(2026, 11, 30, 10, 0),
        register,
        &[700; 4],
    );
    assert_eq!(
        gw.policy_pass(ist(2026, 11, 30, 11, 1), false)
            .unwrap()
            .commands_queued,
        0
    );
    // Monday in the window: tripped.
    let tripped_at = ist(2026, 11, 30, 11, 2);
    assert_eq!(gw.policy_pass(tripped_at, true).unwrap().commands_queued, 1);
    gw.on_relay_report(meter, RelayState::Disconnected, tripped_at)
        .unwrap();
    // The balance runs out in the lockout (a correction from the office): after the lockout the
    // balance rules keep the supply off.
    gw.store()
        .record_event(&LedgerEvent {
            id: "adj1".into(),
            account: "A1".into(),
            at: ist(2026, 11, 30, 11, 10),
            kind: EventKind::Adjustment,
            amount_paise: -200_000,
            expires_at: None,
        })
        .unwrap();
    draw(
        &mut gw,
        meter,
        ist(2026, 11, 30, 11, 0),
        register + 2_800,
        &[0, 0],
    );
    let after = gw
        .policy_pass(tripped_at + Duration::minutes(30), true)
        .unwrap();
    assert_eq!(after.commands_queued, 0);
    assert_eq!(link.sends().last().unwrap().1, RelayAction::Disconnect);
    assert!(gw.store().below_threshold_since("A1").unwrap().is_some());
}

#[test]
fn load_trips_of_many_households_at_once_are_held_by_the_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, link) = gateway(&dir, LOAD_TRIP);
    village(&mut gw, "T", 19); // 20 accounts: a day may lose max(3, 10 %) = 3
    let start = ist(2026, 11, 30, 10, 0);
    let accounts: Vec<String> = std::iter::once("A1".to_string())
        .chain((0..19).map(|i| format!("T{i}")))
        .collect();
    for (i, account) in accounts.iter().enumerate() {
        gw.store()
            .record_event(&LedgerEvent {
                account: account.clone(),
                ..recharge(&format!("r-{account}"), 100_000, ist(2026, 11, 1, 9, 0))
            })
            .unwrap();
        gw.store()
            .set_sanctioned_load(account, Some(2_000))
            .unwrap();
        let meter = i64::try_from(i).unwrap() + 1;
        draw(&mut gw, meter, start, 0, &[700; 4]);
    }
    let pass = gw.policy_pass(ist(2026, 11, 30, 11, 1), true).unwrap();
    assert_eq!(
        (pass.commands_queued, pass.disconnects_breaker_held),
        (0, 20)
    );
    assert_eq!(disconnect_sends(&link), 0);
    let holds = gw.store().holds(10).unwrap();
    assert_eq!(holds[0].accounts.len(), 20);
    let held = gw.store().decisions("T3", None, 1).unwrap().remove(0).1;
    assert!(held.breaker.is_some() && held.outcome.load_trip.is_some() && held.replays());
}

/// A tariff whose duty is NaN (found by fuzzing the sync response) was stored as JSON `null` and
/// stopped the gateway from opening ever after. Now it is refused alone: the book in force stays,
/// the records after it apply, central is told, and the gateway reopens.
#[test]
fn a_published_tariff_that_cannot_be_kept_is_refused_alone_and_the_gateway_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, _link) = gateway(&dir, "");
    let book_before = gw.tariff_book().clone();
    let mut version = WireTariffVersion::from(&book_before.versions()[0].clone());
    version.duty_percent = f64::NAN;
    let applied = gw
        .store()
        .apply_downlink(
            &[
                DownlinkRecord {
                    seq: 1,
                    event: DownlinkEvent::Tariff(version),
                },
                DownlinkRecord {
                    seq: 2,
                    event: DownlinkEvent::Ledger(
                        recharge("r-after", 5_000, ist(2026, 11, 30, 9, 0)).into(),
                    ),
                },
            ],
            ist(2026, 11, 30, 9, 0),
        )
        .unwrap();
    assert_eq!(applied, 2);
    gw.refresh_published().unwrap();
    assert_eq!(gw.tariff_book(), &book_before);
    assert_eq!(gw.store().position("A1", &[]).unwrap().balance_paise, 5_000);
    let refused: Vec<String> = gw
        .store()
        .priority_after(0, 100)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event {
            UplinkEvent::Anomaly { kind, detail, .. } if kind == "published_refused" => {
                Some(detail)
            }
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("tariff"), "{}", refused[0]);
    let mut config = GatewayConfig::parse("").unwrap();
    config.gateway.data_dir = dir.path().join("data");
    drop(gw);
    Gateway::open(config).unwrap();
}
