//! Test support: a request builder for the transactional commands, and a fixture that seeds
//! and inspects MVCC records directly in a storage.
//!
//! Used by the crate's own suites and by higher-level test crates (the raft cluster tests build
//! their requests the same way); not meant for production code paths.

use std::sync::Arc;

use proto::kvrpcpb::{
    BatchRollbackRequest, CheckTxnStatusRequest, CommitRequest, Context, GetRequest, Mutation, Op,
    PrewriteRequest, ResolveLockRequest, ScanRequest,
};

use crate::engine::Cf;
use crate::memory::MemoryStorage;
use crate::mvcc::decode_lock_key;
use crate::mvcc::key::{decode_key, encode_bytes, encode_key};
use crate::mvcc::{Lock, LockKind, Write, WriteKind};
use crate::storage::{Modify, Storage};

use super::TxnApi;

/// Builds transactional requests that all carry one routing context.
#[derive(Clone, Debug, Default)]
pub struct RequestBuilder {
    ctx: Context,
}

impl RequestBuilder {
    /// A builder whose requests carry `ctx`.
    pub fn new(ctx: Context) -> RequestBuilder {
        RequestBuilder { ctx }
    }

    fn ctx(&self) -> Option<Context> {
        Some(self.ctx)
    }

    /// `KvGet` of `key` at `version`.
    pub fn get(&self, key: &[u8], version: u64) -> GetRequest {
        GetRequest {
            context: self.ctx(),
            key: key.to_vec(),
            version,
        }
    }

    /// `KvScan` of up to `limit` pairs from `start` at `version`.
    pub fn scan(&self, start: &[u8], limit: u32, version: u64) -> ScanRequest {
        ScanRequest {
            context: self.ctx(),
            start_key: start.to_vec(),
            limit,
            version,
        }
    }

    /// An empty `KvPrewrite` of the transaction at `start_ts` with `primary`; add mutations
    /// with [`PrewriteRequestExt`].
    pub fn prewrite(&self, start_ts: u64, primary: &[u8], ttl: u64) -> PrewriteRequest {
        PrewriteRequest {
            context: self.ctx(),
            mutations: Vec::new(),
            primary_lock: primary.to_vec(),
            start_version: start_ts,
            lock_ttl: ttl,
        }
    }

    /// `KvCommit` of `keys` of the transaction at `start_ts`, at `commit_ts`.
    pub fn commit<K: AsRef<[u8]>>(
        &self,
        start_ts: u64,
        commit_ts: u64,
        keys: &[K],
    ) -> CommitRequest {
        CommitRequest {
            context: self.ctx(),
            start_version: start_ts,
            keys: keys.iter().map(|k| k.as_ref().to_vec()).collect(),
            commit_version: commit_ts,
        }
    }

    /// `KvBatchRollback` of `keys` of the transaction at `start_ts`.
    pub fn rollback<K: AsRef<[u8]>>(&self, start_ts: u64, keys: &[K]) -> BatchRollbackRequest {
        BatchRollbackRequest {
            context: self.ctx(),
            start_version: start_ts,
            keys: keys.iter().map(|k| k.as_ref().to_vec()).collect(),
        }
    }

    /// `KvCheckTxnStatus` of the transaction at `lock_ts` on `primary`, at `current_ts`.
    pub fn check_txn_status(
        &self,
        primary: &[u8],
        lock_ts: u64,
        current_ts: u64,
    ) -> CheckTxnStatusRequest {
        CheckTxnStatusRequest {
            context: self.ctx(),
            primary_key: primary.to_vec(),
            lock_ts,
            current_ts,
        }
    }

    /// `KvResolveLock` of the transaction at `start_ts`; `commit_ts` 0 rolls it back.
    pub fn resolve_lock(&self, start_ts: u64, commit_ts: u64) -> ResolveLockRequest {
        ResolveLockRequest {
            context: self.ctx(),
            start_version: start_ts,
            commit_version: commit_ts,
        }
    }
}

/// Chained additions of mutations to a prewrite request.
pub trait PrewriteRequestExt {
    /// Adds a put of `value` at `key`.
    fn put(self, key: &[u8], value: &[u8]) -> Self;
    /// Adds a delete of `key`.
    fn delete(self, key: &[u8]) -> Self;
    /// Adds a lock-only mutation of `key`.
    fn lock(self, key: &[u8]) -> Self;
}

fn mutation(op: Op, key: &[u8], value: &[u8]) -> Mutation {
    Mutation {
        op: op as i32,
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

impl PrewriteRequestExt for PrewriteRequest {
    fn put(mut self, key: &[u8], value: &[u8]) -> Self {
        self.mutations.push(mutation(Op::Put, key, value));
        self
    }

    fn delete(mut self, key: &[u8]) -> Self {
        self.mutations.push(mutation(Op::Del, key, b""));
        self
    }

    fn lock(mut self, key: &[u8]) -> Self {
        self.mutations.push(mutation(Op::Lock, key, b""));
        self
    }
}

/// A [`TxnApi`] plus direct access to the MVCC records of its storage. `must_*` helpers panic
/// on storage errors: they are for tests.
pub struct TxnFixture<S: Storage = MemoryStorage> {
    /// The commands under test.
    pub api: TxnApi<S>,
    /// Builds the requests.
    pub req: RequestBuilder,
}

impl Default for TxnFixture<MemoryStorage> {
    fn default() -> Self {
        TxnFixture::new(Arc::new(MemoryStorage::new()))
    }
}

impl<S: Storage> TxnFixture<S> {
    /// A fixture over `storage` with a default routing context.
    pub fn new(storage: Arc<S>) -> TxnFixture<S> {
        TxnFixture {
            api: TxnApi::new(storage),
            req: RequestBuilder::default(),
        }
    }

    fn must_write(&self, batch: Vec<Modify>) {
        self.api
            .storage()
            .write(&Context::default(), batch)
            .expect("seeding the storage");
    }

    /// Stores a committed put of `value` at `key` by the transaction `start_ts`..`commit_ts`.
    pub fn must_put_committed(&self, key: &[u8], value: &[u8], start_ts: u64, commit_ts: u64) {
        self.must_write(vec![
            Modify::Put {
                cf: Cf::Default,
                key: encode_key(key, start_ts),
                value: value.to_vec(),
            },
            write_record(key, commit_ts, WriteKind::Put, start_ts),
        ]);
    }

    /// Stores a committed write record of `kind` (a delete, a rollback, a lock) with no value.
    pub fn must_put_write(&self, key: &[u8], kind: WriteKind, start_ts: u64, commit_ts: u64) {
        self.must_write(vec![write_record(key, commit_ts, kind, start_ts)]);
    }

    /// Stores a lock on `key`, and `value` at `key@start_ts` for a put lock.
    pub fn must_put_lock(&self, key: &[u8], lock: &Lock, value: &[u8]) {
        let mut batch = vec![Modify::Put {
            cf: Cf::Lock,
            key: encode_bytes(key),
            value: lock.to_bytes(),
        }];
        if lock.kind == LockKind::Put {
            batch.push(Modify::Put {
                cf: Cf::Default,
                key: encode_key(key, lock.start_ts),
                value: value.to_vec(),
            });
        }
        self.must_write(batch);
    }

    /// The lock on `key`, if any.
    pub fn lock(&self, key: &[u8]) -> Option<Lock> {
        let raw = self.must_get(Cf::Lock, &encode_bytes(key));
        raw.map(|b| Lock::from_bytes(&b).expect("a valid lock"))
    }

    /// The write record of `key` at exactly `commit_ts`, if any.
    pub fn write_at(&self, key: &[u8], commit_ts: u64) -> Option<Write> {
        let raw = self.must_get(Cf::Write, &encode_key(key, commit_ts));
        raw.map(|b| Write::from_bytes(&b).expect("a valid write record"))
    }

    /// The value stored by the transaction `start_ts` for `key`, committed or not.
    pub fn value_at(&self, key: &[u8], start_ts: u64) -> Option<Vec<u8>> {
        self.must_get(Cf::Default, &encode_key(key, start_ts))
    }

    /// Every entry of `cf` as `(user key, timestamp or 0 for locks, value)`, in storage order.
    pub fn dump(&self, cf: Cf) -> Vec<(Vec<u8>, u64, Vec<u8>)> {
        let reader = self
            .api
            .storage()
            .reader(&Context::default())
            .expect("reader");
        let mut it = reader.iter_cf(cf).expect("iterator");
        it.seek(b"");
        let mut out = Vec::new();
        while it.valid().expect("iterating") {
            let (key, ts) = match cf {
                Cf::Lock => (decode_lock_key(it.key()).expect("a lock key"), 0),
                Cf::Default | Cf::Write => decode_key(it.key()).expect("a version key"),
            };
            out.push((key, ts, it.value().to_vec()));
            it.next();
        }
        out
    }

    fn must_get(&self, cf: Cf, key: &[u8]) -> Option<Vec<u8>> {
        let reader = self
            .api
            .storage()
            .reader(&Context::default())
            .expect("reader");
        reader.get_cf(cf, key).expect("reading the storage")
    }
}

fn write_record(key: &[u8], commit_ts: u64, kind: WriteKind, start_ts: u64) -> Modify {
    Modify::Put {
        cf: Cf::Write,
        key: encode_key(key, commit_ts),
        value: Write::new(kind, start_ts).to_bytes(),
    }
}
