//! The status routes of the HTTP gateway, and what they read.
//!
//! ```text
//! GET /livez    200 "live"    | 503 why: the raft worker stopped, or has not run for 30 s
//! GET /readyz   200 "ready"   | 503 why: not live, or the server is stopping
//! GET /health   same as /readyz (200 "ok")
//! GET /metrics  Prometheus text: raft writes, dropped raft messages by reason, busy commands,
//!               disk state
//! ```
//! A standalone server is live and ready while it runs. A raft store is ready once it has
//! joined its cluster (it serves only after that) and while its raft worker — which also applies
//! — is live. A store whose disk is full stays ready (it serves reads) and says so in the body
//! of `/readyz` and in `/metrics`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use raftstore::{DropReason, StoreHealth, StoreMetrics};
use tokio::sync::watch;

/// How long the raft worker may go without turning its loop before the store is not live. It
/// turns at least once a raft tick; only a stuck disk or a bug keeps it away this long.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(30);

/// What the status routes report on.
#[derive(Clone)]
pub enum StatusSource {
    /// A standalone server: live and ready while it runs.
    Standalone {
        /// Turns true when the server stops.
        stopping: watch::Receiver<bool>,
    },
    /// A raft store.
    Raft {
        /// The store's id.
        store_id: u64,
        /// Its raft worker and disk.
        health: Arc<StoreHealth>,
        /// Its counters.
        metrics: Arc<StoreMetrics>,
        /// Turns true when the server stops.
        stopping: watch::Receiver<bool>,
    },
}

impl StatusSource {
    /// `Ok` when live, else why not.
    pub fn live(&self) -> Result<(), String> {
        match self {
            StatusSource::Standalone { .. } => Ok(()),
            StatusSource::Raft { health, .. } => health
                .check_live(LIVENESS_TIMEOUT)
                .map_err(|e| e.to_string()),
        }
    }

    /// `Ok` with a note when ready, else why not.
    pub fn ready(&self) -> Result<String, String> {
        self.live()?;
        let stopping = match self {
            StatusSource::Standalone { stopping } | StatusSource::Raft { stopping, .. } => {
                *stopping.borrow()
            }
        };
        if stopping {
            return Err("the server is stopping".to_string());
        }
        match self {
            StatusSource::Raft { health, .. } if health.disk_full() => {
                Ok("ready (disk full: writes are refused, reads served)".to_string())
            }
            _ => Ok("ready".to_string()),
        }
    }

    fn metrics_text(&self) -> String {
        let mut out = String::new();
        let StatusSource::Raft {
            store_id,
            health,
            metrics,
            ..
        } = self
        else {
            return out;
        };
        let l = format!("store_id=\"{store_id}\"");
        let engine = [
            (
                "tessera_raft_engine_writes_total",
                metrics.raft_engine_writes(),
            ),
            (
                "tessera_raft_engine_syncs_total",
                metrics.raft_engine_syncs(),
            ),
        ];
        for (name, value) in engine {
            metric(&mut out, "counter", name, &l, value);
        }
        let _ = writeln!(out, "# TYPE tessera_raft_messages_dropped_total counter");
        for r in DropReason::ALL {
            let _ = writeln!(
                out,
                "tessera_raft_messages_dropped_total{{{l},reason=\"{}\"}} {}",
                r.as_str(),
                metrics.dropped_messages(r)
            );
        }
        let commands = [
            ("tessera_busy_commands_total", metrics.busy_commands()),
            ("tessera_write_entries_total", metrics.write_entries()),
            ("tessera_write_commands_total", metrics.write_commands()),
        ];
        for (name, value) in commands {
            metric(&mut out, "counter", name, &l, value);
        }
        let full = u64::from(health.disk_full());
        metric(&mut out, "gauge", "tessera_disk_full", &l, full);
        out
    }
}

/// Appends one metric of one series, labelled `labels`, with its `# TYPE` line.
fn metric(out: &mut String, kind: &str, name: &str, labels: &str, value: u64) {
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
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
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics_text(),
    )
        .into_response()
}

/// The status routes over `source`, to merge into a gateway's router.
pub fn routes(source: StatusSource) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
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
