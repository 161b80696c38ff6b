//! Filters on the messages the [`crate::MockTransport`] carries: partitions, isolation, seeded
//! random drops, delays, and message-type and region filters. They compose: a message passes only
//! if every installed filter lets it; the longest delay asked for applies.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use proto::eraftpb::{self, MessageType};
use proto::raft_serverpb::RaftMessage;
use protobuf::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterAction {
    /// Deliver it.
    Pass,
    /// Lose it.
    Drop,
    /// Deliver it after this long.
    Delay(Duration),
}

/// A rule applied to every message sent between stores.
pub trait Filter: Send + Sync {
    /// Decides the fate of `msg`.
    fn before(&self, msg: &RaftMessage) -> FilterAction;
}

fn stores_of(msg: &RaftMessage) -> (u64, u64) {
    (
        msg.from_peer.as_ref().map_or(0, |p| p.store_id),
        msg.to_peer.as_ref().map_or(0, |p| p.store_id),
    )
}

/// Cuts every message between the two sides.
pub struct PartitionFilter {
    s1: HashSet<u64>,
    s2: HashSet<u64>,
}

impl PartitionFilter {
    /// Partitions stores `s1` from stores `s2`; messages within a side pass.
    pub fn new(s1: &[u64], s2: &[u64]) -> PartitionFilter {
        PartitionFilter {
            s1: s1.iter().copied().collect(),
            s2: s2.iter().copied().collect(),
        }
    }
}

impl Filter for PartitionFilter {
    fn before(&self, msg: &RaftMessage) -> FilterAction {
        let (f, t) = stores_of(msg);
        let cut = (self.s1.contains(&f) && self.s2.contains(&t))
            || (self.s2.contains(&f) && self.s1.contains(&t));
        if cut {
            FilterAction::Drop
        } else {
            FilterAction::Pass
        }
    }
}

/// Cuts one store off from every other.
pub struct IsolationFilter(pub u64);

impl Filter for IsolationFilter {
    fn before(&self, msg: &RaftMessage) -> FilterAction {
        let (f, t) = stores_of(msg);
        if f == self.0 || t == self.0 {
            FilterAction::Drop
        } else {
            FilterAction::Pass
        }
    }
}

/// Drops a seeded random fraction of messages.
pub struct DropFilter {
    rate: f64,
    rng: Mutex<StdRng>,
}

impl DropFilter {
    /// Drops each message with probability `rate`, from the seeded generator.
    pub fn new(rate: f64, seed: u64) -> DropFilter {
        DropFilter {
            rate,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
}

impl Filter for DropFilter {
    fn before(&self, _msg: &RaftMessage) -> FilterAction {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        if rng.gen_bool(self.rate) {
            FilterAction::Drop
        } else {
            FilterAction::Pass
        }
    }
}

/// Delays a seeded random fraction of messages by up to `max`, so messages arrive out of order.
pub struct DelayFilter {
    rate: f64,
    max: Duration,
    rng: Mutex<StdRng>,
}

impl DelayFilter {
    /// Delays each message with probability `rate` by a random time up to `max`.
    pub fn new(rate: f64, max: Duration, seed: u64) -> DelayFilter {
        DelayFilter {
            rate,
            max,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
}

impl Filter for DelayFilter {
    fn before(&self, _msg: &RaftMessage) -> FilterAction {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        if rng.gen_bool(self.rate) {
            let ms = rng.gen_range(0..=self.max.as_millis() as u64);
            FilterAction::Delay(Duration::from_millis(ms))
        } else {
            FilterAction::Pass
        }
    }
}

/// Drops raft messages of the given types (e.g. all heartbeats, or all appends).
pub struct MessageTypeFilter {
    types: Vec<MessageType>,
}

impl MessageTypeFilter {
    /// Drops messages whose raft type is one of `types`.
    pub fn new(types: &[MessageType]) -> MessageTypeFilter {
        MessageTypeFilter {
            types: types.to_vec(),
        }
    }
}

impl Filter for MessageTypeFilter {
    fn before(&self, msg: &RaftMessage) -> FilterAction {
        match eraftpb::Message::parse_from_bytes(&msg.message) {
            Ok(m) if self.types.contains(&m.get_msg_type()) => FilterAction::Drop,
            _ => FilterAction::Pass,
        }
    }
}

/// Applies an inner filter only to the messages of one region.
pub struct RegionFilter {
    region_id: u64,
    inner: Box<dyn Filter>,
}

impl RegionFilter {
    /// `inner` for the messages of `region_id`; others pass.
    pub fn new(region_id: u64, inner: Box<dyn Filter>) -> RegionFilter {
        RegionFilter { region_id, inner }
    }
}

impl Filter for RegionFilter {
    fn before(&self, msg: &RaftMessage) -> FilterAction {
        if msg.region_id == self.region_id {
            self.inner.before(msg)
        } else {
            FilterAction::Pass
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::metapb::Peer;

    fn msg(from: u64, to: u64, region_id: u64, ty: MessageType) -> RaftMessage {
        let mut m = eraftpb::Message::default();
        m.set_msg_type(ty);
        RaftMessage {
            region_id,
            from_peer: Some(Peer {
                id: from,
                store_id: from,
                role: 0,
            }),
            to_peer: Some(Peer {
                id: to,
                store_id: to,
                role: 0,
            }),
            message: m.write_to_bytes().unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn filters_decide_by_store_type_and_region_2b() {
        let p = PartitionFilter::new(&[1, 2], &[3]);
        assert_eq!(
            p.before(&msg(1, 3, 1, MessageType::MsgAppend)),
            FilterAction::Drop
        );
        assert_eq!(
            p.before(&msg(3, 2, 1, MessageType::MsgAppend)),
            FilterAction::Drop
        );
        assert_eq!(
            p.before(&msg(1, 2, 1, MessageType::MsgAppend)),
            FilterAction::Pass
        );
        let i = IsolationFilter(2);
        assert_eq!(
            i.before(&msg(2, 1, 1, MessageType::MsgAppend)),
            FilterAction::Drop
        );
        assert_eq!(
            i.before(&msg(3, 1, 1, MessageType::MsgAppend)),
            FilterAction::Pass
        );
        let t = MessageTypeFilter::new(&[MessageType::MsgHeartbeat]);
        assert_eq!(
            t.before(&msg(1, 2, 1, MessageType::MsgHeartbeat)),
            FilterAction::Drop
        );
        assert_eq!(
            t.before(&msg(1, 2, 1, MessageType::MsgAppend)),
            FilterAction::Pass
        );
        let r = RegionFilter::new(7, Box::new(IsolationFilter(1)));
        assert_eq!(
            r.before(&msg(1, 2, 7, MessageType::MsgAppend)),
            FilterAction::Drop
        );
        assert_eq!(
            r.before(&msg(1, 2, 8, MessageType::MsgAppend)),
            FilterAction::Pass
        );
    }

    #[test]
    fn drop_filter_is_seeded_and_near_its_rate_2b() {
        let run = |seed| {
            let f = DropFilter::new(0.3, seed);
            (0..1000)
                .map(|_| f.before(&msg(1, 2, 1, MessageType::MsgAppend)) == FilterAction::Drop)
                .collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42));
        let dropped = a.iter().filter(|d| **d).count();
        assert!(
            (200..400).contains(&dropped),
            "dropped {dropped} of 1000 at rate 0.3"
        );
    }
}
