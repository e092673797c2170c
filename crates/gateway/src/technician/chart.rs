//! A meter's load as an inline SVG bar chart: no script, no image request, a few kilobytes.
use chrono::{DateTime, Utc};
use maud::{html, Markup};

/// Energy per hour from cumulative register readings (oldest first): each rise between two
/// readings counts in the hour of the later one; hours start at `start`. A register that went
/// back (a replaced or reset meter) counts nothing.
pub fn hourly_energy(
    readings: &[(DateTime<Utc>, i64)],
    start: DateTime<Utc>,
    hours: usize,
) -> Vec<i64> {
    let mut per_hour = vec![0; hours];
    for pair in readings.windows(2) {
        let ((_, before), (at, after)) = (pair[0], pair[1]);
        let hour = (at - start).num_seconds().div_euclid(3600);
        if let Some(slot) = usize::try_from(hour).ok().and_then(|h| per_hour.get_mut(h)) {
            *slot += (after - before).max(0);
        }
    }
    per_hour
}

/// Chart size in SVG units; the page scales it to the screen's width.
const WIDTH: u32 = 336;
const HEIGHT: u32 = 120;
const AXIS: u32 = 14;

/// Bars for `wh` (one per hour, oldest first), with a label every `label_every` bars taken from
/// `labels` (e.g. the day), and the peak written in the corner.
pub fn hourly_load(wh: &[i64], labels: &[(usize, String)]) -> Markup {
    let peak = wh.iter().copied().max().unwrap_or(0).max(1);
    let n = wh.len().max(1) as u32;
    let bar = f64::from(WIDTH) / f64::from(n);
    let plot = f64::from(HEIGHT - AXIS);
    html! {
        svg class="chart" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
            aria-label=(format!("peak {} kWh in an hour", super::i18n::kwh(peak))) {
            @for (i, value) in wh.iter().enumerate() {
                @let h = plot * (*value).max(0) as f64 / peak as f64;
                rect x=(format!("{:.1}", bar * i as f64)) y=(format!("{:.1}", plot - h))
                    width=(format!("{:.2}", bar.max(0.5))) height=(format!("{h:.1}")) {}
            }
            line x1="0" y1=(plot) x2=(WIDTH) y2=(plot) {}
            @for (i, label) in labels {
                text x=(format!("{:.1}", bar * *i as f64 + 1.0)) y=(HEIGHT - 2) { (label) }
            }
            text x=(WIDTH - 2) y="10" text-anchor="end" { (super::i18n::kwh(peak)) " kWh" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_lands_in_the_hour_of_the_later_reading_and_resets_count_nothing() {
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
    }

    #[test]
    fn the_tallest_bar_is_the_peak_hour_and_a_dark_meter_draws_flat() {
        let svg = hourly_load(&[0, 500, 1_000, 250], &[(0, "Mon".into())]).into_string();
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains(r#"height="106.0""#), "{svg}");
        assert!(svg.contains("1.000 kWh") && svg.contains("Mon"));
        let flat = hourly_load(&[0; 168], &[]).into_string();
        assert!(flat.contains(r#"height="0.0""#) && !flat.contains("NaN"));
    }
}
