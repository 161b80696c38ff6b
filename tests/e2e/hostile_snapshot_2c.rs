//! Forged snapshot streams sent straight to one store's `RaftPeer.Snapshot`: an empty snapshot
//! "from the future" that would replace a follower's data, a snapshot for a region the store
//! cannot create, and one declaring far more data than any disk holds. The store must lose no
//! acknowledged write, keep no files for a snapshot it will never apply, and refuse a stream it
//! cannot store before writing much of it.

use std::path::Path;
use std::time::{Duration, Instant};

use proto::metapb;
use proto::raft_serverpb::SnapshotChunk;
use tokio::task::block_in_place;

use crate::forge::{empty_snapshot_meta, snapshot_head, snapshot_meta, EMPTY_MD5, FUTURE_TERM};
use crate::hostile::{open_snapshot, send_snapshot};
use crate::survive::{cluster_with_writes, must_run};

/// A raft index no test cluster reaches.
const FUTURE_INDEX: u64 = 1 << 20;

/// The snapshot files in `dir` whose names start with `prefix` (e.g. `rev_<region>_`), with
/// their sizes; `.tmp` files being written count.
fn snapshot_files(dir: &Path, prefix: &str) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let size = e.metadata().ok()?.len();
            name.starts_with(prefix).then_some((name, size))
        })
        .collect()
}

/// An empty snapshot at a later term and index than the region ever reached, "from" the
/// leader, to a follower. Applied, it wipes the follower's copy and makes it the most
/// up-to-date candidate: once the leader dies it wins and hands the empty snapshot on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_empty_snapshot_loses_no_acknowledged_write_2c() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(20).await;
    let (leader, target) = (topo.leader, topo.follower());
    let head = snapshot_head(
        &topo.region,
        &topo.peers[leader],
        &topo.peers[target],
        FUTURE_TERM,
        FUTURE_INDEX,
        empty_snapshot_meta(),
    );
    let answer = send_snapshot(&cluster.stores[target], vec![head]).await;
    cluster.note(&format!(
        "sent {} an empty snapshot at term {FUTURE_TERM}, index {FUTURE_INDEX}: {answer:?}",
        cluster.stores[target].name
    ));

    // The leader at the time of the attack goes: the two left must elect one of them and
    // still hold every acknowledged write.
    block_in_place(|| cluster.kill(leader));
    let new_leader = cluster.wait_leader().await;
    cluster.note(&format!(
        "killed {}; {} leads",
        cluster.stores[leader].name, cluster.stores[new_leader].name
    ));
    must_run(&mut cluster, target, "after the leader was killed").await;
    acked
        .must_read_all(&cluster, "after the leader was killed")
        .await;
    acked
        .must_write(&cluster, 5, "after the leader was killed")
        .await;
}

/// A complete snapshot stream for a region this store does not host and cannot create (its
/// range overlaps the store's region): the message is dropped, and its files must go with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_for_unknown_region_leaves_no_files_2c() {
    let (mut cluster, _acked, topo) = cluster_with_writes(20).await;
    let target = topo.follower();
    let other = &topo.peers[topo.leader];
    // Ids far above any the scheduler has handed out in a fresh cluster.
    let unknown = topo.region.id + 1_000_000;
    let from = metapb::Peer {
        id: unknown + 1,
        store_id: other.store_id,
        role: metapb::PeerRole::Voter as i32,
    };
    let to = metapb::Peer {
        id: unknown + 2,
        store_id: topo.peers[target].store_id,
        role: metapb::PeerRole::Voter as i32,
    };
    let region = metapb::Region {
        id: unknown,
        start_key: Vec::new(),
        end_key: Vec::new(),
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![from, to],
    };
    let head = snapshot_head(&region, &from, &to, 6, 10, empty_snapshot_meta());
    let answer = send_snapshot(&cluster.stores[target], vec![head]).await;
    let store = &cluster.stores[target];
    cluster.note(&format!(
        "sent {} a snapshot of unknown region {unknown}: {answer:?}",
        store.name
    ));

    // Whether the store refused the stream or took it and dropped the message, nothing of it
    // may stay: a store that keeps such files can be filled up by repeating the stream.
    let prefix = format!("rev_{unknown}_");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = snapshot_files(&store.snap_dir(), &prefix);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "15 s after the stream ended, {}'s snapshot directory still holds {left:?}",
            store.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    must_run(&mut cluster, target, "after the stream").await;
}

/// What the store may have written of a snapshot it cannot store before refusing it: one
/// default-size transfer chunk.
const WRITTEN_BOUND: u64 = 1 << 20;
/// What the test streams at most (the attack needs no more to show the store takes it).
const STREAM_BYTES: usize = 8 << 20;
const CHUNK_BYTES: usize = 256 << 10;
/// A slow sender, as the attack used: the store must not wait for the stream's end to refuse.
const PACE: Duration = Duration::from_millis(25);

/// A snapshot whose meta declares a 1 TiB default-CF file, then a few MiB streamed slowly with
/// the stream left open: the store must refuse it while it is open, having written at most
/// [`WRITTEN_BOUND`] of it (no store has room for 1 TiB; taking it would fill the disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_declaring_a_tebibyte_is_refused_early_2c() {
    let (mut cluster, _acked, topo) = cluster_with_writes(20).await;
    let target = topo.follower();
    let meta = snapshot_meta(&[
        ("default", 1 << 40, [0x5a; 16]),
        ("lock", 0, EMPTY_MD5),
        ("write", 0, EMPTY_MD5),
    ]);
    let head = snapshot_head(
        &topo.region,
        &topo.peers[topo.leader],
        &topo.peers[target],
        FUTURE_TERM,
        FUTURE_INDEX,
        meta,
    );
    let store = &cluster.stores[target];
    let dir = store.snap_dir();
    let prefix = format!("rev_{}_{FUTURE_TERM}_{FUTURE_INDEX}", topo.region.id);
    let on_disk = || -> u64 { snapshot_files(&dir, &prefix).iter().map(|f| f.1).sum() };

    let mut stream = open_snapshot(store).await.expect("connect to the store");
    let mut sent = 0;
    let mut most = 0;
    if stream.send(head).await {
        while sent < STREAM_BYTES {
            let chunk = SnapshotChunk {
                message: None,
                data: vec![0x5a; CHUNK_BYTES],
            };
            if !stream.send(chunk).await {
                break;
            }
            sent += CHUNK_BYTES;
            most = most.max(on_disk());
            tokio::time::sleep(PACE).await;
        }
    }
    // The stream stays open: a store that only checks sizes at its end never answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stream.answered() && Instant::now() < deadline {
        most = most.max(on_disk());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answered_while_open = stream.answered();
    most = most.max(on_disk());
    let answer = stream.finish().await;
    cluster.note(&format!(
        "streamed {sent} bytes of a 1 TiB snapshot to {}: answered while open: \
         {answered_while_open}, answer {answer:?}, at most {most} bytes on disk",
        cluster.stores[target].name
    ));
    assert!(
        most <= WRITTEN_BOUND,
        "the store wrote {most} bytes of a snapshot declaring 1 TiB (bound {WRITTEN_BOUND})"
    );
    assert!(
        answered_while_open,
        "the store took {sent} bytes of a snapshot declaring 1 TiB and had not refused it 10 s \
         later, the stream still open"
    );
    assert!(answer.is_err(), "the store accepted a 1 TiB snapshot");
    must_run(&mut cluster, target, "after the stream").await;
}
