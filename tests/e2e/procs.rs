//! Real processes for the e2e tests: `tessera-scheduler` and `tessera-server --engine raft`
//! stores on loopback, as `make run` starts them, with kill -9, restart on the same addresses
//! and data, and waits for the region's replicas and leader. A failed test prints the end of
//! every process's log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proto::kvrpcpb::RawGetRequest;
use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient};
use std::sync::Arc;

use tessera_client::cluster::{ClusterClient, ClusterConfig};
use tessera_client::raw::RawClient;
use tokio::task::block_in_place;

/// The store configuration of process clusters: short raft timings (an election within 0.5–1 s),
/// quick heartbeats to the scheduler, and a raft log compacted every 50 entries, so a store that
/// misses a few hundred writes can only catch up by snapshot. The chaos harness runs the same.
pub use harness::chaos::STORE_CONFIG;

/// [`STORE_CONFIG`] with regions split past 64 KiB, checked every 200 ms.
pub fn small_regions_config() -> String {
    format!(
        "{STORE_CONFIG}region_max_size = 65536\nregion_split_size = 40960\n\
         split_region_check_tick_interval_ms = 200\n"
    )
}

pub const STORES: usize = 3;
/// Bound of every wait of this test.
pub const WAIT: Duration = Duration::from_secs(60);

/// A child process, killed with SIGKILL when dropped if it still runs.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of a log, for failure messages.
fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts `bin` with stderr appended to `log`; returns it with the first `lines` lines it prints
/// on stdout (the addresses it listens on), which must come within 30 s. On failure, says what
/// it printed and the end of its log.
fn try_spawn(
    bin: &str,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
    lines: usize,
) -> Result<(Proc, Vec<String>), String> {
    let logged_before = std::fs::metadata(log).map_or(0, |m| m.len() as usize);
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log");
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let proc = Proc { child };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().take(lines) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < lines {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(line)) => got.push(line),
            _ => {
                // What it logged this time, up to a backtrace.
                let text = std::fs::read(log).unwrap_or_default();
                let text = String::from_utf8_lossy(&text[logged_before.min(text.len())..]);
                let text = text.split("Stack backtrace:").next().unwrap_or_default();
                return Err(format!(
                    "{bin} printed {got:?}, not {lines} lines, within 30 s; it logged:\n{text}"
                ));
            }
        }
    }
    Ok((proc, got))
}

fn spawn(bin: &str, args: &[String], log: &Path, lines: usize) -> (Proc, Vec<String>) {
    try_spawn(bin, args, &[], log, lines).unwrap_or_else(|e| panic!("{e}"))
}

/// `line` without `prefix ` in front.
fn field(line: &str, prefix: &str) -> String {
    line.strip_prefix(prefix)
        .and_then(|l| l.strip_prefix(' '))
        .unwrap_or_else(|| panic!("expected '{prefix} ADDR', got {line:?}"))
        .to_string()
}

/// SIGTERM, then the exit status, which must come within 20 s.
fn terminate(mut proc: Proc, name: &str) -> ExitStatus {
    let pid = proc.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {name}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = proc.child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{name} still runs 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One store process and where it listens; restarted on the same addresses.
pub struct Store {
    pub name: String,
    data_dir: PathBuf,
    log: PathBuf,
    grpc: String,
    /// Where other stores send it raft messages and snapshots (with the cluster token).
    pub peer: String,
    /// The cluster token it demands on its peer port.
    pub token: String,
    pub http: SocketAddr,
    /// Environment variables it is started with (on top of the test's own).
    pub env: Vec<(String, String)>,
    proc: Option<Proc>,
}

impl Store {
    /// The gRPC address it listens on (what other stores dial).
    pub fn grpc_addr(&self) -> &str {
        &self.grpc
    }

    /// Its data directory (the server's `data_dir`).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Where its snapshot manager keeps snapshot files.
    pub fn snap_dir(&self) -> PathBuf {
        self.data_dir.join("store").join("snap")
    }

    /// Where its raft engine (RocksDB) lives.
    pub fn raft_engine_dir(&self) -> PathBuf {
        self.data_dir.join("store").join("raft")
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `bound` for its process to exit by itself; returns how it exited, or `None`
    /// if it still runs (or was not running).
    pub fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        loop {
            let proc = self.proc.as_mut()?;
            if let Some(status) = proc.child.try_wait().expect("wait") {
                self.proc = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether its process runs: false once killed, and once it exited by itself.
    pub fn is_running(&mut self) -> bool {
        self.proc
            .as_mut()
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// Every panic its log reports (the `panicked at` line and the message after it), for
    /// failure messages: a panic in a worker thread leaves the process running.
    pub fn panics(&self) -> Vec<String> {
        panics_in(&self.log)
    }
}

/// The `panicked at` lines of a log, each with the line that follows (the message).
fn panics_in(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("panicked at"))
        .map(|(i, l)| format!("{l} {}", lines.get(i + 1).unwrap_or(&"")))
        .collect()
}

/// What a store says when asked directly for a key of the (only) region.
#[derive(Debug, PartialEq)]
enum Role {
    /// It served the read.
    Leader,
    /// It holds the region, led elsewhere; `knows_leader` once it has heard from the leader.
    Follower { knows_leader: bool },
    /// No answer, or another error.
    Unavailable,
}

/// Asks the store at `addr` for a key without a region context: it routes the read to its own
/// peer, which serves only if it leads.
async fn probe(addr: &str) -> Role {
    let ask = async {
        let mut c = RawClient::connect(addr).await.ok()?.into_inner();
        let req = RawGetRequest {
            key: b"probe".to_vec(),
            cf: "default".to_string(),
            ..Default::default()
        };
        let r = c.raw_get(req).await.ok()?.into_inner();
        Some(match r.region_error {
            None if r.error.is_empty() => Role::Leader,
            Some(e) => match e.not_leader {
                Some(nl) => Role::Follower {
                    knows_leader: nl.leader.is_some(),
                },
                None => Role::Unavailable,
            },
            None => Role::Unavailable,
        })
    };
    tokio::time::timeout(Duration::from_secs(3), ask)
        .await
        .ok()
        .flatten()
        .unwrap_or(Role::Unavailable)
}

/// The scheduler and the stores; on a failed test, prints the end of every log.
pub struct Cluster {
    dir: tempfile::TempDir,
    pub scheduler: String,
    /// The scheduler's HTTP status address.
    pub scheduler_status: String,
    scheduler_proc: Option<Proc>,
    pub stores: Vec<Store>,
    started: Instant,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let sched_log = self.dir.path().join("scheduler.log");
            eprintln!("--- scheduler log ---\n{}", tail(&sched_log, 40));
            for s in &self.stores {
                eprintln!("--- {} log ---\n{}", s.name, tail(&s.log, 60));
            }
        }
    }
}

impl Cluster {
    /// Starts the scheduler, then the stores one by one (the first bootstraps the cluster).
    pub fn start() -> Cluster {
        Cluster::start_with(STORE_CONFIG, STORES)
    }

    /// As [`Cluster::start`], with `stores` stores configured by `config` (tessera.toml text).
    pub fn start_with(config: &str, stores: usize) -> Cluster {
        let mut cluster = Cluster::start_scheduler(config);
        for _ in 0..stores {
            cluster.add_store();
        }
        cluster
    }

    /// Starts the scheduler only; stores configured by `config` join with
    /// [`Cluster::add_store`].
    pub fn start_scheduler(config: &str) -> Cluster {
        Cluster::start_scheduler_with(config, "")
    }

    /// [`Cluster::start_scheduler`], the scheduler configured by `sched_config` (its TOML).
    pub fn start_scheduler_with(config: &str, sched_config: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let sched_toml = dir.path().join("scheduler.toml");
        std::fs::write(&sched_toml, sched_config).unwrap();
        let (sched, lines) = spawn(
            env!("CARGO_BIN_EXE_tessera-scheduler"),
            &[
                "--config".into(),
                sched_toml.display().to_string(),
                "--addr".into(),
                "127.0.0.1:0".into(),
                "--status-addr".into(),
                "127.0.0.1:0".into(),
                "--data-dir".into(),
                dir.path().join("scheduler").display().to_string(),
            ],
            &dir.path().join("scheduler.log"),
            2,
        );
        std::fs::write(dir.path().join("tessera.toml"), config).unwrap();
        // Unguessable enough for a test: the process id and the time.
        let token = format!(
            "test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        std::fs::write(dir.path().join("cluster-token"), token).unwrap();
        Cluster {
            scheduler: field(&lines[0], "scheduler"),
            scheduler_status: field(&lines[1], "scheduler-status"),
            scheduler_proc: Some(sched),
            stores: Vec::new(),
            started: Instant::now(),
            dir,
        }
    }

    /// The data directory the next [`Cluster::add_store`] uses (to be made beforehand, e.g. as
    /// a link to a filesystem made by the test; created by the store otherwise).
    pub fn next_store_dir(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("store{}", self.stores.len() + 1))
    }

    /// As [`Cluster::add_store`], with environment variables `env` for the store's process.
    pub fn add_store_with_env(&mut self, env: Vec<(String, String)>) -> usize {
        self.add_store_as(env)
    }

    /// Starts one more store (it joins the cluster through the scheduler); returns its index.
    pub fn add_store(&mut self) -> usize {
        self.add_store_as(Vec::new())
    }

    fn add_store_as(&mut self, env: Vec<(String, String)>) -> usize {
        let name = format!("store{}", self.stores.len() + 1);
        self.stores.push(Store {
            data_dir: self.dir.path().join(&name),
            log: self.dir.path().join(format!("{name}.log")),
            name,
            grpc: "127.0.0.1:0".to_string(),
            peer: "127.0.0.1:0".to_string(),
            token: self.token(),
            http: "127.0.0.1:0".parse().unwrap(),
            env,
            proc: None,
        });
        let i = self.stores.len() - 1;
        self.run_store(i);
        i
    }

    /// Starts store `i` (again) on its addresses and data. Should another process have taken
    /// one of its ports while it was down (an outgoing connection can), it moves to new ones:
    /// the store registers its new address with the scheduler, and peers and clients look it
    /// up again.
    pub fn run_store(&mut self, i: usize) {
        self.try_run_store(i).unwrap_or_else(|e| panic!("{e}"));
    }

    /// [`Cluster::run_store`], returning why the store did not come up (it exited before it
    /// listened) instead of panicking.
    pub fn try_run_store(&mut self, i: usize) -> Result<(), String> {
        let config = self.dir.path().join("tessera.toml");
        let token = self.token_file();
        let s = &mut self.stores[i];
        assert!(s.proc.is_none(), "{} already runs", s.name);
        let args = |grpc: &str, peer: &str, http: &str| -> Vec<String> {
            [
                "--config",
                &config.display().to_string(),
                "--engine",
                "raft",
                "--scheduler",
                &self.scheduler,
                "--addr",
                grpc,
                "--peer-addr",
                peer,
                "--status-addr",
                http,
                "--cluster-token-file",
                &token.display().to_string(),
                "--data-dir",
                &s.data_dir.display().to_string(),
            ]
            .iter()
            .map(|a| a.to_string())
            .collect()
        };
        let bin = env!("CARGO_BIN_EXE_tessera-server");
        let addrs = args(&s.grpc, &s.peer, &s.http.to_string());
        let (proc, lines) = match try_spawn(bin, &addrs, &s.env, &s.log, 3) {
            Ok(started) => started,
            Err(e) if e.contains("cannot listen") => {
                eprintln!(
                    "{}: its address was taken, moving to new ports: {e}",
                    s.name
                );
                try_spawn(
                    bin,
                    &args("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"),
                    &s.env,
                    &s.log,
                    3,
                )?
            }
            Err(e) => return Err(e),
        };
        s.grpc = field(&lines[0], "grpc");
        s.peer = field(&lines[1], "peer");
        s.http = field(&lines[2], "http").parse().unwrap();
        s.proc = Some(proc);
        Ok(())
    }

    /// The file holding the cluster token every store of this cluster is started with.
    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("cluster-token")
    }

    /// The cluster token every store of this cluster is started with.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.token_file()).expect("read the cluster token")
    }

    /// SIGKILL to store `i`.
    pub fn kill(&mut self, i: usize) {
        let mut proc = self.stores[i].proc.take().expect("store runs");
        proc.child.kill().expect("kill -9");
        proc.child.wait().expect("reap");
    }

    pub fn note(&self, what: &str) {
        eprintln!("[{:6.2}s] {what}", self.started.elapsed().as_secs_f64());
    }

    /// Every panic the stores' logs report, by store, or "no panic" (for failure messages).
    pub fn panics(&self) -> String {
        let found: Vec<String> = self
            .stores
            .iter()
            .flat_map(|s| s.panics().into_iter().map(|p| format!("{}: {p}", s.name)))
            .collect();
        if found.is_empty() {
            "no panic in any store log".to_string()
        } else {
            found.join("\n")
        }
    }

    /// Waits until the scheduler knows the first region with `n` voters on `n` stores and a
    /// leader.
    pub async fn wait_replicas(&self, n: usize) {
        let addr = self.scheduler.clone();
        let seen = tokio::task::spawn_blocking(move || {
            let c = RpcClient::connect(&addr, RpcClientConfig::default()).expect("scheduler");
            let deadline = Instant::now() + WAIT;
            loop {
                let seen = c.get_region(b"");
                if let Ok((region, Some(_leader))) = &seen {
                    let mut stores: Vec<u64> = region
                        .peers
                        .iter()
                        .filter(|p| p.role == proto::metapb::PeerRole::Voter as i32)
                        .map(|p| p.store_id)
                        .collect();
                    stores.sort_unstable();
                    stores.dedup();
                    if stores.len() == n && region.peers.len() == n {
                        return Ok(());
                    }
                }
                if Instant::now() >= deadline {
                    return Err(format!("{seen:?}"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .await
        .unwrap();
        if let Err(seen) = seen {
            panic!("no region with {n} voters and a leader within {WAIT:?}; last seen {seen}");
        }
    }

    /// The running store that serves reads as the leader.
    pub async fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut roles = Vec::new();
            for (i, s) in self.stores.iter().enumerate() {
                if s.proc.is_some() {
                    let role = probe(&s.grpc).await;
                    if role == Role::Leader {
                        return i;
                    }
                    roles.push((s.name.clone(), role));
                }
            }
            assert!(
                Instant::now() < deadline,
                "no store leads within {WAIT:?}: {roles:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until store `i` holds the region and has heard from its leader (or leads).
    pub async fn wait_in_touch(&self, i: usize) {
        self.wait_in_touch_within(i, WAIT).await
    }

    /// [`Cluster::wait_in_touch`] with its own bound.
    pub async fn wait_in_touch_within(&self, i: usize, bound: Duration) {
        let deadline = Instant::now() + bound;
        loop {
            let role = probe(&self.stores[i].grpc).await;
            if matches!(role, Role::Leader | Role::Follower { knows_leader: true }) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not in touch with a leader within {bound:?}: {role:?}\n{}",
                self.stores[i].name,
                self.panics()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The scheduler's client and a routing client of the cluster with a 20 s deadline per
    /// request.
    pub async fn routed_clients(&self) -> (Arc<RpcClient>, ClusterClient) {
        let addr = self.scheduler.clone();
        let rpc = Arc::new(
            tokio::task::spawn_blocking(move || {
                RpcClient::connect(&addr, RpcClientConfig::default())
            })
            .await
            .unwrap()
            .expect("scheduler reachable"),
        );
        let config = ClusterConfig {
            timeout: Duration::from_secs(20),
            ..ClusterConfig::default()
        };
        let scheduler: Arc<dyn SchedulerClient> = rpc.clone();
        (rpc, ClusterClient::new(scheduler, config))
    }

    /// Stops every running store, then the scheduler, with SIGTERM; each must exit cleanly.
    pub fn stop_all(&mut self) {
        for s in &mut self.stores {
            if let Some(proc) = s.proc.take() {
                let status = block_in_place(|| terminate(proc, &s.name));
                assert!(status.success(), "{} exit after SIGTERM: {status}", s.name);
            }
        }
        let sched = self.scheduler_proc.take().expect("scheduler runs");
        let status = block_in_place(|| terminate(sched, "scheduler"));
        assert!(status.success(), "scheduler exit after SIGTERM: {status}");
    }
}

/// One `tessera-server` on the standalone engine (no scheduler, no raft), configured by
/// tessera.toml text; on a failed test, prints the end of its log.
pub struct Standalone {
    _proc: Proc,
    log: PathBuf,
    /// The gRPC address it printed.
    pub grpc: String,
    _dir: tempfile::TempDir,
}

impl Standalone {
    pub fn start(config: &str) -> Standalone {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("tessera.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("standalone.log");
        let args: Vec<String> = [
            "--config",
            &config_path.display().to_string(),
            "--addr",
            "127.0.0.1:0",
            "--status-addr",
            "127.0.0.1:0",
            "--data-dir",
            &dir.path().join("data").display().to_string(),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let (proc, lines) = spawn(env!("CARGO_BIN_EXE_tessera-server"), &args, &log, 2);
        Standalone {
            _proc: proc,
            grpc: field(&lines[0], "grpc"),
            log,
            _dir: dir,
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- standalone server log ---\n{}", tail(&self.log, 40));
        }
    }
}
