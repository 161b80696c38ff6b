//! Transactions across regions through the routing client: regions bound transactional data by
//! its memcomparable-encoded keys, so a key is located by its encoded form. With the boundary at
//! the encoding of "m", the key "m" itself lives in the right-hand region although the raw bytes
//! "m" sort before the boundary: located by its raw bytes it would go to the left region forever.

use std::time::Duration;

use harness::local_cluster::{LocalCluster, LocalClusterConfig};
use tessera_client::cluster::{ClusterClient, ClusterConfig};
use tessera_client::txn::TxnClient;

/// A cluster of `stores` stores with its regions split at `split_keys`, and a transaction client
/// of it.
async fn start(
    dir: &std::path::Path,
    stores: usize,
    split_keys: Vec<Vec<u8>>,
) -> (LocalCluster, TxnClient) {
    let mut config = LocalClusterConfig::new(stores);
    config.split_keys = split_keys;
    let cluster = LocalCluster::start(dir, config)
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
    (cluster, txns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_route_by_encoded_keys_across_regions_4c() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, txns) = start(dir.path(), 3, vec![kv::mvcc::key::encode_bytes(b"m")]).await;

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

/// A transactional scan at a timestamp across three regions, one of them bounded by a key that
/// is no memcomparable encoding ("t"): pages of two pairs cross the boundaries, values are
/// those of the timestamp (not the later overwrite), deleted keys are gone, and a lock left by
/// an abandoned transaction is resolved (rolled back once its TTL passes) and read through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_at_a_timestamp_crosses_regions_and_resolves_locks_4c() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, txns) = start(
        dir.path(),
        1,
        vec![kv::mvcc::key::encode_bytes(b"m"), b"t".to_vec()],
    )
    .await;
    let keys: Vec<&[u8]> = vec![b"a", b"c", b"l", b"m", b"ma", b"q", b"s", b"t", b"ta", b"z"];

    let mut t = txns.begin().await.expect("begin");
    for k in &keys {
        t.put(k, &[k, &b"-1"[..]].concat());
    }
    t.commit().await.expect("load");
    let mut t = txns.begin().await.expect("begin");
    t.delete(b"c");
    let ts = t.commit().await.expect("delete c");
    // After the timestamp: an overwrite, and an abandoned transaction's lock on "q".
    let mut t = txns.begin().await.expect("begin");
    t.put(b"l", b"l-2");
    t.commit().await.expect("overwrite");
    let short = txns.clone().with_lock_ttl(Duration::from_millis(300));
    let mut t = short.begin().await.expect("begin");
    t.put(b"q", b"q-never");
    let abandoned = t.prewrite().await.expect("prewrite");
    drop(abandoned);

    let expect: Vec<(Vec<u8>, Vec<u8>)> = keys
        .iter()
        .filter(|k| **k != b"c")
        .map(|k| (k.to_vec(), [k, &b"-1"[..]].concat()))
        .collect();
    let mut scan = txns.scan_pages(b"", b"", ts, 2);
    let (mut got, mut regions) = (Vec::new(), std::collections::BTreeSet::new());
    while let Some(page) = scan.next_page().await.expect("page") {
        assert!(page.pairs.len() <= 2);
        if !page.pairs.is_empty() {
            regions.insert(page.region.id);
        }
        got.extend(page.pairs);
    }
    assert_eq!(got, expect, "everything visible at {ts}");
    assert_eq!(regions.len(), 3, "pages came from each region: {regions:?}");

    // A bounded range, read at a fresh timestamp: the overwrite, and "q" as it was.
    let now = txns.timestamp().await.expect("ts");
    let part = txns.scan(b"l", b"t", 10, now).await.expect("scan");
    let keys_of = |p: &[(Vec<u8>, Vec<u8>)]| p.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(
        keys_of(&part),
        vec![
            b"l".to_vec(),
            b"m".to_vec(),
            b"ma".to_vec(),
            b"q".to_vec(),
            b"s".to_vec()
        ]
    );
    assert_eq!(part[0].1, b"l-2");
    assert_eq!(
        part[3].1, b"q-1",
        "the abandoned lock was rolled back and read through"
    );
    assert!(txns.stats().resolved_rollbacks() >= 1);
    assert_eq!(txns.scan(b"", b"", 3, now).await.expect("limit").len(), 3);
    assert_eq!(
        txns.get_at(b"l", ts).await.expect("get at"),
        Some(b"l-1".to_vec())
    );
    cluster.shutdown().await.expect("clean shutdown");
}

/// A transaction over three regions prewrites a region at a time: meeting an abandoned lock in
/// the middle region, it waits the lock out (rolled back once its TTL passes) and commits every
/// key; the keys past the lock were not locked while it waited, so a reader of the last region
/// is never blocked by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_over_regions_waits_out_a_lock_in_the_middle_one_4c() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, txns) = start(
        dir.path(),
        1,
        vec![
            kv::mvcc::key::encode_bytes(b"h"),
            kv::mvcc::key::encode_bytes(b"p"),
        ],
    )
    .await;
    let short = txns.clone().with_lock_ttl(Duration::from_millis(500));
    let mut t = short.begin().await.expect("begin");
    t.put(b"k", b"abandoned");
    drop(t.prewrite().await.expect("prewrite"));

    let keys: Vec<&[u8]> = vec![b"a", b"b", b"i", b"k", b"m", b"q", b"z"];
    let writer = {
        let txns = txns.clone();
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        tokio::spawn(async move {
            let mut t = txns.begin().await.expect("begin");
            for k in &keys {
                t.put(k, b"v");
            }
            t.commit().await
        })
    };
    // While the writer waits on "k", the last region holds none of its locks.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let now = txns.timestamp().await.expect("ts");
    let tail = tokio::time::timeout(Duration::from_millis(300), txns.scan(b"p", b"", 10, now))
        .await
        .expect("a read of the last region is not blocked")
        .expect("scan");
    assert!(tail.is_empty(), "nothing committed there yet: {tail:?}");
    let commit_ts = writer
        .await
        .unwrap()
        .expect("the writer commits once the lock is gone");
    for k in keys {
        assert_eq!(
            txns.get_at(k, commit_ts).await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }
    cluster.shutdown().await.expect("clean shutdown");
}
