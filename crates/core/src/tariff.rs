//! Tariffs: telescopic monthly slabs, time-of-day slots, fixed and minimum charges and duty, priced in
//! integer paise.
//!
//! Everything here is a pure function of a tariff book, energy (Wh) and local dates.
//!
//! Rounding rule: the energy charge of a segment holding `E` Wh is `floor(Σ rate × Wh / 1000)` paise
//! and its duty is `floor((energy + time-of-day adjustment) × duty / 100)`. An interval is charged the
//! *difference* of those floors before and after its energy, so the charges of a month always add up,
//! to the paisa, to the bill of the whole month however the energy was split into intervals.
//!
//! Time of day: a version may list daily slots (local time) with a percentage on the energy charge,
//! e.g. +20 % in the evening peak and −20 % in solar hours. The slab charge of the segment is spread
//! over its energy at its average rate, and each slot's energy gets the slot's percentage of it:
//! adjustment = `floor(energy charge × Σ(slot Wh × slot percent) / (E × 100))`. A segment therefore
//! keeps one more total besides its energy, the ToD weight `Σ Wh × basis points` ([`SegmentEnergy`]).
//!
//! Version changes: a month in which a new version takes effect is rated piecewise. Each part (a
//! *segment*: one month under one version) gets the version's slabs scaled by the share of the month's
//! days it covers (limits floored to whole Wh), the pro-rata practice of Indian tariff orders.
use crate::civil::{self, Month};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Consumer category: each has its own tariff table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Households (LV-1 domestic).
    Domestic,
    /// Shops and other non-domestic consumers.
    Commercial,
    /// Irrigation pumps and other agricultural connections.
    Agricultural,
}

impl Category {
    /// Every category, in display order.
    pub const ALL: [Category; 3] = [
        Category::Domestic,
        Category::Commercial,
        Category::Agricultural,
    ];

    /// The lowercase name used in config, storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Domestic => "domestic",
            Category::Commercial => "commercial",
            Category::Agricultural => "agricultural",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(text: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One slab of a telescopic table: units above the previous slab's limit up to this one's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slab {
    /// Upper limit in units (kWh) per month; absent on the last, open-ended slab.
    #[serde(default)]
    pub up_to_units: Option<u32>,
    /// Energy charge in paise per kWh.
    pub paise_per_kwh: i64,
}

/// A local time of day to the minute, written `HH:MM` in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClockTime(u16);

impl ClockTime {
    /// Minutes after local midnight (0 to 1439).
    pub fn minutes(self) -> u16 {
        self.0
    }

    /// The time `minutes` after local midnight; None from 1440 on.
    pub fn from_minutes(minutes: u16) -> Option<ClockTime> {
        (minutes < 24 * 60).then_some(ClockTime(minutes))
    }
}

impl TryFrom<String> for ClockTime {
    type Error = String;
    fn try_from(text: String) -> Result<ClockTime, String> {
        let bad = || format!("'{text}' is not a time of day; write it as HH:MM, e.g. 18:00");
        let (hours, minutes) = text.split_once(':').ok_or_else(bad)?;
        let hours: u16 = hours.parse().map_err(|_| bad())?;
        let minutes: u16 = minutes.parse().map_err(|_| bad())?;
        if hours > 23 || minutes > 59 {
            return Err(bad());
        }
        Ok(ClockTime(hours * 60 + minutes))
    }
}

impl From<ClockTime> for String {
    fn from(time: ClockTime) -> String {
        time.to_string()
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// A daily time-of-day slot: energy used from `from` (inclusive) to `to` (exclusive), local time, is
/// charged `percent` more (negative: less) than the slab charge. A slot with `to` before `from` runs
/// past midnight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TodSlot {
    /// Short name shown on bills and accepted by `gramgrid tariff quote --slot-units`, e.g. `peak`.
    pub name: String,
    /// Local start of the slot.
    pub from: ClockTime,
    /// Local end of the slot (exclusive).
    pub to: ClockTime,
    /// Surcharge (positive) or rebate (negative) on the energy charge, in percent with at most two
    /// decimals, from −100 to +200.
    pub percent: f64,
}

impl TodSlot {
    /// The slot's percentage in basis points (validated to be whole).
    pub(crate) fn basis_points(&self) -> i64 {
        (self.percent * 100.0).round() as i64
    }

    /// Whether a local minute of the day falls in the slot.
    fn contains(&self, minute: u16) -> bool {
        let (from, to) = (self.from.0, self.to.0);
        if from < to {
            (from..to).contains(&minute)
        } else {
            minute >= from || minute < to
        }
    }

    /// Minutes per day in the slot.
    fn minutes_per_day(&self) -> i64 {
        (i64::from(self.to.0) - i64::from(self.from.0)).rem_euclid(24 * 60)
    }
}

/// One effective-dated tariff for one category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffVersion {
    /// Unique, stable name (it is stored with every charge).
    pub id: String,
    /// The consumer category this version prices.
    pub category: Category,
    /// First local date on which this version applies.
    pub effective_from: NaiveDate,
    /// Telescopic slabs in increasing order of limit; the last one is open-ended.
    pub slabs: Vec<Slab>,
    /// Fixed charge per month in paise, charged day by day.
    #[serde(default)]
    pub fixed_monthly_paise: i64,
    /// If energy plus fixed charges of a month fall below this (paise), the difference is charged at
    /// month end.
    #[serde(default)]
    pub minimum_monthly_paise: i64,
    /// Electricity duty on the energy charge, in percent with at most two decimals.
    #[serde(default)]
    pub duty_percent: f64,
    /// Time-of-day slots (none: every hour at the slab rates). Hours outside every slot are normal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tod: Vec<TodSlot>,
    /// Demand charge per kW of the month's maximum demand (highest 15-minute average power), in
    /// paise, charged after the month ends; 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub demand_paise_per_kw: i64,
    /// Net metering: a month's surplus export (beyond its import) is banked and used against the
    /// net units of the months after (`core::netmeter`); false: the surplus lapses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub export_banking: bool,
    /// What the units still banked at the end of the settlement year (March) are paid at, in
    /// paise per kWh; 0: they lapse. Needs `export_banking`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub export_settlement_paise_per_kwh: i64,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// Why a tariff book was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TariffError {
    /// One version breaks a rule (empty id, bad slabs, negative charge, duty out of range).
    #[error("tariff '{id}': {problem}")]
    InvalidVersion {
        /// The offending version's id.
        id: String,
        /// What is wrong with it, and how to fix it.
        problem: String,
    },
    /// Two versions share an id.
    #[error("two tariff versions are named '{0}'; every version needs its own id")]
    DuplicateId(String),
    /// Two versions of one category take effect on the same date (ids of both).
    #[error("tariff versions '{0}' and '{1}' take effect on the same day for the same category")]
    SameEffectiveDate(String, String),
    /// A category has no version at all.
    #[error("no tariff version for category '{0}'; add one with `category = \"{0}\"`")]
    MissingCategory(Category),
}

/// The metering interval of Indian prepaid smart meters (IS 16444): 15 minutes. Time of use and
/// maximum demand are measured over it.
pub const INTERVAL_SECS: i64 = 900;

/// The highest slab rate a version may set, in paise per kWh (₹1,000/kWh, far above any order).
pub const MAX_RATE_PAISE_PER_KWH: i64 = 100_000;
/// The highest fixed or minimum monthly charge a version may set, in paise (₹1,00,000).
pub const MAX_MONTHLY_PAISE: i64 = 10_000_000;
/// The highest demand charge a version may set, in paise per kW per month (₹10,000).
pub const MAX_DEMAND_PAISE_PER_KW: i64 = 1_000_000;

/// All tariff versions the gateway knows, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TariffBook {
    /// Sorted by category, then effective date.
    versions: Vec<TariffVersion>,
    /// Duty of each version in basis points (1/100 of a percent), same order as `versions`.
    duty_basis_points: Vec<i64>,
}

/// The month-and-version part of the calendar that one set of slabs applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentKey {
    /// The local calendar month.
    pub month: Month,
    /// The [`TariffVersion::id`] in force for this part of the month.
    pub version_id: String,
}

/// A segment resolved against the book: what is needed to price energy in it.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// The local calendar month.
    pub month: Month,
    /// The tariff version in force over this part of the month.
    pub version: &'a TariffVersion,
    duty_basis_points: i64,
    /// First and last local day of the month covered by this version.
    pub first_day: NaiveDate,
    /// Last local day of the month covered by this version (inclusive).
    pub last_day: NaiveDate,
}

/// What a segment has accumulated: its imported energy and time-of-day weight, and its export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SegmentEnergy {
    /// Energy imported, in Wh.
    pub wh: i64,
    /// `Σ Wh × slot basis points` over the energy used inside time-of-day slots (0 without slots).
    pub tod_weight: i64,
    /// Energy exported (net metering), in Wh; 0 for a meter without an export register.
    pub export_wh: i64,
}

impl SegmentEnergy {
    /// Imported energy with no time-of-day weight (a version without slots, or hours outside them).
    pub fn flat(wh: i64) -> SegmentEnergy {
        SegmentEnergy {
            wh,
            tod_weight: 0,
            export_wh: 0,
        }
    }

    /// The units the energy charge is on: import less export, never below zero.
    pub fn net_wh(self) -> i64 {
        self.wh.saturating_sub(self.export_wh).max(0)
    }

    /// Export beyond the import (net metering's surplus), in Wh; not charged, and not credited
    /// within the segment.
    pub fn surplus_wh(self) -> i64 {
        self.export_wh.saturating_sub(self.wh).max(0)
    }
}

impl std::ops::Add for SegmentEnergy {
    type Output = SegmentEnergy;
    fn add(self, other: SegmentEnergy) -> SegmentEnergy {
        SegmentEnergy {
            wh: self.wh.saturating_add(other.wh),
            tod_weight: self.tod_weight.saturating_add(other.tod_weight),
            export_wh: self.export_wh.saturating_add(other.export_wh),
        }
    }
}

impl std::ops::Neg for SegmentEnergy {
    type Output = SegmentEnergy;
    fn neg(self) -> SegmentEnergy {
        SegmentEnergy {
            wh: self.wh.saturating_neg(),
            tod_weight: self.tod_weight.saturating_neg(),
            export_wh: self.export_wh.saturating_neg(),
        }
    }
}

/// Energy charge, time-of-day adjustment and duty, in paise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Cost {
    /// Energy charge from the slabs, in paise.
    pub energy_paise: i64,
    /// Time-of-day surcharge (positive) or rebate (negative) on the energy charge, in paise.
    pub tod_paise: i64,
    /// Electricity duty on the energy charge and its time-of-day adjustment, in paise.
    pub duty_paise: i64,
}

impl Cost {
    /// Energy charge, time-of-day adjustment and duty.
    pub fn total(self) -> i64 {
        self.energy_paise
            .saturating_add(self.tod_paise)
            .saturating_add(self.duty_paise)
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, other: Cost) -> Cost {
        Cost {
            energy_paise: self.energy_paise.saturating_add(other.energy_paise),
            tod_paise: self.tod_paise.saturating_add(other.tod_paise),
            duty_paise: self.duty_paise.saturating_add(other.duty_paise),
        }
    }
}

impl std::ops::Sub for Cost {
    type Output = Cost;
    fn sub(self, other: Cost) -> Cost {
        Cost {
            energy_paise: self.energy_paise.saturating_sub(other.energy_paise),
            tod_paise: self.tod_paise.saturating_sub(other.tod_paise),
            duty_paise: self.duty_paise.saturating_sub(other.duty_paise),
        }
    }
}

/// Paise from an i128 amount, saturating instead of wrapping (bounded rates and registers never
/// reach the limit; saturating keeps an absurd input from turning a charge into a credit).
fn saturating_paise(amount: i128) -> i64 {
    i64::try_from(amount).unwrap_or(if amount < 0 { i64::MIN } else { i64::MAX })
}

impl TariffBook {
    /// Validates and indexes a set of versions.
    pub fn new(mut versions: Vec<TariffVersion>) -> Result<TariffBook, TariffError> {
        versions.sort_by_key(|v| (v.category, v.effective_from));
        let mut duty_basis_points = Vec::with_capacity(versions.len());
        for version in &versions {
            duty_basis_points.push(validate_version(version)?);
        }
        for (i, a) in versions.iter().enumerate() {
            if let Some(b) = versions[i + 1..].iter().find(|b| b.id == a.id) {
                return Err(TariffError::DuplicateId(b.id.clone()));
            }
        }
        for pair in versions.windows(2) {
            if pair[0].category == pair[1].category
                && pair[0].effective_from == pair[1].effective_from
            {
                return Err(TariffError::SameEffectiveDate(
                    pair[0].id.clone(),
                    pair[1].id.clone(),
                ));
            }
        }
        if let Some(missing) = Category::ALL
            .into_iter()
            .find(|c| !versions.iter().any(|v| v.category == *c))
        {
            return Err(TariffError::MissingCategory(missing));
        }
        Ok(TariffBook {
            versions,
            duty_basis_points,
        })
    }

    /// The built-in book: CSPDCL LV-1 domestic FY23-24 indicative combined rates, and clearly
    /// labelled samples for commercial and agricultural consumers (replace them from the utility's order).
    pub fn builtin() -> TariffBook {
        let slab = |up_to_units, paise_per_kwh| Slab {
            up_to_units,
            paise_per_kwh,
        };
        let from = NaiveDate::from_ymd_opt(2023, 4, 1).unwrap_or_default();
        let versions = vec![
            TariffVersion {
                id: "cspdcl-lv1-domestic-fy2023-24".into(),
                category: Category::Domestic,
                effective_from: from,
                slabs: vec![
                    slab(Some(100), 370),
                    slab(Some(200), 390),
                    slab(Some(400), 530),
                    slab(Some(600), 630),
                    slab(None, 790),
                ],
                fixed_monthly_paise: 0,
                minimum_monthly_paise: 4000,
                duty_percent: 0.0,
                tod: Vec::new(),
                demand_paise_per_kw: 0,
                export_banking: false,
                export_settlement_paise_per_kwh: 0,
            },
            TariffVersion {
                id: "sample-commercial".into(),
                category: Category::Commercial,
                effective_from: from,
                slabs: vec![slab(Some(100), 640), slab(Some(400), 720), slab(None, 830)],
                fixed_monthly_paise: 15000,
                minimum_monthly_paise: 20000,
                duty_percent: 12.0,
                tod: Vec::new(),
                demand_paise_per_kw: 0,
                export_banking: false,
                export_settlement_paise_per_kwh: 0,
            },
            TariffVersion {
                id: "sample-agricultural".into(),
                category: Category::Agricultural,
                effective_from: from,
                slabs: vec![slab(None, 480)],
                fixed_monthly_paise: 10000,
                minimum_monthly_paise: 0,
                duty_percent: 0.0,
                tod: Vec::new(),
                demand_paise_per_kw: 0,
                export_banking: false,
                export_settlement_paise_per_kwh: 0,
            },
        ];
        // The built-in versions are valid by construction; the unit tests check it.
        TariffBook::new(versions).unwrap_or_else(|e| unreachable!("built-in tariff book: {e}"))
    }

    /// All versions, sorted by category then effective date.
    pub fn versions(&self) -> &[TariffVersion] {
        &self.versions
    }

    fn version_index_on(&self, category: Category, date: NaiveDate) -> Option<usize> {
        self.versions
            .iter()
            .enumerate()
            .filter(|(_, v)| v.category == category && v.effective_from <= date)
            .map(|(i, _)| i)
            .next_back()
    }

    /// When the newest tariff change took effect at or before `now`: the start (local midnight) of
    /// the latest version that replaced an earlier one of its category. A category's first version
    /// is not a change.
    pub fn last_change(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = civil::local_date(now);
        self.versions
            .windows(2)
            .filter(|pair| pair[0].category == pair[1].category)
            .map(|pair| pair[1].effective_from)
            .filter(|from| *from <= today)
            .max()
            .map(civil::start_of_local_day)
    }

    /// The version in force for a category on a local date.
    pub fn version_on(&self, category: Category, date: NaiveDate) -> Option<&TariffVersion> {
        self.version_index_on(category, date)
            .map(|i| &self.versions[i])
    }

    /// The segments of a month for a category, in date order. Days before the category's first
    /// version belong to no segment.
    pub fn segments_of(&self, category: Category, month: Month) -> Vec<Segment<'_>> {
        let (Some(first), Some(next)) = (month.first_day(), month.next().first_day()) else {
            return Vec::new();
        };
        let last = next - Duration::days(1);
        let mut segments: Vec<Segment<'_>> = Vec::new();
        let mut day = first;
        while day <= last {
            let Some(index) = self.version_index_on(category, day) else {
                day += Duration::days(1);
                continue;
            };
            let version = &self.versions[index];
            let following = self
                .versions
                .get(index + 1)
                .filter(|v| v.category == category);
            let end = following
                .map(|v| (v.effective_from - Duration::days(1)).min(last))
                .unwrap_or(last);
            segments.push(Segment {
                month,
                version,
                duty_basis_points: self.duty_basis_points[index],
                first_day: day,
                last_day: end,
            });
            day = end + Duration::days(1);
        }
        segments
    }

    /// The segment containing a local date.
    pub fn segment_on(&self, category: Category, date: NaiveDate) -> Option<Segment<'_>> {
        self.segments_of(category, Month::of(date))
            .into_iter()
            .find(|s| s.first_day <= date && date <= s.last_day)
    }

    /// The segment containing a UTC instant.
    pub fn segment_at(&self, category: Category, at: DateTime<Utc>) -> Option<Segment<'_>> {
        self.segment_on(category, crate::civil::local_date(at))
    }

    /// Resolves a stored segment key.
    pub fn segment(&self, category: Category, key: &SegmentKey) -> Option<Segment<'_>> {
        self.segments_of(category, key.month)
            .into_iter()
            .find(|s| s.version.id == key.version_id)
    }

    /// The fixed charge for one local day. Day `d` of a month of `D` days is charged
    /// `floor(F·d/D) − floor(F·(d−1)/D)`, so a whole month under one version adds up to exactly `F`.
    pub fn fixed_charge_for_day(&self, category: Category, date: NaiveDate) -> i64 {
        let Some(version) = self.version_on(category, date) else {
            return 0;
        };
        let month_days = i64::from(Month::of(date).days());
        let day = i64::from(chrono::Datelike::day(&date));
        let f = version.fixed_monthly_paise;
        f * day / month_days - f * (day - 1) / month_days
    }

    /// The minimum-charge top-up owed for a month, given what was billed in it (energy charges plus
    /// fixed charges, duty excluded). The minimum of each version is pro-rated by its segment's days.
    pub fn minimum_topup(&self, category: Category, month: Month, billed_paise: i64) -> i64 {
        let minimum: i64 = self
            .segments_of(category, month)
            .iter()
            .map(|s| s.version.minimum_monthly_paise * s.days() / i64::from(month.days()))
            .sum();
        // Never more than the minimum itself, whatever was billed (a negative bill is an anomaly
        // for the office, not a reason to charge beyond the minimum).
        minimum
            .saturating_sub(billed_paise)
            .clamp(0, minimum.max(0))
    }

    /// The demand charge of a month whose maximum demand was `max_demand_w`: each version's rate per
    /// kW pro-rated by its segment's days, `floor(W × rate × days / (1000 × month days))` per
    /// segment.
    pub fn demand_charge(&self, category: Category, month: Month, max_demand_w: i64) -> i64 {
        let month_days = i128::from(month.days());
        self.segments_of(category, month)
            .iter()
            .map(|s| {
                saturating_paise(
                    i128::from(max_demand_w.max(0))
                        * i128::from(s.version.demand_paise_per_kw)
                        * i128::from(s.days())
                        / (1000 * month_days),
                )
            })
            .fold(0, i64::saturating_add)
    }

    /// Whether a version in force in the month charges for demand.
    pub fn has_demand_charge(&self, category: Category, month: Month) -> bool {
        self.segments_of(category, month)
            .iter()
            .any(|s| s.version.demand_paise_per_kw > 0)
    }

    /// A month's bill for a category when `units_wh` are consumed evenly over its days and hours.
    pub fn quote(&self, category: Category, month: Month, units_wh: i64) -> Bill {
        let usage = Usage {
            units_wh,
            ..Usage::default()
        };
        // No named slots: nothing can be refused.
        self.quote_usage(category, month, &usage)
            .unwrap_or_else(|e| unreachable!("a quote without named slots: {e}"))
    }

    /// A month's bill for a month's [`Usage`]: the units not named for a time-of-day slot are
    /// spread evenly over the other hours of the day, and every part over the month's days in
    /// proportion.
    pub fn quote_usage(
        &self,
        category: Category,
        month: Month,
        usage: &Usage,
    ) -> Result<Bill, QuoteError> {
        let (units_wh, slot_units) = (usage.units_wh, &usage.slot_units);
        let segments = self.segments_of(category, month);
        for (name, _) in slot_units {
            if !segments
                .iter()
                .any(|s| s.version.tod.iter().any(|slot| slot.name == *name))
            {
                let mut known: Vec<String> = segments
                    .iter()
                    .flat_map(|s| s.version.tod.iter().map(|slot| slot.name.clone()))
                    .collect();
                known.dedup();
                return Err(QuoteError::UnknownSlot {
                    name: name.clone(),
                    known,
                });
            }
        }
        let named_wh: i64 = slot_units.iter().map(|(_, wh)| wh).sum();
        if named_wh > units_wh {
            return Err(QuoteError::SlotsExceedTotal);
        }
        let days: Vec<i64> = segments.iter().map(Segment::days).collect();
        let per_segment = split_by_days(units_wh, &days);
        let export_per_segment = split_by_days(usage.export_wh, &days);
        let named: Vec<(&String, Vec<i64>)> = slot_units
            .iter()
            .map(|(name, wh)| (name, split_by_days(*wh, &days)))
            .collect();
        let parts = segments
            .iter()
            .enumerate()
            .map(|(i, segment)| {
                let mut slot_wh: Vec<Option<i64>> = segment
                    .version
                    .tod
                    .iter()
                    .map(|slot| {
                        named
                            .iter()
                            .find(|(name, _)| **name == slot.name)
                            .map(|(_, split)| split[i])
                    })
                    .collect();
                let named_here: i64 = slot_wh.iter().flatten().sum();
                let rest = per_segment[i] - named_here;
                let named_minutes: i64 = segment
                    .version
                    .tod
                    .iter()
                    .zip(&slot_wh)
                    .filter(|(_, wh)| wh.is_some())
                    .map(|(slot, _)| slot.minutes_per_day())
                    .sum();
                let free_minutes = (24 * 60 - named_minutes).max(1);
                for (slot, wh) in segment.version.tod.iter().zip(&mut slot_wh) {
                    wh.get_or_insert(rest * slot.minutes_per_day() / free_minutes);
                }
                SegmentUse {
                    segment: *segment,
                    wh: per_segment[i],
                    slot_wh: slot_wh.into_iter().flatten().collect(),
                    export_wh: export_per_segment[i],
                }
            })
            .collect::<Vec<_>>();
        Ok(self.bill(category, month, &parts, usage.max_demand_w))
    }

    /// A month's bill for the energy attributed to each of its segments and its maximum demand.
    pub fn bill(
        &self,
        category: Category,
        month: Month,
        parts: &[SegmentUse<'_>],
        max_demand_w: i64,
    ) -> Bill {
        let mut lines = Vec::new();
        let mut tod_lines = Vec::new();
        let mut cost = Cost::default();
        for part in parts {
            lines.extend(part.segment.slab_lines(part.energy().net_wh()));
            tod_lines.extend(part.tod_lines());
            cost = cost + part.segment.cost_of(part.energy());
        }
        let fixed_paise: i64 = month
            .first_day()
            .into_iter()
            .flat_map(|first| first.iter_days().take(month.days() as usize))
            .map(|day| self.fixed_charge_for_day(category, day))
            .sum();
        let minimum_topup_paise = self.minimum_topup(
            category,
            month,
            cost.energy_paise + cost.tod_paise + fixed_paise,
        );
        let demand_paise = self.demand_charge(category, month, max_demand_w);
        Bill {
            month: month.to_string(),
            category,
            month_days: month.days(),
            units_wh: parts.iter().map(|p| p.wh).sum(),
            export_wh: parts.iter().map(|p| p.export_wh).sum(),
            net_wh: parts.iter().map(|p| p.energy().net_wh()).sum(),
            surplus_wh: parts.iter().map(|p| p.energy().surplus_wh()).sum(),
            lines,
            tod_lines,
            energy_paise: cost.energy_paise,
            tod_paise: cost.tod_paise,
            fixed_paise,
            duty_paise: cost.duty_paise,
            minimum_topup_paise,
            max_demand_w,
            demand_paise,
            total_paise: cost.total() + fixed_paise + minimum_topup_paise + demand_paise,
        }
    }
}

/// What a household used in a month, as a quote takes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// All energy of the month, in Wh.
    pub units_wh: i64,
    /// Wh used in named time-of-day slots (slot name, Wh); the rest spreads over the other hours.
    pub slot_units: Vec<(String, i64)>,
    /// The month's maximum demand (highest 15-minute average power), in W.
    pub max_demand_w: i64,
    /// Energy exported in the month by a rooftop-solar home (net metering), in Wh.
    pub export_wh: i64,
}

/// `total` split over parts in proportion to their days (the last part takes the remainder).
fn split_by_days(total: i64, days: &[i64]) -> Vec<i64> {
    let all_days: i64 = days.iter().sum::<i64>().max(1);
    let mut remaining = total;
    days.iter()
        .enumerate()
        .map(|(i, d)| {
            let share = if i + 1 == days.len() {
                remaining
            } else {
                total * d / all_days
            };
            remaining -= share;
            share
        })
        .collect()
}

/// Why a quote could not be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuoteError {
    /// Units were given for a slot that no version of the month has.
    #[error("no tariff in force this month has a time-of-day slot named '{name}'; its slots: {}", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownSlot {
        /// The name given.
        name: String,
        /// The slots the month's versions have.
        known: Vec<String>,
    },
    /// The units given for slots add up to more than the month's units.
    #[error("the units given for time-of-day slots add up to more than the month's units")]
    SlotsExceedTotal,
}

/// Energy attributed to one segment of a month, with its part in each time-of-day slot.
#[derive(Debug, Clone)]
pub struct SegmentUse<'a> {
    /// The segment.
    pub segment: Segment<'a>,
    /// All energy imported in the segment, in Wh.
    pub wh: i64,
    /// Wh in each of the version's slots, in the version's order (the rest is outside every slot).
    pub slot_wh: Vec<i64>,
    /// Energy exported in the segment (net metering), in Wh.
    pub export_wh: i64,
}

impl SegmentUse<'_> {
    /// The segment's accumulated energy and time-of-day weight.
    fn energy(&self) -> SegmentEnergy {
        SegmentEnergy {
            wh: self.wh,
            tod_weight: self.weights().sum(),
            export_wh: self.export_wh,
        }
    }

    fn weights(&self) -> impl Iterator<Item = i64> + '_ {
        self.segment
            .version
            .tod
            .iter()
            .zip(&self.slot_wh)
            .map(|(slot, wh)| wh.saturating_mul(slot.basis_points()))
    }

    /// One line per slot used; the lines add up to the segment's adjustment (cumulative floors).
    fn tod_lines(&self) -> Vec<TodLine> {
        let mut weight = 0;
        let mut before = 0;
        self.segment
            .version
            .tod
            .iter()
            .zip(&self.slot_wh)
            .zip(self.weights().collect::<Vec<_>>())
            .filter(|((_, wh), _)| **wh != 0)
            .map(|((slot, wh), slot_weight)| {
                weight += slot_weight;
                let upto = self
                    .segment
                    .cost_of(SegmentEnergy {
                        wh: self.wh,
                        tod_weight: weight,
                        export_wh: self.export_wh,
                    })
                    .tod_paise;
                let line = TodLine {
                    version_id: self.segment.version.id.clone(),
                    slot: slot.name.clone(),
                    from: slot.from,
                    to: slot.to,
                    units_wh: *wh,
                    percent: slot.percent,
                    amount_paise: upto - before,
                };
                before = upto;
                line
            })
            .collect()
    }
}

/// Checks one version and returns its duty in basis points.
fn validate_version(version: &TariffVersion) -> Result<i64, TariffError> {
    let invalid = |problem: String| TariffError::InvalidVersion {
        id: version.id.clone(),
        problem,
    };
    if version.id.trim().is_empty() {
        return Err(invalid("the id is empty".into()));
    }
    let Some(last) = version.slabs.last() else {
        return Err(invalid(
            "it has no slabs; give at least one `{ paise_per_kwh = N }`".into(),
        ));
    };
    if last.up_to_units.is_some() {
        return Err(invalid(
            "the last slab must be open-ended (leave out `up_to_units`)".into(),
        ));
    }
    let mut previous_limit = 0;
    for slab in &version.slabs[..version.slabs.len() - 1] {
        match slab.up_to_units {
            Some(limit) if limit > previous_limit => previous_limit = limit,
            Some(limit) => {
                return Err(invalid(format!(
                    "slab limits must increase: {limit} units follows {previous_limit}"
                )))
            }
            None => {
                return Err(invalid(
                    "only the last slab may leave out `up_to_units`".into(),
                ))
            }
        }
    }
    if let Some(slab) = version
        .slabs
        .iter()
        .find(|s| !(0..=MAX_RATE_PAISE_PER_KWH).contains(&s.paise_per_kwh))
    {
        return Err(invalid(format!(
            "a slab rate of {} paise per kWh is outside 0 to {MAX_RATE_PAISE_PER_KWH} (₹1,000 per kWh)",
            slab.paise_per_kwh
        )));
    }
    if !(0..=MAX_MONTHLY_PAISE).contains(&version.fixed_monthly_paise)
        || !(0..=MAX_MONTHLY_PAISE).contains(&version.minimum_monthly_paise)
    {
        return Err(invalid(format!(
            "fixed and minimum monthly charges must be 0 to {MAX_MONTHLY_PAISE} paise (₹1,00,000)"
        )));
    }
    let basis_points = version.duty_percent * 100.0;
    if !(0.0..=10_000.0).contains(&basis_points)
        || (basis_points - basis_points.round()).abs() > 1e-6
    {
        return Err(invalid(format!(
            "duty_percent = {} is not a percentage between 0 and 100 with at most two decimals",
            version.duty_percent
        )));
    }
    if !(0..=MAX_DEMAND_PAISE_PER_KW).contains(&version.demand_paise_per_kw) {
        return Err(invalid(format!(
            "demand_paise_per_kw = {} is outside 0 to {MAX_DEMAND_PAISE_PER_KW} (₹10,000 per kW)",
            version.demand_paise_per_kw
        )));
    }
    if !(0..=MAX_RATE_PAISE_PER_KWH).contains(&version.export_settlement_paise_per_kwh) {
        return Err(invalid(format!(
            "export_settlement_paise_per_kwh = {} is outside 0 to {MAX_RATE_PAISE_PER_KWH}",
            version.export_settlement_paise_per_kwh
        )));
    }
    if version.export_settlement_paise_per_kwh > 0 && !version.export_banking {
        return Err(invalid(
            "export_settlement_paise_per_kwh settles banked units: set export_banking = true too"
                .into(),
        ));
    }
    validate_tod(&version.tod).map_err(invalid)?;
    Ok(basis_points.round() as i64)
}

/// Checks the time-of-day slots of one version: named once each, non-empty, not overlapping, and
/// a whole number of basis points from −100 % to +200 %.
fn validate_tod(slots: &[TodSlot]) -> Result<(), String> {
    let mut owner: Vec<Option<&str>> = vec![None; 24 * 60];
    for (i, slot) in slots.iter().enumerate() {
        if slot.name.trim().is_empty() {
            return Err("a time-of-day slot has no name".into());
        }
        if slots[..i].iter().any(|s| s.name == slot.name) {
            return Err(format!("two time-of-day slots are named '{}'", slot.name));
        }
        if slot.from == slot.to {
            return Err(format!(
                "time-of-day slot '{}' starts and ends at {}; give it a length",
                slot.name, slot.from
            ));
        }
        let basis_points = slot.percent * 100.0;
        if !(-10_000.0..=20_000.0).contains(&basis_points)
            || (basis_points - basis_points.round()).abs() > 1e-6
        {
            return Err(format!(
                "time-of-day slot '{}': percent = {} is not from -100 to 200 with at most two decimals",
                slot.name, slot.percent
            ));
        }
        for minute in 0..24 * 60 {
            if slot.contains(minute) {
                if let Some(other) = owner[usize::from(minute)].replace(&slot.name) {
                    return Err(format!(
                        "time-of-day slots '{other}' and '{}' overlap at {}",
                        slot.name,
                        ClockTime(minute)
                    ));
                }
            }
        }
    }
    Ok(())
}

impl Segment<'_> {
    /// The key under which energy in this segment is accumulated.
    pub fn key(&self) -> SegmentKey {
        SegmentKey {
            month: self.month,
            version_id: self.version.id.clone(),
        }
    }

    /// Days of the month this segment covers.
    pub fn days(&self) -> i64 {
        (self.last_day - self.first_day).num_days() + 1
    }

    /// Upper limit of each slab in Wh for this segment (None for the open-ended slab).
    fn limits_wh(&self) -> impl Iterator<Item = (Option<i64>, &Slab)> + '_ {
        let month_days = i64::from(self.month.days());
        let days = self.days();
        self.version.slabs.iter().map(move |slab| {
            (
                slab.up_to_units
                    .map(|u| i64::from(u) * 1000 * days / month_days),
                slab,
            )
        })
    }

    /// Energy charge in thousandths of a paisa for `wh` in this segment, before rounding.
    fn energy_millipaise(&self, wh: i64) -> i128 {
        self.slab_millipaise(wh).map(|(_, _, _, mp)| mp).sum()
    }

    /// Per slab: (lower Wh, upper Wh, Wh in slab, thousandths of a paisa).
    fn slab_millipaise(&self, wh: i64) -> impl Iterator<Item = (i64, Option<i64>, i64, i128)> + '_ {
        let wh = wh.max(0);
        let mut lower = 0;
        self.limits_wh().map_while(move |(upper, slab)| {
            if wh <= lower && lower > 0 {
                return None;
            }
            let top = upper.map_or(wh, |u| u.min(wh));
            let in_slab = top.saturating_sub(lower).max(0);
            let row = (
                lower,
                upper,
                in_slab,
                i128::from(in_slab) * i128::from(slab.paise_per_kwh),
            );
            lower = upper.unwrap_or(i64::MAX);
            Some(row)
        })
    }

    /// Energy charge and duty for a month-to-date energy of `wh` in this segment, all of it outside
    /// any time-of-day slot.
    pub fn cost(&self, wh: i64) -> Cost {
        self.cost_of(SegmentEnergy::flat(wh))
    }

    /// Energy charge, time-of-day adjustment and duty for what this segment has accumulated: the
    /// slabs on the net units, and the import's average time-of-day rate on their charge.
    pub fn cost_of(&self, energy: SegmentEnergy) -> Cost {
        let net_wh = energy.net_wh();
        let energy_paise = saturating_paise(self.energy_millipaise(net_wh) / 1000);
        let tod_paise = if energy.wh > 0 && net_wh > 0 {
            saturating_paise(
                (i128::from(energy_paise) * i128::from(energy.tod_weight))
                    .div_euclid(i128::from(energy.wh) * 10_000),
            )
        } else {
            0
        };
        let dutiable = i128::from(energy_paise) + i128::from(tod_paise);
        Cost {
            energy_paise,
            tod_paise,
            duty_paise: saturating_paise(
                (dutiable * i128::from(self.duty_basis_points)).div_euclid(10_000),
            ),
        }
    }

    /// The charge for `delta` consumed on top of `before` already in this segment.
    pub fn charge(&self, before: SegmentEnergy, delta: SegmentEnergy) -> Cost {
        self.cost_of(before + delta) - self.cost_of(before)
    }

    /// What `wh` imported and `export_wh` exported between `from` and `to` add to this segment.
    /// The import's time-of-day slot is the one holding `from` (local time); a span longer than one
    /// demand interval (readings were missed) has no known time of use and is charged at the slab
    /// rates.
    pub fn energy_of_span(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        wh: i64,
        export_wh: i64,
    ) -> SegmentEnergy {
        let basis_points = self
            .slot_of_span(from, to)
            .map_or(0, |i| self.version.tod[i].basis_points());
        SegmentEnergy {
            wh,
            tod_weight: wh.saturating_mul(basis_points),
            export_wh,
        }
    }

    /// The time-of-day slot (its index in the version's `tod`) whose rate a span from `from` to
    /// `to` takes: the one holding `from` (local time) when the span is at most one demand
    /// interval; none for a longer span (its time of use is not known) or outside every slot.
    pub fn slot_of_span(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<usize> {
        if (to - from).num_seconds() > INTERVAL_SECS {
            return None;
        }
        let local = civil::local(from).time();
        let minute = chrono::Timelike::hour(&local) * 60 + chrono::Timelike::minute(&local);
        let minute = u16::try_from(minute).unwrap_or(0);
        self.version
            .tod
            .iter()
            .position(|slot| slot.contains(minute))
    }

    fn slab_lines(&self, wh: i64) -> Vec<BillLine> {
        let mut cumulative: i128 = 0;
        self.slab_millipaise(wh)
            .zip(&self.version.slabs)
            .filter(|((_, _, in_slab, _), _)| *in_slab > 0)
            .map(|((lower, upper, in_slab, mp), slab)| {
                let before = saturating_paise(cumulative / 1000);
                cumulative = cumulative.saturating_add(mp);
                BillLine {
                    version_id: self.version.id.clone(),
                    from_wh: lower,
                    to_wh: upper,
                    units_wh: in_slab,
                    paise_per_kwh: slab.paise_per_kwh,
                    amount_paise: saturating_paise(cumulative / 1000).saturating_sub(before),
                }
            })
            .collect()
    }
}

/// One slab's part of a bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BillLine {
    /// The tariff version whose slab this is.
    pub version_id: String,
    /// Slab bounds in Wh after pro-rating (upper absent for the open-ended slab).
    pub from_wh: i64,
    /// Upper slab bound in Wh after pro-rating; None for the open-ended slab.
    pub to_wh: Option<i64>,
    /// Energy billed in this slab, in Wh.
    pub units_wh: i64,
    /// The slab's rate, in paise per kWh.
    pub paise_per_kwh: i64,
    /// Energy charge of this slab, in paise (the lines of a segment add up to its floored charge).
    pub amount_paise: i64,
}

/// One time-of-day slot's part of a bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TodLine {
    /// The tariff version whose slot this is.
    pub version_id: String,
    /// The slot's name.
    pub slot: String,
    /// Local start of the slot.
    pub from: ClockTime,
    /// Local end of the slot.
    pub to: ClockTime,
    /// Energy used in the slot, in Wh.
    pub units_wh: i64,
    /// The slot's percentage on the energy charge.
    pub percent: f64,
    /// Surcharge (positive) or rebate (negative), in paise (the lines of a segment add up to its
    /// floored adjustment).
    pub amount_paise: i64,
}

/// A month's bill broken down by slab and component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bill {
    /// The local month, as `YYYY-MM`.
    pub month: String,
    /// The consumer category billed.
    pub category: Category,
    /// Days in the month (28 to 31).
    pub month_days: u32,
    /// Energy imported, in Wh.
    pub units_wh: i64,
    /// Energy exported (net metering), in Wh.
    pub export_wh: i64,
    /// Units the energy charge is on (import less export, segment by segment), in Wh.
    pub net_wh: i64,
    /// Export beyond the import, not charged and not credited, in Wh.
    pub surplus_wh: i64,
    /// Slab-by-slab breakdown of the energy charge, segment by segment.
    pub lines: Vec<BillLine>,
    /// Time-of-day slots used, segment by segment (empty without slots).
    pub tod_lines: Vec<TodLine>,
    /// Energy charge, in paise.
    pub energy_paise: i64,
    /// Time-of-day surcharges less rebates, in paise.
    pub tod_paise: i64,
    /// Fixed charges of the month's days, in paise.
    pub fixed_paise: i64,
    /// Electricity duty, in paise.
    pub duty_paise: i64,
    /// Top-up to the minimum monthly charge, in paise (zero when the minimum is met).
    pub minimum_topup_paise: i64,
    /// The month's maximum demand, in W (the demand charge's basis).
    pub max_demand_w: i64,
    /// Demand charge on the maximum demand, in paise (zero where the tariff has none).
    pub demand_paise: i64,
    /// Everything above: energy + time of day + duty + fixed + minimum top-up + demand, in paise.
    pub total_paise: i64,
}

/// Formats paise as rupees with two decimals, e.g. `₹1,025.00` style without grouping: `1025.00`.
pub fn rupees(paise: i64) -> String {
    let sign = if paise < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", paise.abs() / 100, paise.abs() % 100)
}

impl fmt::Display for Bill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kwh = |wh: i64| format!("{}.{:03}", wh / 1000, wh % 1000);
        writeln!(
            f,
            "{} tariff, {} ({} days), {} kWh",
            self.category,
            self.month,
            self.month_days,
            kwh(self.units_wh)
        )?;
        if self.export_wh != 0 {
            writeln!(
                f,
                "  exported {:>12} kWh, net {:>12} kWh billed, surplus {} kWh not charged",
                kwh(self.export_wh),
                kwh(self.net_wh),
                kwh(self.surplus_wh)
            )?;
        }
        for line in &self.lines {
            let upper = line.to_wh.map_or_else(|| "up".to_string(), kwh);
            writeln!(
                f,
                "  slab {:>9} - {:>9} kWh  {:>10} kWh x {:>6} /kWh = {:>10}   [{}]",
                kwh(line.from_wh),
                upper,
                kwh(line.units_wh),
                rupees(line.paise_per_kwh),
                rupees(line.amount_paise),
                line.version_id
            )?;
        }
        writeln!(
            f,
            "  energy charge        {:>12}",
            rupees(self.energy_paise)
        )?;
        for line in &self.tod_lines {
            writeln!(
                f,
                "  time of day {:<8} {}-{}  {:>10} kWh  {:>+7.2} % = {:>10}   [{}]",
                line.slot,
                line.from,
                line.to,
                kwh(line.units_wh),
                line.percent,
                rupees(line.amount_paise),
                line.version_id
            )?;
        }
        if !self.tod_lines.is_empty() {
            writeln!(f, "  time-of-day adjustment{:>10}", rupees(self.tod_paise))?;
        }
        writeln!(f, "  fixed charge         {:>12}", rupees(self.fixed_paise))?;
        writeln!(f, "  electricity duty     {:>12}", rupees(self.duty_paise))?;
        writeln!(
            f,
            "  minimum-charge top-up{:>12}",
            rupees(self.minimum_topup_paise)
        )?;
        if self.demand_paise != 0 {
            writeln!(
                f,
                "  demand charge        {:>12}   [{} kW maximum demand]",
                rupees(self.demand_paise),
                kwh(self.max_demand_w)
            )?;
        }
        write!(f, "  total (INR)          {:>12}", rupees(self.total_paise))
    }
}

#[cfg(test)]
pub(crate) mod tests;
