//! `make fuzz`: a running 3-store cluster fed random and near-valid input on every port for a
//! bounded time, while a client keeps writing; no store may panic or exit, and no acknowledged
//! write may be lost.
//!
//! ```text
//!   scheduler + 3 stores ─► 20 acknowledged writes
//!     ├─ writer: fresh keys acked-NNNNN through the cluster client; each acknowledged one kept
//!     └─ fuzzer (seeded), to a random store each case, until the deadline:
//!          peer port    Raft streams of forged messages, Snapshot streams  (crate::fuzz_gen)
//!          client port  raw and txn requests on fuzz- keys (reads anywhere) (crate::fuzz_input)
//!          HTTP port    gateway requests;  every port: raw bytes over TCP
//!   ─► every store runs, no panic in any log; figures and /metrics' drop counters printed
//!   ─► must_keep_serving: each other store killed in turn, fresh writes and every
//!      acknowledged write read back
//! ```
//!
//! `TESSERA_FUZZ_SECS` sets the fuzzing time (default 10 s, what `make test` runs; `make fuzz`
//! runs 600 s), `TESSERA_FUZZ_SEED` the seed (random by default, printed first: the same seed
//! replays the same inputs, though not the same timing).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proto::eraftpb::MessageType;
use proto::tinykvpb::raft_peer_client::RaftPeerClient;
use proto::tinykvpb::tiny_kv_client::TinyKvClient;
use rand::SeedableRng;
use server::peer_service::ClusterToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use crate::forge::Topology;
use crate::fuzz_gen::{Dice, PeerGen, Target};
use crate::fuzz_input::{ClientGen, Port, RawReq, TxnReq};
use crate::procs::{Cluster, Store};
use crate::survive::{cluster_with_writes, must_keep_serving, Acked};

/// Fuzzing time when `TESSERA_FUZZ_SECS` is not set.
const DEFAULT_SECS: u64 = 10;
/// Writes acknowledged before fuzzing: the region's committed index is past
/// `RAFT_INIT_LOG_INDEX + BEFORE` when it begins.
const BEFORE: usize = 20;
/// The region's initial log index.
const INIT_INDEX: u64 = 5;
/// Bound of one case: a call, a stream, a connection.
const CASE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the fuzzer looks for a panic in the stores' logs (and stops at the first).
const PANIC_CHECK: Duration = Duration::from_secs(2);

/// `name` from the environment as a number, if set.
fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?}: {e}")),
    )
}

/// How a case ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Answered without error.
    Taken,
    /// Answered with an error, or the connection was refused or broken.
    Refused,
    /// No answer within [`CASE_TIMEOUT`].
    Unanswered,
}

/// Counts per kind of case: sent, and of those, refused and unanswered.
#[derive(Default)]
struct Figures {
    sent: BTreeMap<&'static str, u64>,
    refused: BTreeMap<&'static str, u64>,
    unanswered: BTreeMap<&'static str, u64>,
}

impl Figures {
    fn count(&mut self, kind: &'static str, n: u64, outcome: Outcome) {
        *self.sent.entry(kind).or_default() += n;
        match outcome {
            Outcome::Taken => {}
            Outcome::Refused => *self.refused.entry(kind).or_default() += n,
            Outcome::Unanswered => *self.unanswered.entry(kind).or_default() += n,
        }
    }

    fn report(&self) -> String {
        let of = |m: &BTreeMap<&'static str, u64>, kind| m.get(kind).copied().unwrap_or(0);
        self.sent
            .iter()
            .map(|(kind, n)| {
                let (refused, unanswered) = (of(&self.refused, kind), of(&self.unanswered, kind));
                format!(
                    "  {kind:<16} {n:>8} sent, {refused:>8} refused, {unanswered:>5} unanswered"
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A store's addresses and lazily connected gRPC channels to its two ports.
struct Conn {
    token: ClusterToken,
    peer_addr: String,
    client_addr: String,
    http: std::net::SocketAddr,
    peer: RaftPeerClient<Channel>,
    client: TinyKvClient<Channel>,
}

impl Conn {
    fn new(s: &Store) -> Conn {
        let channel = |addr: &str| {
            Endpoint::from_shared(format!("http://{addr}"))
                .expect("store address")
                .connect_timeout(CASE_TIMEOUT)
                .connect_lazy()
        };
        Conn {
            token: ClusterToken::new(&s.token),
            peer_addr: s.peer.clone(),
            client_addr: s.grpc_addr().to_string(),
            http: s.http,
            peer: RaftPeerClient::new(channel(&s.peer))
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            client: TinyKvClient::new(channel(s.grpc_addr()))
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        }
    }

    fn with_token<T>(&self, body: T) -> Request<T> {
        let mut req = Request::new(body);
        self.token.attach(&mut req);
        req
    }
}

/// Runs `call` within [`CASE_TIMEOUT`].
async fn bounded<T, E>(call: impl std::future::Future<Output = Result<T, E>>) -> Outcome {
    match tokio::time::timeout(CASE_TIMEOUT, call).await {
        Ok(Ok(_)) => Outcome::Taken,
        Ok(Err(_)) => Outcome::Refused,
        Err(_) => Outcome::Unanswered,
    }
}

async fn send_raw(c: &mut TinyKvClient<Channel>, req: RawReq) -> Outcome {
    match req {
        RawReq::Get(r) => bounded(c.raw_get(r)).await,
        RawReq::Put(r) => bounded(c.raw_put(r)).await,
        RawReq::Delete(r) => bounded(c.raw_delete(r)).await,
        RawReq::Scan(r) => bounded(c.raw_scan(r)).await,
    }
}

async fn send_txn(c: &mut TinyKvClient<Channel>, req: TxnReq) -> Outcome {
    match req {
        TxnReq::Get(r) => bounded(c.kv_get(r)).await,
        TxnReq::Scan(r) => bounded(c.kv_scan(r)).await,
        TxnReq::Prewrite(r) => bounded(c.kv_prewrite(r)).await,
        TxnReq::Commit(r) => bounded(c.kv_commit(r)).await,
        TxnReq::CheckTxnStatus(r) => bounded(c.kv_check_txn_status(r)).await,
        TxnReq::ResolveLock(r) => bounded(c.kv_resolve_lock(r)).await,
        TxnReq::BatchRollback(r) => bounded(c.kv_batch_rollback(r)).await,
    }
}

/// Writes `bytes` on a fresh TCP connection to `addr`, reads what comes back for a moment,
/// closes: refused if the connection was not taken or broke while writing.
async fn send_bytes(addr: &str, bytes: &[u8]) -> Outcome {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(bytes).await?;
        s.shutdown().await?;
        let mut buf = vec![0; 64 * 1024];
        let _ = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await;
        Ok::<(), std::io::Error>(())
    };
    bounded(exchange).await
}

/// The fuzzer: one seeded source of inputs, the stores it sends them to, and what it sent.
struct Fuzzer {
    dice: Dice,
    target: Target,
    clients: ClientGen,
    conns: Vec<Conn>,
    figures: Figures,
}

impl Fuzzer {
    fn new(seed: u64, cluster: &Cluster, topo: &Topology) -> Fuzzer {
        Fuzzer {
            dice: Dice {
                rng: rand::rngs::StdRng::seed_from_u64(seed),
            },
            target: Target {
                region: topo.region.clone(),
                peers: topo.peers.clone(),
                floor: INIT_INDEX + BEFORE as u64,
            },
            clients: ClientGen::new(),
            conns: cluster.stores.iter().map(Conn::new).collect(),
            figures: Figures::default(),
        }
    }

    /// Sends one case, of a kind drawn at random, to a store drawn at random.
    async fn case(&mut self) {
        let store = self.dice.below(self.conns.len());
        let d = &mut self.dice;
        let c = &mut self.conns[store];
        match d.below(100) {
            0..=39 => {
                let mut g = PeerGen {
                    dice: d,
                    target: &self.target,
                };
                let n = g.dice.pick(&[1, 1, 2, 4, 8]);
                let ty = g.dice.chance(0.2).then_some(MessageType::MsgAppend);
                let msgs: Vec<_> = (0..n).map(|_| g.raft_message(store, ty)).collect();
                let req = c.with_token(tokio_stream::iter(msgs));
                let outcome = bounded(c.peer.raft(req)).await;
                self.figures.count("raft streams", 1, outcome);
                self.figures.count("raft messages", n as u64, outcome);
            }
            40..=49 => {
                let mut g = PeerGen {
                    dice: d,
                    target: &self.target,
                };
                let chunks = g.snapshot_stream(store);
                let cut = g.dice.chance(0.1).then(|| g.dice.below(chunks.len() + 1));
                let n = chunks.len() as u64;
                self.figures.count("snapshot chunks", n, Outcome::Taken);
                let outcome = match cut {
                    // The stream breaks off: the call is dropped after `keep` chunks.
                    Some(keep) => {
                        let (tx, rx) = tokio::sync::mpsc::channel(1);
                        let mut client = c.peer.clone();
                        let req = c.with_token(tokio_stream::wrappers::ReceiverStream::new(rx));
                        let call = tokio::spawn(async move { client.snapshot(req).await });
                        for chunk in chunks.into_iter().take(keep) {
                            if bounded(tx.send(chunk)).await != Outcome::Taken {
                                break;
                            }
                        }
                        call.abort();
                        Outcome::Refused
                    }
                    None => {
                        let req = c.with_token(tokio_stream::iter(chunks));
                        bounded(c.peer.snapshot(req)).await
                    }
                };
                self.figures.count("snapshot streams", 1, outcome);
            }
            50..=69 => {
                let req = self.clients.raw(d, &self.target);
                let outcome = send_raw(&mut c.client, req).await;
                self.figures.count("raw requests", 1, outcome);
            }
            70..=84 => {
                let req = self.clients.txn(d, &self.target);
                let outcome = send_txn(&mut c.client, req).await;
                self.figures.count("txn requests", 1, outcome);
            }
            85..=92 => {
                let port = d.pick(&[Port::Client, Port::Peer, Port::Http]);
                let bytes = self.clients.garbage(d, port);
                let addr = match port {
                    Port::Client => c.client_addr.clone(),
                    Port::Peer => c.peer_addr.clone(),
                    Port::Http => c.http.to_string(),
                };
                let outcome = send_bytes(&addr, &bytes).await;
                self.figures.count("tcp garbage", 1, outcome);
            }
            _ => {
                let req = self.clients.http(d);
                let outcome = send_bytes(&c.http.to_string(), &req).await;
                self.figures.count("http requests", 1, outcome);
            }
        }
    }

    /// Sends cases until `deadline`, or until a store's log reports a panic.
    async fn run_until(&mut self, cluster: &Cluster, deadline: Instant) {
        let mut next_check = Instant::now() + PANIC_CHECK;
        while Instant::now() < deadline {
            self.case().await;
            if Instant::now() >= next_check {
                next_check = Instant::now() + PANIC_CHECK;
                if cluster.stores.iter().any(|s| !s.panics().is_empty()) {
                    cluster.note("a store panicked; fuzzing stops");
                    return;
                }
            }
        }
    }
}

/// Writes fresh keys until `deadline`; returns the acknowledged ones and how many writes
/// failed (allowed: only acknowledged writes must survive).
async fn write_until(mut acked: Acked, deadline: Instant) -> (Acked, u64) {
    let mut failed = 0;
    while Instant::now() < deadline {
        if acked.try_write().await.is_err() {
            failed += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    (acked, failed)
}

/// The body of `GET /metrics` from `addr`, if it answers (a store that died does not).
async fn metrics(addr: std::net::SocketAddr) -> Option<String> {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n")
            .await?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&resp).to_string())
    };
    tokio::time::timeout(CASE_TIMEOUT, get).await.ok()?.ok()
}

/// Each store's non-zero counts of refused raft messages, by reason, from its `/metrics`.
async fn drop_counters(cluster: &Cluster) -> String {
    let mut out = Vec::new();
    for s in &cluster.stores {
        let Some(text) = metrics(s.http).await else {
            out.push(format!("    {}: /metrics did not answer", s.name));
            continue;
        };
        let counts: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("tessera_raft_messages_dropped_total{"))
            .filter_map(|l| {
                let reason = l.split("reason=\"").nth(1)?.split('"').next()?;
                let n = l.rsplit(' ').next()?;
                (n != "0").then(|| format!("{reason}={n}"))
            })
            .collect();
        out.push(format!("    {}: {}", s.name, counts.join(" ")));
    }
    out.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_store_2b() {
    let seed = env_u64("TESSERA_FUZZ_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        t.map_or(0, |t| t.as_nanos() as u64) ^ u64::from(std::process::id())
    });
    let secs = env_u64("TESSERA_FUZZ_SECS").unwrap_or(DEFAULT_SECS);
    eprintln!("fuzz_store: seed {seed}, {secs} s (replay: TESSERA_FUZZ_SEED={seed})");

    let (mut cluster, acked, topo) = cluster_with_writes(BEFORE).await;
    let before = acked.len();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let writer = tokio::spawn(write_until(acked, deadline));
    let mut fuzzer = Fuzzer::new(seed, &cluster, &topo);
    fuzzer.run_until(&cluster, deadline).await;
    let fuzzed = started.elapsed();
    let (mut acked, failed_writes) = writer.await.expect("writer");

    eprintln!(
        "fuzz_store: seed {seed}: fuzzed {:.0} s; cases:\n{}\n  acknowledged writes: {} during \
         fuzzing ({failed_writes} failed), {} in all\n  refused raft messages (/metrics):\n{}",
        fuzzed.as_secs_f64(),
        fuzzer.figures.report(),
        acked.len() - before,
        acked.len(),
        drop_counters(&cluster).await,
    );

    for i in 0..cluster.stores.len() {
        let name = cluster.stores[i].name.clone();
        assert!(
            cluster.stores[i].is_running(),
            "seed {seed}: {name} exited while fuzzed\n{}",
            cluster.panics()
        );
    }
    assert!(
        cluster.stores.iter().all(|s| s.panics().is_empty()),
        "seed {seed}: a store panicked while fuzzed:\n{}",
        cluster.panics()
    );
    let leader = cluster.wait_leader().await;
    let attacked = (leader + 1) % cluster.stores.len();
    must_keep_serving(&mut cluster, attacked, leader, &mut acked).await;
    cluster.note(&format!(
        "seed {seed}: every store runs, {} acknowledged writes read back",
        acked.len()
    ));
}
