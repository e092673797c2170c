//! Published LoRaWAN 1.0.x frames from other implementations, opened with gramgrid's frame layer.
//!
//! These frames were not produced by our encoder (nor by the `lorawan` crate), so they check MIC,
//! FRMPayload decryption, DevAddr byte order and FCnt handling against independent code.

use gramgrid_proto::frame::{
    check_fcnt, open_data_frame, parse_header, DevAddr, Direction, FcntCheck, FrameError,
    SessionKey, SessionKeys,
};
use gramgrid_proto::security::{FrameFilter, Rejection, Session};

fn key(hex_str: &str) -> SessionKey {
    SessionKey::new(hex::decode(hex_str).unwrap().try_into().unwrap())
}

/// Keys of the lora-packet (Node.js, anthonykirby/lora-packet) examples: DevAddr 49BE7DF1.
/// Source: anthonykirby/lora-packet, `__tests__/decrypt_test.ts` and `__tests__/mic_test.ts`
/// (also the README's decoding example).
fn lora_packet_keys() -> SessionKeys {
    SessionKeys {
        dev_addr: DevAddr(0x49BE_7DF1),
        nwk_skey: key("44024241ed4ce9a68c6a8bc055233fd3"),
        app_skey: key("ec925802ae430ca77fd3dd73cb2cc588"),
    }
}

fn frame(hex_str: &str) -> Vec<u8> {
    hex::decode(hex_str).unwrap()
}

#[test]
fn lora_packet_uplink_test_decrypts_to_ascii_test() {
    // lora-packet __tests__/decrypt_test.ts "should decrypt test payload"; MIC 2b11ff0d from mic_test.ts.
    let phy = frame("40F17DBE4900020001954378762B11FF0D");
    let h = parse_header(&phy).unwrap();
    assert_eq!(h.direction, Direction::Uplink);
    assert!(!h.confirmed);
    assert_eq!(h.dev_addr, DevAddr(0x49BE_7DF1));
    assert_eq!(h.fcnt16, 2);
    assert_eq!(h.fport, Some(1));
    assert_eq!(check_fcnt(Some(1), h.fcnt16), FcntCheck::Accept(2));
    assert_eq!(
        open_data_frame(&lora_packet_keys(), &phy, 2).unwrap(),
        b"test"
    );
}

#[test]
fn lora_packet_long_uplink_decrypts_across_aes_blocks() {
    // lora-packet __tests__/decrypt_test.ts "should decrypt large payload": 44 bytes, three AES blocks.
    let phy = frame(
        "40f17dbe490004000155332de41a11adc072553544429ce7787707d1c316e027e7e5e334263376affb8aa17ad30075293f28dea8a20af3c5e7",
    );
    assert_eq!(parse_header(&phy).unwrap().fcnt16, 4);
    let plain = open_data_frame(&lora_packet_keys(), &phy, 4).unwrap();
    assert_eq!(plain, b"The quick brown fox jumps over the lazy dog.");
}

#[test]
fn lora_packet_bad_mic_vector_is_rejected() {
    // lora-packet __tests__/mic_test.ts: "40F17DBE49000300012A3518AF" is valid, "...AA" has a bodged MIC.
    let good = frame("40F17DBE49000300012A3518AF");
    let bad = frame("40F17DBE49000300012A3518AA");
    assert_eq!(open_data_frame(&lora_packet_keys(), &good, 3).unwrap(), b"");
    assert_eq!(
        open_data_frame(&lora_packet_keys(), &bad, 3),
        Err(FrameError::BadMic)
    );
}

#[test]
fn lora_packet_downlink_ack_verifies() {
    // lora-packet __tests__/mic_test.ts "correct data packet MIC for ACK": unconfirmed down, FCtrl.ACK,
    // FCnt 2, FPort 1 with an empty FRMPayload, MIC f9d65d27.
    let phy = frame("60f17dbe4920020001f9d65d27");
    let h = parse_header(&phy).unwrap();
    assert_eq!(h.direction, Direction::Downlink);
    assert!(h.ack);
    assert_eq!(h.fcnt16, 2);
    assert_eq!(h.fport, Some(1));
    assert!(open_data_frame(&lora_packet_keys(), &phy, 2).is_ok());
    assert_eq!(
        open_data_frame(&lora_packet_keys(), &phy, 0x1_0002),
        Err(FrameError::BadMic)
    );
}

#[test]
fn lora_packet_frame_through_the_gateway_filter() {
    let phy = frame("40F17DBE4900020001954378762B11FF0D");
    let lookup = |addr: DevAddr| {
        (addr == DevAddr(0x49BE_7DF1)).then(|| Session {
            keys: lora_packet_keys(),
            last_fcnt: Some(1),
        })
    };
    let accepted = FrameFilter::gateway().check(&phy, lookup).unwrap();
    assert_eq!(accepted.fcnt, 2);
    assert_eq!(accepted.payload, b"test");
    // The same frame after the counter moved on (e.g. restored from the store) is a replay.
    let replayed = FrameFilter::gateway().check(&phy, |_| {
        Some(Session {
            keys: lora_packet_keys(),
            last_fcnt: Some(2),
        })
    });
    assert!(matches!(
        replayed,
        Err(Rejection::ReplayedFcnt {
            fcnt: 2,
            last: 2,
            ..
        })
    ));
}

/// lorawan crate (lora-rs/lora-rs, `lorawan/tests/lorawan.rs`, fns `phy_dataup_payload` and
/// `phy_datadown_payload`): NwkSKey 02..02, AppSKey 01..01, DevAddr 01020304.
fn lora_rs_keys() -> SessionKeys {
    SessionKeys {
        dev_addr: DevAddr(0x0102_0304),
        nwk_skey: SessionKey::new([2; 16]),
        app_skey: SessionKey::new([1; 16]),
    }
}

#[test]
fn lora_rs_uplink_hello() {
    let phy = [
        0x40, 0x04, 0x03, 0x02, 0x01, 0x80, 0x01, 0x00, 0x01, 0xa6, 0x94, 0x64, 0x26, 0x15, 0xd6,
        0xc3, 0xb5, 0x82,
    ];
    assert_eq!(parse_header(&phy).unwrap().dev_addr, DevAddr(0x0102_0304));
    assert_eq!(open_data_frame(&lora_rs_keys(), &phy, 1).unwrap(), b"hello");
}

#[test]
fn lora_rs_confirmed_downlink_with_32_bit_counter() {
    // FCnt 76543 = 0x0001_2AFF: only 0x2AFF is on air; the MIC needs the full counter.
    let phy = [
        0xa0, 0x04, 0x03, 0x02, 0x01, 0x80, 0xff, 0x2a, 0x2a, 0x0a, 0xf1, 0xa3, 0x6a, 0x05, 0xd0,
        0x12, 0x5f, 0x88, 0x5d, 0x88, 0x1d, 0x49, 0xe1,
    ];
    let h = parse_header(&phy).unwrap();
    assert!(h.confirmed);
    assert_eq!(h.direction, Direction::Downlink);
    assert_eq!(h.fport, Some(42));
    let FcntCheck::Accept(fcnt) = check_fcnt(Some(76_000), h.fcnt16) else {
        panic!("counter not accepted");
    };
    assert_eq!(fcnt, 76_543);
    assert_eq!(
        open_data_frame(&lora_rs_keys(), &phy, fcnt).unwrap(),
        b"hello lora"
    );
}
