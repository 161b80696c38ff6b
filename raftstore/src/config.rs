//! [`Config`]: the knobs of a store — tick interval, raft ticks, log GC limits, region sizes.

use std::time::Duration;

use crate::error::{Error, Result};

/// The configuration of a raftstore node.
#[derive(Clone, Debug)]
pub struct Config {
    /// Wall-clock length of one raft tick.
    pub raft_base_tick_interval: Duration,
    /// Ticks without a leader before a follower campaigns.
    pub raft_election_timeout_ticks: usize,
    /// Ticks between leader heartbeats.
    pub raft_heartbeat_ticks: usize,
    /// Largest total size of entries in one append message.
    pub raft_max_size_per_msg: u64,
    /// Largest number of in-flight append messages per follower.
    pub raft_max_inflight_msgs: usize,
    /// Interval of the leader's raft log GC check.
    pub raft_log_gc_tick_interval: Duration,
    /// Applied entries in the log at which the leader compacts everything applied, even past
    /// lagging followers (they catch up by snapshot).
    pub raft_log_gc_count_limit: u64,
    /// Entries every follower has that make a compaction worthwhile before the count limit.
    pub raft_log_gc_threshold: u64,
    /// A snapshot send nobody reported on within this time is taken as failed and redone.
    pub snapshot_send_timeout: Duration,
    /// Interval of the GC of snapshot files no peer needs.
    pub snap_gc_interval: Duration,
    /// Interval of the leader's split check (it measures the region only when enough was
    /// written since the last one).
    pub split_region_check_tick_interval: Duration,
    /// Interval of the leader's TTL check: it finds the region's raw keys whose time to live
    /// has ended and deletes them through raft (they read as absent already).
    pub raw_ttl_check_interval: Duration,
    /// Size past which a region is split.
    pub region_max_size: u64,
    /// Size of each half after a split.
    pub region_split_size: u64,
    /// Interval between region heartbeats of a leader.
    pub region_heartbeat_interval: Duration,
    /// Interval between store heartbeats.
    pub store_heartbeat_interval: Duration,
    /// Most messages a raft worker drains before writing a batch.
    pub max_batch_size: usize,
    /// Number of recently persisted entries kept in memory per peer.
    pub entry_cache_limit: usize,
    /// How long `RaftStorage` waits for a command before giving up with a timeout.
    pub command_timeout: Duration,
    /// Messages from outside the store (other stores' raft messages, client commands) a peer's
    /// mailbox holds before refusing more: raft messages are dropped, commands answered
    /// `ServerIsBusy`.
    pub mailbox_capacity: usize,
    /// Free space the store keeps for itself: below it, new writes are refused with
    /// `DiskFull` until space returns (0: no reserve). See `kv::disk`.
    pub reserve_space: u64,
    /// Interval of the free-space check.
    pub disk_check_interval: Duration,
    /// Serve reads on a leader whose lease runs without a ReadIndex round (see
    /// [`Config::leader_lease`]); off, every read confirms leadership with a quorum.
    pub lease_read: bool,
    /// Write the raft log on a thread of its own while the raft worker goes on stepping,
    /// sending and applying (see `log_writer`). Pays when a sync takes a millisecond or more;
    /// on a fast local disk the two thread hand-offs per round cost more than they save.
    pub async_log_writes: bool,
    /// Apply committed plain writes (puts, deletes) on a thread of their own while the raft
    /// worker goes on (see `apply_worker`); admin commands, conf changes and commands that read
    /// are still applied by the raft worker.
    pub async_apply: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            raft_base_tick_interval: Duration::from_millis(100),
            raft_election_timeout_ticks: 10,
            raft_heartbeat_ticks: 2,
            raft_max_size_per_msg: 1024 * 1024,
            raft_max_inflight_msgs: 256,
            raft_log_gc_tick_interval: Duration::from_secs(10),
            raft_log_gc_count_limit: 128 * 1024,
            raft_log_gc_threshold: 50,
            snapshot_send_timeout: Duration::from_secs(60),
            snap_gc_interval: Duration::from_secs(60),
            split_region_check_tick_interval: Duration::from_secs(10),
            raw_ttl_check_interval: Duration::from_secs(600),
            region_max_size: 144 * 1024 * 1024,
            region_split_size: 96 * 1024 * 1024,
            region_heartbeat_interval: Duration::from_secs(10),
            store_heartbeat_interval: Duration::from_secs(10),
            max_batch_size: 256,
            entry_cache_limit: 1024,
            command_timeout: Duration::from_secs(5),
            mailbox_capacity: 4096,
            reserve_space: 0,
            disk_check_interval: Duration::from_secs(1),
            lease_read: true,
            async_log_writes: false,
            async_apply: false,
        }
    }
}

impl Config {
    /// A configuration for tests: 20 ms ticks (an election within ~200-400 ms), frequent
    /// heartbeats, short command timeouts.
    pub fn test() -> Config {
        Config {
            raft_base_tick_interval: Duration::from_millis(20),
            raft_election_timeout_ticks: 10,
            raft_heartbeat_ticks: 2,
            raft_log_gc_tick_interval: Duration::from_millis(100),
            snapshot_send_timeout: Duration::from_secs(5),
            snap_gc_interval: Duration::from_secs(1),
            split_region_check_tick_interval: Duration::from_millis(100),
            raw_ttl_check_interval: Duration::from_millis(500),
            region_heartbeat_interval: Duration::from_millis(200),
            store_heartbeat_interval: Duration::from_millis(500),
            command_timeout: Duration::from_secs(1),
            ..Config::default()
        }
    }

    /// Checks the configuration for consistency.
    ///
    /// # Errors
    /// [`Error::Other`] naming the first problem.
    pub fn validate(&self) -> Result<()> {
        let invalid = |s: &str| Err(Error::Other(format!("invalid raftstore config: {s}")));
        if self.raft_base_tick_interval.is_zero() {
            return invalid("raft_base_tick_interval must be positive");
        }
        if self.raft_heartbeat_ticks == 0
            || self.raft_election_timeout_ticks <= self.raft_heartbeat_ticks
        {
            return invalid("need 0 < raft_heartbeat_ticks < raft_election_timeout_ticks");
        }
        if self.max_batch_size == 0 {
            return invalid("max_batch_size must be positive");
        }
        if self.mailbox_capacity == 0 {
            return invalid("mailbox_capacity must be positive");
        }
        if self.region_split_size > self.region_max_size {
            return invalid("region_split_size must not exceed region_max_size");
        }
        Ok(())
    }

    /// How long a quorum's confirmation of leadership lets a leader serve reads alone: 90% of
    /// the shortest time in which a peer that heard from it can vote for another candidate,
    /// `election_timeout_ticks − 1` ticks (see `peer/lease.rs`); zero when `lease_read` is off.
    pub fn leader_lease(&self) -> Duration {
        if !self.lease_read {
            return Duration::ZERO;
        }
        let ticks = self.raft_election_timeout_ticks.saturating_sub(1) as u32;
        self.raft_base_tick_interval.saturating_mul(ticks) * 9 / 10
    }

    /// How many raft ticks make `interval` (at least one).
    pub(crate) fn ticks(&self, interval: Duration) -> u64 {
        (interval.as_millis() / self.raft_base_tick_interval.as_millis().max(1)).max(1) as u64
    }

    /// The raft configuration of peer `peer_id` under this store configuration, restarting at
    /// `applied`.
    pub(crate) fn raft_config(&self, peer_id: u64, applied: u64) -> raft::Config {
        raft::Config {
            id: peer_id,
            election_tick: self.raft_election_timeout_ticks,
            heartbeat_tick: self.raft_heartbeat_ticks,
            applied,
            max_size_per_msg: self.raft_max_size_per_msg,
            max_inflight_msgs: self.raft_max_inflight_msgs,
            // CheckQuorum makes a leader cut off in a minority step down, so its pending reads
            // fail fast instead of waiting forever; PreVote keeps a rejoining peer with a higher
            // term from deposing a healthy leader.
            check_quorum: true,
            pre_vote: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            // A commit index that advances alone reaches the followers with the next append or
            // heartbeat: a write's own commit then costs no append and answer per follower
            // (a fifth less CPU per 1-client put). Conf changes and splits, which the followers
            // must apply promptly, are still broadcast (raft's pending conf change; the
            // peer's `bcast_commit_until`).
            skip_bcast_commit: true,
            ..raft::Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_validate_2b() {
        assert!(Config::default().validate().is_ok());
        assert!(Config::test().validate().is_ok());
        let mut c = Config::test();
        c.raft_heartbeat_ticks = c.raft_election_timeout_ticks;
        assert!(c.validate().is_err());
        assert!(Config::test().raft_config(1, 5).validate().is_ok());
    }
}
