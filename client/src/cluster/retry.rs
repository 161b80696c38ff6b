//! One request's retries: the deadline, capped exponential backoff, the stores to avoid, and
//! the notes that make a give-up error say what was tried. Also the error and reply types.
//!
//! Which failures a request may be sent again after depends on the request. Reads and
//! transactional requests (whose protocol makes a repeat harmless) are sent again after any
//! failure worth retrying. A raw write is not ([`Retry::once`]): sent again after it applied,
//! a put could apply a second time after another client's write, and a compare-and-swap would
//! compare against its own write and report a swap that happened as refused. It is retried
//! only after a failure that proves it was not applied (a connection never made, or a region
//! error that [`proves_not_applied`](proto::errorpb::Error::proves_not_applied)); any other
//! failure ends it with [`ClusterError::Undetermined`].

use std::collections::HashSet;
use std::time::{Duration, Instant};

use proto::errorpb;
use tonic::{Code, Status};

use super::ClusterConfig;

/// How many of a request's last failures its give-up error lists.
const TRIED_KEPT: usize = 6;
/// Retries in a row without a backoff (each followed a fresh hint) before backing off anyway:
/// two stale peers must not bounce a request between them at full speed.
const MAX_IMMEDIATE_RETRIES: usize = 3;

/// Why a [`ClusterClient`](super::ClusterClient) call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The scheduler could not be reached when connecting.
    #[error("cannot reach the scheduler at {addr}: {reason}")]
    Scheduler {
        /// The scheduler's address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A store rejected the request (bad input, engine error); retrying would not help.
    #[error("server error: {0}")]
    Server(String),
    /// The region's leader is on a store whose disk is below its free-space reserve: writes are
    /// refused until space returns (reads still work).
    #[error("disk full on store(s) {store_ids:?}: {message}")]
    DiskFull {
        /// The stores that refused.
        store_ids: Vec<u64>,
        /// The store's message.
        message: String,
    },
    /// A raw write was sent and no answer came that says whether it applied (a
    /// timeout, a connection lost once it may have been sent, a store that stopped waiting for
    /// its raft group, a peer removed with the command pending): it may have happened or not,
    /// and it was not sent again. Read the key to learn its state.
    #[error("{op} {key:?}: the outcome is unknown: {reason}")]
    Undetermined {
        /// The operation (`put`, `delete`, `cas`).
        op: &'static str,
        /// The key (lossy text).
        key: String,
        /// What happened to the attempt that may have applied.
        reason: String,
    },
    /// No store served the request before the deadline. For a raw write, it was applied by
    /// no attempt: each one failed in a way that proves it.
    #[error(
        "{op} {key:?}: gave up after {attempts} attempts in {elapsed:.1?}; last tried: {tried}"
    )]
    GaveUp {
        /// The operation (`get`, `put`, ...).
        op: &'static str,
        /// The key (lossy text).
        key: String,
        /// Attempts made.
        attempts: usize,
        /// Time spent.
        elapsed: Duration,
        /// What the last attempts ran into, oldest first.
        tried: String,
    },
}

impl ClusterError {
    /// Whether the request may have taken effect although it failed: a raw write whose
    /// outcome is unknown.
    pub fn is_undetermined(&self) -> bool {
        matches!(self, ClusterError::Undetermined { .. })
    }
}

/// The answer of one attempt, as a [`ClusterClient::call`](super::ClusterClient::call) closure reports it.
pub enum Reply<T> {
    /// The store served the request (`T` may still hold per-key errors for the caller).
    Ok(T),
    /// A region error: the client refreshes its routing and retries.
    RegionError(Box<errorpb::Error>),
    /// The store's storage did not answer in time (its region error says
    /// `storage_unavailable`): a write's outcome is unknown, a read is retried.
    Unavailable(String),
    /// The response's `error` field: the store refused the request; final.
    Error(String),
}

impl<T> Reply<T> {
    /// The reply of a raw response with these fields.
    pub fn raw(region_error: Option<errorpb::Error>, error: String, value: T) -> Reply<T> {
        match region_error {
            Some(e) if e.storage_unavailable.is_some() => Reply::Unavailable(e.message),
            Some(e) => Reply::RegionError(Box::new(e)),
            None if !error.is_empty() => Reply::Error(error),
            None => Reply::Ok(value),
        }
    }
}

/// Whether a failed RPC may have failed for want of a connection (another store may serve it).
pub(super) fn is_transport_failure(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

fn key_text(key: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(key).into_owned();
    if s.len() > 64 {
        let mut end = 64;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// What one failed attempt means for the next.
pub(super) enum Failure {
    /// Give up with this error.
    Fatal(ClusterError),
    /// Try again: at once when `backoff` is false (the attempt learned where to go).
    Retry { note: String, backoff: bool },
}

impl Failure {
    pub(super) fn backoff(note: String) -> Failure {
        Failure::Retry {
            note,
            backoff: true,
        }
    }

    pub(super) fn now(note: String) -> Failure {
        Failure::Retry {
            note,
            backoff: false,
        }
    }
}

/// The state of one request across its attempts.
pub(super) struct Retry {
    op: &'static str,
    key: Vec<u8>,
    started: Instant,
    deadline: Instant,
    backoff: Duration,
    max_backoff: Duration,
    pub(super) attempts: usize,
    /// Sent again only after failures that prove it was not applied (a raw write).
    pub(super) once: bool,
    immediate: usize,
    /// Stores that failed this request; other peers are tried first.
    pub(super) avoid: HashSet<u64>,
    tried: Vec<String>,
}

impl Retry {
    pub(super) fn new(op: &'static str, key: &[u8], config: &ClusterConfig) -> Retry {
        let started = Instant::now();
        Retry {
            op,
            key: key.to_vec(),
            started,
            deadline: started + config.timeout,
            backoff: config.initial_backoff,
            max_backoff: config.max_backoff,
            attempts: 0,
            once: false,
            immediate: 0,
            avoid: HashSet::new(),
            tried: Vec::new(),
        }
    }

    /// The retries of a request that must not apply twice: see the module documentation.
    pub(super) fn once(op: &'static str, key: &[u8], config: &ClusterConfig) -> Retry {
        Retry {
            once: true,
            ..Retry::new(op, key, config)
        }
    }

    /// The error ending a [`Retry::once`] request whose last attempt may have applied.
    pub(super) fn undetermined(&self, reason: String) -> Failure {
        Failure::Fatal(ClusterError::Undetermined {
            op: self.op,
            key: key_text(&self.key),
            reason,
        })
    }

    pub(super) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    pub(super) fn give_up(&self) -> ClusterError {
        ClusterError::GaveUp {
            op: self.op,
            key: key_text(&self.key),
            attempts: self.attempts,
            elapsed: self.started.elapsed(),
            tried: if self.tried.is_empty() {
                "nothing (no time left)".to_string()
            } else {
                self.tried.join("; ")
            },
        }
    }

    /// Records a failed attempt, then waits before the next one if it should.
    pub(super) async fn after_failure(
        &mut self,
        note: String,
        backoff: bool,
    ) -> Result<(), ClusterError> {
        if self.tried.last() != Some(&note) {
            if self.tried.len() == TRIED_KEPT {
                self.tried.remove(0);
            }
            self.tried.push(note);
        }
        let remaining = self.remaining();
        if remaining.is_zero() {
            return Err(self.give_up());
        }
        if !backoff && self.immediate < MAX_IMMEDIATE_RETRIES {
            self.immediate += 1;
            return Ok(());
        }
        self.immediate = 0;
        if self.backoff >= remaining {
            return Err(self.give_up());
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        Ok(())
    }
}
