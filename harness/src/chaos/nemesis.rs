//! The nemesis: faults drawn from the run's seed, one at a time, each held for a while and then
//! undone, with quiet gaps between them.
//!
//! | kind             | fault                                                     | undone by          |
//! |------------------|-----------------------------------------------------------|--------------------|
//! | `kill`           | SIGKILL to one store (often the leader), a minority, or all | restart          |
//! | `kill-scheduler` | SIGKILL to the scheduler                                  | restart            |
//! | `pause`          | SIGSTOP to one store (often the leader) or a minority, for longer than an election timeout | SIGCONT |
//! | `partition`      | two-way: the leader or a minority cut off; one-way: the leader cannot send, or cannot hear; blackholed or rejected | heal the proxies |
//! | `delay`          | every link to and from one store delayed 50–600 ms        | heal the proxies   |
//! | `slow-disk`      | one store's synced writes sleep 100–800 ms                | remove the switch  |
//! | `fail-disk`      | one store's engine fails with EIO; it stops itself (fail-stop) | remove the switch, restart |
//!
//! The plan (kinds, targets as "the leader" or store numbers, durations) depends on the seed
//! only; "the leader" is whoever the scheduler says leads the first region when the fault
//! starts. Clock jumps are not injected: Tessera has no lease reads, so no clock decides
//! anything about safety.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient};

use super::cluster::{Cluster, ELECTION_TIMEOUT};
use super::proxy::Link;

/// The kinds of fault, as named on the command line.
pub const KINDS: [&str; 7] = [
    "kill",
    "kill-scheduler",
    "pause",
    "partition",
    "delay",
    "slow-disk",
    "fail-disk",
];

/// Which stores a fault hits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// The leader of the first region when the fault starts (a random store if unknown).
    Leader,
    /// These stores (indexes).
    Stores(Vec<usize>),
}

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, restart when undone.
    Kill(Who),
    /// SIGKILL to the scheduler, restart when undone.
    KillScheduler,
    /// SIGSTOP, SIGCONT when undone.
    Pause(Who),
    /// Cut `who` off from the rest: `out` = it cannot send, `into` = it cannot hear.
    Partition {
        /// The cut-off side.
        who: Who,
        /// Its messages to the others are lost.
        out: bool,
        /// The others' messages to it are lost.
        into: bool,
        /// Blackhole or Reject.
        link: Link,
    },
    /// Every link to and from `who` delayed.
    Delay(Who, Duration),
    /// Synced writes of `who` sleep this long.
    SlowDisk(Who, Duration),
    /// The engine of `who` fails; it stops itself.
    FailDisk(Who),
}

impl Fault {
    /// Its kind's name (one of [`KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill",
            Fault::KillScheduler => "kill-scheduler",
            Fault::Pause(_) => "pause",
            Fault::Partition { .. } => "partition",
            Fault::Delay(..) => "delay",
            Fault::SlowDisk(..) => "slow-disk",
            Fault::FailDisk(_) => "fail-disk",
        }
    }
}

/// One planned step: at `at` after the start, inject `fault` and undo it after `hold`.
#[derive(Clone, Debug)]
pub struct Step {
    /// When, from the start of the clients.
    pub at: Duration,
    /// What.
    pub fault: Fault,
    /// How long it lasts.
    pub hold: Duration,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:6.2}s {:?} for {:.2}s",
            self.at.as_secs_f64(),
            self.fault,
            self.hold.as_secs_f64()
        )
    }
}

fn ms(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.gen_range(lo..=hi))
}

/// A minority (at least one store) at random.
fn minority(rng: &mut StdRng, n: usize) -> Vec<usize> {
    let size = rng.gen_range(1..=((n - 1) / 2).max(1));
    let mut all: Vec<usize> = (0..n).collect();
    all.shuffle(rng);
    let mut pick = all[..size].to_vec();
    pick.sort_unstable();
    pick
}

fn one(rng: &mut StdRng, n: usize) -> Who {
    if rng.gen_bool(0.5) {
        Who::Leader
    } else {
        Who::Stores(vec![rng.gen_range(0..n)])
    }
}

fn draw(rng: &mut StdRng, kind: &str, n: usize) -> (Fault, Duration) {
    let election = ELECTION_TIMEOUT.as_millis() as u64;
    match kind {
        "kill" => {
            let who = match rng.gen_range(0..10) {
                0..=4 => one(rng, n),
                5..=7 => Who::Stores(minority(rng, n)),
                _ => Who::Stores((0..n).collect()),
            };
            (Fault::Kill(who), ms(rng, 500, 5000))
        }
        "kill-scheduler" => (Fault::KillScheduler, ms(rng, 500, 5000)),
        "pause" => {
            let who = if rng.gen_bool(0.7) {
                one(rng, n)
            } else {
                Who::Stores(minority(rng, n))
            };
            (Fault::Pause(who), ms(rng, election + 500, 5 * election))
        }
        "partition" => {
            let who = if rng.gen_bool(0.6) {
                Who::Leader
            } else {
                Who::Stores(minority(rng, n))
            };
            let (out, into) = match rng.gen_range(0..4) {
                0 => (true, false),
                1 => (false, true),
                _ => (true, true),
            };
            let link = if rng.gen_bool(0.7) {
                Link::Blackhole
            } else {
                Link::Reject
            };
            let fault = Fault::Partition {
                who,
                out,
                into,
                link,
            };
            (fault, ms(rng, 2 * election, 8 * election))
        }
        "delay" => {
            let d = ms(rng, 50, 600);
            (Fault::Delay(one(rng, n), d), ms(rng, 2000, 6000))
        }
        "slow-disk" => {
            let d = ms(rng, 100, 800);
            (Fault::SlowDisk(one(rng, n), d), ms(rng, 2000, 6000))
        }
        "fail-disk" => (Fault::FailDisk(one(rng, n)), ms(rng, 500, 3000)),
        other => unreachable!("unknown nemesis kind {other}"),
    }
}

/// The random plan of `seed` for a run of `secs` over `n` stores with faults of `kinds`.
pub fn plan(seed: u64, secs: u64, n: usize, kinds: &[String]) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps = Vec::new();
    if kinds.is_empty() {
        return steps;
    }
    let end = Duration::from_secs(secs);
    let mut at = Duration::from_secs(2);
    while at < end {
        let kind = &kinds[rng.gen_range(0..kinds.len())];
        let (fault, hold) = draw(&mut rng, kind, n);
        if at + hold > end {
            break;
        }
        steps.push(Step { at, fault, hold });
        at += hold + ms(&mut rng, 1000, 3000);
    }
    steps
}

/// The fixed plan that exposes stale reads: the leader cut off both ways (blackholed) for
/// 6 s, every 9 s.
pub fn isolate_leader_plan(secs: u64) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut at = Duration::from_secs(2);
    let hold = Duration::from_secs(6);
    while at + hold <= Duration::from_secs(secs) {
        let fault = Fault::Partition {
            who: Who::Leader,
            out: true,
            into: true,
            link: Link::Blackhole,
        };
        steps.push(Step { at, fault, hold });
        at += hold + Duration::from_secs(3);
    }
    steps
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the faults of a plan against a cluster and keeps their log.
pub struct Nemesis {
    cluster: Arc<Mutex<Cluster>>,
    rng: StdRng,
    /// What was done, when (seconds from the start), as text.
    pub log: Vec<String>,
    /// Faults injected, by kind.
    pub counts: BTreeMap<&'static str, usize>,
    start: Instant,
}

impl Nemesis {
    /// A nemesis over `cluster`, its clock starting at `start`.
    pub fn new(cluster: Arc<Mutex<Cluster>>, seed: u64, start: Instant) -> Nemesis {
        Nemesis {
            cluster,
            rng: StdRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973),
            log: Vec::new(),
            counts: BTreeMap::new(),
            start,
        }
    }

    fn note(&mut self, what: String) {
        let line = format!("[{:7.2}s] {what}", self.start.elapsed().as_secs_f64());
        tracing::info!("{line}");
        self.log.push(line);
    }

    /// The store leading the first region, as the scheduler knows it.
    fn leader(&mut self) -> Option<usize> {
        let (sched, grpcs) = {
            let c = lock(&self.cluster);
            if !c.scheduler_running() {
                return None;
            }
            let grpcs: Vec<String> = c.stores.iter().map(|s| s.grpc.to_string()).collect();
            (c.scheduler.to_string(), grpcs)
        };
        let config = RpcClientConfig {
            startup_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            ..RpcClientConfig::default()
        };
        let client = RpcClient::connect(&sched, config).ok()?;
        let (_, leader) = client.get_region(b"").ok()?;
        let store = client.get_store(leader?.store_id).ok()?;
        grpcs.iter().position(|g| *g == store.address)
    }

    fn resolve(&mut self, who: &Who) -> Vec<usize> {
        match who {
            Who::Stores(s) => s.clone(),
            Who::Leader => match self.leader() {
                Some(l) => vec![l],
                None => {
                    let n = lock(&self.cluster).stores.len();
                    vec![self.rng.gen_range(0..n)]
                }
            },
        }
    }

    /// Runs `plan` (blocking) until its end or `until`.
    pub fn run(&mut self, plan: &[Step], until: Instant) {
        for step in plan {
            let at = self.start + step.at;
            if at >= until {
                break;
            }
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let undo = self.inject(&step.fault);
            *self.counts.entry(step.fault.kind()).or_default() += 1;
            std::thread::sleep(
                step.hold
                    .min(until.saturating_duration_since(Instant::now())),
            );
            self.undo(undo);
        }
    }

    fn names(&self, stores: &[usize]) -> String {
        let c = lock(&self.cluster);
        let names: Vec<&str> = stores.iter().map(|&i| c.stores[i].name.as_str()).collect();
        names.join(",")
    }

    /// Injects `fault`; returns what undoes it.
    fn inject(&mut self, fault: &Fault) -> Undo {
        let n = lock(&self.cluster).stores.len();
        match fault {
            Fault::Kill(who) => {
                let stores = self.resolve(who);
                self.note(format!("kill -9 {}", self.names(&stores)));
                let mut c = lock(&self.cluster);
                for &i in &stores {
                    c.kill_store(i);
                }
                Undo::Restart(stores)
            }
            Fault::KillScheduler => {
                self.note("kill -9 scheduler".to_string());
                lock(&self.cluster).kill_scheduler();
                Undo::RestartScheduler
            }
            Fault::Pause(who) => {
                let stores = self.resolve(who);
                self.note(format!("SIGSTOP {}", self.names(&stores)));
                let mut c = lock(&self.cluster);
                for &i in &stores {
                    c.pause_store(i);
                }
                Undo::Resume(stores)
            }
            Fault::Partition {
                who,
                out,
                into,
                link,
            } => {
                let side = self.resolve(who);
                let rest: Vec<usize> = (0..n).filter(|i| !side.contains(i)).collect();
                let arrow = match (out, into) {
                    (true, true) => "<-/->",
                    (true, false) => "-/->",
                    _ => "<-/-",
                };
                self.note(format!(
                    "partition {} {arrow} {} ({link:?})",
                    self.names(&side),
                    self.names(&rest)
                ));
                let c = lock(&self.cluster);
                let ip = |i: usize| -> IpAddr { c.stores[i].ip };
                for &a in &side {
                    for &b in &rest {
                        if *out {
                            c.stores[b].proxy.set_link(ip(a), *link);
                        }
                        if *into {
                            c.stores[a].proxy.set_link(ip(b), *link);
                        }
                    }
                }
                Undo::Heal
            }
            Fault::Delay(who, d) => {
                let stores = self.resolve(who);
                self.note(format!("delay {} by {d:?}", self.names(&stores)));
                let c = lock(&self.cluster);
                for &a in &stores {
                    for b in (0..n).filter(|b| *b != a) {
                        c.stores[b].proxy.set_link(c.stores[a].ip, Link::Delay(*d));
                        c.stores[a].proxy.set_link(c.stores[b].ip, Link::Delay(*d));
                    }
                }
                Undo::Heal
            }
            Fault::SlowDisk(who, d) => {
                let stores = self.resolve(who);
                self.note(format!(
                    "slow disk {} ({d:?} per sync)",
                    self.names(&stores)
                ));
                let c = lock(&self.cluster);
                for &i in &stores {
                    let _ = std::fs::write(&c.stores[i].slow_sync_file, d.as_millis().to_string());
                }
                Undo::FastDisk(stores)
            }
            Fault::FailDisk(who) => {
                let stores = self.resolve(who);
                self.note(format!("fail disk {}", self.names(&stores)));
                let mut c = lock(&self.cluster);
                for &i in &stores {
                    c.fail_disk(i);
                }
                Undo::FixDisk(stores)
            }
        }
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Restart(stores) => {
                self.note(format!("restart {}", self.names(&stores)));
                for i in stores {
                    self.restart(i);
                }
            }
            Undo::RestartScheduler => {
                self.note("restart scheduler".to_string());
                let started = lock(&self.cluster).start_scheduler();
                if let Err(e) = started {
                    self.note(format!("scheduler restart failed: {e}"));
                }
            }
            Undo::Resume(stores) => {
                self.note(format!("SIGCONT {}", self.names(&stores)));
                let mut c = lock(&self.cluster);
                for i in stores {
                    c.resume_store(i);
                }
            }
            Undo::Heal => {
                self.note("heal the network".to_string());
                for s in &lock(&self.cluster).stores {
                    s.proxy.heal();
                }
            }
            Undo::FastDisk(stores) => {
                self.note(format!("fast disk {}", self.names(&stores)));
                let c = lock(&self.cluster);
                for i in stores {
                    let _ = std::fs::remove_file(&c.stores[i].slow_sync_file);
                }
            }
            Undo::FixDisk(stores) => {
                let mut exited = Vec::new();
                {
                    let mut c = lock(&self.cluster);
                    for &i in &stores {
                        if let Some(how) = c.fix_disk(i) {
                            exited.push(format!("{} ({how})", c.stores[i].name));
                        }
                    }
                }
                self.note(format!(
                    "fix disk {}; stopped by the fault: {exited:?}",
                    self.names(&stores)
                ));
                for i in stores {
                    self.restart(i);
                }
            }
        }
    }

    fn restart(&mut self, i: usize) {
        let result = lock(&self.cluster).start_store(i);
        if let Err(e) = result {
            self.note(format!("restart failed: {e}"));
        }
    }

    /// Undoes everything any fault may have left: heals the network, resumes and fixes every
    /// store, restarts what is down.
    pub fn heal_all(&mut self) {
        self.note("heal everything".to_string());
        let (n, scheduler) = {
            let mut c = lock(&self.cluster);
            for s in &c.stores {
                s.proxy.heal();
                let _ = std::fs::remove_file(&s.slow_sync_file);
            }
            for i in 0..c.stores.len() {
                c.fix_disk(i);
                if c.store_paused(i) {
                    c.resume_store(i);
                }
            }
            let scheduler = if c.scheduler_running() {
                Ok(())
            } else {
                c.start_scheduler()
            };
            (c.stores.len(), scheduler)
        };
        if let Err(e) = scheduler {
            self.note(format!("scheduler restart failed: {e}"));
        }
        for i in 0..n {
            self.restart(i);
        }
    }
}

/// How to undo a fault.
enum Undo {
    Restart(Vec<usize>),
    RestartScheduler,
    Resume(Vec<usize>),
    Heal,
    FastDisk(Vec<usize>),
    FixDisk(Vec<usize>),
}
