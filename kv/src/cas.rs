//! Compare-and-swap of one key: the request ([`Cas`]), its outcome ([`CasOutcome`]) and the one
//! rule that decides it, so that every storage (and the raftstore's apply) compares alike.
//!
//! The comparison is exact: an expected value matches only a present key holding those very
//! bytes (the empty value included), and an expected absence matches only an absent key.

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
    /// The value written when the comparison holds.
    pub value: Vec<u8>,
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
    /// Decides the swap against `current`, what the key holds right now. The caller writes
    /// [`Cas::value`] when the outcome says `succeed`, before any other write of the key.
    pub fn decide(&self, current: Option<Vec<u8>>) -> CasOutcome {
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
}
