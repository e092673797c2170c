//! The app's two languages (English and Hindi) and Indian formats for money, numbers and times.
use chrono::{DateTime, Utc};

/// The language a page is shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// Hindi (Devanagari).
    Hi,
}

impl Lang {
    /// From the `lang` cookie or query value; anything else is English.
    pub fn parse(code: &str) -> Lang {
        match code {
            "hi" => Lang::Hi,
            _ => Lang::En,
        }
    }

    /// The ISO 639-1 code (the page's `lang` attribute and the cookie's value).
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Hi => "hi",
        }
    }

    /// The other language (the switch link on every page).
    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Hi,
            Lang::Hi => Lang::En,
        }
    }

    /// `text` (an English text of [`TEXTS`]) in this language; English if it has no translation.
    pub fn tr(self, text: &'static str) -> &'static str {
        match self {
            Lang::En => text,
            Lang::Hi => TEXTS
                .iter()
                .find(|(en, _)| *en == text)
                .map_or(text, |(_, hi)| *hi),
        }
    }
}

/// Every text the pages show, in English and Hindi. A test checks that every literal the
/// technician module passes to [`Lang::tr`] is here.
pub const TEXTS: &[(&str, &str)] = &[
    ("Energy audit", "ऊर्जा ऑडिट"),
    (
        "No audit yet: a day is audited two hours after it ends, when a transformer meter is installed.",
        "अभी कोई ऑडिट नहीं: ट्रांसफ़ॉर्मर मीटर लगा हो तो हर दिन का ऑडिट दिन ख़त्म होने के दो घंटे बाद होता है।",
    ),
    ("Day", "दिन"),
    ("Transformer", "ट्रांसफ़ॉर्मर"),
    ("Intervals compared", "मिलाए गए अंतराल"),
    ("Delivered", "दी गई बिजली"),
    ("Recorded", "मीटरों में दर्ज"),
    ("Loss", "हानि"),
    ("Allowed", "स्वीकृत हानि"),
    ("Flagged", "चिह्नित"),
    ("yes", "हाँ"),
    ("no", "नहीं"),
    ("Where to look", "कहाँ देखें"),
    (
        "Evidence, not proof: check the meter and its service line with the household before any action.",
        "यह सबूत है, दोष नहीं: कोई कदम उठाने से पहले परिवार के साथ मीटर और सर्विस लाइन जाँचें।",
    ),
    ("No meter stands out; look for a hook on the line.", "कोई मीटर अलग नहीं दिखता; लाइन पर कटिया देखें।"),
    ("score", "अंक"),
    ("tamper events", "छेड़छाड़ की घटनाएँ"),
    ("recorded", "दर्ज"),
    ("all day while connected", "पूरे दिन, जुड़े रहते हुए"),
    (
        "in the hours of most loss it recorded",
        "सबसे ज़्यादा हानि के समय इसमें दर्ज हुआ",
    ),
    ("usually", "आम तौर पर"),
    ("Install a meter", "मीटर लगाएँ"),
    ("Meter installed", "मीटर लगाया गया"),
    ("Install", "लगाएँ"),
    ("Replace", "बदलें"),
    ("Replace this meter", "यह मीटर बदलें"),
    (
        "Meter serial (nameplate or QR code)",
        "मीटर सीरियल (नेमप्लेट या QR कोड)",
    ),
    (
        "New meter serial (nameplate or QR code)",
        "नए मीटर का सीरियल (नेमप्लेट या QR कोड)",
    ),
    (
        "Final register of this meter (kWh)",
        "इस मीटर की अंतिम रीडिंग (kWh)",
    ),
    (
        "First register (kWh, blank if unreadable)",
        "पहली रीडिंग (kWh, न पढ़ी जा सके तो खाली छोड़ें)",
    ),
    (
        "First register of the new meter (kWh, blank if unreadable)",
        "नए मीटर की पहली रीडिंग (kWh, न पढ़ी जा सके तो खाली छोड़ें)",
    ),
    ("Spare meters in stock", "स्टॉक में अतिरिक्त मीटर"),
    (
        "No spare meters in stock: ask the office to add some.",
        "स्टॉक में कोई अतिरिक्त मीटर नहीं: कार्यालय से मँगवाएँ।",
    ),
    (
        "A register is a number of kWh as the display shows it, e.g. 1234.5.",
        "रीडिंग kWh की संख्या है, जैसी डिस्प्ले पर दिखे, जैसे 1234.5।",
    ),
    (
        "The old meter's final register is required.",
        "पुराने मीटर की अंतिम रीडिंग ज़रूरी है।",
    ),
    ("Gateway", "गेटवे"),
    ("Status", "स्थिति"),
    ("Meters", "मीटर"),
    ("Redeem voucher", "वाउचर भुनाएँ"),
    ("Log in", "लॉग इन"),
    ("Log out", "लॉग आउट"),
    ("Name", "नाम"),
    ("Password", "पासवर्ड"),
    ("Technician login", "तकनीशियन लॉगिन"),
    ("Wrong name or password.", "नाम या पासवर्ड गलत है।"),
    (
        "Too many failed logins: this account is locked until",
        "बहुत सारे गलत प्रयास: यह खाता तब तक बंद है:",
    ),
    (
        "Your session has expired. Please log in again.",
        "आपका सत्र समाप्त हो गया। कृपया फिर से लॉग इन करें।",
    ),
    (
        "The form was out of date or not from this app. Nothing was changed; please try again.",
        "फ़ॉर्म पुराना था या इस ऐप का नहीं था। कुछ नहीं बदला; कृपया फिर से प्रयास करें।",
    ),
    (
        "Your role does not allow this. Nothing was changed.",
        "आपकी भूमिका इसकी अनुमति नहीं देती। कुछ नहीं बदला।",
    ),
    ("Backhaul", "बैकहॉल"),
    ("Last sync", "पिछला सिंक"),
    ("never", "कभी नहीं"),
    ("Waiting to upload", "अपलोड की प्रतीक्षा में"),
    ("records", "रिकॉर्ड"),
    ("readings", "रीडिंग"),
    ("Oldest unsent reading", "सबसे पुरानी न भेजी गई रीडिंग"),
    ("Clock", "घड़ी"),
    ("trusted", "विश्वसनीय"),
    ("not trusted", "विश्वसनीय नहीं"),
    ("skew", "अंतर"),
    ("Disk", "डिस्क"),
    ("free", "खाली"),
    ("Radio", "रेडियो"),
    ("frames heard", "फ्रेम सुने गए"),
    ("unanswered polls", "अनुत्तरित पोल"),
    ("rejected", "अस्वीकृत"),
    ("Policy loop", "नीति लूप"),
    ("last pass", "पिछला पास"),
    ("not run yet", "अभी नहीं चला"),
    ("failed", "विफल"),
    ("Uptime", "चालू समय"),
    ("Version", "संस्करण"),
    ("Sync now", "अभी सिंक करें"),
    ("Diagnostics", "निदान"),
    ("Download diagnostics", "निदान डाउनलोड करें"),
    ("Search", "खोजें"),
    ("serial, account or name", "सीरियल, खाता या नाम"),
    ("Account", "खाता"),
    ("Consumer", "उपभोक्ता"),
    ("Category", "श्रेणी"),
    ("Meter", "मीटर"),
    ("Balance", "बैलेंस"),
    ("Relay", "रिले"),
    ("connected", "जुड़ा"),
    ("disconnected", "कटा"),
    ("unknown", "अज्ञात"),
    ("Last reading", "पिछली रीडिंग"),
    ("Signal", "सिग्नल"),
    ("Open command", "लंबित आदेश"),
    ("Alerts", "अलर्ट"),
    ("none", "कोई नहीं"),
    (
        "Load, last 7 days (kWh per hour)",
        "लोड, पिछले 7 दिन (kWh प्रति घंटा)",
    ),
    ("Link history", "लिंक इतिहास"),
    ("Maximum demand this month", "इस महीने की अधिकतम मांग"),
    ("Exported (rooftop solar)", "निर्यात (छत का सोलर)"),
    ("Sanctioned load", "स्वीकृत भार"),
    ("exceeded this month, intervals:", "इस महीने पार, अंतराल:"),
    ("heard", "सुना"),
    ("silent", "चुप"),
    ("Meter events (meter clock)", "मीटर की घटनाएँ (मीटर की घड़ी)"),
    ("Tamper", "छेड़छाड़"),
    ("Magnet tamper", "चुंबक से छेड़छाड़"),
    ("Cover opened", "कवर खोला गया"),
    ("Neutral disturbance", "न्यूट्रल में गड़बड़ी"),
    ("Reverse current", "उल्टा करंट"),
    ("Power failed", "बिजली गई"),
    ("Power restored", "बिजली आई"),
    ("Relay operated", "रिले चला"),
    ("Clock set", "घड़ी सेट की गई"),
    ("at the meter", "मीटर पर"),
    ("command", "आदेश"),
    ("Why is this household off or on?", "यह घर बंद या चालू क्यों है?"),
    ("Decisions", "निर्णय"),
    ("replays to the same outcome", "दोबारा चलाने पर वही परिणाम"),
    (
        "DOES NOT replay to the same outcome: flagged to the office",
        "दोबारा चलाने पर अलग परिणाम: कार्यालय को सूचित",
    ),
    (
        "No relay decision recorded yet.",
        "अभी कोई रिले निर्णय दर्ज नहीं।",
    ),
    ("Override", "ओवरराइड"),
    ("Active override", "सक्रिय ओवरराइड"),
    (
        "Keep connected (reconnects now if off)",
        "जुड़ा रखें (बंद हो तो अभी जोड़ें)",
    ),
    ("Hours", "घंटे"),
    ("Reason", "कारण"),
    ("A reason is required.", "कारण देना ज़रूरी है।"),
    ("Override recorded.", "ओवरराइड दर्ज हुआ।"),
    ("Voucher code", "वाउचर कोड"),
    ("Redeem", "भुनाएँ"),
    ("Voucher accepted", "वाउचर स्वीकार"),
    ("credited to account", "खाते में जमा"),
    ("Balance now", "अब बैलेंस"),
    ("Voucher refused", "वाउचर अस्वीकार"),
    (
        "Sync requested: it starts now.",
        "सिंक का अनुरोध हुआ: अभी शुरू हो रहा है।",
    ),
    ("No such meter.", "ऐसा कोई मीटर नहीं।"),
    ("No such account.", "ऐसा कोई खाता नहीं।"),
    ("Logged in as", "लॉग इन:"),
    ("domestic", "घरेलू"),
    ("commercial", "व्यावसायिक"),
    ("agricultural", "कृषि"),
    ("viewer", "दर्शक"),
    ("technician", "तकनीशियन"),
    ("supervisor", "पर्यवेक्षक"),
    ("until", "तक"),
    ("by", "द्वारा"),
    ("ago", "पहले"),
    (
        "Breaker holds waiting for a supervisor",
        "पर्यवेक्षक की प्रतीक्षा में ब्रेकर होल्ड",
    ),
];

pub use gramgrid_core::indian::{group_indian, inr, kwh};

/// A time as India reads it: `29-11-2026 17:05 IST` (day first, 24-hour, Asia/Kolkata).
pub fn when(at: DateTime<Utc>) -> String {
    gramgrid_core::civil::local(at)
        .format("%d-%m-%Y %H:%M IST")
        .to_string()
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
    fn times_are_shown_in_india_day_first() {
        let at = DateTime::parse_from_rfc3339("2026-11-29T18:40:00Z").unwrap();
        assert_eq!(when(at.with_timezone(&Utc)), "30-11-2026 00:10 IST");
        assert_eq!(span(59), "59 s");
        assert_eq!(span(3_900), "1 h 05 min");
        assert_eq!(span(90_000), "1 d 1 h");
    }

    #[test]
    fn every_text_the_pages_ask_for_has_a_hindi_translation() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/technician");
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for call in source.split(".tr(\"").skip(1) {
                let text = &call[..call.find('"').unwrap()];
                if !TEXTS.iter().any(|(en, _)| *en == text) {
                    missing.push(text.to_string());
                }
            }
        }
        assert!(missing.is_empty(), "no Hindi for: {missing:?}");
        assert!(TEXTS.iter().all(|(en, hi)| !hi.is_empty() && en != hi));
    }
}
