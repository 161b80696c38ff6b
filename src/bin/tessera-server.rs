//! `tessera-server`: serves the TinyKv gRPC API and the HTTP gateway over a storage engine.
//!
//! It prints the addresses it listens on, one per line on stdout, once it serves:
//! `grpc ADDR`, then `peer ADDR` (raft engine only), then `http ADDR`. Any panic stops the
//! process (see [`tessera::install_fail_stop_hook`]); so does a store that cannot go on.

use std::io::Write;
use std::path::PathBuf;

/// The store allocates and frees small buffers at a high rate on many threads (messages,
/// entries, requests): under load glibc's malloc took about a tenth of the stores' CPU, and
/// with mimalloc a store did 7-15% more puts at 64 clients (README, Benchmarks). RocksDB's own
/// allocations (C++) do not go through it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use server::config::{Config, EngineKind};

/// A Tessera key-value server.
#[derive(Parser, Debug)]
#[command(version = server::VERSION, about)]
struct Args {
    /// gRPC listen address for clients [default: 127.0.0.1:20160]
    #[arg(long)]
    addr: Option<String>,
    /// gRPC listen address for the other stores: raft and snapshots (raft engine)
    /// [default: 127.0.0.1:20170]
    #[arg(long)]
    peer_addr: Option<String>,
    /// The peer address other stores dial, when not --peer-addr (behind NAT or a proxy)
    #[arg(long)]
    advertise_peer_addr: Option<String>,
    /// File holding the cluster token every store of the cluster shares (first line)
    #[arg(long)]
    cluster_token_file: Option<PathBuf>,
    /// HTTP gateway listen address [default: 127.0.0.1:20180]
    #[arg(long)]
    status_addr: Option<String>,
    /// Data directory [default: ./tessera-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Configuration file (TOML); flags take precedence over it
    #[arg(long)]
    config: Option<PathBuf>,
    /// Storage engine [default: standalone]
    #[arg(long, value_enum)]
    engine: Option<EngineKind>,
    /// Scheduler address, for --engine raft [default: 127.0.0.1:2379]
    #[arg(long)]
    scheduler: Option<String>,
}

fn load_config(args: Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = args.addr {
        config.addr = v;
    }
    if let Some(v) = args.peer_addr {
        config.peer_addr = v;
    }
    if let Some(v) = args.advertise_peer_addr {
        config.advertise_peer_addr = v;
    }
    if let Some(v) = args.cluster_token_file {
        config.security.cluster_token = String::new();
        config.security.cluster_token_file = Some(v);
    }
    if let Some(v) = args.status_addr {
        config.status_addr = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.engine {
        config.engine = v;
    }
    if let Some(v) = args.scheduler {
        config.scheduler_addr = v;
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = load_config(Args::parse())?;
    tessera::init_tracing_as(
        &config.log_level,
        config.log_format == server::config::LogFormat::Json,
    );
    tessera::install_fail_stop_hook("tessera-server");
    let server = server::start(&config).await?;
    // Scripts (make run, tests) read these two lines to find the bound addresses. A closed
    // stdout must not take the server down, so write errors are ignored.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "grpc {}", server.addr);
    if let Some(peer) = server.peer_addr {
        let _ = writeln!(out, "peer {peer}");
    }
    let _ = writeln!(out, "http {}", server.status_addr);
    let _ = out.flush();
    let stopper = server.stopper();
    let wait = server.wait();
    tokio::pin!(wait);
    tokio::select! {
        sig = tessera::shutdown_signal() => {
            tracing::info!(signal = sig?, "shutting down");
            stopper.stop();
            wait.await
        }
        result = &mut wait => result,
    }
}
