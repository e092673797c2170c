//! The air across processes: a hub on a loopback UDP port owns one `Air`; radios in other processes
//! (`gramgrid sim`, `gramgrid gateway`) join it as clients. One JSON message per datagram.

use crate::air::{
    Air, AirConfig, AirPort, AirStats, NodePort, NodeSpec, Reception, ReceptionSink, Transmission,
};
use crate::capture::CaptureWriter;
use gramgrid_radio::{Modulation, RadioError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Largest datagram: a 255-byte payload in hex plus the JSON around it stays far below this.
const MAX_DATAGRAM: usize = 8192;
const HELLO_TRIES: u32 = 20;
const HELLO_WAIT: Duration = Duration::from_millis(250);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BusMsg {
    Hello { node: NodeSpec },
    Welcome,
    Transmit { tx: Transmission },
    Listen { tuned: Option<Modulation> },
    Deliver { reception: Reception },
    Bye,
}

/// Splits a bus socket: tokio's half receives, a clone of the same UDP socket sends. A fresh tokio
/// socket answers "would block" until its reactor has polled it once, which dropped the first
/// datagrams of every radio that joined; the clone sends at once (it is non-blocking too, and only
/// a full socket buffer stops it).
fn split(socket: UdpSocket) -> std::io::Result<(UdpSocket, Arc<std::net::UdpSocket>)> {
    let std_socket = socket.into_std()?;
    let sender = std_socket.try_clone()?;
    Ok((UdpSocket::from_std(std_socket)?, Arc::new(sender)))
}

fn send(socket: &std::net::UdpSocket, to: SocketAddr, msg: &BusMsg) {
    let sent = serde_json::to_vec(msg)
        .map_err(|e| e.to_string())
        .and_then(|bytes| socket.send_to(&bytes, to).map_err(|e| e.to_string()));
    if let Err(e) = sent {
        // Loopback UDP only drops when a socket buffer is full; the air then loses a frame, as air does.
        tracing::warn!(%to, error = %e, "air bus: datagram not sent");
    }
}

/// The hub's handle on a remote radio: deliveries go back over UDP.
struct RemoteSink {
    socket: Arc<std::net::UdpSocket>,
    addr: SocketAddr,
}

impl ReceptionSink for RemoteSink {
    fn deliver(&self, reception: Reception) {
        send(&self.socket, self.addr, &BusMsg::Deliver { reception });
    }
}

/// Runs the air hub on `socket` until `shutdown` resolves; returns the air's counters.
pub async fn serve(
    socket: UdpSocket,
    config: AirConfig,
    capture: Option<CaptureWriter>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<AirStats> {
    let (socket, sender) = split(socket)?;
    let air = Air::new(config);
    if let Some(c) = capture {
        air.set_capture(c);
    }
    let mut nodes: HashMap<SocketAddr, NodePort> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    tokio::pin!(shutdown);
    loop {
        let (len, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // e.g. ICMP port unreachable from a client that went away
                Err(e) => { tracing::debug!(error = %e, "air bus: receive error"); continue; }
            },
            () = &mut shutdown => break,
        };
        let msg: BusMsg = match serde_json::from_slice(&buf[..len]) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%from, error = %e, "air bus: ill-formed datagram ignored");
                continue;
            }
        };
        match msg {
            BusMsg::Hello { node } => {
                if let std::collections::hash_map::Entry::Vacant(slot) = nodes.entry(from) {
                    tracing::info!(%from, name = %node.name, "air bus: radio joined");
                    let sink = Arc::new(RemoteSink {
                        socket: sender.clone(),
                        addr: from,
                    });
                    slot.insert(air.attach(node, sink));
                }
                send(&sender, from, &BusMsg::Welcome);
            }
            BusMsg::Transmit { tx } => match nodes.get(&from) {
                Some(port) => port.transmit(tx),
                None => tracing::warn!(%from, "air bus: frame from a radio that never said hello"),
            },
            BusMsg::Listen { tuned } => {
                if let Some(port) = nodes.get(&from) {
                    port.listen(tuned);
                }
            }
            BusMsg::Bye => {
                if let Some(port) = nodes.remove(&from) {
                    port.listen(None);
                }
            }
            BusMsg::Welcome | BusMsg::Deliver { .. } => {
                tracing::warn!(%from, "air bus: client-bound message sent to the hub ignored");
            }
        }
    }
    air.flush_capture()?;
    Ok(air.stats())
}

/// A radio's membership of a remote air. Dropping it leaves the air.
pub struct BusClient {
    socket: Arc<std::net::UdpSocket>,
    hub: SocketAddr,
    reader: JoinHandle<()>,
}

impl BusClient {
    /// Joins the hub at `hub` as `spec`; frames the air decides this radio hears go to `sink`.
    pub async fn connect(
        hub: SocketAddr,
        spec: NodeSpec,
        sink: Arc<dyn ReceptionSink>,
    ) -> Result<Self, RadioError> {
        let local: SocketAddr = if hub.is_ipv4() {
            ([127, 0, 0, 1], 0).into()
        } else {
            (std::net::Ipv6Addr::LOCALHOST, 0).into()
        };
        let io = |e: std::io::Error| RadioError::Io(format!("air bus {hub}: {e}"));
        let (socket, sender) = split(UdpSocket::bind(local).await.map_err(io)?).map_err(io)?;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut welcomed = false;
        for _ in 0..HELLO_TRIES {
            send(&sender, hub, &BusMsg::Hello { node: spec.clone() });
            if let Ok(Ok((len, from))) =
                tokio::time::timeout(HELLO_WAIT, socket.recv_from(&mut buf)).await
            {
                if from == hub && matches!(serde_json::from_slice(&buf[..len]), Ok(BusMsg::Welcome))
                {
                    welcomed = true;
                    break;
                }
            }
        }
        if !welcomed {
            return Err(RadioError::Io(format!(
                "air bus hub at {hub} did not answer"
            )));
        }
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if from != hub {
                    continue;
                }
                match serde_json::from_slice(&buf[..len]) {
                    Ok(BusMsg::Deliver { reception }) => sink.deliver(reception),
                    Ok(BusMsg::Welcome) => {}
                    Ok(other) => tracing::warn!(?other, "air bus: unexpected message from hub"),
                    Err(e) => tracing::warn!(error = %e, "air bus: ill-formed datagram from hub"),
                }
            }
        });
        Ok(Self {
            socket: sender,
            hub,
            reader,
        })
    }

    /// The antenna to attach to the emulated chip.
    pub fn port(&self) -> Arc<dyn AirPort> {
        Arc::new(BusPort {
            socket: self.socket.clone(),
            hub: self.hub,
        })
    }
}

impl Drop for BusClient {
    fn drop(&mut self) {
        send(&self.socket, self.hub, &BusMsg::Bye);
        self.reader.abort();
    }
}

struct BusPort {
    socket: Arc<std::net::UdpSocket>,
    hub: SocketAddr,
}

impl AirPort for BusPort {
    fn transmit(&self, tx: Transmission) {
        send(&self.socket, self.hub, &BusMsg::Transmit { tx });
    }
    fn listen(&self, tuned: Option<Modulation>) {
        send(&self.socket, self.hub, &BusMsg::Listen { tuned });
    }
    /// The bus carries no channel state back to clients, so CAD over the bus never sees activity.
    fn channel_active(&self, _tuned: &Modulation) -> bool {
        false
    }
}
