//! Every gRPC port bounds the concurrent HTTP/2 streams of one connection. tonic serves with no
//! bound unless told (it clears hyper's own default), so one connection could otherwise open
//! any number of calls at once, each a task and buffers on the server. A store's ports (client,
//! peer, HTTP gateway) also bound the connections open at once (`max_connections`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{start, start_scheduler, test_config};

/// The HTTP/2 client preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
const SETTINGS: u8 = 0x4;
const ACK: u8 = 0x1;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// Reads `conn` up to the server's first SETTINGS frame; returns the
/// SETTINGS_MAX_CONCURRENT_STREAMS it announces (None when it announces no bound).
async fn server_settings(conn: &mut TcpStream) -> Option<u32> {
    loop {
        let mut header = [0u8; 9];
        conn.read_exact(&mut header).await.unwrap();
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await.unwrap();
        if header[3] != SETTINGS || header[4] & ACK != 0 {
            continue;
        }
        return payload.chunks_exact(6).find_map(|s| {
            (u16::from_be_bytes([s[0], s[1]]) == MAX_CONCURRENT_STREAMS)
                .then(|| u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
        });
    }
}

/// A connection to `addr` that has sent the HTTP/2 preface.
async fn h2_connect(addr: SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(PREFACE).await.unwrap();
    conn
}

/// Opens an HTTP/2 connection to `addr` and returns the SETTINGS_MAX_CONCURRENT_STREAMS the
/// server announces in its first SETTINGS frame (None when it announces no bound).
async fn announced_stream_bound(addr: SocketAddr) -> Option<u32> {
    let mut conn = h2_connect(addr).await;
    tokio::time::timeout(Duration::from_secs(10), server_settings(&mut conn))
        .await
        .expect("the server's SETTINGS within 10 s")
}

#[tokio::test]
async fn the_client_port_bounds_streams_per_connection_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&test_config(dir.path())).await;
    assert_eq!(
        announced_stream_bound(server.addr).await,
        Some(net::GRPC_MAX_CONCURRENT_STREAMS)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_scheduler_port_bounds_streams_per_connection_1() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = start_scheduler(dir.path()).await;
    assert_eq!(
        announced_stream_bound(scheduler.addr).await,
        Some(scheduler::server::GRPC_MAX_CONCURRENT_STREAMS)
    );
}

/// Checks that a port bounded to two connections serves two, keeps a third waiting, and serves
/// the third once the first closes.
async fn serves_two_at_once(addr: SocketAddr) {
    let mut first = h2_connect(addr).await;
    let mut second = h2_connect(addr).await;
    for conn in [&mut first, &mut second] {
        tokio::time::timeout(Duration::from_secs(10), server_settings(conn))
            .await
            .expect("each of the first two connections is served");
    }
    let mut third = h2_connect(addr).await;
    let early = tokio::time::timeout(Duration::from_millis(300), server_settings(&mut third)).await;
    assert!(
        early.is_err(),
        "a third connection was served past a bound of two"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), server_settings(&mut third))
        .await
        .expect("the third connection is served once the first closes");
    drop((second, third));
}

/// Past `max_connections` a connection is not served (it waits in the kernel's backlog) until
/// an open one closes; then it is.
#[tokio::test]
async fn the_client_port_serves_at_most_max_connections_at_once_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.max_connections = 2;
    let server = start(&config).await;
    serves_two_at_once(server.addr).await;
    server.shutdown().await.unwrap();
}

/// Sends `GET /health` on `conn` (kept alive) and waits for the status line.
async fn health_status_line(conn: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        conn.read_exact(&mut byte).await.unwrap();
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

async fn http_get_health(addr: SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: tessera\r\n\r\n")
        .await
        .unwrap();
    conn
}

/// The HTTP gateway takes at most `max_connections` connections at once too.
#[tokio::test]
async fn the_http_port_serves_at_most_max_connections_at_once_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.max_connections = 2;
    let server = start(&config).await;
    let mut first = http_get_health(server.status_addr).await;
    let mut second = http_get_health(server.status_addr).await;
    for conn in [&mut first, &mut second] {
        let line = tokio::time::timeout(Duration::from_secs(10), health_status_line(conn))
            .await
            .expect("each of the first two connections is answered");
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    }
    let mut third = http_get_health(server.status_addr).await;
    let early =
        tokio::time::timeout(Duration::from_millis(300), health_status_line(&mut third)).await;
    assert!(
        early.is_err(),
        "a third connection was answered past a bound of two"
    );
    drop(first);
    let line = tokio::time::timeout(Duration::from_secs(10), health_status_line(&mut third))
        .await
        .expect("the third connection is answered once the first closes");
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    drop((second, third));
    server.shutdown().await.unwrap();
}

/// The scheduler's port takes at most its `max_connections` at once too: every store and
/// client dials it, so it is as exposed as a store's client port.
#[tokio::test]
async fn the_scheduler_port_serves_at_most_max_connections_at_once_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = scheduler::Config {
        data_dir: dir.path().to_path_buf(),
        max_connections: 2,
        ..scheduler::Config::default()
    };
    let cluster = std::sync::Arc::new(scheduler::Cluster::open(&config).expect("scheduler state"));
    let scheduler = scheduler::server::start(cluster, "127.0.0.1:0")
        .await
        .expect("scheduler starts");
    serves_two_at_once(scheduler.addr).await;
    scheduler.shutdown().await.unwrap();
}
