//! The HTTP gateway end to end.

use crate::util::{http, start, test_config};

#[tokio::test]
async fn http_gateway_put_get_delete_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&test_config(dir.path())).await;
    let a = server.status_addr;

    assert_eq!(
        http(a, "GET", "/health", b"").await,
        (200, b"ok\n".to_vec())
    );
    assert_eq!(http(a, "GET", "/kv/hello", b"").await.0, 404);
    assert_eq!(http(a, "PUT", "/kv/hello", b"world").await.0, 204);
    assert_eq!(
        http(a, "GET", "/kv/hello", b"").await,
        (200, b"world".to_vec())
    );
    // Keys may contain slashes; CFs are chosen with ?cf=.
    assert_eq!(http(a, "PUT", "/kv/a/b/c?cf=write", b"deep").await.0, 204);
    assert_eq!(
        http(a, "GET", "/kv/a/b/c?cf=write", b"").await,
        (200, b"deep".to_vec())
    );
    assert_eq!(http(a, "GET", "/kv/a/b/c", b"").await.0, 404);
    assert_eq!(http(a, "DELETE", "/kv/hello", b"").await.0, 204);
    assert_eq!(http(a, "GET", "/kv/hello", b"").await.0, 404);
    assert_eq!(http(a, "DELETE", "/kv/hello", b"").await.0, 204);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn http_gateway_and_grpc_share_the_store_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&test_config(dir.path())).await;
    assert_eq!(
        http(server.status_addr, "PUT", "/kv/shared", b"yes")
            .await
            .0,
        204
    );
    let mut c = tessera_client::raw::RawClient::connect(&server.addr.to_string())
        .await
        .unwrap();
    assert_eq!(
        c.get("default", b"shared").await.unwrap().as_deref(),
        Some(&b"yes"[..])
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn http_gateway_bad_input_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.raw.max_value_size = 16;
    let server = start(&config).await;
    let a = server.status_addr;
    let (status, body) = http(a, "PUT", "/kv/k?cf=nope", b"v").await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("unknown column family"));
    assert_eq!(http(a, "PUT", "/kv/k", &[1u8; 17]).await.0, 413);
    assert_eq!(http(a, "PUT", "/kv/k", &[1u8; 16]).await.0, 204);
    assert_eq!(http(a, "GET", "/nowhere", b"").await.0, 404);
    assert_eq!(http(a, "POST", "/kv/k", b"v").await.0, 405);
    server.shutdown().await.unwrap();
}
