//! The operator's commands of `tessera-ctl`: `endpoint status|health`, `store list`, `region`,
//! `transfer-leader` / `add-peer` / `remove-peer` (operators the scheduler carries out), and
//! `scheduler config get|set`.
//!
//! `endpoint` reads the stores' HTTP status ports (`/status`, `/health`): the ones named with
//! `--endpoints`, or with `--cluster` every store the scheduler knows (its status address comes
//! with its registration). `store list` and `region` ask the scheduler.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use clap::Subcommand;
use proto::metapb;
use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient};
use serde_json::Value;

/// How long one HTTP exchange with a status port may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// The default status port of a store (`make run`'s first store).
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:20180";

/// Exit code when an endpoint answered but is not healthy.
pub const EXIT_UNHEALTHY: u8 = 7;

#[derive(Subcommand, Debug)]
pub enum EndpointCmd {
    /// Print each endpoint's /status: store id, version, uptime, regions, leaders, disk
    Status(Endpoints),
    /// Check each endpoint's /health; exit 7 when one is not healthy, 4 when one cannot be
    /// reached
    Health(Endpoints),
}

#[derive(clap::Args, Debug)]
pub struct Endpoints {
    /// Status (HTTP) addresses of stores, comma separated [default: 127.0.0.1:20180]
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Every store the scheduler (--scheduler) knows, instead of --endpoints
    #[arg(long, conflicts_with = "endpoints")]
    cluster: bool,
}

#[derive(Subcommand, Debug)]
pub enum StoreCmd {
    /// List the stores the scheduler knows: id, state, client, peer and status addresses
    List,
}

/// One HTTP GET of `path` at `addr`: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = TcpStream::connect_timeout(&target, HTTP_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(HTTP_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let raw = match crate::tls() {
        Some(tls) => https_exchange(addr, s, request.as_bytes(), &tls)?,
        None => {
            s.write_all(request.as_bytes())
                .map_err(|e| format!("{addr}: {e}"))?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw)
                .map_err(|e| format!("{addr}: {e}"))?;
            raw
        }
    };
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    Ok((code, body.to_string()))
}

/// Sends `request` over TLS on `tcp` (the server's certificate checked against the CA) and
/// reads the answer to its end.
fn https_exchange(
    addr: &str,
    tcp: TcpStream,
    request: &[u8],
    tls: &security::Tls,
) -> Result<Vec<u8>, String> {
    let config = tls.https_client().map_err(|e| e.to_string())?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{addr}: {e}"))?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| format!("{addr}: {e}"))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    stream
        .write_all(request)
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => Ok(raw),
        // A server that closes without a TLS close_notify: what came is the answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(format!("{addr}: {e}")),
    }
}

pub fn scheduler_client(addr: &str) -> Result<RpcClient, String> {
    let config = RpcClientConfig {
        startup_timeout: Duration::from_secs(2),
        tls: crate::tls(),
        ..RpcClientConfig::default()
    };
    RpcClient::connect(addr, config).map_err(|e| format!("scheduler {addr}: {e}"))
}

/// The status addresses `e` names.
pub fn endpoints(e: &Endpoints, scheduler: &str) -> Result<Vec<String>, String> {
    if !e.cluster {
        return Ok(if e.endpoints.is_empty() {
            vec![DEFAULT_ENDPOINT.to_string()]
        } else {
            e.endpoints.clone()
        });
    }
    let stores = scheduler_client(scheduler)?
        .get_all_stores(true)
        .map_err(|e| format!("scheduler {scheduler}: {e}"))?;
    let mut out = Vec::new();
    for s in stores {
        if s.status_address.is_empty() {
            eprintln!("store {} registered no status address; skipped", s.id);
        } else {
            out.push(s.status_address);
        }
    }
    Ok(out)
}

fn status_line(addr: &str, doc: &Value) -> String {
    let n = |k: &str| doc[k].as_u64().map_or("-".to_string(), |v| v.to_string());
    let gib = |v: &Value| {
        v.as_u64().map_or("-".to_string(), |b| {
            format!("{:.1}GiB", b as f64 / 1024f64.powi(3))
        })
    };
    format!(
        "{addr} store {} version {} engine {} uptime {}s regions {} leaders {} disk used {} free {}{} {}",
        n("store_id"),
        doc["version"].as_str().unwrap_or("-"),
        doc["engine"].as_str().unwrap_or("-"),
        n("uptime_seconds"),
        n("regions"),
        n("leaders"),
        gib(&doc["disk"]["used_bytes"]),
        gib(&doc["disk"]["available_bytes"]),
        if doc["disk"]["full"].as_bool() == Some(true) {
            " (FULL)"
        } else {
            ""
        },
        doc["state"].as_str().unwrap_or("-"),
    )
}

/// Runs `endpoint status|health`; the exit code.
pub fn run_endpoint(cmd: &EndpointCmd, scheduler: &str, json: bool) -> Result<u8, String> {
    let (e, health) = match cmd {
        EndpointCmd::Status(e) => (e, false),
        EndpointCmd::Health(e) => (e, true),
    };
    let mut code = 0;
    let mut docs = Vec::new();
    for addr in endpoints(e, scheduler)? {
        let path = if health { "/health" } else { "/status" };
        match http_get(&addr, path) {
            Err(why) => {
                eprintln!("{addr} is unreachable: {why}");
                docs.push(serde_json::json!({ "endpoint": addr, "reachable": false }));
                code = 4;
            }
            Ok((200, _)) if health => {
                println!("{addr} is healthy");
                docs.push(serde_json::json!({ "endpoint": addr, "healthy": true }));
            }
            Ok((status, body)) if health => {
                println!("{addr} is unhealthy: {status} {}", body.trim());
                docs.push(serde_json::json!({ "endpoint": addr, "healthy": false,
                    "reason": body.trim() }));
                code = code.max(EXIT_UNHEALTHY);
            }
            Ok((200, body)) => {
                let doc: Value = serde_json::from_str(&body)
                    .map_err(|e| format!("{addr}: /status is not JSON: {e}"))?;
                if !json {
                    println!("{}", status_line(&addr, &doc));
                }
                docs.push(serde_json::json!({ "endpoint": addr, "status": doc }));
            }
            Ok((status, body)) => {
                eprintln!("{addr}: /status answered {status}: {}", body.trim());
                code = 4;
            }
        }
    }
    if json {
        println!("{}", serde_json::json!({ "endpoints": docs }));
    }
    Ok(code)
}

fn state_name(s: i32) -> &'static str {
    match metapb::StoreState::try_from(s) {
        Ok(metapb::StoreState::Up) => "up",
        Ok(metapb::StoreState::Offline) => "offline",
        Ok(metapb::StoreState::Tombstone) => "tombstone",
        Err(_) => "unknown",
    }
}

/// Runs `store list`.
pub fn run_store(cmd: &StoreCmd, scheduler: &str, json: bool) -> Result<u8, String> {
    let StoreCmd::List = cmd;
    let stores = scheduler_client(scheduler)?
        .get_all_stores(false)
        .map_err(|e| format!("scheduler {scheduler}: {e}"))?;
    if json {
        let list: Vec<Value> = stores
            .iter()
            .map(|s| {
                serde_json::json!({ "id": s.id, "state": state_name(s.state),
                    "address": s.address, "peer_address": s.peer_address,
                    "status_address": s.status_address })
            })
            .collect();
        println!("{}", serde_json::json!({ "stores": list }));
        return Ok(0);
    }
    for s in stores {
        println!(
            "store {} {} client {} peer {} status {}",
            s.id,
            state_name(s.state),
            s.address,
            s.peer_address,
            if s.status_address.is_empty() {
                "-"
            } else {
                &s.status_address
            },
        );
    }
    Ok(0)
}

/// A peer as the ctl prints it: `ID@STORE`, `(learner)` after a learner.
pub fn peer_text(p: &metapb::Peer) -> String {
    let learner = p.role == metapb::PeerRole::Learner as i32;
    format!(
        "{}@{}{}",
        p.id,
        p.store_id,
        if learner { "(learner)" } else { "" }
    )
}

/// Runs `region KEY` or `region --id ID`; 1 when the scheduler knows no such region.
pub fn run_region(
    key: Option<&[u8]>,
    id: Option<u64>,
    scheduler: &str,
    json: bool,
) -> Result<u8, String> {
    let client = scheduler_client(scheduler)?;
    let found = match (key, id) {
        (_, Some(id)) => client.get_region_by_id(id),
        (Some(key), None) => client.get_region(key),
        (None, None) => return Err("give a KEY or --id ID".to_string()),
    };
    let (region, leader) = match found {
        Ok(r) if r.0.id != 0 => r,
        Ok(_) | Err(scheduler_client::Error::NotFound(_)) => {
            eprintln!("no such region");
            return Ok(1);
        }
        Err(e) => return Err(format!("scheduler {scheduler}: {e}")),
    };
    let epoch = region.region_epoch.unwrap_or_default();
    let peers: Vec<String> = region.peers.iter().map(peer_text).collect();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "id": region.id,
                "start_key": String::from_utf8_lossy(&region.start_key),
                "end_key": String::from_utf8_lossy(&region.end_key),
                "conf_ver": epoch.conf_ver, "version": epoch.version,
                "peers": peers,
                "leader_store": leader.map(|l| l.store_id),
            })
        );
        return Ok(0);
    }
    println!(
        "region {} [{:?}, {:?}) conf_ver {} version {} peers {} leader {}",
        region.id,
        String::from_utf8_lossy(&region.start_key),
        String::from_utf8_lossy(&region.end_key),
        epoch.conf_ver,
        epoch.version,
        peers.join(" "),
        leader.map_or("unknown".to_string(), |l| format!(
            "{}@{}",
            l.id, l.store_id
        )),
    );
    Ok(0)
}

/// Changes to one region, carried out by the scheduler's operators (see `run_operator`).
#[derive(Subcommand, Debug)]
pub enum OperatorCmd {
    /// Move REGION's leader to its voter on STORE
    TransferLeader { region: u64, store: u64 },
    /// Add a voter of REGION on STORE
    AddPeer { region: u64, store: u64 },
    /// Remove REGION's peer on STORE (its leader moves away first if it is there)
    RemovePeer { region: u64, store: u64 },
}

/// Runs an operator command: the scheduler adds the operator and the region's leader carries
/// it out within a few heartbeats; `tessera-ctl region --id REGION` shows when it is done.
/// Exit 3 when the scheduler refuses it (the message says why).
pub fn run_operator(cmd: &OperatorCmd, scheduler: &str) -> Result<u8, String> {
    use proto::schedulerpb::AdminOperator;
    let (region, kind, store) = match *cmd {
        OperatorCmd::TransferLeader { region, store } => {
            (region, AdminOperator::TransferLeader, store)
        }
        OperatorCmd::AddPeer { region, store } => (region, AdminOperator::AddPeer, store),
        OperatorCmd::RemovePeer { region, store } => (region, AdminOperator::RemovePeer, store),
    };
    match scheduler_client(scheduler)?.add_operator(region, kind, store) {
        Ok(desc) => {
            println!("operator added: {desc}");
            Ok(0)
        }
        Err(
            e
            @ (scheduler_client::Error::NotFound(_) | scheduler_client::Error::InvalidArgument(_)),
        ) => {
            eprintln!("error: refused: {e}");
            Ok(3)
        }
        Err(e) => Err(format!("scheduler {scheduler}: {e}")),
    }
}

#[derive(Subcommand, Debug)]
pub enum SchedulerCmd {
    /// The scheduler's settings
    #[command(subcommand)]
    Config(ScheduleConfigCmd),
}

#[derive(Subcommand, Debug)]
pub enum ScheduleConfigCmd {
    /// Print the schedule settings
    Get,
    /// Change schedule settings; the others keep their values
    Set {
        /// Run the balance-leader scheduler
        #[arg(long)]
        balance_leader: Option<bool>,
        /// Run the balance-region scheduler
        #[arg(long)]
        balance_region: Option<bool>,
        /// At most this many operators in flight touch one store
        #[arg(long)]
        store_limit: Option<u64>,
    },
}

/// Runs `scheduler config get|set`.
pub fn run_scheduler(cmd: &SchedulerCmd, scheduler: &str, json: bool) -> Result<u8, String> {
    let SchedulerCmd::Config(cmd) = cmd;
    let client = scheduler_client(scheduler)?;
    let failed = |e: scheduler_client::Error| format!("scheduler {scheduler}: {e}");
    let mut config = client.get_schedule_config().map_err(failed)?;
    if let ScheduleConfigCmd::Set {
        balance_leader,
        balance_region,
        store_limit,
    } = *cmd
    {
        config.balance_leader = balance_leader.unwrap_or(config.balance_leader);
        config.balance_region = balance_region.unwrap_or(config.balance_region);
        config.store_limit = store_limit.unwrap_or(config.store_limit);
        match client.set_schedule_config(config) {
            Ok(()) => {}
            Err(e @ scheduler_client::Error::InvalidArgument(_)) => {
                eprintln!("error: refused: {e}");
                return Ok(3);
            }
            Err(e) => return Err(failed(e)),
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "balance_leader": config.balance_leader,
                "balance_region": config.balance_region,
                "store_limit": config.store_limit,
            })
        );
    } else {
        println!("balance-leader {}", config.balance_leader);
        println!("balance-region {}", config.balance_region);
        println!("store-limit {}", config.store_limit);
    }
    Ok(0)
}
