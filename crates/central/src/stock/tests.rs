//! Spares go to their gateway's stock once; an installation the gateway reports puts the spare on
//! the account with the stock's keys, bills a replacement in the old meter's slabs exactly as the
//! gateway does, is applied once, and is refused (and flagged) when it does not match the stock.
use super::*;
use crate::downlink::ensure_gateway;
use crate::testing::{central, priority_upload, TestCentral};
use chrono::TimeZone;
use gramgrid_core::tariff::{Category, TariffBook};
use gramgrid_proto::wire::{ReadingBatch, ReadingBlock, UplinkEvent};

fn ist(d: u32, h: u32) -> DateTime<Utc> {
    gramgrid_core::civil::ist()
        .with_ymd_and_hms(2026, 11, d, h, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn manifest(serials: &[(&str, u32)]) -> MeterManifest {
    let mut text = String::from("version = 1\n");
    for (serial, dev_addr) in serials {
        text += &format!(
            "[[meter]]\nserial = \"{serial}\"\ndev_addr = \"{dev_addr:08X}\"\nnwk_skey = \"00112233445566778899aabbccddeeff\"\napp_skey = \"ffeeddccbbaa99887766554433221100\"\n"
        );
    }
    MeterManifest::parse(&text).unwrap()
}

fn stock(t: &TestCentral, gateway: &str, serials: &[(&str, u32)]) -> Result<StockReport> {
    let (manifest, gateway) = (manifest(serials), gateway.to_owned());
    t.tx(move |tx| add_to_stock(tx, &manifest, &gateway, ist(2, 0)))
}

fn installed(serial: &str, account: &str, replaces: Option<&str>) -> UplinkEvent {
    UplinkEvent::MeterInstalled {
        id: format!("tech-gw-a-{serial}"),
        serial: serial.into(),
        account: account.into(),
        installed_at: ist(16, 11),
        first_register_wh: Some(7_000),
        replaces: replaces.map(str::to_owned),
        technician: "asha.v".into(),
    }
}

/// One exchange of `gateway`: priority records from `first_seq`, then readings.
fn exchange(
    t: &TestCentral,
    gateway: &str,
    first_seq: u64,
    events: Vec<UplinkEvent>,
    readings: Vec<(String, i64, i64)>,
) {
    let mut request = priority_upload(first_seq, events, ist(25, 0));
    request.readings = (!readings.is_empty()).then(|| ReadingBatch {
        after_seq: 0,
        through_seq: readings.len() as u64,
        blocks: ReadingBlock::group(readings),
        exports: Vec::new(),
    });
    t.upload(gateway, request, ist(25, 0));
}

fn energy_charges(t: &TestCentral, account: &str) -> i64 {
    let account = account.to_owned();
    t.tx(move |tx| {
        tx.query_int(
            "SELECT COALESCE(CAST(SUM(s.energy_paise + s.duty_paise) AS BIGINT), 0) FROM segment_energy s
             JOIN meters m ON m.serial = s.meter WHERE m.account = $1",
            &[account.into()],
        )
        .map_err(Into::into)
    })
    .unwrap()
}

/// A central with gateways gw-a and gw-b, and account A1 on gw-a with meter `serial` installed on
/// the 1st (register 0).
fn two_gateways_and_a_meter_on_a1(serial: &str) -> TestCentral {
    let t = central();
    t.tx(|tx| {
        ensure_gateway(tx, "gw-a")?;
        ensure_gateway(tx, "gw-b")
    })
    .unwrap();
    t.account("A1", Some("gw-a"));
    let meter = Meter {
        serial: serial.into(),
        account: "A1".into(),
        installed_at: ist(1, 0),
        initial_register_wh: Some(0),
        keys: None,
        dlms: None,
        relay_state: "unknown".into(),
    };
    t.tx(move |tx| accounts::put_meter(tx, &meter, false))
        .unwrap();
    t
}

#[test]
fn a_spare_swapped_in_at_a_gateway_bills_on_in_the_old_meters_slabs_at_central() {
    let t = two_gateways_and_a_meter_on_a1("M1");
    t.account("B1", Some("gw-b"));

    // Into gw-a's stock once; the gateway is sent each spare with its keys.
    let report = stock(&t, "gw-a", &[("M2", 0x2601_0002), ("M3", 0x2601_0003)]).unwrap();
    assert_eq!((report.added, report.unchanged), (2, 0));
    assert_eq!(
        stock(&t, "gw-a", &[("M2", 0x2601_0002)]).unwrap().unchanged,
        1
    );
    let spares: Vec<String> = t
        .downlink("gw-a")
        .into_iter()
        .filter_map(|event| match event {
            DownlinkEvent::StockMeter { serial, keys } => {
                assert!(keys
                    .nwk_skey
                    .eq_ignore_ascii_case("00112233445566778899aabbccddeeff"));
                Some(serial)
            }
            _ => None,
        })
        .collect();
    assert_eq!(spares, ["M2", "M3"]);
    for (gateway, serial, why) in [
        ("gw-a", "M1", "already installed on account A1"),
        ("gw-b", "M2", "in the stock of gateway gw-a"),
        ("gw-x", "M9", "no gateway 'gw-x'"),
    ] {
        let error = stock(&t, gateway, &[(serial, 0x2601_0009)]).unwrap_err();
        assert!(error.to_string().contains(why), "{error}");
    }

    // gw-a swaps M2 for M1 on the 16th: M1's final register and M2's first report come up on the
    // bulk lane in the same exchange as the news.
    let (swap, later) = (ist(16, 11).timestamp(), ist(20, 10).timestamp());
    exchange(
        &t,
        "gw-a",
        1,
        vec![installed("M2", "A1", Some("M1"))],
        vec![
            ("M1".into(), ist(15, 10).timestamp(), 150_000),
            ("M1".into(), swap, 210_000),
            ("M2".into(), swap, 7_000),
            ("M2".into(), later, 57_000),
        ],
    );
    let one_meter = TariffBook::builtin()
        .segment_at(Category::Domestic, ist(16, 11))
        .unwrap()
        .cost(260_000)
        .total();
    assert_eq!(energy_charges(&t, "A1"), one_meter);
    let meters = t.tx(|tx| accounts::meters_of(tx, "A1")).unwrap();
    let m2 = meters.iter().find(|m| m.serial == "M2").unwrap();
    assert_eq!(m2.keys.as_ref().unwrap().dev_addr, 0x2601_0002);
    assert_eq!(m2.initial_register_wh, Some(7_000));

    // The same news again changes nothing; news that does not match the stock is refused and
    // flagged: a spare of another gateway, or a meter already installed elsewhere.
    exchange(
        &t,
        "gw-a",
        2,
        vec![installed("M2", "A1", Some("M1"))],
        vec![],
    );
    assert_eq!(energy_charges(&t, "A1"), one_meter);
    exchange(&t, "gw-b", 1, vec![installed("M3", "B1", None)], vec![]);
    exchange(&t, "gw-a", 3, vec![installed("M9", "A1", None)], vec![]);
    let refused: Vec<String> = t
        .flags()
        .into_iter()
        .filter(|f| f.kind == "foreign_record")
        .map(|f| f.detail)
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    for why in [
        "gw-b': meter M3 is in the stock of gateway gw-a",
        "gw-a': meter M9 is not in any gateway's stock",
    ] {
        assert!(refused.iter().any(|f| f.contains(why)), "{refused:?}");
    }
    assert_eq!(t.tx(|tx| accounts::meters_of(tx, "B1")).unwrap().len(), 0);
}

#[test]
fn a_gateway_an_account_moves_to_gets_its_meters_in_installation_order() {
    let t = two_gateways_and_a_meter_on_a1("Z1");
    // The spare sorts before the old meter: the order must come from the installation times.
    stock(&t, "gw-a", &[("A2", 0x2601_0002)]).unwrap();
    exchange(
        &t,
        "gw-a",
        1,
        vec![installed("A2", "A1", Some("Z1"))],
        vec![],
    );
    t.tx(|tx| {
        let mut account = accounts::account(tx, "A1")?;
        account.gateway = Some("gw-b".into());
        accounts::put_account(tx, &account, true)
    })
    .unwrap();
    let meters: Vec<String> = t
        .downlink("gw-b")
        .into_iter()
        .filter_map(|event| match event {
            DownlinkEvent::Meter { serial, .. } => Some(serial),
            _ => None,
        })
        .collect();
    // Each installation at a gateway takes the one before out of service: the last one stays.
    assert_eq!(meters, ["Z1", "A2"]);
}
