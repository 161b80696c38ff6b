//! Tessera's store server: what a `tessera-server` process runs, in one place.
//!
//! - [`start`] / [`start_with`] ([`assembly`]): **the** store assembly — storage (RocksDB, memory
//!   or a raft store), the services, the HTTP gateway, the fail-stop watchdog and a graceful
//!   stop. `tessera-server`, the local cluster and the end-to-end tests all start stores with it.
//! - [`KvService`] ([`kv_service`]): the `TinyKv` gRPC service clients call (raw, transactional,
//!   `BatchCommands`) over any [`kv::Storage`].
//! - [`peer_service`]: the `TinyKv` service on the peer port, where other stores send raft
//!   messages and snapshots; [`transport`]: how this store sends them ([`ServerTransport`]).
//! - [`metrics`]: the client service's request metrics.
//! - [`http`]: the HTTP gateway (`/kv`, ranges, batches); [`status`]: `/health` and friends.
//! - [`config`]: the TOML configuration and the command-line overrides.
//!
//! A client needs none of this: it takes the `tessera-client` crate.

#![deny(missing_docs)]

pub mod assembly;
pub mod bytesize;
pub mod config;
pub mod http;
pub mod kv_service;
pub mod metrics;
pub mod peer_service;
pub mod status;
pub mod transport;

/// The git revision the server was built from (`unknown` when built outside a checkout).
pub const GIT_REVISION: &str = env!("TESSERA_GIT_REV");

/// The version every binary prints: the package version and the git revision.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("TESSERA_GIT_REV"),
    ")"
);

pub use assembly::{start, start_with, Listeners, RunningServer, StartOptions};
pub use config::Config;
pub use kv_service::KvService;
pub use transport::ServerTransport;
