//! Tests of [`FileEngine`].

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use tempfile::TempDir;

fn cfg(target_file_size: u64, preallocate: bool) -> FileConfig {
    FileConfig {
        target_file_size,
        preallocate,
    }
}

/// A recognizable value of some length for `(region, index)`.
fn val(region: u64, index: u64, salt: u64) -> Vec<u8> {
    let unit = format!("<{region}:{index}:{salt}>");
    unit.repeat(1 + ((index + salt) % 7) as usize * 5)
        .into_bytes()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "raftlog"))
        .collect();
    v.sort();
    v
}

fn offset(e: &FileEngine) -> u64 {
    lock(&e.writer).offset
}

/// Every state and entry of regions `1..=regions`, indexes `0..indexes`.
type Dump = Vec<(Option<Vec<u8>>, Vec<Option<Vec<u8>>>)>;

fn dump(e: &FileEngine, regions: u64, indexes: u64) -> Dump {
    (1..=regions)
        .map(|r| {
            let entries = (0..indexes).map(|i| e.entry(r, i).unwrap()).collect();
            (e.raft_state(r).unwrap(), entries)
        })
        .collect()
}

fn flip(path: &Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
}

#[test]
fn write_read_round_trip() {
    let dir = TempDir::new().unwrap();
    let e = FileEngine::open(dir.path()).unwrap();
    let mut b = LogBatch::new();
    for i in 1..=10 {
        b.append(1, i, val(1, i, 0));
        b.append(2, i, val(2, i, 0));
    }
    b.put_state(1, b"s1".to_vec());
    b.put_state(2, b"s2".to_vec());
    e.write(&b, true).unwrap();
    assert_eq!(e.entry(1, 3).unwrap(), Some(val(1, 3, 0)));
    assert_eq!(e.entry(2, 10).unwrap(), Some(val(2, 10, 0)));
    assert_eq!(e.entry(1, 11).unwrap(), None);
    assert_eq!(e.entry(3, 1).unwrap(), None);
    assert_eq!(e.raft_state(1).unwrap(), Some(b"s1".to_vec()));

    let mut b = LogBatch::new();
    b.append(1, 5, val(1, 5, 9));
    b.delete_entries(2, 2, 4);
    b.delete_state(2);
    b.put_state(1, b"s1b".to_vec());
    b.append(2, 3, val(2, 3, 7)); // later op wins over the delete above
    e.write(&b, false).unwrap();
    assert_eq!(e.entry(1, 5).unwrap(), Some(val(1, 5, 9)));
    assert_eq!(e.entry(2, 2).unwrap(), None);
    assert_eq!(e.entry(2, 3).unwrap(), Some(val(2, 3, 7)));
    assert_eq!(e.entry(2, 4).unwrap(), Some(val(2, 4, 0)));
    assert_eq!(e.raft_state(2).unwrap(), None);
    assert_eq!(e.raft_state(1).unwrap(), Some(b"s1b".to_vec()));

    e.compact(1, 8).unwrap();
    assert_eq!(e.entry(1, 7).unwrap(), None);
    assert_eq!(e.entry(1, 8).unwrap(), Some(val(1, 8, 0)));
    e.write(&LogBatch::new(), true).unwrap();
}

fn reopen_recovers(preallocate: bool) {
    let dir = TempDir::new().unwrap();
    let c = cfg(16 << 10, preallocate);
    let before = {
        let e = FileEngine::open_with(dir.path(), c.clone()).unwrap();
        for round in 0..40u64 {
            let mut b = LogBatch::new();
            for r in 1..=3 {
                b.append(r, round, val(r, round, 0));
                b.append(r, round / 2, val(r, round / 2, round));
                b.put_state(r, round.to_le_bytes().to_vec());
            }
            if round % 9 == 0 {
                b.delete_entries(2, round / 3, round / 2);
                b.delete_state(3);
            }
            e.write(&b, round % 5 == 0).unwrap();
            if round % 13 == 0 {
                e.compact(1, round / 2).unwrap();
            }
        }
        dump(&e, 3, 45)
    };
    assert!(before.iter().any(|r| r.1.iter().any(Option::is_some)));
    let e = FileEngine::open_with(dir.path(), c.clone()).unwrap();
    assert_eq!(dump(&e, 3, 45), before);
    drop(e);
    let e = FileEngine::open_with(dir.path(), c).unwrap();
    assert_eq!(dump(&e, 3, 45), before);
}

#[test]
fn reopen_recovers_the_index() {
    reopen_recovers(false);
}

#[test]
fn reopen_recovers_the_index_preallocated() {
    reopen_recovers(true);
}

/// Writes batches A and B, damages B's record with `damage(segment, b_start, b_end)`, reopens:
/// A is whole, B is gone, and a batch C written then survives another reopen.
fn torn_tail(preallocate: bool, damage: impl Fn(&Path, u64, u64)) {
    let dir = TempDir::new().unwrap();
    let c = cfg(1 << 20, preallocate);
    let batch = |tag: u64| {
        let mut b = LogBatch::new();
        for i in 1..=5 {
            b.append(1, tag * 10 + i, val(1, i, tag));
        }
        b.put_state(1, vec![tag as u8; 8]);
        b.put_state(tag + 10, vec![1]);
        b
    };
    let (b_start, b_end) = {
        let e = FileEngine::open_with(dir.path(), c.clone()).unwrap();
        e.write(&batch(1), true).unwrap();
        let start = offset(&e);
        e.write(&batch(2), true).unwrap();
        (start, offset(&e))
    };
    let seg = segments(dir.path()).pop().unwrap();
    damage(&seg, b_start, b_end);
    let check_a = |e: &FileEngine| {
        for i in 1..=5 {
            assert_eq!(e.entry(1, 10 + i).unwrap(), Some(val(1, i, 1)));
            assert_eq!(e.entry(1, 20 + i).unwrap(), None);
        }
        assert_eq!(e.raft_state(11).unwrap(), Some(vec![1]));
        assert_eq!(e.raft_state(12).unwrap(), None);
    };
    {
        let e = FileEngine::open_with(dir.path(), c.clone()).unwrap();
        check_a(&e);
        assert_eq!(e.raft_state(1).unwrap(), Some(vec![1; 8]));
        assert_eq!(offset(&e), b_start);
        e.write(&batch(3), true).unwrap();
    }
    let e = FileEngine::open_with(dir.path(), c).unwrap();
    check_a(&e);
    for i in 1..=5 {
        assert_eq!(e.entry(1, 30 + i).unwrap(), Some(val(1, i, 3)));
    }
    assert_eq!(e.raft_state(1).unwrap(), Some(vec![3; 8]));
    assert_eq!(e.raft_state(13).unwrap(), Some(vec![1]));
}

#[test]
fn torn_tail_cut_in_the_middle() {
    for preallocate in [false, true] {
        torn_tail(preallocate, |seg, start, end| {
            let f = OpenOptions::new().write(true).open(seg).unwrap();
            f.set_len((start + end) / 2).unwrap();
        });
    }
}

#[test]
fn torn_tail_flipped_byte() {
    for preallocate in [false, true] {
        torn_tail(preallocate, |seg, start, end| {
            flip(seg, (start + HEADER as u64 + end) / 2)
        });
    }
}

#[test]
fn torn_tail_zeroed_header_in_preallocated_segment() {
    torn_tail(true, |seg, start, _| {
        let f = OpenOptions::new().write(true).open(seg).unwrap();
        f.write_all_at(&[0u8; HEADER], start).unwrap();
    });
}

/// Fills two or more segments; returns the sealed first one.
fn two_segments(dir: &Path) -> PathBuf {
    let e = FileEngine::open_with(dir, cfg(4096, false)).unwrap();
    for i in 0..12 {
        let mut b = LogBatch::new();
        b.append(1, i, vec![i as u8; 1000]);
        e.write(&b, false).unwrap();
    }
    e.flush().unwrap();
    let segs = segments(dir);
    assert!(segs.len() >= 3, "{segs:?}");
    segs[0].clone()
}

#[test]
fn corrupt_older_segment_fails_open() {
    let damages: [&dyn Fn(&Path); 4] = [
        &|p| flip(p, HEADER as u64 + 30),
        &|p| flip(p, 1),
        &|p| flip(p, 14),
        &|p| {
            let f = OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(f.metadata().unwrap().len() - 7).unwrap();
        },
    ];
    for damage in damages {
        let dir = TempDir::new().unwrap();
        let first = two_segments(dir.path());
        FileEngine::open(dir.path()).unwrap();
        damage(&first);
        match FileEngine::open(dir.path()) {
            Err(Error::Corrupt(msg)) => assert!(msg.contains("0000000000000001.raftlog"), "{msg}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    // A missing segment in the middle is corruption as well.
    let dir = TempDir::new().unwrap();
    two_segments(dir.path());
    fs::remove_file(&segments(dir.path())[1]).unwrap();
    assert!(matches!(
        FileEngine::open(dir.path()),
        Err(Error::Corrupt(_))
    ));
}

#[test]
fn corrupt_entry_bytes_are_detected_on_read() {
    let dir = TempDir::new().unwrap();
    let e = FileEngine::open(dir.path()).unwrap();
    let mut b = LogBatch::new();
    b.append(1, 1, vec![7; 100]);
    e.write(&b, true).unwrap();
    flip(&segments(dir.path())[0], HEADER as u64 + 50);
    assert!(matches!(e.entry(1, 1), Err(Error::Corrupt(_))));
}

fn rotation_and_purge(preallocate: bool) {
    let dir = TempDir::new().unwrap();
    let c = cfg(4096, preallocate);
    let last = 300u64;
    let check = |e: &FileEngine| {
        assert_eq!(e.raft_state(100).unwrap(), Some(b"long-lived".to_vec()));
        for r in 1..=3 {
            assert_eq!(e.raft_state(r).unwrap(), Some(last.to_le_bytes().to_vec()));
            for i in last - 4..=last {
                assert_eq!(e.entry(r, i).unwrap(), Some(val(r, i, 0)), "{r} {i}");
            }
            assert_eq!(e.entry(r, last - 5).unwrap(), None);
            assert_eq!(e.entry(r, 1).unwrap(), None);
        }
    };
    {
        let e = FileEngine::open_with(dir.path(), c.clone()).unwrap();
        let mut b = LogBatch::new();
        b.put_state(100, b"long-lived".to_vec());
        e.write(&b, true).unwrap();
        let mut most = 0;
        for i in 1..=last {
            let mut b = LogBatch::new();
            for r in 1..=3 {
                b.append(r, i, val(r, i, 0));
                b.put_state(r, i.to_le_bytes().to_vec());
            }
            e.write(&b, i % 50 == 0).unwrap();
            for r in 1..=3 {
                e.compact(r, i.saturating_sub(4)).unwrap();
            }
            most = most.max(segments(dir.path()).len());
        }
        // ~170 KiB went through 4 KiB segments; purge kept only a few at any time.
        assert!(most <= 6, "{most} segments at once");
        let first = segments(dir.path())[0].clone();
        assert!(!first.ends_with("0000000000000001.raftlog"), "{first:?}");
        e.flush().unwrap();
        assert!(
            segments(dir.path()).len() <= 3,
            "{:?}",
            segments(dir.path())
        );
        check(&e);
    }
    let e = FileEngine::open_with(dir.path(), c).unwrap();
    check(&e);
    e.flush().unwrap();
    check(&e);
    // Besides the segments and the directory's LOCK, at most the next zero-filled segment.
    let tmp = fs::read_dir(dir.path()).unwrap().count() - segments(dir.path()).len() - 1;
    assert!(tmp <= 1, "{tmp} stray files");
}

#[test]
fn rotation_and_purge_keep_live_data() {
    rotation_and_purge(false);
}

#[test]
fn rotation_and_purge_keep_live_data_preallocated() {
    rotation_and_purge(true);
}

#[derive(Debug, Clone)]
enum MOp {
    Append(u64, u64, u8, usize),
    Put(u64, u8, usize),
    DelState(u64),
    DelRange(u64, u64, u64),
}

#[derive(Debug, Clone)]
enum Step {
    Batch(Vec<MOp>, bool),
    Compact(u64, u64),
    Reopen,
    Flush,
}

fn step() -> impl Strategy<Value = Step> {
    let mop = prop_oneof![
        5 => (1..4u64, 0..30u64, any::<u8>(), 0..500usize)
            .prop_map(|(r, i, b, l)| MOp::Append(r, i, b, l)),
        2 => (1..4u64, any::<u8>(), 0..60usize).prop_map(|(r, b, l)| MOp::Put(r, b, l)),
        1 => (1..4u64).prop_map(MOp::DelState),
        1 => (1..4u64, 0..30u64, 0..30u64).prop_map(|(r, f, t)| MOp::DelRange(r, f, t)),
    ];
    prop_oneof![
        8 => (vec(mop, 1..8), any::<bool>()).prop_map(|(ops, sync)| Step::Batch(ops, sync)),
        2 => (1..4u64, 0..30u64).prop_map(|(r, t)| Step::Compact(r, t)),
        1 => Just(Step::Reopen),
        1 => Just(Step::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn matches_a_model(steps in vec(step(), 1..50), preallocate: bool) {
        let dir = TempDir::new().unwrap();
        let c = cfg(2048, preallocate);
        let mut e = FileEngine::open_with(dir.path(), c.clone()).unwrap();
        let mut states = BTreeMap::<u64, Vec<u8>>::new();
        let mut entries = BTreeMap::<(u64, u64), Vec<u8>>::new();
        for step in steps {
            match step {
                Step::Batch(ops, sync) => {
                    let mut b = LogBatch::new();
                    for op in ops {
                        match op {
                            MOp::Append(r, i, x, l) => {
                                b.append(r, i, vec![x; l]);
                                entries.insert((r, i), vec![x; l]);
                            }
                            MOp::Put(r, x, l) => {
                                b.put_state(r, vec![x; l]);
                                states.insert(r, vec![x; l]);
                            }
                            MOp::DelState(r) => {
                                b.delete_state(r);
                                states.remove(&r);
                            }
                            MOp::DelRange(r, f, t) => {
                                b.delete_entries(r, f, t);
                                entries.retain(|&(er, ei), _| er != r || ei < f || ei >= t);
                            }
                        }
                    }
                    e.write(&b, sync).unwrap();
                }
                Step::Compact(r, t) => {
                    e.compact(r, t).unwrap();
                    entries.retain(|&(er, ei), _| er != r || ei >= t);
                }
                Step::Reopen => {
                    drop(e);
                    e = FileEngine::open_with(dir.path(), c.clone()).unwrap();
                }
                Step::Flush => e.flush().unwrap(),
            }
            for r in 0..5 {
                prop_assert_eq!(e.raft_state(r).unwrap(), states.get(&r).cloned());
                for i in 0..31 {
                    prop_assert_eq!(e.entry(r, i).unwrap(), entries.get(&(r, i)).cloned());
                }
            }
        }
    }
}

#[test]
fn concurrent_writers_and_readers() {
    let dir = TempDir::new().unwrap();
    let c = cfg(8192, false);
    let e = Arc::new(FileEngine::open_with(dir.path(), c.clone()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let last = 200u64;
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (e, stop) = (e.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut x: u64 = t + 1;
                while !stop.load(Ordering::Relaxed) {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let (r, i) = (1 + (x >> 33) % 3, 1 + (x >> 40) % last);
                    if let Some(v) = e.entry(r, i).unwrap() {
                        assert_eq!(v, val(r, i, 0));
                    }
                    if let Some(s) = e.raft_state(r).unwrap() {
                        assert!(u64::from_le_bytes(s.try_into().unwrap()) <= last);
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let writers: Vec<_> = (1..=3u64)
        .map(|r| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 1..=last {
                    let mut b = LogBatch::new();
                    b.append(r, i, val(r, i, 0));
                    b.put_state(r, i.to_le_bytes().to_vec());
                    e.write(&b, i % 40 == 0).unwrap();
                    e.compact(r, i.saturating_sub(10)).unwrap();
                    if i % 70 == 0 {
                        e.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    let check = |e: &FileEngine| {
        for r in 1..=3 {
            assert_eq!(e.raft_state(r).unwrap(), Some(last.to_le_bytes().to_vec()));
            for i in 1..=last {
                let want = (i >= last - 10).then(|| val(r, i, 0));
                assert_eq!(e.entry(r, i).unwrap(), want, "{r} {i}");
            }
        }
    };
    check(&e);
    drop(e);
    check(&FileEngine::open_with(dir.path(), c).unwrap());
}

/// Two engines on one directory would append to the same segments: the second open is refused
/// while the first is alive, and succeeds once it is dropped.
#[test]
fn one_engine_per_directory() {
    let dir = TempDir::new().unwrap();
    let first = FileEngine::open(dir.path()).unwrap();
    let err = FileEngine::open(dir.path()).expect_err("the directory is in use");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    FileEngine::open(dir.path()).expect("free again");
}
