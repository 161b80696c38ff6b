//! The TTL-check worker: finds a region's raw keys whose time to live has ended and has the
//! region delete them through raft, so the space they take comes back.
//!
//! ```text
//! leader's TTL-check tick (every raw_ttl_check_interval)
//!   -> TtlCheckTask { region, leader }      on this worker, off the raft worker
//!   -> walk the region's keys in the default CF, keeping those whose value expired by now
//!   -> DeleteExpired { cf, keys, now_ms }   proposed to the region, TTL_CHECK_BATCH keys a command
//! ```
//!
//! Only the default CF: the raw API takes a TTL nowhere else, and the lock and write CFs hold
//! the transactions' records, whose bytes must never be taken for an expired value.
//!
//! The walk only proposes: every replica decides at apply, key by key, against what the key
//! holds then and by the clock the command carries, so a key written again since the walk
//! stays, and all replicas delete the same keys. Expired keys already read as absent; deleting
//! them changes what is stored, never what is read.

use codec::raw_value;
use kv::{keys, Cf, EngineSnapshot, Engines};
use proto::metapb;
use proto::raft_cmdpb::{
    CmdType, DeleteExpiredRequest, RaftCmdRequest, RaftRequestHeader, Request,
};

use crate::msg::Callback;
use crate::router::Router;
use crate::worker::Runnable;

/// Keys one `DeleteExpired` command carries at most.
pub(crate) const TTL_CHECK_BATCH: usize = 256;

/// Find the expired keys of `region`, whose leader is `leader`, and propose their deletion.
#[derive(Debug)]
pub(crate) struct TtlCheckTask {
    pub(crate) region: metapb::Region,
    pub(crate) leader: metapb::Peer,
}

/// Runs [`TtlCheckTask`]s over the kv engine.
pub(crate) struct TtlCheckRunner {
    engines: Engines,
    router: Router,
}

impl TtlCheckRunner {
    pub(crate) fn new(engines: Engines, router: Router) -> TtlCheckRunner {
        TtlCheckRunner { engines, router }
    }
}

impl Runnable for TtlCheckRunner {
    type Task = TtlCheckTask;

    fn run(&mut self, task: TtlCheckTask) {
        let region = &task.region;
        let snap = EngineSnapshot::new(&self.engines.kv);
        let now_ms = raw_value::now_ms();
        let found = match expired_keys(&snap, region, Cf::Default, now_ms) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(region_id = region.id, error = %e, "TTL check failed");
                return;
            }
        };
        if !found.is_empty() {
            tracing::debug!(
                region_id = region.id,
                keys = found.len(),
                "deleting expired keys"
            );
        }
        for keys in found.chunks(TTL_CHECK_BATCH) {
            let req = delete_expired(region, task.leader, Cf::Default, keys.to_vec(), now_ms);
            // A refusal (no longer the leader, a new epoch) leaves them for the next check.
            if self.router.send_command(req, Callback::none()).is_err() {
                return;
            }
        }
    }
}

/// The command deleting `keys` of `cf` in `region` if they expired by `now_ms`.
pub(crate) fn delete_expired(
    region: &metapb::Region,
    leader: metapb::Peer,
    cf: Cf,
    keys: Vec<Vec<u8>>,
    now_ms: u64,
) -> RaftCmdRequest {
    RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id: region.id,
            peer: Some(leader),
            region_epoch: region.region_epoch,
            term: 0,
        }),
        requests: vec![Request {
            cmd_type: CmdType::DeleteExpired as i32,
            delete_expired: Some(DeleteExpiredRequest {
                cf: cf.name().to_string(),
                keys,
                now_ms,
            }),
            ..Default::default()
        }],
        admin_request: None,
    }
}

/// The user keys of `region` in `cf` of `snap` whose raw value expired by `now_ms`.
pub(crate) fn expired_keys(
    snap: &EngineSnapshot,
    region: &metapb::Region,
    cf: Cf,
    now_ms: u64,
) -> kv::Result<Vec<Vec<u8>>> {
    let (lower, upper) = (
        keys::data_key(&region.start_key),
        keys::data_end_key(&region.end_key),
    );
    let mut it = snap.iter_cf(cf, lower.clone(), upper)?;
    it.seek(&lower);
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if raw_value::live(v, now_ms).is_none() {
            out.push(keys::origin_key(k).to_vec());
        }
        it.next();
    }
    it.status().map_err(kv::Error::from)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv::WriteBatch;

    #[test]
    fn only_expired_values_of_the_region_are_found_1() {
        let dir = tempfile::tempdir().unwrap();
        let engines = Engines::open(dir.path()).unwrap();
        let mut wb = WriteBatch::new(&engines.kv);
        let put = |wb: &mut WriteBatch, cf, k: &[u8], v: Vec<u8>| {
            wb.put_cf(cf, &keys::data_key(k), &v).unwrap();
        };
        put(
            &mut wb,
            Cf::Default,
            b"a-old",
            raw_value::encode(b"1", Some(100)),
        );
        put(
            &mut wb,
            Cf::Default,
            b"b-live",
            raw_value::encode(b"2", Some(10_000)),
        );
        put(&mut wb, Cf::Default, b"c-plain", b"3".to_vec());
        put(
            &mut wb,
            Cf::Default,
            b"z-old",
            raw_value::encode(b"4", Some(100)),
        );
        put(
            &mut wb,
            Cf::Lock,
            b"a-lock",
            raw_value::encode(b"5", Some(100)),
        );
        wb.write(false).unwrap();
        let snap = EngineSnapshot::new(&engines.kv);
        let region = metapb::Region {
            id: 1,
            start_key: Vec::new(),
            end_key: b"m".to_vec(),
            ..Default::default()
        };
        let found = expired_keys(&snap, &region, Cf::Default, 1_000).unwrap();
        assert_eq!(found, [b"a-old".to_vec()]);
        let found = expired_keys(&snap, &region, Cf::Lock, 1_000).unwrap();
        assert_eq!(found, [b"a-lock".to_vec()]);
        assert!(expired_keys(&snap, &region, Cf::Write, 1_000)
            .unwrap()
            .is_empty());
        // Before their expiry, nothing.
        assert!(expired_keys(&snap, &region, Cf::Default, 99)
            .unwrap()
            .is_empty());
    }
}
