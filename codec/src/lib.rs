//! Tessera's shared encodings, with no storage engine behind them, so the store (`kv`), the
//! scheduler and clients agree on one copy:
//!
//! - [`ts`]: the timestamp layout, `physical_ms << 18 | logical`;
//! - [`key`]: the memcomparable, prefix-free encoding of user keys and MVCC version keys;
//! - [`record`]: the values of the `lock` and `write` column families;
//! - [`range`]: what a raw scan reads ([`ScanRange`]);
//! - [`raw_value`]: how the raw API stores a value, with its time to live.
//!
//! Decoding never panics: stored bytes are input, and a bad encoding is [`Error::Corrupt`].

#![deny(missing_docs)]

pub mod key;
pub mod range;
pub mod raw_value;
pub mod record;
pub mod ts;

pub use range::ScanRange;
pub use record::{Lock, LockKind, Write, WriteKind};

/// A decoding error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bytes that are not a valid encoding of `what`.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// What was being decoded.
        what: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}

/// A result of this crate.
pub type Result<T> = std::result::Result<T, Error>;
