//! `tessera-ctl check perf`: a short standard write load through the whole cluster, judged
//! PASS or FAIL against stated thresholds, so an operator learns at once whether the cluster
//! (its disks, its network) is fit for work.
//!
//! Each of the load's clients puts 256-byte values under `__check_perf/` for the load's time,
//! with a time to live of 60 s so the keys remove themselves. Thresholds (release build):
//!
//! | load | clients | puts/s at least | p99 at most |
//! |---|--:|--:|--:|
//! | `s` | 8 | 1,000 | 50 ms |
//! | `m` | 64 | 5,000 | 50 ms |
//! | `l` | 256 | 10,000 | 100 ms |

use std::time::{Duration, Instant};

use tessera_client::cluster::ClusterClient;

/// Exit code when the cluster fell short of a threshold.
pub const EXIT_FAILED: u8 = 8;

/// How big a load to run.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Load {
    /// 8 clients: at least 1,000 puts/s, p99 at most 50 ms
    S,
    /// 64 clients: at least 5,000 puts/s, p99 at most 50 ms
    M,
    /// 256 clients: at least 10,000 puts/s, p99 at most 100 ms
    L,
}

impl Load {
    /// (clients, puts/s at least, p99 at most).
    fn thresholds(self) -> (usize, f64, Duration) {
        match self {
            Load::S => (8, 1_000.0, Duration::from_millis(50)),
            Load::M => (64, 5_000.0, Duration::from_millis(50)),
            Load::L => (256, 10_000.0, Duration::from_millis(100)),
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum CheckCmd {
    /// Run a short write load through the cluster (--scheduler) and judge it; exit 8 on FAIL
    Perf {
        /// The load: s, m or l
        #[arg(long, value_enum, default_value = "s")]
        load: Load,
        /// Seconds the load runs
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

/// The verdict of a run, printed one line per check.
#[derive(Debug)]
pub struct Verdict {
    pub lines: Vec<String>,
    pub passed: bool,
}

/// Judges `puts` acknowledged in `took` with these `latencies` and `errors` against `load`.
pub fn judge(
    load: Load,
    puts: usize,
    errors: usize,
    took: Duration,
    latencies: &mut [Duration],
) -> Verdict {
    let (_, min_rate, max_p99) = load.thresholds();
    let rate = puts as f64 / took.as_secs_f64().max(1e-9);
    latencies.sort_unstable();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(Duration::MAX);
    let mark = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let (rate_ok, p99_ok, err_ok) = (rate >= min_rate, p99 <= max_p99, errors == 0);
    Verdict {
        lines: vec![
            format!(
                "{}: throughput {rate:.0} puts/s (at least {min_rate:.0})",
                mark(rate_ok)
            ),
            format!(
                "{}: p99 latency {:.2} ms (at most {} ms)",
                mark(p99_ok),
                p99.as_secs_f64() * 1e3,
                max_p99.as_millis()
            ),
            format!(
                "{}: {errors} failed puts of {}",
                mark(err_ok),
                puts + errors
            ),
        ],
        passed: rate_ok && p99_ok && err_ok,
    }
}

/// Runs `check perf` against the cluster behind `client`.
pub async fn run(cmd: &CheckCmd, client: ClusterClient) -> u8 {
    let CheckCmd::Perf { load, seconds } = *cmd;
    let (clients, _, _) = load.thresholds();
    let run_for = Duration::from_secs(seconds.max(1));
    println!(
        "check perf: {clients} clients for {}s, 256-byte values",
        run_for.as_secs()
    );
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let client = client.clone();
            tokio::spawn(async move {
                let value = vec![b'x'; 256];
                let (mut latencies, mut errors) = (Vec::new(), 0);
                let mut i = 0u64;
                while start.elapsed() < run_for {
                    let key = format!("__check_perf/{c:04}/{i:010}");
                    let at = Instant::now();
                    match client
                        .put_with_ttl("default", key.as_bytes(), &value, 60)
                        .await
                    {
                        Ok(()) => latencies.push(at.elapsed()),
                        Err(_) => errors += 1,
                    }
                    i += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok((l, e)) => {
                latencies.extend(l);
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    let took = start.elapsed();
    let puts = latencies.len();
    let verdict = judge(load, puts, errors, took, &mut latencies);
    for l in &verdict.lines {
        println!("{l}");
    }
    if verdict.passed {
        println!("PASS");
        0
    } else {
        println!("FAIL");
        EXIT_FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judged_against_the_loads_thresholds_1() {
        let ms = Duration::from_millis;
        let mut fast = vec![ms(2); 100];
        let v = judge(Load::S, 20_000, 0, Duration::from_secs(10), &mut fast);
        assert!(v.passed, "{v:?}");
        // One slow put in a hundred is the p99.
        let mut slow = vec![ms(2); 99];
        slow.push(ms(80));
        slow.push(ms(80));
        let v = judge(Load::S, 20_000, 0, Duration::from_secs(10), &mut slow);
        assert!(!v.passed && v.lines[1].starts_with("FAIL"), "{v:?}");
        let v = judge(Load::M, 20_000, 0, Duration::from_secs(10), &mut fast);
        assert!(!v.passed && v.lines[0].starts_with("FAIL"), "{v:?}");
        let v = judge(Load::S, 20_000, 1, Duration::from_secs(10), &mut fast);
        assert!(!v.passed && v.lines[2].starts_with("FAIL"), "{v:?}");
    }
}
