//! Indian number formats: rupees and kWh grouped in lakhs and crores (`₹1,23,456.78`).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_energy_are_grouped_the_indian_way() {
        assert_eq!(inr(12_345_678), "₹1,23,456.78");
        assert_eq!(inr(-5_000), "-₹50.00");
        assert_eq!(inr(7), "₹0.07");
        assert_eq!(inr(i64::MIN), "-₹92,23,37,20,36,85,47,758.08");
        assert_eq!(group_indian(1_234_567_890), "1,23,45,67,890");
        assert_eq!(group_indian(999), "999");
        assert_eq!(group_indian(1_000), "1,000");
        assert_eq!(kwh(1_234_567), "1,234.567");
    }
}
