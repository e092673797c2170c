//! What the meter link keeps in the store: session keys and the frame counters of each meter, and
//! a DLMS meter's association (keys, system title, invocation counters).

use super::{from_ts, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use gramgrid_net::secrets::Sealer;
use gramgrid_proto::dlms::cipher::Keys;
use gramgrid_proto::dlms::client::MeterSecurity;
use gramgrid_proto::frame::{DevAddr, SessionKey, SessionKeys};
use rusqlite::{params, OptionalExtension, Transaction};

/// One meter's LoRaWAN session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSession {
    /// The meter's id in the store.
    pub meter: i64,
    /// The meter's serial number.
    pub serial: String,
    /// DevAddr and ABP session keys (NwkSKey, AppSKey); never logged.
    pub keys: SessionKeys,
    /// Last uplink counter accepted, last downlink counter sent.
    pub fcnt_up: Option<u32>,
    /// Last downlink counter committed; None before the session's first downlink.
    pub fcnt_down: Option<u32>,
    /// The meter's latest stored reading, if any.
    pub last_reading_at: Option<DateTime<Utc>>,
    /// When the meter was installed: intervals before it are not the account's to fetch.
    pub installed_at: DateTime<Utc>,
    /// A DLMS/COSEM meter's association (docs/dlms.md section 7); None for a payload v1 meter.
    pub dlms: Option<DlmsAssociation>,
}

/// What the gateway keeps of a DLMS meter's association: its keys and system title, and both
/// invocation counters (None before the first frame each way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlmsAssociation {
    /// The meter's global keys and system title.
    pub security: MeterSecurity,
    /// The invocation counter the gateway's next request uses.
    pub gateway_next_ic: Option<u32>,
    /// The last invocation counter accepted from the meter.
    pub meter_last_ic: Option<u32>,
}

/// Which invocation counter of a DLMS association.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlmsIc {
    /// The gateway's own: the counter its next request uses (stored before each send).
    GatewayNext,
    /// The meter's: the last one accepted (stored before the answer is acted upon).
    MeterLast,
}

/// Which counter of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fcnt {
    /// The uplink counter (meter to gateway): the last one accepted.
    Up,
    /// The downlink counter (gateway to meter): the last one used.
    Down,
}

impl Store {
    /// Every meter in service that has session keys.
    pub fn link_sessions(&self) -> Result<Vec<LinkSession>> {
        let mut stmt = self.conn.prepare(
            "SELECT k.meter, m.serial, k.dev_addr, k.nwk_skey, k.app_skey, c.fcnt_up, c.fcnt_down, r.at, m.installed_at
             FROM meter_keys k JOIN meters m ON m.id = k.meter
             LEFT JOIN link_counters c ON c.meter = k.meter
             LEFT JOIN meter_cursor r ON r.meter = k.meter
             WHERE m.removed_at IS NULL ORDER BY k.meter",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<i64>>(7)?,
                r.get::<_, i64>(8)?,
            ))
        })?;
        let mut dlms = self.dlms_associations()?;
        let mut out = Vec::new();
        for row in rows {
            let (meter, serial, dev_addr, nwk, app, up, down, at, installed) = row?;
            let key = |sealed: &str, which: &str| -> Result<SessionKey> {
                let hex = self.sealer.open(sealed, &key_context(meter, which))?;
                SessionKey::from_hex(&hex).ok_or_else(|| {
                    StoreError::Encoding(format!(
                        "the stored session keys of meter {serial} are not 32 hex digits; re-provision it"
                    ))
                })
            };
            let counter = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
            out.push(LinkSession {
                meter,
                keys: SessionKeys {
                    dev_addr: DevAddr(u32::try_from(dev_addr).unwrap_or_default()),
                    nwk_skey: key(&nwk, "nwk")?,
                    app_skey: key(&app, "app")?,
                },
                serial,
                fcnt_up: counter(up),
                fcnt_down: counter(down),
                last_reading_at: at.map(from_ts),
                installed_at: from_ts(installed),
                dlms: dlms.remove(&meter),
            });
        }
        Ok(out)
    }

    /// Provisions (or replaces) a meter's ABP session keys, e.g. from a meter manifest. New keys
    /// mean a new session: its counters start again.
    pub fn set_meter_keys(&mut self, meter: i64, keys: &SessionKeys) -> Result<()> {
        let tx = self.conn.transaction()?;
        set_meter_keys_in(&tx, &self.sealer, meter, keys)?;
        tx.commit()?;
        Ok(())
    }

    /// Makes a meter a DLMS meter with these keys and system title, or (None) a payload v1 meter.
    /// New keys or a new title start the association's invocation counters again.
    pub fn set_meter_dlms(&mut self, meter: i64, dlms: Option<&MeterSecurity>) -> Result<()> {
        let tx = self.conn.transaction()?;
        set_meter_dlms_in(&tx, &self.sealer, meter, dlms)?;
        tx.commit()?;
        Ok(())
    }

    /// Durably records a DLMS invocation counter: the gateway's before its request is sent, the
    /// meter's before its answer is acted upon (as [`Store::commit_fcnt`]).
    pub fn commit_dlms_ic(&mut self, meter: i64, which: DlmsIc, ic: u32) -> Result<()> {
        let sql = match which {
            DlmsIc::GatewayNext => {
                "INSERT INTO dlms_counters (meter, gateway_next_ic) VALUES (?1, ?2)
                 ON CONFLICT (meter) DO UPDATE SET gateway_next_ic = ?2"
            }
            DlmsIc::MeterLast => {
                "INSERT INTO dlms_counters (meter, meter_last_ic) VALUES (?1, ?2)
                 ON CONFLICT (meter) DO UPDATE SET meter_last_ic = ?2"
            }
        };
        self.conn.execute(sql, params![meter, i64::from(ic)])?;
        Ok(())
    }

    /// The DLMS association of every DLMS meter, by meter id.
    fn dlms_associations(&self) -> Result<std::collections::HashMap<i64, DlmsAssociation>> {
        let mut stmt = self.conn.prepare(
            "SELECT d.meter, d.system_title, d.ek, d.ak, c.gateway_next_ic, c.meter_last_ic
             FROM meter_dlms d LEFT JOIN dlms_counters c ON c.meter = d.meter",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })?;
        let mut out = std::collections::HashMap::new();
        for row in rows {
            let (meter, title, ek, ak, next, last) = row?;
            let bad = || {
                StoreError::Encoding(format!(
                    "the stored DLMS keys of meter {meter} do not decode; re-provision it"
                ))
            };
            let key = |sealed: &str, which: &str| -> Result<[u8; 16]> {
                let hex = self.sealer.open(sealed, &key_context(meter, which))?;
                let mut key = [0u8; 16];
                hex::decode_to_slice(hex, &mut key).map_err(|_| bad())?;
                Ok(key)
            };
            let mut system_title = [0u8; 8];
            hex::decode_to_slice(&title, &mut system_title).map_err(|_| bad())?;
            let counter = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
            let security = MeterSecurity {
                keys: Keys {
                    encryption: key(&ek, "dlms_ek")?,
                    authentication: key(&ak, "dlms_ak")?,
                },
                system_title,
            };
            out.insert(
                meter,
                DlmsAssociation {
                    security,
                    gateway_next_ic: counter(next),
                    meter_last_ic: counter(last),
                },
            );
        }
        Ok(out)
    }

    /// Durably records a frame counter (fsynced: `synchronous = FULL`) before the frame is acted
    /// upon or sent, so a restart never accepts or reuses an older one.
    pub fn commit_fcnt(&mut self, meter: i64, which: Fcnt, fcnt: u32) -> Result<()> {
        let sql = match which {
            Fcnt::Up => {
                "INSERT INTO link_counters (meter, fcnt_up) VALUES (?1, ?2)
                 ON CONFLICT (meter) DO UPDATE SET fcnt_up = ?2"
            }
            Fcnt::Down => {
                "INSERT INTO link_counters (meter, fcnt_down) VALUES (?1, ?2)
                 ON CONFLICT (meter) DO UPDATE SET fcnt_down = ?2"
            }
        };
        self.conn.execute(sql, params![meter, i64::from(fcnt)])?;
        Ok(())
    }
}

/// Stores a meter's session keys inside the caller's transaction; new keys (a re-keyed or replaced
/// meter) start a new session, so the meter's frame counters start again.
pub(super) fn set_meter_keys_in(
    tx: &Transaction<'_>,
    sealer: &Sealer,
    meter: i64,
    keys: &SessionKeys,
) -> Result<()> {
    let stored: Option<(i64, String, String)> = tx
        .query_row(
            "SELECT dev_addr, nwk_skey, app_skey FROM meter_keys WHERE meter = ?1",
            [meter],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let (nwk, app) = (
        keys.nwk_skey.to_storage_hex(),
        keys.app_skey.to_storage_hex(),
    );
    if let Some((dev_addr, stored_nwk, stored_app)) = stored {
        let same = dev_addr == i64::from(keys.dev_addr.0)
            && sealer.open(&stored_nwk, &key_context(meter, "nwk"))? == nwk
            && sealer.open(&stored_app, &key_context(meter, "app"))? == app;
        if same {
            return Ok(());
        }
    }
    tx.execute(
        "INSERT INTO meter_keys (meter, dev_addr, nwk_skey, app_skey) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (meter) DO UPDATE SET dev_addr = ?2, nwk_skey = ?3, app_skey = ?4",
        params![
            meter,
            i64::from(keys.dev_addr.0),
            sealer.seal(&nwk, &key_context(meter, "nwk")),
            sealer.seal(&app, &key_context(meter, "app"))
        ],
    )?;
    // New keys (a re-keyed or replaced meter) start a new session: the frame counters start again.
    tx.execute("DELETE FROM link_counters WHERE meter = ?1", [meter])?;
    Ok(())
}

/// Stores (Some) or clears (None) a meter's DLMS keys and system title inside the caller's
/// transaction; new ones start the association's invocation counters again.
pub(super) fn set_meter_dlms_in(
    tx: &Transaction<'_>,
    sealer: &Sealer,
    meter: i64,
    dlms: Option<&MeterSecurity>,
) -> Result<()> {
    let Some(security) = dlms else {
        tx.execute("DELETE FROM meter_dlms WHERE meter = ?1", [meter])?;
        tx.execute("DELETE FROM dlms_counters WHERE meter = ?1", [meter])?;
        return Ok(());
    };
    let (title, ek, ak) = (
        hex::encode_upper(security.system_title),
        hex::encode_upper(security.keys.encryption),
        hex::encode_upper(security.keys.authentication),
    );
    let stored: Option<(String, String, String)> = tx
        .query_row(
            "SELECT system_title, ek, ak FROM meter_dlms WHERE meter = ?1",
            [meter],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((stored_title, stored_ek, stored_ak)) = stored {
        let same = stored_title == title
            && sealer.open(&stored_ek, &key_context(meter, "dlms_ek"))? == ek
            && sealer.open(&stored_ak, &key_context(meter, "dlms_ak"))? == ak;
        if same {
            return Ok(());
        }
    }
    tx.execute(
        "INSERT INTO meter_dlms (meter, system_title, ek, ak) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (meter) DO UPDATE SET system_title = ?2, ek = ?3, ak = ?4",
        params![
            meter,
            title,
            sealer.seal(&ek, &key_context(meter, "dlms_ek")),
            sealer.seal(&ak, &key_context(meter, "dlms_ak"))
        ],
    )?;
    tx.execute("DELETE FROM dlms_counters WHERE meter = ?1", [meter])?;
    Ok(())
}

/// Where a meter's sealed key belongs: `which` is `nwk` or `app` (LoRaWAN), `dlms_ek` or
/// `dlms_ak` (DLMS).
fn key_context(meter: i64, which: &str) -> String {
    format!("meter_keys:{meter}:{which}")
}

impl Store {
    /// Seals session keys stored in the clear by a gramgrid before sealing existed.
    pub(super) fn seal_stored_keys(&mut self) -> Result<()> {
        let tx = self.conn.transaction()?;
        let stored: Vec<(i64, String, String)> = tx
            .prepare("SELECT meter, nwk_skey, app_skey FROM meter_keys")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let clear = stored
            .into_iter()
            .filter(|(_, nwk, _)| !Sealer::is_sealed(nwk));
        for (meter, nwk, app) in clear {
            tx.execute(
                "UPDATE meter_keys SET nwk_skey = ?2, app_skey = ?3 WHERE meter = ?1",
                params![
                    meter,
                    self.sealer.seal(&nwk, &key_context(meter, "nwk")),
                    self.sealer.seal(&app, &key_context(meter, "app"))
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}
