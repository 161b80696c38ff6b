//! Compare-and-swap of one key: the request ([`Cas`]), its outcome ([`CasOutcome`]) and the one
//! rule that decides it, so that every storage (and the raftstore's apply) compares alike.
//!
//! The comparison is exact: an expected value matches only a present key holding those very
//! bytes (the empty value included), and an expected absence matches only an absent key. A value
//! whose time to live ended by [`Cas::now_ms`] is absent (see `codec::raw_value`): the clock is
//! the proposer's, carried with the request, so every replica decides alike.

use crate::engine::Cf;

/// Write `value` at `key` in `cf` if the key holds what `expect` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cas {
    /// Column family.
    pub cf: Cf,
    /// User key.
    pub key: Vec<u8>,
    /// What the key must hold for the swap to happen: `None` means "absent".
    pub expect: Option<Vec<u8>>,
    /// The value written when the comparison holds, in its stored form (`codec::raw_value`).
    pub value: Vec<u8>,
    /// When the swap is decided, in ms since the Unix epoch: values expired by then are absent.
    pub now_ms: u64,
}

/// How a compare-and-swap went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CasOutcome {
    /// The comparison held and the new value was written.
    pub succeed: bool,
    /// What the key held when the comparison was made (`None`: absent).
    pub previous: Option<Vec<u8>>,
}

impl Cas {
    /// Decides the swap against `stored`, what the key holds right now as stored. The caller
    /// writes [`Cas::value`] when the outcome says `succeed`, before any other write of the key.
    pub fn decide(&self, stored: Option<Vec<u8>>) -> CasOutcome {
        let current = stored
            .as_deref()
            .and_then(|s| codec::raw_value::live(s, self.now_ms))
            .map(<[u8]>::to_vec);
        CasOutcome {
            succeed: current.as_deref() == self.expect.as_deref(),
            previous: current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cas(expect: Option<&[u8]>) -> Cas {
        Cas {
            cf: Cf::Default,
            key: b"k".to_vec(),
            expect: expect.map(<[u8]>::to_vec),
            value: b"new".to_vec(),
            now_ms: 1_000,
        }
    }

    #[test]
    fn comparison_is_exact_and_absence_is_not_the_empty_value_1() {
        let v = |s: &[u8]| Some(s.to_vec());
        assert!(cas(None).decide(None).succeed);
        assert!(!cas(None).decide(v(b"")).succeed);
        assert!(!cas(Some(b"")).decide(None).succeed);
        assert!(cas(Some(b"")).decide(v(b"")).succeed);
        assert!(cas(Some(b"old")).decide(v(b"old")).succeed);
        let lost = cas(Some(b"old")).decide(v(b"older"));
        assert_eq!(
            lost,
            CasOutcome {
                succeed: false,
                previous: v(b"older")
            }
        );
    }

    /// A value whose time to live ended by the request's clock compares as absent, and one
    /// still alive as its value: whenever a replica applies it, the answer is the same.
    #[test]
    fn an_expired_value_compares_as_absent_1() {
        let stored = |at: u64| Some(codec::raw_value::encode(b"old", Some(at)));
        assert!(cas(None).decide(stored(1_000)).succeed);
        assert_eq!(cas(None).decide(stored(1_000)).previous, None);
        assert!(cas(Some(b"old")).decide(stored(1_001)).succeed);
        assert!(!cas(Some(b"old")).decide(stored(999)).succeed);
    }
}
