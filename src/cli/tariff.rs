//! `gramgrid tariff`: price consumption with the tariff book.
use super::gateway::load_config;
use anyhow::Result;
use clap::Subcommand;
use gramgrid_core::civil::Month;
use gramgrid_core::tariff::{Category, Usage};
use std::path::PathBuf;

/// A consumer category on the command line (the core's `Category` knows nothing of clap).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CategoryArg {
    Domestic,
    Commercial,
    Agricultural,
}

impl From<CategoryArg> for Category {
    fn from(arg: CategoryArg) -> Category {
        match arg {
            CategoryArg::Domestic => Category::Domestic,
            CategoryArg::Commercial => Category::Commercial,
            CategoryArg::Agricultural => Category::Agricultural,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TariffCommand {
    /// A month's bill for some consumption, broken down by slab and component.
    Quote {
        /// Consumer category.
        #[arg(long, value_enum, default_value_t = CategoryArg::Domestic)]
        category: CategoryArg,
        /// Units (kWh) consumed in the month; decimals allowed.
        #[arg(long)]
        units: f64,
        /// Units (kWh) of the month used in a time-of-day slot, as SLOT=KWH (repeatable), e.g.
        /// `--slot-units peak=60`. Slots not named share the rest by their hours of the day.
        #[arg(long = "slot-units", value_name = "SLOT=KWH", value_parser = parse_slot_units)]
        slot_units: Vec<(String, f64)>,
        /// The month's maximum demand in kW (highest 15-minute average), for a tariff with a
        /// demand charge.
        #[arg(long = "max-demand-kw", default_value_t = 0.0)]
        max_demand_kw: f64,
        /// Units (kWh) a rooftop-solar home exported in the month (net metering: the slabs are on
        /// the units imported less those exported, never below zero).
        #[arg(long = "export-units", default_value_t = 0.0)]
        export_units: f64,
        /// Month to price (YYYY-MM); default: the current month in Asia/Kolkata.
        #[arg(long, value_parser = parse_month)]
        month: Option<Month>,
        /// Take the tariff book from this gateway config instead of the built-in one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the tariff book in force (config or built-in) as TOML.
    Show {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn parse_slot_units(text: &str) -> std::result::Result<(String, f64), String> {
    let bad = || format!("'{text}' is not SLOT=KWH; write e.g. peak=60");
    let (slot, units) = text.split_once('=').ok_or_else(bad)?;
    let units: f64 = units.trim().parse().map_err(|_| bad())?;
    if slot.trim().is_empty() || !units.is_finite() || units < 0.0 {
        return Err(bad());
    }
    Ok((slot.trim().to_string(), units))
}

/// kWh (or kW) as typed to whole Wh (or W).
fn to_wh(kwh: f64) -> i64 {
    (kwh * 1000.0).round() as i64
}

pub(super) fn parse_month(text: &str) -> std::result::Result<Month, String> {
    Month::parse(text)
        .ok_or_else(|| format!("'{text}' is not a month; write it as YYYY-MM, e.g. 2026-11"))
}

pub(super) fn run(what: TariffCommand) -> Result<()> {
    match what {
        TariffCommand::Quote {
            category,
            units,
            slot_units,
            max_demand_kw,
            export_units,
            month,
            config,
            json,
        } => {
            if !units.is_finite() || !(0.0..=1.0e9).contains(&units) {
                anyhow::bail!("--units {units} is not a monthly consumption; give a number of kWh such as 250");
            }
            if !export_units.is_finite() || !(0.0..=1.0e9).contains(&export_units) {
                anyhow::bail!("--export-units {export_units} is not a month's export; give a number of kWh such as 120");
            }
            let book = load_config(config.as_deref())?.tariff_book()?;
            let month = month.unwrap_or_else(|| Month::containing(chrono::Utc::now()));
            if !max_demand_kw.is_finite() || !(0.0..=200.0).contains(&max_demand_kw) {
                anyhow::bail!("--max-demand-kw {max_demand_kw} is not a household's demand; give kW from 0 to 200, such as 3.5");
            }
            let usage = Usage {
                units_wh: to_wh(units),
                slot_units: slot_units
                    .into_iter()
                    .map(|(slot, kwh)| (slot, to_wh(kwh)))
                    .collect(),
                max_demand_w: to_wh(max_demand_kw),
                export_wh: to_wh(export_units),
            };
            let bill = book.quote_usage(category.into(), month, &usage)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&bill)?);
            } else {
                println!("{bill}");
            }
            Ok(())
        }
        TariffCommand::Show { config } => {
            #[derive(serde::Serialize)]
            struct Book<'a> {
                tariff: &'a [gramgrid_core::tariff::TariffVersion],
            }
            let book = load_config(config.as_deref())?.tariff_book()?;
            print!(
                "{}",
                toml::to_string(&Book {
                    tariff: book.versions()
                })?
            );
            Ok(())
        }
    }
}
