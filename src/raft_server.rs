//! The pieces a store needs to talk raft over gRPC: [`ServerTransport`] (outgoing) and
//! [`RaftKvService`] (incoming, wrapped around the ordinary `TinyKv` service).
//!
//! Outgoing: one bounded queue and one `TinyKv.Raft` client stream per remote store. The raft
//! worker only ever enqueues, so a slow or dead store never blocks it; a full queue or a broken
//! stream is reported back as a send error, which the store turns into `report_unreachable`.
//! Store addresses come from the scheduler and are looked up again on every reconnect, so a
//! store that moved is found.
//!
//! Snapshots travel on their own `TinyKv.Snapshot` client stream per transfer: the raft message
//! first, then the files in size-bounded chunks. The receiver writes them through its
//! `SnapManager`, which checks every file's size and md5, and only then hands the message to
//! raft. A transfer that fails on either side is reported to the sending peer, whose raft
//! retries with a new snapshot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kv::{KvService, Storage};
use proto::kvrpcpb::*;
use proto::raft_serverpb::{Done, RaftMessage, SnapshotChunk};
use proto::tinykvpb::tiny_kv_client::TinyKvClient;
use proto::tinykvpb::tiny_kv_server::TinyKv;
use raftstore::{Router, Transport};
use scheduler_client::SchedulerClient;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Messages queued for one store before sends start failing.
const QUEUE_PER_STORE: usize = 4096;
/// Snapshot chunks read ahead of the network.
const SNAPSHOT_CHUNKS_AHEAD: usize = 4;

/// Sends raft messages to other stores over `TinyKv.Raft` client streams.
pub struct ServerTransport {
    runtime: Handle,
    scheduler: Arc<dyn SchedulerClient>,
    conns: Mutex<HashMap<u64, mpsc::Sender<RaftMessage>>>,
    /// Where the outcome of snapshot transfers is reported; set once the store runs.
    router: OnceLock<Router>,
}

impl ServerTransport {
    /// A transport whose connections run on `runtime` and resolve stores through `scheduler`.
    pub fn new(runtime: Handle, scheduler: Arc<dyn SchedulerClient>) -> ServerTransport {
        ServerTransport {
            runtime,
            scheduler,
            conns: Mutex::new(HashMap::new()),
            router: OnceLock::new(),
        }
    }

    /// Sets the router of the store this transport sends for, so the outcome of snapshot
    /// transfers reaches the sending peers. Call once, right after the store starts.
    pub fn set_router(&self, router: Router) {
        let _ = self.router.set(router);
    }

    fn connect(&self, store_id: u64) -> mpsc::Sender<RaftMessage> {
        let (tx, rx) = mpsc::channel(QUEUE_PER_STORE);
        let scheduler = self.scheduler.clone();
        self.runtime.spawn(async move {
            if let Err(e) = stream_to(store_id, scheduler, rx).await {
                tracing::debug!(store_id, error = %e, "raft stream to store ended");
            }
        });
        tx
    }
}

/// A channel to another store that gives up on an address that does not answer: a connect
/// timeout, and HTTP/2 keepalive so a peer that stops answering breaks the stream (and the next
/// send reconnects, looking the address up again).
async fn store_channel(address: &str) -> anyhow::Result<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect().await?)
}

/// Runs one store's outgoing stream until it breaks; dropping `rx` then makes the next send
/// fail, and the send after that reconnects.
async fn stream_to(
    store_id: u64,
    scheduler: Arc<dyn SchedulerClient>,
    rx: mpsc::Receiver<RaftMessage>,
) -> anyhow::Result<()> {
    let store = tokio::task::spawn_blocking(move || scheduler.get_store(store_id)).await??;
    let mut client = TinyKvClient::new(store_channel(&store.address).await?);
    client.raft(ReceiverStream::new(rx)).await?;
    Ok(())
}

/// Streams one snapshot to `store_id`: the chunks are read from disk on a blocking thread a few
/// ahead of the network.
async fn stream_snapshot(
    store_id: u64,
    scheduler: Arc<dyn SchedulerClient>,
    reader: snap::ChunkReader,
    msg: RaftMessage,
) -> anyhow::Result<()> {
    let store = tokio::task::spawn_blocking(move || scheduler.get_store(store_id)).await??;
    let (tx, rx) = mpsc::channel(SNAPSHOT_CHUNKS_AHEAD);
    let read_error = Arc::new(Mutex::new(None));
    let read_error_w = read_error.clone();
    let producer = tokio::task::spawn_blocking(move || {
        for chunk in reader.into_snapshot_chunks(msg) {
            match chunk {
                Ok(c) => {
                    if tx.blocking_send(c).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // Ending the stream early makes the receiver refuse the snapshot.
                    *read_error_w.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    return;
                }
            }
        }
    });
    let mut client = TinyKvClient::new(store_channel(&store.address).await?);
    let sent = client.snapshot(ReceiverStream::new(rx)).await;
    producer.await?;
    if let Some(e) = read_error.lock().unwrap_or_else(|e| e.into_inner()).take() {
        anyhow::bail!("reading the snapshot failed: {e}");
    }
    sent?;
    Ok(())
}

impl Transport for ServerTransport {
    fn send_snapshot(
        &self,
        msg: RaftMessage,
        snap_mgr: &snap::SnapManager,
    ) -> raftstore::Result<()> {
        let transport_err = |e: String| raftstore::Error::Transport(e);
        let (key, _) = snap::snapshot_in_message(&msg).map_err(|e| transport_err(e.to_string()))?;
        let reader = snap_mgr
            .send(key, snap::DEFAULT_CHUNK_SIZE)
            .map_err(|e| transport_err(format!("snapshot {key} cannot be sent: {e}")))?;
        let store_id = msg.to_peer.as_ref().map_or(0, |p| p.store_id);
        let to_peer_id = msg.to_peer.as_ref().map_or(0, |p| p.id);
        let region_id = msg.region_id;
        let scheduler = self.scheduler.clone();
        let router = self.router.get().cloned();
        self.runtime.spawn(async move {
            let result = stream_snapshot(store_id, scheduler, reader, msg).await;
            if let Err(e) = &result {
                tracing::warn!(region_id, store_id, %key, error = %e, "snapshot transfer failed");
            }
            if let Some(r) = router {
                r.report_snapshot(region_id, to_peer_id, result.is_err());
            }
        });
        Ok(())
    }

    fn send(&self, msg: RaftMessage) -> raftstore::Result<()> {
        let store_id = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or(0);
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conns
            .entry(store_id)
            .or_insert_with(|| self.connect(store_id));
        match tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // A stream that stopped draining is as good as broken: the next send starts a
                // new one.
                conns.remove(&store_id);
                Err(raftstore::Error::Transport(format!(
                    "queue to store {store_id} is full"
                )))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                conns.remove(&store_id);
                Err(raftstore::Error::Transport(format!(
                    "connection to store {store_id} broke"
                )))
            }
        }
    }
}

/// The `TinyKv` service of a raft store: client calls go to the inner service, raft messages to
/// the store's router.
pub struct RaftKvService<S> {
    inner: KvService<S>,
    router: Router,
    snap_mgr: snap::SnapManager,
    stop: watch::Receiver<bool>,
}

impl<S: Storage> RaftKvService<S> {
    /// Serves `inner` and delivers incoming raft messages through `router`, receiving
    /// snapshots into `snap_mgr`. Incoming raft streams end once `stop` turns true: they never
    /// end by themselves, and a graceful server shutdown waits for every open request.
    pub fn new(
        inner: KvService<S>,
        router: Router,
        snap_mgr: snap::SnapManager,
        stop: watch::Receiver<bool>,
    ) -> RaftKvService<S> {
        RaftKvService {
            inner,
            router,
            snap_mgr,
            stop,
        }
    }

    /// Receives one snapshot stream into the snapshot manager and returns its raft message.
    async fn receive_snapshot(
        &self,
        mut stream: Streaming<SnapshotChunk>,
    ) -> Result<RaftMessage, Status> {
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let msg = first
            .message
            .ok_or_else(|| Status::invalid_argument("the first snapshot chunk has no message"))?;
        let (key, data) =
            snap::snapshot_in_message(&msg).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let meta = data.meta.unwrap_or_default();
        let mgr = self.snap_mgr.clone();
        let mut receiver = tokio::task::spawn_blocking(move || mgr.receive(key, &meta))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| match e {
                snap::Error::Busy { .. } => Status::resource_exhausted(e.to_string()),
                e => Status::failed_precondition(e.to_string()),
            })?;
        let mut pending = first.data;
        loop {
            if !pending.is_empty() {
                let data = std::mem::take(&mut pending);
                receiver =
                    tokio::task::spawn_blocking(move || receiver.write(&data).map(|()| receiver))
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?
                        .map_err(|e| Status::data_loss(e.to_string()))?;
            }
            match stream.next().await {
                Some(chunk) => pending = chunk?.data,
                None => break,
            }
        }
        tokio::task::spawn_blocking(move || receiver.finish())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::data_loss(e.to_string()))?;
        Ok(msg)
    }
}

#[tonic::async_trait]
impl<S: Storage> TinyKv for RaftKvService<S> {
    async fn kv_get(&self, r: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.inner.kv_get(r).await
    }

    async fn kv_scan(&self, r: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.inner.kv_scan(r).await
    }

    async fn kv_prewrite(
        &self,
        r: Request<PrewriteRequest>,
    ) -> Result<Response<PrewriteResponse>, Status> {
        self.inner.kv_prewrite(r).await
    }

    async fn kv_commit(
        &self,
        r: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        self.inner.kv_commit(r).await
    }

    async fn kv_check_txn_status(
        &self,
        r: Request<CheckTxnStatusRequest>,
    ) -> Result<Response<CheckTxnStatusResponse>, Status> {
        self.inner.kv_check_txn_status(r).await
    }

    async fn kv_batch_rollback(
        &self,
        r: Request<BatchRollbackRequest>,
    ) -> Result<Response<BatchRollbackResponse>, Status> {
        self.inner.kv_batch_rollback(r).await
    }

    async fn kv_resolve_lock(
        &self,
        r: Request<ResolveLockRequest>,
    ) -> Result<Response<ResolveLockResponse>, Status> {
        self.inner.kv_resolve_lock(r).await
    }

    async fn raw_get(&self, r: Request<RawGetRequest>) -> Result<Response<RawGetResponse>, Status> {
        self.inner.raw_get(r).await
    }

    async fn raw_put(&self, r: Request<RawPutRequest>) -> Result<Response<RawPutResponse>, Status> {
        self.inner.raw_put(r).await
    }

    async fn raw_delete(
        &self,
        r: Request<RawDeleteRequest>,
    ) -> Result<Response<RawDeleteResponse>, Status> {
        self.inner.raw_delete(r).await
    }

    async fn raw_scan(
        &self,
        r: Request<RawScanRequest>,
    ) -> Result<Response<RawScanResponse>, Status> {
        self.inner.raw_scan(r).await
    }

    async fn raft(&self, r: Request<Streaming<RaftMessage>>) -> Result<Response<Done>, Status> {
        let mut stream = r.into_inner();
        let mut stop = self.stop.clone();
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(msg) = msg else { break };
            let msg = msg?;
            // A message for a region this store does not know yet goes to the store, which
            // creates the peer; a stopped store ends the stream and the sender reconnects later.
            if let Err(e) = self.router.send_raft_message(msg) {
                return Err(Status::unavailable(format!(
                    "store is not accepting messages: {e}"
                )));
            }
        }
        Ok(Response::new(Done {}))
    }

    async fn snapshot(
        &self,
        r: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        let msg = self
            .receive_snapshot(r.into_inner())
            .await
            .inspect_err(|e| {
                tracing::warn!(error = %e, "incoming snapshot refused");
            })?;
        // The files are complete and verified: raft may have the message now.
        self.router
            .send_raft_message(msg)
            .map_err(|e| Status::unavailable(format!("store is not accepting messages: {e}")))?;
        Ok(Response::new(Done {}))
    }
}
