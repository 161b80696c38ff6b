//! `BatchCommands`: raw gets, puts and deletes multiplexed over one bidirectional stream.
//!
//! A unary call costs a stream of its own on both ends (HTTP/2 headers, a task, wakeups); under
//! many concurrent clients that, not the store, is what a request costs most. Over this stream a
//! client sends every request it has queued for a store in one message, and the server answers
//! them as they complete, all answers that completed together in one message.
//!
//! ```text
//! inbound messages ─► each request takes room in the server's in-flight bytes,
//!                      │ then is checked and started (the unary handlers' own code); at most
//!                      │ MAX_IN_FLIGHT running per stream: past it the stream is not read
//!                      ▼
//!                 completed answers ─► one outbound message per wake-up, ids echoed
//! ```
//!
//! The stream is hostile input like any request: a message with more than
//! [`MAX_REQUESTS_PER_MESSAGE`] requests ends the stream with `InvalidArgument`, and a request
//! without a command gets an answer with only `error` set. A client that stops reading stops the
//! server reading its stream (the outbound queue is bounded); one that goes away drops its
//! answers, while the writes it started run on to their outcome in the store, as unary ones do.
//!
//! Clients are many, so the server bounds them together too ([`BatchLimits`]): a stream opened
//! past `max_streams` is refused with `ResourceExhausted`, and a request running holds its size
//! (at least 1 KiB) out of the server's `max_in_flight_bytes`: past that, a stream's next request
//! waits for room (its stream is read no further meanwhile; its running requests go on and are
//! answered). So what clients can make a store hold is bounded by the two, not by how many
//! streams they open.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use prost::Message as _;
use proto::kvrpcpb::batch_request::Cmd as Request;
use proto::kvrpcpb::batch_response::Cmd as Answer;
use proto::kvrpcpb::{BatchCommandsRequest, BatchCommandsResponse, BatchRequest, BatchResponse};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{raw_delete_answer, raw_get_answer, raw_put_answer};
use crate::metrics::{Outcome, RequestMetrics};
use kv::{RawApi, Storage};

pub use proto::limits::{
    BATCH_MAX_BYTES as MAX_BYTES, BATCH_MAX_REQUESTS as MAX_REQUESTS_PER_MESSAGE,
};
/// Requests of one stream running at once; past it, the stream is read no further until some
/// complete.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Outbound messages queued before the server waits for the client to read.
const OUTBOUND_QUEUE: usize = 64;

/// Streams open at once on one server, by default.
pub const DEFAULT_MAX_STREAMS: usize = 1024;
/// Bytes of requests running at once over all of a server's streams, by default.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 256 << 20;
/// What a request holds of the in-flight bytes is counted in units of this many bytes, at
/// least one unit however small the request.
const UNIT: usize = 1024;

/// A server's bounds over all of its `BatchCommands` streams together.
#[derive(Clone, Debug)]
pub struct BatchLimits {
    max_streams: usize,
    streams: Arc<Semaphore>,
    /// In units of [`UNIT`] bytes.
    in_flight_units: usize,
    in_flight: Arc<Semaphore>,
}

impl BatchLimits {
    /// At most `max_streams` streams open, and requests of at most `max_in_flight_bytes` in all
    /// running at once (a request counts at least 1 KiB; one larger than the bound runs alone).
    pub fn new(max_streams: usize, max_in_flight_bytes: usize) -> BatchLimits {
        let max_streams = max_streams.clamp(1, Semaphore::MAX_PERMITS);
        let units = (max_in_flight_bytes / UNIT).clamp(1, u32::MAX as usize);
        BatchLimits {
            max_streams,
            streams: Arc::new(Semaphore::new(max_streams)),
            in_flight_units: units,
            in_flight: Arc::new(Semaphore::new(units)),
        }
    }

    /// The units of the in-flight bound a request of `bytes` holds while it runs.
    fn units(&self, bytes: usize) -> u32 {
        // At most `in_flight_units`, which fits in a u32.
        (bytes / UNIT).clamp(1, self.in_flight_units) as u32
    }
}

impl Default for BatchLimits {
    fn default() -> BatchLimits {
        BatchLimits::new(DEFAULT_MAX_STREAMS, DEFAULT_MAX_IN_FLIGHT_BYTES)
    }
}

/// The answers of one stream.
pub type ResponseStream = ReceiverStream<Result<BatchCommandsResponse, Status>>;

type Running = Pin<Box<dyn Future<Output = BatchResponse> + Send>>;

/// Serves the requests of `inbound` with `raw` (each answered within `timeout` like a unary
/// call) on a task of its own, within `limits`; returns the answers, or `ResourceExhausted` when
/// the server has as many streams open as it takes.
pub fn serve<S: Storage>(
    raw: RawApi<S>,
    metrics: Option<Arc<RequestMetrics>>,
    timeout: Duration,
    stopping: Option<watch::Receiver<bool>>,
    limits: &BatchLimits,
    inbound: Streaming<BatchCommandsRequest>,
) -> Result<ResponseStream, Status> {
    let Ok(place) = limits.streams.clone().try_acquire_owned() else {
        return Err(Status::resource_exhausted(format!(
            "this server takes at most {} BatchCommands streams at once and has that many open; \
             retry later, or send over a stream already open",
            limits.max_streams
        )));
    };
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let limits = limits.clone();
    tokio::spawn(async move {
        let started = Started {
            raw,
            metrics,
            timeout,
        };
        run(&started, stopping, &limits, inbound, tx).await;
        drop(place);
    });
    Ok(ReceiverStream::new(rx))
}

/// Resolves once `stopping` says `true` (or its sender is gone); never without one.
async fn stopped(stopping: Option<watch::Receiver<bool>>) {
    match stopping {
        Some(mut rx) => {
            let _ = rx.wait_for(|stop| *stop).await;
        }
        None => std::future::pending().await,
    }
}

async fn run<S: Storage>(
    started: &Started<S>,
    stopping: Option<watch::Receiver<bool>>,
    limits: &BatchLimits,
    mut inbound: Streaming<BatchCommandsRequest>,
    tx: mpsc::Sender<Result<BatchCommandsResponse, Status>>,
) {
    let mut running: FuturesUnordered<Running> = FuturesUnordered::new();
    // Requests read but not started: they wait for room in the server's in-flight bound.
    let mut waiting: VecDeque<BatchRequest> = VecDeque::new();
    let mut open = true;
    // Whether the server, not the client, closed the stream's inbound side; the highest
    // request id read (see `BatchCommandsResponse.last_read_id`).
    let mut server_closed = false;
    let mut last_read_id = 0u64;
    let stop = stopped(stopping);
    tokio::pin!(stop);
    loop {
        // Start what has room at once; the rest waits in the `select!` below, where this
        // stream's running requests go on completing (and freeing room) meanwhile.
        let mut need = 0;
        while let Some(req) = waiting.front() {
            need = limits.units(req.encoded_len());
            let Ok(place) = limits.in_flight.clone().try_acquire_many_owned(need) else {
                break;
            };
            let req = waiting.pop_front().expect("checked non-empty");
            running.push(started.start_in_place(req, place));
        }
        tokio::select! {
            // The server stops: read no more, answer what runs, end the stream.
            () = &mut stop, if open => {
                open = false;
                server_closed = true;
            }
            place = limits.in_flight.clone().acquire_many_owned(need), if !waiting.is_empty() => {
                // The semaphore is never closed.
                let Ok(place) = place else { return };
                let req = waiting.pop_front().expect("checked non-empty");
                running.push(started.start_in_place(req, place));
            }
            msg = inbound.message(),
                if open && waiting.is_empty() && running.len() < MAX_IN_FLIGHT => match msg {
                Ok(Some(m)) => {
                    if m.requests.len() > MAX_REQUESTS_PER_MESSAGE {
                        let refused = Status::invalid_argument(format!(
                            "a BatchCommands message carries {} requests; at most {} are allowed",
                            m.requests.len(),
                            MAX_REQUESTS_PER_MESSAGE
                        ));
                        let _ = tx.send(Err(refused)).await;
                        return;
                    }
                    last_read_id = m.requests.iter().map(|r| r.id).fold(last_read_id, u64::max);
                    waiting.extend(m.requests);
                }
                // The client sends no more; answer what runs, then end the stream.
                Ok(None) => open = false,
                // The client went away or sent garbage: nobody is left to answer.
                Err(_) => return,
            },
            Some(first) = running.next(), if !running.is_empty() => {
                // (Its room in the in-flight bound was freed as it completed.)
                let mut bytes = first.encoded_len();
                let mut responses = vec![first];
                while responses.len() < MAX_REQUESTS_PER_MESSAGE && bytes < MAX_BYTES {
                    match running.next().now_or_never() {
                        Some(Some(r)) => {
                            bytes += r.encoded_len();
                            responses.push(r);
                        }
                        _ => break,
                    }
                }
                let message = BatchCommandsResponse {
                    responses,
                    ..Default::default()
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            },
            else => {
                if server_closed {
                    // Every request read has been answered: say which were, so the client
                    // knows the rest never ran.
                    let goodbye = BatchCommandsResponse {
                        responses: Vec::new(),
                        ends: true,
                        last_read_id,
                    };
                    let _ = tx.send(Ok(goodbye)).await;
                }
                return;
            }
        }
    }
}

/// What a stream starts its requests with.
struct Started<S> {
    raw: RawApi<S>,
    metrics: Option<Arc<RequestMetrics>>,
    timeout: Duration,
}

impl<S: Storage> Started<S> {
    /// Starts `req` holding `place` in the server's in-flight bound until it completes.
    fn start_in_place(&self, req: BatchRequest, place: OwnedSemaphorePermit) -> Running {
        Box::pin(self.start(req).map(move |answer| {
            drop(place);
            answer
        }))
    }

    /// `answer`, recorded as a request of type `kind` when it completes.
    fn timed<A: Outcome>(
        &self,
        kind: &'static str,
        answer: impl Future<Output = A>,
    ) -> impl Future<Output = A> {
        let metrics = self.metrics.clone();
        let start = Instant::now();
        answer.inspect(move |a| {
            if let Some(m) = metrics {
                m.observe(kind, a.result(), start.elapsed());
            }
        })
    }

    /// Checks and starts one request; the future answers it.
    fn start(&self, req: BatchRequest) -> Running {
        let (raw, timeout) = (&self.raw, self.timeout);
        let id = req.id;
        let answer = move |cmd: Answer| BatchResponse {
            id,
            cmd: Some(cmd),
            error: String::new(),
        };
        match req.cmd {
            Some(Request::RawGet(r)) => Box::pin(
                self.timed("raw_get", raw_get_answer(raw, timeout, r))
                    .map(move |a| answer(Answer::RawGet(a))),
            ),
            Some(Request::RawPut(r)) => Box::pin(
                self.timed("raw_put", raw_put_answer(raw, timeout, r))
                    .map(move |a| answer(Answer::RawPut(a))),
            ),
            Some(Request::RawDelete(r)) => Box::pin(
                self.timed("raw_delete", raw_delete_answer(raw, timeout, r))
                    .map(move |a| answer(Answer::RawDelete(a))),
            ),
            None => Box::pin(std::future::ready(BatchResponse {
                id,
                cmd: None,
                error: "the request carries no command this server serves".to_string(),
            })),
        }
    }
}
