//! Forging what the hostile tests send: the region and its peers as the scheduler reports them
//! ([`Topology`]), raft messages addressed from one of its peers to another ([`forge_raft`]),
//! and snapshot streams ([`snapshot_head`]). Sending is [`crate::hostile`]'s job.

use bytes::Bytes;
use proto::eraftpb::{self, MessageType};
use proto::metapb;
use proto::protobuf::Message as _;
use proto::raft_serverpb::{
    RaftMessage, RaftSnapshotData, SnapshotCfFile, SnapshotChunk, SnapshotMeta,
};
use proto::Message as _;
use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient};

use crate::procs::Cluster;

/// md5 of zero bytes: the checksum a snapshot records for an empty column family.
pub const EMPTY_MD5: [u8; 16] = [
    0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e,
];

/// A term no test cluster reaches by itself (each election adds one): a message at this term
/// comes from "the future" for every store.
pub const FUTURE_TERM: u64 = 1_000;

/// The first region, its peers by store, and the store leading it.
#[derive(Clone, Debug)]
pub struct Topology {
    pub region: metapb::Region,
    /// `peers[i]` is the region's peer on `cluster.stores[i]`.
    pub peers: Vec<metapb::Peer>,
    /// Index of the store that served a read as the region's leader.
    pub leader: usize,
}

impl Topology {
    /// Reads the region from the scheduler, matches each peer to a running store by address,
    /// and finds the leader by asking the stores. Call once the region has a peer on every
    /// store (`wait_replicas`).
    pub async fn read(cluster: &Cluster) -> Topology {
        let addr = cluster.scheduler.clone();
        let (region, stores) = tokio::task::spawn_blocking(move || {
            let c = RpcClient::connect(&addr, RpcClientConfig::default()).expect("scheduler");
            let (region, _) = c
                .get_region(b"")
                .expect("the scheduler knows the first region");
            let stores: Vec<metapb::Store> = region
                .peers
                .iter()
                .map(|p| {
                    c.get_store(p.store_id)
                        .expect("the scheduler knows the store")
                })
                .collect();
            (region, stores)
        })
        .await
        .unwrap();
        let peers = cluster
            .stores
            .iter()
            .map(|s| {
                let at = stores
                    .iter()
                    .position(|st| st.address == s.grpc_addr())
                    .unwrap_or_else(|| panic!("no peer of {region:?} on {} ({stores:?})", s.name));
                region.peers[at]
            })
            .collect();
        let leader = cluster.wait_leader().await;
        Topology {
            region,
            peers,
            leader,
        }
    }

    /// A follower's store index (the one after the leader).
    pub fn follower(&self) -> usize {
        (self.leader + 1) % self.peers.len()
    }
}

/// A raft message of type `t`, from no one to no one yet, at term 0 (what [`forge_raft`]
/// fills in, the caller changes).
pub fn raft_msg(t: MessageType) -> eraftpb::Message {
    let mut m = eraftpb::Message::default();
    m.set_msg_type(t);
    m
}

/// An entry at `index` of `term` with a little data.
pub fn entry(index: u64, term: u64) -> eraftpb::Entry {
    let mut e = eraftpb::Entry::default();
    e.set_index(index);
    e.set_term(term);
    e.set_data(Bytes::from_static(b"forged"));
    e
}

/// `m` wrapped as the region's peer `from` would send it to peer `to`: the raft-level `from`
/// and `to` set to their ids, the region's current epoch and range. Everything else is
/// whatever `m` says.
pub fn forge_raft(
    region: &metapb::Region,
    from: &metapb::Peer,
    to: &metapb::Peer,
    mut m: eraftpb::Message,
) -> RaftMessage {
    m.set_from(from.id);
    m.set_to(to.id);
    RaftMessage {
        region_id: region.id,
        from_peer: Some(*from),
        to_peer: Some(*to),
        message: m.write_to_bytes().expect("encode a raft message"),
        region_epoch: region.region_epoch,
        is_tombstone: false,
        start_key: region.start_key.clone(),
        end_key: region.end_key.clone(),
    }
}

/// A meta listing `cf_files` (name, size, md5), in that order.
pub fn snapshot_meta(cf_files: &[(&str, u64, [u8; 16])]) -> SnapshotMeta {
    SnapshotMeta {
        cf_files: cf_files
            .iter()
            .map(|(cf, size, sum)| SnapshotCfFile {
                cf: cf.to_string(),
                size: *size,
                checksum: sum.to_vec(),
            })
            .collect(),
    }
}

/// The meta of a snapshot holding no data: every column family listed, empty.
pub fn empty_snapshot_meta() -> SnapshotMeta {
    snapshot_meta(&[
        ("default", 0, EMPTY_MD5),
        ("lock", 0, EMPTY_MD5),
        ("write", 0, EMPTY_MD5),
    ])
}

/// The first chunk of a snapshot stream: a `MsgSnapshot` of `region` at (`term`, `index`)
/// with `region`'s voters as its configuration and `meta` describing the files that follow,
/// from peer `from` to peer `to`.
pub fn snapshot_head(
    region: &metapb::Region,
    from: &metapb::Peer,
    to: &metapb::Peer,
    term: u64,
    index: u64,
    meta: SnapshotMeta,
) -> SnapshotChunk {
    let data = RaftSnapshotData {
        region: Some(region.clone()),
        file_size: meta.cf_files.iter().map(|f| f.size).sum(),
        data: Vec::new(),
        meta: Some(meta),
    };
    let mut snapshot = eraftpb::Snapshot::default();
    snapshot.set_data(Bytes::from(data.encode_to_vec()));
    let md = snapshot.mut_metadata();
    md.set_index(index);
    md.set_term(term);
    md.mut_conf_state()
        .set_voters(region.peers.iter().map(|p| p.id).collect());
    let mut m = raft_msg(MessageType::MsgSnapshot);
    m.set_term(term);
    m.set_snapshot(snapshot);
    SnapshotChunk {
        message: Some(forge_raft(region, from, to, m)),
        data: Vec::new(),
    }
}
