//! Rings, per gateway, after a committed transaction appended to that gateway's downlink log, so
//! a gateway waiting on `GET /sync/v1/wait` hears of a recharge at once (not at its next
//! scheduled sync).
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

/// One bell per gateway that has ever been waited on or rung.
#[derive(Debug, Default)]
pub struct DownlinkBell {
    bells: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl DownlinkBell {
    /// A receiver that sees every ring for `gateway` from now on (`changed()` resolves).
    pub fn subscribe(&self, gateway: &str) -> watch::Receiver<u64> {
        self.with(gateway, watch::Sender::subscribe)
    }

    /// Rings `gateways`' bells (after their downlink records are committed).
    pub(super) fn ring(&self, gateways: &[String]) {
        for gateway in gateways {
            self.with(gateway, |bell| bell.send_modify(|rings| *rings += 1));
        }
    }

    fn with<T>(&self, gateway: &str, f: impl FnOnce(&watch::Sender<u64>) -> T) -> T {
        // The map holds plain senders: a panic elsewhere cannot leave it half-written.
        let mut bells = self.bells.lock().unwrap_or_else(|p| p.into_inner());
        let bell = bells
            .entry(gateway.to_owned())
            .or_insert_with(|| watch::channel(0).0);
        f(bell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ring_reaches_the_gateways_subscribers_and_no_other() {
        let bell = DownlinkBell::default();
        let mut a = bell.subscribe("gw-a");
        let b = bell.subscribe("gw-b");
        bell.ring(&["gw-a".into()]);
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap());
        a.changed().await.unwrap();
        // Subscribed after a ring: only later rings count.
        let late = bell.subscribe("gw-a");
        assert!(!late.has_changed().unwrap());
        bell.ring(&["gw-a".into(), "gw-b".into()]);
        assert!(late.has_changed().unwrap() && b.has_changed().unwrap());
    }
}
