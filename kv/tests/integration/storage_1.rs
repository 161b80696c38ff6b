//! Stage 1: the `Storage` contract, checked against every implementation.

use kv::{Cf, MemoryStorage, Modify, StandaloneStorage, Storage};
use proto::kvrpcpb::Context;

fn put(cf: Cf, k: &[u8], v: &[u8]) -> Modify {
    Modify::Put {
        cf,
        key: k.to_vec(),
        value: v.to_vec(),
    }
}

fn del(cf: Cf, k: &[u8]) -> Modify {
    Modify::Delete {
        cf,
        key: k.to_vec(),
    }
}

/// Runs `check` against a fresh instance of every storage.
fn each_storage(check: impl Fn(&dyn Storage)) {
    check(&MemoryStorage::new());
    let dir = tempfile::tempdir().unwrap();
    check(&StandaloneStorage::open(dir.path(), false).unwrap());
}

fn scan(s: &dyn Storage, cf: Cf, start: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let reader = s.reader(&Context::default()).unwrap();
    let mut it = reader.iter_cf(cf).unwrap();
    it.seek(start);
    let mut out = Vec::new();
    while it.valid().unwrap() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.next();
    }
    out
}

#[test]
fn put_get_delete_each_cf_1() {
    each_storage(|s| {
        let ctx = Context::default();
        for cf in Cf::ALL {
            s.write(&ctx, vec![put(cf, b"k", cf.name().as_bytes())])
                .unwrap();
        }
        let r = s.reader(&ctx).unwrap();
        for cf in Cf::ALL {
            assert_eq!(
                r.get_cf(cf, b"k").unwrap().as_deref(),
                Some(cf.name().as_bytes())
            );
        }
        s.write(&ctx, vec![del(Cf::Lock, b"k")]).unwrap();
        let r = s.reader(&ctx).unwrap();
        assert_eq!(r.get_cf(Cf::Lock, b"k").unwrap(), None);
        assert_eq!(
            r.get_cf(Cf::Default, b"k").unwrap().as_deref(),
            Some(&b"default"[..])
        );
        assert_eq!(
            r.get_cf(Cf::Write, b"k").unwrap().as_deref(),
            Some(&b"write"[..])
        );
    });
}

#[test]
fn missing_key_and_missing_delete_1() {
    each_storage(|s| {
        let ctx = Context::default();
        assert_eq!(
            s.reader(&ctx)
                .unwrap()
                .get_cf(Cf::Default, b"nope")
                .unwrap(),
            None
        );
        s.write(&ctx, vec![del(Cf::Default, b"nope")]).unwrap();
        assert_eq!(
            s.reader(&ctx)
                .unwrap()
                .get_cf(Cf::Default, b"nope")
                .unwrap(),
            None
        );
    });
}

#[test]
fn overwrite_keeps_last_value_1() {
    each_storage(|s| {
        let ctx = Context::default();
        s.write(&ctx, vec![put(Cf::Default, b"k", b"1")]).unwrap();
        s.write(
            &ctx,
            vec![put(Cf::Default, b"k", b"2"), put(Cf::Default, b"k", b"3")],
        )
        .unwrap();
        assert_eq!(
            s.reader(&ctx)
                .unwrap()
                .get_cf(Cf::Default, b"k")
                .unwrap()
                .as_deref(),
            Some(&b"3"[..])
        );
    });
}

#[test]
fn scan_stays_in_its_cf_and_orders_keys_1() {
    each_storage(|s| {
        let ctx = Context::default();
        s.write(
            &ctx,
            vec![
                put(Cf::Default, b"b", b"2"),
                put(Cf::Default, b"a", b"1"),
                put(Cf::Default, b"c", b"3"),
                put(Cf::Write, b"a0", b"w"),
                put(Cf::Lock, b"bb", b"l"),
            ],
        )
        .unwrap();
        let got = scan(s, Cf::Default, b"");
        let want: Vec<(Vec<u8>, Vec<u8>)> = [("a", "1"), ("b", "2"), ("c", "3")]
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(scan(s, Cf::Default, b"b0"), want[2..].to_vec());
        assert_eq!(
            scan(s, Cf::Write, b""),
            vec![(b"a0".to_vec(), b"w".to_vec())]
        );
        assert_eq!(scan(s, Cf::Lock, b"c"), vec![]);
    });
}

#[test]
fn reader_is_a_point_in_time_snapshot_1() {
    each_storage(|s| {
        let ctx = Context::default();
        s.write(&ctx, vec![put(Cf::Default, b"k", b"old")]).unwrap();
        let before = s.reader(&ctx).unwrap();
        s.write(
            &ctx,
            vec![
                put(Cf::Default, b"k", b"new"),
                put(Cf::Default, b"k2", b"x"),
            ],
        )
        .unwrap();
        assert_eq!(
            before.get_cf(Cf::Default, b"k").unwrap().as_deref(),
            Some(&b"old"[..])
        );
        assert_eq!(before.get_cf(Cf::Default, b"k2").unwrap(), None);
        let mut it = before.iter_cf(Cf::Default).unwrap();
        it.seek(b"");
        assert!(it.valid().unwrap());
        assert_eq!(it.key(), b"k");
        it.next();
        assert!(!it.valid().unwrap());
    });
}

#[test]
fn keys_with_any_bytes_stay_user_data_1() {
    // Keys that look like internal metadata keys must be stored and read back as plain data.
    each_storage(|s| {
        let ctx = Context::default();
        let tricky: [&[u8]; 3] = [
            &[0x01, 0x02],
            &[0x01, 0x03, 0, 0, 0, 0, 0, 0, 0, 1, 1],
            &[0xff],
        ];
        for k in tricky {
            s.write(&ctx, vec![put(Cf::Default, k, b"v")]).unwrap();
        }
        let keys: Vec<Vec<u8>> = scan(s, Cf::Default, b"")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, tricky.iter().map(|k| k.to_vec()).collect::<Vec<_>>());
    });
}

#[test]
fn standalone_data_survives_reopen_1() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::default();
    {
        let s = StandaloneStorage::open(dir.path(), true).unwrap();
        s.write(
            &ctx,
            vec![
                put(Cf::Default, b"durable", b"yes"),
                put(Cf::Write, b"w", b"1"),
            ],
        )
        .unwrap();
        s.flush().unwrap();
    }
    let s = StandaloneStorage::open(dir.path(), true).unwrap();
    let r = s.reader(&ctx).unwrap();
    assert_eq!(
        r.get_cf(Cf::Default, b"durable").unwrap().as_deref(),
        Some(&b"yes"[..])
    );
    assert_eq!(
        r.get_cf(Cf::Write, b"w").unwrap().as_deref(),
        Some(&b"1"[..])
    );
}

#[test]
fn synced_write_survives_reopen_without_flush_1() {
    // No flush: the write must come back from the WAL alone.
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::default();
    {
        let s = StandaloneStorage::open(dir.path(), true).unwrap();
        s.write(&ctx, vec![put(Cf::Lock, b"wal", b"only")]).unwrap();
    }
    let s = StandaloneStorage::open(dir.path(), true).unwrap();
    assert_eq!(
        s.reader(&ctx)
            .unwrap()
            .get_cf(Cf::Lock, b"wal")
            .unwrap()
            .as_deref(),
        Some(&b"only"[..])
    );
}
