//! The console's texts in English and Hindi; the languages and Indian formats are `gramgrid_web`'s.
use gramgrid_web::lang::Lang;

/// Translation through the console's [`TEXTS`].
pub trait Tr {
    /// `text` (an English text of [`TEXTS`]) in this language; English if it has no translation.
    fn tr(self, text: &'static str) -> &'static str;
}

impl Tr for Lang {
    fn tr(self, text: &'static str) -> &'static str {
        self.translate(TEXTS, text)
    }
}

/// Every text the console's pages show, in English and Hindi. A test checks that every literal
/// the console passes to `tr` is here.
pub const TEXTS: &[(&str, &str)] = &[
    ("Office", "कार्यालय"),
    ("Office login", "कार्यालय लॉगिन"),
    ("Name", "नाम"),
    ("Password", "पासवर्ड"),
    ("Log in", "लॉग इन करें"),
    ("Log out", "लॉग आउट"),
    ("Logged in as", "लॉग इन:"),
    ("Refused", "अस्वीकृत"),
    ("Gateways", "गेटवे"),
    ("Accounts", "खाते"),
    ("Vouchers", "वाउचर"),
    ("Flags", "चेतावनियाँ"),
    ("Reports", "रिपोर्ट"),
    ("Staff", "कर्मचारी"),
    ("viewer", "दर्शक"),
    ("cashier", "कैशियर"),
    ("engineer", "अभियंता"),
    ("admin", "प्रशासक"),
    (
        "Your role does not allow this. Nothing was changed.",
        "आपकी भूमिका इसकी अनुमति नहीं देती। कुछ नहीं बदला गया।",
    ),
    (
        "The form was out of date or not from this console. Nothing was changed; please try again.",
        "फ़ॉर्म पुराना था या इस कंसोल का नहीं था। कुछ नहीं बदला गया; कृपया फिर से प्रयास करें।",
    ),
    (
        "Your session has expired. Please log in again.",
        "आपका सत्र समाप्त हो गया है। कृपया फिर से लॉग इन करें।",
    ),
    ("ago", "पहले"),
    ("never", "कभी नहीं"),
    (
        "No gateway has been enrolled yet.",
        "अभी कोई गेटवे नामांकित नहीं है।",
    ),
    ("Gateway", "गेटवे"),
    ("Village", "गाँव"),
    ("Last sync", "अंतिम सिंक"),
    ("Backhaul up (7 days)", "बैकहॉल चालू (7 दिन)"),
    ("Waiting to send down", "भेजने के लिए प्रतीक्षारत"),
    ("Newest reading", "नवीनतम रीडिंग"),
    ("Meters heard (24 h)", "सुने गए मीटर (24 घंटे)"),
    ("Clock", "घड़ी"),
    ("Protocol", "प्रोटोकॉल"),
    ("in step", "सही"),
    ("fast", "आगे"),
    ("slow", "पीछे"),
    ("Map of the gateways", "गेटवे का नक्शा"),
    ("No such gateway.", "ऐसा कोई गेटवे नहीं है।"),
    (
        "Not heard for more than a day",
        "एक दिन से अधिक समय से नहीं सुना गया",
    ),
    ("Meters", "मीटर"),
    ("Account", "खाता"),
    ("Meter", "मीटर"),
    ("Balance", "शेष राशि"),
    ("Relay", "रिले"),
    ("Last reading", "अंतिम रीडिंग"),
    ("Open", "खुली"),
    ("Resolved", "हल की गई"),
    ("All", "सभी"),
    ("Nothing here.", "यहाँ कुछ नहीं है।"),
    ("Resolved by", "हल करने वाले"),
    ("What was done", "क्या किया गया"),
    ("Resolve", "हल करें"),
    ("Resolved:", "हल की गई:"),
    ("Daily collection", "दैनिक संग्रह"),
    (
        "Consumption by category and village",
        "श्रेणी और गाँव के अनुसार खपत",
    ),
    ("Households disconnected now", "अभी कटे हुए घर"),
    (
        "Meters not heard for more than a day",
        "एक दिन से अधिक समय से न सुने गए मीटर",
    ),
    (
        "The month is written YYYY-MM, e.g. 2026-11.",
        "महीना YYYY-MM के रूप में लिखें, जैसे 2026-11।",
    ),
    ("No such report.", "ऐसी कोई रिपोर्ट नहीं है।"),
    ("Month", "महीना"),
    ("Show", "दिखाएँ"),
    ("Download as CSV", "CSV के रूप में डाउनलोड करें"),
    ("Day", "दिन"),
    ("Recharges", "रिचार्ज"),
    ("Collected", "संग्रहित"),
    ("Category", "श्रेणी"),
    ("kWh", "kWh"),
    ("Charged", "प्रभारित"),
    ("Since", "से"),
    ("For", "अवधि"),
    ("Silent for", "कब से चुप"),
    ("Stale", "पुराना"),
    ("Hours up (7 days)", "चालू घंटे (7 दिन)"),
    ("Hours observed", "देखे गए घंटे"),
    ("Clock offset (s)", "घड़ी अंतर (से.)"),
    ("Flag", "चेतावनी"),
    ("Kind", "प्रकार"),
    ("Urgent", "तत्काल"),
    ("At", "समय"),
    ("Detail", "विवरण"),
    ("Resolved at", "हल करने का समय"),
    ("Resolution", "समाधान"),
    ("Full name", "पूरा नाम"),
    ("Role", "भूमिका"),
    ("State", "स्थिति"),
    ("Changed", "बदला गया"),
    ("disabled", "निष्क्रिय"),
    ("locked until", "तक लॉक"),
    ("active", "सक्रिय"),
    ("Add or change a staff member", "कर्मचारी जोड़ें या बदलें"),
    (
        "New password (blank: keep the current one)",
        "नया पासवर्ड (खाली: मौजूदा रखें)",
    ),
    ("Disable logins", "लॉगिन बंद करें"),
    ("Save", "सहेजें"),
    ("Created:", "बनाया गया:"),
    ("Changed:", "बदला गया:"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_the_console_asks_for_has_a_hindi_translation() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/console");
        let missing = gramgrid_web::lang::untranslated(&dir, TEXTS).unwrap();
        assert!(missing.is_empty(), "no Hindi for: {missing:?}");
    }
}
