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

/// `GET /kv?start=&end=&limit=`: a range as JSON, reversed or keys only, binary keys in hex or
/// base64, and clear refusals.
#[tokio::test]
async fn http_gateway_scans_a_range_as_json_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&test_config(dir.path())).await;
    let a = server.status_addr;
    for k in ["a", "b", "c", "d"] {
        assert_eq!(
            http(a, "PUT", &format!("/kv/{k}"), k.to_uppercase().as_bytes())
                .await
                .0,
            204
        );
    }
    let get = |path: &'static str| async move {
        let (code, body) = http(a, "GET", path, b"").await;
        (code, String::from_utf8(body).unwrap())
    };
    assert_eq!(
        get("/kv?start=b&end=d").await,
        (
            200,
            r#"{"kvs":[{"key":"b","value":"B"},{"key":"c","value":"C"}],"truncated":false}"#.into()
        )
    );
    assert_eq!(
        get("/kv?limit=2&reverse=true&keys_only=true").await,
        (
            200,
            r#"{"kvs":[{"key":"d"},{"key":"c"}],"truncated":false}"#.into()
        )
    );
    // A binary key: written over gRPC, read back in hex and base64, refused as UTF-8.
    let mut c = tessera_client::RawClient::connect(&server.addr.to_string())
        .await
        .unwrap();
    c.put("default", b"\xff\x00", b"\x01").await.unwrap();
    assert_eq!(
        get("/kv?start=ff&encoding=hex").await,
        (
            200,
            r#"{"kvs":[{"key":"ff00","value":"01"}],"truncated":false}"#.into()
        )
    );
    assert_eq!(
        get("/kv?start=%2FwA%3D&encoding=base64").await,
        (
            200,
            r#"{"kvs":[{"key":"/wA=","value":"AQ=="}],"truncated":false}"#.into()
        )
    );
    let (code, body) = get("/kv?start=e").await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("encoding=hex"), "{body}");
    assert_eq!(get("/kv?encoding=rot13").await.0, 400);
    assert_eq!(get("/kv?start=zz&encoding=hex").await.0, 400);
    assert_eq!(get("/kv?cf=bogus").await.0, 400);

    // DELETE /kv deletes a range, and only when the range is named.
    assert_eq!(http(a, "DELETE", "/kv?start=b&end=d", b"").await.0, 204);
    assert_eq!(
        get("/kv?keys_only=true&end=e").await,
        (
            200,
            r#"{"kvs":[{"key":"a"},{"key":"d"}],"truncated":false}"#.into()
        )
    );
    assert_eq!(http(a, "DELETE", "/kv", b"").await.0, 400);
    assert_eq!(http(a, "DELETE", "/kv?start=&end=", b"").await.0, 204);
    assert_eq!(
        get("/kv?encoding=hex").await,
        (200, r#"{"kvs":[],"truncated":false}"#.into())
    );
    server.shutdown().await.unwrap();
}

/// `POST /batch/{get,put,delete}`: many keys in one request as JSON, binary keys in an encoding,
/// and a clear 400 for a body that is not the expected JSON.
#[tokio::test]
async fn http_gateway_batches_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&test_config(dir.path())).await;
    let a = server.status_addr;
    let post = |path: &'static str, body: &'static str| async move {
        let (code, body) = http(a, "POST", path, body.as_bytes()).await;
        (code, String::from_utf8(body).unwrap())
    };
    assert_eq!(
        post(
            "/batch/put",
            r#"{"kvs":[{"key":"b","value":"2"},{"key":"a","value":"1"}]}"#
        )
        .await
        .0,
        204
    );
    assert_eq!(
        post("/batch/get", r#"{"keys":["b","zz","a"]}"#).await,
        (
            200,
            r#"{"kvs":[{"key":"a","value":"1"},{"key":"b","value":"2"}],"truncated":false}"#.into()
        )
    );
    assert_eq!(
        post(
            "/batch/put?encoding=hex",
            r#"{"kvs":[{"key":"ff01","value":"00"}]}"#
        )
        .await
        .0,
        204
    );
    assert_eq!(
        post("/batch/get?encoding=hex", r#"{"keys":["ff01"]}"#).await,
        (
            200,
            r#"{"kvs":[{"key":"ff01","value":"00"}],"truncated":false}"#.into()
        )
    );
    assert_eq!(post("/batch/delete", r#"{"keys":["a","b"]}"#).await.0, 204);
    assert_eq!(
        post("/batch/get", r#"{"keys":["a","b"]}"#).await,
        (200, r#"{"kvs":[],"truncated":false}"#.into())
    );
    let (code, body) = post("/batch/get", r#"{"key":["a"]}"#).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("keys"), "{body}");
    assert_eq!(post("/batch/put?cf=bogus", r#"{"kvs":[]}"#).await.0, 400);
    assert_eq!(
        post("/batch/put", r#"{"kvs":[{"key":"","value":"x"}]}"#)
            .await
            .0,
        400
    );
    server.shutdown().await.unwrap();
}
