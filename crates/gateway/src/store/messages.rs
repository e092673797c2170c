//! Messages the gateway's own modem sends while the backhaul is down: which notices are still the
//! gateway's to send (never offered to central), holding sync back from them while the modem
//! sends, and amending each sent notice so central records it as sent and never sends it again.
use super::outbox::{amend_outbox, outbox_event};
use super::sync::{set_state_in, state_in};
use super::{ts, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use gramgrid_core::message::{Kind, Language, Vars};
use gramgrid_proto::wire::UplinkEvent;
use rusqlite::params;

/// The highest priority-outbox sequence ever put in a request to central: central may have a
/// record up to it, so only notices after it are still the gateway's to send.
const PRIORITY_OFFERED: &str = "priority_offered";

/// An urgent consumer message the gateway's modem may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemMessage {
    /// The alert's id.
    pub alert_id: String,
    /// The outbox row of its notice.
    pub outbox_seq: i64,
    /// The consumer's account.
    pub account: String,
    /// The consumer's phone number.
    pub phone: String,
    /// The consumer's language.
    pub language: Language,
    /// What it is about.
    pub kind: Kind,
    /// The template's variables.
    pub vars: Vars,
}

impl Store {
    /// Records that outbox records up to `seq` were offered to central (call before sending them).
    pub fn note_offered(&mut self, seq: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        if seq > state_in(&tx, PRIORITY_OFFERED)? {
            set_state_in(&tx, PRIORITY_OFFERED, seq)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Urgent messages not yet sent, whose notices central was never offered, oldest first.
    pub fn modem_messages(&mut self, limit: usize) -> Result<Vec<ModemMessage>> {
        let tx = self.conn.transaction()?;
        let offered = state_in(&tx, PRIORITY_OFFERED)?;
        let mut statement = tx.prepare_cached(
            "SELECT a.id, a.outbox_seq, a.account, c.phone, c.language, a.kind, a.vars
             FROM alerts a JOIN accounts c ON c.id = a.account
             WHERE a.sent_at IS NULL AND a.outbox_seq > ?1 AND COALESCE(c.phone, '') != ''
             ORDER BY a.outbox_seq",
        )?;
        let rows = statement.query_map([offered as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut messages = Vec::new();
        for row in rows {
            let (alert_id, outbox_seq, account, phone, language, kind, vars) = row?;
            let Some(kind) = Kind::parse(&kind).filter(|k| k.is_urgent()) else {
                continue;
            };
            messages.push(ModemMessage {
                alert_id,
                outbox_seq,
                account,
                phone,
                language: Language::parse(&language).unwrap_or_default(),
                kind,
                vars: serde_json::from_str(&vars).unwrap_or_default(),
            });
            if messages.len() == limit {
                break;
            }
        }
        drop(statement);
        tx.commit()?;
        Ok(messages)
    }

    /// Holds outbox records from `seq` on back from sync (while the modem sends them).
    pub fn hold_outbox_from(&mut self, seq: i64) {
        self.outbox_hold = Some(seq.max(0) as u64);
    }

    /// Lets sync offer the whole outbox again.
    pub fn release_outbox_hold(&mut self) {
        self.outbox_hold = None;
    }

    /// Records that the modem sent `message` as `text` at `at`: the alert is sent, and its notice
    /// says so when central receives it.
    pub fn record_sent_by_modem(
        &mut self,
        message: &ModemMessage,
        text: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        if message.outbox_seq as u64 <= state_in(&tx, PRIORITY_OFFERED)? {
            return Err(StoreError::Encoding(format!(
                "notice {} was offered to central while the modem sent it",
                message.alert_id
            )));
        }
        if let Some(UplinkEvent::Notice {
            id,
            account,
            kind,
            created_at,
            vars,
            ..
        }) = outbox_event(&tx, message.outbox_seq)?
        {
            let sent = UplinkEvent::Notice {
                id,
                account,
                kind,
                created_at,
                message: text.to_string(),
                vars,
                sent_by_gateway_at: Some(at),
            };
            amend_outbox(&tx, message.outbox_seq, &sent)?;
        }
        tx.execute(
            "UPDATE alerts SET sent_at = ?2 WHERE id = ?1",
            params![message.alert_id, ts(at)],
        )?;
        tx.commit()?;
        Ok(())
    }
}
