//! A meter's load as an inline SVG bar chart: no script, no image request, a few kilobytes.
use chrono::{DateTime, Utc};
use maud::{html, Markup};

/// Energy per slot of `slot_seconds` from cumulative register readings (oldest first): each rise
/// between two readings counts in the slot of the later one; slots start at `start`. A register
/// that went back (a replaced or reset meter) counts nothing.
pub fn energy_per_slot(
    readings: &[(DateTime<Utc>, i64)],
    start: DateTime<Utc>,
    slot_seconds: i64,
    slots: usize,
) -> Vec<i64> {
    let mut per_slot = vec![0; slots];
    for pair in readings.windows(2) {
        let ((_, before), (at, after)) = (pair[0], pair[1]);
        let slot = (at - start).num_seconds().div_euclid(slot_seconds.max(1));
        if let Some(total) = usize::try_from(slot).ok().and_then(|s| per_slot.get_mut(s)) {
            *total += (after - before).max(0);
        }
    }
    per_slot
}

/// Energy per hour: [`energy_per_slot`] with one-hour slots.
pub fn hourly_energy(
    readings: &[(DateTime<Utc>, i64)],
    start: DateTime<Utc>,
    hours: usize,
) -> Vec<i64> {
    energy_per_slot(readings, start, 3600, hours)
}

/// Chart size in SVG units; the page scales it to the screen's width.
const WIDTH: u32 = 336;
const HEIGHT: u32 = 120;
const AXIS: u32 = 14;

/// Bars for `wh` (one per slot, oldest first), labelled at the bars `labels` names (e.g. the
/// day), with the peak slot's energy written in the corner.
pub fn load_bars(wh: &[i64], labels: &[(usize, String)]) -> Markup {
    let peak = wh.iter().copied().max().unwrap_or(0).max(1);
    let n = wh.len().max(1) as u32;
    let bar = f64::from(WIDTH) / f64::from(n);
    let plot = f64::from(HEIGHT - AXIS);
    html! {
        svg class="chart" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
            aria-label=(format!("peak {} kWh", crate::format::kwh(peak))) {
            @for (i, value) in wh.iter().enumerate() {
                @let h = plot * (*value).max(0) as f64 / peak as f64;
                rect x=(format!("{:.1}", bar * i as f64)) y=(format!("{:.1}", plot - h))
                    width=(format!("{:.2}", bar.max(0.5))) height=(format!("{h:.1}")) {}
            }
            line x1="0" y1=(plot) x2=(WIDTH) y2=(plot) {}
            @for (i, label) in labels {
                text x=(format!("{:.1}", bar * *i as f64 + 1.0)) y=(HEIGHT - 2) { (label) }
            }
            text x=(WIDTH - 2) y="10" text-anchor="end" { (crate::format::kwh(peak)) " kWh" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_lands_in_the_slot_of_the_later_reading_and_resets_count_nothing() {
        let t0 = DateTime::UNIX_EPOCH;
        let at = |minutes: i64| t0 + chrono::Duration::minutes(minutes);
        let readings = [
            (at(-15), 900),
            (at(0), 1_000),
            (at(45), 1_300),
            (at(60), 1_400),
            (at(75), 50),
            (at(200), 150),
        ];
        assert_eq!(hourly_energy(&readings, t0, 3), vec![400, 100, 0]);
        assert_eq!(energy_per_slot(&readings, t0, 2 * 3600, 2), vec![500, 100]);
    }

    #[test]
    fn the_tallest_bar_is_the_peak_slot_and_a_dark_meter_draws_flat() {
        let svg = load_bars(&[0, 500, 1_000, 250], &[(0, "Mon".into())]).into_string();
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains(r#"height="106.0""#), "{svg}");
        assert!(svg.contains("1.000 kWh") && svg.contains("Mon"));
        let flat = load_bars(&[0; 168], &[]).into_string();
        assert!(flat.contains(r#"height="0.0""#) && !flat.contains("NaN"));
    }
}
