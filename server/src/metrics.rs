//! The client service's metrics: requests by type and result, and their latency. They live in
//! the store's registry next to the raftstore's (see `raftstore::StoreMetrics`) and are
//! published at `GET /metrics`.
//!
//! A request's result is `ok`; `region_error` (the client retries elsewhere: not leader, epoch
//! changed, the storage did not answer in time, ...); `error` (the request was refused, or a
//! transaction met a key error); or `grpc_error` (answered with a gRPC status).

use std::time::Duration;

use prometheus::{Histogram, IntCounter, Registry};
use proto::kvrpcpb::*;
use raftstore::{duration_buckets, MetricsBuilder};
use tonic::{Response, Status};

/// Every request type the service counts, as labelled.
pub const REQUEST_TYPES: [&str; 18] = [
    "raw_get",
    "raw_put",
    "raw_delete",
    "raw_batch_get",
    "raw_batch_put",
    "raw_batch_delete",
    "raw_delete_range",
    "raw_scan",
    "raw_compare_and_swap",
    "split_region",
    "kv_get",
    "kv_scan",
    "kv_prewrite",
    "kv_commit",
    "kv_check_txn_status",
    "kv_batch_rollback",
    "kv_resolve_lock",
    "kv_gc",
];

/// Every result a request is counted under.
pub const RESULTS: [&str; 4] = ["ok", "region_error", "error", "grpc_error"];

/// Requests served, by type and result, and their latency. Every series is made at start and
/// held, so recording takes no lock and no label lookup.
pub struct RequestMetrics {
    /// By type (in [`REQUEST_TYPES`] order), then by result (in [`RESULTS`] order).
    requests: Vec<Vec<IntCounter>>,
    duration: Vec<Histogram>,
}

impl RequestMetrics {
    /// The metrics, registered in `registry`; every series exists from the start.
    ///
    /// # Errors
    /// When `registry` already holds them.
    pub fn new(registry: &Registry) -> prometheus::Result<RequestMetrics> {
        let b = MetricsBuilder(registry);
        let requests = b.counter_vec(
            "tessera_requests_total",
            "Client requests served, by type and result",
            &["type", "result"],
        )?;
        let duration = b.histogram_vec(
            "tessera_request_duration_seconds",
            "Time to answer a client request, by type",
            &["type"],
            duration_buckets(),
        )?;
        Ok(RequestMetrics {
            requests: REQUEST_TYPES
                .iter()
                .map(|t| {
                    RESULTS
                        .iter()
                        .map(|r| requests.with_label_values(&[t, r]))
                        .collect()
                })
                .collect(),
            duration: REQUEST_TYPES
                .iter()
                .map(|t| duration.with_label_values(&[t]))
                .collect(),
        })
    }

    /// Records a request of type `kind` (one of [`REQUEST_TYPES`]) answered with `result` (one
    /// of [`RESULTS`]) after `took`; anything else is not recorded.
    pub fn observe(&self, kind: &str, result: &str, took: Duration) {
        let Some(t) = REQUEST_TYPES.iter().position(|k| *k == kind) else {
            return;
        };
        if let Some(r) = RESULTS.iter().position(|x| *x == result) {
            self.requests[t][r].inc();
        }
        self.duration[t].observe(took.as_secs_f64());
    }
}

/// What an answer says of its request, as a metric's `result`.
pub trait Outcome {
    /// `ok`, `region_error` or `error`.
    fn result(&self) -> &'static str;
}

fn result_of(region_error: bool, error: bool) -> &'static str {
    match (region_error, error) {
        (true, _) => "region_error",
        (false, true) => "error",
        (false, false) => "ok",
    }
}

/// Responses with a region error and an error message or key error.
macro_rules! outcome {
    ($($t:ty => |$r:ident| $error:expr),* $(,)?) => {
        $(impl Outcome for $t {
            fn result(&self) -> &'static str {
                let $r = self;
                result_of($r.region_error.is_some(), $error)
            }
        })*
    };
}

outcome!(
    RawGetResponse => |r| !r.error.is_empty(),
    RawPutResponse => |r| !r.error.is_empty(),
    RawDeleteResponse => |r| !r.error.is_empty(),
    RawBatchGetResponse => |r| !r.error.is_empty(),
    RawBatchPutResponse => |r| !r.error.is_empty(),
    RawBatchDeleteResponse => |r| !r.error.is_empty(),
    RawDeleteRangeResponse => |r| !r.error.is_empty(),
    RawScanResponse => |r| !r.error.is_empty(),
    RawCasResponse => |r| !r.error.is_empty(),
    SplitRegionResponse => |r| !r.error.is_empty(),
    GetResponse => |r| r.error.is_some(),
    ScanResponse => |r| r.error.is_some() || r.pairs.iter().any(|p| p.error.is_some()),
    PrewriteResponse => |r| !r.errors.is_empty(),
    CommitResponse => |r| r.error.is_some(),
    CheckTxnStatusResponse => |_r| false,
    BatchRollbackResponse => |r| r.error.is_some(),
    ResolveLockResponse => |r| r.error.is_some(),
    GcResponse => |r| r.error.is_some(),
);

impl<T: Outcome> Outcome for Result<Response<T>, Status> {
    fn result(&self) -> &'static str {
        match self {
            Ok(r) => r.get_ref().result(),
            Err(_) => "grpc_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_say_what_the_answer_says_1() {
        let ok: Result<Response<RawGetResponse>, Status> =
            Ok(Response::new(RawGetResponse::default()));
        assert_eq!(ok.result(), "ok");
        let refused = RawPutResponse {
            error: "value too large".into(),
            ..Default::default()
        };
        assert_eq!(refused.result(), "error");
        let moved = CommitResponse {
            region_error: Some(Default::default()),
            error: Some(Default::default()),
        };
        assert_eq!(moved.result(), "region_error");
        let status: Result<Response<GetResponse>, Status> = Err(Status::internal("x"));
        assert_eq!(status.result(), "grpc_error");
        let conflict = PrewriteResponse {
            errors: vec![KeyError::default()],
            ..Default::default()
        };
        assert_eq!(conflict.result(), "error");
    }

    #[test]
    fn every_type_is_listed_before_it_is_served_1() {
        let registry = Registry::new();
        let m = RequestMetrics::new(&registry).unwrap();
        m.observe("raw_get", "region_error", Duration::from_millis(2));
        let families = registry.gather();
        let requests = families
            .iter()
            .find(|f| f.name() == "tessera_requests_total")
            .unwrap();
        assert_eq!(
            requests.get_metric().len(),
            REQUEST_TYPES.len() * RESULTS.len()
        );
        let counted: Vec<_> = requests
            .get_metric()
            .iter()
            .filter(|m| m.get_counter().get_value() > 0.0)
            .map(|m| {
                let labels: Vec<_> = m.get_label().iter().map(|l| l.value()).collect();
                labels.join(",")
            })
            .collect();
        assert_eq!(counted, vec!["region_error,raw_get"]);
        assert!(RequestMetrics::new(&registry).is_err());
    }
}
