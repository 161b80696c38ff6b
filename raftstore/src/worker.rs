//! [`Worker`]: a generic background thread that runs tasks of one [`Runnable`] in order, with an
//! optional periodic tick. Scheduler heartbeats run on one (and, later, snapshot generation, log
//! GC and split checks).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};

/// The work a [`Worker`] runs.
pub trait Runnable: Send + 'static {
    /// One task.
    type Task: Send + 'static;
    /// Runs one task.
    fn run(&mut self, task: Self::Task);
    /// Called every tick interval, if the worker has one.
    fn on_tick(&mut self) {}
}

/// Queues tasks on a [`Worker`]. Cheap to clone.
pub struct Scheduler<T> {
    tx: Sender<Option<T>>,
}

impl<T> Clone for Scheduler<T> {
    fn clone(&self) -> Self {
        Scheduler {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send> Scheduler<T> {
    /// Queues `task`; returns it back when the worker has stopped.
    pub fn schedule(&self, task: T) -> Result<(), T> {
        self.tx
            .send(Some(task))
            .map_err(|e| e.0.expect("a task was sent"))
    }
}

/// A named thread running a [`Runnable`].
pub struct Worker<T: Runnable> {
    scheduler: Scheduler<T::Task>,
    /// Set: the thread runs no further task and ends.
    discard: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl<T: Runnable> Worker<T> {
    /// Starts `runner` on a thread named `name`, ticking every `tick` when given.
    ///
    /// # Errors
    /// The OS refused to spawn a thread.
    pub fn start(name: &str, mut runner: T, tick: Option<Duration>) -> std::io::Result<Worker<T>> {
        let (tx, rx) = crossbeam_channel::unbounded::<Option<T::Task>>();
        let discard = Arc::new(AtomicBool::new(false));
        let discarding = discard.clone();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut next_tick = tick.map(|t| Instant::now() + t);
                loop {
                    let msg = match next_tick {
                        Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    };
                    match msg {
                        Ok(Some(_)) if discarding.load(Ordering::Acquire) => return,
                        Ok(Some(task)) => runner.run(task),
                        Ok(None) | Err(RecvTimeoutError::Disconnected) => return,
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                    if let (Some(at), Some(t)) = (next_tick, tick) {
                        if Instant::now() >= at {
                            runner.on_tick();
                            next_tick = Some(Instant::now() + t);
                        }
                    }
                }
            })?;
        Ok(Worker {
            scheduler: Scheduler { tx },
            discard,
            handle: Some(handle),
        })
    }

    /// A handle to queue tasks.
    pub fn scheduler(&self) -> Scheduler<T::Task> {
        self.scheduler.clone()
    }

    /// Stops the worker after the task it is running, dropping the tasks queued behind it, and
    /// joins it: for tasks that may each wait long on something outside (the scheduler's
    /// heartbeats while it is down), where running the backlog would hold up a shutdown.
    pub fn stop_discarding(&mut self) {
        self.discard_queued();
        self.stop();
    }

    /// Makes the worker run no further task.
    fn discard_queued(&self) {
        self.discard.store(true, Ordering::Release);
    }

    /// Stops the worker after the tasks queued before this call, and joins it.
    pub fn stop(&mut self) {
        let _ = self.scheduler.tx.send(None);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl<T: Runnable> Drop for Worker<T> {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sum(Sender<u64>, u64);

    impl Runnable for Sum {
        type Task = u64;
        fn run(&mut self, task: u64) {
            self.1 += task;
            let _ = self.0.send(self.1);
        }
    }

    #[test]
    fn worker_runs_tasks_in_order_then_stops_2b() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut w = Worker::start("sum", Sum(tx, 0), None).unwrap();
        let s = w.scheduler();
        for i in 1..=4 {
            s.schedule(i).unwrap();
        }
        w.stop();
        assert_eq!(rx.iter().collect::<Vec<_>>(), vec![1, 3, 6, 10]);
        assert!(s.schedule(5).is_err());
    }

    /// Says each task started, runs it once `gate` lets it through, and says it ran.
    struct Gated {
        started: Sender<u64>,
        gate: crossbeam_channel::Receiver<()>,
        ran: Sender<u64>,
    }

    impl Runnable for Gated {
        type Task = u64;
        fn run(&mut self, task: u64) {
            let _ = self.started.send(task);
            let _ = self.gate.recv();
            let _ = self.ran.send(task);
        }
    }

    /// A worker whose tasks are stuck (say on a scheduler that is down) stops after the task it
    /// is running, dropping the ones queued behind it, instead of running every one first.
    #[test]
    fn stop_discarding_drops_the_queued_tasks_2b() {
        let (started, started_rx) = crossbeam_channel::unbounded();
        let (gate_tx, gate) = crossbeam_channel::unbounded();
        let (ran, ran_rx) = crossbeam_channel::unbounded();
        let gated = Gated { started, gate, ran };
        let mut w = Worker::start("gated", gated, None).unwrap();
        let s = w.scheduler();
        for i in 1..=10 {
            s.schedule(i).unwrap();
        }
        assert_eq!(started_rx.recv().unwrap(), 1);
        // The stop is asked for while task 1 waits; then every task could go through.
        w.discard_queued();
        for _ in 0..10 {
            gate_tx.send(()).unwrap();
        }
        w.stop_discarding();
        assert_eq!(ran_rx.try_iter().collect::<Vec<_>>(), vec![1]);
        assert!(s.schedule(11).is_err());
    }
}
