//! The closed-loop load of the network modes, the same for a Tessera server, a Tessera cluster
//! and etcd: `clients` tasks, each sending its next request when the last one is answered, over
//! a fixed number of connections.
//!
//! Keys are `key-NNNNNNNN` over a key space of `--keys`; values are `--value-size` bytes. An
//! optional load phase writes every key once; then, for each client count, a put phase and a
//! get phase pick keys uniformly at random, each for `--phase-secs` seconds (or `--ops`
//! operations without it). Failed requests are counted, not timed; with `--json` each phase is
//! also printed as one JSON object per line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_client::cluster::ClusterClient;
use tessera_client::raw::RawClient;

use crate::etcd::EtcdKv;

/// The shape of the load.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Keys in the key space.
    pub keys: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Length of a put or get phase; `None`: `ops` operations instead.
    pub phase: Option<Duration>,
    /// Operations per phase when `phase` is `None`.
    pub ops: usize,
    /// Write every key once before the measured phases.
    pub preload: bool,
    /// Print each phase as a JSON line too.
    pub json: bool,
}

/// The key of index `i`.
pub fn key(i: u64) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

/// Where the load goes: connections made once, shared round-robin by the clients.
pub enum Target {
    /// One Tessera server (`--mode grpc`).
    Server(Vec<RawClient>),
    /// A Tessera cluster, one `ClusterClient` (one connection per store) per connection slot.
    Cluster(Vec<ClusterClient>),
    /// etcd, one HTTP/2 connection per slot.
    Etcd(Vec<EtcdKv>),
}

/// One client's handle.
enum Conn {
    Server(RawClient),
    Cluster(ClusterClient),
    Etcd(EtcdKv),
}

impl Target {
    fn system(&self) -> &'static str {
        match self {
            Target::Server(_) | Target::Cluster(_) => "tessera",
            Target::Etcd(_) => "etcd",
        }
    }

    fn conn(&self, client: usize) -> Conn {
        fn pick<T: Clone>(v: &[T], i: usize) -> T {
            v[i % v.len()].clone()
        }
        match self {
            Target::Server(v) => Conn::Server(pick(v, client)),
            Target::Cluster(v) => Conn::Cluster(pick(v, client)),
            Target::Etcd(v) => Conn::Etcd(pick(v, client)),
        }
    }
}

impl Conn {
    async fn put(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        match self {
            Conn::Server(c) => c.put("", key, value).await?,
            Conn::Cluster(c) => c.put("", key, value).await?,
            Conn::Etcd(c) => c.put(key, value).await?,
        }
        Ok(())
    }

    async fn get(&mut self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(match self {
            Conn::Server(c) => c.get("", key).await?,
            Conn::Cluster(c) => c.get("", key).await?,
            Conn::Etcd(c) => c.get(key).await?,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Every key once, in order.
    Load,
    Put,
    Get,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Load => "load",
            Phase::Put => "put",
            Phase::Get => "get",
        }
    }
}

/// One phase's figures.
pub struct Stats {
    phase: Phase,
    clients: usize,
    errors: usize,
    /// Gets that found no value.
    misses: usize,
    elapsed: Duration,
    /// Sorted latencies of the operations that succeeded.
    latencies: Vec<Duration>,
    /// The first failure, to show what went wrong.
    first_error: Option<String>,
}

impl Stats {
    fn ops_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        let Some(last) = self.latencies.len().checked_sub(1) else {
            return f64::NAN;
        };
        self.latencies[(last as f64 * q).round() as usize].as_secs_f64() * 1e3
    }

    fn json(&self, system: &str) -> String {
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v:.3}")
            } else {
                "null".into()
            }
        };
        format!(
            "{{\"system\":\"{system}\",\"phase\":\"{}\",\"clients\":{},\"ops\":{},\"errors\":{},\
             \"misses\":{},\"secs\":{:.3},\"ops_per_sec\":{:.1},\"p50_ms\":{},\"p99_ms\":{},\
             \"p999_ms\":{}}}",
            self.phase.name(),
            self.clients,
            self.latencies.len(),
            self.errors,
            self.misses,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec(),
            num(self.percentile_ms(0.5)),
            num(self.percentile_ms(0.99)),
            num(self.percentile_ms(0.999)),
        )
    }
}

/// What each client task returns.
#[derive(Default)]
struct ClientOutcome {
    latencies: Vec<Duration>,
    errors: usize,
    misses: usize,
    first_error: Option<String>,
}

/// Runs one phase with `clients` concurrent clients.
async fn run_phase(target: &Target, w: &Workload, phase: Phase, clients: usize) -> Stats {
    let value: Arc<[u8]> = vec![b'v'; w.value_size].into();
    // Load: each key once. Otherwise `ops` draws, unless the phase is timed.
    let issued = Arc::new(AtomicUsize::new(0));
    let budget = match (phase, w.phase) {
        (Phase::Load, _) => w.keys as usize,
        (_, Some(_)) => usize::MAX,
        (_, None) => w.ops,
    };
    let start = Instant::now();
    let deadline = w.phase.filter(|_| phase != Phase::Load).map(|d| start + d);
    let mut tasks = Vec::with_capacity(clients);
    for t in 0..clients {
        let mut conn = target.conn(t);
        let (value, issued, keys) = (value.clone(), issued.clone(), w.keys);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(t as u64 + 1);
            let mut out = ClientOutcome::default();
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= budget || deadline.is_some_and(|d| Instant::now() >= d) {
                    return out;
                }
                let k = match phase {
                    Phase::Load => key(n as u64),
                    _ => key(rng.gen_range(0..keys)),
                };
                let began = Instant::now();
                let result = match phase {
                    Phase::Load | Phase::Put => conn.put(&k, &value).await.map(|()| true),
                    Phase::Get => conn.get(&k).await.map(|v| v.is_some()),
                };
                match result {
                    Ok(found) => {
                        out.latencies.push(began.elapsed());
                        out.misses += usize::from(!found);
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
        }));
    }
    let mut stats = Stats {
        phase,
        clients,
        errors: 0,
        misses: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        first_error: None,
    };
    for task in tasks {
        let out = task.await.unwrap_or_else(|e| ClientOutcome {
            errors: 1,
            first_error: Some(format!("client task failed: {e}")),
            ..ClientOutcome::default()
        });
        stats.latencies.extend(out.latencies);
        stats.errors += out.errors;
        stats.misses += out.misses;
        if stats.first_error.is_none() {
            stats.first_error = out.first_error;
        }
    }
    stats.elapsed = start.elapsed();
    stats.latencies.sort_unstable();
    stats
}

fn print_phase(system: &str, s: &Stats, json: bool) {
    println!(
        "{:>4} {:>7} | {:>9.0} ops/s | p50 {:>7.2} p99 {:>7.2} p999 {:>7.2} ms | {} errors, {} \
         misses",
        s.phase.name(),
        s.clients,
        s.ops_per_sec(),
        s.percentile_ms(0.5),
        s.percentile_ms(0.99),
        s.percentile_ms(0.999),
        s.errors,
        s.misses
    );
    if let Some(e) = &s.first_error {
        println!("     first error: {e}");
    }
    if json {
        println!("{}", s.json(system));
    }
}

/// The load phase (if asked), then a put and a get phase for each client count. Fails when a
/// phase served nothing or more than 1% of its requests failed (the figures would not mean
/// what they say).
pub async fn run(target: &Target, w: &Workload, clients: &[usize]) -> anyhow::Result<()> {
    let system = target.system();
    println!("phase clients | throughput | latency | failures");
    let mut phases = Vec::new();
    if w.preload {
        let most = clients.iter().copied().max().unwrap_or(1);
        phases.push((Phase::Load, most));
    }
    for &n in clients {
        phases.push((Phase::Put, n));
        phases.push((Phase::Get, n));
    }
    for (phase, n) in phases {
        let s = run_phase(target, w, phase, n).await;
        print_phase(system, &s, w.json);
        let served = s.latencies.len();
        anyhow::ensure!(
            served > 0 && s.errors * 100 <= served + s.errors,
            "{} with {n} clients: {served} served, {} failed (first: {})",
            phase.name(),
            s.errors,
            s.first_error.as_deref().unwrap_or("-")
        );
        if w.preload && phase == Phase::Get && s.misses > 0 {
            anyhow::bail!(
                "get with {n} clients: {} keys written by the load phase were missing",
                s.misses
            );
        }
    }
    Ok(())
}

/// `conns` connections to the etcd member at `addr`.
pub async fn etcd_target(addrs: &[String], conns: usize) -> anyhow::Result<Target> {
    let mut v = Vec::with_capacity(conns);
    for i in 0..conns {
        v.push(EtcdKv::connect(&addrs[i % addrs.len()]).await?);
    }
    Ok(Target::Etcd(v))
}

/// `conns` connections to the Tessera server at `addr`.
pub async fn server_target(addr: &str, conns: usize) -> anyhow::Result<Target> {
    let mut v = Vec::with_capacity(conns);
    for _ in 0..conns {
        v.push(
            RawClient::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    Ok(Target::Server(v))
}
