//! Helpers shared by the scheduler tests: building regions, peers and heartbeats, and a
//! bootstrapped in-memory cluster on a manual clock.

use std::time::Duration;

use proto::metapb::{self, PeerRole};
use proto::schedulerpb::{RegionHeartbeatRequest, RegionHeartbeatResponse, StoreStats};
use scheduler::{Clock, Cluster, Config};

/// A voter.
pub fn peer(id: u64, store_id: u64) -> metapb::Peer {
    metapb::Peer {
        id,
        store_id,
        role: PeerRole::Voter as i32,
    }
}

/// A region over `[start, end)` with voters `(peer_id, store_id)`.
pub fn region(
    id: u64,
    start: &str,
    end: &str,
    peers: &[(u64, u64)],
    conf_ver: u64,
    version: u64,
) -> metapb::Region {
    metapb::Region {
        id,
        start_key: start.as_bytes().to_vec(),
        end_key: end.as_bytes().to_vec(),
        region_epoch: Some(metapb::RegionEpoch { conf_ver, version }),
        peers: peers.iter().map(|(p, s)| peer(*p, *s)).collect(),
    }
}

/// A region with one voter per store in `stores`, peer ids `id * 100 + store`.
pub fn region_on(id: u64, start: &str, end: &str, stores: &[u64], version: u64) -> metapb::Region {
    let peers: Vec<(u64, u64)> = stores.iter().map(|s| (id * 100 + s, *s)).collect();
    region(id, start, end, &peers, 1, version)
}

/// A heartbeat of `region` led by its peer on `leader_store`, with `size`.
pub fn heartbeat(region: &metapb::Region, leader_store: u64, size: u64) -> RegionHeartbeatRequest {
    let leader = region
        .peers
        .iter()
        .find(|p| p.store_id == leader_store)
        .cloned();
    assert!(
        leader.is_some(),
        "region {} has no peer on store {leader_store}",
        region.id
    );
    RegionHeartbeatRequest {
        region: Some(region.clone()),
        leader,
        approximate_size: size,
        approximate_keys: size,
        ..Default::default()
    }
}

/// A store registered at `127.0.0.1:{20160 + id}`.
pub fn store(id: u64) -> metapb::Store {
    metapb::Store {
        id,
        address: format!("127.0.0.1:{}", 20160 + id),
        state: metapb::StoreState::Up as i32,
        peer_address: format!("127.0.0.1:{}", 20170 + id),
        status_address: String::new(),
    }
}

/// A cluster in memory on a manual clock, bootstrapped with store 1 and region 1 (`["", "")`,
/// one peer 101 on store 1), with stores `1..=stores` registered and heartbeating.
pub fn cluster_with(config: Config, stores: u64) -> (Cluster, Clock) {
    let clock = Clock::manual();
    let cluster = Cluster::in_memory(&config, clock.clone()).expect("in-memory cluster");
    cluster
        .bootstrap(store(1), region(1, "", "", &[(101, 1)], 1, 1))
        .expect("bootstrap");
    for id in 1..=stores {
        cluster.put_store(store(id)).expect("put store");
    }
    heartbeat_stores(&cluster, 1..=stores);
    (cluster, clock)
}

/// [`cluster_with`] with the default config but `max_replicas`.
pub fn cluster(max_replicas: u32, stores: u64) -> (Cluster, Clock) {
    let config = Config {
        max_replicas,
        ..Config::default()
    };
    cluster_with(config, stores)
}

/// Store heartbeats from `stores`: they are alive now.
pub fn heartbeat_stores(cluster: &Cluster, stores: impl IntoIterator<Item = u64>) {
    for id in stores {
        cluster
            .store_heartbeat(StoreStats {
                store_id: id,
                capacity: 100 << 30,
                available: 50 << 30,
                ..Default::default()
            })
            .expect("store heartbeat");
    }
}

/// Makes every store but `alive` down: moves the clock past the down time and lets only `alive`
/// report.
pub fn let_stores_go_down(cluster: &Cluster, clock: &Clock, alive: impl IntoIterator<Item = u64>) {
    let down = cluster.config().max_store_down_time_ms + 1;
    assert!(clock.advance(Duration::from_millis(down)));
    heartbeat_stores(cluster, alive);
}

/// Sends a heartbeat that must be accepted; returns the operator step, if any.
pub fn must_heartbeat(
    cluster: &Cluster,
    req: &RegionHeartbeatRequest,
) -> Option<RegionHeartbeatResponse> {
    match cluster.region_heartbeat(req) {
        Ok(resp) => resp,
        Err(e) => panic!("heartbeat of {:?} rejected: {e}", req.region),
    }
}

/// The stores holding a peer of the region, sorted.
pub fn stores_of(region: &metapb::Region) -> Vec<u64> {
    let mut stores: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
    stores.sort_unstable();
    stores
}
