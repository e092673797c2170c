//! Semtech LoRa time-on-air (AN1200.13): how long a frame occupies the channel.

use super::Modulation;
use std::time::Duration;

/// Symbol duration in microseconds (2^SF / BW).
pub fn symbol_us(m: &Modulation) -> f64 {
    f64::from(1u32 << m.spreading_factor) * 1e6 / f64::from(m.bandwidth_hz)
}

/// Low-data-rate optimisation is mandated once a symbol lasts 16 ms or more (SF11/SF12 at BW125).
pub fn low_data_rate_optimize(m: &Modulation) -> bool {
    symbol_us(m) >= 16_000.0
}

/// Preamble plus sync word: (n + 4.25) symbols.
pub fn preamble_us(m: &Modulation) -> f64 {
    (f64::from(m.preamble_symbols) + 4.25) * symbol_us(m)
}

/// Number of payload symbols, including the 8 that carry the explicit header.
pub fn payload_symbols(m: &Modulation, payload_len: usize) -> u32 {
    let sf = i64::from(m.spreading_factor);
    let de = i64::from(low_data_rate_optimize(m));
    let ih = i64::from(!m.explicit_header);
    let crc = i64::from(m.crc_on);
    let cr = i64::from(m.coding_rate);
    let len = i64::try_from(payload_len).unwrap_or(i64::MAX / 16);
    let num = 8 * len - 4 * sf + 28 + 16 * crc - 20 * ih;
    let den = 4 * (sf - 2 * de);
    let blocks = if num > 0 { (num + den - 1) / den } else { 0 };
    u32::try_from(8 + blocks * cr).unwrap_or(u32::MAX)
}

/// Time on air of a frame of `payload_len` bytes.
pub fn time_on_air(m: &Modulation, payload_len: usize) -> Duration {
    let us = preamble_us(m) + f64::from(payload_symbols(m, payload_len)) * symbol_us(m);
    Duration::from_nanos((us * 1000.0).round() as u64)
}

/// When the explicit header has been demodulated, measured from the start of the frame:
/// a receiver that got this far reports a CRC error, not a header error, when the rest is lost.
pub fn header_end(m: &Modulation) -> Duration {
    let header_symbols = if m.explicit_header { 8.0 } else { 0.0 };
    Duration::from_nanos(((preamble_us(m) + header_symbols * symbol_us(m)) * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sf(sf: u8) -> Modulation {
        Modulation {
            spreading_factor: sf,
            ..Modulation::default()
        }
    }

    #[test]
    fn table_24_byte_frame_bw125_cr45() {
        let expected_ms = [
            (7, 61.7),
            (8, 113.2),
            (9, 205.8),
            (10, 370.7),
            (11, 823.3),
            (12, 1482.8),
        ];
        for (s, ms) in expected_ms {
            let got = time_on_air(&sf(s), 24).as_secs_f64() * 1000.0;
            assert!((got - ms).abs() < 0.05, "SF{s}: got {got:.2} ms, want {ms}");
        }
    }

    #[test]
    fn ldro_only_at_sf11_and_sf12_for_bw125() {
        let on: Vec<u8> = (7..=12)
            .filter(|&s| low_data_rate_optimize(&sf(s)))
            .collect();
        assert_eq!(on, vec![11, 12]);
    }

    #[test]
    fn agrees_with_lora_modulation_crate() {
        use lora_modulation::{Bandwidth, BaseBandModulationParams, CodingRate, SpreadingFactor};
        let sfs = [
            (7, SpreadingFactor::_7),
            (8, SpreadingFactor::_8),
            (9, SpreadingFactor::_9),
            (10, SpreadingFactor::_10),
            (11, SpreadingFactor::_11),
            (12, SpreadingFactor::_12),
        ];
        let crs = [
            (5, CodingRate::_4_5),
            (6, CodingRate::_4_6),
            (7, CodingRate::_4_7),
            (8, CodingRate::_4_8),
        ];
        for (s, lsf) in sfs {
            for (c, lcr) in crs {
                for len in [0usize, 1, 13, 24, 51, 115, 222, 255] {
                    // lora-modulation's div_ceil rounds 0 and negatives up to 1 (an empty frame at
                    // SF11/SF12): the formula's max(ceil(..), 0) gives 0 there, so skip those.
                    if 8 * len as i64 + 44 <= 4 * i64::from(s) {
                        continue;
                    }
                    let m = Modulation {
                        spreading_factor: s,
                        coding_rate: c,
                        ..Modulation::default()
                    };
                    let theirs = BaseBandModulationParams::new(lsf, Bandwidth::_125KHz, lcr)
                        .time_on_air_us(Some(8), true, len as u8);
                    let ours = time_on_air(&m, len).as_micros() as i64;
                    // the crate works in whole microseconds per symbol; allow its rounding
                    assert!(
                        (ours - i64::from(theirs)).abs() <= 2,
                        "SF{s} CR4/{c} len {len}: ours {ours} us, lora-modulation {theirs} us"
                    );
                }
            }
        }
    }

    #[test]
    fn longer_frames_never_take_less_time() {
        for s in 7..=12 {
            let m = sf(s);
            let mut last = Duration::ZERO;
            for len in 0..=255 {
                let t = time_on_air(&m, len);
                assert!(t >= last);
                last = t;
            }
        }
    }
}
