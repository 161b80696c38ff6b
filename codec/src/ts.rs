//! The timestamp layout shared by the scheduler's oracle, the transaction layer and clients:
//!
//! ```text
//! ts = physical_ms << LOGICAL_BITS | logical      physical: wall-clock ms, logical: 18 bits
//! ```
//! so timestamps of later milliseconds are larger whatever their logical parts.

/// Bits of a timestamp that hold the logical counter.
pub const LOGICAL_BITS: u32 = 18;

/// Logical values per millisecond: a logical part is below this.
pub const MAX_LOGICAL: u64 = 1 << LOGICAL_BITS;

/// A timestamp made of `physical_ms` milliseconds and a logical counter (its low 18 bits).
pub fn compose_ts(physical_ms: u64, logical: u64) -> u64 {
    (physical_ms << LOGICAL_BITS) | (logical & (MAX_LOGICAL - 1))
}

/// Splits a timestamp into its physical (ms) and logical parts.
pub fn split_ts(ts: u64) -> (u64, u64) {
    (ts >> LOGICAL_BITS, ts & (MAX_LOGICAL - 1))
}

/// The physical part of a timestamp, in milliseconds.
pub fn physical_ms(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_split_into_physical_and_logical_4a() {
        let ts = compose_ts(1_700_000_000_000, 42);
        assert_eq!(physical_ms(ts), 1_700_000_000_000);
        assert_eq!(split_ts(ts), (1_700_000_000_000, 42));
        assert!(compose_ts(10, 0) > compose_ts(9, MAX_LOGICAL - 1));
        // A logical part past its bits does not spill into the physical part.
        assert_eq!(physical_ms(compose_ts(10, MAX_LOGICAL)), 10);
    }
}
