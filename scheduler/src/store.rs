//! Stores as the scheduler knows them: metadata, the last reported stats, liveness, and the
//! checks schedulers use to decide whether a store may give or take replicas.

use proto::metapb::{self, StoreState};
use proto::schedulerpb::StoreStats;

use crate::region::StoreCounts;

/// A store: what it registered, what it last reported and what it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreInfo {
    /// The store's metadata.
    pub meta: metapb::Store,
    /// The stats of its last heartbeat.
    pub stats: Option<StoreStats>,
    /// When it was last heard of (put, heartbeat, or the scheduler's start), cluster clock ms.
    pub last_seen_ms: u64,
    /// What the region tree holds on it; filled in when handed out.
    pub counts: StoreCounts,
}

impl StoreInfo {
    /// A store first heard of at `now_ms`.
    pub fn new(meta: metapb::Store, now_ms: u64) -> StoreInfo {
        StoreInfo {
            meta,
            stats: None,
            last_seen_ms: now_ms,
            counts: StoreCounts::default(),
        }
    }

    /// The store id.
    pub fn id(&self) -> u64 {
        self.meta.id
    }

    /// The store's state.
    pub fn state(&self) -> StoreState {
        StoreState::try_from(self.meta.state).unwrap_or(StoreState::Up)
    }

    /// Whether the store is gone for good.
    pub fn is_tombstone(&self) -> bool {
        self.state() == StoreState::Tombstone
    }

    /// Whether the store has been silent for longer than `max_down_ms`.
    pub fn is_down(&self, now_ms: u64, max_down_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_seen_ms) > max_down_ms
    }

    /// Whether the store is up and talking: it may receive replicas and leaders, and its
    /// replicas are healthy.
    pub fn is_serving(&self, now_ms: u64, max_down_ms: u64) -> bool {
        self.state() == StoreState::Up && !self.is_down(now_ms, max_down_ms)
    }
}
