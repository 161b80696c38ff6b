//! Tessera raft integration tests: one test binary holding the `Network`
//! harness, the Raft paper tests and the scenario and property tests. Test names
//! end with their stage: `_2aa` election, `_2ab` replication, `_2ac` raw node,
//! `_2c` snapshot, `_3a` membership, leader transfer and read index.

#![allow(clippy::field_reassign_with_default)]
// Table-driven tests spell out their case tuples.
#![allow(clippy::type_complexity)]

mod conf_change;
mod election;
mod fuzz;
mod hostile;
mod joiner;
#[allow(dead_code)]
mod network;
#[allow(dead_code)]
mod node;
mod paper_election;
mod paper_replication;
mod random_safety;
mod raw_node;
mod read_index;
mod replication;
#[allow(dead_code)]
mod sim;
mod snapshot;
mod term_jump;
mod transfer;
