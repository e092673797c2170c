//! Indian formats for money, numbers, energy and times, as every page shows them.
use chrono::{DateTime, Utc};

/// Paise as rupees in the Indian grouping: `₹1,23,456.78`, `-₹50.00`.
pub fn inr(paise: i64) -> String {
    let sign = if paise < 0 { "-" } else { "" };
    let abs = paise.unsigned_abs();
    format!("{sign}₹{}.{:02}", group_indian(abs / 100), abs % 100)
}

/// Wh as kWh with three decimals, the integer part grouped the Indian way.
pub fn kwh(wh: i64) -> String {
    let sign = if wh < 0 { "-" } else { "" };
    let abs = wh.unsigned_abs();
    format!("{sign}{}.{:03}", group_indian(abs / 1000), abs % 1000)
}

/// An integer in the Indian grouping: the last three digits, then pairs (`12,34,567`).
pub fn group_indian(n: u64) -> String {
    let digits = n.to_string();
    if digits.len() <= 3 {
        return digits;
    }
    let (head, last3) = digits.split_at(digits.len() - 3);
    let mut groups: Vec<&str> = Vec::new();
    let mut rest = head;
    while rest.len() > 2 {
        let (front, pair) = rest.split_at(rest.len() - 2);
        groups.push(pair);
        rest = front;
    }
    groups.push(rest);
    groups.reverse();
    format!("{},{last3}", groups.join(","))
}

/// A time as India reads it: `29-11-2026 17:05 IST` (day first, 24-hour, Asia/Kolkata).
pub fn when(at: DateTime<Utc>) -> String {
    gramgrid_core::civil::local(at)
        .format("%d-%m-%Y %H:%M IST")
        .to_string()
}

/// A past time and how long ago it was at `now`: `29-11-2026 17:05 IST (12 min ago)`, with
/// `ago` the page's word for it.
pub fn when_ago(at: DateTime<Utc>, now: DateTime<Utc>, ago: &str) -> String {
    format!("{} ({} {ago})", when(at), span((now - at).num_seconds()))
}

/// A duration in the largest sensible unit: `45 s`, `12 min`, `3 h 05 min`, `2 d 4 h`.
pub fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_energy_are_grouped_the_indian_way() {
        assert_eq!(inr(12_345_678), "₹1,23,456.78");
        assert_eq!(inr(-5_000), "-₹50.00");
        assert_eq!(inr(7), "₹0.07");
        assert_eq!(group_indian(1_234_567_890), "1,23,45,67,890");
        assert_eq!(group_indian(999), "999");
        assert_eq!(group_indian(1_000), "1,000");
        assert_eq!(kwh(1_234_567), "1,234.567");
    }

    #[test]
    fn times_are_shown_in_india_day_first() {
        let at = DateTime::parse_from_rfc3339("2026-11-29T18:40:00Z").unwrap();
        assert_eq!(when(at.with_timezone(&Utc)), "30-11-2026 00:10 IST");
        assert_eq!(span(59), "59 s");
        assert_eq!(span(3_900), "1 h 05 min");
        assert_eq!(span(90_000), "1 d 1 h");
        let now = at.with_timezone(&Utc) + chrono::Duration::minutes(12);
        assert_eq!(
            when_ago(at.with_timezone(&Utc), now, "ago"),
            "30-11-2026 00:10 IST (12 min ago)"
        );
    }
}
