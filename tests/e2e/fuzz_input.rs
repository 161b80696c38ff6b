//! What the store fuzzer ([`crate::fuzz_store`]) sends on a store's client port and HTTP
//! gateway, and raw bytes on any of its ports: raw and transactional requests with random
//! fields (column families, keys, limits, versions, mutations, TTLs, region contexts), HTTP
//! requests that are well-formed or not, and garbage after a protocol's first bytes or
//! without them.
//!
//! Every write goes to keys under `fuzz-`, which the acknowledged writes (`acked-NNNNN`) never
//! use, so the end of the run can tell whether any acknowledged write was lost; reads and scans
//! go anywhere. Raw writes into the `lock` and `write` column families land on the encoded
//! forms of the fuzzer's own transactional keys, where transactions read them as records.

use proto::kvrpcpb::{
    BatchRollbackRequest, CheckTxnStatusRequest, CommitRequest, Context, GetRequest, Mutation,
    PrewriteRequest, RawDeleteRequest, RawGetRequest, RawPutRequest, RawScanRequest,
    ResolveLockRequest, ScanRequest,
};
use rand::Rng;

use crate::fuzz_gen::{Dice, Target};

/// A raw request for the client port.
#[derive(Debug)]
pub enum RawReq {
    Get(RawGetRequest),
    Put(RawPutRequest),
    Delete(RawDeleteRequest),
    Scan(RawScanRequest),
}

/// A transactional request for the client port.
#[derive(Debug)]
pub enum TxnReq {
    Get(GetRequest),
    Scan(ScanRequest),
    Prewrite(PrewriteRequest),
    Commit(CommitRequest),
    CheckTxnStatus(CheckTxnStatusRequest),
    ResolveLock(ResolveLockRequest),
    BatchRollback(BatchRollbackRequest),
}

/// Which port of a store raw bytes go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Client,
    Peer,
    Http,
}

/// The first bytes of an HTTP/2 connection, which both gRPC ports expect.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The prefix of every key the fuzzer writes.
const FUZZ: &[u8] = b"fuzz-";

/// Builds client-port, gateway and raw-byte inputs; remembers a few transactional keys and
/// start versions so later requests meet earlier ones' locks.
pub struct ClientGen {
    txn_keys: Vec<Vec<u8>>,
    versions: Vec<u64>,
}

impl ClientGen {
    pub fn new() -> ClientGen {
        ClientGen {
            txn_keys: (0..8)
                .map(|i| format!("fuzz-txn-{i}").into_bytes())
                .collect(),
            versions: vec![1],
        }
    }

    fn cf(&self, d: &mut Dice) -> String {
        match d.below(10) {
            0..=3 => "default".to_string(),
            4 => String::new(),
            5 => "lock".to_string(),
            6 => "write".to_string(),
            7 => "raft".to_string(),
            8 => "DEFAULT".to_string(),
            _ => String::from_utf8_lossy(&d.bytes(12)).to_string(),
        }
    }

    /// A key to write: under [`FUZZ`], sometimes the encoded form of a transactional key.
    fn write_key(&self, d: &mut Dice) -> Vec<u8> {
        match d.below(8) {
            0 => kv::mvcc::key::encode_bytes(&d.pick(&self.txn_keys)),
            1 => {
                let ts = d.pick(&self.versions);
                kv::mvcc::key::encode_key(&d.pick(&self.txn_keys), ts)
            }
            2 => d.pick(&self.txn_keys),
            3 => [FUZZ, &vec![0xff; d.below(70_000)]].concat(),
            _ => [FUZZ, &d.bytes(64)].concat(),
        }
    }

    /// A key to read: anything, the acknowledged ones included.
    fn read_key(&self, d: &mut Dice) -> Vec<u8> {
        match d.below(6) {
            0 => format!("acked-{:05}", d.below(100)).into_bytes(),
            1 => d.pick(&self.txn_keys),
            2 => vec![b'k'; d.pick(&[0, 65_536, 65_537])],
            _ => d.bytes(64),
        }
    }

    fn value(&self, d: &mut Dice) -> Vec<u8> {
        if d.chance(0.01) {
            return vec![0xa5; d.rng.gen_range(1 << 19..1 << 21)];
        }
        d.bytes(16 * 1024)
    }

    fn context(&self, d: &mut Dice, t: &Target) -> Option<Context> {
        let real = &t.region;
        let peer = t.peers[d.below(t.peers.len())];
        match d.below(4) {
            0 => None,
            1 => Some(Context {
                region_id: real.id,
                region_epoch: real.region_epoch,
                peer: Some(peer),
                term: 0,
            }),
            2 => Some(Context {
                region_id: d.edge_u64(),
                region_epoch: None,
                peer: Some(proto::metapb::Peer {
                    id: d.edge_u64(),
                    ..peer
                }),
                term: d.edge_u64(),
            }),
            _ => Some(Context {
                region_id: real.id,
                region_epoch: Some(proto::metapb::RegionEpoch {
                    conf_ver: d.edge_u64(),
                    version: d.edge_u64(),
                }),
                peer: None,
                term: d.term(),
            }),
        }
    }

    fn limit(&self, d: &mut Dice) -> u32 {
        let random = d.rng.gen();
        d.pick(&[0, 1, 10, 1000, u32::MAX, random])
    }

    pub fn raw(&mut self, d: &mut Dice, t: &Target) -> RawReq {
        let context = self.context(d, t);
        match d.below(4) {
            0 => RawReq::Get(RawGetRequest {
                context,
                key: self.read_key(d),
                cf: self.cf(d),
            }),
            1 => RawReq::Put(RawPutRequest {
                context,
                key: self.write_key(d),
                value: self.value(d),
                cf: self.cf(d),
                ttl: 0,
            }),
            2 => RawReq::Delete(RawDeleteRequest {
                context,
                key: self.write_key(d),
                cf: self.cf(d),
            }),
            _ => RawReq::Scan(RawScanRequest {
                context,
                start_key: self.read_key(d),
                limit: self.limit(d),
                cf: self.cf(d),
                end_key: self.read_key(d),
                key_only: d.below(2) == 0,
                reverse: d.below(2) == 0,
                with_expiry: d.below(2) == 0,
            }),
        }
    }

    /// A version: one used before, one near now, or an edge.
    fn version(&mut self, d: &mut Dice) -> u64 {
        let v = match d.below(4) {
            0 => d.pick(&self.versions),
            1 => {
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |t| t.as_millis() as u64);
                (ms << 18) + d.rng.gen_range(0..1 << 20)
            }
            2 => d.rng.gen_range(0..1 << 10),
            _ => d.edge_u64(),
        };
        if self.versions.len() < 32 {
            self.versions.push(v);
        } else {
            let i = d.below(self.versions.len());
            self.versions[i] = v;
        }
        v
    }

    fn txn_key(&self, d: &mut Dice) -> Vec<u8> {
        if d.chance(0.8) {
            d.pick(&self.txn_keys)
        } else {
            self.write_key(d)
        }
    }

    fn txn_keys(&self, d: &mut Dice) -> Vec<Vec<u8>> {
        (0..d.pick(&[0, 1, 1, 2, 5]))
            .map(|_| self.txn_key(d))
            .collect()
    }

    pub fn txn(&mut self, d: &mut Dice, t: &Target) -> TxnReq {
        let context = self.context(d, t);
        match d.below(7) {
            0 => TxnReq::Get(GetRequest {
                context,
                key: self.read_key(d),
                version: self.version(d),
            }),
            1 => TxnReq::Scan(ScanRequest {
                context,
                start_key: self.read_key(d),
                limit: self.limit(d),
                version: self.version(d),
            }),
            2 => {
                let mutations = (0..d.pick(&[0, 1, 2, 3, 8]))
                    .map(|_| Mutation {
                        op: d.pick(&[0, 0, 1, 2, 3, 4, -1, i32::MAX]),
                        key: self.txn_key(d),
                        value: self.value(d),
                    })
                    .collect();
                let random_ttl = d.rng.gen();
                TxnReq::Prewrite(PrewriteRequest {
                    context,
                    mutations,
                    primary_lock: self.txn_key(d),
                    start_version: self.version(d),
                    lock_ttl: d.pick(&[0, 1, 3000, u64::MAX, random_ttl]),
                })
            }
            3 => TxnReq::Commit(CommitRequest {
                context,
                start_version: self.version(d),
                keys: self.txn_keys(d),
                commit_version: self.version(d),
            }),
            4 => TxnReq::CheckTxnStatus(CheckTxnStatusRequest {
                context,
                primary_key: self.txn_key(d),
                lock_ts: self.version(d),
                current_ts: self.version(d),
            }),
            5 => TxnReq::ResolveLock(ResolveLockRequest {
                context,
                start_version: self.version(d),
                commit_version: if d.chance(0.5) { 0 } else { self.version(d) },
            }),
            _ => TxnReq::BatchRollback(BatchRollbackRequest {
                context,
                start_version: self.version(d),
                keys: self.txn_keys(d),
            }),
        }
    }

    /// Bytes for `port`: random, or random after the protocol's first bytes.
    pub fn garbage(&self, d: &mut Dice, port: Port) -> Vec<u8> {
        let mut out = Vec::new();
        if d.chance(0.5) {
            match port {
                Port::Client | Port::Peer => out.extend_from_slice(H2_PREFACE),
                Port::Http => {
                    out.extend_from_slice(b"GET /kv/x HTTP/1.1\r\nHost: fuzz\r\n");
                }
            }
        }
        out.extend(d.bytes(8192));
        out
    }

    /// One HTTP/1.1 request for the gateway, well-formed or nearly: a read of any key, a write
    /// of a fuzz key, a status route, or a random path; a body whose declared length may lie.
    pub fn http(&self, d: &mut Dice) -> Vec<u8> {
        let pct = |bytes: &[u8]| -> String {
            bytes
                .iter()
                .map(|b| format!("%{b:02X}"))
                .collect::<String>()
        };
        let method = d.pick(&[
            "GET", "GET", "PUT", "DELETE", "POST", "HEAD", "PATCH", "G\0T",
        ]);
        let path = match d.below(8) {
            0 if method == "GET" || method == "HEAD" => {
                format!("/kv/{}", pct(&self.read_key(d)))
            }
            0..=3 => {
                let query = if d.chance(0.3) {
                    format!("?cf={}", pct(self.cf(d).as_bytes()))
                } else {
                    String::new()
                };
                format!("/kv/{}{query}", pct(&self.write_key(d)))
            }
            4 => d
                .pick(&["/metrics", "/health", "/livez", "/readyz", "/kv/", "/kv"])
                .to_string(),
            5 => format!("/kv/fuzz-{}?{}", pct(&d.bytes(16)), pct(&d.bytes(16))),
            6 => format!("/{}", String::from_utf8_lossy(&d.bytes(32))),
            _ => "*".to_string(),
        };
        let body = self.value(d);
        let length = match d.below(8) {
            0 => d.edge_u64().to_string(),
            1 => body.len().saturating_sub(1).to_string(),
            2 => "-1".to_string(),
            _ => body.len().to_string(),
        };
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: fuzz\r\n").into_bytes();
        if d.chance(0.9) {
            req.extend(format!("Content-Length: {length}\r\n").into_bytes());
        }
        if d.chance(0.1) {
            req.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        if d.chance(0.1) {
            req.extend(d.bytes(64));
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"Connection: close\r\n\r\n");
        req.extend(body);
        req
    }
}
