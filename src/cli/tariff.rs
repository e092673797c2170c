//! `gramgrid tariff`: price consumption with the tariff book.
use super::gateway::load_config;
use anyhow::Result;
use clap::Subcommand;
use gramgrid_core::civil::Month;
use gramgrid_core::tariff::Category;
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

fn parse_month(text: &str) -> std::result::Result<Month, String> {
    Month::parse(text)
        .ok_or_else(|| format!("'{text}' is not a month; write it as YYYY-MM, e.g. 2026-11"))
}

pub(super) fn run(what: TariffCommand) -> Result<()> {
    match what {
        TariffCommand::Quote {
            category,
            units,
            month,
            config,
            json,
        } => {
            if !units.is_finite() || !(0.0..=1.0e9).contains(&units) {
                anyhow::bail!("--units {units} is not a monthly consumption; give a number of kWh such as 250");
            }
            let book = load_config(config.as_deref())?.tariff_book()?;
            let month = month.unwrap_or_else(|| Month::containing(chrono::Utc::now()));
            let bill = book.quote(category.into(), month, (units * 1000.0).round() as i64);
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
