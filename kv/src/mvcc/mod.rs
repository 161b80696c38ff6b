//! Multi-version concurrency control: how transactional data is laid out in the three CFs.
//!
//! ```text
//! CF       key                         value
//! default  encode(key) !start_ts       the value written by the transaction started at start_ts
//! write    encode(key) !commit_ts      Write { kind: Put|Delete|Rollback|Lock, start_ts }
//! lock     encoded key                 Lock { primary, kind, start_ts, ttl }
//! ```
//! `encode` is a memcomparable, prefix-free encoding and `!ts` the inverted big-endian timestamp
//! (see [`key`], from the `codec` crate with the records), so each user key's versions are
//! contiguous and newest first. A rollback record
//! sits in the write CF at `key@start_ts`, where no commit of that transaction can ever land.
//!
//! [`MvccTxn`] reads these records from a snapshot and buffers a command's writes;
//! [`Scanner`] lists the values visible at a timestamp; [`gc`] plans what a GC at a safe point
//! removes.

pub mod gc;
mod scanner;
mod txn;

pub use codec::key;
pub use codec::record::{Lock, LockKind, Write, WriteKind};
pub use scanner::{ScanEntry, Scanner};
pub use txn::{decode_lock_key, get_lock, get_value, user_key_of, MvccTxn};
