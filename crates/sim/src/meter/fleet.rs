//! A simulated meter fleet: meters scattered over a village around the gateway, each running the
//! virtual firmware on a radio (emulated SX1262 on the UDP air bus, or a light radio in-process).

use super::dlms::{DlmsServer, Nameplate};
use super::firmware::Firmware;
use gramgrid_air::air::{link_loss_db, NodeSpec};
use gramgrid_air::pathloss::PathLossModel;
use gramgrid_core::tariff::Category;
use gramgrid_gateway::link::{LinkClock, REPLY_DELAY, RX1_DELAY};
use gramgrid_proto::dlms::cipher::Keys;
use gramgrid_proto::dlms::client::{gateway_system_title, MeterSecurity};
use gramgrid_proto::frame::{DevAddr, SessionKey, SessionKeys};
use gramgrid_proto::manifest::MeterRole;
use gramgrid_proto::payload::AccessMode;
use gramgrid_radio::budget::{choose_sf, GATEWAY_GAIN_DBI, METER_POWER_DBM};
use gramgrid_radio::{Radio, RadioConfig, RadioError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// First DevAddr of a simulated fleet (NetID 0x13 range used by many private networks).
const FIRST_DEV_ADDR: u32 = 0x2601_0001;
/// ALOHA meters send each reading at their own phase within the interval, give or take this much
/// (a Class A device's timer is not aligned with anyone else's).
const ALOHA_JITTER: Duration = Duration::from_secs(5);

/// One meter of a planned fleet.
#[derive(Debug, Clone)]
pub struct PlannedMeter {
    /// Serial number ([`serial`]: `SIM-00001`, ...).
    pub serial: String,
    /// ABP session keys: DevAddr, NwkSKey, AppSKey.
    pub keys: SessionKeys,
    /// Tariff category of its household, which shapes its load profile.
    pub category: Category,
    /// Its position on the village map (metres) and its antenna.
    pub spec: NodeSpec,
    /// The SF its link budget allows with the ADR margin; `None` if not even SF12 reaches.
    pub sf: Option<u8>,
    /// Seed of its firmware: load noise, clock offset and drift.
    pub seed: u64,
    /// A household's meter, or the distribution transformer's.
    pub role: MeterRole,
    /// A DLMS/COSEM meter's association ([`make_dlms`]); None for a payload v1 meter.
    pub dlms: Option<PlannedDlms>,
}

/// A planned DLMS meter's association: its keys and system title, and the system title of the
/// gateway it answers (docs/dlms.md section 7).
#[derive(Debug, Clone)]
pub struct PlannedDlms {
    /// The meter's global keys and system title (what the manifest provisions).
    pub security: MeterSecurity,
    /// The gateway's system title ([`gateway_system_title`] of its id).
    pub gateway_title: [u8; 8],
}

/// The slowest SF whose downlink carries a DLMS load-profile read (SF9: 115 bytes; SF10 to SF12
/// carry 51, the read is 91: docs/dlms.md section 7).
pub const DLMS_SLOWEST_READABLE_SF: u8 = 9;

/// Which household meters [`make_dlms`] makes DLMS meters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlmsChoice {
    /// The first `n` households, wherever they are (the capacity benchmark's DLMS fleet).
    First,
    /// The first `n` households whose link allows SF9 or faster, where a DLMS meter can be read
    /// (a village that deploys DLMS meters where they work).
    FirstReadable,
}

/// Makes `n` household meters of `plan` DLMS/COSEM meters of gateway `gateway_id` (chosen by
/// `choice`), with keys drawn from `seed` and system title `SIM`, 0, and their number (u32,
/// big-endian).
pub fn make_dlms(
    plan: &mut [PlannedMeter],
    n: usize,
    gateway_id: &str,
    seed: u64,
    choice: DlmsChoice,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x646c_6d73);
    let readable = |m: &PlannedMeter| m.sf.is_some_and(|sf| sf <= DLMS_SLOWEST_READABLE_SF);
    let households = plan
        .iter_mut()
        .filter(|m| m.role == MeterRole::Consumer && (choice == DlmsChoice::First || readable(m)));
    for (i, m) in households.take(n).enumerate() {
        let mut key = || {
            let mut k = [0u8; 16];
            rng.fill(&mut k);
            k[0] |= 1; // never the all-zero placeholder the manifest refuses
            k
        };
        let keys = Keys {
            encryption: key(),
            authentication: key(),
        };
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let mut system_title = *b"SIM\0\0\0\0\0";
        system_title[4..].copy_from_slice(&number.to_be_bytes());
        m.dlms = Some(PlannedDlms {
            security: MeterSecurity { keys, system_title },
            gateway_title: gateway_system_title(gateway_id),
        });
    }
}

/// Serial number of fleet meter `i` (same in every process with the same plan).
pub fn serial(i: usize) -> String {
    format!("SIM-{:05}", i + 1)
}

/// Scatters `meters` uniformly over a disc of `radius_m` around `gateway`, with keys, categories
/// (85 % domestic, 10 % commercial, 5 % agricultural) and the SF their link budget allows.
pub fn plan(
    meters: usize,
    radius_m: f64,
    seed: u64,
    path_loss: &PathLossModel,
    gateway: &NodeSpec,
) -> Vec<PlannedMeter> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d65_7465_7273);
    (0..meters)
        .map(|i| {
            let r = radius_m * rng.random::<f64>().sqrt();
            let theta = std::f64::consts::TAU * rng.random::<f64>();
            let spec = NodeSpec::new(
                serial(i),
                gateway.x_m + r * theta.cos(),
                gateway.y_m + r * theta.sin(),
            );
            let rx = f64::from(METER_POWER_DBM) + gateway.antenna_gain_dbi
                - link_loss_db(path_loss, seed, &spec, gateway);
            let category = match rng.random_range(0..100) {
                0..85 => Category::Domestic,
                85..95 => Category::Commercial,
                _ => Category::Agricultural,
            };
            let mut key = || {
                let mut k = [0u8; 16];
                rng.fill(&mut k);
                k[0] |= 1; // never the all-zero placeholder the manifest refuses
                SessionKey::new(k)
            };
            let keys = SessionKeys {
                dev_addr: DevAddr(
                    FIRST_DEV_ADDR + u32::try_from(i).unwrap_or(u32::MAX - FIRST_DEV_ADDR),
                ),
                nwk_skey: key(),
                app_skey: key(),
            };
            PlannedMeter {
                serial: serial(i),
                keys,
                category,
                spec,
                sf: choose_sf(rx),
                seed: rng.random(),
                role: MeterRole::Consumer,
                dlms: None,
            }
        })
        .collect()
}

/// Serial of the village's distribution-transformer meter.
pub const TRANSFORMER_SERIAL: &str = "SIM-DT-01";

/// The transformer's meter: at the substation, a few metres from the gateway's mast, on the
/// DevAddr just below the fleet's.
pub fn transformer_meter(seed: u64, path_loss: &PathLossModel, gateway: &NodeSpec) -> PlannedMeter {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0064_746d_6574_6572);
    let spec = NodeSpec::new(TRANSFORMER_SERIAL, gateway.x_m + 12.0, gateway.y_m + 5.0);
    let rx = f64::from(METER_POWER_DBM) + gateway.antenna_gain_dbi
        - link_loss_db(path_loss, seed, &spec, gateway);
    let mut key = || {
        let mut k = [0u8; 16];
        rng.fill(&mut k);
        k[0] |= 1;
        SessionKey::new(k)
    };
    PlannedMeter {
        serial: TRANSFORMER_SERIAL.to_owned(),
        keys: SessionKeys {
            dev_addr: DevAddr(FIRST_DEV_ADDR - 1),
            nwk_skey: key(),
            app_skey: key(),
        },
        category: Category::Domestic,
        spec,
        sf: choose_sf(rx),
        seed: rng.random(),
        role: MeterRole::Transformer,
        dlms: None,
    }
}

/// The mast of the benchmark and the default simulation: origin, 3 dBi.
pub fn gateway_spec() -> NodeSpec {
    NodeSpec {
        antenna_gain_dbi: GATEWAY_GAIN_DBI,
        ..NodeSpec::new("gw", 0.0, 0.0)
    }
}

/// The fleet as a meter manifest (what the central server would issue). Contains keys: write it
/// only to a file the gateway reads.
pub fn manifest_toml(meters: &[PlannedMeter]) -> String {
    let mut out = String::from("version = 1\n");
    for m in meters {
        let category = match m.category {
            Category::Domestic => "domestic",
            Category::Commercial => "commercial",
            Category::Agricultural => "agricultural",
        };
        let _ = write!(
            out,
            "\n[[meter]]\nserial = \"{}\"\ndev_addr = \"{}\"\nnwk_skey = \"{}\"\napp_skey = \"{}\"\ncategory = \"{category}\"\nrole = \"{}\"\n",
            m.serial,
            m.keys.dev_addr,
            m.keys.nwk_skey.to_storage_hex(),
            m.keys.app_skey.to_storage_hex(),
            m.role.name(),
        );
        if let Some(dlms) = &m.dlms {
            let security = &dlms.security;
            let _ = write!(
                out,
                "protocol = \"dlms\"\ndlms_ek = \"{}\"\ndlms_ak = \"{}\"\nsystem_title = \"{}\"\n",
                hex::encode_upper(security.keys.encryption),
                hex::encode_upper(security.keys.authentication),
                hex::encode_upper(security.system_title),
            );
        }
    }
    out
}

/// A running meter's firmware, shared with whoever watches it (tests, the benchmark).
pub type MeterHandle = Arc<Mutex<Firmware>>;

/// Builds the firmware of a planned meter. `commissioned`: it already listens on its link-budget SF
/// (a fleet that has run before); otherwise it starts factory-fresh on the rendezvous SF.
pub fn firmware(
    m: &PlannedMeter,
    mode: AccessMode,
    commissioned: bool,
    clock: &LinkClock,
) -> Firmware {
    let sf = if commissioned || mode == AccessMode::Aloha {
        m.sf.unwrap_or(12)
    } else {
        gramgrid_gateway::link::scheduler::RENDEZVOUS_SF
    };
    let firmware =
        Firmware::new(m.keys.clone(), m.category, sf, m.seed, clock.now()).with_mode(mode);
    match &m.dlms {
        None => firmware,
        Some(dlms) => firmware.with_dlms(
            DlmsServer::new(
                dlms.security.keys.clone(),
                dlms.security.system_title,
                dlms.gateway_title,
            ),
            Nameplate {
                serial: m.serial.clone(),
                manufacturer: "gramgrid simulator".to_owned(),
                firmware_version: env!("CARGO_PKG_VERSION").to_owned(),
            },
        ),
    }
}

/// Airtime a meter's transmissions took, summed over a fleet (for channel utilisation).
pub type AirtimeTally = Arc<Mutex<Duration>>;

/// Runs one meter until `stop`: Class C (listens all the time, answers the gateway) in scheduled
/// mode, Class A (one uplink per interval, then a receive window) in ALOHA mode.
pub async fn run_meter<R: Radio>(
    mut radio: R,
    fw: MeterHandle,
    clock: LinkClock,
    airtime: AirtimeTally,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RadioError> {
    let (mode, seed) = {
        let fw = locked(&fw);
        (fw.nvm.mode, fw.nvm.register_wh)
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let interval = Duration::from_secs(u64::from(gramgrid_proto::payload::INTERVAL_SECS));
    let phase = (interval - ALOHA_JITTER).mul_f64(rng.random::<f64>());
    let mut sf = 0;
    let mut next_capture = clock.instant_of(locked(&fw).next_capture(clock.now()));
    while !*stop.borrow() {
        let want = locked(&fw).listen_sf(clock.now());
        if want != sf {
            sf = want;
            radio
                .configure(RadioConfig {
                    spreading_factor: sf,
                    ..RadioConfig::meter()
                })
                .await?;
        }
        if mode == AccessMode::Aloha {
            let at = next_capture + phase + ALOHA_JITTER.mul_f64(rng.random::<f64>());
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = stop.changed() => continue,
            }
            let out = {
                let mut fw = locked(&fw);
                fw.capture(clock.at(next_capture));
                fw.aloha_uplink(clock.now())
            };
            next_capture += interval;
            if let Some(out) = out {
                let took = radio.transmit(&out).await?;
                *airtime.lock().unwrap_or_else(|p| p.into_inner()) += took;
                tokio::time::sleep(RX1_DELAY).await;
                if let Ok(frame) = radio
                    .receive(gramgrid_gateway::link::scheduler::airtime(sf, 64))
                    .await
                {
                    locked(&fw).on_downlink(&frame.payload, clock.now());
                }
            }
            continue;
        }
        let within = next_capture.saturating_duration_since(Instant::now());
        let heard = tokio::select! {
            heard = radio.receive(within) => heard,
            _ = stop.changed() => continue,
        };
        match heard {
            Ok(frame) => {
                let out = locked(&fw).on_downlink(&frame.payload, clock.now());
                if let Some(out) = out {
                    tokio::time::sleep_until(frame.received_at + REPLY_DELAY).await;
                    let took = radio.transmit(&out).await?;
                    *airtime.lock().unwrap_or_else(|p| p.into_inner()) += took;
                }
            }
            Err(RadioError::Timeout(_) | RadioError::Crc { .. } | RadioError::Header) => {}
            Err(e) => return Err(e),
        }
        if Instant::now() >= next_capture {
            let mut fw = locked(&fw);
            fw.capture(clock.now());
            next_capture = clock.instant_of(fw.next_capture(clock.now()));
        }
    }
    Ok(())
}

/// The firmware behind a handle; a panicked holder leaves it usable (it is plain data).
pub fn locked(fw: &MeterHandle) -> std::sync::MutexGuard<'_, Firmware> {
    fw.lock().unwrap_or_else(|p| p.into_inner())
}
