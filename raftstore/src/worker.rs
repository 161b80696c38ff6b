//! [`Worker`]: a generic background thread that runs tasks of one [`Runnable`] in order, with an
//! optional periodic tick. Scheduler heartbeats run on one (and, later, snapshot generation, log
//! GC and split checks).

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
    handle: Option<JoinHandle<()>>,
}

impl<T: Runnable> Worker<T> {
    /// Starts `runner` on a thread named `name`, ticking every `tick` when given.
    ///
    /// # Errors
    /// The OS refused to spawn a thread.
    pub fn start(name: &str, mut runner: T, tick: Option<Duration>) -> std::io::Result<Worker<T>> {
        let (tx, rx) = crossbeam_channel::unbounded::<Option<T::Task>>();
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
            handle: Some(handle),
        })
    }

    /// A handle to queue tasks.
    pub fn scheduler(&self) -> Scheduler<T::Task> {
        self.scheduler.clone()
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
}
