//! Tessera's raft consensus library.
//!
//! A pure implementation of Raft (Ongaro & Ousterhout, "In Search of an
//! Understandable Consensus Algorithm", and Ongaro's thesis "Consensus: Bridging
//! Theory and Practice"): no I/O, no threads, no clocks. The application owns
//! the clock (it calls [`RawNode::tick`]), the network (it sends the messages
//! handed out) and the disk (it persists through its [`Storage`]). Messages are
//! raft-proto's [`eraftpb`] types.
//!
//! Features: leader election with randomized timeouts (§5.2) and PreVote
//! (thesis §9.6), CheckQuorum (thesis §6.2), log replication with flow control
//! and fast backtracking (§5.3), snapshots (§7), single-step and joint-consensus
//! membership changes with learners (thesis §4), leadership transfer (thesis
//! §3.10), ReadIndex and lease reads (thesis §6.4), and asynchronous
//! persistence (thesis §10.2.1: the leader writes its log in parallel with
//! replicating it).
//!
//! # The loop
//!
//! 1. **tick** — call [`RawNode::tick`] at a fixed interval (e.g. every 100 ms);
//!    elections and heartbeats are counted in ticks.
//! 2. **propose / step** — hand in client requests with [`RawNode::propose`] and
//!    messages from peers with [`RawNode::step`].
//! 3. **ready** — when [`RawNode::has_ready`], take a [`Ready`].
//! 4. **persist, send, apply** — send `messages` right away; write `snapshot`,
//!    `entries` and `hard_state` (syncing when `must_sync`); then send
//!    `persisted_messages`; then apply `committed_entries`.
//! 5. **advance** — call [`RawNode::advance`]; it may produce new work.
//!
//! ```
//! use raft::{Config, MemStorage, RawNode, StateRole};
//!
//! // A single-node cluster: node 1 is the only voter.
//! let storage = MemStorage::new_with_conf_state((vec![1], vec![]).into());
//! let config = Config { id: 1, election_tick: 10, heartbeat_tick: 3, ..Config::default() };
//! let mut node = RawNode::new(&config, storage.clone()).unwrap();
//!
//! // 1. tick until the election timeout fires (or call `campaign`).
//! while node.raft().state() != StateRole::Leader {
//!     node.tick();
//! }
//! // 2. propose a command.
//! node.propose(vec![], b"set x = 1".to_vec()).unwrap();
//!
//! let mut applied = Vec::new();
//! // 3. drain the work.
//! while node.has_ready() {
//!     let mut rd = node.ready();
//!     // 4a. messages that may leave at once (a leader's appends).
//!     for _m in rd.messages.drain(..) { /* transport.send(m) */ }
//!     // 4b. persist.
//!     if rd.snapshot.get_metadata().index > 0 {
//!         storage.apply_snapshot(rd.snapshot.clone()).unwrap();
//!     }
//!     storage.append(&rd.entries).unwrap();
//!     if let Some(hs) = rd.hard_state.take() {
//!         storage.set_hardstate(hs);
//!     }
//!     // 4c. messages that promise durable state (votes, acknowledgements).
//!     for _m in rd.persisted_messages.drain(..) { /* transport.send(m) */ }
//!     // 4d. apply.
//!     for e in rd.committed_entries.drain(..) {
//!         if !e.data.is_empty() {
//!             applied.push(e.data.to_vec());
//!         }
//!     }
//!     // 5. advance.
//!     node.advance(rd);
//! }
//! assert_eq!(applied, vec![b"set x = 1".to_vec()]);
//! ```
//!
//! # Asynchronous persistence
//!
//! Instead of `advance`, an application with a separate writer thread calls
//! [`RawNode::advance_append_async`] when it hands a `Ready` to the writer, and
//! [`RawNode::on_persist_ready`] with [`Ready::number`] once it is durable; the
//! `persisted_messages` of that `Ready` are sent then, and its committed entries
//! applied (report them with [`RawNode::advance_apply_to`]). A leader counts its
//! own log towards the commit quorum only once it is durable.
//!
//! # Messages from the network
//!
//! [`RawNode::step`] checks every message before it acts on it; one that
//! cannot be right is refused with [`Error::InvalidMessage`] (or
//! [`Error::StepLocalMsg`], [`Error::StepPeerNotFound`]) and changes nothing.
//! No input makes it panic.
//!
//! # Storage contract
//!
//! [`Storage::snapshot`] must return a snapshot whose configuration contains the
//! requesting peer `to` (a peer refuses a snapshot of a configuration it is not
//! part of); generating it at the current applied index satisfies this.
//!
//! # Joining empty
//!
//! A node may start with empty storage and be added by a conf change. Until a
//! snapshot gives it a configuration it never campaigns, refuses appends
//! (which makes the leader send a snapshot) and still grants votes; see the
//! crate README.
#![deny(missing_docs)]
// Protobuf messages carry private bookkeeping fields, so they are built with
// `default()` and then assigned field by field.
#![allow(clippy::field_reassign_with_default)]

mod confchange;
mod config;
mod errors;
mod log_unstable;
mod raft;
mod raft_log;
mod raw_node;
mod read_only;
mod storage;
mod tracker;
mod util;

pub use raft_proto::eraftpb;
pub use raft_proto::ConfChangeI;

pub use crate::config::{Config, ReadOnlyOption};
pub use crate::errors::{Error, Result, StorageError};
pub use crate::raft::{Raft, SoftState, StateRole};
pub use crate::raft_log::RaftLog;
pub use crate::raw_node::{RawNode, Ready, SnapshotStatus, Status};
pub use crate::read_only::ReadState;
pub use crate::storage::{MemStorage, RaftState, Storage};
pub use crate::tracker::{Inflights, Progress, ProgressState, ProgressTracker, VoteResult};
pub use crate::util::SplitMix64;
pub use crate::util::{INVALID_ID, NO_LIMIT};
