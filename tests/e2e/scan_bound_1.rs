//! `RawScan` with `limit = u32::MAX` against a real `tessera-server` holding ~11 MiB: the
//! server must cap what one response carries — at most `raw.max_scan_limit` pairs (default
//! [`MAX_SCAN_LIMIT`]) and at most [`MAX_SCAN_BYTES`] of keys and values — instead of reading
//! the whole key space into one message. A capped answer is still a prefix of the key order,
//! so a client continues from its last key.
//!
//! ```text
//!   "big/000".."big/159"      160 x 64 KiB   (10 MiB: the byte bound binds)
//!   "small/00000".."/11999"   12,000 x 64 B  (more pairs than the pair bound)
//! ```

use proto::kvrpcpb::RawScanRequest;
use tessera_client::raw::RawClient;

use crate::procs::Standalone;

/// `raw.max_scan_limit`'s default: the most pairs one scan response carries.
const MAX_SCAN_LIMIT: usize = 10_000;
/// `raw.max_scan_bytes`'s default, as key + value bytes: well under tonic's default decoding
/// limit (4 MiB), so a client with default settings can read any scan page of small values.
const MAX_SCAN_BYTES: usize = 2 << 20;

const BIG: usize = 160;
const BIG_VALUE: usize = 64 << 10;
const SMALL: usize = 12_000;
const SMALL_VALUE: usize = 64;
/// Concurrent loaders.
const LOADERS: usize = 8;

fn big_key(i: usize) -> Vec<u8> {
    format!("big/{i:03}").into_bytes()
}

fn small_key(i: usize) -> Vec<u8> {
    format!("small/{i:05}").into_bytes()
}

/// Every key the test writes, in key order.
fn all_keys() -> Vec<Vec<u8>> {
    (0..BIG)
        .map(big_key)
        .chain((0..SMALL).map(small_key))
        .collect()
}

fn value_of(key: &[u8]) -> Vec<u8> {
    let len = if key.starts_with(b"big/") {
        BIG_VALUE
    } else {
        SMALL_VALUE
    };
    let seed = key.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

/// Puts every key, `LOADERS` at a time.
async fn load(addr: &str) {
    let keys = all_keys();
    let tasks: Vec<_> = (0..LOADERS)
        .map(|w| {
            let keys: Vec<Vec<u8>> = keys.iter().skip(w).step_by(LOADERS).cloned().collect();
            let addr = addr.to_string();
            tokio::spawn(async move {
                let mut c = RawClient::connect(&addr).await.expect("connect");
                for k in keys {
                    c.put("default", &k, &value_of(&k)).await.expect("put");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("loader");
    }
}

/// One scan from `start` with `limit = u32::MAX`; checks its bounds and that it is the next
/// run of keys after `start`.
async fn scan_is_bounded(addr: &str, start: &[u8]) {
    let mut c = RawClient::connect(addr)
        .await
        .expect("connect")
        .into_inner();
    let resp = c
        .raw_scan(RawScanRequest {
            start_key: start.to_vec(),
            limit: u32::MAX,
            cf: "default".to_string(),
            ..Default::default()
        })
        .await
        .expect("raw scan")
        .into_inner();
    assert!(
        resp.error.is_empty() && resp.region_error.is_none(),
        "scan from {start:?}: {} {:?}",
        resp.error,
        resp.region_error
    );
    let pairs = resp.kvs.len();
    let bytes: usize = resp.kvs.iter().map(|p| p.key.len() + p.value.len()).sum();
    let from = String::from_utf8_lossy(start);
    assert!(
        pairs <= MAX_SCAN_LIMIT,
        "scan from {from:?} with limit u32::MAX returned {pairs} pairs ({bytes} bytes); \
         raw.max_scan_limit defaults to {MAX_SCAN_LIMIT}"
    );
    assert!(
        bytes <= MAX_SCAN_BYTES,
        "scan from {from:?} with limit u32::MAX returned {bytes} bytes in {pairs} pairs; the \
         response bound is {MAX_SCAN_BYTES} bytes"
    );
    // Bounded, but not empty, and exactly the keys that follow `start`: a client can go on,
    // and is told to.
    assert!(pairs > 0, "scan from {from:?} returned nothing");
    assert!(
        resp.truncated,
        "scan from {from:?} stopped at a server bound ({pairs} pairs, {bytes} bytes) without \
         saying so"
    );
    let expected: Vec<Vec<u8>> = all_keys()
        .into_iter()
        .filter(|k| k.as_slice() >= start)
        .take(pairs)
        .collect();
    for (got, want) in resp.kvs.iter().zip(&expected) {
        assert_eq!(
            (&got.key, &got.value),
            (want, &value_of(want)),
            "scan from {from:?} is not the key order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_scan_with_max_limit_is_bounded_1() {
    // Unsynced writes: the test is about reads, and 12,000 fsyncs would dominate it.
    let server =
        tokio::task::block_in_place(|| Standalone::start("[storage]\nsync_write = false\n"));
    load(&server.grpc).await;
    // From the start: 10 MiB of big values first, so the byte bound must stop the scan.
    scan_is_bounded(&server.grpc, b"").await;
    // From the small keys: 12,000 pairs of 64 bytes (under 1 MiB), so the pair bound must.
    scan_is_bounded(&server.grpc, b"small/").await;
}
