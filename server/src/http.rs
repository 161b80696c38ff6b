//! The HTTP gateway on the status address.
//!
//! ```text
//! GET    /kv?start=&end=&limit=  200 JSON pairs of a range (see `range`)
//! DELETE /kv?start=&end=       204 every key of the range deleted
//! POST   /batch/{get,put,delete}  many keys in one request, as JSON (see `batch`)
//! GET    /kv/<key>[?cf=CF]     200 value | 404 key not found
//! PUT    /kv/<key>[?cf=CF][&ttl=SECS]  204 (body = value) | 413 value over the limit
//! DELETE /kv/<key>[?cf=CF]     204
//! errors: 400 bad request (empty key, unknown CF, ...), 503 region/unavailable, 500 engine,
//!         507 the disk of the store leading the key's region is full (writes only)
//! ```
//! The status routes (`/livez`, `/readyz`, `/health`, `/metrics`) are in `crate::status`.
//!
//! [`router`] serves from a local storage (the standalone engine). [`cluster_router`] serves a
//! raft store's gateway: a request for one key is first offered to this store's own raft peer of
//! the key's region, which serves it when it leads the region (no network hop, and no need of
//! the scheduler); when the store has no such peer or it does not lead, the peer refuses at once
//! without applying anything, and the request goes through a [`ClusterClient`] to the leader of
//! the key's region. So the gateway of any store, follower or not, serves every key. Ranges and
//! batches always go through the cluster client.

mod backend;
mod batch;
mod range;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kv::{Cf, Error, RawApi, RawLimits, Storage, StorageFuture};
use serde::Deserialize;
use tokio::sync::OnceCell;

use tessera_client::cluster::{ClusterClient, ClusterConfig, ClusterError};

use backend::{Backend, Local};

/// How long a gateway request waits for the scheduler when it first connects.
const GATEWAY_SCHEDULER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a request served by this store's own peer waits for its answer, as a gRPC call does
/// (past it, a write's outcome is unknown).
const LOCAL_REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Optional query parameters of `/kv/<key>`.
#[derive(Deserialize, Default)]
pub struct KvQuery {
    /// Column family; `default` when absent.
    #[serde(default)]
    pub cf: String,
    /// Seconds a put key lives; 0 or absent: for ever.
    #[serde(default)]
    pub ttl: u64,
}

/// The gateway's routes over `raw`; request bodies are limited to `max_value_size` bytes.
pub fn router<S: Storage>(raw: RawApi<S>, max_value_size: usize) -> Router {
    routes(Arc::new(Local(raw)), max_value_size)
}

/// The routes, whatever the backend.
fn routes<B: Backend>(backend: Arc<B>, max_value_size: usize) -> Router {
    Router::new()
        .route("/kv", get(range::scan::<B>).delete(range::delete::<B>))
        .route("/batch/get", post(batch::get::<B>))
        .route("/batch/put", post(batch::put::<B>))
        .route("/batch/delete", post(batch::delete::<B>))
        .route(
            "/kv/{*key}",
            get(get_key::<B>).put(put_key::<B>).delete(delete_key::<B>),
        )
        .layer(DefaultBodyLimit::max(max_value_size))
        .with_state(backend)
}

fn error_response(e: Error) -> Response {
    let status = match e {
        Error::InvalidArgument(_) | Error::UnknownCf(_) => StatusCode::BAD_REQUEST,
        // The disk of the store leading the key's region is full (the gateway's own store).
        Error::Region(ref r) if r.disk_full.is_some() => StatusCode::INSUFFICIENT_STORAGE,
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

async fn get_key<B: Backend>(
    State(b): State<Arc<B>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
) -> Response {
    match b.get(q.cf, key.into_bytes()).await {
        Ok(Some(v)) => (StatusCode::OK, v).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "key not found\n").into_response(),
        Err(r) => r,
    }
}

async fn put_key<B: Backend>(
    State(b): State<Arc<B>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
    body: Bytes,
) -> Response {
    match b.put(q.cf, key.into_bytes(), body.to_vec(), q.ttl).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

async fn delete_key<B: Backend>(
    State(b): State<Arc<B>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
) -> Response {
    match b.delete(q.cf, key.into_bytes()).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

/// The state of a cluster gateway: this store's own raft storage, and the client, connected at
/// the first request that needs it.
struct Gateway {
    scheduler_addr: String,
    tls: Option<security::Tls>,
    limits: RawLimits,
    local: Option<RawApi<raftstore::RaftStorage>>,
    client: OnceCell<ClusterClient>,
}

/// What this store's own peer made of a request for one key.
enum OwnPeer<T> {
    /// It answered (a value, or an error that is the request's answer).
    Answered(kv::Result<T>),
    /// It did not take the request, and nothing was applied: it has no peer of the key's region,
    /// or its peer does not lead; the request goes to the leader through the cluster client.
    Declined,
}

impl Gateway {
    /// Serves a request for one key: by this store's own peer when it leads the key's region
    /// (`local`), else by the cluster client (`remote`).
    async fn serve<T>(
        &self,
        local: impl FnOnce(&RawApi<raftstore::RaftStorage>) -> StorageFuture<T>,
        remote: impl AsyncFnOnce(&ClusterClient) -> Result<T, ClusterError>,
    ) -> Result<T, Response> {
        match self.local(local).await {
            OwnPeer::Answered(answer) => answer.map_err(error_response),
            OwnPeer::Declined => {
                let client = self.client().await?;
                remote(client).await.map_err(cluster_error_response)
            }
        }
    }

    /// Offers a request to this store's own peer (see [`OwnPeer`]).
    async fn local<T>(
        &self,
        call: impl FnOnce(&RawApi<raftstore::RaftStorage>) -> StorageFuture<T>,
    ) -> OwnPeer<T> {
        let Some(raw) = &self.local else {
            return OwnPeer::Declined;
        };
        match tokio::time::timeout(LOCAL_REPLY_TIMEOUT, call(raw)).await {
            Err(_) => OwnPeer::Answered(Err(Error::Unavailable(format!(
                "no answer from the store within {LOCAL_REPLY_TIMEOUT:?}: the outcome is unknown"
            )))),
            // Refused before anything was applied: the leader elsewhere can take it. A full disk
            // is this store's own answer when it leads, and the cluster client's when not.
            Ok(Err(Error::Region(e))) if e.proves_not_applied() && e.disk_full.is_none() => {
                OwnPeer::Declined
            }
            Ok(answer) => OwnPeer::Answered(answer),
        }
    }
}

impl Gateway {
    /// The client; a failed connection is not remembered, so the next request tries again.
    async fn client(&self) -> Result<&ClusterClient, Response> {
        let config = ClusterConfig {
            scheduler_timeout: GATEWAY_SCHEDULER_TIMEOUT,
            tls: self.tls.clone(),
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

    /// For a request about many keys or a range: checks its column family, then hands out the
    /// client to send it with.
    async fn ready_cf(&self, cf: &str) -> Result<&ClusterClient, Response> {
        Cf::from_name(cf).map_err(error_response)?;
        self.client().await
    }
}

/// The gateway's routes for a raft store: requests go to the region leaders of the cluster run
/// by the scheduler at `scheduler_addr`, connected to at the first request; requests for one
/// key that this store's `local` raft storage leads are served by it.
pub fn cluster_router(
    scheduler_addr: String,
    tls: Option<security::Tls>,
    limits: RawLimits,
    local: Option<RawApi<raftstore::RaftStorage>>,
) -> Router {
    let max_value_size = limits.max_value_size;
    let gateway = Arc::new(Gateway {
        scheduler_addr,
        tls,
        limits,
        local,
        client: OnceCell::new(),
    });
    routes(gateway, max_value_size)
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
