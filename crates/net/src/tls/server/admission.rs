//! Who gets a connection slot: at most [`MAX_PER_ADDRESS`] connections from one IP address, and
//! at most [`MAX_HANDSHAKES`] connections still in their TLS handshake, the oldest of which is
//! dropped to make room. A flood of idle connections therefore neither fills the listener nor
//! makes a real client wait: real clients finish their handshake in milliseconds, idle ones are
//! the oldest in the queue.
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// Connections one IP address may hold at once (a gateway uses one; an office system a few).
pub const MAX_PER_ADDRESS: usize = 32;
/// Connections that may be in their TLS handshake at once; a newer one evicts the oldest.
pub const MAX_HANDSHAKES: usize = 64;

#[derive(Default)]
struct State {
    per_address: HashMap<IpAddr, usize>,
    /// Handshakes in flight by arrival number, with the sender that cancels each.
    handshakes: BTreeMap<u64, oneshot::Sender<()>>,
    next: u64,
}

/// The listener's admission state, shared by its connection tasks.
#[derive(Clone, Default)]
pub struct Admission(Arc<Mutex<State>>);

/// A connection's claim on its address's share; released when dropped.
pub struct Admitted {
    admission: Admission,
    address: IpAddr,
}

/// A connection's place in the handshake queue; `evicted` completes if a newer connection needed
/// the place. Leaves the queue when dropped.
pub struct Handshaking {
    admission: Admission,
    number: u64,
    /// Completes when this handshake was evicted to make room for a newer one.
    pub evicted: oneshot::Receiver<()>,
}

impl Admission {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it: counters only.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a connection from `address`, or None when that address holds its share already.
    pub fn admit(&self, address: IpAddr) -> Option<Admitted> {
        let mut state = self.state();
        let count = state.per_address.entry(address).or_insert(0);
        if *count >= MAX_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(Admitted {
            admission: self.clone(),
            address,
        })
    }

    /// Enters the handshake queue, evicting the oldest handshake when it is full.
    pub fn handshake(&self) -> Handshaking {
        let (cancel, evicted) = oneshot::channel();
        let mut state = self.state();
        while state.handshakes.len() >= MAX_HANDSHAKES {
            if let Some((_, oldest)) = state.handshakes.pop_first() {
                let _ = oldest.send(());
            }
        }
        let number = state.next;
        state.next += 1;
        state.handshakes.insert(number, cancel);
        Handshaking {
            admission: self.clone(),
            number,
            evicted,
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut state = self.admission.state();
        if let Some(count) = state.per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                state.per_address.remove(&self.address);
            }
        }
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.admission.state().handshakes.remove(&self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_its_share_and_it_comes_back_when_connections_close() {
        let admission = Admission::default();
        let a: IpAddr = [127, 0, 0, 2].into();
        let held: Vec<Admitted> = (0..MAX_PER_ADDRESS)
            .map(|_| admission.admit(a).unwrap())
            .collect();
        assert!(admission.admit(a).is_none());
        assert!(admission.admit([127, 0, 0, 3].into()).is_some());
        drop(held);
        assert!(admission.admit(a).is_some());
    }

    #[test]
    fn a_full_handshake_queue_evicts_its_oldest_member() {
        let admission = Admission::default();
        let mut queue: Vec<Handshaking> =
            (0..MAX_HANDSHAKES).map(|_| admission.handshake()).collect();
        let mut newest = admission.handshake();
        assert!(
            queue[0].evicted.try_recv().is_ok(),
            "the oldest was told to go"
        );
        assert!(queue[1].evicted.try_recv().is_err(), "the others stay");
        assert!(newest.evicted.try_recv().is_err());
        // A finished handshake leaves the queue, making room without evicting anyone.
        queue.truncate(1);
        let _more = admission.handshake();
        assert!(newest.evicted.try_recv().is_err());
    }
}
