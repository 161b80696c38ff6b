//! Every raw store-to-store send of the hostile tests: forged raft messages on a store's
//! `RaftPeer.Raft` or `RaftPeer.BatchRaft` stream and forged snapshot streams on its
//! `RaftPeer.Snapshot`, sent straight to
//! one store as another store (or anyone who can reach the port) could.
//!
//! Where a store takes these streams (its peer port), and what a peer must present to be heard
//! (the cluster token), is decided here only: [`peer_client`] and [`peer_request`].

use std::time::Duration;

use proto::raft_serverpb::{BatchRaftMessage, RaftMessage, SnapshotChunk};
use proto::tinykvpb::raft_peer_client::RaftPeerClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::procs::Store;

/// Bound of connecting to a store and of one whole forged call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of the service where `store` takes raft and snapshot streams from its peers.
async fn peer_client(store: &Store) -> Result<RaftPeerClient<Channel>, Status> {
    let url = format!("http://{}", store.peer);
    let endpoint = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .connect_timeout(CALL_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("{}: {e}", store.name)))?;
    Ok(RaftPeerClient::new(channel))
}

/// `body` as a request a peer of the cluster would make: with the cluster token, so the store
/// must refuse what it is sent on its content, not for want of credentials.
fn peer_request<T>(store: &Store, body: T) -> Request<T> {
    let mut req = Request::new(body);
    server::peer_service::ClusterToken::new(&store.token).attach(&mut req);
    req
}

/// Sends `msgs` to `store` on one `Raft` stream and closes it; returns how the store answered
/// (it answers once it has taken every message, or when it refuses the stream).
pub async fn send_raft(store: &Store, msgs: Vec<RaftMessage>) -> Result<(), Status> {
    let mut client = peer_client(store).await?;
    let stream = tokio_stream::iter(msgs);
    let call = client.raft(peer_request(store, stream));
    answer_in_time(store, "a raft stream", call).await
}

/// Sends `msgs` to `store` as one message of one `BatchRaft` stream (the way stores send raft
/// traffic) and closes it; returns how the store answered.
pub async fn send_raft_batch(store: &Store, msgs: Vec<RaftMessage>) -> Result<(), Status> {
    let mut client = peer_client(store).await?;
    let stream = tokio_stream::iter([BatchRaftMessage { msgs }]);
    let call = client.batch_raft(peer_request(store, stream));
    answer_in_time(store, "a batch raft stream", call).await
}

/// How `store` answered `call` (a stream named `what`), or a deadline error after
/// [`CALL_TIMEOUT`].
async fn answer_in_time<R>(
    store: &Store,
    what: &str,
    call: impl std::future::Future<Output = Result<R, Status>>,
) -> Result<(), Status> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => answer.map(|_| ()),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{} did not answer {what} within {CALL_TIMEOUT:?}",
            store.name
        ))),
    }
}

/// An open `Snapshot` stream to one store, fed chunk by chunk.
pub struct SnapshotStream {
    tx: Option<mpsc::Sender<SnapshotChunk>>,
    call: JoinHandle<Result<(), Status>>,
}

impl SnapshotStream {
    /// Sends the next chunk; false once the store has stopped taking them (it answered, or the
    /// stream broke).
    pub async fn send(&mut self, chunk: SnapshotChunk) -> bool {
        let Some(tx) = &self.tx else { return false };
        if self.call.is_finished() {
            return false;
        }
        matches!(
            tokio::time::timeout(CALL_TIMEOUT, tx.send(chunk)).await,
            Ok(Ok(()))
        )
    }

    /// Whether the store has answered (accepted or refused) the stream.
    pub fn answered(&self) -> bool {
        self.call.is_finished()
    }

    /// Ends the stream (if still open) and returns the store's answer.
    pub async fn finish(mut self) -> Result<(), Status> {
        drop(self.tx.take());
        match tokio::time::timeout(CALL_TIMEOUT, &mut self.call).await {
            Ok(joined) => joined.map_err(|e| Status::internal(e.to_string()))?,
            Err(_) => Err(Status::deadline_exceeded(
                "no answer to a snapshot stream after it ended",
            )),
        }
    }
}

/// Opens a `Snapshot` stream to `store`.
pub async fn open_snapshot(store: &Store) -> Result<SnapshotStream, Status> {
    let mut client = peer_client(store).await?;
    // One chunk in flight: what the test has sent is what the store could have read.
    let (tx, rx) = mpsc::channel(1);
    let req = peer_request(store, ReceiverStream::new(rx));
    let call = tokio::spawn(async move { client.snapshot(req).await.map(|_| ()) });
    Ok(SnapshotStream { tx: Some(tx), call })
}

/// Sends `chunks` to `store` on one `Snapshot` stream and returns its answer.
pub async fn send_snapshot(store: &Store, chunks: Vec<SnapshotChunk>) -> Result<(), Status> {
    let mut stream = open_snapshot(store).await?;
    for chunk in chunks {
        if !stream.send(chunk).await {
            break;
        }
    }
    stream.finish().await
}
