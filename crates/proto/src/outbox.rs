//! The stored format of a gateway's priority outbox rows: each row carries the format its body
//! was written in, so a gateway upgraded with a full outbox still reads (and syncs) what the
//! previous version wrote.
//!
//! Format 1 is postcard of [`UplinkEvent`], exactly as gramgrid wrote outbox rows before rows had a
//! format column (golden rows in `tests/data/wire-v1/` keep it that way). Format 2 is the same
//! encoding with one more variant, [`UplinkEvent::VoucherCode`], appended (postcard numbers
//! variants by position, so every format-1 row decodes unchanged); a gramgrid that reads only
//! format 1 refuses a format-2 row instead of misreading it. A new format gets a new number here
//! and a decoder for every older one that may still sit in an outbox.
use crate::wire::UplinkEvent;

/// The format new outbox rows are written in.
pub const OUTBOX_FORMAT: u16 = 2;

/// Why an outbox row could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The row's format is newer than this gramgrid (a downgrade with records still queued).
    #[error("outbox row in format {0}, but this gramgrid reads formats up to {OUTBOX_FORMAT}; install the newer gramgrid again (nothing was lost)")]
    UnknownFormat(u16),
    /// The body does not decode in its format (a damaged database).
    #[error(
        "outbox row does not decode in format {format}: {detail}; run `gramgrid gateway verify`"
    )]
    Damaged {
        /// The row's format.
        format: u16,
        /// What the decoder said.
        detail: String,
    },
    /// The event could not be encoded.
    #[error("cannot encode an outbox row: {0}")]
    Encode(String),
}

/// Encodes an event for a new outbox row, in [`OUTBOX_FORMAT`].
pub fn encode(event: &UplinkEvent) -> Result<Vec<u8>, OutboxError> {
    postcard::to_stdvec(event).map_err(|e| OutboxError::Encode(e.to_string()))
}

/// Decodes an outbox row written in `format`.
pub fn decode(format: u16, body: &[u8]) -> Result<UplinkEvent, OutboxError> {
    match format {
        1 | 2 => postcard::from_bytes(body).map_err(|e| OutboxError::Damaged {
            format,
            detail: e.to_string(),
        }),
        other => Err(OutboxError::UnknownFormat(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_from_a_newer_gramgrid_is_refused_with_what_to_do() {
        let error = decode(OUTBOX_FORMAT + 1, b"").unwrap_err();
        assert!(error.to_string().contains("install the newer gramgrid"));
    }

    #[test]
    fn a_damaged_row_is_an_error_not_a_panic() {
        assert!(matches!(
            decode(1, &[0xff; 3]),
            Err(OutboxError::Damaged { .. })
        ));
    }
}
