//! A monthly bill as one self-contained HTML page (inline style, A4 print layout), in English or
//! Hindi, rupees and units grouped the Indian way.
use super::assemble::{ChargeKind, ChargeLine, MonthBill, Note, Register};
use chrono::{DateTime, NaiveDate, Utc};
use gramgrid_core::civil::{self, Month};
use gramgrid_core::message::Language;
use gramgrid_web::format::{inr, kwh};
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// The style sheet, inline so that the page prints the same from a file.
const STYLE: &str = include_str!("bill.css");

/// Every label the page shows, in English and Hindi. A test checks that each `tr` literal of
/// this file is here.
const TEXTS: &[(&str, &str)] = &[
    ("Electricity bill", "बिजली बिल"),
    ("Prepaid electricity", "प्रीपेड बिजली"),
    ("Consumer details", "उपभोक्ता विवरण"),
    ("Account number", "खाता संख्या"),
    ("Name", "नाम"),
    ("Category", "श्रेणी"),
    ("Village (gateway)", "गाँव (गेटवे)"),
    ("Meter", "मीटर"),
    ("Sanctioned load", "स्वीकृत भार"),
    ("Bill month", "बिल माह"),
    ("Bill period", "बिल अवधि"),
    ("days", "दिन"),
    ("not recorded", "दर्ज नहीं"),
    ("not assigned", "निर्धारित नहीं"),
    ("Meter readings", "मीटर रीडिंग"),
    ("Previous reading", "पिछली रीडिंग"),
    ("Present reading", "वर्तमान रीडिंग"),
    ("Difference", "अंतर"),
    ("Import", "आयात"),
    ("Export", "निर्यात"),
    ("no reading", "कोई रीडिंग नहीं"),
    ("not read", "पढ़ा नहीं गया"),
    ("Units consumed", "खपत यूनिट"),
    ("Units exported", "निर्यात यूनिट"),
    ("Net units billed", "बिल की गई शुद्ध यूनिट"),
    ("Energy charge by slab", "स्लैब अनुसार ऊर्जा शुल्क"),
    ("Slab (kWh)", "स्लैब (kWh)"),
    ("Units (kWh)", "यूनिट (kWh)"),
    ("Rate per kWh", "दर प्रति kWh"),
    ("Amount", "राशि"),
    ("and above", "और अधिक"),
    ("Tariff", "टैरिफ़"),
    ("Time of day", "दिन का समय"),
    ("Slot", "समय खंड"),
    ("Surcharge or rebate", "अधिभार या छूट"),
    ("Charges for the month", "माह के शुल्क"),
    ("Energy charge", "ऊर्जा शुल्क"),
    ("Time-of-day adjustment", "दिन के समय का समायोजन"),
    ("Fixed charge", "स्थायी शुल्क"),
    ("Minimum charge top-up", "न्यूनतम शुल्क पूर्ति"),
    ("Demand charge", "माँग शुल्क"),
    ("Electricity duty", "विद्युत शुल्क"),
    ("Other charge", "अन्य शुल्क"),
    ("for", "के लिए"),
    ("Total charges", "कुल शुल्क"),
    ("Prepaid account", "प्रीपेड खाता"),
    ("Date", "तारीख़"),
    ("Particulars", "विवरण"),
    ("Opening balance", "प्रारंभिक शेष"),
    ("Recharge", "रिचार्ज"),
    ("Adjustment", "समायोजन"),
    (
        "Emergency credit (lowers the disconnection limit, not added to the balance)",
        "आपातकालीन क्रेडिट (कनेक्शन कटने की सीमा घटाता है, शेष में नहीं जुड़ता)",
    ),
    ("Export credit", "निर्यात क्रेडिट"),
    (
        "Arrears recorded (recovered from recharges)",
        "दर्ज बकाया (रिचार्ज से वसूला जाता है)",
    ),
    ("of which to arrears", "जिसमें से बकाया में"),
    ("Other", "अन्य"),
    (
        "Arrears recovered from recharges",
        "रिचार्ज से वसूला गया बकाया",
    ),
    ("Less: charges for the month", "घटाएँ: माह के शुल्क"),
    ("Closing balance", "अंतिम शेष"),
    ("Arrears outstanding", "बकाया शेष"),
    (
        "Recharge needed to clear the balance",
        "शेष चुकाने के लिए आवश्यक रिचार्ज",
    ),
    ("Notes", "टिप्पणियाँ"),
    ("Maximum demand", "अधिकतम माँग"),
    (
        "Energy is billed in the month it is read. All times are Indian Standard Time.",
        "ऊर्जा का बिल उसी माह में बनता है जिसमें वह पढ़ी जाती है। सभी समय भारतीय मानक समय में हैं।",
    ),
    ("domestic", "घरेलू"),
    ("commercial", "व्यावसायिक"),
    ("agricultural", "कृषि"),
];

/// `text` (an English text of [`TEXTS`]) in `lang`; English where it has no translation.
fn tr(lang: Language, text: &'static str) -> &'static str {
    match lang {
        Language::English => text,
        Language::Hindi => TEXTS
            .iter()
            .find(|(en, _)| *en == text)
            .map_or(text, |(_, hi)| *hi),
    }
}

const MONTHS: [(&str, &str); 12] = [
    ("January", "जनवरी"),
    ("February", "फ़रवरी"),
    ("March", "मार्च"),
    ("April", "अप्रैल"),
    ("May", "मई"),
    ("June", "जून"),
    ("July", "जुलाई"),
    ("August", "अगस्त"),
    ("September", "सितंबर"),
    ("October", "अक्टूबर"),
    ("November", "नवंबर"),
    ("December", "दिसंबर"),
];

/// `2026-11` as `November 2026` (or `नवंबर 2026`); anything else as given.
fn month_name(month: &str, lang: Language) -> String {
    let Some(first) = Month::parse(month).and_then(Month::first_day) else {
        return month.to_owned();
    };
    let (en, hi) = MONTHS[chrono::Datelike::month0(&first) as usize];
    let name = if lang == Language::Hindi { hi } else { en };
    format!("{name} {}", chrono::Datelike::year(&first))
}

fn day(date: NaiveDate) -> String {
    date.format("%d-%m-%Y").to_string()
}

fn when(at: DateTime<Utc>) -> String {
    civil::local(at).format("%d-%m-%Y %H:%M").to_string()
}

fn charge_label(line: &ChargeLine, lang: Language) -> String {
    let label = tr(
        lang,
        match line.kind {
            ChargeKind::Energy => "Energy charge",
            ChargeKind::TimeOfDay => "Time-of-day adjustment",
            ChargeKind::Fixed => "Fixed charge",
            ChargeKind::Minimum => "Minimum charge top-up",
            ChargeKind::Demand => "Demand charge",
            ChargeKind::Duty => "Electricity duty",
            ChargeKind::Other => "Other charge",
        },
    );
    match &line.for_month {
        Some(month) if lang == Language::Hindi => {
            format!("{label} ({} {})", month_name(month, lang), tr(lang, "for"))
        }
        Some(month) => format!("{label} ({} {})", tr(lang, "for"), month_name(month, lang)),
        None => label.to_owned(),
    }
}

fn account_label(kind: &str, lang: Language) -> &'static str {
    tr(
        lang,
        match kind {
            "recharge" => "Recharge",
            "adjustment" => "Adjustment",
            "emergency_credit" => {
                "Emergency credit (lowers the disconnection limit, not added to the balance)"
            }
            "export_credit" => "Export credit",
            "arrears" => "Arrears recorded (recovered from recharges)",
            _ => "Other",
        },
    )
}

/// A note in words.
fn note_words(note: &Note, lang: Language) -> String {
    let hi = lang == Language::Hindi;
    let charged = |paise: Option<i64>| match (paise, hi) {
        (Some(p), false) => format!("the gateway charged {} for it", inr(p)),
        (Some(p), true) => format!("गेटवे ने इसके लिए {} लिए", inr(p)),
        (None, false) => "not charged yet".to_owned(),
        (None, true) => "अभी नहीं लिया गया".to_owned(),
    };
    match (note, hi) {
        (Note::RatingDiffers { tariff_paise, charged_paise }, false) => format!(
            "The readings rated with today's tariff give {} for energy, time of day and duty; the account was charged {} when they were read. This bill shows what was charged.",
            inr(*tariff_paise), inr(*charged_paise)
        ),
        (Note::RatingDiffers { tariff_paise, charged_paise }, true) => format!(
            "आज के टैरिफ़ से रीडिंग का ऊर्जा, समय और विद्युत शुल्क {} बनता है; पढ़े जाने पर खाते से {} लिए गए। यह बिल लिया गया शुल्क दिखाता है।",
            inr(*tariff_paise), inr(*charged_paise)
        ),
        (Note::FixedPartial { tariff_paise, charged_paise }, false) => format!(
            "The fixed charge for the whole month is {}; it is charged day by day, and {} was charged for the days so far (or since the account opened).",
            inr(*tariff_paise), inr(*charged_paise)
        ),
        (Note::FixedPartial { tariff_paise, charged_paise }, true) => format!(
            "पूरे माह का स्थायी शुल्क {} है; यह दिन-प्रतिदिन लिया जाता है, और अब तक के (या खाता खुलने के बाद के) दिनों के लिए {} लिए गए।",
            inr(*tariff_paise), inr(*charged_paise)
        ),
        (Note::MinimumNextMonth { tariff_paise, charged_paise }, false) => format!(
            "This month's minimum charge top-up ({} by the tariff) is charged at the start of next month and appears on next month's bill; {}.",
            inr(*tariff_paise), charged(*charged_paise)
        ),
        (Note::MinimumNextMonth { tariff_paise, charged_paise }, true) => format!(
            "इस माह की न्यूनतम शुल्क पूर्ति (टैरिफ़ अनुसार {}) अगले माह की शुरुआत में ली जाती है और अगले माह के बिल में दिखेगी; {}।",
            inr(*tariff_paise), charged(*charged_paise)
        ),
        (Note::DemandNextMonth { max_demand_w, tariff_paise, charged_paise }, false) => format!(
            "This month's demand charge on its maximum demand of {} kW ({} by the tariff) is charged at the start of next month and appears on next month's bill; {}.",
            kwh(*max_demand_w), inr(*tariff_paise), charged(*charged_paise)
        ),
        (Note::DemandNextMonth { max_demand_w, tariff_paise, charged_paise }, true) => format!(
            "इस माह की {} kW अधिकतम माँग पर माँग शुल्क (टैरिफ़ अनुसार {}) अगले माह की शुरुआत में लिया जाता है और अगले माह के बिल में दिखेगा; {}।",
            kwh(*max_demand_w), inr(*tariff_paise), charged(*charged_paise)
        ),
        (Note::ExportCreditNextMonth { export_wh, credited_paise }, false) => format!(
            "The credit for this month's {} kWh exported is given at the start of next month and appears on next month's bill{}.",
            kwh(*export_wh),
            credited_paise.map(|p| format!("; the gateway credited {}", inr(p))).unwrap_or_default()
        ),
        (Note::ExportCreditNextMonth { export_wh, credited_paise }, true) => format!(
            "इस माह निर्यात की गई {} kWh का क्रेडिट अगले माह की शुरुआत में दिया जाता है और अगले माह के बिल में दिखेगा{}।",
            kwh(*export_wh),
            credited_paise.map(|p| format!("; गेटवे ने {} जमा किए", inr(p))).unwrap_or_default()
        ),
        (Note::RegistersDiffer { registers_wh, billed_wh }, false) => format!(
            "The registers moved by {} kWh but {} kWh were billed: a register went back (billed nothing, reported to the office) or a meter was replaced.",
            kwh(*registers_wh), kwh(*billed_wh)
        ),
        (Note::RegistersDiffer { registers_wh, billed_wh }, true) => format!(
            "रजिस्टर {} kWh बढ़ा पर {} kWh का बिल बना: कोई रजिस्टर पीछे गया (कोई शुल्क नहीं, कार्यालय को सूचित) या मीटर बदला गया।",
            kwh(*registers_wh), kwh(*billed_wh)
        ),
    }
}

fn register_cell(register: Option<Register>, lang: Language, export: bool) -> Markup {
    html! {
        @match register {
            None => { td { (tr(lang, "no reading")) } td.num { "–" } },
            Some(r) => {
                td { (when(r.at)) }
                td.num {
                    @if export {
                        @match r.export_wh { Some(wh) => (kwh(wh)), None => (tr(lang, "not read")) }
                    } @else {
                        (kwh(r.import_wh))
                    }
                }
            }
        }
    }
}

/// The bill as a page in `lang`.
pub fn render(bill: &MonthBill, lang: Language) -> Markup {
    let t = |text| tr(lang, text);
    let tariff = &bill.tariff;
    let exports = tariff.export_wh != 0
        || bill
            .registers
            .iter()
            .any(|m| m.export_wh.is_some_and(|wh| wh != 0));
    let versions: Vec<&str> = {
        let mut ids: Vec<&str> = tariff.lines.iter().map(|l| l.version_id.as_str()).collect();
        ids.dedup();
        ids
    };
    let month = month_name(&bill.month, lang);
    let other = if lang == Language::Hindi {
        Language::English
    } else {
        Language::Hindi
    };
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (t("Electricity bill")) " " (bill.consumer.account) " " (month) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav {
                    a href=(format!("?month={}&lang={}", bill.month, other.code())) {
                        @if other == Language::Hindi { "हिन्दी" } @else { "English" }
                    }
                }
                main {
                    header.bill {
                        div { h1 { (t("Electricity bill")) } span { (t("Prepaid electricity")) } }
                        p { (month) }
                    }
                    h2 { (t("Consumer details")) }
                    dl.consumer {
                        dt { (t("Account number")) } dd { (bill.consumer.account) }
                        dt { (t("Name")) } dd { (bill.consumer.name) }
                        dt { (t("Category")) } dd { (t(bill.consumer.category.as_str())) }
                        dt { (t("Village (gateway)")) }
                        dd { (bill.consumer.gateway.as_deref().unwrap_or(t("not assigned"))) }
                        dt { (t("Meter")) }
                        dd { (bill.registers.iter().map(|m| m.serial.as_str()).collect::<Vec<_>>().join(", ")) }
                        dt { (t("Sanctioned load")) }
                        dd {
                            @match bill.consumer.sanctioned_load_w {
                                Some(w) => { (kwh(w)) " kW" },
                                None => (t("not recorded")),
                            }
                        }
                        dt { (t("Bill month")) } dd { (month) }
                        dt { (t("Bill period")) }
                        dd { (day(bill.period_from)) " – " (day(bill.period_to)) " (" (tariff.month_days) " " (t("days")) ")" }
                    }

                    h2 { (t("Meter readings")) }
                    table {
                        thead { tr {
                            th { (t("Meter")) } th { }
                            th { (t("Previous reading")) } th.num { "kWh" }
                            th { (t("Present reading")) } th.num { "kWh" }
                            th.num { (t("Difference")) }
                        } }
                        tbody {
                            @for m in &bill.registers {
                                tr {
                                    td { (m.serial) } td { (t("Import")) }
                                    (register_cell(m.opening, lang, false))
                                    (register_cell(m.closing, lang, false))
                                    td.num { (kwh(m.import_wh)) }
                                }
                                @if exports {
                                    tr {
                                        td { (m.serial) } td { (t("Export")) }
                                        (register_cell(m.opening, lang, true))
                                        (register_cell(m.closing, lang, true))
                                        td.num { @match m.export_wh { Some(wh) => (kwh(wh)), None => (t("not read")) } }
                                    }
                                }
                            }
                        }
                    }
                    table {
                        tbody {
                            tr { td { (t("Units consumed")) } td.num { (kwh(tariff.units_wh)) " kWh" } }
                            @if exports {
                                tr { td { (t("Units exported")) } td.num { (kwh(tariff.export_wh)) " kWh" } }
                                tr { td { (t("Net units billed")) } td.num { (kwh(tariff.net_wh)) " kWh" } }
                            }
                            @if tariff.max_demand_w > 0 {
                                tr { td { (t("Maximum demand")) } td.num { (kwh(tariff.max_demand_w)) " kW" } }
                            }
                        }
                    }

                    h2 { (t("Energy charge by slab")) }
                    table {
                        thead { tr {
                            @if versions.len() > 1 { th { (t("Tariff")) } }
                            th { (t("Slab (kWh)")) } th.num { (t("Units (kWh)")) }
                            th.num { (t("Rate per kWh")) } th.num { (t("Amount")) }
                        } }
                        tbody {
                            @for line in &tariff.lines {
                                tr {
                                    @if versions.len() > 1 { td { (line.version_id) } }
                                    td {
                                        (kwh(line.from_wh)) " – "
                                        @match line.to_wh { Some(to) => (kwh(to)), None => (t("and above")) }
                                    }
                                    td.num { (kwh(line.units_wh)) }
                                    td.num { (inr(line.paise_per_kwh)) }
                                    td.num { (inr(line.amount_paise)) }
                                }
                            }
                            tr.total {
                                td colspan=(if versions.len() > 1 { 4 } else { 3 }) { (t("Energy charge")) }
                                td.num { (inr(tariff.energy_paise)) }
                            }
                        }
                    }
                    @if !tariff.tod_lines.is_empty() {
                        h2 { (t("Time of day")) }
                        table {
                            thead { tr {
                                th { (t("Slot")) } th.num { (t("Units (kWh)")) } th.num { "%" }
                                th.num { (t("Surcharge or rebate")) }
                            } }
                            tbody {
                                @for line in &tariff.tod_lines {
                                    tr {
                                        td { (line.slot) " " (line.from) "–" (line.to) }
                                        td.num { (kwh(line.units_wh)) }
                                        td.num { (format!("{:+.2}", line.percent)) }
                                        td.num { (inr(line.amount_paise)) }
                                    }
                                }
                                tr.total {
                                    td colspan="3" { (t("Time-of-day adjustment")) }
                                    td.num { (inr(tariff.tod_paise)) }
                                }
                            }
                        }
                    }

                    h2 { (t("Charges for the month")) }
                    table {
                        tbody {
                            @for line in &bill.charges {
                                tr { td { (charge_label(line, lang)) } td.num { (inr(line.amount_paise)) } }
                            }
                            tr.total { td { (t("Total charges")) } td.num { (inr(bill.account.charges_paise)) } }
                        }
                    }

                    h2 { (t("Prepaid account")) }
                    table {
                        thead { tr { th { (t("Date")) } th { (t("Particulars")) } th.num { (t("Amount")) } } }
                        tbody {
                            tr { td { (day(bill.period_from)) } td { (t("Opening balance")) } td.num { (inr(bill.account.opening_paise)) } }
                            @for entry in &bill.account.lines {
                                tr {
                                    td { (when(entry.line.at)) }
                                    td {
                                        (account_label(&entry.line.kind, lang))
                                        @if let Some(month) = &entry.for_month { " (" (month_name(month, lang)) ")" }
                                        @if matches!(entry.line.kind.as_str(), "emergency_credit" | "arrears") {
                                            ": " (inr(entry.line.amount_paise))
                                        }
                                        @if entry.line.arrears_paise != 0 {
                                            " (" (t("of which to arrears")) " " (inr(entry.line.arrears_paise)) ")"
                                        }
                                    }
                                    td.num { (inr(entry.line.effect_paise)) }
                                }
                            }
                            @if bill.account.arrears_recovered_paise != 0 {
                                tr { td {} td { (t("Arrears recovered from recharges")) } td.num { (inr(-bill.account.arrears_recovered_paise)) } }
                            }
                            tr { td {} td { (t("Less: charges for the month")) } td.num { (inr(-bill.account.charges_paise)) } }
                            tr.total { td { (day(bill.period_to)) } td { (t("Closing balance")) } td.num { (inr(bill.account.closing_paise)) } }
                        }
                    }
                    @if bill.account.closing_paise < 0 {
                        p.closing { (t("Recharge needed to clear the balance")) ": " (inr(-bill.account.closing_paise)) }
                    }
                    @if bill.account.arrears.outstanding_paise != 0 {
                        p { (t("Arrears outstanding")) ": " (inr(bill.account.arrears.outstanding_paise)) }
                    }

                    @if !bill.notes.is_empty() {
                        h2 { (t("Notes")) }
                        ol.notes {
                            @for note in &bill.notes { li { (note_words(note, lang)) } }
                        }
                    }
                    footer { (t("Energy is billed in the month it is read. All times are Indian Standard Time.")) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_has_a_hindi_text() {
        let source = include_str!("html.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        let mut asked: Vec<&str> = Vec::new();
        for call in ["tr(lang, \"", "(t(\""] {
            asked.extend(
                code.split(call)
                    .skip(1)
                    .filter_map(|rest| rest.split('"').next()),
            );
        }
        let missing: Vec<&&str> = asked
            .iter()
            .filter(|text| !TEXTS.iter().any(|(en, _)| en == *text))
            .collect();
        assert!(missing.is_empty(), "no Hindi for {missing:?}");
        assert!(TEXTS.iter().all(|(en, hi)| !hi.is_empty() && en != hi));
    }

    #[test]
    fn months_are_named_in_both_languages() {
        assert_eq!(month_name("2026-11", Language::English), "November 2026");
        assert_eq!(month_name("2026-02", Language::Hindi), "फ़रवरी 2026");
        assert_eq!(month_name("garbage", Language::Hindi), "garbage");
    }
}
