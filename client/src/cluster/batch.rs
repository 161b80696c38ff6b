//! The client half of `BatchCommands`: one stream per store, shared by every request a
//! [`super::ClusterClient`] sends there.
//!
//! ```text
//! callers ─► queue ─► stream task: every request queued by now, numbered, in ONE message ─► store
//!    ▲                     │
//!    └──── oneshot ◄───────┴── answers, matched by id, as the store sends them
//! ```
//!
//! What a failure means for a request (the caller's retry rules depend on it): a request the
//! task never put on the stream (the stream could not be opened, or had ended) fails with a
//! status [`never_sent`](crate::raw::never_sent) recognises, so even a write is retried; a
//! request on a stream that then broke fails with `Unavailable`, which may have run.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use proto::kvrpcpb::batch_request::Cmd as Request;
use proto::kvrpcpb::batch_response::Cmd as Answer;
use proto::kvrpcpb::{
    BatchCommandsRequest, BatchRequest, RawDeleteRequest, RawDeleteResponse, RawGetRequest,
    RawGetResponse, RawPutRequest, RawPutResponse,
};
use proto::tinykvpb::tiny_kv_client::TinyKvClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::raw::NotSent;

/// Requests waiting for the stream task; a caller waits for room past it.
const QUEUE: usize = 4096;
/// Messages handed to the stream ahead of the network.
const AHEAD: usize = 16;
/// The most requests in one message (the server takes up to
/// `proto::limits::BATCH_MAX_REQUESTS`).
const MAX_BATCH: usize = 256;
/// The bytes of requests that fill a message (one more request may follow them).
const MAX_BYTES: usize = proto::limits::BATCH_MAX_BYTES;

/// The answer a caller gets: the store's answer, or why there is none.
type Outcome = Result<Answer, Status>;

struct Queued {
    cmd: Request,
    answer: oneshot::Sender<Outcome>,
}

/// The request-side handle of one store's stream. Cheap to clone.
#[derive(Clone)]
pub(super) struct BatchConn {
    queue: mpsc::Sender<Queued>,
}

fn not_sent(why: &str) -> Status {
    let mut s = Status::new(Code::Unavailable, why.to_string());
    s.set_source(Arc::new(NotSent(why.to_string())));
    s
}

impl BatchConn {
    /// Starts the stream task for the store `client` talks to; the stream opens with the first
    /// request.
    pub(super) fn open(client: TinyKvClient<Channel>) -> BatchConn {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(client, rx));
        BatchConn { queue }
    }

    /// Sends `cmd` over the stream and waits for its answer.
    pub(super) async fn call(&self, cmd: Request) -> Outcome {
        let (answer, rx) = oneshot::channel();
        if self.queue.send(Queued { cmd, answer }).await.is_err() {
            return Err(not_sent("the batch stream to the store had ended"));
        }
        rx.await
            .unwrap_or_else(|_| Err(Status::unavailable("the batch stream dropped the request")))
    }
}

/// Runs one store's stream until it breaks or no caller is left; every request taken from the
/// queue is answered.
async fn run(mut client: TinyKvClient<Channel>, mut queue: mpsc::Receiver<Queued>) {
    // Open the stream once there is something to send.
    let Some(first) = queue.recv().await else {
        return;
    };
    let (out, out_rx) = mpsc::channel::<BatchCommandsRequest>(AHEAD);
    let mut inbound = match client.batch_commands(ReceiverStream::new(out_rx)).await {
        Ok(resp) => resp.into_inner(),
        Err(status) => {
            // Nothing left: the stream never opened.
            let why = format!("cannot open a batch stream: {}", status.message());
            let _ = first.answer.send(Err(not_sent(&why)));
            drain(&mut queue, &why);
            return;
        }
    };
    let mut pending: HashMap<u64, oneshot::Sender<Outcome>> = HashMap::new();
    let mut next_id = 0u64;
    let mut take = |q: Queued, pending: &mut HashMap<u64, oneshot::Sender<Outcome>>| {
        next_id += 1;
        pending.insert(next_id, q.answer);
        BatchRequest {
            id: next_id,
            cmd: Some(q.cmd),
        }
    };
    // A message is full at `MAX_BATCH` requests or once its requests reach the byte budget.
    let full =
        |batch: &[BatchRequest], bytes: usize| batch.len() >= MAX_BATCH || bytes >= MAX_BYTES;
    let mut batch = vec![take(first, &mut pending)];
    let mut bytes = batch[0].encoded_len();
    let mut out = Some(out);
    let mut callers_gone = false;
    // Set when the store says it ends the stream: the highest request id it read.
    let mut last_read: Option<u64> = None;
    // Answers are read in every state, so a store waiting for its answers to be read never
    // waits on this task's sends.
    let why = loop {
        tokio::select! {
            permit = reserve(&out), if !batch.is_empty() => match permit {
                Some(p) => {
                    bytes = 0;
                    p.send(BatchCommandsRequest {
                        requests: std::mem::take(&mut batch),
                    })
                }
                None => break "the batch stream closed".to_string(),
            },
            q = queue.recv(), if !callers_gone && !full(&batch, bytes) => match q {
                Some(q) => {
                    let mut next = Some(q);
                    while let Some(q) = next.take() {
                        let r = take(q, &mut pending);
                        bytes += r.encoded_len();
                        batch.push(r);
                        if !full(&batch, bytes) {
                            next = queue.try_recv().ok();
                        }
                    }
                }
                None => callers_gone = true,
            },
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    if m.ends {
                        last_read = Some(m.last_read_id);
                    }
                    for a in m.responses {
                        let outcome = match a.cmd {
                            Some(cmd) => Ok(cmd),
                            None => Err(Status::internal(format!("store: {}", a.error))),
                        };
                        if let Some(tx) = pending.remove(&a.id) {
                            let _ = tx.send(outcome);
                        }
                    }
                }
                Ok(None) => break "the store ended the batch stream".to_string(),
                Err(s) => break format!("the batch stream broke: {}", s.message()),
            },
        }
        if callers_gone && batch.is_empty() {
            // Ends the request stream: the store answers what runs, then ends its side.
            out = None;
        }
    };
    // The requests of the batch not yet handed to the stream, and those still queued, never
    // left; those on the stream may have run.
    for r in batch {
        if let Some(tx) = pending.remove(&r.id) {
            let _ = tx.send(Err(not_sent(&why)));
        }
    }
    for (id, tx) in pending.drain() {
        // Requests are numbered in the order they go on the stream: past the last one the
        // store read, none ran.
        let outcome = match last_read {
            Some(last) if id > last => not_sent(&why),
            _ => Status::unavailable(why.clone()),
        };
        let _ = tx.send(Err(outcome));
    }
    drain(&mut queue, &why);
}

/// Room for one message on the request stream; `None` once it is closed.
async fn reserve(
    out: &Option<mpsc::Sender<BatchCommandsRequest>>,
) -> Option<mpsc::Permit<'_, BatchCommandsRequest>> {
    match out {
        Some(o) => o.reserve().await.ok(),
        None => None,
    }
}

/// Closes the queue and fails what it still holds as never sent.
fn drain(queue: &mut mpsc::Receiver<Queued>, why: &str) {
    queue.close();
    while let Ok(q) = queue.try_recv() {
        let _ = q.answer.send(Err(not_sent(why)));
    }
}

/// The store's answer came back as another kind of request's answer: a broken store.
fn mismatched(what: &str) -> Status {
    Status::internal(format!(
        "the store answered a raw {what} with another command's answer"
    ))
}

impl super::StoreConn {
    /// A raw get, over the batch stream when there is one.
    pub(super) async fn raw_get(mut self, req: RawGetRequest) -> Result<RawGetResponse, Status> {
        match &self.batch {
            Some(b) => match b.call(Request::RawGet(req)).await? {
                Answer::RawGet(r) => Ok(r),
                _ => Err(mismatched("get")),
            },
            None => Ok(self.client.raw_get(req).await?.into_inner()),
        }
    }

    /// A raw put, over the batch stream when there is one.
    pub(super) async fn raw_put(mut self, req: RawPutRequest) -> Result<RawPutResponse, Status> {
        match &self.batch {
            Some(b) => match b.call(Request::RawPut(req)).await? {
                Answer::RawPut(r) => Ok(r),
                _ => Err(mismatched("put")),
            },
            None => Ok(self.client.raw_put(req).await?.into_inner()),
        }
    }

    /// A raw delete, over the batch stream when there is one.
    pub(super) async fn raw_delete(
        mut self,
        req: RawDeleteRequest,
    ) -> Result<RawDeleteResponse, Status> {
        match &self.batch {
            Some(b) => match b.call(Request::RawDelete(req)).await? {
                Answer::RawDelete(r) => Ok(r),
                _ => Err(mismatched("delete")),
            },
            None => Ok(self.client.raw_delete(req).await?.into_inner()),
        }
    }
}
