//! A loopback TCP relay that imitates a poor cellular link between a gateway and central: limited
//! bandwidth, added latency, and injected faults (a connection cut mid-request, or an answer lost
//! after the server acted on the request, which makes the gateway send the same batch again).
//!
//! It relays bytes without looking inside, so TLS runs end to end through it. Used by
//! `gramgrid bench sync` (the 64 kbit/s catch-up figure) and by the sync failure tests.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What happens to one relayed connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fault {
    /// Relay the connection untouched.
    #[default]
    None,
    /// Close both sides after this many bytes from the client have been forwarded.
    CutRequestAfter(usize),
    /// Forward the whole request, then close after this many bytes of the answer.
    CutResponseAfter(usize),
    /// Refuse the connection outright (the link is down).
    Refuse,
}

/// Link properties and faults, shared with the running relay so a test can change them.
#[derive(Debug, Default)]
pub struct LinkPlan {
    /// Bytes per second in each direction (None: unlimited).
    pub bytes_per_second: Option<u64>,
    /// One-way delay added to every chunk.
    pub latency: Duration,
    /// Faults for the next connections, in order; later connections get `default_fault`.
    pub faults: VecDeque<Fault>,
    /// The fault of every connection once `faults` is empty.
    pub default_fault: Fault,
}

/// A running relay.
pub struct Relay {
    /// Where the relay listens (127.0.0.1, a free port): point the gateway here, not at central.
    pub addr: SocketAddr,
    /// The link's properties. Rate, latency and an outage (`default_fault = Refuse`) apply at once,
    /// to open connections too; `faults` to the connections accepted after the change.
    pub plan: Arc<Mutex<LinkPlan>>,
    /// Bytes carried (both directions), for the bytes-on-the-wire figure.
    pub bytes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a relay on 127.0.0.1 forwarding to `upstream`.
pub async fn start(upstream: SocketAddr, plan: LinkPlan) -> std::io::Result<Relay> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let plan = Arc::new(Mutex::new(plan));
    let bytes = Arc::new(AtomicU64::new(0));
    let (shared_plan, shared_bytes) = (plan.clone(), bytes.clone());
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let fault = match shared_plan.lock() {
                Ok(mut p) => p.faults.pop_front().unwrap_or(p.default_fault),
                Err(_) => return,
            };
            if fault == Fault::Refuse {
                continue; // dropping the stream closes it
            }
            let (plan, bytes) = (shared_plan.clone(), shared_bytes.clone());
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(upstream).await {
                    relay(client, server, fault, plan, bytes).await;
                }
            });
        }
    });
    Ok(Relay {
        addr,
        plan,
        bytes,
        task,
    })
}

/// Pumps both directions until either side closes or a fault cuts the connection.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    fault: Fault,
    plan: Arc<Mutex<LinkPlan>>,
    bytes: Arc<AtomicU64>,
) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let (up_limit, down_limit) = match fault {
        Fault::CutRequestAfter(n) => (Some(n), None),
        Fault::CutResponseAfter(n) => (None, Some(n)),
        Fault::None | Fault::Refuse => (None, None),
    };
    let up = pump(
        client_read,
        server_write,
        up_limit,
        plan.clone(),
        bytes.clone(),
    );
    let down = pump(server_read, client_write, down_limit, plan, bytes);
    // Either direction finishing (closed or cut) ends the connection, like a dropped cellular bearer.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// The link's rate and latency now, or `None` when it has gone down (an outage drops the bearer,
/// so a connection kept open from before carries nothing either).
fn conditions(plan: &Mutex<LinkPlan>) -> Option<(Option<u64>, Duration)> {
    let plan = plan.lock().ok()?;
    (plan.default_fault != Fault::Refuse).then_some((plan.bytes_per_second, plan.latency))
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    limit: Option<usize>,
    plan: Arc<Mutex<LinkPlan>>,
    bytes: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; 4096];
    let mut forwarded = 0usize;
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Some((rate, latency)) = conditions(&plan) else {
            return;
        };
        let n = limit.map_or(n, |l| n.min(l.saturating_sub(forwarded)));
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if let Some(rate) = rate.filter(|r| *r > 0) {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
        forwarded += n;
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        if limit.is_some_and(|l| forwarded >= l) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(message).await.unwrap();
        let mut out = vec![0u8; message.len()];
        let mut got = 0;
        while got < out.len() {
            match s.read(&mut out[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        out.truncate(got);
        out
    }

    #[tokio::test]
    async fn relays_limits_and_cuts() {
        let relay = start(echo_server().await, LinkPlan::default())
            .await
            .unwrap();
        assert_eq!(round_trip(relay.addr, b"hello").await, b"hello");
        relay
            .plan
            .lock()
            .unwrap()
            .faults
            .push_back(Fault::CutResponseAfter(2));
        assert_eq!(round_trip(relay.addr, b"hello").await, b"he");
        // A request cut short closes both directions: the client hears nothing back.
        relay
            .plan
            .lock()
            .unwrap()
            .faults
            .push_back(Fault::CutRequestAfter(3));
        assert_eq!(round_trip(relay.addr, b"hello").await, b"");
        relay.plan.lock().unwrap().faults.push_back(Fault::Refuse);
        assert_eq!(round_trip(relay.addr, b"hello").await, b"");
        relay.plan.lock().unwrap().bytes_per_second = Some(2_000);
        let started = std::time::Instant::now();
        assert_eq!(round_trip(relay.addr, &[7u8; 1_000]).await.len(), 1_000);
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "1,000 bytes each way at 2,000 B/s"
        );
        assert!(relay.bytes.load(Ordering::Relaxed) >= 2_000);
    }

    #[tokio::test]
    async fn an_outage_cuts_a_connection_opened_before_it() {
        let relay = start(echo_server().await, LinkPlan::default())
            .await
            .unwrap();
        let mut open = TcpStream::connect(relay.addr).await.unwrap();
        open.write_all(b"up").await.unwrap();
        let mut answer = [0u8; 2];
        open.read_exact(&mut answer).await.unwrap();
        relay.plan.lock().unwrap().default_fault = Fault::Refuse;
        // The link is down: what is written now goes nowhere, and the connection is closed.
        open.write_all(b"down").await.unwrap();
        let mut rest = Vec::new();
        let _ = open.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{rest:?}");
    }
}
