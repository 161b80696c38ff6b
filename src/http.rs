//! The HTTP gateway on the status address.
//!
//! ```text
//! GET    /health               200 "ok"
//! GET    /kv/<key>[?cf=CF]     200 value | 404 key not found
//! PUT    /kv/<key>[?cf=CF]     204 (body = value) | 413 value over the limit
//! DELETE /kv/<key>[?cf=CF]     204
//! errors: 400 bad request (empty key, unknown CF, ...), 503 region/unavailable, 500 engine
//! ```

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kv::{Error, RawApi, Storage};
use proto::kvrpcpb::Context;
use serde::Deserialize;

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
        .route("/health", get(|| async { "ok\n" }))
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
        Error::Engine(_) | Error::Corrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
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
