//! ReadIndex (thesis §6.4): serving linearizable reads without a log entry. The
//! leader records its commit index, confirms it is still leader (a quorum of
//! heartbeat acks in `Safe` mode, its lease in `LeaseBased` mode), and answers
//! with that index; the application reads once it has applied up to it.

use raft_proto::eraftpb::{Message, MessageType};

use super::{new_message, Raft};
use crate::config::ReadOnlyOption;
use crate::read_only::ReadState;
use crate::storage::Storage;
use crate::util::INVALID_ID;

/// The context of a ReadIndex request: its first entry's data (validation
/// refuses requests without one).
fn request_ctx(m: &Message) -> Option<Vec<u8>> {
    m.get_entries().first().map(|e| e.data.to_vec())
}

impl<S: Storage> Raft<S> {
    pub(crate) fn handle_read_index_leader(&mut self, m: Message) {
        if self.prs.is_singleton() {
            let index = self.raft_log.committed;
            self.respond_read_index(m, index);
            return;
        }
        // Until the leader committed an entry of its term it does not know the
        // latest commit index (thesis §6.4 step 1).
        if !self.committed_entry_in_current_term() {
            self.pending_read_index_messages.push(m);
            return;
        }
        self.read_index_confirmed_leader(m);
    }

    fn read_index_confirmed_leader(&mut self, m: Message) {
        let index = self.raft_log.committed;
        match self.read_only_option {
            ReadOnlyOption::Safe => {
                let Some(ctx) = request_ctx(&m) else {
                    return;
                };
                self.read_only.add_request(index, m, self.id);
                self.bcast_heartbeat_with_ctx(Some(ctx));
            }
            ReadOnlyOption::LeaseBased => self.respond_read_index(m, index),
        }
    }

    fn committed_entry_in_current_term(&self) -> bool {
        self.raft_log
            .term(self.raft_log.committed)
            .is_ok_and(|t| t == self.term)
    }

    /// Answers the requests that waited for the first commit of this term.
    pub(crate) fn release_pending_read_index_messages(&mut self) {
        if self.pending_read_index_messages.is_empty() || !self.committed_entry_in_current_term() {
            return;
        }
        for m in std::mem::take(&mut self.pending_read_index_messages) {
            self.read_index_confirmed_leader(m);
        }
    }

    /// A heartbeat response carrying a ReadIndex context.
    pub(crate) fn handle_read_index_ack(&mut self, m: &Message) {
        if self.read_only_option != ReadOnlyOption::Safe {
            return;
        }
        let Some(acks) = self.read_only.recv_ack(m.from, m.get_context()) else {
            return;
        };
        if !self.prs.has_quorum(acks) {
            return;
        }
        for rs in self.read_only.advance(m.get_context()) {
            self.respond_read_index(rs.req, rs.index);
        }
    }

    fn respond_read_index(&mut self, mut req: Message, index: u64) {
        if req.from == INVALID_ID || req.from == self.id {
            if let Some(request_ctx) = request_ctx(&req) {
                self.read_states.push(ReadState { index, request_ctx });
            }
            return;
        }
        let mut resp = new_message(req.from, MessageType::MsgReadIndexResp);
        resp.index = index;
        resp.set_entries(req.take_entries());
        self.send(resp);
    }

    /// Follower side: the leader's answer to a forwarded request.
    pub(crate) fn handle_read_index_resp(&mut self, m: &Message) {
        if m.get_entries().len() != 1 {
            return;
        }
        self.read_states.push(ReadState {
            index: m.index,
            request_ctx: m.get_entries()[0].data.to_vec(),
        });
    }
}
