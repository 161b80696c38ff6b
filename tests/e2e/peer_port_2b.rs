//! Who may speak raft to a store, and what its status endpoints say, on a running 3-store
//! cluster of real processes:
//!
//! ```text
//!   client port   raw/txn RPCs; Raft, BatchRaft and Snapshot streams refused (Unimplemented)
//!   peer port     Raft, BatchRaft and Snapshot streams with the cluster token only (else
//!                 Unauthenticated);
//!                 client RPCs refused (Unimplemented)
//!   status port   /livez /readyz /health 200, /metrics counts every refused raft message,
//!                 and the standard gRPC health service says SERVING on the client port
//! ```

use proto::eraftpb::MessageType;
use proto::kvrpcpb::RawGetRequest;
use proto::raft_serverpb::{BatchRaftMessage, RaftMessage};
use proto::tinykvpb::raft_peer_client::RaftPeerClient;
use proto::tinykvpb::tiny_kv_client::TinyKvClient;
use server::peer_service::ClusterToken;
use tonic::{Code, Request};

use crate::forge::{forge_raft, raft_msg};
use crate::hostile::{send_raft, send_raft_batch};
use crate::survive::{cluster_with_writes, must_keep_serving};
use crate::util::http;

async fn client(addr: &str) -> TinyKvClient<tonic::transport::Channel> {
    TinyKvClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

/// Opens a raft stream to `addr` with `token` (if any) carrying `msgs` (on `BatchRaft`, in one
/// message, when `batched`); returns its answer.
async fn raft_stream(
    addr: &str,
    token: Option<&str>,
    msgs: Vec<RaftMessage>,
    batched: bool,
) -> Code {
    let mut c = RaftPeerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let answer = if batched {
        let mut req = Request::new(tokio_stream::iter([BatchRaftMessage { msgs }]));
        if let Some(t) = token {
            ClusterToken::new(t).attach(&mut req);
        }
        c.batch_raft(req).await
    } else {
        let mut req = Request::new(tokio_stream::iter(msgs));
        if let Some(t) = token {
            ClusterToken::new(t).attach(&mut req);
        }
        c.raft(req).await
    };
    match answer {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// The value of the first `name{...}` sample of a Prometheus text whose labels contain
/// `label`.
fn metric(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} with {label} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_port_takes_raft_from_the_cluster_only_2b() {
    let (mut cluster, mut acked, topo) = cluster_with_writes(5).await;
    let target = topo.follower();
    let from = topo.leader;
    let store = &cluster.stores[target];
    let mut m = raft_msg(MessageType::MsgHeartbeat);
    m.set_term(1);
    let heartbeat = forge_raft(&topo.region, &topo.peers[from], &topo.peers[target], m);

    // The peer port: no token, a wrong one, or one of another length are all refused before a
    // message is read.
    let peer = store.peer.clone();
    for batched in [false, true] {
        for token in [
            None,
            Some("wrong"),
            Some(&store.token[..store.token.len() - 1]),
        ] {
            assert_eq!(
                raft_stream(&peer, token, vec![heartbeat.clone()], batched).await,
                Code::Unauthenticated,
                "token {token:?}, batched {batched}"
            );
        }
        // With the token, the stream is taken.
        assert_eq!(
            raft_stream(&peer, Some(&store.token), vec![heartbeat.clone()], batched).await,
            Code::Ok,
            "batched {batched}"
        );
    }
    // Client RPCs are not served on the peer port.
    let get = RawGetRequest {
        key: b"k".to_vec(),
        cf: "default".into(),
        ..Default::default()
    };
    let e = client(&peer).await.raw_get(get.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e}");
    let cas = proto::kvrpcpb::RawCasRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        previous_not_exist: true,
        ..Default::default()
    };
    let e = client(&peer).await.raw_compare_and_swap(cas).await;
    assert_eq!(e.unwrap_err().code(), Code::Unimplemented);
    // Raft is not served on the client port, token or not.
    let grpc = store.grpc_addr().to_string();
    for batched in [false, true] {
        assert_eq!(
            raft_stream(&grpc, Some(&store.token), vec![heartbeat.clone()], batched).await,
            Code::Unimplemented,
            "batched {batched}"
        );
    }
    // The client port still serves clients.
    let r = client(&grpc).await.raw_get(get).await;
    assert!(r.is_ok(), "{r:?}");

    // A refused message (a type only a node itself generates) is dropped and counted.
    let before = http(store.http, "GET", "/metrics", b"").await;
    assert_eq!(before.0, 200);
    let before = String::from_utf8_lossy(&before.1).to_string();
    let local = "reason=\"local_message_type\"";
    let name = "tessera_raft_messages_dropped_total";
    let hup = forge_raft(
        &topo.region,
        &topo.peers[from],
        &topo.peers[target],
        raft_msg(MessageType::MsgHup),
    );
    send_raft(store, vec![hup.clone(), hup.clone()])
        .await
        .unwrap();
    send_raft_batch(store, vec![hup.clone(), hup])
        .await
        .unwrap();
    let after = http(store.http, "GET", "/metrics", b"").await;
    let after = String::from_utf8_lossy(&after.1).to_string();
    assert_eq!(
        metric(&after, name, local),
        metric(&before, name, local) + 4,
        "{after}"
    );

    // Status: live, ready, healthy; gRPC health says SERVING.
    for path in ["/livez", "/readyz", "/health"] {
        let (code, body) = http(store.http, "GET", path, b"").await;
        assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    for service in ["", "tinykvpb.TinyKv"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "gRPC health of {service:?}"
        );
    }
    must_keep_serving(&mut cluster, target, topo.leader, &mut acked).await;
}
