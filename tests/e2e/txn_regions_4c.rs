//! Transactions across regions through the routing client: regions bound transactional data by
//! its memcomparable-encoded keys, so a key is located by its encoded form. With the boundary at
//! the encoding of "m", the key "m" itself lives in the right-hand region although the raw bytes
//! "m" sort before the boundary: located by its raw bytes it would go to the left region forever.

use std::time::Duration;

use harness::local_cluster::{LocalCluster, LocalClusterConfig};
use tessera_client::cluster::{ClusterClient, ClusterConfig};
use tessera_client::txn::TxnClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_route_by_encoded_keys_across_regions_4c() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LocalClusterConfig::new(3);
    config.split_keys = vec![kv::mvcc::key::encode_bytes(b"m")];
    let cluster = LocalCluster::start(dir.path(), config)
        .await
        .expect("cluster starts");
    let client = ClusterClient::connect(
        &cluster.scheduler_addr().to_string(),
        ClusterConfig {
            timeout: Duration::from_secs(10),
            ..ClusterConfig::default()
        },
    )
    .await
    .expect("scheduler reachable");
    let txns = TxnClient::routed(client, cluster.scheduler_client());

    // One transaction with keys on both sides of the boundary, "m" on the right.
    let mut t = txns.begin().await.expect("begin");
    for k in [&b"a"[..], b"l", b"m", b"z"] {
        t.put(k, k);
    }
    t.commit().await.expect("commit across two regions");
    let mut t = txns.begin().await.expect("begin");
    for k in [&b"a"[..], b"l", b"m", b"z"] {
        assert_eq!(t.get(k).await.expect("get").as_deref(), Some(k), "{k:?}");
    }
    cluster.shutdown().await.expect("clean shutdown");
}
