//! The processes of a chaos run: one `tessera-scheduler` and N `tessera-server --engine raft`
//! stores, from the directory the harness binary itself lives in, each store on its own loopback
//! IP with its partition [`Proxy`] in front of its peer port.
//!
//! ```text
//!   store i: IP 127.0.0.(i+2)
//!     grpc  127.0.0.(i+2):G   <- clients (ClusterClient)
//!     http  127.0.0.(i+2):H   <- HTTP clients (the gateway)
//!     peer  127.0.0.(i+2):P   <- only its proxy
//!     proxy 127.0.0.(i+2):X   <- other stores (advertised peer address; they dial from their IP)
//! ```
//! Stores are killed (SIGKILL), paused (SIGSTOP/SIGCONT) and restarted on the same addresses
//! and data. Every child is killed when the [`Cluster`] is dropped, also on a panic.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use super::proxy::Proxy;

/// Raft timings for chaos: an election within 0.5–1 s, quick scheduler heartbeats, and a raft log
/// compacted every 50 entries, so a store that was away catches up by snapshot.
pub const STORE_CONFIG: &str = "\
log_level = \"info\"

[storage]
reserve_space = \"16MiB\"

[raftstore]
raft_base_tick_interval_ms = 50
raft_election_timeout_ticks = 10
raft_heartbeat_ticks = 2
raft_log_gc_tick_interval_ms = 200
raft_log_gc_count_limit = 50
region_heartbeat_interval_ms = 200
store_heartbeat_interval_ms = 500
";

/// The longest election: pauses and partitions of the nemesis last longer than this.
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long a started process has to print its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).unwrap_or(0);
    if pid > 0 {
        // SAFETY: kill(2) with the pid of a child this process has not reaped yet.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Starts `bin`, stderr appended to `log`; returns it with the first `lines` lines of its
/// stdout (the addresses it listens on).
fn spawn(
    bin: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
    lines: usize,
) -> Result<(Child, Vec<String>), String> {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("open {}: {e}", log.display()))?;
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    children().push(child.id());
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().take(lines) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let mut got = Vec::new();
    while got.len() < lines {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(line)) => got.push(line),
            _ => {
                kill_child(child);
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "{} printed {got:?}, not {lines} lines; its log ends:\n{}",
                    bin.display(),
                    tail.join("\n")
                ));
            }
        }
    }
    Ok((child, got))
}

fn log_len(log: &Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

/// `line` without `prefix ` in front, as an address.
fn field(line: &str, prefix: &str) -> Result<SocketAddr, String> {
    line.strip_prefix(prefix)
        .and_then(|l| l.strip_prefix(' '))
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("expected '{prefix} ADDR', got {line:?}"))
}

/// One store: its addresses, its process (if running) and its fault switches.
pub struct Store {
    /// `store1`, `store2`, ...
    pub name: String,
    /// The loopback IP everything of this store lives on.
    pub ip: IpAddr,
    /// Client gRPC address.
    pub grpc: SocketAddr,
    /// HTTP gateway address.
    pub http: SocketAddr,
    /// The real peer port (reached only through the proxy).
    peer: SocketAddr,
    /// Its proxy, whose address is the store's advertised peer address.
    pub proxy: Proxy,
    data_dir: PathBuf,
    /// Its log (stderr of every run).
    pub log: PathBuf,
    /// While this file exists its engine fails every operation (EIO).
    pub fail_disk_file: PathBuf,
    /// While this file exists its synced writes sleep for the milliseconds it holds.
    pub slow_sync_file: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    paused: bool,
    /// Its disk is failed by the nemesis: exiting is what it should do.
    disk_failed: bool,
    /// Where in its log the current disk fault started.
    fault_from: u64,
    /// Parts of its log (byte ranges) written while its disk was failed: panics there are
    /// the fail-stop the fault asks for.
    excused: Vec<(u64, u64)>,
}

/// The scheduler and the stores of one run.
pub struct Cluster {
    bin_dir: PathBuf,
    dir: PathBuf,
    /// The scheduler's address.
    pub scheduler: SocketAddr,
    scheduler_child: Option<Child>,
    /// The stores, by index (store `i` is `store{i+1}`).
    pub stores: Vec<Store>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Every child process running, by pid: what [`kill_every_child`] kills when the harness is
/// interrupted or panics (a panic may not run the `Cluster`'s drop before the process exits).
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn children() -> std::sync::MutexGuard<'static, Vec<u32>> {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner())
}

/// SIGKILL to every process any cluster of this process started and has not reaped: for
/// panic and signal handlers.
pub fn kill_every_child() {
    for &pid in children().iter() {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2); the pid is a child not reaped yet (reaping unregisters it).
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// SIGKILL and reap.
fn kill_child(mut c: Child) {
    signal(&c, libc::SIGKILL);
    let _ = c.wait();
    children().retain(|p| *p != c.id());
}

impl Cluster {
    /// Starts the scheduler and `n` stores under `dir`, with `env` for every store; the binaries
    /// are taken from `bin_dir`. Blocking.
    pub async fn start(
        bin_dir: &Path,
        dir: &Path,
        n: usize,
        env: &[(String, String)],
        store_config: &str,
    ) -> Result<Cluster, String> {
        std::fs::write(dir.join("tessera.toml"), store_config).map_err(|e| e.to_string())?;
        let token = format!(
            "chaos-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        std::fs::write(dir.join("cluster-token"), token).map_err(|e| e.to_string())?;
        let mut cluster = Cluster {
            bin_dir: bin_dir.to_path_buf(),
            dir: dir.to_path_buf(),
            scheduler: "127.0.0.1:0".parse().expect("address"),
            scheduler_child: None,
            stores: Vec::new(),
        };
        cluster.start_scheduler()?;
        for i in 0..n {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8));
            let name = format!("store{}", i + 1);
            let proxy = Proxy::start(SocketAddr::new(ip, 0))
                .await
                .map_err(|e| format!("{name}: proxy: {e}"))?;
            let mut env = env.to_vec();
            let fail_disk_file = dir.join(format!("{name}.fail-disk"));
            let slow_sync_file = dir.join(format!("{name}.slow-sync"));
            env.push((
                kv::fault::FAIL_DISK_ENV.to_string(),
                fail_disk_file.display().to_string(),
            ));
            env.push((
                kv::fault::SLOW_SYNC_ENV.to_string(),
                slow_sync_file.display().to_string(),
            ));
            cluster.stores.push(Store {
                grpc: SocketAddr::new(ip, 0),
                http: SocketAddr::new(ip, 0),
                peer: SocketAddr::new(ip, 0),
                ip,
                proxy,
                data_dir: dir.join(&name),
                log: dir.join(format!("{name}.log")),
                fail_disk_file,
                slow_sync_file,
                env,
                child: None,
                paused: false,
                disk_failed: false,
                fault_from: 0,
                excused: Vec::new(),
                name,
            });
            cluster.start_store(i)?;
        }
        Ok(cluster)
    }

    /// Starts (or restarts, on the same address and data) the scheduler.
    pub fn start_scheduler(&mut self) -> Result<(), String> {
        let args: Vec<String> = vec![
            "--addr".into(),
            self.scheduler.to_string(),
            "--status-addr".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            self.dir.join("scheduler").display().to_string(),
        ];
        let log = self.dir.join("scheduler.log");
        let bin = self.bin_dir.join("tessera-scheduler");
        // The port may still be held for a moment by the killed process's connections.
        let mut last = String::new();
        for _ in 0..20 {
            match spawn(&bin, &args, &[], &log, 1) {
                Ok((child, lines)) => {
                    self.scheduler = field(&lines[0], "scheduler")?;
                    self.scheduler_child = Some(child);
                    return Ok(());
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(format!("the scheduler does not start: {last}"))
    }

    /// Whether the scheduler runs.
    pub fn scheduler_running(&self) -> bool {
        self.scheduler_child.is_some()
    }

    /// SIGKILL to the scheduler.
    pub fn kill_scheduler(&mut self) {
        if let Some(c) = self.scheduler_child.take() {
            kill_child(c);
        }
    }

    /// SIGKILL to every process of the cluster.
    pub fn kill_all(&mut self) {
        for i in 0..self.stores.len() {
            self.kill_store(i);
        }
        self.kill_scheduler();
    }

    /// Starts store `i` on its addresses and data (new ones on its IP if another process took
    /// its ports while it was down), then points its proxy at its peer port.
    pub fn start_store(&mut self, i: usize) -> Result<(), String> {
        let config = self.dir.join("tessera.toml").display().to_string();
        let token = self.dir.join("cluster-token").display().to_string();
        let scheduler = self.scheduler.to_string();
        let bin = self.bin_dir.join("tessera-server");
        let s = &mut self.stores[i];
        if s.child.is_some() {
            return Ok(());
        }
        let args = |grpc: SocketAddr, peer: SocketAddr, http: SocketAddr| -> Vec<String> {
            [
                "--config".to_string(),
                config.clone(),
                "--engine".into(),
                "raft".into(),
                "--scheduler".into(),
                scheduler.clone(),
                "--addr".into(),
                grpc.to_string(),
                "--peer-addr".into(),
                peer.to_string(),
                "--advertise-peer-addr".into(),
                s.proxy.addr().to_string(),
                "--status-addr".into(),
                http.to_string(),
                "--cluster-token-file".into(),
                token.clone(),
                "--data-dir".into(),
                s.data_dir.display().to_string(),
            ]
            .to_vec()
        };
        let started = match spawn(&bin, &args(s.grpc, s.peer, s.http), &s.env, &s.log, 3) {
            Err(e) if e.contains("cannot listen") => {
                let any = SocketAddr::new(s.ip, 0);
                spawn(&bin, &args(any, any, any), &s.env, &s.log, 3)
            }
            other => other,
        };
        let (child, lines) = started.map_err(|e| format!("{}: {e}", s.name))?;
        s.grpc = field(&lines[0], "grpc")?;
        s.peer = field(&lines[1], "peer")?;
        s.http = field(&lines[2], "http")?;
        s.proxy.set_target(s.peer);
        s.child = Some(child);
        s.paused = false;
        Ok(())
    }

    /// SIGKILL to store `i`, if it runs.
    pub fn kill_store(&mut self, i: usize) {
        if let Some(c) = self.stores[i].child.take() {
            kill_child(c);
        }
        self.stores[i].paused = false;
    }

    /// SIGSTOP to store `i`.
    pub fn pause_store(&mut self, i: usize) {
        if let Some(c) = &self.stores[i].child {
            signal(c, libc::SIGSTOP);
            self.stores[i].paused = true;
        }
    }

    /// SIGCONT to store `i`.
    pub fn resume_store(&mut self, i: usize) {
        if let Some(c) = &self.stores[i].child {
            signal(c, libc::SIGCONT);
        }
        self.stores[i].paused = false;
    }

    /// Whether store `i` is paused.
    pub fn store_paused(&self, i: usize) -> bool {
        self.stores[i].paused
    }

    /// Fails store `i`'s disk: its engine answers every operation with EIO from now on.
    pub fn fail_disk(&mut self, i: usize) {
        let s = &mut self.stores[i];
        s.fault_from = log_len(&s.log);
        s.disk_failed = true;
        let _ = std::fs::write(&s.fail_disk_file, b"");
    }

    /// Ends the disk fault of store `i`, if any; returns how the store exited because of it (it
    /// is restarted separately), `None` if it still runs or had no fault.
    pub fn fix_disk(&mut self, i: usize) -> Option<String> {
        let s = &mut self.stores[i];
        if !s.disk_failed {
            return None;
        }
        let _ = std::fs::remove_file(&s.fail_disk_file);
        // A store that just hit the fault may still be on its way out.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut how = None;
        while let Some(c) = s.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                how = Some(status.to_string());
                children().retain(|p| *p != c.id());
                s.child = None;
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if s.child.is_none() && how.is_none() {
            how = Some("exited earlier".to_string());
        }
        s.disk_failed = false;
        s.excused.push((s.fault_from, log_len(&s.log)));
        how
    }

    /// Stores that exited by themselves although nothing asked them to (their disk was fine):
    /// reaped, with how they exited. Each is a finding.
    pub fn unexpected_exits(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, s) in self.stores.iter_mut().enumerate() {
            if s.disk_failed {
                continue;
            }
            if let Some(c) = s.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    children().retain(|p| *p != c.id());
                    s.child = None;
                    out.push((i, format!("{} exited by itself: {status}", s.name)));
                }
            }
        }
        out
    }

    /// Every `panicked at` line (with the message after it) in the stores' logs, but those
    /// of a store stopping itself on a failed disk.
    pub fn panics(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.stores {
            let text = std::fs::read_to_string(&s.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let mut offset = 0u64;
            for (i, l) in lines.iter().enumerate() {
                let at = offset;
                offset += l.len() as u64 + 1;
                if !l.contains("panicked at") {
                    continue;
                }
                if s.excused
                    .iter()
                    .any(|(from, to)| (*from..*to).contains(&at))
                {
                    continue;
                }
                let msg = lines.get(i + 1).unwrap_or(&"");
                out.push(format!("{}: {l} {msg}", s.name));
            }
        }
        out
    }

    /// The directory holding the logs and data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
