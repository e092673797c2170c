//! Sanctioned loads: the load each account's connection is sanctioned for (from central), the
//! months in which a household drew more in several intervals, each recorded once and queued for
//! central (`UplinkEvent::SanctionedLoadExceeded`) with the household's message in the same
//! transaction, and the load-limit trips the policy pass queued (`load_trips`, written with the
//! command by `store::commands`).
use super::commands::{insert_alert, Alert};
use super::outbox::append_outbox;
use super::{from_ts, Result, Store};
use chrono::{DateTime, Utc};
use gramgrid_proto::wire::UplinkEvent;
use rusqlite::{params, OptionalExtension, Transaction};

/// A month in which a household drew more than its sanctioned load in several intervals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overload {
    /// `<gateway>:overload:<account>:<YYYY-MM>`.
    pub id: String,
    /// The account.
    pub account: String,
    /// The local month, `YYYY-MM`.
    pub month: String,
    /// Intervals above the sanctioned load when it was found.
    pub intervals: u32,
    /// The month's maximum demand then, in W.
    pub max_demand_w: i64,
    /// The sanctioned load, in W.
    pub sanctioned_w: i64,
    /// When the gateway found it.
    pub at: DateTime<Utc>,
}

/// Stores an account's sanctioned load as central sent it (None: not recorded).
pub(super) fn set_sanctioned_load_in(
    tx: &Transaction<'_>,
    account: &str,
    watts: Option<i64>,
) -> Result<()> {
    tx.execute(
        "UPDATE accounts SET sanctioned_load_w = ?2 WHERE id = ?1",
        params![account, watts],
    )?;
    Ok(())
}

/// A load-limit trip the policy pass queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadTripped {
    /// When it was decided and its disconnect queued.
    pub at: DateTime<Utc>,
    /// The end of its lockout.
    pub until: DateTime<Utc>,
    /// The sanctioned load it was over, in W.
    pub sanctioned_w: i64,
}

impl Store {
    /// The latest load-limit trip of an account, if any.
    pub fn latest_load_trip(&self, account: &str) -> Result<Option<LoadTripped>> {
        self.load_trip_where("account = ?1 ORDER BY at DESC LIMIT 1", account)
    }

    /// The load-limit trip a relay command carried out, if it was one.
    pub fn load_trip_of_command(&self, command: &str) -> Result<Option<LoadTripped>> {
        self.load_trip_where("command = ?1", command)
    }

    fn load_trip_where(&self, condition: &str, value: &str) -> Result<Option<LoadTripped>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT at, until, sanctioned_w FROM load_trips WHERE {condition}"
            ))?
            .query_row([value], |r| {
                Ok(LoadTripped {
                    at: from_ts(r.get(0)?),
                    until: from_ts(r.get(1)?),
                    sanctioned_w: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// The load an account's connection is sanctioned for, in W, if central recorded one.
    pub fn sanctioned_load(&self, account: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT sanctioned_load_w FROM accounts WHERE id = ?1",
                [account],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// How many accounts have a sanctioned load, and their sum in W: changes when central changes one.
    pub fn sanctioned_loads_digest(&self) -> Result<(i64, i64)> {
        Ok(self.conn.query_row(
            "SELECT COUNT(sanctioned_load_w), COALESCE(SUM(sanctioned_load_w), 0) FROM accounts",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Records an account's sanctioned load here (tests and the technician; central's records do
    /// the same through sync).
    pub fn set_sanctioned_load(&mut self, account: &str, watts: Option<i64>) -> Result<()> {
        let tx = self.conn.transaction()?;
        set_sanctioned_load_in(&tx, account, watts)?;
        tx.commit()?;
        Ok(())
    }

    /// The intervals over its sanctioned load an account was flagged for in a month (`YYYY-MM`), if
    /// it was.
    pub fn overload_in(&self, account: &str, month: &str) -> Result<Option<u32>> {
        Ok(self
            .conn
            .query_row(
                "SELECT intervals FROM overloads WHERE account = ?1 AND month = ?2",
                [account, month],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Whether the month's overload of an account is on record already.
    pub fn has_overload(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM overloads WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Records a month's overload once, queues it for central and enqueues `notice` for the
    /// household; false (and nothing queued) when it was on record.
    pub fn record_overload(&mut self, overload: &Overload, notice: &Alert) -> Result<bool> {
        let tx = self.conn.transaction()?;
        let new = tx.execute(
            "INSERT INTO overloads (id, account, month, intervals, max_demand_w, sanctioned_w, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
            params![
                overload.id,
                overload.account,
                overload.month,
                overload.intervals,
                overload.max_demand_w,
                overload.sanctioned_w,
                overload.at.timestamp()
            ],
        )? == 1;
        if new {
            append_outbox(
                &tx,
                &UplinkEvent::SanctionedLoadExceeded {
                    id: overload.id.clone(),
                    account: overload.account.clone(),
                    month: overload.month.clone(),
                    intervals: overload.intervals,
                    max_demand_w: overload.max_demand_w,
                    sanctioned_w: overload.sanctioned_w,
                    at: overload.at,
                },
            )?;
            insert_alert(&tx, notice)?;
        }
        tx.commit()?;
        Ok(new)
    }
}
