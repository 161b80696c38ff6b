//! `tessera-server --engine raft`: a store that joins the scheduler's cluster (bootstrapping it
//! as the first store), serves the raw API over gRPC and HTTP through raft, shuts down cleanly
//! and comes back with its data.

use std::time::{Duration, Instant};

use server::config::{Config, EngineKind};
use tessera_client::raw::RawClient;

use crate::util::{http, start, start_scheduler, test_config};

/// Retries `put` until the store has elected itself and accepts writes.
async fn wait_writable(addr: &str) -> RawClient {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = RawClient::connect(addr).await.unwrap();
    loop {
        match c.put("default", b"probe", b"1").await {
            Ok(()) => return c,
            Err(e) if Instant::now() >= deadline => panic!("store never became writable: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn raft_config(dir: &std::path::Path, scheduler: &str) -> Config {
    Config {
        engine: EngineKind::Raft,
        scheduler_addr: scheduler.to_string(),
        ..test_config(dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_engine_serves_and_survives_restart_2b() {
    let dir = tempfile::tempdir().unwrap();
    let sched = start_scheduler(&dir.path().join("sched")).await;
    let config = raft_config(&dir.path().join("store"), &sched.addr.to_string());

    let server = start(&config).await;
    let mut c = wait_writable(&server.addr.to_string()).await;
    for i in 0..20u32 {
        c.put("default", format!("k{i:02}").as_bytes(), &i.to_be_bytes())
            .await
            .unwrap();
    }
    c.delete("default", b"probe").await.unwrap();
    assert_eq!(
        c.get("default", b"k07").await.unwrap(),
        Some(7u32.to_be_bytes().to_vec())
    );
    assert_eq!(
        http(server.status_addr, "PUT", "/kv/hello", b"raft")
            .await
            .0,
        204
    );
    assert_eq!(
        http(server.status_addr, "GET", "/kv/hello", b"").await,
        (200, b"raft".to_vec())
    );
    // A graceful shutdown must not wait on anything raft keeps open.
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown finishes")
        .unwrap();

    let server = start(&config).await;
    let mut c = wait_writable(&server.addr.to_string()).await;
    let pairs = c.scan("default", b"k", 100).await.unwrap();
    let written: Vec<_> = pairs.iter().filter(|(k, _)| k.starts_with(b"k")).collect();
    assert_eq!(written.len(), 20, "{pairs:?}");
    assert_eq!(written[19].1, 19u32.to_be_bytes().to_vec());
    assert_eq!(
        c.get("default", b"hello").await.unwrap().as_deref(),
        Some(&b"raft"[..])
    );
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown finishes")
        .unwrap();
    sched.shutdown().await.unwrap();
}

#[tokio::test]
async fn raft_engine_without_scheduler_is_a_clear_error_2b() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = raft_config(dir.path(), &format!("127.0.0.1:{port}"));
    let err = server::start(&config).await.err().expect("must fail");
    assert!(
        format!("{err:#}").contains("cannot reach the scheduler"),
        "{err:#}"
    );
}
