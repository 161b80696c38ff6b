//! [`Proxy`]: the harness's TCP proxy in front of one store's peer port, where network faults
//! between stores are made.
//!
//! Each store sends its raft traffic from its own loopback IP, so the proxy in front of store B
//! knows which store a connection comes from by its source IP, and applies that sender's
//! [`Link`]:
//!
//! ```text
//!   store A (127.0.0.2) --raft--> proxy of B (127.0.0.3:X) --Link[A]--> B's peer port
//!   Pass      forward both ways
//!   Delay(d)  forward each chunk d after it arrived (order kept)
//!   Blackhole accept, read and discard both ways; a connection that lost bytes is closed once
//!             the link passes again (its stream is corrupt), so the sender reconnects
//!   Reject    close at once (and every connection from A as soon as the link turns Reject)
//! ```
//! A one-way partition A↛B is `Blackhole` (or `Reject`) for A at B's proxy only: B's messages to
//! A travel on B's own connection, through A's proxy, untouched.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with the traffic of one sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Forward.
    Pass,
    /// Forward each chunk this long after it arrived.
    Delay(Duration),
    /// Swallow everything, silently.
    Blackhole,
    /// Close connections at once.
    Reject,
}

struct State {
    target: Mutex<Option<SocketAddr>>,
    links: Mutex<HashMap<IpAddr, Link>>,
    /// Bumped on every change of `links`, so open connections look again.
    changed: watch::Sender<u64>,
}

impl State {
    fn link(&self, from: IpAddr) -> Link {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.get(&from).copied().unwrap_or(Link::Pass)
    }
}

/// A proxy listening on one address, forwarding to a store's peer port.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listens on `addr` (port 0: any free one); forwards nowhere until [`Proxy::set_target`].
    pub async fn start(addr: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            target: Mutex::new(None),
            links: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, from)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = conn.set_nodelay(true);
                    serve(conn, from.ip(), s).await;
                });
            }
        });
        Ok(Proxy { addr, state, task })
    }

    /// The address it listens on (the store's advertised peer address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it forwards to (the store's real peer port, which changes if the store moves).
    pub fn set_target(&self, target: SocketAddr) {
        *self.state.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(target);
    }

    /// Sets the link of traffic from `from`.
    pub fn set_link(&self, from: IpAddr, link: Link) {
        let mut links = self.state.links.lock().unwrap_or_else(|e| e.into_inner());
        if link == Link::Pass {
            links.remove(&from);
        } else {
            links.insert(from, link);
        }
        drop(links);
        self.state.changed.send_modify(|g| *g += 1);
    }

    /// Every link back to `Pass`.
    pub fn heal(&self) {
        self.state
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.state.changed.send_modify(|g| *g += 1);
    }
}

/// Serves one accepted connection from `from` until it ends.
async fn serve(mut conn: TcpStream, from: IpAddr, state: Arc<State>) {
    let mut changed = state.changed.subscribe();
    // Not yet forwarding: a blackholed connection is held open and read into the void.
    loop {
        match state.link(from) {
            Link::Reject => return,
            Link::Blackhole => {
                let mut buf = [0u8; 8192];
                tokio::select! {
                    r = conn.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return },
                    _ = changed.changed() => {
                        // Bytes may have been swallowed: this stream is corrupt.
                        if state.link(from) != Link::Blackhole { return }
                    }
                }
            }
            Link::Pass | Link::Delay(_) => break,
        }
    }
    let target = *state.target.lock().unwrap_or_else(|e| e.into_inner());
    let Some(target) = target else {
        return;
    };
    let upstream =
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target)).await {
            Ok(Ok(u)) => u,
            _ => return,
        };
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = conn.into_split();
    let (ur, uw) = upstream.into_split();
    let lost = Arc::new(AtomicBool::new(false));
    let up = pump(cr, uw, from, state.clone(), lost.clone());
    let down = pump(ur, cw, from, state.clone(), lost.clone());
    tokio::pin!(up, down);
    let watch_rejects = async {
        loop {
            if changed.changed().await.is_err() {
                return std::future::pending().await;
            }
            let link = state.link(from);
            if link == Link::Reject || (lost.load(Ordering::Relaxed) && link != Link::Blackhole) {
                return;
            }
        }
    };
    // Either direction ending, or the link turning Reject, ends the connection; dropping the
    // halves closes both sockets.
    tokio::select! {
        _ = &mut up => {}
        _ = &mut down => {}
        _ = watch_rejects => {}
    }
}

/// Copies `from_half` into `to_half` under the sender's link until either side closes, the link
/// rejects, or a corrupt stream (bytes swallowed) may pass again.
async fn pump(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    from: IpAddr,
    state: Arc<State>,
    lost: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = w.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        match state.link(from) {
            Link::Reject => return,
            Link::Blackhole => {
                lost.store(true, Ordering::Relaxed);
                continue;
            }
            Link::Pass if lost.load(Ordering::Relaxed) => return,
            Link::Delay(_) if lost.load(Ordering::Relaxed) => return,
            Link::Pass => {}
            Link::Delay(d) => tokio::time::sleep(d).await,
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::net::TcpSocket;

    /// An echo server on 127.0.0.1.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = c.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// A connection to `to` from `ip`.
    async fn dial(ip: &str, to: SocketAddr) -> TcpStream {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        s.connect(to).await.unwrap()
    }

    /// Sends `msg` and waits up to `bound` for it to come back; `None` if it does not.
    async fn round_trip(c: &mut TcpStream, msg: &[u8], bound: Duration) -> Option<Vec<u8>> {
        c.write_all(msg).await.ok()?;
        let mut got = vec![0u8; msg.len()];
        match tokio::time::timeout(bound, c.read_exact(&mut got)).await {
            Ok(Ok(_)) => Some(got),
            _ => None,
        }
    }

    #[tokio::test]
    async fn links_act_per_sender_ip_3b() {
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        proxy.set_target(echo().await);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let short = Duration::from_millis(300);
        let mut from_a = dial("127.0.0.2", proxy.addr()).await;
        let mut from_b = dial("127.0.0.3", proxy.addr()).await;
        assert_eq!(
            round_trip(&mut from_a, b"hi", short).await.as_deref(),
            Some(&b"hi"[..])
        );

        // Blackhole A: its bytes vanish, B's still pass.
        proxy.set_link(a, Link::Blackhole);
        assert_eq!(round_trip(&mut from_a, b"lost", short).await, None);
        assert_eq!(
            round_trip(&mut from_b, b"ok", short).await.as_deref(),
            Some(&b"ok"[..])
        );
        // A new connection from A is held open but silent.
        let mut again = dial("127.0.0.2", proxy.addr()).await;
        assert_eq!(round_trip(&mut again, b"x", short).await, None);
        // Healed: the corrupt connections are closed, a new one passes.
        proxy.heal();
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(2), from_a.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut fresh = dial("127.0.0.2", proxy.addr()).await;
        assert_eq!(
            round_trip(&mut fresh, b"back", short).await.as_deref(),
            Some(&b"back"[..])
        );

        // Delay: bytes arrive, late.
        proxy.set_link(a, Link::Delay(Duration::from_millis(200)));
        let t = Instant::now();
        assert!(round_trip(&mut fresh, b"slow", Duration::from_secs(2))
            .await
            .is_some());
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );

        // Reject: open connections from A are closed at once, new ones too.
        proxy.set_link(a, Link::Reject);
        let closed = tokio::time::timeout(Duration::from_secs(2), fresh.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut refused = dial("127.0.0.2", proxy.addr()).await;
        let closed = tokio::time::timeout(Duration::from_secs(2), refused.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        assert_eq!(
            round_trip(&mut from_b, b"b", short).await.as_deref(),
            Some(&b"b"[..])
        );
    }
}
