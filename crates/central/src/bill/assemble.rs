//! A month's bill put together from facts already read (no database, no clock): the consumer, the
//! meters' registers, the tariff's bill of the month's readings and the month's statement.
//!
//! The charges a bill shows are the ledger's: what the month's statement took off the balance
//! (energy, time of day and duty of the readings read in the month; the fixed charges the gateway
//! posted day by day; minimum and demand charges, which a gateway posts at the first pass of the
//! month after the one they are for). Where the tariff's figures for the month differ from those,
//! a [`Note`] gives both and says why, so a bill never shows two totals without a word.
use crate::accounts::ArrearsReport;
use crate::export::{Statement, StatementLine};
use chrono::{DateTime, NaiveDate, Utc};
use gramgrid_core::civil::Month;
use gramgrid_core::rating::{RegisterReading, EXPORT_UNKNOWN};
use gramgrid_core::tariff::{Bill, Category};
use serde::Serialize;

/// Who the bill is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consumer {
    /// The account id.
    pub account: String,
    /// The consumer's name.
    pub name: String,
    /// The tariff category.
    pub category: Category,
    /// The gateway (the village's) serving the account, if assigned.
    pub gateway: Option<String>,
    /// The load the connection is sanctioned for, in W, if recorded.
    pub sanctioned_load_w: Option<i64>,
}

/// A meter's registers at one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Register {
    /// When the meter took the reading (UTC).
    pub at: DateTime<Utc>,
    /// The cumulative import register, in Wh.
    pub import_wh: i64,
    /// The cumulative export register, in Wh; None where it was not read (an installation
    /// baseline).
    pub export_wh: Option<i64>,
}

impl From<RegisterReading> for Register {
    fn from(r: RegisterReading) -> Register {
        Register {
            at: r.at,
            import_wh: r.register_wh,
            export_wh: (r.export_wh != EXPORT_UNKNOWN).then_some(r.export_wh),
        }
    }
}

/// One meter's registers at the start and the end of the month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeterRegisters {
    /// The meter's serial.
    pub serial: String,
    /// The last reading before the month (local midnight on the 1st), or for a meter installed in
    /// the month its first reading; None for a meter with no reading by the month's end.
    pub opening: Option<Register>,
    /// The last reading before the month's end.
    pub closing: Option<Register>,
    /// Closing less opening import register, in Wh.
    pub import_wh: i64,
    /// Closing less opening export register, in Wh, where both were read.
    pub export_wh: Option<i64>,
}

impl MeterRegisters {
    /// The registers of a meter from its readings (any order) around the month `[start, end)`.
    /// Energy is billed in the month it is read, so a reading at midnight on the 1st opens
    /// nothing: its span is this month's, and the opening register is the reading before it.
    pub fn of(
        serial: &str,
        readings: &[RegisterReading],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> MeterRegisters {
        let before_start = readings
            .iter()
            .filter(|r| r.at < start)
            .max_by_key(|r| r.at);
        let first_in_month = readings
            .iter()
            .filter(|r| r.at >= start && r.at < end)
            .min_by_key(|r| r.at);
        let opening = before_start.or(first_in_month).copied().map(Register::from);
        let closing = readings
            .iter()
            .filter(|r| r.at < end)
            .max_by_key(|r| r.at)
            .copied()
            .map(Register::from);
        let (import_wh, export_wh) = match (opening, closing) {
            (Some(o), Some(c)) => (
                c.import_wh - o.import_wh,
                o.export_wh.zip(c.export_wh).map(|(o, c)| c - o),
            ),
            _ => (0, None),
        };
        MeterRegisters {
            serial: serial.to_owned(),
            opening,
            closing,
            import_wh,
            export_wh,
        }
    }
}

/// A component of the month's charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeKind {
    /// Energy charge of the units read in the month (the slab lines).
    Energy,
    /// Time-of-day surcharges less rebates on it.
    TimeOfDay,
    /// Fixed charges of the month's days.
    Fixed,
    /// A top-up to a month's minimum charge.
    Minimum,
    /// A demand charge on a month's maximum demand.
    Demand,
    /// Electricity duty on the energy charge and its time-of-day adjustment.
    Duty,
    /// Any other charge in the ledger.
    Other,
}

/// One line of the month's charges, as the ledger took it off the balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeLine {
    /// What it is.
    pub kind: ChargeKind,
    /// For a minimum or demand charge, the month it is for (`YYYY-MM`; a gateway charges it at the
    /// start of the month after).
    pub for_month: Option<String>,
    /// The charge, in paise (a debit; negative only for a time-of-day rebate).
    pub amount_paise: i64,
}

/// A money event of the month other than a charge: a recharge, an adjustment, an emergency
/// credit, an export credit, arrears recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountLine {
    /// The statement's line.
    #[serde(flatten)]
    pub line: StatementLine,
    /// For an export credit, the month whose export it credits.
    pub for_month: Option<String>,
}

/// The prepaid account's month: opening balance, credits, arrears recovered, charges, closing
/// balance. `opening + credits − arrears recovered − charges = closing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountPart {
    /// Balance at the start of the month, in paise.
    pub opening_paise: i64,
    /// The month's money events other than charges, in time order.
    pub lines: Vec<AccountLine>,
    /// What those lines added to the balance, in paise.
    pub credits_paise: i64,
    /// Arrears recovered from recharges in the month, in paise (not added to the balance).
    pub arrears_recovered_paise: i64,
    /// The month's charges (the bill's total), in paise.
    pub charges_paise: i64,
    /// Balance at the end of the month, in paise.
    pub closing_paise: i64,
    /// Arrears at the end of the month.
    pub arrears: ArrearsReport,
}

/// Why a figure of the tariff's bill for the month is not what the ledger charged in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Note {
    /// The readings, rated again with the tariff, give another energy charge (with time of day
    /// and duty) than the ledger holds: the tariff book or the account's category changed after
    /// they were rated. The bill shows the ledger's.
    RatingDiffers {
        /// Energy, time of day and duty by the tariff, in paise.
        tariff_paise: i64,
        /// What the ledger charged for them, in paise.
        charged_paise: i64,
    },
    /// Fixed charges are posted day by day by the gateway, from the day the account opened, up to
    /// its last pass: a month not over, a gateway not yet synced or an account opened in the month
    /// charges fewer days than the whole month.
    FixedPartial {
        /// The whole month's fixed charge, in paise.
        tariff_paise: i64,
        /// The days charged, in paise.
        charged_paise: i64,
    },
    /// The month's minimum-charge top-up is charged at the gateway's first pass of the next month
    /// (on the energy and fixed charges posted by then), so it is on next month's bill.
    MinimumNextMonth {
        /// The top-up by the tariff on this bill's figures, in paise.
        tariff_paise: i64,
        /// What the gateway charged for this month, if it has.
        charged_paise: Option<i64>,
    },
    /// The month's demand charge is charged at the gateway's first pass of the next month, so it
    /// is on next month's bill.
    DemandNextMonth {
        /// The month's maximum demand, in W.
        max_demand_w: i64,
        /// The demand charge by the tariff, in paise.
        tariff_paise: i64,
        /// What the gateway charged for this month, if it has.
        charged_paise: Option<i64>,
    },
    /// Net metering's credit for the month's export is given at the gateway's first pass of the
    /// next month (`core::netmeter`), so it is on next month's bill.
    ExportCreditNextMonth {
        /// Energy exported in the month, in Wh.
        export_wh: i64,
        /// The credit the gateway gave for this month, if it has.
        credited_paise: Option<i64>,
    },
    /// The registers' difference is not the units billed: a register went back (billed nothing
    /// and reported), or the units read in the month include a span from before a meter's
    /// replacement.
    RegistersDiffer {
        /// Closing less opening import registers, all meters, in Wh.
        registers_wh: i64,
        /// Units billed in the month, in Wh.
        billed_wh: i64,
    },
}

/// Everything a month's bill is made from.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Who the bill is for.
    pub consumer: Consumer,
    /// The first and last local day of the month.
    pub period: (NaiveDate, NaiveDate),
    /// Each meter's registers around the month.
    pub registers: Vec<MeterRegisters>,
    /// The tariff's bill of the month's readings (`TariffBook::bill` on `rating::month_usage`).
    pub tariff: Bill,
    /// The month's statement.
    pub statement: Statement,
    /// The month's own minimum and demand charges and export credit wherever posted (ids ending
    /// `:<month>`; a gateway posts them at the start of the next month).
    pub after: Vec<StatementLine>,
}

/// A printable monthly bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonthBill {
    /// Who the bill is for.
    pub consumer: Consumer,
    /// The Asia/Kolkata month, `YYYY-MM`.
    pub month: String,
    /// The first local day of the month.
    pub period_from: NaiveDate,
    /// The last local day of the month.
    pub period_to: NaiveDate,
    /// Each meter's registers at the start and the end of the month.
    pub registers: Vec<MeterRegisters>,
    /// The tariff's bill of the month's readings: units (imported, exported, net), slab lines,
    /// time-of-day lines, and each component by the tariff.
    pub tariff: Bill,
    /// The month's charges as the ledger took them, in the bill's order.
    pub charges: Vec<ChargeLine>,
    /// The prepaid account's month.
    pub account: AccountPart,
    /// Where the tariff's figures and the ledger's differ, and why.
    pub notes: Vec<Note>,
}

/// The ledger kinds that are charges on a bill.
const CHARGE_KINDS: [(&str, ChargeKind); 4] = [
    ("fixed_charge", ChargeKind::Fixed),
    ("minimum_charge", ChargeKind::Minimum),
    ("demand_charge", ChargeKind::Demand),
    ("charge", ChargeKind::Other),
];

/// The month a gateway's month-end event is for: its id ends `:<YYYY-MM>`.
fn month_of_id(id: &str) -> Option<String> {
    id.rsplit_once(':')
        .map(|(_, month)| month)
        .filter(|month| Month::parse(month).is_some())
        .map(str::to_owned)
}

/// Assembles the bill. Its charges are the statement's, so `opening + credits − arrears
/// recovered − charges` is the statement's closing balance.
pub fn assemble(facts: Facts) -> MonthBill {
    let Facts {
        consumer,
        period,
        registers,
        tariff,
        statement,
        after,
    } = facts;
    let events_by_kind = |kind: ChargeKind| -> Vec<ChargeLine> {
        statement
            .events
            .iter()
            .filter(|e| {
                CHARGE_KINDS
                    .iter()
                    .any(|(name, k)| *k == kind && e.kind == *name)
            })
            .map(|e| ChargeLine {
                kind,
                for_month: matches!(kind, ChargeKind::Minimum | ChargeKind::Demand)
                    .then(|| month_of_id(&e.id))
                    .flatten(),
                amount_paise: -e.effect_paise,
            })
            .collect()
    };
    let fixed: i64 = events_by_kind(ChargeKind::Fixed)
        .iter()
        .map(|l| l.amount_paise)
        .sum();
    let line = |kind, amount_paise| ChargeLine {
        kind,
        for_month: None,
        amount_paise,
    };
    let mut charges = vec![line(ChargeKind::Energy, statement.energy_paise)];
    if statement.tod_paise != 0 || !tariff.tod_lines.is_empty() {
        charges.push(line(ChargeKind::TimeOfDay, statement.tod_paise));
    }
    charges.push(line(ChargeKind::Fixed, fixed));
    charges.extend(events_by_kind(ChargeKind::Minimum));
    charges.extend(events_by_kind(ChargeKind::Demand));
    charges.push(line(ChargeKind::Duty, statement.duty_paise));
    charges.extend(events_by_kind(ChargeKind::Other));
    let charges_paise: i64 = charges.iter().map(|c| c.amount_paise).sum();

    let lines: Vec<AccountLine> = statement
        .events
        .iter()
        .filter(|e| !CHARGE_KINDS.iter().any(|(name, _)| e.kind == *name))
        .map(|e| AccountLine {
            for_month: (e.kind == "export_credit")
                .then(|| month_of_id(&e.id))
                .flatten(),
            line: e.clone(),
        })
        .collect();
    let credits_paise = lines.iter().map(|l| l.line.effect_paise).sum();
    let account = AccountPart {
        opening_paise: statement.opening_paise,
        lines,
        credits_paise,
        arrears_recovered_paise: statement.arrears_recovered_paise,
        charges_paise,
        closing_paise: statement.closing_paise,
        arrears: statement.arrears,
    };

    let notes = notes(&tariff, &statement, fixed, &registers, &after);
    MonthBill {
        consumer,
        month: statement.month.clone(),
        period_from: period.0,
        period_to: period.1,
        registers,
        tariff,
        charges,
        account,
        notes,
    }
}

/// Where the tariff's figures differ from the ledger's.
fn notes(
    tariff: &Bill,
    statement: &Statement,
    fixed_charged: i64,
    registers: &[MeterRegisters],
    after: &[StatementLine],
) -> Vec<Note> {
    let mut notes = Vec::new();
    let rated = tariff.energy_paise + tariff.tod_paise + tariff.duty_paise;
    let charged = statement.energy_paise + statement.tod_paise + statement.duty_paise;
    if rated != charged {
        notes.push(Note::RatingDiffers {
            tariff_paise: rated,
            charged_paise: charged,
        });
    }
    if tariff.fixed_paise != fixed_charged {
        notes.push(Note::FixedPartial {
            tariff_paise: tariff.fixed_paise,
            charged_paise: fixed_charged,
        });
    }
    // The month's own month-end event of `kind` among `lines`: its amount.
    let own = |kind: &str, lines: &[StatementLine]| -> Option<i64> {
        let lines: Vec<&StatementLine> = lines
            .iter()
            .filter(|e| e.kind == kind && month_of_id(&e.id).as_deref() == Some(&*tariff.month))
            .collect();
        (!lines.is_empty()).then(|| lines.iter().map(|e| e.effect_paise.abs()).sum())
    };
    // Posted within the month itself, it is one of this bill's lines and needs no word.
    let later = |kind: &str| own(kind, &statement.events).is_none();
    let posted = |kind: &str| own(kind, after);
    let minimum = posted("minimum_charge");
    if later("minimum_charge") && (tariff.minimum_topup_paise != 0 || minimum.is_some()) {
        notes.push(Note::MinimumNextMonth {
            tariff_paise: tariff.minimum_topup_paise,
            charged_paise: minimum,
        });
    }
    let demand = posted("demand_charge");
    if later("demand_charge") && (tariff.demand_paise != 0 || demand.is_some()) {
        notes.push(Note::DemandNextMonth {
            max_demand_w: tariff.max_demand_w,
            tariff_paise: tariff.demand_paise,
            charged_paise: demand,
        });
    }
    let credit = posted("export_credit");
    if later("export_credit") && (tariff.export_wh != 0 || credit.is_some()) {
        notes.push(Note::ExportCreditNextMonth {
            export_wh: tariff.export_wh,
            credited_paise: credit,
        });
    }
    let registers_wh: i64 = registers.iter().map(|r| r.import_wh).sum();
    if registers_wh != tariff.units_wh {
        notes.push(Note::RegistersDiffer {
            registers_wh,
            billed_wh: tariff.units_wh,
        });
    }
    notes
}

#[cfg(test)]
mod tests;
