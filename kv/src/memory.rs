//! `MemoryStorage`: an in-memory storage for tests, with true snapshot isolation.
//!
//! Each column family is an `Arc<BTreeMap>`; a reader clones the `Arc`s, and a writer copies a map
//! only while some reader still holds the old version.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use proto::kvrpcpb::Context;

use crate::cas::{Cas, CasOutcome};
use crate::engine::Cf;
use crate::error::{Error, Result};
use crate::storage::{DbIterator, Modify, Storage, StorageReader};

type Map = Arc<BTreeMap<Vec<u8>, Vec<u8>>>;

/// An in-memory [`Storage`].
#[derive(Default)]
pub struct MemoryStorage {
    cfs: RwLock<[Map; 3]>,
}

fn index(cf: Cf) -> usize {
    match cf {
        Cf::Default => 0,
        Cf::Lock => 1,
        Cf::Write => 2,
    }
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    /// Number of keys in `cf`.
    pub fn len(&self, cf: Cf) -> usize {
        self.cfs.read().map(|cfs| cfs[index(cf)].len()).unwrap_or(0)
    }

    /// Whether every column family is empty.
    pub fn is_empty(&self) -> bool {
        Cf::ALL.iter().all(|cf| self.len(*cf) == 0)
    }
}

fn poisoned() -> Error {
    Error::Unavailable("memory storage lock poisoned".to_string())
}

impl Storage for MemoryStorage {
    fn write(&self, _ctx: &Context, batch: Vec<Modify>) -> Result<()> {
        let mut cfs = self.cfs.write().map_err(|_| poisoned())?;
        for m in batch {
            match m {
                Modify::Put { cf, key, value } => {
                    Arc::make_mut(&mut cfs[index(cf)]).insert(key, value);
                }
                Modify::Delete { cf, key } => {
                    Arc::make_mut(&mut cfs[index(cf)]).remove(&key);
                }
                Modify::DeleteRange { cf, start, end } => {
                    let map = Arc::make_mut(&mut cfs[index(cf)]);
                    let upper = if end.is_empty() {
                        Bound::Unbounded
                    } else {
                        Bound::Excluded(end.as_slice())
                    };
                    let doomed: Vec<Vec<u8>> = map
                        .range::<[u8], _>((Bound::Included(start.as_slice()), upper))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        map.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }

    fn compare_and_swap(&self, _ctx: &Context, cas: Cas) -> Result<CasOutcome> {
        // The write lock covers the comparison too: no other write comes between.
        let mut cfs = self.cfs.write().map_err(|_| poisoned())?;
        let map = &mut cfs[index(cas.cf)];
        let outcome = cas.decide(map.get(&cas.key).cloned());
        if outcome.succeed {
            Arc::make_mut(map).insert(cas.key, cas.value);
        }
        Ok(outcome)
    }

    fn reader(&self, _ctx: &Context) -> Result<Box<dyn StorageReader>> {
        let cfs = self.cfs.read().map_err(|_| poisoned())?;
        Ok(Box::new(MemoryReader { cfs: cfs.clone() }))
    }
}

struct MemoryReader {
    cfs: [Map; 3],
}

impl StorageReader for MemoryReader {
    fn get_cf(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.cfs[index(cf)].get(key).cloned())
    }

    fn iter_cf(&self, cf: Cf) -> Result<Box<dyn DbIterator + '_>> {
        Ok(Box::new(MemoryIterator {
            map: &self.cfs[index(cf)],
            cur: None,
        }))
    }
}

struct MemoryIterator<'a> {
    map: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    cur: Option<(&'a Vec<u8>, &'a Vec<u8>)>,
}

impl DbIterator for MemoryIterator<'_> {
    fn seek(&mut self, key: &[u8]) {
        self.cur = self
            .map
            .range::<[u8], _>((Bound::Included(key), Bound::Unbounded))
            .next();
    }

    fn valid(&self) -> Result<bool> {
        Ok(self.cur.is_some())
    }

    fn key(&self) -> &[u8] {
        self.cur.map(|(k, _)| k.as_slice()).unwrap_or_default()
    }

    fn value(&self) -> &[u8] {
        self.cur.map(|(_, v)| v.as_slice()).unwrap_or_default()
    }

    fn next(&mut self) {
        if let Some((k, _)) = self.cur {
            self.cur = self
                .map
                .range::<[u8], _>((Bound::Excluded(k.as_slice()), Bound::Unbounded))
                .next();
        }
    }

    fn seek_before(&mut self, key: &[u8]) {
        self.cur = if key.is_empty() {
            self.map.iter().next_back()
        } else {
            self.map
                .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(key)))
                .next_back()
        };
    }

    fn prev(&mut self) {
        if let Some((k, _)) = self.cur {
            self.cur = self
                .map
                .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(k.as_slice())))
                .next_back();
        }
    }
}
