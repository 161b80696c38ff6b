//! Integration tests of the scheduler (stage 3C): heartbeat processing, schedulers, persistence
//! across restarts, and the gRPC server with `scheduler_client::RpcClient`. One test binary for
//! the crate; the modules group the scenarios.

mod admin;
mod balance;
mod common;
mod grpc;
mod heartbeat;
mod persist;
mod replica;
