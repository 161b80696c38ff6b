//! What one synced raft-log append costs: through the raft engine (RocksDB, as a store writes a
//! round: one entry and the raft state in one synced batch) against the bound a log-structured
//! engine could reach (the same bytes appended to a plain file, then `fdatasync`; and written
//! over a preallocated file, which spares the file system its size update). Last, RocksDB with
//! small memtables (so its write-ahead log rolls every few thousand writes) without and with
//! `recycle_log_file_num`, which writes new logs over old ones instead of appending to new
//! files.
//!
//! `cargo run --release -p kv --example sync_cost -- DIR [WRITES] [ENTRY_BYTES]` prints the
//! p50, p99 and mean of each, in microseconds. Run three at once (one DIR each) to see what the
//! three stores of a one-disk cluster see.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use kv::engine::WriteBatch;
use kv::keys;
use kv::RocksRaftEngine;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1) else {
        eprintln!("usage: sync_cost DIR [WRITES] [ENTRY_BYTES]");
        std::process::exit(2);
    };
    let writes: usize = args.get(2).map_or(5_000, |s| s.parse().expect("WRITES"));
    let entry_bytes: usize = args.get(3).map_or(350, |s| s.parse().expect("ENTRY_BYTES"));
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir).expect("create DIR");
    let entry = vec![0x5a_u8; entry_bytes];
    let state = [7_u8; 24];

    let raft = RocksRaftEngine::open(&dir.join("engines/raft")).expect("open the raft engine");
    let rocks = time_each(writes, |i| {
        let mut wb = WriteBatch::new(raft.db());
        wb.put(&keys::raft_log_key(1, i as u64 + 1), &entry);
        wb.put(&keys::raft_state_key(1), &state);
        wb.write(true).expect("raft engine write");
    });
    report("raft engine (RocksDB, synced batch)", &rocks);

    let record = record(&entry, &state);
    let mut log = File::create(dir.join("append.log")).expect("create append.log");
    let append = time_each(writes, |_| {
        log.write_all(&record).expect("append");
        log.sync_data().expect("fdatasync");
    });
    report("append + fdatasync", &append);

    let prealloc = preallocated(&dir.join("prealloc.log"), record.len() * writes);
    let overwrite = time_each(writes, |i| {
        prealloc
            .write_all_at(&record, (i * record.len()) as u64)
            .expect("write");
        prealloc.sync_data().expect("fdatasync");
    });
    report("overwrite preallocated + fdatasync", &overwrite);

    for recycle in [0, 4] {
        let db = small_memtable_db(&dir.join(format!("recycle-{recycle}")), recycle);
        let mut put = |i: usize| {
            let mut batch = rocksdb::WriteBatch::default();
            batch.put(keys::raft_log_key(1, i as u64 + 1), &entry);
            batch.put(keys::raft_state_key(1), state);
            let mut opts = rocksdb::WriteOptions::default();
            opts.set_sync(true);
            db.write_opt(batch, &opts).expect("write");
        };
        // Enough writes for the log to roll, so the measured ones go to a recycled file.
        (0..writes).for_each(&mut put);
        let times = time_each(writes, |i| put(writes + i));
        let what = format!("RocksDB 256 KiB memtables, recycle {recycle}");
        report(&what, &times);
    }
}

fn small_memtable_db(path: &Path, recycle: usize) -> rocksdb::DB {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.set_write_buffer_size(256 << 10);
    opts.set_recycle_log_file_num(recycle);
    opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
    opts.set_compression_type(rocksdb::DBCompressionType::None);
    rocksdb::DB::open(&opts, path).expect("open")
}

/// A log record as a log-structured engine would frame it: length, checksum, entry, state.
fn record(entry: &[u8], state: &[u8]) -> Vec<u8> {
    let mut body = entry.to_vec();
    body.extend_from_slice(state);
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    let checksum = body.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    out.extend_from_slice(&checksum.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A file of `len` zero bytes, written and synced, so later writes change no block mapping.
fn preallocated(path: &Path, len: usize) -> File {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .expect("create prealloc.log");
    file.write_all(&vec![0; len]).expect("fill");
    file.sync_all().expect("sync");
    file.seek(SeekFrom::Start(0)).expect("seek");
    file
}

fn time_each(n: usize, mut op: impl FnMut(usize)) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let start = Instant::now();
            op(i);
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

fn report(what: &str, micros: &[f64]) {
    let mut sorted = micros.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
    println!(
        "{what:<38} p50 {:>7.1} us  p99 {:>7.1} us  mean {:>7.1} us",
        at(0.5),
        at(0.99),
        mean
    );
}
