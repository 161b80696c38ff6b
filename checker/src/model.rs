//! The register a key is: its state is its value (`None`: absent), and [`step`] says which
//! states an operation may leave it in.
//!
//! ```text
//! op                       output                         from state s      next states
//! get                      value v                        v == s            [s]
//! put v / delete           ok                             any               [v] / [absent]
//! put v / delete           unknown                        any               [v, s] / [absent, s]
//! cas expect -> new        swapped, previous p            s == expect == p  [new]
//! cas expect -> new        not swapped, previous p        s != expect, p==s [s]
//! cas expect -> new        unknown                        s == expect       [new, s]
//!                                                         s != expect       [s]
//! get                      unknown                        any               [s]
//! ```
//! An unknown outcome took effect or never did: both states are possible next.

use crate::{Input, Operation, Output};

/// The value of a key; `None` while it is absent.
pub(crate) type State = Option<Vec<u8>>;

/// The register's possible next states after `op` from `state` (empty: `op` cannot go next).
pub(crate) fn step(state: &State, op: &Operation) -> Vec<State> {
    match (&op.input, &op.output) {
        (Input::Get, Some(Output::Value(v))) => {
            if v == state {
                vec![state.clone()]
            } else {
                vec![]
            }
        }
        (Input::Get, None) => vec![state.clone()],
        (Input::Put(v), Some(Output::Written)) => vec![Some(v.clone())],
        (Input::Put(v), None) => vec![Some(v.clone()), state.clone()],
        (Input::Delete, Some(Output::Written)) => vec![None],
        (Input::Delete, None) => vec![None, state.clone()],
        (
            Input::Cas { expect, new },
            Some(Output::Cas {
                succeeded,
                previous,
            }),
        ) => {
            if previous != state || (state == expect) != *succeeded {
                vec![]
            } else if *succeeded {
                vec![Some(new.clone())]
            } else {
                vec![state.clone()]
            }
        }
        (Input::Cas { expect, new }, None) => {
            if state == expect {
                vec![Some(new.clone()), state.clone()]
            } else {
                vec![state.clone()]
            }
        }
        // An output that does not answer the input (a read that says "written"): never valid.
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(input: Input, output: Option<Output>) -> Operation {
        Operation {
            client: 0,
            key: b"k".to_vec(),
            input,
            output,
            call: 0,
            ret: 1,
        }
    }

    fn v(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    fn cas(expect: Option<&str>, new: &str) -> Input {
        Input::Cas {
            expect: expect.map(|e| e.as_bytes().to_vec()),
            new: new.as_bytes().to_vec(),
        }
    }

    fn swapped(ok: bool, previous: Option<&str>) -> Option<Output> {
        Some(Output::Cas {
            succeeded: ok,
            previous: previous.map(|p| p.as_bytes().to_vec()),
        })
    }

    #[test]
    fn delete_makes_the_key_absent_2b() {
        assert_eq!(
            step(&v("a"), &op(Input::Delete, Some(Output::Written))),
            [None]
        );
        assert_eq!(step(&v("a"), &op(Input::Delete, None)), [None, v("a")]);
    }

    #[test]
    fn cas_swaps_only_on_the_expected_value_2b() {
        // Swapped: the key held what was expected, and the answer says so.
        assert_eq!(
            step(&v("a"), &op(cas(Some("a"), "b"), swapped(true, Some("a")))),
            [v("b")]
        );
        assert_eq!(
            step(&None, &op(cas(None, "b"), swapped(true, None))),
            [v("b")]
        );
        // A swap from a state that did not hold `expect` cannot have happened.
        assert!(step(&v("x"), &op(cas(Some("a"), "b"), swapped(true, Some("a")))).is_empty());
        // Not swapped: the key held something else, and the answer names it.
        assert_eq!(
            step(&v("x"), &op(cas(Some("a"), "b"), swapped(false, Some("x")))),
            [v("x")]
        );
        assert!(step(&v("a"), &op(cas(Some("a"), "b"), swapped(false, Some("a")))).is_empty());
        assert!(step(&v("x"), &op(cas(Some("a"), "b"), swapped(false, Some("y")))).is_empty());
        // Unknown: swapped or not where it could swap; nothing where it could not.
        assert_eq!(
            step(&v("a"), &op(cas(Some("a"), "b"), None)),
            [v("b"), v("a")]
        );
        assert_eq!(step(&v("x"), &op(cas(Some("a"), "b"), None)), [v("x")]);
    }

    #[test]
    fn mismatched_outputs_never_fit_2b() {
        assert!(step(&None, &op(Input::Get, Some(Output::Written))).is_empty());
        assert!(step(
            &None,
            &op(Input::Put(b"a".to_vec()), Some(Output::Value(None)))
        )
        .is_empty());
        assert!(step(&None, &op(cas(None, "a"), Some(Output::Written))).is_empty());
    }
}
