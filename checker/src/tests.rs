//! The checker's tests over whole histories (the model's own are beside it).

use crate::*;

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

fn at(mut op: Operation, input: Input, output: Option<Output>) -> Operation {
    op.input = input;
    op.output = output;
    op
}

fn del(client: usize, call: u64, ret: u64) -> Operation {
    at(
        put(client, "", call, ret),
        Input::Delete,
        Some(Output::Written),
    )
}

fn cas(
    client: usize,
    expect: Option<&str>,
    new: &str,
    out: Option<(bool, Option<&str>)>,
    call: u64,
    ret: u64,
) -> Operation {
    let input = Input::Cas {
        expect: expect.map(|e| e.as_bytes().to_vec()),
        new: new.as_bytes().to_vec(),
    };
    let output = out.map(|(succeeded, previous)| Output::Cas {
        succeeded,
        previous: previous.map(|p| p.as_bytes().to_vec()),
    });
    at(put(client, "", call, ret), input, output)
}

#[test]
fn delete_then_read_absent_2b() {
    let h = vec![put(0, "a", 0, 1), del(0, 2, 3), get(1, None, 4, 5)];
    assert!(check_history(&h).is_ok());
    // A read after an acknowledged delete that still sees the value is stale.
    let h = vec![put(0, "a", 0, 1), del(0, 2, 3), get(1, Some("a"), 4, 5)];
    let v = check_history(&h).unwrap_err();
    assert!(v.ops.contains(&h[2]), "{v}");
}

#[test]
fn unknown_delete_may_apply_late_or_never_2b() {
    let mut lost = del(0, 2, 0);
    lost.output = None;
    // Seen late...
    let late = vec![
        put(0, "a", 0, 1),
        lost.clone(),
        get(1, Some("a"), 10, 11),
        get(1, None, 20, 21),
    ];
    assert!(check_history(&late).is_ok());
    // ... or never.
    let never = vec![put(0, "a", 0, 1), lost.clone(), get(1, Some("a"), 30, 31)];
    assert!(check_history(&never).is_ok());
    // Once applied, a read cannot see the old value again without a write in between.
    let back = vec![
        put(0, "a", 0, 1),
        lost,
        get(1, None, 10, 11),
        get(1, Some("a"), 20, 21),
    ];
    assert!(check_history(&back).is_err());
}

#[test]
fn cas_histories_2b() {
    // Two clients race to swap from absent: one wins, the other sees the winner's value.
    let h = vec![
        cas(0, None, "a", Some((true, None)), 0, 10),
        cas(1, None, "b", Some((false, Some("a"))), 1, 11),
        get(2, Some("a"), 12, 13),
    ];
    assert!(check_history(&h).is_ok());
    // Both cannot win.
    let h = vec![
        cas(0, None, "a", Some((true, None)), 0, 10),
        cas(1, None, "b", Some((true, None)), 1, 11),
    ];
    assert!(check_history(&h).is_err());
    // A failed swap must name a value the key really held.
    let h = vec![
        put(0, "a", 0, 1),
        cas(1, Some("x"), "y", Some((false, Some("z"))), 2, 3),
    ];
    assert!(check_history(&h).is_err());
    // A failed swap that claims the expected value was there is wrong.
    let h = vec![
        put(0, "a", 0, 1),
        cas(1, Some("a"), "y", Some((false, Some("a"))), 2, 3),
    ];
    assert!(check_history(&h).is_err());
}

#[test]
fn unknown_cas_applies_only_where_it_could_swap_2b() {
    // The unknown swap from "a" explains a later "b".
    let h = vec![
        put(0, "a", 0, 1),
        cas(1, Some("a"), "b", None, 2, 0),
        get(2, Some("b"), 10, 11),
    ];
    assert!(check_history(&h).is_ok());
    // But not once the key no longer held "a" at any point after its call.
    let h = vec![
        put(0, "c", 0, 1),
        cas(1, Some("a"), "b", None, 2, 0),
        get(2, Some("b"), 10, 11),
    ];
    assert!(check_history(&h).is_err());
    // An unknown swap that happened cannot be undone by itself.
    let h = vec![
        put(0, "a", 0, 1),
        cas(1, Some("a"), "b", None, 2, 0),
        get(2, Some("b"), 10, 11),
        get(2, Some("a"), 12, 13),
    ];
    assert!(check_history(&h).is_err());
}

#[test]
fn every_failing_key_is_reported_2b() {
    let mut h = vec![
        put(0, "a", 0, 1),
        put(0, "b", 2, 3),
        get(1, Some("a"), 4, 5),
    ];
    let mut other: Vec<Operation> = h.clone();
    for o in &mut other {
        o.key = b"j".to_vec();
    }
    h.extend(other);
    h.push(Operation {
        key: b"fine".to_vec(),
        ..put(0, "x", 0, 1)
    });
    let found = check_each_key(&h);
    let keys: Vec<&[u8]> = found.iter().map(|v| v.key.as_slice()).collect();
    assert_eq!(keys, [&b"j"[..], &b"k"[..]]);
}

#[test]
fn json_is_porcupine_operations_2b() {
    let mut lost = del(2, 6, 0);
    lost.output = None;
    let h = vec![
        get(1, Some("a"), 2, 5),
        put(0, "a", 0, 1),
        lost,
        cas(3, None, "c", Some((false, Some("a"))), 7, 9),
    ];
    let text = to_json(&h);
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ops = parsed.as_array().unwrap();
    assert_eq!(ops.len(), 4);
    // In call order, with every field porcupine reads.
    let calls: Vec<u64> = ops.iter().map(|o| o["call"].as_u64().unwrap()).collect();
    assert_eq!(calls, [0, 2, 6, 7]);
    assert_eq!(ops[0]["input"]["op"], "put");
    assert_eq!(ops[0]["input"]["value"], "a");
    assert_eq!(ops[0]["output"]["status"], "ok");
    assert_eq!(ops[1]["output"]["value"], "a");
    assert_eq!(ops[1]["clientId"], 1);
    // The unknown delete returns at the end of the history.
    assert_eq!(ops[2]["output"]["status"], "unknown");
    assert_eq!(ops[2]["return"], 10);
    assert_eq!(ops[3]["input"]["expect"], serde_json::Value::Null);
    assert_eq!(ops[3]["output"]["succeeded"], false);
    assert_eq!(ops[3]["output"]["previous"], "a");
    // One operation per line, for grep.
    assert_eq!(text.lines().count(), 6);
}
