//! One request's retries: the deadline, capped exponential backoff, the stores to avoid, and
//! the notes that make a give-up error say what was tried. Also the error and reply types.

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

/// Why a [`ClusterClient`] call failed.
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
    /// No store served the request before the deadline; or, for a write, an attempt's outcome
    /// became unknown (a timeout, a lost connection, a store that could not say) and it was not
    /// resent, since a second copy could apply after other clients' writes. A write that gave
    /// up may or may not have been applied.
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
        /// A write whose last attempt may have been applied (it was not resent).
        maybe_applied: bool,
    },
}

impl ClusterError {
    /// Whether a write that failed with this error may nevertheless have been applied: its last
    /// attempt's outcome is unknown. Only the caller knows whether resending is then safe (say,
    /// the same value to a key no one else writes).
    pub fn maybe_applied(&self) -> bool {
        matches!(
            self,
            ClusterError::GaveUp {
                maybe_applied: true,
                ..
            }
        )
    }
}

/// The answer of one attempt, as a [`ClusterClient::call`] closure reports it.
pub enum Reply<T> {
    /// The store served the request (`T` may still hold per-key errors for the caller).
    Ok(T),
    /// A region error: the client refreshes its routing and retries.
    RegionError(Box<errorpb::Error>),
    /// The response's `error` field: retried when the store's storage was unavailable (a
    /// command timed out there), final otherwise.
    Error(String),
}

impl<T> Reply<T> {
    /// The reply of a raw response with these fields.
    pub fn raw(region_error: Option<errorpb::Error>, error: String, value: T) -> Reply<T> {
        match region_error {
            Some(e) => Reply::RegionError(Box::new(e)),
            None if !error.is_empty() => Reply::Error(error),
            None => Reply::Ok(value),
        }
    }
}

/// Whether a store's `error` text is `kv::Error::Unavailable` (a timeout; worth a retry).
pub(super) fn is_unavailable(error: &str) -> bool {
    // The prefix comes from the error type itself, so it cannot drift from the server's text.
    let prefix = kv::Error::Unavailable(String::new()).to_string();
    error.starts_with(&prefix)
}

/// Whether a failed RPC provably never reached a store: no connection could be made (refused,
/// or reset while connecting). A connection lost after it was made may have carried the request.
pub fn never_sent(status: &Status) -> bool {
    let mut e: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = e {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        // hyper-util's connector error: the TCP connection was never established.
        if err.to_string().starts_with("tcp connect error") {
            return true;
        }
        e = err.source();
    }
    false
}

/// Whether a region error proves the command was not applied: refused before it was proposed,
/// at apply time without applying, or overwritten by another leader's entry (`StaleCommand`: the
/// raftstore says so only once the entry at the proposal's index was applied and was another, or
/// can never be the proposal's; a proposal overtaken by a snapshot gets its own error).
pub(super) fn not_applied(e: &errorpb::Error) -> bool {
    e.stale_command.is_some()
        || e.not_leader.is_some()
        || e.epoch_not_match.is_some()
        || e.server_is_busy.is_some()
        || e.disk_full.is_some()
        || e.store_not_match.is_some()
        || e.key_not_in_region.is_some()
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
    /// A write: never resent once an attempt's outcome is unknown.
    pub(super) write: bool,
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
            write: false,
            immediate: 0,
            avoid: HashSet::new(),
            tried: Vec::new(),
        }
    }

    pub(super) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    pub(super) fn give_up(&self) -> ClusterError {
        ClusterError::GaveUp {
            maybe_applied: false,
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

    fn note(&mut self, note: String) {
        if self.tried.last() != Some(&note) {
            if self.tried.len() == TRIED_KEPT {
                self.tried.remove(0);
            }
            self.tried.push(note);
        }
    }

    /// What to do after an attempt that may have been applied: try again, unless this is a
    /// write, which then gives up saying its outcome is unknown.
    pub(super) fn after_unknown(&mut self, note: String) -> Failure {
        if !self.write {
            return Failure::backoff(note);
        }
        self.note(format!(
            "{note} (outcome unknown: the write may have been applied, so it was not resent)"
        ));
        let mut e = self.give_up();
        if let ClusterError::GaveUp { maybe_applied, .. } = &mut e {
            *maybe_applied = true;
        }
        Failure::Fatal(e)
    }

    /// Records a failed attempt, then waits before the next one if it should.
    pub(super) async fn after_failure(
        &mut self,
        note: String,
        backoff: bool,
    ) -> Result<(), ClusterError> {
        self.note(note);
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
