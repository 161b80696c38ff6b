//! Tessera: a multi-raft, region-sharded, transactional key-value store.
//!
//! This package holds the binaries (`tessera-server`, `tessera-ctl`, `tessera-bench`) and the
//! pieces they share: configuration, server assembly, the HTTP gateway, a raw client, a
//! transaction client, and the bank workload of the transaction tests and `tessera-bench`.

#![deny(missing_docs)]

pub mod bank;
pub mod client;
pub mod cluster_client;
pub mod config;
pub mod http;
pub mod local_cluster;
pub mod raft_server;
pub mod server;
pub mod txn_client;

/// Installs the tracing subscriber: `RUST_LOG` if set, else `default_filter`.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on SIGINT or SIGTERM with the signal's name.
///
/// # Errors
/// When a signal handler cannot be installed.
pub async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use anyhow::Context;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => { r.context("waiting for SIGINT")?; Ok("SIGINT") }
        _ = term.recv() => Ok("SIGTERM"),
    }
}
