//! A linearizability checker for per-key register histories (Wing & Gong's search with Lowe's
//! just-in-time linearization and memoization of (linearized set, state), as porcupine does).
//!
//! A history is a list of [`Operation`]s with call and return times. An operation whose outcome
//! is unknown (the client timed out) has no output: it may take effect at any time after its call,
//! or never. Histories are partitioned by key, each checked independently (a register per key is
//! a local property: the whole history is linearizable iff every key's is).
//!
//! ```text
//! events sorted by time:  call(a) call(b) ret(a) call(c) ret(b) ret(c)
//! search: take the first call whose op can be applied to the state next; lift its call and
//!         return out of the list; on meeting a return whose op is not linearized yet, backtrack.
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Read the key.
    Get,
    /// Overwrite the key with the value.
    Put(Vec<u8>),
}

/// What a client saw.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A read saw this value (`None`: the key was absent).
    Value(Option<Vec<u8>>),
    /// A write was acknowledged.
    Written,
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

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let input = match &self.input {
            Input::Get => "get".to_string(),
            Input::Put(v) => format!("put {:?}", show(v)),
        };
        let output = match &self.output {
            None => "unknown".to_string(),
            Some(Output::Written) => "ok".to_string(),
            Some(Output::Value(None)) => "absent".to_string(),
            Some(Output::Value(Some(v))) => format!("{:?}", show(v)),
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
    /// stuck.
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

type State = Option<Vec<u8>>;

/// The register's possible next states after `op` from `state` (empty: `op` cannot go next).
fn step(state: &State, op: &Operation) -> Vec<State> {
    match (&op.input, &op.output) {
        (Input::Get, Some(Output::Value(v))) => {
            if v == state {
                vec![state.clone()]
            } else {
                vec![]
            }
        }
        (Input::Get, _) => vec![state.clone()],
        (Input::Put(v), Some(Output::Written)) => vec![Some(v.clone())],
        // Unknown outcome: it took effect, or it never did.
        (Input::Put(v), None) => vec![Some(v.clone()), state.clone()],
        (Input::Put(_), Some(Output::Value(_))) => vec![],
    }
}

/// Checks a whole history; returns the first key whose history is not linearizable.
pub fn check_history(history: &[Operation]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&[u8], Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    for (key, ops) in by_key {
        check_key(&ops).map_err(|ops| Violation {
            key: key.to_vec(),
            ops,
        })?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Event {
    Call(usize),
    Return(usize),
}

/// Checks one key's operations; on failure returns the evidence.
fn check_key(ops: &[Operation]) -> Result<(), Vec<Operation>> {
    if linearizable(ops) {
        Ok(())
    } else {
        Err(evidence(ops))
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

/// A short explanation of a failure. If the history seen at time `t` is not linearizable, no
/// later one is (a linearization of the later history restricts to one of the earlier), so a
/// binary search finds the first return after which no linearization exists. The evidence is
/// that operation, the operations running alongside it, and the last writes completed before
/// it started.
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
        if linearizable(&history_at(ops, rets[mid])) {
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
    let mut out: Vec<Operation> = ops
        .iter()
        .filter(|o| o.call <= t && (o.output.is_none() || o.ret >= culprit.call))
        .cloned()
        .collect();
    let mut before: Vec<&Operation> = ops
        .iter()
        .filter(|o| matches!(o.input, Input::Put(_)) && o.output.is_some() && o.ret < culprit.call)
        .collect();
    before.sort_by_key(|o| o.ret);
    out.extend(before.into_iter().rev().take(3).cloned());
    out.sort_by_key(|o| o.call);
    out.dedup();
    out
}

/// Whether one key's operations have a linearization.
fn linearizable(ops: &[Operation]) -> bool {
    let n = ops.len();
    if n == 0 {
        return true;
    }
    let end = ops.iter().map(|o| o.ret.max(o.call)).max().unwrap_or(0) + 1;
    let ret_of = |o: &Operation| if o.output.is_none() { end } else { o.ret };
    let mut events: Vec<(u64, u8, Event)> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate() {
        // At equal times calls sort first: touching operations count as concurrent.
        events.push((o.call, 0, Event::Call(i)));
        events.push((ret_of(o), 1, Event::Return(i)));
    }
    events.sort_by_key(|e| (e.0, e.1));
    let events: Vec<Event> = events.into_iter().map(|e| e.2).collect();
    // A doubly linked list over event slots 1..=2n; slot 0 is the head.
    let len = events.len();
    let mut next: Vec<usize> = (1..=len + 1).collect();
    let mut prev: Vec<usize> = (0..=len).map(|i| i.saturating_sub(1)).collect();
    let nil = len + 1;
    let mut ret_slot = vec![0usize; n];
    for (s, e) in events.iter().enumerate() {
        if let Event::Return(i) = e {
            ret_slot[*i] = s + 1;
        }
    }
    let slot_event = |s: usize| events[s - 1];
    let unlink = |s: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, q) = (prev[s], next[s]);
        next[p] = q;
        if q != nil {
            prev[q] = p;
        }
    };
    let relink = |s: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, q) = (prev[s], next[s]);
        next[p] = s;
        if q != nil {
            prev[q] = s;
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State, usize)> = Vec::new();
    let mut state: State = None;
    let mut cur = next[0];
    let mut start_alt = 0;
    while next[0] != nil {
        if cur == nil {
            // Cannot happen: the list always ends with a return, which stops the scan.
            break;
        }
        match slot_event(cur) {
            Event::Call(i) => {
                let mut found = None;
                for (k, ns) in step(&state, &ops[i])
                    .into_iter()
                    .enumerate()
                    .skip(start_alt)
                {
                    let mut bits = linearized.clone();
                    bits[i / 64] |= 1 << (i % 64);
                    if cache.insert((bits, ns.clone())) {
                        found = Some((k, ns));
                        break;
                    }
                }
                start_alt = 0;
                match found {
                    Some((k, ns)) => {
                        stack.push((cur, std::mem::replace(&mut state, ns), k));
                        linearized[i / 64] |= 1 << (i % 64);
                        unlink(cur, &mut next, &mut prev);
                        unlink(ret_slot[i], &mut next, &mut prev);
                        cur = next[0];
                    }
                    None => cur = next[cur],
                }
            }
            Event::Return(_) => {
                let Some((c, s, k)) = stack.pop() else {
                    return false;
                };
                let Event::Call(i) = slot_event(c) else {
                    unreachable!("only calls are pushed")
                };
                relink(ret_slot[i], &mut next, &mut prev);
                relink(c, &mut next, &mut prev);
                linearized[i / 64] &= !(1 << (i % 64));
                state = s;
                cur = c;
                start_alt = k + 1;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client: usize, v: &str, call: u64, ret: u64) -> Operation {
        Operation {
            client,
            key: b"k".to_vec(),
            input: Input::Put(v.as_bytes().to_vec()),
            output: Some(Output::Written),
            call,
            ret,
        }
    }

    fn lost_put(client: usize, v: &str, call: u64) -> Operation {
        Operation {
            output: None,
            ret: 0,
            ..put(client, v, call, 0)
        }
    }

    fn get(client: usize, v: Option<&str>, call: u64, ret: u64) -> Operation {
        Operation {
            client,
            key: b"k".to_vec(),
            input: Input::Get,
            output: Some(Output::Value(v.map(|s| s.as_bytes().to_vec()))),
            call,
            ret,
        }
    }

    #[test]
    fn sequential_history_is_linearizable_2b() {
        let h = vec![
            get(0, None, 0, 1),
            put(0, "a", 2, 3),
            get(1, Some("a"), 4, 5),
        ];
        assert!(check_history(&h).is_ok());
    }

    #[test]
    fn stale_read_after_acknowledged_write_is_caught_2b() {
        let h = vec![
            put(0, "a", 0, 1),
            put(0, "b", 2, 3),
            get(1, Some("a"), 4, 5),
        ];
        let v = check_history(&h).unwrap_err();
        assert_eq!(v.key, b"k");
        assert!(v.to_string().contains("not linearizable"));
        // The evidence names the stale read and the write it missed.
        assert!(v.ops.contains(&h[2]), "{v}");
        assert!(v.ops.contains(&h[1]), "{v}");
        // A long linearizable prefix does not clutter the evidence.
        let mut long: Vec<Operation> = (0..200u64)
            .map(|i| put(0, &format!("v{i}"), 10 * i, 10 * i + 1))
            .collect();
        long.push(get(1, Some("v3"), 5000, 5001));
        let v = check_history(&long).unwrap_err();
        assert!(v.ops.len() <= 5, "{v}");
        assert!(v.ops.contains(&long[200]), "{v}");
    }

    #[test]
    fn concurrent_reads_may_see_either_value_2b() {
        let h = vec![
            put(0, "a", 0, 1),
            put(0, "b", 2, 10),
            get(1, Some("b"), 3, 4),
            get(2, Some("b"), 5, 6),
        ];
        assert!(check_history(&h).is_ok());
        // Once a read saw "b", a later read cannot see "a" again.
        let h = vec![
            put(0, "a", 0, 1),
            put(0, "b", 2, 10),
            get(1, Some("b"), 3, 4),
            get(2, Some("a"), 5, 6),
        ];
        assert!(check_history(&h).is_err());
    }

    #[test]
    fn value_never_written_is_caught_2b() {
        let h = vec![put(0, "a", 0, 1), get(1, Some("zzz"), 2, 3)];
        assert!(check_history(&h).is_err());
    }

    #[test]
    fn unknown_outcome_may_apply_late_or_never_2b() {
        // The lost write shows up long after its client gave up...
        let late = vec![
            put(0, "a", 0, 1),
            lost_put(0, "b", 2),
            get(1, Some("a"), 10, 11),
            get(1, Some("b"), 20, 21),
        ];
        assert!(check_history(&late).is_ok());
        // ... or never.
        let never = vec![
            put(0, "a", 0, 1),
            lost_put(0, "b", 2),
            get(1, Some("a"), 30, 31),
        ];
        assert!(check_history(&never).is_ok());
        // But it cannot take effect before it was called.
        let early = vec![
            put(0, "a", 0, 1),
            get(1, Some("b"), 2, 3),
            lost_put(0, "b", 5),
        ];
        assert!(check_history(&early).is_err());
        // And once it took effect and a later write overwrote it, it cannot come back.
        let back = vec![
            lost_put(0, "b", 0),
            get(1, Some("b"), 2, 3),
            put(0, "c", 4, 5),
            get(1, Some("b"), 6, 7),
        ];
        assert!(check_history(&back).is_err());
    }

    #[test]
    fn keys_are_checked_independently_2b() {
        let mut other = put(0, "x", 0, 1);
        other.key = b"j".to_vec();
        let mut other_read = get(1, Some("x"), 2, 3);
        other_read.key = b"j".to_vec();
        let h = vec![
            other,
            put(0, "a", 0, 1),
            other_read,
            get(1, Some("a"), 2, 3),
        ];
        assert!(check_history(&h).is_ok());
    }

    #[test]
    fn many_concurrent_operations_are_searched_quickly_2b() {
        // 5 clients each write then read back their value, all overlapping: linearizable with
        // each read placed right after its own write; memoization keeps the search small.
        let mut h = Vec::new();
        for c in 0..5u64 {
            let v = format!("v{c}");
            h.push(put(c as usize, &v, c, 100 + c));
        }
        h.push(get(9, Some("v3"), 101, 102));
        assert!(check_history(&h).is_ok());
        h.push(get(9, Some("v1"), 200, 201));
        h.push(get(8, Some("v3"), 202, 203));
        assert!(check_history(&h).is_err());
    }
}
