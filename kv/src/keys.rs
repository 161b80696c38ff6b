//! Key layout of the two engines.
//!
//! Local (store-private) keys start with `0x01`; user data keys start with `z`, so no user key can
//! ever collide with metadata, whatever bytes it holds.
//!
//! ```text
//! raft engine  0x01 0x02 region_id 0x01 index    raft log entry (eraftpb::Entry)
//!              0x01 0x02 region_id 0x02          RaftLocalState
//! kv engine    0x01 0x01                         prepare-bootstrap region
//!              0x01 0x02                         StoreIdent
//!              0x01 0x02 region_id 0x03          RaftApplyState
//!              0x01 0x03 region_id 0x01          RegionLocalState
//!              'z' user_key                      user data (CFs default, lock, write)
//! ```
//! Region ids and log indexes are big-endian so keys sort by them.

/// First byte of every local key.
pub const LOCAL_PREFIX: u8 = 0x01;
/// Second byte of per-region raft keys.
pub const REGION_RAFT_PREFIX: u8 = 0x02;
/// Second byte of per-region metadata keys.
pub const REGION_META_PREFIX: u8 = 0x03;
/// Suffix of raft log keys.
pub const RAFT_LOG_SUFFIX: u8 = 0x01;
/// Suffix of the raft state key.
pub const RAFT_STATE_SUFFIX: u8 = 0x02;
/// Suffix of the apply state key.
pub const APPLY_STATE_SUFFIX: u8 = 0x03;
/// Suffix of the region state key.
pub const REGION_STATE_SUFFIX: u8 = 0x01;

/// Where the store records its identity.
pub const STORE_IDENT_KEY: &[u8] = &[LOCAL_PREFIX, 0x02];
/// Where a store keeps the first region between preparing and finishing bootstrap.
pub const PREPARE_BOOTSTRAP_KEY: &[u8] = &[LOCAL_PREFIX, 0x01];
/// All region metadata keys lie in `[REGION_META_MIN_KEY, REGION_META_MAX_KEY)`.
pub const REGION_META_MIN_KEY: &[u8] = &[LOCAL_PREFIX, REGION_META_PREFIX];
/// See [`REGION_META_MIN_KEY`].
pub const REGION_META_MAX_KEY: &[u8] = &[LOCAL_PREFIX, REGION_META_PREFIX + 1];

/// First byte of every user data key.
pub const DATA_PREFIX: u8 = b'z';
/// All user data keys lie in `[DATA_MIN_KEY, DATA_MAX_KEY)`.
pub const DATA_MIN_KEY: &[u8] = &[DATA_PREFIX];
/// See [`DATA_MIN_KEY`].
pub const DATA_MAX_KEY: &[u8] = &[DATA_PREFIX + 1];

/// The engine key of user key `key`.
pub fn data_key(key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 1);
    v.push(DATA_PREFIX);
    v.extend_from_slice(key);
    v
}

/// The engine key that ends a region whose end key is `end_key` (empty means unbounded).
pub fn data_end_key(end_key: &[u8]) -> Vec<u8> {
    if end_key.is_empty() {
        DATA_MAX_KEY.to_vec()
    } else {
        data_key(end_key)
    }
}

/// The user key of engine key `key`.
///
/// # Panics
/// If `key` is not a data key: that is a broken invariant of the caller.
pub fn origin_key(key: &[u8]) -> &[u8] {
    assert!(
        key.first() == Some(&DATA_PREFIX),
        "{key:?} is not a data key"
    );
    &key[1..]
}

fn region_key(prefix: u8, region_id: u64, suffix: u8, extra: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(11 + extra);
    v.push(LOCAL_PREFIX);
    v.push(prefix);
    v.extend_from_slice(&region_id.to_be_bytes());
    v.push(suffix);
    v
}

/// Key of the raft log entry at `index` of region `region_id`.
pub fn raft_log_key(region_id: u64, index: u64) -> Vec<u8> {
    let mut v = region_key(REGION_RAFT_PREFIX, region_id, RAFT_LOG_SUFFIX, 8);
    v.extend_from_slice(&index.to_be_bytes());
    v
}

/// The prefix shared by all raft log keys of region `region_id`.
pub fn raft_log_prefix(region_id: u64) -> Vec<u8> {
    region_key(REGION_RAFT_PREFIX, region_id, RAFT_LOG_SUFFIX, 0)
}

/// The log index of a raft log key of region `region_id`, if `key` is one.
pub fn raft_log_index(region_id: u64, key: &[u8]) -> Option<u64> {
    let prefix = raft_log_prefix(region_id);
    let rest = key.strip_prefix(prefix.as_slice())?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

/// Key of region `region_id`'s `RaftLocalState` (raft engine).
pub fn raft_state_key(region_id: u64) -> Vec<u8> {
    region_key(REGION_RAFT_PREFIX, region_id, RAFT_STATE_SUFFIX, 0)
}

/// Key of region `region_id`'s `RaftApplyState` (kv engine).
pub fn apply_state_key(region_id: u64) -> Vec<u8> {
    region_key(REGION_RAFT_PREFIX, region_id, APPLY_STATE_SUFFIX, 0)
}

/// Key of region `region_id`'s `RegionLocalState` (kv engine).
pub fn region_state_key(region_id: u64) -> Vec<u8> {
    region_key(REGION_META_PREFIX, region_id, REGION_STATE_SUFFIX, 0)
}

/// The region id of a region state key, if `key` is one.
pub fn region_id_of_state_key(key: &[u8]) -> Option<u64> {
    if key.len() != 11 || !key.starts_with(REGION_META_MIN_KEY) || key[10] != REGION_STATE_SUFFIX {
        return None;
    }
    Some(u64::from_be_bytes(key[2..10].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_log_keys_sort_by_region_then_index_1() {
        let mut keys = vec![
            raft_log_key(2, 1),
            raft_log_key(1, 256),
            raft_log_key(1, 5),
            raft_state_key(1),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                raft_log_key(1, 5),
                raft_log_key(1, 256),
                raft_state_key(1),
                raft_log_key(2, 1)
            ]
        );
        assert_eq!(raft_log_index(1, &raft_log_key(1, 256)), Some(256));
        assert_eq!(raft_log_index(2, &raft_log_key(1, 256)), None);
        assert_eq!(raft_log_index(1, &raft_state_key(1)), None);
    }

    #[test]
    fn data_keys_never_meet_local_keys_1() {
        // Whatever a user writes, its engine key sorts after every local key.
        for user in [&b""[..], &[0x01, 0x02], &[0xff; 4]] {
            let k = data_key(user);
            assert!(k.as_slice() >= DATA_MIN_KEY && k.as_slice() < DATA_MAX_KEY);
            assert!(k.as_slice() > region_state_key(u64::MAX).as_slice());
            assert_eq!(origin_key(&k), user);
        }
        assert_eq!(data_end_key(b""), DATA_MAX_KEY);
        assert_eq!(data_end_key(b"k"), b"zk");
    }

    #[test]
    fn region_state_keys_round_trip_1() {
        let k = region_state_key(42);
        assert!(k.as_slice() >= REGION_META_MIN_KEY && k.as_slice() < REGION_META_MAX_KEY);
        assert_eq!(region_id_of_state_key(&k), Some(42));
        assert_eq!(region_id_of_state_key(&apply_state_key(42)), None);
    }
}
