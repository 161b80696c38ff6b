//! Small helpers shared by the core: size limits, message classification and the
//! deterministic random generator used for election timeouts.

use protobuf::Message as _;
use raft_proto::eraftpb::{Entry, MessageType};

/// A byte or count limit meaning "no limit".
pub const NO_LIMIT: u64 = u64::MAX;

/// The id meaning "no node" (no leader, no vote).
pub const INVALID_ID: u64 = 0;

/// The context of a vote request sent on a leadership transfer: it bypasses the
/// receiver's leader lease (thesis §3.10).
pub(crate) const CAMPAIGN_TRANSFER: &[u8] = b"CampaignTransfer";

/// The encoded size of an entry, as counted against message size limits.
pub(crate) fn entry_size(e: &Entry) -> u64 {
    u64::from(e.compute_size())
}

/// Truncates `entries` so their total size is at most `max` bytes, keeping at
/// least one entry so progress is always possible.
pub(crate) fn limit_size(entries: &mut Vec<Entry>, max: u64) {
    if max == NO_LIMIT || entries.len() <= 1 {
        return;
    }
    let mut size = 0;
    let keep = entries
        .iter()
        .take_while(|e| {
            size += entry_size(e);
            size <= max
        })
        .count();
    entries.truncate(keep.max(1));
}

/// Messages the node generates for itself; a peer may never send them.
pub(crate) fn is_local_msg(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::MsgHup
            | MessageType::MsgBeat
            | MessageType::MsgUnreachable
            | MessageType::MsgSnapStatus
            | MessageType::MsgCheckQuorum
    )
}

/// Messages that answer a request of the receiver.
pub(crate) fn is_response_msg(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::MsgAppendResponse
            | MessageType::MsgRequestVoteResponse
            | MessageType::MsgHeartbeatResponse
            | MessageType::MsgUnreachable
            | MessageType::MsgRequestPreVoteResponse
    )
}

/// Messages that may only leave the node once the entries and hard state of the
/// same `Ready` are durable: they promise something about the durable state (a
/// vote, an appended log). A leader's appends are not among them, which lets it
/// replicate while it persists its own log (thesis §10.2.1).
pub(crate) fn needs_persistence(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::MsgAppendResponse
            | MessageType::MsgRequestVote
            | MessageType::MsgRequestVoteResponse
            | MessageType::MsgRequestPreVote
            | MessageType::MsgRequestPreVoteResponse
    )
}

/// The response type of a (pre-)vote request type.
pub(crate) fn vote_resp_msg_type(t: MessageType) -> MessageType {
    match t {
        MessageType::MsgRequestVote => MessageType::MsgRequestVoteResponse,
        MessageType::MsgRequestPreVote => MessageType::MsgRequestPreVoteResponse,
        _ => panic!("not a vote message: {t:?}"),
    }
}

/// A small deterministic generator (SplitMix64). The core must not read clocks or
/// global randomness, so a node's election timeouts are a function of its seed. Exported for
/// the project's seeded harnesses and workloads, which need the same kind of generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose sequence is a function of `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `[lo, hi)`; `lo` when the range is empty.
    pub fn gen_range(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + (self.next_u64() % (hi - lo) as u64) as usize
    }

    /// A value in `[0, n)` (0 when `n` is 0), up to a negligible bias.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, len: usize) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.data = vec![0u8; len].into();
        e
    }

    #[test]
    fn limit_size_keeps_at_least_one_2ab() {
        let mut ents: Vec<Entry> = (1..=5).map(|i| entry(i, 100)).collect();
        let one = entry_size(&ents[0]);
        limit_size(&mut ents, NO_LIMIT);
        assert_eq!(ents.len(), 5);
        limit_size(&mut ents, one * 3);
        assert_eq!(ents.len(), 3);
        limit_size(&mut ents, one * 3 - 1);
        assert_eq!(ents.len(), 2);
        limit_size(&mut ents, 0);
        assert_eq!(ents.len(), 1);
    }

    #[test]
    fn prng_is_deterministic_and_in_range_2aa() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..1000 {
            let x = a.gen_range(10, 20);
            assert_eq!(x, b.gen_range(10, 20));
            assert!((10..20).contains(&x));
        }
        assert_eq!(SplitMix64::new(1).gen_range(5, 5), 5);
    }
}
