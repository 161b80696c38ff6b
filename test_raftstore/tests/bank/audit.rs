//! The end-of-test audit: with every lock resolved, the MVCC records of the accounts must tell
//! exactly the story of the committed transfers.
//!
//! - No lock is left.
//! - Every transfer is committed on both keys at one commit timestamp, or on neither; a commit
//!   its client saw acknowledged is there, at that timestamp; an abort its client saw is not.
//! - Walking each account's versions in commit order, every step is the effect of exactly the
//!   transfer that wrote it: a transfer that wrote over a change it did not read (a lost update)
//!   shows as a wrong step.
//! - The final balances are the initial ones plus the effect of the committed transfers.

use std::collections::HashMap;

use kv::mvcc::key::{decode_ts, encode_bytes, encode_key, is_version_of};
use kv::mvcc::{Write, WriteKind};
use kv::{Cf, StorageReader};

use crate::bank::{account, balance, Outcome, Transfer, ACCOUNTS, INITIAL};

/// One committed version of an account.
#[derive(Debug, Clone, Copy)]
struct Version {
    commit_ts: u64,
    start_ts: u64,
    value: u64,
}

/// What the records say of one account: its committed puts, oldest first.
#[derive(Default)]
struct History {
    puts: Vec<Version>,
}

impl History {
    fn put_of(&self, start_ts: u64) -> Option<Version> {
        self.puts.iter().copied().find(|v| v.start_ts == start_ts)
    }
}

fn read_history(reader: &dyn StorageReader, i: usize) -> History {
    let key = account(i);
    let prefix = encode_bytes(&key);
    let mut it = reader.iter_cf(Cf::Write).expect("iterating the write CF");
    it.seek(&prefix);
    let mut h = History::default();
    while it.valid().expect("iterating the write CF") && is_version_of(it.key(), &prefix) {
        let commit_ts = decode_ts(it.key()).expect("a version key");
        let write = Write::from_bytes(it.value()).expect("a write record");
        match write.kind {
            WriteKind::Put => {
                let raw = reader
                    .get_cf(Cf::Default, &encode_key(&key, write.start_ts))
                    .expect("reading the default CF")
                    .unwrap_or_else(|| {
                        panic!("account {i}: the put committed at {commit_ts} has no value")
                    });
                h.puts.push(Version {
                    commit_ts,
                    start_ts: write.start_ts,
                    value: balance(&raw),
                });
            }
            // A rolled-back transaction left no value; the audit of transfers covers it.
            WriteKind::Rollback => {}
            other => panic!("account {i}: unexpected {other:?} record at {commit_ts}"),
        }
        it.next();
    }
    // Versions come newest first.
    h.puts.reverse();
    h
}

/// What the audit found, for the report.
#[derive(Debug, Default)]
pub struct Summary {
    /// Transfers committed on the store.
    pub committed: usize,
    /// Of those, committed although their client never learned it (timeouts, abandoned).
    pub committed_unacknowledged: usize,
    /// Transfers that never committed.
    pub aborted: usize,
}

/// Audits the accounts in `reader` against the transfers; `open_ts` is the start timestamp of
/// the transaction that opened the accounts and `decided` the fate of the transfers whose
/// client did not know it, as their primaries answered at the end. Returns the final balances.
pub fn audit(
    reader: &dyn StorageReader,
    open_ts: u64,
    transfers: &[Transfer],
    decided: &HashMap<u64, Outcome>,
) -> (Summary, Vec<u64>) {
    let mut it = reader.iter_cf(Cf::Lock).expect("iterating the lock CF");
    it.seek(b"");
    assert!(
        !it.valid().expect("iterating the lock CF"),
        "a lock is left after resolving everything: {:?}",
        String::from_utf8_lossy(it.key())
    );
    drop(it);

    let histories: Vec<History> = (0..ACCOUNTS).map(|i| read_history(reader, i)).collect();
    let by_ts: HashMap<u64, &Transfer> = transfers.iter().map(|t| (t.start_ts, t)).collect();
    assert_eq!(
        by_ts.len(),
        transfers.len(),
        "two transfers share a start_ts"
    );

    let mut summary = Summary::default();
    let mut committed: HashMap<u64, u64> = HashMap::new();
    for t in transfers {
        let p = histories[t.primary].put_of(t.start_ts);
        let s = histories[t.secondary()].put_of(t.start_ts);
        match (p, s) {
            (Some(p), Some(s)) => assert_eq!(
                p.commit_ts, s.commit_ts,
                "transfer committed at two timestamps: {t:?}"
            ),
            (None, None) => {}
            _ => {
                panic!("transfer committed on one key only (primary {p:?}, secondary {s:?}): {t:?}")
            }
        }
        let on_store = p.map(|v| v.commit_ts);
        match t.outcome {
            Outcome::Committed(ts) => assert_eq!(
                on_store,
                Some(ts),
                "acknowledged commit at {ts} is not what the store holds: {t:?}"
            ),
            Outcome::Aborted => assert_eq!(on_store, None, "aborted transfer committed: {t:?}"),
            Outcome::Unknown => {
                let answer = decided
                    .get(&t.start_ts)
                    .unwrap_or_else(|| panic!("undecided transfer: {t:?}"));
                let said = match answer {
                    Outcome::Committed(ts) => Some(*ts),
                    _ => None,
                };
                assert_eq!(
                    on_store, said,
                    "the primary's status ({answer:?}) disagrees with the records: {t:?}"
                );
                if on_store.is_some() {
                    summary.committed_unacknowledged += 1;
                }
            }
        }
        match on_store {
            Some(ts) => {
                summary.committed += 1;
                committed.insert(t.start_ts, ts);
            }
            None => summary.aborted += 1,
        }
    }

    let mut finals = Vec::with_capacity(ACCOUNTS);
    for (i, h) in histories.iter().enumerate() {
        let first = h
            .puts
            .first()
            .unwrap_or_else(|| panic!("account {i} has no value"));
        assert!(
            first.start_ts == open_ts && first.value == INITIAL,
            "account {i}: first version {first:?} is not the opening balance"
        );
        for w in h.puts.windows(2) {
            let (prev, cur) = (w[0], w[1]);
            let t = by_ts.get(&cur.start_ts).unwrap_or_else(|| {
                panic!("account {i}: version {cur:?} was written by no recorded transfer")
            });
            let expected = prev.value as i64 + t.effect_on(i);
            assert_eq!(
                cur.value as i64,
                expected,
                "account {i}: lost update: {t:?} wrote {} (committed at {}) over {prev:?}, \
                 which it should have moved by {}",
                cur.value,
                cur.commit_ts,
                t.effect_on(i)
            );
        }
        let expected = INITIAL as i64
            + transfers
                .iter()
                .filter(|t| committed.contains_key(&t.start_ts))
                .map(|t| t.effect_on(i))
                .sum::<i64>();
        let last = h.puts.last().map_or(0, |v| v.value);
        assert_eq!(
            last as i64, expected,
            "account {i}: final balance is not the opening one plus the committed transfers"
        );
        finals.push(last);
    }
    (summary, finals)
}
