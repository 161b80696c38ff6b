//! The scheduler's status port (HTTP): what an operator reads, and what Prometheus scrapes.
//!
//! ```text
//! GET /health   200 "ok" while the scheduler serves
//! GET /metrics  Prometheus text (see `metrics`)
//! GET /status   JSON: cluster id, version, addresses, uptime, bootstrapped, store and region counts
//! GET /stores   JSON: every store — id, address, state, down, seconds since heard of, counts,
//!               capacity and available bytes from its last heartbeat
//! GET /regions  JSON: every region — id, range (hex), epoch, peers, leader, size
//! ```

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use proto::metapb::{self, PeerRole, StoreState};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::region::{RegionInfo, StoreInfo};

/// What the routes answer from.
#[derive(Clone)]
struct Status {
    cluster: Arc<Cluster>,
    version: String,
    grpc_addr: SocketAddr,
    status_addr: SocketAddr,
    started: Instant,
}

/// A running status port.
pub struct StatusServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Ends when the port stops.
    pub task: JoinHandle<std::io::Result<()>>,
}

/// Serves the status routes of `cluster` on `listener` until `stop` turns true. `version` and
/// `grpc_addr` are reported by `/status`.
///
/// # Errors
/// When the listener's address cannot be read.
pub fn serve(
    cluster: Arc<Cluster>,
    listener: TcpListener,
    version: &str,
    grpc_addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<StatusServer> {
    let addr = listener.local_addr()?;
    let state = Status {
        cluster,
        version: version.to_string(),
        grpc_addr,
        status_addr: addr,
        started: Instant::now(),
    };
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/stores", get(stores))
        .route("/regions", get(regions));
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let max = state.cluster.config().max_connections;
    let tls = state
        .cluster
        .config()
        .security
        .load()
        .and_then(|t| t.map(|t| t.https_server()).transpose())
        .map_err(|e| std::io::Error::other(format!("[security]: {e}")))?;
    let app = app.with_state(state);
    // HTTPS with the scheduler's certificate when TLS is on.
    let task = match tls {
        Some(config) => tokio::spawn(
            axum::serve(net::TlsListener::new(listener, max, config)?, app)
                .with_graceful_shutdown(stopped)
                .into_future(),
        ),
        None => tokio::spawn(
            axum::serve(net::BoundedListener::new(listener, max), app)
                .with_graceful_shutdown(stopped)
                .into_future(),
        ),
    };
    Ok(StatusServer { addr, task })
}

fn json_response(doc: &Value) -> Response {
    net::json_response(format!("{doc:#}"))
}

async fn metrics(State(s): State<Status>) -> Response {
    net::metrics_response(s.cluster.metrics().encode())
}

async fn status(State(s): State<Status>) -> Response {
    let c = &s.cluster;
    let stores = c.get_all_stores(true).map_or(0, |v| v.len());
    let regions = c.regions().len();
    json_response(&json!({
        "cluster_id": c.cluster_id(),
        "version": s.version,
        "addr": s.grpc_addr.to_string(),
        "status_addr": s.status_addr.to_string(),
        "uptime_seconds": s.started.elapsed().as_secs(),
        "bootstrapped": c.is_bootstrapped(),
        "stores": stores,
        "regions": regions,
    }))
}

fn store_json(s: &StoreInfo, now_ms: u64, max_down_ms: u64) -> Value {
    let state = match s.state() {
        StoreState::Up => "up",
        StoreState::Offline => "offline",
        StoreState::Tombstone => "tombstone",
    };
    let stats = s.stats.unwrap_or_default();
    json!({
        "id": s.id(),
        "address": s.meta.address,
        "state": state,
        "down": s.is_down(now_ms, max_down_ms),
        "last_heard_seconds_ago": now_ms.saturating_sub(s.last_seen_ms) / 1000,
        "regions": s.counts.region_count,
        "leaders": s.counts.leader_count,
        "pending_peers": s.counts.pending_peer_count,
        "capacity_bytes": stats.capacity,
        "available_bytes": stats.available,
    })
}

async fn stores(State(s): State<Status>) -> Response {
    let c = &s.cluster;
    let now = c.clock().now_ms();
    let max_down = c.config().max_store_down_time_ms;
    match c.get_all_stores(false) {
        Ok(list) => json_response(&json!({
            "stores": list.iter().map(|st| store_json(st, now, max_down)).collect::<Vec<_>>(),
        })),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

fn peer_json(p: &metapb::Peer) -> Value {
    let role = if p.role == PeerRole::Learner as i32 {
        "learner"
    } else {
        "voter"
    };
    json!({ "id": p.id, "store_id": p.store_id, "role": role })
}

/// A region as `/regions` lists it (keys in hex: they are bytes).
pub fn region_json(r: &RegionInfo) -> Value {
    let (conf_ver, version) = r.epoch();
    json!({
        "id": r.id(),
        "start_key": hex(&r.region.start_key),
        "end_key": hex(&r.region.end_key),
        "epoch": { "conf_ver": conf_ver, "version": version },
        "peers": r.region.peers.iter().map(peer_json).collect::<Vec<_>>(),
        "leader": r.leader.as_ref().map(peer_json),
        "approximate_size": r.approximate_size,
        "approximate_keys": r.approximate_keys,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn regions(State(s): State<Status>) -> Response {
    let list = s.cluster.regions();
    json_response(&json!({
        "regions": list.iter().map(region_json).collect::<Vec<_>>(),
    }))
}
