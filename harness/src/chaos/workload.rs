//! The clients of a chaos run: concurrent reads, puts, deletes and compare-and-swaps (gRPC only:
//! the gateway has none) of a few keys at a time, over
//! gRPC (`ClusterClient`) and over the HTTP gateway of a random store, each recorded with its
//! [`Outcome`].
//!
//! Keys are used in generations: a handful are active at once, and a key retires after a fixed
//! number of operations, so each key's history stays short enough to check exhaustively.
//! Values are unique (`c{client}-{n}`).
//!
//! Result classification:
//! - gRPC write (put, delete, compare-and-swap): `ClusterClient` sends a raw write again only
//!   after failures that prove it was not applied (a connection never made; `NotLeader`,
//!   `EpochNotMatch`, `KeyNotInRegion`, `RegionNotFound`, `ServerIsBusy`, `StaleCommand`,
//!   `StoreNotMatch`, `DiskFull`), so an acknowledged write applied exactly once. Its
//!   `Undetermined` (a timeout, a connection lost once the request may have been sent, a
//!   store's `Unavailable`, a region error that proves nothing) is unknown; any other error is
//!   taken at its word as failed, so the checker also tests the client's and the raftstore's
//!   claims that those answers mean "not applied".
//! - HTTP write: 204 is ok; a connection that could not be made is failed; anything else
//!   (5xx, 507, a timeout) is unknown — the gateway's own client may have tried several times.
//! - Reads: an answer is ok; anything else is failed (a read has no effect).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checker::{Input, Output};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::history::{Outcome, Record, Recorder, Via};
use tessera_client::cluster::{ClusterClient, ClusterConfig};
use tessera_client::raw::RawClient;
/// Bound of one HTTP request (the gateway's own client gives up after 10 s).
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// The harness clients' timeouts: short RPCs, so a client stuck on a cut-off leader moves on.
pub fn client_config() -> ClusterConfig {
    ClusterConfig {
        timeout: Duration::from_secs(8),
        rpc_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        scheduler_timeout: Duration::from_secs(5),
        ..ClusterConfig::default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The keys in use: `active` ones are picked at random; a key retires after `per_key` ops.
pub struct Keys {
    prefix: String,
    active: Vec<(Vec<u8>, usize)>,
    next: usize,
    per_key: usize,
    /// Every key ever used.
    pub used: Vec<Vec<u8>>,
}

impl Keys {
    /// `active` keys named `{prefix}{n}`, each used for `per_key` operations.
    pub fn new(prefix: &str, active: usize, per_key: usize) -> Keys {
        let mut k = Keys {
            prefix: prefix.to_string(),
            active: Vec::new(),
            next: 0,
            per_key,
            used: Vec::new(),
        };
        for _ in 0..active {
            let key = k.fresh();
            k.active.push((key, 0));
        }
        k
    }

    fn fresh(&mut self) -> Vec<u8> {
        let key = format!("{}{}", self.prefix, self.next).into_bytes();
        self.next += 1;
        self.used.push(key.clone());
        key
    }

    fn pick(&mut self, rng: &mut StdRng) -> Vec<u8> {
        let i = rng.gen_range(0..self.active.len());
        self.active[i].1 += 1;
        let key = self.active[i].0.clone();
        if self.active[i].1 >= self.per_key {
            let fresh = self.fresh();
            self.active[i] = (fresh, 0);
        }
        key
    }
}

/// A put, delete or compare-and-swap over gRPC. `ClusterClient` never resends a raw write
/// once an attempt's outcome is unknown, and says so ([`tessera_client::cluster::ClusterError::Undetermined`]); any
/// other error claims that no attempt applied, a claim the checker then holds it to.
async fn grpc_write(client: &ClusterClient, key: &[u8], input: &Input) -> Outcome {
    let result = match input {
        Input::Put(value) => client
            .put("default", key, value)
            .await
            .map(|()| Output::Written),
        Input::Delete => client
            .delete("default", key)
            .await
            .map(|()| Output::Written),
        Input::Cas { expect, new } => client
            .compare_and_swap("default", key, expect.as_deref(), new)
            .await
            .map(|r| Output::Cas {
                succeeded: r.succeed,
                previous: r.previous,
            }),
        Input::Get => unreachable!("reads are not writes"),
    };
    match result {
        Ok(output) => Outcome::Ok(output),
        Err(e) if e.is_undetermined() => Outcome::Unknown(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// One HTTP/1.1 request; `Err((sent, why))` when there is no answer (`sent`: the request may
/// have reached the server).
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), (bool, String)> {
    let mut conn =
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err((false, format!("connect {addr}: {e}"))),
            Err(_) => return Err((false, format!("connect {addr}: timed out"))),
        };
    let exchange = async {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await?;
        conn.write_all(body).await?;
        let mut resp = Vec::new();
        conn.read_to_end(&mut resp).await?;
        Ok::<_, std::io::Error>(resp)
    };
    let resp = match tokio::time::timeout(HTTP_TIMEOUT, exchange).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err((true, format!("{method} {path}: {e}"))),
        Err(_) => {
            return Err((
                true,
                format!("{method} {path}: no answer in {HTTP_TIMEOUT:?}"),
            ))
        }
    };
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or((true, "malformed response".to_string()))?;
    let head = String::from_utf8_lossy(&resp[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or((true, format!("malformed status line: {head}")))?;
    Ok((status, resp[split + 4..].to_vec()))
}

async fn http_op(addr: std::net::SocketAddr, key: &[u8], input: &Input) -> Outcome {
    let path = format!("/kv/{}", String::from_utf8_lossy(key));
    let (method, body): (&str, &[u8]) = match input {
        Input::Get => ("GET", b""),
        Input::Put(v) => ("PUT", v),
        Input::Delete => ("DELETE", b""),
        Input::Cas { .. } => return Outcome::Failed("no cas over HTTP".to_string()),
    };
    let answer = http(addr, method, &path, body).await;
    match (input, answer) {
        (Input::Get, Ok((200, v))) => Outcome::Ok(Output::Value(Some(v))),
        (Input::Get, Ok((404, _))) => Outcome::Ok(Output::Value(None)),
        (Input::Get, Ok((s, b))) => {
            Outcome::Failed(format!("{s}: {}", String::from_utf8_lossy(&b).trim()))
        }
        (Input::Get, Err((_, why))) => Outcome::Failed(why),
        (_, Ok((204, _))) => Outcome::Ok(Output::Written),
        // Rejected as bad input before anything was sent on.
        (_, Ok((400, b))) => Outcome::Failed(format!("400: {}", String::from_utf8_lossy(&b))),
        (_, Ok((s, b))) => Outcome::Unknown(format!("{s}: {}", String::from_utf8_lossy(&b).trim())),
        (_, Err((false, why))) => Outcome::Failed(why),
        (_, Err((true, why))) => Outcome::Unknown(why),
    }
}

/// What one client needs.
pub struct ClientCtx {
    /// Its id (also in its values).
    pub id: usize,
    /// Over HTTP (else gRPC).
    pub via: Via,
    /// Its own cluster client (its own region cache).
    pub client: ClusterClient,
    /// The stores' HTTP addresses, kept current by the harness.
    pub http_addrs: Arc<Mutex<Vec<std::net::SocketAddr>>>,
    /// Set when the stores serve reads unsafely: the stores' gRPC addresses, and gRPC reads go
    /// straight to a random one of them (not to the leader), so the unsafe peers are the ones
    /// asked.
    pub direct_reads: Option<Vec<std::net::SocketAddr>>,
    /// The shared keys.
    pub keys: Arc<Mutex<Keys>>,
    /// Where to record.
    pub recorder: Arc<Recorder>,
    /// When to stop starting operations.
    pub until: Instant,
    /// Its random source.
    pub rng: StdRng,
}

/// Runs one client until `until`: 50% reads, 30% puts, 10% deletes, and over gRPC 10%
/// compare-and-swaps (from what the client last saw at the key, so many succeed); over HTTP
/// those are puts.
pub async fn run_client(mut c: ClientCtx) {
    let mut n = 0u64;
    // The value this client last read or wrote at each key, as a swap's expectation.
    let mut seen: std::collections::HashMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
    // Connections of direct reads, by store.
    let mut stores = HashMap::new();
    while Instant::now() < c.until {
        let key = lock(&c.keys).pick(&mut c.rng);
        let roll = c.rng.gen_range(0..100);
        let mut fresh = || {
            n += 1;
            format!("c{}-{n}", c.id).into_bytes()
        };
        let input = match roll {
            0..=49 => Input::Get,
            80..=89 => Input::Delete,
            90.. if c.via != Via::Http => Input::Cas {
                expect: seen.get(&key).cloned().flatten(),
                new: fresh(),
            },
            _ => Input::Put(fresh()),
        };
        let http_addr = {
            let addrs = lock(&c.http_addrs);
            addrs[c.rng.gen_range(0..addrs.len())]
        };
        let call = c.recorder.now();
        let outcome = match (c.via, &input) {
            (Via::Http, _) => http_op(http_addr, &key, &input).await,
            (_, Input::Get) => {
                let direct = c
                    .direct_reads
                    .as_ref()
                    .map(|addrs| addrs[c.rng.gen_range(0..addrs.len())]);
                let got = match direct {
                    Some(addr) => direct_get(&mut stores, addr, &key).await,
                    None => c
                        .client
                        .get("default", &key)
                        .await
                        .map_err(|e| e.to_string()),
                };
                match got {
                    Ok(v) => Outcome::Ok(Output::Value(v)),
                    Err(e) => Outcome::Failed(e),
                }
            }
            _ => grpc_write(&c.client, &key, &input).await,
        };
        let ret = c.recorder.now();
        if let Outcome::Ok(out) = &outcome {
            let now = match (&input, out) {
                (Input::Put(v), _)
                | (
                    Input::Cas { new: v, .. },
                    Output::Cas {
                        succeeded: true, ..
                    },
                ) => Some(v.clone()),
                (_, Output::Value(v)) | (_, Output::Cas { previous: v, .. }) => v.clone(),
                _ => None,
            };
            seen.insert(key.clone(), now);
        }
        // A store that is down refuses at once: pause a moment rather than spin on it.
        let refused = matches!(&outcome, Outcome::Failed(why) if why.starts_with("connect "));
        c.recorder.push(Record {
            client: c.id,
            via: c.via,
            key,
            input,
            call,
            ret,
            outcome,
        });
        if refused {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A raw get sent to the store at `addr` itself, over a connection kept in `stores` (dropped
/// after an error, so a restarted store is dialled again).
async fn direct_get(
    stores: &mut HashMap<SocketAddr, RawClient>,
    addr: SocketAddr,
    key: &[u8],
) -> Result<Option<Vec<u8>>, String> {
    let client = match stores.get_mut(&addr) {
        Some(c) => c,
        None => {
            let c = RawClient::connect(&addr.to_string())
                .await
                .map_err(|e| e.to_string())?;
            stores.entry(addr).or_insert(c)
        }
    };
    let got = client.get("default", key).await.map_err(|e| e.to_string());
    if got.is_err() {
        stores.remove(&addr);
    }
    got
}

/// A client's random source, from the run's seed.
pub fn client_rng(seed: u64, client: usize) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(client as u64))
}
