//! `BatchCommands`: raw gets, puts and deletes multiplexed over one bidirectional stream.
//!
//! A unary call costs a stream of its own on both ends (HTTP/2 headers, a task, wakeups); under
//! many concurrent clients that, not the store, is what a request costs most. Over this stream a
//! client sends every request it has queued for a store in one message, and the server answers
//! them as they complete, all answers that completed together in one message.
//!
//! ```text
//! inbound messages ─► each request checked and started (the unary handlers' own code)
//!                      │ at most MAX_IN_FLIGHT running per stream: past it the stream is not read
//!                      ▼
//!                 completed answers ─► one outbound message per wake-up, ids echoed
//! ```
//!
//! The stream is hostile input like any request: a message with more than
//! [`MAX_REQUESTS_PER_MESSAGE`] requests ends the stream with `InvalidArgument`, and a request
//! without a command gets an answer with only `error` set. A client that stops reading stops the
//! server reading its stream (the outbound queue is bounded); one that goes away drops its
//! answers, while the writes it started run on to their outcome in the store, as unary ones do.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use prost::Message as _;
use proto::kvrpcpb::batch_request::Cmd as Request;
use proto::kvrpcpb::batch_response::Cmd as Answer;
use proto::kvrpcpb::{BatchCommandsRequest, BatchCommandsResponse, BatchRequest, BatchResponse};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{raw_delete_answer, raw_get_answer, raw_put_answer};
use crate::raw::RawApi;
use crate::storage::Storage;

/// The most requests one inbound message may carry (and one outbound message carries).
pub const MAX_REQUESTS_PER_MESSAGE: usize = 1024;
/// The bytes of requests a client puts in one message before it sends it (so a message is at
/// most this plus one request: a server's message limit must allow that), and the bytes of
/// answers the server collects before it sends them.
pub const MAX_BYTES: usize = 1 << 20;
/// Requests of one stream running at once; past it, the stream is read no further until some
/// complete.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Outbound messages queued before the server waits for the client to read.
const OUTBOUND_QUEUE: usize = 64;

/// The answers of one stream.
pub type ResponseStream = ReceiverStream<Result<BatchCommandsResponse, Status>>;

type Running = Pin<Box<dyn Future<Output = BatchResponse> + Send>>;

/// Serves the requests of `inbound` with `raw` (each answered within `timeout` like a unary
/// call) on a task of its own; returns the answers.
pub fn serve<S: Storage>(
    raw: RawApi<S>,
    timeout: Duration,
    stopping: Option<watch::Receiver<bool>>,
    inbound: Streaming<BatchCommandsRequest>,
) -> ResponseStream {
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    tokio::spawn(run(raw, timeout, stopping, inbound, tx));
    ReceiverStream::new(rx)
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
    raw: RawApi<S>,
    timeout: Duration,
    stopping: Option<watch::Receiver<bool>>,
    mut inbound: Streaming<BatchCommandsRequest>,
    tx: mpsc::Sender<Result<BatchCommandsResponse, Status>>,
) {
    let mut running: FuturesUnordered<Running> = FuturesUnordered::new();
    let mut open = true;
    let stop = stopped(stopping);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            // The server stops: read no more, answer what runs, end the stream.
            () = &mut stop, if open => open = false,
            msg = inbound.message(), if open && running.len() < MAX_IN_FLIGHT => match msg {
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
                    running.extend(m.requests.into_iter().map(|r| start(&raw, timeout, r)));
                }
                // The client sends no more; answer what runs, then end the stream.
                Ok(None) => open = false,
                // The client went away or sent garbage: nobody is left to answer.
                Err(_) => return,
            },
            Some(first) = running.next(), if !running.is_empty() => {
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
                if tx.send(Ok(BatchCommandsResponse { responses })).await.is_err() {
                    return;
                }
            },
            else => return,
        }
    }
}

/// Checks and starts one request; the future answers it.
fn start<S: Storage>(raw: &RawApi<S>, timeout: Duration, req: BatchRequest) -> Running {
    let id = req.id;
    let answer = move |cmd: Answer| BatchResponse {
        id,
        cmd: Some(cmd),
        error: String::new(),
    };
    match req.cmd {
        Some(Request::RawGet(r)) => {
            Box::pin(raw_get_answer(raw, timeout, r).map(move |a| answer(Answer::RawGet(a))))
        }
        Some(Request::RawPut(r)) => {
            Box::pin(raw_put_answer(raw, timeout, r).map(move |a| answer(Answer::RawPut(a))))
        }
        Some(Request::RawDelete(r)) => {
            Box::pin(raw_delete_answer(raw, timeout, r).map(move |a| answer(Answer::RawDelete(a))))
        }
        None => Box::pin(std::future::ready(BatchResponse {
            id,
            cmd: None,
            error: "the request carries no command this server serves".to_string(),
        })),
    }
}
