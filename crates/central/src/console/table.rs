//! A table as the console shows it and exports it: the same rows on the page and in the CSV.
use maud::{html, Markup};

/// Headers and rows of text, numbers already formatted.
pub struct Table {
    /// Column headers (English: the CSV's header line; the page translates them).
    pub headers: Vec<&'static str>,
    /// The rows, each as long as `headers`.
    pub rows: Vec<Vec<String>>,
    /// Columns holding numbers (right-aligned on the page).
    pub numeric: Vec<usize>,
}

impl Table {
    /// The table as HTML, headers through `tr`.
    pub fn html(&self, tr: impl Fn(&'static str) -> &'static str) -> Markup {
        html! {
            table.grid {
                thead { tr { @for h in &self.headers { th { (tr(h)) } } } }
                tbody {
                    @for row in &self.rows {
                        tr { @for (i, cell) in row.iter().enumerate() { td.num[self.numeric.contains(&i)] { (cell) } } }
                    }
                }
            }
        }
    }

    /// The table as CSV (RFC 4180: fields with a comma, quote or line break quoted, quotes
    /// doubled; CRLF line ends). A field a spreadsheet would run as a formula (starting with
    /// `=`, `+`, `-` or `@`, and not a number) is prefixed with `'`.
    pub fn csv(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, fields: &mut dyn Iterator<Item = &str>| {
            let fields: Vec<String> = fields.map(csv_field).collect();
            out.push_str(&fields.join(","));
            out.push_str("\r\n");
        };
        line(&mut out, &mut self.headers.iter().copied());
        for row in &self.rows {
            line(&mut out, &mut row.iter().map(String::as_str));
        }
        out
    }
}

fn csv_field(field: &str) -> String {
    let formula = field.starts_with(['=', '+', '-', '@']) && field.parse::<f64>().is_err();
    let field = if formula {
        format!("'{field}")
    } else {
        field.to_string()
    };
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it_and_defuses_formulas() {
        let table = Table {
            headers: vec!["name", "amount"],
            rows: vec![
                vec!["Sahu, Meera".into(), "-12.50".into()],
                vec!["say \"hi\"".into(), "=HYPERLINK(\"x\")".into()],
            ],
            numeric: vec![1],
        };
        assert_eq!(
            table.csv(),
            "name,amount\r\n\"Sahu, Meera\",-12.50\r\n\"say \"\"hi\"\"\",\"'=HYPERLINK(\"\"x\"\")\"\r\n"
        );
        let html = table.html(|h| h).into_string();
        assert!(html.contains(r#"<td class="num">-12.50</td>"#), "{html}");
    }
}
