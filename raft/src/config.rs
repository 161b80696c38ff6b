//! [`Config`]: the knobs of one raft node, and their validation.

use crate::errors::{Error, Result};
use crate::util::NO_LIMIT;

/// How a leader answers a ReadIndex request (thesis §6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadOnlyOption {
    /// The leader confirms it is still leader with a round of heartbeats acknowledged
    /// by a quorum before answering (thesis §6.4). Safe under any clock behaviour.
    #[default]
    Safe,
    /// The leader answers from its lease (thesis §6.4.1): it relies on `check_quorum`
    /// and bounded clock drift, and saves the heartbeat round.
    LeaseBased,
}

/// The configuration of one raft node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The identity of the local node. Must be non-zero.
    pub id: u64,
    /// Ticks a follower waits without hearing from a leader before campaigning. The
    /// actual timeout is drawn from `[election_tick, 2 * election_tick)` (§5.2).
    pub election_tick: usize,
    /// Ticks between leader heartbeats. Must be smaller than `election_tick`.
    pub heartbeat_tick: usize,
    /// The last applied index, when restarting a node whose state machine is
    /// already ahead of the storage's committed-and-applied point.
    pub applied: u64,
    /// The maximum byte size of the entries of one append message ([`NO_LIMIT`] for
    /// none). At least one entry is always sent.
    pub max_size_per_msg: u64,
    /// The maximum number of in-flight append messages to one follower in the
    /// optimistic replication phase.
    pub max_inflight_msgs: usize,
    /// The maximum total byte size of a leader's uncommitted entries; proposals
    /// beyond it are dropped ([`NO_LIMIT`] for none).
    pub max_uncommitted_size: u64,
    /// A leader steps down when it has not heard from a quorum within an election
    /// timeout (thesis §6.2).
    pub check_quorum: bool,
    /// Run a pre-election before incrementing the term, so that a partitioned node
    /// rejoining does not disrupt the cluster (thesis §9.6).
    pub pre_vote: bool,
    /// How ReadIndex requests are answered.
    pub read_only_option: ReadOnlyOption,
    /// Do not broadcast an append when only the commit index advanced; followers
    /// learn it with the next append or heartbeat.
    pub skip_bcast_commit: bool,
    /// Seed of the node's deterministic random generator (election timeouts).
    /// `0` derives the seed from `id`, so every node of a cluster differs.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            id: 0,
            election_tick: 10,
            heartbeat_tick: 2,
            applied: 0,
            max_size_per_msg: NO_LIMIT,
            max_inflight_msgs: 256,
            max_uncommitted_size: NO_LIMIT,
            check_quorum: false,
            pre_vote: false,
            read_only_option: ReadOnlyOption::Safe,
            skip_bcast_commit: false,
            seed: 0,
        }
    }
}

impl Config {
    /// A default configuration for node `id`.
    pub fn new(id: u64) -> Config {
        Config {
            id,
            ..Config::default()
        }
    }

    /// Checks the configuration for consistency.
    ///
    /// # Errors
    /// [`Error::ConfigInvalid`] naming the first problem found.
    pub fn validate(&self) -> Result<()> {
        let invalid = |s: &str| Err(Error::ConfigInvalid(s.to_string()));
        if self.id == 0 {
            return invalid("id cannot be 0");
        }
        if self.heartbeat_tick == 0 {
            return invalid("heartbeat_tick must be greater than 0");
        }
        if self.election_tick <= self.heartbeat_tick {
            return invalid("election_tick must be greater than heartbeat_tick");
        }
        if self.max_inflight_msgs == 0 {
            return invalid("max_inflight_msgs must be greater than 0");
        }
        if self.max_size_per_msg == 0 {
            return invalid("max_size_per_msg must be greater than 0");
        }
        if self.max_uncommitted_size == 0 {
            return invalid("max_uncommitted_size must be greater than 0");
        }
        if self.read_only_option == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return invalid("read_only_option LeaseBased requires check_quorum");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validate_2aa() {
        assert!(Config::new(1).validate().is_ok());
        assert!(Config::default().validate().is_err());
        let mut c = Config::new(1);
        c.election_tick = c.heartbeat_tick;
        assert!(matches!(c.validate(), Err(Error::ConfigInvalid(_))));
        let mut c = Config::new(1);
        c.read_only_option = ReadOnlyOption::LeaseBased;
        assert!(c.validate().is_err());
        c.check_quorum = true;
        assert!(c.validate().is_ok());
        let mut c = Config::new(1);
        c.max_inflight_msgs = 0;
        assert!(c.validate().is_err());
    }
}
