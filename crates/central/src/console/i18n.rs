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
