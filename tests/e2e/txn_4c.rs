//! Transactions end to end: `TxnClient` and `tessera-ctl txn` against a standalone server, with
//! timestamps from a real scheduler on loopback.

use std::sync::Arc;

use proto::kvrpcpb::{CommitRequest, Mutation, Op, PrewriteRequest};
use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient};
use tessera_client::raw::RawClient;
use tessera_client::txn::{TxnClient, TxnError};

use crate::util::{ctl, start, start_scheduler, test_config};

async fn tso_client(addr: String) -> Arc<dyn SchedulerClient> {
    let c =
        tokio::task::spawn_blocking(move || RpcClient::connect(&addr, RpcClientConfig::default()))
            .await
            .unwrap()
            .expect("connect to the scheduler");
    Arc::new(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_client_commits_reads_and_detects_conflicts_4c() {
    let dir = tempfile::tempdir().unwrap();
    let sched = start_scheduler(&dir.path().join("sched")).await;
    let server = start(&test_config(&dir.path().join("kv"))).await;
    let client = TxnClient::connect(
        &server.addr.to_string(),
        tso_client(sched.addr.to_string()).await,
    )
    .await
    .unwrap();

    let mut t = client.begin().await.unwrap();
    t.put(b"a", b"1");
    t.put(b"b", b"2");
    let c1 = t.commit().await.unwrap();
    assert!(c1 > 0);

    // Two transactions that both write `a`: the later committer sees a conflict.
    let mut t1 = client.begin().await.unwrap();
    let mut t2 = client.begin().await.unwrap();
    assert_eq!(t2.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]));
    t1.put(b"a", b"from-t1");
    t1.commit().await.unwrap();
    t2.put(b"a", b"from-t2");
    let e = t2.commit().await.unwrap_err();
    assert!(
        matches!(e, TxnError::Conflict { ref key, .. } if key == "a"),
        "{e}"
    );

    let mut r = client.begin().await.unwrap();
    assert_eq!(r.get(b"a").await.unwrap().as_deref(), Some(&b"from-t1"[..]));
    assert_eq!(r.get(b"b").await.unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(r.get(b"zzz").await.unwrap(), None);
    server.shutdown().await.unwrap();
    sched.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_resolves_a_crashed_writers_secondary_lock_4c() {
    let dir = tempfile::tempdir().unwrap();
    let sched = start_scheduler(&dir.path().join("sched")).await;
    let server = start(&test_config(&dir.path().join("kv"))).await;
    let tso = tso_client(sched.addr.to_string()).await;
    let client = TxnClient::connect(&server.addr.to_string(), tso.clone())
        .await
        .unwrap();

    // A writer prewrites p (primary) and s, commits only the primary, then "crashes".
    let mut kv = RawClient::connect(&server.addr.to_string())
        .await
        .unwrap()
        .into_inner();
    let ts = |c: Arc<dyn SchedulerClient>| async move {
        tokio::task::spawn_blocking(move || c.tso())
            .await
            .unwrap()
            .unwrap()
    };
    let start_ts = ts(tso.clone()).await;
    let put = |k: &[u8], v: &[u8]| Mutation {
        op: Op::Put as i32,
        key: k.to_vec(),
        value: v.to_vec(),
    };
    let pre = kv
        .kv_prewrite(PrewriteRequest {
            mutations: vec![put(b"p", b"pv"), put(b"s", b"sv")],
            primary_lock: b"p".to_vec(),
            start_version: start_ts,
            lock_ttl: 60_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        pre.errors.is_empty() && pre.region_error.is_none(),
        "{pre:?}"
    );
    let commit_ts = ts(tso.clone()).await;
    let com = kv
        .kv_commit(CommitRequest {
            start_version: start_ts,
            keys: vec![b"p".to_vec()],
            commit_version: commit_ts,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(com.error.is_none() && com.region_error.is_none(), "{com:?}");

    // A reader meets the secondary's lock (TTL far from expired), finds the primary committed,
    // resolves the lock and reads the committed value.
    let mut r = client.begin().await.unwrap();
    assert_eq!(r.get(b"s").await.unwrap().as_deref(), Some(&b"sv"[..]));
    assert_eq!(r.get(b"p").await.unwrap().as_deref(), Some(&b"pv"[..]));
    server.shutdown().await.unwrap();
    sched.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_txn_put_get_delete_4c() {
    let dir = tempfile::tempdir().unwrap();
    let sched = start_scheduler(&dir.path().join("sched")).await;
    let server = start(&test_config(&dir.path().join("kv"))).await;
    let (addr, saddr) = (server.addr.to_string(), sched.addr.to_string());
    let out = tokio::task::spawn_blocking(move || {
        let base = [
            "--addr",
            addr.as_str(),
            "--scheduler",
            saddr.as_str(),
            "txn",
        ];
        let with = |rest: &[&str]| -> Vec<String> {
            base.iter().chain(rest).map(|s| s.to_string()).collect()
        };
        let run = |rest: &[&str]| {
            let args = with(rest);
            ctl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        };
        vec![
            run(&["put", "k1", "v1", "k2", "v2"]),
            run(&["get", "k1"]),
            run(&["get", "k2"]),
            run(&["delete", "k1"]),
            run(&["get", "k1"]),
            run(&["put", "odd"]),
            run(&["-w", "json", "put", "j", "jv"]),
            run(&["-w", "json", "get", "j"]),
            run(&["--hex", "put", "00ff", "cafe"]),
            run(&["--hex", "-w", "json", "get", "00ff"]),
            run(&["-w", "json", "get", "absent"]),
            run(&["--hex", "get", "zz"]),
        ]
    })
    .await
    .unwrap();
    assert_eq!(out[0].0, 0, "{:?}", out[0]);
    assert!(out[0].1.starts_with("OK (committed at "), "{:?}", out[0]);
    assert_eq!(out[1], (0, "v1\n".into(), String::new()));
    assert_eq!(out[2], (0, "v2\n".into(), String::new()));
    assert_eq!(out[3].0, 0, "{:?}", out[3]);
    assert_eq!(out[4].0, 1, "{:?}", out[4]);
    assert_eq!(out[5].0, 2, "{:?}", out[5]);
    // -w json and --hex, as the raw commands print them.
    let put: serde_json::Value = serde_json::from_str(&out[6].1).unwrap();
    assert_eq!(put["ok"], true, "{:?}", out[6]);
    assert!(put["commit_ts"].as_u64().unwrap() > 0, "{:?}", out[6]);
    assert_eq!(out[7].1, "{\"kvs\":[{\"key\":\"j\",\"value\":\"jv\"}]}\n");
    assert_eq!(out[8].0, 0, "{:?}", out[8]);
    assert_eq!(
        out[9].1,
        "{\"kvs\":[{\"key\":\"00ff\",\"value\":\"cafe\"}]}\n"
    );
    assert_eq!((out[10].0, out[10].1.as_str()), (1, "{\"kvs\":[]}\n"));
    assert_eq!(out[11].0, 2, "{:?}", out[11]);
    server.shutdown().await.unwrap();
    sched.shutdown().await.unwrap();
}

#[test]
fn ctl_txn_without_scheduler_exits_4_4c() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sched = format!("127.0.0.1:{port}");
    // Nothing listens there: the CLI gives up after its short startup window.
    let (code, _, err) = ctl(&["--scheduler", &sched, "txn", "get", "k"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("timestamp"), "{err}");
}
