//! [`LogWriter`]: the raft worker's raft-engine writes, made either on the worker's own thread
//! (the default) or on a thread of their own, so the worker goes on stepping peers, sending
//! messages and applying while the disk syncs (`Config::async_log_writes`).
//!
//! The worker handles both the same way: it hands each round's batch to the writer with a
//! sequence number and finishes the round once the writer has written it. Inline, that is at
//! once. On the writer thread:
//!
//! ```text
//! raft worker                                   writer thread
//!   a round's readies -> one WriteBatch  --submit(seq)-->  waits for tasks
//!   keeps the readies as in flight                        writes every queued batch in order,
//!   ... next rounds: step, send, collect, submit ...      syncing only the last one (group commit)
//!                                        <--wake--------  written = its last seq
//!   finishes each round whose seq <= written, in order
//! ```
//!
//! Batches are written in the order they were submitted and finished in that order, so a
//! peer's readies are persisted, then applied, in order however many are in flight. A sync
//! covers every write before it, so a batch that did not ask for a sync may ride on a later
//! one's. Whatever reads or writes the raft engine beside this pipe (creating a peer from the
//! engines, destroying one) first waits with [`LogWriter::wait_all`].
//!
//! The thread pays when a sync takes long (a network disk): measured on a local SSD whose sync
//! takes 0.12–0.17 ms, the two thread hand-offs per round cost more than the overlap gains (see
//! the README's Benchmarks), so it is off by default.
//!
//! A write that fails stops the writer: nothing after it is written (it could depend on what
//! failed), and the raft worker, which sees the failure at its next turn, stops the store as it
//! would have had it written the batch itself.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::metrics::StoreMetrics;

/// A batch the writer can make durable. The raft worker's batches are [`RaftBatch`]es; tests use
/// their own.
pub(crate) trait Persist: Send + 'static {
    /// Writes the batch; with `sync`, it and every earlier write are durable on return.
    fn persist(&mut self, sync: bool) -> Result<(), String>;
}

/// A round's raft-log batch and the engine it goes to.
pub(crate) struct RaftBatch {
    pub(crate) engine: Arc<dyn raftlog::RaftEngine>,
    pub(crate) batch: raftlog::LogBatch,
}

impl Persist for RaftBatch {
    fn persist(&mut self, sync: bool) -> Result<(), String> {
        self.engine
            .write(&self.batch, sync)
            .map_err(|e| e.to_string())
    }
}

struct Task<B> {
    seq: u64,
    batch: B,
    sync: bool,
}

struct State<B> {
    queue: VecDeque<Task<B>>,
    /// Every batch up to this sequence number is written (and synced where asked).
    written: u64,
    /// The write that stopped the writer.
    failed: Option<String>,
    /// The raft worker is gone: write what is queued, then end.
    closed: bool,
}

struct Shared<B> {
    state: Mutex<State<B>>,
    /// Signalled when a task is queued or the writer is closed.
    queued: Condvar,
    /// Signalled when `written` or `failed` changes.
    done: Condvar,
    /// Counts the syncs actually made (a group shares one).
    metrics: Arc<StoreMetrics>,
}

impl<B> Shared<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The raft worker's writer. With a thread, dropping it writes what is queued and joins the
/// thread.
pub(crate) struct LogWriter<B: Persist = RaftBatch> {
    shared: Arc<Shared<B>>,
    submitted: u64,
    /// None: batches are written inline, in [`LogWriter::submit`].
    thread: Option<JoinHandle<()>>,
}

fn new_shared<B>(metrics: Arc<StoreMetrics>) -> Arc<Shared<B>> {
    Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            written: 0,
            failed: None,
            closed: false,
        }),
        queued: Condvar::new(),
        done: Condvar::new(),
        metrics,
    })
}

/// Writes `batch`, and records how long it took and the sync if it made one.
fn persist<B: Persist>(batch: &mut B, sync: bool, metrics: &StoreMetrics) -> Result<(), String> {
    let start = std::time::Instant::now();
    batch.persist(sync)?;
    metrics.on_raft_persist(start.elapsed(), sync);
    Ok(())
}

impl<B: Persist> LogWriter<B> {
    /// A writer that writes each batch on the caller's thread, when it is submitted.
    pub(crate) fn inline(metrics: Arc<StoreMetrics>) -> LogWriter<B> {
        LogWriter {
            shared: new_shared(metrics),
            submitted: 0,
            thread: None,
        }
    }

    /// Starts the writer thread of store `store_id`; `wake` is called after each group of writes
    /// (or a failure) so the raft worker takes up the finished rounds.
    pub(crate) fn spawn(
        store_id: u64,
        metrics: Arc<StoreMetrics>,
        wake: impl Fn() + Send + 'static,
    ) -> std::io::Result<LogWriter<B>> {
        let shared = new_shared(metrics);
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("raftlog-{store_id}"))
            .spawn(move || run(&theirs, wake))?;
        Ok(LogWriter {
            shared,
            submitted: 0,
            thread: Some(thread),
        })
    }

    /// Queues `batch` for writing (synced if `sync`), or writes it when inline, and returns its
    /// sequence number.
    pub(crate) fn submit(&mut self, mut batch: B, sync: bool) -> u64 {
        self.submitted += 1;
        let seq = self.submitted;
        if self.thread.is_none() {
            if self.shared.lock().failed.is_some() {
                // Nothing after a failed write is written.
                return seq;
            }
            let outcome = persist(&mut batch, sync, &self.shared.metrics);
            let mut st = self.shared.lock();
            match outcome {
                Ok(()) => st.written = seq,
                Err(e) => st.failed = Some(e),
            }
            return seq;
        }
        self.shared
            .lock()
            .queue
            .push_back(Task { seq, batch, sync });
        self.shared.queued.notify_one();
        seq
    }

    /// The sequence number of the last batch submitted (0 before the first).
    pub(crate) fn submitted(&self) -> u64 {
        self.submitted
    }

    /// The sequence number up to which every batch is written, or the failure that stopped the
    /// writer.
    pub(crate) fn written(&self) -> Result<u64, String> {
        let st = self.shared.lock();
        match &st.failed {
            Some(e) => Err(e.clone()),
            None => Ok(st.written),
        }
    }

    /// Waits until every batch submitted so far is written; the failure that stopped the writer
    /// otherwise.
    pub(crate) fn wait_all(&self) -> Result<u64, String> {
        let mut st = self.shared.lock();
        loop {
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.written >= self.submitted {
                return Ok(st.written);
            }
            st = self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl<B: Persist> Drop for LogWriter<B> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.queued.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: takes every queued task at once, writes them in order with one sync at
/// the end if any asked for one, publishes the last sequence number, wakes the raft worker.
fn run<B: Persist>(shared: &Shared<B>, wake: impl Fn()) {
    loop {
        let group: Vec<Task<B>> = {
            let mut st = shared.lock();
            while st.queue.is_empty() && !st.closed {
                st = shared.queued.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.queue.is_empty() {
                return;
            }
            st.queue.drain(..).collect()
        };
        let sync = group.iter().any(|t| t.sync);
        let last = group.len() - 1;
        let mut outcome = Ok(0);
        for (i, mut task) in group.into_iter().enumerate() {
            match persist(&mut task.batch, sync && i == last, &shared.metrics) {
                Ok(()) => outcome = Ok(task.seq),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let failed = outcome.is_err();
        {
            let mut st = shared.lock();
            match outcome {
                Ok(seq) => st.written = seq,
                Err(e) => st.failed = Some(e),
            }
        }
        shared.done.notify_all();
        wake();
        if failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A batch that records the order and sync flag of its writes, and can be made to block
    /// or fail.
    struct Probe {
        id: u64,
        log: Arc<Mutex<Vec<(u64, bool)>>>,
        /// Says the write started, then waits to be let through.
        gate: Option<(
            crossbeam_channel::Sender<()>,
            crossbeam_channel::Receiver<()>,
        )>,
        fail: bool,
    }

    impl Persist for Probe {
        fn persist(&mut self, sync: bool) -> Result<(), String> {
            if let Some((started, open)) = &self.gate {
                let _ = started.send(());
                let _ = open.recv();
            }
            if self.fail {
                return Err(format!("batch {} failed", self.id));
            }
            self.log.lock().unwrap().push((self.id, sync));
            Ok(())
        }
    }

    fn probe(id: u64, log: &Arc<Mutex<Vec<(u64, bool)>>>) -> Probe {
        Probe {
            id,
            log: log.clone(),
            gate: None,
            fail: false,
        }
    }

    #[test]
    fn batches_queued_behind_a_slow_write_share_one_sync_in_order_2b() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let metrics = Arc::new(StoreMetrics::default());
        let mut writer = LogWriter::spawn(1, metrics.clone(), move || {
            w.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        let (started_tx, started) = crossbeam_channel::bounded(1);
        let (open, gate) = crossbeam_channel::bounded(0);
        let mut first = probe(1, &log);
        first.gate = Some((started_tx, gate));
        assert_eq!(writer.submit(first, true), 1);
        started.recv().unwrap();
        // The writer holds batch 1 at its gate while three more are queued: a synced one
        // between two that need no sync.
        assert_eq!(writer.submit(probe(2, &log), false), 2);
        assert_eq!(writer.submit(probe(3, &log), true), 3);
        assert_eq!(writer.submit(probe(4, &log), false), 4);
        assert_eq!(writer.written(), Ok(0));
        open.send(()).unwrap();
        assert_eq!(writer.wait_all(), Ok(4));
        assert_eq!(writer.submitted(), 4);
        // In order; of the three queued together only the last syncs, which covers batch 3.
        assert_eq!(
            *log.lock().unwrap(),
            vec![(1, true), (2, false), (3, false), (4, true)]
        );
        // The store counts the two syncs made, not the three asked for.
        assert_eq!(metrics.raft_engine_syncs(), 2);
        // The raft worker is woken after each group (the first batch, then the three), once
        // `written` has moved.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while wakes.load(Ordering::SeqCst) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the worker was not woken twice"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_failed_write_stops_the_writer_and_is_reported_2b() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut writer = LogWriter::spawn(1, Arc::default(), || {}).unwrap();
        let (started_tx, started) = crossbeam_channel::bounded(1);
        let (open, gate) = crossbeam_channel::bounded(0);
        let mut first = probe(1, &log);
        first.gate = Some((started_tx, gate));
        writer.submit(first, true);
        started.recv().unwrap();
        let mut bad = probe(2, &log);
        bad.fail = true;
        writer.submit(bad, true);
        writer.submit(probe(3, &log), true);
        open.send(()).unwrap();
        assert_eq!(writer.wait_all(), Err("batch 2 failed".to_string()));
        assert_eq!(writer.written(), Err("batch 2 failed".to_string()));
        // Batch 1 was written alone; nothing after the failure was.
        assert_eq!(*log.lock().unwrap(), vec![(1, true)]);
    }

    #[test]
    fn an_inline_writer_writes_at_submission_and_stops_at_a_failure_2b() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let metrics = Arc::new(StoreMetrics::default());
        let mut writer = LogWriter::inline(metrics.clone());
        assert_eq!(writer.submit(probe(1, &log), true), 1);
        assert_eq!(writer.written(), Ok(1));
        assert_eq!(writer.submit(probe(2, &log), false), 2);
        assert_eq!(writer.wait_all(), Ok(2));
        let mut bad = probe(3, &log);
        bad.fail = true;
        writer.submit(bad, true);
        writer.submit(probe(4, &log), true);
        assert_eq!(writer.wait_all(), Err("batch 3 failed".to_string()));
        // Each batch synced as asked; nothing after the failure was written.
        assert_eq!(*log.lock().unwrap(), vec![(1, true), (2, false)]);
        assert_eq!(metrics.raft_engine_syncs(), 1);
    }

    #[test]
    fn dropping_the_writer_writes_what_is_queued_2b() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut writer = LogWriter::spawn(1, Arc::default(), || {}).unwrap();
        for id in 1..=5 {
            writer.submit(probe(id, &log), id % 2 == 0);
        }
        drop(writer);
        let ids: Vec<u64> = log.lock().unwrap().iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    }
}
