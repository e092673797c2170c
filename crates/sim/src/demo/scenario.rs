//! The village's consumers as the demo scripts them (pure, from a seed): who they are, the credit
//! they start with, their routine top-ups, and how they pay after their supply is cut.
use crate::meter::fleet::PlannedMeter;
use crate::meter::profile;
use chrono::{DateTime, Duration, Utc};
use gramgrid_central::accounts::{Account, Meter};
use gramgrid_core::civil::{self, Month};
use gramgrid_core::policy::{self, PolicyConfig};
use gramgrid_core::tariff::{Category, ClockTime, TariffBook, TariffVersion, TodSlot};
use gramgrid_proto::wire::MeterKeys;
use rand::Rng;

/// Share of households that start with under two days of credit (alerts, cuts and reconnections
/// happen within the demo's days), rounded, at least one. Below the breaker's 10 % a day, so that
/// the ordinary cuts go ahead and only the bad publish trips it.
const SHORT_OF_CREDIT: f64 = 0.08;
/// Share of households that top up once at central during the demo, whatever their balance.
const ROUTINE_TOP_UP: f64 = 0.12;
/// Share of cut-off households that pay within the demo.
const PAYS_AFTER_CUT: f64 = 0.85;
/// Share of households that move from post-paid owing arrears (rounded, at least one); each tops
/// up once during the demo, and a share of that recharge goes to the arrears.
const WITH_ARREARS: f64 = 0.04;

/// `share` of `n` households, rounded, at least one (none of none), drawn at random.
fn some_of(n: usize, share: f64, rng: &mut impl Rng) -> std::collections::HashSet<usize> {
    let k = ((n as f64 * share).round() as usize).clamp(n.min(1), n);
    rand::seq::index::sample(rng, n, k).into_iter().collect()
}
/// While the backhaul is down, the share of payers who buy a voucher (typed in at the gateway)
/// rather than pay at a counter (credited at central, reaching the gateway when the link returns).
const VOUCHER_WHILE_DOWN: f64 = 0.6;

/// One household: its account and meter as central enrols them, and its opening credit.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// The account as central enrols it, on the demo's gateway.
    pub account: Account,
    /// Its meter, with radio keys and its register at installation.
    pub meter: Meter,
    /// Opening credit in paise: a drawn number of days of the household's typical daily cost,
    /// rounded up to whole ₹10 (at least ₹10).
    pub opening_paise: i64,
}

/// How a consumer pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// At a counter, a bank or by UPI: a recharge recorded at central.
    Central,
    /// A voucher code bought from an agent and redeemed at the gateway (works with the link down).
    Voucher,
}

/// A payment a consumer makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// The paying account.
    pub account: String,
    /// When the consumer pays (simulated time, UTC).
    pub at: DateTime<Utc>,
    /// Amount paid, in paise (whole ₹50 steps).
    pub amount_paise: i64,
    /// Where the money is paid: at central or by voucher at the gateway.
    pub channel: Channel,
}

/// A span of the run: the backhaul outage, or the feeder cut; down from `from` until `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// First instant the backhaul (or the feeder) is down.
    pub from: DateTime<Utc>,
    /// First instant it is up again.
    pub to: DateTime<Utc>,
}

impl Outage {
    /// Whether the backhaul (or the feeder) is down at `at`.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && at < self.to
    }
}

/// Consumer number of the `i`-th household.
pub fn account_id(i: usize) -> String {
    format!("CG-{:06}", i + 1)
}

/// The households of a planned fleet: one account per meter, created at `start` on `gateway`, each
/// meter with its radio keys and its register at installation; opening credit worth a draw of days
/// at the household's expected consumption.
pub fn consumers(
    plan: &[PlannedMeter],
    registers_wh: &[u64],
    gateway: &str,
    start: DateTime<Utc>,
    book: &TariffBook,
    rng: &mut impl Rng,
) -> Vec<Consumer> {
    let short = some_of(plan.len(), SHORT_OF_CREDIT, rng);
    plan.iter()
        .zip(registers_wh)
        .enumerate()
        .map(|(i, (m, register))| {
            let account = Account {
                // Every fifth household reads its messages in Hindi.
                language: if i % 5 == 4 {
                    gramgrid_core::message::Language::Hindi
                } else {
                    gramgrid_core::message::Language::English
                },
                id: account_id(i),
                consumer_name: format!("Household {}", i + 1),
                category: m.category,
                phone: Some(format!("+9198{:08}", i + 1)),
                gateway: Some(gateway.to_string()),
                created_at: start,
            };
            let meter = Meter {
                serial: m.serial.clone(),
                account: account.id.clone(),
                installed_at: start,
                initial_register_wh: i64::try_from(*register).ok(),
                keys: Some(MeterKeys {
                    dev_addr: m.keys.dev_addr.0,
                    nwk_skey: m.keys.nwk_skey.to_storage_hex(),
                    app_skey: m.keys.app_skey.to_storage_hex(),
                }),
                dlms: m.dlms.as_ref().map(|d| d.security.clone()),
                relay_state: "unknown".into(),
            };
            let days_of_credit = if short.contains(&i) {
                rng.random_range(0.1..1.2)
            } else {
                rng.random_range(4.0..25.0)
            };
            let worth = days_of_credit * daily_cost_paise(book, &account, start) as f64;
            Consumer {
                opening_paise: round_up_to_ten_rupees(worth as i64).max(1_000),
                account,
                meter,
            }
        })
        .collect()
}

/// What a day costs a household of this category at its mean consumption (energy, fixed
/// charge and duty for a month of it, divided by the month's days).
fn daily_cost_paise(book: &TariffBook, account: &Account, at: DateTime<Utc>) -> i64 {
    let month = Month::containing(at);
    let days = i64::from(month.days());
    let daily_wh = i64::try_from(profile::mean_daily_wh(account.category)).unwrap_or(0);
    book.quote(account.category, month, daily_wh * days)
        .total_paise
        / days
}

fn round_up_to_ten_rupees(paise: i64) -> i64 {
    (paise + 999).div_euclid(1_000) * 1_000
}

/// A draw of `low..=high` rupees in steps of 50, in paise.
fn rupees_in_fifties(low: i64, high: i64, rng: &mut impl Rng) -> i64 {
    rng.random_range(low / 50..=high / 50) * 50 * 100
}

/// Routine top-ups at central: some households pay once at a random moment between `from` and
/// `until`, whatever their balance.
pub fn routine_top_ups(
    consumers: &[Consumer],
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    rng: &mut impl Rng,
) -> Vec<Payment> {
    let span = (until - from).num_seconds().max(1);
    let mut payments = Vec::new();
    for c in consumers {
        if rng.random_bool(ROUTINE_TOP_UP) {
            payments.push(Payment {
                account: c.account.id.clone(),
                at: from + Duration::seconds(rng.random_range(0..span)),
                amount_paise: rupees_in_fifties(300, 1_000, rng),
                channel: Channel::Central,
            });
        }
    }
    payments.sort_by_key(|p| p.at);
    payments
}

/// What a household whose supply was cut at `cut_at` does: most pay one to five hours later, by
/// voucher or at a counter while the backhaul is down, at a counter when it is up.
pub fn payment_after_cut(
    account: &str,
    cut_at: DateTime<Utc>,
    outage: Option<Outage>,
    rng: &mut impl Rng,
) -> Option<Payment> {
    if !rng.random_bool(PAYS_AFTER_CUT) {
        return None;
    }
    let at = cut_at + Duration::minutes(rng.random_range(60..=300));
    let down = outage.is_some_and(|o| o.contains(at));
    let channel = if down && rng.random_bool(VOUCHER_WHILE_DOWN) {
        Channel::Voucher
    } else {
        Channel::Central
    };
    Some(Payment {
        account: account.to_string(),
        at,
        amount_paise: rupees_in_fifties(200, 600, rng),
        channel,
    })
}

/// Households that bring arrears from post-paid: (account, arrears in paise, ₹300 to ₹2,000 in
/// ₹50 steps), each with a top-up at central between `from` and `until` so the recovery shows.
pub fn arrears(
    consumers: &[Consumer],
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    rng: &mut impl Rng,
) -> (Vec<(String, i64)>, Vec<Payment>) {
    let span = (until - from).num_seconds().max(1);
    let chosen = some_of(consumers.len(), WITH_ARREARS, rng);
    let mut owed = Vec::new();
    let mut top_ups = Vec::new();
    for (i, c) in consumers.iter().enumerate() {
        if chosen.contains(&i) {
            owed.push((c.account.id.clone(), rupees_in_fifties(300, 2_000, rng)));
            top_ups.push(Payment {
                account: c.account.id.clone(),
                at: from + Duration::seconds(rng.random_range(0..span)),
                amount_paise: rupees_in_fifties(400, 1_500, rng),
                channel: Channel::Central,
            });
        }
    }
    (owed, top_ups)
}

/// The household the demo protects (a health centre): the first one that starts short of credit,
/// so that it runs out during the demo and shows that it is left on.
pub fn protected<'a>(consumers: &'a [Consumer], book: &TariffBook) -> Option<&'a Consumer> {
    consumers
        .iter()
        .find(|c| c.opening_paise < daily_cost_paise(book, &c.account, c.account.created_at))
}

/// The policy a tired office engineer publishes by mistake (a test policy): a disconnect threshold
/// of 1,000 INR, above nearly every household's balance, and no grace after crossing it, so that
/// nearly every household is due for a cut in the next window.
pub fn bad_policy(good: &PolicyConfig) -> PolicyConfig {
    PolicyConfig {
        disconnect_threshold_paise: policy::MAX_THRESHOLD_PAISE,
        first_disconnect: policy::Grace::After(std::time::Duration::ZERO),
        ..good.clone()
    }
}

/// When the office publishes the bad policy: 11:45 IST on the last day of the run whose 12:00 is
/// in a disconnect window (after the morning's ordinary cuts), with the backhaul up from then
/// until the correction two hours later (so the gateway receives both). None when no day
/// qualifies (the demo then skips it).
pub fn bad_publish_at(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    outage: Option<Outage>,
    policy: &PolicyConfig,
) -> Option<DateTime<Utc>> {
    let first = civil::local_date(start);
    let last = civil::local_date(end - Duration::seconds(1));
    first
        .iter_days()
        .take_while(|day| *day <= last)
        .map(|day| civil::start_of_local_day(day) + Duration::minutes(11 * 60 + 45))
        .filter(|at| *at >= start && *at + BAD_POLICY_IN_FORCE < end)
        .filter(|at| policy::disconnect_allowed(policy, *at + Duration::minutes(15)).is_ok())
        .filter(|at| outage.is_none_or(|o| o.to <= *at || o.from >= *at + BAD_POLICY_IN_FORCE))
        .last()
}

/// How long the bad policy is in force before the office publishes the correction.
pub const BAD_POLICY_IN_FORCE: Duration = Duration::hours(2);

/// The id of the time-of-day tariff the office puts the village's shops on from the first day.
pub const TOD_TARIFF: &str = "demo-commercial-tod";

/// The commercial tariff with time-of-day slots, as India's 2023 consumer rules set them for
/// commercial consumers: the evening peak 20 % dearer, solar hours 20 % cheaper; and a demand
/// charge of ₹100 per kW of the month's maximum demand, charged after the month ends. In force
/// from `first_day`.
pub fn time_of_day_tariff(
    book: &TariffBook,
    first_day: chrono::NaiveDate,
) -> Option<TariffVersion> {
    let mut version = book.version_on(Category::Commercial, first_day)?.clone();
    version.id = TOD_TARIFF.into();
    version.effective_from = first_day;
    let slot = |name: &str, from: &str, to: &str, percent: f64| -> Option<TodSlot> {
        Some(TodSlot {
            name: name.into(),
            from: ClockTime::try_from(from.to_string()).ok()?,
            to: ClockTime::try_from(to.to_string()).ok()?,
            percent,
        })
    };
    version.tod = vec![
        slot("peak", "18:00", "22:00", 20.0)?,
        slot("solar", "09:00", "17:00", -20.0)?,
    ];
    version.demand_paise_per_kw = 10_000;
    Some(version)
}

/// The id of the domestic tariff that banks rooftop-solar homes' surplus export.
pub const NET_METERING_TARIFF: &str = "demo-domestic-net";

/// The domestic tariff with net metering's banking: a month's surplus export is banked for the
/// months after, and what is left at the end of March is paid at ₹2.30 per kWh (about what a
/// utility pays for its power). In force from `first_day`.
pub fn net_metering_tariff(
    book: &TariffBook,
    first_day: chrono::NaiveDate,
) -> Option<TariffVersion> {
    let mut version = book.version_on(Category::Domestic, first_day)?.clone();
    version.id = NET_METERING_TARIFF.into();
    version.effective_from = first_day;
    version.export_banking = true;
    version.export_settlement_paise_per_kwh = 230;
    Some(version)
}

/// What the village's lines and transformer lose, in percent of what the households draw (the
/// gateway's `[audit]` allows 4 % of what the transformer delivers).
pub const LINE_LOSS_PERCENT: u64 = 4;
/// How many households go around their meters.
const BYPASSERS: usize = 2;

/// The households that go around their meters from the second day: the domestic ones with the
/// most credit (so no disconnection hides what they do), by enrolment order on a tie.
pub fn bypassers(consumers: &[Consumer]) -> Vec<usize> {
    let mut domestic: Vec<usize> = (0..consumers.len())
        .filter(|i| consumers[*i].account.category == Category::Domestic)
        .collect();
    domestic.sort_by_key(|i| (std::cmp::Reverse(consumers[*i].opening_paise), *i));
    domestic.truncate(BYPASSERS);
    domestic.sort_unstable();
    domestic
}

/// How many households have rooftop solar behind a net meter, and the peak of each array (W).
const SOLAR_HOMES: usize = 5;
/// A 2 kWp array makes more in a clear day than a village home uses: the surplus is banked.
pub const SOLAR_PEAK_W: u32 = 2_000;

/// The households with rooftop solar from the first day: the domestic ones with the most credit
/// after the bypassers (so no disconnection muddles their exports), by enrolment order on a tie.
pub fn rooftop_solar_homes(consumers: &[Consumer], bypassers: &[usize]) -> Vec<usize> {
    let mut domestic: Vec<usize> = (0..consumers.len())
        .filter(|i| consumers[*i].account.category == Category::Domestic)
        .filter(|i| !bypassers.contains(i))
        .collect();
    domestic.sort_by_key(|i| (std::cmp::Reverse(consumers[*i].opening_paise), *i));
    domestic.truncate(SOLAR_HOMES);
    domestic.sort_unstable();
    domestic
}

/// How they do it: from 18:00 to 23:00 each evening from the second day, the whole house and a
/// 4 kW heater and pump (1 kWh a quarter-hour) run on a hook around the meter.
pub fn bypass(start: DateTime<Utc>) -> crate::meter::supply::Bypass {
    crate::meter::supply::Bypass {
        from: start + Duration::days(1),
        hours: 18..23,
        extra_wh: 1_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::fleet;
    use chrono::TimeZone;
    use gramgrid_air::pathloss::PathLossModel;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 18, 30, 0).unwrap()
    }

    #[test]
    fn some_households_start_short_of_credit_and_none_with_less_than_ten_rupees() {
        let plan = fleet::plan(
            200,
            1500.0,
            1,
            &PathLossModel::rural(),
            &fleet::gateway_spec(),
        );
        let registers = vec![1_000; plan.len()];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let book = TariffBook::builtin();
        let consumers = consumers(&plan, &registers, "gw", start(), &book, &mut rng);
        assert_eq!(consumers.len(), 200);
        let domestic_day = daily_cost_paise(&book, &consumers[0].account, start());
        assert!(
            (2_000..10_000).contains(&domestic_day)
                || consumers[0].account.category != gramgrid_core::tariff::Category::Domestic
        );
        let short = consumers
            .iter()
            .filter(|c| c.opening_paise < 2 * daily_cost_paise(&book, &c.account, start()))
            .count();
        assert!((12..=20).contains(&short), "{short} of 200 short of credit");
        assert!(consumers
            .iter()
            .all(|c| c.opening_paise >= 1_000 && c.opening_paise % 1_000 == 0));
        assert!(consumers
            .iter()
            .all(|c| c.meter.keys.is_some() && c.meter.initial_register_wh == Some(1_000)));
    }

    #[test]
    fn the_bad_publish_comes_on_the_last_working_morning_with_the_backhaul_up() {
        let policy = PolicyConfig::default();
        // Tuesday 1 to Friday 4 December 2026 (00:00 IST).
        let start = start();
        let end = start + Duration::days(3);
        let thursday = start + Duration::days(2) + Duration::minutes(11 * 60 + 45);
        assert_eq!(bad_publish_at(start, end, None, &policy), Some(thursday));
        // Backhaul down over Thursday morning: Wednesday's.
        let down = Outage {
            from: thursday - Duration::hours(1),
            to: thursday + Duration::hours(1),
        };
        assert_eq!(
            bad_publish_at(start, end, Some(down), &policy),
            Some(thursday - Duration::days(1))
        );
        // A single Sunday has no window.
        let sunday = start - Duration::days(2);
        assert_eq!(
            bad_publish_at(sunday, sunday + Duration::days(1), None, &policy),
            None
        );
        assert_eq!(
            bad_policy(&policy).disconnect_threshold_paise,
            policy::MAX_THRESHOLD_PAISE
        );
    }

    proptest! {
        #[test]
        fn a_voucher_is_bought_only_while_the_backhaul_is_down(seed: u64, cut_minutes in 0i64..4_000) {
            let outage = Outage { from: start() + Duration::hours(20), to: start() + Duration::hours(50) };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let cut_at = start() + Duration::minutes(cut_minutes);
            if let Some(p) = payment_after_cut("A", cut_at, Some(outage), &mut rng) {
                prop_assert!(p.at >= cut_at + Duration::hours(1) && p.at <= cut_at + Duration::hours(5));
                prop_assert!(p.channel == Channel::Central || outage.contains(p.at));
                prop_assert!(p.amount_paise >= 20_000 && p.amount_paise <= 60_000);
            }
        }
    }
}
