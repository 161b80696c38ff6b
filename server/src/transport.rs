//! [`ServerTransport`]: how a store sends raft messages and snapshots to other stores' peer
//! ports (the receiving side is [`crate::peer_service::PeerService`]).
//!
//! Outgoing: one bounded queue and one `RaftPeer.BatchRaft` client stream per remote store, each
//! stream message carrying every raft message queued by the time it leaves (for all the regions
//! the two stores share). The raft
//! worker only ever enqueues, so a slow or dead store never blocks it; a full queue or a broken
//! stream is reported back as a send error, which the store turns into `report_unreachable`.
//! Store peer addresses come from the scheduler and are looked up again on every reconnect, so
//! a store that moved is found. Every stream carries the cluster token, when one is set.
//!
//! Snapshots travel on their own `RaftPeer.Snapshot` client stream per transfer: the raft message
//! first, then the files in size-bounded chunks. The receiver writes them through its
//! `SnapManager`, which checks every file's size and md5, and only then hands the message to
//! raft. A transfer that fails on either side is reported to the sending peer, whose raft
//! retries with a new snapshot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use proto::metapb;
use proto::raft_serverpb::{BatchRaftMessage, RaftMessage};
use proto::tinykvpb::raft_peer_client::RaftPeerClient;
use raftstore::{SnapshotReport, Transport};
use scheduler_client::SchedulerClient;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;

use crate::peer_service::ClusterToken;

/// Messages queued for one store before sends start failing.
const QUEUE_PER_STORE: usize = 4096;
/// The most raft messages in one `BatchRaft` stream message.
const BATCH_MESSAGES: usize = 256;
/// The bytes of raft messages that fill a batch: a message that would take a batch past it
/// waits for the next one (a batch of one message is as large as that message, as on `Raft`).
const BATCH_BYTES: usize = 1 << 20;
/// Snapshot chunks read ahead of the network.
const SNAPSHOT_CHUNKS_AHEAD: usize = 4;

/// Sends raft messages to other stores over `RaftPeer.Raft` client streams.
pub struct ServerTransport {
    runtime: Handle,
    scheduler: Arc<dyn SchedulerClient>,
    token: ClusterToken,
    dial: Dial,
    conns: Mutex<HashMap<u64, mpsc::Sender<RaftMessage>>>,
}

impl ServerTransport {
    /// A transport whose connections run on `runtime`, dial as `dial` says, resolve
    /// stores through `scheduler` and present `token` to them.
    pub fn new(
        runtime: Handle,
        scheduler: Arc<dyn SchedulerClient>,
        token: ClusterToken,
        dial: Dial,
    ) -> ServerTransport {
        ServerTransport {
            runtime,
            scheduler,
            token,
            dial,
            conns: Mutex::new(HashMap::new()),
        }
    }

    fn connect(&self, store_id: u64) -> mpsc::Sender<RaftMessage> {
        let (tx, rx) = mpsc::channel(QUEUE_PER_STORE);
        let scheduler = self.scheduler.clone();
        let token = self.token.clone();
        let dial = self.dial.clone();
        self.runtime.spawn(async move {
            if let Err(e) = stream_to(store_id, scheduler, token, &dial, rx).await {
                tracing::debug!(store_id, error = %e, "raft stream to store ended");
            }
        });
        tx
    }
}

/// How this store dials the others.
#[derive(Clone, Debug, Default)]
pub struct Dial {
    /// The local IP connections leave from (`None`: the system picks).
    pub source_ip: Option<IpAddr>,
    /// TLS, presenting this store's certificate (the peer port demands one), or plain TCP.
    pub tls: Option<security::Tls>,
}

/// A channel to another store that gives up on an address that does not answer: a connect
/// timeout, and HTTP/2 keepalive so a peer that stops answering breaks the stream (and the next
/// send reconnects, looking the address up again).
async fn store_channel(address: &str, dial: &Dial) -> anyhow::Result<tonic::transport::Channel> {
    let endpoint = security::endpoint(address, dial.tls.as_ref())?
        .local_address(dial.source_ip)
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
    token: ClusterToken,
    dial: &Dial,
    rx: mpsc::Receiver<RaftMessage>,
) -> anyhow::Result<()> {
    let address = peer_address(store_id, scheduler).await?;
    let mut client = RaftPeerClient::new(store_channel(&address, dial).await?);
    let mut req = Request::new(batches(rx));
    token.attach(&mut req);
    client.batch_raft(req).await?;
    Ok(())
}

/// The messages queued in `rx`, gathered into `BatchRaft` messages: each takes what is queued
/// when it starts, within [`BATCH_MESSAGES`] and [`BATCH_BYTES`]. So under load the regions of a
/// store share a stream message, and alone a message leaves at once.
fn batches(rx: mpsc::Receiver<RaftMessage>) -> impl tokio_stream::Stream<Item = BatchRaftMessage> {
    futures_util::stream::unfold((rx, None), |(mut rx, carry)| async move {
        let first = match carry {
            Some(m) => m,
            None => rx.recv().await?,
        };
        let mut bytes = first.encoded_len();
        let mut msgs = vec![first];
        let mut carry = None;
        while msgs.len() < BATCH_MESSAGES {
            let Ok(m) = rx.try_recv() else { break };
            let len = m.encoded_len();
            if bytes + len > BATCH_BYTES {
                carry = Some(m);
                break;
            }
            bytes += len;
            msgs.push(m);
        }
        Some((BatchRaftMessage { msgs }, (rx, carry)))
    })
}

/// Where store `store_id` takes raft traffic, as the scheduler knows it.
async fn peer_address(
    store_id: u64,
    scheduler: Arc<dyn SchedulerClient>,
) -> anyhow::Result<String> {
    let store: metapb::Store =
        tokio::task::spawn_blocking(move || scheduler.get_store(store_id)).await??;
    anyhow::ensure!(
        !store.peer_address.is_empty(),
        "store {store_id} registered no peer address"
    );
    Ok(store.peer_address)
}

/// Streams one snapshot to `store_id`: the chunks are read from disk on a blocking thread a few
/// ahead of the network.
async fn stream_snapshot(
    store_id: u64,
    scheduler: Arc<dyn SchedulerClient>,
    token: ClusterToken,
    dial: Dial,
    reader: snap::ChunkReader,
    msg: RaftMessage,
) -> anyhow::Result<()> {
    let address = peer_address(store_id, scheduler).await?;
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
    let mut client = RaftPeerClient::new(store_channel(&address, &dial).await?);
    let mut req = Request::new(ReceiverStream::new(rx));
    token.attach(&mut req);
    let sent = client.snapshot(req).await;
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
        report: SnapshotReport,
    ) -> raftstore::Result<()> {
        let transport_err = |e: String| raftstore::Error::Transport(e);
        let (key, _) = snap::snapshot_in_message(&msg).map_err(|e| transport_err(e.to_string()))?;
        let reader = snap_mgr
            .send(key, snap::DEFAULT_CHUNK_SIZE)
            .map_err(|e| transport_err(format!("snapshot {key} cannot be sent: {e}")))?;
        let store_id = msg.to_peer.as_ref().map_or(0, |p| p.store_id);
        let region_id = msg.region_id;
        let scheduler = self.scheduler.clone();
        let token = self.token.clone();
        let dial = self.dial.clone();
        self.runtime.spawn(async move {
            let result = stream_snapshot(store_id, scheduler, token, dial, reader, msg).await;
            if let Err(e) = &result {
                tracing::warn!(region_id, store_id, %key, error = %e, "snapshot transfer failed");
            }
            report.finish(result.is_err());
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
