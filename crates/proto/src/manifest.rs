//! The meter manifest: the TOML file from the central server that provisions each meter's ABP keys.
//!
//! Errors name the entry (index and serial) and the field, never the value: a manifest holds key
//! material, and parse errors end up in logs and on the technician's screen.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use thiserror::Error;

use super::dlms::cipher::Keys;
use super::dlms::client::MeterSecurity;
use super::frame::{DevAddr, SessionKey, SessionKeys};

/// The manifest format version this parser reads.
pub const MANIFEST_VERSION: u32 = 1;

/// One provisioned meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterEntry {
    /// The meter's serial number (trimmed, never empty), unique in the manifest.
    pub serial: String,
    /// Its DevAddr (unique in the manifest) and ABP session keys (never all zeros).
    pub keys: SessionKeys,
    /// Tariff category hint (e.g. "domestic"); the ledger's own account data is authoritative.
    pub category: Option<String>,
    /// What the meter measures: a household's supply, or the distribution transformer's output.
    pub role: MeterRole,
    /// `protocol = "dlms"`: the meter speaks DLMS/COSEM on FPort 2 (docs/dlms.md section 7), with
    /// these keys and system title (`dlms_ek`, `dlms_ak`, `system_title`). None: payload v1
    /// (`protocol = "v1"` or absent).
    pub dlms: Option<MeterSecurity>,
}

/// What a provisioned meter measures (`role` in the manifest; `consumer` when absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MeterRole {
    /// A household's (or shop's, or pump's) meter: it belongs to an account and is billed.
    #[default]
    Consumer,
    /// The distribution transformer's meter (`role = "dt"`): no account, no bill; the gateway
    /// compares its energy with the sum of the consumers' (docs/energy-audit.md).
    Transformer,
}

impl MeterRole {
    /// The name in the manifest and in storage: `consumer` or `dt`.
    pub fn name(self) -> &'static str {
        match self {
            MeterRole::Consumer => "consumer",
            MeterRole::Transformer => "dt",
        }
    }

    /// The role of a name, if it is one.
    pub fn parse(name: &str) -> Option<MeterRole> {
        match name {
            "consumer" => Some(MeterRole::Consumer),
            "dt" => Some(MeterRole::Transformer),
            _ => None,
        }
    }
}

/// All meters of one gateway, with unique serials and DevAddrs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterManifest {
    /// The `[[meter]]` entries, in file order.
    pub meters: Vec<MeterEntry>,
}

/// What is wrong with one field of one meter entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldProblem {
    /// The field is absent.
    Missing,
    /// The field is blank (after trimming).
    Empty,
    /// The field holds a character that is not a hex digit.
    NotHex,
    /// The field has the wrong number of hex digits.
    WrongLength {
        /// Digits the field needs: 8 for a DevAddr, 32 for a session key.
        expected_digits: usize,
        /// Digits found.
        got_digits: usize,
    },
    /// An all-zero key is a placeholder, never a provisioned key.
    AllZeroKey,
    /// The field names a meter role other than `consumer` or `dt`.
    UnknownRole,
    /// The field names an application protocol other than `v1` or `dlms`.
    UnknownProtocol,
    /// A DLMS field on a meter whose `protocol` is not `dlms`.
    OnlyForDlms,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldProblem::Missing => f.write_str("is missing"),
            FieldProblem::Empty => f.write_str("is empty"),
            FieldProblem::NotHex => f.write_str("is not hexadecimal"),
            FieldProblem::WrongLength {
                expected_digits,
                got_digits,
            } => {
                write!(f, "has {got_digits} hex digits, expected {expected_digits}")
            }
            FieldProblem::AllZeroKey => f.write_str("is all zeros (a placeholder, not a key)"),
            FieldProblem::UnknownRole => f.write_str("is not `consumer` or `dt`"),
            FieldProblem::UnknownProtocol => f.write_str("is not `v1` or `dlms`"),
            FieldProblem::OnlyForDlms => {
                f.write_str("is set, but the meter's `protocol` is not `dlms`")
            }
        }
    }
}

/// Why a manifest was refused. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ManifestError {
    /// The file is not valid TOML, or has unknown or mistyped fields.
    #[error("manifest is not valid TOML (line {line}): {message}")]
    Syntax {
        /// 1-based line of the problem.
        line: usize,
        /// The parser's message, with runs of 16 or more hex digits replaced by `<redacted>`.
        message: String,
    },
    /// The `version` field is not [`MANIFEST_VERSION`].
    #[error(
        "manifest version {0} is not supported (this gateway reads version {MANIFEST_VERSION})"
    )]
    UnsupportedVersion(u32),
    /// One field of one meter entry is invalid.
    #[error("meter entry {index} ({serial}): field `{field}` {problem}")]
    Field {
        /// 0-based position of the entry in the file.
        index: usize,
        /// The entry's serial, or "no serial".
        serial: String,
        /// The field's name in the file (e.g. `nwk_skey`).
        field: &'static str,
        /// What is wrong with it.
        problem: FieldProblem,
    },
    /// Two entries have the same serial.
    #[error("meter entry {index}: serial {serial} already used by entry {first}")]
    DuplicateSerial {
        /// 0-based position of the later entry.
        index: usize,
        /// The repeated serial.
        serial: String,
        /// 0-based position of the first entry with it.
        first: usize,
    },
    /// Two entries have the same DevAddr.
    #[error("meter entry {index} ({serial}): DevAddr {dev_addr} already used by entry {first}")]
    DuplicateDevAddr {
        /// 0-based position of the later entry.
        index: usize,
        /// The later entry's serial.
        serial: String,
        /// The repeated address.
        dev_addr: DevAddr,
        /// 0-based position of the first entry with it.
        first: usize,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    version: u32,
    #[serde(default, rename = "meter")]
    meters: Vec<RawMeter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeter {
    serial: Option<String>,
    dev_addr: Option<String>,
    nwk_skey: Option<String>,
    app_skey: Option<String>,
    category: Option<String>,
    role: Option<String>,
    protocol: Option<String>,
    dlms_ek: Option<String>,
    dlms_ak: Option<String>,
    system_title: Option<String>,
}

impl MeterManifest {
    /// Parses and validates a manifest; the first problem found is returned.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: redact_hex_runs(e.message()),
        })?;
        if raw.version != MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion(raw.version));
        }
        let mut serials: HashMap<String, usize> = HashMap::new();
        let mut addrs: HashMap<DevAddr, usize> = HashMap::new();
        let mut meters = Vec::with_capacity(raw.meters.len());
        for (index, m) in raw.meters.into_iter().enumerate() {
            let entry = validate(index, m)?;
            if let Some(&first) = serials.get(&entry.serial) {
                return Err(ManifestError::DuplicateSerial {
                    index,
                    serial: entry.serial,
                    first,
                });
            }
            if let Some(&first) = addrs.get(&entry.keys.dev_addr) {
                return Err(ManifestError::DuplicateDevAddr {
                    index,
                    serial: entry.serial,
                    dev_addr: entry.keys.dev_addr,
                    first,
                });
            }
            serials.insert(entry.serial.clone(), index);
            addrs.insert(entry.keys.dev_addr, index);
            meters.push(entry);
        }
        Ok(MeterManifest { meters })
    }

    /// The meter with this DevAddr, if provisioned.
    pub fn by_dev_addr(&self, dev_addr: DevAddr) -> Option<&MeterEntry> {
        self.meters.iter().find(|m| m.keys.dev_addr == dev_addr)
    }
}

fn validate(index: usize, m: RawMeter) -> Result<MeterEntry, ManifestError> {
    let serial = m
        .serial
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    let fail = |field, problem| ManifestError::Field {
        index,
        serial: if serial.is_empty() {
            "no serial".to_owned()
        } else {
            serial.clone()
        },
        field,
        problem,
    };
    match &m.serial {
        None => return Err(fail("serial", FieldProblem::Missing)),
        Some(_) if serial.is_empty() => return Err(fail("serial", FieldProblem::Empty)),
        Some(_) => {}
    }
    let dev_addr = parse_hex::<4>(m.dev_addr.as_deref()).map_err(|p| fail("dev_addr", p))?;
    let key = |field, value: Option<&str>| {
        let bytes = parse_hex::<16>(value).map_err(|p| fail(field, p))?;
        if bytes == [0; 16] {
            return Err(fail(field, FieldProblem::AllZeroKey));
        }
        Ok(bytes)
    };
    let nwk_skey = SessionKey::new(key("nwk_skey", m.nwk_skey.as_deref())?);
    let app_skey = SessionKey::new(key("app_skey", m.app_skey.as_deref())?);
    let role = match m.role.as_deref().map(str::trim) {
        None => MeterRole::Consumer,
        Some(name) => {
            MeterRole::parse(name).ok_or_else(|| fail("role", FieldProblem::UnknownRole))?
        }
    };
    let dlms = dlms_security(DlmsFields {
        protocol: m.protocol.as_deref(),
        dlms_ek: m.dlms_ek.as_deref(),
        dlms_ak: m.dlms_ak.as_deref(),
        system_title: m.system_title.as_deref(),
    })
    .map_err(|(field, problem)| fail(field, problem))?;
    Ok(MeterEntry {
        role,
        dlms,
        keys: SessionKeys {
            dev_addr: DevAddr(u32::from_be_bytes(dev_addr)),
            nwk_skey,
            app_skey,
        },
        serial,
        category: m
            .category
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty()),
    })
}

/// Parses exactly `N` bytes of MSB-first hex; the problem never includes the value.
/// A meter's application-protocol fields as written (in a manifest, or central's API).
#[derive(Debug, Clone, Copy, Default)]
pub struct DlmsFields<'a> {
    /// `v1` (or absent) or `dlms`.
    pub protocol: Option<&'a str>,
    /// The DLMS global unicast encryption key, 32 hex digits.
    pub dlms_ek: Option<&'a str>,
    /// The DLMS authentication key, 32 hex digits.
    pub dlms_ak: Option<&'a str>,
    /// The meter's DLMS system title, 16 hex digits.
    pub system_title: Option<&'a str>,
}

/// The DLMS security the fields describe: None for a payload-v1 meter. The one validation of
/// these fields, so the manifest, central's API and the sync record agree on what is a key. The
/// error names the field and its problem, never its value.
pub fn dlms_security(
    fields: DlmsFields<'_>,
) -> Result<Option<MeterSecurity>, (&'static str, FieldProblem)> {
    let key = |field, value: Option<&str>| {
        let bytes = parse_hex::<16>(value).map_err(|p| (field, p))?;
        if bytes == [0; 16] {
            return Err((field, FieldProblem::AllZeroKey));
        }
        Ok(bytes)
    };
    match fields.protocol.map(str::trim) {
        None | Some("v1") => {
            let stray = [
                ("dlms_ek", fields.dlms_ek),
                ("dlms_ak", fields.dlms_ak),
                ("system_title", fields.system_title),
            ];
            match stray.iter().find(|(_, v)| v.is_some()) {
                Some((field, _)) => Err((*field, FieldProblem::OnlyForDlms)),
                None => Ok(None),
            }
        }
        Some("dlms") => Ok(Some(MeterSecurity {
            keys: Keys {
                encryption: key("dlms_ek", fields.dlms_ek)?,
                authentication: key("dlms_ak", fields.dlms_ak)?,
            },
            system_title: parse_hex::<8>(fields.system_title).map_err(|p| ("system_title", p))?,
        })),
        Some(_) => Err(("protocol", FieldProblem::UnknownProtocol)),
    }
}

fn parse_hex<const N: usize>(value: Option<&str>) -> Result<[u8; N], FieldProblem> {
    let text = value.ok_or(FieldProblem::Missing)?.trim();
    if text.is_empty() {
        return Err(FieldProblem::Empty);
    }
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FieldProblem::NotHex);
    }
    if text.len() != 2 * N {
        return Err(FieldProblem::WrongLength {
            expected_digits: 2 * N,
            got_digits: text.len(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| FieldProblem::NotHex)?;
    Ok(out)
}

fn line_of(text: &str, byte_offset: usize) -> usize {
    1 + text.as_bytes()[..byte_offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

/// Replaces every run of 16 or more hex digits with `<redacted>`: parser messages may quote values.
fn redact_hex_runs(message: &str) -> String {
    const MIN_RUN: usize = 16;
    let mut out = String::with_capacity(message.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= MIN_RUN {
            out.push_str("<redacted>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in message.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NWK: &str = "2B7E151628AED2A6ABF7158809CF4F3C";
    const APP: &str = "000102030405060708090A0B0C0D0E0F";

    fn manifest(entries: &str) -> String {
        format!("version = 1\n{entries}")
    }

    fn entry(serial: &str, dev_addr: &str) -> String {
        format!(
            "[[meter]]\nserial = \"{serial}\"\ndev_addr = \"{dev_addr}\"\nnwk_skey = \"{NWK}\"\napp_skey = \"{APP}\"\n"
        )
    }

    fn assert_no_key_material(err: &ManifestError) {
        let shown = format!("{err} / {err:?}").to_uppercase();
        for secret in [NWK, APP, &NWK[..16], &APP[16..]] {
            assert!(!shown.contains(secret), "key material in: {shown}");
        }
    }

    #[test]
    fn a_transformer_meter_is_marked_dt_and_a_misspelt_role_is_refused() {
        let text = manifest(&format!(
            "{}role = \"dt\"\n{}",
            entry("DT-01", "26011F2A"),
            entry("GG-0002", "26011f2b")
        ));
        let m = MeterManifest::parse(&text).unwrap();
        assert_eq!(m.meters[0].role, MeterRole::Transformer);
        assert_eq!(m.meters[1].role, MeterRole::Consumer);
        let bad = manifest(&format!(
            "{}role = \"transformer\"\n",
            entry("DT-01", "26011F2A")
        ));
        assert_eq!(
            MeterManifest::parse(&bad).unwrap_err().to_string(),
            "meter entry 0 (DT-01): field `role` is not `consumer` or `dt`"
        );
    }

    #[test]
    fn a_dlms_meter_carries_its_keys_and_system_title_and_half_a_dlms_entry_is_refused() {
        const EK: &str = "000102030405060708090A0B0C0D0E0F";
        const AK: &str = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF";
        let dlms = format!(
            "protocol = \"dlms\"\ndlms_ek = \"{EK}\"\ndlms_ak = \"{AK}\"\nsystem_title = \"4D4D4D0000BC614E\"\n"
        );
        let text = manifest(&format!(
            "{}{dlms}{}protocol = \"v1\"\n",
            entry("GG-0001", "26011F2A"),
            entry("GG-0002", "26011F2B")
        ));
        let m = MeterManifest::parse(&text).unwrap();
        let security = m.meters[0].dlms.as_ref().expect("a DLMS meter");
        assert_eq!(security.keys.encryption[15], 0x0F);
        assert_eq!(security.keys.authentication[0], 0xD0);
        assert_eq!(security.system_title, *b"MMM\0\0\xBC\x61\x4E");
        assert!(m.meters[1].dlms.is_none());
        assert!(!format!("{security:?}").contains("D0D1"));

        let refused = |extra: &str| {
            let text = manifest(&format!("{}{extra}", entry("GG-0001", "26011F2A")));
            let err = MeterManifest::parse(&text).unwrap_err();
            assert_no_key_material(&err);
            err.to_string()
        };
        assert_eq!(
            refused("protocol = \"dlms\"\n"),
            "meter entry 0 (GG-0001): field `dlms_ek` is missing"
        );
        assert_eq!(
            refused(&format!("protocol = \"dlms\"\ndlms_ek = \"{EK}\"\ndlms_ak = \"{AK}\"\nsystem_title = \"4D4D\"\n")),
            "meter entry 0 (GG-0001): field `system_title` has 4 hex digits, expected 16"
        );
        assert_eq!(
            refused(&format!("dlms_ek = \"{EK}\"\n")),
            "meter entry 0 (GG-0001): field `dlms_ek` is set, but the meter's `protocol` is not `dlms`"
        );
        assert_eq!(
            refused("protocol = \"iec\"\n"),
            "meter entry 0 (GG-0001): field `protocol` is not `v1` or `dlms`"
        );
    }

    #[test]
    fn parses_meters_with_optional_category() {
        let text = manifest(&format!(
            "{}category = \"agricultural\"\n{}",
            entry("GG-0001", "26011F2A"),
            entry("GG-0002", "26011f2b")
        ));
        let m = MeterManifest::parse(&text).unwrap();
        assert_eq!(m.meters.len(), 2);
        let first = &m.meters[0];
        assert_eq!(first.serial, "GG-0001");
        assert_eq!(first.keys.dev_addr, DevAddr(0x2601_1F2A));
        assert_eq!(
            first.keys.nwk_skey,
            SessionKey::new(hex::decode(NWK).unwrap().try_into().unwrap())
        );
        assert_eq!(
            first.keys.app_skey,
            SessionKey::new(core::array::from_fn(|i| i as u8))
        );
        assert_eq!(first.category.as_deref(), Some("agricultural"));
        assert_eq!(m.meters[1].category, None);
        assert_eq!(
            m.by_dev_addr(DevAddr(0x2601_1F2B))
                .map(|e| e.serial.as_str()),
            Some("GG-0002")
        );
        assert!(m.by_dev_addr(DevAddr(1)).is_none());
        assert!(MeterManifest::parse("version = 1\n")
            .unwrap()
            .meters
            .is_empty());
    }

    #[test]
    fn field_errors_name_entry_and_field_without_the_value() {
        let short_key = entry("GG-7", "26011F2A").replace(NWK, &NWK[..30]);
        let cases = [
            (
                short_key,
                "nwk_skey",
                FieldProblem::WrongLength {
                    expected_digits: 32,
                    got_digits: 30,
                },
            ),
            (
                entry("GG-7", "26011F2A").replace(APP, &APP.replace('F', "G")),
                "app_skey",
                FieldProblem::NotHex,
            ),
            (
                entry("GG-7", "2601"),
                "dev_addr",
                FieldProblem::WrongLength {
                    expected_digits: 8,
                    got_digits: 4,
                },
            ),
            (
                entry("GG-7", "26011F2A").replace(NWK, &"0".repeat(32)),
                "nwk_skey",
                FieldProblem::AllZeroKey,
            ),
            (
                entry("GG-7", "26011F2A").replace(&format!("app_skey = \"{APP}\"\n"), ""),
                "app_skey",
                FieldProblem::Missing,
            ),
        ];
        for (body, field, problem) in cases {
            let text = manifest(&format!("{}{body}", entry("GG-1", "26000001")));
            let err = MeterManifest::parse(&text).unwrap_err();
            assert_eq!(
                err,
                ManifestError::Field {
                    index: 1,
                    serial: "GG-7".into(),
                    field,
                    problem
                },
                "{text}"
            );
            assert!(
                err.to_string().starts_with("meter entry 1 (GG-7): field `"),
                "{err}"
            );
            assert_no_key_material(&err);
        }
        let no_serial = manifest(&entry("  ", "26011F2A"));
        assert_eq!(
            MeterManifest::parse(&no_serial).unwrap_err(),
            ManifestError::Field {
                index: 0,
                serial: "no serial".into(),
                field: "serial",
                problem: FieldProblem::Empty
            }
        );
    }

    #[test]
    fn duplicates_and_versions_are_refused() {
        let dup_serial = manifest(&format!(
            "{}{}",
            entry("GG-1", "26000001"),
            entry("GG-1", "26000002")
        ));
        assert_eq!(
            MeterManifest::parse(&dup_serial).unwrap_err(),
            ManifestError::DuplicateSerial {
                index: 1,
                serial: "GG-1".into(),
                first: 0
            }
        );
        let dup_addr = manifest(&format!(
            "{}{}",
            entry("GG-1", "26000001"),
            entry("GG-2", "26000001")
        ));
        let err = MeterManifest::parse(&dup_addr).unwrap_err();
        assert_eq!(
            err,
            ManifestError::DuplicateDevAddr {
                index: 1,
                serial: "GG-2".into(),
                dev_addr: DevAddr(0x2600_0001),
                first: 0
            }
        );
        assert!(err.to_string().contains("DevAddr 26000001"), "{err}");
        assert_eq!(
            MeterManifest::parse(&format!("version = 2\n{}", entry("GG-1", "26000001")))
                .unwrap_err(),
            ManifestError::UnsupportedVersion(2)
        );
    }

    #[test]
    fn syntax_errors_give_a_line_and_redact_quoted_keys() {
        // A key written as a bare (unquoted) word: the TOML parser fails on that line.
        let text = manifest(&entry("GG-1", "26000001").replace(&format!("\"{NWK}\""), NWK));
        let err = MeterManifest::parse(&text).unwrap_err();
        assert!(
            matches!(err, ManifestError::Syntax { line: 5, .. }),
            "{err:?}"
        );
        assert_no_key_material(&err);
        // A misspelt field is named so the issuer can fix it.
        let text = manifest(&entry("GG-1", "26000001").replace("nwk_skey", "nwkskey"));
        let err = MeterManifest::parse(&text).unwrap_err();
        assert!(err.to_string().contains("nwkskey"), "{err}");
        assert_no_key_material(&err);
    }

    #[test]
    fn redaction_removes_long_hex_runs_only() {
        assert_eq!(
            redact_hex_runs(&format!("invalid value `{NWK}` for DevAddr 26011F2A")),
            "invalid value `<redacted>` for DevAddr 26011F2A"
        );
        assert_eq!(redact_hex_runs("line 3 column 7"), "line 3 column 7");
    }
}
