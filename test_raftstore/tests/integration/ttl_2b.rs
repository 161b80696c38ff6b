//! Expired raw keys leave the disk: the leader's TTL check finds them and proposes their
//! deletion, and every replica deletes, at apply, exactly the keys that hold an expired value
//! by the command's clock, whatever it applies after.

use std::time::{Duration, Instant};

use codec::raw_value;
use kv::Cf;
use proto::raft_cmdpb::{CmdType, DeleteExpiredRequest, Request};
use raftstore::Config;
use test_raftstore::{put_req, Cluster};

const WAIT: Duration = Duration::from_secs(10);

/// What each store's engine holds at `key` (default CF).
fn on_every_store(cluster: &Cluster, key: &[u8]) -> Vec<Option<Vec<u8>>> {
    cluster
        .store_ids()
        .into_iter()
        .map(|s| {
            let engines = cluster.engines(s).unwrap();
            kv::engine::get_cf(&engines.kv, Cf::Default, &kv::keys::data_key(key)).unwrap()
        })
        .collect()
}

/// Waits until `key` holds `want` on every store.
fn wait_everywhere(cluster: &Cluster, key: &[u8], want: Option<&[u8]>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = on_every_store(cluster, key);
        if now.iter().all(|v| v.as_deref() == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} is {now:?} on the stores, want {want:?}",
            String::from_utf8_lossy(key)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_leader_deletes_expired_keys_on_every_replica_2b() {
    let mut cluster = Cluster::new(3, Config::test());
    cluster.start();
    let soon = raw_value::now_ms() + 300;
    let short = raw_value::encode(b"s", Some(soon));
    let long = raw_value::encode(b"l", Some(raw_value::now_ms() + 3_600_000));
    cluster.must_put(b"short", &short);
    cluster.must_put(b"long", &long);
    cluster.must_put(b"plain", b"p");
    wait_everywhere(&cluster, b"short", Some(&short));
    // The check runs every 500 ms (Config::test): the short key goes, on every replica.
    wait_everywhere(&cluster, b"short", None);
    wait_everywhere(&cluster, b"long", Some(&long));
    wait_everywhere(&cluster, b"plain", Some(b"p"));
}

fn delete_expired(keys: &[&[u8]], now_ms: u64) -> Request {
    Request {
        cmd_type: CmdType::DeleteExpired as i32,
        delete_expired: Some(DeleteExpiredRequest {
            cf: String::new(),
            keys: keys.iter().map(|k| k.to_vec()).collect(),
            now_ms,
        }),
        ..Default::default()
    }
}

/// The deletion is decided at apply against what each key holds then and by the command's
/// clock: a key written again by an entry before it, a plain value and a live one stay; an
/// expired one goes, the same on every replica. It comes alone in its command, as a swap does
/// (apply would not see the writes of requests before it in the same command).
#[test]
fn a_key_written_again_before_the_deletion_applies_stays_2b() {
    let mut cluster = Cluster::new(
        3,
        Config {
            // Only the commands below delete.
            raw_ttl_check_interval: Duration::from_secs(3600),
            ..Config::test()
        },
    );
    cluster.start();
    let old = raw_value::encode(b"old", Some(1_000));
    cluster.must_put(b"a", &old);
    cluster.must_put(b"b", &old);
    cluster.must_put(b"c", &raw_value::encode(b"live", Some(5_000)));
    cluster.must_put(b"d", b"plain");
    let region_id = cluster.get_region(b"").id;
    let leader = cluster.wait_leader(region_id, WAIT);
    let deletion = delete_expired(&[b"a", b"b", b"c", b"d", b"missing"], 2_000);
    let mixed = vec![put_req(b"a", b"new"), deletion.clone()];
    let resp = cluster
        .call_on_store(leader.store_id, b"a", mixed, WAIT)
        .expect("the leader answers");
    let err = resp.response.header.and_then(|h| h.error);
    assert!(
        err.as_ref()
            .is_some_and(|e| e.message.contains("only request")),
        "{err:?}"
    );
    // "a" is written again by the entry before the deletion.
    cluster.must_put(b"a", b"new");
    let leader = cluster.wait_leader(region_id, WAIT);
    let resp = cluster
        .call_on_store(leader.store_id, b"a", vec![deletion], WAIT)
        .expect("the leader answers");
    assert!(resp.response.header.and_then(|h| h.error).is_none());
    let deleted = resp.response.responses[0]
        .delete_expired
        .as_ref()
        .map(|d| d.deleted);
    assert_eq!(deleted, Some(1));
    wait_everywhere(&cluster, b"b", None);
    wait_everywhere(&cluster, b"a", Some(b"new"));
    wait_everywhere(
        &cluster,
        b"c",
        Some(&raw_value::encode(b"live", Some(5_000))),
    );
    wait_everywhere(&cluster, b"d", Some(b"plain"));
}
