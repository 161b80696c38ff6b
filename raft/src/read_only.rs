//! [`ReadOnly`]: the leader's queue of pending ReadIndex requests awaiting a quorum
//! of heartbeat acknowledgements (thesis §6.4), and [`ReadState`], the answer
//! handed to the application.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use raft_proto::eraftpb::Message;

/// The answer to a ReadIndex request: once the application applied up to
/// `index`, a read issued with context `request_ctx` is linearizable (thesis §6.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadState {
    /// The commit index at the time the request was accepted by the leader.
    pub index: u64,
    /// The context given to [`crate::RawNode::read_index`], identifying the request.
    pub request_ctx: Vec<u8>,
}

/// A pending request: its commit index and who acknowledged it.
#[derive(Debug, Clone)]
pub(crate) struct ReadIndexStatus {
    pub(crate) req: Message,
    pub(crate) index: u64,
    pub(crate) acks: BTreeSet<u64>,
}

/// Pending ReadIndex requests of a leader in `Safe` mode, in arrival order.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadOnly {
    pending: BTreeMap<Vec<u8>, ReadIndexStatus>,
    queue: VecDeque<Vec<u8>>,
}

impl ReadOnly {
    /// Queues a request made when the commit index was `index`. A request whose
    /// context is already pending is ignored.
    pub(crate) fn add_request(&mut self, index: u64, req: Message, self_id: u64) {
        let Some(ctx) = req.get_entries().first().map(|e| e.data.to_vec()) else {
            return;
        };
        if self.pending.contains_key(&ctx) {
            return;
        }
        let acks = BTreeSet::from([self_id]);
        self.pending
            .insert(ctx.clone(), ReadIndexStatus { req, index, acks });
        self.queue.push_back(ctx);
    }

    /// Records `id`'s acknowledgement of the heartbeat carrying `ctx`; returns the
    /// acknowledgers so far, or `None` for an unknown context.
    pub(crate) fn recv_ack(&mut self, id: u64, ctx: &[u8]) -> Option<&BTreeSet<u64>> {
        let status = self.pending.get_mut(ctx)?;
        status.acks.insert(id);
        Some(&status.acks)
    }

    /// Pops every request up to and including `ctx`: a heartbeat round that
    /// confirms leadership for a request confirms it for earlier ones too.
    pub(crate) fn advance(&mut self, ctx: &[u8]) -> Vec<ReadIndexStatus> {
        let Some(pos) = self.queue.iter().position(|c| c.as_slice() == ctx) else {
            return Vec::new();
        };
        self.queue
            .drain(..=pos)
            .filter_map(|c| self.pending.remove(&c))
            .collect()
    }

    /// The context of the newest pending request, sent with heartbeats.
    pub(crate) fn last_pending_request_ctx(&self) -> Option<Vec<u8>> {
        self.queue.back().cloned()
    }

    /// The number of pending requests.
    #[cfg(test)]
    pub(crate) fn pending_count(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_proto::eraftpb::Entry;

    fn req(ctx: &[u8]) -> Message {
        let mut m = Message::default();
        let mut e = Entry::default();
        e.data = ctx.to_vec().into();
        m.mut_entries().push(e);
        m
    }

    #[test]
    fn read_only_queue_advances_in_order_3a() {
        let mut ro = ReadOnly::default();
        ro.add_request(5, req(b"a"), 1);
        ro.add_request(6, req(b"b"), 1);
        ro.add_request(7, req(b"b"), 1);
        ro.add_request(8, req(b"c"), 1);
        assert_eq!(ro.pending_count(), 3);
        assert_eq!(ro.last_pending_request_ctx(), Some(b"c".to_vec()));
        assert_eq!(ro.recv_ack(2, b"b").unwrap().len(), 2);
        assert!(ro.recv_ack(2, b"zz").is_none());
        let done = ro.advance(b"b");
        let idx: Vec<u64> = done.iter().map(|s| s.index).collect();
        assert_eq!(idx, vec![5, 6]);
        assert_eq!(ro.pending_count(), 1);
        assert!(ro.advance(b"a").is_empty());
        assert_eq!(ro.advance(b"c").len(), 1);
    }
}
