//! One log entry per round for a leader's plain writes. The puts and deletes a region's leader
//! receives in one round of the raft worker wait in [`PendingWrites`] and are proposed together,
//! as one command, when the round collects the peer's `Ready` (or sooner, before any other
//! proposal, so the log keeps their arrival order). The log, the followers and the raft engines
//! then handle one entry for them instead of one each, and raft sends one append per follower.
//!
//! An entry applies whole or not at all (`exec_requests` validates every request first and the
//! apply checks the region once for the entry), so one answer serves every writer: each gets its
//! own part of the responses, and an error (an epoch change, a lost leadership) goes to all of
//! them, none of whose writes applied.
//!
//! Only commands that cannot fail on their own at apply join a batch: puts and deletes into known
//! column families. A `Cas` or a `Get` inside a write reads the engine and answers for itself, and
//! admin commands change the region: those are proposed alone.

use proto::raft_cmdpb::{RaftCmdRequest, RaftCmdResponse};

use crate::error::Error;
use crate::msg::{Callback, CmdResponse};

/// Bytes of commands one batched entry carries at most; a command that would pass it starts the
/// next entry. Well under the raft message bound, so an append carries a few such entries.
pub(super) const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The plain writes waiting to be proposed as one entry.
#[derive(Default)]
pub(crate) struct PendingWrites {
    req: Option<RaftCmdRequest>,
    /// Each writer's callback and how many requests of `req` are its own, in order.
    parts: Vec<(Callback, usize)>,
    bytes: usize,
}

impl PendingWrites {
    /// Whether `req` may share an entry with other writers' commands.
    pub(super) fn batchable(req: &RaftCmdRequest) -> bool {
        req.admin_request.is_none()
            && !req.requests.is_empty()
            && req
                .requests
                .iter()
                .all(|r| crate::cmd::Cmd::decode(r).is_ok_and(|c| c.plain_write()))
    }

    /// Whether nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// How many commands wait.
    pub(super) fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether `req` (`len` bytes encoded) may join the waiting writes: it names the same region
    /// epoch, so the apply's one check of the entry is the check each command would have had,
    /// and the entry stays within [`MAX_BATCH_BYTES`].
    pub(super) fn fits(&self, req: &RaftCmdRequest, len: usize) -> bool {
        let Some(batch) = &self.req else {
            return true;
        };
        let epoch = |r: &RaftCmdRequest| r.header.as_ref().and_then(|h| h.region_epoch);
        epoch(batch) == epoch(req) && self.bytes + len <= MAX_BATCH_BYTES
    }

    /// Adds `req` (`len` bytes encoded), answered through `cb`. The caller checked it with
    /// [`PendingWrites::batchable`] and [`PendingWrites::fits`].
    pub(super) fn push(&mut self, req: RaftCmdRequest, len: usize, cb: Callback) {
        self.bytes += len;
        self.parts.push((cb, req.requests.len()));
        match &mut self.req {
            None => self.req = Some(req),
            Some(batch) => batch.requests.extend(req.requests),
        }
    }

    /// Takes the waiting writes as one command and the callback that answers each writer, or
    /// `None` when nothing waits. A single command comes back as it was.
    pub(super) fn take(&mut self) -> Option<(RaftCmdRequest, Callback)> {
        let mut req = self.req.take()?;
        self.bytes = 0;
        let mut parts = std::mem::take(&mut self.parts);
        if parts.len() == 1 {
            let (cb, _) = parts.pop().expect("one part");
            return Some((req, cb));
        }
        // Each command's term was checked when it arrived; the entry is proposed in this term.
        if let Some(h) = req.header.as_mut() {
            h.term = 0;
        }
        Some((req, Callback::new(move |resp| answer_parts(resp, parts))))
    }

    /// Answers every waiting writer with the error `err` makes: the writes were never proposed.
    pub(super) fn fail_all(&mut self, err: impl Fn() -> Error, term: u64) {
        self.req = None;
        self.bytes = 0;
        for (cb, _) in std::mem::take(&mut self.parts) {
            cb.invoke_with_error(err(), term);
        }
    }
}

/// Gives each writer of a batched entry its part of `resp`: its own responses, or the entry's
/// error.
fn answer_parts(resp: CmdResponse, parts: Vec<(Callback, usize)>) {
    let CmdResponse { response, .. } = resp;
    let expected: usize = parts.iter().map(|(_, n)| n).sum();
    let failed = response.header.as_ref().is_some_and(|h| h.error.is_some());
    if failed || response.responses.len() != expected {
        let term = response.header.as_ref().map_or(0, |h| h.current_term);
        let answer = if failed {
            response
        } else {
            // `exec_requests` answers each request of an entry it applied: this cannot happen.
            let err = Error::Other(format!(
                "a batched write entry was answered with {} responses for {expected} requests",
                response.responses.len()
            ));
            CmdResponse::from_error(err, term).response
        };
        for (cb, _) in parts {
            cb.invoke(CmdResponse {
                response: answer.clone(),
                snapshot: None,
            });
        }
        return;
    }
    let mut responses = response.responses.into_iter();
    for (cb, n) in parts {
        cb.invoke(CmdResponse {
            response: RaftCmdResponse {
                header: response.header.clone(),
                responses: responses.by_ref().take(n).collect(),
                admin_response: None,
            },
            snapshot: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use prost::Message as _;
    use proto::metapb::RegionEpoch;
    use proto::raft_cmdpb::{
        CasRequest, CmdType, DeleteRequest, PutRequest, PutResponse, RaftRequestHeader, Request,
        Response,
    };

    use super::*;

    fn put(key: &str, cf: &str) -> Request {
        Request {
            cmd_type: CmdType::Put as i32,
            put: Some(PutRequest {
                cf: cf.to_string(),
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
            }),
            ..Default::default()
        }
    }

    fn delete(key: &str) -> Request {
        Request {
            cmd_type: CmdType::Delete as i32,
            delete: Some(DeleteRequest {
                cf: "default".to_string(),
                key: key.as_bytes().to_vec(),
            }),
            ..Default::default()
        }
    }

    fn command(version: u64, requests: Vec<Request>) -> RaftCmdRequest {
        RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: 1,
                region_epoch: Some(RegionEpoch {
                    conf_ver: 1,
                    version,
                }),
                term: 7,
                ..Default::default()
            }),
            requests,
            admin_request: None,
        }
    }

    /// A callback that hands its answer to the returned receiver.
    fn recorder() -> (Callback, mpsc::Receiver<CmdResponse>) {
        let (tx, rx) = mpsc::channel();
        (
            Callback::new(move |r| {
                let _ = tx.send(r);
            }),
            rx,
        )
    }

    fn push(w: &mut PendingWrites, req: RaftCmdRequest) -> mpsc::Receiver<CmdResponse> {
        let (cb, rx) = recorder();
        let len = req.encoded_len();
        assert!(PendingWrites::batchable(&req) && w.fits(&req, len));
        w.push(req, len, cb);
        rx
    }

    fn put_responses(n: usize) -> Vec<Response> {
        (0..n)
            .map(|_| Response {
                cmd_type: CmdType::Put as i32,
                put: Some(PutResponse {}),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn only_puts_and_deletes_into_known_cfs_are_batchable_2b() {
        assert!(PendingWrites::batchable(&command(
            1,
            vec![put("a", "default"), delete("b"), put("c", "lock")]
        )));
        assert!(!PendingWrites::batchable(&command(1, vec![])));
        assert!(!PendingWrites::batchable(&command(
            1,
            vec![put("a", "nope")]
        )));
        let cas = Request {
            cmd_type: CmdType::Cas as i32,
            cas: Some(CasRequest::default()),
            ..Default::default()
        };
        assert!(!PendingWrites::batchable(&command(
            1,
            vec![put("a", "default"), cas]
        )));
        let mut admin = command(1, vec![]);
        admin.admin_request = Some(Default::default());
        assert!(!PendingWrites::batchable(&admin));
    }

    #[test]
    fn commands_of_one_epoch_share_an_entry_and_each_writer_gets_its_part_2b() {
        let mut w = PendingWrites::default();
        assert!(w.take().is_none());
        let a = push(&mut w, command(1, vec![put("a", "default")]));
        let b = push(
            &mut w,
            command(1, vec![put("b", "default"), put("c", "default")]),
        );
        assert!(!w.fits(&command(2, vec![put("d", "default")]), 10));
        let (req, cb) = w.take().expect("two commands wait");
        assert!(w.is_empty() && w.take().is_none());
        let keys: Vec<_> = req
            .requests
            .iter()
            .map(|r| r.put.clone().unwrap().key)
            .collect();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(req.header.unwrap().term, 0);
        let mut resp = CmdResponse::from_error(Error::StaleCommand, 3);
        resp.response.header.as_mut().unwrap().error = None;
        resp.response.responses = put_responses(3);
        cb.invoke(resp);
        assert_eq!(a.recv().unwrap().response.responses.len(), 1);
        let b = b.recv().unwrap().response;
        assert_eq!((b.responses.len(), b.header.unwrap().current_term), (2, 3));
    }

    #[test]
    fn an_error_or_a_short_answer_reaches_every_writer_2b() {
        for responses in [None, Some(1)] {
            let mut w = PendingWrites::default();
            let a = push(&mut w, command(1, vec![put("a", "default")]));
            let b = push(&mut w, command(1, vec![delete("b")]));
            let (_, cb) = w.take().unwrap();
            let mut resp = CmdResponse::from_error(Error::StaleCommand, 3);
            if let Some(n) = responses {
                resp.response.header.as_mut().unwrap().error = None;
                resp.response.responses = put_responses(n);
            }
            cb.invoke(resp);
            for rx in [a, b] {
                let r = rx.recv().unwrap().response;
                assert!(r.responses.is_empty());
                assert!(r.header.unwrap().error.is_some(), "{responses:?}");
            }
        }
    }

    #[test]
    fn a_single_command_is_proposed_as_it_came_and_the_byte_bound_holds_2b() {
        let mut w = PendingWrites::default();
        let req = command(1, vec![put("a", "default")]);
        let _a = push(&mut w, req.clone());
        assert!(!w.fits(&req, MAX_BATCH_BYTES));
        assert_eq!(
            w.take().unwrap().0,
            req,
            "the term check stays for a lone command"
        );
        let a = push(&mut w, req.clone());
        w.fail_all(|| Error::RegionNotFound(1), 4);
        assert!(w.is_empty());
        let r = a.recv().unwrap().response.header.unwrap();
        assert!(r.error.unwrap().region_not_found.is_some());
    }
}
