//! Damaged snapshot files are reported as errors, never applied and never a panic.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use kv::Cf;
use snap::{Error, SnapKey, SnapKind, DEFAULT_CHUNK_SIZE};

use crate::common::{build_and_transfer, fill, region, Store};

fn flip_byte(path: &Path, at: u64) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
}

fn setup(key: SnapKey) -> (Store, Store, proto::metapb::Region) {
    let (src, dst) = (Store::new(), Store::new());
    fill(&src, "v", 200, 64, 31);
    fill(&dst, "v", 20, 8, 32);
    let r = region(key.region_id, b"v", b"w");
    build_and_transfer(&src, &dst, key, &r);
    (src, dst, r)
}

#[test]
fn flipped_byte_is_a_checksum_error_and_nothing_is_applied_2c() {
    let key = SnapKey::new(1, 2, 3);
    let (src, dst, r) = setup(key);
    let path = dst.cf_file(SnapKind::Received, key, Cf::Write);
    let len = std::fs::metadata(&path).unwrap().len();
    flip_byte(&path, len / 2);

    let meta = dst.mgr.meta(SnapKind::Received, key).unwrap();
    let err = dst.mgr.verify(SnapKind::Received, key, &meta).unwrap_err();
    match &err {
        Error::Checksum {
            key: k,
            cf,
            expected,
            actual,
        } => {
            assert_eq!((*k, cf.as_str()), (key, "write"));
            assert_ne!(expected, actual);
            assert_eq!(expected.len(), 32);
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    assert!(err.is_corruption());

    let before = dst.dump_all(b"", b"");
    let err = dst.mgr.apply(key, &dst.db, &r).unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
    assert_eq!(
        dst.dump_all(b"", b""),
        before,
        "a failed verify must leave the engine untouched"
    );
    // The untouched generated copy still verifies.
    let gen_meta = src.mgr.meta(SnapKind::Generated, key).unwrap();
    src.mgr.verify(SnapKind::Generated, key, &gen_meta).unwrap();
}

#[test]
fn truncated_file_is_a_size_error_2c() {
    let key = SnapKey::new(2, 2, 3);
    let (_src, dst, r) = setup(key);
    let path = dst.cf_file(SnapKind::Received, key, Cf::Default);
    let len = std::fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let meta = dst.mgr.meta(SnapKind::Received, key).unwrap();
    match dst.mgr.verify(SnapKind::Received, key, &meta).unwrap_err() {
        Error::Size {
            cf,
            expected,
            actual,
            ..
        } => {
            assert_eq!((cf.as_str(), expected, actual), ("default", len, len - 10));
        }
        other => panic!("expected a size error, got {other}"),
    }
    assert!(matches!(
        dst.mgr.apply(key, &dst.db, &r),
        Err(Error::Size { .. })
    ));
}

#[test]
fn missing_file_is_reported_2c() {
    let key = SnapKey::new(3, 2, 3);
    let (_src, dst, r) = setup(key);
    let path = dst.cf_file(SnapKind::Received, key, Cf::Lock);
    std::fs::remove_file(&path).unwrap();
    let meta = dst.mgr.meta(SnapKind::Received, key).unwrap();
    match dst.mgr.verify(SnapKind::Received, key, &meta).unwrap_err() {
        Error::Missing { cf, path: p, .. } => assert_eq!((cf.as_str(), p), ("lock", path)),
        other => panic!("expected a missing-file error, got {other}"),
    }
    assert!(matches!(
        dst.mgr.apply(key, &dst.db, &r),
        Err(Error::Missing { .. })
    ));
}

#[test]
fn sender_refuses_to_stream_a_damaged_file_2c() {
    let key = SnapKey::new(4, 2, 3);
    let (src, _dst, _r) = setup(key);
    flip_byte(&src.cf_file(SnapKind::Generated, key, Cf::Lock), 5);
    let results: Vec<_> = src.mgr.send(key, DEFAULT_CHUNK_SIZE).unwrap().collect();
    let err = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("an error");
    assert!(
        matches!(err, Error::Checksum { cf, .. } if cf == "lock"),
        "{err}"
    );
    assert!(
        results.last().unwrap().is_err(),
        "the stream must stop at the error"
    );
}

#[test]
fn garbage_meta_is_an_error_and_removed_on_restart_2c() {
    let key = SnapKey::new(5, 2, 3);
    let (_src, mut dst, _r) = setup(key);
    let meta_path = dst.snap_dir().join(format!("rev_{key}.meta"));
    std::fs::write(&meta_path, b"\xff\xff\xff not a protobuf").unwrap();
    let err = dst.mgr.meta(SnapKind::Received, key).unwrap_err();
    assert!(matches!(err, Error::InvalidMeta { .. }), "{err}");
    dst.restart_manager();
    assert!(!dst.mgr.exists(SnapKind::Received, key));
    assert!(dst.snap_files().is_empty(), "left: {:?}", dst.snap_files());
    assert!(matches!(
        dst.mgr.meta(SnapKind::Received, key),
        Err(Error::NotFound { .. })
    ));
}
