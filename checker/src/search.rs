//! The search for a linearization of one key's operations: Wing & Gong's algorithm with Lowe's
//! just-in-time linearization and memoization of (linearized set, state), as porcupine does.
//!
//! ```text
//! events sorted by time:  call(a) call(b) ret(a) call(c) ret(b) ret(c)
//! search: take the first call whose op can be applied to the state next; lift its call and
//!         return out of the list; on meeting a return whose op is not linearized yet, backtrack.
//! ```
//! An operation with an unknown outcome returns after every other event: it may be linearized
//! anywhere after its call, or (when the model allows it to have no effect) never matter.

use std::collections::HashSet;

use crate::model::{step, State};
use crate::Operation;

#[derive(Clone, Copy)]
enum Event {
    Call(usize),
    Return(usize),
}

/// Whether one key's operations have a linearization.
pub(crate) fn linearizable(ops: &[Operation]) -> bool {
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
