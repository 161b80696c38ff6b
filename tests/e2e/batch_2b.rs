//! The `ClusterClient`'s `BatchCommands` streams over a real three-store cluster: many
//! concurrent requests through one client each get their own answer, the batched and the unary
//! paths agree. (A write that never left the client is reported as not applied: see
//! `routing_2b::cluster_client_gives_up_saying_what_it_tried_2b`.)

use harness::local_cluster::{LocalCluster, LocalClusterConfig};
use tessera_client::cluster::{ClusterClient, ClusterConfig, ClusterError};

async fn start_cluster(dir: &std::path::Path) -> LocalCluster {
    LocalCluster::start(dir, LocalClusterConfig::new(3))
        .await
        .expect("cluster starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_stream_and_get_their_own_answers_2b() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path()).await;
    let batched = ClusterClient::new(cluster.scheduler_client(), ClusterConfig::default());
    let unary = ClusterClient::new(
        cluster.scheduler_client(),
        ClusterConfig {
            batch: false,
            ..ClusterConfig::default()
        },
    );
    batched.put("default", b"warm", b"up").await.unwrap();

    // 200 tasks at once through one client: each writes its own key, reads it back, and
    // deletes every third.
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let c = batched.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{i:03}");
            let value = format!("v{i}-{}", i * 7);
            c.put("default", key.as_bytes(), value.as_bytes()).await?;
            let read = c.get("default", key.as_bytes()).await?;
            assert_eq!(read, Some(value.clone().into_bytes()), "{key}");
            if i % 3 == 0 {
                c.delete("default", key.as_bytes()).await?;
            }
            Ok::<_, ClusterError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // The unary path sees what the batched one wrote.
    for i in 0..200u32 {
        let key = format!("k{i:03}");
        let want = (i % 3 != 0).then(|| format!("v{i}-{}", i * 7).into_bytes());
        assert_eq!(
            unary.get("default", key.as_bytes()).await.unwrap(),
            want,
            "{key}"
        );
    }
    cluster.shutdown().await.unwrap();
}
