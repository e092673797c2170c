//! Entering a meter manifest at central (`gramgrid central import-meters`): every meter of a
//! vendor's (or the simulator's) manifest becomes a meter with its radio keys (and, for a DLMS
//! meter, its DLMS security: `dlms`) on an account of its own, assigned to one gateway, which
//! receives them at its next sync. A distribution
//! transformer's meter (`role = "dt"`) goes on no account: it is the gateway's transformer meter
//! (`transformers`).
use super::accounts::{self, Account, Meter};
use super::db::Tx;
use super::transformers::{self, Entered};
use super::{CentralError, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::tariff::Category;
use gramgrid_proto::manifest::{MeterEntry, MeterManifest, MeterRole};
use gramgrid_proto::wire::MeterKeys;

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Meters entered for the first time (each on a new account).
    pub added: usize,
    /// Meters already known whose keys (radio or DLMS) were replaced by the manifest's (re-keyed).
    pub rekeyed: usize,
    /// Transformer meters (`role = "dt"`) entered for the first time (on no account).
    pub transformers_added: usize,
    /// Transformer meters already known whose keys the manifest replaced.
    pub transformers_rekeyed: usize,
}

/// A manifest entry's radio keys as central stores and sends them.
pub(crate) fn manifest_keys(entry: &MeterEntry) -> MeterKeys {
    MeterKeys {
        dev_addr: entry.keys.dev_addr.0,
        nwk_skey: entry.keys.nwk_skey.to_storage_hex(),
        app_skey: entry.keys.app_skey.to_storage_hex(),
    }
}

/// The account a manifest meter is entered on: one per meter, named after its serial, until the
/// office attaches the household's details (`PUT /api/v1/accounts/{id}`).
pub fn account_of(serial: &str) -> String {
    format!("ACC-{serial}")
}

/// Enters every meter of `manifest` for `gateway`, installed at `installed_at`, in one transaction
/// (all or nothing). Running it again with the same manifest changes nothing; with new keys for a
/// known meter, it re-keys it. A transformer meter is entered as the gateway's (a serial that is
/// a household's meter, or another gateway's transformer meter, is refused).
pub fn import_manifest(
    tx: &mut dyn Tx,
    manifest: &MeterManifest,
    gateway: &str,
    installed_at: DateTime<Utc>,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    for entry in &manifest.meters {
        if entry.role == MeterRole::Transformer {
            match transformers::enter(
                tx,
                gateway,
                &entry.serial,
                installed_at,
                &manifest_keys(entry),
                entry.dlms.as_ref(),
            )? {
                Entered::Added => report.transformers_added += 1,
                Entered::Rekeyed => report.transformers_rekeyed += 1,
                Entered::Unchanged => {}
            }
            continue;
        }
        let category = match entry.category.as_deref() {
            None => Category::Domestic,
            Some(text) => Category::parse(text).ok_or_else(|| {
                CentralError::Invalid(format!(
                    "meter {}: category '{text}' is not domestic, commercial or agricultural",
                    entry.serial
                ))
            })?,
        };
        let meter = Meter {
            serial: entry.serial.clone(),
            account: account_of(&entry.serial),
            installed_at,
            initial_register_wh: None,
            keys: Some(manifest_keys(entry)),
            dlms: entry.dlms.clone(),
            relay_state: "unknown".into(),
        };
        let stored = tx.query_opt(
            "SELECT dev_addr, nwk_skey, app_skey, dlms_title, dlms_ek, dlms_ak FROM meters WHERE serial = $1",
            &[entry.serial.as_str().into()],
        )?;
        if let Some(row) = stored {
            let keys = accounts::stored_keys(
                tx.sealer(),
                &entry.serial,
                row.opt_int(0)?,
                row.opt_text(1)?,
                row.opt_text(2)?,
            )?;
            let dlms = crate::sealed_keys::open_dlms(
                tx.sealer(),
                crate::sealed_keys::KeyHome::Meter,
                &entry.serial,
                (row.opt_text(3)?, row.opt_text(4)?, row.opt_text(5)?),
            )?;
            let same_keys = keys.is_some() && keys == meter.keys && dlms == meter.dlms;
            if !same_keys {
                accounts::put_meter(tx, &meter, true)?;
                report.rekeyed += 1;
            }
            continue;
        }
        accounts::put_account(
            tx,
            &Account {
                language: Default::default(),
                id: meter.account.clone(),
                consumer_name: format!("Meter {}", entry.serial),
                category,
                phone: None,
                gateway: Some(gateway.to_string()),
                created_at: installed_at,
            },
            false,
        )?;
        accounts::put_meter(tx, &meter, false)?;
        report.added += 1;
    }
    Ok(report)
}
