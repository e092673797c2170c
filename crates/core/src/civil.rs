//! Civil time in Asia/Kolkata: the local dates and months that tariffs, windows and holidays use.
//!
//! India has observed a single offset (UTC+05:30, no daylight saving) since 1945, so a fixed offset is
//! exact for every timestamp this system will ever see and avoids shipping a time-zone database.
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Utc};

/// Seconds east of UTC for Asia/Kolkata.
const IST_OFFSET_SECONDS: i32 = 5 * 3600 + 30 * 60;

/// The Asia/Kolkata offset.
pub fn ist() -> FixedOffset {
    // 19,800 s is inside the ±86,400 s range FixedOffset accepts, so this cannot fail.
    FixedOffset::east_opt(IST_OFFSET_SECONDS).unwrap_or_else(|| unreachable!())
}

/// The local (Asia/Kolkata) date-time of a UTC instant.
pub fn local(at: DateTime<Utc>) -> DateTime<FixedOffset> {
    at.with_timezone(&ist())
}

/// The local calendar date of a UTC instant.
pub fn local_date(at: DateTime<Utc>) -> NaiveDate {
    local(at).date_naive()
}

/// The UTC instant at which a local date begins (00:00 Asia/Kolkata).
pub fn start_of_local_day(date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    ist()
        .from_local_datetime(&midnight)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
}

/// A calendar month in local time, the period over which telescopic slabs accumulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    /// Calendar year, e.g. 2026.
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

impl Month {
    /// The month containing a local date.
    pub fn of(date: NaiveDate) -> Month {
        Month {
            year: date.year(),
            month: date.month(),
        }
    }

    /// The local month containing a UTC instant.
    pub fn containing(at: DateTime<Utc>) -> Month {
        Month::of(local_date(at))
    }

    /// Parses `YYYY-MM`.
    pub fn parse(text: &str) -> Option<Month> {
        let (year, month) = text.split_once('-')?;
        let month = Month {
            year: year.parse().ok()?,
            month: month.parse().ok()?,
        };
        month.first_day().map(|_| month)
    }

    /// The first day, or None for an impossible month.
    pub fn first_day(self) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
    }

    /// The month as instants: its first local midnight and the next month's (UTC), or None for an
    /// impossible month.
    pub fn span(self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        Some((
            start_of_local_day(self.first_day()?),
            start_of_local_day(self.next().first_day()?),
        ))
    }

    /// The month after this one.
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The month before this one.
    pub fn previous(self) -> Month {
        if self.month == 1 {
            Month {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Month {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// Number of days in the month (28 to 31).
    pub fn days(self) -> u32 {
        match (self.first_day(), self.next().first_day()) {
            (Some(first), Some(next)) => (next - first).num_days() as u32,
            _ => 30,
        }
    }

    /// A compact sortable number (year * 12 + month - 1) used as a storage key.
    pub fn index(self) -> i64 {
        i64::from(self.year) * 12 + i64::from(self.month) - 1
    }

    /// The inverse of [`Month::index`].
    pub fn from_index(index: i64) -> Month {
        Month {
            year: index.div_euclid(12) as i32,
            month: index.rem_euclid(12) as u32 + 1,
        }
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Seconds since the Unix epoch, as stored.
pub fn ts(at: DateTime<Utc>) -> i64 {
    at.timestamp()
}

/// The inverse of [`ts`]; out-of-range values (never written by gramgrid) map to the epoch.
pub fn from_ts(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_date_rolls_over_at_18_30_utc() {
        let before = Utc.with_ymd_and_hms(2026, 3, 31, 18, 29, 59).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 3, 31, 18, 30, 0).unwrap();
        assert_eq!(
            local_date(before),
            NaiveDate::from_ymd_opt(2026, 3, 31).unwrap()
        );
        assert_eq!(
            local_date(after),
            NaiveDate::from_ymd_opt(2026, 4, 1).unwrap()
        );
        assert_eq!(
            Month::containing(after),
            Month {
                year: 2026,
                month: 4
            }
        );
        assert_eq!(
            start_of_local_day(NaiveDate::from_ymd_opt(2026, 4, 1).unwrap()),
            after
        );
    }

    #[test]
    fn month_arithmetic() {
        let feb = Month::parse("2028-02").unwrap();
        assert_eq!(feb.days(), 29);
        assert_eq!(
            Month::parse("2026-12").unwrap().next(),
            Month::parse("2027-01").unwrap()
        );
        assert_eq!(
            Month::parse("2027-01").unwrap().previous().to_string(),
            "2026-12"
        );
        assert_eq!(Month::from_index(feb.index()), feb);
        assert!(Month::parse("2026-13").is_none());
    }
}
