//! What a technician types to install a meter: the serial (or the text of the nameplate's QR code), registers in kWh as the display shows them, and the reason for a swap.
use super::i18n::kwh;

/// The serial in what the technician typed or a phone's QR scanner pasted: the value of a
/// `serial=` parameter (a QR code holding the app's `/install?serial=…` address), of a
/// `serial:`/`SN:` field (a nameplate code of `key:value` fields separated by `;`, `,` or new
/// lines), or else the whole text, trimmed.
pub fn serial_from_scan(text: &str) -> String {
    let text = text.trim();
    if let Some((_, rest)) = text.split_once("serial=") {
        return rest.split(['&', '#', ' ']).next().unwrap_or("").to_string();
    }
    for field in text.split([';', ',', '\n']) {
        if let Some((key, value)) = field.split_once(':') {
            let key = key.trim().to_ascii_lowercase();
            if ["serial", "sn", "s/n", "serial no", "meter no"].contains(&key.as_str()) {
                return value.trim().to_string();
            }
        }
    }
    text.to_string()
}

/// A register as a meter's display shows it, in kWh (`1234.5`, `1,234.567`), in Wh; `None` for a
/// blank field, `Err(())` for anything else than a non-negative number with at most 3 decimals.
fn parse_kwh(text: &str) -> Result<Option<i64>, ()> {
    let text: String = text.trim().chars().filter(|c| *c != ',').collect();
    if text.is_empty() {
        return Ok(None);
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 3 {
        return Err(());
    }
    let whole: i64 = whole.parse().map_err(|_| ())?;
    let fraction: i64 = format!("{fraction:0<3}").parse().map_err(|_| ())?;
    whole
        .checked_mul(1000)
        .and_then(|wh| wh.checked_add(fraction))
        .filter(|wh| *wh <= gramgrid_core::rating::MAX_REGISTER_WH)
        .map(Some)
        .ok_or(())
}

/// Why an installation form was refused before anything was tried (English; each is in
/// `i18n::TEXTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A register that is not a number of kWh.
    NotARegister,
    /// A replacement without the old meter's final register.
    FinalRegisterMissing,
    /// A replacement without a reason.
    ReasonMissing,
}

impl Problem {
    /// The message (an English text of `i18n::TEXTS`).
    pub fn text(self) -> &'static str {
        match self {
            Problem::NotARegister => {
                "A register is a number of kWh as the display shows it, e.g. 1234.5."
            }
            Problem::FinalRegisterMissing => "The old meter's final register is required.",
            Problem::ReasonMissing => "A reason is required.",
        }
    }
}

/// An installation form, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallRequest<'a> {
    /// The new meter's first register (Wh), if read.
    pub first_register_wh: Option<i64>,
    /// The old meter's final register (Wh): Some for a replacement.
    pub final_register_wh: Option<i64>,
    /// Why the old meter is replaced.
    pub reason: Option<&'a str>,
}

impl<'a> InstallRequest<'a> {
    /// Checks the fields; `final_register` is present only in the replacement form.
    pub fn parse(
        first_register: &str,
        final_register: Option<&str>,
        reason: &'a str,
    ) -> Result<InstallRequest<'a>, Problem> {
        let first_register_wh = parse_kwh(first_register).map_err(|()| Problem::NotARegister)?;
        let Some(final_register) = final_register else {
            return Ok(InstallRequest {
                first_register_wh,
                final_register_wh: None,
                reason: (!reason.is_empty()).then_some(reason),
            });
        };
        let final_register_wh = parse_kwh(final_register)
            .map_err(|()| Problem::NotARegister)?
            .ok_or(Problem::FinalRegisterMissing)?;
        if reason.is_empty() {
            return Err(Problem::ReasonMissing);
        }
        Ok(InstallRequest {
            first_register_wh,
            final_register_wh: Some(final_register_wh),
            reason: Some(reason),
        })
    }

    /// The audit's action (`commission` or `replace`) and what was done, in words.
    pub fn describe(&self, serial: &str) -> (&'static str, String) {
        let first = self
            .first_register_wh
            .map_or("not read".to_string(), |wh| format!("{} kWh", kwh(wh)));
        match self.final_register_wh {
            None => (
                "commission",
                format!("meter {serial} commissioned, first register {first}"),
            ),
            Some(last) => (
                "replace",
                format!(
                    "meter in service replaced by {serial}: its final register {} kWh, the new meter's first register {first}",
                    kwh(last)
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serial_is_found_in_what_a_qr_scanner_pastes() {
        assert_eq!(serial_from_scan("  GG00000042 "), "GG00000042");
        assert_eq!(
            serial_from_scan("https://192.168.4.1:9443/install?serial=GG00000042&x=1"),
            "GG00000042"
        );
        assert_eq!(
            serial_from_scan("MAKE:Acme;SN:GG00000042;YEAR:2026"),
            "GG00000042"
        );
        assert_eq!(serial_from_scan("Serial: GG7\nType: 1ph"), "GG7");
    }

    #[test]
    fn registers_are_read_as_the_display_shows_them() {
        assert_eq!(parse_kwh(""), Ok(None));
        assert_eq!(parse_kwh("1234.5"), Ok(Some(1_234_500)));
        assert_eq!(parse_kwh("1,234.567"), Ok(Some(1_234_567)));
        assert_eq!(parse_kwh("7"), Ok(Some(7_000)));
        for wrong in ["-1", "12.3456", "abc", ".5", "1.2.3", "99999999999999"] {
            assert_eq!(parse_kwh(wrong), Err(()), "{wrong}");
        }
    }

    #[test]
    fn a_replacement_needs_the_final_register_and_a_reason() {
        let commission = InstallRequest::parse("10", None, "").unwrap();
        assert_eq!(commission.first_register_wh, Some(10_000));
        assert_eq!(commission.describe("M2").0, "commission");
        assert_eq!(
            InstallRequest::parse("", Some(""), "burnt"),
            Err(Problem::FinalRegisterMissing)
        );
        assert_eq!(
            InstallRequest::parse("", Some("5"), ""),
            Err(Problem::ReasonMissing)
        );
        assert_eq!(
            InstallRequest::parse("x", None, ""),
            Err(Problem::NotARegister)
        );
        let swap = InstallRequest::parse("", Some("5.5"), "display dead").unwrap();
        assert_eq!(
            swap.describe("M2"),
            (
                "replace",
                "meter in service replaced by M2: its final register 5.500 kWh, the new meter's first register not read".to_string()
            )
        );
        for problem in [
            Problem::NotARegister,
            Problem::FinalRegisterMissing,
            Problem::ReasonMissing,
        ] {
            assert!(
                super::super::i18n::TEXTS
                    .iter()
                    .any(|(en, _)| *en == problem.text()),
                "no Hindi for {problem:?}"
            );
        }
    }
}
