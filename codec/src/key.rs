//! MVCC key encoding: a memcomparable encoding of the user key followed by the inverted timestamp.
//!
//! ```text
//! encoded key = full_group* final_group ts_inv
//! full_group  = 8 key bytes, marker 0xFF                   (more key bytes follow)
//! final_group = the last 0..=7 key bytes, zero padding up to 8 bytes, marker 0xFF - padding
//! ts_inv      = !ts, 8 bytes big-endian
//! ```
//!
//! Why groups and not the raw key: the raw key followed by a timestamp would let `"a" @ ts` sort
//! against `"a\x00..."` by the timestamp bytes, interleaving the versions of two keys that are
//! prefixes of each other. The group encoding is order-preserving and prefix-free (no encoded key
//! is a prefix of another one), so everything appended after it sorts *within* one user key.
//! Inverting the timestamp makes the newest version of a key come first, so "the latest version
//! at or before `ts`" is a single seek to `encode_key(key, ts)`.

use crate::{Error, Result};

const GROUP: usize = 8;
const MARKER_FULL: u8 = 0xFF;
const TS_LEN: usize = 8;

fn corrupt(reason: impl Into<String>) -> Error {
    Error::Corrupt {
        what: "mvcc key",
        reason: reason.into(),
    }
}

/// Appends the memcomparable encoding of `key` to `out`.
pub fn encode_bytes_into(key: &[u8], out: &mut Vec<u8>) {
    out.reserve((key.len() / GROUP + 1) * (GROUP + 1));
    let mut chunks = key.chunks_exact(GROUP);
    for chunk in &mut chunks {
        out.extend_from_slice(chunk);
        out.push(MARKER_FULL);
    }
    // The final group is always present, even when empty, so that the encoding of a key ends with
    // a marker below 0xFF: that is what keeps the encoding prefix-free.
    let rest = chunks.remainder();
    let pad = GROUP - rest.len();
    out.extend_from_slice(rest);
    out.extend(std::iter::repeat_n(0u8, pad));
    out.push(MARKER_FULL - pad as u8);
}

/// The memcomparable encoding of `key` alone: a prefix of every version key of `key`, and
/// ordered before all of them.
pub fn encode_bytes(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_bytes_into(key, &mut out);
    out
}

/// Decodes a memcomparable-encoded key at the start of `data`; returns it and the bytes after it.
pub fn decode_bytes(data: &[u8]) -> Result<(Vec<u8>, &[u8])> {
    let mut key = Vec::with_capacity(data.len());
    let mut rest = data;
    loop {
        if rest.len() < GROUP + 1 {
            return Err(corrupt(format!("truncated group in {data:?}")));
        }
        let (group, tail) = rest.split_at(GROUP);
        let marker = tail[0];
        rest = &tail[1..];
        if marker == MARKER_FULL {
            key.extend_from_slice(group);
            continue;
        }
        let pad = usize::from(MARKER_FULL - marker);
        if pad > GROUP {
            return Err(corrupt(format!("bad group marker {marker:#x}")));
        }
        let (bytes, padding) = group.split_at(GROUP - pad);
        if padding.iter().any(|b| *b != 0) {
            return Err(corrupt("non-zero padding"));
        }
        key.extend_from_slice(bytes);
        return Ok((key, rest));
    }
}

/// The key of version `ts` of user key `key`, as stored in the `default` and `write` CFs.
pub fn encode_key(key: &[u8], ts: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_bytes_into(key, &mut out);
    append_ts(&mut out, ts);
    out
}

/// Appends the inverted timestamp to an already encoded user key.
pub fn append_ts(encoded: &mut Vec<u8>, ts: u64) {
    encoded.extend_from_slice(&(!ts).to_be_bytes());
}

/// Splits an encoded version key into the user key and the timestamp.
pub fn decode_key(encoded: &[u8]) -> Result<(Vec<u8>, u64)> {
    let (key, rest) = decode_bytes(encoded)?;
    let ts = decode_ts_suffix(rest)?;
    Ok((key, ts))
}

/// The timestamp of an encoded version key, without decoding the user key.
pub fn decode_ts(encoded: &[u8]) -> Result<u64> {
    if encoded.len() < TS_LEN {
        return Err(corrupt("key shorter than a timestamp"));
    }
    decode_ts_suffix(&encoded[encoded.len() - TS_LEN..])
}

fn decode_ts_suffix(rest: &[u8]) -> Result<u64> {
    let bytes: [u8; TS_LEN] = rest
        .try_into()
        .map_err(|_| corrupt(format!("{} bytes after the user key, want 8", rest.len())))?;
    Ok(!u64::from_be_bytes(bytes))
}

/// Whether `encoded` is a version key of the user key whose memcomparable encoding is `prefix`.
///
/// Exact thanks to the prefix-free encoding: no other user key's encoding starts with `prefix`.
pub fn is_version_of(encoded: &[u8], prefix: &[u8]) -> bool {
    encoded.len() == prefix.len() + TS_LEN && encoded.starts_with(prefix)
}

/// A seek key that lands on the first version of the user key after the one encoded as `prefix`:
/// it is greater than every version key of that user key (the largest inverted timestamp is all
/// 0xFF, and this adds one more byte) and smaller than any later user key's encoding.
pub fn seek_past_versions(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + TS_LEN + 1);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&[0xFF; TS_LEN]);
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\x00".to_vec(),
            b"\x00\x00".to_vec(),
            b"a".to_vec(),
            b"a\x00".to_vec(),
            b"a\x00\x00\x00\x00\x00\x00\x00".to_vec(),
            b"a\x00\x00\x00\x00\x00\x00\x00\x00".to_vec(),
            b"ab".to_vec(),
            b"abcdefg".to_vec(),
            b"abcdefgh".to_vec(),
            b"abcdefghi".to_vec(),
            b"abcdefgh\xff".to_vec(),
            b"b".to_vec(),
            vec![0xFF; 8],
            vec![0xFF; 9],
            vec![0xFF; 17],
        ];
        keys.sort();
        keys
    }

    #[test]
    fn bytes_roundtrip_and_order_4a() {
        let keys = samples();
        for k in &keys {
            let enc = encode_bytes(k);
            assert_eq!(enc.len() % (GROUP + 1), 0);
            let (dec, rest) = decode_bytes(&enc).unwrap();
            assert_eq!(&dec, k);
            assert!(rest.is_empty());
        }
        for pair in keys.windows(2) {
            assert!(encode_bytes(&pair[0]) < encode_bytes(&pair[1]), "{pair:?}");
        }
    }

    #[test]
    fn encoding_is_prefix_free_4a() {
        let keys = samples();
        for a in &keys {
            for b in &keys {
                if a != b {
                    assert!(
                        !encode_bytes(b).starts_with(&encode_bytes(a)),
                        "{a:?} {b:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn versions_sort_by_key_then_newest_first_4a() {
        let keys = samples();
        let mut encoded = Vec::new();
        for k in &keys {
            for ts in [0, 1, 5, 1 << 40, u64::MAX] {
                encoded.push((encode_key(k, ts), k.clone(), ts));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut expected = encoded;
        expected.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)));
        assert_eq!(sorted, expected);
        for (enc, k, ts) in &sorted {
            assert_eq!(decode_key(enc).unwrap(), (k.clone(), *ts));
            assert_eq!(decode_ts(enc).unwrap(), *ts);
            assert!(is_version_of(enc, &encode_bytes(k)));
        }
    }

    #[test]
    fn prefix_keys_do_not_interleave_4a() {
        // "a"'s oldest version still sorts before "a\0"'s newest version.
        assert!(encode_key(b"a", 0) < encode_key(b"a\x00", u64::MAX));
        assert!(!is_version_of(
            &encode_key(b"a\x00", 3),
            &encode_bytes(b"a")
        ));
        assert!(!is_version_of(
            &encode_key(b"a", 3),
            &encode_bytes(b"a\x00")
        ));
        let seek = seek_past_versions(&encode_bytes(b"a"));
        assert!(seek > encode_key(b"a", 0));
        assert!(seek < encode_key(b"a\x00", u64::MAX));
        assert!(seek < encode_key(b"ab", u64::MAX));
    }

    #[test]
    fn corrupt_keys_are_errors_4a() {
        assert!(decode_bytes(b"").is_err());
        assert!(decode_bytes(b"abc").is_err());
        // A marker claiming more than 8 bytes of padding.
        assert!(decode_bytes(b"\x00\x00\x00\x00\x00\x00\x00\x00\x01").is_err());
        // Padding that is not zero.
        assert!(decode_bytes(b"a\x01\x00\x00\x00\x00\x00\x00\xf8").is_err());
        // Missing timestamp, or a timestamp of the wrong length.
        assert!(decode_key(&encode_bytes(b"k")).is_err());
        let mut long = encode_key(b"k", 7);
        long.push(0);
        assert!(decode_key(&long).is_err());
        assert!(decode_ts(b"short").is_err());
    }
}
