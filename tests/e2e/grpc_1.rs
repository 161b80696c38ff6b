//! The TinyKv raw API over gRPC on 127.0.0.1.

use server::config::{Config, EngineKind};
use tessera_client::raw::{ClientError, RawClient};

use crate::util::{start, test_config};

#[tokio::test]
async fn grpc_put_get_delete_scan_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&test_config(dir.path())).await;
    let mut c = RawClient::connect(&server.addr.to_string()).await.unwrap();

    assert_eq!(c.get("default", b"k1").await.unwrap(), None);
    c.put("default", b"k1", b"v1").await.unwrap();
    c.put("default", b"k2", b"v2").await.unwrap();
    c.put("write", b"k1", b"w1").await.unwrap();
    assert_eq!(c.get("", b"k1").await.unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        c.get("write", b"k1").await.unwrap().as_deref(),
        Some(&b"w1"[..])
    );
    assert_eq!(c.get("lock", b"k1").await.unwrap(), None);

    c.put("default", b"k1", b"v1b").await.unwrap();
    let pairs = c.scan("default", b"", 10).await.unwrap();
    assert_eq!(
        pairs,
        vec![
            (b"k1".to_vec(), b"v1b".to_vec()),
            (b"k2".to_vec(), b"v2".to_vec())
        ]
    );
    assert_eq!(c.scan("default", b"k", 1).await.unwrap().len(), 1);
    assert_eq!(c.scan("write", b"", 10).await.unwrap().len(), 1);

    c.delete("default", b"k1").await.unwrap();
    c.delete("default", b"never-there").await.unwrap();
    assert_eq!(c.get("default", b"k1").await.unwrap(), None);
    assert_eq!(
        c.get("write", b"k1").await.unwrap().as_deref(),
        Some(&b"w1"[..])
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn grpc_bad_input_gets_clear_errors_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.raw.max_value_size = 1024;
    let server = start(&config).await;
    let mut c = RawClient::connect(&server.addr.to_string()).await.unwrap();

    let e = c.put("default", b"", b"v").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Server(ref m) if m.contains("empty")),
        "{e}"
    );
    let e = c.get("nope", b"k").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Server(ref m) if m.contains("unknown column family")),
        "{e}"
    );
    let e = c.scan("nope", b"", 5).await.unwrap_err();
    assert!(matches!(e, ClientError::Server(_)), "{e}");
    let e = c.put("default", b"big", &[0u8; 1025]).await.unwrap_err();
    assert!(
        matches!(e, ClientError::Server(ref m) if m.contains("exceeds")),
        "{e}"
    );
    // The server is still healthy and nothing was written by the failed calls.
    c.put("default", b"ok", &[7u8; 1024]).await.unwrap();
    assert_eq!(c.scan("default", b"", 10).await.unwrap().len(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn grpc_default_limit_accepts_8mib_and_rejects_more_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&test_config(dir.path())).await;
    let mut c = RawClient::connect(&server.addr.to_string()).await.unwrap();
    let max = 8 * 1024 * 1024;
    c.put("default", b"max", &vec![1u8; max]).await.unwrap();
    assert_eq!(
        c.get("default", b"max").await.unwrap().map(|v| v.len()),
        Some(max)
    );
    let e = c
        .put("default", b"over", &vec![1u8; max + 1])
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Server(ref m) if m.contains("exceeds")),
        "{e}"
    );
    server.shutdown().await.unwrap();
}

/// Durability is the RocksDB engine's: this test runs on it whatever `TESSERA_TEST_ENGINE` says.
#[tokio::test]
async fn data_survives_server_restart_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        engine: EngineKind::Standalone,
        ..test_config(dir.path())
    };
    let server = start(&config).await;
    let mut c = RawClient::connect(&server.addr.to_string()).await.unwrap();
    for i in 0..100u32 {
        c.put("default", format!("key{i:03}").as_bytes(), &i.to_be_bytes())
            .await
            .unwrap();
    }
    c.put("lock", b"l", b"lv").await.unwrap();
    c.delete("default", b"key050").await.unwrap();
    server.shutdown().await.unwrap();

    let server = start(&config).await;
    let mut c = RawClient::connect(&server.addr.to_string()).await.unwrap();
    let pairs = c.scan("default", b"", 1000).await.unwrap();
    assert_eq!(pairs.len(), 99);
    assert_eq!(
        c.get("default", b"key099").await.unwrap(),
        Some(99u32.to_be_bytes().to_vec())
    );
    assert_eq!(c.get("default", b"key050").await.unwrap(), None);
    assert_eq!(
        c.get("lock", b"l").await.unwrap().as_deref(),
        Some(&b"lv"[..])
    );
    server.shutdown().await.unwrap();
}

/// `--engine memory` serves the same API from memory, writes nothing to the data dir, and
/// starts empty again: it is for tests and demos, not durable.
#[tokio::test]
async fn memory_engine_serves_and_forgets_on_restart_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        engine: EngineKind::Memory,
        ..test_config(dir.path())
    };
    let server = start(&config).await;
    let mut c = RawClient::connect(&server.addr.to_string()).await.unwrap();
    c.put("default", b"k", b"v").await.unwrap();
    assert_eq!(c.get("default", b"k").await.unwrap(), Some(b"v".to_vec()));
    server.shutdown().await.unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let server = start(&config).await;
    let mut c = RawClient::connect(&server.addr.to_string()).await.unwrap();
    assert_eq!(c.get("default", b"k").await.unwrap(), None);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreachable_server_is_a_connect_error_1() {
    // Bind and drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = RawClient::connect(&format!("127.0.0.1:{port}"))
        .await
        .err()
        .expect("must fail");
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
}

/// Batch get / put / delete and range scans (bounded, reversed, keys only) through one
/// server's gRPC API.
#[tokio::test]
async fn grpc_batches_and_range_scans_1() {
    use tessera_client::ScanRange;

    let dir = tempfile::tempdir().unwrap();
    let server = start(&test_config(dir.path())).await;
    let mut c = RawClient::connect(&server.addr.to_string()).await.unwrap();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (b'a'..=b'f').map(|k| (vec![k], vec![k, k])).collect();
    c.batch_put("default", &pairs).await.unwrap();
    let got = c
        .batch_get("default", &[b"b".to_vec(), b"x".to_vec(), b"e".to_vec()])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            (b"b".to_vec(), b"bb".to_vec()),
            (b"e".to_vec(), b"ee".to_vec())
        ]
    );

    let reader = c.clone();
    let scan = |r: ScanRange| {
        let mut c = reader.clone();
        async move { c.scan_range("default", &r).await.unwrap() }
    };
    let ks =
        |p: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<u8> { p.into_iter().flat_map(|(k, _)| k).collect() };
    assert_eq!(ks(scan(ScanRange::new(b"b", b"e", 10)).await), b"bcd");
    assert_eq!(
        ks(scan(ScanRange::new(b"b", b"e", 10).reversed()).await),
        b"dcb"
    );
    assert_eq!(
        ks(scan(ScanRange::new(b"", b"", 2).reversed()).await),
        b"fe"
    );
    let only = scan(ScanRange::new(b"a", b"c", 10).keys_only()).await;
    assert_eq!(only, vec![(b"a".to_vec(), vec![]), (b"b".to_vec(), vec![])]);

    c.batch_delete("default", &[b"a".to_vec(), b"f".to_vec(), b"zz".to_vec()])
        .await
        .unwrap();
    assert_eq!(ks(scan(ScanRange::new(b"", b"", 10)).await), b"bcde");
    // One bad key refuses the whole batch, and nothing of it is written.
    let e = c
        .batch_put(
            "default",
            &[(b"q".to_vec(), b"1".to_vec()), (vec![], b"2".to_vec())],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Server(_)), "{e}");
    assert_eq!(c.get("default", b"q").await.unwrap(), None);
    server.shutdown().await.unwrap();
}
