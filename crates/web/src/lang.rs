//! The pages' two languages, English and Hindi, and translation through a page set's own table.

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

    /// `text` (an English text of `table`, pairs of English and Hindi) in this language; English
    /// if the table has no translation.
    pub fn translate(
        self,
        table: &[(&'static str, &'static str)],
        text: &'static str,
    ) -> &'static str {
        match self {
            Lang::En => text,
            Lang::Hi => table
                .iter()
                .find(|(en, _)| *en == text)
                .map_or(text, |(_, hi)| *hi),
        }
    }
}

/// Declares a page set's `Tr` trait over its own table of (English, Hindi) texts, so its pages
/// write `lang.tr("English text")` (the form [`untranslated`] finds in their sources).
#[macro_export]
macro_rules! translation_trait {
    ($table:path) => {
        /// Translation through this page set's table of texts.
        pub trait Tr {
            /// `text` (an English text of the table) in this language; English if it has none.
            fn tr(self, text: &'static str) -> &'static str;
        }

        impl Tr for $crate::lang::Lang {
            fn tr(self, text: &'static str) -> &'static str {
                self.translate($table, text)
            }
        }
    };
}

/// The English texts a page set's sources pass to `.tr("…")` that its `table` does not hold, or
/// that it holds untranslated (each page set's test calls this over its own source directory).
pub fn untranslated(
    sources: &std::path::Path,
    table: &[(&'static str, &'static str)],
) -> std::io::Result<Vec<String>> {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(sources)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(path)?;
        for call in source.split(".tr(\"").skip(1) {
            let text = call.split('"').next().unwrap_or_default();
            if !table
                .iter()
                .any(|(en, hi)| *en == text && !hi.is_empty() && en != hi)
            {
                missing.push(text.to_string());
            }
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hindi_comes_from_the_table_and_english_is_the_fallback() {
        let table = [("Balance", "शेष राशि")];
        assert_eq!(Lang::Hi.translate(&table, "Balance"), "शेष राशि");
        assert_eq!(Lang::En.translate(&table, "Balance"), "Balance");
        assert_eq!(Lang::Hi.translate(&table, "Meter"), "Meter");
        assert_eq!(Lang::parse("hi").other(), Lang::En);
        assert_eq!(Lang::parse("fr"), Lang::En);
    }
}
