//! `tessera-bench`: raw put/get throughput.
//!
//! - `local`: the standalone storage in this process, no network (the engine's ceiling).
//! - `grpc`: a server over gRPC with N concurrent clients (started in-process on loopback
//!   unless `--addr` names a running one).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use kv::{RawApi, RawLimits, StandaloneStorage};
use proto::kvrpcpb::Context;
use tessera::client::RawClient;
use tessera::config::Config;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Local,
    Grpc,
}

/// Raw put/get throughput of a Tessera server.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    #[arg(long, value_enum, default_value = "grpc")]
    mode: Mode,
    /// A running server to benchmark (grpc mode); without it one is started in-process
    #[arg(long)]
    addr: Option<String>,
    /// Operations of each kind (put, then get)
    #[arg(long, default_value_t = 20_000)]
    ops: usize,
    /// Concurrent clients (grpc mode) or threads (local mode)
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Value size in bytes
    #[arg(long, default_value_t = 128)]
    value_size: usize,
    /// Fsync every write (the server default); off measures the engine without fsync
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    sync: bool,
    /// Data directory for an in-process server or storage (default: a temporary directory)
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn key(i: usize) -> Vec<u8> {
    format!("bench-{i:010}").into_bytes()
}

fn report(what: &str, ops: usize, elapsed: Duration) {
    println!(
        "{what:>4}: {ops} ops in {:.2}s = {:.0} ops/s",
        elapsed.as_secs_f64(),
        ops as f64 / elapsed.as_secs_f64()
    );
}

fn bench_local(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    let storage = Arc::new(StandaloneStorage::open(dir, args.sync)?);
    let raw = RawApi::new(storage, RawLimits::default());
    let value = vec![b'v'; args.value_size];
    for phase in ["put", "get"] {
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..args.clients {
                let raw = raw.clone();
                let value = value.clone();
                s.spawn(move || {
                    let ctx = Context::default();
                    for i in (t..args.ops).step_by(args.clients) {
                        if phase == "put" {
                            raw.put(&ctx, "", key(i), value.clone()).expect("put");
                        } else {
                            raw.get(&ctx, "", &key(i)).expect("get").expect("present");
                        }
                    }
                });
            }
        });
        report(phase, args.ops, start.elapsed());
    }
    Ok(())
}

async fn bench_grpc(args: &Args, addr: &str) -> anyhow::Result<()> {
    let value = vec![b'v'; args.value_size];
    for phase in ["put", "get"] {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..args.clients {
            let mut client = RawClient::connect(addr).await?;
            let (ops, clients, value) = (args.ops, args.clients, value.clone());
            tasks.push(tokio::spawn(async move {
                for i in (t..ops).step_by(clients) {
                    if phase == "put" {
                        client.put("", &key(i), &value).await?;
                    } else if client.get("", &key(i)).await?.is_none() {
                        anyhow::bail!("key {i} missing after put");
                    }
                }
                Ok(())
            }));
        }
        for t in tasks {
            t.await.context("client task")??;
        }
        report(phase, args.ops, start.elapsed());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    println!(
        "mode {:?}, {} ops, {} clients, {}-byte values, sync {}",
        args.mode, args.ops, args.clients, args.value_size, args.sync
    );
    match args.mode {
        Mode::Local => bench_local(&args, &dir),
        Mode::Grpc => match &args.addr {
            Some(addr) => bench_grpc(&args, addr).await,
            None => {
                let mut config = Config::loopback(&dir);
                config.storage.sync_write = args.sync;
                let server = tessera::server::start(&config).await?;
                let result = bench_grpc(&args, &server.addr.to_string()).await;
                server.shutdown().await?;
                result
            }
        },
    }
}
