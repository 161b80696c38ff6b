//! Tessera's linearizability checker for per-key register histories, shared by the in-process
//! tests (`test_raftstore`) and the chaos harness on real processes (`tessera-chaos`).
//!
//! A history is a list of [`Operation`]s on keys, each with call and return times. An operation
//! is a read, a put, a delete or a compare-and-swap; its output is what the client saw, or
//! `None` when the outcome is unknown (a timeout or a lost connection after the request may have
//! been sent): it may then take effect at any time after its call, or never. Histories are
//! partitioned by key and each key is checked on its own (linearizability is local: the whole
//! history is linearizable iff every key's is).
//!
//! - [`check_history`] / [`check_each_key`]: the check, with a short sub-history as evidence of
//!   a failure ([`Violation`]).
//! - [`to_json`]: the history in porcupine's operation format, for inspection with other tools.
//!
//! The search itself (Wing & Gong with Lowe's just-in-time linearization and memoization of
//! (linearized set, state), as porcupine does) is in `search`; the register's semantics in
//! `model`.

#![deny(missing_docs)]

mod json;
mod model;
mod search;

use std::collections::BTreeMap;
use std::fmt;

pub use json::to_json;

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Read the key.
    Get,
    /// Overwrite the key with the value.
    Put(Vec<u8>),
    /// Remove the key.
    Delete,
    /// Set the key to `new` if its value is `expect` (`None`: the key is absent).
    Cas {
        /// The value the key must hold for the swap to happen.
        expect: Option<Vec<u8>>,
        /// The value it then gets.
        new: Vec<u8>,
    },
}

/// What a client saw.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A read saw this value (`None`: the key was absent).
    Value(Option<Vec<u8>>),
    /// A put or delete was acknowledged.
    Written,
    /// A compare-and-swap answered: whether it swapped, and the value it found.
    Cas {
        /// Whether the key held `expect` and now holds `new`.
        succeeded: bool,
        /// The value the key held when the swap was decided.
        previous: Option<Vec<u8>>,
    },
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued it.
    pub client: usize,
    /// The key.
    pub key: Vec<u8>,
    /// The request.
    pub input: Input,
    /// The answer; `None` when the outcome is unknown.
    pub output: Option<Output>,
    /// When it was called (any monotonic unit).
    pub call: u64,
    /// When it returned; ignored for unknown outcomes (they may take effect until the end).
    pub ret: u64,
}

fn show(v: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(v))
}

fn show_opt(v: &Option<Vec<u8>>) -> String {
    v.as_deref().map_or_else(|| "absent".to_string(), show)
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let input = match &self.input {
            Input::Get => "get".to_string(),
            Input::Put(v) => format!("put {}", show(v)),
            Input::Delete => "delete".to_string(),
            Input::Cas { expect, new } => format!("cas {} -> {}", show_opt(expect), show(new)),
        };
        let output = match &self.output {
            None => "unknown".to_string(),
            Some(Output::Written) => "ok".to_string(),
            Some(Output::Value(v)) => show_opt(v),
            Some(Output::Cas {
                succeeded,
                previous,
            }) => format!(
                "{} (was {})",
                if *succeeded { "swapped" } else { "not swapped" },
                show_opt(previous)
            ),
        };
        let ret = if self.output.is_none() {
            "?".to_string()
        } else {
            self.ret.to_string()
        };
        write!(
            f,
            "client {} [{}, {}] {} -> {}",
            self.client, self.call, ret, input, output
        )
    }
}

/// A history that is not linearizable, with the key's operations as evidence.
#[derive(Debug)]
pub struct Violation {
    /// The key whose history failed.
    pub key: Vec<u8>,
    /// A short sub-history: the operations overlapping the point where every linearization got
    /// stuck, and the last writes completed before it.
    pub ops: Vec<Operation>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "history of key {:?} is not linearizable; offending operations:",
            String::from_utf8_lossy(&self.key)
        )?;
        for op in &self.ops {
            writeln!(f, "  {op}")?;
        }
        Ok(())
    }
}

/// The operations of `history` by key, in key order, each key's in their order in `history`.
pub fn by_key(history: &[Operation]) -> BTreeMap<&[u8], Vec<Operation>> {
    let mut by_key: BTreeMap<&[u8], Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    by_key
}

/// Checks a whole history; returns the first key (in key order) whose history is not
/// linearizable.
pub fn check_history(history: &[Operation]) -> Result<(), Violation> {
    for (key, ops) in by_key(history) {
        check_key(key, &ops)?;
    }
    Ok(())
}

/// Checks every key of a history; returns one violation per key that is not linearizable.
pub fn check_each_key(history: &[Operation]) -> Vec<Violation> {
    by_key(history)
        .into_iter()
        .filter_map(|(key, ops)| check_key(key, &ops).err())
        .collect()
}

/// Checks the operations of one key (all of them on `key`).
pub fn check_key(key: &[u8], ops: &[Operation]) -> Result<(), Violation> {
    if search::linearizable(ops) {
        Ok(())
    } else {
        Err(Violation {
            key: key.to_vec(),
            ops: evidence(ops),
        })
    }
}

/// The history as an observer saw it at time `t`: operations called by then, with the outcome of
/// those still running at `t` unknown.
fn history_at(ops: &[Operation], t: u64) -> Vec<Operation> {
    ops.iter()
        .filter(|o| o.call <= t)
        .map(|o| {
            let mut o = o.clone();
            if o.output.is_some() && o.ret > t {
                o.output = None;
            }
            o
        })
        .collect()
}

/// The value `op` writes (put, cas) or saw (a read, a cas's previous value), if any.
fn value_of(op: &Operation) -> Option<Vec<u8>> {
    match (&op.input, &op.output) {
        (Input::Put(v), _) | (Input::Cas { new: v, .. }, _) => Some(v.clone()),
        (Input::Get, Some(Output::Value(v))) => v.clone(),
        _ => None,
    }
}

/// Whether `op` may change the key.
fn is_write(op: &Operation) -> bool {
    !matches!(op.input, Input::Get)
}

/// A short explanation of a failure. If the history seen at time `t` is not linearizable, no
/// later one is (a linearization of the later history restricts to one of the earlier), so a
/// binary search finds the first return after which no linearization exists. The evidence is
/// that operation, the operations running alongside it, the last three writes completed before
/// it started, and every operation since the first of those (the reads among them pin down the
/// order).
fn evidence(ops: &[Operation]) -> Vec<Operation> {
    let mut rets: Vec<u64> = ops
        .iter()
        .filter(|o| o.output.is_some())
        .map(|o| o.ret)
        .collect();
    rets.sort_unstable();
    rets.dedup();
    let (mut lo, mut hi) = (0usize, rets.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if search::linearizable(&history_at(ops, rets[mid])) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let Some(&t) = rets.get(lo) else {
        return ops.to_vec();
    };
    let Some(culprit) = ops.iter().find(|o| o.output.is_some() && o.ret == t) else {
        return ops.to_vec();
    };
    let mut before: Vec<&Operation> = ops
        .iter()
        .filter(|o| is_write(o) && o.output.is_some() && o.ret < culprit.call)
        .collect();
    before.sort_by_key(|o| o.ret);
    before.reverse();
    before.truncate(3);
    // Everything from the first of those writes on: the reads in between pin down the order.
    let from = before
        .iter()
        .map(|o| o.call)
        .min()
        .unwrap_or(culprit.call)
        .min(culprit.call);
    let mut out: Vec<Operation> = ops
        .iter()
        .filter(|o| o.call <= t && (o.output.is_none() || o.ret >= from))
        .cloned()
        .collect();
    // And every earlier operation that wrote or saw a value these write or see: a value seen
    // both before and after an overwrite shows up this way.
    let values: Vec<Vec<u8>> = out.iter().filter_map(value_of).collect();
    out.extend(
        ops.iter()
            .filter(|o| o.call <= t && value_of(o).is_some_and(|v| values.contains(&v)))
            .cloned(),
    );
    out.sort_by_key(|o| (o.call, o.client, o.ret));
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
