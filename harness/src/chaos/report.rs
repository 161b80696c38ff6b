//! [`SeedReport`]: what one seed's run did and found, its one-paragraph summary, and the
//! evidence a failed run leaves behind (`seed-N/` under the output directory):
//!
//! ```text
//! seed-N/report.txt     the summary, every violation (minimal sub-history), lost writes,
//!                       panics, the nemesis plan and what it did, how to replay
//! seed-N/history.json   the whole checked history in porcupine's format (see `checker::to_json`)
//! seed-N/key-K.json     the violating key's history alone, one file per violating key
//! seed-N/*.log          the scheduler's and the stores' logs
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use checker::{Operation, Violation};

use super::cluster::Cluster;
use super::history::{Counts, LostWrites};
use super::nemesis::Step;
use super::{ChaosConfig, Schedule};

/// The outcome of one seed.
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// How long the clients ran.
    pub secs: u64,
    /// Operations by kind and outcome.
    pub counts: Counts,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// The nemesis plan.
    pub plan: Vec<Step>,
    /// What the nemesis did, when.
    pub nemesis_log: Vec<String>,
    /// Keys whose history is not linearizable.
    pub violations: Vec<Violation>,
    /// Keys whose final value lost acknowledged writes.
    pub lost: Vec<LostWrites>,
    /// Panics in the stores' logs (but a failed disk's fail-stop).
    pub panics: Vec<String>,
    /// Stores that exited without being asked to.
    pub unexpected_exits: Vec<String>,
    /// Keys the final reads could not read after healing (a hang or unavailability).
    pub unread: Vec<String>,
    /// Keys used.
    pub keys: usize,
    /// The bank's audit, run under the same nemesis (`None`: no bank clients); `Err` when the
    /// accounts could not be opened or read to the end.
    pub bank: Option<Result<::workload::bank::Report, String>>,
    /// The checked history.
    pub history: Vec<Operation>,
    /// Where the evidence of a failed run went.
    pub artifacts: Option<PathBuf>,
}

impl SeedReport {
    /// Lost acknowledged writes, counted (each key counts its latest acknowledged writes).
    pub fn lost_writes(&self) -> usize {
        self.lost.iter().map(|l| l.lost.len()).sum()
    }

    /// No violation, no lost write, no panic, no unexpected exit, every key read at the end.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
            && self.lost.is_empty()
            && self.panics.is_empty()
            && self.unexpected_exits.is_empty()
            && self.unread.is_empty()
            && self.bank_ok()
    }

    /// The bank's audit found nothing (or there was no bank).
    pub fn bank_ok(&self) -> bool {
        match &self.bank {
            None => true,
            Some(Ok(r)) => r.ok(),
            Some(Err(_)) => false,
        }
    }

    /// The summary: a few lines.
    pub fn summary(&self) -> String {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let mut s = format!(
            "seed {} ({} s, {} keys): {}\n  faults: {}\n  violations: {}, lost acknowledged writes: {}, \
             store panics: {}, unexpected exits: {}, unreadable keys at the end: {}\n  {}",
            self.seed,
            self.secs,
            self.keys,
            self.counts,
            if faults.is_empty() {
                "none".to_string()
            } else {
                faults.join(", ")
            },
            self.violations.len(),
            self.lost_writes(),
            self.panics.len(),
            self.unexpected_exits.len(),
            self.unread.len(),
            if self.passed() { "PASS" } else { "FAIL" },
        );
        if let Some(dir) = &self.artifacts {
            let _ = write!(s, " (evidence in {})", dir.display());
        }
        match &self.bank {
            None => {}
            Some(Ok(r)) => {
                let _ = write!(
                    s,
                    "\n  bank: {} ({} violations): {} transfers, {} committed ({} unacknowledged), \
                     {} aborted, {} snapshots audited",
                    if r.ok() { "OK" } else { "VIOLATED" },
                    r.violations.len(),
                    r.transfers,
                    r.committed,
                    r.committed_unacknowledged,
                    r.aborted,
                    r.snapshots
                );
            }
            Some(Err(e)) => {
                let _ = write!(s, "\n  bank: FAILED: {e}");
            }
        }
        s
    }

    /// Everything: the summary, each finding in full, the plan and the nemesis's log.
    pub fn details(&self, config: &ChaosConfig) -> String {
        let mut s = self.summary();
        s.push('\n');
        for v in &self.violations {
            let _ = write!(s, "\nVIOLATION {v}");
        }
        for l in &self.lost {
            let _ = write!(s, "\nLOST WRITES {l}");
        }
        for p in &self.panics {
            let _ = writeln!(s, "\nPANIC {p}");
        }
        for e in &self.unexpected_exits {
            let _ = writeln!(s, "\nEXIT {e}");
        }
        for u in &self.unread {
            let _ = writeln!(s, "\nUNREAD {u}");
        }
        if let Some(Ok(r)) = &self.bank {
            if !r.ok() {
                let _ = writeln!(s, "\nBANK {r}");
            }
        }
        let _ = writeln!(s, "\nmost common failed/unknown reasons:");
        s.push_str(&self.counts.top_reasons(12));
        let _ = writeln!(s, "\nnemesis plan (seed {}):", self.seed);
        for step in &self.plan {
            let _ = writeln!(s, "  {step}");
        }
        let _ = writeln!(s, "nemesis log:");
        for line in &self.nemesis_log {
            let _ = writeln!(s, "  {line}");
        }
        let _ = writeln!(s, "replay: {}", replay_command(config));
        s
    }
}

/// The command line that runs this seed again.
pub fn replay_command(config: &ChaosConfig) -> String {
    let mut cmd = format!(
        "tessera-chaos --seed {} --secs {} --stores {} --clients {} --http-clients {} --nemesis {}",
        config.seed,
        config.secs,
        config.stores,
        config.grpc_clients,
        config.http_clients,
        if config.kinds.is_empty() {
            "none".to_string()
        } else {
            config.kinds.join(",")
        }
    );
    if config.schedule == Schedule::IsolateLeader {
        cmd.push_str(" --schedule isolate-leader");
    }
    if config.unsafe_local_reads {
        cmd.push_str(" --unsafe-local-reads");
    }
    if config.async_log_writes {
        cmd.push_str(" --async-log-writes");
    }
    if config.async_apply {
        cmd.push_str(" --async-apply");
    }
    if config.file_raft_engine {
        cmd.push_str(" --file-raft-engine");
    }
    cmd
}

/// Writes the evidence of a failed run under `config.out_dir/seed-N/`; returns that directory.
pub fn save(
    config: &ChaosConfig,
    report: &SeedReport,
    cluster: &Cluster,
) -> std::io::Result<PathBuf> {
    let dir = config.out_dir.join(format!("seed-{}", report.seed));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("history.json"), checker::to_json(&report.history))?;
    for v in &report.violations {
        let ops: Vec<Operation> = report
            .history
            .iter()
            .filter(|o| o.key == v.key)
            .cloned()
            .collect();
        let name = format!("key-{}.json", String::from_utf8_lossy(&v.key));
        std::fs::write(dir.join(name), checker::to_json(&ops))?;
    }
    let text = format!("{}evidence: {}\n", report.details(config), dir.display());
    std::fs::write(dir.join("report.txt"), text)?;
    for entry in std::fs::read_dir(cluster.dir())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            if let Some(name) = path.file_name() {
                std::fs::copy(&path, dir.join(name))?;
            }
        }
    }
    Ok(dir)
}
