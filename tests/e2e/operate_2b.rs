//! Operating a cluster of real processes: every store's and the scheduler's `/metrics` parse as
//! Prometheus text and count what the cluster did; `/status`, the scheduler's `/stores` and
//! `/regions` describe it; the dashboard and alert rules under `deploy/` name only metrics the
//! processes export; `tessera-ctl endpoint|store|region` report the same cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;

use tessera_client::cluster::{ClusterClient, ClusterConfig};
use tokio::task::block_in_place;

use crate::procs::{Cluster, WAIT};
use crate::util::{ctl, http};

/// One sample: its metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses Prometheus' text format strictly: `# HELP`/`# TYPE` lines, then samples
/// `name{label="value",...} number`; a line that is neither is an error. Returns the samples
/// and the declared families with their types.
fn parse_metrics(text: &str) -> Result<(Vec<Sample>, BTreeMap<String, String>), String> {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE: {line}"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("unknown type: {line}"));
            }
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("bad sample: {line}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().map_err(|_| format!("bad value: {line}"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or(format!("bad labels: {line}"))?;
                let mut labels = BTreeMap::new();
                for pair in body.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').ok_or(format!("bad label: {line}"))?;
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .ok_or(format!("unquoted label: {line}"))?;
                    labels.insert(k.to_string(), v.to_string());
                }
                (name, labels)
            }
        };
        if !valid_name(name) {
            return Err(format!("bad metric name: {line}"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(format!("sample without a TYPE: {line}"));
        }
        samples.push((name.to_string(), labels, value));
    }
    Ok((samples, types))
}

/// The sum of `name`'s samples whose labels include `want`.
fn total(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let (code, body) = http(addr, "GET", path, b"").await;
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(code, 200, "GET {path} at {addr}: {body}");
    body
}

/// Checks `text` with `promtool check metrics` when Debian's `prometheus` package is installed.
fn promtool_check(text: &str) -> Option<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(text.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Every `tessera_…` name in a file under `deploy/`.
fn names_in(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("tessera_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_status_dashboard_and_admin_commands_2b() {
    let cluster = block_in_place(Cluster::start);
    let client = ClusterClient::connect(&cluster.scheduler, ClusterConfig::default())
        .await
        .unwrap();
    for i in 0..50 {
        let key = format!("op-{i:03}");
        client.put("default", key.as_bytes(), b"v").await.unwrap();
        assert_eq!(
            client
                .get("default", key.as_bytes())
                .await
                .unwrap()
                .as_deref(),
            Some(&b"v"[..])
        );
    }

    // The stores' metrics: the puts were counted, the gauges (refreshed every second) show
    // the region on every store and one leader.
    let deadline = Instant::now() + WAIT;
    let mut families = BTreeMap::new();
    let texts = loop {
        let mut texts = Vec::new();
        for s in &cluster.stores {
            texts.push(get(s.http, "/metrics").await);
        }
        let parsed: Vec<_> = texts
            .iter()
            .map(|t| parse_metrics(t).unwrap_or_else(|e| panic!("{e}\n{t}")))
            .collect();
        let samples: Vec<Sample> = parsed.iter().flat_map(|(s, _)| s.clone()).collect();
        let leaders = total(&samples, "tessera_region_leaders", &[]);
        let regions_everywhere = parsed
            .iter()
            .all(|(s, _)| total(s, "tessera_regions", &[]) >= 1.0);
        if leaders >= 1.0 && regions_everywhere {
            let puts = total(
                &samples,
                "tessera_requests_total",
                &[("type", "raw_put"), ("result", "ok")],
            );
            assert!(puts >= 50.0, "raw puts counted: {puts}");
            let put_latencies = total(
                &samples,
                "tessera_request_duration_seconds_count",
                &[("type", "raw_put")],
            );
            assert!(put_latencies >= puts, "{put_latencies} latencies");
            for name in [
                "tessera_raft_engine_write_duration_seconds_count",
                "tessera_raft_engine_fsync_duration_seconds_count",
                "tessera_raft_engine_write_peers_count",
                "tessera_raft_commit_duration_seconds_count",
                "tessera_raft_apply_duration_seconds_count",
                "tessera_raft_became_leader_total",
            ] {
                assert!(total(&samples, name, &[]) >= 1.0, "{name} is 0");
            }
            assert!(
                total(
                    &samples,
                    "tessera_raft_proposals_total",
                    &[("kind", "entry")]
                ) >= 50.0,
                "proposals"
            );
            for (i, s) in cluster.stores.iter().enumerate() {
                let own = &parsed[i].0;
                assert!(
                    own.iter().all(|(_, l, _)| l.contains_key("store_id")),
                    "{}: a series without store_id",
                    s.name
                );
                assert!(total(own, "tessera_disk_available_bytes", &[]) > 0.0);
                assert_eq!(total(own, "tessera_disk_full", &[]), 0.0);
            }
            for (_, types) in &parsed {
                families.extend(types.clone());
            }
            break texts;
        }
        assert!(Instant::now() < deadline, "gauges never showed the cluster");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    match block_in_place(|| promtool_check(&texts[0])) {
        Some(_) => eprintln!("promtool check metrics: passed"),
        None => eprintln!("promtool not installed: the promtool check was skipped"),
    }

    // The scheduler's metrics and views (a transaction takes its timestamps there).
    let txn = block_in_place(|| ctl(&["--scheduler", &cluster.scheduler, "txn", "put", "t", "1"]));
    assert_eq!(txn.0, 0, "{txn:?}");
    let sched: SocketAddr = cluster.scheduler_status.parse().unwrap();
    let text = get(sched, "/metrics").await;
    let (samples, types) = parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    families.extend(types);
    assert!(total(&samples, "tessera_scheduler_tso_requests_total", &[]) >= 1.0);
    assert!(
        total(
            &samples,
            "tessera_scheduler_region_heartbeat_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    assert_eq!(
        total(&samples, "tessera_scheduler_stores", &[("state", "up")]),
        3.0
    );
    assert!(total(&samples, "tessera_scheduler_regions", &[]) >= 1.0);
    let stores: serde_json::Value = serde_json::from_str(&get(sched, "/stores").await).unwrap();
    let listed = stores["stores"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{stores}");
    let regions: serde_json::Value = serde_json::from_str(&get(sched, "/regions").await).unwrap();
    assert!(
        !regions["regions"].as_array().unwrap().is_empty(),
        "{regions}"
    );
    let status: serde_json::Value = serde_json::from_str(&get(sched, "/status").await).unwrap();
    assert_eq!(status["bootstrapped"], true, "{status}");

    // Each store's /status.
    for s in &cluster.stores {
        let doc: serde_json::Value = serde_json::from_str(&get(s.http, "/status").await).unwrap();
        assert!(doc["store_id"].as_u64().is_some_and(|id| id > 0), "{doc}");
        assert_eq!(doc["engine"], "raft", "{doc}");
        assert_eq!(doc["raft_worker_alive"], true, "{doc}");
        assert!(doc["regions"].as_i64().is_some_and(|r| r >= 1), "{doc}");
        assert!(
            doc["disk"]["used_bytes"].as_u64().is_some_and(|b| b > 0),
            "{doc}"
        );
        assert_eq!(doc["addr"], s.grpc_addr(), "{doc}");
        let version = doc["version"].as_str().unwrap();
        assert!(
            version.contains(doc["git_revision"].as_str().unwrap()),
            "{doc}"
        );
    }

    // The dashboard and the alert rules name only exported metrics.
    let exported = |name: &str| {
        families.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|f| families.get(f).map(String::as_str) == Some("histogram"))
            })
    };
    let dashboard = format!("{}/deploy/grafana/tessera.json", env!("CARGO_MANIFEST_DIR"));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard).unwrap()).unwrap();
    assert!(doc["panels"].as_array().is_some_and(|p| !p.is_empty()));
    for file in [
        "deploy/grafana/tessera.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let names = names_in(file);
        assert!(names.len() > 10, "{file} names {names:?}");
        let unknown: Vec<_> = names.iter().filter(|n| !exported(n)).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics nobody exports: {unknown:?}"
        );
    }

    // tessera-ctl against the same cluster.
    let sched_grpc = cluster.scheduler.clone();
    let endpoints: Vec<String> = cluster.stores.iter().map(|s| s.http.to_string()).collect();
    let out = block_in_place(|| {
        let s = sched_grpc.as_str();
        vec![
            ctl(&["--scheduler", s, "endpoint", "status", "--cluster"]),
            ctl(&["endpoint", "health", "--endpoints", &endpoints.join(",")]),
            ctl(&["--scheduler", s, "store", "list"]),
            ctl(&["--scheduler", s, "region", "op-001"]),
            ctl(&["--scheduler", s, "region", "--id", "999999"]),
            ctl(&["endpoint", "health", "--endpoints", "127.0.0.1:1"]),
        ]
    });
    assert_eq!(out[0].0, 0, "{:?}", out[0]);
    assert_eq!(out[0].1.lines().count(), 3, "{:?}", out[0]);
    assert!(out[0]
        .1
        .lines()
        .all(|l| l.contains(" store ") && l.contains("regions")));
    assert_eq!(out[1].0, 0, "{:?}", out[1]);
    assert_eq!(out[1].1.matches("is healthy").count(), 3, "{:?}", out[1]);
    assert_eq!(out[2].0, 0, "{:?}", out[2]);
    assert_eq!(
        out[2].1.lines().filter(|l| l.contains(" up ")).count(),
        3,
        "{:?}",
        out[2]
    );
    assert_eq!(out[3].0, 0, "{:?}", out[3]);
    assert!(
        out[3].1.starts_with("region ") && out[3].1.contains("leader"),
        "{:?}",
        out[3]
    );
    assert_eq!(out[4].0, 1, "{:?}", out[4]);
    assert_eq!(out[5].0, 4, "{:?}", out[5]);

    // `top` while a writer writes: two frames, a row per store, the writes seen.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..400 {
                let key = format!("top-{i:04}");
                client.put("default", key.as_bytes(), b"v").await.unwrap();
            }
        })
    };
    let s = cluster.scheduler.clone();
    let top = block_in_place(|| {
        ctl(&[
            "--scheduler",
            &s,
            "top",
            "--cluster",
            "--iterations",
            "2",
            "--interval-ms",
            "400",
        ])
    });
    writer.await.unwrap();
    assert_eq!(top.0, 0, "{top:?}");
    let frames: Vec<&str> = top
        .1
        .split("STORE")
        .filter(|f| !f.trim().is_empty())
        .collect();
    assert_eq!(frames.len(), 2, "{}", top.1);
    for f in &frames {
        assert_eq!(f.trim().lines().count(), 4, "{f}");
    }
    let busy = |f: &str| {
        f.lines().skip(1).any(|row| {
            row.split_whitespace()
                .nth(2)
                .and_then(|q| q.parse::<f64>().ok())
                .is_some_and(|q| q > 0.0)
        })
    };
    assert!(frames.iter().any(|f| busy(f)), "no writes seen:\n{}", top.1);

    // `check perf`: a verdict line per threshold, and an exit code that says the same.
    let perf = block_in_place(|| {
        ctl(&[
            "--scheduler",
            &s,
            "check",
            "perf",
            "--load",
            "s",
            "--seconds",
            "2",
        ])
    });
    let lines: Vec<&str> = perf.1.lines().collect();
    assert_eq!(lines.len(), 5, "{perf:?}");
    assert!(
        lines[1].contains("throughput") && lines[2].contains("p99"),
        "{perf:?}"
    );
    let rate: f64 = lines[1].split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(rate > 0.0, "{perf:?}");
    assert!(lines[3].starts_with("PASS: 0 failed puts of "), "{perf:?}");
    eprintln!("{}", perf.1);
    match lines[4] {
        "PASS" => assert_eq!(perf.0, 0, "{perf:?}"),
        "FAIL" => assert_eq!(perf.0, 8, "{perf:?}"),
        other => panic!("verdict {other:?}"),
    }
}

/// `tessera-ctl region --id ID -w json` as JSON.
fn region_doc(scheduler: &str, id: u64) -> serde_json::Value {
    let out = ctl(&[
        "-w",
        "json",
        "--scheduler",
        scheduler,
        "region",
        "--id",
        &id.to_string(),
    ]);
    assert_eq!(out.0, 0, "{out:?}");
    serde_json::from_str(&out.1).unwrap()
}

/// Polls `region --id ID` until `done` holds of it.
fn wait_region(scheduler: &str, id: u64, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let doc = region_doc(scheduler, id);
        if done(&doc) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {doc}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The peer ids of a `region` document, by store.
fn peers_by_store(doc: &serde_json::Value) -> BTreeMap<u64, String> {
    doc["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let p = p.as_str().unwrap();
            let store = p.split('@').nth(1).unwrap().trim_end_matches("(learner)");
            (
                store.parse().unwrap(),
                p.split('@').next().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_move_leaders_and_peers_and_split_2b() {
    let mut cluster = block_in_place(Cluster::start);
    let client = ClusterClient::connect(&cluster.scheduler, ClusterConfig::default())
        .await
        .unwrap();
    client.put("default", b"a", b"1").await.unwrap();
    let s = cluster.scheduler.clone();
    let (region_id, leader_store) = block_in_place(|| {
        let s = s.as_str();
        // Balancing off, so nothing moves the leader back.
        let set = ctl(&[
            "--scheduler",
            s,
            "scheduler",
            "config",
            "set",
            "--balance-leader",
            "false",
            "--balance-region",
            "false",
        ]);
        assert_eq!(set.0, 0, "{set:?}");
        assert!(set.1.contains("balance-leader false"), "{set:?}");
        let get = ctl(&["-w", "json", "--scheduler", s, "scheduler", "config", "get"]);
        let config: serde_json::Value = serde_json::from_str(&get.1).unwrap();
        assert_eq!(config["balance_leader"], false, "{get:?}");
        assert_eq!(config["balance_region"], false, "{get:?}");
        let zero = ctl(&[
            "--scheduler",
            s,
            "scheduler",
            "config",
            "set",
            "--store-limit",
            "0",
        ]);
        assert_eq!(zero.0, 3, "{zero:?}");

        // Wait for three voters, then move the leader to another store.
        let first = ctl(&["-w", "json", "--scheduler", s, "region", "a"]);
        let id = serde_json::from_str::<serde_json::Value>(&first.1).unwrap()["id"]
            .as_u64()
            .unwrap();
        wait_region(s, id, "three replicas with a leader", |d| {
            d["peers"].as_array().unwrap().len() == 3 && d["leader_store"].is_u64()
        });
        let doc = region_doc(s, id);
        let leader = doc["leader_store"].as_u64().unwrap();
        let stores: Vec<u64> = peers_by_store(&doc).into_keys().collect();
        let target = *stores.iter().find(|st| **st != leader).unwrap();
        let moved = ctl(&[
            "--scheduler",
            s,
            "transfer-leader",
            &id.to_string(),
            &target.to_string(),
        ]);
        assert_eq!(moved.0, 0, "{moved:?}");
        assert!(
            moved.1.starts_with("operator added: admin-transfer-leader"),
            "{moved:?}"
        );
        wait_region(s, id, "the leader move", |d| d["leader_store"] == target);

        // Refusals: a peer already there, a store with no voter, an unknown region.
        let (r, t) = (id.to_string(), target.to_string());
        let dup = ctl(&["--scheduler", s, "add-peer", &r, &t]);
        assert_eq!(dup.0, 3, "{dup:?}");
        assert!(dup.2.contains("already holds a peer"), "{dup:?}");
        let nowhere = ctl(&["--scheduler", s, "transfer-leader", &r, "999"]);
        assert_eq!(nowhere.0, 3, "{nowhere:?}");
        let unknown = ctl(&["--scheduler", s, "remove-peer", "999999", &t]);
        assert_eq!(unknown.0, 3, "{unknown:?}");

        // Remove a follower's peer: it goes (the replica checker may then add a new one).
        let follower = *stores.iter().find(|st| **st != target).unwrap();
        let old_peer = peers_by_store(&doc)[&follower].clone();
        let removed = ctl(&["--scheduler", s, "remove-peer", &r, &follower.to_string()]);
        assert_eq!(removed.0, 0, "{removed:?}");
        wait_region(s, id, "the peer's removal", |d| {
            peers_by_store(d).get(&follower) != Some(&old_peer)
        });

        // Split the region at "m": two regions, the right one starting at "m".
        let split = ctl(&["--scheduler", s, "split", &r, "m"]);
        assert_eq!(split.0, 0, "{split:?}");
        assert_eq!(split.1.lines().count(), 2, "{split:?}");
        let right = ctl(&["--scheduler", s, "region", "m"]);
        assert!(right.1.contains(r#"["m", "")"#), "{right:?}");
        let outside = ctl(&["--scheduler", s, "split", &r, "z"]);
        assert_eq!(outside.0, 3, "{outside:?}");
        (id, target)
    });
    assert_eq!(
        client.get("default", b"a").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );

    // Offline inspection of the leader's store: refused while it runs, read once it stopped.
    let mut leader_proc = None;
    for (i, st) in cluster.stores.iter().enumerate() {
        let doc: serde_json::Value = serde_json::from_str(&get(st.http, "/status").await).unwrap();
        if doc["store_id"] == leader_store {
            leader_proc = Some(i);
        }
    }
    let i = leader_proc.expect("the leader's store");
    let dir = cluster.stores[i].data_dir().display().to_string();
    let r = region_id.to_string();
    let busy = block_in_place(|| ctl(&["raft-state", &r, "--data-dir", &dir]));
    assert_eq!(busy.0, 4, "{busy:?}");
    assert!(busy.2.contains("still running"), "{busy:?}");
    cluster.kill(i);
    let out = block_in_place(|| {
        vec![
            ctl(&["raft-state", &r, "--data-dir", &dir]),
            ctl(&["raft-log", &r, "--data-dir", &dir, "--limit", "5"]),
            ctl(&["raft-state", "999999", "--data-dir", &dir]),
            ctl(&["raft-state", &r, "--data-dir", "/nonexistent"]),
        ]
    });
    assert_eq!(out[0].0, 0, "{:?}", out[0]);
    for part in [
        "raft state: term",
        "apply state: applied",
        "region state: Normal",
    ] {
        assert!(out[0].1.contains(part), "{:?}", out[0]);
    }
    assert_eq!(out[1].0, 0, "{:?}", out[1]);
    let entries: Vec<&str> = out[1].1.lines().skip(1).collect();
    assert!(!entries.is_empty() && entries.len() <= 5, "{:?}", out[1]);
    assert!(entries.iter().all(|l| l.contains(" term ")), "{:?}", out[1]);
    assert_eq!(out[2].0, 1, "{:?}", out[2]);
    assert_eq!(out[3].0, 4, "{:?}", out[3]);

    // Output piped into a reader that stops early (`| head -1`) ends the ctl quietly.
    let piped = block_in_place(|| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} raft-log {r} --data-dir {dir} --limit 100000 | head -1",
                env!("CARGO_BIN_EXE_tessera-ctl")
            ))
            .output()
            .unwrap()
    });
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(String::from_utf8_lossy(&piped.stdout).starts_with("region "));
}
