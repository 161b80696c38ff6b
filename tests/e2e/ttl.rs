//! Per-key time to live end to end: keys put with a TTL through gRPC (the client), the CLI and
//! the HTTP gateway read as themselves until they expire, then as absent; on a standalone
//! store, and on a raft cluster with a batch spanning regions and the gateways of the leader
//! and of a follower, where the leaders' TTL checks then delete them from every store's disk.

use std::time::Duration;

use harness::local_cluster::{LocalCluster, LocalClusterConfig};
use tessera_client::cluster::{ClusterClient, ClusterConfig};
use tessera_client::raw::RawClient;
use tokio::task::block_in_place;

use crate::util::{ctl, http, start, test_config};

/// Long enough past a 1-second TTL for the key to be gone on every path.
const PAST_EXPIRY: Duration = Duration::from_millis(1_200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_a_ttl_expire_through_grpc_cli_and_http_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&test_config(dir.path())).await;
    let addr = server.addr.to_string();
    let gw = server.status_addr;
    let mut client = RawClient::connect(&addr).await.unwrap();
    client
        .put_with_ttl("default", b"grpc", b"g", 1)
        .await
        .unwrap();
    client
        .put_with_ttl("default", b"kept", b"k", 3600)
        .await
        .unwrap();
    client
        .batch_put_with_ttl("default", &[(b"batch".to_vec(), b"b".to_vec())], 1)
        .await
        .unwrap();
    let put = block_in_place(|| ctl(&["--addr", &addr, "put", "cli", "c", "--ttl", "1"]));
    assert_eq!(put.0, 0, "{put:?}");
    assert_eq!(http(gw, "PUT", "/kv/http?ttl=1", b"h").await.0, 204);
    for key in ["grpc", "batch", "cli", "http", "kept"] {
        assert!(
            client
                .get("default", key.as_bytes())
                .await
                .unwrap()
                .is_some(),
            "{key} before its expiry"
        );
    }
    assert_eq!(http(gw, "GET", "/kv/cli", b"").await, (200, b"c".to_vec()));

    tokio::time::sleep(PAST_EXPIRY).await;
    for key in ["grpc", "batch", "cli", "http"] {
        assert_eq!(
            client.get("default", key.as_bytes()).await.unwrap(),
            None,
            "{key} after its expiry"
        );
    }
    assert_eq!(
        client.get("default", b"kept").await.unwrap(),
        Some(b"k".to_vec())
    );
    let get = block_in_place(|| ctl(&["--addr", &addr, "get", "grpc"]));
    assert_eq!(get.0, 1, "{get:?}");
    assert_eq!(http(gw, "GET", "/kv/http", b"").await.0, 404);
    let scan = block_in_place(|| ctl(&["--addr", &addr, "scan"]));
    assert_eq!(scan.1, "kept\tk\n", "{scan:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_a_ttl_expire_across_regions_and_gateways_2b() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LocalClusterConfig::new(3);
    config.split_keys = vec![b"m".to_vec()];
    let cluster = LocalCluster::start(dir.path(), config).await.unwrap();
    let client = ClusterClient::connect(
        &cluster.scheduler_addr().to_string(),
        ClusterConfig::default(),
    )
    .await
    .unwrap();
    // One batch over both regions.
    let pairs = [
        (b"a".to_vec(), b"1".to_vec()),
        (b"z".to_vec(), b"2".to_vec()),
    ];
    client
        .batch_put_with_ttl("default", &pairs, 1)
        .await
        .unwrap();
    client
        .put_with_ttl("default", b"n", b"3", 3600)
        .await
        .unwrap();
    // Through every store's gateway: the leader's serves it itself, the others forward.
    for (i, store) in cluster.stores().iter().enumerate() {
        let path = format!("/kv/gw{i}?ttl=1");
        assert_eq!(http(store.status_addr, "PUT", &path, b"v").await.0, 204);
    }
    let all = client.scan("default", b"", 100).await.unwrap();
    assert_eq!(all.len(), 6, "{all:?}");

    tokio::time::sleep(PAST_EXPIRY).await;
    let left = client.scan("default", b"", 100).await.unwrap();
    assert_eq!(left, [(b"n".to_vec(), b"3".to_vec())]);
    assert_eq!(client.get("default", b"z").await.unwrap(), None);
    let gw = cluster.stores()[0].status_addr;
    assert_eq!(http(gw, "GET", "/kv/gw1", b"").await.0, 404);
    // The leaders' TTL checks (every 500 ms here) delete them from every store's disk.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for store in cluster.stores() {
        let on_disk = |k: &[u8]| {
            kv::engine::get_cf(&store.engines().kv, kv::Cf::Default, &kv::keys::data_key(k))
                .unwrap()
        };
        while ["a", "z", "gw0", "gw1", "gw2"]
            .iter()
            .any(|k| on_disk(k.as_bytes()).is_some())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "store {} still holds expired keys",
                store.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(on_disk(b"n").is_some(), "store {}", store.id);
    }
    cluster.shutdown().await.unwrap();
}
