//! `tessera-ctl`: a command-line client of a Tessera server's raw API, or of a whole cluster's
//! (`--scheduler`: each request goes to the leader of its key's region).
//!
//! Global flags may come from the environment instead: `TESSERA_ADDR`, `TESSERA_SCHEDULER`,
//! `TESSERA_CF`, `TESSERA_HEX` (true/false), `TESSERA_WRITE_OUT` (simple/json); a flag given on
//! the command line wins.
//!
//! Exit codes: 0 success (`cas`: swapped), 1 key not found (`get`), 2 bad usage, 3 the server
//! rejected the request (or the transaction conflicted or was aborted), 4 the server or the
//! scheduler could not be reached or the RPC failed (for `cas` and a transaction's commit: or
//! the outcome is unknown, which the message then says), 5 the store's disk is full (writes
//! refused until space returns), 6 `cas` compared and did not swap (the key did not hold what
//! was expected; the output says what it held), 7 `endpoint health`: an endpoint answered
//! that it is not healthy, 8 `check perf`: the cluster fell short of a threshold, 9 `restore`:
//! the backup is corrupt, partial or not a backup, 10 `restore`: the cluster holds data.

use std::process::ExitCode;

mod admin;
mod backup;
mod check;
mod gc;
mod manifest;
mod offline;
mod raw;
mod restore;
mod top;
mod txn;

use clap::{Parser, Subcommand};
use raw::{run_raw, Raw, RawCmd, Text, WriteOut};
use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient};
use tessera_client::cluster::{ClusterClient, ClusterConfig, ClusterError};
use tessera_client::raw::{ClientError, RawClient};
use tessera_client::txn::TxnError;
use txn::{run_txn, TxnCmd};

/// Talk to a Tessera server.
#[derive(Parser, Debug)]
#[command(version = server::VERSION, about)]
struct Args {
    /// Server gRPC address [default: 127.0.0.1:20160]
    #[arg(long, global = true, env = "TESSERA_ADDR")]
    addr: Option<String>,
    /// Column family: default, lock or write
    #[arg(long, default_value = "default", global = true, env = "TESSERA_CF")]
    cf: String,
    /// Keys and values are hexadecimal, on the command line and in the output
    #[arg(long, global = true, env = "TESSERA_HEX", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    hex: bool,
    /// Output: `simple` (lines) or `json` (`{"kvs":[{"key":..,"value":..}]}`, keys and values
    /// as text, or hex with --hex; a write `{"ok":true}`, a transaction's also `"commit_ts"`)
    #[arg(
        short = 'w',
        long,
        global = true,
        env = "TESSERA_WRITE_OUT",
        value_enum,
        default_value = "simple"
    )]
    write_out: raw::WriteOut,
    /// Scheduler address: without --addr, raw commands and `txn` then go through the whole
    /// cluster (to the leader of each key's region); `txn` always takes its timestamps there
    /// [default: 127.0.0.1:2379]
    #[arg(long, global = true, env = "TESSERA_SCHEDULER")]
    scheduler: Option<String>,
    /// CA certificate (PEM): speak TLS to the servers, checking their certificates against it
    #[arg(long, global = true, env = "TESSERA_CA_PATH")]
    ca_path: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), presented to servers that ask for one
    #[arg(long, global = true, env = "TESSERA_CERT_PATH")]
    cert_path: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM)
    #[arg(long, global = true, env = "TESSERA_KEY_PATH")]
    key_path: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
    /// Where --addr and --scheduler came from: the environment (`true`) or the command line.
    #[arg(skip)]
    from_env: (bool, bool),
}

#[derive(Subcommand, Debug)]
enum Cmd {
    #[command(flatten)]
    Raw(RawCmd),
    /// Run one transaction (timestamps from --scheduler)
    #[command(subcommand)]
    Txn(TxnCmd),
    /// List the cluster's regions as --scheduler knows them (id, range, version, peers, leader),
    /// then the voters and leaders of each store. A range no region has reported yet (a split's
    /// new region before its first heartbeat) is listed as a hole
    Regions,
    /// Ask stores' status ports (HTTP) how they are
    #[command(subcommand)]
    Endpoint(admin::EndpointCmd),
    /// The stores of the cluster, as --scheduler knows them
    #[command(subcommand)]
    Store(admin::StoreCmd),
    /// One region as --scheduler knows it: range, epoch, peers, leader; exit 1 when there is
    /// none
    Region {
        /// A key the region holds
        #[arg(required_unless_present = "id")]
        key: Option<String>,
        /// The region's id, instead of a key
        #[arg(long, conflicts_with = "key")]
        id: Option<u64>,
    },
    #[command(flatten)]
    Operator(admin::OperatorCmd),
    /// Split REGION so that a region starts at KEY (through the region's leader)
    Split { region: u64, key: String },
    /// The scheduler's run-time settings
    #[command(subcommand)]
    Scheduler(admin::SchedulerCmd),
    #[command(flatten)]
    Offline(offline::OfflineCmd),
    /// A terminal view of the stores, refreshed every second: QPS, errors, p99, regions,
    /// leaders, free disk
    Top(top::TopArgs),
    /// Checks of the cluster (--scheduler)
    #[command(subcommand)]
    Check(check::CheckCmd),
    #[command(flatten)]
    Backup(backup::BackupCmd),
    /// Garbage-collect MVCC versions no read at or above TS can see (--scheduler); reads
    /// below TS are refused from then on
    Gc {
        /// The safe point: a past timestamp
        #[arg(
            long,
            required_unless_present = "life_time",
            conflicts_with = "life_time"
        )]
        safe_point: Option<u64>,
        /// Or: keep this many seconds of history (the safe point is that long ago)
        #[arg(long)]
        life_time: Option<u64>,
    },
}

/// What went wrong, and the exit code it maps to.
enum Failure {
    Client(ClientError),
    Cluster(ClusterError),
    Txn(TxnError),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Client(e) | Failure::Txn(TxnError::Client(e)) => exit_code(e),
            Failure::Cluster(ClusterError::DiskFull { .. })
            | Failure::Txn(TxnError::Cluster(ClusterError::DiskFull { .. })) => 5,
            Failure::Cluster(ClusterError::Server(_)) => 3,
            Failure::Cluster(_) => 4,
            Failure::Txn(TxnError::Cluster(ClusterError::Server(_))) => 3,
            Failure::Txn(
                TxnError::Cluster(_) | TxnError::Tso(_) | TxnError::Undetermined { .. },
            ) => 4,
            Failure::Txn(_) => 3,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Client(e) => e.fmt(f),
            Failure::Cluster(e) => e.fmt(f),
            Failure::Txn(e) => e.fmt(f),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

impl From<ClusterError> for Failure {
    fn from(e: ClusterError) -> Self {
        Failure::Cluster(e)
    }
}

impl From<TxnError> for Failure {
    fn from(e: TxnError) -> Self {
        Failure::Txn(e)
    }
}

fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::Server(_) | ClientError::Region(_) => 3,
        ClientError::DiskFull(_) => 5,
        ClientError::Connect { .. }
        | ClientError::Rpc(_)
        | ClientError::Unavailable(_)
        | ClientError::Undetermined(_) => 4,
    }
}

/// The TLS settings of the command line, loaded once at start.
static TLS: std::sync::OnceLock<Option<security::Tls>> = std::sync::OnceLock::new();

/// TLS to the servers, if the command line asked for it.
fn tls() -> Option<security::Tls> {
    TLS.get().cloned().flatten()
}

const DEFAULT_ADDR: &str = "127.0.0.1:20160";
const DEFAULT_SCHEDULER: &str = "127.0.0.1:2379";

async fn run(args: Args) -> Result<u8, Failure> {
    match args.cmd {
        Cmd::Raw(cmd) => {
            // One of the two named on the command line wins over the other from the
            // environment; both from the same place are a usage error.
            let (addr, scheduler) = match args.from_env {
                (true, false) if args.scheduler.is_some() => (None, args.scheduler),
                (false, true) if args.addr.is_some() => (args.addr, None),
                _ => (args.addr, args.scheduler),
            };
            let mut client = match (addr, scheduler) {
                (Some(_), Some(_)) => {
                    eprintln!("error: raw commands take either --addr or --scheduler, not both");
                    return Ok(2);
                }
                (None, Some(scheduler)) => {
                    // A command-line user wants a prompt answer when the scheduler is down.
                    let config = ClusterConfig {
                        scheduler_timeout: std::time::Duration::from_secs(2),
                        tls: crate::tls(),
                        ..ClusterConfig::default()
                    };
                    Raw::Cluster(ClusterClient::connect(&scheduler, config).await?)
                }
                (addr, None) => {
                    let addr = addr.as_deref().unwrap_or(DEFAULT_ADDR);
                    Raw::One(RawClient::connect_with(addr, tls().as_ref()).await?)
                }
            };
            run_raw(&mut client, &args.cf, args.hex, args.write_out, cmd).await
        }
        Cmd::Regions => {
            let scheduler = args.scheduler.as_deref().unwrap_or(DEFAULT_SCHEDULER);
            list_regions(scheduler).await
        }
        Cmd::Endpoint(cmd) => {
            let scheduler = args.scheduler.unwrap_or(DEFAULT_SCHEDULER.to_string());
            let json = args.write_out == WriteOut::Json;
            admin_task(move || admin::run_endpoint(&cmd, &scheduler, json)).await
        }
        Cmd::Store(cmd) => {
            let scheduler = args.scheduler.unwrap_or(DEFAULT_SCHEDULER.to_string());
            let json = args.write_out == WriteOut::Json;
            admin_task(move || admin::run_store(&cmd, &scheduler, json)).await
        }
        Cmd::Offline(cmd) => admin_task(move || offline::run(&cmd)).await,
        Cmd::Check(cmd) => {
            let scheduler = args.scheduler.unwrap_or(DEFAULT_SCHEDULER.to_string());
            let config = ClusterConfig {
                scheduler_timeout: std::time::Duration::from_secs(2),
                tls: crate::tls(),
                ..ClusterConfig::default()
            };
            let client = ClusterClient::connect(&scheduler, config).await?;
            Ok(check::run(&cmd, client).await)
        }
        Cmd::Gc {
            safe_point,
            life_time,
        } => {
            let scheduler = args.scheduler.unwrap_or(DEFAULT_SCHEDULER.to_string());
            let when = match (safe_point, life_time) {
                (Some(ts), _) => gc::SafePoint::At(ts),
                (None, secs) => gc::SafePoint::Ago(secs.unwrap_or_default()),
            };
            Ok(gc::run(&scheduler, when, args.write_out == WriteOut::Json).await)
        }
        Cmd::Backup(cmd) => {
            let scheduler = args.scheduler.unwrap_or(DEFAULT_SCHEDULER.to_string());
            Ok(backup::run(cmd, &scheduler, args.write_out == WriteOut::Json).await)
        }
        Cmd::Top(t) => {
            let scheduler = args.scheduler.unwrap_or(DEFAULT_SCHEDULER.to_string());
            admin_task(move || top::run(&t, &scheduler)).await
        }
        Cmd::Operator(cmd) => {
            let scheduler = args.scheduler.unwrap_or(DEFAULT_SCHEDULER.to_string());
            admin_task(move || admin::run_operator(&cmd, &scheduler)).await
        }
        Cmd::Scheduler(cmd) => {
            let scheduler = args.scheduler.unwrap_or(DEFAULT_SCHEDULER.to_string());
            let json = args.write_out == WriteOut::Json;
            admin_task(move || admin::run_scheduler(&cmd, &scheduler, json)).await
        }
        Cmd::Split { region, key } => {
            let scheduler = args.scheduler.unwrap_or(DEFAULT_SCHEDULER.to_string());
            let text = Text {
                hex: args.hex,
                json: args.write_out == WriteOut::Json,
            };
            let key = match text.bytes(&key) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(2);
                }
            };
            split(&scheduler, region, &key, text).await
        }
        Cmd::Region { key, id } => {
            let scheduler = args.scheduler.unwrap_or(DEFAULT_SCHEDULER.to_string());
            let json = args.write_out == WriteOut::Json;
            let text = Text {
                hex: args.hex,
                json,
            };
            let key = match key.map(|k| text.bytes(&k)).transpose() {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(2);
                }
            };
            admin_task(move || admin::run_region(key.as_deref(), id, &scheduler, json)).await
        }
        Cmd::Txn(cmd) => {
            // Like raw commands: --scheduler alone means the whole cluster; with neither
            // option, the default server and scheduler.
            let addr = match (&args.addr, &args.scheduler) {
                (None, Some(_)) => None,
                (addr, _) => Some(addr.as_deref().unwrap_or(DEFAULT_ADDR)),
            };
            let scheduler = args.scheduler.as_deref().unwrap_or(DEFAULT_SCHEDULER);
            let text = Text {
                hex: args.hex,
                json: args.write_out == WriteOut::Json,
            };
            run_txn(addr, scheduler, text, cmd).await
        }
    }
}

/// Runs a blocking admin command; its failure is printed, exit code 4 (could not reach or
/// read what it asked).
async fn admin_task(
    f: impl FnOnce() -> Result<u8, String> + Send + 'static,
) -> Result<u8, Failure> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(code)) => Ok(code),
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            Ok(4)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(4)
        }
    }
}

/// Splits `region` at `key`: checks the key lies inside the region (exit 3 if not), then asks
/// the leader of the key's region to split; prints both halves.
async fn split(scheduler: &str, region: u64, key: &[u8], text: Text) -> Result<u8, Failure> {
    let lookup = {
        let scheduler = scheduler.to_string();
        move || -> Result<proto::metapb::Region, String> {
            let config = RpcClientConfig {
                startup_timeout: std::time::Duration::from_secs(2),
                tls: crate::tls(),
                ..RpcClientConfig::default()
            };
            let client = RpcClient::connect(&scheduler, config).map_err(|e| e.to_string())?;
            let (r, _) = client.get_region_by_id(region).map_err(|e| e.to_string())?;
            Ok(r)
        }
    };
    let found = match tokio::task::spawn_blocking(lookup).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("error: region {region}: {e}");
            return Ok(if e.contains("not found") { 3 } else { 4 });
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(4);
        }
    };
    let inside = key > found.start_key.as_slice()
        && (found.end_key.is_empty() || key < found.end_key.as_slice());
    if !inside {
        eprintln!(
            "error: key {} is not strictly inside region {region} [{}, {})",
            text.show(key),
            text.show(&found.start_key),
            text.show(&found.end_key)
        );
        return Ok(3);
    }
    let config = ClusterConfig {
        scheduler_timeout: std::time::Duration::from_secs(2),
        tls: crate::tls(),
        ..ClusterConfig::default()
    };
    let client = ClusterClient::connect(scheduler, config).await?;
    let (left, right) = client.split_region(key).await?;
    for r in [left, right] {
        println!(
            "region {} [{}, {})",
            r.id,
            text.show(&r.start_key),
            text.show(&r.end_key)
        );
    }
    Ok(0)
}

/// Prints every region from the first key to the last, then per-store counts.
async fn list_regions(scheduler: &str) -> Result<u8, Failure> {
    let addr = scheduler.to_string();
    let failed = |reason: String| {
        Failure::Cluster(ClusterError::Scheduler {
            addr: addr.clone(),
            reason,
        })
    };
    let walk = {
        let addr = addr.clone();
        move || -> Result<Vec<String>, String> {
            let config = RpcClientConfig {
                startup_timeout: std::time::Duration::from_secs(2),
                tls: crate::tls(),
                ..RpcClientConfig::default()
            };
            let client = RpcClient::connect(&addr, config).map_err(|e| e.to_string())?;
            let regions = client
                .scan_regions(b"", b"", 0)
                .map_err(|e| e.to_string())?;
            let mut lines = Vec::new();
            let mut per_store: std::collections::BTreeMap<u64, (usize, usize)> = Default::default();
            let mut covered: &[u8] = b"";
            for (region, leader) in &regions {
                if region.start_key.as_slice() != covered {
                    lines.push(hole_line(covered, &region.start_key));
                }
                covered = &region.end_key;
                let peers: Vec<String> = region
                    .peers
                    .iter()
                    .map(|p| {
                        if p.role != proto::metapb::PeerRole::Learner as i32 {
                            per_store.entry(p.store_id).or_default().0 += 1;
                        }
                        admin::peer_text(p)
                    })
                    .collect();
                if let Some(l) = leader {
                    per_store.entry(l.store_id).or_default().1 += 1;
                }
                lines.push(format!(
                    "region {} [{:?}, {:?}) version {} peers {} leader {}",
                    region.id,
                    String::from_utf8_lossy(&region.start_key),
                    String::from_utf8_lossy(&region.end_key),
                    region.region_epoch.unwrap_or_default().version,
                    peers.join(" "),
                    leader.map_or("unknown".to_string(), |l| format!("store {}", l.store_id)),
                ));
            }
            if regions.is_empty() || !covered.is_empty() {
                lines.push(hole_line(covered, b""));
            }
            for (store, (voters, leaders)) in per_store {
                lines.push(format!("store {store}: {voters} voters, {leaders} leaders"));
            }
            Ok(lines)
        }
    };
    let lines = tokio::task::spawn_blocking(walk)
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)?;
    for l in lines {
        println!("{l}");
    }
    Ok(0)
}

/// A key range no region known to the scheduler covers.
fn hole_line(start: &[u8], end: &[u8]) -> String {
    format!(
        "hole [{:?}, {:?}) no region reported yet",
        String::from_utf8_lossy(start),
        String::from_utf8_lossy(end)
    )
}

/// A reader that stops early (`| head`) makes every later print fail: the ctl then ends at
/// once, with the status a process killed by SIGPIPE has (141), instead of panicking. (SIGPIPE
/// itself stays ignored: a server closing a connection must not kill the ctl.)
fn exit_quietly_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") {
            std::process::exit(141);
        }
        default(info);
    }));
}

#[tokio::main]
async fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    exit_quietly_when_stdout_closes();
    let matches = Args::command().get_matches();
    let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let from_env =
        |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::EnvVariable);
    args.from_env = (from_env("addr"), from_env("scheduler"));
    let paths = security::TlsPaths {
        ca_path: args.ca_path.clone(),
        cert_path: args.cert_path.clone(),
        key_path: args.key_path.clone(),
        client_cert_auth: false,
    };
    match paths.load() {
        Ok(tls) => {
            let _ = TLS.set(tls);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    match run(args).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
