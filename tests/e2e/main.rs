//! End-to-end tests of the binaries and the root package: one test binary, one module per surface.

mod balance_3b;
mod bank_process_4c;
mod cluster_process_2b;
mod ctl_1;
mod forge;
mod fuzz_found;
mod grpc_1;
mod hostile;
mod hostile_peer_3b;
mod hostile_raft_2b;
mod hostile_snapshot_2c;
mod http_1;
mod peer_port_2b;
mod process_1;
mod procs;
mod raft_engine_2b;
mod raft_grpc_2b;
mod routing_2b;
mod scan_bound_1;
mod scheduler_3c;
mod setup_1;
mod survive;
mod txn_4c;
mod txn_regions_4c;
mod util;
