//! Snapshot build and apply time for a ~100 MB region (and ~1 GB with `TESSERA_SNAP_BENCH_1G=1`),
//! next to a raw sequential write + fsync of the same number of bytes: the floor any snapshot
//! path that writes its data once is measured against.
//!
//! Run: `cargo bench -p snap --profile dev --bench snapshot` (the dev profile keeps the shared
//! RocksDB build; RocksDB itself is optimised in it).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use kv::keys::data_key;
use kv::{Cf, EngineSnapshot, WriteBatch};
use proto::metapb::Region;
use rocksdb::DB;
use snap::{SnapConfig, SnapKey, SnapKind, SnapManager};

const MB: u64 = 1 << 20;
const VALUE_LEN: usize = 1024;

/// Fills `db` with about `bytes` of incompressible data: 1 KiB values in the default CF and a
/// small record per key in the write CF, like committed MVCC data.
fn fill(db: &Arc<DB>, bytes: u64) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut value = vec![0u8; VALUE_LEN];
    let mut wb = WriteBatch::new(db);
    let keys = bytes / (VALUE_LEN as u64 + 32);
    for i in 0..keys {
        for chunk in value.chunks_mut(8) {
            // xorshift64: cheap incompressible bytes, so LZ4 cannot shrink the region.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let key = data_key(format!("key{i:012}").as_bytes());
        wb.put_cf(Cf::Default, &key, &value).expect("put");
        wb.put_cf(Cf::Write, &key, &state.to_le_bytes())
            .expect("put");
        if wb.data_size() > 16 * MB as usize {
            wb.write(false).expect("write");
        }
    }
    wb.write(false).expect("write");
    db.flush_cf(db.cf_handle("default").expect("cf"))
        .expect("flush");
    db.flush_cf(db.cf_handle("write").expect("cf"))
        .expect("flush");
}

fn raw_write(path: &Path, bytes: u64) {
    let buf = vec![0xa5u8; MB as usize];
    let mut f = File::create(path).expect("create");
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MB) as usize;
        f.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    f.sync_all().expect("fsync");
}

fn bench_size(c: &mut Criterion, label: &str, bytes: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src_db = kv::engine::open_engine(&dir.path().join("src"), &Cf::ALL).expect("open");
    let dst_db = kv::engine::open_engine(&dir.path().join("dst"), &Cf::ALL).expect("open");
    let src = SnapManager::open(dir.path().join("snap-src"), SnapConfig::default()).expect("open");
    let dst = SnapManager::open(dir.path().join("snap-dst"), SnapConfig::default()).expect("open");
    fill(&src_db, bytes);
    let region = Region {
        id: 1,
        ..Default::default()
    };
    let key = SnapKey::new(1, 1, 1);
    let built = src
        .build(key, &EngineSnapshot::new(&src_db), &region)
        .expect("build");
    eprintln!(
        "{label}: {} keys, {} MiB of kv data, {} MiB of SST",
        built.keys,
        built.kv_bytes / MB,
        built.size / MB
    );
    snap::transfer(&src, &dst, key, snap::DEFAULT_CHUNK_SIZE).expect("transfer");

    let mut group = c.benchmark_group("snapshot");
    // Flat sampling: every sample runs the same number of iterations, so a one-second operation
    // needs 10 iterations rather than the 55 criterion's linear sampling asks for.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(if bytes > 200 * MB { 60 } else { 20 }));
    group.throughput(Throughput::Bytes(built.size));

    group.bench_function(BenchmarkId::new("build", label), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let snap = EngineSnapshot::new(&src_db);
                let start = Instant::now();
                src.build(key, &snap, &region).expect("build");
                total += start.elapsed();
            }
            total
        })
    });
    // Verify alone (md5 of every file): the share of build and apply spent hashing.
    group.bench_function(BenchmarkId::new("verify", label), |b| {
        b.iter(|| {
            dst.verify(SnapKind::Received, key, &built.meta)
                .expect("verify")
        })
    });
    // Apply = verify (md5 of every file) + range delete + ingest; redone on the same engine,
    // which is what a crash-recovery redo does too.
    group.bench_function(BenchmarkId::new("apply", label), |b| {
        b.iter(|| dst.apply(key, &dst_db, &region).expect("apply"))
    });
    group.bench_function(BenchmarkId::new("transfer_in_process", label), |b| {
        b.iter(|| snap::transfer(&src, &dst, key, snap::DEFAULT_CHUNK_SIZE).expect("transfer"))
    });
    group.bench_function(BenchmarkId::new("raw_write_fsync", label), |b| {
        let path = dir.path().join("raw");
        b.iter(|| raw_write(&path, built.size))
    });
    group.finish();
    dst.delete(SnapKind::Received, key).expect("delete");
    src.delete(SnapKind::Generated, key).expect("delete");
}

fn benches(c: &mut Criterion) {
    bench_size(c, "100MB", 100 * MB);
    if std::env::var_os("TESSERA_SNAP_BENCH_1G").is_some() {
        bench_size(c, "1GB", 1024 * MB);
    }
}

criterion_group!(snapshot, benches);
criterion_main!(snapshot);
