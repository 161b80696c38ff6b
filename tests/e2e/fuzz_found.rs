//! What `make fuzz` ([`crate::fuzz_store`]) found, each input replayed alone on a fresh
//! 3-store cluster: it used to take a store down or lose its data; now the store must refuse
//! it and keep serving ([`must_keep_serving`]).

use proto::kvrpcpb::{Context, RawPutRequest};
use proto::tinykvpb::tiny_kv_client::TinyKvClient;

use crate::survive::{cluster_with_writes, must_keep_serving};

/// A raw write whose context names term `u64::MAX`, to the leader. The leader refuses a command
/// of a term older than its own with one term of slack, and computed `term + 1`: an overflow
/// that panicked its raft worker and stopped the store (seed 1, within 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_term_u64_max_leaves_every_store_serving_2b() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(5).await;
    let leader = topo.leader;
    let addr = format!("http://{}", cluster.stores[leader].grpc_addr());
    let mut client = TinyKvClient::connect(addr).await.expect("connect");
    let req = RawPutRequest {
        context: Some(Context {
            region_id: topo.region.id,
            region_epoch: topo.region.region_epoch,
            peer: Some(topo.peers[leader]),
            term: u64::MAX,
        }),
        key: b"fuzz-term".to_vec(),
        value: b"v".to_vec(),
        cf: "default".to_string(),
    };
    let answer = client.raw_put(req).await;
    cluster.note(&format!("a raw put at term u64::MAX: {answer:?}"));
    must_keep_serving(&mut cluster, leader, leader, &mut acked).await;
}
