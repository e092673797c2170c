//! Path loss between two radios: configurable median models plus seeded log-normal shadowing.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How signal strength falls with distance. The rural default is the village case in DESIGN.md.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum PathLossModel {
    /// Okumura-Hata with the suburban correction plus a building-entry loss: a gateway on a
    /// substation mast and meters inside houses.
    HataSuburban {
        /// Carrier frequency in MHz.
        frequency_mhz: f64,
        /// Height of the gateway antenna (base station) in metres.
        gateway_height_m: f64,
        /// Height of the meter antenna in metres.
        meter_height_m: f64,
        /// Extra loss through the house walls, in dB.
        building_loss_db: f64,
        /// Standard deviation of the log-normal shadowing, in dB.
        shadowing_sigma_db: f64,
    },
    /// LoRaSim's log-distance model (Bor et al. 2016): urban, both ends low.
    LogDistance {
        /// Reference distance in metres.
        d0_m: f64,
        /// Path loss at the reference distance, in dB.
        pl_d0_db: f64,
        /// Path-loss exponent.
        gamma: f64,
        /// Standard deviation of the log-normal shadowing, in dB.
        shadowing_sigma_db: f64,
    },
}

impl Default for PathLossModel {
    fn default() -> Self {
        Self::rural()
    }
}

impl PathLossModel {
    /// Okumura-Hata suburban, 866 MHz, 15 m mast, 2 m meter, +10 dB building entry, sigma 8 dB.
    pub fn rural() -> Self {
        Self::HataSuburban {
            frequency_mhz: 866.0,
            gateway_height_m: 15.0,
            meter_height_m: 2.0,
            building_loss_db: 10.0,
            shadowing_sigma_db: 8.0,
        }
    }

    /// LoRaSim's constants: d0 = 40 m, PL(d0) = 127.41 dB, gamma = 2.08, sigma = 3.57 dB.
    pub fn urban() -> Self {
        Self::LogDistance {
            d0_m: 40.0,
            pl_d0_db: 127.41,
            gamma: 2.08,
            shadowing_sigma_db: 3.57,
        }
    }

    /// Median loss in dB at `distance_m` (no shadowing).
    pub fn median_db(&self, distance_m: f64) -> f64 {
        match *self {
            Self::HataSuburban {
                frequency_mhz: f,
                gateway_height_m: hb,
                meter_height_m: hm,
                building_loss_db,
                ..
            } => {
                // Hata is fitted from 1 km; below that we keep the slope but never go under 1 m.
                let d_km = (distance_m.max(1.0)) / 1000.0;
                let lf = f.log10();
                let a_hm = (1.1 * lf - 0.7) * hm - (1.56 * lf - 0.8);
                let urban = 69.55 + 26.16 * lf - 13.82 * hb.log10() - a_hm
                    + (44.9 - 6.55 * hb.log10()) * d_km.log10();
                let suburban = urban - 2.0 * (f / 28.0).log10().powi(2) - 5.4;
                suburban + building_loss_db
            }
            Self::LogDistance {
                d0_m,
                pl_d0_db,
                gamma,
                ..
            } => pl_d0_db + 10.0 * gamma * (distance_m.max(1.0) / d0_m).log10(),
        }
    }

    /// Standard deviation of the log-normal shadowing.
    pub fn sigma_db(&self) -> f64 {
        match *self {
            Self::HataSuburban {
                shadowing_sigma_db, ..
            }
            | Self::LogDistance {
                shadowing_sigma_db, ..
            } => shadowing_sigma_db,
        }
    }
}

/// Shadowing of the path between two points (metres) in dB: fixed for the path (the houses do not
/// move), shared by radios at the same spot, independent of the order in which paths are first
/// used, and the same in every process that shares the seed.
pub fn shadowing_db(seed: u64, a: (f64, f64), b: (f64, f64), sigma_db: f64) -> f64 {
    // whole decimetres: positions that print the same are the same spot
    let key = |p: (f64, f64)| [(p.0 * 10.0).round() as i64, (p.1 * 10.0).round() as i64];
    let (ka, kb) = (key(a), key(b));
    let (lo, hi) = if ka <= kb { (ka, kb) } else { (kb, ka) };
    let bytes: Vec<u8> = lo
        .iter()
        .chain(hi.iter())
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(&bytes));
    // Box-Muller: two uniforms in (0, 1] give one standard normal.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    sigma_db * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// FNV-1a: a hash that is stable across Rust versions and processes, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hata_suburban_at_2km_matches_hand_calculation() {
        // 69.55 + 26.16 log 866 - 13.82 log 15 - a(2) + (44.9 - 6.55 log 15) log 2
        // - 2 (log 866/28)^2 - 5.4 + 10 = 140.2 dB
        let pl = PathLossModel::rural().median_db(2000.0);
        assert!((pl - 140.2).abs() < 0.2, "{pl}");
    }

    #[test]
    fn lorasim_reference_point() {
        let m = PathLossModel::urban();
        assert!((m.median_db(40.0) - 127.41).abs() < 1e-9);
        assert!((m.median_db(400.0) - (127.41 + 20.8)).abs() < 1e-9);
    }

    #[test]
    fn loss_grows_with_distance() {
        for m in [PathLossModel::rural(), PathLossModel::urban()] {
            let mut last = f64::MIN;
            for d in (1..100).map(|k| f64::from(k) * 50.0) {
                let pl = m.median_db(d);
                assert!(pl > last);
                last = pl;
            }
        }
    }

    #[test]
    fn shadowing_is_per_link_symmetric_and_has_the_configured_spread() {
        let (gw, m) = ((0.0, 0.0), (120.5, -33.0));
        assert_eq!(shadowing_db(7, gw, m, 8.0), shadowing_db(7, m, gw, 8.0));
        assert_ne!(shadowing_db(7, gw, m, 8.0), shadowing_db(8, gw, m, 8.0));
        let xs: Vec<f64> = (0..4000)
            .map(|i| shadowing_db(1, gw, (f64::from(i), 50.0), 8.0))
            .collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
        assert!(mean.abs() < 0.5, "mean {mean}");
        assert!((sd - 8.0).abs() < 0.5, "sd {sd}");
    }
}
