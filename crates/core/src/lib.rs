//! The pure core of gramgrid: what a prepaid electricity account owes and when its supply may be cut.
//!
//! Everything here is a function of facts and a time. Nothing reads a clock, a file, a database or
//! the network, so every decision can be replayed and property-tested. The shells around it (the
//! gateway, central, the simulator) gather the facts and carry out the decisions.
//!
//! - [`civil`]: Asia/Kolkata local dates and months, and the UTC seconds used in storage;
//! - [`tariff`]: effective-dated tariff versions (slabs, fixed and minimum charges, duty) and quotes;
//! - [`rating`]: cumulative register readings → energy and charges per tariff segment;
//! - [`ledger`]: money events and the balance derived from them;
//! - [`policy`]: alerts and the disconnect/reconnect decision under windows, holidays and grace;
//! - [`outage`]: supply outages found in meters' power events, and the grace they add;
//! - [`relay`]: the relay command lifecycle (retries, time-outs, confirmation);
//! - [`clock`]: the clock-trust rule (may this gateway's clock be believed for a disconnect?);
//! - [`breaker`]: the disconnection circuit breaker (holds mass or doubtful cuts until released);
//! - [`decision`]: a relay decision's recorded facts, in words, replayable;
//! - [`demand`]: maximum demand (average power over 15-minute intervals) from register readings;
//! - [`indian`]: Indian number formats (rupees and kWh in lakhs and crores);
//! - [`message`]: consumer messages: kinds, languages, templates, SMS parts, quiet hours;
//! - [`audit`]: the transformer's energy audit: delivered against recorded, and the evidence.
//!
//! Architecture invariant: this crate depends on no async runtime, database, network or CLI crate
//! (`tests/run` checks `cargo tree -p gramgrid-core`).

#![warn(missing_docs)]

pub mod audit;
pub mod breaker;
pub mod civil;
pub mod clock;
pub mod decision;
pub mod demand;
pub mod indian;
pub mod ledger;
pub mod message;
pub mod netmeter;
pub mod outage;
pub mod policy;
pub mod rating;
pub mod relay;
pub mod tariff;

/// Helpers of this crate's property tests.
#[cfg(test)]
mod testing {
    /// Shuffles `items` by a permutation drawn from `seed` (Fisher-Yates over a 64-bit LCG), so a
    /// failing case replays with the same order.
    pub(crate) fn shuffle<T>(items: &mut [T], seed: u64) {
        let mut state = seed;
        for i in (1..items.len()).rev() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            items.swap(i, (state >> 33) as usize % (i + 1));
        }
    }
}
