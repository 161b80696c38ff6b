//! Splits and scheduling on real processes: with 64 KiB regions, writing a few MB through the
//! `ClusterClient` splits the key space into many regions (each store's split checks, `AskSplit`
//! to the scheduler, `Split` through raft); the scheduler spreads leaders within ±20% of the
//! mean; a fourth store joins and balance-region moves replicas onto it until every store holds
//! within ±20% of the mean. Every write reads back through the routing client after each step,
//! so the client follows the splits and the moves.
//!
//! ```text
//!   3 stores, 1 region ─► 8 writers, 2 MB ─► ≥ 12 regions tiling the keys, leaders balanced
//!     ─► every key reads back ─► a 4th store starts ─► replicas balanced over 4 ─► reads back
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proto::metapb::PeerRole;
use scheduler_client::{RpcClient, RpcClientConfig};
use tessera_client::cluster::{ClusterClient, ClusterConfig};

use crate::procs::{small_regions_config, Cluster};

const WRITERS: usize = 8;
const KEYS: usize = 2048;
const VALUE_LEN: usize = 1024;
/// Bound of the waits for the scheduler to balance.
const BALANCE_WAIT: Duration = Duration::from_secs(120);

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i:06}-").into_bytes();
    v.resize(VALUE_LEN, b'.');
    v
}

/// The cluster as the scheduler sees it: regions in key order, voters and leaders per store.
#[derive(Debug, Default)]
struct Layout {
    regions: usize,
    tiles: bool,
    voters: BTreeMap<u64, usize>,
    leaders: BTreeMap<u64, usize>,
}

/// The layout the scheduler reports; not tiling when a region does not start where the previous
/// one ended (a split whose new region has not reported yet leaves a hole).
fn layout(sched: &RpcClient) -> Layout {
    let Ok(regions) = sched.scan_regions(b"", b"", 0) else {
        return Layout::default();
    };
    let mut l = Layout {
        regions: regions.len(),
        tiles: regions.first().is_some_and(|(r, _)| r.start_key.is_empty())
            && regions.last().is_some_and(|(r, _)| r.end_key.is_empty()),
        ..Layout::default()
    };
    for (i, (region, leader)) in regions.iter().enumerate() {
        if i > 0 && regions[i - 1].0.end_key != region.start_key {
            l.tiles = false;
        }
        for p in &region.peers {
            if p.role == PeerRole::Voter as i32 {
                *l.voters.entry(p.store_id).or_default() += 1;
            }
        }
        if let Some(leader) = leader {
            *l.leaders.entry(leader.store_id).or_default() += 1;
        }
    }
    l
}

/// Whether `stores` stores each have a count within ±20% of the mean.
fn balanced(counts: &BTreeMap<u64, usize>, stores: usize) -> bool {
    if counts.len() != stores {
        return false;
    }
    let mean = counts.values().sum::<usize>() as f64 / stores as f64;
    counts
        .values()
        .all(|&c| (c as f64 - mean).abs() <= 0.2 * mean)
}

/// Polls the layout until `ok` holds, panicking with the last one after `timeout`.
async fn wait_layout(scheduler: &str, timeout: Duration, ok: impl Fn(&Layout) -> bool) -> Layout {
    let deadline = Instant::now() + timeout;
    let addr = scheduler.to_string();
    let sched = tokio::task::spawn_blocking(move || {
        RpcClient::connect(&addr, RpcClientConfig::default()).expect("scheduler")
    })
    .await
    .unwrap();
    let sched = std::sync::Arc::new(sched);
    loop {
        let s = sched.clone();
        let l = tokio::task::spawn_blocking(move || layout(&s))
            .await
            .unwrap();
        if ok(&l) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "layout not reached in {timeout:?}; last: {l:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn read_back(client: &ClusterClient) {
    for i in 0..KEYS {
        let got = client.get("default", &key(i)).await.expect("get");
        assert_eq!(got, Some(value(i)), "key {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regions_split_and_spread_over_stores_3b() {
    let mut cluster = Cluster::start_with(&small_regions_config(), 3);
    cluster.wait_replicas(3).await;
    cluster.note("3 replicas");
    let client = ClusterClient::connect(&cluster.scheduler, ClusterConfig::default())
        .await
        .expect("cluster client");

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in (w..KEYS).step_by(WRITERS) {
                    client
                        .put("default", &key(i), &value(i))
                        .await
                        .unwrap_or_else(|e| panic!("put {i}: {e}"));
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    cluster.note("2 MB written");

    let l = wait_layout(&cluster.scheduler, BALANCE_WAIT, |l| {
        l.tiles && l.regions >= 12 && balanced(&l.voters, 3) && balanced(&l.leaders, 3)
    })
    .await;
    cluster.note(&format!("split and balanced over 3 stores: {l:?}"));
    read_back(&client).await;

    // tessera-ctl lists the regions (at least those seen; more splits may have come since)
    // and one line per store.
    let (code, out, err) = tokio::task::block_in_place(|| {
        crate::util::ctl(&["--scheduler", &cluster.scheduler, "regions"])
    });
    assert_eq!(code, 0, "tessera-ctl regions: {err}");
    let regions = out.lines().filter(|l| l.starts_with("region ")).count();
    let stores = out.lines().filter(|l| l.starts_with("store ")).count();
    assert!(
        regions >= l.regions && stores == 3,
        "tessera-ctl regions printed:\n{out}"
    );
    assert!(
        out.lines().all(|l| ["region ", "hole ", "store "]
            .iter()
            .any(|p| l.starts_with(p))),
        "{out}"
    );

    cluster.add_store();
    cluster.note("store4 started");
    let l = wait_layout(&cluster.scheduler, BALANCE_WAIT, |l| {
        l.tiles && balanced(&l.voters, 4) && balanced(&l.leaders, 4)
    })
    .await;
    cluster.note(&format!("balanced over 4 stores: {l:?}"));
    read_back(&client).await;
    cluster.stop_all();
}

/// Between a split and the new region's first heartbeat, the scheduler knows the narrowed
/// region but not the new one: its key space has a hole. `tessera-ctl regions` lists what it
/// knows and names the hole instead of failing on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_regions_lists_a_hole_left_by_a_split_3b() {
    use proto::metapb;
    use proto::schedulerpb::RegionHeartbeatRequest;

    let dir = tempfile::tempdir().unwrap();
    let config = scheduler::Config {
        data_dir: dir.path().to_path_buf(),
        ..scheduler::Config::default()
    };
    let sched = std::sync::Arc::new(scheduler::Cluster::open(&config).expect("scheduler state"));
    let peer = |id, store_id| metapb::Peer {
        id,
        store_id,
        ..Default::default()
    };
    let region = |id, start: &str, end: &str, version, peer_id| metapb::Region {
        id,
        start_key: start.as_bytes().to_vec(),
        end_key: end.as_bytes().to_vec(),
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version,
        }),
        peers: vec![peer(peer_id, 1)],
    };
    let store = metapb::Store {
        id: 1,
        address: "127.0.0.1:1".into(),
        ..Default::default()
    };
    sched
        .bootstrap(store, region(2, "", "", 1, 3))
        .expect("bootstrap");
    // Region 2 split at "m" into 2 [.., "m") and 4 ["m", "t"), and 4 split at "t" into 4 and
    // 6 ["t", ..). Region 2 and region 6 have reported; region 4 has not.
    for r in [region(2, "", "m", 3, 3), region(6, "t", "", 3, 7)] {
        let leader = r.peers.first().cloned();
        sched
            .region_heartbeat(&RegionHeartbeatRequest {
                region: Some(r),
                leader,
                ..Default::default()
            })
            .expect("heartbeat");
    }
    let server = scheduler::server::start(sched, "127.0.0.1:0")
        .await
        .expect("scheduler serves");
    let addr = server.addr.to_string();

    let (code, out, err) =
        tokio::task::block_in_place(|| crate::util::ctl(&["--scheduler", &addr, "regions"]));
    assert_eq!(code, 0, "tessera-ctl regions: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("region 2 [\"\", \"m\")"), "{out}");
    assert!(lines[1].starts_with("hole [\"m\", \"t\")"), "{out}");
    assert!(lines[2].starts_with("region 6 [\"t\", \"\")"), "{out}");
    assert_eq!(lines[3], "store 1: 2 voters, 2 leaders", "{out}");
}
