//! The client `TinyKv` service answering unary calls, served in place (no network) over an
//! in-memory storage, and a transaction over gRPC on the RocksDB storage.

use std::sync::Arc;

use kv::txn::testkit::{PrewriteRequestExt, RequestBuilder};
use kv::{MemoryStorage, RawApi, RawLimits, StandaloneStorage};
use proto::kvrpcpb::{Action, RawCasRequest, SplitRegionRequest};
use proto::tinykvpb::tiny_kv_client::TinyKvClient;
use proto::tinykvpb::tiny_kv_server::{TinyKv, TinyKvServer};
use server::KvService;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Request;

/// `SplitRegion` checks its key like every raw request does, before the storage sees it (a split
/// key becomes a region boundary that every store and the scheduler keep); a storage without
/// regions refuses the split itself.
#[tokio::test]
async fn service_checks_split_keys_1() {
    let storage = Arc::new(MemoryStorage::new());
    let service = KvService::new(RawApi::new(storage, RawLimits::default()));
    let split = |key: Vec<u8>| {
        service.split_region(tonic::Request::new(SplitRegionRequest {
            context: None,
            split_key: key,
        }))
    };
    let huge = split(vec![b'k'; 64 * 1024 + 1]).await.unwrap().into_inner();
    assert!(huge.error.contains("exceeds the limit"), "{huge:?}");
    let empty = split(Vec::new()).await.unwrap().into_inner();
    assert!(empty.error.contains("empty"), "{empty:?}");
    let fine = split(b"m".to_vec()).await.unwrap().into_inner();
    assert!(fine.error.contains("no regions to split"), "{fine:?}");
    assert!(fine.left.is_none() && fine.right.is_none());
}

#[tokio::test]
async fn service_answers_cas_with_the_previous_value_1() {
    let storage = Arc::new(MemoryStorage::new());
    let service = KvService::new(RawApi::new(storage, RawLimits::default()));
    let call = |key: &str, previous: Option<&str>, value: &str| {
        let req = RawCasRequest {
            context: None,
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            previous_not_exist: previous.is_none(),
            // Ignored when the key is expected absent.
            previous_value: previous.unwrap_or("ignored").as_bytes().to_vec(),
            cf: String::new(),
            ttl: 0,
        };
        service.raw_compare_and_swap(Request::new(req))
    };
    let r = call("k", None, "1").await.unwrap().into_inner();
    assert!(
        r.succeed && r.previous_not_exist && r.previous_value.is_empty(),
        "{r:?}"
    );
    let r = call("k", None, "2").await.unwrap().into_inner();
    assert!(!r.succeed && !r.previous_not_exist, "{r:?}");
    assert_eq!(r.previous_value, b"1");
    let r = call("k", Some("1"), "2").await.unwrap().into_inner();
    assert!(r.succeed && !r.previous_not_exist, "{r:?}");
    assert_eq!(r.previous_value, b"1");
    let r = call("", Some("1"), "2").await.unwrap().into_inner();
    assert!(!r.succeed && r.error.contains("empty"), "{r:?}");
    assert!(r.region_error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_transaction_over_standalone_4b() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(StandaloneStorage::open(dir.path(), false).unwrap());
    let service = KvService::new(RawApi::new(storage, RawLimits::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TinyKvServer::new(service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );
    let mut c = TinyKvClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let req = RequestBuilder::default();

    let p = c
        .kv_prewrite(req.prewrite(10, b"a", 3000).put(b"a", b"1").put(b"b", b"2"))
        .await
        .unwrap()
        .into_inner();
    assert!(p.errors.is_empty(), "{p:?}");
    // Another transaction runs into the lock.
    let p = c
        .kv_prewrite(req.prewrite(11, b"b", 3000).put(b"b", b"x"))
        .await
        .unwrap()
        .into_inner();
    assert!(p.errors[0].locked.is_some(), "{p:?}");
    let g = c.kv_get(req.get(b"a", 12)).await.unwrap().into_inner();
    assert_eq!(
        g.error.and_then(|e| e.locked).map(|l| l.lock_version),
        Some(10)
    );

    let s = c
        .kv_check_txn_status(req.check_txn_status(b"a", 10, 12))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((s.action(), s.lock_ttl), (Action::NoAction, 3000));
    let r = c
        .kv_commit(req.commit(10, 20, &[b"a", b"b"]))
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none(), "{r:?}");
    let g = c.kv_get(req.get(b"b", 20)).await.unwrap().into_inner();
    assert_eq!((g.value.as_slice(), g.not_found), (&b"2"[..], false));
    let sc = c.kv_scan(req.scan(b"", 10, 25)).await.unwrap().into_inner();
    let keys: Vec<_> = sc
        .pairs
        .iter()
        .map(|p| (p.key.as_slice(), p.value.as_slice()))
        .collect();
    assert_eq!(keys, [(&b"a"[..], &b"1"[..]), (b"b", b"2")]);

    // A rolled-back transaction; resolving an abandoned one.
    let rb = c
        .kv_batch_rollback(req.rollback(11, &[b"b"]))
        .await
        .unwrap()
        .into_inner();
    assert!(rb.error.is_none(), "{rb:?}");
    let p = c
        .kv_prewrite(req.prewrite(30, b"c", 1).put(b"c", b"3"))
        .await
        .unwrap()
        .into_inner();
    assert!(p.errors.is_empty());
    let res = c
        .kv_resolve_lock(req.resolve_lock(30, 0))
        .await
        .unwrap()
        .into_inner();
    assert!(res.error.is_none());
    let g = c.kv_get(req.get(b"c", 40)).await.unwrap().into_inner();
    assert!(g.not_found && g.error.is_none(), "{g:?}");

    // A malformed request is a gRPC error, not a panic or a silent success.
    let e = c.kv_commit(req.commit(50, 40, &[b"a"])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Raw handlers still answer.
    let raw = c
        .raw_get(proto::kvrpcpb::RawGetRequest {
            key: b"zz".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(raw.not_found);

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
