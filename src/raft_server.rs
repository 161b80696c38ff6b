//! The pieces a store needs to talk raft over gRPC: [`ServerTransport`] (outgoing) and
//! [`RaftKvService`] (incoming, wrapped around the ordinary `TinyKv` service).
//!
//! Outgoing: one bounded queue and one `TinyKv.Raft` client stream per remote store. The raft
//! worker only ever enqueues, so a slow or dead store never blocks it; a full queue or a broken
//! stream is reported back as a send error, which the store turns into `report_unreachable`.
//! Store addresses come from the scheduler and are looked up again on every reconnect, so a
//! store that moved is found.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// Sends raft messages to other stores over `TinyKv.Raft` client streams.
pub struct ServerTransport {
    runtime: Handle,
    scheduler: Arc<dyn SchedulerClient>,
    conns: Mutex<HashMap<u64, mpsc::Sender<RaftMessage>>>,
}

impl ServerTransport {
    /// A transport whose connections run on `runtime` and resolve stores through `scheduler`.
    pub fn new(runtime: Handle, scheduler: Arc<dyn SchedulerClient>) -> ServerTransport {
        ServerTransport {
            runtime,
            scheduler,
            conns: Mutex::new(HashMap::new()),
        }
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

/// Runs one store's outgoing stream until it breaks; dropping `rx` then makes the next send
/// fail, and the send after that reconnects.
async fn stream_to(
    store_id: u64,
    scheduler: Arc<dyn SchedulerClient>,
    rx: mpsc::Receiver<RaftMessage>,
) -> anyhow::Result<()> {
    let store = tokio::task::spawn_blocking(move || scheduler.get_store(store_id)).await??;
    let mut client = TinyKvClient::connect(format!("http://{}", store.address)).await?;
    client.raft(ReceiverStream::new(rx)).await?;
    Ok(())
}

impl Transport for ServerTransport {
    fn send(&self, msg: RaftMessage) -> raftstore::Result<()> {
        let store_id = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or(0);
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conns
            .entry(store_id)
            .or_insert_with(|| self.connect(store_id));
        match tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(raftstore::Error::Transport(format!(
                "queue to store {store_id} is full"
            ))),
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
    stop: watch::Receiver<bool>,
}

impl<S: Storage> RaftKvService<S> {
    /// Serves `inner` and delivers incoming raft messages through `router`. Incoming raft
    /// streams end once `stop` turns true: they never end by themselves, and a graceful server
    /// shutdown waits for every open request.
    pub fn new(
        inner: KvService<S>,
        router: Router,
        stop: watch::Receiver<bool>,
    ) -> RaftKvService<S> {
        RaftKvService {
            inner,
            router,
            stop,
        }
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
        _: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        Err(Status::unimplemented(
            "snapshot transfer is not served by this store yet",
        ))
    }
}
