//! The reading commands (`KvGet`, `KvScan`) and the two phases of a commit (`KvPrewrite`,
//! `KvCommit`).

use proto::kvrpcpb::{
    CommitRequest, CommitResponse, GetRequest, GetResponse, KeyError, KvPair, Op, PrewriteRequest,
    PrewriteResponse, ScanRequest, ScanResponse,
};

use crate::mvcc::{get_lock, get_value, LockKind, MvccTxn, ScanEntry, Scanner};
use crate::storage::Storage;

use super::actions::{commit_key, prewrite_key, PrewriteParams};
use super::error::{Error, Result};
use super::{unique_keys, Settled, TxnApi};

impl<S: Storage> TxnApi<S> {
    /// `KvGet`: the value of a key at `version`, or the lock that hides it.
    pub fn get(&self, req: &GetRequest) -> Result<GetResponse> {
        let out = Settled::settle(self.try_get(req))?;
        Ok(GetResponse {
            not_found: out.is_ok() && out.value.is_none(),
            value: out.value.unwrap_or_default(),
            region_error: out.region_error,
            error: out.key_error,
        })
    }

    fn try_get(&self, req: &GetRequest) -> Result<Option<Vec<u8>>> {
        self.check_read_ts(req.version)?;
        let ctx = req.context.unwrap_or_default();
        let reader = self.storage.reader(&ctx)?;
        if let Some(lock) = get_lock(reader.as_ref(), &req.key)? {
            if lock.blocks_read_at(req.version) {
                return Err(Error::Locked(lock.info(&req.key)));
            }
        }
        Ok(get_value(reader.as_ref(), &req.key, req.version)?)
    }

    /// `KvScan`: up to `limit` visible pairs from `start_key` at `version`. A locked key takes
    /// its place in the result as a pair carrying the lock, so the client can resolve it and
    /// scan again from there.
    pub fn scan(&self, req: &ScanRequest) -> Result<ScanResponse> {
        match self.try_scan(req) {
            Ok(pairs) => Ok(ScanResponse {
                pairs,
                ..ScanResponse::default()
            }),
            // Per-key problems travel inside the pairs; only a region error or a timestamp
            // below the GC safe point fails the scan.
            Err(Error::Storage(crate::Error::Region(e))) => Ok(ScanResponse {
                region_error: Some(*e),
                ..ScanResponse::default()
            }),
            Err(e @ Error::Compacted { .. }) => Ok(ScanResponse {
                error: e.key_error(),
                ..ScanResponse::default()
            }),
            Err(e) => Err(e),
        }
    }

    fn try_scan(&self, req: &ScanRequest) -> Result<Vec<KvPair>> {
        let limit = req.limit as usize;
        let mut pairs = Vec::new();
        if limit == 0 {
            return Ok(pairs);
        }
        self.check_read_ts(req.version)?;
        let ctx = req.context.unwrap_or_default();
        let reader = self.storage.reader(&ctx)?;
        let mut scanner = Scanner::new(reader.as_ref(), &req.start_key, req.version)?;
        while pairs.len() < limit {
            let Some((key, entry)) = scanner.next_entry()? else {
                break;
            };
            pairs.push(match entry {
                ScanEntry::Value(value) => KvPair {
                    error: None,
                    key,
                    value,
                },
                ScanEntry::Locked(lock) => KvPair {
                    error: Some(KeyError {
                        locked: Some(lock.info(&key)),
                        ..KeyError::default()
                    }),
                    key,
                    value: Vec::new(),
                },
            });
        }
        Ok(pairs)
    }

    /// `KvPrewrite`: locks every key of the mutations for the transaction at `start_version`
    /// and stages the values. All or nothing: if any key meets a lock or a newer write, nothing
    /// is written and every such key is reported.
    pub fn prewrite(&self, req: &PrewriteRequest) -> Result<PrewriteResponse> {
        let out = Settled::settle(self.try_prewrite(req))?;
        let mut errors = out.value;
        errors.extend(out.key_error);
        Ok(PrewriteResponse {
            region_error: out.region_error,
            errors,
        })
    }

    fn try_prewrite(&self, req: &PrewriteRequest) -> Result<Vec<KeyError>> {
        let mut kinds = Vec::with_capacity(req.mutations.len());
        for m in &req.mutations {
            let op = Op::try_from(m.op)
                .map_err(|_| Error::InvalidArgument(format!("unknown mutation op {}", m.op)))?;
            let kind = LockKind::from_op(op).ok_or_else(|| {
                Error::InvalidArgument(format!("{op:?} is not a prewrite mutation"))
            })?;
            kinds.push(kind);
        }
        let safe_point = self.gc_safe_point();
        if req.start_version <= safe_point {
            return Err(Error::Compacted {
                ts: req.start_version,
                safe_point,
            });
        }
        let ctx = req.context.unwrap_or_default();
        let guard = self
            .latches
            .acquire(req.mutations.iter().map(|m| m.key.as_slice()));
        let mut txn = MvccTxn::new(self.storage.reader(&ctx)?, req.start_version);
        let params = PrewriteParams {
            primary: &req.primary_lock,
            ttl: req.lock_ttl,
        };
        let mut errors = Vec::new();
        for (m, kind) in req.mutations.iter().zip(kinds) {
            if let Err(e) = prewrite_key(&mut txn, m, kind, &params) {
                match e.key_error() {
                    Some(ke) => errors.push(ke),
                    None => return Err(e),
                }
            }
        }
        if errors.is_empty() {
            self.write(&ctx, &guard, txn.into_writes())?;
        }
        Ok(errors)
    }

    /// `KvCommit`: commits the transaction at `start_version` on every key at `commit_version`.
    /// All or nothing: a key whose lock is gone (retryable) or that was rolled back (abort)
    /// fails the whole request and nothing is written.
    pub fn commit(&self, req: &CommitRequest) -> Result<CommitResponse> {
        let out = Settled::settle(self.try_commit(req))?;
        Ok(CommitResponse {
            region_error: out.region_error,
            error: out.key_error,
        })
    }

    fn try_commit(&self, req: &CommitRequest) -> Result<()> {
        if req.commit_version <= req.start_version {
            return Err(Error::InvalidArgument(format!(
                "commit_version {} is not after start_version {}",
                req.commit_version, req.start_version
            )));
        }
        let ctx = req.context.unwrap_or_default();
        let keys = unique_keys(&req.keys);
        let guard = self.latches.acquire(keys.iter().map(Vec::as_slice));
        let mut txn = MvccTxn::new(self.storage.reader(&ctx)?, req.start_version);
        for key in &keys {
            commit_key(&mut txn, key, req.commit_version)?;
        }
        self.write(&ctx, &guard, txn.into_writes())
    }
}
