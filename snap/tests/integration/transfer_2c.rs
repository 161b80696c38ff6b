//! Chunked transfer: framing, small chunks, and rejection of corrupt, short or long streams with
//! nothing left behind.

use proto::raft_serverpb::{RaftMessage, RaftSnapshotData};
use rand::Rng;
use snap::{Error, SnapKey, SnapKind, SnapState};

use crate::common::{fill, region, rng, Store};

fn source(key: SnapKey) -> (Store, proto::metapb::Region) {
    let src = Store::new();
    fill(&src, "t", 300, 50, 41);
    let r = region(key.region_id, b"t", b"u");
    src.build(key, &r);
    (src, r)
}

/// The raft message a leader sends for snapshot `key`: an `MsgSnapshot` whose snapshot data is
/// the `RaftSnapshotData` of the built snapshot.
fn snapshot_message(src: &Store, key: SnapKey, r: &proto::metapb::Region) -> RaftMessage {
    use proto::eraftpb;
    use proto::protobuf::Message as _;
    let meta = src.mgr.meta(SnapKind::Generated, key).unwrap();
    let data = RaftSnapshotData {
        region: Some(r.clone()),
        file_size: snap::meta_total_size(&meta),
        data: Vec::new(),
        meta: Some(meta),
    };
    let mut snapshot = eraftpb::Snapshot::default();
    snapshot.set_data(prost::Message::encode_to_vec(&data).into());
    snapshot.mut_metadata().set_index(key.index);
    snapshot.mut_metadata().set_term(key.term);
    let mut m = eraftpb::Message::default();
    m.set_msg_type(eraftpb::MessageType::MsgSnapshot);
    m.set_snapshot(snapshot);
    RaftMessage {
        region_id: key.region_id,
        message: m.write_to_bytes().unwrap(),
        ..Default::default()
    }
}

#[test]
fn message_without_snapshot_is_refused_2c() {
    let plain = RaftMessage {
        region_id: 9,
        message: vec![0xff, 0xff, 0xff],
        ..Default::default()
    };
    assert!(matches!(
        snap::snapshot_in_message(&plain),
        Err(Error::BadMessage { region_id: 9, .. })
    ));
    let empty = RaftMessage {
        region_id: 9,
        ..Default::default()
    };
    assert!(matches!(
        snap::snapshot_in_message(&empty),
        Err(Error::BadMessage { .. })
    ));
}

/// The data chunks of `key` as sent by `src`.
fn chunks(src: &Store, key: SnapKey, size: usize) -> Vec<Vec<u8>> {
    src.mgr
        .send(key, size)
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
}

fn assert_no_received_files(dst: &Store, key: SnapKey) {
    assert_eq!(dst.snap_files(), Vec::<String>::new());
    assert!(!dst.mgr.exists(SnapKind::Received, key));
    assert_eq!(dst.mgr.state(SnapKind::Received, key), None);
    assert_eq!(dst.mgr.total_size(), 0);
}

#[test]
fn small_chunks_round_trip_through_snapshot_chunk_framing_2c() {
    let key = SnapKey::new(1, 3, 30);
    let (src, r) = source(key);
    let dst = Store::new();
    let msg = snapshot_message(&src, key, &r);
    let reader = src.mgr.send(key, 100).unwrap();
    let meta = reader.meta().clone();
    let total = reader.total_size();
    let expected_chunks: u64 = meta.cf_files.iter().map(|f| f.size.div_ceil(100)).sum();
    assert_eq!(
        src.mgr.state(SnapKind::Generated, key),
        Some(SnapState::Sending)
    );

    let mut stream = reader.into_snapshot_chunks(msg.clone());
    let head = stream.next().unwrap().unwrap();
    assert_eq!(head.message.as_ref(), Some(&msg));
    assert!(head.data.is_empty());
    // The receiving side learns key and meta from the message alone.
    let (got_key, data) = snap::snapshot_in_message(&head.message.unwrap()).unwrap();
    assert_eq!(got_key, key);
    assert_eq!(data.meta.as_ref(), Some(&meta));
    assert_eq!((data.file_size, data.region.as_ref()), (total, Some(&r)));
    let mut receiver = dst
        .mgr
        .receive(got_key, data.meta.as_ref().unwrap())
        .unwrap();
    assert_eq!(
        dst.mgr.state(SnapKind::Received, key),
        Some(SnapState::Receiving)
    );
    let (mut n, mut bytes) = (0u64, 0u64);
    for chunk in stream {
        let chunk = chunk.unwrap();
        assert!(chunk.message.is_none() && !chunk.data.is_empty() && chunk.data.len() <= 100);
        n += 1;
        bytes += chunk.data.len() as u64;
        receiver.write(&chunk.data).unwrap();
    }
    assert_eq!((n, bytes), (expected_chunks, total));
    assert_eq!(receiver.finish().unwrap(), meta);
    // The stream is over: the sender's registration is gone.
    assert_eq!(src.mgr.state(SnapKind::Generated, key), None);
    assert_eq!(dst.mgr.state(SnapKind::Received, key), None);
    assert_eq!(dst.mgr.total_size(), total);

    dst.mgr.apply(key, &dst.db, &r).unwrap();
    assert_eq!(dst.dump_all(b"", b""), src.dump_all(b"t", b"u"));
}

#[test]
fn arbitrary_chunk_boundaries_are_accepted_2c() {
    let key = SnapKey::new(2, 3, 30);
    let (src, r) = source(key);
    let dst = Store::new();
    let stream: Vec<u8> = chunks(&src, key, 1 << 20).concat();
    let meta = src.mgr.meta(SnapKind::Generated, key).unwrap();
    let mut receiver = dst.mgr.receive(key, &meta).unwrap();
    let mut r_ = rng(42);
    let mut rest = stream.as_slice();
    while !rest.is_empty() {
        let n = r_.gen_range(0..=rest.len().min(3000));
        receiver.write(&rest[..n]).unwrap();
        rest = &rest[n..];
    }
    receiver.finish().unwrap();
    dst.mgr.apply(key, &dst.db, &r).unwrap();
    assert_eq!(dst.dump_all(b"", b""), src.dump_all(b"t", b"u"));
}

#[test]
fn corrupted_chunk_is_rejected_and_tmp_files_removed_2c() {
    let key = SnapKey::new(3, 3, 30);
    let (src, _r) = source(key);
    let dst = Store::new();
    let meta = src.mgr.meta(SnapKind::Generated, key).unwrap();
    let mut data = chunks(&src, key, 256);
    data[3][17] ^= 0xff;
    let mut receiver = dst.mgr.receive(key, &meta).unwrap();
    let err = data
        .iter()
        .find_map(|c| receiver.write(c).err())
        .expect("the corrupt chunk must be refused");
    assert!(
        matches!(&err, Error::Checksum { cf, .. } if cf == "default"),
        "{err}"
    );
    assert!(err.is_corruption());
    // Once failed, the receiver accepts nothing more and cannot finish.
    assert!(matches!(receiver.write(b"x"), Err(Error::Aborted { .. })));
    assert!(matches!(receiver.finish(), Err(Error::Aborted { .. })));
    assert_no_received_files(&dst, key);

    // Raft retries: a clean stream of the same snapshot then succeeds.
    snap::transfer(&src.mgr, &dst.mgr, key, 256).unwrap();
    assert!(dst.mgr.exists(SnapKind::Received, key));
}

#[test]
fn truncated_stream_is_rejected_2c() {
    let key = SnapKey::new(4, 3, 30);
    let (src, _r) = source(key);
    let dst = Store::new();
    let meta = src.mgr.meta(SnapKind::Generated, key).unwrap();
    let mut data = chunks(&src, key, 512);
    data.pop();
    let mut receiver = dst.mgr.receive(key, &meta).unwrap();
    for c in &data {
        receiver.write(c).unwrap();
    }
    match receiver.finish().unwrap_err() {
        Error::Size {
            cf,
            expected,
            actual,
            ..
        } => {
            assert_eq!(cf, "write");
            assert!(actual < expected);
        }
        other => panic!("expected a size error, got {other}"),
    }
    assert_no_received_files(&dst, key);
}

#[test]
fn overlong_stream_is_rejected_2c() {
    let key = SnapKey::new(5, 3, 30);
    let (src, _r) = source(key);
    let dst = Store::new();
    let meta = src.mgr.meta(SnapKind::Generated, key).unwrap();
    let mut receiver = dst.mgr.receive(key, &meta).unwrap();
    for c in chunks(&src, key, 4096) {
        receiver.write(&c).unwrap();
    }
    let err = receiver.write(b"trailing garbage").unwrap_err();
    assert!(matches!(err, Error::Overflow { .. }), "{err}");
    drop(receiver);
    assert_no_received_files(&dst, key);
}

#[test]
fn dropped_connection_leaves_nothing_2c() {
    let key = SnapKey::new(6, 3, 30);
    let (src, _r) = source(key);
    let dst = Store::new();
    let meta = src.mgr.meta(SnapKind::Generated, key).unwrap();
    let data = chunks(&src, key, 1000);
    let mut receiver = dst.mgr.receive(key, &meta).unwrap();
    for c in &data[..data.len() / 2] {
        receiver.write(c).unwrap();
    }
    assert!(
        !dst.snap_files().is_empty(),
        "half a stream is on disk as .tmp"
    );
    assert!(dst
        .snap_files()
        .iter()
        .all(|f| f.ends_with(".tmp") || f.ends_with(".sst")));
    drop(receiver);
    assert_no_received_files(&dst, key);
}

#[test]
fn one_snapshot_streams_to_two_peers_at_once_2c() {
    let key = SnapKey::new(7, 3, 30);
    let (src, r) = source(key);
    let peers = [Store::new(), Store::new()];
    let meta = src.mgr.meta(SnapKind::Generated, key).unwrap();
    let mut readers = [
        src.mgr.send(key, 700).unwrap(),
        src.mgr.send(key, 300).unwrap(),
    ];
    let mut receivers = peers.each_ref().map(|p| p.mgr.receive(key, &meta).unwrap());
    // Interleave the two streams chunk by chunk, as two gRPC calls would.
    let mut open = [true, true];
    while open.iter().any(|o| *o) {
        for i in 0..2 {
            if !open[i] {
                continue;
            }
            match readers[i].next() {
                Some(chunk) => receivers[i].write(&chunk.unwrap()).unwrap(),
                None => open[i] = false,
            }
        }
    }
    drop(readers);
    assert_eq!(src.mgr.state(SnapKind::Generated, key), None);
    for (peer, receiver) in peers.iter().zip(receivers) {
        receiver.finish().unwrap();
        peer.mgr.apply(key, &peer.db, &r).unwrap();
        assert_eq!(peer.dump_all(b"", b""), src.dump_all(b"t", b"u"));
    }
}
