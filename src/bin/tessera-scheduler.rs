//! `tessera-scheduler`: the cluster's scheduler. Hands out ids and timestamps, keeps the cluster
//! map from heartbeats and balances replicas and leaders. Prints `scheduler ADDR` on stdout once
//! it listens; stops cleanly on SIGINT or SIGTERM.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use scheduler::{Cluster, Config};

/// The Tessera scheduler.
#[derive(Parser, Debug)]
#[command(version = server::VERSION, about)]
struct Args {
    /// gRPC listen address [default: 127.0.0.1:2379]
    #[arg(long)]
    addr: Option<String>,
    /// HTTP status address: /metrics, /status, /stores, /regions, /health
    /// [default: 127.0.0.1:2381]
    #[arg(long)]
    status_addr: Option<String>,
    /// Data directory [default: ./tessera-scheduler-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Configuration file (TOML); flags take precedence over it
    #[arg(long)]
    config: Option<PathBuf>,
}

fn load_config(args: Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(addr) = args.addr {
        config.addr = addr;
    }
    if let Some(a) = args.status_addr {
        config.status_addr = a;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    config.validate()?;
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = load_config(Args::parse())?;
    tessera::init_tracing_as(&config.log_level, config.log_format == "json");
    let cluster = Cluster::open(&config)
        .with_context(|| format!("opening scheduler data in {}", config.data_dir.display()))?;
    let cluster = Arc::new(cluster);
    let server = scheduler::server::start(cluster.clone(), &config.addr).await?;
    let status_listener = tokio::net::TcpListener::bind(&config.status_addr)
        .await
        .with_context(|| format!("cannot listen on {} (status_addr)", config.status_addr))?;
    let (status_stop, status_rx) = tokio::sync::watch::channel(false);
    let status = scheduler::http::serve(
        cluster.clone(),
        status_listener,
        server::VERSION,
        server.addr,
        status_rx,
    )?;
    tracing::info!(
        addr = %server.addr,
        data_dir = %config.data_dir.display(),
        cluster_id = cluster.cluster_id(),
        "tessera-scheduler started"
    );
    // Scripts wait for this line; a closed stdout must not stop the scheduler.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "scheduler {}", server.addr);
    let _ = writeln!(stdout, "scheduler-status {}", status.addr);
    let _ = stdout.flush();

    let stopper = server.stopper();
    let wait = server.wait();
    tokio::pin!(wait);
    tokio::select! {
        sig = tessera::shutdown_signal() => {
            tracing::info!(signal = sig?, "shutting down");
            stopper.stop();
            wait.await?;
        }
        result = &mut wait => result?,
    }
    let _ = status_stop.send(true);
    let _ = status.task.await;
    // The server's tasks are done; dropping the last handle closes the database.
    drop(cluster);
    tracing::info!("tessera-scheduler stopped");
    Ok(())
}
