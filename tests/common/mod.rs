//! Helpers shared by the radio integration tests.

use gramgrid_air::air::{Air, AirConfig};
use gramgrid_air::pathloss::PathLossModel;

/// LoRaSim's urban log-distance model without shadowing, so received power is exact:
/// 14 dBm reaches SF7's -124 dBm at about 130 m. Keeps every frame record.
pub fn exact_air() -> Air {
    Air::new(AirConfig {
        seed: 1,
        path_loss: PathLossModel::LogDistance {
            d0_m: 40.0,
            pl_d0_db: 127.41,
            gamma: 2.08,
            shadowing_sigma_db: 0.0,
        },
        keep_records: true,
    })
}
