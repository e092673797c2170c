//! Wake-up calls between the daemon's tasks: money that arrived (a voucher redeemed here, a
//! recharge from central) wakes the policy pass at once, so a household paid up is reconnected in
//! seconds, not at the next scheduled minute; a redemption or central's push wakes the sync client.
use tokio::sync::Notify;

/// The daemon's wake-up calls; each stores one permit, so a call made while its task is busy is
/// not lost.
#[derive(Debug, Default)]
pub struct Wakers {
    /// Runs a sync session now.
    pub sync: Notify,
    /// Runs a policy pass now (inside the policy's window rules, as any pass).
    pub policy: Notify,
}

impl Wakers {
    /// Money was credited here (a voucher): the policy pass reconnects, central hears of it.
    pub fn money_arrived(&self) {
        self.policy.notify_one();
        self.sync.notify_one();
    }
}
