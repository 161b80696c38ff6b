//! The status routes of the HTTP gateway, and what they read.
//!
//! ```text
//! GET /livez    200 "live"    | 503 why: the raft worker stopped, or has not run for 30 s
//! GET /readyz   200 "ready"   | 503 why: not live, or the server is stopping
//! GET /health   same as /readyz (200 "ok")
//! GET /metrics  Prometheus text: every metric of the store (README, "Operating Tessera")
//! GET /status   JSON: store id, addresses, version and git revision, uptime, regions, leaders,
//!               disk used/free, whether the raft worker is alive
//! ```
//! A standalone server is live and ready while it runs. A raft store is ready once it has
//! joined its cluster (it serves only after that) and while its raft worker — which also applies
//! — is live. A store whose disk is full stays ready (it serves reads) and says so in the body
//! of `/readyz` and in `/metrics`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Registry, TextEncoder};
use raftstore::{StoreHealth, StoreMetrics};
use serde_json::json;
use tokio::sync::watch;

/// How long the raft worker may go without turning its loop before the store is not live. It
/// turns at least once a raft tick; only a stuck disk or a bug keeps it away this long.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(30);

/// What a server is, for `GET /status`.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// `standalone`, `memory` or `raft`.
    pub engine: String,
    /// The client gRPC address.
    pub addr: SocketAddr,
    /// The peer address (raft stores).
    pub peer_addr: Option<SocketAddr>,
    /// This HTTP port's address.
    pub status_addr: SocketAddr,
    /// Where the data lives.
    pub data_dir: PathBuf,
    /// When the server started.
    pub started: Instant,
}

/// A raft store's state, for the status routes.
#[derive(Clone)]
pub struct RaftStatus {
    /// The store's id.
    pub store_id: u64,
    /// Its raft worker and disk.
    pub health: Arc<StoreHealth>,
    /// Its raftstore metrics.
    pub metrics: Arc<StoreMetrics>,
    /// The MVCC GC safe point the store enforces.
    pub gc_safe_point: Arc<dyn Fn() -> u64 + Send + Sync>,
}

/// What the status routes report on.
#[derive(Clone)]
pub struct StatusSource {
    /// What the server is.
    pub info: Arc<ServerInfo>,
    /// The server's own metrics (the client service's requests).
    pub registry: Registry,
    /// Turns true when the server stops.
    pub stopping: watch::Receiver<bool>,
    /// The raft store, when the server is one; a standalone server is live and ready while it
    /// runs.
    pub raft: Option<RaftStatus>,
}

impl StatusSource {
    /// `Ok` when live, else why not.
    pub fn live(&self) -> Result<(), String> {
        match &self.raft {
            None => Ok(()),
            Some(r) => r
                .health
                .check_live(LIVENESS_TIMEOUT)
                .map_err(|e| e.to_string()),
        }
    }

    /// `Ok` with a note when ready, else why not.
    pub fn ready(&self) -> Result<String, String> {
        self.live()?;
        if *self.stopping.borrow() {
            return Err("the server is stopping".to_string());
        }
        match &self.raft {
            Some(r) if r.health.disk_full() => {
                Ok("ready (disk full: writes are refused, reads served)".to_string())
            }
            _ => Ok("ready".to_string()),
        }
    }

    /// Every metric of the server, in Prometheus' text format.
    fn metrics_text(&self) -> Result<String, String> {
        let mut families = self.registry.gather();
        if let Some(r) = &self.raft {
            families.extend(r.metrics.registry().gather());
        }
        families.sort_by(|a, b| a.name().cmp(b.name()));
        TextEncoder::new()
            .encode_to_string(&families)
            .map_err(|e| e.to_string())
    }

    /// The `GET /status` document. Walks the data directory for its size: call it off the
    /// async workers.
    pub fn status_json(&self) -> serde_json::Value {
        let info = &self.info;
        let ready = self.ready();
        let mut doc = json!({
            "version": crate::VERSION,
            "git_revision": crate::GIT_REVISION,
            "engine": info.engine,
            "addr": info.addr.to_string(),
            "peer_addr": info.peer_addr.map(|a| a.to_string()),
            "status_addr": info.status_addr.to_string(),
            "data_dir": info.data_dir.display().to_string(),
            "uptime_seconds": info.started.elapsed().as_secs(),
            "live": self.live().is_ok(),
            "ready": ready.is_ok(),
            "state": ready.unwrap_or_else(|why| format!("not ready: {why}")),
            "disk": {
                "used_bytes": dir_size(&info.data_dir),
                "available_bytes": null,
                "full": false,
            },
            "store_id": null,
        });
        if let Some(r) = &self.raft {
            let c = r.metrics.peer_counts();
            doc["store_id"] = json!(r.store_id);
            doc["raft_worker_alive"] = json!(r.health.check_live(LIVENESS_TIMEOUT).is_ok());
            doc["gc_safe_point"] = json!((r.gc_safe_point)());
            doc["regions"] = json!(c.regions);
            doc["leaders"] = json!(c.leaders);
            doc["pending_peers"] = json!(c.pending_peers);
            doc["apply_pending_entries"] = json!(c.apply_pending_entries);
            doc["disk"]["available_bytes"] = json!(r.health.disk_available());
            doc["disk"]["full"] = json!(r.health.disk_full());
        }
        doc
    }
}

/// Bytes of the files under `dir`, as far as they can be read.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

async fn livez(State(s): State<StatusSource>) -> Response {
    match s.live() {
        Ok(()) => (StatusCode::OK, "live\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not live: {why}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(s): State<StatusSource>) -> Response {
    match s.ready() {
        Ok(note) => (StatusCode::OK, format!("{note}\n")).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn health(State(s): State<StatusSource>) -> Response {
    match s.ready() {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<StatusSource>) -> Response {
    net::metrics_response(s.metrics_text())
}

async fn status(State(s): State<StatusSource>) -> Response {
    match tokio::task::spawn_blocking(move || s.status_json()).await {
        Ok(doc) => net::json_response(format!("{doc:#}")),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The status routes over `source`, to merge into a gateway's router.
pub fn routes(source: StatusSource) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(source)
}

/// Keeps the standard gRPC health service (`grpc.health.v1.Health`) in step with
/// [`StatusSource::ready`]: `SERVING` for the server ("") and `tinykvpb.TinyKv` while ready,
/// `NOT_SERVING` otherwise. Runs until `stop` turns true.
pub async fn report_grpc_health(
    source: StatusSource,
    reporter: tonic_health::server::HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    use tonic_health::ServingStatus;
    let mut last = None;
    loop {
        let status = if source.ready().is_ok() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            reporter.set_service_status("", status).await;
            reporter.set_service_status("tinykvpb.TinyKv", status).await;
            last = Some(status);
        }
        let stopping = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
            reporter
                .set_service_status("tinykvpb.TinyKv", ServingStatus::NotServing)
                .await;
            return;
        }
    }
}
