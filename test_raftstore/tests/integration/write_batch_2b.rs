//! A round's plain writes share one log entry (`raftstore/src/peer/write_batch.rs`): concurrent
//! writers still each get their own answer, and every acknowledged write, delete and swap is
//! applied once, in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftstore::Config;
use test_raftstore::Cluster;

const WAIT: Duration = Duration::from_secs(10);
const WRITERS: usize = 8;

#[test]
fn concurrent_writes_share_entries_and_each_writer_sees_its_own_2b() {
    let mut cluster = Cluster::new(3, Config::test());
    cluster.start();
    let cluster = Arc::new(cluster);
    cluster.must_put(b"warm", b"up");
    let region = cluster.get_region(b"w");
    let leader = cluster.wait_leader(region.id, WAIT);
    let metrics = cluster
        .store_metrics(leader.store_id)
        .expect("leader's store runs");
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (cluster, stop) = (cluster.clone(), stop.clone());
            std::thread::spawn(move || {
                // Each writer puts its keys, deletes every third one, and keeps a counter key
                // that it moves forward with compare-and-swap (proposed alone, between batches).
                let counter = format!("w{w}-count").into_bytes();
                let mut n = 0u32;
                while !stop.load(Ordering::SeqCst) && n < 2_000 {
                    let key = format!("w{w}-k{n:05}").into_bytes();
                    cluster.must_put(&key, format!("v{w}-{n}").as_bytes());
                    if n % 3 == 2 {
                        cluster.must_delete(&key);
                    }
                    if n % 10 == 9 {
                        let prev = (n > 9).then(|| (n - 10).to_string().into_bytes());
                        let out =
                            cluster.must_cas(&counter, prev.as_deref(), n.to_string().as_bytes());
                        assert!(out.succeed, "writer {w}: swap at {n} refused: {out:?}");
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    while metrics.write_commands() <= metrics.write_entries() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    let written: Vec<u32> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let (entries, commands) = (metrics.write_entries(), metrics.write_commands());
    assert!(
        commands > entries,
        "no two writes ever shared an entry: {commands} commands in {entries} entries"
    );
    for (w, &n) in written.iter().enumerate() {
        for i in 0..n {
            let key = format!("w{w}-k{i:05}").into_bytes();
            let expect = (i % 3 != 2).then(|| format!("v{w}-{i}").into_bytes());
            assert_eq!(cluster.must_get(&key), expect, "writer {w} key {i}");
        }
        let count = (n >= 10).then(|| ((n / 10) * 10 - 1).to_string().into_bytes());
        assert_eq!(cluster.must_get(format!("w{w}-count").as_bytes()), count);
    }
}
