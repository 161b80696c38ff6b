//! Integration tests of the raftstore on the in-process cluster: cluster basics and the stage-2B
//! scenarios.

mod cas_2b;
mod cluster_2b;
mod commit_bcast_3b;
mod conf_change_3b;
mod lease_2b;
mod multi_region_2b;
mod node_2b;
mod scenarios_2b;
mod snapshot_2c;
mod split_3b;
mod ttl_2b;
mod write_batch_2b;
