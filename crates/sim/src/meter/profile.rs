//! Load profiles per tariff category: mean power by local hour, with noise per interval.

use chrono::{DateTime, Duration, Timelike, Utc};
use gramgrid_core::tariff::Category;
use rand::Rng;

/// Mean power (W) at local (IST) hour `h`: domestic peaks in the evening, commercial in the
/// daytime, agricultural pumps run in the hours the feeder gives three-phase supply.
fn mean_w(category: Category, h: u32) -> u32 {
    match category {
        Category::Domestic => match h {
            18..=22 => 900,
            6..=8 => 450,
            23 | 0..=5 => 120,
            _ => 250,
        },
        Category::Commercial => match h {
            9..=19 => 1500,
            _ => 80,
        },
        // A 5 hp pump: 3.7 kW in its two daily supply windows.
        Category::Agricultural => match h {
            5..=8 | 22..=23 | 0 => 3700,
            _ => 10,
        },
    }
}

/// The local (IST) hour of `at`.
pub fn local_hour(at: DateTime<Utc>) -> u32 {
    (at + Duration::minutes(330)).hour()
}

/// Mean power now, for a report's instantaneous value.
pub fn power_w(category: Category, at: DateTime<Utc>) -> u32 {
    mean_w(category, local_hour(at))
}

/// Mean energy (Wh) a household of `category` uses in a day.
pub fn mean_daily_wh(category: Category) -> u64 {
    (0..24).map(|h| u64::from(mean_w(category, h))).sum()
}

/// Energy (Wh) a rooftop array of `peak_w` generates in the 15-minute interval starting at
/// `start`, on a clear day: a half sine from 06:00 to 18:00 local time, at its peak at noon.
pub fn solar_wh(peak_w: u32, start: DateTime<Utc>) -> u64 {
    let local = start + Duration::minutes(330 + 7); // the interval's middle
    let hours = f64::from(local.hour()) + f64::from(local.minute()) / 60.0;
    if !(6.0..18.0).contains(&hours) {
        return 0;
    }
    let power = f64::from(peak_w) * (std::f64::consts::PI * (hours - 6.0) / 12.0).sin();
    (power / 4.0).round() as u64
}

/// Energy of the 15-minute interval starting at `start`: the hour's mean ±30 %.
pub fn interval_wh(category: Category, start: DateTime<Utc>, rng: &mut impl Rng) -> u64 {
    let mean = f64::from(mean_w(category, local_hour(start))) / 4.0;
    (mean * rng.random_range(0.7..1.3)).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn each_category_peaks_when_it_should() {
        let day = DateTime::from_timestamp(1_795_824_000, 0).unwrap(); // 05:30 IST
        let at_ist = |h: i64| day + Duration::hours(h) - Duration::minutes(330);
        assert!(power_w(Category::Domestic, at_ist(20)) > power_w(Category::Domestic, at_ist(3)));
        assert!(
            power_w(Category::Commercial, at_ist(12)) > power_w(Category::Commercial, at_ist(22))
        );
        assert!(
            power_w(Category::Agricultural, at_ist(6))
                > power_w(Category::Agricultural, at_ist(14))
        );
        assert_eq!(mean_daily_wh(Category::Domestic), 8_940);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let wh = interval_wh(Category::Commercial, at_ist(12), &mut rng);
        assert!((262..=488).contains(&wh), "{wh}");
    }

    #[test]
    fn central_estimates_a_new_account_at_these_profiles_means() {
        // Central's days-left estimate starts from a typical day per category; it is this.
        for category in Category::ALL {
            assert_eq!(
                mean_daily_wh(category) as i64,
                gramgrid_central::accounts::typical_daily_wh(category),
                "{category}"
            );
        }
    }
}
