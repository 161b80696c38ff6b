//! [`Applier`]: applying committed plain writes on a thread of its own, so the raft worker goes
//! on stepping, persisting and sending while the kv engine takes the writes
//! (`Config::async_apply`; off, the raft worker applies every entry itself).
//!
//! ```text
//! raft worker                                         apply thread
//!   post_persist: committed entries -> peer's queue
//!   a run of plain writes (puts, deletes, empty
//!   entries) with their proposals' callbacks   --submit(seq)-->  takes every queued task,
//!   one task in flight per peer                                  one kv WriteBatch for all of
//!   ... next rounds ...                                          them (data + apply states),
//!                                                                writes it, answers the writers
//!                                             <--wake----------  results: applied state per task
//!   on_applied: applied index and term, reads,
//!   lease, then the peer's next task
//! ```
//!
//! Only entries that change nothing but data go to the thread. Anything else — admin commands
//! (split, log compaction), conf changes, commands that read inside a write (`Get`, `Snap`,
//! `Cas`) — waits for the peer's task in flight and is applied by the raft worker itself, as
//! when the thread is off: those change the region or read the engine, and the region a task
//! checks its commands against is the one it was given. So the region never changes under a
//! task, and the engine a compare-and-swap reads holds every earlier entry.
//!
//! The kv engine may hold more than a peer's applied index says (a task written, its result not
//! yet taken up): what reads the engine at an index reads the apply state from the same engine
//! snapshot (snapshot generation), and what waits on the applied index (reads, the lease of a
//! new leader) waits for the result. A snapshot received, or the peer's destruction, waits for
//! the task in flight.
//!
//! A failed kv write stops the store, as it does on the raft worker: the thread panics (the
//! process's fail-stop hook aborts it), and the raft worker, which sees the thread gone at its
//! next turn, panics too.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use kv::{keys, Engines, WriteBatch};
use proto::metapb;
use proto::raft_cmdpb::{RaftCmdRequest, RaftCmdResponse, RaftResponseHeader};
use proto::raft_serverpb::RaftApplyState;

use crate::error::Error;
use crate::metrics::StoreMetrics;
use crate::msg::{Callback, CmdResponse};
use crate::util;

/// Tasks the thread takes in one go at most (one kv write for all of them).
const MAX_TASKS_PER_WRITE: usize = 256;

/// One committed entry for the apply thread.
pub(crate) struct ApplyEntry {
    pub(crate) index: u64,
    pub(crate) term: u64,
    /// The command (plain writes only), or `None` for an empty entry (a new leader's).
    pub(crate) req: Option<RaftCmdRequest>,
    /// The proposal's callback, when this peer proposed the entry.
    pub(crate) callback: Option<Callback>,
}

/// Consecutive committed entries of one peer, starting right after `apply_state`'s index.
pub(crate) struct ApplyTask {
    pub(crate) region_id: u64,
    /// The peer's serial (`Peer::serial`), to tell its result from a later peer's.
    pub(crate) serial: u64,
    /// The region the commands are checked against (no entry of the task changes it).
    pub(crate) region: metapb::Region,
    /// The peer's term, for the responses' headers.
    pub(crate) term: u64,
    pub(crate) apply_state: RaftApplyState,
    pub(crate) entries: Vec<ApplyEntry>,
}

/// What applying a task did, for the raft worker.
#[derive(Debug)]
pub(crate) struct ApplyResult {
    pub(crate) seq: u64,
    pub(crate) region_id: u64,
    pub(crate) serial: u64,
    /// The apply state written with the task's data.
    pub(crate) apply_state: RaftApplyState,
    /// The term of the task's last entry.
    pub(crate) applied_term: u64,
}

struct State {
    /// Every task up to this sequence number is written and answered.
    done: u64,
    /// Results not yet taken by the raft worker, in order.
    results: VecDeque<ApplyResult>,
    /// The thread ended (a panic: a failed write).
    gone: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when `done` or `gone` changes.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks the thread gone when it ends, however it ends.
struct Gone<'a>(&'a Shared);

impl Drop for Gone<'_> {
    fn drop(&mut self) {
        self.0.lock().gone = true;
        self.0.changed.notify_all();
    }
}

/// The raft worker's end of the apply thread. Dropping it applies what is queued and joins the
/// thread.
pub(crate) struct Applier {
    tx: Option<Sender<(u64, ApplyTask)>>,
    shared: Arc<Shared>,
    submitted: u64,
    /// When each task not yet taken up was submitted, oldest first (for the store's health).
    outstanding: VecDeque<(u64, Instant)>,
    thread: Option<JoinHandle<()>>,
}

impl Applier {
    /// Starts store `store_id`'s apply thread over `engines`' kv engine; `wake` is called after
    /// each group of tasks so the raft worker takes up the results.
    pub(crate) fn spawn(
        store_id: u64,
        engines: Engines,
        metrics: Arc<StoreMetrics>,
        wake: impl Fn() + Send + 'static,
    ) -> std::io::Result<Applier> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                done: 0,
                results: VecDeque::new(),
                gone: false,
            }),
            changed: Condvar::new(),
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("apply-{store_id}"))
            .spawn(move || {
                let _gone = Gone(&theirs);
                run(store_id, &engines, &metrics, &rx, &theirs, wake);
            })?;
        Ok(Applier {
            tx: Some(tx),
            shared,
            submitted: 0,
            outstanding: VecDeque::new(),
            thread: Some(thread),
        })
    }

    /// Queues `task` and returns its sequence number.
    ///
    /// # Panics
    /// When the thread is gone (a kv write failed: the store stops).
    pub(crate) fn submit(&mut self, task: ApplyTask) -> u64 {
        self.submitted += 1;
        let seq = self.submitted;
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send((seq, task)).is_ok());
        if !sent {
            panic!("the apply thread is gone: a kv engine write failed");
        }
        self.outstanding.push_back((seq, Instant::now()));
        seq
    }

    /// Takes the results of the tasks applied since the last call, in order.
    ///
    /// # Panics
    /// When the thread is gone (a kv write failed: the store stops).
    pub(crate) fn take_results(&mut self) -> Vec<ApplyResult> {
        let results: Vec<ApplyResult> = {
            let mut st = self.shared.lock();
            if st.gone && st.done < self.submitted {
                panic!("the apply thread is gone: a kv engine write failed");
            }
            st.results.drain(..).collect()
        };
        if let Some(last) = results.last() {
            while self
                .outstanding
                .front()
                .is_some_and(|(s, _)| *s <= last.seq)
            {
                self.outstanding.pop_front();
            }
        }
        results
    }

    /// When the oldest task whose result the raft worker has not taken up was submitted.
    pub(crate) fn oldest_outstanding(&self) -> Option<Instant> {
        self.outstanding.front().map(|(_, at)| *at)
    }

    /// Waits until task `seq` is written and answered (its result stays queued).
    ///
    /// # Panics
    /// When the thread is gone before (a kv write failed: the store stops).
    pub(crate) fn wait(&self, seq: u64) {
        let mut st = self.shared.lock();
        while st.done < seq {
            if st.gone {
                panic!("the apply thread is gone: a kv engine write failed");
            }
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Applier {
    fn drop(&mut self) {
        // Closing the channel lets the thread apply what is queued, then end.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The apply thread: takes every queued task at once, writes their data and apply states in
/// one kv batch, answers the writers, publishes the results, wakes the raft worker.
fn run(
    store_id: u64,
    engines: &Engines,
    metrics: &StoreMetrics,
    rx: &Receiver<(u64, ApplyTask)>,
    shared: &Shared,
    wake: impl Fn(),
) {
    while let Ok(first) = rx.recv() {
        let tasks: Vec<(u64, ApplyTask)> = std::iter::once(first)
            .chain(rx.try_iter().take(MAX_TASKS_PER_WRITE - 1))
            .collect();
        let start = Instant::now();
        let mut wb = WriteBatch::new(&engines.kv);
        let mut answers = Vec::new();
        let mut results = Vec::with_capacity(tasks.len());
        for (seq, task) in tasks {
            results.push(apply_task(seq, task, &mut wb, &mut answers));
        }
        if let Err(e) = wb.write(false) {
            panic!("store {store_id}: kv engine write of applied entries failed: {e}");
        }
        metrics.on_apply(start.elapsed());
        for (cb, resp) in answers {
            cb.invoke(resp);
        }
        {
            let mut st = shared.lock();
            st.done = results.last().map_or(st.done, |r| r.seq);
            st.results.extend(results);
        }
        shared.changed.notify_all();
        wake();
    }
}

/// Adds `task`'s writes and new apply state to `wb`, and the writers' answers to `answers`.
fn apply_task(
    seq: u64,
    task: ApplyTask,
    wb: &mut WriteBatch,
    answers: &mut Vec<(Callback, CmdResponse)>,
) -> ApplyResult {
    let ApplyTask {
        region_id,
        serial,
        region,
        term,
        mut apply_state,
        entries,
    } = task;
    let mut applied_term = 0;
    for e in entries {
        if e.index != apply_state.applied_index + 1 {
            panic!(
                "region {region_id}: applying entry {} (term {}) after applied index {}",
                e.index, e.term, apply_state.applied_index
            );
        }
        let resp = e.req.map(|req| exec_writes(&req, &region, term, wb));
        apply_state.applied_index = e.index;
        applied_term = e.term;
        match (e.callback, resp) {
            (Some(cb), Some(resp)) => answers.push((cb, resp)),
            (Some(cb), None) => cb.invoke_with_error(Error::StaleCommand, e.term),
            _ => {}
        }
    }
    wb.put_msg(&keys::apply_state_key(region_id), &apply_state);
    ApplyResult {
        seq,
        region_id,
        serial,
        apply_state,
        applied_term,
    }
}

/// Executes a command of plain writes (checked by `peer::apply::async_command`) into `wb`.
fn exec_writes(
    req: &RaftCmdRequest,
    region: &metapb::Region,
    term: u64,
    wb: &mut WriteBatch,
) -> CmdResponse {
    if let Err(err) = util::check_request(req, region) {
        return CmdResponse::from_error(err, term);
    }
    let mut responses = Vec::with_capacity(req.requests.len());
    for r in &req.requests {
        match crate::cmd::exec_write(r, wb) {
            Ok(Some(resp)) => responses.push(resp),
            Ok(None) => {
                let err = Error::Other(format!(
                    "region {}: command type {} is not a write",
                    region.id, r.cmd_type
                ));
                return CmdResponse::from_error(err, term);
            }
            Err(err) => return CmdResponse::from_error(err, term),
        }
    }
    CmdResponse {
        response: RaftCmdResponse {
            header: Some(RaftResponseHeader {
                current_term: term,
                ..Default::default()
            }),
            responses,
            admin_response: None,
        },
        snapshot: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use kv::Cf;
    use proto::raft_cmdpb::{CmdType, PutRequest, RaftRequestHeader, Request};
    use proto::raft_serverpb::RaftTruncatedState;

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn region(id: u64, version: u64) -> metapb::Region {
        metapb::Region {
            id,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version,
            }),
            peers: vec![metapb::Peer {
                id,
                store_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn puts(region: &metapb::Region, kvs: &[(&str, &str)]) -> RaftCmdRequest {
        RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: region.id,
                region_epoch: region.region_epoch,
                ..Default::default()
            }),
            requests: kvs
                .iter()
                .map(|(k, v)| Request {
                    cmd_type: CmdType::Put as i32,
                    put: Some(PutRequest {
                        cf: Cf::Default.name().to_string(),
                        key: k.as_bytes().to_vec(),
                        value: v.as_bytes().to_vec(),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn apply_state(applied: u64) -> RaftApplyState {
        RaftApplyState {
            applied_index: applied,
            truncated_state: Some(RaftTruncatedState { index: 5, term: 5 }),
        }
    }

    /// A callback that hands its response to the returned receiver.
    fn answer() -> (Callback, mpsc::Receiver<CmdResponse>) {
        let (tx, rx) = mpsc::channel();
        let cb = Callback::new(move |resp| {
            let _ = tx.send(resp);
        });
        (cb, rx)
    }

    fn entry(index: u64, req: Option<RaftCmdRequest>, cb: Option<Callback>) -> ApplyEntry {
        ApplyEntry {
            index,
            term: 6,
            req,
            callback: cb,
        }
    }

    fn task(region: &metapb::Region, applied: u64, entries: Vec<ApplyEntry>) -> ApplyTask {
        ApplyTask {
            region_id: region.id,
            serial: 7,
            region: region.clone(),
            term: 6,
            apply_state: apply_state(applied),
            entries,
        }
    }

    fn error_of(resp: &CmdResponse) -> Option<String> {
        let header = resp.response.header.as_ref()?;
        header.error.as_ref().map(|e| e.message.clone())
    }

    fn start() -> (tempfile::TempDir, Engines, Applier, mpsc::Receiver<()>) {
        let dir = tempfile::tempdir().unwrap();
        let engines = Engines::open(dir.path()).unwrap();
        let (wake_tx, wake) = mpsc::channel();
        let wake_tx = Mutex::new(wake_tx);
        let applier = Applier::spawn(1, engines.clone(), Arc::default(), move || {
            let _ = wake_tx.lock().unwrap().send(());
        })
        .unwrap();
        (dir, engines, applier, wake)
    }

    fn get(engines: &Engines, key: &str) -> Option<Vec<u8>> {
        kv::engine::get_cf(&engines.kv, Cf::Default, &keys::data_key(key.as_bytes())).unwrap()
    }

    fn stored_applied(engines: &Engines, region_id: u64) -> u64 {
        kv::engine::get_msg::<RaftApplyState>(&engines.kv, &keys::apply_state_key(region_id))
            .unwrap()
            .expect("an apply state")
            .applied_index
    }

    /// Two regions' tasks: the data and each region's apply state land, every writer is answered
    /// after the write, and the results come back in order with the applied index and term.
    #[test]
    fn tasks_write_data_and_apply_state_then_answer_2b() {
        let (_dir, engines, mut applier, wake) = start();
        let (r1, r2) = (region(1, 1), region(2, 1));
        let (cb1, rx1) = answer();
        let (cb2, rx2) = answer();
        let s1 = applier.submit(task(
            &r1,
            5,
            vec![
                entry(6, None, None),
                entry(7, Some(puts(&r1, &[("a", "1"), ("b", "2")])), Some(cb1)),
            ],
        ));
        let s2 = applier.submit(task(
            &r2,
            9,
            vec![entry(10, Some(puts(&r2, &[("c", "3")])), Some(cb2))],
        ));
        let resp = rx1.recv_timeout(WAIT).unwrap();
        assert_eq!(error_of(&resp), None);
        assert_eq!(resp.response.responses.len(), 2);
        assert_eq!(error_of(&rx2.recv_timeout(WAIT).unwrap()), None);
        applier.wait(s2);
        wake.recv_timeout(WAIT).unwrap();
        let results = applier.take_results();
        let got: Vec<_> = results
            .iter()
            .map(|r| {
                (
                    r.seq,
                    r.region_id,
                    r.apply_state.applied_index,
                    r.applied_term,
                )
            })
            .collect();
        assert_eq!(got, vec![(s1, 1, 7, 6), (s2, 2, 10, 6)]);
        assert_eq!(applier.oldest_outstanding(), None);
        assert_eq!(get(&engines, "a").as_deref(), Some(&b"1"[..]));
        assert_eq!(get(&engines, "c").as_deref(), Some(&b"3"[..]));
        assert_eq!(stored_applied(&engines, 1), 7);
        assert_eq!(stored_applied(&engines, 2), 10);
    }

    /// A command of a stale epoch is answered with the error and writes nothing, and an empty
    /// entry that took a proposal's index tells its writer the command is stale; both still
    /// advance the applied index.
    #[test]
    fn refused_and_stale_entries_answer_and_advance_2b() {
        let (_dir, engines, mut applier, _wake) = start();
        let old = region(1, 1);
        let now = region(1, 2);
        let (stale_epoch, rx1) = answer();
        let (overwritten, rx2) = answer();
        let seq = applier.submit(task(
            &now,
            5,
            vec![
                entry(6, Some(puts(&old, &[("a", "1")])), Some(stale_epoch)),
                entry(7, None, Some(overwritten)),
            ],
        ));
        let err = error_of(&rx1.recv_timeout(WAIT).unwrap()).expect("refused");
        assert!(err.contains("epoch"), "{err}");
        let err = error_of(&rx2.recv_timeout(WAIT).unwrap()).expect("stale");
        assert!(err.contains("stale"), "{err}");
        applier.wait(seq);
        assert_eq!(get(&engines, "a"), None);
        assert_eq!(stored_applied(&engines, 1), 7);
    }

    /// Dropping the applier (the raft worker ends) applies and answers what is queued.
    #[test]
    fn drop_applies_what_is_queued_2b() {
        let (_dir, engines, mut applier, _wake) = start();
        let r = region(1, 1);
        let mut answers = Vec::new();
        for i in 0..50u64 {
            let (cb, rx) = answer();
            answers.push(rx);
            let key = format!("k{i}");
            let req = puts(&r, &[(key.as_str(), "v")]);
            applier.submit(task(&r, 5 + i, vec![entry(6 + i, Some(req), Some(cb))]));
        }
        drop(applier);
        for rx in answers {
            assert_eq!(error_of(&rx.try_recv().expect("answered")), None);
        }
        assert_eq!(stored_applied(&engines, 1), 55);
    }

    /// An entry out of order is a broken invariant: the thread stops (in a server the panic
    /// aborts the process), and the raft worker's next look at it stops the store too rather
    /// than wait for results that never come.
    #[test]
    fn a_dead_thread_stops_the_raft_worker_2b() {
        let (_dir, _engines, mut applier, _wake) = start();
        let r = region(1, 1);
        let seq = applier.submit(task(&r, 5, vec![entry(9, None, None)]));
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| applier.wait(seq)));
        assert!(waited.is_err(), "waiting on a dead thread panics");
        let taken =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| applier.take_results()));
        assert!(taken.is_err(), "taking results from a dead thread panics");
    }
}
