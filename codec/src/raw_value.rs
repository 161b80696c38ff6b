//! How the raw API stores a value, so a key can carry a time to live.
//!
//! ```text
//! plain value            value                                    (as given)
//! value with a TTL       value ++ expire_at_ms (u64, big-endian) ++ TTL_MAGIC (8 bytes)
//! ```
//!
//! A value stored before TTLs existed reads as it always did. So that no plain value can pass
//! for one with a TTL, a plain value that happens to end with [`TTL_MAGIC`] is stored in the
//! second form with an expiry of "never" ([`NEVER`]), and reads back as given.
//!
//! The expiry is a wall-clock time in milliseconds since the Unix epoch, fixed when the write
//! is made (by the store that takes the request), so every replica stores the same bytes; a
//! reader compares it with its own clock ([`live`]), and an expired value reads as absent.

/// The last 8 bytes of a value stored with an expiry.
pub const TTL_MAGIC: [u8; 8] = *b"\xf3TsTTL\x01\x9c";

/// The expiry of a value that never expires.
pub const NEVER: u64 = u64::MAX;

/// Bytes a stored value with an expiry carries beyond the value.
pub const TTL_SUFFIX: usize = 8 + TTL_MAGIC.len();

/// The stored form of `value`, expiring at `expire_at_ms` (`None`: never).
pub fn encode(value: &[u8], expire_at_ms: Option<u64>) -> Vec<u8> {
    encode_vec(value.to_vec(), expire_at_ms)
}

/// [`encode`] in place: a plain value (the common case) is returned as it is, not copied.
pub fn encode_vec(mut value: Vec<u8>, expire_at_ms: Option<u64>) -> Vec<u8> {
    let expire = match expire_at_ms {
        Some(at) => at,
        None if value.ends_with(&TTL_MAGIC) => NEVER,
        None => return value,
    };
    value.reserve_exact(TTL_SUFFIX);
    value.extend_from_slice(&expire.to_be_bytes());
    value.extend_from_slice(&TTL_MAGIC);
    value
}

/// The value `stored` holds and its expiry (`None`: never).
pub fn decode(stored: &[u8]) -> (&[u8], Option<u64>) {
    if stored.len() < TTL_SUFFIX || !stored.ends_with(&TTL_MAGIC) {
        return (stored, None);
    }
    let (value, suffix) = stored.split_at(stored.len() - TTL_SUFFIX);
    let mut at = [0u8; 8];
    at.copy_from_slice(&suffix[..8]);
    let at = u64::from_be_bytes(at);
    (value, (at != NEVER).then_some(at))
}

/// The value `stored` holds, if it has not expired at `now_ms`.
pub fn live(stored: &[u8], now_ms: u64) -> Option<&[u8]> {
    match decode(stored) {
        (_, Some(at)) if at <= now_ms => None,
        (value, _) => Some(value),
    }
}

/// The milliseconds `stored` has left to live at `now_ms` (`Some(None)`: no expiry; `None`: it
/// has expired).
pub fn remaining_ms(stored: &[u8], now_ms: u64) -> Option<Option<u64>> {
    match decode(stored).1 {
        None => Some(None),
        Some(at) if at <= now_ms => None,
        Some(at) => Some(Some(at - now_ms)),
    }
}

/// The wall clock in milliseconds since the Unix epoch (0 before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_are_stored_as_given_1() {
        assert_eq!(encode(b"v", None), b"v");
        assert_eq!(encode(b"", None), b"");
        assert_eq!(decode(b"v"), (&b"v"[..], None));
        assert_eq!(live(b"v", u64::MAX), Some(&b"v"[..]));
    }

    #[test]
    fn a_value_with_a_ttl_lives_until_its_expiry_1() {
        let stored = encode(b"v", Some(1_000));
        assert_eq!(stored.len(), 1 + TTL_SUFFIX);
        assert_eq!(decode(&stored), (&b"v"[..], Some(1_000)));
        assert_eq!(live(&stored, 999), Some(&b"v"[..]));
        assert_eq!(live(&stored, 1_000), None);
        assert_eq!(remaining_ms(&stored, 400), Some(Some(600)));
        assert_eq!(remaining_ms(&stored, 1_000), None);
        assert_eq!(remaining_ms(b"v", 1_000), Some(None));
    }

    /// Whatever bytes a plain value holds (its tail shaped like a TTL suffix included), it reads
    /// back as given and never expires.
    #[test]
    fn no_plain_value_passes_for_one_with_a_ttl_1() {
        let mut forged = b"v".to_vec();
        forged.extend_from_slice(&0u64.to_be_bytes());
        forged.extend_from_slice(&TTL_MAGIC);
        for value in [forged.clone(), TTL_MAGIC.to_vec(), encode(b"x", Some(5))] {
            let stored = encode(&value, None);
            assert_eq!(decode(&stored), (value.as_slice(), None));
            assert_eq!(live(&stored, u64::MAX - 1), Some(value.as_slice()));
        }
        // And a value with a TTL may itself end with the magic.
        let stored = encode(&forged, Some(7));
        assert_eq!(decode(&stored), (forged.as_slice(), Some(7)));
    }
}
