//! The HTTP gateway on the status address.
//!
//! ```text
//! GET    /kv?start=&end=&limit=  200 JSON pairs of a range (see `range`)
//! DELETE /kv?start=&end=       204 every key of the range deleted
//! POST   /batch/{get,put,delete}  many keys in one request, as JSON (see `batch`)
//! GET    /kv/<key>[?cf=CF]     200 value | 404 key not found
//! PUT    /kv/<key>[?cf=CF]     204 (body = value) | 413 value over the limit
//! DELETE /kv/<key>[?cf=CF]     204
//! errors: 400 bad request (empty key, unknown CF, ...), 503 region/unavailable, 500 engine,
//!         507 the disk of the store leading the key's region is full (writes only)
//! ```
//! The status routes (`/livez`, `/readyz`, `/health`, `/metrics`) are in `crate::status`.
//!
//! [`router`] serves from a local storage (the standalone engine). [`cluster_router`] serves a
//! raft store's gateway: every request goes through a [`ClusterClient`] to the leader of its
//! key's region, so the gateway of any store, follower or not, serves every key.

mod batch;
mod range;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kv::{Cf, Error, RawApi, RawLimits, Storage};
use proto::kvrpcpb::Context;
use serde::Deserialize;
use tokio::sync::OnceCell;

use tessera_client::cluster::{ClusterClient, ClusterConfig, ClusterError};

/// How long a gateway request waits for the scheduler when it first connects.
const GATEWAY_SCHEDULER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Optional query parameters of `/kv/<key>`.
#[derive(Deserialize, Default)]
pub struct KvQuery {
    /// Column family; `default` when absent.
    #[serde(default)]
    pub cf: String,
}

/// The gateway's routes over `raw`; request bodies are limited to `max_value_size` bytes.
pub fn router<S: Storage>(raw: RawApi<S>, max_value_size: usize) -> Router {
    Router::new()
        .route(
            "/kv",
            get(range::local_scan::<S>).delete(range::local_delete::<S>),
        )
        .route("/batch/get", post(batch::local_get::<S>))
        .route("/batch/put", post(batch::local_put::<S>))
        .route("/batch/delete", post(batch::local_delete::<S>))
        .route(
            "/kv/{*key}",
            get(get_key::<S>).put(put_key::<S>).delete(delete_key::<S>),
        )
        .layer(DefaultBodyLimit::max(max_value_size))
        .with_state(raw)
}

fn error_response(e: Error) -> Response {
    let status = match e {
        Error::InvalidArgument(_) | Error::UnknownCf(_) => StatusCode::BAD_REQUEST,
        Error::Region(_) | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Engine(_) | Error::Io(_) | Error::Corrupt { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    (status, format!("{e}\n")).into_response()
}

async fn run<T: Send + 'static>(
    f: impl FnOnce() -> kv::Result<T> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error_response(e)),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()),
    }
}

async fn get_key<S: Storage>(
    State(raw): State<RawApi<S>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
) -> Response {
    match run(move || raw.get(&Context::default(), &q.cf, key.as_bytes())).await {
        Ok(Some(v)) => (StatusCode::OK, v).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "key not found\n").into_response(),
        Err(r) => r,
    }
}

async fn put_key<S: Storage>(
    State(raw): State<RawApi<S>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
    body: Bytes,
) -> Response {
    let value = body.to_vec();
    match run(move || raw.put(&Context::default(), &q.cf, key.into_bytes(), value)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

async fn delete_key<S: Storage>(
    State(raw): State<RawApi<S>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
) -> Response {
    match run(move || raw.delete(&Context::default(), &q.cf, key.into_bytes())).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

/// The state of a cluster gateway: the client, connected at the first request that needs it.
struct Gateway {
    scheduler_addr: String,
    limits: RawLimits,
    client: OnceCell<ClusterClient>,
}

impl Gateway {
    /// The client; a failed connection is not remembered, so the next request tries again.
    async fn client(&self) -> Result<&ClusterClient, Response> {
        let config = ClusterConfig {
            scheduler_timeout: GATEWAY_SCHEDULER_TIMEOUT,
            ..ClusterConfig::default()
        };
        self.client
            .get_or_try_init(|| ClusterClient::connect(&self.scheduler_addr, config))
            .await
            .map_err(cluster_error_response)
    }

    /// The checks the raw API makes, made here so bad input gets its 400 without a round trip
    /// (the leader checks again).
    fn check(&self, cf: &str, key: &[u8]) -> kv::Result<()> {
        Cf::from_name(cf)?;
        if key.is_empty() || key.len() > self.limits.max_key_size {
            return Err(Error::InvalidArgument(format!(
                "key of {} bytes is outside 1..={} bytes",
                key.len(),
                self.limits.max_key_size
            )));
        }
        Ok(())
    }

    /// Checks the request, then hands out the client to send it with.
    async fn ready(&self, cf: &str, key: &[u8]) -> Result<&ClusterClient, Response> {
        self.check(cf, key).map_err(error_response)?;
        self.client().await
    }

    /// [`Gateway::ready`] for a request about many keys or a range: checks its column family.
    async fn ready_cf(&self, cf: &str) -> Result<&ClusterClient, Response> {
        Cf::from_name(cf).map_err(error_response)?;
        self.client().await
    }
}

/// The gateway's routes for a raft store: requests go to the region leaders of the cluster run
/// by the scheduler at `scheduler_addr`, connected to at the first request.
pub fn cluster_router(scheduler_addr: String, limits: RawLimits) -> Router {
    let max_value_size = limits.max_value_size;
    let gateway = Arc::new(Gateway {
        scheduler_addr,
        limits,
        client: OnceCell::new(),
    });
    Router::new()
        .route(
            "/kv",
            get(range::cluster_scan).delete(range::cluster_delete),
        )
        .route("/batch/get", post(batch::cluster_get))
        .route("/batch/put", post(batch::cluster_put))
        .route("/batch/delete", post(batch::cluster_delete))
        .route(
            "/kv/{*key}",
            get(cluster_get).put(cluster_put).delete(cluster_delete),
        )
        .layer(DefaultBodyLimit::max(max_value_size))
        .with_state(gateway)
}

fn cluster_error_response(e: ClusterError) -> Response {
    let status = match e {
        ClusterError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ClusterError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
        ClusterError::Scheduler { .. }
        | ClusterError::GaveUp { .. }
        | ClusterError::Undetermined { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, format!("{e}\n")).into_response()
}

async fn cluster_get(
    State(gw): State<Arc<Gateway>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
) -> Response {
    let client = match gw.ready(&q.cf, key.as_bytes()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match client.get(&q.cf, key.as_bytes()).await {
        Ok(Some(v)) => (StatusCode::OK, v).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "key not found\n").into_response(),
        Err(e) => cluster_error_response(e),
    }
}

async fn cluster_put(
    State(gw): State<Arc<Gateway>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
    body: Bytes,
) -> Response {
    let client = match gw.ready(&q.cf, key.as_bytes()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match client.put(&q.cf, key.as_bytes(), &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => cluster_error_response(e),
    }
}

async fn cluster_delete(
    State(gw): State<Arc<Gateway>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
) -> Response {
    let client = match gw.ready(&q.cf, key.as_bytes()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match client.delete(&q.cf, key.as_bytes()).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => cluster_error_response(e),
    }
}
