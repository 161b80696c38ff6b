//! [`PeerService`]: the `RaftPeer` service on a store's peer port, where other stores send raft
//! messages (`Raft`, `BatchRaft`) and snapshots (`Snapshot`). The peer port serves nothing else,
//! and the client port (`TinyKv`) does not serve these: each port answers the other's calls
//! `Unimplemented`.
//!
//! Who may speak: with a cluster token configured (`security.cluster_token[_file]`), every
//! stream must carry it in the `x-tessera-cluster-token` metadata; a stream without it, or with
//! another, is refused (`Unauthenticated`) before a message is read. Then every message goes
//! through the store's [`raftstore::Inbound`], which checks it before any peer sees it.
//!
//! Snapshots: the first chunk's message is checked and the announced size is held against the
//! snapshot manager's limits (largest snapshot, free space to keep) before a byte is written;
//! a stream that goes quiet for [`SNAPSHOT_CHUNK_TIMEOUT`] is cut off and what it wrote removed;
//! the files are verified (sizes, md5) before the message reaches raft.

use std::sync::Arc;
use std::time::Duration;

use proto::raft_serverpb::{BatchRaftMessage, Done, RaftMessage, SnapshotChunk};
use proto::tinykvpb::raft_peer_server::{RaftPeer, RaftPeerServer};
use raftstore::{DeliverError, DropReason, Inbound, Refused, Stream};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// The metadata key carrying the cluster token on store-to-store streams.
pub const TOKEN_METADATA: &str = "x-tessera-cluster-token";

/// How long a snapshot stream may stay silent before it is cut off.
pub const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// A shared secret the stores of one cluster present to each other.
#[derive(Clone, Default)]
pub struct ClusterToken(Option<Arc<str>>);

impl std::fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        match self.0 {
            Some(_) => f.write_str("ClusterToken(set)"),
            None => f.write_str("ClusterToken(none)"),
        }
    }
}

impl ClusterToken {
    /// `token`, or no token when empty.
    pub fn new(token: &str) -> ClusterToken {
        let t = token.trim();
        ClusterToken((!t.is_empty()).then(|| Arc::from(t)))
    }

    /// Whether a token is set.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Adds the token to an outgoing request's metadata.
    pub fn attach<T>(&self, req: &mut Request<T>) {
        if let Some(t) = &self.0 {
            if let Ok(v) = t.parse() {
                req.metadata_mut().insert(TOKEN_METADATA, v);
            }
        }
    }

    /// Checks an incoming request's metadata.
    ///
    /// # Errors
    /// `Unauthenticated` when a token is set and the request does not carry it.
    pub fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(expected) = &self.0 else {
            return Ok(());
        };
        let given = req
            .metadata()
            .get(TOKEN_METADATA)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if constant_time_eq(given, expected.as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "missing or wrong cluster token: this port takes raft traffic from the \
                 cluster's stores only",
            ))
        }
    }
}

/// Compares two byte strings in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The peer-port service of a raft store.
pub struct PeerService {
    inbound: Inbound,
    snap_mgr: snap::SnapManager,
    token: ClusterToken,
    /// The common names a client certificate may carry (empty: any the CA signed).
    allowed_cn: Arc<[String]>,
    stop: watch::Receiver<bool>,
}

impl PeerService {
    /// Delivers incoming raft messages through `inbound`, receiving snapshots into `snap_mgr`,
    /// from callers presenting `token`. Incoming raft streams end once `stop` turns true: they
    /// never end by themselves, and a graceful server shutdown waits for every open request.
    pub fn new(
        inbound: Inbound,
        snap_mgr: snap::SnapManager,
        token: ClusterToken,
        stop: watch::Receiver<bool>,
    ) -> PeerService {
        PeerService {
            inbound,
            snap_mgr,
            token,
            allowed_cn: Arc::from(Vec::new()),
            stop,
        }
    }

    /// Takes streams only from clients whose certificate carries one of `names` as its common
    /// name (under TLS; empty: any certificate the CA signed).
    pub fn with_allowed_cn(mut self, names: Vec<String>) -> PeerService {
        self.allowed_cn = Arc::from(names);
        self
    }

    /// Whether `req` may speak raft here: the cluster token, and the certificate's name.
    fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.token.check(req)?;
        security::check_common_name(req, &self.allowed_cn)
    }

    /// Hands one message of a raft stream to the store. A refused message is counted and
    /// dropped and the stream goes on, as raft's own retransmissions make a broken stream
    /// costlier than a dropped message; a store that stopped ends the stream.
    fn take_raft(&self, msg: RaftMessage) -> Result<(), Status> {
        match self.inbound.deliver(msg, Stream::Raft) {
            Ok(()) | Err(DeliverError::Refused(_)) => Ok(()),
            Err(DeliverError::Stopped(e)) => Err(Status::unavailable(format!(
                "store is not accepting messages: {e}"
            ))),
        }
    }

    /// Hands each item of `stream` to `take` until the stream ends, the store stops, or the
    /// stream or `take` fails (that error ends the call).
    async fn take_until_stopped<T>(
        &self,
        mut stream: Streaming<T>,
        mut take: impl FnMut(T) -> Result<(), Status>,
    ) -> Result<(), Status> {
        let mut stop = self.stop.clone();
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(item) = item else { return Ok(()) };
            take(item?)?;
        }
    }

    fn refuse(&self, region_id: u64, reason: DropReason, detail: String) -> Status {
        let r = Refused { reason, detail };
        self.inbound.refused(region_id, &r);
        Status::invalid_argument(format!("{}: {}", r.reason.as_str(), r.detail))
    }

    /// Receives one snapshot stream into the snapshot manager and returns its raft message.
    async fn receive_snapshot(
        &self,
        mut stream: Streaming<SnapshotChunk>,
        bytes: &mut u64,
    ) -> Result<RaftMessage, Status> {
        let first = next_chunk(&mut stream)
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let msg = first
            .message
            .ok_or_else(|| Status::invalid_argument("the first snapshot chunk has no message"))?;
        let region_id = msg.region_id;
        if let Err(r) =
            raftstore::check_raft_message(self.inbound.store_id(), &msg, Stream::Snapshot)
        {
            return Err(self.refuse(region_id, r.reason, r.detail));
        }
        let (key, data) = snap::snapshot_in_message(&msg)
            .map_err(|e| self.refuse(region_id, DropReason::BadSnapshot, e.to_string()))?;
        let meta = data.meta.unwrap_or_default();
        let mgr = self.snap_mgr.clone();
        let mut receiver = tokio::task::spawn_blocking(move || mgr.receive(key, &meta))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| match e {
                snap::Error::Busy { .. } => Status::resource_exhausted(e.to_string()),
                e => self.refuse(region_id, DropReason::BadSnapshot, e.to_string()),
            })?;
        let mut pending = first.data;
        loop {
            if !pending.is_empty() {
                let data = std::mem::take(&mut pending);
                *bytes += data.len() as u64;
                receiver =
                    tokio::task::spawn_blocking(move || receiver.write(&data).map(|()| receiver))
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?
                        .map_err(|e| Status::data_loss(e.to_string()))?;
            }
            match next_chunk(&mut stream).await? {
                Some(chunk) => pending = chunk.data,
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

/// Serves `service` on `listener` until `stop` says so, taking messages of up to
/// `max_message` bytes over at most `max_connections` connections at once.
pub fn serve(
    listener: tokio::net::TcpListener,
    service: PeerService,
    max_message: usize,
    max_connections: usize,
    tls: Option<tonic::transport::ServerTlsConfig>,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>, tonic::transport::Error> {
    let service = RaftPeerServer::new(service)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let incoming = net::bounded(listener, max_connections);
    let mut server = net::grpc_server();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    Ok(tokio::spawn(
        server
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let mut stop = stop;
                let _ = stop.wait_for(|s| *s).await;
            }),
    ))
}

/// The next chunk of a snapshot stream, if it comes within [`SNAPSHOT_CHUNK_TIMEOUT`].
async fn next_chunk(
    stream: &mut Streaming<SnapshotChunk>,
) -> Result<Option<SnapshotChunk>, Status> {
    match tokio::time::timeout(SNAPSHOT_CHUNK_TIMEOUT, stream.next()).await {
        Ok(Some(chunk)) => chunk.map(Some),
        Ok(None) => Ok(None),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no snapshot data for {SNAPSHOT_CHUNK_TIMEOUT:?}"
        ))),
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn raft(&self, r: Request<Streaming<RaftMessage>>) -> Result<Response<Done>, Status> {
        self.admit(&r)?;
        self.take_until_stopped(r.into_inner(), |msg| self.take_raft(msg))
            .await?;
        Ok(Response::new(Done {}))
    }

    async fn batch_raft(
        &self,
        r: Request<Streaming<BatchRaftMessage>>,
    ) -> Result<Response<Done>, Status> {
        self.admit(&r)?;
        self.take_until_stopped(r.into_inner(), |batch: BatchRaftMessage| {
            batch
                .msgs
                .into_iter()
                .try_for_each(|msg| self.take_raft(msg))
        })
        .await?;
        Ok(Response::new(Done {}))
    }

    async fn snapshot(
        &self,
        r: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        self.admit(&r)?;
        let started = std::time::Instant::now();
        let mut bytes = 0;
        let received = self.receive_snapshot(r.into_inner(), &mut bytes).await;
        let ok = received.as_ref().ok().map(|_| bytes);
        self.inbound.on_snapshot_received(started.elapsed(), ok);
        let msg = received.inspect_err(|e| {
            tracing::warn!(error = %e, "incoming snapshot refused");
        })?;
        // The files are complete and verified: raft may have the message now.
        match self.inbound.deliver(msg, Stream::Snapshot) {
            Ok(()) => Ok(Response::new(Done {})),
            Err(DeliverError::Refused(r)) => Err(Status::invalid_argument(r.detail)),
            Err(DeliverError::Stopped(e)) => Err(Status::unavailable(format!(
                "store is not accepting messages: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly_2b() {
        let t = ClusterToken::new(" s3cret\n");
        assert!(t.is_set());
        let mut ok = Request::new(());
        t.attach(&mut ok);
        assert!(t.check(&ok).is_ok());
        let mut wrong = Request::new(());
        ClusterToken::new("s3creT").attach(&mut wrong);
        assert_eq!(
            t.check(&wrong).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let none = Request::new(());
        assert!(t.check(&none).is_err());
        // No token configured: anyone may speak (the README says when that is acceptable).
        assert!(ClusterToken::new("").check(&none).is_ok());
        assert_eq!(format!("{t:?}"), "ClusterToken(set)");
    }
}
