//! Consumer messages: their kinds, languages, templates with `{variables}`, SMS part counts and
//! quiet hours. Pure: the gateway and central render and schedule with the same rules.
//!
//! A message is decided once (at the gateway or at central) as a kind plus variables; the text is
//! made from a template only when it is sent, in the consumer's language. In India every commercial
//! SMS must match a template registered on the operators' DLT platform, so the templates here are
//! the defaults a utility registers (or replaces in central's `[sms]` config with its own).
use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a consumer message is about. The wire and the databases carry [`Kind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A recharge reached the account (`amount`, `balance`).
    RechargeReceived,
    /// The balance fell to a share of the last recharge (`balance`, `percent`).
    LowBalance,
    /// The balance is exhausted: supply will be cut at the next allowed window (`balance`).
    DisconnectNotice,
    /// The supply was disconnected.
    Disconnected,
    /// The supply was restored.
    Reconnected,
    /// The day's balance (`date`, `balance`).
    DailyBalance,
    /// A voucher was redeemed at the gateway (`amount`).
    VoucherRedeemed,
    /// The household drew more than its sanctioned load in enough 15-minute intervals of a month
    /// (`month`, `intervals`, `sanctioned_kw`, `max_kw`).
    SanctionedLoadExceeded,
    /// The load-limit trip cut the supply until `until` (local `HH:MM`): the household drew more
    /// than its sanctioned `sanctioned_kw` for several intervals in a row.
    LoadLimitTrip,
    /// The office sent the household a link to its balance page (`link`, a signed URL that opens
    /// the page without a password until it expires).
    ConsumerLink,
    /// A one-time code to open the balance page with the account number and phone (`code`).
    LoginCode,
}

impl Kind {
    /// Every kind, in a fixed order (for config checks and docs).
    pub const ALL: [Kind; 11] = [
        Kind::RechargeReceived,
        Kind::LowBalance,
        Kind::DisconnectNotice,
        Kind::Disconnected,
        Kind::Reconnected,
        Kind::DailyBalance,
        Kind::VoucherRedeemed,
        Kind::SanctionedLoadExceeded,
        Kind::LoadLimitTrip,
        Kind::ConsumerLink,
        Kind::LoginCode,
    ];

    /// The kinds of the first release. Central requires a DLT template id for each of these; a
    /// kind added later may lack one (a config written before it existed), and is then not sent
    /// through the SMS provider.
    pub const FIRST_SET: &[Kind] = Kind::ALL.split_at(7).0;

    /// Whether a config may leave out this kind's DLT template ids (it came after [`Kind::FIRST_SET`]).
    pub fn template_id_optional(self) -> bool {
        !Kind::FIRST_SET.contains(&self)
    }

    /// The kind's name on the wire, in databases and in config (`low_balance`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RechargeReceived => "recharge_received",
            Kind::LowBalance => "low_balance",
            Kind::DisconnectNotice => "disconnect_notice",
            Kind::Disconnected => "disconnected",
            Kind::Reconnected => "reconnected",
            Kind::DailyBalance => "daily_balance",
            Kind::VoucherRedeemed => "voucher_redeemed",
            Kind::SanctionedLoadExceeded => "sanctioned_load_exceeded",
            Kind::LoadLimitTrip => "load_limit_trip",
            Kind::ConsumerLink => "consumer_link",
            Kind::LoginCode => "login_code",
        }
    }

    /// The kind named `name`, if it is a consumer message.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Urgent messages go at once, day or night; the rest wait for the end of quiet hours.
    /// A household must hear at once that it will be, or has been, cut off or restored, and that
    /// its money arrived; a link or a code it asked for is of use only at once.
    pub fn is_urgent(self) -> bool {
        matches!(
            self,
            Kind::RechargeReceived
                | Kind::DisconnectNotice
                | Kind::Disconnected
                | Kind::Reconnected
                | Kind::VoucherRedeemed
                | Kind::LoadLimitTrip
                | Kind::ConsumerLink
                | Kind::LoginCode
        )
    }

    /// Whether its variables open the household's page (a link, a code): once sent, central
    /// keeps neither them nor the text made from them.
    pub fn carries_secret(self) -> bool {
        matches!(self, Kind::ConsumerLink | Kind::LoginCode)
    }

    /// The variables its templates use.
    pub fn variables(self) -> &'static [&'static str] {
        match self {
            Kind::RechargeReceived => &["amount", "balance"],
            Kind::LowBalance => &["balance", "percent"],
            Kind::DisconnectNotice => &["balance"],
            Kind::Disconnected | Kind::Reconnected => &[],
            Kind::DailyBalance => &["date", "balance"],
            Kind::VoucherRedeemed => &["amount"],
            Kind::SanctionedLoadExceeded => &["month", "intervals", "sanctioned_kw", "max_kw"],
            Kind::LoadLimitTrip => &["sanctioned_kw", "until"],
            Kind::ConsumerLink => &["link"],
            Kind::LoginCode => &["code"],
        }
    }
}

/// A consumer's language for messages.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Language {
    /// English (`en`), the default.
    #[default]
    #[serde(rename = "en")]
    English,
    /// Hindi (`hi`), in Devanagari.
    #[serde(rename = "hi")]
    Hindi,
}

impl Language {
    /// Both languages.
    pub const ALL: [Language; 2] = [Language::English, Language::Hindi];

    /// ISO 639-1 code: `en` or `hi`.
    pub fn code(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::Hindi => "hi",
        }
    }

    /// The language with ISO 639-1 code `code`.
    pub fn parse(code: &str) -> Option<Language> {
        Language::ALL.into_iter().find(|l| l.code() == code)
    }
}

/// A message's variables by name (`balance` → `"12.50"`), already formatted for the consumer.
pub type Vars = BTreeMap<String, String>;

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The template names a variable the message does not carry.
    #[error("the template uses {{{0}}}, which this message does not carry")]
    MissingVariable(String),
    /// The template leaves out a variable of its kind.
    #[error("the template leaves out {{{0}}}, which this kind of message must show")]
    Unused(String),
    /// A `{` without its `}`.
    #[error("the template has an unclosed '{{'")]
    Unclosed,
}

/// Fills `{name}` placeholders in `template` from `vars`.
pub fn render(template: &str, vars: &Vars) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or(RenderError::Unclosed)?;
        let name = &after[..close];
        let value = vars
            .get(name)
            .ok_or_else(|| RenderError::MissingVariable(name.to_string()))?;
        out.push_str(value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks that `template` uses exactly the variables of `kind`: all of them, none other (a DLT
/// template's variables are fixed at registration).
pub fn check_template(kind: Kind, template: &str) -> Result<(), RenderError> {
    let all: Vars = kind
        .variables()
        .iter()
        .map(|v| (v.to_string(), String::new()))
        .collect();
    render(template, &all)?;
    for name in kind.variables() {
        if !template.contains(&format!("{{{name}}}")) {
            return Err(RenderError::Unused(name.to_string()));
        }
    }
    Ok(())
}

/// The built-in text of a kind in a language. A utility registers these on DLT (or its own
/// wording, set in central's config); amounts are in rupees.
pub fn default_template(kind: Kind, language: Language) -> &'static str {
    match (language, kind) {
        (Language::English, Kind::RechargeReceived) => {
            "Recharge of Rs {amount} received. Balance Rs {balance}. - GramGrid"
        }
        (Language::English, Kind::LowBalance) => {
            "Your electricity balance is Rs {balance}, {percent}% or less of your last recharge. Please recharge. - GramGrid"
        }
        (Language::English, Kind::DisconnectNotice) => {
            "Your electricity balance is exhausted (Rs {balance}). Supply will be disconnected in the next allowed hours unless you recharge. - GramGrid"
        }
        (Language::English, Kind::Disconnected) => {
            "Electricity supply disconnected: the balance is exhausted. Recharge to restore it. - GramGrid"
        }
        (Language::English, Kind::Reconnected) => "Electricity supply restored. - GramGrid",
        (Language::English, Kind::DailyBalance) => {
            "Electricity balance on {date}: Rs {balance}. - GramGrid"
        }
        (Language::English, Kind::VoucherRedeemed) => {
            "Voucher of Rs {amount} added to your electricity account. - GramGrid"
        }
        (Language::English, Kind::SanctionedLoadExceeded) => {
            "In {month} your electricity load was above your sanctioned {sanctioned_kw} kW in {intervals} quarter-hours (highest {max_kw} kW). Please reduce your load or apply for a higher sanctioned load. - GramGrid"
        }
        (Language::English, Kind::LoadLimitTrip) => {
            "Electricity supply cut: your load was above your sanctioned {sanctioned_kw} kW. It will be restored automatically at {until}. Please reduce your load. - GramGrid"
        }
        (Language::English, Kind::ConsumerLink) => {
            "See your electricity balance, units left and this month's bill: {link} - GramGrid"
        }
        (Language::English, Kind::LoginCode) => {
            "Your GramGrid code is {code}. It is valid for 10 minutes. Do not share it with anyone. - GramGrid"
        }
        (Language::Hindi, Kind::RechargeReceived) => {
            "₹{amount} का रिचार्ज मिला। शेष राशि ₹{balance}। - GramGrid"
        }
        (Language::Hindi, Kind::LowBalance) => {
            "आपका बिजली बैलेंस ₹{balance} है, पिछले रिचार्ज का {percent}% या कम। कृपया रिचार्ज करें। - GramGrid"
        }
        (Language::Hindi, Kind::DisconnectNotice) => {
            "आपका बिजली बैलेंस समाप्त (₹{balance})। रिचार्ज न करने पर अगले अनुमत समय में बिजली कट जाएगी। - GramGrid"
        }
        (Language::Hindi, Kind::Disconnected) => {
            "बैलेंस समाप्त होने से बिजली काट दी गई। रिचार्ज करें। - GramGrid"
        }
        (Language::Hindi, Kind::Reconnected) => "बिजली फिर से चालू। - GramGrid",
        (Language::Hindi, Kind::DailyBalance) => {
            "{date} को बिजली बैलेंस: ₹{balance}। - GramGrid"
        }
        (Language::Hindi, Kind::VoucherRedeemed) => {
            "₹{amount} का वाउचर आपके बिजली खाते में जुड़ा। - GramGrid"
        }
        (Language::Hindi, Kind::SanctionedLoadExceeded) => {
            "{month} में आपका बिजली लोड {intervals} बार (15 मिनट) स्वीकृत {sanctioned_kw} kW से अधिक रहा (अधिकतम {max_kw} kW)। कृपया लोड कम करें या अधिक स्वीकृत लोड के लिए आवेदन करें। - GramGrid"
        }
        (Language::Hindi, Kind::LoadLimitTrip) => {
            "आपका बिजली लोड स्वीकृत {sanctioned_kw} kW से अधिक होने से बिजली काटी गई। {until} बजे अपने आप चालू होगी। कृपया लोड कम करें। - GramGrid"
        }
        (Language::Hindi, Kind::ConsumerLink) => {
            "अपना बिजली बैलेंस, बची यूनिट और इस महीने का बिल देखें: {link} - GramGrid"
        }
        (Language::Hindi, Kind::LoginCode) => {
            "आपका GramGrid कोड {code} है। यह 10 मिनट तक मान्य है। इसे किसी को न बताएँ। - GramGrid"
        }
    }
}

/// How an SMS text is encoded on the air, which sets how many characters fit a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The GSM 03.38 7-bit alphabet: 160 characters in one part, 153 a part when split.
    Gsm7,
    /// UCS-2 (any text outside GSM-7, e.g. Devanagari): 70 in one part, 67 a part when split.
    Ucs2,
}

/// The encoding and number of billed parts of an SMS text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SmsParts {
    /// GSM-7 if every character is in the GSM alphabet, else UCS-2.
    pub encoding: Encoding,
    /// Septets (GSM-7; extension characters count two) or UTF-16 units (UCS-2).
    pub units: usize,
    /// Parts the operator bills: one if it fits a single SMS, else split with the 6-byte
    /// concatenation header (153 septets or 67 UTF-16 units a part).
    pub parts: usize,
}

/// The basic GSM 03.38 alphabet, one septet each.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The GSM 03.38 extension table: an escape plus the character, two septets each.
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{c}";

/// Counts the parts of `text` the way an SMS gateway bills them.
pub fn sms_parts(text: &str) -> SmsParts {
    let septets: Option<usize> = text
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (encoding, units, single, each) = match septets {
        Some(septets) => (Encoding::Gsm7, septets, 160, 153),
        None => (Encoding::Ucs2, text.encode_utf16().count(), 70, 67),
    };
    let parts = if units <= single {
        1
    } else {
        units.div_ceil(each)
    };
    SmsParts {
        encoding,
        units,
        parts,
    }
}

/// Local hours (Asia/Kolkata) in which non-urgent messages wait, e.g. 21:00 to 07:00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// When quiet hours begin, local time.
    pub from: NaiveTime,
    /// When they end, local time (earlier than `from` when they span midnight).
    pub until: NaiveTime,
}

impl QuietHours {
    /// Parses `"21:00-07:00"`.
    pub fn parse(text: &str) -> Option<QuietHours> {
        let (from, until) = text.split_once('-')?;
        let time = |t: &str| NaiveTime::parse_from_str(t.trim(), "%H:%M").ok();
        Some(QuietHours {
            from: time(from)?,
            until: time(until)?,
        })
    }

    fn contains(self, local: NaiveTime) -> bool {
        if self.from <= self.until {
            self.from <= local && local < self.until
        } else {
            local >= self.from || local < self.until
        }
    }
}

/// The earliest time at or after `now` at which a message of `kind` may be sent: `now` for urgent
/// messages and outside quiet hours, else the end of the quiet hours.
pub fn may_send_at(kind: Kind, quiet: Option<QuietHours>, now: DateTime<Utc>) -> DateTime<Utc> {
    let Some(quiet) = quiet.filter(|_| !kind.is_urgent()) else {
        return now;
    };
    let local = crate::civil::local(now);
    if !quiet.contains(local.time()) {
        return now;
    }
    let today_end = local.date_naive().and_time(quiet.until);
    let end = if local.time() < quiet.until {
        today_end
    } else {
        today_end + chrono::Duration::days(1)
    };
    end.and_local_timezone(crate::civil::ist())
        .single()
        .map_or(now, |t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_template_is_filled_from_the_messages_variables_and_a_missing_one_is_named() {
        let text = render(
            default_template(Kind::RechargeReceived, Language::English),
            &vars(&[("amount", "200.00"), ("balance", "212.50")]),
        )
        .unwrap();
        assert_eq!(
            text,
            "Recharge of Rs 200.00 received. Balance Rs 212.50. - GramGrid"
        );
        assert_eq!(
            render("Balance {balance}", &Vars::new()),
            Err(RenderError::MissingVariable("balance".into()))
        );
        assert_eq!(
            render("Balance {balance", &Vars::new()),
            Err(RenderError::Unclosed)
        );
    }

    #[test]
    fn only_kinds_added_after_the_first_set_may_lack_a_template_id() {
        for &kind in Kind::FIRST_SET {
            assert!(Kind::ALL.contains(&kind));
            assert!(!kind.template_id_optional(), "{kind:?}");
        }
        assert!(Kind::SanctionedLoadExceeded.template_id_optional());
        assert!(Kind::LoadLimitTrip.template_id_optional());
        assert!(
            Kind::ConsumerLink.template_id_optional() && Kind::LoginCode.template_id_optional()
        );
        assert!(Kind::LoginCode.carries_secret() && !Kind::LowBalance.carries_secret());
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn every_default_template_uses_exactly_its_kinds_variables() {
        for kind in Kind::ALL {
            for language in Language::ALL {
                let text = default_template(kind, language);
                assert_eq!(check_template(kind, text), Ok(()), "{kind:?} {language:?}");
            }
        }
    }

    #[test]
    fn parts_are_counted_as_operators_bill_them() {
        let ascii = "a".repeat(160);
        assert_eq!(
            sms_parts(&ascii),
            SmsParts {
                encoding: Encoding::Gsm7,
                units: 160,
                parts: 1
            }
        );
        assert_eq!(sms_parts(&"a".repeat(161)).parts, 2);
        assert_eq!(sms_parts(&"a".repeat(306)).parts, 2);
        assert_eq!(sms_parts(&"a".repeat(307)).parts, 3);
        // The euro sign is in the extension table: two septets.
        assert_eq!(sms_parts("€").units, 2);
        // The rupee sign and Devanagari are not GSM-7: the whole text goes as UCS-2.
        let hindi = default_template(Kind::Reconnected, Language::Hindi);
        let parts = sms_parts(hindi);
        assert_eq!(parts.encoding, Encoding::Ucs2);
        assert_eq!(parts.units, hindi.encode_utf16().count());
        assert_eq!(sms_parts(&"क".repeat(70)).parts, 1);
        assert_eq!(sms_parts(&"क".repeat(71)).parts, 2);
        assert_eq!(sms_parts(&"क".repeat(135)).parts, 3);
    }

    fn ist(h: u32, m: u32) -> DateTime<Utc> {
        crate::civil::ist()
            .with_ymd_and_hms(2026, 11, 29, h, m, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_daily_balance_waits_for_morning_and_a_disconnection_goes_at_once() {
        let quiet = QuietHours::parse("21:00-07:00");
        let late = ist(23, 30);
        assert_eq!(
            may_send_at(Kind::DailyBalance, quiet, late),
            ist(7, 0) + chrono::Duration::days(1)
        );
        assert_eq!(may_send_at(Kind::DailyBalance, quiet, ist(5, 0)), ist(7, 0));
        assert_eq!(
            may_send_at(Kind::DailyBalance, quiet, ist(12, 0)),
            ist(12, 0)
        );
        assert_eq!(may_send_at(Kind::Disconnected, quiet, late), late);
        assert_eq!(may_send_at(Kind::DailyBalance, None, late), late);
    }

    proptest! {
        #[test]
        fn a_non_urgent_message_is_never_scheduled_inside_quiet_hours_nor_earlier_than_asked(
            minutes in 0i64..(60 * 24 * 3),
            from in 0u32..24,
            until in 0u32..24,
        ) {
            let quiet = QuietHours {
                from: NaiveTime::from_hms_opt(from, 0, 0).unwrap(),
                until: NaiveTime::from_hms_opt(until, 0, 0).unwrap(),
            };
            let now = ist(0, 0) + chrono::Duration::minutes(minutes);
            let at = may_send_at(Kind::LowBalance, Some(quiet), now);
            prop_assert!(at >= now);
            prop_assert!(at - now <= chrono::Duration::days(1));
            prop_assert!(!quiet.contains(crate::civil::local(at).time()) || from == until);
        }
    }
}
