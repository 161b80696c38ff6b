//! A history as JSON in porcupine's operation format, so it can be inspected (or checked again)
//! with other tools.
//!
//! ```text
//! [
//! {"clientId":3,"input":{"key":"k7","op":"put","value":"c3-12"},"call":1200,"output":{"status":"ok"},"return":1450},
//! {"clientId":1,"input":{"key":"k7","op":"get"},"call":1300,"output":{"status":"ok","value":"c3-12"},"return":1500},
//! {"clientId":2,"input":{"key":"k7","op":"delete"},"call":1600,"output":{"status":"unknown"},"return":99001},
//! {"clientId":0,"input":{"expect":null,"key":"k7","new":"c0-4","op":"cas"},"call":1700,"output":{"previous":null,"status":"ok","succeeded":true},"return":1800}
//! ]
//! ```
//! One operation per line, in call order; the keys of `input` and `output` are in alphabetical
//! order (their order carries no meaning). `call` and `return` are in the history's time unit
//! (the chaos harness: nanoseconds since its run started). A get's `value` and a cas's `expect`
//! and `previous` are `null` for an absent key. An operation whose outcome is unknown has
//! `"output":{"status":"unknown"}` and returns at the end of the history (one past its largest
//! time), as porcupine expects of an operation that may take effect until the end. Keys and
//! values are written as UTF-8 text (bytes that are not UTF-8 become U+FFFD; the harness writes
//! ASCII only).

use serde_json::{json, Map, Value};

use crate::{Input, Operation, Output};

fn text(v: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(v).into_owned())
}

fn opt_text(v: &Option<Vec<u8>>) -> Value {
    v.as_deref().map_or(Value::Null, text)
}

fn input(op: &Operation) -> Value {
    let mut m = Map::new();
    let name = match &op.input {
        Input::Get => "get",
        Input::Put(_) => "put",
        Input::Delete => "delete",
        Input::Cas { .. } => "cas",
    };
    m.insert("op".into(), name.into());
    m.insert("key".into(), text(&op.key));
    match &op.input {
        Input::Put(v) => {
            m.insert("value".into(), text(v));
        }
        Input::Cas { expect, new } => {
            m.insert("expect".into(), opt_text(expect));
            m.insert("new".into(), text(new));
        }
        Input::Get | Input::Delete => {}
    }
    Value::Object(m)
}

fn output(op: &Operation) -> Value {
    match &op.output {
        None => json!({"status": "unknown"}),
        Some(Output::Written) => json!({"status": "ok"}),
        Some(Output::Value(v)) => json!({"status": "ok", "value": opt_text(v)}),
        Some(Output::Cas {
            succeeded,
            previous,
        }) => json!({"status": "ok", "succeeded": succeeded, "previous": opt_text(previous)}),
    }
}

/// `history` as a JSON array of porcupine operations (see the module documentation).
pub fn to_json(history: &[Operation]) -> String {
    let end = history.iter().map(|o| o.call.max(o.ret)).max().unwrap_or(0) + 1;
    let mut ops: Vec<&Operation> = history.iter().collect();
    ops.sort_by_key(|o| o.call);
    let lines: Vec<String> = ops
        .iter()
        .map(|o| {
            let ret = if o.output.is_none() { end } else { o.ret };
            format!(
                "{{\"clientId\":{},\"input\":{},\"call\":{},\"output\":{},\"return\":{}}}",
                o.client,
                input(o),
                o.call,
                output(o),
                ret
            )
        })
        .collect();
    format!("[\n{}\n]\n", lines.join(",\n"))
}
