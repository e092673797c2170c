//! Fuzz targets: one function per decoder that takes bytes from outside the gateway or central.
//!
//! A target must never panic, except where it checks a property; then a panic is a finding. Where
//! random bytes would rarely get past a checksum or a cipher, the target seals its input first: the
//! sync targets compress the fuzzed postcard bytes with zstd, and the DLMS answer target ciphers
//! the fuzzed APDU with the meter's keys, so the fuzzer works on what lies behind them.
//!
//! `tests/fuzz` runs each target under AFL++ (`cargo afl`) from the seed corpus in `corpus/NAME`;
//! a crash it finds is kept in `regressions/NAME`, and the tests below replay both directories.

use chrono::{DateTime, Utc};
use gramgrid_proto::dlms::{self, cipher, client::DlmsClient, wrapper::Wrapped};
use gramgrid_proto::frame::{DevAddr, Direction, SessionKey, SessionKeys};
use gramgrid_proto::manifest::MeterManifest;
use gramgrid_proto::payload::{Downlink, Uplink};
use gramgrid_proto::security::{FrameFilter, Session};
use gramgrid_proto::voucher::{self, PublishedKey, SigningSecret};
use gramgrid_proto::wire::{self, UploadResponse};

/// A fuzz target: takes one input.
pub type Target = fn(&[u8]);

/// Every target, by the name `tests/fuzz` and the corpus directories use.
pub const TARGETS: &[(&str, Target)] = &[
    ("lorawan_uplink", lorawan_uplink),
    ("payload_v1", payload_v1),
    ("sync_request", sync_request),
    ("sync_response", sync_response),
    ("voucher_code", voucher_code),
    ("meter_manifest", meter_manifest),
    ("dlms_frame", dlms_frame),
    ("dlms_answer", dlms_answer),
];

/// The target of that name.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The meter the frame targets know: DevAddr 26011F2A with fixed ABP keys.
pub fn meter_keys() -> SessionKeys {
    SessionKeys {
        dev_addr: DevAddr(0x2601_1F2A),
        nwk_skey: SessionKey::new(*b"fuzz-nwk-skey-01"),
        app_skey: SessionKey::new(*b"fuzz-app-skey-01"),
    }
}

/// An uplink PHYPayload through the gateway's frame filter (last counter 5), then its FRMPayload
/// through payload v1.
pub fn lorawan_uplink(data: &[u8]) {
    let keys = meter_keys();
    let verdict = FrameFilter::gateway().check(data, |addr| {
        (addr == keys.dev_addr).then_some(Session {
            keys: keys.clone(),
            last_fcnt: Some(5),
        })
    });
    if let Ok(frame) = verdict {
        let _ = Uplink::decode_frame(frame.fport, &frame.payload);
    }
}

/// Payload v1 both ways; whatever decodes must encode back to the same bytes (one encoding per
/// message).
pub fn payload_v1(data: &[u8]) {
    if let Ok(uplink) = Uplink::decode(data) {
        assert_eq!(uplink.encode().as_deref().ok(), Some(data), "{uplink:?}");
    }
    if let Ok(downlink) = Downlink::decode(data) {
        assert_eq!(
            downlink.encode().as_deref().ok(),
            Some(data),
            "{downlink:?}"
        );
    }
}

/// A sync request's postcard bytes, compressed as a gateway would: a request of today's protocol
/// that decodes re-encodes to the same request, and reading blocks' times agree with their lengths.
pub fn sync_request(data: &[u8]) {
    let Ok(body) = zstd::bulk::compress(data, 1) else {
        return;
    };
    if let Ok(request) = wire::decode_request(&body) {
        if let Some(batch) = &request.readings {
            for block in &batch.blocks {
                assert_eq!(block.times().count(), block.len());
            }
        }
        // Only today's shape is ever encoded; an older protocol's body is decoded, not made.
        if request.protocol == wire::PROTOCOL_VERSION {
            let again = wire::encode(&request).expect("a decoded request encodes");
            let again = wire::decode_request(&again).expect("a re-encoded request decodes");
            assert_same(&again, &request);
        }
    }
}

/// A sync response's postcard bytes, compressed as central would: what decodes re-encodes to
/// the same response. (It found the tariff with a NaN duty that stopped a gateway from opening:
/// `regressions/sync_response`, and the gateway's test
/// `a_published_tariff_that_cannot_be_kept_is_refused_alone_and_the_gateway_still_opens`.)
pub fn sync_response(data: &[u8]) {
    let Ok(body) = zstd::bulk::compress(data, 1) else {
        return;
    };
    if let Ok(response) = wire::decode::<UploadResponse>(&body) {
        let again = wire::encode(&response).expect("a decoded response encodes");
        let again = wire::decode::<UploadResponse>(&again).expect("a re-encoded response decodes");
        assert_same(&again, &response);
    }
}

/// The same message: compared by their encodings, so a NaN (which central never publishes, and
/// the gateway refuses to keep) equals itself.
fn assert_same<T: serde::Serialize + std::fmt::Debug>(again: &T, first: &T) {
    assert_eq!(
        postcard::to_stdvec(again).ok(),
        postcard::to_stdvec(first).ok(),
        "{first:?}"
    );
}

/// The signing secret behind [`voucher_key`] (for the corpus).
pub fn voucher_secret() -> SigningSecret {
    SigningSecret::from_hex(
        3,
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    )
    .expect("a valid Ed25519 secret")
}

/// The published key the voucher target verifies against.
pub fn voucher_key() -> PublishedKey {
    PublishedKey {
        key_id: 3,
        public_key: voucher_secret().public_key_hex(),
        issue_from: DateTime::UNIX_EPOCH,
        issue_until: None,
        revoked: false,
    }
}

/// When the voucher target redeems: 2026-12-01 06:00 UTC.
pub fn voucher_now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_796_104_800, 0).expect("a valid time")
}

/// A voucher code typed at the gateway, verified against one published key.
pub fn voucher_code(data: &[u8]) {
    let Ok(code) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(voucher) = voucher::verify(&[voucher_key()], code, voucher_now()) {
        assert!(!voucher.account.is_empty() && voucher.amount_paise >= 0);
    }
}

/// A meter manifest file: a parse error never shows a session key. (It names the entry by its
/// serial, which is the operator's own text and may look like anything, so serials are left out
/// of the check.)
pub fn meter_manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Err(error) = MeterManifest::parse(text) else {
        return;
    };
    let mut shown = error.to_string();
    let entries = text.parse::<toml::Table>().ok();
    let meters = entries
        .as_ref()
        .and_then(|t| t.get("meter"))
        .and_then(|m| m.as_array());
    for entry in meters.into_iter().flatten() {
        if let Some(serial) = entry.get("serial").and_then(|s| s.as_str()) {
            shown = shown.replace(serial.trim(), "<serial>");
        }
    }
    let longest_hex_run = shown
        .split(|c: char| !c.is_ascii_hexdigit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(longest_hex_run < 16, "{shown}");
}

/// A DLMS frame in FRMPayload: the wrapper, then the APDU as xDLMS, as ACSE, and as A-XDR data;
/// what decodes re-encodes to the same bytes.
pub fn dlms_frame(data: &[u8]) {
    let apdu = match Wrapped::decode(data) {
        Ok(wrapped) => wrapped.apdu,
        Err(_) => data,
    };
    if let Ok(decoded) = dlms::apdu::Apdu::decode(apdu) {
        assert_eq!(decoded.to_bytes(), apdu, "{decoded:?}");
    }
    if let Ok(decoded) = dlms::axdr::Data::decode(apdu) {
        assert_eq!(decoded.to_bytes(), apdu, "{decoded:?}");
    }
    let _ = dlms::acse::Aarq::decode(apdu);
    let _ = dlms::acse::Aare::decode(apdu);
    let _ = dlms::acse::Release::decode_rlre(apdu);
}

/// The DLMS meter the answer target plays: its keys and system title, and the gateway's.
pub fn dlms_parties() -> (cipher::Keys, [u8; 8], [u8; 8]) {
    let keys = cipher::Keys {
        encryption: *b"fuzz-dlms-ek-001",
        authentication: *b"fuzz-dlms-ak-001",
    };
    (keys, *b"MTR00042", *b"GGfuzz01")
}

/// An answer from the meter to a profile read, as the gateway's DLMS client takes it: the fuzzed
/// bytes are the plain APDU, ciphered with the meter's keys (glo, or general-glo when the first
/// byte is odd) and wrapped, so the client's checks after decryption are what is fuzzed.
pub fn dlms_answer(data: &[u8]) {
    let Some((&mode, apdu)) = data.split_first() else {
        return;
    };
    let (keys, meter, gateway) = dlms_parties();
    let mut client = DlmsClient::new(keys.clone(), meter, gateway);
    let since = DateTime::from_timestamp(1_796_083_200, 0).expect("a valid time");
    if client.read_intervals(since, 4).is_err() {
        return;
    }
    let sc = cipher::SecurityControl::AUTHENTICATED_ENCRYPTED;
    let ciphered = if mode % 2 == 1 {
        cipher::protect_general_glo(&keys, &meter, 1, sc, apdu)
    } else {
        match cipher::protect(&keys, &meter, 1, sc, apdu) {
            Ok(ciphered) => ciphered,
            Err(_) => return,
        }
    };
    let frame = Wrapped {
        source: dlms::wrapper::SERVER_MANAGEMENT,
        destination: dlms::wrapper::CLIENT_MANAGEMENT,
        apdu: &ciphered,
    };
    if let Ok(bytes) = frame.to_bytes() {
        let _ = client.on_uplink(&bytes);
    }
}

/// Seals a payload v1 uplink as meter 26011F2A would (for the corpus).
pub fn sealed_uplink(fcnt: u32, body: &[u8]) -> Vec<u8> {
    gramgrid_proto::frame::seal_v1(&meter_keys(), Direction::Uplink, fcnt, body)
        .expect("a sealable frame")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn crate_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
    }

    /// Every seed and every crash ever found runs through its target without a finding: a
    /// crash kept in `regressions/` is a regression test from then on.
    #[test]
    fn the_seed_corpus_and_every_kept_crash_replay_cleanly() {
        for (name, target) in TARGETS {
            let seeds = files(&crate_dir().join("corpus").join(name));
            assert!(!seeds.is_empty(), "no seeds for {name}");
            let kept = files(&crate_dir().join("regressions").join(name));
            for file in seeds.iter().chain(&kept) {
                let data = std::fs::read(file).expect("a readable corpus file");
                target(&data);
            }
        }
    }

    /// The seeds reach past the first check of their decoder (a corpus of rejects would teach
    /// the fuzzer nothing).
    #[test]
    fn the_seeds_are_valid_inputs() {
        let seeds = |name: &str| files(&crate_dir().join("corpus").join(name));
        for file in seeds("payload_v1") {
            let data = std::fs::read(&file).unwrap();
            assert!(
                Uplink::decode(&data).is_ok() || Downlink::decode(&data).is_ok(),
                "{file:?}"
            );
        }
        for file in seeds("sync_request") {
            let body = zstd::bulk::compress(&std::fs::read(&file).unwrap(), 1).unwrap();
            assert!(wire::decode_request(&body).is_ok(), "{file:?}");
        }
        for file in seeds("dlms_frame") {
            let data = std::fs::read(&file).unwrap();
            let apdu = Wrapped::decode(&data).map(|w| w.apdu).unwrap_or(&data[..]);
            assert!(dlms::apdu::Apdu::decode(apdu).is_ok(), "{file:?}");
        }
        for file in seeds("voucher_code") {
            let code = String::from_utf8(std::fs::read(&file).unwrap()).unwrap();
            assert!(
                voucher::verify(&[voucher_key()], &code, voucher_now()).is_ok(),
                "{file:?}"
            );
        }
        for file in seeds("lorawan_uplink") {
            let data = std::fs::read(&file).unwrap();
            let keys = meter_keys();
            let verdict = FrameFilter::gateway().check(&data, |_| {
                Some(Session {
                    keys: keys.clone(),
                    last_fcnt: Some(5),
                })
            });
            assert!(verdict.is_ok(), "{file:?}: {verdict:?}");
        }
    }

    /// Writes the seed corpus (run by hand after a format changes:
    /// `cargo test -p gramgrid-fuzz -- --ignored write_the_seed_corpus`).
    #[test]
    #[ignore = "writes crates/fuzz/corpus; run by hand"]
    fn write_the_seed_corpus() {
        let write = |name: &str, file: &str, data: &[u8]| {
            let dir = crate_dir().join("corpus").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), data).unwrap();
        };
        let hex = |text: &str| -> Vec<u8> {
            let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            (0..digits.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
                .collect()
        };
        // docs/protocol.md's worked examples.
        let report = hex("01 01 F1 6D 0A 6B DC 0B FD 08 01 03 60 72 1E 00 01 03 87 AD 4B FA 01 FA 01 01 04 0A AC 02 01 AC 02 00");
        let net = hex("01 02 F1 6D 0A 6B DC 0B FD 08 01 02 60 72 1E 00 01 87 AD 4B C0 B8 02 FA 01 AC 02 00 00");
        write("payload_v1", "meter-report", &report);
        write("payload_v1", "net-meter-report", &net);
        write("payload_v1", "relay-command", &hex("01 81 AC 02 00"));
        write("payload_v1", "display-update", &hex("01 82 AF EA 01 02 FF"));
        write("lorawan_uplink", "meter-report", &sealed_uplink(6, &report));
        write(
            "lorawan_uplink",
            "net-meter-report",
            &sealed_uplink(7, &net),
        );

        // The previous format's golden bodies, and the same request in today's shape.
        let golden = |file: &str| {
            std::fs::read(crate_dir().join("../../tests/data/wire-v1").join(file)).unwrap()
        };
        let raw = |body: &[u8]| zstd::bulk::decompress(body, wire::MAX_BODY_BYTES).unwrap();
        let old_request = golden("upload-request.zst");
        write("sync_request", "protocol-1", &raw(&old_request));
        let mut request = wire::decode_request(&old_request).unwrap();
        request.protocol = wire::PROTOCOL_VERSION;
        write(
            "sync_request",
            "current",
            &raw(&wire::encode(&request).unwrap()),
        );
        write(
            "sync_response",
            "protocol-1",
            &raw(&golden("upload-response.zst")),
        );

        let issued_at = voucher_now() - chrono::Duration::days(1);
        let code = voucher_secret()
            .issue(&gramgrid_proto::voucher::Voucher {
                key_id: 3,
                voucher_id: 0x0123_4567_89ab_cdef,
                account: "ACC-0042".into(),
                amount_paise: 20_000,
                issued_at,
                expires_at: issued_at + chrono::Duration::days(30),
            })
            .unwrap();
        write("voucher_code", "valid", code.as_bytes());

        write(
            "meter_manifest",
            "two-meters",
            b"version = 1\n[[meter]]\nserial = \"GG-0001\"\ndev_addr = \"26011F2A\"\nnwk_skey = \"2B7E151628AED2A6ABF7158809CF4F3C\"\napp_skey = \"000102030405060708090A0B0C0D0E0F\"\ncategory = \"domestic\"\n[[meter]]\nserial = \"DT-01\"\nrole = \"dt\"\ndev_addr = \"26011F2B\"\nnwk_skey = \"2B7E151628AED2A6ABF7158809CF4F3D\"\napp_skey = \"000102030405060708090A0B0C0D0E10\"\n",
        );

        // docs/dlms.md's wrapped clock read, and a profile read by range.
        write(
            "dlms_frame",
            "wrapped-get-clock",
            &hex("0001 0010 0001 000d c0 01 00 0008 0000010000ff 02 00"),
        );
        write(
            "dlms_frame",
            "get-profile-by-range",
            &hex("c0 01 c1 0007 0100630100ff 02 01 01 0204 0204 120008 0906 0000010000ff 0f02 120000 090c 07e8030f05 00000000 feb6 00 090c 07e8030f05 01000000 feb6 00 0100"),
        );
        // A get-response of two profile rows (capture 00:15 and 00:30 IST), for the client's
        // first request (invoke id 0xC1); mode byte 0 = glo, 1 = general-glo.
        let row = |minute: u8, import: u32| {
            dlms::axdr::Data::Structure(vec![
                dlms::axdr::Data::OctetString(
                    [0x07, 0xEA, 12, 1, 2, 0, minute, 0, 0, 0xFE, 0xB6, 0].to_vec(),
                ),
                dlms::axdr::Data::DoubleLongUnsigned(import),
                dlms::axdr::Data::DoubleLongUnsigned(0),
            ])
        };
        let rows = dlms::axdr::Data::Array(vec![row(15, 1_234_567), row(30, 1_234_817)]);
        let mut answer = vec![0x00, 0xC4, 0x01, 0xC1, 0x00];
        answer.extend(rows.to_bytes());
        write("dlms_answer", "two-rows", &answer);
        write("dlms_frame", "get-response-two-rows", &answer[1..]);
    }
}
