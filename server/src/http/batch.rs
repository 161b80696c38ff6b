//! `POST /batch/get`, `/batch/put`, `/batch/delete`: many keys in one request, as JSON.
//!
//! ```text
//! POST /batch/get[?cf=CF][&encoding=utf8|hex|base64]     {"keys":["a","b"]}
//!   200 {"kvs":[{"key":"a","value":"1"}],"truncated":false}   (present keys, in key order)
//! POST /batch/put[?cf=..][&encoding=..]     {"kvs":[{"key":"a","value":"1"},...]}   204
//! POST /batch/delete[?cf=..][&encoding=..]  {"keys":["a","b"]}                        204
//! ```
//! Keys and values are written in `encoding` (see `range`). On a standalone store a batch is one
//! write; through a raft store's gateway it is split by region, one write per region (a failed
//! write has applied the regions of smaller keys). A body that is not such JSON is a 400.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::backend::Backend;
use super::range::{answer, bad_request, Encoding};

/// The query of a batch request.
#[derive(Deserialize, Default)]
pub struct BatchQuery {
    #[serde(default)]
    cf: String,
    #[serde(default)]
    encoding: String,
    /// Seconds every put key lives (`/batch/put`); 0 or absent: for ever.
    #[serde(default)]
    ttl: u64,
}

#[derive(Deserialize)]
struct Keys {
    keys: Vec<String>,
}

#[derive(Deserialize)]
struct Pair {
    key: String,
    value: String,
}

#[derive(Deserialize)]
struct Pairs {
    kvs: Vec<Pair>,
}

type KeysAndValues = Vec<(Vec<u8>, Vec<u8>)>;

/// The keys of a `{"keys":[...]}` body, in the query's encoding; or why the request is bad.
fn keys(q: &BatchQuery, body: &[u8]) -> Result<(Encoding, Vec<Vec<u8>>), String> {
    let encoding = Encoding::parse(&q.encoding)?;
    let keys: Keys = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not {{\"keys\":[...]}}: {e}"))?;
    let keys = keys
        .keys
        .iter()
        .map(|k| encoding.decode(k))
        .collect::<Result<_, _>>()?;
    Ok((encoding, keys))
}

/// The pairs of a `{"kvs":[...]}` body, in the query's encoding; or why the request is bad.
fn pairs(q: &BatchQuery, body: &[u8]) -> Result<KeysAndValues, String> {
    let encoding = Encoding::parse(&q.encoding)?;
    let pairs: Pairs = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not {{\"kvs\":[{{\"key\":..,\"value\":..}}]}}: {e}"))?;
    pairs
        .kvs
        .iter()
        .map(|p| Ok((encoding.decode(&p.key)?, encoding.decode(&p.value)?)))
        .collect()
}

/// `POST /batch/get`.
pub(super) async fn get<B: Backend>(
    State(b): State<Arc<B>>,
    Query(q): Query<BatchQuery>,
    body: Bytes,
) -> Response {
    let (encoding, keys) = match keys(&q, &body) {
        Ok(k) => k,
        Err(reason) => return bad_request(reason),
    };
    match b.batch_get(q.cf, keys).await {
        Ok(pairs) => answer(encoding, false, pairs, false),
        Err(r) => r,
    }
}

/// `POST /batch/put`: one write on a standalone store, one per region through a raft store.
pub(super) async fn put<B: Backend>(
    State(b): State<Arc<B>>,
    Query(q): Query<BatchQuery>,
    body: Bytes,
) -> Response {
    let pairs = match pairs(&q, &body) {
        Ok(p) => p,
        Err(reason) => return bad_request(reason),
    };
    match b.batch_put(q.cf, pairs, q.ttl).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

/// `POST /batch/delete`, written as `/batch/put` is.
pub(super) async fn delete<B: Backend>(
    State(b): State<Arc<B>>,
    Query(q): Query<BatchQuery>,
    body: Bytes,
) -> Response {
    let (_, keys) = match keys(&q, &body) {
        Ok(k) => k,
        Err(reason) => return bad_request(reason),
    };
    match b.batch_delete(q.cf, keys).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}
