//! Meter session keys sealed at rest (`net::secrets`), each bound to its table and serial: households' meters, spares and transformer meters alike; DLMS association keys the same way.
use super::{CentralError, Result};
use gramgrid_net::secrets::Sealer;
use gramgrid_proto::dlms::client::MeterSecurity;
use gramgrid_proto::wire::{MeterKeys, WireDlms};

/// The table a meter's keys are stored in. It is part of what each sealed key is bound to, so a
/// sealed key copied to another row or table does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyHome {
    /// `meters`: a household's meter.
    Meter,
    /// `stock_meters`: a spare.
    Stock,
    /// `transformer_meters`: a distribution transformer's meter.
    Transformer,
}

/// Where one sealed session key belongs: `which` is `nwk` or `app`.
pub(crate) fn context(home: KeyHome, serial: &str, which: &str) -> String {
    let home = match home {
        KeyHome::Meter => "meter",
        KeyHome::Stock => "stock",
        KeyHome::Transformer => "transformer",
    };
    format!("{home}:{serial}:{which}")
}

/// The two session keys of `keys` sealed for `serial`'s row in `home`: (nwk, app).
pub(crate) fn seal(
    sealer: &Sealer,
    home: KeyHome,
    serial: &str,
    keys: &MeterKeys,
) -> (String, String) {
    (
        sealer.seal(&keys.nwk_skey, &context(home, serial, "nwk")),
        sealer.seal(&keys.app_skey, &context(home, serial, "app")),
    )
}

/// The keys stored for `serial`'s row in `home` (its DevAddr and the sealed session keys), opened.
pub(crate) fn open(
    sealer: &Sealer,
    home: KeyHome,
    serial: &str,
    dev_addr: i64,
    (nwk, app): (&str, &str),
) -> Result<MeterKeys> {
    Ok(MeterKeys {
        dev_addr: u32::try_from(dev_addr)
            .map_err(|_| CentralError::Corrupt(format!("meter {serial}: dev_addr {dev_addr}")))?,
        nwk_skey: sealer.open(nwk, &context(home, serial, "nwk"))?,
        app_skey: sealer.open(app, &context(home, serial, "app"))?,
    })
}

/// A meter's DLMS security as stored in `home`'s `dlms_title`, `dlms_ek`, `dlms_ak` columns: the
/// system title in hex (not a secret: the meter sends it in the clear), the keys sealed.
pub(crate) fn seal_dlms(
    sealer: &Sealer,
    home: KeyHome,
    serial: &str,
    security: &MeterSecurity,
) -> (String, String, String) {
    let wire = WireDlms::from(security);
    (
        wire.system_title,
        sealer.seal(&wire.ek, &context(home, serial, "dlms_ek")),
        sealer.seal(&wire.ak, &context(home, serial, "dlms_ak")),
    )
}

/// The DLMS security stored for `serial`'s row in `home` (title, sealed EK, sealed AK), opened;
/// None for a payload-v1 meter (no title).
pub(crate) fn open_dlms(
    sealer: &Sealer,
    home: KeyHome,
    serial: &str,
    (title, ek, ak): (Option<String>, Option<String>, Option<String>),
) -> Result<Option<MeterSecurity>> {
    let (Some(title), Some(ek), Some(ak)) = (title, ek, ak) else {
        return Ok(None);
    };
    let wire = WireDlms {
        system_title: title,
        ek: sealer.open(&ek, &context(home, serial, "dlms_ek"))?,
        ak: sealer.open(&ak, &context(home, serial, "dlms_ak"))?,
    };
    wire.security().map(Some).map_err(|(field, problem)| {
        CentralError::Corrupt(format!("meter {serial}: stored {field} {problem}"))
    })
}
