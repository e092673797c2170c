//! The page's texts in English and Hindi; the languages and Indian formats are `gramgrid_web`'s.

pub use gramgrid_web::format::{inr, kwh, when, when_ago};
pub use gramgrid_web::lang::Lang;

gramgrid_web::translation_trait!(TEXTS);

/// Every text the pages show, in English and Hindi. A test checks that every literal the
/// consumer module passes to `Tr::tr` is here.
pub const TEXTS: &[(&str, &str)] = &[
    ("Printable bill", "छापने योग्य बिल"),
    ("My electricity", "मेरी बिजली"),
    ("Account", "खाता"),
    ("Balance", "बैलेंस"),
    ("About", "लगभग"),
    ("about", "लगभग"),
    ("days left", "दिन बाकी"),
    ("units (kWh)", "यूनिट (kWh)"),
    (
        "Not enough readings yet to estimate the days left.",
        "बचे दिनों का अनुमान लगाने के लिए अभी पर्याप्त रीडिंग नहीं हैं।",
    ),
    (
        "Your balance is used up. Please recharge to keep your supply on.",
        "आपका बैलेंस खत्म हो गया है। बिजली चालू रखने के लिए कृपया रिचार्ज करें।",
    ),
    ("Supply", "बिजली"),
    ("on", "चालू"),
    ("off", "बंद"),
    ("not known yet", "अभी पता नहीं"),
    ("Up to date.", "जानकारी ताज़ा है।"),
    (
        "Not up to date: the village gateway has not reported for a while. Your balance may now be lower.",
        "जानकारी पुरानी है: गाँव के गेटवे ने कुछ समय से खबर नहीं भेजी। आपका बैलेंस अब कम हो सकता है।",
    ),
    ("Last meter reading", "आखिरी मीटर रीडिंग"),
    ("Village gateway last reported", "गाँव के गेटवे की आखिरी खबर"),
    ("none yet", "अभी कोई नहीं"),
    ("not yet", "अभी नहीं"),
    ("ago", "पहले"),
    ("Last 30 days", "पिछले 30 दिन"),
    ("Used", "खपत"),
    ("on average", "औसतन"),
    ("a day", "प्रतिदिन"),
    ("Recharges", "रिचार्ज"),
    ("No recharge yet.", "अभी तक कोई रिचार्ज नहीं।"),
    ("This month's bill so far", "इस महीने का अब तक का बिल"),
    ("Units used", "खर्च यूनिट"),
    ("Energy charge", "ऊर्जा शुल्क"),
    ("Time-of-day adjustment", "समय के अनुसार समायोजन"),
    ("Electricity duty", "बिजली शुल्क (ड्यूटी)"),
    ("Fixed charge", "स्थायी शुल्क"),
    ("Minimum charge top-up", "न्यूनतम शुल्क की पूर्ति"),
    ("Demand charge", "मांग शुल्क"),
    ("Total so far", "अब तक कुल"),
    ("Log out", "लॉग आउट"),
    ("Open your page with a code", "कोड से अपना पेज खोलें"),
    (
        "Enter your account number and the phone number registered with the office. We send a 6-digit code to that phone.",
        "अपना खाता नंबर और दफ़्तर में दर्ज फ़ोन नंबर लिखें। हम उस फ़ोन पर 6 अंकों का कोड भेजेंगे।",
    ),
    ("Account number", "खाता नंबर"),
    ("Registered phone number", "दर्ज फ़ोन नंबर"),
    ("Send me a code", "मुझे कोड भेजें"),
    ("Enter your code", "अपना कोड लिखें"),
    ("6-digit code", "6 अंकों का कोड"),
    ("Open my page", "मेरा पेज खोलें"),
    ("Ask for a new code", "नया कोड माँगें"),
    ("This link does not open your page", "यह लिंक आपका पेज नहीं खोलता"),
    (
        "The link has expired: each link works for a limited time only.",
        "लिंक की अवधि खत्म हो गई है: हर लिंक कुछ समय तक ही चलता है।",
    ),
    (
        "The link is not complete or has been changed. Open it exactly as it came in the SMS.",
        "लिंक अधूरा है या बदला गया है। इसे ठीक वैसे ही खोलें जैसा SMS में आया था।",
    ),
    (
        "You can open your page with your account number, your registered phone and a code we send to it.",
        "आप अपना पेज खाता नंबर, दर्ज फ़ोन नंबर और उस पर भेजे गए कोड से खोल सकते हैं।",
    ),
    ("Open with a code", "कोड से खोलें"),
    (
        "If this phone number is registered for this account, a code has been sent to it. It is valid for 10 minutes; at most 3 codes are sent in an hour.",
        "अगर यह फ़ोन नंबर इस खाते में दर्ज है, तो उस पर कोड भेज दिया गया है। कोड 10 मिनट तक मान्य है; एक घंटे में अधिकतम 3 कोड भेजे जाते हैं।",
    ),
    (
        "The code is wrong or no longer valid. Check the SMS, or ask for a new code.",
        "कोड गलत है या अब मान्य नहीं है। SMS देखें, या नया कोड माँगें।",
    ),
    (
        "The form was out of date. Please try again.",
        "फ़ॉर्म पुराना हो गया था। कृपया फिर से कोशिश करें।",
    ),
    (
        "Your session has ended. Open the link from your SMS again, or ask for a code.",
        "आपका सत्र समाप्त हो गया। SMS वाला लिंक फिर से खोलें, या कोड माँगें।",
    ),
    (
        "The page cannot be shown just now. Please try again in a few minutes.",
        "पेज अभी नहीं दिख सकता। कृपया कुछ मिनट बाद फिर कोशिश करें।",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_the_pages_ask_for_has_a_hindi_translation() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/consumer");
        let missing = gramgrid_web::lang::untranslated(&dir, TEXTS).unwrap();
        assert!(missing.is_empty(), "no Hindi for: {missing:?}");
    }
}
