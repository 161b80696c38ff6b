//! The raftstore crate's error type and its conversion into the wire `errorpb::Error` that clients
//! act on (refresh routing, retry elsewhere).

use proto::{errorpb, metapb};

/// Errors of the raftstore. Region errors carry what a client needs to retry correctly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This peer is not the leader; `leader` is the leader it knows of, if any.
    #[error("peer of region {region_id} is not leader (leader hint: {leader:?})")]
    NotLeader {
        /// The region asked.
        region_id: u64,
        /// The leader this peer knows of.
        leader: Option<metapb::Peer>,
    },
    /// No peer of the region lives on this store.
    #[error("region {0} not found on this store")]
    RegionNotFound(u64),
    /// The key lies outside the region's range.
    #[error("key {key:?} is not in region {region_id} [{start_key:?}, {end_key:?})")]
    KeyNotInRegion {
        /// The offending key.
        key: Vec<u8>,
        /// The region asked.
        region_id: u64,
        /// The region's first key.
        start_key: Vec<u8>,
        /// The region's end key (empty: unbounded).
        end_key: Vec<u8>,
    },
    /// The request's region epoch is stale; `regions` are the current ones.
    #[error("epoch not match: {message}")]
    EpochNotMatch {
        /// What differed.
        message: String,
        /// The regions the client should use instead.
        regions: Vec<metapb::Region>,
    },
    /// The proposal was overwritten by a newer leader's entry, or its term passed.
    #[error("stale command")]
    StaleCommand,
    /// The request was for another store.
    #[error("store not match: request for store {request_store_id}, this is {actual_store_id}")]
    StoreNotMatch {
        /// Store the request named.
        request_store_id: u64,
        /// This store.
        actual_store_id: u64,
    },
    /// A message for a peer that cannot be delivered (its mailbox is gone).
    #[error("region {0}: mailbox closed")]
    Disconnected(u64),
    /// The store's disk is below its free-space reserve: it takes no new writes (reads and
    /// raft traffic go on) until space returns.
    #[error("store {store_id}: disk full (free space below the reserve); writes refused")]
    DiskFull {
        /// The store whose disk is full.
        store_id: u64,
    },
    /// The peer's mailbox is full (the store is behind); retry after a pause.
    #[error("region {0}: server is busy, mailbox full")]
    Busy(u64),
    /// A transport could not deliver a message.
    #[error("transport: {0}")]
    Transport(String),
    /// The command was proposed, and this peer can no longer tell whether its entry commits:
    /// it was removed from the region, or a snapshot replaced its log up to the entry. The
    /// command may have been applied (by the region's other peers, or inside that snapshot)
    /// or not; a client must not take it as refused.
    #[error("region {region_id}: the outcome of the command is unknown: {reason}")]
    Undetermined {
        /// The region.
        region_id: u64,
        /// Why this peer cannot tell.
        reason: &'static str,
    },
    /// A request did not complete in time; its outcome is unknown.
    #[error("timeout: {0}")]
    Timeout(String),
    /// The scheduler could not be reached or refused.
    #[error("scheduler: {0}")]
    Scheduler(String),
    /// The storage engines failed.
    #[error("engine: {0}")]
    Engine(#[from] kv::Error),
    /// The raft core refused (no leader to propose to, invalid config, ...).
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// Something else a caller can only report.
    #[error("{0}")]
    Other(String),
}

/// Result of the raftstore crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The wire form of this error, for a `RaftCmdResponse` header or a kv region error.
    pub fn into_errorpb(self) -> errorpb::Error {
        let mut e = errorpb::Error {
            message: self.to_string(),
            ..Default::default()
        };
        match self {
            Error::NotLeader { region_id, leader } => {
                e.not_leader = Some(errorpb::NotLeader { region_id, leader });
            }
            Error::RegionNotFound(region_id) | Error::Disconnected(region_id) => {
                e.region_not_found = Some(errorpb::RegionNotFound { region_id });
            }
            Error::KeyNotInRegion {
                key,
                region_id,
                start_key,
                end_key,
            } => {
                e.key_not_in_region = Some(errorpb::KeyNotInRegion {
                    key,
                    region_id,
                    start_key,
                    end_key,
                });
            }
            Error::EpochNotMatch { regions, .. } => {
                e.epoch_not_match = Some(errorpb::EpochNotMatch {
                    current_regions: regions,
                });
            }
            Error::StaleCommand => e.stale_command = Some(errorpb::StaleCommand {}),
            Error::StoreNotMatch {
                request_store_id,
                actual_store_id,
            } => {
                e.store_not_match = Some(errorpb::StoreNotMatch {
                    request_store_id,
                    actual_store_id,
                });
            }
            Error::Busy(_) => {
                e.server_is_busy = Some(errorpb::ServerIsBusy {
                    reason: "mailbox full".to_string(),
                    backoff_ms: 20,
                });
            }
            Error::DiskFull { store_id } => {
                e.disk_full = Some(errorpb::DiskFull {
                    store_ids: vec![store_id],
                    reason: "the store's free space is below its reserve".to_string(),
                });
            }
            Error::Raft(raft::Error::ProposalDropped) => {
                // No leader right now: the client should retry after a short backoff.
                e.server_is_busy = Some(errorpb::ServerIsBusy {
                    reason: "proposal dropped: no leader".to_string(),
                    backoff_ms: 50,
                });
            }
            _ => {}
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_errors_keep_their_fields_on_the_wire_2b() {
        let leader = metapb::Peer {
            id: 3,
            store_id: 3,
            ..Default::default()
        };
        let e = Error::NotLeader {
            region_id: 1,
            leader: Some(leader),
        }
        .into_errorpb();
        assert_eq!(e.not_leader.unwrap().leader, Some(leader));
        let e = Error::StaleCommand.into_errorpb();
        assert!(e.stale_command.is_some());
        let e = Error::KeyNotInRegion {
            key: b"k".to_vec(),
            region_id: 2,
            start_key: b"a".to_vec(),
            end_key: b"b".to_vec(),
        }
        .into_errorpb();
        assert_eq!(e.key_not_in_region.unwrap().region_id, 2);
        assert!(Error::Raft(raft::Error::ProposalDropped)
            .into_errorpb()
            .server_is_busy
            .is_some());
    }

    #[test]
    fn only_answers_given_before_applying_prove_a_write_was_not_applied_2b() {
        let not_applied = [
            Error::NotLeader {
                region_id: 1,
                leader: None,
            },
            Error::RegionNotFound(1),
            Error::Disconnected(1),
            Error::StaleCommand,
            Error::Busy(1),
            Error::Raft(raft::Error::ProposalDropped),
            Error::DiskFull { store_id: 1 },
            Error::EpochNotMatch {
                message: String::new(),
                regions: vec![],
            },
        ];
        for e in not_applied {
            let text = e.to_string();
            assert!(e.into_errorpb().proves_not_applied(), "{text}");
        }
        let unknown = [
            Error::Undetermined {
                region_id: 1,
                reason: "removed",
            },
            Error::Timeout("no answer".to_string()),
            Error::Other("anything else".to_string()),
        ];
        for e in unknown {
            let text = e.to_string();
            assert!(!e.into_errorpb().proves_not_applied(), "{text}");
        }
    }
}
